#!/bin/sh
# VM benchmarks, all in one run on the same Debian cloud kernel + yun initramfs (TCG here):
#  1. boot + run `true` + exit: `yun vm run` vs a plain `qemu-system-x86_64 -M microvm -accel tcg`;
#  2. reliability: 50 consecutive boots with yun's machine options (the ignored test);
#  3. snapshot restore -> guest running vs cold boot -> guest ready (managed VMs);
#  4. KSM: memory shared across $KSM_VMS identical idle VMs; yun's supervisor RSS per VM;
#  5. vsock: `yun vm exec -- true` round trips, and the supervisor's RSS with the device.
# Appends the tables, with date and command, to docs/benchmarks.md.
set -eu
cd "$(dirname "$0")/.."
RUNS=${RUNS:-10}
DATA=${DATA:-/var/cache/yun-test-kernel}
KSM_VMS=${KSM_VMS:-10}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
cargo build -q --release -p yun
YUN=$CARGO_TARGET_DIR/release/yun
"$YUN" --data-dir "$DATA" vm run -- true   # fetch kernel, build initramfs
KDIR=$(ls -d "$DATA"/vm/kernels/*/ | head -n1)
INITRD=$(ls -t "$DATA"/vm/initramfs/*.cpio | grep -v -- -vsock- | head -n1)
OUT=$(mktemp -d /tmp/yun-bench-vm.XXXXXX)
VMDATA=$OUT/data
mkdir -p "$VMDATA"
Y="$YUN --data-dir $VMDATA vm"
cleanup() {
  for n in $($Y list 2>/dev/null | awk 'NR>1 {print $1}'); do $Y rm -f "$n" >/dev/null 2>&1 || true; done
  "$YUN" --data-dir "$DATA" vm rm -f yun-bench-vsock >/dev/null 2>&1 || true
  if [ -n "${KSM_RUN:-}" ]; then
    echo "$KSM_SCAN" > /sys/kernel/mm/ksm/pages_to_scan
    echo "$KSM_SLEEP" > /sys/kernel/mm/ksm/sleep_millisecs
    echo "$KSM_RUN" > /sys/kernel/mm/ksm/run
  fi
  rm -rf "$OUT"
}
trap cleanup EXIT INT TERM

# 1. boot -> marker -> exit
CMD=$(printf true | base64 -w0)
APPEND="console=ttyS0 quiet loglevel=0 panic=-1 yun.nonce=0 yun.cmd=$CMD"
RUN="$YUN --data-dir $DATA vm run --memory 256 --initrd $INITRD -- true"
PLAIN="timeout 20 qemu-system-x86_64 -M microvm -accel tcg -nodefaults -no-user-config -display none -no-reboot -serial stdio -m 256M -kernel ${KDIR}vmlinuz -initrd $INITRD -append '$APPEND'"
# -i: plain microvm hangs in some boots (killed by timeout after 20 s); those runs are counted
# and left out of its mean rather than aborting the benchmark.
hyperfine -N -i --warmup 1 --runs "$RUNS" --export-json "$OUT/boot.json" -n "yun vm run" "$RUN" -n "qemu microvm" "$PLAIN"
python3 - "$OUT/boot.json" >"$OUT/boot.md" <<'PY'
import json, statistics as st, sys
res = json.load(open(sys.argv[1]))["results"]
rows, means = [], []
for r in res:
    ok = [t for t, c in zip(r["times"], r["exit_codes"]) if c == 0]
    m = st.mean(ok) if ok else float("nan")
    sd = st.stdev(ok) if len(ok) > 1 else 0.0
    means.append(m)
    rows.append((r["command"], m, sd, min(ok) if ok else m, max(ok) if ok else m, len(ok), len(r["times"])))
print("| Command | Mean of completed runs [s] | Min [s] | Max [s] | Completed / hung | Relative |")
print("|:---|---:|---:|---:|---:|---:|")
for (cmd, m, sd, lo, hi, n, tot) in rows:
    print(f"| `{cmd}` | {m:.3f} ± {sd:.3f} | {lo:.3f} | {hi:.3f} | {n} / {tot - n} | {m / means[1]:.2f} |")
PY

# 2. 50 consecutive boots
T0=$(date +%s)
if cargo test -q -p yun-vmm --test vm -- --ignored fifty_consecutive_boots_none_hangs >"$OUT/fifty.log" 2>&1; then
  FIFTY="50 of 50 boots reached the guest marker, none hung ($(($(date +%s) - T0)) s)"
else
  FIFTY="FAILED: $(grep -m1 'boot [0-9]* of 50' "$OUT/fifty.log" || tail -n1 "$OUT/fifty.log")"
fi

# 3. restore vs cold boot (to a guest that printed "ready")
GUEST='echo ready; while :; do sleep 1; done'
$Y create yun-bench-cold --kernel "${KDIR}vmlinux" --initrd "$INITRD" -- "$GUEST" >/dev/null
$Y create yun-bench-snap --kernel "${KDIR}vmlinux" --initrd "$INITRD" -- "$GUEST" >/dev/null
COLDLOG=$VMDATA/vm/machines/yun-bench-cold/console.log
SNAPLOG=$VMDATA/vm/machines/yun-bench-snap/console.log
$Y start yun-bench-snap
until grep -q ready "$SNAPLOG" 2>/dev/null; do sleep 0.05; done
$Y snapshot yun-bench-snap --tag warm >/dev/null
$Y stop -f yun-bench-snap
STATE_MB=$(du -m "$VMDATA/vm/machines/yun-bench-snap/snapshots/warm.state" | cut -f1)
hyperfine --runs "$RUNS" --export-markdown "$OUT/restore.md" \
  --prepare "$Y stop -f yun-bench-cold >/dev/null 2>&1; : > $COLDLOG" \
  -n "cold boot (start -> guest ready)" "$Y start yun-bench-cold && until grep -q ready $COLDLOG; do sleep 0.005; done" \
  --prepare "$Y stop -f yun-bench-snap >/dev/null 2>&1; true" \
  -n "restore (-> guest running)" "$Y restore yun-bench-snap --tag warm"
$Y rm -f yun-bench-cold >/dev/null
$Y rm -f yun-bench-snap >/dev/null

# 4. KSM across identical idle VMs, supervisor RSS
KSM_SCAN=$(cat /sys/kernel/mm/ksm/pages_to_scan)
KSM_SLEEP=$(cat /sys/kernel/mm/ksm/sleep_millisecs)
KSM_RUN=$(cat /sys/kernel/mm/ksm/run)
echo 2 > /sys/kernel/mm/ksm/run   # unmerge whatever was merged before: count only our VMs
echo 0 > /sys/kernel/mm/ksm/run
i=1
while [ $i -le "$KSM_VMS" ]; do
  $Y create "yun-bench-ksm$i" --memory 256 --kernel "${KDIR}vmlinux" --initrd "$INITRD" --start -- "$GUEST" >/dev/null
  i=$((i + 1))
done
for i in $(seq 1 "$KSM_VMS"); do
  until grep -q ready "$VMDATA/vm/machines/yun-bench-ksm$i/console.log" 2>/dev/null; do sleep 0.1; done
done
# Sum of one `yun vm stats` field over the VMs, MiB.
stats_sum() {
  s=0
  for i in $(seq 1 "$KSM_VMS"); do
    r=$($Y stats "yun-bench-ksm$i" | sed -n "s/.*\"$1\": \([0-9]*\).*/\1/p")
    s=$((s + r))
  done
  echo $((s / 1024))
}
RSS_BEFORE=$(stats_sum hypervisor_rss_kib)
# The guests' resident RAM: what KSM can share (QEMU's RSS also holds its TCG code cache and
# the page-cache mapping of the kernel file, which KSM does not scan).
GUEST_RSS=$(stats_sum guest_ram_rss_kib)
echo 10000 > /sys/kernel/mm/ksm/pages_to_scan
echo 20 > /sys/kernel/mm/ksm/sleep_millisecs
$Y ksm on >/dev/null
SCANS0=$(cat /sys/kernel/mm/ksm/full_scans)
T0=$(date +%s)
# Until sharing settles: 10 full scans (KSM merges a page on the scan after it found a twin).
while [ $(($(cat /sys/kernel/mm/ksm/full_scans) - SCANS0)) -lt 10 ] && [ $(($(date +%s) - T0)) -lt 300 ]; do sleep 1; done
KSM_S=$(($(date +%s) - T0))
SHARING=$(cat /sys/kernel/mm/ksm/pages_sharing)
SHARED=$(cat /sys/kernel/mm/ksm/pages_shared)
GUEST_MB=$((KSM_VMS * 256))
SUP=""
for i in $(seq 1 "$KSM_VMS"); do
  pid=$(sed -n 's/.*"supervisor_pid": \([0-9]*\).*/\1/p' "$VMDATA/vm/machines/yun-bench-ksm$i/state.json")
  rss=$(awk '/^Rss:/ {print $2}' "/proc/$pid/smaps_rollup")
  pss=$(awk '/^Pss:/ {print $2}' "/proc/$pid/smaps_rollup")
  SUP="$SUP $rss/$pss"
done
SUP_MAX=$(echo "$SUP" | tr ' ' '\n' | cut -d/ -f1 | sort -n | tail -n1)
SUP_PSS_MAX=$(echo "$SUP" | tr ' ' '\n' | cut -d/ -f2 | sort -n | tail -n1)
RSS_AFTER=$(stats_sum hypervisor_rss_kib)
# After KSM: the guest RAM still resident, and how much of it is KSM-merged. The rest of the drop
# in resident guest RAM is zero-filled pages: KSM splits the transparent huge pages the guest RAM
# sits in, and the kernel maps the zero-filled 4 KiB pieces of a split huge page to its one zero page.
GUEST_RSS_AFTER=$(stats_sum guest_ram_rss_kib)
GUEST_KSM=$(stats_sum guest_ram_ksm_kib)
GUEST_ZERO=$((GUEST_RSS - GUEST_RSS_AFTER))
GUEST_PRIVATE=$((GUEST_RSS_AFTER - GUEST_KSM))
SHARED_MB=$((SHARED * 4 / 1024))
HOST_AFTER=$((GUEST_PRIVATE + SHARED_MB))
for i in $(seq 1 "$KSM_VMS"); do $Y rm -f "yun-bench-ksm$i" >/dev/null; done

# 5. vsock: a command through the in-guest agent, and the supervisor running the device
T0=$(date +%s%N)
# In the kernel cache's data dir: its default initramfs for vsock VMs is built there.
YC="$YUN --data-dir $DATA vm"
$YC rm -f yun-bench-vsock >/dev/null 2>&1 || true
$YC create yun-bench-vsock --vsock --start -- "$GUEST" >/dev/null
$YC exec yun-bench-vsock -- true
START_EXEC_MS=$((($(date +%s%N) - T0) / 1000000))
hyperfine -N --warmup 3 --runs 30 --export-markdown "$OUT/exec.md" -n "yun vm exec -- true" "$YC exec yun-bench-vsock -- true"
pid=$(sed -n 's/.*"supervisor_pid": \([0-9]*\).*/\1/p' "$DATA/vm/machines/yun-bench-vsock/state.json")
# The device maps the guest's RAM (shared with QEMU, counted in QEMU's RSS too): the pages of
# it that the virtqueues touched are in the supervisor's RSS as well; reported apart.
GUEST_RAM_KIB=$(awk '/^[0-9a-f]+-/ {g = ($6 ~ /^\/memfd:memory-backend/)} /^Rss:/ && g {s += $2} END {print s + 0}' "/proc/$pid/smaps")
VSOCK_RSS=$(awk '/^Rss:/ {print $2}' "/proc/$pid/smaps_rollup")
VSOCK_SUP="$VSOCK_RSS KiB (PSS $(awk '/^Pss:/ {print $2}' "/proc/$pid/smaps_rollup") KiB), of which guest RAM mapped by the device $GUEST_RAM_KIB KiB: the supervisor's own $((VSOCK_RSS - GUEST_RAM_KIB)) KiB"
$YC rm -f yun-bench-vsock >/dev/null

{
  echo
  echo "## VM: boot + run \`true\` + exit ($(date -u +%Y-%m-%d))"
  echo
  echo "Command: \`bench/vm.sh\` (RUNS=$RUNS, TCG, 256 MiB, 1 vCPU, kernel $(basename "$KDIR")); yun: \`-M pc\` + options of docs/vm.md, uncompressed vmlinux; plain: \`-M microvm\`, vmlinuz"
  echo
  cat "$OUT/boot.md"
  echo
  echo "Reliability (\`cargo test -p yun-vmm --test vm -- --ignored fifty_consecutive_boots_none_hangs\`): $FIFTY."
  echo
  echo "### VM: snapshot restore vs cold boot ($(date -u +%Y-%m-%d))"
  echo
  echo "Command: \`bench/vm.sh\`; managed VMs (256 MiB), cold = \`yun vm start\` until the guest printed ready, restore = \`yun vm restore\` (returns with the guest running); saved state ${STATE_MB} MiB"
  echo
  cat "$OUT/restore.md"
  echo
  echo "### VM: KSM across $KSM_VMS identical idle VMs, supervisor memory ($(date -u +%Y-%m-%d))"
  echo
  echo "Command: \`bench/vm.sh\` (KSM_VMS=$KSM_VMS, 256 MiB each, \`mem-merge=on\`; KSM pages_to_scan=10000, sleep 20 ms, 10 full scans = ${KSM_S} s)"
  echo
  echo "| measure | value |"
  echo "| --- | --- |"
  echo "| guest memory configured | $GUEST_MB MiB |"
  echo "| guest RAM resident before KSM, sum | $GUEST_RSS MiB (the rest was never touched) |"
  echo "| after KSM: private to one VM | $GUEST_PRIVATE MiB |"
  echo "| after KSM: KSM-merged (counted in every VM that maps it) | $GUEST_KSM MiB, held once on the host: $SHARED_MB MiB (pages_shared $SHARED, pages_sharing $SHARING) |"
  echo "| after KSM: zero-filled, now the kernel's one zero page | $GUEST_ZERO MiB (pieces of the huge pages KSM split) |"
  echo "| **guest memory shared** (KSM-merged + zero page) | **$((GUEST_KSM + GUEST_ZERO)) MiB = $(((GUEST_KSM + GUEST_ZERO) * 100 / GUEST_RSS))% of the guests' resident memory** |"
  echo "| host memory holding the guests' RAM | $GUEST_RSS MiB before, $HOST_AFTER MiB after (private + pages_shared): -$(((GUEST_RSS - HOST_AFTER) * 100 / GUEST_RSS))%; $((HOST_AFTER * 100 / GUEST_MB))% of configured |"
  echo "| QEMU RSS, sum, before / after KSM | $RSS_BEFORE / $RSS_AFTER MiB (also its TCG code cache and the kernel file mapping; RSS counts a merged page in every process) |"
  echo "| supervisor RSS/PSS per VM (KiB) |$SUP |"
  echo "| supervisor RSS max | $SUP_MAX KiB (PSS max $SUP_PSS_MAX KiB) |"
  echo
  echo "### VM: a command through vsock ($(date -u +%Y-%m-%d))"
  echo
  echo "Command: \`bench/vm.sh\`; a managed VM with \`--vsock\` (256 MiB): \`yun vm exec\` connects to the VM's vsock.sock, the device (in the supervisor) opens guest port 1024, the agent runs \`sh -c true\` and reports its status"
  echo
  cat "$OUT/exec.md"
  echo
  echo "create + start + first exec answered: $START_EXEC_MS ms; supervisor RSS with the vsock device, after the runs: $VSOCK_SUP"
} >> docs/benchmarks.md
tail -n 40 docs/benchmarks.md
