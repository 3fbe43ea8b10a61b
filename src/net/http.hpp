// A small HTTP/1.1 server and client, over unix-domain sockets (the management API
// `mgmt.sock`, later the workload API) and over TCP with optional TLS (the cloud hub's REST
// API, the edge hub's module-to-module direct methods endpoint on 443).
//
// Servers speak HTTP/1.1 with keep-alive (the Node SDKs use keep-alive agents) and bound what
// a client can make them do: body size (413), header size (431), idle/slow clients (closed
// after `read_timeout`), concurrent connections. A malformed request gets 400 and the
// connection is closed. The handler never sees a request that broke a limit.
//
// Thread-safety: a server lives on one io_context, run by one thread; the handler runs there
// and must not block. It answers through `respond`, exactly once, possibly later and from any
// thread: respond posts to the connection's executor. A handler that drops `respond` without
// calling it makes the server answer 500. start/stop/port may be called from any thread; stop
// takes effect on the server's executor (at once when called there). Destroy a server before
// its io_context.
// The client functions are blocking, self-contained (their own io_context) and meant for
// command-line tools and tests; never call them on an io_context thread.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "core/result.hpp"
#include "net/asio.hpp"

namespace cairn::net {

using HttpHeaders = std::vector<std::pair<std::string, std::string>>;

struct HttpRequest {
  std::string method;  // "GET", "POST", ...
  std::string target;  // path and query, e.g. "/identities/m1/token?ttl=60"
  std::string body;
  // Server side: every header as received, in order. Client side: headers to send; Host,
  // Content-Type (application/json when there is a body), Content-Length and User-Agent are
  // filled in when absent.
  HttpHeaders headers = {};
  std::string peer = {};  // server side: "ip:port" of the client ("unix" on a unix socket)

  // Case-insensitive lookup of the first header with this name; "" when absent.
  std::string header(std::string_view name) const;
};

struct HttpResponse {
  int status = 200;
  std::string body;
  // Sent as Content-Type when non-empty (and the body is allowed one).
  std::string content_type = "application/json";
  // Server side: extra headers to send, e.g. ETag. Content-Length, Transfer-Encoding and
  // Connection belong to the server and are ignored here. Client side: every header received.
  HttpHeaders headers = {};

  // Case-insensitive lookup of the first header with this name; "" when absent.
  std::string header(std::string_view name) const;
};

// A JSON reply written with the one lenient writer (core/json.hpp): any bytes in `body`
// (a module id from the URL, a payload from a module) give a valid reply, never a throw.
// `etag` non-empty adds an ETag header with the value in quotes.
HttpResponse json_response(int status, const nlohmann::json& body, std::string_view etag = {});

// Splits "/a/b?x=1&y=2" into the path and the value of one query parameter.
std::string http_path(const std::string& target);
std::string http_query_param(const std::string& target, const std::string& name);

using HttpRespond = std::function<void(HttpResponse)>;
// The request is the handler's during the call: it may take the body (work queued for later
// keeps it without a copy); the server reads nothing of it afterwards but the method and target.
using HttpHandler = std::function<void(HttpRequest&, HttpRespond)>;

struct HttpLimits {
  // Larger bodies get 413 before they are read. Method calls carry at most 128 KB each way,
  // twin documents 32 KB; 1 MiB leaves room without letting a client make us allocate freely.
  std::size_t max_body_bytes = 1024 * 1024;
  // Request line plus headers; larger gets 431. SAS tokens and certificates in headers fit.
  std::size_t max_header_bytes = 16 * 1024;
  // Time allowed to send one whole request (and to read one response, and for the TLS
  // handshake); an idle keep-alive connection is closed after this too. Waiting for the
  // handler is not limited here: the handler owns its own timeouts. The server checks it every
  // quarter of itself (at least every second, at most every 50 ms), so a connection may outlive
  // it by that much.
  std::chrono::seconds read_timeout{30};
  // Connections accepted beyond this are closed at once; each costs a socket and buffers.
  std::size_t max_connections = 256;
  // Request body bytes being read at once, over all connections: each request claims its
  // Content-Length (a chunked one, max_body_bytes) from the header until its body is read. One
  // that would go past this gets 503 with Retry-After and its connection closed; a body alone
  // always passes. Without it, max_connections bodies of max_body_bytes could be read at once.
  std::size_t max_reading_body_bytes = 64 * 1024 * 1024;
};

// HTTP over TCP, with TLS when `tls` is non-null.
class HttpServer {
 public:
  // Listens on `host` (an IP literal: "127.0.0.2", "0.0.0.0", "::") and `port` (0 picks a free
  // port; see port()). `tls`, when given, must be a server context with certificate and key
  // loaded, and must outlive the server and its connections (i.e. the io_context's run).
  static Result<std::shared_ptr<HttpServer>> start(asio::io_context& io, const std::string& host,
                                                   std::uint16_t port, ssl::context* tls,
                                                   HttpHandler handler, HttpLimits limits = {});
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // The port actually bound.
  std::uint16_t port() const { return port_; }
  // Stops accepting and closes every connection; responses still pending are dropped.
  void stop();

  struct State;  // shared with the accept loop and connections

 private:
  HttpServer(std::shared_ptr<State> state, std::uint16_t port)
      : state_(std::move(state)), port_(port) {}
  std::shared_ptr<State> state_;
  std::uint16_t port_;
};

class UnixHttpServer {
 public:
  // Binds `socket_path` (replacing a stale socket file) with mode 0660 and starts accepting.
  static Result<std::shared_ptr<UnixHttpServer>> start(asio::io_context& io,
                                                       const std::string& socket_path,
                                                       HttpHandler handler, HttpLimits limits = {});
  ~UnixHttpServer();
  UnixHttpServer(const UnixHttpServer&) = delete;
  UnixHttpServer& operator=(const UnixHttpServer&) = delete;
  // Stops accepting, closes every connection and removes the socket file.
  void stop();

  struct State;  // shared with the accept loop and connections

 private:
  explicit UnixHttpServer(std::shared_ptr<State> state) : state_(std::move(state)) {}
  std::shared_ptr<State> state_;
};

// Where http_request connects.
struct HttpTarget {
  std::string host;  // IP literal or DNS name
  std::uint16_t port = 443;
  bool tls = true;      // TLS is also used whenever ca_file is set
  std::string ca_file;  // PEM bundle to trust; empty: the system's trust store
  // SNI and the name the certificate must carry; defaults to host. An IP literal is checked
  // against the certificate's IP SANs and is not sent as SNI.
  std::string server_name;
  // Check the chain and the name. Off only for tests and diagnostics.
  bool verify = true;
};

// Sends one request on a new connection and waits for the answer; the whole exchange is
// bounded by `timeout_secs`. Any HTTP status is a successful Result; errors are for failing
// to get one (unavailable, timeout, io_error, invalid_argument for a bad target).
Result<HttpResponse> http_request(const HttpTarget& target, const HttpRequest& request,
                                  int timeout_secs = 30);

// The same over a unix socket (Host: localhost).
Result<HttpResponse> unix_http_request(const std::string& socket_path, const HttpRequest& request,
                                       int timeout_secs = 30);

// Options of unix_http_stream.
struct HttpStreamOptions {
  // Bounds connecting and receiving the status line and headers. A container engine answers
  // its event stream's headers at once; 30 s matches unix_http_request's default.
  int header_timeout_secs = 30;
  // Longest silence allowed between two pieces of a streamed body; 0 waits forever (an event
  // stream is silent while nothing happens). Hitting it ends the call with errc::timeout.
  int idle_timeout_secs = 0;
  // Polled every `poll_interval` while waiting; returning true ends the call with
  // errc::cancelled. This is how another thread stops an endless stream.
  std::function<bool()> stop = {};
  // How often `stop` is polled: the delay before a stop takes effect, against wake-ups.
  std::chrono::milliseconds poll_interval{200};
};

// Sends one request over a unix socket and hands a 2xx response's body to `on_body` piece by
// piece as it arrives (chunked framing removed), for answers that are long or endless: a
// container engine's event stream, followed logs, image pull progress. `on_body` returns false
// to stop reading (a successful end). A response that is not 2xx is not streamed: its body (at
// most 64 KiB) comes back in the HttpResponse as from unix_http_request. Otherwise the returned
// HttpResponse carries the status and headers, with an empty body.
// Blocking, with its own io_context; never call it on an io_context thread.
Result<HttpResponse> unix_http_stream(const std::string& socket_path, const HttpRequest& request,
                                      const std::function<bool(std::string_view)>& on_body,
                                      const HttpStreamOptions& options = {});

}  // namespace cairn::net
