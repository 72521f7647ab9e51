//! The ResNet-9 (Johnson) generator as in CycleGAN/CUT, with instance norm without affine
//! parameters (docs/ARCHITECTURE.md, Training (ANLCL)), written as ONNX.
//!
//! Input `rainy` in [0,1] is mapped to [-1,1] inside the graph, the network ends in `tanh`, and
//! the result is mapped back to [0,1] as `clean`. Two stride-2 layers make H and W multiples of 4.
//!
//! Parameter names and shapes (weights OIHW for convolutions, IOHW for transposed ones):
//! `enc.0` 7×7 3→b after a reflect pad of 3; `enc.1` 3×3 stride 2 b→2b; `enc.2` 3×3 stride 2
//! 2b→4b; `res.{i}.conv1`, `res.{i}.conv2` 3×3 4b→4b after reflect pads of 1; `dec.0`
//! transposed 3×3 stride 2 4b→2b; `dec.1` transposed 2b→b; `dec.2` 7×7 b→3 after a reflect pad of
//! 3. Each has `.weight` and `.bias`.

use onnx_protobuf::ModelProto;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::builder::{BuildError, to_bytes};
use super::net::{GeneratorOutput, NetWriter};
use derain_core::card::ModelCard;

/// The size of a ResNet-9 generator.
// In the trainer's config (`generator = { arch = ..., ... }`): a missing field takes the default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Resnet9Config {
    /// Channels of the first layer (b); the residual blocks run at 4b.
    pub base: usize,
    /// Residual blocks at quarter resolution.
    pub blocks: usize,
    /// Predict the rain layer and subtract it (`clean = clip(rainy − r, 0, 1)`, as derain-lite
    /// does) instead of drawing the clean image through `tanh`. Same weights and cost; a
    /// global skip the paper's network lacks, added because the plain network has to learn the
    /// identity through two downsamplings and learned stage 1 about three times slower
    /// (models/README.md).
    pub residual: bool,
}

impl Default for Resnet9Config {
    fn default() -> Self {
        Self {
            base: 16,
            blocks: 9,
            residual: false,
        }
    }
}

impl Resnet9Config {
    /// H and W must be multiples of this (two stride-2 layers).
    pub const MULTIPLE_OF: u32 = 4;

    /// The architecture string for the card, e.g. `resnet9(base=16, blocks=9)` or
    /// `resnet9(base=16, blocks=9, residual)`.
    pub fn architecture(&self) -> String {
        let residual = if self.residual { ", residual" } else { "" };
        format!(
            "resnet9(base={}, blocks={}{residual})",
            self.base, self.blocks
        )
    }

    /// Every learned tensor, in the order [`resnet9`] asks for them: name and shape.
    pub fn parameter_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let b = self.base;
        let mut out = Vec::new();
        let mut layer = |name: String, w: [usize; 4], bias: usize| {
            out.push((format!("{name}.weight"), w.to_vec()));
            out.push((format!("{name}.bias"), vec![bias]));
        };
        layer("enc.0".into(), [b, 3, 7, 7], b);
        layer("enc.1".into(), [2 * b, b, 3, 3], 2 * b);
        layer("enc.2".into(), [4 * b, 2 * b, 3, 3], 4 * b);
        for i in 0..self.blocks {
            for c in ["conv1", "conv2"] {
                layer(format!("res.{i}.{c}"), [4 * b, 4 * b, 3, 3], 4 * b);
            }
        }
        layer("dec.0".into(), [4 * b, 2 * b, 3, 3], 2 * b);
        layer("dec.1".into(), [2 * b, b, 3, 3], b);
        layer("dec.2".into(), [3, b, 7, 7], 3);
        out
    }

    /// Number of learned values.
    pub fn parameter_count(&self) -> u64 {
        self.parameter_shapes()
            .iter()
            .map(|(_, s)| s.iter().product::<usize>() as u64)
            .sum()
    }

    /// Multiply-accumulates of the convolutions per input pixel (norms and pointwise ops not
    /// counted; a transposed convolution counts k²·in·out per input position).
    pub fn mac_per_pixel(&self) -> f64 {
        let b = self.base as f64;
        let full = 2.0 * 49.0 * 3.0 * b; // enc.0 and dec.2 at full resolution
        let half = 2.0 * 9.0 * b * 2.0 * b / 4.0; // enc.1 output, dec.1 input
        let quarter = 2.0 * 9.0 * 2.0 * b * 4.0 * b / 16.0; // enc.2 output, dec.0 input
        let res = 2.0 * self.blocks as f64 * 9.0 * 16.0 * b * b / 16.0;
        full + half + quarter + res
    }

    /// GMAC per megapixel of input (the card's unit): MAC per pixel / 1000.
    pub fn gmac_per_megapixel(&self) -> f64 {
        self.mac_per_pixel() / 1000.0
    }
}

/// The ResNet-9 generator `cfg` describes, with parameter values from `weights(name, shape)`
/// (see the module documentation for names and shapes; [`Resnet9Config::parameter_shapes`] lists
/// them in the order they are asked for). The card's name, training, scores, licence and extra
/// fields come from `card`; architecture, `multiple_of` (4), parameter count (of the weights
/// created) and GMAC per megapixel are set from the network.
pub fn resnet9(
    cfg: &Resnet9Config,
    card: &ModelCard,
    weights: &mut dyn FnMut(&str, &[usize]) -> Vec<f32>,
) -> Result<ModelProto, BuildError> {
    resnet9_with_output(cfg, card, weights, GeneratorOutput::Clean)
}

/// [`resnet9`] with a choice of output: `clean` (G_B, the model contract) or `rain` (G_R, the
/// same network ending in `tanh` without the map back to [0,1]).
pub fn resnet9_with_output(
    cfg: &Resnet9Config,
    card: &ModelCard,
    weights: &mut dyn FnMut(&str, &[usize]) -> Vec<f32>,
    output: GeneratorOutput,
) -> Result<ModelProto, BuildError> {
    let b = cfg.base;
    let (mut n, input) = NetWriter::new("resnet9", weights);
    let x = n.signed(&input);

    let x = n.g.reflect_pad(&x, 3);
    let x = n.conv(&x, "enc.0", 3, b, 7, 1, 0);
    let x = n.norm_relu(&x, b);
    let x = n.conv(&x, "enc.1", b, 2 * b, 3, 2, 1);
    let x = n.norm_relu(&x, 2 * b);
    let x = n.conv(&x, "enc.2", 2 * b, 4 * b, 3, 2, 1);
    let mut x = n.norm_relu(&x, 4 * b);

    for i in 0..cfg.blocks {
        let h = n.g.reflect_pad(&x, 1);
        let h = n.conv(&h, &format!("res.{i}.conv1"), 4 * b, 4 * b, 3, 1, 0);
        let h = n.norm_relu(&h, 4 * b);
        let h = n.g.reflect_pad(&h, 1);
        let h = n.conv(&h, &format!("res.{i}.conv2"), 4 * b, 4 * b, 3, 1, 0);
        let h = n.norm(&h, 4 * b);
        x = n.g.add(&x, &h);
    }

    let x = n.conv_up(&x, "dec.0", 4 * b, 2 * b);
    let x = n.norm_relu(&x, 2 * b);
    let x = n.conv_up(&x, "dec.1", 2 * b, b);
    let x = n.norm_relu(&x, b);
    let x = n.g.reflect_pad(&x, 3);
    let x = n.conv(&x, "dec.2", b, 3, 7, 1, 0);
    if cfg.residual && output == GeneratorOutput::Clean {
        n.clip_difference(&input, &x);
    } else {
        n.tanh_output(&x, output);
    }
    n.finish(output, card, cfg.architecture(), Resnet9Config::MULTIPLE_OF)
}

/// A randomly initialised ResNet-9 (for benchmarks): PyTorch's default convolution init, uniform
/// in ±1/√fan_in for weights and biases, which keeps the `tanh` out of saturation. The card is
/// named `resnet9-b{base}-random` and records the seed.
pub fn resnet9_random(cfg: &Resnet9Config, seed: u64) -> Result<Vec<u8>, BuildError> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut bound = 1.0f32;
    let mut init = |_: &str, shape: &[usize]| -> Vec<f32> {
        if shape.len() > 1 {
            // PyTorch takes fan_in from dimension 1 for both Conv2d and ConvTranspose2d.
            bound = 1.0 / (shape[1..].iter().product::<usize>() as f32).sqrt();
        }
        let n = shape.iter().product::<usize>();
        (0..n).map(|_| rng.random_range(-bound..bound)).collect()
    };
    let mut card = ModelCard::new(format!("resnet9-b{}-random", cfg.base));
    card.training = serde_json::json!({ "init": "random (uniform ±1/sqrt(fan_in))", "seed": seed });
    card.licence = "none: random weights".to_owned();
    let model = resnet9(cfg, &card, &mut init)?;
    to_bytes(&model)
}

#[cfg(test)]
mod tests {
    use onnx_protobuf::Message;

    use super::*;
    use crate::onnx::testing::{ort_session, run_f32};
    use derain_core::card::{CARD_KEY, INPUT_NAME, OUTPUT_NAME};

    #[test]
    fn size_matches_design() {
        let cfg = Resnet9Config::default();
        // docs/ARCHITECTURE.md, Training (ANLCL): 716 k parameters, 3.3 GMAC per 256×256, ≈51 k MAC
        // per pixel.
        assert_eq!(cfg.parameter_count(), 715_651);
        assert_eq!(cfg.mac_per_pixel(), 50_784.0);
        let per_image = cfg.mac_per_pixel() * 256.0 * 256.0 / 1e9;
        assert!((3.3..3.35).contains(&per_image), "{per_image}");
        // Paper-scale: 32 base channels has 2.85 M parameters (docs/ARCHITECTURE.md, Speed budget).
        let c32 = Resnet9Config {
            base: 32,
            blocks: 9,
            residual: false,
        }
        .parameter_count();
        assert!((2_840_000..2_870_000).contains(&c32), "{c32}");
    }

    #[test]
    fn graph_matches_config_and_card() {
        let cfg = Resnet9Config::default();
        let bytes = resnet9_random(&cfg, 1).expect("builds");
        let m = ModelProto::parse_from_bytes(&bytes).expect("parses");
        assert_eq!(m.opset_import[0].version, 17);
        assert_eq!(m.ir_version, 8);
        assert_eq!(m.graph.input.len(), 1);
        assert_eq!(m.graph.input[0].name, INPUT_NAME);
        assert_eq!(m.graph.output.len(), 1);
        assert_eq!(m.graph.output[0].name, OUTPUT_NAME);

        // Learned tensors are exactly the listed ones, with the listed shapes.
        let mut learned: Vec<(String, Vec<usize>)> = m
            .graph
            .initializer
            .iter()
            .filter(|t| t.name.ends_with(".weight") || t.name.ends_with(".bias"))
            .map(|t| (t.name.clone(), t.dims.iter().map(|&d| d as usize).collect()))
            .collect();
        let mut want = cfg.parameter_shapes();
        learned.sort();
        want.sort();
        assert_eq!(learned, want);
        for t in &m.graph.initializer {
            let n: i64 = t.dims.iter().product();
            assert_eq!(
                t.raw_data.len() as i64,
                n * if t.data_type == 7 { 8 } else { 4 }
            );
        }

        let card = m
            .metadata_props
            .iter()
            .find(|p| p.key == CARD_KEY)
            .map(|p| ModelCard::from_json(&p.value).expect("card parses"))
            .expect("has a card");
        assert_eq!(card.name, "resnet9-b16-random");
        assert_eq!(card.architecture, "resnet9(base=16, blocks=9)");
        assert_eq!(card.multiple_of, 4);
        assert_eq!(card.parameters, 715_651);
        assert!((card.gmac_per_megapixel - 50.784).abs() < 1e-9);
        assert_eq!(card.training["seed"], 1);

        let count = |op: &str| m.graph.node.iter().filter(|n| n.op_type == op).count();
        assert_eq!(count("Conv"), 3 + 2 * 9 + 1);
        assert_eq!(count("ConvTranspose"), 2);
        assert_eq!(count("InstanceNormalization"), 3 + 2 * 9 + 2);
        assert_eq!(count("Pad"), 2 + 2 * 9);
        assert_eq!(count("Tanh"), 1);
    }

    #[test]
    fn seeded_and_custom_weights() {
        let cfg = Resnet9Config {
            base: 4,
            blocks: 2,
            residual: false,
        };
        assert_eq!(
            resnet9_random(&cfg, 5).unwrap(),
            resnet9_random(&cfg, 5).unwrap()
        );
        assert_ne!(
            resnet9_random(&cfg, 5).unwrap(),
            resnet9_random(&cfg, 6).unwrap()
        );

        let mut asked = Vec::new();
        let mut zeros = |name: &str, shape: &[usize]| {
            asked.push((name.to_owned(), shape.to_vec()));
            vec![0.0; shape.iter().product()]
        };
        let card = ModelCard::new("trained");
        let m = resnet9(&cfg, &card, &mut zeros).expect("builds");
        assert_eq!(asked, cfg.parameter_shapes());
        assert!(m.metadata_props[0].value.contains("\"trained\""));

        // A wrong-sized tensor from the callback is an error, not a broken file.
        let mut short = |_: &str, shape: &[usize]| vec![0.0; shape.iter().product::<usize>() - 1];
        assert!(matches!(
            resnet9(&cfg, &card, &mut short),
            Err(BuildError::DataLength { .. })
        ));
    }

    #[test]
    fn random_resnet9_runs_in_ort() {
        let bytes = resnet9_random(&Resnet9Config::default(), 42).expect("builds");
        let Some(mut s) = ort_session(&bytes) else {
            return;
        };
        let shape = [1usize, 3, 64, 96];
        let x: Vec<f32> = (0..shape.iter().product::<usize>())
            .map(|i| ((i * 7919) % 1000) as f32 / 999.0)
            .collect();
        let (out_shape, y) = run_f32(&mut s, shape, &x);
        assert_eq!(out_shape, shape);
        assert!(
            y.iter().all(|v| (0.0..=1.0).contains(v)),
            "output leaves [0,1]"
        );
        let unsaturated = y.iter().filter(|v| (0.02..0.98).contains(*v)).count();
        assert!(
            unsaturated * 10 > y.len() * 9,
            "tanh saturated: only {unsaturated} of {} values inside (0.02, 0.98)",
            y.len()
        );
        let mean = y.iter().sum::<f32>() / y.len() as f32;
        let var = y.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / y.len() as f32;
        assert!(var > 1e-5, "output is constant");
    }

    /// The residual variant with all weights zero predicts no rain: the output is the input,
    /// while the plain one gives tanh(0) mapped to 0.5 everywhere.
    #[test]
    fn residual_variant_with_zero_weights_passes_the_input_through() {
        let x: Vec<f32> = (0..3 * 8 * 12).map(|i| i as f32 / 300.0).collect();
        for residual in [true, false] {
            let cfg = Resnet9Config {
                base: 2,
                blocks: 1,
                residual,
            };
            let mut zeros = |_: &str, shape: &[usize]| vec![0.0; shape.iter().product()];
            let m = resnet9(&cfg, &ModelCard::new("t"), &mut zeros).unwrap();
            let card = ModelCard::from_json(&m.metadata_props[0].value).unwrap();
            assert_eq!(card.architecture, cfg.architecture());
            assert_eq!(card.architecture.contains("residual"), residual);
            let Some(mut s) = ort_session(&to_bytes(&m).unwrap()) else {
                return;
            };
            let (_, y) = run_f32(&mut s, [1, 3, 8, 12], &x);
            if residual {
                assert_eq!(y, x);
            } else {
                assert!(y.iter().all(|v| (v - 0.5).abs() < 1e-6));
            }
        }
    }
}
