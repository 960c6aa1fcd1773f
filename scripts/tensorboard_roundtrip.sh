#!/usr/bin/env bash
# acc's TensorBoard events read by Python's tensorboard, on a machine where Python has it (the GPU
# machines; without tensorboard the check parses the events with the protobuf package instead),
# given a built build directory (default build-gpu; ACC_GPU_BUILD_ONLY=1 scripts/gpu.sh builds
# it, with protoc and libprotobuf from the .debs carried in .deps):
#   scripts/tensorboard_roundtrip.sh [BUILD_DIR]
# char_lm trains 30 steps logging to jsonl, csv and TensorBoard; tests/golden/tensorboard_roundtrip.py
# checks that the events hold every loss of metrics.jsonl at its step, and the final text summary.
# The log goes to $OUT/tensorboard_roundtrip.log.
source "$(dirname "$0")/lib/device_run.sh"
log_to_out tensorboard_roundtrip
build=${1:-build-gpu}
deps=/tmp/deps  # where scripts/gpu.sh unpacked .deps
export LD_LIBRARY_PATH=$deps/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
export PROTOC=${PROTOC:-$(command -v protoc || echo $deps/usr/bin/protoc)}
data=$deps/usr/share/games/fortunes
[[ -d $data ]] || data=/usr/share/games/fortunes
program=$build/bin/char_lm
[[ -x $program ]] || { echo "no $program: build first (ACC_GPU_BUILD_ONLY=1 scripts/gpu.sh)"; exit 1; }
grep -q acc_tensorboard "$build/build.ninja" ||
  { echo "$build was configured without acc_tensorboard (CMake found no Protobuf: are its .debs in .deps?)"; exit 1; }
dir=$(mktemp -d /tmp/acc-tensorboard.XXXXXX)
echo "== $(date -u +%F) torch $(python3 -c 'import torch; print(torch.__version__)')"
echo "== char_lm writes events to $dir/char_lm"
$program --max_steps 30 --log_every 10 --log_with all --run_name "$dir/char_lm" --data "$data" || exit 1
ls -l "$dir/char_lm"
echo "== Python reads them"
python3 tests/golden/tensorboard_roundtrip.py "$dir/char_lm"
