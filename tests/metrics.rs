//! Metrics against hand-worked values and against the shared data's published numbers
//! (`../shared/data`, read in place; tests needing it skip with a message when it is absent).

use std::path::{Path, PathBuf};
use std::time::Instant;

use derain::devdata::shared_path;
use derain::imageio::{list_images, load_rgb};
use derain::metrics::{MetricsError, Niqe, RgbImage, psnr_y, rgb_to_y, ssim_y};
use image::Rgb;

fn solid(w: u32, h: u32, c: [u8; 3]) -> RgbImage {
    RgbImage::from_pixel(w, h, Rgb(c))
}

/// Shared data path or a skip message.
fn shared(rel: &str) -> Option<PathBuf> {
    let p = shared_path(rel);
    if p.is_none() {
        eprintln!("SKIP: shared data {rel} not found (../shared/data or $DERAIN_DATA)");
    }
    p
}

#[test]
fn y_of_white_black_and_grey() {
    let y =
        rgb_to_y(&RgbImage::from_vec(3, 1, vec![255, 255, 255, 0, 0, 0, 128, 128, 128]).unwrap());
    assert!((y[0] - 235.0).abs() < 1e-9, "{}", y[0]);
    assert!((y[1] - 16.0).abs() < 1e-12, "{}", y[1]);
    // Grey 128: 16 + 219 * 128 / 255 = 16 + 109.92941 = 125.92941.
    assert!((y[2] - 125.929_411_764_7).abs() < 1e-9, "{}", y[2]);
}

#[test]
fn psnr_of_constant_images() {
    // Black vs white: Y differs by 235 - 16 = 219 everywhere, RMSE = 219,
    // PSNR = 20 log10(255 / 219) = 20 * 0.066096 = 1.32192 dB.
    let p = psnr_y(&solid(4, 5, [0; 3]), &solid(4, 5, [255; 3])).unwrap();
    assert!((p - 1.321_92).abs() < 1e-4, "{p}");
    // One pixel of four differs by grey 0 -> 255: MSE = 219^2 / 4, RMSE = 219 / 2 = 109.5,
    // PSNR = 20 log10(255 / 109.5) = 20 * 0.367126 = 7.34252 dB.
    let mut a = solid(2, 2, [0; 3]);
    a.put_pixel(1, 1, Rgb([255; 3]));
    let p = psnr_y(&a, &solid(2, 2, [0; 3])).unwrap();
    assert!((p - 7.342_52).abs() < 1e-4, "{p}");
    let same = psnr_y(&a, &a).unwrap();
    assert!(same.is_infinite() && same > 0.0);
}

#[test]
fn ssim_identical_and_constant() {
    // A textured image against itself: exactly 1 up to rounding.
    let img = RgbImage::from_fn(32, 24, |x, y| {
        Rgb([(x * 7 + y * 3) as u8, (x * y) as u8, 40])
    });
    let s = ssim_y(&img, &img).unwrap();
    assert!((s - 1.0).abs() < 1e-12, "{s}");
    // Black (Y 16) vs white (Y 235): variances and covariance are 0, so
    // SSIM = (2 * 16 * 235 + C1) / (16^2 + 235^2 + C1) * C2 / C2 with C1 = (0.01 * 255)^2 = 6.5025:
    // (7520 + 6.5025) / (256 + 55225 + 6.5025) = 7526.5025 / 55487.5025 = 0.1356432...
    let s = ssim_y(&solid(16, 12, [0; 3]), &solid(16, 12, [255; 3])).unwrap();
    let expected = 7526.5025 / 55487.5025;
    assert!((s - expected).abs() < 1e-9, "{s} vs {expected}");
    // A less trivial value must be below 1.
    let mut noisy = img.clone();
    noisy.put_pixel(10, 10, Rgb([255, 0, 255]));
    assert!(ssim_y(&noisy, &img).unwrap() < 1.0);
}

#[test]
fn size_mismatch_and_too_small() {
    let e = psnr_y(&solid(4, 4, [0; 3]), &solid(4, 5, [0; 3])).unwrap_err();
    assert!(
        matches!(
            e,
            MetricsError::SizeMismatch {
                a: (4, 4),
                b: (4, 5)
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("4x4 vs 4x5"), "{e}");
    let e = ssim_y(&solid(12, 12, [0; 3]), &solid(13, 12, [0; 3])).unwrap_err();
    assert!(matches!(e, MetricsError::SizeMismatch { .. }), "{e:?}");
    let e = ssim_y(&solid(10, 40, [0; 3]), &solid(10, 40, [0; 3])).unwrap_err();
    assert!(
        matches!(
            e,
            MetricsError::TooSmall {
                width: 10,
                height: 40,
                min: 11
            }
        ),
        "{e:?}"
    );
}

#[test]
fn rain12_psnr_and_ssim() {
    let (Some(rainy), Some(clean)) = (shared("pairs/rain12/rainy"), shared("pairs/rain12/clean"))
    else {
        return;
    };
    let inputs = list_images(&rainy).unwrap();
    assert_eq!(inputs.len(), 12, "Rain12 has 12 pairs");
    let (mut psnr, mut ssim) = (0.0, 0.0);
    for p in &inputs {
        let gt = clean.join(p.file_name().unwrap());
        let (a, b) = (load_rgb(p).unwrap(), load_rgb(&gt).unwrap());
        psnr += psnr_y(&a, &b).unwrap();
        ssim += ssim_y(&a, &b).unwrap();
    }
    let n = inputs.len() as f64;
    let (psnr, ssim) = (psnr / n, ssim / n);
    println!("Rain12 rainy vs clean: mean PSNR-Y {psnr:.4} dB, mean SSIM-Y {ssim:.4}");
    assert!((psnr - 30.14).abs() <= 0.02, "mean PSNR-Y {psnr}");
    assert!(ssim > 0.5 && ssim < 1.0, "mean SSIM-Y {ssim}");
}

#[test]
fn niqe_matches_release_scores() {
    let Some(dir) =
        shared("metrics/niqe/modelparameters.mat").and_then(|p| p.parent().map(Path::to_owned))
    else {
        return;
    };
    let model = Niqe::from_mat(&dir.join("modelparameters.mat")).unwrap();
    for (name, want) in [
        ("image1.png", 5.029),
        ("image2.png", 17.866),
        ("image3.png", 7.968),
        ("image4.png", 2.657),
    ] {
        let img = load_rgb(&dir.join(name)).unwrap();
        let t = Instant::now();
        let got = model.score(&img).unwrap();
        println!(
            "NIQE {name}: {got:.4} (release {want}, {:+.3}%) in {:.0} ms",
            (got / want - 1.0) * 100.0,
            t.elapsed().as_secs_f64() * 1e3
        );
        assert!((got / want - 1.0).abs() < 0.01, "{name}: {got} vs {want}");
    }
}

#[test]
fn niqe_speed_on_1280x720() {
    // The cost does not depend on the model's numbers, so a synthetic model keeps this test
    // independent of the shared data.
    let dir = tempfile::tempdir().unwrap();
    let mu = vec![1.0; 36];
    let path = write(
        dir.path(),
        "model.mat",
        &mat_v5(&[
            ("mu_prisparam", 1, 36, &mu),
            ("cov_prisparam", 36, 36, &identity36()),
        ]),
    );
    let model = Niqe::from_mat(&path).unwrap();
    // Deterministic texture: a smooth gradient plus hashed noise, so every block has statistics.
    let img = RgbImage::from_fn(1280, 720, |x, y| {
        let h = (x.wrapping_mul(2_654_435_761) ^ y.wrapping_mul(40_503)).rotate_left(13) % 64;
        let v = ((x + y) / 10 + h) as u8;
        Rgb([v, v.wrapping_add(17), v / 2])
    });
    let t = Instant::now();
    let score = model.score(&img).unwrap();
    let secs = t.elapsed().as_secs_f64();
    println!(
        "NIQE of a 1280x720 image: {score:.3} in {:.0} ms",
        secs * 1e3
    );
    // Speed is reported, not asserted: timings on a shared machine are noise, not test results.
    assert!(score.is_finite() && score > 0.0);
}

// ---------------------------------------------------------------------------------------------
// NIQE model files

/// A minimal uncompressed MATLAB v5 file holding real double matrices (column-major values), so
/// the loader can be tested on well-formed files that are not the LIVE model.
fn mat_v5(vars: &[(&str, usize, usize, &[f64])]) -> Vec<u8> {
    fn tag(out: &mut Vec<u8>, ty: u32, len: usize) {
        out.extend(ty.to_le_bytes());
        out.extend((len as u32).to_le_bytes());
    }
    fn pad8(out: &mut Vec<u8>) {
        while !out.len().is_multiple_of(8) {
            out.push(0);
        }
    }
    let mut out = format!(
        "{:<116}",
        "MATLAB 5.0 MAT-file, written by the derain tests"
    )
    .into_bytes();
    out.extend([0u8; 8]);
    out.extend(0x0100u16.to_le_bytes());
    out.extend(b"IM");
    for (name, rows, cols, values) in vars {
        assert_eq!(values.len(), rows * cols);
        let mut body = Vec::new();
        tag(&mut body, 6, 8); // miUINT32 array flags
        body.extend(6u32.to_le_bytes()); // mxDOUBLE_CLASS
        body.extend(0u32.to_le_bytes());
        tag(&mut body, 5, 8); // miINT32 dimensions
        body.extend((*rows as i32).to_le_bytes());
        body.extend((*cols as i32).to_le_bytes());
        tag(&mut body, 1, name.len()); // miINT8 name
        body.extend(name.as_bytes());
        pad8(&mut body);
        tag(&mut body, 9, 8 * values.len()); // miDOUBLE real part
        for v in values.iter() {
            body.extend(v.to_le_bytes());
        }
        tag(&mut out, 14, body.len()); // miMATRIX
        out.extend(body);
    }
    out
}

fn identity36() -> Vec<f64> {
    (0..36 * 36)
        .map(|i| if i % 37 == 0 { 1.0 } else { 0.0 })
        .collect()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn from_mat_reads_a_well_formed_file() {
    let dir = tempfile::tempdir().unwrap();
    let mu: Vec<f64> = (0..36).map(f64::from).collect();
    let p = write(
        dir.path(),
        "ok.mat",
        &mat_v5(&[
            ("mu_prisparam", 1, 36, &mu),
            ("cov_prisparam", 36, 36, &identity36()),
        ]),
    );
    let model = Niqe::from_mat(&p).unwrap();
    assert_eq!(model.mean()[35], 35.0);
    assert_eq!(model.covariance()[37], 1.0);
    assert_eq!(model.covariance()[1], 0.0);
    let img = RgbImage::from_fn(200, 100, |x, y| {
        Rgb([((x * x + 3 * y) % 251) as u8, (y * 2) as u8, 9])
    });
    assert!(model.score(&img).unwrap().is_finite());
}

#[test]
fn from_mat_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let check = |p: &Path, what: &str| {
        let err = Niqe::from_mat(p).unwrap_err();
        assert!(matches!(err, MetricsError::NiqeModel { .. }), "{err:?}");
        let msg = err.to_string();
        let name = p.file_name().unwrap().to_str().unwrap();
        assert!(msg.contains(name), "{msg}");
        assert!(msg.contains(what), "{msg}");
        assert!(msg.contains("utlive/niqe"), "{msg}");
    };
    check(&dir.path().join("absent.mat"), "cannot read");
    check(
        &write(
            dir.path(),
            "garbage.mat",
            b"this is not a MATLAB file at all",
        ),
        "not a readable MATLAB v5",
    );
    let mu = vec![0.0; 36];
    check(
        &write(dir.path(), "nokeys.mat", &mat_v5(&[("other", 1, 36, &mu)])),
        "no numeric variable mu_prisparam (variables found: other)",
    );
    check(
        &write(
            dir.path(),
            "nocov.mat",
            &mat_v5(&[("mu_prisparam", 1, 36, &mu)]),
        ),
        "cov_prisparam",
    );
    check(
        &write(
            dir.path(),
            "short.mat",
            &mat_v5(&[
                ("mu_prisparam", 1, 35, &mu[..35]),
                ("cov_prisparam", 36, 36, &identity36()),
            ]),
        ),
        "mu_prisparam is 1x35 but must be 1x36",
    );
    let mut cov = identity36();
    cov[40] = f64::NAN;
    check(
        &write(
            dir.path(),
            "nan.mat",
            &mat_v5(&[
                ("mu_prisparam", 1, 36, &mu),
                ("cov_prisparam", 36, 36, &cov),
            ]),
        ),
        "non-finite",
    );
}

#[test]
fn locate_names_what_it_tried() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("where-is-it.mat");
    let err = Niqe::locate(Some(&missing)).unwrap_err();
    assert!(
        matches!(&err, MetricsError::NiqeModelNotFound { tried } if tried == &vec![missing.clone()]),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("where-is-it.mat") && msg.contains("utlive/niqe"),
        "{msg}"
    );
    let present = write(dir.path(), "m.mat", b"x");
    assert_eq!(Niqe::locate(Some(&present)).unwrap(), present);
}
