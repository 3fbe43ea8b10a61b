// MQTT topic names and topic filters (MQTT 3.1.1 section 4.7).
//
// Thread-safety: pure functions.
#pragma once

#include <string_view>

#include "core/result.hpp"

namespace cairn::mqtt {

// A topic name in a PUBLISH: non-empty, valid UTF-8, no NUL, no '+' or '#'.
Status validate_topic_name(std::string_view topic);
// A topic filter in a SUBSCRIBE/UNSUBSCRIBE: non-empty, valid UTF-8, no NUL, '+' occupies a whole
// level, '#' only as the whole last level.
Status validate_topic_filter(std::string_view filter);
// True if `topic` matches `filter`, with the rule that filters starting with a wildcard do not
// match topics starting with '$' [MQTT-4.7.2-1].
bool topic_matches(std::string_view filter, std::string_view topic) noexcept;

}  // namespace cairn::mqtt
