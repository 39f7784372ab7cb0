#!/bin/sh
# Control plane (issue 6): scheduler throughput with NODES simulated nodes, the control plane's
# memory at that load, and pod start latency on a real node. Client: the kube-rs program
# crates/controllers/examples/bench_cluster.rs.
#
# 1. `yun server` (embedded store); NODES Nodes with Leases and no agent (as Kubernetes'
#    scheduler_perf and kubemark simulate them) and PODS unscheduled pods are created; then
#    `yun controller-manager` starts and the pods are watched being bound: pods/s from the
#    first binding to the last. Then the VmRSS of both processes, and of the same control plane
#    as one process (`yun up --disable-agent`) once it has listed and watches it all.
# 2. `yun up` with its own agent: START_PODS busybox pods created at RATE/s, each timed from
#    its create request to the watch showing it Ready (p50/p99/max).
# Build time: CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 shortens it.
# Appends the tables to docs/benchmarks.md.
#
#   ./bench/cluster.sh          (builds yun and the example in release mode first)
set -eu
cd "$(dirname "$0")/.."
NODES=${NODES:-1000}
PODS=${PODS:-30000}
CLIENTS=${CLIENTS:-16}
START_PODS=${START_PODS:-100}
RATE=${RATE:-10}
TARGET=${CARGO_TARGET_DIR:-$PWD/target}
cargo build --release -q -p yun --bin yun
cargo build --release -q -p yun-controllers --example bench_cluster
YUN=$TARGET/release/yun
BENCH=$TARGET/release/examples/bench_cluster
. bench/lib/up.sh
bench_work cluster "--name yun-bench --bridge yunbench0 --pod-cidr 10.239.0.0/24"

free_port() {
    python3 -c 'import socket
s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
wait_up() { # DATA_DIR PORT
    for _ in $(seq 300); do
        [ -f "$1/kubeconfig" ] && python3 -c "import socket; socket.create_connection(('127.0.0.1',$2),0.2)" 2>/dev/null && return
        sleep 0.05
    done
    echo "server on port $2 did not start" >&2
    exit 1
}
rss() { awk '/^VmRSS/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }

# 1. Scheduler throughput and control-plane memory.
port=$(free_port)
"$YUN" --data-dir "$work/plane" server --addr "127.0.0.1:$port" >"$work/server.log" 2>&1 &
server=$!
pids="$server"
wait_up "$work/plane" "$port"
kc="$work/plane/kubeconfig"
echo "creating $NODES nodes and $PODS pods..." >&2
"$BENCH" populate "$kc" "$NODES" "$PODS" "$CLIENTS" 2>"$work/populate.log"
cat "$work/populate.log" >&2
"$BENCH" schedule "$kc" "$PODS" >"$work/rate" 2>"$work/schedule.log" &
watcher=$!
until grep -q watching "$work/schedule.log"; do sleep 0.05; done
# The nodes have no agents: no grace period runs out while the benchmark runs.
"$YUN" --data-dir "$work/plane" controller-manager --kubeconfig "$kc" \
    --node-monitor-grace-period 1h >"$work/cm.log" 2>&1 &
cm=$!
pids="$cm $server"
wait "$watcher"
cat "$work/schedule.log" >&2
rate=$(cat "$work/rate")
sleep 5
rss_server=$(rss "$server")
rss_cm=$(rss "$cm")
rss_sum=$(python3 -c "print(f'{$rss_server + $rss_cm:.1f}')")
kill "$cm" "$server"
wait "$cm" "$server" 2>/dev/null || true
pids=
# The same control plane as one process (`yun up --disable-agent`, as a user runs it) on the
# same data: its memory once it has listed and watches every node and pod.
"$YUN" --data-dir "$work/plane" up --disable-agent --addr "127.0.0.1:$port" \
    --node-monitor-grace-period 1h >"$work/up-plane.log" 2>&1 &
plane=$!
pids="$plane"
wait_up "$work/plane" "$port"
# Sampled every 5 s for 40 s (startup replays the log and lists everything); the last sample
# is the settled figure, the series goes into the notes under the table.
series=
for _ in 1 2 3 4 5 6 7 8; do
    sleep 5
    rss_one=$(rss "$plane")
    series="$series $rss_one"
done
echo "yun up --disable-agent VmRSS every 5 s (MiB):$series" >"$work/rss.log"
kill "$plane"
wait "$plane" 2>/dev/null || true
pids=

# 2. Pod start latency on a real node.
port=$(free_port)
# shellcheck disable=SC2086
"$YUN" --data-dir "$work/up" up --addr "127.0.0.1:$port" $UP_FLAGS >"$work/up.log" 2>&1 &
up=$!
pids="$up"
wait_up "$work/up" "$port"
sleep 3
echo "starting $START_PODS pods at $RATE/s..." >&2
set -- $("$BENCH" podstart "$work/up/kubeconfig" "$START_PODS" "$RATE")
p50=$1 p99=$2 max=$3

{
    echo
    echo "## Control plane: scheduling, memory, pod start ($(date -u +%Y-%m-%d), $(nproc) cores)"
    echo
    echo "Command: \`./bench/cluster.sh\` (NODES=$NODES PODS=$PODS CLIENTS=$CLIENTS START_PODS=$START_PODS RATE=$RATE); client: \`crates/controllers/examples/bench_cluster.rs\`."
    echo "Scheduling is measured as Kubernetes' scheduler_perf does: $NODES Nodes (with Leases, no agents) and $PODS"
    echo "pending pods exist first, then \`yun controller-manager\` starts; pods/s is bound pods over the time from the first"
    echo "binding to the last, each binding a durable API write. Pod start: \`yun up\` with its agent, busybox pods created"
    echo "at $RATE/s, each timed from its create request to the watch showing it Ready."
    echo
    echo "| measure | yun | target |"
    echo "|---|---:|---:|"
    echo "| pods scheduled/s ($NODES nodes, $PODS pods) | $rate | >= 3000 |"
    echo "| control-plane VmRSS at $NODES nodes / $PODS pods: \`yun up --disable-agent\` (one process) | $rss_one MiB (settled) | <= 200 MiB |"
    echo "| the same as two processes: \`yun server\` + \`yun controller-manager\` | $rss_server + $rss_cm = $rss_sum MiB | |"
    echo "| pod start p50 / p99 / max ($START_PODS pods) | $p50 / $p99 / $max ms | p99 <= 1000 ms |"
    echo
    sed 's/^/    /' "$work/populate.log" "$work/schedule.log" "$work/rss.log"
} >>docs/benchmarks.md
tail -n 16 docs/benchmarks.md
