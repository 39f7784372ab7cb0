# Sourced by the API server benchmarks (apiserver.sh, api-protobuf.sh, rbac.sh): one
# `yun server` ($YUN) on a free loopback port with its data in a fresh work dir, stopped and
# removed when the script exits however it ends.
#
#   . bench/lib/server.sh; start_yun_server NAME
# sets: work (the dir; the data dir is $work/data), port, pid.

stop_yun_server() {
    if [ -n "${pid:-}" ]; then
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}

start_yun_server() {
    work=$(mktemp -d "/tmp/yun-bench-$1-XXXXXX")
    pid=
    trap stop_yun_server EXIT INT TERM
    port=$(python3 -c 'import socket
s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    "$YUN" --data-dir "$work/data" server --addr "127.0.0.1:$port" >"$work/server.log" 2>&1 &
    pid=$!
    for _ in $(seq 200); do
        [ -f "$work/data/kubeconfig" ] &&
            python3 -c "import socket; socket.create_connection(('127.0.0.1',$port),0.2)" 2>/dev/null &&
            return 0
        sleep 0.05
    done
    echo "yun server did not start; its log:" >&2
    cat "$work/server.log" >&2
    return 1
}
