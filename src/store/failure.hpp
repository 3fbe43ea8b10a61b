// How every store in cairn treats a failed write (docs/failure_policy.md): the message store
// (cairnd's queues, cairn-cloud's ingest queue) and cairn-cloud's telemetry writer classify
// errors here, so both behave the same way for the same cause.
//
// Thread-safety: free functions without state.
#pragma once

#include <string_view>

#include "core/result.hpp"

namespace cairn::store {

enum class Failure {
  // errc::unavailable: the disk or a quota is full, another process holds the database lock
  // past the busy timeout. Nothing was written; the same write succeeds once the cause goes.
  // Retry later, refuse new work meanwhile.
  transient,
  // errc::io_error, errc::corruption: an I/O error, a failed fsync, a damaged file. Nobody
  // knows what the disk holds any more; only a clean reopen (a restart) can tell.
  fatal,
  // Anything else: this request cannot be written (too big, a constraint, a bug in our SQL).
  // Other requests may well succeed.
  other,
};

Failure classify_failure(const Error& error) noexcept;

// Logs `why` as FATAL for the store at `what`, flushes the log and ends the process with exit
// code 1, so that a supervisor restarts it and the store is reopened cleanly.
[[noreturn]] void exit_for_clean_reopen(std::string_view what, std::string_view why);

}  // namespace cairn::store
