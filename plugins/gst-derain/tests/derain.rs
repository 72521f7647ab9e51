//! Harness and pipeline tests of the `derain` element with fixture models written by the
//! library's ONNX writer (no Python, no shared data needed).

use std::io::Write;
use std::sync::Once;

use gst::prelude::*;
use gst_check::Harness;
use gst_video::prelude::*;

use derain_core::card::{INPUT_NAME, ModelCard, OUTPUT_NAME};
use derain_tools::onnx::builder::{DEFAULT_OPSET, Dim, GraphBuilder, to_bytes};
use derain_tools::onnx::fixtures::{self, FixtureIo};
use onnx_protobuf::tensor_proto::DataType;

fn init() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        gst::init().expect("GStreamer initialises");
        gstderain::plugin_register_static().expect("plugin registers");
    });
}

/// Writes `bytes` to a temporary .onnx file that lives as long as the returned handle.
fn model_file(bytes: &[u8]) -> tempfile::NamedTempFile {
    let mut f = tempfile::Builder::new()
        .suffix(".onnx")
        .tempfile()
        .expect("temp file");
    f.write_all(bytes).expect("write model");
    f.flush().expect("flush");
    f
}

fn element(model: &std::path::Path) -> gst::Element {
    gst::ElementFactory::make("derain")
        .property("model", model.to_str().expect("utf-8 temp path"))
        .property_from_str("provider", "cpu")
        .property("stats-interval", 0u32)
        .build()
        .expect("derain element")
}

fn harness(model: &std::path::Path, info: &gst_video::VideoInfo) -> Harness {
    let el = element(model);
    let mut h = Harness::with_element(&el, Some("sink"), Some("src"));
    h.set_src_caps(info.to_caps().expect("caps"));
    h
}

/// A natural-looking test image: smooth gradients plus mild texture, deterministic.
fn natural_rgb(width: usize, height: usize) -> Vec<[u8; 3]> {
    let mut px = Vec::with_capacity(width * height);
    for y in 0..height {
        for x in 0..width {
            let fx = x as f32 / width.max(2) as f32;
            let fy = y as f32 / height.max(2) as f32;
            let tex = ((x * 7 + y * 13) % 9) as f32 - 4.0;
            let r = 40.0 + 150.0 * fx + tex;
            let g = 60.0 + 120.0 * fy - tex;
            let b = 90.0 + 60.0 * (fx * 6.0).sin() * fy + tex * 0.5;
            px.push([r as u8, g as u8, b as u8]);
        }
    }
    px
}

/// Fills a buffer for `info` with the test image (RGB family: channel bytes; alpha/x bytes get
/// a per-pixel pattern; YUV: a BT.601 limited-range conversion with 2x2 chroma averaging).
fn make_buffer(info: &gst_video::VideoInfo) -> gst::Buffer {
    let (w, h) = (info.width() as usize, info.height() as usize);
    let img = natural_rgb(w, h);
    let mut buf = gst::Buffer::with_size(info.size()).expect("buffer");
    {
        let bufref = buf.get_mut().expect("writable");
        let mut frame =
            gst_video::VideoFrameRef::from_buffer_ref_writable(bufref, info).expect("map");
        let strides: Vec<usize> = frame.plane_stride().iter().map(|s| *s as usize).collect();
        let format = info.format();
        let finfo = info.format_info();
        if finfo.is_rgb() {
            let bpp = finfo.pixel_stride()[0] as usize;
            let offs = rgb_offsets(format);
            let data = frame.plane_data_mut(0).expect("plane");
            for y in 0..h {
                for x in 0..w {
                    let p = &mut data[y * strides[0] + x * bpp..][..bpp];
                    for b in p.iter_mut() {
                        *b = ((x * 31 + y * 17) % 251) as u8; // alpha / x pattern
                    }
                    for c in 0..3 {
                        p[offs[c]] = img[y * w + x][c];
                    }
                }
            }
        } else {
            let (yp, up, vp) = yuv_planes(&img, w, h);
            let cw = w.div_ceil(2);
            let ch = h.div_ceil(2);
            let planes = frame.planes_data_mut();
            let [p0, p1, p2, _] = planes;
            for y in 0..h {
                p0[y * strides[0]..][..w].copy_from_slice(&yp[y * w..][..w]);
            }
            for y in 0..ch {
                if format == gst_video::VideoFormat::I420 {
                    p1[y * strides[1]..][..cw].copy_from_slice(&up[y * cw..][..cw]);
                    p2[y * strides[2]..][..cw].copy_from_slice(&vp[y * cw..][..cw]);
                } else {
                    for x in 0..cw {
                        p1[y * strides[1] + 2 * x] = up[y * cw + x];
                        p1[y * strides[1] + 2 * x + 1] = vp[y * cw + x];
                    }
                }
            }
        }
    }
    buf
}

fn rgb_offsets(format: gst_video::VideoFormat) -> [usize; 3] {
    use gst_video::VideoFormat as V;
    match format {
        V::Rgb | V::Rgba | V::Rgbx => [0, 1, 2],
        V::Bgr | V::Bgra | V::Bgrx => [2, 1, 0],
        V::Argb | V::Xrgb => [1, 2, 3],
        V::Abgr | V::Xbgr => [3, 2, 1],
        other => panic!("not an RGB format: {other:?}"),
    }
}

fn yuv_planes(img: &[[u8; 3]], w: usize, h: usize) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let conv = |p: [u8; 3]| {
        let [r, g, b] = p.map(|v| f64::from(v) / 255.0);
        let y = 0.299 * r + 0.587 * g + 0.114 * b;
        let u = (b - y) / 1.772;
        let v = (r - y) / 1.402;
        (16.0 + 219.0 * y, 128.0 + 224.0 * u, 128.0 + 224.0 * v)
    };
    let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
    let mut yp = vec![0u8; w * h];
    let mut up = vec![0f64; cw * ch];
    let mut vp = vec![0f64; cw * ch];
    let mut n = vec![0f64; cw * ch];
    for y in 0..h {
        for x in 0..w {
            let (yy, u, v) = conv(img[y * w + x]);
            yp[y * w + x] = yy.round() as u8;
            let c = (y / 2) * cw + x / 2;
            up[c] += u;
            vp[c] += v;
            n[c] += 1.0;
        }
    }
    let up = up
        .iter()
        .zip(&n)
        .map(|(s, n)| (s / n).round() as u8)
        .collect();
    let vp = vp
        .iter()
        .zip(&n)
        .map(|(s, n)| (s / n).round() as u8)
        .collect();
    (yp, up, vp)
}

/// The visible bytes of each plane, row by row (stride padding and, for RGB formats without
/// alpha, the x byte left out).
fn visible_bytes(info: &gst_video::VideoInfo, buf: &gst::BufferRef) -> Vec<u8> {
    let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(buf, info).expect("map");
    let (w, h) = (info.width() as usize, info.height() as usize);
    let finfo = info.format_info();
    let mut out = Vec::new();
    if finfo.is_rgb() {
        let bpp = finfo.pixel_stride()[0] as usize;
        let keep_alpha = finfo.has_alpha();
        let offs = rgb_offsets(info.format());
        let stride = frame.plane_stride()[0] as usize;
        let data = frame.plane_data(0).expect("plane");
        for y in 0..h {
            for x in 0..w {
                let p = &data[y * stride + x * bpp..][..bpp];
                if keep_alpha {
                    out.extend_from_slice(p);
                } else {
                    out.extend(offs.iter().map(|&o| p[o]));
                }
            }
        }
    } else {
        let cw = w.div_ceil(2);
        let ch = h.div_ceil(2);
        let rows = |plane: u32, row_bytes: usize, n: usize, out: &mut Vec<u8>| {
            let stride = frame.plane_stride()[plane as usize] as usize;
            let data = frame.plane_data(plane).expect("plane");
            for y in 0..n {
                out.extend_from_slice(&data[y * stride..][..row_bytes]);
            }
        };
        rows(0, w, h, &mut out);
        if info.format() == gst_video::VideoFormat::I420 {
            rows(1, cw, ch, &mut out);
            rows(2, cw, ch, &mut out);
        } else {
            rows(1, 2 * cw, ch, &mut out);
        }
    }
    out
}

fn psnr(a: &[u8], b: &[u8]) -> f64 {
    assert_eq!(a.len(), b.len());
    let mse: f64 = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2))
        .sum::<f64>()
        / a.len() as f64;
    if mse == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (255.0f64 * 255.0 / mse).log10()
    }
}

const ALL_FORMATS: [gst_video::VideoFormat; 12] = [
    gst_video::VideoFormat::Rgb,
    gst_video::VideoFormat::Bgr,
    gst_video::VideoFormat::Rgba,
    gst_video::VideoFormat::Bgra,
    gst_video::VideoFormat::Argb,
    gst_video::VideoFormat::Abgr,
    gst_video::VideoFormat::Rgbx,
    gst_video::VideoFormat::Bgrx,
    gst_video::VideoFormat::Xrgb,
    gst_video::VideoFormat::Xbgr,
    gst_video::VideoFormat::I420,
    gst_video::VideoFormat::Nv12,
];

fn video_info(format: gst_video::VideoFormat, w: u32, h: u32) -> gst_video::VideoInfo {
    gst_video::VideoInfo::builder(format, w, h)
        .fps(gst::Fraction::new(30, 1))
        .build()
        .expect("video info")
}

#[test]
fn identity_round_trip_every_format_and_size() {
    init();
    // multiple_of 4 so odd sizes go through the reflect padding and the crop back.
    let model = model_file(&fixtures::identity(4));
    for format in ALL_FORMATS {
        for (w, h) in [(1, 1), (3, 5), (641, 359), (1920, 1080)] {
            let info = video_info(format, w, h);
            let mut hh = harness(model.path(), &info);
            let input = make_buffer(&info);
            let expected = visible_bytes(&info, &input);
            let out = hh.push_and_pull(input).expect("a frame out");
            let got = visible_bytes(&info, &out);
            if info.format_info().is_rgb() {
                assert!(
                    got == expected,
                    "{format:?} {w}x{h}: identity round trip not exact"
                );
            } else {
                let p = psnr(&got, &expected);
                assert!(p >= 40.0, "{format:?} {w}x{h}: PSNR {p:.1} dB < 40");
            }
        }
    }
}

/// `bytes` with its card asking for H and W multiples of `multiple_of`.
fn with_multiple_of(bytes: &[u8], multiple_of: u32) -> Vec<u8> {
    use onnx_protobuf::{Message, ModelProto};
    let mut model = ModelProto::parse_from_bytes(bytes).expect("fixture parses");
    for p in &mut model.metadata_props {
        if p.key == derain_core::card::CARD_KEY {
            let mut card = ModelCard::from_json(&p.value).expect("fixture card");
            card.multiple_of = multiple_of;
            p.value = card.to_json();
        }
    }
    model.write_to_bytes().expect("fixture serialises")
}

/// The element's output is the library's `Derainer` output on the same frame, byte for byte: the
/// element adds GStreamer's concerns and nothing to the pixels.
#[test]
fn element_output_is_the_derainers_for_every_format() {
    use derain_core::derainer::Derainer;
    use derain_core::frame::{FrameLayout, PixelFormat};
    init();
    // A spatial network and a multiple of 8, so odd sizes go through the padding and the crop.
    let bytes = with_multiple_of(&fixtures::small_conv(3), 8);
    let file = model_file(&bytes);
    let model = derain_core::model::Model::from_bytes(bytes, "small_conv").expect("fixture");
    let generator = derain_core::runtime::Generator::new(
        &model,
        &derain_core::runtime::SessionOptions {
            provider: derain_core::runtime::Provider::Cpu,
            ..Default::default()
        },
    )
    .expect("ONNX Runtime runs the fixture");
    let mut derainer = Derainer::new(generator);
    for (format, pixel_format) in ALL_FORMATS.into_iter().zip(PixelFormat::ALL) {
        assert_eq!(
            format!("{format:?}").to_ascii_uppercase(),
            pixel_format.name().to_ascii_uppercase()
        );
        for (w, h) in [(33, 17), (5, 3)] {
            let info = video_info(format, w, h);
            let mut hh = harness(file.path(), &info);
            let input = make_buffer(&info);
            let mut ours = gst::Buffer::with_size(info.size()).expect("buffer");
            {
                let inframe =
                    gst_video::VideoFrameRef::from_buffer_ref_readable(input.as_ref(), &info)
                        .expect("map input");
                let mut outframe = gst_video::VideoFrameRef::from_buffer_ref_writable(
                    ours.get_mut().expect("writable"),
                    &info,
                )
                .expect("map output");
                let strides = |s: &[i32]| {
                    let mut out = [0usize; 3];
                    for (o, v) in out.iter_mut().zip(s) {
                        *o = *v as usize;
                    }
                    out
                };
                let (si, so) = (
                    strides(inframe.plane_stride()),
                    strides(outframe.plane_stride()),
                );
                let n = pixel_format.n_planes();
                derainer
                    .configure(FrameLayout::packed(pixel_format, w as usize, h as usize))
                    .expect("configures");
                let planes = inframe.planes_data();
                let mut out_planes = outframe.planes_data_mut();
                derainer
                    .process(si, &planes[..n], so, &mut out_planes[..n])
                    .expect("derains");
            }
            let out = hh.push_and_pull(input).expect("a frame out");
            assert!(
                visible_bytes(&info, &out) == visible_bytes(&info, &ours),
                "{format:?} {w}x{h}: the element and the Derainer differ"
            );
        }
    }
}

#[test]
fn affine_model_gives_expected_pixels() {
    init();
    let (scale, bias) = ([0.5, 1.0, 2.0], [0.25, 0.0, -0.1]);
    let model = model_file(&fixtures::affine(scale, bias));
    let info = video_info(gst_video::VideoFormat::Rgb, 33, 17);
    let mut h = harness(model.path(), &info);
    let input = make_buffer(&info);
    let inb = visible_bytes(&info, &input);
    let out = h.push_and_pull(input).expect("frame");
    let got = visible_bytes(&info, &out);
    for (i, (&x, &y)) in inb.iter().zip(&got).enumerate() {
        let c = i % 3;
        let want = ((f32::from(x) / 255.0 * scale[c] + bias[c]).clamp(0.0, 1.0) * 255.0).round();
        assert!(
            (f32::from(y) - want).abs() <= 1.0,
            "byte {i}: got {y}, want {want} from {x}"
        );
    }
    // The rain level is the rain score of the input frame (not of the output: the network is no
    // weather signal), attached to the buffer.
    let meta = gst::meta::CustomMeta::from_buffer(&out, gstderain_meta_name())
        .expect("rain-level meta attached");
    let level: f64 = meta
        .structure()
        .get("rain-level")
        .expect("rain-level field");
    let model = derain_core::rainscore::RainScoreModel::shipped().expect("shipped score");
    let want = model.score(&derain_core::rainscore::Binned::from_fn(33, 17, |x, y| {
        let i = 3 * (y * 33 + x);
        [0, 1, 2].map(|c| f32::from(inb[i + c]) / 255.0)
    }));
    assert!(
        (0.0..=1.0).contains(&level) && (level - want).abs() < 1e-6,
        "rain level {level} vs the input's score {want}"
    );
}

fn gstderain_meta_name() -> &'static str {
    "GstDerainRainMeta"
}

#[test]
fn timestamps_flags_and_metas_survive() {
    init();
    let model = model_file(&fixtures::identity(1));
    let info = video_info(gst_video::VideoFormat::Bgrx, 64, 48);
    let mut h = harness(model.path(), &info);
    let mut input = make_buffer(&info);
    {
        let b = input.get_mut().expect("writable");
        b.set_pts(gst::ClockTime::from_mseconds(1234));
        b.set_dts(gst::ClockTime::from_mseconds(1200));
        b.set_duration(gst::ClockTime::from_mseconds(33));
        b.set_offset(42);
        b.set_flags(gst::BufferFlags::DISCONT | gst::BufferFlags::DELTA_UNIT);
        let caps = gst::Caps::builder("timestamp/x-test").build();
        gst::ReferenceTimestampMeta::add(b, &caps, gst::ClockTime::from_seconds(7), None);
        gst_video::VideoRegionOfInterestMeta::add(b, "car", (1, 2, 30, 20));
    }
    let out = h.push_and_pull(input).expect("frame");
    assert_eq!(out.pts(), Some(gst::ClockTime::from_mseconds(1234)));
    assert_eq!(out.dts(), Some(gst::ClockTime::from_mseconds(1200)));
    assert_eq!(out.duration(), Some(gst::ClockTime::from_mseconds(33)));
    assert_eq!(out.offset(), 42);
    assert!(
        out.flags()
            .contains(gst::BufferFlags::DISCONT | gst::BufferFlags::DELTA_UNIT)
    );
    let ts = out
        .meta::<gst::ReferenceTimestampMeta>()
        .expect("reference timestamp meta kept");
    assert_eq!(ts.timestamp(), gst::ClockTime::from_seconds(7));
    let roi = out
        .meta::<gst_video::VideoRegionOfInterestMeta>()
        .expect("ROI meta kept");
    assert_eq!(roi.rect(), (1, 2, 30, 20));
    assert_eq!(roi.roi_type(), "car");
}

#[test]
fn caps_change_mid_stream() {
    init();
    let model = model_file(&fixtures::identity(4));
    let first = video_info(gst_video::VideoFormat::Rgb, 64, 48);
    let mut h = harness(model.path(), &first);
    let a = make_buffer(&first);
    let want_a = visible_bytes(&first, &a);
    let out = h.push_and_pull(a).expect("frame");
    assert_eq!(visible_bytes(&first, &out), want_a);

    let second = video_info(gst_video::VideoFormat::I420, 99, 51);
    h.set_src_caps(second.to_caps().expect("caps"));
    let b = make_buffer(&second);
    let want_b = visible_bytes(&second, &b);
    let out = h.push_and_pull(b).expect("frame after caps change");
    let caps = h
        .sinkpad()
        .and_then(|p| p.current_caps())
        .expect("negotiated caps");
    let got_info = gst_video::VideoInfo::from_caps(&caps).expect("video caps");
    assert_eq!(
        (got_info.format(), got_info.width(), got_info.height()),
        (gst_video::VideoFormat::I420, 99, 51)
    );
    let p = psnr(&visible_bytes(&second, &out), &want_b);
    assert!(p >= 40.0, "after caps change PSNR {p:.1}");
    let processed: u64 = h.element().expect("element").property("frames-processed");
    assert_eq!(processed, 2);
}

#[test]
fn statistics_properties_and_latency() {
    init();
    let model = model_file(&fixtures::small_conv(3));
    let info = video_info(gst_video::VideoFormat::Rgb, 80, 60);
    let mut h = harness(model.path(), &info);
    for i in 0..5u64 {
        let mut b = make_buffer(&info);
        b.get_mut()
            .expect("writable")
            .set_pts(gst::ClockTime::from_mseconds(33 * i));
        h.push_and_pull(b).expect("frame");
    }
    let el = h.element().expect("element");
    assert_eq!(el.property::<String>("active-provider"), "cpu");
    assert_eq!(el.property::<u64>("frames-processed"), 5);
    assert_eq!(el.property::<u64>("frames-dropped"), 0);
    let mean: f64 = el.property("inference-mean-ms");
    let p99: f64 = el.property("inference-p99-ms");
    assert!(mean > 0.0 && p99 >= mean * 0.5, "mean {mean} p99 {p99}");
    let latency: u64 = el.property("latency");
    assert!(
        latency > 0,
        "latency must reflect the measured processing delay"
    );
    // The LATENCY query answered downstream includes our delay.
    let mut q = gst::query::Latency::new();
    let srcpad = el.static_pad("src").expect("src pad");
    assert!(srcpad.query(&mut q), "latency query answered");
    let (_, min, _) = q.result();
    assert!(min.nseconds() >= latency, "min {min} < ours {latency}");
}

/// How long a test waits for an event (EOS, an error) before it calls the pipeline hung: far
/// longer than anything takes, so that a loaded machine is slow, never failed.
const PATIENCE_S: u64 = 300;

/// Runs `launch` to completion (or failure) and returns the first error message on the bus.
fn first_error(launch: &str) -> Option<String> {
    // Caps that cannot link are already refused while the pipeline is built.
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

fn derain_launch(props: &str, caps: &str) -> String {
    format!("videotestsrc num-buffers=3 ! {caps} ! derain provider=cpu {props} ! fakesink",)
}

const RGB_CAPS: &str = "video/x-raw,format=RGB,width=64,height=48";

#[test]
fn good_pipeline_runs_to_eos() {
    init();
    let model = model_file(&fixtures::identity(1));
    let launch = derain_launch(&format!("model=\"{}\"", model.path().display()), RGB_CAPS);
    assert_eq!(first_error(&launch), None);
}

#[test]
fn bad_models_fail_at_start_with_a_reason() {
    init();
    let missing = "/nonexistent/dir/model.onnx";
    let err = first_error(&derain_launch(&format!("model={missing}"), RGB_CAPS))
        .expect("missing model is an error");
    assert!(
        err.contains(missing) && err.contains("cannot read"),
        "{err}"
    );

    let junk = model_file(&[0x13, 0x37, 0xff, 0x00, 0x42, 0x99, 0x01, 0x02, 0x03]);
    let err = first_error(&derain_launch(
        &format!("model=\"{}\"", junk.path().display()),
        RGB_CAPS,
    ))
    .expect("random bytes are an error");
    assert!(err.contains("not a valid ONNX"), "{err}");

    let empty = model_file(&[]);
    let err = first_error(&derain_launch(
        &format!("model=\"{}\"", empty.path().display()),
        RGB_CAPS,
    ))
    .expect("empty file is an error");
    assert!(err.contains("empty"), "{err}");

    let rank3 = model_file(&fixtures::custom_io(FixtureIo {
        input_rank: 3,
        ..FixtureIo::default()
    }));
    let err = first_error(&derain_launch(
        &format!("model=\"{}\"", rank3.path().display()),
        RGB_CAPS,
    ))
    .expect("rank 3 is an error");
    assert!(err.contains("rank 3"), "{err}");

    let renamed = model_file(&fixtures::custom_io(FixtureIo {
        input_name: "images".into(),
        ..FixtureIo::default()
    }));
    let err = first_error(&derain_launch(
        &format!("model=\"{}\"", renamed.path().display()),
        RGB_CAPS,
    ))
    .expect("wrong input name is an error");
    assert!(err.contains("'images'") && err.contains("'rainy'"), "{err}");

    let bad_card = model_file(&fixtures::custom_io(FixtureIo {
        card: Some("{not json".into()),
        ..FixtureIo::default()
    }));
    let err = first_error(&derain_launch(
        &format!("model=\"{}\"", bad_card.path().display()),
        RGB_CAPS,
    ))
    .expect("malformed card is an error");
    assert!(err.contains("model card"), "{err}");

    // No model: the embedded default when this build has one (build.rs embeds whichever of
    // models/derain-{r9,lite}.onnx exist), else an error saying there is none.
    let models = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models");
    let embeds = ["derain-lite.onnx", "derain-r9.onnx"]
        .iter()
        .any(|f| models.join(f).is_file());
    let outcome = first_error(&derain_launch("", RGB_CAPS));
    if embeds {
        assert_eq!(outcome, None, "the embedded default runs");
    } else {
        let err = outcome.expect("no model is an error");
        assert!(err.contains("no model set"), "{err}");
    }
}

#[test]
fn bad_settings_and_caps_fail_cleanly() {
    init();
    let model = model_file(&fixtures::identity(1));
    let m = format!("model=\"{}\"", model.path().display());

    let err = first_error(&derain_launch(&format!("{m} threads=5000"), RGB_CAPS))
        .expect("threads out of range is an error");
    assert!(err.contains("threads=5000"), "{err}");

    let err = first_error(&derain_launch(&format!("{m} device-id=-3"), RGB_CAPS))
        .expect("negative device is an error");
    assert!(err.contains("device-id=-3"), "{err}");

    // A format the element cannot convert: negotiation is refused.
    let err = first_error(&derain_launch(
        &m,
        "video/x-raw,format=YUY2,width=64,height=48",
    ))
    .expect("YUY2 is refused");
    assert!(
        err.contains("can't handle caps") && err.contains("YUY2"),
        "{err}"
    );
}

#[test]
fn gpu_provider_that_cannot_load_is_an_error_not_a_fallback() {
    init();
    let model = model_file(&fixtures::identity(1));
    let launch = format!(
        "videotestsrc num-buffers=3 ! {RGB_CAPS} ! derain provider=cuda model=\"{}\" ! fakesink",
        model.path().display()
    );
    match first_error(&launch) {
        Some(err) => assert!(err.contains("cuda"), "{err}"),
        // A machine with a working CUDA build of ONNX Runtime really runs on CUDA.
        None => eprintln!("note: the CUDA provider loaded here; nothing to check"),
    }
}

#[test]
fn fixed_size_model_refuses_other_frame_sizes() {
    init();
    let dims = [Dim::Fixed(1), Dim::Fixed(3), Dim::Fixed(64), Dim::Fixed(64)];
    let mut g = GraphBuilder::new("fixed");
    let x = g.input(INPUT_NAME, DataType::FLOAT, &dims);
    g.output(OUTPUT_NAME, DataType::FLOAT, &dims);
    g.node("Identity", &[&x], &[OUTPUT_NAME], vec![]);
    let bytes = to_bytes(
        &g.finish(DEFAULT_OPSET, &ModelCard::new("fixed"))
            .expect("model"),
    )
    .expect("bytes");
    let model = model_file(&bytes);
    let m = format!("model=\"{}\"", model.path().display());
    assert_eq!(
        first_error(&derain_launch(
            &m,
            "video/x-raw,format=RGB,width=64,height=64"
        )),
        None
    );
    let err = first_error(&derain_launch(&m, RGB_CAPS)).expect("64x48 is refused");
    assert!(err.contains("only takes input height 64"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Dry-weather bypass (issue 16, item 1): the rain score, the hysteresis, bit-exact passthrough.

const WEATHER_W: usize = 192;
const WEATHER_H: usize = 128;

/// A dry frame: smooth gradients, no thin structure.
fn dry_rgb() -> Vec<u8> {
    let (w, h) = (WEATHER_W, WEATHER_H);
    let mut px = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        for x in 0..w {
            let (fx, fy) = (x as f32 / w as f32, y as f32 / h as f32);
            px.push((60.0 + 100.0 * fx) as u8);
            px.push((70.0 + 80.0 * fy) as u8);
            px.push((90.0 + 40.0 * fx * fy) as u8);
        }
    }
    px
}

/// The same frame in rain: many bright, thin (2 px), near-vertical streaks of 16 to 40 rows,
/// leaning one column every 8 rows, at pseudo-random places (a fixed LCG, so every run and
/// every frame is the same).
fn rainy_rgb() -> Vec<u8> {
    let (w, h) = (WEATHER_W, WEATHER_H);
    let mut px = dry_rgb();
    let mut seed = 12345u32;
    let mut next = |n: u32| {
        seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        (seed >> 16) % n
    };
    for _ in 0..160 {
        let (x0, y0, len) = (
            next(w as u32) as usize,
            next(h as u32) as usize,
            16 + next(25),
        );
        for k in 0..len as usize {
            let (x, y) = (x0 + k / 8, y0 + k);
            if y >= h {
                break;
            }
            for xx in [x, x + 1] {
                if xx < w {
                    for c in 0..3 {
                        let v = &mut px[3 * (y * w + xx) + c];
                        *v = v.saturating_add(90);
                    }
                }
            }
        }
    }
    px
}

fn weather_info() -> gst_video::VideoInfo {
    video_info(
        gst_video::VideoFormat::Rgb,
        WEATHER_W as u32,
        WEATHER_H as u32,
    )
}

/// An RGB buffer for `weather_info()` holding `rgb`, stamped frame `i` of a 30 fps stream.
fn rgb_buffer(rgb: &[u8], i: u64) -> gst::Buffer {
    let info = weather_info();
    let mut buf = gst::Buffer::with_size(info.size()).expect("buffer");
    {
        let b = buf.get_mut().expect("writable");
        b.set_pts(gst::ClockTime::from_mseconds(33 * i));
        b.set_duration(gst::ClockTime::from_mseconds(33));
        let mut f = gst_video::VideoFrameRef::from_buffer_ref_writable(b, &info).expect("map");
        let stride = f.plane_stride()[0] as usize;
        let data = f.plane_data_mut(0).expect("plane");
        let row = 3 * WEATHER_W;
        for y in 0..WEATHER_H {
            data[y * stride..][..row].copy_from_slice(&rgb[y * row..][..row]);
        }
    }
    buf
}

fn rain_score_of(rgb: &[u8]) -> f64 {
    let model = derain_core::rainscore::RainScoreModel::shipped().expect("shipped score");
    let b = derain_core::rainscore::Binned::from_fn(WEATHER_W, WEATHER_H, |x, y| {
        let i = 3 * (y * WEATHER_W + x);
        [0, 1, 2].map(|c| f32::from(rgb[i + c]) / 255.0)
    });
    model.score(&b)
}

fn shipped_threshold() -> f64 {
    derain_core::rainscore::RainScoreModel::shipped()
        .expect("shipped score")
        .threshold
}

/// A harness around a derain element running an affine fixture (every derained pixel differs
/// from its input), with a bus to collect its messages.
fn weather_harness(model: &std::path::Path, props: &[(&str, &str)]) -> (Harness, gst::Bus) {
    let el = element(model);
    // These tests count frames: every frame scored (the default scores every second one).
    el.set_property("score-interval", 1u32);
    for (k, v) in props {
        el.set_property_from_str(k, v);
    }
    let bus = gst::Bus::new();
    el.set_bus(Some(&bus));
    let mut h = Harness::with_element(&el, Some("sink"), Some("src"));
    h.set_src_caps(weather_info().to_caps().expect("caps"));
    (h, bus)
}

fn affine_fixture() -> tempfile::NamedTempFile {
    model_file(&fixtures::affine([0.5, 0.5, 0.5], [0.2, 0.2, 0.2]))
}

fn rain_level(buf: &gst::BufferRef) -> f64 {
    gst::meta::CustomMeta::from_buffer(buf, gstderain_meta_name())
        .expect("rain meta on every frame")
        .structure()
        .get("rain-level")
        .expect("rain-level field")
}

fn all_bytes(buf: &gst::BufferRef) -> Vec<u8> {
    buf.map_readable().expect("map").to_vec()
}

/// The `derain-weather` messages posted so far: (weather, score, running time).
fn weather_messages(bus: &gst::Bus) -> Vec<(String, f64, Option<gst::ClockTime>)> {
    let mut out = Vec::new();
    while let Some(msg) = bus.pop_filtered(&[gst::MessageType::Element]) {
        let Some(s) = msg.structure().filter(|s| s.name() == "derain-weather") else {
            continue;
        };
        out.push((
            s.get::<String>("weather").expect("weather"),
            s.get::<f64>("score").expect("score"),
            s.get::<Option<gst::ClockTime>>("running-time")
                .expect("running-time"),
        ));
    }
    out
}

#[test]
fn rendered_frames_score_on_either_side_of_the_threshold() {
    let (dry, rainy, t) = (
        rain_score_of(&dry_rgb()),
        rain_score_of(&rainy_rgb()),
        shipped_threshold(),
    );
    assert!(
        dry < t && rainy > t,
        "dry {dry}, rainy {rainy}, threshold {t}"
    );
}

/// Which of a dry ×6, rainy ×5, dry ×6 stream's frames the hysteresis (enter 2, leave 3, start
/// in rain) passes through: frames 2–5 (dry reached on the third dry frame), 6 (the first rainy
/// frame, still dry), 13–16 (dry again on the third dry frame after the rain).
const WEATHER_SEQUENCE: [bool; 17] = [
    false, false, false, false, false, false, true, true, true, true, true, false, false, false,
    false, false, false,
];
const BYPASSED: [usize; 9] = [2, 3, 4, 5, 6, 13, 14, 15, 16];

#[test]
fn dry_frames_pass_bit_exact_and_the_mode_switches_at_the_hysteresis_points() {
    init();
    let model = affine_fixture();
    let (mut h, bus) = weather_harness(
        model.path(),
        &[("bypass", "dry"), ("rain-enter", "2"), ("rain-leave", "3")],
    );
    let el = h.element().expect("element");
    assert_eq!(el.property::<String>("weather"), "rain", "starts in rain");
    let (dry, rainy) = (dry_rgb(), rainy_rgb());
    let threshold = shipped_threshold();
    for (i, &is_rainy) in WEATHER_SEQUENCE.iter().enumerate() {
        let input = rgb_buffer(if is_rainy { &rainy } else { &dry }, i as u64);
        let want = all_bytes(&input);
        let data = input.map_readable().expect("map").as_ptr() as usize;
        let out = h.push_and_pull(input).expect("a frame out");
        let bypassed = BYPASSED.contains(&i);
        if bypassed {
            assert!(all_bytes(&out) == want, "frame {i}: bypass not bit-exact");
            // Not a copy: the input's own memory leaves.
            let out_data = out.map_readable().expect("map").as_ptr() as usize;
            assert_eq!(out_data, data, "frame {i}: bypassed frame was copied");
        } else {
            assert!(all_bytes(&out) != want, "frame {i}: not derained");
        }
        assert_eq!(
            out.pts(),
            Some(gst::ClockTime::from_mseconds(33 * i as u64))
        );
        let level = rain_level(&out);
        assert_eq!(level > threshold, is_rainy, "frame {i}: score {level}");
    }
    assert_eq!(el.property::<u64>("frames-bypassed"), BYPASSED.len() as u64);
    assert_eq!(
        el.property::<u64>("frames-processed"),
        (WEATHER_SEQUENCE.len() - BYPASSED.len()) as u64
    );
    assert_eq!(el.property::<String>("weather"), "dry");
    let last: f64 = el.property("last-rain-level");
    assert!(last < threshold, "{last}");
    let got = weather_messages(&bus);
    let at = |i: u64| Some(gst::ClockTime::from_mseconds(33 * i));
    let kinds: Vec<(&str, Option<gst::ClockTime>)> =
        got.iter().map(|(w, _, t)| (w.as_str(), *t)).collect();
    assert_eq!(kinds, [("dry", at(2)), ("rain", at(7)), ("dry", at(13))]);
    for (weather, score, _) in &got {
        assert_eq!(
            weather == "rain",
            *score > threshold,
            "{weather} at {score}"
        );
    }
    // A discontinuity starts the hysteresis over, in rain: the next dry frames are derained until
    // rain-leave of them have been seen.
    for k in 0..4u64 {
        let mut input = rgb_buffer(&dry, 100 + k);
        if k == 0 {
            input
                .get_mut()
                .expect("writable")
                .set_flags(gst::BufferFlags::DISCONT);
        }
        let want = all_bytes(&input);
        let out = h.push_and_pull(input).expect("frame");
        assert_eq!(
            all_bytes(&out) == want,
            k >= 2,
            "frame {k} after the discontinuity"
        );
    }
    let kinds: Vec<String> = weather_messages(&bus).into_iter().map(|m| m.0).collect();
    assert_eq!(kinds, ["rain", "dry"]);

    // So does a flush.
    assert!(h.push_event(gst::event::FlushStart::new()));
    assert!(h.push_event(gst::event::FlushStop::new(true)));
    let segment = gst::FormattedSegment::<gst::ClockTime>::new();
    assert!(h.push_event(gst::event::Segment::new(&segment)));
    for k in 0..3u64 {
        let input = rgb_buffer(&dry, k);
        let want = all_bytes(&input);
        let out = h.push_and_pull(input).expect("frame");
        assert_eq!(all_bytes(&out) == want, k >= 2, "frame {k} after the flush");
    }
    let got = weather_messages(&bus);
    let kinds: Vec<(&str, Option<gst::ClockTime>)> =
        got.iter().map(|(w, _, t)| (w.as_str(), *t)).collect();
    assert_eq!(kinds, [("rain", at(0)), ("dry", at(2))]);
    assert_eq!(el.property::<u64>("frames-bypassed"), 9 + 2 + 1);
}

#[test]
fn stats_message_carries_bypass_counter_and_weather() {
    init();
    let model = affine_fixture();
    let (mut h, bus) = weather_harness(
        model.path(),
        &[
            ("bypass", "dry"),
            ("rain-leave", "1"),
            // The first frame's statistics are always due.
            ("stats-interval", "1000"),
        ],
    );
    h.push_and_pull(rgb_buffer(&dry_rgb(), 0)).expect("frame");
    let mut stats = None;
    while let Some(msg) = bus.pop_filtered(&[gst::MessageType::Element]) {
        if let Some(s) = msg.structure().filter(|s| s.name() == "derain-stats") {
            stats = Some(s.to_owned());
            break;
        }
    }
    let s = stats.expect("a derain-stats message");
    // Frame 0 reaches dry (rain-leave 1) and is bypassed.
    assert_eq!(s.get::<String>("weather").expect("weather"), "dry");
    assert_eq!(s.get::<u64>("frames-bypassed").expect("frames-bypassed"), 1);
    assert_eq!(
        s.get::<u64>("frames-processed").expect("frames-processed"),
        0
    );
    // No frame went through the network, yet the LATENCY answer is the network's delay (from the
    // warm-up at the caps' size): a bypassed frame is not timed, so rain does not find the
    // pipeline's latency too small.
    let el = h.element().expect("element");
    assert!(el.property::<u64>("latency") > 0);
}

#[test]
fn score_interval_reuses_the_last_score() {
    init();
    let model = affine_fixture();
    let (mut h, _bus) = weather_harness(model.path(), &[("score-interval", "3")]);
    let (dry, rainy) = (dry_rgb(), rainy_rgb());
    // Scored: frames 0 (rainy) and 3 (dry); frames 1 and 2 (dry) carry frame 0's score.
    let levels: Vec<f64> = [&rainy, &dry, &dry, &dry]
        .iter()
        .enumerate()
        .map(|(i, rgb)| rain_level(&h.push_and_pull(rgb_buffer(rgb, i as u64)).expect("frame")))
        .collect();
    let t = shipped_threshold();
    assert!(levels[0] > t && levels[3] < t, "{levels:?}");
    assert_eq!(levels[1], levels[0]);
    assert_eq!(levels[2], levels[0]);
}

#[test]
fn weather_settings_out_of_range_are_rejected() {
    init();
    let model = affine_fixture();
    let el = element(model.path());
    for (name, bad) in [
        ("rain-enter", 0u32.to_value()),
        ("rain-leave", 0u32.to_value()),
        ("score-interval", 0u32.to_value()),
        ("rain-threshold", 1.5f64.to_value()),
        ("rain-threshold", (-0.1f64).to_value()),
    ] {
        // GLib validates against the param spec: an out-of-range value is refused (glib-rs
        // panics rather than let it through), the property keeps its value.
        let before = el.property_value(name);
        let set = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            el.set_property_from_value(name, &bad)
        }));
        assert!(set.is_err(), "{name}={bad:?} was set");
        assert_eq!(
            format!("{:?}", el.property_value(name)),
            format!("{before:?}"),
            "{name} changed"
        );
    }
    assert_eq!(el.property::<u32>("rain-enter"), 3);
    assert_eq!(el.property::<u32>("rain-leave"), 30);
    assert_eq!(el.property::<f64>("rain-threshold"), shipped_threshold());
}

#[test]
fn bypass_never_runs_the_network_on_every_frame() {
    init();
    let model = affine_fixture();
    let (mut h, bus) = weather_harness(model.path(), &[("rain-enter", "2"), ("rain-leave", "3")]);
    let el = h.element().expect("element");
    let default =
        gst::glib::EnumValue::from_value(&el.property_value("bypass")).map(|(_, v)| v.nick());
    assert_eq!(default, Some("never"), "bypass defaults to never");
    let (dry, rainy) = (dry_rgb(), rainy_rgb());
    for (i, &is_rainy) in WEATHER_SEQUENCE.iter().enumerate() {
        let input = rgb_buffer(if is_rainy { &rainy } else { &dry }, i as u64);
        let want = all_bytes(&input);
        let out = h.push_and_pull(input).expect("frame");
        assert!(all_bytes(&out) != want, "frame {i} passed through");
    }
    assert_eq!(el.property::<u64>("frames-bypassed"), 0);
    assert_eq!(
        el.property::<u64>("frames-processed"),
        WEATHER_SEQUENCE.len() as u64
    );
    // The weather is still followed (and announced): only the network is not skipped.
    let kinds: Vec<String> = weather_messages(&bus).into_iter().map(|m| m.0).collect();
    assert_eq!(kinds, ["dry", "rain", "dry"]);
    // The LATENCY answer is the processing delay in either mode.
    assert!(el.property::<u64>("latency") > 0);
}

// ---------------------------------------------------------------------------------------------
// Hot model reload while PLAYING (issue 16, item 2).

/// Reload tests count threads and file descriptors: they run one at a time.
static RELOADS: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn reload_lock() -> std::sync::MutexGuard<'static, ()> {
    RELOADS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Three affine fixtures whose outputs differ on every pixel of any frame (by at least 0.1, 25
/// levels): a frame out can be told to be wholly from one of them.
const AFFINES: [(f32, f32); 3] = [(0.5, 0.2), (0.25, 0.75), (0.2, 0.0)];

fn affine_models() -> Vec<tempfile::NamedTempFile> {
    AFFINES
        .iter()
        .map(|&(s, b)| model_file(&fixtures::affine([s; 3], [b; 3])))
        .collect()
}

/// Which of `AFFINES` produced `out` from `input` (every byte within 2 levels of it), or `None`
/// for a frame that is not wholly from one of them.
fn which_affine(input: &[u8], out: &[u8]) -> Option<usize> {
    AFFINES.iter().position(|&(s, b)| {
        input.iter().zip(out).all(|(&x, &y)| {
            let want = ((f32::from(x) / 255.0 * s + b).clamp(0.0, 1.0) * 255.0).round();
            (f32::from(y) - want).abs() <= 2.0
        })
    })
}

/// Pushes frame `i` (the dry frame of the weather tests) and says which model derained it;
/// panics when none did wholly, or when no frame came out for it.
fn push_frame(h: &mut Harness, i: u64) -> usize {
    let input = rgb_buffer(&dry_rgb(), i);
    let want = all_bytes(&input);
    let out = h
        .push_and_pull(input)
        .expect("a frame out for every frame in");
    assert_eq!(out.pts(), Some(gst::ClockTime::from_mseconds(33 * i)));
    which_affine(&want, &all_bytes(&out))
        .unwrap_or_else(|| panic!("frame {i} is not wholly from one model"))
}

fn model_property(h: &Harness) -> String {
    h.element().expect("element").property("model")
}

fn path_str(f: &tempfile::NamedTempFile) -> &str {
    f.path().to_str().expect("utf-8 temp path")
}

/// Pushes frames from `*next` on until one comes out of model `want` (every frame before it from
/// `from`); returns how many were pushed. Bounded only as a guard against a reload that never
/// lands.
fn push_until(h: &mut Harness, next: &mut u64, from: usize, want: usize) -> u64 {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(PATIENCE_S);
    let first = *next;
    loop {
        let got = push_frame(h, *next);
        *next += 1;
        if got == want {
            return *next - first;
        }
        assert_eq!(got, from, "frame {} from a third model", *next - 1);
        assert!(
            std::time::Instant::now() < deadline,
            "model {want} never swapped in"
        );
    }
}

/// The next warning on `bus`, however long a loaded machine takes (bounded as a guard).
fn next_warning(bus: &gst::Bus) -> String {
    let msg = bus
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(PATIENCE_S),
            &[gst::MessageType::Warning],
        )
        .expect("a warning on the bus");
    match msg.view() {
        gst::MessageView::Warning(w) => w.error().to_string(),
        _ => unreachable!(),
    }
}

#[test]
fn reload_mid_stream_drops_no_frame_and_mixes_no_models() {
    init();
    let _serial = reload_lock();
    let models = affine_models();
    let (mut h, bus) = weather_harness(models[0].path(), &[]);
    let mut next = 0u64;
    for _ in 0..3 {
        assert_eq!(push_frame(&mut h, next), 0);
        next += 1;
    }
    let el = h.element().expect("element");
    el.set_property("model", path_str(&models[1]));
    // Until the new session is ready the old one runs, and the property says so.
    assert_eq!(model_property(&h), path_str(&models[0]));
    push_until(&mut h, &mut next, 0, 1);
    assert_eq!(model_property(&h), path_str(&models[1]));
    for _ in 0..3 {
        assert_eq!(push_frame(&mut h, next), 1);
        next += 1;
    }
    // And back, then to the third, while frames keep flowing.
    el.set_property("model", path_str(&models[0]));
    push_until(&mut h, &mut next, 1, 0);
    el.set_property("model", path_str(&models[2]));
    push_until(&mut h, &mut next, 0, 2);
    assert_eq!(model_property(&h), path_str(&models[2]));
    assert_eq!(
        el.property::<u64>("frames-processed"),
        next,
        "a frame was lost"
    );
    assert_eq!(el.property::<String>("active-provider"), "cpu");
    // Each swap is announced.
    let mut swapped = Vec::new();
    while let Some(msg) = bus.pop_filtered(&[gst::MessageType::Element]) {
        if let Some(s) = msg.structure().filter(|s| s.name() == "derain-model") {
            swapped.push(s.get::<String>("model").expect("model"));
        }
    }
    let want: Vec<&str> = [1, 0, 2].iter().map(|&i| path_str(&models[i])).collect();
    assert_eq!(swapped, want);
    assert!(
        bus.pop_filtered(&[gst::MessageType::Warning]).is_none(),
        "no warning"
    );
}

/// An identity model whose input and output are fixed at `width`x`height`: it takes no other
/// frame size.
fn fixed_identity(width: i64, height: i64) -> tempfile::NamedTempFile {
    let dims = [
        Dim::Fixed(1),
        Dim::Fixed(3),
        Dim::Fixed(height),
        Dim::Fixed(width),
    ];
    let mut g = GraphBuilder::new("fixed");
    let x = g.input(INPUT_NAME, DataType::FLOAT, &dims);
    g.output(OUTPUT_NAME, DataType::FLOAT, &dims);
    g.node("Identity", &[&x], &[OUTPUT_NAME], vec![]);
    model_file(
        &to_bytes(
            &g.finish(DEFAULT_OPSET, &ModelCard::new("fixed"))
                .expect("model"),
        )
        .expect("bytes"),
    )
}

#[test]
fn failed_reload_keeps_the_old_model_warns_and_the_property_stays_true() {
    init();
    let _serial = reload_lock();
    let models = affine_models();
    let (mut h, bus) = weather_harness(models[0].path(), &[]);
    let mut next = 0u64;
    assert_eq!(push_frame(&mut h, next), 0);
    next += 1;
    let el = h.element().expect("element");

    let corrupt = model_file(&[0x13, 0x37, 0xff, 0x00, 0x42, 0x99, 0x01, 0x02, 0x03]);
    let rank3 = model_file(&fixtures::custom_io(FixtureIo {
        input_rank: 3,
        ..FixtureIo::default()
    }));
    // A model that only takes 64x64 frames: the stream's 192x128 is refused.
    let fixed = fixed_identity(64, 64);
    // A model that asks for three frames per inference, which this element cannot give it.
    let multi = model_file(&fixtures::custom_io(FixtureIo {
        card: Some(r#"{"name":"multi","frames":3}"#.into()),
        ..FixtureIo::default()
    }));
    let missing = "/nonexistent/dir/model.onnx";
    for (path, why) in [
        (missing, "cannot read"),
        (path_str(&corrupt), "not a valid ONNX"),
        (path_str(&rank3), "rank 3"),
        (path_str(&fixed), "only takes input height 64"),
        (path_str(&multi), "3 consecutive frames"),
    ] {
        el.set_property("model", path);
        assert_eq!(model_property(&h), path_str(&models[0]), "{path}");
        let warning = next_warning(&bus);
        assert!(
            warning.contains(path) && warning.contains(why),
            "{path}: {warning}"
        );
        assert!(warning.contains(path_str(&models[0])), "{warning}");
        // The old model kept running, and the property names it.
        assert_eq!(model_property(&h), path_str(&models[0]), "{path}");
        for _ in 0..2 {
            assert_eq!(push_frame(&mut h, next), 0, "after {path}");
            next += 1;
        }
    }
    // A provider that cannot load is refused the same way (where one loads, it runs).
    el.set_property_from_str("provider", "cuda");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(PATIENCE_S);
    loop {
        if let Some(msg) = bus.pop_filtered(&[gst::MessageType::Warning]) {
            let gst::MessageView::Warning(w) = msg.view() else {
                unreachable!()
            };
            assert!(w.error().to_string().contains("cuda"), "{}", w.error());
            let provider = el.property_value("provider");
            let nick = gst::glib::EnumValue::from_value(&provider).map(|(_, v)| v.nick());
            assert_eq!(nick, Some("cpu"), "the provider reads back what runs");
            assert_eq!(push_frame(&mut h, next), 0);
            break;
        }
        // No warning yet: the new session may have loaded (a CUDA machine) and swapped in.
        push_frame(&mut h, next);
        next += 1;
        if el.property::<String>("active-provider") == "cuda" {
            eprintln!("note: the CUDA provider loaded here; nothing to refuse");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no outcome");
    }
    // After all that a good model still swaps in.
    el.set_property_from_str("provider", "cpu");
    el.set_property("model", path_str(&models[1]));
    push_until(&mut h, &mut next, 0, 1);
    assert_eq!(model_property(&h), path_str(&models[1]));
}

/// Threads of this process, and those of them that are derain's loaders.
fn threads() -> (usize, usize) {
    (named_threads(None), named_threads(Some("derain-reload")))
}

/// Threads of this process named `name` (all of them with `None`).
fn named_threads(name: Option<&str>) -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc")
        .flatten()
        .filter(|task| {
            name.is_none_or(|name| {
                std::fs::read_to_string(task.path().join("comm"))
                    .is_ok_and(|comm| comm.trim() == name)
            })
        })
        .count()
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

#[test]
fn a_hundred_reloads_leave_no_thread_session_or_descriptor_behind() {
    init();
    let _serial = reload_lock();
    let models = affine_models();
    // One intra-op thread: ONNX Runtime starts no pool, whose threads would inherit the name of
    // the loader thread that opened the session.
    let (mut h, _bus) = weather_harness(models[0].path(), &[("threads", "1")]);
    let mut next = 0u64;
    assert_eq!(push_frame(&mut h, next), 0);
    next += 1;
    let el = h.element().expect("element");
    let (threads_before, _) = threads();
    let fds_before = open_fds();
    let sessions_before = derain_core::runtime::open_sessions();
    // 100 requests in a row, a frame between each: some land, most are overtaken by the next
    // (the last request wins); every frame is still wholly from one model.
    for i in 0..100 {
        el.set_property("model", path_str(&models[i % 2]));
        push_frame(&mut h, next);
        next += 1;
    }
    // Then the third, until it runs.
    el.set_property("model", path_str(&models[2]));
    let running = push_frame(&mut h, next);
    next += 1;
    if running != 2 {
        push_until(&mut h, &mut next, running, 2);
    }
    assert_eq!(model_property(&h), path_str(&models[2]));
    assert_eq!(el.property::<u64>("frames-processed"), next);
    let (threads_after, loaders) = threads();
    assert_eq!(loaders, 0, "a loader thread is left");
    // The replaced sessions close on a thread each, joined at the next swap: one at most.
    assert!(
        named_threads(Some("derain-close")) <= 1,
        "closer threads left"
    );
    // Other tests of this binary may run meanwhile: a small tolerance, where a leak per reload
    // would show as a hundred.
    assert!(
        threads_after <= threads_before + 6,
        "threads {threads_before} -> {threads_after}"
    );
    let fds_after = open_fds();
    assert!(
        fds_after <= fds_before + 12,
        "descriptors {fds_before} -> {fds_after}"
    );
    let sessions_after = derain_core::runtime::open_sessions();
    assert!(
        sessions_after <= sessions_before + 2,
        "sessions {sessions_before} -> {sessions_after}"
    );
    // Stopping joins the last closer.
    drop(h);
    assert_eq!(
        named_threads(Some("derain-close")),
        0,
        "a closer outlived stop"
    );
}

#[test]
fn model_set_before_start_or_while_ready_reads_back_what_starts() {
    init();
    let models = affine_models();
    let el = element(models[0].path());
    el.set_property("model", path_str(&models[1]));
    assert_eq!(el.property::<String>("model"), path_str(&models[1]));
    let mut h = Harness::with_element(&el, Some("sink"), Some("src"));
    h.set_src_caps(weather_info().to_caps().expect("caps"));
    assert_eq!(push_frame(&mut h, 0), 1);
    assert_eq!(model_property(&h), path_str(&models[1]));
}

#[test]
fn reload_to_another_multiple_of_reconfigures_the_padding() {
    init();
    let _serial = reload_lock();
    // 33x17 pads to 40x24 for multiple_of 8: the swap must resize the network input.
    let (one, eight) = (
        model_file(&fixtures::identity(1)),
        model_file(&fixtures::identity(8)),
    );
    let info = video_info(gst_video::VideoFormat::Rgb, 33, 17);
    let mut h = harness(one.path(), &info);
    let el = h.element().expect("element");
    let frame = |h: &mut Harness| {
        let input = make_buffer(&info);
        let want = visible_bytes(&info, &input);
        let out = h.push_and_pull(input).expect("a frame out");
        assert!(visible_bytes(&info, &out) == want, "identity not exact");
    };
    frame(&mut h);
    el.set_property("model", path_str(&eight));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(PATIENCE_S);
    let mut pushed = 1u64;
    // The property changes at the swap: the event waited for, a frame at a time.
    while el.property::<String>("model") != path_str(&eight) {
        frame(&mut h);
        pushed += 1;
        assert!(std::time::Instant::now() < deadline, "no swap");
    }
    for _ in 0..3 {
        frame(&mut h);
        pushed += 1;
    }
    assert_eq!(el.property::<u64>("frames-processed"), pushed);
}

/// Pushes frame `i` of `info` (RGB) and says which model made it: `Some(k)` for `AFFINES[k]`,
/// `None` for an identity model. Panics when the frame out is not of `info`'s size or not wholly
/// from one model, or when the `model` property, read right after, does not name the model that
/// made it (`names[k]` for `AFFINES[k]`, `identity` for an identity model).
fn push_sized(
    h: &mut Harness,
    info: &gst_video::VideoInfo,
    i: u64,
    names: &[&str],
    identity: &str,
) -> Option<usize> {
    let mut input = make_buffer(info);
    {
        let b = input.get_mut().expect("writable");
        b.set_pts(gst::ClockTime::from_mseconds(33 * i));
        // Every frame its own pixels, so an output left over from an earlier frame shows.
        let mut map = b.map_writable().expect("map");
        for v in map.iter_mut() {
            *v = v.wrapping_add((i % 7) as u8 * 9);
        }
    }
    let want = visible_bytes(info, &input);
    let out = h
        .push_and_pull(input)
        .expect("a frame out for every frame in");
    assert_eq!(out.size(), info.size(), "frame {i} has another size");
    assert_eq!(out.pts(), Some(gst::ClockTime::from_mseconds(33 * i)));
    let caps = h
        .sinkpad()
        .and_then(|p| p.current_caps())
        .expect("negotiated caps");
    let got = gst_video::VideoInfo::from_caps(&caps).expect("video caps");
    assert_eq!((got.width(), got.height()), (info.width(), info.height()));
    let out = visible_bytes(info, &out);
    let made_by = if out == want {
        None
    } else {
        Some(
            which_affine(&want, &out)
                .unwrap_or_else(|| panic!("frame {i} is not wholly from one model")),
        )
    };
    let named = made_by.map_or(identity, |k| names[k]);
    assert_eq!(
        model_property(h),
        named,
        "frame {i}: the property names another model (made by {made_by:?}; names {names:?}, identity {identity})"
    );
    made_by
}

/// The `model` of every `derain-model` (swap) message on `bus` so far.
fn swaps(bus: &gst::Bus) -> Vec<String> {
    let mut swapped = Vec::new();
    while let Some(msg) = bus.pop_filtered(&[gst::MessageType::Element]) {
        if let Some(s) = msg.structure().filter(|s| s.name() == "derain-model") {
            swapped.push(s.get::<String>("model").expect("model"));
        }
    }
    swapped
}

#[test]
fn caps_change_while_a_reload_loads_runs_the_new_model_at_the_new_size() {
    init();
    let _serial = reload_lock();
    let models = affine_models();
    let names: Vec<&str> = models.iter().map(path_str).collect();
    let stream = weather_info();
    // 99x51 pads to 104x56 for multiple_of 8 (to 99x51 for the affine model): the swap must
    // size the network input for the new frame size, not the one the reload was asked at.
    let odd = video_info(gst_video::VideoFormat::Rgb, 99, 51);
    let eight = model_file(&fixtures::identity(8));
    // Models that take one frame size only: the new one, and the old one.
    let takes_new = fixed_identity(64, 48);
    let takes_old = fixed_identity(WEATHER_W as i64, WEATHER_H as i64);
    let small = video_info(gst_video::VideoFormat::Rgb, 64, 48);

    for (to, size, lands) in [
        (path_str(&eight), &odd, true),
        (path_str(&takes_new), &small, true),
        (path_str(&takes_old), &odd, false),
    ] {
        let (mut h, bus) = weather_harness(models[0].path(), &[]);
        let mut next = 0u64;
        for _ in 0..2 {
            assert_eq!(push_sized(&mut h, &stream, next, &names, to), Some(0));
            next += 1;
        }
        let el = h.element().expect("element");
        // The reload starts loading at 192x128; the new caps arrive before any frame can swap
        // it in (the swap waits for a frame boundary, and none is pushed in between).
        el.set_property("model", to);
        h.set_src_caps(size.to_caps().expect("caps"));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(PATIENCE_S);
        if lands {
            // Frames of the new size from the old model until the new one swaps in, then only
            // from the new one.
            while push_sized(&mut h, size, next, &names, to) == Some(0) {
                next += 1;
                assert!(
                    std::time::Instant::now() < deadline,
                    "{to} never swapped in"
                );
            }
            next += 1;
            for _ in 0..3 {
                assert_eq!(push_sized(&mut h, size, next, &names, to), None, "{to}");
                next += 1;
            }
            assert_eq!(swaps(&bus), [to]);
            assert!(
                bus.pop_filtered(&[gst::MessageType::Warning]).is_none(),
                "no warning for {to}"
            );
        } else {
            // A model that cannot take the new size is refused: the old one keeps running,
            // at the new size, and the property names it.
            let warning = loop {
                if let Some(msg) = bus.pop_filtered(&[gst::MessageType::Warning]) {
                    let gst::MessageView::Warning(w) = msg.view() else {
                        unreachable!()
                    };
                    break w.error().to_string();
                }
                assert_eq!(push_sized(&mut h, size, next, &names, to), Some(0));
                next += 1;
                assert!(std::time::Instant::now() < deadline, "no outcome for {to}");
            };
            assert!(
                warning.contains(to) && warning.contains(names[0]),
                "{warning}"
            );
            for _ in 0..3 {
                assert_eq!(push_sized(&mut h, size, next, &names, to), Some(0));
                next += 1;
            }
            assert!(swaps(&bus).is_empty());
        }
        assert_eq!(
            el.property::<u64>("frames-processed"),
            next,
            "{to}: a frame was lost"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The rain detector file and the application's weather.

/// Whether each frame of `h` leaves bit-exact (bypassed) for the `rainy` pattern given.
fn bypass_pattern(h: &mut Harness, pattern: &[bool], first: u64) -> Vec<bool> {
    let (dry, rainy) = (dry_rgb(), rainy_rgb());
    pattern
        .iter()
        .enumerate()
        .map(|(i, &r)| {
            let input = rgb_buffer(if r { &rainy } else { &dry }, first + i as u64);
            let want = all_bytes(&input);
            let out = h.push_and_pull(input).expect("a frame out");
            all_bytes(&out) == want
        })
        .collect()
}

#[test]
fn a_detector_file_drives_the_weather_and_fills_the_meta() {
    init();
    let model = affine_fixture();
    // Says 0.9 on every frame, threshold 0.5: rain all along; 0.1: dry after rain-leave.
    for (p, bypassed) in [(0.9_f32, [false; 4]), (0.1, [false, true, true, true])] {
        let det = model_file(&derain_tools::onnx::constant_rain_detector(p, 0.5));
        let (mut h, _bus) = weather_harness(
            model.path(),
            &[
                ("bypass", "dry"),
                ("rain-leave", "2"),
                ("rain-detector", path_str(&det)),
            ],
        );
        assert_eq!(bypass_pattern(&mut h, &[false; 4], 0), bypassed, "p {p}");
        let el = h.element().expect("element");
        assert!((el.property::<f64>("last-rain-level") - f64::from(p)).abs() < 1e-5);
        assert_eq!(el.property::<f64>("rain-threshold"), 0.5, "the card's");
    }
}

#[test]
fn a_bad_detector_file_stops_the_start_naming_it_and_is_refused_while_playing() {
    init();
    let model = affine_fixture();
    let bad = model_file(b"no onnx here");
    let err = first_error(&derain_launch(
        &format!(
            "model=\"{}\" rain-detector=\"{}\"",
            model.path().display(),
            path_str(&bad)
        ),
        RGB_CAPS,
    ))
    .expect("a corrupt detector is an error");
    assert!(
        err.contains(path_str(&bad)) && err.contains("not an ONNX model"),
        "{err}"
    );

    // While playing: a bad file leaves the running detector with a warning.
    let good = model_file(&derain_tools::onnx::constant_rain_detector(0.9, 0.5));
    let (mut h, bus) = weather_harness(model.path(), &[("rain-detector", path_str(&good))]);
    h.push_and_pull(rgb_buffer(&dry_rgb(), 0)).expect("a frame");
    let el = h.element().expect("element");
    el.set_property("rain-detector", path_str(&bad));
    let warning = next_warning(&bus);
    assert!(warning.contains(path_str(&bad)), "{warning}");
    let out = h.push_and_pull(rgb_buffer(&dry_rgb(), 1)).expect("a frame");
    assert!(
        (rain_level(&out) - 0.9).abs() < 1e-5,
        "the old detector still scores"
    );
}

#[test]
fn the_application_weather_switches_the_mode_at_the_frame_it_names() {
    init();
    let model = affine_fixture();
    // The detector says rain on every frame; the application overrules it.
    let det = model_file(&derain_tools::onnx::constant_rain_detector(0.9, 0.5));
    let (mut h, bus) = weather_harness(
        model.path(),
        &[
            ("bypass", "dry"),
            ("weather-source", "application"),
            ("rain-detector", path_str(&det)),
        ],
    );
    let el = h.element().expect("element");
    let frame_time = |i: u64| gst::ClockTime::from_mseconds(33 * i).nseconds();
    // Dry from frame 2, rain from frame 5, dry again from frame 7; an unknown word changes nothing.
    for (weather, at, taken) in [
        ("dry", frame_time(2), true),
        ("rain", frame_time(5), true),
        ("sleet", frame_time(6), false),
        ("dry", frame_time(7), true),
    ] {
        let ok = el.emit_by_name::<bool>("set-weather", &[&weather, &at]);
        assert_eq!(ok, taken, "{weather}");
    }
    let got = bypass_pattern(&mut h, &[true; 9], 0);
    let want = [false, false, true, true, true, false, false, true, true];
    assert_eq!(got, want);
    let out = h
        .push_and_pull(rgb_buffer(&rainy_rgb(), 9))
        .expect("a frame");
    assert!(
        (rain_level(&out) - 0.9).abs() < 1e-5,
        "the detector still scores"
    );
    let changes: Vec<String> = weather_messages(&bus).into_iter().map(|m| m.0).collect();
    assert_eq!(changes, ["dry", "rain", "dry"]);
}
