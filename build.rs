//! Build script of the `derain` crate. With the `train` feature (tch / libtorch) it makes the
//! test, bench and command-line binaries find libtorch at run time without `LD_LIBRARY_PATH`,
//! and keeps CUDA visible to tch on GPU builds of libtorch (README, "On an NVIDIA GPU"); the
//! library and the plugin never link libtorch. (derain-core's build script embeds the shipped
//! rain detector.)

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    if std::env::var_os("CARGO_FEATURE_TRAIN").is_none() {
        return;
    }
    let Some(libtorch) = std::env::var_os("LIBTORCH") else {
        // torch-sys finds libtorch some other way (e.g. a Python install); it sets no rpath then,
        // so binaries need LD_LIBRARY_PATH.
        println!("cargo:warning=LIBTORCH is not set: binaries will need LD_LIBRARY_PATH to run");
        return;
    };
    // An absolute, symlink-free path: the rpath must hold wherever the binary is started from,
    // and libtorch's own $ORIGIN-relative rpaths (to the nvidia-* wheels) resolve from it.
    let root = PathBuf::from(&libtorch);
    let root = root.canonicalize().unwrap_or(root);
    let lib = root.join("lib");
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    // rustc links with --as-needed, which drops libtorch_cuda (nothing references it directly)
    // and with it tch's CUDA device; a GPU build of libtorch needs it kept.
    if lib.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-search=native={}", lib.display());
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch_cuda");
        println!("cargo:rustc-link-arg=-ltorch");
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
    }
}
