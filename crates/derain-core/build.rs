//! Build script of `derain-core`: embeds the shipped rain detector (`models/rain-detector.onnx` at
//! the repository root) when it exists; the first build of a fresh tree, before one is trained,
//! has none (cfg `derain_embed_detector`).

use std::path::Path;

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rustc-check-cfg=cfg(derain_embed_detector)");
    // Read when the script runs, not baked in when it is compiled: a build-script binary that
    // cargo reuses from a checkout at another path must still look in this one.
    let Some(dir) = std::env::var_os("CARGO_MANIFEST_DIR") else {
        return;
    };
    let detector = Path::new(&dir).join("../../models/rain-detector.onnx");
    println!("cargo::rerun-if-changed={}", detector.display());
    if detector.is_file() {
        println!("cargo::rustc-cfg=derain_embed_detector");
    }
}
