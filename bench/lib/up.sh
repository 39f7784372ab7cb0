# Sourced by the benchmarks that need a node (workloads.sh, api-exec.sh, cluster.sh): a work dir, a
# `yun up` ($YUN) on a free loopback port with its own name, bridge and pod CIDR, and a
# cleanup that stops it and what the script started (pids in $pids), takes the node down and
# removes the work dir however the script ends.
#
#   . bench/lib/up.sh; bench_work NAME "UP_FLAGS"; start_yun_up
# sets: work, UP_FLAGS, port, pids (append to it); start_yun_up returns once the node is Ready
# (kubectl 1.33 checks it) and leaves the kubeconfig at $work/up/kubeconfig.

bench_work() {
    work=$(mktemp -d "/tmp/yun-bench-$1-XXXXXX")
    UP_FLAGS=$2
    pids=
    trap bench_cleanup EXIT INT TERM
}

bench_cleanup() {
    for p in $pids; do
        kill "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    if [ -d "$work/up" ]; then
        # shellcheck disable=SC2086
        "$YUN" --data-dir "$work/up" down $UP_FLAGS >/dev/null 2>&1 || true
    fi
    awk -v w="$work" '$2 ~ "^"w {print $2}' /proc/mounts | sort -r | while read -r m; do
        umount -l "$m" || true
    done
    rm -rf "$work"
}

start_yun_up() {
    port=$(python3 -c 'import socket
s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    # shellcheck disable=SC2086
    "$YUN" --data-dir "$work/up" up --addr "127.0.0.1:$port" $UP_FLAGS >"$work/up.log" 2>&1 &
    pids="$pids $!"
    for _ in $(seq 600); do
        [ -f "$work/up/kubeconfig" ] &&
            /usr/lib/google-cloud-sdk/bin/kubectl.1.33 --kubeconfig "$work/up/kubeconfig" \
                get nodes 2>/dev/null | grep -q " Ready" && return 0
        sleep 0.1
    done
    echo "yun up did not become Ready; its log:" >&2
    cat "$work/up.log" >&2
    return 1
}
