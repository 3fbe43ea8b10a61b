// A small HTTP/1.1 server and client over unix-domain sockets, for the management API
// (`mgmt.sock`) and, later, the workload API. JSON in, JSON out; one request per connection
// is enough for a local control plane, keep-alive is honoured when the client asks.
//
// Thread-safety: the server lives on one io_context (single-threaded); the handler runs there
// and must not block — it answers through `respond`, possibly later from another thread
// (respond posts back to the server's executor). The client function is blocking and meant
// for command-line tools.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "core/result.hpp"
#include "net/asio.hpp"

namespace cairn::net {

struct HttpRequest {
  std::string method;  // "GET", "POST", ...
  std::string target;  // path and query, e.g. "/identities/m1/token?ttl=60"
  std::string body;
};

struct HttpResponse {
  int status = 200;
  std::string body;
  std::string content_type = "application/json";
};

// Splits "/a/b?x=1&y=2" into the path and the value of one query parameter.
std::string http_path(const std::string& target);
std::string http_query_param(const std::string& target, const std::string& name);

using HttpRespond = std::function<void(HttpResponse)>;
using HttpHandler = std::function<void(const HttpRequest&, HttpRespond)>;

class UnixHttpServer {
 public:
  // Binds `socket_path` (replacing a stale socket file) with mode 0660 and starts accepting.
  static Result<std::shared_ptr<UnixHttpServer>> start(asio::io_context& io,
                                                       const std::string& socket_path,
                                                       HttpHandler handler);
  ~UnixHttpServer();
  void stop();

  struct State;  // shared with the accept loop and connections

 private:
  explicit UnixHttpServer(std::shared_ptr<State> state) : state_(std::move(state)) {}
  std::shared_ptr<State> state_;
};

// Sends one request and waits for the answer (timeout in seconds).
Result<HttpResponse> unix_http_request(const std::string& socket_path, const HttpRequest& request,
                                       int timeout_secs = 30);

}  // namespace cairn::net
