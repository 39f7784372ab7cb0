#!/bin/sh
# `yun run --rm` of an already-unpacked image vs `podman run --rm --runtime runc` of the same
# image (the built-in busybox rootfs, imported into podman), in one hyperfine run. Appends
# the table to docs/benchmarks.md.
#
#   sudo ./bench/engine.sh            (after `cargo build --release`)
set -eu
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
YUN=${CARGO_TARGET_DIR:-$PWD/target}/release/yun
[ -x "$YUN" ] || { echo "build first: cargo build --release" >&2; exit 1; }
RUNS=${RUNS:-100}
tag=yun-bench-$$
data=/var/lib/$tag
pm_root=/var/lib/$tag-podman
pm_run=/run/$tag-podman
work=$(mktemp -d /tmp/yun-bench-XXXXXX)
P="podman --root $pm_root --runroot $pm_run --tmpdir $pm_run/tmp --storage-driver overlay --cgroup-manager cgroupfs --events-backend file"
cleanup() {
    $P rm -af >/dev/null 2>&1 || true
    $P system reset -f >/dev/null 2>&1 || true
    grep -o " $pm_root[^ ]*\| $pm_run[^ ]*\| $data[^ ]*" /proc/self/mounts | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
    rm -rf "$data" "$pm_root" "$pm_run" "$work"
    for d in /sys/fs/cgroup/*/$tag; do rmdir "$d"/* "$d" 2>/dev/null || true; done
}
trap cleanup EXIT

# The same image for both: yun's built-in busybox, exported as a tar for podman.
"$YUN" --data-dir "$data" run --rm busybox true
"$YUN" --data-dir "$data" save -o "$work/busybox.tar" busybox
$P load -i "$work/busybox.tar" >/dev/null
pm_image=$($P images --format '{{.ID}}' | head -1)

hyperfine -N --warmup 5 --runs "$RUNS" --export-markdown "$work/run.md" --export-json "$work/run.json" \
    -n "yun run --rm" "$YUN --data-dir $data run --rm busybox true" \
    -n "podman run --rm (runc)" "$P run --rm --runtime runc --network none --cgroup-parent /$tag --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 $pm_image true"

{
    echo
    echo "## Engine: \`yun run --rm\` vs \`podman run --rm --runtime runc\` ($(date -u +%Y-%m-%d), $(nproc) cores)"
    echo
    echo "Command: \`sudo ./bench/engine.sh\` (RUNS=$RUNS); image: the built-in busybox (already unpacked), running /bin/true;"
    echo "podman $($P --version | awk '{print $3}') with runc, --network none; yun $(git rev-parse --short HEAD)."
    echo
    cat "$work/run.md"
    echo
    python3 - "$work/run.json" <<'PY'
import json, sys
r = {x["command"]: x["median"] * 1000 for x in json.load(open(sys.argv[1]))["results"]}
y, p = r["yun run --rm"], r["podman run --rm (runc)"]
print(f"Medians: yun {y:.1f} ms, podman {p:.1f} ms; yun/podman = {y / p:.2f} (target <= 0.3).")
PY
} >> docs/benchmarks.md
tail -n 14 docs/benchmarks.md
