//! `derain rain-detector`: the learned rain detector (crates/derain-core/src/raindetect.rs): train
//! it (with the `train` feature), measure it as a classifier, print its score per frame.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::rain_score_cmd::frames_of;
use derain::raindetect::RainDetector;
use derain::rainscore::roc_auc;
use derain::runtime::SessionOptions;

#[derive(clap::Subcommand)]
pub enum RainDetectorCmd {
    /// Train a detector (leave-one-source-out to calibrate and report), export it to ONNX.
    Fit(FitArgs),
    /// ROC AUC between dry and rainy frames, and the error rates at the detector's threshold.
    Eval(EvalArgs),
    /// Print the score of every frame.
    Score {
        /// Images, videos, folders of them or .txt lists.
        #[arg(required = true, num_args = 1..)]
        input: Vec<PathBuf>,
        /// A detector file; default: the embedded one.
        #[arg(long)]
        model: Option<PathBuf>,
        #[arg(long, default_value_t = 1)]
        stride: usize,
    },
}

#[derive(clap::Args)]
pub struct FitArgs {
    /// A dry source, `NAME=PATH[,PATH...]` (folders, videos, lists); repeat for each camera.
    #[arg(long, required = true)]
    dry: Vec<String>,
    /// A real-rain source, `NAME=PATH[,PATH...]`; repeat for each.
    #[arg(long, required = true)]
    rainy: Vec<String>,
    /// Dry validation frames never trained on (rain is also rendered over them).
    #[arg(long, required = true, num_args = 1..)]
    val_dry: Vec<PathBuf>,
    /// Run leave-one-source-out first: its held-out scores fit the calibration and threshold,
    /// and its per-source AUCs go into the card.
    #[arg(long)]
    cv: bool,
    #[arg(long, default_value_t = 3000)]
    steps: usize,
    #[arg(long, default_value_t = 32)]
    batch: usize,
    #[arg(long, default_value_t = 2e-3)]
    lr: f64,
    /// Output channels of the stride-2 convolutions.
    #[arg(long, value_delimiter = '-', default_value = "8-16-16-32")]
    channels: Vec<usize>,
    /// Keep every n-th video frame.
    #[arg(long, default_value_t = 5)]
    stride: usize,
    /// At most this many frames per source (evenly spread; 0: all).
    #[arg(long, default_value_t = 150)]
    max_frames: usize,
    /// Rainy copies rendered over each dry frame.
    #[arg(long, default_value_t = 2)]
    rendered_copies: usize,
    /// Copies of each dry frame with scene lines drawn over it (still dry).
    #[arg(long, default_value_t = 1)]
    line_copies: usize,
    /// Share of dry frames the threshold may call rainy.
    #[arg(long, default_value_t = 0.02)]
    max_dry_rainy: f64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Write the cross-validation and validation figures as JSON here.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Output ONNX file (e.g. models/rain-detector.onnx).
    #[arg(long, short)]
    out: PathBuf,
}

#[derive(clap::Args)]
pub struct EvalArgs {
    /// Frames without rain (images, videos, folders, lists); each path is reported on its own.
    #[arg(long, required = true, num_args = 1..)]
    dry: Vec<PathBuf>,
    /// Frames with rain.
    #[arg(long, required = true, num_args = 1..)]
    rainy: Vec<PathBuf>,
    /// A detector file; default: the embedded one.
    #[arg(long)]
    model: Option<PathBuf>,
    #[arg(long, default_value_t = 1)]
    stride: usize,
    /// Write the figures as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

pub fn run(cmd: RainDetectorCmd) -> Result<()> {
    match cmd {
        RainDetectorCmd::Fit(a) => fit(a),
        RainDetectorCmd::Eval(a) => eval(a),
        RainDetectorCmd::Score {
            input,
            model,
            stride,
        } => {
            let mut det = load(model.as_deref())?;
            for path in &input {
                for (i, img) in frames_of(path, stride)?.iter().enumerate() {
                    let s = det.score(&derain::imageio::binned(img))?;
                    println!("{}\t{i}\t{s:.4}", path.display());
                }
            }
            Ok(())
        }
    }
}

/// The detector at `path`, or the embedded one.
pub fn load(path: Option<&Path>) -> Result<RainDetector> {
    derain::runtime::init_ort(None)?;
    let options = SessionOptions::default();
    Ok(match path {
        Some(p) => RainDetector::from_path(p, &options)?,
        None => RainDetector::shipped(&options)?,
    })
}

fn scores(det: &mut RainDetector, paths: &[PathBuf], stride: usize) -> Result<Vec<Vec<f64>>> {
    paths
        .iter()
        .map(|p| {
            frames_of(p, stride)?
                .iter()
                .map(|img| Ok(det.score(&derain::imageio::binned(img))?))
                .collect()
        })
        .collect()
}

fn share_above(v: &[f64], t: f64) -> f64 {
    v.iter().filter(|&&s| s > t).count() as f64 / v.len().max(1) as f64
}

fn eval(a: EvalArgs) -> Result<()> {
    let mut det = load(a.model.as_deref())?;
    let t = det.threshold();
    let dry = scores(&mut det, &a.dry, a.stride)?;
    let rainy = scores(&mut det, &a.rainy, a.stride)?;
    let all_dry: Vec<f64> = dry.iter().flatten().copied().collect();
    let all_rainy: Vec<f64> = rainy.iter().flatten().copied().collect();
    let auc = roc_auc(&all_rainy, &all_dry).unwrap_or(f64::NAN);
    println!("detector {} (threshold {t:.3})", det.origin());
    let mut per = Vec::new();
    for (p, s) in a.dry.iter().zip(&dry) {
        let called = share_above(s, t);
        let auc_vs = roc_auc(&all_rainy, s).unwrap_or(f64::NAN);
        println!(
            "dry   {:<60} {:>4} frames  called rainy {:>5.1}%  AUC vs all rainy {auc_vs:.3}",
            p.display(),
            s.len(),
            100.0 * called
        );
        per.push(
            serde_json::json!({"path": p, "dry": true, "frames": s.len(),
            "called_rainy": called, "auc": auc_vs}),
        );
    }
    for (p, s) in a.rainy.iter().zip(&rainy) {
        let missed = 1.0 - share_above(s, t);
        let auc_vs = roc_auc(s, &all_dry).unwrap_or(f64::NAN);
        println!(
            "rainy {:<60} {:>4} frames  called dry   {:>5.1}%  AUC vs all dry {auc_vs:.3}",
            p.display(),
            s.len(),
            100.0 * missed
        );
        per.push(
            serde_json::json!({"path": p, "dry": false, "frames": s.len(),
            "called_dry": missed, "auc": auc_vs}),
        );
    }
    let dry_called = share_above(&all_dry, t);
    let rainy_missed = 1.0 - share_above(&all_rainy, t);
    println!(
        "all: ROC AUC {auc:.3}; at threshold {t:.3}: {:.1}% of {} dry frames called rainy, \
         {:.1}% of {} rainy frames called dry",
        100.0 * dry_called,
        all_dry.len(),
        100.0 * rainy_missed,
        all_rainy.len()
    );
    if let Some(path) = a.json {
        let json = serde_json::json!({"model": det.origin(), "threshold": t, "auc": auc,
            "dry_called_rainy": dry_called, "rainy_called_dry": rainy_missed, "sets": per});
        std::fs::write(&path, serde_json::to_string_pretty(&json)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

#[cfg(not(feature = "train"))]
fn fit(_: FitArgs) -> Result<()> {
    bail!(
        "training needs the trainer: build with `--features train` (make train-build) and run \
         target/release/derain"
    )
}

#[cfg(feature = "train")]
fn parse_source(spec: &str, rainy: bool) -> Result<derain::train::raindet::SourceSpec> {
    let Some((name, paths)) = spec.split_once('=') else {
        bail!("source '{spec}': expected NAME=PATH[,PATH...]");
    };
    let paths: Vec<PathBuf> = paths.split(',').map(PathBuf::from).collect();
    for p in &paths {
        if !p.exists() {
            bail!("source '{name}': {} does not exist", p.display());
        }
    }
    Ok(derain::train::raindet::SourceSpec {
        name: name.to_owned(),
        rainy,
        paths,
    })
}

#[cfg(feature = "train")]
fn fit(a: FitArgs) -> Result<()> {
    use derain::ModelCard;
    use derain::train::raindet::{self as rd, FitOptions, LoadOptions, Sample};

    let started = std::time::Instant::now();
    let specs: Vec<rd::SourceSpec> = a
        .dry
        .iter()
        .map(|s| parse_source(s, false))
        .chain(a.rainy.iter().map(|s| parse_source(s, true)))
        .collect::<Result<_>>()?;
    let load = LoadOptions {
        stride: a.stride,
        max_frames: a.max_frames,
        rendered_copies: a.rendered_copies,
        line_copies: a.line_copies,
        seed: a.seed,
    };
    let sources = rd::load_sources(&specs, &load)?;
    // Validation: the dry frames, and rain of every preset rendered over them.
    let val_imgs = rd::read_frames(&a.val_dry, 1)?;
    if val_imgs.is_empty() {
        bail!("--val-dry holds no readable frame");
    }
    let val_dry: Vec<Sample> = val_imgs.iter().map(Sample::from_image).collect();
    let val_rainy: Vec<Sample> = val_imgs
        .iter()
        .enumerate()
        .map(|(i, img)| {
            let preset = rd::RENDER_PRESETS[i % rd::RENDER_PRESETS.len()];
            Sample::from_image(&derain::synth::synthesize(img, preset, 7000 + i as u64))
        })
        .collect();
    let options = FitOptions {
        config: derain::onnx::RainDetectorConfig {
            channels: a.channels.clone(),
        },
        steps: a.steps,
        batch: a.batch,
        lr: a.lr,
        seed: a.seed,
        ..FitOptions::default()
    };
    let (folds, held) = if a.cv {
        rd::cross_validate(&sources, &val_dry, &val_rainy, &options)?
    } else {
        (Vec::new(), Vec::new())
    };
    let all: Vec<&rd::Source> = sources.iter().collect();
    let (net, loss) = rd::fit(&all, &options)?;
    let val_logits: Vec<(f64, bool)> = val_dry
        .iter()
        .map(|s| (net.logit(s), false))
        .chain(val_rainy.iter().map(|s| (net.logit(s), true)))
        .collect();
    // Calibrate on what no net saw: the held-out folds when there are any, else validation.
    let calib_set = if held.is_empty() { &val_logits } else { &held };
    let calibration = rd::platt(calib_set);
    let dry_probs: Vec<f64> = calib_set
        .iter()
        .chain(&val_logits)
        .filter(|(_, y)| !y)
        .map(|&(z, _)| rd::calibrated(z, calibration))
        .collect();
    let threshold = rd::threshold_for(&dry_probs, a.max_dry_rainy);
    let p = |v: &[Sample]| -> Vec<f64> {
        v.iter()
            .map(|s| rd::calibrated(net.logit(s), calibration))
            .collect()
    };
    let (vd, vr) = (p(&val_dry), p(&val_rainy));
    let val_auc = roc_auc(&vr, &vd).unwrap_or(f64::NAN);
    let finite: Vec<f64> = folds
        .iter()
        .map(|f| f.auc)
        .filter(|v| v.is_finite())
        .collect();
    let (cv_mean, cv_worst) = if finite.is_empty() {
        (f64::NAN, f64::NAN)
    } else {
        (
            finite.iter().sum::<f64>() / finite.len() as f64,
            finite.iter().copied().fold(f64::INFINITY, f64::min),
        )
    };
    for f in &folds {
        println!(
            "held out {:<24} ({}) {:>4} frames  AUC {:.3}",
            f.held_out,
            if f.rainy { "rain" } else { "dry " },
            f.frames,
            f.auc
        );
    }
    if !folds.is_empty() {
        println!("leave-one-source-out AUC: mean {cv_mean:.3}, worst {cv_worst:.3}");
    }
    println!(
        "validation ({} dry, {} rendered rain): AUC {val_auc:.3}; threshold {threshold:.3}: \
         {:.1}% dry called rainy, {:.1}% rain called dry; calibration a={:.3} b={:.3}; \
         train loss {loss:.4}; {:.0} s",
        vd.len(),
        vr.len(),
        100.0 * share_above(&vd, threshold),
        100.0 * (1.0 - share_above(&vr, threshold)),
        calibration.0,
        calibration.1,
        started.elapsed().as_secs_f64()
    );
    let mut card = ModelCard::new("rain-detector");
    card.licence = "MIT (weights trained by this project; see the data's own terms)".into();
    card.training = serde_json::json!({
        "dry": a.dry, "rainy": a.rainy, "val_dry": a.val_dry,
        "rendered_copies": a.rendered_copies, "rendered_presets":
            rd::RENDER_PRESETS.iter().map(|p| p.name()).collect::<Vec<_>>(),
        "line_copies": a.line_copies, "stride": a.stride, "max_frames": a.max_frames,
        "steps": a.steps, "batch": a.batch, "lr": a.lr, "seed": a.seed,
        "crop_heights": options.crop, "loss": "binary cross-entropy",
        "device": "cpu", "wall_seconds": started.elapsed().as_secs_f64().round(),
        "calibrated_on": if held.is_empty() { "validation" } else { "leave-one-source-out held-out scores" },
    });
    card.scores = serde_json::json!({
        "leave_one_source_out": folds, "loso_mean_auc": cv_mean, "loso_worst_auc": cv_worst,
        "validation_auc": val_auc,
        "validation_dry_called_rainy": share_above(&vd, threshold),
        "validation_rain_called_dry": 1.0 - share_above(&vr, threshold),
    });
    let bytes = rd::export(&net, calibration, card.clone(), threshold)?;
    derain::imageio::write_file_atomic(&a.out, &bytes)
        .with_context(|| format!("writing {}", a.out.display()))?;
    println!("wrote {}", a.out.display());
    if let Some(path) = a.report {
        std::fs::write(&path, serde_json::to_string_pretty(&card.scores)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
