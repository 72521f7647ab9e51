//! Scoring deraining results the way papers do: paired folders (PSNR-Y, SSIM-Y of the output
//! and, when given, of the rainy input), or a single folder without reference (NIQE).
//!
//! Pairs are matched by file stem, so `a.png` in the outputs pairs with `a.jpg` in the ground
//! truth. Any file in one folder but not the other, or any pair of different sizes, is an error
//! listing every offending name: a silent partial score is worse than none.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use image::RgbImage;
use serde::Serialize;

use crate::imageio::{self, ImageIoError};
use crate::metrics::{self, MetricsError, Niqe};

/// Errors from evaluation.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(
        "the folders do not pair up: {}",
        describe_unpaired(.only_a, .a, .only_b, .b)
    )]
    Unpaired {
        a: PathBuf,
        b: PathBuf,
        only_a: Vec<String>,
        only_b: Vec<String>,
    },
    #[error("{} has no images", .0.display())]
    Empty(PathBuf),
    #[error("images differ in size (output vs reference): {}", .0.join("; "))]
    SizeMismatch(Vec<String>),
    #[error("{} and {} both have an image named {stem:?}", .a.display(), .b.display())]
    DuplicateStem {
        stem: String,
        a: PathBuf,
        b: PathBuf,
    },
    #[error(transparent)]
    Image(#[from] ImageIoError),
    #[error("{name}: {source}")]
    Metric {
        name: String,
        #[source]
        source: MetricsError,
    },
}

fn describe_unpaired(only_a: &[String], a: &Path, only_b: &[String], b: &Path) -> String {
    let mut parts = Vec::new();
    if !only_a.is_empty() {
        parts.push(format!(
            "only in {}: {}",
            a.display(),
            crate::eval::short_list(only_a)
        ));
    }
    if !only_b.is_empty() {
        parts.push(format!(
            "only in {}: {}",
            b.display(),
            crate::eval::short_list(only_b)
        ));
    }
    parts.join("; ")
}

fn short_list(names: &[String]) -> String {
    const SHOWN: usize = 20;
    let mut s = names
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOWN {
        s.push_str(&format!(" and {} more", names.len() - SHOWN));
    }
    s
}

/// The images of a folder keyed by file stem.
pub fn images_by_stem(dir: &Path) -> Result<BTreeMap<String, PathBuf>, EvalError> {
    let files = imageio::list_images(dir)?;
    if files.is_empty() {
        return Err(EvalError::Empty(dir.to_owned()));
    }
    let mut out = BTreeMap::new();
    for f in files {
        let stem = f
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        if let Some(prev) = out.insert(stem.clone(), f.clone()) {
            return Err(EvalError::DuplicateStem {
                stem,
                a: prev,
                b: f,
            });
        }
    }
    Ok(out)
}

/// Matches the images of `a` and `b` by stem; every image must have a partner.
pub fn match_pairs(a: &Path, b: &Path) -> Result<Vec<(String, PathBuf, PathBuf)>, EvalError> {
    let ma = images_by_stem(a)?;
    let mb = images_by_stem(b)?;
    let only_a: Vec<String> = ma
        .keys()
        .filter(|k| !mb.contains_key(*k))
        .cloned()
        .collect();
    let only_b: Vec<String> = mb
        .keys()
        .filter(|k| !ma.contains_key(*k))
        .cloned()
        .collect();
    if !only_a.is_empty() || !only_b.is_empty() {
        return Err(EvalError::Unpaired {
            a: a.to_owned(),
            b: b.to_owned(),
            only_a,
            only_b,
        });
    }
    Ok(ma
        .into_iter()
        .filter_map(|(k, pa)| mb.get(&k).map(|pb| (k, pa, pb.clone())))
        .collect())
}

/// Scores of one image.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ImageScore {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub psnr_y: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ssim_y: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub niqe: Option<f64>,
    /// The same scores for the rainy input, when it was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_psnr_y: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_ssim_y: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_niqe: Option<f64>,
}

/// Per-image scores, their means and their worst values.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct EvalReport {
    pub images: Vec<ImageScore>,
    pub mean: ImageScore,
    /// Per score, the worst image's value (lowest PSNR-Y and SSIM-Y, highest NIQE): on dry
    /// frames one damaged frame matters more than a good mean.
    pub worst: ImageScore,
}

fn worst_of(
    rows: &[ImageScore],
    f: impl Fn(&ImageScore) -> Option<f64>,
    higher_is_worse: bool,
) -> Option<f64> {
    let v: Vec<f64> = rows.iter().filter_map(&f).collect();
    (!v.is_empty() && v.len() == rows.len()).then(|| {
        v.into_iter()
            .reduce(|a, b| if (b > a) == higher_is_worse { b } else { a })
            .unwrap_or(f64::NAN)
    })
}

fn mean_of(rows: &[ImageScore], f: impl Fn(&ImageScore) -> Option<f64>) -> Option<f64> {
    let v: Vec<f64> = rows.iter().filter_map(&f).collect();
    // A perfect reconstruction has infinite PSNR; the mean is then infinite too, which is what
    // it is, and the table prints "inf".
    (!v.is_empty() && v.len() == rows.len()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

impl EvalReport {
    /// Builds the report and its means (a mean is given only when every image has the score).
    pub fn new(images: Vec<ImageScore>) -> Self {
        let mean = ImageScore {
            name: "mean".into(),
            psnr_y: mean_of(&images, |r| r.psnr_y),
            ssim_y: mean_of(&images, |r| r.ssim_y),
            niqe: mean_of(&images, |r| r.niqe),
            input_psnr_y: mean_of(&images, |r| r.input_psnr_y),
            input_ssim_y: mean_of(&images, |r| r.input_ssim_y),
            input_niqe: mean_of(&images, |r| r.input_niqe),
        };
        let worst = ImageScore {
            name: "worst".into(),
            psnr_y: worst_of(&images, |r| r.psnr_y, false),
            ssim_y: worst_of(&images, |r| r.ssim_y, false),
            niqe: worst_of(&images, |r| r.niqe, true),
            input_psnr_y: worst_of(&images, |r| r.input_psnr_y, false),
            input_ssim_y: worst_of(&images, |r| r.input_ssim_y, false),
            input_niqe: worst_of(&images, |r| r.input_niqe, true),
        };
        Self {
            images,
            mean,
            worst,
        }
    }

    /// A fixed-width table: one row per image, then the worst values and the means. For paired
    /// runs the last line is the mean and carries the mean PSNR-Y.
    pub fn table(&self) -> String {
        type Col = (&'static str, fn(&ImageScore) -> Option<f64>, usize);
        let all: [Col; 6] = [
            ("input PSNR-Y", |r| r.input_psnr_y, 2),
            ("input SSIM-Y", |r| r.input_ssim_y, 4),
            ("input NIQE", |r| r.input_niqe, 3),
            ("PSNR-Y", |r| r.psnr_y, 2),
            ("SSIM-Y", |r| r.ssim_y, 4),
            ("NIQE", |r| r.niqe, 3),
        ];
        let cols: Vec<&Col> = all
            .iter()
            .filter(|(_, f, _)| self.images.iter().any(|r| f(r).is_some()))
            .collect();
        let name_w = self
            .images
            .iter()
            .map(|r| r.name.chars().count())
            .max()
            .unwrap_or(4)
            .max(5);
        let mut out = format!("{:<name_w$}", "image");
        for (title, _, _) in &cols {
            out.push_str(&format!(" {title:>12}"));
        }
        out.push('\n');
        let row = |r: &ImageScore| {
            let mut line = format!("{:<name_w$}", r.name);
            for (_, f, digits) in &cols {
                match f(r) {
                    Some(v) => line.push_str(&format!(" {v:>12.digits$}")),
                    None => line.push_str(&format!(" {:>12}", "-")),
                }
            }
            line
        };
        for r in &self.images {
            out.push_str(&row(r));
            out.push('\n');
        }
        out.push_str(&"-".repeat(name_w + 13 * cols.len()));
        out.push('\n');
        out.push_str(&row(&self.worst));
        out.push('\n');
        out.push_str(&row(&self.mean));
        out
    }
}

/// Loads the image at `path`.
pub fn load(path: &Path) -> Result<RgbImage, EvalError> {
    Ok(imageio::load_rgb(path)?)
}

/// PSNR-Y and SSIM-Y of `pred` against `reference`, with the image's name on errors.
pub fn paired_scores(
    name: &str,
    pred: &RgbImage,
    reference: &RgbImage,
) -> Result<(f64, f64), EvalError> {
    let wrap = |source| EvalError::Metric {
        name: name.to_owned(),
        source,
    };
    Ok((
        metrics::psnr_y(pred, reference).map_err(wrap)?,
        metrics::ssim_y(pred, reference).map_err(wrap)?,
    ))
}

/// Fidelity on a dry frame: PSNR-Y and SSIM-Y of the model's `output` against its own rain-free
/// `input` (infinite PSNR-Y when the model leaves the frame untouched). A derainer in a car sees
/// dry weather most of the time, and then it must be a no-op.
pub fn dry_fidelity(
    name: &str,
    input: &RgbImage,
    output: &RgbImage,
) -> Result<(f64, f64), EvalError> {
    paired_scores(name, output, input)
}

/// `|a − b|` per channel, multiplied by `gain` and clamped to 255: what a model changed, made
/// visible (a change of 2 levels, a 42 dB frame, shows as 20 at gain 10). Sizes must match; the
/// overlap is used otherwise.
pub fn difference_image(a: &RgbImage, b: &RgbImage, gain: f32) -> RgbImage {
    let (w, h) = (a.width().min(b.width()), a.height().min(b.height()));
    RgbImage::from_fn(w, h, |x, y| {
        let (pa, pb) = (a.get_pixel(x, y).0, b.get_pixel(x, y).0);
        image::Rgb(std::array::from_fn(|c| {
            let d = (f32::from(pa[c]) - f32::from(pb[c])).abs() * gain;
            d.round().min(255.0) as u8
        }))
    })
}

/// NIQE of one image, with its name on errors.
pub fn niqe_score(niqe: &Niqe, name: &str, img: &RgbImage) -> Result<f64, EvalError> {
    niqe.score(img).map_err(|source| EvalError::Metric {
        name: name.to_owned(),
        source,
    })
}

/// Checks that every pair has equal sizes; the error lists all that do not.
pub fn check_sizes<'a>(
    pairs: impl IntoIterator<Item = (&'a str, &'a RgbImage, &'a RgbImage)>,
) -> Result<(), EvalError> {
    let bad: Vec<String> = pairs
        .into_iter()
        .filter(|(_, a, b)| a.dimensions() != b.dimensions())
        .map(|(n, a, b)| {
            format!(
                "{n} ({}x{} vs {}x{})",
                a.width(),
                a.height(),
                b.width(),
                b.height()
            )
        })
        .collect();
    if bad.is_empty() {
        Ok(())
    } else {
        Err(EvalError::SizeMismatch(bad))
    }
}

/// True when `candidate` is `dir` or lies inside it (both made absolute; nothing needs to exist).
pub fn is_inside(candidate: &Path, dir: &Path) -> bool {
    let abs = |p: &Path| {
        let p = if p.is_absolute() {
            p.to_owned()
        } else {
            std::env::current_dir().unwrap_or_default().join(p)
        };
        // Resolve what exists (symlinks, ..), keep the rest as written.
        let mut existing = p.clone();
        let mut rest = Vec::new();
        while !existing.exists() {
            match (existing.file_name(), existing.parent()) {
                (Some(name), Some(parent)) => {
                    rest.push(name.to_owned());
                    existing = parent.to_owned();
                }
                _ => break,
            }
        }
        let mut out = existing.canonicalize().unwrap_or(existing);
        for name in rest.into_iter().rev() {
            out.push(name);
        }
        out
    };
    abs(candidate).starts_with(abs(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(dir: &Path, name: &str, w: u32, h: u32) {
        imageio::save_png_atomic(&RgbImage::new(w, h), &dir.join(name)).unwrap();
    }

    #[test]
    fn pairs_match_by_stem_and_list_the_orphans() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        put(a.path(), "x.png", 4, 4);
        put(b.path(), "x.png", 4, 4);
        put(a.path(), "only-a.png", 4, 4);
        put(b.path(), "only-b.png", 4, 4);
        let e = match_pairs(a.path(), b.path()).unwrap_err().to_string();
        assert!(e.contains("only-a") && e.contains("only-b"), "{e}");
        std::fs::remove_file(a.path().join("only-a.png")).unwrap();
        std::fs::remove_file(b.path().join("only-b.png")).unwrap();
        let p = match_pairs(a.path(), b.path()).unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].0, "x");
    }

    #[test]
    fn size_mismatch_lists_every_name() {
        let a = RgbImage::new(4, 4);
        let b = RgbImage::new(4, 5);
        let e = check_sizes([("one", &a, &b), ("two", &a, &a), ("three", &b, &a)])
            .unwrap_err()
            .to_string();
        assert!(e.contains("one (4x4 vs 4x5)") && e.contains("three") && !e.contains("two"));
    }

    #[test]
    fn table_ends_with_the_mean_psnr() {
        let r = EvalReport::new(vec![
            ImageScore {
                name: "a".into(),
                psnr_y: Some(30.0),
                ssim_y: Some(0.9),
                input_psnr_y: Some(25.0),
                ..ImageScore::default()
            },
            ImageScore {
                name: "b".into(),
                psnr_y: Some(32.0),
                ssim_y: Some(0.8),
                input_psnr_y: Some(27.0),
                ..ImageScore::default()
            },
        ]);
        assert_eq!(r.mean.psnr_y, Some(31.0));
        assert_eq!(r.mean.input_psnr_y, Some(26.0));
        let t = r.table();
        let last = t.lines().last().unwrap();
        assert!(last.starts_with("mean") && last.contains("31.00"), "{t}");
        assert!(!t.contains("NIQE"), "{t}");
        assert_eq!(r.worst.psnr_y, Some(30.0));
        assert_eq!(r.worst.ssim_y, Some(0.8));
        assert!(
            t.lines()
                .any(|l| l.starts_with("worst") && l.contains("30.00"))
        );
    }

    #[test]
    fn worst_niqe_is_the_highest() {
        let row = |n: f64| ImageScore {
            niqe: Some(n),
            ..ImageScore::default()
        };
        let r = EvalReport::new(vec![row(3.0), row(5.5), row(4.0)]);
        assert_eq!(r.worst.niqe, Some(5.5));
    }

    /// Brute force: PSNR-Y written out per pixel from the Y definition in docs/ARCHITECTURE.md,
    /// Metrics.
    #[test]
    fn dry_fidelity_matches_a_brute_force_psnr_y() {
        let input = RgbImage::from_fn(16, 12, |x, y| {
            image::Rgb([(x * 13) as u8, (y * 17) as u8, ((x + y) * 5) as u8])
        });
        let mut output = input.clone();
        output.put_pixel(3, 4, image::Rgb([200, 10, 10]));
        output.put_pixel(10, 7, image::Rgb([0, 0, 255]));
        let luma = |p: &image::Rgb<u8>| {
            let [r, g, b] = p.0.map(|v| f64::from(v) / 255.0);
            16.0 + 65.481 * r + 128.553 * g + 24.966 * b
        };
        let mse = input
            .pixels()
            .zip(output.pixels())
            .map(|(a, b)| (luma(a) - luma(b)).powi(2))
            .sum::<f64>()
            / (16.0 * 12.0);
        let want = 20.0 * (255.0 / mse.sqrt()).log10();
        let (psnr, ssim) = dry_fidelity("x", &input, &output).unwrap();
        assert!((psnr - want).abs() < 1e-6, "{psnr} vs {want}");
        assert!(ssim < 1.0 && ssim > 0.5, "{ssim}");
        let (same, same_ssim) = dry_fidelity("x", &input, &input).unwrap();
        assert!(same.is_infinite() && (same_ssim - 1.0).abs() < 1e-12);
    }

    #[test]
    fn difference_image_amplifies_the_change() {
        let a = RgbImage::from_pixel(3, 2, image::Rgb([100, 100, 100]));
        let mut b = a.clone();
        b.put_pixel(1, 1, image::Rgb([102, 90, 100]));
        let d = difference_image(&a, &b, 10.0);
        assert_eq!(d.get_pixel(1, 1).0, [20, 100, 0]);
        assert_eq!(d.get_pixel(0, 0).0, [0, 0, 0]);
    }

    #[test]
    fn inside_checks_resolve_relative_paths() {
        let d = tempfile::tempdir().unwrap();
        assert!(is_inside(&d.path().join("grid/x"), d.path()));
        assert!(is_inside(d.path(), d.path()));
        assert!(!is_inside(d.path(), &d.path().join("sub")));
        assert!(is_inside(&d.path().join("sub/../y"), d.path()));
    }
}
