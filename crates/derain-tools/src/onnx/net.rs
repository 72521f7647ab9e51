//! What the generator graph writers ([`super::resnet9`], [`super::fullres`], [`super::lite`])
//! share: layers that ask a callback for their weights by name, a running count of
//! multiply-accumulates, the contract's input, and the two output heads.

use onnx_protobuf::{ModelProto, tensor_proto::DataType};

use super::builder::{BuildError, DEFAULT_OPSET, Dim, GraphBuilder};
use derain_core::card::{INPUT_NAME, ModelCard, OUTPUT_NAME};

/// Instance-norm epsilon (PyTorch's default; the trainer uses the same).
pub(crate) const EPS: f32 = 1e-5;

/// Name of the output of a rain-layer generator (G_R, [`GeneratorOutput::Rain`]).
pub const RAIN_OUTPUT_NAME: &str = "rain";

/// The contract's input and output dimensions, `[N,3,H,W]` with N, H and W dynamic.
pub(crate) const NCHW: [Dim<'static>; 4] = [
    Dim::Symbolic("N"),
    Dim::Fixed(3),
    Dim::Symbolic("H"),
    Dim::Symbolic("W"),
];

/// What a generator graph gives out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GeneratorOutput {
    /// `clean` in [0,1]: the model contract (docs/ARCHITECTURE.md, The model contract), what the
    /// element runs (G_B).
    #[default]
    Clean,
    /// `rain`, the rain layer R̂ in [-1,1] (the trainer's G_R). Not a model the element accepts:
    /// it is for looking at what the rain generator learned.
    Rain,
}

impl GeneratorOutput {
    /// The graph output's name.
    pub fn name(self) -> &'static str {
        match self {
            GeneratorOutput::Clean => OUTPUT_NAME,
            GeneratorOutput::Rain => RAIN_OUTPUT_NAME,
        }
    }
}

/// Callback giving a parameter's values from its name and shape.
pub(crate) type Weights<'a> = &'a mut dyn FnMut(&str, &[usize]) -> Vec<f32>;

/// A graph under construction whose layers fetch their weights from a callback and count MACs.
pub(crate) struct NetWriter<'a> {
    pub g: GraphBuilder,
    weights: Weights<'a>,
    /// Pixels of the current feature map per input pixel.
    scale: f64,
    /// Convolution MACs per input pixel so far.
    macs: f64,
}

impl<'a> NetWriter<'a> {
    /// An empty graph called `name` with the contract's input declared; returns it and the input.
    pub fn new(name: &str, weights: Weights<'a>) -> (Self, String) {
        let mut g = GraphBuilder::new(name);
        let x = g.input(INPUT_NAME, DataType::FLOAT, &NCHW);
        let n = Self {
            g,
            weights,
            scale: 1.0,
            macs: 0.0,
        };
        (n, x)
    }

    fn params(&mut self, name: &str, w_shape: [usize; 4], out_c: usize) -> (Vec<f32>, Vec<f32>) {
        let w = (self.weights)(&format!("{name}.weight"), &w_shape);
        let b = (self.weights)(&format!("{name}.bias"), &[out_c]);
        (w, b)
    }

    /// Convolution `name` (weight OIHW and bias) with zero padding `pad`.
    #[allow(clippy::too_many_arguments)]
    pub fn conv(
        &mut self,
        x: &str,
        name: &str,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        pad: usize,
    ) -> String {
        let (w, b) = self.params(name, [cout, cin, k, k], cout);
        self.scale /= (stride * stride) as f64;
        self.macs += self.scale * (k * k * cin * cout) as f64;
        self.g.conv2d(x, name, cin, cout, k, stride, pad, 1, &w, &b)
    }

    /// 3×3 convolution `name` at stride 1 dilated by `dilation` (padding likewise, so H and W
    /// stay).
    pub fn conv_dilated(
        &mut self,
        x: &str,
        name: &str,
        cin: usize,
        cout: usize,
        dilation: usize,
    ) -> String {
        let (w, b) = self.params(name, [cout, cin, 3, 3], cout);
        self.macs += self.scale * (9 * cin * cout) as f64;
        self.g
            .conv2d(x, name, cin, cout, 3, 1, dilation, dilation, &w, &b)
    }

    /// Transposed 3×3 stride-2 convolution `name` (weight IOHW) doubling H and W; a transposed
    /// convolution counts k²·in·out MACs per input position.
    pub fn conv_up(&mut self, x: &str, name: &str, cin: usize, cout: usize) -> String {
        let (w, b) = self.params(name, [cin, cout, 3, 3], cout);
        self.macs += self.scale * (9 * cin * cout) as f64;
        self.scale *= 4.0;
        self.g
            .conv_transpose2d(x, name, cin, cout, 3, 2, 1, 1, &w, &b)
    }

    /// `SpaceToDepth` by `f`: later layers run on 1/f² of the pixels.
    pub fn space_to_depth(&mut self, x: &str, f: usize) -> String {
        self.scale /= (f * f) as f64;
        self.g.space_to_depth(x, f)
    }

    /// `DepthToSpace` (DCR, the inverse of `SpaceToDepth`) by `f`.
    pub fn depth_to_space(&mut self, x: &str, f: usize) -> String {
        self.scale *= (f * f) as f64;
        self.g.depth_to_space(x, f)
    }

    /// Instance norm without affine parameters.
    pub fn norm(&mut self, x: &str, channels: usize) -> String {
        self.g.instance_norm(x, channels, EPS)
    }

    /// Instance norm, then ReLU.
    pub fn norm_relu(&mut self, x: &str, channels: usize) -> String {
        let y = self.norm(x, channels);
        self.g.relu(&y)
    }

    /// `[0,1] → [-1,1]`, the networks' internal range.
    pub fn signed(&mut self, x: &str) -> String {
        let y = self.g.mul_scalar(x, 2.0);
        self.g.sub_scalar(&y, 1.0)
    }

    /// The head of a network that ends in `tanh`: `clean = (tanh(x) + 1) / 2` or `rain = tanh(x)`.
    pub fn tanh_output(&mut self, x: &str, output: GeneratorOutput) {
        match output {
            GeneratorOutput::Clean => {
                let y = self.g.tanh(x);
                let y = self.g.add_scalar(&y, 1.0);
                let half = self.g.scalar(0.5);
                self.g.node("Mul", &[&y, &half], &[OUTPUT_NAME], vec![]);
            }
            GeneratorOutput::Rain => {
                self.g.node("Tanh", &[x], &[RAIN_OUTPUT_NAME], vec![]);
            }
        }
    }

    /// The head of a network that predicts the rain layer `r`: `clean = clip(rainy − r, 0, 1)`.
    pub fn clip_difference(&mut self, rainy: &str, rain: &str) {
        let y = self.g.sub(rainy, rain);
        let lo = self.g.scalar(0.0);
        let hi = self.g.scalar(1.0);
        self.g.node("Clip", &[&y, &lo, &hi], &[OUTPUT_NAME], vec![]);
    }

    /// Declares the output and finishes the model; the card gets the architecture,
    /// `multiple_of`, the parameter count of the weights created and GMAC per megapixel.
    pub fn finish(
        mut self,
        output: GeneratorOutput,
        card: &ModelCard,
        architecture: String,
        multiple_of: u32,
    ) -> Result<ModelProto, BuildError> {
        self.g.output(output.name(), DataType::FLOAT, &NCHW);
        let mut card = card.clone();
        card.architecture = architecture;
        card.multiple_of = multiple_of;
        card.parameters = self.g.parameter_count();
        card.gmac_per_megapixel = self.macs / 1000.0;
        if output == GeneratorOutput::Rain {
            card.extra.insert(
                "output".into(),
                serde_json::json!("rain layer R in [-1,1] (G_R); not a deraining model"),
            );
        }
        self.g.finish(DEFAULT_OPSET, &card)
    }
}
