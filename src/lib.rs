//! Rain removal for driving cameras.
//!
//! The library shared by the `derain` GStreamer element, the `derain` command-line tool and (behind
//! the `train` feature) the trainer: model cards and loading, ONNX Runtime inference with provider
//! selection, raw-frame conversion, an ONNX graph writer, footage reading, rain synthesis and the
//! quality metrics deraining papers use.

pub mod card;
#[cfg(feature = "cuda")]
pub mod cuda;
/// The GPU kernels compiled for the host and checked against `frame` (no GPU needed).
#[cfg(test)]
mod cuda_host_tests;
pub mod data;
pub mod dataset;
pub mod detect;
pub mod engine_cache;
pub mod eval;
pub mod footage;
pub mod frame;
pub mod imageio;
pub mod metrics;
pub mod model;
pub mod onnx;
pub mod plot;
pub mod raindetect;
pub mod rainscore;
pub mod runtime;
pub mod stills;
pub mod synth;
#[cfg(feature = "train")]
pub mod train;

pub use card::ModelCard;
