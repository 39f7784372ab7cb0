#!/bin/sh
# Store: yun's embedded store (redb) beside etcd on the same machine, in the same run, through
# the same client code (crates/store/examples/bench_store.rs): puts/s with 1 writer and with WRITERS
# concurrent writers (100-byte values), and put→watch delivery latency with WATCHERS watchers.
# etcd runs with its default durability (WAL fsync per commit) on the same disk as the redb file.
# Build time: CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 shortens it.
# Appends the table to docs/benchmarks.md.
#
#   ./bench/store.sh          (builds the example in release mode first)
set -eu
cd "$(dirname "$0")/.."
PUTS=${PUTS:-5000}
WRITERS=${WRITERS:-16}
WATCHERS=${WATCHERS:-100}
TARGET=${CARGO_TARGET_DIR:-$PWD/target}
cargo build --release -q -p yun-store --example bench_store
BENCH=$TARGET/release/examples/bench_store
work=$(mktemp -d /tmp/yun-bench-store-XXXXXX)
etcd_pid=
cleanup() {
    if [ -n "$etcd_pid" ]; then
        kill "$etcd_pid" 2>/dev/null || true
        wait "$etcd_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

ports=$(python3 -c 'import socket
s=[socket.socket() for _ in range(2)]
[x.bind(("127.0.0.1",0)) for x in s]
print(" ".join(str(x.getsockname()[1]) for x in s))')
cport=${ports% *}
pport=${ports#* }
etcd --name yun-bench --data-dir "$work/etcd" \
    --listen-client-urls "http://127.0.0.1:$cport" --advertise-client-urls "http://127.0.0.1:$cport" \
    --listen-peer-urls "http://127.0.0.1:$pport" --initial-advertise-peer-urls "http://127.0.0.1:$pport" \
    --initial-cluster "yun-bench=http://127.0.0.1:$pport" >"$work/etcd.log" 2>&1 &
etcd_pid=$!
for _ in $(seq 100); do
    python3 -c "import socket; socket.create_connection(('127.0.0.1',$cport),0.2)" 2>/dev/null && break
    sleep 0.1
done

echo "embedded..." >&2
set -- $("$BENCH" embedded "$work/embedded" "$PUTS" "$WRITERS" "$WATCHERS")
e1=$1 en=$2 e50=$3 e99=$4
echo "etcd..." >&2
set -- $("$BENCH" "etcd://127.0.0.1:$cport" "$work/unused" "$PUTS" "$WRITERS" "$WATCHERS")
t1=$1 tn=$2 t50=$3 t99=$4

{
    echo
    echo "## Store: embedded (redb) vs etcd, puts/s and watch latency ($(date -u +%Y-%m-%d), $(nproc) cores)"
    echo
    echo "Command: \`./bench/store.sh\` (PUTS=$PUTS, WRITERS=$WRITERS, WATCHERS=$WATCHERS); client: \`crates/store/examples/bench_store.rs\`"
    echo "through \`yun_store::open\`; $(etcd --version | head -1), single member on loopback, data on the same ext4 disk."
    echo "Every acknowledged put is durable in both: embedded writes each group commit to its write-ahead log with"
    echo "O_DIRECT|O_DSYNC on the caller's thread (the first waiting caller leads the batch; redb commits with"
    echo "Durability::Immediate every 100 ms); etcd fdatasyncs its WAL."
    echo "Concurrent run: $((PUTS * 4)) puts spread over $WRITERS writers. Latency: 200 puts 5 ms apart, each seen by $WATCHERS watchers."
    echo
    echo "| store | puts/s, 1 writer | puts/s, $WRITERS writers | watch p50 [µs] | watch p99 [µs] |"
    echo "|:---|---:|---:|---:|---:|"
    echo "| yun embedded | $e1 | $en | $e50 | $e99 |"
    echo "| etcd | $t1 | $tn | $t50 | $t99 |"
    echo
    python3 -c "print(f'embedded / etcd puts/s: 1 writer {$e1/$t1:.2f}x, $WRITERS writers {$en/$tn:.2f}x (target >= 3x).')"
} >> docs/benchmarks.md
tail -n 12 docs/benchmarks.md
