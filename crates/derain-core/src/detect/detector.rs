//! A detector ready to run: an ONNX Runtime session (on the provider [`crate::runtime`] chooses),
//! its input size, its output layout and its pre-processing, found once when it is built.
//!
//! Building runs the network once on a blank (all padding) input: that warms the session up, shows
//! the real output shape even for models with dynamic dimensions, and lets the layout be
//! recognised ([`layout::infer_layout`]) or checked ([`layout::check_layout`]) before the first
//! frame, so a detector that fits no layout fails at start-up with its shape named.

use std::path::Path;

use ort::value::{TensorElementType, TensorRef, ValueType};
use sha2::{Digest, Sha256};

use super::layout::{self, Layout, LayoutError};
use super::letterbox::{ChannelOrder, ImageView, InputRange, Letterbox, Padding, Preprocess};
use super::nms::nms;
use super::{Detection, PostProcess};
use crate::runtime::{OpenSession, Provider, RuntimeError, SessionOptions};

/// The input size used when the model leaves H and W dynamic and none is given.
pub const DEFAULT_INPUT_SIZE: usize = 640;
/// The largest input side accepted (detectors run at 320 to 1280).
pub const MAX_INPUT_SIDE: usize = 8192;

/// Choices that override what the detector's shape and layout imply; `None` means "as the model
/// and its layout say".
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DetectorConfig {
    /// The output layout; `None` recognises it (see [`layout`]).
    pub layout: Option<Layout>,
    /// Input `(height, width)` for models whose H and W are dynamic ([`DEFAULT_INPUT_SIZE`]
    /// square otherwise); a model with a fixed size must be given that size or nothing.
    pub input_size: Option<(usize, usize)>,
    pub channel_order: Option<ChannelOrder>,
    pub input_range: Option<InputRange>,
    pub padding: Option<Padding>,
    pub pad_value: Option<u8>,
}

/// What went wrong while loading or running a detector. Every message names the detector.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    #[error("cannot read detector file '{path}': {source}. Check the path (the `model` setting)")]
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(
        "detector '{origin}' {problem}. A detector takes one float32 image input [1,3,H,W] and \
         gives a YOLOX, YOLOv5 or YOLOv8 output"
    )]
    Model { origin: String, problem: String },
    #[error(
        "detector '{origin}': {source}. Use a detector with one of these layouts, or set the \
         layout explicitly if it was recognised wrongly"
    )]
    Layout {
        origin: String,
        #[source]
        source: LayoutError,
    },
    #[error("detection failed on detector '{origin}': {reason}")]
    Run { origin: String, reason: String },
}

/// A YOLO-family detector on one ONNX Runtime session.
pub struct Detector {
    session: OpenSession,
    origin: String,
    input_name: String,
    output_name: String,
    input_h: usize,
    input_w: usize,
    layout: Layout,
    output_shape: Vec<usize>,
    preprocess: Preprocess,
    tensor: Vec<f32>,
}

impl std::fmt::Debug for Detector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Detector")
            .field("origin", &self.origin)
            .field("provider", &self.session.provider())
            .field("input", &(self.input_h, self.input_w))
            .field("layout", &self.layout)
            .field("output_shape", &self.output_shape)
            .field("preprocess", &self.preprocess)
            .finish()
    }
}

impl Detector {
    /// Loads the detector at `path` (see [`Detector::from_bytes`]).
    pub fn from_path(
        path: &Path,
        options: &SessionOptions,
        config: &DetectorConfig,
    ) -> Result<Self, DetectError> {
        let bytes = std::fs::read(path).map_err(|source| DetectError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_bytes(&bytes, &path.display().to_string(), options, config)
    }

    /// Builds the session, reads the input size, runs the warm-up and settles the layout and the
    /// pre-processing. `origin` names the model in messages.
    pub fn from_bytes(
        bytes: &[u8],
        origin: &str,
        options: &SessionOptions,
        config: &DetectorConfig,
    ) -> Result<Self, DetectError> {
        let model_err = |problem: String| DetectError::Model {
            origin: origin.to_owned(),
            problem,
        };
        let sha256 = format!("{:x}", Sha256::digest(bytes));
        let mut session = OpenSession::new(bytes, origin, &sha256, options)?;
        let (input_name, dims) = {
            let inputs = session.session().inputs();
            let [input] = inputs else {
                return Err(model_err(format!(
                    "has {} inputs where one image input was expected",
                    inputs.len()
                )));
            };
            let dims: Vec<i64> = match input.dtype() {
                ValueType::Tensor {
                    ty: TensorElementType::Float32,
                    shape,
                    ..
                } => shape.iter().copied().collect(),
                other => {
                    return Err(model_err(format!(
                        "has input '{}' of type {other}, not a float32 tensor",
                        input.name()
                    )));
                }
            };
            (input.name().to_owned(), dims)
        };
        let fixed = |d: i64| (d > 0).then_some(d as usize);
        let (input_h, input_w) = match dims[..] {
            [n, c, h, w] if n <= 1 && (c == 3 || c < 0) => match (fixed(h), fixed(w)) {
                (Some(h), Some(w)) => {
                    if let Some(asked) = config.input_size.filter(|&s| s != (h, w)) {
                        return Err(model_err(format!(
                            "only takes {w}x{h} inputs, not the {}x{} asked for",
                            asked.1, asked.0
                        )));
                    }
                    (h, w)
                }
                _ => config
                    .input_size
                    .unwrap_or((DEFAULT_INPUT_SIZE, DEFAULT_INPUT_SIZE)),
            },
            _ => {
                return Err(model_err(format!(
                    "has input '{input_name}' of shape {dims:?}, not [1,3,H,W]"
                )));
            }
        };
        if input_h == 0 || input_w == 0 {
            return Err(model_err("was given an empty input size".into()));
        }
        // A corrupt file can declare any size; the input tensor is allocated from it.
        if input_h > MAX_INPUT_SIDE || input_w > MAX_INPUT_SIDE {
            return Err(model_err(format!(
                "declares a {input_w}x{input_h} input, larger than {MAX_INPUT_SIDE} on a side"
            )));
        }
        let Some(output_name) = session
            .session()
            .outputs()
            .first()
            .map(|o| o.name().to_owned())
        else {
            return Err(model_err("has no outputs".into()));
        };

        let mut detector = Self {
            session,
            origin: origin.to_owned(),
            input_name,
            output_name,
            input_h,
            input_w,
            // Settled below, after the warm-up.
            layout: Layout::Yolox,
            output_shape: Vec::new(),
            preprocess: Preprocess::for_layout(Layout::Yolox),
            tensor: Vec::new(),
        };
        // Warm-up on plain padding grey (its range does not matter for the shape).
        detector.tensor.resize(
            3 * input_h * input_w,
            f32::from(config.pad_value.unwrap_or(114)),
        );
        let found = detector.infer(|shape, data| match config.layout {
            Some(l) => {
                layout::check_layout(l, shape, input_h, input_w).map(|()| (l, shape.to_vec()))
            }
            None => {
                layout::infer_layout(shape, data, input_h, input_w).map(|l| (l, shape.to_vec()))
            }
        })?;
        let (layout, output_shape) = found.map_err(|source| DetectError::Layout {
            origin: origin.to_owned(),
            source,
        })?;
        let defaults = Preprocess::for_layout(layout);
        detector.layout = layout;
        detector.output_shape = output_shape;
        detector.preprocess = Preprocess {
            order: config.channel_order.unwrap_or(defaults.order),
            range: config.input_range.unwrap_or(defaults.range),
            padding: config.padding.unwrap_or(defaults.padding),
            pad_value: config.pad_value.unwrap_or(defaults.pad_value),
        };
        log::info!(
            "detector '{origin}': {input_w}x{input_h} input, {layout} layout, output {:?} \
             ({} classes), {:?}",
            detector.output_shape,
            detector.num_classes(),
            detector.preprocess
        );
        Ok(detector)
    }

    /// The provider that really runs the network (never `Auto`).
    pub fn provider(&self) -> Provider {
        self.session.provider()
    }

    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// The network's input `(height, width)`.
    pub fn input_size(&self) -> (usize, usize) {
        (self.input_h, self.input_w)
    }

    pub fn output_shape(&self) -> &[usize] {
        &self.output_shape
    }

    pub fn num_classes(&self) -> usize {
        layout::num_classes(self.layout, &self.output_shape)
    }

    pub fn preprocess(&self) -> &Preprocess {
        &self.preprocess
    }

    /// Runs the network on the current input tensor and hands the output's shape and values to
    /// `consume` without copying them.
    fn infer<R>(&mut self, consume: impl FnOnce(&[usize], &[f32]) -> R) -> Result<R, DetectError> {
        let run_err = |reason: String| DetectError::Run {
            origin: self.origin.clone(),
            reason,
        };
        let shape = [1, 3, self.input_h, self.input_w];
        let input = TensorRef::from_array_view((shape, self.tensor.as_slice()))
            .map_err(|e| run_err(e.to_string()))?;
        let outputs = self
            .session
            .session()
            .run(ort::inputs![self.input_name.as_str() => input])
            .map_err(|e| run_err(e.to_string()))?;
        let (shape, data) = outputs[self.output_name.as_str()]
            .try_extract_tensor::<f32>()
            .map_err(|e| run_err(format!("output '{}': {e}", self.output_name)))?;
        let shape: Vec<usize> = shape.iter().map(|&d| d.max(0) as usize).collect();
        Ok(consume(&shape, data))
    }

    /// Detects objects in one frame: boxes in frame pixels, best first, after the score
    /// threshold, the class filter, the region of interest and per-class NMS.
    pub fn detect(
        &mut self,
        img: &ImageView<'_>,
        post: &PostProcess,
    ) -> Result<Vec<Detection>, DetectError> {
        if !img.is_valid() {
            return Err(DetectError::Run {
                origin: self.origin.clone(),
                reason: format!(
                    "the {}x{} frame's buffer ({} bytes, stride {}) is smaller than its size says",
                    img.width,
                    img.height,
                    img.data.len(),
                    img.stride
                ),
            });
        }
        let lb = Letterbox::new(
            img.width,
            img.height,
            self.input_w,
            self.input_h,
            self.preprocess.padding,
        );
        let mut tensor = std::mem::take(&mut self.tensor);
        lb.fill(img, &self.preprocess, &mut tensor);
        self.tensor = tensor;
        let (layout, h, w) = (self.layout, self.input_h, self.input_w);
        let decoded = self
            .infer(|shape, data| layout::decode(layout, shape, data, h, w, post.score_threshold))?
            .map_err(|source| DetectError::Layout {
                origin: self.origin.clone(),
                source,
            })?;
        let kept: Vec<Detection> = decoded
            .iter()
            .filter(|d| {
                post.classes
                    .as_ref()
                    .is_none_or(|c| c.contains(&d.class_id))
            })
            .map(|d| lb.to_frame(d))
            .filter(|d| d.area() > 0.0)
            .filter(|d| {
                post.roi
                    .is_none_or(|r| r.keeps(d, post.roi_anchor, img.width, img.height))
            })
            .collect();
        Ok(nms(kept, post.iou_threshold, post.max_detections))
    }
}
