#!/usr/bin/env bash
# One device run: builds against the GPU machine's libtorch 2.x (the Python wheel's) with the
# Debian packages carried in .deps/, runs the tests, the char_lm example in bf16 on CUDA and the
# step-overhead bench, and writes the log to $OUT (when set).
#
# Here, once: mkdir -p .deps && (cd .deps && apt-get download libyaml-cpp-dev libyaml-cpp0.7 \
#   libboost1.74-dev librange-v3-dev doctest-dev nlohmann-json3-dev fortunes fortunes-min \
#   libprotobuf-dev libprotobuf32 libprotobuf-lite32 protobuf-compiler libprotoc32)
# Then run it on the device with `.deps` carried. ACC_GPU_BUILD_ONLY=1 only builds; ACC_GPU_TARGETS
# names the targets to build (default: all).
source "$(dirname "$0")/lib/device_run.sh"
[[ -n ${ACC_GPU_BUILD_ONLY:-} ]] || log_to_out gpu

echo "== $(date -u +%F) $(nvidia-smi --query-gpu=name --format=csv,noheader | head -1), torch $(python3 -c 'import torch; print(torch.__version__)')"

build=build-gpu
start=$(date +%s)
configure_gpu_build $build || exit 1
status=0
# Keep going past a broken target so that the rest still builds and runs.
cmake --build $build -j "$(nproc)" ${ACC_GPU_TARGETS:+--target $ACC_GPU_TARGETS} -- -k 0 || status=1
echo "== built in $(($(date +%s) - start)) s"
[[ -n ${ACC_GPU_BUILD_ONLY:-} ]] && exit $status

echo "== tests"
ctest --test-dir $build -j 8 --output-on-failure -E clang_format || status=1
echo "== acc_tests with CUDA (doctest)"
$build/bin/acc_tests -tc='CUDA*' -s || status=1
echo "== char_lm bf16 on CUDA"
$build/bin/char_lm --mixed_precision bf16 --max_steps 300 --data $deps/usr/share/games/fortunes || status=1
echo "== step_overhead"
for precision in no bf16; do
  $build/bin/step_overhead --device cuda --precision $precision --rounds 15 --steps 100 || status=1
done
$build/bin/step_overhead --device cpu --precision no --rounds 9 --steps 30 || status=1
exit $status
