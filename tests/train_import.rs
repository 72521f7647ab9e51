#![cfg(feature = "train")]
//! A run started from an exported generator (`run.init = "model.onnx"`): G_B gets the file's
//! weights exactly, G_R and the momentum copy follow for residual architectures, and a model of
//! another architecture, a float16 export or a damaged file is refused with the file named.

mod synthetic_rain;

use std::path::{Path, PathBuf};

use tch::{Kind, Tensor};

use derain::card::{ModelCard, Precision};
use derain::onnx::GeneratorOutput;
use derain::train::export::generator_onnx_as;
use derain::train::nets::Network;
use derain::train::{GeneratorArch, ImportError, LiteConfig, Resnet9Config, Trainer};
use synthetic_rain::{anlcl_batch, tiny_config};

fn lite(channels: usize) -> GeneratorArch {
    GeneratorArch::Lite(LiteConfig {
        factor: 4,
        channels,
        blocks: 1,
        context: 0,
    })
}

/// A trainer after two steps (no weight at its initial value) and its G_B exported to `dir`.
fn exported(arch: GeneratorArch, dir: &Path, precision: Precision) -> (Trainer, PathBuf) {
    exported_layer(arch, dir, precision, GeneratorOutput::Clean)
}

/// As [`exported`], for either generator (`Rain`: G_R, as `derain export --rain` writes it).
fn exported_layer(
    arch: GeneratorArch,
    dir: &Path,
    precision: Precision,
    layer: GeneratorOutput,
) -> (Trainer, PathBuf) {
    let mut t = Trainer::new(&tiny_config(arch)).unwrap();
    let (rainy, clean) = anlcl_batch(5, 1, 64);
    for _ in 0..2 {
        t.step_anlcl(&rainy, &clean).unwrap();
    }
    let bytes =
        generator_onnx_as(t.generator(layer), &ModelCard::new("imported"), precision).unwrap();
    let path = dir.join("g.onnx");
    std::fs::write(&path, bytes).unwrap();
    (t, path)
}

fn max_abs(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

/// Largest difference between two networks' parameters of the same names; every name of `a`
/// must be in `b`.
fn params_diff(a: &dyn Network, b: &dyn Network) -> f64 {
    let bv = b.var_store().variables();
    a.var_store()
        .variables()
        .iter()
        .map(|(name, t)| max_abs(t, bv.get(name).expect("same parameter names")))
        .fold(0.0, f64::max)
}

fn check_round_trip(arch: GeneratorArch) {
    let tmp = tempfile::tempdir().unwrap();
    let (trained, path) = exported(arch, tmp.path(), Precision::Fp32);
    // Another seed, so the fresh networks differ from the trained ones before the import.
    let mut cfg = tiny_config(arch);
    cfg.seed = 99;
    let fresh = Trainer::new(&cfg).unwrap();
    let src = trained.generator(GeneratorOutput::Clean);
    assert!(params_diff(src, fresh.generator(GeneratorOutput::Clean)) > 1e-3);

    let mut t = Trainer::from_model(&path, &cfg).unwrap();
    assert_eq!(t.step_count(), 0);
    let gb = t.generator(GeneratorOutput::Clean);
    assert_eq!(
        params_diff(src, gb),
        0.0,
        "G_B takes the file's weights exactly"
    );
    assert_eq!(
        params_diff(gb, t.generator(GeneratorOutput::Rain)),
        0.0,
        "G_R starts from G_B's rain estimate"
    );
    let x = Tensor::rand([1, 3, 32, 48], (Kind::Float, tch::Device::Cpu));
    assert!(max_abs(&t.derain(&x), &trained.derain(&x)) < 1e-6);
    // G_R's rain estimate is tanh of the same raw output G_B subtracts.
    let rain = tch::no_grad(|| t.generator(GeneratorOutput::Rain).forward(&x));
    let clean = t.derain(&x);
    let inside = clean
        .gt(1e-4)
        .logical_and(&clean.lt(1.0 - 1e-4))
        .logical_and(&rain.abs().lt(0.9));
    assert!(
        inside.any().int64_value(&[]) == 1,
        "no unclipped pixel to compare"
    );
    let undone = ((&clean + rain.atanh()) - &x).abs() * inside.to_kind(Kind::Float);
    // Where the clip does not bite, clean + atanh(rain) gives the input back.
    let worst = undone.max().double_value(&[]);
    assert!(worst < 1e-3, "{worst}");

    let (rainy, clean) = anlcl_batch(6, 1, 64);
    let r = t.step_anlcl(&rainy, &clean).unwrap();
    assert!(r.generator_total.is_finite());
}

#[test]
fn lite_model_round_trips_into_a_trainer() {
    check_round_trip(lite(8));
}

#[test]
fn residual_resnet9_model_round_trips_into_a_trainer() {
    check_round_trip(GeneratorArch::Resnet9(Resnet9Config {
        base: 4,
        blocks: 1,
        residual: true,
    }));
}

#[test]
fn lite_model_grows_context_blocks_that_start_as_identities() {
    let tmp = tempfile::tempdir().unwrap();
    let (trained, path) = exported(lite(8), tmp.path(), Precision::Fp32);
    let grown_arch = GeneratorArch::Lite(LiteConfig {
        factor: 4,
        channels: 8,
        blocks: 1,
        context: 2,
    });
    let mut cfg = tiny_config(grown_arch);
    cfg.seed = 99;
    let mut t = Trainer::from_model(&path, &cfg).unwrap();
    let x = Tensor::rand([1, 3, 32, 48], (Kind::Float, tch::Device::Cpu));
    // The grown network derains exactly as the model it grew from...
    assert!(max_abs(&t.derain(&x), &trained.derain(&x)) < 1e-6);
    let vars = t.generator(GeneratorOutput::Clean).var_store().variables();
    assert_eq!(
        vars["ctx.1.conv2.weight"].abs().max().double_value(&[]),
        0.0
    );
    assert!(vars["ctx.1.conv1.weight"].abs().max().double_value(&[]) > 0.0);
    // ...and its context blocks learn: after a step the output moves.
    let before = t.derain(&x);
    let (rainy, clean) = anlcl_batch(6, 1, 64);
    t.step_anlcl(&rainy, &clean).unwrap();
    let vars = t.generator(GeneratorOutput::Clean).var_store().variables();
    assert!(vars["ctx.0.conv2.weight"].abs().max().double_value(&[]) > 0.0);
    assert!(max_abs(&t.derain(&x), &before) > 0.0);
    // Growing is one way only: a model of another size still is refused.
    let err = Trainer::from_model(
        &path,
        &tiny_config(GeneratorArch::Lite(LiteConfig {
            factor: 4,
            channels: 12,
            blocks: 1,
            context: 2,
        })),
    )
    .unwrap_err();
    assert!(matches!(err, ImportError::Architecture { .. }), "{err}");
}

#[test]
fn another_architecture_is_refused_with_both_named() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, path) = exported(lite(8), tmp.path(), Precision::Fp32);
    let err = Trainer::from_model(&path, &tiny_config(lite(12))).unwrap_err();
    assert!(matches!(err, ImportError::Architecture { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("channels=8") && msg.contains("channels=12"),
        "{msg}"
    );
    assert!(msg.contains("g.onnx"), "{msg}");
}

#[test]
fn float16_export_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, path) = exported(lite(8), tmp.path(), Precision::Fp16);
    let err = Trainer::from_model(&path, &tiny_config(lite(8))).unwrap_err();
    assert!(matches!(err, ImportError::Fp16 { .. }), "{err}");
}

#[test]
fn rain_layer_export_is_refused_as_such() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, path) = exported_layer(lite(8), tmp.path(), Precision::Fp32, GeneratorOutput::Rain);
    let err = Trainer::from_model(&path, &tiny_config(lite(8))).unwrap_err();
    assert!(matches!(err, ImportError::RainLayer { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("g.onnx") && msg.contains("--rain"), "{msg}");
}

#[test]
fn damaged_or_missing_model_is_refused_with_the_file_named() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, path) = exported(lite(8), tmp.path(), Precision::Fp32);
    let bytes = std::fs::read(&path).unwrap();
    let cut = tmp.path().join("cut.onnx");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let err = Trainer::from_model(&cut, &tiny_config(lite(8))).unwrap_err();
    assert!(err.to_string().contains("cut.onnx"), "{err}");

    let missing = tmp.path().join("absent.onnx");
    let err = Trainer::from_model(&missing, &tiny_config(lite(8))).unwrap_err();
    assert!(err.to_string().contains("absent.onnx"), "{err}");
}
