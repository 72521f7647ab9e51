//! Training the rain detector ([`crate::raindetect`]): a tiny CNN told dry frames from rainy
//! ones, on random crops of the frames at the detector's own scale with strong augmentation.
//!
//! - Dry frames come from several cameras; each also enters with thin scene lines drawn over
//!   it (poles, grids, bright near-vertical lines: the structure a streak detector confuses
//!   with rain).
//! - Rainy frames are real rain (photos and video of other cameras) and rain rendered by the
//!   synthesizer over the dry frames, every preset from light drizzle to the driving preset's
//!   veil and windshield drops, so that light rain counts as rain.
//! - Sources are drawn evenly (a source of 200 photos weighs no more than one of 20 frames),
//!   so the detector cannot win by learning one camera.
//! - [`cross_validate`] holds out one source at a time: the held-out frames are scored by a
//!   detector that never saw that camera or that rain, which is how choices are made and how
//!   the calibration is fitted (rain rendered over one's own frames saturates at an AUC of 1 and
//!   cannot choose).
//!
//! The net's layers are the ONNX graph's ([`crate::onnx::RainDetectorConfig`]), named alike.

use std::collections::BTreeMap;
use std::path::PathBuf;

use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tch::nn::{self, OptimizerConfig, VarStore};
use tch::{Device, Kind, Tensor};

use crate::card::ModelCard;
use crate::footage::{Footage, FootageOptions};
use crate::imageio::RgbImage;
use crate::onnx::{RainDetectorConfig, rain_detector};
use crate::raindetect::{DetectorInput, detector_input};
use crate::rainscore::roc_auc;
use crate::synth::{LinePattern, Preset, synthesize};

/// A frame at the detector's scale, interleaved RGB in [0, 1] (HWC).
#[derive(Debug, Clone)]
pub struct Sample {
    pub width: usize,
    pub height: usize,
    pub hwc: Vec<f32>,
}

impl Sample {
    /// The detector's input for an 8-bit RGB frame (the element's path: binned 2×2, then to
    /// the canonical scale).
    pub fn from_image(img: &RgbImage) -> Self {
        Self::from_input(&detector_input(&crate::imageio::binned(img)))
    }

    fn from_input(d: &DetectorInput) -> Self {
        let plane = d.width * d.height;
        let mut hwc = Vec::with_capacity(3 * plane);
        for i in 0..plane {
            hwc.extend_from_slice(&[d.chw[i], d.chw[plane + i], d.chw[2 * plane + i]]);
        }
        Self {
            width: d.width,
            height: d.height,
            hwc,
        }
    }

    /// The whole frame as a `[1, 3, H, W]` tensor.
    pub fn tensor(&self) -> Tensor {
        Tensor::from_slice(&self.hwc)
            .view([self.height as i64, self.width as i64, 3])
            .permute([2, 0, 1])
            .unsqueeze(0)
            .contiguous()
    }
}

/// Where a group of training frames came from: one camera, one rain folder.
#[derive(Debug, Clone)]
pub struct Source {
    pub name: String,
    pub rainy: bool,
    /// Rendered over dry frames of the source named here (held out with it).
    pub rendered_over: Option<String>,
    pub frames: Vec<Sample>,
}

/// How the frames of one source are read.
#[derive(Debug, Clone)]
pub struct SourceSpec {
    pub name: String,
    pub rainy: bool,
    pub paths: Vec<PathBuf>,
}

/// Reading options for the frames.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Keep every n-th frame of a video.
    pub stride: usize,
    /// At most this many frames per source (evenly spread); 0: all.
    pub max_frames: usize,
    /// Rendered rainy copies per dry frame (presets in turn, seeded).
    pub rendered_copies: usize,
    /// Dry copies with scene lines drawn over them, per dry frame.
    pub line_copies: usize,
    pub seed: u64,
}

/// The presets rendered over dry frames, in turn: light drizzle counts as rain.
pub const RENDER_PRESETS: [Preset; 5] = [
    Preset::Light,
    Preset::Driving,
    Preset::Medium,
    Preset::Mixed,
    Preset::Heavy,
];

/// Reads every frame of `paths` (unreadable images are skipped and counted by the reader).
pub fn read_frames(paths: &[PathBuf], stride: usize) -> anyhow::Result<Vec<RgbImage>> {
    let options = FootageOptions {
        stride: stride.max(1),
        ..FootageOptions::default()
    };
    let mut footage = Footage::open(paths, options)?;
    let mut out = Vec::new();
    for f in footage.by_ref() {
        match f {
            Ok(f) => out.push(f.image),
            Err(e) => log::warn!("skipping a frame: {e}"),
        }
    }
    Ok(out)
}

fn spread<T: Clone>(v: Vec<T>, max: usize) -> Vec<T> {
    if max == 0 || v.len() <= max {
        return v;
    }
    (0..max).map(|i| v[i * v.len() / max].clone()).collect()
}

/// Loads the sources: each spec's frames, and for dry specs also their line copies (dry) and a
/// rendered-rain source over them.
pub fn load_sources(specs: &[SourceSpec], o: &LoadOptions) -> anyhow::Result<Vec<Source>> {
    let mut out = Vec::new();
    for (si, spec) in specs.iter().enumerate() {
        let frames = spread(read_frames(&spec.paths, o.stride)?, o.max_frames);
        if frames.is_empty() {
            anyhow::bail!("source '{}' holds no readable frame", spec.name);
        }
        let mut samples: Vec<Sample> = frames.iter().map(Sample::from_image).collect();
        let mut rendered = Vec::new();
        if !spec.rainy {
            for (fi, img) in frames.iter().enumerate() {
                let seed = o.seed ^ ((si as u64) << 40) ^ ((fi as u64) << 8);
                for l in 0..o.line_copies {
                    let mut lined = img.clone();
                    LinePattern::random(seed + l as u64, img.width(), img.height())
                        .paint(&mut lined);
                    samples.push(Sample::from_image(&lined));
                }
                for r in 0..o.rendered_copies {
                    let preset =
                        RENDER_PRESETS[(fi * o.rendered_copies + r) % RENDER_PRESETS.len()];
                    let rainy = synthesize(img, preset, seed + 100 + r as u64);
                    rendered.push(Sample::from_image(&rainy));
                }
            }
        }
        log::info!(
            "source '{}' ({}): {} frames{}",
            spec.name,
            if spec.rainy { "rain" } else { "dry" },
            samples.len(),
            if rendered.is_empty() {
                String::new()
            } else {
                format!(", {} with rendered rain", rendered.len())
            }
        );
        out.push(Source {
            name: spec.name.clone(),
            rainy: spec.rainy,
            rendered_over: None,
            frames: samples,
        });
        if !rendered.is_empty() {
            out.push(Source {
                name: format!("{}+rendered", spec.name),
                rainy: true,
                rendered_over: Some(spec.name.clone()),
                frames: rendered,
            });
        }
    }
    Ok(out)
}

/// The training recipe.
#[derive(Debug, Clone)]
pub struct FitOptions {
    pub config: RainDetectorConfig,
    pub steps: usize,
    pub batch: usize,
    pub lr: f64,
    /// Crop heights are drawn from this range (at the detector's scale).
    pub crop: (usize, usize),
    pub seed: u64,
}

impl Default for FitOptions {
    fn default() -> Self {
        Self {
            config: RainDetectorConfig::default(),
            steps: 3000,
            batch: 32,
            lr: 2e-3,
            crop: (96, 176),
            seed: 1,
        }
    }
}

/// The detector network in tch: the same layers as the ONNX graph, without the calibration.
pub struct Net {
    pub vs: VarStore,
    convs: Vec<(Tensor, Tensor)>,
    fc: (Tensor, Tensor),
    pub config: RainDetectorConfig,
}

impl Net {
    /// A freshly initialised net (uniform ±1/√fan_in, from `seed`).
    pub fn new(config: &RainDetectorConfig, seed: u64) -> Self {
        let vs = VarStore::new(Device::Cpu);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let root = vs.root();
        let mut init = |p: &nn::Path<'_>, name: &str, shape: &[usize], fan_in: usize| {
            let bound = 1.0 / (fan_in as f32).sqrt();
            let n: usize = shape.iter().product();
            let v: Vec<f32> = (0..n).map(|_| rng.random_range(-bound..bound)).collect();
            let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
            p.var_copy(name, &Tensor::from_slice(&v).view(dims.as_slice()))
        };
        let mut convs = Vec::new();
        let mut in_c = 3;
        for (i, &c) in config.channels.iter().enumerate() {
            let p = root.sub("conv").sub(i.to_string());
            let w = init(&p, "weight", &[c, in_c, 3, 3], 9 * in_c);
            let b = init(&p, "bias", &[c], 9 * in_c);
            convs.push((w, b));
            in_c = c;
        }
        let p = root.sub("fc");
        let fc = (
            init(&p, "weight", &[1, in_c], in_c),
            init(&p, "bias", &[1], in_c),
        );
        Self {
            vs,
            convs,
            fc,
            config: config.clone(),
        }
    }

    /// Logits `[N]` for frames `[N, 3, H, W]` in [0, 1].
    pub fn logits(&self, x: &Tensor) -> Tensor {
        let mut h = x * 2.0 - 1.0;
        for (w, b) in &self.convs {
            h = h.conv2d(w, Some(b), [2, 2], [1, 1], [1, 1], 1).relu();
        }
        let pooled = h.mean_dim([2i64, 3].as_slice(), false, Kind::Float);
        pooled.linear(&self.fc.0, Some(&self.fc.1)).view([-1])
    }

    /// The logit of one whole frame.
    pub fn logit(&self, s: &Sample) -> f64 {
        tch::no_grad(|| self.logits(&s.tensor()).double_value(&[0]))
    }

    /// The parameter values by name (as the ONNX graph names them).
    pub fn weights(&self) -> BTreeMap<String, Vec<f32>> {
        self.vs
            .variables()
            .into_iter()
            .map(|(name, t)| {
                let v: Vec<f32> = Vec::try_from(t.flatten(0, -1)).unwrap_or_default();
                (name, v)
            })
            .collect()
    }
}

/// One augmented crop, CHW, `h`×`w`: a random scale (0.7–1.4 of the detector's), position,
/// mirror, gamma, contrast, brightness, saturation and noise.
fn augmented_crop(s: &Sample, h: usize, w: usize, rng: &mut ChaCha8Rng, out: &mut Vec<f32>) {
    let mut scale: f32 = rng.random_range(0.7..1.4);
    // The crop must fit: upscale sources too small for it.
    scale = scale
        .max(h as f32 / s.height as f32)
        .max(w as f32 / s.width as f32);
    let (sh, sw) = (h as f32 / scale, w as f32 / scale);
    let y0 = rng.random_range(0.0..=(s.height as f32 - sh).max(0.0));
    let x0 = rng.random_range(0.0..=(s.width as f32 - sw).max(0.0));
    let flip = rng.random_bool(0.5);
    let gamma: f32 = rng.random_range(0.7..1.4);
    let contrast: f32 = rng.random_range(0.75..1.25);
    let bright: f32 = rng.random_range(-0.08..0.08);
    let sat: f32 = rng.random_range(0.6..1.3);
    let noise: f32 = if rng.random_bool(0.5) {
        rng.random_range(0.0..0.02)
    } else {
        0.0
    };
    let start = out.len();
    out.resize(start + 3 * h * w, 0.0);
    let px = |x: usize, y: usize, c: usize| s.hwc[3 * (y * s.width + x) + c];
    for yo in 0..h {
        let fy = (y0 + (yo as f32 + 0.5) / scale - 0.5).clamp(0.0, (s.height - 1) as f32);
        let (ya, t) = (fy.floor() as usize, fy.fract());
        let yb = (ya + 1).min(s.height - 1);
        for xo in 0..w {
            let xi = if flip { w - 1 - xo } else { xo };
            let fx = (x0 + (xi as f32 + 0.5) / scale - 0.5).clamp(0.0, (s.width - 1) as f32);
            let (xa, u) = (fx.floor() as usize, fx.fract());
            let xb = (xa + 1).min(s.width - 1);
            let mut rgb = [0.0_f32; 3];
            for (c, v) in rgb.iter_mut().enumerate() {
                let top = px(xa, ya, c) * (1.0 - u) + px(xb, ya, c) * u;
                let bot = px(xa, yb, c) * (1.0 - u) + px(xb, yb, c) * u;
                *v = top * (1.0 - t) + bot * t;
            }
            let grey = (rgb[0] + rgb[1] + rgb[2]) / 3.0;
            for (c, v) in rgb.iter().enumerate() {
                let mut v = grey + (v - grey) * sat;
                v = v.clamp(0.0, 1.0).powf(gamma);
                v = (v - 0.5) * contrast + 0.5 + bright;
                if noise > 0.0 {
                    // A cheap approximately normal draw: the sum of two uniforms.
                    v += noise * (rng.random::<f32>() + rng.random::<f32>() - 1.0) * 1.7;
                }
                out[start + c * h * w + yo * w + xo] = v.clamp(0.0, 1.0);
            }
        }
    }
}

/// Trains a detector on `train` sources (each drawn with equal weight, half of each batch dry
/// and half rainy); returns the net and the mean loss of the last tenth of the steps.
pub fn fit(train: &[&Source], o: &FitOptions) -> anyhow::Result<(Net, f64)> {
    let dry: Vec<&Source> = train.iter().copied().filter(|s| !s.rainy).collect();
    let rainy: Vec<&Source> = train.iter().copied().filter(|s| s.rainy).collect();
    if dry.is_empty() || rainy.is_empty() {
        anyhow::bail!("the detector needs dry and rainy training sources");
    }
    o.config.validate().map_err(anyhow::Error::msg)?;
    let net = Net::new(&o.config, o.seed);
    let mut opt = nn::Adam::default().build(&net.vs, o.lr)?;
    let mut rng = ChaCha8Rng::seed_from_u64(o.seed ^ 0x5eed);
    let mut tail = Vec::new();
    let mut buf = Vec::new();
    for step in 0..o.steps {
        // Cosine decay to a tenth.
        let progress = step as f64 / o.steps.max(1) as f64;
        opt.set_lr(o.lr * (0.1 + 0.9 * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())));
        let h = rng.random_range(o.crop.0..=o.crop.1);
        let w = ((h as f32) * rng.random_range(1.0..1.8)) as usize;
        buf.clear();
        let mut labels = Vec::with_capacity(o.batch);
        for i in 0..o.batch {
            let is_rain = i % 2 == 1;
            let group = if is_rain { &rainy } else { &dry };
            let src = group.choose(&mut rng).expect("non-empty");
            let sample = src.frames.choose(&mut rng).expect("sources hold frames");
            augmented_crop(sample, h, w, &mut rng, &mut buf);
            labels.push(if is_rain { 1.0_f32 } else { 0.0 });
        }
        let x = Tensor::from_slice(&buf).view([o.batch as i64, 3, h as i64, w as i64]);
        let y = Tensor::from_slice(&labels);
        let loss = net.logits(&x).binary_cross_entropy_with_logits::<Tensor>(
            &y,
            None,
            None,
            tch::Reduction::Mean,
        );
        opt.backward_step(&loss);
        if step * 10 >= o.steps * 9 {
            tail.push(loss.double_value(&[]));
        }
        if step % 500 == 0 {
            log::info!(
                "detector step {step}/{}: loss {:.4}",
                o.steps,
                loss.double_value(&[])
            );
        }
    }
    let tail_loss = tail.iter().sum::<f64>() / tail.len().max(1) as f64;
    Ok((net, tail_loss))
}

/// Platt scaling: `(a, b)` so that `sigmoid(a·logit + b)` is calibrated on labelled logits
/// (Newton's method on the log-loss, with Platt's target smoothing against overconfidence).
pub fn platt(logits: &[(f64, bool)]) -> (f64, f64) {
    let n_pos = logits.iter().filter(|(_, y)| *y).count() as f64;
    let n_neg = logits.len() as f64 - n_pos;
    let (t_pos, t_neg) = ((n_pos + 1.0) / (n_pos + 2.0), 1.0 / (n_neg + 2.0));
    let (mut a, mut b) = (1.0_f64, 0.0_f64);
    for _ in 0..100 {
        let (mut ga, mut gb, mut haa, mut hab, mut hbb) = (0.0, 0.0, 1e-9, 0.0, 1e-9);
        for &(z, y) in logits {
            let t = if y { t_pos } else { t_neg };
            let p = 1.0 / (1.0 + (-(a * z + b)).exp());
            let d = p - t;
            ga += d * z;
            gb += d;
            let v = p * (1.0 - p);
            haa += v * z * z;
            hab += v * z;
            hbb += v;
        }
        let det = haa * hbb - hab * hab;
        if det.abs() < 1e-12 {
            break;
        }
        let da = (hbb * ga - hab * gb) / det;
        let db = (haa * gb - hab * ga) / det;
        a -= da;
        b -= db;
        if da.abs() + db.abs() < 1e-9 {
            break;
        }
    }
    (a, b)
}

/// The calibrated probability of a logit.
pub fn calibrated(logit: f64, (a, b): (f64, f64)) -> f64 {
    1.0 / (1.0 + (-(a * logit + b)).exp())
}

/// A logit and whether its frame was rainy.
pub type Labelled = (f64, bool);

/// One held-out source's result in [`cross_validate`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct Fold {
    pub held_out: String,
    pub rainy: bool,
    /// AUC of the held-out frames against the validation frames of the other class.
    pub auc: f64,
    pub frames: usize,
}

/// Leave-one-source-out: for each real source (a rendered source goes out with the dry source
/// it was rendered over), fit on the rest and score the held-out frames; each fold's AUC is its
/// frames against the validation frames of the other class (scored by the same fold's net).
/// Returns the folds and every held-out logit with its label (for calibration).
pub fn cross_validate(
    sources: &[Source],
    val_dry: &[Sample],
    val_rainy: &[Sample],
    o: &FitOptions,
) -> anyhow::Result<(Vec<Fold>, Vec<Labelled>)> {
    let mut folds = Vec::new();
    let mut held = Vec::new();
    for out in sources.iter().filter(|s| s.rendered_over.is_none()) {
        let goes = |s: &Source| s.name == out.name || s.rendered_over.as_deref() == Some(&out.name);
        let train: Vec<&Source> = sources.iter().filter(|s| !goes(s)).collect();
        let (net, loss) = fit(&train, o)?;
        let scores: Vec<f64> = out.frames.iter().map(|f| net.logit(f)).collect();
        let other: Vec<f64> = if out.rainy { val_dry } else { val_rainy }
            .iter()
            .map(|f| net.logit(f))
            .collect();
        let auc = if out.rainy {
            roc_auc(&scores, &other)
        } else {
            roc_auc(&other, &scores)
        }
        .unwrap_or(f64::NAN);
        log::info!(
            "fold without '{}': AUC {auc:.3} on {} frames (train loss {loss:.3})",
            out.name,
            scores.len()
        );
        held.extend(scores.iter().map(|&z| (z, out.rainy)));
        folds.push(Fold {
            held_out: out.name.clone(),
            rainy: out.rainy,
            auc,
            frames: scores.len(),
        });
    }
    Ok((folds, held))
}

/// The threshold on calibrated scores: the lowest one calling at most `max_dry_rainy` of the
/// dry scores rainy (so as many rainy frames as possible are caught), kept inside (0.01, 0.99).
pub fn threshold_for(dry: &[f64], max_dry_rainy: f64) -> f64 {
    let mut d: Vec<f64> = dry.iter().copied().filter(|v| v.is_finite()).collect();
    if d.is_empty() {
        return 0.5;
    }
    d.sort_by(f64::total_cmp);
    let allowed = (max_dry_rainy * d.len() as f64).floor() as usize;
    let idx = d.len().saturating_sub(allowed + 1);
    d[idx].clamp(0.01, 0.99)
}

/// The detector as an ONNX file with its card.
pub fn export(
    net: &Net,
    calibration: (f64, f64),
    mut card: ModelCard,
    threshold: f64,
) -> anyhow::Result<Vec<u8>> {
    let weights = net.weights();
    card.architecture = net.config.architecture();
    card.parameters = net
        .config
        .parameter_shapes()
        .iter()
        .map(|(_, s)| s.iter().product::<usize>() as u64)
        .sum();
    card.gmac_per_megapixel = net.config.macs_per_pixel() * 1e6 / 1e9;
    card.extra
        .insert("kind".into(), crate::raindetect::KIND.into());
    card.extra.insert("threshold".into(), threshold.into());
    card.extra.insert(
        "calibration".into(),
        serde_json::json!({"method": "platt", "a": calibration.0, "b": calibration.1}),
    );
    let mut missing = None;
    let mut get = |name: &str, shape: &[usize]| -> Vec<f32> {
        match weights.get(name) {
            Some(v) if v.len() == shape.iter().product::<usize>() => v.clone(),
            _ => {
                missing.get_or_insert_with(|| name.to_owned());
                vec![0.0; shape.iter().product()]
            }
        }
    };
    let proto = rain_detector(
        &net.config,
        &mut get,
        (calibration.0 as f32, calibration.1 as f32),
        &card,
    )?;
    if let Some(name) = missing {
        anyhow::bail!("the net has no parameter '{name}' of the graph's shape");
    }
    Ok(crate::onnx::to_bytes(&proto)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raindetect::RainDetector;
    use crate::runtime::SessionOptions;

    /// A smooth dry scene with a few dark bars.
    fn scene(seed: u32) -> RgbImage {
        RgbImage::from_fn(96, 64, |x, y| {
            let bar = (x + seed * 7) % 23 < 2;
            let v = if bar {
                30
            } else {
                (60 + x + y + seed * 5) as u8
            };
            image::Rgb([v, v.saturating_add(10), v.saturating_add(20)])
        })
    }

    fn sources() -> Vec<Source> {
        let dry: Vec<Sample> = (0..4).map(|i| Sample::from_image(&scene(i))).collect();
        let rainy: Vec<Sample> = (0..4)
            .map(|i| Sample::from_image(&synthesize(&scene(i), Preset::Heavy, u64::from(i))))
            .collect();
        vec![
            Source {
                name: "dry".into(),
                rainy: false,
                rendered_over: None,
                frames: dry,
            },
            Source {
                name: "dry+rendered".into(),
                rainy: true,
                rendered_over: Some("dry".into()),
                frames: rainy,
            },
        ]
    }

    #[test]
    fn a_few_steps_learn_and_the_onnx_export_scores_as_the_net() {
        let src = sources();
        let o = FitOptions {
            config: RainDetectorConfig {
                channels: vec![4, 8],
            },
            steps: 60,
            batch: 8,
            crop: (24, 32),
            ..FitOptions::default()
        };
        let train: Vec<&Source> = src.iter().collect();
        let (net, loss) = fit(&train, &o).expect("fits");
        assert!(loss.is_finite() && loss < 0.69, "loss {loss}");
        let calib = (0.7, -0.2);
        let bytes = export(&net, calib, ModelCard::new("t"), 0.3).expect("exports");
        if let Err(e) = crate::runtime::init_ort(None) {
            eprintln!("skipping the ONNX half: {e}");
            return;
        }
        let mut det = RainDetector::from_bytes(&bytes, "t.onnx", &SessionOptions::default())
            .expect("the export loads as a detector");
        assert_eq!(det.threshold(), 0.3);
        for s in src.iter().flat_map(|s| &s.frames) {
            let want = calibrated(net.logit(s), calib);
            let chw: Vec<f32> = (0..3)
                .flat_map(|c| s.hwc.iter().skip(c).step_by(3).copied())
                .collect();
            let got = det
                .run(&DetectorInput {
                    width: s.width,
                    height: s.height,
                    chw,
                })
                .expect("runs");
            assert!((got - want).abs() < 1e-4, "onnx {got} vs tch {want}");
        }
    }

    #[test]
    fn a_fold_holds_a_rendered_source_out_with_its_dry_frames() {
        let mut src = sources();
        src.push(Source {
            name: "real".into(),
            rainy: true,
            rendered_over: None,
            frames: src[1].frames.clone(),
        });
        src.push(Source {
            name: "dry2".into(),
            rainy: false,
            rendered_over: None,
            frames: src[0].frames.clone(),
        });
        let o = FitOptions {
            config: RainDetectorConfig { channels: vec![4] },
            steps: 5,
            batch: 4,
            crop: (16, 16),
            ..FitOptions::default()
        };
        let (folds, held) = cross_validate(&src, &src[0].frames, &src[1].frames, &o).expect("cv");
        let names: Vec<&str> = folds.iter().map(|f| f.held_out.as_str()).collect();
        // Rendered sources are never a fold of their own.
        assert_eq!(names, ["dry", "real", "dry2"]);
        assert_eq!(held.len(), 12);
    }

    #[test]
    fn platt_is_increasing_and_the_threshold_caps_dry_false_alarms() {
        let data: Vec<(f64, bool)> = (0..40)
            .map(|i| (f64::from(i) / 4.0 - 5.0, i >= 18))
            .collect();
        let ab = platt(&data);
        assert!(ab.0 > 0.0, "{ab:?}");
        assert!(calibrated(-5.0, ab) < 0.1 && calibrated(5.0, ab) > 0.9);
        let dry: Vec<f64> = (0..100).map(|i| f64::from(i) / 100.0).collect();
        let t = threshold_for(&dry, 0.02);
        assert_eq!(dry.iter().filter(|&&d| d > t).count(), 2);
    }
}
