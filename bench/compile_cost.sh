#!/usr/bin/env bash
# Compile cost of a user's training program: the seconds to compile and link one translation unit
# that calls acc::run with the default set of combinations and saves/loads checkpoints
# (bench/compile_cost/with_run.cpp), against one that only includes torch/torch.h, each rebuilt
# alone (ccache off) in BUILD_DIR with its flags, best of N. In a build with
# ACC_SEPARATE_COMPILATION=ON the library's compiled part is built first and not counted: it is
# built once, not per program. Usage: bench/compile_cost.sh [BUILD_DIR] [N]
set -euo pipefail
build=${1:-build}
runs=${2:-2}
cd "$(dirname "$0")/.."
export CCACHE_DISABLE=1
separate=$(sed -n 's/^ACC_SEPARATE_COMPILATION:BOOL=//p' "$build/CMakeCache.txt")
[[ $separate == ON ]] && ninja -C "$build" acc_compiled >/dev/null
seconds() {
  local target=$1 source=$2 best=
  ninja -C "$build" "$target" >/dev/null
  for _ in $(seq "$runs"); do
    touch "$source"
    local start end
    start=$(date +%s.%N)
    ninja -C "$build" "$target" >/dev/null
    end=$(date +%s.%N)
    best=$(python3 -c "t = $end - $start; print(t if '$best' == '' else min(t, $best))")
  done
  echo "$best"
}
torch=$(seconds compile_cost_torch_only bench/compile_cost/torch_only.cpp)
run=$(seconds compile_cost_with_run bench/compile_cost/with_run.cpp)
python3 - "$torch" "$run" "$separate" "$(nproc)" "$(g++ -dumpversion)" <<'PY'
import sys, datetime, platform
torch, run = map(float, sys.argv[1:3])
separate, cores, gcc = sys.argv[3] == "ON", sys.argv[4], sys.argv[5]
mode = "separate compilation" if separate else "header-only"
goal = 1.3 if separate else 1.6
print(f"compile_cost {datetime.date.today()} {platform.node()} {cores} cores, g++ {gcc}, {mode}")
print(f"  torch/torch.h only                       {torch:6.1f} s")
print(f"  acc::run, default set, with checkpoints  {run:6.1f} s")
ratio = run / torch
print(f"ratio = {ratio:.2f}  (goal for {mode}: <= {goal}; {'met' if ratio <= goal else 'missed'})")
PY
