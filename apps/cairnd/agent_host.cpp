#include "agent_host.hpp"

#include <chrono>
#include <future>

#include "core/clock.hpp"
#include "core/crypto.hpp"
#include "core/log.hpp"
#include "hub/edgehub_config.hpp"
#include "net/http.hpp"

namespace cairn::cairnd {

namespace {

// Runs `work(set)` on the hub thread and waits for it to call `set` (bounded: a stopping hub
// must not hang the agent).
template <class T, class Work>
Result<T> on_hub(hub::Hub& hub, Work work) {
  auto promise = std::make_shared<std::promise<Result<T>>>();
  auto future = promise->get_future();
  asio::post(hub.io(), [promise, work = std::move(work)]() mutable {
    work([promise](Result<T> r) { promise->set_value(std::move(r)); });
  });
  if (future.wait_for(std::chrono::seconds(20)) != std::future_status::ready) {
    return make_error(errc::timeout, "the hub did not answer");
  }
  return future.get();
}

struct Unit {};

}  // namespace

HubAgentHost::HubAgentHost(hub::Hub& hub, store::MessageStore& store,
                           std::shared_ptr<hub::TwinCache> twins,
                           std::shared_ptr<hub::Upstream> upstream, std::int64_t default_ttl_secs)
    : hub_(hub),
      twins_(std::move(twins)),
      upstream_(std::move(upstream)),
      default_ttl_secs_(default_ttl_secs) {
  if (upstream_) {
    cloud_deletions_ = std::make_unique<CloudDeletions>(
        store, [this](const std::string& module) { return delete_cloud_identity(module); });
    cloud_deletions_->start();
  }
}

Result<agent::ModuleIdentity> HubAgentHost::ensure_identity(const std::string& module) {
  if (cloud_deletions_) cloud_deletions_->cancel(module);
  auto identity = on_hub<agent::ModuleIdentity>(hub_, [this, module](auto set) {
    hub_.identities().create(module, [set](Result<hub::Identity> id) {
      if (!id) return set(std::move(id).error());
      set(agent::ModuleIdentity{id->module_id, id->primary_key, id->generation_id});
    });
  });
  if (identity && upstream_) {
    // The same path as a module connecting locally: its cloud identity connects too (once; a
    // link that exists is left as it is).
    asio::post(hub_.io(),
               [upstream = upstream_, who = hub::Principal{hub_.config().device_id, module, 0}] {
                 upstream->connected(who);
               });
  }
  return identity;
}

Status HubAgentHost::remove_identity(const std::string& module) {
  auto r = on_hub<Unit>(hub_, [this, module](auto set) {
    hub_.remove_identity(module, [set](Status s) {
      if (!s) return set(std::move(s).error());
      set(Unit{});
    });
  });
  if (upstream_) {
    // The link goes first: while it lived it would reconnect, and the cloud registers a module
    // the edge device connects. Then the cloud identity, even if the local one was already gone
    // (a removal cut short before).
    const std::string client_id = hub_.config().device_id + "/" + module;
    (void)on_hub<Unit>(hub_, [upstream = upstream_, client_id](auto set) {
      upstream->forget(client_id);
      set(Unit{});
    });
    cloud_deletions_->add(module);
  }
  if (!r) return std::move(r).error();
  return {};
}

Status HubAgentHost::delete_cloud_identity(const std::string& module) const {
  const auto& u = hub_.config().upstream;
  const std::string& device = hub_.config().device_id;
  auto token = crypto::make_sas_token(u.audience_host() + "/devices/" + device, u.device_key,
                                      now_unix_s() + kCloudRequestTokenSecs);
  if (!token) return std::move(token).error();
  net::HttpTarget target;
  target.host = u.hostname;
  target.port = u.https_port;
  target.ca_file = u.ca_file;
  net::HttpRequest request;
  request.method = "DELETE";
  request.target = "/devices/" + crypto::url_encode(device) + "/modules/" +
                   crypto::url_encode(module) + "?api-version=2021-04-12";
  request.headers = {{"Authorization", *token}};
  auto response = net::http_request(target, request, kCloudRequestTimeoutSecs);
  if (!response) return std::move(response).error();
  // 404: already gone, which is what was asked for.
  if (response->status == 204 || response->status == 200 || response->status == 404) {
    log::info("agent", "module {}: cloud identity deleted", module);
    return {};
  }
  return make_error(errc::unavailable, "DELETE " + request.target + " answered " +
                                           std::to_string(response->status) + ": " +
                                           response->body.substr(0, 300));
}

std::string HubAgentHost::validate_edgehub(const nlohmann::json& desired) {
  auto parsed = hub::parse_edgehub_desired(desired);
  if (!parsed) return parsed.error().message;
  return {};
}

Status HubAgentHost::apply_edgehub(const nlohmann::json& desired) {
  auto parsed = hub::parse_edgehub_desired(desired);
  if (!parsed) return std::move(parsed).error();
  auto sf = desired.find("storeAndForwardConfiguration");
  if (sf == desired.end() || !sf->is_object() || !sf->contains("timeToLiveSecs")) {
    parsed->ttl_secs = default_ttl_secs_;
  }
  auto r = on_hub<Unit>(hub_, [this, config = std::move(*parsed)](auto set) {
    auto s = hub_.apply(config);
    if (!s) return set(std::move(s).error());
    set(Unit{});
  });
  if (!r) return std::move(r).error();
  return {};
}

void HubAgentHost::set_module_desired(const std::string& module, const nlohmann::json& desired) {
  auto client_id = hub_.config().device_id + "/" + module;
  asio::post(hub_.io(), [twins = twins_, client_id, desired] {
    // The manifest replaces the desired section: keys it no longer has are deleted.
    nlohmann::json patch = desired;
    if (auto view = twins->cached_view(client_id); view && (*view)["desired"].is_object()) {
      for (const auto& [key, value] : (*view)["desired"].items()) {
        if (!key.starts_with("$") && !desired.contains(key)) patch[key] = nullptr;
      }
    }
    twins->patch_desired_local(client_id, patch, [client_id](Result<nlohmann::json> r) {
      if (!r) log::warn("agent", "desired properties of {}: {}", client_id, r.error().message);
    });
  });
}

void HubAgentHost::report(const std::string& system_module, const nlohmann::json& patch) {
  hub::Principal who{hub_.config().device_id, system_module, 0};
  // Through the twin cache: stored, and sent to the cloud (in order) once the identity's link
  // is up.
  asio::post(hub_.io(), [twins = twins_, who, body = patch.dump()] {
    twins->patch_reported(who, body, [who](int status, std::string reply) {
      if (status >= 300) {
        log::warn("agent", "{} reported properties: {} {}", who.module_id, status, reply);
      }
    });
  });
}

}  // namespace cairn::cairnd
