#!/bin/sh
# RBAC: the API server's CPU for N requests as system:masters (the authorizer's bypass) vs as a
# user allowed by a RoleBinding (every request evaluated against the in-memory RBAC index, with
# BINDINGS other users' Roles and RoleBindings in it too). Each client is curl on one kept-alive
# connection authenticating with a client certificate from `yun kubeconfig`; the server's CPU
# is read from /proc/PID/stat (utime + stime) before and after. Appends the table to
# docs/benchmarks.md.
#
#   ./bench/rbac.sh        (builds yun in release mode first; YUN=… to use another build)
set -eu
cd "$(dirname "$0")/.."
N=${N:-5000}
RUNS=${RUNS:-3}
BINDINGS=${BINDINGS:-200}
TARGET=${CARGO_TARGET_DIR:-$PWD/target}
if [ -z "${YUN:-}" ]; then
    cargo build --release -q -p yun --bin yun
    YUN=$TARGET/release/yun
fi
. bench/lib/server.sh
start_yun_server rbac
KUBECTL=/usr/lib/google-cloud-sdk/bin/kubectl.1.33
admin=$work/data/kubeconfig
"$YUN" --data-dir "$work/data" kubeconfig --user alice -o "$work/alice"
k() { "$KUBECTL" --kubeconfig "$admin" "$@" >/dev/null; }
k create role pod-reader -n default --verb=get,list,watch --resource=pods
k create rolebinding alice-reads -n default --role=pod-reader --user=alice
# Other users' grants, so the index is not trivially small.
python3 - "$BINDINGS" >"$work/others.yaml" <<'PY'
import sys
for i in range(int(sys.argv[1])):
    print(f"""---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: r{i}, namespace: default}}
rules: [{{apiGroups: [""], resources: [configmaps], verbs: [get]}}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: b{i}, namespace: default}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: r{i}}}
subjects: [{{kind: User, apiGroup: rbac.authorization.k8s.io, name: user{i}}}]""")
PY
k apply -f "$work/others.yaml"
sleep 1

# cert.pem / key.pem / ca.pem out of a kubeconfig.
extract() {
    python3 - "$1" "$2" <<'PY'
import base64, sys, re
text = open(sys.argv[1]).read()
def field(name):
    return base64.b64decode(re.search(name + r": (\S+)", text).group(1))
open(sys.argv[2] + ".crt", "wb").write(field("client-certificate-data"))
open(sys.argv[2] + ".key", "wb").write(field("client-key-data"))
open(sys.argv[2] + ".ca", "wb").write(field("certificate-authority-data"))
PY
}
extract "$admin" "$work/admin"
extract "$work/alice" "$work/alice"

url="https://127.0.0.1:$port/api/v1/namespaces/default/pods?limit=1"
yes "url = \"$url\"
output = \"/dev/null\"" | head -n "$((N * 2))" >"$work/urls"
cpu() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
tck=$(getconf CLK_TCK)
run() {
    before=$(cpu)
    start=$(date +%s.%N)
    codes=$(curl -s --cacert "$work/$1.ca" --cert "$work/$1.crt" --key "$work/$1.key" \
        -K "$work/urls" -w '%{http_code}\n' | sort | uniq -c | awk '{printf "%s×%s ", $1, $2}')
    end=$(date +%s.%N)
    after=$(cpu)
    echo "$1 $((after - before)) $start $end $codes" | sed 's/ $//' 
}
# Warm up both paths, then measure each RUNS times, alternating (the machine is shared: CPU
# ticks of single runs vary by a third).
run admin >/dev/null
run alice >/dev/null
results=$(for _ in $(seq "$RUNS"); do run admin; run alice; done)
echo "$results"
table=$(echo "$results" | awk -v n="$N" -v tck="$tck" '
    { cpu[$1] += $2 / tck; wall[$1] += $4 - $3; runs[$1]++; codes[$1] = $5 " " $6 }
    END {
        for (u in runs) {
            c = cpu[u] / runs[u]; w = wall[u] / runs[u]
            printf "%s|%.3f|%.1f|%.0f|%s\n", u, c, c / n * 1e6, n / w, codes[u]
        }
    }' | sort)
admin_us=$(echo "$table" | awk -F'|' '$1=="admin"{print $3}')
alice_us=$(echo "$table" | awk -F'|' '$1=="alice"{print $3}')
overhead=$(awk -v a="$admin_us" -v b="$alice_us" 'BEGIN{printf "%+.1f%%", (b - a) / a * 100}')
{
    echo
    echo "## RBAC: server CPU per request, bypass vs checked ($(date -u +%Y-%m-%d), $(nproc) cores)"
    echo
    echo "Command: \`bench/rbac.sh\` (N=$N GETs of a pod list per run, $RUNS runs each alternating, one kept-alive"
    echo "curl connection with a client certificate; $BINDINGS other users' Roles + RoleBindings in the index)."
    echo
    echo "| identity | server CPU per run | CPU per request | requests/s | HTTP codes |"
    echo "| --- | --- | --- | --- | --- |"
    echo "$table" | while IFS='|' read -r u c per rate codes; do
        case $u in
            admin) who="yun-admin (system:masters: bypass)" ;;
            alice) who="alice (RoleBinding: checked)" ;;
        esac
        echo "| $who | ${c} s | ${per} µs | $rate | $codes |"
    done
    echo
    echo "Checked over bypass: $overhead CPU per request."
} | tee -a docs/benchmarks.md
