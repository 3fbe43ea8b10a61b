#include "modelpkg/index.hpp"

#include <set>

#include <gtest/gtest.h>

#include "core/crypto.hpp"

namespace cairn::modelpkg {
namespace {

ModelIndex sample() {
  ModelIndex idx;
  idx.name = "det";
  idx.version = "1.2";
  idx.format = "onnx";
  idx.sha256 = crypto::sha256_hex("file");
  idx.chunks = {{crypto::sha256_hex("a"), 100, true, 40}, {crypto::sha256_hex("b"), 50, false, 50}};
  idx.size = 150;
  idx.segments = {{"#0", 1, 4}, {"w", 1, 4}};
  idx.deltas = {{"1.1", crypto::sha256_hex("old"), {{1, 20}}}};
  return idx;
}

TEST(IndexTest, RoundTrips) {
  auto bytes = encode_index(sample());
  ASSERT_TRUE(bytes);
  auto idx = decode_index(*bytes);
  ASSERT_TRUE(idx) << idx.error().to_string();
  EXPECT_EQ(idx->name, "det");
  EXPECT_EQ(idx->chunks.size(), 2u);
  EXPECT_FALSE(idx->chunks[1].compressed);
  EXPECT_EQ(idx->deltas.at(0).entries.at(0).size, 20u);
  EXPECT_EQ(idx->chunk_offsets(), (std::vector<std::uint64_t>{0, 100, 150}));
  EXPECT_EQ(idx->segment_starts(), (std::vector<std::size_t>{0, 1, 2}));
}

TEST(IndexTest, TruncatedIndexIsRejected) {
  auto bytes = encode_index(sample());
  ASSERT_TRUE(bytes);
  auto idx = decode_index(bytes->substr(0, bytes->size() / 2));
  ASSERT_FALSE(idx);
  EXPECT_EQ(idx.error().code, errc::corruption);
  EXPECT_NE(idx.error().message.find("truncated"), std::string::npos) << idx.error().message;
}

TEST(IndexTest, InconsistentIndexesAreRejected) {
  auto check_bad = [](ModelIndex idx, const char* what) {
    auto bytes = encode_index(idx);
    ASSERT_TRUE(bytes);
    EXPECT_FALSE(decode_index(*bytes)) << what;
  };
  auto idx = sample();
  idx.size = 151;
  check_bad(idx, "size");
  idx = sample();
  idx.segments[1].chunk_count = 2;
  check_bad(idx, "segments");
  idx = sample();
  idx.chunks[0].hash = "../../etc/passwd";
  check_bad(idx, "hash");
  idx = sample();
  idx.version = "../x";
  check_bad(idx, "version");
  idx = sample();
  idx.deltas[0].entries[0].segment = 9;
  check_bad(idx, "delta");
}

TEST(IndexTest, LabelsAreFileNameSafe) {
  EXPECT_TRUE(check_label("ppocr-det_v4.1", "name"));
  EXPECT_FALSE(check_label("", "name"));
  EXPECT_FALSE(check_label(".hidden", "name"));
  EXPECT_FALSE(check_label("a/b", "name"));
  EXPECT_FALSE(check_label(std::string(129, 'a'), "name"));
}

TEST(IndexTest, NoTwoNameVersionPairsShareAnIndexFile) {
  EXPECT_EQ(index_file_name("net", "1"), "net-1.cidx");  // URLs of names without '-' stay
  EXPECT_EQ(index_file_name("a-b", "c"), "a-b~c.cidx");
  EXPECT_EQ(index_file_name("a", "b-c"), "a-b-c.cidx");
  EXPECT_EQ(legacy_index_file_name("a-b", "c"), "a-b-c.cidx");
  // Every split of a few dashed and dotted texts into (name, version).
  std::set<std::string> files;
  std::size_t pairs = 0;
  for (const std::string text : {"a-b-c-d", "a--b", "-a-b", "a-.b-c", "a-b.c-d-"}) {
    for (std::size_t cut = 1; cut + 1 < text.size(); ++cut) {
      const auto name = text.substr(0, cut), version = text.substr(cut + 1);
      if (text[cut] != '-' || !check_label(name, "name") || !check_label(version, "version")) {
        continue;
      }
      ++pairs;
      files.insert(index_file_name(name, version));
    }
  }
  EXPECT_GT(pairs, 8u);
  EXPECT_EQ(files.size(), pairs);
}

}  // namespace
}  // namespace cairn::modelpkg
