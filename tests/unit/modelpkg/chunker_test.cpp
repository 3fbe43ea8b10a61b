#include "modelpkg/chunker.hpp"

#include <set>

#include <gtest/gtest.h>

#include "test_util.hpp"

namespace cairn::modelpkg {
namespace {

std::set<std::string> chunk_set(const std::string& data, const ChunkingOptions& o) {
  std::set<std::string> out;
  for (const auto& c : cut_chunks(data, o)) out.insert(data.substr(c.offset, c.size));
  return out;
}

TEST(ChunkerTest, ChunksCoverTheDataWithinBounds) {
  ChunkingOptions o;
  auto data = testing::random_bytes(3 * 1024 * 1024, 1);
  auto chunks = cut_chunks(data, o);
  std::size_t pos = 0;
  for (std::size_t i = 0; i < chunks.size(); ++i) {
    EXPECT_EQ(chunks[i].offset, pos);
    EXPECT_LE(chunks[i].size, o.max_chunk);
    if (i + 1 < chunks.size()) {
      EXPECT_GE(chunks[i].size, o.min_chunk);
    }
    pos += chunks[i].size;
  }
  EXPECT_EQ(pos, data.size());
  // Content-defined: roughly the average size, not all cut at the maximum.
  EXPECT_GT(chunks.size(), data.size() / o.max_chunk + 2);
}

TEST(ChunkerTest, AnInsertionChangesOnlyNearbyChunks) {
  ChunkingOptions o;
  auto data = testing::random_bytes(4 * 1024 * 1024, 2);
  auto edited = data;
  edited.insert(2 * 1024 * 1024, "some inserted bytes");
  auto before = chunk_set(data, o);
  auto after = chunk_set(edited, o);
  std::size_t shared = 0;
  for (const auto& c : after) shared += before.count(c);
  EXPECT_GE(shared + 3, before.size());  // at most a few chunks differ
}

TEST(ChunkerTest, SegmentsFollowLargeTensorsAndCoverTheFile) {
  TensorLayout layout;
  layout.format = ModelFormat::kOnnx;
  layout.tensors = {{"small", 10, 100, 4}, {"big", 200, 10000, 4}, {"big2", 10300, 8000, 2}};
  ChunkingOptions o;
  auto segs = make_segments(20000, layout, o);
  ASSERT_EQ(segs.size(), 5u);
  EXPECT_EQ(segs[0].key, "#0");
  EXPECT_EQ(segs[0].size, 200u);  // the small tensor stays inside the glue
  EXPECT_EQ(segs[1].key, "big");
  EXPECT_TRUE(segs[1].is_tensor);
  EXPECT_EQ(segs[2].key, "#1");
  EXPECT_EQ(segs[2].size, 100u);
  EXPECT_EQ(segs[3].key, "big2");
  EXPECT_EQ(segs[3].element_size, 2u);
  EXPECT_EQ(segs[4].offset + segs[4].size, 20000u);
}

TEST(ChunkerTest, EmptyDataHasNoChunks) { EXPECT_TRUE(cut_chunks("", ChunkingOptions{}).empty()); }

}  // namespace
}  // namespace cairn::modelpkg
