//! The three YOLO output layouts and their decoding from a raw output tensor into boxes in the
//! network's input pixels (before the letterbox is undone).
//!
//! | layout | output shape | a row (or column) | score |
//! |---|---|---|---|
//! | YOLOX  | `[1, G, 5+C]` | `tx, ty, tw, th, obj, cls…`, grid-relative: `cx = (tx+gx)·s`, `w = exp(tw)·s` | `obj × cls` |
//! | YOLOv5 | `[1, A, 5+C]` | `cx, cy, w, h, obj, cls…` already decoded, input pixels | `obj × cls` |
//! | YOLOv8 | `[1, 4+C, A]` | transposed: column `a` is `cx, cy, w, h, cls…`, input pixels | `cls` |
//!
//! `G` is the number of grid cells over strides 8, 16 and 32 for the input size ([`grid_points`]);
//! YOLOX's rows are the stride-8 grid, then 16, then 32, row-major within each. Scores are taken
//! as they come (the exporters already apply the sigmoid); each box keeps its best class.
//!
//! # Telling the layouts apart ([`infer_layout`])
//!
//! The output must be rank 3 with batch 1, `[1, d1, d2]`; then, in order:
//!
//! 1. `d1 == G` and `d2 ≥ 6`: one row per grid cell. It is **YOLOX** (raw, grid-relative) when
//!    every `|tx|` in the first column is below [`RAW_OFFSET_LIMIT`] cells, and **YOLOv5**
//!    (decoded) otherwise: a decoded centre reaches across the input, a raw offset stays within a
//!    cell or two. (YOLOX exported with its decoding inside the graph is thereby read correctly as
//!    the YOLOv5 layout.) The first column is judged on the detector's warm-up run.
//! 2. `d2 == G` and `5 ≤ d1 < d2`: **YOLOv8**.
//! 3. `d1 > d2 ≥ 6`: **YOLOv5** (anchored heads have `A = 3·G` rows; other strides are accepted).
//! 4. `d2 > d1 ≥ 5`: **YOLOv8**.
//!
//! Anything else is a [`LayoutError`] that names the shape and the shapes accepted. A layout
//! given explicitly ([`check_layout`]) skips the guessing but must still fit the shape.

use std::fmt;
use std::str::FromStr;

use super::Detection;

/// The strides of the three detection heads.
pub const STRIDES: [usize; 3] = [8, 16, 32];

/// A first column whose values all stay below this (in grid cells) holds raw YOLOX offsets.
pub const RAW_OFFSET_LIMIT: f32 = 16.0;

/// A detector's output layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Layout {
    /// `[1, G, 5+C]`, grid-relative boxes with log-space sizes, objectness.
    Yolox,
    /// `[1, A, 5+C]`, decoded boxes in input pixels, objectness.
    Yolov5,
    /// `[1, 4+C, A]`, decoded boxes in input pixels, no objectness.
    Yolov8,
}

impl Layout {
    pub const ALL: [Layout; 3] = [Layout::Yolox, Layout::Yolov5, Layout::Yolov8];

    /// The lower-case name used in properties and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Layout::Yolox => "yolox",
            Layout::Yolov5 => "yolov5",
            Layout::Yolov8 => "yolov8",
        }
    }

    /// Values per box besides the class scores.
    fn box_values(self) -> usize {
        match self {
            Layout::Yolox | Layout::Yolov5 => 5,
            Layout::Yolov8 => 4,
        }
    }
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Layout {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Layout::ALL
            .into_iter()
            .find(|l| l.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("unknown layout '{s}': expected yolox, yolov5 or yolov8"))
    }
}

/// An output tensor that fits no layout (or not the layout asked for).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error(
    "detector output shape {shape:?} {problem}; for a {input_w}x{input_h} input the accepted \
     shapes are YOLOX [1, {grid}, 5+C] (one row per grid cell of strides 8/16/32), YOLOv5 \
     [1, A, 5+C] (A > 5+C rows of decoded boxes) and YOLOv8 [1, 4+C, A] (A > 4+C columns), with \
     C >= 1 classes"
)]
pub struct LayoutError {
    pub shape: Vec<usize>,
    pub input_h: usize,
    pub input_w: usize,
    pub grid: usize,
    /// What is wrong, e.g. "fits none of the YOLO layouts".
    pub problem: String,
}

impl LayoutError {
    fn new(shape: &[usize], input_h: usize, input_w: usize, problem: impl Into<String>) -> Self {
        Self {
            shape: shape.to_vec(),
            input_h,
            input_w,
            grid: grid_points(input_h, input_w),
            problem: problem.into(),
        }
    }
}

/// Grid cells over the strides 8, 16 and 32 for an `input_h`×`input_w` input: Σ ⌈H/s⌉·⌈W/s⌉.
pub fn grid_points(input_h: usize, input_w: usize) -> usize {
    // Saturating: an absurd input size must give an impossible grid, not an overflow panic
    // (found by fuzzing).
    STRIDES.iter().fold(0, |sum: usize, &s| {
        sum.saturating_add(input_h.div_ceil(s).saturating_mul(input_w.div_ceil(s)))
    })
}

/// `[d1, d2]` of a `[1, d1, d2]` shape.
fn dims(shape: &[usize]) -> Option<(usize, usize)> {
    match shape {
        [1, d1, d2] => Some((*d1, *d2)),
        _ => None,
    }
}

/// Guesses the layout from the output shape (and, for grid-sized outputs, the first column of
/// `data`); see the module documentation for the rule.
pub fn infer_layout(
    shape: &[usize],
    data: &[f32],
    input_h: usize,
    input_w: usize,
) -> Result<Layout, LayoutError> {
    let none = || LayoutError::new(shape, input_h, input_w, "fits none of the YOLO layouts");
    let (d1, d2) = dims(shape).ok_or_else(none)?;
    let grid = grid_points(input_h, input_w);
    if d1 == grid && d2 >= 6 {
        let raw = data
            .chunks_exact(d2)
            .all(|row| row[0].abs() < RAW_OFFSET_LIMIT);
        return Ok(if raw { Layout::Yolox } else { Layout::Yolov5 });
    }
    if d2 == grid && (5..d2).contains(&d1) {
        return Ok(Layout::Yolov8);
    }
    if d2 >= 6 && d1 > d2 {
        return Ok(Layout::Yolov5);
    }
    if d1 >= 5 && d2 > d1 {
        return Ok(Layout::Yolov8);
    }
    Err(none())
}

/// Checks that `shape` fits `layout` (given explicitly rather than guessed).
pub fn check_layout(
    layout: Layout,
    shape: &[usize],
    input_h: usize,
    input_w: usize,
) -> Result<(), LayoutError> {
    let wrong = || {
        LayoutError::new(
            shape,
            input_h,
            input_w,
            format!("does not fit the {layout} layout that was asked for"),
        )
    };
    let (d1, d2) = dims(shape).ok_or_else(wrong)?;
    let fits = match layout {
        Layout::Yolox => d1 == grid_points(input_h, input_w) && d2 >= 6,
        Layout::Yolov5 => d1 >= 1 && d2 >= 6,
        Layout::Yolov8 => d2 >= 1 && d1 >= 5,
    };
    if fits { Ok(()) } else { Err(wrong()) }
}

/// The number of classes `layout` reads from `shape` (which must fit it).
pub fn num_classes(layout: Layout, shape: &[usize]) -> usize {
    let Some((d1, d2)) = dims(shape) else {
        return 0;
    };
    let per_box = if layout == Layout::Yolov8 { d1 } else { d2 };
    per_box.saturating_sub(layout.box_values())
}

/// The best class and its score among `scores`.
fn best_class(scores: impl Iterator<Item = f32>) -> (usize, f32) {
    scores
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (c, s)| {
            if s > best.1 { (c, s) } else { best }
        })
}

fn from_centre(cx: f32, cy: f32, w: f32, h: f32, score: f32, class_id: usize) -> Detection {
    Detection {
        x1: cx - w / 2.0,
        y1: cy - h / 2.0,
        x2: cx + w / 2.0,
        y2: cy + h / 2.0,
        score,
        class_id,
    }
}

/// Decodes every box scoring at least `score_threshold` (best class per box), in input pixels.
/// `shape` and `data` are the output tensor's; `layout` must fit them ([`check_layout`]).
pub fn decode(
    layout: Layout,
    shape: &[usize],
    data: &[f32],
    input_h: usize,
    input_w: usize,
    score_threshold: f32,
) -> Result<Vec<Detection>, LayoutError> {
    check_layout(layout, shape, input_h, input_w)?;
    let (d1, d2) = dims(shape).unwrap_or_default();
    if d1.checked_mul(d2) != Some(data.len()) {
        return Err(LayoutError::new(
            shape,
            input_h,
            input_w,
            format!("came with {} values instead of {d1}x{d2}", data.len()),
        ));
    }
    let mut out = Vec::new();
    match layout {
        Layout::Yolox => {
            let mut rows = data.chunks_exact(d2);
            for s in STRIDES {
                let (gh, gw) = (input_h.div_ceil(s), input_w.div_ceil(s));
                let sf = s as f32;
                for gy in 0..gh {
                    for gx in 0..gw {
                        let Some(r) = rows.next() else {
                            return Ok(out);
                        };
                        let (class_id, cls) = best_class(r[5..].iter().copied());
                        let score = r[4] * cls;
                        if score >= score_threshold {
                            let cx = (r[0] + gx as f32) * sf;
                            let cy = (r[1] + gy as f32) * sf;
                            let (w, h) = (r[2].exp() * sf, r[3].exp() * sf);
                            out.push(from_centre(cx, cy, w, h, score, class_id));
                        }
                    }
                }
            }
        }
        Layout::Yolov5 => {
            for r in data.chunks_exact(d2) {
                let (class_id, cls) = best_class(r[5..].iter().copied());
                let score = r[4] * cls;
                if score >= score_threshold {
                    out.push(from_centre(r[0], r[1], r[2], r[3], score, class_id));
                }
            }
        }
        Layout::Yolov8 => {
            let a = d2;
            let at = |row: usize, i: usize| data[row * a + i];
            for i in 0..a {
                let (class_id, score) = best_class((4..d1).map(|row| at(row, i)));
                if score >= score_threshold {
                    out.push(from_centre(
                        at(0, i),
                        at(1, i),
                        at(2, i),
                        at(3, i),
                        score,
                        class_id,
                    ));
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(d: &Detection, want: [f32; 4], score: f32, class_id: usize) {
        let got = [d.x1, d.y1, d.x2, d.y2];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-3, "box {got:?}, want {want:?}");
        }
        assert!(
            (d.score - score).abs() < 1e-6,
            "score {} vs {score}",
            d.score
        );
        assert_eq!(d.class_id, class_id);
    }

    #[test]
    fn grid_points_match_the_known_models() {
        assert_eq!(grid_points(416, 416), 3549); // YOLOX-Nano
        assert_eq!(grid_points(640, 640), 8400); // YOLOv8 at 640
        assert_eq!(3 * grid_points(640, 640), 25200); // YOLOv5 at 640
        assert_eq!(grid_points(36, 20), 5 * 3 + 3 * 2 + 2); // ceil per stride
    }

    #[test]
    fn yolox_rows_decode_on_their_grid() {
        // 32x64 input: strides 8, 16, 32 give 4x8, 2x4 and 1x2 grids: 32 + 8 + 2 = 42 rows.
        let (h, w, c) = (32, 64, 2);
        let mut data = vec![0.0_f32; 42 * (5 + c)];
        // Row 9 = stride 8, gy 1, gx 1; row 32 + 5 = stride 16, gy 1, gx 1; last row = stride 32,
        // gy 0, gx 1.
        let mut set = |row: usize, v: [f32; 7]| data[row * 7..row * 7 + 7].copy_from_slice(&v);
        set(9, [0.5, 0.25, 0.0, 1.0_f32.ln(), 0.9, 0.2, 0.8]);
        set(37, [0.0, 0.0, 2.0_f32.ln(), 0.5_f32.ln(), 0.5, 1.0, 0.1]);
        set(41, [0.5, 0.5, 0.0, 0.0, 0.1, 0.5, 0.5]); // score 0.05: under the threshold
        let d = decode(Layout::Yolox, &[1, 42, 7], &data, h, w, 0.3).unwrap();
        assert_eq!(d.len(), 2, "{d:?}");
        // cx = (0.5+1)*8 = 12, cy = (0.25+1)*8 = 10, w = h = 8.
        close(&d[0], [8.0, 6.0, 16.0, 14.0], 0.9 * 0.8, 1);
        // cx = cy = 16, w = 32, h = 8.
        close(&d[1], [0.0, 12.0, 32.0, 20.0], 0.5, 0);
    }

    #[test]
    fn yolov5_rows_are_decoded_pixels_times_objectness() {
        let data = vec![
            100.0, 50.0, 20.0, 10.0, 0.5, 0.2, 0.9, 0.1, //
            10.0, 10.0, 4.0, 4.0, 0.2, 0.9, 0.0, 0.0,
        ];
        let d = decode(Layout::Yolov5, &[1, 2, 8], &data, 64, 64, 0.25).unwrap();
        assert_eq!(d.len(), 1);
        close(&d[0], [90.0, 45.0, 110.0, 55.0], 0.45, 1);
    }

    #[test]
    fn yolov8_columns_are_transposed_without_objectness() {
        // [1, 4+2, 3]: three boxes as columns.
        let data = vec![
            10.0, 20.0, 30.0, // cx
            10.0, 20.0, 30.0, // cy
            4.0, 6.0, 8.0, // w
            2.0, 2.0, 2.0, // h
            0.1, 0.7, 0.2, // class 0
            0.3, 0.6, 0.1, // class 1
        ];
        let d = decode(Layout::Yolov8, &[1, 6, 3], &data, 64, 64, 0.25).unwrap();
        assert_eq!(d.len(), 2);
        close(&d[0], [8.0, 9.0, 12.0, 11.0], 0.3, 1);
        close(&d[1], [17.0, 19.0, 23.0, 21.0], 0.7, 0);
    }

    #[test]
    fn layouts_are_inferred_from_shape_and_first_column() {
        let (h, w) = (416, 416);
        let raw = vec![0.5_f32; 3549 * 85];
        assert_eq!(infer_layout(&[1, 3549, 85], &raw, h, w), Ok(Layout::Yolox));
        let mut decoded = raw.clone();
        decoded[3548 * 85] = 400.0; // a decoded centre near the right edge
        assert_eq!(
            infer_layout(&[1, 3549, 85], &decoded, h, w),
            Ok(Layout::Yolov5)
        );
        assert_eq!(
            infer_layout(&[1, 3 * 3549, 85], &[], h, w),
            Ok(Layout::Yolov5)
        );
        assert_eq!(infer_layout(&[1, 84, 3549], &[], h, w), Ok(Layout::Yolov8));
        assert_eq!(
            infer_layout(&[1, 84, 8400], &[], 640, 640),
            Ok(Layout::Yolov8)
        );
        assert_eq!(infer_layout(&[1, 5, 100], &[], h, w), Ok(Layout::Yolov8));
        for bad in [
            &[1, 7, 3][..],
            &[3549, 85],
            &[2, 3549, 85],
            &[1, 4, 4],
            &[1, 10, 5],
        ] {
            let e = infer_layout(bad, &[], h, w).unwrap_err();
            let msg = e.to_string();
            assert!(
                msg.contains(&format!("{bad:?}")) && msg.contains("[1, 3549, 5+C]"),
                "{msg}"
            );
        }
    }

    #[test]
    fn forced_layout_must_fit() {
        assert!(check_layout(Layout::Yolox, &[1, 3549, 85], 416, 416).is_ok());
        let e = check_layout(Layout::Yolox, &[1, 3548, 85], 416, 416).unwrap_err();
        assert!(e.to_string().contains("yolox layout"), "{e}");
        assert!(check_layout(Layout::Yolov8, &[1, 84, 8400], 640, 640).is_ok());
        assert!(check_layout(Layout::Yolov8, &[1, 4, 8400], 640, 640).is_err());
        assert_eq!(num_classes(Layout::Yolov8, &[1, 84, 8400]), 80);
        assert_eq!(num_classes(Layout::Yolox, &[1, 3549, 85]), 80);
    }

    #[test]
    fn names_round_trip() {
        for l in Layout::ALL {
            assert_eq!(l.as_str().parse::<Layout>(), Ok(l));
        }
        assert!("yolov7".parse::<Layout>().unwrap_err().contains("yolov8"));
    }
}
