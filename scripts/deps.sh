#!/bin/sh
# Install the Debian packages yun needs (only the missing ones; quick when all are there).
# Build: pkg-config + libseccomp-dev, protobuf-compiler (etcd-client's protoc). Runtime: busybox-static (the built-in image),
# iproute2, nftables (Service virtual IPs). Tests: podman (+conmon), skopeo, docker-registry and htpasswd (apache2-utils) as
# real peers; etcd-server (store tests), qemu-system-x86, qemu-utils (qemu-img), e2fsprogs and cpio (VMs);
# curl (API tests); s3cmd and rclone (S3 clients the s3 tests drive; aws and boto3 come from PyPI).
# Benchmarks: runc, crun, hyperfine, GNU time, fio (bench/storage.sh).
set -eu
PKGS="pkg-config curl s3cmd rclone fio python3-kubernetes qemu-utils libseccomp-dev busybox-static iproute2 procps tar podman conmon runc crun hyperfine time skopeo docker-registry apache2-utils libcap2-bin etcd-server qemu-system-x86 e2fsprogs cpio nftables protobuf-compiler"
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

# Debian's kubectl 1.20 (kubernetes-client), the client the API server tests drive. Extracted with
# dpkg -x into a yun-owned cache rather than installed, so it never fights another kubectl on the host.
KUBECTL_DIR=/var/cache/yun-kubectl
if [ ! -x "$KUBECTL_DIR/usr/bin/kubectl" ]; then
    echo "fetching Debian's kubernetes-client into $KUBECTL_DIR"
    tmp=$(mktemp -d /tmp/yun-kubectl.XXXXXX) && chmod 755 "$tmp"
    (cd "$tmp" && apt-get download -q kubernetes-client) || { apt-get update -q && (cd "$tmp" && apt-get download -q kubernetes-client); }
    rm -rf "$KUBECTL_DIR.part" && mkdir -p "$KUBECTL_DIR.part"
    dpkg -x "$tmp"/kubernetes-client_*.deb "$KUBECTL_DIR.part"
    rm -rf "$tmp" "$KUBECTL_DIR" && mv "$KUBECTL_DIR.part" "$KUBECTL_DIR"
fi
