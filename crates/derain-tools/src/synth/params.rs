//! Preset ranges: concrete [`RainParams`] drawn per seed.
//!
//! The base values were tuned by eye on 1280x720 dashcam stills (Udacity `test1.jpg`) against
//! Rain12 / Rain100-style references, and so that PSNR against clean falls from about 30 dB
//! (light, like Rain12) through the mid 20s (medium) to below 20 dB (heavy, like Rain100H).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{
    CameraMotion, Effects, Preset, RainParams, Refraction, Scattering, StreakLayer, Veil,
    WindshieldDrops,
};

/// Keeps preset draws independent of the renderer's per-drop hashing of the same seed.
const PRESET_SALT: u64 = 0x7261_696e_5052_4553; // "rainPRES"
/// The driving effects draw from their own stream, so the streak layers of a seed are the same
/// with and without them.
const EFFECTS_SALT: u64 = 0x6472_6976_6566_6678; // "drivefx"

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
    ///
    /// Driving draws its streaks as mixed does (without the gradient veil) and adds the effects
    /// of [`Effects::DRIVING`]; see [`Preset::params_with`].
    pub fn params(self, seed: u64) -> RainParams {
        self.params_with(seed, &self.default_effects())
    }

    /// As [`Preset::params`], with each driving effect switched on with the probability in
    /// `effects` (out-of-range probabilities are clamped to [0, 1]; validate user input with
    /// [`Effects::validate`]). With [`Effects::NONE`] the streak presets give exactly what
    /// [`Preset::params`] always gave. The atmospheric veil, when drawn, replaces the preset's
    /// gradient veil.
    pub fn params_with(self, seed: u64, effects: &Effects) -> RainParams {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ PRESET_SALT);
        let mut params = match self {
            Preset::Light => draw(&LIGHT, &mut rng, 0.2),
            Preset::Medium => draw(&MEDIUM, &mut rng, 0.2),
            Preset::Heavy => draw(&HEAVY, &mut rng, 0.2),
            Preset::Mixed | Preset::Driving => {
                let recipe = match rng.random_range(0..3u8) {
                    0 => &LIGHT,
                    1 => &MEDIUM,
                    _ => &HEAVY,
                };
                let mut p = draw(recipe, &mut rng, 0.4);
                if self == Preset::Driving {
                    p.veil = None;
                }
                p
            }
        };
        add_effects(&mut params, seed, effects);
        params
    }
}

/// A probability made safe for `random_bool` (NaN counts as 0).
fn prob(p: f64) -> f64 {
    if p.is_nan() { 0.0 } else { p.clamp(0.0, 1.0) }
}

/// Draws every driving effect's values (always, in a fixed order) and keeps those whose coin
/// comes up.
fn add_effects(params: &mut RainParams, seed: u64, effects: &Effects) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ EFFECTS_SALT);
    // One vanishing point for the veil and the radial flow: the road ahead, a little off centre.
    let vp = [rng.random_range(0.4..=0.6), rng.random_range(0.35..=0.55)];

    let level: f32 = rng.random_range(0.55..=0.95);
    let blue: f32 = rng.random_range(0.0..=0.10);
    let scattering = Scattering {
        beta: rng.random_range(0.4..=3.0),
        airlight: [
            (level - blue).clamp(0.0, 1.0),
            (level - blue / 3.0).clamp(0.0, 1.0),
            (level + blue / 2.0).clamp(0.0, 1.0),
        ],
        sky_match: rng.random_range(0.5..=1.0),
        vanishing_point: vp,
        scene_weight: rng.random_range(0.3..=0.8),
    };
    let motion = CameraMotion {
        vanishing_point: vp,
        flow: rng.random_range(0.5..=3.0),
    };
    let wind = params.layers.first().map_or(0.0, |l| l.angle_deg);
    // Near the lens: far out of focus (wide and faint for their light), long, and few.
    let lens = StreakLayer {
        density: rng.random_range(0.005..=0.02),
        length: rng.random_range(170.0..=320.0),
        angle_deg: wind + rng.random_range(-3.0..=3.0),
        width: rng.random_range(9.0..=16.0),
        brightness: rng.random_range(0.15..=0.35),
        blur: rng.random_range(6.0..=12.0),
        speed: rng.random_range(150.0..=250.0),
    };
    let refraction = Refraction {
        strength: rng.random_range(0.6..=1.0),
        gain: rng.random_range(0.9..=1.3),
    };
    let small: f32 = rng.random_range(1.5..=4.0);
    let drops = WindshieldDrops {
        coverage: rng.random_range(0.03..=0.25),
        radius: [small, rng.random_range(8.0..=24.0)],
        field: rng.random_range(2.0..=4.0),
        blur: rng.random_range(1.5..=4.0),
        edge: rng.random_range(0.8..=2.5),
        lifetime: rng.random_range(50..=200),
    };
    let on = [
        effects.scattering,
        effects.radial,
        effects.lens_streaks,
        effects.refraction,
        effects.drops,
    ]
    .map(|p| rng.random_bool(prob(p)));
    if on[0] {
        params.veil = None;
        params.scattering = Some(scattering);
    }
    if on[1] {
        params.motion = Some(motion);
    }
    if on[2] {
        params.layers.push(lens);
    }
    if on[3] {
        params.refraction = Some(refraction);
    }
    if on[4] {
        params.drops = Some(drops);
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
    RainParams {
        layers,
        veil,
        ..RainParams::default()
    }
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
    fn effects_do_not_change_the_streaks_and_follow_their_probabilities() {
        for seed in 0..40 {
            let plain = Preset::Heavy.params(seed);
            assert_eq!(Preset::Heavy.params_with(seed, &Effects::NONE), plain);
            let all = Effects {
                scattering: 1.0,
                radial: 1.0,
                lens_streaks: 1.0,
                refraction: 1.0,
                drops: 1.0,
            };
            let p = Preset::Heavy.params_with(seed, &all);
            assert_eq!(p.layers[..plain.layers.len()], plain.layers[..]);
            assert_eq!(p.layers.len(), plain.layers.len() + 1, "lens layer added");
            assert!(p.veil.is_none() && p.scattering.is_some());
            assert!(p.motion.is_some() && p.refraction.is_some() && p.drops.is_some());
            p.validate().unwrap();
            // One effect off leaves the others' values alone.
            let no_drops = Preset::Heavy.params_with(seed, &Effects { drops: 0.0, ..all });
            assert!(no_drops.drops.is_none());
            assert_eq!(no_drops.scattering, p.scattering);
        }
        let with_drops = (0..200)
            .filter(|&s| Preset::Driving.params(s).drops.is_some())
            .count();
        assert!((70..130).contains(&with_drops), "{with_drops} of 200");
        assert!(Preset::Driving.params(3).veil.is_none());
    }

    #[test]
    fn mixed_covers_several_recipes() {
        let counts: std::collections::HashSet<usize> = (0..30)
            .map(|s| Preset::Mixed.params(s).layers.len())
            .collect();
        assert_eq!(counts.len(), 3, "{counts:?}");
    }
}
