//! Hard negatives: thin straight scene structure drawn over clean frames.
//!
//! A model trained on streaks over scenes learns "thin bright line = rain" and erases poles,
//! window frames, fences, cables and lane lines from dry frames (docs/ARCHITECTURE.md, Rain
//! synthesis). A [`LinePattern`] is such structure, drawn sharp (in focus, anti-aliased over one
//! pixel) into a clean frame that then serves as both the input and the target of a dry sample: the
//! lines are scene, and the model must keep them.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::SynthError;
use super::render::for_each_near_segment;
use crate::imageio::RgbImage;

const LINES_SALT: u64 = 0x6c69_6e65_734e_4547; // "linesNEG"

/// One straight, sharp line of the scene, in pixels.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SceneLine {
    /// One end (x, y).
    pub from: [f32; 2],
    /// The other end (x, y).
    pub to: [f32; 2],
    /// Width in pixels.
    pub width: f32,
    /// RGB in [0, 1].
    pub colour: [f32; 3],
}

/// A set of scene lines: poles, window or fence grids, cables, lane-line dashes, and thin bright
/// near-vertical lines (the hardest negative: they look most like streaks, but are long,
/// straight and sharp).
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct LinePattern {
    pub lines: Vec<SceneLine>,
}

/// A dark or a bright grey, slightly tinted: paint, metal, concrete, glass reflections.
fn tone(rng: &mut ChaCha8Rng) -> [f32; 3] {
    let v: f32 = if rng.random_bool(0.5) {
        rng.random_range(0.02..=0.25)
    } else {
        rng.random_range(0.72..=0.98)
    };
    std::array::from_fn(|_| (v + rng.random_range(-0.04..=0.04)).clamp(0.0, 1.0))
}

impl LinePattern {
    /// One to three groups of line structure for a `width`x`height` frame, drawn for `seed`
    /// (the same seed and size always give the same pattern).
    pub fn random(seed: u64, width: u32, height: u32) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ LINES_SALT);
        let (w, h) = (width as f32, height as f32);
        let mut lines = Vec::new();
        let groups = rng.random_range(1..=3u32);
        for _ in 0..groups {
            match rng.random_range(0..5u8) {
                // Poles and posts: long, near-vertical, a few pixels wide.
                0 => {
                    let colour = tone(&mut rng);
                    for _ in 0..rng.random_range(1..=4u32) {
                        let x = rng.random_range(0.0..w);
                        let tilt = rng.random_range(-4.0f32..=4.0).to_radians().tan();
                        let (y0, y1) = (
                            rng.random_range(0.0..0.4) * h,
                            rng.random_range(0.6..=1.0) * h,
                        );
                        lines.push(SceneLine {
                            from: [x, y0],
                            to: [x + tilt * (y1 - y0), y1],
                            width: rng.random_range(1.5..=8.0),
                            colour,
                        });
                    }
                }
                // A window or fence grid: thin verticals and horizontals over a rectangle.
                1 => {
                    let colour = tone(&mut rng);
                    let (gw, gh) = (
                        rng.random_range(0.2..0.6) * w,
                        rng.random_range(0.2..0.5) * h,
                    );
                    let (x0, y0) = (
                        rng.random_range(0.0..=w - gw),
                        rng.random_range(0.0..=h - gh),
                    );
                    let lw = rng.random_range(1.0..=3.0);
                    let nx = rng.random_range(3..=10u32);
                    let ny = rng.random_range(2..=6u32);
                    for i in 0..=nx {
                        let x = x0 + gw * i as f32 / nx as f32;
                        lines.push(SceneLine {
                            from: [x, y0],
                            to: [x, y0 + gh],
                            width: lw,
                            colour,
                        });
                    }
                    for j in 0..=ny {
                        let y = y0 + gh * j as f32 / ny as f32;
                        lines.push(SceneLine {
                            from: [x0, y],
                            to: [x0 + gw, y],
                            width: lw,
                            colour,
                        });
                    }
                }
                // Cables: across the frame, high up, nearly horizontal, thin and dark.
                2 => {
                    for _ in 0..rng.random_range(1..=3u32) {
                        let y = rng.random_range(0.0..0.5) * h;
                        let slope = rng.random_range(-0.15..=0.15) * h;
                        let v = rng.random_range(0.02..=0.2);
                        lines.push(SceneLine {
                            from: [0.0, y],
                            to: [w, y + slope],
                            width: rng.random_range(1.0..=2.0),
                            colour: [v; 3],
                        });
                    }
                }
                // Lane-line dashes: bright white or yellow, converging on a vanishing point.
                3 => {
                    let vp = [
                        rng.random_range(0.35..0.65) * w,
                        rng.random_range(0.3..0.5) * h,
                    ];
                    let colour = if rng.random_bool(0.7) {
                        [0.92, 0.92, 0.9]
                    } else {
                        [0.9, 0.78, 0.2]
                    };
                    for _ in 0..rng.random_range(1..=2u32) {
                        let bottom_x = rng.random_range(-0.3..1.3) * w;
                        let dashes = rng.random_range(2..=5u32);
                        for k in 0..dashes {
                            let (a, b) =
                                (k as f32 / dashes as f32, (k as f32 + 0.55) / dashes as f32);
                            let at =
                                |s: f32| [vp[0] + (bottom_x - vp[0]) * s, vp[1] + (h - vp[1]) * s];
                            lines.push(SceneLine {
                                from: at(0.15 + 0.85 * a),
                                to: at(0.15 + 0.85 * b),
                                width: rng.random_range(2.0..=6.0),
                                colour,
                            });
                        }
                    }
                }
                // Thin bright near-vertical lines: edges of glass, thin poles against the sky.
                _ => {
                    for _ in 0..rng.random_range(2..=8u32) {
                        let x = rng.random_range(0.0..w);
                        let y = rng.random_range(0.0..h);
                        let len = rng.random_range(0.15..0.5) * h;
                        let a = rng.random_range(-15.0f32..=15.0).to_radians();
                        let v = rng.random_range(0.75..=1.0);
                        lines.push(SceneLine {
                            from: [x, y],
                            to: [x + a.sin() * len, y + a.cos() * len],
                            width: rng.random_range(1.0..=2.0),
                            colour: [v; 3],
                        });
                    }
                }
            }
        }
        Self { lines }
    }

    /// Draws the lines into an HWC float frame of `width`x`height` (RGB in [0, 1]).
    pub fn paint_f32(&self, rgb: &mut [f32], width: u32, height: u32) -> Result<(), SynthError> {
        let (w, h) = (width as usize, height as usize);
        if rgb.len() != w * h * 3 {
            return Err(SynthError::BufferLength {
                what: "rgb",
                expected: w * h * 3,
                got: rgb.len(),
            });
        }
        for l in &self.lines {
            let half = if l.width.is_finite() {
                l.width.clamp(0.0, 256.0) / 2.0
            } else {
                0.0
            };
            let len = ((l.to[0] - l.from[0]).powi(2) + (l.to[1] - l.from[1]).powi(2)).sqrt();
            if !len.is_finite() || half <= 0.0 {
                continue;
            }
            let colour = l
                .colour
                .map(|c| if c.is_nan() { 0.0 } else { c.clamp(0.0, 1.0) });
            let from = (l.from[0], l.from[1]);
            let to = (l.to[0], l.to[1]);
            for_each_near_segment(from, to, half + 1.0, 1.0, w, h, |i, along, across| {
                // Pixel coverage of a sharp band, anti-aliased over one pixel at the sides and
                // the ends.
                let side = (half + 0.5 - across.abs()).clamp(0.0, 1.0);
                let end = (along.min(len - along) + 0.5).clamp(0.0, 1.0);
                let a = side * end;
                if a > 0.0 {
                    for (p, c) in rgb[i * 3..i * 3 + 3].iter_mut().zip(colour) {
                        *p = *p * (1.0 - a) + c * a;
                    }
                }
            });
        }
        Ok(())
    }

    /// Draws the lines into an 8-bit image.
    pub fn paint(&self, img: &mut RgbImage) {
        let (w, h) = img.dimensions();
        let mut f: Vec<f32> = img.as_raw().iter().map(|&v| f32::from(v) / 255.0).collect();
        if self.paint_f32(&mut f, w, h).is_ok() {
            for (o, v) in img.iter_mut().zip(&f) {
                *o = (v.clamp(0.0, 1.0) * 255.0 + 0.5) as u8;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vertical_line_is_sharp_and_where_it_was_put() {
        let p = LinePattern {
            lines: vec![SceneLine {
                from: [10.0, 2.0],
                to: [10.0, 28.0],
                width: 1.0,
                colour: [1.0, 0.0, 0.0],
            }],
        };
        let mut img = RgbImage::from_pixel(20, 30, image::Rgb([0, 0, 255]));
        p.paint(&mut img);
        assert_eq!(img.get_pixel(10, 15).0, [255, 0, 0]);
        assert_eq!(img.get_pixel(9, 15).0, [0, 0, 255], "one pixel wide");
        assert_eq!(img.get_pixel(11, 15).0, [0, 0, 255]);
        assert_eq!(img.get_pixel(10, 0).0, [0, 0, 255], "ends where it ends");
    }

    #[test]
    fn random_patterns_are_seeded_and_inside_sensible_bounds() {
        for seed in 0..30 {
            let p = LinePattern::random(seed, 256, 256);
            assert_eq!(p, LinePattern::random(seed, 256, 256));
            assert!(!p.lines.is_empty());
            assert!(p.lines.iter().all(|l| (1.0..=8.0).contains(&l.width)));
        }
        assert_ne!(
            LinePattern::random(1, 64, 64),
            LinePattern::random(2, 64, 64)
        );
    }
}
