#!/bin/sh
# What abandoned upload sessions cost `yun registry serve`: N clients' worth of uploads are
# started from loopback, each sent SIZE bytes and then left; the server's RSS (VmRSS) and the
# disk under ROOT/uploads are read before, after, and (when IDLE is set) after the idle sweep.
#
#   YUN=path/to/yun ./bench/registry-uploads.sh      (N=1000 SIZE=100000; IDLE=seconds, and
#                                                    any EXTRA flags for `registry serve`)
# Prints the figures; docs/benchmarks.md quotes them.
set -eu
cd "$(dirname "$0")/.."
N=${N:-1000}
SIZE=${SIZE:-100000}
IDLE=${IDLE:-}
EXTRA=${EXTRA:-}
YUN=${YUN:-${CARGO_TARGET_DIR:-$PWD/target}/debug/yun}
work=$(mktemp -d /tmp/yun-bench-uploads-XXXXXX)
pid=""
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; [ -n "$pid" ] && wait "$pid" 2>/dev/null; rm -rf "$work"' EXIT
trap 'exit 1' INT TERM
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
idle_flag=""
[ -n "$IDLE" ] && idle_flag="--upload-idle-timeout ${IDLE}s"
# shellcheck disable=SC2086
"$YUN" registry serve --addr 127.0.0.1:$port --root "$work/root" $idle_flag $EXTRA 2>"$work/log" &
pid=$!
rss() { awk '/^VmRSS/ {r=$2} /^Threads/ {t=$2} END {printf "%.1f MB (%d threads)", r/1024, t}' /proc/$pid/status; }
disk() { du -sk "$work/root/uploads" | awk '{printf "%.1f MB", $1/1024}'; }
python3 - "$port" <<'PY' 2>/dev/null || sleep 1
import socket, sys, time
for _ in range(100):
    try:
        socket.create_connection(("127.0.0.1", int(sys.argv[1]))).close(); break
    except OSError: time.sleep(0.1)
PY
echo "start:            RSS $(rss), uploads on disk $(disk)"
python3 - "$port" "$N" "$SIZE" <<'PY'
import http.client, sys
port, n, size = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
c = http.client.HTTPConnection("127.0.0.1", port)
body = b"x" * size
codes = {}
for i in range(n):
    c.request("POST", "/v2/bench/blobs/uploads/", body=b"")
    r = c.getresponse(); r.read()
    codes[r.status] = codes.get(r.status, 0) + 1
    if r.status != 202:
        continue
    c.request("PATCH", r.getheader("location"), body=body,
              headers={"Content-Type": "application/octet-stream"})
    r2 = c.getresponse(); r2.read()
print("POST answers:", ", ".join(f"{k}: {v}" for k, v in sorted(codes.items())))
PY
echo "after $N uploads: RSS $(rss), uploads on disk $(disk)"
if [ -n "$IDLE" ]; then
    # The sweep runs every tenth of the idle time (at least each second).
    sleep $((IDLE + IDLE / 10 + 2))
    echo "after idle sweep: RSS $(rss), uploads on disk $(disk)"
fi
