//! `derain eval-detect`: does deraining help the detector? On rainy/clean pairs, the detector's
//! mAP@0.5 on the rainy frames and on the derained frames, both scored against the detector's own
//! boxes on the clean frame (no labels needed: the clean frame shows what the detector would
//! find without rain).

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use derain::detect::{Detection, Detector, DetectorConfig, ImageView, Labels, PostProcess};
use derain::eval;
use derain::imageio::{self, RgbImage};
use derain::map::{ImageBoxes, MapReport, mean_average_precision};
use derain::model::Model;
use derain::runtime::{Generator, Provider, SessionOptions};
use derain::stills::derain_image;
use serde::Serialize;

/// Where the default pairs live inside the shared data folder.
const DEFAULT_PAIRS: &str = "pairs/carla-dev";

#[derive(clap::Args)]
#[command(
    after_help = "References are the detector's own boxes on DIR/clean scoring at least \
--ref-threshold; the detections on the rainy and derained frames are kept down to \
--det-threshold (so the whole precision/recall curve counts) and at most --max-detections per \
image, as COCO does. A box is a true positive at IoU >= --iou with an unclaimed reference of its \
class (PASCAL VOC matching, all-point interpolated AP, averaged over the classes present in the \
reference). Pairs match by file stem."
)]
pub struct EvalDetectArgs {
    /// Folder holding rainy/ and clean/ with matching names [default: the shared data's
    /// pairs/carla-dev].
    #[arg(long)]
    pairs: Option<PathBuf>,
    /// The YOLO-family ONNX detector (YOLOX, YOLOv5 or YOLOv8 output layout).
    #[arg(long)]
    detector: PathBuf,
    /// The deraining generator; without it only the rainy frames are scored.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Execution provider for both networks (auto, cpu, cuda, tensorrt).
    #[arg(long, default_value = "auto")]
    provider: Provider,
    /// ONNX Runtime library to load (default: search, see README).
    #[arg(long)]
    ort_library: Option<PathBuf>,
    /// Reference boxes (on the clean frames) score at least this.
    #[arg(long, default_value_t = 0.25)]
    ref_threshold: f32,
    /// Scored boxes (on the rainy and derained frames) score at least this.
    #[arg(long, default_value_t = 0.001)]
    det_threshold: f32,
    /// IoU a detection needs with its reference box to count.
    #[arg(long, default_value_t = 0.5)]
    iou: f32,
    /// At most this many boxes per image, the highest scoring.
    #[arg(long, default_value_t = 100)]
    max_detections: usize,
    /// Write the figures (per class and per image) as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// Box counts of one pair.
#[derive(Serialize)]
struct PairCounts {
    name: String,
    references: usize,
    rainy: usize,
    derained: Option<usize>,
}

pub fn run(args: EvalDetectArgs) -> Result<()> {
    let pairs = match &args.pairs {
        Some(p) => p.clone(),
        None => derain::devdata::shared_data()
            .map(|d| d.join(DEFAULT_PAIRS))
            .context(
                "no --pairs given and no shared data folder (../shared/data or $DERAIN_DATA) \
                 to take pairs/carla-dev from",
            )?,
    };
    let (rainy_dir, clean_dir) = (pairs.join("rainy"), pairs.join("clean"));
    for d in [&rainy_dir, &clean_dir] {
        if !d.is_dir() {
            bail!(
                "{} is not a folder: --pairs needs DIR/rainy and DIR/clean",
                d.display()
            );
        }
    }
    if !args.detector.is_file() {
        bail!("detector {} does not exist", args.detector.display());
    }
    for (name, v) in [
        ("--ref-threshold", args.ref_threshold),
        ("--det-threshold", args.det_threshold),
    ] {
        if !(0.0..=1.0).contains(&v) {
            bail!("{name} {v} is not in [0, 1]");
        }
    }
    if args.max_detections == 0 {
        bail!("--max-detections must be at least 1");
    }
    if let Some(j) = &args.json
        && eval::is_inside(j, &pairs)
    {
        bail!(
            "{} is inside the input folder {}: choose an output outside it",
            j.display(),
            pairs.display()
        );
    }
    let rows = eval::match_pairs(&rainy_dir, &clean_dir)?;

    let options = SessionOptions {
        provider: args.provider,
        ort_library: args.ort_library.clone(),
        ..SessionOptions::default()
    };
    let mut detector = Detector::from_path(&args.detector, &options, &DetectorConfig::default())?;
    eprintln!(
        "detector {} ({} layout) on {}",
        args.detector.display(),
        detector.layout(),
        detector.provider()
    );
    let mut generator = match &args.model {
        Some(m) => {
            let g = Generator::new(&Model::from_path(m)?, &options)?;
            eprintln!("model {} on {}", m.display(), g.provider());
            Some(g)
        }
        None => None,
    };
    let post = |score_threshold| PostProcess {
        score_threshold,
        max_detections: args.max_detections,
        ..PostProcess::default()
    };
    let (ref_post, det_post) = (post(args.ref_threshold), post(args.det_threshold));
    let mut detect = |img: &RgbImage, post: &PostProcess| -> Result<Vec<Detection>> {
        let (w, h) = (img.width() as usize, img.height() as usize);
        Ok(detector.detect(&ImageView::rgb(img.as_raw(), w, h), post)?)
    };

    let bar = indicatif::ProgressBar::new(rows.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} detecting [{bar:30}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let mut rainy_boxes = Vec::with_capacity(rows.len());
    let mut derained_boxes = Vec::with_capacity(rows.len());
    let mut counts = Vec::with_capacity(rows.len());
    for (name, rainy_path, clean_path) in &rows {
        bar.set_message(name.clone());
        let rainy = eval::load(rainy_path)?;
        let clean = eval::load(clean_path)?;
        eval::check_sizes([("rainy", &rainy, &clean)]).with_context(|| name.clone())?;
        let references = detect(&clean, &ref_post).with_context(|| format!("{name} (clean)"))?;
        let on_rainy = detect(&rainy, &det_post).with_context(|| format!("{name} (rainy)"))?;
        let on_derained = match &mut generator {
            Some(g) => {
                let derained = derain_image(g, &rainy)
                    .with_context(|| format!("running the model on {name}"))?;
                Some(detect(&derained, &det_post).with_context(|| format!("{name} (derained)"))?)
            }
            None => None,
        };
        counts.push(PairCounts {
            name: name.clone(),
            references: references.len(),
            rainy: on_rainy.len(),
            derained: on_derained.as_ref().map(Vec::len),
        });
        if let Some(d) = on_derained {
            derained_boxes.push(ImageBoxes {
                references: references.clone(),
                detections: d,
            });
        }
        rainy_boxes.push(ImageBoxes {
            references,
            detections: on_rainy,
        });
        bar.inc(1);
    }
    bar.finish_and_clear();

    let n_refs: usize = counts.iter().map(|c| c.references).sum();
    let rainy = mean_average_precision(&rainy_boxes, args.iou)
        .with_context(|| format!("scoring {}", pairs.display()))?;
    let derained = if generator.is_some() {
        Some(mean_average_precision(&derained_boxes, args.iou)?)
    } else {
        None
    };
    println!(
        "{} pairs from {}; references: {n_refs} boxes in {} classes (the detector on the clean \
         frames, score >= {})",
        rows.len(),
        pairs.display(),
        rainy.classes.len(),
        args.ref_threshold
    );
    println!("{}", class_table(&rainy, derained.as_ref()));
    let iou = args.iou;
    println!("mAP@{iou} rainy    vs clean: {:.4}", rainy.map);
    if let Some(d) = &derained {
        println!("mAP@{iou} derained vs clean: {:.4}", d.map);
        println!("difference (derained - rainy): {:+.4}", d.map - rainy.map);
    }

    if let Some(path) = &args.json {
        let doc = serde_json::json!({
            "pairs": pairs,
            "detector": args.detector,
            "model": args.model,
            "ref_threshold": args.ref_threshold,
            "det_threshold": args.det_threshold,
            "max_detections": args.max_detections,
            "iou": args.iou,
            "rainy": rainy,
            "derained": derained,
            "images": counts,
        });
        let text = serde_json::to_string_pretty(&doc)?;
        imageio::write_file_atomic(path, text.as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// AP per class: `class  references  rainy  [derained]`.
fn class_table(rainy: &MapReport, derained: Option<&MapReport>) -> String {
    let labels = Labels::coco();
    let mut s = format!("{:<16} {:>5} {:>8}", "class", "refs", "AP rainy");
    if derained.is_some() {
        s.push_str(&format!(" {:>11}", "AP derained"));
    }
    for (i, c) in rainy.classes.iter().enumerate() {
        s.push_str(&format!(
            "\n{:<16} {:>5} {:>8.4}",
            labels.name(c.class_id),
            c.references,
            c.ap
        ));
        // Both reports hold the same classes in the same order: they share the references.
        if let Some(d) = derained.and_then(|d| d.classes.get(i)) {
            s.push_str(&format!(" {:>11.4}", d.ap));
        }
    }
    s
}
