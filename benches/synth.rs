//! Rain synthesis speed on one core: `cargo bench --bench synth`.
//!
//! Times compositing one frame of each preset at 1280x720 (what `derain synth` does per video
//! frame) and at 256x256 through both the 8-bit and the float path (what the trainer does per
//! crop), plus building a 256x256 renderer (the trainer builds one per crop). Reports median and
//! p90 milliseconds. Goals: heavy 1280x720 under 50 ms, heavy 256x256 under 5 ms.

use std::hint::black_box;
use std::time::Instant;

use derain::imageio::RgbImage;
use derain::synth::{Preset, RainRenderer};

const WARMUP: usize = 5;
const ITERATIONS: usize = 60;
const GOAL_720P_MS: f64 = 50.0;
const GOAL_256_MS: f64 = 5.0;

struct Stats {
    median: f64,
    p90: f64,
}

/// Runs `f(i)` WARMUP times, then ITERATIONS timed times; milliseconds per call.
fn time(mut f: impl FnMut(u64)) -> Stats {
    for i in 0..WARMUP {
        f(i as u64);
    }
    let mut ms: Vec<f64> = (0..ITERATIONS)
        .map(|i| {
            let start = Instant::now();
            f((WARMUP + i) as u64);
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    ms.sort_by(f64::total_cmp);
    Stats {
        median: ms[ms.len() / 2],
        p90: ms[ms.len() * 9 / 10],
    }
}

/// A smooth clean frame; rain cost does not depend on content.
fn clean(width: u32, height: u32) -> RgbImage {
    RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, ((x + y) % 256) as u8])
    })
}

fn report(what: &str, s: &Stats) {
    println!(
        "{what:<36} median {:8.3} ms  p90 {:8.3} ms",
        s.median, s.p90
    );
}

fn main() {
    let mut heavy = [0.0f64; 2];
    for (k, (w, h)) in [(1280u32, 720u32), (256, 256)].into_iter().enumerate() {
        let img = clean(w, h);
        for preset in Preset::ALL {
            let r = RainRenderer::new(preset.params(1), 1, w, h);
            // Consecutive frame numbers: the video case, drops moving and respawning.
            let s = time(|t| {
                black_box(r.render(black_box(&img), t).expect("sizes match"));
            });
            report(&format!("render {preset} {w}x{h}"), &s);
            if preset == Preset::Heavy {
                heavy[k] = s.median;
            }
        }
        let r = RainRenderer::new(Preset::Heavy.params(1), 1, w, h);
        let img_f: Vec<f32> = img.as_raw().iter().map(|&v| f32::from(v) / 255.0).collect();
        let mut out = vec![0.0f32; img_f.len()];
        let s = time(|t| {
            r.render_f32(black_box(&img_f), t, &mut out)
                .expect("sizes match");
            black_box(&mut out);
        });
        report(&format!("render_f32 heavy {w}x{h}"), &s);
        let s = time(|t| {
            black_box(r.rain_layer(t));
        });
        report(&format!("rain_layer heavy {w}x{h}"), &s);
    }
    let s = time(|seed| {
        black_box(RainRenderer::new(
            Preset::Heavy.params(seed),
            seed,
            256,
            256,
        ));
    });
    report("params + new heavy 256x256", &s);
    let verdict = |ms: f64, goal: f64| if ms <= goal { "meets" } else { "MISSES" };
    println!(
        "heavy render vs goals (median, one core): 1280x720 {} {GOAL_720P_MS} ms ({:.2} ms), \
         256x256 {} {GOAL_256_MS} ms ({:.3} ms)",
        verdict(heavy[0], GOAL_720P_MS),
        heavy[0],
        verdict(heavy[1], GOAL_256_MS),
        heavy[1]
    );
}
