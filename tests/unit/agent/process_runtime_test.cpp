#include "agent/process_runtime.hpp"

#include <filesystem>
#include <fstream>
#include <thread>

#include <gtest/gtest.h>

#include "agent/restart_policy.hpp"
#include "agent/workload_api.hpp"
#include "core/crypto.hpp"
#include <signal.h>
#include <unistd.h>

namespace cairn::agent {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

class ProcessRuntimeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() /
            ("cairn-process-" + std::to_string(::getpid()) + "-" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(root_);
    runtime_ = std::make_unique<ProcessRuntime>(ProcessRuntimeOptions{root_.string(), 4096});
  }
  void TearDown() override {
    if (runtime_) {
      auto list = runtime_->list();
      if (list) {
        for (const auto& m : *list) (void)runtime_->remove(m.name);
      }
    }
    fs::remove_all(root_);
  }
  ModuleSpec spec(const std::string& name, const std::string& script) {
    ModuleSpec s;
    s.name = name;
    s.image = "/bin/sh";
    s.create_options = {{"Cmd", {"-c", script}}};
    s.env = {{"GREETING", "hi"}, {"PATH", "/usr/bin:/bin"}};
    s.config_hash = "h1";
    return s;
  }
  // Polls inspect() until `pred` holds (bounded).
  ModuleState wait_state(const std::string& name,
                         const std::function<bool(const ModuleState&)>& pred) {
    for (int i = 0; i < 1000; ++i) {
      auto s = runtime_->inspect(name);
      if (s && pred(*s)) return *s;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ADD_FAILURE() << "timed out waiting for " << name;
    return {};
  }
  fs::path root_;
  std::unique_ptr<ProcessRuntime> runtime_;
};

TEST_F(ProcessRuntimeTest, RunsWithEnvAndArgsAndRecordsTheExit) {
  ASSERT_TRUE(runtime_->prepare(spec("m", "")));
  auto created = runtime_->create(spec("m", "echo $GREETING from $(pwd); exit 7"));
  ASSERT_TRUE(created) << created.error().message;
  EXPECT_TRUE(runtime_->create(spec("m", "")).error().code == errc::already_exists);
  ASSERT_TRUE(runtime_->start("m"));
  auto s =
      wait_state("m", [](const ModuleState& st) { return st.status != RuntimeStatus::running; });
  EXPECT_EQ(s.status, RuntimeStatus::failed);
  EXPECT_EQ(s.exit_code, 7);
  EXPECT_EQ(s.config_hash, "h1");
  EXPECT_GT(s.exited_at_ms, 0);
  auto logs = runtime_->logs("m", {});
  ASSERT_TRUE(logs);
  EXPECT_EQ(*logs, "hi from " + (root_ / "m" / "work").string() + "\n");
}

TEST_F(ProcessRuntimeTest, StopEscalatesToSigkillAfterTheGracePeriod) {
  ASSERT_TRUE(
      runtime_->create(spec("stubborn", "trap '' TERM; echo ready; while :; do sleep 0.05; done")));
  ASSERT_TRUE(runtime_->start("stubborn"));
  wait_state("stubborn", [&](const ModuleState&) {
    auto l = runtime_->logs("stubborn", {});
    return l && l->find("ready") != std::string::npos;
  });
  auto running = runtime_->inspect("stubborn");
  ASSERT_EQ(running->status, RuntimeStatus::running);
  EXPECT_TRUE(runtime_->owns_process("stubborn", running->pid));
  EXPECT_FALSE(runtime_->owns_process("stubborn", ::getpid()));
  EXPECT_FALSE(runtime_->owns_process("other", running->pid));
  ASSERT_TRUE(runtime_->stop("stubborn", std::chrono::seconds(1)));
  auto s = runtime_->inspect("stubborn");
  EXPECT_EQ(s->status, RuntimeStatus::stopped);  // stopped on request, whatever the signal
  EXPECT_EQ(::kill(static_cast<pid_t>(running->pid), 0), -1);
}

TEST_F(ProcessRuntimeTest, ANewRuntimeAdoptsARunningModuleAndNeverStartsItTwice) {
  ASSERT_TRUE(runtime_->create(spec("long", "exec sleep 1000")));
  ASSERT_TRUE(runtime_->start("long"));
  auto first = runtime_->inspect("long");
  ASSERT_EQ(first->status, RuntimeStatus::running);
  // A second runtime over the same root, as a restarted cairnd would have.
  ProcessRuntime again(ProcessRuntimeOptions{root_.string(), 4096});
  auto list = again.list();
  ASSERT_TRUE(list);
  ASSERT_EQ(list->size(), 1u);
  EXPECT_EQ((*list)[0].status, RuntimeStatus::running);
  EXPECT_EQ((*list)[0].pid, first->pid);
  ASSERT_TRUE(again.start("long"));  // already running: nothing new
  EXPECT_EQ(again.inspect("long")->pid, first->pid);
  EXPECT_TRUE(again.owns_process("long", first->pid));
}

TEST_F(ProcessRuntimeTest, AReusedPidIsNotTakenForTheModule) {
  ASSERT_TRUE(runtime_->create(spec("gone", "exec sleep 1000")));
  ASSERT_TRUE(runtime_->start("gone"));
  // Pretend the module's pid now belongs to another process: same pid, other start time.
  auto path = root_ / "gone" / "process.json";
  json proc = json::parse(std::ifstream(path));
  auto pid = proc["pid"].get<std::int64_t>();
  proc["pid"] = ::getppid();  // alive, but not the module
  std::ofstream(path) << proc.dump();
  ProcessRuntime again(ProcessRuntimeOptions{root_.string(), 4096});
  auto s = again.inspect("gone");
  ASSERT_TRUE(s);
  EXPECT_EQ(s->status, RuntimeStatus::failed);
  EXPECT_NE(s->description.find("exit code unknown"), std::string::npos);
  ::kill(static_cast<pid_t>(pid), SIGKILL);
}

TEST_F(ProcessRuntimeTest, BadImagesAndMissingModules) {
  auto s = spec("x", "");
  s.image = "relative/path";
  EXPECT_EQ(runtime_->prepare(s).error().code, errc::invalid_argument);
  s.image = "file:///nonexistent/binary";
  EXPECT_EQ(runtime_->prepare(s).error().code, errc::not_found);
  EXPECT_EQ(runtime_->inspect("nope").error().code, errc::not_found);
  EXPECT_EQ(runtime_->start("nope").error().code, errc::not_found);
  EXPECT_EQ(runtime_->remove("nope").error().code, errc::not_found);
  // An executable that cannot be executed fails start() with the reason, not silently.
  s.image = "/dev/null";  // exists everywhere, never executable
  ASSERT_TRUE(runtime_->create(s));
  auto started = runtime_->start("x");
  ASSERT_FALSE(started);
  EXPECT_NE(started.error().message.find("cannot execute"), std::string::npos);
}

TEST_F(ProcessRuntimeTest, LogsRotateAndTail) {
  ASSERT_TRUE(runtime_->create(spec("chatty",
                                    "i=0; while [ $i -lt 2000 ]; do echo line$i; i=$((i+1)); done; "
                                    "touch done; exec sleep 1000")));
  ASSERT_TRUE(runtime_->start("chatty"));
  // Waits on the marker file without inspect() or logs(): an inspection while the module writes
  // would rotate mid-stream (copy, then truncate), and lines written in between are lost.
  for (int i = 0; i < 3000 && !fs::exists(root_ / "chatty" / "work" / "done"); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_TRUE(fs::exists(root_ / "chatty" / "work" / "done"));
  // The writer is idle now (sleeping): one inspection rotates the big file away, and what is
  // left in output.log is below the bound.
  (void)runtime_->inspect("chatty");
  EXPECT_LT(fs::file_size(root_ / "chatty" / "output.log"), 4096u);
  EXPECT_TRUE(fs::exists(root_ / "chatty" / "output.log.1"));
  LogOptions tail;
  tail.tail = 2;
  EXPECT_EQ(*runtime_->logs("chatty", tail), "line1998\nline1999\n");
}

TEST_F(ProcessRuntimeTest, MemoryLimitIsAppliedOrReportedAsIgnored) {
  auto s = spec("limited", "exit 0");
  s.create_options["HostConfig"] = {{"Memory", 64 * 1024 * 1024}, {"Privileged", true}};
  auto created = runtime_->create(s);
  ASSERT_TRUE(created);
  bool memory_note = false, privileged_note = false;
  for (const auto& n : created->notes) {
    memory_note |= n.starts_with("HostConfig.Memory ignored");
    privileged_note |= n.starts_with("HostConfig.Privileged ignored");
  }
  EXPECT_TRUE(privileged_note);
  if (!fs::exists("/sys/fs/cgroup/cgroup.controllers")) {
    EXPECT_TRUE(memory_note);
  }
}

TEST(RestartPolicy, FollowsIoTEdge) {
  RestartSettings s;
  EXPECT_EQ(cool_off(s, 0), std::chrono::seconds(10));
  EXPECT_EQ(cool_off(s, 1), std::chrono::seconds(20));
  EXPECT_EQ(cool_off(s, 4), std::chrono::seconds(160));
  EXPECT_EQ(cool_off(s, 5), std::chrono::seconds(300));
  EXPECT_EQ(cool_off(s, 60), std::chrono::seconds(300));
  EXPECT_TRUE(restart_candidate(RestartPolicy::always, RuntimeStatus::stopped));
  EXPECT_FALSE(restart_candidate(RestartPolicy::on_failure, RuntimeStatus::stopped));
  EXPECT_TRUE(restart_candidate(RestartPolicy::on_failure, RuntimeStatus::failed));
  EXPECT_TRUE(restart_candidate(RestartPolicy::on_unhealthy, RuntimeStatus::failed));
  EXPECT_FALSE(restart_candidate(RestartPolicy::never, RuntimeStatus::failed));
  EXPECT_FALSE(restart_candidate(RestartPolicy::always, RuntimeStatus::running));
}

net::HttpRequest workload_request(std::string method, std::string target, std::string body,
                                  std::int64_t pid) {
  net::HttpRequest r;
  r.method = std::move(method);
  r.target = std::move(target);
  r.body = std::move(body);
  r.peer = "unix:pid=" + std::to_string(pid);
  return r;
}

TEST(WorkloadApi, SignsOnlyForTheModuleItself) {
  WorkloadModule m{"m1", crypto::base64_encode("0123456789abcdef0123456789abcdef"), "gen1"};
  WorkloadContext ctx;
  ctx.trust_bundle_pem = "PEM";
  ctx.owns_pid = [](const std::string& name, std::int64_t pid) {
    return name == "m1" && pid == 42;
  };
  const std::string body = R"({"keyId":"primary","algo":"HMACSHA256","data":"aGVsbG8="})";
  auto ok = handle_workload(
      workload_request("POST", "/modules/m1/genid/gen1/sign?api-version=2018-06-28", body, 42), m,
      ctx);
  ASSERT_EQ(ok.status, 200) << ok.body;
  auto expected =
      crypto::base64_encode(crypto::hmac_sha256("0123456789abcdef0123456789abcdef", "hello"));
  EXPECT_EQ(json::parse(ok.body)["digest"], expected);
  // '$' is stripped as IoT Edge does.
  EXPECT_EQ(
      handle_workload(
          workload_request("POST", "/modules/%24m1/genid/g/sign?api-version=2019-01-30", body, 42),
          m, ctx)
          .status,
      200);
  // Another module's name, another process, no api-version, bad base64.
  EXPECT_EQ(
      handle_workload(
          workload_request("POST", "/modules/m2/genid/g/sign?api-version=2018-06-28", body, 42), m,
          ctx)
          .status,
      403);
  EXPECT_EQ(
      handle_workload(
          workload_request("POST", "/modules/m1/genid/g/sign?api-version=2018-06-28", body, 43), m,
          ctx)
          .status,
      403);
  EXPECT_EQ(handle_workload(workload_request("POST", "/modules/m1/genid/g/sign", body, 42), m, ctx)
                .status,
            400);
  EXPECT_EQ(
      handle_workload(workload_request("POST", "/modules/m1/genid/g/sign?api-version=2018-06-28",
                                       R"({"data":"***"})", 42),
                      m, ctx)
          .status,
      400);
  auto tb = handle_workload(workload_request("GET", "/trust-bundle?api-version=2018-06-28", "", 7),
                            m, ctx);
  EXPECT_EQ(tb.status, 200);
  EXPECT_EQ(json::parse(tb.body)["certificate"], "PEM");
}

TEST(WorkloadApi, EncryptDecryptRoundTrip) {
  WorkloadModule m{"m1", crypto::base64_encode("k-0123456789abcdef0123456789abcd"), "gen1"};
  WorkloadContext ctx;
  ctx.owns_pid = [](const std::string&, std::int64_t) { return true; };
  json enc = {{"plaintext", crypto::base64_encode("secret text")},
              {"initializationVector", crypto::base64_encode("0123456789ab")}};
  auto e = handle_workload(
      workload_request("POST", "/modules/m1/genid/gen1/encrypt?api-version=2018-06-28", enc.dump(),
                       1),
      m, ctx);
  ASSERT_EQ(e.status, 200) << e.body;
  json dec = {{"ciphertext", json::parse(e.body)["ciphertext"]},
              {"initializationVector", enc["initializationVector"]}};
  auto d = handle_workload(
      workload_request("POST", "/modules/m1/genid/gen1/decrypt?api-version=2018-06-28", dec.dump(),
                       1),
      m, ctx);
  ASSERT_EQ(d.status, 200) << d.body;
  EXPECT_EQ(*crypto::base64_decode(json::parse(d.body)["plaintext"].get<std::string>()),
            "secret text");
  // Tampered ciphertext does not verify.
  auto ct = *crypto::base64_decode(dec["ciphertext"].get<std::string>());
  ct[0] = static_cast<char>(ct[0] ^ 1);
  dec["ciphertext"] = crypto::base64_encode(ct);
  EXPECT_EQ(handle_workload(
                workload_request("POST", "/modules/m1/genid/gen1/decrypt?api-version=2018-06-28",
                                 dec.dump(), 1),
                m, ctx)
                .status,
            400);
}

}  // namespace
}  // namespace cairn::agent
