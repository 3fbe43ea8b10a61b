// Tensor-aware deltas: the new bytes of one segment, coded against what the device already holds
// of an earlier version. Four codings (docs/modelpkg.md, "Delta format"); `pack` writes the
// smallest for each changed segment:
//
// - XOR planes (format 1): old XOR new against the same segment (same key and size), split
//   into byte planes and zstd-compressed. Why: a float32 tensor fine-tuned a little differs in
//   nearly every byte, so byte-matching tools find little to copy, but its sign/exponent plane
//   of the XOR is almost all zero and the high mantissa plane mostly so.
// - Masked planes (format 2): per byte plane either the XOR as above or the new bytes as they
//   are (a mask says which). Why: a retrained tensor whose values all moved gives an XOR as
//   random as the values; its own exponent plane, though, holds few distinct bytes and
//   compresses well, and byte planes split that plane from the random mantissa ones.
// - Prefix (format 3): one zstd frame of the new bytes referring back into bytes of the earlier
//   version (`prefix_for_delta` in pack.hpp says which). Why: the bytes between tensors
//   (protobuf framing, names, graph nodes, biases) move when an exporter reorders tensors;
//   their content is mostly in the old file, at other offsets.
// - Modelled floats (format 4): every float32 range-coded with probabilities learnt from the
//   exponents, signs and top mantissa bits coded before it and the old value at its place. Why:
//   when every value of a tensor was retrained, nothing of the XOR helps, and zstd's Huffman
//   codes of whole bytes leave bits behind on the few skewed bits a float has.
//
// Each file starts with a 16-byte header: "CDLT", the format byte, the plane count, a 16-bit
// plane mask (little-endian; zero in formats 1, 3 and 4), the segment size as uint64 LE.
//
// Thread-safety: pure functions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "core/result.hpp"

namespace cairn::modelpkg {

// XOR planes (format 1). REQUIRES: old_bytes.size() == new_bytes.size(); 1 <= planes <= 16.
Result<std::string> make_delta(std::string_view old_bytes, std::string_view new_bytes,
                               std::size_t planes, int zstd_level);

// Masked planes (format 2): plane p is XORed with `old_bytes` when bit p of `xor_mask` is set,
// stored as the new bytes otherwise (trailing bytes follow bit 0). With a zero mask `old_bytes`
// is not read and may be empty; otherwise it must have new_bytes' size.
Result<std::string> make_plane_delta(std::string_view old_bytes, std::string_view new_bytes,
                                     std::size_t planes, std::uint16_t xor_mask, int zstd_level);

// The mask make_plane_delta codes smallest with, chosen plane by plane (a quick zstd level
// compares the XOR and the plain plane). REQUIRES: sizes equal.
std::uint16_t choose_plane_mask(std::string_view old_bytes, std::string_view new_bytes,
                                std::size_t planes);

// Modelled floats (format 4), for a segment of float32 values. REQUIRES: sizes equal.
Result<std::string> make_float_delta(std::string_view old_bytes, std::string_view new_bytes);

// Prefix (format 3): `new_bytes` as a zstd frame referring back into `prefix`.
Result<std::string> make_prefix_delta(std::string_view prefix, std::string_view new_bytes,
                                      int zstd_level);

// The format byte of a delta (1 to 4), or 0 when it is not a cairn delta.
int delta_format(std::string_view delta);

// The new bytes, `new_size` of them. `base` is the same segment of the earlier version for
// formats 1, 2 and 4, the prefix for format 3. Corruption if the delta does not decode, does not
// fit `base` or is for another size (so a hostile header cannot make us allocate more).
Result<std::string> apply_delta(std::string_view base, std::string_view delta,
                                std::uint64_t new_size);
// Formats 1, 2 and 4, whose output has the size of `base`.
Result<std::string> apply_delta(std::string_view base, std::string_view delta);

}  // namespace cairn::modelpkg
