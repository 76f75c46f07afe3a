#!/usr/bin/env bash
# Build the example scripts and test fixtures for wasm32-wasip2 by hand, the
# same way tests/build.rs does, into target/guests/wasm32-wasip2/release (or
# $CARGO_TARGET_DIR/guests/...), where `cargo test`, the demo and the
# benchmarks look for them. Needs the target once: rustup target add wasm32-wasip2
set -euo pipefail
cd "$(dirname "$0")/.."
packages=()
for manifest in examples/*/Cargo.toml tests/fixtures/*/Cargo.toml; do
    packages+=(-p "$(sed -n 's/^name = "\(.*\)"/\1/p' "$manifest" | head -1)")
done
target_dir="${CARGO_TARGET_DIR:-target}/guests"
CARGO_PROFILE_RELEASE_DEBUG=false CARGO_PROFILE_RELEASE_STRIP=debuginfo \
    cargo build --release --target wasm32-wasip2 --target-dir "$target_dir" "${packages[@]}"
ls -l "$target_dir"/wasm32-wasip2/release/*.wasm
