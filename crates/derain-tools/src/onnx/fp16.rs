//! Float16 generators: the same graph with float16 weights and activations, while the model
//! contract (docs/ARCHITECTURE.md, The model contract) stays float32 at the edges: a `Cast` to
//! float16 right after the input and a `Cast` back to float32 right before the output, so every
//! consumer feeds and reads the same tensors as before. The card records `precision: fp16`.
//!
//! [`simulate_fp16`] builds the float32 model a float16 run approximates (weights rounded to
//! float16, every intermediate tensor rounded through float16), so a CPU without float16 kernels
//! can still measure what float16 costs in output quality.

use std::collections::HashSet;

use half::f16;
use onnx_protobuf::{
    GraphProto, ModelProto, NodeProto, TensorProto, attribute_proto::AttributeType,
    tensor_proto::DataType, type_proto,
};
use protobuf::EnumOrUnknown;

use super::builder::Attr;
use derain_core::card::{CARD_KEY, ModelCard, Precision};

/// Operators whose float inputs and outputs may all be float16 (ONNX type constraint `T`
/// includes `tensor(float16)`), with non-float inputs (pads, axes) left as they are.
const FP16_OPS: &[&str] = &[
    "Add",
    "Clip",
    "Concat",
    "Conv",
    "ConvTranspose",
    "DepthToSpace",
    "Div",
    "Identity",
    "InstanceNormalization",
    "LeakyRelu",
    "Mul",
    "Pad",
    "ReduceMean",
    "Relu",
    "Sigmoid",
    "SpaceToDepth",
    "Sub",
    "Tanh",
];

const FLOAT: i32 = DataType::FLOAT as i32;
const FLOAT16: i32 = DataType::FLOAT16 as i32;

/// Why a model could not be converted to float16.
#[derive(Debug, thiserror::Error)]
pub enum Fp16Error {
    #[error("the model has no graph")]
    NoGraph,
    #[error(
        "operator {op} (node '{node}') has no float16 conversion here; export float32 and let \
         TensorRT build an FP16 engine instead (trt-fp16=true)"
    )]
    UnsupportedOp { op: String, node: String },
    #[error("initializer '{name}' holds {value}, beyond float16's range (±65504); export float32")]
    OutOfRange { name: String, value: f32 },
    #[error("initializer '{name}' is float32 but holds {got} bytes for {want} values")]
    BadInitializer {
        name: String,
        got: usize,
        want: usize,
    },
    #[error("the model is already float16 (its graph holds float16 tensors)")]
    AlreadyFp16,
    #[error("graph output '{0}' is not computed by any node (an input or initializer)")]
    OutputNotComputed(String),
    #[error("the model card cannot be updated: {0}")]
    Card(String),
}

/// The float32 values of a float32 initializer (`raw_data` little-endian, or `float_data`).
fn float_values(t: &TensorProto) -> Result<Vec<f32>, Fp16Error> {
    let want: usize = t.dims.iter().map(|&d| d.max(0) as usize).product();
    if t.raw_data.is_empty() && !t.float_data.is_empty() {
        if t.float_data.len() != want {
            return Err(Fp16Error::BadInitializer {
                name: t.name.clone(),
                got: 4 * t.float_data.len(),
                want,
            });
        }
        return Ok(t.float_data.clone());
    }
    if t.raw_data.len() != 4 * want {
        return Err(Fp16Error::BadInitializer {
            name: t.name.clone(),
            got: t.raw_data.len(),
            want,
        });
    }
    let (chunks, _) = t.raw_data.as_chunks::<4>();
    Ok(chunks.iter().map(|b| f32::from_le_bytes(*b)).collect())
}

/// Rewrites a float32 tensor as float16 (round to nearest even, as `half` does).
fn tensor_to_fp16(t: &mut TensorProto) -> Result<(), Fp16Error> {
    let values = float_values(t)?;
    let mut raw = Vec::with_capacity(2 * values.len());
    for v in values {
        let h = f16::from_f32(v);
        if v.is_finite() && !h.is_finite() {
            return Err(Fp16Error::OutOfRange {
                name: t.name.clone(),
                value: v,
            });
        }
        raw.extend_from_slice(&h.to_le_bytes());
    }
    t.data_type = FLOAT16;
    t.float_data.clear();
    t.raw_data = raw;
    Ok(())
}

/// Sets the element type of a float32 value description to `to`.
fn retype(vi: &mut onnx_protobuf::ValueInfoProto, to: i32) {
    if let Some(type_proto::Value::TensorType(t)) = vi.type_.as_mut().and_then(|t| t.value.as_mut())
        && t.elem_type == FLOAT
    {
        t.elem_type = to;
    }
}

fn is_float(vi: &onnx_protobuf::ValueInfoProto) -> bool {
    matches!(
        vi.type_.as_ref().and_then(|t| t.value.as_ref()),
        Some(type_proto::Value::TensorType(t)) if t.elem_type == FLOAT
    )
}

fn cast(input: &str, output: &str, to: i32, name: &str) -> NodeProto {
    NodeProto {
        name: name.to_owned(),
        op_type: "Cast".to_owned(),
        input: vec![input.to_owned()],
        output: vec![output.to_owned()],
        attribute: vec![Attr::int("to", i64::from(to)).into_proto()],
        ..Default::default()
    }
}

/// A tensor name not in `taken`, starting from `base`.
fn unique(taken: &HashSet<String>, base: String) -> String {
    let mut name = base.clone();
    let mut i = 1;
    while taken.contains(&name) {
        name = format!("{base}_{i}");
        i += 1;
    }
    name
}

/// Every tensor name a graph uses (inputs, outputs, initializers, node inputs and outputs).
fn names(g: &GraphProto) -> HashSet<String> {
    let mut out: HashSet<String> = HashSet::new();
    out.extend(g.input.iter().map(|v| v.name.clone()));
    out.extend(g.output.iter().map(|v| v.name.clone()));
    out.extend(g.initializer.iter().map(|t| t.name.clone()));
    for n in &g.node {
        out.extend(n.input.iter().cloned());
        out.extend(n.output.iter().cloned());
    }
    out
}

fn set_card_precision(model: &mut ModelProto, precision: Precision) -> Result<(), Fp16Error> {
    if let Some(entry) = model.metadata_props.iter_mut().find(|p| p.key == CARD_KEY) {
        let mut card =
            ModelCard::from_json(&entry.value).map_err(|e| Fp16Error::Card(e.to_string()))?;
        card.precision = precision;
        entry.value = card.to_json();
    }
    Ok(())
}

/// The float16 version of a float32 generator: every float32 initializer (and `Constant` value)
/// becomes float16, the graph's float32 inputs are cast to float16 before use and its float32
/// outputs are cast back from float16, so inputs and outputs keep their names, types and shapes.
/// The card (if any) records `precision: fp16`. Operators outside a known list (those whose
/// float16 support needs more than a type change, like `Resize`'s float32 `scales`) are refused.
pub fn to_fp16(model: &ModelProto) -> Result<ModelProto, Fp16Error> {
    let mut model = model.clone();
    let graph = model.graph.as_mut().ok_or(Fp16Error::NoGraph)?;
    if graph.initializer.iter().any(|t| t.data_type == FLOAT16) {
        return Err(Fp16Error::AlreadyFp16);
    }
    for n in &graph.node {
        if !FP16_OPS.contains(&n.op_type.as_str()) && n.op_type != "Constant" {
            return Err(Fp16Error::UnsupportedOp {
                op: n.op_type.clone(),
                node: n.name.clone(),
            });
        }
    }
    for t in graph
        .initializer
        .iter_mut()
        .filter(|t| t.data_type == FLOAT)
    {
        tensor_to_fp16(t)?;
    }
    for n in graph.node.iter_mut().filter(|n| n.op_type == "Constant") {
        for a in &mut n.attribute {
            if a.type_ == EnumOrUnknown::new(AttributeType::TENSOR) && a.t.data_type == FLOAT {
                tensor_to_fp16(a.t.mut_or_insert_default())?;
            }
        }
    }
    for vi in &mut graph.value_info {
        retype(vi, FLOAT16);
    }

    let mut taken = names(graph);
    let initializers: HashSet<String> = graph.initializer.iter().map(|t| t.name.clone()).collect();
    let mut head = Vec::new();
    // Older IR versions list initializers among the inputs: those are weights, already converted.
    for vi in graph.input.iter_mut() {
        if initializers.contains(&vi.name) {
            retype(vi, FLOAT16);
            continue;
        }
        if !is_float(vi) {
            continue;
        }
        let half_name = unique(&taken, format!("{}.fp16", vi.name));
        taken.insert(half_name.clone());
        for n in &mut graph.node {
            for i in n.input.iter_mut().filter(|i| **i == vi.name) {
                i.clone_from(&half_name);
            }
        }
        head.push(cast(
            &vi.name,
            &half_name,
            FLOAT16,
            &format!("Cast_{}_to_fp16", vi.name),
        ));
    }
    let mut tail = Vec::new();
    for vi in graph.output.iter().filter(|vi| is_float(vi)) {
        let half_name = unique(&taken, format!("{}.fp16", vi.name));
        taken.insert(half_name.clone());
        let mut produced = false;
        for n in &mut graph.node {
            for o in n.output.iter_mut().filter(|o| **o == vi.name) {
                o.clone_from(&half_name);
                produced = true;
            }
            for i in n.input.iter_mut().filter(|i| **i == vi.name) {
                i.clone_from(&half_name);
            }
        }
        if !produced {
            return Err(Fp16Error::OutputNotComputed(vi.name.clone()));
        }
        tail.push(cast(
            &half_name,
            &vi.name,
            FLOAT,
            &format!("Cast_{}_to_fp32", vi.name),
        ));
    }
    let body = std::mem::take(&mut graph.node);
    graph.node = head.into_iter().chain(body).chain(tail).collect();
    set_card_precision(&mut model, Precision::Fp16)?;
    Ok(model)
}

/// What a float16 run of `model` computes, as a float32 model: weights rounded to float16 and
/// every node's outputs rounded through float16 (a `Cast` to float16 and back after each node).
/// Arithmetic inside a node stays float32, which is what GPU float16 kernels do for their
/// accumulations; so this bounds the error of storage in float16, not of float16 arithmetic.
pub fn simulate_fp16(model: &ModelProto) -> Result<ModelProto, Fp16Error> {
    let mut model = model.clone();
    let graph = model.graph.as_mut().ok_or(Fp16Error::NoGraph)?;
    for t in graph
        .initializer
        .iter_mut()
        .filter(|t| t.data_type == FLOAT)
    {
        let rounded: Vec<u8> = float_values(t)?
            .into_iter()
            .flat_map(|v| f16::from_f32(v).to_f32().to_le_bytes())
            .collect();
        t.float_data.clear();
        t.raw_data = rounded;
    }
    let mut taken = names(graph);
    let body = std::mem::take(&mut graph.node);
    // The float32 inputs are rounded too, as the float16 model's first Cast does.
    let initializers: HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let mut renamed = Vec::new();
    for vi in graph
        .input
        .iter()
        .filter(|vi| is_float(vi) && !initializers.contains(vi.name.as_str()))
    {
        let half = unique(&taken, format!("{}.half", vi.name));
        let rounded = unique(&taken, format!("{}.rounded", vi.name));
        taken.insert(half.clone());
        taken.insert(rounded.clone());
        graph
            .node
            .push(cast(&vi.name, &half, FLOAT16, &format!("{half}.to16")));
        graph
            .node
            .push(cast(&half, &rounded, FLOAT, &format!("{half}.to32")));
        renamed.push((vi.name.clone(), rounded));
    }
    for mut n in body {
        for i in n.input.iter_mut() {
            if let Some((_, r)) = renamed.iter().find(|(from, _)| from == i) {
                i.clone_from(r);
            }
        }
        let mut rounding = Vec::new();
        for o in n.output.iter_mut() {
            let raw = unique(&taken, format!("{o}.exact"));
            let half = unique(&taken, format!("{o}.half"));
            taken.insert(raw.clone());
            taken.insert(half.clone());
            let final_name = std::mem::replace(o, raw.clone());
            rounding.push(cast(&raw, &half, FLOAT16, &format!("{raw}.to16")));
            rounding.push(cast(&half, &final_name, FLOAT, &format!("{raw}.to32")));
        }
        graph.node.push(n);
        graph.node.extend(rounding);
    }
    Ok(model)
}

#[cfg(test)]
mod tests {
    use onnx_protobuf::Message;

    use super::*;
    use crate::onnx::testing::{ort_env, ort_session, run_f32};
    use crate::onnx::{Resnet9Config, resnet9_random, to_bytes};
    use derain_core::card::{INPUT_NAME, OUTPUT_NAME};
    use derain_core::model::Model;

    fn parse(bytes: &[u8]) -> ModelProto {
        ModelProto::parse_from_bytes(bytes).expect("parses")
    }

    fn small() -> ModelProto {
        parse(
            &resnet9_random(
                &Resnet9Config {
                    base: 4,
                    blocks: 2,
                    residual: false,
                },
                3,
            )
            .expect("builds"),
        )
    }

    fn elem_type(vi: &onnx_protobuf::ValueInfoProto) -> i32 {
        match vi.type_.value.as_ref() {
            Some(type_proto::Value::TensorType(t)) => t.elem_type,
            _ => -1,
        }
    }

    /// A smooth image with edges, like a frame: gradients plus a few bars.
    fn image(h: usize, w: usize) -> Vec<f32> {
        let mut x = vec![0.0; 3 * h * w];
        for c in 0..3 {
            for y in 0..h {
                for xx in 0..w {
                    let bar = if (xx / 7 + y / 11 + c) % 3 == 0 {
                        0.3
                    } else {
                        0.0
                    };
                    x[(c * h + y) * w + xx] =
                        (0.2 + 0.5 * y as f32 / h as f32 + 0.2 * xx as f32 / w as f32 + bar)
                            .min(1.0);
                }
            }
        }
        x
    }

    fn psnr(a: &[f32], b: &[f32]) -> f64 {
        let mse = a
            .iter()
            .zip(b)
            .map(|(x, y)| f64::from(x - y).powi(2))
            .sum::<f64>()
            / a.len() as f64;
        10.0 * (1.0 / mse.max(1e-20)).log10()
    }

    #[test]
    fn structure_types_and_weights() {
        let m32 = small();
        let m16 = to_fp16(&m32).expect("converts");
        let (g32, g16) = (m32.graph.as_ref().unwrap(), m16.graph.as_ref().unwrap());

        // The contract's edges stay float32 with the same names.
        assert_eq!(g16.input.len(), 1);
        assert_eq!(g16.input[0].name, INPUT_NAME);
        assert_eq!(elem_type(&g16.input[0]), FLOAT);
        assert_eq!(g16.output.len(), 1);
        assert_eq!(g16.output[0].name, OUTPUT_NAME);
        assert_eq!(elem_type(&g16.output[0]), FLOAT);

        // One Cast in, one Cast out, nothing else added.
        let first = &g16.node[0];
        assert_eq!(first.op_type, "Cast");
        assert_eq!(first.input, [INPUT_NAME]);
        assert_eq!(first.attribute[0].i, i64::from(FLOAT16));
        let last = g16.node.last().unwrap();
        assert_eq!(last.op_type, "Cast");
        assert_eq!(last.output, [OUTPUT_NAME]);
        assert_eq!(last.attribute[0].i, i64::from(FLOAT));
        assert_eq!(g16.node.len(), g32.node.len() + 2);
        assert!(
            g16.node[1..g16.node.len() - 1]
                .iter()
                .all(|n| n.input.iter().all(|i| i != INPUT_NAME)),
            "only the Cast reads the float32 input"
        );

        // Every float32 initializer became float16, value by value f32 → f16 rounding; int64
        // constants (pads) are untouched.
        assert_eq!(g16.initializer.len(), g32.initializer.len());
        for (a, b) in g32.initializer.iter().zip(&g16.initializer) {
            assert_eq!(a.name, b.name);
            assert_eq!(a.dims, b.dims);
            if a.data_type == FLOAT {
                assert_eq!(b.data_type, FLOAT16, "{}", a.name);
                let want: Vec<u16> = float_values(a)
                    .unwrap()
                    .into_iter()
                    .map(|v| f16::from_f32(v).to_bits())
                    .collect();
                let (got, _) = b.raw_data.as_chunks::<2>();
                let got: Vec<u16> = got.iter().map(|c| u16::from_le_bytes(*c)).collect();
                assert_eq!(got, want, "{}", a.name);
            } else {
                assert_eq!(a, b);
            }
        }

        // The card says fp16 and the model still honours the contract.
        let bytes = to_bytes(&m16).unwrap();
        let model = Model::from_bytes(bytes.clone(), "fp16").expect("contract holds");
        assert_eq!(model.card().precision, Precision::Fp16);
        assert_eq!(
            model.card().parameters,
            Resnet9Config {
                base: 4,
                blocks: 2,
                residual: false
            }
            .parameter_count()
        );
        // Half the weight bytes.
        assert!(bytes.len() * 10 < to_bytes(&m32).unwrap().len() * 6);
    }

    #[test]
    fn refusals() {
        assert!(matches!(
            to_fp16(&to_fp16(&small()).unwrap()),
            Err(Fp16Error::AlreadyFp16)
        ));
        let mut m = small();
        m.graph.as_mut().unwrap().node[3].op_type = "Resize".into();
        assert!(matches!(to_fp16(&m), Err(Fp16Error::UnsupportedOp { op, .. }) if op == "Resize"));
        let mut m = small();
        let t = m
            .graph
            .as_mut()
            .unwrap()
            .initializer
            .iter_mut()
            .find(|t| t.name.ends_with(".bias"))
            .unwrap();
        t.raw_data[..4].copy_from_slice(&1e6f32.to_le_bytes());
        assert!(matches!(to_fp16(&m), Err(Fp16Error::OutOfRange { .. })));
    }

    /// The rounding simulation: ≥ 45 dB PSNR against float32 on the paper-size ResNet-9 with
    /// PyTorch's initialisation, at a size with reflect padding and odd quarter-resolution maps.
    #[test]
    fn simulated_fp16_within_45_db() {
        let m32 = parse(&resnet9_random(&Resnet9Config::default(), 11).unwrap());
        let sim = simulate_fp16(&m32).unwrap();
        // One Cast pair per node output and for the input.
        let (n32, nsim) = (m32.graph.node.len(), sim.graph.node.len());
        assert_eq!(nsim, 3 * n32 + 2);
        let Some(mut s32) = ort_session(&to_bytes(&m32).unwrap()) else {
            return;
        };
        let Some(mut ssim) = ort_session(&to_bytes(&sim).unwrap()) else {
            return;
        };
        let (h, w) = (92, 124);
        let x = image(h, w);
        let (_, y32) = run_f32(&mut s32, [1, 3, h, w], &x);
        let (_, ysim) = run_f32(&mut ssim, [1, 3, h, w], &x);
        let db = psnr(&y32, &ysim);
        eprintln!("fp16 rounding simulation: PSNR {db:.1} dB against float32");
        assert!(db >= 45.0, "{db:.1} dB");
        assert!(y32 != ysim, "the simulation rounds something");
    }

    /// The float16 graph on ONNX Runtime's CPU provider, when it takes it. ONNX Runtime 1.31 does
    /// on x86-64, but runs the operators it has no float16 kernel for (most here) in float32
    /// between inserted Casts, so this checks the graph end to end, not float16 arithmetic (which
    /// only a GPU measures).
    #[test]
    fn fp16_on_cpu_when_supported() {
        let m32 = parse(&resnet9_random(&Resnet9Config::default(), 11).unwrap());
        let m16 = to_fp16(&m32).unwrap();
        let Some(env) = ort_env() else {
            return;
        };
        let session = ort::session::Session::builder(&env)
            .and_then(|mut b| b.commit_from_memory(&to_bytes(&m16).unwrap()));
        let mut s16 = match session {
            Ok(s) => s,
            Err(e) => {
                eprintln!(
                    "skipping float16 execution: ONNX Runtime's CPU provider cannot run the fp16 \
                     graph here ({e}); true fp16 output is unmeasured on this machine"
                );
                return;
            }
        };
        let Some(mut s32) = ort_session(&to_bytes(&m32).unwrap()) else {
            return;
        };
        let (h, w) = (92, 124);
        let x = image(h, w);
        let (_, y32) = run_f32(&mut s32, [1, 3, h, w], &x);
        let (shape, y16) = run_f32(&mut s16, [1, 3, h, w], &x);
        assert_eq!(shape, [1, 3, h, w]);
        let db = psnr(&y32, &y16);
        eprintln!(
            "fp16 graph on ONNX Runtime's CPU provider (float32 arithmetic where it lacks float16 \
             kernels): PSNR {db:.1} dB against float32"
        );
        assert!(db >= 45.0, "{db:.1} dB");
    }
}
