#!/bin/sh
# Persistent volumes (issue 21): file I/O on a local-path claim's volume (ext4 in a file on a
# loop device, what a pod's volumeMount is bound to) beside the same on a plain directory of
# the data dir's filesystem, in the same run, with fio: sequential write and read (1 MiB
# blocks) and random 4 KiB write and read (direct I/O, iodepth 16). Appends the table to
# docs/benchmarks.md.
#
#   ./bench/storage.sh                   (builds yun in release mode first)
#   YUN=target/debug/yun SIZE=256M ./bench/storage.sh
set -eu
cd "$(dirname "$0")/.."
SIZE=${SIZE:-512M}
RUNTIME=${RUNTIME:-15}
TARGET=${CARGO_TARGET_DIR:-$PWD/target}
if [ -z "${YUN:-}" ]; then
    cargo build --release -q -p yun --bin yun
    YUN=$TARGET/release/yun
fi
command -v fio >/dev/null || { echo "fio is needed (apt-get install fio)" >&2; exit 1; }
KUBECTL=/usr/lib/google-cloud-sdk/bin/kubectl.1.33
. bench/lib/up.sh
bench_work storage "--name yun-bench --bridge yunbenchs0 --pod-cidr 10.239.3.0/24"
k() { "$KUBECTL" --kubeconfig "$work/up/kubeconfig" "$@"; }

start_yun_up
k apply -f - >/dev/null <<EOF
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: bench}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 2Gi}}
---
apiVersion: v1
kind: Pod
metadata: {name: bench}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - {name: c, image: busybox, command: [sleep, "3600"], volumeMounts: [{name: v, mountPath: /data}]}
  volumes: [{name: v, persistentVolumeClaim: {claimName: bench}}]
EOF
k wait --for=condition=Ready pod/bench --timeout=120s >/dev/null
pv=$(k get pvc bench -o jsonpath='{.spec.volumeName}')
volume=$(k get pv "$pv" -o jsonpath='{.spec.local.path}')
plain="$work/plain"
mkdir -p "$plain"

# One fio job on DIR: prints the bandwidth in MiB/s (seq) or the IOPS (rand).
run_fio() { # dir name rw bs direct
    out=$(fio --name="$2" --directory="$1" --rw="$3" --bs="$4" --size="$SIZE" --direct="$5" \
        --ioengine=libaio --iodepth=16 --runtime="$RUNTIME" --time_based=0 --end_fsync=1 \
        --group_reporting --output-format=json)
    rm -f "$1/$2".*
    case "$3" in
        write | randwrite) side=write ;;
        *) side=read ;;
    esac
    case "$3" in
        rand*) echo "$out" | python3 -c "import json,sys; print('%.0f' % json.load(sys.stdin)['jobs'][0]['$side']['iops'])" ;;
        *) echo "$out" | python3 -c "import json,sys; print('%.0f' % (json.load(sys.stdin)['jobs'][0]['$side']['bw'] / 1024))" ;;
    esac
}

# Lay the read files down first (fio reads what it wrote), then measure each pattern on both.
rows=""
for spec in "seq-write write 1M 0" "seq-read read 1M 0" "rand-write randwrite 4k 1" "rand-read randread 4k 1"; do
    set -- $spec
    name=$1
    rw=$2
    bs=$3
    direct=$4
    if [ "$rw" = read ] || [ "$rw" = randread ]; then
        # The page cache would serve a read of what was just written: drop it first.
        fio --name="$name" --directory="$volume" --rw=write --bs=1M --size="$SIZE" --end_fsync=1 >/dev/null
        fio --name="$name" --directory="$plain" --rw=write --bs=1M --size="$SIZE" --end_fsync=1 >/dev/null
        sync
        echo 3 >/proc/sys/vm/drop_caches
    fi
    p=$(run_fio "$plain" "$name" "$rw" "$bs" "$direct")
    [ "$rw" = read ] || [ "$rw" = randread ] && { sync; echo 3 >/proc/sys/vm/drop_caches; }
    v=$(run_fio "$volume" "$name" "$rw" "$bs" "$direct")
    unit="MiB/s"
    case "$rw" in rand*) unit="IOPS" ;; esac
    ratio=$(echo "scale=2; $v / $p" | bc)
    rows="$rows| $name ($bs, direct=$direct) | $p $unit | $v $unit | ${ratio}× |
"
done

fs=$(stat -f -c %T "$work")
{
    echo
    echo "## Storage: a local-path volume vs a plain directory ($(date -u +%Y-%m-%d), $(nproc) cores)"
    echo
    echo "Command: \`bench/storage.sh\` (fio $(fio --version | sed 's/fio-//'), $SIZE per job, libaio iodepth 16, \`$(basename "$(dirname "$YUN")")\` build); the data dir is on $fs; the volume is ext4 in a file on a loop device, as a pod mounts it."
    echo
    echo "| job | plain directory | local-path volume | volume / plain |"
    echo "| --- | --- | --- | --- |"
    printf "%s" "$rows"
} >>docs/benchmarks.md
tail -n 9 docs/benchmarks.md
