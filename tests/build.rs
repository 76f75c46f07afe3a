//! Builds every guest crate (examples/* and tests/fixtures/*) for
//! wasm32-wasip2, so `cargo test` on a fresh machine needs no manual step,
//! and tells the tests where each component is (`PICLOUD_GUEST_<NAME>`).
//!
//! The nested cargo uses its own target directory (`target/guests`), so it
//! never waits on the build lock of the cargo that runs this script; the demo
//! and the benchmarks find the components there too.

use std::path::{Path, PathBuf};
use std::process::Command;

fn guest_packages(root: &Path) -> Vec<String> {
    let mut names = Vec::new();
    for dir in ["examples", "tests/fixtures"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        for entry in entries.flatten() {
            let manifest = entry.path().join("Cargo.toml");
            let Ok(text) = std::fs::read_to_string(&manifest) else {
                continue;
            };
            let name = text.lines().find_map(|l| {
                l.trim()
                    .strip_prefix("name = \"")
                    .and_then(|r| r.strip_suffix('"'))
            });
            if let Some(name) = name {
                names.push(name.to_owned());
            }
        }
    }
    names.sort();
    names
}

fn main() {
    let manifest_dir =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let root = manifest_dir
        .parent()
        .expect("tests/ lives in the workspace root")
        .to_path_buf();
    for watched in [
        "sdk",
        "wit",
        "examples",
        "tests/fixtures",
        "Cargo.toml",
        "Cargo.lock",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("guests");
    let packages = guest_packages(&root);
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());

    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--target-dir",
        ])
        .arg(&target_dir)
        // Debug info would triple the components' size for nothing.
        .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
        .env("CARGO_PROFILE_RELEASE_STRIP", "debuginfo")
        // Do not inherit the outer build's flags and wrappers.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTC_WORKSPACE_WRAPPER");
    for p in &packages {
        cmd.args(["-p", p]);
    }
    let out = cmd
        .output()
        .expect("running cargo to build the guest components");
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let hint =
            if stderr.contains("wasm32-wasip2") && stderr.contains("target may not be installed") {
                "\nhint: run `rustup target add wasm32-wasip2`"
            } else {
                ""
            };
        panic!("building the guest components for wasm32-wasip2 failed:\n{stderr}{hint}");
    }
    let out_dir = target_dir.join("wasm32-wasip2").join("release");
    for p in &packages {
        let file = out_dir.join(format!("{}.wasm", p.replace('-', "_")));
        assert!(file.is_file(), "built, but {} is missing", file.display());
        println!(
            "cargo:rustc-env=PICLOUD_GUEST_{}={}",
            p.replace('-', "_").to_uppercase(),
            file.display()
        );
    }
}
