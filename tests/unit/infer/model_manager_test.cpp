#include "infer/model_manager.hpp"

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <optional>
#include <thread>

#include <gtest/gtest.h>

#include "generated_models.hpp"
#include <unistd.h>

namespace cairn::infer {
namespace {

namespace fs = std::filesystem;

class ModelManagerTest : public testing::GeneratedModels {
 protected:
  static ModelSpec affine(int version) {
    ModelSpec s;
    s.name = "affine";
    s.version = std::to_string(version);
    s.path = model("affine_v" + std::to_string(version) + ".onnx");
    return s;
  }

  // Submits one row of 1.0 to the affine model with `options` and waits for the answer.
  static Result<InferResult> submit_one_and_wait(ModelManager& m, const SubmitOptions& options) {
    std::promise<Result<InferResult>> done;
    auto status = m.submit(
        "affine", "", one_row(1.0f),
        [&done](Result<InferResult> r) { done.set_value(std::move(r)); }, options);
    if (!status) return status.error();
    return done.get_future().get();
  }

  // A decoder giving one row of x.
  static RequestDecoder one_row(float x) {
    return [x](const std::vector<TensorInfo>&, const InputMapping*) -> Result<InferRequest> {
      return InferRequest{{row(x)}};
    };
  }

  static Tensor row(float v) {
    Tensor t;
    t.name = "x";
    t.dtype = DataType::kFp32;
    t.shape = {1, 4};
    const float values[4] = {v, v, v, v};
    t.data.assign(reinterpret_cast<const char*>(values), sizeof(values));
    return t;
  }

  // Scores one row synchronously; returns y[0] and the version that answered.
  static Result<std::pair<float, std::string>> score(ModelManager& m, float x,
                                                     const std::string& version = "") {
    std::promise<Result<InferResult>> done;
    auto status = m.submit(
        "affine", version,
        [x](const std::vector<TensorInfo>&, const InputMapping*) -> Result<InferRequest> {
          return InferRequest{{row(x)}};
        },
        [&done](Result<InferResult> r) { done.set_value(std::move(r)); });
    if (!status) return status.error();
    auto r = done.get_future().get();
    if (!r) return r.error();
    float y;
    std::memcpy(&y, r->outputs.at(0).data.data(), sizeof(float));
    return std::make_pair(y, r->version);
  }
};

TEST_F(ModelManagerTest, LoadsAndScoresWithKnownOutput) {
  ModelManager m;
  ASSERT_TRUE(m.load(affine(2), false));
  auto r = score(m, 3.0f);
  ASSERT_TRUE(r) << r.error().to_string();
  EXPECT_EQ(r->first, 3.0f * 2 + 20);
  EXPECT_EQ(r->second, "2");
  auto info = m.find("affine");
  ASSERT_TRUE(info);
  ASSERT_EQ(info->versions.size(), 1u);
  EXPECT_EQ(info->versions[0].inputs.at(0).shape, (std::vector<std::int64_t>{-1, 4}));
  EXPECT_EQ(m.default_model(), "affine");
}

TEST_F(ModelManagerTest, VersionsSideBySide) {
  ModelManager m;
  ASSERT_TRUE(m.load(affine(1), true));
  ASSERT_TRUE(m.load(affine(3), true));
  EXPECT_EQ(score(m, 1.0f, "1")->first, 11.0f);
  EXPECT_EQ(score(m, 1.0f, "3")->first, 33.0f);
  EXPECT_EQ(score(m, 1.0f)->first, 33.0f);  // the last loaded serves
  auto missing = score(m, 1.0f, "7");
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code, errc::not_found);
}

TEST_F(ModelManagerTest, FailedLoadKeepsServingVersion) {
  ModelManager m;
  ASSERT_TRUE(m.load(affine(1), false));
  const auto junk = dir_ / "junk.onnx";
  std::ofstream(junk) << "\x08\x07 not really a model";
  ModelSpec bad = affine(2);
  bad.path = junk.string();
  auto s = m.load(bad, false);
  ASSERT_FALSE(s);
  EXPECT_EQ(score(m, 1.0f)->first, 11.0f);
  auto reported = m.reported();
  EXPECT_EQ(reported["affine"]["status"], "failed");
  EXPECT_EQ(reported["affine"]["version"], "1");
  EXPECT_NE(reported["affine"]["error"].get<std::string>().find("onnxruntime"), std::string::npos);
  // A wrong checksum is refused too.
  ModelSpec wrong_sum = affine(2);
  wrong_sum.sha256 = std::string(64, '0');
  ASSERT_FALSE(m.load(wrong_sum, false));
  EXPECT_EQ(score(m, 1.0f)->first, 11.0f);
}

TEST_F(ModelManagerTest, DesiredPropertiesDriveLoadsAndReports) {
  ModelManager m;
  std::vector<nlohmann::json> patches;
  std::mutex mu;
  m.set_reported_callback([&](const nlohmann::json& p) {
    std::lock_guard lock(mu);
    patches.push_back(p);
  });
  ASSERT_TRUE(m.apply_desired({{"affine", {{"version", "1"}, {"path", model("affine_v1.onnx")}}},
                               {"broken", {{"version", "1"}}}}));
  m.wait_idle();
  auto reported = m.reported();
  EXPECT_EQ(reported["affine"]["status"], "ready");
  EXPECT_EQ(reported["affine"]["inputs"][0]["datatype"], "FP32");
  EXPECT_EQ(reported["broken"]["status"], "failed");
  EXPECT_NE(reported["broken"]["error"].get<std::string>().find("path"), std::string::npos);
  ASSERT_TRUE(m.apply_desired({{"affine", {{"version", "2"}, {"path", model("affine_v2.onnx")}}}}));
  m.wait_idle();
  EXPECT_EQ(score(m, 1.0f)->first, 22.0f);
  reported = m.reported();
  EXPECT_FALSE(reported.contains("broken"));
  EXPECT_EQ(reported["affine"]["version"], "2");
  std::lock_guard lock(mu);
  EXPECT_FALSE(patches.empty());
}

TEST_F(ModelManagerTest, QueueLimitRefusesInsteadOfGrowing) {
  ModelManager m;
  ModelSpec s = affine(1);
  s.limits.max_queue = 2;
  ASSERT_TRUE(m.load(s, false));
  std::promise<void> release;
  auto gate = release.get_future().share();
  std::atomic<int> answered{0};
  int refused = 0;
  for (int i = 0; i < 20; ++i) {
    auto st = m.submit(
        "affine", "",
        [gate](const std::vector<TensorInfo>&, const InputMapping*) -> Result<InferRequest> {
          gate.wait();  // holds the worker so the queue fills
          return InferRequest{{row(1.0f)}};
        },
        [&answered](Result<InferResult>) { ++answered; });
    if (!st) {
      EXPECT_EQ(st.error().code, errc::limit_exceeded);
      ++refused;
    }
  }
  EXPECT_GE(refused, 20 - 3);  // at most one running plus two queued
  release.set_value();
  while (answered.load() < 20 - refused) std::this_thread::yield();
}

TEST_F(ModelManagerTest, QueuedBytesLimitRefusesUntilJobsAreGone) {
  ManagerOptions options;
  options.max_queue_bytes = 1000;
  ModelManager m(options);
  ASSERT_TRUE(m.load(affine(1), false));
  std::promise<void> release;
  auto gate = release.get_future().share();
  std::atomic<int> answered{0};
  auto submit = [&](std::size_t bytes, bool hold) {
    SubmitOptions o;
    o.queued_bytes = bytes;
    return m.submit(
        "affine", "",
        [gate, hold](const std::vector<TensorInfo>&, const InputMapping*) -> Result<InferRequest> {
          if (hold) gate.wait();  // holds the worker: the jobs stay alive, their bytes counted
          return InferRequest{{row(1.0f)}};
        },
        [&answered](Result<InferResult>) { ++answered; }, std::move(o));
  };
  auto queued_bytes = [&] {
    const std::string text = m.prometheus_text();
    const auto at = text.find("\ncairn_infer_queued_bytes ");
    return at == std::string::npos ? std::string("absent")
                                   : text.substr(at + 26, text.find('\n', at + 1) - at - 26);
  };
  ASSERT_TRUE(submit(400, true));  // runs on the worker, which it holds
  ASSERT_TRUE(submit(400, false));
  EXPECT_EQ(queued_bytes(), "800");
  auto refused = submit(400, false);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, errc::limit_exceeded);
  EXPECT_NE(refused.error().message.find("--max-queue-bytes"), std::string::npos);
  EXPECT_EQ(queued_bytes(), "800");  // the refused request gave its share back
  release.set_value();
  while (answered.load() < 2) std::this_thread::yield();
  // A job's share goes back when the job is destroyed, just after its answer.
  for (int i = 0; i < 1000 && queued_bytes() != "0"; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  EXPECT_EQ(queued_bytes(), "0");
  // Alone, a request larger than the whole budget still waits: otherwise it could never run.
  ASSERT_TRUE(submit(5000, false));
  while (answered.load() < 3) std::this_thread::yield();
}

TEST_F(ModelManagerTest, BatchingMergesRequestsAndSplitsResults) {
  ModelManager m;
  ModelSpec s = affine(2);
  s.batching.max_batch_size = 8;
  s.batching.max_queue_delay = std::chrono::milliseconds(200);
  ASSERT_TRUE(m.load(s, false));
  std::vector<std::future<Result<std::pair<float, std::string>>>> results;
  for (int i = 0; i < 8; ++i) {
    results.push_back(std::async(std::launch::async, [&m, i] { return score(m, float(i)); }));
  }
  for (int i = 0; i < 8; ++i) {
    auto r = results[i].get();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->first, float(i) * 2 + 20);
  }
  const auto metrics = m.prometheus_text();
  EXPECT_NE(metrics.find("cairn_infer_batch_size_count{model=\"affine\"}"), std::string::npos);
  // Fewer engine runs than requests: at least two were merged.
  const auto pos = metrics.find("cairn_infer_engine_runs_total{model=\"affine\"} ");
  ASSERT_NE(pos, std::string::npos);
  const int runs = std::atoi(metrics.c_str() + pos +
                             std::strlen("cairn_infer_engine_runs_total{model=\"affine\"} "));
  EXPECT_LT(runs, 8);  // warm-up runs are not counted
}

TEST_F(ModelManagerTest, WrongShapeAndDtypeAreInvalidArgument) {
  ModelManager m;
  ASSERT_TRUE(m.load(affine(1), false));
  for (auto make : {+[] {
                      Tensor t = row(1);
                      t.shape = {1, 3};
                      t.data.resize(12);
                      return t;
                    },
                    +[] {
                      Tensor t = row(1);
                      t.dtype = DataType::kInt32;
                      return t;
                    }}) {
    std::promise<Result<InferResult>> done;
    ASSERT_TRUE(m.submit(
        "affine", "",
        [make](const std::vector<TensorInfo>&, const InputMapping*) -> Result<InferRequest> {
          return InferRequest{{make()}};
        },
        [&done](Result<InferResult> r) { done.set_value(std::move(r)); }));
    auto r = done.get_future().get();
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, errc::invalid_argument) << r.error().message;
  }
  EXPECT_EQ(score(m, 0.0f)->first, 10.0f);
}

// The figure of `metric` for the affine model in the manager's Prometheus text, or -1.
long long metric(const ModelManager& m, const std::string& metric_name) {
  const std::string text = m.prometheus_text();
  const std::string key = metric_name + "{model=\"affine\"} ";
  const auto at = text.find(key);
  if (at == std::string::npos) return -1;
  return std::atoll(text.c_str() + at + key.size());
}

float first_output(const Result<InferResult>& r) {
  float y = 0;
  if (r) std::memcpy(&y, r->outputs.at(0).data.data(), sizeof(float));
  return y;
}

TEST_F(ModelManagerTest, IdleModelRunsInlineOnTheCallersThread) {
  ModelManager m;
  ASSERT_TRUE(m.load(affine(2), false));
  std::optional<Result<InferResult>> result;
  std::thread::id answered_on;
  bool queued = false;
  SubmitOptions options;
  options.may_run_inline = true;
  options.before_queue = [&queued] { queued = true; };
  ASSERT_TRUE(m.submit(
      "affine", "", one_row(3.0f),
      [&](Result<InferResult> r) {
        answered_on = std::this_thread::get_id();
        result = std::move(r);
      },
      options));
  // Answered before submit returned, on this thread, never queued.
  ASSERT_TRUE(result.has_value());
  ASSERT_TRUE(*result) << result->error().to_string();
  EXPECT_EQ(first_output(*result), 3.0f * 2 + 20);
  EXPECT_EQ(answered_on, std::this_thread::get_id());
  EXPECT_FALSE(queued);
  EXPECT_EQ(metric(m, "cairn_infer_inline_requests_total"), 1);
  EXPECT_EQ(metric(m, "cairn_infer_requests_total"), 1);
  EXPECT_EQ(metric(m, "cairn_infer_engine_runs_total"), 1);
  EXPECT_EQ(metric(m, "cairn_infer_request_duration_seconds_count"), 1);
  // Without the caller's consent the same request goes to a worker.
  auto r = score(m, 1.0f);
  ASSERT_TRUE(r);
  EXPECT_EQ(metric(m, "cairn_infer_inline_requests_total"), 1);
}

TEST_F(ModelManagerTest, BusyRunSlotSendsInlineCandidatesToTheQueue) {
  ModelManager m;
  ASSERT_TRUE(m.load(affine(2), false));  // concurrency 1: one run at a time
  std::promise<void> started;
  std::promise<void> release;
  auto gate = release.get_future().share();
  std::promise<Result<InferResult>> first;
  ASSERT_TRUE(m.submit(
      "affine", "",
      [&started, gate](const std::vector<TensorInfo>& sig,
                       const InputMapping* mapping) -> Result<InferRequest> {
        started.set_value();
        gate.wait();  // holds the model's only run slot
        return one_row(1.0f)(sig, mapping);
      },
      [&first](Result<InferResult> r) { first.set_value(std::move(r)); }));
  started.get_future().wait();
  std::promise<std::pair<Result<InferResult>, std::thread::id>> second;
  int queued = 0;
  SubmitOptions options;
  options.may_run_inline = true;
  options.before_queue = [&queued] { ++queued; };
  ASSERT_TRUE(m.submit(
      "affine", "", one_row(2.0f),
      [&second](Result<InferResult> r) {
        second.set_value({std::move(r), std::this_thread::get_id()});
      },
      options));
  EXPECT_EQ(queued, 1);  // the slot is taken: queued, and told so before a worker can run it
  release.set_value();
  EXPECT_EQ(first_output(first.get_future().get()), 1.0f * 2 + 20);
  auto [r, thread] = second.get_future().get();
  EXPECT_EQ(first_output(r), 2.0f * 2 + 20);
  EXPECT_NE(thread, std::this_thread::get_id());
  EXPECT_EQ(metric(m, "cairn_infer_inline_requests_total"), 0);
}

TEST_F(ModelManagerTest, InlineRunHoldsARunSlotAgainstTheWorkers) {
  ModelManager m;
  ASSERT_TRUE(m.load(affine(2), false));  // concurrency 1
  std::promise<void> started;
  std::promise<void> release;
  auto gate = release.get_future().share();
  std::atomic<bool> inline_running{false};
  std::thread caller([&] {
    SubmitOptions options;
    options.may_run_inline = true;
    (void)m.submit(
        "affine", "",
        [&](const std::vector<TensorInfo>& sig,
            const InputMapping* mapping) -> Result<InferRequest> {
          inline_running = true;
          started.set_value();
          gate.wait();
          inline_running = false;
          return one_row(1.0f)(sig, mapping);
        },
        [](Result<InferResult>) {}, options);
  });
  started.get_future().wait();
  std::promise<bool> overlapped;
  ASSERT_TRUE(m.submit(
      "affine", "",
      [&](const std::vector<TensorInfo>& sig, const InputMapping* mapping) -> Result<InferRequest> {
        overlapped.set_value(inline_running.load());
        return one_row(2.0f)(sig, mapping);
      },
      [](Result<InferResult>) {}));
  // Give a wrongly free worker the chance to take it; it must stay queued.
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(metric(m, "cairn_infer_queue_depth"), 1);
  release.set_value();
  caller.join();
  EXPECT_FALSE(overlapped.get_future().get());
  EXPECT_EQ(metric(m, "cairn_infer_inline_requests_total"), 1);
}

TEST_F(ModelManagerTest, ModelsSlowerThanTheInlineLimitRunOnTheirWorker) {
  ModelManager m;
  ASSERT_TRUE(m.load(affine(2), false));
  SubmitOptions options;
  options.may_run_inline = true;
  options.max_inline_run_time = std::chrono::nanoseconds(1);  // every run is longer
  EXPECT_EQ(first_output(submit_one_and_wait(m, options)), 22.0f);
  EXPECT_EQ(metric(m, "cairn_infer_inline_requests_total"), 0);
  options.max_inline_run_time = std::chrono::seconds(10);
  // The worker gives its run slot back after the answer's callback, so a request sent from
  // that callback's side may still find the slot taken and be queued: submit until one runs
  // inline (the first, unless the worker had not let go yet).
  for (int attempt = 0; attempt < 100 && metric(m, "cairn_infer_inline_requests_total") == 0;
       ++attempt) {
    EXPECT_EQ(first_output(submit_one_and_wait(m, options)), 22.0f);
  }
  EXPECT_EQ(metric(m, "cairn_infer_inline_requests_total"), 1);
}

TEST_F(ModelManagerTest, BatchingThatWaitsForCompanyNeverRunsInline) {
  ModelManager m;
  ModelSpec s = affine(2);
  s.batching.max_batch_size = 4;
  s.batching.max_queue_delay = std::chrono::microseconds(100);
  ASSERT_TRUE(m.load(s, false));
  SubmitOptions options;
  options.may_run_inline = true;
  EXPECT_EQ(first_output(submit_one_and_wait(m, options)), 22.0f);
  EXPECT_EQ(metric(m, "cairn_infer_inline_requests_total"), 0);
}

}  // namespace
}  // namespace cairn::infer
