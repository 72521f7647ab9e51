//! The learned rain detector: a tiny network that tells from one frame whether it rains, so the
//! element can pass dry frames through untouched and run the generator only in rain.
//!
//! # The contract
//!
//! One ONNX file with a model card whose `kind` is [`KIND`] and whose `threshold` (in (0, 1))
//! is the score above which a frame is called rainy. Input [`INPUT_NAME`]: float32
//! `[1, 3, H, W]`, RGB in [0, 1], H and W dynamic. Output [`OUTPUT_NAME`]: one value, the
//! calibrated probability that the frame shows rain (streaks, veil, spray or drops on the glass).
//!
//! # What it sees
//!
//! The frame at a fixed scale ([`detector_input`]): the 2×2-binned copy the element already
//! makes ([`Binned`]), binned again by the integer factor that brings its height nearest
//! [`CANONICAL_HEIGHT`]. A 640×360 frame is seen at 320×180, 1280×720 at 320×180, 1920×1080 at
//! 320×180; a streak keeps about the same width in pixels whatever the camera's resolution,
//! and the network's cost stays a fixed few million multiply-adds per frame. Training feeds it
//! through the same function, so training and serving cannot drift apart.

use std::path::Path;

use onnx_protobuf::ModelProto;
use ort::value::{TensorElementType, TensorRef, ValueType};
use protobuf::Message;
use sha2::{Digest, Sha256};

use crate::card::{CARD_KEY, ModelCard};
use crate::rainscore::Binned;
use crate::runtime::{OpenSession, RuntimeError, SessionOptions};

/// The card's `kind` for a rain detector.
pub const KIND: &str = "rain-detector";
/// The detector's input name.
pub const INPUT_NAME: &str = "frame";
/// The detector's output name.
pub const OUTPUT_NAME: &str = "rain";
/// The height (in pixels) the detector's input is binned nearest to.
pub const CANONICAL_HEIGHT: usize = 180;
/// The smallest side the detector is run on: smaller inputs are padded (edge pixels repeated).
pub const MIN_SIDE: usize = 16;

/// What went wrong loading or running a rain detector; every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum RainDetectorError {
    #[error("rain detector '{origin}': cannot read it: {source}")]
    Read {
        origin: String,
        source: std::io::Error,
    },
    #[error("rain detector '{origin}': {problem}")]
    Model { origin: String, problem: String },
    #[error("rain detector '{origin}': {source}")]
    Runtime {
        origin: String,
        source: RuntimeError,
    },
    #[error("rain detector '{origin}': inference failed: {reason}")]
    Run { origin: String, reason: String },
}

/// The detector's input for one frame: planar RGB in [0, 1].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DetectorInput {
    pub width: usize,
    pub height: usize,
    /// `[3, height, width]`, row-major.
    pub chw: Vec<f32>,
}

/// The integer factor by which a binned frame of `height` rows is binned again for the detector.
pub fn extra_binning(height: usize) -> usize {
    ((height + CANONICAL_HEIGHT / 2) / CANONICAL_HEIGHT).max(1)
}

/// The detector's input for a 2×2-binned frame (see the module docs). Frames too small to bin
/// (or smaller than [`MIN_SIDE`]) are padded by repeating their edge pixels; an empty frame
/// becomes mid-grey, so every frame gets a score.
pub fn detector_input(b: &Binned) -> DetectorInput {
    let valid = b.width > 0 && b.height > 0 && b.rgb.len() >= 3 * b.width * b.height;
    if !valid {
        return DetectorInput {
            width: MIN_SIDE,
            height: MIN_SIDE,
            chw: vec![0.5; 3 * MIN_SIDE * MIN_SIDE],
        };
    }
    let k = extra_binning(b.height);
    let (w, h) = ((b.width / k).max(1), (b.height / k).max(1));
    // With k > height the one row is the mean of what there is.
    let (kx, ky) = (k.min(b.width), k.min(b.height));
    let (ow, oh) = (w.max(MIN_SIDE), h.max(MIN_SIDE));
    let mut chw = vec![0.0_f32; 3 * ow * oh];
    let norm = 1.0 / (kx * ky) as f32;
    for y in 0..h {
        for x in 0..w {
            let mut acc = [0.0_f32; 3];
            for dy in 0..ky {
                let row = (y * ky + dy) * b.width;
                for dx in 0..kx {
                    let i = 3 * (row + x * kx + dx);
                    acc[0] += b.rgb[i];
                    acc[1] += b.rgb[i + 1];
                    acc[2] += b.rgb[i + 2];
                }
            }
            for (c, a) in acc.iter().enumerate() {
                chw[c * ow * oh + y * ow + x] = a * norm;
            }
        }
    }
    // Edge padding up to MIN_SIDE.
    for c in 0..3 {
        let plane = &mut chw[c * ow * oh..(c + 1) * ow * oh];
        for y in 0..oh {
            let sy = y.min(h - 1);
            for x in 0..ow {
                if y < h && x < w {
                    continue;
                }
                plane[y * ow + x] = plane[sy * ow + x.min(w - 1)];
            }
        }
    }
    DetectorInput {
        width: ow,
        height: oh,
        chw,
    }
}

/// The detector's card fields beyond the common ones.
fn card_threshold(card: &ModelCard) -> Result<f64, String> {
    match card.extra.get("kind").and_then(|k| k.as_str()) {
        Some(KIND) => {}
        Some(other) => {
            return Err(format!(
                "its card says kind '{other}', not '{KIND}' (is it a generator?)"
            ));
        }
        None => return Err(format!("its card has no kind (expected '{KIND}')")),
    }
    let t = card
        .extra
        .get("threshold")
        .and_then(|t| t.as_f64())
        .ok_or("its card has no numeric threshold")?;
    if !(t > 0.0 && t < 1.0) {
        return Err(format!("its card's threshold {t} is outside (0, 1)"));
    }
    Ok(t)
}

/// Reads the card of a detector file's bytes, checking the contract (not running it).
pub fn read_card(bytes: &[u8]) -> Result<(ModelCard, f64), String> {
    if bytes.is_empty() {
        return Err("the file is empty".into());
    }
    let proto =
        ModelProto::parse_from_bytes(bytes).map_err(|e| format!("not an ONNX model: {e}"))?;
    let text = proto
        .metadata_props
        .iter()
        .find(|p| p.key == CARD_KEY)
        .map(|p| p.value.as_str())
        .ok_or_else(|| format!("it has no model card ('{CARD_KEY}' in metadata_props)"))?;
    let card = ModelCard::from_json(text).map_err(|e| format!("its model card: {e}"))?;
    let threshold = card_threshold(&card)?;
    Ok((card, threshold))
}

/// The embedded rain detector (`models/rain-detector.onnx` at build time), if the build had one.
pub fn embedded() -> Option<&'static [u8]> {
    #[cfg(derain_embed_detector)]
    {
        Some(include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../models/rain-detector.onnx"
        )))
    }
    #[cfg(not(derain_embed_detector))]
    {
        None
    }
}

/// A rain detector ready to run: its session (on the CPU: it is a few million multiply-adds,
/// which a GPU round trip would only slow down), its card and threshold.
pub struct RainDetector {
    session: OpenSession,
    origin: String,
    card: ModelCard,
    threshold: f64,
}

impl std::fmt::Debug for RainDetector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RainDetector")
            .field("origin", &self.origin)
            .field("threshold", &self.threshold)
            .finish()
    }
}

impl RainDetector {
    /// Loads the detector at `path`.
    pub fn from_path(path: &Path, options: &SessionOptions) -> Result<Self, RainDetectorError> {
        let origin = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| RainDetectorError::Read {
            origin: origin.clone(),
            source,
        })?;
        Self::from_bytes(&bytes, &origin, options)
    }

    /// The embedded detector; an error when this build has none.
    pub fn shipped(options: &SessionOptions) -> Result<Self, RainDetectorError> {
        let bytes = embedded().ok_or_else(|| RainDetectorError::Model {
            origin: "embedded".into(),
            problem: "this build embeds no rain detector (models/rain-detector.onnx was \
                      missing when it was built)"
                .into(),
        })?;
        Self::from_bytes(bytes, "embedded rain-detector", options)
    }

    /// Loads a detector from memory: checks its card and its input and output, then runs it
    /// once on a grey frame so a detector that cannot run fails here, not on the first frame.
    /// `options.provider` is ignored: the detector runs on the CPU with one thread.
    pub fn from_bytes(
        bytes: &[u8],
        origin: &str,
        options: &SessionOptions,
    ) -> Result<Self, RainDetectorError> {
        let model_err = |problem: String| RainDetectorError::Model {
            origin: origin.to_owned(),
            problem,
        };
        let (card, threshold) = read_card(bytes).map_err(model_err)?;
        let cpu = SessionOptions {
            provider: crate::runtime::Provider::Cpu,
            threads: 1,
            spin: false,
            ..options.clone()
        };
        let sha256 = format!("{:x}", Sha256::digest(bytes));
        let session = OpenSession::new(bytes, origin, &sha256, &cpu).map_err(|source| {
            RainDetectorError::Runtime {
                origin: origin.to_owned(),
                source,
            }
        })?;
        let mut det = Self {
            session,
            origin: origin.to_owned(),
            card,
            threshold,
        };
        det.check_io().map_err(model_err)?;
        let grey = DetectorInput {
            width: 32,
            height: 32,
            chw: vec![0.5; 3 * 32 * 32],
        };
        det.run(&grey)?;
        Ok(det)
    }

    fn check_io(&mut self) -> Result<(), String> {
        let s = self.session.session();
        let [input] = s.inputs() else {
            return Err(format!("has {} inputs, expected one", s.inputs().len()));
        };
        if input.name() != INPUT_NAME {
            return Err(format!(
                "its input is '{}', expected '{INPUT_NAME}'",
                input.name()
            ));
        }
        match input.dtype() {
            ValueType::Tensor {
                ty: TensorElementType::Float32,
                shape,
                ..
            } if shape.len() == 4 && (shape[1] == 3 || shape[1] < 0) => {}
            other => {
                return Err(format!(
                    "its input '{INPUT_NAME}' is {other}, expected float32 [1,3,H,W]"
                ));
            }
        }
        if !s.outputs().iter().any(|o| o.name() == OUTPUT_NAME) {
            return Err(format!("it has no output '{OUTPUT_NAME}'"));
        }
        Ok(())
    }

    /// Where the detector came from.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Its card.
    pub fn card(&self) -> &ModelCard {
        &self.card
    }

    /// The score above which a frame is called rainy.
    pub fn threshold(&self) -> f64 {
        self.threshold
    }

    /// The probability of rain in a frame given as its 2×2-binned copy.
    pub fn score(&mut self, b: &Binned) -> Result<f64, RainDetectorError> {
        self.run(&detector_input(b))
    }

    /// The probability of rain for a prepared input.
    pub fn run(&mut self, input: &DetectorInput) -> Result<f64, RainDetectorError> {
        let run_err = |reason: String| RainDetectorError::Run {
            origin: self.origin.clone(),
            reason,
        };
        let shape = [1, 3, input.height, input.width];
        let tensor = TensorRef::from_array_view((shape, input.chw.as_slice()))
            .map_err(|e| run_err(e.to_string()))?;
        let outputs = self
            .session
            .session()
            .run(ort::inputs![INPUT_NAME => tensor])
            .map_err(|e| run_err(e.to_string()))?;
        let (_, data) = outputs[OUTPUT_NAME]
            .try_extract_tensor::<f32>()
            .map_err(|e| run_err(format!("output '{OUTPUT_NAME}': {e}")))?;
        let [p] = data else {
            return Err(run_err(format!(
                "output '{OUTPUT_NAME}' has {} values, expected one",
                data.len()
            )));
        };
        if !p.is_finite() || !(0.0..=1.0).contains(p) {
            return Err(run_err(format!(
                "output {p} is not a probability in [0, 1]"
            )));
        }
        Ok(f64::from(*p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn extra_binning_brings_heights_near_the_canonical_one() {
        assert_eq!(extra_binning(180), 1);
        assert_eq!(extra_binning(120), 1);
        assert_eq!(extra_binning(360), 2);
        assert_eq!(extra_binning(540), 3);
        assert_eq!(extra_binning(1), 1);
    }

    #[test]
    fn input_is_binned_means_in_planar_order() {
        // 360 rows: binned by 2.
        let b = binned(40, 360, |x, y| ((x + y) % 4) as f32 / 4.0);
        let d = detector_input(&b);
        assert_eq!((d.width, d.height), (20, 180));
        // Pixel (0,0) is the mean of (0,0),(1,0),(0,1),(1,1): values 0, .25, .25, .5.
        assert!((d.chw[0] - 0.25).abs() < 1e-6);
        // Green plane is half of red, blue is 1 - red.
        assert!((d.chw[20 * 180] - 0.125).abs() < 1e-6);
        assert!((d.chw[2 * 20 * 180] - 0.75).abs() < 1e-6);
    }

    #[test]
    fn small_and_empty_frames_are_padded_to_the_minimum() {
        let d = detector_input(&binned(5, 3, |x, _| x as f32 / 4.0));
        assert_eq!((d.width, d.height), (MIN_SIDE, MIN_SIDE));
        // Row 10 repeats row 2, column 10 repeats column 4.
        assert_eq!(d.chw[10 * MIN_SIDE + 10], 1.0);
        assert_eq!(d.chw[10 * MIN_SIDE + 1], 0.25);
        let e = detector_input(&Binned::default());
        assert_eq!((e.width, e.height), (MIN_SIDE, MIN_SIDE));
        assert!(e.chw.iter().all(|&v| v == 0.5));
    }

    #[test]
    fn cards_without_the_detector_fields_are_refused() {
        let mut card = ModelCard::new("x");
        assert!(card_threshold(&card).unwrap_err().contains("no kind"));
        card.extra.insert("kind".into(), "generator".into());
        assert!(card_threshold(&card).unwrap_err().contains("generator"));
        card.extra.insert("kind".into(), KIND.into());
        assert!(card_threshold(&card).unwrap_err().contains("threshold"));
        card.extra.insert("threshold".into(), 1.5.into());
        assert!(card_threshold(&card).unwrap_err().contains("outside"));
        card.extra.insert("threshold".into(), 0.4.into());
        assert_eq!(card_threshold(&card), Ok(0.4));
        assert!(read_card(&[]).unwrap_err().contains("empty"));
        assert!(read_card(b"not onnx at all").is_err());
    }
}
