#!/bin/sh
# The README's first command: system dependencies, a release build, and yun's main job on the
# embedded defaults — `yun up` (store, API server, controllers, scheduler and a node agent in
# one process) with the example web Deployment applied through Debian's kubectl.
set -eu
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "run as root (containers need it)" >&2; exit 1; }
./scripts/deps.sh
cargo build --release --locked

YUN=${CARGO_TARGET_DIR:-$PWD/target}/release/yun
DATA=${YUN_DATA_DIR:-/var/lib/yun}
ADDR=${YUN_ADDR:-127.0.0.1:6443}
KUBECTL=/var/cache/yun-kubectl/usr/bin/kubectl
export KUBECONFIG="$DATA/kubeconfig"
mkdir -p "$DATA"

if [ -f "$DATA/up.pid" ] && kill -0 "$(cat "$DATA/up.pid")" 2>/dev/null; then
    echo "yun up is already running (pid $(cat "$DATA/up.pid"))"
else
    nohup "$YUN" --data-dir "$DATA" up --addr "$ADDR" > "$DATA/up.log" 2>&1 &
    echo $! > "$DATA/up.pid"
    echo "started yun up (pid $!, log $DATA/up.log)"
fi
i=0
until "$KUBECTL" get nodes 2>/dev/null | grep -q ' Ready'; do
    i=$((i + 1))
    [ $i -lt 120 ] || { echo "yun up did not become ready; see $DATA/up.log" >&2; exit 1; }
    sleep 0.5
done

"$KUBECTL" apply -f examples/web.yaml
"$KUBECTL" rollout status deployment/web --timeout=120s
"$KUBECTL" get pods -o wide
ip=$("$KUBECTL" get pods -l app=web -o jsonpath='{.items[0].status.podIP}')
vip=$("$KUBECTL" get service web -o jsonpath='{.spec.clusterIP}')
for url in "http://$ip:8080/" "http://$vip/"; do
    i=0
    until page=$(curl -sf --max-time 2 "$url"); do
        i=$((i + 1))
        [ $i -lt 20 ] || { echo "$url does not answer" >&2; exit 1; }
        sleep 0.5
    done
    echo "$url says: $page"
done
cat <<EOM

yun is up. Use it with kubectl:

    export KUBECONFIG=$KUBECONFIG
    $KUBECTL get pods -o wide

Stop it with: kill \$(cat $DATA/up.pid)   (pods keep running; the next yun up adopts them)
Remove the pods and the bridge: $YUN --data-dir $DATA down
EOM
