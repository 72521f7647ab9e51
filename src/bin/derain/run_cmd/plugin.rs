//! Finding the `derain`, `yolodetect` and `boxoverlay` elements. The CLI does not link the plugin
//! (the plugin depends on the library, not the other way round), so it loads the built or
//! installed `libgstderain.so` like any GStreamer application: through GST_PLUGIN_PATH.

use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::{Result, bail};

/// The plugin's file name.
pub const PLUGIN_FILE: &str = "libgstderain.so";

/// Where `derain run` looks, in order: next to its own executable (`target/debug`,
/// `target/release`: a fresh build wins over an installed copy), then where `make install` puts
/// it (`$XDG_DATA_HOME/gstreamer-1.0/plugins`, by default `~/.local/share/...`).
pub fn candidate_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(PathBuf::from))
    {
        dirs.push(dir);
    }
    let data_home = std::env::var_os("XDG_DATA_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")));
    if let Some(d) = data_home {
        dirs.push(d.join("gstreamer-1.0/plugins"));
    }
    dirs
}

/// Puts the folders of [`candidate_dirs`] that hold the plugin in front of GST_PLUGIN_PATH.
/// GStreamer takes the first copy of a plugin file it meets along its path, so the copy beside
/// the executable is the one loaded. Returns the folders searched, for the error message.
///
/// Must run before `gst::init` and before this process starts any thread (it sets an
/// environment variable).
pub fn prepend_plugin_path() -> Vec<PathBuf> {
    let dirs = candidate_dirs();
    let found: Vec<&PathBuf> = dirs
        .iter()
        .filter(|d| d.join(PLUGIN_FILE).is_file())
        .collect();
    if !found.is_empty() {
        let mut parts: Vec<PathBuf> = found.into_iter().cloned().collect();
        if let Some(old) = std::env::var_os("GST_PLUGIN_PATH") {
            parts.extend(std::env::split_paths(&old));
        }
        if let Ok(joined) = std::env::join_paths(parts) {
            set_plugin_path(joined);
        }
    }
    dirs
}

fn set_plugin_path(value: OsString) {
    // SAFETY: called from `derain run` on the main thread before gst::init and before any other
    // thread exists, so nothing can read the environment concurrently.
    unsafe { std::env::set_var("GST_PLUGIN_PATH", value) };
}

/// Errors unless every element in `names` can be made.
pub fn require_elements(names: &[&str], searched: &[PathBuf]) -> Result<()> {
    let missing: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| gst::ElementFactory::find(n).is_none())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let places: Vec<String> = searched
        .iter()
        .map(|d| d.join(PLUGIN_FILE).display().to_string())
        .collect();
    bail!(
        "GStreamer element(s) {} not found: the derain plugin is not built or installed. Run \
         `make build` (puts {PLUGIN_FILE} next to this executable) or `make install`. Looked for \
         {} and along GST_PLUGIN_PATH",
        missing.join(", "),
        places.join(" and ")
    )
}
