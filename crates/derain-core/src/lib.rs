//! Rain removal for driving cameras: the part that runs in the car.
//!
//! What the `derain`, `yolodetect` and `boxoverlay` GStreamer elements link, and nothing more:
//! model cards and loading, ONNX Runtime sessions with provider selection and the TensorRT engine
//! cache, raw-frame conversion (on the CPU, or on the GPU with the `cuda` feature), the
//! `Derainer` that runs a generator frame in, frame out, the hand-made rain score and the rain
//! detector network, and the YOLO detection stage. The offline tools
//! (footage, rain synthesis, metrics, the ONNX graph writer) are in `derain-tools`, the trainer
//! and the command-line tool in `derain`; neither is a dependency of this crate.

pub mod card;
#[cfg(feature = "cuda")]
pub mod cuda;
/// The GPU kernels compiled for the host and checked against `frame` (no GPU needed).
#[cfg(test)]
mod cuda_host_tests;
pub mod derainer;
pub mod detect;
pub mod engine_cache;
pub mod frame;
pub mod model;
pub mod raindetect;
pub mod rainscore;
pub mod runtime;

pub use card::ModelCard;
