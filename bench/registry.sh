#!/bin/sh
# yun's registry beside docker-registry (distribution 2.8): skopeo pushes a ~200 MB, 4-layer
# image from an OCI layout and pulls it back, over loopback. Both servers run in the same
# run, alternating, each round on fresh storage and a fresh port; one warm-up round each is
# not counted. Appends the table to docs/benchmarks.md.
#
#   ./bench/registry.sh          (ROUNDS=5 LAYERS=4 LAYER_MB=50 by default; RECORD=0 only prints)
#
# A second table measures the servers with curl, which does not hash, so the server's own cost
# shows; skopeo's software SHA-256 bounds the first (see the floor line it prints).
set -eu
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-5}
LAYERS=${LAYERS:-4}
LAYER_MB=${LAYER_MB:-50}
RECORD=${RECORD:-1}
for tool in skopeo docker-registry curl python3; do
    command -v $tool >/dev/null || { echo "missing $tool" >&2; exit 1; }
done

work=$(mktemp -d /tmp/yun-bench-reg-XXXXXX)
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

# The yun server: `yun registry serve` once the binary has it and is newer than the registry's
# sources, else the crate's example (YUN_SERVER=yun or YUN_SERVER=example forces one).
YUN=${CARGO_TARGET_DIR:-$PWD/target}/release/yun
YUN_SERVER=${YUN_SERVER:-auto}
if [ "$YUN_SERVER" = auto ]; then
    YUN_SERVER=example
    if [ -x "$YUN" ] && "$YUN" registry serve --help >/dev/null 2>&1 &&
        [ -z "$(find crates/registry/src -newer "$YUN")" ]; then
        YUN_SERVER=yun
    fi
fi
if [ "$YUN_SERVER" = yun ]; then
    yun_serve() { exec "$YUN" registry serve --addr "127.0.0.1:$1" --root "$2"; }
    yun_cmd="yun registry serve"
else
    cargo build --release -q -p yun-registry --example serve
    serve_bin=${CARGO_TARGET_DIR:-$PWD/target}/release/examples/serve
    yun_serve() { exec "$serve_bin" "127.0.0.1:$1" "$2"; }
    yun_cmd="cargo run --release -p yun-registry --example serve"
fi

# The image: LAYERS tar layers of random (incompressible) bytes, uncompressed, as an OCI layout.
img=$work/image
size=$(python3 - "$img" "$LAYERS" "$LAYER_MB" <<'PY'
import hashlib, io, json, os, sys, tarfile
out, layers_n, mb = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
blobs = os.path.join(out, "blobs", "sha256")
os.makedirs(blobs)
def put(data):
    d = hashlib.sha256(data).hexdigest()
    with open(os.path.join(blobs, d), "wb") as f:
        f.write(data)
    return "sha256:" + d, len(data)
layers = []
for i in range(layers_n):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as t:
        data = os.urandom(mb << 20)
        info = tarfile.TarInfo(f"data/layer{i}.bin")
        info.size, info.mtime = len(data), 0
        t.addfile(info, io.BytesIO(data))
    d, n = put(buf.getvalue())
    layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": n})
config = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                     "rootfs": {"type": "layers", "diff_ids": [l["digest"] for l in layers]}}).encode()
cd, cn = put(config)
manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                  "digest": cd, "size": cn},
                       "layers": layers}).encode()
md, mn = put(manifest)
with open(os.path.join(out, "index.json"), "w") as f:
    json.dump({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": mn,
        "annotations": {"org.opencontainers.image.ref.name": "bench"}}]}, f)
with open(os.path.join(out, "oci-layout"), "w") as f:
    f.write('{"imageLayoutVersion":"1.0.0"}')
print(sum(l["size"] for l in layers) + cn + mn)
PY
)
src_digest=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["manifests"][0]["digest"])' "$img/index.json")

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
now() { date +%s.%N; }
cpu_seconds() { # user+system CPU seconds of a process so far
    awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14+$15)/hz}' "/proc/$1/stat"
}

# Starts server NAME on empty storage in $dir (sets $dir, $port, $server_pid).
start_server() {
    name=$1
    dir=$work/$name
    rm -rf "$dir"
    mkdir -p "$dir/root"
    port=$(free_port)
    if [ "$name" = yun ]; then
        yun_serve "$port" "$dir/root" >"$dir/log" 2>&1 &
    else
        printf 'version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: 127.0.0.1:%s\n' \
            "$dir/root" "$port" >"$dir/config.yml"
        docker-registry serve "$dir/config.yml" >"$dir/log" 2>&1 &
    fi
    server_pid=$!
    tries=0
    until curl -s -o /dev/null "http://127.0.0.1:$port/v2/"; do
        tries=$((tries + 1))
        [ $tries -lt 200 ] || { echo "$name did not start:" >&2; cat "$dir/log" >&2; exit 1; }
        sleep 0.05
    done
}

# skopeo: push the image, pull it into a new layout; prints "NAME PUSH_S PULL_S SERVER_CPU_S".
skopeo_round() {
    start_server "$1"
    ref=docker://127.0.0.1:$port/bench/image:v1
    t0=$(now)
    skopeo --insecure-policy copy -q --preserve-digests --dest-tls-verify=false \
        "oci:$img:bench" "$ref"
    t1=$(now)
    skopeo --insecure-policy copy -q --preserve-digests --dest-oci-accept-uncompressed-layers \
        --src-tls-verify=false "$ref" "oci:$dir/pulled:bench"
    t2=$(now)
    cpu=$(cpu_seconds "$server_pid")
    got=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["manifests"][0]["digest"])' "$dir/pulled/index.json")
    [ "$got" = "$src_digest" ] || { echo "$name: pulled $got, pushed $src_digest" >&2; exit 1; }
    stop_server
    rm -rf "$dir"
    echo "$name $(echo "$t1 - $t0" | bc) $(echo "$t2 - $t1" | bc) $cpu"
}

# One blob upload with curl: POST a session, PUT the whole body with its digest (the
# monolithic form both servers accept). Fails unless the server answers 201.
curl_upload() {
    base=http://127.0.0.1:$port
    loc=$(curl -s -D - -o /dev/null -X POST "$base/v2/bench/raw/blobs/uploads/" |
        tr -d '\r' | awk 'tolower($1) == "location:" {print $2}')
    case $loc in http*) ;; *) loc=$base$loc ;; esac
    case $loc in *\?*) sep='&' ;; *) sep='?' ;; esac
    code=$(curl -s -o /dev/null -w '%{http_code}' -X PUT -H 'Content-Type: application/octet-stream' \
        --data-binary "@$1" "$loc${sep}digest=sha256:$(basename "$1")")
    [ "$code" = 201 ] || { echo "$name: upload of $1 answered $code" >&2; exit 1; }
}

# curl, which does not hash, so the server's own cost shows: every blob of the image uploaded
# at once, then downloaded at once; prints "NAME UP_S DOWN_S SERVER_CPU_S".
curl_round() {
    start_server "$1"
    pids=""
    t0=$(now)
    for f in "$img"/blobs/sha256/*; do
        curl_upload "$f" &
        pids="$pids $!"
    done
    for p in $pids; do wait "$p" || exit 1; done
    t1=$(now)
    pids=""
    for f in "$img"/blobs/sha256/*; do
        curl -s -f -o /dev/null "http://127.0.0.1:$port/v2/bench/raw/blobs/sha256:$(basename "$f")" &
        pids="$pids $!"
    done
    for p in $pids; do wait "$p" || { echo "$name: download failed" >&2; exit 1; }; done
    t2=$(now)
    cpu=$(cpu_seconds "$server_pid")
    stop_server
    rm -rf "$dir"
    echo "$name $(echo "$t1 - $t0" | bc) $(echo "$t2 - $t1" | bc) $cpu"
}

# The client alone: skopeo copying the layout to a local directory, no server at all. A push
# cannot be faster than this, whichever registry receives it.
floor_round() {
    t0=$(now)
    skopeo --insecure-policy copy -q --preserve-digests "oci:$img:bench" "dir:$work/floor"
    t1=$(now)
    rm -rf "$work/floor"
    echo "$t1 - $t0" | bc
}

floor_results=$work/floor-times
: >"$floor_results"
skopeo_results=$work/skopeo
curl_results=$work/curl
: >"$skopeo_results"
: >"$curl_results"
# Warm-up, not counted: page cache, skopeo's caches.
for name in yun docker-registry; do
    skopeo_round $name >/dev/null
    curl_round $name >/dev/null
done
i=1
while [ $i -le "$ROUNDS" ]; do
    # Alternate which server goes first.
    if [ $((i % 2)) = 1 ]; then order="yun docker-registry"; else order="docker-registry yun"; fi
    for name in $order; do
        # Not in a pipeline: an error must stop this shell, whose trap stops the server.
        skopeo_round "$name" >>"$skopeo_results"
        tail -n 1 "$skopeo_results"
    done
    floor_round >>"$floor_results"
    for name in $order; do
        curl_round "$name" >>"$curl_results"
        tail -n 1 "$curl_results"
    done
    i=$((i + 1))
done

summary() { # FILE CLIENT PUSH-WORD PULL-WORD
    python3 - "$1" "$size" "$ROUNDS" "$2" "$3" "$4" <<'PY'
import statistics as st, sys
path, size, rounds, client, up, down = sys.argv[1:]
rows = [l.split() for l in open(path) if l.strip()]
size_mb = int(size) / 1e6
sd = lambda v: st.stdev(v) if len(v) > 1 else 0.0
out, tot = [], {}
out.append(f"| {client}: registry | {up} [s] | {down} [s] | {up}+{down} [s] | {up} MB/s | {down} MB/s "
           f"| {up}+{down} MB/s | server CPU [s] |")
out.append("|:---|---:|---:|---:|---:|---:|---:|---:|")
for name in ["yun", "docker-registry"]:
    r = [x for x in rows if x[0] == name]
    a = [float(x[1]) for x in r]
    b = [float(x[2]) for x in r]
    both = [x + y for x, y in zip(a, b)]
    cpu = [float(x[3]) for x in r]
    tot[name] = (st.mean(both), st.mean(cpu))
    out.append(f"| {name} | {st.mean(a):.2f} ± {sd(a):.2f} | {st.mean(b):.2f} ± {sd(b):.2f} "
               f"| {st.mean(both):.2f} ± {sd(both):.2f} | {size_mb / st.mean(a):.0f} "
               f"| {size_mb / st.mean(b):.0f} | {2 * size_mb / st.mean(both):.0f} | {st.mean(cpu):.2f} |")
(yt, yc), (dt, dc) = tot["yun"], tot["docker-registry"]
out.append("")
out.append(f"{client}: {up}+{down} throughput yun / docker-registry = {dt / yt:.2f}x; "
           f"server CPU docker-registry / yun = {dc / yc:.2f}x (means of {rounds} rounds, {size_mb:.0f} MB).")
print("\n".join(out))
PY
}
table=$(summary "$skopeo_results" skopeo push pull)
floor=$(python3 -c 'import statistics as st,sys; v=[float(l) for l in open(sys.argv[1]) if l.strip()]; print(f"{st.mean(v):.2f} ± {st.stdev(v) if len(v) > 1 else 0:.2f} s")' "$floor_results")
curl_table=$(summary "$curl_results" curl upload download)

[ "$RECORD" = 1 ] || { printf '%s\nskopeo alone (oci: -> dir:): %s\n\n%s\n' "$table" "$floor" "$curl_table"; exit 0; }
{
    echo
    echo "## Registry: skopeo push + pull, yun vs docker-registry ($(date -u +%Y-%m-%d), $(nproc) cores, $(uname -r))"
    echo
    echo "Command: \`./bench/registry.sh\` (ROUNDS=$ROUNDS, LAYERS=$LAYERS, LAYER_MB=$LAYER_MB); yun served by \`$yun_cmd\`"
    echo "($(git rev-parse --short HEAD 2>/dev/null || echo unknown)), $(docker-registry --version | awk '{print $2, $3}'), $(skopeo --version)."
    echo "Each round starts the server on empty storage; skopeo copies \`oci:\` → \`docker://\` with \`--preserve-digests\`"
    echo "(layers stay uncompressed), then back to a new \`oci:\` layout; server start and stop are not timed."
    echo
    echo "$table"
    echo
    echo "Target: >= 1.5x. The client bounds this measure: skopeo alone, copying the same layout to a"
    echo "local \`dir:\` with no server at all, takes $floor, which no push can beat."
    echo
    echo "The same servers with curl as the client (all blobs uploaded in parallel as POST + PUT with"
    echo "\`?digest=\`, then downloaded in parallel), which leaves the CPU to the server:"
    echo
    echo "$curl_table"
} >>docs/benchmarks.md
printf '%s\n\n%s\n' "$table" "$curl_table"
