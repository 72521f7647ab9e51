//! The training run behind `derain train`: files it writes, resume, refusing to overwrite a
//! run, config errors, and export + `derain info` from the command line.
#![cfg(feature = "train")]

use std::path::Path;
use std::process::Command;

use derain::imageio::{self, RgbImage};
use derain::train::run::{self, CHECKPOINT_FILE, LOG_FILE, RunConfig, RunError};

/// A folder of small clean "scenes" and a validation folder of pairs.
fn data(dir: &Path) {
    let clean = dir.join("clean");
    std::fs::create_dir_all(&clean).unwrap();
    for i in 0..4u32 {
        let img = RgbImage::from_fn(80, 72, |x, y| {
            let edge = if (x / 12 + y / 12 + i) % 2 == 0 {
                50
            } else {
                0
            };
            image::Rgb([(x * 2) as u8 + edge, (y * 3) as u8, (60 + i * 30) as u8])
        });
        imageio::save_png_atomic(&img, &clean.join(format!("s{i}.png"))).unwrap();
    }
    for sub in ["rainy", "clean"] {
        let d = dir.join("val").join(sub);
        std::fs::create_dir_all(&d).unwrap();
        let v = if sub == "rainy" { 40 } else { 0 };
        let img = RgbImage::from_fn(36, 28, |x, y| {
            image::Rgb([(x * 5) as u8 + v, (y * 6) as u8, 90])
        });
        imageio::save_png_atomic(&img, &d.join("v0.png")).unwrap();
    }
}

const CONFIG: &str = r#"
[train]
stage = "pretrain"
batch = 2
crop = 32
seed = 3
generator = { arch = "lite", channels = 8, blocks = 1 }

[data]
clean = ["clean"]
preset = "heavy"
validation = "val"

[run]
steps = 4
checkpoint_every = 2
validate_every = 2
name = "tiny"
"#;

#[test]
fn a_run_writes_its_files_resumes_and_exports() {
    let tmp = tempfile::tempdir().unwrap();
    data(tmp.path());
    let cfg = RunConfig::parse(CONFIG, "test", Some(tmp.path()), &[]).unwrap();
    let dir = tmp.path().join("run");
    let s = run::run(&cfg, &dir, false).unwrap();
    assert_eq!(s.steps, 4);
    let v = s.validation.expect("validation ran");
    assert!(v.psnr_y.is_finite() && v.input_psnr_y.is_finite());
    for f in [
        CHECKPOINT_FILE,
        LOG_FILE,
        "config.toml",
        "losses.png",
        "validation.jsonl",
    ] {
        assert!(dir.join(f).is_file(), "{f} missing");
    }
    assert!(dir.join("samples/step-0000004.png").is_file());
    let log = std::fs::read_to_string(dir.join(LOG_FILE)).unwrap();
    assert_eq!(log.lines().count(), 4);

    // Starting again over the same run is refused; resuming with more steps continues it.
    assert!(matches!(
        run::run(&cfg, &dir, false),
        Err(RunError::RunExists(_))
    ));
    let more = RunConfig::parse(CONFIG, "test", Some(tmp.path()), &["run.steps=6".into()]).unwrap();
    // A line past the checkpoint (as a kill between checkpoint and log would leave) is dropped.
    std::fs::write(
        dir.join(LOG_FILE),
        format!("{log}{{\"step\": 99}}\n{{\"step\": 5, \"half"),
    )
    .unwrap();
    assert_eq!(run::run(&more, &dir, true).unwrap().steps, 6);
    let log = std::fs::read_to_string(dir.join(LOG_FILE)).unwrap();
    let steps: Vec<u64> = log
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["step"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(steps, [1, 2, 3, 4, 5, 6]);

    // Export through the command line, then read the card back.
    let exe = env!("CARGO_BIN_EXE_derain");
    let onnx = tmp.path().join("tiny.onnx");
    let o = Command::new(exe)
        .args([
            "export",
            dir.to_str().unwrap(),
            "--out",
            onnx.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = Command::new(exe)
        .args(["info", onnx.to_str().unwrap()])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && out.contains("tiny") && out.contains("\"steps\": 6"),
        "{out}"
    );
    let model = derain::model::Model::from_path(&onnx).unwrap();
    assert!(model.card().scores["validation"]["psnr_y"].is_number());
    assert!(out.contains("precision:    fp32"), "{out}");

    // --fp16: a float16 model with the same contract, and `derain info` says so.
    let half = tmp.path().join("tiny-fp16.onnx");
    let o = Command::new(exe)
        .args(["export", dir.to_str().unwrap(), "--fp16", "--out"])
        .arg(&half)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = Command::new(exe).arg("info").arg(&half).output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && out.contains("precision:    fp16"),
        "{out}"
    );
    let model16 = derain::model::Model::from_path(&half).expect("fp16 export honours the contract");
    assert_eq!(model16.card().precision, derain::card::Precision::Fp16);
    assert_eq!(model16.card().parameters, model.card().parameters);
    assert!(model16.bytes().len() < model.bytes().len());

    // --card: additions merged into the card; a malformed one is refused and writes nothing.
    let extra = tmp.path().join("card.json");
    std::fs::write(
        &extra,
        r#"{"training": {"wall_time_s": 12.5, "command": "derain train ..."},
            "scores": {"rain12": {"psnr_y": 31.0}}, "licence": "MIT"}"#,
    )
    .unwrap();
    let carded = tmp.path().join("tiny-card.onnx");
    let o = Command::new(exe)
        .args(["export", dir.to_str().unwrap(), "--card"])
        .arg(&extra)
        .arg("--out")
        .arg(&carded)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let card = derain::model::Model::from_path(&carded)
        .unwrap()
        .card()
        .clone();
    assert_eq!(card.training["wall_time_s"], 12.5);
    assert_eq!(card.training["steps"], 6, "the trainer's own fields stay");
    assert_eq!(card.scores["rain12"]["psnr_y"], 31.0);
    assert!(card.scores["validation"]["psnr_y"].is_number());
    assert_eq!(card.licence, "MIT");
    std::fs::write(&extra, r#"{"steps": 7}"#).unwrap();
    let refused = tmp.path().join("refused.onnx");
    let o = Command::new(exe)
        .args(["export", dir.to_str().unwrap(), "--card"])
        .arg(&extra)
        .arg("--out")
        .arg(&refused)
        .output()
        .unwrap();
    assert!(!o.status.success() && !refused.exists());
    assert!(String::from_utf8_lossy(&o.stderr).contains("`steps`"));
}

/// A stage-2 run started from an exported generator (`run.init` naming an `.onnx` file), with
/// stage 1's terms on synthetic pairs and a generator warm-up: it runs, logs the synthetic terms
/// next to ANLCL's, and its first validation (during the warm-up) scores the imported G_B.
#[test]
fn stage2_starts_from_an_exported_model() {
    let tmp = tempfile::tempdir().unwrap();
    data(tmp.path());
    let rainy = tmp.path().join("rainy");
    std::fs::create_dir_all(&rainy).unwrap();
    for i in 0..2u32 {
        let img = RgbImage::from_fn(80, 72, |x, y| {
            let streak = if (x + 2 * y + i) % 9 == 0 { 100 } else { 0 };
            let v = |base: u32| (base + streak).min(255) as u8;
            image::Rgb([v(x * 2), v(y * 2), v(70)])
        });
        imageio::save_png_atomic(&img, &rainy.join(format!("r{i}.png"))).unwrap();
    }
    let cfg = RunConfig::parse(CONFIG, "test", Some(tmp.path()), &[]).unwrap();
    let stage1 = tmp.path().join("stage1");
    run::run(&cfg, &stage1, false).unwrap();
    let exe = env!("CARGO_BIN_EXE_derain");
    let onnx = tmp.path().join("stage1.onnx");
    let o = Command::new(exe)
        .args(["export", stage1.to_str().unwrap(), "--out"])
        .arg(&onnx)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stage1_score = derain::model::Model::from_path(&onnx)
        .unwrap()
        .card()
        .scores["validation"]["psnr_y"]
        .as_f64()
        .unwrap();

    let sets = [
        "train.stage=\"anlcl\"".to_string(),
        "data.rainy=[\"rainy\"]".into(),
        "train.sampler.anchors_per_image=2".into(),
        "train.sampler.rain_negatives=16".into(),
        "train.sampler.location_negatives=16".into(),
        "train.sampler.patch=8".into(),
        "train.sampler.window=8".into(),
        "train.loss.synthetic=2.0".into(),
        "train.optimiser.generator_warmup=2".into(),
        "run.steps=3".into(),
        "run.validate_every=2".into(),
        format!("run.init=\"{}\"", onnx.display()),
    ];
    // `data.rainy_downscale` applies to the rainy footage alone: at 4× its 80×72 frames are
    // below the 32-pixel crop, while the clean footage, at `downscale` 1, still loads.
    let mut shrunk = sets.to_vec();
    shrunk.push("data.rainy_downscale=4".into());
    let cfg_small = RunConfig::parse(CONFIG, "test", Some(tmp.path()), &shrunk).unwrap();
    let e = run::run(&cfg_small, &tmp.path().join("small"), false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("rainy footage"), "{e}");

    let cfg2 = RunConfig::parse(CONFIG, "test", Some(tmp.path()), &sets).unwrap();
    let dir = tmp.path().join("stage2");
    let s = run::run(&cfg2, &dir, false).unwrap();
    assert_eq!(s.steps, 3);
    let log = std::fs::read_to_string(dir.join(LOG_FILE)).unwrap();
    for line in log.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["stage"], "anlcl");
        assert!(v["loss"]["supervised_clean"].is_number(), "{line}");
        assert!(v["loss"]["layer_contrastive"].is_number(), "{line}");
    }
    let first: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(dir.join("validation.jsonl"))
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(first["step"], 2);
    let held = first["psnr_y"].as_f64().unwrap();
    assert!(
        (held - stage1_score).abs() < 1e-3,
        "during the warm-up G_B is the imported one: {held} vs {stage1_score}"
    );
}

#[test]
fn config_errors_name_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let e = RunConfig::parse(
        &format!("{CONFIG}\n[extra]\nx = 1\n"),
        "t.toml",
        Some(tmp.path()),
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("extra"), "{e}");
    let e = RunConfig::parse(CONFIG, "t.toml", None, &["data.downscale=0".into()])
        .unwrap_err()
        .to_string();
    assert!(e.contains("downscale"), "{e}");
    let e = RunConfig::parse(CONFIG, "t.toml", None, &["data.rainy_downscale=0".into()])
        .unwrap_err()
        .to_string();
    assert!(e.contains("data.rainy_downscale"), "{e}");
    let e = RunConfig::parse(
        CONFIG,
        "t.toml",
        None,
        &["train.generator={arch=\"lite\",context=7}".into()],
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("generator.context"), "{e}");
    for bad in ["[1]", "[2, 20]"] {
        let e = RunConfig::parse(
            CONFIG,
            "t.toml",
            None,
            &[format!("data.extra_downscales={bad}")],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("data.extra_downscales"), "{bad}: {e}");
    }
    let e = RunConfig::parse(CONFIG, "t.toml", None, &["train.batch=0".into()])
        .unwrap_err()
        .to_string();
    assert!(e.contains("batch"), "{e}");
    let e = RunConfig::parse(CONFIG, "t.toml", None, &["run.stepz=3".into()])
        .unwrap_err()
        .to_string();
    assert!(e.contains("stepz"), "{e}");
}

/// `data.extra_downscales` puts every clean frame in the pool smaller too (the batches change),
/// leaves out a scale at which no frame holds the crop (80×72 at 4× is below 32 px), and a lite
/// network with context blocks trains and exports through the same run.
#[test]
fn extra_downscales_and_context_blocks_train() {
    let tmp = tempfile::tempdir().unwrap();
    data(tmp.path());
    let base = [
        "run.steps=2".to_string(),
        "train.generator={arch=\"lite\",channels=8,blocks=1,context=2}".into(),
    ];
    let loss = |extra: &str, name: &str| {
        let mut sets = base.to_vec();
        sets.push(format!("data.extra_downscales={extra}"));
        let cfg = RunConfig::parse(CONFIG, "test", Some(tmp.path()), &sets).unwrap();
        let s = run::run(&cfg, &tmp.path().join(name), false).unwrap();
        assert_eq!(s.steps, 2);
        s.last_loss.unwrap()
    };
    let one = loss("[]", "one");
    let more = loss("[2, 4]", "more");
    assert_ne!(one, more, "the 2x frames enter the batches");
    assert_eq!(more, loss("[2]", "two"), "the 4x scale holds no 32 px crop");
    let onnx = tmp.path().join("ctx.onnx");
    let status = Command::new(env!("CARGO_BIN_EXE_derain"))
        .args(["export", "--out"])
        .arg(&onnx)
        .arg(tmp.path().join("more"))
        .status()
        .unwrap();
    assert!(status.success());
    let card = derain::model::Model::from_path(&onnx)
        .unwrap()
        .card()
        .clone();
    assert_eq!(
        card.architecture,
        "lite(factor=4, channels=8, blocks=1, context=2)"
    );
}

#[test]
fn resume_without_a_checkpoint_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    data(tmp.path());
    let cfg = RunConfig::parse(CONFIG, "test", Some(tmp.path()), &[]).unwrap();
    assert!(matches!(
        run::run(&cfg, &tmp.path().join("none"), true),
        Err(RunError::NothingToResume(_))
    ));
}

/// Clean footage that is not there fails at once, by its path: `--clean` before the config is
/// read, the config's `data.clean` before the run folder or any network is made.
#[test]
fn missing_clean_footage_is_an_error_naming_the_path() {
    let tmp = tempfile::tempdir().unwrap();
    // No data(): the config's `clean` folder does not exist.
    let config = tmp.path().join("tiny.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let exe = env!("CARGO_BIN_EXE_derain");
    let out = tmp.path().join("run");
    let train = |extra: &[&str]| {
        let o = Command::new(exe)
            .args(["train", "--config", config.to_str().unwrap()])
            .args(["--out", out.to_str().unwrap()])
            .args(extra)
            .output()
            .unwrap();
        assert!(
            !o.status.success(),
            "a run without its clean footage succeeded"
        );
        String::from_utf8_lossy(&o.stderr).into_owned()
    };

    let nope = tmp.path().join("nope");
    let e = train(&["--clean", nope.to_str().unwrap()]);
    assert!(
        e.contains("--clean") && e.contains(&nope.display().to_string()),
        "{e}"
    );
    assert!(!out.exists(), "the run folder was made");

    let missing = tmp.path().join("clean");
    let e = train(&[]);
    assert!(
        e.contains("data.clean") && e.contains(&missing.display().to_string()),
        "{e}"
    );
    assert!(!e.contains("panicked"), "{e}");
    assert!(!out.exists(), "the run folder was made");

    // The library says the same, by key and path.
    let cfg = RunConfig::parse(CONFIG, "test", Some(tmp.path()), &[]).unwrap();
    match run::run(&cfg, &out, false) {
        Err(RunError::MissingData { key, path }) => {
            assert_eq!((key, path.as_path()), ("data.clean", missing.as_path()));
        }
        other => panic!("{:?}", other.map(|s| s.steps)),
    }
    assert!(!out.exists(), "the run folder was made");
}

#[test]
fn shipped_configs_parse() {
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/configs"));
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "toml") {
            RunConfig::load(&p, &[]).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            n += 1;
        }
    }
    assert!(n >= 4, "{n} configs");
}

/// The unpaired one-domain configs (configs/camvid-*.toml): each runs a few steps on tiny crops
/// of stand-in frames and writes its validation line; stage 1 of run (b) feeds stage 2 through
/// `run.init`; a rainy set with its clean partners beside it is refused.
#[test]
fn the_unpaired_camvid_configs_run_and_refuse_paired_rain() {
    let tmp = tempfile::tempdir().unwrap();
    data(tmp.path());
    // Rain without its clean partners (as `derain synth --rainy-only` writes it).
    let rainy = tmp.path().join("unpaired").join("rainy");
    std::fs::create_dir_all(&rainy).unwrap();
    for i in 0..3u32 {
        let img = RgbImage::from_fn(72, 64, |x, y| {
            let streak = if (x + 2 * y + i) % 9 == 0 { 120 } else { 0 };
            let v = |base: u32| (base + streak).min(255) as u8;
            image::Rgb([v(x * 3), v(y * 2), v(70)])
        });
        imageio::save_png_atomic(&img, &rainy.join(format!("r{i}.png"))).unwrap();
    }
    let configs = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
    let tiny = |extra: &[String]| {
        let mut sets: Vec<String> = [
            "train.batch=2",
            "train.crop=32",
            "train.generator={ arch = \"lite\", channels = 8, blocks = 1 }",
            "train.sampler.anchors_per_image=2",
            "train.sampler.rain_negatives=16",
            "train.sampler.location_negatives=16",
            "train.sampler.patch=8",
            "train.sampler.window=8",
            "train.optimiser.discriminator_warmup=0",
            "run.steps=2",
            "run.validate_every=2",
            "run.checkpoint_every=1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for (key, path) in [
            ("data.clean", tmp.path().join("clean")),
            ("data.rainy", rainy.clone()),
        ] {
            sets.push(format!("{key}=[{:?}]", path.display().to_string()));
        }
        let val = tmp.path().join("val");
        sets.push(format!("data.validation={:?}", val.display().to_string()));
        sets.extend(extra.iter().cloned());
        sets
    };
    let run_config = |name: &str, extra: &[String], out: &str| {
        let path = configs.join(name);
        let text = std::fs::read_to_string(&path).unwrap();
        let cfg = RunConfig::parse(&text, name, Some(&configs), &tiny(extra)).unwrap();
        let dir = tmp.path().join(out);
        let s = run::run(&cfg, &dir, false).unwrap();
        assert_eq!(s.steps, 2, "{name}");
        let lines = std::fs::read_to_string(dir.join("validation.jsonl")).unwrap();
        let v: serde_json::Value = serde_json::from_str(lines.lines().last().unwrap()).unwrap();
        assert!(v["psnr_y"].as_f64().unwrap().is_finite(), "{name}: {v}");
        dir
    };
    run_config("camvid-anlcl.toml", &[], "a");
    let b1 = run_config("camvid-streaks-stage1.toml", &[], "b1");
    let init = format!(
        "run.init={:?}",
        b1.join(CHECKPOINT_FILE).display().to_string()
    );
    run_config("camvid-adapt.toml", std::slice::from_ref(&init), "b2");

    // The validation pairs' rainy folder has its clean partners beside it: refused, named.
    let paired = format!(
        "data.rainy=[{:?}]",
        tmp.path().join("val").join("rainy").display().to_string()
    );
    let text = std::fs::read_to_string(configs.join("camvid-anlcl.toml")).unwrap();
    let cfg = RunConfig::parse(&text, "a", Some(&configs), &tiny(&[paired])).unwrap();
    let e = run::run(&cfg, &tmp.path().join("refused"), false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("clean partners"), "{e}");
}

#[test]
fn probe_terms_refuses_what_it_cannot_weigh() {
    let tmp = tempfile::tempdir().unwrap();
    data(tmp.path());
    let cfg = RunConfig::parse(CONFIG, "test", Some(tmp.path()), &["run.steps=2".into()]).unwrap();
    let dir = tmp.path().join("run");
    run::run(&cfg, &dir, false).unwrap();
    let ckpt = dir.join(CHECKPOINT_FILE);
    let truth = tmp.path().join("val");
    let message = |r: Result<Vec<derain::train::TermAlignment>, RunError>| match r {
        Ok(_) => panic!("probe-terms accepted a bad input"),
        Err(e) => e.to_string(),
    };
    // Stage 1 has no unpaired terms.
    let e = message(run::probe_terms(&cfg, &ckpt, &truth, 2));
    assert!(e.contains("anlcl"), "{e}");
    // Stage 2, rainy frames in their own folder (no clean partners beside them).
    let rain = tmp.path().join("rain");
    std::fs::create_dir_all(&rain).unwrap();
    std::fs::copy(truth.join("rainy/v0.png"), rain.join("r0.png")).unwrap();
    let stage2 = RunConfig::parse(
        CONFIG,
        "test",
        Some(tmp.path()),
        &[
            "train.stage=\"anlcl\"".into(),
            "data.rainy=[\"rain\"]".into(),
        ],
    )
    .unwrap();
    let e = message(run::probe_terms(&stage2, &ckpt, &truth, 0));
    assert!(e.contains("--batches"), "{e}");
    // The 36x28 truth pair holds no 32 px crop.
    let e = message(run::probe_terms(&stage2, &ckpt, &truth, 1));
    assert!(e.contains("no pair holds a 32px crop"), "{e}");
    // A truth folder that is not there is named.
    let e = message(run::probe_terms(
        &stage2,
        &ckpt,
        &tmp.path().join("nope"),
        1,
    ));
    assert!(e.contains("nope"), "{e}");
}
