#!/bin/sh
# API server: creates/s, gets/s and lists/s of the same Pods in JSON and in protobuf
# (application/vnd.kubernetes.protobuf, as kubectl ≥1.33's typed clients talk), through
# `yun server` with the embedded store, CLIENTS concurrent HTTPS clients
# (crates/apiserver/examples/bench_protobuf.rs). Each list reads all PODS pods of a namespace.
# Build time: CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 shortens it.
# Appends the table to docs/benchmarks.md.
#
#   ./bench/api-protobuf.sh       (builds yun and the example in release mode first;
#                                  YUN=… BENCH=… to use other builds, e.g. debug ones)
set -eu
cd "$(dirname "$0")/.."
PODS=${PODS:-2000}
CLIENTS=${CLIENTS:-8}
LISTS=${LISTS:-50}
TARGET=${CARGO_TARGET_DIR:-$PWD/target}
if [ -z "${YUN:-}" ]; then
    cargo build --release -q -p yun --bin yun
    cargo build --release -q -p yun-apiserver --example bench_protobuf
    YUN=$TARGET/release/yun
    BENCH=$TARGET/release/examples/bench_protobuf
fi
. bench/lib/server.sh
start_yun_server protobuf
out=$("$BENCH" "https://127.0.0.1:$port" "$work/data/pki/token" "$work/data/pki/ca.crt" "$PODS" "$CLIENTS" "$LISTS")
echo "$out" >&2
row() { echo "$out" | awk -v c="$1" '$1 == c {print $2, $3, $4}'; }
set -- $(row json); jc=$1 jg=$2 jl=$3
set -- $(row protobuf); pc=$1 pg=$2 pl=$3
ratio() { python3 -c "print(f'{$2/$1:.2f}x')"; }

{
    echo
    echo "## API server: protobuf vs JSON, creates/gets/lists per second ($(date -u +%Y-%m-%d), $(nproc) cores)"
    echo
    echo "Command: \`./bench/api-protobuf.sh\` (PODS=$PODS, CLIENTS=$CLIENTS, LISTS=$LISTS of $PODS pods each; yun: \`$(basename "$YUN")\` from \`$(dirname "$YUN" | sed "s|$PWD/||")\`);"
    echo "client: \`crates/apiserver/examples/bench_protobuf.rs\` (reqwest over HTTPS, bearer token; bodies encoded before timing,"
    echo "responses read but not decoded). The store keeps JSON: protobuf is transcoded at the edge."
    echo
    echo "| verb | JSON /s | protobuf /s | protobuf ÷ JSON |"
    echo "| --- | ---: | ---: | ---: |"
    echo "| create | $jc | $pc | $(ratio "$jc" "$pc") |"
    echo "| get | $jg | $pg | $(ratio "$jg" "$pg") |"
    echo "| list ($PODS pods) | $jl | $pl | $(ratio "$jl" "$pl") |"
} | tee -a docs/benchmarks.md
