#include "hub/twin_cache.hpp"

#include "core/json.hpp"
#include "core/log.hpp"

namespace cairn::hub {
namespace {

constexpr const char* kTwinsTable = "twins";

nlohmann::json without_version(nlohmann::json patch) {
  if (patch.is_object()) patch.erase("$version");
  return patch;
}

}  // namespace

TwinCache::TwinCache(asio::io_context& io, store::MessageStore& store, NotifyDesired notify)
    : io_(io), store_(store), notify_(std::move(notify)) {}

TwinCache::Entry& TwinCache::entry(const std::string& client_id) {
  auto it = entries_.find(client_id);
  if (it != entries_.end()) return it->second;
  Entry e;
  auto stored = store_.get(kTwinsTable, client_id);
  if (!stored) {
    log::error("twin", "[{}] cannot read the cached twin: {}", client_id,
               stored.error().to_string());
  } else if (*stored) {
    auto record = twin::parse_json(**stored);
    auto t = record && record->is_object() && record->contains("twin")
                 ? twin::Twin::parse(dump_json((*record)["twin"]))
                 : Result<twin::Twin>(make_error(errc::corruption, "not a twin record"));
    if (t) {
      e.twin = std::move(*t);
      if (auto p = record->find("pending"); p != record->end() && p->is_array()) {
        for (const auto& patch : *p) e.pending.push_back(patch);
      }
    } else {
      // The cloud still has the twin of record: the next resync restores it.
      log::error("twin", "[{}] cached twin is unreadable and starts empty: {}", client_id,
                 t.error().to_string());
    }
  }
  return entries_.emplace(client_id, std::move(e)).first->second;
}

void TwinCache::persist(const std::string& client_id, std::function<void(Status)> done) {
  const Entry& e = entry(client_id);
  auto twin_json = twin::parse_json(e.twin.serialize());
  nlohmann::json record{{"twin", twin_json ? *twin_json : nlohmann::json::object()},
                        {"pending", e.pending}};
  store_.put(kTwinsTable, client_id, twin::dump_json(record),
             [&io = io_, client_id, done = std::move(done)](Status s) mutable {
               if (!s) {
                 log::error("twin", "[{}] cannot store the twin: {}", client_id,
                            s.error().to_string());
               }
               if (done) asio::post(io, [done = std::move(done), s = std::move(s)] { done(s); });
             });
}

void TwinCache::get_twin(const Principal& who, Reply reply) {
  auto id = who.client_id();
  if (upstream_ == nullptr || !upstream_->online(id)) {
    ++counters_.gets_served_from_cache;
    reply(200, twin::dump_json(entry(id).twin.device_view()));
    return;
  }
  std::weak_ptr<TwinCache> weak = weak_from_this();
  upstream_->fetch_twin(id, [weak, id, reply = std::move(reply)](Result<nlohmann::json> r) {
    auto self = weak.lock();
    if (!self) return;
    if (r) {
      if (auto t = twin::Twin::from_device_view(*r)) {
        self->adopt_cloud_twin(id, std::move(*t));
        self->persist(id, {});
        ++self->counters_.gets_served_from_cloud;
        reply(200, twin::dump_json(self->entry(id).twin.device_view()));
        return;
      } else {
        log::warn("twin", "[{}] cloud twin does not decode: {}", id, t.error().message);
      }
    } else {
      log::info("twin", "[{}] serving the cached twin: {}", id, r.error().message);
    }
    ++self->counters_.gets_served_from_cache;
    reply(200, twin::dump_json(self->entry(id).twin.device_view()));
  });
}

void TwinCache::patch_reported(const Principal& who, std::string_view body, Reply reply) {
  auto id = who.client_id();
  auto patch = twin::parse_json(body);
  if (!patch) {
    ++counters_.reported_rejected;
    reply(400, twin::error_body(400, patch.error().message));
    return;
  }
  Entry& e = entry(id);
  twin::Twin updated = e.twin;
  if (auto s = updated.patch_reported(*patch); !s) {
    ++counters_.reported_rejected;
    log::warn("twin", "[{}] reported patch refused: {}", id, s.error().message);
    reply(400, twin::error_body(400, s.error().message));
    return;
  }
  // Fold into the last waiting patch unless the upstream link is already sending it.
  const bool fold = !e.pending.empty() && !(e.pending.size() == 1 && e.front_sent);
  nlohmann::json waiting = fold ? e.pending.back() : nlohmann::json::object();
  twin::compose_patches(waiting, without_version(std::move(*patch)));
  if (const auto bytes = twin::dump_json(waiting).size(); bytes > twin::kMaxPatchBytes) {
    // Changes the cloud has not seen yet (deleted names included) must fit in one patch.
    ++counters_.reported_rejected;
    ++counters_.reported_over_limit;
    log::warn("twin",
              "[{}] reported patch refused: the changes waiting for the cloud would be "
              "{} bytes, over the limit of {}",
              id, bytes, twin::kMaxPatchBytes);
    reply(400, twin::error_body(400, "reported changes waiting for the cloud would exceed " +
                                         std::to_string(twin::kMaxPatchBytes) + " bytes"));
    return;
  }
  e.twin = std::move(updated);
  if (fold) {
    e.pending.back() = std::move(waiting);
  } else {
    e.pending.push_back(std::move(waiting));
  }
  ++counters_.reported_patches;
  std::weak_ptr<TwinCache> weak = weak_from_this();
  persist(id, [weak, id, reply = std::move(reply)](Status s) {
    if (!s) {
      reply(500, twin::error_body(500, s.error().message));
      return;
    }
    reply(204, "");
    if (auto self = weak.lock(); self && self->upstream_) self->upstream_->reported_pending(id);
  });
}

void TwinCache::adopt_cloud_twin(const std::string& client_id, twin::Twin cloud) {
  Entry& e = entry(client_id);
  // Patches the cloud has not accepted yet stay visible locally.
  for (const auto& patch : e.pending) twin::merge_patch(cloud.reported, patch);
  cloud.reported_version += static_cast<std::int64_t>(e.pending.size());
  cloud.tags = e.twin.tags;
  e.twin = std::move(cloud);
}

void TwinCache::cloud_desired(const std::string& client_id, const nlohmann::json& patch) {
  auto v = patch.find("$version");
  if (!patch.is_object() || v == patch.end() || !v->is_number_integer()) {
    log::warn("twin", "[{}] desired patch without $version from the cloud; resyncing", client_id);
    resync(client_id);
    return;
  }
  Entry& e = entry(client_id);
  const auto version = v->get<std::int64_t>();
  if (version <= e.twin.desired_version) return;  // already have it (a resync overtook it)
  if (version != e.twin.desired_version + 1) {
    resync(client_id);  // missed a patch: the full twin tells what changed
    return;
  }
  twin::merge_patch(e.twin.desired, without_version(patch));
  e.twin.desired_version = version;
  ++e.twin.version;
  persist(client_id, {});
  if (notify_(client_id, patch)) ++counters_.desired_forwarded;
}

void TwinCache::resync(const std::string& client_id, std::function<void()> done) {
  if (upstream_ == nullptr) {
    if (done) done();
    return;
  }
  std::weak_ptr<TwinCache> weak = weak_from_this();
  upstream_->fetch_twin(client_id, [weak, client_id,
                                    done = std::move(done)](Result<nlohmann::json> r) {
    auto self = weak.lock();
    if (!self) return;
    auto cloud = r ? twin::Twin::from_device_view(*r) : Result<twin::Twin>(r.error());
    if (!cloud) {
      log::warn("twin", "[{}] resync failed: {}", client_id, cloud.error().message);
      if (done) done();
      return;
    }
    ++self->counters_.resyncs;
    Entry& e = self->entry(client_id);
    std::optional<nlohmann::json> missed;
    if (cloud->desired_version != e.twin.desired_version) {
      missed = cloud->desired_patch_since(e.twin.desired);
    }
    self->adopt_cloud_twin(client_id, std::move(*cloud));
    self->persist(client_id, {});
    if (missed) {
      log::info("twin", "[{}] delivering the desired changes missed while offline ($version {})",
                client_id, dump_json((*missed)["$version"]));
      if (self->notify_(client_id, *missed)) ++self->counters_.desired_forwarded;
    }
    if (done) done();
  });
}

void TwinCache::patch_desired_local(const std::string& client_id, const nlohmann::json& patch,
                                    std::function<void(Result<nlohmann::json>)> done) {
  Entry& e = entry(client_id);
  twin::Twin updated = e.twin;
  auto delivered = updated.patch_desired(patch);
  if (!delivered) {
    done(std::move(delivered).error());
    return;
  }
  e.twin = std::move(updated);
  std::weak_ptr<TwinCache> weak = weak_from_this();
  persist(client_id, [weak, client_id, delivered = *delivered, done = std::move(done)](Status s) {
    auto self = weak.lock();
    if (!s || !self) {
      done(s ? Result<nlohmann::json>(make_error(errc::unavailable, "stopping")) : s.error());
      return;
    }
    if (self->notify_(client_id, delivered)) ++self->counters_.desired_forwarded;
    done(delivered);
  });
}

std::optional<nlohmann::json> TwinCache::pending_reported(const std::string& client_id) {
  Entry& e = entry(client_id);
  if (e.pending.empty()) return std::nullopt;
  e.front_sent = true;
  return e.pending.front();
}

void TwinCache::reported_sent(const std::string& client_id) {
  Entry& e = entry(client_id);
  if (e.pending.empty()) return;
  e.pending.erase(e.pending.begin());
  e.front_sent = false;
  persist(client_id, {});
}

std::vector<std::string> TwinCache::clients_with_pending() {
  std::vector<std::string> out;
  auto all = store_.list(kTwinsTable);
  if (!all) {
    log::error("twin", "cannot list cached twins: {}", all.error().to_string());
    return out;
  }
  for (const auto& [client_id, record] : *all) {
    if (!entry(client_id).pending.empty()) out.push_back(client_id);
  }
  return out;
}

std::optional<nlohmann::json> TwinCache::cached_view(const std::string& client_id) {
  auto stored = entries_.count(client_id) != 0 ? Result<std::optional<std::string>>(std::string())
                                               : store_.get(kTwinsTable, client_id);
  if (!stored || !*stored) return std::nullopt;
  return entry(client_id).twin.device_view();
}

}  // namespace cairn::hub
