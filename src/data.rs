//! Where the shared development data lives (`../shared/data` beside the repository, or
//! `$DERAIN_DATA`). Tests, benchmarks and the demo read it in place and skip when it is absent.

use std::path::PathBuf;

/// Environment variable naming the shared data folder.
pub const DATA_ENV: &str = "DERAIN_DATA";

/// The shared data folder, if there is one: `$DERAIN_DATA`, else `../shared/data` next to this
/// source tree.
pub fn shared_data() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os(DATA_ENV) {
        let dir = PathBuf::from(dir);
        return dir.is_dir().then_some(dir);
    }
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/data"));
    dir.is_dir().then_some(dir)
}

/// A path inside the shared data folder, if that path exists. Tests call this and skip with
/// a message naming `rel` when it returns `None`.
pub fn shared_path(rel: &str) -> Option<PathBuf> {
    let p = shared_data()?.join(rel);
    p.exists().then_some(p)
}
