//! Where the shared development data lives (`../shared/data` beside the repository, or
//! `$DERAIN_DATA`). Tests, benchmarks and the demo read it in place and skip when it is absent.

use std::path::{Path, PathBuf};

/// Environment variable naming the shared data folder.
pub const DATA_ENV: &str = "DERAIN_DATA";

/// The shared data folder, if there is one: `$DERAIN_DATA`, else `../shared/data` next to this
/// source tree.
pub fn shared_data() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os(DATA_ENV) {
        let dir = PathBuf::from(dir);
        return dir.is_dir().then_some(dir);
    }
    let dir = beside_the_repository();
    dir.is_dir().then_some(dir)
}

/// `../shared/data` next to this source tree (the repository root is two levels above this
/// crate), whether or not it exists.
pub(crate) fn beside_the_repository() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = manifest.ancestors().nth(2).unwrap_or(manifest);
    root.join("../shared/data")
}

/// A path inside the shared data folder, if that path exists. Tests call this and skip with
/// a message naming `rel` when it returns `None`.
pub fn shared_path(rel: &str) -> Option<PathBuf> {
    let p = shared_data()?.join(rel);
    p.exists().then_some(p)
}

/// How a path is written into a model card or a record that travels to other machines: relative
/// to the shared data folder when it lies inside it (`clean-driving/bdd`), relative to the
/// working directory as `./runs/val-bdd` when it lies there, and otherwise as its last two
/// components after `…/`. A training machine's absolute paths mean nothing elsewhere, and
/// can say more about that machine than its owner wants to publish.
pub fn portable_path(path: &Path) -> String {
    let abs = |p: &Path| p.canonicalize().unwrap_or_else(|_| p.to_owned());
    let p = abs(path);
    if let Some(root) = shared_data().map(|d| abs(&d))
        && let Ok(rel) = p.strip_prefix(&root)
    {
        return rel.display().to_string();
    }
    if let Some(cwd) = std::env::current_dir().ok().map(|d| abs(&d))
        && let Ok(rel) = p.strip_prefix(&cwd)
    {
        return format!("./{}", rel.display());
    }
    if !p.is_absolute() {
        return p.display().to_string();
    }
    let tail: Vec<_> = p.components().rev().take(2).collect();
    let tail: PathBuf = tail.into_iter().rev().collect();
    format!("…/{}", tail.display())
}

/// [`portable_path`] applied to every string of a JSON value that names an existing file or
/// folder, or that is an absolute path (so a card's data section travels).
pub fn portable_paths_in(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::String(s) => {
            let p = Path::new(s.as_str());
            if p.is_absolute() || (s.contains('/') && p.exists()) {
                *s = portable_path(p);
            }
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(portable_paths_in),
        serde_json::Value::Object(o) => o.values_mut().for_each(portable_paths_in),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_outside_any_known_folder_keep_only_their_tail() {
        assert_eq!(
            portable_path(Path::new("/nonexistent-root/a/b/c.onnx")),
            "…/b/c.onnx"
        );
    }

    #[test]
    fn paths_under_the_working_directory_become_relative() {
        let cwd = std::env::current_dir().unwrap();
        let p = cwd.join("no-such-dir-here/x.png");
        assert_eq!(portable_path(&p), "./no-such-dir-here/x.png");
    }

    #[test]
    fn paths_in_the_shared_data_become_relative_to_it() {
        let Some(root) = shared_data() else {
            eprintln!("skipping: no shared data folder ({DATA_ENV} or ../shared/data)");
            return;
        };
        let p = root.join("clean-driving/bdd");
        if !p.exists() {
            eprintln!("skipping: {} is absent", p.display());
            return;
        }
        assert_eq!(portable_path(&p), "clean-driving/bdd");
        let mut v = serde_json::json!({"clean": [p.display().to_string()], "n": 3, "w": "mixed"});
        portable_paths_in(&mut v);
        assert_eq!(
            v,
            serde_json::json!({"clean": ["clean-driving/bdd"], "n": 3, "w": "mixed"})
        );
    }
}
