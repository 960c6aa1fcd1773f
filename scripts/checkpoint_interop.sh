#!/usr/bin/env bash
# safetensors both ways between acc and Python's safetensors, on a machine where Python has torch
# and safetensors (the GPU machines), given a built build directory (default build-gpu, as
# scripts/gpu.sh builds it; ACC_GPU_BUILD_ONLY=1 scripts/gpu.sh builds without running):
#   scripts/checkpoint_interop.sh [BUILD_DIR]
# acc writes safetensors files (every dtype, save_model, save_state), Python loads them with
# safetensors.torch.load_file and compares them with formulas, writes its own, and acc loads those.
# The log goes to $OUT/checkpoint_interop.log.
source "$(dirname "$0")/lib/device_run.sh"
log_to_out checkpoint_interop
build=${1:-build-gpu}
worker=$build/bin/acc_dist_worker
[[ -x $worker ]] || { echo "no $worker: build first"; exit 1; }
dir=$(mktemp -d /tmp/acc-interop.XXXXXX)
echo "== $(date -u +%F) torch $(python3 -c 'import torch; print(torch.__version__)'), safetensors $(python3 -c 'import safetensors; print(safetensors.__version__)')"
echo "== acc writes"
$worker interop-write "$dir" || exit 1
echo "== Python reads acc's files and writes its own"
python3 tests/golden/safetensors_interop.py "$dir" || exit 1
echo "== acc reads Python's files"
$worker interop-read "$dir/python" || exit 1
echo "== interop OK"
