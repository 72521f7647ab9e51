//! The element on a GPU against the element on the CPU (issue 7): the same frames through
//! `provider=cuda` (and `tensorrt`) and `provider=cpu`, PSNR ≥ 45 dB, in a packed and a YUV
//! format at an odd size; with the `cuda` feature the GPU run must also report `gpu-frames=true`
//! (frames converted on the GPU). Skipped, with the reason, where there is no GPU or no GPU build
//! of ONNX Runtime: then nothing is measured.

use std::io::Write;
use std::sync::Once;

use gst::prelude::*;
use gst_check::Harness;

use derain_core::model::Model;
use derain_core::runtime::{Generator, Provider, RuntimeError, SessionOptions};
use derain_tools::onnx::{Resnet9Config, resnet9_random};

fn init() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        gst::init().expect("GStreamer initialises");
        gstderain::plugin_register_static().expect("plugin registers");
    });
}

/// Runs one buffer of `info` through a derain element on `provider`; returns the output bytes and
/// whether frames were converted on the GPU.
fn through(
    model: &std::path::Path,
    provider: &str,
    info: &gst_video::VideoInfo,
    input: &[u8],
) -> Result<(Vec<u8>, bool), String> {
    let el = gst::ElementFactory::make("derain")
        .property("model", model.to_str().expect("utf-8 path"))
        .property_from_str("provider", provider)
        .property("stats-interval", 0u32)
        .build()
        .expect("derain element");
    let mut h = Harness::with_element(&el, Some("sink"), Some("src"));
    h.set_src_caps(info.to_caps().expect("caps"));
    h.play();
    let mut buf = gst::Buffer::with_size(input.len()).expect("buffer");
    buf.get_mut()
        .expect("writable")
        .copy_from_slice(0, input)
        .expect("fill");
    let out = h
        .push_and_pull(buf)
        .map_err(|e| format!("{provider}: {e:?}"))?;
    let bytes = out.map_readable().expect("readable").as_slice().to_vec();
    Ok((bytes, el.property::<bool>("gpu-frames")))
}

fn psnr(a: &[u8], b: &[u8]) -> f64 {
    let mse = a
        .iter()
        .zip(b)
        .map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2))
        .sum::<f64>()
        / a.len() as f64;
    10.0 * (255.0f64.powi(2) / mse.max(1e-20)).log10()
}

#[test]
#[ignore = "needs an NVIDIA GPU; `make test` runs it where nvidia-smi finds one"]
fn element_on_gpu_matches_cpu() {
    init();
    if let Err(e) = derain_core::engine_cache::gpu_identity(0) {
        eprintln!("skipping: no GPU here ({e}); the element on a GPU is unmeasured");
        return;
    }
    let bytes = resnet9_random(&Resnet9Config::default(), 5).expect("builds");
    let model = Model::from_bytes(bytes.clone(), "resnet9").expect("valid");
    let mut file = tempfile::Builder::new()
        .suffix(".onnx")
        .tempfile()
        .expect("temp");
    file.write_all(&bytes).expect("write");
    for (format, w, h) in [
        (gst_video::VideoFormat::Rgbx, 641, 359),
        (gst_video::VideoFormat::Nv12, 639, 361),
    ] {
        let info = gst_video::VideoInfo::builder(format, w, h)
            .build()
            .expect("info");
        let input: Vec<u8> = (0..info.size())
            .map(|i| ((i * 31 + i / 997 * 7) % 251) as u8)
            .collect();
        let (cpu, cpu_gpu_frames) = through(file.path(), "cpu", &info, &input).expect("cpu runs");
        assert!(!cpu_gpu_frames);
        for provider in [Provider::Cuda, Provider::TensorRt] {
            let options = SessionOptions {
                provider,
                ..SessionOptions::default()
            };
            match Generator::new(&model, &options) {
                Ok(_) => {}
                Err(RuntimeError::ProviderUnavailable { reason, .. })
                    if reason.contains("built without") =>
                {
                    eprintln!("skipping {provider}: ONNX Runtime here is the CPU build ({reason})");
                    continue;
                }
                Err(e) => panic!("a GPU is present but {provider} cannot start: {e}"),
            }
            let (gpu, gpu_frames) =
                through(file.path(), provider.as_str(), &info, &input).expect("element runs");
            assert_eq!(
                gpu_frames,
                cfg!(feature = "cuda"),
                "gpu-frames should say whether this build converts on the GPU"
            );
            let db = psnr(&gpu, &cpu);
            eprintln!("{format:?} {w}x{h} on {provider} (gpu-frames={gpu_frames}): {db:.1} dB");
            assert!(db >= 45.0, "{format:?} {provider}: {db:.1} dB");
        }
    }
}
