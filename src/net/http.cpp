#include "net/http.hpp"

#include <filesystem>

#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include "core/crypto.hpp"
#include "core/log.hpp"
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>

namespace cairn::net {
namespace {

namespace beast = boost::beast;
namespace http = boost::beast::http;
using local = asio::local::stream_protocol;

// Requests to a local control API are small; a bound keeps a misbehaving client from
// making the daemon allocate without limit.
constexpr std::size_t kMaxRequestBody = 1024 * 1024;

}  // namespace

struct UnixHttpServer::State {
  State(asio::io_context& io, HttpHandler h) : acceptor(io), handler(std::move(h)) {}
  local::acceptor acceptor;
  HttpHandler handler;
  std::string path;
};

namespace {

asio::awaitable<void> serve_connection(local::socket socket,
                                       std::shared_ptr<UnixHttpServer::State> state) {
  beast::flat_buffer buffer;
  for (;;) {
    http::request_parser<http::string_body> parser;
    parser.body_limit(kMaxRequestBody);
    error_code ec;
    co_await http::async_read(socket, buffer, parser,
                              asio::redirect_error(asio::use_awaitable, ec));
    if (ec) co_return;  // closed, or a request we cannot parse: nothing to answer
    auto& req = parser.get();
    HttpRequest request{std::string(req.method_string()), std::string(req.target()), req.body()};
    bool keep_alive = req.keep_alive();

    // The handler may answer later (after a store commit): wait on a timer that respond cancels.
    auto executor = co_await asio::this_coro::executor;
    auto response = std::make_shared<HttpResponse>();
    auto ready =
        std::make_shared<asio::steady_timer>(executor, asio::steady_timer::time_point::max());
    state->handler(request, [response, ready, executor](HttpResponse r) {
      asio::post(executor, [response, ready, r = std::move(r)]() mutable {
        *response = std::move(r);
        ready->cancel();
      });
    });
    co_await ready->async_wait(asio::redirect_error(asio::use_awaitable, ec));

    http::response<http::string_body> res{static_cast<http::status>(response->status),
                                          req.version()};
    res.set(http::field::content_type, response->content_type);
    res.set(http::field::server, "cairnd");
    res.keep_alive(keep_alive);
    res.body() = std::move(response->body);
    res.prepare_payload();
    co_await http::async_write(socket, res, asio::redirect_error(asio::use_awaitable, ec));
    if (ec || !keep_alive) co_return;
  }
}

asio::awaitable<void> accept_loop(std::shared_ptr<UnixHttpServer::State> state) {
  for (;;) {
    error_code ec;
    local::socket socket =
        co_await state->acceptor.async_accept(asio::redirect_error(asio::use_awaitable, ec));
    if (ec == asio::error::operation_aborted || !state->acceptor.is_open()) co_return;
    if (ec) {
      log::warn("http", "accept on {} failed: {}", state->path, ec.message());
      continue;
    }
    asio::co_spawn(state->acceptor.get_executor(), serve_connection(std::move(socket), state),
                   asio::detached);
  }
}

}  // namespace

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

Result<std::shared_ptr<UnixHttpServer>> UnixHttpServer::start(asio::io_context& io,
                                                              const std::string& socket_path,
                                                              HttpHandler handler) {
  auto state = std::make_shared<State>(io, std::move(handler));
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
  asio::co_spawn(io, accept_loop(state), asio::detached);
  return std::shared_ptr<UnixHttpServer>(new UnixHttpServer(state));
}

UnixHttpServer::~UnixHttpServer() { stop(); }

void UnixHttpServer::stop() {
  if (!state_->acceptor.is_open()) return;
  // Close on the acceptor's executor: the accept loop may be running there.
  asio::post(state_->acceptor.get_executor(), [state = state_] {
    error_code ec;
    state->acceptor.close(ec);
    std::error_code fs_ec;
    std::filesystem::remove(state->path, fs_ec);
  });
}

Result<HttpResponse> unix_http_request(const std::string& socket_path, const HttpRequest& request,
                                       int timeout_secs) {
  asio::io_context io;
  local::socket socket(io);
  error_code ec;
  socket.connect(local::endpoint(socket_path), ec);
  if (ec) {
    return make_error(errc::unavailable, "cannot connect to " + socket_path + " (" + ec.message() +
                                             "): is cairnd running with this --home?");
  }
  http::request<http::string_body> req{http::string_to_verb(request.method), request.target, 11};
  req.set(http::field::host, "localhost");
  req.set(http::field::content_type, "application/json");
  req.body() = request.body;
  req.prepare_payload();
  // Blocking reads honour SO_RCVTIMEO: a hung daemon makes the CLI fail instead of hang.
  timeval tv{timeout_secs, 0};
  ::setsockopt(socket.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  http::write(socket, req, ec);
  if (ec)
    return make_error(errc::io_error, "request to " + socket_path + " failed: " + ec.message());
  beast::flat_buffer buffer;
  http::response<http::string_body> res;
  http::read(socket, buffer, res, ec);
  if (ec) return make_error(errc::io_error, "no answer from " + socket_path + ": " + ec.message());
  return HttpResponse{static_cast<int>(res.result_int()), res.body(),
                      std::string(res[http::field::content_type])};
}

}  // namespace cairn::net
