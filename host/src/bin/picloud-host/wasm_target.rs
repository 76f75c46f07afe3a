//! The `wasm32-wasip2` target that guest components are built for.
//!
//! Rule: whatever builds guests (the demo, the benchmarks, the test build)
//! first makes sure the target's standard library is installed, adding it
//! with `rustup target add` when rustup is on the PATH (one line says so),
//! and stopping with a one-line error that gives the command when it is
//! not. A `rust-toolchain.toml` that lists the target is not enough: rustup
//! adds no targets to a toolchain that is a link to a preinstalled one.
//!
//! This file is shared by path with `tests/build.rs`, so it uses `std` only.

use std::path::Path;
use std::process::Command;

/// The target guest components are built for.
pub const TARGET: &str = "wasm32-wasip2";

/// The Cargo profile this repository's guests are built with (see the
/// workspace manifest): small components.
pub const PROFILE: &str = "guest";

/// Whether `rustc` (run in `dir`, so its `rust-toolchain.toml` applies) has
/// the target's standard library.
fn installed(rustc: &Path, dir: &Path) -> bool {
    let Ok(out) = Command::new(rustc)
        .args(["--print", "target-libdir", "--target", TARGET])
        .current_dir(dir)
        .output()
    else {
        return false;
    };
    let libdir = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    out.status.success()
        && std::fs::read_dir(&libdir).is_ok_and(|entries| {
            entries
                .flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with("libstd-"))
        })
}

/// Make sure `rustc` can build for [`TARGET`] in `dir`, installing the
/// target with rustup if needed. `say` prints the one line that tells the
/// user it is being installed. The error is one line with the fix.
pub fn ensure(rustc: &Path, dir: &Path, say: impl FnOnce(&str)) -> Result<(), String> {
    if installed(rustc, dir) {
        return Ok(());
    }
    let fix = format!("rustup target add {TARGET}");
    let rustup = Command::new("rustup").arg("--version").output();
    if !rustup.is_ok_and(|o| o.status.success()) {
        return Err(format!(
            "the {TARGET} target is not installed and rustup is not on the PATH: run `{fix}` \
             (or install the Rust standard library for {TARGET})"
        ));
    }
    say(&format!(
        "the {TARGET} target is missing; installing it: {fix}"
    ));
    let out = Command::new("rustup")
        .args(["target", "add", TARGET])
        .current_dir(dir)
        .output()
        .map_err(|e| format!("could not run `{fix}`: {e}"))?;
    if !out.status.success() || !installed(rustc, dir) {
        let why = String::from_utf8_lossy(&out.stderr);
        let why = why
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        return Err(format!(
            "`{fix}` did not install the {TARGET} target ({}): run it yourself and try again",
            why.trim()
        ));
    }
    Ok(())
}
