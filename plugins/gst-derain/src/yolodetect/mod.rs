//! The `yolodetect` element: runs a YOLO-family ONNX detector on raw RGB-family frames and attaches
//! each box as a `GstVideoRegionOfInterestMeta`.

use gst::glib;
use gst::prelude::*;
use gst_video::prelude::*;

use derain_core::detect::{ChannelOrder as LibOrder, InputRange as LibRange, Layout as LibLayout};
use derain_core::detect::{ImageView, Padding as LibPadding};
use derain_core::frame::PixelFormat;

mod imp;

/// Name of the parameter structure each region-of-interest meta carries (fields `score` (double),
/// `class-id` (uint), `label` (string), `inferred` (boolean: false when the box was carried
/// over from an earlier frame, see the `interval` property) and `x1`, `y1`, `x2`, `y2` (doubles:
/// the corners in fractional pixels, where the meta's rectangle is rounded to whole pixels)).
pub const DETECTION_PARAMS: &str = "detection";

glib::wrapper! {
    pub struct YoloDetect(ObjectSubclass<imp::YoloDetect>)
        @extends gst_base::BaseTransform, gst::Element, gst::Object;
}

/// The detector's output layout (the `layout` property).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstYoloDetectLayout")]
pub enum Layout {
    #[default]
    #[enum_value(name = "Recognised from the output shape", nick = "auto")]
    Auto = 0,
    #[enum_value(name = "YOLOX: [1, grid cells, 5+C], grid-relative", nick = "yolox")]
    Yolox = 1,
    #[enum_value(name = "YOLOv5: [1, A, 5+C], decoded boxes", nick = "yolov5")]
    Yolov5 = 2,
    #[enum_value(name = "YOLOv8: [1, 4+C, A], decoded boxes", nick = "yolov8")]
    Yolov8 = 3,
}

impl Layout {
    fn to_lib(self) -> Option<LibLayout> {
        match self {
            Layout::Auto => None,
            Layout::Yolox => Some(LibLayout::Yolox),
            Layout::Yolov5 => Some(LibLayout::Yolov5),
            Layout::Yolov8 => Some(LibLayout::Yolov8),
        }
    }
}

/// Channel order of the detector's input (the `color-order` property).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstYoloDetectColorOrder")]
pub enum ColorOrder {
    #[default]
    #[enum_value(
        name = "As the layout's reference code: BGR for YOLOX, RGB otherwise",
        nick = "auto"
    )]
    Auto = 0,
    #[enum_value(name = "RGB", nick = "rgb")]
    Rgb = 1,
    #[enum_value(name = "BGR", nick = "bgr")]
    Bgr = 2,
}

impl ColorOrder {
    fn to_lib(self) -> Option<LibOrder> {
        match self {
            ColorOrder::Auto => None,
            ColorOrder::Rgb => Some(LibOrder::Rgb),
            ColorOrder::Bgr => Some(LibOrder::Bgr),
        }
    }
}

/// Value range of the detector's input (the `input-range` property).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstYoloDetectInputRange")]
pub enum InputRange {
    #[default]
    #[enum_value(
        name = "As the layout's reference code: 0-255 for YOLOX, 0-1 otherwise",
        nick = "auto"
    )]
    Auto = 0,
    #[enum_value(name = "Raw 0-255 values", nick = "0-255")]
    Byte = 1,
    #[enum_value(name = "Values divided by 255", nick = "0-1")]
    Unit = 2,
}

impl InputRange {
    fn to_lib(self) -> Option<LibRange> {
        match self {
            InputRange::Auto => None,
            InputRange::Byte => Some(LibRange::Byte),
            InputRange::Unit => Some(LibRange::Unit),
        }
    }
}

/// Where the letterboxed frame sits in the detector's input (the `padding` property).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstYoloDetectPadding")]
pub enum Padding {
    #[default]
    #[enum_value(
        name = "As the layout's reference code: bottom-right for YOLOX, centre otherwise",
        nick = "auto"
    )]
    Auto = 0,
    #[enum_value(
        name = "Frame at the top-left, padding bottom and right",
        nick = "bottom-right"
    )]
    BottomRight = 1,
    #[enum_value(name = "Frame centred", nick = "centre")]
    Centre = 2,
}

impl Padding {
    fn to_lib(self) -> Option<LibPadding> {
        match self {
            Padding::Auto => None,
            Padding::BottomRight => Some(LibPadding::BottomRight),
            Padding::Centre => Some(LibPadding::Centre),
        }
    }
}

/// Which point of a box the region of interest is tested against (the `roi-anchor` property).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstYoloDetectRoiAnchor")]
pub enum RoiAnchor {
    #[default]
    #[enum_value(
        name = "Middle of the box's bottom edge, where the object meets the road",
        nick = "bottom-centre"
    )]
    BottomCentre = 0,
    #[enum_value(name = "Centre of the box", nick = "centre")]
    Centre = 1,
    #[enum_value(name = "The whole box must lie inside", nick = "whole-box")]
    WholeBox = 2,
}

impl From<RoiAnchor> for derain_core::detect::RoiAnchor {
    fn from(a: RoiAnchor) -> Self {
        match a {
            RoiAnchor::BottomCentre => Self::BottomCentre,
            RoiAnchor::Centre => Self::Centre,
            RoiAnchor::WholeBox => Self::WholeBox,
        }
    }
}

/// The packed 8-bit RGB-family formats both detection elements take.
pub(crate) const RGB_FORMATS: [gst_video::VideoFormat; 10] = [
    gst_video::VideoFormat::Rgb,
    gst_video::VideoFormat::Bgr,
    gst_video::VideoFormat::Rgba,
    gst_video::VideoFormat::Bgra,
    gst_video::VideoFormat::Rgbx,
    gst_video::VideoFormat::Bgrx,
    gst_video::VideoFormat::Argb,
    gst_video::VideoFormat::Abgr,
    gst_video::VideoFormat::Xrgb,
    gst_video::VideoFormat::Xbgr,
];

/// Bytes per pixel and the byte offsets of R, G and B for a packed RGB-family format.
pub(crate) fn rgb_layout(f: gst_video::VideoFormat) -> Option<(usize, [usize; 3])> {
    use gst_video::VideoFormat as V;
    let p = match f {
        V::Rgb => PixelFormat::Rgb,
        V::Bgr => PixelFormat::Bgr,
        V::Rgba => PixelFormat::Rgba,
        V::Bgra => PixelFormat::Bgra,
        V::Rgbx => PixelFormat::Rgbx,
        V::Bgrx => PixelFormat::Bgrx,
        V::Argb => PixelFormat::Argb,
        V::Abgr => PixelFormat::Abgr,
        V::Xrgb => PixelFormat::Xrgb,
        V::Xbgr => PixelFormat::Xbgr,
        _ => return None,
    };
    Some((p.bytes_per_pixel()?, p.rgb_offsets()?))
}

/// A read-only view of plane 0 of a mapped RGB-family frame.
pub(crate) fn image_view<'a>(
    frame: &'a gst_video::VideoFrameRef<&gst::BufferRef>,
) -> Option<ImageView<'a>> {
    let (pixel_stride, rgb_offsets) = rgb_layout(frame.format())?;
    Some(ImageView {
        data: frame.plane_data(0).ok()?,
        width: frame.width() as usize,
        height: frame.height() as usize,
        stride: usize::try_from(*frame.plane_stride().first()?).ok()?,
        pixel_stride,
        rgb_offsets,
    })
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(
        Some(plugin),
        "yolodetect",
        gst::Rank::NONE,
        YoloDetect::static_type(),
    )
}
