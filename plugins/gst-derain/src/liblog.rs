//! The library's `log` records in the GStreamer debug log.
//!
//! derain-core reports through the `log` crate (a provider that `auto` skipped, the ONNX Runtime
//! library it loaded or ignored, the TensorRT engine cache). Inside a GStreamer application
//! nobody installs a `log` logger, so without this those records went nowhere. [`install`] sets a
//! logger that hands each record to the `derain-lib` debug category at the matching level
//! (error, warning, info, debug, trace): `GST_DEBUG=derain-lib:4` (or `derain*:4`, with the
//! elements' own categories) shows them beside the elements' messages.

use std::sync::LazyLock;

use gst::glib;
use gst::prelude::*;

/// The debug category the library's records go to.
pub static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "derain-lib",
        gst::DebugColorFlags::empty(),
        Some("Log records of the derain library (models, ONNX Runtime, providers, engine cache)"),
    )
});

fn level(level: log::Level) -> gst::DebugLevel {
    match level {
        log::Level::Error => gst::DebugLevel::Error,
        log::Level::Warn => gst::DebugLevel::Warning,
        log::Level::Info => gst::DebugLevel::Info,
        log::Level::Debug => gst::DebugLevel::Debug,
        log::Level::Trace => gst::DebugLevel::Trace,
    }
}

/// Forwards `log` records to [`CAT`].
struct GstLogger;

impl log::Log for GstLogger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        CAT.above_threshold(level(metadata.level()))
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let file = glib::GString::from(record.file().unwrap_or(""));
        CAT.log(
            None::<&glib::Object>,
            level(record.level()),
            file.as_gstr(),
            record.module_path().unwrap_or(""),
            record.line().unwrap_or(0),
            *record.args(),
        );
    }

    fn flush(&self) {}
}

/// Installs the forwarding logger, once per process (at plugin init). An application that set
/// its own `log` logger first keeps it: the library's records go there instead.
pub fn install() {
    LazyLock::force(&CAT);
    if log::set_boxed_logger(Box::new(GstLogger)).is_ok() {
        // GST_DEBUG can change at run time, so every record reaches the logger, which asks the
        // category's threshold (records below it are never formatted).
        log::set_max_level(log::LevelFilter::Trace);
    }
}
