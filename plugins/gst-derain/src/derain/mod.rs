//! The `derain` element: raw video in, the same frames with rain removed out.

use gst::glib;
use gst::prelude::*;

mod defaults;
mod imp;
mod latency;
mod weather;

/// Name of the per-frame custom meta carrying the rain level (`rain-level`, a double in [0, 1]:
/// the input frame's rain score, not the network's output: the calibrated probability of rain
/// from the `rain-detector` network when one is set (`derain_core::raindetect`), else the hand-made
/// score of `derain_core::rainscore`; above the `rain-threshold` property a frame counts as rainy).
/// It is attached in both modes, to derained and to bypassed frames alike.
pub const RAIN_META_NAME: &str = "GstDerainRainMeta";

glib::wrapper! {
    pub struct Derain(ObjectSubclass<imp::Derain>)
        @extends gst_video::VideoFilter, gst_base::BaseTransform, gst::Element, gst::Object;
}

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

/// Whether frames skip the network while the weather is dry (the `bypass` property).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstDerainBypass")]
pub enum Bypass {
    /// The default while the shipped rain score is not trustworthy (ROC AUC 0.92 between dry and
    /// rainy dev frames, short of the 0.98 issue 16 asks for): a rainy frame the score calls dry
    /// would pass through with its rain. The default becomes `dry` once a trustworthy score ships.
    #[default]
    #[enum_value(name = "Run the network on every frame", nick = "never")]
    Never = 0,
    #[enum_value(
        name = "Pass frames through untouched (the input buffer itself) while the weather is dry",
        nick = "dry"
    )]
    Dry = 1,
}

/// Where the element's weather comes from (the `weather-source` property).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstDerainWeatherSource")]
pub enum WeatherSource {
    /// The rain detector's score, through the hysteresis (`rain-enter`, `rain-leave`).
    #[default]
    #[enum_value(
        name = "The rain detector's score, through the hysteresis",
        nick = "detector"
    )]
    Detector = 0,
    /// The application, through the `set-weather` action signal (a wiper state or rain sensor
    /// read from the car's bus); the detector still scores frames into the meta.
    #[enum_value(
        name = "The application, through the set-weather action signal (the detector still scores every frame)",
        nick = "application"
    )]
    Application = 1,
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
