#!/usr/bin/env bash
# Runs the store benchmark (bench/, binary store-bench): durable writes and linearizable reads
# with 1, 16 and 64 clients against a 3-member Keelson store on loopback and, in the same run, a
# 3-member etcd (Debian's etcd-server); prints ops/s, p50/p99 and Keelson/etcd ratios.
# Installs from Debian what it needs and is missing: etcd-server (the baseline) and
# protobuf-compiler (etcd's gRPC client). Arguments go to store-bench (see --help), e.g.
#   scripts/bench.sh --seconds 3 --clients 64
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh bench
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/keelson-target}
cargo build --bin keelson -p keelson -p keelson-bench
exec "$CARGO_TARGET_DIR/debug/store-bench" "$@"
