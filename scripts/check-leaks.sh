#!/bin/sh
# After the suite: no yun test mounts, cgroups, state directories, namespaces or processes.
#
#   check-leaks.sh                  report every yun test leftover on the host (exit 1 if any)
#   check-leaks.sh --baseline FILE  record the leftovers present now (before the suite) in FILE
#   check-leaks.sh --since FILE     report only leftovers not in FILE: the ones this run made
#
# The baseline exists because a suite that was killed (SIGKILL, a machine restart) cannot
# clean up after itself; its leftovers are listed as a warning so that the next run neither
# blames itself for them nor hides what it leaks itself.
set -u
mode=${1:-}
file=${2:-}

# One line per leftover, prefixed by its kind.
inventory() {
    grep -E 'yun(c)?-test|/run/yunc' /proc/self/mounts | sed 's/^/mount: /'
    find /sys/fs/cgroup -mindepth 2 -type d \( -name 'yun-test*' -o -name 'yun-*-test*' -o -path '*/yun/*' \) 2>/dev/null | sed 's/^/cgroup: /'
    ls -d /run/yunc-test-* /run/yun-test-* /var/lib/yun-test-* /tmp/yun-test-* 2>/dev/null | sed 's/^/state dir: /'
    ip netns list 2>/dev/null | grep yun | sed 's/ (id.*//; s/^/netns: /'
    ip -o link show 2>/dev/null | grep -E '^[0-9]+: yun' | awk '{print "link: " $2}' | sed 's/@.*//; s/:$//'
    grep ' /run/netns/yun' /proc/self/mounts | sed 's/^/netns mount: /'
    nft list tables 2>/dev/null | grep ' yun' | sed 's/^/nft /'
    pgrep -af 'docker-registry serve /tmp/yun-test|registry serve .*yun-test' 2>/dev/null | sed 's/^[0-9]* /registry server: /'
    for f in $(grep -lE '/yun/|yun-test' /proc/[0-9]*/cgroup 2>/dev/null | grep -v "^/proc/$$/"); do
        echo "process in a yun cgroup: $(tr '\0' ' ' <"${f%/cgroup}/cmdline" 2>/dev/null)"
    done
}

case "$mode" in
--baseline)
    inventory >"$file"
    if [ -s "$file" ]; then
        echo "WARNING: leftovers from an earlier, interrupted run (not this one's; remove them by hand):" >&2
        sed 's/^/  /' "$file" >&2
    fi
    exit 0
    ;;
--since) ;;
"") file=/dev/null ;;
*)
    echo "usage: $0 [--baseline FILE | --since FILE]" >&2
    exit 2
    ;;
esac

# Processes may still be exiting (killed containers): give them up to 3 s.
for _ in 1 2 3 4 5 6; do
    new=$(inventory | grep -vxF -f "$file")
    [ -z "$new" ] && break
    sleep 0.5
done
if [ -n "$new" ]; then
    echo "$new" | sed 's/^/LEAK: /' >&2
    exit 1
fi
echo "no leaks: no yun test mounts, cgroups, state dirs, namespaces or processes remain"
