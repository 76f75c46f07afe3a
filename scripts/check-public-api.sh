#!/usr/bin/env bash
# Compare the public API of the picloud-host library with the committed
# listing host/public-api.txt (see scripts/public-api.py), so that a change
# to the public surface is always a deliberate, reviewed change to that file.
# `--bless` rewrites the listing after such a change.
#
# rustdoc's JSON output is unstable; RUSTC_BOOTSTRAP=1 enables it on the
# pinned stable toolchain, whose JSON format the listing script reads. It
# builds in a target directory of its own: build scripts that probe for
# nightly features (io-extras) find them under RUSTC_BOOTSTRAP, and their
# output must never reach the ordinary stable builds.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}/public-api"
CARGO_TARGET_DIR="$target" RUSTC_BOOTSTRAP=1 \
    cargo rustdoc -q -p picloud-host --lib -- -Z unstable-options --output-format json
python3 scripts/public-api.py "$target/doc/picloud_host.json" > "$target/public-api.txt"
if [ "${1:-}" = --bless ]; then
    cp "$target/public-api.txt" host/public-api.txt
    echo "host/public-api.txt rewritten: commit it with the change"
    exit 0
fi
if ! diff -u host/public-api.txt "$target/public-api.txt"; then
    echo "error: the public API of picloud-host changed (diff above): if that is intended, run scripts/check-public-api.sh --bless and commit host/public-api.txt" >&2
    exit 1
fi
echo "public API unchanged ($(wc -l < host/public-api.txt) items)"
