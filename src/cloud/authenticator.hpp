// CloudAuthenticator: checks the MQTT CONNECTs that reach cairn-cloud's device endpoint against
// the registry (docs/protocol.md §3.2).
//
// The username, client id, token expiry and audience are checked by hub::check_credentials
// (the audience host must be cairn-cloud's hostname). Then the signature:
//   - a device ("d"): signed with the device's primary or secondary key;
//   - a module ("d/m"): signed with the module's key, or, when the device is an edge device
//     (capabilities.iotEdge), with the device's key. The edge hub opens one upstream
//     connection per module identity and signs them all with its device key ("on behalf of");
//     a module the registry does not know yet is then registered on the spot (managedBy
//     "iotEdge", with an empty twin), as the edge device is the authority on its own modules.
// Unknown identities, disabled devices (and their modules) and bad signatures are
// errc::unauthorized (CONNACK 5); a malformed username or client id is errc::invalid_argument;
// a failing store is errc::unavailable (CONNACK 3 fits).
//
// Limits (CloudAuthLimits), so that one device, or one leaked edge device key, cannot take
// what all devices share: a token valid for longer than max_token_lifetime_secs is refused;
// an edge device registers a module by connecting it only while it has fewer than
// max_modules_per_device modules, however they were created (the registration beyond is
// refused, logged and counted); a device and its modules hold at most
// max_connections_per_device connections at once (a reconnection of a connected client id
// replaces its session and does not count twice). Both refusals are errc::limit_exceeded
// (CONNACK 5).
//
// Where the lookups run: without a StoreRunner, on the caller's thread (authenticate()). With
// one (cairn-cloud: its store worker, store_worker.hpp), authenticate_async() checks the token's
// form on the io thread, reads the identities on the store's thread, counts the device's
// connections back on the io thread, and registers a module on the store's thread again (after
// checking the credentials once more there: a key changed in between is not missed). A
// CONNECT that cannot be checked in time (the database is locked, the store queue is full) is
// errc::unavailable (CONNACK 3, "server unavailable").
//
// Thread-safety: authenticate() on the thread of the Registry's store; authenticate_async()
// on the io thread (its reply too). The counters may be read from any thread.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>

#include "cloud/registry.hpp"
#include "cloud/store_worker.hpp"
#include "hub/config.hpp"
#include "hub/services.hpp"

namespace cairn::cloud {

// The managedBy value of modules an edge device creates.
inline constexpr const char* kManagedByEdge = "iotEdge";

struct CloudAuthLimits {
  // Longest validity a presented SAS token may have left (0 = no maximum).
  std::int64_t max_token_lifetime_secs = hub::kDefaultMaxTokenLifetimeSecs;
  // Modules an edge device may register by connecting them (IoT Hub allows 50 module
  // identities per device). 0 = none: every module must be created through the service API.
  std::size_t max_modules_per_device = 50;
  // Connections of one device and its modules at once: its 50 modules, itself, and some room.
  // 0 = no limit.
  std::size_t max_connections_per_device = 64;
};

class CloudAuthenticator final : public hub::Authenticator {
 public:
  // Live connections of a device and its modules, except one client id (hub::Hub::
  // device_connections).
  using ConnectionCount =
      std::function<std::size_t(const std::string& device_id, const std::string& except_client)>;

  // `registry` must outlive the authenticator. `hostname`: the IoT Hub hostname devices put in
  // their token audience (compared case-insensitively). `runner`: where the registry's store
  // lives (empty: here).
  CloudAuthenticator(Registry& registry, std::string hostname, CloudAuthLimits limits = {},
                     StoreRunner runner = {});

  // Where max_connections_per_device counts from (the hub, once made); without it the limit
  // is not applied.
  void set_connection_count(ConnectionCount count) { connection_count_ = std::move(count); }

  Result<hub::Principal> authenticate(const hub::AuthRequest& request,
                                      std::int64_t now_unix_s) override;
  void authenticate_async(const hub::AuthRequest& request, std::int64_t now_unix_s,
                          AuthReply reply) override;

  const CloudAuthLimits& limits() const { return limits_; }
  // Modules registered because their edge device connected them.
  std::uint64_t modules_registered() const { return modules_registered_; }
  // Registrations refused by max_modules_per_device.
  std::uint64_t modules_refused_quota() const { return modules_refused_quota_; }
  // Connections refused by max_connections_per_device.
  std::uint64_t connections_refused_device_limit() const {
    return connections_refused_device_limit_;
  }

 private:
  // The store half: are the credentials good? true: yes, but the module is new and must be
  // registered (an edge device signed for it). Reads only.
  Result<bool> verify(const hub::Credentials& creds);
  // Registers the module an edge device signed for, within max_modules_per_device.
  Status register_module(const hub::Principal& p);
  // The io half: the device's live connections (the hub's).
  Status check_connection_limit(const hub::Principal& p);

  Registry& registry_;
  std::string hostname_;
  CloudAuthLimits limits_;
  StoreRunner runner_;
  ConnectionCount connection_count_;
  std::atomic<std::uint64_t> modules_registered_ = 0;
  std::atomic<std::uint64_t> modules_refused_quota_ = 0;
  std::atomic<std::uint64_t> connections_refused_device_limit_ = 0;
};

}  // namespace cairn::cloud
