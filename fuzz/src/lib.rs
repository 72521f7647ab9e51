//! The fuzz targets' bodies (see `targets.rs`), as a library for `fuzz_targets/*.rs`.

pub mod targets;
