//! The rain detector written as ONNX (the contract is in [`derain_core::raindetect`]): input `frame`
//! RGB in [0, 1] mapped to [-1, 1]; per layer `conv.{i}` a 3×3 convolution with stride 2 and
//! zero padding 1, then ReLU; the global mean of the last feature map; `fc` a linear layer to one
//! logit; the calibration `logit · a + b` (Platt scaling, `calib.a`, `calib.b`); sigmoid.
//!
//! Each convolution halves the resolution, so the cost falls by 4 per layer after the first: at
//! the detector's 320×180 input, channels 8-16-16-32 are about 6 M multiply-adds, a few percent
//! of derain-lite at 640×360.

use onnx_protobuf::{ModelProto, tensor_proto::DataType};

use super::builder::{BuildError, DEFAULT_OPSET, Dim, GraphBuilder};
use derain_core::card::ModelCard;
use derain_core::raindetect::{INPUT_NAME, OUTPUT_NAME};

/// The size of a rain detector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RainDetectorConfig {
    /// Output channels of each stride-2 convolution (the input has 3).
    pub channels: Vec<usize>,
}

impl Default for RainDetectorConfig {
    fn default() -> Self {
        Self {
            channels: vec![8, 16, 16, 32],
        }
    }
}

impl RainDetectorConfig {
    /// The architecture string for the card, e.g. `rain-cnn(channels=8-16-16-32)`.
    pub fn architecture(&self) -> String {
        let c: Vec<String> = self.channels.iter().map(|c| c.to_string()).collect();
        format!("rain-cnn(channels={})", c.join("-"))
    }

    /// Every learned tensor: name and shape, in graph order (weights OIHW).
    pub fn parameter_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let mut out = Vec::new();
        let mut in_c = 3;
        for (i, &c) in self.channels.iter().enumerate() {
            out.push((format!("conv.{i}.weight"), vec![c, in_c, 3, 3]));
            out.push((format!("conv.{i}.bias"), vec![c]));
            in_c = c;
        }
        out.push(("fc.weight".into(), vec![1, in_c]));
        out.push(("fc.bias".into(), vec![1]));
        out
    }

    /// Multiply-adds per input pixel (of the detector's input).
    pub fn macs_per_pixel(&self) -> f64 {
        let mut in_c = 3;
        let mut scale = 1.0;
        let mut macs = 0.0;
        for &c in &self.channels {
            scale /= 4.0;
            macs += scale * (9 * in_c * c) as f64;
            in_c = c;
        }
        macs
    }

    /// Checks the sizes are sane: 1 to 6 layers of 1 to 256 channels.
    pub fn validate(&self) -> Result<(), String> {
        if self.channels.is_empty() || self.channels.len() > 6 {
            return Err(format!(
                "detector.channels has {} layers, expected 1 to 6",
                self.channels.len()
            ));
        }
        if let Some(c) = self.channels.iter().find(|&&c| c == 0 || c > 256) {
            return Err(format!("detector.channels: {c} is outside 1..=256"));
        }
        Ok(())
    }
}

/// Builds the detector graph; `weights(name, shape)` gives each parameter's values and
/// `calibration` is Platt's `(a, b)`.
pub fn rain_detector(
    config: &RainDetectorConfig,
    weights: &mut dyn FnMut(&str, &[usize]) -> Vec<f32>,
    calibration: (f32, f32),
    card: &ModelCard,
) -> Result<ModelProto, BuildError> {
    let mut g = GraphBuilder::new("rain_detector");
    let x = g.input(
        INPUT_NAME,
        DataType::FLOAT,
        &[
            Dim::Fixed(1),
            Dim::Fixed(3),
            Dim::Symbolic("H"),
            Dim::Symbolic("W"),
        ],
    );
    let mut h = g.mul_scalar(&x, 2.0);
    h = g.sub_scalar(&h, 1.0);
    let mut in_c = 3;
    for (i, &c) in config.channels.iter().enumerate() {
        let w = weights(&format!("conv.{i}.weight"), &[c, in_c, 3, 3]);
        let b = weights(&format!("conv.{i}.bias"), &[c]);
        h = g.conv2d(&h, &format!("conv.{i}"), in_c, c, 3, 2, 1, 1, &w, &b);
        h = g.relu(&h);
        in_c = c;
    }
    let pooled = g.node1("GlobalAveragePool", &[&h], vec![]);
    let flat = g.node1("Flatten", &[&pooled], vec![super::Attr::int("axis", 1)]);
    let fw = weights("fc.weight", &[1, in_c]);
    let fb = weights("fc.bias", &[1]);
    let fw = g.parameter("fc.weight", &[1, in_c], fw);
    let fb = g.parameter("fc.bias", &[1], fb);
    let logit = g.node1(
        "Gemm",
        &[&flat, &fw, &fb],
        vec![super::Attr::int("transB", 1)],
    );
    let a = g.initializer("calib.a", &[1], vec![calibration.0]);
    let b = g.initializer("calib.b", &[1], vec![calibration.1]);
    let scaled = g.mul(&logit, &a);
    let shifted = g.add(&scaled, &b);
    g.node("Sigmoid", &[&shifted], &[OUTPUT_NAME], vec![]);
    g.output(
        OUTPUT_NAME,
        DataType::FLOAT,
        &[Dim::Fixed(1), Dim::Fixed(1)],
    );
    g.finish(DEFAULT_OPSET, card)
}

/// A rain detector that scores every frame `p` (zero convolutions, the logit in the bias), with
/// `threshold` in its card: for tests of the detector's consumers.
pub fn constant_rain_detector(p: f32, threshold: f64) -> Vec<u8> {
    let config = RainDetectorConfig {
        channels: vec![4, 4],
    };
    let logit = (p / (1.0 - p)).ln();
    let mut card = ModelCard::new("constant-rain-detector");
    card.extra
        .insert("kind".into(), derain_core::raindetect::KIND.into());
    card.extra.insert("threshold".into(), threshold.into());
    let mut weights = |name: &str, shape: &[usize]| {
        let n = shape.iter().product();
        if name == "fc.bias" {
            vec![logit; n]
        } else {
            vec![0.0; n]
        }
    };
    let proto = rain_detector(&config, &mut weights, (1.0, 0.0), &card)
        .unwrap_or_else(|e| panic!("the fixture detector builds: {e}"));
    super::to_bytes(&proto).unwrap_or_else(|e| panic!("the fixture detector serialises: {e}"))
}
