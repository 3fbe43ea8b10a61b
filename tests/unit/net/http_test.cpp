// HttpServer, UnixHttpServer and the HTTP clients over real sockets on 127.0.0.1, plain and
// TLS (with certificates from ensure_edge_certificates in a temp dir). Raw sockets stand in for
// clients that keep a connection alive, send garbage, or say nothing.

// gcc 12 at -O2 with sanitizers reports a false -Wmaybe-uninitialized inside Beast's response
// parser (boost::optional in basic_parser::do_field) when a test reads a response with
// http::read; it must be silenced before the Beast headers are seen.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include "net/http.hpp"

#include <array>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>  // Boost 1.74 + gcc 12: must precede the Asio headers.
#include <vector>

#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <gtest/gtest.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "loopback.hpp"
#include "net/certs.hpp"
#include "net/http_session.hpp"
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

namespace cairn::net {
namespace {

namespace beast = boost::beast;
namespace http = boost::beast::http;
namespace fs = std::filesystem;

std::atomic<int> g_dir_counter{0};

// Echoes what it received so tests can check both directions; counts calls.
struct EchoHandler {
  std::atomic<int> calls{0};
  std::mutex mu;
  std::vector<std::string> peers;

  HttpHandler handler() {
    return [this](const HttpRequest& req, HttpRespond respond) {
      ++calls;
      {
        std::lock_guard lock(mu);
        peers.push_back(req.peer);
      }
      HttpResponse res;
      res.status = req.header("x-status").empty() ? 200 : std::stoi(req.header("x-status"));
      res.content_type = "text/plain";
      res.body = req.method + " " + req.target + " " + req.header("X-Test") + " " + req.body;
      res.headers = {{"ETag", "\"v1\""}, {"X-Peer", req.peer}};
      respond(std::move(res));
    };
  }
};

class HttpTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("cairn-http-test-" + std::to_string(::getpid()) + "-" +
                                        std::to_string(g_dir_counter++));
    fs::remove_all(dir_);
    CertificateOptions options;
    options.dns_names = {"localhost"};
    options.ip_addresses = {"127.0.0.1"};
    auto certs = ensure_edge_certificates(dir_.string(), options);
    ASSERT_TRUE(certs) << certs.error().to_string();
    certs_ = *certs;
    tls_.use_certificate_chain_file(certs_.server_cert_path);
    tls_.use_private_key_file(certs_.server_key_path, ssl::context::pem);
    io_thread_ = std::thread([this] { io_.run(); });
  }

  void TearDown() override {
    // Stopping the servers must close every connection, so the io_context runs dry.
    for (auto& s : servers_) s->stop();
    if (unix_server_) unix_server_->stop();
    work_.reset();
    if (io_thread_.joinable()) io_thread_.join();
    servers_.clear();
    unix_server_.reset();
    fs::remove_all(dir_);
  }

  std::uint16_t start(HttpHandler handler, bool tls, HttpLimits limits = {}) {
    auto server =
        HttpServer::start(io_, "127.0.0.1", 0, tls ? &tls_ : nullptr, std::move(handler), limits);
    EXPECT_TRUE(server) << server.error().to_string();
    if (!server) return 0;
    servers_.push_back(*server);
    return (*server)->port();
  }

  // Runs `f` on the io thread and waits for it: everything posted before has run.
  void sync_with_io() {
    std::promise<void> done;
    asio::post(io_, [&done] { done.set_value(); });
    done.get_future().wait();
  }

  HttpTarget plain(std::uint16_t port) { return HttpTarget{"127.0.0.1", port, false, "", ""}; }
  HttpTarget secure(std::uint16_t port, std::string server_name = "") {
    return HttpTarget{"127.0.0.1", port, true, certs_.ca_cert_path, std::move(server_name)};
  }

  fs::path dir_;
  EdgeCertificates certs_;
  ssl::context tls_{ssl::context::tls_server};
  std::vector<std::unique_ptr<ssl::context>> extra_tls_;  // must outlive io_'s connections
  asio::io_context io_;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work_{
      asio::make_work_guard(io_)};
  std::thread io_thread_;
  std::vector<std::shared_ptr<HttpServer>> servers_;
  std::shared_ptr<UnixHttpServer> unix_server_;
};

// A blocking socket for hand-written requests; reads give up after 10 s so a bug fails the
// test instead of hanging it.
struct RawClient {
  asio::io_context io;
  tcp::socket socket{io};

  explicit RawClient(std::uint16_t port) {
    socket.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port));
    timeval tv{10, 0};
    ::setsockopt(socket.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  }
  void send(const std::string& bytes) { asio::write(socket, asio::buffer(bytes)); }
  // Reads until the peer closes; returns what came and whether it was a clean close.
  std::pair<std::string, bool> read_to_end() {
    std::string all;
    std::array<char, 4096> buf;
    for (;;) {
      error_code ec;
      std::size_t n = socket.read_some(asio::buffer(buf), ec);
      all.append(buf.data(), n);
      if (ec) return {all, ec == asio::error::eof || ec == asio::error::connection_reset};
    }
  }
};

using test_support::can_connect;

TEST_F(HttpTest, PlainRoundTripCarriesHeadersBothWays) {
  EchoHandler echo;
  auto port = start(echo.handler(), false);
  HttpRequest req{"POST", "/echo?x=1", "hello"};
  req.headers = {{"X-Test", "abc"}};
  auto res = http_request(plain(port), req);
  ASSERT_TRUE(res) << res.error().to_string();
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(res->body, "POST /echo?x=1 abc hello");
  EXPECT_EQ(res->content_type, "text/plain");
  EXPECT_EQ(res->header("etag"), "\"v1\"");
  EXPECT_EQ(res->header("Content-Length"), std::to_string(res->body.size()));
  EXPECT_EQ(res->header("x-peer").rfind("127.0.0.1:", 0), 0u) << res->header("x-peer");
  EXPECT_EQ(res->header("no-such-header"), "");
  EXPECT_EQ(echo.calls, 1);
}

TEST_F(HttpTest, HandlerStatusAndBodylessAnswers) {
  std::atomic<int> status{204};
  auto port = start(
      [&status](const HttpRequest&, HttpRespond respond) {
        respond(HttpResponse{status.load(), "ignored for 204 and 304"});
      },
      false);
  auto res = http_request(plain(port), HttpRequest{"DELETE", "/x", ""});
  ASSERT_TRUE(res) << res.error().to_string();
  EXPECT_EQ(res->status, 204);
  EXPECT_EQ(res->body, "");
  status = 42;  // not a valid final status: the server answers 500 instead
  res = http_request(plain(port), HttpRequest{"GET", "/x", ""});
  ASSERT_TRUE(res) << res.error().to_string();
  EXPECT_EQ(res->status, 500);
  status = 404;
  res = http_request(plain(port), HttpRequest{"HEAD", "/x", ""});
  ASSERT_TRUE(res) << res.error().to_string();
  EXPECT_EQ(res->status, 404);
  EXPECT_EQ(res->body, "");
  EXPECT_EQ(res->header("content-length"), "23");
}

TEST_F(HttpTest, HandlerMayAnswerLaterFromAnotherThread) {
  std::vector<std::thread> workers;
  std::mutex mu;
  auto port = start(
      [&](const HttpRequest& req, HttpRespond respond) {
        std::lock_guard lock(mu);
        workers.emplace_back([respond, body = req.body] { respond(HttpResponse{201, body}); });
      },
      false);
  auto res = http_request(plain(port), HttpRequest{"POST", "/later", "{\"a\":1}"});
  ASSERT_TRUE(res) << res.error().to_string();
  EXPECT_EQ(res->status, 201);
  EXPECT_EQ(res->body, "{\"a\":1}");
  std::lock_guard lock(mu);
  for (auto& t : workers) t.join();
}

TEST_F(HttpTest, HandlerThatDropsRespondGets500) {
  auto port = start([](const HttpRequest&, HttpRespond) {}, false);
  auto res = http_request(plain(port), HttpRequest{"GET", "/", ""});
  ASSERT_TRUE(res) << res.error().to_string();
  EXPECT_EQ(res->status, 500);
  EXPECT_NE(res->body.find("\"error\""), std::string::npos);
}

TEST_F(HttpTest, KeepAliveServesSeveralRequestsOnOneConnection) {
  EchoHandler echo;
  auto port = start(echo.handler(), false);
  RawClient client(port);
  beast::flat_buffer buffer;
  for (int i = 0; i < 3; ++i) {
    http::request<http::string_body> req{http::verb::post, "/n/" + std::to_string(i), 11};
    req.set(http::field::host, "127.0.0.1");
    req.body() = "b" + std::to_string(i);
    req.prepare_payload();
    http::write(client.socket, req);
    http::response<http::string_body> res;
    http::read(client.socket, buffer, res);
    EXPECT_EQ(res.result_int(), 200u);
    EXPECT_TRUE(res.keep_alive());
    EXPECT_EQ(res.body(), "POST /n/" + std::to_string(i) + "  b" + std::to_string(i));
  }
  EXPECT_EQ(echo.calls, 3);
  std::lock_guard lock(echo.mu);
  ASSERT_EQ(echo.peers.size(), 3u);
  EXPECT_EQ(echo.peers[0], echo.peers[1]);  // same client port: the same connection
  EXPECT_EQ(echo.peers[1], echo.peers[2]);
}

TEST_F(HttpTest, HttpSessionSendsRequestsOnOneKeptConnection) {
  EchoHandler echo;
  auto port = start(echo.handler(), false);
  HttpSession conn(plain(port), 10);
  for (int i = 0; i < 3; ++i) {
    HttpRequest req;
    req.method = "POST";
    req.target = "/n/" + std::to_string(i);
    req.body = "b" + std::to_string(i);
    req.headers = {{"X-Test", "t"}};
    auto res = conn.request(req);
    ASSERT_TRUE(res) << res.error().to_string();
    EXPECT_EQ(res->status, 200);
    EXPECT_EQ(res->body, "POST /n/" + std::to_string(i) + " t b" + std::to_string(i));
  }
  EXPECT_EQ(conn.connections_opened(), 1u);
  std::lock_guard lock(echo.mu);
  ASSERT_EQ(echo.peers.size(), 3u);
  EXPECT_EQ(echo.peers[0], echo.peers[1]);  // same client port: the same connection
  EXPECT_EQ(echo.peers[1], echo.peers[2]);
}

TEST_F(HttpTest, HttpSessionReopensAConnectionTheServerClosed) {
  EchoHandler echo;
  HttpLimits limits;
  limits.read_timeout = std::chrono::seconds(1);  // the server drops idle connections after 1 s
  auto port = start(echo.handler(), false, limits);
  HttpSession conn(plain(port), 10);
  HttpRequest req;
  req.method = "GET";
  req.target = "/first";
  ASSERT_TRUE(conn.request(req));
  // Wait until the server has closed the idle connection: its peer list cannot tell, but a
  // new connection shows up as a new peer on the next request.
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  req.target = "/second";
  auto res = conn.request(req);
  ASSERT_TRUE(res) << res.error().to_string();
  EXPECT_EQ(res->body, "GET /second  ");
  EXPECT_EQ(conn.connections_opened(), 2u);
  std::lock_guard lock(echo.mu);
  ASSERT_EQ(echo.peers.size(), 2u);
  EXPECT_NE(echo.peers[0], echo.peers[1]);
}

TEST_F(HttpTest, HttpSessionReportsBadInputAndUnreachableServers) {
  // A port bound but not listening refuses connections, and nothing else can take it while it
  // is held: a port a stopped server merely closed may go to a test running beside this one,
  // and the client's own ephemeral port may even be that port (a TCP self-connection).
  asio::ip::tcp::acceptor refusing(io_);
  refusing.open(asio::ip::tcp::v4());
  refusing.bind({asio::ip::address_v4::loopback(), 0});
  HttpSession conn(plain(refusing.local_endpoint().port()), 5);
  HttpRequest req;
  req.method = "GET";
  req.target = "/";
  auto res = conn.request(req);
  ASSERT_FALSE(res);
  EXPECT_EQ(res.error().code, errc::unavailable) << res.error().to_string();
  req.target = "no-slash";
  res = conn.request(req);
  ASSERT_FALSE(res);
  EXPECT_EQ(res.error().code, errc::invalid_argument);
}

TEST_F(HttpTest, PipelinedAndChunkedRequestsAreParsed) {
  EchoHandler echo;
  auto port = start(echo.handler(), false);
  RawClient client(port);
  // Two requests in one write; the second has a chunked body and asks to close.
  client.send(
      "GET /one HTTP/1.1\r\nHost: x\r\n\r\n"
      "POST /two HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
      "3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n");
  auto [all, clean] = client.read_to_end();
  EXPECT_TRUE(clean);
  EXPECT_NE(all.find("GET /one  "), std::string::npos) << all;
  EXPECT_NE(all.find("POST /two  abcde"), std::string::npos) << all;
  EXPECT_NE(all.find("Connection: close"), std::string::npos) << all;
  EXPECT_EQ(echo.calls, 2);
}

// Bodies with a Content-Length are read from the socket straight into the body: whole, in
// pieces that arrive apart, followed by a pipelined request, over TLS, and in both directions.
TEST_F(HttpTest, LargeBodiesArriveWholeHoweverTheyAreCut) {
  EchoHandler echo;
  HttpLimits limits;
  limits.max_body_bytes = 8 << 20;
  std::string big((3 << 20) + 17, '\0');
  for (std::size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>((i * 131) >> 7);
  for (bool tls : {false, true}) {
    auto port = start(echo.handler(), tls, limits);
    auto res = http_request(tls ? secure(port) : plain(port), HttpRequest{"POST", "/big", big});
    ASSERT_TRUE(res) << res.error().to_string();
    EXPECT_EQ(res->status, 200);
    EXPECT_TRUE(res->body == "POST /big  " + big) << "tls " << tls << ": " << res->body.size();
  }

  auto port = start(echo.handler(), false, limits);
  RawClient client(port);
  const std::string body(300000, 'b');
  client.send("POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: " + std::to_string(body.size()) +
              "\r\n\r\n" + body.substr(0, 1000));
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  client.send(body.substr(1000, 100000));
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  client.send(body.substr(101000) + "GET /next HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  auto [all, clean] = client.read_to_end();
  EXPECT_TRUE(clean);
  EXPECT_NE(all.find("POST /slow  " + body), std::string::npos) << all.size();
  EXPECT_NE(all.find("GET /next  "), std::string::npos) << all.size();
}

// A body that ends early (the client goes away) or stops coming (read timeout) reaches no
// handler, and the server goes on serving.
TEST_F(HttpTest, CutOrStalledBodiesReachNoHandler) {
  EchoHandler echo;
  HttpLimits limits;
  limits.read_timeout = std::chrono::seconds(1);
  auto port = start(echo.handler(), false, limits);
  {
    RawClient client(port);
    client.send("POST /cut HTTP/1.1\r\nHost: x\r\nContent-Length: 200000\r\n\r\n" +
                std::string(150000, 'c'));
    client.socket.shutdown(tcp::socket::shutdown_send);
    auto [all, clean] = client.read_to_end();
    EXPECT_EQ(all, "");
  }
  {
    RawClient client(port);
    client.send("POST /stall HTTP/1.1\r\nHost: x\r\nContent-Length: 200000\r\n\r\n" +
                std::string(70000, 's'));
    auto [all, clean] = client.read_to_end();  // closed by the read timeout
    EXPECT_TRUE(clean);
    EXPECT_EQ(all, "");
  }
  EXPECT_EQ(echo.calls, 0);
  auto res = http_request(plain(port), HttpRequest{"POST", "/after", "fine"});
  ASSERT_TRUE(res) << res.error().to_string();
  EXPECT_EQ(res->body, "POST /after  fine");
}

// Bodies being read at once share max_reading_body_bytes: one that would go past it is answered
// 503 with Retry-After; one that fits, and a body alone whatever its size, pass.
TEST_F(HttpTest, BodiesBeingReadShareTheReadingLimit) {
  EchoHandler echo;
  HttpLimits limits;
  limits.max_body_bytes = 1 << 20;
  limits.max_reading_body_bytes = 100000;
  auto port = start(echo.handler(), false, limits);
  auto head = [](const std::string& target, std::size_t length) {
    return "POST " + target + " HTTP/1.1\r\nHost: x\r\nContent-Length: " + std::to_string(length) +
           "\r\n\r\n";
  };
  RawClient holder(port);  // claims 80,000 bytes and sends them slowly
  holder.send(head("/held", 80000) + std::string(1000, 'h'));
  // 80,000 + 30,000 do not fit in 100,000: refused once the server has read the holder's
  // header (until then such a request passes).
  std::optional<HttpResponse> refused;
  for (int turn = 0; turn < 200 && !refused; ++turn) {
    auto res = http_request(plain(port), HttpRequest{"POST", "/over", std::string(30000, 'o')});
    ASSERT_TRUE(res) << res.error().to_string();
    if (res->status == 503) refused = *res;
  }
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->header("Retry-After"), "1");
  EXPECT_NE(refused->body.find("retry later"), std::string::npos) << refused->body;
  // 80,000 + 10,000 fit.
  auto fits = http_request(plain(port), HttpRequest{"POST", "/fits", std::string(10000, 'f')});
  ASSERT_TRUE(fits) << fits.error().to_string();
  EXPECT_EQ(fits->status, 200);
  const int before = echo.calls;
  holder.send(std::string(79000, 'h') +
              "GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  auto [all, clean] = holder.read_to_end();
  EXPECT_NE(all.find("POST /held  " + std::string(80000, 'h')), std::string::npos) << all.size();
  EXPECT_EQ(echo.calls, before + 2);
  // Nothing is being read now: the same request passes, and so does a body alone larger than
  // the reading limit.
  auto res = http_request(plain(port), HttpRequest{"POST", "/again", std::string(50000, 'a')});
  ASSERT_TRUE(res) << res.error().to_string();
  EXPECT_EQ(res->status, 200);
  res = http_request(plain(port), HttpRequest{"POST", "/alone", std::string(300000, 'b')});
  ASSERT_TRUE(res) << res.error().to_string();
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(res->body, "POST /alone  " + std::string(300000, 'b'));

  // While such a body is read, others are refused, but never a request without a body.
  RawClient big(port);
  big.send(head("/big", 300000) + std::string(1000, 'g'));
  bool claimed = false;
  for (int turn = 0; turn < 200 && !claimed; ++turn) {
    res = http_request(plain(port), HttpRequest{"POST", "/one", "1"});
    ASSERT_TRUE(res) << res.error().to_string();
    claimed = res->status == 503;
  }
  EXPECT_TRUE(claimed);
  res = http_request(plain(port), HttpRequest{"GET", "/nobody", ""});
  ASSERT_TRUE(res) << res.error().to_string();
  EXPECT_EQ(res->status, 200);
}

TEST_F(HttpTest, OversizeBodyGets413WithoutCallingHandler) {
  EchoHandler echo;
  HttpLimits limits;
  limits.max_body_bytes = 1024;
  auto port = start(echo.handler(), false, limits);
  // Far larger than the limit and the socket buffers: the server must drain what it refused,
  // or the client's write fails before it can read the answer.
  auto res = http_request(plain(port), HttpRequest{"POST", "/big", std::string(4 << 20, 'x')});
  ASSERT_TRUE(res) << res.error().to_string();
  EXPECT_EQ(res->status, 413);
  EXPECT_EQ(res->content_type, "application/json");
  EXPECT_NE(res->body.find("\"error\":"), std::string::npos) << res->body;
  EXPECT_EQ(res->header("connection"), "close");

  // A chunked body that grows past the limit is cut off the same way.
  RawClient client(port);
  client.send("POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n800\r\n" +
              std::string(0x800, 'y') + "\r\n0\r\n\r\n");
  auto [all, clean] = client.read_to_end();
  EXPECT_EQ(all.rfind("HTTP/1.1 413", 0), 0u) << all;
  EXPECT_EQ(echo.calls, 0);

  // A request within the limit still works.
  res = http_request(plain(port), HttpRequest{"POST", "/small", "ok"});
  ASSERT_TRUE(res) << res.error().to_string();
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(echo.calls, 1);
}

TEST_F(HttpTest, OversizeHeadersGet431) {
  EchoHandler echo;
  HttpLimits limits;
  limits.max_header_bytes = 1024;
  auto port = start(echo.handler(), false, limits);
  HttpRequest req{"GET", "/", ""};
  req.headers = {{"X-Big", std::string(4096, 'h')}};
  auto res = http_request(plain(port), req);
  ASSERT_TRUE(res) << res.error().to_string();
  EXPECT_EQ(res->status, 431);
  EXPECT_EQ(echo.calls, 0);
}

TEST_F(HttpTest, GarbageRequestLineGets400AndClose) {
  EchoHandler echo;
  auto port = start(echo.handler(), false);
  RawClient client(port);
  client.send("GARBAGE\r\n\r\n");
  auto [all, clean] = client.read_to_end();
  EXPECT_TRUE(clean);
  EXPECT_EQ(all.rfind("HTTP/1.1 400", 0), 0u) << all;
  EXPECT_NE(all.find("{\"error\":\"malformed HTTP request"), std::string::npos) << all;
  EXPECT_EQ(echo.calls, 0);
  // The server is still fine for the next client.
  auto res = http_request(plain(port), HttpRequest{"GET", "/", ""});
  ASSERT_TRUE(res) << res.error().to_string();
  EXPECT_EQ(res->status, 200);
}

TEST_F(HttpTest, IdleClientIsClosedAfterReadTimeout) {
  EchoHandler echo;
  HttpLimits limits;
  limits.read_timeout = std::chrono::seconds(1);
  auto port = start(echo.handler(), false, limits);
  RawClient client(port);
  client.send("GET / HTTP/1.1\r\nHost: x\r\n");  // and never finish the headers
  auto [all, clean] = client.read_to_end();
  EXPECT_TRUE(clean);
  EXPECT_EQ(all, "");
  EXPECT_EQ(echo.calls, 0);
}

// The read timeout is per request: a kept connection that keeps asking is never closed, while
// one that stops mid-request, or never starts its TLS handshake, is closed beside it.
TEST_F(HttpTest, ReadTimeoutClosesOnlyTheConnectionsPastIt) {
  EchoHandler echo;
  HttpLimits limits;
  limits.read_timeout = std::chrono::seconds(1);
  auto plain_port = start(echo.handler(), false, limits);
  auto tls_port = start(echo.handler(), true, limits);
  auto stalled = std::async(std::launch::async, [&] {
    RawClient client(plain_port);
    client.send("GET /stalled HTTP/1.1\r\nHost: x\r\n");  // and never finish the headers
    return client.read_to_end();
  });
  auto silent = std::async(std::launch::async, [&] {
    RawClient client(tls_port);  // no ClientHello
    return client.read_to_end();
  });
  HttpSession conn(plain(plain_port), 10);
  for (int i = 0; i < 6; ++i) {  // 2.4 s in all, more than twice the timeout
    auto res = conn.request(HttpRequest{"GET", "/kept", ""});
    ASSERT_TRUE(res) << i << ": " << res.error().to_string();
    std::this_thread::sleep_for(std::chrono::milliseconds(400));
  }
  EXPECT_EQ(conn.connections_opened(), 1u);
  for (auto* closed : {&stalled, &silent}) {
    auto [all, clean] = closed->get();
    EXPECT_TRUE(clean);
    EXPECT_EQ(all, "");
  }
  EXPECT_EQ(echo.calls, 6);
}

TEST_F(HttpTest, TlsClientVerifiesAgainstTheCa) {
  EchoHandler echo;
  auto port = start(echo.handler(), true);
  HttpRequest req{"PUT", "/tls", "secret"};
  req.headers = {{"X-Test", "t"}};
  // By name (DNS SAN, sent as SNI) and by IP (IP SAN).
  for (const char* name : {"localhost", ""}) {
    auto res = http_request(secure(port, name), req);
    ASSERT_TRUE(res) << name << ": " << res.error().to_string();
    EXPECT_EQ(res->status, 200);
    EXPECT_EQ(res->body, "PUT /tls t secret");
    EXPECT_EQ(res->header("ETag"), "\"v1\"");
  }
  EXPECT_EQ(echo.calls, 2);
}

TEST_F(HttpTest, TlsClientRefusesWrongNameOrUnknownCa) {
  EchoHandler echo;
  auto port = start(echo.handler(), true);
  auto res = http_request(secure(port, "wrong.example"), HttpRequest{"GET", "/", ""});
  ASSERT_FALSE(res);
  EXPECT_EQ(res.error().code, errc::unauthorized);
  EXPECT_NE(res.error().message.find("wrong.example"), std::string::npos) << res.error().message;

  HttpTarget other_ip = secure(port, "127.0.0.9");  // an IP the certificate does not carry
  res = http_request(other_ip, HttpRequest{"GET", "/", ""});
  ASSERT_FALSE(res);
  EXPECT_EQ(res.error().code, errc::unauthorized);

  HttpTarget system_trust = secure(port);
  system_trust.ca_file.clear();  // the edge CA is not in the system store
  res = http_request(system_trust, HttpRequest{"GET", "/", ""});
  ASSERT_FALSE(res);
  EXPECT_EQ(res.error().code, errc::unauthorized);

  HttpTarget unverified = system_trust;
  unverified.verify = false;
  res = http_request(unverified, HttpRequest{"GET", "/", ""});
  ASSERT_TRUE(res) << res.error().to_string();
  EXPECT_EQ(echo.calls, 1);  // only the unverified call reached the handler
}

TEST_F(HttpTest, TlsKeepAliveAndPlainClientOnTlsPort) {
  EchoHandler echo;
  auto port = start(echo.handler(), true);
  // A plain HTTP client on the TLS port: the handshake fails and the server just closes.
  RawClient raw(port);
  raw.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
  auto [all, clean] = raw.read_to_end();
  EXPECT_EQ(all.find("HTTP/1.1"), std::string::npos);

  asio::io_context io;
  ssl::context ctx(ssl::context::tls_client);
  ctx.load_verify_file(certs_.ca_cert_path);
  ctx.set_verify_mode(ssl::verify_peer);
  ssl::stream<tcp::socket> stream(io, ctx);
  stream.next_layer().connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port));
  stream.handshake(ssl::stream_base::client);
  beast::flat_buffer buffer;
  for (int i = 0; i < 2; ++i) {
    http::request<http::string_body> req{http::verb::get, "/k" + std::to_string(i), 11};
    req.set(http::field::host, "localhost");
    http::write(stream, req);
    http::response<http::string_body> res;
    http::read(stream, buffer, res);
    EXPECT_EQ(res.result_int(), 200u);
  }
  std::lock_guard lock(echo.mu);
  ASSERT_EQ(echo.peers.size(), 2u);
  EXPECT_EQ(echo.peers[0], echo.peers[1]);
}

TEST_F(HttpTest, StopClosesListenerAndOpenConnections) {
  EchoHandler echo;
  auto port = start(echo.handler(), false);
  RawClient client(port);
  client.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
  servers_.front()->stop();
  // stop() closes the listener on the acceptor's strand, which may be busy with the client's
  // accept just then and run it after what sync_with_io() posts: give it a few turns.
  bool closed = false;
  for (int turn = 0; turn < 50 && !closed; ++turn) {
    sync_with_io();
    closed = !can_connect(port);
  }
  EXPECT_TRUE(closed);
  auto res = http_request(plain(port), HttpRequest{"GET", "/", ""}, 5);
  ASSERT_FALSE(res);
  EXPECT_EQ(res.error().code, errc::unavailable);
  auto [all, clean] = client.read_to_end();  // answered or not, the connection ends
  EXPECT_TRUE(clean);
}

TEST_F(HttpTest, StopWakesConnectionWaitingForItsHandler) {
  HttpRespond kept;  // never called: stop() must not wait for it
  auto port = start([&kept](const HttpRequest&, HttpRespond respond) { kept = respond; }, false);
  RawClient client(port);
  client.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
  // Wait until the handler holds the request.
  for (int i = 0; i < 1000; ++i) {
    bool held = false;
    std::promise<void> done;
    asio::post(io_, [&] {
      held = static_cast<bool>(kept);
      done.set_value();
    });
    done.get_future().wait();
    if (held) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  servers_.front()->stop();
  auto [all, clean] = client.read_to_end();
  EXPECT_TRUE(clean);
  EXPECT_EQ(all, "");
  // Answering after the connection is gone is harmless.
  std::promise<void> done;
  asio::post(io_, [&] {
    kept(HttpResponse{200, "late"});
    kept = nullptr;
    done.set_value();
  });
  done.get_future().wait();
}

// An io_context run by several threads: a handler that blocks one thread (cairn-infer runs a
// model inline there) leaves the others serving every other connection, and its own answer
// still goes out on its connection.
TEST_F(HttpTest, SeveralThreadsServeOtherConnectionsWhileAHandlerBlocks) {
  std::promise<void> blocked;
  std::promise<void> release;
  auto gate = release.get_future().share();
  auto port = start(
      [&blocked, gate](const HttpRequest& req, HttpRespond respond) {
        if (req.target == "/slow") {
          blocked.set_value();
          gate.wait();
        }
        respond(HttpResponse{200, req.target});
      },
      false);
  std::thread second_thread([this] { io_.run(); });
  RawClient slow(port);
  slow.send("GET /slow HTTP/1.1\r\nHost: x\r\n\r\n");
  blocked.get_future().wait();
  for (int i = 0; i < 5; ++i) {
    auto res = http_request(plain(port), HttpRequest{"GET", "/fast", ""}, 5);
    ASSERT_TRUE(res) << res.error().to_string();
    EXPECT_EQ(res->body, "/fast");
  }
  release.set_value();
  beast::flat_buffer buffer;
  http::response<http::string_body> res;
  http::read(slow.socket, buffer, res);
  EXPECT_EQ(res.body(), "/slow");
  servers_.front()->stop();
  work_.reset();
  second_thread.join();
}

TEST_F(HttpTest, ConnectionsBeyondTheLimitAreClosed) {
  EchoHandler echo;
  HttpLimits limits;
  limits.max_connections = 1;
  auto port = start(echo.handler(), false, limits);
  RawClient first(port);
  first.send("GET /1 HTTP/1.1\r\nHost: x\r\n\r\n");
  beast::flat_buffer buffer;
  http::response<http::string_body> res;
  http::read(first.socket, buffer, res);  // the first connection is now surely open
  EXPECT_EQ(res.result_int(), 200u);
  RawClient second(port);
  auto [all, clean] = second.read_to_end();
  EXPECT_EQ(all, "");
  first.socket.close();
}

TEST_F(HttpTest, ClientReportsBadInputAndUnreachableServers) {
  auto res = http_request(HttpTarget{"127.0.0.1", 1, false, "", ""}, HttpRequest{"GET", "/", ""});
  ASSERT_FALSE(res);
  EXPECT_EQ(res.error().code, errc::unavailable);

  EchoHandler echo;
  auto port = start(echo.handler(), false);
  res = http_request(plain(port), HttpRequest{"NOT A METHOD", "/", ""});
  ASSERT_FALSE(res);
  EXPECT_EQ(res.error().code, errc::invalid_argument);
  res = http_request(plain(port), HttpRequest{"GET", "no-slash", ""});
  ASSERT_FALSE(res);
  EXPECT_EQ(res.error().code, errc::invalid_argument);
  HttpRequest injected{"GET", "/", ""};
  injected.headers = {{"X-A", "1\r\nX-B: 2"}};
  res = http_request(plain(port), injected);
  ASSERT_FALSE(res);
  EXPECT_EQ(res.error().code, errc::invalid_argument);
  HttpTarget bad_ca = secure(port);
  bad_ca.ca_file = (dir_ / "missing.pem").string();
  res = http_request(bad_ca, HttpRequest{"GET", "/", ""});
  ASSERT_FALSE(res);
  EXPECT_EQ(res.error().code, errc::invalid_argument);
  // TLS to a plain server fails cleanly.
  res = http_request(secure(port), HttpRequest{"GET", "/", ""}, 5);
  ASSERT_FALSE(res);
  EXPECT_EQ(echo.calls, 0);

  auto server = HttpServer::start(io_, "not-an-ip", 0, nullptr, echo.handler());
  ASSERT_FALSE(server);
  EXPECT_EQ(server.error().code, errc::invalid_argument);
  server = HttpServer::start(io_, "127.0.0.1", port, nullptr, echo.handler());
  ASSERT_FALSE(server);  // the port is taken
  EXPECT_EQ(server.error().code, errc::io_error);
}

TEST_F(HttpTest, UnixServerStillWorksWithHeaders) {
  EchoHandler echo;
  auto path = (dir_ / "run" / "mgmt.sock").string();
  auto server = UnixHttpServer::start(io_, path, echo.handler());
  ASSERT_TRUE(server) << server.error().to_string();
  unix_server_ = *server;
  HttpRequest req{"POST", "/identities", "{}"};
  req.headers = {{"X-Test", "u"}};
  auto res = unix_http_request(path, req);
  ASSERT_TRUE(res) << res.error().to_string();
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(res->body, "POST /identities u {}");
  EXPECT_EQ(res->header("x-peer"), "unix:pid=" + std::to_string(::getpid()));
  unix_server_->stop();
  sync_with_io();
  EXPECT_FALSE(fs::exists(path));
  res = unix_http_request(path, req);
  ASSERT_FALSE(res);
  EXPECT_EQ(res.error().code, errc::unavailable);
}

// --- certificates: IP literals become IP SANs --------------------------------------------

struct X509Free {
  void operator()(X509* c) const { X509_free(c); }
};

std::unique_ptr<X509, X509Free> read_cert(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "r");
  if (!f) return nullptr;
  std::unique_ptr<X509, X509Free> cert(PEM_read_X509(f, nullptr, nullptr, nullptr));
  std::fclose(f);
  return cert;
}

TEST_F(HttpTest, IpLiteralAmongDnsNamesBecomesIpSan) {
  auto dir = (dir_ / "ipsan").string();
  CertificateOptions options;
  options.dns_names = {"localhost"};
  auto certs = ensure_edge_certificates(dir, options);
  ASSERT_TRUE(certs) << certs.error().to_string();
  auto cert = read_cert(certs->server_cert_path);
  ASSERT_TRUE(cert);
  EXPECT_NE(X509_check_ip_asc(cert.get(), "127.0.0.2", 0), 1);

  // Adding an IP host reissues the certificate with an IP SAN, not a DNS SAN.
  options.dns_names = {"127.0.0.2", "localhost", "::1"};
  certs = ensure_edge_certificates(dir, options);
  ASSERT_TRUE(certs) << certs.error().to_string();
  cert = read_cert(certs->server_cert_path);
  ASSERT_TRUE(cert);
  EXPECT_EQ(X509_check_ip_asc(cert.get(), "127.0.0.2", 0), 1);
  EXPECT_EQ(X509_check_ip_asc(cert.get(), "::1", 0), 1);
  EXPECT_EQ(X509_check_host(cert.get(), "localhost", 0, 0, nullptr), 1);
  auto* sans = static_cast<GENERAL_NAMES*>(
      X509_get_ext_d2i(cert.get(), NID_subject_alt_name, nullptr, nullptr));
  ASSERT_NE(sans, nullptr);
  int dns = 0, ips = 0;
  for (int i = 0; i < sk_GENERAL_NAME_num(sans); ++i) {
    auto* name = sk_GENERAL_NAME_value(sans, i);
    if (name->type == GEN_DNS) ++dns;
    if (name->type == GEN_IPADD) ++ips;
  }
  GENERAL_NAMES_free(sans);
  EXPECT_EQ(dns, 1);
  EXPECT_EQ(ips, 2);

  // Asking again changes nothing.
  auto before = fs::last_write_time(certs->server_cert_path);
  certs = ensure_edge_certificates(dir, options);
  ASSERT_TRUE(certs) << certs.error().to_string();
  EXPECT_EQ(fs::last_write_time(certs->server_cert_path), before);
}

TEST_F(HttpTest, TlsServerVerifiedByIpSanFromDnsNames) {
  auto dir = (dir_ / "ip-only").string();
  CertificateOptions options;
  options.dns_names = {"127.0.0.1"};  // no ip_addresses: the IP must still land in an IP SAN
  auto certs = ensure_edge_certificates(dir, options);
  ASSERT_TRUE(certs) << certs.error().to_string();
  auto& ctx = *extra_tls_.emplace_back(std::make_unique<ssl::context>(ssl::context::tls_server));
  ctx.use_certificate_chain_file(certs->server_cert_path);
  ctx.use_private_key_file(certs->server_key_path, ssl::context::pem);
  EchoHandler echo;
  auto server = HttpServer::start(io_, "127.0.0.1", 0, &ctx, echo.handler());
  ASSERT_TRUE(server) << server.error().to_string();
  servers_.push_back(*server);
  HttpTarget target{"127.0.0.1", (*server)->port(), true, certs->ca_cert_path, ""};
  auto res = http_request(target, HttpRequest{"GET", "/ip", ""});
  ASSERT_TRUE(res) << res.error().to_string();
  EXPECT_EQ(res->status, 200);
}

TEST_F(HttpTest, CertificatesNeedSomeName) {
  CertificateOptions options;  // no names at all
  auto certs = ensure_edge_certificates((dir_ / "noname").string(), options);
  ASSERT_FALSE(certs);
  EXPECT_EQ(certs.error().code, errc::invalid_argument);
}

}  // namespace
}  // namespace cairn::net
