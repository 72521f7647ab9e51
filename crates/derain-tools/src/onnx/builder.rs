//! A small ONNX graph writer: declare inputs and outputs, add initializers and nodes, and get a
//! [`ModelProto`] carrying the model card (docs/ARCHITECTURE.md, The model contract).
//!
//! Mistakes made while building (an initializer whose data does not fit its shape, a tensor name
//! used twice) are remembered and reported by [`GraphBuilder::finish`], so building code stays a
//! plain sequence of calls.

use std::collections::{HashMap, HashSet};

use onnx_protobuf::{
    AttributeProto, GraphProto, Message, ModelProto, NodeProto, OperatorSetIdProto,
    StringStringEntryProto, TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
    attribute_proto::AttributeType, tensor_proto::DataType, tensor_shape_proto, type_proto,
};
use protobuf::{EnumOrUnknown, MessageField};

use derain_core::card::{CARD_KEY, ModelCard};

/// The opset the project writes (docs/ARCHITECTURE.md, The model contract: 17 or newer).
pub const DEFAULT_OPSET: i64 = 17;
/// The oldest opset this writer supports (`Pad` with `pads` as an input needs 11).
pub const MIN_OPSET: i64 = 11;

/// What went wrong while building a graph.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(
        "initializer '{name}' has shape {shape:?}, which needs {expected} values, but got {got}"
    )]
    DataLength {
        name: String,
        shape: Vec<usize>,
        expected: usize,
        got: usize,
    },
    #[error("tensor name '{0}' is defined twice in the graph")]
    DuplicateName(String),
    #[error("opset {0} is not supported: the graph writer needs opset {MIN_OPSET} or newer")]
    Opset(i64),
    #[error("cannot serialise the ONNX model: {0}")]
    Serialize(#[from] protobuf::Error),
}

/// One dimension of a graph input or output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dim<'a> {
    /// A fixed size.
    Fixed(i64),
    /// A named dynamic size (`dim_param`), e.g. `"N"`, `"H"`.
    Symbolic(&'a str),
}

/// A node attribute.
#[derive(Debug, Clone, PartialEq)]
pub struct Attr(AttributeProto);

impl Attr {
    fn base(name: &str, ty: AttributeType) -> AttributeProto {
        AttributeProto {
            name: name.to_owned(),
            type_: EnumOrUnknown::new(ty),
            ..Default::default()
        }
    }

    /// An integer attribute.
    pub fn int(name: &str, value: i64) -> Self {
        let mut a = Self::base(name, AttributeType::INT);
        a.i = value;
        Self(a)
    }

    /// A list-of-integers attribute.
    pub fn ints(name: &str, values: &[i64]) -> Self {
        let mut a = Self::base(name, AttributeType::INTS);
        a.ints = values.to_vec();
        Self(a)
    }

    /// A float attribute.
    pub fn float(name: &str, value: f32) -> Self {
        let mut a = Self::base(name, AttributeType::FLOAT);
        a.f = value;
        Self(a)
    }

    /// A string attribute.
    pub fn string(name: &str, value: &str) -> Self {
        let mut a = Self::base(name, AttributeType::STRING);
        a.s = value.as_bytes().to_vec();
        Self(a)
    }

    /// The attribute message.
    pub fn into_proto(self) -> AttributeProto {
        self.0
    }
}

/// A typed tensor description (`ValueInfoProto`) with the given element type and dimensions.
pub fn value_info(name: &str, elem_type: i32, dims: &[Dim<'_>]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| tensor_shape_proto::Dimension {
            value: Some(match d {
                Dim::Fixed(v) => tensor_shape_proto::dimension::Value::DimValue(*v),
                Dim::Symbolic(s) => tensor_shape_proto::dimension::Value::DimParam((*s).to_owned()),
            }),
            ..Default::default()
        })
        .collect();
    let tensor = type_proto::Tensor {
        elem_type,
        shape: MessageField::some(TensorShapeProto {
            dim,
            ..Default::default()
        }),
        ..Default::default()
    };
    ValueInfoProto {
        name: name.to_owned(),
        type_: MessageField::some(TypeProto {
            value: Some(type_proto::Value::TensorType(tensor)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The IR version that goes with an opset (ONNX's own version table).
pub fn ir_version_for_opset(opset: i64) -> i64 {
    match opset {
        ..=18 => 8,
        19..=20 => 9,
        21..=22 => 10,
        _ => 11,
    }
}

/// Serialises a model to the bytes of an `.onnx` file.
pub fn to_bytes(model: &ModelProto) -> Result<Vec<u8>, BuildError> {
    Ok(model.write_to_bytes()?)
}

/// Builds one ONNX graph. Learned parameters (conv weights and biases, added through the layer
/// helpers or [`GraphBuilder::parameter`]) are counted by [`GraphBuilder::parameter_count`];
/// constants (scalars, pads, instance-norm scale and bias) are not.
#[derive(Debug)]
pub struct GraphBuilder {
    graph: GraphProto,
    names: HashSet<String>,
    counter: usize,
    parameters: u64,
    error: Option<BuildError>,
    /// Constants already added, by a key describing their content, so each is stored once.
    constants: HashMap<String, String>,
}

impl GraphBuilder {
    /// An empty graph called `name`.
    pub fn new(name: &str) -> Self {
        Self {
            graph: GraphProto {
                name: name.to_owned(),
                ..Default::default()
            },
            names: HashSet::new(),
            counter: 0,
            parameters: 0,
            error: None,
            constants: HashMap::new(),
        }
    }

    fn fail(&mut self, e: BuildError) {
        if self.error.is_none() {
            self.error = Some(e);
        }
    }

    fn claim(&mut self, name: &str) {
        if !self.names.insert(name.to_owned()) {
            self.fail(BuildError::DuplicateName(name.to_owned()));
        }
    }

    /// A tensor name not used so far in this graph: `prefix_N`. The name is not reserved until a
    /// node, input or initializer defines it.
    pub fn fresh_name(&mut self, prefix: &str) -> String {
        loop {
            self.counter += 1;
            let name = format!("{prefix}_{}", self.counter);
            if !self.names.contains(&name) {
                return name;
            }
        }
    }

    /// Declares a graph input; returns its name.
    pub fn input(&mut self, name: &str, elem_type: DataType, dims: &[Dim<'_>]) -> String {
        self.input_raw(name, elem_type as i32, dims)
    }

    /// Declares a graph input with a raw ONNX element type code.
    pub fn input_raw(&mut self, name: &str, elem_type: i32, dims: &[Dim<'_>]) -> String {
        self.claim(name);
        self.graph.input.push(value_info(name, elem_type, dims));
        name.to_owned()
    }

    /// Declares a graph output (a tensor some node produces); returns its name.
    pub fn output(&mut self, name: &str, elem_type: DataType, dims: &[Dim<'_>]) -> String {
        self.output_raw(name, elem_type as i32, dims)
    }

    /// Declares a graph output with a raw ONNX element type code.
    pub fn output_raw(&mut self, name: &str, elem_type: i32, dims: &[Dim<'_>]) -> String {
        self.graph.output.push(value_info(name, elem_type, dims));
        name.to_owned()
    }

    fn check_len(&mut self, name: &str, shape: &[usize], got: usize) -> bool {
        let expected = shape.iter().product::<usize>();
        if expected != got {
            self.fail(BuildError::DataLength {
                name: name.to_owned(),
                shape: shape.to_vec(),
                expected,
                got,
            });
            return false;
        }
        true
    }

    fn push_initializer(&mut self, name: &str, shape: &[usize], data_type: DataType, raw: Vec<u8>) {
        self.claim(name);
        self.graph.initializer.push(TensorProto {
            name: name.to_owned(),
            dims: shape.iter().map(|&d| d as i64).collect(),
            data_type: data_type as i32,
            raw_data: raw,
            ..Default::default()
        });
    }

    /// Adds a float32 constant tensor (little-endian `raw_data`); returns its name.
    pub fn initializer(&mut self, name: &str, shape: &[usize], data: Vec<f32>) -> String {
        if self.check_len(name, shape, data.len()) {
            let raw = data.iter().flat_map(|v| v.to_le_bytes()).collect();
            self.push_initializer(name, shape, DataType::FLOAT, raw);
        }
        name.to_owned()
    }

    /// Adds an int64 constant tensor; returns its name.
    pub fn initializer_i64(&mut self, name: &str, shape: &[usize], data: Vec<i64>) -> String {
        if self.check_len(name, shape, data.len()) {
            let raw = data.iter().flat_map(|v| v.to_le_bytes()).collect();
            self.push_initializer(name, shape, DataType::INT64, raw);
        }
        name.to_owned()
    }

    /// Adds a learned float32 tensor: an initializer that counts towards
    /// [`GraphBuilder::parameter_count`].
    pub fn parameter(&mut self, name: &str, shape: &[usize], data: Vec<f32>) -> String {
        self.parameters += shape.iter().product::<usize>() as u64;
        self.initializer(name, shape, data)
    }

    /// The number of learned values added so far.
    pub fn parameter_count(&self) -> u64 {
        self.parameters
    }

    /// A float32 scalar constant (rank 0), stored once per value.
    pub fn scalar(&mut self, value: f32) -> String {
        let key = format!("f32:{:08x}", value.to_bits());
        if let Some(name) = self.constants.get(&key) {
            return name.clone();
        }
        let name = self.fresh_name("const");
        self.initializer(&name, &[], vec![value]);
        self.constants.insert(key, name.clone());
        name
    }

    /// Adds a node with the given output names; returns them.
    pub fn node(
        &mut self,
        op_type: &str,
        inputs: &[&str],
        outputs: &[&str],
        attrs: Vec<Attr>,
    ) -> Vec<String> {
        for o in outputs {
            self.claim(o);
        }
        let node_name = format!("{op_type}_{}", self.graph.node.len());
        self.graph.node.push(NodeProto {
            name: node_name,
            op_type: op_type.to_owned(),
            input: inputs.iter().map(|s| (*s).to_owned()).collect(),
            output: outputs.iter().map(|s| (*s).to_owned()).collect(),
            attribute: attrs.into_iter().map(Attr::into_proto).collect(),
            ..Default::default()
        });
        outputs.iter().map(|s| (*s).to_owned()).collect()
    }

    /// Adds a single-output node whose output gets a fresh name; returns that name.
    pub fn node1(&mut self, op_type: &str, inputs: &[&str], attrs: Vec<Attr>) -> String {
        let out = self.fresh_name(&op_type.to_ascii_lowercase());
        self.node(op_type, inputs, &[&out], attrs);
        out
    }

    /// 2-D convolution with zero padding `pad` on every side and the kernel dilated by
    /// `dilation` (1: a plain convolution). `weights` are OIHW
    /// `[out_c, in_c, k, k]`, stored as `{prefix}.weight`; `bias` (`[out_c]`, or empty for none) as
    /// `{prefix}.bias`. Both count as parameters.
    #[allow(clippy::too_many_arguments)]
    pub fn conv2d(
        &mut self,
        x: &str,
        prefix: &str,
        in_c: usize,
        out_c: usize,
        k: usize,
        stride: usize,
        pad: usize,
        dilation: usize,
        weights: &[f32],
        bias: &[f32],
    ) -> String {
        let w = self.parameter(
            &format!("{prefix}.weight"),
            &[out_c, in_c, k, k],
            weights.to_vec(),
        );
        let mut inputs = vec![x, w.as_str()];
        let b;
        if !bias.is_empty() {
            b = self.parameter(&format!("{prefix}.bias"), &[out_c], bias.to_vec());
            inputs.push(b.as_str());
        }
        let (k, s, p, d) = (k as i64, stride as i64, pad as i64, dilation as i64);
        self.node1(
            "Conv",
            &inputs,
            vec![
                Attr::ints("kernel_shape", &[k, k]),
                Attr::ints("strides", &[s, s]),
                Attr::ints("pads", &[p, p, p, p]),
                Attr::ints("dilations", &[d, d]),
                Attr::int("group", 1),
            ],
        )
    }

    /// 2-D transposed convolution (PyTorch `ConvTranspose2d` semantics). `weights` are IOHW
    /// `[in_c, out_c, k, k]`, stored as `{prefix}.weight`; `bias` (`[out_c]`, or empty) as
    /// `{prefix}.bias`. With k=3, stride 2, padding 1, output_padding 1 it doubles H and W.
    #[allow(clippy::too_many_arguments)]
    pub fn conv_transpose2d(
        &mut self,
        x: &str,
        prefix: &str,
        in_c: usize,
        out_c: usize,
        k: usize,
        stride: usize,
        pad: usize,
        output_padding: usize,
        weights: &[f32],
        bias: &[f32],
    ) -> String {
        let w = self.parameter(
            &format!("{prefix}.weight"),
            &[in_c, out_c, k, k],
            weights.to_vec(),
        );
        let mut inputs = vec![x, w.as_str()];
        let b;
        if !bias.is_empty() {
            b = self.parameter(&format!("{prefix}.bias"), &[out_c], bias.to_vec());
            inputs.push(b.as_str());
        }
        let (k, s, p, op) = (k as i64, stride as i64, pad as i64, output_padding as i64);
        self.node1(
            "ConvTranspose",
            &inputs,
            vec![
                Attr::ints("kernel_shape", &[k, k]),
                Attr::ints("strides", &[s, s]),
                Attr::ints("pads", &[p, p, p, p]),
                Attr::ints("output_padding", &[op, op]),
                Attr::ints("dilations", &[1, 1]),
                Attr::int("group", 1),
            ],
        )
    }

    /// Instance normalisation without affine parameters (scale 1, bias 0 constants).
    pub fn instance_norm(&mut self, x: &str, channels: usize, eps: f32) -> String {
        let key = format!("in:{channels}");
        let (scale, bias) = match self.constants.get(&key) {
            Some(s) => (s.clone(), format!("{s}.zeros")),
            None => {
                let scale = self.fresh_name(&format!("ones{channels}"));
                let bias = format!("{scale}.zeros");
                self.initializer(&scale, &[channels], vec![1.0; channels]);
                self.initializer(&bias, &[channels], vec![0.0; channels]);
                self.constants.insert(key, scale.clone());
                (scale, bias)
            }
        };
        self.node1(
            "InstanceNormalization",
            &[x, &scale, &bias],
            vec![Attr::float("epsilon", eps)],
        )
    }

    /// `max(x, 0)`.
    pub fn relu(&mut self, x: &str) -> String {
        self.node1("Relu", &[x], vec![])
    }

    /// `tanh(x)`.
    pub fn tanh(&mut self, x: &str) -> String {
        self.node1("Tanh", &[x], vec![])
    }

    /// Elementwise `a + b` (with broadcasting).
    pub fn add(&mut self, a: &str, b: &str) -> String {
        self.node1("Add", &[a, b], vec![])
    }

    /// Elementwise `a * b` (with broadcasting).
    pub fn mul(&mut self, a: &str, b: &str) -> String {
        self.node1("Mul", &[a, b], vec![])
    }

    /// Elementwise `a - b` (with broadcasting).
    pub fn sub(&mut self, a: &str, b: &str) -> String {
        self.node1("Sub", &[a, b], vec![])
    }

    /// `x * s`.
    pub fn mul_scalar(&mut self, x: &str, s: f32) -> String {
        let c = self.scalar(s);
        self.node1("Mul", &[x, &c], vec![])
    }

    /// `x + s`.
    pub fn add_scalar(&mut self, x: &str, s: f32) -> String {
        let c = self.scalar(s);
        self.node1("Add", &[x, &c], vec![])
    }

    /// `x - s`.
    pub fn sub_scalar(&mut self, x: &str, s: f32) -> String {
        let c = self.scalar(s);
        self.node1("Sub", &[x, &c], vec![])
    }

    /// Reflection padding of `p` pixels on each side of H and W of an NCHW tensor
    /// (`Pad`, mode "reflect", `pads` as an int64 constant input).
    pub fn reflect_pad(&mut self, x: &str, p: usize) -> String {
        let key = format!("pads4:{p}");
        let pads = match self.constants.get(&key) {
            Some(n) => n.clone(),
            None => {
                let name = self.fresh_name(&format!("pads{p}"));
                let p = p as i64;
                self.initializer_i64(&name, &[8], vec![0, 0, p, p, 0, 0, p, p]);
                self.constants.insert(key, name.clone());
                name
            }
        };
        self.node1("Pad", &[x, &pads], vec![Attr::string("mode", "reflect")])
    }

    /// `SpaceToDepth`: `[N,C,H,W]` to `[N,C·b²,H/b,W/b]`.
    pub fn space_to_depth(&mut self, x: &str, blocksize: usize) -> String {
        self.node1(
            "SpaceToDepth",
            &[x],
            vec![Attr::int("blocksize", blocksize as i64)],
        )
    }

    /// `DepthToSpace` in "DCR" mode, the exact inverse of [`GraphBuilder::space_to_depth`].
    pub fn depth_to_space(&mut self, x: &str, blocksize: usize) -> String {
        self.node1(
            "DepthToSpace",
            &[x],
            vec![
                Attr::int("blocksize", blocksize as i64),
                Attr::string("mode", "DCR"),
            ],
        )
    }

    /// `DepthToSpace` in "CRD" mode: PyTorch's `pixel_shuffle`.
    pub fn pixel_shuffle(&mut self, x: &str, blocksize: usize) -> String {
        self.node1(
            "DepthToSpace",
            &[x],
            vec![
                Attr::int("blocksize", blocksize as i64),
                Attr::string("mode", "CRD"),
            ],
        )
    }

    /// Finishes the model: IR version to match `opset`, producer "derain", the default-domain
    /// opset import, and `card` as JSON in `metadata_props` under [`CARD_KEY`].
    pub fn finish(self, opset: i64, card: &ModelCard) -> Result<ModelProto, BuildError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        if opset < MIN_OPSET {
            return Err(BuildError::Opset(opset));
        }
        Ok(ModelProto {
            ir_version: ir_version_for_opset(opset),
            producer_name: "derain".to_owned(),
            producer_version: env!("CARGO_PKG_VERSION").to_owned(),
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: opset,
                ..Default::default()
            }],
            graph: MessageField::some(self.graph),
            metadata_props: vec![StringStringEntryProto {
                key: CARD_KEY.to_owned(),
                value: card.to_json(),
                ..Default::default()
            }],
            ..Default::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_length_mismatch_is_reported() {
        let mut g = GraphBuilder::new("g");
        g.initializer("w", &[2, 3], vec![0.0; 5]);
        match g.finish(DEFAULT_OPSET, &ModelCard::new("x")) {
            Err(BuildError::DataLength {
                expected: 6,
                got: 5,
                ..
            }) => {}
            other => panic!("expected a length error, got {other:?}"),
        }
    }

    #[test]
    fn duplicate_names_are_reported() {
        let mut g = GraphBuilder::new("g");
        let x = g.input("x", DataType::FLOAT, &[Dim::Fixed(1)]);
        g.node("Relu", &[&x], &["y"], vec![]);
        g.node("Relu", &[&x], &["y"], vec![]);
        assert!(matches!(
            g.finish(DEFAULT_OPSET, &ModelCard::new("x")),
            Err(BuildError::DuplicateName(n)) if n == "y"
        ));
    }

    #[test]
    fn old_opset_is_refused() {
        let g = GraphBuilder::new("g");
        assert!(matches!(
            g.finish(10, &ModelCard::new("x")),
            Err(BuildError::Opset(10))
        ));
    }

    #[test]
    fn finish_sets_header_and_card() {
        let mut g = GraphBuilder::new("g");
        let x = g.input("x", DataType::FLOAT, &[Dim::Symbolic("N"), Dim::Fixed(3)]);
        let a = g.mul_scalar(&x, 2.0);
        let b = g.add_scalar(&a, 2.0);
        let y = g.sub_scalar(&b, 2.0);
        g.node("Identity", &[&y], &["y"], vec![]);
        g.output("y", DataType::FLOAT, &[Dim::Symbolic("N"), Dim::Fixed(3)]);
        let mut card = ModelCard::new("t");
        card.multiple_of = 8;
        let model = g.finish(DEFAULT_OPSET, &card).expect("builds");
        let back =
            ModelProto::parse_from_bytes(&to_bytes(&model).expect("serialises")).expect("parses");
        assert_eq!(back.ir_version, 8);
        assert_eq!(back.producer_name, "derain");
        assert_eq!(back.opset_import.len(), 1);
        assert_eq!(back.opset_import[0].domain, "");
        assert_eq!(back.opset_import[0].version, 17);
        assert_eq!(back.metadata_props.len(), 1);
        assert_eq!(back.metadata_props[0].key, CARD_KEY);
        assert_eq!(
            ModelCard::from_json(&back.metadata_props[0].value).expect("card parses"),
            card
        );
        // The scalar 2.0 is stored once.
        assert_eq!(back.graph.initializer.len(), 1);
        assert_eq!(back.graph.node.len(), 4);
    }

    /// Reflect padding pads H and W only, and depth_to_space undoes space_to_depth.
    #[test]
    fn pad_and_depth_space_run_in_ort() {
        use crate::onnx::testing::{ort_session, run_f32};
        use derain_core::card::{INPUT_NAME, OUTPUT_NAME};

        let nchw = [
            Dim::Symbolic("N"),
            Dim::Fixed(3),
            Dim::Symbolic("H"),
            Dim::Symbolic("W"),
        ];
        let mut g = GraphBuilder::new("g");
        let x = g.input(INPUT_NAME, DataType::FLOAT, &nchw);
        let p = g.reflect_pad(&x, 1);
        let d = g.space_to_depth(&p, 2);
        let s = g.depth_to_space(&d, 2);
        g.node("Identity", &[&s], &[OUTPUT_NAME], vec![]);
        g.output(OUTPUT_NAME, DataType::FLOAT, &nchw);
        let bytes = to_bytes(&g.finish(DEFAULT_OPSET, &ModelCard::new("t")).unwrap()).unwrap();
        let Some(mut session) = ort_session(&bytes) else {
            return;
        };

        let (c, h, w) = (3, 2, 4);
        let x: Vec<f32> = (0..c * h * w).map(|i| i as f32).collect();
        let (shape, y) = run_f32(&mut session, [1, c, h, w], &x);
        assert_eq!(shape, [1, c, h + 2, w + 2]);
        // Reflection: padded index -1 maps to 1, index n maps to n-2.
        let src = |i: isize, n: usize| -> usize {
            if i < 0 {
                (-i) as usize
            } else if i as usize >= n {
                2 * n - 2 - i as usize
            } else {
                i as usize
            }
        };
        for ch in 0..c {
            for r in 0..h + 2 {
                for col in 0..w + 2 {
                    let want = x[(ch * h + src(r as isize - 1, h)) * w + src(col as isize - 1, w)];
                    assert_eq!(
                        y[(ch * (h + 2) + r) * (w + 2) + col],
                        want,
                        "at {ch},{r},{col}"
                    );
                }
            }
        }
    }

    #[test]
    fn ir_versions_follow_onnx_table() {
        assert_eq!(ir_version_for_opset(11), 8);
        assert_eq!(ir_version_for_opset(17), 8);
        assert_eq!(ir_version_for_opset(19), 9);
        assert_eq!(ir_version_for_opset(21), 10);
        assert_eq!(ir_version_for_opset(23), 11);
    }
}
