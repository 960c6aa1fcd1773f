# Finds what acc::acc needs: libtorch (Debian's 1.13 or a 2.x wheel's), range-v3, yaml-cpp, Boost.Hana,
# nlohmann-json (the headers of safetensors files and checkpoint metadata).
find_package(Torch REQUIRED)
find_package(range-v3 REQUIRED)
find_package(yaml-cpp REQUIRED)
find_package(Boost 1.71 REQUIRED)  # Hana, header-only
find_package(nlohmann_json 3 REQUIRED)

# TORCH_CXX_FLAGS is a string such as "-D_GLIBCXX_USE_CXX11_ABI=1"; turn it into a list.
separate_arguments(ACC_TORCH_CXX_FLAGS UNIX_COMMAND "${TORCH_CXX_FLAGS}")

# Gloo (acc::Gloo, acc::CPU): c10d's ProcessGroupGloo needs gloo's headers, which libtorch wheels
# do not ship; Debian has them in libgloo-dev.
find_path(ACC_GLOO_INCLUDE_DIR gloo/algorithm.h)
if(ACC_GLOO_INCLUDE_DIR)
  set(ACC_HAS_GLOO 1)
else()
  set(ACC_HAS_GLOO 0)
endif()

# NCCL (acc::Nccl, acc::DDP<acc::Nccl>): with a CUDA libtorch and nccl.h. NCCL_ROOT may point at
# the nvidia-nccl wheel's directory, which holds libnccl.so.2 only.
set(ACC_HAS_NCCL 0)
if(TARGET torch_cuda)
  find_path(ACC_NCCL_INCLUDE_DIR nccl.h HINTS ${NCCL_ROOT}/include)
  find_library(ACC_NCCL_LIBRARY NAMES nccl libnccl.so.2 HINTS ${NCCL_ROOT}/lib)
  if(ACC_NCCL_INCLUDE_DIR AND ACC_NCCL_LIBRARY)
    set(ACC_HAS_NCCL 1)
  endif()
endif()
message(STATUS "accelerate-cpp: Gloo ${ACC_HAS_GLOO}, NCCL ${ACC_HAS_NCCL}")

# Which policy combinations a plain acc::run builds (all that this build has by default), e.g.
# -DACC_STRATEGIES="acc::Single;acc::CPU" -DACC_PRECISIONS="acc::FP32".
set(ACC_STRATEGIES "" CACHE STRING "Strategies acc::run builds by default (empty: all available)")
set(ACC_PRECISIONS "" CACHE STRING "Precisions acc::run builds by default (empty: all)")
set(ACC_SAMPLERS "" CACHE STRING "Samplers acc::run builds by default (empty: all)")
set(ACC_FACTORY_DEFINITIONS)
foreach(_axis STRATEGIES PRECISIONS SAMPLERS)
  if(ACC_${_axis})
    string(REPLACE ";" "," _list "${ACC_${_axis}}")
    list(APPEND ACC_FACTORY_DEFINITIONS "ACC_DEFAULT_${_axis}=${_list}")
  endif()
endforeach()
