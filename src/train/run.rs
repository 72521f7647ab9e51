//! The training run behind `derain train`: a run configuration (data, loop and the trainer's
//! own settings), the loop with its checkpoints, logs, charts, sample grids and validation, and
//! resuming a run killed at any moment.
//!
//! A run directory holds:
//! - `config.toml`: the resolved configuration (absolute paths), written when the run starts;
//! - `checkpoint.safetensors`: the latest checkpoint (atomic; the previous one survives any
//!   failure to write the next);
//! - `log.jsonl`: one JSON object per step (every loss, learning rate, phase times, images/s);
//! - `validation.jsonl`: PSNR-Y/SSIM-Y on the validation pairs at each validation;
//! - `losses.png`, `samples/step-NNNNNNN.png` (O | B̂ | R̂ rows).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use super::{
    Batch, CheckpointError, ConfigError, Stage, StepReport, SyntheticBatch, TrainConfig,
    TrainError, Trainer,
};
use crate::dataset::{DatasetError, FramePool, SyntheticPairs, UnpairedCrops, chw_to_image};
use crate::derainer::{DerainError, Derainer, Network};
use crate::footage::FootageOptions;
use crate::frame::{FrameLayout, PixelFormat};
use crate::imageio::{self, RgbImage};
use crate::metrics;
use crate::onnx::GeneratorOutput;
use crate::plot::{Series, log_chart};
use crate::synth::{Effects, Preset};

/// File names inside a run directory.
pub const CONFIG_FILE: &str = "config.toml";
pub const CHECKPOINT_FILE: &str = "checkpoint.safetensors";
pub const LOG_FILE: &str = "log.jsonl";
pub const VALIDATION_FILE: &str = "validation.jsonl";

/// Where the training frames come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// Clean footage (videos, image folders, lists): stage 1 renders rain over it; stage 2
    /// uses it as the unpaired clean set.
    pub clean: Vec<PathBuf>,
    /// Real rainy footage (stage 2).
    pub rainy: Vec<PathBuf>,
    /// Synthetic rain for stage 1 (and stage 2's `loss.synthetic` pairs).
    pub preset: Preset,
    /// Stage 1 (and stage 2's `loss.synthetic` pairs): share of samples left dry (rainy =
    /// clean), so the generator learns to leave rain-free frames alone.
    pub dry_fraction: f64,
    /// Stage 1 (and stage 2's `loss.synthetic` pairs): probability of keeping a preset's veil
    /// (haze) on a sample.
    pub veil_probability: f64,
    /// Which veil the synthetic pairs carry: "gradient" (the vertical-gradient haze of the
    /// light..mixed presets), "scattering" (the atmospheric model `I = J·t + A·(1 − t)` with a
    /// scene-following depth, on every sample, then kept with `veil_probability`); absent: the
    /// preset's own (scattering for driving, with its probability).
    pub veil_model: Option<VeilModel>,
    /// Probability of a moving camera's radial streaks on a sample (absent: the preset's).
    pub radial_probability: Option<f64>,
    /// Probability of a layer of near-lens defocused streaks (absent: the preset's).
    pub lens_streak_probability: Option<f64>,
    /// Probability that streak brightness follows the background (absent: the preset's).
    pub refraction_probability: Option<f64>,
    /// Probability of windshield drops (otherwise a dry windshield; absent: the preset's).
    pub drops_probability: Option<f64>,
    /// Share of samples that are hard negatives: dry, with thin straight scene lines drawn into
    /// input and target alike. Of the other samples, `dry_fraction` stay plainly dry.
    pub line_negative_fraction: f64,
    /// Probability that a rainy sample's clean crop carries drawn thin straight scene lines
    /// under the rain, kept in the target (lines belong to the scene in rain as well).
    pub scene_line_probability: f64,
    /// Integer downscale of every frame (the paper trains on 4× downscaled frames).
    pub downscale: u32,
    /// Stage 2: integer downscale of the rainy footage instead of `downscale`, so that clean and
    /// rainy frames reach the discriminator at the same scale when they come from cameras of
    /// different resolutions (e.g. 1280×720 clean drives with `downscale = 2` and 640×360 rainy
    /// ones with `rainy_downscale = 1`). Absent: `downscale`, right for a fleet whose clean and
    /// rainy drives come from the same cameras.
    pub rainy_downscale: Option<u32>,
    /// Each clean frame also enters the pool downscaled by each of these factors (on top of
    /// `downscale`), so that the generator sees scene structure as densely packed as in a
    /// small or wide-angle frame (a 1280×720 drive at 4× carries a Rain12-sized photo's detail
    /// per pixel). Frames that get smaller than the crop at a factor are left out at it.
    /// Empty (the default): one scale.
    pub extra_downscales: Vec<u32>,
    /// Every n-th video frame.
    pub stride: usize,
    /// At most this many frames per footage set.
    pub max_frames: Option<usize>,
    /// Scene sampling threshold (see `FootageOptions::min_scene_change`).
    pub min_scene_change: Option<f32>,
    /// Folder with `rainy/` and `clean/` pairs to score at each validation (keep the sets you
    /// report results on out of it).
    pub validation: Option<PathBuf>,
    /// Score at most this many validation pairs (in name order).
    pub validation_limit: usize,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            clean: Vec::new(),
            rainy: Vec::new(),
            preset: Preset::Mixed,
            dry_fraction: 0.0,
            veil_probability: 1.0,
            veil_model: None,
            radial_probability: None,
            lens_streak_probability: None,
            refraction_probability: None,
            drops_probability: None,
            line_negative_fraction: 0.0,
            scene_line_probability: 0.0,
            downscale: 1,
            rainy_downscale: None,
            extra_downscales: Vec::new(),
            stride: 1,
            max_frames: None,
            min_scene_change: None,
            validation: None,
            validation_limit: 12,
        }
    }
}

/// The veil model of synthetic pairs (`data.veil_model`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VeilModel {
    /// The presets' vertical-gradient haze.
    Gradient,
    /// The atmospheric scattering model ([`crate::synth::Scattering`]).
    Scattering,
}

impl DataConfig {
    /// The driving-effect probabilities the synthetic pairs draw with: the preset's, with each
    /// key that is set taking its place.
    pub fn effects(&self) -> Effects {
        let mut e = self.preset.default_effects();
        match self.veil_model {
            Some(VeilModel::Gradient) => e.scattering = 0.0,
            Some(VeilModel::Scattering) => e.scattering = 1.0,
            None => {}
        }
        for (slot, key) in [
            (&mut e.radial, self.radial_probability),
            (&mut e.lens_streaks, self.lens_streak_probability),
            (&mut e.refraction, self.refraction_probability),
            (&mut e.drops, self.drops_probability),
        ] {
            if let Some(p) = key {
                *slot = p;
            }
        }
        e
    }

    /// Stage 1's synthetic pairs over `clean` as these settings ask.
    fn synthetic_pairs(&self, clean: FramePool, crop: u32, seed: u64) -> SyntheticPairs {
        SyntheticPairs::new(clean, self.preset, crop, seed)
            .with_mix(self.dry_fraction, self.veil_probability)
            .with_effects(self.effects())
            .with_line_negatives(self.line_negative_fraction)
            .with_scene_lines(self.scene_line_probability)
    }
}

/// The loop around the steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoopConfig {
    /// Total steps of this stage.
    pub steps: u64,
    /// Write a checkpoint every this many steps (and at the end).
    pub checkpoint_every: u64,
    /// Validate, draw the charts and a sample grid every this many steps; 0 = once per epoch
    /// (one pass over the training frames).
    pub validate_every: u64,
    /// Start from this checkpoint's networks (e.g. stage 1's) with fresh optimisers and step 0;
    /// or from an exported generator (`.onnx`, e.g. a shipped model: see [`super::import`]).
    pub init: Option<PathBuf>,
    /// Take the discriminator, the layer heads on its features and their momentum copies from
    /// this checkpoint (a file or a run directory), e.g. a stage 1 trained with the adversarial
    /// term, instead of starting them fresh: stage 2 then starts with a D that already tells
    /// B̂ from clean frames. Applied after `init`, on a new run only (a resumed run has its own).
    pub init_discriminator: Option<PathBuf>,
    /// Name recorded in exported model cards.
    pub name: String,
}

impl Default for LoopConfig {
    fn default() -> Self {
        Self {
            steps: 1000,
            checkpoint_every: 100,
            validate_every: 0,
            init: None,
            init_discriminator: None,
            name: "derain".into(),
        }
    }
}

/// Everything `derain train` reads: `[train]` (the trainer's settings), `[data]`, `[run]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RunConfig {
    pub train: TrainConfig,
    pub data: DataConfig,
    pub run: LoopConfig,
}

/// Errors of a training run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{origin}: {message}")]
    Config { origin: String, message: String },
    #[error(transparent)]
    Train(#[from] TrainError),
    #[error(transparent)]
    TrainConfig(#[from] ConfigError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Data(#[from] DatasetError),
    #[error(transparent)]
    Export(#[from] super::ExportError),
    #[error(transparent)]
    Import(#[from] super::ImportError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{} already holds a run (a checkpoint is there): pass --resume to continue it, or choose \
         another --out",
        .0.display()
    )]
    RunExists(PathBuf),
    #[error("{} has no checkpoint to resume from", .0.display())]
    NothingToResume(PathBuf),
    /// A footage source or the validation folder the run reads is not there.
    #[error("{key}: {} does not exist", .path.display())]
    MissingData { key: &'static str, path: PathBuf },
    #[error("{0}")]
    Other(String),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> RunError + '_ {
    move |source| RunError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Sets `dotted.key = value` in a TOML table; the value is read as TOML (`3`, `true`,
/// `"text"`, `[1, 2]`), falling back to a plain string.
pub fn apply_override(table: &mut toml::Table, assignment: &str) -> Result<(), RunError> {
    let bad = |message: String| RunError::Config {
        origin: "--set".into(),
        message,
    };
    let (key, value) = assignment
        .split_once('=')
        .ok_or_else(|| bad(format!("{assignment:?} is not key=value")))?;
    let value = value.trim();
    let parsed: toml::Value = toml::from_str::<toml::Table>(&format!("v = {value}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_owned()));
    let parts: Vec<&str> = key.trim().split('.').collect();
    let (last, parents) = parts.split_last().ok_or_else(|| bad("empty key".into()))?;
    let mut t = table;
    for p in parents {
        t = t
            .entry((*p).to_owned())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .ok_or_else(|| bad(format!("{p} is not a table")))?;
    }
    t.insert((*last).to_owned(), parsed);
    Ok(())
}

impl RunConfig {
    /// Reads a config file, applies `--set` overrides, resolves relative data paths against the
    /// file's folder and validates everything (unknown keys and out-of-range values are errors
    /// naming the key).
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self, RunError> {
        let text = std::fs::read_to_string(path).map_err(io_err(path))?;
        Self::parse(&text, &path.display().to_string(), path.parent(), overrides)
    }

    /// As [`RunConfig::load`] from text; `base` resolves relative paths.
    pub fn parse(
        text: &str,
        origin: &str,
        base: Option<&Path>,
        overrides: &[String],
    ) -> Result<Self, RunError> {
        let cfg_err = |message: String| RunError::Config {
            origin: origin.to_owned(),
            message,
        };
        let mut table: toml::Table = toml::from_str(text).map_err(|e| cfg_err(e.to_string()))?;
        for o in overrides {
            apply_override(&mut table, o)?;
        }
        let mut cfg: RunConfig = table
            .try_into()
            .map_err(|e: toml::de::Error| cfg_err(e.to_string()))?;
        if let Some(base) = base.filter(|b| !b.as_os_str().is_empty()) {
            // Absolute and without `..`: the run directory keeps a copy of this config, which
            // must name the same files from there (and on the exported model's card).
            let fix = |p: &mut PathBuf| {
                if p.is_relative() {
                    let joined = base.join(&*p);
                    *p = joined
                        .canonicalize()
                        .or_else(|_| std::path::absolute(&joined))
                        .unwrap_or(joined);
                }
            };
            cfg.data.clean.iter_mut().for_each(fix);
            cfg.data.rainy.iter_mut().for_each(fix);
            cfg.data.validation.iter_mut().for_each(fix);
            cfg.run.init.iter_mut().for_each(fix);
            cfg.run.init_discriminator.iter_mut().for_each(fix);
        }
        cfg.check().map_err(cfg_err)?;
        cfg.train.validate()?;
        Ok(cfg)
    }

    fn check(&self) -> Result<(), String> {
        let d = &self.data;
        if d.clean.is_empty() {
            return Err("data.clean: name at least one clean footage source".into());
        }
        if self.train.stage == Stage::Anlcl && d.rainy.is_empty() {
            return Err("data.rainy: stage anlcl needs real rainy footage".into());
        }
        for (key, v) in [
            ("data.dry_fraction", Some(d.dry_fraction)),
            ("data.veil_probability", Some(d.veil_probability)),
            ("data.radial_probability", d.radial_probability),
            ("data.lens_streak_probability", d.lens_streak_probability),
            ("data.refraction_probability", d.refraction_probability),
            ("data.drops_probability", d.drops_probability),
            (
                "data.line_negative_fraction",
                Some(d.line_negative_fraction),
            ),
            (
                "data.scene_line_probability",
                Some(d.scene_line_probability),
            ),
        ] {
            let Some(v) = v else { continue };
            if !(0.0..=1.0).contains(&v) {
                return Err(format!("{key} must be in [0, 1], got {v}"));
            }
        }
        if d.downscale == 0 || d.downscale > 16 {
            return Err(format!(
                "data.downscale must be 1..=16, got {}",
                d.downscale
            ));
        }
        if let Some(r) = d.rainy_downscale.filter(|r| *r == 0 || *r > 16) {
            return Err(format!("data.rainy_downscale must be 1..=16, got {r}"));
        }
        if let Some(x) = d
            .extra_downscales
            .iter()
            .find(|x| **x < 2 || d.downscale * **x > 16)
        {
            return Err(format!(
                "data.extra_downscales: each factor must be at least 2 and downscale x factor \
                 at most 16, got {x} (downscale {})",
                d.downscale
            ));
        }
        if d.stride == 0 {
            return Err("data.stride must be at least 1".into());
        }
        let r = &self.run;
        if r.steps == 0 {
            return Err("run.steps must be at least 1".into());
        }
        if r.checkpoint_every == 0 {
            return Err("run.checkpoint_every must be at least 1".into());
        }
        if r.name.trim().is_empty() {
            return Err("run.name must not be empty".into());
        }
        Ok(())
    }

    /// The config as TOML (what `config.toml` in a run directory holds).
    pub fn to_toml(&self) -> Result<String, RunError> {
        toml::to_string_pretty(self).map_err(|e| RunError::Other(e.to_string()))
    }

    fn footage_options(&self) -> FootageOptions {
        FootageOptions {
            stride: self.data.stride,
            max_frames: self.data.max_frames,
            min_scene_change: self.data.min_scene_change,
            downscale: self.data.downscale,
            progress: true,
        }
    }

    /// The rainy footage's options: the clean footage's, at `data.rainy_downscale` if set.
    fn rainy_footage_options(&self) -> FootageOptions {
        FootageOptions {
            downscale: self.data.rainy_downscale.unwrap_or(self.data.downscale),
            ..self.footage_options()
        }
    }
}

/// The data of one stage.
enum StageData {
    Synthetic(SyntheticPairs),
    /// Stage 2: real rain with unpaired clean crops, and synthetic pairs over the same clean
    /// footage when `loss.synthetic` is above 0.
    Unpaired(UnpairedCrops, Option<Box<SyntheticPairs>>),
}

impl StageData {
    fn load(cfg: &RunConfig) -> Result<(Self, usize), RunError> {
        let crop = cfg.train.crop as u32;
        let seed = cfg.train.seed;
        let clean = FramePool::load(
            &cfg.data.clean,
            cfg.footage_options(),
            crop,
            "clean footage",
        )?;
        log::info!("clean footage: {}", clean.summary());
        let (clean, added) = clean.with_smaller_copies(&cfg.data.extra_downscales, crop);
        for (x, n) in cfg.data.extra_downscales.iter().zip(added) {
            match n {
                0 => log::warn!("clean footage at {x}x smaller: no frame holds a {crop}px crop"),
                n => log::info!("clean footage at {x}x smaller: {n} frames"),
            }
        }
        Ok(match cfg.train.stage {
            Stage::Pretrain => {
                let n = clean.len();
                (
                    StageData::Synthetic(cfg.data.synthetic_pairs(clean, crop, seed)),
                    n,
                )
            }
            Stage::Anlcl => {
                // Unpaired means unpaired: the rainy frames' own clean frames stay unreadable.
                crate::footage::split::check_unpaired(&cfg.data.clean, &cfg.data.rainy)
                    .map_err(|e| RunError::Other(e.to_string()))?;
                let rainy = FramePool::load(
                    &cfg.data.rainy,
                    cfg.rainy_footage_options(),
                    crop,
                    "rainy footage",
                )?;
                log::info!("rainy footage: {}", rainy.summary());
                let n = rainy.len();
                // Its own sampling streams, so the unpaired crops do not change with the term.
                let synthetic = (cfg.train.loss.synthetic > 0.0)
                    .then(|| Box::new(cfg.data.synthetic_pairs(clean.clone(), crop, seed)));
                (
                    StageData::Unpaired(UnpairedCrops::new(rainy, clean, crop, seed), synthetic),
                    n,
                )
            }
        })
    }

    fn batch(&self, step: u64, n: usize) -> Result<crate::dataset::Batch, RunError> {
        Ok(match self {
            StageData::Synthetic(s) => s.batch(step, n)?,
            StageData::Unpaired(u, _) => u.batch(step, n),
        })
    }

    /// Stage 2's synthetic pairs for step `step` (`None` without `loss.synthetic`).
    fn synthetic_batch(
        &self,
        step: u64,
        n: usize,
    ) -> Result<Option<crate::dataset::Batch>, RunError> {
        match self {
            StageData::Unpaired(_, Some(s)) => Ok(Some(s.batch(step, n)?)),
            _ => Ok(None),
        }
    }
}

fn tensor(data: &[f32], n: usize, s: usize) -> Tensor {
    Tensor::from_slice(data).view([n as i64, 3, s as i64, s as i64])
}

/// What a finished (or stopped) run reports.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    pub steps: u64,
    pub seconds: f64,
    pub last_loss: Option<f64>,
    pub validation: Option<Validation>,
}

/// Scores on the validation pairs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Validation {
    pub step: u64,
    pub images: usize,
    pub psnr_y: f64,
    pub ssim_y: f64,
    pub input_psnr_y: f64,
    pub input_ssim_y: f64,
}

/// Runs (or resumes) a training stage in `dir`.
pub fn run(cfg: &RunConfig, dir: &Path, resume: bool) -> Result<RunSummary, RunError> {
    let started = Instant::now();
    check_data_paths(cfg)?;
    std::fs::create_dir_all(dir.join("samples")).map_err(io_err(dir))?;
    let ckpt = dir.join(CHECKPOINT_FILE);
    remove_stale_temporaries(dir);
    let mut trainer = if resume {
        if !ckpt.is_file() {
            return Err(RunError::NothingToResume(dir.to_owned()));
        }
        let t = Trainer::load(&ckpt, &cfg.train)?;
        log::info!("resuming {} at step {}", dir.display(), t.step_count());
        truncate_log(&dir.join(LOG_FILE), t.step_count())?;
        t
    } else {
        if ckpt.exists() {
            return Err(RunError::RunExists(dir.to_owned()));
        }
        let mut t = match &cfg.run.init {
            Some(init) if super::import::is_model_path(init) => {
                let t = Trainer::from_model(init, &cfg.train)?;
                log::info!(
                    "starting from the generator of model {} (G_B; see derain::train::import)",
                    init.display()
                );
                t
            }
            Some(init) => {
                let mut t = Trainer::load(init, &cfg.train)?;
                // A new stage: the networks carry over, the optimisers and schedule start anew.
                t.reset_optimisers();
                log::info!("starting from the networks of {}", init.display());
                t
            }
            None => Trainer::new(&cfg.train)?,
        };
        if let Some(d) = &cfg.run.init_discriminator {
            t.load_discriminator(d)?;
            log::info!(
                "discriminator and layer heads from {} (fresh D optimiser)",
                d.display()
            );
        }
        t
    };
    imageio::write_file_atomic(&dir.join(CONFIG_FILE), cfg.to_toml()?.as_bytes())
        .map_err(io_err(dir))?;
    let (data, frames) = StageData::load(cfg)?;
    let validation_pairs = match &cfg.data.validation {
        Some(v) => load_validation(v, cfg.data.validation_limit)?,
        None => Vec::new(),
    };
    let batch = cfg.train.batch;
    let s = cfg.train.crop;
    let validate_every = match cfg.run.validate_every {
        0 => (frames as u64).div_ceil(batch as u64).max(1),
        n => n,
    };

    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(LOG_FILE))
        .map_err(io_err(dir))?;
    let total = cfg.run.steps;
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} {prefix} [{bar:30}] {pos}/{len} {msg} eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_prefix(format!("{:?}", cfg.train.stage).to_lowercase());
    bar.set_position(trainer.step_count());
    let mut last: Option<StepReport> = None;
    let mut validation = None;
    while trainer.step_count() < total {
        let step = trainer.step_count();
        let t0 = Instant::now();
        let b = data.batch(step, batch)?;
        let rainy = tensor(&b.rainy, b.n, s);
        let clean = tensor(&b.clean, b.n, s);
        let report = match &b.rain {
            Some(r) => {
                let rain = tensor(r, b.n, s);
                trainer.step_batch(Batch::Pretrain {
                    rainy: &rainy,
                    clean: &clean,
                    rain: &rain,
                })?
            }
            None => {
                let synthetic = data.synthetic_batch(step, batch)?;
                let tensors = synthetic.as_ref().and_then(|b| {
                    let rain = b.rain.as_ref()?;
                    Some([
                        tensor(&b.rainy, b.n, s),
                        tensor(&b.clean, b.n, s),
                        tensor(rain, b.n, s),
                    ])
                });
                trainer.step_batch(Batch::Anlcl {
                    rainy: &rainy,
                    clean: &clean,
                    synthetic: tensors.as_ref().map(|[rainy, clean, rain]| SyntheticBatch {
                        rainy,
                        clean,
                        rain,
                    }),
                })?
            }
        };
        let secs = t0.elapsed().as_secs_f64();
        let mut line = serde_json::to_value(&report).map_err(|e| RunError::Other(e.to_string()))?;
        line["images_per_s"] = serde_json::json!(batch as f64 / secs);
        line["data_s"] = serde_json::json!(secs - report.time.total);
        writeln!(log, "{line}").map_err(io_err(dir))?;
        bar.set_position(report.step);
        bar.set_message(format!(
            "loss {:.4} {:.2} img/s",
            report.generator_total,
            batch as f64 / secs
        ));
        let done = report.step;
        if done % cfg.run.checkpoint_every == 0 || done == total {
            log.flush().map_err(io_err(dir))?;
            trainer.save(&ckpt)?;
        }
        if done % validate_every == 0 || done == total {
            validation = score_validation(&trainer, &validation_pairs, done)?;
            if let Some(v) = &validation {
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(dir.join(VALIDATION_FILE))
                    .map_err(io_err(dir))?;
                let text = serde_json::to_string(v).map_err(|e| RunError::Other(e.to_string()))?;
                writeln!(f, "{text}").map_err(io_err(dir))?;
                bar.println(format!(
                    "step {done}: validation PSNR-Y {:.2} dB (input {:.2}), SSIM-Y {:.4} (input {:.4})",
                    v.psnr_y, v.input_psnr_y, v.ssim_y, v.input_ssim_y
                ));
            }
            write_charts(dir)?;
            write_samples(&trainer, &data, dir, done, s)?;
        }
        last = Some(report);
    }
    bar.finish_and_clear();
    Ok(RunSummary {
        steps: trainer.step_count(),
        seconds: started.elapsed().as_secs_f64(),
        last_loss: last.map(|r| r.generator_total),
        validation,
    })
}

/// A run killed while writing a checkpoint leaves its temporary file (never the checkpoint
/// itself, which is only ever replaced by a rename); clear those on the next start.
fn remove_stale_temporaries(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(".checkpoint-") && name.ends_with(".tmp") {
            log::info!("removing {name}, left by an interrupted checkpoint write");
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Drops log lines past `step` (written after the last checkpoint by a run that was then
/// killed) and any half-written last line, so the log matches the resumed state.
fn truncate_log(path: &Path, step: u64) -> Result<(), RunError> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v["step"].as_u64())
                .is_some_and(|s| s <= step)
        })
        .collect();
    let mut out = kept.join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    imageio::write_file_atomic(path, out.as_bytes()).map_err(io_err(path))
}

/// Every path the run's data comes from exists: checked before the run folder, the networks or
/// a checkpoint are touched, so a mistyped path fails at once by its key rather than after
/// the set-up. What the sources hold is checked as they load.
fn check_data_paths(cfg: &RunConfig) -> Result<(), RunError> {
    let rainy: &[PathBuf] = match cfg.train.stage {
        Stage::Pretrain => &[],
        Stage::Anlcl => &cfg.data.rainy,
    };
    let sources = [("data.clean", &cfg.data.clean[..]), ("data.rainy", rainy)];
    let validation = cfg.data.validation.iter().map(|v| ("data.validation", v));
    let paths = sources
        .into_iter()
        .flat_map(|(key, paths)| paths.iter().map(move |p| (key, p)))
        .chain(validation);
    for (key, path) in paths {
        if !path.exists() {
            return Err(RunError::MissingData {
                key,
                path: path.clone(),
            });
        }
    }
    Ok(())
}

/// Validation pairs (rainy, clean) in name order, at most `limit`.
fn load_validation(
    dir: &Path,
    limit: usize,
) -> Result<Vec<(String, RgbImage, RgbImage)>, RunError> {
    let pairs = crate::eval::match_pairs(&dir.join("rainy"), &dir.join("clean"))
        .map_err(|e| RunError::Other(format!("validation folder: {e}")))?;
    let mut out = Vec::new();
    for (name, r, c) in pairs.into_iter().take(limit) {
        let load = |p: &Path| imageio::load_rgb(p).map_err(|e| RunError::Other(e.to_string()));
        let (r, c) = (load(&r)?, load(&c)?);
        if r.dimensions() != c.dimensions() {
            return Err(RunError::Other(format!(
                "validation pair {name} differs in size"
            )));
        }
        out.push((name, r, c));
    }
    Ok(out)
}

/// Which way each stage-2 term pulls the generators of `checkpoint`, judged on rainy frames whose
/// clean frames are known (`truth`: a folder with `rainy/` and `clean/`, the trainer's
/// validation layout; the clean frames only give the reference direction and never enter the
/// objective): [`Trainer::term_gradients`] summed over `batches` batches of `cfg`'s batch size
/// and crop, the unpaired clean crops drawn from `cfg`'s clean footage as in training. Answers
/// "which term pushes the wrong way" at one point of a run without training anything.
pub fn probe_terms(
    cfg: &RunConfig,
    checkpoint: &Path,
    truth: &Path,
    batches: usize,
) -> Result<Vec<super::TermAlignment>, RunError> {
    use rand::{Rng, SeedableRng};
    if cfg.train.stage != Stage::Anlcl {
        return Err(RunError::Other(
            "probe-terms weighs stage 2's terms: the config's train.stage must be \"anlcl\"".into(),
        ));
    }
    if batches == 0 {
        return Err(RunError::Other(
            "probe-terms: --batches must be at least 1".into(),
        ));
    }
    let mut trainer = Trainer::load(checkpoint, &cfg.train)?;
    let crop = cfg.train.crop;
    let pairs: Vec<_> = load_validation(truth, usize::MAX)?
        .into_iter()
        .filter(|(_, r, _)| r.width() as usize >= crop && r.height() as usize >= crop)
        .collect();
    if pairs.is_empty() {
        return Err(RunError::Other(format!(
            "{}: no pair holds a {crop}px crop",
            truth.display()
        )));
    }
    let (data, _) = StageData::load(cfg)?;
    let n = cfg.train.batch;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(cfg.train.seed);
    let mut sum: Option<super::TermGradients> = None;
    for b in 0..batches {
        let unpaired = data.batch(b as u64, n)?;
        let clean = tensor(&unpaired.clean, n, crop);
        let (mut rainy, mut known) = (Vec::new(), Vec::new());
        for _ in 0..n {
            let (_, r, c) = &pairs[rng.random_range(0..pairs.len())];
            let x = rng.random_range(0..=r.width() - crop as u32);
            let y = rng.random_range(0..=r.height() - crop as u32);
            crop_chw(r, x, y, crop as u32, &mut rainy);
            crop_chw(c, x, y, crop as u32, &mut known);
        }
        let g =
            trainer.term_gradients(&tensor(&rainy, n, crop), &clean, &tensor(&known, n, crop))?;
        match sum.as_mut() {
            Some(s) => s.add(&g)?,
            None => sum = Some(g),
        }
    }
    Ok(sum.map(|s| s.alignment()).unwrap_or_default())
}

/// Appends the `s`×`s` crop of `img` at (`x`, `y`) to `out` as planar RGB in [0, 1].
fn crop_chw(img: &RgbImage, x: u32, y: u32, s: u32, out: &mut Vec<f32>) {
    for c in 0..3 {
        for yy in y..y + s {
            for xx in x..x + s {
                out.push(f32::from(img.get_pixel(xx, yy)[c]) / 255.0);
            }
        }
    }
}

/// The trainer's G_B as a [`Network`], so validation runs the element's own frame path
/// ([`Derainer`]: conversion, reflect padding, crop, rounding) around it.
struct TrainedGenerator<'a> {
    trainer: &'a Trainer,
    multiple_of: u32,
}

impl Network for TrainedGenerator<'_> {
    type Error = tch::TchError;

    fn multiple_of(&self) -> u32 {
        self.multiple_of
    }

    fn run_padded<R>(
        &mut self,
        input: &[f32],
        h: usize,
        w: usize,
        consume: impl FnOnce(&[f32]) -> R,
    ) -> Result<R, tch::TchError> {
        let x = Tensor::from_slice(input).view([1, 3, h as i64, w as i64]);
        let y = self
            .trainer
            .derain(&x)
            .to_device(tch::Device::Cpu)
            .to_kind(Kind::Float)
            .contiguous()
            .view([-1]);
        let out = Vec::<f32>::try_from(&y)?;
        Ok(consume(&out))
    }
}

/// G_B on one image through the element's padding and conversion code.
pub fn derain_with(trainer: &Trainer, img: &RgbImage) -> Result<RgbImage, RunError> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let layout = FrameLayout::packed(PixelFormat::Rgb, w, h);
    let network = TrainedGenerator {
        trainer,
        multiple_of: trainer.config().generator.multiple_of() as u32,
    };
    // Validation images are stills: no camera-frame size limit.
    let mut derainer = Derainer::new(network).with_max_pixels(usize::MAX);
    let other = |e: DerainError<tch::TchError>| RunError::Other(e.to_string());
    derainer.configure(layout).map_err(other)?;
    let mut bytes = vec![0u8; w * h * 3];
    derainer
        .process(
            layout.strides,
            &[img.as_raw()],
            layout.strides,
            &mut [&mut bytes[..]],
        )
        .map_err(other)?;
    RgbImage::from_raw(img.width(), img.height(), bytes)
        .ok_or_else(|| RunError::Other("output size".into()))
}

fn score_validation(
    trainer: &Trainer,
    pairs: &[(String, RgbImage, RgbImage)],
    step: u64,
) -> Result<Option<Validation>, RunError> {
    if pairs.is_empty() {
        return Ok(None);
    }
    let (mut p, mut s, mut ip, mut is) = (0.0, 0.0, 0.0, 0.0);
    for (name, rainy, clean) in pairs {
        let out = derain_with(trainer, rainy)?;
        let m = |a: &RgbImage, b: &RgbImage| -> Result<(f64, f64), RunError> {
            let e = |e: metrics::MetricsError| RunError::Other(format!("{name}: {e}"));
            Ok((
                metrics::psnr_y(a, b).map_err(e)?,
                metrics::ssim_y(a, b).map_err(e)?,
            ))
        };
        let (a, b) = m(&out, clean)?;
        let (c, d) = m(rainy, clean)?;
        p += a;
        s += b;
        ip += c;
        is += d;
    }
    let n = pairs.len() as f64;
    Ok(Some(Validation {
        step,
        images: pairs.len(),
        psnr_y: p / n,
        ssim_y: s / n,
        input_psnr_y: ip / n,
        input_ssim_y: is / n,
    }))
}

/// `losses.png`: every term and the total, from the log.
fn write_charts(dir: &Path) -> Result<(), RunError> {
    let text = std::fs::read_to_string(dir.join(LOG_FILE)).unwrap_or_default();
    let mut series: Vec<Series> = Vec::new();
    let mut push = |name: &str, x: f64, y: Option<f64>| {
        let Some(y) = y else { return };
        match series.iter_mut().find(|s| s.name == name) {
            Some(s) => s.points.push((x, y)),
            None => series.push(Series {
                name: name.to_owned(),
                points: vec![(x, y)],
            }),
        }
    };
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let Some(step) = v["step"].as_f64() else {
            continue;
        };
        push("total", step, v["generator_total"].as_f64());
        push("discriminator", step, v["discriminator"].as_f64());
        if let Some(terms) = v["loss"].as_object() {
            for (k, val) in terms {
                push(k, step, val.as_f64());
            }
        }
    }
    // Thin long runs to about 2000 points per curve, averaging each bucket to show the trend.
    for s in &mut series {
        let bucket = s.points.len().div_ceil(2000).max(1);
        if bucket > 1 {
            s.points = s
                .points
                .chunks(bucket)
                .map(|c| {
                    let n = c.len() as f64;
                    (
                        c.iter().map(|p| p.0).sum::<f64>() / n,
                        c.iter().map(|p| p.1).sum::<f64>() / n,
                    )
                })
                .collect();
        }
    }
    let img = log_chart("training losses (log scale)", "step", &series);
    imageio::save_png_atomic(&img, &dir.join("losses.png"))
        .map_err(|e| RunError::Other(e.to_string()))
}

/// A sample grid: for a fixed batch, rows of O | B̂ | R̂ (R̂ shown as |R̂|).
fn write_samples(
    trainer: &Trainer,
    data: &StageData,
    dir: &Path,
    step: u64,
    s: usize,
) -> Result<(), RunError> {
    // The same batch every time (a step number training never reaches), so grids compare.
    let b = data.batch(u64::MAX, 3)?;
    let rainy = tensor(&b.rainy, b.n, s);
    let (clean_hat, rain_hat) = {
        let _guard = tch::no_grad_guard();
        let x = rainy.to_device(trainer.device());
        (
            trainer.derain(&x),
            trainer.generator(GeneratorOutput::Rain).forward(&x).abs(),
        )
    };
    let to_vec = |t: &Tensor| -> Result<Vec<f32>, RunError> {
        Vec::<f32>::try_from(&t.to_device(tch::Device::Cpu).contiguous().view([-1]))
            .map_err(|e| RunError::Other(e.to_string()))
    };
    let (b_hat, r_hat) = (to_vec(&clean_hat)?, to_vec(&rain_hat)?);
    let len = 3 * s * s;
    let side = s as u32;
    let mut grid = RgbImage::new(3 * side, b.n as u32 * side);
    for i in 0..b.n {
        let row = [
            chw_to_image(&b.rainy[i * len..][..len], side, side),
            chw_to_image(&b_hat[i * len..][..len], side, side),
            chw_to_image(&r_hat[i * len..][..len], side, side),
        ];
        for (j, img) in row.iter().enumerate() {
            image::imageops::replace(&mut grid, img, i64::from(j as u32 * side), (i * s) as i64);
        }
    }
    imageio::save_png_atomic(&grid, &dir.join(format!("samples/step-{step:07}.png")))
        .map_err(|e| RunError::Other(e.to_string()))
}

/// Exports G_B (or G_R with `rain`) of a run directory or checkpoint file to `out`, with a card
/// recording the architecture, the training (stage, steps, data, losses and weights, seed) and
/// the last validation scores. Returns the file's size.
///
/// `card_extra`, a JSON object, adds to the card: its `training` and `scores` objects are merged
/// into the card's (e.g. wall time, the exact command, dev-set scores), `licence` replaces it.
pub fn export(
    source: &Path,
    out: &Path,
    rain: bool,
    fp16: bool,
    name: Option<&str>,
    card_extra: Option<&serde_json::Value>,
) -> Result<usize, RunError> {
    let (dir, ckpt) = if source.is_dir() {
        (Some(source.to_owned()), source.join(CHECKPOINT_FILE))
    } else {
        (source.parent().map(Path::to_owned), source.to_owned())
    };
    let cfg = match dir
        .as_ref()
        .map(|d| d.join(CONFIG_FILE))
        .filter(|p| p.is_file())
    {
        Some(p) => RunConfig::load(&p, &[])?,
        None => {
            return Err(RunError::Other(format!(
                "no {CONFIG_FILE} beside {}: export needs the run directory the checkpoint \
                 came from",
                ckpt.display()
            )));
        }
    };
    let trainer = Trainer::load(&ckpt, &cfg.train)?;
    let name = name.unwrap_or(&cfg.run.name);
    let mut card = trainer.model_card(name);
    let last_validation = dir
        .as_ref()
        .and_then(|d| std::fs::read_to_string(d.join(VALIDATION_FILE)).ok())
        .and_then(|t| {
            t.lines()
                .rev()
                .find_map(|l| serde_json::from_str::<Validation>(l).ok())
        });
    card.training = serde_json::json!({
        "stage": cfg.train.stage,
        "steps": trainer.step_count(),
        "init": cfg.run.init,
        "seed": cfg.train.seed,
        "batch": cfg.train.batch,
        "crop": cfg.train.crop,
        "device": cfg.train.device,
        "losses": cfg.train.loss,
        "sampler": cfg.train.sampler,
        "optimiser": cfg.train.optimiser,
        "data": cfg.data,
        "trainer": format!("derain {}", env!("CARGO_PKG_VERSION")),
    });
    // Paths as the shared data folder or the repository names them, not as this machine does.
    crate::devdata::portable_paths_in(&mut card.training);
    card.training["paths"] = serde_json::json!(
        "data paths are relative to the shared data folder ($DERAIN_DATA, or ../shared/data \
         beside the repository); ./ paths to the directory the export ran in"
    );
    if let Some(v) = &last_validation {
        card.scores = serde_json::json!({ "validation": v });
    }
    if let Some(extra) = card_extra {
        let Some(extra) = extra.as_object() else {
            return Err(RunError::Other(
                "the card additions must be a JSON object with `training`, `scores` or \
                 `licence`"
                    .into(),
            ));
        };
        for (key, value) in extra {
            match (key.as_str(), value) {
                ("training" | "scores", serde_json::Value::Object(add)) => {
                    let target = if key == "training" {
                        &mut card.training
                    } else {
                        &mut card.scores
                    };
                    if !target.is_object() {
                        *target = serde_json::json!({});
                    }
                    if let Some(t) = target.as_object_mut() {
                        t.extend(add.clone());
                    }
                }
                ("licence", serde_json::Value::String(l)) => card.licence = l.clone(),
                _ => {
                    return Err(RunError::Other(format!(
                        "card additions: `{key}` must be `training` or `scores` (objects) or \
                         `licence` (a string)"
                    )));
                }
            }
        }
    }
    let which = if rain {
        GeneratorOutput::Rain
    } else {
        GeneratorOutput::Clean
    };
    let precision = if fp16 {
        crate::card::Precision::Fp16
    } else {
        crate::card::Precision::Fp32
    };
    let bytes = trainer.export_as(which, &card, precision)?;
    imageio::write_file_atomic(out, &bytes).map_err(io_err(out))?;
    Ok(bytes.len())
}
