#include "modelpkg/index.hpp"

#include <set>

#include <gtest/gtest.h>

#include "core/crypto.hpp"
#include "modelpkg/detail/zstd.hpp"

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

TEST(IndexTest, CodedDeltaKindsRoundTripBesideTheFormatOneEntries) {
  auto idx = sample();
  idx.deltas[0].entries.push_back({0, 30, DeltaKind::prefix});
  idx.deltas[0].entries.push_back({1, 10, DeltaKind::masked_planes});
  auto bytes = encode_index(idx);
  ASSERT_TRUE(bytes);
  auto back = decode_index(*bytes);
  ASSERT_TRUE(back) << back.error().to_string();
  const auto& entries = back->deltas.at(0).entries;
  ASSERT_EQ(entries.size(), 3u);
  EXPECT_EQ(entries[0].kind, DeltaKind::xor_planes);
  EXPECT_EQ(entries[1].kind, DeltaKind::prefix);
  EXPECT_EQ(entries[1].size, 30u);
  EXPECT_EQ(entries[2].kind, DeltaKind::masked_planes);
}

TEST(IndexTest, ACodingOfALaterReleaseIsSkippedNotRefused) {
  auto idx = sample();
  idx.deltas[0].entries.push_back({0, 30, DeltaKind::floats});
  auto bytes = encode_index(idx);
  ASSERT_TRUE(bytes);
  auto back = decode_index(*bytes);
  ASSERT_TRUE(back) << back.error().to_string();
  ASSERT_EQ(back->deltas.at(0).entries.size(), 2u);
  EXPECT_EQ(back->deltas.at(0).entries[1].kind, DeltaKind::floats);
  // The same index with a kind this release does not know: read, without that delta.
  auto json = detail::zstd_decompress(*bytes, 1 << 20);
  ASSERT_TRUE(json);
  const auto at = json->find("\"floats\"");
  ASSERT_NE(at, std::string::npos);
  json->replace(at, 8, "\"future\"");
  auto future = detail::zstd_compress(*json, 3);
  ASSERT_TRUE(future);
  auto read = decode_index(*future);
  ASSERT_TRUE(read) << read.error().to_string();
  ASSERT_EQ(read->deltas.at(0).entries.size(), 1u);
  EXPECT_EQ(read->deltas.at(0).entries[0].kind, DeltaKind::xor_planes);
}

TEST(IndexTest, PrefixSegmentsAreTheGapsAndTheSameKey) {
  auto idx = sample();
  idx.segments = {{"#0", 1, 1}, {"w", 1, 4}};
  EXPECT_EQ(idx.prefix_segments("w"), (std::vector<std::size_t>{0, 1}));
  EXPECT_EQ(idx.prefix_segments("other"), (std::vector<std::size_t>{0}));
}

ModelIndex larger_sample(unsigned changed) {
  ModelIndex idx = sample();
  idx.chunks.clear();
  idx.segments.clear();
  idx.size = 0;
  for (unsigned i = 0; i < 200; ++i) {
    idx.chunks.push_back(
        {crypto::sha256_hex("chunk" + std::to_string(i == 7 ? changed : i)), 1000, true, 900});
    idx.size += 1000;
    idx.segments.push_back({"tensor." + std::to_string(i), 1, 4});
  }
  return idx;
}

TEST(IndexTest, IndexDeltaRebuildsTheExactBytes) {
  auto old_cidx = encode_index(larger_sample(7));
  auto new_index = larger_sample(1000);
  new_index.version = "1.3";
  auto new_cidx = encode_index(new_index);
  ASSERT_TRUE(old_cidx && new_cidx);
  auto delta = make_index_delta(*old_cidx, *new_cidx);
  ASSERT_TRUE(delta) << delta.error().to_string();
  EXPECT_LT(delta->size(), new_cidx->size() / 10) << "most of the index repeats";
  auto made = apply_index_delta(*old_cidx, *delta);
  ASSERT_TRUE(made) << made.error().to_string();
  EXPECT_EQ(*made, *new_cidx);
  EXPECT_EQ(index_delta_path("m-2.cidx", crypto::sha256_hex(*old_cidx)),
            "deltas/m-2.cidx/" + crypto::sha256_hex(*old_cidx).substr(0, 16));
}

TEST(IndexTest, DamagedIndexDeltaOrWrongBaseIsCorruption) {
  auto old_cidx = encode_index(larger_sample(7));
  auto new_cidx = encode_index(larger_sample(1000));
  auto other_cidx = encode_index(larger_sample(2000));
  ASSERT_TRUE(old_cidx && new_cidx && other_cidx);
  auto delta = make_index_delta(*old_cidx, *new_cidx);
  ASSERT_TRUE(delta);
  auto expect_corrupt = [&](const std::string& base, const std::string& d, const char* what) {
    auto r = apply_index_delta(base, d);
    ASSERT_FALSE(r) << what;
    EXPECT_EQ(r.error().code, errc::corruption) << what;
  };
  expect_corrupt(*old_cidx, delta->substr(0, delta->size() - 5), "truncated");
  auto flipped = *delta;
  flipped[10] = static_cast<char>(flipped[10] ^ 1);  // the target hash
  expect_corrupt(*old_cidx, flipped, "target hash");
  auto body = *delta;
  body[body.size() - 3] = static_cast<char>(body[body.size() - 3] ^ 0x40);
  expect_corrupt(*old_cidx, body, "body");
  // A base that differs only where the delta does not look still makes the right index (the
  // hash says so); one that differs where it looks does not.
  auto lucky = apply_index_delta(*other_cidx, *delta);
  ASSERT_TRUE(lucky);
  EXPECT_EQ(*lucky, *new_cidx);
  auto small_cidx = encode_index(sample());
  ASSERT_TRUE(small_cidx);
  expect_corrupt(*small_cidx, *delta, "another base");
  expect_corrupt(*old_cidx, "CIXD", "header only");
  expect_corrupt("not an index", *delta, "base not an index");
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
