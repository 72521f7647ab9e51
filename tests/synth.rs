//! Rain synthesis: determinism, preset ordering, video motion, veil, ranges and errors, and a
//! check that the rain has the character of rain (thin, slanted, sparse, brightening streaks);
//! the driving effects: the atmospheric veil follows t, radial streaks point away from the
//! vanishing point, streak brightness follows the background, windshield drops stay put and
//! show a flipped, blurred view, drop density sets coverage, line negatives hold their lines.
//!
//! Uses the Udacity still `clean-driving/udacity/stills/test1.jpg` from the shared data folder
//! when present, else a generated gradient-and-shapes image. Set `DERAIN_SYNTH_PREVIEW` to a
//! folder to also write side-by-side preview PNGs of every preset there.

use derain::devdata::shared_path;
use derain::imageio::{RgbImage, hstack, load_rgb, save_png_atomic};
use derain::synth::{
    CameraMotion, Effects, LinePattern, Preset, RainParams, RainRenderer, Refraction, Scattering,
    SceneLine, StreakLayer, SynthError, Veil, WindshieldDrops, synthesize,
};

const STILL: &str = "clean-driving/udacity/stills/test1.jpg";

/// A generated clean frame: smooth gradients plus a few flat shapes, dashcam-ish proportions.
fn generated_clean(width: u32, height: u32) -> RgbImage {
    RgbImage::from_fn(width, height, |x, y| {
        let (fx, fy) = (x as f32 / width as f32, y as f32 / height as f32);
        let mut px = [
            (40.0 + 120.0 * fx) as u8,
            (60.0 + 100.0 * fy) as u8,
            (150.0 - 90.0 * fy) as u8,
        ];
        let in_box = (0.2..0.35).contains(&fx) && (0.55..0.75).contains(&fy);
        let dx = fx - 0.7;
        let dy = fy - 0.6;
        if in_box {
            px = [200, 40, 30];
        } else if dx * dx + dy * dy < 0.01 {
            px = [20, 20, 20];
        }
        image::Rgb(px)
    })
}

/// The real still when the shared data is present, else the generated frame.
fn clean_frame() -> RgbImage {
    match shared_path(STILL) {
        Some(p) => match load_rgb(&p) {
            Ok(img) => return img,
            Err(e) => eprintln!("cannot read {}: {e}; using a generated frame", p.display()),
        },
        None => {
            eprintln!("SKIP real frame: ../shared/data/{STILL} absent; using a generated frame")
        }
    }
    generated_clean(640, 360)
}

/// PSNR in dB over all RGB channels (8-bit peak).
fn psnr(a: &RgbImage, b: &RgbImage) -> f64 {
    assert_eq!(a.dimensions(), b.dimensions());
    let se: f64 = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2))
        .sum();
    let mse = se / a.as_raw().len() as f64;
    if mse == 0.0 {
        return f64::INFINITY;
    }
    10.0 * (255.0f64 * 255.0 / mse).log10()
}

fn single_layer(speed: f32, angle_deg: f32) -> RainParams {
    RainParams {
        layers: vec![StreakLayer {
            density: 3.0,
            length: 18.0,
            angle_deg,
            width: 1.4,
            brightness: 0.7,
            blur: 0.0,
            speed,
        }],
        ..RainParams::default()
    }
}

#[test]
fn same_seed_gives_identical_pairs_and_other_seeds_differ() {
    let clean = generated_clean(320, 180);
    for preset in Preset::ALL {
        let a = synthesize(&clean, preset, 42);
        let b = synthesize(&clean, preset, 42);
        assert_eq!(
            a.as_raw(),
            b.as_raw(),
            "{preset}: same seed must be byte-identical"
        );
        assert_ne!(
            a.as_raw(),
            synthesize(&clean, preset, 43).as_raw(),
            "{preset}: another seed must give other rain"
        );
    }
    // A pair can be rebuilt from (params, seed, frame) alone, through either output path.
    let params = Preset::Medium.params(9);
    let r1 = RainRenderer::new(params.clone(), 9, 320, 180);
    let r2 = RainRenderer::new(params, 9, 320, 180);
    assert_eq!(
        r1.render(&clean, 17).unwrap(),
        r2.render(&clean, 17).unwrap()
    );
    let clean_f: Vec<f32> = clean
        .as_raw()
        .iter()
        .map(|&v| f32::from(v) / 255.0)
        .collect();
    let mut o1 = vec![0.0; clean_f.len()];
    let mut o2 = vec![1.0; clean_f.len()];
    r1.render_f32(&clean_f, 17, &mut o1).unwrap();
    r2.render_f32(&clean_f, 17, &mut o2).unwrap();
    assert_eq!(o1, o2);
    assert_ne!(r1.rain_layer(17), r1.rain_layer(18));
}

#[test]
fn heavier_presets_give_lower_psnr() {
    let clean = clean_frame();
    let seeds = 0..4u64;
    let mean = |preset: Preset| {
        seeds
            .clone()
            .map(|s| psnr(&clean, &synthesize(&clean, preset, s)))
            .sum::<f64>()
            / seeds.clone().count() as f64
    };
    let (light, medium, heavy) = (
        mean(Preset::Light),
        mean(Preset::Medium),
        mean(Preset::Heavy),
    );
    // Mixed picks a recipe per seed, so it needs more seeds to show its spread.
    let mixed: Vec<f64> = (0..12u64)
        .map(|s| psnr(&clean, &synthesize(&clean, Preset::Mixed, s)))
        .collect();
    let mixed_min = mixed.iter().cloned().fold(f64::INFINITY, f64::min);
    let mixed_max = mixed.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    eprintln!(
        "mean PSNR vs clean: light {light:.2} dB, medium {medium:.2} dB, heavy {heavy:.2} dB; \
         mixed from {mixed_min:.2} to {mixed_max:.2} dB"
    );
    assert!(
        light > medium + 1.0 && medium > heavy + 1.0,
        "light {light:.2} > medium {medium:.2} > heavy {heavy:.2} expected"
    );
    // Light rain should be about as strong as the Rain12 benchmark (about 30 dB), heavy clearly
    // degrading; these bounds keep a re-tune from drifting into nonsense.
    assert!((26.0..36.0).contains(&light), "light {light:.2}");
    assert!((12.0..22.0).contains(&heavy), "heavy {heavy:.2}");
    assert!(
        mixed_min < medium - 2.0 && mixed_max > medium + 2.0,
        "mixed should span the presets: {mixed:.2?}"
    );
}

/// Mean squared difference between `b` and `a` shifted by (dx, dy) (b(x, y) vs a(x − dx, y −
/// dy)) over an interior window that every tested shift keeps inside the frame.
fn shifted_mse(a: &[f32], b: &[f32], w: usize, h: usize, dx: i64, dy: i64, m: usize) -> f64 {
    let mut se = 0.0f64;
    let mut n = 0usize;
    for y in m..h - m {
        for x in m..w - m {
            let (sx, sy) = (x as i64 - dx, y as i64 - dy);
            let d = f64::from(b[y * w + x]) - f64::from(a[sy as usize * w + sx as usize]);
            se += d * d;
            n += 1;
        }
    }
    se / n as f64
}

#[test]
fn video_rain_falls_by_the_layer_speed_along_the_streak() {
    let (w, h) = (240usize, 180usize);
    for (speed, angle) in [(8.0f32, 15.0f32), (6.0, -20.0), (11.0, 0.0)] {
        let r = RainRenderer::new(single_layer(speed, angle), 3, w as u32, h as u32);
        let rad = angle.to_radians();
        let expect = (
            (speed * rad.sin()).round() as i64,
            (speed * rad.cos()).round() as i64,
        );
        for t in [0u64, 5, 40] {
            let f0 = r.rain_layer(t).streaks;
            let f1 = r.rain_layer(t + 1).streaks;
            assert_ne!(f0, f1, "frame {} must differ from frame {t}", t + 1);
            let mut best = (f64::INFINITY, (0, 0));
            for dy in -4..=16 {
                for dx in -8..=8 {
                    let e = shifted_mse(&f0, &f1, w, h, dx, dy, 20);
                    if e < best.0 {
                        best = (e, (dx, dy));
                    }
                }
            }
            let (bx, by) = best.1;
            assert!(
                (bx - expect.0).abs() <= 1 && (by - expect.1).abs() <= 1,
                "speed {speed} angle {angle} frame {t}: best shift {:?}, expected {expect:?}",
                best.1
            );
            // The match is real, not the least bad of many poor ones.
            let unshifted = shifted_mse(&f0, &f1, w, h, 0, 0, 20);
            assert!(best.0 < 0.3 * unshifted, "{} vs {unshifted}", best.0);
        }
    }
}

#[test]
fn veil_brightens_towards_the_far_top() {
    let (w, h) = (160u32, 120u32);
    let params = RainParams {
        layers: vec![],
        veil: Some(Veil {
            beta: 1.5,
            atmosphere: 0.5,
        }),
        ..RainParams::default()
    };
    let r = RainRenderer::new(params, 1, w, h);
    let clean = RgbImage::from_pixel(w, h, image::Rgb([90, 100, 110]));
    let out = r.render(&clean, 0).unwrap();
    let band_mean = |y0: u32, y1: u32| {
        let mut sum = 0u64;
        for y in y0..y1 {
            for x in 0..w {
                sum += out
                    .get_pixel(x, y)
                    .0
                    .iter()
                    .map(|&v| u64::from(v))
                    .sum::<u64>();
            }
        }
        sum as f64 / f64::from((y1 - y0) * w * 3)
    };
    let (top, mid, bottom) = (band_mean(0, 30), band_mean(45, 75), band_mean(90, 120));
    assert!(
        top > mid + 5.0 && mid > bottom + 5.0,
        "top {top:.1} > mid {mid:.1} > bottom {bottom:.1} expected"
    );
    // No streaks in a veil-only set, and the veil is constant along rows.
    let layer = r.rain_layer(0);
    assert!(layer.streaks.iter().all(|&s| s == 0.0));
    for row in layer.veil.chunks_exact(w as usize) {
        assert!(row.iter().all(|&a| a == row[0]));
    }
    assert!(layer.veil[0] > layer.veil[layer.veil.len() - 1]);
}

#[test]
fn output_stays_in_range_and_size() {
    let clean = generated_clean(200, 150);
    let white = RgbImage::from_pixel(200, 150, image::Rgb([255, 255, 255]));
    for preset in Preset::ALL {
        // The driving effects may darken (a grey veil over white, drops, refraction); the
        // streak presets only add light.
        let brightens = preset != Preset::Driving;
        let r = RainRenderer::new(preset.params(5), 5, 200, 150);
        for img in [&clean, &white] {
            let out = r.render(img, 2).unwrap();
            assert_eq!(out.dimensions(), (200, 150));
            // Rain only adds light: no channel gets darker.
            for (o, c) in out.as_raw().iter().zip(img.as_raw()) {
                assert!(!brightens || o >= c, "{preset}: {o} < {c}");
            }
        }
        let clean_f: Vec<f32> = clean
            .as_raw()
            .iter()
            .map(|&v| f32::from(v) / 255.0)
            .collect();
        let mut out_f = vec![f32::NAN; clean_f.len()];
        r.render_f32(&clean_f, 2, &mut out_f).unwrap();
        assert!(out_f.iter().all(|v| (0.0..=1.0).contains(v)), "{preset}");
        // The float path is the 8-bit path without the rounding.
        let out_u8 = r.render(&clean, 2).unwrap();
        for (f, u) in out_f.iter().zip(out_u8.as_raw()) {
            assert!((f * 255.0 - f32::from(*u)).abs() <= 0.5 + 1e-3);
        }
        // Out-of-range float input is clamped too.
        let hot = vec![3.0f32; clean_f.len()];
        r.render_f32(&hot, 0, &mut out_f).unwrap();
        assert!(out_f.iter().all(|&v| (0.0..=1.0).contains(&v)));
        assert!(!brightens || out_f.iter().all(|&v| v == 1.0));
    }
}

#[test]
fn wrong_size_input_is_an_error() {
    let r = RainRenderer::new(Preset::Light.params(0), 0, 64, 48);
    let err = r.render(&RgbImage::new(48, 64), 0).unwrap_err();
    assert_eq!(
        err,
        SynthError::SizeMismatch {
            width: 64,
            height: 48,
            got_width: 48,
            got_height: 64
        }
    );
    let msg = err.to_string();
    assert!(msg.contains("48x64") && msg.contains("64x48"), "{msg}");

    let mut out = vec![0.0; 64 * 48 * 3];
    let err = r.render_f32(&[0.5; 10], 0, &mut out).unwrap_err();
    assert!(matches!(
        err,
        SynthError::BufferLength {
            what: "clean_rgb",
            expected: 9216,
            got: 10
        }
    ));
    let clean = vec![0.5; 64 * 48 * 3];
    let err = r.render_f32(&clean, 0, &mut out[1..]).unwrap_err();
    assert!(err.to_string().contains("out"), "{err}");
}

/// Luma difference rainy − clean per pixel, in 8-bit levels.
fn luma_diff(rainy: &RgbImage, clean: &RgbImage) -> Vec<f32> {
    let luma =
        |p: &[u8]| 0.299 * f32::from(p[0]) + 0.587 * f32::from(p[1]) + 0.114 * f32::from(p[2]);
    rainy
        .as_raw()
        .chunks_exact(3)
        .zip(clean.as_raw().chunks_exact(3))
        .map(|(r, c)| luma(r) - luma(c))
        .collect()
}

/// Normalised autocorrelation of `d` at offset (ox, oy) in pixels (bilinear for fractions).
fn autocorr(d: &[f32], w: usize, h: usize, ox: f32, oy: f32) -> f64 {
    let mean = d.iter().map(|&v| f64::from(v)).sum::<f64>() / d.len() as f64;
    let var = d
        .iter()
        .map(|&v| (f64::from(v) - mean).powi(2))
        .sum::<f64>()
        / d.len() as f64;
    let at = |x: f32, y: f32| {
        let (x0, y0) = (x.floor(), y.floor());
        let (fx, fy) = (f64::from(x - x0), f64::from(y - y0));
        let i = |xx: f32, yy: f32| f64::from(d[yy as usize * w + xx as usize]);
        i(x0, y0) * (1.0 - fx) * (1.0 - fy)
            + i(x0 + 1.0, y0) * fx * (1.0 - fy)
            + i(x0, y0 + 1.0) * (1.0 - fx) * fy
            + i(x0 + 1.0, y0 + 1.0) * fx * fy
    };
    let m = 12usize;
    let mut sum = 0.0;
    let mut n = 0usize;
    for y in m..h - m {
        for x in m..w - m {
            let v = f64::from(d[y * w + x]) - mean;
            sum += v * (at(x as f32 + ox, y as f32 + oy) - mean);
            n += 1;
        }
    }
    sum / n as f64 / var
}

#[test]
fn synthetic_rain_over_a_real_frame_looks_like_rain() {
    let clean = clean_frame();
    let (w, h) = (clean.width() as usize, clean.height() as usize);
    for preset in [Preset::Light, Preset::Medium, Preset::Heavy] {
        for seed in [1u64, 2] {
            let params = preset.params(seed);
            let r = RainRenderer::new(params.clone(), seed, w as u32, h as u32);
            // Streaks alone (no veil), so the statistics describe the streaks.
            let streaks_only = RainRenderer::new(
                RainParams {
                    veil: None,
                    ..params.clone()
                },
                seed,
                w as u32,
                h as u32,
            );
            let d = luma_diff(&streaks_only.render(&clean, 0).unwrap(), &clean);
            // Sparse bright streaks over mostly untouched pixels, not a uniform grey wash and
            // not saturating the frame.
            let mut sorted = d.clone();
            sorted.sort_by(f32::total_cmp);
            let q = |p: f64| sorted[((sorted.len() - 1) as f64 * p) as usize];
            let (median, p99) = (q(0.5), q(0.99));
            let touched = d.iter().filter(|&&v| v > 3.0).count() as f64 / d.len() as f64;
            eprintln!(
                "{preset}/{seed}: luma change median {median:.1}, p99 {p99:.1} levels, \
                 {:.1}% pixels touched",
                100.0 * touched
            );
            assert!(
                median < 10.0 && median < 0.2 * p99,
                "{preset}/{seed}: median change {median} levels (p99 {p99})"
            );
            assert!(
                p99 > 25.0,
                "{preset}/{seed}: 99th percentile change {p99} levels"
            );
            assert!(
                (0.01..0.7).contains(&touched),
                "{preset}/{seed}: {touched} touched"
            );
            // Oriented: the change correlates strongly along the mean streak direction and
            // weakly across it (thin lines, not dots or blobs).
            let angle =
                params.layers.iter().map(|l| l.angle_deg).sum::<f32>() / params.layers.len() as f32;
            let (s, c) = angle.to_radians().sin_cos();
            let lag = 4.0;
            let along = autocorr(&d, w, h, lag * s, lag * c);
            let across = autocorr(&d, w, h, lag * c, -lag * s);
            eprintln!(
                "{preset}/{seed}: autocorrelation at 4 px along {along:.2}, across {across:.2}"
            );
            assert!(
                along > 0.5 && across < 0.35 && along > 2.0 * across,
                "{preset}/{seed}: autocorrelation along {along:.2}, across {across:.2}"
            );
            // The full rain (with any veil) only brightens.
            let full = r.render(&clean, 0).unwrap();
            assert!(
                full.as_raw()
                    .iter()
                    .zip(clean.as_raw())
                    .all(|(o, c)| o >= c)
            );
        }
    }
}

/// Writes clean | light | medium | heavy | mixed strips (and three consecutive heavy video
/// frames) to `$DERAIN_SYNTH_PREVIEW` for looking at; does nothing without that variable.
#[test]
fn preview_pngs_when_asked() {
    let Some(dir) = std::env::var_os("DERAIN_SYNTH_PREVIEW") else {
        eprintln!("SKIP preview: set DERAIN_SYNTH_PREVIEW=<folder> to write preview PNGs");
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    std::fs::create_dir_all(&dir).unwrap();
    let clean = clean_frame();
    for seed in [1u64, 2] {
        for preset in Preset::ALL {
            let rainy = synthesize(&clean, preset, seed);
            let name = format!("{preset}-{seed}.png");
            save_png_atomic(&hstack(&[&clean, &rainy]), &dir.join(&name)).unwrap();
            // A 1:1 crop (sky, trees and road) to judge streak shape at full resolution.
            let (cw, ch) = (clean.width().min(640), clean.height().min(400));
            let crop = image::imageops::crop_imm(&rainy, clean.width() - cw, 0, cw, ch).to_image();
            save_png_atomic(&crop, &dir.join(format!("{preset}-{seed}-crop.png"))).unwrap();
            eprintln!("{name}: PSNR {:.2} dB", psnr(&clean, &rainy));
        }
    }
    // 256x256 crops as the trainer renders them (mixed preset, one renderer per crop).
    let crop = image::imageops::crop_imm(&clean, clean.width() / 2, clean.height() / 3, 256, 256)
        .to_image();
    let crops: Vec<RgbImage> = (0..5)
        .map(|s| synthesize(&crop, Preset::Mixed, s))
        .collect();
    let refs: Vec<&RgbImage> = std::iter::once(&crop).chain(&crops).collect();
    save_png_atomic(&hstack(&refs), &dir.join("mixed-crops-256.png")).unwrap();
    let r = RainRenderer::new(Preset::Heavy.params(1), 1, clean.width(), clean.height());
    for t in 0..3 {
        let img = r.render(&clean, t).unwrap();
        save_png_atomic(&img, &dir.join(format!("heavy-video-{t}.png"))).unwrap();
    }
}

/// An 8-bit frame as HWC floats in [0, 1].
fn to_f32(img: &RgbImage) -> Vec<f32> {
    img.as_raw().iter().map(|&v| f32::from(v) / 255.0).collect()
}

/// Renders `params` over float frame `clean` (w x h), frame `t`.
fn render_f(params: RainParams, seed: u64, clean: &[f32], w: u32, h: u32, t: u64) -> Vec<f32> {
    let r = RainRenderer::new(params, seed, w, h);
    let mut out = vec![0.0; clean.len()];
    r.render_f32(clean, t, &mut out).unwrap();
    out
}

fn scattering(beta: f32) -> Scattering {
    Scattering {
        beta,
        airlight: [0.62, 0.66, 0.72],
        sky_match: 0.5,
        vanishing_point: [0.5, 0.4],
        scene_weight: 0.6,
    }
}

#[test]
fn atmospheric_veil_follows_the_transmission() {
    let (w, h) = (160u32, 120u32);
    let clean = to_f32(&generated_clean(w, h));
    let sc = scattering(1.8);
    let params = RainParams {
        scattering: Some(sc.clone()),
        ..RainParams::default()
    };
    let out = render_f(params, 3, &clean, w, h, 0);
    let d = sc.depth(&clean, w, h);
    let a = sc.airlight_for(&clean, w, h);
    assert_eq!(d.len(), (w * h) as usize);
    // Not white, and its brightness moved towards the frame's sky.
    assert!(a.iter().all(|&c| c < 0.95) && a[2] > a[0], "{a:?}");
    // I = J·t + A·(1 − t) at every pixel.
    for (i, (&dp, (o, j))) in d
        .iter()
        .zip(out.chunks_exact(3).zip(clean.chunks_exact(3)))
        .enumerate()
    {
        let t = (-1.8 * dp).exp();
        for c in 0..3 {
            let want = j[c] * t + a[c] * (1.0 - t);
            assert!((o[c] - want).abs() < 1e-4, "pixel {i}: {} vs {want}", o[c]);
        }
    }
    // Where the proxy is deeper the frame is closer to A: compare the deepest and the nearest
    // quarter of the pixels.
    let mut order: Vec<usize> = (0..d.len()).collect();
    order.sort_by(|&x, &y| d[x].total_cmp(&d[y]));
    let q = order.len() / 4;
    let dist = |idx: &[usize]| {
        idx.iter()
            .map(|&i| (0..3).map(|c| (out[i * 3 + c] - a[c]).abs()).sum::<f32>())
            .sum::<f32>()
            / idx.len() as f32
    };
    let (near, far) = (dist(&order[..q]), dist(&order[order.len() - q..]));
    assert!(
        far < 0.5 * near,
        "far {far:.3} vs near {near:.3} from the airlight"
    );
    // The depth is not a plain vertical gradient: it varies along rows.
    let row = &d[(h as usize / 2) * w as usize..][..w as usize];
    let spread =
        row.iter().cloned().fold(f32::MIN, f32::max) - row.iter().cloned().fold(f32::MAX, f32::min);
    assert!(
        spread > 0.2,
        "depth along the middle row varies by {spread}"
    );
    // β = 0: the frame is unchanged, through both paths.
    let none = RainParams {
        scattering: Some(scattering(0.0)),
        ..RainParams::default()
    };
    assert_eq!(render_f(none.clone(), 3, &clean, w, h, 0), clean);
    let img = generated_clean(w, h);
    assert_eq!(
        RainRenderer::new(none, 3, w, h).render(&img, 0).unwrap(),
        img
    );
}

/// The orientation (radians, mod π) along which the fields correlate best with themselves at
/// a lag of a few pixels inside a window, and how much better than across it (the ratio of the
/// best to the worst correlation's distance from 1, > 1 for oriented lines).
fn orientation(fields: &[Vec<f32>], w: usize, x0: usize, y0: usize, size: usize) -> (f64, f64) {
    let lag = 5.0f64;
    let mut best = (f64::NEG_INFINITY, 0.0f64);
    let mut worst = f64::INFINITY;
    for step in 0..90 {
        let a = (step as f64 * 2.0).to_radians();
        let (ox, oy) = (lag * a.cos(), lag * a.sin());
        let (mut sab, mut saa, mut sbb) = (0.0f64, 0.0f64, 0.0f64);
        for s in fields {
            let at = |x: f64, y: f64| {
                let (xf, yf) = (x.floor(), y.floor());
                let (fx, fy) = (x - xf, y - yf);
                let i = |xx: f64, yy: f64| f64::from(s[yy as usize * w + xx as usize]);
                i(xf, yf) * (1.0 - fx) * (1.0 - fy)
                    + i(xf + 1.0, yf) * fx * (1.0 - fy)
                    + i(xf, yf + 1.0) * (1.0 - fx) * fy
                    + i(xf + 1.0, yf + 1.0) * fx * fy
            };
            for y in y0..y0 + size {
                for x in x0..x0 + size {
                    let v = f64::from(s[y * w + x]);
                    let u = at(x as f64 + ox, y as f64 + oy);
                    sab += v * u;
                    saa += v * v;
                    sbb += u * u;
                }
            }
        }
        let c = sab / (saa * sbb).sqrt().max(1e-12);
        if c > best.0 {
            best = (c, a);
        }
        worst = worst.min(c);
    }
    (best.1, best.0 / worst.max(1e-6))
}

fn angle_diff(a: f64, b: f64) -> f64 {
    let pi = std::f64::consts::PI;
    let d = (a - b).rem_euclid(pi);
    d.min(pi - d)
}

#[test]
fn radial_streaks_point_away_from_the_vanishing_point_and_lengthen_outwards() {
    let (w, h) = (320usize, 240usize);
    let mut params = single_layer(0.0, 0.0);
    params.layers[0].density = 1.0;
    params.layers[0].length = 8.0;
    params.motion = Some(CameraMotion {
        vanishing_point: [0.45, 0.4],
        flow: 10.0,
    });
    let r = RainRenderer::new(params, 7, w as u32, h as u32);
    // Radial streaks are drawn afresh each frame: several frames give many streaks per window.
    let frames: Vec<Vec<f32>> = (0..8).map(|t| r.rain_layer(t).streaks).collect();
    let s = &frames[0];
    let (vx, vy) = (0.45 * w as f64, 0.4 * h as f64);
    let size = 48;
    let mut checked = 0;
    for (cx, cy) in [
        (30, 30),
        (160, 26),
        (290, 30),
        (290, 120),
        (290, 205),
        (160, 205),
        (30, 205),
        (30, 110),
    ] {
        let (x0, y0) = (cx - size / 2, cy - size / 2);
        let (found, coherence) = orientation(&frames, w, x0, y0, size);
        let want = (cy as f64 - vy).atan2(cx as f64 - vx);
        let diff = angle_diff(found, want).to_degrees();
        // The fall (one length down) tilts a streak off the radial flow (ten lengths per
        // half-diagonal) by up to atan(1 / (10·r)); allow that plus a few degrees of sampling.
        let r = ((cx as f64 - vx).powi(2) + (cy as f64 - vy).powi(2)).sqrt() / 200.0;
        let allowed = (1.0 / (10.0 * r)).atan().to_degrees() + 5.0;
        eprintln!(
            "window ({cx}, {cy}): {:.1}° vs {:.1}°, allowed {allowed:.1}°, coherence {coherence:.2}",
            found.to_degrees(),
            want.to_degrees()
        );
        assert!(
            diff < allowed && coherence > 1.5,
            "window at ({cx}, {cy}): streaks at {:.1}°, away from the vanishing point is {:.1}° \
             (along/across {coherence:.2})",
            found.to_degrees(),
            want.to_degrees()
        );
        checked += 1;
    }
    assert_eq!(checked, 8);
    // Longer towards the edges: at the same drop density, more of the frame is lit far from
    // the vanishing point than near it.
    let lit = |near: bool| {
        let (mut n, mut hit) = (0usize, 0usize);
        for y in 0..h {
            for x in 0..w {
                let r = ((x as f64 - vx).powi(2) + (y as f64 - vy).powi(2)).sqrt() / 200.0;
                if (near && r < 0.25) || (!near && r > 0.6) {
                    n += 1;
                    hit += usize::from(s[y * w + x] > 0.05);
                }
            }
        }
        hit as f64 / n as f64
    };
    let (inner, outer) = (lit(true), lit(false));
    assert!(
        outer > 1.5 * inner,
        "lit share near the edges {outer:.3}, near the centre {inner:.3}"
    );
    // Without motion the same layer falls straight down.
    let (down, _) = orientation(
        &[
            RainRenderer::new(single_layer(0.0, 0.0), 7, w as u32, h as u32)
                .rain_layer(0)
                .streaks,
        ],
        w,
        140,
        100,
        60,
    );
    assert!(angle_diff(down, std::f64::consts::FRAC_PI_2).to_degrees() < 10.0);
}

#[test]
fn streaks_refract_the_environment_bright_on_dark_faint_on_sky() {
    // Top half bright sky, bottom half dark road.
    let (w, h) = (200u32, 160u32);
    let clean: Vec<f32> = (0..(w * h) as usize)
        .flat_map(|i| {
            let v = if (i / w as usize) < (h / 2) as usize {
                0.9
            } else {
                0.08
            };
            [v, v, v]
        })
        .collect();
    let mut screen = single_layer(0.0, 5.0);
    screen.layers[0].density = 6.0;
    let mut refr = screen.clone();
    refr.refraction = Some(Refraction {
        strength: 1.0,
        gain: 1.0,
    });
    let change = |params: RainParams, top: bool| {
        let out = render_f(params, 11, &clean, w, h, 0);
        let half = (w * h / 2) as usize * 3;
        let (o, c) = if top {
            (&out[..half], &clean[..half])
        } else {
            (&out[half..], &clean[half..])
        };
        o.iter()
            .zip(c)
            .map(|(a, b)| f64::from((a - b).abs()))
            .sum::<f64>()
            / o.len() as f64
    };
    let (s_top, s_bottom) = (change(screen.clone(), true), change(screen, false));
    let (r_top, r_bottom) = (change(refr.clone(), true), change(refr, false));
    eprintln!(
        "mean change: screen sky {s_top:.4} road {s_bottom:.4}; refraction sky {r_top:.4} road {r_bottom:.4}"
    );
    assert!(
        r_bottom > 10.0 * r_top,
        "refracting streaks: road {r_bottom} vs sky {r_top}"
    );
    assert!(
        r_top < 0.5 * s_top,
        "over the sky refracting streaks fade: {r_top} vs {s_top}"
    );
    assert!(
        r_bottom > 0.5 * s_bottom,
        "over the road they stay: {r_bottom} vs {s_bottom}"
    );
}

fn drops(coverage: f32, lifetime: u32) -> RainParams {
    RainParams {
        drops: Some(WindshieldDrops {
            coverage,
            radius: [3.0, 10.0],
            field: 3.0,
            blur: 2.0,
            edge: 1.0,
            lifetime,
        }),
        ..RainParams::default()
    }
}

#[test]
fn windshield_drops_stay_put_and_change_slowly() {
    let (w, h) = (200u32, 150u32);
    let still = RainRenderer::new(drops(0.15, 0), 4, w, h);
    let first = still.windshield_drops(0);
    assert!(first.len() > 20, "{} drops", first.len());
    for t in [1, 2, 57, 10_000] {
        assert_eq!(still.windshield_drops(t), first, "frame {t}");
    }
    // Over the same scene, consecutive frames are the same picture.
    let clean = generated_clean(w, h);
    assert_eq!(
        still.render(&clean, 4).unwrap(),
        still.render(&clean, 5).unwrap()
    );
    // With a lifetime, a few drops move per frame, and over many lifetimes the set is new.
    let slow = RainRenderer::new(drops(0.15, 100), 4, w, h);
    let same = |a: u64, b: u64| {
        let (x, y) = (slow.windshield_drops(a), slow.windshield_drops(b));
        x.iter().zip(&y).filter(|(p, q)| p == q).count() as f64 / x.len() as f64
    };
    for t in [0, 30, 99, 250] {
        assert!(
            same(t, t + 1) > 0.9,
            "frame {t} to {}: {:.2} kept",
            t + 1,
            same(t, t + 1)
        );
    }
    assert!(
        same(0, 1000) < 0.15,
        "after 10 lifetimes {:.2} kept",
        same(0, 1000)
    );
}

/// A smooth, asymmetric texture (a few slanted sinusoids), in [0.2, 0.8].
fn smooth(x: f32, y: f32) -> f32 {
    let v = (x * 0.11 + y * 0.04).sin()
        + 0.7 * (x * 0.03 - y * 0.09 + 1.3).sin()
        + 0.5 * (y * 0.07 + 0.4).cos();
    0.5 + 0.3 * v / 2.2
}

fn pearson(a: &[f32], b: &[f32]) -> f64 {
    let n = a.len() as f64;
    let (ma, mb) = (
        a.iter().map(|&v| f64::from(v)).sum::<f64>() / n,
        b.iter().map(|&v| f64::from(v)).sum::<f64>() / n,
    );
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (&x, &y) in a.iter().zip(b) {
        let (dx, dy) = (f64::from(x) - ma, f64::from(y) - mb);
        sab += dx * dy;
        saa += dx * dx;
        sbb += dy * dy;
    }
    sab / (saa * sbb).sqrt().max(1e-12)
}

#[test]
fn a_drop_shows_a_flipped_blurred_view_of_the_scene_around_it() {
    let (w, h) = (240usize, 200usize);
    // The smooth texture plus a fine checkerboard that a blurred view loses.
    let clean: Vec<f32> = (0..w * h)
        .flat_map(|i| {
            let (x, y) = ((i % w) as f32, (i / w) as f32);
            let fine = if (i % w + i / w) % 2 == 0 {
                0.08
            } else {
                -0.08
            };
            let v = smooth(x, y) + fine;
            [v, v, v]
        })
        .collect();
    let field = 2.0f32;
    let params = RainParams {
        drops: Some(WindshieldDrops {
            coverage: 0.08,
            radius: [14.0, 14.0],
            field,
            blur: 2.0,
            edge: 1.0,
            lifetime: 0,
        }),
        ..RainParams::default()
    };
    let r = RainRenderer::new(params.clone(), 9, w as u32, h as u32);
    let mut out = vec![0.0; clean.len()];
    r.render_f32(&clean, 0, &mut out).unwrap();
    let list = r.windshield_drops(0);
    let mut tested = 0;
    for (k, d) in list.iter().enumerate() {
        // Only drops well inside the frame and clear of the others.
        // What the inner half of the drop refracts must lie inside the frame.
        let margin = d.rx.max(d.ry) * (field * 0.6).max(1.0) + 3.0;
        let inside =
            d.x > margin && d.y > margin && d.x < w as f32 - margin && d.y < h as f32 - margin;
        let alone = list.iter().enumerate().all(|(j, e)| {
            j == k
                || ((e.x - d.x).powi(2) + (e.y - d.y).powi(2)).sqrt()
                    > d.rx.max(d.ry) + e.rx.max(e.ry) + 2.0
        });
        if !(inside && alone) {
            continue;
        }
        let (mut seen, mut flipped, mut unflipped) = (vec![], vec![], vec![]);
        let (mut lap_in, mut lap_clean) = (0.0f64, 0.0f64);
        for y in (d.y - d.ry) as usize..=(d.y + d.ry) as usize {
            for x in (d.x - d.rx) as usize..=(d.x + d.rx) as usize {
                let (ox, oy) = (x as f32 - d.x, y as f32 - d.y);
                if (ox / d.rx).powi(2) + (oy / d.ry).powi(2) > 0.25 {
                    continue;
                }
                seen.push(out[(y * w + x) * 3]);
                flipped.push(smooth(d.x - field * ox, d.y - field * oy));
                unflipped.push(smooth(d.x + field * ox, d.y + field * oy));
                let lap = |img: &[f32]| {
                    let at = |xx: usize, yy: usize| f64::from(img[(yy * w + xx) * 3]);
                    (4.0 * at(x, y) - at(x - 1, y) - at(x + 1, y) - at(x, y - 1) - at(x, y + 1))
                        .abs()
                };
                lap_in += lap(&out);
                lap_clean += lap(&clean);
            }
        }
        let (cf, cu) = (pearson(&seen, &flipped), pearson(&seen, &unflipped));
        eprintln!(
            "drop {k}: correlation with the flipped view {cf:.2}, unflipped {cu:.2}; fine detail {:.3}",
            lap_in / lap_clean
        );
        assert!(
            cf > 0.8 && cf > cu + 0.3,
            "drop {k}: flipped {cf:.2}, unflipped {cu:.2}"
        );
        assert!(
            lap_in < 0.2 * lap_clean,
            "drop {k}: the view is blurred ({lap_in:.1} vs {lap_clean:.1})"
        );
        tested += 1;
    }
    assert!(
        tested >= 1,
        "no drop clear of the border among {}",
        list.len()
    );
}

#[test]
fn drop_density_sets_the_covered_share() {
    let (w, h) = (240u32, 180u32);
    let clean = generated_clean(w, h);
    // Fine detail everywhere, so every drop pixel changes.
    let clean = RgbImage::from_fn(w, h, |x, y| {
        let p = clean.get_pixel(x, y).0;
        let f = if (x / 2 + y / 2) % 2 == 0 { 40 } else { 0 };
        image::Rgb(p.map(|v| v.saturating_add(f)))
    });
    let covered = |coverage: f32| {
        let out = RainRenderer::new(drops(coverage, 0), 2, w, h)
            .render(&clean, 0)
            .unwrap();
        out.pixels()
            .zip(clean.pixels())
            .filter(|(a, b)| a.0.iter().zip(b.0).any(|(&p, q)| p.abs_diff(q) > 6))
            .count() as f64
            / f64::from(w * h)
    };
    let (a, b, c) = (covered(0.02), covered(0.08), covered(0.3));
    eprintln!("covered share at coverage 0.02, 0.08, 0.3: {a:.3}, {b:.3}, {c:.3}");
    assert!(a > 0.005 && a < 0.06, "{a}");
    assert!(b > 2.0 * a && c > 2.0 * b, "{a} {b} {c}");
    // A dry windshield: no drops at all.
    assert_eq!(covered(0.0), 0.0);
    let dry = Preset::Driving.params_with(
        3,
        &Effects {
            drops: 0.0,
            ..Effects::DRIVING
        },
    );
    assert!(dry.drops.is_none());
    assert!(
        RainRenderer::new(dry, 3, w, h)
            .windshield_drops(0)
            .is_empty()
    );
}

#[test]
fn near_lens_streaks_are_wide_faint_long_and_few() {
    let e = Effects {
        lens_streaks: 1.0,
        ..Effects::NONE
    };
    for seed in 0..10 {
        let base = Preset::Mixed.params(seed);
        let p = Preset::Mixed.params_with(seed, &e);
        let lens = p.layers.last().unwrap();
        assert_eq!(p.layers.len(), base.layers.len() + 1);
        for l in &base.layers {
            assert!(
                lens.width > 1.5 * l.width && lens.blur > l.blur,
                "seed {seed}"
            );
            assert!(
                lens.length > l.length && lens.density < l.density,
                "seed {seed}"
            );
        }
        // Faint: its defocus spreads the light, so the peak is well under the brightness.
        let r = RainRenderer::new(
            RainParams {
                layers: vec![lens.clone()],
                ..RainParams::default()
            },
            seed,
            320,
            240,
        );
        let s = r.rain_layer(0).streaks;
        let max = s.iter().cloned().fold(0.0f32, f32::max);
        assert!(max > 0.0 && max < 0.3, "seed {seed}: peak {max}");
    }
}

#[test]
fn line_negatives_draw_lines_and_keep_the_rest() {
    let (w, h) = (128u32, 96u32);
    let clean = RgbImage::from_pixel(w, h, image::Rgb([120, 110, 100]));
    let mut changed_any = 0;
    for seed in 0..12 {
        let p = LinePattern::random(seed, w, h);
        let mut img = clean.clone();
        p.paint(&mut img);
        let changed = img
            .pixels()
            .zip(clean.pixels())
            .filter(|(a, b)| a != b)
            .count();
        // Lines, not a wash: some pixels, far from all.
        assert!(
            changed > 20 && changed < (w * h * 7 / 10) as usize,
            "seed {seed}: {changed} pixels"
        );
        changed_any += 1;
    }
    assert_eq!(changed_any, 12);
    // A drawn line is sharp: full colour on it, untouched two pixels beside it.
    let p = LinePattern {
        lines: vec![SceneLine {
            from: [20.0, 10.0],
            to: [60.0, 80.0],
            width: 2.0,
            colour: [0.0, 0.0, 0.0],
        }],
    };
    let mut img = clean.clone();
    p.paint(&mut img);
    assert_eq!(img.get_pixel(40, 45).0, [0, 0, 0]);
    assert_eq!(img.get_pixel(44, 45).0, clean.get_pixel(44, 45).0);
}

#[test]
fn out_of_range_parameters_are_errors_naming_them() {
    let cases: [(RainParams, &str); 5] = [
        (drops(0.9, 0), "drops.coverage"),
        (
            RainParams {
                scattering: Some(scattering(-1.0)),
                ..RainParams::default()
            },
            "scattering.beta",
        ),
        (
            RainParams {
                motion: Some(CameraMotion {
                    vanishing_point: [0.5, f32::NAN],
                    flow: 1.0,
                }),
                ..RainParams::default()
            },
            "motion.vanishing_point[1]",
        ),
        (
            RainParams {
                refraction: Some(Refraction {
                    strength: 2.0,
                    gain: 1.0,
                }),
                ..RainParams::default()
            },
            "refraction.strength",
        ),
        (
            {
                let mut p = single_layer(1.0, 0.0);
                p.layers[0].width = -1.0;
                p
            },
            "layers[0].width",
        ),
    ];
    for (params, name) in cases {
        let e = RainRenderer::checked(params, 0, 16, 16).unwrap_err();
        assert!(
            matches!(&e, SynthError::OutOfRange { name: n, .. } if n == name),
            "{e}"
        );
        assert!(e.to_string().contains(name), "{e}");
    }
    let mut d = drops(0.1, 0);
    if let Some(x) = d.drops.as_mut() {
        x.radius = [10.0, 5.0];
    }
    assert!(
        d.validate()
            .unwrap_err()
            .to_string()
            .contains("drops.radius[1]")
    );
    let e = Effects {
        drops: 1.5,
        ..Effects::NONE
    }
    .validate()
    .unwrap_err();
    assert!(e.to_string().contains("effects.drops"), "{e}");
    for p in Preset::ALL {
        for seed in 0..20 {
            p.params(seed).validate().unwrap();
        }
    }
}

#[test]
fn params_written_before_the_driving_effects_still_parse() {
    let old = r#"{"layers":[{"density":2.0,"length":20.0,"angle_deg":5.0,"width":1.0,
        "brightness":0.5,"blur":0.0,"speed":30.0}],"veil":{"beta":1.0,"atmosphere":0.1}}"#;
    let p: RainParams = serde_json::from_str(old).unwrap();
    assert!(!p.has_effects());
    assert_eq!(p.layers.len(), 1);
    // And the streak presets still write what they wrote: no new keys.
    let json = serde_json::to_string(&Preset::Heavy.params(1)).unwrap();
    assert!(
        !json.contains("drops") && !json.contains("scattering"),
        "{json}"
    );
    let driving = Preset::Driving.params(1);
    let back: RainParams = serde_json::from_str(&serde_json::to_string(&driving).unwrap()).unwrap();
    assert_eq!(back, driving);
}
