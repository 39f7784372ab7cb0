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
./scripts/check-leaks.sh --since "$baseline"
