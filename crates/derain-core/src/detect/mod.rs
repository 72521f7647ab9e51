//! The detection stage (docs/ARCHITECTURE.md, The detection stage): any YOLO-family ONNX detector
//! (YOLOX, YOLOv5 or YOLOv8 output layout) run through ONNX Runtime on the providers of
//! [`crate::runtime`], with letterbox pre-processing, per-class NMS, class names, a class filter, a
//! region of interest, box drawing and the JSON-lines record of each frame.
//!
//! One [`Detector`] does the whole frame-to-boxes path, so the `yolodetect` element and the
//! command line cannot drift apart:
//!
//! frame → [`letterbox`] → ONNX Runtime → [`layout::decode`] (score threshold) → back to frame
//! pixels → class filter → [`Roi`] → [`nms::nms`] → boxes, best first.

pub mod detector;
pub mod draw;
mod font;
pub mod labels;
pub mod layout;
pub mod letterbox;
pub mod nms;

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use detector::{DetectError, Detector, DetectorConfig};
pub use labels::{COCO, Labels, LabelsError};
pub use layout::{Layout, LayoutError};
pub use letterbox::{ChannelOrder, ImageView, InputRange, Letterbox, Padding, Preprocess};

/// One detected object: a box in pixels (`x1,y1` top-left, `x2,y2` bottom-right), its score and
/// its class.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Detection {
    pub x1: f32,
    pub y1: f32,
    pub x2: f32,
    pub y2: f32,
    pub score: f32,
    pub class_id: usize,
}

impl Detection {
    pub fn width(&self) -> f32 {
        (self.x2 - self.x1).max(0.0)
    }

    pub fn height(&self) -> f32 {
        (self.y2 - self.y1).max(0.0)
    }

    pub fn area(&self) -> f32 {
        self.width() * self.height()
    }

    pub fn centre(&self) -> (f32, f32) {
        ((self.x1 + self.x2) / 2.0, (self.y1 + self.y2) / 2.0)
    }

    /// The box in whole pixels as `(x, y, width, height)`: corners rounded to the nearest pixel,
    /// the form of `GstVideoRegionOfInterestMeta`.
    pub fn pixel_rect(&self) -> (u32, u32, u32, u32) {
        let r = |v: f32| v.round().max(0.0) as u32;
        let (x1, y1) = (r(self.x1), r(self.y1));
        (
            x1,
            y1,
            r(self.x2).saturating_sub(x1),
            r(self.y2).saturating_sub(y1),
        )
    }
}

/// A region of interest in fractions of the frame (`0,0,1,1` is the whole frame). Which point of
/// a box must lie inside (edges included) for the box to be kept is a [`RoiAnchor`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Roi {
    pub x1: f32,
    pub y1: f32,
    pub x2: f32,
    pub y2: f32,
}

/// The point of a box that a [`Roi`] is tested against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RoiAnchor {
    /// The middle of the box's bottom edge: where an object meets the road. The ego car's hood,
    /// reported as a wide box along the frame's bottom edge, has its anchor on that edge, so
    /// `roi=0,0,1,0.85` drops it whatever its height, while every car ahead stands above it.
    #[default]
    BottomCentre,
    /// The centre of the box.
    Centre,
    /// The whole box: it must lie entirely inside.
    WholeBox,
}

impl Roi {
    /// Whether `d` (in pixels of a `width`×`height` frame) is kept under `anchor`.
    pub fn keeps(&self, d: &Detection, anchor: RoiAnchor, width: usize, height: usize) -> bool {
        let (w, h) = (width.max(1) as f32, height.max(1) as f32);
        let inside = |x: f32, y: f32| {
            (self.x1..=self.x2).contains(&(x / w)) && (self.y1..=self.y2).contains(&(y / h))
        };
        let (cx, cy) = d.centre();
        match anchor {
            RoiAnchor::BottomCentre => inside(cx, d.y2),
            RoiAnchor::Centre => inside(cx, cy),
            RoiAnchor::WholeBox => inside(d.x1, d.y1) && inside(d.x2, d.y2),
        }
    }
}

impl fmt::Display for Roi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{},{},{},{}", self.x1, self.y1, self.x2, self.y2)
    }
}

impl FromStr for Roi {
    type Err = String;
    /// `x1,y1,x2,y2` as fractions of the frame, `0 <= x1 < x2 <= 1` and `0 <= y1 < y2 <= 1`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            format!(
                "region of interest '{s}' is not x1,y1,x2,y2 in fractions of the frame with \
                 0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1 (e.g. 0,0,1,0.8 drops the bottom fifth)"
            )
        };
        let v: Vec<f32> = s
            .split(',')
            .map(|p| p.trim().parse::<f32>())
            .collect::<Result<_, _>>()
            .map_err(|_| bad())?;
        let [x1, y1, x2, y2] = v[..] else {
            return Err(bad());
        };
        let ok = |a: f32, b: f32| (0.0..=1.0).contains(&a) && (0.0..=1.0).contains(&b) && a < b;
        if !(ok(x1, x2) && ok(y1, y2)) {
            return Err(bad());
        }
        Ok(Self { x1, y1, x2, y2 })
    }
}

/// What to keep of the decoded boxes.
#[derive(Debug, Clone, PartialEq)]
pub struct PostProcess {
    /// Boxes scoring below this are dropped (score = objectness × class score, or the class score
    /// for YOLOv8).
    pub score_threshold: f32,
    /// Per-class NMS: overlaps above this IoU are suppressed.
    pub iou_threshold: f32,
    pub max_detections: usize,
    /// Class ids to keep; `None` keeps all.
    pub classes: Option<BTreeSet<usize>>,
    /// Boxes whose anchor falls outside are dropped; `None` keeps all.
    pub roi: Option<Roi>,
    pub roi_anchor: RoiAnchor,
}

impl Default for PostProcess {
    fn default() -> Self {
        Self {
            score_threshold: 0.25,
            iou_threshold: 0.45,
            max_detections: 300,
            classes: None,
            roi: None,
            roi_anchor: RoiAnchor::BottomCentre,
        }
    }
}

/// One box of a [`FrameRecord`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BoxRecord {
    pub x1: f32,
    pub y1: f32,
    pub x2: f32,
    pub y2: f32,
    pub score: f32,
    pub class_id: usize,
    pub label: String,
}

/// One line of the JSON-lines output: a frame's timestamp (ns, `null` when the buffer has none),
/// its number (from 0 at start), whether the detector ran on it (`false`: the boxes were carried
/// over from the last frame it ran on) and its boxes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrameRecord {
    pub timestamp: Option<u64>,
    pub frame: u64,
    pub inferred: bool,
    pub boxes: Vec<BoxRecord>,
}

impl FrameRecord {
    pub fn new(
        timestamp: Option<u64>,
        frame: u64,
        inferred: bool,
        dets: &[Detection],
        labels: &Labels,
    ) -> Self {
        let boxes = dets
            .iter()
            .map(|d| BoxRecord {
                x1: d.x1,
                y1: d.y1,
                x2: d.x2,
                y2: d.y2,
                score: d.score,
                class_id: d.class_id,
                label: labels.name(d.class_id).into_owned(),
            })
            .collect();
        Self {
            timestamp,
            frame,
            inferred,
            boxes,
        }
    }

    /// The record as one line of JSON (no trailing newline).
    pub fn to_json_line(&self) -> String {
        // Plain numbers, strings and vectors: serialising cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(x1: f32, y1: f32, x2: f32, y2: f32) -> Detection {
        Detection {
            x1,
            y1,
            x2,
            y2,
            score: 0.5,
            class_id: 2,
        }
    }

    #[test]
    fn roi_keeps_by_anchor() {
        use RoiAnchor::*;
        let roi: Roi = "0, 0, 1, 0.8".parse().unwrap();
        let keeps = |d: &Detection, a| roi.keeps(d, a, 100, 100);
        // A tall hood along the bottom of a 100x100 frame: centre y 0.7, bottom 1.0.
        let hood = det(0.0, 40.0, 100.0, 100.0);
        assert!(!keeps(&hood, BottomCentre) && keeps(&hood, Centre) && !keeps(&hood, WholeBox));
        // A car whose bottom edge dips below the line: centre y 0.75, bottom 0.85.
        let car = det(40.0, 65.0, 60.0, 85.0);
        assert!(!keeps(&car, BottomCentre) && keeps(&car, Centre) && !keeps(&car, WholeBox));
        let far = det(40.0, 50.0, 60.0, 70.0);
        assert!(keeps(&far, BottomCentre) && keeps(&far, Centre) && keeps(&far, WholeBox));
        for bad in ["0,0,1", "0,0,1,1.5", "0.5,0,0.4,1", "a,b,c,d", ""] {
            let e = bad.parse::<Roi>().unwrap_err();
            assert!(e.contains(bad) && e.contains("x1,y1,x2,y2"), "{e}");
        }
        assert_eq!(roi.to_string(), "0,0,1,0.8");
    }

    #[test]
    fn pixel_rect_rounds_corners() {
        assert_eq!(det(1.4, 2.6, 10.5, 7.4).pixel_rect(), (1, 3, 10, 4));
        assert_eq!(det(-3.0, 0.0, 2.0, 1.0).pixel_rect(), (0, 0, 2, 1));
    }

    #[test]
    fn frame_record_json_line() {
        let rec = FrameRecord::new(
            Some(40_000_000),
            1,
            true,
            &[det(1.0, 2.0, 3.0, 4.0)],
            &Labels::coco(),
        );
        let line = rec.to_json_line();
        assert!(!line.contains('\n'));
        assert_eq!(
            line,
            r#"{"timestamp":40000000,"frame":1,"inferred":true,"boxes":[{"x1":1.0,"y1":2.0,"x2":3.0,"y2":4.0,"score":0.5,"class_id":2,"label":"car"}]}"#
        );
        let back: FrameRecord = serde_json::from_str(&line).unwrap();
        assert_eq!(back, rec);
    }
}
