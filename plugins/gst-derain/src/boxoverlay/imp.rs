/**
 * SECTION:element-boxoverlay
 *
 * Draws every `GstVideoRegionOfInterestMeta` of a frame onto the frame in place: the box outline
 * in a colour per class and a caption with the label and, when the meta's "detection" parameters
 * carry one, the score. It pairs with `yolodetect` but draws any element's region-of-interest
 * metas. Captions use a small embedded 5x7 bitmap font (printable ASCII), scaled by whole pixels.
 *
 * ## Example launch line
 * |[
 * gst-launch-1.0 filesrc location=drive.mp4 ! decodebin ! videoconvert ! yolodetect model=yolox_nano_416.onnx ! boxoverlay line-width=3 ! videoconvert ! autovideosink
 * ]|
 */
use std::sync::{LazyLock, Mutex, MutexGuard};

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_base::subclass::prelude::*;
use gst_video::prelude::*;
use gst_video::subclass::prelude::*;

use derain_core::detect::draw::{self, Canvas};

use crate::yolodetect::{DETECTION_PARAMS, RGB_FORMATS, rgb_layout};

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "boxoverlay",
        gst::DebugColorFlags::empty(),
        Some("Draws region-of-interest metas onto frames"),
    )
});

const DEFAULT_LINE_WIDTH: u32 = 2;
const DEFAULT_TEXT_SCALE: u32 = 2;

#[derive(Debug, Clone, Copy)]
struct Settings {
    line_width: u32,
    text_scale: u32,
    show_score: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            line_width: DEFAULT_LINE_WIDTH,
            text_scale: DEFAULT_TEXT_SCALE,
            show_score: true,
        }
    }
}

#[derive(Default)]
pub struct BoxOverlay {
    settings: Mutex<Settings>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What to draw for one meta.
struct Item {
    rect: (u32, u32, u32, u32),
    caption: String,
    colour: [u8; 3],
}

fn items(buf: &gst::BufferRef, show_score: bool) -> Vec<Item> {
    buf.iter_meta::<gst_video::VideoRegionOfInterestMeta>()
        .map(|m| {
            let label = m.roi_type().to_owned();
            let params = m.param(DETECTION_PARAMS);
            let score = params.and_then(|p| p.get::<f64>("score").ok());
            let class_id = params.and_then(|p| p.get::<u32>("class-id").ok());
            let caption = match score.filter(|_| show_score) {
                Some(s) => format!("{label} {s:.2}"),
                None => label.clone(),
            };
            let colour = match class_id {
                Some(c) => draw::class_colour(c as usize),
                None => draw::label_colour(&label),
            };
            Item {
                rect: m.rect(),
                caption,
                colour,
            }
        })
        .collect()
}

#[glib::object_subclass]
impl ObjectSubclass for BoxOverlay {
    const NAME: &'static str = "GstBoxOverlay";
    type Type = super::BoxOverlay;
    type ParentType = gst_video::VideoFilter;
}

impl ObjectImpl for BoxOverlay {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            vec![
                glib::ParamSpecUInt::builder("line-width")
                    .nick("Line width")
                    .blurb("Thickness of the box outlines in pixels, drawn inside each box (1 to 64)")
                    .minimum(1)
                    .maximum(64)
                    .default_value(DEFAULT_LINE_WIDTH)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder("text-scale")
                    .nick("Caption size")
                    .blurb("Caption font scale: each pixel of the 5x7 font becomes N x N pixels; 0 draws no captions (at most 16)")
                    .maximum(16)
                    .default_value(DEFAULT_TEXT_SCALE)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecBoolean::builder("show-score")
                    .nick("Show score")
                    .blurb("Append the score from the meta's \"detection\" parameters to the label")
                    .default_value(true)
                    .mutable_playing()
                    .build(),
            ]
        });
        PROPERTIES.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let mut s = lock(&self.settings);
        match pspec.name() {
            "line-width" => s.line_width = value.get().unwrap_or(DEFAULT_LINE_WIDTH),
            "text-scale" => s.text_scale = value.get().unwrap_or(DEFAULT_TEXT_SCALE),
            "show-score" => s.show_score = value.get().unwrap_or(true),
            other => gst::warning!(CAT, imp = self, "unknown property {other}"),
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        let s = lock(&self.settings);
        match pspec.name() {
            "line-width" => s.line_width.to_value(),
            "text-scale" => s.text_scale.to_value(),
            "show-score" => s.show_score.to_value(),
            _ => pspec.default_value().clone(),
        }
    }
}

impl GstObjectImpl for BoxOverlay {}

impl ElementImpl for BoxOverlay {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static META: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "Detection box overlay",
                "Filter/Effect/Video",
                "Draws region-of-interest metas (box, label, score) onto RGB frames",
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

impl BaseTransformImpl for BoxOverlay {
    const MODE: gst_base::subclass::BaseTransformMode =
        gst_base::subclass::BaseTransformMode::AlwaysInPlace;
    const PASSTHROUGH_ON_SAME_CAPS: bool = false;
    const TRANSFORM_IP_ON_PASSTHROUGH: bool = false;
}

impl VideoFilterImpl for BoxOverlay {
    fn transform_frame_ip(
        &self,
        frame: &mut gst_video::VideoFrameRef<&mut gst::BufferRef>,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        let settings = *lock(&self.settings);
        let items = items(frame.buffer(), settings.show_score);
        if items.is_empty() {
            return Ok(gst::FlowSuccess::Ok);
        }
        let (pixel_stride, rgb_offsets) =
            rgb_layout(frame.format()).ok_or(gst::FlowError::NotNegotiated)?;
        let (width, height) = (frame.width() as usize, frame.height() as usize);
        let stride = usize::try_from(frame.plane_stride()[0]).map_err(|_| gst::FlowError::Error)?;
        let data = frame.plane_data_mut(0).map_err(|_| {
            gst::element_imp_error!(self, gst::CoreError::Failed, ["Failed to map the frame"]);
            gst::FlowError::Error
        })?;
        let mut canvas = Canvas {
            data,
            width,
            height,
            stride,
            pixel_stride,
            rgb_offsets,
        };
        if !canvas.is_valid() {
            gst::element_imp_error!(
                self,
                gst::StreamError::Format,
                ["the frame's buffer is smaller than its {width}x{height} caps say"]
            );
            return Err(gst::FlowError::Error);
        }
        // Lowest score first (metas come best first), so the best box's caption ends on top.
        for item in items.iter().rev() {
            canvas.detection(
                item.rect,
                &item.caption,
                item.colour,
                settings.line_width,
                settings.text_scale as usize,
            );
        }
        Ok(gst::FlowSuccess::Ok)
    }
}
