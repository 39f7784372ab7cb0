#!/bin/sh
# The README's second command: the whole test suite, then the check that nothing leaked.
set -eu
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "run as root (the tests create real containers)" >&2; exit 1; }
./scripts/deps.sh
baseline=$(mktemp /tmp/yun-leak-baseline.XXXXXX)
trap 'rm -f "$baseline"' EXIT
./scripts/check-leaks.sh --baseline "$baseline"
cargo test --workspace --locked
# Fuzz smoke runs: every libFuzzer target for 10 s from its committed corpus (the corpora are
# also replayed by plain tests above).
./scripts/fuzz.sh 10
./scripts/check-leaks.sh --since "$baseline"
