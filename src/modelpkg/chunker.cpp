#include "modelpkg/chunker.hpp"

#include <array>
#include <cstdint>

namespace cairn::modelpkg {

namespace {

// 256 pseudo-random 64-bit values (splitmix64 from a fixed seed). They are part of the format in
// effect: changing them changes every boundary, and so every chunk a device holds.
const std::array<std::uint64_t, 256>& gear_table() {
  static const std::array<std::uint64_t, 256> table = [] {
    std::array<std::uint64_t, 256> t{};
    std::uint64_t state = 0x636169726e2d6364ULL;  // "cairn-cd"
    for (auto& v : t) {
      std::uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
      z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
      z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
      v = z ^ (z >> 31);
    }
    return t;
  }();
  return table;
}

}  // namespace

std::vector<Segment> make_segments(std::size_t file_size, const TensorLayout& layout,
                                   const ChunkingOptions& options) {
  std::vector<Segment> out;
  std::size_t glue_count = 0;
  std::size_t pos = 0;
  auto glue = [&](std::size_t end) {
    if (end <= pos) return;
    Segment s;
    s.key = "#" + std::to_string(glue_count++);
    s.offset = pos;
    s.size = end - pos;
    // Glue is mostly small float tensors (biases, norms) between protobuf/flatbuffer fields.
    s.element_size = 4;
    out.push_back(std::move(s));
    pos = end;
  };
  for (const auto& t : layout.tensors) {
    if (t.size < options.min_tensor_segment || t.offset < pos || t.offset + t.size > file_size) {
      continue;
    }
    glue(t.offset);
    Segment s;
    s.key = t.name;
    s.offset = t.offset;
    s.size = t.size;
    s.element_size = t.element_size;
    s.is_tensor = true;
    out.push_back(std::move(s));
    pos = t.offset + t.size;
  }
  glue(file_size);
  return out;
}

std::vector<ChunkSpan> cut_chunks(std::string_view data, const ChunkingOptions& options) {
  std::vector<ChunkSpan> out;
  const auto& gear = gear_table();
  std::size_t average = options.average_chunk < 2 ? 2 : options.average_chunk;
  // Cut where the top log2(average) bits of the hash are zero: the high bits depend on the
  // last 64 bytes, the low ones on fewer.
  int bits = 0;
  while ((std::size_t{1} << (bits + 1)) <= average) ++bits;
  const std::uint64_t mask = bits == 0 ? 0 : ~std::uint64_t{0} << (64 - bits);
  std::size_t min_chunk = options.min_chunk == 0 ? 1 : options.min_chunk;
  std::size_t max_chunk = options.max_chunk < min_chunk ? min_chunk : options.max_chunk;
  std::size_t start = 0;
  while (start < data.size()) {
    std::size_t remaining = data.size() - start;
    if (remaining <= min_chunk) {
      out.push_back({start, remaining});
      break;
    }
    std::size_t limit = remaining < max_chunk ? remaining : max_chunk;
    std::size_t cut = limit;
    std::uint64_t hash = 0;
    for (std::size_t i = min_chunk; i < limit; ++i) {
      hash = (hash << 1) + gear[static_cast<unsigned char>(data[start + i])];
      if ((hash & mask) == 0) {
        cut = i + 1;
        break;
      }
    }
    out.push_back({start, cut});
    start += cut;
  }
  return out;
}

}  // namespace cairn::modelpkg
