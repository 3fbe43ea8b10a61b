// InlineRunWatch with the real HTTP server on loopback: an io_context with concurrency hint 1
// run by two threads, as cairn-infer runs its HTTP server. A handler that blocks its thread (a
// slow inline run) must not keep other connections from being answered; without the watch
// nobody would wake the second thread.
#include "infer/inline_watch.hpp"

#include <future>
#include <optional>
#include <thread>

#include <gtest/gtest.h>

#include "net/asio.hpp"
#include "net/http.hpp"

namespace cairn::infer {
namespace {

TEST(InlineRunWatchTest, ASlowInlineRunHandsTheIoToASleepingThread) {
  asio::io_context io(1);
  auto work = asio::make_work_guard(io);
  InlineRunWatch watch([&io] { asio::post(io, [] {}); }, std::chrono::milliseconds(1));
  std::promise<void> blocked;
  std::promise<void> release;
  auto gate = release.get_future().share();
  auto server = net::HttpServer::start(
      io, "127.0.0.1", 0, nullptr, [&](const net::HttpRequest& request, net::HttpRespond respond) {
        if (request.target == "/slow") {
          watch.begin();
          blocked.set_value();
          gate.wait();  // the model run, on the thread that read the request
          watch.end();
        }
        respond(net::HttpResponse{200, request.target});
      });
  ASSERT_TRUE(server) << server.error().to_string();
  const std::uint16_t port = (*server)->port();
  std::thread first([&io] { io.run(); });
  std::thread second([&io] { io.run(); });
  const net::HttpTarget target{"127.0.0.1", port, false, "", ""};
  auto slow = std::async(std::launch::async, [&] {
    return net::http_request(target, net::HttpRequest{"GET", "/slow", ""}, 30);
  });
  blocked.get_future().wait();
  for (int i = 0; i < 3; ++i) {
    auto fast = net::http_request(target, net::HttpRequest{"GET", "/fast", ""}, 10);
    ASSERT_TRUE(fast) << fast.error().to_string();
    EXPECT_EQ(fast->body, "/fast");
  }
  EXPECT_GE(watch.wakes(), 1u);
  release.set_value();
  auto answer = slow.get();
  ASSERT_TRUE(answer) << answer.error().to_string();
  EXPECT_EQ(answer->body, "/slow");
  // Fast runs after it: answered, and no thread woken for them.
  const auto wakes = watch.wakes();
  for (int i = 0; i < 20; ++i) {
    watch.begin();
    watch.end();
  }
  auto after = net::http_request(target, net::HttpRequest{"GET", "/after", ""}, 10);
  ASSERT_TRUE(after) << after.error().to_string();
  EXPECT_EQ(watch.wakes(), wakes);
  (*server)->stop();
  work.reset();
  first.join();
  second.join();
}

}  // namespace
}  // namespace cairn::infer
