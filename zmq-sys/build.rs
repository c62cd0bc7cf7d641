//! Builds libzmq (the source the `zeromq-src` crate ships) with CURVE, on the
//! libsodium that the `libsodium-sys-stable` dependency has just built.
//!
//! Why this crate exists: crates.io's zmq-sys 0.12 calls
//! `zeromq_src::Build::new().with_libsodium(None)` with no switch to change
//! it, so its libzmq has no CURVE (`zmq::has("curve")` is false).

use std::env;
use std::path::PathBuf;

/// A path that libsodium-sys-stable's build script exports as `cargo:NAME=...`
/// (Cargo hands it to this script as `DEP_SODIUM_NAME`).
fn sodium_path(name: &str) -> PathBuf {
    let var = format!("DEP_SODIUM_{name}");
    println!("cargo:rerun-if-env-changed={var}");
    match env::var_os(&var) {
        Some(path) => PathBuf::from(path),
        None => panic!(
            "{var} is not set: libsodium-sys-stable exports its include and lib directories only when it builds \
             libsodium itself (or finds it with pkg-config); unset SODIUM_LIB_DIR, or use SODIUM_USE_PKG_CONFIG"
        ),
    }
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let include_dir = sodium_path("INCLUDE");
    let lib_dir = sodium_path("LIB");
    assert!(include_dir.join("sodium.h").is_file(), "no sodium.h in {} (DEP_SODIUM_INCLUDE)", include_dir.display());

    // libzmq's own warnings are not this project's to fix, and Cargo shows a
    // workspace member's build-script warnings on every build: -w, through the
    // CXXFLAGS that the cc crate (in zeromq-src) adds to its command lines.
    let mut cxxflags = env::var("CXXFLAGS").unwrap_or_default();
    cxxflags.push_str(" -w");
    env::set_var("CXXFLAGS", cxxflags.trim_start());

    // with_libsodium(Some(..)) defines ZMQ_HAVE_CURVE and ZMQ_USE_LIBSODIUM,
    // compiles against libsodium's headers and links libsodium.a after libzmq.
    zeromq_src::Build::new().with_libsodium(Some(zeromq_src::LibLocation::new(lib_dir, include_dir))).build();
}
