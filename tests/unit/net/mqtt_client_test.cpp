// MqttClient against a real mosquitto (started once for the suite on a free loopback port) and
// against tiny in-process fake servers for the cases mosquitto cannot be told to produce
// (CONNACK refusal, a dropped connection, a server that never answers PINGREQ).
#include "net/mqtt_client.hpp"

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <utility>  // Boost 1.74 + gcc 12: must precede the Asio headers.
#include <vector>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <gtest/gtest.h>

#include "loopback.hpp"
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

// gcc 12 with -fsanitize=address reports a false -Wmismatched-new-delete when it inlines a
// coroutine's ramp into its caller (Asio's awaitable frames have class-specific new/delete).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

namespace cairn::net {
namespace {

namespace asio = boost::asio;
using asio::awaitable;
using asio::ip::tcp;
using namespace std::chrono_literals;

// gtest's ASSERT_* use `return`, which a coroutine cannot.
#define CAIRN_CO_ASSERT(cond)               \
  do {                                      \
    if (!(cond)) {                          \
      ADD_FAILURE() << "assertion: " #cond; \
      co_return;                            \
    }                                       \
  } while (0)

constexpr const char* kMosquitto = "/usr/sbin/mosquitto";

std::uint16_t free_port() {
  asio::io_context io;
  tcp::acceptor acceptor(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  return acceptor.local_endpoint().port();
}

using test_support::can_connect;

// One mosquitto for the whole suite; each test uses its own topics and client ids.
class MqttClientTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (::access(kMosquitto, X_OK) != 0) return;
    dir_ = std::filesystem::temp_directory_path() /
           ("cairn-mqtt-client-test-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir_);
    port_ = free_port();
    const auto conf = (dir_ / "mosquitto.conf").string();
    std::ofstream out(conf);
    out << "listener " << port_ << " 127.0.0.1\nallow_anonymous true\n"
        << "persistence false\nlog_dest none\n";
    if (make_certificates()) {
      tls_port_ = free_port();
      out << "listener " << tls_port_ << " 127.0.0.1\ncafile " << (dir_ / "ca.pem").string()
          << "\ncertfile " << (dir_ / "server.pem").string() << "\nkeyfile "
          << (dir_ / "server.key").string() << "\n";
    }
    out.close();
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0);
    std::string prog = kMosquitto, flag = "-c", conf_arg = conf;
    char* argv[] = {prog.data(), flag.data(), conf_arg.data(), nullptr};
    if (posix_spawn(&pid_, kMosquitto, &actions, nullptr, argv, environ) != 0) pid_ = -1;
    posix_spawn_file_actions_destroy(&actions);
    for (int i = 0; pid_ > 0 && i < 5000 && !can_connect(port_); ++i) {
      std::this_thread::sleep_for(1ms);
    }
  }

  // A throwaway CA and a server certificate for localhost / 127.0.0.1, made with the openssl
  // CLI. False (TLS tests skip) if that is not installed.
  static bool make_certificates() {
    const std::string d = dir_.string();
    std::ofstream(dir_ / "ext.cnf") << "subjectAltName=DNS:localhost,IP:127.0.0.1\n";
    const std::string ec = " -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    const std::string script =
        "cd '" + d + "' && openssl req -x509" + ec +
        " -keyout ca.key -out ca.pem -days 2 -subj /CN=cairn-test-ca && openssl req" + ec +
        " -keyout server.key -out server.csr -subj /CN=localhost && openssl x509 -req -in "
        "server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 -extfile "
        "ext.cnf && chmod 644 server.key";  // mosquitto drops root privileges before reading it
    return std::system((script + " >/dev/null 2>&1").c_str()) == 0;
  }

  static void TearDownTestSuite() {
    if (pid_ > 0) {
      ::kill(pid_, SIGTERM);
      int status = 0;
      ::waitpid(pid_, &status, 0);
      pid_ = -1;
    }
    std::error_code ignored;
    if (!dir_.empty()) std::filesystem::remove_all(dir_, ignored);
  }

  void SetUp() override {
    if (pid_ <= 0 || !can_connect(port_)) GTEST_SKIP() << "mosquitto not available";
  }

  MqttClientOptions options(std::string client_id) const {
    MqttClientOptions o;
    o.port = port_;
    o.client_id = std::move(client_id);
    o.connect_timeout = 3s;
    return o;
  }

  std::shared_ptr<MqttClient> make_client(std::string client_id) {
    auto client = MqttClient::create(io_.get_executor(), options(std::move(client_id)));
    EXPECT_TRUE(client.ok());
    return client.ok() ? *client : nullptr;
  }

  // Runs `body` to completion (or fails the test after `limit`).
  void run(awaitable<void> body, std::chrono::milliseconds limit = 10s) {
    bool done = false;
    std::exception_ptr error;
    asio::co_spawn(io_, std::move(body), [&done, &error](std::exception_ptr e) {
      done = true;
      error = e;
    });
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (!done && std::chrono::steady_clock::now() < deadline) {
      io_.run_one_for(50ms);
    }
    EXPECT_TRUE(done) << "test body did not finish in time";
    if (error) std::rethrow_exception(error);
    // Let posted close notifications and loop exits run.
    io_.restart();
    io_.poll();
  }

  static inline std::filesystem::path dir_;
  static inline std::uint16_t port_ = 0;
  static inline std::uint16_t tls_port_ = 0;  // 0: no TLS listener
  static inline pid_t pid_ = -1;
  asio::io_context io_;
};

// Collects messages; receive() waits for the n-th one.
struct Inbox {
  explicit Inbox(asio::io_context& io) : signal(io) {}
  std::vector<mqtt::Publish> messages;
  asio::steady_timer signal;

  MqttClient::MessageHandler handler() {
    return [this](mqtt::Publish p) {
      messages.push_back(std::move(p));
      signal.cancel();
    };
  }
};

awaitable<bool> receive(Inbox& inbox, std::size_t count, std::chrono::milliseconds limit = 5s) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (inbox.messages.size() < count && std::chrono::steady_clock::now() < deadline) {
    boost::system::error_code ec;
    inbox.signal.expires_at(deadline);
    co_await inbox.signal.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
  co_return inbox.messages.size() >= count;
}

awaitable<void> round_trip(std::shared_ptr<MqttClient> sub, std::shared_ptr<MqttClient> pub,
                           Inbox* inbox, std::uint8_t qos) {
  auto connack = co_await sub->connect();
  EXPECT_TRUE(connack.ok()) << connack.error().to_string();
  EXPECT_FALSE(connack->session_present);
  EXPECT_TRUE((co_await pub->connect()).ok());
  const std::string topic = "cairn/test/round-trip/" + std::to_string(qos);
  auto granted = co_await sub->subscribe(topic, qos);
  EXPECT_TRUE(granted.ok());
  EXPECT_EQ(*granted, qos);

  auto published = co_await pub->publish(topic, "hello", qos);
  EXPECT_TRUE(published.ok()) << published.error().to_string();
  EXPECT_TRUE(co_await receive(*inbox, 1));
  if (inbox->messages.size() == 1) {
    EXPECT_EQ(inbox->messages[0].topic, topic);
    EXPECT_EQ(inbox->messages[0].payload, "hello");
    EXPECT_EQ(inbox->messages[0].qos, qos);
  }
  EXPECT_EQ(pub->stats().pubacks_received, qos == 1 ? 1u : 0u);
  EXPECT_TRUE((co_await pub->disconnect()).ok());
  EXPECT_TRUE((co_await sub->disconnect()).ok());
  EXPECT_FALSE(sub->connected());
}

TEST_F(MqttClientTest, Qos0RoundTrip) {
  Inbox inbox(io_);
  auto sub = make_client("rt0-sub");
  auto pub = make_client("rt0-pub");
  sub->set_message_handler(inbox.handler());
  run(round_trip(sub, pub, &inbox, 0));
}

TEST_F(MqttClientTest, Qos1RoundTripCompletesAtPuback) {
  Inbox inbox(io_);
  auto sub = make_client("rt1-sub");
  auto pub = make_client("rt1-pub");
  sub->set_message_handler(inbox.handler());
  run(round_trip(sub, pub, &inbox, 1));
  // The subscriber acknowledged its QoS 1 delivery after the handler returned.
  EXPECT_EQ(sub->stats().publishes_received, 1u);
}

awaitable<void> pipelined(std::shared_ptr<MqttClient> sub, std::shared_ptr<MqttClient> pub,
                          Inbox* inbox, int count) {
  EXPECT_TRUE((co_await sub->connect()).ok());
  EXPECT_TRUE((co_await pub->connect()).ok());
  const std::string topic = "cairn/test/pipelined";
  EXPECT_TRUE((co_await sub->subscribe(topic, 1)).ok());
  auto acked = std::make_shared<int>(0);  // ack handlers may outlive this frame
  std::size_t max_seen_inflight = 0;
  for (int i = 0; i < count; ++i) {
    MqttClient::AckHandler on_ack = [acked](Status s) {
      EXPECT_TRUE(s.ok());
      ++*acked;
    };
    auto queued =
        co_await pub->async_publish(topic, std::to_string(i), 1, false, std::move(on_ack));
    EXPECT_TRUE(queued.ok());
    max_seen_inflight = std::max(max_seen_inflight, pub->inflight());
  }
  EXPECT_LE(max_seen_inflight, pub->options().max_inflight);
  EXPECT_TRUE(co_await receive(*inbox, static_cast<std::size_t>(count)))
      << inbox->messages.size() << " acked " << *acked;
  // Everything delivered, in order (one publisher, one subscriber, QoS 1).
  for (std::size_t i = 0; i < inbox->messages.size(); ++i) {
    EXPECT_EQ(inbox->messages[i].payload, std::to_string(i));
  }
  // The subscriber may see the last messages before the publisher sees their PUBACKs;
  // disconnect() waits for those.
  EXPECT_TRUE((co_await pub->disconnect(5s)).ok());
  EXPECT_TRUE((co_await sub->disconnect()).ok());
  EXPECT_EQ(*acked, count);
}

TEST_F(MqttClientTest, PipelinedPublishRespectsInflightWindow) {
  Inbox inbox(io_);
  auto sub = make_client("pipe-sub");
  auto options = this->options("pipe-pub");
  options.max_inflight = 4;
  auto pub = MqttClient::create(io_.get_executor(), options);
  ASSERT_TRUE(pub.ok());
  sub->set_message_handler(inbox.handler());
  run(pipelined(sub, *pub, &inbox, 200));
}

// Built outside the coroutine: gcc 12 rejects braced string-literal temporaries inside an
// await expression ("array used as initializer").
std::vector<mqtt::Subscription> two_subscriptions() {
  return {{"cairn/test/unsub/a", 1}, {"cairn/test/unsub/b", 0}};
}

awaitable<void> unsubscribe_then_marker(std::shared_ptr<MqttClient> sub,
                                        std::shared_ptr<MqttClient> pub, Inbox* inbox) {
  EXPECT_TRUE((co_await sub->connect()).ok());
  EXPECT_TRUE((co_await pub->connect()).ok());
  auto codes = co_await sub->subscribe(two_subscriptions());
  EXPECT_TRUE(codes.ok());
  EXPECT_EQ(*codes, (std::vector<std::uint8_t>{1, 0}));
  EXPECT_TRUE((co_await sub->unsubscribe(std::vector<std::string>(1, "cairn/test/unsub/a"))).ok());
  // mosquitto handles one connection's packets in order, so once the marker arrives the
  // earlier publish to the unsubscribed topic would have arrived too.
  EXPECT_TRUE((co_await pub->publish("cairn/test/unsub/a", "gone", 1)).ok());
  EXPECT_TRUE((co_await pub->publish("cairn/test/unsub/b", "marker", 1)).ok());
  EXPECT_TRUE(co_await receive(*inbox, 1));
  CAIRN_CO_ASSERT(inbox->messages.size() == 1u);
  EXPECT_EQ(inbox->messages[0].payload, "marker");
  EXPECT_TRUE((co_await pub->disconnect()).ok());
  EXPECT_TRUE((co_await sub->disconnect()).ok());
}

TEST_F(MqttClientTest, UnsubscribeStopsDelivery) {
  Inbox inbox(io_);
  auto sub = make_client("unsub-sub");
  auto pub = make_client("unsub-pub");
  sub->set_message_handler(inbox.handler());
  run(unsubscribe_then_marker(sub, pub, &inbox));
}

awaitable<void> will_on_close(std::shared_ptr<MqttClient> watcher,
                              std::shared_ptr<MqttClient> dying, Inbox* inbox) {
  EXPECT_TRUE((co_await watcher->connect()).ok());
  EXPECT_TRUE((co_await watcher->subscribe("cairn/test/will", 1)).ok());
  EXPECT_TRUE((co_await dying->connect()).ok());
  dying->close();  // no DISCONNECT: the broker publishes the will
  EXPECT_TRUE(co_await receive(*inbox, 1));
  if (!inbox->messages.empty()) {
    EXPECT_EQ(inbox->messages[0].payload, "gone");
  }
  EXPECT_FALSE(dying->connected());
  CAIRN_CO_ASSERT(dying->close_reason().has_value());
  EXPECT_EQ(dying->close_reason()->code, errc::cancelled);
  auto after = co_await dying->publish("cairn/test/x", "late", 0);
  CAIRN_CO_ASSERT(!after.ok());
  EXPECT_EQ(after.error().code, errc::unavailable);
  EXPECT_TRUE((co_await watcher->disconnect()).ok());
}

TEST_F(MqttClientTest, CloseWithoutDisconnectPublishesWill) {
  Inbox inbox(io_);
  auto watcher = make_client("will-watcher");
  auto options = this->options("will-dying");
  options.will = mqtt::Will{"cairn/test/will", "gone", 1, false};
  auto dying = MqttClient::create(io_.get_executor(), options);
  ASSERT_TRUE(dying.ok());
  watcher->set_message_handler(inbox.handler());
  run(will_on_close(watcher, *dying, &inbox));
}

awaitable<void> invalid_arguments(std::shared_ptr<MqttClient> client) {
  EXPECT_TRUE((co_await client->connect()).ok());
  auto qos2 = co_await client->publish("cairn/test/x", "p", 2);
  CAIRN_CO_ASSERT(!qos2.ok());
  EXPECT_EQ(qos2.error().code, errc::invalid_argument);
  auto wildcard = co_await client->publish("cairn/test/+", "p", 0);
  CAIRN_CO_ASSERT(!wildcard.ok());
  EXPECT_EQ(wildcard.error().code, errc::invalid_argument);
  auto bad_filter = co_await client->subscribe("cairn/#/x", 0);
  CAIRN_CO_ASSERT(!bad_filter.ok());
  EXPECT_EQ(bad_filter.error().code, errc::invalid_argument);
  auto again = co_await client->connect();
  EXPECT_FALSE(again.ok());
  EXPECT_TRUE(client->connected());  // argument errors leave the connection up
  EXPECT_TRUE((co_await client->disconnect()).ok());
}

TEST_F(MqttClientTest, RejectsInvalidArgumentsWithoutDisconnecting) {
  run(invalid_arguments(make_client("invalid-args")));
}

awaitable<void> expect_connect_error(std::shared_ptr<MqttClient> client, errc code) {
  auto connack = co_await client->connect();
  CAIRN_CO_ASSERT(!connack.ok());
  EXPECT_EQ(connack.error().code, code) << connack.error().to_string();
  EXPECT_FALSE(client->connected());
}

TEST_F(MqttClientTest, ConnectToClosedPortFails) {
  auto options = this->options("closed-port");
  options.port = free_port();  // nothing listens there
  auto client = MqttClient::create(io_.get_executor(), options);
  ASSERT_TRUE(client.ok());
  run(expect_connect_error(*client, errc::unavailable));
  EXPECT_FALSE((*client)->refused_code().has_value());
}

awaitable<void> tls_self_round_trip(std::shared_ptr<MqttClient> client, Inbox* inbox) {
  auto connack = co_await client->connect();
  CAIRN_CO_ASSERT(connack.ok());
  EXPECT_TRUE((co_await client->subscribe("cairn/test/tls", 1)).ok());
  EXPECT_TRUE((co_await client->publish("cairn/test/tls", "over tls", 1)).ok());
  EXPECT_TRUE(co_await receive(*inbox, 1));
  if (!inbox->messages.empty()) {
    EXPECT_EQ(inbox->messages[0].payload, "over tls");
  }
  EXPECT_TRUE((co_await client->disconnect()).ok());
}

TEST_F(MqttClientTest, TlsVerifiesServerAndRoundTrips) {
  if (tls_port_ == 0) GTEST_SKIP() << "no openssl CLI to make certificates";
  auto options = this->options("tls-ok");
  options.port = tls_port_;
  options.tls = true;
  options.ca_file = (dir_ / "ca.pem").string();
  options.tls_server_name = "localhost";  // connect by address, verify by name
  auto client = MqttClient::create(io_.get_executor(), options);
  ASSERT_TRUE(client.ok()) << client.error().to_string();
  Inbox inbox(io_);
  (*client)->set_message_handler(inbox.handler());
  run(tls_self_round_trip(*client, &inbox));
}

TEST_F(MqttClientTest, TlsRejectsWrongServerName) {
  if (tls_port_ == 0) GTEST_SKIP() << "no openssl CLI to make certificates";
  auto options = this->options("tls-wrong-name");
  options.port = tls_port_;
  options.tls = true;
  options.ca_file = (dir_ / "ca.pem").string();
  options.tls_server_name = "not-the-server.example";
  auto client = MqttClient::create(io_.get_executor(), options);
  ASSERT_TRUE(client.ok());
  run(expect_connect_error(*client, errc::unavailable));
  ASSERT_TRUE((*client)->close_reason().has_value());
  EXPECT_NE((*client)->close_reason()->message.find("TLS handshake"), std::string::npos)
      << (*client)->close_reason()->message;
}

TEST_F(MqttClientTest, TlsRejectsUnknownCa) {
  if (tls_port_ == 0) GTEST_SKIP() << "no openssl CLI to make certificates";
  auto options = this->options("tls-unknown-ca");
  options.port = tls_port_;
  options.tls = true;
  options.ca_file = (dir_ / "server.pem").string();  // a valid PEM, but not the issuer
  options.tls_server_name = "localhost";
  auto client = MqttClient::create(io_.get_executor(), options);
  ASSERT_TRUE(client.ok());
  run(expect_connect_error(*client, errc::unavailable));
}

TEST(MqttClientCreate, RejectsMissingCaFile) {
  asio::io_context io;
  MqttClientOptions options;
  options.tls = true;
  options.ca_file = "/nonexistent/ca.pem";
  auto client = MqttClient::create(io.get_executor(), options);
  ASSERT_FALSE(client.ok());
  EXPECT_EQ(client.error().code, errc::invalid_argument);
}

// --- Fake servers -------------------------------------------------------------------------

enum class FakeBehavior { kRefuse5, kAcceptThenDrop, kAcceptIgnorePings };

// Accepts one connection, reads the CONNECT, then behaves as told. Records what it read.
awaitable<void> fake_server(std::shared_ptr<tcp::acceptor> acceptor, FakeBehavior behavior,
                            std::shared_ptr<std::string> received) {
  boost::system::error_code ec;
  auto token = asio::redirect_error(asio::use_awaitable, ec);
  tcp::socket socket = co_await acceptor->async_accept(token);
  if (ec) co_return;
  char buf[512];
  std::size_t n = co_await socket.async_read_some(asio::buffer(buf), token);
  if (ec) co_return;
  received->append(buf, n);
  std::string connack = behavior == FakeBehavior::kRefuse5 ? std::string("\x20\x02\x00\x05", 4)
                                                           : std::string("\x20\x02\x00\x00", 4);
  co_await asio::async_write(socket, asio::buffer(connack), token);
  if (behavior == FakeBehavior::kAcceptThenDrop) {
    // Wait for the client's PUBLISH, then drop the connection without a PUBACK.
    n = co_await socket.async_read_some(asio::buffer(buf), token);
    if (!ec) received->append(buf, n);
    socket.close(ec);
    co_return;
  }
  // Read (and record) until the client goes away; never answer.
  for (;;) {
    n = co_await socket.async_read_some(asio::buffer(buf), token);
    if (ec) co_return;
    received->append(buf, n);
  }
}

class MqttClientFakeServerTest : public ::testing::Test {
 protected:
  std::shared_ptr<MqttClient> start(FakeBehavior behavior, std::uint16_t keep_alive_s = 0) {
    acceptor_ =
        std::make_shared<tcp::acceptor>(io_, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
    asio::co_spawn(io_, fake_server(acceptor_, behavior, received_), asio::detached);
    MqttClientOptions options;
    options.port = acceptor_->local_endpoint().port();
    options.client_id = "fake";
    options.keep_alive_s = keep_alive_s;
    auto client = MqttClient::create(io_.get_executor(), options);
    EXPECT_TRUE(client.ok());
    return *client;
  }

  void run(awaitable<void> body, std::chrono::milliseconds limit = 10s) {
    bool done = false;
    asio::co_spawn(io_, std::move(body), [&done](std::exception_ptr e) {
      done = true;
      if (e) std::rethrow_exception(e);
    });
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (!done && std::chrono::steady_clock::now() < deadline) io_.run_one_for(50ms);
    EXPECT_TRUE(done);
    io_.restart();
    io_.poll();
  }

  asio::io_context io_;
  std::shared_ptr<tcp::acceptor> acceptor_;
  std::shared_ptr<std::string> received_ = std::make_shared<std::string>();
};

TEST_F(MqttClientFakeServerTest, ConnackRefusalSurfacesReturnCode) {
  auto client = start(FakeBehavior::kRefuse5);
  run(expect_connect_error(client, errc::unauthorized));
  ASSERT_TRUE(client->refused_code().has_value());
  EXPECT_EQ(*client->refused_code(), mqtt::ConnectReturn::not_authorized);
  ASSERT_TRUE(client->close_reason().has_value());
  EXPECT_NE(client->close_reason()->message.find("CONNACK 5"), std::string::npos);
}

awaitable<void> publish_into_drop(std::shared_ptr<MqttClient> client, bool* close_called) {
  client->set_close_handler([close_called](const Error& why) {
    *close_called = true;
    EXPECT_EQ(why.code, errc::unavailable);
  });
  EXPECT_TRUE((co_await client->connect()).ok());
  auto published = co_await client->publish("t", "never acked", 1);
  CAIRN_CO_ASSERT(!published.ok());
  EXPECT_EQ(published.error().code, errc::unavailable) << published.error().to_string();
}

TEST_F(MqttClientFakeServerTest, ConnectionLossFailsPendingPublish) {
  auto client = start(FakeBehavior::kAcceptThenDrop);
  bool close_called = false;
  run(publish_into_drop(client, &close_called));
  EXPECT_TRUE(close_called);
  EXPECT_FALSE(client->connected());
}

awaitable<void> wait_closed(std::shared_ptr<MqttClient> client, asio::io_context* io) {
  EXPECT_TRUE((co_await client->connect()).ok());
  asio::steady_timer timer(*io);
  while (client->connected()) {
    timer.expires_after(20ms);
    co_await timer.async_wait(asio::use_awaitable);
  }
}

TEST_F(MqttClientFakeServerTest, MissingPingrespTimesOut) {
  auto client = start(FakeBehavior::kAcceptIgnorePings, /*keep_alive_s=*/1);
  run(wait_closed(client, &io_), 5s);
  ASSERT_TRUE(client->close_reason().has_value());
  EXPECT_EQ(client->close_reason()->code, errc::timeout);
  // After the CONNECT the server saw exactly one PINGREQ (0xC0 0x00).
  EXPECT_NE(received_->find(std::string("\xC0\x00", 2)), std::string::npos);
}

}  // namespace
}  // namespace cairn::net
