//! Builds every guest crate (`examples/*` and `tests/fixtures/*`) for
//! wasm32-wasip2 with the workspace's small `guest` profile, so `cargo test` on a fresh machine needs no
//! manual step, and tells the tests where each component is: one
//! `PICLOUD_GUEST_<UPPER_SNAKE_NAME>` variable per package, plus
//! `PICLOUD_GUESTS_DIR`.
//!
//! Rule: the nested cargo uses its own target directory (`target/guests`, or
//! `$CARGO_TARGET_DIR/guests`), so it never waits on the build lock of the
//! cargo that runs this script; the demo and the benchmarks find the
//! components there too. It runs again only when the SDK, the WIT, a guest
//! or the workspace manifest/lock changes. A missing wasm32-wasip2 target is
//! installed first, as the demo does (`wasm_target`, shared by path).
//!
//! The Python scripts (`examples/python/*/app.py`, `tests/python/*/app.py`)
//! are built by `sdk-python/picloud-py` with the pinned `componentize-py`
//! (`sdk-python/requirements-build.txt`): the one on the PATH if it is that
//! version, else one this script installs from PyPI into
//! `target/guests/python-tools`. When that fails, the Python tests fail
//! with the reason (`guests::python`); the rest still build and run.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

#[path = "../host/src/bin/picloud-host/wasm_target.rs"]
mod wasm_target;

#[path = "build_python.rs"]
mod python;

use wasm_target::{PROFILE, TARGET};

const GUEST_DIRS: [&str; 2] = ["examples", "tests/fixtures"];

/// A guest crate: its package name and the folder it lives in.
struct Guest {
    package: String,
    dir: &'static str,
}

/// Every guest crate, sorted by folder and then package name.
fn guest_packages(root: &Path) -> Vec<Guest> {
    let mut guests = Vec::new();
    for dir in GUEST_DIRS {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        let mut found = Vec::new();
        for entry in entries.flatten() {
            let manifest = entry.path().join("Cargo.toml");
            let Ok(text) = std::fs::read_to_string(&manifest) else {
                continue; // not a crate (e.g. a folder of WAT files)
            };
            match package_name(&text) {
                Some(package) => found.push(package),
                None => panic!("{}: no [package] name", manifest.display()),
            }
        }
        found.sort();
        guests.extend(found.into_iter().map(|package| Guest { package, dir }));
    }
    guests
}

/// `name = "..."` of the `[package]` table of a manifest.
fn package_name(manifest: &str) -> Option<String> {
    let mut in_package = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_package = line == "[package]";
        } else if in_package && let Some(rest) = line.strip_prefix("name") {
            let value = rest.trim_start().strip_prefix('=')?.trim();
            return Some(value.trim_matches('"').to_owned());
        }
    }
    None
}

fn main() {
    let manifest_dir =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest_dir
        .parent()
        .expect("tests/ lives in the workspace root")
        .to_path_buf();
    for watched in [
        "sdk",
        "wit",
        "examples",
        "tests/fixtures",
        "tests/python",
        "sdk-python",
        "Cargo.toml",
        "Cargo.lock",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_DIR");
    println!("cargo:rerun-if-env-changed=COMPONENTIZE_PY");

    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(|dir| root.join(dir)) // a relative one is taken from the root
        .unwrap_or_else(|| root.join("target"))
        .join("guests");
    let packages = guest_packages(&root);
    assert!(
        !packages.is_empty(),
        "no guest crates under {}",
        root.display()
    );
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    if let Err(e) = wasm_target::ensure(Path::new(&rustc), &root, |line| {
        println!("cargo:warning={line}")
    }) {
        panic!("{e}");
    }

    let mut cmd = Command::new(&cargo);
    cmd.current_dir(&root)
        .args([
            "build",
            "--profile",
            PROFILE,
            "--target",
            TARGET,
            "--target-dir",
        ])
        .arg(&target_dir)
        // Do not inherit the outer build's flags and wrappers (coverage,
        // clippy-driver...): they are for the host target.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("CARGO_TARGET_DIR");
    for g in &packages {
        cmd.args(["-p", &g.package]);
    }
    let started = Instant::now();
    let out = cmd.output().unwrap_or_else(|e| {
        panic!(
            "could not run {} to build the guest components: {e}",
            Path::new(&cargo).display()
        )
    });
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let hint = if stderr.contains("may not be installed")
            || stderr.contains("can't find crate for `core`")
        {
            format!("\nhint: the {TARGET} target is missing: run `rustup target add {TARGET}`")
        } else {
            String::new()
        };
        panic!(
            "building the guest components ({}) for {TARGET} failed ({}):\n{stderr}{hint}",
            packages
                .iter()
                .map(|g| g.package.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            out.status
        );
    }

    let out_dir = target_dir.join(TARGET).join(PROFILE);
    // The lists in tests/src/guests.rs, generated so they always match the
    // folders: (package name, path), examples then fixtures.
    let mut lists = String::new();
    for (list, dirs) in [
        ("EXAMPLES", &["examples"][..]),
        ("FIXTURES", &["tests/fixtures"][..]),
        ("ALL", &GUEST_DIRS[..]),
    ] {
        lists.push_str(&format!("pub const {list}: &[(&str, &str)] = &[\n"));
        for g in packages.iter().filter(|g| dirs.contains(&g.dir)) {
            let file = out_dir.join(format!("{}.wasm", g.package.replace('-', "_")));
            lists.push_str(&format!(
                "    ({:?}, {:?}),\n",
                g.package,
                file.display().to_string()
            ));
        }
        lists.push_str("];\n");
    }
    for g in &packages {
        let file = out_dir.join(format!("{}.wasm", g.package.replace('-', "_")));
        assert!(
            file.is_file(),
            "cargo built {}, but {} is missing (is it a cdylib?)",
            g.package,
            file.display()
        );
        println!(
            "cargo:rustc-env=PICLOUD_GUEST_{}={}",
            g.package.replace('-', "_").to_uppercase(),
            file.display()
        );
    }
    println!("cargo:rustc-env=PICLOUD_GUESTS_DIR={}", out_dir.display());
    let generated = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"))
        .join("guest_lists.rs");
    std::fs::write(&generated, lists)
        .unwrap_or_else(|e| panic!("writing {}: {e}", generated.display()));
    let python = python::build(&root, &target_dir);
    let generated = generated.with_file_name("python_guests.rs");
    std::fs::write(&generated, python)
        .unwrap_or_else(|e| panic!("writing {}: {e}", generated.display()));
    // Visible with `cargo build -vv`.
    println!(
        "built {} guest components in {:.1?} into {}",
        packages.len(),
        started.elapsed(),
        out_dir.display()
    );
}
