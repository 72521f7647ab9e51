//! The trainer's settings ([`TrainConfig`]), read from TOML. Every key has a default (the paper's
//! value where it has one), unknown keys are refused, and [`TrainConfig::validate`] names the key
//! and its allowed range when a value is out of range.
//!
//! ```toml
//! stage = "anlcl"        # or "pretrain"
//! device = "cpu"         # "cuda", "cuda:1"
//! seed = 0
//! batch = 4
//! crop = 256
//!
//! [generator]            # G_B and G_R share the architecture
//! arch = "resnet9"       # base = 16, blocks = 9 | "fullres": channels, blocks | "lite": factor, channels, blocks
//!
//! [loss]
//! asymmetric = 0.01      # weight 0 removes a term (it is not computed)
//! temperature = 0.07
//! ```

use std::fmt::Display;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use crate::onnx::{FullResConfig, LiteConfig, Resnet9Config};

/// A config that cannot be used; every message names the file or key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read training config '{path}': {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("training config '{origin}' does not parse: {message}")]
    Parse { origin: String, message: String },
    #[error("training config: `{key}` = {value} is out of range; allowed: {allowed}")]
    Range {
        key: String,
        value: String,
        allowed: String,
    },
    #[error(
        "training config: `device` = \"{0}\" is not a device; use \"cpu\", \"cuda\" or \"cuda:N\""
    )]
    Device(String),
}

/// Which of the two training stages (docs/ARCHITECTURE.md, Training (ANLCL)) a run is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// Stage 1: both generators supervised on synthetic rainy/clean pairs, with D, no
    /// contrastive terms ([`crate::train::Trainer::step_pretrain`]).
    Pretrain,
    /// Stage 2: every loss on real unlabelled rain ([`crate::train::Trainer::step_anlcl`]).
    #[default]
    Anlcl,
}

/// The generator architecture (G_B and G_R use the same one): the ONNX writer's own configs, so
/// the trainer's network and the exported graph are described by one value. In TOML,
/// `generator = { arch = "lite", factor = 4, channels = 32, blocks = 3 }`; a missing field takes
/// that architecture's default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "arch", rename_all = "lowercase", deny_unknown_fields)]
pub enum GeneratorArch {
    /// ResNet-9 (Johnson), the paper's network ([`crate::onnx::resnet9`]).
    Resnet9(Resnet9Config),
    /// The authors' full-resolution network ([`crate::onnx::fullres`]): a GPU network.
    Fullres(FullResConfig),
    /// The CPU real-time network ([`crate::onnx::lite`]).
    Lite(LiteConfig),
}

impl Default for GeneratorArch {
    /// ResNet-9 with 16 base channels (the paper's size).
    fn default() -> Self {
        GeneratorArch::Resnet9(Resnet9Config::default())
    }
}

impl GeneratorArch {
    /// The architecture string the exported card carries, e.g. `resnet9(base=16, blocks=9)`.
    pub fn describe(&self) -> String {
        match self {
            GeneratorArch::Resnet9(c) => c.architecture(),
            GeneratorArch::Fullres(c) => c.architecture(),
            GeneratorArch::Lite(c) => c.architecture(),
        }
    }

    /// H and W of the generator's input must be multiples of this.
    pub fn multiple_of(&self) -> usize {
        match self {
            GeneratorArch::Resnet9(_) => Resnet9Config::MULTIPLE_OF as usize,
            GeneratorArch::Fullres(_) => FullResConfig::MULTIPLE_OF as usize,
            GeneratorArch::Lite(c) => c.factor,
        }
    }

    /// Multiply-accumulates per input pixel of one generator.
    pub fn mac_per_pixel(&self) -> f64 {
        match self {
            GeneratorArch::Resnet9(c) => c.mac_per_pixel(),
            GeneratorArch::Fullres(c) => c.mac_per_pixel(),
            GeneratorArch::Lite(c) => c.mac_per_pixel(),
        }
    }
}

/// The PatchGAN discriminator, which doubles as the layer-contrastive feature encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiscriminatorConfig {
    /// Channels of the first layer (pix2pix's ndf).
    pub base: usize,
    /// Stride-2 layers (3 gives the 70×70 PatchGAN); the encoder features are the input and
    /// each of these layers' outputs.
    pub layers: usize,
    /// Halve the resolution with a stride-1 4×4 convolution followed by a fixed blur-pool
    /// ([1,3,3,1]⊗[1,3,3,1]/64, stride 2, reflect padding) instead of a stride-2 convolution, as
    /// the PatchGAN of CUT and of the NLCL authors does: a stride-2 convolution aliases
    /// one-pixel detail (rain streaks) into coarse features that flip with a one-pixel shift.
    /// The parameters are the same either way, so checkpoints of both load.
    pub antialias: bool,
    /// How the rain layer R̂ (in [−1,1]) enters D for the layer and asymmetric terms.
    pub rain_input: RainInput,
}

impl Default for DiscriminatorConfig {
    fn default() -> Self {
        Self {
            base: 64,
            layers: 3,
            antialias: true,
            rain_input: RainInput::Signed,
        }
    }
}

/// `discriminator.rain_input`: the range D sees R̂ in (images go in as 2x − 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RainInput {
    /// 2R̂: no rain (R̂ = 0) is 0, where a mid-grey image sits; the sign of the rain is kept.
    #[default]
    Signed,
    /// 2R̂ − 1, as if R̂ were an image: no rain reads as black (before this setting existed).
    Image,
}

/// `loss.scale`: the units the consistency and L1 terms are computed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossScale {
    /// The authors' code's: on tensors in [−1,1] (x → 2x − 1, so R̂ → 2R̂), which multiplies
    /// the squared consistency term by 4 and the L1 term by 2 against [0,1] images.
    #[default]
    Authors,
    /// On [0,1] images and R̂ in image units (before this setting existed).
    Unit,
}

/// `loss.l1_target`: what the L1 term (weight `loss.sparsity`, λ) is taken of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum L1Target {
    /// ‖R̂‖₁ of G_R's rain layer, as the paper prints it (before this setting existed).
    Rain,
    /// ‖O − B̂‖₁ of G_B's output, as the authors' code computes it: the change G_B makes
    /// must be sparse.
    #[default]
    Background,
}

/// `loss.location_source`: which encoder gives the location (and identity) term its features.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LocationSource {
    /// G_B's own encoder, every feature layer (CUT; momentum copy for the keys). For the
    /// residual generators (lite, residual ResNet-9) that encoder belongs to the rain
    /// predictor, whose deep blocks describe the rain it subtracts: asking B̂'s features to
    /// match O's there asks B̂ to keep O's rain.
    #[default]
    RainPredictor,
    /// G_B's encoder up to its residual blocks only (the input and the first convolutions),
    /// which carry the image itself rather than the rain estimate.
    Background,
    /// A frozen copy of G_B as the stage started (the stage-1 generator when `run.init` names
    /// one), every feature layer, for queries and keys alike: features that cannot drift
    /// towards whatever makes the term easy. Gradients reach G_B through B̂ only.
    FrozenStage1,
}

/// The projection heads and the momentum encoders that compute the keys.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HeadsConfig {
    /// Units of both MLP layers.
    pub units: usize,
    /// EMA momentum of the key copies (MoCo): key ← m·key + (1 − m)·online.
    pub momentum: f64,
}

impl Default for HeadsConfig {
    fn default() -> Self {
        Self {
            units: 256,
            momentum: 0.99,
        }
    }
}

/// Loss weights (docs/ARCHITECTURE.md, Training (ANLCL); paper values) and the contrastive
/// temperature. A weight of 0 removes its term: it is not computed at all.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LossConfig {
    /// ‖B̂ + R̂ − O‖² (mean over elements; in the units `scale` names).
    pub consistency: f64,
    /// λ, the L1 term (mean over elements): ‖R̂‖₁ or ‖O − B̂‖₁ as `l1_target` says.
    pub sparsity: f64,
    /// δ, least-squares GAN on B̂ against clean frames; 0 also skips the discriminator step.
    pub adversarial: f64,
    /// μ, the layer contrastive term.
    pub layer_contrastive: f64,
    /// γ, the asymmetric contrastive term.
    pub asymmetric: f64,
    /// σ, the location (PatchNCE) term.
    pub location: f64,
    /// Stage 1 only: L1 of B̂ to the clean frame and of R̂ to the rain layer.
    pub supervised: f64,
    /// Stage 2 only: the same L1 terms on synthetic pairs rendered over the clean footage (as
    /// stage 1 draws them), added to ANLCL's terms each step so that stage 2 on a small set of
    /// real rain cannot unlearn what stage 1 taught. 0 (the default) leaves the term out: the
    /// paper's unsupervised stage 2.
    pub synthetic: f64,
    /// Temperature of every contrastive term (the paper prints 0.77, the authors' code uses 0.07).
    pub temperature: f64,
    /// Stage 2: identity PatchNCE (CUT's `nce_idt`, on in the authors' code): G_B(B) on clean
    /// frames must match B patch for patch, with B's farthest patches as negatives, on the
    /// encoder `location_source` names. CUT and the authors average it with the location term
    /// (both weights 0.5 reproduce their scale); 1 keeps the two terms equal, as there.
    pub identity: f64,
    /// Units of the consistency and L1 terms (see [`LossScale`]).
    pub scale: LossScale,
    /// What the L1 term is taken of (see [`L1Target`]).
    pub l1_target: L1Target,
    /// Features of the location and identity terms (see [`LocationSource`]).
    pub location_source: LocationSource,
}

impl Default for LossConfig {
    fn default() -> Self {
        Self {
            consistency: 1.0,
            sparsity: 0.1,
            adversarial: 1.0,
            layer_contrastive: 1.0,
            asymmetric: 0.01,
            location: 1.0,
            supervised: 1.0,
            synthetic: 0.0,
            temperature: 0.07,
            identity: 1.0,
            scale: LossScale::Authors,
            l1_target: L1Target::Background,
            location_source: LocationSource::RainPredictor,
        }
    }
}

/// The non-local sampler: block matching of image patches around random anchors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SamplerConfig {
    /// Side of the square patches compared, in pixels.
    pub patch: usize,
    /// Search window: candidates lie within ± this many pixels of the anchor.
    pub window: usize,
    /// Anchors per image per step (the authors' code: 1).
    pub anchors_per_image: usize,
    /// N_B: nearest B̂ patches to an anchor, the layer term's positives.
    pub positives: usize,
    /// N_R: nearest R̂ patches to an anchor, the layer term's negatives.
    pub rain_negatives: usize,
    /// N: farthest O patches to an anchor, the location term's ("reverse non-local") negatives.
    pub location_negatives: usize,
    /// Histogram bins of the entropy that sets the asymmetric term's sign.
    pub entropy_bins: usize,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        Self {
            patch: 16,
            window: 20,
            anchors_per_image: 16,
            positives: 8,
            rain_negatives: 256,
            location_negatives: 256,
            entropy_bins: 64,
        }
    }
}

impl SamplerConfig {
    /// Candidates a search window holds for an image of `size` pixels at worst (an anchor in a
    /// corner): the largest N_B, N_R or N that always works.
    pub fn min_candidates(&self, height: usize, width: usize) -> usize {
        let side = |n: usize| self.window.min(n.saturating_sub(self.patch)) + 1;
        side(height) * side(width)
    }
}

/// Adam (written out in [`crate::train::optim`] so its state can be saved) and the learning
/// rate schedule: constant, then linear decay to 0.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimiserConfig {
    /// Learning rate before the decay (paper: 2e-4).
    pub lr: f64,
    /// Adam β₁ (paper: 0.5, as in pix2pix/CycleGAN).
    pub beta1: f64,
    /// Adam β₂.
    pub beta2: f64,
    /// Adam ε.
    pub eps: f64,
    /// Step at which the linear decay starts.
    pub decay_start: u64,
    /// Step at which the learning rate reaches 0.
    pub decay_end: u64,
    /// For this many first steps the generators are held fixed while the discriminator and the
    /// projection heads learn: when a stage starts from trained generators with a fresh
    /// discriminator and heads, their first gradients are noise that would undo the generators.
    pub generator_warmup: u64,
    /// For this many first steps only the discriminator trains, on the GAN loss: the
    /// generators and heads are held and no generator term is computed, so a fresh D (stage 2
    /// from a stage 1 without it) learns to tell B̂ from clean frames before its judgement and
    /// features steer the generators. Counted from step 0, as `generator_warmup` is.
    pub discriminator_warmup: u64,
}

impl Default for OptimiserConfig {
    fn default() -> Self {
        Self {
            lr: 2e-4,
            beta1: 0.5,
            beta2: 0.999,
            eps: 1e-8,
            decay_start: 100_000,
            decay_end: 200_000,
            generator_warmup: 0,
            discriminator_warmup: 0,
        }
    }
}

impl OptimiserConfig {
    /// The learning rate for the step that follows `step` completed steps.
    pub fn lr_at(&self, step: u64) -> f64 {
        if step < self.decay_start {
            return self.lr;
        }
        let span = (self.decay_end - self.decay_start) as f64;
        self.lr * (1.0 - (step - self.decay_start) as f64 / span).max(0.0)
    }
}

/// Everything the trainer needs; see the module documentation for the TOML form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// The stage the command-line loop runs (the trainer offers both steps either way).
    pub stage: Stage,
    /// `cpu`, `cuda` or `cuda:N`.
    pub device: String,
    /// Seeds the weights and every random choice (anchors); a checkpoint carries the rest.
    pub seed: u64,
    /// Images per step (for the data loader; the trainer takes whatever batch it is given).
    pub batch: usize,
    /// Side of the square training crops (for the data loader; checked against the networks'
    /// and the sampler's minimum here, and each batch's size again at every step).
    pub crop: usize,
    /// `[generator]`: architecture and size of G_B and G_R.
    pub generator: GeneratorArch,
    /// `[discriminator]`.
    pub discriminator: DiscriminatorConfig,
    /// `[heads]`: projection heads and momentum keys.
    pub heads: HeadsConfig,
    /// `[loss]`: weights and temperature.
    pub loss: LossConfig,
    /// `[sampler]`: the non-local search.
    pub sampler: SamplerConfig,
    /// `[optimiser]`: Adam and the learning-rate schedule.
    pub optimiser: OptimiserConfig,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            stage: Stage::default(),
            device: "cpu".to_owned(),
            seed: 0,
            batch: 4,
            crop: 256,
            generator: GeneratorArch::default(),
            discriminator: DiscriminatorConfig::default(),
            heads: HeadsConfig::default(),
            loss: LossConfig::default(),
            sampler: SamplerConfig::default(),
            optimiser: OptimiserConfig::default(),
        }
    }
}

/// Where a device setting points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSetting {
    Cpu,
    /// A CUDA device by index.
    Cuda(usize),
}

impl TrainConfig {
    /// Parses and validates a TOML config; `origin` names it in errors.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let cfg: TrainConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            origin: origin.to_owned(),
            message: e.to_string(),
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reads, parses and validates a TOML file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml_str(&text, &path.display().to_string())
    }

    /// The config as TOML (every key, defaults included).
    pub fn to_toml_string(&self) -> String {
        // Plain data with string keys always serialises.
        toml::to_string(self).unwrap_or_default()
    }

    /// The parsed `device`.
    pub fn device_setting(&self) -> Result<DeviceSetting, ConfigError> {
        match self.device.as_str() {
            "cpu" => Ok(DeviceSetting::Cpu),
            "cuda" => Ok(DeviceSetting::Cuda(0)),
            d => d
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(DeviceSetting::Cuda)
                .ok_or_else(|| ConfigError::Device(d.to_owned())),
        }
    }

    /// The smallest crop side the networks and the sampler accept.
    pub fn min_crop(&self) -> usize {
        // PatchGAN: `layers` halvings, then two 4×4 stride-1 convolutions that each lose a pixel.
        let disc = 3 << self.discriminator.layers;
        disc.max(self.sampler.patch)
            .max(self.generator.multiple_of())
    }

    /// Checks every value against its allowed range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.device_setting()?;
        range("batch", self.batch, 1, 4096)?;
        match self.generator {
            GeneratorArch::Resnet9(Resnet9Config { base, blocks, .. }) => {
                range("generator.base", base, 1, 512)?;
                range("generator.blocks", blocks, 0, 64)?;
            }
            GeneratorArch::Fullres(FullResConfig { channels, blocks }) => {
                range("generator.channels", channels, 1, 512)?;
                range("generator.blocks", blocks, 0, 64)?;
            }
            GeneratorArch::Lite(LiteConfig {
                factor,
                channels,
                blocks,
                context,
            }) => {
                if factor != 2 && factor != 4 {
                    return Err(out_of_range("generator.factor", factor, "2 or 4"));
                }
                range("generator.channels", channels, 1, 1024)?;
                range("generator.blocks", blocks, 0, 64)?;
                range("generator.context", context, 0, 6)?;
            }
        }
        range("discriminator.base", self.discriminator.base, 1, 512)?;
        range("discriminator.layers", self.discriminator.layers, 1, 6)?;
        range("heads.units", self.heads.units, 1, 4096)?;
        range_open_hi("heads.momentum", self.heads.momentum, 0.0, 1.0)?;

        let l = &self.loss;
        for (key, w) in [
            ("loss.consistency", l.consistency),
            ("loss.sparsity", l.sparsity),
            ("loss.adversarial", l.adversarial),
            ("loss.layer_contrastive", l.layer_contrastive),
            ("loss.asymmetric", l.asymmetric),
            ("loss.location", l.location),
            ("loss.supervised", l.supervised),
            ("loss.synthetic", l.synthetic),
            ("loss.identity", l.identity),
        ] {
            range(key, w, 0.0, 1e6)?;
        }
        if !(l.temperature > 0.0 && l.temperature <= 100.0) {
            return Err(out_of_range("loss.temperature", l.temperature, "(0, 100]"));
        }

        let s = &self.sampler;
        range("sampler.patch", s.patch, 1, 256)?;
        range("sampler.window", s.window, 1, 512)?;
        range("sampler.anchors_per_image", s.anchors_per_image, 1, 4096)?;
        range("sampler.entropy_bins", s.entropy_bins, 2, 65536)?;
        let mult = self.generator.multiple_of();
        let min_crop = self.min_crop();
        if self.crop < min_crop || self.crop > 16384 || !self.crop.is_multiple_of(mult) {
            return Err(out_of_range(
                "crop",
                self.crop,
                &format!(
                    "{min_crop}..=16384 and a multiple of {mult} (generator, discriminator and \
                     sampler.patch)"
                ),
            ));
        }
        let most = s.min_candidates(self.crop, self.crop);
        range("sampler.positives", s.positives, 2, most)?;
        range("sampler.rain_negatives", s.rain_negatives, 2, most)?;
        range("sampler.location_negatives", s.location_negatives, 1, most)?;

        let o = &self.optimiser;
        if !(o.lr > 0.0 && o.lr <= 1.0) {
            return Err(out_of_range("optimiser.lr", o.lr, "(0, 1]"));
        }
        range_open_hi("optimiser.beta1", o.beta1, 0.0, 1.0)?;
        range_open_hi("optimiser.beta2", o.beta2, 0.0, 1.0)?;
        if !(o.eps > 0.0 && o.eps <= 1.0) {
            return Err(out_of_range("optimiser.eps", o.eps, "(0, 1]"));
        }
        if o.discriminator_warmup > 0 && l.adversarial <= 0.0 {
            return Err(out_of_range(
                "optimiser.discriminator_warmup",
                o.discriminator_warmup,
                "0 while loss.adversarial is 0 (there is no discriminator step to warm up)",
            ));
        }
        if o.decay_end <= o.decay_start {
            return Err(out_of_range(
                "optimiser.decay_end",
                o.decay_end,
                &format!("greater than optimiser.decay_start ({})", o.decay_start),
            ));
        }
        Ok(())
    }
}

fn out_of_range(key: &str, value: impl Display, allowed: &str) -> ConfigError {
    ConfigError::Range {
        key: key.to_owned(),
        value: value.to_string(),
        allowed: allowed.to_owned(),
    }
}

/// `lo <= v <= hi` (NaN fails).
fn range<T: PartialOrd + Display>(key: &str, v: T, lo: T, hi: T) -> Result<(), ConfigError> {
    if v >= lo && v <= hi {
        Ok(())
    } else {
        Err(out_of_range(key, &v, &format!("{lo}..={hi}")))
    }
}

/// `lo <= v < hi` (NaN fails).
fn range_open_hi(key: &str, v: f64, lo: f64, hi: f64) -> Result<(), ConfigError> {
    if v >= lo && v < hi {
        Ok(())
    } else {
        Err(out_of_range(key, v, &format!("[{lo}, {hi})")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_paper_and_valid() {
        let cfg = TrainConfig::default();
        cfg.validate().expect("defaults are valid");
        assert_eq!(cfg.loss.sparsity, 0.1);
        assert_eq!(cfg.loss.asymmetric, 0.01);
        assert_eq!(cfg.sampler.positives, 8);
        assert_eq!(cfg.sampler.rain_negatives, 256);
        assert_eq!(cfg.optimiser.lr, 2e-4);
        // An empty file is the defaults; the TOML written back reads back the same.
        assert_eq!(TrainConfig::from_toml_str("", "empty").unwrap(), cfg);
        let back = TrainConfig::from_toml_str(&cfg.to_toml_string(), "round trip").unwrap();
        assert_eq!(back, cfg);
    }

    #[test]
    fn architectures_parse_with_their_own_defaults() {
        let cfg = TrainConfig::from_toml_str(
            "crop = 64\n[generator]\narch = \"lite\"\nchannels = 24\n",
            "t",
        )
        .unwrap();
        assert_eq!(
            cfg.generator,
            GeneratorArch::Lite(LiteConfig {
                factor: 4,
                channels: 24,
                blocks: 3,
                context: 0
            })
        );
        let cfg = TrainConfig::from_toml_str("[generator]\narch = \"fullres\"\n", "t").unwrap();
        assert_eq!(cfg.generator.describe(), "fullres(channels=32, blocks=16)");
        // Configs written before the residual option read as the plain network.
        let cfg = TrainConfig::from_toml_str("[generator]\narch = \"resnet9\"\n", "t").unwrap();
        assert_eq!(cfg.generator.describe(), "resnet9(base=16, blocks=9)");
        let cfg =
            TrainConfig::from_toml_str("[generator]\narch = \"resnet9\"\nresidual = true\n", "t")
                .unwrap();
        assert_eq!(
            cfg.generator.describe(),
            "resnet9(base=16, blocks=9, residual)"
        );
        let back = TrainConfig::from_toml_str(&cfg.to_toml_string(), "round trip").unwrap();
        assert_eq!(back, cfg);
    }

    #[test]
    fn unknown_keys_are_named() {
        for (text, key) in [
            ("batchsize = 3", "batchsize"),
            ("[loss]\ntemprature = 0.1", "temprature"),
            ("[generator]\narch = \"resnet9\"\nchannels = 8", "channels"),
            ("[generator]\narch = \"resnet10\"", "resnet10"),
        ] {
            let err = TrainConfig::from_toml_str(text, "bad.toml").unwrap_err();
            let msg = err.to_string();
            assert!(
                matches!(err, ConfigError::Parse { .. }) && msg.contains(key),
                "{text:?}: {msg}"
            );
            assert!(msg.contains("bad.toml"), "{msg}");
        }
    }

    #[test]
    fn out_of_range_values_are_named_with_their_range() {
        for (text, key, allowed) in [
            ("[loss]\ntemperature = 0.0", "loss.temperature", "(0, 100]"),
            ("[loss]\nsparsity = -1.0", "loss.sparsity", "0..=1000000"),
            ("[heads]\nmomentum = 1.0", "heads.momentum", "[0, 1)"),
            ("batch = 0", "batch", "1..=4096"),
            ("crop = 66", "crop", "multiple of 4"),
            (
                "[generator]\narch = \"lite\"\nfactor = 3",
                "generator.factor",
                "2 or 4",
            ),
            ("[sampler]\npositives = 1", "sampler.positives", "2..="),
            (
                "crop = 32\n[sampler]\nrain_negatives = 300",
                "sampler.rain_negatives",
                "..=289",
            ),
            (
                "[optimiser]\ndecay_end = 5",
                "optimiser.decay_end",
                "decay_start",
            ),
        ] {
            let err = TrainConfig::from_toml_str(text, "t").unwrap_err();
            let msg = err.to_string();
            match &err {
                ConfigError::Range { key: k, .. } => assert_eq!(k, key, "{msg}"),
                other => panic!("{text:?}: expected a range error, got {other}"),
            }
            assert!(msg.contains(key) && msg.contains(allowed), "{msg}");
        }
        let err = TrainConfig::from_toml_str("device = \"gpu\"", "t").unwrap_err();
        assert!(err.to_string().contains("gpu"), "{err}");
    }

    /// The issue-17 settings: their defaults, every value by name, and errors naming the key.
    #[test]
    fn stage2_settings_parse_with_their_defaults() {
        let d = TrainConfig::default();
        assert!(d.discriminator.antialias);
        assert_eq!(d.discriminator.rain_input, RainInput::Signed);
        assert_eq!(d.loss.scale, LossScale::Authors);
        assert_eq!(d.loss.l1_target, L1Target::Background);
        assert_eq!(d.loss.location_source, LocationSource::RainPredictor);
        assert_eq!(d.loss.identity, 1.0);
        assert_eq!(d.optimiser.discriminator_warmup, 0);

        let cfg = TrainConfig::from_toml_str(
            "[discriminator]\nantialias = false\nrain_input = \"image\"\n\
             [loss]\nscale = \"unit\"\nl1_target = \"rain\"\n\
             location_source = \"frozen_stage1\"\nidentity = 0.0\n\
             [optimiser]\ndiscriminator_warmup = 50\n",
            "t",
        )
        .unwrap();
        assert!(!cfg.discriminator.antialias);
        assert_eq!(cfg.discriminator.rain_input, RainInput::Image);
        assert_eq!(cfg.loss.scale, LossScale::Unit);
        assert_eq!(cfg.loss.l1_target, L1Target::Rain);
        assert_eq!(cfg.loss.location_source, LocationSource::FrozenStage1);
        assert_eq!(cfg.loss.identity, 0.0);
        assert_eq!(cfg.optimiser.discriminator_warmup, 50);
        let back = TrainConfig::from_toml_str(&cfg.to_toml_string(), "round trip").unwrap();
        assert_eq!(back, cfg);
        for v in ["rain_predictor", "background", "frozen_stage1"] {
            let text = format!("[loss]\nlocation_source = \"{v}\"");
            TrainConfig::from_toml_str(&text, "t").unwrap();
        }

        // A value that is not one of the choices names the key's choices.
        for (text, want) in [
            ("[discriminator]\nrain_input = \"unsigned\"", "signed"),
            ("[loss]\nscale = \"paper\"", "authors"),
            ("[loss]\nl1_target = \"clean\"", "background"),
            ("[loss]\nlocation_source = \"d\"", "frozen_stage1"),
        ] {
            let err = TrainConfig::from_toml_str(text, "t").unwrap_err();
            assert!(err.to_string().contains(want), "{text:?}: {err}");
        }
        for (text, key) in [
            ("[loss]\nidentity = -1.0", "loss.identity"),
            (
                "[loss]\nadversarial = 0.0\n[optimiser]\ndiscriminator_warmup = 3",
                "optimiser.discriminator_warmup",
            ),
        ] {
            match TrainConfig::from_toml_str(text, "t").unwrap_err() {
                ConfigError::Range { key: k, .. } => assert_eq!(k, key),
                other => panic!("{text:?}: {other}"),
            }
        }
    }

    #[test]
    fn learning_rate_decays_linearly() {
        let o = OptimiserConfig {
            lr: 1.0,
            decay_start: 10,
            decay_end: 20,
            ..OptimiserConfig::default()
        };
        assert_eq!(o.lr_at(0), 1.0);
        assert_eq!(o.lr_at(9), 1.0);
        assert_eq!(o.lr_at(10), 1.0);
        assert_eq!(o.lr_at(15), 0.5);
        assert_eq!(o.lr_at(20), 0.0);
        assert_eq!(o.lr_at(25), 0.0);
    }
}
