# Configures build/ (Release) when it has no cache yet; sourced by scripts/setup.sh and scripts/test.sh.
# The project's own build compiles the library's non-template code once (ACC_SEPARATE_COMPILATION,
# the Boost.Asio model): every test binary, example and tool then skips the impl/*.ipp bodies, which
# takes about a third off a cold build on 2 cores. Header-only, the users' default, stays covered: each
# public header with a body compiles alone header-only (acc_header_check), tests/package builds a
# header-only consumer, and the device suite (scripts/gpu.sh) builds everything header-only.
configure_build() {
  [[ -f build/CMakeCache.txt ]] ||
    cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DACC_SEPARATE_COMPILATION=ON
}
