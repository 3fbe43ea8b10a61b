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

// True if `s` is a well-formed MQTT UTF-8 string body [MQTT-1.5.3-1, MQTT-1.5.3-2]: valid
// UTF-8 (no overlong forms, no surrogates U+D800..U+DFFF, nothing above U+10FFFF) and no U+0000.
// The 65,535-byte length limit is the caller's business.
bool is_valid_utf8_string(std::string_view s) noexcept;

}  // namespace cairn::mqtt
