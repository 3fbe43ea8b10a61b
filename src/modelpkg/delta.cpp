#include "modelpkg/delta.hpp"

#include <algorithm>
#include <bit>
#include <cstring>
#include <memory>

#include "modelpkg/detail/range_coder.hpp"
#include "modelpkg/detail/zstd.hpp"

namespace cairn::modelpkg {

namespace {

constexpr std::string_view kMagic = "CDLT";
constexpr std::size_t kHeaderSize = 16;
constexpr char kXorPlanes = 1;
constexpr char kMaskedPlanes = 2;
constexpr char kPrefix = 3;
constexpr char kFloats = 4;
// zstd level that only compares codings of a plane (the chosen one is then coded at the
// caller's level): fast, and ranks them the same way in practice.
constexpr int kProbeLevel = 3;

std::string header(char format, std::size_t planes, std::uint16_t mask, std::uint64_t size) {
  std::string out(kHeaderSize, '\0');
  std::memcpy(out.data(), kMagic.data(), 4);
  out[4] = format;
  out[5] = static_cast<char>(planes);
  out[6] = static_cast<char>(mask & 0xff);
  out[7] = static_cast<char>(mask >> 8);
  for (std::size_t b = 0; b < 8; ++b) out[8 + b] = static_cast<char>((size >> (8 * b)) & 0xff);
  return out;
}

bool xored(std::uint16_t mask, std::size_t plane) { return (mask >> plane) & 1U; }

// Format 2 rotates each element of 2, 4 or 8 bytes (a little-endian integer) left by one bit:
// the sign bit of a float32, float64, float16 or bfloat16 goes to bit 0, and the top byte holds
// exponent bits only (float32, bfloat16: all eight), so one plane is the exponents alone.
bool rotates(std::size_t planes) { return planes == 2 || planes == 4 || planes == 8; }

std::string rotate_left(std::string_view bytes, std::size_t planes) {
  std::string out(bytes);
  const std::size_t elements = bytes.size() / planes;
  for (std::size_t e = 0; e < elements; ++e) {
    auto* b = reinterpret_cast<unsigned char*>(out.data() + e * planes);
    const unsigned char top = static_cast<unsigned char>(b[planes - 1] >> 7);
    for (std::size_t i = planes - 1; i > 0; --i) {
      b[i] = static_cast<unsigned char>((b[i] << 1) | (b[i - 1] >> 7));
    }
    b[0] = static_cast<unsigned char>((b[0] << 1) | top);
  }
  return out;
}

void rotate_right(std::string& bytes, std::size_t planes) {
  const std::size_t elements = bytes.size() / planes;
  for (std::size_t e = 0; e < elements; ++e) {
    auto* b = reinterpret_cast<unsigned char*>(bytes.data() + e * planes);
    const unsigned char low = static_cast<unsigned char>(b[0] & 1U);
    for (std::size_t i = 0; i + 1 < planes; ++i) {
      b[i] = static_cast<unsigned char>((b[i] >> 1) | (b[i + 1] << 7));
    }
    b[planes - 1] = static_cast<unsigned char>((b[planes - 1] >> 1) | (low << 7));
  }
}

// The planar bytes as zstd frames: one per plane (the last one with the trailing bytes), so
// each plane gets its own entropy tables (one frame would code a random mantissa plane and a
// near-constant exponent plane with the same Huffman table whenever they share a 128 KiB
// block); a small segment, where frame headers weigh, as one frame if that is smaller.
// Decoders read concatenated frames as one stream, so the format does not change.
Result<std::string> compress_planes(std::string_view planar, std::size_t planes, int level) {
  const std::size_t elements = planar.size() / planes;
  std::string out;
  for (std::size_t p = 0; p < planes; ++p) {
    const std::size_t begin = p * elements;
    const std::size_t end = p + 1 == planes ? planar.size() : begin + elements;
    auto frame = detail::zstd_compress(planar.substr(begin, end - begin), level);
    if (!frame) return std::move(frame).error();
    out += *frame;
  }
  if (planes > 1 && planar.size() < 64 * 1024) {
    auto one = detail::zstd_compress(planar, level);
    if (!one) return std::move(one).error();
    if (one->size() < out.size()) return one;
  }
  return out;
}

// Byte planes of new_bytes, plane p XORed with old_bytes where the mask says so; the n % planes
// trailing bytes follow plane 0's rule.
std::string to_planes(std::string_view old_bytes, std::string_view new_bytes, std::size_t planes,
                      std::uint16_t mask) {
  const std::size_t n = new_bytes.size();
  const std::size_t elements = n / planes;
  std::string planar(n, '\0');
  for (std::size_t p = 0; p < planes; ++p) {
    char* dst = planar.data() + p * elements;
    const bool x = xored(mask, p);
    for (std::size_t e = 0; e < elements; ++e) {
      std::size_t i = e * planes + p;
      dst[e] = static_cast<char>(x ? old_bytes[i] ^ new_bytes[i] : new_bytes[i]);
    }
  }
  const bool x = xored(mask, 0);
  for (std::size_t i = elements * planes; i < n; ++i) {
    planar[i] = static_cast<char>(x ? old_bytes[i] ^ new_bytes[i] : new_bytes[i]);
  }
  return planar;
}

std::string from_planes(std::string_view old_bytes, std::string_view planar, std::size_t planes,
                        std::uint16_t mask) {
  const std::size_t n = planar.size();
  const std::size_t elements = n / planes;
  std::string out(n, '\0');
  for (std::size_t p = 0; p < planes; ++p) {
    const char* src = planar.data() + p * elements;
    const bool x = xored(mask, p);
    for (std::size_t e = 0; e < elements; ++e) {
      std::size_t i = e * planes + p;
      out[i] = static_cast<char>(x ? old_bytes[i] ^ src[e] : src[e]);
    }
  }
  const bool x = xored(mask, 0);
  for (std::size_t i = elements * planes; i < n; ++i) {
    out[i] = static_cast<char>(x ? old_bytes[i] ^ planar[i] : planar[i]);
  }
  return out;
}

std::uint64_t read_u64(std::string_view s) {
  std::uint64_t v = 0;
  for (std::size_t b = 0; b < 8; ++b)
    v |= static_cast<std::uint64_t>(static_cast<unsigned char>(s[b])) << (8 * b);
  return v;
}

Result<std::string> plane_delta(char format, std::string_view old_bytes, std::string_view new_bytes,
                                std::size_t planes, std::uint16_t mask, int zstd_level) {
  if (planes < 1 || planes > 16) planes = 1;
  if (mask != 0 && old_bytes.size() != new_bytes.size()) {
    return make_error(errc::invalid_argument, "a delta needs old and new data of the same size");
  }
  Result<std::string> packed = make_error(errc::internal, "not coded");
  if (format == kMaskedPlanes && rotates(planes)) {
    const std::string rotated_old = mask != 0 ? rotate_left(old_bytes, planes) : std::string();
    packed = compress_planes(to_planes(rotated_old, rotate_left(new_bytes, planes), planes, mask),
                             planes, zstd_level);
  } else {
    packed = compress_planes(to_planes(old_bytes, new_bytes, planes, mask), planes, zstd_level);
  }
  if (!packed) return std::move(packed).error();
  return header(format, planes, format == kXorPlanes ? 0 : mask, new_bytes.size()) + *packed;
}

// Format 4: each float32 of the new bytes coded with what the old value at the same place and
// the values coded before it say about it. The exponent (8 bits, a binary tree of contexts: the
// bits above decide the next), then the sign (context: the old sign, how far the old exponent
// is from the new one, the new exponent), then the two top mantissa bits (context: the new
// exponent), each with a learnt probability; the 21 low mantissa bits and any trailing bytes at
// one bit each. Why: a tensor whose values all moved leaves nothing to XOR, but its exponents
// still take a few values with a skewed spread, a large old weight mostly keeps its sign, and
// the mantissa of a bell-shaped spread leans towards its low end within each exponent.
constexpr int kTopMantissaBits = 2;
constexpr int kLowMantissaBits = 23 - kTopMantissaBits;

struct FloatModel {
  // Values are loaded as native uint32; the format's are little-endian.
  static_assert(std::endian::native == std::endian::little);

  detail::BitModel exponent[256];
  detail::BitModel sign[2][7][256];
  detail::BitModel mantissa[256][1 << kTopMantissaBits];

  static std::uint32_t load(const char* p) {
    std::uint32_t v;
    std::memcpy(&v, p, 4);
    return v;
  }
  static void store(char* p, std::uint32_t v) { std::memcpy(p, &v, 4); }
  detail::BitModel& sign_model(std::uint32_t old_value, std::uint32_t exp) {
    const int old_exp = static_cast<int>((old_value >> 23) & 0xFF);
    const int gap = std::clamp(old_exp - static_cast<int>(exp), -3, 3) + 3;
    return sign[old_value >> 31][gap][exp];
  }
};

std::string make_float_delta_body(std::string_view old_bytes, std::string_view new_bytes) {
  auto model = std::make_unique<FloatModel>();
  detail::RangeEncoder rc;
  const std::size_t elements = new_bytes.size() / 4;
  for (std::size_t e = 0; e < elements; ++e) {
    const std::uint32_t v = FloatModel::load(new_bytes.data() + 4 * e);
    const std::uint32_t exp = (v >> 23) & 0xFF;
    std::uint32_t node = 1;
    for (int i = 7; i >= 0; --i) {
      const bool bit = (exp >> i) & 1U;
      rc.encode(model->exponent[node], bit);
      node = (node << 1) | (bit ? 1U : 0U);
    }
    rc.encode(model->sign_model(FloatModel::load(old_bytes.data() + 4 * e), exp), v >> 31);
    node = 1;
    for (int i = 22; i > 22 - kTopMantissaBits; --i) {
      const bool bit = (v >> i) & 1U;
      rc.encode(model->mantissa[exp][node], bit);
      node = (node << 1) | (bit ? 1U : 0U);
    }
    rc.encode_direct(v & ((1U << kLowMantissaBits) - 1), kLowMantissaBits);
  }
  for (std::size_t i = elements * 4; i < new_bytes.size(); ++i) {
    rc.encode_direct(static_cast<unsigned char>(new_bytes[i]), 8);
  }
  return rc.finish();
}

Result<std::string> apply_float_delta_body(std::string_view old_bytes, std::string_view body) {
  auto model = std::make_unique<FloatModel>();
  detail::RangeDecoder rc(body);
  std::string out(old_bytes.size(), '\0');
  const std::size_t elements = out.size() / 4;
  for (std::size_t e = 0; e < elements; ++e) {
    std::uint32_t node = 1;
    for (int i = 0; i < 8; ++i) node = (node << 1) | (rc.decode(model->exponent[node]) ? 1U : 0U);
    const std::uint32_t exp = node & 0xFF;
    const bool negative =
        rc.decode(model->sign_model(FloatModel::load(old_bytes.data() + 4 * e), exp));
    node = 1;
    for (int i = 0; i < kTopMantissaBits; ++i)
      node = (node << 1) | (rc.decode(model->mantissa[exp][node]) ? 1U : 0U);
    const std::uint32_t low = rc.decode_direct(kLowMantissaBits);
    FloatModel::store(out.data() + 4 * e,
                      (negative ? 0x80000000U : 0U) | (exp << 23) |
                          ((node & ((1U << kTopMantissaBits) - 1)) << kLowMantissaBits) | low);
  }
  for (std::size_t i = elements * 4; i < out.size(); ++i) {
    out[i] = static_cast<char>(rc.decode_direct(8));
  }
  if (rc.overrun() != 0 || rc.unread() != 0) {
    return make_error(
        errc::corruption,
        "float delta is " + std::string(rc.overrun() != 0 ? "cut short" : "too long"));
  }
  return out;
}

}  // namespace

Result<std::string> make_delta(std::string_view old_bytes, std::string_view new_bytes,
                               std::size_t planes, int zstd_level) {
  if (old_bytes.size() != new_bytes.size()) {
    return make_error(errc::invalid_argument, "a delta needs old and new data of the same size");
  }
  return plane_delta(kXorPlanes, old_bytes, new_bytes, planes, 0xffff, zstd_level);
}

Result<std::string> make_plane_delta(std::string_view old_bytes, std::string_view new_bytes,
                                     std::size_t planes, std::uint16_t xor_mask, int zstd_level) {
  return plane_delta(kMaskedPlanes, old_bytes, new_bytes, planes, xor_mask, zstd_level);
}

std::uint16_t choose_plane_mask(std::string_view old_bytes, std::string_view new_bytes,
                                std::size_t planes) {
  if (planes < 1 || planes > 16 || old_bytes.size() != new_bytes.size()) return 0;
  const std::size_t elements = new_bytes.size() / planes;
  std::uint16_t mask = 0;
  // The planes format 2 codes: of rotated elements where it rotates.
  std::string rotated_old, rotated_new;
  if (rotates(planes)) {
    rotated_old = rotate_left(old_bytes, planes);
    rotated_new = rotate_left(new_bytes, planes);
    old_bytes = rotated_old;
    new_bytes = rotated_new;
  }
  std::string xor_plane(elements, '\0'), new_plane(elements, '\0');
  for (std::size_t p = 0; p < planes; ++p) {
    for (std::size_t e = 0; e < elements; ++e) {
      std::size_t i = e * planes + p;
      xor_plane[e] = static_cast<char>(old_bytes[i] ^ new_bytes[i]);
      new_plane[e] = new_bytes[i];
    }
    auto x = detail::zstd_compress(xor_plane, kProbeLevel);
    auto n = detail::zstd_compress(new_plane, kProbeLevel);
    if (x && n && x->size() <= n->size()) mask = static_cast<std::uint16_t>(mask | (1U << p));
  }
  return mask;
}

Result<std::string> make_prefix_delta(std::string_view prefix, std::string_view new_bytes,
                                      int zstd_level) {
  auto packed = detail::zstd_compress_with_prefix(new_bytes, prefix, zstd_level);
  if (!packed) return std::move(packed).error();
  return header(kPrefix, 1, 0, new_bytes.size()) + *packed;
}

Result<std::string> make_float_delta(std::string_view old_bytes, std::string_view new_bytes) {
  if (old_bytes.size() != new_bytes.size()) {
    return make_error(errc::invalid_argument, "a delta needs old and new data of the same size");
  }
  return header(kFloats, 4, 0, new_bytes.size()) + make_float_delta_body(old_bytes, new_bytes);
}

int delta_format(std::string_view delta) {
  if (delta.size() < kHeaderSize || delta.substr(0, 4) != kMagic) return 0;
  int f = delta[4];
  return f >= kXorPlanes && f <= kFloats ? f : 0;
}

Result<std::string> apply_delta(std::string_view base, std::string_view delta) {
  return apply_delta(base, delta, base.size());
}

Result<std::string> apply_delta(std::string_view base, std::string_view delta,
                                std::uint64_t new_size) {
  const int format = delta_format(delta);
  if (format == 0) return make_error(errc::corruption, "not a cairn delta (bad header)");
  auto planes = static_cast<std::size_t>(static_cast<unsigned char>(delta[5]));
  auto mask = static_cast<std::uint16_t>(static_cast<unsigned char>(delta[6]) |
                                         (static_cast<unsigned char>(delta[7]) << 8));
  if (format == kXorPlanes) mask = 0xffff;
  const std::uint64_t size = read_u64(delta.substr(8));
  if (planes < 1 || planes > 16 || (format == kFloats && planes != 4)) {
    return make_error(errc::corruption, "delta header out of range");
  }
  if (size != new_size) {
    return make_error(errc::corruption, "delta makes " + std::to_string(size) +
                                            " bytes, the segment has " + std::to_string(new_size));
  }
  const bool needs_same_size = format == kFloats || (format != kPrefix && mask != 0);
  if (needs_same_size && size != base.size()) {
    return make_error(errc::corruption, "delta is for " + std::to_string(size) +
                                            " bytes, the base has " + std::to_string(base.size()));
  }
  const auto body = delta.substr(kHeaderSize);
  if (format == kFloats) return apply_float_delta_body(base, body);
  auto decoded = format == kPrefix ? detail::zstd_decompress_with_prefix(
                                         body, base, static_cast<std::size_t>(size))
                                   : detail::zstd_decompress(body, static_cast<std::size_t>(size));
  if (!decoded) return std::move(decoded).error();
  if (decoded->size() != size)
    return make_error(errc::corruption, "delta decodes to the wrong size");
  if (format == kPrefix) return decoded;
  if (format == kMaskedPlanes && rotates(planes)) {
    auto out =
        from_planes(mask != 0 ? rotate_left(base, planes) : std::string(), *decoded, planes, mask);
    rotate_right(out, planes);
    return out;
  }
  return from_planes(base, *decoded, planes, mask);
}

}  // namespace cairn::modelpkg
