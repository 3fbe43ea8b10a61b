// Tensor-aware deltas: the new bytes of a segment as XOR against the same segment (same key and
// size) of an earlier version, split into byte planes and zstd-compressed.
//
// Why: a retrained float32 tensor differs in nearly every byte, so byte-matching tools (bsdiff,
// xdelta3, zstd --patch-from) find little to copy. XOR leaves zeros where bytes are equal; for
// weights that moved slightly, the sign/exponent plane of the XOR is almost all zero and the
// high mantissa plane mostly so, which zstd then squeezes. Unchanged tensors need no delta.
//
// Format (docs/modelpkg.md): "CDLT", format byte 1, plane count byte, two zero bytes, the
// segment size as uint64 little-endian, then one zstd frame holding plane 0 (byte 0 of every
// element), plane 1, ..., then the size % planes trailing bytes.
//
// Thread-safety: pure functions.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "core/result.hpp"

namespace cairn::modelpkg {

// REQUIRES: old_bytes.size() == new_bytes.size(); 1 <= planes <= 16.
Result<std::string> make_delta(std::string_view old_bytes, std::string_view new_bytes,
                               std::size_t planes, int zstd_level);

// The new bytes; corruption if the delta does not decode or does not fit `old_bytes`.
Result<std::string> apply_delta(std::string_view old_bytes, std::string_view delta);

}  // namespace cairn::modelpkg
