//! The TensorRT engine cache: one directory per model, precision and GPU, so an engine built once
//! is found again on the next start and never handed to a GPU or precision it was not built for;
//! and noticing when TensorRT builds one, which can take minutes, so the log can say so.
//!
//! The GPU is asked for its name and compute capability through the CUDA driver, loaded at run
//! time (no CUDA is needed to build this crate, and a machine without a driver gets an
//! `unknown-gpu` key, which it never uses since TensorRT cannot run there).

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_uint};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// Which GPU an engine is built for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GpuIdentity {
    /// The device's name, e.g. `NVIDIA H100 80GB HBM3`.
    pub name: String,
    /// Compute capability (major, minor), e.g. (9, 0).
    pub compute_capability: (i32, i32),
}

impl GpuIdentity {
    /// The directory-name form: the name in lower case with runs of other characters as `-`,
    /// then `-sm` and the compute capability, e.g. `nvidia-h100-80gb-hbm3-sm90`.
    pub fn slug(&self) -> String {
        let mut out = String::new();
        for c in self.name.chars() {
            if c.is_ascii_alphanumeric() {
                out.push(c.to_ascii_lowercase());
            } else if !out.ends_with('-') && !out.is_empty() {
                out.push('-');
            }
        }
        let name = out.trim_end_matches('-');
        let name = if name.is_empty() { "gpu" } else { name };
        let (major, minor) = self.compute_capability;
        format!("{name}-sm{major}{minor}")
    }
}

/// Directory, under `root`, of the engines for the model whose SHA-256 (hex) is `sha256`, built
/// with `fp16` or not, for `gpu` (`None`: the GPU could not be identified).
pub fn engine_dir(root: &Path, sha256: &str, fp16: bool, gpu: Option<&GpuIdentity>) -> PathBuf {
    let hash = sha256.get(..16).unwrap_or(sha256);
    let precision = if fp16 { "fp16" } else { "fp32" };
    let gpu = gpu.map_or_else(|| "unknown-gpu".to_owned(), GpuIdentity::slug);
    root.join(format!("{hash}-{precision}-{gpu}"))
}

/// The identity of CUDA device `device_id` (as ONNX Runtime numbers them: after
/// `CUDA_VISIBLE_DEVICES`), asked once per process and device.
pub fn gpu_identity(device_id: i32) -> Result<GpuIdentity, String> {
    static SEEN: Mutex<Option<HashMap<i32, Result<GpuIdentity, String>>>> = Mutex::new(None);
    let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    seen.get_or_insert_with(HashMap::new)
        .entry(device_id)
        .or_insert_with(|| query_driver(device_id))
        .clone()
}

type CuInit = unsafe extern "C" fn(c_uint) -> c_int;
type CuDeviceGet = unsafe extern "C" fn(*mut c_int, c_int) -> c_int;
type CuDeviceGetName = unsafe extern "C" fn(*mut c_char, c_int, c_int) -> c_int;
type CuDeviceGetAttribute = unsafe extern "C" fn(*mut c_int, c_int, c_int) -> c_int;

/// `CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR` and `..._MINOR` (cuda.h).
const CC_MAJOR: c_int = 75;
const CC_MINOR: c_int = 76;

fn query_driver(device_id: i32) -> Result<GpuIdentity, String> {
    // SAFETY: loading the CUDA driver runs its initialisers, which have no preconditions.
    let lib = unsafe { libloading::Library::new("libcuda.so.1") }
        .or_else(|_| unsafe { libloading::Library::new("libcuda.so") })
        .map_err(|e| {
            let why =
                std::error::Error::source(&e).map_or_else(|| e.to_string(), |s| s.to_string());
            format!("no CUDA driver: libcuda.so.1 cannot be loaded ({why})")
        })?;
    let check = |what: &str, code: c_int| {
        if code == 0 {
            Ok(())
        } else {
            Err(format!("{what} failed with CUDA error {code}"))
        }
    };
    // SAFETY: the symbols have these C signatures in every CUDA driver since 3.2; each call gets
    // valid pointers to locals of the right type and a buffer length that fits the buffer.
    unsafe {
        let missing = |e: libloading::Error| format!("the CUDA driver is incomplete: {e}");
        let init: libloading::Symbol<CuInit> = lib.get(b"cuInit\0").map_err(missing)?;
        let get: libloading::Symbol<CuDeviceGet> = lib.get(b"cuDeviceGet\0").map_err(missing)?;
        let get_name: libloading::Symbol<CuDeviceGetName> =
            lib.get(b"cuDeviceGetName\0").map_err(missing)?;
        let attribute: libloading::Symbol<CuDeviceGetAttribute> =
            lib.get(b"cuDeviceGetAttribute\0").map_err(missing)?;
        check("cuInit", init(0))?;
        let mut dev: c_int = 0;
        check("cuDeviceGet", get(&mut dev, device_id))?;
        let mut buf = [0 as c_char; 256];
        check(
            "cuDeviceGetName",
            get_name(buf.as_mut_ptr(), buf.len() as c_int - 1, dev),
        )?;
        let name = std::ffi::CStr::from_ptr(buf.as_ptr())
            .to_string_lossy()
            .into_owned();
        let (mut major, mut minor) = (0, 0);
        check("cuDeviceGetAttribute", attribute(&mut major, CC_MAJOR, dev))?;
        check("cuDeviceGetAttribute", attribute(&mut minor, CC_MINOR, dev))?;
        Ok(GpuIdentity {
            name,
            compute_capability: (major, minor),
        })
    }
}

/// The engine files (`*.engine`) in a cache directory with their size and modification time: an
/// engine TensorRT builds or rebuilds (for new input shapes) changes this.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EngineSnapshot(BTreeMap<String, (u64, Option<SystemTime>)>);

impl EngineSnapshot {
    /// Reads `dir`; a missing or unreadable directory has no engines.
    pub fn of(dir: &Path) -> Self {
        let mut files = BTreeMap::new();
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !name.ends_with(".engine") {
                    continue;
                }
                if let Ok(meta) = e.metadata() {
                    files.insert(name, (meta.len(), meta.modified().ok()));
                }
            }
        }
        Self(files)
    }

    /// No engine in the directory.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many engines.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Engines in `self` that are new or changed since `before`.
    pub fn changed_since(&self, before: &EngineSnapshot) -> usize {
        self.0
            .iter()
            .filter(|(name, stamp)| before.0.get(*name) != Some(*stamp))
            .count()
    }
}

/// Watches one session's engine directory: TensorRT builds an engine when the session is created
/// (static shapes) or at the first run with new input shapes (dynamic H and W, as here), so each
/// is checked. Every build is logged with the time it took and counted.
#[derive(Debug)]
pub struct EngineWatch {
    dir: PathBuf,
    origin: String,
    last: EngineSnapshot,
    builds: usize,
}

impl EngineWatch {
    /// Starts watching `dir` before the session for `origin` is created; logs whether engines
    /// are there to reuse.
    pub fn start(dir: &Path, origin: &str) -> Self {
        let last = EngineSnapshot::of(dir);
        if last.is_empty() {
            log::info!(
                "no TensorRT engine cached for '{origin}' in {}: TensorRT builds one (at session \
                 creation or on the first frame of each new size), which can take minutes",
                dir.display()
            );
        } else {
            log::info!(
                "TensorRT engine cache {}: {} engine(s) to reuse for '{origin}'",
                dir.display(),
                last.len()
            );
        }
        Self {
            dir: dir.to_owned(),
            origin: origin.to_owned(),
            last,
            builds: 0,
        }
    }

    /// After a step that may have built engines (session creation, the first run at a size) that
    /// took `elapsed`: logs and counts what was built; returns how many.
    pub fn observe(&mut self, elapsed: Duration, during: &str) -> usize {
        let now = EngineSnapshot::of(&self.dir);
        let built = now.changed_since(&self.last);
        if built > 0 {
            log::info!(
                "TensorRT built {built} engine(s) for '{}' {during} in {:.1} s; cached in {} for \
                 the next start",
                self.origin,
                elapsed.as_secs_f64(),
                self.dir.display()
            );
            self.builds += built;
        }
        self.last = now;
        built
    }

    /// Engines built (or rebuilt) since the watch started.
    pub fn builds(&self) -> usize {
        self.builds
    }

    /// The directory watched.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h100() -> GpuIdentity {
        GpuIdentity {
            name: "NVIDIA H100 80GB HBM3".into(),
            compute_capability: (9, 0),
        }
    }

    #[test]
    fn slug_is_lower_case_and_dashed() {
        assert_eq!(h100().slug(), "nvidia-h100-80gb-hbm3-sm90");
        let odd = GpuIdentity {
            name: "  Tesla T4 (PCIe)  ".into(),
            compute_capability: (7, 5),
        };
        assert_eq!(odd.slug(), "tesla-t4-pcie-sm75");
        let empty = GpuIdentity {
            name: "///".into(),
            compute_capability: (8, 6),
        };
        assert_eq!(empty.slug(), "gpu-sm86");
    }

    #[test]
    fn dir_keys_model_precision_and_gpu() {
        let root = Path::new("/cache");
        let sha = "0123456789abcdef0123456789abcdef";
        let a = engine_dir(root, sha, false, Some(&h100()));
        assert_eq!(
            a,
            root.join("0123456789abcdef-fp32-nvidia-h100-80gb-hbm3-sm90")
        );
        // Each of model, precision and GPU changes the directory.
        assert_ne!(
            a,
            engine_dir(root, "f123456789abcdef00", false, Some(&h100()))
        );
        assert_ne!(a, engine_dir(root, sha, true, Some(&h100())));
        let h200 = GpuIdentity {
            name: "NVIDIA H200".into(),
            compute_capability: (9, 0),
        };
        assert_ne!(a, engine_dir(root, sha, false, Some(&h200)));
        let other_cc = GpuIdentity {
            compute_capability: (8, 9),
            ..h100()
        };
        assert_ne!(a, engine_dir(root, sha, false, Some(&other_cc)));
        assert_eq!(
            engine_dir(root, "abc", true, None),
            root.join("abc-fp16-unknown-gpu")
        );
    }

    #[test]
    fn no_driver_is_an_error_not_a_panic() {
        // On a machine with a GPU this names it; without a driver it must say so.
        match gpu_identity(0) {
            Ok(gpu) => eprintln!("GPU 0: {} ({})", gpu.name, gpu.slug()),
            Err(e) => assert!(e.contains("CUDA"), "{e}"),
        }
        assert!(gpu_identity(4096).is_err(), "no machine has 4097 GPUs");
    }

    #[test]
    fn watch_counts_new_and_rebuilt_engines() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("engines");
        let mut w = EngineWatch::start(&dir, "m.onnx");
        assert_eq!(w.observe(Duration::from_millis(5), "at start"), 0);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("TRTKernel_graph_1_sm90.engine"), b"engine").unwrap();
        std::fs::write(dir.join("timing.cache"), b"not an engine").unwrap();
        assert_eq!(w.observe(Duration::from_secs(2), "on the first frame"), 1);
        assert_eq!(w.observe(Duration::from_millis(1), "again"), 0);
        // Rebuilt for a new profile: same name, new content.
        std::fs::write(dir.join("TRTKernel_graph_1_sm90.engine"), b"bigger engine").unwrap();
        assert_eq!(w.observe(Duration::from_secs(3), "at 1280x720"), 1);
        assert_eq!(w.builds(), 2);
        // A second start finds them and builds nothing.
        let mut again = EngineWatch::start(&dir, "m.onnx");
        assert_eq!(again.observe(Duration::from_millis(1), "at start"), 0);
        assert_eq!(again.builds(), 0);
    }
}
