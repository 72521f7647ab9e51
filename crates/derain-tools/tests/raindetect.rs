//! derain-core's rain detector run on the graph writer's fixtures (they live in derain-tools,
//! which derain-core does not depend on, so these tests live here).

use derain_core::raindetect::{RainDetector, RainDetectorError};
use derain_core::rainscore::Binned;
use derain_core::runtime::SessionOptions;

fn binned(w: usize, h: usize, v: impl Fn(usize, usize) -> f32) -> Binned {
    let mut rgb = Vec::with_capacity(3 * w * h);
    for y in 0..h {
        for x in 0..w {
            let p = v(x, y);
            rgb.extend_from_slice(&[p, p * 0.5, 1.0 - p]);
        }
    }
    Binned {
        width: w,
        height: h,
        rgb,
    }
}

fn load(bytes: &[u8]) -> Option<Result<RainDetector, RainDetectorError>> {
    if let Err(e) = derain_core::runtime::init_ort(None) {
        eprintln!("skipping: {e}");
        return None;
    }
    Some(RainDetector::from_bytes(
        bytes,
        "fixture.onnx",
        &SessionOptions::default(),
    ))
}

#[test]
fn a_detector_scores_every_frame_in_range_whatever_its_size() {
    let bytes = derain_tools::onnx::constant_rain_detector(0.8, 0.4);
    let Some(d) = load(&bytes) else { return };
    let mut d = d.expect("the fixture loads");
    assert_eq!(d.threshold(), 0.4);
    let frames = [
        binned(320, 180, |x, y| ((x * 7 + y * 3) % 11) as f32 / 10.0),
        binned(3, 2, |_, _| 0.0),
        binned(960, 540, |_, _| 1.0),
        Binned::default(),
    ];
    for b in &frames {
        let s = d.score(b).expect("scores");
        assert!((s - 0.8).abs() < 1e-5, "{s}");
    }
}

#[test]
fn files_that_are_no_detector_are_refused_naming_them() {
    let generator = derain_tools::onnx::fixtures::identity(1);
    for (bytes, why) in [
        (Vec::new(), "empty"),
        (b"garbage".to_vec(), "not an ONNX model"),
        (generator, "card"),
    ] {
        let Some(r) = load(&bytes) else { return };
        let e = r.expect_err("refused").to_string();
        assert!(e.contains("fixture.onnx") && e.contains(why), "{e}");
    }
}
