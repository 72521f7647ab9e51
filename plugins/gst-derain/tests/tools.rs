//! The plugin as users meet it: found by `gst-inspect-1.0` through GST_PLUGIN_PATH, and run by
//! `gst-launch-1.0`, whose exit status must say whether the pipeline worked.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output};

/// The directory holding the built `libgstderain.so` (cargo builds the cdylib with the tests).
fn plugin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/tools-<hash> -> target/<profile>
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target profile dir")
        .to_path_buf();
    assert!(
        dir.join("libgstderain.so").exists(),
        "{} has no libgstderain.so: build the plugin first (cargo build -p gst-plugin-derain)",
        dir.display()
    );
    dir
}

fn gst_tool(tool: &str, args: &[&str]) -> Output {
    let registry = tempfile::NamedTempFile::new().expect("registry file");
    Command::new(tool)
        .args(args)
        .env("GST_PLUGIN_PATH", plugin_dir())
        // A private registry, so a stale system cache cannot hide the freshly built plugin.
        .env("GST_REGISTRY", registry.path())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {tool} ({e}); run `make setup`"))
}

#[test]
fn gst_inspect_lists_every_property_with_a_blurb() {
    let out = gst_tool("gst-inspect-1.0", &["derain"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "gst-inspect-1.0 derain failed: {text}"
    );
    for prop in [
        "model",
        "provider",
        "device-id",
        "threads",
        "spin-wait",
        "trt-cache-dir",
        "trt-fp16",
        "ort-library",
        "drop-policy",
        "max-lateness",
        "stats-interval",
        "rain-level",
        "bypass",
        "rain-threshold",
        "rain-enter",
        "rain-leave",
        "score-interval",
        "active-provider",
        "frames-processed",
        "frames-dropped",
        "frames-passed",
        "frames-late",
        "frames-bypassed",
        "weather",
        "inference-mean-ms",
        "inference-p99-ms",
        "latency",
        "last-rain-level",
    ] {
        // gst-inspect prints "  name  : blurb" for each property.
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{prop} ")))
            .unwrap_or_else(|| panic!("property {prop} missing from gst-inspect:\n{text}"));
        let blurb = line.split_once(':').map(|(_, b)| b.trim()).unwrap_or("");
        assert!(
            blurb.len() > 10,
            "property {prop} has no useful blurb: {line}"
        );
    }
}

fn identity_model() -> tempfile::NamedTempFile {
    let mut f = tempfile::Builder::new()
        .suffix(".onnx")
        .tempfile()
        .expect("temp file");
    f.write_all(&derain_tools::onnx::fixtures::identity(4))
        .expect("write model");
    f
}

#[test]
fn gst_launch_runs_to_eos_and_fails_loudly_on_a_bad_model() {
    let model = identity_model();
    let location = format!("model={}", model.path().display());
    let good = gst_tool(
        "gst-launch-1.0",
        &[
            "videotestsrc",
            "num-buffers=10",
            "!",
            "video/x-raw,format=I420,width=161,height=91",
            "!",
            "derain",
            &location,
            "provider=cpu",
            "!",
            "fakesink",
        ],
    );
    let stdout = String::from_utf8_lossy(&good.stdout);
    assert!(good.status.success(), "pipeline failed: {stdout}");
    assert!(stdout.contains("EOS"), "no EOS: {stdout}");

    let bad = gst_tool(
        "gst-launch-1.0",
        &[
            "videotestsrc",
            "num-buffers=10",
            "!",
            "derain",
            "model=/no/such/model.onnx",
            "!",
            "fakesink",
        ],
    );
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&bad.stdout),
        String::from_utf8_lossy(&bad.stderr)
    );
    assert!(!bad.status.success(), "a missing model must fail: {all}");
    assert!(
        all.contains("/no/such/model.onnx"),
        "error must name the file: {all}"
    );
}

#[test]
fn plugin_links_no_libtorch() {
    // In a vehicle only GStreamer and ONNX Runtime (loaded at run time) are installed.
    let so = plugin_dir().join("libgstderain.so");
    let out = Command::new("ldd").arg(&so).output().expect("ldd runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "ldd failed on {}", so.display());
    assert!(
        text.contains("libgstreamer-1.0"),
        "unexpected ldd output: {text}"
    );
    assert!(
        !text.to_lowercase().contains("torch"),
        "plugin links libtorch: {text}"
    );
}
