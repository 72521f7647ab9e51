//! Plugin version info, and which shipped models exist to be embedded: `models/derain-r9.onnx`
//! and `models/derain-lite.onnx` at the repository root become the element's defaults when
//! present (cfg `derain_embed_r9` / `derain_embed_lite`).
fn main() {
    gst_plugin_version_helper::info();
    println!("cargo::rustc-check-cfg=cfg(derain_embed_r9)");
    println!("cargo::rustc-check-cfg=cfg(derain_embed_lite)");
    // Read when the script runs, not baked in when it is compiled: a build-script binary that
    // cargo reuses from a checkout at another path must still look in this one.
    let Some(dir) = std::env::var_os("CARGO_MANIFEST_DIR") else {
        return;
    };
    let models = std::path::Path::new(&dir).join("../../models");
    println!("cargo::rerun-if-changed={}", models.display());
    for (file, cfg) in [
        ("derain-r9.onnx", "derain_embed_r9"),
        ("derain-lite.onnx", "derain_embed_lite"),
    ] {
        let p = models.join(file);
        println!("cargo::rerun-if-changed={}", p.display());
        if p.is_file() {
            println!("cargo::rustc-cfg={cfg}");
        }
    }
}
