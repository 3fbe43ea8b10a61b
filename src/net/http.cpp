// Request/response helpers and the blocking HTTP clients (TCP with optional TLS, unix socket).
// The servers live in http_server.cpp.
#include "net/http.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <chrono>
#include <optional>

#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "core/crypto.hpp"
#include "core/json.hpp"
#include "core/log.hpp"
#include "net/body_read.hpp"
#include "net/http_session.hpp"
#include "net/spawn.hpp"

// Last: it holds for the code below.
#include "net/coroutine_warnings.hpp"

namespace cairn::net {
namespace {

namespace beast = boost::beast;
namespace http = boost::beast::http;
using local = asio::local::stream_protocol;
using Clock = std::chrono::steady_clock;

// A bound on what a client reads, so a broken or hostile server cannot exhaust memory.
constexpr std::size_t kMaxResponseBody = 64 * 1024 * 1024;

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

std::string find_header(const HttpHeaders& headers, std::string_view name) {
  for (const auto& [n, v] : headers) {
    if (iequals(n, name)) return v;
  }
  return {};
}

bool has_header(const HttpHeaders& headers, std::string_view name) {
  for (const auto& h : headers) {
    if (iequals(h.first, name)) return true;
  }
  return false;
}

bool is_ip_literal(const std::string& host) {
  error_code ec;
  asio::ip::make_address(host, ec);
  return !ec;
}

// Builds the wire request; `host_header` is used unless the caller set Host. Without
// `keep_alive` the request says `Connection: close`.
Result<http::request<http::string_body>> build_request(const HttpRequest& request,
                                                       const std::string& host_header,
                                                       bool keep_alive = false) {
  auto verb = http::string_to_verb(request.method);
  if (verb == http::verb::unknown) {
    return make_error(errc::invalid_argument, "unknown HTTP method '" + request.method + "'");
  }
  if (request.target.empty() || request.target.front() != '/' ||
      request.target.find_first_of(" \r\n") != std::string::npos) {
    return make_error(errc::invalid_argument,
                      "HTTP target '" + request.target + "' must be a path starting with '/'");
  }
  http::request<http::string_body> req{verb, request.target, 11};
  for (const auto& [name, value] : request.headers) {
    if (name.empty() || name.find_first_of(":\r\n ") != std::string::npos ||
        value.find_first_of("\r\n") != std::string::npos) {
      return make_error(errc::invalid_argument, "invalid HTTP header '" + name + "'");
    }
    // Framing is derived from the body below.
    if (iequals(name, "content-length") || iequals(name, "transfer-encoding")) {
      continue;
    }
    req.insert(name, value);
  }
  if (!has_header(request.headers, "host")) req.set(http::field::host, host_header);
  if (!has_header(request.headers, "user-agent")) req.set(http::field::user_agent, "cairn");
  if (!request.body.empty() && !has_header(request.headers, "content-type")) {
    req.set(http::field::content_type, "application/json");
  }
  // One request per connection unless the caller keeps it: say so, and the server need not
  // wait for another.
  req.keep_alive(keep_alive);
  req.body() = request.body;
  req.prepare_payload();
  return req;
}

HttpResponse to_response(http::response<http::string_body>& res) {
  HttpResponse out;
  out.status = static_cast<int>(res.result_int());
  out.content_type = std::string(res[http::field::content_type]);
  for (const auto& field : res) {
    out.headers.emplace_back(std::string(field.name_string()), std::string(field.value()));
  }
  out.body = std::move(res.body());
  return out;
}

// Writes the request and reads the response on a connected (and handshaken) stream.
// `buffer` holds what was read beyond the response (kept with a kept connection); `keep_alive`,
// when given, is set to whether the server lets the connection serve another request.
template <class Stream>
asio::awaitable<Result<HttpResponse>> exchange(Stream& stream,
                                               http::request<http::string_body>& req,
                                               beast::flat_buffer& buffer,
                                               Clock::time_point deadline, std::string where,
                                               int timeout_secs, bool* keep_alive = nullptr) {
  auto failed = [&](const char* what, const error_code& ec) {
    if (ec == beast::error::timeout) {
      return make_error(errc::timeout, std::string("no answer from ") + where + " within " +
                                           std::to_string(timeout_secs) + " s");
    }
    return make_error(errc::io_error, std::string(what) + " " + where + " failed: " + ec.message());
  };
  error_code ec;
  beast::get_lowest_layer(stream).expires_at(deadline);
  co_await http::async_write(stream, req, asio::redirect_error(asio::use_awaitable, ec));
  if (ec) co_return failed("sending the request to", ec);
  http::response_parser<http::string_body> parser;
  parser.body_limit(kMaxResponseBody);
  if (req.method() == http::verb::head) parser.skip(true);
  co_await http::async_read_header(stream, buffer, parser,
                                   asio::redirect_error(asio::use_awaitable, ec));
  if (!ec) co_await detail::read_rest(stream, buffer, parser, ec);
  if (ec) co_return failed("reading the response from", ec);
  if (keep_alive) *keep_alive = parser.get().keep_alive();
  co_return to_response(parser.get());
}

struct TcpCall {
  const HttpTarget* target;
  ssl::context* tls;  // null: plain TCP
  std::string name;   // server name to verify
  http::request<http::string_body>* req;
  int timeout_secs;
  std::optional<Result<HttpResponse>>* out;
};

// Makes OpenSSL check the certificate's name during the handshake: an IP SAN for an IP
// literal, a DNS SAN (or CN) otherwise. Also sets SNI for names.
Status set_peer_name(SSL* ssl, const std::string& name, bool verify) {
  bool ip = is_ip_literal(name);
  // RFC 6066: SNI carries host names only.
  if (!ip && SSL_set_tlsext_host_name(ssl, name.c_str()) != 1) {
    return make_error(errc::invalid_argument, "cannot use '" + name + "' as TLS server name");
  }
  if (!verify) return {};
  int ok = ip ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), name.c_str())
              : SSL_set1_host(ssl, name.c_str());
  if (ok != 1) {
    return make_error(errc::invalid_argument, "cannot verify TLS server name '" + name + "'");
  }
  return {};
}

asio::awaitable<Status> connect_tcp(beast::tcp_stream& stream,
                                    const tcp::resolver::results_type& endpoints,
                                    Clock::time_point deadline, const std::string& where) {
  error_code ec;
  stream.expires_at(deadline);
  co_await stream.async_connect(endpoints, asio::redirect_error(asio::use_awaitable, ec));
  if (ec) {
    co_return make_error(ec == beast::error::timeout ? errc::timeout : errc::unavailable,
                         "cannot connect to " + where + ": " + ec.message());
  }
  co_return Status{};
}

std::string host_header_of(const HttpTarget& target, bool use_tls) {
  std::string host = is_ip_literal(target.host) && target.host.find(':') != std::string::npos
                         ? "[" + target.host + "]"
                         : target.host;
  if (target.port != (use_tls ? 443 : 80)) host += ":" + std::to_string(target.port);
  return host;
}

std::string where_of(const HttpTarget& target) {
  return (is_ip_literal(target.host) && target.host.find(':') != std::string::npos
              ? "[" + target.host + "]"
              : target.host) +
         ":" + std::to_string(target.port);
}

Result<tcp::resolver::results_type> resolve(asio::any_io_executor executor,
                                            const HttpTarget& target) {
  error_code ec;
  tcp::resolver resolver(executor);
  // Resolution is synchronous: IP literals resolve at once, and this is a blocking call anyway.
  auto endpoints = resolver.resolve(target.host, std::to_string(target.port),
                                    tcp::resolver::numeric_service, ec);
  if (ec) {
    return make_error(errc::unavailable, "cannot resolve " + target.host + ": " + ec.message());
  }
  return endpoints;
}

// Connects and completes the TLS handshake, checking the certificate against `name`.
asio::awaitable<Status> connect_tls(ssl::stream<beast::tcp_stream>& stream,
                                    const tcp::resolver::results_type& endpoints,
                                    const HttpTarget& target, const std::string& name,
                                    Clock::time_point deadline, const std::string& where) {
  if (auto s = set_peer_name(stream.native_handle(), name, target.verify); !s) co_return s;
  if (auto s = co_await connect_tcp(beast::get_lowest_layer(stream), endpoints, deadline, where);
      !s) {
    co_return s;
  }
  error_code ec;
  co_await stream.async_handshake(ssl::stream_base::client,
                                  asio::redirect_error(asio::use_awaitable, ec));
  if (!ec) co_return Status{};
  long verify_result = SSL_get_verify_result(stream.native_handle());
  if (target.verify && verify_result != X509_V_OK) {
    co_return make_error(errc::unauthorized,
                         "TLS certificate of " + where + " not accepted: " +
                             X509_verify_cert_error_string(verify_result) + " (it must chain to " +
                             (target.ca_file.empty() ? "the system trust store" : target.ca_file) +
                             " and name '" + name + "')");
  }
  if (ec == beast::error::timeout) {
    co_return make_error(errc::timeout, "TLS handshake with " + where + " timed out");
  }
  co_return make_error(errc::unavailable, "TLS handshake with " + where +
                                              " failed: " + ec.message() + " (is it a TLS port?)");
}

asio::awaitable<void> tcp_call(TcpCall call) {
  auto& out = *call.out;
  const HttpTarget& target = *call.target;
  std::string where = where_of(target);
  auto deadline = Clock::now() + std::chrono::seconds(call.timeout_secs);
  auto executor = co_await asio::this_coro::executor;
  auto endpoints = resolve(executor, target);
  if (!endpoints) {
    out = std::move(endpoints).error();
    co_return;
  }
  beast::flat_buffer buffer;
  if (!call.tls) {
    beast::tcp_stream stream(executor);
    if (auto s = co_await connect_tcp(stream, *endpoints, deadline, where); !s) {
      out = std::move(s).error();
      co_return;
    }
    out = co_await exchange(stream, *call.req, buffer, deadline, where, call.timeout_secs);
    co_return;
  }
  ssl::stream<beast::tcp_stream> stream(executor, *call.tls);
  if (auto s = co_await connect_tls(stream, *endpoints, target, call.name, deadline, where); !s) {
    out = std::move(s).error();
    co_return;
  }
  out = co_await exchange(stream, *call.req, buffer, deadline, where, call.timeout_secs);
}

Result<std::unique_ptr<ssl::context>> client_tls_context(const HttpTarget& target) {
  std::unique_ptr<ssl::context> ctx;
  // ssl::context's constructor throws if OpenSSL cannot make a context; keep that inside.
  try {
    ctx = std::make_unique<ssl::context>(ssl::context::tls_client);
  } catch (const std::exception& e) {
    return make_error(errc::internal, std::string("cannot create a TLS context: ") + e.what());
  }
  error_code ec;
  ctx->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                       ssl::context::no_sslv3 | ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1,
                   ec);
  ctx->set_verify_mode(target.verify ? ssl::verify_peer : ssl::verify_none, ec);
  if (!target.ca_file.empty()) {
    ctx->load_verify_file(target.ca_file, ec);
    if (ec) {
      return make_error(errc::invalid_argument,
                        "cannot read CA file " + target.ca_file + ": " + ec.message());
    }
  } else if (target.verify) {
    ctx->set_default_verify_paths(ec);
  }
  return ctx;
}

asio::awaitable<void> unix_call(std::string socket_path, http::request<http::string_body>* req,
                                int timeout_secs, std::optional<Result<HttpResponse>>* out) {
  auto executor = co_await asio::this_coro::executor;
  auto deadline = Clock::now() + std::chrono::seconds(timeout_secs);
  beast::basic_stream<local> stream(executor);
  error_code ec;
  stream.expires_at(deadline);
  co_await stream.async_connect(local::endpoint(socket_path),
                                asio::redirect_error(asio::use_awaitable, ec));
  if (ec) {
    *out = make_error(errc::unavailable, "cannot connect to " + socket_path + " (" + ec.message() +
                                             "): is cairnd running with this --home?");
    co_return;
  }
  beast::flat_buffer buffer;
  *out = co_await exchange(stream, *req, buffer, deadline, socket_path, timeout_secs);
}

// What a streamed call and its watchdog share. The watchdog runs as a plain timer handler on
// the same single-threaded io_context, so no locking is needed.
struct StreamState {
  explicit StreamState(asio::any_io_executor executor) : socket(executor), timer(executor) {}
  local::socket socket;
  asio::steady_timer timer;
  Clock::time_point header_deadline;
  Clock::time_point last_data;
  bool in_body = false;
  bool finished = false;
  errc stopped = errc::ok;  // why the watchdog closed the socket: timeout or cancelled
};

// Re-arms itself every poll interval until the call finishes; closes the socket when the
// caller asks to stop or a deadline passes, which makes the pending read fail at once.
void arm_stream_watchdog(std::shared_ptr<StreamState> state, const HttpStreamOptions* options) {
  state->timer.expires_after(options->poll_interval);
  state->timer.async_wait([state, options](const error_code& ec) {
    if (ec || state->finished) return;
    auto now = Clock::now();
    if (options->stop && options->stop()) {
      state->stopped = errc::cancelled;
    } else if (!state->in_body && now >= state->header_deadline) {
      state->stopped = errc::timeout;
    } else if (state->in_body && options->idle_timeout_secs > 0 &&
               now - state->last_data >= std::chrono::seconds(options->idle_timeout_secs)) {
      state->stopped = errc::timeout;
    }
    if (state->stopped != errc::ok) {
      error_code ignored;
      state->socket.close(ignored);
      return;
    }
    arm_stream_watchdog(state, options);
  });
}

struct StreamCall {
  std::string socket_path;
  http::request<http::string_body>* req;
  const std::function<bool(std::string_view)>* on_body;
  const HttpStreamOptions* options;
  std::optional<Result<HttpResponse>>* out;
};

asio::awaitable<void> unix_stream_call(StreamCall call) {
  constexpr std::size_t kMaxErrorBody = 64 * 1024;
  auto executor = co_await asio::this_coro::executor;
  auto state = std::make_shared<StreamState>(executor);
  state->header_deadline =
      Clock::now() + std::chrono::seconds(std::max(1, call.options->header_timeout_secs));
  arm_stream_watchdog(state, call.options);
  auto& out = *call.out;
  auto fail = [&](const char* what, const error_code& ec) {
    if (state->stopped == errc::cancelled) {
      return make_error(errc::cancelled, "stream from " + call.socket_path + " stopped");
    }
    if (state->stopped == errc::timeout) {
      return make_error(errc::timeout,
                        std::string(state->in_body ? "stream from " : "no answer from ") +
                            call.socket_path + (state->in_body ? " went silent" : " in time"));
    }
    return make_error(errc::io_error,
                      std::string(what) + " " + call.socket_path + " failed: " + ec.message());
  };
  error_code ec;
  co_await state->socket.async_connect(local::endpoint(call.socket_path),
                                       asio::redirect_error(asio::use_awaitable, ec));
  if (ec) {
    out = state->stopped != errc::ok
              ? fail("connecting to", ec)
              : make_error(errc::unavailable,
                           "cannot connect to " + call.socket_path + " (" + ec.message() + ")");
  } else {
    co_await http::async_write(state->socket, *call.req,
                               asio::redirect_error(asio::use_awaitable, ec));
    beast::flat_buffer buffer;
    http::response_parser<http::buffer_body> parser;
    parser.body_limit(boost::none);  // on_body decides how much it takes
    if (!ec) {
      co_await http::async_read_header(state->socket, buffer, parser,
                                       asio::redirect_error(asio::use_awaitable, ec));
    }
    if (ec) {
      out = fail("talking to", ec);
    } else {
      state->in_body = true;
      state->last_data = Clock::now();
      HttpResponse head;
      const auto& msg = parser.get();
      head.status = static_cast<int>(msg.result_int());
      head.content_type = std::string(msg[http::field::content_type]);
      for (const auto& field : msg) {
        head.headers.emplace_back(std::string(field.name_string()), std::string(field.value()));
      }
      bool streaming = head.status >= 200 && head.status < 300;
      std::array<char, 16 * 1024> piece{};
      bool ended_by_caller = false;
      while (!parser.is_done()) {
        parser.get().body().data = piece.data();
        parser.get().body().size = piece.size();
        // read_some: returns with whatever part of the body arrived (one event of a stream), where
        // read would wait until the piece is full.
        co_await http::async_read_some(state->socket, buffer, parser,
                                       asio::redirect_error(asio::use_awaitable, ec));
        if (ec == http::error::need_buffer) ec = {};
        if (ec) break;
        std::size_t n = piece.size() - parser.get().body().size;
        if (n == 0) continue;
        state->last_data = Clock::now();
        if (!streaming) {
          head.body.append(piece.data(), std::min(n, kMaxErrorBody - head.body.size()));
          if (head.body.size() >= kMaxErrorBody) break;
        } else if (!(*call.on_body)(std::string_view(piece.data(), n))) {
          ended_by_caller = true;
          break;
        }
      }
      if (ec && !ended_by_caller) {
        out = fail("reading the response from", ec);
      } else {
        out = std::move(head);
      }
    }
  }
  state->finished = true;
  state->timer.cancel();
  error_code ignored;
  state->socket.close(ignored);
}

}  // namespace

std::string HttpRequest::header(std::string_view name) const { return find_header(headers, name); }

std::string HttpResponse::header(std::string_view name) const { return find_header(headers, name); }

HttpResponse json_response(int status, const nlohmann::json& body, std::string_view etag) {
  HttpResponse r{status, dump_json(body), "application/json", {}};
  if (!etag.empty()) r.headers.emplace_back("ETag", "\"" + std::string(etag) + "\"");
  return r;
}

std::string http_path(const std::string& target) { return target.substr(0, target.find('?')); }

std::string http_query_param(const std::string& target, const std::string& name) {
  auto q = target.find('?');
  if (q == std::string::npos) return {};
  std::string_view rest = std::string_view(target).substr(q + 1);
  while (!rest.empty()) {
    auto amp = rest.find('&');
    auto field = rest.substr(0, amp);
    rest = amp == std::string_view::npos ? std::string_view{} : rest.substr(amp + 1);
    auto eq = field.find('=');
    if (field.substr(0, eq) == name) {
      if (eq == std::string_view::npos) return {};
      auto v = crypto::url_decode(field.substr(eq + 1), true);
      return v ? *v : std::string{};
    }
  }
  return {};
}

Result<HttpResponse> http_request(const HttpTarget& target, const HttpRequest& request,
                                  int timeout_secs) {
  if (target.host.empty()) return make_error(errc::invalid_argument, "HTTP target has no host");
  if (target.port == 0) return make_error(errc::invalid_argument, "HTTP target has no port");
  if (timeout_secs <= 0) timeout_secs = 1;
  bool use_tls = target.tls || !target.ca_file.empty();
  std::string name = target.server_name.empty() ? target.host : target.server_name;
  auto req = build_request(request, host_header_of(target, use_tls));
  if (!req) return std::move(req).error();

  std::unique_ptr<ssl::context> tls;
  if (use_tls) {
    auto ctx = client_tls_context(target);
    if (!ctx) return std::move(ctx).error();
    tls = std::move(*ctx);
  }
  asio::io_context io;
  std::optional<Result<HttpResponse>> out;
  asio::co_spawn(io, tcp_call(TcpCall{&target, tls.get(), name, &*req, timeout_secs, &out}),
                 [&out](std::exception_ptr e) {
                   if (e)
                     out = make_error(errc::internal,
                                      "HTTP request failed: " + describe_exception(e));
                 });
  io.run();
  if (!out) return make_error(errc::internal, "HTTP request ended without a result");
  return std::move(*out);
}

struct HttpSession::Impl {
  HttpTarget target;
  int timeout_secs = 30;
  bool use_tls = false;
  std::string name;  // the name the certificate must carry
  std::string where;
  std::unique_ptr<ssl::context> tls;
  asio::io_context io{1};
  std::optional<beast::tcp_stream> plain;
  std::optional<ssl::stream<beast::tcp_stream>> secure;
  beast::flat_buffer buffer;
  std::size_t connections = 0;

  bool open() const { return plain.has_value() || secure.has_value(); }
  void close() {
    plain.reset();
    secure.reset();
    buffer.consume(buffer.size());
  }

  asio::awaitable<Status> connect(Clock::time_point deadline) {
    auto executor = co_await asio::this_coro::executor;
    auto endpoints = resolve(executor, target);
    if (!endpoints) co_return std::move(endpoints).error();
    if (!use_tls) {
      plain.emplace(executor);
      if (auto s = co_await connect_tcp(*plain, *endpoints, deadline, where); !s) {
        close();
        co_return s;
      }
    } else {
      secure.emplace(executor, *tls);
      if (auto s = co_await connect_tls(*secure, *endpoints, target, name, deadline, where); !s) {
        close();
        co_return s;
      }
    }
    // Requests on a kept connection are small writes waiting for an answer: no Nagle delay.
    error_code ec;
    (plain ? plain->socket() : secure->next_layer().socket()).set_option(tcp::no_delay(true), ec);
    ++connections;
    co_return Status{};
  }

  // One request on the kept connection, opening one when there is none. A request sent on a
  // kept connection that the server had closed meanwhile (idle timeout) fails before any
  // answer; an idempotent one is sent once more on a new connection.
  asio::awaitable<void> call(http::request<http::string_body>* req, bool idempotent,
                             std::optional<Result<HttpResponse>>* out) {
    auto deadline = Clock::now() + std::chrono::seconds(timeout_secs);
    for (int attempt = 0; attempt < 2; ++attempt) {
      const bool reused = open();
      if (!reused) {
        if (auto s = co_await connect(deadline); !s) {
          *out = std::move(s).error();
          co_return;
        }
      }
      bool keep = false;
      if (plain) {
        *out = co_await exchange(*plain, *req, buffer, deadline, where, timeout_secs, &keep);
      } else {
        *out = co_await exchange(*secure, *req, buffer, deadline, where, timeout_secs, &keep);
      }
      if (**out) {
        if (!keep) close();
        co_return;
      }
      close();
      if (!reused || !idempotent || (*out)->error().code == errc::timeout) co_return;
    }
  }
};

HttpSession::HttpSession(HttpTarget target, int timeout_secs) : impl_(std::make_unique<Impl>()) {
  impl_->use_tls = target.tls || !target.ca_file.empty();
  impl_->name = target.server_name.empty() ? target.host : target.server_name;
  impl_->where = where_of(target);
  impl_->timeout_secs = timeout_secs <= 0 ? 1 : timeout_secs;
  impl_->target = std::move(target);
}

HttpSession::~HttpSession() = default;
HttpSession::HttpSession(HttpSession&&) noexcept = default;
HttpSession& HttpSession::operator=(HttpSession&&) noexcept = default;

std::size_t HttpSession::connections_opened() const { return impl_->connections; }

Result<HttpResponse> HttpSession::request(const HttpRequest& request) {
  Impl& s = *impl_;
  if (s.target.host.empty()) return make_error(errc::invalid_argument, "HTTP target has no host");
  if (s.target.port == 0) return make_error(errc::invalid_argument, "HTTP target has no port");
  auto req = build_request(request, host_header_of(s.target, s.use_tls), true);
  if (!req) return std::move(req).error();
  if (s.use_tls && !s.tls) {
    auto ctx = client_tls_context(s.target);
    if (!ctx) return std::move(ctx).error();
    s.tls = std::move(*ctx);
  }
  const bool idempotent = req->method() == http::verb::get || req->method() == http::verb::head;
  std::optional<Result<HttpResponse>> out;
  s.io.restart();
  asio::co_spawn(s.io, s.call(&*req, idempotent, &out), [&out, &s](std::exception_ptr e) {
    if (e) {
      s.close();
      out = make_error(errc::internal, "HTTP request failed: " + describe_exception(e));
    }
  });
  s.io.run();
  if (!out) return make_error(errc::internal, "HTTP request ended without a result");
  return std::move(*out);
}

Result<HttpResponse> unix_http_request(const std::string& socket_path, const HttpRequest& request,
                                       int timeout_secs) {
  if (timeout_secs <= 0) timeout_secs = 1;
  auto req = build_request(request, "localhost");
  if (!req) return std::move(req).error();
  asio::io_context io;
  std::optional<Result<HttpResponse>> out;
  asio::co_spawn(
      io, unix_call(socket_path, &*req, timeout_secs, &out), [&out](std::exception_ptr e) {
        if (e) out = make_error(errc::internal, "HTTP request failed: " + describe_exception(e));
      });
  io.run();
  if (!out) return make_error(errc::internal, "HTTP request ended without a result");
  return std::move(*out);
}

Result<HttpResponse> unix_http_stream(const std::string& socket_path, const HttpRequest& request,
                                      const std::function<bool(std::string_view)>& on_body,
                                      const HttpStreamOptions& options) {
  auto req = build_request(request, "localhost");
  if (!req) return std::move(req).error();
  HttpStreamOptions opts = options;
  if (opts.poll_interval <= std::chrono::milliseconds::zero()) {
    opts.poll_interval = std::chrono::milliseconds(200);
  }
  asio::io_context io;
  std::optional<Result<HttpResponse>> out;
  asio::co_spawn(io, unix_stream_call(StreamCall{socket_path, &*req, &on_body, &opts, &out}),
                 [](const std::exception_ptr& e) {
                   if (!e) return;
                   try {
                     std::rethrow_exception(e);
                   } catch (const std::exception& ex) {
                     log::error("net", "HTTP stream failed: {}", ex.what());
                   }
                 });
  io.run();
  if (!out) return make_error(errc::internal, "HTTP stream ended without a result");
  return std::move(*out);
}

}  // namespace cairn::net
