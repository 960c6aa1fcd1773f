// How the library's non-template functions are linked (Boost.Asio's model). By default the library
// is header-only: every header includes the bodies of its non-template functions from its
// impl/*.ipp file, and ACC_DECL makes them inline. With ACC_SEPARATE_COMPILATION defined (CMake
// option ACC_SEPARATE_COMPILATION, which links acc::compiled), the headers only declare them and
// src/acc.cpp compiles every impl/*.ipp once, so that their heavy dependencies (yaml-cpp,
// nlohmann/json, nccl.h, Gloo) leave the users' translation units.
#pragma once

#if defined(ACC_SEPARATE_COMPILATION)
#define ACC_DECL
#else
#define ACC_DECL inline
#endif
