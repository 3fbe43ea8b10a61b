// libFuzzer target: what a device decodes of a model update it downloads, and the tensor
// reader pack runs over model files.
//
// The first byte picks what the rest is:
//   0  a .cidx index: decode_index; an accepted index must encode and decode again;
//   1  a held index and an index delta (two bytes of held length, little-endian, the held
//      .cidx, the delta): apply_index_delta; what it accepts must decode;
//   2  a base and a delta (the same split): apply_delta must either refuse it or make exactly
//      the size its header gives;
//   3  a model file: find_tensors' regions must be sorted, disjoint, non-empty and inside it;
//   4  new bytes of a segment: a format-4 delta of them against a fixed base must give them back.
// Any broken invariant aborts, which libFuzzer reports as a crash.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

#include "fuzz_check.hpp"
#include "modelpkg/delta.hpp"
#include "modelpkg/index.hpp"
#include "modelpkg/tensors.hpp"

namespace {

namespace mp = cairn::modelpkg;

// Deltas bigger than this are not tried (libFuzzer inputs are small; this bounds memory).
constexpr std::uint64_t kMaxSegment = 1 << 20;

// The two byte-strings an input carries in modes 1 and 2: a little-endian uint16 length, that
// many bytes, then the rest.
std::pair<std::string_view, std::string_view> split(std::string_view in) {
  if (in.size() < 2) return {{}, {}};
  const std::size_t n = std::min<std::size_t>(
      static_cast<unsigned char>(in[0]) | (std::size_t{static_cast<unsigned char>(in[1])} << 8),
      in.size() - 2);
  return {in.substr(2, n), in.substr(2 + n)};
}

std::uint64_t header_size(std::string_view delta) {
  std::uint64_t v = 0;
  for (std::size_t b = 0; b < 8; ++b)
    v |= std::uint64_t{static_cast<unsigned char>(delta[8 + b])} << (8 * b);
  return v;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (data[0] % 5) {
    case 0: {
      auto idx = mp::decode_index(rest);
      if (!idx) break;
      auto again = mp::encode_index(*idx);
      FUZZ_CHECK(again);
      FUZZ_CHECK(mp::decode_index(*again));
      break;
    }
    case 1: {
      const auto [held, delta] = split(rest);
      auto cidx = mp::apply_index_delta(held, delta);
      if (cidx) (void)mp::decode_index(*cidx);
      break;
    }
    case 2: {
      const auto [base, delta] = split(rest);
      if (mp::delta_format(delta) == 0) {
        FUZZ_CHECK(!mp::apply_delta(base, delta, 0));
        break;
      }
      const std::uint64_t want = header_size(delta);
      if (want > kMaxSegment) break;
      auto out = mp::apply_delta(base, delta, want);
      if (out) FUZZ_CHECK(out->size() == want);
      break;
    }
    case 3: {
      const auto layout = mp::find_tensors(rest);
      std::size_t end = 0;
      for (const auto& t : layout.tensors) {
        FUZZ_CHECK(t.size > 0 && t.offset >= end && t.offset + t.size <= rest.size());
        end = t.offset + t.size;
      }
      break;
    }
    case 4: {
      std::string base(rest.size(), '\0');
      for (std::size_t i = 0; i < base.size(); ++i) base[i] = static_cast<char>(i * 151 + 7);
      auto delta = mp::make_float_delta(base, rest);
      FUZZ_CHECK(delta);
      auto back = mp::apply_delta(base, *delta, rest.size());
      FUZZ_CHECK(back && *back == rest);
      break;
    }
  }
  return 0;
}
