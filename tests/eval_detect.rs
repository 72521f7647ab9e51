//! `derain eval-detect` end to end: its errors, and on the shared CARLA pairs with an identity
//! model (derained = rainy, so both figures must agree).

use std::path::Path;
use std::process::{Command, Output};

fn derain(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_derain"))
        .args(args)
        .env("RUST_LOG", "warn")
        .current_dir(dir)
        .output()
        .expect("derain runs")
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn missing_inputs_are_explained() {
    let dir = tempfile::tempdir().expect("dir");
    let d = dir.path();
    std::fs::create_dir_all(d.join("pairs/rainy")).expect("dir");
    std::fs::create_dir_all(d.join("both/rainy")).expect("dir");
    std::fs::create_dir_all(d.join("both/clean")).expect("dir");
    std::fs::write(d.join("det.onnx"), b"x").expect("file");
    let cases: [(&[&str], &str); 2] = [
        (
            &["--pairs", "pairs", "--detector", "det.onnx"],
            "pairs/clean is not a folder",
        ),
        (
            &["--pairs", "both", "--detector", "nope.onnx"],
            "detector nope.onnx does not exist",
        ),
    ];
    for (args, want) in cases {
        let mut all = vec!["eval-detect"];
        all.extend_from_slice(args);
        let o = derain(d, &all);
        assert!(!o.status.success(), "{}", text(&o));
        assert!(
            String::from_utf8_lossy(&o.stderr).contains(want),
            "want '{want}':\n{}",
            text(&o)
        );
    }
}

#[test]
fn identity_model_scores_like_the_rainy_frames() {
    let (Some(pairs), Some(detector)) = (
        derain::devdata::shared_path("pairs/carla-dev"),
        derain::devdata::shared_path("models/yolox_nano_416.onnx"),
    ) else {
        eprintln!(
            "skipped: ../shared/data/pairs/carla-dev or models/yolox_nano_416.onnx is absent"
        );
        return;
    };
    if let Err(e) = derain::runtime::init_ort(None) {
        eprintln!("skipped: ONNX Runtime not loadable ({e}); run `make setup`");
        return;
    }
    let dir = tempfile::tempdir().expect("dir");
    let d = dir.path();
    let o = derain(d, &["fixture", "identity", "--out", "id.onnx"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = derain(
        d,
        &[
            "eval-detect",
            "--pairs",
            pairs.to_str().expect("path"),
            "--detector",
            detector.to_str().expect("path"),
            "--model",
            "id.onnx",
            "--provider",
            "cpu",
            "--json",
            "scores.json",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("difference (derained - rainy): +0.0000"),
        "{stdout}"
    );
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("scores.json")).expect("json"))
            .expect("parse");
    let rainy = doc["rainy"]["map"].as_f64().expect("rainy map");
    let derained = doc["derained"]["map"].as_f64().expect("derained map");
    assert_eq!(rainy, derained);
    // Rain costs the detector something, but it still finds most of what it sees in the dry.
    assert!(rainy > 0.3 && rainy < 1.0, "{rainy}");
    let images = doc["images"].as_array().expect("images");
    assert!(!images.is_empty());
}
