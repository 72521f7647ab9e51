//! derain-core's hand-made rain score on images, with rain rendered by derain-tools' synthesis
//! (derain-core reads no images and renders no rain, so these tests live here).

use derain_core::rainscore::{Binned, RainScoreModel, features};
use derain_tools::imageio::binned;
use derain_tools::synth::{Preset, RainParams, RainRenderer};

fn scene() -> image::RgbImage {
    // A street-like scene: a sky gradient over blocks of facades and a darker road.
    image::RgbImage::from_fn(192, 128, |x, y| {
        let v = if y < 40 {
            200.0 - f32::from(y as u8)
        } else if y < 90 {
            70.0 + 25.0 * f32::from(((x / 24) % 4) as u8) + 5.0 * f32::from(((y / 10) % 2) as u8)
        } else {
            60.0 + 0.1 * f32::from(x as u8)
        };
        image::Rgb([v as u8, (v * 0.95) as u8, (v * 0.9) as u8])
    })
}

fn with_rain(clean: &image::RgbImage, density_scale: f32) -> image::RgbImage {
    let mut params: RainParams = Preset::Medium.params(4);
    for l in &mut params.layers {
        l.density *= density_scale;
    }
    RainRenderer::new(params, 4, clean.width(), clean.height())
        .render(clean, 0)
        .unwrap()
}

#[test]
fn score_is_in_range_and_rises_with_rain() {
    let m = RainScoreModel::shipped().unwrap();
    let clean = scene();
    let mut last = m.score(&binned(&clean));
    assert!((0.0..=1.0).contains(&last));
    for k in [0.25f32, 1.0, 3.0] {
        let s = m.score(&binned(&with_rain(&clean, k)));
        assert!((0.0..=1.0).contains(&s), "{s}");
        assert!(s > last, "density x{k}: score {s} not above {last}");
        last = s;
    }
}

#[test]
fn bright_lines_count_and_dark_lines_do_not_as_bright() {
    let flat = image::RgbImage::from_pixel(96, 96, image::Rgb([100, 100, 100]));
    let mut bright = flat.clone();
    let mut dark = flat.clone();
    for x in (10..90).step_by(8) {
        for y in 0..96 {
            bright.put_pixel(x, y, image::Rgb([200, 200, 200]));
            bright.put_pixel(x + 1, y, image::Rgb([200, 200, 200]));
            dark.put_pixel(x, y, image::Rgb([20, 20, 20]));
            dark.put_pixel(x + 1, y, image::Rgb([20, 20, 20]));
        }
    }
    let (fb, fd) = (features(&binned(&bright)), features(&binned(&dark)));
    assert!(fb.bright_over_dark > 2.0, "{fb:?}");
    assert!(fd.bright_over_dark < -2.0, "{fd:?}");
    assert!(fb.vertical_over_horizontal > 2.0, "{fb:?}");
}

#[test]
fn chw_and_image_binning_agree() {
    let img = scene();
    let (w, h) = (img.width() as usize, img.height() as usize);
    let (hp, wp) = (h + 4, w + 8);
    let mut chw = vec![0.0f32; 3 * hp * wp];
    for (x, y, p) in img.enumerate_pixels() {
        for c in 0..3 {
            chw[c * hp * wp + y as usize * wp + x as usize] = f32::from(p.0[c]) / 255.0;
        }
    }
    let a = features(&binned(&img));
    let b = features(&Binned::from_chw(&chw, hp, wp, h, w).unwrap());
    for (x, y) in a.as_array().iter().zip(b.as_array()) {
        assert!((x - y).abs() < 1e-6, "{a:?} vs {b:?}");
    }
    assert!(Binned::from_chw(&chw[..10], hp, wp, h, w).is_err());
}
