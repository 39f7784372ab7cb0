#!/bin/sh
# Streaming (issue 16): `kubectl exec POD -- true` beside `kubectl get pod POD` through `yun up`,
# with kubectl 1.33 (WebSocket v5.channel.k8s.io) and Debian's 1.20 (SPDY/3.1), timed by
# hyperfine (each run is a whole kubectl process: start, TLS, discovery cache, the request).
# The target: exec ≤ 1.5× get. Appends the table to docs/benchmarks.md.
#
#   ./bench/api-exec.sh               (builds yun in release mode first)
#   YUN=target/debug/yun RUNS=20 ./bench/api-exec.sh
# Build time: CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 shortens it.
set -eu
cd "$(dirname "$0")/.."
RUNS=${RUNS:-50}
TARGET=${CARGO_TARGET_DIR:-$PWD/target}
if [ -z "${YUN:-}" ]; then
    cargo build --release -q -p yun --bin yun
    YUN=$TARGET/release/yun
fi
K133=/usr/lib/google-cloud-sdk/bin/kubectl.1.33
K120=/var/cache/yun-kubectl/usr/bin/kubectl
. bench/lib/up.sh
bench_work exec "--name yun-bench-exec --bridge yunbenchx0 --pod-cidr 10.239.2.0/24"
start_yun_up
cfg=$work/up/kubeconfig
"$K133" --kubeconfig "$cfg" run bench --image=busybox --restart=Never -- sleep 3600 >/dev/null
"$K133" --kubeconfig "$cfg" wait --for=condition=Ready pod/bench --timeout=60s >/dev/null

# Each kubectl keeps its own discovery cache (warmed by the first run).
export KUBECONFIG="$cfg"
c133="--cache-dir $work/cache133"
c120="--cache-dir $work/cache120"
hyperfine -N -w 3 -r "$RUNS" --export-json "$work/h.json" \
    -n "1.33 get pod" "$K133 $c133 get pod bench" \
    -n "1.33 exec -- true" "$K133 $c133 exec bench -- true" \
    -n "1.20 get pod" "$K120 $c120 get pod bench" \
    -n "1.20 exec -- true" "$K120 $c120 exec bench -- true" >"$work/hyperfine.out"
table=$(python3 - "$work/h.json" <<'PY'
import json, sys
r = {x["command"]: x for x in json.load(open(sys.argv[1]))["results"]}
print("| kubectl | `get pod` ms (mean ± σ) | `exec -- true` ms (mean ± σ) | exec ÷ get |")
print("| --- | ---: | ---: | ---: |")
for v in ("1.33", "1.20"):
    g, e = r[f"{v} get pod"], r[f"{v} exec -- true"]
    f = lambda x: f"{x['mean']*1000:.1f} ± {x['stddev']*1000:.1f}"
    print(f"| {v} | {f(g)} | {f(e)} | {e['mean']/g['mean']:.2f}x |")
PY
)
echo "$table"
build=$(basename "$(dirname "$YUN")")
{
    echo
    echo "## Streaming: kubectl exec vs get pod (exec ≤ 1.5× get) ($(date +%F), $(nproc) cores)"
    echo
    echo "Command: \`bench/api-exec.sh\` (RUNS=$RUNS, \`$build\` build); hyperfine, one kubectl process per run,"
    echo "a busybox pod through \`yun up\`; 1.33 execs over WebSocket, 1.20 over SPDY/3.1."
    echo
    echo "$table"
} >>docs/benchmarks.md
