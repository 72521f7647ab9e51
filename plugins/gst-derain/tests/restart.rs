//! NULL <-> PLAYING cycling, in its own test binary: the open-session count is process-wide, so
//! no other test may create sessions while this one counts.

use std::io::Write;

use gst::prelude::*;

/// How long a wait for an event (a state reached, a frame) may take on a loaded machine.
const PATIENCE_S: u64 = 300;

#[test]
fn restart_cycles_leave_no_sessions_open() {
    gst::init().expect("GStreamer initialises");
    gstderain::plugin_register_static().expect("plugin registers");
    let mut model = tempfile::Builder::new()
        .suffix(".onnx")
        .tempfile()
        .expect("temp file");
    model
        .write_all(&derain_tools::onnx::fixtures::identity(1))
        .expect("write model");
    let pipeline = gst::parse::launch(&format!(
        "videotestsrc is-live=true ! video/x-raw,format=RGB,width=32,height=24,framerate=200/1 \
         ! derain name=d provider=cpu stats-interval=0 model=\"{}\" ! fakesink sync=false",
        model.path().display()
    ))
    .expect("pipeline");
    // Frames must really flow in each cycle.
    let d = pipeline
        .downcast_ref::<gst::Bin>()
        .and_then(|b| b.by_name("d"))
        .expect("derain in pipeline");
    let before = derain_core::runtime::open_sessions();
    for _ in 0..50 {
        pipeline.set_state(gst::State::Playing).expect("to PLAYING");
        let (res, _, _) = pipeline.state(gst::ClockTime::from_seconds(PATIENCE_S));
        res.expect("reached PLAYING");
        let t0 = std::time::Instant::now();
        while d.property::<u64>("frames-processed") == 0 && t0.elapsed().as_secs() < PATIENCE_S {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        assert!(d.property::<u64>("frames-processed") > 0, "no frame flowed");
        pipeline.set_state(gst::State::Null).expect("to NULL");
        assert_eq!(
            derain_core::runtime::open_sessions(),
            before,
            "a session leaked"
        );
    }
    // And while PLAYING there is exactly one.
    pipeline.set_state(gst::State::Playing).expect("to PLAYING");
    let (res, _, _) = pipeline.state(gst::ClockTime::from_seconds(PATIENCE_S));
    res.expect("reached PLAYING");
    assert_eq!(derain_core::runtime::open_sessions(), before + 1);
    pipeline.set_state(gst::State::Null).expect("to NULL");
    assert_eq!(derain_core::runtime::open_sessions(), before);
}
