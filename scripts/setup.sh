#!/usr/bin/env bash
# Installs what accelerate-cpp needs from Debian (skipping what is installed), then configures and
# builds everything into build/ (Release; scripts/lib/configure.sh says how).
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  g++ cmake ninja-build clang-format             # toolchain; clang-format checks the style
  libtorch-dev libgloo-dev                       # libtorch 1.13 (CPU) with c10d, and Gloo
  libboost-dev librange-v3-dev libyaml-cpp-dev   # Hana, range-v3, YAML
  doctest-dev nlohmann-json3-dev
  libprotobuf-dev protobuf-compiler              # the TensorBoard tracker (acc::tensorboard)
  libopenblas0-openmp                            # libtorch's BLAS: the reference one is ~15x slower
  fortunes                                       # text for the char_lm example
  iproute2                                       # network namespaces for the multi-node test
)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ((${#missing[@]})); then
  sudo=""
  [[ $(id -u) -eq 0 ]] || sudo=sudo
  echo "setup: installing ${missing[*]}"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "${missing[@]}"
fi

source scripts/lib/configure.sh
start=$(date +%s)
configure_build
cmake --build build
echo "setup: built in $(($(date +%s) - start)) s"
echo
echo "Next:"
echo "  build/bin/char_lm --max_steps 200    # train the example"
echo "  scripts/test.sh                      # run the tests"
