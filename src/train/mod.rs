//! ANLCL training (docs/ARCHITECTURE.md, Training (ANLCL)) through tch; only built with the `train`
//! feature.
//!
//! - [`config`]: [`TrainConfig`], read from TOML, validated with errors naming the key.
//! - [`nets`]: G_B and G_R (ResNet-9, the authors' full-resolution network, the CPU lite
//!   network), the PatchGAN discriminator / layer encoder, projection heads, momentum copies.
//! - [`nonlocal`]: block matching around many anchors per image, batched on the device.
//! - [`losses`]: one module per term of the objective.
//! - [`optim`]: Adam whose state can be saved.
//! - [`trainer`]: [`Trainer`], one step of either stage, [`StepReport`].
//! - [`checkpoint`]: atomic, exact save and resume.
//! - [`export`]: generators to ONNX in the model contract.
//! - [`import`]: a run started from an exported generator's weights.

pub mod checkpoint;
pub mod config;
pub mod export;
pub mod import;
pub mod losses;
pub mod nets;
pub mod nonlocal;
pub mod optim;
pub mod raindet;
pub mod run;
pub mod trainer;

pub use checkpoint::{CheckpointError, CheckpointInfo, read_info};
pub use config::{
    ConfigError, FullResConfig, GeneratorArch, LiteConfig, Resnet9Config, Stage, TrainConfig,
};
pub use export::{ExportError, generator_model, generator_onnx, write_generator};
pub use import::ImportError;
pub use trainer::{
    Batch, GradientProbe, NETWORK_NAMES, ParamGrad, STAGE_START_NAME, StepReport, StepTimes,
    SyntheticBatch, TermAlignment, TermGradients, Terms, TrainError, Trainer,
};
