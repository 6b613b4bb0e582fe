#!/usr/bin/env bash
# Installs the Debian packages Keelson needs, only those missing:
#   build:  libclang-dev (RocksDB's bindings), build-essential, pkg-config
#   tests:  runc, busybox-static, iproute2, nftables (nodes and networking)
#   bench:  etcd-server (the baseline), protobuf-compiler (etcd's gRPC client)
# Usage: scripts/install-deps.sh [build|test|bench]...
set -euo pipefail

want=()
for group in "${@:-build}"; do
  case "$group" in
    build) want+=(libclang-dev build-essential pkg-config) ;;
    test) want+=(libclang-dev build-essential pkg-config runc busybox-static iproute2 nftables) ;;
    bench) want+=(etcd-server protobuf-compiler) ;;
    *) echo "unknown group: $group (build, test, bench)" >&2; exit 2 ;;
  esac
done

missing=()
for pkg in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "installing Debian packages: ${missing[*]}"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
