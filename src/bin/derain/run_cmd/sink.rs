//! Where frames leave the pipeline for the application: the appsink callback, which only counts,
//! reads timestamps and boxes and hands a small record to a bounded queue, and the consumer
//! thread behind it, which writes JSON lines and keeps latency statistics.
//!
//! The queue never blocks the video: when the consumer (a slow disk) falls behind and the queue
//! is full, the newest record is dropped and counted (`records_dropped`).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use derain::detect::{BoxRecord, FrameRecord};
use gst::prelude::*;
use gst_app::AppSink;

use super::stats::{Counters, LatencyHistogram};

/// Records in flight between the appsink and the consumer: a few seconds of video.
const QUEUE_RECORDS: usize = 256;
/// Caps naming the reference timestamp meta that carries a frame's entry time.
pub const ENTRY_TIME_REFERENCE: &str = "timestamp/x-derain-run-entry";
/// yolodetect's parameter structure on each region-of-interest meta.
const DETECTION_PARAMS: &str = "detection";
/// Logged (info) once, when the first frame reaches the application.
const FIRST_FRAME_LOG: &str = "first frame out";

/// What the application learns about one output frame.
struct Record {
    frame: u64,
    pts: Option<u64>,
    /// From entering the processing chain to the appsink.
    latency_ns: Option<u64>,
    /// Live sources: from capture (the buffer's running time) to the appsink.
    since_capture_ns: Option<u64>,
    boxes: Vec<BoxRecord>,
    inferred: bool,
}

/// What the consumer found, once the stream is over.
#[derive(Debug, Default)]
pub struct ConsumerReport {
    pub latency: LatencyHistogram,
    pub since_capture: LatencyHistogram,
    pub json_lines: u64,
    /// The first write error, after which the JSON file is left as it was.
    pub json_error: Option<String>,
}

/// The JSON-lines output: its path and the open file.
pub struct JsonOut {
    pub path: PathBuf,
    pub file: File,
}

/// Installs the appsink callback and starts the consumer thread. The thread ends once the
/// callback (holding the sender) is gone, see [`detach`], and the queue is empty.
pub fn attach(
    sink: &AppSink,
    counters: Arc<Counters>,
    live: bool,
    json: Option<JsonOut>,
) -> std::io::Result<JoinHandle<ConsumerReport>> {
    let (tx, rx) = crossbeam_channel::bounded::<Record>(QUEUE_RECORDS);
    let reference = gst::Caps::new_empty_simple(ENTRY_TIME_REFERENCE);
    let cb_counters = Arc::clone(&counters);
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |sink| {
                let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                on_sample(sink, &sample, &cb_counters, &reference, live, &tx);
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
    std::thread::Builder::new()
        .name("derain-run-consumer".into())
        .spawn(move || consume(rx, json))
}

fn on_sample(
    sink: &AppSink,
    sample: &gst::Sample,
    counters: &Counters,
    reference: &gst::Caps,
    live: bool,
    tx: &Sender<Record>,
) {
    let now = counters.now_ns();
    let frame = counters.frames_out.fetch_add(1, Ordering::Relaxed);
    counters.last_out_ns.store(now, Ordering::Relaxed);
    if frame == 0 {
        // Says the chain works (a TensorRT engine build can hold it up for minutes); tests that
        // must act once output exists wait for this line.
        log::info!("{FIRST_FRAME_LOG} {:.1} s after start", now as f64 / 1e9);
    }
    let Some(buffer) = sample.buffer() else {
        return;
    };
    let latency_ns = buffer
        .iter_meta::<gst::ReferenceTimestampMeta>()
        .find(|m| m.reference().is_subset(reference))
        .map(|m| now.saturating_sub(m.timestamp().nseconds()));
    let since_capture_ns = if live {
        since_capture(sink, sample, buffer)
    } else {
        None
    };
    let mut inferred = true;
    let boxes = buffer
        .iter_meta::<gst_video::VideoRegionOfInterestMeta>()
        .map(|m| {
            let p = m.param(DETECTION_PARAMS);
            let f = |name: &str| p.and_then(|p| p.get::<f64>(name).ok());
            let (x, y, w, h) = m.rect();
            if let Some(false) = p.and_then(|p| p.get::<bool>("inferred").ok()) {
                inferred = false;
            }
            BoxRecord {
                x1: f("x1").unwrap_or(f64::from(x)) as f32,
                y1: f("y1").unwrap_or(f64::from(y)) as f32,
                x2: f("x2").unwrap_or(f64::from(x + w)) as f32,
                y2: f("y2").unwrap_or(f64::from(y + h)) as f32,
                score: f("score").unwrap_or(1.0) as f32,
                class_id: p
                    .and_then(|p| p.get::<u32>("class-id").ok())
                    .map_or(usize::MAX, |c| c as usize),
                label: m.roi_type().to_owned(),
            }
        })
        .collect();
    let record = Record {
        frame,
        pts: buffer.pts().map(|t| t.nseconds()),
        latency_ns,
        since_capture_ns,
        boxes,
        inferred,
    };
    match tx.try_send(record) {
        Ok(()) => {}
        // Drop the newest rather than wait: the video must not stall for bookkeeping.
        Err(TrySendError::Full(_)) => {
            counters.records_dropped.fetch_add(1, Ordering::Relaxed);
        }
        Err(TrySendError::Disconnected(_)) => {
            counters.records_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Running time now minus the buffer's running time: how long ago the frame was captured.
fn since_capture(sink: &AppSink, sample: &gst::Sample, buffer: &gst::BufferRef) -> Option<u64> {
    let segment = sample.segment()?.downcast_ref::<gst::ClockTime>()?;
    let at = segment.to_running_time(buffer.pts()?)?;
    let now = sink.current_running_time()?;
    Some(now.nseconds().saturating_sub(at.nseconds()))
}

fn consume(rx: Receiver<Record>, json: Option<JsonOut>) -> ConsumerReport {
    let mut report = ConsumerReport::default();
    let mut writer = json.map(|j| (j.path, BufWriter::new(j.file)));
    for r in rx {
        if let Some(ns) = r.latency_ns {
            report.latency.record(ns);
        }
        if let Some(ns) = r.since_capture_ns {
            report.since_capture.record(ns);
        }
        if let Some((path, w)) = writer.as_mut() {
            let line = FrameRecord {
                timestamp: r.pts,
                frame: r.frame,
                inferred: r.inferred,
                boxes: r.boxes,
            }
            .to_json_line();
            match writeln!(w, "{line}") {
                Ok(()) => report.json_lines += 1,
                Err(e) => {
                    report.json_error = Some(format!("cannot write {}: {e}", path.display()));
                    writer = None;
                }
            }
        }
    }
    if let Some((path, mut w)) = writer
        && let Err(e) = w.flush()
    {
        report.json_error = Some(format!("cannot write {}: {e}", path.display()));
    }
    report
}

/// Removes the callback, dropping the queue's sender, so the consumer thread finishes.
pub fn detach(sink: &AppSink) {
    sink.set_callbacks(gst_app::AppSinkCallbacks::builder().build());
}
