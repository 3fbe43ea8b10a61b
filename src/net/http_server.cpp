// HttpServer (TCP, optionally TLS) and UnixHttpServer share one connection loop, written once
// as a template over the stream type: plain TCP (tcp::socket), TLS over TCP
// (ssl::stream<tcp::socket>) and unix sockets (local::socket).
//
// Deadlines: each connection keeps the time its current read or write must end by, and one
// sweep per server closes the connections past theirs (Deadlines below). A timer per stream,
// as Beast's tcp_stream keeps, is armed and cancelled around every read and write: two timerfd
// system calls and their handlers per request, about a tenth of what serving a small request
// costs (docs/benchmarks.md, "Inference serving").
//
// The io_context may be run by several threads: the acceptor and every connection run on
// their own strand, and what connections share (ServerCore's table of open connections) is
// behind a mutex. With one thread nothing changes but the bookkeeping.
#include <algorithm>
#include <array>
#include <atomic>
#include <cctype>
#include <filesystem>
#include <limits>
#include <mutex>
#include <optional>
#include <string>
#include <type_traits>
#include <unordered_map>

#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>

#include "core/byte_budget.hpp"
#include "core/log.hpp"
#include "net/body_read.hpp"
#include "net/http.hpp"
#include "net/spawn.hpp"
#include <sys/socket.h>
#include <sys/stat.h>

// Last: it holds for the code below.
#include "net/coroutine_warnings.hpp"

namespace cairn::net {
namespace http_server_detail {

namespace beast = boost::beast;
namespace http = boost::beast::http;
using local = asio::local::stream_protocol;
using TlsStream = ssl::stream<tcp::socket>;
using Clock = std::chrono::steady_clock;

// After an error answer the client may still be sending the body we refused; reading (and
// dropping) some of it before closing keeps the kernel from resetting the connection, which
// would destroy the answer before the client reads it.
constexpr std::size_t kMaxDrainBytes = 8 * 1024 * 1024;
constexpr std::chrono::seconds kMaxLingerTime{5};
// A TLS close_notify exchange must not keep a finished connection for long.
constexpr std::chrono::seconds kTlsShutdownTime{2};
// Pause after a failed accept (e.g. out of file descriptors) so the loop does not spin.
constexpr std::chrono::milliseconds kAcceptRetryDelay{100};
// How often the sweep looks for connections past their deadline: a quarter of the read
// timeout, within these bounds. A deadline is therefore kept to within that much.
constexpr std::chrono::milliseconds kMinSweepPeriod{50};
constexpr std::chrono::milliseconds kMaxSweepPeriod{1000};

struct ConnectionState;

// What both servers share: the handler, the limits and the open connections.
struct ServerCore {
  ServerCore(HttpHandler h, HttpLimits l, std::string n)
      : handler(std::move(h)),
        limits(l),
        name(std::move(n)),
        reading_bodies(std::make_shared<ByteBudget>(l.max_reading_body_bytes)) {}
  HttpHandler handler;
  HttpLimits limits;
  std::string name;  // "127.0.0.1:443" or the socket path, for logs
  // Set by stop() from any thread; read before taking the executor-side path.
  std::atomic<bool> stop_requested{false};
  // Set on the acceptor's strand by stop_core(); read by connections on theirs.
  std::atomic<bool> stopped{false};
  // Request bodies being read, each claiming its size from its header until it is read
  // (limits.max_reading_body_bytes).
  std::shared_ptr<ByteBudget> reading_bodies;
  // The connections' shared table, touched from the acceptor's and the connections' strands.
  std::mutex mu;
  bool at_capacity = false;  // warned about refusing connections; reset when one ends
  std::uint64_t next_connection_id = 0;
  // The open connections, for stop() and the sweep. Keyed by connection id.
  std::unordered_map<std::uint64_t, std::shared_ptr<ConnectionState>> live;
  // Whether a sweep is running: it runs while connections are open (Deadlines).
  bool sweeping = false;
  // The running sweep's timer, for stop(); touched on the acceptor's strand only.
  asio::steady_timer* sweep_timer = nullptr;
};

// What a connection shares beyond its own coroutine: where it waits for the handler's answer
// to the current request, its deadline, and how to close it.
struct ConnectionState {
  explicit ConnectionState(const asio::any_io_executor& ex)
      : ready(ex, asio::steady_timer::time_point::max()) {}
  asio::steady_timer ready;  // cancelled when the answer arrives or the connection closes
  std::optional<HttpResponse> response;
  std::uint64_t generation = 0;  // one per request: a late answer never meets the wrong request
  // Closes the connection's stream while it exists (cleared when the connection ends); run on
  // the connection's strand only.
  std::function<void()> close_stream;
  // When the current read or write must be over (Clock ticks); kNoDeadline while the handler
  // has the request. Written on the connection's strand, read by the sweep.
  static constexpr Clock::rep kNoDeadline = std::numeric_limits<Clock::rep>::max();
  std::atomic<Clock::rep> deadline{kNoDeadline};

  void expires_after(Clock::duration d) {
    deadline.store((Clock::now() + d).time_since_epoch().count(), std::memory_order_relaxed);
  }
  void expires_never() { deadline.store(kNoDeadline, std::memory_order_relaxed); }
  bool overdue(Clock::time_point now) const {
    return deadline.load(std::memory_order_relaxed) <= now.time_since_epoch().count();
  }
};

// Shared by every copy of one request's `respond`: delivers the first answer to the
// connection's executor, and answers 500 if the handler lets go of respond without calling it.
class Responder {
 public:
  Responder(std::weak_ptr<ConnectionState> connection, std::uint64_t generation,
            asio::any_io_executor executor)
      : connection_(std::move(connection)),
        generation_(generation),
        executor_(std::move(executor)) {}
  ~Responder() {
    if (answered_.exchange(true)) return;
    log::warn("http", "request handler dropped a request without answering; sending 500");
    deliver(HttpResponse{500, R"({"error":"the request handler did not answer"})"});
  }
  Responder(const Responder&) = delete;
  Responder& operator=(const Responder&) = delete;

  void answer(HttpResponse response) {
    if (answered_.exchange(true)) {
      log::warn("http", "request handler answered twice; the second answer is dropped");
      return;
    }
    deliver(std::move(response));
  }

 private:
  // An answer given on the connection's own strand (a handler that answers at once, before it
  // returns) is stored there and then, so the connection writes it without another trip
  // through the io_context; from any other thread it is posted to the strand.
  void deliver(HttpResponse response) {
    auto connection = connection_.lock();
    if (!connection) return;  // the connection is gone
    asio::dispatch(executor_, [connection, generation = generation_,
                               response = std::move(response)]() mutable {
      if (connection->generation != generation || connection->response) return;
      connection->response = std::move(response);
      connection->ready.cancel();
    });
  }

  std::weak_ptr<ConnectionState> connection_;
  std::uint64_t generation_;
  asio::any_io_executor executor_;
  std::atomic<bool> answered_{false};
};

// Closes a connection's stream on its strand. `only_if_overdue`: the sweep's close, which
// the connection may have outrun (its deadline moved on since the sweep looked); stop()'s close
// is unconditional and also wakes a connection waiting for its handler.
void close_connection(const std::shared_ptr<ConnectionState>& connection, bool only_if_overdue) {
  asio::dispatch(connection->ready.get_executor(), [connection, only_if_overdue] {
    if (only_if_overdue && !connection->overdue(Clock::now())) return;
    if (connection->close_stream) connection->close_stream();
    if (!only_if_overdue) connection->ready.cancel();
  });
}

// Deadlines: while a server has connections open, a sweep on the acceptor's strand looks every
// sweep period for connections past their deadline and closes them; a read or write in
// progress then ends with an error, as it would on a timer of its own. The sweep ends when the
// last connection does (an idle server wakes nobody) and is started again by the next.
Clock::duration sweep_period(const HttpLimits& limits) {
  return std::clamp<Clock::duration>(limits.read_timeout / 4, kMinSweepPeriod, kMaxSweepPeriod);
}

asio::awaitable<void> sweep_loop(std::shared_ptr<ServerCore> core, asio::any_io_executor ex) {
  asio::steady_timer timer(ex);
  core->sweep_timer = &timer;
  // Unregistered however the loop ends, before the timer goes.
  struct Unregister {
    ServerCore& core;
    asio::steady_timer* timer;
    ~Unregister() {
      if (core.sweep_timer == timer) core.sweep_timer = nullptr;
    }
  } unregister{*core, &timer};
  std::vector<std::shared_ptr<ConnectionState>> overdue;
  for (;;) {
    timer.expires_after(sweep_period(core->limits));
    error_code ec;
    co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    const auto now = Clock::now();
    {
      std::lock_guard lock(core->mu);
      if (core->live.empty() || core->stopped) {
        core->sweeping = false;
        co_return;
      }
      for (const auto& [id, connection] : core->live) {
        if (connection->overdue(now)) overdue.push_back(connection);
      }
    }
    for (const auto& connection : overdue) close_connection(connection, true);
    overdue.clear();
  }
}

// Registers a connection with the server for stop() and the sweep, for the life of the
// coroutine frame (declared after the stream, so it ends first). Both close the stream on the
// connection's strand, and only while the connection lives.
class LiveConnection {
 public:
  LiveConnection(std::shared_ptr<ServerCore> core, std::shared_ptr<ConnectionState> connection,
                 std::function<void()> close_stream, const asio::any_io_executor& sweep_executor)
      : core_(std::move(core)), connection_(std::move(connection)) {
    connection_->close_stream = std::move(close_stream);
    bool start_sweep = false;
    {
      std::lock_guard lock(core_->mu);
      id_ = core_->next_connection_id++;
      core_->live.emplace(id_, connection_);
      start_sweep = !std::exchange(core_->sweeping, true);
    }
    if (start_sweep) {
      asio::co_spawn(
          sweep_executor, sweep_loop(core_, sweep_executor),
          on_coroutine_exit(core_->name + " deadline sweep", [core = core_](const std::string&) {
            std::lock_guard lock(core->mu);
            core->sweeping = false;  // the next connection starts one
          }));
    }
  }
  ~LiveConnection() {
    connection_->close_stream = nullptr;
    std::lock_guard lock(core_->mu);
    core_->live.erase(id_);
    core_->at_capacity = false;
  }
  LiveConnection(const LiveConnection&) = delete;
  LiveConnection& operator=(const LiveConnection&) = delete;

 private:
  std::shared_ptr<ServerCore> core_;
  std::shared_ptr<ConnectionState> connection_;
  std::uint64_t id_ = 0;
};

template <class Stream>
constexpr bool kIsTls = std::is_same_v<Stream, TlsStream>;

std::string json_error(std::string_view message) {
  std::string escaped;
  for (char c : message) {
    if (c == '"' || c == '\\') escaped += '\\';
    escaped += c;
  }
  return R"({"error":")" + escaped + "\"}";
}

// The answer to a request that could not be read, or nothing when the connection just ended
// (closed by the client, timed out, reset) and there is nobody to answer.
std::optional<HttpResponse> answer_for_read_error(const error_code& ec, const HttpLimits& limits) {
  if (ec == http::error::body_limit) {
    return HttpResponse{413, json_error("request body larger than " +
                                        std::to_string(limits.max_body_bytes) + " bytes")};
  }
  if (ec == http::error::header_limit) {
    return HttpResponse{431, json_error("request line and headers larger than " +
                                        std::to_string(limits.max_header_bytes) + " bytes")};
  }
  if (ec == http::error::end_of_stream || ec == http::error::partial_message) return std::nullopt;
  if (ec.category() == http::make_error_code(http::error::bad_target).category()) {
    return HttpResponse{400, json_error("malformed HTTP request: " + ec.message())};
  }
  return std::nullopt;
}

bool is_token_char(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) ||
         std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

bool valid_header(const std::string& name, const std::string& value) {
  if (name.empty() || !std::all_of(name.begin(), name.end(), is_token_char)) return false;
  return value.find_first_of(std::string_view("\r\n\0", 3)) == std::string::npos;
}

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

http::response<http::string_body> build_response(HttpResponse r, unsigned version, bool keep_alive,
                                                 bool head) {
  if (r.status < 200 || r.status > 599) {
    log::warn("http", "request handler answered with status {}; sending 500", r.status);
    r = HttpResponse{500, json_error("the request handler gave an invalid status")};
  }
  http::response<http::string_body> res{static_cast<http::status>(r.status), version};
  res.set(http::field::server, "cairn");
  bool bodiless = r.status == 204 || r.status == 304;
  std::string content_type = r.content_type;
  for (auto& [name, value] : r.headers) {
    if (!valid_header(name, value)) {
      log::warn("http", "request handler gave an invalid header '{}'; dropped", name);
      continue;
    }
    if (iequals(name, "content-length") || iequals(name, "transfer-encoding") ||
        iequals(name, "connection")) {
      continue;  // message framing is the server's job
    }
    if (iequals(name, "content-type")) {
      content_type = value;
      continue;
    }
    res.insert(name, value);
  }
  if (!bodiless && !content_type.empty() && valid_header("Content-Type", content_type)) {
    res.set(http::field::content_type, content_type);
  }
  res.keep_alive(keep_alive);
  if (bodiless) {
    // Beast refuses a body here, and so does HTTP.
    res.body().clear();
    res.prepare_payload();
  } else if (head) {
    // A HEAD answer announces the length of the body it does not send.
    res.content_length(r.body.size());
  } else {
    res.body() = std::move(r.body);
    res.prepare_payload();
  }
  return res;
}

template <class Stream>
auto& lowest(Stream& stream) {
  return beast::get_lowest_layer(stream);
}

// Ends a connection we decided to close after an error answer: tell the client we are done
// sending (plain streams) and read what it still sends for a short while.
template <class Stream>
asio::awaitable<void> linger(Stream& stream, ConnectionState& connection,
                             const HttpLimits& limits) {
  error_code ec;
  if constexpr (!kIsTls<Stream>) {
    lowest(stream).shutdown(asio::socket_base::shutdown_send, ec);
  }
  connection.expires_after(std::min<Clock::duration>(limits.read_timeout, kMaxLingerTime));
  std::array<char, 16 * 1024> scratch;
  std::size_t drained = 0;
  while (drained < kMaxDrainBytes) {
    std::size_t n = co_await stream.async_read_some(asio::buffer(scratch),
                                                    asio::redirect_error(asio::use_awaitable, ec));
    if (ec) break;
    drained += n;
  }
}

// Ends a connection after a normal "Connection: close" answer.
template <class Stream>
asio::awaitable<void> close_politely(Stream& stream, ConnectionState& connection) {
  error_code ec;
  if constexpr (kIsTls<Stream>) {
    connection.expires_after(kTlsShutdownTime);
    co_await stream.async_shutdown(asio::redirect_error(asio::use_awaitable, ec));
  } else {
    lowest(stream).shutdown(asio::socket_base::shutdown_send, ec);
  }
  lowest(stream).close(ec);
}

template <class Stream>
asio::awaitable<bool> write_response(Stream& stream, ConnectionState& connection,
                                     http::response<http::string_body>& res,
                                     const HttpLimits& limits) {
  error_code ec;
  connection.expires_after(limits.read_timeout);
  co_await http::async_write(stream, res, asio::redirect_error(asio::use_awaitable, ec));
  if (ec) log::debug("http", "writing a response failed: {}", ec.message());
  co_return !ec;
}

// What a request's body may take while it is read: its Content-Length, or for a chunked body
// the most it may grow to.
std::size_t body_claim(const http::request_parser<http::string_body>& parser,
                       const HttpLimits& limits) {
  if (parser.is_done()) return 0;
  const auto length = parser.content_length();
  return length ? static_cast<std::size_t>(*length) : limits.max_body_bytes;
}

bool expects_continue(const http::request_parser<http::string_body>& parser) {
  const auto& req = parser.get();
  auto expect_field = req[http::field::expect];
  std::string_view expect(expect_field.data(), expect_field.size());
  return !parser.is_done() && iequals(expect, "100-continue") && req.version() >= 11;
}

// Reads requests and writes answers until the connection ends. `stream` is connected (and,
// for TLS, handshaken).
template <class Stream>
asio::awaitable<void> serve_http(Stream& stream, std::shared_ptr<ServerCore> core,
                                 std::shared_ptr<ConnectionState> connection, std::string peer) {
  const HttpLimits& limits = core->limits;
  beast::flat_buffer buffer;
  for (;;) {
    http::request_parser<http::string_body> parser;
    parser.header_limit(static_cast<std::uint32_t>(
        std::min<std::size_t>(limits.max_header_bytes, std::numeric_limits<std::uint32_t>::max())));
    parser.body_limit(limits.max_body_bytes);
    error_code ec;
    connection->expires_after(limits.read_timeout);
    co_await http::async_read_header(stream, buffer, parser,
                                     asio::redirect_error(asio::use_awaitable, ec));
    std::optional<ByteClaim> reading;
    if (!ec) {
      const std::size_t claim = body_claim(parser, limits);
      reading = ByteClaim::take(core->reading_bodies, claim);
      if (!reading) {
        log::debug("http", "{} refused a body of {} bytes from {}: max_reading_body_bytes {}",
                   core->name, claim, peer, limits.max_reading_body_bytes);
        HttpResponse busy{503, json_error("the server is reading other requests' bodies (" +
                                          std::to_string(limits.max_reading_body_bytes) +
                                          " bytes at once); retry later")};
        busy.headers.emplace_back("Retry-After", "1");
        auto res = build_response(std::move(busy), 11, false, false);
        if (co_await write_response(stream, *connection, res, limits)) {
          co_await linger(stream, *connection, limits);
        }
        co_return;
      }
    }
    if (!ec && expects_continue(parser)) {
      // curl and others wait for this before sending a large body.
      http::response<http::empty_body> go_on{http::status::continue_, 11};
      co_await http::async_write(stream, go_on, asio::redirect_error(asio::use_awaitable, ec));
    }
    if (!ec) co_await detail::read_rest(stream, buffer, parser, ec);
    reading.reset();  // read: the handler's own limits take over
    if (ec) {
      auto answer = answer_for_read_error(ec, limits);
      if (!answer) {
        log::debug("http", "{} connection from {} ended: {}", core->name, peer, ec.message());
        co_return;
      }
      log::debug("http", "{} refused a request from {}: {}", core->name, peer, ec.message());
      auto res = build_response(std::move(*answer), 11, false, false);
      if (co_await write_response(stream, *connection, res, limits)) {
        co_await linger(stream, *connection, limits);
      }
      co_return;
    }
    connection->expires_never();  // the handler owns the time it takes

    auto& req = parser.get();
    HttpRequest request{std::string(req.method_string()), std::string(req.target()),
                        std::move(req.body())};
    for (const auto& field : req) {
      request.headers.emplace_back(std::string(field.name_string()), std::string(field.value()));
    }
    request.peer = peer;
    bool head = req.method() == http::verb::head;

    connection->response.reset();
    ++connection->generation;
    auto responder = std::make_shared<Responder>(connection, connection->generation,
                                                 connection->ready.get_executor());
    try {
      core->handler(request, [responder](HttpResponse r) { responder->answer(std::move(r)); });
    } catch (const std::exception& e) {
      // Handlers are not supposed to throw; one that does must not take the server down.
      log::error("http", "request handler for {} {} threw: {}", request.method, request.target,
                 e.what());
    }
    responder.reset();  // if the handler kept no copy of respond, this answers 500 now
    if (!connection->response && !core->stopped) {
      connection->ready.expires_at(asio::steady_timer::time_point::max());
      co_await connection->ready.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    }
    if (!connection->response || core->stopped) co_return;  // closed by stop()

    bool keep_alive = req.keep_alive() && !core->stopped;
    auto res = build_response(std::move(*connection->response), req.version(), keep_alive, head);
    connection->response.reset();
    if (!co_await write_response(stream, *connection, res, limits)) co_return;
    if (!keep_alive) {
      co_await close_politely(stream, *connection);
      co_return;
    }
  }
}

std::string peer_name(const tcp::socket& socket) {
  error_code ec;
  auto ep = socket.remote_endpoint(ec);
  if (ec) return "unknown";
  auto address = ep.address().to_string();
  if (ep.address().is_v6()) address = "[" + address + "]";
  return address + ":" + std::to_string(ep.port());
}

template <class Stream>
std::function<void()> closer(Stream& stream) {
  return [&stream] {
    error_code ignored;
    lowest(stream).close(ignored);
  };
}

}  // namespace http_server_detail

using namespace http_server_detail;

struct HttpServer::State {
  State(asio::io_context& context, std::shared_ptr<ServerCore> c, ssl::context* t)
      : io(context), core(std::move(c)), acceptor(asio::make_strand(context)), tls(t) {}
  asio::io_context& io;
  std::shared_ptr<ServerCore> core;
  tcp::acceptor acceptor;  // on its own strand, like every connection
  ssl::context* tls;
};

struct UnixHttpServer::State {
  State(asio::io_context& context, std::shared_ptr<ServerCore> c)
      : io(context), core(std::move(c)), acceptor(asio::make_strand(context)) {}
  asio::io_context& io;
  std::shared_ptr<ServerCore> core;
  local::acceptor acceptor;
  std::string path;
};

namespace http_server_detail {

asio::awaitable<void> serve_connection(tcp::socket socket,
                                       std::shared_ptr<HttpServer::State> state) {
  auto core = state->core;
  std::string peer = peer_name(socket);
  // A response goes out in more than one write (TLS records, a kept connection's next answer):
  // Nagle would hold the last one back until the client's delayed ACK, milliseconds a request.
  error_code nodelay_ec;
  socket.set_option(tcp::no_delay(true), nodelay_ec);
  auto connection = std::make_shared<ConnectionState>(socket.get_executor());
  const auto sweep_executor = state->acceptor.get_executor();
  if (!state->tls) {
    LiveConnection live(core, connection, closer(socket), sweep_executor);
    co_await serve_http(socket, core, connection, peer);
    co_return;
  }
  TlsStream stream(std::move(socket), *state->tls);
  LiveConnection live(core, connection, closer(stream), sweep_executor);
  error_code ec;
  connection->expires_after(core->limits.read_timeout);
  co_await stream.async_handshake(ssl::stream_base::server,
                                  asio::redirect_error(asio::use_awaitable, ec));
  if (ec) {
    log::debug("http", "{} TLS handshake with {} failed: {}", core->name, peer, ec.message());
    co_return;
  }
  co_await serve_http(stream, core, connection, peer);
}

asio::awaitable<void> serve_connection(local::socket socket,
                                       std::shared_ptr<UnixHttpServer::State> state) {
  auto core = state->core;
  auto connection = std::make_shared<ConnectionState>(socket.get_executor());
  // The caller's process id, for servers that authorise by process (the workload API).
  std::string peer = "unix";
  ucred cred{};
  socklen_t len = sizeof cred;
  if (::getsockopt(socket.native_handle(), SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0) {
    peer = "unix:pid=" + std::to_string(cred.pid);
  }
  LiveConnection live(core, connection, closer(socket), state->acceptor.get_executor());
  co_await serve_http(socket, core, connection, peer);
}

template <class State>
asio::awaitable<void> accept_loop(std::shared_ptr<State> state) {
  auto& core = *state->core;
  for (;;) {
    error_code ec;
    // Each connection on a strand of its own: its coroutine, its timers and the answers
    // delivered to it never run on two threads at once.
    const asio::any_io_executor connection_executor = asio::make_strand(state->io);
    auto socket = co_await state->acceptor.async_accept(
        connection_executor, asio::redirect_error(asio::use_awaitable, ec));
    if (core.stopped || !state->acceptor.is_open()) co_return;
    if (ec) {
      log::warn("http", "accept on {} failed: {}", core.name, ec.message());
      asio::steady_timer pause(state->acceptor.get_executor(), kAcceptRetryDelay);
      co_await pause.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      continue;
    }
    bool refuse = false;
    {
      std::lock_guard lock(core.mu);
      if (core.live.size() >= core.limits.max_connections) {
        refuse = true;
        if (!core.at_capacity) {
          log::warn("http", "{} has {} connections open, the limit; refusing new ones", core.name,
                    core.live.size());
          core.at_capacity = true;
        }
      }
    }
    if (refuse) {
      socket.close(ec);
      continue;
    }
    // The connection's stream and registration are released by the coroutine's own
    // destructors; a throw only needs to be logged (and its request gets no answer).
    asio::co_spawn(connection_executor, serve_connection(std::move(socket), state),
                   on_coroutine_exit(core.name + " connection", [](const std::string&) {}));
  }
}

// Starts the accept loop on the acceptor's strand: start() may be called from another thread.
template <class State>
void spawn_accept_loop(const std::shared_ptr<State>& state) {
  asio::dispatch(state->acceptor.get_executor(), [state] {
    asio::co_spawn(
        state->acceptor.get_executor(), accept_loop(state),
        on_coroutine_exit(state->core->name + " accept loop", [state](const std::string&) {
          // Keep serving: start accepting again unless the server
          // is stopping.
          if (!state->core->stopped && state->acceptor.is_open()) {
            spawn_accept_loop(state);
          }
        }));
  });
}

// Runs on the acceptor's strand: stop accepting, close every connection (each on its strand).
void stop_core(ServerCore& core) {
  core.stopped = true;
  if (core.sweep_timer) core.sweep_timer->cancel();  // it ends at once
  std::unordered_map<std::uint64_t, std::shared_ptr<ConnectionState>> live;
  {
    std::lock_guard lock(core.mu);
    live = core.live;
  }
  for (auto& [id, connection] : live) close_connection(connection, false);
}

}  // namespace http_server_detail

Result<std::shared_ptr<HttpServer>> HttpServer::start(asio::io_context& io, const std::string& host,
                                                      std::uint16_t port, ssl::context* tls,
                                                      HttpHandler handler, HttpLimits limits) {
  error_code ec;
  auto address = asio::ip::make_address(host, ec);
  if (ec) {
    return make_error(errc::invalid_argument,
                      "HTTP listen address '" + host + "' is not an IP address (e.g. 127.0.0.1)");
  }
  tcp::endpoint endpoint(address, port);
  std::string name = (address.is_v6() ? "[" + host + "]" : host) + ":" + std::to_string(port);
  auto core = std::make_shared<ServerCore>(std::move(handler), limits, name);
  auto state = std::make_shared<State>(io, core, tls);
  state->acceptor.open(endpoint.protocol(), ec);
  if (!ec) state->acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) state->acceptor.bind(endpoint, ec);
  if (!ec) state->acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    return make_error(errc::io_error, "cannot listen on " + name + ": " + ec.message() +
                                          " (is another server using the port?)");
  }
  std::uint16_t bound = state->acceptor.local_endpoint(ec).port();
  if (ec) return make_error(errc::io_error, "cannot read the port of " + name);
  core->name = (address.is_v6() ? "[" + host + "]" : host) + ":" + std::to_string(bound);
  log::info("http", "listening on {}{}", core->name, tls ? " (TLS)" : "");
  spawn_accept_loop(state);
  return std::shared_ptr<HttpServer>(new HttpServer(state, bound));
}

HttpServer::~HttpServer() { stop(); }

void HttpServer::stop() {
  if (state_->core->stop_requested.exchange(true)) return;
  // On the acceptor's strand: the accept loop runs there.
  asio::dispatch(state_->acceptor.get_executor(), [state = state_] {
    error_code ec;
    state->acceptor.close(ec);
    stop_core(*state->core);
  });
}

Result<std::shared_ptr<UnixHttpServer>> UnixHttpServer::start(asio::io_context& io,
                                                              const std::string& socket_path,
                                                              HttpHandler handler,
                                                              HttpLimits limits) {
  auto core = std::make_shared<ServerCore>(std::move(handler), limits, socket_path);
  auto state = std::make_shared<State>(io, core);
  state->path = socket_path;
  std::error_code fs_ec;
  std::filesystem::create_directories(std::filesystem::path(socket_path).parent_path(), fs_ec);
  std::filesystem::remove(socket_path, fs_ec);  // a socket file left by a previous run
  error_code ec;
  state->acceptor.open(local(), ec);
  if (!ec) state->acceptor.bind(local::endpoint(socket_path), ec);
  if (!ec) state->acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    return make_error(errc::io_error, "cannot listen on " + socket_path + ": " + ec.message());
  }
  ::chmod(socket_path.c_str(), 0660);
  spawn_accept_loop(state);
  return std::shared_ptr<UnixHttpServer>(new UnixHttpServer(state));
}

UnixHttpServer::~UnixHttpServer() { stop(); }

void UnixHttpServer::stop() {
  if (state_->core->stop_requested.exchange(true)) return;
  asio::dispatch(state_->acceptor.get_executor(), [state = state_] {
    error_code ec;
    state->acceptor.close(ec);
    std::error_code fs_ec;
    std::filesystem::remove(state->path, fs_ec);
    stop_core(*state->core);
  });
}

}  // namespace cairn::net
