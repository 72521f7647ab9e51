//! The fuzz targets (fuzz/src/targets.rs) on stable: every committed seed (fuzz/seeds/<target>/)
//! and every input that once crashed a target (fuzz/regressions/<target>/) goes through the same
//! function `cargo fuzz` runs, so a fixed crash stays fixed in `make test` without nightly.

#[path = "../fuzz/src/targets.rs"]
#[allow(dead_code)]
mod targets;

use std::path::{Path, PathBuf};

fn inputs(kind: &str, target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join(kind)
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.retain(|p| p.is_file() && !p.ends_with("README.md"));
    files.sort();
    files
}

fn replay(target: &str, f: fn(&[u8])) -> usize {
    let mut n = 0;
    for kind in ["seeds", "regressions"] {
        for path in inputs(kind, target) {
            let data = std::fs::read(&path).expect("readable input");
            let outcome = std::panic::catch_unwind(|| f(&data));
            assert!(
                outcome.is_ok(),
                "{target} panics on {} (reproduce: cargo fuzz run {target} {})",
                path.display(),
                path.display()
            );
            n += 1;
        }
    }
    n
}

#[test]
fn every_target_has_seeds_and_survives_them() {
    for (name, f) in targets::TARGETS {
        let n = replay(name, f);
        assert!(
            n > 0,
            "no seeds for fuzz target {name} under fuzz/seeds/{name}"
        );
        eprintln!("{name}: {n} inputs");
    }
}
