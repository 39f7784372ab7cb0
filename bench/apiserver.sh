#!/bin/sh
# API server: pods created/s through `yun server` (embedded store) with CLIENTS concurrent
# kube-rs clients (crates/apiserver/examples/bench_api.rs, POSTs back to back), and the server's
# resident memory (VmRSS from /proc) idle after start and idle after the run.
# Build time: CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 shortens it.
# Appends the table to docs/benchmarks.md.
#
#   ./bench/apiserver.sh          (builds yun and the example in release mode first)
set -eu
cd "$(dirname "$0")/.."
PODS=${PODS:-3000}
CLIENTS=${CLIENTS:-"1 16"}
TARGET=${CARGO_TARGET_DIR:-$PWD/target}
cargo build --release -q -p yun --bin yun
cargo build --release -q -p yun-apiserver --example bench_api
YUN=$TARGET/release/yun
BENCH=$TARGET/release/examples/bench_api
. bench/lib/server.sh
start_yun_server apiserver
rss() { awk '/^VmRSS/ {printf "%.1f", $2/1024}' "/proc/$pid/status"; }
sleep 2
idle=$(rss)

rows=
for c in $CLIENTS; do
    echo "$c clients..." >&2
    rate=$("$BENCH" "$work/data/kubeconfig" "$PODS" "$c")
    rows="$rows| $c | $PODS | $rate |
"
done
sleep 2
after=$(rss)
total=$(( PODS * $(echo $CLIENTS | wc -w) ))

{
    echo
    echo "## API server: pods created/s and idle RSS ($(date -u +%Y-%m-%d), $(nproc) cores)"
    echo
    echo "Command: \`./bench/apiserver.sh\` (PODS=$PODS per run, CLIENTS=\"$CLIENTS\"); client: \`crates/apiserver/examples/bench_api.rs\`"
    echo "(kube-rs, one connection pool per client, HTTPS with bearer token); \`yun server\` with the embedded store,"
    echo "every create durable (WAL fdatasync) before it is answered."
    echo
    echo "| clients | pods | pods/s |"
    echo "|---:|---:|---:|"
    printf "%s" "$rows"
    echo
    echo "Server VmRSS: ${idle} MiB idle after start, ${after} MiB idle after creating $total pods (target <= 30 MiB idle)."
} >> docs/benchmarks.md
tail -n 12 docs/benchmarks.md
