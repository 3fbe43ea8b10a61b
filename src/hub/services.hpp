// The services a hub needs from its role. The same broker (sessions, topic mapping, routing,
// durable endpoints, direct-method plumbing) runs in two roles: on the device inside cairnd
// (identities of this edge device, a twin cache synchronised with the cloud) and as the device
// endpoint of cairn-cloud (every registered device and module, twins of record). Each role
// implements these interfaces; the hub does not know which role it serves.
//
// Thread-safety: every call happens on the hub's io_context thread; replies may be invoked
// later, but on that same thread.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "core/result.hpp"
#include "hub/identities.hpp"

namespace cairn::hub {

// Checks a CONNECT's credentials. errc::invalid_argument for a malformed username or client id
// (CONNACK 2), errc::unauthorized for a bad, expired or unknown credential (CONNACK 5).
class Authenticator {
 public:
  virtual ~Authenticator() = default;
  virtual Result<Principal> authenticate(const AuthRequest& request, std::int64_t now_unix_s) = 0;
  // The same check for a CONNECT, answered later: a role whose identities live in a database
  // looks them up off the io thread. `reply` runs once, on the io thread. By default it runs
  // at once with authenticate()'s answer.
  using AuthReply = std::function<void(Result<Principal>)>;
  virtual void authenticate_async(const AuthRequest& request, std::int64_t now_unix_s,
                                  AuthReply reply) {
    reply(authenticate(request, now_unix_s));
  }
};

// Serves the twin requests a client publishes on $iothub/twin/... (docs/protocol.md §3.4).
// `reply(status, body)`: 200 with {"desired":…,"reported":…} for GET, 204 with an empty body
// for a reported patch, 400 with {"message":…} for a patch that breaks the rules (nothing is
// stored then), 500 for other failures.
class TwinProvider {
 public:
  using Reply = std::function<void(int status, std::string body)>;
  virtual ~TwinProvider() = default;
  virtual void get_twin(const Principal& who, Reply reply) = 0;
  virtual void patch_reported(const Principal& who, std::string_view body, Reply reply) = 0;
  // The client subscribed to desired-property updates (a hint: a role may resync it now).
  virtual void desired_subscribed(const Principal& /*who*/) {}
};

// Connection events, for link management (edge) and connectionState (cloud).
class ConnectionObserver {
 public:
  virtual ~ConnectionObserver() = default;
  virtual void connected(const Principal& who) = 0;
  virtual void disconnected(const Principal& who) = 0;
  // The client subscribed to direct method requests.
  virtual void methods_subscribed(const Principal& /*who*/) {}
};

}  // namespace cairn::hub
