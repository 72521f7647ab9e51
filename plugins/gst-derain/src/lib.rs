//! GStreamer plugin `derain`: rain removal for driving cameras (`derain`) and the detection stage
//! after it (`yolodetect`, `boxoverlay`). Thin on purpose: the elements call into the `derain-core`
//! library (what runs in the car, and nothing of the offline tools or the trainer) for model
//! loading, inference, frame conversion, box decoding and drawing.
#![allow(clippy::non_send_fields_in_send_ty, unused_doc_comments)]

use gst::glib;

mod boxoverlay;
mod derain;
mod liblog;
mod ortprops;
mod yolodetect;

fn plugin_init(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    liblog::install();
    derain::register(plugin)?;
    yolodetect::register(plugin)?;
    boxoverlay::register(plugin)
}

gst::plugin_define!(
    derain,
    env!("CARGO_PKG_DESCRIPTION"),
    plugin_init,
    concat!(env!("CARGO_PKG_VERSION"), "-", env!("COMMIT_ID")),
    "MIT/X11",
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_NAME"),
    "https://example.invalid/derain",
    env!("BUILD_REL_DATE")
);
