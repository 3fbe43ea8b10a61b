#include "bench/link_bench.hpp"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>  // Boost 1.74 + gcc 12: must precede the Asio headers.
#include <vector>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "bench/histogram.hpp"
#include "bench/process.hpp"
#include "core/clock.hpp"
#include "core/crypto.hpp"
#include "hub/iothub_topics.hpp"
#include "net/http.hpp"
#include "net/mqtt_client.hpp"
#include "net/service_client.hpp"
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

namespace cairn::bench {

namespace {

namespace asio = boost::asio;
using asio::awaitable;
using Clock = std::chrono::steady_clock;
using nlohmann::json;
using namespace std::chrono_literals;

// cairn-cloud keeps 127.0.0.2 (its default), cairnd 127.0.0.1: the two look like two hosts.
constexpr const char* kCloudAddress = "127.0.0.2";
constexpr const char* kEdgeAddress = "127.0.0.1";
constexpr const char* kEdgeDevice = "bench-edge";
constexpr const char* kDirectDevice = "bench-direct";
constexpr const char* kLoadModule = "load";
constexpr const char* kTwinModule = "twin";
constexpr const char* kApiVersion = "2021-04-12";
constexpr std::int64_t kTokenValiditySeconds = 4 * 3600;  // longer than any run

constexpr auto kStartLimit = 20s;    // spawn -> accepting connections
constexpr auto kSetupLimit = 15s;    // identities, MQTT connects, links coming up
constexpr auto kStopGrace = 10s;     // SIGTERM -> SIGKILL
constexpr auto kPoll = 5ms;          // messages file and counters
constexpr auto kAnswerLimit = 10s;   // one twin round trip
constexpr auto kProgressEvery = 1s;  // progress lines on stderr

// ---------------------------------------------------------------------------------------------
// Small helpers

std::uint64_t ns_between(Clock::time_point a, Clock::time_point b) {
  const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(b - a).count();
  return ns < 0 ? 0 : static_cast<std::uint64_t>(ns);
}

std::string with_commas(double value) {
  auto n = static_cast<long long>(std::llround(value));
  std::string digits = std::to_string(n < 0 ? -n : n);
  std::string out;
  for (std::size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return n < 0 ? "-" + out : out;
}

// An error for a table cell: one line, bounded.
std::string one_line(std::string text) {
  std::replace(text.begin(), text.end(), '\n', ' ');
  constexpr std::size_t kMax = 200;
  if (text.size() > kMax) text = text.substr(0, kMax) + "...";
  return text;
}

double round_to(double value, double step) { return std::round(value / step) * step; }

json optional_number(const std::optional<double>& v, double step = 0.1) {
  return v ? json(round_to(*v, step)) : json();
}

// ---------------------------------------------------------------------------------------------
// Sockets on a given loopback address (process.hpp's helpers know 127.0.0.1 only).

sockaddr_in address_of(const char* ip, std::uint16_t port) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  ::inet_pton(AF_INET, ip, &addr.sin_addr);
  return addr;
}

// `count` distinct ports that were free on `ip` a moment ago: all are held open until every one
// is chosen, so the kernel cannot hand out the same port twice.
Result<std::vector<std::uint16_t>> free_ports(const char* ip, std::size_t count) {
  std::vector<int> fds;
  std::vector<std::uint16_t> ports;
  std::string error;
  for (std::size_t i = 0; i < count && error.empty(); ++i) {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      error = std::string("socket: ") + std::strerror(errno);
      break;
    }
    fds.push_back(fd);
    sockaddr_in addr = address_of(ip, 0);
    socklen_t len = sizeof addr;
    if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      error = fmt::format("bind {}:0: {}", ip, std::strerror(errno));
      break;
    }
    ports.push_back(ntohs(addr.sin_port));
  }
  for (int fd : fds) ::close(fd);
  if (!error.empty()) return make_error(errc::io_error, error);
  return ports;
}

bool accepting(const char* ip, std::uint16_t port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_in addr = address_of(ip, port);
  const bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  ::close(fd);
  return ok;
}

// Polls until every port accepts a TCP connect; returns the time since `started`.
Result<double> wait_accepting(ChildProcess& process, const char* ip,
                              const std::vector<std::uint16_t>& ports, Clock::time_point started,
                              const std::string& what, const std::string& log_path) {
  const auto deadline = started + kStartLimit;
  std::size_t next = 0;
  for (;;) {
    while (next < ports.size() && accepting(ip, ports[next])) ++next;
    if (next == ports.size()) return seconds_between(started, Clock::now()) * 1000.0;
    if (!process.running()) {
      return make_error(errc::unavailable,
                        fmt::format("{} {} before accepting connections; log:\n{}", what,
                                    process.exit_description(), tail_of_file(log_path)));
    }
    if (Clock::now() > deadline) {
      return make_error(errc::timeout,
                        fmt::format("{}: nothing accepts on {}:{} after {} s; log:\n{}", what, ip,
                                    ports[next], kStartLimit.count(), tail_of_file(log_path)));
    }
    std::this_thread::sleep_for(1ms);
  }
}

// ---------------------------------------------------------------------------------------------
// The cloud's REST API and cairnd's management socket.

struct CloudService {
  net::ServiceClient client;

  // The JSON body of a 2xx answer; anything else is an error quoting the answer.
  Result<json> call(const std::string& method, const std::string& target,
                    const std::string& body = "") const {
    auto r = client.request(method, target, body);
    if (!r) {
      return make_error(r.error().code,
                        fmt::format("cloud {} {}: {}", method, target, r.error().message));
    }
    if (r->status < 200 || r->status >= 300) {
      return make_error(errc::io_error, fmt::format("cloud {} {}: HTTP {} {}", method, target,
                                                    r->status, one_line(r->body)));
    }
    if (r->body.empty()) return json::object();
    auto j = json::parse(r->body, nullptr, false);
    if (j.is_discarded()) {
      return make_error(errc::io_error,
                        fmt::format("cloud {} {}: the answer is not JSON", method, target));
    }
    return j;
  }
};

struct CloudCounts {
  std::int64_t stored = 0;
  std::int64_t duplicates = 0;
};

Result<CloudCounts> cloud_counts(const CloudService& cloud) {
  auto j = cloud.call("GET", "/cairn/status");
  if (!j) return std::move(j).error();
  CloudCounts c;
  try {
    c.stored = j->at("telemetry").at("stored").get<std::int64_t>();
    c.duplicates = j->at("telemetry").at("duplicates").get<std::int64_t>();
  } catch (const json::exception& e) {
    return make_error(errc::io_error,
                      std::string("GET /cairn/status: unexpected shape: ") + e.what());
  }
  return c;
}

// The service connection string cairn-cloud prints on stdout (which goes to its log).
Result<CloudService> read_service_credentials(const std::string& log_path) {
  const auto deadline = Clock::now() + kStartLimit;
  for (;;) {
    std::ifstream in(log_path);
    std::string line, found;
    while (std::getline(in, line)) {
      if (line.find("SharedAccessKeyName=") != std::string::npos) found = line;
    }
    if (!found.empty()) {
      auto client = net::ServiceClient::from_connection_string(found);
      if (!client) {
        return make_error(errc::invalid_argument, client.error().message + ": '" + found + "'");
      }
      return CloudService{*std::move(client)};
    }
    if (Clock::now() > deadline) {
      return make_error(errc::timeout, "cairn-cloud printed no service connection string; log:\n" +
                                           tail_of_file(log_path));
    }
    std::this_thread::sleep_for(10ms);
  }
}

Result<json> mgmt_call(const std::string& socket, const std::string& method,
                       const std::string& target, const std::string& body = "") {
  net::HttpRequest request;
  request.method = method;
  request.target = target;
  request.body = body;
  auto r = net::unix_http_request(socket, request, 10);
  if (!r) return std::move(r).error();
  if (r->status < 200 || r->status >= 300) {
    return make_error(errc::io_error, fmt::format("cairnd {} {}: HTTP {} {}", method, target,
                                                  r->status, one_line(r->body)));
  }
  auto j = json::parse(r->body, nullptr, false);
  if (j.is_discarded()) return make_error(errc::io_error, "cairnd answered something not JSON");
  return j;
}

struct Credentials {
  std::string client_id;
  std::string username;
  std::string password;
};

// Creates MODULE's identity in cairnd (management socket) and signs a token from its
// connection string. The socket may come up a moment after the MQTT port: retry briefly.
Result<Credentials> module_credentials(const std::string& socket, const std::string& module) {
  const auto deadline = Clock::now() + kSetupLimit;
  Result<json> created = make_error(errc::internal, "not run");
  for (;;) {
    created = mgmt_call(socket, "POST", "/identities", json{{"moduleId", module}}.dump());
    if (created || Clock::now() > deadline) break;
    std::this_thread::sleep_for(50ms);
  }
  if (!created) return std::move(created).error();
  auto fields = net::parse_connection_string(created->value("connectionString", std::string()));
  for (const char* key : {"HostName", "DeviceId", "ModuleId", "SharedAccessKey"}) {
    if (fields[key].empty()) {
      return make_error(errc::invalid_argument,
                        fmt::format("cairnd's connection string for {} lacks {}", module, key));
    }
  }
  const auto& host = fields["HostName"];
  const std::string client_id = fields["DeviceId"] + "/" + fields["ModuleId"];
  auto token = crypto::make_sas_token(
      host + "/devices/" + fields["DeviceId"] + "/modules/" + fields["ModuleId"],
      fields["SharedAccessKey"], now_unix_s() + kTokenValiditySeconds);
  if (!token) return std::move(token).error();
  return Credentials{client_id, host + "/" + client_id + "/?api-version=" + kApiVersion,
                     std::move(*token)};
}

// The state of cairnd's upstream link of `client_id` ("online", "backoff", ...; "" if none).
Result<std::string> link_state(const std::string& socket, const std::string& client_id) {
  auto status = mgmt_call(socket, "GET", "/status");
  if (!status) return std::move(status).error();
  const auto& links = (*status)["upstream"]["links"];
  if (!links.is_object() || !links.contains(client_id)) return std::string();
  return links[client_id].value("state", std::string());
}

Status wait_link(const std::string& socket, const std::string& client_id, bool online) {
  const auto deadline = Clock::now() + kSetupLimit;
  std::string last;
  for (;;) {
    auto state = link_state(socket, client_id);
    if (state) {
      last = *state;
      if ((last == "online") == online) return {};
    }
    if (Clock::now() > deadline) {
      return make_error(errc::timeout,
                        fmt::format("cairnd's upstream link {} did not go {} (state '{}')",
                                    client_id, online ? "online" : "offline", last));
    }
    std::this_thread::sleep_for(20ms);
  }
}

// ---------------------------------------------------------------------------------------------
// The cloud's messages file: one JSON line per stored message, written after the commit.

class MessagesTail {
 public:
  explicit MessagesTail(std::string path) : path_(std::move(path)) {}
  ~MessagesTail() {
    if (fd_ >= 0) ::close(fd_);
  }
  MessagesTail(const MessagesTail&) = delete;
  MessagesTail& operator=(const MessagesTail&) = delete;

  // Reads what was appended since the last call; `seen` gets each stored message's id.
  void poll(const std::function<void(std::string_view)>& seen) {
    if (fd_ < 0) {
      fd_ = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
      if (fd_ < 0) return;  // not created yet
    }
    char buf[64 * 1024];
    for (;;) {
      const ssize_t n = ::read(fd_, buf, sizeof buf);
      if (n <= 0) break;
      partial_.append(buf, static_cast<std::size_t>(n));
    }
    std::size_t start = 0;
    for (;;) {
      const auto end = partial_.find('\n', start);
      if (end == std::string::npos) break;
      const std::string_view line(partial_.data() + start, end - start);
      static constexpr std::string_view kKey = "\"messageId\":\"";
      if (auto at = line.find(kKey); at != std::string_view::npos) {
        auto id = line.substr(at + kKey.size());
        seen(id.substr(0, id.find('"')));
      }
      start = end + 1;
    }
    partial_.erase(0, start);
  }

 private:
  std::string path_;
  int fd_ = -1;
  std::string partial_;  // an incomplete last line
};

// Which of the messages "{prefix}{0..n-1}" the cloud stored, and when.
struct StoredTracker {
  StoredTracker(std::string p, std::size_t n) : prefix(std::move(p)), seen(n, 0) {}

  void operator()(std::string_view id) {
    if (!id.starts_with(prefix)) return;
    id.remove_prefix(prefix.size());
    std::size_t index = 0;
    for (char c : id) {
      if (c < '0' || c > '9') return;
      index = index * 10 + static_cast<std::size_t>(c - '0');
    }
    if (id.empty() || index >= seen.size()) return;
    const auto now = Clock::now();
    if (seen[index] != 0) {
      ++repeats;
      return;
    }
    seen[index] = 1;
    if (unique == 0) first = now;
    last = now;
    ++unique;
  }
  bool complete() const { return unique == seen.size(); }

  std::string prefix;
  std::vector<std::uint8_t> seen;
  std::size_t unique = 0;
  std::size_t repeats = 0;  // the same id twice in the file (the sink should prevent that)
  Clock::time_point first{};
  Clock::time_point last{};
};

// What the cloud counted since `before`: messages stored, and duplicates both the cloud saw
// and the bench's tracker saw. `R` is a phase result with those two fields.
template <typename R>
Status count_since(const CloudService& cloud, const CloudCounts& before,
                   const StoredTracker& tracker, R& r) {
  auto after = cloud_counts(cloud);
  if (!after) return std::move(after).error();
  r.stored_count_delta = after->stored - before.stored;
  r.duplicates =
      (after->duplicates - before.duplicates) + static_cast<std::int64_t>(tracker.repeats);
  return {};
}

// ---------------------------------------------------------------------------------------------
// MQTT clients, all on the bench's one I/O thread.

std::future<Status> spawn_status(asio::io_context& io, std::function<awaitable<Status>()> body) {
  auto promise = std::make_shared<std::promise<Status>>();
  auto future = promise->get_future();
  asio::co_spawn(io, std::move(body), [promise](std::exception_ptr e, Status s) {
    if (e) s = make_error(errc::internal, "exception in a client coroutine");
    promise->set_value(std::move(s));
  });
  return future;
}

Status wait_future(std::future<Status>& f, Clock::duration limit, std::string_view what) {
  if (f.wait_for(limit) != std::future_status::ready) {
    return make_error(errc::timeout, std::string(what) + " timed out");
  }
  auto s = f.get();
  if (!s) return make_error(s.error().code, std::string(what) + ": " + s.error().message);
  return {};
}

// What a twin client sees: answers to its requests and desired patches.
// The reported-patch fields belong to the I/O thread; `desired` is shared with the main
// thread under `mu`.
struct TwinProbe {
  explicit TwinProbe(asio::io_context& io) : answered_signal(io) {}

  asio::steady_timer answered_signal;
  std::string waiting_rid;
  bool answered = false;
  int answer_status = 0;

  std::mutex mu;
  std::condition_variable desired_cv;
  std::map<std::int64_t, Clock::time_point> desired;  // bench seq -> arrival

  void on_message(const mqtt::Publish& p) {
    const auto now = Clock::now();
    auto topic = hub::parse_cloud_topic(p.topic);
    if (!topic) return;
    if (topic->kind == hub::CloudTopic::Kind::twin_response) {
      if (topic->rid != waiting_rid) return;
      answered = true;
      answer_status = topic->status;
      answered_signal.cancel();
      return;
    }
    if (topic->kind == hub::CloudTopic::Kind::desired_patch) {
      auto patch = json::parse(p.payload, nullptr, false);
      if (!patch.is_object()) return;
      auto bench = patch.find("bench");
      if (bench == patch.end() || !bench->is_object() || !bench->contains("seq")) return;
      const auto& seq = (*bench)["seq"];
      if (!seq.is_number_integer()) return;
      std::lock_guard lock(mu);
      desired.emplace(seq.get<std::int64_t>(), now);
      desired_cv.notify_all();
    }
  }
};

struct Client {
  std::shared_ptr<net::MqttClient> mqtt;
  std::unique_ptr<TwinProbe> twin;  // for clients that subscribe to twin topics
};

awaitable<Status> connect_client(std::shared_ptr<net::MqttClient> client,
                                 std::vector<std::string> filters) {
  auto connack = co_await client->connect();
  if (!connack) co_return connack.error();
  for (auto& f : filters) {
    auto granted = co_await client->subscribe(std::move(f), 0);
    if (!granted) co_return granted.error();
  }
  co_return Status{};
}

// ---------------------------------------------------------------------------------------------
// Figures

struct CpuMark {
  Clock::time_point at;
  std::optional<double> cairnd;
  std::optional<double> cloud;
  double own = 0;
};

std::optional<double> cpu_percent(const std::optional<double>& begin,
                                  const std::optional<double>& end, double seconds) {
  if (!begin || !end || seconds <= 0) return std::nullopt;
  return 100.0 * (*end - *begin) / seconds;
}

struct ThroughputResult {
  std::string error;
  std::size_t messages = 0;
  double acked_s = 0;   // first publish -> last PUBACK from the first hop
  double stored_s = 0;  // first publish -> last message stored by the cloud
  std::size_t stored = 0;
  std::int64_t duplicates = 0;
  std::int64_t stored_count_delta = 0;  // /cairn/status
  std::optional<double> cairnd_cpu, cloud_cpu;
  double bench_cpu = 0;

  double ingest_rate() const { return acked_s > 0 ? static_cast<double>(messages) / acked_s : 0; }
  double stored_rate() const { return stored_s > 0 ? static_cast<double>(messages) / stored_s : 0; }
};

struct DrainResult {
  std::string error;
  std::size_t messages = 0;
  double offline_ingest_s = 0;  // first publish -> last PUBACK from cairnd, cloud stopped
  std::optional<double> offline_cairnd_cpu;
  double cloud_stop_ms = 0;   // SIGTERM -> exited
  double cloud_start_ms = 0;  // spawn -> MQTT and REST ports accept
  double first_stored_s = 0;  // spawn -> first backlog message stored
  double all_stored_s = 0;    // spawn -> last backlog message stored
  std::size_t stored = 0;
  std::int64_t duplicates = 0;
  std::int64_t stored_count_delta = 0;
  std::optional<double> cairnd_cpu, cloud_cpu;  // from the cloud's spawn to the last message

  double drain_rate() const {
    const double s = all_stored_s - first_stored_s;
    return s > 0 && stored > 1 ? static_cast<double>(stored - 1) / s : 0;
  }
  double drain_rate_from_start() const {
    return all_stored_s > 0 ? static_cast<double>(stored) / all_stored_s : 0;
  }
};

struct LatencyResult {
  std::string error;
  LatencyHistogram latency;
  LatencyHistogram rest;  // desired patches: the REST PATCH call itself
  double total_s = 0;
};

// ---------------------------------------------------------------------------------------------
// The bench: processes, clients and the phases.

struct PublishRun {
  std::size_t target = 0;
  std::atomic<std::size_t> acked{0};
  std::atomic<std::int64_t> last_ack_ns{0};  // steady clock
  FirstError error;
};

// Publishes `run->target` QoS 1 messages "{topic_prefix}{i}", keeping the client's in-flight
// window full; PUBACKs are counted by the ack handlers.
awaitable<Status> publish_all(std::shared_ptr<net::MqttClient> client, std::string topic_prefix,
                              std::size_t payload_bytes, std::shared_ptr<PublishRun> run) {
  std::string payload(std::max<std::size_t>(payload_bytes, 1), 'x');
  for (std::size_t i = 0; i < run->target; ++i) {
    // Some variety, so nothing along the path can profit from identical bodies.
    payload[i % payload.size()] = static_cast<char>('a' + i % 26);
    net::MqttClient::AckHandler on_ack = [run](Status s) {
      if (!s) {
        run->error.set("a publish failed: " + s.error().message);
        return;
      }
      run->last_ack_ns.store(Clock::now().time_since_epoch().count());
      run->acked.fetch_add(1);
    };
    auto queued = co_await client->async_publish(topic_prefix + std::to_string(i), payload, 1,
                                                 false, std::move(on_ack));
    if (!queued) {
      run->error.set("publish: " + queued.error().message);
      co_return queued;
    }
  }
  co_return Status{};
}

class Bench {
 public:
  explicit Bench(const LinkBenchOptions& options) : o_(options) {}
  ~Bench() { teardown(); }
  Bench(const Bench&) = delete;
  Bench& operator=(const Bench&) = delete;

  Status setup(const std::filesystem::path& work);
  void teardown();

  ThroughputResult throughput_edge();
  ThroughputResult throughput_direct();
  LatencyResult reported_edge(std::optional<double>* sync_ms);
  LatencyResult reported_direct();
  LatencyResult desired_edge();
  LatencyResult desired_direct();
  DrainResult drain();

  double cloud_startup_ms() const { return cloud_startup_ms_; }
  double cairnd_startup_ms() const { return cairnd_startup_ms_; }
  std::optional<std::uint64_t> cairnd_rss_kib() const {
    return cairnd_ ? cairnd_->rss_kib() : std::nullopt;
  }
  std::optional<std::uint64_t> cloud_rss_kib() const {
    return cloud_ ? cloud_->rss_kib() : std::nullopt;
  }

 private:
  Result<double> start_cloud();
  Status start_cairnd();
  Result<Client> connect(const Credentials& who, bool to_cloud, bool twin_topics);
  CpuMark mark() const;
  Status processes_alive();
  ThroughputResult throughput(Client& client, const std::string& topic_prefix,
                              const std::string& id_prefix, const std::string& label);
  LatencyResult reported(Client& client, const std::string& label);
  LatencyResult desired(Client& client, const std::string& twin_path, const std::string& label);

  const LinkBenchOptions& o_;
  std::filesystem::path work_;
  std::string cloud_home_, cloud_log_, cairnd_home_, cairnd_log_, mgmt_socket_;
  std::uint16_t cloud_mqtt_port_ = 0, cloud_https_port_ = 0, cairnd_port_ = 0;
  std::vector<std::string> cloud_argv_;
  std::optional<ChildProcess> cloud_, cairnd_;
  double cloud_startup_ms_ = 0, cairnd_startup_ms_ = 0;
  CloudService service_;
  std::string ca_file_;
  std::string edge_key_;  // the edge device's primary key in the cloud registry
  Credentials load_, twin_, direct_;
  std::unique_ptr<MessagesTail> tail_;

  asio::io_context io_{1};
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> guard_;
  std::thread io_thread_;
  Client load_client_, twin_client_, direct_client_;
};

Result<double> Bench::start_cloud() {
  const auto started = Clock::now();
  auto child = ChildProcess::spawn(cloud_argv_, cloud_log_);
  if (!child) return std::move(child).error();
  cloud_.emplace(std::move(*child));
  return wait_accepting(*cloud_, kCloudAddress, {cloud_mqtt_port_, cloud_https_port_}, started,
                        "cairn-cloud", cloud_log_);
}

Status Bench::start_cairnd() {
  const std::filesystem::path home = cairnd_home_;
  const std::string config =
      fmt::format(R"(device_id = "{}"
hostname = "localhost"
[mqtt]
listen = "{}"
tls_port = 0
plain_port = {}
[http]
port = 0
[store]
fsync = {}
[upstream]
hostname = "{}"
port = {}
ca_file = "{}"
device_key = "{}"
min_backoff_ms = 100
max_backoff_secs = 1
)",
                  kEdgeDevice, kEdgeAddress, cairnd_port_, o_.fsync ? "true" : "false",
                  kCloudAddress, cloud_mqtt_port_, ca_file_, edge_key_);
  CAIRN_TRY(write_file(home / "config.toml", config));
  const auto manifest = work_ / "manifest.json";
  CAIRN_TRY(write_file(
      manifest,
      R"({"modulesContent":{"$edgeAgent":{"properties.desired":{"schemaVersion":"1.1",)"
      R"("runtime":{"type":"docker","settings":{}},"systemModules":{"edgeAgent":{"type":)"
      R"("docker","settings":{"image":"cairn","createOptions":""}},"edgeHub":{"type":)"
      R"("docker","status":"running","restartPolicy":"always","settings":{"image":"cairn",)"
      R"("createOptions":""}}},"modules":{}}},"$edgeHub":{"properties.desired":)"
      R"({"schemaVersion":"1.1","routes":{"up":"FROM /messages/* INTO $upstream"},)"
      R"("storeAndForwardConfiguration":{"timeToLiveSecs":7200}}}}})"));
  const auto started = Clock::now();
  auto child = ChildProcess::spawn({o_.cairnd_path, "--home", cairnd_home_, "--manifest",
                                    manifest.string(), "--log-level", "info"},
                                   cairnd_log_);
  if (!child) return std::move(child).error();
  cairnd_.emplace(std::move(*child));
  auto ready =
      wait_accepting(*cairnd_, kEdgeAddress, {cairnd_port_}, started, "cairnd", cairnd_log_);
  if (!ready) return std::move(ready).error();
  cairnd_startup_ms_ = *ready;
  return {};
}

Status Bench::setup(const std::filesystem::path& work) {
  work_ = work;
  cloud_home_ = (work / "cloud").string();
  cloud_log_ = (work / "cairn-cloud.log").string();
  cairnd_home_ = (work / "edge").string();
  cairnd_log_ = (work / "cairnd.log").string();
  mgmt_socket_ = cairnd_home_ + "/run/mgmt.sock";
  ca_file_ = cloud_home_ + "/certs/edge-ca.pem";
  std::error_code ec;
  std::filesystem::create_directories(cloud_home_, ec);
  if (!ec) std::filesystem::create_directories(cairnd_home_, ec);
  if (ec) return make_error(errc::io_error, "mkdir under " + work.string() + ": " + ec.message());

  auto cloud_ports = free_ports(kCloudAddress, 2);
  if (!cloud_ports) return std::move(cloud_ports).error();
  cloud_mqtt_port_ = (*cloud_ports)[0];
  cloud_https_port_ = (*cloud_ports)[1];
  auto edge_port = free_loopback_port();
  if (!edge_port) return std::move(edge_port).error();
  cairnd_port_ = *edge_port;

  // The same command line for the restart after the outage: same home, same ports.
  cloud_argv_ = {o_.cloud_path,
                 "--home",
                 cloud_home_,
                 "--listen",
                 kCloudAddress,
                 "--mqtt-port",
                 std::to_string(cloud_mqtt_port_),
                 "--https-port",
                 std::to_string(cloud_https_port_),
                 "--fsync",
                 o_.fsync ? "true" : "false",
                 "--log-level",
                 "info"};
  progress(fmt::format("starting cairn-cloud on {} (MQTT {}, REST {})", kCloudAddress,
                       cloud_mqtt_port_, cloud_https_port_));
  auto cloud_ms = start_cloud();
  if (!cloud_ms) return std::move(cloud_ms).error();
  cloud_startup_ms_ = *cloud_ms;
  auto service = read_service_credentials(cloud_log_);
  if (!service) return std::move(service).error();
  service_ = std::move(*service);
  service_.client.server.port = cloud_https_port_;
  service_.client.server.ca_file = ca_file_;
  // The audience of every token is the cloud's host name; ours connects by its address.
  if (service_.client.host != kCloudAddress) {
    return make_error(errc::invalid_argument,
                      fmt::format("cairn-cloud calls itself '{}', expected {}",
                                  service_.client.host, kCloudAddress));
  }
  tail_ = std::make_unique<MessagesTail>(cloud_home_ + "/data/messages.jsonl");

  // Identities in the cloud: the edge device (its key signs every module's upstream token)
  // and a plain device for the direct comparison.
  auto edge =
      service_.call("PUT", fmt::format("/devices/{}?api-version={}", kEdgeDevice, kApiVersion),
                    json{{"deviceId", kEdgeDevice}, {"capabilities", {{"iotEdge", true}}}}.dump());
  if (!edge) return std::move(edge).error();
  auto direct =
      service_.call("PUT", fmt::format("/devices/{}?api-version={}", kDirectDevice, kApiVersion),
                    json{{"deviceId", kDirectDevice}}.dump());
  if (!direct) return std::move(direct).error();
  std::string direct_key;
  try {
    edge_key_ = edge->at("authentication").at("symmetricKey").at("primaryKey").get<std::string>();
    direct_key =
        direct->at("authentication").at("symmetricKey").at("primaryKey").get<std::string>();
  } catch (const json::exception& e) {
    return make_error(
        errc::io_error,
        std::string("PUT /devices: no authentication.symmetricKey.primaryKey: ") + e.what());
  }
  auto direct_token =
      crypto::make_sas_token(fmt::format("{}/devices/{}", service_.client.host, kDirectDevice),
                             direct_key, now_unix_s() + kTokenValiditySeconds);
  if (!direct_token) return std::move(direct_token).error();
  direct_ = Credentials{
      kDirectDevice,
      fmt::format("{}/{}/?api-version={}", service_.client.host, kDirectDevice, kApiVersion),
      std::move(*direct_token)};

  progress(fmt::format("starting cairnd on {}:{} (store.fsync={})", kEdgeAddress, cairnd_port_,
                       o_.fsync));
  CAIRN_TRY(start_cairnd());
  auto load = module_credentials(mgmt_socket_, kLoadModule);
  if (!load) return std::move(load).error();
  load_ = std::move(*load);
  auto twin = module_credentials(mgmt_socket_, kTwinModule);
  if (!twin) return std::move(twin).error();
  twin_ = std::move(*twin);

  guard_.emplace(asio::make_work_guard(io_));
  io_thread_ = std::thread([this] { io_.run(); });

  // Connect everyone now; a module's upstream link comes up when the module connects.
  auto load_client = connect(load_, false, false);
  if (!load_client) return std::move(load_client).error();
  load_client_ = std::move(*load_client);
  auto twin_client = connect(twin_, false, true);
  if (!twin_client) return std::move(twin_client).error();
  twin_client_ = std::move(*twin_client);
  auto direct_client = connect(direct_, true, true);
  if (!direct_client) return std::move(direct_client).error();
  direct_client_ = std::move(*direct_client);
  CAIRN_TRY(wait_link(mgmt_socket_, load_.client_id, true));
  CAIRN_TRY(wait_link(mgmt_socket_, twin_.client_id, true));
  return {};
}

Result<Client> Bench::connect(const Credentials& who, bool to_cloud, bool twin_topics) {
  net::MqttClientOptions o;
  o.host = to_cloud ? kCloudAddress : kEdgeAddress;
  o.port = to_cloud ? cloud_mqtt_port_ : cairnd_port_;
  o.tls = to_cloud;
  o.ca_file = to_cloud ? ca_file_ : std::string();
  o.client_id = who.client_id;
  o.username = who.username;
  o.password = who.password;
  o.keep_alive_s = 60;
  o.max_inflight = o_.inflight;
  auto created = net::MqttClient::create(io_.get_executor(), o);
  if (!created) return std::move(created).error();
  Client c;
  c.mqtt = *created;
  std::vector<std::string> filters;
  if (twin_topics) {
    c.twin = std::make_unique<TwinProbe>(io_);
    filters.assign(std::begin(hub::kCloudTopicFilters), std::end(hub::kCloudTopicFilters));
  }
  TwinProbe* probe = c.twin.get();
  auto client = c.mqtt;
  auto done = spawn_status(io_, [client, probe, filters]() -> awaitable<Status> {
    // Set on the client's executor, before any delivery can arrive.
    client->set_message_handler([probe](mqtt::Publish p) {
      if (probe != nullptr) probe->on_message(p);
    });
    co_return co_await connect_client(client, filters);
  });
  CAIRN_TRY(wait_future(
      done, kSetupLimit,
      fmt::format("connecting {} to {}", who.client_id, to_cloud ? "cairn-cloud" : "cairnd")));
  return c;
}

void Bench::teardown() {
  for (Client* c : {&load_client_, &twin_client_, &direct_client_}) {
    if (c->mqtt) c->mqtt->close();
  }
  if (io_thread_.joinable()) {
    guard_.reset();
    // Closed clients finish at once; a stuck one must not hang the bench.
    std::thread watchdog([this] {
      for (int i = 0; i < 40 && !io_.stopped(); ++i) std::this_thread::sleep_for(50ms);
      io_.stop();
    });
    io_thread_.join();
    watchdog.join();
  }
  if (cairnd_) cairnd_->stop(kStopGrace);
  if (cloud_) cloud_->stop(kStopGrace);
}

CpuMark Bench::mark() const {
  CpuMark m;
  m.at = Clock::now();
  if (cairnd_) m.cairnd = cairnd_->cpu_seconds();
  if (cloud_) m.cloud = cloud_->cpu_seconds();
  m.own = own_cpu_seconds();
  return m;
}

Status Bench::processes_alive() {
  if (cairnd_ && !cairnd_->running()) {
    return make_error(
        errc::unavailable,
        fmt::format("cairnd {}; log:\n{}", cairnd_->exit_description(), tail_of_file(cairnd_log_)));
  }
  if (cloud_ && !cloud_->running()) {
    return make_error(errc::unavailable,
                      fmt::format("cairn-cloud {}; log:\n{}", cloud_->exit_description(),
                                  tail_of_file(cloud_log_)));
  }
  return {};
}

ThroughputResult Bench::throughput(Client& client, const std::string& topic_prefix,
                                   const std::string& id_prefix, const std::string& label) {
  ThroughputResult r;
  r.messages = o_.messages;
  auto before = cloud_counts(service_);
  if (!before) {
    r.error = before.error().message;
    return r;
  }
  tail_->poll([](std::string_view) {});  // start at the end of the file
  StoredTracker tracker(id_prefix, o_.messages);
  auto run = std::make_shared<PublishRun>();
  run->target = o_.messages;
  progress(fmt::format("{}: publishing {} messages of {} B, QoS 1, in-flight {}", label,
                       o_.messages, o_.payload_bytes, o_.inflight));
  const CpuMark begin = mark();
  const auto t0 = begin.at;
  auto publishing = spawn_status(
      io_,
      [client = client.mqtt, topic_prefix, bytes = o_.payload_bytes, run]() -> awaitable<Status> {
        co_return co_await publish_all(client, topic_prefix, bytes, run);
      });
  const auto deadline = t0 + std::chrono::duration_cast<Clock::duration>(
                                 std::chrono::duration<double>(o_.phase_timeout_s));
  auto last_report = t0;
  std::size_t last_stored = 0;
  std::string error;
  for (;;) {
    std::this_thread::sleep_for(kPoll);
    tail_->poll(std::ref(tracker));
    const auto now = Clock::now();
    if (tracker.complete()) break;
    if (error = run->error.text(); !error.empty()) break;
    if (auto alive = processes_alive(); !alive) {
      error = alive.error().message;
      break;
    }
    if (now > deadline) {
      error = fmt::format("after {:.0f} s only {} of {} messages were stored ({} acknowledged)",
                          o_.phase_timeout_s, tracker.unique, o_.messages, run->acked.load());
      break;
    }
    if (now - last_report >= kProgressEvery) {
      progress(fmt::format(
          "{}: t={:.0f}s acknowledged {}, stored {} ({:.0f} msg/s)", label,
          seconds_between(t0, now), run->acked.load(), tracker.unique,
          static_cast<double>(tracker.unique - last_stored) / seconds_between(last_report, now)));
      last_report = now;
      last_stored = tracker.unique;
    }
  }
  const CpuMark end = mark();
  if (error.empty()) {
    // All stored implies all acknowledged by the first hop, but the PUBACKs may still be on
    // their way back.
    auto s = wait_future(publishing, kSetupLimit, "publishing");
    if (!s) error = s.error().message;
  }
  while (error.empty() && run->acked.load() < run->target && Clock::now() < end.at + kSetupLimit) {
    std::this_thread::sleep_for(1ms);
  }
  if (error.empty() && run->acked.load() < run->target) {
    error = "not every publish was acknowledged: " + run->error.text();
  }
  if (!error.empty()) {
    r.error = error;
    return r;
  }
  const Clock::time_point last_ack{Clock::duration(run->last_ack_ns.load())};
  r.acked_s = seconds_between(t0, last_ack);
  r.stored_s = seconds_between(t0, tracker.last);
  r.stored = tracker.unique;
  const double window = seconds_between(begin.at, end.at);
  r.cairnd_cpu = cpu_percent(begin.cairnd, end.cairnd, window);
  r.cloud_cpu = cpu_percent(begin.cloud, end.cloud, window);
  r.bench_cpu = 100.0 * (end.own - begin.own) / window;
  if (Status s = count_since(service_, *before, tracker, r); !s) {
    r.error = s.error().message;
    return r;
  }
  progress(
      fmt::format("{}: {} stored in {:.2f} s ({:.0f} msg/s); first hop acknowledged all in "
                  "{:.2f} s ({:.0f} msg/s)",
                  label, r.stored, r.stored_s, r.stored_rate(), r.acked_s, r.ingest_rate()));
  return r;
}

ThroughputResult Bench::throughput_edge() {
  return throughput(
      load_client_,
      fmt::format("devices/{}/modules/{}/messages/events/%24.mid=edge-", kEdgeDevice, kLoadModule),
      "edge-", "edge path");
}

ThroughputResult Bench::throughput_direct() {
  return throughput(direct_client_,
                    fmt::format("devices/{}/messages/events/%24.mid=direct-", kDirectDevice),
                    "direct-", "direct path");
}

// Sequential reported patches: each waits for its 204 before the next is sent.
awaitable<Status> reported_loop(std::shared_ptr<net::MqttClient> client, TwinProbe* probe,
                                std::size_t count, LatencyHistogram* latency) {
  for (std::size_t i = 1; i <= count; ++i) {
    probe->waiting_rid = "b" + std::to_string(i);
    probe->answered = false;
    const std::string body = fmt::format(R"({{"bench":{{"seq":{},"state":"running"}}}})", i);
    const auto t0 = Clock::now();
    // QoS 0, like the device SDKs' twin requests.
    auto queued = co_await client->async_publish(
        "$iothub/twin/PATCH/properties/reported/?$rid=" + probe->waiting_rid, body, 0);
    if (!queued) co_return queued;
    while (!probe->answered) {
      probe->answered_signal.expires_after(kAnswerLimit);
      boost::system::error_code ec;
      co_await probe->answered_signal.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      if (!ec && !probe->answered) {
        co_return make_error(errc::timeout, fmt::format("no answer to reported patch {} in {} s", i,
                                                        kAnswerLimit.count()));
      }
      if (!client->connected()) co_return make_error(errc::unavailable, "connection lost");
    }
    const auto t1 = Clock::now();
    if (probe->answer_status != 204) {
      co_return make_error(errc::io_error,
                           fmt::format("reported patch {} answered {}", i, probe->answer_status));
    }
    latency->record(ns_between(t0, t1));
  }
  co_return Status{};
}

LatencyResult Bench::reported(Client& client, const std::string& label) {
  LatencyResult r;
  progress(fmt::format("{}: {} reported patches, one at a time", label, o_.reported_patches));
  auto latency = std::make_shared<LatencyHistogram>();
  const auto t0 = Clock::now();
  auto done = spawn_status(io_,
                           [client = client.mqtt, probe = client.twin.get(),
                            n = o_.reported_patches, latency]() -> awaitable<Status> {
                             co_return co_await reported_loop(client, probe, n, latency.get());
                           });
  const auto limit = std::chrono::duration_cast<Clock::duration>(
      std::chrono::duration<double>(o_.phase_timeout_s));
  if (auto s = wait_future(done, limit, label); !s) {
    r.error = s.error().message;
    return r;
  }
  r.total_s = seconds_between(t0, Clock::now());
  r.latency = *latency;
  return r;
}

LatencyResult Bench::reported_edge(std::optional<double>* sync_ms) {
  LatencyResult r = reported(twin_client_, "twin reported via cairnd");
  if (!r.error.empty()) return r;
  // cairnd answers 204 once the patch is on its disk and sends it up afterwards, folding the
  // patches that wait meanwhile into one, as edgeHub does (so the cloud may count fewer
  // patches than were sent): how long after the last 204 the cloud's twin shows the last one.
  const auto end = Clock::now();
  const auto twin_target =
      fmt::format("/twins/{}/modules/{}?api-version={}", kEdgeDevice, kTwinModule, kApiVersion);
  const auto last_seq = static_cast<std::int64_t>(o_.reported_patches);
  const auto deadline = end + kSetupLimit * 4;
  while (Clock::now() < deadline) {
    auto twin = service_.call("GET", twin_target);
    if (twin) {
      const auto seq = twin->value(json::json_pointer("/properties/reported/bench/seq"), json());
      if (seq.is_number_integer() && seq.get<std::int64_t>() == last_seq) {
        *sync_ms = seconds_between(end, Clock::now()) * 1000.0;
        break;
      }
    }
    std::this_thread::sleep_for(20ms);
  }
  return r;
}

LatencyResult Bench::reported_direct() { return reported(direct_client_, "twin reported direct"); }

LatencyResult Bench::desired(Client& client, const std::string& twin_path,
                             const std::string& label) {
  LatencyResult r;
  progress(
      fmt::format("{}: {} desired patches over REST, one at a time", label, o_.desired_patches));
  TwinProbe& probe = *client.twin;
  const auto t_begin = Clock::now();
  for (std::size_t i = 1; i <= o_.desired_patches; ++i) {
    const auto seq = static_cast<std::int64_t>(i);
    const std::string body =
        json{{"properties", {{"desired", {{"bench", {{"seq", seq}, {"rate", i % 10}}}}}}}}.dump();
    const auto t0 = Clock::now();
    auto answer = service_.call("PATCH", twin_path, body);
    const auto t_rest = Clock::now();
    if (!answer) {
      r.error = answer.error().message;
      return r;
    }
    std::unique_lock lock(probe.mu);
    if (!probe.desired_cv.wait_for(lock, kAnswerLimit,
                                   [&] { return probe.desired.count(seq) != 0; })) {
      r.error = fmt::format("desired patch {} did not arrive within {} s", i, kAnswerLimit.count());
      return r;
    }
    r.latency.record(ns_between(t0, probe.desired[seq]));
    r.rest.record(ns_between(t0, t_rest));
  }
  r.total_s = seconds_between(t_begin, Clock::now());
  return r;
}

LatencyResult Bench::desired_edge() {
  return desired(
      twin_client_,
      fmt::format("/twins/{}/modules/{}?api-version={}", kEdgeDevice, kTwinModule, kApiVersion),
      "twin desired via cairnd");
}

LatencyResult Bench::desired_direct() {
  return desired(direct_client_,
                 fmt::format("/twins/{}?api-version={}", kDirectDevice, kApiVersion),
                 "twin desired direct");
}

DrainResult Bench::drain() {
  DrainResult r;
  r.messages = o_.messages;
  const std::string label = "outage";
  auto before = cloud_counts(service_);
  if (!before) {
    r.error = before.error().message;
    return r;
  }
  progress(fmt::format("{}: stopping cairn-cloud (SIGTERM)", label));
  const auto stop_at = Clock::now();
  cloud_->stop(kStopGrace);
  r.cloud_stop_ms = seconds_between(stop_at, Clock::now()) * 1000.0;
  if (auto s = wait_link(mgmt_socket_, load_.client_id, false); !s) {
    r.error = s.error().message;
    return r;
  }
  tail_->poll([](std::string_view) {});
  StoredTracker tracker("drain-", o_.messages);

  // The backlog: cairnd acknowledges once each message is on its disk.
  progress(fmt::format("{}: publishing {} messages to cairnd while the cloud is down", label,
                       o_.messages));
  auto run = std::make_shared<PublishRun>();
  run->target = o_.messages;
  const auto ingest_begin = mark();
  auto publishing =
      spawn_status(io_,
                   [client = load_client_.mqtt,
                    topic = fmt::format("devices/{}/modules/{}/messages/events/%24.mid=drain-",
                                        kEdgeDevice, kLoadModule),
                    bytes = o_.payload_bytes, run]() -> awaitable<Status> {
                     co_return co_await publish_all(client, topic, bytes, run);
                   });
  const auto limit = std::chrono::duration_cast<Clock::duration>(
      std::chrono::duration<double>(o_.phase_timeout_s));
  if (auto s = wait_future(publishing, limit, "publishing the backlog"); !s) {
    r.error = s.error().message;
    return r;
  }
  while (run->acked.load() < run->target && run->error.text().empty() &&
         Clock::now() < ingest_begin.at + limit) {
    std::this_thread::sleep_for(1ms);
  }
  const auto ingest_end = mark();
  if (run->acked.load() < run->target) {
    r.error = "cairnd did not acknowledge the backlog: " + run->error.text();
    return r;
  }
  const Clock::time_point last_ack{Clock::duration(run->last_ack_ns.load())};
  r.offline_ingest_s = seconds_between(ingest_begin.at, last_ack);
  r.offline_cairnd_cpu = cpu_percent(ingest_begin.cairnd, ingest_end.cairnd,
                                     seconds_between(ingest_begin.at, ingest_end.at));

  progress(fmt::format("{}: backlog of {} in cairnd after {:.2f} s; starting cairn-cloud again",
                       label, o_.messages, r.offline_ingest_s));
  const auto cairnd_cpu_begin = cairnd_->cpu_seconds();
  const auto spawn_at = Clock::now();
  auto started = start_cloud();
  if (!started) {
    r.error = started.error().message;
    return r;
  }
  r.cloud_start_ms = *started;
  auto last_report = spawn_at;
  std::size_t last_stored = 0;
  for (;;) {
    std::this_thread::sleep_for(kPoll);
    tail_->poll(std::ref(tracker));
    const auto now = Clock::now();
    if (tracker.complete()) break;
    if (auto alive = processes_alive(); !alive) {
      r.error = alive.error().message;
      return r;
    }
    if (now > spawn_at + limit) {
      r.error = fmt::format("after {:.0f} s only {} of the {} backlog messages were stored",
                            o_.phase_timeout_s, tracker.unique, o_.messages);
      return r;
    }
    if (now - last_report >= kProgressEvery) {
      progress(fmt::format(
          "{}: t={:.0f}s after restart, stored {} ({:.0f} msg/s)", label,
          seconds_between(spawn_at, now), tracker.unique,
          static_cast<double>(tracker.unique - last_stored) / seconds_between(last_report, now)));
      last_report = now;
      last_stored = tracker.unique;
    }
  }
  const auto end_at = Clock::now();
  const double window = seconds_between(spawn_at, end_at);
  r.cairnd_cpu = cpu_percent(cairnd_cpu_begin, cairnd_->cpu_seconds(), window);
  r.cloud_cpu = cpu_percent(0.0, cloud_->cpu_seconds(), window);
  r.first_stored_s = seconds_between(spawn_at, tracker.first);
  r.all_stored_s = seconds_between(spawn_at, tracker.last);
  r.stored = tracker.unique;
  // Late duplicates would arrive right behind the last message: give them a moment.
  std::this_thread::sleep_for(200ms);
  tail_->poll(std::ref(tracker));
  if (Status s = count_since(service_, *before, tracker, r); !s) {
    r.error = s.error().message;
    return r;
  }
  progress(
      fmt::format("{}: backlog stored {:.2f} s after the restart ({:.0f} msg/s from the "
                  "first stored message)",
                  label, r.all_stored_s, r.drain_rate()));
  return r;
}

// ---------------------------------------------------------------------------------------------
// Report

json throughput_json(const ThroughputResult& r) {
  if (!r.error.empty()) return json{{"error", r.error}};
  return json{{"messages", r.messages},
              {"acked_s", round_to(r.acked_s, 0.001)},
              {"stored_s", round_to(r.stored_s, 0.001)},
              {"ingest_msgs_per_s", round_to(r.ingest_rate(), 0.1)},
              {"stored_msgs_per_s", round_to(r.stored_rate(), 0.1)},
              {"stored", r.stored},
              {"missing", r.messages - r.stored},
              {"duplicates", r.duplicates},
              {"cloud_stored_count_delta", r.stored_count_delta},
              {"cairnd_cpu_percent", optional_number(r.cairnd_cpu)},
              {"cloud_cpu_percent", optional_number(r.cloud_cpu)},
              {"bench_cpu_percent", round_to(r.bench_cpu, 0.1)},
              {"error", nullptr}};
}

json latency_json(const LatencyResult& r, bool with_rest) {
  if (!r.error.empty()) return json{{"error", r.error}};
  auto us = [](std::uint64_t ns) { return round_to(static_cast<double>(ns) / 1000.0, 0.1); };
  json j{{"samples", r.latency.count()},
         {"p50_us", us(r.latency.quantile(0.5))},
         {"p99_us", us(r.latency.quantile(0.99))},
         {"max_us", us(r.latency.max())},
         {"error", nullptr}};
  if (with_rest) {
    j["rest_call_p50_us"] = us(r.rest.quantile(0.5));
    j["rest_call_p99_us"] = us(r.rest.quantile(0.99));
  }
  return j;
}

std::string ms_cell(std::uint64_t ns) {
  return fmt::format("{:.2f}", static_cast<double>(ns) / 1e6);
}

std::string cpu_cell(const std::optional<double>& v) {
  return v ? fmt::format("{:.0f}", *v) : std::string("-");
}

}  // namespace

int run_link_bench(const LinkBenchOptions& options) {
  auto made = make_work_dir("cairn-bench-link");
  if (!made) {
    std::fprintf(stderr, "cairn-bench: %s\n", made.error().message.c_str());
    return 1;
  }
  const std::filesystem::path work = *made;

  json report;
  report["bench"] = "link";
  report["config"] = {{"messages", options.messages},
                      {"payload_bytes", options.payload_bytes},
                      {"inflight", options.inflight},
                      {"qos", 1},
                      {"fsync", options.fsync},
                      {"reported_patches", options.reported_patches},
                      {"desired_patches", options.desired_patches},
                      {"host_cpus", std::thread::hardware_concurrency()}};

  std::printf(
      "cairn-bench link: %zu messages of %zu B per phase, QoS 1, in-flight %zu; fsync %s "
      "(cairnd store and cairn-cloud); host CPUs %u\n",
      options.messages, options.payload_bytes, options.inflight, options.fsync ? "on" : "off",
      std::thread::hardware_concurrency());

  bool ok = true;
  {
    Bench bench(options);
    if (auto s = bench.setup(work); !s) {
      progress("setup FAILED: " + s.error().message);
      std::printf("\nsetup FAILED: %s\n", s.error().message.c_str());
      report["ok"] = false;
      report["error"] = s.error().message;
      bench.teardown();
      std::printf("%s\n", report.dump().c_str());
      std::fflush(stdout);
      finish_work_dir(work, true);
      return 1;
    }
    const auto cloud_start = bench.cloud_startup_ms();
    const auto cairnd_start = bench.cairnd_startup_ms();

    ThroughputResult edge = bench.throughput_edge();
    ThroughputResult direct = bench.throughput_direct();
    std::optional<double> reported_sync_ms;
    LatencyResult rep_edge = bench.reported_edge(&reported_sync_ms);
    LatencyResult rep_direct = bench.reported_direct();
    LatencyResult des_edge = bench.desired_edge();
    LatencyResult des_direct = bench.desired_direct();
    const auto cairnd_rss = bench.cairnd_rss_kib();
    const auto cloud_rss = bench.cloud_rss_kib();
    DrainResult drain = bench.drain();
    bench.teardown();

    for (const auto* e : {&edge.error, &direct.error, &rep_edge.error, &rep_direct.error,
                          &des_edge.error, &des_direct.error, &drain.error}) {
      if (!e->empty()) ok = false;
    }
    if (edge.error.empty() && edge.stored != edge.messages) ok = false;
    if (direct.error.empty() && direct.stored != direct.messages) ok = false;
    if (drain.error.empty() && drain.stored != drain.messages) ok = false;

    // --- human report ---
    std::printf("\nprocesses: cairn-cloud accepting after %.1f ms, cairnd after %.1f ms",
                cloud_start, cairnd_start);
    if (cairnd_rss && cloud_rss) {
      std::printf("; RSS before the outage: cairnd %.1f MiB, cairn-cloud %.1f MiB",
                  static_cast<double>(*cairnd_rss) / 1024.0,
                  static_cast<double>(*cloud_rss) / 1024.0);
    }
    std::printf("\n");

    std::printf("\n1. Upstream throughput: first publish -> all %zu stored by cairn-cloud\n",
                options.messages);
    std::printf("%-22s %12s %12s %9s %7s %5s %11s %10s %10s\n", "path", "stored/s", "1st hop/s",
                "stored s", "missing", "dups", "cairnd CPU%", "cloud CPU%", "bench CPU%");
    auto row = [](const char* name, const ThroughputResult& r) {
      if (!r.error.empty()) {
        std::printf("%-22s FAILED: %s\n", name, one_line(r.error).c_str());
        return;
      }
      std::printf("%-22s %12s %12s %9.2f %7zu %5lld %11s %10s %10.0f\n", name,
                  with_commas(r.stored_rate()).c_str(), with_commas(r.ingest_rate()).c_str(),
                  r.stored_s, r.messages - r.stored, static_cast<long long>(r.duplicates),
                  cpu_cell(r.cairnd_cpu).c_str(), cpu_cell(r.cloud_cpu).c_str(), r.bench_cpu);
    };
    row("module->cairnd->cloud", edge);
    row("device->cloud direct", direct);
    json ratio = nullptr;
    if (edge.error.empty() && direct.error.empty() && direct.stored_rate() > 0) {
      const double value = edge.stored_rate() / direct.stored_rate();
      ratio = round_to(value, 0.001);
      std::printf("%-22s %11.2fx\n", "ratio edge/direct", value);
    }

    std::printf(
        "\n2. Drain after an outage (cloud stopped, %zu messages into cairnd, cloud "
        "started again)\n",
        options.messages);
    if (!drain.error.empty()) {
      std::printf("FAILED: %s\n", one_line(drain.error).c_str());
    } else {
      std::printf("  offline ingest into cairnd:  %s msg/s (%.2f s, cairnd CPU %s%%)\n",
                  with_commas(static_cast<double>(drain.messages) / drain.offline_ingest_s).c_str(),
                  drain.offline_ingest_s, cpu_cell(drain.offline_cairnd_cpu).c_str());
      std::printf(
          "  cloud stop %.0f ms; restart -> accepting %.1f ms -> first stored %.2f s -> "
          "all stored %.2f s\n",
          drain.cloud_stop_ms, drain.cloud_start_ms, drain.first_stored_s, drain.all_stored_s);
      std::printf(
          "  drain rate:                  %s msg/s (first to last stored); %s msg/s "
          "from the restart\n",
          with_commas(drain.drain_rate()).c_str(),
          with_commas(drain.drain_rate_from_start()).c_str());
      std::printf(
          "  delivered %zu of %zu, missing %zu, duplicates %lld; cairnd CPU %s%%, cloud "
          "CPU %s%% while draining\n",
          drain.stored, drain.messages, drain.messages - drain.stored,
          static_cast<long long>(drain.duplicates), cpu_cell(drain.cairnd_cpu).c_str(),
          cpu_cell(drain.cloud_cpu).c_str());
    }

    std::printf("\n3. Twin round trips, one request at a time\n");
    std::printf("%-46s %6s %9s %9s %9s %14s\n", "", "n", "p50 ms", "p99 ms", "max ms",
                "REST p50/p99");
    auto lat_row = [](const char* name, const LatencyResult& r, bool rest) {
      if (!r.error.empty()) {
        std::printf("%-46s FAILED: %s\n", name, one_line(r.error).c_str());
        return;
      }
      std::printf(
          "%-46s %6llu %9s %9s %9s %14s\n", name,
          static_cast<unsigned long long>(r.latency.count()),
          ms_cell(r.latency.quantile(0.5)).c_str(), ms_cell(r.latency.quantile(0.99)).c_str(),
          ms_cell(r.latency.max()).c_str(),
          rest ? (ms_cell(r.rest.quantile(0.5)) + "/" + ms_cell(r.rest.quantile(0.99))).c_str()
               : "");
    };
    lat_row("reported patch -> 204, module via cairnd", rep_edge, false);
    lat_row("reported patch -> 204, device direct", rep_direct, false);
    lat_row("desired PATCH (REST) -> module via cairnd", des_edge, true);
    lat_row("desired PATCH (REST) -> device direct", des_direct, true);
    if (reported_sync_ms) {
      std::printf("cairnd's last reported patch in the cloud's twin %.0f ms after the last 204\n",
                  *reported_sync_ms);
    }
    std::printf("\n");

    report["ok"] = ok;
    report["processes"] = {{"cloud_startup_ms", round_to(cloud_start, 0.001)},
                           {"cairnd_startup_ms", round_to(cairnd_start, 0.001)},
                           {"cairnd_rss_kib", cairnd_rss ? json(*cairnd_rss) : json()},
                           {"cloud_rss_kib", cloud_rss ? json(*cloud_rss) : json()}};
    report["upstream_throughput"] = {{"edge", throughput_json(edge)},
                                     {"direct", throughput_json(direct)},
                                     {"ratio_edge_direct", ratio}};
    if (drain.error.empty()) {
      report["drain"] = {
          {"messages", drain.messages},
          {"offline_ingest_s", round_to(drain.offline_ingest_s, 0.001)},
          {"offline_ingest_msgs_per_s",
           round_to(static_cast<double>(drain.messages) / drain.offline_ingest_s, 0.1)},
          {"offline_cairnd_cpu_percent", optional_number(drain.offline_cairnd_cpu)},
          {"cloud_stop_ms", round_to(drain.cloud_stop_ms, 0.1)},
          {"cloud_start_ms", round_to(drain.cloud_start_ms, 0.1)},
          {"first_stored_s", round_to(drain.first_stored_s, 0.001)},
          {"all_stored_s", round_to(drain.all_stored_s, 0.001)},
          {"drain_msgs_per_s", round_to(drain.drain_rate(), 0.1)},
          {"drain_msgs_per_s_from_restart", round_to(drain.drain_rate_from_start(), 0.1)},
          {"stored", drain.stored},
          {"missing", drain.messages - drain.stored},
          {"duplicates", drain.duplicates},
          {"cloud_stored_count_delta", drain.stored_count_delta},
          {"cairnd_cpu_percent", optional_number(drain.cairnd_cpu)},
          {"cloud_cpu_percent", optional_number(drain.cloud_cpu)},
          {"error", nullptr}};
    } else {
      report["drain"] = {{"error", drain.error}};
    }
    report["twin"] = {{"reported_edge", latency_json(rep_edge, false)},
                      {"reported_direct", latency_json(rep_direct, false)},
                      {"desired_edge", latency_json(des_edge, true)},
                      {"desired_direct", latency_json(des_direct, true)},
                      {"reported_edge_synced_after_ms", optional_number(reported_sync_ms)}};
  }
  std::printf("%s\n", report.dump().c_str());
  std::fflush(stdout);

  finish_work_dir(work, options.keep_dir || !ok);
  return ok ? 0 : 1;
}

}  // namespace cairn::bench
