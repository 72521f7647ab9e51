//! Checkpoints: everything a run needs to continue exactly — every network (key copies
//! included), both optimisers' moments and step counts, the step count and the sampling RNG —
//! in one safetensors file, with the run's state as JSON in a `u8` tensor named `__state__`
//! (so the file stays readable by any safetensors reader).
//!
//! Written atomically: a temporary file in the same folder, fsync, rename over the old one,
//! fsync of the folder. Whatever fails, the previous checkpoint is left as it was.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::{Device, Tensor};

use super::config::TrainConfig;
use super::trainer::{STAGE_START_NAME, TrainError, Trainer};

/// The `format` string in every checkpoint's state.
pub const FORMAT: &str = "derain-train-checkpoint";
/// The checkpoint layout version this code writes and reads.
pub const VERSION: u32 = 1;
/// Name of the tensor holding the JSON state.
const STATE_KEY: &str = "__state__";

/// What went wrong saving or loading a checkpoint; every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("cannot write checkpoint '{path}': {reason}; the previous checkpoint is unchanged")]
    Write { path: PathBuf, reason: String },
    #[error("cannot read checkpoint '{path}': {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("'{path}' is not a derain training checkpoint ({reason})")]
    NotACheckpoint { path: PathBuf, reason: String },
    #[error(
        "checkpoint '{path}' holds {checkpoint}, but the config asks for {config}; load it with \
         the config it was trained with, or start a new run"
    )]
    Architecture {
        path: PathBuf,
        checkpoint: String,
        config: String,
    },
    #[error("checkpoint '{path}' is damaged: {reason}")]
    Damaged { path: PathBuf, reason: String },
    #[error("cannot build the trainer for checkpoint '{path}': {source}")]
    Trainer { path: PathBuf, source: TrainError },
}

/// The discriminator and layer heads a config trains, as compared by
/// [`Trainer::load_discriminator`].
fn discriminator_architecture(config: &TrainConfig) -> String {
    let d = &config.discriminator;
    format!(
        "discriminator patchgan(base={}, layers={}), heads mlp(units={})",
        d.base, d.layers, config.heads.units
    )
}

/// The architecture a config trains, as compared when loading: what decides the parameters.
pub fn architecture(config: &TrainConfig) -> String {
    let d = &config.discriminator;
    format!(
        "generators {}, discriminator patchgan(base={}, layers={}), heads mlp(units={})",
        config.generator.describe(),
        d.base,
        d.layers,
        config.heads.units
    )
}

#[derive(Debug, Serialize, Deserialize)]
struct RngState {
    /// The 32-byte ChaCha key, hex.
    seed: String,
    stream: u64,
    /// u128, as a decimal string (JSON numbers stop at 2⁶⁴).
    word_pos: String,
}

impl RngState {
    fn of(rng: &ChaCha8Rng) -> Self {
        Self {
            seed: rng.get_seed().iter().map(|b| format!("{b:02x}")).collect(),
            stream: rng.get_stream(),
            word_pos: rng.get_word_pos().to_string(),
        }
    }

    fn restore(&self) -> Option<ChaCha8Rng> {
        let mut seed = [0u8; 32];
        if self.seed.len() != 64 {
            return None;
        }
        for (i, b) in seed.iter_mut().enumerate() {
            *b = u8::from_str_radix(self.seed.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        let mut rng = ChaCha8Rng::from_seed(seed);
        rng.set_stream(self.stream);
        rng.set_word_pos(self.word_pos.parse().ok()?);
        Some(rng)
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct State {
    format: String,
    version: u32,
    architecture: String,
    step: u64,
    rng: RngState,
    /// Adam's per-parameter step counts, keyed `g/<param>` and `d/<param>`.
    adam_steps: BTreeMap<String, u64>,
    /// The config the run was saved with, for people; loading uses the caller's.
    config: TrainConfig,
}

/// What a checkpoint says about itself ([`read_info`]).
#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointInfo {
    /// As [`architecture`] describes it.
    pub architecture: String,
    /// Steps completed.
    pub step: u64,
    /// The config the run was saved with (e.g. to resume without a config file).
    pub config: TrainConfig,
}

/// Reads a checkpoint's description without building its networks.
pub fn read_info(path: &Path) -> Result<CheckpointInfo, CheckpointError> {
    let (_, state) = read_state(path)?;
    Ok(CheckpointInfo {
        architecture: state.architecture,
        step: state.step,
        config: state.config,
    })
}

/// The tensors (state removed) and the parsed state of the checkpoint at `path`.
fn read_state(path: &Path) -> Result<(HashMap<String, Tensor>, State), CheckpointError> {
    let p = || path.to_owned();
    if !path.is_file() {
        return Err(CheckpointError::Read {
            path: p(),
            reason: "no such file".into(),
        });
    }
    let not_ours = |reason: String| CheckpointError::NotACheckpoint { path: p(), reason };
    let tensors = Tensor::read_safetensors(path).map_err(|e| not_ours(e.to_string()))?;
    let mut map: HashMap<String, Tensor> = tensors.into_iter().collect();
    let state_bytes = map
        .remove(STATE_KEY)
        .and_then(|t| Vec::<u8>::try_from(&t).ok())
        .ok_or_else(|| not_ours("no __state__ tensor".into()))?;
    let value: serde_json::Value = serde_json::from_slice(&state_bytes)
        .map_err(|_| not_ours("__state__ is not JSON".into()))?;
    if value["format"] != FORMAT {
        return Err(not_ours("__state__ has another format".into()));
    }
    if value["version"] != VERSION {
        return Err(CheckpointError::Damaged {
            path: p(),
            reason: format!(
                "layout version {} (this build reads {VERSION})",
                value["version"]
            ),
        });
    }
    let state: State = serde_json::from_value(value).map_err(|e| CheckpointError::Damaged {
        path: p(),
        reason: format!("state: {e}"),
    })?;
    Ok((map, state))
}

fn cpu(t: &Tensor) -> Tensor {
    t.detach().to_device(Device::Cpu).contiguous()
}

impl Trainer {
    /// Writes a checkpoint to `path` atomically (see the module documentation).
    pub fn save(&self, path: &Path) -> Result<(), CheckpointError> {
        let fail = |reason: String| CheckpointError::Write {
            path: path.to_owned(),
            reason,
        };
        let mut named: Vec<(String, Tensor)> = Vec::new();
        for (prefix, net) in self.networks() {
            for (name, t) in net.var_store().variables() {
                named.push((format!("{prefix}.{name}"), cpu(&t)));
            }
        }
        let mut adam_steps = BTreeMap::new();
        for (opt_name, opt) in [("g", &self.opt_g), ("d", &self.opt_d)] {
            for s in opt.state() {
                named.push((format!("adam.{opt_name}.m.{}", s.name), cpu(s.m)));
                named.push((format!("adam.{opt_name}.v.{}", s.name), cpu(s.v)));
                adam_steps.insert(format!("{opt_name}/{}", s.name), s.step);
            }
        }
        let state = State {
            format: FORMAT.to_owned(),
            version: VERSION,
            architecture: architecture(&self.config),
            step: self.step,
            rng: RngState::of(&self.rng),
            adam_steps,
            config: self.config.clone(),
        };
        let json = serde_json::to_vec(&state).map_err(|e| fail(e.to_string()))?;
        named.push((STATE_KEY.to_owned(), Tensor::from_slice(&json)));

        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let tmp = tempfile::Builder::new()
            .prefix(".checkpoint-")
            .suffix(".tmp")
            .tempfile_in(dir)
            .map_err(|e| {
                fail(format!(
                    "cannot create a temporary file in {}: {e}",
                    dir.display()
                ))
            })?;
        Tensor::write_safetensors(&named, tmp.path()).map_err(|e| fail(e.to_string()))?;
        // The writer reopened the path: same inode, so this flushes what it wrote.
        tmp.as_file().sync_all().map_err(|e| fail(e.to_string()))?;
        tmp.persist(path).map_err(|e| fail(e.error.to_string()))?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| fail(format!("cannot sync {}: {e}", dir.display())))?;
        Ok(())
    }

    /// Reads a checkpoint written by [`Trainer::save`] for `config`, which must describe the
    /// same architecture ([`architecture`]); the other settings (loss weights, schedule, sampler)
    /// are taken from `config`.
    pub fn load(path: &Path, config: &TrainConfig) -> Result<Trainer, CheckpointError> {
        let p = || path.to_owned();
        let damaged = |reason: String| CheckpointError::Damaged { path: p(), reason };
        let (map, state) = read_state(path)?;
        let want = architecture(config);
        if state.architecture != want {
            return Err(CheckpointError::Architecture {
                path: p(),
                checkpoint: state.architecture,
                config: want,
            });
        }

        let mut trainer = Trainer::new(config)
            .map_err(|source| CheckpointError::Trainer { path: p(), source })?;
        let take = |name: &str, like: &Tensor| -> Result<Tensor, CheckpointError> {
            let t = map
                .get(name)
                .ok_or_else(|| damaged(format!("tensor '{name}' is missing")))?;
            if t.size() != like.size() || t.kind() != like.kind() {
                return Err(damaged(format!(
                    "tensor '{name}' is {:?} {:?}, expected {:?} {:?}",
                    t.kind(),
                    t.size(),
                    like.kind(),
                    like.size()
                )));
            }
            Ok(t.shallow_clone())
        };
        {
            let _guard = tch::no_grad_guard();
            for (prefix, net) in trainer.networks() {
                for (name, mut t) in net.var_store().variables() {
                    let mut key = format!("{prefix}.{name}");
                    if prefix == STAGE_START_NAME && !map.contains_key(&key) {
                        // Written before the frozen stage-start copy existed, or by a run
                        // whose location source never made one: a stage started from it
                        // starts from its G_B.
                        key = format!("gen_b.{name}");
                    }
                    t.copy_(&take(&key, &t)?);
                }
            }
        }
        for (opt_name, opt) in [("g", &mut trainer.opt_g), ("d", &mut trainer.opt_d)] {
            let slots: Vec<(String, Tensor)> = opt
                .state()
                .map(|s| (s.name.to_owned(), s.m.shallow_clone()))
                .collect();
            for (name, like) in slots {
                let m = take(&format!("adam.{opt_name}.m.{name}"), &like)?;
                let v = take(&format!("adam.{opt_name}.v.{name}"), &like)?;
                let step = *state
                    .adam_steps
                    .get(&format!("{opt_name}/{name}"))
                    .ok_or_else(|| damaged(format!("no Adam step count for '{name}'")))?;
                opt.restore(&name, &m, &v, step);
            }
        }
        trainer.step = state.step;
        trainer.rng = state
            .rng
            .restore()
            .ok_or_else(|| damaged("unreadable RNG state".into()))?;
        Ok(trainer)
    }
}

/// The networks [`Trainer::load_discriminator`] takes from another run: D, the layer heads on
/// its features, and their momentum copies.
const DISCRIMINATOR_NETWORKS: [&str; 4] = ["disc", "heads_layer", "key_disc", "key_heads_layer"];

impl Trainer {
    /// Replaces the discriminator, the layer heads on its features and their momentum copies by
    /// those of the checkpoint at `path` (a file, or a run directory holding
    /// `checkpoint.safetensors`), e.g. a stage 1 trained with the adversarial term:
    /// `run.init_discriminator`. D's optimiser starts afresh; nothing else changes. The
    /// checkpoint's discriminator and heads must have this config's sizes.
    pub fn load_discriminator(&mut self, path: &Path) -> Result<(), CheckpointError> {
        let file = if path.is_dir() {
            path.join(super::run::CHECKPOINT_FILE)
        } else {
            path.to_owned()
        };
        let p = || file.clone();
        let (map, state) = read_state(&file)?;
        let (got, want) = (
            discriminator_architecture(&state.config),
            discriminator_architecture(&self.config),
        );
        if got != want {
            return Err(CheckpointError::Architecture {
                path: p(),
                checkpoint: got,
                config: want,
            });
        }
        let _guard = tch::no_grad_guard();
        for (prefix, net) in self.networks() {
            if !DISCRIMINATOR_NETWORKS.contains(&prefix) {
                continue;
            }
            for (name, mut t) in net.var_store().variables() {
                let key = format!("{prefix}.{name}");
                let w = map.get(&key).ok_or_else(|| CheckpointError::Damaged {
                    path: p(),
                    reason: format!("tensor '{key}' is missing"),
                })?;
                if w.size() != t.size() || w.kind() != t.kind() {
                    return Err(CheckpointError::Damaged {
                        path: p(),
                        reason: format!(
                            "tensor '{key}' is {:?} {:?}, expected {:?} {:?}",
                            w.kind(),
                            w.size(),
                            t.kind(),
                            t.size()
                        ),
                    });
                }
                t.copy_(&w.to_device(t.device()));
            }
        }
        self.opt_d.reset();
        Ok(())
    }
}
