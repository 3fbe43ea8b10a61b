// EdgeApi: what cairnd serves beyond the message plane.
//
// On the management socket (mgmt.sock, used by the `cairn` command line):
//   GET   /twins/{module}              the cached twin {"desired":…,"reported":…}
//   PATCH /twins/{module}/desired      a desired patch, for devices without a cloud (409 when
//                                      a cloud owns the desired properties)
//   POST  /methods/{module}            a direct method call: {"methodName", "payload",
//                                      "responseTimeoutInSeconds", "connectTimeoutInSeconds"}
//                                      → 200 {"status", "payload"} or the IoT Hub error status
//   GET   /check                       health checks (store, certificates, cloud link, queues)
//   GET   /metrics                     Prometheus text format
// On HTTPS at the gateway host name, port 443 (docs/protocol.md §9.2), for modules calling
// each other's methods with ModuleClient.invokeMethod:
//   POST  /twins/{device}/modules/{module}/methods   (headers x-ms-edge-moduleId, Authorization)
//
// Thread-safety: the hub's io_context thread.
#pragma once

#include <memory>

#include "hub/hub.hpp"
#include "hub/twin_cache.hpp"
#include "hub/upstream.hpp"
#include "net/http.hpp"
#include "store/message_store.hpp"

namespace cairn::hub {

class EdgeApi {
 public:
  EdgeApi(Hub& hub, store::MessageStore& store, std::shared_ptr<TwinCache> twins,
          std::shared_ptr<Upstream> upstream /* null without a cloud */);

  // Returns false when the request is not one of the paths above (the hub's own management
  // API then answers it).
  bool handle_management(const net::HttpRequest& request, net::HttpRespond& respond);
  void handle_gateway(const net::HttpRequest& request, net::HttpRespond respond);

  nlohmann::json status() const;  // "upstream" and "twins" sections for `cairn status`

 private:
  void invoke(const std::string& client_id, const std::string& body, net::HttpRespond respond,
              bool gateway_shape);
  void check(net::HttpRespond respond);
  void metrics(net::HttpRespond respond);

  Hub& hub_;
  store::MessageStore& store_;
  std::shared_ptr<TwinCache> twins_;
  std::shared_ptr<Upstream> upstream_;
};

}  // namespace cairn::hub
