#include "bench/mqtt_bench.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>  // Boost 1.74 + gcc 12: must precede the Asio headers.

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "bench/histogram.hpp"
#include "bench/process.hpp"
#include "bench/targets.hpp"
#include "net/mqtt_client.hpp"
#include <unistd.h>

namespace cairn::bench {

namespace {

namespace asio = boost::asio;
using asio::awaitable;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr std::size_t kStampBytes = 16;  // hex steady-clock nanoseconds at the payload start
constexpr auto kBrokerStartLimit = 20s;
constexpr auto kSetupLimit = 15s;
constexpr auto kTeardownLimit = 3s;
constexpr auto kIdleSettle = 500ms;  // after the first accepted connect, before reading RSS
constexpr auto kSampleEvery = 100ms;

std::uint64_t now_ns() {
  return static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
          .count());
}

void stamp(std::string& payload, std::uint64_t ns) {
  static constexpr char kHex[] = "0123456789abcdef";
  for (std::size_t i = 0; i < kStampBytes; ++i) {
    payload[kStampBytes - 1 - i] = kHex[ns & 0xF];
    ns >>= 4;
  }
}

std::optional<std::uint64_t> read_stamp(std::string_view payload) {
  if (payload.size() < kStampBytes) return std::nullopt;
  std::uint64_t ns = 0;
  for (std::size_t i = 0; i < kStampBytes; ++i) {
    const char c = payload[i];
    std::uint64_t digit = 0;
    if (c >= '0' && c <= '9') {
      digit = static_cast<std::uint64_t>(c - '0');
    } else if (c >= 'a' && c <= 'f') {
      digit = static_cast<std::uint64_t>(c - 'a' + 10);
    } else {
      return std::nullopt;
    }
    ns = (ns << 4) | digit;
  }
  return ns;
}

// ---------------------------------------------------------------------------------------------
// One run of one workload against one broker.

enum Phase : int { kWarmup = 0, kMeasure = 1, kDone = 2 };

struct RunShared {
  std::atomic<int> phase{kWarmup};
  std::atomic<bool> stop{false};
  std::uint64_t run_start_ns = 0;  // stamps older than this are not ours (stale redeliveries)
  FirstError first_error;
};

struct Subscriber {
  std::shared_ptr<net::MqttClient> client;
  LatencyHistogram latency;  // only touched on the client's strand until the I/O threads join
  std::atomic<std::uint64_t> received_total{0};
  std::atomic<std::uint64_t> received_measured{0};
};

struct Publisher {
  std::shared_ptr<net::MqttClient> client;
  std::string topic;
  std::atomic<std::uint64_t> sent_total{0};
  std::atomic<std::uint64_t> sent_measured{0};
};

awaitable<Status> connect_client(std::shared_ptr<net::MqttClient> client, std::string filter,
                                 std::uint8_t qos) {
  auto connack = co_await client->connect();
  if (!connack) co_return connack.error();
  if (!filter.empty()) {
    auto granted = co_await client->subscribe(std::move(filter), qos);
    if (!granted) co_return granted.error();
  }
  co_return Status{};
}

// `rate`: publishes per second of this publisher; 0 = as fast as the in-flight window allows.
awaitable<void> publish_loop(Publisher* publisher, RunShared* shared, std::size_t payload_bytes,
                             std::uint8_t qos, double rate) {
  auto client = publisher->client;
  std::string payload(payload_bytes, 'x');
  asio::steady_timer pace(client->get_executor());
  const auto paced_start = Clock::now();
  std::uint64_t count = 0;
  while (!shared->stop.load(std::memory_order_relaxed)) {
    if (rate > 0) {
      // On a fixed schedule (not "interval after the last one"), so a late wake-up does not
      // lower the rate; the stamp is taken after the wait, when the message really leaves.
      pace.expires_at(paced_start +
                      std::chrono::duration_cast<Clock::duration>(
                          std::chrono::duration<double>(static_cast<double>(count) / rate)));
      boost::system::error_code ignored;
      co_await pace.async_wait(asio::redirect_error(asio::use_awaitable, ignored));
      ++count;
    }
    // Stamp only once the client can take the packet, so the latency does not include our
    // own wait for an in-flight slot.
    auto ready = co_await client->wait_until_ready(qos);
    if (shared->stop.load(std::memory_order_relaxed)) break;
    if (!ready) {
      shared->first_error.set("publisher " + client->options().client_id + ": " +
                              ready.error().message);
      break;
    }
    stamp(payload, now_ns());
    auto queued = co_await client->async_publish(publisher->topic, payload, qos);
    if (!queued) {
      if (!shared->stop.load(std::memory_order_relaxed)) {
        shared->first_error.set("publisher " + client->options().client_id + ": " +
                                queued.error().message);
      }
      break;
    }
    publisher->sent_total.fetch_add(1, std::memory_order_relaxed);
    if (shared->phase.load(std::memory_order_relaxed) == kMeasure) {
      publisher->sent_measured.fetch_add(1, std::memory_order_relaxed);
    }
  }
}

awaitable<Status> disconnect_client(std::shared_ptr<net::MqttClient> client) {
  co_return co_await client->disconnect();
}

struct RunResult {
  std::string error;  // empty: the run completed
  double window_s = 0;
  std::uint64_t received = 0;  // by all subscribers in the measured window
  std::uint64_t sent = 0;      // by all publishers in the measured window
  LatencyHistogram latency;
  std::optional<std::uint64_t> rss_idle_kib;
  std::optional<std::uint64_t> rss_max_kib;
  std::optional<double> broker_cpu_percent;
  std::optional<double> broker_cpu_s;  // in the measured window
  double bench_cpu_percent = 0;
  double startup_ms = 0;
  double paced_rate = 0;  // total publishes per second asked for; 0: saturated
};

struct StartupFigures {
  std::string error;
  std::vector<double> samples_ms;
  std::optional<std::uint64_t> idle_rss_kib;  // median over the starts
  double best_ms() const {
    return samples_ms.empty() ? 0 : *std::min_element(samples_ms.begin(), samples_ms.end());
  }
};

Programs programs_of(const MqttBenchOptions& o) {
  return Programs{o.cairnd_path, o.cairn_path, o.mosquitto_path, o.cairn_fsync};
}

// Starts the broker described by `prepared` and waits until it accepts connections.
Result<ChildProcess> start_broker(const PreparedBroker& prepared, double* startup_ms) {
  const auto started = Clock::now();
  auto child = ChildProcess::spawn(prepared.argv, prepared.log_path);
  if (!child) return std::move(child).error();
  auto ready = wait_until_accepting(*child, prepared.port, started, kBrokerStartLimit);
  if (!ready) {
    return make_error(ready.error().code, std::string(to_string(prepared.kind)) + ": " +
                                              ready.error().message + "; log:\n" +
                                              tail_of_file(prepared.log_path));
  }
  *startup_ms = static_cast<double>(ready->count()) / 1000.0;
  return child;
}

StartupFigures measure_startup(TargetKind kind, const MqttBenchOptions& options,
                               const std::string& dir) {
  StartupFigures figures;
  auto port = free_loopback_port();
  if (!port) {
    figures.error = port.error().message;
    return figures;
  }
  // The same directory for every start: the first may initialise state, the best of N is a
  // warm restart, which is what an edge device sees after a reboot or a crash.
  auto prepared = prepare_broker(kind, programs_of(options), dir, *port, 1, 1);
  if (!prepared) {
    figures.error = prepared.error().message;
    return figures;
  }
  std::vector<std::uint64_t> rss;
  for (int i = 0; i < options.startup_samples; ++i) {
    double ms = 0;
    auto child = start_broker(*prepared, &ms);
    if (!child) {
      figures.error = child.error().message;
      return figures;
    }
    figures.samples_ms.push_back(ms);
    std::this_thread::sleep_for(kIdleSettle);
    if (auto kib = child->rss_kib()) rss.push_back(*kib);
    child->stop();
    progress(fmt::format("{}: start {}/{}: accepting after {:.1f} ms", to_string(kind), i + 1,
                         options.startup_samples, ms));
  }
  if (!rss.empty()) {
    std::sort(rss.begin(), rss.end());
    figures.idle_rss_kib = rss[rss.size() / 2];
  }
  return figures;
}

// Waits for every future, but not beyond `deadline`; returns the first error or timeout.
Status wait_all(std::vector<std::future<Status>>& futures, Clock::time_point deadline,
                std::string_view what) {
  for (auto& f : futures) {
    if (f.wait_until(deadline) != std::future_status::ready) {
      return make_error(errc::timeout, std::string(what) + " timed out");
    }
    auto s = f.get();
    if (!s) return make_error(s.error().code, std::string(what) + ": " + s.error().message);
  }
  return {};
}

std::future<Status> spawn_status(const asio::any_io_executor& executor, awaitable<Status> body) {
  auto promise = std::make_shared<std::promise<Status>>();
  auto future = promise->get_future();
  asio::co_spawn(executor, std::move(body), [promise](std::exception_ptr e, Status s) {
    if (e) s = make_error(errc::internal, "exception in client coroutine");
    promise->set_value(std::move(s));
  });
  return future;
}

// `rate`: total publishes per second for a paced workload, 0 when saturated.
RunResult run_workload(TargetKind kind, const Workload& w, const MqttBenchOptions& options,
                       const std::string& dir, double rate) {
  RunResult result;
  const std::string label = fmt::format("{} {}", to_string(kind), w.name);
  auto port = free_loopback_port();
  if (!port) {
    result.error = port.error().message;
    return result;
  }
  auto prepared =
      prepare_broker(kind, programs_of(options), dir, *port, w.publishers, w.subscribers, w.tls);
  if (!prepared) {
    result.error = prepared.error().message;
    return result;
  }
  auto child = start_broker(*prepared, &result.startup_ms);
  if (!child) {
    result.error = child.error().message;
    return result;
  }
  result.rss_idle_kib = child->rss_kib();
  result.rss_max_kib = result.rss_idle_kib;
  if (auto provisioned = provision_clients(*prepared, programs_of(options)); !provisioned) {
    result.error = provisioned.error().message;
    return result;
  }

  asio::io_context io(options.threads);
  auto guard = asio::make_work_guard(io);
  std::vector<std::thread> threads;
  for (int i = 0; i < options.threads; ++i) threads.emplace_back([&io] { io.run(); });

  RunShared shared;
  shared.run_start_ns = now_ns();
  std::vector<std::unique_ptr<Subscriber>> subscribers;
  std::vector<std::unique_ptr<Publisher>> publishers;

  auto client_options = [&](const ClientSetup& setup) {
    net::MqttClientOptions o;
    o.host = "127.0.0.1";
    o.port = *port;
    o.client_id = setup.client_id;
    o.username = setup.username;
    o.password = setup.password;
    o.keep_alive_s = 60;
    o.connect_timeout = 10s;
    o.tls = w.tls;
    o.tls_verify_peer = false;  // loopback, the broker's own certificate: costs are what count
    return o;
  };

  // Subscribers first, so nothing published is lost to a missing subscription.
  std::string error;
  std::vector<std::future<Status>> setups;
  for (const auto& setup : prepared->subscribers) {
    auto sub = std::make_unique<Subscriber>();
    auto client = net::MqttClient::create(asio::make_strand(io), client_options(setup));
    if (!client) {
      error = client.error().message;
      break;
    }
    sub->client = *client;
    Subscriber* raw = sub.get();
    RunShared* run = &shared;
    sub->client->set_message_handler([raw, run](mqtt::Publish p) {
      const std::uint64_t now = now_ns();
      raw->received_total.fetch_add(1, std::memory_order_relaxed);
      const auto sent = read_stamp(p.payload);
      if (!sent || *sent < run->run_start_ns || *sent > now) return;
      if (run->phase.load(std::memory_order_relaxed) != kMeasure) return;
      raw->latency.record(now - *sent);
      raw->received_measured.fetch_add(1, std::memory_order_relaxed);
    });
    setups.push_back(
        spawn_status(sub->client->get_executor(), connect_client(sub->client, setup.topic, w.qos)));
    subscribers.push_back(std::move(sub));
  }
  if (error.empty()) {
    if (auto s = wait_all(setups, Clock::now() + kSetupLimit, "subscriber setup"); !s) {
      error = s.error().message;
    }
  }
  setups.clear();
  const std::size_t packet_bytes = w.payload_bytes + 64;  // + topic and header, roughly
  for (std::size_t i = 0; error.empty() && i < prepared->publishers.size(); ++i) {
    const auto& setup = prepared->publishers[i];
    auto pub = std::make_unique<Publisher>();
    auto o = client_options(setup);
    o.max_inflight = w.inflight;
    // QoS 0 has no acks: the outbound buffer bound is what limits a publisher to about
    // `inflight` unwritten messages.
    if (w.qos == 0) o.max_outbound_bytes = std::max<std::size_t>(w.inflight * packet_bytes, 1024);
    auto client = net::MqttClient::create(asio::make_strand(io), o);
    if (!client) {
      error = client.error().message;
      break;
    }
    pub->client = *client;
    pub->topic = setup.topic;
    setups.push_back(spawn_status(pub->client->get_executor(), connect_client(pub->client, {}, 0)));
    publishers.push_back(std::move(pub));
  }
  if (error.empty()) {
    if (auto s = wait_all(setups, Clock::now() + kSetupLimit, "publisher setup"); !s) {
      error = s.error().message;
    }
  }

  if (error.empty()) {
    for (auto& pub : publishers) {
      asio::co_spawn(pub->client->get_executor(),
                     publish_loop(pub.get(), &shared, w.payload_bytes, w.qos,
                                  rate / static_cast<double>(w.publishers)),
                     [](std::exception_ptr e) {
                       if (e) std::rethrow_exception(e);
                     });
    }
    const auto t_start = Clock::now();
    const auto t_measure = t_start + std::chrono::duration_cast<Clock::duration>(
                                         std::chrono::duration<double>(options.warmup_s));
    const auto t_end = t_measure + std::chrono::duration_cast<Clock::duration>(
                                       std::chrono::duration<double>(options.duration_s));
    Clock::time_point measure_began{};
    std::optional<double> broker_cpu_begin;
    double own_cpu_begin = 0;
    auto last_report = t_start;
    std::uint64_t last_received = 0;
    for (;;) {
      const auto now = Clock::now();
      if (shared.phase.load() == kWarmup && now >= t_measure) {
        broker_cpu_begin = child->cpu_seconds();
        own_cpu_begin = own_cpu_seconds();
        measure_began = Clock::now();
        shared.phase.store(kMeasure);
      }
      if (now >= t_end) break;
      if (auto kib = child->rss_kib()) {
        result.rss_max_kib = std::max(result.rss_max_kib.value_or(0), *kib);
      }
      if (!child->running()) {
        shared.first_error.set(fmt::format("broker {} during the run; log:\n{}",
                                           child->exit_description(),
                                           tail_of_file(prepared->log_path)));
      }
      if (!shared.first_error.text().empty()) break;
      if (now - last_report >= 1s) {
        std::uint64_t received = 0;
        for (auto& s : subscribers) received += s->received_total.load(std::memory_order_relaxed);
        const double delivered_rate =
            static_cast<double>(received - last_received) / seconds_between(last_report, now);
        progress(fmt::format("{}: {} t={:.0f}s delivered {} ({:.0f} msg/s)", label,
                             shared.phase.load() == kWarmup ? "warm-up" : "measure",
                             seconds_between(t_start, now), received, delivered_rate));
        last_report = now;
        last_received = received;
      }
      std::this_thread::sleep_for(kSampleEvery);
    }
    const auto measure_ended = Clock::now();
    shared.phase.store(kDone);
    const auto broker_cpu_end = child->cpu_seconds();
    const double own_cpu_end = own_cpu_seconds();
    shared.stop.store(true);
    error = shared.first_error.text();
    if (error.empty() && measure_began == Clock::time_point{}) error = "run ended before measuring";
    if (error.empty()) {
      result.window_s = seconds_between(measure_began, measure_ended);
      if (broker_cpu_begin && broker_cpu_end) {
        result.broker_cpu_s = *broker_cpu_end - *broker_cpu_begin;
        result.broker_cpu_percent = 100.0 * *result.broker_cpu_s / result.window_s;
      }
      result.bench_cpu_percent = 100.0 * (own_cpu_end - own_cpu_begin) / result.window_s;
    }
  }

  // Teardown: DISCONNECT everyone, then force-close whatever did not finish in time.
  std::vector<std::future<Status>> goodbyes;
  auto say_goodbye = [&goodbyes](const std::shared_ptr<net::MqttClient>& client) {
    if (client) goodbyes.push_back(spawn_status(client->get_executor(), disconnect_client(client)));
  };
  for (auto& p : publishers) say_goodbye(p->client);
  for (auto& s : subscribers) say_goodbye(s->client);
  static_cast<void>(wait_all(goodbyes, Clock::now() + kTeardownLimit, "disconnect"));
  for (auto& p : publishers) {
    if (p->client) p->client->close();
  }
  for (auto& s : subscribers) {
    if (s->client) s->client->close();
  }
  guard.reset();
  // The loops end once their connections close; a stuck one must not hang the bench.
  std::thread watchdog([&io] {
    for (int i = 0; i < 40 && !io.stopped(); ++i) std::this_thread::sleep_for(50ms);
    io.stop();
  });
  for (auto& t : threads) t.join();
  watchdog.join();
  child->stop();

  if (!error.empty()) {
    result.error = error;
    return result;
  }
  for (auto& s : subscribers) {
    result.received += s->received_measured.load();
    result.latency.merge(s->latency);
  }
  for (auto& p : publishers) result.sent += p->sent_measured.load();
  return result;
}

// ---------------------------------------------------------------------------------------------
// Report

std::string with_commas(double value) {
  auto n = static_cast<long long>(value + 0.5);
  std::string digits = std::to_string(n);
  std::string out;
  int count = 0;
  for (auto it = digits.rbegin(); it != digits.rend(); ++it) {
    if (count > 0 && count % 3 == 0 && *it != '-') out.insert(out.begin(), ',');
    out.insert(out.begin(), *it);
    ++count;
  }
  return out;
}

// An error for a table cell: one line, bounded.
std::string one_line(std::string text) {
  std::replace(text.begin(), text.end(), '\n', ' ');
  constexpr std::size_t kMax = 160;
  if (text.size() > kMax) text = text.substr(0, kMax) + "...";
  return text;
}

double us(std::uint64_t ns) { return static_cast<double>(ns) / 1000.0; }

// The broker's CPU time (user + system, all threads) per delivered message.
double cpu_us_per_msg(const RunResult& r) {
  return r.broker_cpu_s && r.received > 0 ? 1e6 * *r.broker_cpu_s / static_cast<double>(r.received)
                                          : 0.0;
}
double mib(std::uint64_t kib) { return static_cast<double>(kib) / 1024.0; }

nlohmann::json run_json(const RunResult& r, const Workload& w) {
  nlohmann::json j;
  if (!r.error.empty()) {
    j["error"] = r.error;
    return j;
  }
  const double delivered = static_cast<double>(r.received) / r.window_s;
  const double sent = static_cast<double>(r.sent) / r.window_s;
  j["msgs_per_s"] = std::round(delivered * 10) / 10;
  j["sent_per_s"] = std::round(sent * 10) / 10;
  j["delivery_ratio"] =
      r.sent == 0 ? 0.0
                  : static_cast<double>(r.received) /
                        (static_cast<double>(r.sent) * static_cast<double>(w.subscribers));
  j["received"] = r.received;
  j["window_s"] = r.window_s;
  j["p50_us"] = us(r.latency.quantile(0.50));
  j["p99_us"] = us(r.latency.quantile(0.99));
  j["max_us"] = us(r.latency.max());
  j["rss_idle_kib"] = r.rss_idle_kib ? nlohmann::json(*r.rss_idle_kib) : nlohmann::json();
  j["rss_load_max_kib"] = r.rss_max_kib ? nlohmann::json(*r.rss_max_kib) : nlohmann::json();
  j["broker_cpu_percent"] = r.broker_cpu_percent
                                ? nlohmann::json(std::round(*r.broker_cpu_percent * 10) / 10)
                                : nlohmann::json();
  j["bench_cpu_percent"] = std::round(r.bench_cpu_percent * 10) / 10;
  j["broker_cpu_us_per_msg"] = r.broker_cpu_s && r.received > 0
                                   ? nlohmann::json(std::round(cpu_us_per_msg(r) * 100) / 100)
                                   : nlohmann::json();
  j["paced_msgs_per_s"] = r.paced_rate > 0 ? nlohmann::json(r.paced_rate) : nlohmann::json();
  j["startup_ms"] = r.startup_ms;
  j["error"] = nullptr;
  return j;
}

Workload workload(std::string name, int publishers, int subscribers, std::uint8_t qos,
                  std::size_t inflight, bool tls = false, std::string paced_of = {}) {
  Workload w;
  w.name = std::move(name);
  w.publishers = publishers;
  w.subscribers = subscribers;
  w.qos = qos;
  w.inflight = inflight;
  w.tls = tls;
  w.paced_of = std::move(paced_of);
  return w;
}

}  // namespace

std::vector<Workload> default_suite(std::size_t inflight) {
  return {
      workload("1to1-q1-256B", 1, 1, 1, inflight),
      workload("4to1-q1-256B", 4, 1, 1, inflight),
      workload("1to4-q1-256B", 1, 4, 1, inflight),
      workload("1to1-q0-256B", 1, 1, 0, inflight),
  };
}

std::vector<Workload> full_suite(std::size_t inflight) {
  auto suite = default_suite(inflight);
  const std::vector<Workload> more = {
      workload("1to1-q1-tls-100", 1, 1, 1, 100, true),
      workload("10to1-q1-256B", 10, 1, 1, inflight),
      workload("100to1-q1-256B", 100, 1, 1, inflight),
      workload("1to10-q1-256B", 1, 10, 1, inflight),
      workload("1to100-q1-256B", 1, 100, 1, inflight),
      workload("1to1-q1-half", 1, 1, 1, inflight, false, "1to1-q1-256B"),
      workload("1to1-q1-tls-100-half", 1, 1, 1, 100, true, "1to1-q1-tls-100"),
  };
  suite.insert(suite.end(), more.begin(), more.end());
  return suite;
}

std::optional<std::vector<Workload>> suite_by_name(const std::string& name, std::size_t inflight) {
  if (name == "default") return default_suite(inflight);
  if (name == "full") return full_suite(inflight);
  return std::nullopt;
}

int run_mqtt_bench(const MqttBenchOptions& options) {
  std::vector<TargetKind> targets;
  if (options.run_cairn) targets.push_back(TargetKind::kCairn);
  if (options.run_mosquitto) targets.push_back(TargetKind::kMosquitto);

  auto made = make_work_dir("cairn-bench");
  if (!made) {
    std::fprintf(stderr, "cairn-bench: %s\n", made.error().message.c_str());
    return 1;
  }
  const std::filesystem::path work = *made;

  bool all_ok = true;
  std::map<TargetKind, StartupFigures> startup;
  for (auto kind : targets) {
    progress(fmt::format("{}: measuring start-up ({} starts)", to_string(kind),
                         options.startup_samples));
    startup[kind] = measure_startup(kind, options,
                                    (work / (std::string(to_string(kind)) + "-startup")).string());
    if (!startup[kind].error.empty()) {
      all_ok = false;
      progress(fmt::format("{}: cannot start: {}", to_string(kind), startup[kind].error));
    }
  }

  std::vector<std::map<TargetKind, RunResult>> results(options.workloads.size());
  for (std::size_t i = 0; i < options.workloads.size(); ++i) {
    const auto& w = options.workloads[i];
    for (auto kind : targets) {
      if (!startup[kind].error.empty()) {
        results[i][kind].error = "not run: broker does not start: " + startup[kind].error;
        continue;
      }
      double rate = w.rate;
      if (!w.paced_of.empty()) {
        // The same rate for both brokers: a fraction of what mosquitto delivered saturated.
        const RunResult* saturated = nullptr;
        int saturated_subscribers = 1;
        for (std::size_t k = 0; k < i; ++k) {
          if (options.workloads[k].name == w.paced_of && results[k].count(TargetKind::kMosquitto)) {
            saturated = &results[k][TargetKind::kMosquitto];
            saturated_subscribers = options.workloads[k].subscribers;
          }
        }
        if (saturated == nullptr || !saturated->error.empty() || saturated->received == 0) {
          results[i][kind].error = "not run: needs mosquitto's saturated result of " + w.paced_of;
          all_ok = false;
          continue;
        }
        rate = w.pace_fraction * static_cast<double>(saturated->received) / saturated->window_s /
               static_cast<double>(saturated_subscribers);
      }
      progress(fmt::format(
          "{} {}: {} pub -> {} sub, QoS {}, {} B, in-flight {}{}{}; warm-up {} s, "
          "measure {} s",
          to_string(kind), w.name, w.publishers, w.subscribers, w.qos, w.payload_bytes, w.inflight,
          w.tls ? ", TLS" : "", rate > 0 ? fmt::format(", paced at {:.0f} msg/s", rate) : "",
          options.warmup_s, options.duration_s));
      results[i][kind] = run_workload(
          kind, w, options, (work / fmt::format("{}-{}", to_string(kind), w.name)).string(), rate);
      results[i][kind].paced_rate = rate;
      if (!results[i][kind].error.empty()) {
        all_ok = false;
        progress(fmt::format("{} {}: FAILED: {}", to_string(kind), w.name, results[i][kind].error));
      }
    }
  }

  // Human report.
  std::printf(
      "cairn-bench mqtt: %zu workload(s); warm-up %.1f s + measured %.1f s each; "
      "client threads %d; host CPUs %u\n",
      options.workloads.size(), options.warmup_s, options.duration_s, options.threads,
      std::thread::hardware_concurrency());
  std::printf("\n%-10s %12s %22s %13s\n", "target", "startup ms", "(all starts, ms)",
              "idle RSS MiB");
  for (auto kind : targets) {
    const auto& f = startup[kind];
    if (!f.error.empty()) {
      std::printf("%-10s  FAILED: %s\n", std::string(to_string(kind)).c_str(),
                  one_line(f.error).c_str());
      continue;
    }
    std::string all;
    for (double ms : f.samples_ms) all += fmt::format("{:.1f} ", ms);
    std::printf("%-10s %12.1f %22s %13.1f\n", std::string(to_string(kind)).c_str(), f.best_ms(),
                all.c_str(), f.idle_rss_kib ? mib(*f.idle_rss_kib) : 0.0);
  }
  std::printf("\n%-20s %-10s %12s %12s %7s %9s %9s %10s %9s %8s %10s %8s\n", "workload", "target",
              "delivered/s", "sent/s", "deliv%", "p50 us", "p99 us", "max us", "RSS MiB",
              "brk CPU%", "CPU us/msg", "cli CPU%");
  for (std::size_t i = 0; i < options.workloads.size(); ++i) {
    const auto& w = options.workloads[i];
    for (auto kind : targets) {
      const auto& r = results[i][kind];
      const std::string name = std::string(to_string(kind));
      if (!r.error.empty()) {
        std::printf("%-20s %-10s FAILED: %s\n", w.name.c_str(), name.c_str(),
                    one_line(r.error).c_str());
        continue;
      }
      const double delivered = static_cast<double>(r.received) / r.window_s;
      const double sent = static_cast<double>(r.sent) / r.window_s;
      const double ratio = r.sent == 0 ? 0
                                       : 100.0 * static_cast<double>(r.received) /
                                             (static_cast<double>(r.sent) * w.subscribers);
      std::printf("%-20s %-10s %12s %12s %7.1f %9.0f %9.0f %10.0f %9.1f %8.0f %10.2f %8.0f\n",
                  w.name.c_str(), name.c_str(), with_commas(delivered).c_str(),
                  with_commas(sent).c_str(), ratio, us(r.latency.quantile(0.5)),
                  us(r.latency.quantile(0.99)), us(r.latency.max()),
                  r.rss_max_kib ? mib(*r.rss_max_kib) : 0.0, r.broker_cpu_percent.value_or(0),
                  cpu_us_per_msg(r), r.bench_cpu_percent);
    }
    if (results[i].count(TargetKind::kCairn) && results[i].count(TargetKind::kMosquitto)) {
      const auto& c = results[i][TargetKind::kCairn];
      const auto& m = results[i][TargetKind::kMosquitto];
      if (c.error.empty() && m.error.empty() && m.received > 0) {
        std::printf("%-20s %-10s %11.2fx\n", "", "ratio c/m",
                    (static_cast<double>(c.received) / c.window_s) /
                        (static_cast<double>(m.received) / m.window_s));
      }
    }
  }
  std::printf("\n");

  // Machine report: one JSON object on the last line.
  nlohmann::json report;
  report["bench"] = "mqtt";
  report["ok"] = all_ok;
  report["config"] = {
      {"warmup_s", options.warmup_s},       {"duration_s", options.duration_s},
      {"client_threads", options.threads},  {"startup_samples", options.startup_samples},
      {"cairn_fsync", options.cairn_fsync}, {"host_cpus", std::thread::hardware_concurrency()}};
  nlohmann::json processes = nlohmann::json::object();
  for (auto kind : targets) {
    const auto& f = startup[kind];
    nlohmann::json p;
    if (f.error.empty()) {
      p["startup_ms"] = f.best_ms();
      p["startup_samples_ms"] = f.samples_ms;
      p["idle_rss_kib"] = f.idle_rss_kib ? nlohmann::json(*f.idle_rss_kib) : nlohmann::json();
      p["error"] = nullptr;
    } else {
      p["error"] = f.error;
    }
    processes[std::string(to_string(kind))] = p;
  }
  report["processes"] = processes;
  nlohmann::json workloads = nlohmann::json::array();
  for (std::size_t i = 0; i < options.workloads.size(); ++i) {
    const auto& w = options.workloads[i];
    nlohmann::json j = {
        {"name", w.name}, {"publishers", w.publishers},       {"subscribers", w.subscribers},
        {"qos", w.qos},   {"payload_bytes", w.payload_bytes}, {"inflight", w.inflight},
        {"tls", w.tls}};
    nlohmann::json per_target = nlohmann::json::object();
    for (auto kind : targets)
      per_target[std::string(to_string(kind))] = run_json(results[i][kind], w);
    j["results"] = per_target;
    j["throughput_ratio_cairn_mosquitto"] = nullptr;
    if (results[i].count(TargetKind::kCairn) && results[i].count(TargetKind::kMosquitto)) {
      const auto& c = results[i][TargetKind::kCairn];
      const auto& m = results[i][TargetKind::kMosquitto];
      if (c.error.empty() && m.error.empty() && m.received > 0) {
        j["throughput_ratio_cairn_mosquitto"] =
            std::round(1000.0 * (static_cast<double>(c.received) / c.window_s) /
                       (static_cast<double>(m.received) / m.window_s)) /
            1000.0;
      }
    }
    workloads.push_back(j);
  }
  report["workloads"] = workloads;
  std::printf("%s\n", report.dump().c_str());
  std::fflush(stdout);

  finish_work_dir(work, options.keep_dir);
  return all_ok ? 0 : 1;
}

}  // namespace cairn::bench
