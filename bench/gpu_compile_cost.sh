#!/usr/bin/env bash
# On the device: bench/compile_cost_modes.sh against the GPU machine's libtorch 2.x with NCCL (the
# default set then holds the NCCL strategies too); the log goes to $OUT/compile_cost.log. Both modes
# with N=2 take about 10 minutes on one H200 machine's 16 cores: MODES=separate (or header-only)
# times one per device call.
source "$(dirname "$0")/../scripts/lib/device_run.sh"
log_to_out compile_cost
echo "== $(date -u +%F) $(nvidia-smi --query-gpu=name --format=csv,noheader | head -1), torch $(python3 -c 'import torch; print(torch.__version__)')"
export -f configure_gpu_build
export deps
CONFIGURE=configure_gpu_build bench/compile_cost_modes.sh "${1:-2}"
