# `cmake --install` of accelerate-cpp: the headers, the acc tool, and the CMake package acc
# (accConfig.cmake, its version file, and the export set accTargets with acc::acc and any compiled
# library that joins it through acc_install_targets).
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

set(ACC_INSTALL_CMAKEDIR ${CMAKE_INSTALL_LIBDIR}/cmake/acc CACHE STRING
  "Where accConfig.cmake is installed, relative to the install prefix")

# Adds TARGETS to the package as acc::<their EXPORT_NAME> (the target's name unless set).
# DEPENDENCIES names packages their users need beyond acc::acc's, such as Protobuf; the installed
# config finds each with find_dependency.
function(acc_install_targets)
  cmake_parse_arguments(PARSE_ARGV 0 arg "" "" "TARGETS;DEPENDENCIES")
  if(NOT ACC_INSTALL)
    return()
  endif()
  install(TARGETS ${arg_TARGETS} EXPORT accTargets)
  set_property(GLOBAL APPEND PROPERTY ACC_PACKAGE_DEPENDENCIES ${arg_DEPENDENCIES})
endfunction()

# The install rules of the package; called once, after every target has joined it.
function(acc_install_package)
  if(NOT ACC_INSTALL)
    return()
  endif()
  install(DIRECTORY ${PROJECT_SOURCE_DIR}/include/acc DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
    FILES_MATCHING PATTERN "*.hpp" PATTERN "*.ipp")
  install(EXPORT accTargets NAMESPACE acc:: DESTINATION ${ACC_INSTALL_CMAKEDIR})

  get_property(ACC_PACKAGE_DEPENDENCIES GLOBAL PROPERTY ACC_PACKAGE_DEPENDENCIES)
  list(REMOVE_DUPLICATES ACC_PACKAGE_DEPENDENCIES)
  configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/accConfig.cmake.in
    ${PROJECT_BINARY_DIR}/package/accConfig.cmake INSTALL_DESTINATION ${ACC_INSTALL_CMAKEDIR})
  # While the major version is 0, a minor version may break what the one before offered.
  write_basic_package_version_file(${PROJECT_BINARY_DIR}/package/accConfigVersion.cmake
    COMPATIBILITY SameMinorVersion)
  install(FILES ${PROJECT_BINARY_DIR}/package/accConfig.cmake ${PROJECT_BINARY_DIR}/package/accConfigVersion.cmake
    ${PROJECT_SOURCE_DIR}/cmake/AccDependencies.cmake DESTINATION ${ACC_INSTALL_CMAKEDIR})
endfunction()
