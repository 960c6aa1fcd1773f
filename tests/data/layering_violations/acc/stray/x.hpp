#pragma once

#include <acc/error.hpp>
