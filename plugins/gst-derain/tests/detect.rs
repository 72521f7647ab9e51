//! The detection elements: `yolodetect` with fixture detectors whose outputs are known (written by
//! the library's ONNX writer) and with the shared YOLOX-Nano on a real dashcam still (skipped when
//! ../shared/data is absent), and `boxoverlay` on frames carrying region-of-interest metas.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Once;

use gst::prelude::*;
use gst_check::Harness;
use gst_video::prelude::*;

use derain_core::detect::FrameRecord;
use derain_tools::onnx::fixtures::constant_detector;

fn init() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        gst::init().expect("GStreamer initialises");
        gstderain::plugin_register_static().expect("plugin registers");
    });
}

/// Whether ONNX Runtime loads here; prints why not.
fn have_ort() -> bool {
    match derain_core::runtime::init_ort(None) {
        Ok(_) => true,
        Err(e) => {
            eprintln!("skipping: {e}");
            false
        }
    }
}

fn temp_file(bytes: &[u8], suffix: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::Builder::new()
        .suffix(suffix)
        .tempfile()
        .expect("temp file");
    f.write_all(bytes).expect("write");
    f.flush().expect("flush");
    f
}

/// The fixtures take 64x64 inputs: 8x8 + 4x4 + 2x2 = 84 grid cells.
const G: usize = 84;

/// A YOLOX-layout detector with three boxes for a 128x64 frame (letterbox scale 0.5):
/// class 1 at [40,32,72,48] score 0.72, class 1 at [48,32,80,48] score 0.6 (suppressed by the
/// first, IoU 0.6) and class 0 at [32,32,64,64] score 0.45.
fn yolox_fixture() -> Vec<u8> {
    let mut v = vec![0.0_f32; G * 7];
    let mut set = |row: usize, r: [f32; 7]| v[row * 7..row * 7 + 7].copy_from_slice(&r);
    let ln2 = 2.0_f32.ln();
    set(19, [0.5, 0.5, ln2, 0.0, 0.9, 0.1, 0.8]);
    set(20, [0.0, 0.5, ln2, 0.0, 0.8, 0.2, 0.75]);
    set(64 + 5, [0.5, 0.5, 0.0, 0.0, 0.5, 0.9, 0.1]);
    constant_detector(Some((64, 64)), &[1, G, 7], v)
}

fn rgb_buffer(width: usize, height: usize, fill: u8, pts_ms: u64) -> gst::Buffer {
    let mut b = gst::Buffer::from_mut_slice(vec![fill; width * height * 3]);
    b.get_mut()
        .expect("writable")
        .set_pts(gst::ClockTime::from_mseconds(pts_ms));
    b
}

fn rgb_caps(width: usize, height: usize) -> gst::Caps {
    gst_video::VideoInfo::builder(gst_video::VideoFormat::Rgb, width as u32, height as u32)
        .fps(gst::Fraction::new(25, 1))
        .build()
        .expect("video info")
        .to_caps()
        .expect("caps")
}

/// (type, rect, score, class-id, label, inferred) of each ROI meta.
type Roi = (String, (u32, u32, u32, u32), f64, u32, String, bool);

fn rois(buf: &gst::BufferRef) -> Vec<Roi> {
    buf.iter_meta::<gst_video::VideoRegionOfInterestMeta>()
        .map(|m| {
            let p = m.param("detection").expect("detection params");
            (
                m.roi_type().to_owned(),
                m.rect(),
                p.get::<f64>("score").expect("score"),
                p.get::<u32>("class-id").expect("class-id"),
                p.get::<String>("label").expect("label"),
                p.get::<bool>("inferred").expect("inferred"),
            )
        })
        .collect()
}

fn detect_harness(props: &str) -> Harness {
    // A single element parses to that element (not a bin), so its properties stay reachable.
    let el = gst::parse::launch(&format!("yolodetect provider=cpu {props}")).expect("yolodetect");
    let mut h = Harness::with_element(&el, Some("sink"), Some("src"));
    h.set_src_caps(rgb_caps(128, 64));
    h
}

#[test]
fn fixture_boxes_arrive_as_roi_metas_with_params() {
    init();
    if !have_ort() {
        return;
    }
    let model = temp_file(&yolox_fixture(), ".onnx");
    let labels = temp_file(b"wiper\nraindrop\n", ".txt");
    let mut h = detect_harness(&format!(
        "model=\"{}\" labels-file=\"{}\"",
        model.path().display(),
        labels.path().display()
    ));
    let out = h
        .push_and_pull(rgb_buffer(128, 64, 90, 0))
        .expect("a frame");
    let got = rois(&out);
    let want = [
        ("raindrop", (40, 32, 32, 16), 0.9 * 0.8, 1),
        ("wiper", (32, 32, 32, 32), 0.5 * 0.9, 0),
    ];
    assert_eq!(got.len(), want.len(), "{got:?}");
    for (g, (label, rect, score, class_id)) in got.iter().zip(want) {
        assert_eq!(
            (g.0.as_str(), g.1, g.3, g.4.as_str(), g.5),
            (label, rect, class_id, label, true)
        );
        assert!((g.2 - score).abs() < 1e-6, "score {} vs {score}", g.2);
    }
    // The fractional corners agree with the whole-pixel rectangle.
    for m in out.iter_meta::<gst_video::VideoRegionOfInterestMeta>() {
        let p = m.param("detection").expect("detection params");
        let c = |f: &str| p.get::<f64>(f).unwrap_or_else(|_| panic!("{f}"));
        let (x, y, w, h) = m.rect();
        let want = [x, y, x + w, y + h].map(f64::from);
        let got = [c("x1"), c("y1"), c("x2"), c("y2")];
        assert!(
            got.iter().zip(want).all(|(g, w)| (g - w).abs() <= 0.5),
            "corners {got:?} vs rect {want:?}"
        );
    }
    let el = h.element().expect("element");
    assert_eq!(el.property::<String>("active-layout"), "yolox");
    assert_eq!(el.property::<String>("active-provider"), "cpu");
    // Frame pixels pass through untouched.
    let map = out.map_readable().expect("map");
    assert!(map.iter().all(|&b| b == 90));
}

#[test]
fn class_filter_roi_and_thresholds_drop_boxes() {
    init();
    if !have_ort() {
        return;
    }
    let model = temp_file(&yolox_fixture(), ".onnx");
    let m = format!("model=\"{}\"", model.path().display());
    let count = |props: &str| {
        let mut h = detect_harness(&format!("{m} {props}"));
        let out = h.push_and_pull(rgb_buffer(128, 64, 90, 0)).expect("frame");
        rois(&out).len()
    };
    assert_eq!(count(""), 2);
    assert_eq!(count("classes=person"), 1); // class 0 in COCO
    assert_eq!(count("classes=1,0"), 2);
    assert_eq!(count("score-threshold=0.5"), 1);
    assert_eq!(count("iou-threshold=0.7"), 3);
    assert_eq!(count("max-detections=1"), 1);
    // Boxes [40,32,72,48] and [32,32,64,64] in a 128x64 frame: bottom centres (56,48) and
    // (48,64), centres (56,40) and (48,48).
    assert_eq!(count("roi=0,0,0.4,1"), 1);
    assert_eq!(count("roi=0,0,1,0.5"), 0);
    assert_eq!(count("roi=0,0,1,0.74"), 0);
    assert_eq!(count("roi=0,0,1,0.74 roi-anchor=centre"), 1);
    assert_eq!(count("roi=0,0,1,0.8"), 1);
    assert_eq!(count("roi=0.3,0,1,1 roi-anchor=centre"), 2);
    assert_eq!(count("roi=0.3,0,1,1 roi-anchor=whole-box"), 1);
}

#[test]
fn interval_reattaches_the_last_boxes() {
    init();
    if !have_ort() {
        return;
    }
    let model = temp_file(&yolox_fixture(), ".onnx");
    let json = tempfile::tempdir().expect("dir");
    let json_path = json.path().join("boxes.jsonl");
    let mut h = detect_harness(&format!(
        "model=\"{}\" interval=3 json-path=\"{}\"",
        model.path().display(),
        json_path.display()
    ));
    let mut metas = Vec::new();
    for i in 0..5 {
        let out = h
            .push_and_pull(rgb_buffer(128, 64, 90, 40 * i))
            .expect("frame");
        metas.push(rois(&out));
    }
    let el = h.element().expect("element");
    assert_eq!(el.property::<u64>("frames-processed"), 5);
    assert_eq!(el.property::<u64>("inferences"), 2); // frames 0 and 3
    let inferred: Vec<bool> = metas.iter().map(|r| r[0].5).collect();
    assert_eq!(inferred, vec![true, false, false, true, false]);
    for m in &metas {
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].1, metas[0][0].1);
    }
    assert!(h.push_event(gst::event::Eos::new()));
    let records = read_records(&json_path);
    assert_eq!(records.len(), 5);
    for (i, (r, m)) in records.iter().zip(&metas).enumerate() {
        assert_eq!(r.frame, i as u64);
        assert_eq!(r.timestamp, Some(40_000_000 * i as u64));
        assert_eq!(r.inferred, m[0].5);
        assert_records_match_metas(r, m);
    }
}

fn read_records(path: &Path) -> Vec<FrameRecord> {
    let text = std::fs::read_to_string(path).expect("JSON-lines file");
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l}: {e}")))
        .collect()
}

/// The metas are the JSON boxes with their corners rounded to whole pixels.
fn assert_records_match_metas(r: &FrameRecord, metas: &[Roi]) {
    assert_eq!(r.boxes.len(), metas.len(), "{r:?} vs {metas:?}");
    for (b, m) in r.boxes.iter().zip(metas) {
        let (x1, y1) = (b.x1.round() as u32, b.y1.round() as u32);
        let rect = (x1, y1, b.x2.round() as u32 - x1, b.y2.round() as u32 - y1);
        assert_eq!(rect, m.1, "{b:?} vs {m:?}");
        assert_eq!((&b.label, b.class_id as u32), (&m.4, m.3));
        assert!((f64::from(b.score) - m.2).abs() < 1e-6);
    }
}

/// How long a test waits for an event (EOS, an error) before it calls the pipeline hung: far
/// longer than anything takes, so that a loaded machine is slow, never failed.
const PATIENCE_S: u64 = 300;

/// Runs `launch` to completion (or failure) and returns the first error message on the bus.
fn first_error(launch: &str) -> Option<String> {
    let pipeline = match gst::parse::launch(launch) {
        Ok(p) => p,
        Err(e) => return Some(e.to_string()),
    };
    let bus = pipeline.bus().expect("bus");
    let _ = pipeline.set_state(gst::State::Playing);
    // The end or an error, however long a loaded machine takes; a pipeline still running after
    // PATIENCE hangs, which is neither "no error" nor the error a test looks for.
    let end = bus.timed_pop_filtered(
        gst::ClockTime::from_seconds(PATIENCE_S),
        &[gst::MessageType::Error, gst::MessageType::Eos],
    );
    let _ = pipeline.set_state(gst::State::Null);
    match end.as_ref().map(|m| m.view()) {
        Some(gst::MessageView::Error(e)) => Some(format!("{} ({:?})", e.error(), e.debug())),
        Some(_) => None,
        None => panic!("{launch}: neither EOS nor an error within {PATIENCE_S} s"),
    }
}

fn detect_launch(props: &str) -> String {
    format!(
        "videotestsrc num-buffers=3 ! video/x-raw,format=RGB,width=128,height=64 \
         ! yolodetect provider=cpu {props} ! boxoverlay ! fakesink"
    )
}

#[test]
fn good_pipeline_runs_to_eos() {
    init();
    if !have_ort() {
        return;
    }
    let model = temp_file(&yolox_fixture(), ".onnx");
    let launch = detect_launch(&format!("model=\"{}\"", model.path().display()));
    assert_eq!(first_error(&launch), None);
}

#[test]
fn wrong_layout_detector_is_an_error_naming_its_shape() {
    init();
    if !have_ort() {
        return;
    }
    let model = temp_file(
        &constant_detector(Some((64, 64)), &[1, 7, 3], vec![0.0; 21]),
        ".onnx",
    );
    let err = first_error(&detect_launch(&format!(
        "model=\"{}\"",
        model.path().display()
    )))
    .expect("no layout fits");
    for want in [
        "[1, 7, 3]",
        "YOLOX [1, 84, 5+C]",
        "YOLOv5 [1, A, 5+C]",
        "YOLOv8 [1, 4+C, A]",
    ] {
        assert!(err.contains(want), "'{want}' missing from: {err}");
    }
    // A forced layout that does not fit names the layout asked for.
    let model = temp_file(
        &constant_detector(Some((64, 64)), &[1, 3 * G, 7], vec![0.0; 3 * G * 7]),
        ".onnx",
    );
    let err = first_error(&detect_launch(&format!(
        "model=\"{}\" layout=yolox",
        model.path().display()
    )))
    .expect("not YOLOX");
    assert!(
        err.contains("[1, 252, 7]") && err.contains("yolox layout"),
        "{err}"
    );
}

#[test]
fn bad_settings_fail_at_start_with_a_reason() {
    init();
    if !have_ort() {
        return;
    }
    let model = temp_file(&yolox_fixture(), ".onnx");
    let m = format!("model=\"{}\"", model.path().display());
    let cases = [
        (String::new(), "no model set"),
        (
            "model=/no/such/detector.onnx".to_owned(),
            "/no/such/detector.onnx",
        ),
        (
            format!("{m} json-path=/no/such/dir/boxes.jsonl"),
            "cannot create the JSON-lines file '/no/such/dir/boxes.jsonl'",
        ),
        (format!("{m} roi=0,0,2,1"), "region of interest '0,0,2,1'"),
        (format!("{m} classes=car,lorry"), "'lorry'"),
        (
            format!("{m} labels-file=/no/such/labels.txt"),
            "/no/such/labels.txt",
        ),
        (format!("{m} input-size=320"), "only takes 64x64"),
        (format!("{m} threads=5000"), "threads=5000"),
    ];
    for (props, want) in cases {
        let err =
            first_error(&detect_launch(&props)).unwrap_or_else(|| panic!("'{props}' should fail"));
        assert!(err.contains(want), "'{props}': '{want}' missing from {err}");
    }
}

#[test]
fn every_property_has_a_nick_and_a_blurb() {
    init();
    for name in ["yolodetect", "boxoverlay"] {
        let el = gst::ElementFactory::make(name).build().expect("element");
        for p in el.list_properties() {
            if p.owner_type() != el.type_() {
                continue; // name, parent, qos: inherited
            }
            let blurb = p.blurb().unwrap_or_default();
            assert!(blurb.len() > 10, "{name}.{} has no useful blurb", p.name());
            assert_ne!(p.nick(), p.name(), "{name}.{} has no nick", p.name());
        }
    }
}

/// A uniform frame of `format` with one ROI meta at (20,30,40,24), class 2, score 0.5.
fn frame_with_roi(format: gst_video::VideoFormat) -> (gst_video::VideoInfo, gst::Buffer) {
    let info = gst_video::VideoInfo::builder(format, 100, 80)
        .build()
        .expect("info");
    let mut buf = gst::Buffer::from_mut_slice(vec![77u8; info.size()]);
    {
        let b = buf.get_mut().expect("writable");
        let mut meta = gst_video::VideoRegionOfInterestMeta::add(b, "car", (20, 30, 40, 24));
        meta.add_param(
            gst::Structure::builder("detection")
                .field("score", 0.5f64)
                .field("class-id", 2u32)
                .field("label", "car")
                .build(),
        );
    }
    (info, buf)
}

#[test]
fn boxoverlay_draws_on_the_outline_and_nowhere_far_from_it() {
    init();
    use gst_video::VideoFormat as V;
    let colour = derain_core::detect::draw::class_colour(2);
    for format in [V::Rgb, V::Bgr, V::Rgba, V::Bgra, V::Rgbx, V::Bgrx] {
        let (info, buf) = frame_with_roi(format);
        let mut h = Harness::new_parse("boxoverlay line-width=3 text-scale=1");
        h.set_src_caps(info.to_caps().expect("caps"));
        let out = h.push_and_pull(buf).expect("frame");
        let frame =
            gst_video::VideoFrameRef::from_buffer_ref_readable(out.as_ref(), &info).expect("map");
        let finfo = info.format_info();
        let bpp = finfo.pixel_stride()[0] as usize;
        let stride = frame.plane_stride()[0] as usize;
        let data = frame.plane_data(0).expect("plane");
        let offs: [usize; 3] = match format {
            V::Rgb | V::Rgba | V::Rgbx => [0, 1, 2],
            _ => [2, 1, 0],
        };
        let rgb = |x: usize, y: usize| offs.map(|o| data[y * stride + x * bpp + o]);
        // On the outline (3 px inside the box's edges): the class colour.
        for (x, y) in [(20, 30), (22, 40), (59, 53), (40, 51), (57, 35), (40, 32)] {
            assert_eq!(rgb(x, y), colour, "{format:?} outline pixel {x},{y}");
        }
        // Inside the box beyond the line, and outside the box: untouched, except the caption
        // tab above the box's top-left corner (7 + 2 px high, 5 chars "car 0.50" wide ~ 49 px).
        for y in 0..80 {
            for x in 0..100 {
                let in_box = (20..60).contains(&x) && (30..54).contains(&y);
                let on_line = in_box && !((23..57).contains(&x) && (33..51).contains(&y));
                let in_tab = (20..70).contains(&x) && (21..30).contains(&y);
                if !on_line && !in_tab {
                    assert_eq!(rgb(x, y), [77; 3], "{format:?} pixel {x},{y} changed");
                }
            }
        }
        // The caption tab is there: its background is the class colour.
        assert_eq!(rgb(20, 21), colour, "{format:?} caption tab");
    }
}

/// The shared YOLOX-Nano, a dashcam still and the README's reference boxes of its two cars.
fn yolox_nano() -> Option<(PathBuf, PathBuf)> {
    let model = derain_tools::devdata::shared_path("models/yolox_nano_416.onnx");
    let still = derain_tools::devdata::shared_path("clean-driving/udacity/stills/test1.jpg");
    match (model, still) {
        (Some(m), Some(s)) => Some((m, s)),
        _ => {
            eprintln!(
                "skipping: ../shared/data/models/yolox_nano_416.onnx or \
                 clean-driving/udacity/stills/test1.jpg is absent"
            );
            None
        }
    }
}

const REFERENCE_CARS: [[f64; 4]; 2] =
    [[1051.0, 404.0, 1274.0, 509.0], [814.0, 407.0, 943.0, 493.0]];

fn iou(a: [f64; 4], b: [f64; 4]) -> f64 {
    let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = iw * ih;
    inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)
}

#[test]
fn yolox_nano_pipeline_finds_the_two_cars_in_metas_and_json() {
    init();
    let Some((model, still)) = yolox_nano() else {
        return;
    };
    if !have_ort() {
        return;
    }
    let dir = tempfile::tempdir().expect("dir");
    let json_path = dir.path().join("test1.jsonl");
    // JPEG bytes in, decoded and converted as a user's pipeline would, then detected and drawn.
    let mut h = Harness::new_parse(&format!(
        "jpegdec ! videoconvert ! video/x-raw,format=RGBx ! yolodetect provider=cpu \
         model=\"{}\" json-path=\"{}\" ! boxoverlay",
        model.display(),
        json_path.display()
    ));
    h.set_src_caps_str("image/jpeg,framerate=0/1");
    let jpeg = std::fs::read(&still).expect("test1.jpg");
    let mut input = gst::Buffer::from_mut_slice(jpeg);
    input
        .get_mut()
        .expect("writable")
        .set_pts(gst::ClockTime::ZERO);
    let out = h.push_and_pull(input).expect("a frame out");
    let metas = rois(&out);
    let cars: Vec<&Roi> = metas.iter().filter(|m| m.0 == "car").collect();
    for reference in REFERENCE_CARS {
        let best = cars
            .iter()
            .map(|m| {
                let (x, y, w, h) = m.1;
                let b = [x, y, x + w, y + h].map(f64::from);
                (iou(b, reference), m)
            })
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .expect("cars detected");
        eprintln!(
            "reference {reference:?}: IoU {:.3} with meta {:?}",
            best.0, best.1
        );
        assert!(best.0 >= 0.7, "car {reference:?} not found in {metas:?}");
        assert_eq!((best.1.3, best.1.4.as_str()), (2, "car"));
    }
    assert!(h.push_event(gst::event::Eos::new()));
    let records = read_records(&json_path);
    assert_eq!(records.len(), 1);
    assert_eq!((records[0].frame, records[0].timestamp), (0, Some(0)));
    assert_records_match_metas(&records[0], &metas);
}
