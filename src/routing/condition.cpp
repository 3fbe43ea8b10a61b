#include "routing/condition.hpp"

#include <string>
#include <variant>

#include "routing/detail/parser.hpp"
#include "routing/route.hpp"

namespace cairn::routing {

Result<std::shared_ptr<const Condition>> compile_condition(std::string_view text) {
  if (text.size() > kMaxRouteTextBytes) {
    return make_error(errc::invalid_argument,
                      "condition is longer than " + std::to_string(kMaxRouteTextBytes) + " bytes");
  }
  auto parsed = detail::parse_condition(text, 0, detail::ConditionEnd::kEndOfText);
  if (auto* e = std::get_if<detail::SyntaxError>(&parsed)) {
    return make_error(errc::invalid_argument,
                      "condition column " + std::to_string(e->pos + 1) + ": " + e->message +
                          " in: " + detail::sanitize_for_error(text, detail::kMaxEchoedText));
  }
  return std::shared_ptr<const Condition>(std::get<detail::ParsedCondition>(parsed).program);
}

}  // namespace cairn::routing
