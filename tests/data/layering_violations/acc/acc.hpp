// A tree for the test of tests/cmake/layering.cmake: low/a.hpp includes high/ (through its impl/),
// a layer above it, and high/ includes low/ back (a cycle); stray/ has no layer.
//   1 error.hpp
//   2 low/
//   3 high/
//   4 acc.hpp
#pragma once

#include <acc/high/b.hpp>
