//! The `derain` element: raw video in, the same frames with rain removed out.

use gst::glib;
use gst::prelude::*;

mod defaults;
mod imp;
mod latency;

/// Name of the per-frame custom meta carrying the rain level (`rain-level`, a double: the mean
/// absolute difference between input and output in [0,1]).
pub const RAIN_META_NAME: &str = "GstDerainRainMeta";

glib::wrapper! {
    pub struct Derain(ObjectSubclass<imp::Derain>)
        @extends gst_video::VideoFilter, gst_base::BaseTransform, gst::Element, gst::Object;
}

pub use crate::ortprops::Provider;

/// What happens to a frame that is already too old when it reaches the element in a live
/// pipeline (the `drop-policy` property).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstDerainDropPolicy")]
pub enum DropPolicy {
    #[default]
    #[enum_value(
        name = "Process every frame; latency is reported upstream",
        nick = "never"
    )]
    Never = 0,
    #[enum_value(
        name = "Drop frames older than max-lateness (live only)",
        nick = "drop-late"
    )]
    DropLate = 1,
    #[enum_value(
        name = "Pass frames older than max-lateness through unprocessed (live only)",
        nick = "pass-late"
    )]
    PassLate = 2,
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    if !gst::meta::CustomMeta::is_registered(RAIN_META_NAME) {
        gst::meta::CustomMeta::register_simple(RAIN_META_NAME);
    }
    gst::Element::register(
        Some(plugin),
        "derain",
        gst::Rank::NONE,
        Derain::static_type(),
    )
}
