//! Running a generator through ONNX Runtime: finding the ONNX Runtime library, choosing the
//! execution provider, and one inference call on a padded NCHW tensor.
//!
//! ONNX Runtime is loaded at run time (`ort`'s `load-dynamic`), so the same binary runs on a CPU
//! machine with the plain `onnxruntime` library and on a GPU host with `onnxruntime-gpu`.

use std::fmt;
use std::mem::ManuallyDrop;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use ort::environment::Environment;
use ort::ep::{self, ExecutionProvider};
use ort::session::Session;
use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};
use ort::value::TensorRef;

use crate::card::{INPUT_NAME, OUTPUT_NAME};
use crate::engine_cache::{self, EngineWatch};
use crate::model::Model;

/// Environment variable naming the ONNX Runtime shared library (checked before `ORT_DYLIB_PATH`).
pub const ORT_LIBRARY_ENV: &str = "DERAIN_ORT_LIBRARY";

/// Which execution provider runs the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Provider {
    /// TensorRT, then CUDA, then the CPU: the first that loads.
    #[default]
    Auto,
    Cpu,
    Cuda,
    TensorRt,
}

impl Provider {
    pub const ALL: [Provider; 4] = [
        Provider::Auto,
        Provider::Cpu,
        Provider::Cuda,
        Provider::TensorRt,
    ];

    /// The lower-case name used in properties and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Auto => "auto",
            Provider::Cpu => "cpu",
            Provider::Cuda => "cuda",
            Provider::TensorRt => "tensorrt",
        }
    }

    pub fn is_gpu(self) -> bool {
        matches!(self, Provider::Cuda | Provider::TensorRt)
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Provider {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Provider::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("unknown provider '{s}': expected auto, cpu, cuda or tensorrt"))
    }
}

/// How to build an inference session.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionOptions {
    pub provider: Provider,
    /// CUDA device for the GPU providers.
    pub device_id: i32,
    /// Intra-op threads on the CPU; 0 lets ONNX Runtime choose (one per core).
    pub threads: usize,
    /// Where TensorRT keeps built engines; `None` uses [`default_trt_cache_dir`].
    pub trt_cache_dir: Option<PathBuf>,
    /// Build FP16 TensorRT engines.
    pub trt_fp16: bool,
    /// The ONNX Runtime library to load; `None` searches (see [`init_ort`]).
    pub ort_library: Option<PathBuf>,
    /// Let the intra-op worker threads spin-wait for work between runs (ONNX Runtime's own
    /// default, `true`): a little less latency per run, for cores kept busy while idle, which
    /// another session in the process (a detector, a model being reloaded) then cannot use.
    pub spin: bool,
}

impl Default for SessionOptions {
    fn default() -> Self {
        Self {
            provider: Provider::Auto,
            device_id: 0,
            threads: 0,
            trt_cache_dir: None,
            trt_fp16: false,
            ort_library: None,
            spin: true,
        }
    }
}

/// What went wrong while setting up or running inference.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(
        "ONNX Runtime library not found or not loadable; tried: {tried}. Run `make setup`, or \
         point {ORT_LIBRARY_ENV} (or the `ort-library` setting) at libonnxruntime.so"
    )]
    LibraryNotFound { tried: String },
    /// `reason` names what is missing (driver, GPU, library, provider) and what to do.
    #[error("the {provider} provider is not available: {reason}")]
    ProviderUnavailable { provider: Provider, reason: String },
    #[error("ONNX Runtime could not load model '{origin}' with the {provider} provider: {reason}")]
    Session {
        origin: String,
        provider: Provider,
        reason: String,
    },
    #[error("inference failed on model '{origin}': {reason}")]
    Run { origin: String, reason: String },
}

/// The ONNX Runtime library this process loaded and its environment (ONNX Runtime can be loaded,
/// and its environment built, once per process; the environment lives as long as the process).
static LOADED: Mutex<Option<(PathBuf, Environment)>> = Mutex::new(None);

/// The library the set-up script prepared when this crate was built (absolute path), if any.
fn build_time_library() -> Option<PathBuf> {
    option_env!("ORT_DYLIB_PATH").map(PathBuf::from)
}

/// Where `make install` puts the ONNX Runtime library.
pub fn installed_library() -> Option<PathBuf> {
    let data = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))?;
    Some(data.join("derain/lib/libonnxruntime.so"))
}

/// The places searched for ONNX Runtime, in order: the explicit path, `DERAIN_ORT_LIBRARY`,
/// `ORT_DYLIB_PATH`, the library the set-up prepared at build time, the installed copy, and the
/// system's library search path.
pub fn library_candidates(explicit: Option<&Path>) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(p) = explicit {
        out.push(p.to_path_buf());
        // An explicit choice is not second-guessed by the search below.
        return out;
    }
    for var in [ORT_LIBRARY_ENV, "ORT_DYLIB_PATH"] {
        if let Some(v) = std::env::var_os(var).filter(|v| !v.is_empty()) {
            out.push(PathBuf::from(v));
        }
    }
    out.extend(build_time_library());
    out.extend(installed_library());
    out.push(PathBuf::from("libonnxruntime.so"));
    out.dedup();
    out
}

/// Loads ONNX Runtime once for the process and returns the library's path. Later calls return the
/// library already loaded (with a warning when they asked for a different one).
pub fn init_ort(explicit: Option<&Path>) -> Result<PathBuf, RuntimeError> {
    environment(explicit).map(|(path, _)| path)
}

/// The loaded library and the process's one ONNX Runtime environment (for code that builds its
/// own sessions, such as the tests of the ONNX graph writer).
pub fn environment(explicit: Option<&Path>) -> Result<(PathBuf, Environment), RuntimeError> {
    let mut loaded = LOADED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((path, env)) = loaded.as_ref() {
        if let Some(want) = explicit
            && want != path
        {
            log::warn!(
                "ONNX Runtime is already loaded from {} in this process; ignoring {}",
                path.display(),
                want.display()
            );
        }
        return Ok((path.clone(), env.clone()));
    }
    let mut tried = Vec::new();
    for candidate in library_candidates(explicit) {
        // A bare file name is left to the dynamic loader's search path; a path must exist.
        if candidate.components().count() > 1 && !candidate.exists() {
            tried.push(format!("{} (no such file)", candidate.display()));
            continue;
        }
        // Through any symlink to the real file: the GPU build loads its provider libraries
        // (libonnxruntime_providers_*.so) from the directory of the path it was opened by.
        let real = if candidate.components().count() > 1 {
            std::fs::canonicalize(&candidate).unwrap_or_else(|_| candidate.clone())
        } else {
            candidate.clone()
        };
        let built = ort::init_from(&real)
            .map_err(|e| e.to_string())
            .and_then(|b| b.with_name("derain").build().map_err(|e| e.to_string()));
        match built {
            Ok(env) => {
                log::info!("loaded ONNX Runtime from {}", candidate.display());
                *loaded = Some((candidate.clone(), env.clone()));
                return Ok((candidate, env));
            }
            Err(e) => tried.push(format!("{} ({e})", candidate.display())),
        }
    }
    Err(RuntimeError::LibraryNotFound {
        tried: tried.join("; "),
    })
}

/// The default TensorRT engine cache: `$XDG_CACHE_HOME/derain/tensorrt` (or `~/.cache/...`).
pub fn default_trt_cache_dir() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
        .join("derain/tensorrt")
}

/// Sessions alive in this process: lets tests (and users) check that restarts leak none.
static OPEN_SESSIONS: AtomicUsize = AtomicUsize::new(0);

/// How many ONNX Runtime sessions ([`OpenSession`]s: generators and detectors) are alive in this
/// process.
pub fn open_sessions() -> usize {
    OPEN_SESSIONS.load(Ordering::SeqCst)
}

/// An ONNX Runtime session on the provider that really runs it, counted in [`open_sessions`]
/// while alive. [`Generator`] and the detection stage's `Detector` are both built on it.
pub struct OpenSession {
    /// Dropped by hand in `Drop`, so freed memory can be handed back after it is gone.
    session: ManuallyDrop<Session>,
    provider: Provider,
    /// TensorRT only: the engine cache directory, watched for engine builds.
    engines: Option<EngineWatch>,
}

impl fmt::Debug for OpenSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenSession")
            .field("provider", &self.provider)
            .finish()
    }
}

impl Drop for OpenSession {
    fn drop(&mut self) {
        // SAFETY: the session is dropped exactly once, here, and never used again.
        unsafe { ManuallyDrop::drop(&mut self.session) };
        OPEN_SESSIONS.fetch_sub(1, Ordering::SeqCst);
        release_freed_memory();
    }
}

/// Hands memory freed by a closed session back to the operating system.
///
/// A session's CPU arena (several MB) is allocated by whichever thread first runs it, and glibc
/// serves each thread from its own malloc arena and keeps what is freed there. A pipeline that
/// restarts gets new streaming threads, so every restart left one more arena holding a dead
/// session's memory: resident memory rose by about 70 MB over 300 restarts on two cores (up to
/// 8 arenas per core), though nothing leaked. `malloc_trim` returns the free pages of all arenas.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory; it is thread-safe and has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

impl OpenSession {
    /// Builds a session for the ONNX model `bytes` on the provider `options` ask for. `auto` tries
    /// TensorRT, CUDA and the CPU in turn and logs each fallback; an explicit GPU provider that
    /// cannot load is an error, never a silent fall back to the CPU. `origin` names the model in
    /// messages; `sha256` (hex) keys its TensorRT engine cache.
    pub fn new(
        bytes: &[u8],
        origin: &str,
        sha256: &str,
        options: &SessionOptions,
    ) -> Result<Self, RuntimeError> {
        let (_, env) = environment(options.ort_library.as_deref())?;
        let order: &[Provider] = match options.provider {
            Provider::Auto => &[Provider::TensorRt, Provider::Cuda, Provider::Cpu],
            Provider::Cpu => &[Provider::Cpu],
            Provider::Cuda => &[Provider::Cuda],
            Provider::TensorRt => &[Provider::TensorRt],
        };
        let source = Source {
            bytes,
            origin,
            sha256,
        };
        let mut last_err = None;
        for &provider in order {
            match build_session(&env, &source, options, provider) {
                Ok((session, engines)) => {
                    log::info!(
                        "model '{origin}' runs on the {provider} provider (asked for {})",
                        options.provider
                    );
                    OPEN_SESSIONS.fetch_add(1, Ordering::SeqCst);
                    return Ok(Self {
                        session: ManuallyDrop::new(session),
                        provider,
                        engines,
                    });
                }
                Err(e) if options.provider == Provider::Auto && provider != Provider::Cpu => {
                    log::info!("provider auto: {provider} not used ({e}); trying the next");
                    last_err = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(
            last_err.unwrap_or_else(|| RuntimeError::ProviderUnavailable {
                provider: options.provider,
                reason: "no provider could be tried".into(),
            }),
        )
    }

    /// The provider that really runs the network (never `Auto`).
    pub fn provider(&self) -> Provider {
        self.provider
    }

    /// The ONNX Runtime session, for its inputs, outputs and `run`.
    pub fn session(&mut self) -> &mut Session {
        &mut self.session
    }

    /// TensorRT only: the engine cache directory this session uses.
    pub fn trt_engine_dir(&self) -> Option<&Path> {
        self.engines.as_ref().map(EngineWatch::dir)
    }

    /// TensorRT engines this session built (or rebuilt for new input sizes); 0 when every engine
    /// came from the cache, or for other providers.
    pub fn trt_engines_built(&self) -> usize {
        self.engines.as_ref().map_or(0, EngineWatch::builds)
    }
}

/// A generator ready to run: one ONNX Runtime session on one provider.
pub struct Generator {
    session: OpenSession,
    origin: String,
    multiple_of: u32,
    /// Input sizes (h, w) run so far: TensorRT may build an engine on the first run at each.
    sizes_seen: Vec<(usize, usize)>,
    device_id: i32,
    /// The GPU frame path, once [`Generator::use_gpu_frames`] set it up.
    #[cfg(feature = "cuda")]
    gpu_frames: Option<crate::cuda::binding::BoundFrames>,
}

impl fmt::Debug for Generator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Generator")
            .field("origin", &self.origin)
            .field("provider", &self.session.provider)
            .finish()
    }
}

impl Generator {
    /// Builds a session for `model` on the provider `options` ask for (see [`OpenSession::new`]).
    pub fn new(model: &Model, options: &SessionOptions) -> Result<Self, RuntimeError> {
        let session = OpenSession::new(model.bytes(), model.origin(), model.sha256(), options)?;
        Ok(Self {
            session,
            origin: model.origin().to_string(),
            multiple_of: model.multiple_of(),
            sizes_seen: Vec::new(),
            device_id: options.device_id,
            #[cfg(feature = "cuda")]
            gpu_frames: None,
        })
    }

    /// Sets up the path on which a frame crosses to the GPU once ([`Generator::run_frame_gpu`]):
    /// `Ok(true)` when this build has the `cuda` feature and a GPU provider runs the network,
    /// `Ok(false)` when frames are to be converted on the CPU (no `cuda` feature, CPU provider),
    /// and an error saying what is missing when a GPU provider runs but the path cannot be set
    /// up (the caller converts on the CPU then).
    pub fn use_gpu_frames(&mut self) -> Result<bool, String> {
        if !self.provider().is_gpu() {
            return Ok(false);
        }
        #[cfg(feature = "cuda")]
        {
            if self.gpu_frames.is_none() {
                let frames =
                    crate::cuda::binding::BoundFrames::new(&self.session.session, self.device_id)
                        .map_err(|e| e.to_string())?;
                self.gpu_frames = Some(frames);
            }
            Ok(true)
        }
        #[cfg(not(feature = "cuda"))]
        {
            let _ = self.device_id;
            Ok(false)
        }
    }

    /// Converts, runs and converts back one frame with the frame on the GPU throughout (see
    /// [`crate::cuda`]); `input` and `output` describe the same frame size and format (their
    /// strides may differ). Returns the rain level (mean |input − output| over every
    /// `level_step`-th row and column) when asked, else 0. Needs [`Generator::use_gpu_frames`]
    /// to have returned `Ok(true)`.
    pub fn run_frame_gpu(
        &mut self,
        input: &crate::frame::FrameLayout,
        in_planes: &[&[u8]],
        output: &crate::frame::FrameLayout,
        out_planes: &mut [&mut [u8]],
        level_step: Option<usize>,
    ) -> Result<f64, RuntimeError> {
        #[cfg(feature = "cuda")]
        {
            let run_err = |reason: String| RuntimeError::Run {
                origin: self.origin.clone(),
                reason,
            };
            let Some(frames) = self.gpu_frames.as_mut() else {
                return Err(run_err("the GPU frame path is not set up".into()));
            };
            let (hp, wp) = crate::frame::padded_size(input.height, input.width, self.multiple_of);
            let watching = self.session.engines.is_some() && !self.sizes_seen.contains(&(hp, wp));
            let started = std::time::Instant::now();
            let level = frames
                .run(
                    &mut self.session.session,
                    self.multiple_of,
                    input,
                    in_planes,
                    output,
                    out_planes,
                    level_step,
                )
                .map_err(|e| run_err(e.to_string()))?;
            if watching {
                self.sizes_seen.push((hp, wp));
                if let Some(watch) = self.session.engines.as_mut() {
                    watch.observe(started.elapsed(), &format!("on the first {wp}x{hp} frame"));
                }
            }
            Ok(level)
        }
        #[cfg(not(feature = "cuda"))]
        {
            let _ = (input, in_planes, output, out_planes, level_step);
            Err(RuntimeError::Run {
                origin: self.origin.clone(),
                reason: "this build has no GPU frame path (cargo feature `cuda`)".into(),
            })
        }
    }

    /// TensorRT only: the engine cache directory (model hash, precision and GPU in its name).
    pub fn trt_engine_dir(&self) -> Option<&Path> {
        self.session.trt_engine_dir()
    }

    /// TensorRT engines this generator built so far (0 when all came from the cache).
    pub fn trt_engines_built(&self) -> usize {
        self.session.trt_engines_built()
    }

    /// The provider that really runs the network (never `Auto`).
    pub fn provider(&self) -> Provider {
        self.session.provider
    }

    /// H and W of the tensors given to [`Generator::run`] must be multiples of this.
    pub fn multiple_of(&self) -> u32 {
        self.multiple_of
    }

    /// Runs the network on one `[1,3,h,w]` tensor (`input.len() == 3*h*w`) and hands the output
    /// tensor, of the same shape, to `consume` without copying it.
    pub fn run<R>(
        &mut self,
        input: &[f32],
        h: usize,
        w: usize,
        consume: impl FnOnce(&[f32]) -> R,
    ) -> Result<R, RuntimeError> {
        let run_err = |reason: String| RuntimeError::Run {
            origin: self.origin.clone(),
            reason,
        };
        if input.len() != 3 * h * w {
            return Err(run_err(format!(
                "input has {} values, expected 3x{h}x{w} = {}",
                input.len(),
                3 * h * w
            )));
        }
        let shape = [1_usize, 3, h, w];
        let tensor =
            TensorRef::from_array_view((shape, input)).map_err(|e| run_err(e.to_string()))?;
        let started = std::time::Instant::now();
        let watching = self.session.engines.is_some() && !self.sizes_seen.contains(&(h, w));
        let outputs = self
            .session
            .session
            .run(ort::inputs![INPUT_NAME => tensor])
            .map_err(|e| RuntimeError::Run {
                origin: self.origin.clone(),
                reason: e.to_string(),
            })?;
        if watching {
            // TensorRT builds engines lazily for dynamic shapes: on the first run at each size.
            let elapsed = started.elapsed();
            self.sizes_seen.push((h, w));
            if let Some(watch) = self.session.engines.as_mut() {
                watch.observe(elapsed, &format!("on the first {w}x{h} input"));
            }
        }
        let (out_shape, data) = outputs[OUTPUT_NAME]
            .try_extract_tensor::<f32>()
            .map_err(|e| RuntimeError::Run {
                origin: self.origin.clone(),
                reason: e.to_string(),
            })?;
        if data.len() != input.len() {
            return Err(RuntimeError::Run {
                origin: self.origin.clone(),
                reason: format!("output shape {out_shape:?} differs from input shape {shape:?}"),
            });
        }
        Ok(consume(data))
    }
}

/// The model a session is built from.
struct Source<'a> {
    bytes: &'a [u8],
    origin: &'a str,
    sha256: &'a str,
}

fn build_session(
    env: &Environment,
    model: &Source<'_>,
    options: &SessionOptions,
    provider: Provider,
) -> Result<(Session, Option<EngineWatch>), RuntimeError> {
    let session_err = |reason: String| RuntimeError::Session {
        origin: model.origin.to_string(),
        provider,
        reason,
    };
    let unavailable = |reason: String| RuntimeError::ProviderUnavailable { provider, reason };
    let mut builder = Session::builder(env)
        .map_err(|e| session_err(e.to_string()))?
        .with_optimization_level(GraphOptimizationLevel::Level3)
        .map_err(|e| session_err(e.to_string()))?;
    if options.threads > 0 {
        builder = builder
            .with_intra_threads(options.threads)
            .map_err(|e| session_err(e.to_string()))?;
    }
    if !options.spin {
        builder = builder
            .with_intra_op_spinning(false)
            .map_err(|e| session_err(e.to_string()))?;
    }
    let mut engines = None;
    builder = match provider {
        Provider::Auto | Provider::Cpu => builder,
        Provider::Cuda => {
            require_compiled::<ep::CUDA>(provider)?;
            require_gpu(provider, options.device_id)?;
            let cuda = ep::CUDA::default()
                .with_device_id(options.device_id)
                .build()
                .error_on_failure();
            with_providers(builder, vec![cuda]).map_err(|e| unavailable(libraries_hint(e)))?
        }
        Provider::TensorRt => {
            require_compiled::<ep::TensorRT>(provider)?;
            let gpu = require_gpu(provider, options.device_id)?;
            let dir = trt_engine_dir(model, options, &gpu);
            std::fs::create_dir_all(&dir).map_err(|e| {
                unavailable(format!("cannot create engine cache {}: {e}", dir.display()))
            })?;
            engines = Some(EngineWatch::start(&dir, model.origin));
            let trt = ep::TensorRT::default()
                .with_device_id(options.device_id)
                .with_fp16(options.trt_fp16)
                .with_engine_cache(true)
                .with_engine_cache_path(dir.display())
                .with_timing_cache(true)
                .with_timing_cache_path(dir.display())
                .build()
                .error_on_failure();
            // Nodes TensorRT cannot take run on CUDA rather than the CPU.
            let cuda = ep::CUDA::default()
                .with_device_id(options.device_id)
                .build();
            with_providers(builder, vec![trt, cuda]).map_err(|e| unavailable(libraries_hint(e)))?
        }
    };
    let started = std::time::Instant::now();
    let session = builder
        .commit_from_memory(model.bytes)
        .map_err(|e| session_err(e.to_string()))?;
    if let Some(watch) = engines.as_mut() {
        watch.observe(started.elapsed(), "while creating the session");
    }
    Ok((session, engines))
}

fn with_providers(
    builder: SessionBuilder,
    eps: Vec<ep::ExecutionProviderDispatch>,
) -> Result<SessionBuilder, String> {
    builder
        .with_execution_providers(eps)
        .map_err(|e| e.to_string())
}

/// ONNX Runtime's message when a provider library would not load, with what usually fixes it.
fn libraries_hint(e: String) -> String {
    format!(
        "{e}. The GPU build of ONNX Runtime loads CUDA 13, cuDNN 9 and (for TensorRT) TensorRT 10 \
         libraries from the library path: after `make setup GPU=1`, `source .deps/gpu.env`"
    )
}

/// Whether a GPU provider could run here, without building a session: the ONNX Runtime library
/// was built with CUDA and the driver reports device `options.device_id`. Lets `auto` callers
/// skip work only a GPU would use (the element's default model choice).
pub fn gpu_provider_possible(options: &SessionOptions) -> bool {
    environment(options.ort_library.as_deref()).is_ok()
        && require_compiled::<ep::CUDA>(Provider::Cuda).is_ok()
        && require_gpu(Provider::Cuda, options.device_id).is_ok()
}

fn require_compiled<E: ExecutionProvider>(provider: Provider) -> Result<(), RuntimeError> {
    match E::is_available() {
        Ok(true) => Ok(()),
        Ok(false) => {
            let path = LOADED
                .lock()
                .ok()
                .and_then(|p| p.as_ref().map(|(p, _)| p.display().to_string()))
                .unwrap_or_default();
            Err(RuntimeError::ProviderUnavailable {
                provider,
                reason: format!(
                    "the ONNX Runtime library {path} was built without it. Install the GPU build \
                     (`make setup GPU=1`) or point {ORT_LIBRARY_ENV} at one, or use \
                     provider=cpu/auto"
                ),
            })
        }
        Err(e) => Err(RuntimeError::ProviderUnavailable {
            provider,
            reason: format!("{e}. Use provider=cpu/auto"),
        }),
    }
}

/// Engines are kept per model (hash), precision and GPU (name and compute capability), so one
/// cache serves several models, precisions and GPUs without handing an engine to the wrong one.
fn trt_engine_dir(
    model: &Source<'_>,
    options: &SessionOptions,
    gpu: &engine_cache::GpuIdentity,
) -> PathBuf {
    let root = options
        .trt_cache_dir
        .clone()
        .unwrap_or_else(default_trt_cache_dir);
    engine_cache::engine_dir(&root, model.sha256, options.trt_fp16, Some(gpu))
}

/// The GPU a CUDA or TensorRT session is to run on, or why there is none (no driver, no such
/// device), asked before ONNX Runtime tries so the error names what is missing.
fn require_gpu(
    provider: Provider,
    device_id: i32,
) -> Result<engine_cache::GpuIdentity, RuntimeError> {
    engine_cache::gpu_identity(device_id).map_err(|reason| RuntimeError::ProviderUnavailable {
        provider,
        reason: format!(
            "CUDA device {device_id}: {reason}. It needs an NVIDIA GPU and its driver (check \
             with nvidia-smi, and device-id); use provider=cpu/auto on this machine"
        ),
    })
}

/// Mean absolute difference between the image regions (top-left `h`×`w`) of two `[3,hp,wp]`
/// tensors, sampling every `step`-th row and column: the per-frame rain level.
pub fn mean_abs_diff(
    a: &[f32],
    b: &[f32],
    hp: usize,
    wp: usize,
    h: usize,
    w: usize,
    step: usize,
) -> f64 {
    let step = step.max(1);
    if a.len() < 3 * hp * wp || b.len() < 3 * hp * wp || h > hp || w > wp || h == 0 || w == 0 {
        return 0.0;
    }
    let mut sum = 0.0_f64;
    let mut count = 0_usize;
    for c in 0..3 {
        for y in (0..h).step_by(step) {
            let row = c * hp * wp + y * wp;
            let ra = &a[row..row + w];
            let rb = &b[row..row + w];
            let mut s = 0.0_f32;
            for x in (0..w).step_by(step) {
                s += (ra[x] - rb[x]).abs();
            }
            sum += f64::from(s);
            count += w.div_ceil(step);
        }
    }
    sum / count as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_names_round_trip() {
        for p in Provider::ALL {
            assert_eq!(p.as_str().parse::<Provider>(), Ok(p));
        }
        assert_eq!("TensorRT".parse::<Provider>(), Ok(Provider::TensorRt));
        let err = "rocm".parse::<Provider>().unwrap_err();
        assert!(err.contains("rocm") && err.contains("tensorrt"), "{err}");
    }

    #[test]
    fn explicit_library_is_the_only_candidate() {
        let c = library_candidates(Some(Path::new("/x/libonnxruntime.so")));
        assert_eq!(c, vec![PathBuf::from("/x/libonnxruntime.so")]);
        let searched = library_candidates(None);
        assert_eq!(searched.last(), Some(&PathBuf::from("libonnxruntime.so")));
    }

    #[test]
    fn mean_abs_diff_ignores_padding() {
        // 3 channels of 2x3 padded tensors; the image is the top-left 1x2.
        let a = vec![0.5_f32; 18];
        let mut b = vec![0.5_f32; 18];
        for c in 0..3 {
            b[c * 6] = 0.7; // inside the image
            b[c * 6 + 5] = 10.0; // padding
        }
        let d = mean_abs_diff(&a, &b, 2, 3, 1, 2, 1);
        assert!((d - 0.1).abs() < 1e-6, "{d}");
    }
}
