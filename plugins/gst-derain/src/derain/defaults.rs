//! The embedded default models: with `model` unset the element runs `derain-r9` when a GPU
//! provider is active and `derain-lite` on the CPU (build.rs embeds whichever of
//! `models/derain-r9.onnx` and `models/derain-lite.onnx` exist).

use derain_core::model::Model;
use derain_core::runtime::{Generator, Provider, SessionOptions};

#[cfg(derain_embed_r9)]
const R9: Option<&[u8]> = Some(include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../models/derain-r9.onnx"
)));
#[cfg(not(derain_embed_r9))]
const R9: Option<&[u8]> = None;

#[cfg(derain_embed_lite)]
const LITE: Option<&[u8]> = Some(include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../models/derain-lite.onnx"
)));
#[cfg(not(derain_embed_lite))]
const LITE: Option<&[u8]> = None;

fn model(bytes: &'static [u8], name: &str) -> Result<Model, String> {
    Model::from_bytes(bytes.to_vec(), format!("embedded {name}")).map_err(|e| e.to_string())
}

/// Picks and opens the default model for `options`; the string says which and why.
pub fn open(options: &SessionOptions) -> Result<(Model, Generator, String), String> {
    let wants_gpu = options.provider != Provider::Cpu;
    // With `auto` on a machine without a usable GPU, opening derain-r9 on the CPU only to drop
    // it for derain-lite would cost a session build and its memory.
    let try_r9 = wants_gpu
        && (options.provider != Provider::Auto
            || LITE.is_none()
            || derain_core::runtime::gpu_provider_possible(options));
    if let (true, Some(r9)) = (try_r9, R9) {
        let m = model(r9, "derain-r9")?;
        match Generator::new(&m, options) {
            Ok(g) if g.provider().is_gpu() => {
                let why = format!(
                    "no model set: embedded derain-r9 ({} is active)",
                    g.provider()
                );
                return Ok((m, g, why));
            }
            // auto fell back to the CPU: the CPU model is the right one there.
            Ok(g) if LITE.is_none() => {
                let why = "no model set: embedded derain-r9 on the CPU (derain-lite is not in this build)".to_owned();
                return Ok((m, g, why));
            }
            Ok(_) => {}
            Err(e) if options.provider != Provider::Auto => return Err(e.to_string()),
            Err(_) => {}
        }
    }
    match (LITE, R9) {
        (Some(lite), _) => {
            let m = model(lite, "derain-lite")?;
            // With derain-r9 in the build, lite is the CPU model (auto fell back to the CPU);
            // without it, lite is the only model and goes wherever the provider setting says.
            let cpu = SessionOptions {
                provider: if R9.is_none() || (wants_gpu && options.provider != Provider::Auto) {
                    options.provider
                } else {
                    Provider::Cpu
                },
                ..options.clone()
            };
            let g = Generator::new(&m, &cpu).map_err(|e| e.to_string())?;
            let why = format!(
                "no model set: embedded derain-lite ({} provider)",
                g.provider()
            );
            Ok((m, g, why))
        }
        (None, Some(r9)) => {
            let m = model(r9, "derain-r9")?;
            let g = Generator::new(&m, options).map_err(|e| e.to_string())?;
            let why = format!(
                "no model set: embedded derain-r9 ({} provider)",
                g.provider()
            );
            Ok((m, g, why))
        }
        (None, None) => Err(
            "no model set and this build embeds no default model: set model=PATH to an ONNX \
             generator (see `derain inspect`), or build with models/derain-lite.onnx present"
                .to_owned(),
        ),
    }
}
