#include "core/error.hpp"

namespace cairn {
namespace {

class Category final : public std::error_category {
 public:
  const char* name() const noexcept override { return "cairn"; }
  std::string message(int ev) const override {
    return std::string(cairn::to_string(static_cast<errc>(ev)));
  }
};

}  // namespace

const std::error_category& cairn_category() noexcept {
  static const Category category;
  return category;
}

std::string_view to_string(errc e) noexcept {
  switch (e) {
    case errc::ok:
      return "ok";
    case errc::invalid_argument:
      return "invalid_argument";
    case errc::not_found:
      return "not_found";
    case errc::already_exists:
      return "already_exists";
    case errc::unauthorized:
      return "unauthorized";
    case errc::forbidden:
      return "forbidden";
    case errc::limit_exceeded:
      return "limit_exceeded";
    case errc::io_error:
      return "io_error";
    case errc::corruption:
      return "corruption";
    case errc::unavailable:
      return "unavailable";
    case errc::timeout:
      return "timeout";
    case errc::cancelled:
      return "cancelled";
    case errc::internal:
      return "internal";
  }
  return "unknown";
}

std::string Error::to_string() const {
  std::string out(cairn::to_string(code));
  if (!message.empty()) {
    out += ": ";
    out += message;
  }
  return out;
}

}  // namespace cairn
