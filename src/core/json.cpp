#include "core/json.hpp"

namespace cairn {
namespace {

template <class Json>
std::string dump_lenient(const Json& value) noexcept {
  try {
    return value.dump(-1, ' ', false, Json::error_handler_t::replace);
  } catch (...) {
    // Unreachable with the replace handler short of running out of memory; "null" keeps the
    // promise that a reply can always be written.
    return "null";
  }
}

}  // namespace

std::string dump_json(const nlohmann::json& value) noexcept { return dump_lenient(value); }

std::string dump_json(const nlohmann::ordered_json& value) noexcept { return dump_lenient(value); }

}  // namespace cairn
