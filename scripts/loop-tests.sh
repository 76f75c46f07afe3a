#!/usr/bin/env bash
# Run test suites many times in a row and count the passes, to find flaky
# tests before CI does. A failing run's output is kept.
#
#   scripts/loop-tests.sh N SUITE [SUITE...]      e.g. scripts/loop-tests.sh 20 reliability_db_faults
#
# Each SUITE is a file in tests/ (cargo test --test SUITE). Builds once first.
# Prints one line per run and a summary: "SUITE: P passed, F failed of N".
set -uo pipefail
cd "$(dirname "$0")/.."
n=${1:?usage: scripts/loop-tests.sh N SUITE [SUITE...]}
shift
[ $# -gt 0 ] || { echo "usage: scripts/loop-tests.sh N SUITE [SUITE...]" >&2; exit 2; }
logs=$(mktemp -d -t picloud-loop-XXXXXX)
args=()
for suite in "$@"; do args+=(--test "$suite"); done
cargo test -p picloud-tests "${args[@]}" --no-run -q || exit 1
status=0
for suite in "$@"; do
    pass=0 fail=0
    for i in $(seq 1 "$n"); do
        log="$logs/$suite-$i.log"
        start=$(date +%s)
        if cargo test -q -p picloud-tests --test "$suite" >"$log" 2>&1; then
            pass=$((pass + 1)); verdict=ok; rm -f "$log"
        else
            fail=$((fail + 1)); verdict="FAILED (output: $log)"; status=1
        fi
        echo "$suite run $i/$n: $verdict in $(( $(date +%s) - start )) s"
    done
    echo "$suite: $pass passed, $fail failed of $n"
done
exit $status
