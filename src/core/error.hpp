// cairn::Error and the project-wide error codes.
//
// Expected failures travel as values (see result.hpp). An Error is a code from the small closed
// set below plus a human-readable message that carries the context ("route 'r1' column 12:
// expected INTO"). Callers branch on the code; people read the message.
//
// Thread-safety: plain values, safe to copy between threads.
#pragma once

#include <string>
#include <string_view>
#include <system_error>

namespace cairn {

enum class errc {
  ok = 0,
  invalid_argument,  // bad input from outside: malformed packet, route, manifest, request
  not_found,
  already_exists,
  unauthorized,    // credentials missing, wrong or expired
  forbidden,       // authenticated but not allowed
  limit_exceeded,  // a configured bound (size, depth, count, store capacity) was hit
  io_error,        // the disk or the network failed
  corruption,      // stored data does not decode
  unavailable,     // the peer or a dependency is not reachable right now
  timeout,
  cancelled,
  internal,  // a bug: should never happen
};

const std::error_category& cairn_category() noexcept;
inline std::error_code make_error_code(errc e) noexcept {
  return {static_cast<int>(e), cairn_category()};
}
std::string_view to_string(errc e) noexcept;

struct Error {
  errc code = errc::internal;
  std::string message;

  // "invalid_argument: route 'r1' column 12: expected INTO"
  std::string to_string() const;
};

}  // namespace cairn

template <>
struct std::is_error_code_enum<cairn::errc> : std::true_type {};
