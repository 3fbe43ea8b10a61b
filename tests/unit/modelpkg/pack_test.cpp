#include "modelpkg/pack.hpp"

#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>

#include <gtest/gtest.h>

#include "core/crypto.hpp"
#include "modelpkg/delta.hpp"
#include "test_util.hpp"

namespace cairn::modelpkg {
namespace {

using testing::FakeTensor;

void write(const std::string& path, const std::string& data) {
  std::ofstream(path, std::ios::binary) << data;
}

PackOptions options(const std::string& version, const std::string& out_dir) {
  PackOptions o;
  o.name = "m";
  o.version = version;
  o.out_dir = out_dir;
  return o;
}

std::vector<FakeTensor> tensors(unsigned seed) {
  return {{"conv1.weight", testing::random_floats(20000, seed)},
          {"conv1.bias", testing::random_floats(16, seed + 1)},
          {"conv2.weight", testing::random_floats(60000, seed + 2)},
          {"head.weight", testing::random_floats(5000, seed + 3)}};
}

std::set<std::string> hashes(const ModelIndex& idx) {
  std::set<std::string> out;
  for (const auto& c : idx.chunks) out.insert(c.hash);
  return out;
}

TEST(PackTest, PacksReassemblesAndSkipsKnownChunks) {
  testing::TempDir dir;
  auto model = testing::make_onnx(tensors(1));
  write(dir.path() + "/m.onnx", model);
  PackOptions o = options("1", dir.path() + "/pub");
  auto first = pack_model(dir.path() + "/m.onnx", o);
  ASSERT_TRUE(first) << first.error().to_string();
  EXPECT_EQ(first->format, "onnx");
  EXPECT_EQ(first->tensors, 4u);
  EXPECT_GT(first->chunks_written, 0u);
  std::string assembled;
  for (const auto& c : first->index.chunks) {
    auto data = read_chunk(o.out_dir, c);
    ASSERT_TRUE(data) << data.error().to_string();
    assembled += *data;
  }
  EXPECT_EQ(assembled, model);
  EXPECT_TRUE(std::filesystem::exists(o.out_dir + "/m-1.cidx"));

  o.version = "1-again";
  auto again = pack_model(dir.path() + "/m.onnx", o);
  ASSERT_TRUE(again);
  EXPECT_EQ(again->chunks_written, 0u);
  EXPECT_TRUE(again->index.deltas.empty());  // same file: nothing to send
}

// Packs a model as version 1 and the same tensors in another order as version 2 into
// DIR/pub. Returns their summaries.
std::pair<Result<PackSummary>, Result<PackSummary>> pack_reordered(const std::string& dir) {
  auto t = tensors(1);
  write(dir + "/a.onnx", testing::make_onnx(t));
  std::swap(t[0], t[2]);
  write(dir + "/b.onnx", testing::make_onnx(t));
  PackOptions o = options("1", dir + "/pub");
  auto a = pack_model(dir + "/a.onnx", o);
  o.version = "2";
  return {std::move(a), pack_model(dir + "/b.onnx", o)};
}

TEST(PackTest, ReorderedTensorsKeepTheirChunks) {
  testing::TempDir dir;
  auto [a, b] = pack_reordered(dir.path());
  ASSERT_TRUE(a && b);
  std::uint64_t new_bytes = 0;
  auto old = hashes(a->index);
  for (const auto& c : b->index.chunks) {
    if (!old.count(c.hash)) new_bytes += c.size;
  }
  // Only the glue between tensors (names, dims, the small bias) is new.
  EXPECT_LT(new_bytes, 4096u) << new_bytes;
}

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), {});
}

// The bytes of the given segments of `idx`, in order, from the chunks in `dir`.
std::string segment_bytes(const std::string& dir, const ModelIndex& idx,
                          const std::vector<std::size_t>& segments) {
  auto starts = idx.segment_starts();
  std::string out;
  for (std::size_t s : segments) {
    for (std::size_t c = starts[s]; c < starts[s + 1]; ++c) {
      auto chunk = read_chunk(dir, idx.chunks[c]);
      EXPECT_TRUE(chunk);
      if (chunk) out += *chunk;
    }
  }
  return out;
}

TEST(PackTest, ReorderedTensorsGetPrefixDeltasForTheBytesBetweenThem) {
  testing::TempDir dir;
  auto [a, b] = pack_reordered(dir.path());
  ASSERT_TRUE(a && b);
  const std::string pub = dir.path() + "/pub";
  ASSERT_EQ(b->index.deltas.size(), 1u);
  std::size_t prefix_deltas = 0;
  for (const auto& e : b->index.deltas[0].entries) {
    const auto& key = b->index.segments[e.segment].key;
    EXPECT_TRUE(key.starts_with('#')) << key << " moved whole and needs no delta";
    if (e.kind != DeltaKind::prefix) continue;
    ++prefix_deltas;
    auto delta = read_all(pub + "/" + delta_path(b->index.sha256, a->index.sha256, e.segment));
    EXPECT_EQ(delta.size(), e.size);
    auto prefix = segment_bytes(pub, a->index, a->index.prefix_segments(key));
    auto expected = segment_bytes(pub, b->index, {e.segment});
    auto rebuilt = apply_delta(prefix, delta, expected.size());
    ASSERT_TRUE(rebuilt) << rebuilt.error().to_string();
    EXPECT_EQ(*rebuilt, expected);
  }
  EXPECT_GE(prefix_deltas, 1u);
}

TEST(PackTest, IndexDeltasRebuildTheIndexAndARepackDropsStaleOnes) {
  testing::TempDir dir;
  PackOptions o = options("1", dir.path() + "/pub");
  std::vector<std::string> cidx;
  for (unsigned v = 1; v <= 3; ++v) {
    auto t = tensors(1);
    t[3].data = testing::random_floats(5000, 100 + v);
    write(dir.path() + "/m.onnx", testing::make_onnx(t));
    o.version = std::to_string(v);
    auto packed = pack_model(dir.path() + "/m.onnx", o);
    ASSERT_TRUE(packed) << packed.error().to_string();
    cidx.push_back(read_all(packed->index_path));
    EXPECT_EQ(packed->index_deltas_written, v - 1);
    // The file system's clock may not tell packs in one tick apart.
    std::filesystem::last_write_time(
        packed->index_path,
        std::filesystem::file_time_type::clock::now() - std::chrono::seconds(10 - v));
  }
  for (unsigned from = 0; from < 2; ++from) {
    auto delta =
        read_all(o.out_dir + "/" + index_delta_path("m-3.cidx", crypto::sha256_hex(cidx[from])));
    auto made = apply_index_delta(cidx[from], delta);
    ASSERT_TRUE(made) << made.error().to_string();
    EXPECT_EQ(*made, cidx[2]);
  }
  // Version 3 again, with deltas from one version only: the delta from version 1 would make
  // the index this pack replaced.
  o.delta_versions = 1;
  auto again = pack_model(dir.path() + "/m.onnx", o);
  ASSERT_TRUE(again);
  std::size_t files = 0;
  for (const auto& e : std::filesystem::directory_iterator(o.out_dir + "/deltas/m-3.cidx")) {
    (void)e;
    ++files;
  }
  EXPECT_EQ(files, 1u);
  EXPECT_FALSE(std::filesystem::exists(o.out_dir + "/" +
                                       index_delta_path("m-3.cidx", crypto::sha256_hex(cidx[0]))));
}

TEST(PackTest, ChangedTensorGetsADeltaThatRebuildsIt) {
  testing::TempDir dir;
  auto t = tensors(1);
  write(dir.path() + "/a.onnx", testing::make_onnx(t));
  auto& head = t[3].data;
  for (std::size_t i = 0; i < head.size(); i += 64) head[i] = static_cast<char>(head[i] ^ 1);
  auto new_model = testing::make_onnx(t);
  write(dir.path() + "/b.onnx", new_model);
  PackOptions o = options("1", dir.path() + "/pub");
  auto a = pack_model(dir.path() + "/a.onnx", o);
  o.version = "2";
  auto b = pack_model(dir.path() + "/b.onnx", o);
  ASSERT_TRUE(a && b);
  ASSERT_EQ(b->index.deltas.size(), 1u);
  const auto& set = b->index.deltas[0];
  EXPECT_EQ(set.from_sha256, a->index.sha256);
  ASSERT_EQ(set.entries.size(), 1u);
  std::size_t seg = set.entries[0].segment;
  EXPECT_EQ(b->index.segments[seg].key, "head.weight");
  std::ifstream in(o.out_dir + "/" + delta_path(b->index.sha256, a->index.sha256, seg),
                   std::ios::binary);
  std::string delta((std::istreambuf_iterator<char>(in)), {});
  EXPECT_EQ(delta.size(), set.entries[0].size);
  auto old_tensor = tensors(1)[3].data;
  auto rebuilt = apply_delta(old_tensor, delta);
  ASSERT_TRUE(rebuilt);
  EXPECT_EQ(*rebuilt, head);
}

TEST(PackTest, BadInputIsRejected) {
  testing::TempDir dir;
  PackOptions o = options("../1", dir.path());
  write(dir.path() + "/x", "data");
  EXPECT_EQ(pack_model(dir.path() + "/x", o).error().code, errc::invalid_argument);
  o.version = "1";
  EXPECT_EQ(pack_model(dir.path() + "/missing", o).error().code, errc::not_found);
}

}  // namespace
}  // namespace cairn::modelpkg
