//! Small ONNX models for tests, written in Rust so no test needs Python. Unless said otherwise they
//! take float32 `rainy` `[N,3,H,W]` (N, H, W symbolic) and give float32 `clean` of the same shape.

use onnx_protobuf::{ModelProto, StringStringEntryProto, tensor_proto::DataType};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::builder::{Attr, DEFAULT_OPSET, Dim, GraphBuilder, to_bytes};
use derain_core::card::{CARD_KEY, INPUT_NAME, ModelCard, OUTPUT_NAME};

/// The contract's input and output dimensions, `[N,3,H,W]`.
const NCHW: [Dim<'static>; 4] = [
    Dim::Symbolic("N"),
    Dim::Fixed(3),
    Dim::Symbolic("H"),
    Dim::Symbolic("W"),
];

/// Serialises a fixture. Fixtures are small, well-formed graphs, so this cannot fail.
fn bytes(g: GraphBuilder, card: &ModelCard) -> Vec<u8> {
    let model = g
        .finish(DEFAULT_OPSET, card)
        .expect("fixture graphs are well-formed");
    to_bytes(&model).expect("fixture graphs are small")
}

fn contract_graph(name: &str) -> (GraphBuilder, String) {
    let mut g = GraphBuilder::new(name);
    let x = g.input(INPUT_NAME, DataType::FLOAT, &NCHW);
    g.output(OUTPUT_NAME, DataType::FLOAT, &NCHW);
    (g, x)
}

/// `clean = rainy`, with a card named "identity" that asks for H and W multiples of `multiple_of`.
pub fn identity(multiple_of: u32) -> Vec<u8> {
    let (mut g, x) = contract_graph("identity");
    g.node("Identity", &[&x], &[OUTPUT_NAME], vec![]);
    let mut card = ModelCard::new("identity");
    card.architecture = "identity".to_owned();
    card.multiple_of = multiple_of;
    bytes(g, &card)
}

/// Per-channel `clean = rainy * scale + bias` (no clamping).
pub fn affine(scale: [f32; 3], bias: [f32; 3]) -> Vec<u8> {
    let (mut g, x) = contract_graph("affine");
    let s = g.initializer("scale", &[1, 3, 1, 1], scale.to_vec());
    let b = g.initializer("bias", &[1, 3, 1, 1], bias.to_vec());
    let y = g.mul(&x, &s);
    g.node("Add", &[&y, &b], &[OUTPUT_NAME], vec![]);
    let mut card = ModelCard::new("affine");
    card.architecture = format!("affine(scale={scale:?}, bias={bias:?})");
    bytes(g, &card)
}

/// Uniform values in `[-bound, bound)` from `rng`.
fn uniform(rng: &mut ChaCha8Rng, n: usize, bound: f32) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-bound..bound)).collect()
}

/// `clean = rainy + conv3x3(relu(conv3x3(rainy)))` with 8 hidden channels and seeded random
/// weights (zero padding, so H and W are kept).
pub fn small_conv(seed: u64) -> Vec<u8> {
    const HIDDEN: usize = 8;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (mut g, x) = contract_graph("small_conv");
    let b1 = 1.0 / ((3 * 9) as f32).sqrt();
    let w1 = uniform(&mut rng, HIDDEN * 3 * 9, b1);
    let c1 = uniform(&mut rng, HIDDEN, b1);
    let h = g.conv2d(&x, "conv1", 3, HIDDEN, 3, 1, 1, 1, &w1, &c1);
    let h = g.relu(&h);
    let b2 = 0.5 / ((HIDDEN * 9) as f32).sqrt();
    let w2 = uniform(&mut rng, 3 * HIDDEN * 9, b2);
    let c2 = uniform(&mut rng, 3, b2);
    let r = g.conv2d(&h, "conv2", HIDDEN, 3, 3, 1, 1, 1, &w2, &c2);
    g.node("Add", &[&x, &r], &[OUTPUT_NAME], vec![]);
    let mut card = ModelCard::new("small_conv");
    card.architecture = format!("x + conv3x3(relu(conv3x3(x, 3->{HIDDEN})), {HIDDEN}->3)");
    card.parameters = g.parameter_count();
    card.gmac_per_megapixel = (2 * 3 * HIDDEN * 9) as f64 / 1000.0;
    card.training = serde_json::json!({ "init": "random", "seed": seed });
    bytes(g, &card)
}

/// Hidden channels of [`slow_conv`].
pub const SLOW_CONV_CHANNELS: usize = 32;

/// A deliberately slow generator for latency tests: `clean = rainy + conv(relu(conv(...)))` with
/// `layers` stacked 3x3 convolutions of [`SLOW_CONV_CHANNELS`] channels between a 3->C and a C->3
/// convolution, seeded random weights. Its cost grows linearly with `layers`
/// (9·C² MACs per pixel each: about 0.7 GMAC per layer on a 320x240 frame; on one core of the
/// 2-core development VM about 14 ms per layer plus 16 ms, so 6 layers take about 100 ms).
pub fn slow_conv(layers: usize, seed: u64) -> Vec<u8> {
    const C: usize = SLOW_CONV_CHANNELS;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (mut g, x) = contract_graph("slow_conv");
    let b_in = 1.0 / ((3 * 9) as f32).sqrt();
    let w = uniform(&mut rng, C * 3 * 9, b_in);
    let b = uniform(&mut rng, C, b_in);
    let mut h = g.conv2d(&x, "conv_in", 3, C, 3, 1, 1, 1, &w, &b);
    h = g.relu(&h);
    // He-like scale keeps activations from exploding or vanishing however deep the stack is.
    let b_mid = (2.0 / (C * 9) as f32).sqrt();
    for i in 0..layers {
        let w = uniform(&mut rng, C * C * 9, b_mid);
        let b = vec![0.0; C];
        h = g.conv2d(&h, &format!("conv{i}"), C, C, 3, 1, 1, 1, &w, &b);
        h = g.relu(&h);
    }
    let b_out = 0.1 / ((C * 9) as f32).sqrt();
    let w = uniform(&mut rng, 3 * C * 9, b_out);
    let b = uniform(&mut rng, 3, b_out);
    let r = g.conv2d(&h, "conv_out", C, 3, 3, 1, 1, 1, &w, &b);
    g.node("Add", &[&x, &r], &[OUTPUT_NAME], vec![]);
    let mut card = ModelCard::new("slow_conv");
    card.architecture = format!("x + conv3x3 stack (3->{C}, {layers}x {C}->{C}, {C}->3)");
    card.parameters = g.parameter_count();
    card.gmac_per_megapixel = (9 * (3 * C + layers * C * C + C * 3)) as f64 / 1000.0;
    card.training = serde_json::json!({ "init": "random", "seed": seed });
    bytes(g, &card)
}

/// The interface of a [`custom_io`] model.
#[derive(Debug, Clone, PartialEq)]
pub struct FixtureIo {
    /// Name of the graph input.
    pub input_name: String,
    /// Name of the graph output. When it equals the input's, the graph has no node and its output
    /// is its input.
    pub output_name: String,
    /// Rank of input and output: the dimensions are taken in order from
    /// `[N, channels, H, W, D4, D5, ...]` (3 gives `[N, channels, H]`).
    pub input_rank: usize,
    /// ONNX element type code (`onnx_protobuf::tensor_proto::DataType` as i32) of input and output.
    pub elem_type: i32,
    /// The fixed size of dimension 1.
    pub channels: i64,
    /// Raw text stored under [`CARD_KEY`]; `None` stores no card at all.
    pub card: Option<String>,
}

impl Default for FixtureIo {
    /// The contract's interface (`rainy`/`clean`, float32 `[N,3,H,W]`) with a valid card.
    fn default() -> Self {
        Self {
            input_name: INPUT_NAME.to_owned(),
            output_name: OUTPUT_NAME.to_owned(),
            input_rank: 4,
            elem_type: DataType::FLOAT as i32,
            channels: 3,
            card: Some(ModelCard::new("custom_io").to_json()),
        }
    }
}

/// An identity model with the interface `io` describes, to exercise the loader's checks. Every
/// such model is valid ONNX that ONNX Runtime loads (for element types `Identity` supports).
pub fn custom_io(io: FixtureIo) -> Vec<u8> {
    let mut g = GraphBuilder::new("custom_io");
    let names: Vec<String> = (4..io.input_rank).map(|i| format!("D{i}")).collect();
    let mut all = vec![
        Dim::Symbolic("N"),
        Dim::Fixed(io.channels),
        Dim::Symbolic("H"),
        Dim::Symbolic("W"),
    ];
    all.extend(names.iter().map(|n| Dim::Symbolic(n)));
    let dims = &all[..io.input_rank.min(all.len())];
    let x = g.input_raw(&io.input_name, io.elem_type, dims);
    if io.output_name != io.input_name {
        g.node("Identity", &[&x], &[&io.output_name], vec![]);
    }
    g.output_raw(&io.output_name, io.elem_type, dims);
    let mut model: ModelProto = g
        .finish(DEFAULT_OPSET, &ModelCard::new("custom_io"))
        .expect("fixture graphs are well-formed");
    model.metadata_props = io
        .card
        .map(|value| StringStringEntryProto {
            key: CARD_KEY.to_owned(),
            value,
            ..Default::default()
        })
        .into_iter()
        .collect();
    to_bytes(&model).expect("fixture graphs are small")
}

/// A stand-in object detector whose output is known: input `images` float32 `[1,3,H,W]` (`None`
/// leaves H and W dynamic), output `output` = `values` with shape `output_shape`, whatever the
/// image. The graph is `ReduceMean(images)·0 + constant`, so ONNX Runtime really runs it (and
/// refuses a wrong input) while the result stays exact.
pub fn constant_detector(
    input_hw: Option<(usize, usize)>,
    output_shape: &[usize],
    values: Vec<f32>,
) -> Vec<u8> {
    let (h, w) = match input_hw {
        Some((h, w)) => (Dim::Fixed(h as i64), Dim::Fixed(w as i64)),
        None => (Dim::Symbolic("H"), Dim::Symbolic("W")),
    };
    let mut g = GraphBuilder::new("constant_detector");
    let x = g.input(
        "images",
        DataType::FLOAT,
        &[Dim::Fixed(1), Dim::Fixed(3), h, w],
    );
    let mean = g.node1("ReduceMean", &[&x], vec![Attr::int("keepdims", 0)]);
    let zero = g.mul_scalar(&mean, 0.0);
    let c = g.initializer("boxes", output_shape, values);
    g.node("Add", &[&zero, &c], &["output"], vec![]);
    let dims: Vec<Dim<'_>> = output_shape.iter().map(|&d| Dim::Fixed(d as i64)).collect();
    g.output("output", DataType::FLOAT, &dims);
    let mut card = ModelCard::new("constant_detector");
    card.architecture = format!("constant output {output_shape:?}");
    bytes(g, &card)
}

#[cfg(test)]
mod tests {
    use onnx_protobuf::{Message, ValueInfoProto, tensor_shape_proto::dimension, type_proto};
    use ort::value::TensorRef;

    use super::*;
    use crate::onnx::testing::{ort_session, run_f32};

    fn parse(bytes: &[u8]) -> ModelProto {
        ModelProto::parse_from_bytes(bytes).expect("parses")
    }

    /// (elem_type, dims as strings) of a value info.
    fn describe(v: &ValueInfoProto) -> (i32, Vec<String>) {
        let Some(type_proto::Value::TensorType(t)) = &v.type_.value else {
            panic!("not a tensor type");
        };
        let dims = t
            .shape
            .dim
            .iter()
            .map(|d| match &d.value {
                Some(dimension::Value::DimValue(v)) => v.to_string(),
                Some(dimension::Value::DimParam(p)) => p.clone(),
                _ => "?".to_owned(),
            })
            .collect();
        (t.elem_type, dims)
    }

    fn card_of(m: &ModelProto) -> Option<&str> {
        m.metadata_props
            .iter()
            .find(|p| p.key == CARD_KEY)
            .map(|p| p.value.as_str())
    }

    #[test]
    fn fixtures_follow_the_contract() {
        let nchw: Vec<String> = ["N", "3", "H", "W"].map(String::from).to_vec();
        for (bytes, name) in [
            (identity(4), "identity"),
            (affine([1.0; 3], [0.0; 3]), "affine"),
            (small_conv(1), "small_conv"),
            (slow_conv(2, 1), "slow_conv"),
        ] {
            let m = parse(&bytes);
            assert_eq!(m.opset_import[0].version, 17);
            assert_eq!(m.graph.input.len(), 1);
            assert_eq!(m.graph.output.len(), 1);
            assert_eq!(m.graph.input[0].name, INPUT_NAME);
            assert_eq!(m.graph.output[0].name, OUTPUT_NAME);
            assert_eq!(describe(&m.graph.input[0]), (1, nchw.clone()));
            assert_eq!(describe(&m.graph.output[0]), (1, nchw.clone()));
            let card = ModelCard::from_json(card_of(&m).expect("has a card")).expect("card");
            assert_eq!(card.name, name);
        }
        let card = ModelCard::from_json(card_of(&parse(&identity(8))).unwrap()).unwrap();
        assert_eq!(card.multiple_of, 8);
        let card = ModelCard::from_json(card_of(&parse(&small_conv(1))).unwrap()).unwrap();
        assert_eq!(card.parameters, (8 * 27 + 8 + 3 * 72 + 3) as u64);
    }

    #[test]
    fn small_conv_is_seeded() {
        assert_eq!(small_conv(7), small_conv(7));
        assert_ne!(small_conv(7), small_conv(8));
    }

    #[test]
    fn custom_io_describes_what_it_was_asked() {
        let m = parse(&custom_io(FixtureIo {
            input_name: "x".into(),
            output_name: "y".into(),
            input_rank: 3,
            elem_type: DataType::INT64 as i32,
            channels: 1,
            card: None,
        }));
        assert_eq!(m.graph.input[0].name, "x");
        assert_eq!(m.graph.output[0].name, "y");
        let want: Vec<String> = ["N", "1", "H"].map(String::from).to_vec();
        assert_eq!(describe(&m.graph.input[0]), (7, want.clone()));
        assert_eq!(describe(&m.graph.output[0]), (7, want));
        assert!(m.metadata_props.is_empty());

        let m = parse(&custom_io(FixtureIo {
            input_rank: 5,
            card: Some("{not json".into()),
            ..FixtureIo::default()
        }));
        assert_eq!(describe(&m.graph.input[0]).1, ["N", "3", "H", "W", "D4"]);
        assert_eq!(card_of(&m), Some("{not json"));

        let m = parse(&custom_io(FixtureIo::default()));
        let card = ModelCard::from_json(card_of(&m).unwrap()).unwrap();
        assert_eq!(card.name, "custom_io");
    }

    fn pattern(n: usize) -> Vec<f32> {
        (0..n).map(|i| ((i * 37) % 101) as f32 / 100.0).collect()
    }

    #[test]
    fn identity_runs_exactly() {
        let Some(mut s) = ort_session(&identity(1)) else {
            return;
        };
        let shape = [2usize, 3, 5, 7];
        let x = pattern(shape.iter().product());
        let (out_shape, y) = run_f32(&mut s, shape, &x);
        assert_eq!(out_shape, shape);
        assert_eq!(y, x);
    }

    #[test]
    fn affine_runs() {
        let (scale, bias) = ([2.0, -1.0, 0.5], [0.1, 1.0, -0.25]);
        let Some(mut s) = ort_session(&affine(scale, bias)) else {
            return;
        };
        let shape = [1usize, 3, 4, 6];
        let x = pattern(shape.iter().product());
        let (out_shape, y) = run_f32(&mut s, shape, &x);
        assert_eq!(out_shape, shape);
        for (i, (a, b)) in x.iter().zip(&y).enumerate() {
            let c = (i / 24) % 3;
            let want = a * scale[c] + bias[c];
            assert!((b - want).abs() < 1e-6, "at {i}: {b} != {want}");
        }
    }

    #[test]
    fn small_conv_keeps_shape() {
        let Some(mut s) = ort_session(&small_conv(3)) else {
            return;
        };
        let shape = [1usize, 3, 9, 13];
        let x = pattern(shape.iter().product());
        let (out_shape, y) = run_f32(&mut s, shape, &x);
        assert_eq!(out_shape, shape);
        assert!(y.iter().all(|v| v.is_finite()));
        assert!(y != x, "the residual branch changes the image");
    }

    #[test]
    fn slow_conv_keeps_shape_and_range() {
        assert_eq!(slow_conv(3, 5), slow_conv(3, 5));
        let Some(mut s) = ort_session(&slow_conv(3, 5)) else {
            return;
        };
        let shape = [1usize, 3, 8, 11];
        let x = pattern(shape.iter().product());
        let (out_shape, y) = run_f32(&mut s, shape, &x);
        assert_eq!(out_shape, shape);
        // A small residual: the output stays an image, not noise.
        let worst = x
            .iter()
            .zip(&y)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(worst.is_finite() && worst < 0.5, "residual {worst}");
    }

    #[test]
    fn every_custom_io_variant_loads_in_ort() {
        let variants = [
            FixtureIo::default(),
            FixtureIo {
                input_name: "image".into(),
                ..FixtureIo::default()
            },
            FixtureIo {
                output_name: "out".into(),
                ..FixtureIo::default()
            },
            FixtureIo {
                input_name: "same".into(),
                output_name: "same".into(),
                ..FixtureIo::default()
            },
            FixtureIo {
                input_rank: 3,
                ..FixtureIo::default()
            },
            FixtureIo {
                input_rank: 5,
                ..FixtureIo::default()
            },
            FixtureIo {
                input_rank: 2,
                ..FixtureIo::default()
            },
            FixtureIo {
                elem_type: DataType::INT64 as i32,
                ..FixtureIo::default()
            },
            FixtureIo {
                elem_type: DataType::DOUBLE as i32,
                ..FixtureIo::default()
            },
            FixtureIo {
                elem_type: DataType::UINT8 as i32,
                ..FixtureIo::default()
            },
            FixtureIo {
                elem_type: DataType::FLOAT16 as i32,
                ..FixtureIo::default()
            },
            FixtureIo {
                channels: 1,
                ..FixtureIo::default()
            },
            FixtureIo {
                channels: 4,
                ..FixtureIo::default()
            },
            FixtureIo {
                card: None,
                ..FixtureIo::default()
            },
            FixtureIo {
                card: Some("{not json".into()),
                ..FixtureIo::default()
            },
            FixtureIo {
                card: Some(r#"{"multiple_of":4}"#.into()),
                ..FixtureIo::default()
            },
        ];
        for io in variants {
            let Some(mut s) = ort_session(&custom_io(io.clone())) else {
                return;
            };
            assert_eq!(s.inputs().len(), 1, "{io:?}");
            assert_eq!(s.inputs()[0].name(), io.input_name, "{io:?}");
            assert_eq!(s.outputs()[0].name(), io.output_name, "{io:?}");
            // A float model of any rank also runs.
            if io.elem_type == DataType::FLOAT as i32 {
                let shape: Vec<usize> =
                    [1, io.channels as usize, 2, 2, 2, 2][..io.input_rank].to_vec();
                let x = pattern(shape.iter().product());
                let input = TensorRef::from_array_view((shape.clone(), &x[..])).expect("tensor");
                let out = s
                    .run(ort::inputs![io.input_name.as_str() => input])
                    .expect("runs");
                let (_, y) = out[io.output_name.as_str()]
                    .try_extract_tensor::<f32>()
                    .expect("f32 output");
                assert_eq!(y, &x[..], "{io:?}");
            }
        }
    }
}
