//! Turning frames into training material: integer downscale, scene-change distance and seeded
//! random crops.

use std::path::PathBuf;

use image::RgbImage;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{Footage, FootageError, FootageOptions};

/// Averages `factor`×`factor` blocks (the last partial row/column of blocks is dropped). A box
/// filter is exact for integer factors and keeps the rain streaks' energy, unlike point sampling.
pub fn downscale_box(img: &RgbImage, factor: u32) -> RgbImage {
    if factor <= 1 {
        return img.clone();
    }
    let (w, h) = (img.width() / factor, img.height() / factor);
    let (w, h) = (w.max(1), h.max(1));
    let f = factor as usize;
    let src = img.as_raw();
    let stride = img.width() as usize * 3;
    let mut out = vec![0u8; w as usize * h as usize * 3];
    let mut acc = vec![0u32; w as usize * 3];
    let n = (f * f) as u32;
    let (fw, fh) = (
        (img.width() as usize).min(w as usize * f),
        (img.height() as usize).min(h as usize * f),
    );
    for (oy, out_row) in out.chunks_exact_mut(w as usize * 3).enumerate() {
        acc.iter_mut().for_each(|a| *a = 0);
        for y in oy * f..(oy * f + f).min(fh) {
            let row = &src[y * stride..y * stride + fw * 3];
            for (x, px) in row.chunks_exact(3).enumerate() {
                let o = (x / f) * 3;
                acc[o] += u32::from(px[0]);
                acc[o + 1] += u32::from(px[1]);
                acc[o + 2] += u32::from(px[2]);
            }
        }
        for (o, a) in out_row.iter_mut().zip(&acc) {
            *o = ((a + n / 2) / n) as u8;
        }
    }
    RgbImage::from_raw(w, h, out).unwrap_or_else(|| RgbImage::new(w, h))
}

/// Side of the grey thumbnail used for scene sampling.
const THUMB: u32 = 32;

/// A small grey thumbnail (32×32 block means) for comparing frames cheaply.
pub fn thumbnail(img: &RgbImage) -> Vec<f32> {
    let (w, h) = img.dimensions();
    let mut sum = vec![0f32; (THUMB * THUMB) as usize];
    let mut count = vec![0u32; (THUMB * THUMB) as usize];
    for (y, row) in img.as_raw().chunks_exact(w as usize * 3).enumerate() {
        let ty = (y as u32 * THUMB / h.max(1)).min(THUMB - 1);
        for (x, px) in row.chunks_exact(3).enumerate() {
            let tx = (x as u32 * THUMB / w.max(1)).min(THUMB - 1);
            let i = (ty * THUMB + tx) as usize;
            sum[i] += (u32::from(px[0]) + u32::from(px[1]) + u32::from(px[2])) as f32 / 3.0;
            count[i] += 1;
        }
    }
    sum.iter()
        .zip(&count)
        .map(|(s, &c)| if c > 0 { s / c as f32 } else { 0.0 })
        .collect()
}

/// Mean absolute difference of two thumbnails (0–255 scale). Sensor noise and compression of a
/// stopped car stay well under 2; driving at any speed moves it above.
pub fn scene_distance(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() || a.is_empty() {
        return f32::INFINITY;
    }
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).sum::<f32>() / a.len() as f32
}

/// A `width`×`height` crop at a uniformly random position, or `None` when the image is smaller.
pub fn random_crop(
    img: &RgbImage,
    width: u32,
    height: u32,
    rng: &mut impl Rng,
) -> Option<RgbImage> {
    if img.width() < width || img.height() < height || width == 0 || height == 0 {
        return None;
    }
    let x = rng.random_range(0..=img.width() - width);
    let y = rng.random_range(0..=img.height() - height);
    Some(image::imageops::crop_imm(img, x, y, width, height).to_image())
}

/// An endless, seeded stream of random square crops from footage: each kept frame gives
/// `crops_per_frame` crops, and the footage is read again from the start when it ends (one pass
/// is an epoch). Frames smaller than the crop are skipped and counted.
pub struct CropSampler {
    paths: Vec<PathBuf>,
    options: FootageOptions,
    size: u32,
    crops_per_frame: usize,
    rng: ChaCha8Rng,
    footage: Option<Footage>,
    frame: Option<RgbImage>,
    left: usize,
    epoch: u64,
    yielded_this_epoch: u64,
    too_small: u64,
}

impl CropSampler {
    /// `size`: crop side in pixels (after the footage's downscale).
    pub fn new(
        paths: Vec<PathBuf>,
        options: FootageOptions,
        size: u32,
        crops_per_frame: usize,
        seed: u64,
    ) -> Result<Self, FootageError> {
        if size == 0 || crops_per_frame == 0 {
            return Err(FootageError::Option(
                "crop size and crops per frame must be at least 1".into(),
            ));
        }
        let footage = Footage::open(&paths, options.clone())?;
        Ok(Self {
            paths,
            options,
            size,
            crops_per_frame,
            rng: ChaCha8Rng::seed_from_u64(seed),
            footage: Some(footage),
            frame: None,
            left: 0,
            epoch: 0,
            yielded_this_epoch: 0,
            too_small: 0,
        })
    }

    /// Completed passes over the footage.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Frames skipped because they are smaller than the crop.
    pub fn too_small(&self) -> u64 {
        self.too_small
    }

    /// The next crop. Errors when the footage has no frame at least as large as the crop.
    pub fn next_crop(&mut self) -> Result<RgbImage, FootageError> {
        loop {
            if self.left > 0
                && let Some(frame) = &self.frame
                && let Some(crop) = random_crop(frame, self.size, self.size, &mut self.rng)
            {
                self.left -= 1;
                self.yielded_this_epoch += 1;
                return Ok(crop);
            }
            let footage = match &mut self.footage {
                Some(f) => f,
                None => self
                    .footage
                    .insert(Footage::open(&self.paths, self.options.clone())?),
            };
            match footage.next() {
                Some(Ok(frame)) => {
                    if frame.image.width() < self.size || frame.image.height() < self.size {
                        self.too_small += 1;
                        self.frame = None;
                        continue;
                    }
                    self.frame = Some(frame.image);
                    self.left = self.crops_per_frame;
                }
                Some(Err(e)) => return Err(e),
                None => {
                    if self.yielded_this_epoch == 0 {
                        return Err(FootageError::Option(format!(
                            "no frame of the footage is at least {0}x{0} (after downscale); \
                             {1} frames were smaller",
                            self.size, self.too_small
                        )));
                    }
                    self.epoch += 1;
                    self.yielded_this_epoch = 0;
                    self.footage = None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downscale_averages_blocks() {
        let mut img = RgbImage::new(5, 4);
        // Top-left 2x2 block: 0, 10, 20, 30 -> mean 15.
        for (x, y, v) in [(0, 0, 0u8), (1, 0, 10), (0, 1, 20), (1, 1, 30)] {
            img.put_pixel(x, y, image::Rgb([v, v, 2 * v]));
        }
        let d = downscale_box(&img, 2);
        assert_eq!(d.dimensions(), (2, 2));
        assert_eq!(d.get_pixel(0, 0).0, [15, 15, 30]);
        assert_eq!(d.get_pixel(1, 1).0, [0, 0, 0]);
    }

    #[test]
    fn crops_are_seeded_and_inside() {
        let mut img = RgbImage::new(40, 30);
        for (x, y, p) in img.enumerate_pixels_mut() {
            *p = image::Rgb([x as u8, y as u8, 0]);
        }
        let mut a = ChaCha8Rng::seed_from_u64(3);
        let mut b = ChaCha8Rng::seed_from_u64(3);
        for _ in 0..20 {
            let ca = random_crop(&img, 16, 16, &mut a).unwrap();
            let cb = random_crop(&img, 16, 16, &mut b).unwrap();
            assert_eq!(ca, cb);
            let [x0, y0, _] = ca.get_pixel(0, 0).0;
            assert!(x0 <= 24 && y0 <= 14);
            assert_eq!(ca.get_pixel(15, 15).0, [x0 + 15, y0 + 15, 0]);
        }
        assert!(random_crop(&img, 41, 16, &mut a).is_none());
    }

    #[test]
    fn scene_distance_separates_noise_from_motion() {
        let a = RgbImage::from_fn(64, 48, |x, y| {
            image::Rgb([(x * 3) as u8, (y * 5) as u8, 90])
        });
        let noisy = RgbImage::from_fn(64, 48, |x, y| {
            let n = ((x * 7 + y * 13) % 3) as u8; // +0..2 "sensor noise"
            image::Rgb([(x * 3) as u8 + n, (y * 5) as u8, 90])
        });
        let moved = RgbImage::from_fn(64, 48, |x, y| {
            image::Rgb([((x + 6) * 3) as u8, (y * 5) as u8, 90])
        });
        let (ta, tn, tm) = (thumbnail(&a), thumbnail(&noisy), thumbnail(&moved));
        assert!(scene_distance(&ta, &tn) < 1.0);
        assert!(scene_distance(&ta, &tm) > 5.0);
    }

    #[test]
    fn sampler_cycles_through_epochs() {
        let dir = tempfile::tempdir().unwrap();
        for (i, n) in ["a.png", "b.png"].iter().enumerate() {
            let img = RgbImage::from_pixel(20, 20, image::Rgb([i as u8 * 100; 3]));
            crate::imageio::save_png_atomic(&img, &dir.path().join(n)).unwrap();
        }
        let small = RgbImage::from_pixel(4, 4, image::Rgb([1; 3]));
        crate::imageio::save_png_atomic(&small, &dir.path().join("c.png")).unwrap();
        let mut s = CropSampler::new(
            vec![dir.path().to_owned()],
            FootageOptions::default(),
            8,
            3,
            1,
        )
        .unwrap();
        let crops: Vec<RgbImage> = (0..12).map(|_| s.next_crop().unwrap()).collect();
        assert_eq!(crops[0].get_pixel(0, 0).0, [0; 3]);
        assert_eq!(crops[3].get_pixel(0, 0).0, [100; 3]);
        assert_eq!(crops[6].get_pixel(0, 0).0, [0; 3]);
        assert_eq!(s.epoch(), 1);
        assert!(s.too_small() >= 1);
        let mut tiny = CropSampler::new(
            vec![dir.path().join("c.png")],
            FootageOptions::default(),
            8,
            1,
            1,
        )
        .unwrap();
        assert!(tiny.next_crop().is_err());
    }
}
