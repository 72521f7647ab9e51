//! The networks of ANLCL (docs/ARCHITECTURE.md, Training (ANLCL)) in tch: the generators G_B and
//! G_R (ResNet-9, the authors' full-resolution network, the CPU real-time lite network), the
//! PatchGAN discriminator that doubles as the layer-contrastive encoder, the MLP projection heads,
//! and the momentum (EMA) update of the key copies.
//!
//! Each network owns its [`VarStore`]; parameters are named through [`nn::Path`] exactly as the
//! ONNX writers in [`crate::onnx`] name them (`enc.0.weight`, `res.3.conv1.bias`, ...), so export
//! maps weights one to one and the parity tests hold the two implementations together.
//! Initial values come from the trainer's seeded ChaCha stream, not libtorch's global generator,
//! so a seed gives the same network whatever else runs in the process.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use tch::nn::{self, VarStore};
use tch::{Device, Kind, Tensor};

use super::config::{
    DiscriminatorConfig, FullResConfig, GeneratorArch, LiteConfig, RainInput, Resnet9Config,
};
use crate::onnx::GeneratorOutput;

/// Instance-norm epsilon: the same as the ONNX graphs'.
const EPS: f64 = 1e-5;
/// PatchGAN's LeakyReLU slope.
const LEAKY_SLOPE: f64 = 0.2;

/// Draws initial parameter values: PyTorch's default for convolutions and linear layers,
/// uniform in ±1/√fan_in for weights and biases.
pub struct ParamInit {
    rng: ChaCha8Rng,
}

impl ParamInit {
    /// Values drawn from `rng`.
    pub fn new(rng: ChaCha8Rng) -> Self {
        Self { rng }
    }

    fn uniform(&mut self, p: &nn::Path<'_>, name: &str, shape: &[i64], fan_in: i64) -> Tensor {
        let bound = 1.0 / (fan_in as f32).sqrt();
        let n = shape.iter().product::<i64>() as usize;
        let values: Vec<f32> = (0..n)
            .map(|_| self.rng.random_range(-bound..bound))
            .collect();
        p.var_copy(name, &Tensor::from_slice(&values).view(shape))
    }
}

/// The sub-path for a dotted name: `enc.0` is `p / "enc" / "0"`.
fn sub<'a>(p: &nn::Path<'a>, dotted: &str) -> nn::Path<'a> {
    let mut parts = dotted.split('.');
    let first = parts.next().unwrap_or_default();
    parts.fold(p.sub(first), |p, s| p.sub(s))
}

/// A convolution with zero padding.
#[derive(Debug)]
struct Conv {
    w: Tensor,
    b: Tensor,
    stride: i64,
    pad: i64,
    dilation: i64,
}

impl Conv {
    #[allow(clippy::too_many_arguments)]
    fn new(
        p: &nn::Path<'_>,
        name: &str,
        cin: i64,
        cout: i64,
        k: i64,
        stride: i64,
        pad: i64,
        init: &mut ParamInit,
    ) -> Self {
        let p = sub(p, name);
        let fan_in = cin * k * k;
        Self {
            w: init.uniform(&p, "weight", &[cout, cin, k, k], fan_in),
            b: init.uniform(&p, "bias", &[cout], fan_in),
            stride,
            pad,
            dilation: 1,
        }
    }

    /// A 3×3 convolution at stride 1 dilated by `d` (padding `d`: H and W stay).
    fn dilated(p: &nn::Path<'_>, name: &str, c: i64, d: i64, init: &mut ParamInit) -> Self {
        Self {
            dilation: d,
            ..Self::new(p, name, c, c, 3, 1, d, init)
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let (s, p, d) = (self.stride, self.pad, self.dilation);
        x.conv2d(&self.w, Some(&self.b), [s, s], [p, p], [d, d], 1)
    }
}

/// A 3×3 stride-2 transposed convolution that doubles H and W (weights IOHW).
#[derive(Debug)]
struct ConvUp {
    w: Tensor,
    b: Tensor,
}

impl ConvUp {
    fn new(p: &nn::Path<'_>, name: &str, cin: i64, cout: i64, init: &mut ParamInit) -> Self {
        let p = sub(p, name);
        // PyTorch takes fan_in from weight dimension 1, which is the output side here.
        let fan_in = cout * 9;
        Self {
            w: init.uniform(&p, "weight", &[cin, cout, 3, 3], fan_in),
            b: init.uniform(&p, "bias", &[cout], fan_in),
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        x.conv_transpose2d(&self.w, Some(&self.b), [2, 2], [1, 1], [1, 1], 1, [1, 1])
    }
}

/// A fully connected layer.
#[derive(Debug)]
struct Linear {
    w: Tensor,
    b: Tensor,
}

impl Linear {
    fn new(p: &nn::Path<'_>, name: &str, cin: i64, cout: i64, init: &mut ParamInit) -> Self {
        let p = sub(p, name);
        Self {
            w: init.uniform(&p, "weight", &[cout, cin], cin),
            b: init.uniform(&p, "bias", &[cout], cin),
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        x.linear(&self.w, Some(&self.b))
    }
}

/// Instance norm without affine parameters.
fn inorm(x: &Tensor) -> Tensor {
    x.instance_norm(
        None::<&Tensor>,
        None::<&Tensor>,
        None::<&Tensor>,
        None::<&Tensor>,
        true,
        0.1,
        EPS,
        x.device().is_cuda(),
    )
}

fn reflect(x: &Tensor, p: i64) -> Tensor {
    x.reflection_pad2d([p, p, p, p])
}

fn leaky(x: &Tensor) -> Tensor {
    x.maximum(&(x * LEAKY_SLOPE))
}

/// ONNX `SpaceToDepth` (`[N,C,H,W]` → `[N,C·f²,H/f,W/f]`, block offsets outermost), written out
/// because PyTorch's `pixel_unshuffle` orders the channels the other way.
pub fn space_to_depth(x: &Tensor, f: i64) -> Tensor {
    let (n, c, h, w) = x.size4().expect("NCHW");
    x.reshape([n, c, h / f, f, w / f, f])
        .permute([0, 3, 5, 1, 2, 4])
        .reshape([n, c * f * f, h / f, w / f])
}

/// ONNX `DepthToSpace` in DCR mode, the inverse of [`space_to_depth`].
pub fn depth_to_space(x: &Tensor, f: i64) -> Tensor {
    let (n, c, h, w) = x.size4().expect("NCHW");
    x.reshape([n, f, f, c / (f * f), h, w])
        .permute([0, 3, 4, 1, 5, 2])
        .reshape([n, c / (f * f), h * f, w * f])
}

/// Something that owns its parameters.
pub trait Network {
    /// The network's parameters.
    fn var_store(&self) -> &VarStore;
    /// The network's parameters, for freezing and loading.
    fn var_store_mut(&mut self) -> &mut VarStore;

    /// Number of learned values.
    fn parameter_count(&self) -> u64 {
        self.var_store()
            .variables()
            .values()
            .map(|t| t.numel() as u64)
            .sum()
    }
}

/// Copies `online` into `key` with momentum `m`: key ← m·key + (1 − m)·online (MoCo's momentum
/// encoder). Both must be the same architecture.
pub fn ema_update(key: &VarStore, online: &VarStore, momentum: f64) {
    let _guard = tch::no_grad_guard();
    let online = online.variables();
    for (name, mut t) in key.variables() {
        let _ = t.lerp_(&online[&name], 1.0 - momentum);
    }
}

/// A frozen copy of `src` (same architecture) for the momentum keys.
fn frozen_copy_into(dst: &mut VarStore, src: &VarStore) {
    dst.copy(src)
        .expect("a network and its copy have the same parameters");
    dst.freeze();
}

// ----------------------------------------------------------------------------------------------
// Generators

/// ResNet-9: the same function as [`crate::onnx::resnet9`].
#[derive(Debug)]
struct Resnet9Net {
    base: i64,
    enc: [Conv; 3],
    res: Vec<(Conv, Conv)>,
    dec_up: [ConvUp; 2],
    dec_out: Conv,
}

impl Resnet9Net {
    fn new(p: &nn::Path<'_>, base: i64, blocks: i64, init: &mut ParamInit) -> Self {
        let b = base;
        let enc = [
            Conv::new(p, "enc.0", 3, b, 7, 1, 0, init),
            Conv::new(p, "enc.1", b, 2 * b, 3, 2, 1, init),
            Conv::new(p, "enc.2", 2 * b, 4 * b, 3, 2, 1, init),
        ];
        let res = (0..blocks)
            .map(|i| {
                (
                    Conv::new(p, &format!("res.{i}.conv1"), 4 * b, 4 * b, 3, 1, 0, init),
                    Conv::new(p, &format!("res.{i}.conv2"), 4 * b, 4 * b, 3, 1, 0, init),
                )
            })
            .collect();
        let dec_up = [
            ConvUp::new(p, "dec.0", 4 * b, 2 * b, init),
            ConvUp::new(p, "dec.1", 2 * b, b, init),
        ];
        let dec_out = Conv::new(p, "dec.2", b, 3, 7, 1, 0, init);
        Self {
            base,
            enc,
            res,
            dec_up,
            dec_out,
        }
    }

    /// The residual block after which the encoder's last feature is taken (CUT's choice: one
    /// halfway through the blocks).
    fn feature_block(&self) -> Option<usize> {
        (!self.res.is_empty()).then_some(self.res.len() / 2)
    }

    /// Features before the residual blocks: the input and the three encoder convolutions.
    const STEM: usize = 4;

    fn feature_channels(&self) -> Vec<i64> {
        let b = self.base;
        let mut c = vec![3, b, 2 * b, 4 * b];
        if self.feature_block().is_some() {
            c.push(4 * b);
        }
        c
    }

    /// The pre-`tanh` output (unless `encode_only`) and the encoder features.
    fn run(&self, xn: &Tensor, encode_only: bool) -> (Option<Tensor>, Vec<Tensor>) {
        let mut feats = vec![xn.shallow_clone()];
        let mut h = self.enc[0].forward(&reflect(xn, 3));
        h = inorm(&h).relu();
        feats.push(h.shallow_clone());
        for conv in &self.enc[1..] {
            h = inorm(&conv.forward(&h)).relu();
            feats.push(h.shallow_clone());
        }
        let last = self.feature_block();
        for (i, (c1, c2)) in self.res.iter().enumerate() {
            let r = inorm(&c1.forward(&reflect(&h, 1))).relu();
            let r = inorm(&c2.forward(&reflect(&r, 1)));
            h = &h + r;
            if Some(i) == last {
                feats.push(h.shallow_clone());
                if encode_only {
                    return (None, feats);
                }
            }
        }
        if encode_only {
            return (None, feats);
        }
        for up in &self.dec_up {
            h = inorm(&up.forward(&h)).relu();
        }
        (Some(self.dec_out.forward(&reflect(&h, 3))), feats)
    }
}

/// The authors' full-resolution network: the same function as [`crate::onnx::fullres`].
#[derive(Debug)]
struct FullresNet {
    channels: i64,
    head: [Conv; 2],
    res: Vec<(Conv, Conv)>,
    tail: [Conv; 2],
}

impl FullresNet {
    fn new(p: &nn::Path<'_>, channels: i64, blocks: i64, init: &mut ParamInit) -> Self {
        let c = channels;
        Self {
            channels,
            head: [
                Conv::new(p, "head.0", 3, c, 3, 1, 0, init),
                Conv::new(p, "head.1", c, c, 3, 1, 0, init),
            ],
            res: (0..blocks)
                .map(|i| {
                    (
                        Conv::new(p, &format!("res.{i}.conv1"), c, c, 3, 1, 0, init),
                        Conv::new(p, &format!("res.{i}.conv2"), c, c, 3, 1, 0, init),
                    )
                })
                .collect(),
            tail: [
                Conv::new(p, "tail.0", c, c, 3, 1, 0, init),
                Conv::new(p, "tail.1", c, 3, 3, 1, 0, init),
            ],
        }
    }

    /// Blocks after which encoder features are taken: a quarter, half and three quarters in.
    fn feature_blocks(&self) -> Vec<usize> {
        let n = self.res.len();
        let mut v: Vec<usize> = [n / 4, n / 2, 3 * n / 4]
            .into_iter()
            .filter(|&i| i < n)
            .collect();
        v.dedup();
        v
    }

    /// Features before the residual blocks: the input and the two head convolutions.
    const STEM: usize = 2;

    fn feature_channels(&self) -> Vec<i64> {
        let mut c = vec![3, self.channels];
        c.extend(self.feature_blocks().iter().map(|_| self.channels));
        c
    }

    fn run(&self, xn: &Tensor, encode_only: bool) -> (Option<Tensor>, Vec<Tensor>) {
        let mut feats = vec![xn.shallow_clone()];
        let mut h = inorm(&self.head[0].forward(&reflect(xn, 1))).relu();
        h = inorm(&self.head[1].forward(&reflect(&h, 1))).relu();
        feats.push(h.shallow_clone());
        let wanted = self.feature_blocks();
        for (i, (c1, c2)) in self.res.iter().enumerate() {
            let r = inorm(&c1.forward(&reflect(&h, 1))).relu();
            let r = inorm(&c2.forward(&reflect(&r, 1)));
            h = &h + r;
            if wanted.contains(&i) {
                feats.push(h.shallow_clone());
                if encode_only && wanted.last() == Some(&i) {
                    return (None, feats);
                }
            }
        }
        if encode_only {
            return (None, feats);
        }
        let h = inorm(&self.tail[0].forward(&reflect(&h, 1))).relu();
        (Some(self.tail[1].forward(&reflect(&h, 1))), feats)
    }
}

/// The CPU real-time network: the same function as [`crate::onnx::lite`].
#[derive(Debug)]
struct LiteNet {
    factor: i64,
    channels: i64,
    head: Conv,
    /// The residual blocks, then the dilated context blocks (same form).
    res: Vec<(Conv, Conv)>,
    tail: Conv,
}

impl LiteNet {
    /// `blocks`: plain residual blocks and context blocks ([`crate::onnx::LiteConfig`]).
    fn new(
        p: &nn::Path<'_>,
        factor: i64,
        c: i64,
        (blocks, context): (i64, usize),
        init: &mut ParamInit,
    ) -> Self {
        let k = 3 * factor * factor;
        let head = Conv::new(p, "head", k, c, 3, 1, 1, init);
        let mut res: Vec<(Conv, Conv)> = (0..blocks)
            .map(|i| {
                (
                    Conv::new(p, &format!("res.{i}.conv1"), c, c, 3, 1, 1, init),
                    Conv::new(p, &format!("res.{i}.conv2"), c, c, 3, 1, 1, init),
                )
            })
            .collect();
        for i in 0..context {
            let d = crate::onnx::LiteConfig::dilation(i) as i64;
            res.push((
                Conv::dilated(p, &format!("ctx.{i}.conv1"), c, d, init),
                Conv::dilated(p, &format!("ctx.{i}.conv2"), c, d, init),
            ));
        }
        Self {
            factor,
            channels: c,
            head,
            res,
            tail: Conv::new(p, "tail", c, k, 3, 1, 1, init),
        }
    }

    /// Features before the residual blocks: the input and the head convolution.
    const STEM: usize = 2;

    fn feature_channels(&self) -> Vec<i64> {
        let mut c = vec![3, self.channels];
        c.extend(self.res.iter().map(|_| self.channels));
        c
    }

    /// The rain layer r (unless `encode_only`) and the encoder features.
    fn run(&self, xn: &Tensor, encode_only: bool) -> (Option<Tensor>, Vec<Tensor>) {
        let mut feats = vec![xn.shallow_clone()];
        let mut h = self.head.forward(&space_to_depth(xn, self.factor)).relu();
        feats.push(h.shallow_clone());
        for (c1, c2) in &self.res {
            h = &h + c2.forward(&c1.forward(&h).relu());
            feats.push(h.shallow_clone());
        }
        if encode_only {
            return (None, feats);
        }
        (
            Some(depth_to_space(&self.tail.forward(&h), self.factor)),
            feats,
        )
    }
}

#[derive(Debug)]
enum GenNet {
    Resnet9(Resnet9Net),
    Fullres(FullresNet),
    Lite(LiteNet),
}

/// A generator: G_B (`output` [`GeneratorOutput::Clean`], B̂ in [0,1]) or G_R
/// ([`GeneratorOutput::Rain`], R̂ in [-1,1]). Input `[N,3,H,W]` in [0,1], H and W multiples of
/// [`GeneratorArch::multiple_of`].
///
/// Why R̂ in [-1,1] through `tanh`: rain is mostly additive (O − B ≥ 0 for screen-blended
/// streaks and veil), but real footage also has darker streaks and the consistency term
/// B̂ + R̂ = O allows any residual in [-1,1]; and "no rain" sits at `tanh`'s centre, where the
/// sparsity term's gradient is largest, rather than in a saturated tail as with a [0,1] output.
pub struct Generator {
    vs: VarStore,
    net: GenNet,
    arch: GeneratorArch,
    output: GeneratorOutput,
}

impl std::fmt::Debug for Generator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generator")
            .field("arch", &self.arch)
            .field("output", &self.output)
            .finish()
    }
}

impl Generator {
    /// A freshly initialised generator on `device`.
    pub fn new(
        arch: &GeneratorArch,
        output: GeneratorOutput,
        device: Device,
        init: &mut ParamInit,
    ) -> Self {
        let vs = VarStore::new(device);
        let p = vs.root();
        let net = match *arch {
            GeneratorArch::Resnet9(Resnet9Config { base, blocks, .. }) => {
                GenNet::Resnet9(Resnet9Net::new(&p, base as i64, blocks as i64, init))
            }
            GeneratorArch::Fullres(FullResConfig { channels, blocks }) => {
                GenNet::Fullres(FullresNet::new(&p, channels as i64, blocks as i64, init))
            }
            GeneratorArch::Lite(LiteConfig {
                factor,
                channels,
                blocks,
                context,
            }) => GenNet::Lite(LiteNet::new(
                &p,
                factor as i64,
                channels as i64,
                (blocks as i64, context),
                init,
            )),
        };
        Self {
            vs,
            net,
            arch: *arch,
            output,
        }
    }

    /// A frozen copy (the momentum key encoder).
    pub fn frozen_copy(&self) -> Self {
        let mut init = ParamInit::new(rand::SeedableRng::seed_from_u64(0));
        let mut copy = Self::new(&self.arch, self.output, self.vs.device(), &mut init);
        frozen_copy_into(&mut copy.vs, &self.vs);
        copy
    }

    /// The architecture.
    pub fn arch(&self) -> &GeneratorArch {
        &self.arch
    }

    /// What the generator gives out.
    pub fn output(&self) -> GeneratorOutput {
        self.output
    }

    /// B̂ in [0,1] or R̂ in [-1,1] for `x` in [0,1].
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let xn = x * 2.0 - 1.0;
        let (y, _) = self.run(&xn, false);
        let y = y.expect("a full forward pass has an output");
        let residual = matches!(
            self.arch,
            GeneratorArch::Lite(_) | GeneratorArch::Resnet9(Resnet9Config { residual: true, .. })
        );
        match self.output {
            GeneratorOutput::Clean if residual => (x - y).clamp(0.0, 1.0),
            GeneratorOutput::Clean => (y.tanh() + 1.0) * 0.5,
            GeneratorOutput::Rain => y.tanh(),
        }
    }

    /// The encoder features the location term compares (CUT: the input and several depths),
    /// running only as far as the last of them.
    pub fn encode(&self, x: &Tensor) -> Vec<Tensor> {
        let xn = x * 2.0 - 1.0;
        self.run(&xn, true).1
    }

    /// Channels of each feature [`Generator::encode`] returns.
    pub fn feature_channels(&self) -> Vec<i64> {
        match &self.net {
            GenNet::Resnet9(n) => n.feature_channels(),
            GenNet::Fullres(n) => n.feature_channels(),
            GenNet::Lite(n) => n.feature_channels(),
        }
    }

    /// How many of [`Generator::encode`]'s features come before the residual blocks (the
    /// input and the first convolutions): the ones that carry the image rather than what the
    /// blocks make of it (`loss.location_source = "background"`).
    pub fn stem_features(&self) -> usize {
        match &self.net {
            GenNet::Resnet9(_) => Resnet9Net::STEM,
            GenNet::Fullres(_) => FullresNet::STEM,
            GenNet::Lite(_) => LiteNet::STEM,
        }
    }

    fn run(&self, xn: &Tensor, encode_only: bool) -> (Option<Tensor>, Vec<Tensor>) {
        match &self.net {
            GenNet::Resnet9(n) => n.run(xn, encode_only),
            GenNet::Fullres(n) => n.run(xn, encode_only),
            GenNet::Lite(n) => n.run(xn, encode_only),
        }
    }
}

impl Network for Generator {
    fn var_store(&self) -> &VarStore {
        &self.vs
    }
    fn var_store_mut(&mut self) -> &mut VarStore {
        &mut self.vs
    }
}

// ----------------------------------------------------------------------------------------------
// Discriminator

/// The PatchGAN discriminator (pix2pix's 70×70 at 3 layers): 4×4 convolutions, LeakyReLU 0.2,
/// instance norm from the second layer on. Each halving is a stride-2 convolution, or with
/// `antialias` a stride-1 convolution, the activation, then [`blur_pool`] (CUT's PatchGAN).
/// Its first layers double as the layer-contrastive encoder: [`Discriminator::features`] gives
/// the input and each halving layer's output. Parameters are `conv.{i}.weight` / `.bias`.
pub struct Discriminator {
    vs: VarStore,
    cfg: DiscriminatorConfig,
    convs: Vec<Conv>,
    /// With `antialias`, the [`blur_kernel`] of each halving layer (built once, on the var
    /// store's device and kind; not a parameter); empty without.
    blur: Vec<Tensor>,
}

impl std::fmt::Debug for Discriminator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Discriminator")
            .field("cfg", &self.cfg)
            .finish()
    }
}

/// The [`blur_pool`] kernel for `channels` channels: the fixed [1,3,3,1]⊗[1,3,3,1]/64 low-pass,
/// one `[channels,1,4,4]` depthwise filter. The discriminator builds its kernels once.
pub fn blur_kernel(channels: i64, device: Device, kind: Kind) -> Tensor {
    let taps = Tensor::from_slice(&[1.0f32, 3.0, 3.0, 1.0]).to_device(device);
    (taps.unsqueeze(1) * taps.unsqueeze(0) / 64.0)
        .to_kind(kind)
        .view([1, 1, 4, 4])
        .expand([channels, 1, 4, 4], false)
        .contiguous()
}

/// Anti-aliased down-sampling (Zhang 2019, as CUT's `Downsample`): each channel low-passed with
/// `kernel` (a [`blur_kernel`] for `x`'s channels, device and kind), reflect-padded (1 before,
/// 2 after), stride 2. An even side halves, as a 4×4 stride-2 convolution with padding 1 would.
pub fn blur_pool(x: &Tensor, kernel: &Tensor) -> Tensor {
    let c = x.size()[1];
    x.reflection_pad2d([1, 2, 1, 2])
        .conv2d(kernel, None::<&Tensor>, [2, 2], [0, 0], [1, 1], c)
}

impl Discriminator {
    /// A freshly initialised discriminator on `device`.
    pub fn new(cfg: &DiscriminatorConfig, device: Device, init: &mut ParamInit) -> Self {
        let vs = VarStore::new(device);
        let p = vs.root();
        let (b, n) = (cfg.base as i64, cfg.layers as i64);
        let width = |i: i64| b * (1 << i.min(3));
        // With the blur-pool doing the halving, the convolutions keep the resolution.
        let stride = if cfg.antialias { 1 } else { 2 };
        let mut convs = vec![Conv::new(&p, "conv.0", 3, b, 4, stride, 1, init)];
        for i in 1..n {
            let name = format!("conv.{i}");
            convs.push(Conv::new(
                &p,
                &name,
                width(i - 1),
                width(i),
                4,
                stride,
                1,
                init,
            ));
        }
        let name = format!("conv.{n}");
        convs.push(Conv::new(&p, &name, width(n - 1), width(n), 4, 1, 1, init));
        let name = format!("conv.{}", n + 1);
        convs.push(Conv::new(&p, &name, width(n), 1, 4, 1, 1, init));
        // Halving layer i puts out width(i) channels, in the parameters' kind.
        let blur = if cfg.antialias {
            (0..n)
                .map(|i| blur_kernel(width(i), device, p.kind()))
                .collect()
        } else {
            Vec::new()
        };
        Self {
            vs,
            cfg: *cfg,
            convs,
            blur,
        }
    }

    /// A frozen copy (the momentum key encoder).
    pub fn frozen_copy(&self) -> Self {
        let mut init = ParamInit::new(rand::SeedableRng::seed_from_u64(0));
        let mut copy = Self::new(&self.cfg, self.vs.device(), &mut init);
        frozen_copy_into(&mut copy.vs, &self.vs);
        copy
    }

    /// The settings it was built from.
    pub fn config(&self) -> &DiscriminatorConfig {
        &self.cfg
    }

    /// Channels of each feature [`Discriminator::features`] returns.
    pub fn feature_channels(&self) -> Vec<i64> {
        let b = self.cfg.base as i64;
        let mut c = vec![3];
        c.extend((0..self.cfg.layers as i64).map(|i| b * (1 << i.min(3))));
        c
    }

    /// Patch scores (least-squares GAN: 1 real, 0 fake) for `x` in [0,1].
    pub fn forward(&self, x: &Tensor) -> Tensor {
        self.run(&(x * 2.0 - 1.0), false)
            .0
            .expect("a full pass has scores")
    }

    /// Scores and encoder features in one pass.
    pub fn forward_with_features(&self, x: &Tensor) -> (Tensor, Vec<Tensor>) {
        let (y, f) = self.run(&(x * 2.0 - 1.0), false);
        (y.expect("a full pass has scores"), f)
    }

    /// Encoder features of an image `x` in [0,1]: the input (mapped to [-1,1]) and each halving
    /// layer's output.
    pub fn features(&self, x: &Tensor) -> Vec<Tensor> {
        self.run(&(x * 2.0 - 1.0), true).1
    }

    /// Encoder features of a rain layer `r` in [−1,1], which enters as `rain_input` says; the
    /// first feature is what the first convolution sees.
    pub fn rain_features(&self, r: &Tensor) -> Vec<Tensor> {
        let rn = match self.cfg.rain_input {
            RainInput::Signed => r * 2.0,
            RainInput::Image => r * 2.0 - 1.0,
        };
        self.run(&rn, true).1
    }

    /// One halving layer: convolution, instance norm (`norm`), LeakyReLU, and the blur-pool
    /// when anti-aliased.
    fn down(&self, i: usize, h: &Tensor, norm: bool) -> Tensor {
        let mut y = self.convs[i].forward(h);
        if norm {
            y = inorm(&y);
        }
        let y = leaky(&y);
        if !self.cfg.antialias {
            return y;
        }
        let k = &self.blur[i];
        if k.device() == y.device() && k.kind() == y.kind() {
            blur_pool(&y, k)
        } else {
            // Moved or cast since it was built: the same kernel where `y` lives.
            blur_pool(&y, &blur_kernel(y.size()[1], y.device(), y.kind()))
        }
    }

    /// `xn`: the input as the first convolution takes it.
    fn run(&self, xn: &Tensor, features_only: bool) -> (Option<Tensor>, Vec<Tensor>) {
        let n = self.cfg.layers;
        let mut h = self.down(0, xn, false);
        let mut feats = vec![xn.shallow_clone(), h.shallow_clone()];
        for i in 1..n {
            h = self.down(i, &h, true);
            feats.push(h.shallow_clone());
        }
        if features_only {
            return (None, feats);
        }
        h = leaky(&inorm(&self.convs[n].forward(&h)));
        (Some(self.convs[n + 1].forward(&h)), feats)
    }
}

impl Network for Discriminator {
    fn var_store(&self) -> &VarStore {
        &self.vs
    }
    fn var_store_mut(&mut self) -> &mut VarStore {
        &mut self.vs
    }
}

// ----------------------------------------------------------------------------------------------
// Projection heads

/// One two-layer MLP (Linear, ReLU, Linear) per encoder feature, with L2-normalised output (as
/// CUT's PatchSampleF). Parameters are `{layer}.fc1.weight`, `{layer}.fc2.bias`, ...
pub struct ProjectionHeads {
    vs: VarStore,
    in_channels: Vec<i64>,
    units: i64,
    mlps: Vec<(Linear, Linear)>,
}

impl std::fmt::Debug for ProjectionHeads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProjectionHeads")
            .field("in_channels", &self.in_channels)
            .field("units", &self.units)
            .finish()
    }
}

impl ProjectionHeads {
    /// One head per entry of `in_channels`, each `units` wide.
    pub fn new(in_channels: &[i64], units: i64, device: Device, init: &mut ParamInit) -> Self {
        let vs = VarStore::new(device);
        let p = vs.root();
        let mlps = in_channels
            .iter()
            .enumerate()
            .map(|(i, &c)| {
                (
                    Linear::new(&p, &format!("{i}.fc1"), c, units, init),
                    Linear::new(&p, &format!("{i}.fc2"), units, units, init),
                )
            })
            .collect();
        Self {
            vs,
            in_channels: in_channels.to_vec(),
            units,
            mlps,
        }
    }

    /// A frozen copy (the momentum key heads).
    pub fn frozen_copy(&self) -> Self {
        let mut init = ParamInit::new(rand::SeedableRng::seed_from_u64(0));
        let mut copy = Self::new(&self.in_channels, self.units, self.vs.device(), &mut init);
        frozen_copy_into(&mut copy.vs, &self.vs);
        copy
    }

    /// Number of heads.
    pub fn len(&self) -> usize {
        self.mlps.len()
    }

    /// True when there are no heads.
    pub fn is_empty(&self) -> bool {
        self.mlps.is_empty()
    }

    /// Projects features `[..., C]` of encoder layer `layer` to unit vectors `[..., units]`.
    pub fn project(&self, layer: usize, x: &Tensor) -> Tensor {
        let (fc1, fc2) = &self.mlps[layer];
        let z = fc2.forward(&fc1.forward(x).relu());
        let norm = z
            .square()
            .sum_dim_intlist([-1i64].as_slice(), true, Kind::Float)
            .sqrt();
        // CUT's epsilon: keeps a zero vector finite.
        z / (norm + 1e-7)
    }
}

impl Network for ProjectionHeads {
    fn var_store(&self) -> &VarStore {
        &self.vs
    }
    fn var_store_mut(&mut self) -> &mut VarStore {
        &mut self.vs
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    fn init() -> ParamInit {
        ParamInit::new(ChaCha8Rng::seed_from_u64(3))
    }

    fn shapes(vs: &VarStore) -> Vec<(String, Vec<usize>)> {
        let mut v: Vec<_> = vs
            .variables()
            .into_iter()
            .map(|(n, t)| (n, t.size().iter().map(|&d| d as usize).collect()))
            .collect();
        v.sort();
        v
    }

    /// The tch networks have exactly the ONNX writers' parameter names and shapes.
    #[test]
    fn parameters_match_the_onnx_writers() {
        type Shapes = Vec<(String, Vec<usize>)>;
        let cases: [(GeneratorArch, Shapes); 3] = [
            (
                GeneratorArch::Resnet9(Resnet9Config {
                    base: 4,
                    blocks: 2,
                    residual: false,
                }),
                Resnet9Config {
                    base: 4,
                    blocks: 2,
                    residual: false,
                }
                .parameter_shapes(),
            ),
            (
                GeneratorArch::Fullres(FullResConfig {
                    channels: 4,
                    blocks: 3,
                }),
                FullResConfig {
                    channels: 4,
                    blocks: 3,
                }
                .parameter_shapes(),
            ),
            (
                GeneratorArch::Lite(LiteConfig {
                    factor: 2,
                    channels: 5,
                    blocks: 2,
                    context: 2,
                }),
                LiteConfig {
                    factor: 2,
                    channels: 5,
                    blocks: 2,
                    context: 2,
                }
                .parameter_shapes(),
            ),
        ];
        for (arch, mut want) in cases {
            let g = Generator::new(&arch, GeneratorOutput::Clean, Device::Cpu, &mut init());
            want.sort();
            assert_eq!(shapes(g.var_store()), want, "{arch:?}");
        }
    }

    #[test]
    fn shapes_ranges_and_features() {
        let x = Tensor::rand([2, 3, 32, 40], (Kind::Float, Device::Cpu));
        for arch in [
            GeneratorArch::Resnet9(Resnet9Config {
                base: 4,
                blocks: 3,
                residual: false,
            }),
            GeneratorArch::Fullres(FullResConfig {
                channels: 4,
                blocks: 4,
            }),
            GeneratorArch::Lite(LiteConfig {
                factor: 4,
                channels: 8,
                blocks: 2,
                context: 1,
            }),
        ] {
            for output in [GeneratorOutput::Clean, GeneratorOutput::Rain] {
                let g = Generator::new(&arch, output, Device::Cpu, &mut init());
                let y = g.forward(&x);
                assert_eq!(y.size(), x.size());
                let (lo, hi) = (y.min().double_value(&[]), y.max().double_value(&[]));
                let want = match output {
                    GeneratorOutput::Clean => 0.0..=1.0,
                    GeneratorOutput::Rain => -1.0..=1.0,
                };
                assert!(
                    want.contains(&lo) && want.contains(&hi),
                    "{arch:?} {lo} {hi}"
                );
                let f = g.encode(&x);
                let c: Vec<i64> = f.iter().map(|t| t.size()[1]).collect();
                assert_eq!(c, g.feature_channels(), "{arch:?}");
            }
        }
        let d = Discriminator::new(&DiscriminatorConfig::default(), Device::Cpu, &mut init());
        let (y, f) =
            d.forward_with_features(&Tensor::rand([2, 3, 64, 64], (Kind::Float, Device::Cpu)));
        assert_eq!(y.size(), [2, 1, 6, 6]);
        let c: Vec<i64> = f.iter().map(|t| t.size()[1]).collect();
        assert_eq!(c, d.feature_channels());
        assert_eq!(c, [3, 64, 128, 256]);
        // 70×70 PatchGAN: 2.77 M parameters at 64 base channels.
        assert_eq!(d.parameter_count(), 2_764_737);
    }

    /// A ±1 checkerboard `[1,c,s,s]`, or its one-pixel shift (the same pattern negated).
    fn checkerboard(c: i64, s: i64, shifted: bool) -> Tensor {
        let v: Vec<f32> = (0..c * s * s)
            .map(|i| {
                let (y, x) = ((i / s) % s, i % s);
                if ((y + x) % 2 == 0) != shifted {
                    1.0
                } else {
                    -1.0
                }
            })
            .collect();
        Tensor::from_slice(&v).view([1, c, s, s])
    }

    /// The blur-pool removes the highest frequency entirely, borders included (its kernel is
    /// 0 at Nyquist, and the reflected border continues the pattern), so the checkerboard and
    /// its shift both give 0; plain stride-2 sampling turns it into a constant whose sign
    /// flips with a one-pixel shift: aliasing.
    #[test]
    fn blur_pool_removes_a_checkerboard_that_striding_aliases() {
        for shifted in [false, true] {
            let x = checkerboard(2, 16, shifted);
            let y = blur_pool(&x, &blur_kernel(2, Device::Cpu, Kind::Float));
            assert_eq!(y.size(), [1, 2, 8, 8]);
            let worst = y.abs().max().double_value(&[]);
            assert!(worst < 1e-6, "blur-pool left {worst}");
            let strided = x.slice(2, 0, 16, 2).slice(3, 0, 16, 2);
            let want = if shifted { -1.0 } else { 1.0 };
            assert_eq!((strided - want).abs().max().double_value(&[]), 0.0);
        }
        // A constant passes unchanged (the kernel sums to 1).
        let ones = Tensor::ones([1, 1, 8, 8], (Kind::Float, Device::Cpu));
        assert!(
            blur_pool(&ones, &blur_kernel(1, Device::Cpu, Kind::Float)).allclose(
                &Tensor::ones([1, 1, 4, 4], (Kind::Float, Device::Cpu)),
                1e-6,
                1e-6,
                false
            )
        );
    }

    /// The blur-pool as it was before the discriminator kept its kernels: the kernel built
    /// from `x` on every call.
    fn blur_pool_per_call(x: &Tensor) -> Tensor {
        let c = x.size()[1];
        let taps = Tensor::from_slice(&[1.0f32, 3.0, 3.0, 1.0]).to_device(x.device());
        let k = (taps.unsqueeze(1) * taps.unsqueeze(0) / 64.0)
            .to_kind(x.kind())
            .view([1, 1, 4, 4])
            .expand([c, 1, 4, 4], false)
            .contiguous();
        x.reflection_pad2d([1, 2, 1, 2])
            .conv2d(&k, None::<&Tensor>, [2, 2], [0, 0], [1, 1], c)
    }

    /// The kernels D builds once give bit for bit what the per-call construction gave, on
    /// each halving layer's channels and on D's own features; without `antialias` it keeps
    /// none.
    #[test]
    fn blur_kernels_built_once_match_the_per_call_ones() {
        let cfg = DiscriminatorConfig {
            base: 4,
            ..DiscriminatorConfig::default()
        };
        assert!(cfg.antialias);
        let d = Discriminator::new(&cfg, Device::Cpu, &mut init());
        assert_eq!(d.blur.len(), cfg.layers);
        tch::manual_seed(5);
        for k in &d.blur {
            let c = k.size()[0];
            assert_eq!(k.size(), [c, 1, 4, 4]);
            assert_eq!((k.device(), k.kind()), (Device::Cpu, Kind::Float));
            let x = Tensor::randn([2, c, 12, 10], (Kind::Float, Device::Cpu));
            assert!(
                blur_pool(&x, k).equal(&blur_pool_per_call(&x)),
                "{c} channels"
            );
        }
        // D's first halving layer, recomputed with the per-call kernel.
        let x = Tensor::rand([1, 3, 32, 32], (Kind::Float, Device::Cpu));
        let xn = &x * 2.0 - 1.0;
        let want = blur_pool_per_call(&leaky(&d.convs[0].forward(&xn)));
        assert!(d.features(&x)[1].equal(&want));
        // A kind the kernels were not built in takes a kernel of its own.
        let y = Tensor::randn([1, 4, 8, 8], (Kind::Double, Device::Cpu));
        assert!(
            blur_pool(&y, &blur_kernel(4, Device::Cpu, Kind::Double))
                .equal(&blur_pool_per_call(&y))
        );
        let plain = DiscriminatorConfig {
            antialias: false,
            ..cfg
        };
        assert!(
            Discriminator::new(&plain, Device::Cpu, &mut init())
                .blur
                .is_empty()
        );
    }

    /// Through the whole first layer of D: with the blur-pool, the checkerboard and its
    /// one-pixel shift give the same features away from the borders; with the stride-2
    /// convolution they do not. The parameters are the same either way.
    #[test]
    fn antialiased_discriminator_is_shift_stable_on_a_checkerboard() {
        let mut diffs = Vec::new();
        let mut shapes_seen = Vec::new();
        for antialias in [true, false] {
            let cfg = DiscriminatorConfig {
                base: 4,
                antialias,
                ..DiscriminatorConfig::default()
            };
            let d = Discriminator::new(&cfg, Device::Cpu, &mut init());
            shapes_seen.push(shapes(d.var_store()));
            // Images in [0,1]: 0.5 ± 0.5.
            let f = |shifted: bool| {
                let x = (checkerboard(3, 32, shifted) + 1.0) * 0.5;
                d.features(&x)[1].slice(2, 3, 13, 1).slice(3, 3, 13, 1)
            };
            let (a, b) = (f(false), f(true));
            assert_eq!(a.size(), [1, 4, 10, 10]);
            diffs.push((a - b).abs().max().double_value(&[]));
        }
        assert!(diffs[0] < 1e-5, "anti-aliased: {diffs:?}");
        assert!(diffs[1] > 1e-2, "strided: {diffs:?}");
        assert_eq!(shapes_seen[0], shapes_seen[1]);
    }

    /// `rain_input = "signed"`: no rain reaches the first convolution as exactly 0 (where a
    /// mid-grey image sits); `"image"` maps it to −1, as before the setting.
    #[test]
    fn rain_layer_enters_the_discriminator_in_its_own_range() {
        let r = Tensor::zeros([1, 3, 32, 32], (Kind::Float, Device::Cpu));
        let grey = Tensor::full([1, 3, 32, 32], 0.5, (Kind::Float, Device::Cpu));
        for (rain_input, want) in [(RainInput::Signed, 0.0), (RainInput::Image, -1.0)] {
            let cfg = DiscriminatorConfig {
                base: 4,
                rain_input,
                ..DiscriminatorConfig::default()
            };
            let d = Discriminator::new(&cfg, Device::Cpu, &mut init());
            let first = &d.rain_features(&r)[0];
            let off = (first - want).abs().max().double_value(&[]);
            assert_eq!(off, 0.0, "{rain_input:?}");
            if rain_input == RainInput::Signed {
                let (fr, fg) = (d.rain_features(&r), d.features(&grey));
                for (a, b) in fr.iter().zip(&fg) {
                    assert!(a.equal(b), "no rain and mid grey differ");
                }
            }
        }
        // Rain of either sign keeps its sign.
        let cfg = DiscriminatorConfig::default();
        let d = Discriminator::new(&cfg, Device::Cpu, &mut init());
        let r = Tensor::from_slice(&[0.25f32, -0.25])
            .view([1, 1, 1, 2])
            .repeat([1, 3, 32, 16]);
        let first = &d.rain_features(&r)[0];
        assert_eq!(first.double_value(&[0, 0, 0, 0]), 0.5);
        assert_eq!(first.double_value(&[0, 0, 0, 1]), -0.5);
    }

    #[test]
    fn space_to_depth_is_onnx_order_and_inverts() {
        let x = Tensor::arange(2 * 4 * 4, (Kind::Float, Device::Cpu)).view([1, 2, 4, 4]);
        let y = space_to_depth(&x, 2);
        // ONNX: y[(b1·2 + b2)·C + c, h, w] = x[c, 2h + b1, 2w + b2]; channel 1 is (b=0, c=1).
        assert_eq!(y.double_value(&[0, 1, 0, 0]), 16.0);
        assert_eq!(y.double_value(&[0, 2, 0, 1]), 3.0);
        assert!(depth_to_space(&y, 2).equal(&x));
    }

    #[test]
    fn heads_give_unit_vectors_and_ema_moves_keys() {
        let heads = ProjectionHeads::new(&[3, 8], 16, Device::Cpu, &mut init());
        let z = heads.project(1, &Tensor::randn([5, 8], (Kind::Float, Device::Cpu)));
        let norms = z
            .square()
            .sum_dim_intlist([1i64].as_slice(), false, Kind::Float);
        assert!(norms.allclose(
            &Tensor::ones([5], (Kind::Float, Device::Cpu)),
            1e-5,
            1e-5,
            false
        ));

        let key = heads.frozen_copy();
        let w = |h: &ProjectionHeads| h.var_store().variables()["0.fc1.bias"].copy();
        assert!(w(&key).equal(&w(&heads)));
        assert!(!w(&key).requires_grad());
        let online = ProjectionHeads::new(
            &[3, 8],
            16,
            Device::Cpu,
            &mut ParamInit::new(ChaCha8Rng::seed_from_u64(9)),
        );
        let before = w(&key);
        ema_update(key.var_store(), online.var_store(), 0.99);
        let want = &before * 0.99 + w(&online) * 0.01;
        assert!(w(&key).allclose(&want, 1e-6, 1e-7, false));
    }
}
