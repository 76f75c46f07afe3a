//! Finding the example and fixture components built from this repository.
//!
//! Rule: look where the test build puts them (`target/guests`), next to this
//! executable or under the current directory; if they are not there and this
//! is a checkout of the repository, build them with cargo, once, with the
//! workspace's small `guest` profile, installing the wasm32-wasip2 target
//! first if it is missing.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Result, bail};

use crate::wasm_target::{self, PROFILE, TARGET};

fn subdir() -> PathBuf {
    Path::new(TARGET).join(PROFILE)
}

fn candidates() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(dir) = std::env::var_os("PICLOUD_GUESTS_DIR") {
        dirs.push(PathBuf::from(dir));
    }
    if let Ok(exe) = std::env::current_exe()
        && let Some(target) = exe.parent().and_then(Path::parent)
    {
        dirs.push(target.join("guests").join(subdir()));
    }
    dirs.push(PathBuf::from("target/guests").join(subdir()));
    dirs
}

fn file_name(package: &str) -> String {
    format!("{}.wasm", package.replace('-', "_"))
}

fn lookup(package: &str) -> Option<PathBuf> {
    candidates()
        .into_iter()
        .map(|d| d.join(file_name(package)))
        .find(|p| p.is_file())
}

/// The built component of each package, building them if needed.
pub fn find(packages: &[&str]) -> Result<Vec<PathBuf>> {
    if let Some(found) = packages
        .iter()
        .map(|p| lookup(p))
        .collect::<Option<Vec<_>>>()
    {
        return Ok(found);
    }
    if !Path::new("Cargo.toml").is_file() || !Path::new("examples").is_dir() {
        bail!(
            "the example components are not built: run `cargo test --no-run` (or scripts/build-guests.sh) in the repository, or set PICLOUD_GUESTS_DIR"
        );
    }
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    wasm_target::ensure(Path::new(&rustc), Path::new("."), |line| {
        eprintln!("{line}")
    })
    .map_err(anyhow::Error::msg)?;
    eprintln!("building the guest components for {TARGET} (once)...");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args([
        "build",
        "--profile",
        PROFILE,
        "--target",
        TARGET,
        "--target-dir",
        "target/guests",
    ]);
    for p in packages {
        cmd.args(["-p", p]);
    }
    let status = cmd.status()?;
    if !status.success() {
        bail!("building the guest components for {TARGET} failed (cargo's output is above)");
    }
    packages
        .iter()
        .map(|p| lookup(p).ok_or_else(|| anyhow::anyhow!("built, but {} is missing", file_name(p))))
        .collect()
}
