// libFuzzer target: arbitrary text as a route and as a bare condition. Whatever parses is
// evaluated against a few fixed messages (JSON body, UTF-16 JSON body, non-JSON body) so the
// evaluator, the $body decoder and the router see every shape the parser accepts.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "routing/condition.hpp"
#include "routing/route.hpp"

namespace {

using cairn::Message;

std::vector<Message> make_messages() {
  std::vector<Message> out;

  Message json;
  json.body = R"({"Weather":{"Temperature":50,"HistoricalData":[{"Month":"Feb"},1,null,true]},)"
              R"("s":"x","n":-1.5e3,"a":[[1],[2,[3]]]})";
  json.system.set("connectionDeviceId", "dev1");
  json.system.set("connectionModuleId", "sensor");
  json.system.set("outputName", "out1");
  json.system.set("contentType", "application/json");
  json.system.set("contentEncoding", "utf-8");
  json.system.set("messageId", "m-1");
  json.system.set("correlationId", "c-1");
  json.app.set("temp", "35");
  json.app.set("$messageId", "shadow");
  json.app.set("name", "h\xc3\xa9llo");
  out.push_back(json);

  Message wide;
  const std::string text = R"({"a":{"b":[7,"x"]},"s":"y"})";
  for (char c : text) {
    wide.body.push_back(c);
    wide.body.push_back('\0');
  }
  wide.system.set("connectionModuleId", "m2");
  wide.system.set("contentType", "application/json");
  wide.system.set("contentEncoding", "utf-16");
  wide.app.set("a-b", "1");
  out.push_back(wide);

  Message leaf;
  leaf.body = "not json \xff";
  leaf.system.set("connectionDeviceId", "leaf");
  leaf.system.set("contentType", "application/json");
  leaf.system.set("contentEncoding", "utf-8");
  out.push_back(leaf);

  Message twin;
  twin.system.set("messageType", "twinChangeNotification");
  out.push_back(twin);
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const std::vector<Message> messages = make_messages();
  const std::string_view text(reinterpret_cast<const char*>(data), size);

  auto route = cairn::routing::Route::parse({"fuzz", std::string(text), 1, 60});
  if (route) {
    for (const auto& m : messages) {
      const std::string source = cairn::routing::message_source(m);
      (void)route->matches(m, source);
      (void)route->endpoint().id();
    }
    auto router = cairn::routing::Router::create(
        {{"fuzz", std::string(text), 1, 60}, {"up", "FROM /* INTO $upstream", 2, 0}});
    if (router) {
      for (const auto& m : messages) (void)router->route(m);
    }
  }

  auto condition = cairn::routing::compile_condition(text);
  if (condition) {
    for (const auto& m : messages) (void)(*condition)->evaluate(m);
  }
  return 0;
}
