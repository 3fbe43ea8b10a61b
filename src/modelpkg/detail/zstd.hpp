// Thin Result-returning wrappers over libzstd for whole buffers.
//
// Thread-safety: pure functions; each call uses its own compression context.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "core/result.hpp"

namespace cairn::modelpkg::detail {

// One zstd frame of `data` at `level` (1..22), with the content size in the frame header.
Result<std::string> zstd_compress(std::string_view data, int level);

// Decompresses one or more zstd frames. More than `max_size` bytes of output is corruption, so a
// hostile file cannot make us allocate freely.
Result<std::string> zstd_decompress(std::string_view data, std::size_t max_size);

}  // namespace cairn::modelpkg::detail
