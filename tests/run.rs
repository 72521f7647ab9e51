//! `derain run` end to end: generated clips (and, when the shared data is present, real frames
//! through YOLOX-Nano) through the real pipeline and the plugin built in target/<profile>, a stop
//! signal in the middle of a run, and the errors a user meets before anything is processed.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use derain::detect::FrameRecord;
use derain::footage::{VideoReader, VideoWriter};
use derain::imageio::RgbImage;

const BIN: &str = env!("CARGO_BIN_EXE_derain");

/// Fails with the fix when the plugin has not been built next to the binary.
fn require_plugin() {
    let dir = Path::new(BIN).parent().expect("binary folder");
    assert!(
        dir.join("libgstderain.so").is_file(),
        "{} has no libgstderain.so: build the plugin first (cargo build -p gst-plugin-derain; \
         `make test` does)",
        dir.display()
    );
}

/// `derain ARGS` with a private GStreamer registry in `dir` (a stale shared cache cannot hide
/// the freshly built plugin) and quiet logs.
fn command(dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args)
        .env("RUST_LOG", "warn")
        .env("GST_REGISTRY", dir.join("registry.bin"))
        .current_dir(dir);
    c
}

fn derain(dir: &Path, args: &[&str]) -> Output {
    command(dir, args).output().expect("derain runs")
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn p(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

/// `(in, out, dropped)` from the summary's first line, `frames: in N, out N, dropped N (...)`.
fn frame_counts(stdout: &str) -> (u64, u64, u64) {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("frames: "))
        .unwrap_or_else(|| panic!("no frames line in:\n{stdout}"));
    let num = |key: &str| -> u64 {
        let rest = &line[line.find(key).unwrap_or_else(|| panic!("{key} in {line}")) + key.len()..];
        rest.split(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("number after {key} in {line}"))
    };
    (num("in "), num("out "), num("dropped "))
}

/// A moving-square clip of `frames` frames at 30 fps.
fn clip(dir: &Path, frames: u32, w: u32, h: u32) -> PathBuf {
    let path = dir.join(format!("clip{frames}.mp4"));
    let mut v = VideoWriter::create(&path, w, h, 30).expect("writer");
    for i in 0..frames {
        let img = RgbImage::from_fn(w, h, |x, y| {
            let inside = (x + 2 * i) % w < w / 4 && y > h / 4 && y < h / 2;
            let v = if inside { 230 } else { (x + y) as u8 / 2 };
            image::Rgb([v, v / 2, 255 - v])
        });
        v.push(&img, None, None).expect("frame");
    }
    v.finish().expect("finished")
}

/// `derain fixture KIND`.
fn fixture(dir: &Path, kind: &str) -> PathBuf {
    let out = dir.join(format!("{kind}.onnx"));
    let o = derain(dir, &["fixture", kind, "--out", p(&out)]);
    assert!(o.status.success(), "{}", text(&o));
    out
}

/// Decodes the whole file; fails on any error (a truncated or unfinalised MP4 is one).
fn decode_all(path: &Path) -> u64 {
    let mut r = VideoReader::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut n = 0;
    while let Some(_f) = r
        .next_frame()
        .unwrap_or_else(|e| panic!("{} after {n} frames: {e}", path.display()))
    {
        n += 1;
    }
    n
}

fn have_ort() -> bool {
    match derain::runtime::init_ort(None) {
        Ok(_) => true,
        Err(e) => {
            eprintln!("skipped: ONNX Runtime not loadable ({e}); run `make setup`");
            false
        }
    }
}

#[test]
fn file_through_identity_model_counts_every_frame() {
    require_plugin();
    if !have_ort() {
        return;
    }
    let dir = tempfile::tempdir().expect("dir");
    let d = dir.path();
    let input = clip(d, 24, 160, 96);
    let model = fixture(d, "identity");
    let out = d.join("out.mp4");
    let o = derain(
        d,
        &[
            "run",
            p(&input),
            "--model",
            p(&model),
            "--provider",
            "cpu",
            "--output",
            p(&out),
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(frame_counts(&stdout), (24, 24, 0), "{stdout}");
    for want in ["speed: ", "latency (entering the chain", "output: "] {
        assert!(stdout.contains(want), "{want} missing:\n{stdout}");
    }
    assert_eq!(decode_all(&out), 24);
    // The temporary name is gone once the file is finalised.
    assert!(!d.join(".out.mp4.part").exists());

    // Without deraining the same frames pass.
    let o = derain(d, &["run", p(&input), "--no-derain"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        frame_counts(&String::from_utf8_lossy(&o.stdout)),
        (24, 24, 0)
    );
}

#[test]
fn no_model_runs_the_embedded_default() {
    require_plugin();
    if !have_ort() {
        return;
    }
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    if !models.join("derain-lite.onnx").is_file() && !models.join("derain-r9.onnx").is_file() {
        eprintln!(
            "skipped: no model in models/, so the element embeds no default (see the error case in missing_model_and_misused_options_are_explained)"
        );
        return;
    }
    let dir = tempfile::tempdir().expect("dir");
    let d = dir.path();
    let input = clip(d, 6, 160, 96);
    let out = d.join("out.mp4");
    let o = derain(
        d,
        &["run", p(&input), "--provider", "cpu", "--output", p(&out)],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(frame_counts(&String::from_utf8_lossy(&o.stdout)), (6, 6, 0));
    assert_eq!(decode_all(&out), 6);
}

#[test]
fn detector_boxes_reach_the_json_lines() {
    require_plugin();
    let (Some(detector), Some(still)) = (
        derain::devdata::shared_path("models/yolox_nano_416.onnx"),
        derain::devdata::shared_path("clean-driving/udacity/stills/test1.jpg"),
    ) else {
        eprintln!(
            "skipped: ../shared/data/models/yolox_nano_416.onnx or \
             clean-driving/udacity/stills/test1.jpg is absent"
        );
        return;
    };
    if !have_ort() {
        return;
    }
    let dir = tempfile::tempdir().expect("dir");
    let d = dir.path();
    // Six frames of a real road with cars on it.
    let img = derain::imageio::load_rgb(&still).expect("still");
    let input = d.join("road.mp4");
    let mut v = VideoWriter::create(&input, img.width(), img.height(), 30).expect("writer");
    for _ in 0..6 {
        v.push(&img, None, None).expect("frame");
    }
    v.finish().expect("finished");
    let model = fixture(d, "identity");
    let (out, json) = (d.join("boxes.mp4"), d.join("boxes.jsonl"));
    let o = derain(
        d,
        &[
            "run",
            p(&input),
            "--model",
            p(&model),
            "--provider",
            "cpu",
            "--detector",
            p(&detector),
            "--output",
            p(&out),
            "--json",
            p(&json),
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    let (fin, fout, dropped) = frame_counts(&stdout);
    assert_eq!((fin, fout, dropped), (6, 6, 0), "{stdout}");
    assert!(stdout.contains("json: 6 lines"), "{stdout}");
    let lines = std::fs::read_to_string(&json).expect("json");
    let records: Vec<FrameRecord> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(records.len() as u64, fout);
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r.frame, i as u64);
        assert!(r.inferred);
        assert!(
            r.boxes.iter().any(|b| b.label == "car" && b.score > 0.5),
            "no car in frame {i}: {r:?}"
        );
        for b in &r.boxes {
            assert!(
                b.x1 < b.x2 && b.y1 < b.y2 && b.x2 <= img.width() as f32 + 0.5,
                "{b:?}"
            );
        }
    }
    assert_eq!(decode_all(&out), 6);
}

/// How long a test waits for an event of a run before it gives up: far longer than anything takes
/// on an idle machine, so that a loaded one (other builds, other tests) is slow, never failed.
const PATIENCE: Duration = Duration::from_secs(300);
/// What `derain run` logs (info) when the first frame reaches the application.
const FIRST_FRAME_LOG: &str = "first frame out";

/// A `derain run` in progress, its stderr read line by line as it comes.
struct Running {
    child: Child,
    first_frame: mpsc::Receiver<()>,
    stderr: std::thread::JoinHandle<String>,
}

impl Running {
    /// Starts `cmd` with the first-frame line enabled in its log.
    fn start(mut cmd: Command) -> Self {
        let mut child = cmd
            .env("RUST_LOG", "warn,derain::run_cmd=info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("derain starts");
        let err = child.stderr.take().expect("stderr piped");
        let (tx, first_frame) = mpsc::channel();
        let stderr = std::thread::spawn(move || {
            let mut all = String::new();
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if line.contains(FIRST_FRAME_LOG) {
                    let _ = tx.send(());
                }
                all.push_str(&line);
                all.push('\n');
            }
            all
        });
        Self {
            child,
            first_frame,
            stderr,
        }
    }

    /// Blocks until a frame has reached the application, however slowly the machine starts the
    /// pipeline; panics with the run's output if it ends first.
    fn wait_for_first_frame(mut self) -> Self {
        match self.first_frame.recv_timeout(PATIENCE) {
            Ok(()) => self,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let _ = self.child.kill();
                panic!(
                    "derain run ended before any frame:\n{}",
                    text(&self.finish())
                );
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = self.child.kill();
                panic!(
                    "no frame out within {PATIENCE:?}:\n{}",
                    text(&self.finish())
                );
            }
        }
    }

    fn signal(&self, sig: &str) {
        let sent = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "kill {sig} failed");
    }

    /// Waits for the exit (killing the run after [`PATIENCE`]) and returns its output.
    fn finish(self) -> Output {
        let Self { child, stderr, .. } = self;
        let pid = child.id().to_string();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        let out = match rx.recv_timeout(PATIENCE) {
            Ok(out) => out.expect("wait"),
            Err(_) => {
                let _ = Command::new("kill").args(["-KILL", &pid]).status();
                panic!("derain run did not end within {PATIENCE:?}");
            }
        };
        Output {
            stderr: stderr.join().expect("stderr reader").into_bytes(),
            ..out
        }
    }
}

/// Starts `derain run ...`, waits until a frame has reached the application, lets it run `after`
/// more (more frames, if the machine is quick), sends SIGINT and waits for the exit.
fn interrupt_after(cmd: Command, after: Duration) -> Output {
    let run = Running::start(cmd).wait_for_first_frame();
    std::thread::sleep(after);
    run.signal("-INT");
    run.finish()
}

#[test]
fn sigint_on_a_live_source_finalises_the_mp4() {
    require_plugin();
    if !have_ort() {
        return;
    }
    let dir = tempfile::tempdir().expect("dir");
    let d = dir.path();
    // A random ResNet-9 (16 channels) is slower than 30 fps on a small CPU, so the leaky queue
    // in front of it usually drops frames; either way every frame must be accounted for.
    let model = fixture(d, "resnet9");
    let out = d.join("live.mp4");
    let cmd = command(
        d,
        &[
            "run",
            "videotestsrc://?width=160&height=96&fps=30",
            "--model",
            p(&model),
            "--provider",
            "cpu",
            "--output",
            p(&out),
        ],
    );
    let o = interrupt_after(cmd, Duration::from_secs(2));
    eprintln!("{}", text(&o));
    assert!(o.status.success(), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    let (fin, fout, dropped) = frame_counts(&stdout);
    assert!(fout > 0, "{stdout}");
    assert_eq!(fin, fout + dropped, "{stdout}");
    assert!(stdout.contains("latency since capture"), "{stdout}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("stopping"));
    assert_eq!(decode_all(&out), fout, "{stdout}");
    assert!(!d.join(".live.mp4.part").exists());
}

#[test]
fn sigint_midway_through_a_file_finalises_the_mp4() {
    require_plugin();
    if !have_ort() {
        return;
    }
    let dir = tempfile::tempdir().expect("dir");
    let d = dir.path();
    // 300 frames through a ResNet-9 on the CPU take far longer than the wait before the stop.
    let input = clip(d, 300, 320, 192);
    let model = fixture(d, "resnet9");
    let out = d.join("part.mp4");
    let cmd = command(
        d,
        &[
            "run",
            p(&input),
            "--model",
            p(&model),
            "--provider",
            "cpu",
            "--output",
            p(&out),
        ],
    );
    let o = interrupt_after(cmd, Duration::from_secs(1));
    eprintln!("{}", text(&o));
    assert!(o.status.success(), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    let (fin, fout, dropped) = frame_counts(&stdout);
    // A file is never dropped from; the stop came before its end.
    assert_eq!((fin, dropped), (fout, 0), "{stdout}");
    assert!(fout > 0 && fout < 300, "not interrupted midway: {stdout}");
    assert_eq!(decode_all(&out), fout, "{stdout}");
}

#[test]
fn unwritable_outputs_fail_before_processing() {
    let dir = tempfile::tempdir().expect("dir");
    let d = dir.path();
    let input = clip(d, 3, 64, 64);
    for (flag, target) in [
        ("--output", "no-such-folder/out.mp4"),
        ("--output", "."),
        ("--json", "no-such-folder/b.jsonl"),
    ] {
        let mut args = vec!["run", p(&input), "--no-derain", flag, target];
        if flag == "--json" {
            args.extend(["--detector", p(&input)]);
        }
        let o = derain(d, &args);
        assert!(!o.status.success(), "{}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(target.trim_end_matches('.')), "{}", text(&o));
        assert!(
            err.contains("cannot write") || err.contains("folder"),
            "{}",
            text(&o)
        );
        // Nothing ran: no summary (not a time limit, which a loaded machine can miss).
        assert!(!String::from_utf8_lossy(&o.stdout).contains("frames:"));
    }
}

#[test]
fn bad_inputs_fail_with_a_clear_message() {
    require_plugin();
    let dir = tempfile::tempdir().expect("dir");
    let d = dir.path();
    let corrupt = d.join("corrupt.mp4");
    std::fs::write(
        &corrupt,
        (0..4096u32)
            .map(|i| (i * 7919 % 251) as u8)
            .collect::<Vec<_>>(),
    )
    .expect("write");
    let out = d.join("o.mp4");
    for (input, want) in [
        ("missing.mp4", "does not exist"),
        ("/dev/video987", "no V4L2 camera at /dev/video987"),
        ("gopher://example.invalid/x", "unsupported input URI scheme"),
        // Port 1 on the loopback refuses connections at once.
        (
            "http://127.0.0.1:1/drive.mp4",
            "cannot read http://127.0.0.1:1/drive.mp4",
        ),
        (p(&corrupt), "cannot read"),
    ] {
        let o = derain(d, &["run", input, "--no-derain", "--output", p(&out)]);
        assert!(!o.status.success(), "{input}: {}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains(want),
            "{input}: want '{want}' in\n{}",
            text(&o)
        );
        assert!(!out.exists() && !d.join(".o.mp4.part").exists(), "{input}");
    }
}

#[test]
fn missing_model_and_misused_options_are_explained() {
    let dir = tempfile::tempdir().expect("dir");
    let d = dir.path();
    let input = clip(d, 2, 64, 64);
    let mut cases: Vec<(&[&str], &str)> = vec![
        (&["--model", "nope.onnx"], "model nope.onnx does not exist"),
        (&["--no-derain", "--json", "x.jsonl"], "needs --detector"),
        (
            &["--no-derain", "--detector", "nope.onnx"],
            "detector nope.onnx does not exist",
        ),
    ];
    // No --model: the element's embedded default, or, in a build that embeds none, its error.
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    if !models.join("derain-lite.onnx").is_file() && !models.join("derain-r9.onnx").is_file() {
        cases.push((&[], "embeds no default model"));
    }
    // Without a display (and, as on CI machines, no KMS device) --display is refused up front.
    if !Path::new("/dev/dri").exists() {
        cases.push((&["--no-derain", "--display"], "--display: no display"));
    }
    for (extra, want) in cases {
        let mut args = vec!["run", p(&input)];
        args.extend_from_slice(extra);
        let o = command(d, &args)
            .env_remove("DISPLAY")
            .env_remove("WAYLAND_DISPLAY")
            .output()
            .expect("derain runs");
        assert!(!o.status.success(), "{args:?}: {}", text(&o));
        assert!(
            String::from_utf8_lossy(&o.stderr).contains(want),
            "{args:?}: want '{want}' in\n{}",
            text(&o)
        );
    }
}

#[test]
fn missing_plugin_says_how_to_build_it() {
    let dir = tempfile::tempdir().expect("dir");
    let d = dir.path();
    let input = clip(d, 2, 64, 64);
    let model = fixture(d, "identity");
    // A copy of the binary with no plugin beside it and an empty home.
    let lone = d.join("lone");
    std::fs::create_dir_all(&lone).expect("dir");
    let exe = lone.join("derain");
    if std::fs::hard_link(BIN, &exe).is_err() {
        std::fs::copy(BIN, &exe).expect("copy binary");
    }
    let o = Command::new(&exe)
        .args(["run", p(&input), "--model", p(&model)])
        .env("RUST_LOG", "warn")
        .env("HOME", &lone)
        .env("XDG_DATA_HOME", &lone)
        .env_remove("GST_PLUGIN_PATH")
        .env("GST_REGISTRY", lone.join("registry.bin"))
        .output()
        .expect("runs");
    assert!(!o.status.success(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("derain not found")
            && err.contains("make build")
            && err.contains("make install"),
        "{}",
        text(&o)
    );
}

/// An MPEG-TS clip (streamable: any prefix of it decodes) of `frames` frames.
fn ts_clip(dir: &Path, frames: u32) -> PathBuf {
    use gst::prelude::*;
    gst::init().expect("GStreamer");
    let path = dir.join("stream.ts");
    let pipeline = gst::parse::launch(&format!(
        "videotestsrc num-buffers={frames} pattern=ball ! video/x-raw,width=160,height=96,framerate=30/1 \
         ! videoconvert ! x264enc ! h264parse ! mpegtsmux ! filesink name=sink"
    ))
    .expect("pipeline");
    let bin = pipeline.clone().downcast::<gst::Bin>().expect("bin");
    bin.by_name("sink")
        .expect("sink")
        .set_property("location", p(&path));
    pipeline.set_state(gst::State::Playing).expect("play");
    let bus = pipeline.bus().expect("bus");
    let msg = bus
        .timed_pop_filtered(
            gst::ClockTime::from_nseconds(PATIENCE.as_nanos() as u64),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .expect("the clip finishes");
    pipeline.set_state(gst::State::Null).expect("stop");
    assert!(matches!(msg.view(), gst::MessageView::Eos(_)), "{msg:?}");
    path
}

#[test]
fn input_error_midway_still_finalises_the_output() {
    require_plugin();
    let dir = tempfile::tempdir().expect("dir");
    let d = dir.path();
    let data = std::fs::read(ts_clip(d, 150)).expect("clip");
    // A server that announces the whole clip, sends half of it and hangs up once a frame has
    // reached the application (not after some time, which a loaded machine may need all of):
    // the source errors mid-stream with output to finalise.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (cut, cut_now) = mpsc::channel::<()>();
    let server = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut s, _) = listener.accept().expect("connection");
        let mut req = [0u8; 4096];
        let _ = s.read(&mut req);
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: video/mp2t\r\nContent-Length: {}\r\n\r\n",
            data.len()
        );
        let _ = s.write_all(head.as_bytes());
        let _ = s
            .write_all(&data[..data.len() / 2])
            .and_then(|()| s.flush());
        // A message, or the test gone: either way hang up.
        let _ = cut_now.recv();
        // Dropping the stream closes the connection short of Content-Length.
    });
    let out = d.join("cut.mp4");
    let uri = format!("http://127.0.0.1:{port}/stream.ts");
    let run = Running::start(command(
        d,
        &["run", &uri, "--no-derain", "--output", p(&out)],
    ))
    .wait_for_first_frame();
    let _ = cut.send(());
    let o = run.finish();
    server.join().expect("server");
    assert!(!o.status.success(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!("cannot read {uri}")) && err.contains("playable"),
        "{}",
        text(&o)
    );
    let (fin, fout, dropped) = frame_counts(&String::from_utf8_lossy(&o.stdout));
    assert!(
        fout > 0 && fout < 150 && fin == fout + dropped,
        "{}",
        text(&o)
    );
    assert_eq!(decode_all(&out), fout);
}

#[test]
fn weather_from_a_file_switches_the_bypass_at_the_times_it_names() {
    require_plugin();
    if !have_ort() {
        return;
    }
    let dir = tempfile::tempdir().expect("dir");
    let d = dir.path();
    let input = clip(d, 30, 160, 96);
    let model = fixture(d, "identity");
    // Dry from the start, rain from 0.5 s (frame 15 at 30 fps); an unknown word changes nothing.
    let weather = d.join("wipers.txt");
    std::fs::write(&weather, "# wiper log\n0 dry\n0.3 sleet\n0.5 rain\n").expect("write");
    let o = derain(
        d,
        &[
            "run",
            p(&input),
            "--model",
            p(&model),
            "--provider",
            "cpu",
            "--weather-from",
            p(&weather),
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("bypassed: 15 dry frames"), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("sleet"),
        "{}",
        text(&o)
    );
    let o = derain(
        d,
        &["run", p(&input), "--weather-from", "/nonexistent/w.txt"],
    );
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("/nonexistent/w.txt"),
        "{}",
        text(&o)
    );
}
