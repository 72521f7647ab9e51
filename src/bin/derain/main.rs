//! `derain`: the command-line front end of the library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};

mod eval_cmd;
mod eval_detect_cmd;
mod rain_detector_cmd;
mod rain_score_cmd;
mod run_cmd;
mod synth_cmd;
mod train_cmd;

use derain::model::Model;
use derain::onnx::{fixtures, resnet9};
use derain::runtime::{Generator, Provider, SessionOptions};

#[derive(Parser)]
#[command(name = "derain", version, about = "Rain removal for driving cameras")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check a model against the contract and print its card; optionally open it on a provider.
    Inspect {
        /// The ONNX generator.
        model: PathBuf,
        /// Also build an ONNX Runtime session on this provider (auto, cpu, cuda, tensorrt).
        #[arg(long)]
        provider: Option<Provider>,
        /// ONNX Runtime library to load (default: search, see README).
        #[arg(long)]
        ort_library: Option<PathBuf>,
    },
    /// Render synthetic rain over clean frames: writes OUT/rainy and OUT/clean with matching names.
    Synth(synth_cmd::SynthArgs),
    /// Split the frames of some drives into two disjoint halves (two lists): a clean half and
    /// a half to render rain over, for an unpaired stage that PSNR can judge.
    UnpairedSplit(synth_cmd::UnpairedSplitArgs),
    /// Score results: paired folders (PSNR-Y, SSIM-Y), one folder (NIQE), or a model on pairs.
    Eval(eval_cmd::EvalArgs),
    /// Derain (and detect on) a video file, stream or camera: write, show and log the result.
    Run(run_cmd::RunArgs),
    /// Does deraining help the detector? mAP@0.5 on rainy vs derained frames of rainy/clean pairs.
    EvalDetect(eval_detect_cmd::EvalDetectArgs),
    /// The per-frame rain score: fit it, measure it (ROC AUC dry vs rainy), print it per frame.
    #[command(subcommand)]
    RainScore(rain_score_cmd::RainScoreCmd),
    /// The learned rain detector: train it, measure it (ROC AUC dry vs rainy), print its scores.
    #[command(subcommand)]
    RainDetector(rain_detector_cmd::RainDetectorCmd),
    /// Train deraining generators on footage (ANLCL; needs a build with the `train` feature).
    Train(train_cmd::TrainArgs),
    /// Export a trained generator from a run or checkpoint to ONNX, with its model card.
    Export(train_cmd::ExportArgs),
    /// Which way each stage-2 loss term pulls a checkpoint, against frames with known clean ones.
    ProbeTerms(train_cmd::ProbeArgs),
    /// Print a model's card (what it is, how it was trained, its scores).
    Info {
        /// The ONNX generator.
        model: PathBuf,
    },
    /// Write a small generator for tests and benchmarks (not a trained model).
    Fixture {
        #[arg(value_enum)]
        kind: FixtureKind,
        /// Output .onnx file.
        #[arg(long, short)]
        out: PathBuf,
        /// Reflect-padding multiple recorded in the card (identity only).
        #[arg(long, default_value_t = 1)]
        multiple_of: u32,
        /// Base channels (resnet9 only).
        #[arg(long, default_value_t = 16)]
        base: usize,
        /// Seed for random weights.
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum FixtureKind {
    /// Output = input.
    Identity,
    /// Per-channel scale and bias (0.5x + 0.25).
    Affine,
    /// Two random 3x3 convolutions plus the input.
    SmallConv,
    /// The paper-size ResNet-9 generator with random weights (for speed measurements).
    Resnet9,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Synth(args) => synth_cmd::run(args)?,
        Command::UnpairedSplit(args) => synth_cmd::unpaired_split(args)?,
        Command::Eval(args) => eval_cmd::run(args)?,
        Command::RainScore(cmd) => rain_score_cmd::run(cmd)?,
        Command::RainDetector(cmd) => rain_detector_cmd::run(cmd)?,
        Command::Run(args) => run_cmd::run(args)?,
        Command::EvalDetect(args) => eval_detect_cmd::run(args)?,
        Command::Train(args) => train_cmd::train(args)?,
        Command::Export(args) => train_cmd::export(args)?,
        Command::ProbeTerms(args) => train_cmd::probe(args)?,
        Command::Info { model } => {
            let bytes = std::fs::read(&model)
                .with_context(|| format!("cannot read {}", model.display()))?;
            if let Ok((card, threshold)) = derain::raindetect::read_card(&bytes) {
                println!("name:         {} (a rain detector)", card.name);
                println!("architecture: {}", card.architecture);
                println!("parameters:   {}", card.parameters);
                println!("threshold:    {threshold:.3}");
                println!(
                    "{}",
                    serde_json::to_string_pretty(&card).context("formatting card")?
                );
                return Ok(());
            }
            let m = Model::from_path(&model)?;
            if !m.has_card() {
                println!("{}: no model card in the file", m.origin());
            } else {
                let c = m.card();
                println!("name:         {}", c.name);
                println!("architecture: {}", c.architecture);
                println!("parameters:   {}", c.parameters);
                println!("GMAC/MP:      {:.2}", c.gmac_per_megapixel);
                println!("multiple_of:  {}", c.multiple_of);
                println!("precision:    {}", c.precision);
                println!(
                    "{}",
                    serde_json::to_string_pretty(c).context("formatting card")?
                );
            }
        }
        Command::Inspect {
            model,
            provider,
            ort_library,
        } => {
            let m = Model::from_path(&model)?;
            println!("model:       {}", m.origin());
            println!("sha256:      {}", m.sha256());
            let dims: Vec<String> = m.input_dims().iter().map(ToString::to_string).collect();
            println!("input:       rainy float32 [{}]", dims.join(","));
            println!("multiple_of: {}", m.multiple_of());
            if m.has_card() {
                let pretty = serde_json::to_string_pretty(m.card()).context("formatting card")?;
                println!("card:        {pretty}");
            } else {
                println!("card:        (none in the file)");
            }
            if let Some(provider) = provider {
                let options = SessionOptions {
                    provider,
                    ort_library,
                    ..SessionOptions::default()
                };
                let g = Generator::new(&m, &options)?;
                println!("provider:    {} (asked for {provider})", g.provider());
            }
        }
        Command::Fixture {
            kind,
            out,
            multiple_of,
            base,
            seed,
        } => {
            let bytes = match kind {
                FixtureKind::Identity => fixtures::identity(multiple_of),
                FixtureKind::Affine => fixtures::affine([0.5; 3], [0.25; 3]),
                FixtureKind::SmallConv => fixtures::small_conv(seed),
                FixtureKind::Resnet9 => resnet9::resnet9_random(
                    &resnet9::Resnet9Config {
                        base,
                        ..resnet9::Resnet9Config::default()
                    },
                    seed,
                )?,
            };
            write_atomically(&out, &bytes)?;
            println!("wrote {} ({} bytes)", out.display(), bytes.len());
        }
    }
    Ok(())
}

/// Writes through a temporary file and a rename, so an interrupted run never leaves half a model.
fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    derain::imageio::write_file_atomic(path, bytes)
        .with_context(|| format!("cannot write {}", path.display()))
}
