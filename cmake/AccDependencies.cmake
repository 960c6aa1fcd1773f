# Finds what acc::acc needs: libtorch (Debian's 1.13 or a 2.x wheel's), range-v3, yaml-cpp, Boost.Hana,
# nlohmann-json (the headers of safetensors files and checkpoint metadata). Read by our CMakeLists.txt
# and, installed, by accConfig.cmake: one search for the build and for the projects that use the
# installed package. The config defines acc_find_dependency as find_dependency, so that a missing
# package fails find_package(acc) instead of stopping CMake.
if(NOT COMMAND acc_find_dependency)
  macro(acc_find_dependency)
    find_package(${ARGV} REQUIRED)
  endmacro()
endif()
acc_find_dependency(Torch)
acc_find_dependency(range-v3)
acc_find_dependency(yaml-cpp)
acc_find_dependency(Boost 1.71)  # Hana, header-only
acc_find_dependency(nlohmann_json 3)

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
# CUDA (acc::free_memory empties the CUDA caching allocator): a libtorch built with it.
if(TARGET torch_cuda)
  set(ACC_HAS_CUDA 1)
else()
  set(ACC_HAS_CUDA 0)
endif()
message(STATUS "accelerate-cpp: Gloo ${ACC_HAS_GLOO}, NCCL ${ACC_HAS_NCCL}, CUDA ${ACC_HAS_CUDA}")

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

# Gives `target` (an INTERFACE library) what its users need from the packages found above. On our
# own acc target these hold for this build tree only; the installed config applies them to the
# imported acc::acc from its own search, so no path of this machine is written into the package.
function(acc_add_dependency_requirements target)
  # yaml-cpp 0.8 (and Conan's) names its target yaml-cpp::yaml-cpp; Debian's 0.7 only yaml-cpp.
  set(yaml_cpp yaml-cpp)
  if(TARGET yaml-cpp::yaml-cpp)
    set(yaml_cpp yaml-cpp::yaml-cpp)
  endif()
  set(libraries ${TORCH_LIBRARIES} range-v3::range-v3 ${yaml_cpp} Boost::headers nlohmann_json::nlohmann_json)
  set(definitions ACC_HAS_GLOO=${ACC_HAS_GLOO} ACC_HAS_NCCL=${ACC_HAS_NCCL} ACC_HAS_CUDA=${ACC_HAS_CUDA}
    ${ACC_FACTORY_DEFINITIONS})
  set(options ${ACC_TORCH_CXX_FLAGS})
  set(system_includes)
  if(ACC_HAS_NCCL)
    list(APPEND libraries ${ACC_NCCL_LIBRARY})
    list(APPEND system_includes ${ACC_NCCL_INCLUDE_DIR})
  endif()
  get_target_property(imported ${target} IMPORTED)
  foreach(requirement libraries definitions options system_includes)
    if(${requirement} AND NOT imported)
      set(${requirement} "$<BUILD_INTERFACE:${${requirement}}>")
    endif()
  endforeach()
  target_link_libraries(${target} INTERFACE "${libraries}")
  target_compile_definitions(${target} INTERFACE "${definitions}")
  if(options)
    target_compile_options(${target} INTERFACE "${options}")
  endif()
  if(system_includes)
    target_include_directories(${target} SYSTEM INTERFACE "${system_includes}")
  endif()
endfunction()
