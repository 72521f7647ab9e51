//! Preset ranges: concrete [`RainParams`] drawn per seed.
//!
//! The base values were tuned by eye on 1280x720 dashcam stills (Udacity `test1.jpg`) against
//! Rain12 / Rain100-style references, and so that PSNR against clean falls from about 30 dB
//! (light, like Rain12) through the mid 20s (medium) to below 20 dB (heavy, like Rain100H).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{Preset, RainParams, StreakLayer, Veil};

/// Keeps preset draws independent of the renderer's per-drop hashing of the same seed.
const PRESET_SALT: u64 = 0x7261_696e_5052_4553; // "rainPRES"

/// One layer's base values before jitter.
struct Base {
    density: f32,
    length: f32,
    width: f32,
    brightness: f32,
    blur: f32,
    speed: f32,
}

/// A preset's fixed ranges: base layers (far to near), maximum wind angle, veil.
struct Recipe {
    layers: &'static [Base],
    max_wind_deg: f32,
    /// (beta, atmosphere) base values, or None for no veil.
    veil: Option<(f32, f32)>,
}

const LIGHT: Recipe = Recipe {
    layers: &[
        Base {
            density: 2.4,
            length: 16.0,
            width: 0.9,
            brightness: 0.40,
            blur: 0.0,
            speed: 30.0,
        },
        Base {
            density: 0.45,
            length: 34.0,
            width: 1.3,
            brightness: 0.45,
            blur: 0.3,
            speed: 50.0,
        },
    ],
    max_wind_deg: 12.0,
    veil: None,
};

const MEDIUM: Recipe = Recipe {
    layers: &[
        Base {
            density: 3.0,
            length: 18.0,
            width: 0.9,
            brightness: 0.35,
            blur: 0.0,
            speed: 32.0,
        },
        Base {
            density: 0.9,
            length: 34.0,
            width: 1.3,
            brightness: 0.45,
            blur: 0.3,
            speed: 48.0,
        },
        Base {
            density: 0.2,
            length: 60.0,
            width: 2.2,
            brightness: 0.45,
            blur: 0.8,
            speed: 75.0,
        },
    ],
    max_wind_deg: 18.0,
    veil: Some((1.0, 0.12)),
};

const HEAVY: Recipe = Recipe {
    layers: &[
        Base {
            density: 6.0,
            length: 20.0,
            width: 1.0,
            brightness: 0.40,
            blur: 0.0,
            speed: 35.0,
        },
        Base {
            density: 2.2,
            length: 40.0,
            width: 1.5,
            brightness: 0.55,
            blur: 0.3,
            speed: 55.0,
        },
        Base {
            density: 0.6,
            length: 70.0,
            width: 2.5,
            brightness: 0.55,
            blur: 1.0,
            speed: 85.0,
        },
        Base {
            density: 0.12,
            length: 110.0,
            width: 4.0,
            brightness: 0.45,
            blur: 2.0,
            speed: 120.0,
        },
    ],
    max_wind_deg: 25.0,
    veil: Some((1.5, 0.30)),
};

impl Preset {
    /// Concrete rain settings for `seed`. Light, medium and heavy keep their preset's layer
    /// structure and jitter each value within about ±20%; all layers share one wind angle (drawn
    /// per seed) with a few degrees of per-layer variation, because real rain at different depths
    /// is blown the same way. Mixed first picks a light-, medium- or heavy-like recipe for the
    /// seed, then jitters more widely, so a training set drawn from it covers the whole range.
    pub fn params(self, seed: u64) -> RainParams {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ PRESET_SALT);
        match self {
            Preset::Light => draw(&LIGHT, &mut rng, 0.2),
            Preset::Medium => draw(&MEDIUM, &mut rng, 0.2),
            Preset::Heavy => draw(&HEAVY, &mut rng, 0.2),
            Preset::Mixed => {
                let recipe = match rng.random_range(0..3u8) {
                    0 => &LIGHT,
                    1 => &MEDIUM,
                    _ => &HEAVY,
                };
                draw(recipe, &mut rng, 0.4)
            }
        }
    }
}

/// Jitters a recipe: every value is scaled by a factor in `[1 − spread, 1 + spread]`.
fn draw(recipe: &Recipe, rng: &mut ChaCha8Rng, spread: f32) -> RainParams {
    // Draw order is fixed (wind first, then layers, then veil) so a seed's params never depend
    // on anything but the seed.
    let wind = rng.random_range(-recipe.max_wind_deg..=recipe.max_wind_deg);
    let layers = recipe
        .layers
        .iter()
        .map(|b| {
            let tilt = rng.random_range(-3.0..=3.0);
            let mut j = |v: f32| v * rng.random_range(1.0 - spread..=1.0 + spread);
            StreakLayer {
                density: j(b.density),
                length: j(b.length),
                angle_deg: wind + tilt,
                width: j(b.width),
                brightness: j(b.brightness).min(1.0),
                blur: j(b.blur),
                speed: j(b.speed),
            }
        })
        .collect();
    let veil = recipe.veil.map(|(beta, atmosphere)| Veil {
        beta: beta * rng.random_range(1.0 - spread..=1.0 + spread),
        atmosphere: (atmosphere * rng.random_range(1.0 - spread..=1.0 + spread)).min(1.0),
    });
    RainParams { layers, veil }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_are_seeded() {
        for p in Preset::ALL {
            assert_eq!(p.params(3), p.params(3));
            assert_ne!(p.params(3), p.params(4));
        }
    }

    #[test]
    fn layers_share_a_wind_angle() {
        for seed in 0..20 {
            let params = Preset::Heavy.params(seed);
            let angles: Vec<f32> = params.layers.iter().map(|l| l.angle_deg).collect();
            let spread = angles.iter().cloned().fold(f32::MIN, f32::max)
                - angles.iter().cloned().fold(f32::MAX, f32::min);
            assert!(spread <= 6.0, "seed {seed}: {angles:?}");
        }
    }

    #[test]
    fn mixed_covers_several_recipes() {
        let counts: std::collections::HashSet<usize> = (0..30)
            .map(|s| Preset::Mixed.params(s).layers.len())
            .collect();
        assert_eq!(counts.len(), 3, "{counts:?}");
    }
}
