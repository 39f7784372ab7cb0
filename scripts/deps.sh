#!/bin/sh
# Install the Debian packages yun needs (only the missing ones; quick when all are there).
# Build: pkg-config + libseccomp-dev, protobuf-compiler (etcd-client's protoc). Runtime: busybox-static (the built-in image),
# iproute2. Tests: podman (+conmon), skopeo, docker-registry and htpasswd (apache2-utils) as
# real peers; etcd-server (store tests), qemu-system-x86, e2fsprogs and cpio (VMs).
# Benchmarks: runc, crun, hyperfine, GNU time.
set -eu
PKGS="pkg-config libseccomp-dev busybox-static iproute2 procps tar podman conmon runc crun hyperfine time skopeo docker-registry apache2-utils libcap2-bin etcd-server qemu-system-x86 e2fsprogs cpio protobuf-compiler"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "installing:$missing"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing
fi
command -v cargo >/dev/null || { echo "cargo not found: install the Rust toolchain (rustup)" >&2; exit 1; }
