#!/usr/bin/env bash
# Build the example scripts and test fixtures for wasm32-wasip2 by hand, the
# same way tests/build.rs does (the workspace's small `guest` profile), into
# target/guests/wasm32-wasip2/guest (or $CARGO_TARGET_DIR/guests/...), where
# `cargo test`, the demo and the benchmarks look for them. Installs the
# wasm32-wasip2 target first when it is missing and rustup is there.
set -euo pipefail
cd "$(dirname "$0")/.."
target=wasm32-wasip2
if ! ls "$(rustc --print target-libdir --target "$target" 2>/dev/null)"/libstd-* >/dev/null 2>&1; then
    if ! command -v rustup >/dev/null; then
        echo "error: the $target target is not installed and rustup is not on the PATH: run \`rustup target add $target\`" >&2
        exit 1
    fi
    echo "the $target target is missing; installing it: rustup target add $target" >&2
    rustup target add "$target" >/dev/null
fi
packages=()
for manifest in examples/*/Cargo.toml tests/fixtures/*/Cargo.toml; do
    packages+=(-p "$(sed -n 's/^name = "\(.*\)"/\1/p' "$manifest" | head -1)")
done
target_dir="${CARGO_TARGET_DIR:-target}/guests"
cargo build --profile guest --target "$target" --target-dir "$target_dir" "${packages[@]}"
ls -l "$target_dir/$target"/guest/*.wasm
