//! What the element knows about the weather: the rain score of a frame straight from its planes
//! (2×2-binned, without running the network), and the hysteresis that turns scores into a mode
//! (`rain` or `dry`) that does not flap.

use derain_core::frame::{FrameLayout, PixelFormat, YuvDecode};
use derain_core::raindetect::{RainDetector, RainDetectorError};
use derain_core::rainscore::{Binned, RainScoreModel};

/// What scores a frame's weather: the rain detector network (the `rain-detector` property, or
/// one embedded in the build), or the hand-made ten-feature score that builds without an
/// embedded detector fall back to.
pub enum Scorer {
    Network(Box<RainDetector>),
    Features(RainScoreModel),
}

impl Scorer {
    /// The frame's rain score in [0, 1].
    pub fn score(&mut self, b: &Binned) -> Result<f64, RainDetectorError> {
        match self {
            Scorer::Network(d) => d.score(b),
            Scorer::Features(m) => Ok(m.score(b)),
        }
    }

    /// The score above which a frame is called rainy, as shipped with the scorer.
    pub fn threshold(&self) -> f64 {
        match self {
            Scorer::Network(d) => d.threshold(),
            Scorer::Features(m) => m.threshold,
        }
    }

    /// What scores, for messages.
    pub fn origin(&self) -> &str {
        match self {
            Scorer::Network(d) => d.origin(),
            Scorer::Features(_) => "the hand-made rain score",
        }
    }
}

/// Frames a rainy score must persist before the element calls it rain. Small: entering rain late
/// passes rainy frames through with their rain, the harmful side, so three frames (0.1 s at 30 fps)
/// only guard against a single bright frame (a flash, a reflection).
pub const DEFAULT_RAIN_ENTER: u32 = 3;
/// Frames a dry score must persist before the element calls it dry. Large: leaving rain late
/// only costs the network on a few dry frames (the model is made to leave them almost untouched),
/// while leaving early lets a lull between showers pass rain through; 30 frames is one second at
/// 30 fps.
pub const DEFAULT_RAIN_LEAVE: u32 = 30;
/// Score every second frame by default: one score costs about 8% of a derain-lite frame on the
/// 2-core bench VM (1.7 of 22.6 ms at 640×360), so every second frame keeps it near 4%, inside
/// the 5% issue 15 allows; the hysteresis then reacts within 6 frames (0.2 s at 30 fps).
pub const DEFAULT_SCORE_INTERVAL: u32 = 2;

/// The mode the hysteresis starts in (and returns to on flush, caps change and discontinuity):
/// rain. Unknown weather is treated as rain, so no rainy frame passes through untouched before
/// the evidence says dry; starting dry would pass up to `rain-enter` rainy frames.
pub const START_RAINING: bool = true;

/// The weather as the element names it (the `weather` property, `derain-stats` and the
/// `derain-weather` message).
pub fn weather_name(raining: bool) -> &'static str {
    if raining { "rain" } else { "dry" }
}

/// Hysteresis over the scored frames: the mode changes after `enter` (to rain) or `leave` (to
/// dry) consecutive scored frames that disagree with it; the frame completing the run is the
/// first in the new mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hysteresis {
    pub raining: bool,
    /// Consecutive scored frames that disagree with the mode.
    run: u32,
}

impl Default for Hysteresis {
    fn default() -> Self {
        Self {
            raining: START_RAINING,
            run: 0,
        }
    }
}

impl Hysteresis {
    /// Sets the mode outright (the application's weather), forgetting any run of disagreeing
    /// frames.
    pub fn set(&mut self, raining: bool) {
        self.raining = raining;
        self.run = 0;
    }

    /// Takes the verdict of one scored frame; returns whether the mode changed.
    pub fn observe(&mut self, rainy: bool, enter: u32, leave: u32) -> bool {
        if rainy == self.raining {
            self.run = 0;
            return false;
        }
        self.run += 1;
        let needed = if self.raining { leave } else { enter };
        if self.run >= needed.max(1) {
            self.raining = rainy;
            self.run = 0;
            true
        } else {
            false
        }
    }
}

/// 2×2-binned RGB (values in [0, 1]) of a frame given by its planes, as
/// [`Binned::from_chw`] would give from the network's input tensor (to float rounding), without
/// converting the whole frame to floats: a pass over the bytes, row pair by row pair. YUV
/// formats are decoded with the frame's matrix and range (the tensor conversion's formulas); a
/// 2×2 block shares one chroma sample in 4:2:0, so it is looked up once per binned pixel.
pub fn binned_from_planes(layout: &FrameLayout, planes: &[&[u8]]) -> Option<Binned> {
    let (w, h) = (layout.width, layout.height);
    layout.check_planes(planes).ok()?;
    let (bw, bh) = (w / 2, h / 2);
    let s = layout.strides;
    let mut rgb = Vec::with_capacity(bw * bh * 3);
    match layout.format {
        PixelFormat::I420 | PixelFormat::Nv12 => {
            let t = YuvDecode::new(layout.colorimetry);
            let y = planes[0];
            for by in 0..bh {
                let y0 = &y[2 * by * s[0]..][..2 * bw];
                let y1 = &y[(2 * by + 1) * s[0]..][..2 * bw];
                let mut push = |k: usize, u: u8, v: u8| {
                    let (cr, cg, cb) = t.chroma(u, v);
                    let luma =
                        [y0[2 * k], y0[2 * k + 1], y1[2 * k], y1[2 * k + 1]].map(|b| t.luma(b));
                    let mean = |c: f32, sign: f32| {
                        let [a, b, c2, d] = luma.map(|l| (l + sign * c).clamp(0.0, 1.0));
                        0.25 * (a + b + c2 + d)
                    };
                    rgb.extend_from_slice(&[mean(cr, 1.0), mean(cg, -1.0), mean(cb, 1.0)]);
                };
                if layout.format == PixelFormat::I420 {
                    let u = &planes[1][by * s[1]..][..bw];
                    let v = &planes[2][by * s[2]..][..bw];
                    for k in 0..bw {
                        push(k, u[k], v[k]);
                    }
                } else {
                    let uv = &planes[1][by * s[1]..][..2 * bw];
                    for k in 0..bw {
                        push(k, uv[2 * k], uv[2 * k + 1]);
                    }
                }
            }
        }
        format => {
            let bpp = format.bytes_per_pixel()?;
            let [ro, go, bo] = format.rgb_offsets()?;
            let p = planes[0];
            // The mean of four bytes over 255, in one multiplication.
            const SCALE: f32 = 1.0 / (4.0 * 255.0);
            for by in 0..bh {
                let r0 = &p[2 * by * s[0]..][..2 * bw * bpp];
                let r1 = &p[(2 * by + 1) * s[0]..][..2 * bw * bpp];
                for (a, b) in r0.chunks_exact(2 * bpp).zip(r1.chunks_exact(2 * bpp)) {
                    for o in [ro, go, bo] {
                        let sum = u16::from(a[o])
                            + u16::from(a[bpp + o])
                            + u16::from(b[o])
                            + u16::from(b[bpp + o]);
                        rgb.push(f32::from(sum) * SCALE);
                    }
                }
            }
        }
    }
    Some(Binned {
        width: bw,
        height: bh,
        rgb,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use derain_core::frame::{self, YuvColorimetry, YuvMatrix};

    #[test]
    fn hysteresis_switches_exactly_at_the_counts() {
        let mut h = Hysteresis::default();
        assert!(h.raining, "starts in rain");
        // Two dry frames, an interruption, then three in a row with leave = 3.
        assert!(!h.observe(false, 2, 3));
        assert!(!h.observe(false, 2, 3));
        assert!(!h.observe(true, 2, 3));
        assert!(!h.observe(false, 2, 3));
        assert!(!h.observe(false, 2, 3));
        assert!(h.observe(false, 2, 3));
        assert!(!h.raining);
        assert!(!h.observe(false, 2, 3));
        assert!(!h.observe(true, 2, 3));
        assert!(h.observe(true, 2, 3));
        assert!(h.raining);
        // A count of 1 switches on the first disagreeing frame (0 is treated as 1).
        assert!(h.observe(false, 1, 0));
    }

    fn planes_of(format: PixelFormat, w: usize, h: usize) -> (FrameLayout, Vec<Vec<u8>>) {
        let mut layout = FrameLayout::packed(format, w, h);
        // Padded strides, so that the stride handling is exercised.
        for p in 0..format.n_planes() {
            layout.strides[p] += 7;
        }
        layout.colorimetry = YuvColorimetry {
            matrix: YuvMatrix::Bt709,
            full_range: false,
        };
        let planes = (0..format.n_planes())
            .map(|p| {
                (0..layout.plane_len(p))
                    .map(|i| ((i * 37 + p * 11 + (i / 13) * 5) % 256) as u8)
                    .collect()
            })
            .collect();
        (layout, planes)
    }

    #[test]
    fn binning_matches_the_tensor_path() {
        for format in PixelFormat::ALL {
            let (w, h) = (37, 22);
            let (layout, planes) = planes_of(format, w, h);
            let refs: Vec<&[u8]> = planes.iter().map(Vec::as_slice).collect();
            let (hp, wp) = frame::padded_size(h, w, 8);
            let mut tensor = vec![0f32; 3 * hp * wp];
            frame::frame_to_tensor(&layout, &refs, 8, &mut tensor).unwrap();
            let want = Binned::from_chw(&tensor, hp, wp, h, w).unwrap();
            let got = binned_from_planes(&layout, &refs).unwrap();
            assert_eq!((got.width, got.height), (want.width, want.height));
            let worst = got
                .rgb
                .iter()
                .zip(&want.rgb)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            let tolerance = 1e-6;
            assert!(worst <= tolerance, "{format}: off by {worst}");
        }
    }

    #[test]
    fn short_planes_give_no_score() {
        let (layout, planes) = planes_of(PixelFormat::Rgb, 16, 16);
        assert!(binned_from_planes(&layout, &[&planes[0][..10]]).is_none());
    }
}
