//! Rain removal for driving cameras.
//!
//! The `derain` command-line tool and (behind the `train` feature) the trainer, on top of the two
//! library crates: `derain-core` (what runs in the car, and all the GStreamer plugin links) and
//! `derain-tools` (the offline tools). Their modules are re-exported here under the paths they had
//! when this was one crate.

#[cfg(feature = "cuda")]
pub use derain_core::cuda;
pub use derain_core::{
    ModelCard, card, derainer, detect, engine_cache, frame, model, raindetect, rainscore, runtime,
};
pub use derain_tools::{
    dataset, devdata, eval, footage, imageio, map, metrics, onnx, plot, seed, stills, synth,
};
#[cfg(feature = "train")]
pub mod train;
