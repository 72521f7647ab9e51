//! The atmospheric veil: depth proxy, airlight and `I = J·t + A·(1 − t)` (see [`Scattering`]).
//!
//! The frame cue is computed on a coarse grid (cells about a 48th of the frame height), so a
//! 1280x720 frame costs one pass for the cell minima plus one `exp` per pixel.

use super::Scattering;

/// Largest extinction coefficient: at 8 the horizon keeps 0.03% of its light, a white-out.
pub(crate) const MAX_BETA: f32 = 8.0;
/// Layout prior `r₀ / (r + r₀)`: r₀ in half-diagonals.
const R0: f32 = 0.15;
/// Share of the cells (highest dark channel first) whose colour estimates the sky.
const SKY_SHARE: f32 = 0.05;

/// Per-cell dark channel (smoothed) and mean colour of an HWC float frame.
struct Cells {
    cell: usize,
    gw: usize,
    gh: usize,
    dark: Vec<f32>,
    mean: Vec<[f32; 3]>,
}

impl Cells {
    fn new(rgb: &[f32], w: usize, h: usize) -> Self {
        let cell = (h / 48).max(2);
        let (gw, gh) = (w.div_ceil(cell), h.div_ceil(cell));
        let mut min = vec![1.0f32; gw * gh];
        let mut sum = vec![[0.0f32; 3]; gw * gh];
        let mut count = vec![0u32; gw * gh];
        for (y, row) in rgb.chunks_exact(3 * w).take(h).enumerate() {
            let gy = y / cell;
            for (x, px) in row.chunks_exact(3).enumerate() {
                let g = gy * gw + x / cell;
                let (r, gr, b) = (px[0], px[1], px[2]);
                min[g] = min[g].min(r.min(gr).min(b));
                let s = &mut sum[g];
                s[0] += r;
                s[1] += gr;
                s[2] += b;
                count[g] += 1;
            }
        }
        let mean = sum
            .iter()
            .zip(&count)
            .map(|(s, &n)| s.map(|v| v / n.max(1) as f32))
            .collect();
        // The dark channel's neighbourhood minimum (3x3 cells), then smoothing (two 3x3 box
        // passes), so the cue is a soft map of regions, not of single bright pixels.
        let mut dark = filter3(&min, gw, gh, f32::min, 1.0);
        for _ in 0..2 {
            dark = box3(&dark, gw, gh);
        }
        for v in &mut dark {
            *v = v.clamp(0.0, 1.0);
        }
        Self {
            cell,
            gw,
            gh,
            dark,
            mean,
        }
    }

    /// The dark channel at pixel (x, y), bilinear between cell centres.
    fn dark_at(&self, x: usize, y: usize) -> f32 {
        let c = self.cell as f32;
        let fx = ((x as f32 + 0.5) / c - 0.5).clamp(0.0, (self.gw - 1) as f32);
        let fy = ((y as f32 + 0.5) / c - 0.5).clamp(0.0, (self.gh - 1) as f32);
        let (x0, y0) = (fx as usize, fy as usize);
        let (x1, y1) = ((x0 + 1).min(self.gw - 1), (y0 + 1).min(self.gh - 1));
        let (ax, ay) = (fx - x0 as f32, fy - y0 as f32);
        let d = |xx: usize, yy: usize| self.dark[yy * self.gw + xx];
        (d(x0, y0) * (1.0 - ax) + d(x1, y0) * ax) * (1.0 - ay)
            + (d(x0, y1) * (1.0 - ax) + d(x1, y1) * ax) * ay
    }

    /// Mean colour of the cells of highest dark channel: sky (or the brightest haze).
    fn sky(&self) -> [f32; 3] {
        let mut order: Vec<usize> = (0..self.dark.len()).collect();
        order.sort_by(|&a, &b| self.dark[b].total_cmp(&self.dark[a]));
        let k = ((order.len() as f32 * SKY_SHARE).ceil() as usize).clamp(1, order.len());
        let mut s = [0.0f32; 3];
        for &i in &order[..k] {
            for (sc, m) in s.iter_mut().zip(self.mean[i]) {
                *sc += m;
            }
        }
        s.map(|v| v / k as f32)
    }
}

/// A 3x3 neighbourhood reduction over a grid (edges see fewer neighbours).
fn filter3(v: &[f32], gw: usize, gh: usize, f: fn(f32, f32) -> f32, init: f32) -> Vec<f32> {
    let mut out = vec![init; v.len()];
    for y in 0..gh {
        for x in 0..gw {
            let mut acc = init;
            for yy in y.saturating_sub(1)..(y + 2).min(gh) {
                for xx in x.saturating_sub(1)..(x + 2).min(gw) {
                    acc = f(acc, v[yy * gw + xx]);
                }
            }
            out[y * gw + x] = acc;
        }
    }
    out
}

/// A 3x3 box mean over a grid (edges average the neighbours they have).
fn box3(v: &[f32], gw: usize, gh: usize) -> Vec<f32> {
    let mut out = vec![0.0; v.len()];
    for y in 0..gh {
        for x in 0..gw {
            let (mut s, mut n) = (0.0, 0.0);
            for yy in y.saturating_sub(1)..(y + 2).min(gh) {
                for xx in x.saturating_sub(1)..(x + 2).min(gw) {
                    s += v[yy * gw + xx];
                    n += 1.0;
                }
            }
            out[y * gw + x] = s / n;
        }
    }
    out
}

impl Scattering {
    /// The depth proxy `d` in [0, 1] (1 = far) of every pixel of `rgb`, an HWC float frame of
    /// `width`x`height` in [0, 1], row-major, one value per pixel (see [`Scattering`] for the
    /// model). Empty when `rgb` is not `width`·`height`·3 floats long.
    pub fn depth(&self, rgb: &[f32], width: u32, height: u32) -> Vec<f32> {
        let (w, h) = (width as usize, height as usize);
        if w == 0 || h == 0 || rgb.len() != w * h * 3 {
            return Vec::new();
        }
        self.depth_with(&Cells::new(rgb, w, h), w, h)
    }

    /// The airlight `A` this veil uses over `rgb` (same layout as [`Scattering::depth`]).
    pub fn airlight_for(&self, rgb: &[f32], width: u32, height: u32) -> [f32; 3] {
        let (w, h) = (width as usize, height as usize);
        if w == 0 || h == 0 || rgb.len() != w * h * 3 {
            return self.airlight;
        }
        self.airlight_with(&Cells::new(rgb, w, h))
    }

    fn airlight_with(&self, cells: &Cells) -> [f32; 3] {
        let luma = |c: [f32; 3]| 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2];
        let own = luma(self.airlight);
        let scale = if own > 1e-4 {
            let m = self.sky_match.clamp(0.0, 1.0);
            (1.0 - m) + m * luma(cells.sky()) / own
        } else {
            1.0
        };
        self.airlight.map(|a| (a * scale).clamp(0.0, 1.0))
    }

    fn depth_with(&self, cells: &Cells, w: usize, h: usize) -> Vec<f32> {
        let (wf, hf) = (w as f32, h as f32);
        let [vx, vy] = self.vanishing_point.map(|v| v.clamp(0.0, 1.0));
        let (vx, vy) = (vx * wf, vy * hf);
        let inv_half_diag = 2.0 / (wf * wf + hf * hf).sqrt();
        let below = (hf - vy).max(1.0);
        let weight = self.scene_weight.clamp(0.0, 1.0);
        let mut d = Vec::with_capacity(w * h);
        for y in 0..h {
            let yc = y as f32 + 0.5;
            // The frame cue counts fully above the horizon, fading out towards the bottom row.
            let gate = weight * ((hf - yc) / below).clamp(0.0, 1.0);
            let dy = (yc - vy) * inv_half_diag;
            for x in 0..w {
                let dx = (x as f32 + 0.5 - vx) * inv_half_diag;
                let layout = R0 / ((dx * dx + dy * dy).sqrt() + R0);
                let cue = if gate > 0.0 {
                    gate * cells.dark_at(x, y)
                } else {
                    0.0
                };
                d.push((layout + cue * (1.0 - layout)).clamp(0.0, 1.0));
            }
        }
        d
    }

    /// `I = J·t + A·(1 − t)` in place over an HWC float frame (`rgb` already `w`·`h`·3 long).
    pub(super) fn apply(&self, rgb: &mut [f32], w: usize, h: usize) {
        if w == 0 || h == 0 || rgb.len() != w * h * 3 {
            return;
        }
        let beta = self.beta.clamp(0.0, MAX_BETA);
        if beta == 0.0 {
            return;
        }
        let cells = Cells::new(rgb, w, h);
        let a = self.airlight_with(&cells);
        let depth = self.depth_with(&cells, w, h);
        for (px, &d) in rgb.chunks_exact_mut(3).zip(&depth) {
            let t = (-beta * d).exp();
            for (c, &ac) in px.iter_mut().zip(&a) {
                *c = *c * t + ac * (1.0 - t);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn veil(beta: f32, scene_weight: f32) -> Scattering {
        Scattering {
            beta,
            airlight: [0.7, 0.75, 0.8],
            sky_match: 0.0,
            vanishing_point: [0.5, 0.4],
            scene_weight,
        }
    }

    #[test]
    fn layout_depth_peaks_at_the_vanishing_point() {
        let (w, h) = (80usize, 60usize);
        let rgb = vec![0.3f32; w * h * 3];
        let d = veil(1.0, 0.0).depth(&rgb, w as u32, h as u32);
        let at = |x: usize, y: usize| d[y * w + x];
        assert!(at(40, 24) > 0.8, "{}", at(40, 24));
        assert!(at(40, 24) > at(40, 40) && at(40, 40) > at(40, 59));
        assert!(at(40, 24) > at(60, 24) && at(60, 24) > at(79, 24));
        assert!(at(0, 59) < 0.2, "{}", at(0, 59));
    }

    #[test]
    fn a_bright_flat_sky_is_farther_than_textured_ground() {
        // Top half: bright sky; bottom half: a dark checkerboard. With the frame cue on, the sky
        // goes far while the textured rows below keep their layout depth.
        let (w, h) = (96usize, 64usize);
        let mut rgb = vec![0.0f32; w * h * 3];
        for y in 0..h {
            for x in 0..w {
                let v = if y < h / 2 {
                    0.9
                } else if (x / 2 + y / 2) % 2 == 0 {
                    0.05
                } else {
                    0.5
                };
                rgb[(y * w + x) * 3..][..3].fill(v);
            }
        }
        let layout = veil(1.0, 0.0).depth(&rgb, w as u32, h as u32);
        let cued = veil(1.0, 1.0).depth(&rgb, w as u32, h as u32);
        let corner = 4 * w + 4;
        assert!(cued[corner] > layout[corner] + 0.3, "sky corner lifted");
        assert!(cued[corner] > 0.8);
        let ground = (h - 6) * w + w / 2;
        assert!(
            (cued[ground] - layout[ground]).abs() < 0.05,
            "textured ground kept"
        );
    }

    #[test]
    fn airlight_follows_the_sky_when_asked() {
        let (w, h) = (32usize, 32usize);
        let dusk = vec![0.3f32; w * h * 3];
        let mut v = veil(1.0, 0.5);
        assert_eq!(v.airlight_for(&dusk, 32, 32), v.airlight);
        v.sky_match = 1.0;
        let a = v.airlight_for(&dusk, 32, 32);
        let luma = 0.299 * a[0] + 0.587 * a[1] + 0.114 * a[2];
        assert!((luma - 0.3).abs() < 0.01, "{a:?}");
        // The colour (blue-ish) is kept.
        assert!(a[2] > a[0]);
    }
}
