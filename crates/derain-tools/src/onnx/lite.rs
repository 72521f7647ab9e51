//! The CPU real-time generator, written as ONNX: a lossless space-to-depth by `f` (2 or 4), a
//! few cheap residual blocks at 1/f of the resolution without normalisation, a prediction of the
//! rain layer, depth-to-space back, and `clean = clip(rainy − rain, 0, 1)`.
//!
//! Why this shape: on two CPU cores ONNX Runtime needs ≈ 7× fewer MACs than ResNet-9 b16 for
//! 30 fps at 640×360 (docs/ARCHITECTURE.md, Speed budget). Space-to-depth keeps every input pixel
//! (no information lost before the first layer), the blocks see a large field of view cheaply at
//! low resolution, and predicting the (sparse, mostly additive) rain layer leaves the image's
//! detail to the skip connection. At f = 4, 32 channels and 3 blocks it is 83 k parameters and
//! ≈ 5.2 k MAC per pixel.
//!
//! Input `rainy` in [0,1] is mapped to [-1,1] before the space-to-depth. Convolutions are 3×3
//! with zero padding 1. Parameter names and shapes (weights OIHW), with k = 3f²: `head` k→c then
//! ReLU; `res.{i}.conv1` c→c, ReLU, `res.{i}.conv2` c→c, plus the block's input; then the context
//! blocks, the same with both convolutions dilated by 2^(i+1) (padding likewise), named
//! `ctx.{i}.conv1` and `ctx.{i}.conv2`; `tail` c→k, then depth-to-space to the rain layer r.
//! `clean = clip(rainy − r, 0, 1)`; the rain output (G_R) is `tanh(r)`. Each has `.weight` and
//! `.bias`.

use onnx_protobuf::ModelProto;

use super::builder::BuildError;
use super::net::{GeneratorOutput, NetWriter};
use derain_core::card::ModelCard;

/// The size of a lite generator.
// In the trainer's config (`generator = { arch = ..., ... }`): a missing field takes the default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LiteConfig {
    /// Space-to-depth factor f (2 or 4): the blocks run on 1/f² of the pixels.
    pub factor: usize,
    /// Channels of the low-resolution layers.
    pub channels: usize,
    /// Residual blocks.
    pub blocks: usize,
    /// Dilated residual blocks after them (dilation 2, 4, ..., 2^context): at f = 4 and
    /// context 3 the field of view grows from 68 to 292 input pixels for 1.67× the MACs, enough
    /// to see that a pole or a window frame runs on where a streak ends.
    pub context: usize,
}

impl Default for LiteConfig {
    /// f = 4, 32 channels, 3 blocks: ≈ 5.2 k MAC per pixel.
    fn default() -> Self {
        Self {
            factor: 4,
            channels: 32,
            blocks: 3,
            context: 0,
        }
    }
}

impl LiteConfig {
    /// H and W must be multiples of the space-to-depth factor.
    pub fn multiple_of(&self) -> u32 {
        self.factor as u32
    }

    /// The architecture string for the card, e.g. `lite(factor=4, channels=32, blocks=3)`.
    pub fn architecture(&self) -> String {
        // Without context blocks the string is what cards written before them carry.
        let context = match self.context {
            0 => String::new(),
            n => format!(", context={n}"),
        };
        format!(
            "lite(factor={}, channels={}, blocks={}{context})",
            self.factor, self.channels, self.blocks
        )
    }

    /// The dilation of context block `i`.
    pub fn dilation(i: usize) -> usize {
        2 << i
    }

    /// Every learned tensor, in the order [`lite`] asks for them: name and shape.
    pub fn parameter_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let c = self.channels;
        let k = 3 * self.factor * self.factor;
        let mut out = Vec::new();
        let mut layer = |name: String, cin: usize, cout: usize| {
            out.push((format!("{name}.weight"), vec![cout, cin, 3, 3]));
            out.push((format!("{name}.bias"), vec![cout]));
        };
        layer("head".into(), k, c);
        for i in 0..self.blocks {
            layer(format!("res.{i}.conv1"), c, c);
            layer(format!("res.{i}.conv2"), c, c);
        }
        for i in 0..self.context {
            layer(format!("ctx.{i}.conv1"), c, c);
            layer(format!("ctx.{i}.conv2"), c, c);
        }
        layer("tail".into(), c, k);
        out
    }

    /// Number of learned values.
    pub fn parameter_count(&self) -> u64 {
        self.parameter_shapes()
            .iter()
            .map(|(_, s)| s.iter().product::<usize>() as u64)
            .sum()
    }

    /// Multiply-accumulates of the convolutions per full-resolution pixel.
    pub fn mac_per_pixel(&self) -> f64 {
        let c = self.channels as f64;
        let f2 = (self.factor * self.factor) as f64;
        let k = 3.0 * f2;
        let blocks = (self.blocks + self.context) as f64;
        (2.0 * 9.0 * k * c + 2.0 * blocks * 9.0 * c * c) / f2
    }
}

/// The lite generator `cfg` describes, with parameter values from `weights(name, shape)` (names
/// and shapes in the module documentation, order as [`LiteConfig::parameter_shapes`]). The card
/// gets architecture, `multiple_of` (f), parameter count and GMAC per megapixel from the network.
pub fn lite(
    cfg: &LiteConfig,
    card: &ModelCard,
    weights: &mut dyn FnMut(&str, &[usize]) -> Vec<f32>,
    output: GeneratorOutput,
) -> Result<ModelProto, BuildError> {
    let (c, f) = (cfg.channels, cfg.factor);
    let k = 3 * f * f;
    let (mut n, input) = NetWriter::new("lite", weights);
    let x = n.signed(&input);
    let x = n.space_to_depth(&x, f);
    let x = n.conv(&x, "head", k, c, 3, 1, 1);
    let mut x = n.g.relu(&x);
    for i in 0..cfg.blocks {
        let h = n.conv(&x, &format!("res.{i}.conv1"), c, c, 3, 1, 1);
        let h = n.g.relu(&h);
        let h = n.conv(&h, &format!("res.{i}.conv2"), c, c, 3, 1, 1);
        x = n.g.add(&x, &h);
    }
    for i in 0..cfg.context {
        let d = LiteConfig::dilation(i);
        let h = n.conv_dilated(&x, &format!("ctx.{i}.conv1"), c, c, d);
        let h = n.g.relu(&h);
        let h = n.conv_dilated(&h, &format!("ctx.{i}.conv2"), c, c, d);
        x = n.g.add(&x, &h);
    }
    let x = n.conv(&x, "tail", c, k, 3, 1, 1);
    let rain = n.depth_to_space(&x, f);
    match output {
        GeneratorOutput::Clean => n.clip_difference(&input, &rain),
        GeneratorOutput::Rain => n.tanh_output(&rain, output),
    }
    n.finish(output, card, cfg.architecture(), cfg.multiple_of())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::Resnet9Config;
    use crate::onnx::testing::{ort_session, run_f32};

    #[test]
    fn cost_is_a_seventh_of_resnet9_or_less() {
        let cfg = LiteConfig::default();
        assert_eq!(cfg.mac_per_pixel(), 5184.0);
        assert_eq!(cfg.parameter_count(), 83_216);
        let ratio = Resnet9Config::default().mac_per_pixel() / cfg.mac_per_pixel();
        assert!(ratio > 7.0, "{ratio}");
        // Three context blocks cost as much as three plain ones: 1.67x in all.
        let ctx = LiteConfig { context: 3, ..cfg };
        assert_eq!(ctx.mac_per_pixel(), 8640.0);
        assert_eq!(ctx.parameter_count(), 83_216 + 6 * (32 * 32 * 9 + 32));
        assert_eq!(
            ctx.architecture(),
            "lite(factor=4, channels=32, blocks=3, context=3)"
        );
        assert_eq!(cfg.architecture(), "lite(factor=4, channels=32, blocks=3)");
    }

    /// With zero weights the rain layer is zero, so `clean == rainy`: checks the space-to-depth
    /// round trip and the subtraction in ONNX Runtime.
    #[test]
    fn zero_weights_pass_the_input_through() {
        let cfg = LiteConfig {
            factor: 2,
            channels: 4,
            blocks: 1,
            context: 2,
        };
        let mut asked = Vec::new();
        let mut zeros = |name: &str, shape: &[usize]| {
            asked.push((name.to_owned(), shape.to_vec()));
            vec![0.0; shape.iter().product()]
        };
        let m = lite(
            &cfg,
            &ModelCard::new("t"),
            &mut zeros,
            GeneratorOutput::Clean,
        )
        .unwrap();
        assert_eq!(asked, cfg.parameter_shapes());
        let card = ModelCard::from_json(&m.metadata_props[0].value).unwrap();
        assert_eq!(card.multiple_of, 2);
        assert_eq!(card.parameters, cfg.parameter_count());
        assert!((card.gmac_per_megapixel - cfg.mac_per_pixel() / 1000.0).abs() < 1e-9);

        let bytes = crate::onnx::to_bytes(&m).unwrap();
        let Some(mut s) = ort_session(&bytes) else {
            return;
        };
        let x: Vec<f32> = (0..3 * 4 * 6).map(|i| i as f32 / 71.0).collect();
        let (shape, y) = run_f32(&mut s, [1, 3, 4, 6], &x);
        assert_eq!(shape, [1, 3, 4, 6]);
        assert_eq!(x, y);
    }
}
