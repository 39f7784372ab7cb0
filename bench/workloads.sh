#!/bin/sh
# Workloads (issue 17): a Job of N completions at parallelism P (busybox `true`, restartPolicy
# Never) through `yun up`, timed from its create to its Complete condition, beside its peer on
# the same machine in the same run: a shell loop running N `yun run --rm busybox true`, P at a
# time (xargs -P). Also counted, from watches: the writes to the Job and to its pods (what the
# controllers, the scheduler and the node agent wrote per pod). One run each (a run of 1000
# pods takes minutes, so no hyperfine repetitions). Appends the table to docs/benchmarks.md.
#
#   ./bench/workloads.sh               (builds yun in release mode first; N=1000 P=20)
#   YUN=target/debug/yun N=100 ./bench/workloads.sh
# Build time: CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 shortens it.
set -eu
cd "$(dirname "$0")/.."
N=${N:-1000}
P=${P:-20}
TARGET=${CARGO_TARGET_DIR:-$PWD/target}
if [ -z "${YUN:-}" ]; then
    cargo build --release -q -p yun --bin yun
    YUN=$TARGET/release/yun
fi
KUBECTL=${KUBECTL:-/var/cache/yun-kubectl/usr/bin/kubectl}
. bench/lib/up.sh
bench_work workloads "--name yun-bench --bridge yunbenchw0 --pod-cidr 10.239.1.0/24"
now() { date +%s.%N; }
k() { "$KUBECTL" --kubeconfig "$work/up/kubeconfig" "$@"; }

# The peer: N containers, P at a time, through the engine alone.
"$YUN" --data-dir "$work/engine" run --rm busybox true # the image, unpacked once
start=$(now)
seq "$N" | xargs -P "$P" -I{} "$YUN" --data-dir "$work/engine" run --rm busybox true
loop_s=$(echo "$(now) - $start" | bc)

# yun up and the Job.
start_yun_up
k get pods -w --output-watch-events -o name >"$work/pod-events" 2>/dev/null &
pids="$pids $!"
k get jobs -w --output-watch-events -o name >"$work/job-events" 2>/dev/null &
pids="$pids $!"
# The host's mount table while the Job runs (every container operation reads it): the most
# mounts seen, sampled each second.
( peak=0; while :; do n=$(wc -l </proc/self/mountinfo); [ "$n" -gt "$peak" ] && peak=$n && echo "$peak" >"$work/mounts-peak"; sleep 1; done ) &
pids="$pids $!"
sleep 1
start=$(now)
k apply -f - >/dev/null <<EOF
apiVersion: batch/v1
kind: Job
metadata: {name: bench}
spec:
  completions: $N
  parallelism: $P
  template:
    spec:
      restartPolicy: Never
      containers: [{name: c, image: busybox, command: ["true"]}]
EOF
k wait --for=condition=complete --timeout=3600s job/bench >/dev/null
job_s=$(echo "$(now) - $start" | bc)
succeeded=$(k get job bench -o jsonpath='{.status.succeeded}')
sleep 2
pod_writes=$(grep -c . "$work/pod-events" || true)
job_writes=$(grep -c . "$work/job-events" || true)
ratio=$(echo "scale=2; $job_s / $loop_s" | bc)
mounts_peak=$(cat "$work/mounts-peak" 2>/dev/null || echo "?")

{
    echo
    echo "## Workloads: a Job of $N completions vs a shell loop ($(date -u +%Y-%m-%d), $(nproc) cores)"
    echo
    echo "Command: \`bench/workloads.sh\` (N=$N, P=$P, \`$(basename "$(dirname "$YUN")")\` build); busybox \`true\` both ways."
    echo
    echo "| run | time | per pod |"
    echo "| --- | --- | --- |"
    echo "| \`seq $N \| xargs -P $P yun run --rm busybox true\` | $(printf %.1f "$loop_s") s | $(echo "scale=1; 1000 * $loop_s / $N" | bc) ms |"
    echo "| Job completions=$N parallelism=$P through \`yun up\`, create → Complete | $(printf %.1f "$job_s") s (${ratio}×) | $(echo "scale=1; 1000 * $job_s / $N" | bc) ms |"
    echo
    echo "succeeded: $succeeded; watch events on the pods: $pod_writes ($(echo "scale=2; $pod_writes / $N" | bc) per pod: ADDED, bound, each status change, finalizer removed); on the Job: $job_writes; the most host mounts seen during the Job: $mounts_peak."
} >>docs/benchmarks.md
tail -n 9 docs/benchmarks.md
