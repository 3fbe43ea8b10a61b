// The two brokers the MQTT benchmark compares, prepared for one workload: the command line that
// starts the broker on a given loopback port, plus, for each publisher and subscriber, its MQTT
// credentials and its topic.
//
//  - mosquitto: anonymous, publishers publish to bench/data, every subscriber subscribes to it.
//  - cairn: cairnd with a plain MQTT listener, module identities pub{i} / sub{j} created with
//    `cairn identity create`, SAS-token passwords, and one route per subscriber
//    FROM /messages/modules/* INTO BrokeredEndpoint("/modules/sub{j}/inputs/in").
//
// Thread-safety: plain functions; each call works in its own directory.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/result.hpp"

namespace cairn::bench {

enum class TargetKind { kCairn, kMosquitto };

std::string_view to_string(TargetKind kind) noexcept;

struct Programs {
  std::string cairnd;     // the daemon
  std::string cairn;      // its CLI (identities)
  std::string mosquitto;  // /usr/sbin/mosquitto
  // cairnd's store.fsync: true = fsync per group commit (power-cut safe); false = commit
  // without fsync (survives a crash of cairnd, not of the machine).
  bool cairn_fsync = true;
};

struct ClientSetup {
  std::string client_id;
  std::optional<std::string> username;
  std::optional<std::string> password;
  std::string topic;  // publishers: topic to publish to; subscribers: filter to subscribe to
};

struct PreparedBroker {
  TargetKind kind = TargetKind::kMosquitto;
  std::uint16_t port = 0;
  std::vector<std::string> argv;  // starts the broker
  std::string log_path;           // its stdout/stderr
  std::string home;               // cairn: cairnd's --home
  std::string dir;                // work directory of this broker
  bool tls = false;               // the listener speaks MQTT over TLS
  std::vector<ClientSetup> publishers;
  std::vector<ClientSetup> subscribers;
};

// Writes the broker's configuration under `dir` (created if missing) and returns how to start
// it. The client lists get ids and topics; credentials come from provision_clients().
// `tls`: the one listener is MQTT over TLS (cairnd's own edge certificate; for mosquitto one
// made the same way under `dir`).
[[nodiscard]] Result<PreparedBroker> prepare_broker(TargetKind kind, const Programs& programs,
                                                    const std::string& dir, std::uint16_t port,
                                                    int publishers, int subscribers,
                                                    bool tls = false);

// Fills in the clients' credentials. REQUIRES: the broker started from `prepared` runs. For
// cairn this runs `cairn --home H identity create MODULE` per module (the CLI talks to cairnd
// over its management socket) and signs a SAS token from each connection string; mosquitto
// needs nothing.
[[nodiscard]] Status provision_clients(PreparedBroker& prepared, const Programs& programs);

}  // namespace cairn::bench
