//! Rain removal for driving cameras.
//!
//! The library shared by the `derain` GStreamer element, the `derain` command-line tool and (behind
//! the `train` feature) the trainer: model cards and loading, ONNX Runtime inference with provider
//! selection, raw-frame conversion, and an ONNX graph writer.

pub mod card;
pub mod frame;
pub mod model;
pub mod onnx;
pub mod runtime;

pub use card::ModelCard;
