#!/usr/bin/env bash
# bench/compile_cost.sh in both modes: configures build-compile-cost/header-only and
# build-compile-cost/separate (ACC_SEPARATE_COMPILATION=ON), then times each. CONFIGURE names the
# command that configures a build directory (its first argument), more CMake arguments following;
# by default plain cmake, as scripts/setup.sh configures. MODES names the modes to time (default
# both). Usage: bench/compile_cost_modes.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-2}
configure=${CONFIGURE:-configure_here}
configure_here() {
  local build=$1
  shift
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release "$@"
}
for mode in ${MODES:-header-only separate}; do
  separate=OFF
  [[ $mode == separate ]] && separate=ON
  $configure build-compile-cost/$mode -DACC_BUILD_TESTS=OFF -DACC_BUILD_EXAMPLES=OFF -DACC_BUILD_CLI=OFF \
    -DACC_SEPARATE_COMPILATION=$separate >/dev/null
  bench/compile_cost.sh build-compile-cost/$mode "$runs"
done
