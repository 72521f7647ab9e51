//! Footage decode plus crop sampling, the trainer's data path: random 256×256 crops per second
//! from a 1280×720 H.264 clip. The goal is at least 200 crops/s on one core; `make bench`
//! runs this under `taskset -c 0` (the allowed CPUs are printed).
//!
//! Uses `../shared/data/clean-driving/udacity/highway-1280x720.mp4` when present, else encodes a
//! 1280×720 test clip first. `BENCH_CROPS` (default 2000) sets the number of crops per setting.

use std::time::Instant;

use derain::footage::{CropSampler, FootageOptions};
use gst::prelude::*;

fn allowed_cpus() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Cpus_allowed_list"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "?".into())
}

fn generated_clip(dir: &std::path::Path) -> std::path::PathBuf {
    gst::init().expect("GStreamer");
    let path = dir.join("clip-1280x720.mp4");
    let pipeline = gst::parse::launch(
        "videotestsrc num-buffers=100 pattern=ball ! video/x-raw,width=1280,height=720,framerate=25/1 ! \
         videoconvert ! x264enc speed-preset=veryfast ! h264parse ! mp4mux ! filesink name=sink",
    )
    .expect("pipeline")
    .downcast::<gst::Pipeline>()
    .expect("pipeline");
    pipeline
        .by_name("sink")
        .expect("sink")
        .set_property("location", path.to_str().expect("utf-8 path"));
    pipeline.set_state(gst::State::Playing).expect("play");
    let bus = pipeline.bus().expect("bus");
    bus.timed_pop_filtered(
        gst::ClockTime::from_seconds(300),
        &[gst::MessageType::Eos, gst::MessageType::Error],
    );
    pipeline.set_state(gst::State::Null).expect("stop");
    path
}

fn main() {
    let crops: usize = std::env::var("BENCH_CROPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let tmp = tempfile::tempdir().expect("tempdir");
    let clip = match derain::devdata::shared_path("clean-driving/udacity/highway-1280x720.mp4") {
        Some(p) => p,
        None => {
            eprintln!("Udacity clip absent: encoding a 1280x720 test clip instead");
            generated_clip(tmp.path())
        }
    };
    println!(
        "footage bench: {} on CPUs {}",
        clip.display(),
        allowed_cpus()
    );
    println!(
        "{:>16} {:>10} {:>10} {:>12}",
        "crops/frame", "crops", "seconds", "crops/s"
    );
    for per_frame in [1usize, 2, 4] {
        let mut s = CropSampler::new(
            vec![clip.clone()],
            FootageOptions::default(),
            256,
            per_frame,
            1,
        )
        .expect("sampler");
        // Warm-up: the first pipeline start loads the decoder plugins.
        s.next_crop().expect("crop");
        let t = Instant::now();
        for _ in 0..crops {
            std::hint::black_box(s.next_crop().expect("crop"));
        }
        let secs = t.elapsed().as_secs_f64();
        println!(
            "{per_frame:>16} {crops:>10} {secs:>10.2} {:>12.0}",
            crops as f64 / secs
        );
    }
}
