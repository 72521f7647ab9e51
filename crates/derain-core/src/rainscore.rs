//! A cheap per-frame rain score: how much rain (streaks, veil, drops) a frame carries, in [0, 1].
//!
//! Mean |input − output| of the derainer is no weather signal: a model that touches dry frames
//! makes it as large on dry frames as on rainy ones, and it costs the whole network. This score
//! looks at the input alone, on a 2×2-binned copy (a quarter of the pixels), and costs a few
//! dozen operations per binned pixel: well under 5% of derain-lite at 640×360.
//!
//! # What it measures
//!
//! Hand-made features of what rain adds, each normalised by the scene so that a frame full of
//! poles and fences does not look like rain ([`Features`]):
//! - thin *bright* line pixels (a ridge in one direction, flat along the other): rain streaks are
//!   light refracted by drops, so they brighten; scene lines (cables, poles, window frames) are
//!   as often dark as bright, hence the bright/dark ratio;
//! - the orientation of those lines: rain falls near-vertically (wind and a moving camera tilt
//!   it); a scene's thin structure is as much horizontal;
//! - veil: the dark channel (the minimum of R, G, B over blocks) rises and contrast falls;
//! - drops and defocus: little fine detail relative to the coarse structure.
//!
//! A logistic regression on these ([`RainScoreModel`]) turns them into the score. Its weights are
//! fitted by `derain rain-score fit` on frames this project may train on (clean footage, rain
//! rendered over it, the real rain folders not kept for measuring), and shipped embedded
//! (`models/rain-score.json`). The score is a probability-like number: above the model's
//! `threshold` the frame is called rainy.

use serde::{Deserialize, Serialize};

/// Number of features.
pub const N_FEATURES: usize = 10;

/// Ridge height (of the 0–1 luma) above which a pixel counts as a thin line, at two contrasts.
const RIDGE_LO: f32 = 0.015;
const RIDGE_HI: f32 = 0.04;
/// A line pixel's second difference along the line must stay below this share of its ridge.
const ALONG_SHARE: f32 = 0.35;
/// Added to every density before a log or a ratio (one pixel in ten thousand).
const EPS: f64 = 1e-4;
/// Side of the dark-channel blocks, in binned pixels.
const DARK_BLOCK: usize = 8;

/// Errors of the rain score.
#[derive(Debug, thiserror::Error)]
pub enum RainScoreError {
    #[error("rain score model: {0}")]
    Model(String),
    #[error("frame buffer has {got} values, expected {expected} for {width}x{height}")]
    Buffer {
        got: usize,
        expected: usize,
        width: usize,
        height: usize,
    },
}

/// The features of one frame (see the module docs); `as_array` orders them for the model.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Features {
    /// log density of thin bright near-vertical line pixels (low contrast threshold).
    pub bright_vertical: f64,
    /// The same at the high contrast threshold.
    pub bright_vertical_strong: f64,
    /// log(bright vertical / dark vertical) line densities.
    pub bright_over_dark: f64,
    /// log(bright vertical / bright horizontal) line densities.
    pub vertical_over_horizontal: f64,
    /// log(bright line density / dark line density) over all four directions.
    pub bright_over_dark_all: f64,
    /// Mean dark channel (min over R, G, B and 8×8 binned blocks).
    pub dark_channel: f64,
    /// Mean luma.
    pub mean_luma: f64,
    /// Standard deviation of luma.
    pub contrast: f64,
    /// Mean saturation (max − min of R, G, B).
    pub saturation: f64,
    /// log(fine detail / coarse detail): mean |1-px gradient| over mean |4-px gradient|.
    pub fine_over_coarse: f64,
}

impl Features {
    pub fn as_array(&self) -> [f64; N_FEATURES] {
        [
            self.bright_vertical,
            self.bright_vertical_strong,
            self.bright_over_dark,
            self.vertical_over_horizontal,
            self.bright_over_dark_all,
            self.dark_channel,
            self.mean_luma,
            self.contrast,
            self.saturation,
            self.fine_over_coarse,
        ]
    }
}

/// A 2×2-binned RGB copy of a frame (values in [0, 1]), what the features are computed on.
#[derive(Debug, Clone, Default)]
pub struct Binned {
    pub width: usize,
    pub height: usize,
    /// Interleaved RGB, row-major.
    pub rgb: Vec<f32>,
}

impl Binned {
    /// Bins a frame given by a pixel accessor `px(x, y) -> [r, g, b]` in [0, 1].
    pub fn from_fn(width: usize, height: usize, px: impl Fn(usize, usize) -> [f32; 3]) -> Self {
        let (bw, bh) = (width / 2, height / 2);
        let mut rgb = Vec::with_capacity(bw * bh * 3);
        for y in 0..bh {
            for x in 0..bw {
                let (a, b, c, d) = (
                    px(2 * x, 2 * y),
                    px(2 * x + 1, 2 * y),
                    px(2 * x, 2 * y + 1),
                    px(2 * x + 1, 2 * y + 1),
                );
                for k in 0..3 {
                    rgb.push(0.25 * (a[k] + b[k] + c[k] + d[k]));
                }
            }
        }
        Self {
            width: bw,
            height: bh,
            rgb,
        }
    }

    /// Bins the top-left `w`×`h` of a planar CHW float tensor of `hp`×`wp` per channel (the
    /// element's and the CLI's network input).
    pub fn from_chw(
        chw: &[f32],
        hp: usize,
        wp: usize,
        h: usize,
        w: usize,
    ) -> Result<Self, RainScoreError> {
        if chw.len() < 3 * hp * wp || h > hp || w > wp {
            return Err(RainScoreError::Buffer {
                got: chw.len(),
                expected: 3 * hp * wp,
                width: w,
                height: h,
            });
        }
        let plane = hp * wp;
        Ok(Self::from_fn(w, h, |x, y| {
            let i = y * wp + x;
            [chw[i], chw[plane + i], chw[2 * plane + i]]
        }))
    }
}

/// Computes the [`Features`] of a binned frame. Frames under 8×8 binned pixels give the
/// features of a flat frame.
pub fn features(b: &Binned) -> Features {
    let (w, h) = (b.width, b.height);
    if w < 8 || h < 8 || b.rgb.len() < w * h * 3 {
        return Features::default();
    }
    let luma: Vec<f32> = b
        .rgb
        .chunks_exact(3)
        .map(|p| 0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2])
        .collect();
    let at = |x: usize, y: usize| luma[y * w + x];
    // Line-pixel counts: [bright, dark] x [vertical, horizontal, diag, antidiag] at RIDGE_LO,
    // plus bright vertical at RIDGE_HI.
    let mut lines = [[0u64; 4]; 2];
    let mut bright_v_strong = 0u64;
    let (mut fine, mut coarse) = (0.0f64, 0.0f64);
    let mut n = 0u64;
    for y in 4..h - 4 {
        for x in 4..w - 4 {
            let c = at(x, y);
            // Per direction, how far the pixel stands above (or below) both neighbours across
            // it: a thin line's profile shows in the one across it, while the one along it
            // stays small. Both neighbours must agree, so the flank of a bright line is no dark
            // line.
            let pairs = [
                (at(x - 1, y), at(x + 1, y)),
                (at(x, y - 1), at(x, y + 1)),
                (at(x - 1, y - 1), at(x + 1, y + 1)),
                (at(x + 1, y - 1), at(x - 1, y + 1)),
            ];
            let up: [f32; 4] = std::array::from_fn(|k| (c - pairs[k].0).min(c - pairs[k].1));
            let down: [f32; 4] = std::array::from_fn(|k| (pairs[k].0 - c).min(pairs[k].1 - c));
            let second: [f32; 4] =
                std::array::from_fn(|k| (2.0 * c - pairs[k].0 - pairs[k].1).abs());
            // Across-direction k pairs with an along-direction: a vertical line (across =
            // horizontal) runs along the vertical; the diagonals pair with each other.
            const ALONG: [usize; 4] = [1, 0, 3, 2];
            for k in 0..4 {
                let along = second[ALONG[k]];
                if up[k] > RIDGE_LO && along < ALONG_SHARE * 2.0 * up[k] {
                    lines[0][k] += 1;
                    if k == 0 && up[k] > RIDGE_HI {
                        bright_v_strong += 1;
                    }
                } else if down[k] > RIDGE_LO && along < ALONG_SHARE * 2.0 * down[k] {
                    lines[1][k] += 1;
                }
            }
            fine += f64::from((at(x + 1, y) - at(x, y)).abs() + (at(x, y + 1) - at(x, y)).abs());
            coarse += f64::from((at(x + 4, y) - at(x, y)).abs() + (at(x, y + 4) - at(x, y)).abs());
            n += 1;
        }
    }
    let n = n.max(1) as f64;
    let dens = |c: u64| c as f64 / n + EPS;
    let bright_all: u64 = lines[0].iter().sum();
    let dark_all: u64 = lines[1].iter().sum();

    // Dark channel over blocks, luma statistics, saturation.
    let (bw, bh) = (w / DARK_BLOCK, h / DARK_BLOCK);
    let mut dark_sum = 0.0f64;
    for by in 0..bh {
        for bx in 0..bw {
            let mut m = f32::MAX;
            for y in by * DARK_BLOCK..(by + 1) * DARK_BLOCK {
                for x in bx * DARK_BLOCK..(bx + 1) * DARK_BLOCK {
                    let p = &b.rgb[3 * (y * w + x)..3 * (y * w + x) + 3];
                    m = m.min(p[0].min(p[1]).min(p[2]));
                }
            }
            dark_sum += f64::from(m);
        }
    }
    let npx = (w * h) as f64;
    let mean = luma.iter().map(|&v| f64::from(v)).sum::<f64>() / npx;
    let var = luma
        .iter()
        .map(|&v| (f64::from(v) - mean).powi(2))
        .sum::<f64>()
        / npx;
    let saturation = b
        .rgb
        .chunks_exact(3)
        .map(|p| f64::from(p[0].max(p[1]).max(p[2]) - p[0].min(p[1]).min(p[2])))
        .sum::<f64>()
        / npx;
    Features {
        bright_vertical: dens(lines[0][0]).ln(),
        bright_vertical_strong: dens(bright_v_strong).ln(),
        bright_over_dark: (dens(lines[0][0]) / dens(lines[1][0])).ln(),
        vertical_over_horizontal: (dens(lines[0][0]) / dens(lines[0][1])).ln(),
        bright_over_dark_all: (dens(bright_all) / dens(dark_all)).ln(),
        dark_channel: dark_sum / (bw * bh).max(1) as f64,
        mean_luma: mean,
        contrast: var.sqrt(),
        saturation,
        fine_over_coarse: ((fine / n + EPS) / (coarse / n + EPS)).ln(),
    }
}

/// Logistic regression over standardised [`Features`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RainScoreModel {
    /// Per-feature mean and standard deviation of the fitting set (standardisation).
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
    pub weights: Vec<f64>,
    pub bias: f64,
    /// Scores above this call the frame rainy.
    pub threshold: f64,
    /// How the weights were fitted (data, command), for people.
    #[serde(default)]
    pub fitted_on: serde_json::Value,
}

/// The shipped model (fitted by `derain rain-score fit`, see models/README.md).
const SHIPPED: &str = include_str!("../../../models/rain-score.json");

impl RainScoreModel {
    /// The embedded model every consumer uses by default.
    pub fn shipped() -> Result<Self, RainScoreError> {
        Self::from_json(SHIPPED)
    }

    pub fn from_json(text: &str) -> Result<Self, RainScoreError> {
        let m: Self =
            serde_json::from_str(text).map_err(|e| RainScoreError::Model(e.to_string()))?;
        if [m.mean.len(), m.std.len(), m.weights.len()] != [N_FEATURES; 3] {
            return Err(RainScoreError::Model(format!(
                "needs {N_FEATURES} means, deviations and weights"
            )));
        }
        if !(0.0..=1.0).contains(&m.threshold) {
            return Err(RainScoreError::Model(format!(
                "threshold {} is outside 0..1",
                m.threshold
            )));
        }
        Ok(m)
    }

    /// The rain score of a frame's features, in [0, 1].
    pub fn score_features(&self, f: &Features) -> f64 {
        let z = f
            .as_array()
            .iter()
            .zip(self.mean.iter().zip(&self.std).zip(&self.weights))
            .map(|(v, ((m, s), w))| w * (v - m) / s.max(1e-9))
            .sum::<f64>()
            + self.bias;
        1.0 / (1.0 + (-z).exp())
    }

    /// The rain score of a binned frame, in [0, 1].
    pub fn score(&self, b: &Binned) -> f64 {
        self.score_features(&features(b))
    }

    /// Fits a logistic regression (full-batch gradient descent with a little L2, features
    /// standardised on the fitting set) to `samples` labelled `true` for rain. Written by hand:
    /// ten features and a few thousand samples need no library.
    pub fn fit(samples: &[(Features, bool)], l2: f64, iterations: usize) -> Self {
        let n = samples.len().max(1) as f64;
        let xs: Vec<[f64; N_FEATURES]> = samples.iter().map(|(f, _)| f.as_array()).collect();
        let mut mean = vec![0.0; N_FEATURES];
        let mut std = vec![0.0; N_FEATURES];
        for x in &xs {
            for k in 0..N_FEATURES {
                mean[k] += x[k] / n;
            }
        }
        for x in &xs {
            for k in 0..N_FEATURES {
                std[k] += (x[k] - mean[k]).powi(2) / n;
            }
        }
        for s in &mut std {
            *s = s.sqrt().max(1e-9);
        }
        let zs: Vec<[f64; N_FEATURES]> = xs
            .iter()
            .map(|x| std::array::from_fn(|k| (x[k] - mean[k]) / std[k]))
            .collect();
        // Classes weighted to equal total weight, so an unbalanced set does not shift the bias.
        let n_pos = samples.iter().filter(|(_, y)| *y).count().max(1) as f64;
        let n_neg = (samples.len() as f64 - n_pos).max(1.0);
        let mut w = [0.0f64; N_FEATURES];
        let mut bias = 0.0;
        let lr = 0.5;
        for _ in 0..iterations {
            let mut gw = [0.0f64; N_FEATURES];
            let mut gb = 0.0;
            for (z, (_, y)) in zs.iter().zip(samples) {
                let p = 1.0 / (1.0 + (-(dot(&w, z) + bias)).exp());
                let cw = if *y { 0.5 / n_pos } else { 0.5 / n_neg };
                let err = cw * (p - f64::from(u8::from(*y)));
                for k in 0..N_FEATURES {
                    gw[k] += err * z[k];
                }
                gb += err;
            }
            for k in 0..N_FEATURES {
                w[k] -= lr * (gw[k] + l2 * w[k]);
            }
            bias -= lr * gb;
        }
        Self {
            mean,
            std,
            weights: w.to_vec(),
            bias,
            threshold: 0.5,
            fitted_on: serde_json::Value::Null,
        }
    }
}

fn dot(a: &[f64; N_FEATURES], b: &[f64; N_FEATURES]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Area under the ROC curve of scores for positives against negatives (the probability that a
/// random positive scores above a random negative, ties counting half): by brute force over all
/// pairs, which is exact and fast enough for a few thousand frames.
pub fn roc_auc(positives: &[f64], negatives: &[f64]) -> Option<f64> {
    if positives.is_empty() || negatives.is_empty() {
        return None;
    }
    let mut wins = 0.0f64;
    for &p in positives {
        for &q in negatives {
            wins += if p > q {
                1.0
            } else if p == q {
                0.5
            } else {
                0.0
            };
        }
    }
    Some(wins / (positives.len() * negatives.len()) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_model_parses() {
        let m = RainScoreModel::shipped().unwrap();
        assert_eq!(m.weights.len(), N_FEATURES);
    }

    #[test]
    fn fit_separates_a_separable_set() {
        let mut samples = Vec::new();
        for i in 0..40 {
            let f = Features {
                bright_vertical: f64::from(i % 7) * 0.1,
                ..Features::default()
            };
            samples.push((f, false));
            let g = Features {
                bright_vertical: 2.0 + f64::from(i % 5) * 0.1,
                ..Features::default()
            };
            samples.push((g, true));
        }
        let m = RainScoreModel::fit(&samples, 1e-3, 300);
        let (pos, neg): (Vec<_>, Vec<_>) = samples.iter().partition(|(_, y)| *y);
        let ps: Vec<f64> = pos.iter().map(|(f, _)| m.score_features(f)).collect();
        let ns: Vec<f64> = neg.iter().map(|(f, _)| m.score_features(f)).collect();
        assert_eq!(roc_auc(&ps, &ns), Some(1.0));
        assert!(ps.iter().all(|&p| p > 0.5) && ns.iter().all(|&n| n < 0.5));
    }

    #[test]
    fn auc_by_hand() {
        assert_eq!(roc_auc(&[0.9, 0.4], &[0.5, 0.1]), Some(0.75));
        assert_eq!(roc_auc(&[0.5], &[0.5]), Some(0.5));
        assert_eq!(roc_auc(&[], &[0.5]), None);
    }
}
