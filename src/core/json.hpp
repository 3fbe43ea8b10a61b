// The one JSON writer for everything that leaves the process: HTTP bodies, MQTT payloads,
// stored documents. Strings in a document often come from outside (a module id from a URL, a
// method payload from a module, a property from a topic) and may hold any bytes;
// nlohmann's plain dump() throws on invalid UTF-8, and a throw on a network thread stops the
// daemon. These replace invalid UTF-8 with U+FFFD instead and never throw.
//
// Thread-safety: pure functions.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

namespace cairn {

std::string dump_json(const nlohmann::json& value) noexcept;
std::string dump_json(const nlohmann::ordered_json& value) noexcept;

}  // namespace cairn
