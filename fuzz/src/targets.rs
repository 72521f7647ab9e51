//! The fuzz targets' bodies, one `fn(&[u8])` each: what the project reads from outside (model
//! cards, ONNX files, raw frames of any format, size and stride, detector outputs, image and
//! video files) must come back as a value or a typed error: never a panic, an abort or a hang.
//!
//! Shared by the libFuzzer targets in `fuzz_targets/` (nightly, `make fuzz`) and by the stable
//! replay test `tests/fuzz_regressions.rs` of the main crate, which runs every committed corpus
//! file and crash reproducer through the same functions in `make test`.

use std::io::Write;
use std::time::{Duration, Instant};

use derain::card::ModelCard;
use derain::detect::{
    Detection, ImageView, Labels, Layout, Letterbox, Padding, Preprocess, Roi, RoiAnchor, layout,
    nms,
};
use derain::footage::{Footage, FootageOptions, VideoReader};
use derain::frame::{self, FrameLayout, PixelFormat, YuvColorimetry, YuvMatrix};
use derain::model::Model;

/// A fuzz target: takes any bytes, returns only if they were handled.
pub type Target = fn(&[u8]);

/// The targets by name, as `cargo fuzz` and the replay test know them.
pub const TARGETS: [(&str, Target); 6] = [
    ("model_card", model_card),
    ("onnx_model", onnx_model),
    ("frame_conversion", frame_conversion),
    ("detector_output", detector_output),
    ("footage_image", footage_image),
    ("footage_video", footage_video),
];

/// Reads little-endian fields off the front of the input; zeros once it runs out.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    fn f32(&mut self) -> f32 {
        f32::from_bits(self.u32())
    }

    /// A size: usually small, sometimes anything (so overflow paths are reached too).
    fn size(&mut self, small: usize) -> usize {
        match self.u8() {
            0 => self.u32() as usize * self.u32() as usize,
            1 => usize::MAX - self.u8() as usize,
            b => (usize::from(b) * 7 + usize::from(self.u8())) % small.max(1),
        }
    }

    fn rest(&self) -> &[u8] {
        self.0
    }
}

/// The model card parser: any text either parses into a card that survives a round trip through
/// its own JSON, or is an error.
pub fn model_card(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(card) = ModelCard::from_json(&text) {
        let json = card.to_json();
        let back = ModelCard::from_json(&json)
            .unwrap_or_else(|e| panic!("a parsed card's own JSON does not parse: {e}: {json}"));
        assert_eq!(back.to_json(), json, "a card changes on a round trip");
    }
}

/// The ONNX loader's validation: any bytes are a validated model or a typed error; a valid
/// model answers every frame size without panicking.
pub fn onnx_model(data: &[u8]) {
    let Ok(model) = Model::from_bytes(data.to_vec(), "fuzz.onnx") else {
        return;
    };
    assert!(model.multiple_of() >= 1);
    let _ = model.card().to_json();
    for (w, h) in [
        (1, 1),
        (641, 359),
        (0, 7),
        (usize::MAX, 3),
        (3, usize::MAX / 2),
    ] {
        let _ = model.check_frame_size(w, h);
    }
}

const FORMATS: [PixelFormat; 12] = PixelFormat::ALL;

/// Frame conversion with random formats, sizes, strides, plane lengths, colorimetry and
/// multiple_of: errors for impossible geometry, never a panic; and RGB-family frames survive
/// frame -> tensor -> frame byte for byte (alpha, padding and stride bytes included).
pub fn frame_conversion(data: &[u8]) {
    let mut b = Bytes(data);
    let format = FORMATS[usize::from(b.u8()) % FORMATS.len()];
    let width = b.size(70);
    let height = b.size(50);
    let multiple_of = match b.u8() {
        0 => 0,
        255 => b.u32(),
        m => u32::from(m % 17),
    };
    let colorimetry = YuvColorimetry {
        matrix: [YuvMatrix::Bt601, YuvMatrix::Bt709, YuvMatrix::Bt2020][usize::from(b.u8()) % 3],
        full_range: b.u8() & 1 == 1,
    };
    let mut layout = FrameLayout::packed(format, width, height).with_colorimetry(colorimetry);
    for stride in layout.strides.iter_mut() {
        // Mostly padded a little; sometimes too small or absurd.
        *stride = match b.u8() {
            0 => b.size(4096),
            1 => 0,
            s => stride.saturating_add(usize::from(s % 8)),
        };
    }
    let shorten = usize::from(b.u8() % 4);
    let fill = b.rest().to_vec();
    let mut planes: Vec<Vec<u8>> = (0..format.n_planes())
        .map(|p| {
            let len = layout.plane_len(p);
            // Geometry beyond a few MB is only ever checked, never allocated.
            let len = if len > 1 << 22 { 64 } else { len };
            let len = len.saturating_sub(if p == 0 { shorten } else { 0 });
            (0..len)
                .map(|i| fill.get(i % fill.len().max(1)).copied().unwrap_or(i as u8))
                .collect()
        })
        .collect();
    let tensor_len = layout.tensor_len(multiple_of).unwrap_or(usize::MAX);
    let mut tensor = if tensor_len <= 1 << 22 {
        vec![0.0; tensor_len]
    } else {
        // Too large to be real: the conversion must refuse it with an error.
        Vec::new()
    };
    let refs: Vec<&[u8]> = planes.iter().map(Vec::as_slice).collect();
    let Ok((hp, wp)) = frame::frame_to_tensor(&layout, &refs, multiple_of, &mut tensor) else {
        return;
    };
    assert_eq!((hp, wp), frame::padded_size(height, width, multiple_of));
    assert!(
        tensor.iter().all(|v| (0.0..=1.0).contains(v)),
        "tensor values outside [0,1]"
    );
    let before = planes.clone();
    let mut outs: Vec<&mut [u8]> = planes.iter_mut().map(Vec::as_mut_slice).collect();
    frame::tensor_to_frame(&tensor, hp, wp, &layout, &mut outs)
        .unwrap_or_else(|e| panic!("a tensor made from a frame does not go back: {e}"));
    if !format.is_yuv() {
        assert!(
            planes == before,
            "{format} {width}x{height}: round trip not exact"
        );
    }
}

/// Detector output decoding: any shape, values (NaN and infinities included), input size,
/// threshold and layout decode into boxes or a layout error, and the boxes go through the
/// letterbox, the region of interest, NMS and the JSON record without a panic.
pub fn detector_output(data: &[u8]) {
    let mut b = Bytes(data);
    let input_h = b.size(700);
    let input_w = b.size(700);
    let shape: Vec<usize> = (0..usize::from(b.u8() % 5)).map(|_| b.size(400)).collect();
    let threshold = b.f32();
    let asked = match b.u8() % 4 {
        0 => None,
        i => Some(Layout::ALL[usize::from(i) - 1]),
    };
    let (src_w, src_h) = (b.size(2000), b.size(2000));
    let padding = if b.u8() & 1 == 0 {
        Padding::Centre
    } else {
        Padding::BottomRight
    };
    let iou = b.f32();
    let max_dets = usize::from(b.u8());
    let values: Vec<f32> = b
        .rest()
        .as_chunks::<4>()
        .0
        .iter()
        .map(|c| f32::from_le_bytes(*c))
        .collect();

    let lb = Letterbox::new(src_w, src_h, input_w.min(4096), input_h.min(4096), padding);
    let guessed = layout::infer_layout(&shape, &values, input_h, input_w);
    let Ok(chosen) = asked.map_or(guessed, Ok) else {
        return;
    };
    let _ = layout::num_classes(chosen, &shape);
    let Ok(dets) = layout::decode(chosen, &shape, &values, input_h, input_w, threshold) else {
        return;
    };
    let roi: Roi = "0,0,1,0.85".parse().expect("a valid region of interest");
    let kept: Vec<Detection> = dets.iter().map(|d| lb.to_frame(d)).collect();
    for d in &kept {
        for anchor in [
            RoiAnchor::BottomCentre,
            RoiAnchor::Centre,
            RoiAnchor::WholeBox,
        ] {
            let _ = roi.keeps(d, anchor, src_w, src_h);
        }
    }
    let boxes = nms::nms(kept, iou, max_dets);
    assert!(boxes.len() <= max_dets);
    for d in &boxes {
        let _ = d.pixel_rect();
    }
    let record = derain::detect::FrameRecord::new(Some(1), 2, true, &boxes, &Labels::coco());
    let _ = record.to_json_line();

    // The letterbox fill on a small frame of that geometry.
    let (fw, fh) = (src_w % 64 + 1, src_h % 64 + 1);
    let pixels = vec![7u8; fw * fh * 3];
    let img = ImageView::rgb(&pixels, fw, fh);
    if img.is_valid() {
        let lb = Letterbox::new(fw, fh, input_w % 96 + 1, input_h % 96 + 1, padding);
        let mut tensor = Vec::new();
        lb.fill(&img, &Preprocess::for_layout(chosen), &mut tensor);
        assert_eq!(tensor.len(), 3 * lb.dst_w * lb.dst_h);
    }
}

/// Writes `data` to a temporary file with `ext`; `None` when the file system refuses.
fn temp_file(data: &[u8], ext: &str) -> Option<tempfile::NamedTempFile> {
    let mut f = tempfile::Builder::new()
        .prefix("derain-fuzz-")
        .suffix(&format!(".{ext}"))
        .tempfile()
        .ok()?;
    f.write_all(data).ok()?;
    f.flush().ok()?;
    Some(f)
}

/// The footage reader on image files: any bytes under any image extension give frames of the
/// size they claim, or an error naming the file.
pub fn footage_image(data: &[u8]) {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    let ext = ["png", "jpg", "jpeg", "bmp"][usize::from(which) % 4];
    let Some(file) = temp_file(body, ext) else {
        return;
    };
    if let Ok(img) = derain::imageio::load_rgb(file.path()) {
        assert_eq!(
            img.as_raw().len(),
            img.width() as usize * img.height() as usize * 3
        );
    }
    let options = FootageOptions {
        min_scene_change: Some(1.5),
        downscale: 1 + u32::from(which >> 6),
        ..FootageOptions::default()
    };
    let Ok(footage) = Footage::open(&[file.path().to_path_buf()], options) else {
        return;
    };
    for frame in footage.take(4) {
        let Ok(frame) = frame else { break };
        assert!(frame.image.width() > 0 && frame.image.height() > 0);
    }
}

/// How long one pass over a video may take before it counts as a hang: the reader gives up after
/// 10 s without a first frame (30 s between later ones; these files are a few frames long).
const VIDEO_DEADLINE: Duration = Duration::from_secs(15);

/// The footage reader on video files: any bytes under any video extension decode into frames,
/// end, or fail with an error naming the file, within the deadline.
pub fn footage_video(data: &[u8]) {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    let ext = ["mp4", "mkv", "avi", "h264", "ts", "webm", "mov"][usize::from(which) % 7];
    let Some(file) = temp_file(body, ext) else {
        return;
    };
    let started = Instant::now();
    if let Ok(mut reader) = VideoReader::open(file.path()) {
        for _ in 0..30 {
            match reader.next_frame() {
                Ok(Some(f)) => {
                    let (w, h) = (f.image.width() as usize, f.image.height() as usize);
                    assert_eq!(f.image.as_raw().len(), w * h * 3);
                }
                Ok(None) | Err(_) => break,
            }
            assert!(started.elapsed() < VIDEO_DEADLINE, "video read hangs");
        }
    }
    // Through the footage iterator too: stride, scene sampling and downscale on decoded frames.
    let options = FootageOptions {
        stride: 1 + usize::from(which >> 6),
        max_frames: Some(10),
        min_scene_change: Some(0.5),
        downscale: 2,
        progress: false,
    };
    if let Ok(footage) = Footage::open(&[file.path().to_path_buf()], options) {
        for frame in footage {
            if frame.is_err() {
                break;
            }
        }
    }
    assert!(started.elapsed() < 2 * VIDEO_DEADLINE, "video read hangs");
}
