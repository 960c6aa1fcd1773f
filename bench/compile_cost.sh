#!/usr/bin/env bash
# Compile cost of a user's training program: the seconds to compile and link one translation unit
# that calls acc::run with the default set of combinations and saves/loads checkpoints
# (bench/compile_cost/with_run.cpp), against one that only includes torch/torch.h (the goal's
# baseline) and against the same program written in plain libtorch (plain_libtorch.cpp: what the
# loop costs without accelerate-cpp), each rebuilt alone (ccache off) in BUILD_DIR with its flags,
# N times each in turns; each ratio is the median of the N rounds' ratios. In a build with
# ACC_SEPARATE_COMPILATION=ON the library's compiled part is built first and not counted: it is
# built once, not per program.
# Usage: bench/compile_cost.sh [BUILD_DIR] [N]
set -euo pipefail
build=${1:-build}
runs=${2:-2}
cd "$(dirname "$0")/.."
export CCACHE_DISABLE=1
separate=$(sed -n 's/^ACC_SEPARATE_COMPILATION:BOOL=//p' "$build/CMakeCache.txt")
[[ $separate == ON ]] && ninja -C "$build" acc_compiled >/dev/null
# One timed rebuild of TARGET after touching SOURCE.
seconds() {
  local target=$1 source=$2 start end
  touch "$source"
  start=$(date +%s.%N)
  ninja -C "$build" "$target" >/dev/null
  end=$(date +%s.%N)
  python3 -c "print($end - $start)"
}
ninja -C "$build" compile_cost_torch_only compile_cost_plain_libtorch compile_cost_with_run >/dev/null
# The three are timed in turns and compared round by round: this VM's speed drifts by up to 25% over
# minutes, which a ratio of neighbouring runs cancels and a ratio of separate bests does not.
torch_times=() plain_times=() run_times=()
for _ in $(seq "$runs"); do
  torch_times+=("$(seconds compile_cost_torch_only bench/compile_cost/torch_only.cpp)")
  plain_times+=("$(seconds compile_cost_plain_libtorch bench/compile_cost/plain_libtorch.cpp)")
  run_times+=("$(seconds compile_cost_with_run bench/compile_cost/with_run.cpp)")
done
python3 - "${torch_times[*]}" "${plain_times[*]}" "${run_times[*]}" "$separate" "$(nproc)" "$(g++ -dumpversion)" <<'PY'
import sys, datetime, platform, statistics
torch, plain, run = ([float(t) for t in times.split()] for times in sys.argv[1:4])
separate, cores, gcc = sys.argv[4] == "ON", sys.argv[5], sys.argv[6]
mode = "separate compilation" if separate else "header-only"
goal = 1.3 if separate else 1.6
print(f"compile_cost {datetime.date.today()} {platform.node()} {cores} cores, g++ {gcc}, {mode}, {len(torch)} rounds")
print(f"  torch/torch.h only                       {min(torch):6.1f} s (best)")
print(f"  the program in plain libtorch            {min(plain):6.1f} s (best)")
print(f"  acc::run, default set, with checkpoints  {min(run):6.1f} s (best)")
ratios = sorted(r / t for t, r in zip(torch, run))
plain_ratios = sorted(r / p for p, r in zip(plain, run))
ratio = statistics.median(ratios)
print(f"  acc::run / torch.h, rounds: {' '.join(f'{r:.2f}' for r in ratios)}")
print(f"  acc::run / plain libtorch, rounds: {' '.join(f'{r:.2f}' for r in plain_ratios)}"
      f" (median {statistics.median(plain_ratios):.2f})")
print(f"ratio = {ratio:.2f} (median)  (goal for {mode}: <= {goal}; {'met' if ratio <= goal else 'missed'})")
PY
