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

# Unpacks the Debian packages carried in .deps/ into /tmp/deps and configures BUILD_DIR against the
# machine's libtorch 2.x (the Python wheel's) and NCCL; more CMake arguments may follow.
#   configure_gpu_build BUILD_DIR [-DOPTION=VALUE ...]
deps=/tmp/deps
configure_gpu_build() {
  local build=$1
  shift
  mkdir -p $deps
  for deb in .deps/*.deb; do dpkg -x "$deb" $deps; done
  export LD_LIBRARY_PATH=$deps/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
  local torch_prefix nccl_root cxx
  torch_prefix=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')
  nccl_root=$(python3 -c 'import nvidia.nccl, os; print(os.path.dirname(nvidia.nccl.__file__) if nvidia.nccl.__file__ else list(nvidia.nccl.__path__)[0])')
  cxx=$(command -v /opt/gcc/bin/g++ || command -v g++)
  local nvcc
  nvcc=$(command -v nvcc || command -v /usr/local/cuda/bin/nvcc || true)
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_COMPILER="$cxx" \
    -DCMAKE_PREFIX_PATH="$torch_prefix;$deps/usr" -DACC_EXAMPLE_DATA=$deps/usr/share/games/fortunes \
    -DNCCL_ROOT="$nccl_root" -DProtobuf_PROTOC_EXECUTABLE=$deps/usr/bin/protoc -DCMAKE_CUDA_ARCHITECTURES=90 \
    ${nvcc:+-DCMAKE_CUDA_COMPILER=$nvcc -DCMAKE_CUDA_HOST_COMPILER=$cxx} "$@"
}
