//! An ONNX graph writer: test fixtures (so no test needs Python), randomly initialised generators
//! for benchmarks, and the graphs the trainer exports its generators to (ResNet-9, the authors'
//! full-resolution network, and the CPU real-time lite network).
//!
//! Everything is built from `onnx-protobuf`'s message types and serialised with
//! `Message::write_to_bytes`; the model card travels in `metadata_props` (docs/ARCHITECTURE.md, The
//! model contract).

pub mod builder;
pub mod fixtures;
pub mod fp16;
pub mod fullres;
pub mod lite;
mod net;
mod raindet;
pub mod resnet9;

pub use builder::{
    Attr, BuildError, DEFAULT_OPSET, Dim, GraphBuilder, MIN_OPSET, ir_version_for_opset, to_bytes,
    value_info,
};
pub use fixtures::FixtureIo;
pub use fp16::{Fp16Error, simulate_fp16, to_fp16};
pub use fullres::{FullResConfig, fullres};
pub use lite::{LiteConfig, lite};
pub use net::{GeneratorOutput, RAIN_OUTPUT_NAME};
pub use raindet::{RainDetectorConfig, constant_rain_detector, rain_detector};
pub use resnet9::{Resnet9Config, resnet9, resnet9_random, resnet9_with_output};

/// ONNX Runtime helpers for this module's tests.
#[cfg(test)]
pub(crate) mod testing {
    use ort::environment::Environment;
    use ort::session::Session;
    use ort::value::TensorRef;

    use derain_core::card::{INPUT_NAME, OUTPUT_NAME};

    /// The process's ONNX Runtime environment, shared with [`derain_core::runtime`] (one per process);
    /// `None` (after a printed notice) when the library is missing or cannot be loaded.
    pub fn ort_env() -> Option<Environment> {
        match derain_core::runtime::environment(None) {
            Ok((_, env)) => Some(env),
            Err(e) => {
                eprintln!("skipping: {e}");
                None
            }
        }
    }

    /// A session for `bytes`, or `None` when ONNX Runtime is unavailable. Panics if ONNX Runtime
    /// is there but refuses the model: that is the failure the tests look for.
    pub fn ort_session(bytes: &[u8]) -> Option<Session> {
        let env = ort_env()?;
        let session = Session::builder(&env)
            .and_then(|mut b| b.commit_from_memory(bytes))
            .unwrap_or_else(|e| panic!("ONNX Runtime refused the model: {e}"));
        Some(session)
    }

    /// Runs `rainy` → `clean` on float32 data; returns the output's shape and values.
    pub fn run_f32(
        session: &mut Session,
        shape: impl AsRef<[usize]>,
        x: &[f32],
    ) -> (Vec<usize>, Vec<f32>) {
        let shape = shape.as_ref().to_vec();
        let input = TensorRef::from_array_view((shape, x)).expect("input tensor");
        let outputs = session
            .run(ort::inputs![INPUT_NAME => input])
            .expect("inference runs");
        let (shape, y) = outputs[OUTPUT_NAME]
            .try_extract_tensor::<f32>()
            .expect("float32 output");
        (shape.iter().map(|&d| d as usize).collect(), y.to_vec())
    }
}
