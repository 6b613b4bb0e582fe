#!/usr/bin/env bash
# Runs Keelson's test suite: installs what the tests need from Debian (see
# scripts/install-deps.sh), then runs every test of the workspace with cargo-nextest
# (cargo test where nextest is missing).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh test
if cargo nextest --version >/dev/null 2>&1; then
  exec cargo nextest run --no-fail-fast "$@"
else
  exec cargo test --no-fail-fast "$@"
fi
