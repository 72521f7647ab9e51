//! Starting a run from an exported generator: `run.init = "model.onnx"` (e.g. a shipped
//! `models/derain-lite.onnx`) instead of a training checkpoint. The export writes each of G_B's
//! parameters as an ONNX initializer under the name the tch network gives it
//! ([`super::export`]), so the weights map back one to one; a missing or wrongly shaped tensor,
//! another architecture, or a float16 export is an error naming the file, never a half-loaded
//! network.
//!
//! An ONNX file holds only G_B. The other networks start as follows:
//! - G_R, for the residual architectures (lite, residual ResNet-9), takes G_B's weights: G_B
//!   gives `clip(O − y)` and G_R gives `tanh(y)` of the same raw output `y`, so G_R starts at
//!   G_B's own rain estimate (`tanh(y) ≈ y` for rain values), which is what stage 1 trains both
//!   towards. For the other architectures G_R keeps its fresh initialisation (a warning says so).
//! - A lite generator with context blocks may start from the same lite network without them
//!   (e.g. the shipped `derain-lite.onnx`): the context blocks' second convolutions start at
//!   zero, so each block passes its input through and the grown network starts as the model
//!   it grew from, with the new blocks' first convolutions ready to learn.
//! - The momentum copy of G_B and its frozen stage-start copy take G_B's weights; the
//!   discriminator and heads start fresh, as they do after a stage 1 without the adversarial
//!   term (`run.init_discriminator` can bring a trained D from a checkpoint).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use onnx_protobuf::{Message, ModelProto, tensor_proto::DataType};
use tch::{Kind, Tensor};

use super::config::{GeneratorArch, LiteConfig, Resnet9Config, TrainConfig};
use super::nets::Network;
use super::trainer::{TrainError, Trainer};
use crate::card::Precision;
use crate::model::Model;

/// Why a run cannot start from an ONNX generator; every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cannot start from model '{path}': {reason}")]
    Model { path: PathBuf, reason: String },
    #[error(
        "model '{path}' is {model}, but the config trains {config}; set [train] generator to the \
         model's architecture or start without run.init"
    )]
    Architecture {
        path: PathBuf,
        model: String,
        config: String,
    },
    #[error(
        "model '{path}' is a float16 export; start from the float32 file (derain export without \
         --fp16)"
    )]
    Fp16 { path: PathBuf },
    #[error(
        "model '{path}' is a rain-layer generator (G_R, `derain export --rain`); start from the \
         clean generator's export (derain export without --rain)"
    )]
    RainLayer { path: PathBuf },
    #[error("model '{path}': parameter '{name}' {problem}")]
    Parameter {
        path: PathBuf,
        name: String,
        problem: String,
    },
    #[error("cannot build the trainer for model '{path}': {source}")]
    Trainer { path: PathBuf, source: TrainError },
}

/// Whether `path` names an ONNX model rather than a training checkpoint (by its extension).
pub fn is_model_path(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("onnx"))
}

/// Whether the file at `path` is an ONNX graph whose output is G_R's rain layer, which the
/// model contract refuses: the refusal then says what the file is.
fn is_rain_layer(path: &Path) -> bool {
    std::fs::read(path)
        .ok()
        .and_then(|b| ModelProto::parse_from_bytes(&b).ok())
        .is_some_and(|m| {
            m.graph
                .output
                .iter()
                .any(|o| o.name == crate::onnx::RAIN_OUTPUT_NAME)
        })
}

/// G_B's float32 parameters from an exported model's initializers, by name.
fn initializers(path: &Path, bytes: &[u8]) -> Result<HashMap<String, Tensor>, ImportError> {
    let proto = ModelProto::parse_from_bytes(bytes).map_err(|e| ImportError::Model {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    let mut out = HashMap::new();
    for t in proto.graph.initializer.iter() {
        if t.data_type != DataType::FLOAT as i32 {
            continue;
        }
        let numel: i64 = t.dims.iter().product();
        let values: Vec<f32> = if !t.raw_data.is_empty() {
            if t.raw_data.len() as i64 != numel * 4 {
                return Err(ImportError::Parameter {
                    path: path.to_owned(),
                    name: t.name.clone(),
                    problem: format!(
                        "holds {} bytes for shape {:?} ({} expected)",
                        t.raw_data.len(),
                        t.dims,
                        numel * 4
                    ),
                });
            }
            t.raw_data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        } else {
            t.float_data.clone()
        };
        if values.len() as i64 != numel {
            return Err(ImportError::Parameter {
                path: path.to_owned(),
                name: t.name.clone(),
                problem: format!("holds {} values for shape {:?}", values.len(), t.dims),
            });
        }
        out.insert(
            t.name.clone(),
            Tensor::from_slice(&values).reshape(t.dims.as_slice()),
        );
    }
    Ok(out)
}

fn residual(arch: &GeneratorArch) -> bool {
    matches!(
        arch,
        GeneratorArch::Lite(_) | GeneratorArch::Resnet9(Resnet9Config { residual: true, .. })
    )
}

impl Trainer {
    /// A trainer for `config` whose G_B (and, for residual architectures, G_R and the momentum
    /// copy) holds the weights of the exported generator at `path`; step 0, fresh optimisers.
    pub fn from_model(path: &Path, config: &TrainConfig) -> Result<Trainer, ImportError> {
        let p = || path.to_owned();
        let model = Model::from_path(path).map_err(|e| {
            if is_rain_layer(path) {
                ImportError::RainLayer { path: p() }
            } else {
                ImportError::Model {
                    path: p(),
                    reason: e.to_string(),
                }
            }
        })?;
        if model.card().precision == Precision::Fp16 {
            return Err(ImportError::Fp16 { path: p() });
        }
        let want = config.generator.describe();
        let got = &model.card().architecture;
        // Growing a lite network by context blocks: the model is the config's without them.
        let grows = match config.generator {
            GeneratorArch::Lite(LiteConfig {
                factor,
                channels,
                blocks,
                context,
            }) if context > 0 => {
                *got == GeneratorArch::Lite(LiteConfig {
                    factor,
                    channels,
                    blocks,
                    context: 0,
                })
                .describe()
            }
            _ => false,
        };
        if !got.is_empty() && *got != want && !grows {
            return Err(ImportError::Architecture {
                path: p(),
                model: got.clone(),
                config: want,
            });
        }
        let weights = initializers(path, model.bytes())?;
        let mut trainer =
            Trainer::new(config).map_err(|source| ImportError::Trainer { path: p(), source })?;
        let _guard = tch::no_grad_guard();
        for (name, mut t) in trainer.gen_b.var_store().variables() {
            if grows && name.starts_with("ctx.") {
                if name.contains(".conv2.") {
                    let _ = t.zero_();
                }
                continue;
            }
            let w = weights.get(&name).ok_or_else(|| ImportError::Parameter {
                path: p(),
                name: name.clone(),
                problem: format!("is missing (the {want} generator needs it)"),
            })?;
            if w.size() != t.size() {
                return Err(ImportError::Parameter {
                    path: p(),
                    name,
                    problem: format!(
                        "is {:?}, the {want} generator needs {:?}",
                        w.size(),
                        t.size()
                    ),
                });
            }
            t.copy_(&w.to_kind(Kind::Float).to_device(t.device()));
        }
        if grows {
            log::info!(
                "model '{}' is {got}: the {want} generator starts as it, its context blocks as \
                 identities",
                path.display()
            );
        }
        let online = trainer.gen_b.var_store().variables();
        let copy_into = |net: &dyn Network| {
            for (name, mut t) in net.var_store().variables() {
                if let Some(w) = online.get(&name) {
                    t.copy_(w);
                }
            }
        };
        copy_into(&trainer.key_gen_b);
        if residual(&config.generator) {
            copy_into(&trainer.gen_r);
        } else {
            log::warn!(
                "model '{}': G_R of the {want} generator cannot be derived from G_B; it starts \
                 from a fresh initialisation",
                path.display()
            );
        }
        // The stage starts from this G_B (`loss.location_source = "frozen_stage1"`).
        trainer.mark_stage_start();
        Ok(trainer)
    }
}
