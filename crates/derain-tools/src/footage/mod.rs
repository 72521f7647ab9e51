//! Reading frames from recorded drives: video files (decoded through GStreamer), image folders,
//! and lists mixing both.
//!
//! [`Footage`] expands what the user names into sources (a folder gives its images and videos in
//! name order; a `.txt` or `.list` file gives one path per line, relative to the list), then
//! iterates frames with a stride, a frame budget, scene sampling (frames too similar to the last
//! kept one are skipped: a stopped car gives one frame, not a thousand) and an optional integer
//! downscale. A source that cannot be read is skipped with a warning and counted in the
//! [`FootageSummary`]; only footage that yields no frame at all is an error.

mod sampling;
pub mod split;
mod video;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use image::RgbImage;

pub use sampling::{CropSampler, downscale_box, random_crop, scene_distance, thumbnail};
pub use video::{DecodedFrame, VideoReader, VideoWriter};

use crate::imageio;

/// File extensions read as video (lower case).
pub const VIDEO_EXTENSIONS: &[&str] = &[
    "mp4", "mkv", "avi", "mov", "webm", "h264", "264", "h265", "265", "ts", "m4v", "mpg", "mpeg",
];
/// File extensions read as lists of sources.
pub const LIST_EXTENSIONS: &[&str] = &["txt", "list"];

/// Errors from reading footage.
#[derive(Debug, thiserror::Error)]
pub enum FootageError {
    #[error("{0} does not exist")]
    Missing(PathBuf),
    #[error("{path}: not a video, image, folder or list (videos: {videos}; images: {images})",
        videos = VIDEO_EXTENSIONS.join(", "), images = imageio::IMAGE_EXTENSIONS.join(", "))]
    Unsupported { path: PathBuf },
    #[error("cannot read the list {path}: {source}")]
    List {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot decode {path}: {reason}")]
    Decode { path: PathBuf, reason: String },
    #[error("cannot write video {path}: {reason}")]
    Encode { path: PathBuf, reason: String },
    #[error(transparent)]
    Image(#[from] imageio::ImageIoError),
    #[error("GStreamer could not be initialised: {0}")]
    Gstreamer(String),
    #[error("no frame could be read from {}{}", names(.sources), skipped_note(.skipped))]
    NoFrames {
        sources: Vec<PathBuf>,
        skipped: usize,
    },
    #[error("invalid footage option: {0}")]
    Option(String),
}

fn names(paths: &[PathBuf]) -> String {
    const SHOWN: usize = 5;
    let mut s: Vec<String> = paths
        .iter()
        .take(SHOWN)
        .map(|p| p.display().to_string())
        .collect();
    if paths.len() > SHOWN {
        s.push(format!("and {} more", paths.len() - SHOWN));
    }
    if s.is_empty() {
        "an empty list of sources".into()
    } else {
        s.join(", ")
    }
}

fn skipped_note(skipped: &usize) -> String {
    if *skipped > 0 {
        format!(" ({skipped} unreadable; see the warnings above)")
    } else {
        String::new()
    }
}

/// One source of frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Video(PathBuf),
    Image(PathBuf),
}

impl Source {
    pub fn path(&self) -> &Path {
        match self {
            Source::Video(p) | Source::Image(p) => p,
        }
    }
}

fn has_ext(path: &Path, exts: &[&str]) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| exts.contains(&e.to_ascii_lowercase().as_str()))
}

/// True when the extension names a video container or stream we hand to GStreamer.
pub fn is_video_path(path: &Path) -> bool {
    has_ext(path, VIDEO_EXTENSIONS)
}

/// Expands user-given paths into sources: folders (not recursive) give their images and videos
/// sorted by name, lists give their lines (blank lines and `#` comments ignored), files are
/// taken by their extension.
pub fn expand_sources(paths: &[PathBuf]) -> Result<Vec<Source>, FootageError> {
    let mut out = Vec::new();
    for p in paths {
        expand_one(p, &mut out, 0)?;
    }
    Ok(out)
}

fn expand_one(path: &Path, out: &mut Vec<Source>, depth: usize) -> Result<(), FootageError> {
    if !path.exists() {
        return Err(FootageError::Missing(path.to_owned()));
    }
    if path.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|source| FootageError::List {
                path: path.to_owned(),
                source,
            })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        entries.sort();
        for e in entries {
            if is_video_path(&e) {
                out.push(Source::Video(e));
            } else if imageio::is_image_path(&e) {
                out.push(Source::Image(e));
            }
        }
        return Ok(());
    }
    if is_video_path(path) {
        out.push(Source::Video(path.to_owned()));
    } else if imageio::is_image_path(path) {
        out.push(Source::Image(path.to_owned()));
    } else if has_ext(path, LIST_EXTENSIONS) {
        // Lists may name lists; a small depth limit turns a loop into an error, not a hang.
        if depth > 4 {
            return Err(FootageError::Option(format!(
                "lists nested too deeply at {}",
                path.display()
            )));
        }
        let text = std::fs::read_to_string(path).map_err(|source| FootageError::List {
            path: path.to_owned(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            expand_one(&base.join(line), out, depth + 1)?;
        }
    } else {
        return Err(FootageError::Unsupported {
            path: path.to_owned(),
        });
    }
    Ok(())
}

/// How frames are taken from the sources.
#[derive(Debug, Clone, PartialEq)]
pub struct FootageOptions {
    /// Keep every `stride`-th decoded frame of each video (1 = all).
    pub stride: usize,
    /// Stop after this many frames in total.
    pub max_frames: Option<usize>,
    /// Skip a frame whose [`scene_distance`] to the last kept frame of the same source is below
    /// this (0–255 scale; about 1–2 separates a stopped car's sensor noise from motion).
    /// `None` keeps every frame.
    pub min_scene_change: Option<f32>,
    /// Integer box-filter downscale applied to every frame (1 = none; the paper trains on 4×
    /// downscaled high-resolution frames).
    pub downscale: u32,
    /// Draw a progress bar on stderr (only when it is a terminal).
    pub progress: bool,
}

impl Default for FootageOptions {
    fn default() -> Self {
        Self {
            stride: 1,
            max_frames: None,
            min_scene_change: None,
            downscale: 1,
            progress: false,
        }
    }
}

impl FootageOptions {
    fn check(&self) -> Result<(), FootageError> {
        if self.stride == 0 {
            return Err(FootageError::Option("stride must be at least 1".into()));
        }
        if self.downscale == 0 {
            return Err(FootageError::Option("downscale must be at least 1".into()));
        }
        if let Some(t) = self.min_scene_change
            && !(t.is_finite() && t >= 0.0)
        {
            return Err(FootageError::Option(format!(
                "min scene change must be a number >= 0, got {t}"
            )));
        }
        Ok(())
    }
}

/// One frame and where it came from.
#[derive(Debug, Clone)]
pub struct Frame {
    pub image: RgbImage,
    /// The file it was read from.
    pub source: Arc<PathBuf>,
    /// Index of the frame in its source (decoded frames, before stride and sampling); 0 for
    /// still images.
    pub index: u64,
    /// Presentation timestamp and duration (ns) for video frames.
    pub pts: Option<u64>,
    pub duration: Option<u64>,
}

/// Counts of what a read did, for the summary line.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct FootageSummary {
    pub sources: usize,
    pub sources_read: usize,
    /// Unreadable sources and why (the run went on without them).
    pub sources_skipped: Vec<(PathBuf, String)>,
    /// Sources that broke off part way (a cut-off or corrupt file) and why; the whole frames
    /// decoded before the damage were kept.
    pub sources_damaged: Vec<(PathBuf, String)>,
    pub frames_decoded: u64,
    pub frames_yielded: u64,
    /// Frames dropped by scene sampling.
    pub frames_similar: u64,
}

impl std::fmt::Display for FootageSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} frames from {} of {} sources ({} decoded, {} skipped as near-duplicates; \
             {} sources unreadable, {} damaged)",
            self.frames_yielded,
            self.sources_read,
            self.sources,
            self.frames_decoded,
            self.frames_similar,
            self.sources_skipped.len(),
            self.sources_damaged.len()
        )
    }
}

/// Iterates the frames of a set of sources. Yields `Err` only once, at the end, when nothing at
/// all could be read; unreadable sources are logged and counted instead.
pub struct Footage {
    sources: Vec<Source>,
    options: FootageOptions,
    next_source: usize,
    current: Option<Current>,
    summary: FootageSummary,
    progress: Option<indicatif::ProgressBar>,
    done: bool,
}

struct Current {
    path: Arc<PathBuf>,
    reader: VideoReader,
    decoded: u64,
    yielded: u64,
    last_thumb: Option<Vec<f32>>,
}

impl Footage {
    /// Expands `paths` (see [`expand_sources`]) and prepares to read them.
    pub fn open(paths: &[PathBuf], options: FootageOptions) -> Result<Self, FootageError> {
        Self::from_sources(expand_sources(paths)?, options)
    }

    /// Reads an explicit list of sources.
    pub fn from_sources(
        sources: Vec<Source>,
        options: FootageOptions,
    ) -> Result<Self, FootageError> {
        options.check()?;
        let progress = options.progress.then(|| {
            let bar = indicatif::ProgressBar::new(sources.len() as u64);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} reading footage [{bar:30}] {pos}/{len} sources, {msg} {elapsed}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar
        });
        let summary = FootageSummary {
            sources: sources.len(),
            ..FootageSummary::default()
        };
        Ok(Self {
            sources,
            options,
            next_source: 0,
            current: None,
            summary,
            progress,
            done: false,
        })
    }

    /// The sources being read.
    pub fn sources(&self) -> &[Source] {
        &self.sources
    }

    /// What has been read so far (complete once the iterator has ended).
    pub fn summary(&self) -> &FootageSummary {
        &self.summary
    }

    fn budget_left(&self) -> bool {
        self.options
            .max_frames
            .is_none_or(|m| self.summary.frames_yielded < m as u64)
    }

    fn skip_source(&mut self, path: &Path, reason: String) {
        log::warn!("skipping {}: {reason}", path.display());
        self.summary.sources_skipped.push((path.to_owned(), reason));
    }

    fn finish_frame(&mut self, mut frame: Frame) -> Frame {
        if self.options.downscale > 1 {
            frame.image = downscale_box(&frame.image, self.options.downscale);
        }
        self.summary.frames_yielded += 1;
        if let Some(bar) = &self.progress {
            bar.set_message(format!("{} frames", self.summary.frames_yielded));
        }
        frame
    }

    /// Pulls the next kept frame of the open video, closing it at its end or on an error.
    fn next_from_video(&mut self) -> Option<Frame> {
        let stride = self.options.stride as u64;
        let min_change = self.options.min_scene_change;
        loop {
            let cur = self.current.as_mut()?;
            match cur.reader.next_frame() {
                Ok(Some(decoded)) => {
                    let index = cur.decoded;
                    cur.decoded += 1;
                    self.summary.frames_decoded += 1;
                    if index % stride != 0 {
                        continue;
                    }
                    if let Some(t) = min_change {
                        let thumb = thumbnail(&decoded.image);
                        if let Some(last) = &cur.last_thumb
                            && scene_distance(last, &thumb) < t
                        {
                            self.summary.frames_similar += 1;
                            continue;
                        }
                        cur.last_thumb = Some(thumb);
                    }
                    cur.yielded += 1;
                    let frame = Frame {
                        image: decoded.image,
                        source: cur.path.clone(),
                        index,
                        pts: decoded.pts,
                        duration: decoded.duration,
                    };
                    return Some(self.finish_frame(frame));
                }
                Ok(None) => {
                    let cur = self.current.take()?;
                    if cur.yielded == 0 && cur.decoded == 0 {
                        self.skip_source(&cur.path, "the stream holds no video frame".into());
                    } else {
                        self.summary.sources_read += 1;
                    }
                    return None;
                }
                Err(e) => {
                    let cur = self.current.take()?;
                    if cur.decoded == 0 {
                        self.skip_source(&cur.path, e.to_string());
                    } else {
                        // A file cut short mid-stream: the frames already handed out were whole
                        // (a demuxer only passes complete samples); count it as damaged.
                        let reason = format!("stopped after {} frames: {e}", cur.decoded);
                        log::warn!("{}: {reason}", cur.path.display());
                        self.summary
                            .sources_damaged
                            .push(((*cur.path).clone(), reason));
                    }
                    return None;
                }
            }
        }
    }
}

impl Iterator for Footage {
    type Item = Result<Frame, FootageError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        while self.budget_left() {
            if self.current.is_some() {
                if let Some(f) = self.next_from_video() {
                    return Some(Ok(f));
                }
                continue;
            }
            let Some(source) = self.sources.get(self.next_source).cloned() else {
                break;
            };
            self.next_source += 1;
            if let Some(bar) = &self.progress {
                bar.set_position(self.next_source as u64);
            }
            match source {
                Source::Image(path) => match imageio::load_rgb(&path) {
                    Ok(image) => {
                        self.summary.frames_decoded += 1;
                        self.summary.sources_read += 1;
                        let frame = Frame {
                            image,
                            source: Arc::new(path),
                            index: 0,
                            pts: None,
                            duration: None,
                        };
                        return Some(Ok(self.finish_frame(frame)));
                    }
                    Err(e) => self.skip_source(&path, e.to_string()),
                },
                Source::Video(path) => match VideoReader::open(&path) {
                    Ok(reader) => {
                        self.current = Some(Current {
                            path: Arc::new(path),
                            reader,
                            decoded: 0,
                            yielded: 0,
                            last_thumb: None,
                        });
                    }
                    Err(e) => self.skip_source(&path, e.to_string()),
                },
            }
        }
        self.done = true;
        // Close a video left open by the frame budget; it was read, as far as asked.
        if let Some(cur) = self.current.take()
            && cur.yielded > 0
        {
            self.summary.sources_read += 1;
        }
        if let Some(bar) = self.progress.take() {
            bar.finish_and_clear();
        }
        if self.summary.frames_yielded == 0 {
            return Some(Err(FootageError::NoFrames {
                sources: self.sources.iter().map(|s| s.path().to_owned()).collect(),
                skipped: self.summary.sources_skipped.len(),
            }));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_png(dir: &Path, name: &str, value: u8) -> PathBuf {
        let p = dir.join(name);
        imageio::save_png_atomic(&RgbImage::from_pixel(8, 6, image::Rgb([value; 3])), &p).unwrap();
        p
    }

    #[test]
    fn folder_and_list_expand_in_order() {
        let dir = tempfile::tempdir().unwrap();
        write_png(dir.path(), "b.png", 1);
        write_png(dir.path(), "a.png", 2);
        std::fs::write(dir.path().join("notes.md"), "x").unwrap();
        std::fs::write(dir.path().join("list.txt"), "# drives\nb.png\n\na.png\n").unwrap();
        let from_dir = expand_sources(&[dir.path().to_owned()]).unwrap();
        let names: Vec<_> = from_dir
            .iter()
            .map(|s| s.path().file_name().unwrap().to_str().unwrap().to_owned())
            .collect();
        assert_eq!(names, ["a.png", "b.png"]);
        let from_list = expand_sources(&[dir.path().join("list.txt")]).unwrap();
        assert_eq!(from_list[0], Source::Image(dir.path().join("b.png")));
        assert_eq!(from_list.len(), 2);
    }

    #[test]
    fn missing_and_unsupported_paths_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let e = expand_sources(&[dir.path().join("nope.mp4")]).unwrap_err();
        assert!(e.to_string().contains("nope.mp4"), "{e}");
        std::fs::write(dir.path().join("x.md"), "x").unwrap();
        let e = expand_sources(&[dir.path().join("x.md")]).unwrap_err();
        assert!(matches!(e, FootageError::Unsupported { .. }), "{e}");
    }

    #[test]
    fn corrupt_image_is_skipped_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        write_png(dir.path(), "a.png", 7);
        std::fs::write(dir.path().join("b.png"), b"not a png").unwrap();
        write_png(dir.path(), "c.png", 9);
        let mut f = Footage::open(&[dir.path().to_owned()], FootageOptions::default()).unwrap();
        let frames: Vec<Frame> = f.by_ref().collect::<Result<_, _>>().unwrap();
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[1].image.get_pixel(0, 0).0, [9; 3]);
        let s = f.summary();
        assert_eq!(s.sources_skipped.len(), 1);
        assert!(s.sources_skipped[0].0.ends_with("b.png"));
        assert_eq!((s.sources, s.sources_read, s.frames_yielded), (3, 2, 2));
    }

    #[test]
    fn nothing_readable_is_an_error_naming_the_source() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("b.png"), b"not a png").unwrap();
        let mut f = Footage::open(&[dir.path().join("b.png")], FootageOptions::default()).unwrap();
        let e = f.next().unwrap().unwrap_err();
        assert!(matches!(e, FootageError::NoFrames { .. }));
        assert!(e.to_string().contains("b.png"), "{e}");
        assert!(f.next().is_none());
    }

    #[test]
    fn max_frames_and_downscale_apply() {
        let dir = tempfile::tempdir().unwrap();
        for (i, n) in ["a.png", "b.png", "c.png"].iter().enumerate() {
            write_png(dir.path(), n, i as u8);
        }
        let opts = FootageOptions {
            max_frames: Some(2),
            downscale: 2,
            ..FootageOptions::default()
        };
        let frames: Vec<Frame> = Footage::open(&[dir.path().to_owned()], opts)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0].image.dimensions(), (4, 3));
    }

    #[test]
    fn bad_options_are_rejected() {
        let opts = FootageOptions {
            stride: 0,
            ..FootageOptions::default()
        };
        assert!(Footage::from_sources(vec![], opts).is_err());
    }
}
