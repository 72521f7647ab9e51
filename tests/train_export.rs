#![cfg(feature = "train")]
//! Export parity: each architecture's exported ONNX model, loaded and run the way the element
//! does (model contract check, ONNX Runtime on the CPU, reflect padding to `multiple_of`), gives
//! the tch network's output to 1e-4, on a random 3×67×93 input and on a real rainy frame.

mod synthetic_rain;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tch::{Device, Kind, Tensor};

use derain::frame::{FrameLayout, PixelFormat, frame_to_tensor, padded_size};
use derain::model::Model;
use derain::onnx::GeneratorOutput;
use derain::runtime::{Generator, Provider, SessionOptions};
use derain::train::nets::Network;
use derain::train::{FullResConfig, GeneratorArch, LiteConfig, Resnet9Config, Trainer};
use synthetic_rain::{anlcl_batch, tiny_config};

const TOLERANCE: f32 = 1e-4;

/// A trainer of `arch` after two steps, so no weight is at its initial value.
fn trained(arch: GeneratorArch) -> Trainer {
    let mut t = Trainer::new(&tiny_config(arch)).unwrap();
    let (rainy, clean) = anlcl_batch(7, 1, 64);
    for _ in 0..2 {
        t.step_anlcl(&rainy, &clean).unwrap();
    }
    t
}

/// Reflect-pads a `[3,h,w]` tensor at the bottom and right to multiples of `k` (the element's
/// padding, `derain::frame`).
fn pad(x: &Tensor, k: u32) -> Tensor {
    let (_, h, w) = x.size3().unwrap();
    let (hp, wp) = padded_size(h as usize, w as usize, k);
    x.unsqueeze(0)
        .reflection_pad2d([0, wp as i64 - w, 0, hp as i64 - h])
        .squeeze_dim(0)
}

/// Runs `padded` (`[3,hp,wp]`) through ONNX Runtime and through tch; returns the largest
/// difference over the top-left `h`×`w` region.
fn max_diff(t: &Trainer, session: &mut Generator, padded: &Tensor, h: i64, w: i64) -> f32 {
    let (_, hp, wp) = padded.size3().unwrap();
    let input = Vec::<f32>::try_from(padded.reshape([-1])).unwrap();
    let ort = session
        .run(&input, hp as usize, wp as usize, <[f32]>::to_vec)
        .expect("ONNX Runtime runs the export");
    let ort = Tensor::from_slice(&ort).view([3, hp, wp]);
    let tch = t
        .derain(&padded.unsqueeze(0))
        .squeeze_dim(0)
        .to_device(Device::Cpu);
    let crop = |x: &Tensor| x.narrow(1, 0, h).narrow(2, 0, w);
    (crop(&ort) - crop(&tch)).abs().max().double_value(&[]) as f32
}

fn check_architecture(arch: GeneratorArch) {
    let t = trained(arch);
    let card = t.model_card("parity");
    let bytes = t.export(GeneratorOutput::Clean, &card).expect("exports");
    let model = Model::from_bytes(bytes, "parity").expect("the export honours the model contract");

    let c = model.card();
    let g = t.generator(GeneratorOutput::Clean);
    assert_eq!(c.architecture, arch.describe());
    assert_eq!(c.multiple_of as usize, arch.multiple_of());
    assert_eq!(c.parameters, g.parameter_count());
    assert!((c.gmac_per_megapixel - arch.mac_per_pixel() / 1000.0).abs() < 1e-9);
    assert_eq!(c.training["steps"], 2);

    let options = SessionOptions {
        provider: Provider::Cpu,
        ..SessionOptions::default()
    };
    let mut session = Generator::new(&model, &options).expect("ONNX Runtime (run `make setup`)");

    // A random 3×67×93 input.
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let v: Vec<f32> = (0..3 * 67 * 93)
        .map(|_| rng.random_range(0.0..1.0))
        .collect();
    let x = Tensor::from_slice(&v).view([3, 67, 93]);
    let d = max_diff(&t, &mut session, &pad(&x, c.multiple_of), 67, 93);
    eprintln!(
        "{}: random 3×67×93 input, max |ORT − tch| = {d:e}",
        arch.describe()
    );
    assert!(
        d <= TOLERANCE,
        "{}: random input differs by {d}",
        arch.describe()
    );

    // A crop of a real rainy frame, converted exactly as the element converts frames.
    let Some(path) = derain::devdata::shared_path("pairs/rain12/rainy/001.png") else {
        eprintln!("skipping the real-frame check: ../shared/data/pairs/rain12 is absent");
        return;
    };
    let img = derain::imageio::load_rgb(&path).unwrap();
    let (w, h) = (150usize, 101usize);
    let crop = image::imageops::crop_imm(&img, 40, 30, w as u32, h as u32).to_image();
    let layout = FrameLayout::packed(PixelFormat::Rgb, w, h);
    let (hp, wp) = padded_size(h, w, c.multiple_of);
    let mut tensor = vec![0.0f32; 3 * hp * wp];
    frame_to_tensor(&layout, &[crop.as_raw()], c.multiple_of, &mut tensor).unwrap();
    let x = Tensor::from_slice(&tensor).view([3, hp as i64, wp as i64]);
    let d = max_diff(&t, &mut session, &x, h as i64, w as i64);
    eprintln!(
        "{}: Rain12 001 crop {w}×{h}, max |ORT − tch| = {d:e}",
        arch.describe()
    );
    assert!(
        d <= TOLERANCE,
        "{}: real frame differs by {d}",
        arch.describe()
    );
    assert_eq!(x.kind(), Kind::Float);
}

#[test]
fn resnet9_export_matches() {
    check_architecture(GeneratorArch::Resnet9(Resnet9Config {
        base: 16,
        blocks: 9,
        residual: false,
    }));
}

/// The residual variant derain-r9 ships as: `clean = clip(rainy − r, 0, 1)` in both.
#[test]
fn resnet9_residual_export_matches() {
    check_architecture(GeneratorArch::Resnet9(Resnet9Config {
        base: 8,
        blocks: 2,
        residual: true,
    }));
}

#[test]
fn fullres_export_matches() {
    check_architecture(GeneratorArch::Fullres(FullResConfig {
        channels: 32,
        blocks: 16,
    }));
}

#[test]
fn lite_export_matches() {
    check_architecture(GeneratorArch::Lite(LiteConfig {
        factor: 4,
        channels: 32,
        blocks: 3,
        context: 0,
    }));
}

#[test]
fn lite_with_context_blocks_export_matches() {
    // Dilated convolutions (2, 4, 8) in tch and in the ONNX graph agree.
    check_architecture(GeneratorArch::Lite(LiteConfig {
        factor: 4,
        channels: 8,
        blocks: 1,
        context: 3,
    }));
}

/// G_R exports with a `rain` output, which the element's loader refuses (it is not a deraining
/// model).
#[test]
fn rain_generator_exports_but_is_no_contract_model() {
    let t = Trainer::new(&tiny_config(GeneratorArch::Lite(LiteConfig {
        factor: 2,
        channels: 4,
        blocks: 1,
        context: 0,
    })))
    .unwrap();
    let bytes = t
        .export(GeneratorOutput::Rain, &t.model_card("rain"))
        .unwrap();
    let err = Model::from_bytes(bytes, "rain").unwrap_err();
    assert!(err.to_string().contains("clean"), "{err}");
}

/// `--fp16` exports of trained generators (ResNet-9 and lite): float16 output within 45 dB PSNR
/// of float32 on a frame-like input, checked two ways on the CPU: with
/// [`derain::onnx::simulate_fp16`] (the float32 graph with every weight and intermediate tensor
/// rounded through float16), and by running the float16 graph on ONNX Runtime's CPU provider,
/// which takes it but computes the operators it lacks float16 kernels for in float32. Float16
/// arithmetic itself (TensorRT, CUDA) needs a GPU and is not measured here.
#[test]
fn fp16_export_within_45_db() {
    use derain::card::Precision;
    use onnx_protobuf::Message;

    for arch in [
        GeneratorArch::Resnet9(Resnet9Config {
            base: 16,
            blocks: 9,
            residual: false,
        }),
        GeneratorArch::Lite(LiteConfig {
            factor: 4,
            channels: 32,
            blocks: 3,
            context: 0,
        }),
    ] {
        let t = trained(arch);
        let card = t.model_card("fp16");
        let b32 = t.export(GeneratorOutput::Clean, &card).unwrap();
        let b16 = t
            .export_as(GeneratorOutput::Clean, &card, Precision::Fp16)
            .unwrap();
        let m32 = Model::from_bytes(b32.clone(), "fp32").unwrap();
        let m16 = Model::from_bytes(b16, "fp16").expect("the fp16 export honours the contract");
        assert_eq!(m16.card().precision, Precision::Fp16);
        let proto = onnx_protobuf::ModelProto::parse_from_bytes(&b32).unwrap();
        let sim = derain::onnx::to_bytes(&derain::onnx::simulate_fp16(&proto).unwrap()).unwrap();
        let sim = Model::from_bytes(sim, "fp16 simulation").unwrap();

        let options = SessionOptions {
            provider: Provider::Cpu,
            ..SessionOptions::default()
        };
        let k = m32.multiple_of() as usize;
        let (h, w) = (68usize.next_multiple_of(k), 92usize.next_multiple_of(k));
        let x: Vec<f32> = (0..3 * h * w)
            .map(|i| {
                let (c, y, xx) = (i / (h * w), i / w % h, i % w);
                let stripe = if (xx + 3 * y) % 17 < 2 { 0.25 } else { 0.0 };
                (0.15 + 0.4 * y as f32 / h as f32 + 0.1 * c as f32 + stripe).min(1.0)
            })
            .collect();
        let run = |m: &Model| -> Option<Vec<f32>> {
            let mut g = Generator::new(m, &options).ok()?;
            g.run(&x, h, w, <[f32]>::to_vec).ok()
        };
        let y32 = run(&m32).expect("ONNX Runtime (run `make setup`)");
        let psnr = |y: &[f32]| {
            let mse = y
                .iter()
                .zip(&y32)
                .map(|(a, b)| f64::from(a - b).powi(2))
                .sum::<f64>()
                / y.len() as f64;
            10.0 * (1.0 / mse.max(1e-20)).log10()
        };
        let ysim = run(&sim).expect("the simulation runs on the CPU");
        let db = psnr(&ysim);
        eprintln!("{}: fp16 rounding simulation {db:.1} dB", arch.describe());
        assert!(db >= 45.0, "{}: simulation {db:.1} dB", arch.describe());
        match run(&m16) {
            Some(y16) => {
                let db = psnr(&y16);
                eprintln!(
                    "{}: fp16 graph on the CPU provider (float32 arithmetic where it lacks float16 \
                     kernels) {db:.1} dB",
                    arch.describe()
                );
                assert!(db >= 45.0, "{}: fp16 {db:.1} dB", arch.describe());
            }
            None => eprintln!(
                "{}: ONNX Runtime's CPU provider cannot run the fp16 graph here; fp16 execution \
                 is unmeasured (the simulation above stands in)",
                arch.describe()
            ),
        }
    }
}
