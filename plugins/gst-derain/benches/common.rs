//! Helpers shared by the long-run benches (`soak`, `latency`): each is its own crate, so they
//! include this file with `#[path]`.

use std::io::Write;

/// An environment variable parsed as `T`, or `default` when unset or unparsable.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The `q` quantile (nearest rank) of `values`; NaN when empty.
pub fn percentile(values: &[f64], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let idx = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1;
    v[idx]
}

/// `bytes` in a temporary `.onnx` file, removed when dropped.
pub fn model_file(bytes: &[u8]) -> tempfile::NamedTempFile {
    let mut f = tempfile::Builder::new()
        .suffix(".onnx")
        .tempfile()
        .expect("temp file");
    f.write_all(bytes).expect("write model");
    f
}

/// Pass/fail lines as a suite goes, and the failures for its summary.
#[derive(Default)]
pub struct Checks {
    pub failed: Vec<String>,
}

impl Checks {
    /// Prints `[ok]` or `[FAIL]` with `what`, remembering failures.
    pub fn check(&mut self, ok: bool, what: String) {
        println!("  [{}] {what}", if ok { "ok" } else { "FAIL" });
        if !ok {
            self.failed.push(what);
        }
    }
}
