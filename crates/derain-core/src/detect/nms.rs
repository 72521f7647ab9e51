//! Non-maximum suppression, per class: of two boxes of the same class overlapping by more than the
//! IoU threshold, the lower-scoring one goes. Boxes of different classes never suppress each other
//! (as YOLOX's and YOLOv5's reference post-processing do).

use super::Detection;

/// Intersection over union of two boxes (continuous coordinates); 0 when either is empty.
pub fn iou(a: &Detection, b: &Detection) -> f32 {
    let iw = (a.x2.min(b.x2) - a.x1.max(b.x1)).max(0.0);
    let ih = (a.y2.min(b.y2) - a.y1.max(b.y1)).max(0.0);
    let inter = iw * ih;
    let union = a.area() + b.area() - inter;
    if union <= 0.0 { 0.0 } else { inter / union }
}

/// Greedy per-class NMS: boxes sorted by score (highest first; equal scores keep their order), a
/// box is kept unless a kept box of its class overlaps it with IoU above `iou_threshold`. At most
/// `max_detections` boxes are returned.
pub fn nms(mut dets: Vec<Detection>, iou_threshold: f32, max_detections: usize) -> Vec<Detection> {
    dets.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut kept: Vec<Detection> = Vec::new();
    for d in dets {
        if kept.len() >= max_detections {
            break;
        }
        let suppressed = kept
            .iter()
            .any(|k| k.class_id == d.class_id && iou(k, &d) > iou_threshold);
        if !suppressed {
            kept.push(d);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(x1: f32, y1: f32, x2: f32, y2: f32, score: f32, class_id: usize) -> Detection {
        Detection {
            x1,
            y1,
            x2,
            y2,
            score,
            class_id,
        }
    }

    #[test]
    fn iou_by_hand() {
        let a = det(0.0, 0.0, 10.0, 10.0, 1.0, 0);
        let b = det(5.0, 0.0, 15.0, 10.0, 1.0, 0);
        assert!((iou(&a, &b) - 50.0 / 150.0).abs() < 1e-6);
        assert_eq!(iou(&a, &a), 1.0);
        assert_eq!(iou(&a, &det(20.0, 20.0, 30.0, 30.0, 1.0, 0)), 0.0);
        assert_eq!(
            iou(
                &det(1.0, 1.0, 1.0, 1.0, 1.0, 0),
                &det(1.0, 1.0, 1.0, 1.0, 1.0, 0)
            ),
            0.0
        );
    }

    #[test]
    fn suppresses_within_a_class_only() {
        let dets = vec![
            det(0.0, 0.0, 10.0, 10.0, 0.6, 0),
            det(1.0, 0.0, 11.0, 10.0, 0.9, 0), // IoU 0.818 with the first: wins, suppresses it
            det(0.0, 0.0, 10.0, 10.0, 0.5, 1), // same place, other class: kept
            det(5.0, 0.0, 15.0, 10.0, 0.4, 0), // IoU 0.43 with the winner: kept at 0.45
            det(50.0, 50.0, 60.0, 60.0, 0.3, 0),
        ];
        let kept = nms(dets.clone(), 0.45, 100);
        let scores: Vec<f32> = kept.iter().map(|d| d.score).collect();
        assert_eq!(scores, vec![0.9, 0.5, 0.4, 0.3]);
        // A stricter threshold removes the 0.43 overlap too; max_detections truncates.
        let kept = nms(dets.clone(), 0.4, 100);
        assert_eq!(kept.len(), 3);
        assert_eq!(nms(dets, 0.45, 2).len(), 2);
    }
}
