#include "bench/infer_bench.hpp"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <future>
#include <iostream>
#include <iterator>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <thread>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "bench/histogram.hpp"
#include "bench/process.hpp"
#include "core/message.hpp"
#include "net/http_session.hpp"
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <onnxruntime_cxx_api.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

namespace cairn::bench {

namespace fs = std::filesystem;

namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr auto kStartLimit = std::chrono::milliseconds(120000);
constexpr int kRequestTimeoutSecs = 120;
// Targets of the inference benchmark: v2 binary p50 within 50 µs of raw ORT on the tiny model
// and within 3 % on PP-OCR det; throughput at least the Node server's at every concurrency.
constexpr double kTinyOverheadTargetUs = 50;
constexpr double kLargeOverheadTargetRatio = 1.03;

// kBaselineV2Binary: the v2 binary route of another cairn-infer build (--baseline-infer),
// measured point by point beside this build's.
enum class Mode { kRawOrt, kV2Binary, kBaselineV2Binary, kV2Json, kScore, kNodeScore };

constexpr Mode kModes[] = {Mode::kRawOrt, Mode::kV2Binary, Mode::kBaselineV2Binary,
                           Mode::kV2Json, Mode::kScore,    Mode::kNodeScore};
constexpr Mode kCairnModes[] = {Mode::kV2Binary, Mode::kV2Json, Mode::kScore};

std::string_view label(Mode m) {
  switch (m) {
    case Mode::kRawOrt:
      return "raw ONNX Runtime (in-process)";
    case Mode::kV2Binary:
      return "cairn-infer v2 binary";
    case Mode::kBaselineV2Binary:
      return "baseline cairn-infer v2 binary";
    case Mode::kV2Json:
      return "cairn-infer v2 JSON";
    case Mode::kScore:
      return "cairn-infer /score";
    case Mode::kNodeScore:
      return "Node + onnxruntime-node /score";
  }
  return "";
}

std::string_view key(Mode m) {
  switch (m) {
    case Mode::kRawOrt:
      return "raw_ort";
    case Mode::kV2Binary:
      return "v2_binary";
    case Mode::kBaselineV2Binary:
      return "baseline_v2_binary";
    case Mode::kV2Json:
      return "v2_json";
    case Mode::kScore:
      return "score";
    case Mode::kNodeScore:
      return "node_score";
  }
  return "";
}

// One model under test with its input and raw ORT's answer to it.
struct Workload {
  std::string name;  // "tiny", "ppocr-det"
  std::string description;
  fs::path path;
  double duration_s = 1;
  double warmup_s = 0.3;
  std::string input_name;
  std::vector<std::int64_t> shape;
  std::vector<float> input;
  std::string output_name;
  std::vector<float> expected;  // raw ORT's output
};

// One measured point: closed-loop clients for a while.
struct Point {
  LatencyHistogram latency;
  std::uint64_t requests = 0;
  double seconds = 0;
  double mean_batch = 0;  // cairn-infer's requests per engine run in the window (0: unknown)
  std::string error;
  double per_second() const { return seconds > 0 ? static_cast<double>(requests) / seconds : 0; }
};

struct InterleavedPair {
  int cpu = -1;
  Point raw;
  Point v2;
  Point moved;  // the same body to a model that does not exist: a 404 once it is read
  Point bare;   // the same bytes through BareServer around a raw ORT run
  Point bytes;  // the same bytes through BareServer with no run
};

struct ModeResult {
  std::map<int, Point> plain;    // concurrency -> point
  std::map<int, Point> batched;  // cairn-infer with dynamic batching
};

struct ModelResult {
  std::string model;
  std::string description;
  std::map<Mode, ModeResult> modes;
  // One client, a request each server answers on its HTTP thread without running the model
  // (cairn-infer GET /v2/health/live, Node GET /score -> 404): what HTTP alone costs.
  std::optional<Point> infer_http_floor;
  std::optional<Point> baseline_http_floor;  // the --baseline-infer build's
  std::optional<Point> node_http_floor;
  // Raw ORT and cairn-infer v2 binary at 1 client, measured in alternating slices, one pair
  // per CPU the model ran on (one pair, cpu -1, when nothing was pinned).
  std::vector<InterleavedPair> interleaved;
  std::optional<Point> lean_http_floor;        // GET /v2/health/live through the same client
  std::optional<std::uint64_t> infer_rss_kib;  // one model loaded, after the first requests
  std::optional<std::uint64_t> infer_rss_after_kib;
  std::optional<std::uint64_t> node_rss_kib;
  std::optional<std::uint64_t> node_rss_after_kib;
  std::vector<std::string> errors;
};

// --- raw ONNX Runtime ---------------------------------------------------------------------

Ort::Env& ort_env() {
  static Ort::Env* env = [] {
    // Upstream builds send telemetry on Linux unless told not to, before the first Env.
    ::setenv("ORT_DISABLE_TELEMETRY", "1", 0);
    auto* e = new Ort::Env(ORT_LOGGING_LEVEL_ERROR, "cairn-bench");
    e->DisableTelemetryEvents();
    return e;
  }();
  return *env;
}

// The session as cairn-infer and the Node server configure theirs.
std::unique_ptr<Ort::Session> open_session(const fs::path& model) {
  Ort::SessionOptions so;
  so.SetIntraOpNumThreads(1);
  so.SetInterOpNumThreads(1);
  so.SetGraphOptimizationLevel(ORT_ENABLE_ALL);
  return std::make_unique<Ort::Session>(ort_env(), model.c_str(), so);
}

// One Run on the workload's input, as a caller linking ORT would: wrap the input buffer, run,
// read the output in place. Returns the output when `out` is given.
void run_once(Ort::Session& session, const Workload& w, std::vector<float>* out) {
  static const Ort::MemoryInfo cpu =
      Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);
  auto value = Ort::Value::CreateTensor<float>(cpu, const_cast<float*>(w.input.data()),
                                               w.input.size(), w.shape.data(), w.shape.size());
  const char* in_name = w.input_name.c_str();
  const char* out_name = w.output_name.c_str();
  auto results = session.Run(Ort::RunOptions{nullptr}, &in_name, &value, 1, &out_name, 1);
  if (out) {
    const auto n = results[0].GetTensorTypeAndShapeInfo().GetElementCount();
    const float* p = results[0].GetTensorData<float>();
    out->assign(p, p + n);
  }
}

// run_once as a closed loop's step: an ORT exception is an error, not a crash.
Status run_raw(Ort::Session& session, const Workload& w) {
  try {
    run_once(session, w, nullptr);
  } catch (const std::exception& e) {
    return make_error(errc::internal, std::string("onnxruntime: ") + e.what());
  }
  return {};
}

// A session on the workload's model, run once so the first timed run is not its first.
Result<std::unique_ptr<Ort::Session>> open_warm_session(const Workload& w) {
  try {
    auto session = open_session(w.path);
    run_once(*session, w, nullptr);
    return session;
  } catch (const std::exception& e) {
    return make_error(errc::internal, std::string("raw ORT: ") + e.what());
  }
}

// --- request bodies and answers --------------------------------------------------------------

// Floats print as the shortest text that reads back as the same float, so every mode feeds
// the model bit-identical input.
void append_nested(std::string& out, const std::vector<float>& v,
                   const std::vector<std::int64_t>& shape, std::size_t dim, std::size_t& pos) {
  out += '[';
  for (std::int64_t i = 0; i < shape[dim]; ++i) {
    if (i) out += ',';
    if (dim + 1 == shape.size()) {
      fmt::format_to(std::back_inserter(out), "{}", v[pos++]);
    } else {
      append_nested(out, v, shape, dim + 1, pos);
    }
  }
  out += ']';
}

std::string flat_json(const std::vector<float>& v) {
  std::string out = "[";
  for (std::size_t i = 0; i < v.size(); ++i) {
    if (i) out += ',';
    fmt::format_to(std::back_inserter(out), "{}", v[i]);
  }
  return out + "]";
}

std::string shape_json(const std::vector<std::int64_t>& shape) { return json(shape).dump(); }

// The request each HTTP mode sends, built once.
net::HttpRequest request_for(Mode mode, const Workload& w) {
  if (mode == Mode::kBaselineV2Binary) mode = Mode::kV2Binary;
  net::HttpRequest r;
  r.method = "POST";
  if (mode == Mode::kScore || mode == Mode::kNodeScore) {
    r.target = "/score";
    std::size_t pos = 0;
    r.body = "{\"data\":";
    append_nested(r.body, w.input, w.shape, 0, pos);
    r.body += "}";
    return r;
  }
  r.target = "/v2/models/" + w.name + "/infer";
  if (mode == Mode::kV2Json) {
    r.body = fmt::format(R"({{"inputs":[{{"name":"{}","datatype":"FP32","shape":{},"data":{}}}]}})",
                         w.input_name, shape_json(w.shape), flat_json(w.input));
    return r;
  }
  const std::size_t bytes = w.input.size() * sizeof(float);
  const std::string header = fmt::format(
      R"({{"inputs":[{{"name":"{}","datatype":"FP32","shape":{},"parameters":{{"binary_data_size":{}}}}}],"parameters":{{"binary_data_output":true}}}})",
      w.input_name, shape_json(w.shape), bytes);
  r.body = header;
  r.body.append(reinterpret_cast<const char*>(w.input.data()), bytes);
  r.headers = {{"Inference-Header-Content-Length", std::to_string(header.size())},
               {"Content-Type", "application/octet-stream"}};
  return r;
}

void flatten(const json& j, std::vector<float>& out) {
  if (j.is_array()) {
    for (const auto& e : j) flatten(e, out);
  } else {
    out.push_back(j.get<float>());
  }
}

// The output tensor in an answer of `mode`.
Result<std::vector<float>> output_of(Mode mode, const Workload& w, const net::HttpResponse& r) {
  auto bad = [&](const std::string& why) {
    return make_error(errc::invalid_argument,
                      std::string(label(mode)) + ": " + why + ": " + r.body.substr(0, 200));
  };
  if (r.status != 200) return bad("HTTP " + std::to_string(r.status));
  std::vector<float> out;
  try {
    if (mode == Mode::kV2Binary || mode == Mode::kBaselineV2Binary) {
      const std::size_t n = std::stoul(r.header("Inference-Header-Content-Length"));
      const auto header = json::parse(r.body.substr(0, n));
      const auto& o = header.at("outputs").at(0);
      const std::size_t size = o.at("parameters").at("binary_data_size").get<std::size_t>();
      if (n + size != r.body.size() || size % sizeof(float)) return bad("binary sizes disagree");
      out.resize(size / sizeof(float));
      std::memcpy(out.data(), r.body.data() + n, size);
    } else if (mode == Mode::kV2Json) {
      flatten(json::parse(r.body).at("outputs").at(0).at("data"), out);
    } else {
      flatten(json::parse(r.body).at(w.output_name), out);
    }
  } catch (const std::exception& e) {
    return bad(std::string("unreadable answer (") + e.what() + ")");
  }
  return out;
}

// Same values as raw ORT's, to float rounding (a batched run may sum in another order).
Status check_output(Mode mode, const Workload& w, const std::vector<float>& got) {
  if (got.size() != w.expected.size()) {
    return make_error(errc::internal, fmt::format("{}: {} output elements, raw ORT gave {}",
                                                  label(mode), got.size(), w.expected.size()));
  }
  for (std::size_t i = 0; i < got.size(); ++i) {
    if (std::fabs(got[i] - w.expected[i]) > 1e-4f * (1.0f + std::fabs(w.expected[i]))) {
      return make_error(errc::internal, fmt::format("{}: output element {} is {}, raw ORT gave {}",
                                                    label(mode), i, got[i], w.expected[i]));
    }
  }
  return {};
}

// One timed request: an error unless the server answered 200.
Status answered(net::HttpSession& conn, const net::HttpRequest& request, Mode mode) {
  auto r = conn.request(request);
  if (!r) return std::move(r).error();
  if (r->status != 200) {
    return make_error(errc::internal, fmt::format("{}: HTTP {}: {}", label(mode), r->status,
                                                  r->body.substr(0, 200)));
  }
  return {};
}

// A blocking HTTP/1.1 client on one kept loopback connection: it writes a request's bytes,
// made once, and reads one answer by its Content-Length. The interleaved latency pair uses it
// so that it times the server: net::HttpSession builds each request anew and runs an
// io_context round per request, about 15-20 µs more per request than this loop here.
// Only what cairn-infer answers is understood: no chunked bodies, no 100-continue.
class LeanHttpClient {
 public:
  explicit LeanHttpClient(std::uint16_t port) : port_(port) {}
  ~LeanHttpClient() {
    if (fd_ >= 0) ::close(fd_);
  }
  LeanHttpClient(const LeanHttpClient&) = delete;
  LeanHttpClient& operator=(const LeanHttpClient&) = delete;

  static std::string wire(const net::HttpRequest& r) {
    std::string out = r.method + " " + r.target + " HTTP/1.1\r\nHost: 127.0.0.1\r\n";
    for (const auto& [name, value] : r.headers) out += name + ": " + value + "\r\n";
    out += "Content-Length: " + std::to_string(r.body.size()) + "\r\n\r\n";
    return out + r.body;
  }

  // Sends `request` (wire()'s bytes) and reads the answer; an error unless its status is
  // `status`.
  Status exchange(const std::string& request, std::string_view status = "200") {
    if (fd_ < 0) CAIRN_TRY(open());
    for (std::size_t sent = 0; sent < request.size();) {
      const ssize_t n = ::send(fd_, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) return failed("send");
      sent += static_cast<std::size_t>(n);
    }
    in_.clear();
    std::size_t header_end = std::string::npos;
    std::size_t total = 0;
    while (header_end == std::string::npos || in_.size() < total) {
      char chunk[64 * 1024];
      const ssize_t n = ::recv(fd_, chunk, sizeof chunk, 0);
      if (n <= 0) return failed("recv");
      in_.append(chunk, static_cast<std::size_t>(n));
      if (header_end == std::string::npos) {
        header_end = in_.find("\r\n\r\n");
        if (header_end == std::string::npos) continue;
        total = header_end + 4 + content_length(std::string_view(in_).substr(0, header_end));
      }
    }
    if (in_.compare(0, 9, "HTTP/1.1 ") != 0 || in_.compare(9, status.size(), status) != 0) {
      return make_error(errc::internal, "lean client: " + in_.substr(0, in_.find('\r')));
    }
    return {};
  }

  // The last answer's bytes, header and body, as they came.
  const std::string& last_answer() const { return in_; }

 private:
  Status open() {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    if (fd_ < 0) return failed("socket");
    const int one = 1;
    (void)::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    const timeval timeout{kRequestTimeoutSecs, 0};
    (void)::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(port_);
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd_, reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0) {
      return failed("connect");
    }
    return {};
  }

  Status failed(const char* what) {
    const int e = errno;
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
    return make_error(errc::io_error, fmt::format("lean client: {} to 127.0.0.1:{}: {}", what,
                                                  port_, std::strerror(e)));
  }

  // Content-Length of a response header block (0 when absent), matched case-insensitively.
  static std::size_t content_length(std::string_view header) {
    for (std::size_t start = 0; start < header.size();) {
      const std::size_t end = std::min(header.find("\r\n", start), header.size());
      const std::string_view line = header.substr(start, end - start);
      const std::size_t colon = line.find(':');
      if (colon != std::string_view::npos && iequals(line.substr(0, colon), "content-length")) {
        // The header block is followed by "\r\n" in the buffer: strtoull stops there.
        return std::strtoull(line.data() + colon + 1, nullptr, 10);
      }
      start = end + 2;
    }
    return 0;
  }

  std::uint16_t port_;
  int fd_ = -1;
  std::string in_;
};

// The floor under any server on this machine: a thread that reads a request of a known size
// from one kept loopback connection, calls `work` (or nothing), and writes a canned answer back,
// parsing nothing and copying nothing; a `work` that fails closes the connection. Timed through
// LeanHttpClient with v2's request and cairn-infer's own answer to it, on the model's CPU: with no
// work, what moving those bytes costs; with a raw ORT run as the work, the best latency any server
// could give over loopback TCP, the network's traffic through the CPU's caches included.
class BareServer {
 public:
  static Result<std::unique_ptr<BareServer>> start(std::size_t request_size, std::string answer,
                                                   std::function<bool()> work) {
    std::unique_ptr<BareServer> m(new BareServer(request_size, std::move(answer), std::move(work)));
    m->listener_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof address;
    if (m->listener_ < 0 ||
        ::bind(m->listener_, reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0 ||
        ::listen(m->listener_, 1) != 0 ||
        ::getsockname(m->listener_, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
      return make_error(errc::io_error,
                        std::string("bare server: listen on 127.0.0.1: ") + std::strerror(errno));
    }
    m->port_ = ntohs(address.sin_port);
    std::promise<pid_t> tid;
    auto started = tid.get_future();
    m->thread_ = std::thread([self = m.get(), tid = std::move(tid)]() mutable {
      tid.set_value(static_cast<pid_t>(::gettid()));
      self->serve();
    });
    m->tid_ = started.get();
    return m;
  }

  ~BareServer() {
    // Wakes the thread out of accept() or recv(); it then ends.
    ::shutdown(listener_, SHUT_RDWR);
    if (const int fd = connection_.load(); fd >= 0) ::shutdown(fd, SHUT_RDWR);
    if (thread_.joinable()) thread_.join();
    if (listener_ >= 0) ::close(listener_);
  }
  BareServer(const BareServer&) = delete;
  BareServer& operator=(const BareServer&) = delete;

  std::uint16_t port() const { return port_; }
  pid_t tid() const { return tid_; }

 private:
  BareServer(std::size_t request_size, std::string answer, std::function<bool()> work)
      : request_(request_size, '\0'), answer_(std::move(answer)), work_(std::move(work)) {}

  void serve() {
    int fd = -1;
    do {
      fd = ::accept(listener_, nullptr, nullptr);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0) return;
    connection_.store(fd);
    const int one = 1;
    (void)::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    for (bool open = true; open;) {
      for (std::size_t got = 0; open && got < request_.size();) {
        const ssize_t n = ::recv(fd, request_.data() + got, request_.size() - got, 0);
        open = n > 0;
        got += open ? static_cast<std::size_t>(n) : 0;
      }
      if (open && work_) open = work_();
      for (std::size_t sent = 0; open && sent < answer_.size();) {
        const ssize_t n = ::send(fd, answer_.data() + sent, answer_.size() - sent, MSG_NOSIGNAL);
        open = n > 0;
        sent += open ? static_cast<std::size_t>(n) : 0;
      }
    }
    connection_.store(-1);
    ::close(fd);
  }

  std::string request_;
  const std::string answer_;
  const std::function<bool()> work_;
  int listener_ = -1;
  std::atomic<int> connection_{-1};
  std::uint16_t port_ = 0;
  pid_t tid_ = 0;
  std::thread thread_;
};

// --- closed-loop load ------------------------------------------------------------------------

// `clients` threads call `once(client)` back to back for warmup + duration; latencies and
// completions inside the measured window count.
Point closed_loop(int clients, double warmup_s, double duration_s,
                  const std::function<Status(int)>& once) {
  Point point;
  FirstError first_error;
  std::vector<LatencyHistogram> hists(static_cast<std::size_t>(clients));
  std::vector<std::uint64_t> counts(static_cast<std::size_t>(clients), 0);
  std::atomic<bool> failed{false};
  const auto start = Clock::now() + std::chrono::milliseconds(20);
  const auto measure_from =
      start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(warmup_s));
  const auto measure_to = measure_from + std::chrono::duration_cast<Clock::duration>(
                                             std::chrono::duration<double>(duration_s));
  auto client = [&](int c) {
    std::this_thread::sleep_until(start);
    while (!failed.load(std::memory_order_relaxed)) {
      const auto t0 = Clock::now();
      if (t0 >= measure_to) break;
      auto s = once(c);
      const auto t1 = Clock::now();
      if (!s) {
        first_error.set(s.error().message);
        failed = true;
        break;
      }
      if (t0 >= measure_from && t1 <= measure_to) {
        hists[static_cast<std::size_t>(c)].record(static_cast<std::uint64_t>(
            std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0).count()));
        ++counts[static_cast<std::size_t>(c)];
      }
    }
  };
  // One client runs on the calling thread: the same thread from one call to the next, so an
  // engine's per-thread state (ONNX Runtime keeps some) is not built anew for every slice.
  if (clients == 1) {
    client(0);
  } else {
    std::vector<std::thread> threads;
    for (int c = 0; c < clients; ++c) threads.emplace_back(client, c);
    for (auto& t : threads) t.join();
  }
  for (int c = 0; c < clients; ++c) {
    point.latency.merge(hists[static_cast<std::size_t>(c)]);
    point.requests += counts[static_cast<std::size_t>(c)];
  }
  point.seconds = duration_s;
  point.error = first_error.text();
  return point;
}

// --- servers -----------------------------------------------------------------------------

struct Server {
  std::optional<ChildProcess> process;
  std::uint16_t port = 0;
};

// Starts a server on a free loopback port ("{port}" in an argument becomes its number)
// and waits until it accepts connections.
Result<Server> start_server(std::vector<std::string> argv, const std::string& log_path) {
  auto port = free_loopback_port();
  if (!port) return port.error();
  for (auto& a : argv) {
    if (auto at = a.find("{port}"); at != std::string::npos)
      a.replace(at, 6, std::to_string(*port));
  }
  const auto started = Clock::now();
  auto child = ChildProcess::spawn(argv, log_path);
  if (!child) return child.error();
  Server s;
  s.process.emplace(std::move(*child));
  s.port = *port;
  auto up = wait_until_accepting(*s.process, *port, started, kStartLimit);
  if (!up) {
    return make_error(up.error().code,
                      argv[0] + ": " + up.error().message + "\n" + tail_of_file(log_path));
  }
  return s;
}

// Plain HTTP to a server on this machine.
net::HttpTarget loopback(std::uint16_t port) {
  net::HttpTarget target;
  target.host = "127.0.0.1";
  target.port = port;
  target.tls = false;
  return target;
}

// Requests per engine run in cairn-infer so far: (sum, count) of cairn_infer_batch_size.
std::pair<double, double> batch_counters(std::uint16_t port) {
  net::HttpSession conn(loopback(port), 10);
  net::HttpRequest request;
  request.method = "GET";
  request.target = "/metrics";
  auto r = conn.request(request);
  double sum = 0, count = 0;
  if (!r || r->status != 200) return {0, 0};
  for (std::string_view text = r->body; !text.empty();) {
    const auto eol = text.find('\n');
    std::string_view line = text.substr(0, eol);
    text = eol == std::string_view::npos ? std::string_view() : text.substr(eol + 1);
    auto value = [&] {
      return std::strtod(std::string(line.substr(line.rfind(' ') + 1)).c_str(), nullptr);
    };
    if (line.rfind("cairn_infer_batch_size_sum{", 0) == 0) sum = value();
    if (line.rfind("cairn_infer_batch_size_count{", 0) == 0) count = value();
  }
  return {sum, count};
}

class Bench {
 public:
  Bench(const InferBenchOptions& o, fs::path work) : o_(o), work_(std::move(work)) {}
  int run();

 private:
  Result<Workload> prepare(const std::string& name);
  void measure_raw(const Workload& w, ModelResult& out);
  Point measure_http(Mode mode, const Workload& w, std::uint16_t port, int clients,
                     bool count_batches);
  Status verify_http(Mode mode, const Workload& w, std::uint16_t port);
  Point measure_http_floor(const Workload& w, std::uint16_t port, const std::string& target);
  void measure_cairn(const Workload& w, bool batching, ModelResult& out);
  void measure_interleaved(const Workload& w, const Server& server, ModelResult& out);
  void measure_node(const Workload& w, ModelResult& out);
  void print(const std::vector<ModelResult>& results, json& out, bool& all_met) const;

  InferBenchOptions o_;
  fs::path work_;
  fs::path generated_;
};

Result<Workload> Bench::prepare(const std::string& name) {
  Workload w;
  w.name = name;
  std::mt19937 rng(42);
  std::uniform_real_distribution<float> uniform(0.0f, 1.0f);
  if (name == "tiny") {
    if (generated_.empty()) {
      generated_ = work_ / "models";
      auto r = run_capture({"/usr/bin/python3", o_.source_dir + "/tests/models/make_onnx_models.py",
                            generated_.string()},
                           (work_ / "tools.log").string(), std::chrono::milliseconds(120000));
      if (!r) return r.error();
    }
    w.path = generated_ / "tiny_mlp.onnx";
    w.description = "tiny_mlp (FP32 [1, 16] -> [1, 4], 16-32-4 MLP)";
    w.shape = {1, 16};
    w.duration_s = o_.tiny_duration_s;
    w.warmup_s = 0.3;
  } else {
    auto det = ppocr_det_model(o_.cache_dir, (work_ / "tools.log").string());
    if (!det) return det.error();
    w.path = *det;
    w.description = fmt::format("PP-OCRv4 det (FP32 [1, 3, {0}, {0}])", o_.ppocr_size);
    w.shape = {1, 3, o_.ppocr_size, o_.ppocr_size};
    w.duration_s = o_.ppocr_duration_s;
    w.warmup_s = 1.0;
  }
  std::size_t n = 1;
  for (auto d : w.shape) n *= static_cast<std::size_t>(d);
  w.input.resize(n);
  for (auto& v : w.input) v = uniform(rng);
  try {
    auto session = open_session(w.path);
    Ort::AllocatorWithDefaultOptions allocator;
    w.input_name = session->GetInputNameAllocated(0, allocator).get();
    w.output_name = session->GetOutputNameAllocated(0, allocator).get();
    run_once(*session, w, &w.expected);
  } catch (const std::exception& e) {
    return make_error(errc::internal, w.path.string() + ": onnxruntime: " + e.what());
  }
  return w;
}

void Bench::measure_raw(const Workload& w, ModelResult& out) {
  auto session = open_warm_session(w);
  if (!session) {
    out.errors.push_back(session.error().message);
    return;
  }
  for (int c : o_.concurrency) {
    progress(fmt::format("{}: raw ONNX Runtime, {} thread(s)", w.name, c));
    // ORT's Session::Run may be called from several threads at once.
    out.modes[Mode::kRawOrt].plain[c] = closed_loop(
        c, w.warmup_s, w.duration_s, [&](int) -> Status { return run_raw(**session, w); });
  }
}

Status Bench::verify_http(Mode mode, const Workload& w, std::uint16_t port) {
  net::HttpSession conn(loopback(port), kRequestTimeoutSecs);
  auto r = conn.request(request_for(mode, w));
  if (!r) return std::move(r).error();
  auto got = output_of(mode, w, *r);
  if (!got) return std::move(got).error();
  return check_output(mode, w, *got);
}

Point Bench::measure_http(Mode mode, const Workload& w, std::uint16_t port, int clients,
                          bool count_batches) {
  const net::HttpRequest request = request_for(mode, w);
  // One kept connection per client; the unmeasured warm-up opens them.
  std::vector<net::HttpSession> conns;
  for (int c = 0; c < clients; ++c) conns.emplace_back(loopback(port), kRequestTimeoutSecs);
  const auto before = count_batches ? batch_counters(port) : std::pair<double, double>{};
  Point p = closed_loop(clients, w.warmup_s, w.duration_s, [&](int c) -> Status {
    return answered(conns[static_cast<std::size_t>(c)], request, mode);
  });
  if (count_batches) {
    const auto after = batch_counters(port);
    // Warm-up runs are in the difference too; the mean is what the server did under this load.
    if (after.second > before.second) {
      p.mean_batch = (after.first - before.first) / (after.second - before.second);
    }
  }
  return p;
}

Point Bench::measure_http_floor(const Workload& w, std::uint16_t port, const std::string& target) {
  net::HttpSession conn(loopback(port), kRequestTimeoutSecs);
  net::HttpRequest request;
  request.method = "GET";
  request.target = target;
  return closed_loop(1, 0.3, std::min(w.duration_s, 1.0), [&](int) -> Status {
    auto r = conn.request(request);
    if (!r) return std::move(r).error();
    return {};
  });
}

void Bench::measure_cairn(const Workload& w, bool batching, ModelResult& out) {
  std::vector<std::string> argv{o_.infer_path,
                                "--model",
                                w.name + "=" + w.path.string(),
                                "--http",
                                "127.0.0.1:{port}",
                                "--log-level",
                                "warn",
                                "--intra-op-threads",
                                "1",
                                "--inter-op-threads",
                                "1",
                                "--graph-optimization",
                                "all",
                                "--max-batch-size",
                                batching ? std::to_string(o_.max_batch_size) : "1",
                                "--max-queue-delay-us",
                                batching ? std::to_string(o_.max_queue_delay_us) : "0"};
  const auto log =
      (work_ / fmt::format("cairn-infer-{}-{}.log", w.name, batching ? "batch" : "plain")).string();
  progress(fmt::format("{}: starting cairn-infer ({})", w.name,
                       batching ? "dynamic batching" : "no batching"));
  auto server = start_server(argv, log);
  if (!server) {
    out.errors.push_back("cairn-infer: " + server.error().message);
    return;
  }
  for (Mode m : kCairnModes) {
    if (auto s = verify_http(m, w, server->port); !s) {
      out.errors.push_back(s.error().message);
      return;
    }
  }
  // The baseline build, same arguments, idle while this build is measured and the other way
  // round; each of its points right after this build's same point.
  std::optional<Server> baseline;
  if (!batching && !o_.baseline_infer_path.empty()) {
    argv.front() = o_.baseline_infer_path;
    progress(fmt::format("{}: starting the baseline cairn-infer", w.name));
    auto started = start_server(argv, (work_ / fmt::format("baseline-{}.log", w.name)).string());
    if (!started) {
      out.errors.push_back("baseline cairn-infer: " + started.error().message);
    } else if (auto s = verify_http(Mode::kBaselineV2Binary, w, started->port); !s) {
      out.errors.push_back(s.error().message);
      started->process->stop();
    } else {
      baseline = std::move(*started);
    }
  }
  if (!batching) {
    out.infer_rss_kib = server->process->rss_kib();
    progress(fmt::format("{}: cairn-infer GET /v2/health/live, 1 client", w.name));
    out.infer_http_floor = measure_http_floor(w, server->port, "/v2/health/live");
    if (baseline) {
      out.baseline_http_floor = measure_http_floor(w, baseline->port, "/v2/health/live");
    }
    if (o_.interleaved_rounds > 0) measure_interleaved(w, *server, out);
  }
  for (Mode m : kCairnModes) {
    for (int c : o_.concurrency) {
      if (batching && c == 1) continue;  // one client never has a second request to merge
      progress(
          fmt::format("{}: {}, {} client(s){}", w.name, label(m), c, batching ? ", batching" : ""));
      auto p = measure_http(m, w, server->port, c, batching);
      if (!p.error.empty()) out.errors.push_back(p.error);
      (batching ? out.modes[m].batched : out.modes[m].plain)[c] = std::move(p);
      if (m == Mode::kV2Binary && baseline) {
        progress(fmt::format("{}: {}, {} client(s)", w.name, label(Mode::kBaselineV2Binary), c));
        auto b = measure_http(Mode::kBaselineV2Binary, w, baseline->port, c, false);
        if (!b.error.empty()) out.errors.push_back(b.error);
        out.modes[Mode::kBaselineV2Binary].plain[c] = std::move(b);
      }
    }
  }
  if (baseline) baseline->process->stop();
  if (!batching) out.infer_rss_after_kib = server->process->rss_kib();
  if (!server->process->running()) {
    out.errors.push_back("cairn-infer " + server->process->exit_description() + "\n" +
                         tail_of_file(log));
  }
  server->process->stop();
}

// The CPUs this process may run on.
std::vector<int> allowed_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  std::vector<int> cpus;
  if (::sched_getaffinity(0, sizeof set, &set) != 0) return cpus;
  for (int c = 0; c < CPU_SETSIZE; ++c) {
    if (CPU_ISSET(c, &set)) cpus.push_back(c);
  }
  return cpus;
}

cpu_set_t cpu_set_of(const std::vector<int>& cpus) {
  cpu_set_t set;
  CPU_ZERO(&set);
  for (int c : cpus) CPU_SET(c, &set);
  return set;
}

void bind_thread(pid_t tid, const std::vector<int>& cpus) {
  const cpu_set_t set = cpu_set_of(cpus);
  (void)::sched_setaffinity(tid, sizeof set, &set);
}

// Binds every thread of process `pid` to `cpus`.
void bind_process(pid_t pid, const std::vector<int>& cpus) {
  std::error_code ec;
  for (const auto& task :
       fs::directory_iterator(fs::path("/proc") / std::to_string(pid) / "task", ec)) {
    const pid_t tid = static_cast<pid_t>(std::atoi(task.path().filename().c_str()));
    if (tid > 0) bind_thread(tid, cpus);
  }
}

void add_slice(Point& into, const Point& slice) {
  into.latency.merge(slice.latency);
  into.requests += slice.requests;
  into.seconds += slice.seconds;
}

// Raw ORT in this process and cairn-infer over v2 binary, one client each, in alternating
// slices: each slice of one is next to a slice of the other, so both see the machine at the
// same speed. cairn-infer's model is idle while raw ORT runs and the other way round.
//
// The virtual CPUs of a shared host do not run at one speed: raw ORT's PP-OCR det p50 was
// 9.2 ms on one CPU and 11.7 ms on the other in one run of this bench, and which one was faster
// changed within minutes. Unpinned, a pair compares whichever CPUs the scheduler picked for
// each side (unpinned pairs measured 0.953x to 1.092x). So each round runs the model on one CPU
// for both sides (raw ORT's thread, or every thread of cairn-infer, the client then on the
// other CPUs: each side serves from one CPU) and the rounds go round the CPUs, raw first and
// then second in turn; the pair is judged per CPU.
void Bench::measure_interleaved(const Workload& w, const Server& server, ModelResult& out) {
  auto session = open_warm_session(w);
  if (!session) {
    out.errors.push_back(session.error().message);
    return;
  }
  net::HttpRequest infer = request_for(Mode::kV2Binary, w);
  const std::string request = LeanHttpClient::wire(infer);
  infer.target = "/v2/models/" + w.name + "-absent/infer";
  const std::string absent_request = LeanHttpClient::wire(infer);
  LeanHttpClient conn(server.port);
  // v2's request in, cairn-infer's own answer to it out, through servers with nothing else
  // around them: one running raw ORT (on this session, never at the same time as a raw slice)
  // in between, one not.
  if (auto first = conn.exchange(request); !first) {
    out.errors.push_back(first.error().message);
    return;
  }
  auto bare = BareServer::start(request.size(), conn.last_answer(),
                                [&] { return run_raw(**session, w).ok(); });
  auto mover = BareServer::start(request.size(), conn.last_answer(), {});
  if (!bare || !mover) {
    out.errors.push_back(!bare ? bare.error().message : mover.error().message);
    return;
  }
  LeanHttpClient bare_conn((*bare)->port());
  LeanHttpClient mover_conn((*mover)->port());
  const std::vector<int> cpus = allowed_cpus();
  const bool pin = cpus.size() >= 2;
  const int rounds = o_.interleaved_rounds;
  const double slice = w.duration_s / rounds;
  const double warmup = std::min(0.05, slice);
  progress(fmt::format(
      "{}: raw ORT and v2 binary, 1 client, {} alternating slices of {:.2f} s{}", w.name, rounds,
      slice, pin ? fmt::format(", the model on CPU {} in turn", fmt::join(cpus, ", ")) : ""));
  const pid_t server_pid = server.process->pid();
  std::map<int, InterleavedPair> pairs;
  for (int k = 0; k < rounds; ++k) {
    const int cpu = pin ? cpus[static_cast<std::size_t>(k) % cpus.size()] : -1;
    std::vector<int> others;
    for (int c : cpus) {
      if (c != cpu) others.push_back(c);
    }
    auto bind_for_server = [&] {
      if (!pin) return;
      bind_process(server_pid, {cpu});
      bind_thread(0, others);
    };
    auto run_raw_slice = [&] {
      if (pin) bind_thread(0, {cpu});
      return closed_loop(1, warmup, slice, [&](int) -> Status { return run_raw(**session, w); });
    };
    auto run_v2_slice = [&] {
      bind_for_server();
      return closed_loop(1, warmup, slice, [&](int) -> Status { return conn.exchange(request); });
    };
    auto run_bare_slice = [&] {
      if (pin) {
        bind_thread((*bare)->tid(), {cpu});
        bind_thread(0, others);
      }
      return closed_loop(1, warmup, slice,
                         [&](int) -> Status { return bare_conn.exchange(request); });
    };
    Point a, b, e;
    if ((k / std::max<std::size_t>(cpus.size(), 1)) % 2 == 0) {
      a = run_raw_slice();
      b = run_v2_slice();
      e = run_bare_slice();
    } else {
      e = run_bare_slice();
      b = run_v2_slice();
      a = run_raw_slice();
    }
    // Moving the body alone, bound as for v2, a quarter as long.
    bind_for_server();
    Point c = closed_loop(1, warmup, slice / 4,
                          [&](int) -> Status { return conn.exchange(absent_request, "404"); });
    if (pin) bind_thread((*mover)->tid(), {cpu});
    Point d = closed_loop(1, warmup, slice / 4,
                          [&](int) -> Status { return mover_conn.exchange(request); });
    bool failed = false;
    for (const Point* p : {&a, &b, &c, &d, &e}) {
      if (!p->error.empty()) out.errors.push_back(p->error);
      failed = failed || !p->error.empty();
    }
    if (failed) break;
    auto& pair = pairs[cpu];
    pair.cpu = cpu;
    add_slice(pair.raw, a);
    add_slice(pair.v2, b);
    add_slice(pair.moved, c);
    add_slice(pair.bytes, d);
    add_slice(pair.bare, e);
  }
  if (pin) {
    bind_process(server_pid, cpus);
    bind_thread(0, cpus);
  }
  for (auto& [cpu, pair] : pairs) out.interleaved.push_back(std::move(pair));
  net::HttpRequest live;
  live.method = "GET";
  live.target = "/v2/health/live";
  const std::string live_request = LeanHttpClient::wire(live);
  out.lean_http_floor = closed_loop(1, warmup, std::min(w.duration_s, 1.0),
                                    [&](int) -> Status { return conn.exchange(live_request); });
}

void Bench::measure_node(const Workload& w, ModelResult& out) {
  const auto log = (work_ / fmt::format("node-{}.log", w.name)).string();
  progress(fmt::format("{}: starting the Node scoring server", w.name));
  auto server =
      start_server({o_.node_path, o_.node_server, w.path.string(), "127.0.0.1", "{port}"}, log);
  if (!server) {
    out.errors.push_back("node: " + server.error().message);
    return;
  }
  if (auto s = verify_http(Mode::kNodeScore, w, server->port); !s) {
    out.errors.push_back(s.error().message);
    return;
  }
  out.node_rss_kib = server->process->rss_kib();
  progress(fmt::format("{}: Node GET /score (404), 1 client", w.name));
  out.node_http_floor = measure_http_floor(w, server->port, "/score");
  for (int c : o_.concurrency) {
    progress(fmt::format("{}: {}, {} client(s)", w.name, label(Mode::kNodeScore), c));
    auto p = measure_http(Mode::kNodeScore, w, server->port, c, false);
    if (!p.error.empty()) out.errors.push_back(p.error);
    out.modes[Mode::kNodeScore].plain[c] = std::move(p);
  }
  out.node_rss_after_kib = server->process->rss_kib();
  server->process->stop();
}

double us(std::uint64_t ns) { return static_cast<double>(ns) / 1000.0; }

std::string mib(const std::optional<std::uint64_t>& kib) {
  return kib ? fmt::format("{:.1f} MiB", static_cast<double>(*kib) / 1024.0) : "-";
}

void Bench::print(const std::vector<ModelResult>& results, json& out, bool& all_met) const {
  for (const auto& r : results) {
    std::cout << "\n" << r.model << ": " << r.description << "\n\n";
    std::cout << "| mode | p50 µs | p99 µs | overhead p50 µs | p50 / raw |";
    for (int c : o_.concurrency) std::cout << " req/s c=" << c << " |";
    for (int c : o_.concurrency) {
      if (c > 1) std::cout << " batched c=" << c << " |";
    }
    std::cout << "\n|---|---:|---:|---:|---:|";
    for (int c : o_.concurrency) std::cout << (c > 1 ? "---:|---:|" : "---:|");
    std::cout << "\n";
    const Point* raw1 = nullptr;
    if (auto it = r.modes.find(Mode::kRawOrt); it != r.modes.end() && it->second.plain.count(1)) {
      raw1 = &it->second.plain.at(1);
    }
    json modes_json = json::object();
    for (Mode m : kModes) {
      auto it = r.modes.find(m);
      if (it == r.modes.end()) continue;
      const ModeResult& mr = it->second;
      json mj;
      std::cout << "| " << label(m) << " | ";
      if (auto p = mr.plain.find(1); p != mr.plain.end() && p->second.latency.count() > 0) {
        const auto p50 = p->second.latency.quantile(0.5), p99 = p->second.latency.quantile(0.99);
        std::cout << fmt::format("{:.1f} | {:.1f} | ", us(p50), us(p99));
        mj["p50_us"] = us(p50);
        mj["p99_us"] = us(p99);
        if (raw1 && raw1->latency.count() > 0) {
          const auto raw50 = raw1->latency.quantile(0.5);
          const double over = us(p50) - us(raw50);
          const double ratio = static_cast<double>(p50) / static_cast<double>(raw50);
          std::cout << fmt::format("{:.1f} | {:.3f}x |", over, ratio);
          mj["overhead_p50_us"] = over;
          mj["ratio_p50"] = ratio;
        } else {
          std::cout << "- | - |";
        }
      } else {
        std::cout << "- | - | - | - |";
      }
      for (int c : o_.concurrency) {
        auto p = mr.plain.find(c);
        if (p == mr.plain.end() || !p->second.error.empty()) {
          std::cout << " - |";
          continue;
        }
        std::cout << fmt::format(" {:.0f} |", p->second.per_second());
        mj["per_second"][std::to_string(c)] = p->second.per_second();
        mj["p50_us_at"][std::to_string(c)] = us(p->second.latency.quantile(0.5));
        mj["p99_us_at"][std::to_string(c)] = us(p->second.latency.quantile(0.99));
      }
      for (int c : o_.concurrency) {
        if (c == 1) continue;
        auto p = mr.batched.find(c);
        if (p == mr.batched.end() || !p->second.error.empty()) {
          std::cout << " - |";
          continue;
        }
        std::cout << fmt::format(" {:.0f} ({:.1f}/run) |", p->second.per_second(),
                                 p->second.mean_batch);
        mj["batched_per_second"][std::to_string(c)] = p->second.per_second();
        mj["batched_mean_batch"][std::to_string(c)] = p->second.mean_batch;
        mj["batched_p50_us_at"][std::to_string(c)] = us(p->second.latency.quantile(0.5));
      }
      std::cout << "\n";
      modes_json[std::string(key(m))] = mj;
    }
    auto floor_text = [](const std::optional<Point>& p) {
      if (!p || p->latency.count() == 0) return std::string("-");
      return fmt::format("p50 {:.1f} µs, p99 {:.1f} µs", us(p->latency.quantile(0.5)),
                         us(p->latency.quantile(0.99)));
    };
    std::cout << "\nHTTP alone, 1 client, answered without running the model: cairn-infer "
                 "GET /v2/health/live "
              << floor_text(r.infer_http_floor);
    if (r.baseline_http_floor) {
      std::cout << "; baseline cairn-infer " << floor_text(r.baseline_http_floor);
    }
    std::cout << "; Node GET /score (404) " << floor_text(r.node_http_floor) << "\n";
    // The interleaved pairs, each CPU's judged on its own: the p50 of v2 binary over raw ORT's
    // on the same CPU, then the mean over the CPUs; the bare server's beside it.
    const bool interleaved =
        !r.interleaved.empty() &&
        std::all_of(r.interleaved.begin(), r.interleaved.end(), [](const InterleavedPair& p) {
          return p.raw.latency.count() > 0 && p.v2.latency.count() > 0 &&
                 p.bare.latency.count() > 0 && p.bytes.latency.count() > 0;
        });
    const double cpus = static_cast<double>(r.interleaved.size());
    double interleaved_over_us = 0;
    double interleaved_ratio = 0;
    double bare_over_us = 0;
    double bare_ratio = 0;
    if (interleaved) {
      std::cout << fmt::format(
          "\nInterleaved, 1 client, {} alternating slices each; cairn-infer v2 binary and a bare "
          "server (v2's request read, raw ORT run, cairn-infer's answer written: no HTTP, no "
          "copies, no hand-off) through a lean blocking client (cairn-infer's GET "
          "/v2/health/live {}):\n",
          o_.interleaved_rounds, floor_text(r.lean_http_floor));
      for (const auto& p : r.interleaved) {
        const double raw = us(p.raw.latency.quantile(0.5));
        const double v2 = us(p.v2.latency.quantile(0.5));
        const double bare = us(p.bare.latency.quantile(0.5));
        interleaved_over_us += (v2 - raw) / cpus;
        interleaved_ratio += v2 / raw / cpus;
        bare_over_us += (bare - raw) / cpus;
        bare_ratio += bare / raw / cpus;
        std::cout << fmt::format(
            "  {}: raw ORT p50 {:.1f} µs ({} runs); v2 binary p50 {:.1f} µs ({} requests), "
            "{:.1f} µs over, {:.3f}x; bare server p50 {:.1f} µs, {:.1f} µs over, {:.3f}x; "
            "the same bytes with no run {:.1f} µs; v2's body to an absent model (404) {:.1f} µs\n",
            p.cpu < 0 ? std::string("unpinned") : fmt::format("model on CPU {}", p.cpu), raw,
            p.raw.requests, v2, p.v2.requests, v2 - raw, v2 / raw, bare, bare - raw, bare / raw,
            us(p.bytes.latency.quantile(0.5)), us(p.moved.latency.quantile(0.5)));
      }
      if (r.interleaved.size() > 1) {
        std::cout << fmt::format(
            "  mean over the CPUs: v2 binary {:.1f} µs over, {:.3f}x; bare server {:.1f} µs "
            "over, {:.3f}x\n",
            interleaved_over_us, interleaved_ratio, bare_over_us, bare_ratio);
      }
    }
    std::cout << "\nRSS with the one model loaded (after the first requests / after the runs): "
              << "cairn-infer " << mib(r.infer_rss_kib) << " / " << mib(r.infer_rss_after_kib)
              << ", Node server " << mib(r.node_rss_kib) << " / " << mib(r.node_rss_after_kib)
              << "\n";

    // Targets.
    std::vector<std::string> verdicts;
    json targets = json::object();
    auto mode_p50 = [&](Mode m) -> std::optional<std::uint64_t> {
      auto it = r.modes.find(m);
      if (it == r.modes.end() || !it->second.plain.count(1)) return std::nullopt;
      const auto& p = it->second.plain.at(1);
      if (p.latency.count() == 0) return std::nullopt;
      return p.latency.quantile(0.5);
    };
    // The interleaved pairs when there are some: separate runs minutes apart compare two speeds
    // of the machine as much as two servers.
    const auto raw50 = mode_p50(Mode::kRawOrt);
    const auto bin50 = mode_p50(Mode::kV2Binary);
    const char* measured = interleaved ? ", interleaved, mean over the CPUs" : "";
    if (interleaved || (raw50 && bin50)) {
      const double over = interleaved ? interleaved_over_us : us(*bin50) - us(*raw50);
      const double ratio = interleaved ? interleaved_ratio
                                       : static_cast<double>(*bin50) / static_cast<double>(*raw50);
      bool met = false;
      std::string what;
      if (r.model == "tiny") {
        met = over <= kTinyOverheadTargetUs;
        what = fmt::format("v2 binary p50 {:.1f} µs over raw ORT{} (target <= {:.0f} µs)", over,
                           measured, kTinyOverheadTargetUs);
      } else {
        met = ratio <= kLargeOverheadTargetRatio;
        what = fmt::format("v2 binary p50 {:.3f}x raw ORT{} (target <= {:.2f}x)", ratio, measured,
                           kLargeOverheadTargetRatio);
      }
      // Where the machine puts the floor: not a verdict, the bare server is not cairn-infer.
      if (interleaved) {
        what += r.model == "tiny" ? fmt::format("; a bare server {:.1f} µs", bare_over_us)
                                  : fmt::format("; a bare server {:.3f}x", bare_ratio);
      }
      verdicts.push_back(std::string(met ? "met" : "MISSED") + ": " + what);
      targets["latency"] = met;
      all_met = all_met && met;
    }
    auto node = r.modes.find(Mode::kNodeScore);
    // Every cairn-infer route against the Node server at each concurrency, without and with
    // dynamic batching.
    for (Mode m : kCairnModes) {
      auto it = r.modes.find(m);
      if (node == r.modes.end() || it == r.modes.end()) continue;
      bool met = true;
      std::string detail;
      for (bool batched : {false, true}) {
        const auto& mine_points = batched ? it->second.batched : it->second.plain;
        for (int c : o_.concurrency) {
          if (!node->second.plain.count(c) || !mine_points.count(c)) continue;
          const double mine = mine_points.at(c).per_second();
          const double theirs = node->second.plain.at(c).per_second();
          met = met && mine >= theirs;
          detail += fmt::format("{}{}c={}: {:.2f}x", detail.empty() ? "" : ", ",
                                batched ? "batched " : "", c, theirs > 0 ? mine / theirs : 0.0);
        }
      }
      verdicts.push_back(fmt::format("{}: {} throughput >= Node's at every concurrency ({})",
                                     met ? "met" : "MISSED", label(m), detail));
      targets[std::string("throughput_") + std::string(key(m))] = met;
      all_met = all_met && met;
    }
    std::cout << "\ntargets:\n";
    for (const auto& v : verdicts) std::cout << "  " << v << "\n";
    json model_json{{"model", r.model},
                    {"description", r.description},
                    {"modes", modes_json},
                    {"targets", targets}};
    if (r.infer_http_floor && r.infer_http_floor->latency.count()) {
      model_json["cairn_infer_http_only_p50_us"] = us(r.infer_http_floor->latency.quantile(0.5));
    }
    if (r.baseline_http_floor && r.baseline_http_floor->latency.count()) {
      model_json["baseline_http_only_p50_us"] = us(r.baseline_http_floor->latency.quantile(0.5));
    }
    if (interleaved) {
      json per_cpu = json::array();
      for (const auto& p : r.interleaved) {
        per_cpu.push_back({{"cpu", p.cpu},
                           {"raw_ort_p50_us", us(p.raw.latency.quantile(0.5))},
                           {"v2_binary_p50_us", us(p.v2.latency.quantile(0.5))},
                           {"raw_ort_p99_us", us(p.raw.latency.quantile(0.99))},
                           {"v2_binary_p99_us", us(p.v2.latency.quantile(0.99))},
                           {"absent_model_p50_us", us(p.moved.latency.quantile(0.5))},
                           {"bare_server_p50_us", us(p.bare.latency.quantile(0.5))},
                           {"bytes_only_p50_us", us(p.bytes.latency.quantile(0.5))}});
      }
      model_json["interleaved"] = {
          {"rounds", o_.interleaved_rounds},          {"per_cpu", per_cpu},
          {"mean_over_us", interleaved_over_us},      {"mean_ratio", interleaved_ratio},
          {"bare_server_mean_over_us", bare_over_us}, {"bare_server_mean_ratio", bare_ratio}};
      if (r.lean_http_floor && r.lean_http_floor->latency.count()) {
        model_json["interleaved"]["http_only_p50_us"] =
            us(r.lean_http_floor->latency.quantile(0.5));
      }
    }
    if (r.node_http_floor && r.node_http_floor->latency.count()) {
      model_json["node_http_only_p50_us"] = us(r.node_http_floor->latency.quantile(0.5));
    }
    if (r.infer_rss_kib) model_json["cairn_infer_rss_kib"] = *r.infer_rss_kib;
    if (r.infer_rss_after_kib) model_json["cairn_infer_rss_after_kib"] = *r.infer_rss_after_kib;
    if (r.node_rss_kib) model_json["node_rss_kib"] = *r.node_rss_kib;
    if (r.node_rss_after_kib) model_json["node_rss_after_kib"] = *r.node_rss_after_kib;
    if (!r.errors.empty()) model_json["errors"] = r.errors;
    out.push_back(model_json);
  }
}

int Bench::run() {
  std::vector<ModelResult> results;
  bool any_error = false;
  for (const auto& name : o_.models) {
    ModelResult r;
    r.model = name;
    progress("model " + name + ": preparing");
    auto w = prepare(name);
    if (!w) {
      r.errors.push_back(w.error().message);
      results.push_back(std::move(r));
      continue;
    }
    r.description = w->description;
    measure_raw(*w, r);
    measure_cairn(*w, false, r);
    measure_cairn(*w, true, r);
    if (!o_.node_server.empty()) measure_node(*w, r);
    results.push_back(std::move(r));
  }
  json out = json::array();
  bool all_met = true;
  print(results, out, all_met);
  std::cout << "\nerrors:";
  for (const auto& r : results) {
    for (const auto& e : r.errors) {
      any_error = true;
      std::cout << "\n  " << r.model << ": " << e.substr(0, 600);
    }
  }
  std::cout << (any_error ? "\n" : " none\n");
  std::cout << json{{"infer", out}, {"targets_met", all_met && !any_error}}.dump() << "\n";
  return any_error ? 1 : 0;
}

}  // namespace

int run_infer_bench(const InferBenchOptions& options) {
  auto work = make_work_dir("cairn-bench-infer");
  if (!work) {
    std::cerr << "cairn-bench: " << work.error().message << "\n";
    return 1;
  }
  int rc = Bench(options, *work).run();
  finish_work_dir(*work, options.keep_dir);
  return rc;
}

}  // namespace cairn::bench
