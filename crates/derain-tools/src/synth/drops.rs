//! Windshield drops: where they are in each frame, and how they refract the scene.
//!
//! A drop on the glass is a small ball lens far out of the camera's focus (which is on the
//! road): it shows an inverted (flipped top-bottom and left-right), minified view of the scene
//! around it, blurred, inside a soft rim that total internal reflection darkens. We sample that
//! view from one half-resolution blurred copy of the frame behind the glass (built once per
//! frame, linear in the frame size), and draw each drop only inside its own small window, so the
//! cost follows the drops' area, not the frame's.
//!
//! Drops stay put: drop `i` keeps its place and shape for `lifetime` frames (its epochs are
//! staggered by a per-drop offset, so only about `1/lifetime` of the set changes per frame), and
//! with `lifetime` 0 for the whole clip.

use super::WindshieldDrops;
use super::render::HashRng;

/// Largest share of the frame the drops may cover.
pub(crate) const MAX_COVERAGE: f32 = 0.6;
/// Largest drop radius in pixels.
pub(crate) const MAX_RADIUS: f32 = 256.0;
/// Keeps a hostile parameter set from drawing millions of drops.
const MAX_DROPS: usize = 50_000;
const DROPS_SALT: u64 = 0x6472_6f70_7357_494e; // "dropsWIN"
/// The lens maps a point at relative radius ρ to `field·(1 + BARREL·ρ²)` times its offset, so the
/// view near the rim is squeezed as in a real drop.
const BARREL: f32 = 0.35;
/// How much the rim darkens (total internal reflection at the drop's edge).
const RIM_DARKEN: f32 = 0.35;

/// One drop of one frame, in pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WindshieldDrop {
    /// Centre.
    pub x: f32,
    pub y: f32,
    /// Horizontal and vertical radius.
    pub rx: f32,
    pub ry: f32,
}

/// Clamps a drop set into range; NaN counts as the lower bound.
pub(super) fn sanitize(d: &WindshieldDrops) -> WindshieldDrops {
    let c = |v: f32, lo: f32, hi: f32| if v.is_nan() { lo } else { v.clamp(lo, hi) };
    let r0 = c(d.radius[0], 0.5, MAX_RADIUS);
    WindshieldDrops {
        coverage: c(d.coverage, 0.0, MAX_COVERAGE),
        radius: [r0, c(d.radius[1], r0, MAX_RADIUS)],
        field: c(d.field, 1.0, 8.0),
        blur: c(d.blur, 0.0, 32.0),
        edge: c(d.edge, 0.0, 32.0),
        lifetime: d.lifetime,
    }
}

/// The drops of `frame` for a (sanitised) drop set over a `w`x`h` frame.
pub(super) fn drops_at(
    d: &WindshieldDrops,
    seed: u64,
    frame: u64,
    w: u32,
    h: u32,
) -> Vec<WindshieldDrop> {
    if w == 0 || h == 0 {
        return Vec::new();
    }
    let [r0, r1] = d.radius;
    // Radii are log-uniform on [r0, r1]: E[r²] = (r1² − r0²) / (2 ln(r1 / r0)).
    let mean_r2 = if r1 > r0 * 1.0001 {
        (r1 * r1 - r0 * r0) / (2.0 * (r1 / r0).ln())
    } else {
        r0 * r0
    };
    let area = f64::from(w) * f64::from(h);
    let n = (f64::from(d.coverage) * area / (std::f64::consts::PI * f64::from(mean_r2))).round();
    let n = (n as usize).min(MAX_DROPS);
    let seed = seed ^ DROPS_SALT;
    (0..n)
        .map(|i| {
            let epoch = if d.lifetime == 0 {
                0
            } else {
                let life = u64::from(d.lifetime);
                let offset = (HashRng::new(seed, i as u64, -1).unit() * life as f32) as u64;
                (frame.saturating_add(offset) / life) as i64
            };
            let mut r = HashRng::new(seed, i as u64, epoch);
            let x = r.unit() * w as f32;
            let y = r.unit() * h as f32;
            let radius = r0 * (r1 / r0).powf(r.unit());
            // Slightly oval, area kept: drops on a sloped windshield sag a little.
            let aspect = r.range((0.8, 1.25)).sqrt();
            WindshieldDrop {
                x,
                y,
                rx: radius / aspect,
                ry: radius * aspect,
            }
        })
        .collect()
}

/// A blurred copy of an HWC float frame at 1/k resolution.
struct Low {
    buf: Vec<f32>,
    lw: usize,
    lh: usize,
    k: usize,
}

impl Low {
    /// Downsamples by k (block means; k from the blur, at least 2) and box-blurs (two passes per
    /// axis) to a total Gaussian-like sigma of `sigma` full-resolution pixels.
    fn new(rgb: &[f32], w: usize, h: usize, sigma: f32) -> Self {
        let k = ((sigma / 1.2).round() as usize).clamp(2, 8);
        let (lw, lh) = (w.div_ceil(k), h.div_ceil(k));
        let mut buf = vec![0.0f32; lw * lh * 3];
        let mut count = vec![0u32; lw * lh];
        for (y, row) in rgb.chunks_exact(3 * w).take(h).enumerate() {
            let ly = y / k;
            for (x, px) in row.chunks_exact(3).enumerate() {
                let l = ly * lw + x / k;
                for (b, &v) in buf[l * 3..l * 3 + 3].iter_mut().zip(px) {
                    *b += v;
                }
                count[l] += 1;
            }
        }
        for (px, &n) in buf.chunks_exact_mut(3).zip(&count) {
            for v in px {
                *v /= n.max(1) as f32;
            }
        }
        // Block means already blur by about half a low-resolution pixel.
        let s_low = ((sigma / k as f32).powi(2) - 0.25).max(0.0).sqrt();
        // Two box passes of radius rb have variance 2·((2rb + 1)² − 1)/12.
        let rb = (((6.0 * s_low * s_low + 1.0).sqrt() - 1.0) / 2.0).round() as usize;
        if rb > 0 {
            for _ in 0..2 {
                box_pass(&mut buf, lw, lh, rb, true);
                box_pass(&mut buf, lw, lh, rb, false);
            }
        }
        Self { buf, lw, lh, k }
    }

    /// Bilinear sample at full-resolution pixel coordinates (clamped to the frame).
    fn sample(&self, x: f32, y: f32) -> [f32; 3] {
        let k = self.k as f32;
        let fx = ((x + 0.5) / k - 0.5).clamp(0.0, (self.lw - 1) as f32);
        let fy = ((y + 0.5) / k - 0.5).clamp(0.0, (self.lh - 1) as f32);
        let (x0, y0) = (fx as usize, fy as usize);
        let (x1, y1) = ((x0 + 1).min(self.lw - 1), (y0 + 1).min(self.lh - 1));
        let (ax, ay) = (fx - x0 as f32, fy - y0 as f32);
        let p = |xx: usize, yy: usize, c: usize| self.buf[(yy * self.lw + xx) * 3 + c];
        std::array::from_fn(|c| {
            (p(x0, y0, c) * (1.0 - ax) + p(x1, y0, c) * ax) * (1.0 - ay)
                + (p(x0, y1, c) * (1.0 - ax) + p(x1, y1, c) * ax) * ay
        })
    }
}

/// One box-blur pass of radius `r` along rows (`horizontal`) or columns, edges clamped.
fn box_pass(buf: &mut [f32], w: usize, h: usize, r: usize, horizontal: bool) {
    let (n, lines) = if horizontal { (w, h) } else { (h, w) };
    let idx = |line: usize, i: usize| {
        if horizontal {
            (line * w + i) * 3
        } else {
            (i * w + line) * 3
        }
    };
    let mut tmp = vec![[0.0f32; 3]; n];
    let norm = 1.0 / (2 * r + 1) as f32;
    for line in 0..lines {
        let at = |i: isize| idx(line, i.clamp(0, n as isize - 1) as usize);
        let mut acc = [0.0f32; 3];
        for i in -(r as isize)..=(r as isize) {
            let j = at(i);
            for c in 0..3 {
                acc[c] += buf[j + c];
            }
        }
        for (i, t) in tmp.iter_mut().enumerate() {
            *t = acc.map(|v| v * norm);
            let (add, sub) = (at(i as isize + r as isize + 1), at(i as isize - r as isize));
            for c in 0..3 {
                acc[c] += buf[add + c] - buf[sub + c];
            }
        }
        for (i, t) in tmp.iter().enumerate() {
            buf[idx(line, i)..][..3].copy_from_slice(t);
        }
    }
}

/// Draws `drops` over an HWC float frame in place (`rgb` is `w`·`h`·3 floats).
pub(super) fn apply(
    d: &WindshieldDrops,
    drops: &[WindshieldDrop],
    rgb: &mut [f32],
    w: usize,
    h: usize,
) {
    if drops.is_empty() || w == 0 || h == 0 || rgb.len() != w * h * 3 {
        return;
    }
    let low = Low::new(rgb, w, h, d.blur);
    let edge = d.edge.max(0.5);
    for drop in drops {
        let reach = edge;
        let x_lo = (drop.x - drop.rx - reach).floor().max(0.0) as usize;
        let y_lo = (drop.y - drop.ry - reach).floor().max(0.0) as usize;
        let x_hi = ((drop.x + drop.rx + reach).ceil() as usize).min(w - 1);
        let y_hi = ((drop.y + drop.ry + reach).ceil() as usize).min(h - 1);
        if x_lo > x_hi || y_lo > y_hi || drop.x + drop.rx + reach < 0.0 {
            continue;
        }
        let r_min = drop.rx.min(drop.ry);
        for y in y_lo..=y_hi {
            let oy = y as f32 - drop.y;
            let v = oy / drop.ry;
            for x in x_lo..=x_hi {
                let ox = x as f32 - drop.x;
                let u = ox / drop.rx;
                let rho = (u * u + v * v).sqrt();
                // Signed distance outside the rim, in pixels (approximate for ovals).
                let outside = (rho - 1.0) * r_min;
                let alpha = smoothstep((0.5 - outside / edge).clamp(0.0, 1.0));
                if alpha <= 0.0 {
                    continue;
                }
                let rho_c = rho.min(1.0);
                let m = d.field * (1.0 + BARREL * rho_c * rho_c);
                // Inverted: the view through the drop is the scene mirrored through its centre.
                let c = low.sample(drop.x - m * ox, drop.y - m * oy);
                let shade = 1.0 - RIM_DARKEN * smoothstep(((rho_c - 0.6) / 0.4).clamp(0.0, 1.0));
                let px = &mut rgb[(y * w + x) * 3..][..3];
                for (p, cv) in px.iter_mut().zip(c) {
                    *p = (*p * (1.0 - alpha) + cv * shade * alpha).clamp(0.0, 1.0);
                }
            }
        }
    }
}

fn smoothstep(t: f32) -> f32 {
    t * t * (3.0 - 2.0 * t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn low_blur_keeps_a_flat_frame_flat_and_means() {
        let (w, h) = (40usize, 30usize);
        let rgb: Vec<f32> = (0..w * h * 3).map(|i| (i % 7) as f32 / 7.0).collect();
        let low = Low::new(&rgb, w, h, 6.0);
        let mean_in = rgb.iter().sum::<f32>() / rgb.len() as f32;
        let mean_low = low.buf.iter().sum::<f32>() / low.buf.len() as f32;
        assert!((mean_in - mean_low).abs() < 0.02, "{mean_in} vs {mean_low}");
        let flat = Low::new(&vec![0.4; w * h * 3], w, h, 3.0);
        assert!(flat.buf.iter().all(|&v| (v - 0.4).abs() < 1e-5));
    }

    #[test]
    fn drop_count_follows_coverage() {
        let d = WindshieldDrops {
            coverage: 0.2,
            radius: [4.0, 4.0],
            field: 2.0,
            blur: 2.0,
            edge: 1.0,
            lifetime: 0,
        };
        let n = drops_at(&d, 1, 0, 200, 100).len();
        // 0.2 · 20000 / (π · 16) ≈ 80.
        assert_eq!(n, 80);
        let none = WindshieldDrops { coverage: 0.0, ..d };
        assert!(drops_at(&none, 1, 0, 200, 100).is_empty());
    }
}
