#!/usr/bin/env bash
# Build the example scripts and test fixtures for wasm32-wasip2 by hand, into
# target/guests/wasm32-wasip2/release (where `cargo test`, the demo and the
# benchmarks look for them).
set -euo pipefail
cd "$(dirname "$0")/.."
packages=()
for manifest in examples/*/Cargo.toml tests/fixtures/*/Cargo.toml; do
    packages+=(-p "$(sed -n 's/^name = "\(.*\)"/\1/p' "$manifest" | head -1)")
done
CARGO_PROFILE_RELEASE_DEBUG=false CARGO_PROFILE_RELEASE_STRIP=debuginfo \
    cargo build --release --target wasm32-wasip2 --target-dir target/guests "${packages[@]}"
ls -l target/guests/wasm32-wasip2/release/*.wasm
