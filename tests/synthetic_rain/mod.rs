//! Rainy and clean batches the trainer tests generate themselves: smooth random images (a coarse
//! random grid, bilinearly upsampled) and bright slanted streaks drawn on top.

// Each test file uses a different part of this module.
#![allow(dead_code)]

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tch::{Device, Kind, Tensor};

use derain::train::{GeneratorArch, TrainConfig};

/// `n` smooth images `[n,3,size,size]` in [0.1, 0.9].
pub fn smooth_images(rng: &mut ChaCha8Rng, n: i64, size: i64) -> Tensor {
    let grid = 5;
    let v: Vec<f32> = (0..n * 3 * grid * grid)
        .map(|_| rng.random_range(0.1..0.9))
        .collect();
    Tensor::from_slice(&v)
        .view([n, 3, grid, grid])
        .upsample_bilinear2d([size, size], true, None, None)
}

/// A rain layer `[n,3,size,size]`: thin bright streaks slanted 70–85° from horizontal.
pub fn streaks(rng: &mut ChaCha8Rng, n: i64, size: i64) -> Tensor {
    let s = size as usize;
    let mut v = vec![0.0f32; n as usize * s * s];
    for img in v.chunks_exact_mut(s * s) {
        for _ in 0..(s / 4) {
            let (x0, y0) = (
                rng.random_range(0.0..s as f32),
                rng.random_range(0.0..s as f32),
            );
            let angle = rng.random_range(70.0f32..85.0).to_radians();
            let len = rng.random_range(8.0..20.0);
            let level = rng.random_range(0.3..0.7);
            let mut t = 0.0;
            while t < len {
                let (x, y) = (x0 + t * angle.cos(), y0 + t * angle.sin());
                if (0.0..s as f32).contains(&x) && (0.0..s as f32).contains(&y) {
                    let p = &mut img[y as usize * s + x as usize];
                    *p = p.max(level);
                }
                t += 0.5;
            }
        }
    }
    Tensor::from_slice(&v)
        .view([n, 1, size, size])
        .expand([n, 3, size, size], false)
        .contiguous()
}

/// A stage-2 batch: rainy frames and unpaired clean frames.
pub fn anlcl_batch(seed: u64, n: i64, size: i64) -> (Tensor, Tensor) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let scene = smooth_images(&mut rng, n, size);
    let rainy = (&scene + streaks(&mut rng, n, size)).clamp(0.0, 1.0);
    let clean = smooth_images(&mut rng, n, size);
    (rainy, clean)
}

/// A stage-1 batch: rainy frames, their clean frames and rain layers (rainy − clean).
pub fn pretrain_batch(seed: u64, n: i64, size: i64) -> (Tensor, Tensor, Tensor) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let clean = smooth_images(&mut rng, n, size);
    let rainy = (&clean + streaks(&mut rng, n, size)).clamp(0.0, 1.0);
    let rain = &rainy - &clean;
    (rainy, clean, rain)
}

/// A config with every term on and networks small enough for tests: 64×64 crops, batch 2.
pub fn tiny_config(generator: GeneratorArch) -> TrainConfig {
    let mut c = TrainConfig {
        generator,
        batch: 2,
        crop: 64,
        ..TrainConfig::default()
    };
    c.discriminator.base = 8;
    c.heads.units = 32;
    c.sampler.anchors_per_image = 4;
    c.sampler.rain_negatives = 32;
    c.sampler.location_negatives = 32;
    c.validate().expect("the test config is valid");
    c
}

/// Every parameter of every network, by `network.name`, on the CPU.
pub fn parameters(t: &derain::train::Trainer) -> Vec<(String, Tensor)> {
    let mut out = Vec::new();
    for (prefix, net) in t.networks() {
        for (name, v) in net.var_store().variables() {
            out.push((
                format!("{prefix}.{name}"),
                // A copy: on the CPU in float32, to_device/to_kind return the live storage, and
                // a "before" snapshot would follow every later update.
                v.detach()
                    .to_device(Device::Cpu)
                    .to_kind(Kind::Float)
                    .copy(),
            ));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}
