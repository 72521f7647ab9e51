//! derain-core's detection stage run on the graph writer's constant detectors and, where the
//! shared data is present, on YOLOX-Nano (the fixtures and the shared data live in derain-tools,
//! which derain-core does not depend on, so these tests live here).

use std::collections::BTreeSet;
use std::path::Path;

use derain_core::detect::{
    ChannelOrder, DetectError, Detection, Detector, DetectorConfig, ImageView, InputRange, Layout,
    PostProcess, Preprocess, Roi, RoiAnchor,
};
use derain_core::runtime::{Provider, SessionOptions};
use derain_tools::onnx::fixtures::constant_detector;

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
    if let Err(e) = derain_core::runtime::init_ort(None) {
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
    let mut d =
        Detector::from_bytes(&bytes, "fixture", &cpu(), &DetectorConfig::default()).expect("loads");
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
        derain_tools::devdata::shared_path("models/yolox_nano_416.onnx"),
        derain_tools::devdata::shared_path("clean-driving/udacity/stills/test1.jpg"),
    ) else {
        eprintln!(
            "skipping: ../shared/data/models/yolox_nano_416.onnx or \
             clean-driving/udacity/stills/test1.jpg is absent"
        );
        return;
    };
    if let Err(e) = derain_core::runtime::init_ort(None) {
        eprintln!("skipping: {e}");
        return;
    }
    let mut d = Detector::from_path(&model, &cpu(), &DetectorConfig::default()).expect("loads");
    assert_eq!(d.layout(), Layout::Yolox);
    assert_eq!(
        (d.input_size(), d.output_shape()),
        ((416, 416), &[1, 3549, 85][..])
    );
    let img = derain_tools::imageio::load_rgb(&still).expect("test1.jpg");
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
            .map(|c| (derain_core::detect::nms::iou(c, &r), c))
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
        derain_tools::devdata::shared_path("models/yolox_nano_416.onnx"),
        derain_tools::devdata::shared_path("clean-driving/bdd"),
    ) else {
        eprintln!(
            "skipping: ../shared/data/models/yolox_nano_416.onnx or clean-driving/bdd is absent"
        );
        return;
    };
    if let Err(e) = derain_core::runtime::init_ort(None) {
        eprintln!("skipping: {e}");
        return;
    }
    let mut d = Detector::from_path(&model, &cpu(), &DetectorConfig::default()).expect("loads");
    let roi: Roi = "0,0,1,0.85".parse().expect("roi");
    let mut hoods = 0;
    for path in derain_tools::imageio::list_images(&dir).expect("bdd frames") {
        let img = derain_tools::imageio::load_rgb(&path).expect("frame");
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
