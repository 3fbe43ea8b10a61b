#include "store/failure.hpp"

#include <cstdlib>

#include "core/log.hpp"

namespace cairn::store {

Failure classify_failure(const Error& error) noexcept {
  switch (error.code) {
    case errc::unavailable:
      return Failure::transient;
    case errc::io_error:
    case errc::corruption:
      return Failure::fatal;
    default:
      return Failure::other;
  }
}

void exit_for_clean_reopen(std::string_view what, std::string_view why) {
  log::error("store",
             "FATAL: {} cannot be trusted after this failure ({}); exiting so that a supervisor "
             "restarts the process on a clean reopen",
             what, why);
  log::flush();
  std::_Exit(1);
}

}  // namespace cairn::store
