#pragma once

#include <acc/error.hpp>
#include <acc/high/impl/b.ipp>
