//! The library's `log` records reach the GStreamer debug log: a warning that derain-core logs
//! while the `derain` element starts shows up under the `derain-lib` debug category, as it would
//! on stderr with `GST_DEBUG=derain-lib:2`.

use std::io::Write;
use std::sync::{Arc, Mutex};

use gst::prelude::*;

use derain_tools::onnx::fixtures;

/// Seconds a pipeline may take on a loaded machine before the test calls it hung.
const PATIENCE_S: u64 = 120;

#[test]
fn a_library_warning_shows_up_in_the_gstreamer_debug_log() {
    gst::init().expect("GStreamer initialises");
    gst::log::set_active(true);
    gst::log::set_threshold_for_name("derain-lib", gst::DebugLevel::Warning);
    let seen: Arc<Mutex<Vec<(gst::DebugLevel, String)>>> = Arc::default();
    let sink = Arc::clone(&seen);
    let capture =
        gst::log::add_log_function(move |cat, level, _file, _function, _line, _obj, msg| {
            if cat.name() == "derain-lib"
                && let Some(m) = msg.get()
            {
                sink.lock().unwrap().push((level, m.to_string()));
            }
        });
    gstderain::plugin_register_static().expect("plugin registers");

    // ONNX Runtime loaded from where the set-up put it; the element then names another copy, which
    // the library ignores with a warning (one copy per process).
    if let Err(e) = derain_core::runtime::init_ort(None) {
        eprintln!("skipping: {e}");
        gst::log::remove_log_function(capture);
        return;
    }
    let mut model = tempfile::Builder::new()
        .suffix(".onnx")
        .tempfile()
        .expect("temp file");
    model
        .write_all(&fixtures::identity(1))
        .expect("write model");
    let other = "/nonexistent/derain-test/libonnxruntime.so";
    let launch = format!(
        "videotestsrc num-buffers=2 ! video/x-raw,format=RGB,width=64,height=48 ! \
         derain provider=cpu model={} ort-library={other} ! fakesink",
        model.path().display()
    );
    let pipeline = gst::parse::launch(&launch).expect("pipeline");
    let bus = pipeline.bus().expect("bus");
    pipeline
        .set_state(gst::State::Playing)
        .expect("pipeline plays");
    let end = bus.timed_pop_filtered(
        gst::ClockTime::from_seconds(PATIENCE_S),
        &[gst::MessageType::Error, gst::MessageType::Eos],
    );
    pipeline
        .set_state(gst::State::Null)
        .expect("pipeline stops");
    gst::log::remove_log_function(capture);
    match end.as_ref().map(|m| m.view()) {
        Some(gst::MessageView::Eos(_)) => {}
        other => panic!("{launch}: {other:?}"),
    }

    let seen = seen.lock().unwrap();
    assert!(
        seen.iter()
            .any(|(level, m)| *level == gst::DebugLevel::Warning
                && m.contains("ONNX Runtime is already loaded")
                && m.contains(other)),
        "no library warning in the debug log: {seen:?}"
    );
    // Below the category's threshold nothing is forwarded (the library logs at info too).
    assert!(
        seen.iter()
            .all(|(level, _)| *level <= gst::DebugLevel::Warning),
        "{seen:?}"
    );
}
