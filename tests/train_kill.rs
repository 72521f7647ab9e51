//! Interrupted training: `derain train` is killed with SIGKILL mid-run (checkpoints are written
//! every step; each kill lands at a random moment of the step after the run has saved two, so
//! some land mid-write) and resumed each time; every resume must work and the final parameters
//! must equal an uninterrupted run's. The kills wait for the run's own checkpoints, not for a
//! time, so they land mid-run on a fast machine and a loaded one alike.
#![cfg(feature = "train")]

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use derain::imageio::{self, RgbImage};
use derain::train::Trainer;
use derain::train::run::{CHECKPOINT_FILE, RunConfig};
use rand::{Rng, SeedableRng};

const STEPS: u64 = 40;
/// Runs killed before the last one finishes; each takes three to five steps.
const KILLS: usize = 4;

fn setup(dir: &Path) -> std::path::PathBuf {
    let clean = dir.join("clean");
    std::fs::create_dir_all(&clean).unwrap();
    for i in 0..3u32 {
        let img = RgbImage::from_fn(64, 48, |x, y| {
            image::Rgb([(x * 3 + i * 20) as u8, (y * 4) as u8, ((x + y) * 2) as u8])
        });
        imageio::save_png_atomic(&img, &clean.join(format!("c{i}.png"))).unwrap();
    }
    let cfg = dir.join("run.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
[train]
stage = "pretrain"
batch = 2
crop = 32
seed = 5
generator = {{ arch = "lite", channels = 8, blocks = 1 }}
[train.loss]
adversarial = 0.5
[data]
clean = ["clean"]
preset = "heavy"
[run]
steps = {STEPS}
checkpoint_every = 1
validate_every = 1000
"#
        ),
    )
    .unwrap();
    cfg
}

fn train(cfg: &Path, out: &Path, resume: bool) -> Child {
    let mut c = Command::new(env!("CARGO_BIN_EXE_derain"));
    c.args([
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    if resume {
        c.arg("--resume");
    }
    // One intra-op thread: the same arithmetic order in every process.
    c.env("OMP_NUM_THREADS", "1")
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn params(cfg: &Path, ckpt: &Path) -> Vec<(String, Vec<f32>)> {
    let run = RunConfig::load(cfg, &[]).unwrap();
    let t = Trainer::load(ckpt, &run.train).unwrap();
    assert_eq!(t.step_count(), STEPS);
    let mut out = Vec::new();
    for (net, n) in t.networks() {
        let mut vars: Vec<_> = n.var_store().variables().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, v) in vars {
            let flat = v.to_device(tch::Device::Cpu).contiguous().view([-1]);
            out.push((
                format!("{net}.{name}"),
                Vec::<f32>::try_from(&flat).unwrap(),
            ));
        }
    }
    out
}

/// The checkpoint as it is now: a new one replaces it by a rename, so another inode (or
/// modification time) means another step was saved.
fn checkpoint_id(path: &Path) -> Option<(u64, SystemTime)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.ino(), m.modified().ok()?))
}

/// Waits until `child` has saved a checkpoint other than `seen`, and returns it; panics, with the
/// child's error output, when the child ends first (every kill round must find a run going).
fn next_checkpoint(
    child: &mut Child,
    path: &Path,
    seen: Option<(u64, SystemTime)>,
) -> (u64, SystemTime) {
    // A guard against a run that hangs, not a timing: a loaded machine only makes it wait longer.
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        if let Some(id) = checkpoint_id(path).filter(|&id| Some(id) != seen) {
            return id;
        }
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            panic!("the run ended ({status}) before saving another checkpoint: {err}");
        }
        assert!(Instant::now() < deadline, "no checkpoint in 10 minutes");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn temporaries(dir: &Path) -> Vec<std::fs::DirEntry> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect()
}

/// Waits, polling quickly, until `child` is seen writing a checkpoint (its temporary file in
/// `dir`); gives up after `saves` more checkpoints were saved without one being seen (a write too
/// quick to catch). Call it only once the run has started: a start clears stale temporaries.
fn until_saving(child: &mut Child, dir: &Path, mut seen: (u64, SystemTime), saves: usize) {
    let ckpt = dir.join(CHECKPOINT_FILE);
    let mut left = saves;
    while temporaries(dir).is_empty() {
        if let Some(id) = checkpoint_id(&ckpt).filter(|&id| id != seen) {
            seen = id;
            left -= 1;
            if left == 0 {
                return;
            }
        }
        assert!(child.try_wait().unwrap().is_none(), "the run ended first");
        std::thread::sleep(Duration::from_micros(100));
    }
}

#[test]
fn sigkill_at_random_moments_then_resume_matches_an_uninterrupted_run() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = setup(tmp.path());

    let whole = tmp.path().join("whole");
    let o = train(&cfg, &whole, false).wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let cut = tmp.path().join("cut");
    let ckpt = cut.join(CHECKPOINT_FILE);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let (mut kills, mut mid_write) = (0, 0);
    for round in 0..KILLS {
        let seen = checkpoint_id(&ckpt);
        let mut child = train(&cfg, &cut, seen.is_some());
        // Kill only once this run has saved two steps of its own (start-up is over, whatever
        // the machine's speed): at a random moment of the step after, or, every other round,
        // as soon as it is seen saving one.
        let first = next_checkpoint(&mut child, &ckpt, seen);
        let at = Instant::now();
        let second = next_checkpoint(&mut child, &ckpt, Some(first));
        let step = at.elapsed();
        if round % 2 == 1 {
            until_saving(&mut child, &cut, second, 3);
        } else {
            std::thread::sleep(step.mul_f64(rng.random_range(0.0..1.0)));
        }
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        assert_eq!(
            status.signal(),
            Some(libc::SIGKILL),
            "the run ended by itself ({status}) before the kill: {STEPS} steps are too few"
        );
        kills += 1;
        if !temporaries(&cut).is_empty() {
            mid_write += 1;
        }
    }
    let o = train(&cfg, &cut, true).wait_with_output().unwrap();
    assert!(
        o.status.success(),
        "resume failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    // Kills during a checkpoint write leave temporary files; the next start clears them.
    let left = temporaries(&cut);
    assert!(left.is_empty(), "{left:?}");
    let a = params(&cfg, &whole.join(CHECKPOINT_FILE));
    let b = params(&cfg, &cut.join(CHECKPOINT_FILE));
    assert_eq!(a.len(), b.len());
    for ((na, va), (nb, vb)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        let d = va
            .iter()
            .zip(vb)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(d <= 1e-6, "{na} differs by {d} after {kills} kills");
    }
    eprintln!(
        "{kills} SIGKILLs ({mid_write} during a checkpoint write), resumed each time; \
         parameters equal to the uninterrupted run"
    );
}
