//! The `boxoverlay` element: draws the region-of-interest metas of each frame (box, label, score)
//! onto RGB-family frames in place.

use gst::glib;
use gst::prelude::*;

mod imp;

glib::wrapper! {
    pub struct BoxOverlay(ObjectSubclass<imp::BoxOverlay>)
        @extends gst_video::VideoFilter, gst_base::BaseTransform, gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(
        Some(plugin),
        "boxoverlay",
        gst::Rank::NONE,
        BoxOverlay::static_type(),
    )
}
