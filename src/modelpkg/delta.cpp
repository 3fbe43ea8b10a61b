#include "modelpkg/delta.hpp"

#include <cstdint>
#include <cstring>

#include "modelpkg/detail/zstd.hpp"

namespace cairn::modelpkg {

namespace {
constexpr std::string_view kMagic = "CDLT";
constexpr std::size_t kHeaderSize = 16;
}  // namespace

Result<std::string> make_delta(std::string_view old_bytes, std::string_view new_bytes,
                               std::size_t planes, int zstd_level) {
  if (old_bytes.size() != new_bytes.size()) {
    return make_error(errc::invalid_argument, "a delta needs old and new data of the same size");
  }
  if (planes < 1 || planes > 16) planes = 1;
  const std::size_t n = new_bytes.size();
  const std::size_t elements = n / planes;
  std::string planar(n, '\0');
  for (std::size_t p = 0; p < planes; ++p) {
    char* dst = planar.data() + p * elements;
    for (std::size_t e = 0; e < elements; ++e) {
      std::size_t i = e * planes + p;
      dst[e] = static_cast<char>(old_bytes[i] ^ new_bytes[i]);
    }
  }
  for (std::size_t i = elements * planes; i < n; ++i) {
    planar[i] = static_cast<char>(old_bytes[i] ^ new_bytes[i]);
  }
  auto packed = detail::zstd_compress(planar, zstd_level);
  if (!packed) return std::move(packed).error();
  std::string out(kHeaderSize, '\0');
  std::memcpy(out.data(), kMagic.data(), 4);
  out[4] = 1;
  out[5] = static_cast<char>(planes);
  auto size = static_cast<std::uint64_t>(n);
  for (int b = 0; b < 8; ++b) out[8 + b] = static_cast<char>((size >> (8 * b)) & 0xff);
  out += *packed;
  return out;
}

Result<std::string> apply_delta(std::string_view old_bytes, std::string_view delta) {
  if (delta.size() < kHeaderSize || delta.substr(0, 4) != kMagic || delta[4] != 1) {
    return make_error(errc::corruption, "not a cairn delta (bad header)");
  }
  auto planes = static_cast<std::size_t>(static_cast<unsigned char>(delta[5]));
  std::uint64_t size = 0;
  for (int b = 0; b < 8; ++b) {
    size |= static_cast<std::uint64_t>(static_cast<unsigned char>(delta[8 + b])) << (8 * b);
  }
  if (planes < 1 || planes > 16 || size != old_bytes.size()) {
    return make_error(errc::corruption, "delta is for " + std::to_string(size) +
                                            " bytes, the base has " +
                                            std::to_string(old_bytes.size()));
  }
  auto planar = detail::zstd_decompress(delta.substr(kHeaderSize), old_bytes.size());
  if (!planar) return std::move(planar).error();
  if (planar->size() != old_bytes.size()) {
    return make_error(errc::corruption, "delta decodes to the wrong size");
  }
  const std::size_t n = old_bytes.size();
  const std::size_t elements = n / planes;
  std::string out(n, '\0');
  for (std::size_t p = 0; p < planes; ++p) {
    const char* src = planar->data() + p * elements;
    for (std::size_t e = 0; e < elements; ++e) {
      std::size_t i = e * planes + p;
      out[i] = static_cast<char>(old_bytes[i] ^ src[e]);
    }
  }
  for (std::size_t i = elements * planes; i < n; ++i) {
    out[i] = static_cast<char>(old_bytes[i] ^ (*planar)[i]);
  }
  return out;
}

}  // namespace cairn::modelpkg
