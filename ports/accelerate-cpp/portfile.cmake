# vcpkg port of accelerate-cpp, header-only unless the feature separate-compilation is chosen (then
# the non-template code is compiled once into acc::compiled): an overlay port that builds the
# checkout it lives in
#   vcpkg install accelerate-cpp --overlay-ports=<checkout>/ports
#   vcpkg install "accelerate-cpp[separate-compilation]" --overlay-ports=<checkout>/ports
# (a registry's copy would fetch a release with vcpkg_from_github instead). Consumers write
# find_package(acc CONFIG REQUIRED) and link acc::acc; libtorch is found outside vcpkg.
set(VCPKG_BUILD_TYPE release)
vcpkg_check_features(OUT_FEATURE_OPTIONS feature_options FEATURES separate-compilation ACC_SEPARATE_COMPILATION)
get_filename_component(SOURCE_PATH "${CMAKE_CURRENT_LIST_DIR}/../.." ABSOLUTE)

vcpkg_cmake_configure(
  SOURCE_PATH "${SOURCE_PATH}"
  OPTIONS
    -DACC_BUILD_TESTS=OFF
    -DACC_BUILD_EXAMPLES=OFF
    -DACC_BUILD_BENCH=OFF
    -DACC_BUILD_CLI=OFF
    -DACC_INSTALL=ON
    ${feature_options})
vcpkg_cmake_install()
vcpkg_cmake_config_fixup(PACKAGE_NAME acc CONFIG_PATH lib/cmake/acc)
if(NOT "separate-compilation" IN_LIST FEATURES)
  file(REMOVE_RECURSE "${CURRENT_PACKAGES_DIR}/lib")  # header-only: only the CMake files were there
endif()

vcpkg_install_copyright(FILE_LIST "${SOURCE_PATH}/LICENSE")
