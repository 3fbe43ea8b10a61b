// Module mode without a hub: twin entries, what a URL serves, and the ModuleService between a
// recording link and a real model manager with real ONNX models.
#include "infer/module_service.hpp"

#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>

#include <gtest/gtest.h>

#include "generated_models.hpp"
#include "infer/model_delivery.hpp"
#include "modelpkg/index.hpp"
#include <unistd.h>

namespace cairn::infer {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::string read_all(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// ---------------------------------------------------------------------------------------------
// Twin entries

TEST(ModelSpecParse, UrlAndPathAreExclusiveAndUrlsAreHttp) {
  auto spec = parse_model_spec("m", {{"version", "2"}, {"url", "http://127.0.0.1:1/m-2.cidx"}});
  ASSERT_TRUE(spec) << spec.error().message;
  EXPECT_EQ(spec->url, "http://127.0.0.1:1/m-2.cidx");
  EXPECT_TRUE(spec->path.empty());

  auto both = parse_model_spec("m", {{"version", "2"}, {"url", "https://h/x"}, {"path", "/x"}});
  ASSERT_FALSE(both);
  EXPECT_NE(both.error().message.find("not both"), std::string::npos);

  auto ftp = parse_model_spec("m", {{"version", "2"}, {"url", "ftp://h/x"}});
  ASSERT_FALSE(ftp);
  EXPECT_NE(ftp.error().message.find("http://"), std::string::npos);

  auto none = parse_model_spec("m", {{"version", "2"}});
  ASSERT_FALSE(none);
  auto wrong_type = parse_model_spec("m", {{"version", "2"}, {"url", 5}});
  ASSERT_FALSE(wrong_type);
  EXPECT_NE(wrong_type.error().message.find("wrong type"), std::string::npos);
}

TEST(ModelSpecParse, FullEntry) {
  auto spec = parse_model_spec(
      "anomaly", json::parse(R"({"version": 3, "path": "/m.onnx", "sha256": "AB", "default": true,
        "engine": {"intraOpThreads": 2}, "batching": {"maxBatchSize": 8, "maxQueueDelayUs": 100},
        "limits": {"maxQueue": 5, "concurrency": 2}})"));
  ASSERT_TRUE(spec) << spec.error().message;
  EXPECT_EQ(spec->version, "3");
  EXPECT_EQ(spec->sha256, "AB");
  EXPECT_TRUE(spec->is_default);
  EXPECT_EQ(spec->engine.intra_op_threads, 2);
  EXPECT_EQ(spec->batching.max_batch_size, 8u);
  EXPECT_EQ(spec->limits.max_queue, 5u);
  EXPECT_EQ(spec->limits.concurrency, 2u);
  EXPECT_FALSE(parse_model_spec("a/b", {{"version", "1"}, {"path", "/m"}}));
  EXPECT_FALSE(parse_model_spec("a", {{"version", "1/2"}, {"path", "/m"}}));
  EXPECT_FALSE(parse_model_spec("a", {{"version", "1"}, {"path", "/m"}, {"limits", 3}}));
}

// ---------------------------------------------------------------------------------------------
// Content detection

using ModelFiles = testing::GeneratedModels;

TEST_F(ModelFiles, UrlContentIsJudgedByBytes) {
  EXPECT_EQ(classify_url_content(read_all(model("affine_v1.onnx"))), UrlContent::kModelFile);

  modelpkg::ModelIndex index;
  index.name = "m";
  index.version = "1";
  index.format = "opaque";
  index.size = 4;
  index.sha256 = std::string(64, 'a');
  index.chunks.push_back({std::string(64, 'b'), 4, false, 4});
  index.segments.push_back({"#0", 1, 1});
  auto cidx = modelpkg::encode_index(index);
  ASSERT_TRUE(cidx) << cidx.error().message;
  EXPECT_EQ(classify_url_content(*cidx), UrlContent::kModelIndex);

  // A zstd frame that is not an index, a truncated index, HTML, nothing.
  EXPECT_EQ(classify_url_content(cidx->substr(0, cidx->size() / 2)), UrlContent::kUnknown);
  EXPECT_EQ(classify_url_content(std::string("\x28\xb5\x2f\xfd", 4) + "junk"),
            UrlContent::kUnknown);
  EXPECT_EQ(classify_url_content("<html><body>404</body></html>"), UrlContent::kUnknown);
  EXPECT_EQ(classify_url_content(""), UrlContent::kUnknown);
}

TEST_F(ModelFiles, UrlModelsFailClearlyWithoutDeliveryOrServer) {
  ModelManager models;
  ModelSpec spec;
  spec.name = "m";
  spec.version = "1";
  spec.url = "http://127.0.0.1:1/m-1.cidx";
  auto s = models.load(spec, false);
  ASSERT_FALSE(s);
  EXPECT_NE(s.error().message.find("no model delivery"), std::string::npos);

  DeliveryOptions options;
  options.data_dir = (dir_ / "data").string();
  options.timeout_secs = 5;
  ModelDelivery delivery(options);
  models.set_fetcher(
      [&](const ModelSpec& sp, const DeliveryProgress& p) { return delivery.fetch(sp, p); });
  s = models.load(spec, false);
  ASSERT_FALSE(s);
  auto reported = models.reported()["m"];
  EXPECT_EQ(reported["status"], "failed");
  EXPECT_NE(reported["error"].get<std::string>().find("127.0.0.1:1"), std::string::npos);
  EXPECT_EQ(reported["delivery"]["status"], "failed");
}

// ---------------------------------------------------------------------------------------------
// ModuleService

// Records what the service sends and reports.
struct RecordingLink {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::pair<std::string, ModuleMessage>> sent;
  std::vector<json> reports;

  ModuleLink link() {
    ModuleLink l;
    l.send = [this](const std::string& output, ModuleMessage m) {
      std::lock_guard lock(mu);
      sent.emplace_back(output, std::move(m));
      cv.notify_all();
    };
    l.report = [this](json patch) {
      std::lock_guard lock(mu);
      reports.push_back(std::move(patch));
      cv.notify_all();
    };
    return l;
  }

  template <typename Pred>
  bool wait(Pred pred) {
    std::unique_lock lock(mu);
    return cv.wait_for(lock, std::chrono::seconds(60), [&] { return pred(); });
  }

  // The reported document as a twin would hold it after every patch (RFC 7386 merge).
  json merged() {
    std::lock_guard lock(mu);
    json doc = json::object();
    for (const auto& r : reports) doc.merge_patch(r);
    return doc;
  }
};

class ModuleServiceTest : public ModelFiles {
 protected:
  json entry(int version) {
    return {{"version", std::to_string(version)},
            {"path", model("affine_v" + std::to_string(version) + ".onnx")}};
  }
};

TEST_F(ModuleServiceTest, DesiredPatchesDriveModelsAndReportsAreDebounced) {
  ModelManager models;
  RecordingLink rec;
  ModuleOptions options;
  options.report_debounce = std::chrono::milliseconds(300);
  ModuleService service(models, nullptr, rec.link(), options);

  service.on_desired({{"models", {{"affine", entry(1)}}}}, 1, true);
  models.wait_idle();
  ASSERT_TRUE(rec.wait([&] {
    for (const auto& r : rec.reports) {
      if (r.contains("models") && r["models"].contains("affine") &&
          r["models"]["affine"]["status"] == "ready")
        return true;
    }
    return false;
  }));
  auto doc = rec.merged();
  EXPECT_EQ(doc["lastDesiredVersion"], 1);
  EXPECT_EQ(doc["models"]["affine"]["version"], "1");
  EXPECT_EQ(doc["models"]["affine"]["inputs"][0]["name"], "x");
  EXPECT_EQ(doc["models"]["affine"]["outputs"][0]["name"], "y");
  // Several state changes (desired, loading, ready) went out in fewer patches than changes.
  {
    std::lock_guard lock(rec.mu);
    EXPECT_LE(rec.reports.size(), 3u);
  }

  // A patch with a broken version: reported failed, version 1 keeps serving.
  const std::string bad = (dir_ / "corrupt.onnx").string();
  std::ofstream(bad) << "this is not a model";
  service.on_desired({{"models", {{"affine", {{"version", "2"}, {"path", bad}}}}}}, 2, false);
  models.wait_idle();
  ASSERT_TRUE(rec.wait([&] {
    json d = json::object();
    for (const auto& r : rec.reports) d.merge_patch(r);
    return d["models"]["affine"]["status"] == "failed";
  }));
  doc = rec.merged();
  EXPECT_EQ(doc["models"]["affine"]["version"], "1");
  EXPECT_NE(doc["models"]["affine"]["error"].get<std::string>().find("version 2"),
            std::string::npos);

  // Removing the model from the map unloads it and reports null.
  service.on_desired({{"models", {{"affine", nullptr}}}}, 3, false);
  ASSERT_TRUE(rec.wait([&] {
    json d = json::object();
    for (const auto& r : rec.reports) d.merge_patch(r);
    return d.contains("models") && !d["models"].contains("affine");
  }));
  EXPECT_FALSE(models.find("affine"));
}

TEST_F(ModuleServiceTest, MessagesAreScoredWithTheRestCodecAndCorrelated) {
  ModelManager models;
  RecordingLink rec;
  ModuleOptions options;
  ModuleService service(models, nullptr, rec.link(), options);
  service.on_desired({{"models", {{"affine", entry(2)}}}}, 1, true);
  models.wait_idle();

  ModuleMessage v2;
  v2.body = R"({"id": "r1", "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4],
               "data": [1, 2, 3, 4]}]})";
  v2.message_id = "m-1";
  v2.correlation_id = "c-1";
  service.on_message(v2);
  ModuleMessage score;
  score.body = R"({"data": [[1, 1, 1, 1]]})";
  score.message_id = "m-2";
  service.on_message(score);
  ModuleMessage bad;
  bad.body = "{not json";
  bad.message_id = "m-3";
  service.on_message(bad);
  ModuleMessage unknown;
  unknown.body = score.body;
  unknown.message_id = "m-4";
  unknown.app = {{"Model", "nope"}};
  service.on_message(unknown);

  ASSERT_TRUE(rec.wait([&] { return rec.sent.size() == 4; }));
  std::map<std::string, ModuleMessage> by_cid;
  for (auto& [output, m] : rec.sent) {
    EXPECT_EQ(output, "results");
    by_cid[m.correlation_id] = m;
  }
  ASSERT_EQ(by_cid.size(), 4u);
  auto prop = [](const ModuleMessage& m, const std::string& k) {
    for (const auto& [key, v] : m.app) {
      if (key == k) return v;
    }
    return std::string();
  };
  // affine v2: y = 2x + 20.
  auto r1 = json::parse(by_cid["c-1"].body);
  EXPECT_EQ(r1["id"], "r1");
  EXPECT_EQ(r1["model_version"], "2");
  EXPECT_EQ(r1["outputs"][0]["data"], json({22.0, 24.0, 26.0, 28.0}));
  EXPECT_EQ(prop(by_cid["c-1"], "status"), "200");
  auto r2 = json::parse(by_cid["m-2"].body);
  EXPECT_EQ(r2["y"], json::parse("[[22.0, 22.0, 22.0, 22.0]]"));
  EXPECT_EQ(prop(by_cid["m-2"], "modelVersion"), "2");
  EXPECT_EQ(prop(by_cid["m-3"], "status"), "400");
  EXPECT_TRUE(json::parse(by_cid["m-3"].body).contains("error"));
  EXPECT_EQ(prop(by_cid["m-4"], "status"), "404");
  EXPECT_EQ(service.pending_messages(), 0u);
}

TEST_F(ModuleServiceTest, RawRecordsAreMappedByTheModelsInputMapping) {
  ModelManager models;
  RecordingLink rec;
  ModuleService service(models, nullptr, rec.link(), ModuleOptions{});
  const json fields = {"machine.temperature", "machine.pressure", "ambient.temperature",
                       "ambient.humidity"};
  json e = entry(1);
  e["inputMapping"] = {{"x", fields}};
  service.on_desired({{"models", {{"affine", e}}}}, 1, true);
  models.wait_idle();
  ASSERT_TRUE(rec.wait([&] {
    json d = json::object();
    for (const auto& r : rec.reports) d.merge_patch(r);
    return d["models"]["affine"]["status"] == "ready";
  }));
  EXPECT_EQ(rec.merged()["models"]["affine"]["inputMapping"],
            json({{"x", {{"fields", fields}, {"datatype", "FP32"}, {"shape", {1, 4}}}}}));

  auto send = [&](const std::string& id, const std::string& body,
                  std::vector<std::pair<std::string, std::string>> app = {}) {
    ModuleMessage m;
    m.body = body;
    m.message_id = id;
    m.app = std::move(app);
    service.on_message(m);
  };
  auto answer = [&](const std::string& cid) {
    ModuleMessage found;
    EXPECT_TRUE(rec.wait([&] {
      for (const auto& [_, m] : rec.sent) {
        if (m.correlation_id == cid) {
          found = m;
          return true;
        }
      }
      return false;
    })) << cid;
    return found;
  };
  auto prop = [](const ModuleMessage& m, const std::string& k) {
    std::vector<std::string> values;
    for (const auto& [key, v] : m.app) {
      if (key == k) values.push_back(v);
    }
    return values;
  };
  // cairn-sensor's reading, with its own properties (one spoofing a result property).
  send("s-1", R"({"machine":{"temperature":21.5,"pressure":1.25},
                  "ambient":{"temperature":20.75,"humidity":25},
                  "timeCreated":"2026-12-02T22:00:00.000Z"})",
       {{"anomaly", "false"}, {"Status", "spoofed"}});
  auto scored = answer("s-1");
  // affine v1: y = x + 10.
  EXPECT_EQ(json::parse(scored.body), json::parse(R"({"y": [[31.5, 11.25, 30.75, 35.0]]})"));
  EXPECT_EQ(prop(scored, "anomaly"), std::vector<std::string>{"false"});
  EXPECT_EQ(prop(scored, "status"), std::vector<std::string>{"200"});
  EXPECT_TRUE(prop(scored, "Status").empty());
  EXPECT_EQ(prop(scored, "modelVersion"), std::vector<std::string>{"1"});

  // A reading the mapping cannot take is refused with the field; JSON tensors still work.
  send("s-2", R"({"machine":{"temperature":21.5},"ambient":{"temperature":20,"humidity":25}})");
  auto refused = answer("s-2");
  EXPECT_EQ(prop(refused, "status"), std::vector<std::string>{"400"});
  EXPECT_NE(json::parse(refused.body)["error"].get<std::string>().find("machine.pressure"),
            std::string::npos);
  send("s-3", R"({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4],
                  "data": [1, 2, 3, 4]}]})");
  EXPECT_EQ(json::parse(answer("s-3").body)["outputs"][0]["data"], json({11.0, 12.0, 13.0, 14.0}));

  // A version whose mapping does not fit its model fails to load; a malformed mapping is the
  // model's error too. Version 1 keeps serving records either way.
  json v2 = entry(2);
  v2["inputMapping"] = {{"reading", fields}};
  service.on_desired({{"models", {{"affine", v2}}}}, 2, false);
  models.wait_idle();
  ASSERT_TRUE(rec.wait([&] {
    json d = json::object();
    for (const auto& r : rec.reports) d.merge_patch(r);
    return d["models"]["affine"]["status"] == "failed";
  })) << rec.merged();
  auto doc = rec.merged()["models"]["affine"];
  EXPECT_EQ(doc["version"], "1");
  // The patch merged into the entry (RFC 7386): "x" is still mapped, "reading" is extra.
  EXPECT_NE(doc["error"].get<std::string>().find(
                "version 2: inputMapping.reading: the model has no input 'reading' (it has x)"),
            std::string::npos)
      << doc;
  service.on_desired({{"models", {{"affine", {{"inputMapping", {{"x", {"a..b"}}}}}}}}}, 3, false);
  models.wait_idle();
  ASSERT_TRUE(rec.wait([&] {
    json d = json::object();
    for (const auto& r : rec.reports) d.merge_patch(r);
    const auto& error = d["models"]["affine"]["error"];
    return error.is_string() && error.get<std::string>().find("empty segment") != std::string::npos;
  }));
  send("s-4", R"({"machine":{"temperature":1,"pressure":2},
                  "ambient":{"temperature":3,"humidity":4}})");
  auto still = answer("s-4");
  EXPECT_EQ(json::parse(still.body), json::parse(R"({"y": [[11.0, 12.0, 13.0, 14.0]]})"));
  EXPECT_EQ(prop(still, "modelVersion"), std::vector<std::string>{"1"});
}

TEST_F(ModuleServiceTest, PendingLimitAnswersWithAnErrorInsteadOfQueueing) {
  ModelManager models;
  RecordingLink rec;
  ModuleOptions options;
  options.max_pending_messages = 2;
  ModuleService service(models, nullptr, rec.link(), options);
  // The slow model keeps requests pending long enough to pass the limit: 32 rows make each run
  // take tens of milliseconds, against well under one to hand over the next message, so the
  // first two are still pending when the others arrive even on a loaded machine.
  service.on_desired({{"models", {{"slow", {{"version", "1"}, {"path", model("slow.onnx")}}}}}}, 1,
                     true);
  models.wait_idle();
  std::vector<float> rows(32 * 256, 1.0f);
  json req{
      {"inputs", {{{"name", "x"}, {"datatype", "FP32"}, {"shape", {32, 256}}, {"data", rows}}}}};
  for (int i = 0; i < 6; ++i) {
    ModuleMessage m;
    m.body = req.dump();
    m.message_id = "m" + std::to_string(i);
    service.on_message(m);
  }
  ASSERT_TRUE(rec.wait([&] { return rec.sent.size() == 6; }));
  int refused = 0;
  int ok = 0;
  for (const auto& [_, m] : rec.sent) {
    for (const auto& [k, v] : m.app) {
      if (k == "status" && v == "429") ++refused;
      if (k == "status" && v == "200") ++ok;
    }
  }
  // At most two were ever pending: the others were refused at once, not queued.
  EXPECT_GE(refused, 1);
  EXPECT_GE(ok, 2);  // the first two were accepted and scored
  EXPECT_EQ(refused + ok, 6);
}

TEST_F(ModuleServiceTest, TwinPublicKeyFollowsPatchSemanticsAndCannotOverrideTheFlag) {
  ModelManager models;
  RecordingLink rec;
  DeliveryOptions delivery_options;
  delivery_options.data_dir = (dir_ / "key-data").string();
  ModelDelivery delivery(delivery_options);
  ModuleOptions options;
  options.twin_public_key_path = delivery_options.data_dir + "/twin-public-key.pem";
  ModuleService service(models, &delivery, rec.link(), options);

  const std::string pem =
      "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA\n-----END PUBLIC KEY-----\n";
  service.on_desired({{"modelDelivery", {{"publicKey", pem}}}}, 1, true);
  EXPECT_EQ(delivery.public_key(), options.twin_public_key_path);
  EXPECT_EQ(read_all(options.twin_public_key_path), pem);
  // A patch that does not name the key leaves it; one that sets it to null removes it.
  service.on_desired({{"modelDelivery", {{"other", 1}}}}, 2, false);
  service.on_desired({{"models", json::object()}}, 3, false);
  EXPECT_EQ(delivery.public_key(), options.twin_public_key_path);
  service.on_desired({{"modelDelivery", {{"publicKey", nullptr}}}}, 4, false);
  EXPECT_EQ(delivery.public_key(), "");
  // The whole desired section without it: none.
  service.on_desired({{"modelDelivery", {{"publicKey", pem}}}}, 5, false);
  service.on_desired({{"models", json::object()}}, 6, true);
  EXPECT_EQ(delivery.public_key(), "");

  // A key from the command line stays whatever the twin says.
  ModelDelivery fixed_delivery(delivery_options);
  fixed_delivery.set_public_key("/etc/cairn/models.pub");
  ModuleOptions fixed_options = options;
  fixed_options.public_key_fixed = true;
  ModelManager other_models;
  ModuleService fixed(other_models, &fixed_delivery, rec.link(), fixed_options);
  fixed.on_desired({{"modelDelivery", {{"publicKey", nullptr}}}}, 1, true);
  fixed.on_desired({{"models", json::object()}}, 2, true);
  EXPECT_EQ(fixed_delivery.public_key(), "/etc/cairn/models.pub");
}

TEST_F(ModuleServiceTest, NothingIsSentAfterClose) {
  auto models = std::make_unique<ModelManager>();
  RecordingLink rec;
  auto service = std::make_unique<ModuleService>(*models, nullptr, rec.link(), ModuleOptions{});
  service->on_desired({{"models", {{"affine", entry(1)}}}}, 1, true);
  models->wait_idle();
  service->close();
  std::size_t before = 0;
  {
    std::lock_guard lock(rec.mu);
    before = rec.sent.size();
  }
  ModuleMessage m;
  m.body = R"({"data": [[1, 1, 1, 1]]})";
  service->on_message(m);  // scored after close: the answer must not reach the link
  service.reset();
  models.reset();  // drains the workers: the request above has finished
  std::lock_guard lock(rec.mu);
  EXPECT_EQ(rec.sent.size(), before);
}

}  // namespace
}  // namespace cairn::infer
