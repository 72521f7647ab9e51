//! Video files through GStreamer: decoding into RGB frames through an appsink, and writing RGB
//! frames back into an H.264 MP4 through an appsrc. Any container and codec the installed
//! GStreamer decoders handle works (mp4, mkv, avi, raw H.264 elementary streams, ...).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use gst::prelude::*;
use gst_app::{AppSink, AppSrc};
use gst_video::prelude::*;
use image::RgbImage;

use super::FootageError;

/// How long one pull may wait before the bus is checked for an error (a stuck decoder never
/// hangs the reader: after [`STALL_LIMIT`] without any frame or message the source is abandoned).
const PULL_POLL: gst::ClockTime = gst::ClockTime::from_mseconds(200);
const STALL_LIMIT: std::time::Duration = std::time::Duration::from_secs(30);
/// The first frame gets less: decodebin can lose a demuxer's error while it is still choosing
/// elements (found by fuzzing: a Matroska file cut inside its header, read after another file in
/// the same process, left the pipeline waiting in preroll with no message at all), and a real
/// first frame takes well under a second to decode.
const FIRST_FRAME_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Initialises GStreamer once per process; the error is kept for every later caller.
pub(crate) fn init_gst() -> Result<(), FootageError> {
    static INIT: OnceLock<Result<(), String>> = OnceLock::new();
    INIT.get_or_init(|| gst::init().map_err(|e| e.to_string()))
        .clone()
        .map_err(FootageError::Gstreamer)
}

/// One decoded video frame.
pub struct DecodedFrame {
    pub image: RgbImage,
    /// Presentation timestamp in nanoseconds, when the stream has one.
    pub pts: Option<u64>,
    /// Duration in nanoseconds, when the stream has one.
    pub duration: Option<u64>,
}

/// Decodes one video file frame by frame (`filesrc ! decodebin ! videoconvert ! RGB appsink`).
/// The pipeline is torn down when the reader is dropped.
pub struct VideoReader {
    path: PathBuf,
    pipeline: gst::Pipeline,
    sink: AppSink,
    finished: bool,
    /// Whether a frame has been handed out yet.
    got_frame: bool,
    /// End time (pts + duration, ns) of the last frame handed out.
    last_end: Option<u64>,
    frame_ns: Option<u64>,
}

impl VideoReader {
    /// Opens `path` and starts decoding. Errors that only show once data flows (a corrupt
    /// stream) come from [`VideoReader::next_frame`].
    pub fn open(path: &Path) -> Result<Self, FootageError> {
        init_gst()?;
        if !path.is_file() {
            return Err(FootageError::Missing(path.to_owned()));
        }
        let err = |reason: String| FootageError::Decode {
            path: path.to_owned(),
            reason,
        };
        // Raw elementary streams carry no container for typefind to recognise (short ones fail
        // it), so their codec is named from the extension.
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        let hint = match ext.as_deref() {
            Some("h264" | "264") => "video/x-h264 ! ",
            Some("h265" | "265") => "video/x-h265 ! ",
            _ => "",
        };
        let pipeline = gst::parse::launch(&format!(
            "filesrc name=src ! {hint}decodebin ! videoconvert ! \
             video/x-raw,format=RGB,pixel-aspect-ratio=1/1 ! \
             appsink name=sink sync=false max-buffers=4 drop=false"
        ))
        .map_err(|e| err(format!("cannot build the decoding pipeline: {e}")))?
        .downcast::<gst::Pipeline>()
        .map_err(|_| err("the decoding pipeline is not a pipeline".into()))?;
        let src = pipeline
            .by_name("src")
            .ok_or_else(|| err("no filesrc in the decoding pipeline".into()))?;
        src.set_property("location", path.to_string_lossy().as_ref());
        let sink = pipeline
            .by_name("sink")
            .and_then(|s| s.downcast::<AppSink>().ok())
            .ok_or_else(|| err("no appsink in the decoding pipeline".into()))?;
        let reader = Self {
            path: path.to_owned(),
            pipeline,
            sink,
            finished: false,
            got_frame: false,
            last_end: None,
            frame_ns: None,
        };
        reader
            .pipeline
            .set_state(gst::State::Playing)
            .map_err(|_| {
                reader
                    .bus_error()
                    .unwrap_or_else(|| err("cannot start decoding".into()))
            })?;
        Ok(reader)
    }

    /// The next frame, `Ok(None)` at the end of the stream, or the decoder's error.
    pub fn next_frame(&mut self) -> Result<Option<DecodedFrame>, FootageError> {
        if self.finished {
            return Ok(None);
        }
        let started = std::time::Instant::now();
        loop {
            if let Some(sample) = self.sink.try_pull_sample(PULL_POLL) {
                let frame = self.convert(&sample)?;
                if let Some(pts) = frame.pts {
                    self.last_end = Some(pts + frame.duration.unwrap_or(0));
                }
                self.frame_ns = self.frame_ns.or(frame.duration);
                self.got_frame = true;
                return Ok(Some(frame));
            }
            if let Some(e) = self.bus_error() {
                self.finished = true;
                return Err(e);
            }
            if self.sink.is_eos() {
                self.finished = true;
                return self.check_complete().map(|()| None);
            }
            let limit = if !self.got_frame {
                FIRST_FRAME_LIMIT
            } else {
                STALL_LIMIT
            };
            if started.elapsed() > limit {
                self.finished = true;
                return Err(FootageError::Decode {
                    path: self.path.clone(),
                    reason: format!("no frame and no error for {} s", limit.as_secs()),
                });
            }
        }
    }

    /// A demuxer reaching a cut-off file often ends the stream quietly (qtdemux does): compare
    /// where the frames stopped with the duration the container announces.
    fn check_complete(&self) -> Result<(), FootageError> {
        let Some(duration) = self.pipeline.query_duration::<gst::ClockTime>() else {
            return Ok(());
        };
        let end = self.last_end.unwrap_or(0);
        // Allow two frames (or 100 ms) of rounding between container and stream durations.
        let slack = self
            .frame_ns
            .map_or(100_000_000, |f| 2 * f)
            .max(100_000_000);
        if end + slack < duration.nseconds() {
            return Err(FootageError::Decode {
                path: self.path.clone(),
                reason: format!(
                    "the stream ends at {:.2} s but the file announces {:.2} s: it is cut short",
                    end as f64 / 1e9,
                    duration.nseconds() as f64 / 1e9
                ),
            });
        }
        Ok(())
    }

    /// The first error message on the bus, if any, as a typed error naming the file.
    fn bus_error(&self) -> Option<FootageError> {
        let bus = self.pipeline.bus()?;
        while let Some(msg) = bus.pop_filtered(&[gst::MessageType::Error]) {
            if let gst::MessageView::Error(e) = msg.view() {
                let mut reason = e.error().to_string();
                if let Some(debug) = e.debug() {
                    // The debug string carries the element and the demuxer's own words.
                    reason = format!("{reason} ({})", debug.lines().last().unwrap_or(""));
                }
                return Some(FootageError::Decode {
                    path: self.path.clone(),
                    reason,
                });
            }
        }
        None
    }

    fn convert(&self, sample: &gst::Sample) -> Result<DecodedFrame, FootageError> {
        let err = |reason: String| FootageError::Decode {
            path: self.path.clone(),
            reason,
        };
        let caps = sample
            .caps()
            .ok_or_else(|| err("sample without caps".into()))?;
        let info = gst_video::VideoInfo::from_caps(caps)
            .map_err(|e| err(format!("unexpected caps {caps}: {e}")))?;
        let buffer = sample
            .buffer()
            .ok_or_else(|| err("sample without buffer".into()))?;
        let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer, &info)
            .map_err(|e| err(format!("cannot map frame: {e}")))?;
        let (w, h) = (info.width() as usize, info.height() as usize);
        let stride =
            usize::try_from(frame.plane_stride()[0]).map_err(|_| err("negative stride".into()))?;
        let data = frame
            .plane_data(0)
            .map_err(|e| err(format!("cannot read plane: {e}")))?;
        let mut rgb = Vec::with_capacity(w * h * 3);
        for row in 0..h {
            let start = row * stride;
            let line = data
                .get(start..start + 3 * w)
                .ok_or_else(|| err("frame shorter than its caps say".into()))?;
            rgb.extend_from_slice(line);
        }
        let image = RgbImage::from_raw(info.width(), info.height(), rgb)
            .ok_or_else(|| err("frame size mismatch".into()))?;
        Ok(DecodedFrame {
            image,
            pts: buffer.pts().map(|t| t.nseconds()),
            duration: buffer.duration().map(|t| t.nseconds()),
        })
    }
}

impl Drop for VideoReader {
    fn drop(&mut self) {
        // Errors while shutting down are of no use to anyone; the pipeline is gone either way.
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

/// Writes RGB frames into an H.264 MP4 (`appsrc ! videoconvert ! x264enc ! mp4mux ! filesink`),
/// keeping the timestamps it is given. [`VideoWriter::finish`] sends EOS and waits for the muxer
/// to write its index, so the file is playable; the file is written under a temporary name and
/// renamed at the end, so an interrupted run leaves no truncated video under the final name.
pub struct VideoWriter {
    path: PathBuf,
    tmp_path: PathBuf,
    pipeline: gst::Pipeline,
    src: AppSrc,
    size: (u32, u32),
    next_pts: u64,
    frame_ns: u64,
}

impl VideoWriter {
    /// Prepares `path` for frames of `width`×`height` at `fps` (used for frames without their
    /// own timestamps).
    pub fn create(path: &Path, width: u32, height: u32, fps: u32) -> Result<Self, FootageError> {
        init_gst()?;
        let err = |reason: String| FootageError::Encode {
            path: path.to_owned(),
            reason,
        };
        if width == 0 || height == 0 || fps == 0 {
            return Err(err(format!(
                "invalid video size {width}x{height} at {fps} fps"
            )));
        }
        let file_name = path
            .file_name()
            .ok_or_else(|| err("the output path has no file name".into()))?;
        let tmp_path = path.with_file_name(format!(".{}.part", file_name.to_string_lossy()));
        // x264 wants even sizes for 4:2:0: an odd width or height gets one black column or row
        // on the right or bottom (videobox), never a rescale of the picture.
        let (dx, dy) = (width % 2, height % 2);
        let pipeline = gst::parse::launch(&format!(
            "appsrc name=src format=time is-live=false block=true ! \
             videobox right=-{dx} bottom=-{dy} ! videoconvert ! video/x-raw,format=I420 ! \
             x264enc speed-preset=veryfast tune=zerolatency ! h264parse ! mp4mux ! \
             filesink name=sink"
        ))
        .map_err(|e| err(format!("cannot build the encoding pipeline: {e}")))?
        .downcast::<gst::Pipeline>()
        .map_err(|_| err("the encoding pipeline is not a pipeline".into()))?;
        let sink = pipeline
            .by_name("sink")
            .ok_or_else(|| err("no filesink".into()))?;
        sink.set_property("location", tmp_path.to_string_lossy().as_ref());
        let src = pipeline
            .by_name("src")
            .and_then(|s| s.downcast::<AppSrc>().ok())
            .ok_or_else(|| err("no appsrc".into()))?;
        let info = gst_video::VideoInfo::builder(gst_video::VideoFormat::Rgb, width, height)
            .fps(gst::Fraction::new(fps as i32, 1))
            .build()
            .map_err(|e| err(e.to_string()))?;
        src.set_caps(Some(&info.to_caps().map_err(|e| err(e.to_string()))?));
        // Fail now, before any work, when the file cannot be created.
        std::fs::File::create(&tmp_path)
            .map_err(|e| err(format!("cannot create {}: {e}", tmp_path.display())))?;
        pipeline
            .set_state(gst::State::Playing)
            .map_err(|_| err("cannot start the encoder".into()))?;
        Ok(Self {
            path: path.to_owned(),
            tmp_path,
            pipeline,
            src,
            size: (width, height),
            next_pts: 0,
            frame_ns: 1_000_000_000 / u64::from(fps),
        })
    }

    /// Appends one frame. `pts`/`duration` in nanoseconds; `None` continues at the writer's
    /// frame rate.
    pub fn push(
        &mut self,
        image: &RgbImage,
        pts: Option<u64>,
        duration: Option<u64>,
    ) -> Result<(), FootageError> {
        let err = |reason: String| FootageError::Encode {
            path: self.path.clone(),
            reason,
        };
        if image.dimensions() != self.size {
            return Err(err(format!(
                "frame is {}x{}, the video is {}x{}",
                image.width(),
                image.height(),
                self.size.0,
                self.size.1
            )));
        }
        let (w, h) = (image.width() as usize, image.height() as usize);
        // GStreamer's RGB rows are 4-byte aligned.
        let stride = (3 * w).next_multiple_of(4);
        let mut data = vec![0u8; stride * h];
        for (row, line) in image.as_raw().chunks_exact(3 * w).enumerate() {
            data[row * stride..row * stride + 3 * w].copy_from_slice(line);
        }
        let mut buffer = gst::Buffer::from_mut_slice(data);
        let pts = pts.unwrap_or(self.next_pts);
        let duration = duration.unwrap_or(self.frame_ns);
        {
            let b = buffer
                .get_mut()
                .ok_or_else(|| err("buffer not writable".into()))?;
            b.set_pts(gst::ClockTime::from_nseconds(pts));
            b.set_duration(gst::ClockTime::from_nseconds(duration));
        }
        self.next_pts = pts + duration;
        self.src
            .push_buffer(buffer)
            .map_err(|e| err(format!("encoder refused a frame: {e:?}{}", self.bus_text())))?;
        Ok(())
    }

    /// Sends EOS, waits for the file to be complete and moves it to its final name.
    pub fn finish(self) -> Result<PathBuf, FootageError> {
        let err = |reason: String| FootageError::Encode {
            path: self.path.clone(),
            reason,
        };
        self.src
            .end_of_stream()
            .map_err(|e| err(format!("cannot end the stream: {e:?}")))?;
        let bus = self
            .pipeline
            .bus()
            .ok_or_else(|| err("pipeline without bus".into()))?;
        let msg = bus.timed_pop_filtered(
            gst::ClockTime::from_seconds(120),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        );
        let _ = self.pipeline.set_state(gst::State::Null);
        match msg.as_ref().map(|m| m.view()) {
            Some(gst::MessageView::Eos(_)) => {}
            Some(gst::MessageView::Error(e)) => return Err(err(e.error().to_string())),
            _ => return Err(err("the encoder did not finish within 120 s".into())),
        }
        std::fs::rename(&self.tmp_path, &self.path)
            .map_err(|e| err(format!("cannot rename the finished file: {e}")))?;
        Ok(self.path.clone())
    }

    fn bus_text(&self) -> String {
        let Some(bus) = self.pipeline.bus() else {
            return String::new();
        };
        match bus.pop_filtered(&[gst::MessageType::Error]) {
            Some(msg) => match msg.view() {
                gst::MessageView::Error(e) => format!(": {}", e.error()),
                _ => String::new(),
            },
            None => String::new(),
        }
    }
}

impl Drop for VideoWriter {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
        // After finish() the temporary file has been renamed; otherwise it is half a video.
        let _ = std::fs::remove_file(&self.tmp_path);
    }
}
