// ModelStore on real files: pushes go through missing → put_chunk → commit as the REST API
// drives them, with models packed by modelpkg::pack_model as `cairn cloud model push` packs.
#include "cloud/model_store.hpp"

#include <filesystem>
#include <fstream>
#include <future>
#include <random>
#include <set>

#include <gtest/gtest.h>

#include "cloud_test_util.hpp"
#include "core/crypto.hpp"
#include "core/files.hpp"
#include "modelpkg/index.hpp"
#include "modelpkg/pack.hpp"

namespace cairn::cloud {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// A model version packed into a staging directory: its index bytes and chunk files.
struct PackedVersion {
  std::string name, version, dir, cidx;
  modelpkg::ModelIndex index;
};

std::string random_model(std::size_t size, unsigned seed) {
  std::mt19937 rng(seed);
  std::string out(size, '\0');
  for (auto& c : out) c = static_cast<char>(rng() & 0xff);
  return out;
}

PackedVersion pack_version(const std::string& staging, const std::string& name,
                           const std::string& version, const std::string& model) {
  PackedVersion p{name, version, staging + "/" + name + "." + version, {}, {}};
  fs::create_directories(p.dir);
  std::ofstream(p.dir + "/model.bin", std::ios::binary) << model;
  modelpkg::PackOptions o;
  o.name = name;
  o.version = version;
  o.out_dir = p.dir + "/pub";
  o.zstd_level = 1;
  o.delta_versions = 0;
  auto packed = modelpkg::pack_model(p.dir + "/model.bin", o);
  EXPECT_TRUE(packed) << packed.error().to_string();
  if (!packed) return p;
  p.index = packed->index;
  p.cidx = *read_file(packed->index_path, modelpkg::kMaxIndexBytes);
  return p;
}

// Runs one of the store's queued operations and waits for its answer.
Result<json> wait_for(const std::function<void(ModelStore::CommitDone)>& start) {
  std::promise<Result<json>> answer;
  auto future = answer.get_future();
  start([&answer](Result<json> r) { answer.set_value(std::move(r)); });
  return future.get();
}

class ModelStoreTest : public ::testing::Test {
 protected:
  void SetUp() override { open(); }

  void open(std::chrono::seconds grace = std::chrono::hours(1)) {
    store_.reset();
    ModelStoreOptions o;
    o.dir = store_dir_;
    o.orphan_grace = grace;
    o.zstd_level = 1;
    auto s = ModelStore::open(o);
    ASSERT_TRUE(s) << s.error().to_string();
    store_ = std::move(*s);
  }

  void upload_chunks(const PackedVersion& p) {
    for (const auto& c : p.index.chunks) {
      auto body = read_file(p.dir + "/pub/" + modelpkg::chunk_path(c.hash),
                            modelpkg::kMaxChunkBytes + 1024);
      ASSERT_TRUE(body);
      auto put = store_->put_chunk(c.hash, *body);
      ASSERT_TRUE(put) << put.error().to_string();
    }
  }

  Result<json> commit(const PackedVersion& p) {
    return wait_for([&](auto done) { store_->commit(p.name, p.version, p.cidx, done); });
  }

  Result<json> push(const PackedVersion& p) {
    auto missing = store_->missing(p.name, p.version, p.cidx);
    if (!missing) return std::move(missing).error();
    upload_chunks(p);
    return commit(p);
  }

  Result<json> remove(const std::string& name, const std::string& version) {
    return wait_for([&](auto done) { store_->remove(name, version, done); });
  }

  Result<json> sign(const std::string& name, const std::string& version,
                    const std::string& if_match = {}) {
    return wait_for(
        [&](auto done) { store_->put_signature(name, version, signature_, if_match, done); });
  }

  PackedVersion make_version(const std::string& name, const std::string& label, unsigned seed) {
    return pack_version(dir_.file("staging/" + std::to_string(seed)), name, label,
                        random_model(200 * 1024, seed));
  }

  std::string stored(const std::string& file) const { return store_dir_ + "/" + file; }

  testing::TempDir dir_;
  std::string store_dir_ = dir_.file("models");
  std::unique_ptr<ModelStore> store_;
  const std::string signature_ = crypto::base64_encode(std::string(64, 's'));
};

TEST_F(ModelStoreTest, ASignatureQueuedBehindARemovalFindsNoIndexAndLeavesNoFile) {
  auto v1 = make_version("net", "1", 1);
  ASSERT_TRUE(push(v1));
  // Hold the store's thread inside a job's `done`, queue a removal and then a signature: the
  // signature must run after the removal, not beside it on the caller's thread.
  std::promise<void> release;
  std::promise<void> held;
  store_->commit(v1.name, v1.version, v1.cidx, [&](Result<json>) {
    held.set_value();
    release.get_future().wait();
  });
  held.get_future().wait();
  std::promise<Result<json>> removed, signed_;
  store_->remove("net", "1", [&](Result<json> r) { removed.set_value(std::move(r)); });
  store_->put_signature("net", "1", signature_, "",
                        [&](Result<json> r) { signed_.set_value(std::move(r)); });
  release.set_value();
  auto r = removed.get_future().get();
  ASSERT_TRUE(r) << r.error().to_string();
  auto s = signed_.get_future().get();
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().code, errc::not_found) << s.error().to_string();
  EXPECT_FALSE(fs::exists(stored("net-1.cidx.sig")));
  // The same version pushed again is served unsigned.
  ASSERT_TRUE(push(v1));
  EXPECT_FALSE(store_->read("net-1.cidx.sig"));
}

TEST_F(ModelStoreTest, ARePushNeverInheritsASignatureLeftBeside) {
  auto v1 = make_version("net", "1", 1);
  ASSERT_TRUE(push(v1));
  ASSERT_TRUE(sign("net", "1"));
  ASSERT_TRUE(remove("net", "1"));
  // What a signature write racing a removal left behind.
  ASSERT_TRUE(write_file_atomic(stored("net-1.cidx.sig"), signature_ + "\n", false));
  ASSERT_TRUE(push(v1));
  EXPECT_FALSE(store_->read("net-1.cidx.sig"));
  EXPECT_FALSE(fs::exists(stored("net-1.cidx.sig")));

  // And at start: a signature whose index is gone is deleted.
  ASSERT_TRUE(remove("net", "1"));
  ASSERT_TRUE(write_file_atomic(stored("net-1.cidx.sig"), signature_ + "\n", false));
  open();
  EXPECT_FALSE(fs::exists(stored("net-1.cidx.sig")));
}

TEST_F(ModelStoreTest, ASignatureOfAnIndexNoLongerStoredIsRefused) {
  auto first = make_version("net", "1", 1);
  ASSERT_TRUE(push(first));
  const auto first_sha = crypto::sha256_hex(*store_->read("net-1.cidx"));
  ASSERT_TRUE(remove("net", "1"));
  auto second = make_version("net", "1", 2);
  ASSERT_TRUE(push(second));
  auto late = sign("net", "1", first_sha);
  ASSERT_FALSE(late);
  EXPECT_EQ(late.error().code, errc::cancelled) << late.error().to_string();
  EXPECT_FALSE(fs::exists(stored("net-1.cidx.sig")));
  auto current = sign("net", "1", "\"" + crypto::sha256_hex(*store_->read("net-1.cidx")) + "\"");
  ASSERT_TRUE(current) << current.error().to_string();
  EXPECT_TRUE(store_->read("net-1.cidx.sig"));
}

// A push slower than the orphan grace: its chunks have aged past it before the commit.
void age_chunks(const std::string& store_dir, const PackedVersion& p) {
  const auto old = fs::file_time_type::clock::now() - std::chrono::hours(2);
  for (const auto& c : p.index.chunks) {
    fs::last_write_time(store_dir + "/" + modelpkg::chunk_path(c.hash), old);
  }
}

TEST_F(ModelStoreTest, AChunkSentAgainOrReportedPresentSurvivesTheSweepUntilTheCommit) {
  auto v1 = make_version("net", "1", 1);
  ASSERT_TRUE(store_->missing(v1.name, v1.version, v1.cidx));
  upload_chunks(v1);
  age_chunks(store_dir_, v1);
  // The push (or a retry of it) sends its chunks again: the store has them, and they are
  // refreshed.
  upload_chunks(v1);
  open();  // the sweep runs at start
  auto committed = commit(v1);
  ASSERT_TRUE(committed) << committed.error().to_string();

  // `missing` answering "present" refreshes too.
  auto v2 = make_version("other", "1", 1);  // the same bytes: every chunk is already stored
  ASSERT_TRUE(remove("net", "1"));
  ASSERT_FALSE(fs::exists(stored("net-1.cidx")));
  age_chunks(store_dir_, v2);
  auto missing = store_->missing(v2.name, v2.version, v2.cidx);
  ASSERT_TRUE(missing);
  EXPECT_TRUE((*missing)["missing"].empty()) << missing->dump();
  open();
  committed = commit(v2);
  ASSERT_TRUE(committed) << committed.error().to_string();
}

TEST_F(ModelStoreTest, TheSweepKeepsReferencedChunksOfASymlinkedStoreAndChunksDirectory) {
  // HOME/models is a link to the real directory, whose chunks/ is a link to another disk.
  store_.reset();
  fs::remove_all(store_dir_);
  const std::string real = dir_.file("real"), disk = dir_.file("disk");
  fs::create_directories(real);
  fs::create_directories(disk + "/chunks");
  fs::create_directory_symlink(disk + "/chunks", real + "/chunks");
  fs::create_directory_symlink(real, store_dir_);
  open(std::chrono::seconds(0));
  auto kept = make_version("kept", "1", 1);
  auto gone = make_version("gone", "1", 2);
  ASSERT_TRUE(push(kept));
  ASSERT_TRUE(push(gone));
  const auto used = store_->used_bytes();
  open(std::chrono::seconds(0));
  EXPECT_EQ(store_->used_bytes(), used);  // chunks behind the link are counted

  auto r = remove("gone", "1");
  ASSERT_TRUE(r) << r.error().to_string();
  std::set<std::string> kept_hashes, gone_hashes;
  for (const auto& c : kept.index.chunks) kept_hashes.insert(c.hash);
  for (const auto& c : gone.index.chunks) {
    if (!kept_hashes.count(c.hash)) gone_hashes.insert(c.hash);
  }
  EXPECT_EQ((*r)["removedChunks"].get<std::size_t>(), gone_hashes.size());
  for (const auto& h : kept_hashes) {
    EXPECT_TRUE(fs::exists(disk + "/" + modelpkg::chunk_path(h))) << h;
  }
  for (const auto& h : gone_hashes) {
    EXPECT_FALSE(fs::exists(disk + "/" + modelpkg::chunk_path(h))) << h;
  }
  auto idx = modelpkg::decode_index(*store_->read("kept-1.cidx"));
  ASSERT_TRUE(idx);
  EXPECT_TRUE(modelpkg::verify_model(store_dir_, *idx));
}

TEST_F(ModelStoreTest, NamesThatJoinToTheSameTextAreDifferentFiles) {
  auto dashed_name = make_version("a-b", "c", 1);
  auto dashed_version = make_version("a", "b-c", 2);
  ASSERT_TRUE(push(dashed_name));
  auto second = push(dashed_version);
  ASSERT_TRUE(second) << second.error().to_string();
  EXPECT_EQ((*second)["index"], "models/a-b-c.cidx");
  EXPECT_TRUE(fs::exists(stored("a-b~c.cidx")));
  ASSERT_TRUE(sign("a-b", "c"));
  EXPECT_TRUE(fs::exists(stored("a-b~c.cidx.sig")));
  EXPECT_FALSE(fs::exists(stored("a-b-c.cidx.sig")));
  ASSERT_TRUE(remove("a", "b-c"));
  auto left = store_->list();
  ASSERT_TRUE(left);
  ASSERT_EQ((*left)["models"].size(), 1u) << left->dump();
  EXPECT_EQ((*left)["models"][0]["name"], "a-b");
  EXPECT_EQ((*left)["models"][0]["index"], "models/a-b~c.cidx");
  auto idx = modelpkg::decode_index(*store_->read("a-b~c.cidx"));
  ASSERT_TRUE(idx);
  EXPECT_EQ(idx->sha256, dashed_name.index.sha256);
}

TEST_F(ModelStoreTest, IndexesUnderTheirLegacyNameAreRenamedAndStillServedByIt) {
  auto v = make_version("ppocr-det", "4", 1);
  ASSERT_TRUE(push(v));
  ASSERT_TRUE(sign("ppocr-det", "4"));
  store_.reset();
  // The layout an earlier release wrote.
  fs::rename(stored("ppocr-det~4.cidx"), stored("ppocr-det-4.cidx"));
  fs::rename(stored("ppocr-det~4.cidx.sig"), stored("ppocr-det-4.cidx.sig"));
  open();
  EXPECT_TRUE(fs::exists(stored("ppocr-det~4.cidx")));
  EXPECT_TRUE(fs::exists(stored("ppocr-det~4.cidx.sig")));
  EXPECT_FALSE(fs::exists(stored("ppocr-det-4.cidx")));
  // Deployments made before still name the old URL.
  auto legacy = store_->read("ppocr-det-4.cidx");
  ASSERT_TRUE(legacy) << legacy.error().to_string();
  EXPECT_EQ(*legacy, *store_->read("ppocr-det~4.cidx"));
  EXPECT_TRUE(store_->read("ppocr-det-4.cidx.sig"));
  EXPECT_FALSE(store_->read("ppocr-det-5.cidx"));
  // A version whose own file has that name is served by it.
  auto plain = make_version("ppocr", "det-4", 2);
  ASSERT_TRUE(push(plain));
  EXPECT_NE(*store_->read("ppocr-det-4.cidx"), *store_->read("ppocr-det~4.cidx"));
  // Once two stored versions had one legacy name, it names neither.
  ASSERT_TRUE(push(make_version("m-a", "b-1", 3)));
  ASSERT_TRUE(push(make_version("m-a-b", "1", 4)));
  EXPECT_TRUE(store_->read("m-a~b-1.cidx"));
  EXPECT_FALSE(store_->read("m-a-b-1.cidx"));
}

TEST_F(ModelStoreTest, RemoveAndSignLeaveAnIndexOfAnotherModelAlone) {
  auto x = make_version("x", "1", 1);
  ASSERT_TRUE(push(x));
  // An index put in place by hand under another version's file name.
  fs::copy_file(stored("x-1.cidx"), stored("y-1.cidx"));
  auto r = remove("y", "1");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::already_exists) << r.error().to_string();
  EXPECT_TRUE(fs::exists(stored("y-1.cidx")));
  auto s = sign("y", "1");
  ASSERT_FALSE(s);
  EXPECT_FALSE(fs::exists(stored("y-1.cidx.sig")));
}

TEST_F(ModelStoreTest, OfTwoPushesOfOneVersionTheFirstCommitWins) {
  auto a = make_version("net", "1", 1);
  auto b = make_version("net", "1", 2);
  // Both are told what to upload before either commits.
  ASSERT_TRUE(store_->missing(a.name, a.version, a.cidx));
  ASSERT_TRUE(store_->missing(b.name, b.version, b.cidx));
  upload_chunks(a);
  upload_chunks(b);
  ASSERT_TRUE(commit(a));
  auto late = commit(b);
  ASSERT_FALSE(late);
  EXPECT_EQ(late.error().code, errc::already_exists);
  EXPECT_NE(late.error().message.find("immutable"), std::string::npos) << late.error().message;
  auto idx = modelpkg::decode_index(*store_->read("net-1.cidx"));
  ASSERT_TRUE(idx);
  EXPECT_EQ(idx->sha256, a.index.sha256);
  auto again = commit(a);
  ASSERT_TRUE(again);
  EXPECT_TRUE((*again)["unchanged"].get<bool>());
}

}  // namespace
}  // namespace cairn::cloud
