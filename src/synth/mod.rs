//! Rain synthesis: streak layers and veil over clean frames (DESIGN.md §7).
//!
//! A [`RainParams`] describes the rain (several [`StreakLayer`]s plus an optional [`Veil`]);
//! [`Preset::params`] draws one from the light / medium / heavy / mixed ranges for a seed. A
//! [`RainRenderer`] turns the parameters and a seed into a deterministic rain field for any frame
//! number: the same `(params, seed, frame)` always gives the same field, and consecutive frames show
//! the same drops moved along their streaks, so synthetic video rain falls instead of flickering.
//!
//! Compositing follows DESIGN.md §7 (RainCityscapes): `O = B(1 − S − A) + S + A`, where `B` is the
//! clean frame, `S` the streak intensity (already screen-accumulated over drops and layers) and `A`
//! the veil `atmosphere · (1 − exp(−β·d))` with a vertical depth-like gradient `d` (far at the top).
//! Since `B(1 − S − A) + S + A = [1 − (1 − B)(1 − S)] + A(1 − B)`, this is the screen blend of the
//! streaks plus a white haze of opacity `A`.

mod params;
mod render;

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
    #[error("unknown rain preset {0:?}; valid presets: light, medium, heavy, mixed")]
    UnknownPreset(String),
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
}

impl Preset {
    /// Every preset, lightest first.
    pub const ALL: [Preset; 4] = [Preset::Light, Preset::Medium, Preset::Heavy, Preset::Mixed];

    /// The lower-case name used on the command line, in files and by [`FromStr`].
    pub fn name(self) -> &'static str {
        match self {
            Preset::Light => "light",
            Preset::Medium => "medium",
            Preset::Heavy => "heavy",
            Preset::Mixed => "mixed",
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

/// Haze that grows with (pseudo-)depth: `A = atmosphere · (1 − exp(−beta · d))`, with `d` from
/// 0 at the bottom row to 1 at the top row.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Veil {
    /// Extinction coefficient per frame height of depth (0 = no haze).
    pub beta: f32,
    /// Opacity of the white airlight at infinite depth, in [0, 1].
    pub atmosphere: f32,
}

/// A complete description of synthetic rain: streak layers (far to near, by convention) and an
/// optional veil.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RainParams {
    /// Streak layers; each is rendered independently and screen-accumulated.
    pub layers: Vec<StreakLayer>,
    /// Depth-like haze, if any.
    pub veil: Option<Veil>,
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
