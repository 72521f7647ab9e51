//! The `derain synth` and `derain eval` command lines, end to end on generated images (and on
//! the shared data when present).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use derain::imageio::{self, RgbImage};

fn derain(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_derain"))
        .args(args)
        .env("RUST_LOG", "warn")
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

/// A few clean "road scenes": smooth gradients with some edges.
fn clean_folder(dir: &Path, n: u32) -> PathBuf {
    let d = dir.join("clean-in");
    std::fs::create_dir_all(&d).unwrap();
    for i in 0..n {
        let img = RgbImage::from_fn(96, 64, |x, y| {
            let edge = if (x / 16 + y / 16 + i) % 2 == 0 {
                40
            } else {
                0
            };
            image::Rgb([
                (x + 40) as u8 + edge,
                (y * 2 + 30) as u8,
                (100 + i * 20) as u8,
            ])
        });
        imageio::save_png_atomic(&img, &d.join(format!("scene{i}.png"))).unwrap();
    }
    d
}

fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn synth_then_eval_paired_with_json_and_grid() {
    let tmp = tempfile::tempdir().unwrap();
    let clean_in = clean_folder(tmp.path(), 3);
    let before = listing(&clean_in);
    let out = tmp.path().join("pairs");
    let o = derain(&[
        "synth",
        "--clean",
        p(&clean_in),
        "--out",
        p(&out),
        "--preset",
        "heavy",
        "--seed",
        "5",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(listing(&out.join("rainy")), listing(&out.join("clean")));
    assert_eq!(listing(&out.join("rainy")).len(), 3);
    assert_eq!(
        listing(&clean_in),
        before,
        "nothing is written into the input folder"
    );

    // Same seed, same pairs.
    let again = tmp.path().join("again");
    let o = derain(&[
        "synth",
        "--clean",
        p(&clean_in),
        "--out",
        p(&again),
        "--preset",
        "heavy",
        "--seed",
        "5",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    for name in listing(&out.join("rainy")) {
        assert_eq!(
            std::fs::read(out.join("rainy").join(&name)).unwrap(),
            std::fs::read(again.join("rainy").join(&name)).unwrap()
        );
    }

    // Scoring the clean images against themselves: infinite PSNR, SSIM 1; the rainy input lower.
    let json = tmp.path().join("scores.json");
    let grid = tmp.path().join("grid");
    let o = derain(&[
        "eval",
        "--pred",
        p(&out.join("clean")),
        "--gt",
        p(&out.join("clean")),
        "--input",
        p(&out.join("rainy")),
        "--json",
        p(&json),
        "--grid",
        p(&grid),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    let last = stdout.lines().rfind(|l| !l.trim().is_empty()).unwrap();
    assert!(last.starts_with("mean") && last.contains("inf"), "{stdout}");
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(doc["images"].as_array().unwrap().len(), 3);
    let input_psnr = doc["mean"]["input_psnr_y"].as_f64().unwrap();
    assert!(input_psnr > 5.0 && input_psnr < 40.0, "{input_psnr}");
    assert!((doc["mean"]["ssim_y"].as_f64().unwrap() - 1.0).abs() < 1e-9);
    let g = imageio::load_rgb(&grid.join("scene0.png")).unwrap();
    assert_eq!(g.dimensions(), (3 * 96, 64), "rainy | output | clean");
}

#[test]
fn eval_refuses_unpaired_folders_and_names_the_files() {
    let tmp = tempfile::tempdir().unwrap();
    let a = clean_folder(tmp.path(), 3);
    let b = tmp.path().join("b");
    std::fs::create_dir_all(&b).unwrap();
    for n in ["scene0.png", "scene1.png", "extra.png"] {
        std::fs::copy(a.join("scene0.png"), b.join(n)).unwrap();
    }
    let o = derain(&["eval", "--pred", p(&a), "--gt", p(&b)]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("scene2") && err.contains("extra"), "{err}");

    // Different sizes: an error listing the pair.
    let c = tmp.path().join("c");
    std::fs::create_dir_all(&c).unwrap();
    for n in ["scene0.png", "scene1.png", "scene2.png"] {
        std::fs::copy(a.join(n), c.join(n)).unwrap();
    }
    imageio::save_png_atomic(&RgbImage::new(10, 10), &c.join("scene1.png")).unwrap();
    let o = derain(&["eval", "--pred", p(&a), "--gt", p(&c)]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("scene1") && err.contains("10x10"), "{err}");
}

#[test]
fn eval_never_writes_into_an_input_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let a = clean_folder(tmp.path(), 2);
    let before = listing(&a);
    let o = derain(&[
        "eval",
        "--pred",
        p(&a),
        "--gt",
        p(&a),
        "--grid",
        p(&a.join("grid")),
    ]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("inside the input folder"));
    assert_eq!(listing(&a), before);
    let o = derain(&["synth", "--clean", p(&a), "--out", p(&a.join("x"))]);
    assert!(!o.status.success(), "{}", text(&o));
    assert_eq!(listing(&a), before);
}

#[test]
fn eval_runs_a_model_on_pairs() {
    let tmp = tempfile::tempdir().unwrap();
    let clean_in = clean_folder(tmp.path(), 2);
    let pairs = tmp.path().join("pairs");
    let o = derain(&[
        "synth",
        "--clean",
        p(&clean_in),
        "--out",
        p(&pairs),
        "--preset",
        "light",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let model = tmp.path().join("identity.onnx");
    let o = derain(&[
        "fixture",
        "identity",
        "--out",
        p(&model),
        "--multiple-of",
        "4",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let json = tmp.path().join("m.json");
    let o = derain(&[
        "eval",
        "--model",
        p(&model),
        "--pairs",
        p(&pairs),
        "--provider",
        "cpu",
        "--json",
        p(&json),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    // The identity model's output is its input: both scores agree to the last digit.
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let (out, inp) = (
        doc["mean"]["psnr_y"].as_f64().unwrap(),
        doc["mean"]["input_psnr_y"].as_f64().unwrap(),
    );
    assert!((out - inp).abs() < 1e-9, "{out} vs {inp}");
}

#[test]
fn eval_no_reference_niqe_on_real_rain() {
    let Some(dir) = derain::devdata::shared_path("real-rain/ddn-street") else {
        eprintln!("skipped: ../shared/data/real-rain/ddn-street is absent");
        return;
    };
    if derain::metrics::Niqe::locate(None).is_err() {
        eprintln!("skipped: no NIQE model (modelparameters.mat) found");
        return;
    }
    let o = derain(&["eval", "--pred", p(&dir)]);
    assert!(o.status.success(), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("NIQE"), "{stdout}");
    let last = stdout.lines().rfind(|l| !l.trim().is_empty()).unwrap();
    let v: f64 = last.split_whitespace().last().unwrap().parse().unwrap();
    assert!(v > 1.0 && v < 30.0, "{stdout}");
}

/// `count` frames of rain rendered over the clean scenes, in their own folder.
fn rainy_folder(dir: &Path, clean: &Path, name: &str, preset: derain::synth::Preset) -> PathBuf {
    let d = dir.join(name);
    std::fs::create_dir_all(&d).unwrap();
    for (i, f) in listing(clean).iter().enumerate() {
        let img = imageio::load_rgb(&clean.join(f)).unwrap();
        let rainy = derain::synth::synthesize(&img, preset, 100 + i as u64);
        imageio::save_png_atomic(&rainy, &d.join(f)).unwrap();
    }
    d
}

#[test]
fn rain_score_fit_and_cv_record_their_recipe() {
    use derain::synth::Preset;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let dry = clean_folder(d, 4);
    let val = d.join("val");
    std::fs::create_dir_all(&val).unwrap();
    std::fs::copy(dry.join("scene0.png"), val.join("v.png")).unwrap();
    let heavy = rainy_folder(d, &dry, "heavy", Preset::Heavy);
    let medium = rainy_folder(d, &dry, "medium", Preset::Medium);

    let model = d.join("score.json");
    let o = derain(&[
        "rain-score",
        "fit",
        "--dry",
        p(&dry),
        "--rainy",
        p(&heavy),
        p(&medium),
        "--presets",
        "mixed,driving",
        "--synth-copies",
        "2",
        "--hard-negatives",
        "-o",
        p(&model),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&model).unwrap()).unwrap();
    let fitted = &m["fitted_on"];
    assert_eq!(
        fitted["presets"],
        serde_json::json!(["mixed", "driving"]),
        "{m}"
    );
    assert_eq!(fitted["hard_negatives"], true, "{m}");
    // Each dry frame enters as itself, noisy, half size and as three hard negatives.
    assert_eq!(fitted["frames"]["dry"], 4 * 6, "{m}");
    assert_eq!(fitted["frames"]["synthetic_rain"], 4 * 2, "{m}");
    assert_eq!(fitted["frames"]["real_rain"], 8, "{m}");

    let cv = d.join("cv.json");
    let o = derain(&[
        "rain-score",
        "cv",
        "--dry",
        p(&dry),
        "--rainy",
        p(&heavy),
        p(&medium),
        "--val-dry",
        p(&val),
        "--json",
        p(&cv),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let c: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cv).unwrap()).unwrap();
    let folds = c["folds"].as_array().unwrap();
    // Two real folders held out in turn, then the four kinds of rendered rain.
    assert_eq!(folds.len(), 2 + 4, "{c}");
    assert!(
        folds[0]["held_out"].as_str().unwrap().ends_with("heavy"),
        "{c}"
    );
    for f in folds {
        let auc = f["auc"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&auc), "{c}");
    }
    // Heavy rendered rain over the very scenes is easy to tell from those scenes.
    assert!(folds[0]["auc"].as_f64().unwrap() > 0.9, "{c}");

    let o = derain(&["rain-score", "cv", "--dry", p(&dry), "--val-dry", p(&val)]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("one --rainy path"),
        "{}",
        text(&o)
    );
    let o = derain(&[
        "rain-score",
        "fit",
        "--dry",
        p(&dry),
        "--presets",
        "drizzle",
        "-o",
        p(&model),
    ]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("drizzle"),
        "{}",
        text(&o)
    );
}

#[test]
fn no_streaks_renders_one_effect_alone_and_the_same_bytes_each_time() {
    let tmp = tempfile::tempdir().unwrap();
    let clean_in = clean_folder(tmp.path(), 2);
    let render = |name: &str, extra: &[&str]| -> PathBuf {
        let out = tmp.path().join(name);
        let mut args = vec![
            "synth",
            "--clean",
            p(&clean_in),
            "--out",
            p(&out),
            "--preset",
            "driving",
            "--seed",
            "9",
            "--no-streaks",
        ];
        args.extend_from_slice(extra);
        let o = derain(&args);
        assert!(o.status.success(), "{}", text(&o));
        out
    };
    let differs = |out: &Path| {
        listing(&out.join("rainy")).iter().any(|n| {
            std::fs::read(out.join("rainy").join(n)).unwrap()
                != std::fs::read(out.join("clean").join(n)).unwrap()
        })
    };
    // Nothing on: no rain at all. The veil alone, and the drops alone, each change the frames,
    // and the same seed gives the same bytes.
    let none = render("none", &["--scattering-veil", "0", "--drops", "0"]);
    assert!(
        !differs(&none),
        "--no-streaks with every effect off left rain"
    );
    let veil = render("veil", &["--scattering-veil", "1", "--drops", "0"]);
    let drops = render("drops", &["--drops", "1", "--scattering-veil", "0"]);
    assert!(differs(&veil) && differs(&drops));
    let again = render("veil-again", &["--scattering-veil", "1", "--drops", "0"]);
    for n in listing(&veil.join("rainy")) {
        assert_eq!(
            std::fs::read(veil.join("rainy").join(&n)).unwrap(),
            std::fs::read(again.join("rainy").join(&n)).unwrap()
        );
    }
}
