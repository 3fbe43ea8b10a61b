#include "bench/agent_bench.hpp"

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
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

Result<json> mgmt(const std::string& socket, const std::string& method, const std::string& target,
                  const std::string& body = {}) {
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
  auto cairnd = ChildProcess::spawn({o.cairnd_path, "--home", home.string(), "--log-level", "warn"},
                                    (*work / "cairnd.log").string());
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
    auto st = mgmt(sock, "GET", "/status");
    if (!st) return std::move(st).error();
    return (*st)["mqtt"].value("connections", std::size_t{0});
  };
  int rc = 0;
  json report = json::object();

  // Phase 2 first part: idle with nothing deployed.
  std::this_thread::sleep_for(std::chrono::seconds(2));
  const auto [rss0, pss0] = rss_pss_kib(cairnd->pid());

  std::vector<double> to_running, to_connected;
  if (!o.node_module.empty()) {
    for (int round = 0; round < o.rounds && rc == 0; ++round) {
      json modules = json::object();
      json env = {{"CAIRN_TEST_CONNECT_MAP",
                   {{"value", fmt::format("localhost:8883=127.0.0.1:{}", *tls)}}}};
      for (std::size_t i = 0; i < o.connected_modules; ++i) {
        modules[fmt::format("r{}m{}", round, i)] =
            process_module(o.node_path, {o.node_module}, env);
      }
      auto t0 = Clock::now();
      if (auto r = mgmt(sock, "POST", "/deployment", manifest(modules).dump()); !r) {
        std::cerr << r.error().message << "\n";
        rc = 1;
        break;
      }
      bool running_seen = false;
      auto done = wait(
          [&]() -> Result<bool> {
            if (!running_seen) {
              auto list = mgmt(sock, "GET", "/modules");
              if (!list) return std::move(list).error();
              if (running_modules(*list) == o.connected_modules) {
                running_seen = true;
                to_running.push_back(seconds_between(t0, Clock::now()));
              }
            }
            auto c = connections();
            if (!c) return std::move(c).error();
            return running_seen && *c >= o.connected_modules;
          },
          "modules running and connected");
      if (!done) {
        std::cerr << done.error().message << "\n";
        rc = 1;
        break;
      }
      to_connected.push_back(seconds_between(t0, Clock::now()));
      progress(fmt::format("round {}: running after {:.3f} s, connected after {:.3f} s", round,
                           to_running.back(), to_connected.back()));
      // Clear the deployment and wait until every module is gone.
      (void)mgmt(sock, "POST", "/deployment", manifest(json::object()).dump());
      (void)wait(
          [&]() -> Result<bool> {
            auto c = connections();
            if (!c) return std::move(c).error();
            return *c == 0 &&
                   !std::filesystem::exists(home / "modules" / fmt::format("r{}m0", round));
          },
          "modules removed");
    }
  }

  // Phase 2: idle with M process modules.
  json sleepers = json::object();
  for (std::size_t i = 0; i < o.idle_modules; ++i) {
    sleepers[fmt::format("idle{}", i)] = process_module("/bin/sleep", {"1000000"}, json::object());
  }
  if (auto r = mgmt(sock, "POST", "/deployment", manifest(sleepers).dump()); !r) {
    std::cerr << r.error().message << "\n";
    rc = 1;
  }
  auto all = wait(
      [&]() -> Result<bool> {
        auto list = mgmt(sock, "GET", "/modules");
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
  (void)mgmt(sock, "POST", "/deployment", manifest(json::object()).dump());
  std::this_thread::sleep_for(std::chrono::seconds(1));
  cairnd->stop();

  auto median = [](std::vector<double> v) {
    if (v.empty()) return 0.0;
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  auto mb = [](std::uint64_t kib) { return static_cast<double>(kib) / 1024.0; };
  std::cout << "cairn-bench agent (process runtime)\n";
  if (!to_connected.empty()) {
    std::cout << fmt::format(
        "  deploy -> {} Node SDK modules running:   median {:.3f} s over {} rounds (target 0.5 s)\n"
        "  deploy -> {} Node SDK modules connected: median {:.3f} s\n",
        o.connected_modules, median(to_running), to_running.size(), o.connected_modules,
        median(to_connected));
  }
  std::cout << fmt::format(
      "  cairnd idle, no modules:        RSS {:.1f} MB  PSS {:.1f} MB\n"
      "  cairnd idle, {:2} process modules: RSS {:.1f} MB  PSS {:.1f} MB  (x{:.2f} RSS; target 12 "
      "MB)\n",
      mb(rss0), mb(pss0), o.idle_modules, mb(rss1), mb(pss1),
      rss0 ? static_cast<double>(rss1) / static_cast<double>(rss0) : 0.0);
  report = {{"bench", "agent"},
            {"deployToRunningSecondsMedian", median(to_running)},
            {"deployToConnectedSecondsMedian", median(to_connected)},
            {"rounds", to_running.size()},
            {"modulesConnected", o.connected_modules},
            {"idleModules", o.idle_modules},
            {"rssKiBIdle", rss0},
            {"pssKiBIdle", pss0},
            {"rssKiBWithModules", rss1},
            {"pssKiBWithModules", pss1},
            {"ok", rc == 0}};
  std::cout << report.dump() << "\n";
  finish_work_dir(*work, o.keep_dir || rc != 0);
  return rc;
}

}  // namespace cairn::bench
