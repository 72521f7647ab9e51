//! The models shipped in `models/` (and embedded in the plugin): each must load, follow the
//! model contract with a parseable card, improve a fixed rainy crop and leave a fixed dry crop
//! alone. A broken file here fails the test suite instead of a user's pipeline.

use std::path::PathBuf;

use derain::model::Model;
use derain::runtime::{Generator, Provider, SessionOptions};

const SHIPPED: [&str; 2] = ["derain-r9.onnx", "derain-lite.onnx"];

fn shipped() -> Vec<PathBuf> {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/models"));
    SHIPPED
        .iter()
        .map(|f| dir.join(f))
        .filter(|p| {
            let there = p.is_file();
            if !there {
                eprintln!("skipped: {} is not shipped yet", p.display());
            }
            there
        })
        .collect()
}

/// The model at `path` run on `img` through ONNX Runtime's CPU provider.
fn derain_on_cpu(path: &std::path::Path, img: &image::RgbImage) -> image::RgbImage {
    let m = Model::from_path(path).unwrap();
    let options = SessionOptions {
        provider: Provider::Cpu,
        ..SessionOptions::default()
    };
    let mut g = Generator::new(&m, &options).unwrap();
    derain::stills::derain_image(&mut g, img).unwrap()
}

#[test]
fn shipped_models_follow_the_contract() {
    for path in shipped() {
        let m = Model::from_path(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(m.has_card(), "{}: no card", path.display());
        let card = m.card();
        assert!(
            !card.architecture.is_empty() && card.parameters > 0,
            "{card:?}"
        );
        assert!(card.gmac_per_megapixel > 0.0, "{card:?}");
        assert!(
            card.training.is_object(),
            "{}: card lacks training",
            path.display()
        );
    }
}

#[test]
fn shipped_models_improve_a_rainy_crop() {
    let Some(rainy) = derain::devdata::shared_path("pairs/rain12/rainy/001.png") else {
        eprintln!("skipped: ../shared/data/pairs/rain12 is absent");
        return;
    };
    let clean = rainy
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("clean/001.png");
    let crop = |p: &std::path::Path| {
        let img = derain::imageio::load_rgb(p).unwrap();
        image::imageops::crop_imm(&img, 100, 60, 256, 192).to_image()
    };
    let (r, c) = (crop(&rainy), crop(&clean));
    let before = derain::metrics::psnr_y(&r, &c).unwrap();
    for path in shipped() {
        let out = derain_on_cpu(&path, &r);
        let after = derain::metrics::psnr_y(&out, &c).unwrap();
        eprintln!("{}: PSNR-Y {before:.2} -> {after:.2} dB", path.display());
        assert!(
            after > before,
            "{}: {before:.2} -> {after:.2}",
            path.display()
        );
    }
}

/// Issue 15's floor for a dry crop: PSNR-Y of the output against its own input, for every
/// shipped model.
const DRY_FLOOR_DB: f64 = 40.0;

/// A derainer in a car is a no-op on dry frames: a fixed crop of a clean frame full of thin
/// structure (Rain12's clean 001) must come out within 40 dB of itself.
#[test]
fn shipped_models_leave_a_dry_crop_alone() {
    let Some(clean) = derain::devdata::shared_path("pairs/rain12/clean/001.png") else {
        eprintln!("skipped: ../shared/data/pairs/rain12 is absent");
        return;
    };
    let img = derain::imageio::load_rgb(&clean).unwrap();
    let dry = image::imageops::crop_imm(&img, 100, 60, 256, 192).to_image();
    for path in shipped() {
        let out = derain_on_cpu(&path, &dry);
        let fidelity = derain::metrics::psnr_y(&out, &dry).unwrap();
        let file = path.file_name().unwrap().to_string_lossy();
        let floor = DRY_FLOOR_DB;
        eprintln!("{file}: dry crop PSNR-Y {fidelity:.2} dB (floor {floor})");
        assert!(
            fidelity >= floor,
            "{file}: a dry crop changed: {fidelity:.2} dB < {floor}"
        );
    }
}
