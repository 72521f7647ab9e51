//! Rain synthesis: determinism, preset ordering, video motion, veil, ranges and errors, and a
//! check that the rain has the character of rain (thin, slanted, sparse, brightening streaks).
//!
//! Uses the Udacity still `clean-driving/udacity/stills/test1.jpg` from the shared data folder
//! when present, else a generated gradient-and-shapes image. Set `DERAIN_SYNTH_PREVIEW` to a
//! folder to also write side-by-side preview PNGs of every preset there.

use derain::data::shared_path;
use derain::imageio::{RgbImage, hstack, load_rgb, save_png_atomic};
use derain::synth::{Preset, RainParams, RainRenderer, StreakLayer, SynthError, Veil, synthesize};

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
        veil: None,
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
        let r = RainRenderer::new(preset.params(5), 5, 200, 150);
        for img in [&clean, &white] {
            let out = r.render(img, 2).unwrap();
            assert_eq!(out.dimensions(), (200, 150));
            // Rain only adds light: no channel gets darker.
            for (o, c) in out.as_raw().iter().zip(img.as_raw()) {
                assert!(o >= c, "{preset}: {o} < {c}");
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
        assert!(out_f.iter().all(|&v| v == 1.0));
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
