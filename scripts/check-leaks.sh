#!/bin/sh
# After the suite: no yun test mounts, cgroups, state directories, namespaces or processes.
set -u
fail=0
report() { echo "LEAK: $*" >&2; fail=1; }

m=$(grep -E 'yun(c)?-test|/run/yunc' /proc/self/mounts) && report "mounts: $m"
c=$(find /sys/fs/cgroup -mindepth 2 -type d \( -name 'yun-test*' -o -name 'yun-*-test*' -o -path '*/yun/*' \) 2>/dev/null | head -20)
[ -n "$c" ] && report "cgroups: $c"
s=$(ls -d /run/yunc-test-* /run/yun-test-* /var/lib/yun-test-* /tmp/yun-test-* 2>/dev/null)
[ -n "$s" ] && report "state/data dirs: $s"
n=$(ip netns list 2>/dev/null | grep yun) && report "network namespaces: $n"
l=$(ip -o link show 2>/dev/null | grep -E '^[0-9]+: yun') && report "links: $l"
m=$(grep ' /run/netns/yun' /proc/self/mounts) && report "netns mounts: $m"
r=$(pgrep -af 'docker-registry serve /tmp/yun-test|registry serve .*yun-test' 2>/dev/null) && report "registry servers: $r"
# Processes may still be exiting (killed containers): give them up to 3 s.
for _ in 1 2 3 4 5 6; do
    p=$(grep -lE '/yun/|yun-test' /proc/[0-9]*/cgroup 2>/dev/null | grep -v "^/proc/$$/" | head -5)
    [ -z "$p" ] && break
    sleep 0.5
done
[ -n "$p" ] && report "processes in yun cgroups: $p $(for f in $p; do cat "${f%/cgroup}/cmdline" 2>/dev/null | tr '\0' ' '; done)"
[ "$fail" = 0 ] && echo "no leaks: no yun test mounts, cgroups, state dirs, namespaces or processes remain"
exit $fail
