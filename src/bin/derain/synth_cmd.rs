//! `derain synth`: renders seeded synthetic rain over clean footage and writes matching
//! OUT/rainy and OUT/clean images (and, for video sources, optionally a rainy video with the
//! same frames and timestamps). Driving effects (atmospheric veil, radial and near-lens
//! streaks, refraction, windshield drops) and line hard negatives are drawn per source.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use derain::footage::{Footage, FootageOptions, Source, VideoWriter, expand_sources};
use derain::imageio;
use derain::synth::{Effects, LinePattern, Preset, RainParams, RainRenderer, SynthError};

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
    /// Probability per source of the atmospheric veil (I = J·t + A·(1 − t), depth from the
    /// frame's layout); it replaces the preset's gradient veil. Default: the preset's (driving
    /// 0.7, others 0).
    #[arg(long, value_name = "P")]
    scattering_veil: Option<f64>,
    /// Probability per source of a moving camera's radial streaks. Default: the preset's
    /// (driving 0.6, others 0).
    #[arg(long, value_name = "P")]
    radial: Option<f64>,
    /// Probability per source of a layer of near-lens defocused streaks. Default: the preset's
    /// (driving 0.4, others 0).
    #[arg(long, value_name = "P")]
    lens_streaks: Option<f64>,
    /// Probability per source that streak brightness follows the background. Default: the
    /// preset's (driving 0.8, others 0).
    #[arg(long, value_name = "P")]
    refraction: Option<f64>,
    /// Probability per source of windshield drops (0: a dry windshield). Default: the
    /// preset's (driving 0.5, others 0).
    #[arg(long, value_name = "P")]
    drops: Option<f64>,
    /// Share of sources written as hard negatives: no rain, thin straight lines (poles, grids,
    /// cables, lane dashes) drawn into both OUT/rainy and OUT/clean.
    #[arg(long, value_name = "P", default_value_t = 0.0)]
    line_negatives: f64,
    /// Extinction β of the atmospheric veil (0..=8); switches the veil on unless
    /// --scattering-veil is given.
    #[arg(long, value_name = "BETA")]
    veil_beta: Option<f32>,
    /// Share of the frame covered by windshield drops (0..=0.6); switches drops on unless
    /// --drops is given.
    #[arg(long, value_name = "C")]
    drop_coverage: Option<f32>,
    /// Radial streak flow (0..=10 fall lengths per half-diagonal); switches radial streaks on
    /// unless --radial is given.
    #[arg(long, value_name = "F")]
    radial_flow: Option<f32>,
    /// No streaks at all (nor the streak presets' vertical haze, nor radial streaks): with
    /// --scattering-veil or --drops, frames that show one effect alone.
    #[arg(long)]
    no_streaks: bool,
    /// Write OUT/rainy only, no OUT/clean: a rainy set for an unpaired training stage, whose
    /// trainer must not be able to read each rainy frame's clean partner (its synth.json still
    /// names the frames the rain was rendered over, so the trainer can refuse an overlap).
    #[arg(long)]
    rainy_only: bool,
}

/// Checks a flag's value, naming the flag.
fn in_range<T: PartialOrd + std::fmt::Display>(
    flag: &str,
    v: Option<T>,
    lo: T,
    hi: T,
) -> Result<(), SynthError> {
    match v {
        Some(v) if !(v >= lo && v <= hi) => Err(SynthError::OutOfRange {
            name: flag.to_owned(),
            value: v.to_string(),
            allowed: format!("{lo}..={hi}"),
        }),
        _ => Ok(()),
    }
}

impl SynthArgs {
    /// The effect probabilities: the preset's, with each flag given taking its place (and an
    /// effect whose strength is set switched on unless its probability is given too).
    fn effects(&self) -> Result<Effects, SynthError> {
        for (flag, v) in [
            ("--scattering-veil", self.scattering_veil),
            ("--radial", self.radial),
            ("--lens-streaks", self.lens_streaks),
            ("--refraction", self.refraction),
            ("--drops", self.drops),
            ("--line-negatives", Some(self.line_negatives)),
        ] {
            in_range(flag, v, 0.0, 1.0)?;
        }
        in_range("--veil-beta", self.veil_beta, 0.0, 8.0)?;
        in_range("--drop-coverage", self.drop_coverage, 0.0, 0.6)?;
        in_range("--radial-flow", self.radial_flow, 0.0, 10.0)?;
        let mut e = self.preset.default_effects();
        let on = |p: Option<f64>, strength: Option<f32>, preset: f64| {
            p.unwrap_or(if strength.is_some() { 1.0 } else { preset })
        };
        e.scattering = on(self.scattering_veil, self.veil_beta, e.scattering);
        e.radial = on(self.radial, self.radial_flow, e.radial);
        e.drops = on(self.drops, self.drop_coverage, e.drops);
        e.lens_streaks = self.lens_streaks.unwrap_or(e.lens_streaks);
        e.refraction = self.refraction.unwrap_or(e.refraction);
        e.validate()?;
        Ok(e)
    }

    /// A source's rain: drawn for its seed, then the strengths set on the command line.
    fn params(&self, seed: u64, effects: &Effects) -> Result<RainParams, SynthError> {
        let mut p = self.preset.params_with(seed, effects);
        if let (Some(s), Some(b)) = (p.scattering.as_mut(), self.veil_beta) {
            s.beta = b;
        }
        if let (Some(d), Some(c)) = (p.drops.as_mut(), self.drop_coverage) {
            d.coverage = c;
        }
        if let (Some(m), Some(f)) = (p.motion.as_mut(), self.radial_flow) {
            m.flow = f;
        }
        if self.no_streaks {
            p.layers.clear();
            p.veil = None;
            p.motion = None;
        }
        p.validate()?;
        Ok(p)
    }
}

/// What a source becomes: rain over it, or a hard negative with lines drawn into it.
#[allow(clippy::large_enum_variant)] // one per source, never in a hot loop
enum Job {
    Rain(RainRenderer),
    Lines(LinePattern),
}

/// Salt of the per-source line-negative coin, so it is independent of the rain draw.
const LINE_SALT: u64 = 0x6c69_6e65_434f_494e;

/// Mixes the user's seed with a source's position so each source gets its own, reproducible,
/// rain (SplitMix64 finaliser).
fn source_seed(seed: u64, index: usize) -> u64 {
    use derain::seed::{GOLDEN, finalise};
    finalise(seed ^ (index as u64).wrapping_mul(GOLDEN))
}

pub fn run(args: SynthArgs) -> Result<()> {
    let effects = args.effects()?;
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
    if args.rainy_only && clean_dir.exists() {
        bail!(
            "--rainy-only: {} already exists (an earlier paired render); remove it or choose \
             another --out",
            clean_dir.display()
        );
    }
    let dirs: &[&PathBuf] = if args.rainy_only {
        &[&rainy_dir]
    } else {
        &[&rainy_dir, &clean_dir]
    };
    for d in dirs {
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
    let mut renderer: Option<(PathBuf, (u32, u32), Job)> = None;
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
            // A uniform draw in [0, 1) from the source's own seed.
            let coin = derain::seed::unit(source_seed(seed ^ LINE_SALT, idx));
            let job = if coin < args.line_negatives {
                let lines = LinePattern::random(seed, w, h);
                record.push(serde_json::json!({
                    "source": src, "seed": seed, "width": w, "height": h,
                    "kind": "line_negative", "lines": lines,
                }));
                Job::Lines(lines)
            } else {
                let params = args.params(seed, &effects)?;
                record.push(serde_json::json!({
                    "source": src, "seed": seed, "width": w, "height": h,
                    "kind": "rain", "params": params,
                }));
                Job::Rain(RainRenderer::new(params, seed, w, h))
            };
            renderer = Some((src.clone(), (w, h), job));
        }
        let Some((_, _, job)) = &renderer else {
            bail!("internal: no renderer");
        };
        let (rainy, clean) = match job {
            Job::Rain(r) => (
                r.render(&frame.image, frame.index)
                    .with_context(|| format!("rendering rain over {}", src.display()))?,
                frame.image,
            ),
            Job::Lines(lines) => {
                let mut img = frame.image;
                lines.paint(&mut img);
                (img.clone(), img)
            }
        };
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
        if !args.rainy_only {
            imageio::save_png_atomic(&clean, &clean_dir.join(&name))?;
        }
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
        "preset": args.preset, "seed": args.seed, "effects": effects, "no_streaks": args.no_streaks,
        "line_negatives": args.line_negatives, "rainy_only": args.rainy_only,
        "overrides": {
            "veil_beta": args.veil_beta, "drop_coverage": args.drop_coverage,
            "radial_flow": args.radial_flow,
        },
        "sources": record,
    });
    imageio::write_file_atomic(
        &args.out.join("synth.json"),
        serde_json::to_string_pretty(&manifest)?.as_bytes(),
    )?;
    if args.rainy_only {
        println!(
            "wrote {written} rainy frames to {} ({})",
            rainy_dir.display(),
            footage.summary()
        );
    } else {
        println!(
            "wrote {written} pairs to {} and {} ({})",
            rainy_dir.display(),
            clean_dir.display(),
            footage.summary()
        );
    }
    Ok(())
}

/// `derain unpaired-split`: the frames of some drives split into two disjoint halves, written
/// as two list files (paths relative to each list). Half A is a clean set; render rain over half
/// B with `derain synth --rainy-only` for the rainy set of an unpaired stage.
#[derive(clap::Args)]
pub struct UnpairedSplitArgs {
    /// Image frames: folders (one per drive), images or lists of them.
    #[arg(long, required = true, num_args = 1..)]
    source: Vec<PathBuf>,
    /// The list of half A (the clean set).
    #[arg(long)]
    out_a: PathBuf,
    /// The list of half B (the frames to render rain over).
    #[arg(long)]
    out_b: PathBuf,
    /// Consecutive frames of a drive that go to the same half.
    #[arg(long, default_value_t = 10)]
    block: usize,
}

pub fn unpaired_split(args: UnpairedSplitArgs) -> Result<()> {
    use derain::footage::split::{image_frames, list_text, split_halves};
    if args.block == 0 {
        bail!("--block must be at least 1");
    }
    let frames = image_frames(&args.source)?;
    if frames.len() < 2 {
        bail!(
            "{:?} holds {} image(s): nothing to split",
            args.source,
            frames.len()
        );
    }
    let (a, b) = split_halves(&frames, args.block);
    for (half, list, path) in [("A", &a, &args.out_a), ("B", &b, &args.out_b)] {
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
        let dir = dir.unwrap_or(std::path::Path::new("."));
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let header = format!(
            "Half {half}: {} of {} frames. Written by `derain unpaired-split --block {}`: runs of \
             {} consecutive frames per drive, alternating between half A (clean) and half B \
             (rain rendered over it).",
            list.len(),
            frames.len(),
            args.block,
            args.block
        );
        imageio::write_file_atomic(path, list_text(&header, list, dir).as_bytes())?;
        println!("half {half}: {} frames -> {}", list.len(), path.display());
    }
    Ok(())
}
