//! The training step: the networks, their momentum key copies and optimisers, and one step of
//! either stage, reading like the paper's objective (docs/ARCHITECTURE.md, Training (ANLCL)):
//!
//! - D step: least-squares GAN, D(B) → 1 and D(B̂) → 0.
//! - G step, D frozen: w₁‖B̂+R̂−O‖² + λ‖R̂‖₁ (or λ‖O−B̂‖₁) + δ·GAN + μ·L_layer + γ·L_asym +
//!   σ·L_location + ι·L_identity (stage 2), or supervised L1 on B̂ and R̂ + δ·GAN (stage 1).
//! - Momentum update of the key copies (G_B's encoder, D's encoder, both head sets).
//!
//! `optimiser.discriminator_warmup` steps run the D step alone.
//!
//! Better than the authors' code: batches, many anchors per image searched at once on the
//! training device, all projection heads learning, MoCo keys, the asymmetric term, and a weight
//! of 0 skipping its term entirely.

use std::time::Instant;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use tch::{Device, Kind, Tensor};

use super::config::{
    ConfigError, DeviceSetting, L1Target, LocationSource, LossConfig, LossScale, Stage, TrainConfig,
};
use super::losses::{self, similarity_logits};
use super::nets::{Discriminator, Generator, Network, ParamInit, ProjectionHeads, ema_update};
use super::nonlocal::{self, Anchors, BlockMatcher, Neighbours, SamplerError};
use super::optim::Adam;
use crate::onnx::GeneratorOutput;

/// What can go wrong while building or stepping a trainer.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(
        "device '{device}' is not available to libtorch ({reason}); set `device = \"cpu\"` or \
         run where the GPU and a CUDA build of libtorch are"
    )]
    Device { device: String, reason: String },
    #[error("bad training input '{what}': {problem}")]
    Input { what: &'static str, problem: String },
    #[error(transparent)]
    Sampler(#[from] SamplerError),
    #[error("libtorch: {0}")]
    Torch(String),
}

/// Names of the networks, as they prefix parameter names in checkpoints and gradient probes.
pub const NETWORK_NAMES: [&str; 10] = [
    "gen_b",
    "gen_r",
    "disc",
    "heads_loc",
    "heads_layer",
    "key_gen_b",
    "key_disc",
    "key_heads_loc",
    "key_heads_layer",
    STAGE_START_NAME,
];

/// The frozen copy of G_B as the stage started (`loss.location_source = "frozen_stage1"`; it
/// exists only then: [`Trainer::networks`] and checkpoints leave it out otherwise).
pub const STAGE_START_NAME: &str = "stage1_gen_b";

/// One value per loss term; `None` where the term was not computed (weight 0, or not part of
/// the stage).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Terms {
    pub consistency: Option<f64>,
    pub sparsity: Option<f64>,
    pub adversarial: Option<f64>,
    pub layer_contrastive: Option<f64>,
    pub asymmetric: Option<f64>,
    pub location: Option<f64>,
    pub supervised_clean: Option<f64>,
    pub supervised_rain: Option<f64>,
    /// Identity PatchNCE on clean frames (`loss.identity`).
    pub identity: Option<f64>,
}

/// Wall times of one step's phases, in seconds (the device is synchronised at each boundary).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct StepTimes {
    /// Generators, discriminator passes, encoders and momentum keys.
    pub forward: f64,
    /// Anchor sampling and block matching.
    pub nonlocal: f64,
    /// Each generator-step term: its feature gathering, heads and loss. The layer and asymmetric
    /// terms share their similarity logits, counted under `layer_contrastive` when it runs.
    pub loss: Terms,
    /// The discriminator's loss.
    pub discriminator_loss: f64,
    /// Both backward passes.
    pub backward: f64,
    /// Both Adam updates.
    pub optimiser: f64,
    /// Momentum update of the key copies.
    pub ema: f64,
    /// The whole step.
    pub total: f64,
}

/// What one step did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct StepReport {
    /// Steps completed, this one included.
    pub step: u64,
    pub stage: Stage,
    /// Learning rate used.
    pub lr: f64,
    /// Each term's unweighted value.
    pub loss: Terms,
    /// The weighted sum the generators (and heads) minimised.
    pub generator_total: f64,
    /// The discriminator's loss (`None` without the adversarial term).
    pub discriminator: Option<f64>,
    /// Share of anchor groups whose asymmetric sign η was +1 (B̂ patches the richer).
    pub eta_positive: Option<f64>,
    pub time: StepTimes,
}

/// One parameter's gradient norm after a phase's backward pass (`None`: no gradient at all).
#[derive(Debug, Clone, PartialEq)]
pub struct ParamGrad {
    /// `network.parameter`, e.g. `gen_b.enc.0.weight`.
    pub name: String,
    pub norm: Option<f64>,
}

/// Which parameters each phase of a step sends gradients to ([`Trainer::probe_gradients`]).
#[derive(Debug, Clone)]
pub struct GradientProbe {
    /// After the discriminator's backward pass (empty without the adversarial term).
    pub discriminator_phase: Vec<ParamGrad>,
    /// After the generators' backward pass.
    pub generator_phase: Vec<ParamGrad>,
}

/// A batch for one step: `[B,3,H,W]` float tensors in [0,1].
#[derive(Debug, Clone, Copy)]
pub enum Batch<'a> {
    /// Stage 1: synthetic rainy frames, their clean frames and rain layers (rainy − clean).
    Pretrain {
        rainy: &'a Tensor,
        clean: &'a Tensor,
        rain: &'a Tensor,
    },
    /// Stage 2: real rainy frames and unpaired clean frames, and, when `loss.synthetic` is
    /// above 0, a batch of synthetic pairs for that term.
    Anlcl {
        rainy: &'a Tensor,
        clean: &'a Tensor,
        synthetic: Option<SyntheticBatch<'a>>,
    },
}

/// Synthetic rainy frames, their clean frames and rain layers (rainy − clean), `[B,3,H,W]`.
#[derive(Debug, Clone, Copy)]
pub struct SyntheticBatch<'a> {
    pub rainy: &'a Tensor,
    pub clean: &'a Tensor,
    pub rain: &'a Tensor,
}

impl Batch<'_> {
    fn stage(&self) -> Stage {
        match self {
            Batch::Pretrain { .. } => Stage::Pretrain,
            Batch::Anlcl { .. } => Stage::Anlcl,
        }
    }
}

/// The batch on the device, and the generators' outputs.
struct Forward {
    rainy: Tensor,
    clean: Tensor,
    rain: Option<Tensor>,
    clean_hat: Tensor,
    rain_hat: Tensor,
    /// Stage 2's synthetic pairs (rainy, clean, rain) on the device, for `loss.synthetic`.
    synthetic: Option<[Tensor; 3]>,
}

/// Measures phases; synchronises a CUDA device first so the time is the work's, not the launch's.
struct Clock {
    device: Device,
    last: Instant,
}

impl Clock {
    fn new(device: Device) -> Self {
        Self {
            device,
            last: Instant::now(),
        }
    }

    /// Seconds since the previous lap.
    fn lap(&mut self) -> f64 {
        if let Device::Cuda(i) = self.device {
            tch::Cuda::synchronize(i as i64);
        }
        let now = Instant::now();
        let t = (now - self.last).as_secs_f64();
        self.last = now;
        t
    }
}

/// ANLCL's networks, momentum keys, optimisers, step count and sampling RNG.
///
/// Two sets of projection heads, both trained by the generator optimiser: `heads_loc` on G_B's
/// encoder features (location term) and `heads_layer` on D's encoder features, shared by the
/// layer and asymmetric terms. The asymmetric term has no head of its own on purpose: it asks
/// rain features to sit tighter than image features in the embedding the layer term builds, and
/// a head of its own could satisfy it alone by collapsing rain features, teaching the
/// generators nothing. Each head set, D and G_B have a frozen momentum copy (EMA, `heads.momentum`)
/// that computes the keys, as in MoCo.
pub struct Trainer {
    pub(super) config: TrainConfig,
    pub(super) device: Device,
    pub(super) gen_b: Generator,
    pub(super) gen_r: Generator,
    pub(super) disc: Discriminator,
    /// Heads for G_B's encoder features (location term).
    pub(super) heads_loc: ProjectionHeads,
    /// Heads for D's encoder features (layer and asymmetric terms).
    pub(super) heads_layer: ProjectionHeads,
    pub(super) key_gen_b: Generator,
    pub(super) key_disc: Discriminator,
    pub(super) key_heads_loc: ProjectionHeads,
    pub(super) key_heads_layer: ProjectionHeads,
    /// G_B as the stage started, frozen: the location features of `frozen_stage1`. `None`
    /// under the other location sources, which never read it.
    pub(super) stage1_gen_b: Option<Generator>,
    /// G_B, G_R and both head sets.
    pub(super) opt_g: Adam,
    pub(super) opt_d: Adam,
    pub(super) step: u64,
    /// Every random choice of the steps (anchors); saved in checkpoints.
    pub(super) rng: ChaCha8Rng,
}

impl std::fmt::Debug for Trainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trainer")
            .field("generator", &self.config.generator)
            .field("device", &self.device)
            .field("step", &self.step)
            .finish()
    }
}

/// Parameters of `net` named `prefix.name`, sorted by name.
fn named_parameters(prefix: &str, net: &dyn Network) -> Vec<(String, Tensor)> {
    let mut v: Vec<(String, Tensor)> = net
        .var_store()
        .variables()
        .into_iter()
        .map(|(n, t)| (format!("{prefix}.{n}"), t))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

impl Trainer {
    /// Fresh networks and optimisers for `config` (validated here), seeded from `config.seed`.
    pub fn new(config: &TrainConfig) -> Result<Self, TrainError> {
        config.validate()?;
        let device = match config.device_setting()? {
            DeviceSetting::Cpu => Device::Cpu,
            DeviceSetting::Cuda(i) => {
                let count = tch::Cuda::device_count() as usize;
                if i >= count {
                    return Err(TrainError::Device {
                        device: config.device.clone(),
                        reason: format!("libtorch sees {count} CUDA devices"),
                    });
                }
                Device::Cuda(i)
            }
        };
        // Stream 0 draws the anchors, stream 1 the initial weights: independent, both seeded.
        let rng = ChaCha8Rng::seed_from_u64(config.seed);
        let mut init_rng = rng.clone();
        init_rng.set_stream(1);
        let mut init = ParamInit::new(init_rng);

        let arch = &config.generator;
        let gen_b = Generator::new(arch, GeneratorOutput::Clean, device, &mut init);
        let gen_r = Generator::new(arch, GeneratorOutput::Rain, device, &mut init);
        let disc = Discriminator::new(&config.discriminator, device, &mut init);
        let units = config.heads.units as i64;
        let heads_loc = ProjectionHeads::new(&gen_b.feature_channels(), units, device, &mut init);
        let heads_layer = ProjectionHeads::new(&disc.feature_channels(), units, device, &mut init);

        let mut g_params = named_parameters("gen_b", &gen_b);
        g_params.extend(named_parameters("gen_r", &gen_r));
        g_params.extend(named_parameters("heads_loc", &heads_loc));
        g_params.extend(named_parameters("heads_layer", &heads_layer));
        let opt_g = Adam::new(g_params, &config.optimiser);
        let opt_d = Adam::new(named_parameters("disc", &disc), &config.optimiser);
        let stage1_gen_b = (config.loss.location_source == LocationSource::FrozenStage1)
            .then(|| gen_b.frozen_copy());

        Ok(Self {
            config: config.clone(),
            device,
            key_gen_b: gen_b.frozen_copy(),
            key_disc: disc.frozen_copy(),
            key_heads_loc: heads_loc.frozen_copy(),
            key_heads_layer: heads_layer.frozen_copy(),
            stage1_gen_b,
            gen_b,
            gen_r,
            disc,
            heads_loc,
            heads_layer,
            opt_g,
            opt_d,
            step: 0,
            rng,
        })
    }

    /// The settings.
    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    /// The device the networks live on.
    pub fn device(&self) -> Device {
        self.device
    }

    /// Steps completed.
    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// G_B ([`GeneratorOutput::Clean`]) or G_R ([`GeneratorOutput::Rain`]).
    pub fn generator(&self, which: GeneratorOutput) -> &Generator {
        match which {
            GeneratorOutput::Clean => &self.gen_b,
            GeneratorOutput::Rain => &self.gen_r,
        }
    }

    /// The discriminator.
    pub fn discriminator(&self) -> &Discriminator {
        &self.disc
    }

    /// Every network with its name, in [`NETWORK_NAMES`] order; the frozen stage-start copy
    /// ([`STAGE_START_NAME`]) only where `loss.location_source = "frozen_stage1"` made one.
    pub fn networks(&self) -> Vec<(&'static str, &dyn Network)> {
        let nets: [Option<&dyn Network>; 10] = [
            Some(&self.gen_b),
            Some(&self.gen_r),
            Some(&self.disc),
            Some(&self.heads_loc),
            Some(&self.heads_layer),
            Some(&self.key_gen_b),
            Some(&self.key_disc),
            Some(&self.key_heads_loc),
            Some(&self.key_heads_layer),
            self.stage1_gen_b.as_ref().map(|g| g as &dyn Network),
        ];
        NETWORK_NAMES
            .into_iter()
            .zip(nets)
            .filter_map(|(name, net)| Some((name, net?)))
            .collect()
    }

    /// Forgets the optimisers' moments and restarts the step count (and so the learning-rate
    /// schedule), keeping the weights: for stage 2 starting from a stage-1 checkpoint. The
    /// frozen stage-start copy of G_B becomes the G_B it starts from.
    pub fn reset_optimisers(&mut self) {
        self.opt_g.reset();
        self.opt_d.reset();
        self.step = 0;
        self.mark_stage_start();
    }

    /// Copies G_B into its frozen stage-start copy (`loss.location_source = "frozen_stage1"`;
    /// nothing to do without one).
    pub(super) fn mark_stage_start(&mut self) {
        if let Some(stage1) = &mut self.stage1_gen_b {
            stage1
                .var_store_mut()
                .copy(self.gen_b.var_store())
                .expect("a network and its copy have the same parameters");
            stage1.var_store_mut().freeze();
        }
    }

    /// G_B on `rainy` (`[B,3,H,W]` in [0,1], H and W multiples of the architecture's
    /// `multiple_of`) without gradients: B̂ in [0,1], on the trainer's device.
    pub fn derain(&self, rainy: &Tensor) -> Tensor {
        let _guard = tch::no_grad_guard();
        self.gen_b.forward(&rainy.to_device(self.device))
    }

    /// Stage 1 step on synthetic pairs: supervised L1 on B̂ (to `clean`) and R̂ (to `rain`),
    /// plus the adversarial term; no contrastive terms.
    pub fn step_pretrain(
        &mut self,
        rainy: &Tensor,
        clean: &Tensor,
        rain: &Tensor,
    ) -> Result<StepReport, TrainError> {
        self.step_batch(Batch::Pretrain { rainy, clean, rain })
    }

    /// Stage 2 step on real rainy frames and unpaired clean frames: every loss; a D step, then
    /// a G step with D frozen, then the momentum update.
    pub fn step_anlcl(&mut self, rainy: &Tensor, clean: &Tensor) -> Result<StepReport, TrainError> {
        self.step_batch(Batch::Anlcl {
            rainy,
            clean,
            synthetic: None,
        })
    }

    /// One step of the batch's stage.
    pub fn step_batch(&mut self, batch: Batch<'_>) -> Result<StepReport, TrainError> {
        let lr = self.config.optimiser.lr_at(self.step);
        // Warm-up: the generators take no gradient, so neither they nor their Adam state move.
        let hold = self.step < self.config.optimiser.generator_warmup;
        if hold {
            self.gen_b.var_store_mut().freeze();
            self.gen_r.var_store_mut().freeze();
        }
        let result = self.step_inner(batch, lr);
        if hold {
            self.gen_b.var_store_mut().unfreeze();
            self.gen_r.var_store_mut().unfreeze();
        }
        result
    }

    fn step_inner(&mut self, batch: Batch<'_>, lr: f64) -> Result<StepReport, TrainError> {
        let mut clock = Clock::new(self.device);
        let start = Instant::now();
        let mut report = StepReport {
            stage: batch.stage(),
            lr,
            ..StepReport::default()
        };
        let fwd = self.forward(batch)?;
        report.time.forward += clock.lap();

        if let Some(d_loss) = self.discriminator_backward(&fwd, &mut report, &mut clock) {
            self.opt_d.step(lr);
            report.time.optimiser += clock.lap();
            report.discriminator = Some(d_loss.double_value(&[]));
        }

        // D warm-up: no generator terms at all, nothing but D moves (its key copy follows).
        let (total, terms) = if self.step < self.config.optimiser.discriminator_warmup {
            (
                Tensor::zeros([], (Kind::Float, self.device)),
                TermTensors::default(),
            )
        } else {
            let mut rng = self.rng.clone();
            let out = self.generator_backward(&fwd, &mut report, &mut clock, &mut rng)?;
            self.rng = rng;
            self.opt_g.step(lr);
            report.time.optimiser += clock.lap();
            out
        };

        let m = self.config.heads.momentum;
        ema_update(self.key_gen_b.var_store(), self.gen_b.var_store(), m);
        ema_update(self.key_disc.var_store(), self.disc.var_store(), m);
        ema_update(
            self.key_heads_loc.var_store(),
            self.heads_loc.var_store(),
            m,
        );
        ema_update(
            self.key_heads_layer.var_store(),
            self.heads_layer.var_store(),
            m,
        );
        report.time.ema += clock.lap();

        self.step += 1;
        report.step = self.step;
        report.loss = terms.values();
        report.generator_total = total.double_value(&[]);
        report.time.total = start.elapsed().as_secs_f64();
        Ok(report)
    }

    /// Runs both phases' forward and backward passes on `batch` without updating anything (the
    /// sampling RNG included) and reports every parameter's gradient norm after each: which
    /// parameters each phase trains. Gradients are cleared before each phase and afterwards.
    pub fn probe_gradients(&mut self, batch: Batch<'_>) -> Result<GradientProbe, TrainError> {
        let mut clock = Clock::new(self.device);
        let mut report = StepReport::default();
        let fwd = self.forward(batch)?;
        self.zero_all_grads();
        let discriminator_phase = match self.discriminator_backward(&fwd, &mut report, &mut clock) {
            Some(_) => self.gradient_norms(),
            None => Vec::new(),
        };
        self.zero_all_grads();
        let mut rng = self.rng.clone();
        let _ = self.generator_backward(&fwd, &mut report, &mut clock, &mut rng)?;
        let generator_phase = self.gradient_norms();
        self.zero_all_grads();
        Ok(GradientProbe {
            discriminator_phase,
            generator_phase,
        })
    }

    /// Which way each term of stage 2's objective pulls the generators on one batch of rainy
    /// frames whose clean frames are known (`truth`, never part of the objective; `clean` is the
    /// unpaired clean batch the objective uses): each weighted term's gradient on G_B's
    /// parameters, and on G_R's, beside the gradient of the L1 distance of G_B's output to
    /// `truth` (of G_R's output to the true rain layer, rainy − truth). Nothing is updated, the
    /// sampling RNG included. Sum several batches with [`TermGradients::add`], then read
    /// [`TermGradients::alignment`]: a term whose gradient points against the reference's pushes
    /// the generator away from the clean frames at this point of training.
    pub fn term_gradients(
        &mut self,
        rainy: &Tensor,
        clean: &Tensor,
        truth: &Tensor,
    ) -> Result<TermGradients, TrainError> {
        if self.config.stage != Stage::Anlcl {
            return Err(TrainError::Input {
                what: "term gradients",
                problem: "only stage 2 (anlcl) has unpaired terms to weigh".into(),
            });
        }
        let fwd = self.forward(Batch::Anlcl {
            rainy,
            clean,
            synthetic: None,
        })?;
        let truth = self.input("truth", truth)?;
        if truth.size() != fwd.rainy.size() {
            return Err(TrainError::Input {
                what: "truth",
                problem: "must have the rainy batch's shape".into(),
            });
        }
        let mut clock = Clock::new(self.device);
        let mut rng = self.rng.clone();
        self.disc.var_store_mut().freeze();
        let mut obj = Objective {
            total: Tensor::zeros([], (Kind::Float, self.device)),
            terms: TermTensors::default(),
            times: StepTimes::default(),
            clock: &mut clock,
            live: Some(Vec::new()),
        };
        let built = self.generator_objective(&fwd, &mut obj, &mut rng);
        self.disc.var_store_mut().unfreeze();
        built?;
        let trainable = |net: &Generator| -> Vec<Tensor> {
            let mut vars: Vec<(String, Tensor)> = net.var_store().variables().into_iter().collect();
            vars.sort_by(|a, b| a.0.cmp(&b.0));
            vars.into_iter()
                .map(|(_, t)| t)
                .filter(|t| t.requires_grad())
                .collect()
        };
        let (params_b, params_r) = (trainable(&self.gen_b), trainable(&self.gen_r));
        let both = |value: &Tensor| -> Result<[Tensor; 2], TrainError> {
            Ok([
                flat_gradient(value, &params_b)?,
                flat_gradient(value, &params_r)?,
            ])
        };
        let reference_b = losses::supervised(&fwd.clean_hat, &truth);
        let reference_r = losses::supervised(&fwd.rain_hat, &(&fwd.rainy - &truth));
        let reference = [
            flat_gradient(&reference_b, &params_b)?,
            flat_gradient(&reference_r, &params_r)?,
        ];
        let mut terms = Vec::new();
        let live = obj.live.take().unwrap_or_default();
        for (term, value) in &live {
            terms.push((term.name(), both(value)?));
        }
        terms.push(("objective", both(&obj.total)?));
        Ok(TermGradients { reference, terms })
    }

    fn zero_all_grads(&self) {
        for (_, net) in self.networks() {
            for (_, mut t) in net.var_store().variables() {
                t.zero_grad();
            }
        }
    }

    fn gradient_norms(&self) -> Vec<ParamGrad> {
        let mut out = Vec::new();
        for (prefix, net) in self.networks() {
            for (name, t) in named_parameters(prefix, net) {
                let g = t.grad();
                let norm = g.defined().then(|| g.norm().double_value(&[]));
                out.push(ParamGrad { name, norm });
            }
        }
        out
    }

    /// Checks a batch tensor; returns it on the device.
    fn input(&self, what: &'static str, t: &Tensor) -> Result<Tensor, TrainError> {
        let bad = |problem: String| TrainError::Input { what, problem };
        let size = t.size();
        let [_, c, h, w] = size[..] else {
            return Err(bad(format!("shape {size:?} is not [B,3,H,W]")));
        };
        if c != 3 {
            return Err(bad(format!("has {c} channels, not 3 (RGB)")));
        }
        if t.kind() != Kind::Float {
            return Err(bad(format!("is {:?}, not float32", t.kind())));
        }
        let mult = self.config.generator.multiple_of() as i64;
        let min = self.config.min_crop() as i64;
        if h < min || w < min || h % mult != 0 || w % mult != 0 {
            return Err(bad(format!(
                "{h}×{w}: H and W must be at least {min} and multiples of {mult}"
            )));
        }
        Ok(t.to_device(self.device))
    }

    fn forward(&self, batch: Batch<'_>) -> Result<Forward, TrainError> {
        let (rainy, clean, rain, synthetic) = match batch {
            Batch::Pretrain { rainy, clean, rain } => (rainy, clean, Some(rain), None),
            Batch::Anlcl {
                rainy,
                clean,
                synthetic,
            } => (rainy, clean, None, synthetic),
        };
        let synthetic = match synthetic {
            Some(p) if self.config.loss.synthetic > 0.0 => {
                let s = [
                    self.input("synthetic rainy", p.rainy)?,
                    self.input("synthetic clean", p.clean)?,
                    self.input("synthetic rain", p.rain)?,
                ];
                if s.iter().any(|t| t.size() != s[0].size()) {
                    return Err(TrainError::Input {
                        what: "synthetic pairs",
                        problem: "rainy, clean and rain must have one shape".into(),
                    });
                }
                Some(s)
            }
            _ => None,
        };
        let rainy = self.input("rainy", rainy)?;
        let clean = self.input("clean", clean)?;
        let rain = rain.map(|r| self.input("rain", r)).transpose()?;
        if rain.as_ref().is_some_and(|r| r.size() != rainy.size())
            || (batch.stage() == Stage::Pretrain && clean.size() != rainy.size())
        {
            return Err(TrainError::Input {
                what: "clean/rain",
                problem: "paired tensors must have the rainy batch's shape".into(),
            });
        }
        if batch.stage() == Stage::Anlcl {
            self.check_sampler(&rainy, &clean)?;
        }
        let clean_hat = self.gen_b.forward(&rainy);
        let rain_hat = self.gen_r.forward(&rainy);
        Ok(Forward {
            rainy,
            clean,
            rain,
            clean_hat,
            rain_hat,
            synthetic,
        })
    }

    /// Fails before anything is updated if the search windows of `rainy`'s size cannot supply
    /// the patch counts the terms in use ask for.
    fn check_sampler(&self, rainy: &Tensor, clean: &Tensor) -> Result<(), TrainError> {
        let (s, w) = (&self.config.sampler, &self.config.loss);
        let (_, _, h, wd) = rainy.size4().expect("checked input");
        let matcher = BlockMatcher {
            patch: s.patch as i64,
            window: s.window as i64,
        };
        let mut k = 0;
        if w.layer_contrastive > 0.0 || w.asymmetric > 0.0 {
            k = k.max(s.positives).max(s.rain_negatives);
        }
        if w.location > 0.0 {
            k = k.max(s.location_negatives);
        }
        matcher.check(h, wd, k as i64)?;
        if w.identity > 0.0 {
            // The identity term searches the clean frames for its negatives.
            let (_, _, hc, wc) = clean.size4().expect("checked input");
            matcher.check(hc, wc, s.location_negatives as i64)?;
        }
        Ok(())
    }

    /// D's loss and backward pass (gradients only into D); `None` when the adversarial weight
    /// is 0.
    fn discriminator_backward(
        &mut self,
        fwd: &Forward,
        report: &mut StepReport,
        clock: &mut Clock,
    ) -> Option<Tensor> {
        if self.config.loss.adversarial <= 0.0 {
            return None;
        }
        self.opt_d.zero_grad();
        let real = self.disc.forward(&fwd.clean);
        let fake = self.disc.forward(&fwd.clean_hat.detach());
        report.time.forward += clock.lap();
        let loss = losses::discriminator_loss(&real, &fake);
        report.time.discriminator_loss += clock.lap();
        loss.backward();
        report.time.backward += clock.lap();
        Some(loss.detach())
    }

    /// The generators' objective and its backward pass, D frozen; returns the weighted total and
    /// the terms.
    fn generator_backward(
        &mut self,
        fwd: &Forward,
        report: &mut StepReport,
        clock: &mut Clock,
        rng: &mut ChaCha8Rng,
    ) -> Result<(Tensor, TermTensors), TrainError> {
        self.opt_g.zero_grad();
        self.disc.var_store_mut().freeze();
        let mut obj = Objective {
            total: Tensor::zeros([], (Kind::Float, self.device)),
            terms: TermTensors::default(),
            times: std::mem::take(&mut report.time),
            clock,
            live: None,
        };
        let result = self.generator_objective(fwd, &mut obj, rng);
        let Objective {
            total,
            terms,
            mut times,
            clock,
            ..
        } = obj;
        let result = result.map(|eta_positive| {
            // Nothing to train when every network of the objective is held (warm-up of a
            // stage without heads in use).
            if total.requires_grad() {
                total.backward();
            }
            times.backward += clock.lap();
            report.eta_positive = eta_positive;
            (total.detach(), terms)
        });
        report.time = times;
        self.disc.var_store_mut().unfreeze();
        result
    }

    /// Builds the weighted objective into `obj`; returns the share of η = +1 groups when the
    /// asymmetric term ran.
    fn generator_objective(
        &self,
        fwd: &Forward,
        obj: &mut Objective<'_>,
        rng: &mut ChaCha8Rng,
    ) -> Result<Option<f64>, TrainError> {
        let w = self.config.loss;
        let stage1 = fwd.rain.is_some();
        let contrastive = !stage1 && (w.layer_contrastive > 0.0 || w.asymmetric > 0.0);
        let location = !stage1 && w.location > 0.0;
        let identity = !stage1 && w.identity > 0.0;

        // The adversarial term shares D's pass with the layer terms' features.
        let (scores, feats_clean) = match (w.adversarial > 0.0, contrastive) {
            (true, true) => {
                let (s, f) = self.disc.forward_with_features(&fwd.clean_hat);
                (Some(s), Some(f))
            }
            (true, false) => (Some(self.disc.forward(&fwd.clean_hat)), None),
            (false, true) => (None, Some(self.disc.features(&fwd.clean_hat))),
            (false, false) => (None, None),
        };
        obj.times.forward += obj.clock.lap();
        if let Some(scores) = scores {
            let t = losses::generator_loss(&scores);
            obj.add(Term::Adversarial, w.adversarial, t);
        }

        if let Some(rain) = &fwd.rain {
            if w.supervised > 0.0 {
                let t = losses::supervised(&fwd.clean_hat, &fwd.clean);
                obj.add(Term::SupervisedClean, w.supervised, t);
                let t = losses::supervised(&fwd.rain_hat, rain);
                obj.add(Term::SupervisedRain, w.supervised, t);
            }
            return Ok(None);
        }
        let (consistency, l1) = image_terms(&w, &fwd.clean_hat, &fwd.rain_hat, &fwd.rainy);
        if let Some(t) = consistency {
            obj.add(Term::Consistency, w.consistency, t);
        }
        if let Some(t) = l1 {
            obj.add(Term::Sparsity, w.sparsity, t);
        }
        if let Some([rainy, clean, rain]) = &fwd.synthetic {
            // Stage 1's supervised terms on this step's synthetic pairs (loss.synthetic).
            let t = losses::supervised(&self.gen_b.forward(rainy), clean);
            obj.add(Term::SupervisedClean, w.synthetic, t);
            let t = losses::supervised(&self.gen_r.forward(rainy), rain);
            obj.add(Term::SupervisedRain, w.synthetic, t);
            obj.times.forward += obj.clock.lap();
        }
        if !contrastive && !location && !identity {
            return Ok(None);
        }

        // Online features (queries) and the momentum copies' (keys); the location and identity
        // terms' encoders as `loss.location_source` says.
        let (query_enc, key_enc) = self.location_encoders();
        let feats_rain = contrastive.then(|| self.disc.rain_features(&fwd.rain_hat));
        let enc_clean = location.then(|| query_enc.encode(&fwd.clean_hat));
        // G_B(B): the identity term's output on clean frames.
        let enc_idt = identity.then(|| query_enc.encode(&self.gen_b.forward(&fwd.clean)));
        let (keys_clean, keys_rain, keys_rainy, keys_idt) = {
            let _guard = tch::no_grad_guard();
            (
                contrastive.then(|| self.key_disc.features(&fwd.clean_hat.detach())),
                contrastive.then(|| self.key_disc.rain_features(&fwd.rain_hat.detach())),
                location.then(|| key_enc.encode(&fwd.rainy)),
                identity.then(|| key_enc.encode(&fwd.clean)),
            )
        };
        obj.times.forward += obj.clock.lap();

        // Non-local search around anchors shared by every term.
        let s = &self.config.sampler;
        let (b, _, h, wd) = fwd.rainy.size4().expect("checked input");
        let matcher = BlockMatcher {
            patch: s.patch as i64,
            window: s.window as i64,
        };
        // Drawn only when a term uses them, so the identity term alone draws its own first.
        let anchors = if contrastive || location {
            Anchors::sample(
                rng,
                b,
                (h, wd),
                matcher.patch,
                s.anchors_per_image as i64,
                self.device,
            )
        } else {
            Anchors::from_positions(&[], &[], &[], self.device)
        };
        let near = match contrastive {
            true => Some((
                matcher.nearest(&fwd.clean_hat, &anchors, s.positives as i64)?,
                matcher.nearest(&fwd.rain_hat, &anchors, s.rain_negatives as i64)?,
            )),
            false => None,
        };
        let far = match location {
            true => Some(matcher.farthest(&fwd.rainy, &anchors, s.location_negatives as i64)?),
            false => None,
        };
        // The identity term's anchors and reverse non-local negatives, in the clean frames.
        let (_, _, hc, wc) = fwd.clean.size4().expect("checked input");
        let idt_sampling = match identity {
            true => {
                let (bc, _, _, _) = fwd.clean.size4().expect("checked input");
                let a = Anchors::sample(
                    rng,
                    bc,
                    (hc, wc),
                    matcher.patch,
                    s.anchors_per_image as i64,
                    self.device,
                );
                let far = matcher.farthest(&fwd.clean, &a, s.location_negatives as i64)?;
                Some((a, far))
            }
            false => None,
        };
        obj.times.nonlocal += obj.clock.lap();

        let mut eta_positive = None;
        if let (Some(fc), Some(fr), Some(kc), Some(kr), Some((nc, nr))) =
            (&feats_clean, &feats_rain, &keys_clean, &keys_rain, &near)
        {
            let layers = LayerFeatures {
                clean: fc,
                rain: fr,
                clean_keys: kc,
                rain_keys: kr,
                near_clean: nc,
                near_rain: nr,
            };
            eta_positive = self.layer_terms(fwd, &anchors, &layers, obj);
        }
        if let (Some(enc), Some(keys), Some(far)) = (&enc_clean, &keys_rainy, &far) {
            let t = self.location_term(&anchors, enc, keys, far, (h, wd));
            obj.add(Term::Location, w.location, t);
        }
        if let (Some(enc), Some(keys), Some((a, far))) = (&enc_idt, &keys_idt, &idt_sampling) {
            let t = self.location_term(a, enc, keys, far, (hc, wc));
            obj.add(Term::Identity, w.identity, t);
        }
        Ok(eta_positive)
    }

    /// The encoders of the location and identity terms' queries and keys.
    fn location_encoders(&self) -> (&Generator, &Generator) {
        match self.config.loss.location_source {
            LocationSource::RainPredictor | LocationSource::Background => {
                (&self.gen_b, &self.key_gen_b)
            }
            LocationSource::FrozenStage1 => {
                let stage1 = self
                    .stage1_gen_b
                    .as_ref()
                    .expect("Trainer::new makes the stage-start copy for frozen_stage1");
                (stage1, stage1)
            }
        }
    }

    /// How many of the encoder's feature layers the location and identity terms compare.
    fn location_layers(&self) -> usize {
        let all = self.heads_loc.len();
        match self.config.loss.location_source {
            LocationSource::Background => self.gen_b.stem_features().min(all),
            LocationSource::RainPredictor | LocationSource::FrozenStage1 => all,
        }
    }

    /// The layer contrastive and asymmetric terms over D's encoder layers; returns the share of
    /// η = +1 groups when the asymmetric term ran.
    fn layer_terms(
        &self,
        fwd: &Forward,
        anchors: &Anchors,
        f: &LayerFeatures<'_>,
        obj: &mut Objective<'_>,
    ) -> Option<f64> {
        let w = self.config.loss;
        let s = &self.config.sampler;
        let (p, n_b) = (s.patch as i64, s.positives as i64);
        let (_, _, h, wd) = fwd.rainy.size4().expect("checked input");

        // η per anchor group: intensity-histogram entropy of the sampled B̂ against R̂ patches.
        let eta = (w.asymmetric > 0.0).then(|| {
            let _guard = tch::no_grad_guard();
            let grey = |t: &Tensor| t.mean_dim([1i64].as_slice(), false, Kind::Float);
            let clean = grey(&fwd.clean_hat.detach());
            // The rain layer's magnitude, in image units.
            let rain = grey(&fwd.rain_hat.detach().abs());
            let pc =
                nonlocal::patch_pixels(&clean, &anchors.batch, &f.near_clean.y, &f.near_clean.x, p);
            let pr =
                nonlocal::patch_pixels(&rain, &anchors.batch, &f.near_rain.y, &f.near_rain.x, p);
            losses::entropy_sign(&pc, &pr, s.entropy_bins as i64)
        });
        if eta.is_some() {
            obj.charge(Term::Asymmetric);
        }
        let shared = if w.layer_contrastive > 0.0 {
            Term::LayerContrastive
        } else {
            Term::Asymmetric
        };

        let batch = anchors.batch.unsqueeze(1);
        let project = |heads: &ProjectionHeads, l: usize, feat: &Tensor, n: &Neighbours| {
            let at = nonlocal::features_at(feat, &batch, &(&n.y + p / 2), &(&n.x + p / 2), (h, wd));
            heads.project(l, &at)
        };
        let (mut layer, mut asym) = (Vec::new(), Vec::new());
        for l in 0..self.heads_layer.len() {
            let q = Tensor::cat(
                &[
                    project(&self.heads_layer, l, &f.clean[l], f.near_clean),
                    project(&self.heads_layer, l, &f.rain[l], f.near_rain),
                ],
                1,
            );
            let k = {
                let _guard = tch::no_grad_guard();
                Tensor::cat(
                    &[
                        project(&self.key_heads_layer, l, &f.clean_keys[l], f.near_clean),
                        project(&self.key_heads_layer, l, &f.rain_keys[l], f.near_rain),
                    ],
                    1,
                )
            };
            let logits = similarity_logits(&q, &k, w.temperature);
            obj.charge(shared);
            if w.layer_contrastive > 0.0 {
                layer.push(losses::layer_contrastive(&logits, n_b));
                obj.charge(Term::LayerContrastive);
            }
            if let Some(eta) = &eta {
                asym.push(losses::asymmetric(&logits, n_b, eta));
                obj.charge(Term::Asymmetric);
            }
        }
        if !layer.is_empty() {
            obj.add_uncharged(
                Term::LayerContrastive,
                w.layer_contrastive,
                layer_mean(layer),
            );
        }
        if !asym.is_empty() {
            obj.add_uncharged(Term::Asymmetric, w.asymmetric, layer_mean(asym));
        }
        eta.map(|e| e.gt(0.0).to_kind(Kind::Double).mean(None).double_value(&[]))
    }

    /// The location (PatchNCE) term over the encoder layers `location_source` picks: B̂'s
    /// feature at each anchor against O's (key) at the same place and at the anchor's farthest
    /// patches. The identity term is the same with G_B(B) and B in their places.
    fn location_term(
        &self,
        anchors: &Anchors,
        enc: &[Tensor],
        keys: &[Tensor],
        far: &Neighbours,
        image: (i64, i64),
    ) -> Tensor {
        let half = self.config.sampler.patch as i64 / 2;
        let (cy, cx) = (&anchors.y + half, &anchors.x + half);
        let (fy, fx) = (&far.y + half, &far.x + half);
        let batch = anchors.batch.unsqueeze(1);
        let mut per_layer = Vec::new();
        for l in 0..self.location_layers() {
            let at = nonlocal::features_at(&enc[l], &anchors.batch, &cy, &cx, image);
            let query = self.heads_loc.project(l, &at);
            let (positive, negatives) = {
                let _guard = tch::no_grad_guard();
                let kp = nonlocal::features_at(&keys[l], &anchors.batch, &cy, &cx, image);
                let kn = nonlocal::features_at(&keys[l], &batch, &fy, &fx, image);
                (
                    self.key_heads_loc.project(l, &kp),
                    self.key_heads_loc.project(l, &kn),
                )
            };
            // A negative on the positive's own feature cell (coarse layers) is no negative.
            let (_, _, hf, wf) = enc[l].size4().expect("feature maps are NCHW");
            let (ay, ax) = nonlocal::feature_cell(&cy, &cx, (hf, wf), image);
            let (ny, nx) = nonlocal::feature_cell(&fy, &fx, (hf, wf), image);
            let drop = ny
                .eq_tensor(&ay.unsqueeze(1))
                .logical_and(&nx.eq_tensor(&ax.unsqueeze(1)));
            per_layer.push(losses::location_nce(
                &query,
                &positive,
                &negatives,
                Some(&drop),
                self.config.loss.temperature,
            ));
        }
        layer_mean(per_layer)
    }
}

/// D-encoder features of B̂ and R̂ (online and key copies) and the patches found for each anchor.
struct LayerFeatures<'a> {
    clean: &'a [Tensor],
    rain: &'a [Tensor],
    clean_keys: &'a [Tensor],
    rain_keys: &'a [Tensor],
    near_clean: &'a Neighbours,
    near_rain: &'a Neighbours,
}

/// Summed gradients of each stage-2 term and of the supervised reference
/// ([`Trainer::term_gradients`]), flattened over G_B's and G_R's trainable parameters.
#[derive(Debug)]
pub struct TermGradients {
    /// The L1 distance to the known clean frames (G_B) and to the true rain layer (G_R).
    reference: [Tensor; 2],
    /// Each weighted term in the order the objective adds them, then `objective` (their sum).
    terms: Vec<(&'static str, [Tensor; 2])>,
}

/// How one term's summed gradient lines up with the supervised reference's.
#[derive(Debug, Clone, Serialize)]
pub struct TermAlignment {
    /// The term (`consistency`, `sparsity`, ...; `objective` is the weighted sum).
    pub term: &'static str,
    /// Cosine between the term's gradient and the reference's on G_B: above 0 a step on the term
    /// alone moves G_B's output toward the clean frames, below 0 away from them. `None` where
    /// the term does not reach G_B.
    pub cosine_b: Option<f64>,
    /// The same on G_R, against the distance of its output to the true rain layer.
    pub cosine_r: Option<f64>,
    /// Norm of the term's weighted gradient on G_B, relative to the reference's.
    pub relative_norm_b: f64,
    /// The same on G_R.
    pub relative_norm_r: f64,
}

impl TermGradients {
    /// Adds another batch's gradients (the same terms, from the same trainer).
    pub fn add(&mut self, other: &TermGradients) -> Result<(), TrainError> {
        let same = self.terms.len() == other.terms.len()
            && self.terms.iter().zip(&other.terms).all(|(a, b)| a.0 == b.0);
        if !same {
            return Err(TrainError::Input {
                what: "term gradients",
                problem: "the batches computed different terms".into(),
            });
        }
        for (a, b) in self.reference.iter_mut().zip(&other.reference) {
            *a = &*a + b;
        }
        for ((_, a), (_, b)) in self.terms.iter_mut().zip(&other.terms) {
            for (x, y) in a.iter_mut().zip(b) {
                *x = &*x + y;
            }
        }
        Ok(())
    }

    /// Each term's cosine with the reference and its relative norm, in the objective's order.
    pub fn alignment(&self) -> Vec<TermAlignment> {
        let norm = |t: &Tensor| t.norm().double_value(&[]);
        let cosine = |g: &Tensor, r: &Tensor| {
            let (ng, nr) = (norm(g), norm(r));
            (ng > 0.0 && nr > 0.0).then(|| (g * r).sum(Kind::Double).double_value(&[]) / (ng * nr))
        };
        let relative = |g: &Tensor, r: &Tensor| {
            let nr = norm(r);
            if nr > 0.0 { norm(g) / nr } else { 0.0 }
        };
        let [rb, rr] = &self.reference;
        self.terms
            .iter()
            .map(|(term, [gb, gr])| TermAlignment {
                term,
                cosine_b: cosine(gb, rb),
                cosine_r: cosine(gr, rr),
                relative_norm_b: relative(gb, rb),
                relative_norm_r: relative(gr, rr),
            })
            .collect()
    }
}

/// The gradient of `value` on `params`, flattened into one vector (zeros where `value` does not
/// depend on a parameter, or on none).
fn flat_gradient(value: &Tensor, params: &[Tensor]) -> Result<Tensor, TrainError> {
    let zeros = |p: &Tensor| p.zeros_like().flatten(0, -1);
    if params.is_empty() {
        return Ok(Tensor::zeros([0], (Kind::Float, value.device())));
    }
    if !value.requires_grad() {
        let parts: Vec<Tensor> = params.iter().map(zeros).collect();
        return Ok(Tensor::cat(&parts, 0));
    }
    let grads = Tensor::f_run_backward(&[value], params, true, false)
        .map_err(|e| TrainError::Torch(format!("gradient of a term: {e}")))?;
    let parts: Vec<Tensor> = grads
        .iter()
        .zip(params)
        .map(|(g, p)| match g.defined() {
            true => g.flatten(0, -1),
            false => zeros(p),
        })
        .collect();
    Ok(Tensor::cat(&parts, 0))
}

/// A term of the objective.
#[derive(Debug, Clone, Copy)]
enum Term {
    Consistency,
    Sparsity,
    Adversarial,
    LayerContrastive,
    Asymmetric,
    Location,
    SupervisedClean,
    SupervisedRain,
    Identity,
}

impl Term {
    /// The term's name in [`Terms`] and the logs.
    fn name(self) -> &'static str {
        match self {
            Term::Consistency => "consistency",
            Term::Sparsity => "sparsity",
            Term::Adversarial => "adversarial",
            Term::LayerContrastive => "layer_contrastive",
            Term::Asymmetric => "asymmetric",
            Term::Location => "location",
            Term::SupervisedClean => "supervised_clean",
            Term::SupervisedRain => "supervised_rain",
            Term::Identity => "identity",
        }
    }
}

impl Terms {
    fn slot(&mut self, term: Term) -> &mut Option<f64> {
        match term {
            Term::Consistency => &mut self.consistency,
            Term::Sparsity => &mut self.sparsity,
            Term::Adversarial => &mut self.adversarial,
            Term::LayerContrastive => &mut self.layer_contrastive,
            Term::Asymmetric => &mut self.asymmetric,
            Term::Location => &mut self.location,
            Term::SupervisedClean => &mut self.supervised_clean,
            Term::SupervisedRain => &mut self.supervised_rain,
            Term::Identity => &mut self.identity,
        }
    }
}

/// The generator terms as tensors, read into the report after the backward pass.
#[derive(Default)]
struct TermTensors([Option<Tensor>; 9]);

impl TermTensors {
    fn values(&self) -> Terms {
        let mut out = Terms::default();
        for term in [
            Term::Consistency,
            Term::Sparsity,
            Term::Adversarial,
            Term::LayerContrastive,
            Term::Asymmetric,
            Term::Location,
            Term::SupervisedClean,
            Term::SupervisedRain,
            Term::Identity,
        ] {
            *out.slot(term) = self.0[term as usize].as_ref().map(|t| t.double_value(&[]));
        }
        out
    }
}

/// The weighted objective under construction, and where its time goes.
struct Objective<'c> {
    total: Tensor,
    terms: TermTensors,
    times: StepTimes,
    clock: &'c mut Clock,
    /// The weighted terms still in the graph, kept only by [`Trainer::term_alignment`].
    live: Option<Vec<(Term, Tensor)>>,
}

impl Objective<'_> {
    /// Adds `weight`·`value` and charges the time since the last lap to `term`.
    fn add(&mut self, term: Term, weight: f64, value: Tensor) {
        self.add_uncharged(term, weight, value);
        self.charge(term);
    }

    fn add_uncharged(&mut self, term: Term, weight: f64, value: Tensor) {
        if let Some(live) = self.live.as_mut() {
            live.push((term, &value * weight));
        }
        self.total = &self.total + &value * weight;
        self.terms.0[term as usize] = Some(value.detach());
    }

    /// Charges the time since the last lap to `term`.
    fn charge(&mut self, term: Term) {
        let t = self.clock.lap();
        let slot = self.times.loss.slot(term);
        *slot = Some(slot.unwrap_or(0.0) + t);
    }
}

/// Mean of per-layer terms.
fn layer_mean(terms: Vec<Tensor>) -> Tensor {
    Tensor::stack(&terms, 0).mean(None)
}

/// Stage 2's consistency and L1 terms (`None` at weight 0), in the units `loss.scale` names
/// and with the L1 term on what `loss.l1_target` names. B̂ and O are in [0,1], R̂ in image units.
///
/// The authors' code works on x' = 2x − 1, so B̂' = 2B̂ − 1, O' = 2O − 1 and the rain layer
/// that adds up, R̂' = O' − B̂', is 2R̂: the consistency residual B̂' + R̂' − O' is twice
/// B̂ + R̂ − O and its square (their MSE) four times ours; |O' − B̂'| (their L1) and |R̂'| are
/// twice |O − B̂| and |R̂|.
pub fn image_terms(
    w: &LossConfig,
    clean_hat: &Tensor,
    rain_hat: &Tensor,
    rainy: &Tensor,
) -> (Option<Tensor>, Option<Tensor>) {
    let (squared, absolute) = match w.scale {
        LossScale::Authors => (4.0, 2.0),
        LossScale::Unit => (1.0, 1.0),
    };
    let consistency =
        (w.consistency > 0.0).then(|| losses::consistency(clean_hat, rain_hat, rainy) * squared);
    let l1 = (w.sparsity > 0.0).then(|| {
        let t = match w.l1_target {
            L1Target::Rain => losses::sparsity(rain_hat),
            L1Target::Background => losses::sparsity(&(rainy - clean_hat)),
        };
        t * absolute
    });
    (consistency, l1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::config::{GeneratorArch, LiteConfig};

    /// Every tensor of every network of `t`, copied, by `network.name` in name order.
    fn all_tensors(t: &Trainer) -> Vec<(String, Tensor)> {
        let mut v = Vec::new();
        for (prefix, net) in t.networks() {
            for (name, p) in net.var_store().variables() {
                v.push((format!("{prefix}.{name}"), p.detach().copy()));
            }
        }
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    fn lite_config() -> TrainConfig {
        let mut c = TrainConfig {
            generator: GeneratorArch::Lite(LiteConfig {
                factor: 4,
                channels: 8,
                blocks: 2,
                context: 0,
            }),
            batch: 2,
            crop: 64,
            ..TrainConfig::default()
        };
        c.discriminator.base = 8;
        c.heads.units = 16;
        c.sampler.anchors_per_image = 4;
        c.sampler.rain_negatives = 32;
        c.sampler.location_negatives = 32;
        c.validate().expect("valid test config");
        c
    }

    /// Smooth images `[2,3,64,64]` in [0,1].
    fn images(seed: i64) -> Tensor {
        tch::manual_seed(seed);
        Tensor::rand([2, 3, 8, 8], (Kind::Float, Device::Cpu)).upsample_bilinear2d(
            [64, 64],
            true,
            None,
            None,
        )
    }

    /// The generator objective's terms on (rainy, clean), updating nothing.
    fn terms_of(t: &Trainer, rainy: &Tensor, clean: &Tensor) -> Terms {
        let fwd = t
            .forward(Batch::Anlcl {
                rainy,
                clean,
                synthetic: None,
            })
            .unwrap();
        let mut clock = Clock::new(t.device);
        let mut obj = Objective {
            total: Tensor::zeros([], (Kind::Float, t.device)),
            terms: TermTensors::default(),
            times: StepTimes::default(),
            clock: &mut clock,
            live: None,
        };
        let mut rng = t.rng.clone();
        t.generator_objective(&fwd, &mut obj, &mut rng).unwrap();
        obj.terms.values()
    }

    #[test]
    fn term_gradients_sum_to_the_objective_and_update_nothing() {
        let mut cfg = lite_config();
        cfg.loss.identity = 0.5;
        cfg.loss.asymmetric = 0.0;
        let mut t = Trainer::new(&cfg).unwrap();
        let (rainy, clean, truth) = (images(1), images(2), images(3));
        let before = all_tensors(&t);
        let g = t.term_gradients(&rainy, &clean, &truth).unwrap();
        let after = all_tensors(&t);
        for ((name, a), (_, b)) in before.iter().zip(&after) {
            assert!(a.equal(b), "{name} changed");
        }
        assert_eq!(t.step_count(), 0);

        let names: Vec<&str> = g.terms.iter().map(|(n, _)| *n).collect();
        for want in [
            "adversarial",
            "consistency",
            "layer_contrastive",
            "location",
            "identity",
        ] {
            assert!(names.contains(&want), "{want} missing from {names:?}");
        }
        assert!(!names.contains(&"asymmetric"), "a weight-0 term was probed");
        assert_eq!(names.last(), Some(&"objective"));
        // The weighted terms add up to the objective, on both generators.
        for which in 0..2 {
            let objective = &g.terms.last().unwrap().1[which];
            let mut sum = objective.zeros_like();
            for (_, v) in &g.terms[..g.terms.len() - 1] {
                sum += &v[which];
            }
            let err = (&sum - objective).norm().double_value(&[]);
            let scale = objective.norm().double_value(&[]).max(1e-12);
            assert!(
                err / scale < 1e-4,
                "generator {which}: terms sum off by {err}"
            );
        }
        // Summing a batch twice keeps every cosine and doubles nothing relative.
        let once = g.alignment();
        let mut twice = t.term_gradients(&rainy, &clean, &truth).unwrap();
        twice.add(&g).unwrap();
        for (a, b) in once.iter().zip(twice.alignment()) {
            assert_eq!(a.term, b.term);
            for (x, y) in [(a.cosine_b, b.cosine_b), (a.cosine_r, b.cosine_r)] {
                if let (Some(x), Some(y)) = (x, y) {
                    assert!(
                        (-1.0..=1.0).contains(&x) && (x - y).abs() < 1e-4,
                        "{x} vs {y}"
                    );
                }
            }
        }

        let mut pre = Trainer::new(&TrainConfig {
            stage: Stage::Pretrain,
            ..lite_config()
        })
        .unwrap();
        let err = pre.term_gradients(&rainy, &clean, &truth).unwrap_err();
        assert!(err.to_string().contains("anlcl"), "{err}");
    }

    /// Adds 0.05 to every parameter of `net` whose name starts with `prefix`.
    fn nudge(net: &dyn Network, prefix: &str) {
        let _guard = tch::no_grad_guard();
        for (name, mut p) in net.var_store().variables() {
            if name.starts_with(prefix) {
                let moved = &p + 0.05;
                p.copy_(&moved);
            }
        }
    }

    /// `loss.scale` and `loss.l1_target` on a four-pixel example worked out by hand.
    #[test]
    fn consistency_and_l1_follow_scale_and_target() {
        let b = Tensor::from_slice(&[0.5f32, 0.2, 1.0, 0.0]);
        let r = Tensor::from_slice(&[0.25f32, 0.0, -0.5, 0.1]);
        let o = Tensor::from_slice(&[0.75f32, 0.5, 0.25, 0.3]);
        // B̂ + R̂ − O = 0, −0.3, 0.25, −0.2: mean square 0.1925 / 4.
        // |R̂| = 0.25, 0, 0.5, 0.1: mean 0.85 / 4. |O − B̂| = 0.25, 0.3, 0.75, 0.3: mean 1.6 / 4.
        for (scale, target, consistency, l1) in [
            (LossScale::Unit, L1Target::Rain, 0.1925 / 4.0, 0.85 / 4.0),
            (
                LossScale::Unit,
                L1Target::Background,
                0.1925 / 4.0,
                1.6 / 4.0,
            ),
            // On [−1,1]: residual 2×, squared 4×; absolute values 2×.
            (LossScale::Authors, L1Target::Rain, 0.1925, 1.7 / 4.0),
            (LossScale::Authors, L1Target::Background, 0.1925, 3.2 / 4.0),
        ] {
            let w = LossConfig {
                scale,
                l1_target: target,
                ..LossConfig::default()
            };
            let (c, l) = image_terms(&w, &b, &r, &o);
            let (c, l) = (c.unwrap().double_value(&[]), l.unwrap().double_value(&[]));
            assert!((c - consistency).abs() < 1e-7, "{scale:?}: {c}");
            assert!((l - l1).abs() < 1e-7, "{scale:?} {target:?}: {l}");
        }
        // The authors' [−1,1] tensors give the same numbers by their own formulas.
        let (bn, on) = (&b * 2.0 - 1.0, &o * 2.0 - 1.0);
        let rn = &on - &bn;
        let mse = (&bn + &(&r * 2.0) - &on)
            .square()
            .mean(None)
            .double_value(&[]);
        assert!((mse - 0.1925).abs() < 1e-7, "{mse}");
        let l1 = (&on - &bn).abs().mean(None).double_value(&[]);
        assert!((l1 - 0.8).abs() < 1e-7, "{l1}");
        assert!(rn.allclose(&((&o - &b) * 2.0), 1e-7, 1e-7, false));
        // Weight 0: not computed.
        let off = LossConfig {
            consistency: 0.0,
            sparsity: 0.0,
            ..LossConfig::default()
        };
        let (c, l) = image_terms(&off, &b, &r, &o);
        assert!(c.is_none() && l.is_none());
    }

    /// Which encoder the location term reads: nudging the key copy's residual blocks moves the
    /// term under `rain_predictor` only; nudging the frozen stage-start copy moves it under
    /// `frozen_stage1` (the other sources have no such copy); `background` reads the key
    /// copy's stem.
    #[test]
    fn location_features_come_from_the_chosen_source() {
        let rainy = (images(1) + 0.15).clamp(0.0, 1.0);
        let clean = images(2);
        // `None` where the nudged network does not exist under `source`.
        let location = |source: LocationSource, nudged: Option<(&str, &str)>| {
            let mut cfg = lite_config();
            cfg.loss.location_source = source;
            let t = Trainer::new(&cfg).unwrap();
            if let Some((net, prefix)) = nudged {
                let (_, n) = t.networks().into_iter().find(|(name, _)| *name == net)?;
                nudge(n, prefix);
            }
            Some(terms_of(&t, &rainy, &clean).location.unwrap())
        };
        for source in [
            LocationSource::RainPredictor,
            LocationSource::Background,
            LocationSource::FrozenStage1,
        ] {
            let base = location(source, None).unwrap();
            let blocks = location(source, Some(("key_gen_b", "res."))).unwrap();
            let stem = location(source, Some(("key_gen_b", "head."))).unwrap();
            let frozen = location(source, Some((STAGE_START_NAME, "")));
            let moved = |v: f64| (v - base).abs() > 1e-5;
            let got = (moved(blocks), moved(stem), frozen.map(moved));
            let want = match source {
                LocationSource::RainPredictor => (true, true, None),
                LocationSource::Background => (false, true, None),
                LocationSource::FrozenStage1 => (false, false, Some(true)),
            };
            assert_eq!(got, want, "{source:?}: {base} {blocks} {stem} {frozen:?}");
        }

        // The frozen copy takes no gradient; G_B does, through B̂.
        let mut cfg = lite_config();
        cfg.loss.location_source = LocationSource::FrozenStage1;
        let mut t = Trainer::new(&cfg).unwrap();
        let probe = t
            .probe_gradients(Batch::Anlcl {
                rainy: &rainy,
                clean: &clean,
                synthetic: None,
            })
            .unwrap();
        let prefix = format!("{STAGE_START_NAME}.");
        let frozen: Vec<_> = probe
            .generator_phase
            .iter()
            .filter(|g| g.name.starts_with(&prefix))
            .collect();
        assert!(!frozen.is_empty() && frozen.iter().all(|g| g.norm.is_none()));
        assert!(
            probe
                .generator_phase
                .iter()
                .filter(|g| g.name.starts_with("gen_b.") && g.name.ends_with("weight"))
                .all(|g| g.norm.is_some_and(|n| n > 0.0))
        );
    }

    /// The frozen stage-start copy of G_B is made for `frozen_stage1` only: under the other
    /// location sources the trainer and its checkpoints hold one G_B's worth of tensors fewer,
    /// and every other network is the same. A checkpoint without the copy, loaded with
    /// `frozen_stage1`, starts it from its G_B.
    #[test]
    fn stage_start_copy_exists_for_frozen_stage1_only() {
        let tensors = all_tensors;
        let stage1 = format!("{STAGE_START_NAME}.");
        let mut on_cfg = lite_config();
        on_cfg.loss.location_source = LocationSource::FrozenStage1;
        let on = Trainer::new(&on_cfg).unwrap();
        let on_tensors = tensors(&on);
        let g_b = on.gen_b.var_store().variables().len();
        assert!(g_b > 0);
        assert_eq!(
            on_tensors
                .iter()
                .filter(|(n, _)| n.starts_with(&stage1))
                .count(),
            g_b
        );
        for source in [LocationSource::RainPredictor, LocationSource::Background] {
            let mut cfg = lite_config();
            cfg.loss.location_source = source;
            let off = Trainer::new(&cfg).unwrap();
            assert!(off.stage1_gen_b.is_none(), "{source:?}");
            assert!(off.networks().iter().all(|(n, _)| *n != STAGE_START_NAME));
            let off_tensors = tensors(&off);
            assert_eq!(off_tensors.len() + g_b, on_tensors.len(), "{source:?}");
            let shared: Vec<_> = on_tensors
                .iter()
                .filter(|(n, _)| !n.starts_with(&stage1))
                .collect();
            assert_eq!(shared.len(), off_tensors.len());
            for ((na, a), (nb, b)) in shared.into_iter().zip(&off_tensors) {
                assert_eq!(na, nb);
                assert!(a.equal(b), "{source:?}: {na} differs");
            }
        }

        // Saved without the copy; loaded with `frozen_stage1`, the copy is that G_B.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("off.safetensors");
        let off = Trainer::new(&lite_config()).unwrap();
        nudge(&off.gen_b, "");
        off.save(&path).unwrap();
        let saved = Tensor::read_safetensors(&path).unwrap();
        assert!(saved.iter().all(|(n, _)| !n.starts_with(&stage1)));
        let loaded = Trainer::load(&path, &on_cfg).unwrap();
        let copy = loaded
            .stage1_gen_b
            .as_ref()
            .unwrap()
            .var_store()
            .variables();
        for (name, w) in off.gen_b.var_store().variables() {
            assert!(copy[&name].equal(&w), "{name}");
        }
        // Trained, the copy holds still while G_B moves; saved, it travels.
        let mut on = on;
        let (rainy, clean) = ((images(7) + 0.2).clamp(0.0, 1.0), images(8));
        for _ in 0..2 {
            on.step_anlcl(&rainy, &clean).unwrap();
        }
        let trained = tensors(&on);
        let (held, moved): (Vec<_>, Vec<_>) = on_tensors
            .iter()
            .zip(&trained)
            .filter(|((n, _), _)| n.starts_with(&stage1) || n.starts_with("gen_b."))
            .partition(|((n, _), _)| n.starts_with(&stage1));
        assert!(held.iter().all(|((_, a), (_, b))| a.equal(b)));
        assert!(moved.iter().any(|((_, a), (_, b))| !a.equal(b)));
        let path = dir.path().join("on.safetensors");
        on.save(&path).unwrap();
        let saved = Tensor::read_safetensors(&path).unwrap();
        assert_eq!(
            saved.iter().filter(|(n, _)| n.starts_with(&stage1)).count(),
            g_b
        );
        let again = tensors(&Trainer::load(&path, &on_cfg).unwrap());
        assert!(
            again
                .iter()
                .zip(&trained)
                .all(|((na, a), (nb, b))| na == nb && a.equal(b))
        );
    }

    /// The identity term is the location term with G_B(B) and B in the places of B̂ and O: run
    /// alone it draws the same anchors the location term would, so on clean frames given as
    /// the rainy ones the two agree. With identical features everywhere PatchNCE is log(1 + N).
    #[test]
    fn identity_term_is_patchnce_on_clean_frames() {
        let (rainy, clean) = ((images(3) + 0.2).clamp(0.0, 1.0), images(4));
        let mut only_identity = lite_config();
        only_identity.loss.location = 0.0;
        only_identity.loss.layer_contrastive = 0.0;
        only_identity.loss.asymmetric = 0.0;
        only_identity.loss.identity = 1.0;
        let mut only_location = only_identity.clone();
        only_location.loss.location = 1.0;
        only_location.loss.identity = 0.0;
        let a = terms_of(&Trainer::new(&only_identity).unwrap(), &rainy, &clean);
        let b = terms_of(&Trainer::new(&only_location).unwrap(), &clean, &clean);
        let (idt, loc) = (a.identity.unwrap(), b.location.unwrap());
        assert!(a.location.is_none() && b.identity.is_none());
        assert!((idt - loc).abs() < 1e-6, "identity {idt} vs location {loc}");
        // Off at weight 0, and not part of stage 1.
        assert!(b.identity.is_none());

        let u = Tensor::from_slice(&[0.6f32, 0.8]);
        let (q, kp) = (u.view([1, 2]), u.view([1, 2]));
        let kn = u.view([1, 1, 2]).repeat([1, 5, 1]);
        let v = losses::location_nce(&q, &kp, &kn, None, 0.07).double_value(&[]);
        assert!((v - 6f64.ln()).abs() < 1e-5, "{v}");
    }

    /// `optimiser.discriminator_warmup`: D alone trains for the first steps, no generator term
    /// is computed; then the joint schedule runs.
    #[test]
    fn discriminator_warmup_trains_d_alone() {
        let mut cfg = lite_config();
        cfg.optimiser.discriminator_warmup = 2;
        let mut t = Trainer::new(&cfg).unwrap();
        let (rainy, clean) = ((images(5) + 0.2).clamp(0.0, 1.0), images(6));
        let snapshot = all_tensors;
        let moved = |a: &[(String, Tensor)], b: &[(String, Tensor)], net: &str| {
            let prefix = format!("{net}.");
            a.iter()
                .zip(b)
                .filter(|(x, _)| x.0.starts_with(&prefix))
                .any(|(x, y)| !x.1.equal(&y.1))
        };
        let before = snapshot(&t);
        for _ in 0..2 {
            let r = t.step_anlcl(&rainy, &clean).unwrap();
            assert!(r.discriminator.is_some());
            assert_eq!(
                r.loss,
                Terms::default(),
                "no generator term in the D warm-up"
            );
        }
        let held = snapshot(&t);
        assert!(moved(&before, &held, "disc") && moved(&before, &held, "key_disc"));
        for net in ["gen_b", "gen_r", "heads_loc", "heads_layer", "key_gen_b"] {
            assert!(!moved(&before, &held, net), "{net} moved in the D warm-up");
        }
        let r = t.step_anlcl(&rainy, &clean).unwrap();
        assert!(r.loss.location.is_some() && r.loss.identity.is_some());
        let after = snapshot(&t);
        for net in ["gen_b", "gen_r", "heads_loc", "heads_layer"] {
            assert!(
                moved(&held, &after, net),
                "{net} did not train after the warm-up"
            );
        }
    }
}
