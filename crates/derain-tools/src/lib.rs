//! Rain removal for driving cameras: the offline tools, on top of `derain-core`.
//!
//! Footage reading and sampling, rain synthesis, the quality metrics deraining papers use, an
//! ONNX graph writer (test fixtures, and the generators and rain detector the trainer exports),
//! scoring of model outputs and detector boxes (mAP), stills, image I/O, charts, the shared data
//! folder and training datasets. None of it runs in the car: the GStreamer plugin does not link
//! this crate.

pub mod dataset;
pub mod devdata;
pub mod eval;
pub mod footage;
pub mod imageio;
pub mod map;
pub mod metrics;
pub mod onnx;
pub mod plot;
pub mod seed;
pub mod stills;
pub mod synth;
