//! The GPU speed report (issue 7): the `derain` element's throughput and p99 latency at 1920×1080
//! and 1280×720 (NV12, as decoders give it) with TensorRT FP16 engines and with CUDA FP32, for
//! the shipped models (models/*.onnx) and the paper-size ResNet-9 (16 base channels, random
//! weights: speed does not depend on the weights), then end to end from an H.264 file (decode,
//! derain, discard) against decoding alone. Printed with the GPU's name. It refuses to run, with
//! the reason, on a machine without a GPU or without the GPU build of ONNX Runtime.
//!
//!   make bench-gpu          (make setup GPU=1 first; builds with the `cuda` feature)
//!   BENCH_FRAMES=300 BENCH_SIZES=1920x1080 make bench-gpu
//!
//! Goal for the paper-size ResNet-9: ≥ 120 frames/s at 1920×1080 with TensorRT FP16 on one
//! H100/H200-class GPU, p99 under 10 ms.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use gst::prelude::*;
use gst_check::Harness;

use derain_core::model::Model;
use derain_core::runtime::{Generator, Provider, SessionOptions};
use derain_tools::onnx::resnet9::{Resnet9Config, resnet9_random};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Why this machine cannot run the bench, if it cannot.
fn refusal(model: &Model) -> Option<String> {
    if let Err(e) = derain_core::engine_cache::gpu_identity(0) {
        return Some(format!("no GPU: {e}"));
    }
    for provider in [Provider::Cuda, Provider::TensorRt] {
        let options = SessionOptions {
            provider,
            ..SessionOptions::default()
        };
        if let Err(e) = Generator::new(model, &options) {
            return Some(format!(
                "{provider} cannot start: {e} (make setup GPU=1; source .deps/gpu.env)"
            ));
        }
    }
    None
}

struct Config {
    name: &'static str,
    provider: &'static str,
    trt_fp16: bool,
}

const CONFIGS: [Config; 2] = [
    Config {
        name: "TensorRT FP16",
        provider: "tensorrt",
        trt_fp16: true,
    },
    Config {
        name: "CUDA FP32",
        provider: "cuda",
        trt_fp16: false,
    },
];

fn nv12_buffer(info: &gst_video::VideoInfo, seed: usize) -> gst::Buffer {
    let data: Vec<u8> = (0..info.size())
        .map(|i| ((i * 7 + i / 1921 * 3 + seed * 11) % 223 + 16) as u8)
        .collect();
    gst::Buffer::from_mut_slice(data)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Frames per second and p99 latency (ms) of the element alone, one frame in flight.
fn element(
    model: &Path,
    c: &Config,
    cache: &Path,
    w: u32,
    h: u32,
    frames: usize,
) -> Result<(f64, f64, bool), String> {
    let el = gst::ElementFactory::make("derain")
        .property("model", model.to_str().ok_or("non-UTF-8 model path")?)
        .property_from_str("provider", c.provider)
        .property("trt-fp16", c.trt_fp16)
        .property(
            "trt-cache-dir",
            cache.to_str().ok_or("non-UTF-8 cache path")?,
        )
        .property("stats-interval", 0u32)
        .property("rain-level", false)
        .build()
        .map_err(|e| e.to_string())?;
    let mut harness = Harness::with_element(&el, Some("sink"), Some("src"));
    let info = gst_video::VideoInfo::builder(gst_video::VideoFormat::Nv12, w, h)
        .fps(gst::Fraction::new(30, 1))
        .build()
        .map_err(|e| e.to_string())?;
    harness.set_src_caps(info.to_caps().map_err(|e| e.to_string())?);
    // Warm-up: engine builds (announced in the log), allocations, kernel choice.
    for i in 0..10 {
        harness
            .push_and_pull(nv12_buffer(&info, i))
            .map_err(|e| format!("warm-up: {e:?}"))?;
    }
    let bufs: Vec<gst::Buffer> = (0..frames).map(|i| nv12_buffer(&info, i)).collect();
    let mut times = Vec::with_capacity(frames);
    let start = Instant::now();
    for b in bufs {
        let t = Instant::now();
        harness
            .push_and_pull(b)
            .map_err(|e| format!("frame: {e:?}"))?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let fps = frames as f64 / start.elapsed().as_secs_f64();
    times.sort_by(f64::total_cmp);
    Ok((
        fps,
        percentile(&times, 0.99),
        el.property::<bool>("gpu-frames"),
    ))
}

/// Writes `frames` frames of H.264 at w×h to `path` (x264, from videotestsrc).
fn h264_clip(path: &Path, w: u32, h: u32, frames: usize) -> Result<(), String> {
    let desc = format!(
        "videotestsrc num-buffers={frames} pattern=ball ! video/x-raw,width={w},height={h},framerate=30/1 \
         ! x264enc speed-preset=ultrafast tune=zerolatency ! h264parse ! mp4mux ! filesink location={}",
        path.display()
    );
    run_pipeline(&desc).map(|_| ())
}

/// Runs a pipeline to EOS; returns its wall time in seconds.
fn run_pipeline(desc: &str) -> Result<f64, String> {
    let p = gst::parse::launch(desc).map_err(|e| format!("{desc}: {e}"))?;
    let bus = p.bus().ok_or("no bus")?;
    let start = Instant::now();
    p.set_state(gst::State::Playing)
        .map_err(|e| format!("{desc}: {e}"))?;
    let mut result = Ok(());
    for msg in bus.iter_timed(gst::ClockTime::NONE) {
        match msg.view() {
            gst::MessageView::Eos(..) => break,
            gst::MessageView::Error(e) => {
                result = Err(format!("{}: {}", e.error(), e.debug().unwrap_or_default()));
                break;
            }
            _ => {}
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let _ = p.set_state(gst::State::Null);
    result.map(|()| secs)
}

fn decoder() -> &'static str {
    // The GPU's own decoder when GStreamer has it, else libav's.
    if gst::ElementFactory::find("nvh264dec").is_some() {
        "nvh264dec ! videoconvert ! video/x-raw,format=NV12"
    } else {
        "avdec_h264 ! videoconvert ! video/x-raw,format=NV12"
    }
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    if let Err(e) = gst::init() {
        eprintln!("bench-gpu: GStreamer: {e}");
        return ExitCode::FAILURE;
    }
    if let Err(e) = gstderain::plugin_register_static() {
        eprintln!("bench-gpu: plugin: {e}");
        return ExitCode::FAILURE;
    }
    let tmp = match tempfile::tempdir() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("bench-gpu: temporary directory: {e}");
            return ExitCode::FAILURE;
        }
    };
    let r9 = match resnet9_random(&Resnet9Config::default(), 1) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("bench-gpu: {e}");
            return ExitCode::FAILURE;
        }
    };
    let r9_path = tmp.path().join("resnet9-b16-random.onnx");
    if let Err(e) = std::fs::File::create(&r9_path).and_then(|mut f| f.write_all(&r9)) {
        eprintln!("bench-gpu: {e}");
        return ExitCode::FAILURE;
    }
    let Ok(r9_model) = Model::from_bytes(r9, "resnet9-b16-random") else {
        eprintln!("bench-gpu: the ResNet-9 fixture does not load");
        return ExitCode::FAILURE;
    };
    if let Some(why) = refusal(&r9_model) {
        eprintln!("bench-gpu: refusing to run: {why}. This bench needs an NVIDIA GPU.");
        return ExitCode::FAILURE;
    }
    let gpu = derain_core::engine_cache::gpu_identity(0)
        .map(|g| {
            format!(
                "{} (sm{}{})",
                g.name, g.compute_capability.0, g.compute_capability.1
            )
        })
        .unwrap_or_default();

    let mut models: Vec<(String, PathBuf)> = vec![("ResNet-9 b16 (paper size)".into(), r9_path)];
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models");
    for name in ["derain-r9.onnx", "derain-lite.onnx"] {
        let p = shipped.join(name);
        if p.is_file() {
            models.push((name.into(), p));
        }
    }
    let frames: usize = env_or("BENCH_FRAMES", 300);
    let sizes = std::env::var("BENCH_SIZES").unwrap_or_else(|_| "1920x1080,1280x720".into());
    let sizes: Vec<(u32, u32)> = sizes
        .split(',')
        .filter_map(|s| {
            let (w, h) = s.split_once('x')?;
            Some((w.parse().ok()?, h.parse().ok()?))
        })
        .collect();
    let cache = tmp.path().join("engines");
    println!("GPU: {gpu}; {frames} NV12 frames per measurement, one in flight");
    let mut failed = false;
    for (name, path) in &models {
        for c in &CONFIGS {
            for &(w, h) in &sizes {
                match element(path, c, &cache, w, h, frames) {
                    Ok((fps, p99, gpu_frames)) => {
                        let goal = if name.starts_with("ResNet-9") && c.trt_fp16 && w == 1920 {
                            let met = fps >= 120.0 && p99 < 10.0;
                            format!(
                                " (goal >= 120 fps, p99 < 10 ms: {})",
                                if met { "met" } else { "MISSED" }
                            )
                        } else {
                            String::new()
                        };
                        println!(
                            "{name}, {}, {w}x{h}: element {fps:.1} fps, p99 {p99:.2} ms, gpu-frames={gpu_frames}{goal}",
                            c.name
                        );
                    }
                    Err(e) => {
                        println!("{name}, {}, {w}x{h}: FAILED: {e}", c.name);
                        failed = true;
                    }
                }
            }
        }
    }
    // End to end: decode an H.264 clip, derain, discard; against decoding alone.
    let (name, path) = &models[0];
    for &(w, h) in &sizes {
        let clip = tmp.path().join(format!("clip-{w}x{h}.mp4"));
        if let Err(e) = h264_clip(&clip, w, h, frames) {
            println!("end to end {w}x{h}: cannot write the H.264 clip: {e}");
            failed = true;
            continue;
        }
        let src = format!(
            "filesrc location={} ! qtdemux ! h264parse ! {}",
            clip.display(),
            decoder()
        );
        let decode_only = run_pipeline(&format!("{src} ! fakesink sync=false"));
        for c in &CONFIGS {
            let desc = format!(
                "{src} ! derain model={} provider={} trt-fp16={} trt-cache-dir={} stats-interval=0 ! fakesink sync=false",
                path.display(),
                c.provider,
                c.trt_fp16,
                cache.display()
            );
            // Once untimed, so engine builds are not counted.
            let _ = run_pipeline(&desc);
            let timed = run_pipeline(&desc);
            match (timed.as_ref(), decode_only.as_ref()) {
                (Ok(t), Ok(d)) => println!(
                    "end to end {name}, {}, {w}x{h}: decode+derain {:.1} fps (decode alone {:.1} fps)",
                    c.name,
                    frames as f64 / t,
                    frames as f64 / d
                ),
                (Err(e), _) | (_, Err(e)) => {
                    println!("end to end {w}x{h} {}: FAILED: {e}", c.name);
                    failed = true;
                }
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
