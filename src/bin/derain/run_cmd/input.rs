//! What `derain run` reads: a video file, a URI (file, http(s), rtsp), a V4L2 camera, or a live
//! test pattern; and the GStreamer elements that turn it into raw video.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

/// URI schemes handed to `uridecodebin`.
const NETWORK_SCHEMES: &[&str] = &["http", "https", "rtsp", "rtsps", "rtspt", "rtspu"];
/// The pseudo-URI of the live test pattern (`videotestsrc://?width=640&height=360&fps=30`).
pub const TEST_SCHEME: &str = "videotestsrc";

/// A classified input.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    File(PathBuf),
    /// http(s) or rtsp: decoded by `uridecodebin`.
    Network {
        uri: String,
        rtsp: bool,
    },
    Camera(PathBuf),
    TestPattern(TestPattern),
}

/// The live test source's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct TestPattern {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub pattern: String,
}

impl Default for TestPattern {
    fn default() -> Self {
        Self {
            width: 640,
            height: 360,
            fps: 30,
            pattern: "ball".into(),
        }
    }
}

impl Input {
    /// Classifies `s` and checks what can be checked without starting anything: a file or camera
    /// must exist, a scheme must be one we read.
    pub fn parse(s: &str) -> Result<Self> {
        if let Some((scheme, rest)) = s.split_once("://") {
            let scheme = scheme.to_ascii_lowercase();
            if scheme == "file" {
                let (path, _host) = gst::glib::filename_from_uri(s)
                    .map_err(|e| anyhow::anyhow!("{s} is not a valid file URI: {e}"))?;
                return Self::file(path);
            }
            if scheme == TEST_SCHEME {
                return Ok(Input::TestPattern(parse_test(s, rest)?));
            }
            if NETWORK_SCHEMES.contains(&scheme.as_str()) {
                return Ok(Input::Network {
                    uri: s.to_owned(),
                    rtsp: scheme.starts_with("rtsp"),
                });
            }
            bail!(
                "unsupported input URI scheme '{scheme}://' in {s}: use a file path, file://, \
                 http(s)://, rtsp://, /dev/videoN or {TEST_SCHEME}://"
            );
        }
        let path = PathBuf::from(s);
        if s.starts_with("/dev/video") {
            if !path.exists() {
                bail!(
                    "no V4L2 camera at {s}: check the device (ls /dev/video*) and its permissions"
                );
            }
            return Ok(Input::Camera(path));
        }
        Self::file(path)
    }

    fn file(path: PathBuf) -> Result<Self> {
        if !path.exists() {
            bail!("input {} does not exist", path.display());
        }
        if path.is_dir() {
            bail!(
                "input {} is a folder: derain run reads one video",
                path.display()
            );
        }
        Ok(Input::File(path))
    }

    /// Live sources produce frames on their own clock: latency must stay bounded (leaky queues,
    /// the derain element's drop policy), and nothing waits for the pipeline to catch up.
    pub fn is_live(&self) -> bool {
        match self {
            Input::File(_) => false,
            Input::Network { rtsp, .. } => *rtsp,
            Input::Camera(_) | Input::TestPattern(_) => true,
        }
    }

    /// The local file this input reads, if any (the output must not overwrite it).
    pub fn local_file(&self) -> Option<&Path> {
        match self {
            Input::File(p) => Some(p),
            _ => None,
        }
    }

    /// The gst-launch fragment ending in decoded raw video. Paths and URIs are set as properties
    /// on the element named `src` afterwards (see [`Input::configure`]), so no quoting is needed.
    pub fn launch_fragment(&self) -> String {
        match self {
            Input::File(_) => "filesrc name=src ! decodebin".into(),
            Input::Network { .. } => "uridecodebin name=src".into(),
            Input::Camera(_) => "v4l2src name=src ! decodebin".into(),
            Input::TestPattern(t) => format!(
                "videotestsrc name=src is-live=true pattern={} ! \
                 video/x-raw,width={},height={},framerate={}/1",
                t.pattern, t.width, t.height, t.fps
            ),
        }
    }

    /// Sets the location on the source element named `src`.
    pub fn configure(&self, src: &gst::Element) {
        use gst::prelude::*;
        match self {
            Input::File(p) => src.set_property("location", p.to_string_lossy().as_ref()),
            Input::Camera(p) => src.set_property("device", p.to_string_lossy().as_ref()),
            Input::Network { uri, rtsp } => {
                src.set_property("uri", uri.as_str());
                if *rtsp {
                    // rtspsrc buffers 2 s by default; a car needs to see now, not 2 s ago.
                    src.connect("source-setup", false, |args| {
                        if let Some(Ok(source)) = args.get(1).map(|a| a.get::<gst::Element>())
                            && source.has_property("latency")
                        {
                            source.set_property("latency", RTSP_LATENCY_MS);
                        }
                        None
                    });
                }
            }
            Input::TestPattern(_) => {}
        }
    }
}

/// rtspsrc's jitter buffer for live cameras, in ms.
const RTSP_LATENCY_MS: u32 = 200;

fn parse_test(s: &str, rest: &str) -> Result<TestPattern> {
    let mut t = TestPattern::default();
    let query = rest.trim_start_matches('/').trim_start_matches('?');
    for kv in query.split('&').filter(|kv| !kv.is_empty()) {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        let num = |max: u32| -> Result<u32> {
            match v.parse::<u32>() {
                Ok(n) if (1..=max).contains(&n) => Ok(n),
                _ => bail!("{s}: {k}={v} is not a number from 1 to {max}"),
            }
        };
        match k {
            "width" => t.width = num(8192)?,
            "height" => t.height = num(8192)?,
            "fps" => t.fps = num(1000)?,
            "pattern"
                if !v.is_empty() && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') =>
            {
                t.pattern = v.to_owned()
            }
            _ => bail!(
                "{s}: unknown setting '{kv}' (the test pattern takes width=, height=, fps=, \
                 pattern=, e.g. {TEST_SCHEME}://?width=320&height=240&fps=15&pattern=ball)"
            ),
        }
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_inputs() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("drive.mp4");
        std::fs::write(&f, b"x").unwrap();
        let fs = f.to_str().unwrap();
        assert_eq!(Input::parse(fs).unwrap(), Input::File(f.clone()));
        assert_eq!(
            Input::parse(&format!("file://{fs}")).unwrap(),
            Input::File(f.clone())
        );
        assert!(!Input::parse(fs).unwrap().is_live());
        let rtsp = Input::parse("rtsp://cam.local/stream").unwrap();
        assert!(rtsp.is_live() && matches!(rtsp, Input::Network { rtsp: true, .. }));
        let http = Input::parse("https://example.invalid/a.mp4").unwrap();
        assert!(!http.is_live());
        let t = Input::parse("videotestsrc://?width=320&height=240&fps=15").unwrap();
        assert_eq!(
            t,
            Input::TestPattern(TestPattern {
                width: 320,
                height: 240,
                fps: 15,
                pattern: "ball".into()
            })
        );
        assert!(t.is_live());
        assert!(
            t.launch_fragment()
                .contains("width=320,height=240,framerate=15/1")
        );
        assert_eq!(
            Input::parse("videotestsrc://").unwrap(),
            Input::TestPattern(TestPattern::default())
        );
    }

    #[test]
    fn rejects_what_cannot_be_read() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.mp4");
        let e = Input::parse(missing.to_str().unwrap()).unwrap_err();
        assert!(e.to_string().contains("does not exist"), "{e}");
        let e = Input::parse(dir.path().to_str().unwrap()).unwrap_err();
        assert!(e.to_string().contains("folder"), "{e}");
        let e = Input::parse("/dev/video987").unwrap_err();
        assert!(e.to_string().contains("no V4L2 camera"), "{e}");
        let e = Input::parse("gopher://x").unwrap_err();
        assert!(
            e.to_string().contains("unsupported input URI scheme"),
            "{e}"
        );
        for bad in [
            "videotestsrc://?width=0",
            "videotestsrc://?fps=x",
            "videotestsrc://?foo=1",
        ] {
            assert!(Input::parse(bad).is_err(), "{bad}");
        }
    }
}
