// `j("{...}")`: a JSON value from a literal, for the twin tests.
#pragma once

#include "twin/twin.hpp"

namespace cairn::twin::test_support {

inline json j(const char* text) { return json::parse(text); }

}  // namespace cairn::twin::test_support
