//! Export of a trained generator to ONNX in the model contract (docs/ARCHITECTURE.md, The model
//! contract): input `rainy`, output `clean` (G_B) — or `rain` for G_R on request — float32
//! `[N,3,H,W]` with dynamic N, H, W, and the model card in `metadata_props` (architecture,
//! parameter count, GMAC per megapixel and `multiple_of` from the graph; training details from
//! [`Trainer::model_card`]).
//!
//! The graphs come from the library's writers ([`crate::onnx::resnet9`],
//! [`crate::onnx::fullres`], [`crate::onnx::lite`]), which ask for each parameter by the same
//! name the tch network gives it, so weights map one to one; a missing, extra or wrongly shaped
//! parameter is an error, never a silently broken model. Exports are float32; an fp16 variant is
//! left for later.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use onnx_protobuf::ModelProto;
use tch::{Device, Kind, Tensor};

use super::config::GeneratorArch;
use super::nets::{Generator, Network};
use super::trainer::Trainer;
use crate::card::{ModelCard, Precision};
use crate::onnx::{self, BuildError, Fp16Error, GeneratorOutput};

/// Why a generator could not be exported.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("the {arch} graph needs parameter '{name}', which the trained generator lacks")]
    Missing { arch: String, name: String },
    #[error(
        "parameter '{name}' is {got:?} in the trained generator but {want:?} in the {arch} graph"
    )]
    Shape {
        arch: String,
        name: String,
        got: Vec<i64>,
        want: Vec<usize>,
    },
    #[error("the {arch} graph does not use the trained parameters {names:?}")]
    Unused { arch: String, names: Vec<String> },
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error("cannot write the float16 model: {0}")]
    Fp16(#[from] Fp16Error),
    #[error("cannot write model '{path}': {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The ONNX model of `generator` with its trained weights; `card` supplies name, training,
/// scores and licence.
pub fn generator_model(generator: &Generator, card: &ModelCard) -> Result<ModelProto, ExportError> {
    let arch = generator.arch().describe();
    let vars: HashMap<String, Tensor> = generator.var_store().variables();
    let mut asked = BTreeSet::new();
    let mut error = None;
    let model = {
        let mut weights = |name: &str, shape: &[usize]| -> Vec<f32> {
            let n = shape.iter().product();
            asked.insert(name.to_owned());
            let Some(t) = vars.get(name) else {
                error.get_or_insert(ExportError::Missing {
                    arch: arch.clone(),
                    name: name.to_owned(),
                });
                return vec![0.0; n];
            };
            let got = t.size();
            if got.iter().map(|&d| d as usize).ne(shape.iter().copied()) {
                error.get_or_insert(ExportError::Shape {
                    arch: arch.clone(),
                    name: name.to_owned(),
                    got,
                    want: shape.to_vec(),
                });
                return vec![0.0; n];
            }
            let flat = t
                .detach()
                .to_device(Device::Cpu)
                .to_kind(Kind::Float)
                .reshape([-1]);
            Vec::<f32>::try_from(&flat).unwrap_or_else(|_| vec![0.0; n])
        };
        let output = generator.output();
        match generator.arch() {
            GeneratorArch::Resnet9(c) => onnx::resnet9_with_output(c, card, &mut weights, output),
            GeneratorArch::Fullres(c) => onnx::fullres(c, card, &mut weights, output),
            GeneratorArch::Lite(c) => onnx::lite(c, card, &mut weights, output),
        }
    };
    if let Some(e) = error {
        return Err(e);
    }
    let unused: Vec<String> = vars
        .keys()
        .filter(|k| !asked.contains(*k))
        .cloned()
        .collect();
    if !unused.is_empty() {
        return Err(ExportError::Unused {
            arch,
            names: unused,
        });
    }
    Ok(model?)
}

/// [`generator_model`] as the bytes of an `.onnx` file.
pub fn generator_onnx(generator: &Generator, card: &ModelCard) -> Result<Vec<u8>, ExportError> {
    generator_onnx_as(generator, card, Precision::Fp32)
}

/// [`generator_onnx`] in the given precision: `Fp16` stores weights and activations as float16
/// with the float32 input and output kept (the card records it).
pub fn generator_onnx_as(
    generator: &Generator,
    card: &ModelCard,
    precision: Precision,
) -> Result<Vec<u8>, ExportError> {
    let model = generator_model(generator, card)?;
    let model = match precision {
        Precision::Fp32 => model,
        Precision::Fp16 => onnx::to_fp16(&model)?,
    };
    Ok(onnx::to_bytes(&model)?)
}

/// Writes [`generator_onnx`] to `path` atomically (temporary file, fsync, rename).
pub fn write_generator(
    generator: &Generator,
    card: &ModelCard,
    path: &Path,
) -> Result<(), ExportError> {
    let bytes = generator_onnx(generator, card)?;
    crate::imageio::write_file_atomic(path, &bytes).map_err(|source| ExportError::Write {
        path: path.to_owned(),
        source,
    })
}

impl Trainer {
    /// A card named `name` whose `training` records how this trainer was run: stage, steps,
    /// seed, batch, crop, loss weights and temperature, sampler and optimiser settings, device.
    /// Data, scores and licence are the caller's to fill in.
    pub fn model_card(&self, name: &str) -> ModelCard {
        let c = self.config();
        let mut card = ModelCard::new(name);
        card.training = serde_json::json!({
            "method": "ANLCL (asymmetric non-local contrastive learning; Chang et al., TPAMI)",
            "stage": c.stage,
            "steps": self.step_count(),
            "seed": c.seed,
            "batch": c.batch,
            "crop": c.crop,
            "losses": c.loss,
            "sampler": c.sampler,
            "optimiser": c.optimiser,
            "discriminator": c.discriminator,
            "heads": c.heads,
            "device": c.device,
        });
        card
    }

    /// G_B (`which` = [`GeneratorOutput::Clean`], the model the element runs) or G_R as ONNX
    /// bytes with `card`.
    pub fn export(&self, which: GeneratorOutput, card: &ModelCard) -> Result<Vec<u8>, ExportError> {
        generator_onnx(self.generator(which), card)
    }

    /// [`Trainer::export`] in the given precision (see [`generator_onnx_as`]).
    pub fn export_as(
        &self,
        which: GeneratorOutput,
        card: &ModelCard,
        precision: Precision,
    ) -> Result<Vec<u8>, ExportError> {
        generator_onnx_as(self.generator(which), card, precision)
    }
}

#[cfg(test)]
mod tests {
    use ort::session::Session;
    use ort::value::TensorRef;
    use tch::Tensor;

    use super::*;
    use crate::card::INPUT_NAME;
    use crate::onnx::{FullResConfig, LiteConfig, RAIN_OUTPUT_NAME, Resnet9Config};
    use crate::train::TrainConfig;

    /// A session for `bytes`, or `None` (after a notice) when ONNX Runtime is unavailable.
    /// Panics if ONNX Runtime is there but refuses the model.
    fn ort_session(bytes: &[u8]) -> Option<Session> {
        let env = match crate::runtime::environment(None) {
            Ok((_, env)) => env,
            Err(e) => {
                eprintln!("skipping: {e}");
                return None;
            }
        };
        let session = Session::builder(&env)
            .and_then(|mut b| b.commit_from_memory(bytes))
            .unwrap_or_else(|e| panic!("ONNX Runtime refused the model: {e}"));
        Some(session)
    }

    /// G_R's export (output `rain`, R̂ in [-1,1]) matches the tch network, for every
    /// architecture.
    #[test]
    fn rain_generator_parity() {
        for generator in [
            GeneratorArch::Resnet9(Resnet9Config {
                base: 4,
                blocks: 2,
                residual: false,
            }),
            GeneratorArch::Fullres(FullResConfig {
                channels: 4,
                blocks: 2,
            }),
            GeneratorArch::Lite(LiteConfig {
                factor: 2,
                channels: 6,
                blocks: 2,
                context: 0,
            }),
            GeneratorArch::Lite(LiteConfig {
                factor: 2,
                channels: 6,
                blocks: 1,
                context: 2,
            }),
        ] {
            let cfg = TrainConfig {
                generator,
                crop: 64,
                ..TrainConfig::default()
            };
            let t = Trainer::new(&cfg).unwrap();
            let bytes = t.export(GeneratorOutput::Rain, &t.model_card("r")).unwrap();
            let Some(mut session) = ort_session(&bytes) else {
                return;
            };
            let x = Tensor::rand([1, 3, 24, 36], (Kind::Float, Device::Cpu));
            let v = Vec::<f32>::try_from(x.reshape([-1])).unwrap();
            let input = TensorRef::from_array_view(([1usize, 3, 24, 36], &v[..])).unwrap();
            let out = session.run(ort::inputs![INPUT_NAME => input]).unwrap();
            let (_, y) = out[RAIN_OUTPUT_NAME].try_extract_tensor::<f32>().unwrap();
            let want = {
                let _guard = tch::no_grad_guard();
                t.generator(GeneratorOutput::Rain).forward(&x)
            };
            let want = Vec::<f32>::try_from(want.reshape([-1])).unwrap();
            let d = y
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            assert!(d <= 1e-4, "{}: {d}", generator.describe());
            assert!(want.iter().any(|v| *v < 0.0), "R̂ uses the negative range");
        }
    }
}
