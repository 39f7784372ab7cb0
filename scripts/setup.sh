#!/bin/sh
# The README's first command: system dependencies, a release build, and yun's main job on
# the built-in defaults (for now: a container from the built-in busybox image).
set -eu
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "run as root (containers need it)" >&2; exit 1; }
./scripts/deps.sh
cargo build --release --locked
bundle=/var/lib/yun/bundles/hello
rm -rf "$bundle"
./target/release/yun bundle "$bundle" -- /bin/sh -c 'echo "hello from a yun container: pid $$ on $(hostname), $(id)"'
exec ./target/release/yunc run --bundle "$bundle" "yun-hello-$$"
