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
work=$(mktemp -d /tmp/yun-bench-protobuf-XXXXXX)
pid=
cleanup() {
    if [ -n "$pid" ]; then
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

port=$(python3 -c 'import socket
s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$YUN" --data-dir "$work/data" server --addr "127.0.0.1:$port" >"$work/server.log" 2>&1 &
pid=$!
for _ in $(seq 200); do
    [ -f "$work/data/kubeconfig" ] && python3 -c "import socket; socket.create_connection(('127.0.0.1',$port),0.2)" 2>/dev/null && break
    sleep 0.05
done
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
