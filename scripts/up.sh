#!/usr/bin/env bash
# Starts a one-machine Keelson cluster with embedded defaults: installs what is missing from
# Debian (build: libclang-dev, build-essential, pkg-config; node: runc, busybox-static,
# iproute2), builds keelson and kctl, then runs `keelson up` (a master and a node in one
# process; containers run through runc as root, else as plain processes).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh build node
cargo build --release --bin keelson --bin kctl
exec "${CARGO_TARGET_DIR:-target}/release/keelson" up "$@"
