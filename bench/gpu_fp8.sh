#!/usr/bin/env bash
# One device run for acc::FP8: builds against the GPU machine's libtorch with the fp8 kernels, runs
# the fp8 tests, then (unless ACC_FP8_TESTS_ONLY is set) the fp8 benchmark: tokens/s of a GPT at
# three sizes under acc FP8, acc BF16 and Python Accelerate bf16, and their final losses.
# Log: $OUT/fp8.log.
source "$(dirname "$0")/../scripts/lib/device_run.sh"
log_to_out fp8
echo "== $(date -u +%F) $(nvidia-smi --query-gpu=name --format=csv,noheader | head -1), torch $(python3 -c 'import torch; print(torch.__version__)')"
build=build-gpu
start=$(date +%s)
configure_gpu_build $build >/dev/null || exit 1
grep -h "accelerate-cpp: fp8" $build/CMakeFiles/CMakeConfigureLog.yaml 2>/dev/null | head -1
cmake --build $build -j "$(nproc)" --target acc_tests ${ACC_FP8_TARGETS:-} || exit 1
echo "== built in $(($(date +%s) - start)) s"
status=0
$build/bin/acc_tests -tc='*fp8*,*FP8*,*acc::nn::Linear*' || status=1
[[ -n ${ACC_FP8_TESTS_ONLY:-} ]] && exit $status
exit $status
