// HubConfig: everything cairnd's hub can be told, with embedded defaults that work with no
// config file at all. Loaded from DIR/config.toml; unknown keys are errors (a typo must not
// silently fall back to a default).
//
// Thread-safety: a plain value.
#pragma once

#include <cstdint>
#include <string>

#include "core/result.hpp"

namespace cairn::hub {

// The longest a SAS token may still be valid when it is presented, by default: a day. The SDKs
// ask for one-hour tokens and renew them; a token that lives for months is, once leaked, a key
// that cannot be taken back short of regenerating the identity's keys.
inline constexpr std::int64_t kDefaultMaxTokenLifetimeSecs = 24 * 3600;

struct HubConfig {
  std::string home;  // data, sockets and certificates live here

  // Identity of this edge device. Modules connect as "{device_id}/{module}".
  std::string device_id = "cairn-edge";
  // Host name modules use to reach the hub (server certificate SAN, GatewayHostName).
  std::string hostname = "localhost";
  // IoT Hub host name that appears in SAS token audiences (IOTEDGE_IOTHUBHOSTNAME). Tokens
  // naming either this or `hostname` are accepted, as edgeHub does.
  std::string iothub_hostname = "cairn.local";

  struct Mqtt {
    std::string listen = "127.0.0.1";  // address for both listeners; "0.0.0.0" for all
    std::uint16_t tls_port = 8883;     // 0 disables MQTT over TLS
    std::uint16_t plain_port = 0;      // 0 disables plain MQTT (use only on trusted hosts)
    // IoT Hub's message size limit: body plus properties.
    std::size_t max_message_bytes = 256 * 1024;
    // QoS 1 publishes waiting for their PUBACK (store commit) before the hub stops reading
    // from that client. Larger values let group commit batch more; each costs one message.
    // A commit starts by the time half of it is waiting, so 128 lets a client with 100 in
    // flight (a common SDK and load generator setting) be read without pause.
    std::size_t max_inflight_in = 128;
    // Unacknowledged deliveries per module endpoint. Bounds memory per slow consumer.
    std::size_t max_inflight_out = 64;
    // A message is dead-lettered after this many failed deliveries to a module input in a row
    // (the module disconnected while it was the oldest one unacknowledged), so one poison
    // message cannot wedge the module's queue. 0 = retry forever.
    std::uint32_t max_delivery_attempts = 10;
    std::uint32_t max_keepalive_secs = 600;  // server side cap (1.5 x client value)
    // CONNECT must arrive within this. Short: until then the socket is an unauthenticated
    // slot any peer can hold.
    std::uint32_t connect_timeout_secs = 10;
    std::size_t max_connections = 1000;  // every socket, authenticated or not
    // Before CONNECT is accepted a peer is anonymous: its packet (the CONNECT, with its will)
    // must fit in this, and only this many such sockets may be open at once, in total and
    // per source address, so one peer reconnecting in a loop cannot hold every slot.
    std::size_t max_connect_bytes = 8 * 1024;
    std::size_t max_unauthenticated_connections = 100;
    std::size_t max_unauthenticated_per_address = 16;
    // Subscriptions one session may hold; a SUBSCRIBE beyond it gets the failure code 0x80
    // for each new filter. Bounds the session's memory and its stored row.
    std::size_t max_subscriptions = 50;
    // Bytes of one topic filter in a SUBSCRIBE; a longer one gets the failure code 0x80. The
    // longest filter the SDKs use, a module's inputs with 128-character device and module ids,
    // is under 300 bytes. Bounds, with max_subscriptions, the session's stored row.
    std::size_t max_topic_filter_bytes = 1024;
    // Properties (system and application) of one message, and their total bytes (keys and
    // values, decoded). A PUBLISH beyond either is refused: no PUBACK, the connection closes.
    std::size_t max_properties = 128;
    std::size_t max_property_bytes = 32 * 1024;
  } mqtt;

  struct Auth {
    // A SAS token (MQTT CONNECT, the gateway's HTTPS API) may be valid for at most this long
    // from the moment it is presented; one valid for longer is refused. 0 = no maximum.
    std::int64_t max_token_lifetime_secs = kDefaultMaxTokenLifetimeSecs;
  } auth;

  // HTTPS for module-to-module direct methods (ModuleClient.invokeMethod), on mqtt.listen.
  struct Http {
    std::uint16_t port = 443;  // 0 disables it
  } http;

  struct Store {
    bool fsync = true;  // false: survives a crash of cairnd, not a power cut; faster on slow disks
    std::uint64_t max_bytes = 1024ull * 1024 * 1024;  // 1 GiB of queued messages; 0 = no cap
    std::uint32_t expire_interval_secs = 30;          // how often expired messages are deleted
    // How long a message may wait for others to share its commit when no publisher is held up
    // by it (store::Options::append_delay_us). 0 = commit each at once.
    std::uint32_t append_delay_us = 5000;
    static constexpr std::uint32_t kMaxAppendDelayUs = 60'000'000;
    // Dead letters kept (docs/failure_policy.md); beyond it the oldest is dropped and counted.
    // Each holds one message (up to mqtt.max_message_bytes). 0 = no cap.
    std::uint32_t max_dead_letters = 1000;
  } store;

  // The shortest SAS token lifetime accepted: a link renews its token at 80% of its life and
  // then waits up to kRenewalDrainSecs for outstanding acknowledgements on the old connection,
  // which must end before the token does (20% of 30 s is 6 s).
  static constexpr std::uint32_t kMinTokenTtlSecs = 30;
  static constexpr std::uint32_t kRenewalDrainSecs = 5;
  static_assert(kRenewalDrainSecs < kMinTokenTtlSecs * 2 / 10);

  // The link to the cloud (cairn-cloud or an IoT Hub-compatible service). Without a host the
  // device runs standalone: $upstream messages wait on disk and twins are local only.
  struct Upstream {
    std::string hostname;  // cloud MQTT host; empty = no cloud
    std::uint16_t port = 8883;
    // The cloud's HTTPS (service API) port: the agent deletes a removed module's cloud
    // identity there.
    std::uint16_t https_port = 443;
    std::string ca_file;  // PEM that verifies the cloud; empty = the system store
    // Host name in SAS token audiences ("{host}/devices/..."); empty = `hostname`.
    std::string iothub_hostname;
    // This edge device's symmetric key in the cloud registry (base64). The hub signs the
    // tokens of every identity it connects upstream with it, on behalf of the modules.
    std::string device_key;
    std::uint32_t token_ttl_secs = 3600;  // renewed at 80% of its lifetime; >= kMinTokenTtlSecs
    std::uint32_t min_backoff_ms = 1000;  // reconnect back-off: doubles up to max_backoff_secs
    std::uint32_t max_backoff_secs = 60;
    std::uint32_t operation_timeout_secs = 20;  // twin GET/PATCH answers from the cloud
    bool enabled() const { return !hostname.empty(); }
    const std::string& audience_host() const {
      return iothub_hostname.empty() ? hostname : iothub_hostname;
    }
  } upstream;

  // The agent (docs/agent.md). Only read by cairnd's agent; here because config.toml is one file.
  struct Agent {
    // The Docker Engine API socket modules of type docker run on ("unix:///var/run/docker.sock",
    // or a Podman service's socket; "none": no docker runtime). `cairnd --docker-uri` overrides
    // it; empty: $DOCKER_HOST, then /var/run/docker.sock if it exists, else no docker runtime.
    std::string docker_uri;
  } agent;

  // Default message TTL for routes with timeToLiveSecs = 0, until a manifest says otherwise.
  std::int64_t default_ttl_secs = 7200;

  std::string data_dir() const { return home + "/data"; }
  std::string run_dir() const { return home + "/run"; }
  std::string mgmt_socket() const { return run_dir() + "/mgmt.sock"; }
};

// Reads `path` if it exists (a missing file means all defaults). Errors name the file, the
// line and the key.
Result<HubConfig> load_config(const std::string& home, const std::string& path);

}  // namespace cairn::hub
