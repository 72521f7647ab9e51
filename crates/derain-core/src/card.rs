//! The model card: what a generator is, how it was made, and what a consumer must know to feed it.
//!
//! It travels inside the ONNX file as one JSON string in `metadata_props` under [`CARD_KEY`]
//! (docs/ARCHITECTURE.md, The model contract), so a single file carries everything; a `.json` copy
//! beside it is for people.

use serde::{Deserialize, Serialize};

/// The `metadata_props` key holding the card's JSON.
pub const CARD_KEY: &str = "derain.model_card";

/// Name of the generator's input: float32 `[N,3,H,W]`, RGB in [0,1].
pub const INPUT_NAME: &str = "rainy";
/// Name of the generator's output: same shape and range as the input.
pub const OUTPUT_NAME: &str = "clean";

/// The numeric precision of a generator's weights and activations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// float32 throughout.
    #[default]
    Fp32,
    /// float16 weights and activations inside, float32 input and output (Cast nodes at the
    /// boundaries).
    Fp16,
}

impl Precision {
    /// `fp32` or `fp16`, as in the card.
    pub fn as_str(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Fp16 => "fp16",
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The model card. Only `multiple_of` changes how a consumer feeds the network; the rest documents
/// it. Unknown keys are kept in `extra` so a card written by a newer version survives a round trip.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCard {
    /// Short name, e.g. `derain-r9`.
    pub name: String,
    /// Architecture, e.g. `resnet9(base=16, blocks=9)`.
    #[serde(default)]
    pub architecture: String,
    /// H and W must be multiples of this (strided layers); consumers reflect-pad and crop back.
    #[serde(default = "one")]
    pub multiple_of: u32,
    /// How many consecutive frames one inference takes (the current one and the ones before).
    /// Every consumer of this version runs single-frame models only, so a card asking for more
    /// is refused when the model is loaded (`Model`), never run on one frame. Written only
    /// when it is not 1, so single-frame cards stay as they were.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub frames: u32,
    /// Number of parameters.
    #[serde(default)]
    pub parameters: u64,
    /// Multiply-accumulates per megapixel of input, in units of 10⁹.
    #[serde(default)]
    pub gmac_per_megapixel: f64,
    /// What it was trained on and how (data, stages, steps, losses and weights, seed, device).
    #[serde(default)]
    pub training: serde_json::Value,
    /// Dev-set scores (PSNR-Y, SSIM-Y, NIQE ...).
    #[serde(default)]
    pub scores: serde_json::Value,
    /// Licence of the weights.
    #[serde(default)]
    pub licence: String,
    /// How the weights and activations are stored: `fp32`, or `fp16` (`derain export --fp16`;
    /// the input and output stay float32 either way). Cards without it are `fp32`.
    #[serde(default)]
    pub precision: Precision,
    /// Anything else.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

fn one() -> u32 {
    1
}

fn is_one(v: &u32) -> bool {
    *v == 1
}

impl ModelCard {
    /// A card with only a name; every other field at its default.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            architecture: String::new(),
            multiple_of: 1,
            frames: 1,
            parameters: 0,
            gmac_per_megapixel: 0.0,
            training: serde_json::Value::Null,
            scores: serde_json::Value::Null,
            licence: String::new(),
            precision: Precision::Fp32,
            extra: serde_json::Map::new(),
        }
    }

    /// The card as the JSON string stored in the ONNX file.
    pub fn to_json(&self) -> String {
        // Serialising plain data with string keys cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses a card from its JSON string.
    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_unknown_keys() {
        let mut card = ModelCard::new("x");
        card.multiple_of = 4;
        card.extra
            .insert("future".into(), serde_json::json!([1, 2]));
        let back = ModelCard::from_json(&card.to_json()).expect("parses");
        assert_eq!(back, card);
    }

    #[test]
    fn precision_is_written_and_read() {
        let mut card = ModelCard::new("x");
        card.precision = Precision::Fp16;
        let json = card.to_json();
        assert!(json.contains(r#""precision":"fp16""#), "{json}");
        assert_eq!(
            ModelCard::from_json(&json).unwrap().precision,
            Precision::Fp16
        );
        assert!(ModelCard::from_json(r#"{"name":"n","precision":"int3"}"#).is_err());
    }

    #[test]
    fn missing_fields_take_defaults() {
        let card = ModelCard::from_json(r#"{"name":"n"}"#).expect("parses");
        assert_eq!(card.multiple_of, 1);
        assert_eq!(card.precision, Precision::Fp32);
        assert!(
            ModelCard::from_json(r#"{"multiple_of":2}"#).is_err(),
            "name is required"
        );
    }
}
