//! Loading a generator: read the ONNX file, check it honours the model contract
//! (docs/ARCHITECTURE.md, The model contract), and read its card. Everything here runs before ONNX
//! Runtime sees the model, so a bad file is reported with its name and what to do about it rather
//! than as a runtime failure.

use std::fmt;
use std::path::{Path, PathBuf};

use onnx_protobuf::{Message, ModelProto, ValueInfoProto, tensor_shape_proto, type_proto};
use sha2::{Digest, Sha256};

use crate::card::{CARD_KEY, INPUT_NAME, ModelCard, OUTPUT_NAME};

/// ONNX's element type code for float32 (`TensorProto.DataType.FLOAT`).
const ONNX_FLOAT: i32 = 1;
/// The largest `multiple_of` we accept; larger values are almost certainly a corrupt card.
const MAX_MULTIPLE_OF: u32 = 1024;

/// What went wrong with a model file. Every message names the model and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("cannot read model file '{path}': {source}. Check the path (the `model` setting).")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("model '{origin}' is empty (0 bytes); the file was probably truncated while copying")]
    Empty { origin: String },
    #[error(
        "model '{origin}' is not a valid ONNX file ({reason}); it may be truncated or not a model \
         at all: export it again with `derain export`"
    )]
    NotOnnx { origin: String, reason: String },
    #[error(
        "model '{origin}' has an invalid {what}: {problem}. A deraining generator takes float32 \
         input '{INPUT_NAME}' [N,3,H,W] and gives float32 output '{OUTPUT_NAME}' [N,3,H,W]; \
         re-export it with those names and shapes"
    )]
    Contract {
        origin: String,
        what: &'static str,
        problem: String,
    },
    #[error(
        "model '{origin}' carries a malformed model card under '{CARD_KEY}': {reason}. Fix the \
         JSON in the file's metadata_props or export it again"
    )]
    Card { origin: String, reason: String },
}

/// One dimension of a tensor as declared in the graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dim {
    Fixed(i64),
    Dynamic,
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Fixed(v) => write!(f, "{v}"),
            Dim::Dynamic => f.write_str("?"),
        }
    }
}

/// A validated generator: the ONNX bytes, its card and where it came from.
#[derive(Debug, Clone)]
pub struct Model {
    origin: String,
    bytes: Vec<u8>,
    card: ModelCard,
    card_present: bool,
    input_dims: [Dim; 4],
    sha256: String,
}

impl Model {
    /// Reads and validates the model at `path`.
    pub fn from_path(path: impl AsRef<Path>) -> Result<Self, ModelError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| ModelError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_bytes(bytes, path.display().to_string())
    }

    /// Validates a model held in memory; `origin` names it in messages (a path or `<embedded>`).
    pub fn from_bytes(bytes: Vec<u8>, origin: impl Into<String>) -> Result<Self, ModelError> {
        let origin = origin.into();
        if bytes.is_empty() {
            return Err(ModelError::Empty { origin });
        }
        let proto = ModelProto::parse_from_bytes(&bytes).map_err(|e| ModelError::NotOnnx {
            origin: origin.clone(),
            reason: e.to_string(),
        })?;
        let contract = |what: &'static str, problem: String| ModelError::Contract {
            origin: origin.clone(),
            what,
            problem,
        };
        let Some(graph) = proto.graph.as_ref() else {
            return Err(ModelError::NotOnnx {
                origin,
                reason: "it has no graph".into(),
            });
        };
        if graph.node.is_empty() {
            return Err(ModelError::NotOnnx {
                origin,
                reason: "its graph has no nodes".into(),
            });
        }
        // Older IR versions list initializers among the inputs; those are weights, not inputs.
        let inputs: Vec<&ValueInfoProto> = graph
            .input
            .iter()
            .filter(|i| !graph.initializer.iter().any(|t| t.name == i.name))
            .collect();
        let input = match inputs.as_slice() {
            [one] => *one,
            _ => {
                let names: Vec<&str> = inputs.iter().map(|i| i.name.as_str()).collect();
                return Err(contract(
                    "input",
                    format!("expected exactly one input, found {names:?}"),
                ));
            }
        };
        let output = match graph.output.as_slice() {
            [one] => one,
            outs => {
                let names: Vec<&str> = outs.iter().map(|o| o.name.as_str()).collect();
                return Err(contract(
                    "output",
                    format!("expected exactly one output, found {names:?}"),
                ));
            }
        };
        let input_dims = check_io(input, INPUT_NAME).map_err(|p| contract("input", p))?;
        check_io(output, OUTPUT_NAME).map_err(|p| contract("output", p))?;

        let card_text = proto
            .metadata_props
            .iter()
            .find(|p| p.key == CARD_KEY)
            .map(|p| p.value.clone());
        let card_present = card_text.is_some();
        let card = match card_text {
            Some(text) => ModelCard::from_json(&text).map_err(|e| ModelError::Card {
                origin: origin.clone(),
                reason: e.to_string(),
            })?,
            None => {
                log::warn!(
                    "model '{origin}' has no model card ('{CARD_KEY}' in metadata_props); \
                     assuming it takes any frame size (multiple_of 1)"
                );
                ModelCard::new(default_name(&origin))
            }
        };
        if card.multiple_of == 0 || card.multiple_of > MAX_MULTIPLE_OF {
            return Err(ModelError::Card {
                origin,
                reason: format!(
                    "multiple_of is {}, expected 1 to {MAX_MULTIPLE_OF}",
                    card.multiple_of
                ),
            });
        }
        if card.frames != 1 {
            return Err(ModelError::Card {
                origin,
                reason: format!(
                    "the card asks for {} consecutive frames per inference; this version runs \
                     single-frame models only (frames 1), and will not run it on one frame",
                    card.frames
                ),
            });
        }
        let sha256 = hex(&Sha256::digest(&bytes));
        Ok(Self {
            origin,
            bytes,
            card,
            card_present,
            input_dims,
            sha256,
        })
    }

    /// Where the model came from (a path, or a name for embedded bytes).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The ONNX file's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The model card (a default one when the file carries none; see [`Model::has_card`]).
    pub fn card(&self) -> &ModelCard {
        &self.card
    }

    /// Whether the file carried its own card.
    pub fn has_card(&self) -> bool {
        self.card_present
    }

    /// H and W must be multiples of this.
    pub fn multiple_of(&self) -> u32 {
        self.card.multiple_of
    }

    /// The input dimensions as declared: N, C, H, W.
    pub fn input_dims(&self) -> [Dim; 4] {
        self.input_dims
    }

    /// Hex SHA-256 of the file, used to key caches (TensorRT engines).
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// Checks that a frame of `width`×`height` can be fed to this model (after padding to
    /// `multiple_of`); the error says why not.
    pub fn check_frame_size(&self, width: usize, height: usize) -> Result<(), String> {
        if width == 0 || height == 0 {
            return Err(format!("frame size {width}x{height} is empty"));
        }
        let (hp, wp) = crate::frame::padded_size(height, width, self.multiple_of());
        for (dim, got, what) in [
            (self.input_dims[2], hp, "height"),
            (self.input_dims[3], wp, "width"),
        ] {
            if let Dim::Fixed(v) = dim
                && v != got as i64
            {
                return Err(format!(
                    "model '{}' only takes input {what} {v} but the frame needs {got}; use a model \
                     exported with dynamic H and W",
                    self.origin
                ));
            }
        }
        Ok(())
    }
}

/// Checks one graph input/output against the contract; returns its dimensions.
fn check_io(info: &ValueInfoProto, expected_name: &str) -> Result<[Dim; 4], String> {
    if info.name != expected_name {
        return Err(format!(
            "it is named '{}', expected '{expected_name}'",
            info.name
        ));
    }
    let tensor = match info.type_.as_ref().and_then(|t| t.value.as_ref()) {
        Some(type_proto::Value::TensorType(t)) => t,
        _ => return Err(format!("'{}' is not a tensor", info.name)),
    };
    if tensor.elem_type != ONNX_FLOAT {
        return Err(format!(
            "'{}' has element type {} ({}), expected float32",
            info.name,
            tensor.elem_type,
            elem_type_name(tensor.elem_type)
        ));
    }
    let Some(shape) = tensor.shape.as_ref() else {
        return Err(format!("'{}' has no declared shape", info.name));
    };
    let dims: Vec<Dim> = shape
        .dim
        .iter()
        .map(|d| match d.value {
            Some(tensor_shape_proto::dimension::Value::DimValue(v)) if v > 0 => Dim::Fixed(v),
            _ => Dim::Dynamic,
        })
        .collect();
    let [n, c, h, w] = dims.as_slice() else {
        let shown: Vec<String> = dims.iter().map(Dim::to_string).collect();
        return Err(format!(
            "'{}' has rank {} [{}], expected rank 4 [N,3,H,W]",
            info.name,
            dims.len(),
            shown.join(",")
        ));
    };
    if let Dim::Fixed(c) = c
        && *c != 3
    {
        return Err(format!(
            "'{}' has {c} channels, expected 3 (RGB)",
            info.name
        ));
    }
    if let Dim::Fixed(n) = n
        && *n != 1
    {
        return Err(format!(
            "'{}' has a fixed batch of {n}, expected 1 or dynamic",
            info.name
        ));
    }
    Ok([*n, *c, *h, *w])
}

fn elem_type_name(code: i32) -> &'static str {
    match code {
        1 => "float32",
        2 => "uint8",
        3 => "int8",
        6 => "int32",
        7 => "int64",
        10 => "float16",
        11 => "float64",
        16 => "bfloat16",
        _ => "other",
    }
}

fn default_name(origin: &str) -> String {
    Path::new(origin)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| origin.to_string())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
