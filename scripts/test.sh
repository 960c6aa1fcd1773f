#!/usr/bin/env bash
# Builds what changed (configuring build/ first if needed) and runs every test with ctest, as many
# at a time as there are cores (each multi-process test is bounded in time).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/configure.sh
configure_build
cmake --build build
ctest --test-dir build --output-on-failure -j "$(nproc)" "$@"
