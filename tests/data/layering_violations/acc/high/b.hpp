#pragma once

#include <acc/low/c.hpp>
