#!/bin/sh
# Builds the libFuzzer targets in fuzz/ on stable Rust and runs each for SECONDS (default 20)
# from its committed seed corpus; fails (non-zero) on the first crash, leak or timeout, leaving
# the input as fuzz/artifacts/<target>/crash-* (add it to fuzz/corpus/<target>/ once fixed).
#
# cargo-fuzz needs nightly for its sanitizers; with `--sanitizer none` it only passes LLVM's
# sanitizer-coverage flags, which stable rustc accepts (-C passes, -C llvm-args). They are
# given here directly, with an explicit --target so build scripts and proc macros stay
# uninstrumented. New inputs found while running go to a scratch dir, not the committed corpus.
#   usage: scripts/fuzz.sh [SECONDS] [TARGET...]
set -eu
secs=${1:-20}
[ $# -gt 0 ] && shift
root=$(cd "$(dirname "$0")/.." && pwd)
fuzz="$root/fuzz"
triple=$(rustc -vV | sed -n 's/^host: //p')
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}/fuzz"
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cllvm-args=-sanitizer-coverage-stack-depth \
--cfg fuzzing -Cforce-frame-pointers"

targets=${*:-$(sed -n 's/^name = "\(.*\)"$/\1/p' "$fuzz/Cargo.toml" | grep -v '^yun-fuzz$')}
cargo build --manifest-path "$fuzz/Cargo.toml" --release --target "$triple" --bins

scratch=$(mktemp -d /tmp/yun-fuzz-corpus-XXXXXX)
trap 'rm -rf "$scratch"' EXIT INT TERM
status=0
for t in $targets; do
    mkdir -p "$scratch/$t" "$fuzz/artifacts/$t"
    echo "== $t: ${secs}s"
    if ! "$CARGO_TARGET_DIR/$triple/release/$t" "$scratch/$t" "$fuzz/corpus/$t" \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
        -artifact_prefix="$fuzz/artifacts/$t/" -print_final_stats=1 2>"$scratch/$t.log"; then
        tail -n 40 "$scratch/$t.log"
        echo "fuzz: $t failed; the input is in fuzz/artifacts/$t/" >&2
        status=1
    else
        grep -E '^stat::(number_of_executed_units|peak_rss_mb)' "$scratch/$t.log" | tr '\n' ' '
        echo
    fi
done
exit $status
