//! The rain field renderer: deterministic, moving streak drops and a depth-like veil.
//!
//! # Why streaks are drawn directly
//!
//! The Rain14000 recipe of docs/ARCHITECTURE.md, Rain synthesis (sparse noise → blur → threshold
//! → motion-blur line kernel → screen blend) convolves the whole frame with a line kernel of
//! length L for every layer: about `W·H·L` operations, i.e. tens of millions per 1280x720 layer, far over the 50 ms frame budget.
//! Its output is a set of thin blurred line segments of random position, length and brightness.
//! We draw exactly those segments: each drop is an anti-aliased line segment with a Gaussian
//! cross-section (the blurred noise dot) and tapered ends (a dot of varying size smeared along the
//! motion), accumulated with the screen blend. Cost is proportional to the rain's pixel footprint
//! (a few hundred thousand pixel updates per heavy 720p frame), not to the frame area times the
//! kernel length. Drawing drops as objects is also what makes video rain move: a drop has a
//! position that advances by its layer's speed each frame, which a noise field does not have.
//!
//! # Determinism and motion
//!
//! Every random value comes from a stateless hash of `(seed, layer, drop, cycle)`, not from a
//! sequential generator, so any frame can be rendered alone, in any order, on any thread, and
//! always gives the same field. Each drop travels down a wrapping vertical domain a little taller
//! than the frame; each time it wraps (a new "cycle") it respawns at the top with a fresh
//! horizontal position, length, width and brightness, so the rain never repeats.

use std::sync::{Mutex, TryLockError};

use crate::imageio::RgbImage;
use crate::seed::mix;

use super::drops::{self, WindshieldDrop};
use super::scatter::MAX_BETA;
use super::{
    CameraMotion, RainParams, Refraction, Scattering, StreakLayer, SynthError, Veil,
    WindshieldDrops,
};

/// Upper bounds that keep a hostile or mistaken parameter set from taking unbounded memory or
/// time: 100 drops per 1000 px is already a white-out.
pub(crate) const MAX_DENSITY: f32 = 100.0;
pub(crate) const MAX_LENGTH: f32 = 2048.0;
pub(crate) const MAX_WIDTH: f32 = 64.0;
pub(crate) const MAX_BLUR: f32 = 32.0;
pub(crate) const MAX_ANGLE_DEG: f32 = 60.0;
pub(crate) const MAX_SPEED: f32 = 1.0e5;
/// Radial flow beyond 10 fall lengths per half-diagonal only makes longer lines.
pub(crate) const MAX_FLOW: f32 = 10.0;
/// Per-drop angle variation (fixed for the drop's life): real rain within one depth is nearly,
/// but not exactly, parallel.
const ANGLE_JITTER_DEG: f32 = 1.5;
/// Per-drop (per-cycle) multipliers of the layer's mean length, brightness and width.
const LENGTH_MULT: (f32, f32) = (0.55, 1.25);
const BRIGHTNESS_MULT: (f32, f32) = (0.45, 1.0);
const WIDTH_MULT: (f32, f32) = (0.8, 1.25);
/// Narrowest cross-section sigma in pixels. Below about half a pixel a Gaussian sampled at pixel
/// centres aliases into a beaded, stair-stepped line; thinner streaks are drawn at this sigma with
/// a proportionally lower peak, which keeps their total light (what a camera pixel integrates).
const MIN_SIGMA: f32 = 0.5;
/// The cross-section is cut off at this many sigmas (and rescaled to reach exactly 0 there).
const CUTOFF_SIGMAS: f32 = 3.0;
/// Full width at half maximum of a Gaussian, in sigmas.
const FWHM_PER_SIGMA: f32 = 2.354_82;
/// Entries of the cross-section lookup table (exp is the hot spot of the inner loop otherwise).
const LUT_LEN: usize = 1024;
/// The table covers q = v²/(2σ²) in [0, Q_MAX).
const Q_MAX: f32 = CUTOFF_SIGMAS * CUTOFF_SIGMAS / 2.0;

/// Salts so that the per-drop hashes of a seed are unrelated to the preset draw of the same seed.
const LAYER_SALT: u64 = 0x5354_5245_414b_4c59; // "STREAKLY"
const STATIC_SALT: u64 = 0x0d70_5354_4154_4943;
const CYCLE_SALT: u64 = 0x4359_434c_4553_414c;
const RADIAL_SALT: u64 = 0x5241_4449_414c_5354; // "RADIALST"

/// The rain field of one frame: what is composited onto the clean frame.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RainLayer {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// `S`: streak intensity in [0, 1], one f32 per pixel, row-major (`y * width + x`).
    pub streaks: Vec<f32>,
    /// `A`: veil opacity in [0, 1], one f32 per pixel, row-major. All zero without a veil.
    pub veil: Vec<f32>,
}

/// Drop properties fixed for the drop's whole life (across cycles), so that its motion is a
/// straight line at its layer's speed.
#[derive(Debug, Clone, Copy)]
struct DropPath {
    /// Starting offset along the vertical domain, in [0, domain_h).
    phase: f64,
    /// Vertical speed in pixels per frame (the layer speed times cos of the drop's angle).
    vy: f64,
    sin: f32,
    cos: f32,
    tan: f32,
}

/// A layer prepared for one frame size.
#[derive(Debug, Clone)]
struct LayerPlan {
    layer: StreakLayer,
    seed: u64,
    drops: Vec<DropPath>,
    /// Height of the wrapping domain the drop heads travel through.
    domain_h: f64,
    /// Head y at the start of a cycle (above the frame, so respawns are never seen to pop in).
    head_y0: f32,
    /// Horizontal range of the head at the start of a cycle.
    x_lo: f32,
    domain_w: f32,
}

/// One streak to draw.
struct Streak {
    /// Head (lowest end, where the drop is now).
    xh: f32,
    yh: f32,
    sin: f32,
    cos: f32,
    tan: f32,
    len: f32,
    sigma: f32,
    peak: f32,
}

/// Renders the rain of a [`RainParams`] and seed for frames of one size. Cheap to query for any
/// frame number; `Sync`, so one renderer can serve several threads.
pub struct RainRenderer {
    params: RainParams,
    seed: u64,
    width: u32,
    height: u32,
    plans: Vec<LayerPlan>,
    /// Veil opacity per row (the depth gradient is vertical, so one value per row suffices).
    veil_rows: Vec<f32>,
    /// Normalised Gaussian cross-section against q = v²/(2σ²).
    gauss: Vec<f32>,
    /// The driving effects, clamped into range.
    scattering: Option<Scattering>,
    motion: Option<CameraMotion>,
    refraction: Option<Refraction>,
    drops: Option<WindshieldDrops>,
    /// Streak buffer reused across `render` calls; a caller that finds it busy (another thread
    /// rendering) allocates its own rather than waiting.
    scratch: Mutex<Vec<f32>>,
}

impl std::fmt::Debug for RainRenderer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RainRenderer")
            .field("params", &self.params)
            .field("seed", &self.seed)
            .field("width", &self.width)
            .field("height", &self.height)
            .field(
                "drops",
                &self.plans.iter().map(|p| p.drops.len()).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Clone for RainRenderer {
    fn clone(&self) -> Self {
        Self {
            params: self.params.clone(),
            seed: self.seed,
            width: self.width,
            height: self.height,
            plans: self.plans.clone(),
            veil_rows: self.veil_rows.clone(),
            gauss: self.gauss.clone(),
            scattering: self.scattering.clone(),
            motion: self.motion.clone(),
            refraction: self.refraction.clone(),
            drops: self.drops.clone(),
            scratch: Mutex::new(Vec::new()),
        }
    }
}

impl RainRenderer {
    /// Prepares the rain of `params` and `seed` for `width`x`height` frames. Out-of-range or
    /// non-finite parameter values are clamped (NaN counts as 0): see [`StreakLayer`] for ranges,
    /// and [`RainRenderer::checked`] to refuse them instead.
    pub fn new(params: RainParams, seed: u64, width: u32, height: u32) -> Self {
        let plans = params
            .layers
            .iter()
            .enumerate()
            .map(|(i, layer)| {
                let layer_seed = mix(seed ^ mix(i as u64 ^ LAYER_SALT));
                plan_layer(sanitize(layer), layer_seed, width, height)
            })
            .collect();
        let veil_rows = veil_rows(params.veil.as_ref(), height);
        let cut = (-Q_MAX).exp();
        let gauss = (0..LUT_LEN)
            .map(|i| {
                // Sample the middle of each bin so the nearest-entry lookup is unbiased.
                let q = (i as f32 + 0.5) * Q_MAX / LUT_LEN as f32;
                ((-q).exp() - cut) / (1.0 - cut)
            })
            .collect();
        let scattering = params.scattering.as_ref().map(sanitize_scattering);
        let motion = params.motion.as_ref().map(|m| CameraMotion {
            vanishing_point: m.vanishing_point.map(|v| finite_clamp(v, 0.0, 1.0)),
            flow: finite_clamp(m.flow, 0.0, MAX_FLOW),
        });
        let refraction = params.refraction.as_ref().map(|r| Refraction {
            strength: finite_clamp(r.strength, 0.0, 1.0),
            gain: finite_clamp(r.gain, 0.0, 4.0),
        });
        let drops = params.drops.as_ref().map(drops::sanitize);
        Self {
            params,
            seed,
            width,
            height,
            plans,
            veil_rows,
            gauss,
            scattering,
            motion,
            refraction,
            drops,
            scratch: Mutex::new(Vec::new()),
        }
    }

    /// As [`RainRenderer::new`], but a parameter out of its range is an error naming it
    /// ([`RainParams::validate`]).
    pub fn checked(
        params: RainParams,
        seed: u64,
        width: u32,
        height: u32,
    ) -> Result<Self, SynthError> {
        params.validate()?;
        Ok(Self::new(params, seed, width, height))
    }

    /// The windshield drops of frame `frame` (none for a dry windshield). Drops keep their
    /// place from frame to frame; with a `lifetime`, about `1/lifetime` of them move each frame.
    pub fn windshield_drops(&self, frame: u64) -> Vec<WindshieldDrop> {
        match &self.drops {
            Some(d) => drops::drops_at(d, self.seed, frame, self.width, self.height),
            None => Vec::new(),
        }
    }

    /// Whether compositing needs the frame-dependent path (any driving effect but motion,
    /// which only changes the streak field).
    fn frame_effects(&self) -> bool {
        self.scattering.is_some() || self.refraction.is_some() || self.drops.is_some()
    }

    /// The parameters this renderer was built with (as given, before clamping).
    pub fn params(&self) -> &RainParams {
        &self.params
    }

    /// The seed this renderer was built with.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Frame width in pixels.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Frame height in pixels.
    pub fn height(&self) -> u32 {
        self.height
    }

    fn n_pixels(&self) -> usize {
        self.width as usize * self.height as usize
    }

    /// The rain field (`S` and `A`) of frame `frame`. The same renderer inputs and frame always
    /// give the same field; frame `t + 1` is frame `t` with every drop moved by its layer's speed
    /// along its streak (drops leaving the bottom respawn, deterministically, above the top).
    /// With [`CameraMotion`] the streaks are radial and drawn afresh each frame (from a moving
    /// car a streak crosses the frame within a frame or two). The effects that depend on the
    /// frame (atmospheric veil, refraction, windshield drops) are not part of this field.
    pub fn rain_layer(&self, frame: u64) -> RainLayer {
        let mut layer = RainLayer::default();
        self.rain_layer_into(frame, &mut layer);
        layer
    }

    /// [`rain_layer`](Self::rain_layer) into an existing [`RainLayer`], reusing its buffers.
    pub fn rain_layer_into(&self, frame: u64, out: &mut RainLayer) {
        out.width = self.width;
        out.height = self.height;
        self.fill_streaks(frame, &mut out.streaks);
        out.veil.clear();
        let w = self.width as usize;
        for &a in &self.veil_rows {
            out.veil.extend(std::iter::repeat_n(a, w));
        }
    }

    /// Composites frame `frame` of the rain onto `clean`: `O = B(1 − S − A) + S + A`, clamped to
    /// [0, 1], per 8-bit channel. Fails when `clean` is not the renderer's size.
    pub fn render(&self, clean: &RgbImage, frame: u64) -> Result<RgbImage, SynthError> {
        self.check_size(clean.width(), clean.height())?;
        let mut out = RgbImage::new(self.width, self.height);
        let to_f32: [f32; 256] = std::array::from_fn(|i| i as f32 / 255.0);
        if self.frame_effects() {
            let src: Vec<f32> = clean
                .as_raw()
                .iter()
                .map(|&b| to_f32[usize::from(b)])
                .collect();
            let mut dst = vec![0.0f32; src.len()];
            self.with_streaks(frame, |s| self.composite_effects(&src, &mut dst, s, frame));
            for (o, v) in out.iter_mut().zip(&dst) {
                *o = (v * 255.0 + 0.5) as u8;
            }
            return Ok(out);
        }
        self.with_streaks(frame, |s| {
            self.composite(
                clean.as_raw(),
                out.as_mut(),
                s,
                |b| to_f32[usize::from(b)],
                |o| {
                    // o is already clamped to [0, 1]; +0.5 rounds to nearest.
                    (o * 255.0 + 0.5) as u8
                },
            );
        });
        Ok(out)
    }

    /// [`render`](Self::render) on float frames, for the trainer: `clean_rgb` and `out` are
    /// height x width x 3 (HWC) in [0, 1]. No 8-bit round trip.
    pub fn render_f32(
        &self,
        clean_rgb: &[f32],
        frame: u64,
        out: &mut [f32],
    ) -> Result<(), SynthError> {
        let expected = self.n_pixels() * 3;
        for (what, got) in [("clean_rgb", clean_rgb.len()), ("out", out.len())] {
            if got != expected {
                return Err(SynthError::BufferLength {
                    what,
                    expected,
                    got,
                });
            }
        }
        if self.frame_effects() {
            self.with_streaks(frame, |s| self.composite_effects(clean_rgb, out, s, frame));
        } else {
            self.with_streaks(frame, |s| self.composite(clean_rgb, out, s, |b| b, |o| o));
        }
        Ok(())
    }

    /// Renders when the caller already knows the sizes match (a renderer made for `clean`).
    pub(crate) fn render_same_size(&self, clean: &RgbImage, frame: u64) -> RgbImage {
        // A mismatch cannot happen for the callers of this function; falling back to the clean
        // frame keeps the library free of panics anyway.
        self.render(clean, frame).unwrap_or_else(|_| clean.clone())
    }

    fn check_size(&self, got_width: u32, got_height: u32) -> Result<(), SynthError> {
        if (got_width, got_height) == (self.width, self.height) {
            Ok(())
        } else {
            Err(SynthError::SizeMismatch {
                width: self.width,
                height: self.height,
                got_width,
                got_height,
            })
        }
    }

    /// The per-pixel blend, generic over 8-bit and float pixels. Iterates with zips, so buffers
    /// of unexpected length cannot cause a panic (callers check lengths beforehand).
    fn composite<T: Copy, U>(
        &self,
        clean: &[T],
        out: &mut [U],
        streaks: &[f32],
        load: impl Fn(T) -> f32,
        store: impl Fn(f32) -> U,
    ) {
        let w = self.width as usize;
        if w == 0 {
            return;
        }
        let rows = clean
            .chunks_exact(3 * w)
            .zip(out.chunks_exact_mut(3 * w))
            .zip(streaks.chunks_exact(w))
            .zip(&self.veil_rows);
        for (((src, dst), s_row), &a) in rows {
            for ((b, o), &s) in src.chunks_exact(3).zip(dst.chunks_exact_mut(3)).zip(s_row) {
                let keep = 1.0 - s - a;
                let add = s + a;
                for (bc, oc) in b.iter().zip(o.iter_mut()) {
                    *oc = store((load(*bc) * keep + add).clamp(0.0, 1.0));
                }
            }
        }
    }

    /// The driving-camera compositing over float HWC frames, in the order light reaches the
    /// camera: atmospheric veil over the scene, streaks (screen blend, or towards the
    /// environment radiance with [`Refraction`]), the gradient veil, then the windshield drops
    /// refracting all of that. Lengths were checked by the callers.
    fn composite_effects(&self, clean: &[f32], out: &mut [f32], streaks: &[f32], frame: u64) {
        let (w, h) = (self.width as usize, self.height as usize);
        for (o, &c) in out.iter_mut().zip(clean) {
            *o = c.clamp(0.0, 1.0);
        }
        if let Some(sc) = &self.scattering {
            sc.apply(out, w, h);
        }
        // Refraction: the streak takes the environment's radiance, about the sky's (the top
        // third of a dashcam frame), so it shows over a dark road and vanishes over the sky.
        let env = self.refraction.as_ref().map(|r| {
            let rows = (h / 3).max(1).min(h);
            let mut sum = [0.0f64; 3];
            for px in out[..rows * w * 3].chunks_exact(3) {
                for (s, &v) in sum.iter_mut().zip(px) {
                    *s += f64::from(v);
                }
            }
            let n = (rows * w).max(1) as f64;
            let e = sum.map(|s| ((s / n) as f32 * r.gain).clamp(0.0, 1.0));
            (r.strength, e)
        });
        if w > 0 {
            let rows = out
                .chunks_exact_mut(3 * w)
                .zip(streaks.chunks_exact(w))
                .zip(&self.veil_rows);
            for ((row, s_row), &a) in rows {
                for (px, &s) in row.chunks_exact_mut(3).zip(s_row) {
                    if s == 0.0 && a == 0.0 {
                        continue;
                    }
                    for (c, p) in px.iter_mut().enumerate() {
                        let b = *p;
                        let screen = b + s * (1.0 - b);
                        let lit = match &env {
                            Some((k, e)) => (1.0 - k) * screen + k * (b * (1.0 - s) + e[c] * s),
                            None => screen,
                        };
                        *p = (lit * (1.0 - a) + a).clamp(0.0, 1.0);
                    }
                }
            }
        }
        if let Some(d) = &self.drops {
            let list = drops::drops_at(d, self.seed, frame, self.width, self.height);
            drops::apply(d, &list, out, w, h);
        }
    }

    /// Runs `f` on the streak field of `frame`, in the shared scratch buffer when it is free.
    fn with_streaks<R>(&self, frame: u64, f: impl FnOnce(&[f32]) -> R) -> R {
        let mut guard = match self.scratch.try_lock() {
            Ok(g) => Some(g),
            // The buffer is fully rewritten before use, so a panic elsewhere cannot leave it in
            // a state that matters.
            Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        };
        let mut own = Vec::new();
        let buf = match guard.as_deref_mut() {
            Some(b) => b,
            None => &mut own,
        };
        self.fill_streaks(frame, buf);
        f(buf)
    }

    /// Writes the screen-accumulated streak intensity `S` of `frame` into `buf` (resized to the
    /// frame, reusing its allocation).
    fn fill_streaks(&self, frame: u64, buf: &mut Vec<f32>) {
        buf.clear();
        buf.resize(self.n_pixels(), 0.0);
        let (w, h) = (self.width as usize, self.height as usize);
        if w == 0 || h == 0 {
            return;
        }
        if let Some(m) = &self.motion {
            for plan in &self.plans {
                self.fill_radial(plan, m, frame, buf);
            }
            return;
        }
        let t = frame as f64;
        for plan in &self.plans {
            let layer = &plan.layer;
            let blur2 = layer.blur * layer.blur;
            for (i, d) in plan.drops.iter().enumerate() {
                let travelled = d.phase + t * d.vy;
                let cycle = (travelled / plan.domain_h).floor();
                let rem = (travelled - cycle * plan.domain_h) as f32;
                // Everything that may change when the drop respawns.
                let mut r = HashRng::new(plan.seed, i as u64, cycle as i64);
                let x0 = plan.x_lo + r.unit() * plan.domain_w;
                let len = layer.length * r.range(LENGTH_MULT);
                let sigma_w = layer.width * r.range(WIDTH_MULT) / FWHM_PER_SIGMA;
                let brightness = layer.brightness * r.range(BRIGHTNESS_MULT);
                let sigma = (sigma_w * sigma_w + blur2).sqrt().max(MIN_SIGMA);
                let streak = Streak {
                    xh: x0 + rem * d.tan,
                    yh: plan.head_y0 + rem,
                    sin: d.sin,
                    cos: d.cos,
                    tan: d.tan,
                    len,
                    sigma,
                    // Defocus and the anti-aliasing floor spread the same light over a wider
                    // cross-section, so the peak falls by sigma_w / sigma.
                    peak: brightness * (sigma_w / sigma).min(1.0),
                };
                splat(buf, w, h, &self.gauss, &streak);
            }
        }
    }
}

impl RainRenderer {
    /// Radial streaks of one layer for frame `frame`: each drop, uniformly placed, streaks along
    /// `L·(fall + flow·(p − vp)/R)` (its fall, tilted by the wind, plus the expanding flow away
    /// from the vanishing point, which grows with the distance from it), centred on the drop.
    fn fill_radial(&self, plan: &LayerPlan, m: &CameraMotion, frame: u64, buf: &mut [f32]) {
        let (w, h) = (self.width as usize, self.height as usize);
        let (wf, hf) = (w as f32, h as f32);
        let layer = &plan.layer;
        let (vx, vy) = (m.vanishing_point[0] * wf, m.vanishing_point[1] * hf);
        let inv_r = 2.0 / (wf * wf + hf * hf).sqrt();
        let len_max = layer.length * LENGTH_MULT.1;
        // Streaks reaching in from outside: margin of half the longest streak near the edges.
        let margin = (0.5 * len_max * (1.0 + m.flow * 1.5)).min(wf.max(hf));
        let (dw, dh) = (wf + 2.0 * margin, hf + 2.0 * margin);
        let n =
            (f64::from(layer.density) / 1000.0 * f64::from(dw) * f64::from(dh)).round() as usize;
        let blur2 = layer.blur * layer.blur;
        let seed = plan.seed ^ RADIAL_SALT;
        for i in 0..n {
            let mut r = HashRng::new(seed, i as u64, frame as i64);
            let px = -margin + r.unit() * dw;
            let py = -margin + r.unit() * dh;
            let len = layer.length * r.range(LENGTH_MULT);
            let sigma_w = layer.width * r.range(WIDTH_MULT) / FWHM_PER_SIGMA;
            let brightness = layer.brightness * r.range(BRIGHTNESS_MULT);
            let angle =
                (layer.angle_deg + r.range((-ANGLE_JITTER_DEG, ANGLE_JITTER_DEG))).to_radians();
            let (sin, cos) = angle.sin_cos();
            let vxs = len * (sin + m.flow * (px - vx) * inv_r);
            let vys = len * (cos + m.flow * (py - vy) * inv_r);
            let l = (vxs * vxs + vys * vys).sqrt();
            if l.is_nan() || l < 0.5 {
                continue;
            }
            let scale = l.min(MAX_LENGTH) / l;
            let (hx, hy) = (0.5 * vxs * scale, 0.5 * vys * scale);
            let sigma = (sigma_w * sigma_w + blur2).sqrt().max(MIN_SIGMA);
            let peak = brightness * (sigma_w / sigma).min(1.0);
            splat_segment(
                buf,
                w,
                h,
                &self.gauss,
                (px - hx, py - hy),
                (px + hx, py + hy),
                sigma,
                peak,
            );
        }
    }
}

/// Calls `f(pixel index, along, across)` for every pixel within `reach` of the line through
/// `from` → `to` whose position along it lies in `[−ext, len + ext]` (`along` from `from`,
/// `across` signed, both in pixels). Any direction, any length; clipped to the frame.
pub(super) fn for_each_near_segment(
    from: (f32, f32),
    to: (f32, f32),
    reach: f32,
    ext: f32,
    w: usize,
    h: usize,
    mut f: impl FnMut(usize, f32, f32),
) {
    if w == 0 || h == 0 || reach.is_nan() || reach <= 0.0 {
        return;
    }
    let (dx, dy) = (to.0 - from.0, to.1 - from.1);
    let len = (dx * dx + dy * dy).sqrt();
    if !len.is_finite() || !from.0.is_finite() || !from.1.is_finite() {
        return;
    }
    let (ux, uy) = if len > 1e-6 {
        (dx / len, dy / len)
    } else {
        (0.0, 1.0)
    };
    let pad = reach + ext;
    let y_top = (from.1.min(to.1) - pad).ceil().max(0.0);
    let y_bot = (from.1.max(to.1) + pad).floor().min(h as f32 - 1.0);
    if y_top > y_bot {
        return;
    }
    // a·x + b ∈ [lo, hi] as an interval of x (None: no x).
    let solve = |a: f32, b: f32, lo: f32, hi: f32| -> Option<(f32, f32)> {
        if a.abs() < 1e-6 {
            (b >= lo && b <= hi).then_some((f32::NEG_INFINITY, f32::INFINITY))
        } else {
            let (p, q) = ((lo - b) / a, (hi - b) / a);
            Some((p.min(q), p.max(q)))
        }
    };
    for y in y_top as usize..=y_bot as usize {
        let ry = y as f32 - from.1;
        // along(x) = (x − x₀)·ux + ry·uy; across(x) = −(x − x₀)·uy + ry·ux.
        let Some((a0, a1)) = solve(ux, ry * uy - from.0 * ux, -ext, len + ext) else {
            continue;
        };
        let Some((c0, c1)) = solve(-uy, ry * ux + from.0 * uy, -reach, reach) else {
            continue;
        };
        let xa = a0.max(c0).ceil().max(0.0);
        let xb = a1.min(c1).floor().min(w as f32 - 1.0);
        if xa.is_nan() || xb.is_nan() || xa > xb {
            continue;
        }
        for x in xa as usize..=xb as usize {
            let rx = x as f32 - from.0;
            f(y * w + x, rx * ux + ry * uy, -rx * uy + ry * ux);
        }
    }
}

/// Draws a streak of any direction from its tail to its head into `s` (screen blend), with the
/// same cross-section and taper as [`splat`].
#[allow(clippy::too_many_arguments)]
fn splat_segment(
    s: &mut [f32],
    w: usize,
    h: usize,
    gauss: &[f32],
    tail: (f32, f32),
    head: (f32, f32),
    sigma: f32,
    peak: f32,
) {
    let len = ((head.0 - tail.0).powi(2) + (head.1 - tail.1).powi(2)).sqrt();
    if len < 0.5 || peak <= 0.0 || sigma <= 0.0 {
        return;
    }
    let q_scale = LUT_LEN as f32 / Q_MAX / (2.0 * sigma * sigma);
    let inv_half_len = 2.0 / len;
    for_each_near_segment(
        tail,
        head,
        CUTOFF_SIGMAS * sigma,
        0.0,
        w,
        h,
        |i, along, across| {
            if along <= 0.0 || along >= len {
                return;
            }
            let qi = (across * across * q_scale) as usize;
            let Some(&g) = gauss.get(qi) else { return };
            let u = along * inv_half_len - 1.0;
            let u2 = u * u;
            let v = peak * (1.0 - u2 * u2) * g;
            if let Some(px) = s.get_mut(i) {
                *px += v * (1.0 - *px);
            }
        },
    );
}

/// A value clamped into `[lo, hi]`; NaN becomes `lo`.
fn finite_clamp(v: f32, lo: f32, hi: f32) -> f32 {
    if v.is_nan() { lo } else { v.clamp(lo, hi) }
}

fn sanitize_scattering(s: &Scattering) -> Scattering {
    Scattering {
        beta: finite_clamp(s.beta, 0.0, MAX_BETA),
        airlight: s.airlight.map(|a| finite_clamp(a, 0.0, 1.0)),
        sky_match: finite_clamp(s.sky_match, 0.0, 1.0),
        vanishing_point: s.vanishing_point.map(|v| finite_clamp(v, 0.0, 1.0)),
        scene_weight: finite_clamp(s.scene_weight, 0.0, 1.0),
    }
}

/// Draws one streak into `s` with the screen blend `s ← s + v(1 − s)`.
fn splat(s: &mut [f32], w: usize, h: usize, gauss: &[f32], st: &Streak) {
    if st.len < 0.5 || st.peak <= 0.0 || st.sigma <= 0.0 {
        return;
    }
    let reach = CUTOFF_SIGMAS * st.sigma;
    // Rows from above the tail to below the head.
    let y_top = (st.yh - st.len * st.cos - reach).ceil().max(0.0);
    let y_bot = (st.yh + reach).floor().min(h as f32 - 1.0);
    // Quick horizontal reject before any per-row work.
    let x_tail = st.xh - st.len * st.sin;
    let half_row = reach / st.cos;
    if st.xh.max(x_tail) + half_row < 0.0
        || st.xh.min(x_tail) - half_row > w as f32 - 1.0
        || y_top > y_bot
    {
        return;
    }
    let q_scale = LUT_LEN as f32 / Q_MAX / (2.0 * st.sigma * st.sigma);
    let inv_half_len = 2.0 / st.len;
    // Both ends are within 0..h and y_top <= y_bot, so the casts are in range.
    for y in y_top as usize..=y_bot as usize {
        let dy = y as f32 - st.yh;
        // Where the streak's centre line crosses this row; only pixels within `half_row` of it
        // are within the cutoff distance of the line.
        let xc = st.xh + dy * st.tan;
        let xa = (xc - half_row).ceil().max(0.0);
        let xb = (xc + half_row).floor().min(w as f32 - 1.0);
        if xa > xb {
            continue;
        }
        let row = &mut s[y * w..(y + 1) * w];
        for (x, px) in row[xa as usize..=xb as usize]
            .iter_mut()
            .enumerate()
            .map(|(k, p)| (xa + k as f32, p))
        {
            let dx = x - st.xh;
            // Distance back from the head toward the tail, and distance across the line.
            let along = -(dx * st.sin + dy * st.cos);
            if along <= 0.0 || along >= st.len {
                continue;
            }
            let across = dx * st.cos - dy * st.sin;
            let qi = (across * across * q_scale) as usize;
            let Some(&g) = gauss.get(qi) else { continue };
            // Taper 1 − u⁴ over u ∈ [−1, 1]: flat along most of the streak, fading to nothing at
            // both ends like a motion-smeared drop.
            let u = along * inv_half_len - 1.0;
            let u2 = u * u;
            let v = st.peak * (1.0 - u2 * u2) * g;
            *px += v * (1.0 - *px);
        }
    }
}

/// Clamps a layer's values into their documented ranges; NaN becomes 0.
fn sanitize(l: &StreakLayer) -> StreakLayer {
    let c = |v: f32, lo: f32, hi: f32| if v.is_nan() { 0.0 } else { v.clamp(lo, hi) };
    StreakLayer {
        density: c(l.density, 0.0, MAX_DENSITY),
        length: c(l.length, 0.0, MAX_LENGTH),
        angle_deg: c(l.angle_deg, -MAX_ANGLE_DEG, MAX_ANGLE_DEG),
        width: c(l.width, 0.0, MAX_WIDTH),
        brightness: c(l.brightness, 0.0, 1.0),
        blur: c(l.blur, 0.0, MAX_BLUR),
        speed: c(l.speed, -MAX_SPEED, MAX_SPEED),
    }
}

/// Sizes a layer's wrapping domain for the frame and draws its drops' fixed paths.
fn plan_layer(layer: StreakLayer, seed: u64, width: u32, height: u32) -> LayerPlan {
    let (w, h) = (width as f32, height as f32);
    let sigma_w_max = layer.width * WIDTH_MULT.1 / FWHM_PER_SIGMA;
    let sigma_max = (sigma_w_max * sigma_w_max + layer.blur * layer.blur)
        .sqrt()
        .max(MIN_SIGMA);
    let reach = CUTOFF_SIGMAS * sigma_max + 1.0;
    let len_max = layer.length * LENGTH_MULT.1;
    // The head runs from just above the top (streak entirely hidden) to one streak length plus
    // the cutoff below the bottom (tail just gone), so drops appear and vanish off-screen.
    let domain_h = h + len_max + 2.0 * reach;
    let head_y0 = -reach;
    let rad = |deg: f32| deg.to_radians();
    let tan_hi = rad(layer.angle_deg + ANGLE_JITTER_DEG).tan();
    let tan_lo = rad(layer.angle_deg - ANGLE_JITTER_DEG).tan();
    let sin_max = rad(layer.angle_deg.abs() + ANGLE_JITTER_DEG).sin();
    let cos_min = rad(layer.angle_deg.abs() + ANGLE_JITTER_DEG).cos();
    // Slanted drops drift sideways by up to domain_h·tan during a cycle: start the heads far
    // enough left (or right) that every column of the frame sees the same drop density.
    let margin = len_max * sin_max + reach / cos_min + 1.0;
    let x_lo = -margin - (domain_h * tan_hi).max(0.0);
    let x_hi = w + margin - (domain_h * tan_lo).min(0.0);
    let domain_w = x_hi - x_lo;
    let n = if width == 0 || height == 0 {
        0
    } else {
        (f64::from(layer.density) / 1000.0 * f64::from(domain_w) * f64::from(domain_h)).round()
            as usize
    };
    let drops = (0..n)
        .map(|i| {
            let mut r = HashRng::new(seed ^ STATIC_SALT, i as u64, 0);
            let phase = f64::from(r.unit()) * f64::from(domain_h);
            let angle = rad(layer.angle_deg + r.range((-ANGLE_JITTER_DEG, ANGLE_JITTER_DEG)));
            let (sin, cos) = angle.sin_cos();
            DropPath {
                phase,
                vy: f64::from(layer.speed) * f64::from(cos),
                sin,
                cos,
                tan: sin / cos,
            }
        })
        .collect();
    LayerPlan {
        layer,
        seed,
        drops,
        domain_h: f64::from(domain_h),
        head_y0,
        x_lo,
        domain_w,
    }
}

/// Veil opacity per row: `atmosphere · (1 − exp(−β·d))` with pseudo-depth `d` falling linearly
/// from 1 at the top row (sky, far) to 0 at the bottom (road just ahead): a dashcam's view.
fn veil_rows(veil: Option<&Veil>, height: u32) -> Vec<f32> {
    let h = height as f32;
    (0..height)
        .map(|y| match veil {
            Some(v) if v.beta.is_finite() && v.atmosphere.is_finite() => {
                let d = 1.0 - (y as f32 + 0.5) / h;
                let a = v.atmosphere.clamp(0.0, 1.0) * (1.0 - (-v.beta.max(0.0) * d).exp());
                a.clamp(0.0, 1.0)
            }
            _ => 0.0,
        })
        .collect()
}

/// A tiny counter-based generator keyed by (seed, drop, cycle): random access into the stream of
/// any drop in any cycle without replaying the ones before it (which a ChaCha stream would need).
pub(super) struct HashRng(u64);

impl HashRng {
    pub(super) fn new(seed: u64, drop: u64, cycle: i64) -> Self {
        Self(mix(
            seed ^ mix(drop ^ mix(cycle as u64 ^ CYCLE_SALT).rotate_left(17))
        ))
    }

    /// Uniform in [0, 1).
    pub(super) fn unit(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        (mix(self.0) >> 40) as f32 * (1.0 / (1u64 << 24) as f32)
    }

    /// Uniform in [lo, hi).
    pub(super) fn range(&mut self, (lo, hi): (f32, f32)) -> f32 {
        lo + (hi - lo) * self.unit()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_layer(speed: f32, angle_deg: f32) -> RainParams {
        RainParams {
            layers: vec![StreakLayer {
                density: 2.0,
                length: 20.0,
                angle_deg,
                width: 1.2,
                brightness: 0.6,
                blur: 0.0,
                speed,
            }],
            ..RainParams::default()
        }
    }

    #[test]
    fn streak_field_is_in_range_and_not_empty() {
        let r = RainRenderer::new(super::super::Preset::Heavy.params(1), 1, 200, 120);
        let l = r.rain_layer(3);
        assert_eq!(l.streaks.len(), 200 * 120);
        assert_eq!(l.veil.len(), 200 * 120);
        assert!(l.streaks.iter().all(|v| (0.0..=1.0).contains(v)));
        assert!(l.veil.iter().all(|v| (0.0..=1.0).contains(v)));
        let lit = l.streaks.iter().filter(|&&v| v > 0.05).count();
        assert!(lit > 200 && lit < 200 * 120 / 2, "{lit} lit pixels");
    }

    #[test]
    fn frames_render_in_any_order() {
        let r = RainRenderer::new(one_layer(7.0, 10.0), 5, 64, 48);
        let later = r.rain_layer(1000);
        let early = r.rain_layer(2);
        assert_eq!(r.rain_layer(1000), later);
        assert_eq!(r.rain_layer(2), early);
        assert_ne!(early, later);
    }

    #[test]
    fn frozen_rain_with_zero_speed() {
        let r = RainRenderer::new(one_layer(0.0, 0.0), 5, 64, 48);
        assert_eq!(r.rain_layer(0), r.rain_layer(99));
    }

    #[test]
    fn density_is_uniform_across_columns_for_slanted_rain() {
        // With a strong slant, the left and right thirds must get similar amounts of rain (the
        // spawn domain is widened for the sideways drift).
        let r = RainRenderer::new(one_layer(5.0, 40.0), 9, 300, 200);
        let (mut left, mut right) = (0.0f64, 0.0f64);
        for f in 0..8 {
            let l = r.rain_layer(f * 13);
            for row in l.streaks.chunks_exact(300) {
                left += row[..100].iter().map(|&v| f64::from(v)).sum::<f64>();
                right += row[200..].iter().map(|&v| f64::from(v)).sum::<f64>();
            }
        }
        let ratio = left / right;
        assert!((0.8..1.25).contains(&ratio), "left/right = {ratio}");
    }

    #[test]
    fn hostile_params_do_not_panic() {
        let params = RainParams {
            layers: vec![StreakLayer {
                density: f32::INFINITY,
                length: f32::NAN,
                angle_deg: 1e9,
                width: -3.0,
                brightness: 7.0,
                blur: f32::NAN,
                speed: f32::NEG_INFINITY,
            }],
            veil: Some(Veil {
                beta: f32::NAN,
                atmosphere: 2.0,
            }),
            scattering: Some(Scattering {
                beta: f32::INFINITY,
                airlight: [f32::NAN, -1.0, 9.0],
                sky_match: f32::NAN,
                vanishing_point: [-5.0, f32::NAN],
                scene_weight: 3.0,
            }),
            motion: Some(CameraMotion {
                vanishing_point: [f32::NAN, 2.0],
                flow: f32::INFINITY,
            }),
            refraction: Some(Refraction {
                strength: f32::NAN,
                gain: -1.0,
            }),
            drops: Some(WindshieldDrops {
                coverage: f32::INFINITY,
                radius: [f32::NAN, -4.0],
                field: 0.0,
                blur: f32::INFINITY,
                edge: f32::NAN,
                lifetime: u32::MAX,
            }),
        };
        assert!(params.validate().is_err());
        for (w, h) in [(0, 0), (1, 1), (0, 5), (17, 3)] {
            let r = RainRenderer::new(params.clone(), 0, w, h);
            let l = r.rain_layer(u64::MAX);
            assert_eq!(l.streaks.len(), (w * h) as usize);
            let img = RgbImage::new(w, h);
            assert_eq!(r.render(&img, 1).unwrap().dimensions(), (w, h));
        }
    }

    #[test]
    fn renderer_can_be_shared_between_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<RainRenderer>();
        let r = RainRenderer::new(one_layer(3.0, 5.0), 2, 50, 40);
        let img = RgbImage::new(50, 40);
        let alone = r.render(&img, 4).unwrap();
        // Concurrent renders (one of which finds the scratch buffer busy) agree.
        std::thread::scope(|s| {
            let hs: Vec<_> = (0..4)
                .map(|_| s.spawn(|| r.render(&img, 4).unwrap()))
                .collect();
            for h in hs {
                assert_eq!(h.join().unwrap(), alone);
            }
        });
        assert_eq!(r.clone().render(&img, 4).unwrap(), alone);
    }

    #[test]
    fn hash_rng_is_uniformish() {
        let mut r = HashRng::new(1, 2, 3);
        let xs: Vec<f32> = (0..10_000).map(|_| r.unit()).collect();
        assert!(xs.iter().all(|x| (0.0..1.0).contains(x)));
        let mean = xs.iter().sum::<f32>() / xs.len() as f32;
        assert!((mean - 0.5).abs() < 0.02, "{mean}");
    }
}
