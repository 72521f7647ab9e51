//! Letterbox pre-processing: scale a frame to fit the detector's input without distortion, pad the
//! rest with a grey value, and map boxes back to frame pixels.
//!
//! The two conventions in use (each layout picks its own by default, see [`Preprocess::for_layout`]):
//!
//! - **YOLOX**: `r = min(W_in/W, H_in/H)`, resize to `⌊W·r⌋ × ⌊H·r⌋`, image at the top-left,
//!   pad bottom and right with 114; BGR channels with raw 0–255 values.
//! - **YOLOv5 / YOLOv8** (Ultralytics `LetterBox`): the same `r`, resize to `round(W·r) ×
//!   round(H·r)`, image centred (left/top padding `round(d/2 − 0.1)`), pad 114; RGB channels
//!   divided by 255.
//!
//! Boxes come back as `(x − pad_x)/r`, `(y − pad_y)/r`, clipped to the frame. Resizing is
//! bilinear with half-pixel centres (OpenCV's `INTER_LINEAR`), rounded to 8 bits as OpenCV does.

use super::Detection;
use super::layout::Layout;

/// Order of the three colour planes in the input tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChannelOrder {
    Rgb,
    Bgr,
}

/// Range of the input values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InputRange {
    /// 0–255, as the bytes are (YOLOX).
    Byte,
    /// 0–1, bytes divided by 255 (YOLOv5, YOLOv8).
    Unit,
}

/// Where the resized image sits in the input; the rest is padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Padding {
    /// Image at the top-left, padding at the bottom and right (YOLOX).
    BottomRight,
    /// Image centred (Ultralytics).
    Centre,
}

/// Everything that turns a frame into the detector's input tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Preprocess {
    pub order: ChannelOrder,
    pub range: InputRange,
    pub padding: Padding,
    /// Grey level of the padding, in 0–255 (scaled with the image by `range`).
    pub pad_value: u8,
}

impl Preprocess {
    /// The convention the layout's reference code uses.
    pub fn for_layout(layout: Layout) -> Self {
        match layout {
            Layout::Yolox => Self {
                order: ChannelOrder::Bgr,
                range: InputRange::Byte,
                padding: Padding::BottomRight,
                pad_value: 114,
            },
            Layout::Yolov5 | Layout::Yolov8 => Self {
                order: ChannelOrder::Rgb,
                range: InputRange::Unit,
                padding: Padding::Centre,
                pad_value: 114,
            },
        }
    }
}

/// A read-only view of a packed 8-bit RGB-family frame (RGB, BGR, RGBA, BGRx, …).
#[derive(Debug, Clone, Copy)]
pub struct ImageView<'a> {
    pub data: &'a [u8],
    pub width: usize,
    pub height: usize,
    /// Bytes from one row to the next.
    pub stride: usize,
    /// Bytes from one pixel to the next (3 or 4).
    pub pixel_stride: usize,
    /// Byte offsets of R, G and B within a pixel.
    pub rgb_offsets: [usize; 3],
}

impl<'a> ImageView<'a> {
    /// A tightly packed RGB image.
    pub fn rgb(data: &'a [u8], width: usize, height: usize) -> Self {
        Self {
            data,
            width,
            height,
            stride: 3 * width,
            pixel_stride: 3,
            rgb_offsets: [0, 1, 2],
        }
    }

    /// Whether `data` holds every pixel the geometry promises.
    pub fn is_valid(&self) -> bool {
        let max_off = self.rgb_offsets.iter().copied().max().unwrap_or(0);
        self.width > 0
            && self.height > 0
            && max_off < self.pixel_stride
            && self.stride >= self.width * self.pixel_stride
            && self.data.len() >= (self.height - 1) * self.stride + self.width * self.pixel_stride
    }
}

/// The geometry of one letterbox: frame size, input size, scale and padding.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Letterbox {
    pub src_w: usize,
    pub src_h: usize,
    pub dst_w: usize,
    pub dst_h: usize,
    /// `r = min(dst_w/src_w, dst_h/src_h)`.
    pub scale: f32,
    /// Size of the resized image inside the input.
    pub new_w: usize,
    pub new_h: usize,
    /// Left and top padding.
    pub pad_x: usize,
    pub pad_y: usize,
}

impl Letterbox {
    pub fn new(src_w: usize, src_h: usize, dst_w: usize, dst_h: usize, padding: Padding) -> Self {
        let (sw, sh) = (src_w.max(1), src_h.max(1));
        // An empty input would underflow the centring below and leave `fill` no room (found by
        // fuzzing; the detector itself refuses such models).
        let (dst_w, dst_h) = (dst_w.max(1), dst_h.max(1));
        let scale = (dst_w as f64 / sw as f64).min(dst_h as f64 / sh as f64);
        let fit = |v: f64, max: usize| (v as usize).clamp(1, max.max(1));
        let (new_w, new_h, pad_x, pad_y) = match padding {
            Padding::BottomRight => (
                fit((sw as f64 * scale).floor(), dst_w),
                fit((sh as f64 * scale).floor(), dst_h),
                0,
                0,
            ),
            Padding::Centre => {
                let nw = fit((sw as f64 * scale).round(), dst_w);
                let nh = fit((sh as f64 * scale).round(), dst_h);
                let half = |d: usize| ((d as f64 / 2.0) - 0.1).round().max(0.0) as usize;
                (nw, nh, half(dst_w - nw), half(dst_h - nh))
            }
        };
        Self {
            src_w: sw,
            src_h: sh,
            dst_w,
            dst_h,
            scale: scale as f32,
            new_w,
            new_h,
            pad_x,
            pad_y,
        }
    }

    /// Maps a box from input pixels to frame pixels, clipped to the frame.
    pub fn to_frame(&self, d: &Detection) -> Detection {
        let (w, h) = (self.src_w as f32, self.src_h as f32);
        let x = |v: f32| ((v - self.pad_x as f32) / self.scale).clamp(0.0, w);
        let y = |v: f32| ((v - self.pad_y as f32) / self.scale).clamp(0.0, h);
        Detection {
            x1: x(d.x1),
            y1: y(d.y1),
            x2: x(d.x2),
            y2: y(d.y2),
            ..*d
        }
    }

    /// Writes the `[3, dst_h, dst_w]` input tensor for `img` (which must be `src_w`×`src_h`) into
    /// `out` (resized to fit).
    pub fn fill(&self, img: &ImageView<'_>, pre: &Preprocess, out: &mut Vec<f32>) {
        let plane = self.dst_w * self.dst_h;
        let k = match pre.range {
            InputRange::Byte => 1.0,
            InputRange::Unit => 255.0,
        };
        out.clear();
        out.resize(3 * plane, f32::from(pre.pad_value) / k);
        if !img.is_valid() || img.width != self.src_w || img.height != self.src_h {
            return;
        }
        // Tensor plane p takes the image channel `chan[p]` (0 = R, 1 = G, 2 = B).
        let chan = match pre.order {
            ChannelOrder::Rgb => [0, 1, 2],
            ChannelOrder::Bgr => [2, 1, 0],
        };
        let xs = taps(self.src_w, self.new_w);
        let ys = taps(self.src_h, self.new_h);
        for (dy, &(y0, y1, fy)) in ys.iter().enumerate() {
            let (r0, r1) = (&img.data[y0 * img.stride..], &img.data[y1 * img.stride..]);
            let row = (self.pad_y + dy) * self.dst_w + self.pad_x;
            for (dx, &(x0, x1, fx)) in xs.iter().enumerate() {
                let (o0, o1) = (x0 * img.pixel_stride, x1 * img.pixel_stride);
                for (p, &c) in chan.iter().enumerate() {
                    let off = img.rgb_offsets[c];
                    let top = lerp(f32::from(r0[o0 + off]), f32::from(r0[o1 + off]), fx);
                    let bottom = lerp(f32::from(r1[o0 + off]), f32::from(r1[o1 + off]), fx);
                    out[p * plane + row + dx] = lerp(top, bottom, fy).round() / k;
                }
            }
        }
    }
}

fn lerp(a: f32, b: f32, t: f32) -> f32 {
    a + (b - a) * t
}

/// For each output index: the two source indices and the weight of the second (half-pixel
/// centres, clamped at the edges).
fn taps(src: usize, dst: usize) -> Vec<(usize, usize, f32)> {
    let ratio = src as f32 / dst as f32;
    (0..dst)
        .map(|d| {
            let s = ((d as f32 + 0.5) * ratio - 0.5).max(0.0);
            let i0 = (s.floor() as usize).min(src - 1);
            let i1 = (i0 + 1).min(src - 1);
            (i0, i1, s - i0 as f32)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yolox_letterbox_pads_bottom_right() {
        // test1.jpg: 1280x720 into 416: r = 0.325, 416x234, no offset.
        let lb = Letterbox::new(1280, 720, 416, 416, Padding::BottomRight);
        assert_eq!((lb.new_w, lb.new_h, lb.pad_x, lb.pad_y), (416, 234, 0, 0));
        assert!((lb.scale - 0.325).abs() < 1e-6);
        let d = Detection {
            x1: 32.5,
            y1: 65.0,
            x2: 500.0,
            y2: -3.0,
            score: 0.5,
            class_id: 2,
        };
        let f = lb.to_frame(&d);
        assert_eq!((f.x1, f.y1, f.x2, f.y2), (100.0, 200.0, 1280.0, 0.0));
        assert_eq!((f.score, f.class_id), (0.5, 2));
    }

    #[test]
    fn ultralytics_letterbox_centres() {
        // 1280x720 into 640: r = 0.5, 640x360, dh = 280 -> top 140.
        let lb = Letterbox::new(1280, 720, 640, 640, Padding::Centre);
        assert_eq!((lb.new_w, lb.new_h, lb.pad_x, lb.pad_y), (640, 360, 0, 140));
        // Odd padding: 100x61 into 64: r = 0.64, 64x39, dh = 25 -> top round(12.4) = 12.
        let lb = Letterbox::new(100, 61, 64, 64, Padding::Centre);
        assert_eq!((lb.new_w, lb.new_h, lb.pad_y), (64, 39, 12));
        let d = Detection {
            x1: 0.0,
            y1: 12.0,
            x2: 64.0,
            y2: 51.0,
            score: 1.0,
            class_id: 0,
        };
        let f = lb.to_frame(&d);
        assert!((f.x2 - 100.0).abs() < 1e-4 && f.y1 == 0.0 && (f.y2 - 60.9375).abs() < 1e-3);
    }

    #[test]
    fn fill_places_channels_range_and_padding() {
        // A 4x2 BGRx frame, uniform colour R=10, G=20, B=30, into an 8x8 input.
        let mut px = Vec::new();
        for _ in 0..8 {
            px.extend_from_slice(&[30, 20, 10, 255]);
        }
        let img = ImageView {
            data: &px,
            width: 4,
            height: 2,
            stride: 16,
            pixel_stride: 4,
            rgb_offsets: [2, 1, 0],
        };
        let yolox = Preprocess::for_layout(Layout::Yolox);
        let lb = Letterbox::new(4, 2, 8, 8, yolox.padding);
        assert_eq!((lb.new_w, lb.new_h), (8, 4));
        let mut t = Vec::new();
        lb.fill(&img, &yolox, &mut t);
        assert_eq!(t.len(), 3 * 64);
        // BGR planes, raw bytes; rows 0-3 image, rows 4-7 padding.
        assert_eq!((t[0], t[64], t[128]), (30.0, 20.0, 10.0));
        assert_eq!((t[3 * 8 + 7], t[4 * 8], t[128 + 63]), (30.0, 114.0, 114.0));

        let v8 = Preprocess::for_layout(Layout::Yolov8);
        let lb = Letterbox::new(4, 2, 8, 8, v8.padding);
        assert_eq!((lb.pad_y, lb.new_h), (2, 4));
        lb.fill(&img, &v8, &mut t);
        // RGB planes /255; rows 0-1 and 6-7 padding.
        assert_eq!(t[0], 114.0 / 255.0);
        assert_eq!(
            (t[2 * 8], t[64 + 2 * 8], t[128 + 5 * 8]),
            (10.0 / 255.0, 20.0 / 255.0, 30.0 / 255.0)
        );
        assert_eq!(t[6 * 8], 114.0 / 255.0);
    }

    #[test]
    fn bilinear_downscale_averages_pairs() {
        // 4x1 grey ramp 0, 100, 200, 250 halved: half-pixel centres average neighbours.
        let px: Vec<u8> = [0u8, 100, 200, 250]
            .iter()
            .flat_map(|&v| [v, v, v])
            .collect();
        let img = ImageView::rgb(&px, 4, 1);
        let pre = Preprocess {
            order: ChannelOrder::Rgb,
            range: InputRange::Byte,
            padding: Padding::BottomRight,
            pad_value: 0,
        };
        let lb = Letterbox::new(4, 1, 2, 1, pre.padding);
        let mut t = Vec::new();
        lb.fill(&img, &pre, &mut t);
        assert_eq!(&t[..2], &[50.0, 225.0]);
    }
}
