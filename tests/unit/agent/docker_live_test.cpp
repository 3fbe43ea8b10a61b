// DockerClient and DockerRuntime against a real engine and real registries. These need
// Podman's service and two registries, which tests/integration/test_docker_runtime.py starts
// (fixtures in tests/integration/containers.py) before running this binary with
// --gtest_filter='DockerLive*' and the CAIRN_TEST_* variables below. Run alone, they skip and
// say why.
#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <set>
#include <sstream>

#include <gtest/gtest.h>

#include "agent/docker_runtime.hpp"
#include "core/crypto.hpp"
#include "net/http.hpp"
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

// Fails with the runtime's error text, which says what the engine answered.
#define ASSERT_OK(expr)                                       \
  do {                                                        \
    auto status_ = (expr);                                    \
    ASSERT_TRUE(status_.ok()) << status_.error().to_string(); \
  } while (0)

namespace cairn::agent {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

struct Live {
  std::string socket = env("CAIRN_TEST_DOCKER_SOCKET");
  std::string registry = env("CAIRN_TEST_REGISTRY");            // open, "127.0.0.1:5000"
  std::string auth_registry = env("CAIRN_TEST_AUTH_REGISTRY");  // htpasswd
  std::string user = env("CAIRN_TEST_REGISTRY_USER");
  std::string password = env("CAIRN_TEST_REGISTRY_PASSWORD");
  std::string repo = env("CAIRN_TEST_IMAGE_REPO");  // "cairn-test/busybox:1" in both
  std::string tmp = env("CAIRN_TEST_TMP");          // a directory for binds
  int http_port = std::atoi(env("CAIRN_TEST_FREE_PORT").c_str());
  bool ready() const {
    return !socket.empty() && !registry.empty() && !auth_registry.empty() && !repo.empty() &&
           !tmp.empty() && http_port > 0;
  }
};

#define REQUIRE_ENGINE(live)                                                                     \
  do {                                                                                           \
    if (!(live).ready()) {                                                                       \
      GTEST_SKIP() << "no container engine given: run tests/integration/test_docker_runtime.py"; \
    }                                                                                            \
  } while (0)

DockerOptions options(const Live& live) {
  DockerOptions o;
  o.socket_path = live.socket;
  o.pull_timeout_secs = 120;
  return o;
}

std::string unique(const std::string& base) {
  return base + "-" + crypto::sha256_hex(crypto::random_bytes(8)).substr(0, 8);
}

std::string read_file(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// A listening unix socket standing in for the module's workload socket.
struct FakeWorkloadSocket {
  explicit FakeWorkloadSocket(const std::string& path) : path_(path) {
    fd_ = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path.c_str());
    ::unlink(path.c_str());
    bound_ =
        ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 && ::listen(fd_, 4) == 0;
  }
  ~FakeWorkloadSocket() {
    ::close(fd_);
    ::unlink(path_.c_str());
  }
  std::string path_;
  int fd_ = -1;
  bool bound_ = false;
};

template <class Pred>
bool eventually(Pred pred, std::chrono::seconds limit = std::chrono::seconds(60)) {
  auto until = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < until) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return pred();
}

TEST(DockerLiveClient, TalksToTheEngine) {
  Live live;
  REQUIRE_ENGINE(live);
  DockerClient client(options(live));
  ASSERT_TRUE(client.ping().ok());
  auto v = client.version();
  ASSERT_TRUE(v.ok()) << v.error().to_string();
  EXPECT_FALSE(v->version.empty());
  EXPECT_FALSE(v->api_version.empty());
}

TEST(DockerLiveClient, UnreachableEngineIsUnavailable) {
  Live live;
  REQUIRE_ENGINE(live);
  DockerOptions o;
  o.socket_path = live.tmp + "/no-engine.sock";
  DockerClient client(o);
  auto v = client.version();
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(v.error().code, errc::unavailable);
}

TEST(DockerLiveClient, PullsFromAnOpenRegistry) {
  Live live;
  REQUIRE_ENGINE(live);
  DockerClient client(options(live));
  std::string image = live.registry + "/" + live.repo;
  auto pulled = client.pull_image(image, std::nullopt);
  ASSERT_TRUE(pulled.ok()) << pulled.error().to_string();
  auto info = client.inspect_image(image);
  ASSERT_TRUE(info.ok()) << info.error().to_string();
  EXPECT_EQ(info->id.empty(), false);
}

TEST(DockerLiveClient, PullWithCredentials) {
  Live live;
  REQUIRE_ENGINE(live);
  DockerClient client(options(live));
  std::string image = live.auth_registry + "/" + live.repo;

  auto anonymous = client.pull_image(image, std::nullopt);
  ASSERT_FALSE(anonymous.ok());
  EXPECT_EQ(anonymous.error().code, errc::unauthorized) << anonymous.error().to_string();

  auto wrong = client.pull_image(image, DockerAuth{live.auth_registry, live.user, "wrong"});
  ASSERT_FALSE(wrong.ok());
  EXPECT_EQ(wrong.error().code, errc::unauthorized) << wrong.error().to_string();

  auto right = client.pull_image(image, DockerAuth{live.auth_registry, live.user, live.password});
  ASSERT_TRUE(right.ok()) << right.error().to_string();
  EXPECT_TRUE(client.inspect_image(image).ok());
}

TEST(DockerLiveClient, BadImageIsAClearError) {
  Live live;
  REQUIRE_ENGINE(live);
  DockerClient client(options(live));
  auto missing = client.pull_image(live.registry + "/cairn-test/no-such-image:1", std::nullopt);
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code, errc::not_found) << missing.error().to_string();
  EXPECT_NE(missing.error().message.find("no-such-image"), std::string::npos);

  auto inspect = client.inspect_image(live.registry + "/cairn-test/no-such-image:1");
  ASSERT_FALSE(inspect.ok());
  EXPECT_EQ(inspect.error().code, errc::not_found);
}

class DockerLiveRuntime : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!live_.ready()) {
      GTEST_SKIP() << "no container engine given: run tests/integration/test_docker_runtime.py";
    }
    owner_ = unique("owner");
    prefix_ = unique("t") + "-";
    DockerRuntimeOptions o{options(live_), owner_, prefix_};
    auto rt = DockerRuntime::create(o);
    ASSERT_TRUE(rt.ok());
    runtime_ = std::move(*rt);
    dir_ = fs::path(live_.tmp) / unique("run");
    fs::create_directories(dir_ / "out");
  }
  void TearDown() override {
    if (!runtime_) return;
    auto all = runtime_->list();
    if (all) {
      for (const auto& m : *all) (void)runtime_->remove(m.name);
    }
  }
  ModuleSpec spec(const std::string& name, const std::string& script) {
    ModuleSpec s;
    s.name = name;
    s.image = live_.registry + "/" + live_.repo;
    s.version = "1.0";
    s.create_options = {{"Cmd", {"sh", "-c", script}}};
    s.env = {{"IOTEDGE_MODULEID", name}, {"IOTEDGE_DEVICEID", "dev1"}};
    s.config_hash = "hash-" + name;
    return s;
  }

  Live live_;
  std::string owner_;
  std::string prefix_;
  std::unique_ptr<DockerRuntime> runtime_;
  fs::path dir_;
};

TEST_F(DockerLiveRuntime, CreateOptionsAreAppliedAndReportedWithoutDrift) {
  FakeWorkloadSocket workload((dir_ / "filter.sock").string());
  ASSERT_TRUE(workload.bound_);
  auto s = spec("filter",
                "env > /out/env.txt; "
                "test -S /var/run/iotedge/workload.sock && echo present > /out/socket.txt; "
                "echo started; echo complaint >&2; "
                "mkdir -p /www && echo hello-from-the-module > /www/index.html; "
                "exec httpd -f -p 8080 -h /www");
  std::string port = std::to_string(live_.http_port);
  s.create_options["Env"] = {"FROM_CREATE_OPTIONS=yes", "IOTEDGE_MODULEID=spoofed"};
  s.create_options["ExposedPorts"] = {{"8080/tcp", json::object()}};
  s.create_options["HostConfig"] = {
      {"Binds", {(dir_ / "out").string() + ":/out"}},
      {"PortBindings", {{"8080/tcp", {{{"HostIp", "127.0.0.1"}, {"HostPort", port}}}}}},
      {"Ulimits", {{{"Name", "nofile"}, {"Soft", 1024}, {"Hard", 2048}}}},
      {"RestartPolicy", {{"Name", "always"}}}};
  s.env.emplace_back("FROM_MANIFEST", "1");
  s.workload_socket = workload.path_;

  ASSERT_OK(runtime_->prepare(s));
  auto created = runtime_->create(s);
  ASSERT_TRUE(created.ok()) << created.error().to_string();
  EXPECT_EQ(created->notes.size(), 1u);  // the RestartPolicy that was replaced
  auto again = runtime_->create(s);
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().code, errc::already_exists);

  auto before = runtime_->inspect("filter");
  ASSERT_TRUE(before.ok());
  EXPECT_EQ(before->status, RuntimeStatus::stopped);
  EXPECT_EQ(before->config_hash, "hash-filter");

  ASSERT_OK(runtime_->start("filter"));
  ASSERT_OK(runtime_->start("filter"));  // already running: still a success

  // The module's own behaviour shows the settings: env and socket seen inside, port served.
  ASSERT_TRUE(eventually([&] { return fs::exists(dir_ / "out" / "socket.txt"); }));
  std::string envs = read_file(dir_ / "out" / "env.txt");
  EXPECT_NE(envs.find("FROM_CREATE_OPTIONS=yes"), std::string::npos) << envs;
  EXPECT_NE(envs.find("FROM_MANIFEST=1"), std::string::npos) << envs;
  EXPECT_NE(envs.find("IOTEDGE_MODULEID=filter"), std::string::npos) << envs;
  EXPECT_EQ(envs.find("spoofed"), std::string::npos) << envs;
  std::string body;
  ASSERT_TRUE(eventually([&] {
    auto res = net::http_request(
        net::HttpTarget{"127.0.0.1", static_cast<std::uint16_t>(live_.http_port), false, "", ""},
        net::HttpRequest{"GET", "/index.html", ""}, 5);
    if (res && res->status == 200) body = res->body;
    return !body.empty();
  }));
  EXPECT_EQ(body, "hello-from-the-module\n");

  // The engine's echo of the settings, normalised, matches what was asked.
  auto drift = runtime_->drift(s);
  ASSERT_TRUE(drift.ok()) << drift.error().to_string();
  EXPECT_TRUE(drift->empty()) << ::testing::PrintToString(*drift);
  auto changed = s;
  changed.create_options["HostConfig"]["PortBindings"]["8080/tcp"][0]["HostPort"] = "1";
  auto drift2 = runtime_->drift(changed);
  ASSERT_TRUE(drift2.ok());
  EXPECT_EQ(drift2->size(), 1u) << ::testing::PrintToString(*drift2);

  auto running = runtime_->inspect("filter");
  ASSERT_TRUE(running.ok());
  EXPECT_EQ(running->status, RuntimeStatus::running);
  EXPECT_GT(running->pid, 0);
  EXPECT_GT(running->started_at_ms, 0);
  EXPECT_TRUE(runtime_->owns_process("filter", running->pid));
  EXPECT_FALSE(runtime_->owns_process("filter", ::getpid()));

  std::string logs;
  ASSERT_TRUE(eventually([&] {
    auto l = runtime_->logs("filter", {});
    if (l) logs = *l;
    return logs.find("complaint") != std::string::npos;
  })) << logs;
  EXPECT_NE(logs.find("started\n"), std::string::npos);
  auto tail = runtime_->logs("filter", LogOptions{1, 0, false});
  ASSERT_TRUE(tail.ok());
  EXPECT_EQ(tail->find("started"), std::string::npos) << *tail;

  ASSERT_TRUE(runtime_->stop("filter", std::chrono::seconds(1)).ok());
  auto stopped = runtime_->inspect("filter");
  ASSERT_TRUE(stopped.ok());
  EXPECT_NE(stopped->status, RuntimeStatus::running);
  EXPECT_GT(stopped->exited_at_ms, 0);
  EXPECT_TRUE(runtime_->stop("filter", std::chrono::seconds(1)).ok());  // stopping again

  ASSERT_TRUE(runtime_->remove("filter").ok());
  auto gone = runtime_->inspect("filter");
  ASSERT_FALSE(gone.ok());
  EXPECT_EQ(gone.error().code, errc::not_found);
  EXPECT_EQ(runtime_->remove("filter").error().code, errc::not_found);
}

TEST_F(DockerLiveRuntime, ExitIsSeenThroughEvents) {
  std::mutex m;
  std::condition_variable cv;
  std::multiset<std::string> changed;
  runtime_->on_change([&](const std::string& name) {
    std::lock_guard lock(m);
    changed.insert(name);
    cv.notify_all();
  });
  // Before the locals above go: the callback must not outlive them, even on an early return.
  struct ForgetCallback {
    DockerRuntime& runtime;
    ~ForgetCallback() { runtime.on_change(nullptr); }
  } forget{*runtime_};
  // The module waits for a file, so the event stream is surely connected before it exits.
  auto s = spec("crasher", "while [ ! -e /out/go ]; do sleep 0.1; done; echo bye; exit 3");
  s.create_options["HostConfig"] = {{"Binds", {(dir_ / "out").string() + ":/out"}}};
  ASSERT_OK(runtime_->prepare(s));
  ASSERT_OK(runtime_->create(s));
  ASSERT_OK(runtime_->start("crasher"));
  {
    std::unique_lock lock(m);
    // The start event: the stream is live.
    ASSERT_TRUE(
        cv.wait_for(lock, std::chrono::seconds(60), [&] { return changed.count("crasher") > 0; }));
    changed.clear();
  }
  std::ofstream(dir_ / "out" / "go") << "go";
  bool exited = false;
  {
    std::unique_lock lock(m);
    exited = cv.wait_for(lock, std::chrono::seconds(60), [&] {
      auto st = runtime_->inspect("crasher");
      return changed.count("crasher") > 0 && st && st->status != RuntimeStatus::running;
    });
  }
  ASSERT_TRUE(exited);
  auto st = runtime_->inspect("crasher");
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->status, RuntimeStatus::failed);
  EXPECT_EQ(st->exit_code, 3);
  EXPECT_EQ(st->description, "exited with 3");
}

TEST_F(DockerLiveRuntime, AdoptsOnlyItsOwnContainers) {
  auto s = spec("sensor", "exec sleep 600");
  ASSERT_OK(runtime_->prepare(s));
  ASSERT_OK(runtime_->create(s));
  ASSERT_OK(runtime_->start("sensor"));

  // A restarted cairnd of the same home (same owner) finds it running with its config hash;
  // another home sees nothing, even under the same container name.
  auto restarted = DockerRuntime::create(DockerRuntimeOptions{options(live_), owner_, prefix_});
  ASSERT_TRUE(restarted.ok());
  runtime_.swap(*restarted);
  restarted->reset();
  auto list = runtime_->list();
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 1u);
  EXPECT_EQ((*list)[0].name, "sensor");
  EXPECT_EQ((*list)[0].status, RuntimeStatus::running);
  EXPECT_EQ((*list)[0].config_hash, "hash-sensor");

  auto stranger =
      DockerRuntime::create(DockerRuntimeOptions{options(live_), unique("other"), prefix_});
  ASSERT_TRUE(stranger.ok());
  auto theirs = (*stranger)->list();
  ASSERT_TRUE(theirs.ok());
  EXPECT_TRUE(theirs->empty());
  auto peek = (*stranger)->inspect("sensor");
  ASSERT_FALSE(peek.ok());
  EXPECT_EQ(peek.error().code, errc::not_found);
  EXPECT_FALSE((*stranger)->stop("sensor", std::chrono::seconds(0)).ok());
  EXPECT_FALSE((*stranger)->remove("sensor").ok());
  auto clash = (*stranger)->create(s);
  ASSERT_FALSE(clash.ok());
  EXPECT_EQ(clash.error().code, errc::already_exists);
  EXPECT_EQ(runtime_->inspect("sensor")->status, RuntimeStatus::running);
}

TEST_F(DockerLiveRuntime, PullPolicyNeverNeedsThePresentImage) {
  auto s = spec("absent", "true");
  s.image = live_.registry + "/cairn-test/never-pushed:1";
  s.pull_policy = ImagePullPolicy::never;
  auto r = runtime_->prepare(s);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, errc::not_found);
  EXPECT_NE(r.error().message.find("never"), std::string::npos);
}

TEST_F(DockerLiveRuntime, RegistryCredentialsFromTheSpec) {
  auto s = spec("private", "true");
  s.image = live_.auth_registry + "/" + live_.repo;
  s.credentials = RegistryCredential{live_.auth_registry, live_.user, "wrong-password"};
  auto refused = runtime_->prepare(s);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code, errc::unauthorized);
  s.credentials->password = live_.password;
  EXPECT_TRUE(runtime_->prepare(s).ok());
}

}  // namespace
}  // namespace cairn::agent
