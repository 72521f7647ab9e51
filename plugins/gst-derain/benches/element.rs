//! What the element adds on top of ONNX Runtime: throughput of the `derain` element (frame in,
//! conversion, inference, conversion out, metas, statistics) against `Generator::run` (ONNX
//! Runtime's `session.run` plus a zero-copy view of the output) on the same tensors, for the
//! paper-size ResNet-9 generator (16 base channels, random weights), measured in one run with the
//! two interleaved so machine noise hits both alike. Then the element's cost per frame while dry
//! (`bypass=dry` with `rain-threshold=1` forcing dry: the rain score and the passthrough only)
//! against while raining (`bypass=never`: the element above), the dry-weather bypass goal being
//! dry <= 10% of raining (issue 16). These are the `throughput` case.
//!
//! The `reload` case (hot model reload while PLAYING, issue 16): each frame's time from push to
//! output, first in a steady stream, then while `model` is set every BENCH_RELOAD_EVERY frames,
//! alternating between the model file and a copy of it at another path (so every reload opens a
//! new session), at the first of BENCH_SIZES. Each reload waits for its `derain-model` swap
//! message (frames keep flowing; no sleeps). The goal, that a reload delays no frame by more than
//! one inference time, is max during reloads - steady median <= steady median: reported as
//! PASS/MISS, never asserted (timing on a shared machine is not a test).
//!
//!   cargo bench -p gst-plugin-derain --bench element            (or: make bench; every case)
//!   BENCH_CASE=reload cargo bench ...                            (one case: throughput, reload)
//!   BENCH_ROUNDS=5 BENCH_SIZES=640x360 cargo bench ...           (fewer/more work)
//!   BENCH_RELOADS=6 BENCH_RELOAD_EVERY=10 BENCH_CASE=reload ...  (reloads, frames between them)
//!   BENCH_SPIN=1 ...                                             (worker threads spin-wait, in
//!                                                                  both cases: `spin-wait=true`)
//!   BENCH_RELOAD_FPS=30 BENCH_CASE=reload ...                    (a live source's rate: frame
//!                                                                  times count from when each
//!                                                                  frame was due; default 0:
//!                                                                  back to back)
//!   BENCH_SCORE_INTERVAL=1000 cargo bench ...                   (the raining element's
//!                                                                  score-interval; default: the
//!                                                                  element's own)
//!   BENCH_DETECTOR=$PWD/runs/rain-detector.onnx cargo bench ...  (score with this rain detector
//!                                                                  network instead of the
//!                                                                  embedded scorer: the dry case
//!                                                                  then prices it)
//!   BENCH_MODEL=$PWD/models/derain-lite.onnx cargo bench ...     (another model, an absolute
//!                                                                  path: cargo runs benches in
//!                                                                  the plugin's folder; `make
//!                                                                  bench` runs each shipped one)

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use gst_check::Harness;
use gst_video::prelude::*;

use derain_core::frame::{self, FrameLayout, PixelFormat};
use derain_core::model::Model;
use derain_core::runtime::{Generator, Provider, SessionOptions};
use derain_tools::onnx::resnet9::{Resnet9Config, resnet9_random};

#[path = "common.rs"]
#[allow(dead_code)] // its `Checks` serve the suites, not this bench
mod common;
use common::{env_or, percentile};

/// The cases BENCH_CASE may name (a comma-separated list; unset or `all` runs each).
const CASES: [&str; 2] = ["throughput", "reload"];

/// How long a reload may take to swap in before the bench gives up on it (a generous deadline,
/// not a measurement: the swap message is what is waited for).
const SWAP_PATIENCE: Duration = Duration::from_secs(120);

fn parse_size(size: &str) -> Option<(usize, usize)> {
    let (w, h) = size.trim().split_once('x')?;
    Some((w.parse().ok()?, h.parse().ok()?))
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
    let case = std::env::var("BENCH_CASE").unwrap_or_default();
    let cases: Vec<&str> = case
        .split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty() && *c != "all")
        .collect();
    if let Some(bad) = cases.iter().find(|c| !CASES.contains(c)) {
        eprintln!(
            "BENCH_CASE {bad}: not a case (one of: {})",
            CASES.join(", ")
        );
        std::process::exit(2);
    }
    let wants = |name: &str| cases.is_empty() || cases.contains(&name);
    let sizes = std::env::var("BENCH_SIZES").unwrap_or_else(|_| "640x360,1280x720".into());
    if wants("throughput") {
        let rounds: usize = env_or("BENCH_ROUNDS", 3);
        throughput(&model, file.path(), &sizes, rounds);
    }
    if wants("reload") {
        let size = sizes.split(',').next().unwrap_or_default();
        let Some((w, h)) = parse_size(size) else {
            eprintln!("BENCH_SIZES: bad first size {size}");
            std::process::exit(2);
        };
        // The second file: the same bytes at another path, so each reload opens a new session.
        let dir = tempfile::tempdir().expect("tmp dir");
        let copy = dir.path().join("copy.onnx");
        std::fs::copy(file.path(), &copy).expect("copy the model");
        reload(&model, [file.path(), &copy], (w, h));
    }
}

/// A harness around `el` with RGB `w`x`h` caps at 30 fps set, and those caps' video info.
fn rgb_harness(el: &gst::Element, w: usize, h: usize) -> (Harness, gst_video::VideoInfo) {
    let mut harness = Harness::with_element(el, Some("sink"), Some("src"));
    let info = gst_video::VideoInfo::builder(gst_video::VideoFormat::Rgb, w as u32, h as u32)
        .fps(gst::Fraction::new(30, 1))
        .build()
        .expect("info");
    harness.set_src_caps(info.to_caps().expect("caps"));
    (harness, info)
}

/// The model and the machine, for a case's header line.
fn describe(model: &Model) -> String {
    format!(
        "{} ({}, {} params), CPU provider, {} threads available",
        model.origin(),
        model.card().architecture,
        model.card().parameters,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    )
}

/// Element against raw inference, and dry against raining, at each of `sizes`.
fn throughput(model: &Model, path: &Path, sizes: &str, rounds: usize) {
    println!("element vs raw inference, {}", describe(model));
    for size in sizes.split(',') {
        let Some((w, h)) = parse_size(size) else {
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

        let spin = env_or("BENCH_SPIN", 0u8) == 1;
        let options = SessionOptions {
            provider: Provider::Cpu,
            // As the element opens its sessions (`spin-wait`, off unless BENCH_SPIN=1).
            spin,
            ..SessionOptions::default()
        };
        let mut generator = Generator::new(model, &options).expect("session");
        generator.run(&tensor, hp, wp, |_| ()).expect("warm-up");

        let el = gst::ElementFactory::make("derain")
            .property("model", path.to_str().expect("utf-8"))
            .property_from_str("provider", "cpu")
            .property("spin-wait", spin)
            .build()
            .expect("element");
        let detector = std::env::var("BENCH_DETECTOR").unwrap_or_default();
        el.set_property("rain-detector", &detector);
        // The element's default unless BENCH_SCORE_INTERVAL says otherwise (a large value
        // prices the element without its rain score).
        if let Some(n) = std::env::var("BENCH_SCORE_INTERVAL")
            .ok()
            .and_then(|v| v.parse::<u32>().ok())
        {
            el.set_property("score-interval", n);
        }
        let (mut harness, info) = rgb_harness(&el, w, h);
        let make_buffer = || rgb_buffer(&info, &pixels);
        harness
            .push_and_pull(make_buffer())
            .expect("element warm-up");
        // Forced dry: no score is above 1, and one dry frame (the warm-up) leaves rain.
        let dry_el = gst::ElementFactory::make("derain")
            .property("model", path.to_str().expect("utf-8"))
            .property_from_str("provider", "cpu")
            .property("spin-wait", spin)
            .property_from_str("bypass", "dry")
            .property("rain-threshold", 1.0f64)
            .property("rain-leave", 1u32)
            .build()
            .expect("element");
        dry_el.set_property("rain-detector", &detector);
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

/// `pixels` (packed RGB, `3 * width` bytes a row) in a buffer laid out as `info` says.
fn rgb_buffer(info: &gst_video::VideoInfo, pixels: &[u8]) -> gst::Buffer {
    let (w, h) = (info.width() as usize, info.height() as usize);
    let mut buf = gst::Buffer::with_size(info.size()).expect("buffer");
    {
        let b = buf.get_mut().expect("writable");
        let mut f = gst_video::VideoFrameRef::from_buffer_ref_writable(b, info).expect("map");
        let stride = f.plane_stride()[0] as usize;
        let data = f.plane_data_mut(0).expect("plane");
        for y in 0..h {
            data[y * stride..][..3 * w].copy_from_slice(&pixels[y * 3 * w..][..3 * w]);
        }
    }
    buf
}

/// What the bus says about reloads since last asked: swaps done, and refusals (warnings).
fn reload_news(bus: &gst::Bus) -> (usize, Vec<String>) {
    let (mut swaps, mut refusals) = (0, Vec::new());
    while let Some(msg) = bus.pop_filtered(&[gst::MessageType::Element, gst::MessageType::Warning])
    {
        match msg.view() {
            gst::MessageView::Warning(w) => refusals.push(w.error().to_string()),
            _ if msg.structure().is_some_and(|s| s.name() == "derain-model") => swaps += 1,
            _ => {}
        }
    }
    (swaps, refusals)
}

/// Median, p95 and max of `ms`, as the report prints them.
fn spread(ms: &[f64]) -> String {
    format!(
        "median {:.1} ms, p95 {:.1}, max {:.1}",
        percentile(ms, 0.5),
        percentile(ms, 0.95),
        percentile(ms, 1.0)
    )
}

/// Frame times (push to output) in a steady stream, then while the model is reloaded every
/// BENCH_RELOAD_EVERY frames, alternating between `paths` (the same model at two paths).
fn reload(model: &Model, paths: [&Path; 2], (w, h): (usize, usize)) {
    let reloads: usize = env_or("BENCH_RELOADS", 6);
    let every: usize = env_or("BENCH_RELOAD_EVERY", 10).max(1);
    println!(
        "hot reload, {}: {w}x{h}, {reloads} reloads every {every} frames between two copies of the file",
        describe(model)
    );
    let el = gst::ElementFactory::make("derain")
        .property("model", paths[0].to_str().expect("utf-8"))
        .property_from_str("provider", "cpu")
        .property("spin-wait", env_or("BENCH_SPIN", 0u8) == 1)
        .build()
        .expect("element");
    let bus = gst::Bus::new();
    el.set_bus(Some(&bus));
    let (mut harness, info) = rgb_harness(&el, w, h);
    let pixels = rgb_frame(w, h);
    // A live source delivers a frame every 1/fps s, whether the element is ready or not: each
    // frame's time counts from when it was due, so a frame kept waiting by a slow one before it
    // is counted as delayed too (a model slower than the source falls further behind each
    // frame). Unset or 0: back to back (no idle time at all, the hardest case for a loader that
    // needs the CPU, and the only one fair to a model slower than the source).
    let period = match env_or("BENCH_RELOAD_FPS", 0.0f64) {
        fps if fps > 0.0 => Some(Duration::from_secs_f64(1.0 / fps)),
        _ => None,
    };
    match period {
        Some(p) => println!(
            "  frames paced at {:.1} fps, each timed from when it was due",
            1.0 / p.as_secs_f64()
        ),
        None => println!("  frames pushed back to back (BENCH_RELOAD_FPS unset or 0)"),
    }
    let mut due = Instant::now();
    let mut push = || {
        let buf = rgb_buffer(&info, &pixels);
        let now = Instant::now();
        let start = match period {
            // The source's clock: waiting for the next frame is the stream, not a guess.
            Some(_) if now < due => {
                std::thread::sleep(due - now);
                due
            }
            Some(_) => due,
            None => now,
        };
        harness
            .push_and_pull(buf)
            .expect("a frame out for every frame in");
        let ms = start.elapsed().as_secs_f64() * 1e3;
        if let Some(p) = period {
            due = start.max(due) + p;
        }
        ms
    };
    for _ in 0..3 {
        push();
    }
    let steady: Vec<f64> = (0..reloads * every).map(|_| push()).collect();
    let _ = reload_news(&bus);

    // Frame times while a session loads beside the running one, of the frame that swaps it in
    // (and closes the old one), and of the frames after it until the next reload.
    let (mut loading, mut swapping, mut after) = (Vec::new(), Vec::new(), Vec::new());
    let (mut swaps, mut to_swap_ms, mut to_swap_frames) = (0, Vec::new(), 0);
    for k in 1..=reloads {
        // The file not running now: the property reads back what runs.
        let running: String = el.property("model");
        let next = paths[usize::from(running == paths[0].to_str().expect("utf-8"))];
        let asked = Instant::now();
        el.set_property("model", next.to_str().expect("utf-8"));
        let mut pushed = 0;
        loop {
            let ms = push();
            pushed += 1;
            let (swapped, refusals) = reload_news(&bus);
            if swapped > 0 {
                swaps += swapped;
                swapping.push(ms);
                to_swap_ms.push(asked.elapsed().as_secs_f64() * 1e3);
                to_swap_frames += pushed;
                break;
            }
            loading.push(ms);
            if let Some(why) = refusals.first() {
                println!("  reload {k} refused: {why}");
                break;
            }
            if asked.elapsed() > SWAP_PATIENCE {
                println!("  reload {k}: no swap within {} s", SWAP_PATIENCE.as_secs());
                break;
            }
        }
        for _ in pushed..every {
            after.push(push());
        }
    }
    let during: Vec<f64> = [&loading[..], &swapping, &after].concat();
    let median = percentile(&steady, 0.5);
    let (p95, max) = (percentile(&during, 0.95), percentile(&during, 1.0));
    println!(
        "{w}x{h}: steady, no reload ({} frames): {}",
        steady.len(),
        spread(&steady)
    );
    println!(
        "{w}x{h}: during reloads ({} frames): {}; p95/steady median {:.2}, max/steady median {:.2}",
        during.len(),
        spread(&during),
        p95 / median,
        max / median
    );
    println!(
        "{w}x{h}: max while loading {:.1} ms ({} frames), at the swap {:.1} ms, after it {:.1} ms; swaps {swaps}/{reloads}, request to swap {:.0} ms mean ({:.1} frames)",
        percentile(&loading, 1.0),
        loading.len(),
        percentile(&swapping, 1.0),
        percentile(&after, 1.0),
        to_swap_ms.iter().sum::<f64>() / to_swap_ms.len().max(1) as f64,
        to_swap_frames as f64 / to_swap_ms.len().max(1) as f64
    );
    let excess = max - median;
    println!(
        "{w}x{h}: a reload delays no frame by more than one inference time (max - steady median {excess:.1} ms <= steady median {median:.1} ms): {}",
        if excess <= median { "PASS" } else { "MISS" }
    );
}
