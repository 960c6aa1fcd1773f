#pragma once

#include <acc/high/b.hpp>
