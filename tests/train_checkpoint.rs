#![cfg(feature = "train")]
//! Checkpoint and config errors a user can meet: another architecture, a file that is not a
//! checkpoint, a config with an unknown key or an out-of-range value.

mod synthetic_rain;

use derain::train::{
    CheckpointError, ConfigError, GeneratorArch, LiteConfig, Resnet9Config, TrainConfig, Trainer,
};
use synthetic_rain::tiny_config;

#[test]
fn checkpoint_of_another_architecture_is_refused_by_name() {
    let r9 = tiny_config(GeneratorArch::Resnet9(Resnet9Config {
        base: 4,
        blocks: 1,
        residual: false,
    }));
    let lite = tiny_config(GeneratorArch::Lite(LiteConfig {
        factor: 4,
        channels: 8,
        blocks: 1,
        context: 0,
    }));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r9.safetensors");
    Trainer::new(&r9).unwrap().save(&path).unwrap();
    let info = derain::train::read_info(&path).unwrap();
    assert_eq!(info.step, 0);
    assert_eq!(info.config, r9);
    assert!(info.architecture.contains("resnet9(base=4, blocks=1)"));

    let err = Trainer::load(&path, &lite).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, CheckpointError::Architecture { .. }), "{msg}");
    assert!(msg.contains("resnet9(base=4, blocks=1)"), "{msg}");
    assert!(
        msg.contains("lite(factor=4, channels=8, blocks=1)"),
        "{msg}"
    );
    assert!(msg.contains("r9.safetensors"), "{msg}");

    // Another discriminator width is another architecture too.
    let mut wide = r9.clone();
    wide.discriminator.base = 16;
    let msg = Trainer::load(&path, &wide).unwrap_err().to_string();
    assert!(
        msg.contains("patchgan(base=8") && msg.contains("patchgan(base=16"),
        "{msg}"
    );

    // Settings that do not shape parameters may change on resume.
    let mut other = r9.clone();
    other.loss.asymmetric = 0.5;
    other.optimiser.lr = 1e-3;
    assert!(Trainer::load(&path, &other).is_ok());
}

#[test]
fn saving_replaces_the_old_checkpoint_and_failures_leave_it() {
    let cfg = tiny_config(GeneratorArch::Lite(LiteConfig {
        factor: 2,
        channels: 4,
        blocks: 1,
        context: 0,
    }));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.safetensors");
    let t = Trainer::new(&cfg).unwrap();
    t.save(&path).unwrap();
    t.save(&path).unwrap();
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "temporary files left behind: {names:?}");

    // Saving into a folder that does not exist fails with the path named.
    let bad = dir.path().join("missing/c.safetensors");
    let msg = t.save(&bad).unwrap_err().to_string();
    assert!(msg.contains("missing"), "{msg}");
    assert!(Trainer::load(&path, &cfg).is_ok());
}

#[test]
fn files_that_are_not_checkpoints_are_named() {
    let cfg = tiny_config(GeneratorArch::Resnet9(Resnet9Config {
        base: 4,
        blocks: 1,
        residual: false,
    }));
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.safetensors");
    std::fs::write(&junk, b"not a checkpoint").unwrap();
    let msg = Trainer::load(&junk, &cfg).unwrap_err().to_string();
    assert!(
        msg.contains("junk.safetensors") && msg.contains("not a derain training checkpoint"),
        "{msg}"
    );
    let msg = Trainer::load(&dir.path().join("none"), &cfg)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("no such file"), "{msg}");
}

#[test]
fn config_files_with_unknown_keys_or_bad_values_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("train.toml");
    std::fs::write(&path, "seed = 3\n[sampler]\nwindow = 20\nanchors = 8\n").unwrap();
    let err = TrainConfig::from_file(&path).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ConfigError::Parse { .. }), "{msg}");
    assert!(
        msg.contains("anchors") && msg.contains("train.toml"),
        "{msg}"
    );

    std::fs::write(&path, "[loss]\ntemperature = -0.07\n").unwrap();
    let msg = TrainConfig::from_file(&path).unwrap_err().to_string();
    assert!(
        msg.contains("loss.temperature") && msg.contains("(0, 100]"),
        "{msg}"
    );

    std::fs::write(&path, "[heads]\nmomentum = 0.999\n").unwrap();
    assert_eq!(TrainConfig::from_file(&path).unwrap().heads.momentum, 0.999);
    // Trainer::new validates too.
    let mut cfg = TrainConfig::default();
    cfg.sampler.patch = 0;
    let msg = Trainer::new(&cfg).unwrap_err().to_string();
    assert!(msg.contains("sampler.patch"), "{msg}");
}

/// `run.init_discriminator`: D and its heads come from another run's checkpoint (a file or its
/// run directory), the generators stay; a D of other sizes, or a file that is not there, is
/// refused with the path and nothing changes.
#[test]
fn discriminator_loads_from_another_checkpoint_and_refuses_other_sizes() {
    let lite = GeneratorArch::Lite(LiteConfig {
        factor: 4,
        channels: 8,
        blocks: 1,
        context: 0,
    });
    let mut donor_cfg = tiny_config(lite);
    donor_cfg.seed = 11;
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("stage1");
    std::fs::create_dir_all(&run_dir).unwrap();
    let file = run_dir.join("checkpoint.safetensors");
    let donor = Trainer::new(&donor_cfg).unwrap();
    donor.save(&file).unwrap();

    let net = |t: &Trainer, name: &str| {
        synthetic_rain::parameters(t)
            .into_iter()
            .filter(|(n, _)| n.starts_with(&format!("{name}.")))
            .collect::<Vec<_>>()
    };
    let same = |a: &[(String, tch::Tensor)], b: &[(String, tch::Tensor)]| {
        a.len() == b.len() && a.iter().zip(b).all(|((_, x), (_, y))| x.equal(y))
    };
    let mut cfg = tiny_config(lite);
    cfg.seed = 12;
    for source in [file.clone(), run_dir.clone()] {
        let mut t = Trainer::new(&cfg).unwrap();
        let gen_before = net(&t, "gen_b");
        assert!(
            !same(&net(&t, "disc"), &net(&donor, "disc")),
            "seeds differ"
        );
        t.load_discriminator(&source).unwrap();
        for name in ["disc", "heads_layer", "key_disc", "key_heads_layer"] {
            assert!(same(&net(&t, name), &net(&donor, name)), "{name}");
        }
        assert!(same(&net(&t, "gen_b"), &gen_before), "G_B must not change");
    }

    let mut other = tiny_config(lite);
    other.discriminator.base = 16;
    let mut t = Trainer::new(&other).unwrap();
    let before = net(&t, "disc");
    let err = t.load_discriminator(&file).unwrap_err();
    assert!(matches!(err, CheckpointError::Architecture { .. }), "{err}");
    assert!(err.to_string().contains("stage1"), "{err}");
    assert!(same(&net(&t, "disc"), &before));
    let missing = dir.path().join("none.safetensors");
    let err = t.load_discriminator(&missing).unwrap_err();
    assert!(err.to_string().contains("none.safetensors"), "{err}");
}
