//! NIQE (Mittal, Soundararajan and Bovik, "Making a Completely Blind Image Quality Analyzer",
//! IEEE SPL 2012), following the LIVE MATLAB release (`computequality.m`, `computefeature.m`,
//! `estimateaggdparam.m`) step by step, so that scores match the release's and published
//! numbers stay comparable. Where the release relies on a MATLAB built-in (`rgb2gray`,
//! `imfilter`, `imresize`, `min`, `nanmean`, `nancov`, `pinv`), the built-in's documented
//! behaviour is reproduced and the comment says which.
//!
//! The pristine model is not part of this repository: users pass the release's
//! `modelparameters.mat` (LIVE copyright; its notice must accompany any copy).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use nalgebra::DMatrix;

use super::plane::{Border, Plane, filter_separable, gaussian_kernel};
use super::{MetricsError, RgbImage};

/// Environment variable naming the NIQE model file (`modelparameters.mat`).
pub const NIQE_MODEL_ENV: &str = "DERAIN_NIQE_MODEL";

/// Where the model sits inside the shared data folder.
const SHARED_MODEL: &str = "metrics/niqe/modelparameters.mat";

/// Features per block and scale, and in all.
const FEATS_PER_SCALE: usize = 18;
const NFEAT: usize = 2 * FEATS_PER_SCALE;

/// Block side at the first scale (the release's `blocksizerow = blocksizecol = 96`).
const BLOCK: usize = 96;

/// NIQE with a pristine multivariate Gaussian model (36 means, 36x36 covariance).
#[derive(Debug, Clone)]
pub struct Niqe {
    mu: [f64; NFEAT],
    /// Row-major 36x36.
    cov: Vec<f64>,
}

impl Niqe {
    /// Reads the pristine model from a MATLAB v5 file with the variables `mu_prisparam` (1x36)
    /// and `cov_prisparam` (36x36), i.e. the LIVE release's `modelparameters.mat`. Shapes and
    /// values are checked so a wrong file fails here rather than producing meaningless scores.
    pub fn from_mat(path: &Path) -> Result<Self, MetricsError> {
        let bad = |reason: String| MetricsError::NiqeModel {
            path: path.to_owned(),
            reason,
        };
        let bytes = std::fs::read(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
        // `matfile` handles both plain and zlib-compressed (MATLAB 7 default) v5 files; the LIVE
        // file is compressed.
        let mat = matfile::MatFile::parse(bytes.as_slice())
            .map_err(|e| bad(format!("not a readable MATLAB v5 .mat file ({e})")))?;
        let get = |name: &str, rows: usize, cols: usize| -> Result<Vec<f64>, MetricsError> {
            let arr = mat.find_by_name(name).ok_or_else(|| {
                let found: Vec<&str> = mat.arrays().iter().map(|a| a.name()).collect();
                bad(format!(
                    "no numeric variable {name} (variables found: {})",
                    if found.is_empty() {
                        "none".to_owned()
                    } else {
                        found.join(", ")
                    }
                ))
            })?;
            let size = arr.size().as_slice();
            // A vector is accepted in either orientation: both hold the same 36 numbers.
            let shape_ok = size == [rows, cols] || (rows == 1 && size == [cols, 1]);
            if !shape_ok {
                return Err(bad(format!(
                    "{name} is {} but must be {rows}x{cols}",
                    size.iter()
                        .map(|d| d.to_string())
                        .collect::<Vec<_>>()
                        .join("x")
                )));
            }
            let values: Vec<f64> = match arr.data() {
                matfile::NumericData::Double { real, imag: None } => real.clone(),
                matfile::NumericData::Single { real, imag: None } => {
                    real.iter().map(|&v| f64::from(v)).collect()
                }
                matfile::NumericData::Double { imag: Some(_), .. }
                | matfile::NumericData::Single { imag: Some(_), .. } => {
                    return Err(bad(format!("{name} is complex; it must be real")));
                }
                _ => return Err(bad(format!("{name} is not a double or single array"))),
            };
            if values.len() != rows * cols {
                return Err(bad(format!(
                    "{name} holds {} values, expected {}",
                    values.len(),
                    rows * cols
                )));
            }
            if let Some(i) = values.iter().position(|v| !v.is_finite()) {
                return Err(bad(format!(
                    "{name} has a non-finite value ({}) at element {}",
                    values[i],
                    i + 1
                )));
            }
            Ok(values)
        };
        let mu = get("mu_prisparam", 1, NFEAT)?;
        // MATLAB stores column-major; the covariance is checked to be symmetric below, so the
        // order does not matter, but transpose anyway to keep the row-major invariant honest.
        let cov_cm = get("cov_prisparam", NFEAT, NFEAT)?;
        let mut cov = vec![0.0; NFEAT * NFEAT];
        for r in 0..NFEAT {
            for c in 0..NFEAT {
                cov[r * NFEAT + c] = cov_cm[c * NFEAT + r];
            }
        }
        Self::from_parts(&mu, cov).map_err(bad)
    }

    /// Builds a model from 36 means and a row-major 36x36 covariance, checking that the
    /// covariance is symmetric with a non-negative diagonal.
    fn from_parts(mu: &[f64], cov: Vec<f64>) -> Result<Self, String> {
        let mu: [f64; NFEAT] = mu
            .try_into()
            .map_err(|_| format!("{} means, expected {NFEAT}", mu.len()))?;
        if cov.len() != NFEAT * NFEAT {
            return Err(format!(
                "{} covariance entries, expected {}",
                cov.len(),
                NFEAT * NFEAT
            ));
        }
        let scale = cov.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        for r in 0..NFEAT {
            if cov[r * NFEAT + r] < 0.0 {
                return Err(format!(
                    "cov_prisparam has a negative variance at ({0},{0})",
                    r + 1
                ));
            }
            for c in 0..r {
                let (a, b) = (cov[r * NFEAT + c], cov[c * NFEAT + r]);
                if (a - b).abs() > 1e-9 * scale {
                    return Err(format!(
                        "cov_prisparam is not symmetric: ({},{}) = {a} but ({},{}) = {b}",
                        r + 1,
                        c + 1,
                        c + 1,
                        r + 1
                    ));
                }
            }
        }
        Ok(Self { mu, cov })
    }

    /// The pristine model's 36 feature means.
    pub fn mean(&self) -> &[f64; NFEAT] {
        &self.mu
    }

    /// The pristine model's 36x36 feature covariance, row-major.
    pub fn covariance(&self) -> &[f64] {
        &self.cov
    }

    /// Finds the model file: `explicit` if given, else `$DERAIN_NIQE_MODEL` if set, else
    /// `metrics/niqe/modelparameters.mat` in the shared data folder. A path the user named (by
    /// argument or variable) must exist: falling back to another model behind their back would
    /// silently change what the scores mean. The error lists every path tried.
    pub fn locate(explicit: Option<&Path>) -> Result<PathBuf, MetricsError> {
        let env = std::env::var_os(NIQE_MODEL_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from);
        // Where the shared copy is, or where it would be (for the error message).
        let shared = crate::devdata::shared_path(SHARED_MODEL).unwrap_or_else(|| {
            std::env::var_os(crate::devdata::DATA_ENV)
                .map(PathBuf::from)
                .unwrap_or_else(crate::devdata::beside_the_repository)
                .join(SHARED_MODEL)
        });
        locate_from(explicit, env.as_deref(), &shared)
    }

    /// NIQE score of an image: the distance between the multivariate Gaussian fitted to the
    /// image's block features and the pristine model. Lower means more natural. The image must
    /// be at least 96x96 (one block); only whole 96x96 blocks from the top-left are used, as in
    /// the release.
    pub fn score(&self, img: &RgbImage) -> Result<f64, MetricsError> {
        let feats = features(img)?;
        let (mu_d, cov_d) = nan_mean_cov(&feats)?;
        // (cov_p + cov_d) / 2, then pinv, then the Mahalanobis-like distance.
        let sum = DMatrix::from_fn(NFEAT, NFEAT, |r, c| {
            (self.cov[r * NFEAT + c] + cov_d[r * NFEAT + c]) / 2.0
        });
        let inv = pinv(sum)?;
        let d = nalgebra::DVector::from_fn(NFEAT, |i, _| self.mu[i] - mu_d[i]);
        let q = (d.transpose() * &inv * &d)[(0, 0)];
        // The quadratic form is >= 0 in exact arithmetic; clamp rounding noise rather than
        // return NaN (MATLAB would return a tiny imaginary number there).
        Ok(q.max(0.0).sqrt())
    }
}

/// [`Niqe::locate`] without reading the environment, so it can be tested.
fn locate_from(
    explicit: Option<&Path>,
    env: Option<&Path>,
    shared: &Path,
) -> Result<PathBuf, MetricsError> {
    let candidate = explicit.or(env).unwrap_or(shared);
    if candidate.is_file() {
        Ok(candidate.to_owned())
    } else {
        Err(MetricsError::NiqeModelNotFound {
            tried: vec![candidate.to_owned()],
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Features

/// MATLAB `rgb2gray` on uint8: Y = 0.298936021293775 R + 0.587043074451121 G +
/// 0.114020904255103 B (the first row of the inverse NTSC matrix), computed in double, rounded
/// half away from zero and kept as uint8 — the release then converts that to double.
fn gray_matlab(img: &RgbImage) -> Plane {
    let data = img
        .pixels()
        .map(|p| {
            let [r, g, b] = p.0.map(f64::from);
            let v = 0.298936021293775 * r + 0.587043074451121 * g + 0.114020904255103 * b;
            // Non-negative, so round() (half away from zero) is MATLAB's rounding; the clamp
            // is uint8 saturation.
            v.round().clamp(0.0, 255.0)
        })
        .collect();
    Plane::new(img.width() as usize, img.height() as usize, data)
}

/// The 36 features of every 96x96 block (row-major over blocks), NaN where the release's
/// arithmetic produces NaN (flat blocks).
fn features(img: &RgbImage) -> Result<Vec<[f64; NFEAT]>, MetricsError> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let (bw, bh) = (w / BLOCK, h / BLOCK);
    if bw == 0 || bh == 0 {
        return Err(MetricsError::TooSmall {
            width: img.width(),
            height: img.height(),
            min: BLOCK as u32,
        });
    }
    let im = gray_matlab(img).crop(bw * BLOCK, bh * BLOCK);
    let window = gaussian_kernel(7, 7.0 / 6.0);
    let mut feats = vec![[f64::NAN; NFEAT]; bw * bh];

    let mscn1 = mscn(&im, &window);
    scale_features(&mscn1, BLOCK, &mut feats, 0);
    let half = imresize_half(&im);
    let mscn2 = mscn(&half, &window);
    scale_features(&mscn2, BLOCK / 2, &mut feats, FEATS_PER_SCALE);
    Ok(feats)
}

/// Mean-subtracted contrast-normalised coefficients: (im - mu) / (sigma + 1) with mu and sigma
/// from the 7x7 Gaussian window, `imfilter(..., 'replicate')`, sigma = sqrt(|E[x^2] - mu^2|).
fn mscn(im: &Plane, window: &[f64]) -> Plane {
    let mu = filter_separable(im, window, Border::Replicate);
    let e_sq = filter_separable(&im.mul(im), window, Border::Replicate);
    let data = im
        .data
        .iter()
        .zip(&mu.data)
        .zip(&e_sq.data)
        .map(|((&x, &m), &s2)| {
            let sigma = (s2 - m * m).abs().sqrt();
            (x - m) / (sigma + 1.0)
        })
        .collect();
    Plane::new(im.width, im.height, data)
}

/// Fills features `offset..offset + 18` of every block from the MSCN plane of one scale, blocks
/// of side `bs`, no overlap (MATLAB `blkproc`), as `computefeature.m`:
/// AGGD fit of the coefficients [alpha, (betal + betar) / 2], then for each of the shifts
/// [0 1; 1 0; 1 1; 1 -1] the AGGD fit of coefficient x `circshift`ed coefficient within the block
/// [alpha, mean, betal, betar].
fn scale_features(m: &Plane, bs: usize, feats: &mut [[f64; NFEAT]], offset: usize) {
    let bw = m.width / bs;
    // circshift(X, [di dj]) puts X(i - di, j - dj) at (i, j), wrapping inside the block.
    // Index tables avoid a modulo per sample.
    let prev: Vec<usize> = (0..bs).map(|i| (i + bs - 1) % bs).collect();
    let next: Vec<usize> = (0..bs).map(|i| (i + 1) % bs).collect();
    let ident: Vec<usize> = (0..bs).collect();
    // (row source table, column source table) per shift.
    let shifts: [(&[usize], &[usize]); 4] = [
        (&ident, &prev), // [0 1]
        (&prev, &ident), // [1 0]
        (&prev, &prev),  // [1 1]
        (&prev, &next),  // [1 -1]
    ];
    for (b, out) in feats.iter_mut().enumerate() {
        let (by, bx) = (b / bw * bs, b % bw * bs);
        let at = |i: usize, j: usize| m.data[(by + i) * m.width + bx + j];

        let mut st = AggdStats::default();
        for i in 0..bs {
            for j in 0..bs {
                st.push(at(i, j));
            }
        }
        let fit = st.fit();
        out[offset] = fit.alpha;
        out[offset + 1] = (fit.betal + fit.betar) / 2.0;

        for (s, (rows, cols)) in shifts.iter().enumerate() {
            let mut st = AggdStats::default();
            for i in 0..bs {
                let si = rows[i];
                for j in 0..bs {
                    st.push(at(i, j) * at(si, cols[j]));
                }
            }
            let fit = st.fit();
            let o = offset + 2 + 4 * s;
            out[o] = fit.alpha;
            out[o + 1] = (fit.betar - fit.betal) * fit.gamma2_over_gamma1;
            out[o + 2] = fit.betal;
            out[o + 3] = fit.betar;
        }
    }
}

/// Running sums for `estimateaggdparam.m`.
#[derive(Default)]
struct AggdStats {
    n: usize,
    n_neg: usize,
    sq_neg: f64,
    n_pos: usize,
    sq_pos: f64,
    abs_sum: f64,
}

struct AggdFit {
    alpha: f64,
    betal: f64,
    betar: f64,
    /// gamma(2/alpha) / gamma(1/alpha), for the pair features' mean.
    gamma2_over_gamma1: f64,
}

impl AggdStats {
    #[inline]
    fn push(&mut self, v: f64) {
        self.n += 1;
        self.abs_sum += v.abs();
        if v < 0.0 {
            self.n_neg += 1;
            self.sq_neg += v * v;
        } else if v > 0.0 {
            self.n_pos += 1;
            self.sq_pos += v * v;
        }
    }

    /// `estimateaggdparam.m`. Empty sides give NaN exactly as MATLAB's mean of an empty vector
    /// does (0/0 here), and a NaN ratio makes MATLAB's `min` return the first grid point.
    fn fit(&self) -> AggdFit {
        let n = self.n as f64;
        let leftstd = (self.sq_neg / self.n_neg as f64).sqrt();
        let rightstd = (self.sq_pos / self.n_pos as f64).sqrt();
        let gammahat = leftstd / rightstd;
        let mean_abs = self.abs_sum / n;
        let rhat = mean_abs * mean_abs / ((self.sq_neg + self.sq_pos) / n);
        let rhatnorm =
            (rhat * (gammahat.powi(3) + 1.0) * (gammahat + 1.0)) / (gammahat.powi(2) + 1.0).powi(2);
        let t = gamma_table();
        let idx = argmin_sq_diff(&t.r_gam, rhatnorm);
        AggdFit {
            alpha: t.gam[idx],
            betal: leftstd * t.beta_scale[idx],
            betar: rightstd * t.beta_scale[idx],
            gamma2_over_gamma1: t.g2_over_g1[idx],
        }
    }
}

/// MATLAB `[~, i] = min((r_gam - x).^2)`: the first index of the smallest value; NaNs are
/// ignored, and when everything is NaN, index 1 (here 0).
fn argmin_sq_diff(table: &[f64], x: f64) -> usize {
    let mut best = 0;
    let mut best_v = f64::NAN;
    for (i, r) in table.iter().enumerate() {
        let d = (r - x) * (r - x);
        // `!(d >= best_v)` would also take NaNs; this takes the first non-NaN, then strict
        // improvements only, so ties keep the earlier index as MATLAB does.
        if !d.is_nan() && (best_v.is_nan() || d < best_v) {
            best = i;
            best_v = d;
        }
    }
    best
}

/// The release's search grid `gam = 0.2:0.001:10` and what it derives from each point.
struct GammaTable {
    gam: Vec<f64>,
    /// gamma(2/g)^2 / (gamma(1/g) gamma(3/g)).
    r_gam: Vec<f64>,
    /// sqrt(gamma(1/g) / gamma(3/g)): betal = leftstd * this.
    beta_scale: Vec<f64>,
    /// gamma(2/g) / gamma(1/g).
    g2_over_g1: Vec<f64>,
}

fn gamma_table() -> &'static GammaTable {
    static TABLE: OnceLock<GammaTable> = OnceLock::new();
    TABLE.get_or_init(|| {
        let gam = matlab_colon(0.2, 0.001, 10.0);
        let mut r_gam = Vec::with_capacity(gam.len());
        let mut beta_scale = Vec::with_capacity(gam.len());
        let mut g2_over_g1 = Vec::with_capacity(gam.len());
        for &g in &gam {
            let (g1, g2, g3) = (gamma(1.0 / g), gamma(2.0 / g), gamma(3.0 / g));
            r_gam.push(g2 * g2 / (g1 * g3));
            beta_scale.push((g1 / g3).sqrt());
            g2_over_g1.push(g2 / g1);
        }
        GammaTable {
            gam,
            r_gam,
            beta_scale,
            g2_over_g1,
        }
    })
}

/// MATLAB's `a:d:b`: n = floor((b - a) / d + tolerance) + 1 points; the first half computed as
/// a + k d and the second half as b - (n - 1 - k) d, so both ends are exact (this is how MATLAB's
/// colon avoids accumulating error, and it decides which grid value ties resolve to).
fn matlab_colon(a: f64, d: f64, b: f64) -> Vec<f64> {
    let n = ((b - a) / d + 1e-10).floor() as usize + 1;
    let last = a + (n - 1) as f64 * d;
    let end = if (last - b).abs() < d * 1e-9 { b } else { last };
    (0..n)
        .map(|k| {
            if k < n / 2 {
                a + k as f64 * d
            } else {
                end - (n - 1 - k) as f64 * d
            }
        })
        .collect()
}

/// The gamma function (Lanczos approximation, g = 7, 9 terms; relative error ~1e-15 on the
/// arguments used here, 0.1..15). Rust's `f64::gamma` is not stable.
fn gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection: gamma(x) gamma(1 - x) = pi / sin(pi x).
        return std::f64::consts::PI / ((std::f64::consts::PI * x).sin() * gamma(1.0 - x));
    }
    let x = x - 1.0;
    let mut a = C[0];
    let t = x + G + 0.5;
    for (i, c) in C.iter().enumerate().skip(1) {
        a += c / (x + i as f64);
    }
    (2.0 * std::f64::consts::PI).sqrt() * t.powf(x + 0.5) * (-t).exp() * a
}

/// MATLAB `imresize(im, 0.5)` for a double image with even sides: bicubic (a = -0.5) with
/// antialiasing, i.e. the kernel stretched by 2 and scaled by 0.5, weights normalised per output
/// sample, symmetric (edge-repeating) boundary. Rows (dimension 1) are resized first, then
/// columns, as imresize orders equal scales.
fn imresize_half(im: &Plane) -> Plane {
    let (w, h) = (im.width, im.height);
    let (ow, oh) = (w.div_ceil(2), h.div_ceil(2));
    let (wy, iy) = contributions(h, oh, 0.5);
    let (wx, ix) = contributions(w, ow, 0.5);

    // Along dimension 1 (vertical): oh x w.
    let mut tmp = vec![0.0; oh * w];
    for (o, (ws, is)) in wy.iter().zip(&iy).enumerate() {
        let dst = &mut tmp[o * w..(o + 1) * w];
        for (wt, &src) in ws.iter().zip(is) {
            for (d, s) in dst.iter_mut().zip(im.row(src)) {
                *d += wt * s;
            }
        }
    }
    // Along dimension 2 (horizontal): oh x ow.
    let mut out = vec![0.0; oh * ow];
    for y in 0..oh {
        let row = &tmp[y * w..(y + 1) * w];
        for (x, (ws, is)) in wx.iter().zip(&ix).enumerate() {
            out[y * ow + x] = ws.iter().zip(is).map(|(wt, &s)| wt * row[s]).sum();
        }
    }
    Plane::new(ow, oh, out)
}

/// MATLAB's cubic convolution kernel (Keys, a = -0.5).
fn cubic(x: f64) -> f64 {
    let ax = x.abs();
    let (ax2, ax3) = (ax * ax, ax * ax * ax);
    if ax <= 1.0 {
        1.5 * ax3 - 2.5 * ax2 + 1.0
    } else if ax <= 2.0 {
        -0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0
    } else {
        0.0
    }
}

/// imresize's `contributions` for a shrinking bicubic resize with antialiasing: per output
/// sample, the weights and 0-based input indices (boundary mirrored with the edge sample
/// repeated). Taps whose weight is zero for every output sample are dropped, as MATLAB does.
fn contributions(in_len: usize, out_len: usize, scale: f64) -> (Vec<Vec<f64>>, Vec<Vec<usize>>) {
    let kernel_width = 4.0 / scale;
    let taps = kernel_width.ceil() as usize + 2;
    let mut weights = Vec::with_capacity(out_len);
    let mut indices = Vec::with_capacity(out_len);
    for x in 1..=out_len {
        // 1-based coordinates as in MATLAB.
        let u = x as f64 / scale + 0.5 * (1.0 - 1.0 / scale);
        let left = (u - kernel_width / 2.0).floor() as i64;
        let mut ws: Vec<f64> = (0..taps)
            .map(|k| scale * cubic(scale * (u - (left + k as i64) as f64)))
            .collect();
        let sum: f64 = ws.iter().sum();
        for w in &mut ws {
            *w /= sum;
        }
        let period = 2 * in_len as i64;
        let is: Vec<usize> = (0..taps)
            .map(|k| {
                // aux = [1:n, n:-1:1]; index = aux(mod(idx - 1, 2n) + 1), converted to 0-based.
                let m = (left + k as i64 - 1).rem_euclid(period);
                (if m < in_len as i64 { m } else { period - 1 - m }) as usize
            })
            .collect();
        weights.push(ws);
        indices.push(is);
    }
    let keep: Vec<usize> = (0..taps)
        .filter(|&k| weights.iter().any(|w: &Vec<f64>| w[k] != 0.0))
        .collect();
    let weights = weights
        .into_iter()
        .map(|w| keep.iter().map(|&k| w[k]).collect())
        .collect();
    let indices = indices
        .into_iter()
        .map(|i| keep.iter().map(|&k| i[k]).collect())
        .collect();
    (weights, indices)
}

// ---------------------------------------------------------------------------------------------
// Statistics

/// MATLAB `nanmean` (per feature, ignoring NaNs) and `nancov` (rows with any NaN dropped,
/// normalised by n - 1, or by 1 when a single row remains). Errors when either is undefined.
fn nan_mean_cov(feats: &[[f64; NFEAT]]) -> Result<([f64; NFEAT], Vec<f64>), MetricsError> {
    let mut mu = [0.0; NFEAT];
    for (f, m) in mu.iter_mut().enumerate() {
        let (sum, n) = feats
            .iter()
            .map(|r| r[f])
            .filter(|v| !v.is_nan())
            .fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
        if n == 0 {
            return Err(MetricsError::NiqeUndefined {
                reason: format!("feature {} is undefined in every block", f + 1),
            });
        }
        *m = sum / n as f64;
    }
    let complete: Vec<&[f64; NFEAT]> = feats
        .iter()
        .filter(|r| r.iter().all(|v| !v.is_nan()))
        .collect();
    if complete.is_empty() {
        return Err(MetricsError::NiqeUndefined {
            reason: format!("none of its {} blocks has complete statistics", feats.len()),
        });
    }
    let n = complete.len() as f64;
    let mut cmean = [0.0; NFEAT];
    for r in &complete {
        for (m, v) in cmean.iter_mut().zip(r.iter()) {
            *m += v;
        }
    }
    for m in &mut cmean {
        *m /= n;
    }
    let denom = if complete.len() > 1 { n - 1.0 } else { 1.0 };
    let mut cov = vec![0.0; NFEAT * NFEAT];
    for r in &complete {
        for a in 0..NFEAT {
            let da = r[a] - cmean[a];
            for b in a..NFEAT {
                cov[a * NFEAT + b] += da * (r[b] - cmean[b]);
            }
        }
    }
    for a in 0..NFEAT {
        for b in a..NFEAT {
            let v = cov[a * NFEAT + b] / denom;
            cov[a * NFEAT + b] = v;
            cov[b * NFEAT + a] = v;
        }
    }
    Ok((mu, cov))
}

/// Moore-Penrose pseudo-inverse as MATLAB's `pinv(A)`: singular values at or below
/// max(size(A)) * eps(max singular value) are treated as zero.
fn pinv(a: DMatrix<f64>) -> Result<DMatrix<f64>, MetricsError> {
    let (rows, cols) = a.shape();
    let svd = a.svd(true, true);
    let smax = svd.singular_values.iter().fold(0.0f64, |m, &s| m.max(s));
    let tol = rows.max(cols) as f64 * eps_of(smax);
    // Fails only without U and V, which svd(true, true) always computes; reported rather than
    // unwrapped all the same.
    svd.pseudo_inverse(tol)
        .map_err(|e| MetricsError::NiqeUndefined {
            reason: format!("pseudo-inverse failed: {e}"),
        })
}

/// MATLAB `eps(x)`: the spacing of doubles at |x|.
fn eps_of(x: f64) -> f64 {
    let x = x.abs();
    if x == 0.0 || !x.is_finite() {
        return f64::MIN_POSITIVE * f64::EPSILON;
    }
    let next = f64::from_bits(x.to_bits() + 1);
    next - x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gamma_matches_known_values() {
        assert!((gamma(1.0) - 1.0).abs() < 1e-14);
        assert!((gamma(5.0) - 24.0).abs() < 1e-12);
        assert!((gamma(0.5) - std::f64::consts::PI.sqrt()).abs() < 1e-14);
        assert!((gamma(15.0) / 87_178_291_200.0 - 1.0).abs() < 1e-13);
        assert!((gamma(0.1) / 9.513_507_698_668_732 - 1.0).abs() < 1e-13);
    }

    #[test]
    fn colon_grid_has_matlab_length_and_ends() {
        let g = matlab_colon(0.2, 0.001, 10.0);
        assert_eq!(g.len(), 9801);
        assert_eq!(g[0], 0.2);
        assert_eq!(g[9800], 10.0);
        assert!((g[4900] - 5.1).abs() < 1e-12);
    }

    #[test]
    fn aggd_fit_of_gaussian_like_sample_gives_alpha_near_two() {
        // Deterministic pseudo-Gaussian sample (sum of 12 uniforms minus 6) via an LCG.
        let mut s: u64 = 12345;
        let mut st = AggdStats::default();
        for _ in 0..20000 {
            let mut v = -6.0;
            for _ in 0..12 {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                v += (s >> 11) as f64 / (1u64 << 53) as f64;
            }
            st.push(v);
        }
        let fit = st.fit();
        assert!((fit.alpha - 2.0).abs() < 0.1, "{}", fit.alpha);
        // For a Gaussian, beta = sigma * sqrt(gamma(1/2) / gamma(3/2)) = sigma * sqrt(2).
        assert!((fit.betal - 2f64.sqrt()).abs() < 0.05, "{}", fit.betal);
    }

    #[test]
    fn aggd_fit_of_zeros_is_nan_with_first_grid_alpha() {
        let mut st = AggdStats::default();
        for _ in 0..10 {
            st.push(0.0);
        }
        let fit = st.fit();
        assert_eq!(fit.alpha, 0.2);
        assert!(fit.betal.is_nan() && fit.betar.is_nan());
    }

    #[test]
    fn imresize_half_weights_are_matlab_bicubic_antialiased() {
        let (w, _) = contributions(16, 8, 0.5);
        // Interior output: taps at distances 3.5, 2.5, 1.5, 0.5 (input pixels) on each side,
        // weights 0.5 * cubic(d / 2) normalised; the far taps at 4.5 are dropped.
        assert_eq!(w[3].len(), 8);
        let raw: Vec<f64> = [3.5, 2.5, 1.5, 0.5, -0.5, -1.5, -2.5, -3.5]
            .iter()
            .map(|d: &f64| 0.5 * cubic(d / 2.0))
            .collect();
        let s: f64 = raw.iter().sum();
        for (a, b) in w[3].iter().zip(&raw) {
            assert!((a - b / s).abs() < 1e-15);
        }
        // A constant image stays constant; a ramp's mean is preserved away from the edges.
        let p = Plane::new(16, 4, vec![3.0; 64]);
        let r = imresize_half(&p);
        assert_eq!((r.width, r.height), (8, 2));
        assert!(r.data.iter().all(|v| (v - 3.0).abs() < 1e-12));
    }

    #[test]
    fn contributions_mirror_at_edges() {
        let (_, i) = contributions(16, 8, 0.5);
        // First output: u = 1.5 (1-based), left = floor(1.5 - 4) = -3; taps -3..6 minus the
        // zero-weight ends -> -2..5, i.e. 0-based -3..4 mirrored: 2,1,0,0,1,2,3,4.
        assert_eq!(i[0], vec![2, 1, 0, 0, 1, 2, 3, 4]);
    }

    #[test]
    fn pinv_inverts_regular_and_handles_singular() {
        let a = DMatrix::from_row_slice(2, 2, &[4.0, 1.0, 1.0, 3.0]);
        let p = pinv(a.clone()).unwrap();
        let id = &a * &p;
        assert!((id[(0, 0)] - 1.0).abs() < 1e-12 && id[(0, 1)].abs() < 1e-12);
        // Rank one: pinv of [1 1; 1 1] is [1 1; 1 1] / 4.
        let s = pinv(DMatrix::from_element(2, 2, 1.0)).unwrap();
        assert!(s.iter().all(|v| (v - 0.25).abs() < 1e-12), "{s}");
    }

    #[test]
    fn nan_rows_are_dropped_from_covariance_only() {
        let mut a = [1.0; NFEAT];
        let mut b = [3.0; NFEAT];
        let mut c = [100.0; NFEAT];
        a[0] = 0.0;
        b[0] = 2.0;
        c[1] = f64::NAN;
        let (mu, cov) = nan_mean_cov(&[a, b, c]).unwrap();
        // Feature 1 mean over all three rows: (0 + 2 + 100) / 3 = 34.
        assert!((mu[0] - 34.0).abs() < 1e-12);
        // Feature 2 mean ignores the NaN: (1 + 3) / 2 = 2.
        assert!((mu[1] - 2.0).abs() < 1e-12);
        // Covariance from rows a and b only: var of {0, 2} with n - 1 = 2.
        assert!((cov[0] - 2.0).abs() < 1e-12);
        assert!(matches!(
            nan_mean_cov(&[c]),
            Err(MetricsError::NiqeUndefined { .. })
        ));
    }

    #[test]
    fn locate_prefers_explicit_then_env_then_shared() {
        let dir = tempfile::tempdir().unwrap();
        let f = |n: &str| {
            let p = dir.path().join(n);
            std::fs::write(&p, b"x").unwrap();
            p
        };
        let (e, v, s) = (f("e.mat"), f("v.mat"), f("s.mat"));
        let missing = dir.path().join("missing.mat");
        assert_eq!(locate_from(Some(&e), Some(&v), &s).unwrap(), e);
        assert_eq!(locate_from(None, Some(&v), &s).unwrap(), v);
        assert_eq!(locate_from(None, None, &s).unwrap(), s);
        // A named path that does not exist is an error, not a fallback.
        let err = locate_from(Some(&missing), Some(&v), &s).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("missing.mat"), "{msg}");
        assert!(msg.contains("utlive/niqe"), "{msg}");
        assert!(msg.contains("niqe_image_params.mat"), "{msg}");
        assert!(locate_from(None, Some(&missing), &s).is_err());
    }

    #[test]
    fn too_small_and_flat_images_are_errors() {
        let model = Niqe::from_parts(&[0.0; NFEAT], identity()).unwrap();
        let small = RgbImage::new(95, 200);
        assert!(matches!(
            model.score(&small),
            Err(MetricsError::TooSmall { min: 96, .. })
        ));
        let flat = RgbImage::from_pixel(96, 96, image::Rgb([9, 9, 9]));
        assert!(matches!(
            model.score(&flat),
            Err(MetricsError::NiqeUndefined { .. })
        ));
    }

    fn identity() -> Vec<f64> {
        (0..NFEAT * NFEAT)
            .map(|i| if i % (NFEAT + 1) == 0 { 1.0 } else { 0.0 })
            .collect()
    }

    #[test]
    fn asymmetric_covariance_is_rejected() {
        let mut c = identity();
        c[1] = 0.5;
        assert!(Niqe::from_parts(&[0.0; NFEAT], c).is_err());
        assert!(Niqe::from_parts(&[0.0; 35], identity()).is_err());
    }
}
