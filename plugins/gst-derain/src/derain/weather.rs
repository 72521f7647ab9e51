//! What the element knows about the weather: the rain score of a frame straight from its planes
//! (2×2-binned, without running the network), and the hysteresis that turns scores into a mode
//! (`rain` or `dry`) that does not flap.

use derain::frame::{FrameLayout, PixelFormat};
use derain::rainscore::Binned;

/// Frames a rainy score must persist before the element calls it rain. Small: entering rain late
/// passes rainy frames through with their rain, the harmful side, so three frames (0.1 s at 30 fps)
/// only guard against a single bright frame (a flash, a reflection).
pub const DEFAULT_RAIN_ENTER: u32 = 3;
/// Frames a dry score must persist before the element calls it dry. Large: leaving rain late
/// only costs the network on a few dry frames (the model is made to leave them almost untouched),
/// while leaving early lets a lull between showers pass rain through; 30 frames is one second at
/// 30 fps.
pub const DEFAULT_RAIN_LEAVE: u32 = 30;
/// Score every frame by default: the score costs a few percent of the network.
pub const DEFAULT_SCORE_INTERVAL: u32 = 1;

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
/// [`Binned::from_chw`] would give from the network's input tensor, without converting the
/// whole frame to floats. RGB formats give the same values exactly; YUV formats are decoded with
/// the frame's matrix and range (the same formulas as the tensor conversion, to float rounding).
pub fn binned_from_planes(layout: &FrameLayout, planes: &[&[u8]]) -> Option<Binned> {
    let (w, h) = (layout.width, layout.height);
    layout.check_planes(planes).ok()?;
    let s = layout.strides;
    let binned = match layout.format {
        PixelFormat::I420 | PixelFormat::Nv12 => {
            let t = YuvTables::new(layout);
            let y = planes[0];
            if layout.format == PixelFormat::I420 {
                let (u, v) = (planes[1], planes[2]);
                Binned::from_fn(w, h, |x, r| {
                    let c = (r / 2, x / 2);
                    t.rgb(y[r * s[0] + x], u[c.0 * s[1] + c.1], v[c.0 * s[2] + c.1])
                })
            } else {
                let uv = planes[1];
                Binned::from_fn(w, h, |x, r| {
                    let i = r / 2 * s[1] + 2 * (x / 2);
                    t.rgb(y[r * s[0] + x], uv[i], uv[i + 1])
                })
            }
        }
        format => {
            let bpp = format.bytes_per_pixel()?;
            let [ro, go, bo] = format.rgb_offsets()?;
            let p = planes[0];
            Binned::from_fn(w, h, |x, r| {
                let i = r * s[0] + x * bpp;
                [
                    f32::from(p[i + ro]) / 255.0,
                    f32::from(p[i + go]) / 255.0,
                    f32::from(p[i + bo]) / 255.0,
                ]
            })
        }
    };
    Some(binned)
}

/// YUV bytes → RGB contributions, per byte value.
struct YuvTables {
    y: [f32; 256],
    rv: [f32; 256],
    gu: [f32; 256],
    gv: [f32; 256],
    bu: [f32; 256],
}

impl YuvTables {
    fn new(layout: &FrameLayout) -> Self {
        let c = layout.colorimetry;
        let (kr, kb) = c.matrix.kr_kb();
        let kg = 1.0 - kr - kb;
        let (y_off, y_scale, c_scale) = if c.full_range {
            (0.0, 255.0, 255.0)
        } else {
            (16.0, 219.0, 224.0)
        };
        let chroma = |i: usize| (i as f64 - 128.0) / c_scale;
        let table = |k: f64| std::array::from_fn(|i| (k * chroma(i)) as f32);
        Self {
            y: std::array::from_fn(|i| ((i as f64 - y_off) / y_scale) as f32),
            rv: table(2.0 * (1.0 - kr)),
            gu: table(2.0 * kb * (1.0 - kb) / kg),
            gv: table(2.0 * kr * (1.0 - kr) / kg),
            bu: table(2.0 * (1.0 - kb)),
        }
    }

    #[inline(always)]
    fn rgb(&self, y: u8, u: u8, v: u8) -> [f32; 3] {
        let (y, u, v) = (self.y[usize::from(y)], usize::from(u), usize::from(v));
        [
            (y + self.rv[v]).clamp(0.0, 1.0),
            (y - self.gu[u] - self.gv[v]).clamp(0.0, 1.0),
            (y + self.bu[u]).clamp(0.0, 1.0),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use derain::frame::{self, YuvColorimetry, YuvMatrix};

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
            let tolerance = if format.is_yuv() { 1e-5 } else { 0.0 };
            assert!(worst <= tolerance, "{format}: off by {worst}");
        }
    }

    #[test]
    fn short_planes_give_no_score() {
        let (layout, planes) = planes_of(PixelFormat::Rgb, 16, 16);
        assert!(binned_from_planes(&layout, &[&planes[0][..10]]).is_none());
    }
}
