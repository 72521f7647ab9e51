//! Drawing detections onto packed 8-bit RGB-family frames in place: box outlines in a per-class
//! colour and a caption ("car 0.87") on a filled tab, in the embedded 5×7 bitmap font.

use super::font::{self, GLYPH_H, GLYPH_W};

/// A writable view of a packed 8-bit RGB-family frame (RGB, BGR, RGBA, BGRx, …).
#[derive(Debug)]
pub struct Canvas<'a> {
    pub data: &'a mut [u8],
    pub width: usize,
    pub height: usize,
    /// Bytes from one row to the next.
    pub stride: usize,
    /// Bytes from one pixel to the next (3 or 4).
    pub pixel_stride: usize,
    /// Byte offsets of R, G and B within a pixel.
    pub rgb_offsets: [usize; 3],
}

/// Twenty well-separated colours (Ultralytics' palette), by class id.
const PALETTE: [[u8; 3]; 20] = [
    [0xff, 0x38, 0x38],
    [0xff, 0x9d, 0x97],
    [0xff, 0x70, 0x1f],
    [0xff, 0xb2, 0x1d],
    [0xcf, 0xd2, 0x31],
    [0x48, 0xf9, 0x0a],
    [0x92, 0xcc, 0x17],
    [0x3d, 0xdb, 0x86],
    [0x1a, 0x93, 0x34],
    [0x00, 0xd4, 0xbb],
    [0x2c, 0x99, 0xa8],
    [0x00, 0xc2, 0xff],
    [0x34, 0x45, 0x93],
    [0x64, 0x73, 0xff],
    [0x00, 0x18, 0xec],
    [0x84, 0x38, 0xff],
    [0x52, 0x00, 0x85],
    [0xcb, 0x38, 0xff],
    [0xff, 0x95, 0xc8],
    [0xff, 0x37, 0xc7],
];

/// The colour of a class id (RGB).
pub fn class_colour(class_id: usize) -> [u8; 3] {
    PALETTE[class_id % PALETTE.len()]
}

/// A stable colour for a label without a class id (FNV-1a hash of the name).
pub fn label_colour(label: &str) -> [u8; 3] {
    let h = label.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    PALETTE[h as usize % PALETTE.len()]
}

/// Size in pixels of `text` drawn at `scale` (one blank column between glyphs).
pub fn text_size(text: &str, scale: usize) -> (usize, usize) {
    let n = text.chars().count();
    if n == 0 {
        return (0, 0);
    }
    ((n * (GLYPH_W + 1) - 1) * scale, GLYPH_H * scale)
}

impl Canvas<'_> {
    /// Whether `data` holds every pixel the geometry promises.
    pub fn is_valid(&self) -> bool {
        let max_off = self.rgb_offsets.iter().copied().max().unwrap_or(0);
        self.width > 0
            && self.height > 0
            && max_off < self.pixel_stride
            && self.stride >= self.width * self.pixel_stride
            && self.data.len() >= (self.height - 1) * self.stride + self.width * self.pixel_stride
    }

    /// Fills the pixels `x0..x1` × `y0..y1` (clipped to the frame).
    pub fn fill_rect(&mut self, x0: i64, y0: i64, x1: i64, y1: i64, colour: [u8; 3]) {
        let clip = |v: i64, max: usize| v.clamp(0, max as i64) as usize;
        let (x0, x1) = (clip(x0, self.width), clip(x1, self.width));
        let (y0, y1) = (clip(y0, self.height), clip(y1, self.height));
        for y in y0..y1 {
            let row = y * self.stride;
            for x in x0..x1 {
                let p = row + x * self.pixel_stride;
                for (c, &off) in self.rgb_offsets.iter().enumerate() {
                    self.data[p + off] = colour[c];
                }
            }
        }
    }

    /// The outline of the box `x, y, w, h`, `line_width` pixels thick, drawn inside the box's
    /// edges (a box touching the frame's edge keeps its whole outline).
    pub fn outline(&mut self, rect: (u32, u32, u32, u32), line_width: u32, colour: [u8; 3]) {
        let (x, y, w, h) = (
            i64::from(rect.0),
            i64::from(rect.1),
            i64::from(rect.2),
            i64::from(rect.3),
        );
        let lw = i64::from(line_width).min(w.min(h).div_euclid(2).max(1));
        if w == 0 || h == 0 || lw == 0 {
            return;
        }
        self.fill_rect(x, y, x + w, y + lw, colour);
        self.fill_rect(x, y + h - lw, x + w, y + h, colour);
        self.fill_rect(x, y, x + lw, y + h, colour);
        self.fill_rect(x + w - lw, y, x + w, y + h, colour);
    }

    /// `text` with its top-left corner at (`x`, `y`), each font pixel `scale`×`scale`.
    pub fn text(&mut self, x: i64, y: i64, text: &str, scale: usize, colour: [u8; 3]) {
        let s = scale as i64;
        for (i, c) in text.chars().enumerate() {
            let g = font::glyph(c);
            let gx = x + (i * (GLYPH_W + 1)) as i64 * s;
            for col in 0..GLYPH_W {
                for row in 0..GLYPH_H {
                    if font::pixel(g, col, row) {
                        let (px, py) = (gx + col as i64 * s, y + row as i64 * s);
                        self.fill_rect(px, py, px + s, py + s, colour);
                    }
                }
            }
        }
    }

    /// A detection: its outline and, when `text_scale > 0`, `caption` on a tab of the same colour
    /// above the box (inside it when there is no room above).
    pub fn detection(
        &mut self,
        rect: (u32, u32, u32, u32),
        caption: &str,
        colour: [u8; 3],
        line_width: u32,
        text_scale: usize,
    ) {
        self.outline(rect, line_width, colour);
        if text_scale == 0 || caption.is_empty() {
            return;
        }
        let (tw, th) = text_size(caption, text_scale);
        let pad = text_scale as i64;
        let (tab_w, tab_h) = (tw as i64 + 2 * pad, th as i64 + 2 * pad);
        let x = i64::from(rect.0);
        let top = i64::from(rect.1);
        let y = if top >= tab_h { top - tab_h } else { top };
        self.fill_rect(x, y, x + tab_w, y + tab_h, colour);
        // Dark text on light colours, light on dark (Rec. 601 luma).
        let [r, g, b] = colour.map(u32::from);
        let ink = if 299 * r + 587 * g + 114 * b > 128_000 {
            [0, 0, 0]
        } else {
            [255, 255, 255]
        };
        self.text(x + pad, y + pad, caption, text_scale, ink);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canvas(data: &mut [u8], w: usize, h: usize) -> Canvas<'_> {
        Canvas {
            data,
            width: w,
            height: h,
            stride: 4 * w + 8,
            pixel_stride: 4,
            rgb_offsets: [2, 1, 0], // BGRx
        }
    }

    #[test]
    fn outline_touches_only_the_border() {
        let (w, h) = (20, 12);
        let mut data = vec![0u8; (4 * w + 8) * h];
        let mut c = canvas(&mut data, w, h);
        assert!(c.is_valid());
        c.outline((2, 3, 10, 6), 2, [10, 20, 30]);
        let px = |x: usize, y: usize| {
            let p = y * (4 * w + 8) + 4 * x;
            [data[p + 2], data[p + 1], data[p], data[p + 3]]
        };
        for y in 0..h {
            for x in 0..w {
                let inside_box = (2..12).contains(&x) && (3..9).contains(&y);
                let inner = (4..10).contains(&x) && (5..7).contains(&y);
                let want = if inside_box && !inner {
                    [10, 20, 30, 0]
                } else {
                    [0; 4]
                };
                assert_eq!(px(x, y), want, "at {x},{y}");
            }
        }
    }

    #[test]
    fn caption_sits_above_and_is_clipped() {
        let (w, h) = (40, 30);
        let mut data = vec![0u8; (4 * w + 8) * h];
        let mut c = canvas(&mut data, w, h);
        c.detection((1, 20, 30, 9), "car 0.9", [255, 255, 255], 1, 1);
        // Tab is rows 11..20 (7 + 2 padding), white background with black ink.
        let at = |x: usize, y: usize| data[y * (4 * w + 8) + 4 * x];
        assert_eq!(at(1, 11), 255);
        assert_eq!(at(1, 10), 0);
        let tab_pixels = (11..20).flat_map(|y| (1..35).map(move |x| (x, y)));
        let ink = tab_pixels
            .filter(|&(x, y)| at(x.min(w - 1), y) == 0)
            .count();
        assert!(ink > 20, "caption drawn ({ink} ink pixels)");
        // A box at the top: the tab goes inside; text past the right edge is clipped, no panic.
        let mut c = canvas(&mut data, w, h);
        c.detection((30, 0, 10, 10), "truck 0.99", [0, 0, 255], 3, 2);
        assert_eq!(text_size("ab", 2), (22, 14));
        assert_eq!(text_size("", 2), (0, 0));
    }

    #[test]
    fn colours_are_stable() {
        assert_eq!(class_colour(2), class_colour(22));
        assert_ne!(class_colour(0), class_colour(2));
        assert_eq!(label_colour("car"), label_colour("car"));
    }
}
