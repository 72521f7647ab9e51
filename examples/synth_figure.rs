//! Renders `docs/synth-rain.png`: one clean dashcam still beside the same still with the `light`,
//! `medium` and `heavy` rain presets (seed 1), each panel the same 400×300 crop at full
//! resolution (streaks are a few pixels wide: a downscaled panel would hide them).
//!
//! `cargo run --release --example synth_figure [STILL] [OUT]`; the still defaults to the
//! MIT-licensed Udacity `clean-driving/udacity/stills/test1.jpg` from the shared data.

use std::path::PathBuf;

use derain::imageio::{self, hstack};
use derain::synth::{Preset, synthesize};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let still = match args.next() {
        Some(p) => PathBuf::from(p),
        None => derain::devdata::shared_path("clean-driving/udacity/stills/test1.jpg")
            .ok_or_else(|| anyhow::anyhow!("give a still: the shared data folder is absent"))?,
    };
    let out = PathBuf::from(args.next().unwrap_or_else(|| "docs/synth-rain.png".into()));
    let clean = imageio::load_rgb(&still)?;
    let (w, h) = (400.min(clean.width()), 300.min(clean.height()));
    // Right of centre, around the road and the cars of the Udacity still.
    let x = (clean.width() - w) * 3 / 5;
    let y = (clean.height() - h) / 2;
    let crop = |img: &imageio::RgbImage| image::imageops::crop_imm(img, x, y, w, h).to_image();
    let mut panels = vec![crop(&clean)];
    for preset in [Preset::Light, Preset::Medium, Preset::Heavy] {
        panels.push(crop(&synthesize(&clean, preset, 1)));
    }
    let refs: Vec<_> = panels.iter().collect();
    imageio::save_png_atomic(&hstack(&refs), &out)?;
    println!("wrote {} (clean | light | medium | heavy)", out.display());
    Ok(())
}
