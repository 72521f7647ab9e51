//! A single-channel f64 image and the separable Gaussian filtering that SSIM and NIQE need.
//!
//! Both metrics are defined by MATLAB reference code that filters with a normalised 2-D Gaussian
//! (`fspecial('gaussian', n, sigma)`). That kernel is the outer product of a normalised 1-D
//! Gaussian, so filtering once along rows and once along columns gives the same result (up to
//! rounding) at a fraction of the cost.

/// Row-major single-channel image of `f64` samples.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Plane {
    pub(crate) width: usize,
    pub(crate) height: usize,
    pub(crate) data: Vec<f64>,
}

impl Plane {
    /// Wraps row-major samples; `data.len()` must be `width * height`.
    pub(crate) fn new(width: usize, height: usize, data: Vec<f64>) -> Self {
        debug_assert_eq!(data.len(), width * height);
        Self {
            width,
            height,
            data,
        }
    }

    /// Row `y` as a slice.
    pub(crate) fn row(&self, y: usize) -> &[f64] {
        &self.data[y * self.width..(y + 1) * self.width]
    }

    /// The top-left `width` x `height` part (NIQE crops to whole blocks).
    pub(crate) fn crop(&self, width: usize, height: usize) -> Plane {
        debug_assert!(width <= self.width && height <= self.height);
        let mut data = Vec::with_capacity(width * height);
        for y in 0..height {
            data.extend_from_slice(&self.row(y)[..width]);
        }
        Plane::new(width, height, data)
    }

    /// Sample-wise product with another plane of the same size.
    pub(crate) fn mul(&self, other: &Plane) -> Plane {
        debug_assert_eq!((self.width, self.height), (other.width, other.height));
        let data = self
            .data
            .iter()
            .zip(&other.data)
            .map(|(a, b)| a * b)
            .collect();
        Plane::new(self.width, self.height, data)
    }
}

/// Normalised 1-D Gaussian of `size` taps (odd), as one factor of MATLAB's
/// `fspecial('gaussian', size, sigma)`. fspecial also zeroes taps below `eps * max`; for the
/// kernels used here (7 taps, sigma 7/6; 11 taps, sigma 1.5) no tap is that small, so that step is
/// omitted.
pub(crate) fn gaussian_kernel(size: usize, sigma: f64) -> Vec<f64> {
    let half = (size as f64 - 1.0) / 2.0;
    let mut k: Vec<f64> = (0..size)
        .map(|i| {
            let x = i as f64 - half;
            (-(x * x) / (2.0 * sigma * sigma)).exp()
        })
        .collect();
    let sum: f64 = k.iter().sum();
    for v in &mut k {
        *v /= sum;
    }
    k
}

/// How a filter treats the image border.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Border {
    /// MATLAB `filter2(..., 'valid')`: only positions where the kernel fits; the output shrinks
    /// by `kernel.len() - 1` in each direction.
    Valid,
    /// MATLAB `imfilter(..., 'replicate')`: same-size output, edge samples repeated outwards.
    Replicate,
}

/// Correlates `src` with the separable kernel `k` (x) `k`; `k` must be symmetric with an odd
/// number of taps. The caller guarantees that, for [`Border::Valid`], the image is at least as
/// large as the kernel.
///
/// Each output is summed as `k[r] x[c] + sum over j = r..1 of k[r - j] (x[c - j] + x[c + j])`,
/// the order scipy's `correlate1d` uses for symmetric kernels, columns first. The order matters
/// for NIQE: in flat image regions the local mean should equal the pixel exactly, and whether the
/// rounding leaves 0 or a tiny residual of either sign changes the fitted distributions.
/// Heavily posterised images (the release's image3.png) are sensitive to this; this order
/// reproduces the published reference scores.
pub(crate) fn filter_separable(src: &Plane, k: &[f64], border: Border) -> Plane {
    debug_assert!(k.len() % 2 == 1 && k.iter().eq(k.iter().rev()));
    let r = k.len() / 2;
    let (w, h) = (src.width, src.height);
    let (ow, oh) = match border {
        Border::Valid => (w + 1 - k.len(), h + 1 - k.len()),
        Border::Replicate => (w, h),
    };
    // Offset from output to input coordinates: the kernel centre sits `r` samples in for
    // 'valid' output.
    let off = match border {
        Border::Valid => r,
        Border::Replicate => 0,
    };

    // Vertical pass (along columns): `w` x `oh`. Whole rows at a time so the inner loops run
    // over contiguous memory.
    let src_row = |y: isize| -> &[f64] {
        let y = y.clamp(0, h as isize - 1) as usize;
        src.row(y)
    };
    let mut tmp = vec![0.0; w * oh];
    for y in 0..oh {
        let c = (y + off) as isize;
        let dst = &mut tmp[y * w..(y + 1) * w];
        for (d, s) in dst.iter_mut().zip(src_row(c)) {
            *d = k[r] * s;
        }
        for j in (1..=r).rev() {
            let kj = k[r - j];
            let (up, down) = (src_row(c - j as isize), src_row(c + j as isize));
            for ((d, a), b) in dst.iter_mut().zip(up).zip(down) {
                *d += (a + b) * kj;
            }
        }
    }

    // Horizontal pass (along rows): `ow` x `oh`.
    let mut out = vec![0.0; ow * oh];
    for y in 0..oh {
        let row = &tmp[y * w..(y + 1) * w];
        let dst = &mut out[y * ow..(y + 1) * ow];
        for (x, o) in dst.iter_mut().enumerate() {
            let c = x + off;
            let mut acc = k[r] * row[c];
            if c >= r && c + r < w {
                // Interior: no clamping (the common case, kept branch-free).
                for j in (1..=r).rev() {
                    acc += (row[c - j] + row[c + j]) * k[r - j];
                }
            } else {
                for j in (1..=r).rev() {
                    let a = row[c.saturating_sub(j)];
                    let b = row[(c + j).min(w - 1)];
                    acc += (a + b) * k[r - j];
                }
            }
            *o = acc;
        }
    }
    Plane::new(ow, oh, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaussian_kernel_is_normalised_and_symmetric() {
        let k = gaussian_kernel(7, 7.0 / 6.0);
        assert_eq!(k.len(), 7);
        assert!((k.iter().sum::<f64>() - 1.0).abs() < 1e-15);
        for i in 0..3 {
            assert!((k[i] - k[6 - i]).abs() < 1e-18);
        }
        assert!(k[3] > k[2] && k[2] > k[1]);
    }

    #[test]
    fn replicate_filter_matches_direct_2d_sum() {
        // A 5x4 ramp-like image; compare with a direct 2-D correlation using clamped indices.
        let (w, h) = (5usize, 4usize);
        let data: Vec<f64> = (0..w * h).map(|i| ((i * 7) % 11) as f64).collect();
        let src = Plane::new(w, h, data);
        let k = [0.25, 0.5, 0.25];
        let got = filter_separable(&src, &k, Border::Replicate);
        for y in 0..h {
            for x in 0..w {
                let mut s = 0.0;
                for (j, kj) in k.iter().enumerate() {
                    for (i, ki) in k.iter().enumerate() {
                        let sy = (y + j).saturating_sub(1).min(h - 1);
                        let sx = (x + i).saturating_sub(1).min(w - 1);
                        s += kj * ki * src.data[sy * w + sx];
                    }
                }
                assert!((got.data[y * w + x] - s).abs() < 1e-12, "({x},{y})");
            }
        }
    }

    #[test]
    fn valid_filter_shrinks_and_sums() {
        let src = Plane::new(4, 3, (0..12).map(f64::from).collect());
        let got = filter_separable(&src, &[1.0, 1.0, 1.0], Border::Valid);
        assert_eq!((got.width, got.height), (2, 1));
        // Top-left 3x3 of 0..12 laid out 4 wide: 0+1+2+4+5+6+8+9+10 = 45.
        assert_eq!(got.data, vec![45.0, 54.0]);
    }
}
