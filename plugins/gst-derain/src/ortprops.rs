//! The ONNX Runtime settings `derain` and `yolodetect` share, defined once: the properties (names,
//! defaults, nicks, blurbs), their validation, the session options they open a session with, how
//! a failed open reaches the bus, and the read-only provider and timing statistics. A new provider
//! option added here lands in both elements at once.

use std::collections::VecDeque;
use std::path::PathBuf;

use gst::glib;
use gst::prelude::GstParamSpecBuilderExt;
use gst::prelude::*;

use derain_core::runtime::{RuntimeError, SessionOptions};

/// `threads` above this is refused: no machine has that many cores, so it is a typo.
pub const MAX_THREADS: u32 = 1024;
/// The largest CUDA device index taken.
pub const MAX_DEVICE_ID: i32 = 63;
/// Run times kept for the p99 statistic.
pub const TIMING_WINDOW: usize = 1000;

/// The session properties, in the order they are declared.
pub const SESSION_PROPERTIES: [&str; 8] = [
    "model",
    "provider",
    "device-id",
    "threads",
    "spin-wait",
    "trt-cache-dir",
    "trt-fp16",
    "ort-library",
];

/// Which execution provider runs the network (the `provider` property).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstDerainProvider")]
pub enum Provider {
    #[default]
    #[enum_value(
        name = "TensorRT, then CUDA, then the CPU: the first that loads",
        nick = "auto"
    )]
    Auto = 0,
    #[enum_value(name = "CPU", nick = "cpu")]
    Cpu = 1,
    #[enum_value(name = "CUDA (error if it cannot load)", nick = "cuda")]
    Cuda = 2,
    #[enum_value(name = "TensorRT (error if it cannot load)", nick = "tensorrt")]
    TensorRt = 3,
}

impl From<Provider> for derain_core::runtime::Provider {
    fn from(p: Provider) -> Self {
        match p {
            Provider::Auto => Self::Auto,
            Provider::Cpu => Self::Cpu,
            Provider::Cuda => Self::Cuda,
            Provider::TensorRt => Self::TensorRt,
        }
    }
}

/// How an element words the properties that name what it runs.
pub struct Wording {
    /// The `model` property's nick and blurb.
    pub model_nick: &'static str,
    pub model_blurb: &'static str,
    /// What runs, in blurbs: "model", "detector".
    pub network: &'static str,
    /// The `inference-mean-ms` nick and what one timed run covers.
    pub mean_nick: &'static str,
    pub timed: &'static str,
}

/// When the session properties may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mutable {
    /// In NULL and READY; used at the next start.
    Ready,
    /// At any time; while running, the element opens the new session beside the old one.
    Playing,
}

/// The session settings as the user set them. `Default` gives the documented defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct OrtSettings {
    pub model: String,
    pub provider: Provider,
    pub device_id: i32,
    pub threads: u32,
    pub spin_wait: bool,
    pub trt_cache_dir: String,
    pub trt_fp16: bool,
    pub ort_library: String,
}

impl Default for OrtSettings {
    fn default() -> Self {
        Self {
            model: String::new(),
            provider: Provider::Auto,
            device_id: 0,
            threads: 0,
            spin_wait: false,
            trt_cache_dir: String::new(),
            trt_fp16: false,
            ort_library: String::new(),
        }
    }
}

fn string(value: &glib::Value) -> String {
    value
        .get::<Option<String>>()
        .ok()
        .flatten()
        .unwrap_or_default()
}

fn optional_path(s: &str) -> Option<PathBuf> {
    (!s.is_empty()).then(|| PathBuf::from(s))
}

impl OrtSettings {
    /// The session properties' specs, worded for the element.
    pub fn properties(w: &Wording, mutable: Mutable) -> Vec<glib::ParamSpec> {
        let when = match mutable {
            Mutable::Ready => "",
            Mutable::Playing => {
                "; may change while playing: the new session opens beside the old one, which runs until it is ready"
            }
        };
        let gpu_fails = match mutable {
            Mutable::Ready => "fail at start-up",
            Mutable::Playing => "fail at start-up (while playing: the old session keeps running)",
        };
        fn ready<'a, B: GstParamSpecBuilderExt<'a>>(b: B, m: Mutable) -> B {
            match m {
                Mutable::Ready => b.mutable_ready(),
                Mutable::Playing => b.mutable_playing(),
            }
        }
        // GLib copies nicks and blurbs.
        let model_blurb = format!("{}{when}", w.model_blurb);
        let provider_blurb = format!(
            "auto tries TensorRT, CUDA, then the CPU; cuda or tensorrt {gpu_fails} if they cannot load"
        );
        vec![
            ready(
                glib::ParamSpecString::builder("model")
                    .nick(w.model_nick)
                    .blurb(&model_blurb),
                mutable,
            )
            .build(),
            ready(
                glib::ParamSpecEnum::builder_with_default("provider", Provider::Auto)
                    .nick("Execution provider")
                    .blurb(&provider_blurb),
                mutable,
            )
            .build(),
            ready(
                glib::ParamSpecInt::builder("device-id")
                    .nick("GPU device")
                    .blurb("CUDA device index for the cuda and tensorrt providers (0 to 63)")
                    .default_value(0),
                mutable,
            )
            .build(),
            ready(
                glib::ParamSpecUInt::builder("threads")
                    .nick("CPU threads")
                    .blurb("Intra-op threads on the CPU provider, 0 = one per core (at most 1024)")
                    .default_value(0),
                mutable,
            )
            .build(),
            ready(
                glib::ParamSpecBoolean::builder("spin-wait")
                    .nick("Spin-wait")
                    .blurb("Let the CPU worker threads spin between frames (ONNX Runtime's default): slightly less latency per frame, for cores kept busy while idle, which a detector or a reload then cannot use")
                    .default_value(false),
                mutable,
            )
            .build(),
            ready(
                glib::ParamSpecString::builder("trt-cache-dir")
                    .nick("TensorRT engine cache")
                    .blurb("Directory for built TensorRT engines, reused across starts; empty = $XDG_CACHE_HOME/derain/tensorrt"),
                mutable,
            )
            .build(),
            ready(
                glib::ParamSpecBoolean::builder("trt-fp16")
                    .nick("TensorRT FP16")
                    .blurb("Build FP16 TensorRT engines (faster, tiny loss of precision)")
                    .default_value(false),
                mutable,
            )
            .build(),
            ready(
                glib::ParamSpecString::builder("ort-library")
                    .nick("ONNX Runtime library")
                    .blurb("Path of libonnxruntime.so; empty searches $DERAIN_ORT_LIBRARY, $ORT_DYLIB_PATH, the set-up's and the installed copy. Loaded once per process"),
                mutable,
            )
            .build(),
        ]
    }

    /// The read-only statistics of the running session: `active-provider`, `inference-mean-ms`
    /// and `inference-p99-ms` (see [`Timings`]).
    pub fn status_properties(w: &Wording) -> Vec<glib::ParamSpec> {
        let provider = format!(
            "The execution provider really running the {} (empty until started)",
            w.network
        );
        let mean = format!("Mean time per {}, since start", w.timed);
        let p99 = format!(
            "99th percentile of the last {TIMING_WINDOW} times per {}",
            w.timed
        );
        vec![
            glib::ParamSpecString::builder("active-provider")
                .nick("Active provider")
                .blurb(&provider)
                .read_only()
                .build(),
            glib::ParamSpecDouble::builder("inference-mean-ms")
                .nick(w.mean_nick)
                .blurb(&mean)
                .read_only()
                .build(),
            glib::ParamSpecDouble::builder("inference-p99-ms")
                .nick("p99 processing time (ms)")
                .blurb(&p99)
                .read_only()
                .build(),
        ]
    }

    /// Sets session property `name`; false when `name` is not one (GLib has type-checked `value`).
    pub fn set(&mut self, name: &str, value: &glib::Value) -> bool {
        match name {
            "model" => self.model = string(value),
            "provider" => self.provider = value.get().unwrap_or_default(),
            "device-id" => self.device_id = value.get().unwrap_or_default(),
            "threads" => self.threads = value.get().unwrap_or_default(),
            "spin-wait" => self.spin_wait = value.get().unwrap_or_default(),
            "trt-cache-dir" => self.trt_cache_dir = string(value),
            "trt-fp16" => self.trt_fp16 = value.get().unwrap_or_default(),
            "ort-library" => self.ort_library = string(value),
            _ => return false,
        }
        true
    }

    /// Session property `name`, if it is one.
    pub fn get(&self, name: &str) -> Option<glib::Value> {
        Some(match name {
            "model" => self.model.to_value(),
            "provider" => self.provider.to_value(),
            "device-id" => self.device_id.to_value(),
            "threads" => self.threads.to_value(),
            "spin-wait" => self.spin_wait.to_value(),
            "trt-cache-dir" => self.trt_cache_dir.to_value(),
            "trt-fp16" => self.trt_fp16.to_value(),
            "ort-library" => self.ort_library.to_value(),
            _ => return None,
        })
    }

    /// The ONNX Runtime library set (`None`: search).
    pub fn ort_library_path(&self) -> Option<PathBuf> {
        optional_path(&self.ort_library)
    }

    /// The options a session opens with, once the values are checked.
    pub fn session_options(&self) -> Result<SessionOptions, OpenError> {
        if self.threads > MAX_THREADS {
            return Err(OpenError::settings(format!(
                "threads={} is out of range: use 0 (one per core) to {MAX_THREADS}",
                self.threads
            )));
        }
        if !(0..=MAX_DEVICE_ID).contains(&self.device_id) {
            return Err(OpenError::settings(format!(
                "device-id={} is out of range: use 0 to {MAX_DEVICE_ID}",
                self.device_id
            )));
        }
        Ok(SessionOptions {
            provider: self.provider.into(),
            device_id: self.device_id,
            threads: self.threads as usize,
            trt_cache_dir: optional_path(&self.trt_cache_dir),
            trt_fp16: self.trt_fp16,
            ort_library: optional_path(&self.ort_library),
            spin: self.spin_wait,
        })
    }
}

/// What opening a session failed on; decides the error's domain on the bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// A setting out of range, or none where one is needed.
    Settings,
    /// The model file cannot be read.
    Missing,
    /// The file is not a model, or not one this element takes.
    Contract,
    /// ONNX Runtime itself cannot be loaded.
    Library,
    /// ONNX Runtime refused the model or the provider.
    Session,
}

/// Why a session could not be opened: an error at start, a warning on a refused reload.
#[derive(Debug, Clone)]
pub struct OpenError {
    pub failure: Failure,
    pub reason: String,
}

impl OpenError {
    pub fn new(failure: Failure, reason: impl Into<String>) -> Self {
        Self {
            failure,
            reason: reason.into(),
        }
    }

    pub fn settings(reason: impl Into<String>) -> Self {
        Self::new(Failure::Settings, reason)
    }

    /// A runtime error's failure: the library, or the session.
    pub fn runtime(e: &RuntimeError) -> Self {
        let failure = match e {
            RuntimeError::LibraryNotFound { .. } => Failure::Library,
            _ => Failure::Session,
        };
        Self::new(failure, e.to_string())
    }

    /// The error message for the bus (start-up fails with it).
    pub fn error_msg(&self) -> gst::ErrorMessage {
        let r = &self.reason;
        match self.failure {
            Failure::Settings => gst::error_msg!(gst::ResourceError::Settings, ["{}", r]),
            Failure::Missing => gst::error_msg!(gst::ResourceError::NotFound, ["{}", r]),
            Failure::Contract => gst::error_msg!(gst::ResourceError::OpenRead, ["{}", r]),
            Failure::Library => gst::error_msg!(gst::LibraryError::Init, ["{}", r]),
            Failure::Session => gst::error_msg!(gst::LibraryError::Settings, ["{}", r]),
        }
    }

    /// The same as a warning message from `src`, its text `text` (the reason with context).
    pub fn warning(&self, src: &gst::Element, text: &str) -> gst::Message {
        let b = match self.failure {
            Failure::Settings => gst::message::Warning::builder(gst::ResourceError::Settings, text),
            Failure::Missing => gst::message::Warning::builder(gst::ResourceError::NotFound, text),
            Failure::Contract => gst::message::Warning::builder(gst::ResourceError::OpenRead, text),
            Failure::Library => gst::message::Warning::builder(gst::LibraryError::Init, text),
            Failure::Session => gst::message::Warning::builder(gst::LibraryError::Settings, text),
        };
        b.src(src).build()
    }
}

/// Seconds per run: the mean since start, and the p99 of the last [`TIMING_WINDOW`].
#[derive(Debug, Default, Clone)]
pub struct Timings {
    window: VecDeque<f64>,
    sum: f64,
    count: u64,
}

impl Timings {
    pub fn record(&mut self, seconds: f64) {
        if self.window.len() == TIMING_WINDOW {
            self.window.pop_front();
        }
        self.window.push_back(seconds);
        self.sum += seconds;
        self.count += 1;
    }

    pub fn mean_ms(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum / self.count as f64 * 1e3
        }
    }

    pub fn p99_ms(&self) -> f64 {
        if self.window.is_empty() {
            return 0.0;
        }
        // Called per frame: a linear-time selection, not a full sort.
        let mut v: Vec<f64> = self.window.iter().copied().collect();
        let idx = ((v.len() as f64 * 0.99).ceil() as usize).clamp(1, v.len()) - 1;
        let (_, p99, _) = v.select_nth_unstable_by(idx, f64::total_cmp);
        *p99 * 1e3
    }

    /// Runs in the p99 window.
    pub fn window_len(&self) -> usize {
        self.window.len()
    }

    /// Forgets the window (the runs described another frame size or another model); the mean
    /// since start stays.
    pub fn clear_window(&mut self) {
        self.window.clear();
    }

    /// Answers one of the timing properties.
    pub fn get(&self, name: &str) -> Option<glib::Value> {
        match name {
            "inference-mean-ms" => Some(self.mean_ms().to_value()),
            "inference-p99-ms" => Some(self.p99_ms().to_value()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_session_property_is_declared_set_and_read() {
        gst::init().expect("GStreamer initialises");
        let w = Wording {
            model_nick: "Model",
            model_blurb: "Path",
            network: "model",
            mean_nick: "Mean",
            timed: "frame",
        };
        let specs = OrtSettings::properties(&w, Mutable::Playing);
        let names: Vec<&str> = specs.iter().map(|p| p.name()).collect();
        assert_eq!(names, SESSION_PROPERTIES);
        let mut s = OrtSettings::default();
        for spec in &specs {
            let v = s.get(spec.name()).expect("readable");
            assert_eq!(v.type_(), spec.value_type(), "{}", spec.name());
            // Strings default to NULL in GLib and read back as "" (unset) here.
            if v.type_() != String::static_type() {
                assert_eq!(
                    spec.default_value().serialize().ok(),
                    v.serialize().ok(),
                    "{}: the default is the documented one",
                    spec.name()
                );
            }
            assert!(s.set(spec.name(), &v), "{}", spec.name());
            assert!(spec.flags().contains(gst::PARAM_FLAG_MUTABLE_PLAYING));
        }
        assert!(!s.set("drop-policy", &1u32.to_value()));
        // Spinning is off unless asked for, and reaches the session's options either way.
        assert!(!s.session_options().expect("defaults are valid").spin);
        assert!(s.set("spin-wait", &true.to_value()));
        assert!(s.session_options().expect("valid").spin);
        assert!(s.set("threads", &2000u32.to_value()));
        let e = s.session_options().expect_err("out of range");
        assert!(e.reason.contains("threads=2000"), "{}", e.reason);
        assert_eq!(e.failure, Failure::Settings);
    }

    #[test]
    fn p99_is_of_the_window() {
        let mut t = Timings::default();
        for i in 1..=100 {
            t.record(f64::from(i) / 1e3);
        }
        assert!((t.mean_ms() - 50.5).abs() < 1e-9);
        assert!((t.p99_ms() - 99.0).abs() < 1e-9);
        t.clear_window();
        assert_eq!(t.p99_ms(), 0.0);
        assert!((t.mean_ms() - 50.5).abs() < 1e-9);
    }
}
