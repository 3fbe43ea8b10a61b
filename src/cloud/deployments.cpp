#include "cloud/deployments.hpp"

#include <fmt/format.h>

#include "cloud/authenticator.hpp"
#include "cloud/ids.hpp"

namespace cairn::cloud {
namespace {

using nlohmann::json;

// One module entry, checked and ready to write.
struct Planned {
  TwinKey key;
  std::optional<ModuleRecord> new_module;  // set when the identity must be created
  TwinRecord before;                       // the stored twin (empty for a new module)
  twin::Twin after;
  json patch;
};

}  // namespace

Deployments::Deployments(Registry& registry, CloudTwins& twins)
    : registry_(registry), twins_(twins) {}

Result<std::vector<DesiredPush>> Deployments::apply(const std::string& device_id,
                                                    const json& content) {
  auto device = registry_.get_device(device_id);
  if (!device) return std::move(device).error();
  if (!device->iot_edge) {
    return make_error(errc::invalid_argument,
                      fmt::format("device '{}' is not an IoT Edge device (capabilities.iotEdge "
                                  "is false): only edge devices take deployments",
                                  device_id));
  }
  if (!content.is_object()) {
    return make_error(errc::invalid_argument, "the configuration content must be a JSON object");
  }
  auto modules = content.find("modulesContent");
  if (modules == content.end() || !modules->is_object() || modules->empty()) {
    return make_error(errc::invalid_argument,
                      "the configuration content needs a non-empty \"modulesContent\" object");
  }

  std::vector<Planned> plan;
  for (const auto& [module_id, entry] : modules->items()) {
    const std::string where = fmt::format("modulesContent.{}", module_id);
    if (!valid_identity_id(module_id)) {
      return make_error(errc::invalid_argument,
                        where + ": " + invalid_id_message("module id", module_id));
    }
    auto desired = entry.is_object() ? entry.find("properties.desired") : entry.end();
    if (!entry.is_object() || desired == entry.end() || !desired->is_object()) {
      return make_error(errc::invalid_argument,
                        where + " must be an object with a \"properties.desired\" object");
    }
    Planned p;
    p.key = TwinKey{device_id, module_id};
    auto existing = registry_.store().find_module(device_id, module_id);
    if (!existing) return std::move(existing).error();
    if (*existing) {
      auto rec = twins_.find(p.key);
      if (!rec) return std::move(rec).error();
      p.before = std::move(*rec);
    } else {
      ModuleSpec spec;
      spec.device_id = device_id;
      spec.module_id = module_id;
      spec.managed_by = kManagedByEdge;
      auto m = registry_.new_module_record(spec);
      if (!m) return std::move(m).error();
      p.new_module = std::move(*m);
      p.before = TwinRecord{p.key, twin::Twin{}, ""};
    }
    p.after = p.before.twin;
    json section = *desired;
    section.erase("$version");
    section.erase("$metadata");
    auto patch = p.after.replace_desired(section);
    if (!patch) {
      return make_error(patch.error().code, where + ": " + patch.error().message);
    }
    p.patch = std::move(*patch);
    plan.push_back(std::move(p));
  }

  auto previous = registry_.store().find_deployment(device_id);
  if (!previous) return std::move(previous).error();
  WriteBatch batch;
  std::vector<DesiredPush> pushes;
  for (auto& p : plan) {
    if (p.new_module) {
      batch.add(WriteBatch::InsertModule{*p.new_module});
      batch.add(WriteBatch::PutTwin{TwinRecord{p.key, std::move(p.after), new_etag()}, ""});
    } else {
      batch.add(
          WriteBatch::PutTwin{TwinRecord{p.key, std::move(p.after), new_etag()}, p.before.etag});
    }
    pushes.push_back(DesiredPush{p.key.client_id(), std::move(p.patch)});
  }
  DeploymentRecord record{device_id, *previous ? (*previous)->version + 1 : 1, content,
                          registry_.now_ms()};
  batch.add(WriteBatch::PutDeployment{std::move(record)});
  CAIRN_TRY(registry_.store().write(batch));
  return pushes;
}

Result<std::optional<DeploymentRecord>> Deployments::last(const std::string& device_id) {
  return registry_.store().find_deployment(device_id);
}

}  // namespace cairn::cloud
