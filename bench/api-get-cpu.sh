#!/bin/sh
# API server CPU per GET of one pod, JSON vs protobuf: N GETs on one kept-alive curl connection
# per format, two rounds alternating, the server's CPU read from /proc/PID/stat before and
# after. The figure behind the protobuf paragraph of docs/benchmarks.md (prints, appends
# nothing).
#
#   ./bench/api-get-cpu.sh      (builds yun in release mode first; YUN=… to use another build)
set -eu
cd "$(dirname "$0")/.."
N=${N:-5000}
TARGET=${CARGO_TARGET_DIR:-$PWD/target}
if [ -z "${YUN:-}" ]; then
    cargo build --release -q -p yun --bin yun
    YUN=$TARGET/release/yun
fi
. bench/lib/server.sh
start_yun_server getcpu
k() { /usr/lib/google-cloud-sdk/bin/kubectl.1.33 --kubeconfig "$work/data/kubeconfig" "$@"; }
k run p1 --image=busybox -- sleep 1 >/dev/null
token=$(cat "$work/data/pki/token")
url="https://127.0.0.1:$port/api/v1/namespaces/default/pods/p1"
yes "url = \"$url\"
output = \"/dev/null\"" | head -n "$((N * 2))" >"$work/urls"
cpu() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
tck=$(getconf CLK_TCK)
for round in 1 2; do
    for accept in application/json application/vnd.kubernetes.protobuf; do
        before=$(cpu)
        codes=$(curl -s --cacert "$work/data/pki/ca.crt" -H "Authorization: Bearer $token" \
            -H "Accept: $accept" -K "$work/urls" -w '%{http_code}\n' | sort | uniq -c | tr -s ' \n' ' ')
        after=$(cpu)
        size=$(curl -s --cacert "$work/data/pki/ca.crt" -H "Authorization: Bearer $token" \
            -H "Accept: $accept" "$url" | wc -c)
        python3 -c "print(f'round $round $accept: {($after - $before) / $tck / $N * 1e6:.0f} µs CPU per get, answer $size bytes, codes:$codes')"
    done
done
