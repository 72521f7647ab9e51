//! Interrupted training: `derain train` is killed with SIGKILL at random moments (checkpoints
//! are written every step, so some kills land mid-write) and resumed each time; every resume
//! must work and the final parameters must equal an uninterrupted run's.
#![cfg(feature = "train")]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use derain::imageio::{self, RgbImage};
use derain::train::Trainer;
use derain::train::run::{CHECKPOINT_FILE, RunConfig};
use rand::{Rng, SeedableRng};

const STEPS: u64 = 40;

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

fn train(cfg: &Path, out: &Path, resume: bool) -> std::process::Child {
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

#[test]
fn sigkill_at_random_moments_then_resume_matches_an_uninterrupted_run() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = setup(tmp.path());

    let whole = tmp.path().join("whole");
    let o = train(&cfg, &whole, false).wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let cut = tmp.path().join("cut");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let mut kills = 0;
    for round in 0..20 {
        let resume = cut.join(CHECKPOINT_FILE).is_file();
        let mut child = train(&cfg, &cut, resume);
        if round < 4 {
            // Start-up (libtorch, footage) takes a while; kill somewhere in the steps after it.
            std::thread::sleep(Duration::from_millis(rng.random_range(600..2500)));
            if child.try_wait().unwrap().is_none() {
                child.kill().unwrap(); // SIGKILL
                kills += 1;
            }
            child.wait().unwrap();
            continue;
        }
        let o = child.wait_with_output().unwrap();
        assert!(
            o.status.success(),
            "resume failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        break;
    }
    assert!(
        kills >= 1,
        "no kill landed: the run is too fast for this test"
    );
    // Kills during a checkpoint write leave temporary files; the next start clears them.
    let left: Vec<_> = std::fs::read_dir(&cut)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
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
    eprintln!("{kills} SIGKILLs, resumed each time; parameters equal to the uninterrupted run");
}
