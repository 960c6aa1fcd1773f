// Built only with ACC_SEPARATE_COMPILATION (the separate_compilation_hides_dependencies test): the
// whole public API, and none of the dependencies that acc::compiled keeps to itself. Each library
// is recognised by a macro its headers define.
#include <acc/acc.hpp>

#if !defined(ACC_SEPARATE_COMPILATION)
#error "this check belongs to a build with ACC_SEPARATE_COMPILATION=ON"
#endif
#if defined(NLOHMANN_JSON_VERSION_MAJOR)
#error "nlohmann/json reached a user's translation unit: include it from an impl/*.ipp file only"
#endif
#if defined(YAML_CPP_API)
#error "yaml-cpp reached a user's translation unit: include it from an impl/*.ipp file only"
#endif
#if defined(NCCL_MAJOR)
#error "nccl.h reached a user's translation unit: include it from comm/impl/nccl.ipp only"
#endif
#if defined(GLOO_ENFORCE_THAT)
#error "Gloo's headers reached a user's translation unit: include c10d's ProcessGroupGloo from comm/impl/gloo.ipp only"
#endif

int main() { return 0; }
