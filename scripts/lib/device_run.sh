# Sourced by the device scripts: run from the repository root and copy everything printed to
# $OUT/NAME.log (OUT is the device tool's output folder; /tmp/acc-gpu-out elsewhere).
#   source scripts/lib/device_run.sh; log_to_out NAME
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
out=${OUT:-/tmp/acc-gpu-out}
mkdir -p "$out"
export NCCL_NVLS_ENABLE=0  # leave NVLink multicast off on the multi-GPU machines
log_to_out() { exec > >(tee "$out/$1.log") 2>&1; }
gpu_count() { nvidia-smi --query-gpu=name --format=csv,noheader | wc -l; }
