// HttpConnection: an HTTP/1.1 client that keeps one TCP connection open across requests
// (keep-alive), for callers that talk to one server many times in a row, where a new connection
// per request (http_request in net/http.hpp) would cost more than the request itself: load
// generators, tools that poll one server. Plain TCP only.
//
// A connection the server closed (it answered `Connection: close`, or dropped an idle
// keep-alive connection) is opened again by the next request; a request that fails on a reused
// connection before any answer arrived is sent once more on a fresh one.
//
// Thread-safety: one thread at a time. Blocking, with its own io_context: never call it on an
// io_context thread.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "core/result.hpp"
#include "net/http.hpp"

namespace cairn::net {

class HttpConnection {
 public:
  // `host`: an IP literal or a name; nothing is sent until connect() or request().
  HttpConnection(std::string host, std::uint16_t port);
  ~HttpConnection();
  HttpConnection(const HttpConnection&) = delete;
  HttpConnection& operator=(const HttpConnection&) = delete;

  // Opens the connection now (request() does it when needed). unavailable/timeout on failure.
  Status connect(int timeout_secs = 30);
  // Sends one request and waits for its answer, within `timeout_secs`. Any HTTP status is a
  // successful Result; errors are for failing to get one, as with http_request.
  Result<HttpResponse> request(const HttpRequest& request, int timeout_secs = 30);
  void close();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace cairn::net
