//! The authors' full-resolution generator (docs/ARCHITECTURE.md, Training (ANLCL)), written as
//! ONNX: no down-sampling, so any H and W work (`multiple_of` 1); about 316 k parameters and 20.6
//! GMAC per 256×256 image at 32 channels and 16 blocks. A GPU network: on a CPU it is ~6× slower
//! than ResNet-9 b16.
//!
//! Input `rainy` in [0,1] is mapped to [-1,1] inside the graph, the network ends in `tanh`, and
//! the result is mapped back to [0,1] as `clean`. Every convolution is 3×3 after a reflect pad of
//! 1, instance norm without affine parameters. Parameter names and shapes (weights OIHW):
//! `head.0` 3→c and `head.1` c→c, each followed by norm and ReLU; `res.{i}.conv1`,
//! `res.{i}.conv2` c→c (conv, norm, ReLU, conv, norm, plus the block's input); `tail.0` c→c with
//! norm and ReLU; `tail.1` c→3. Each has `.weight` and `.bias`.

use onnx_protobuf::ModelProto;

use super::builder::BuildError;
use super::net::{GeneratorOutput, NetWriter};
use derain_core::card::ModelCard;

/// The size of a full-resolution generator.
// In the trainer's config (`generator = { arch = ..., ... }`): a missing field takes the default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FullResConfig {
    /// Channels of every hidden layer.
    pub channels: usize,
    /// Residual blocks.
    pub blocks: usize,
}

impl Default for FullResConfig {
    /// The authors' size: 32 channels, 16 blocks.
    fn default() -> Self {
        Self {
            channels: 32,
            blocks: 16,
        }
    }
}

impl FullResConfig {
    /// No strided layers: any H and W.
    pub const MULTIPLE_OF: u32 = 1;

    /// The architecture string for the card, e.g. `fullres(channels=32, blocks=16)`.
    pub fn architecture(&self) -> String {
        format!(
            "fullres(channels={}, blocks={})",
            self.channels, self.blocks
        )
    }

    /// Every learned tensor, in the order [`fullres`] asks for them: name and shape.
    pub fn parameter_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let c = self.channels;
        let mut out = Vec::new();
        let mut layer = |name: String, cin: usize, cout: usize| {
            out.push((format!("{name}.weight"), vec![cout, cin, 3, 3]));
            out.push((format!("{name}.bias"), vec![cout]));
        };
        layer("head.0".into(), 3, c);
        layer("head.1".into(), c, c);
        for i in 0..self.blocks {
            layer(format!("res.{i}.conv1"), c, c);
            layer(format!("res.{i}.conv2"), c, c);
        }
        layer("tail.0".into(), c, c);
        layer("tail.1".into(), c, 3);
        out
    }

    /// Number of learned values.
    pub fn parameter_count(&self) -> u64 {
        self.parameter_shapes()
            .iter()
            .map(|(_, s)| s.iter().product::<usize>() as u64)
            .sum()
    }

    /// Multiply-accumulates of the convolutions per pixel.
    pub fn mac_per_pixel(&self) -> f64 {
        let c = self.channels as f64;
        2.0 * 9.0 * 3.0 * c + (2.0 + 2.0 * self.blocks as f64) * 9.0 * c * c
    }
}

/// The full-resolution generator `cfg` describes, with parameter values from
/// `weights(name, shape)` (names and shapes in the module documentation, order as
/// [`FullResConfig::parameter_shapes`]). The card gets architecture, `multiple_of` (1), parameter
/// count and GMAC per megapixel from the network; the rest comes from `card`.
pub fn fullres(
    cfg: &FullResConfig,
    card: &ModelCard,
    weights: &mut dyn FnMut(&str, &[usize]) -> Vec<f32>,
    output: GeneratorOutput,
) -> Result<ModelProto, BuildError> {
    let c = cfg.channels;
    let (mut n, x) = NetWriter::new("fullres", weights);
    let x = n.signed(&x);
    let x = conv(&mut n, &x, "head.0", 3, c);
    let x = n.norm_relu(&x, c);
    let x = conv(&mut n, &x, "head.1", c, c);
    let mut x = n.norm_relu(&x, c);
    for i in 0..cfg.blocks {
        let h = conv(&mut n, &x, &format!("res.{i}.conv1"), c, c);
        let h = n.norm_relu(&h, c);
        let h = conv(&mut n, &h, &format!("res.{i}.conv2"), c, c);
        let h = n.norm(&h, c);
        x = n.g.add(&x, &h);
    }
    let x = conv(&mut n, &x, "tail.0", c, c);
    let x = n.norm_relu(&x, c);
    let x = conv(&mut n, &x, "tail.1", c, 3);
    n.tanh_output(&x, output);
    n.finish(output, card, cfg.architecture(), FullResConfig::MULTIPLE_OF)
}

/// 3×3 convolution after a reflect pad of 1.
fn conv(n: &mut NetWriter<'_>, x: &str, name: &str, cin: usize, cout: usize) -> String {
    let p = n.g.reflect_pad(x, 1);
    n.conv(&p, name, cin, cout, 3, 1, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_matches_design() {
        // docs/ARCHITECTURE.md, Training (ANLCL): about 316 k parameters and 20.6 GMAC per 256×256
        // image.
        let cfg = FullResConfig::default();
        assert_eq!(cfg.parameter_count(), 316_195);
        let per_image = cfg.mac_per_pixel() * 256.0 * 256.0 / 1e9;
        assert!((20.6..20.7).contains(&per_image), "{per_image}");

        let mut asked = Vec::new();
        let mut zeros = |name: &str, shape: &[usize]| {
            asked.push((name.to_owned(), shape.to_vec()));
            vec![0.0; shape.iter().product()]
        };
        let m = fullres(
            &cfg,
            &ModelCard::new("t"),
            &mut zeros,
            GeneratorOutput::Clean,
        )
        .unwrap();
        assert_eq!(asked, cfg.parameter_shapes());
        let card = ModelCard::from_json(&m.metadata_props[0].value).unwrap();
        assert_eq!(card.parameters, 316_195);
        assert_eq!(card.multiple_of, 1);
        assert!((card.gmac_per_megapixel - cfg.mac_per_pixel() / 1000.0).abs() < 1e-9);
    }
}
