#include "bench/agent_bench.hpp"

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <sstream>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "bench/process.hpp"
#include "net/http.hpp"

namespace cairn::bench {

namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

json manifest(const json& modules) {
  return {
      {"modulesContent",
       {{"$edgeAgent", {{"properties.desired", {{"schemaVersion", "1.1"}, {"modules", modules}}}}},
        {"$edgeHub",
         {{"properties.desired", {{"schemaVersion", "1.1"}, {"routes", json::object()}}}}}}}};
}

json process_module(const std::string& image, const std::vector<std::string>& args,
                    const json& env) {
  return {{"version", "1.0"},
          {"type", "docker"},
          {"status", "running"},
          {"restartPolicy", "always"},
          {"settings", {{"image", image}, {"createOptions", json{{"Cmd", args}}.dump()}}},
          {"env", env}};
}

// The same Node SDK module as a container on the host's network (it reaches cairnd's MQTT port
// on loopback, as a process module does); the image is in the engine's storage already.
json container_module(const std::string& image, const std::vector<std::string>& cmd,
                      const json& env) {
  json create = {{"Cmd", cmd}, {"HostConfig", {{"NetworkMode", "host"}}}};
  return {{"version", "1.0"},
          {"type", "docker"},
          {"status", "running"},
          {"restartPolicy", "always"},
          {"imagePullPolicy", "never"},
          {"settings", {{"image", image}, {"createOptions", create.dump()}}},
          {"env", env}};
}

double median(std::vector<double> v) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// "first 1.234 s, median 1.100 s (1.050-1.300) over 5 rounds": the first round apart (the run's
// first deployment of its kind), the median and the spread over all rounds.
std::string rounds_summary(const std::vector<double>& v) {
  if (v.empty()) return "no rounds";
  auto [lo, hi] = std::minmax_element(v.begin(), v.end());
  return fmt::format("first {:.3f} s, median {:.3f} s ({:.3f}-{:.3f}) over {} rounds", v.front(),
                     median(v), *lo, *hi, v.size());
}

// One JSON request over a unix socket: cairnd's management API, or the container engine's.
Result<json> unix_json(const std::string& socket, const std::string& method,
                       const std::string& target, const std::string& body = {}) {
  net::HttpRequest req;
  req.method = method;
  req.target = target;
  req.body = body;
  auto r = net::unix_http_request(socket, req, 60);
  if (!r) return std::move(r).error();
  if (r->status >= 300) {
    return make_error(errc::internal,
                      fmt::format("{} {}: HTTP {} {}", method, target, r->status, r->body));
  }
  if (r->body.empty()) return json::object();
  auto j = json::parse(r->body, nullptr, false);
  if (j.is_discarded()) return make_error(errc::internal, target + ": not JSON");
  return j;
}

std::size_t running_modules(const json& list) {
  std::size_t n = 0;
  for (const auto& m : list["modules"]) n += m.value("runtimeStatus", "") == "running";
  return n;
}

// Kilobytes from /proc/PID/smaps_rollup ("Rss:", "Pss:"). Read line by line: the first line is
// the address range of the rollup, not a "Key: value kB" pair.
std::pair<std::uint64_t, std::uint64_t> rss_pss_kib(pid_t pid) {
  std::ifstream in(fmt::format("/proc/{}/smaps_rollup", pid));
  std::uint64_t rss = 0, pss = 0;
  for (std::string line; std::getline(in, line);) {
    std::istringstream fields(line);
    std::string key;
    std::uint64_t v = 0;
    if (!(fields >> key >> v)) continue;
    if (key == "Rss:") rss = v;
    if (key == "Pss:") pss = v;
  }
  return {rss, pss};
}

}  // namespace

int run_agent_bench(const AgentBenchOptions& o) {
  auto work = make_work_dir("cairn-bench-agent");
  if (!work) {
    std::cerr << work.error().message << "\n";
    return 1;
  }
  auto home = *work / "home";
  std::filesystem::create_directories(home);
  auto tls = free_loopback_port();
  if (!tls) return 1;
  auto config = fmt::format(
      "device_id = \"bench\"\nhostname = \"localhost\"\n[mqtt]\nlisten = \"127.0.0.1\"\n"
      "tls_port = {}\n[http]\nport = 0\n[store]\nfsync = false\n",
      *tls);
  if (auto s = write_file(home / "config.toml", config); !s) return 1;
  std::vector<std::string> argv = {o.cairnd_path, "--home", home.string(), "--log-level", "warn"};
  // Without an engine cairnd is told there is none, so it never picks up the host's.
  argv.insert(argv.end(), {"--docker-uri", o.docker_socket.empty() ? std::string("none")
                                                                   : "unix://" + o.docker_socket});
  auto cairnd = ChildProcess::spawn(argv, (*work / "cairnd.log").string());
  if (!cairnd) {
    std::cerr << cairnd.error().message << "\n";
    return 1;
  }
  auto started = Clock::now();
  if (auto w = wait_until_accepting(*cairnd, *tls, started, std::chrono::seconds(60)); !w) {
    std::cerr << "cairnd did not start: " << w.error().message << "\n"
              << tail_of_file((*work / "cairnd.log").string());
    return 1;
  }
  const std::string sock = (home / "run" / "mgmt.sock").string();
  const auto timeout = std::chrono::duration<double>(o.timeout_s);
  auto wait = [&](auto pred, const char* what) -> Result<double> {
    auto t0 = Clock::now();
    for (;;) {
      auto ok = pred();
      if (!ok) return std::move(ok).error();
      if (*ok) return seconds_between(t0, Clock::now());
      if (Clock::now() - t0 > timeout)
        return make_error(errc::timeout, std::string("timed out: ") + what);
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
  };
  auto connections = [&]() -> Result<std::size_t> {
    auto st = unix_json(sock, "GET", "/status");
    if (!st) return std::move(st).error();
    return (*st)["mqtt"].value("connections", std::size_t{0});
  };
  int rc = 0;
  json report = json::object();

  // Phase 2 first part: idle with nothing deployed.
  std::this_thread::sleep_for(std::chrono::seconds(2));
  const auto [rss0, pss0] = rss_pss_kib(cairnd->pid());

  // Phase 1: the same Node SDK module deployed N at a time, as processes and (with an engine) as
  // containers, interleaved round by round so both see the same machine load.
  struct Timings {
    std::vector<double> running, connected;
  };
  Timings processes, containers;
  std::vector<double> engine_alone;  // create+start of N containers through the engine's API
  const bool with_containers = !o.docker_socket.empty() && !o.container_image.empty();
  const json connect_env = {
      {"CAIRN_TEST_CONNECT_MAP", {{"value", fmt::format("localhost:8883=127.0.0.1:{}", *tls)}}}};
  auto engine_containers = [&]() -> Result<std::size_t> {
    auto list = unix_json(o.docker_socket, "GET", "/containers/json?all=true");
    if (!list) return std::move(list).error();
    return list->size();
  };
  // POSTs `modules` as the whole deployment, times it into `into`, then clears the deployment
  // and waits until `gone` (and no MQTT connection is left).
  auto time_deployment = [&](const json& modules, Timings& into, const char* kind, int round,
                             const std::function<Result<bool>()>& gone) -> bool {
    auto t0 = Clock::now();
    if (auto r = unix_json(sock, "POST", "/deployment", manifest(modules).dump()); !r) {
      std::cerr << r.error().message << "\n";
      return false;
    }
    bool running_seen = false;
    auto done = wait(
        [&]() -> Result<bool> {
          if (!running_seen) {
            auto list = unix_json(sock, "GET", "/modules");
            if (!list) return std::move(list).error();
            if (running_modules(*list) == modules.size()) {
              running_seen = true;
              into.running.push_back(seconds_between(t0, Clock::now()));
            }
          }
          auto c = connections();
          if (!c) return std::move(c).error();
          return running_seen && *c >= modules.size();
        },
        "modules running and connected");
    if (!done) {
      std::cerr << kind << " round " << round << ": " << done.error().message << "\n";
      return false;
    }
    into.connected.push_back(seconds_between(t0, Clock::now()));
    progress(fmt::format("round {}: {} modules running after {:.3f} s, connected after {:.3f} s",
                         round, kind, into.running.back(), into.connected.back()));
    (void)unix_json(sock, "POST", "/deployment", manifest(json::object()).dump());
    auto removed = wait(
        [&]() -> Result<bool> {
          auto c = connections();
          if (!c) return std::move(c).error();
          if (*c != 0) return false;
          return gone();
        },
        "modules removed");
    if (!removed) {
      std::cerr << kind << " round " << round << ": " << removed.error().message << "\n";
      return false;
    }
    return true;
  };
  // The engine alone: create and start N containers of the image through its API, one after
  // the other, then remove them. What any agent on this engine pays at least.
  auto time_engine_alone = [&](int round) -> bool {
    json body = {{"Image", o.container_image},
                 {"Cmd", {"node", "-e", "setInterval(() => {}, 1 << 30)"}},
                 {"HostConfig", {{"NetworkMode", "host"}}}};
    std::vector<std::string> ids;
    auto t0 = Clock::now();
    for (std::size_t i = 0; i < o.connected_modules; ++i) {
      auto made = unix_json(o.docker_socket, "POST",
                            fmt::format("/containers/create?name=bench-engine-r{}c{}", round, i),
                            body.dump());
      if (!made) {
        std::cerr << made.error().message << "\n";
        return false;
      }
      ids.push_back(made->value("Id", ""));
      if (auto st = unix_json(o.docker_socket, "POST", "/containers/" + ids.back() + "/start");
          !st) {
        std::cerr << st.error().message << "\n";
        return false;
      }
    }
    engine_alone.push_back(seconds_between(t0, Clock::now()));
    progress(fmt::format("round {}: engine API alone, {} containers started after {:.3f} s", round,
                         o.connected_modules, engine_alone.back()));
    for (const auto& id : ids) {
      (void)unix_json(o.docker_socket, "DELETE", "/containers/" + id + "?force=true&v=true");
    }
    return true;
  };
  if (!o.node_module.empty()) {
    for (int round = 0; round < o.rounds && rc == 0; ++round) {
      json modules = json::object();
      for (std::size_t i = 0; i < o.connected_modules; ++i) {
        modules[fmt::format("r{}m{}", round, i)] =
            process_module(o.node_path, {o.node_module}, connect_env);
      }
      const auto first_dir = home / "modules" / fmt::format("r{}m0", round);
      if (!time_deployment(modules, processes, "process", round,
                           [&]() -> Result<bool> { return !std::filesystem::exists(first_dir); })) {
        rc = 1;
        break;
      }
      if (!with_containers) continue;
      modules = json::object();
      for (std::size_t i = 0; i < o.connected_modules; ++i) {
        modules[fmt::format("r{}c{}", round, i)] =
            container_module(o.container_image, {"node", o.container_node_module}, connect_env);
      }
      if (!time_deployment(modules, containers, "container", round, [&]() -> Result<bool> {
            auto n = engine_containers();
            if (!n) return std::move(n).error();
            return *n == 0;
          })) {
        rc = 1;
        break;
      }
      if (!time_engine_alone(round)) rc = 1;
    }
  }

  // Phase 2: idle with M process modules.
  json sleepers = json::object();
  for (std::size_t i = 0; i < o.idle_modules; ++i) {
    sleepers[fmt::format("idle{}", i)] = process_module("/bin/sleep", {"1000000"}, json::object());
  }
  if (auto r = unix_json(sock, "POST", "/deployment", manifest(sleepers).dump()); !r) {
    std::cerr << r.error().message << "\n";
    rc = 1;
  }
  auto all = wait(
      [&]() -> Result<bool> {
        auto list = unix_json(sock, "GET", "/modules");
        if (!list) return std::move(list).error();
        return running_modules(*list) == o.idle_modules;
      },
      "idle modules running");
  if (!all) {
    std::cerr << all.error().message << "\n";
    rc = 1;
  }
  std::this_thread::sleep_for(std::chrono::seconds(3));
  auto [rss1, pss1] = rss_pss_kib(cairnd->pid());
  (void)unix_json(sock, "POST", "/deployment", manifest(json::object()).dump());
  std::this_thread::sleep_for(std::chrono::seconds(1));
  cairnd->stop();

  auto mb = [](std::uint64_t kib) { return static_cast<double>(kib) / 1024.0; };
  std::cout << "cairn-bench agent (process runtime"
            << (with_containers
                    ? "; docker runtime: " + o.docker_socket + ", image " + o.container_image
                    : std::string())
            << ")\n";
  const auto n = o.connected_modules;
  if (!processes.connected.empty()) {
    std::cout << fmt::format(
        "  deploy -> {} Node SDK process modules running:     {} (target 0.5 s)\n"
        "  deploy -> {} Node SDK process modules connected:   {}\n",
        n, rounds_summary(processes.running), n, rounds_summary(processes.connected));
  }
  if (!containers.connected.empty()) {
    auto ratio = [](const std::vector<double>& a, const std::vector<double>& b) {
      return median(b) > 0 ? median(a) / median(b) : 0.0;
    };
    std::cout << fmt::format(
        "  deploy -> {} Node SDK container modules running:   {}\n"
        "  deploy -> {} Node SDK container modules connected: {}\n"
        "  engine API alone, {} containers created+started:   {}\n"
        "  container / process (medians): running x{:.1f}, connected x{:.2f}\n",
        n, rounds_summary(containers.running), n, rounds_summary(containers.connected), n,
        rounds_summary(engine_alone), ratio(containers.running, processes.running),
        ratio(containers.connected, processes.connected));
  }
  std::cout << fmt::format(
      "  cairnd idle, no modules:        RSS {:.1f} MB  PSS {:.1f} MB\n"
      "  cairnd idle, {:2} process modules: RSS {:.1f} MB  PSS {:.1f} MB  (x{:.2f} RSS; target 12 "
      "MB)\n",
      mb(rss0), mb(pss0), o.idle_modules, mb(rss1), mb(pss1),
      rss0 ? static_cast<double>(rss1) / static_cast<double>(rss0) : 0.0);
  report = {{"bench", "agent"},
            {"deployToRunningSecondsMedian", median(processes.running)},
            {"deployToConnectedSecondsMedian", median(processes.connected)},
            {"deployToRunningSeconds", processes.running},
            {"deployToConnectedSeconds", processes.connected},
            {"rounds", processes.running.size()},
            {"modulesConnected", o.connected_modules},
            {"idleModules", o.idle_modules},
            {"rssKiBIdle", rss0},
            {"pssKiBIdle", pss0},
            {"rssKiBWithModules", rss1},
            {"pssKiBWithModules", pss1},
            {"ok", rc == 0}};
  if (with_containers) {
    report["containerDeployToRunningSecondsMedian"] = median(containers.running);
    report["containerDeployToConnectedSecondsMedian"] = median(containers.connected);
    report["containerDeployToRunningSeconds"] = containers.running;
    report["containerDeployToConnectedSeconds"] = containers.connected;
    report["engineCreateStartSeconds"] = engine_alone;
    report["containerImage"] = o.container_image;
  }
  std::cout << report.dump() << "\n";
  finish_work_dir(*work, o.keep_dir || rc != 0);
  return rc;
}

}  // namespace cairn::bench
