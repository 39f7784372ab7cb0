#!/bin/sh
# API server: creates/s, gets/s and lists/s of the same Pods in JSON and in protobuf
# (application/vnd.kubernetes.protobuf, as kubectl ≥1.33's typed clients talk), through
# `yun server` with the embedded store, CLIENTS concurrent HTTPS clients. The client
# (bench/clients/api-protobuf, its own cargo project outside the workspace) is a typed one as
# client-go is: it encodes each create from a typed Pod and decodes every answer into one,
# with k8s-openapi (JSON) and kube-rs's k8s-pb (protobuf). The formats alternate over ROUNDS
# rounds in fresh namespaces; the table holds the medians. Each list reads all PODS pods of a
# namespace. Build time: CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16
# shortens it. Appends the table to docs/benchmarks.md.
#
#   ./bench/api-protobuf.sh       (builds yun and the client in release mode first;
#                                  YUN=… BENCH=… to use other builds, e.g. debug ones)
set -eu
cd "$(dirname "$0")/.."
PODS=${PODS:-2000}
CLIENTS=${CLIENTS:-8}
LISTS=${LISTS:-50}
ROUNDS=${ROUNDS:-3}
TARGET=${CARGO_TARGET_DIR:-$PWD/target}
if [ -z "${YUN:-}" ]; then
    cargo build --release -q -p yun --bin yun
    YUN=$TARGET/release/yun
fi
if [ -z "${BENCH:-}" ]; then
    cargo build --release -q --manifest-path bench/clients/api-protobuf/Cargo.toml \
        --target-dir "$TARGET"
    BENCH=$TARGET/release/yun-bench-api-protobuf
fi
. bench/lib/server.sh
start_yun_server protobuf
out=$("$BENCH" "https://127.0.0.1:$port" "$work/data/pki/token" "$work/data/pki/ca.crt" "$PODS" "$CLIENTS" "$LISTS" "$ROUNDS")
echo "$out" >&2
row() { echo "$out" | awk -v c="$1" '$1 == c {print $2, $3, $4, $5, $6}'; }
set -- $(row json); jc=$1 jg=$2 jl=$3 jgb=$4 jlb=$5
set -- $(row protobuf); pc=$1 pg=$2 pl=$3 pgb=$4 plb=$5
ratio() { python3 -c "print(f'{$2/$1:.2f}x')"; }

{
    echo
    echo "## API server: protobuf vs JSON, creates/gets/lists per second ($(date -u +%Y-%m-%d), $(nproc) cores)"
    echo
    echo "Command: \`./bench/api-protobuf.sh\` (PODS=$PODS, CLIENTS=$CLIENTS, LISTS=$LISTS of $PODS pods each, ROUNDS=$ROUNDS alternating,"
    echo "medians; yun: \`$(basename "$YUN")\` from \`$(dirname "$YUN" | sed "s|$PWD/||")\`); client: \`bench/clients/api-protobuf\`, typed as client-go"
    echo "is (k8s-openapi + serde_json, k8s-pb + prost): every body encoded from a typed Pod, every answer decoded into one."
    echo "The store keeps JSON: protobuf is transcoded at the edge. Answers: get $jgb B JSON, $pgb B protobuf; list $jlb B, $plb B."
    echo
    echo "| verb | JSON /s | protobuf /s | protobuf ÷ JSON |"
    echo "| --- | ---: | ---: | ---: |"
    echo "| create | $jc | $pc | $(ratio "$jc" "$pc") |"
    echo "| get | $jg | $pg | $(ratio "$jg" "$pg") |"
    echo "| list ($PODS pods) | $jl | $pl | $(ratio "$jl" "$pl") |"
} | tee -a docs/benchmarks.md
