//! `derain eval`: scores outputs against clean references (PSNR-Y, SSIM-Y), scores outputs
//! without a reference (NIQE), or runs a model on rainy/clean pairs first.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use derain::eval::{self, EvalReport, ImageScore};
use derain::imageio::{self, RgbImage};
use derain::metrics::Niqe;
use derain::model::Model;
use derain::runtime::{Generator, Provider, SessionOptions};
use derain::stills::derain_image;

#[derive(clap::Args)]
#[command(after_help = "Modes:
  --pred DIR --gt DIR [--input DIR]   paired scores of existing outputs (and of the rainy inputs)
  --pred DIR [--input DIR]            no reference: NIQE of the outputs (and of the inputs)
  --model M --pairs DIR               run M on DIR/rainy, score against DIR/clean
  --model M --input DIR               run M on real rain without reference: NIQE before and after
  --model M --dry DIR                 run M on frames without rain: PSNR-Y/SSIM-Y of the output
                                      against its input (inf = untouched), mean and worst;
                                      --grid shows input | output | |difference| x10
Pairs match by file stem (a.png pairs with a.jpg). Nothing is ever written into an input folder.")]
pub struct EvalArgs {
    /// Folder of derained outputs to score.
    #[arg(long)]
    pred: Option<PathBuf>,
    /// Folder of clean references, paired with --pred by file stem.
    #[arg(long)]
    gt: Option<PathBuf>,
    /// Folder of rainy inputs: scored too (the baseline every output must beat).
    #[arg(long)]
    input: Option<PathBuf>,
    /// ONNX generator to run (with --pairs or --input).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Folder holding rainy/ and clean/ with matching names (with --model).
    #[arg(long)]
    pairs: Option<PathBuf>,
    /// Folder of frames without rain (with --model): the output is scored against its own
    /// input, since a derainer must leave dry frames untouched.
    #[arg(long)]
    dry: Option<PathBuf>,
    /// Also compute NIQE in paired modes (always computed without a reference).
    #[arg(long)]
    niqe: bool,
    /// NIQE pristine model (LIVE release modelparameters.mat); default: $DERAIN_NIQE_MODEL,
    /// then the shared data folder.
    #[arg(long)]
    niqe_model: Option<PathBuf>,
    /// Write every score as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write side-by-side PNGs (rainy | output | clean) into this folder.
    #[arg(long)]
    grid: Option<PathBuf>,
    /// Save the model's outputs into this folder (with --model).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Execution provider for --model (auto, cpu, cuda, tensorrt).
    #[arg(long, default_value = "auto")]
    provider: Provider,
    /// ONNX Runtime library to load (default: search, see README).
    #[arg(long)]
    ort_library: Option<PathBuf>,
}

/// Gain of the difference panel in `--dry --grid`: a change of one 8-bit level shows as 10.
const DRY_DIFF_GAIN: f32 = 10.0;

/// Where the images of one row come from.
struct Row {
    name: String,
    input: Option<PathBuf>,
    pred: Option<PathBuf>,
    gt: Option<PathBuf>,
}

pub fn run(args: EvalArgs) -> Result<()> {
    // Work out the mode and the rows before anything is computed or written.
    let (rows, mode) = plan(&args)?;
    let read_dirs: Vec<&PathBuf> = [&args.pred, &args.gt, &args.input, &args.pairs, &args.dry]
        .into_iter()
        .flatten()
        .collect();
    for out in [&args.json, &args.grid, &args.out].into_iter().flatten() {
        if let Some(d) = read_dirs.iter().find(|d| eval::is_inside(out, d)) {
            bail!(
                "{} is inside the input folder {}: choose an output outside it",
                out.display(),
                d.display()
            );
        }
    }
    let dry = mode == "model-dry";
    let paired = dry || rows.iter().all(|r| r.gt.is_some());
    let want_niqe = args.niqe || !paired;
    let niqe = if want_niqe {
        let path = Niqe::locate(args.niqe_model.as_deref())?;
        Some(Niqe::from_mat(&path)?)
    } else {
        None
    };
    let mut generator = match &args.model {
        Some(m) => {
            let model = Model::from_path(m)?;
            let options = SessionOptions {
                provider: args.provider,
                ort_library: args.ort_library.clone(),
                ..SessionOptions::default()
            };
            let g = Generator::new(&model, &options)?;
            eprintln!("model {} on {}", m.display(), g.provider());
            Some(g)
        }
        None => None,
    };
    for dir in [&args.grid, &args.out].into_iter().flatten() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }

    let bar = indicatif::ProgressBar::new(rows.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} scoring [{bar:30}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let mut scores = Vec::with_capacity(rows.len());
    let mut seconds = 0.0;
    for row in &rows {
        bar.set_message(row.name.clone());
        let input = row.input.as_deref().map(eval::load).transpose()?;
        let gt = row.gt.as_deref().map(eval::load).transpose()?;
        let pred = match (&mut generator, &input, &row.pred) {
            (Some(g), Some(rainy), _) => {
                let t = std::time::Instant::now();
                let out = derain_image(g, rainy)
                    .with_context(|| format!("running the model on {}", row.name))?;
                seconds += t.elapsed().as_secs_f64();
                out
            }
            (_, _, Some(p)) => eval::load(p)?,
            _ => bail!("internal: no output for {}", row.name),
        };
        let mut s = ImageScore {
            name: row.name.clone(),
            ..ImageScore::default()
        };
        if let (true, Some(i)) = (dry, &input) {
            eval::check_sizes([("output", &pred, i)]).with_context(|| row.name.clone())?;
            let (p, ss) = eval::dry_fidelity(&row.name, i, &pred)?;
            (s.psnr_y, s.ssim_y) = (Some(p), Some(ss));
        }
        if let Some(gt) = &gt {
            let mut pairs: Vec<(&str, &RgbImage, &RgbImage)> = vec![("output", &pred, gt)];
            if let Some(i) = &input {
                pairs.push(("input", i, gt));
            }
            eval::check_sizes(pairs).with_context(|| row.name.clone())?;
            let (p, ss) = eval::paired_scores(&row.name, &pred, gt)?;
            (s.psnr_y, s.ssim_y) = (Some(p), Some(ss));
            if let Some(i) = &input {
                let (p, ss) = eval::paired_scores(&row.name, i, gt)?;
                (s.input_psnr_y, s.input_ssim_y) = (Some(p), Some(ss));
            }
        }
        if let Some(n) = &niqe {
            s.niqe = Some(eval::niqe_score(n, &row.name, &pred)?);
            if let Some(i) = &input {
                s.input_niqe = Some(eval::niqe_score(n, &row.name, i)?);
            }
        }
        if let Some(dir) = &args.out {
            imageio::save_png_atomic(&pred, &dir.join(format!("{}.png", row.name)))?;
        }
        if let Some(dir) = &args.grid {
            let diff = match (dry, &input) {
                (true, Some(i)) => Some(eval::difference_image(i, &pred, DRY_DIFF_GAIN)),
                _ => None,
            };
            let mut panels: Vec<&RgbImage> = Vec::new();
            panels.extend(input.as_ref());
            panels.push(&pred);
            panels.extend(gt.as_ref());
            panels.extend(diff.as_ref());
            imageio::save_png_atomic(
                &imageio::hstack(&panels),
                &dir.join(format!("{}.png", row.name)),
            )?;
        }
        scores.push(s);
        bar.inc(1);
    }
    bar.finish_and_clear();

    let report = EvalReport::new(scores);
    if dry {
        println!("dry frames: PSNR-Y / SSIM-Y of the output against its input (inf = untouched)");
    }
    println!("{}", report.table());
    if generator.is_some() && !rows.is_empty() {
        eprintln!(
            "inference: {:.1} ms per image on average",
            1000.0 * seconds / rows.len() as f64
        );
    }
    if let Some(path) = &args.json {
        let doc = serde_json::json!({
            "mode": mode,
            "model": args.model,
            "pred": args.pred,
            "gt": args.gt,
            "input": args.input,
            "pairs": args.pairs,
            "dry": args.dry,
            "images": report.images,
            "mean": report.mean,
            "worst": report.worst,
        });
        let text = serde_json::to_string_pretty(&doc)?;
        imageio::write_file_atomic(path, text.as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// One row per image of `dir`, as the model's input (no reference).
fn input_rows(dir: &std::path::Path) -> Result<Vec<Row>> {
    Ok(eval::images_by_stem(dir)?
        .into_iter()
        .map(|(name, p)| Row {
            name,
            input: Some(p),
            pred: None,
            gt: None,
        })
        .collect())
}

/// Checks the combination of options and lists the rows, matching folders by stem.
fn plan(args: &EvalArgs) -> Result<(Vec<Row>, &'static str)> {
    if let Some(dry) = &args.dry {
        if args.model.is_none() || args.pairs.is_some() || args.pred.is_some() {
            bail!(
                "--dry DIR runs a model on frames without rain: give --model M and no --pairs/--pred"
            );
        }
        if args.gt.is_some() || args.input.is_some() {
            bail!("--dry DIR is its own reference: drop --gt and --input");
        }
        return Ok((input_rows(dry)?, "model-dry"));
    }
    match (&args.model, &args.pairs, &args.pred, &args.gt, &args.input) {
        (Some(_), Some(pairs), None, None, None) => {
            let (rainy, clean) = (pairs.join("rainy"), pairs.join("clean"));
            for d in [&rainy, &clean] {
                if !d.is_dir() {
                    bail!(
                        "{} is not a folder: --pairs needs DIR/rainy and DIR/clean",
                        d.display()
                    );
                }
            }
            let rows = eval::match_pairs(&rainy, &clean)?
                .into_iter()
                .map(|(name, r, c)| Row {
                    name,
                    input: Some(r),
                    pred: None,
                    gt: Some(c),
                })
                .collect();
            Ok((rows, "model-pairs"))
        }
        (Some(_), None, None, None, Some(input)) => Ok((input_rows(input)?, "model-no-reference")),
        (None, None, Some(pred), gt, input) => {
            let reference = gt.as_ref().or(input.as_ref());
            let mut rows: Vec<Row> = match reference {
                Some(r) => eval::match_pairs(pred, r)?
                    .into_iter()
                    .map(|(name, p, _)| Row {
                        name,
                        input: None,
                        pred: Some(p),
                        gt: None,
                    })
                    .collect(),
                None => eval::images_by_stem(pred)?
                    .into_iter()
                    .map(|(name, p)| Row {
                        name,
                        input: None,
                        pred: Some(p),
                        gt: None,
                    })
                    .collect(),
            };
            if let Some(gt) = gt {
                let m = eval::images_by_stem(gt)?;
                for r in &mut rows {
                    r.gt = m.get(&r.name).cloned();
                }
            }
            if let Some(input) = input {
                // Every output needs its input and the other way round.
                eval::match_pairs(pred, input)?;
                let m = eval::images_by_stem(input)?;
                for r in &mut rows {
                    r.input = m.get(&r.name).cloned();
                }
            }
            let mode = if gt.is_some() {
                "paired"
            } else {
                "no-reference"
            };
            Ok((rows, mode))
        }
        _ => bail!(
            "choose one mode: --pred DIR [--gt DIR] [--input DIR], --model M --pairs DIR, \
             --model M --input DIR or --model M --dry DIR (see --help)"
        ),
    }
}
