#!/usr/bin/env bash
# Starts a one-machine Keelson cluster with embedded defaults: installs the build
# dependencies (libclang-dev) if missing, builds keelson and kctl, then runs `keelson up`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh build
cargo build --release --bin keelson --bin kctl
exec "${CARGO_TARGET_DIR:-target}/release/keelson" up "$@"
