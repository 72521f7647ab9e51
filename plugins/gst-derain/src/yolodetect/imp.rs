/**
 * SECTION:element-yolodetect
 *
 * Runs a YOLO-family object detector (any ONNX model with the YOLOX, YOLOv5 or YOLOv8 output
 * layout, recognised from its output shape) through ONNX Runtime on raw RGB-family frames, and
 * attaches every box as a `GstVideoRegionOfInterestMeta` whose type is the class label and whose
 * "detection" parameter structure holds `score`, `class-id`, `label`, `inferred` and the box
 * corners `x1`, `y1`, `x2`, `y2` in (fractional) pixels. Frames pass through unchanged; optionally each frame's boxes are also written as one JSON line to a file.
 *
 * Pre-processing follows the layout's reference code unless overridden: YOLOX gets BGR values
 * 0-255 letterboxed at the top-left with grey 114 padding; YOLOv5/YOLOv8 get RGB values /255,
 * letterboxed centred with grey 114. Post-processing: score = objectness x class score (class
 * score alone for YOLOv8), best class per box, score threshold, class filter, region of interest
 * (a box is kept when its anchor, by default the middle of its bottom edge, lies inside: that
 * drops the ego car's hood, seen as a wide box along the frame's bottom edge), then per-class NMS.
 *
 * ## Example launch line
 * |[
 * gst-launch-1.0 filesrc location=drive.mp4 ! decodebin ! videoconvert ! yolodetect model=yolox_nano_416.onnx classes=car,truck,bus roi=0,0,1,0.85 json-path=boxes.jsonl ! boxoverlay ! videoconvert ! autovideosink
 * ]|
 */
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{LazyLock, Mutex, MutexGuard};
use std::time::Instant;

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_base::subclass::prelude::*;

use derain_core::detect::{
    DetectError, Detection, Detector, DetectorConfig, FrameRecord, Labels, PostProcess, Roi,
};
use derain_core::runtime::RuntimeError;

use super::{ColorOrder, DETECTION_PARAMS, InputRange, Layout, Padding, RGB_FORMATS, RoiAnchor};
use crate::ortprops::{
    Failure, Mutable, OpenError, OrtSettings, SESSION_PROPERTIES, Timings, Wording,
};

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "yolodetect",
        gst::DebugColorFlags::empty(),
        Some("Object detection with a YOLO-family ONNX detector"),
    )
});

const DEFAULT_SCORE_THRESHOLD: f64 = 0.25;
const DEFAULT_IOU_THRESHOLD: f64 = 0.45;
const DEFAULT_MAX_DETECTIONS: u32 = 300;
const DEFAULT_PAD_VALUE: u32 = 114;
const MAX_INPUT_SIZE: u32 = 8192;

/// How this element words the shared ONNX Runtime properties.
const WORDING: Wording = Wording {
    model_nick: "Detector",
    model_blurb: "Path of the ONNX detector: one float32 input [1,3,H,W], output in the YOLOX, YOLOv5 or YOLOv8 layout",
    network: "detector",
    mean_nick: "Mean detection time (ms)",
    timed: "detector run, letterbox, inference and post-processing",
};

/// What the user set. Copied out of its lock before use.
#[derive(Debug, Clone)]
struct Settings {
    /// The ONNX Runtime settings; used at the next start.
    session: OrtSettings,
    layout: Layout,
    input_size: u32,
    color_order: ColorOrder,
    input_range: InputRange,
    padding: Padding,
    pad_value: u32,
    score_threshold: f64,
    iou_threshold: f64,
    max_detections: u32,
    classes: String,
    labels_file: String,
    /// The region of interest in force (the last valid value set).
    roi: Option<Roi>,
    /// Why the last value set for `roi` was refused; refused again at start.
    roi_error: Option<String>,
    roi_anchor: RoiAnchor,
    interval: u32,
    json_path: String,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            session: OrtSettings::default(),
            layout: Layout::Auto,
            input_size: 0,
            color_order: ColorOrder::Auto,
            input_range: InputRange::Auto,
            padding: Padding::Auto,
            pad_value: DEFAULT_PAD_VALUE,
            score_threshold: DEFAULT_SCORE_THRESHOLD,
            iou_threshold: DEFAULT_IOU_THRESHOLD,
            max_detections: DEFAULT_MAX_DETECTIONS,
            classes: String::new(),
            labels_file: String::new(),
            roi: None,
            roi_error: None,
            roi_anchor: RoiAnchor::BottomCentre,
            interval: 1,
            json_path: String::new(),
        }
    }
}

/// Counters, readable as properties at any time; reset in `start()`.
#[derive(Debug, Default)]
struct Stats {
    frames_processed: u64,
    inferences: u64,
    /// Seconds per detector run.
    timings: Timings,
    /// The slowest inference so far: the delay answered to LATENCY queries.
    latency: gst::ClockTime,
    active_provider: String,
    active_layout: String,
}

/// What exists while running: created in `start()`, dropped in `stop()`.
struct State {
    detector: Detector,
    labels: Labels,
    classes: Option<std::collections::BTreeSet<usize>>,
    info: Option<gst_video::VideoInfo>,
    json: Option<(PathBuf, BufWriter<File>)>,
    /// Frames seen since start (the JSON lines' frame number).
    frame: u64,
    /// The boxes of the last frame the detector ran on, re-attached in between.
    last: Option<Vec<Detection>>,
}

#[derive(Default)]
pub struct YoloDetect {
    settings: Mutex<Settings>,
    state: Mutex<Option<State>>,
    stats: Mutex<Stats>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not take the element down with it.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn optional_path(s: &str) -> Option<PathBuf> {
    (!s.is_empty()).then(|| PathBuf::from(s))
}

impl YoloDetect {
    fn load(&self, s: &Settings) -> Result<State, gst::ErrorMessage> {
        let settings_err = |msg: String| gst::error_msg!(gst::ResourceError::Settings, ["{}", msg]);
        if s.session.model.is_empty() {
            return Err(settings_err(
                "no model set: set model=PATH to a YOLOX, YOLOv5 or YOLOv8 ONNX detector".into(),
            ));
        }
        let options = s.session.session_options().map_err(|e| e.error_msg())?;
        if let Some(why) = &s.roi_error {
            return Err(settings_err(why.clone()));
        }
        let labels = match optional_path(&s.labels_file) {
            None => Labels::coco(),
            Some(p) => Labels::from_file(&p)
                .map_err(|e| gst::error_msg!(gst::ResourceError::NotFound, ["{}", e]))?,
        };
        let classes = labels
            .class_filter(&s.classes)
            .map_err(|e| settings_err(e.to_string()))?;
        // Created before the detector so a bad path fails fast, and before any frame flows.
        let json = match optional_path(&s.json_path) {
            None => None,
            Some(p) => {
                let f = File::create(&p).map_err(|e| {
                    gst::error_msg!(
                        gst::ResourceError::OpenWrite,
                        [
                            "cannot create the JSON-lines file '{}' (json-path): {}",
                            p.display(),
                            e
                        ]
                    )
                })?;
                Some((p, BufWriter::new(f)))
            }
        };
        let size = s.input_size as usize;
        let config = DetectorConfig {
            layout: s.layout.to_lib(),
            input_size: (size > 0).then_some((size, size)),
            channel_order: s.color_order.to_lib(),
            input_range: s.input_range.to_lib(),
            padding: s.padding.to_lib(),
            pad_value: Some(s.pad_value.min(255) as u8),
        };
        let detector = Detector::from_path(Path::new(&s.session.model), &options, &config)
            .map_err(|e| {
                let failure = match &e {
                    DetectError::Read { .. } => Failure::Missing,
                    DetectError::Runtime(RuntimeError::LibraryNotFound { .. }) => Failure::Library,
                    DetectError::Runtime(_) => Failure::Session,
                    _ => Failure::Contract,
                };
                OpenError::new(failure, e.to_string()).error_msg()
            })?;
        gst::info!(
            CAT,
            imp = self,
            "detector '{}' on provider {} (asked for {}): {:?}",
            s.session.model,
            detector.provider(),
            options.provider,
            detector
        );
        if labels.len() != detector.num_classes() {
            gst::warning!(
                CAT,
                imp = self,
                "the detector has {} classes but {} labels are loaded; classes past the list are \
                 named class-N (set labels-file)",
                detector.num_classes(),
                labels.len()
            );
        }
        Ok(State {
            detector,
            labels,
            classes,
            info: None,
            json,
            frame: 0,
            last: None,
        })
    }

    /// Flushes the JSON-lines file, if any.
    fn flush_json(&self, state: &mut State) -> Result<(), gst::ErrorMessage> {
        if let Some((path, w)) = state.json.as_mut() {
            w.flush().map_err(|e| {
                gst::error_msg!(
                    gst::ResourceError::Write,
                    [
                        "cannot write the JSON-lines file '{}': {}",
                        path.display(),
                        e
                    ]
                )
            })?;
        }
        Ok(())
    }

    fn post_process(s: &Settings, state: &State) -> PostProcess {
        PostProcess {
            score_threshold: s.score_threshold as f32,
            iou_threshold: s.iou_threshold as f32,
            max_detections: s.max_detections as usize,
            classes: state.classes.clone(),
            roi: s.roi,
            roi_anchor: s.roi_anchor.into(),
        }
    }
}

#[glib::object_subclass]
impl ObjectSubclass for YoloDetect {
    const NAME: &'static str = "GstYoloDetect";
    type Type = super::YoloDetect;
    type ParentType = gst_base::BaseTransform;
}

impl ObjectImpl for YoloDetect {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            let mut props = OrtSettings::properties(&WORDING, Mutable::Ready);
            props.extend([
                glib::ParamSpecEnum::builder_with_default("layout", Layout::Auto)
                    .nick("Output layout")
                    .blurb("auto: [1,G,5+C] with G the grid cells of strides 8/16/32 is YOLOX (YOLOv5 if its first column holds pixel centres), [1,A,5+C] with A > 5+C is YOLOv5, [1,4+C,A] is YOLOv8; or force one")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("input-size")
                    .nick("Input size")
                    .blurb("Square input size for detectors with dynamic H and W; 0 = the model's own size (640 if dynamic). A fixed-size model refuses any other")
                    .maximum(MAX_INPUT_SIZE)
                    .default_value(0)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("color-order", ColorOrder::Auto)
                    .nick("Input channel order")
                    .blurb("Channel order the detector expects: auto = BGR for YOLOX, RGB for YOLOv5/YOLOv8")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("input-range", InputRange::Auto)
                    .nick("Input value range")
                    .blurb("Value range the detector expects: auto = 0-255 for YOLOX, 0-1 for YOLOv5/YOLOv8")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("padding", Padding::Auto)
                    .nick("Letterbox placement")
                    .blurb("Where the scaled frame sits in the input: auto = bottom-right padding for YOLOX, centred for YOLOv5/YOLOv8")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("pad-value")
                    .nick("Padding grey")
                    .blurb("Grey level (0-255, before any /255) of the letterbox padding")
                    .maximum(255)
                    .default_value(DEFAULT_PAD_VALUE)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecDouble::builder("score-threshold")
                    .nick("Score threshold")
                    .blurb("Boxes scoring below this are dropped (objectness x class score; class score for YOLOv8)")
                    .minimum(0.0)
                    .maximum(1.0)
                    .default_value(DEFAULT_SCORE_THRESHOLD)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecDouble::builder("iou-threshold")
                    .nick("NMS IoU threshold")
                    .blurb("Per-class non-maximum suppression: of two boxes of one class overlapping by more than this IoU the weaker goes")
                    .minimum(0.0)
                    .maximum(1.0)
                    .default_value(DEFAULT_IOU_THRESHOLD)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder("max-detections")
                    .nick("Maximum boxes")
                    .blurb("At most this many boxes per frame, the highest scoring")
                    .minimum(1)
                    .default_value(DEFAULT_MAX_DETECTIONS)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecString::builder("classes")
                    .nick("Class filter")
                    .blurb("Comma-separated class names or ids to keep, e.g. \"car,truck,bus,person\" or \"2,7\"; empty keeps all")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("labels-file")
                    .nick("Labels file")
                    .blurb("Text file with one class name a line, in class-id order; empty = the 80 COCO names")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("roi")
                    .nick("Region of interest")
                    .blurb("x1,y1,x2,y2 in fractions of the frame; boxes whose anchor (see roi-anchor) lies outside are dropped, e.g. 0,0,1,0.85 ignores the car's own hood; empty = whole frame")
                    .mutable_playing()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("roi-anchor", RoiAnchor::BottomCentre)
                    .nick("Region of interest anchor")
                    .blurb("Point of a box that must lie inside roi: bottom-centre (where it meets the road), centre, or whole-box")
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder("interval")
                    .nick("Inference interval")
                    .blurb("Run the detector on every Nth frame; frames in between get the last boxes again (inferred=false)")
                    .minimum(1)
                    .default_value(1)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecString::builder("json-path")
                    .nick("JSON-lines output")
                    .blurb("Write one JSON line per frame (timestamp ns, frame, inferred, boxes with x1,y1,x2,y2,score,class_id,label) to this file; empty = none")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("active-layout")
                    .nick("Active layout")
                    .blurb("The output layout in use, recognised or forced (empty until started)")
                    .read_only()
                    .build(),
                glib::ParamSpecUInt64::builder("frames-processed")
                    .nick("Frames processed")
                    .blurb("Frames that left with boxes attached since start")
                    .read_only()
                    .build(),
                glib::ParamSpecUInt64::builder("inferences")
                    .nick("Detector runs")
                    .blurb("Frames the detector ran on since start (see interval)")
                    .read_only()
                    .build(),
            ]);
            props.extend(OrtSettings::status_properties(&WORDING));
            props
        });
        PROPERTIES.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let string = || {
            value
                .get::<Option<String>>()
                .ok()
                .flatten()
                .unwrap_or_default()
        };
        let mut s = lock(&self.settings);
        if SESSION_PROPERTIES.contains(&pspec.name()) {
            // Used at the next start.
            s.session.set(pspec.name(), value);
            return;
        }
        // GLib type-checks values against the param specs before they get here.
        match pspec.name() {
            "layout" => s.layout = value.get().unwrap_or_default(),
            "input-size" => s.input_size = value.get().unwrap_or_default(),
            "color-order" => s.color_order = value.get().unwrap_or_default(),
            "input-range" => s.input_range = value.get().unwrap_or_default(),
            "padding" => s.padding = value.get().unwrap_or_default(),
            "pad-value" => s.pad_value = value.get().unwrap_or(DEFAULT_PAD_VALUE),
            "score-threshold" => s.score_threshold = value.get().unwrap_or(DEFAULT_SCORE_THRESHOLD),
            "iou-threshold" => s.iou_threshold = value.get().unwrap_or(DEFAULT_IOU_THRESHOLD),
            "max-detections" => s.max_detections = value.get().unwrap_or(DEFAULT_MAX_DETECTIONS),
            "classes" => s.classes = string(),
            "labels-file" => s.labels_file = string(),
            "roi" => {
                let text = string();
                let parsed = if text.trim().is_empty() {
                    Ok(None)
                } else {
                    text.parse::<Roi>().map(Some)
                };
                match parsed {
                    Ok(roi) => {
                        s.roi = roi;
                        s.roi_error = None;
                    }
                    Err(why) => {
                        // Refused now (the old region stays) and again at start.
                        gst::warning!(CAT, imp = self, "{why}");
                        s.roi_error = Some(why.clone());
                        drop(s);
                        gst::element_imp_warning!(self, gst::LibraryError::Settings, ["{}", why]);
                    }
                }
            }
            "roi-anchor" => s.roi_anchor = value.get().unwrap_or_default(),
            "interval" => s.interval = value.get::<u32>().unwrap_or(1).max(1),
            "json-path" => s.json_path = string(),
            other => gst::warning!(CAT, imp = self, "unknown property {other}"),
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        let s = lock(&self.settings);
        if let Some(v) = s.session.get(pspec.name()) {
            return v;
        }
        match pspec.name() {
            "layout" => s.layout.to_value(),
            "input-size" => s.input_size.to_value(),
            "color-order" => s.color_order.to_value(),
            "input-range" => s.input_range.to_value(),
            "padding" => s.padding.to_value(),
            "pad-value" => s.pad_value.to_value(),
            "score-threshold" => s.score_threshold.to_value(),
            "iou-threshold" => s.iou_threshold.to_value(),
            "max-detections" => s.max_detections.to_value(),
            "classes" => s.classes.to_value(),
            "labels-file" => s.labels_file.to_value(),
            "roi" => s.roi.map(|r| r.to_string()).unwrap_or_default().to_value(),
            "roi-anchor" => s.roi_anchor.to_value(),
            "interval" => s.interval.to_value(),
            "json-path" => s.json_path.to_value(),
            name => {
                drop(s);
                let st = lock(&self.stats);
                match name {
                    "active-provider" => st.active_provider.to_value(),
                    "active-layout" => st.active_layout.to_value(),
                    "frames-processed" => st.frames_processed.to_value(),
                    "inferences" => st.inferences.to_value(),
                    other => st
                        .timings
                        .get(other)
                        .unwrap_or_else(|| pspec.default_value().clone()),
                }
            }
        }
    }
}

impl GstObjectImpl for YoloDetect {}

impl ElementImpl for YoloDetect {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static META: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "YOLO object detection",
                "Filter/Analyzer/Video",
                "Detects objects with a YOLOX, YOLOv5 or YOLOv8 ONNX detector and attaches them as region-of-interest metas",
                "derain developers",
            )
        });
        Some(&*META)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            let caps = gst_video::VideoCapsBuilder::new()
                .format_list(RGB_FORMATS)
                .build();
            [
                ("src", gst::PadDirection::Src),
                ("sink", gst::PadDirection::Sink),
            ]
            .into_iter()
            .filter_map(|(name, dir)| {
                gst::PadTemplate::new(name, dir, gst::PadPresence::Always, &caps).ok()
            })
            .collect()
        });
        TEMPLATES.as_ref()
    }
}

impl BaseTransformImpl for YoloDetect {
    const MODE: gst_base::subclass::BaseTransformMode =
        gst_base::subclass::BaseTransformMode::AlwaysInPlace;
    const PASSTHROUGH_ON_SAME_CAPS: bool = false;
    const TRANSFORM_IP_ON_PASSTHROUGH: bool = false;

    fn start(&self) -> Result<(), gst::ErrorMessage> {
        let settings = lock(&self.settings).clone();
        let state = self.load(&settings)?;
        {
            let mut stats = lock(&self.stats);
            *stats = Stats::default();
            stats.active_provider = state.detector.provider().to_string();
            stats.active_layout = state.detector.layout().to_string();
        }
        *lock(&self.state) = Some(state);
        Ok(())
    }

    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        // Dropping the state closes the session and the JSON-lines file (flushed first).
        let state = lock(&self.state).take();
        if let Some(mut state) = state {
            self.flush_json(&mut state)?;
        }
        Ok(())
    }

    fn set_caps(&self, incaps: &gst::Caps, _outcaps: &gst::Caps) -> Result<(), gst::LoggableError> {
        let info = gst_video::VideoInfo::from_caps(incaps)
            .map_err(|_| gst::loggable_error!(CAT, "not raw video caps: {}", incaps))?;
        if super::rgb_layout(info.format()).is_none() {
            return Err(gst::loggable_error!(
                CAT,
                "unsupported format in caps {}",
                incaps
            ));
        }
        let mut guard = lock(&self.state);
        let state = guard
            .as_mut()
            .ok_or_else(|| gst::loggable_error!(CAT, "caps set before start"))?;
        gst::info!(
            CAT,
            imp = self,
            "configured {}x{} {:?}",
            info.width(),
            info.height(),
            info.format()
        );
        state.info = Some(info);
        // Boxes found at another size must not be re-attached (see interval).
        state.last = None;
        Ok(())
    }

    fn query(&self, direction: gst::PadDirection, query: &mut gst::QueryRef) -> bool {
        if direction == gst::PadDirection::Src
            && let gst::QueryViewMut::Latency(q) = query.view_mut()
        {
            let Some(sinkpad) = self.obj().static_pad("sink") else {
                return false;
            };
            let mut upstream = gst::query::Latency::new();
            if !sinkpad.peer_query(&mut upstream) {
                return false;
            }
            let (live, min, max) = upstream.result();
            let ours = lock(&self.stats).latency;
            q.set(live, min + ours, max.map(|m| m + ours));
            return true;
        }
        BaseTransformImplExt::parent_query(self, direction, query)
    }

    fn transform_ip(&self, buf: &mut gst::BufferRef) -> Result<gst::FlowSuccess, gst::FlowError> {
        let settings = lock(&self.settings).clone();
        let mut guard = lock(&self.state);
        let state = guard.as_mut().ok_or(gst::FlowError::NotNegotiated)?;
        let info = state.info.clone().ok_or(gst::FlowError::NotNegotiated)?;
        let frame_no = state.frame;
        state.frame += 1;
        let run = state.last.is_none() || frame_no % u64::from(settings.interval.max(1)) == 0;
        let mut elapsed = None;
        if run {
            let started = Instant::now();
            let post = Self::post_process(&settings, state);
            let frame =
                gst_video::VideoFrameRef::from_buffer_ref_readable(&*buf, &info).map_err(|_| {
                    gst::element_imp_error!(self, gst::CoreError::Failed, ["Failed to map buffer"]);
                    gst::FlowError::Error
                })?;
            let view = super::image_view(&frame).ok_or(gst::FlowError::NotNegotiated)?;
            let dets = state.detector.detect(&view, &post).map_err(|e| {
                gst::element_imp_error!(self, gst::StreamError::Failed, ["{}", e]);
                gst::FlowError::Error
            })?;
            drop(frame);
            state.last = Some(dets);
            elapsed = Some(started.elapsed());
        }
        let dets = state.last.clone().unwrap_or_default();
        let labels: Vec<String> = dets
            .iter()
            .map(|d| state.labels.name(d.class_id).into_owned())
            .collect();
        if let Some((path, w)) = state.json.as_mut() {
            let record = FrameRecord::new(
                buf.pts().map(|t| t.nseconds()),
                frame_no,
                run,
                &dets,
                &state.labels,
            );
            writeln!(w, "{}", record.to_json_line()).map_err(|e| {
                gst::element_imp_error!(
                    self,
                    gst::ResourceError::Write,
                    [
                        "cannot write the JSON-lines file '{}': {}",
                        path.display(),
                        e
                    ]
                );
                gst::FlowError::Error
            })?;
        }
        drop(guard);

        for (i, (d, label)) in dets.iter().zip(&labels).enumerate() {
            let mut meta = gst_video::VideoRegionOfInterestMeta::add(buf, label, d.pixel_rect());
            meta.set_id(i32::try_from(i).unwrap_or(i32::MAX));
            meta.add_param(
                gst::Structure::builder(DETECTION_PARAMS)
                    .field("score", f64::from(d.score))
                    .field("class-id", u32::try_from(d.class_id).unwrap_or(u32::MAX))
                    .field("label", label.as_str())
                    .field("inferred", run)
                    // The meta's rectangle is whole pixels; the corners keep the detector's
                    // precision for applications that record boxes (`derain run --json`).
                    .field("x1", f64::from(d.x1))
                    .field("y1", f64::from(d.y1))
                    .field("x2", f64::from(d.x2))
                    .field("y2", f64::from(d.y2))
                    .build(),
            );
        }

        let mut stats = lock(&self.stats);
        stats.frames_processed += 1;
        let mut latency_grew = false;
        if let Some(t) = elapsed {
            stats.inferences += 1;
            stats.timings.record(t.as_secs_f64());
            let t = gst::ClockTime::from_nseconds(t.as_nanos() as u64);
            // Re-announce only when the slowest run grew by over 20% and 1 ms.
            let old = stats.latency;
            if t > old && t.nseconds() - old.nseconds() > (old.nseconds() / 5).max(1_000_000) {
                stats.latency = t;
                latency_grew = true;
            }
        }
        drop(stats);
        if latency_grew {
            let _ = self
                .obj()
                .post_message(gst::message::Latency::builder().src(&*self.obj()).build());
        }
        Ok(gst::FlowSuccess::Ok)
    }

    fn sink_event(&self, event: gst::Event) -> bool {
        if let gst::EventView::FlushStop(_) = event.view()
            && let Some(state) = lock(&self.state).as_mut()
        {
            // After a seek the last boxes belong to another moment.
            state.last = None;
        }
        if let gst::EventView::Eos(_) = event.view() {
            let flushed = match lock(&self.state).as_mut() {
                Some(state) => self.flush_json(state),
                None => Ok(()),
            };
            if let Err(e) = flushed {
                self.post_error_message(e);
            }
        }
        self.parent_sink_event(event)
    }
}
