#!/bin/sh
# yunc beside runc and crun on the same busybox bundle running /bin/true, in one hyperfine
# run; plus create+start+delete and peak RSS. Appends the results to docs/benchmarks.md.
#
#   sudo ./bench/runtime.sh            (after `cargo build --release`)
set -eu
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
YUN=${CARGO_TARGET_DIR:-$PWD/target}/release/yun
YUNC=${CARGO_TARGET_DIR:-$PWD/target}/release/yunc
[ -x "$YUNC" ] || { echo "build first: cargo build --release" >&2; exit 1; }
RUNS=${RUNS:-200}
work=$(mktemp -d /tmp/yun-bench-XXXXXX)
root=/run/yun-bench-$$
trap 'for r in yunc runc crun; do rm -rf $root/$r; done; rm -rf "$work" $root' EXIT
bundle=$work/bundle
"$YUN" bundle "$bundle" -- /bin/true >/dev/null
cd "$bundle"

# crun 1.8 refuses this host's hybrid cgroups; record what it says instead of timing it.
crun_note=""
if ! crun --root $root/crun run yun-bench-crun-probe >/dev/null 2>"$work/crun.err"; then
    crun_note="crun: $(head -c 300 "$work/crun.err" | tr '\n' ' ')"
    crun --root $root/crun delete -f yun-bench-crun-probe >/dev/null 2>&1 || true
fi
crun_cmd=""
[ -z "$crun_note" ] && crun_cmd="crun --root $root/crun run yun-bench-crun-\$RANDOM"

hyperfine -N --warmup 10 --runs "$RUNS" --export-markdown "$work/run.md" --export-json "$work/run.json" \
    -n "yunc run" "$YUNC --root $root/yunc run yun-bench-yunc" \
    -n "runc run" "runc --root $root/runc run yun-bench-runc" \
    ${crun_cmd:+-n "crun run" "$crun_cmd"}

cycle() { # create + start + delete (force: /bin/true may not have exited yet)
    printf '%s --root %s create %s && %s --root %s start %s && %s --root %s delete -f %s' \
        "$1" "$2" "$3" "$1" "$2" "$3" "$1" "$2" "$3"
}
hyperfine --warmup 5 --runs "$RUNS" --export-markdown "$work/cycle.md" --export-json "$work/cycle.json" \
    -n "yunc create+start+delete" "$(cycle "$YUNC" $root/yunc yun-bench-yc)" \
    -n "runc create+start+delete" "$(cycle runc $root/runc yun-bench-rc)"

medians() { # "name: median ms" per command, and yunc's median as a fraction of runc's
    python3 - "$1" <<'PY'
import json, sys
r = {x["command"]: x["median"] * 1000 for x in json.load(open(sys.argv[1]))["results"]}
print("Medians: " + ", ".join(f"{k} {v:.1f} ms" for k, v in r.items()) + ".", end=" ")
y = [v for k, v in r.items() if k.startswith("yunc")]
u = [v for k, v in r.items() if k.startswith("runc")]
if y and u:
    print(f"yunc/runc = {y[0] / u[0]:.2f} (target <= 0.5).")
PY
}

rss() { # peak RSS (KiB) of the runtime process for one `run`
    /usr/bin/time -f %M "$@" 2>&1 >/dev/null | tail -1
}
yunc_rss=$(rss "$YUNC" --root $root/yunc run yun-bench-rss-y)
runc_rss=$(rss runc --root $root/runc run yun-bench-rss-r)

cd - >/dev/null
{
    echo
    echo "## Runtime: \`yunc run\` vs runc vs crun ($(date -u +%Y-%m-%d), $(nproc) cores, $(uname -r))"
    echo
    echo "Command: \`sudo ./bench/runtime.sh\` (RUNS=$RUNS); bundle: built-in busybox running /bin/true;"
    echo "runc $(runc --version | head -1 | awk '{print $3}'), crun $(crun --version | head -1 | awk '{print $3}'), yunc $(git rev-parse --short HEAD)."
    echo
    cat "$work/run.md"
    echo
    medians "$work/run.json"
    echo
    echo
    cat "$work/cycle.md"
    echo
    medians "$work/cycle.json"
    echo
    echo
    echo "Peak RSS of one \`run\` (GNU time, max resident KiB): yunc $yunc_rss, runc $runc_rss."
    [ -n "$crun_note" ] && echo && echo "crun was not timed: it refuses this host. $crun_note"
} >> docs/benchmarks.md
tail -n 30 docs/benchmarks.md
