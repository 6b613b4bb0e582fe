#!/usr/bin/env bash
# Runs the store benchmark (bench/, binary store-bench): durable writes and linearizable reads
# with 1, 16 and 64 clients against a 3-member Keelson store on loopback and, in the same run, a
# 3-member etcd (Debian's etcd-server); prints ops/s, p50/p99 and Keelson/etcd ratios.
# Installs from Debian what it needs and is missing: etcd-server (the baseline) and
# protobuf-compiler (etcd's gRPC client). Arguments go to store-bench (see --help), e.g.
#   scripts/bench.sh --seconds 3 --clients 64
# With --control-plane it measures the scheduler instead: 3 masters, --nodes hollow nodes
# (default 1,000), --pods pods as --deployments Deployments (10,000 / 100), bindings per
# second against raw bindings by the benchmark itself in the same run:
#   scripts/bench.sh --control-plane --nodes 1000 --pods 10000 --clients 64
# With --pod-start it measures pod start latency instead (as root; needs runc and busybox-static):
# 3 masters and one real `keelson node --runtime runc`, --pods pods (default 50) created one
# after the other until a watch shows them Running, against raw `runc run --detach` of one
# bundle (and `ctr run -d` where containerd runs) in the same run, then the node agent's and
# its shims' resident memory with the pods running (goals: p99 within runc's + 50 ms; < 25 MB):
#   scripts/bench.sh --pod-start --pods 50
# With --dashboard-memory it measures one master's resident memory idle, with --pods pods stored
# (default 1,000) and with --dashboards dashboards (default 1) open on the pods page (the list
# and watch the page holds, with its login cookie), and the ratios against idle:
#   scripts/bench.sh --dashboard-memory --pods 1000
#
# keelson is measured as users run it: built in release mode by the command scripts/up.sh uses
# (in the tests' target folder, beside their debug build). The benchmark builds in a folder of
# its own: etcd's gRPC client changes the features RocksDB's build scripts are compiled with, so
# sharing the folder would rebuild RocksDB (~30 minutes) for the tests afterwards. Its first
# build takes that long once.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh build bench
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/keelson-target}
bench_target=${KEELSON_BENCH_TARGET_DIR:-/var/tmp/keelson-bench-target}
cargo build --release --bin keelson --bin kctl
CARGO_TARGET_DIR="$bench_target" cargo build -p keelson-bench
exec "$bench_target/debug/store-bench" --keelson "$CARGO_TARGET_DIR/release/keelson" "$@"
