#!/bin/sh
# yun's S3 server beside the filesystem it stores on, and beside moto (moto_server, PyPI's
# in-memory S3) for small objects. Same machine, same run, loopback:
#   1. FILES objects of OBJ_MB MiB: `aws s3 cp` up and down through `yun s3 serve`, against
#      plain `cp` of the same files into the same filesystem and `cat` of them out
#      (targets: PUT >= 0.7x, GET >= 0.8x of direct);
#      The same objects also through curl (--aws-sigv4, UNSIGNED-PAYLOAD; C, no hashing), so
#      the server's own cost shows beside the Python client's;
#   2. 4 KiB objects: boto3 PUT then GET from THREADS threads, ops/s, yun against moto_server
#      (target >= 5x moto), and each server's CPU seconds per 1000 operations (boto3 on 2
#      cores is itself the bottleneck: the CPU per operation is the servers' own cost).
# Appends the tables to docs/benchmarks.md.
#
#   ./bench/storage-s3.sh        (FILES=4 OBJ_MB=64 SMALL=2000 THREADS=8; RECORD=0 only prints)
#
# The server: the release `yun s3 serve` when that binary exists and is newer than the s3
# crate's sources, else the crate's example (the same `yun_s3::serve`, without building all
# of yun); YUN_SERVER=yun or YUN_SERVER=example forces one.
set -eu
cd "$(dirname "$0")/.."
FILES=${FILES:-4}
OBJ_MB=${OBJ_MB:-64}
SMALL=${SMALL:-2000}
THREADS=${THREADS:-8}
RECORD=${RECORD:-1}
for tool in aws python3 curl bc; do
    command -v $tool >/dev/null || { echo "missing $tool" >&2; exit 1; }
done
python3 -c 'import boto3, moto' 2>/dev/null || { echo "missing boto3/moto: pip install boto3 'moto[server]'" >&2; exit 1; }
YUN=${YUN:-${CARGO_TARGET_DIR:-$PWD/target}/release/yun}
YUN_SERVER=${YUN_SERVER:-auto}
if [ "$YUN_SERVER" = auto ]; then
    YUN_SERVER=example
    if [ -x "$YUN" ] && "$YUN" s3 serve --help >/dev/null 2>&1 &&
        [ -z "$(find crates/s3/src -newer "$YUN")" ]; then
        YUN_SERVER=yun
    fi
fi
if [ "$YUN_SERVER" = yun ]; then
    yun_serve() { exec "$YUN" s3 serve --addr "127.0.0.1:$1" --root "$2"; }
    yun_cmd="yun s3 serve"
else
    cargo build --release -q -p yun-s3 --example serve
    serve_bin=${CARGO_TARGET_DIR:-$PWD/target}/release/examples/serve
    yun_serve() { exec "$serve_bin" "127.0.0.1:$1" "$2"; }
    yun_cmd="cargo run --release -p yun-s3 --example serve"
fi

work=$(mktemp -d /tmp/yun-bench-s3-XXXXXX)
server_pid=""
stop_server() {
    if [ -n "$server_pid" ]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
        server_pid=""
    fi
}
trap 'stop_server; rm -rf "$work"' EXIT
trap 'exit 1' INT TERM

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
now() { date +%s.%N; }
export AWS_ACCESS_KEY_ID=yunbench AWS_SECRET_ACCESS_KEY=yunbenchsecret AWS_DEFAULT_REGION=us-east-1
export YUN_S3_ACCESS_KEY=$AWS_ACCESS_KEY_ID YUN_S3_SECRET_KEY=$AWS_SECRET_ACCESS_KEY
: >"$work/empty"
export AWS_CONFIG_FILE=$work/empty AWS_SHARED_CREDENTIALS_FILE=$work/empty

start_yun() {
    port=$(free_port)
    rm -rf "$work/s3root"
    yun_serve "$port" "$work/s3root" >"$work/yun.log" 2>&1 &
    server_pid=$!
    wait_port
}
start_moto() {
    port=$(free_port)
    python3 -m moto.server -H 127.0.0.1 -p "$port" >"$work/moto.log" 2>&1 &
    server_pid=$!
    wait_port
}
wait_port() {
    tries=0
    until curl -s -o /dev/null "http://127.0.0.1:$port/"; do
        tries=$((tries + 1))
        [ $tries -lt 200 ] || { echo "server did not start" >&2; exit 1; }
        sleep 0.05
    done
}

# The objects: incompressible.
mkdir -p "$work/src"
i=0
while [ $i -lt "$FILES" ]; do
    head -c $((OBJ_MB << 20)) /dev/urandom >"$work/src/obj$i"
    i=$((i + 1))
done
total_mb=$((FILES * OBJ_MB))

# 1. Large objects.
direct_put() {
    rm -rf "$work/direct" && mkdir -p "$work/direct"
    t0=$(now)
    for f in "$work"/src/*; do cp "$f" "$work/direct/"; done
    sync
    t1=$(now)
    for f in "$work"/direct/*; do cat "$f" >/dev/null; done
    t2=$(now)
    echo "$(echo "$t1 - $t0" | bc) $(echo "$t2 - $t1" | bc)"
}
s3_put() {
    start_yun
    ep=http://127.0.0.1:$port
    aws --endpoint-url "$ep" s3 mb s3://bench >/dev/null
    t0=$(now)
    aws --endpoint-url "$ep" s3 cp --quiet --recursive "$work/src/" s3://bench/
    t1=$(now)
    rm -rf "$work/down"
    aws --endpoint-url "$ep" s3 cp --quiet --recursive s3://bench/ "$work/down/"
    t2=$(now)
    for f in "$work"/src/*; do cmp -s "$f" "$work/down/$(basename "$f")" || { echo "GET differs: $f" >&2; exit 1; }; done
    stop_server
    echo "$(echo "$t1 - $t0" | bc) $(echo "$t2 - $t1" | bc)"
}
curl_put() {
    start_yun
    ep=http://127.0.0.1:$port
    sig="--aws-sigv4 aws:amz:us-east-1:s3 --user $AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY -H x-amz-content-sha256:UNSIGNED-PAYLOAD"
    curl -sf $sig -X PUT "$ep/bench" -o /dev/null
    t0=$(now)
    for f in "$work"/src/*; do curl -sf $sig -T "$f" "$ep/bench/$(basename "$f")" -o /dev/null; done
    t1=$(now)
    for f in "$work"/src/*; do curl -sf $sig "$ep/bench/$(basename "$f")" -o /dev/null; done
    t2=$(now)
    stop_server
    echo "$(echo "$t1 - $t0" | bc) $(echo "$t2 - $t1" | bc)"
}
direct_put >/dev/null # warm-up
s3_put >/dev/null
set -- $(direct_put)
d_put=$1 d_get=$2
set -- $(s3_put)
s_put=$1 s_get=$2
set -- $(curl_put)
c_put=$1 c_get=$2
rate() { echo "scale=1; $total_mb / $1" | bc; }
ratio() { echo "scale=2; $1 / $2" | bc; }

# 2. Small objects.
small_round() {
    python3 - "http://127.0.0.1:$port" "$SMALL" "$THREADS" <<'PY'
import concurrent.futures, os, sys, time
import boto3
from botocore.config import Config
ep, n, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s3 = boto3.client("s3", endpoint_url=ep, config=Config(s3={"addressing_style": "path"},
                  max_pool_connections=threads * 2, retries={"max_attempts": 1}))
s3.create_bucket(Bucket="small")
body = os.urandom(4096)
keys = [f"k/{i:06d}" for i in range(n)]
with concurrent.futures.ThreadPoolExecutor(threads) as pool:
    t0 = time.time()
    list(pool.map(lambda k: s3.put_object(Bucket="small", Key=k, Body=body), keys))
    t1 = time.time()
    got = list(pool.map(lambda k: s3.get_object(Bucket="small", Key=k)["Body"].read(), keys))
    t2 = time.time()
assert all(g == body for g in got)
print(f"{n / (t1 - t0):.0f} {n / (t2 - t1):.0f}")
PY
}
cpu_seconds() { # user+system CPU seconds of a process so far
    awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14+$15)/hz}' "/proc/$1/stat"
}
per_k() { echo "scale=2; $1 * 1000 / (2 * $SMALL)" | bc; }
start_yun
set -- $(small_round)
y_sput=$1 y_sget=$2
y_cpu=$(per_k "$(cpu_seconds "$server_pid")")
stop_server
start_moto
set -- $(small_round)
m_sput=$1 m_sget=$2
m_cpu=$(per_k "$(cpu_seconds "$server_pid")")
stop_server

table=$(cat <<EOT

## S3: yun s3 serve vs the filesystem and moto ($(date -u +%Y-%m-%d), $(nproc) cores)

Command: \`bench/storage-s3.sh\` (FILES=$FILES OBJ_MB=$OBJ_MB SMALL=$SMALL THREADS=$THREADS; server: \`$yun_cmd\`, release); clients \`$(aws --version 2>&1 | cut -d' ' -f1)\`, boto3 $(python3 -c 'import boto3; print(boto3.__version__)'), moto $(python3 -c 'import moto; print(moto.__version__)').

| $FILES × $OBJ_MB MiB | direct (cp / cat) | yun via aws s3 cp | yun / direct |
| --- | --- | --- | --- |
| PUT | $d_put s ($(rate "$d_put") MiB/s) | $s_put s ($(rate "$s_put") MiB/s) | $(ratio "$d_put" "$s_put") |
| GET | $d_get s ($(rate "$d_get") MiB/s) | $s_get s ($(rate "$s_get") MiB/s) | $(ratio "$d_get" "$s_get") |

| $FILES × $OBJ_MB MiB | direct (cp / cat) | yun via curl | yun / direct |
| --- | --- | --- | --- |
| PUT | $d_put s | $c_put s ($(rate "$c_put") MiB/s) | $(ratio "$d_put" "$c_put") |
| GET | $d_get s | $c_get s ($(rate "$c_get") MiB/s) | $(ratio "$d_get" "$c_get") |

| 4 KiB objects, $THREADS boto3 threads | moto_server | yun | yun / moto |
| --- | --- | --- | --- |
| PUT ops/s | $m_sput | $y_sput | $(ratio "$y_sput" "$m_sput") |
| GET ops/s | $m_sget | $y_sget | $(ratio "$y_sget" "$m_sget") |
| server CPU s per 1000 ops | $m_cpu | $y_cpu | $(ratio "$m_cpu" "$y_cpu") less |
EOT
)
echo "$table"
if [ "$RECORD" = 1 ]; then
    echo "$table" >>docs/benchmarks.md
fi
