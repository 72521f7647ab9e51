//! `derain run`: the in-vehicle runner. One GStreamer pipeline
//!
//! ```text
//! source → decode → videoconvert (RGB) → queue → derain → [queue → yolodetect] → [boxoverlay] → tee
//!   tee → queue → x264enc → mp4mux → filesink     (--output)
//!   tee → queue (leaky) → autovideosink / kmssink (--display)
//!   tee → queue → appsink → bounded queue → JSON lines, statistics
//! ```
//!
//! Live sources (cameras, RTSP, the test pattern) keep latency bounded: the queues in front of the
//! heavy elements leak (drop the oldest frame when full) and the derain element drops frames that
//! are already too late; every drop is counted. Ctrl-C (SIGINT) or SIGTERM sends end-of-stream
//! into the chain, so the muxer finalises the file; a second one aborts. The MP4 is written under
//! a hidden temporary name and renamed only once finalised, so the output name never holds a
//! truncated file.
//!
//! Frames in = frames accepted by the chain's first queue; frames out = frames that reached the
//! appsink; dropped = frames the leaky queues and the derain element dropped. Latency is measured
//! per frame from entering the chain (a reference-timestamp meta stamped at the first queue) to
//! the appsink: deraining, detection, drawing and queueing, not decoding or encoding. For live
//! sources, "since capture" is the clock's running time at the appsink minus the frame's.

mod input;
mod plugin;
mod signals;
mod sink;
mod stats;
mod weather;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use derain::runtime::Provider;
use gst::prelude::*;
use gst_app::AppSink;

use input::Input;
use sink::{ENTRY_TIME_REFERENCE, JsonOut};
use stats::Counters;

/// Live sources: frames older than this when they reach the derain element are dropped.
const LIVE_MAX_LATENESS_MS: u32 = 200;
/// Buffers a chain queue holds: for live sources only the newest frame waits (latency), for files
/// a few (throughput).
const LIVE_QUEUE_BUFFERS: u32 = 1;
const FILE_QUEUE_BUFFERS: u32 = 4;
/// How often progress is logged.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// After an error, how long to wait for the output to be finalised with what came before it.
const SALVAGE_WAIT: gst::ClockTime = gst::ClockTime::from_seconds(10);

#[derive(clap::Args)]
#[command(
    after_help = "INPUT: a video file, file://, http(s)://, rtsp:// URI, a V4L2 camera \
(/dev/videoN), or the live test pattern videotestsrc://?width=640&height=360&fps=30&pattern=ball.

On exit it prints frames in/out/dropped, fps and latency p50/p99. Ctrl-C finishes the output \
cleanly (the MP4 is finalised); a second Ctrl-C aborts. The elements come from libgstderain.so \
next to this executable or in ~/.local/share/gstreamer-1.0/plugins (make build / make install)."
)]
pub struct RunArgs {
    /// What to read (see below).
    input: String,
    /// Write the processed video (boxes drawn when --detector) as H.264 MP4.
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// Show the processed video in a window.
    #[arg(long)]
    display: bool,
    /// Write one JSON line per output frame with its boxes (needs --detector).
    #[arg(long)]
    json: Option<PathBuf>,
    /// The deraining generator (ONNX); without it the element's embedded default (derain-r9 on a
    /// GPU, derain-lite on the CPU).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Execution provider for both networks (auto, cpu, cuda, tensorrt).
    #[arg(long, default_value = "auto")]
    provider: Provider,
    /// A YOLO-family ONNX detector (YOLOX, YOLOv5 or YOLOv8 layout) run on the derained frames.
    #[arg(long)]
    detector: Option<PathBuf>,
    /// Detector classes to keep, names or ids (e.g. car,truck,bus,person).
    #[arg(long)]
    classes: Option<String>,
    /// Detector region of interest x1,y1,x2,y2 in fractions of the frame (e.g. 0,0,1,0.85
    /// ignores the car's own hood).
    #[arg(long)]
    roi: Option<String>,
    /// Skip deraining (detect on the frames as they come).
    #[arg(long)]
    no_derain: bool,
    /// A rain detector network (ONNX, card kind rain-detector) scoring the weather instead of
    /// the element's default scorer.
    #[arg(long)]
    rain_detector: Option<PathBuf>,
    /// Pass dry frames through untouched (the element's bypass=dry).
    #[arg(long)]
    bypass_dry: bool,
    /// The weather from the application, e.g. the car's wiper or rain sensor: lines
    /// `[SECONDS] rain|dry` (seconds of running time from the start; no time: at once), from a
    /// file or `-` for standard input as they come. Sets weather-source=application and
    /// bypass=dry; an unknown word is a warning that changes nothing.
    #[arg(long, value_name = "PATH|-")]
    weather_from: Option<String>,
}

/// What the derain stage does.
#[derive(Debug, Clone, PartialEq)]
enum DerainStage {
    Off,
    Model(PathBuf),
    /// The element's embedded default: it says which in the log, and a build that embeds none
    /// fails at start-up with an error saying so.
    Default,
}

impl DerainStage {
    fn choose(model: Option<&Path>, no_derain: bool) -> Result<Self> {
        match (model, no_derain) {
            (Some(_), true) => bail!("--model and --no-derain contradict each other: pick one"),
            (None, true) => Ok(Self::Off),
            (Some(m), false) => {
                if !m.is_file() {
                    bail!("model {} does not exist", m.display());
                }
                Ok(Self::Model(m.to_owned()))
            }
            (None, false) => Ok(Self::Default),
        }
    }
}

/// Everything the pipeline is built from.
#[derive(Debug, Clone)]
struct Plan {
    input: Input,
    derain: DerainStage,
    detector: Option<PathBuf>,
    output: bool,
    /// The video sink for `--display`.
    display: Option<&'static str>,
    live: bool,
}

impl Plan {
    /// The gst-launch description. Files, URIs and models are set as properties afterwards
    /// ([`configure`]), so no path ever needs quoting here.
    fn describe(&self) -> String {
        let queue = |name: &str| {
            let (n, leak) = if self.live {
                (LIVE_QUEUE_BUFFERS, " leaky=downstream")
            } else {
                (FILE_QUEUE_BUFFERS, "")
            };
            format!("queue name={name} max-size-buffers={n} max-size-bytes=0 max-size-time=0{leak}")
        };
        let mut chain = vec![
            self.input.launch_fragment(),
            "videoconvert".into(),
            "capsfilter caps=\"video/x-raw,format=RGB\"".into(),
            queue("q0"),
        ];
        if self.derain != DerainStage::Off {
            let mut d = "derain name=derain".to_owned();
            if self.live {
                d.push_str(&format!(
                    " drop-policy=drop-late max-lateness={LIVE_MAX_LATENESS_MS}"
                ));
            }
            chain.push(d);
        }
        if self.detector.is_some() {
            if self.derain != DerainStage::Off {
                // Deraining and detection on two threads: one frame each in flight.
                chain.push(queue("q1"));
            }
            chain.push("yolodetect name=detect".into());
            if self.output || self.display.is_some() {
                chain.push("boxoverlay name=overlay".into());
            }
        }
        chain.push("tee name=t".into());
        let mut desc = chain.join(" ! ");
        desc.push_str(
            " t. ! queue name=qapp max-size-buffers=8 max-size-bytes=0 max-size-time=0 \
             ! appsink name=app sync=false",
        );
        if self.output {
            // Never leaky: every frame that reaches the tee goes into the file.
            desc.push_str(
                " t. ! queue name=qout max-size-buffers=30 max-size-bytes=0 max-size-time=0 \
                 ! videoconvert ! video/x-raw,format=I420 \
                 ! x264enc tune=zerolatency speed-preset=veryfast ! h264parse ! mp4mux \
                 ! filesink name=out",
            );
        }
        if let Some(sink) = self.display {
            // A slow window may skip frames; it never holds up the file or the statistics.
            desc.push_str(&format!(
                " t. ! queue name=qdisp max-size-buffers=2 max-size-bytes=0 max-size-time=0 \
                 leaky=downstream ! videoconvert ! {sink} sync=false"
            ));
        }
        desc
    }

    /// The elements of the plugin this plan needs.
    fn plugin_elements(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.derain != DerainStage::Off {
            v.push("derain");
        }
        if self.detector.is_some() {
            v.push("yolodetect");
            if self.output || self.display.is_some() {
                v.push("boxoverlay");
            }
        }
        v
    }
}

/// The sink for `--display`: a window under X11 or Wayland, the screen itself (KMS) on a console.
/// Without either it is an error: autovideosink would probe every sink there is, and some
/// (DirectFB on Debian 12) crash the process when they find no display.
fn display_sink() -> Result<&'static str> {
    let set = |v: &str| std::env::var_os(v).is_some_and(|v| !v.is_empty());
    if set("DISPLAY") || set("WAYLAND_DISPLAY") {
        return Ok("autovideosink");
    }
    let has_drm = std::fs::read_dir("/dev/dri").is_ok_and(|mut d| {
        d.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().starts_with("card")))
    });
    if has_drm {
        return Ok("kmssink");
    }
    bail!(
        "--display: no display to show the video on (DISPLAY and WAYLAND_DISPLAY are unset and \
         there is no /dev/dri/card* for kmssink); use --output instead"
    )
}

/// A file that exists only while the run needs it: removed on drop unless kept.
struct Scratch {
    path: PathBuf,
    keep: bool,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The output MP4: written as `.NAME.part` beside it, renamed when finalised.
struct Output {
    path: PathBuf,
    part: Scratch,
}

impl Output {
    /// Creates the temporary file now, so an unwritable output fails before any work.
    fn create(path: &Path, input: &Input) -> Result<Self> {
        if path.is_dir() {
            bail!("output {} is a folder: give a file name", path.display());
        }
        if let Some(inp) = input.local_file()
            && let (Ok(a), Ok(b)) = (inp.canonicalize(), path.canonicalize())
            && a == b
        {
            bail!(
                "output {} is the input: choose another name",
                path.display()
            );
        }
        let name = path
            .file_name()
            .with_context(|| format!("output {} has no file name", path.display()))?;
        let part = path.with_file_name(format!(".{}.part", name.to_string_lossy()));
        std::fs::File::create(&part)
            .with_context(|| format!("cannot write the output {}", path.display()))?;
        Ok(Self {
            path: path.to_owned(),
            part: Scratch {
                path: part,
                keep: false,
            },
        })
    }

    fn finalise(mut self) -> Result<PathBuf> {
        std::fs::rename(&self.part.path, &self.path).with_context(|| {
            format!("cannot move the finished video to {}", self.path.display())
        })?;
        self.part.keep = true;
        Ok(self.path)
    }
}

/// Buffers into and out of one queue (in − out = dropped, once the stream has drained).
struct QueueCount {
    name: &'static str,
    /// [in, out], updated by pad probes.
    count: Arc<[AtomicU64; 2]>,
}

impl QueueCount {
    fn dropped(&self) -> u64 {
        let [i, o] = &*self.count;
        Counters::get(i).saturating_sub(Counters::get(o))
    }
}

/// How the stream ended.
enum Ending {
    /// End of stream: the input ended, or a stop was asked for (`interrupted`).
    Eos { interrupted: bool },
    /// A second stop signal.
    Aborted,
    /// An error; `finalised` when what came before it still reached the end of the pipeline.
    Failed { error: String, finalised: bool },
}

pub fn run(args: RunArgs) -> Result<()> {
    // Checks that need nothing started, in the order a user would fix them.
    let input = Input::parse(&args.input)?;
    let derain = DerainStage::choose(args.model.as_deref(), args.no_derain)?;
    if let Some(d) = &args.detector
        && !d.is_file()
    {
        bail!("detector {} does not exist", d.display());
    }
    if args.json.is_some() && args.detector.is_none() {
        bail!("--json records the detector's boxes: it needs --detector");
    }
    if (args.classes.is_some() || args.roi.is_some()) && args.detector.is_none() {
        bail!("--classes and --roi filter the detector's boxes: they need --detector");
    }
    if (args.rain_detector.is_some() || args.bypass_dry || args.weather_from.is_some())
        && args.no_derain
    {
        bail!(
            "--rain-detector, --bypass-dry and --weather-from steer deraining: not with --no-derain"
        );
    }
    if let Some(w) = args.weather_from.as_deref().filter(|w| *w != "-")
        && !Path::new(w).is_file()
    {
        bail!("--weather-from: {w} does not exist");
    }
    if let Some(r) = &args.rain_detector
        && !r.is_file()
    {
        bail!("rain detector {} does not exist", r.display());
    }
    if let Some(r) = &args.roi {
        // The element would refuse it too, but only once everything is loaded.
        r.parse::<derain::detect::Roi>()
            .map_err(|e| anyhow::anyhow!("--roi: {e}"))?;
    }
    let display = args.display.then(display_sink).transpose()?;
    let plan = Plan {
        live: input.is_live(),
        input,
        derain,
        detector: args.detector.clone(),
        output: args.output.is_some(),
        display,
    };
    // Outputs are created before anything runs, so a path that cannot be written fails now.
    let output = args
        .output
        .as_deref()
        .map(|p| Output::create(p, &plan.input))
        .transpose()?;
    let mut json_scratch = None;
    let json = match &args.json {
        Some(p) => {
            let file = std::fs::File::create(p)
                .with_context(|| format!("cannot write the JSON lines {}", p.display()))?;
            json_scratch = Some(Scratch {
                path: p.clone(),
                keep: false,
            });
            Some(JsonOut {
                path: p.clone(),
                file,
            })
        }
        None => None,
    };

    let searched = plugin::prepend_plugin_path();
    gst::init().context("GStreamer could not be initialised")?;
    plugin::require_elements(&plan.plugin_elements(), &searched)?;

    let pipeline = gst::parse::launch(&plan.describe())
        .context("cannot build the pipeline (are GStreamer's base/good/ugly plugins installed? run `make setup`)")?
        .downcast::<gst::Pipeline>()
        .map_err(|_| anyhow::anyhow!("the pipeline description did not give a pipeline"))?;
    let by_name = |n: &str| {
        pipeline
            .by_name(n)
            .with_context(|| format!("internal: no element '{n}' in the pipeline"))
    };
    plan.input.configure(&by_name("src")?);
    let provider = args.provider.as_str();
    if plan.derain != DerainStage::Off {
        let d = by_name("derain")?;
        if let DerainStage::Model(m) = &plan.derain {
            d.set_property("model", m.to_string_lossy().as_ref());
        }
        d.set_property_from_str("provider", provider);
        if let Some(r) = &args.rain_detector {
            d.set_property("rain-detector", r.to_string_lossy().as_ref());
        }
        if args.bypass_dry || args.weather_from.is_some() {
            d.set_property_from_str("bypass", "dry");
        }
        if let Some(w) = &args.weather_from {
            d.set_property_from_str("weather-source", "application");
            weather::follow(&d, w)?;
        }
    }
    if let Some(det) = &plan.detector {
        let d = by_name("detect")?;
        d.set_property("model", det.to_string_lossy().as_ref());
        d.set_property_from_str("provider", provider);
        if let Some(c) = &args.classes {
            d.set_property("classes", c.as_str());
        }
        if let Some(r) = &args.roi {
            d.set_property("roi", r.as_str());
        }
    }
    if let Some(o) = &output {
        by_name("out")?.set_property("location", o.part.path.to_string_lossy().as_ref());
    }

    let counters = Arc::new(Counters::new());
    let mut queues = Vec::new();
    for name in ["q0", "q1"] {
        if let Some(q) = pipeline.by_name(name) {
            queues.push(count_queue(&q, name, name == "q0", &counters)?);
        }
    }
    let app = by_name("app")?
        .downcast::<AppSink>()
        .map_err(|_| anyhow::anyhow!("internal: 'app' is not an appsink"))?;
    let consumer = sink::attach(&app, Arc::clone(&counters), plan.live, json)
        .context("cannot start the consumer thread")?;
    let head = by_name("q0")?
        .static_pad("sink")
        .context("internal: the first queue has no sink pad")?;

    let ending = drive(&pipeline, &head, &plan, &counters, output.is_some());
    // Read the elements' own counters while they still exist (stopping drops their state).
    let derain_el = pipeline.by_name("derain");
    let detect_el = pipeline.by_name("detect");
    let derain_dropped = derain_el
        .as_ref()
        .map_or(0, |d| d.property::<u64>("frames-dropped"));
    let derain_passed = derain_el
        .as_ref()
        .map_or(0, |d| d.property::<u64>("frames-passed"));
    let derain_bypassed = derain_el
        .as_ref()
        .map_or(0, |d| d.property::<u64>("frames-bypassed"));
    let timing = |e: &Option<gst::Element>, what: &str| {
        e.as_ref().map(|e| {
            format!(
                "{what} {:.1} ms mean on {}",
                e.property::<f64>("inference-mean-ms"),
                e.property::<String>("active-provider")
            )
        })
    };
    let timings: Vec<String> = [timing(&derain_el, "derain"), timing(&detect_el, "detector")]
        .into_iter()
        .flatten()
        .collect();
    let _ = pipeline.set_state(gst::State::Null);
    sink::detach(&app);
    let report = consumer
        .join()
        .map_err(|_| anyhow::anyhow!("the consumer thread panicked"))?;

    let finalised = matches!(
        ending,
        Ending::Eos { .. }
            | Ending::Failed {
                finalised: true,
                ..
            }
    );
    let written = match output {
        Some(o) if finalised => Some(o.finalise()?),
        other => {
            // Removes the unfinished file now (an abort exits without running destructors).
            drop(other);
            None
        }
    };
    if let Some(mut j) = json_scratch.take() {
        // Lines already written are whole: keep them whatever happened after.
        j.keep = Counters::get(&counters.frames_out) > 0 || finalised;
    }

    let frames_in = Counters::get(&counters.frames_in);
    if frames_in > 0 || matches!(ending, Ending::Eos { .. }) {
        if args.bypass_dry || args.weather_from.is_some() {
            println!("bypassed: {derain_bypassed} dry frames passed through untouched");
        }
        print_summary(&Summary {
            counters: &counters,
            queues: &queues,
            derain: plan.derain != DerainStage::Off,
            derain_dropped,
            derain_passed,
            timings: &timings,
            report: &report,
            json: args.json.as_deref(),
            written: written.as_deref(),
        });
    }

    match ending {
        Ending::Eos { interrupted } => {
            if interrupted {
                eprintln!("stopped on request; the output is complete up to that point");
            }
            if let Some(e) = report.json_error {
                bail!(e);
            }
            Ok(())
        }
        Ending::Aborted => {
            if args.output.is_some() {
                eprintln!("aborted: the output was not finalised and has been removed");
            } else {
                eprintln!("aborted");
            }
            // The shell's convention for "ended by SIGINT".
            std::process::exit(130);
        }
        Ending::Failed { error, finalised } => {
            if finalised && written.is_some() {
                bail!("{error}\n(the output holds the frames before the error and is playable)")
            }
            bail!(error)
        }
    }
}

/// What the summary shows.
struct Summary<'a> {
    counters: &'a Counters,
    queues: &'a [QueueCount],
    derain: bool,
    derain_dropped: u64,
    derain_passed: u64,
    timings: &'a [String],
    report: &'a sink::ConsumerReport,
    json: Option<&'a Path>,
    written: Option<&'a Path>,
}

/// Prints the run's figures on stdout; the first line is `frames: in N, out N, dropped N (...)`.
fn print_summary(s: &Summary<'_>) {
    let frames_in = Counters::get(&s.counters.frames_in);
    let frames_out = Counters::get(&s.counters.frames_out);
    let queue_dropped: u64 = s.queues.iter().map(QueueCount::dropped).sum();
    let dropped = queue_dropped + s.derain_dropped;
    let mut parts: Vec<String> = s
        .queues
        .iter()
        .map(|q| format!("queue {} {}", q.name, q.dropped()))
        .collect();
    if s.derain {
        parts.push(format!("derain late {}", s.derain_dropped));
    }
    println!(
        "frames: in {frames_in}, out {frames_out}, dropped {dropped} ({})",
        parts.join(", ")
    );
    if frames_in != frames_out + dropped {
        println!(
            "note: {} frames unaccounted for (in flight when the run was aborted)",
            frames_in as i128 - (frames_out + dropped) as i128
        );
    }
    if s.derain_passed > 0 {
        println!(
            "derain passed {} late frames through unprocessed",
            s.derain_passed
        );
    }
    match s.counters.fps() {
        Some(fps) => println!("speed: {fps:.1} fps"),
        None => println!("speed: n/a (no frame out)"),
    }
    let ms = |h: &stats::LatencyHistogram, q| h.quantile_ms(q).unwrap_or(f64::NAN);
    let (lat, cap) = (&s.report.latency, &s.report.since_capture);
    if lat.len() > 0 {
        println!(
            "latency (entering the chain to the application): p50 {:.1} ms, p99 {:.1} ms over {} frames",
            ms(lat, 0.5),
            ms(lat, 0.99),
            lat.len()
        );
    }
    if cap.len() > 0 {
        println!(
            "latency since capture (live clock): p50 {:.1} ms, p99 {:.1} ms",
            ms(cap, 0.5),
            ms(cap, 0.99)
        );
    }
    if !s.timings.is_empty() {
        println!("inference: {}", s.timings.join("; "));
    }
    let records_dropped = Counters::get(&s.counters.records_dropped);
    if let Some(p) = s.json {
        println!(
            "json: {} lines to {}, {records_dropped} dropped (writer behind)",
            s.report.json_lines,
            p.display()
        );
    } else if records_dropped > 0 {
        println!("statistics: {records_dropped} frames not sampled (consumer behind)");
    }
    if let Some(p) = s.written {
        println!("output: {} (finalised)", p.display());
    }
}

/// Counts buffers through queue `q`; on the chain's first queue also counts frames in and stamps
/// each frame's entry time. Sink-pad probes run after the pad's flushing and end-of-stream checks,
/// so a frame refused after a stop is never counted as in.
fn count_queue(
    q: &gst::Element,
    name: &'static str,
    head: bool,
    counters: &Arc<Counters>,
) -> Result<QueueCount> {
    let count = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
    let sinkpad = q.static_pad("sink").context("queue without sink pad")?;
    let srcpad = q.static_pad("src").context("queue without src pad")?;
    let reference = gst::Caps::new_empty_simple(ENTRY_TIME_REFERENCE);
    let (c, k) = (Arc::clone(&count), Arc::clone(counters));
    sinkpad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        c[0].fetch_add(1, Ordering::Relaxed);
        if head {
            let now = k.now_ns();
            k.frames_in.fetch_add(1, Ordering::Relaxed);
            let _ = k
                .first_in_ns
                .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
            if let Some(gst::PadProbeData::Buffer(buf)) = info.data.as_mut() {
                gst::ReferenceTimestampMeta::add(
                    buf.make_mut(),
                    &reference,
                    gst::ClockTime::from_nseconds(now),
                    None,
                );
            }
        }
        gst::PadProbeReturn::Ok
    });
    let c = Arc::clone(&count);
    srcpad.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
        c[1].fetch_add(1, Ordering::Relaxed);
        gst::PadProbeReturn::Ok
    });
    Ok(QueueCount { name, count })
}

/// Runs the pipeline until end of stream, an error, or an abort; handles stop signals.
fn drive(
    pipeline: &gst::Pipeline,
    head: &gst::Pad,
    plan: &Plan,
    counters: &Counters,
    has_output: bool,
) -> Ending {
    let Some(bus) = pipeline.bus() else {
        return Ending::Failed {
            error: "internal: the pipeline has no bus".into(),
            finalised: false,
        };
    };
    if pipeline.set_state(gst::State::Playing).is_err() {
        let error = first_error(&bus, plan)
            .unwrap_or_else(|| "the pipeline could not start (no reason given)".into());
        return Ending::Failed {
            error,
            finalised: false,
        };
    }
    // Only now: until the pipeline runs there is nothing to finalise, and a Ctrl-C during a long
    // start (a TensorRT engine build) should simply end the process.
    signals::install();
    let started = Instant::now();
    let mut last_progress = Instant::now();
    let mut stop_sent = false;
    loop {
        match signals::received() {
            0 => {}
            1 if !stop_sent => {
                eprintln!("stopping: finishing the output (Ctrl-C again to abort)");
                // End of stream into the chain's first queue: whatever the source is (a camera
                // that never ends, a demuxer in pull mode), the frames already in the chain
                // drain and the muxer writes its index.
                head.send_event(gst::event::Eos::new());
                stop_sent = true;
            }
            1 => {}
            _ => return Ending::Aborted,
        }
        if let Some(msg) = bus.timed_pop(gst::ClockTime::from_mseconds(100)) {
            use gst::MessageView;
            match msg.view() {
                MessageView::Eos(_) => {
                    return Ending::Eos {
                        interrupted: stop_sent,
                    };
                }
                MessageView::Error(e) => {
                    let error = describe_error(e, plan);
                    let finalised = has_output
                        && Counters::get(&counters.frames_out) > 0
                        && salvage(&bus, head);
                    return Ending::Failed { error, finalised };
                }
                MessageView::Warning(w) => {
                    log::warn!("{}", w.error());
                }
                MessageView::Latency(_) => {
                    // The derain element re-announces its latency when inference slows down.
                    let _ = pipeline.recalculate_latency();
                }
                _ => {}
            }
        }
        if last_progress.elapsed() >= PROGRESS_EVERY {
            last_progress = Instant::now();
            log::info!(
                "{:.0} s: {} frames in, {} out{}",
                started.elapsed().as_secs_f64(),
                Counters::get(&counters.frames_in),
                Counters::get(&counters.frames_out),
                counters
                    .fps()
                    .map(|f| format!(", {f:.1} fps"))
                    .unwrap_or_default()
            );
        }
    }
}

/// After an error upstream, pushes end of stream into the chain so the output is finalised with
/// the frames before it; true when the pipeline reached its end within [`SALVAGE_WAIT`].
fn salvage(bus: &gst::Bus, head: &gst::Pad) -> bool {
    head.send_event(gst::event::Eos::new());
    matches!(
        bus.timed_pop_filtered(
            SALVAGE_WAIT,
            &[gst::MessageType::Eos, gst::MessageType::Error]
        )
        .as_ref()
        .map(|m| m.view()),
        Some(gst::MessageView::Eos(_))
    )
}

fn first_error(bus: &gst::Bus, plan: &Plan) -> Option<String> {
    // Errors from start-up are already on the bus when set_state returns.
    let msg =
        bus.timed_pop_filtered(gst::ClockTime::from_seconds(1), &[gst::MessageType::Error])?;
    match msg.view() {
        gst::MessageView::Error(e) => Some(describe_error(e, plan)),
        _ => None,
    }
}

/// The error's text with where it came from: errors from the source or the decoder name the
/// input, others the element.
fn describe_error(e: &gst::message::Error, plan: &Plan) -> String {
    let origin = e.src();
    let from_input = origin.is_some_and(|o| {
        let path = o.path_string();
        path.contains(":src") || path.contains("decodebin") || path.contains("DecodeBin")
    });
    let mut text = e.error().to_string();
    if let Some(debug) = e.debug()
        && let Some(last) = debug.lines().rev().find(|l| !l.trim().is_empty())
        && !text.contains(last.trim())
    {
        text = format!("{text} ({})", last.trim());
    }
    if from_input {
        let what = match &plan.input {
            Input::File(p) => p.display().to_string(),
            Input::Network { uri, .. } => uri.clone(),
            Input::Camera(p) => p.display().to_string(),
            Input::TestPattern(_) => "the test pattern".into(),
        };
        let hint = if matches!(plan.input, Input::Network { .. }) {
            "; check the address, the network and the server"
        } else {
            ""
        };
        format!("cannot read {what}: {text}{hint}")
    } else {
        let name = origin.map(|o| o.name().to_string()).unwrap_or_default();
        format!("{name}: {text}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(derain: DerainStage, detector: bool, output: bool, live: bool) -> Plan {
        Plan {
            input: if live {
                Input::TestPattern(input::TestPattern::default())
            } else {
                Input::File("x.mp4".into())
            },
            derain,
            detector: detector.then(|| PathBuf::from("d.onnx")),
            output,
            display: None,
            live,
        }
    }

    #[test]
    fn pipeline_descriptions() {
        let m = DerainStage::Model("m.onnx".into());
        let full = plan(m.clone(), true, true, false).describe();
        let order = [
            "filesrc",
            "videoconvert",
            "q0",
            "derain",
            "q1",
            "yolodetect",
            "boxoverlay",
            "tee",
        ];
        let pos: Vec<usize> = order.iter().map(|s| full.find(s).unwrap()).collect();
        assert!(pos.windows(2).all(|w| w[0] < w[1]), "{full}");
        assert!(full.contains("mp4mux") && full.contains("appsink"));
        assert!(
            !full.contains("leaky=downstream"),
            "files never drop: {full}"
        );
        let live = plan(m.clone(), false, false, true).describe();
        assert!(live.contains("leaky=downstream") && live.contains("drop-policy=drop-late"));
        assert!(!live.contains("yolodetect") && !live.contains("mp4mux"));
        // Boxes are drawn only where someone looks at them.
        let json_only = plan(m, true, false, false).describe();
        assert!(json_only.contains("yolodetect") && !json_only.contains("boxoverlay"));
        let off = plan(DerainStage::Off, true, true, false);
        assert!(!off.describe().contains("derain name") && !off.describe().contains("q1"));
        assert_eq!(off.plugin_elements(), ["yolodetect", "boxoverlay"]);
    }

    #[test]
    fn derain_stage_choice() {
        assert_eq!(
            DerainStage::choose(None, false).unwrap(),
            DerainStage::Default
        );
        assert_eq!(DerainStage::choose(None, true).unwrap(), DerainStage::Off);
        assert!(DerainStage::choose(Some(Path::new("m.onnx")), true).is_err());
        let e = DerainStage::choose(Some(Path::new("/no/such/m.onnx")), false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not exist"), "{e}");
    }
}
