#include "bench/targets.hpp"

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <string_view>
#include <thread>

#include "bench/process.hpp"
#include "core/clock.hpp"
#include "core/crypto.hpp"
#include "net/certs.hpp"
#include "net/service_client.hpp"
#include <unistd.h>

namespace cairn::bench {

namespace {

constexpr std::string_view kDeviceId = "bench-edge";
constexpr std::int64_t kTokenValiditySeconds = 3600;

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' '))
    s.remove_suffix(1);
  while (!s.empty() && (s.front() == ' ' || s.front() == '\n')) s.remove_prefix(1);
  return s;
}

// Creates MODULE's identity and turns its connection string into MQTT credentials. The
// management socket may come up a moment after the MQTT port, so early failures are retried.
Status module_credentials(const Programs& programs, const std::string& home,
                          const std::string& log_path, ClientSetup& client) {
  const std::string module = client.client_id.substr(client.client_id.find('/') + 1);
  Result<std::string> out = make_error(errc::internal, "not run");
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  for (;;) {
    out = run_capture({programs.cairn, "--home", home, "identity", "create", module}, log_path);
    if (out || std::chrono::steady_clock::now() > deadline) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  if (!out) return std::move(out).error();
  auto fields = net::parse_connection_string(*out);
  for (const char* key : {"HostName", "DeviceId", "ModuleId", "SharedAccessKey"}) {
    if (!fields.contains(key)) {
      return make_error(errc::invalid_argument, "`cairn identity create " + module +
                                                    "` printed no " + key + ": '" +
                                                    std::string(trim(*out)) + "'");
    }
  }
  const auto& host = fields["HostName"];
  const auto& device = fields["DeviceId"];
  const auto& module_id = fields["ModuleId"];
  auto token =
      crypto::make_sas_token(host + "/devices/" + device + "/modules/" + module_id,
                             fields["SharedAccessKey"], now_unix_s() + kTokenValiditySeconds);
  if (!token) return std::move(token).error();
  client.client_id = device + "/" + module_id;
  client.username = host + "/" + device + "/" + module_id + "/?api-version=2021-04-12";
  client.password = std::move(*token);
  return {};
}

std::string cairn_manifest(int subscribers) {
  std::string routes;
  for (int j = 0; j < subscribers; ++j) {
    if (j > 0) routes += ",";
    routes += "\"r" + std::to_string(j) +
              "\":\"FROM /messages/modules/* INTO BrokeredEndpoint(\\\"/modules/sub" +
              std::to_string(j) + "/inputs/in\\\")\"";
  }
  return R"({"modulesContent":{"$edgeAgent":{"properties.desired":{"schemaVersion":"1.1",)"
         R"("runtime":{"type":"docker","settings":{}},"systemModules":{"edgeAgent":{"type":)"
         R"("docker","settings":{"image":"cairn","createOptions":""}},"edgeHub":{"type":)"
         R"("docker","status":"running","restartPolicy":"always","settings":{"image":"cairn",)"
         R"("createOptions":""}}},"modules":{}}},"$edgeHub":{"properties.desired":)"
         R"({"schemaVersion":"1.1","routes":{)" +
         routes + R"(},"storeAndForwardConfiguration":{"timeToLiveSecs":7200}}}}})";
}

Result<PreparedBroker> prepare_mosquitto(const Programs& programs, const std::filesystem::path& dir,
                                         std::uint16_t port, int publishers, int subscribers,
                                         bool tls) {
  PreparedBroker b;
  b.kind = TargetKind::kMosquitto;
  b.port = port;
  b.log_path = (dir / "mosquitto.log").string();
  const auto conf = dir / "mosquitto.conf";
  // Defaults otherwise (max_inflight_messages 20, max_queued_messages 1000). TCP_NODELAY
  // because cairnd and the bench clients set it too; without it Nagle adds delay to small
  // packets and the latency comparison would measure that instead.
  std::string tls_lines;
  if (tls) {
    // A certificate like cairnd's (same key type, same chain length), so both brokers pay
    // the same handshake and record costs.
    net::CertificateOptions options;
    options.dns_names = {"localhost"};
    options.ip_addresses = {"127.0.0.1"};
    auto certs = net::ensure_edge_certificates((dir / "tls").string(), options);
    if (!certs) return std::move(certs).error();
    tls_lines =
        "certfile " + certs->server_cert_path + "\nkeyfile " + certs->server_key_path + "\n";
    // Started as root, mosquitto drops to user "mosquitto", which cannot read the key in our
    // private work directory; stay the user that started it, like cairnd.
    if (::geteuid() == 0) tls_lines += "user root\n";
  }
  auto written = write_file(conf, "listener " + std::to_string(port) + " 127.0.0.1\n" + tls_lines +
                                      "allow_anonymous true\npersistence false\n"
                                      "set_tcp_nodelay true\nlog_dest stderr\n"
                                      "log_type error\nlog_type warning\n");
  if (!written) return std::move(written).error();
  b.argv = {programs.mosquitto, "-c", conf.string()};
  for (int i = 0; i < publishers; ++i) {
    b.publishers.push_back({"bench-pub" + std::to_string(i), {}, {}, "bench/data"});
  }
  for (int j = 0; j < subscribers; ++j) {
    b.subscribers.push_back({"bench-sub" + std::to_string(j), {}, {}, "bench/data"});
  }
  return b;
}

Result<PreparedBroker> prepare_cairn(const Programs& programs, const std::filesystem::path& dir,
                                     std::uint16_t port, int publishers, int subscribers,
                                     bool tls) {
  PreparedBroker b;
  b.kind = TargetKind::kCairn;
  b.port = port;
  b.log_path = (dir / "cairnd.log").string();
  const auto home = dir / "home";
  std::error_code ec;
  std::filesystem::create_directories(home, ec);
  if (ec) return make_error(errc::io_error, "mkdir " + home.string() + ": " + ec.message());
  auto written = write_file(
      home / "config.toml",
      "device_id = \"" + std::string(kDeviceId) +
          "\"\nhostname = \"localhost\"\n[mqtt]\nlisten = \"127.0.0.1\"\n" +
          // Every bench client connects from 127.0.0.1, up to 100 at once: the per-address
          // default (16 connections waiting for CONNACK) would refuse them on a busy machine.
          "max_unauthenticated_per_address = 1000\nmax_unauthenticated_connections = 1000\n" +
          std::string(tls ? "plain_port = 0\ntls_port = " : "tls_port = 0\nplain_port = ") +
          std::to_string(port) + "\n[store]\nfsync = " + (programs.cairn_fsync ? "true" : "false") +
          "\n");
  if (!written) return std::move(written).error();
  const auto manifest = dir / "manifest.json";
  written = write_file(manifest, cairn_manifest(subscribers));
  if (!written) return std::move(written).error();
  b.argv = {programs.cairnd,   "--home",      home.string(), "--manifest",
            manifest.string(), "--log-level", "warn"};

  b.home = home.string();
  // Client ids are final once provision_clients() read the connection strings.
  for (int i = 0; i < publishers; ++i) {
    const std::string module = "pub" + std::to_string(i);
    b.publishers.push_back({std::string(kDeviceId) + "/" + module,
                            {},
                            {},
                            "devices/" + std::string(kDeviceId) + "/modules/" + module +
                                "/messages/events/%24.on=out"});
  }
  for (int j = 0; j < subscribers; ++j) {
    const std::string module = "sub" + std::to_string(j);
    b.subscribers.push_back({std::string(kDeviceId) + "/" + module,
                             {},
                             {},
                             "devices/" + std::string(kDeviceId) + "/modules/" + module + "/#"});
  }
  return b;
}

}  // namespace

std::string_view to_string(TargetKind kind) noexcept {
  return kind == TargetKind::kCairn ? "cairn" : "mosquitto";
}

Result<PreparedBroker> prepare_broker(TargetKind kind, const Programs& programs,
                                      const std::string& dir, std::uint16_t port, int publishers,
                                      int subscribers, bool tls) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return make_error(errc::io_error, "mkdir " + dir + ": " + ec.message());
  auto prepared = kind == TargetKind::kCairn
                      ? prepare_cairn(programs, dir, port, publishers, subscribers, tls)
                      : prepare_mosquitto(programs, dir, port, publishers, subscribers, tls);
  if (prepared) {
    prepared->dir = dir;
    prepared->tls = tls;
  }
  return prepared;
}

Status provision_clients(PreparedBroker& prepared, const Programs& programs) {
  if (prepared.kind != TargetKind::kCairn) return {};
  const std::string log_path = (std::filesystem::path(prepared.dir) / "cairn-cli.log").string();
  for (auto* group : {&prepared.publishers, &prepared.subscribers}) {
    for (auto& client : *group) {
      if (auto s = module_credentials(programs, prepared.home, log_path, client); !s) return s;
    }
  }
  return {};
}

}  // namespace cairn::bench
