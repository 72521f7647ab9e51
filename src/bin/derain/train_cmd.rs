//! `derain train` and `derain export`: the offline trainer's front end. The arguments exist in
//! every build so `--help` documents them; a build without the `train` feature says how to get
//! one instead of running.

use std::path::PathBuf;

use anyhow::Result;

#[derive(clap::Args)]
#[command(
    after_help = "The config has three tables: [train] (architecture, losses, sampler, \
optimiser, batch, crop, seed, stage, device), [data] (clean, rainy, preset, downscale, stride, \
max_frames, min_scene_change, validation) and [run] (steps, checkpoint_every, validate_every, \
init, name). See configs/ for examples. A run killed at any moment continues with --resume."
)]
pub struct TrainArgs {
    /// Run configuration (TOML).
    #[arg(long, short)]
    config: PathBuf,
    /// Run directory (checkpoint, logs, charts, samples). Default: runs/<config name>.
    #[arg(long, short)]
    out: Option<PathBuf>,
    /// Continue the run in --out from its last checkpoint.
    #[arg(long)]
    resume: bool,
    /// Override a setting, e.g. --set train.batch=2 --set run.steps=500 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Shortcut for --set run.steps=N.
    #[arg(long)]
    steps: Option<u64>,
    /// Shortcut for --set train.device=D (cpu, cuda, cuda:N).
    #[arg(long)]
    device: Option<String>,
    /// Shortcut for --set train.seed=N.
    #[arg(long)]
    seed: Option<u64>,
    /// Clean footage (a folder of frames, a video, or a list file), replacing the config's
    /// data.clean; repeatable. Relative to the working directory. With --rainy, points a
    /// stage-2 config such as configs/fleet-anlcl.toml at a fleet's own dry drives.
    #[arg(long, value_name = "PATH")]
    clean: Vec<PathBuf>,
    /// Rainy footage, replacing the config's data.rainy; repeatable. Relative to the working
    /// directory: e.g. the same cameras' drives in rain.
    #[arg(long, value_name = "PATH")]
    rainy: Vec<PathBuf>,
}

/// `--set KEY=[...]` for a list of paths given on the command line: made absolute here, since
/// the config resolves relative paths against its own folder, and checked to exist, so a typo
/// fails before anything loads.
#[cfg(feature = "train")]
fn path_list_override(key: &str, paths: &[PathBuf]) -> Result<String> {
    let mut list = toml::value::Array::new();
    for p in paths {
        if !p.exists() {
            anyhow::bail!(
                "--{}: {} does not exist",
                key.rsplit('.').next().unwrap_or(key),
                p.display()
            );
        }
        let abs = std::path::absolute(p)?;
        list.push(toml::Value::String(abs.to_string_lossy().into_owned()));
    }
    Ok(format!("{key}={}", toml::Value::Array(list)))
}

#[derive(clap::Args)]
pub struct ExportArgs {
    /// A run directory or a checkpoint file.
    source: PathBuf,
    /// Output ONNX file.
    #[arg(long, short)]
    out: PathBuf,
    /// Export the rain generator G_R instead of the clean one G_B.
    #[arg(long)]
    rain: bool,
    /// Store weights as float16 (smaller file; inference still takes float32 frames).
    #[arg(long)]
    fp16: bool,
    /// Model name for the card (default: the run's name).
    #[arg(long)]
    name: Option<String>,
    /// A JSON file adding to the card: `training` and `scores` objects merged into the card's
    /// (wall time, the command, dev-set scores), `licence` a string.
    #[arg(long)]
    card: Option<PathBuf>,
}

/// `derain probe-terms`: which way each stage-2 term pulls a checkpoint's generators.
#[derive(clap::Args)]
#[command(
    after_help = "Prints, for each weighted term of the config's stage-2 objective, the cosine \
between its gradient and the gradient of the L1 distance to the known clean frames, on G_B's \
parameters (and G_R's, against the true rain layer), summed over the batches. Above 0: a step on \
that term alone moves the output toward the clean frames; below 0: away from them."
)]
pub struct ProbeArgs {
    /// Stage-2 run configuration (TOML): the terms, their weights, the clean footage.
    #[arg(long, short)]
    config: PathBuf,
    /// The checkpoint to probe (a run's checkpoint.safetensors).
    #[arg(long)]
    checkpoint: PathBuf,
    /// Rainy frames with known clean frames: a folder holding rainy/ and clean/.
    #[arg(long)]
    truth: PathBuf,
    /// Batches to sum over.
    #[arg(long, default_value_t = 16)]
    batches: usize,
    /// Override a setting, as for `derain train` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Also write the figures as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[cfg(not(feature = "train"))]
fn no_trainer() -> anyhow::Error {
    anyhow::anyhow!(
        "this derain binary was built without the trainer; build it with `make train-build` \
         (cargo build --release --features train)"
    )
}

#[cfg(not(feature = "train"))]
pub fn train(_: TrainArgs) -> Result<()> {
    Err(no_trainer())
}

#[cfg(not(feature = "train"))]
pub fn export(_: ExportArgs) -> Result<()> {
    Err(no_trainer())
}

#[cfg(not(feature = "train"))]
pub fn probe(_: ProbeArgs) -> Result<()> {
    Err(no_trainer())
}

#[cfg(feature = "train")]
pub fn probe(args: ProbeArgs) -> Result<()> {
    use anyhow::Context;
    use derain::train::run::{self, RunConfig};
    let cfg = RunConfig::load(&args.config, &args.sets)?;
    let rows = run::probe_terms(&cfg, &args.checkpoint, &args.truth, args.batches)
        .with_context(|| format!("probing {}", args.checkpoint.display()))?;
    let cell = |c: Option<f64>| c.map_or("-".to_owned(), |c| format!("{c:+.3}"));
    println!("| term | cos G_B | cos G_R | norm G_B / ref | norm G_R / ref |");
    println!("|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {:.3} | {:.3} |",
            r.term,
            cell(r.cosine_b),
            cell(r.cosine_r),
            r.relative_norm_b,
            r.relative_norm_r
        );
    }
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&rows)?;
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

#[cfg(feature = "train")]
pub fn train(args: TrainArgs) -> Result<()> {
    use anyhow::Context;
    use derain::train::run::{self, RunConfig};

    let mut sets = args.sets.clone();
    if let Some(s) = args.steps {
        sets.push(format!("run.steps={s}"));
    }
    if let Some(d) = &args.device {
        sets.push(format!("train.device=\"{d}\""));
    }
    if let Some(s) = args.seed {
        sets.push(format!("train.seed={s}"));
    }
    if !args.clean.is_empty() {
        sets.push(path_list_override("data.clean", &args.clean)?);
    }
    if !args.rainy.is_empty() {
        sets.push(path_list_override("data.rainy", &args.rainy)?);
    }
    let cfg = RunConfig::load(&args.config, &sets)?;
    let out = match args.out {
        Some(o) => o,
        None => {
            let stem = args
                .config
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "run".into());
            PathBuf::from("runs").join(stem)
        }
    };
    let summary = run::run(&cfg, &out, args.resume)
        .with_context(|| format!("training run {}", out.display()))?;
    println!(
        "{}: {} steps in {:.0} s; last loss {}",
        out.display(),
        summary.steps,
        summary.seconds,
        summary
            .last_loss
            .map_or("-".to_owned(), |l| format!("{l:.4}"))
    );
    if let Some(v) = summary.validation {
        println!(
            "validation ({} pairs): PSNR-Y {:.2} dB (input {:.2}), SSIM-Y {:.4} (input {:.4})",
            v.images, v.psnr_y, v.input_psnr_y, v.ssim_y, v.input_ssim_y
        );
    }
    println!(
        "export with: derain export {} --out model.onnx",
        out.display()
    );
    Ok(())
}

#[cfg(feature = "train")]
pub fn export(args: ExportArgs) -> Result<()> {
    use anyhow::Context;
    use derain::train::run;
    let extra = match &args.card {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let value: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not JSON", path.display()))?;
            Some(value)
        }
        None => None,
    };
    let written = run::export(
        &args.source,
        &args.out,
        args.rain,
        args.fp16,
        args.name.as_deref(),
        extra.as_ref(),
    )?;
    println!("wrote {} ({} bytes)", args.out.display(), written);
    Ok(())
}
