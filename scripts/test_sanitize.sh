#!/usr/bin/env bash
# The fast suites (ctest label "fast": acc_tests, the single-process tests, and the acc tool's tests)
# under AddressSanitizer and UndefinedBehaviorSanitizer, built at -O0 into build-sanitize/ (cold on
# 2 cores: 575 s, against 757 s at -O1; the tests run about 10% slower). Only those targets are
# built (the multi-process worker would double the build), and with the library compiled once, as
# build/ does. Header-only stays covered where it differs: every public header compiles alone with
# its bodies (acc_header_check) and tests/package builds and runs a header-only program. Any
# sanitizer report fails the test that made it. Extra arguments go to ctest, e.g. -R tracking.
set -euo pipefail
cd "$(dirname "$0")/.."
build=build-sanitize
sanitizers="-fsanitize=address,undefined -fno-sanitize-recover=undefined"
if [[ ! -f $build/CMakeCache.txt ]]; then
  cmake -S . -B $build -G Ninja -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS_DEBUG="-O0 -g1" \
    -DCMAKE_CXX_FLAGS="$sanitizers -fno-omit-frame-pointer" -DCMAKE_EXE_LINKER_FLAGS="$sanitizers" \
    -DACC_BUILD_EXAMPLES=OFF -DACC_BUILD_BENCH=OFF -DACC_INSTALL=OFF -DACC_SEPARATE_COMPILATION=ON
fi
start=$(date +%s)
cmake --build $build -j "$(nproc)" --target acc_tests acc_cli_tests
echo "test_sanitize: built in $(($(date +%s) - start)) s"

# libtorch and the system libraries are not instrumented: ASan still checks every access our code
# makes and every allocation, theirs included.
# allocator_may_return_null: an allocation too big for any machine returns null, as malloc does,
# so that libtorch raises its out-of-memory error (find_executable_batch_size's test provokes one).
export ASAN_OPTIONS=detect_stack_use_after_return=1:check_initialization_order=1:strict_init_order=1:allocator_may_return_null=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
start=$(date +%s)
ctest --test-dir $build --output-on-failure -j2 -L '^fast$' "$@"
echo "test_sanitize: tests ran in $(($(date +%s) - start)) s"
