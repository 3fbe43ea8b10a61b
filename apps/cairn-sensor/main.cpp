// cairn-sensor: a simulated machine sensor module, written with the module SDK only. Like the
// well-known SimulatedTemperatureSensor it sends
//   {"machine":{"temperature":…,"pressure":…},"ambient":{"temperature":…,"humidity":…},
//    "timeCreated":"…"}
// to the output `temperatureOutput`. Its twin's desired properties set the send interval, the
// number of messages and anomaly injection (spikes); the values in force are reported back. A
// `reset` direct method restarts the simulation. docs/sdk.md describes it.
//
// Threading: one io_context run by the main thread; the client's handlers and the send timer
// all run there, so the simulation state needs no lock.
#include <csignal>
#include <iostream>
#include <random>

#include <CLI/CLI.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>

#include "cairn/module_client.hpp"
#include "core/clock.hpp"
#include "core/log.hpp"

namespace {

using namespace cairn;
namespace asio = boost::asio;
using nlohmann::json;

constexpr std::string_view kLog = "sensor";
constexpr const char* kOutput = "temperatureOutput";

// What the twin controls. Names follow the SimulatedTemperatureSensor's where it has one.
struct Settings {
  double send_interval_s = 5.0;  // SendInterval: seconds between messages
  long long message_count = 0;   // MessageCount: stop sending after this many (0: no limit)
  double spike_probability = 0;  // SpikeProbability: chance that a reading is an anomaly
  double spike_magnitude = 30;   // SpikeMagnitude: degrees added to an anomalous reading

  json to_json() const {
    return {{"SendInterval", send_interval_s},
            {"MessageCount", message_count},
            {"SpikeProbability", spike_probability},
            {"SpikeMagnitude", spike_magnitude}};
  }
};

// Limits on what the twin may ask for; a value outside is refused and reported.
constexpr double kMinIntervalS = 0.001;
constexpr double kMaxIntervalS = 86400;
constexpr double kMaxSpikeMagnitude = 1000;

// Machine temperature climbs from 21 towards 100 °C in small random steps; pressure follows it.
// Ambient temperature and humidity wander in a narrow band.
class Simulation {
 public:
  void reset() {
    machine_temperature_ = kStartTemperature;
    sent_ = 0;
  }
  json next_reading(const Settings& s, bool& anomaly) {
    std::uniform_real_distribution<double> unit(0.0, 1.0);
    if (machine_temperature_ < kMaxTemperature) machine_temperature_ += unit(rng_) * 0.5;
    double temperature = machine_temperature_;
    anomaly = s.spike_probability > 0 && unit(rng_) < s.spike_probability;
    if (anomaly) temperature += s.spike_magnitude;
    const double pressure =
        1 + (temperature - kStartTemperature) * 9.0 / (kMaxTemperature - kStartTemperature);
    const double ambient_temperature = 21 + unit(rng_) - 0.5;
    const double humidity = 24 + unit(rng_) * 3;
    return {{"machine", {{"temperature", temperature}, {"pressure", pressure}}},
            {"ambient", {{"temperature", ambient_temperature}, {"humidity", humidity}}},
            {"timeCreated", format_iso8601(now_unix_ms())}};
  }
  long long sent() const { return sent_; }
  void count_sent() { ++sent_; }

 private:
  static constexpr double kStartTemperature = 21;
  static constexpr double kMaxTemperature = 100;
  double machine_temperature_ = kStartTemperature;
  long long sent_ = 0;
  std::mt19937_64 rng_{std::random_device{}()};
};

// Applies the recognised members of a desired patch (or whole desired section) to `s`; returns
// a description of each refused member (the old value stays).
std::vector<std::string> apply_desired(const json& desired, Settings& s) {
  std::vector<std::string> refused;
  auto number = [&](const char* name, double min, double max, auto assign) {
    auto it = desired.find(name);
    if (it == desired.end() || it->is_null()) return;
    if (!it->is_number() || it->get<double>() < min || it->get<double>() > max) {
      refused.push_back(std::string(name) + " must be a number from " + fmt::format("{}", min) +
                        " to " + fmt::format("{}", max) + ", not " + it->dump());
      return;
    }
    assign(it->get<double>());
  };
  number("SendInterval", kMinIntervalS, kMaxIntervalS, [&](double v) { s.send_interval_s = v; });
  number("SpikeProbability", 0, 1, [&](double v) { s.spike_probability = v; });
  number("SpikeMagnitude", -kMaxSpikeMagnitude, kMaxSpikeMagnitude,
         [&](double v) { s.spike_magnitude = v; });
  if (auto it = desired.find("MessageCount"); it != desired.end() && !it->is_null()) {
    if (!it->is_number_integer() || it->get<long long>() < 0) {
      refused.push_back("MessageCount must be a whole number >= 0, not " + it->dump());
    } else {
      s.message_count = it->get<long long>();
    }
  }
  return refused;
}

class Sensor {
 public:
  Sensor(asio::io_context& io, sdk::ModuleClient& client, Settings initial)
      : client_(client), timer_(io), settings_(initial) {}

  void install() {
    client_.on_desired([this](const json& desired, long long version, bool complete) {
      on_desired(desired, version, complete);
    });
    client_.on_method(
        "reset", [this](const sdk::MethodRequest&, sdk::ModuleClient::MethodRespond respond) {
          simulation_.reset();
          log::info(kLog, "reset by direct method");
          respond(200, json{{"reset", true}, {"messagesSent", simulation_.sent()}}.dump());
          report({{"messagesSent", 0}});
          schedule(std::chrono::milliseconds{0});
        });
    client_.on_connection([this](sdk::ConnectionState state, const std::string&) {
      if (state == sdk::ConnectionState::connected) {
        report(settings_.to_json());
        // The first reading goes out as soon as there is a connection to send it on.
        if (simulation_.sent() == 0) schedule(std::chrono::milliseconds{0});
      }
      if (state == sdk::ConnectionState::stopped) timer_.cancel();
    });
  }

  void start() { schedule(std::chrono::milliseconds{0}); }
  void stop() {
    stopping_ = true;
    timer_.cancel();
  }

 private:
  void on_desired(const json& desired, long long version, bool complete) {
    const double old_interval = settings_.send_interval_s;
    auto refused = apply_desired(desired, settings_);
    json patch = settings_.to_json();
    patch["lastDesiredVersion"] = version;
    if (refused.empty()) {
      patch["lastDesiredStatus"] = {{"code", 200}, {"description", ""}};
    } else {
      std::string text;
      for (const auto& r : refused) text += (text.empty() ? "" : "; ") + r;
      log::warn(kLog, "desired properties refused: {}", text);
      patch["lastDesiredStatus"] = {{"code", 400}, {"description", text}};
    }
    log::info(kLog, "desired {} (version {}): interval {} s, count {}, spikes p={} +{}",
              complete ? "properties" : "patch", version, settings_.send_interval_s,
              settings_.message_count, settings_.spike_probability, settings_.spike_magnitude);
    report(std::move(patch));
    // A new rate applies now, not after the old interval ran out.
    if (settings_.send_interval_s != old_interval) schedule(interval());
  }

  std::chrono::milliseconds interval() const {
    return std::chrono::milliseconds(static_cast<long long>(settings_.send_interval_s * 1000));
  }

  void schedule(std::chrono::milliseconds delay) {
    if (stopping_) return;
    timer_.expires_after(delay);
    timer_.async_wait([this](boost::system::error_code ec) {
      if (ec) return;
      send_one();
      schedule(interval());
    });
  }

  void send_one() {
    if (settings_.message_count > 0 && simulation_.sent() >= settings_.message_count) {
      if (!count_reached_logged_) log::info(kLog, "sent {} messages; waiting", simulation_.sent());
      count_reached_logged_ = true;
      return;
    }
    if (client_.state() != sdk::ConnectionState::connected) return;  // a reading not taken
    count_reached_logged_ = false;
    bool anomaly = false;
    sdk::OutputMessage m;
    m.body = simulation_.next_reading(settings_, anomaly).dump();
    m.properties.content_type = "application/json";
    m.properties.content_encoding = "utf-8";
    m.properties.message_id =
        std::to_string(now_unix_ms()) + "-" + std::to_string(simulation_.sent());
    m.properties.app.emplace_back("anomaly", anomaly ? "true" : "false");
    simulation_.count_sent();
    client_.send(kOutput, std::move(m), [](Status st) {
      if (!st) log::warn(kLog, "reading not delivered: {}", st.error().message);
    });
    if (simulation_.sent() % 100 == 0) report({{"messagesSent", simulation_.sent()}});
  }

  void report(json patch) {
    client_.update_reported(std::move(patch), [](Status st) {
      if (!st) log::warn(kLog, "reported properties not stored: {}", st.error().message);
    });
  }

  sdk::ModuleClient& client_;
  asio::steady_timer timer_;
  Settings settings_;
  Simulation simulation_;
  bool stopping_ = false;
  bool count_reached_logged_ = false;
};

int run(const std::string& connection_string, const std::string& ca_file,
        sdk::ModuleClientOptions options, Settings initial) {
  auto settings = connection_string.empty()
                      ? sdk::settings_from_environment()
                      : sdk::settings_from_connection_string(connection_string);
  if (!settings) {
    log::error(kLog, "{}", settings.error().message);
    return 2;
  }
  if (!ca_file.empty()) settings->ca_file = ca_file;
  asio::io_context io(1);
  auto client = sdk::ModuleClient::create(io, *settings, options);
  if (!client) {
    log::error(kLog, "{}", client.error().message);
    return 2;
  }
  Sensor sensor(io, **client, initial);
  sensor.install();
  asio::signal_set signals(io, SIGINT, SIGTERM);
  signals.async_wait([&](boost::system::error_code ec, int signal) {
    if (ec) return;
    log::info(kLog, "signal {}: stopping", signal);
    sensor.stop();
    (*client)->stop();
  });
  (*client)->start();
  sensor.start();
  log::info(kLog, "ready: {} sends to output {}", settings->client_id(), kOutput);
  io.run();  // returns once the client has stopped and the timers are done
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "cairn-sensor — a simulated machine temperature/pressure sensor module. It connects with\n"
      "the IoT Edge module environment (IOTEDGE_* variables, as cairnd or IoT Edge set them) or\n"
      "--connection-string, and sends readings to output 'temperatureOutput'. Its twin's desired\n"
      "properties SendInterval (s), MessageCount, SpikeProbability and SpikeMagnitude change it;\n"
      "the direct method 'reset' restarts the simulation."};
  std::string connection_string;
  std::string level = "info";
  std::string connect_host;
  std::string ca_file;
  int port = 8883;
  Settings initial;
  app.add_option("--connection-string", connection_string,
                 "HostName=...;DeviceId=...;ModuleId=...;SharedAccessKey=...[;GatewayHostName=...] "
                 "(env EdgeHubConnectionString also works)");
  app.add_option("--ca-file", ca_file,
                 "PEM file of the CAs that sign the hub's certificate (env "
                 "EdgeModuleCACertificateFile)")
      ->envname("EdgeModuleCACertificateFile");
  app.add_option("--connect-host", connect_host,
                 "Address to connect to instead of the gateway host name (the TLS name stays "
                 "the gateway's)");
  app.add_option("--port", port, "MQTT/TLS port of the hub")
      ->capture_default_str()
      ->check(CLI::Range(1, 65535));
  app.add_option("--interval", initial.send_interval_s,
                 "Seconds between messages until the twin says otherwise")
      ->capture_default_str()
      ->check(CLI::Range(kMinIntervalS, kMaxIntervalS));
  app.add_option("--log-level", level, "trace, debug, info, warn, error or off")
      ->capture_default_str();
  app.set_version_flag("--version", std::string("cairn-sensor ") + CAIRN_VERSION);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }
  auto parsed_level = log::parse_level(level);
  if (!parsed_level) {
    std::cerr << "cairn-sensor: " << parsed_level.error().message << "\n";
    return 2;
  }
  log::init(*parsed_level);
  std::signal(SIGPIPE, SIG_IGN);
  sdk::ModuleClientOptions options;
  options.connect_host = connect_host;
  options.port = static_cast<std::uint16_t>(port);
  try {
    return run(connection_string, ca_file, options, initial);
  } catch (const std::exception& e) {
    log::error(kLog, "fatal: {}", e.what());
    return 1;
  }
}
