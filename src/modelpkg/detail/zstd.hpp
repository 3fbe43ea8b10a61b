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

// Largest prefix the two calls below accept: it and the data must fit zstd's window, and the
// decoder's default window limit (2^27) is what every device accepts.
inline constexpr std::size_t kMaxZstdPrefixBytes = 64 * 1024 * 1024;

// One zstd frame of `data` that refers back into `prefix` (ZSTD_CCtx_refPrefix): bytes also
// found in `prefix` cost a few bytes each. Decoding needs the same prefix.
Result<std::string> zstd_compress_with_prefix(std::string_view data, std::string_view prefix,
                                              int level);
Result<std::string> zstd_decompress_with_prefix(std::string_view data, std::string_view prefix,
                                                std::size_t max_size);

}  // namespace cairn::modelpkg::detail
