// HttpSession: a blocking HTTP/1.1 client that keeps its connection (TCP or TLS) to one server
// open between requests, for a client making many small requests to the same place (the model
// fetcher's chunk downloads): each request after the first saves a TCP connect and, with TLS,
// a handshake. http_request (net/http.hpp) stays the one-shot client for everything else.
//
//   net::HttpSession session(target, 60);
//   for (const auto& path : paths) {
//     auto r = session.request({"GET", path});
//   }
//
// The connection opens on the first request and again whenever the server closed it
// (`Connection: close`, an error, its idle timeout); a GET or HEAD that fails on a kept
// connection before any answer is sent once more on a new one. Any HTTP status is a successful
// Result, as with http_request; response bodies are bounded the same way (64 MiB).
//
// Thread-safety: one thread at a time per session (it owns its io_context); use one session
// per thread for requests in parallel. Never call it on an io_context thread.
#pragma once

#include <cstddef>
#include <memory>

#include "core/result.hpp"
#include "net/http.hpp"

namespace cairn::net {

class HttpSession {
 public:
  // Every request is bounded by `timeout_secs`, connecting included.
  explicit HttpSession(HttpTarget target, int timeout_secs = 30);
  ~HttpSession();
  HttpSession(HttpSession&&) noexcept;
  HttpSession& operator=(HttpSession&&) noexcept;

  Result<HttpResponse> request(const HttpRequest& request);

  // Connections opened so far (1 when every request reused the first).
  std::size_t connections_opened() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace cairn::net
