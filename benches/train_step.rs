//! Training-step speed on the CPU: `cargo bench --features train --bench train_step`.
//!
//! One stage-2 (ANLCL) step at batch 4 with 256×256 crops, every loss on, ResNet-9 b16
//! generators (the paper's size): seconds per step, images per second, peak RSS, and where the
//! time goes. The goal: the non-local search takes at most 10% of the step. The stage-1 step at
//! the same size (no contrastive terms, no search) is the baseline the ANLCL step is a ratio of.
//! Then the authors' full-resolution generator at batch 1, and, for the CPU real-time goal, the
//! exported lite generator through ONNX Runtime at 640×360.
//!
//! `DERAIN_BENCH_STEPS` sets the timed steps per case (default 3, after one warm-up step).

#[path = "../tests/synthetic_rain/mod.rs"]
mod synthetic_rain;

use std::time::Instant;

use derain::model::Model;
use derain::onnx::{FullResConfig, LiteConfig};
use derain::onnx::{GeneratorOutput, Resnet9Config, resnet9_random};
use derain::runtime::{Generator, Provider, SessionOptions};
use derain::train::{GeneratorArch, StepReport, StepTimes, TrainConfig, Trainer};

const NONLOCAL_GOAL: f64 = 0.10;

/// Peak resident set size of this process, MiB (`VmHWM`).
fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Starts a new peak-RSS measurement (Linux: writing 5 to clear_refs resets VmHWM).
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn sum(v: &[f64]) -> f64 {
    v.iter().sum()
}

/// Mean of each phase over the timed steps, as (name, seconds).
fn phases(reports: &[StepReport]) -> Vec<(&'static str, f64)> {
    let n = reports.len() as f64;
    let mean = |f: &dyn Fn(&StepTimes) -> f64| {
        sum(&reports.iter().map(|r| f(&r.time)).collect::<Vec<_>>()) / n
    };
    let opt = |v: Option<f64>| v.unwrap_or(0.0);
    vec![
        ("forward", mean(&|t| t.forward)),
        ("non-local search", mean(&|t| t.nonlocal)),
        ("loss: consistency", mean(&|t| opt(t.loss.consistency))),
        ("loss: sparsity", mean(&|t| opt(t.loss.sparsity))),
        ("loss: adversarial (G)", mean(&|t| opt(t.loss.adversarial))),
        (
            "loss: layer contrastive",
            mean(&|t| opt(t.loss.layer_contrastive)),
        ),
        ("loss: asymmetric", mean(&|t| opt(t.loss.asymmetric))),
        ("loss: location", mean(&|t| opt(t.loss.location))),
        (
            "loss: supervised",
            mean(&|t| opt(t.loss.supervised_clean) + opt(t.loss.supervised_rain)),
        ),
        ("loss: discriminator", mean(&|t| t.discriminator_loss)),
        ("backward", mean(&|t| t.backward)),
        ("optimiser", mean(&|t| t.optimiser)),
        ("momentum update", mean(&|t| t.ema)),
    ]
}

struct Case {
    seconds: f64,
    nonlocal_share: f64,
}

fn run(label: &str, cfg: &TrainConfig, pretrain: bool, steps: usize) -> Case {
    reset_peak_rss();
    let mut trainer = Trainer::new(cfg).expect("valid config");
    let (b, s) = (cfg.batch as i64, cfg.crop as i64);
    let mut step = |i: u64| -> StepReport {
        if pretrain {
            let (rainy, clean, rain) = synthetic_rain::pretrain_batch(i, b, s);
            trainer.step_pretrain(&rainy, &clean, &rain).expect("step")
        } else {
            let (rainy, clean) = synthetic_rain::anlcl_batch(i, b, s);
            trainer.step_anlcl(&rainy, &clean).expect("step")
        }
    };
    let warm = Instant::now();
    step(0);
    let warm = warm.elapsed().as_secs_f64();
    let reports: Vec<StepReport> = (1..=steps as u64).map(&mut step).collect();
    let seconds = sum(&reports.iter().map(|r| r.time.total).collect::<Vec<_>>()) / steps as f64;
    let ph = phases(&reports);
    let nonlocal_share = ph[1].1 / seconds;

    println!("\n{label}");
    println!(
        "  {:.2} s/step, {:.2} images/s, peak RSS {:.0} MiB (warm-up step {:.2} s, {steps} timed)",
        seconds,
        cfg.batch as f64 / seconds,
        peak_rss_mib(),
        warm
    );
    let accounted: f64 = ph.iter().map(|p| p.1).sum();
    for (name, t) in ph.iter().filter(|p| p.1 > 0.0) {
        println!("  {name:<26} {:>8.3} s {:>6.1}%", t, 100.0 * t / seconds);
    }
    println!(
        "  {:<26} {:>8.3} s {:>6.1}%",
        "other (data, bookkeeping)",
        seconds - accounted,
        100.0 * (seconds - accounted) / seconds
    );
    Case {
        seconds,
        nonlocal_share,
    }
}

/// Median ms per 640×360 frame of an ONNX generator through ONNX Runtime on the CPU, the way
/// the element runs it; `None` (after a notice) without ONNX Runtime.
fn onnx_ms(bytes: Vec<u8>, name: &str) -> Option<f64> {
    let model = Model::from_bytes(bytes, name).ok()?;
    let options = SessionOptions {
        provider: Provider::Cpu,
        ..SessionOptions::default()
    };
    let mut g = match Generator::new(&model, &options) {
        Ok(g) => g,
        Err(e) => {
            println!("  {name} through ONNX Runtime: skipped ({e})");
            return None;
        }
    };
    let (h, w) = (360, 640);
    let input: Vec<f32> = (0..3 * h * w).map(|i| (i % 251) as f32 / 250.0).collect();
    for _ in 0..3 {
        g.run(&input, h, w, |_| ()).ok()?;
    }
    let mut ms: Vec<f64> = (0..20)
        .map(|_| {
            let start = Instant::now();
            let _ = g.run(&input, h, w, |_| ());
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    ms.sort_by(f64::total_cmp);
    Some(ms[ms.len() / 2])
}

/// The lite generator as exported by the trainer, and ResNet-9 b16 as the baseline.
fn lite_against_resnet9() {
    let cfg = TrainConfig {
        generator: GeneratorArch::Lite(LiteConfig {
            factor: 4,
            channels: 32,
            blocks: 3,
            context: 0,
        }),
        ..TrainConfig::default()
    };
    let t = Trainer::new(&cfg).expect("valid config");
    let lite = t
        .export(GeneratorOutput::Clean, &t.model_card("lite-bench"))
        .expect("exports");
    let r9 = resnet9_random(&Resnet9Config::default(), 1).expect("builds");
    let (Some(lite), Some(r9)) = (onnx_ms(lite, "lite"), onnx_ms(r9, "resnet9-b16")) else {
        return;
    };
    println!(
        "  exported lite generator (f4, 32 ch, 3 blocks), ONNX Runtime CPU, 640×360: {lite:.1} \
         ms/frame ({:.0} fps); ResNet-9 b16 in the same run: {r9:.1} ms ({:.1}x slower)",
        1e3 / lite,
        r9 / lite
    );
}

fn main() {
    let steps: usize = std::env::var("DERAIN_BENCH_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3)
        .max(1);
    println!(
        "training step on the CPU, {} libtorch threads, {} available cores",
        tch::get_num_threads(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    let r9 = TrainConfig {
        batch: 4,
        crop: 256,
        ..TrainConfig::default()
    };
    let s = &r9.sampler;
    let label = format!(
        "ANLCL step, ResNet-9 b16, batch 4, 256×256, every loss ({} anchors/image, N_B {}, N_R {}, N {})",
        s.anchors_per_image, s.positives, s.rain_negatives, s.location_negatives
    );
    let anlcl = run(&label, &r9, false, steps);
    let pretrain = run(
        "baseline: stage-1 step, same networks and batch",
        &r9,
        true,
        steps,
    );

    let fullres = TrainConfig {
        batch: 1,
        crop: 256,
        generator: GeneratorArch::Fullres(FullResConfig {
            channels: 32,
            blocks: 16,
        }),
        ..TrainConfig::default()
    };
    let fr = run(
        "ANLCL step, authors' full-resolution generator (32 ch, 16 blocks), batch 1, 256×256",
        &fullres,
        false,
        steps,
    );

    println!("\nsummary");
    println!(
        "  ANLCL / stage-1 step time: {:.2}x (contrastive terms, search, keys)",
        anlcl.seconds / pretrain.seconds
    );
    for (name, c) in [
        ("ResNet-9 b16, batch 4", &anlcl),
        ("full-res, batch 1", &fr),
    ] {
        println!(
            "  non-local search, {name}: {:.1}% of the step (goal ≤ {:.0}%): {}",
            100.0 * c.nonlocal_share,
            100.0 * NONLOCAL_GOAL,
            if c.nonlocal_share <= NONLOCAL_GOAL {
                "met"
            } else {
                "MISSED"
            }
        );
    }
    lite_against_resnet9();
}
