#!/bin/sh
# The runtime's share of `kubectl exec` (issue 16): `yunc exec CONTAINER true` run as the node
# agent runs it, from a sealed memfd copy of the binary (so no per-exec copy), RUNS times,
# median and p90; then one exec with YUN_TIMING=1 for its phases. Also what made it slow: the
# time to move a process into a v1 cgroup by writing its pid to cgroup.procs (the kernel's
# global threadgroup lock, an RCU grace period) vs a thread moving itself by writing 0 to
# `tasks`, each in a fresh process, in a `yun`-named pids cgroup. Prints; appends nothing.
#
#   ./bench/runtime-exec.sh        (builds yun in release mode first; YUN=… for another build)
set -eu
cd "$(dirname "$0")/.."
RUNS=${RUNS:-30}
TARGET=${CARGO_TARGET_DIR:-$PWD/target}
if [ -z "${YUN:-}" ]; then
    cargo build --release -q -p yun --bin yun
    YUN=$TARGET/release/yun
fi
work=$(mktemp -d /tmp/yun-bench-rtexec-XXXXXX)
cg=/sys/fs/cgroup/pids/yun-bench-rtexec-$$
cleanup() {
    "$YUN" --data-dir "$work" rm -f yunbenchexec >/dev/null 2>&1 || true
    awk -v w="$work" '$2 ~ "^"w {print $2}' /proc/mounts | sort -r | while read -r m; do
        umount -l "$m" || true
    done
    rm -rf "$work"
    rmdir "$cg" 2>/dev/null || true
}
trap cleanup EXIT INT TERM
"$YUN" --data-dir "$work" run -d --name yunbenchexec busybox sleep 600 >/dev/null
id=$(ls "$work/runtime")
python3 - "$YUN" "$work/runtime" "$id" "$RUNS" <<'PY'
import fcntl, os, statistics, subprocess, sys, time
exe, root, cid, runs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
fd = os.memfd_create("yunc", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
with open(exe, "rb") as f:
    os.write(fd, f.read())
F_ADD_SEALS, ALL_SEALS = 1033, 0xF
fcntl.fcntl(fd, F_ADD_SEALS, ALL_SEALS)
os.set_inheritable(fd, True)
argv = [f"/proc/self/fd/{fd}", "runtime", "--root", root, "exec", cid, "true"]
ms = []
for _ in range(runs):
    t = time.perf_counter()
    subprocess.run(argv, pass_fds=(fd,), check=True)
    ms.append((time.perf_counter() - t) * 1000)
ms.sort()
print(f"yunc exec true from a sealed copy, {runs} runs: median {statistics.median(ms):.1f} ms, "
      f"p90 {ms[int(len(ms) * 0.9)]:.1f} ms")
env = dict(os.environ, YUN_TIMING="1")
start = time.clock_gettime(time.CLOCK_MONOTONIC)
r = subprocess.run(argv, pass_fds=(fd,), env=env, stderr=subprocess.PIPE, check=True, text=True)
end = time.clock_gettime(time.CLOCK_MONOTONIC)
prev = start * 1e6
print("phases (ms since the previous mark):")
for line in r.stderr.splitlines():
    parts = line.split(maxsplit=3)
    if len(parts) == 4 and parts[0] == "yun-timing":
        at = int(parts[1])
        print(f"  {(at - prev) / 1000:6.2f}  {parts[3]}")
        prev = at
print(f"  {(end * 1e6 - prev) / 1000:6.2f}  until yunc exits")
PY
mkdir -p "$cg"
for way in "cgroup.procs pid" "tasks 0"; do
    python3 - "$cg" $way <<'PY'
import os, sys, time
cg, path, what = sys.argv[1], sys.argv[2], sys.argv[3]
samples = []
for _ in range(5):
    pid = os.fork()
    if pid == 0:
        value = str(os.getpid()) if what == "pid" else "0"
        t = time.perf_counter()
        with open(f"{cg}/{path}", "w") as f:
            f.write(value)
        took = (time.perf_counter() - t) * 1000
        with open("/sys/fs/cgroup/pids/cgroup.procs", "w") as f:
            f.write(str(os.getpid()))
        os.write(1, f"{took:.2f}\n".encode())
        os._exit(0)
    os.waitpid(pid, 0)
    time.sleep(1)  # let the lock's RCU state go idle again, as between two execs
PY
done | awk -v a="cgroup.procs <- pid" -v b="tasks <- 0" 'NR<=5 {x = x " " $1} NR>5 {y = y " " $1} END {print "move into a v1 cgroup, ms: " a ":" x "; " b ":" y}'
