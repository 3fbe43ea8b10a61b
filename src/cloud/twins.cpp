#include "cloud/twins.hpp"

#include <fmt/format.h>

#include "cloud/ids.hpp"
#include "core/log.hpp"

namespace cairn::cloud {
namespace {

using nlohmann::json;

// Only a desired patch with content is worth a message to the device; a bare "$version" means
// the section was rewritten unchanged.
bool has_changes(const json& patch) {
  for (const auto& [k, v] : patch.items()) {
    if (!k.starts_with("$")) return true;
  }
  return false;
}

}  // namespace

CloudTwins::CloudTwins(CloudStore& store, StoreRunner runner)
    : store_(store), runner_(std::move(runner)) {}

void CloudTwins::on_store(std::string what, Reply reply, std::function<void(const Reply&)> work) {
  if (!runner_) return work(reply);
  Reply answer_on_io = [this, reply](int status, std::string body) {
    runner_.io(
        [reply, status, body = std::move(body)]() mutable { reply(status, std::move(body)); });
  };
  runner_.store(
      std::move(what), [work = std::move(work), answer_on_io] { work(answer_on_io); },
      [reply](const Error& e) {
        const int status = e.code == errc::unavailable ? 503 : 500;
        reply(status, twin::error_body(status, e.message));
      });
}

void CloudTwins::get_twin(const hub::Principal& who, Reply reply) {
  on_store("twin GET client=" + who.client_id(), std::move(reply),
           [this, who](const Reply& r) { get_twin_here(who, r); });
}

void CloudTwins::patch_reported(const hub::Principal& who, std::string_view body, Reply reply) {
  on_store(
      "twin reported patch client=" + who.client_id(), std::move(reply),
      [this, who, body = std::string(body)](const Reply& r) { patch_reported_here(who, body, r); });
}

Result<TwinRecord> CloudTwins::find(const TwinKey& key) {
  auto rec = store_.find_twin(key);
  if (!rec) return std::move(rec).error();
  if (!*rec) {
    return make_error(errc::not_found, key.module_id.empty()
                                           ? fmt::format("device '{}' not found", key.device_id)
                                           : fmt::format("module '{}' not found on device '{}'",
                                                         key.module_id, key.device_id));
  }
  return std::move(**rec);
}

void CloudTwins::get_twin_here(const hub::Principal& who, const Reply& reply) {
  auto rec = find(TwinKey{who.device_id, who.module_id});
  if (!rec) {
    const int status = rec.error().code == errc::not_found ? 404 : 500;
    if (status == 500) {
      log::error("cloud", "twin GET client={} failed: {}", who.client_id(),
                 rec.error().to_string());
    }
    reply(status, twin::error_body(status, rec.error().message));
    return;
  }
  reply(200, twin::dump_json(rec->twin.device_view()));
}

void CloudTwins::patch_reported_here(const hub::Principal& who, std::string_view body,
                                     const Reply& reply) {
  auto reject = [&](const Error& e) {
    ++counters_.reported_rejected;
    reply(400, twin::error_body(400, e.message));
  };
  auto patch = twin::parse_json(body);
  if (!patch) return reject(patch.error());
  if (!patch->is_object()) {
    return reject(make_error(errc::invalid_argument, "a reported patch must be a JSON object"));
  }
  auto rec = find(TwinKey{who.device_id, who.module_id});
  if (!rec) {
    const int status = rec.error().code == errc::not_found ? 404 : 500;
    reply(status, twin::error_body(status, rec.error().message));
    return;
  }
  twin::Twin after = rec->twin;
  if (auto s = after.patch_reported(*patch); !s) return reject(s.error());
  auto written = commit(*rec, std::move(after), std::nullopt);
  if (!written) {
    log::error("cloud", "storing the reported patch of client={} failed: {}", who.client_id(),
               written.error().to_string());
    reply(500, twin::error_body(500, written.error().message));
    return;
  }
  ++counters_.reported_patches;
  reply(204, "");
}

Result<json> CloudTwins::desired_of(const json& holder, std::string_view what) {
  auto props = holder.find("properties");
  if (props == holder.end() || props->is_null()) return json::object();
  if (!props->is_object()) {
    return make_error(errc::invalid_argument, fmt::format("{}.properties must be an object", what));
  }
  auto desired = props->find("desired");
  if (desired == props->end() || desired->is_null()) return json::object();
  if (!desired->is_object()) {
    return make_error(errc::invalid_argument,
                      fmt::format("{}.properties.desired must be an object", what));
  }
  json out = *desired;
  out.erase("$version");
  out.erase("$metadata");
  return out;
}

Result<TwinWrite> CloudTwins::update(const TwinKey& key, const json& patch,
                                     std::string_view if_match) {
  if (!patch.is_object()) {
    return make_error(errc::invalid_argument, "a twin patch must be a JSON object");
  }
  auto rec = find(key);
  if (!rec) return std::move(rec).error();
  if (!etag_matches(if_match, rec->etag)) {
    return make_error(errc::cancelled,
                      fmt::format("twin '{}' has etag '{}', not the one given in If-Match ({})",
                                  key.client_id(), rec->etag, if_match));
  }
  twin::Twin after = rec->twin;
  bool changed = false;
  std::optional<json> desired_patch;
  if (auto tags = patch.find("tags"); tags != patch.end() && !tags->is_null()) {
    if (!tags->is_object()) return make_error(errc::invalid_argument, "tags must be an object");
    CAIRN_TRY(after.patch_tags(*tags));
    changed = true;
  }
  if (auto props = patch.find("properties"); props != patch.end() && !props->is_null()) {
    if (!props->is_object()) {
      return make_error(errc::invalid_argument, "properties must be an object");
    }
    if (auto rep = props->find("reported"); rep != props->end() && !rep->is_null()) {
      return make_error(errc::invalid_argument,
                        "properties.reported is written by the device only; the service may "
                        "change tags and properties.desired");
    }
    if (auto des = props->find("desired"); des != props->end() && !des->is_null()) {
      auto desired = desired_of(patch, "patch");
      if (!desired) return std::move(desired).error();
      auto delivered = after.patch_desired(*desired);
      if (!delivered) return std::move(delivered).error();
      desired_patch = std::move(*delivered);
      changed = true;
    }
  }
  if (!changed) return TwinWrite{std::move(*rec), std::nullopt};
  return commit(*rec, std::move(after), std::move(desired_patch));
}

Result<TwinWrite> CloudTwins::replace(const TwinKey& key, const json& body,
                                      std::string_view if_match) {
  if (!body.is_object()) return make_error(errc::invalid_argument, "a twin must be a JSON object");
  auto rec = find(key);
  if (!rec) return std::move(rec).error();
  if (!etag_matches(if_match, rec->etag)) {
    return make_error(errc::cancelled,
                      fmt::format("twin '{}' has etag '{}', not the one given in If-Match ({})",
                                  key.client_id(), rec->etag, if_match));
  }
  twin::Twin after = rec->twin;
  json tags = json::object();
  if (auto t = body.find("tags"); t != body.end() && !t->is_null()) {
    if (!t->is_object()) return make_error(errc::invalid_argument, "tags must be an object");
    tags = *t;
  }
  CAIRN_TRY(after.replace_tags(tags));
  auto desired = desired_of(body, "twin");
  if (!desired) return std::move(desired).error();
  auto delivered = after.replace_desired(*desired);
  if (!delivered) return std::move(delivered).error();
  std::optional<json> desired_patch;
  if (has_changes(*delivered)) desired_patch = std::move(*delivered);
  return commit(*rec, std::move(after), std::move(desired_patch));
}

Result<TwinWrite> CloudTwins::commit(const TwinRecord& before, twin::Twin after,
                                     std::optional<json> desired_patch) {
  TwinRecord next{before.key, std::move(after), new_etag()};
  WriteBatch batch;
  batch.add(WriteBatch::PutTwin{next, before.etag});
  CAIRN_TRY(store_.write(batch));
  return TwinWrite{std::move(next), std::move(desired_patch)};
}

Result<json> CloudTwins::service_json(const TwinRecord& rec, std::optional<bool> connected_now) {
  const TwinKey& key = rec.key;
  auto device = store_.find_device(key.device_id);
  if (!device) return std::move(device).error();
  if (!*device) {
    return make_error(errc::not_found, fmt::format("device '{}' not found", key.device_id));
  }
  const DeviceRecord& d = **device;
  json out = json::object();
  out["deviceId"] = key.device_id;
  bool connected = d.connected;
  std::int64_t activity_ms = d.last_activity_ms;
  std::int64_t c2d = d.cloud_to_device_message_count;
  std::string identity_etag = d.etag;
  if (!key.module_id.empty()) {
    auto module = store_.find_module(key.device_id, key.module_id);
    if (!module) return std::move(module).error();
    if (!*module) {
      return make_error(errc::not_found, fmt::format("module '{}' not found on device '{}'",
                                                     key.module_id, key.device_id));
    }
    out["moduleId"] = key.module_id;
    connected = (*module)->connected;
    activity_ms = (*module)->last_activity_ms;
    c2d = (*module)->cloud_to_device_message_count;
    identity_etag = (*module)->etag;
  }
  out["etag"] = rec.etag;
  out["deviceEtag"] = identity_etag;
  out["status"] = d.enabled ? "enabled" : "disabled";
  if (!d.status_reason.empty()) out["statusReason"] = d.status_reason;
  out["statusUpdateTime"] = service_time(d.status_updated_ms);
  out["connectionState"] = connected_now.value_or(connected) ? "Connected" : "Disconnected";
  out["lastActivityTime"] = service_time(activity_ms);
  out["cloudToDeviceMessageCount"] = c2d;
  out["authenticationType"] = "sas";
  out["x509Thumbprint"] = {{"primaryThumbprint", nullptr}, {"secondaryThumbprint", nullptr}};
  out["modelId"] = "";
  out["version"] = rec.twin.version;
  out["tags"] = rec.twin.tags;
  out["properties"] = rec.twin.device_view();
  if (key.module_id.empty()) out["capabilities"] = {{"iotEdge", d.iot_edge}};
  return out;
}

}  // namespace cairn::cloud
