#!/usr/bin/env bash
# Builds what changed (configuring build/ first if needed) and runs every test with ctest, as many
# at a time as there are cores (each multi-process test is bounded in time).
set -euo pipefail
cd "$(dirname "$0")/.."
[[ -f build/CMakeCache.txt ]] || cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build build
ctest --test-dir build --output-on-failure -j "$(nproc)" "$@"
