#!/bin/sh
# Layer unpack: yun's unpacker (crates/image/examples/unpack.rs, the code behind
# `Store::unpack`) beside GNU tar on the same ~100 MB layer of many files from /usr, plain and
# gzip, in one hyperfine run each. Appends the tables to docs/benchmarks.md.
#
#   sudo ./bench/image.sh          (builds the example in release mode first)
#
# Destinations live on a fresh loop-mounted ext4 (nodiscard) and on tmpfs, both under a
# yun-bench temp dir: on hosts whose root fs is mounted with `discard`, every `rm -rf` of the
# previous run's tree makes the next run wait for discards, which swamps what is measured.
set -eu
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "run as root (mounts a loop ext4 and a tmpfs)" >&2; exit 1; }
RUNS=${RUNS:-10}
LAYER_MB=${LAYER_MB:-100}
target=${CARGO_TARGET_DIR:-$PWD/target}
cargo build --release -q -p yun-image --example unpack
UNPACK=$target/release/examples/unpack

work=$(mktemp -d /var/tmp/yun-bench-image-XXXXXX)
cleanup() {
    umount "$work/ext4" 2>/dev/null || true
    umount "$work/tmpfs" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# The layer: files of /usr under 512 KiB (an image's typical mix: many small files) in path
# order until LAYER_MB, with their directories.
python3 - "$LAYER_MB" > "$work/list" <<'PY'
import os, sys
limit, total, dirs = int(sys.argv[1]) << 20, 0, set()
for root, ds, fs in os.walk("/usr"):
    ds.sort()
    for f in sorted(fs):
        p = os.path.join(root, f)
        try:
            st = os.lstat(p)
        except OSError:
            continue
        if st.st_size > 512 << 10:
            continue
        rel = os.path.relpath(root, "/")
        while rel not in dirs and rel != ".":
            dirs.add(rel); print(rel); rel = os.path.dirname(rel) or "."
        print(os.path.relpath(p, "/"))
        total += st.st_size
        if total >= limit:
            sys.exit(0)
PY
sort -u "$work/list" > "$work/list.sorted"
tar --no-recursion -C / -cf "$work/layer.tar" -T "$work/list.sorted" 2>/dev/null || true
gzip -1 -c "$work/layer.tar" > "$work/layer.tar.gz"
entries=$(tar -tf "$work/layer.tar" | wc -l)
size_mb=$(( $(stat -c %s "$work/layer.tar") >> 20 ))
gz_mb=$(( $(stat -c %s "$work/layer.tar.gz") >> 20 ))

truncate -s 4G "$work/ext4.img"
mkfs.ext4 -q -F "$work/ext4.img"
mkdir -p "$work/ext4" "$work/tmpfs"
mount -o loop,nodiscard "$work/ext4.img" "$work/ext4"
mount -t tmpfs -o size=3g yun-bench "$work/tmpfs"

run() { # name layer dest-fs tar-flags
    dest=$work/$3/dest
    hyperfine -N --warmup 2 --runs "$RUNS" --prepare "sh -c 'rm -rf $dest; mkdir -p $dest; sync'" \
        --export-markdown "$work/$1.md" --export-json "$work/$1.json" \
        -n "yun unpack ($3)" "$UNPACK $2 $dest" \
        -n "tar -x$4 ($3)" "tar -x${4}f $2 -C $dest" >&2
}
run plain-ext4 "$work/layer.tar" ext4 ""
run plain-tmpfs "$work/layer.tar" tmpfs ""
run gzip-ext4 "$work/layer.tar.gz" ext4 "z"

ratio() { # yun's mean as a fraction of tar's
    python3 - "$1" <<'PY'
import json, sys
r = [x["mean"] for x in json.load(open(sys.argv[1]))["results"]]
print(f"yun/tar = {r[0] / r[1]:.2f} (target <= 1.2)")
PY
}

rev=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
{
    echo
    echo "## Image: layer unpack, yun vs GNU tar ($(date -u +%Y-%m-%d), $(nproc) cores, $(uname -r))"
    echo
    echo "Command: \`sudo ./bench/image.sh\` (RUNS=$RUNS); layer: $entries entries from /usr,"
    echo "$size_mb MiB plain, $gz_mb MiB gzip -1; $(tar --version | head -1), yun $rev."
    echo "Destinations emptied before each run (\`--prepare\`), on a loop-mounted ext4 (nodiscard) and tmpfs."
    for t in plain-ext4 plain-tmpfs gzip-ext4; do
        echo
        cat "$work/$t.md"
        echo
        echo "$t: $(ratio "$work/$t.json")"
    done
} >> docs/benchmarks.md
echo "appended to docs/benchmarks.md" >&2
