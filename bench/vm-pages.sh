#!/bin/sh
# What two identical idle VMs' guest RAM has in common, page by page (the figures behind the KSM
# section of docs/vm.md): boots two managed VMs as bench/vm.sh's KSM part does and runs
# crates/vmm/examples/guest_pages.rs on their QEMUs. Usage: bench/vm-pages.sh [EXTRA_KERNEL_CMDLINE]
# (e.g. nokaslr, to see whether it changes the split).
set -eu
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
EXTRA=${1:-}
DATA=${DATA:-/var/cache/yun-test-kernel}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
cargo build -q --release -p yun -p yun-vmm --example guest_pages
YUN=$CARGO_TARGET_DIR/release/yun
"$YUN" --data-dir "$DATA" vm run -- true   # fetch kernel, build initramfs
KDIR=$(ls -d "$DATA"/vm/kernels/*/ | head -n1)
INITRD=$(ls -t "$DATA"/vm/initramfs/*.cpio | grep -v -- -vsock- | head -n1)
VMDATA=$(mktemp -d /tmp/yun-bench-pages.XXXXXX)
Y="$YUN --data-dir $VMDATA vm"
cleanup() {
  for n in yun-pages1 yun-pages2; do $Y rm -f "$n" >/dev/null 2>&1 || true; done
  rm -rf "$VMDATA"
}
trap cleanup EXIT INT TERM
for n in yun-pages1 yun-pages2; do
  $Y create "$n" --memory 256 --kernel "${KDIR}vmlinux" --initrd "$INITRD" --cmdline "$EXTRA" \
    --start -- 'echo ready; while :; do sleep 1; done' >/dev/null
done
for n in yun-pages1 yun-pages2; do
  until grep -q ready "$VMDATA/vm/machines/$n/console.log" 2>/dev/null; do sleep 0.1; done
done
sleep 3   # let the guests settle into idle
pid() { sed -n 's/.*"qemu_pid": \([0-9]*\).*/\1/p' "$VMDATA/vm/machines/$1/state.json"; }
echo "extra kernel command line: '${EXTRA}'; KSM run=$(cat /sys/kernel/mm/ksm/run)"
"$CARGO_TARGET_DIR/release/examples/guest_pages" "$(pid yun-pages1)" "$(pid yun-pages2)" 256
