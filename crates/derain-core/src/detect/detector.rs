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

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::detect::{Roi, RoiAnchor};
    use crate::onnx::fixtures::constant_detector;

    /// The fixtures' input is 64x64: 8x8 + 4x4 + 2x2 = 84 grid cells.
    const G: usize = 84;

    fn cpu() -> SessionOptions {
        SessionOptions {
            provider: Provider::Cpu,
            ..SessionOptions::default()
        }
    }

    /// A detector for `bytes`, or `None` (after a notice) without ONNX Runtime.
    fn load(bytes: &[u8], config: &DetectorConfig) -> Option<Result<Detector, DetectError>> {
        if let Err(e) = crate::runtime::init_ort(None) {
            eprintln!("skipping: {e}");
            return None;
        }
        Some(Detector::from_bytes(bytes, "fixture", &cpu(), config))
    }

    /// A 128x64 grey frame: letterboxed into 64x64 at r = 0.5.
    fn frame() -> Vec<u8> {
        vec![90; 128 * 64 * 3]
    }

    fn assert_dets(got: &[Detection], want: &[([f32; 4], f32, usize)]) {
        assert_eq!(got.len(), want.len(), "{got:?}");
        for (g, (b, score, class_id)) in got.iter().zip(want) {
            let gb = [g.x1, g.y1, g.x2, g.y2];
            assert!(
                gb.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-3),
                "box {gb:?}, want {b:?}"
            );
            assert!(
                (g.score - score).abs() < 1e-5,
                "score {} vs {score}",
                g.score
            );
            assert_eq!(g.class_id, *class_id);
        }
    }

    fn yolox_rows() -> Vec<f32> {
        let mut v = vec![0.0_f32; G * 7];
        let mut set = |row: usize, r: [f32; 7]| v[row * 7..row * 7 + 7].copy_from_slice(&r);
        let ln2 = 2.0_f32.ln();
        set(0, [0.5, 0.5, 0.0, 0.0, 0.1, 0.9, 0.0]); // score 0.09: below the threshold
        // Stride 8, (gx 3, gy 2): input [20,16,36,24], class 1, 0.72.
        set(19, [0.5, 0.5, ln2, 0.0, 0.9, 0.1, 0.8]);
        // Stride 8, (gx 4, gy 2): input [24,16,40,24], class 1, 0.6; IoU 0.6 with row 19.
        set(20, [0.0, 0.5, ln2, 0.0, 0.8, 0.2, 0.75]);
        // Stride 16, (1,1): input [16,16,32,32], class 0, 0.45: overlaps row 19, other class.
        set(64 + 5, [0.5, 0.5, 0.0, 0.0, 0.5, 0.9, 0.1]);
        // Stride 32, (1,1): input [48,16,80,48], class 0, 0.3: partly in the padding and past
        // the input's right edge.
        set(80 + 3, [1.0, 0.0, 0.0, 0.0, 0.6, 0.5, 0.0]);
        v
    }

    #[test]
    fn yolox_fixture_decodes_letterboxes_and_suppresses() {
        let bytes = constant_detector(Some((64, 64)), &[1, G, 7], yolox_rows());
        let Some(d) = load(&bytes, &DetectorConfig::default()) else {
            return;
        };
        let mut d = d.expect("detector loads");
        assert_eq!(d.layout(), Layout::Yolox);
        assert_eq!((d.input_size(), d.num_classes()), ((64, 64), 2));
        assert_eq!(*d.preprocess(), Preprocess::for_layout(Layout::Yolox));
        let px = frame();
        let img = ImageView::rgb(&px, 128, 64);
        let got = d.detect(&img, &PostProcess::default()).expect("runs");
        // Frame = input / 0.5, clipped to the 128x64 frame.
        assert_dets(
            &got,
            &[
                ([40.0, 32.0, 72.0, 48.0], 0.72, 1),
                ([32.0, 32.0, 64.0, 64.0], 0.45, 0),
                ([96.0, 32.0, 128.0, 64.0], 0.3, 0),
            ],
        );
        // Class filter, region of interest (left half, by bottom centre), a higher threshold.
        let post = PostProcess {
            classes: Some(BTreeSet::from([0])),
            roi: Some(Roi {
                x1: 0.0,
                y1: 0.0,
                x2: 0.5,
                y2: 1.0,
            }),
            ..PostProcess::default()
        };
        let got = d.detect(&img, &post).expect("runs");
        assert_dets(&got, &[([32.0, 32.0, 64.0, 64.0], 0.45, 0)]);
        let post = PostProcess {
            score_threshold: 0.5,
            ..PostProcess::default()
        };
        assert_eq!(d.detect(&img, &post).expect("runs").len(), 1);
        // Without NMS suppression (IoU threshold 1) row 20 survives.
        let post = PostProcess {
            iou_threshold: 1.0,
            ..PostProcess::default()
        };
        assert_eq!(d.detect(&img, &post).expect("runs").len(), 4);
    }

    #[test]
    fn yolov5_fixture_decodes_with_centred_letterbox() {
        let mut v = vec![0.0_f32; 3 * G * 7];
        let mut set = |row: usize, r: [f32; 7]| v[row * 7..row * 7 + 7].copy_from_slice(&r);
        set(0, [32.0, 32.0, 16.0, 8.0, 0.9, 0.1, 0.8]);
        set(100, [34.0, 32.0, 16.0, 8.0, 0.8, 0.2, 0.75]); // IoU 0.78 with row 0: suppressed
        set(251, [10.0, 20.0, 4.0, 4.0, 1.0, 0.3, 0.0]);
        // Dynamic input size: the configured 64x64 is used.
        let bytes = constant_detector(None, &[1, 3 * G, 7], v);
        let config = DetectorConfig {
            input_size: Some((64, 64)),
            ..DetectorConfig::default()
        };
        let Some(d) = load(&bytes, &config) else {
            return;
        };
        let mut d = d.expect("detector loads");
        assert_eq!(d.layout(), Layout::Yolov5);
        assert_eq!(d.input_size(), (64, 64));
        let px = frame();
        let got = d
            .detect(&ImageView::rgb(&px, 128, 64), &PostProcess::default())
            .expect("runs");
        // Centred: 64x32 image at top padding 16; frame = (x/0.5, (y-16)/0.5).
        assert_dets(
            &got,
            &[
                ([48.0, 24.0, 80.0, 40.0], 0.72, 1),
                ([16.0, 4.0, 24.0, 12.0], 0.3, 0),
            ],
        );
    }

    #[test]
    fn yolov8_fixture_decodes_transposed_columns() {
        let mut v = vec![0.0_f32; 6 * G];
        let mut col = |i: usize, c: [f32; 6]| {
            for (row, x) in c.into_iter().enumerate() {
                v[row * G + i] = x;
            }
        };
        col(5, [32.0, 32.0, 16.0, 8.0, 0.7, 0.1]);
        col(6, [32.0, 33.0, 16.0, 8.0, 0.6, 0.2]); // same class, overlapping: suppressed
        col(7, [32.0, 33.0, 16.0, 8.0, 0.1, 0.5]); // other class: kept
        let bytes = constant_detector(Some((64, 64)), &[1, 6, G], v);
        let Some(d) = load(&bytes, &DetectorConfig::default()) else {
            return;
        };
        let mut d = d.expect("detector loads");
        assert_eq!((d.layout(), d.num_classes()), (Layout::Yolov8, 2));
        let px = frame();
        let got = d
            .detect(&ImageView::rgb(&px, 128, 64), &PostProcess::default())
            .expect("runs");
        assert_dets(
            &got,
            &[
                ([48.0, 24.0, 80.0, 40.0], 0.7, 0),
                ([48.0, 26.0, 80.0, 42.0], 0.5, 1),
            ],
        );
    }

    #[test]
    fn grid_sized_output_with_decoded_centres_is_yolov5() {
        // YOLOX exported with its decoding inside the graph: centres in pixels.
        let mut v = vec![0.0_f32; G * 7];
        v[(G - 1) * 7] = 48.0;
        let bytes = constant_detector(Some((64, 64)), &[1, G, 7], v.clone());
        let Some(d) = load(&bytes, &DetectorConfig::default()) else {
            return;
        };
        assert_eq!(d.expect("loads").layout(), Layout::Yolov5);
        // And the choice can be forced.
        let forced = DetectorConfig {
            layout: Some(Layout::Yolox),
            channel_order: Some(ChannelOrder::Rgb),
            ..DetectorConfig::default()
        };
        let d = Detector::from_bytes(&bytes, "fixture", &cpu(), &forced).expect("loads");
        assert_eq!(d.layout(), Layout::Yolox);
        assert_eq!(d.preprocess().order, ChannelOrder::Rgb);
        assert_eq!(d.preprocess().range, InputRange::Byte);
    }

    #[test]
    fn wrong_layout_names_its_shape_and_the_accepted_ones() {
        let bytes = constant_detector(Some((64, 64)), &[1, 7, 3], vec![0.0; 21]);
        let Some(r) = load(&bytes, &DetectorConfig::default()) else {
            return;
        };
        let msg = r.expect_err("no layout fits").to_string();
        for want in [
            "fixture",
            "[1, 7, 3]",
            "YOLOX [1, 84, 5+C]",
            "YOLOv5",
            "YOLOv8 [1, 4+C, A]",
        ] {
            assert!(msg.contains(want), "'{want}' missing from: {msg}");
        }
        // A forced layout that does not fit says so.
        let bytes = constant_detector(Some((64, 64)), &[1, 3 * G, 7], vec![0.0; 3 * G * 7]);
        let config = DetectorConfig {
            layout: Some(Layout::Yolox),
            ..DetectorConfig::default()
        };
        let msg = Detector::from_bytes(&bytes, "fixture", &cpu(), &config)
            .expect_err("not YOLOX")
            .to_string();
        assert!(
            msg.contains("[1, 252, 7]") && msg.contains("yolox layout"),
            "{msg}"
        );
    }

    #[test]
    fn bad_inputs_are_refused_with_a_reason() {
        let bytes = constant_detector(Some((64, 64)), &[1, G, 7], vec![0.0; G * 7]);
        let config = DetectorConfig {
            input_size: Some((32, 32)),
            ..DetectorConfig::default()
        };
        let Some(r) = load(&bytes, &config) else {
            return;
        };
        let msg = r.expect_err("fixed size").to_string();
        assert!(msg.contains("only takes 64x64"), "{msg}");
        let err = Detector::from_path(Path::new("/no/such/detector.onnx"), &cpu(), &config)
            .expect_err("missing file");
        assert!(err.to_string().contains("/no/such/detector.onnx"), "{err}");
        // A frame buffer too small for its size is an error, not a panic.
        let mut d = Detector::from_bytes(&bytes, "fixture", &cpu(), &DetectorConfig::default())
            .expect("loads");
        let px = vec![0u8; 10];
        let err = d
            .detect(&ImageView::rgb(&px, 128, 64), &PostProcess::default())
            .expect_err("short buffer");
        assert!(err.to_string().contains("smaller"), "{err}");
        // A file declaring an absurd input size is refused before anything is allocated for it
        // (it used to overflow or abort on a 120 GB input tensor).
        let huge = constant_detector(Some((100_000, 100_000)), &[1, G, 7], vec![0.0; G * 7]);
        let err = Detector::from_bytes(&huge, "huge", &cpu(), &DetectorConfig::default())
            .expect_err("absurd input size");
        assert!(err.to_string().contains("100000x100000"), "{err}");
    }

    /// The shared YOLOX-Nano on the data README's still: both cars, at the reference boxes.
    #[test]
    fn yolox_nano_finds_the_two_cars_in_test1() {
        let (Some(model), Some(still)) = (
            crate::data::shared_path("models/yolox_nano_416.onnx"),
            crate::data::shared_path("clean-driving/udacity/stills/test1.jpg"),
        ) else {
            eprintln!(
                "skipping: ../shared/data/models/yolox_nano_416.onnx or \
                 clean-driving/udacity/stills/test1.jpg is absent"
            );
            return;
        };
        if let Err(e) = crate::runtime::init_ort(None) {
            eprintln!("skipping: {e}");
            return;
        }
        let mut d = Detector::from_path(&model, &cpu(), &DetectorConfig::default()).expect("loads");
        assert_eq!(d.layout(), Layout::Yolox);
        assert_eq!(
            (d.input_size(), d.output_shape()),
            ((416, 416), &[1, 3549, 85][..])
        );
        let img = crate::imageio::load_rgb(&still).expect("test1.jpg");
        let (w, h) = (img.width() as usize, img.height() as usize);
        let post = PostProcess {
            classes: Some(BTreeSet::from([2])),
            ..PostProcess::default()
        };
        let cars = d
            .detect(&ImageView::rgb(img.as_raw(), w, h), &post)
            .expect("runs");
        for reference in [[1051.0, 404.0, 1274.0, 509.0], [814.0, 407.0, 943.0, 493.0]] {
            let r = Detection {
                x1: reference[0],
                y1: reference[1],
                x2: reference[2],
                y2: reference[3],
                score: 1.0,
                class_id: 2,
            };
            let best = cars
                .iter()
                .map(|c| (crate::detect::nms::iou(c, &r), c))
                .max_by(|a, b| a.0.total_cmp(&b.0))
                .expect("a car found");
            eprintln!(
                "reference {reference:?}: IoU {:.3} with {:?}",
                best.0, best.1
            );
            assert!(best.0 >= 0.7, "car {reference:?} not found: {cars:?}");
        }
    }

    /// On BDD frames the detector reports the ego car's hood as a wide car along the bottom edge
    /// (data README); a region of interest ending above it drops that box and keeps the others.
    #[test]
    fn roi_drops_the_ego_hood_on_bdd_frames() {
        let (Some(model), Some(dir)) = (
            crate::data::shared_path("models/yolox_nano_416.onnx"),
            crate::data::shared_path("clean-driving/bdd"),
        ) else {
            eprintln!(
                "skipping: ../shared/data/models/yolox_nano_416.onnx or clean-driving/bdd is absent"
            );
            return;
        };
        if let Err(e) = crate::runtime::init_ort(None) {
            eprintln!("skipping: {e}");
            return;
        }
        let mut d = Detector::from_path(&model, &cpu(), &DetectorConfig::default()).expect("loads");
        let roi: Roi = "0,0,1,0.85".parse().expect("roi");
        let mut hoods = 0;
        for path in crate::imageio::list_images(&dir).expect("bdd frames") {
            let img = crate::imageio::load_rgb(&path).expect("frame");
            let (w, h) = (img.width() as usize, img.height() as usize);
            let view = ImageView::rgb(img.as_raw(), w, h);
            let is_hood = |b: &Detection| b.y2 >= 0.97 * h as f32 && b.width() >= 0.5 * w as f32;
            let all = d.detect(&view, &PostProcess::default()).expect("runs");
            let post = PostProcess {
                roi: Some(roi),
                ..PostProcess::default()
            };
            let kept = d.detect(&view, &post).expect("runs");
            hoods += all.iter().filter(|b| is_hood(b)).count();
            assert!(
                !kept.iter().any(is_hood),
                "{}: hood kept: {kept:?}",
                path.display()
            );
            // Everything whose centre is above the line survives.
            let above = all
                .iter()
                .filter(|b| roi.keeps(b, RoiAnchor::BottomCentre, w, h))
                .count();
            assert_eq!(kept.len(), above, "{}", path.display());
        }
        assert!(hoods > 0, "no hood box found on any BDD frame");
    }
}
