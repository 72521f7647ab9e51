//! Mean average precision at one IoU threshold (PASCAL VOC style), for scoring a detector's boxes
//! against reference boxes image by image.
//!
//! Per class: every detection of that class over all images, best score first, is a true positive
//! when its best-overlapping reference box of the same class and image has IoU ≥ the threshold
//! and was not taken by a higher-scoring detection; otherwise (no overlap that good, or its best
//! match already taken) a false positive, as in the VOC devkit. AP is the area under the
//! precision/recall curve with all-point interpolation (VOC 2010 onwards): precision at each
//! recall is made the best precision at any higher recall, and the steps are summed. mAP averages
//! AP over the classes that have at least one reference box; a class that only has detections
//! adds nothing (there is nothing to find), a class with references and no detections adds 0.
//! Box areas are continuous (`(x2 - x1)·(y2 - y1)`), not VOC's old `+1` pixel convention.

use std::collections::BTreeMap;

use serde::Serialize;

use derain_core::detect::Detection;

/// Errors from scoring.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MapError {
    #[error(
        "the reference has no boxes at all, so average precision is undefined: use images \
         with objects, or a lower reference score threshold"
    )]
    NoReferences,
    #[error("IoU threshold {0} is not in (0, 1]")]
    BadThreshold(f32),
}

/// One image: its reference boxes and the detector's boxes (scores matter only for the latter).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImageBoxes {
    pub references: Vec<Detection>,
    pub detections: Vec<Detection>,
}

/// Average precision of one class.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassAp {
    pub class_id: usize,
    pub ap: f64,
    pub references: usize,
    pub detections: usize,
    pub true_positives: usize,
}

/// mAP and its parts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MapReport {
    pub iou_threshold: f32,
    /// Mean of [`ClassAp::ap`] over `classes`.
    pub map: f64,
    /// Classes with at least one reference box, by class id.
    pub classes: Vec<ClassAp>,
}

/// Intersection over union of two boxes (0 when either is empty).
pub fn iou(a: &Detection, b: &Detection) -> f32 {
    let w = (a.x2.min(b.x2) - a.x1.max(b.x1)).max(0.0);
    let h = (a.y2.min(b.y2) - a.y1.max(b.y1)).max(0.0);
    let inter = w * h;
    let union = a.area() + b.area() - inter;
    if union > 0.0 { inter / union } else { 0.0 }
}

/// Area under the precision/recall curve with all-point interpolation. `recall` must be
/// non-decreasing (it is, when the points come from detections ranked by score).
pub fn all_point_ap(recall: &[f64], precision: &[f64]) -> f64 {
    // Sentinels as in the VOC devkit: recall 0..1, precision 0 at both ends.
    let mut mrec = Vec::with_capacity(recall.len() + 2);
    mrec.push(0.0);
    mrec.extend_from_slice(recall);
    mrec.push(1.0);
    let mut mpre = Vec::with_capacity(precision.len() + 2);
    mpre.push(0.0);
    mpre.extend_from_slice(precision);
    mpre.push(0.0);
    // The precision envelope: the best precision at this recall or any higher one.
    for i in (0..mpre.len() - 1).rev() {
        mpre[i] = mpre[i].max(mpre[i + 1]);
    }
    (1..mrec.len())
        .filter(|&i| mrec[i] != mrec[i - 1])
        .map(|i| (mrec[i] - mrec[i - 1]) * mpre[i])
        .sum()
}

/// mAP at `iou_threshold` over `images`, classes as in the module documentation.
pub fn mean_average_precision(
    images: &[ImageBoxes],
    iou_threshold: f32,
) -> Result<MapReport, MapError> {
    if !(iou_threshold > 0.0 && iou_threshold <= 1.0) {
        return Err(MapError::BadThreshold(iou_threshold));
    }
    let mut references: BTreeMap<usize, usize> = BTreeMap::new();
    for img in images {
        for r in &img.references {
            *references.entry(r.class_id).or_default() += 1;
        }
    }
    if references.is_empty() {
        return Err(MapError::NoReferences);
    }
    let classes: Vec<ClassAp> = references
        .iter()
        .map(|(&class_id, &n_ref)| class_ap(images, class_id, n_ref, iou_threshold))
        .collect();
    let map = classes.iter().map(|c| c.ap).sum::<f64>() / classes.len() as f64;
    Ok(MapReport {
        iou_threshold,
        map,
        classes,
    })
}

fn class_ap(images: &[ImageBoxes], class_id: usize, n_ref: usize, iou_threshold: f32) -> ClassAp {
    // (score, image, detection) of this class over all images, best first; ties keep image
    // order, so the result does not depend on the sort's stability.
    let mut ranked: Vec<(f32, usize, &Detection)> = images
        .iter()
        .enumerate()
        .flat_map(|(i, img)| {
            img.detections
                .iter()
                .filter(move |d| d.class_id == class_id)
                .map(move |d| (d.score, i, d))
        })
        .collect();
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let refs: Vec<Vec<&Detection>> = images
        .iter()
        .map(|img| {
            img.references
                .iter()
                .filter(|r| r.class_id == class_id)
                .collect()
        })
        .collect();
    let mut taken: Vec<Vec<bool>> = refs.iter().map(|r| vec![false; r.len()]).collect();
    let (mut tp, mut fp) = (0usize, 0usize);
    let mut recall = Vec::with_capacity(ranked.len());
    let mut precision = Vec::with_capacity(ranked.len());
    for (_, img, d) in &ranked {
        let best = refs[*img]
            .iter()
            .enumerate()
            .map(|(j, r)| (j, iou(d, r)))
            .max_by(|a, b| a.1.total_cmp(&b.1));
        match best {
            Some((j, o)) if o >= iou_threshold && !taken[*img][j] => {
                taken[*img][j] = true;
                tp += 1;
            }
            _ => fp += 1,
        }
        recall.push(tp as f64 / n_ref as f64);
        precision.push(tp as f64 / (tp + fp) as f64);
    }
    ClassAp {
        class_id,
        ap: all_point_ap(&recall, &precision),
        references: n_ref,
        detections: ranked.len(),
        true_positives: tp,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(x1: f32, y1: f32, x2: f32, y2: f32, score: f32, class_id: usize) -> Detection {
        Detection {
            x1,
            y1,
            x2,
            y2,
            score,
            class_id,
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn iou_of_known_boxes() {
        let a = b(0.0, 0.0, 10.0, 10.0, 1.0, 0);
        assert_eq!(iou(&a, &a), 1.0);
        // Half overlap: 50 / 150.
        let c = b(5.0, 0.0, 15.0, 10.0, 1.0, 0);
        assert!((iou(&a, &c) - 1.0 / 3.0).abs() < 1e-6);
        assert_eq!(iou(&a, &b(20.0, 20.0, 30.0, 30.0, 1.0, 0)), 0.0);
        assert_eq!(iou(&a, &b(3.0, 3.0, 3.0, 3.0, 1.0, 0)), 0.0);
    }

    #[test]
    fn perfect_detections_score_one() {
        let refs = vec![
            b(0.0, 0.0, 10.0, 10.0, 1.0, 2),
            b(20.0, 0.0, 30.0, 10.0, 1.0, 0),
        ];
        let images = vec![
            ImageBoxes {
                references: refs.clone(),
                detections: refs.clone(),
            },
            ImageBoxes {
                references: vec![refs[0]],
                detections: vec![refs[0]],
            },
        ];
        let r = mean_average_precision(&images, 0.5).unwrap();
        assert!(close(r.map, 1.0), "{r:?}");
        assert_eq!(r.classes.len(), 2);
        assert_eq!(r.classes[1].references, 2);
    }

    #[test]
    fn false_positive_ranked_above_the_true_one() {
        // One reference; a miss at 0.9 then the hit at 0.8: precision 0 then 1/2 at recall 1,
        // so the envelope is 1/2 over the whole recall range.
        let images = vec![ImageBoxes {
            references: vec![b(0.0, 0.0, 10.0, 10.0, 1.0, 0)],
            detections: vec![
                b(50.0, 50.0, 60.0, 60.0, 0.9, 0),
                b(1.0, 1.0, 10.0, 10.0, 0.8, 0),
            ],
        }];
        let r = mean_average_precision(&images, 0.5).unwrap();
        assert!(close(r.map, 0.5), "{r:?}");
        assert_eq!(r.classes[0].true_positives, 1);
    }

    #[test]
    fn interpolation_takes_the_best_later_precision() {
        // Two references; hit (0.9), miss (0.8), hit (0.7): recall .5 .5 1, precision 1 .5 2/3.
        // Envelope: 1 up to recall .5, then 2/3: AP = .5 + .5 * 2/3.
        let images = vec![ImageBoxes {
            references: vec![
                b(0.0, 0.0, 10.0, 10.0, 1.0, 0),
                b(20.0, 0.0, 30.0, 10.0, 1.0, 0),
            ],
            detections: vec![
                b(0.0, 0.0, 10.0, 10.0, 0.9, 0),
                b(40.0, 0.0, 50.0, 10.0, 0.8, 0),
                b(20.0, 0.0, 30.0, 10.0, 0.7, 0),
            ],
        }];
        let r = mean_average_precision(&images, 0.5).unwrap();
        assert!(close(r.map, 0.5 + 0.5 * 2.0 / 3.0), "{r:?}");
    }

    #[test]
    fn no_detections_score_zero() {
        let images = vec![ImageBoxes {
            references: vec![b(0.0, 0.0, 10.0, 10.0, 1.0, 0)],
            detections: vec![],
        }];
        let r = mean_average_precision(&images, 0.5).unwrap();
        assert_eq!(r.map, 0.0);
    }

    #[test]
    fn duplicates_wrong_class_and_other_image_are_false_positives() {
        let r0 = b(0.0, 0.0, 10.0, 10.0, 1.0, 0);
        let images = vec![
            ImageBoxes {
                references: vec![r0],
                // The duplicate finds its best match taken; the class-1 box matches nothing.
                detections: vec![
                    b(0.0, 0.0, 10.0, 10.0, 0.9, 0),
                    b(0.0, 0.0, 10.0, 9.0, 0.8, 0),
                    b(0.0, 0.0, 10.0, 10.0, 0.95, 1),
                ],
            },
            // A box where this image has no reference.
            ImageBoxes {
                references: vec![],
                detections: vec![b(0.0, 0.0, 10.0, 10.0, 0.85, 0)],
            },
        ];
        let r = mean_average_precision(&images, 0.5).unwrap();
        // Class 0: hit first, then two misses: AP 1. Class 1 has no references: not averaged.
        assert_eq!(r.classes.len(), 1);
        assert!(close(r.map, 1.0), "{r:?}");
        assert_eq!(r.classes[0].detections, 3);
        assert_eq!(r.classes[0].true_positives, 1);
    }

    #[test]
    fn classes_are_averaged_and_threshold_is_inclusive() {
        // IoU exactly 0.5: a 20x10 detection over a 10x10 reference (100 / 200).
        let images = vec![ImageBoxes {
            references: vec![
                b(0.0, 0.0, 10.0, 10.0, 1.0, 0),
                b(0.0, 0.0, 10.0, 10.0, 1.0, 1),
            ],
            detections: vec![b(0.0, 0.0, 20.0, 10.0, 0.9, 0)],
        }];
        let r = mean_average_precision(&images, 0.5).unwrap();
        // Class 0 AP 1 (IoU 0.5 counts), class 1 AP 0: mean 0.5.
        assert!(close(r.map, 0.5), "{r:?}");
        let strict = mean_average_precision(&images, 0.51).unwrap();
        assert_eq!(strict.map, 0.0);
    }

    #[test]
    fn undefined_cases_are_errors() {
        let none = vec![ImageBoxes {
            references: vec![],
            detections: vec![b(0.0, 0.0, 1.0, 1.0, 0.5, 0)],
        }];
        assert_eq!(
            mean_average_precision(&none, 0.5),
            Err(MapError::NoReferences)
        );
        assert_eq!(
            mean_average_precision(&[], 0.0),
            Err(MapError::BadThreshold(0.0))
        );
    }
}
