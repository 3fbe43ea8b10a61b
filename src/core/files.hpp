// Whole-file reads and crash-safe writes: the one place cairn reads or replaces a file whole.
//
// Thread-safety: pure functions over the filesystem; concurrent atomic writes of the same path
// are safe (each uses its own temporary file, the last rename wins).
#pragma once

#include <cstddef>
#include <limits>
#include <string>
#include <string_view>

#include "core/result.hpp"

namespace cairn {

// The whole file (also what /proc reports, whose sizes read as 0); errc::not_found when it does
// not exist, limit_exceeded if it is larger than `max_size`.
Result<std::string> read_file(const std::string& path,
                              std::size_t max_size = std::numeric_limits<std::size_t>::max());

// Writes `data` to a temporary file beside `path`, optionally fsyncs it, renames it over `path`
// and (with `sync`) fsyncs the directory: readers see the old file or the new one, never part.
Status write_file_atomic(const std::string& path, std::string_view data, bool sync);

// Creates the directory and its parents.
Status make_dirs(const std::string& path);

}  // namespace cairn
