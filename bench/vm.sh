#!/bin/sh
# VM boot-run-exit: `yun vm run` (examples/run until the CLI is wired) vs plain QEMU microvm on the
# same Debian cloud kernel + yun initramfs, guest command `true`. Appends a table to docs/benchmarks.md.
set -eu
cd "$(dirname "$0")/.."
RUNS=${RUNS:-10}
DATA=${DATA:-/var/cache/yun-test-kernel}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/work/target-vmm}
cargo build -q --release -p yun-vmm --example run
RUN=$CARGO_TARGET_DIR/release/examples/run
"$RUN" --data-dir "$DATA" -- true   # fetch kernel, build initramfs
KDIR=$(ls -d "$DATA"/vm/kernels/*/ | head -n1)
INITRD=$(ls -t "$DATA"/vm/initramfs/*.cpio | head -n1)
CMD=$(printf true | base64 -w0)
APPEND="console=ttyS0 quiet loglevel=0 panic=-1 yun.nonce=0 yun.cmd=$CMD"
YUN="$RUN --data-dir $DATA --memory 256 --initrd $INITRD -- true"
PLAIN="timeout 60 qemu-system-x86_64 -M microvm -accel tcg -nodefaults -no-user-config -display none -no-reboot -serial stdio -m 256M -kernel ${KDIR}vmlinuz -initrd $INITRD -append '$APPEND'"
OUT=$(mktemp -d /tmp/yun-bench-vm.XXXXXX)
trap 'rm -rf "$OUT"' EXIT
hyperfine -N --warmup 1 --runs "$RUNS" --export-markdown "$OUT/t.md" -n "yun vm run" "$YUN" -n "qemu microvm" "$PLAIN"
{
  echo
  echo "## VM: boot + run \`true\` + exit ($(date -u +%Y-%m-%d))"
  echo
  echo "Command: \`bench/vm.sh\` (RUNS=$RUNS, TCG, 256 MiB, 1 vCPU, kernel $(basename "$KDIR"))"
  echo
  cat "$OUT/t.md"
} >> docs/benchmarks.md
