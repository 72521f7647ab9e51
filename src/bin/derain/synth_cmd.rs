//! `derain synth`: renders seeded synthetic rain over clean footage and writes matching
//! OUT/rainy and OUT/clean images (and, for video sources, optionally a rainy video with the
//! same frames and timestamps).

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use derain::footage::{Footage, FootageOptions, Source, VideoWriter, expand_sources};
use derain::imageio;
use derain::synth::{Preset, RainRenderer};

#[derive(clap::Args)]
pub struct SynthArgs {
    /// Clean footage: an image, a video, a folder of both, or a .txt list of them.
    #[arg(long, required = true, num_args = 1..)]
    clean: Vec<PathBuf>,
    /// Output folder; OUT/rainy and OUT/clean are created. Must not be inside an input folder.
    #[arg(long, short)]
    out: PathBuf,
    /// Rain preset.
    #[arg(long, value_enum, default_value_t = Preset::Mixed)]
    preset: Preset,
    /// Seed: the same seed and inputs rebuild the same pairs.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Also write each video source back as OUT/<name>-rainy.mp4 (same frame count and
    /// timestamps).
    #[arg(long)]
    video: bool,
    /// Keep every n-th video frame.
    #[arg(long, default_value_t = 1)]
    stride: usize,
    /// Stop after this many frames.
    #[arg(long)]
    max_frames: Option<usize>,
    /// Integer downscale of every frame before rain is rendered.
    #[arg(long, default_value_t = 1)]
    downscale: u32,
}

/// Mixes the user's seed with a source's position so each source gets its own, reproducible,
/// rain (SplitMix64 finaliser).
fn source_seed(seed: u64, index: usize) -> u64 {
    let mut z = seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

pub fn run(args: SynthArgs) -> Result<()> {
    let sources = expand_sources(&args.clean)?;
    if sources.is_empty() {
        bail!("no image or video found in {:?}", args.clean);
    }
    // Never write into an input folder (or next to an input file).
    for input in &args.clean {
        let dir = if input.is_dir() {
            input.clone()
        } else {
            input.parent().map(PathBuf::from).unwrap_or_default()
        };
        if derain::eval::is_inside(&args.out, &dir) && !dir.as_os_str().is_empty() {
            bail!(
                "{} is inside the input folder {}: choose an output outside it",
                args.out.display(),
                dir.display()
            );
        }
    }
    // Output names: an image keeps its stem, a video frame is <stem>_<frame>. Two sources with
    // the same stem would overwrite each other: refuse up front.
    let mut stems: HashMap<String, PathBuf> = HashMap::new();
    for s in &sources {
        let stem = s
            .path()
            .file_stem()
            .map(|x| x.to_string_lossy().into_owned())
            .unwrap_or_default();
        if let Some(prev) = stems.insert(stem.clone(), s.path().to_owned()) {
            bail!(
                "{} and {} would both be written as {stem}*.png; rename one",
                prev.display(),
                s.path().display()
            );
        }
    }
    let (rainy_dir, clean_dir) = (args.out.join("rainy"), args.out.join("clean"));
    for d in [&rainy_dir, &clean_dir] {
        std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
    }
    let options = FootageOptions {
        stride: args.stride,
        max_frames: args.max_frames,
        downscale: args.downscale,
        progress: true,
        ..FootageOptions::default()
    };
    let source_index: HashMap<PathBuf, usize> = sources
        .iter()
        .enumerate()
        .map(|(i, s)| (s.path().to_owned(), i))
        .collect();
    let is_video: HashMap<PathBuf, bool> = sources
        .iter()
        .map(|s| (s.path().to_owned(), matches!(s, Source::Video(_))))
        .collect();
    let mut footage = Footage::from_sources(sources, options)?;

    let mut record = Vec::new();
    let mut renderer: Option<(PathBuf, (u32, u32), RainRenderer)> = None;
    let mut writer: Option<(PathBuf, VideoWriter)> = None;
    let mut written = 0usize;
    for frame in footage.by_ref() {
        let frame = frame?;
        let src = (*frame.source).clone();
        let idx = source_index.get(&src).copied().unwrap_or(0);
        let video = is_video.get(&src).copied().unwrap_or(false);
        let (w, h) = frame.image.dimensions();
        // One renderer per source: video frames share it, so the rain falls between frames.
        let fresh = match &renderer {
            Some((p, size, _)) => p != &src || *size != (w, h),
            None => true,
        };
        if fresh {
            let seed = source_seed(args.seed, idx);
            let params = args.preset.params(seed);
            record.push(serde_json::json!({
                "source": src, "seed": seed, "width": w, "height": h, "params": params,
            }));
            renderer = Some((src.clone(), (w, h), RainRenderer::new(params, seed, w, h)));
        }
        let Some((_, _, r)) = &renderer else {
            bail!("internal: no renderer");
        };
        let rainy = r
            .render(&frame.image, frame.index)
            .with_context(|| format!("rendering rain over {}", src.display()))?;
        let stem = src
            .file_stem()
            .map(|x| x.to_string_lossy().into_owned())
            .unwrap_or_default();
        let name = if video {
            format!("{stem}_{:06}.png", frame.index)
        } else {
            format!("{stem}.png")
        };
        imageio::save_png_atomic(&rainy, &rainy_dir.join(&name))?;
        imageio::save_png_atomic(&frame.image, &clean_dir.join(&name))?;
        written += 1;
        if args.video && video {
            if writer.as_ref().is_none_or(|(p, _)| p != &src) {
                if let Some((_, wr)) = writer.take() {
                    let path = wr.finish()?;
                    eprintln!("wrote {}", path.display());
                }
                let path = args.out.join(format!("{stem}-rainy.mp4"));
                writer = Some((src.clone(), VideoWriter::create(&path, w, h, 25)?));
            }
            if let Some((_, wr)) = &mut writer {
                wr.push(&rainy, frame.pts, frame.duration)?;
            }
        }
    }
    if let Some((_, wr)) = writer.take() {
        let path = wr.finish()?;
        eprintln!("wrote {}", path.display());
    }
    let manifest = serde_json::json!({
        "preset": args.preset, "seed": args.seed, "sources": record,
    });
    imageio::write_file_atomic(
        &args.out.join("synth.json"),
        serde_json::to_string_pretty(&manifest)?.as_bytes(),
    )?;
    println!(
        "wrote {written} pairs to {} and {} ({})",
        rainy_dir.display(),
        clean_dir.display(),
        footage.summary()
    );
    Ok(())
}
