//! Training batches from footage, as flat NCHW float buffers in [0,1] (no libtorch here, so the
//! data path is tested and reused without the `train` feature).
//!
//! Frames are read once into a [`FramePool`] (after the footage's stride, scene sampling and
//! downscale). Every crop of every step is then a pure function of (seed, step, index in batch):
//! which frame, where, whether mirrored, and (stage 1) which rain. A run killed and resumed at
//! step k therefore sees exactly the batches an uninterrupted run would, with no sampler state to
//! save.

use std::path::PathBuf;

use image::RgbImage;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::footage::{Footage, FootageError, FootageOptions, FootageSummary, downscale_box};
use crate::synth::{Effects, LinePattern, Preset, RainRenderer};

/// Errors from building batches.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error(transparent)]
    Footage(#[from] FootageError),
    #[error(
        "no frame of {what} is at least {size}x{size} pixels (after downscale {downscale}); \
         use a smaller crop or a smaller downscale"
    )]
    TooSmall {
        what: String,
        size: u32,
        downscale: u32,
    },
    #[error("rain synthesis failed: {0}")]
    Synth(String),
}

/// Frames held in memory for random access; clones share the frames.
#[derive(Clone)]
pub struct FramePool {
    frames: std::sync::Arc<Vec<RgbImage>>,
    summary: FootageSummary,
}

impl FramePool {
    /// Reads every frame of `paths` that is at least `min_size` on both sides. `what` names
    /// the footage in errors ("clean footage", "rainy footage").
    pub fn load(
        paths: &[PathBuf],
        options: FootageOptions,
        min_size: u32,
        what: &str,
    ) -> Result<Self, DatasetError> {
        let downscale = options.downscale;
        let mut footage = Footage::open(paths, options)?;
        let mut frames = Vec::new();
        for frame in footage.by_ref() {
            let frame = frame?;
            if frame.image.width() >= min_size && frame.image.height() >= min_size {
                frames.push(frame.image);
            }
        }
        if frames.is_empty() {
            return Err(DatasetError::TooSmall {
                what: what.to_owned(),
                size: min_size,
                downscale,
            });
        }
        Ok(Self {
            frames: frames.into(),
            summary: footage.summary().clone(),
        })
    }

    /// A pool from frames already in memory (tests, generated content).
    pub fn from_frames(frames: Vec<RgbImage>) -> Self {
        Self {
            frames: frames.into(),
            summary: FootageSummary::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// This pool's frames followed by a copy of each at every one of `factors` smaller (box
    /// filter), leaving out the copies below `min_size` on a side; also how many copies went in
    /// at each factor. The summary stays this pool's (the footage was read once).
    pub fn with_smaller_copies(&self, factors: &[u32], min_size: u32) -> (Self, Vec<usize>) {
        let mut frames: Vec<RgbImage> = self.frames.to_vec();
        let mut added = Vec::with_capacity(factors.len());
        for &factor in factors {
            let before = frames.len();
            frames.extend(
                self.frames
                    .iter()
                    .map(|f| downscale_box(f, factor))
                    .filter(|f| f.width() >= min_size && f.height() >= min_size),
            );
            added.push(frames.len() - before);
        }
        let pool = Self {
            frames: frames.into(),
            summary: self.summary.clone(),
        };
        (pool, added)
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// What reading the footage did (skipped and damaged sources included).
    pub fn summary(&self) -> &FootageSummary {
        &self.summary
    }

    /// Writes a random `size`×`size` crop (random frame, position and horizontal mirror) into
    /// `out` as CHW floats in [0,1]. Frames smaller than `size` are never chosen when the pool
    /// was loaded with `min_size >= size`; otherwise they are skipped by retrying.
    fn crop_into(&self, rng: &mut ChaCha8Rng, size: u32, out: &mut [f32]) {
        let s = size as usize;
        let plane = s * s;
        for _ in 0..64 {
            let f = &self.frames[rng.random_range(0..self.frames.len())];
            if f.width() < size || f.height() < size {
                continue;
            }
            let x0 = rng.random_range(0..=f.width() - size) as usize;
            let y0 = rng.random_range(0..=f.height() - size) as usize;
            let mirror = rng.random_bool(0.5);
            let stride = f.width() as usize * 3;
            let raw = f.as_raw();
            for y in 0..s {
                let row = &raw[(y0 + y) * stride + x0 * 3..][..s * 3];
                for x in 0..s {
                    let sx = if mirror { s - 1 - x } else { x };
                    for c in 0..3 {
                        out[c * plane + y * s + x] = f32::from(row[sx * 3 + c]) / 255.0;
                    }
                }
            }
            return;
        }
        out.fill(0.0);
    }
}

/// One training batch: `n` images of 3×`size`×`size`, NCHW, in [0,1].
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub n: usize,
    pub size: usize,
    /// O: rainy frames (synthetic in stage 1, real in stage 2).
    pub rainy: Vec<f32>,
    /// B: clean frames (the pair of `rainy` in stage 1, unpaired in stage 2).
    pub clean: Vec<f32>,
    /// R = O − B for synthetic pairs; `None` for real rain.
    pub rain: Option<Vec<f32>>,
}

/// The random numbers of one sample: a generator seeded by mixing (seed, stream, step, index)
/// through SplitMix64, so no two samples share a sequence and any step can be rebuilt alone.
fn sample_rng(seed: u64, stream: u64, step: u64, index: usize) -> ChaCha8Rng {
    use crate::seed::mix;
    let h = mix(mix(mix(mix(seed) ^ stream) ^ step) ^ index as u64);
    ChaCha8Rng::seed_from_u64(h)
}

/// Stage 1: synthetic rain rendered over clean crops, a new rain draw for every sample.
pub struct SyntheticPairs {
    clean: FramePool,
    preset: Preset,
    size: u32,
    seed: u64,
    dry_fraction: f64,
    veil_probability: f64,
    effects: Effects,
    line_negative_fraction: f64,
    scene_line_probability: f64,
}

impl SyntheticPairs {
    /// Every sample rainy, veils as the preset draws them.
    pub fn new(clean: FramePool, preset: Preset, size: u32, seed: u64) -> Self {
        Self {
            clean,
            preset,
            size,
            seed,
            dry_fraction: 0.0,
            veil_probability: 1.0,
            effects: preset.default_effects(),
            line_negative_fraction: 0.0,
            scene_line_probability: 0.0,
        }
    }

    /// Draws the driving effects (atmospheric veil, radial and near-lens streaks, refraction,
    /// windshield drops) with `effects`' probabilities instead of the preset's own
    /// ([`Preset::default_effects`]); probabilities are clamped to [0, 1]. The target of a
    /// sample stays the clean crop J and its rain layer O − B, whatever the effects did.
    pub fn with_effects(mut self, effects: Effects) -> Self {
        self.effects = effects;
        self
    }

    /// Makes a share `fraction` of the samples hard negatives: dry samples (rainy = clean,
    /// rain = 0) whose clean crop carries drawn thin straight structure ([`LinePattern`]), the
    /// lines of streets a model must not take for rain. The other samples are dry with
    /// probability `dry_fraction` as before.
    pub fn with_line_negatives(mut self, fraction: f64) -> Self {
        self.line_negative_fraction = if fraction.is_nan() {
            0.0
        } else {
            fraction.clamp(0.0, 1.0)
        };
        self
    }

    /// Draws thin straight scene lines ([`LinePattern`]) into the clean crop of a rainy sample
    /// with probability `p`, before the rain is rendered over it: the target keeps the lines, so
    /// the generator learns that lines under rain belong to the scene too, not only on dry
    /// frames (where [`SyntheticPairs::with_line_negatives`] puts them).
    pub fn with_scene_lines(mut self, p: f64) -> Self {
        self.scene_line_probability = if p.is_nan() { 0.0 } else { p.clamp(0.0, 1.0) };
        self
    }

    /// Mixes in dry samples (rainy = clean, rain = 0) with probability `dry_fraction`, and keeps
    /// a preset's veil with probability `veil_probability`. A generator that only ever sees rain
    /// and haze learns to darken and dehaze every frame, which damages frames without them (the
    /// failure the issue measured in the authors' checkpoint); dry and veil-free samples teach it
    /// to leave such frames alone.
    pub fn with_mix(mut self, dry_fraction: f64, veil_probability: f64) -> Self {
        self.dry_fraction = dry_fraction.clamp(0.0, 1.0);
        self.veil_probability = veil_probability.clamp(0.0, 1.0);
        self
    }

    /// The batch of step `step` (the same for the same seed, step and `n`).
    pub fn batch(&self, step: u64, n: usize) -> Result<Batch, DatasetError> {
        let s = self.size as usize;
        let len = 3 * s * s;
        let mut clean = vec![0f32; n * len];
        let mut rainy = vec![0f32; n * len];
        let mut rgb = vec![0f32; len];
        let mut out = vec![0f32; len];
        for i in 0..n {
            let mut rng = sample_rng(self.seed, 1, step, i);
            let c = &mut clean[i * len..][..len];
            self.clean.crop_into(&mut rng, self.size, c);
            let rain_seed: u64 = rng.random();
            let dry = rng.random_bool(self.dry_fraction);
            let keep_veil = rng.random_bool(self.veil_probability);
            // Drawn after today's draws, so a run without line negatives sees the same batches.
            let line_negative = rng.random_bool(self.line_negative_fraction);
            // Drawn last, so runs without scene lines see the same batches as before.
            let scene_lines =
                !dry && !line_negative && rng.random_bool(self.scene_line_probability);
            if line_negative || scene_lines {
                let lines: u64 = rng.random();
                chw_to_hwc(c, s, &mut rgb);
                LinePattern::random(lines, self.size, self.size)
                    .paint_f32(&mut rgb, self.size, self.size)
                    .map_err(|e| DatasetError::Synth(e.to_string()))?;
                hwc_to_chw(&rgb, s, c);
            }
            if dry || line_negative {
                rainy[i * len..][..len].copy_from_slice(c);
                continue;
            }
            let mut params = self.preset.params_with(rain_seed, &self.effects);
            if !keep_veil {
                params.veil = None;
                params.scattering = None;
            }
            let renderer = RainRenderer::new(params, rain_seed, self.size, self.size);
            // The renderer works on interleaved RGB; the batch is planar.
            chw_to_hwc(c, s, &mut rgb);
            renderer
                .render_f32(&rgb, 0, &mut out)
                .map_err(|e| DatasetError::Synth(e.to_string()))?;
            hwc_to_chw(&out, s, &mut rainy[i * len..][..len]);
        }
        let rain = rainy.iter().zip(&clean).map(|(o, b)| o - b).collect();
        Ok(Batch {
            n,
            size: s,
            rainy,
            clean,
            rain: Some(rain),
        })
    }
}

/// Stage 2: real rainy crops and, independently, clean crops (unpaired).
pub struct UnpairedCrops {
    rainy: FramePool,
    clean: FramePool,
    size: u32,
    seed: u64,
}

impl UnpairedCrops {
    pub fn new(rainy: FramePool, clean: FramePool, size: u32, seed: u64) -> Self {
        Self {
            rainy,
            clean,
            size,
            seed,
        }
    }

    /// The batch of step `step`.
    pub fn batch(&self, step: u64, n: usize) -> Batch {
        let s = self.size as usize;
        let len = 3 * s * s;
        let mut rainy = vec![0f32; n * len];
        let mut clean = vec![0f32; n * len];
        for i in 0..n {
            let mut rng = sample_rng(self.seed, 2, step, i);
            self.rainy
                .crop_into(&mut rng, self.size, &mut rainy[i * len..][..len]);
            let mut rng = sample_rng(self.seed, 3, step, i);
            self.clean
                .crop_into(&mut rng, self.size, &mut clean[i * len..][..len]);
        }
        Batch {
            n,
            size: s,
            rainy,
            clean,
            rain: None,
        }
    }
}

fn chw_to_hwc(chw: &[f32], s: usize, hwc: &mut [f32]) {
    let plane = s * s;
    for p in 0..plane {
        for c in 0..3 {
            hwc[p * 3 + c] = chw[c * plane + p];
        }
    }
}

fn hwc_to_chw(hwc: &[f32], s: usize, chw: &mut [f32]) {
    let plane = s * s;
    for p in 0..plane {
        for c in 0..3 {
            chw[c * plane + p] = hwc[p * 3 + c];
        }
    }
}

/// Converts one CHW image in [0,1] back to 8-bit RGB (for sample grids).
pub fn chw_to_image(chw: &[f32], width: u32, height: u32) -> RgbImage {
    let plane = (width * height) as usize;
    RgbImage::from_fn(width, height, |x, y| {
        let p = (y * width + x) as usize;
        let v = |c: usize| {
            (chw.get(c * plane + p)
                .copied()
                .unwrap_or(0.0)
                .clamp(0.0, 1.0)
                * 255.0)
                .round() as u8
        };
        image::Rgb([v(0), v(1), v(2)])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool() -> FramePool {
        FramePool::from_frames(
            (0..3)
                .map(|i| {
                    RgbImage::from_fn(48, 40, |x, y| {
                        image::Rgb([(x * 5) as u8, (y * 6) as u8, (i * 80) as u8])
                    })
                })
                .collect(),
        )
    }

    #[test]
    fn synthetic_batches_depend_only_on_seed_and_step() {
        let a = SyntheticPairs::new(pool(), Preset::Heavy, 32, 9);
        let b = SyntheticPairs::new(pool(), Preset::Heavy, 32, 9);
        let b5 = a.batch(5, 3).unwrap();
        // Asked in another order, from another instance: the same batch.
        let _ = b.batch(7, 3).unwrap();
        assert_eq!(b.batch(5, 3).unwrap(), b5);
        assert_ne!(a.batch(6, 3).unwrap().clean, b5.clean);
        // R = O − B, and rain only brightens.
        let rain = b5.rain.as_ref().unwrap();
        for ((r, o), c) in rain.iter().zip(&b5.rainy).zip(&b5.clean) {
            assert!((r - (o - c)).abs() < 1e-6 && *r >= -1e-6);
        }
        assert!(rain.iter().any(|&r| r > 0.05), "heavy rain leaves marks");
        assert_eq!(b5.rainy.len(), 3 * 3 * 32 * 32);
    }

    #[test]
    fn smaller_copies_follow_the_frames_and_skip_those_below_the_crop() {
        let frames = FramePool::from_frames(vec![RgbImage::new(80, 80), RgbImage::new(40, 40)]);
        let (more, added) = frames.with_smaller_copies(&[2, 4], 16);
        assert_eq!(added, [2, 1], "the 10x10 copy is below the 16 px crop");
        assert_eq!(more.len(), 5);
        assert_eq!(more.frames[..2], frames.frames[..]);
        let sizes: Vec<_> = more.frames[2..].iter().map(|f| f.dimensions()).collect();
        assert_eq!(sizes, [(40, 40), (20, 20), (20, 20)]);
    }

    #[test]
    fn dry_samples_and_veil_mix() {
        let all_dry = SyntheticPairs::new(pool(), Preset::Heavy, 32, 9).with_mix(1.0, 1.0);
        let b = all_dry.batch(0, 4).unwrap();
        assert_eq!(b.rainy, b.clean);
        assert!(b.rain.unwrap().iter().all(|&r| r == 0.0));
        let some = SyntheticPairs::new(pool(), Preset::Heavy, 32, 9).with_mix(0.5, 0.0);
        let b = some.batch(1, 16).unwrap();
        let plane = 3 * 32 * 32;
        let dry = (0..16)
            .filter(|i| b.rainy[i * plane..][..plane] == b.clean[i * plane..][..plane])
            .count();
        assert!((3..=13).contains(&dry), "{dry} of 16 dry at p=0.5");
    }

    #[test]
    fn line_negatives_are_dry_and_carry_lines() {
        let plain = SyntheticPairs::new(pool(), Preset::Heavy, 32, 9).with_mix(1.0, 1.0);
        let lines = SyntheticPairs::new(pool(), Preset::Heavy, 32, 9)
            .with_mix(1.0, 1.0)
            .with_line_negatives(1.0);
        let (p, b) = (plain.batch(2, 4).unwrap(), lines.batch(2, 4).unwrap());
        // Input equals target, no rain, and the target is the crop with lines drawn in.
        assert_eq!(b.rainy, b.clean);
        assert!(b.rain.unwrap().iter().all(|&r| r == 0.0));
        let plane = 3 * 32 * 32;
        for i in 0..4 {
            let changed = (0..plane)
                .filter(|&k| (b.clean[i * plane + k] - p.clean[i * plane + k]).abs() > 0.05)
                .count();
            assert!(
                changed >= 20,
                "sample {i}: {changed} values changed by the lines"
            );
        }
        // Absent, the key changes nothing: a run without it sees today's batches.
        let today = SyntheticPairs::new(pool(), Preset::Heavy, 32, 9).with_mix(0.3, 0.5);
        let zero = SyntheticPairs::new(pool(), Preset::Heavy, 32, 9)
            .with_mix(0.3, 0.5)
            .with_line_negatives(0.0)
            .with_effects(Effects::NONE);
        assert_eq!(today.batch(3, 6).unwrap(), zero.batch(3, 6).unwrap());
    }

    #[test]
    fn scene_lines_stay_in_the_target_under_rain() {
        let plain = SyntheticPairs::new(pool(), Preset::Heavy, 32, 9);
        let lines = SyntheticPairs::new(pool(), Preset::Heavy, 32, 9).with_scene_lines(1.0);
        let (p, b) = (plain.batch(2, 4).unwrap(), lines.batch(2, 4).unwrap());
        let plane = 3 * 32 * 32;
        for i in 0..4 {
            let (bc, pc) = (
                &b.clean[i * plane..][..plane],
                &p.clean[i * plane..][..plane],
            );
            let changed = (0..plane).filter(|&k| (bc[k] - pc[k]).abs() > 0.05).count();
            assert!(
                changed >= 20,
                "sample {i}: {changed} target values carry lines"
            );
            // Still a rainy sample: rain over the lined target, R = O − B.
            assert_ne!(
                &b.rainy[i * plane..][..plane],
                bc,
                "sample {i} was left dry"
            );
        }
        let rain = b.rain.unwrap();
        for ((r, o), c) in rain.iter().zip(&b.rainy).zip(&b.clean) {
            assert!((r - (o - c)).abs() < 1e-6);
        }
        // Dry samples stay plain dry; at 0 the batches are today's.
        let dry = SyntheticPairs::new(pool(), Preset::Heavy, 32, 9)
            .with_mix(1.0, 1.0)
            .with_scene_lines(1.0);
        let plain_dry = SyntheticPairs::new(pool(), Preset::Heavy, 32, 9).with_mix(1.0, 1.0);
        assert_eq!(dry.batch(1, 3).unwrap(), plain_dry.batch(1, 3).unwrap());
        let zero = SyntheticPairs::new(pool(), Preset::Heavy, 32, 9).with_scene_lines(0.0);
        assert_eq!(zero.batch(3, 4).unwrap(), plain.batch(3, 4).unwrap());
    }

    #[test]
    fn driving_effects_render_in_training_with_the_clean_target() {
        let all = Effects {
            scattering: 1.0,
            radial: 1.0,
            lens_streaks: 1.0,
            refraction: 1.0,
            drops: 1.0,
        };
        let fx = SyntheticPairs::new(pool(), Preset::Medium, 32, 4).with_effects(all);
        let plain = SyntheticPairs::new(pool(), Preset::Medium, 32, 4);
        let (b, p) = (fx.batch(1, 3).unwrap(), plain.batch(1, 3).unwrap());
        // Same crops (J), other rainy frames; R = O − B still, and O in range.
        assert_eq!(b.clean, p.clean);
        assert_ne!(b.rainy, p.rainy);
        assert!(b.rainy.iter().all(|v| (0.0..=1.0).contains(v)));
        let rain = b.rain.unwrap();
        for ((r, o), c) in rain.iter().zip(&b.rainy).zip(&b.clean) {
            assert!((r - (o - c)).abs() < 1e-6);
        }
    }

    #[test]
    fn crops_are_planar_and_inside_the_frame() {
        let u = UnpairedCrops::new(pool(), pool(), 16, 1);
        let b = u.batch(0, 4);
        assert!(b.rain.is_none());
        let plane = 16 * 16;
        for i in 0..4 {
            let img = &b.rainy[i * 3 * plane..][..3 * plane];
            // Red grows by 5/255 per column (or falls, when mirrored); green by 6/255 per row.
            let dx = img[1] - img[0];
            assert!((dx.abs() - 5.0 / 255.0).abs() < 1e-6, "{dx}");
            let dy = img[plane + 16] - img[plane];
            assert!((dy - 6.0 / 255.0).abs() < 1e-6, "{dy}");
        }
    }

    #[test]
    fn pool_refuses_footage_smaller_than_the_crop() {
        let dir = tempfile::tempdir().unwrap();
        crate::imageio::save_png_atomic(&RgbImage::new(20, 20), &dir.path().join("a.png")).unwrap();
        let e = FramePool::load(
            &[dir.path().to_owned()],
            FootageOptions::default(),
            32,
            "clean footage",
        )
        .err()
        .unwrap();
        assert!(e.to_string().contains("32x32"), "{e}");
    }

    #[test]
    fn image_round_trip() {
        let img = RgbImage::from_fn(5, 4, |x, y| image::Rgb([x as u8 * 40, y as u8 * 50, 7]));
        let mut chw = vec![0f32; 3 * 20];
        for (p, px) in img.pixels().enumerate() {
            for c in 0..3 {
                chw[c * 20 + p] = f32::from(px.0[c]) / 255.0;
            }
        }
        assert_eq!(chw_to_image(&chw, 5, 4), img);
    }
}
