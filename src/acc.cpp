// The compiled part of accelerate-cpp when ACC_SEPARATE_COMPILATION is defined (see
// include/acc/detail/linkage.hpp): the bodies of every non-template function, once. CMake builds it
// into acc::compiled; a build without CMake compiles this file with -DACC_SEPARATE_COMPILATION and
// defines the same macro for every translation unit of the program.
#if !defined(ACC_SEPARATE_COMPILATION)
#error \
    "src/acc.cpp is the separately compiled library: compile it, and every file that uses acc, with -DACC_SEPARATE_COMPILATION"
#endif

#include <acc/checkpoint/impl/metadata.ipp>
#include <acc/checkpoint/impl/safetensors.ipp>
#include <acc/config/impl/config.ipp>
#include <acc/memory/impl/free_memory.ipp>
#include <acc/optim/impl/adamw.ipp>
