#![cfg(feature = "train")]
//! The training step end to end: which parameters each phase trains, a short run lowering the
//! loss, exact resume from a checkpoint, stage 1, and weight 0 switching a term off.

mod synthetic_rain;

use derain::train::{
    Batch, GeneratorArch, ParamGrad, Resnet9Config, STAGE_START_NAME, SyntheticBatch, Trainer,
};
use synthetic_rain::{anlcl_batch, parameters, pretrain_batch, tiny_config};

fn small_resnet9() -> GeneratorArch {
    GeneratorArch::Resnet9(Resnet9Config {
        base: 8,
        blocks: 2,
        residual: false,
    })
}

fn norms<'a>(grads: &'a [ParamGrad], prefix: &str) -> Vec<&'a ParamGrad> {
    grads
        .iter()
        .filter(|g| g.name.starts_with(&format!("{prefix}.")))
        .collect()
}

/// Every parameter of `prefix` has a gradient, and every weight a non-zero one (a bias right
/// before an instance norm has an exactly cancelled gradient, so only its presence is checked).
fn assert_learns(grads: &[ParamGrad], prefix: &str) {
    let ps = norms(grads, prefix);
    assert!(!ps.is_empty(), "no parameters under {prefix}");
    for g in ps {
        let norm = g
            .norm
            .unwrap_or_else(|| panic!("{} got no gradient", g.name));
        assert!(norm.is_finite(), "{}: {norm}", g.name);
        if g.name.ends_with(".weight") {
            assert!(norm > 0.0, "{} got a zero gradient", g.name);
        }
    }
}

fn assert_frozen(grads: &[ParamGrad], prefix: &str) {
    for g in norms(grads, prefix) {
        assert!(
            g.norm.is_none_or(|n| n == 0.0),
            "{} should get no gradient, got {:?}",
            g.name,
            g.norm
        );
    }
}

#[test]
fn gradients_reach_what_learns_and_nothing_frozen() {
    let cfg = tiny_config(small_resnet9());
    let mut t = Trainer::new(&cfg).unwrap();
    let (rainy, clean) = anlcl_batch(1, 2, 64);
    let probe = t
        .probe_gradients(Batch::Anlcl {
            rainy: &rainy,
            clean: &clean,
            synthetic: None,
        })
        .unwrap();

    let d = &probe.discriminator_phase;
    assert_learns(d, "disc");
    for net in ["gen_b", "gen_r", "heads_loc", "heads_layer"] {
        assert_frozen(d, net);
    }
    let g = &probe.generator_phase;
    for net in ["gen_b", "gen_r", "heads_loc", "heads_layer"] {
        assert_learns(g, net);
    }
    // D is frozen during the generator step; the momentum copies never get gradients.
    assert_frozen(g, "disc");
    for net in ["key_gen_b", "key_disc", "key_heads_loc", "key_heads_layer"] {
        assert_frozen(d, net);
        assert_frozen(g, net);
        assert!(norms(g, net).iter().all(|p| p.norm.is_none()), "{net}");
    }
    // Probing changes nothing: the next step is the same as on a fresh trainer.
    let mut fresh = Trainer::new(&cfg).unwrap();
    let a = t.step_anlcl(&rainy, &clean).unwrap();
    let b = fresh.step_anlcl(&rainy, &clean).unwrap();
    assert_eq!(a.loss, b.loss);
}

#[test]
fn weight_zero_removes_a_term() {
    let mut cfg = tiny_config(small_resnet9());
    cfg.loss.location = 0.0;
    cfg.loss.asymmetric = 0.0;
    // The identity term projects through the location heads too.
    cfg.loss.identity = 0.0;
    let mut t = Trainer::new(&cfg).unwrap();
    let (rainy, clean) = anlcl_batch(2, 2, 64);
    let probe = t
        .probe_gradients(Batch::Anlcl {
            rainy: &rainy,
            clean: &clean,
            synthetic: None,
        })
        .unwrap();
    assert_frozen(&probe.generator_phase, "heads_loc");
    assert_learns(&probe.generator_phase, "heads_layer");
    let r = t.step_anlcl(&rainy, &clean).unwrap();
    assert!(r.loss.location.is_none() && r.loss.asymmetric.is_none());
    assert!(r.loss.identity.is_none());
    assert!(r.time.loss.location.is_none());
    assert!(r.loss.layer_contrastive.is_some() && r.loss.consistency.is_some());

    // Without the adversarial term there is no discriminator step at all.
    cfg.loss.adversarial = 0.0;
    let mut t = Trainer::new(&cfg).unwrap();
    let r = t.step_anlcl(&rainy, &clean).unwrap();
    assert!(r.discriminator.is_none() && r.loss.adversarial.is_none());
}

/// The two supervised L1 terms of a step that computed them.
fn supervised(r: &derain::train::StepReport) -> f64 {
    r.loss.supervised_clean.expect("supervised_clean computed")
        + r.loss.supervised_rain.expect("supervised_rain computed")
}

#[test]
fn pretrain_step_is_supervised_plus_adversarial() {
    let cfg = tiny_config(small_resnet9());
    let mut t = Trainer::new(&cfg).unwrap();
    let (rainy, clean, rain) = pretrain_batch(3, 2, 64);
    let probe = t
        .probe_gradients(Batch::Pretrain {
            rainy: &rainy,
            clean: &clean,
            rain: &rain,
        })
        .unwrap();
    assert_learns(&probe.generator_phase, "gen_b");
    assert_learns(&probe.generator_phase, "gen_r");
    assert_frozen(&probe.generator_phase, "heads_loc");
    assert_frozen(&probe.generator_phase, "heads_layer");

    let first = t.step_pretrain(&rainy, &clean, &rain).unwrap();
    assert!(first.loss.supervised_clean.is_some() && first.loss.supervised_rain.is_some());
    assert!(first.loss.adversarial.is_some() && first.discriminator.is_some());
    assert!(first.loss.consistency.is_none() && first.loss.layer_contrastive.is_none());
    let mut last = first.clone();
    for _ in 0..10 {
        last = t.step_pretrain(&rainy, &clean, &rain).unwrap();
    }
    assert!(
        supervised(&last) < supervised(&first),
        "{} → {}",
        supervised(&first),
        supervised(&last)
    );

    // Mismatched pairs are an input error, not a panic.
    let err = t
        .step_pretrain(&rainy, &clean, &rain.narrow(0, 0, 1))
        .unwrap_err();
    assert!(err.to_string().contains("rain"), "{err}");
}

/// Stage 2 with `loss.synthetic`: the supervised terms on the synthetic pairs join ANLCL's terms
/// and train both generators towards them; without the weight (or without pairs) they are absent.
#[test]
fn stage2_synthetic_term_joins_anlcl_and_lowers_its_loss() {
    let mut cfg = tiny_config(small_resnet9());
    cfg.loss.synthetic = 1.0;
    let mut t = Trainer::new(&cfg).unwrap();
    let (rainy, clean) = anlcl_batch(4, 2, 64);
    let (s_rainy, s_clean, s_rain) = pretrain_batch(5, 2, 64);
    let batch = Batch::Anlcl {
        rainy: &rainy,
        clean: &clean,
        synthetic: Some(SyntheticBatch {
            rainy: &s_rainy,
            clean: &s_clean,
            rain: &s_rain,
        }),
    };
    let first = t.step_batch(batch).unwrap();
    assert!(first.loss.supervised_clean.is_some() && first.loss.supervised_rain.is_some());
    assert!(first.loss.layer_contrastive.is_some() && first.loss.location.is_some());
    // Without the ANLCL terms the step is the supervised objective alone, which must fall.
    let mut only = cfg.clone();
    only.loss.adversarial = 0.0;
    only.loss.layer_contrastive = 0.0;
    only.loss.asymmetric = 0.0;
    only.loss.location = 0.0;
    only.loss.consistency = 0.0;
    only.loss.sparsity = 0.0;
    let mut t2 = Trainer::new(&only).unwrap();
    let start = t2.step_batch(batch).unwrap();
    let mut last = start.clone();
    for _ in 0..10 {
        last = t2.step_batch(batch).unwrap();
    }
    assert!(
        supervised(&last) < supervised(&start),
        "{} → {}",
        supervised(&start),
        supervised(&last)
    );

    // The weight at 0 ignores the pairs; pairs of another shape are an input error.
    let mut off = cfg.clone();
    off.loss.synthetic = 0.0;
    let r = Trainer::new(&off).unwrap().step_batch(batch).unwrap();
    assert!(r.loss.supervised_clean.is_none() && r.loss.supervised_rain.is_none());
    let short = s_rain.narrow(0, 0, 1);
    let err = t
        .step_batch(Batch::Anlcl {
            rainy: &rainy,
            clean: &clean,
            synthetic: Some(SyntheticBatch {
                rainy: &s_rainy,
                clean: &s_clean,
                rain: &short,
            }),
        })
        .unwrap_err();
    assert!(err.to_string().contains("synthetic"), "{err}");
}

/// `optimiser.generator_warmup`: for the first steps G_B and G_R stay exactly as they were while
/// the discriminator and the heads learn; after it the generators train again.
#[test]
fn generator_warmup_holds_the_generators_only() {
    let mut cfg = tiny_config(small_resnet9());
    cfg.optimiser.generator_warmup = 2;
    let mut t = Trainer::new(&cfg).unwrap();
    let (rainy, clean) = anlcl_batch(6, 2, 64);
    let moved = |a: &[(String, tch::Tensor)], b: &[(String, tch::Tensor)], prefix: &str| {
        a.iter()
            .zip(b)
            .filter(|(x, _)| x.0.starts_with(prefix))
            .map(|(x, y)| (&x.1 - &y.1).abs().max().double_value(&[]))
            .fold(0.0, f64::max)
    };
    let before = parameters(&t);
    for _ in 0..2 {
        let r = t.step_anlcl(&rainy, &clean).unwrap();
        assert!(r.generator_total.is_finite());
    }
    let held = parameters(&t);
    assert_eq!(moved(&before, &held, "gen_b."), 0.0);
    assert_eq!(moved(&before, &held, "gen_r."), 0.0);
    assert!(moved(&before, &held, "disc.") > 0.0);
    assert!(moved(&before, &held, "heads_layer.") > 0.0);
    assert!(moved(&before, &held, "heads_loc.") > 0.0);
    t.step_anlcl(&rainy, &clean).unwrap();
    let after = parameters(&t);
    assert!(moved(&held, &after, "gen_b.") > 0.0);
    assert!(moved(&held, &after, "gen_r.") > 0.0);
}

/// 30 steps lower the loss; saving at step 15, loading and continuing gives the parameters of
/// the uninterrupted run.
#[test]
fn thirty_steps_lower_the_loss_and_resume_exactly() {
    let cfg = tiny_config(small_resnet9());
    let batches: Vec<_> = (0..3).map(|i| anlcl_batch(100 + i, 2, 64)).collect();
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("step15.safetensors");

    let mut a = Trainer::new(&cfg).unwrap();
    let mut totals = Vec::new();
    for step in 0..30 {
        let (rainy, clean) = &batches[step % 3];
        let r = a.step_anlcl(rainy, clean).unwrap();
        assert_eq!(r.step, step as u64 + 1);
        for v in [
            r.loss.consistency,
            r.loss.sparsity,
            r.loss.adversarial,
            r.loss.layer_contrastive,
            r.loss.asymmetric,
            r.loss.location,
        ] {
            assert!(v.is_some_and(f64::is_finite), "step {step}: {:?}", r.loss);
        }
        assert!(r.time.total > 0.0 && r.time.nonlocal > 0.0 && r.time.backward > 0.0);
        totals.push(r.generator_total);
        if step == 14 {
            a.save(&ckpt).unwrap();
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (early, late) = (mean(&totals[..3]), mean(&totals[27..]));
    assert!(late < early, "total loss did not fall: {totals:?}");

    let mut b = Trainer::load(&ckpt, &cfg).unwrap();
    assert_eq!(b.step_count(), 15);
    for step in 15..30 {
        let (rainy, clean) = &batches[step % 3];
        b.step_anlcl(rainy, clean).unwrap();
    }
    let (pa, pb) = (parameters(&a), parameters(&b));
    assert_eq!(pa.len(), pb.len());
    let mut worst = (0.0, String::new());
    for ((na, ta), (nb, tb)) in pa.iter().zip(&pb) {
        assert_eq!(na, nb);
        let d = (ta - tb).abs().max().double_value(&[]);
        if d > worst.0 {
            worst = (d, na.clone());
        }
    }
    eprintln!(
        "total loss {early:.4} → {late:.4}; resumed run differs by at most {:e}",
        worst.0
    );
    eprintln!("totals: {totals:.3?}");
    assert!(
        worst.0 <= 1e-6,
        "resumed run differs by {} at {}",
        worst.0,
        worst.1
    );
    // The parameters did move (the comparison is not vacuous). The default location source
    // makes no frozen stage-start copy of G_B (only `frozen_stage1` does; the trainer's unit
    // tests check that it holds still).
    let fresh = parameters(&Trainer::new(&cfg).unwrap());
    let frozen = format!("{STAGE_START_NAME}.");
    let (held, trained): (Vec<_>, Vec<_>) = pa
        .iter()
        .zip(&fresh)
        .partition(|((n, _), _)| n.starts_with(&frozen));
    assert!(held.is_empty(), "{} stage-start tensors", held.len());
    let moved = trained
        .iter()
        .filter(|((_, x), (_, y))| !x.equal(y))
        .count();
    assert!(
        moved * 10 > trained.len() * 9,
        "{moved} of {} moved",
        trained.len()
    );
    assert!(a.networks()[0].1.parameter_count() > 0);
}

/// Crops too small for the sampler's patch counts fail before anything is updated.
#[test]
fn inputs_the_sampler_cannot_serve_fail_before_any_update() {
    let mut cfg = tiny_config(small_resnet9());
    cfg.sampler.rain_negatives = 256;
    let mut t = Trainer::new(&cfg).unwrap();
    let before = parameters(&t);
    let (rainy, clean) = anlcl_batch(4, 2, 24);
    let err = t.step_anlcl(&rainy, &clean).unwrap_err();
    assert!(err.to_string().contains("only 81"), "{err}");
    assert_eq!(t.step_count(), 0);
    for ((n, a), (_, b)) in before.iter().zip(&parameters(&t)) {
        assert!(a.equal(b), "{n} changed");
    }
    // Wrong shapes are input errors too.
    let err = t.step_anlcl(&rainy.narrow(1, 0, 1), &clean).unwrap_err();
    assert!(err.to_string().contains("channels"), "{err}");
}
