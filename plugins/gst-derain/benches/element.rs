//! What the element adds on top of ONNX Runtime: throughput of the `derain` element (frame in,
//! conversion, inference, conversion out, metas, statistics) against `Generator::run` (ONNX
//! Runtime's `session.run` plus a zero-copy view of the output) on the same tensors, for the
//! paper-size ResNet-9 generator (16 base channels, random weights), measured in one run with the
//! two interleaved so machine noise hits both alike. Then the element's cost per frame while dry
//! (`bypass=dry` with `rain-threshold=1` forcing dry: the rain score and the passthrough only)
//! against while raining (`bypass=never`: the element above), the dry-weather bypass goal being
//! dry <= 10% of raining (issue 16).
//!
//!   cargo bench -p gst-plugin-derain --bench element            (or: make bench)
//!   BENCH_ROUNDS=5 BENCH_SIZES=640x360 cargo bench ...           (fewer/more work)
//!   BENCH_MODEL=models/derain-lite.onnx cargo bench ...          (another model; `make bench`
//!                                                                  runs each shipped one)

use std::io::Write;
use std::time::Instant;

use gst_check::Harness;
use gst_video::prelude::*;

use derain::frame::{self, FrameLayout, PixelFormat};
use derain::model::Model;
use derain::onnx::resnet9::{Resnet9Config, resnet9_random};
use derain::runtime::{Generator, Provider, SessionOptions};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn rgb_frame(w: usize, h: usize) -> Vec<u8> {
    (0..w * h * 3)
        .map(|i| {
            let (p, c) = (i / 3, i % 3);
            let (x, y) = (p % w, p / w);
            ((x * (c + 1) + y * 3 + (x * y) % 7) % 256) as u8
        })
        .collect()
}

fn main() {
    gst::init().expect("GStreamer");
    gstderain::plugin_register_static().expect("plugin");
    let (bytes, origin) = match std::env::var_os("BENCH_MODEL").filter(|p| !p.is_empty()) {
        Some(path) => match std::fs::read(&path) {
            Ok(b) => (b, std::path::PathBuf::from(path).display().to_string()),
            Err(e) => {
                eprintln!("BENCH_MODEL {}: {e}", std::path::Path::new(&path).display());
                std::process::exit(2);
            }
        },
        None => (
            resnet9_random(&Resnet9Config::default(), 1).expect("resnet9"),
            "resnet9-b16-random".to_owned(),
        ),
    };
    let mut file = tempfile::Builder::new()
        .suffix(".onnx")
        .tempfile()
        .expect("tmp");
    file.write_all(&bytes).expect("write");
    let model = match Model::from_bytes(bytes, origin) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let rounds: usize = env_or("BENCH_ROUNDS", 3);
    let sizes = std::env::var("BENCH_SIZES").unwrap_or_else(|_| "640x360,1280x720".into());
    println!(
        "element vs raw inference, {} ({}, {} params), CPU provider, {} threads available",
        model.origin(),
        model.card().architecture,
        model.card().parameters,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    for size in sizes.split(',') {
        let Some((w, h)) = size
            .split_once('x')
            .and_then(|(w, h)| Some((w.parse::<usize>().ok()?, h.parse::<usize>().ok()?)))
        else {
            eprintln!("skipping bad size {size}");
            continue;
        };
        let iters = if w * h > 500_000 { 4 } else { 10 };
        let pixels = rgb_frame(w, h);
        let layout = FrameLayout::packed(PixelFormat::Rgb, w, h);
        let (hp, wp) = frame::padded_size(h, w, model.multiple_of());
        let mut tensor = vec![0f32; 3 * hp * wp];
        frame::frame_to_tensor(&layout, &[&pixels], model.multiple_of(), &mut tensor)
            .expect("convert");

        let options = SessionOptions {
            provider: Provider::Cpu,
            ..SessionOptions::default()
        };
        let mut generator = Generator::new(&model, &options).expect("session");
        generator.run(&tensor, hp, wp, |_| ()).expect("warm-up");

        let el = gst::ElementFactory::make("derain")
            .property("model", file.path().to_str().expect("utf-8"))
            .property_from_str("provider", "cpu")
            .build()
            .expect("element");
        let mut harness = Harness::with_element(&el, Some("sink"), Some("src"));
        let info = gst_video::VideoInfo::builder(gst_video::VideoFormat::Rgb, w as u32, h as u32)
            .fps(gst::Fraction::new(30, 1))
            .build()
            .expect("info");
        harness.set_src_caps(info.to_caps().expect("caps"));
        let make_buffer = || {
            let mut buf = gst::Buffer::with_size(info.size()).expect("buffer");
            {
                let b = buf.get_mut().expect("writable");
                let mut f =
                    gst_video::VideoFrameRef::from_buffer_ref_writable(b, &info).expect("map");
                let stride = f.plane_stride()[0] as usize;
                let data = f.plane_data_mut(0).expect("plane");
                for y in 0..h {
                    data[y * stride..][..3 * w].copy_from_slice(&pixels[y * 3 * w..][..3 * w]);
                }
            }
            buf
        };
        harness
            .push_and_pull(make_buffer())
            .expect("element warm-up");
        // Forced dry: no score is above 1, and one dry frame (the warm-up) leaves rain.
        let dry_el = gst::ElementFactory::make("derain")
            .property("model", file.path().to_str().expect("utf-8"))
            .property_from_str("provider", "cpu")
            .property_from_str("bypass", "dry")
            .property("rain-threshold", 1.0f64)
            .property("rain-leave", 1u32)
            .build()
            .expect("element");
        let mut dry = Harness::with_element(&dry_el, Some("sink"), Some("src"));
        dry.set_src_caps(info.to_caps().expect("caps"));
        dry.push_and_pull(make_buffer()).expect("dry warm-up");

        let (mut raw_s, mut el_s, mut dry_s) = (0.0f64, 0.0f64, 0.0f64);
        for _ in 0..rounds {
            let t = Instant::now();
            for _ in 0..iters {
                generator.run(&tensor, hp, wp, |out| out[0]).expect("run");
            }
            raw_s += t.elapsed().as_secs_f64();
            let bufs: Vec<gst::Buffer> = (0..iters).map(|_| make_buffer()).collect();
            let t = Instant::now();
            for b in bufs {
                harness.push_and_pull(b).expect("element frame");
            }
            el_s += t.elapsed().as_secs_f64();
            let bufs: Vec<gst::Buffer> = (0..iters).map(|_| make_buffer()).collect();
            let t = Instant::now();
            for b in bufs {
                dry.push_and_pull(b).expect("dry frame");
            }
            dry_s += t.elapsed().as_secs_f64();
        }
        let bypassed: u64 = dry_el.property("frames-bypassed");
        assert_eq!(
            bypassed as usize,
            rounds * iters + 1,
            "the dry element bypassed every frame"
        );
        let n = (rounds * iters) as f64;
        let (raw_fps, el_fps) = (n / raw_s, n / el_s);
        let ratio = el_fps / raw_fps;
        println!(
            "{w}x{h}: raw session.run {raw_fps:.2} fps ({:.1} ms), element {el_fps:.2} fps ({:.1} ms), throughput ratio {ratio:.3} (goal >= 0.97: {})",
            1e3 / raw_fps,
            1e3 / el_fps,
            if ratio >= 0.97 { "met" } else { "MISSED" }
        );
        let (dry_ms, rain_ms) = (dry_s / n * 1e3, el_s / n * 1e3);
        let share = dry_ms / rain_ms;
        println!(
            "{w}x{h}: element dry (bypass) {dry_ms:.2} ms a frame, raining {rain_ms:.1} ms: dry/raining {share:.3} (goal <= 0.10: {})",
            if share <= 0.10 { "met" } else { "MISSED" }
        );
    }
}
