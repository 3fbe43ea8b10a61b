#include "hub/edge_api.hpp"

#include <filesystem>
#include <sstream>

#include "core/clock.hpp"
#include "core/crypto.hpp"
#include "core/log.hpp"

namespace cairn::hub {
namespace {

using net::json_response;

net::HttpResponse message_response(int status, const std::string& message) {
  return json_response(status, {{"message", message}});
}

// Path segments, URL-decoded; nullopt if one does not decode.
std::optional<std::vector<std::string>> segments(const std::string& path) {
  std::vector<std::string> out;
  std::size_t start = 1;
  while (start <= path.size()) {
    auto end = path.find('/', start);
    if (end == std::string::npos) end = path.size();
    auto decoded = crypto::url_decode(std::string_view(path).substr(start, end - start));
    if (!decoded) return std::nullopt;
    out.push_back(std::move(*decoded));
    start = end + 1;
  }
  return out;
}

}  // namespace

EdgeApi::EdgeApi(Hub& hub, store::MessageStore& store, std::shared_ptr<TwinCache> twins,
                 std::shared_ptr<Upstream> upstream)
    : hub_(hub), store_(store), twins_(std::move(twins)), upstream_(std::move(upstream)) {}

bool EdgeApi::handle_management(const net::HttpRequest& request, net::HttpRespond& respond) {
  const std::string path = net::http_path(request.target);
  auto parts = segments(path);
  if (!parts || parts->empty()) return false;
  const auto& p = *parts;
  const std::string& device = hub_.config().device_id;
  if (p[0] == "twins" && p.size() == 2 && request.method == "GET") {
    auto view = twins_->cached_view(device + "/" + p[1]);
    if (!view) {
      respond(message_response(404, "no twin is cached for module '" + p[1] + "'"));
    } else {
      respond(json_response(200, *view));
    }
    return true;
  }
  if (p[0] == "twins" && p.size() == 3 && p[2] == "desired" && request.method == "PATCH") {
    if (upstream_) {
      respond(message_response(409,
                               "desired properties of this device come from the cloud "
                               "at " +
                                   hub_.config().upstream.hostname + ": change them there"));
      return true;
    }
    auto patch = twin::parse_json(request.body);
    if (!patch) {
      respond(message_response(400, patch.error().message));
      return true;
    }
    twins_->patch_desired_local(device + "/" + p[1], *patch, [respond](Result<nlohmann::json> r) {
      if (!r) {
        respond(message_response(400, r.error().message));
      } else {
        respond(json_response(200, *r));
      }
    });
    return true;
  }
  if (p[0] == "methods" && p.size() == 2 && request.method == "POST") {
    invoke(device + "/" + p[1], request.body, respond, false);
    return true;
  }
  if (p.size() == 1 && p[0] == "check" && request.method == "GET") {
    check(respond);
    return true;
  }
  if (p.size() == 1 && p[0] == "metrics" && request.method == "GET") {
    metrics(respond);
    return true;
  }
  return false;
}

void EdgeApi::handle_gateway(const net::HttpRequest& request, net::HttpRespond respond) {
  const std::string path = net::http_path(request.target);
  auto parts = segments(path);
  // /twins/{device}/modules/{module}/methods
  if (!parts || parts->size() != 5 || (*parts)[0] != "twins" || (*parts)[2] != "modules" ||
      (*parts)[4] != "methods") {
    respond(message_response(404, path + " is not served here"));
    return;
  }
  if (request.method != "POST") {
    respond(message_response(405, "use POST to invoke a method"));
    return;
  }
  const auto& p = *parts;
  const std::string caller = request.header("x-ms-edge-moduleId");
  auto slash = caller.find('/');
  if (caller.empty() || slash == std::string::npos) {
    respond(message_response(400, "Invalid header value for x-ms-edge-moduleId"));
    return;
  }
  // The caller's own module token, checked like an MQTT CONNECT of that module.
  AuthRequest auth{caller, hub_.config().hostname + "/" + caller + "/?api-version=2018-06-28",
                   request.header("Authorization")};
  auto who = hub_.authenticator().authenticate(auth, now_unix_s());
  if (!who) {
    respond(message_response(401, who.error().message));
    return;
  }
  if (who->device_id != hub_.config().device_id || p[1] != hub_.config().device_id) {
    respond(message_response(401, "Only modules on the same device can invoke DirectMethods"));
    return;
  }
  invoke(p[1] + "/" + p[3], request.body, std::move(respond), true);
}

void EdgeApi::invoke(const std::string& client_id, const std::string& body,
                     net::HttpRespond respond, bool gateway_shape) {
  auto json = twin::parse_json(body);
  if (!json) {
    respond(message_response(400, json.error().message));
    return;
  }
  auto request = parse_method_request(*json);
  if (!request) {
    respond(message_response(400, request.error().message));
    return;
  }
  hub_.invoke_method(
      client_id, std::move(*request), [respond, gateway_shape](Result<MethodResponse> r) {
        if (!r) {
          respond(message_response(method_error_status(r.error().code), r.error().message));
          return;
        }
        (void)gateway_shape;  // both shapes answer {"status", "payload"}
        respond(json_response(200, {{"status", r->status}, {"payload", r->payload}}));
      });
}

nlohmann::json EdgeApi::status() const {
  const auto& c = twins_->counters();
  nlohmann::json out{
      {"twins",
       {{"getsFromCloud", c.gets_served_from_cloud},
        {"getsFromCache", c.gets_served_from_cache},
        {"reportedPatches", c.reported_patches},
        {"reportedRejected", c.reported_rejected},
        {"reportedOverLimit", c.reported_over_limit},
        {"desiredForwarded", c.desired_forwarded},
        {"resyncs", c.resyncs}}},
      {"upstream", upstream_ ? upstream_->status() : nlohmann::json{{"enabled", false}}}};
  return out;
}

void EdgeApi::check(net::HttpRespond respond) {
  auto checks = std::make_shared<nlohmann::json>(nlohmann::json::array());
  auto add = [checks](const char* id, const char* level, std::string message) {
    checks->push_back({{"id", id}, {"status", level}, {"message", std::move(message)}});
  };
  const auto& cfg = hub_.config();
  auto st = store_.stats();
  add("store-healthy", st.healthy ? "ok" : "error",
      st.healthy ? "the message store accepts writes"
                 : "the message store failed a commit; restart cairnd and check the disk");
  if (cfg.store.max_bytes != 0) {
    const double used =
        static_cast<double>(st.stored_bytes) / static_cast<double>(cfg.store.max_bytes);
    add("store-capacity", used > 0.8 ? "warning" : "ok",
        std::to_string(st.stored_bytes) + " of " + std::to_string(cfg.store.max_bytes) +
            " bytes of queued messages");
  }
  std::error_code ec;
  const bool ca = std::filesystem::exists(cfg.home + "/certs/edge-ca.pem", ec);
  add("edge-ca-certificate", ca ? "ok" : "error",
      ca ? cfg.home + "/certs/edge-ca.pem"
         : "no edge CA certificate: start cairnd once to create it");
  if (!upstream_) {
    add("upstream-configured", "warning",
        "no cloud configured ([upstream] hostname): $upstream messages stay on this device");
  } else {
    auto s = upstream_->status();
    const bool online = s["online"].get<bool>();
    std::string detail = cfg.upstream.hostname + ":" + std::to_string(cfg.upstream.port);
    for (const auto& [id, link] : s["links"].items()) {
      if (!link["lastError"].get<std::string>().empty()) {
        detail += "; " + id + ": " + link["lastError"].get<std::string>();
      }
    }
    add("upstream-connected", online ? "ok" : "error",
        (online ? "connected to "
                : "offline for " +
                      std::to_string(static_cast<long long>(upstream_->offline_seconds())) +
                      "s from ") +
            detail);
  }
  store_.queues([checks, respond, add, &io = hub_.io()](Result<std::vector<store::QueueInfo>> r) {
    asio::post(io, [checks, respond, add, r = std::move(r)] {
      std::uint64_t upstream_waiting = 0;
      if (r) {
        for (const auto& q : *r) {
          if (queue_status(q)["endpoint"] == "$upstream") upstream_waiting += q.length;
        }
      }
      add("upstream-queue", upstream_waiting > 0 ? "warning" : "ok",
          std::to_string(upstream_waiting) + " messages waiting for the cloud");
      bool failed = false;
      for (const auto& c : *checks) failed = failed || c["status"] == "error";
      respond(json_response(200, {{"healthy", !failed}, {"checks", *checks}}));
    });
  });
}

void EdgeApi::metrics(net::HttpRespond respond) {
  auto hub_status = std::make_shared<nlohmann::json>(hub_.status());
  auto extra = std::make_shared<nlohmann::json>(status());
  store_.queues([hub_status, extra, respond,
                 &io = hub_.io()](Result<std::vector<store::QueueInfo>> r) {
    asio::post(io, [hub_status, extra, respond, r = std::move(r)] {
      std::ostringstream out;
      auto metric = [&out](const char* name, const char* type, const char* help) {
        out << "# HELP " << name << ' ' << help << "\n# TYPE " << name << ' ' << type << '\n';
      };
      const auto& c = (*hub_status)["counters"];
      metric("cairn_messages_received_total", "counter", "Messages received from modules");
      out << "cairn_messages_received_total " << c["messagesReceived"] << '\n';
      metric("cairn_messages_dropped_total", "counter", "Messages dropped because they expired");
      out << "cairn_messages_dropped_total " << c["messagesExpired"] << '\n';
      metric("cairn_messages_refused_total", "counter",
             "Messages refused at ingest, by reason (not acknowledged to the sender)");
      out << "cairn_messages_refused_total{reason=\"undeliverable_topic\"} "
          << c["messagesUndeliverable"] << '\n';
      out << "cairn_messages_refused_total{reason=\"store\"} " << c["messagesRejected"] << '\n';
      metric("cairn_messages_dead_lettered_total", "counter",
             "Messages moved out of their queue because they can never be delivered");
      out << "cairn_messages_dead_lettered_total " << c["messagesDeadLettered"] << '\n';
      metric("cairn_dead_letters", "gauge", "Dead letters kept (at most store.max_dead_letters)");
      out << "cairn_dead_letters " << c["deadLetters"] << '\n';
      metric("cairn_dead_letters_dropped_total", "counter",
             "Oldest dead letters deleted to keep the table at store.max_dead_letters");
      out << "cairn_dead_letters_dropped_total " << c["deadLettersDropped"] << '\n';
      std::uint64_t failed_deliveries = 0;
      std::uint64_t ack_failures = 0;
      for (const auto& [id, e] : (*hub_status)["endpoints"].items()) {
        failed_deliveries += e.value("failedDeliveries", std::uint64_t{0});
        ack_failures += e.value("ackFailures", std::uint64_t{0});
      }
      metric("cairn_delivery_failures_total", "counter",
             "Consumers gone with their oldest delivery unacknowledged (counts toward "
             "mqtt.max_delivery_attempts)");
      out << "cairn_delivery_failures_total " << failed_deliveries << '\n';
      metric("cairn_ack_failures_total", "counter",
             "Deletions of acknowledged messages the store did not commit (redelivered later)");
      out << "cairn_ack_failures_total " << ack_failures << '\n';
      metric("cairn_limit_reached_total", "counter",
             "Times a client reached a named limit, by setting (docs/architecture.md#limits)");
      for (const auto& [setting, n] : (*hub_status)["limitsReached"].items()) {
        out << "cairn_limit_reached_total{limit=\"" << setting << "\"} " << n << '\n';
      }
      if (const auto& t = (*extra)["twins"]; t.contains("reportedOverLimit")) {
        out << "cairn_limit_reached_total{limit=\"twin.pending_reported_bytes\"} "
            << t["reportedOverLimit"] << '\n';
      }
      metric("cairn_sessions_failed_total", "counter", "MQTT sessions ended by an internal error");
      out << "cairn_sessions_failed_total " << c["sessionsFailed"] << '\n';
      const auto& st = (*hub_status)["store"];
      metric("cairn_store_healthy", "gauge", "1 while the message store accepts writes");
      out << "cairn_store_healthy " << (st["healthy"].get<bool>() ? 1 : 0) << '\n';
      metric("cairn_store_refusing", "gauge",
             "1 while a transient store failure (disk full, locked) refuses new messages");
      out << "cairn_store_refusing " << (st["refusing"].get<bool>() ? 1 : 0) << '\n';
      metric("cairn_store_refused_writes_total", "counter",
             "Messages refused because the store could not write at the time");
      out << "cairn_store_refused_writes_total " << st["refusedWritesTotal"] << '\n';
      metric("cairn_connected_clients", "gauge", "MQTT connections open");
      out << "cairn_connected_clients " << (*hub_status)["mqtt"]["connections"] << '\n';
      metric("cairn_queue_length", "gauge", "Messages stored per endpoint and priority");
      if (r) {
        for (const auto& q : *r) {
          // A per-identity $upstream queue: endpoint "$upstream" and the sender's identity.
          const auto listed = queue_status(q);
          out << "cairn_queue_length{endpoint=\"" << listed["endpoint"].get<std::string>() << '"';
          if (listed.contains("identity")) {
            out << ",identity=\"" << listed["identity"].get<std::string>() << '"';
          }
          out << ",priority=\"" << q.queue.priority << "\"} " << q.length << '\n';
        }
      }
      const auto& u = (*extra)["upstream"];
      if (u["enabled"].get<bool>()) {
        metric("cairn_upstream_online", "gauge", "1 while a cloud connection is up");
        out << "cairn_upstream_online " << (u["online"].get<bool>() ? 1 : 0) << '\n';
        metric("cairn_offline_duration_seconds", "counter", "Time without a cloud connection");
        out << "cairn_offline_duration_seconds " << u["offlineTotalSeconds"] << '\n';
        metric("cairn_upstream_messages_sent_total", "counter",
               "Messages acknowledged by the cloud");
        out << "cairn_upstream_messages_sent_total " << u["messagesSent"] << '\n';
        metric("cairn_upstream_messages_expired_unsent_total", "counter",
               "Messages whose time to live ran out while they waited for a cloud link");
        out << "cairn_upstream_messages_expired_unsent_total " << u["messagesExpiredUnsent"]
            << '\n';
        metric("cairn_upstream_reconnects_total", "counter", "Cloud connections lost");
        out << "cairn_upstream_reconnects_total " << u["reconnects"] << '\n';
      }
      const auto& t = (*extra)["twins"];
      metric("cairn_twin_reported_patches_total", "counter", "Reported patches accepted");
      out << "cairn_twin_reported_patches_total " << t["reportedPatches"] << '\n';
      metric("cairn_twin_desired_forwarded_total", "counter", "Desired patches sent to modules");
      out << "cairn_twin_desired_forwarded_total " << t["desiredForwarded"] << '\n';
      respond(net::HttpResponse{200, out.str(), "text/plain; version=0.0.4", {}});
    });
  });
}

}  // namespace cairn::hub
