/**
 * SECTION:element-derain
 *
 * Removes rain streaks and rain veil from raw video frames with an image-to-image generator run
 * through ONNX Runtime (TensorRT or CUDA on an NVIDIA GPU, the CPU otherwise). Frames leave in the
 * format they came in, with timestamps, flags and metas kept; each carries its rain score.
 *
 * With `bypass=dry` the element passes frames through untouched (the input buffer itself, the
 * network not run) while its rain score says the weather is dry, and derains while it rains;
 * `rain-enter` and `rain-leave` give the hysteresis that keeps the mode from flapping.
 *
 * ## Example launch line
 * |[
 * gst-launch-1.0 filesrc location=drive.mp4 ! decodebin ! videoconvert ! derain model=derain.onnx ! videoconvert ! x264enc ! mp4mux ! filesink location=derained.mp4
 * ]|
 */
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_base::prelude::*;
use gst_base::subclass::base_transform::GenerateOutputSuccess;
use gst_base::subclass::prelude::*;
use gst_video::prelude::*;
use gst_video::subclass::prelude::*;

use derain_core::derainer::{DerainError, Derainer, MAX_PIXELS};
use derain_core::frame::{FrameLayout, PixelFormat, YuvColorimetry, YuvMatrix};
use derain_core::model::{Model, ModelError};
use derain_core::raindetect::RainDetector;
use derain_core::rainscore::RainScoreModel;
use derain_core::runtime::Generator;

use crate::ortprops::{
    Failure, Mutable, OpenError, OrtSettings, SESSION_PROPERTIES, Timings, Wording,
};

use super::latency::LatencyEstimate;
use super::weather::{self, Hysteresis, Scorer};
use super::{Bypass, DropPolicy, RAIN_META_NAME, WeatherSource};

/// The hot reload (a child module, in its own file beside this one).
#[path = "reload.rs"]
mod reload;
use reload::{Boundaries, Reloads};

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "derain",
        gst::DebugColorFlags::empty(),
        Some("Rain removal with an ONNX generator"),
    )
});

const DEFAULT_MAX_LATENESS_MS: u32 = 200;
const DEFAULT_STATS_INTERVAL_MS: u32 = 1000;
/// How the shared ONNX Runtime properties are worded here.
const WORDING: Wording = Wording {
    model_nick: "Model",
    model_blurb: "Path of the ONNX generator (input 'rainy', output 'clean', float32 [N,3,H,W] in [0,1]); empty uses the embedded default model when the build has one. While running it reads back the model that really runs",
    network: "model",
    mean_nick: "Mean processing time (ms)",
    timed: "processed frame (rain score, conversion and inference)",
};
/// The hand-made rain score (embedded in the library), parsed once: the weather signal when no
/// rain detector network is set or embedded.
static SCORE_MODEL: LazyLock<Result<RainScoreModel, String>> =
    LazyLock::new(|| RainScoreModel::shipped().map_err(|e| e.to_string()));

/// The default `rain-threshold`: the embedded rain detector's (its card's), else the hand-made
/// score's.
fn default_rain_threshold() -> f64 {
    if let Some(t) = derain_core::raindetect::embedded()
        .and_then(|b| derain_core::raindetect::read_card(b).ok())
        .map(|(_, t)| t)
    {
        return t;
    }
    SCORE_MODEL.as_ref().map_or(0.5, |m| m.threshold)
}

/// Formats in and out (the same format leaves as came in).
const FORMATS: [gst_video::VideoFormat; 12] = [
    gst_video::VideoFormat::Rgb,
    gst_video::VideoFormat::Bgr,
    gst_video::VideoFormat::Rgba,
    gst_video::VideoFormat::Bgra,
    gst_video::VideoFormat::Argb,
    gst_video::VideoFormat::Abgr,
    gst_video::VideoFormat::Rgbx,
    gst_video::VideoFormat::Bgrx,
    gst_video::VideoFormat::Xrgb,
    gst_video::VideoFormat::Xbgr,
    gst_video::VideoFormat::I420,
    gst_video::VideoFormat::Nv12,
];

fn pixel_format(f: gst_video::VideoFormat) -> Option<PixelFormat> {
    use gst_video::VideoFormat as V;
    Some(match f {
        V::Rgb => PixelFormat::Rgb,
        V::Bgr => PixelFormat::Bgr,
        V::Rgba => PixelFormat::Rgba,
        V::Bgra => PixelFormat::Bgra,
        V::Argb => PixelFormat::Argb,
        V::Abgr => PixelFormat::Abgr,
        V::Rgbx => PixelFormat::Rgbx,
        V::Bgrx => PixelFormat::Bgrx,
        V::Xrgb => PixelFormat::Xrgb,
        V::Xbgr => PixelFormat::Xbgr,
        V::I420 => PixelFormat::I420,
        V::Nv12 => PixelFormat::Nv12,
        _ => return None,
    })
}

fn colorimetry(info: &gst_video::VideoInfo) -> YuvColorimetry {
    let c = info.colorimetry();
    let matrix = match c.matrix() {
        gst_video::VideoColorMatrix::Bt709 => YuvMatrix::Bt709,
        gst_video::VideoColorMatrix::Bt2020 => YuvMatrix::Bt2020,
        _ => YuvMatrix::Bt601,
    };
    YuvColorimetry {
        matrix,
        full_range: c.range() == gst_video::VideoColorRange::Range0_255,
    }
}

/// What the user set. Copied out of its lock before use.
#[derive(Debug, Clone)]
struct Settings {
    /// The session settings as last set: what the next start (or the reload in flight) opens.
    session: OrtSettings,
    /// While running: the settings of the session that really runs. The session properties read
    /// back these, so a reload that has not swapped in yet (or failed) is never reported.
    active: Option<OrtSettings>,
    drop_policy: DropPolicy,
    max_lateness_ms: u32,
    stats_interval_ms: u32,
    rain_level: bool,
    bypass: Bypass,
    /// `None`: the rain detector's own threshold (its card's).
    rain_threshold: Option<f64>,
    /// `None`: the embedded detector.
    rain_detector: Option<std::path::PathBuf>,
    weather_source: WeatherSource,
    rain_enter: u32,
    rain_leave: u32,
    score_interval: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            session: OrtSettings::default(),
            active: None,
            drop_policy: DropPolicy::Never,
            max_lateness_ms: DEFAULT_MAX_LATENESS_MS,
            stats_interval_ms: DEFAULT_STATS_INTERVAL_MS,
            rain_level: true,
            bypass: Bypass::default(),
            rain_threshold: None,
            rain_detector: None,
            weather_source: WeatherSource::default(),
            rain_enter: weather::DEFAULT_RAIN_ENTER,
            rain_leave: weather::DEFAULT_RAIN_LEAVE,
            score_interval: weather::DEFAULT_SCORE_INTERVAL,
        }
    }
}

/// Counters, readable as properties at any time; reset in `start()`.
#[derive(Debug, Default)]
struct Stats {
    frames_in: u64,
    frames_processed: u64,
    frames_dropped: u64,
    frames_passed: u64,
    /// Frames passed through untouched because the weather was dry (bypass=dry).
    frames_bypassed: u64,
    /// Live frames older than max-lateness that were processed anyway (drop-policy=never).
    frames_late: u64,
    /// Whether the bus has been warned that processing cannot keep up (once per start).
    warned_late: bool,
    active_provider: String,
    /// Whether frames are converted on the GPU (see `State::derainer`).
    gpu_frames: bool,
    /// Seconds per processed frame (rain score, conversion and inference); the p99 window holds
    /// the current frame size's and model's only.
    timings: Timings,
    /// The processing delay (p99 with hysteresis, see `latency.rs`).
    estimate: LatencyEstimate,
    /// Between `start()` and `stop()`.
    running: bool,
    /// Whether upstream answered the last LATENCY query as live.
    live: bool,
    /// What this element adds to LATENCY queries: the processing delay, plus max-lateness in a
    /// live pipeline that drops or passes late frames (a frame may arrive that late and still be
    /// processed).
    latency: gst::ClockTime,
    /// The last rain score (what `rain-level` carries), reused between scored frames.
    last_rain_level: f64,
    /// The weather mode and its hysteresis (tracked with either `bypass` setting).
    weather: Hysteresis,
    /// The running rain detector's threshold (its card's).
    detector_threshold: Option<f64>,
    /// The weather the application set (`set-weather`), waiting for its running time: applied
    /// to the first frame at or after it (`None`: the next frame), in the order given.
    app_weather: std::collections::VecDeque<(Option<gst::ClockTime>, bool)>,
    /// Frames still to pass before the next is scored (0: score the next one).
    until_score: u32,
    /// A flush, caps change or new stream happened: the next frame starts the hysteresis over.
    reset_pending: bool,
    /// How long scoring the frame now in hand took: part of its processing time if it goes
    /// through the network.
    score_time: Duration,
    last_post: Option<Instant>,
}

impl Stats {
    fn to_structure(&self) -> gst::Structure {
        gst::Structure::builder("derain-stats")
            .field("frames-in", self.frames_in)
            .field("frames-processed", self.frames_processed)
            .field("frames-dropped", self.frames_dropped)
            .field("frames-passed", self.frames_passed)
            .field("frames-bypassed", self.frames_bypassed)
            .field("frames-late", self.frames_late)
            .field("inference-mean-ms", self.timings.mean_ms())
            .field("inference-p99-ms", self.timings.p99_ms())
            .field("latency-ms", self.latency.nseconds() as f64 / 1e6)
            .field("rain-level", self.last_rain_level)
            .field("weather", weather::weather_name(self.weather.raining))
            .field("active-provider", self.active_provider.as_str())
            .build()
    }

    /// Recomputes what LATENCY queries are answered with; returns whether it changed.
    fn refresh_latency(&mut self, policy: DropPolicy, max_lateness: gst::ClockTime) -> bool {
        let processing = gst::ClockTime::from_nseconds(self.estimate.get().as_nanos() as u64);
        let waiting = if self.live && policy != DropPolicy::Never {
            max_lateness
        } else {
            gst::ClockTime::ZERO
        };
        let latency = processing + waiting;
        let changed = latency != self.latency;
        self.latency = latency;
        changed
    }
}

/// What exists while running: created in `start()`, dropped in `stop()`.
struct State {
    /// The running model (its frame-size contract is checked against new caps).
    model: Model,
    /// Its session, the frame layout of the negotiated caps and the scratch tensor: frame in,
    /// frame out. Frames cross to the GPU once and are converted there when its frame path is on
    /// (`cuda` feature, GPU provider).
    derainer: Derainer,
    /// Set by `set_info()` for the negotiated caps (with the derainer's layout).
    info: Option<gst_video::VideoInfo>,
    /// Whether upstream is live (asked once per stream).
    live: Option<bool>,
    /// What scores every `score-interval`-th input frame.
    detector: Scorer,
}

/// What the rain score says about one input frame (see `Derain::weigh`).
struct Verdict {
    score: f64,
    bypass: bool,
    /// The `derain-weather` message when this frame changed the mode.
    message: Option<gst::Message>,
}

#[derive(Default)]
pub struct Derain {
    settings: Mutex<Settings>,
    state: Mutex<Option<State>>,
    stats: Mutex<Stats>,
    /// Locked after `settings` when both are held, never before.
    reloads: Arc<Mutex<Reloads>>,
    /// Frame boundaries the streaming thread has passed (see [`Boundaries`]).
    boundaries: Arc<Boundaries>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not take the element down with it: the data is plain counters.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A model and its session, opened and (when a frame size is known) run once at it.
struct Opened {
    /// The settings it was opened with.
    settings: OrtSettings,
    model: Model,
    /// The session, with its GPU frame path set up when it has one.
    derainer: Derainer,
    /// Which model runs, and why (for the log).
    why: String,
    /// The network input size it was warmed up at, and how long that run took.
    warm: Option<((usize, usize), Duration)>,
}

/// Opens the model and session `settings` ask for. With `frame` (width, height), the model must
/// take frames of that size and is run once on one (the contract a reload must meet before it
/// replaces a running model), after `before_warm_up` returns.
fn open(
    settings: &OrtSettings,
    frame: Option<(usize, usize)>,
    before_warm_up: impl FnOnce(),
) -> Result<Opened, OpenError> {
    let options = settings.session_options()?;
    let (model, generator, why) = if settings.model.is_empty() {
        super::defaults::open(&options).map_err(OpenError::settings)?
    } else {
        let model = Model::from_path(&settings.model).map_err(|e| {
            let failure = match e {
                ModelError::Read { .. } => Failure::Missing,
                _ => Failure::Contract,
            };
            OpenError::new(failure, e.to_string())
        })?;
        let generator = Generator::new(&model, &options).map_err(|e| OpenError::runtime(&e))?;
        let why = format!(
            "model '{}' ({}, multiple_of {}) on provider {} (asked for {})",
            model.origin(),
            model.card().name,
            model.multiple_of(),
            generator.provider(),
            options.provider
        );
        (model, generator, why)
    };
    let mut derainer = Derainer::new(generator);
    if let Err(why) = derainer.use_frame_path() {
        gst::warning!(
            CAT,
            "converting frames on the CPU: the GPU frame path is unavailable ({why})"
        );
    }
    let mut warm = None;
    if let Some((width, height)) = frame {
        model
            .check_frame_size(width, height)
            .map_err(|why| OpenError::new(Failure::Contract, why))?;
        before_warm_up();
        let took = derainer.warm_up_at(width, height).map_err(|e| {
            OpenError::new(
                Failure::Contract,
                format!(
                    "model '{}' cannot take the stream's {width}x{height} frames: {e}",
                    model.origin()
                ),
            )
        })?;
        warm = Some((derainer.padded(), took));
    }
    Ok(Opened {
        settings: settings.clone(),
        model,
        derainer,
        why,
        warm,
    })
}

impl Derain {
    /// How long after its running time `buf` reaches this element (live pipelines only): the
    /// delay it has gathered upstream, our own earlier frames included.
    fn input_age(&self, buf: &gst::BufferRef) -> Option<gst::ClockTime> {
        let obj = self.obj();
        let (clock, base) = (obj.clock()?, obj.base_time()?);
        let segment = obj.segment();
        let running_time = segment
            .downcast_ref::<gst::ClockTime>()?
            .to_running_time(buf.pts())?;
        clock.time().checked_sub(base)?.checked_sub(running_time)
    }

    /// The running time of `buf` in the current segment.
    fn running_time(&self, buf: &gst::BufferRef) -> Option<gst::ClockTime> {
        let segment = self.obj().segment();
        segment
            .downcast_ref::<gst::ClockTime>()?
            .to_running_time(buf.pts())
    }

    /// Scores `inbuf` when a score is due (else the last score stands), steps the weather
    /// hysteresis with it, and says whether the frame bypasses the network. Cheap: the score
    /// reads the input planes 2x2-binned, the network is not involved.
    fn weigh(&self, inbuf: &gst::BufferRef) -> Result<Verdict, gst::FlowError> {
        let (bypass, threshold, enter, leave, interval, source) = {
            let s = lock(&self.settings);
            (
                s.bypass,
                s.rain_threshold,
                s.rain_enter,
                s.rain_leave,
                s.score_interval.max(1),
                s.weather_source,
            )
        };
        let application = source == WeatherSource::Application;
        // A discontinuity, flush, caps change or new stream: what was seen before says nothing
        // about these frames, so the hysteresis starts over (in rain) and this frame is scored.
        let discont = inbuf.flags().contains(gst::BufferFlags::DISCONT);
        let (was_raining, due) = {
            let mut st = lock(&self.stats);
            let was_raining = st.weather.raining;
            // The application's weather holds across discontinuities: it knows, we do not.
            if (discont || std::mem::take(&mut st.reset_pending)) && !application {
                st.weather = Hysteresis::default();
                st.until_score = 0;
            }
            let due = st.until_score == 0;
            st.until_score = if due {
                interval - 1
            } else {
                st.until_score - 1
            };
            (was_raining, due)
        };
        let started = Instant::now();
        let score = if due { self.score(inbuf)? } else { None };
        let running_time = self.running_time(inbuf);

        let mut st = lock(&self.stats);
        st.score_time = started.elapsed();
        let threshold = threshold.or(st.detector_threshold).unwrap_or(0.5);
        if let Some(score) = score {
            st.last_rain_level = score;
            if !application {
                st.weather.observe(score > threshold, enter, leave);
            }
        }
        if application {
            // Every weather the application set for this frame's time or earlier, in order.
            while let Some(&(at, raining)) = st.app_weather.front() {
                let due = match (at, running_time) {
                    (Some(at), Some(now)) => now >= at,
                    _ => true,
                };
                if !due {
                    break;
                }
                st.app_weather.pop_front();
                st.weather.set(raining);
            }
        }
        let raining = st.weather.raining;
        let score = st.last_rain_level;
        drop(st);
        let message = (raining != was_raining).then(|| {
            gst::info!(
                CAT,
                imp = self,
                "weather now {} (score {score:.3}, threshold {threshold}) at running time {}",
                weather::weather_name(raining),
                running_time.display()
            );
            gst::message::Element::builder(
                gst::Structure::builder("derain-weather")
                    .field("weather", weather::weather_name(raining))
                    .field("score", score)
                    .field("running-time", running_time)
                    .field(
                        "source",
                        if application {
                            "application"
                        } else {
                            "detector"
                        },
                    )
                    .build(),
            )
            .src(&*self.obj())
            .build()
        });
        Ok(Verdict {
            score,
            bypass: bypass == Bypass::Dry && !raining,
            message,
        })
    }

    /// The `set-weather` action signal: `weather` ("rain" or "dry") applies from the first frame
    /// whose running time is at or after `at` (nanoseconds; `u64::MAX`, GST_CLOCK_TIME_NONE, for
    /// the next frame), with weather-source=application. An unknown word is a warning that
    /// changes nothing; returns whether the weather was taken.
    fn set_weather(&self, weather: &str, at: u64) -> bool {
        let raining = match weather.trim().to_ascii_lowercase().as_str() {
            "rain" | "rainy" | "wet" => true,
            "dry" => false,
            other => {
                gst::warning!(
                    CAT,
                    imp = self,
                    "set-weather: unknown weather '{other}' (use rain or dry): nothing changed"
                );
                return false;
            }
        };
        if lock(&self.settings).weather_source != WeatherSource::Application {
            gst::warning!(
                CAT,
                imp = self,
                "set-weather '{weather}' taken, but weather-source is detector: it applies once \
                 weather-source=application"
            );
        }
        let at = (at != u64::MAX).then(|| gst::ClockTime::from_nseconds(at));
        gst::debug!(CAT, imp = self, "set-weather {weather} at {}", at.display());
        lock(&self.stats).app_weather.push_back((at, raining));
        true
    }

    /// Opens what scores the weather: the rain detector `settings` name, else the embedded
    /// detector network, else the hand-made score. A file that cannot be used is an error
    /// naming it and the reason.
    fn open_detector(&self, settings: &Settings) -> Result<Scorer, gst::ErrorMessage> {
        let options = derain_core::runtime::SessionOptions {
            ort_library: settings.session.ort_library_path(),
            ..Default::default()
        };
        let opened = match &settings.rain_detector {
            Some(path) => {
                RainDetector::from_path(path, &options).map(|d| Scorer::Network(Box::new(d)))
            }
            None if derain_core::raindetect::embedded().is_some() => {
                RainDetector::shipped(&options).map(|d| Scorer::Network(Box::new(d)))
            }
            None => {
                let model = SCORE_MODEL.as_ref().map_err(|e| {
                    gst::error_msg!(gst::LibraryError::Init, ["the embedded rain score: {}", e])
                })?;
                return Ok(Scorer::Features(model.clone()));
            }
        };
        let scorer =
            opened.map_err(|e| gst::error_msg!(gst::ResourceError::OpenRead, ["{}", e]))?;
        gst::info!(
            CAT,
            imp = self,
            "rain scored by '{}' (threshold {:.3})",
            scorer.origin(),
            scorer.threshold()
        );
        Ok(scorer)
    }

    /// Loads the rain detector at `path` while running and swaps it in; a detector that cannot
    /// be used leaves the running one in place with a warning on the bus.
    fn swap_detector(&self, path: Option<std::path::PathBuf>) {
        let ort_library = lock(&self.settings).session.ort_library_path();
        let options = derain_core::runtime::SessionOptions {
            ort_library,
            ..Default::default()
        };
        let opened = match &path {
            Some(p) => RainDetector::from_path(p, &options).map(|d| Scorer::Network(Box::new(d))),
            None if derain_core::raindetect::embedded().is_some() => {
                RainDetector::shipped(&options).map(|d| Scorer::Network(Box::new(d)))
            }
            None => match SCORE_MODEL.as_ref() {
                Ok(m) => Ok(Scorer::Features(m.clone())),
                Err(e) => Err(derain_core::raindetect::RainDetectorError::Model {
                    origin: "embedded rain score".into(),
                    problem: e.clone(),
                }),
            },
        };
        match opened {
            Ok(d) => {
                let threshold = d.threshold();
                let mut guard = lock(&self.state);
                if let Some(state) = guard.as_mut() {
                    gst::info!(CAT, imp = self, "rain now scored by '{}'", d.origin());
                    state.detector = d;
                    drop(guard);
                    lock(&self.stats).detector_threshold = Some(threshold);
                }
            }
            Err(e) => {
                gst::warning!(CAT, imp = self, "{e}: the running detector stays");
                self.post(
                    gst::message::Warning::builder(
                        gst::ResourceError::OpenRead,
                        &format!("{e}: the running rain detector stays"),
                    )
                    .src(&*self.obj())
                    .build(),
                );
            }
        }
    }

    /// The rain score of one input frame, from its planes 2x2-binned; `None` (the last score
    /// stands) for a frame whose planes do not fit the caps.
    fn score(&self, inbuf: &gst::BufferRef) -> Result<Option<f64>, gst::FlowError> {
        let mut guard = lock(&self.state);
        let state = guard.as_mut().ok_or(gst::FlowError::NotNegotiated)?;
        let (Some(&layout), Some(info)) = (state.derainer.layout(), state.info.as_ref()) else {
            return Err(gst::FlowError::NotNegotiated);
        };
        let detector = &mut state.detector;
        let frame =
            gst_video::VideoFrameRef::from_buffer_ref_readable(inbuf, info).map_err(|_| {
                gst::element_imp_error!(
                    self,
                    gst::CoreError::Failed,
                    ["Failed to map input buffer"]
                );
                gst::FlowError::Error
            })?;
        let layout = FrameLayout {
            strides: strides(&frame),
            ..layout
        };
        let planes = frame.planes_data();
        let n = layout.format.n_planes();
        let Some(binned) = weather::binned_from_planes(&layout, &planes[..n]) else {
            gst::warning!(
                CAT,
                imp = self,
                "input planes do not fit the caps: score kept"
            );
            return Ok(None);
        };
        match detector.score(&binned) {
            Ok(score) => Ok(Some(score)),
            Err(e) => {
                gst::warning!(CAT, imp = self, "{e}: score kept");
                Ok(None)
            }
        }
    }

    /// Posts `message`; fails only without a bus (element outside a pipeline): nobody to tell.
    fn post(&self, message: gst::Message) {
        let _ = self.obj().post_message(message);
    }

    /// The drop policy and max-lateness, as set now.
    fn lateness_settings(&self) -> (DropPolicy, gst::ClockTime) {
        let s = lock(&self.settings);
        (
            s.drop_policy,
            gst::ClockTime::from_mseconds(s.max_lateness_ms.max(1).into()),
        )
    }

    fn upstream_is_live(&self) -> bool {
        let Some(sinkpad) = self.obj().static_pad("sink") else {
            return false;
        };
        let mut q = gst::query::Latency::new();
        sinkpad.peer_query(&mut q) && q.result().0
    }

    /// Derains one frame: maps the buffers and hands their planes to the derainer; a frame it
    /// cannot take is a format error, a network that fails a failure.
    fn process(
        &self,
        state: &mut State,
        inbuf: &gst::Buffer,
        outbuf: &mut gst::BufferRef,
    ) -> Result<(), gst::FlowError> {
        let (Some(layout), Some(info)) = (state.derainer.layout(), state.info.as_ref()) else {
            return Err(gst::FlowError::NotNegotiated);
        };
        let n = layout.format.n_planes();
        let inframe = gst_video::VideoFrameRef::from_buffer_ref_readable(inbuf.as_ref(), info)
            .map_err(|_| {
                gst::element_imp_error!(
                    self,
                    gst::CoreError::Failed,
                    ["Failed to map input buffer"]
                );
                gst::FlowError::Error
            })?;
        let mut outframe = gst_video::VideoFrameRef::from_buffer_ref_writable(outbuf, info)
            .map_err(|_| {
                gst::element_imp_error!(
                    self,
                    gst::CoreError::Failed,
                    ["Failed to map output buffer"]
                );
                gst::FlowError::Error
            })?;
        let (in_strides, out_strides) = (strides(&inframe), strides(&outframe));
        let planes = inframe.planes_data();
        let mut out_planes = outframe.planes_data_mut();
        state
            .derainer
            .process(in_strides, &planes[..n], out_strides, &mut out_planes[..n])
            .map_err(|e| {
                if e.is_format() {
                    gst::element_imp_error!(self, gst::StreamError::Format, ["{}", e]);
                } else {
                    gst::element_imp_error!(self, gst::StreamError::Failed, ["{}", e]);
                }
                gst::FlowError::Error
            })
    }

    /// Asks the pipeline to query and redistribute latency again: upstream (sources, queues) and
    /// downstream (synchronised sinks) learn our new delay from the LATENCY event that follows.
    fn announce_latency(&self) {
        gst::debug!(
            CAT,
            imp = self,
            "latency now {}, asking for a recalculation",
            lock(&self.stats).latency
        );
        // Posting fails only without a bus (element outside a pipeline): nobody to tell.
        let _ = self
            .obj()
            .post_message(gst::message::Latency::builder().src(&*self.obj()).build());
    }

    /// A live frame processed although it is `age` old (drop-policy=never): counted, and the first
    /// one per run explained on the bus, since latency now grows with every frame.
    fn note_late_frame(&self, age: gst::ClockTime, max_lateness: gst::ClockTime) {
        let mut stats = lock(&self.stats);
        stats.frames_late += 1;
        if std::mem::replace(&mut stats.warned_late, true) {
            return;
        }
        let p99 = stats.timings.p99_ms();
        drop(stats);
        gst::element_imp_warning!(
            self,
            gst::CoreError::Clock,
            [
                "A frame arrived {} ms late (max-lateness {} ms) and drop-policy=never processes it anyway: inference (p99 {:.1} ms a frame) cannot keep up with this live stream, so latency will keep growing. Set drop-policy=drop-late (or pass-late) to bound it; frames-late counts such frames.",
                age.mseconds(),
                max_lateness.mseconds(),
                p99
            ]
        );
    }

    /// The statistics message, when one is due. Posted by the caller after releasing the stats
    /// lock: a bus sync handler runs inside `post_message` and may read our properties.
    fn stats_message_due(&self, stats: &mut Stats, interval_ms: u32) -> Option<gst::Message> {
        if interval_ms == 0 {
            return None;
        }
        let now = Instant::now();
        let due = stats
            .last_post
            .is_none_or(|t| now.duration_since(t) >= Duration::from_millis(interval_ms.into()));
        if !due {
            return None;
        }
        stats.last_post = Some(now);
        Some(
            gst::message::Element::builder(stats.to_structure())
                .src(&*self.obj())
                .build(),
        )
    }
}

fn strides(frame: &impl VideoFrameExt) -> [usize; 3] {
    let s = frame.plane_stride();
    let mut out = [0; 3];
    for (o, v) in out.iter_mut().zip(s.iter()) {
        *o = (*v).max(0) as usize;
    }
    out
}

#[glib::object_subclass]
impl ObjectSubclass for Derain {
    const NAME: &'static str = "GstDerain";
    type Type = super::Derain;
    type ParentType = gst_video::VideoFilter;
}

impl ObjectImpl for Derain {
    fn signals() -> &'static [glib::subclass::Signal] {
        static SIGNALS: LazyLock<Vec<glib::subclass::Signal>> = LazyLock::new(|| {
            vec![
                // g_signal_emit_by_name(derain, "set-weather", "rain", running_time, &accepted)
                glib::subclass::Signal::builder("set-weather")
                    .param_types([String::static_type(), u64::static_type()])
                    .return_type::<bool>()
                    .action()
                    .class_handler(|args| {
                        let element = args[0].get::<super::Derain>().ok()?;
                        let weather = args[1].get::<Option<String>>().ok().flatten();
                        let at = args[2].get::<u64>().unwrap_or(u64::MAX);
                        Some(
                            element
                                .imp()
                                .set_weather(weather.as_deref().unwrap_or(""), at)
                                .to_value(),
                        )
                    })
                    .build(),
            ]
        });
        SIGNALS.as_ref()
    }

    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            let mut props = OrtSettings::properties(&WORDING, Mutable::Playing);
            props.extend([
                glib::ParamSpecEnum::builder_with_default("drop-policy", DropPolicy::Never)
                    .nick("Drop policy")
                    .blurb("In live pipelines, what to do with frames older than max-lateness: never (process all), drop-late, pass-late (push unprocessed)")
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder("max-lateness")
                    .nick("Maximum lateness (ms)")
                    .blurb("A live frame older than this when it arrives is late (see drop-policy); at least 1")
                    .default_value(DEFAULT_MAX_LATENESS_MS)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder("stats-interval")
                    .nick("Statistics interval (ms)")
                    .blurb("Post a 'derain-stats' element message this often; 0 = never")
                    .default_value(DEFAULT_STATS_INTERVAL_MS)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecBoolean::builder("rain-level")
                    .nick("Attach rain level")
                    .blurb("Attach a GstDerainRainMeta with 'rain-level' (the input frame's rain score, 0..1; above rain-threshold is rainy) to every frame, derained or bypassed")
                    .default_value(true)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("bypass", Bypass::Never)
                    .nick("Dry-weather bypass")
                    .blurb("never: run the network on every frame; dry: while the weather is dry (see rain-threshold, rain-enter, rain-leave) pass frames through untouched without running the network. Default never while the shipped rain score is not trustworthy (ROC AUC 0.92); it becomes dry once one is")
                    .mutable_playing()
                    .build(),
                glib::ParamSpecString::builder("rain-detector")
                    .nick("Rain detector")
                    .blurb("Path of the rain detector (ONNX, card kind 'rain-detector'); empty uses the embedded one. A file that cannot be used stops the start with an error naming it; set while playing, it is loaded at once, or refused with a warning while the running one stays")
                    .mutable_playing()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("weather-source", WeatherSource::Detector)
                    .nick("Weather source")
                    .blurb("detector: the rain detector's score through the hysteresis decides the weather; application: the application does, with the set-weather action signal (e.g. from the car's wiper or rain sensor), and the detector still scores every scored frame into the meta")
                    .mutable_playing()
                    .build(),
                glib::ParamSpecDouble::builder("rain-threshold")
                    .nick("Rain threshold")
                    .blurb("A frame whose rain score is above this counts as rainy (0..1; default: the running rain detector's own threshold, from its card; 1 = always dry)")
                    .minimum(0.0)
                    .maximum(1.0)
                    .default_value(default_rain_threshold())
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder("rain-enter")
                    .nick("Frames to enter rain")
                    .blurb("The weather turns rain after this many consecutive scored frames above rain-threshold (at least 1)")
                    .minimum(1)
                    .default_value(weather::DEFAULT_RAIN_ENTER)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder("rain-leave")
                    .nick("Frames to leave rain")
                    .blurb("The weather turns dry after this many consecutive scored frames at or below rain-threshold (at least 1; larger than rain-enter: leaving rain late is the safe side)")
                    .minimum(1)
                    .default_value(weather::DEFAULT_RAIN_LEAVE)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder("score-interval")
                    .nick("Rain score interval")
                    .blurb("Compute the rain score on every n-th frame (at least 1); frames in between reuse the last score")
                    .minimum(1)
                    .default_value(weather::DEFAULT_SCORE_INTERVAL)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecString::builder("active-provider")
                    .nick("Active provider")
                    .blurb("The execution provider really running the model (empty until started)")
                    .read_only()
                    .build(),
                glib::ParamSpecBoolean::builder("gpu-frames")
                    .nick("Frames on the GPU")
                    .blurb("Whether each frame crosses to the GPU once and is converted there (a build with the cuda feature and a GPU provider active); false: converted on the CPU")
                    .read_only()
                    .build(),
                glib::ParamSpecUInt64::builder("frames-processed")
                    .nick("Frames processed")
                    .blurb("Frames that went through the network since start")
                    .read_only()
                    .build(),
                glib::ParamSpecUInt64::builder("frames-dropped")
                    .nick("Frames dropped")
                    .blurb("Late frames dropped (drop-policy=drop-late) since start")
                    .read_only()
                    .build(),
                glib::ParamSpecUInt64::builder("frames-passed")
                    .nick("Frames passed through")
                    .blurb("Late frames pushed unprocessed (drop-policy=pass-late) since start")
                    .read_only()
                    .build(),
                glib::ParamSpecUInt64::builder("frames-bypassed")
                    .nick("Frames bypassed")
                    .blurb("Dry frames passed through untouched without the network (bypass=dry) since start")
                    .read_only()
                    .build(),
                glib::ParamSpecString::builder("weather")
                    .nick("Weather")
                    .blurb("The weather mode after the hysteresis: rain or dry (tracked with either bypass setting; starts in rain, and restarts there with the first frame after a flush, caps change, new stream or discontinuity)")
                    .default_value(Some(weather::weather_name(weather::START_RAINING)))
                    .read_only()
                    .build(),
                glib::ParamSpecUInt64::builder("frames-late")
                    .nick("Late frames processed")
                    .blurb("Live frames older than max-lateness processed anyway (drop-policy=never) since start; when it grows, latency grows: consider drop-late")
                    .read_only()
                    .build(),
                glib::ParamSpecDouble::builder("inference-mean-ms")
                    .nick("Mean processing time (ms)")
                    .blurb("Mean time per processed frame (rain score, conversion and inference) since start")
                    .read_only()
                    .build(),
                glib::ParamSpecDouble::builder("inference-p99-ms")
                    .nick("p99 processing time (ms)")
                    .blurb("99th percentile of the last 1000 processing times")
                    .read_only()
                    .build(),
                glib::ParamSpecUInt64::builder("latency")
                    .nick("Reported latency (ns)")
                    .blurb("The processing delay this element adds to LATENCY queries")
                    .read_only()
                    .build(),
                glib::ParamSpecDouble::builder("last-rain-level")
                    .nick("Last rain level")
                    .blurb("The last rain score (0..1, from the input frame, in both modes), as the rain meta carries it")
                    .read_only()
                    .build(),
            ]);
            props
        });
        PROPERTIES.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        if SESSION_PROPERTIES.contains(&pspec.name()) {
            // While running, a new session opens beside the running one and swaps in at a frame
            // boundary (or is refused with a warning); the property reads back what runs.
            let (finished, warning) = {
                let mut s = lock(&self.settings);
                s.session.set(pspec.name(), value);
                match s.active.clone() {
                    None => (None, None),
                    Some(active) if active == s.session => {
                        self.cancel_reload();
                        (None, None)
                    }
                    Some(_) => self.request_reload(&mut s),
                }
            };
            if let Some(t) = finished {
                let _ = t.join();
            }
            if let Some(m) = warning {
                self.post(m);
            }
            return;
        }
        let mut s = lock(&self.settings);
        // GLib type-checks values against the param specs before they get here.
        match pspec.name() {
            "drop-policy" => s.drop_policy = value.get().unwrap_or_default(),
            "max-lateness" => s.max_lateness_ms = value.get().unwrap_or(DEFAULT_MAX_LATENESS_MS),
            "stats-interval" => {
                s.stats_interval_ms = value.get().unwrap_or(DEFAULT_STATS_INTERVAL_MS)
            }
            "rain-level" => s.rain_level = value.get().unwrap_or(true),
            "bypass" => s.bypass = value.get().unwrap_or_default(),
            "rain-threshold" => s.rain_threshold = value.get().ok(),
            "rain-detector" => {
                let path = value
                    .get::<Option<String>>()
                    .ok()
                    .flatten()
                    .filter(|p| !p.is_empty())
                    .map(std::path::PathBuf::from);
                s.rain_detector = path.clone();
                drop(s);
                if lock(&self.stats).running {
                    self.swap_detector(path);
                }
                return;
            }
            "weather-source" => s.weather_source = value.get().unwrap_or_default(),
            "rain-enter" => s.rain_enter = value.get().unwrap_or(weather::DEFAULT_RAIN_ENTER),
            "rain-leave" => s.rain_leave = value.get().unwrap_or(weather::DEFAULT_RAIN_LEAVE),
            "score-interval" => {
                s.score_interval = value.get().unwrap_or(weather::DEFAULT_SCORE_INTERVAL)
            }
            other => gst::warning!(CAT, imp = self, "unknown property {other}"),
        }
        if matches!(pspec.name(), "drop-policy" | "max-lateness") {
            // While running in a live pipeline these change what we add to the latency.
            drop(s);
            let (policy, max_lateness) = self.lateness_settings();
            // Not the state lock: it is held across inference, and this may run in a bus sync
            // handler inside the streaming thread.
            let changed = {
                let mut stats = lock(&self.stats);
                stats.running && stats.refresh_latency(policy, max_lateness)
            };
            if changed {
                self.announce_latency();
            }
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        let s = lock(&self.settings);
        // While running: what really runs, not a reload in flight or refused.
        if let Some(v) = s.active.as_ref().unwrap_or(&s.session).get(pspec.name()) {
            return v;
        }
        match pspec.name() {
            "drop-policy" => s.drop_policy.to_value(),
            "max-lateness" => s.max_lateness_ms.to_value(),
            "stats-interval" => s.stats_interval_ms.to_value(),
            "rain-level" => s.rain_level.to_value(),
            "bypass" => s.bypass.to_value(),
            "rain-threshold" => {
                let running = lock(&self.stats).detector_threshold;
                s.rain_threshold
                    .or(running)
                    .unwrap_or_else(default_rain_threshold)
                    .to_value()
            }
            "rain-detector" => s
                .rain_detector
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
                .to_value(),
            "weather-source" => s.weather_source.to_value(),
            "rain-enter" => s.rain_enter.to_value(),
            "rain-leave" => s.rain_leave.to_value(),
            "score-interval" => s.score_interval.to_value(),
            name => {
                drop(s);
                let st = lock(&self.stats);
                match name {
                    "active-provider" => st.active_provider.to_value(),
                    "gpu-frames" => st.gpu_frames.to_value(),
                    "frames-processed" => st.frames_processed.to_value(),
                    "frames-dropped" => st.frames_dropped.to_value(),
                    "frames-passed" => st.frames_passed.to_value(),
                    "frames-late" => st.frames_late.to_value(),
                    "frames-bypassed" => st.frames_bypassed.to_value(),
                    "weather" => weather::weather_name(st.weather.raining).to_value(),
                    "inference-mean-ms" => st.timings.mean_ms().to_value(),
                    "inference-p99-ms" => st.timings.p99_ms().to_value(),
                    "latency" => st.latency.nseconds().to_value(),
                    "last-rain-level" => st.last_rain_level.to_value(),
                    _ => pspec.default_value().clone(),
                }
            }
        }
    }
}

impl GstObjectImpl for Derain {}

impl ElementImpl for Derain {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static META: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "Rain removal",
                "Filter/Effect/Video",
                "Removes rain streaks and veil from video frames with an ONNX generator",
                "derain developers",
            )
        });
        Some(&*META)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            let caps = gst_video::VideoCapsBuilder::new()
                .format_list(FORMATS)
                .build();
            [gst::PadDirection::Src, gst::PadDirection::Sink]
                .into_iter()
                .filter_map(|dir| {
                    let name = if dir == gst::PadDirection::Src {
                        "src"
                    } else {
                        "sink"
                    };
                    gst::PadTemplate::new(name, dir, gst::PadPresence::Always, &caps).ok()
                })
                .collect()
        });
        TEMPLATES.as_ref()
    }
}

impl BaseTransformImpl for Derain {
    const MODE: gst_base::subclass::BaseTransformMode =
        gst_base::subclass::BaseTransformMode::NeverInPlace;
    const PASSTHROUGH_ON_SAME_CAPS: bool = false;
    const TRANSFORM_IP_ON_PASSTHROUGH: bool = false;

    fn start(&self) -> Result<(), gst::ErrorMessage> {
        let settings = lock(&self.settings).clone();
        if settings.max_lateness_ms == 0 {
            return Err(gst::error_msg!(
                gst::ResourceError::Settings,
                ["max-lateness=0 would treat every frame as late: use at least 1 ms"]
            ));
        }
        let opened = open(&settings.session, None, || ()).map_err(|e| e.error_msg())?;
        gst::info!(CAT, imp = self, "{}", opened.why);
        if opened.model.has_card() {
            gst::debug!(
                CAT,
                imp = self,
                "model card: {}",
                opened.model.card().to_json()
            );
        }
        let Opened {
            settings: loaded,
            model,
            derainer,
            ..
        } = opened;
        let gpu_frames = derainer.frame_path();
        if gpu_frames {
            gst::info!(
                CAT,
                imp = self,
                "frames cross to the GPU once and are converted there"
            );
        }
        let detector = self.open_detector(&settings)?;
        {
            let mut stats = lock(&self.stats);
            // Weather the application set before the start still applies.
            let app_weather = std::mem::take(&mut stats.app_weather);
            *stats = Stats::default();
            stats.app_weather = app_weather;
            stats.detector_threshold = Some(detector.threshold());
            stats.running = true;
            stats.active_provider = derainer.network().provider().to_string();
            stats.gpu_frames = gpu_frames;
        }
        *lock(&self.state) = Some(State {
            model,
            derainer,
            info: None,
            live: None,
            detector,
        });
        // From here on a session setting starts a reload; one set while this one opened does
        // now (the property never names a model that does not run).
        let (finished, warning) = {
            let mut s = lock(&self.settings);
            s.active = Some(loaded.clone());
            lock(&self.reloads).running = true;
            if s.session != loaded {
                self.request_reload(&mut s)
            } else {
                (None, None)
            }
        };
        if let Some(t) = finished {
            let _ = t.join();
        }
        if let Some(m) = warning {
            self.post(m);
        }
        Ok(())
    }

    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        self.stop_reloads();
        // Dropping the state closes the ONNX Runtime session.
        *lock(&self.state) = None;
        lock(&self.settings).active = None;
        lock(&self.stats).running = false;
        Ok(())
    }

    fn query(&self, direction: gst::PadDirection, query: &mut gst::QueryRef) -> bool {
        if direction == gst::PadDirection::Src
            && let gst::QueryViewMut::Latency(q) = query.view_mut()
        {
            let Some(sinkpad) = self.obj().static_pad("sink") else {
                return false;
            };
            let mut upstream = gst::query::Latency::new();
            if !sinkpad.peer_query(&mut upstream) {
                return false;
            }
            let (live, min, max) = upstream.result();
            let (policy, max_lateness) = self.lateness_settings();
            let ours = {
                let mut stats = lock(&self.stats);
                stats.live = live;
                stats.refresh_latency(policy, max_lateness);
                stats.latency
            };
            gst::debug!(
                CAT,
                imp = self,
                "adding our latency {ours} to upstream {min} (live: {live})"
            );
            q.set(live, min + ours, max.map(|m| m + ours));
            return true;
        }
        BaseTransformImplExt::parent_query(self, direction, query)
    }

    fn transform(
        &self,
        inbuf: &gst::Buffer,
        outbuf: &mut gst::BufferRef,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        let (policy, max_lateness, want_level, interval) = {
            let s = lock(&self.settings);
            (
                s.drop_policy,
                gst::ClockTime::from_mseconds(s.max_lateness_ms.max(1).into()),
                s.rain_level,
                s.stats_interval_ms,
            )
        };
        let mut state_guard = lock(&self.state);
        let state = state_guard.as_mut().ok_or(gst::FlowError::NotNegotiated)?;
        lock(&self.stats).frames_in += 1;

        let live = match state.live {
            Some(live) => live,
            None => {
                let live = self.upstream_is_live();
                state.live = Some(live);
                lock(&self.stats).live = live;
                live
            }
        };
        let age = if live {
            self.input_age(inbuf.as_ref())
        } else {
            None
        };
        if let Some(age) = age.filter(|a| *a > max_lateness) {
            match policy {
                DropPolicy::DropLate => {
                    lock(&self.stats).frames_dropped += 1;
                    gst::debug!(
                        CAT,
                        imp = self,
                        "dropping frame {} ({age} late)",
                        inbuf.pts().display()
                    );
                    return Ok(gst_base::BASE_TRANSFORM_FLOW_DROPPED);
                }
                DropPolicy::PassLate => {
                    let score = {
                        let mut stats = lock(&self.stats);
                        stats.frames_passed += 1;
                        stats.last_rain_level
                    };
                    copy_frame(state, inbuf, outbuf)?;
                    if want_level {
                        attach_score(outbuf, score);
                    }
                    return Ok(gst::FlowSuccess::Ok);
                }
                DropPolicy::Never => self.note_late_frame(age, max_lateness),
            }
        }

        let started = Instant::now();
        self.process(state, inbuf, outbuf)?;
        let mut elapsed = started.elapsed();
        drop(state_guard);

        let mut stats = lock(&self.stats);
        // The frame's rain score is part of what a raining frame costs.
        elapsed += std::mem::take(&mut stats.score_time);
        if want_level {
            // The score `generate_output` computed for this frame before handing it here.
            attach_score(outbuf, stats.last_rain_level);
        }
        stats.frames_processed += 1;
        // Only frames that went through the network are timed: bypassed frames leave the
        // processing delay, and so the LATENCY answer, at what a frame costs while it rains.
        stats.timings.record(elapsed.as_secs_f64());
        let p99 = Duration::from_secs_f64(stats.timings.p99_ms() / 1e3);
        let samples = stats.timings.window_len();
        let moved = stats.estimate.observe(p99, samples, Instant::now())
            && stats.refresh_latency(policy, max_lateness);
        let message = self.stats_message_due(&mut stats, interval);
        drop(stats);
        if let Some(message) = message {
            // Fails only without a bus (element outside a pipeline): nobody to tell.
            let _ = self.obj().post_message(message);
        }
        if moved {
            self.announce_latency();
        }
        Ok(gst::FlowSuccess::Ok)
    }

    fn generate_output(&self) -> Result<GenerateOutputSuccess, gst::FlowError> {
        // The default path (prepare an output buffer, then `transform`) for raining frames; a
        // dry frame with bypass=dry leaves as the input buffer itself: bit-exact, zero-copy, and
        // the network not run.
        let Some(inbuf) = self.queued_buffer() else {
            // The base class asks again after pushing each frame out: the frame is through,
            // and a loader may run its warm-up frame now.
            self.boundaries.pass();
            return self.parent_generate_output();
        };
        // A reloaded session swaps in here, between two frames, just before the frame it is the
        // first to see (not in the base class's call after a frame, when none is queued: the
        // property and the swap message would then name a model no frame out has come from
        // yet). The old session closes on a thread of its own.
        if let Some(retired) = self.swap_if_ready() {
            self.retire(retired);
        }
        let verdict = self.weigh(inbuf.as_ref())?;
        drop(inbuf);
        if let Some(message) = verdict.message {
            self.post(message);
        }
        if !verdict.bypass {
            return self.parent_generate_output();
        }
        let Some(mut buf) = self.take_queued_buffer() else {
            return Ok(GenerateOutputSuccess::NoOutput);
        };
        let (want_level, interval) = {
            let s = lock(&self.settings);
            (s.rain_level, s.stats_interval_ms)
        };
        if want_level {
            // Writable without a copy unless upstream still holds the buffer; then only the
            // buffer is copied, its memory is shared, the pixels untouched.
            attach_score(buf.make_mut(), verdict.score);
        }
        let mut stats = lock(&self.stats);
        stats.frames_in += 1;
        stats.frames_bypassed += 1;
        let message = self.stats_message_due(&mut stats, interval);
        drop(stats);
        if let Some(message) = message {
            self.post(message);
        }
        Ok(GenerateOutputSuccess::Buffer(buf))
    }

    fn transform_meta<'a>(
        &self,
        _outbuf: &mut gst::BufferRef,
        _meta: gst::MetaRef<'a, gst::Meta>,
        _inbuf: &'a gst::BufferRef,
    ) -> bool {
        // Same size, same format, same timing out as in: every meta stays valid (regions of
        // interest included), so all are kept.
        true
    }

    fn sink_event(&self, event: gst::Event) -> bool {
        match event.view() {
            gst::EventView::StreamStart(_) => {
                if let Some(state) = lock(&self.state).as_mut() {
                    state.live = None;
                }
                lock(&self.stats).reset_pending = true;
            }
            gst::EventView::FlushStop(_) => lock(&self.stats).reset_pending = true,
            _ => {}
        }
        self.parent_sink_event(event)
    }
}

/// Attaches the rain score as the `GstDerainRainMeta`'s `rain-level`.
fn attach_score(buf: &mut gst::BufferRef, score: f64) {
    if let Ok(mut meta) = gst::meta::CustomMeta::add(buf, RAIN_META_NAME) {
        meta.mut_structure().set("rain-level", score);
    }
}

fn copy_frame(
    state: &State,
    inbuf: &gst::Buffer,
    outbuf: &mut gst::BufferRef,
) -> Result<(), gst::FlowError> {
    let info = state.info.as_ref().ok_or(gst::FlowError::NotNegotiated)?;
    let inframe = gst_video::VideoFrameRef::from_buffer_ref_readable(inbuf.as_ref(), info)
        .map_err(|_| gst::FlowError::Error)?;
    let mut outframe = gst_video::VideoFrameRef::from_buffer_ref_writable(outbuf, info)
        .map_err(|_| gst::FlowError::Error)?;
    inframe
        .copy(&mut outframe)
        .map_err(|_| gst::FlowError::Error)
}

impl VideoFilterImpl for Derain {
    fn set_info(
        &self,
        incaps: &gst::Caps,
        in_info: &gst_video::VideoInfo,
        _outcaps: &gst::Caps,
        _out_info: &gst_video::VideoInfo,
    ) -> Result<(), gst::LoggableError> {
        let Some(format) = pixel_format(in_info.format()) else {
            return Err(gst::loggable_error!(
                CAT,
                "unsupported format in caps {}",
                incaps
            ));
        };
        let (width, height) = (in_info.width() as usize, in_info.height() as usize);
        let mut guard = lock(&self.state);
        let state = guard
            .as_mut()
            .ok_or_else(|| gst::loggable_error!(CAT, "caps set before start"))?;
        if let Err(why) = state.model.check_frame_size(width, height) {
            gst::element_imp_error!(self, gst::StreamError::Format, ["{}", why]);
            return Err(gst::loggable_error!(CAT, "{}", why));
        }
        let layout =
            FrameLayout::packed(format, width, height).with_colorimetry(colorimetry(in_info));
        let resized = match state.derainer.configure(layout) {
            Ok(resized) => resized,
            Err(DerainError::TooLarge { .. }) => {
                gst::element_imp_error!(
                    self,
                    gst::StreamError::Format,
                    [
                        "{width}x{height} frames are larger than this element takes (at most {} megapixels, e.g. 8192x8192)",
                        MAX_PIXELS / 1_000_000
                    ]
                );
                return Err(gst::loggable_error!(
                    CAT,
                    "frame size {width}x{height} too large"
                ));
            }
            Err(e @ DerainError::OutOfMemory { .. }) => {
                gst::element_imp_error!(self, gst::ResourceError::NoSpaceLeft, ["{}", e]);
                return Err(gst::loggable_error!(
                    CAT,
                    "out of memory for {width}x{height}"
                ));
            }
            Err(e) => {
                gst::element_imp_error!(self, gst::StreamError::Format, ["{}", e]);
                return Err(gst::loggable_error!(CAT, "{}", e));
            }
        };
        let padded = state.derainer.padded();
        state.info = Some(in_info.clone());
        // New caps: the weather hysteresis starts over with the next frame.
        lock(&self.stats).reset_pending = true;
        // A reload from now on must take this size, and so must one asked for at the old size
        // that the loader has not taken yet.
        {
            let mut r = lock(&self.reloads);
            r.frame = Some((width, height));
            if let Some(q) = r.request.as_mut() {
                q.frame = Some((width, height));
            }
        }
        gst::info!(
            CAT,
            imp = self,
            "configured {width}x{height} {:?} (network input {}x{})",
            format,
            padded.1,
            padded.0
        );
        if resized {
            // Warm up at the new size: the first run is slow (allocations, kernel choice), and
            // the measured time gives an honest latency before the first real frame.
            let elapsed = match state.derainer.warm_up() {
                Ok(elapsed) => elapsed,
                Err(e) => {
                    gst::element_imp_error!(
                        self,
                        gst::StreamError::Format,
                        ["model cannot take {width}x{height} frames: {e}"]
                    );
                    return Err(gst::loggable_error!(
                        CAT,
                        "model rejected {width}x{height}: {e}"
                    ));
                }
            };
            drop(guard);
            let (policy, max_lateness) = self.lateness_settings();
            let mut stats = lock(&self.stats);
            // Timings at the old size say nothing about this one.
            stats.timings.clear_window();
            let moved = stats.estimate.warm_up(elapsed, Instant::now())
                && stats.refresh_latency(policy, max_lateness);
            drop(stats);
            if moved {
                self.announce_latency();
            }
        }
        Ok(())
    }
}
