//! `derain rain-score`: the per-frame rain score (crates/derain-core/src/rainscore.rs) on folders
//! and videos: fit its weights, measure how well it tells dry from rainy frames, or print it per
//! frame.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use derain::footage::{Footage, FootageOptions};
use derain::imageio::{self, RgbImage};
use derain::rainscore::{self, Features, RainScoreModel};
use derain::synth::{Effects, Preset, RainParams, RainRenderer};

#[derive(clap::Subcommand)]
pub enum RainScoreCmd {
    /// Fit the score's weights: dry footage, rainy footage, and rain rendered over the dry.
    Fit(FitArgs),
    /// Cross-validate a fitting recipe, one real rain source held out at a time.
    Cv(CvArgs),
    /// ROC AUC between dry and rainy frames, and the error rates at the model's threshold.
    Eval(EvalArgs),
    /// Print the score of every frame.
    Score {
        /// Images, videos, folders of them or .txt lists.
        #[arg(required = true, num_args = 1..)]
        input: Vec<PathBuf>,
        /// A fitted model (JSON); default: the shipped one.
        #[arg(long)]
        model: Option<PathBuf>,
        #[arg(long, default_value_t = 1)]
        stride: usize,
        /// Also print each frame's features (tab-separated, in the model's order).
        #[arg(long)]
        features: bool,
    },
}

/// What the score is fitted on: the frames and how they are varied (shared by `fit` and `cv`).
#[derive(clap::Args)]
pub struct RecipeArgs {
    /// Frames without rain.
    #[arg(long, required = true, num_args = 1..)]
    dry: Vec<PathBuf>,
    /// Frames with real rain (each path a group of its own for `cv`).
    #[arg(long, num_args = 1..)]
    rainy: Vec<PathBuf>,
    /// Rainy copies rendered over each dry frame (seeded), taking the presets in turn.
    #[arg(long, default_value_t = 3)]
    synth_copies: usize,
    /// Presets of the rendered rain, used in turn (e.g. `mixed,driving` for veil and drops).
    #[arg(long, value_delimiter = ',', default_value = "mixed")]
    presets: Vec<Preset>,
    /// Add dry hard negatives: each dry frame also enters 4x downscaled (dense texture),
    /// turned by 90 degrees (its horizontal structure stands up like rain) and with thin scene
    /// lines drawn over it.
    #[arg(long)]
    hard_negatives: bool,
    /// Keep every n-th video frame.
    #[arg(long, default_value_t = 5)]
    stride: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

#[derive(clap::Args)]
pub struct FitArgs {
    #[command(flatten)]
    recipe: RecipeArgs,
    /// Held-out dry frames to choose the threshold on (with --val-rainy); default: the
    /// fitting set.
    #[arg(long, num_args = 1.., requires = "val_rainy")]
    val_dry: Vec<PathBuf>,
    /// Held-out rainy frames to choose the threshold on.
    #[arg(long, num_args = 1.., requires = "val_dry")]
    val_rainy: Vec<PathBuf>,
    /// Output JSON (e.g. models/rain-score.json).
    #[arg(long, short)]
    out: PathBuf,
}

/// Leave-one-rain-source-out cross-validation of a recipe: for each real rainy path, fit on
/// the others and score the held-out one against held-out dry frames; one more fold holds out
/// nothing real and scores rain rendered over the held-out dry frames.
#[derive(clap::Args)]
pub struct CvArgs {
    #[command(flatten)]
    recipe: RecipeArgs,
    /// Held-out dry frames every fold is scored against. Whatever the recipe, each also enters
    /// at half size, noisy, and as its three hard negatives (quarter size, turned, with lines).
    #[arg(long, required = true, num_args = 1..)]
    val_dry: Vec<PathBuf>,
    /// Write the per-fold figures as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct EvalArgs {
    /// Frames without rain (images, videos, folders, lists).
    #[arg(long, required = true, num_args = 1..)]
    dry: Vec<PathBuf>,
    /// Frames with rain.
    #[arg(long, required = true, num_args = 1..)]
    rainy: Vec<PathBuf>,
    /// A fitted model (JSON); default: the shipped one.
    #[arg(long)]
    model: Option<PathBuf>,
    #[arg(long, default_value_t = 1)]
    stride: usize,
    /// Write the per-folder figures as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// Every frame of `paths` (each path on its own, so results can be told per folder).
pub fn frames_of(path: &Path, stride: usize) -> Result<Vec<RgbImage>> {
    let options = FootageOptions {
        stride,
        ..FootageOptions::default()
    };
    let mut footage = Footage::open(&[path.to_owned()], options)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let mut out = Vec::new();
    for f in footage.by_ref() {
        out.push(f?.image);
    }
    if out.is_empty() {
        bail!("{} holds no frame", path.display());
    }
    Ok(out)
}

fn load_model(path: Option<&Path>) -> Result<RainScoreModel> {
    Ok(match path {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read {}", p.display()))?;
            RainScoreModel::from_json(&text).with_context(|| p.display().to_string())?
        }
        None => RainScoreModel::shipped()?,
    })
}

fn feats(img: &RgbImage) -> Features {
    rainscore::features(&derain::imageio::binned(img))
}

pub fn run(cmd: RainScoreCmd) -> Result<()> {
    match cmd {
        RainScoreCmd::Fit(a) => fit(a),
        RainScoreCmd::Eval(a) => eval(a),
        RainScoreCmd::Cv(a) => cv(a),
        RainScoreCmd::Score {
            input,
            model,
            stride,
            features,
        } => {
            let m = load_model(model.as_deref())?;
            for p in &input {
                let options = FootageOptions {
                    stride,
                    ..FootageOptions::default()
                };
                let mut footage = Footage::open(std::slice::from_ref(p), options)?;
                for f in footage.by_ref() {
                    let f = f?;
                    let fs = feats(&f.image);
                    let s = m.score_features(&fs);
                    let verdict = if s > m.threshold { "rain" } else { "dry" };
                    print!("{}#{}\t{s:.4}\t{verdict}", f.source.display(), f.index);
                    if features {
                        for v in fs.as_array() {
                            print!("\t{v:.4}");
                        }
                    }
                    println!();
                }
            }
            Ok(())
        }
    }
}

/// One fitting frame's features, its label and its group: 0 for the dry frames and the rain
/// rendered over them, k + 1 for the frames of real rainy path k.
struct Sample {
    f: Features,
    rainy: bool,
    group: usize,
}

/// `img` downscaled `k` times (Triangle filter, at least 1x1).
fn downscaled(img: &RgbImage, k: u32) -> RgbImage {
    image::imageops::resize(
        img,
        (img.width() / k).max(1),
        (img.height() / k).max(1),
        image::imageops::FilterType::Triangle,
    )
}

/// The dry hard negatives of a frame: 4x downscaled (the scene's texture packed densely, as
/// foliage close up is), turned by 90 degrees (horizontal edges, lane lines and the horizon
/// stand up like streaks) and with thin scene lines drawn over it.
fn hard_negatives(img: &RgbImage, seed: u64) -> [RgbImage; 3] {
    let turned = image::imageops::rotate90(img);
    let mut lined = img.clone();
    derain::synth::LinePattern::random(seed, img.width(), img.height()).paint(&mut lined);
    [downscaled(img, 4), turned, lined]
}

/// Rain rendered over `base` with `preset` for `seed`.
fn rendered(base: &RgbImage, preset: Preset, seed: u64) -> Result<RgbImage> {
    let r = RainRenderer::new(preset.params(seed), seed, base.width(), base.height());
    Ok(r.render(base, 0)?)
}

/// Counts of what a recipe produced, by kind.
#[derive(Default)]
struct Counts {
    dry: usize,
    synth: usize,
    real: usize,
}

/// The features of every fitting frame of a recipe.
fn recipe_samples(a: &RecipeArgs) -> Result<(Vec<Sample>, Counts)> {
    if a.presets.is_empty() && a.synth_copies > 0 {
        bail!(
            "--presets is empty but --synth-copies is {}",
            a.synth_copies
        );
    }
    let mut samples = Vec::new();
    let mut n = Counts::default();
    let mut copy = 0u64;
    for p in &a.dry {
        for img in frames_of(p, a.stride)? {
            // What a camera does to a dry frame is no rain: sensor noise and another scale
            // (each dry frame also enters noisy and 2x downscaled).
            let seed = a.seed.wrapping_mul(1_000_003).wrapping_add(copy);
            let noisy = add_noise(&img, 0.004 + 0.02 * unit(seed), seed);
            let half = downscaled(&img, 2);
            let mut dry = vec![img.clone(), noisy, half.clone()];
            if a.hard_negatives {
                dry.extend(hard_negatives(&img, seed));
            }
            for d in &dry {
                samples.push(Sample {
                    f: feats(d),
                    rainy: false,
                    group: 0,
                });
                n.dry += 1;
            }
            for k in 0..a.synth_copies {
                let seed = a.seed.wrapping_mul(1_000_003).wrapping_add(copy);
                copy += 1;
                let base = if k % 2 == 1 { &half } else { &img };
                let mut rainy = rendered(base, a.presets[k % a.presets.len()], seed)?;
                if k % 3 == 2 {
                    rainy = add_noise(&rainy, 0.004 + 0.02 * unit(seed ^ 7), seed);
                }
                samples.push(Sample {
                    f: feats(&rainy),
                    rainy: true,
                    group: 0,
                });
                n.synth += 1;
            }
        }
    }
    for (k, p) in a.rainy.iter().enumerate() {
        for img in frames_of(p, a.stride)? {
            samples.push(Sample {
                f: feats(&img),
                rainy: true,
                group: k + 1,
            });
            n.real += 1;
        }
    }
    Ok((samples, n))
}

fn labelled(s: &[Sample]) -> Vec<(Features, bool)> {
    s.iter().map(|x| (x.f, x.rainy)).collect()
}

fn fit(a: FitArgs) -> Result<()> {
    let (samples, counts) = recipe_samples(&a.recipe)?;
    let samples = labelled(&samples);
    let Counts {
        dry: n_dry,
        synth: n_synth,
        real: n_real,
    } = counts;
    eprintln!("fitting on {n_dry} dry, {n_synth} synthetic rainy and {n_real} real rainy frames");
    let mut model = RainScoreModel::fit(&samples, 1e-3, 3000);
    let train_auc = auc_of(&model, &samples);
    // The threshold: the midpoint that maximises balanced accuracy on the validation pairs when
    // given, else on the fitting set.
    let choose_on: Vec<(Features, bool)> = if a.val_dry.is_empty() {
        samples.clone()
    } else {
        let mut s = Vec::new();
        for (paths, rainy) in [(&a.val_dry, false), (&a.val_rainy, true)] {
            for p in paths.iter() {
                for img in frames_of(p, 1)? {
                    s.push((feats(&img), rainy));
                }
            }
        }
        s
    };
    model.threshold = best_threshold(&model, &choose_on);
    let val_auc = auc_of(&model, &choose_on);
    model.fitted_on = serde_json::json!({
        "dry": a.recipe.dry.iter().map(|p| derain::devdata::portable_path(p)).collect::<Vec<_>>(),
        "rainy": a.recipe.rainy.iter().map(|p| derain::devdata::portable_path(p)).collect::<Vec<_>>(),
        "synthetic_copies_per_dry_frame": a.recipe.synth_copies,
        "presets": a.recipe.presets.iter().map(|p| p.name()).collect::<Vec<_>>(),
        "hard_negatives": a.recipe.hard_negatives,
        "stride": a.recipe.stride,
        "seed": a.recipe.seed,
        "frames": {"dry": n_dry, "synthetic_rain": n_synth, "real_rain": n_real},
        "threshold_chosen_on": if a.val_dry.is_empty() {
            serde_json::json!("the fitting set")
        } else {
            serde_json::json!({
                "dry": a.val_dry.iter().map(|p| derain::devdata::portable_path(p)).collect::<Vec<_>>(),
                "rainy": a.val_rainy.iter().map(|p| derain::devdata::portable_path(p)).collect::<Vec<_>>(),
            })
        },
        "auc_fitting_set": train_auc,
        "auc_threshold_set": val_auc,
    });
    let text = serde_json::to_string_pretty(&model)?;
    imageio::write_file_atomic(&a.out, text.as_bytes())
        .with_context(|| format!("cannot write {}", a.out.display()))?;
    println!(
        "AUC {train_auc:.4} on the fitting set, {val_auc:.4} where the threshold ({:.3}) was \
         chosen; wrote {}",
        model.threshold,
        a.out.display()
    );
    Ok(())
}

/// A uniform number in [0, 1) from a seed.
fn unit(seed: u64) -> f64 {
    derain::seed::unit(derain::seed::mix(seed))
}

/// The image with seeded Gaussian-like noise of standard deviation `sigma` (of 1) per channel.
fn add_noise(img: &RgbImage, sigma: f64, seed: u64) -> RgbImage {
    let mut out = img.clone();
    for (i, v) in out.iter_mut().enumerate() {
        // Sum of four uniforms: close enough to a Gaussian for sensor noise.
        let base = seed ^ (i as u64).wrapping_mul(0x2545_f491_4f6c_dd1d);
        let g: f64 = (0..4)
            .map(|k| unit(base.wrapping_add(k)) - 0.5)
            .sum::<f64>()
            * 3f64.sqrt();
        *v = (f64::from(*v) + 255.0 * sigma * g)
            .round()
            .clamp(0.0, 255.0) as u8;
    }
    out
}

fn auc_of(m: &RainScoreModel, s: &[(Features, bool)]) -> f64 {
    let (p, n): (Vec<f64>, Vec<f64>) = split(m, s);
    rainscore::roc_auc(&p, &n).unwrap_or(f64::NAN)
}

fn split(m: &RainScoreModel, s: &[(Features, bool)]) -> (Vec<f64>, Vec<f64>) {
    let mut p = Vec::new();
    let mut n = Vec::new();
    for (f, y) in s {
        if *y { &mut p } else { &mut n }.push(m.score_features(f));
    }
    (p, n)
}

/// The threshold with the highest balanced accuracy (mean of the two classes' hit rates).
fn best_threshold(m: &RainScoreModel, s: &[(Features, bool)]) -> f64 {
    let (p, n) = split(m, s);
    let mut all: Vec<f64> = p.iter().chain(&n).copied().collect();
    all.sort_by(f64::total_cmp);
    let mut best = (f64::MIN, 0.5);
    for w in all.windows(2) {
        let t = 0.5 * (w[0] + w[1]);
        let tpr = p.iter().filter(|&&v| v > t).count() as f64 / p.len().max(1) as f64;
        let tnr = n.iter().filter(|&&v| v <= t).count() as f64 / n.len().max(1) as f64;
        if tpr + tnr > best.0 {
            best = (tpr + tnr, t);
        }
    }
    best.1
}

fn eval(a: EvalArgs) -> Result<()> {
    let m = load_model(a.model.as_deref())?;
    let mut per: Vec<serde_json::Value> = Vec::new();
    let mut all_dry = Vec::new();
    let mut all_rainy = Vec::new();
    println!("threshold {:.3}", m.threshold);
    println!(
        "{:<60} {:>6} {:>8} {:>8}  called",
        "folder", "frames", "median", "mean"
    );
    for (paths, rainy) in [(&a.dry, false), (&a.rainy, true)] {
        for p in paths.iter() {
            let mut scores: Vec<f64> = frames_of(p, a.stride)?
                .iter()
                .map(|img| m.score_features(&feats(img)))
                .collect();
            let wrong = scores
                .iter()
                .filter(|&&s| (s > m.threshold) != rainy)
                .count();
            let mean = scores.iter().sum::<f64>() / scores.len() as f64;
            let mut sorted = scores.clone();
            sorted.sort_by(f64::total_cmp);
            let median = sorted[sorted.len() / 2];
            let name = derain::devdata::portable_path(p);
            println!(
                "{name:<60} {:>6} {median:>8.4} {mean:>8.4}  {} of {} {}",
                scores.len(),
                scores.len() - wrong,
                scores.len(),
                if rainy { "rainy" } else { "dry" }
            );
            per.push(serde_json::json!({
                "folder": name, "rainy": rainy, "frames": scores.len(),
                "median": median, "mean": mean, "misclassified": wrong,
            }));
            if rainy {
                all_rainy.append(&mut scores);
            } else {
                all_dry.append(&mut scores);
            }
        }
    }
    let auc = rainscore::roc_auc(&all_rainy, &all_dry).unwrap_or(f64::NAN);
    let fpr = all_dry.iter().filter(|&&s| s > m.threshold).count() as f64 / all_dry.len() as f64;
    let fnr =
        all_rainy.iter().filter(|&&s| s <= m.threshold).count() as f64 / all_rainy.len() as f64;
    println!(
        "ROC AUC {auc:.4} ({} dry, {} rainy frames); at the threshold: {:.1}% of dry frames \
         called rainy, {:.1}% of rainy frames called dry",
        all_dry.len(),
        all_rainy.len(),
        100.0 * fpr,
        100.0 * fnr
    );
    if let Some(j) = &a.json {
        let doc = serde_json::json!({
            "auc": auc, "threshold": m.threshold, "dry_called_rainy": fpr,
            "rainy_called_dry": fnr, "folders": per,
        });
        imageio::write_file_atomic(j, serde_json::to_string_pretty(&doc)?.as_bytes())?;
    }
    Ok(())
}

/// Rain parameters for a seed.
type ParamsOf = Box<dyn Fn(u64) -> RainParams>;

fn cv(a: CvArgs) -> Result<()> {
    if a.recipe.rainy.is_empty() {
        bail!("cv holds out one --rainy path at a time: give at least one");
    }
    let (samples, counts) = recipe_samples(&a.recipe)?;
    eprintln!(
        "{} dry, {} synthetic rainy and {} real rainy fitting frames",
        counts.dry, counts.synth, counts.real
    );
    // The held-out dry frames, with their hard negatives, and the rain a driving camera sees
    // rendered over them: faint streaks alone, with the veil, behind windshield drops, and the
    // driving mix, three seeds each.
    let light = |effects: Effects| move |seed| Preset::Light.params_with(seed, &effects);
    let rendered_kinds: [(&str, ParamsOf); 4] = [
        ("light streaks", Box::new(light(Effects::NONE))),
        (
            "light streaks + veil",
            Box::new(light(Effects {
                scattering: 1.0,
                ..Effects::NONE
            })),
        ),
        (
            "light streaks + windshield drops",
            Box::new(light(Effects {
                drops: 1.0,
                ..Effects::NONE
            })),
        ),
        ("driving mix", Box::new(|seed| Preset::Driving.params(seed))),
    ];
    let mut val_dry = Vec::new();
    let mut val_rendered: Vec<Vec<Features>> = vec![Vec::new(); rendered_kinds.len()];
    let mut copy = 0u64;
    for p in &a.val_dry {
        for img in frames_of(p, 1)? {
            let seed = a.recipe.seed.wrapping_mul(7_000_003).wrapping_add(copy);
            // The same dry variants whatever the recipe, so recipes compare on one set.
            val_dry.push(feats(&img));
            val_dry.push(feats(&downscaled(&img, 2)));
            val_dry.push(feats(&add_noise(&img, 0.01, seed)));
            val_dry.extend(hard_negatives(&img, seed).iter().map(feats));
            for (kind, (_, params)) in val_rendered.iter_mut().zip(&rendered_kinds) {
                for _ in 0..3 {
                    let seed = a.recipe.seed.wrapping_mul(7_000_003).wrapping_add(copy);
                    copy += 1;
                    let r = RainRenderer::new(params(seed), seed, img.width(), img.height());
                    kind.push(feats(&r.render(&img, 0)?));
                }
            }
        }
    }
    let mut folds = Vec::new();
    let names: Vec<String> = a
        .recipe
        .rainy
        .iter()
        .map(|p| derain::devdata::portable_path(p))
        .collect();
    println!(
        "{:<50} {:>6} {:>7} {:>8} {:>8}",
        "held out", "frames", "AUC", "dry>t", "rain<=t"
    );
    for fold in 0..names.len() + rendered_kinds.len() {
        // Fold k < len holds out real path k; the others hold out nothing real and score one
        // kind of rendered rain.
        let train: Vec<(Features, bool)> = samples
            .iter()
            .filter(|s| s.group != fold + 1)
            .map(|s| (s.f, s.rainy))
            .collect();
        let mut m = RainScoreModel::fit(&train, 1e-3, 3000);
        m.threshold = best_threshold(&m, &train);
        let pos: Vec<f64> = if fold < names.len() {
            samples
                .iter()
                .filter(|s| s.group == fold + 1)
                .map(|s| m.score_features(&s.f))
                .collect()
        } else {
            val_rendered[fold - names.len()]
                .iter()
                .map(|f| m.score_features(f))
                .collect()
        };
        let neg: Vec<f64> = val_dry.iter().map(|f| m.score_features(f)).collect();
        let auc = rainscore::roc_auc(&pos, &neg).unwrap_or(f64::NAN);
        let fpr = neg.iter().filter(|&&s| s > m.threshold).count() as f64 / neg.len() as f64;
        let fnr = pos.iter().filter(|&&s| s <= m.threshold).count() as f64 / pos.len() as f64;
        let name = names
            .get(fold)
            .cloned()
            .unwrap_or_else(|| format!("(rendered: {})", rendered_kinds[fold - names.len()].0));
        println!(
            "{name:<50} {:>6} {auc:>7.4} {:>7.1}% {:>7.1}%",
            pos.len(),
            100.0 * fpr,
            100.0 * fnr
        );
        folds.push(serde_json::json!({
            "held_out": name, "frames": pos.len(), "auc": auc,
            "dry_called_rainy": fpr, "rainy_called_dry": fnr,
        }));
    }
    let aucs: Vec<f64> = folds.iter().filter_map(|f| f["auc"].as_f64()).collect();
    let mean = aucs.iter().sum::<f64>() / aucs.len() as f64;
    let worst = aucs.iter().copied().fold(f64::INFINITY, f64::min);
    println!(
        "mean AUC {mean:.4}, worst {worst:.4} over {} folds ({} held-out dry frames)",
        aucs.len(),
        val_dry.len()
    );
    if let Some(j) = &a.json {
        let doc = serde_json::json!({"mean_auc": mean, "worst_auc": worst, "folds": folds});
        imageio::write_file_atomic(j, serde_json::to_string_pretty(&doc)?.as_bytes())?;
    }
    Ok(())
}
