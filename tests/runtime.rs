//! ONNX Runtime loading and provider selection, in a process of its own: the library can be
//! loaded once per process, so the failing load must come first.

use derain::model::Model;
use derain::onnx::fixtures;
use derain::runtime::{self, Generator, Provider, RuntimeError, SessionOptions};

#[test]
fn loading_providers_and_inference() {
    // 1. An explicit library that does not exist is an error naming it, never a panic.
    let bad = std::path::Path::new("/nonexistent/libonnxruntime.so");
    match runtime::init_ort(Some(bad)) {
        Err(RuntimeError::LibraryNotFound { tried }) => {
            assert!(tried.contains("/nonexistent"), "{tried}")
        }
        other => panic!("expected LibraryNotFound, got {other:?}"),
    }
    // 2. The search finds the set-up's library.
    let path = runtime::init_ort(None).expect("ONNX Runtime from the set-up (run `make setup`)");
    assert!(
        path.to_string_lossy().contains("onnxruntime"),
        "{}",
        path.display()
    );

    let model = Model::from_bytes(fixtures::affine([2.0; 3], [0.1; 3]), "affine").expect("model");
    // 3. auto on a CPU-only ONNX Runtime falls back to the CPU.
    let mut g = Generator::new(&model, &SessionOptions::default()).expect("auto session");
    let gpu_build = g.provider() != Provider::Cpu;
    let input: Vec<f32> = (0..3 * 4 * 5).map(|i| i as f32 / 100.0).collect();
    let out = g.run(&input, 4, 5, <[f32]>::to_vec).expect("run");
    for (x, y) in input.iter().zip(&out) {
        assert!((y - (2.0 * x + 0.1)).abs() < 1e-6);
    }
    // Wrong tensor length is an error, not a crash.
    assert!(g.run(&input, 5, 5, |_| ()).is_err());

    // 4. An explicit GPU provider that cannot load is an error, never a silent CPU fallback.
    if !gpu_build {
        for provider in [Provider::Cuda, Provider::TensorRt] {
            let options = SessionOptions {
                provider,
                ..SessionOptions::default()
            };
            let err = Generator::new(&model, &options).expect_err("no GPU provider here");
            let msg = err.to_string();
            assert!(
                msg.contains(provider.as_str()) && msg.contains("not available"),
                "{msg}"
            );
        }
    } else {
        eprintln!("note: a GPU build of ONNX Runtime is loaded; CPU-only checks skipped");
    }

    // 4b. The cheap check the element's default-model choice relies on never hides a GPU that
    // `auto` can use, and says no where there is no NVIDIA device at all.
    let possible = runtime::gpu_provider_possible(&SessionOptions::default());
    assert!(
        !gpu_build || possible,
        "auto runs on {} but gpu_provider_possible says no",
        g.provider()
    );
    if !std::path::Path::new("/dev/nvidiactl").exists() {
        assert!(
            !possible,
            "no NVIDIA device here, yet a GPU provider is possible"
        );
    }

    // 5. Sessions are counted and released.
    let before = runtime::open_sessions();
    drop(g);
    assert_eq!(runtime::open_sessions(), before - 1);
}
