//! Rain synthesis: streak layers and veil over clean frames (docs/ARCHITECTURE.md, Rain synthesis).
//!
//! A [`RainParams`] describes the rain (several [`StreakLayer`]s plus an optional [`Veil`], and
//! the driving-camera effects: an atmospheric [`Scattering`] veil, radial streaks of a moving
//! camera ([`CameraMotion`]), streak brightness taken from the scene ([`Refraction`]) and
//! [`WindshieldDrops`]); [`Preset::params`] draws one from the light / medium / heavy / mixed /
//! driving ranges for a seed, [`Preset::params_with`] with chosen [`Effects`] probabilities.
//! [`LinePattern`] draws the thin straight scene structure of the hard negatives. A
//! [`RainRenderer`] turns the parameters and a seed into a deterministic rain field for any frame
//! number: the same `(params, seed, frame)` always gives the same field, and consecutive frames show
//! the same drops moved along their streaks, so synthetic video rain falls instead of flickering.
//!
//! Compositing follows docs/ARCHITECTURE.md, Rain synthesis (RainCityscapes):
//! `O = B(1 − S − A) + S + A`, where `B` is the clean frame, `S` the streak intensity (already
//! screen-accumulated over drops and layers) and `A` the veil `atmosphere · (1 − exp(−β·d))` with
//! a vertical depth-like gradient `d` (far at the top). Since `B(1 − S − A) + S + A = [1 − (1 − B)(1 − S)] + A(1 − B)`,
//! this is the screen blend of the streaks plus a white haze of opacity `A`.
//!
//! With any driving effect on, frames are composited in the order light reaches the camera: the
//! scene `J` through the atmospheric veil (`I = J·t + A·(1 − t)`), the streaks over that (screen
//! blend, or with [`Refraction`] a blend towards the environment's radiance), the gradient veil if
//! any, and last the windshield drops, which refract what lies behind the glass. A parameter set
//! without those effects renders exactly as before.

mod drops;
mod lines;
mod params;
mod render;
mod scatter;

pub use drops::WindshieldDrop;
pub use lines::{LinePattern, SceneLine};
pub use render::{RainLayer, RainRenderer};

use std::fmt;
use std::str::FromStr;

use crate::imageio::RgbImage;

/// Errors from rain synthesis.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SynthError {
    /// The clean frame does not have the size the renderer was built for.
    #[error(
        "clean frame is {got_width}x{got_height} but the rain renderer was built for \
         {width}x{height}; build a RainRenderer of the frame's size"
    )]
    SizeMismatch {
        width: u32,
        height: u32,
        got_width: u32,
        got_height: u32,
    },
    /// A float buffer has the wrong number of elements.
    #[error("{what} has {got} floats, expected {expected} (height x width x 3, HWC)")]
    BufferLength {
        what: &'static str,
        expected: usize,
        got: usize,
    },
    /// A preset name that is not one of [`Preset::ALL`].
    #[error("unknown rain preset {0:?}; valid presets: light, medium, heavy, mixed, driving")]
    UnknownPreset(String),
    /// A synthesis parameter outside its range (or not a number).
    #[error("synthesis parameter `{name}` = {value} is out of range; allowed: {allowed}")]
    OutOfRange {
        /// The parameter, as named in `synth.json` (`drops.coverage`) or the option
        /// (`effects.drops`).
        name: String,
        value: String,
        allowed: String,
    },
}

impl SynthError {
    fn out_of_range(name: impl Into<String>, value: impl fmt::Display, allowed: &str) -> Self {
        SynthError::OutOfRange {
            name: name.into(),
            value: value.to_string(),
            allowed: allowed.to_owned(),
        }
    }
}

/// Checks `lo <= v <= hi` (NaN fails), naming the parameter when it does not hold.
fn check_range(name: &str, v: f32, lo: f32, hi: f32) -> Result<(), SynthError> {
    if v >= lo && v <= hi {
        Ok(())
    } else {
        Err(SynthError::out_of_range(name, v, &format!("{lo}..={hi}")))
    }
}

/// A named family of rain settings; [`Preset::params`] draws concrete settings for a seed.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// Sparse, faint, thin drizzle; no haze. About 30 dB PSNR against clean, like Rain12.
    Light,
    /// Three layers and a faint veil.
    Medium,
    /// Dense bright streaks in four layers with wide blurred near drops and a clear veil.
    Heavy,
    /// Per seed, one of light-, medium- or heavy-like settings with wider jitter: for training.
    Mixed,
    /// What a driving camera sees: mixed streaks plus, per seed, the atmospheric veil, radial
    /// streaks of a moving car, near-lens defocused streaks, scene-dependent streak brightness
    /// and windshield drops (or a dry windshield), with [`Effects::DRIVING`] probabilities.
    Driving,
}

impl Preset {
    /// Every preset, lightest first (driving last).
    pub const ALL: [Preset; 5] = [
        Preset::Light,
        Preset::Medium,
        Preset::Heavy,
        Preset::Mixed,
        Preset::Driving,
    ];

    /// The lower-case name used on the command line, in files and by [`FromStr`].
    pub fn name(self) -> &'static str {
        match self {
            Preset::Light => "light",
            Preset::Medium => "medium",
            Preset::Heavy => "heavy",
            Preset::Mixed => "mixed",
            Preset::Driving => "driving",
        }
    }

    /// The effect probabilities [`Preset::params`] uses: none for the streak presets,
    /// [`Effects::DRIVING`] for driving.
    pub fn default_effects(self) -> Effects {
        match self {
            Preset::Driving => Effects::DRIVING,
            _ => Effects::NONE,
        }
    }
}

impl fmt::Display for Preset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Preset {
    type Err = SynthError;

    /// Parses a preset name, ignoring case and surrounding white space.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim();
        Preset::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(wanted))
            .ok_or_else(|| SynthError::UnknownPreset(s.to_owned()))
    }
}

/// One depth layer of rain streaks. Near layers are longer, wider, sparser, faster and more
/// blurred; far layers are short, fine and dense.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StreakLayer {
    /// Drops per 1000 pixels of frame area (0..=100). Independent of frame size, so a 256x256
    /// crop and a 1280x720 frame rendered with the same layer look alike locally.
    pub density: f32,
    /// Mean streak length in pixels (each drop varies around it).
    pub length: f32,
    /// Streak angle from vertical in degrees, positive when the drop moves right as it falls
    /// (streaks run from top-left to bottom-right). Clamped to ±60°.
    pub angle_deg: f32,
    /// Mean streak width in pixels: the full width at half maximum of its Gaussian cross-section.
    pub width: f32,
    /// Mean peak streak intensity in [0, 1] of an in-focus streak (screen-blended onto the frame).
    pub brightness: f32,
    /// Defocus in pixels: a Gaussian of this sigma widens the cross-section; the peak drops so
    /// that the streak's total light stays the same (out-of-focus near drops look wide and faint).
    pub blur: f32,
    /// Speed in pixels per frame along the streak direction (video only; 0 freezes the rain).
    pub speed: f32,
}

/// Veil from the atmospheric scattering model: `I = J·t + A·(1 − t)`, `t = exp(−β·d)`.
///
/// The depth proxy `d` in [0, 1] (1 = horizon and sky) is a dashcam layout prior combined with
/// a cue from the frame itself:
/// - layout: a street seen from a car is a corridor (road, façades, verges) converging to the
///   vanishing point, whose depth grows as 1/r with the image distance r from that point; we use
///   `d_layout = r₀ / (r + r₀)` with r in half-diagonals and r₀ = 0.15 (about 0.13 at the corners);
/// - frame: the dark channel (He et al.; the minimum over RGB and over a neighbourhood about a
///   sixteenth of the frame height wide, smoothed) is high on sky, haze and bright untextured
///   far regions and low on textured near ones; it lifts d towards 1 as
///   `d = d_layout + w·g(y)·dark·(1 − d_layout)`, where `w` is `scene_weight` and `g` falls from
///   1 at the horizon row to 0 at the bottom row, so bright near objects on the road stay near.
///
/// The airlight `A` has `airlight`'s colour; `sky_match` pulls its brightness towards the
/// frame's own sky (the mean of the cells of highest dark channel), so it is never a white
/// haze over a dark evening frame.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Scattering {
    /// Extinction β per unit of the depth proxy (0..=8; 0 leaves the frame unchanged; at 3 the
    /// horizon keeps 5% of its own light).
    pub beta: f32,
    /// Airlight colour, RGB in [0, 1] (grey or blue-ish).
    pub airlight: [f32; 3],
    /// How far the airlight's brightness moves to the frame's sky brightness (0..=1).
    #[serde(default)]
    pub sky_match: f32,
    /// Vanishing point (x, y) as fractions of the frame width and height (each 0..=1).
    pub vanishing_point: [f32; 2],
    /// Weight of the frame's dark-channel cue in the depth proxy (0..=1; 0 = layout only).
    #[serde(default)]
    pub scene_weight: f32,
}

/// A moving camera: streaks point away from the vanishing point and grow longer towards the
/// image edges (the expanding flow of the drops the car drives into), on top of their fall.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CameraMotion {
    /// Vanishing point (x, y) as fractions of the frame width and height (each 0..=1).
    pub vanishing_point: [f32; 2],
    /// Radial streak length at one half-diagonal from the vanishing point, in units of each
    /// layer's fall length (0..=10): a drop at p streaks along `L·(fall + flow·(p − vp)/R)`.
    pub flow: f32,
}

/// Streak brightness from the scene: a drop refracts the light of a wide field of the
/// environment (Garg and Nayar), so it shows about the environment's mean radiance `E`, bright
/// over a dark road, nearly invisible over a bright sky. The streak is composited as
/// `(1 − k)·screen(B, S) + k·(B·(1 − S) + E·S)`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Refraction {
    /// `k`: 0 = screen blend (streaks only add light), 1 = environment radiance (0..=1).
    pub strength: f32,
    /// `E` = gain × the mean colour of the frame's top third (where the sky is), clamped to 1
    /// (0..=4).
    pub gain: f32,
}

/// Drops on the windshield: each a small lens showing a blurred, flipped view of the scene
/// around it, with a defocused rim, static for `lifetime` frames.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct WindshieldDrops {
    /// Share of the frame area the drops cover (0..=0.6; overlaps count twice).
    pub coverage: f32,
    /// Smallest and largest drop radius in pixels (0.5..=256, smallest first); radii are drawn
    /// log-uniformly between them, so small drops are many and large ones few.
    pub radius: [f32; 2],
    /// How much wider than the drop the field it refracts is (1..=8).
    pub field: f32,
    /// Defocus of the refracted view: Gaussian sigma in pixels (0..=32).
    pub blur: f32,
    /// Width of the defocused rim in pixels (0..=32).
    pub edge: f32,
    /// Frames a drop stays where it is before it is replaced by another elsewhere (staggered
    /// per drop, so the set changes slowly); 0 = the whole clip.
    #[serde(default)]
    pub lifetime: u32,
}

/// Probabilities (each in [0, 1]) with which [`Preset::params_with`] switches each driving
/// effect on for a seed. Each effect's values are drawn whether or not it is on, so switching
/// one effect never changes another's.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Effects {
    /// The atmospheric veil ([`Scattering`]); it replaces a preset's gradient veil.
    pub scattering: f64,
    /// Radial streaks of a moving camera ([`CameraMotion`]).
    pub radial: f64,
    /// One more streak layer of wide, faint, long, few drops defocused near the lens.
    pub lens_streaks: f64,
    /// Streak brightness from the background ([`Refraction`]).
    pub refraction: f64,
    /// Windshield drops ([`WindshieldDrops`]); otherwise a dry windshield.
    pub drops: f64,
}

impl Effects {
    /// No driving effect: the streak presets as they always were.
    pub const NONE: Effects = Effects {
        scattering: 0.0,
        radial: 0.0,
        lens_streaks: 0.0,
        refraction: 0.0,
        drops: 0.0,
    };

    /// The driving preset's mix: most samples hazy and with refracting streaks, most from a
    /// moving car, half behind a wet windshield (the others a dry windshield in rain).
    pub const DRIVING: Effects = Effects {
        scattering: 0.7,
        radial: 0.6,
        lens_streaks: 0.4,
        refraction: 0.8,
        drops: 0.5,
    };

    /// Every probability in [0, 1]; the error names the effect (`effects.drops`).
    pub fn validate(&self) -> Result<(), SynthError> {
        for (name, p) in [
            ("effects.scattering", self.scattering),
            ("effects.radial", self.radial),
            ("effects.lens_streaks", self.lens_streaks),
            ("effects.refraction", self.refraction),
            ("effects.drops", self.drops),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return Err(SynthError::out_of_range(name, p, "0..=1"));
            }
        }
        Ok(())
    }

    /// True when no effect can be drawn.
    pub fn is_none(&self) -> bool {
        [
            self.scattering,
            self.radial,
            self.lens_streaks,
            self.refraction,
            self.drops,
        ]
        .iter()
        .all(|&p| p <= 0.0)
    }
}

impl Default for Effects {
    fn default() -> Self {
        Effects::NONE
    }
}

/// Haze that grows with (pseudo-)depth: `A = atmosphere · (1 − exp(−beta · d))`, with `d` from
/// 0 at the bottom row to 1 at the top row.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Veil {
    /// Extinction coefficient per frame height of depth (0 = no haze).
    pub beta: f32,
    /// Opacity of the white airlight at infinite depth, in [0, 1].
    pub atmosphere: f32,
}

/// A complete description of synthetic rain: streak layers (far to near, by convention), an
/// optional veil, and the driving-camera effects (absent in files written before them).
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct RainParams {
    /// Streak layers; each is rendered independently and screen-accumulated.
    pub layers: Vec<StreakLayer>,
    /// Depth-like haze, if any (the vertical-gradient model).
    pub veil: Option<Veil>,
    /// The atmospheric veil, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scattering: Option<Scattering>,
    /// A moving camera's radial streaks, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub motion: Option<CameraMotion>,
    /// Streak brightness from the background, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refraction: Option<Refraction>,
    /// Windshield drops; `None` is a dry windshield.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drops: Option<WindshieldDrops>,
}

impl RainParams {
    /// True when one of the driving effects is set (the frame-dependent compositing path).
    pub fn has_effects(&self) -> bool {
        self.scattering.is_some()
            || self.motion.is_some()
            || self.refraction.is_some()
            || self.drops.is_some()
    }

    /// Checks every value against its documented range; the error names the parameter as
    /// `synth.json` does (`layers[1].width`, `drops.radius[0]`). [`RainRenderer::new`] clamps
    /// instead, so a renderer is always safe to build; use this where a person chose the values.
    pub fn validate(&self) -> Result<(), SynthError> {
        for (i, l) in self.layers.iter().enumerate() {
            let n = |f: &str| format!("layers[{i}].{f}");
            check_range(&n("density"), l.density, 0.0, render::MAX_DENSITY)?;
            check_range(&n("length"), l.length, 0.0, render::MAX_LENGTH)?;
            check_range(
                &n("angle_deg"),
                l.angle_deg,
                -render::MAX_ANGLE_DEG,
                render::MAX_ANGLE_DEG,
            )?;
            check_range(&n("width"), l.width, 0.0, render::MAX_WIDTH)?;
            check_range(&n("brightness"), l.brightness, 0.0, 1.0)?;
            check_range(&n("blur"), l.blur, 0.0, render::MAX_BLUR)?;
            check_range(&n("speed"), l.speed, -render::MAX_SPEED, render::MAX_SPEED)?;
        }
        if let Some(v) = &self.veil {
            check_range("veil.beta", v.beta, 0.0, 100.0)?;
            check_range("veil.atmosphere", v.atmosphere, 0.0, 1.0)?;
        }
        if let Some(s) = &self.scattering {
            check_range("scattering.beta", s.beta, 0.0, scatter::MAX_BETA)?;
            for (c, &a) in s.airlight.iter().enumerate() {
                check_range(&format!("scattering.airlight[{c}]"), a, 0.0, 1.0)?;
            }
            check_range("scattering.sky_match", s.sky_match, 0.0, 1.0)?;
            check_range("scattering.scene_weight", s.scene_weight, 0.0, 1.0)?;
            for (c, &v) in s.vanishing_point.iter().enumerate() {
                check_range(&format!("scattering.vanishing_point[{c}]"), v, 0.0, 1.0)?;
            }
        }
        if let Some(m) = &self.motion {
            for (c, &v) in m.vanishing_point.iter().enumerate() {
                check_range(&format!("motion.vanishing_point[{c}]"), v, 0.0, 1.0)?;
            }
            check_range("motion.flow", m.flow, 0.0, render::MAX_FLOW)?;
        }
        if let Some(r) = &self.refraction {
            check_range("refraction.strength", r.strength, 0.0, 1.0)?;
            check_range("refraction.gain", r.gain, 0.0, 4.0)?;
        }
        if let Some(d) = &self.drops {
            check_range("drops.coverage", d.coverage, 0.0, drops::MAX_COVERAGE)?;
            check_range("drops.radius[0]", d.radius[0], 0.5, drops::MAX_RADIUS)?;
            check_range(
                "drops.radius[1]",
                d.radius[1],
                d.radius[0],
                drops::MAX_RADIUS,
            )?;
            check_range("drops.field", d.field, 1.0, 8.0)?;
            check_range("drops.blur", d.blur, 0.0, 32.0)?;
            check_range("drops.edge", d.edge, 0.0, 32.0)?;
        }
        Ok(())
    }
}

/// Adds rain of a preset to one still: frame 0 of a renderer sized to the image, with the
/// parameters drawn from `preset` for `seed`. The same inputs always give the same output.
pub fn synthesize(clean: &RgbImage, preset: Preset, seed: u64) -> RgbImage {
    let renderer = RainRenderer::new(preset.params(seed), seed, clean.width(), clean.height());
    renderer.render_same_size(clean, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preset_names_round_trip() {
        for p in Preset::ALL {
            assert_eq!(p.to_string().parse::<Preset>(), Ok(p));
            assert_eq!(
                serde_json::to_string(&p).unwrap(),
                format!("\"{}\"", p.name())
            );
        }
        assert_eq!(" Heavy ".parse::<Preset>(), Ok(Preset::Heavy));
    }

    #[test]
    fn unknown_preset_lists_valid_names() {
        let err = "drizzle".parse::<Preset>().unwrap_err().to_string();
        assert!(err.contains("drizzle"), "{err}");
        for p in Preset::ALL {
            assert!(err.contains(p.name()), "{err}");
        }
    }

    #[test]
    fn synthesize_is_deterministic_and_changes_the_image() {
        let clean = RgbImage::from_fn(96, 64, |x, y| {
            image::Rgb([(x * 2) as u8, (y * 3) as u8, 60])
        });
        let a = synthesize(&clean, Preset::Heavy, 7);
        let b = synthesize(&clean, Preset::Heavy, 7);
        assert_eq!(a, b);
        assert_eq!(a.dimensions(), clean.dimensions());
        assert_ne!(a, clean);
        assert_ne!(a, synthesize(&clean, Preset::Heavy, 8));
    }
}
