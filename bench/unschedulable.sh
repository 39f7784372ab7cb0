#!/bin/bash
# One pod that fits nowhere (issue 15): `yun up` with its only node cordoned, one busybox pod,
# left for SECS seconds (default 600). Reports the FailedScheduling Events (how many objects,
# their count), the writes to the pod (resourceVersions a watch saw, and whether the pod's
# resourceVersion moved between the first seconds and the end), and the growth of store.redb.
# Appends the figures to docs/benchmarks.md. Before the unschedulable queue: 540 Events and
# 505 pod writes in 10 s (debug build); after: one Event, about one try per 10 s.
#
#   ./bench/unschedulable.sh [SECS]      (YUN=path/to/yun to test another build)
set -eu
cd "$(dirname "$0")/.."
SECS=${1:-600}
TARGET=${CARGO_TARGET_DIR:-$PWD/target}
if [ -z "${YUN:-}" ]; then
    cargo build --release -q -p yun --bin yun
    YUN=$TARGET/release/yun
fi
K=${KUBECTL:-/var/cache/yun-kubectl/usr/bin/kubectl}
D=$(mktemp -d /tmp/yun-bench-unsched-XXXXXX)
PORT=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
FLAGS="--bridge yunbench1 --pod-cidr 10.239.1.0/24 --name node-1"
"$YUN" --data-dir "$D" up --addr 127.0.0.1:"$PORT" $FLAGS >/dev/null 2>"$D.log" &
UP=$!
trap 'kill $UP 2>/dev/null; wait $UP 2>/dev/null; "$YUN" --data-dir "$D" down $FLAGS >/dev/null 2>&1; rm -rf "$D" "$D.log" "$D.watch"' EXIT
KC="$K --kubeconfig $D/kubeconfig"
for _ in $(seq 100); do
    [ -f "$D/kubeconfig" ] && $KC get nodes 2>/dev/null | grep -q " Ready" && break
    sleep 0.3
done
$KC cordon node-1 >/dev/null
size0=$(stat -c %s "$D/store.redb")
$KC run stuck --image=busybox --restart=Never -- sleep 1000 >/dev/null
sleep 3
rv0=$($KC get pod stuck -o jsonpath='{.metadata.resourceVersion}')
timeout "$SECS" $KC get pod stuck -w -o 'jsonpath={.metadata.resourceVersion}{"\n"}' >"$D.watch" 2>/dev/null || true
rv1=$($KC get pod stuck -o jsonpath='{.metadata.resourceVersion}')
size1=$(stat -c %s "$D/store.redb")
events=$($KC get events --field-selector involvedObject.name=stuck,reason=FailedScheduling -o json |
    python3 -c 'import json,sys; it=json.load(sys.stdin)["items"]; print(len(it), max([e.get("count") or 0 for e in it] or [0]))')
table="| window | FailedScheduling Events | largest count | pod versions watched | pod resourceVersion moved | store.redb growth |
| --- | --- | --- | --- | --- | --- |
| ${SECS} s | ${events% *} | ${events#* } | $(sort -u "$D.watch" | wc -l) | $([ "$rv0" = "$rv1" ] && echo no || echo "$rv0 -> $rv1") | $(( (size1 - size0) / 1024 )) KiB |"
echo "$table"
{
    echo
    echo "## Unschedulable pod, $(date -u +%Y-%m-%d) (\`bench/unschedulable.sh $SECS\`)"
    echo
    echo "$table"
} >>docs/benchmarks.md
