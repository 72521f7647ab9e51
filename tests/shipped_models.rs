//! The models shipped in `models/` (and embedded in the plugin): each must load, follow the
//! model contract with a parseable card, and improve a fixed rainy crop. A broken file here
//! fails the test suite instead of a user's pipeline.

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
    let Some(rainy) = derain::data::shared_path("pairs/rain12/rainy/001.png") else {
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
        let m = Model::from_path(&path).unwrap();
        let options = SessionOptions {
            provider: Provider::Cpu,
            ..SessionOptions::default()
        };
        let mut g = Generator::new(&m, &options).unwrap();
        let out = derain::stills::derain_image(&mut g, &r).unwrap();
        let after = derain::metrics::psnr_y(&out, &c).unwrap();
        eprintln!("{}: PSNR-Y {before:.2} -> {after:.2} dB", path.display());
        assert!(
            after > before,
            "{}: {before:.2} -> {after:.2}",
            path.display()
        );
    }
}
