// An example module written with the cairn module SDK (include/cairn/module_client.hpp): the
// "filter" of the IoT Edge tutorials. Readings arriving on input `input1` whose machine
// temperature is above a threshold are forwarded to output `output1` with the property
// MessageType=Alert; the threshold is the twin's desired property TemperatureThreshold and is
// reported back. Two direct methods: `ping` answers with the module's counters; `emit`
// ({"output": "...", "bytes": N}) sends a message of N bytes and answers with the SDK's
// verdict, which shows how errors (for instance a message over the size limit) come back.
//
// This example lets the client own its io_context and thread (ModuleClient::create without
// one); every handler below runs on that thread, one at a time. cairn-sensor shows the other
// style, on an io_context of the application. Build: `cmake --build --preset asan --target
// example-filter-module`; run as cairn-sensor is run (docs/sdk.md).
#include <charconv>
#include <csignal>
#include <iostream>
#include <string>

#include "cairn/module_client.hpp"

int main(int argc, char** argv) {
  using nlohmann::json;
  namespace sdk = cairn::sdk;
  const std::string usage =
      "usage: example-filter-module [--connection-string CS] [--ca-file PEM] [--connect-host "
      "HOST]\n"
      "                             [--port N]\n"
      "Without --connection-string the IoT Edge module environment (IOTEDGE_*) is used.\n";
  std::string connection_string;
  std::string ca_file;
  sdk::ModuleClientOptions options;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::cout << usage;
      return 0;
    }
    if (i + 1 >= argc) {
      std::cerr << usage;
      return 2;
    }
    if (arg == "--connection-string") {
      connection_string = argv[++i];
    } else if (arg == "--ca-file") {
      ca_file = argv[++i];
    } else if (arg == "--connect-host") {
      options.connect_host = argv[++i];
    } else if (arg == "--port") {
      const std::string_view text = argv[++i];
      unsigned port = 0;
      const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), port);
      if (ec != std::errc{} || end != text.data() + text.size() || port == 0 || port > 65535) {
        std::cerr << "example-filter-module: --port needs a number from 1 to 65535\n";
        return 2;
      }
      options.port = static_cast<std::uint16_t>(port);
    } else {
      std::cerr << usage;
      return 2;
    }
  }

  // Block the stop signals before the client starts its thread, so that only sigwait sees them.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  auto settings = connection_string.empty()
                      ? sdk::settings_from_environment()
                      : sdk::settings_from_connection_string(connection_string);
  if (!settings) {
    std::cerr << "example-filter-module: " << settings.error().message << "\n";
    return 2;
  }
  if (!ca_file.empty()) settings->ca_file = ca_file;
  auto created = sdk::ModuleClient::create(*settings, options);
  if (!created) {
    std::cerr << "example-filter-module: " << created.error().message << "\n";
    return 2;
  }
  sdk::ModuleClient& client = **created;

  // State touched only by handlers, which all run on the client's thread.
  double threshold = 25;
  long long received = 0;
  long long forwarded = 0;

  client.on_input("input1", [&](const sdk::InputMessage& m) {
    ++received;
    auto reading = json::parse(m.body, nullptr, false);
    const json* temperature = nullptr;
    if (reading.is_object() && reading.contains("machine") && reading["machine"].is_object() &&
        reading["machine"].contains("temperature")) {
      temperature = &reading["machine"]["temperature"];
    }
    if (temperature == nullptr || !temperature->is_number()) {
      std::cerr << "input1: not a sensor reading; ignored\n";
      return;
    }
    if (temperature->get<double>() <= threshold) return;
    sdk::OutputMessage alert;
    alert.body = m.body;
    alert.properties = m.properties;  // keeps message id, content type and encoding
    alert.properties.correlation_id = m.properties.message_id;
    alert.properties.app.emplace_back("MessageType", "Alert");
    ++forwarded;
    client.send("output1", std::move(alert), [](cairn::Status st) {
      if (!st) std::cerr << "output1: " << st.error().message << "\n";
    });
  });

  client.on_desired([&](const json& desired, long long version, bool) {
    if (auto it = desired.find("TemperatureThreshold"); it != desired.end() && it->is_number()) {
      threshold = it->get<double>();
    }
    client.update_reported({{"TemperatureThreshold", threshold}, {"lastDesiredVersion", version}});
  });

  client.on_method("ping", [&](const sdk::MethodRequest&,
                               sdk::ModuleClient::MethodRespond respond) {
    respond(
        200,
        json{{"received", received}, {"forwarded", forwarded}, {"threshold", threshold}}.dump());
  });

  client.on_method("emit", [&](const sdk::MethodRequest& request,
                               sdk::ModuleClient::MethodRespond respond) {
    const json& p = request.payload;
    if (!p.is_object() || !p.contains("bytes") || !p["bytes"].is_number_unsigned() ||
        p["bytes"].get<std::size_t>() > 16 * 1024 * 1024) {
      respond(
          400,
          json{{"message", "payload must be {\"output\": NAME, \"bytes\": N <= 16 MiB}"}}.dump());
      return;
    }
    sdk::OutputMessage m;
    m.body.assign(p["bytes"].get<std::size_t>(), 'x');
    const std::string output = p.value("output", std::string("output1"));
    // The method is answered when the hub has stored the message, or refused it.
    client.send(output, std::move(m), [respond](cairn::Status st) {
      if (st) {
        respond(200, json{{"sent", true}}.dump());
      } else {
        respond(st.error().code == cairn::errc::limit_exceeded ? 413 : 503,
                json{{"sent", false}, {"message", st.error().message}}.dump());
      }
    });
  });

  client.on_connection([](sdk::ConnectionState state, const std::string& reason) {
    std::cerr << "example-filter-module: " << sdk::to_string(state)
              << (reason.empty() ? "" : ": " + reason) << "\n";
  });

  client.start();
  int signal = 0;
  sigwait(&stop_signals, &signal);
  client.stop();  // blocks until disconnected: the client owns its io_context
  return 0;
}
