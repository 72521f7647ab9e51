//! The derainer against the sandwich the `derain` element wrote out by hand before it used one
//! (convert, copy the whole frame when the format has alpha, run, convert back): the same bytes
//! for every format, odd sizes, padded networks and strides that differ between input and output.

use super::*;
use crate::card::{CARD_KEY, INPUT_NAME, ModelCard, OUTPUT_NAME};
use crate::model::Model;
use crate::runtime::SessionOptions;

/// A network in plain Rust: per-channel `clean = rainy * scale + bias`, at a multiple.
struct Affine {
    multiple_of: u32,
    scale: [f32; 3],
    bias: [f32; 3],
    /// Sizes (h, w) it was run at.
    runs: Vec<(usize, usize)>,
}

impl Affine {
    fn new(multiple_of: u32) -> Self {
        Self {
            multiple_of,
            scale: [0.5, 0.75, -1.0],
            bias: [0.25, 0.1, 1.0],
            runs: Vec::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("affine: input has {0} values, not 3*h*w")]
struct AffineError(usize);

impl Network for Affine {
    type Error = AffineError;

    fn multiple_of(&self) -> u32 {
        self.multiple_of
    }

    fn run_padded<R>(
        &mut self,
        input: &[f32],
        h: usize,
        w: usize,
        consume: impl FnOnce(&[f32]) -> R,
    ) -> Result<R, AffineError> {
        if input.len() != 3 * h * w || !h.is_multiple_of(self.multiple_of as usize) {
            return Err(AffineError(input.len()));
        }
        self.runs.push((h, w));
        let plane = h * w;
        let out: Vec<f32> = input
            .iter()
            .enumerate()
            .map(|(i, v)| v * self.scale[i / plane] + self.bias[i / plane])
            .collect();
        Ok(consume(&out))
    }
}

/// Deterministic test bytes.
fn pattern(len: usize, seed: u32) -> Vec<u8> {
    let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(12345);
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s >> 24) as u8
        })
        .collect()
}

/// The strides of `layout` with `extra` bytes of padding after every row.
fn padded_strides(layout: &FrameLayout, extra: usize) -> [usize; 3] {
    let mut s = layout.strides;
    for (plane, stride) in s.iter_mut().enumerate().take(layout.format.n_planes()) {
        *stride += extra * (plane + 1);
    }
    s
}

/// Planes of `layout` (with `strides`), filled with `seed`'s pattern.
fn planes(layout: &FrameLayout, strides: [usize; 3], seed: u32) -> Vec<Vec<u8>> {
    let l = FrameLayout { strides, ..*layout };
    (0..layout.format.n_planes())
        .map(|p| pattern(l.plane_len(p), seed + p as u32))
        .collect()
}

/// The element's sandwich before the derainer: `frame_to_tensor`, a copy of the whole input frame
/// into the output for formats with alpha (what `gst_video_frame_copy` did: every row's pixel
/// bytes), the run, `tensor_to_frame`.
fn reference<N: Network>(
    network: &mut N,
    input: &FrameLayout,
    in_planes: &[&[u8]],
    output: &FrameLayout,
    out_planes: &mut [&mut [u8]],
) {
    let k = network.multiple_of();
    let mut tensor = vec![0f32; input.tensor_len(k).expect("tensor length")];
    let (hp, wp) = frame::frame_to_tensor(input, in_planes, k, &mut tensor).expect("to tensor");
    if has_alpha(input.format) {
        let (row, rows) = input.plane_geometry(0).expect("packed");
        for y in 0..rows {
            out_planes[0][y * output.strides[0]..][..row]
                .copy_from_slice(&in_planes[0][y * input.strides[0]..][..row]);
        }
    }
    network
        .run_padded(&tensor, hp, wp, |clean| {
            frame::tensor_to_frame(clean, hp, wp, output, out_planes)
        })
        .map_err(|e| e.to_string())
        .expect("runs")
        .expect("to frame");
}

/// Runs `derainer` and the reference on the same frames; returns both outputs.
fn both<N: Network>(
    derainer: &mut Derainer<N>,
    layout: FrameLayout,
    in_extra: usize,
    out_extra: usize,
) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    derainer.configure(layout).expect("configures");
    let in_strides = padded_strides(&layout, in_extra);
    let out_strides = padded_strides(&layout, out_extra);
    let input = planes(&layout, in_strides, 1);
    // The output buffers start with the same garbage, so bytes the conversion leaves alone
    // (padding bytes, row padding) must match too.
    let mut got = planes(&layout, out_strides, 99);
    let mut want = got.clone();
    let in_refs: Vec<&[u8]> = input.iter().map(Vec::as_slice).collect();
    {
        let mut out_refs: Vec<&mut [u8]> = got.iter_mut().map(Vec::as_mut_slice).collect();
        derainer
            .process(in_strides, &in_refs, out_strides, &mut out_refs)
            .map_err(|e| e.to_string())
            .expect("derains");
    }
    let mut out_refs: Vec<&mut [u8]> = want.iter_mut().map(Vec::as_mut_slice).collect();
    let input_layout = FrameLayout {
        strides: in_strides,
        ..layout
    };
    let output_layout = FrameLayout {
        strides: out_strides,
        ..layout
    };
    reference(
        derainer.network_mut(),
        &input_layout,
        &in_refs,
        &output_layout,
        &mut out_refs,
    );
    (got, want)
}

const SIZES: [(usize, usize); 4] = [(33, 17), (1, 1), (2, 3), (64, 8)];

#[test]
fn same_bytes_as_the_hand_written_sandwich_for_every_format_and_size() {
    for multiple_of in [1, 8] {
        let mut derainer = Derainer::new(Affine::new(multiple_of));
        for format in PixelFormat::ALL {
            for (w, h) in SIZES {
                for (in_extra, out_extra) in [(0, 0), (3, 0), (0, 5), (7, 2)] {
                    let layout = FrameLayout::packed(format, w, h);
                    let (got, want) = both(&mut derainer, layout, in_extra, out_extra);
                    assert_eq!(
                        got, want,
                        "{format} {w}x{h}, multiple_of {multiple_of}, extra {in_extra}/{out_extra}"
                    );
                }
            }
        }
    }
}

#[test]
fn alpha_is_carried_and_the_colour_is_the_network_s() {
    let layout = FrameLayout::packed(PixelFormat::Argb, 33, 17);
    let mut derainer = Derainer::new(Affine::new(8));
    derainer.configure(layout).expect("configures");
    let input = pattern(layout.plane_len(0), 5);
    let mut out = vec![0u8; input.len()];
    derainer
        .process(layout.strides, &[&input], layout.strides, &mut [&mut out])
        .expect("derains");
    for (i, o) in input.chunks_exact(4).zip(out.chunks_exact(4)) {
        assert_eq!(i[0], o[0], "alpha carried");
        // Blue: 1 - b, exactly (up to the rounding).
        assert!((i32::from(o[3]) - (255 - i32::from(i[3]))).abs() <= 1);
    }
    assert_eq!(derainer.padded(), (24, 40));
    assert_eq!(derainer.network().runs, vec![(24, 40)]);
}

#[test]
fn yuv_takes_the_configured_colorimetry() {
    use crate::frame::{YuvColorimetry, YuvMatrix};
    let bt709 = YuvColorimetry {
        matrix: YuvMatrix::Bt709,
        full_range: true,
    };
    let layout = FrameLayout::packed(PixelFormat::Nv12, 33, 17).with_colorimetry(bt709);
    let mut derainer = Derainer::new(Affine::new(4));
    let (got, want) = both(&mut derainer, layout, 1, 3);
    assert_eq!(got, want);
    // And differs from what the default colorimetry gives.
    let (other, _) = both(
        &mut derainer,
        FrameLayout::packed(PixelFormat::Nv12, 33, 17),
        1,
        3,
    );
    assert_ne!(got, other);
}

#[test]
fn resizing_and_warm_up() {
    let mut derainer = Derainer::new(Affine::new(8));
    assert!(matches!(
        derainer.warm_up(),
        Err(DerainError::NotConfigured)
    ));
    let rgb = |w, h| FrameLayout::packed(PixelFormat::Rgb, w, h);
    assert!(derainer.configure(rgb(33, 17)).expect("configures"));
    derainer.warm_up().expect("warms up");
    // The same padded size: nothing to warm up again.
    assert!(!derainer.configure(rgb(40, 24)).expect("configures"));
    assert!(derainer.configure(rgb(41, 24)).expect("configures"));
    assert_eq!(derainer.padded(), (24, 48));
    // A warm-up before the layout is known keeps its tensor for the layout that follows.
    let mut fresh = Derainer::new(Affine::new(8));
    fresh.warm_up_at(33, 17).expect("warms up");
    assert_eq!(fresh.padded(), (24, 40));
    assert!(!fresh.configure(rgb(33, 17)).expect("configures"));
    assert_eq!(fresh.network().runs, vec![(24, 40)]);
}

#[test]
fn errors_say_what_is_wrong_and_whose_fault() {
    let mut derainer = Derainer::new(Affine::new(1));
    let layout = FrameLayout::packed(PixelFormat::Rgba, 4, 2);
    let input = vec![0u8; 32];
    let mut out = vec![0u8; 32];
    let e = derainer
        .process(layout.strides, &[&input], layout.strides, &mut [&mut out])
        .expect_err("not configured");
    assert!(e.is_format(), "{e}");

    let e = derainer
        .configure(FrameLayout::packed(PixelFormat::Rgb, 8193, 8192))
        .expect_err("too large");
    assert!(e.is_format());
    assert!(e.to_string().contains("8193x8192"), "{e}");
    assert!(
        derainer.layout().is_none(),
        "a refused layout changes nothing"
    );
    let mut small = Derainer::new(Affine::new(8)).with_max_pixels(40 * 24);
    assert!(
        small
            .configure(FrameLayout::packed(PixelFormat::Rgb, 33, 17))
            .is_ok()
    );
    assert!(matches!(
        small.configure(FrameLayout::packed(PixelFormat::Rgb, 41, 17)),
        Err(DerainError::TooLarge {
            width: 41,
            height: 17,
            max_pixels: 960
        })
    ));

    derainer.configure(layout).expect("configures");
    let e = derainer
        .process(
            layout.strides,
            &[&input[..31]],
            layout.strides,
            &mut [&mut out],
        )
        .expect_err("short input");
    assert!(matches!(
        e,
        DerainError::Frame(FrameError::PlaneTooShort { .. })
    ));
    assert!(e.is_format());
    let e = derainer
        .process(
            layout.strides,
            &[&input],
            layout.strides,
            &mut [&mut out[..31]],
        )
        .expect_err("short output");
    assert!(e.is_format(), "{e}");

    // A network that fails is not the frame's fault.
    derainer.network_mut().multiple_of = 3;
    let e = derainer
        .process(layout.strides, &[&input], layout.strides, &mut [&mut out])
        .expect_err("the network refuses");
    assert!(matches!(e, DerainError::Frame(_) | DerainError::Run(_)));
}

/// A network with its own frame path: fills the output with a constant.
struct FramePath {
    inner: Affine,
    available: bool,
}

impl Network for FramePath {
    type Error = AffineError;

    fn multiple_of(&self) -> u32 {
        self.inner.multiple_of()
    }

    fn run_padded<R>(
        &mut self,
        input: &[f32],
        h: usize,
        w: usize,
        consume: impl FnOnce(&[f32]) -> R,
    ) -> Result<R, AffineError> {
        self.inner.run_padded(input, h, w, consume)
    }

    fn use_frame_path(&mut self) -> Result<bool, String> {
        if self.available {
            Ok(true)
        } else {
            Err("no device".into())
        }
    }

    fn run_frame(
        &mut self,
        _input: &FrameLayout,
        _in_planes: &[&[u8]],
        _output: &FrameLayout,
        out_planes: &mut [&mut [u8]],
    ) -> Option<Result<(), AffineError>> {
        for p in out_planes.iter_mut() {
            p.fill(42);
        }
        Some(Ok(()))
    }
}

#[test]
fn the_frame_path_is_taken_only_once_set_up() {
    let layout = FrameLayout::packed(PixelFormat::I420, 5, 3);
    let input = planes(&layout, layout.strides, 3);
    let in_refs: Vec<&[u8]> = input.iter().map(Vec::as_slice).collect();
    let run = |d: &mut Derainer<FramePath>| {
        let mut out = planes(&layout, layout.strides, 4);
        let mut refs: Vec<&mut [u8]> = out.iter_mut().map(Vec::as_mut_slice).collect();
        d.process(layout.strides, &in_refs, layout.strides, &mut refs)
            .expect("derains");
        out
    };
    let mut d = Derainer::new(FramePath {
        inner: Affine::new(2),
        available: true,
    });
    d.configure(layout).expect("configures");
    assert!(run(&mut d).iter().flatten().any(|&b| b != 42), "CPU path");
    assert_eq!(d.use_frame_path(), Ok(true));
    assert!(d.frame_path());
    assert!(run(&mut d).iter().flatten().all(|&b| b == 42), "frame path");

    d.network_mut().available = false;
    assert!(d.use_frame_path().is_err());
    assert!(!d.frame_path(), "a path that cannot be set up is not taken");
}

/// The contract's `[N,3,H,W]` float input or output.
fn nchw(name: &str) -> onnx_protobuf::ValueInfoProto {
    use onnx_protobuf::{TensorShapeProto, TypeProto, tensor_shape_proto, type_proto};
    use protobuf::MessageField;
    let dim = |v: tensor_shape_proto::dimension::Value| tensor_shape_proto::Dimension {
        value: Some(v),
        ..Default::default()
    };
    use tensor_shape_proto::dimension::Value::{DimParam, DimValue};
    let tensor = type_proto::Tensor {
        elem_type: 1,
        shape: MessageField::some(TensorShapeProto {
            dim: vec![
                dim(DimParam("N".into())),
                dim(DimValue(3)),
                dim(DimParam("H".into())),
                dim(DimParam("W".into())),
            ],
            ..Default::default()
        }),
        ..Default::default()
    };
    onnx_protobuf::ValueInfoProto {
        name: name.to_owned(),
        type_: MessageField::some(TypeProto {
            value: Some(type_proto::Value::TensorType(tensor)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// An ONNX model computing [`Affine`]'s function, with a card asking for `multiple_of`.
fn affine_onnx(multiple_of: u32) -> Vec<u8> {
    use onnx_protobuf::{
        GraphProto, Message, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto,
        TensorProto,
    };
    use protobuf::MessageField;
    let a = Affine::new(multiple_of);
    let constant = |name: &str, v: [f32; 3]| TensorProto {
        name: name.to_owned(),
        dims: vec![1, 3, 1, 1],
        data_type: 1,
        raw_data: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ..Default::default()
    };
    let node = |op: &str, inputs: [&str; 2], output: &str| NodeProto {
        name: output.to_owned(),
        op_type: op.to_owned(),
        input: inputs.iter().map(|s| (*s).to_owned()).collect(),
        output: vec![output.to_owned()],
        ..Default::default()
    };
    let graph = GraphProto {
        name: "affine".into(),
        node: vec![
            node("Mul", [INPUT_NAME, "scale"], "scaled"),
            node("Add", ["scaled", "bias"], OUTPUT_NAME),
        ],
        initializer: vec![constant("scale", a.scale), constant("bias", a.bias)],
        input: vec![nchw(INPUT_NAME)],
        output: vec![nchw(OUTPUT_NAME)],
        ..Default::default()
    };
    let mut card = ModelCard::new("affine");
    card.multiple_of = multiple_of;
    let model = ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: 17,
            ..Default::default()
        }],
        graph: MessageField::some(graph),
        metadata_props: vec![StringStringEntryProto {
            key: CARD_KEY.to_owned(),
            value: card.to_json(),
            ..Default::default()
        }],
        ..Default::default()
    };
    model.write_to_bytes().expect("a small model serialises")
}

#[test]
fn an_onnx_generator_gives_the_element_s_bytes_for_every_format() {
    let model = Model::from_bytes(affine_onnx(8), "affine8").expect("fixture honours the contract");
    let Ok(generator) = Generator::new(&model, &SessionOptions::default()) else {
        eprintln!("skipped: ONNX Runtime not loadable (run `make setup`)");
        return;
    };
    let mut derainer = Derainer::new(generator);
    // No GPU frame path for the CPU provider.
    assert_eq!(derainer.use_frame_path(), Ok(false));
    for format in PixelFormat::ALL {
        for (w, h) in [(33, 17), (2, 3)] {
            let layout = FrameLayout::packed(format, w, h);
            let (got, want) = both(&mut derainer, layout, 2, 1);
            assert_eq!(got, want, "{format} {w}x{h}");
            // And the ONNX model is the plain-Rust one (up to float rounding at a half).
            let mut plain = Derainer::new(Affine::new(8));
            let (rust, _) = both(&mut plain, layout, 2, 1);
            let worst = got
                .iter()
                .flatten()
                .zip(rust.iter().flatten())
                .map(|(a, b)| a.abs_diff(*b))
                .max();
            assert!(
                worst <= Some(1),
                "{format} {w}x{h}: ONNX against plain Rust"
            );
        }
    }
    derainer.warm_up().expect("warms up");
    // A borrowed generator runs the same.
    let mut generator = derainer.into_network();
    let mut borrowed = Derainer::new(&mut generator);
    let (got, want) = both(
        &mut borrowed,
        FrameLayout::packed(PixelFormat::Bgra, 33, 17),
        0,
        4,
    );
    assert_eq!(got, want);
}
