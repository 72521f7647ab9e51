//! Unpaired one-domain sets: the frames of some drives split into two disjoint halves, one kept
//! clean and one that gets rain rendered over it, so that an unpaired training stage (ANLCL) can
//! be checked where PSNR judges it (rainy and clean frames of the same domain, never of the same
//! frame). And the guard an unpaired stage runs: its rainy set must not let the trainer read the
//! rainy frames' own clean partners.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};

use super::{FootageError, Source, expand_sources};

/// Splits image frames into two disjoint halves, deterministically: the frames of each folder
/// (one drive) in name order, cut into runs of `block` consecutive frames that go to half A and
/// half B in turn (A first). Runs rather than single frames, so that few frames of one half have
/// their direct neighbours in the other. Every frame lands in exactly one half.
pub fn split_halves(frames: &[PathBuf], block: usize) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let block = block.max(1);
    let mut drives: BTreeMap<PathBuf, BTreeSet<PathBuf>> = BTreeMap::new();
    for f in frames {
        let drive = f.parent().map(Path::to_path_buf).unwrap_or_default();
        drives.entry(drive).or_default().insert(f.clone());
    }
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for files in drives.values() {
        for (i, f) in files.iter().enumerate() {
            if (i / block).is_multiple_of(2) {
                a.push(f.clone());
            } else {
                b.push(f.clone());
            }
        }
    }
    (a, b)
}

/// The image frames of the given sources (folders, lists, images), for [`split_halves`]; a video
/// is refused, since its frames cannot be named one by one in a list.
pub fn image_frames(sources: &[PathBuf]) -> Result<Vec<PathBuf>, FootageError> {
    expand_sources(sources)?
        .into_iter()
        .map(|s| match s {
            Source::Image(p) => Ok(p),
            Source::Video(p) => Err(FootageError::Option(format!(
                "{}: a video cannot be split frame by frame; extract its frames to a folder first",
                p.display()
            ))),
        })
        .collect()
}

/// A list file's text: one path per line, relative to `list_dir` where it can be (lists resolve
/// their lines against their own folder), after a comment header.
pub fn list_text(header: &str, frames: &[PathBuf], list_dir: &Path) -> String {
    let base = absolute(list_dir);
    let mut out = String::new();
    for line in header.lines() {
        out.push_str("# ");
        out.push_str(line);
        out.push('\n');
    }
    for f in frames {
        let p = absolute(f);
        let rel = relative_to(&p, &base).unwrap_or(p);
        out.push_str(&rel.to_string_lossy());
        out.push('\n');
    }
    out
}

fn absolute(p: &Path) -> PathBuf {
    p.canonicalize()
        .or_else(|_| std::path::absolute(p))
        .unwrap_or_else(|_| p.to_path_buf())
}

/// `path` relative to `base` (both absolute), with `..` where needed.
fn relative_to(path: &Path, base: &Path) -> Option<PathBuf> {
    let (p, b): (Vec<_>, Vec<_>) = (path.components().collect(), base.components().collect());
    if p.first() != b.first() {
        return None;
    }
    let common = p.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let mut out = PathBuf::new();
    for _ in common..b.len() {
        out.push("..");
    }
    for c in &p[common..] {
        out.push(c);
    }
    Some(out)
}

/// Why a rainy set cannot feed an unpaired stage.
#[derive(Debug, thiserror::Error)]
pub enum UnpairedError {
    #[error(
        "data.rainy: {rainy} has its clean partners readable in {clean} (e.g. {example}); an \
         unpaired stage must not be able to read them: render with `derain synth --rainy-only`, \
         or move that folder away"
    )]
    PartnersReadable {
        rainy: PathBuf,
        clean: PathBuf,
        example: String,
    },
    #[error(
        "data.clean and data.rainy share {count} frame(s): {examples}; the rain in {rainy} was \
         rendered over frames the clean set also holds, so the two halves overlap"
    )]
    Overlap {
        rainy: PathBuf,
        count: usize,
        examples: String,
    },
    #[error(transparent)]
    Footage(#[from] FootageError),
    #[error("cannot read {path}: {reason}")]
    Manifest { path: PathBuf, reason: String },
}

/// Checks a rainy set for an unpaired stage against its clean set:
/// - a rainy folder laid out as a pair (`X/rainy` beside `X/clean` holding files of the same
///   names, as `derain synth` writes by default or a paired data set) is refused: the trainer
///   could read each rainy frame's own clean frame;
/// - a rainy folder rendered by `derain synth` (its `synth.json` beside it names the frames the
///   rain was rendered over) must not have been rendered over any clean frame of the clean set;
/// - no file may be in both sets.
pub fn check_unpaired(clean: &[PathBuf], rainy: &[PathBuf]) -> Result<(), UnpairedError> {
    let clean_files: HashSet<PathBuf> = expand_sources(clean)?
        .iter()
        .map(|s| absolute(s.path()))
        .collect();
    for r in rainy {
        let mut shared: Vec<PathBuf> = Vec::new();
        if r.is_dir()
            && let Some(parent) = r.parent()
        {
            let partners = parent.join("clean");
            if partners.is_dir() && absolute(&partners) != absolute(r) {
                let example = std::fs::read_dir(r)
                    .map_err(|e| UnpairedError::Manifest {
                        path: r.clone(),
                        reason: e.to_string(),
                    })?
                    .filter_map(|e| e.ok())
                    .map(|e| e.file_name())
                    .find(|name| partners.join(name).is_file());
                if let Some(example) = example {
                    return Err(UnpairedError::PartnersReadable {
                        rainy: r.clone(),
                        clean: partners,
                        example: example.to_string_lossy().into_owned(),
                    });
                }
            }
            let manifest = parent.join("synth.json");
            if manifest.is_file() {
                shared.extend(
                    rendered_over(&manifest)?
                        .into_iter()
                        .filter(|p| clean_files.contains(&absolute(p))),
                );
            }
        }
        shared.extend(
            expand_sources(std::slice::from_ref(r))?
                .iter()
                .map(|s| s.path().to_path_buf())
                .filter(|p| clean_files.contains(&absolute(p))),
        );
        if !shared.is_empty() {
            shared.sort();
            shared.dedup();
            let examples: Vec<String> = shared
                .iter()
                .take(5)
                .map(|p| p.display().to_string())
                .collect();
            let more = if shared.len() > 5 { ", ..." } else { "" };
            return Err(UnpairedError::Overlap {
                rainy: r.clone(),
                count: shared.len(),
                examples: format!("{}{more}", examples.join(", ")),
            });
        }
    }
    Ok(())
}

/// The source frames a `derain synth` manifest says its rain was rendered over.
fn rendered_over(manifest: &Path) -> Result<Vec<PathBuf>, UnpairedError> {
    let err = |reason: String| UnpairedError::Manifest {
        path: manifest.to_path_buf(),
        reason,
    };
    let text = std::fs::read_to_string(manifest).map_err(|e| err(e.to_string()))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| err(e.to_string()))?;
    Ok(v.get("sources")
        .and_then(|s| s.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|s| s.get("source").and_then(|p| p.as_str()))
                .map(PathBuf::from)
                .collect()
        })
        .unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(drive: &str, n: usize) -> Vec<PathBuf> {
        (0..n)
            .map(|i| PathBuf::from(format!("/d/{drive}/{drive}_{i:05}.png")))
            .collect()
    }

    #[test]
    fn split_is_deterministic_disjoint_and_complete() {
        let mut all = frames("x", 23);
        all.extend(frames("y", 7));
        let (a, b) = split_halves(&all, 5);
        let mut shuffled = all.clone();
        shuffled.reverse();
        assert_eq!(split_halves(&shuffled, 5), (a.clone(), b.clone()));
        let sa: HashSet<_> = a.iter().collect();
        assert!(b.iter().all(|f| !sa.contains(f)));
        assert_eq!(a.len() + b.len(), all.len());
        // Runs of five per drive, A first: x gives 0-4, 10-14, 20-22 to A; y gives 0-4 to A.
        assert_eq!(a.len(), 5 + 5 + 3 + 5);
        assert!(a.contains(&all[0]) && b.contains(&all[5]) && a.contains(&all[10]));
    }

    #[test]
    fn relative_paths_climb_out_of_the_list_folder() {
        let r = relative_to(Path::new("/a/b/c/f.png"), Path::new("/a/x/y"));
        assert_eq!(r, Some(PathBuf::from("../../b/c/f.png")));
    }

    #[test]
    fn unpaired_guard_refuses_partners_and_overlap() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(&src).unwrap();
        let img = image::RgbImage::new(8, 8);
        for n in ["a.png", "b.png"] {
            img.save(src.join(n)).unwrap();
        }
        // A paired layout: rainy beside clean with the same names.
        let paired = dir.path().join("paired");
        for d in ["rainy", "clean"] {
            std::fs::create_dir_all(paired.join(d)).unwrap();
            img.save(paired.join(d).join("b.png")).unwrap();
        }
        let e = check_unpaired(&[src.join("a.png")], &[paired.join("rainy")]).unwrap_err();
        assert!(matches!(e, UnpairedError::PartnersReadable { .. }), "{e}");
        // Rain rendered over b, with a clean set holding b: overlap, named.
        let rendered = dir.path().join("rendered");
        std::fs::create_dir_all(rendered.join("rainy")).unwrap();
        img.save(rendered.join("rainy").join("b.png")).unwrap();
        let manifest = serde_json::json!({"sources": [{"source": src.join("b.png")}]});
        std::fs::write(rendered.join("synth.json"), manifest.to_string()).unwrap();
        let e = check_unpaired(std::slice::from_ref(&src), &[rendered.join("rainy")]).unwrap_err();
        assert!(e.to_string().contains("b.png"), "{e}");
        // The same rendered set against the other half only: fine.
        check_unpaired(&[src.join("a.png")], &[rendered.join("rainy")]).unwrap();
    }
}
