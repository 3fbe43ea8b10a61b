// File helpers for modelpkg: whole-file reads and crash-safe writes.
//
// Thread-safety: pure functions over the filesystem; concurrent atomic writes of the same path
// are safe (each uses its own temporary file, the last rename wins).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "core/result.hpp"

namespace cairn::modelpkg::detail {

// The whole file; limit_exceeded if it is larger than `max_size`.
Result<std::string> read_file(const std::string& path, std::size_t max_size);

// Writes `data` to a temporary file beside `path`, optionally fsyncs it, renames it over `path`
// and (with `sync`) fsyncs the directory: readers see the old file or the new one, never part.
Status write_file_atomic(const std::string& path, std::string_view data, bool sync);

// Creates the directory and its parents.
Status make_dirs(const std::string& path);

}  // namespace cairn::modelpkg::detail
