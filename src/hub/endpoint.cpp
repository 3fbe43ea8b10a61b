#include "hub/endpoint.hpp"

#include <algorithm>

#include "core/clock.hpp"
#include "core/log.hpp"

namespace cairn::hub {
namespace {

// How many entries are read from the store in one go when catching up on a backlog.
constexpr std::size_t kReadBatch = 256;
// Back-off between retries of a failed store read: doubles from the first to the last.
constexpr std::chrono::milliseconds kFirstReadRetry{100};
constexpr std::chrono::milliseconds kMaxReadRetry{10'000};

}  // namespace

std::string upstream_sender(const Message& m, std::string_view default_device) {
  std::string id(m.system.get(sysprop::kConnectionDeviceId).value_or(default_device));
  if (auto module = m.system.get(sysprop::kConnectionModuleId); module && !module->empty()) {
    id.push_back('/');
    id.append(*module);
  }
  return id;
}

Endpoint::Endpoint(asio::io_context& io, store::MessageStore& store, routing::Endpoint endpoint,
                   std::size_t max_inflight, std::uint32_t max_delivery_attempts)
    : io_(io),
      store_(store),
      endpoint_(std::move(endpoint)),
      max_inflight_(max_inflight),
      max_delivery_attempts_(
          endpoint_.kind == routing::Endpoint::Kind::module_input ? max_delivery_attempts : 0),
      read_retry_(io),
      read_backoff_(kFirstReadRetry, kMaxReadRetry) {}

Endpoint::Lane& Endpoint::lane(std::int32_t priority) {
  auto [it, inserted] = lanes_.try_emplace(priority);
  if (inserted) it->second.key = store::QueueKey{endpoint_.id(), priority};
  return it->second;
}

bool Endpoint::cacheable(const Lane& l, std::uint64_t seq) const {
  // Cache only while a consumer is attached, the cache is contiguous and small; otherwise the
  // entry waits on disk and is read back when the consumer gets to it.
  const std::size_t cache_limit = std::max<std::size_t>(4 * max_inflight_, 256);
  return attached() && !l.loading && !l.backlog && seq == l.loaded_through + 1 &&
         l.cache.size() < cache_limit;
}

bool Endpoint::appending(std::int32_t priority, std::uint64_t seq, std::int64_t expires_at_ms,
                         std::shared_ptr<const Message> message) {
  Lane& l = lane(priority);
  if (!cacheable(l, seq)) return false;
  l.cache.push_back(Pending{seq, expires_at_ms, std::move(message), {}, {}});
  l.loaded_through = seq;
  pump();
  return true;
}

void Endpoint::append_failed(std::int32_t priority, std::uint64_t seq) {
  Lane& l = lane(priority);
  auto it = std::find_if(l.cache.begin(), l.cache.end(),
                         [seq](const Pending& p) { return p.seq == seq; });
  if (it != l.cache.end()) l.cache.erase(it);
}

void Endpoint::appended(std::int32_t priority, std::uint64_t seq, std::int64_t expires_at_ms,
                        std::shared_ptr<const Message> message) {
  Lane& l = lane(priority);
  l.appended_through = std::max(l.appended_through, seq);
  // Already here: taken by appending() before the commit, or returned by a read.
  if (seq <= l.loaded_through) return;
  // A running read may or may not return this entry: the store can run the read before the
  // append in one group commit, and the notification can still reach us first. The read's
  // completion compares what it got with appended_through and reads again if it fell short.
  if (l.loading) return;
  if (cacheable(l, seq)) {
    l.cache.push_back(Pending{seq, expires_at_ms, std::move(message), {}, {}});
    l.loaded_through = seq;
    pump();
  } else {
    l.backlog = true;
    if (attached()) pump();
  }
}

void Endpoint::has_backlog(std::int32_t priority) {
  lane(priority).backlog = true;
  pump();
}

void Endpoint::attach(std::weak_ptr<Consumer> consumer) {
  auto c = consumer.lock();
  if (!c) return;
  consumer_raw_ = c.get();
  consumer_ = std::move(consumer);
  pump();
}

void Endpoint::detach(const Consumer* consumer) {
  if (consumer_raw_ != consumer) return;
  consumer_.reset();
  consumer_raw_ = nullptr;
  ++generation_;
  inflight_ = 0;
  for (auto& [priority, l] : lanes_) {
    count_failed_delivery(l);
    l.cache.clear();
    l.sent.clear();
    l.loaded_through = l.acked_through;
    l.backlog = true;
    l.loading = false;
  }
}

void Endpoint::pump() {
  auto consumer = consumer_.lock();
  if (!consumer) return;
  const std::int64_t now = now_unix_ms();
  while (inflight_ < max_inflight_) {
    Lane* next = nullptr;
    for (auto& [priority, l] : lanes_) {
      if (!l.cache.empty()) {
        next = &l;
        break;
      }
      // A higher priority with entries on disk goes first: wait for its read.
      if (l.backlog) {
        load(l);
        return;
      }
    }
    if (!next) return;
    Pending p = std::move(next->cache.front());
    next->cache.pop_front();
    if (!p.message) {
      dead_letter(*next, p, "stored message does not decode: " + p.reason);
      continue;
    }
    if (max_delivery_attempts_ != 0 && p.seq == next->failing_seq &&
        next->failed_deliveries >= max_delivery_attempts_) {
      dead_letter(*next, p,
                  "delivery failed " + std::to_string(next->failed_deliveries) +
                      " times: the consumer disconnected without acknowledging it each time "
                      "(mqtt.max_delivery_attempts)");
      continue;
    }
    if (p.expires_at_ms != 0 && p.expires_at_ms <= now) {
      // Expired while cached. The store drops and counts expired entries exactly once,
      // whether its periodic expiry got there first or the read does: read the lane back
      // from this entry on instead of dropping (and counting) it here as well.
      next->cache.clear();
      next->loaded_through = p.seq - 1;
      next->backlog = true;
      continue;
    }
    next->sent.push_back(Sent{p.seq, false});
    ++inflight_;
    ++counters_.delivered;
    std::int32_t priority = next->key.priority;
    std::uint64_t seq = p.seq;
    std::uint64_t generation = generation_;
    std::weak_ptr<Endpoint> weak = weak_from_this();
    bool dup = seq <= next->delivered_through;
    next->delivered_through = std::max(next->delivered_through, seq);
    bool ok = consumer->deliver(endpoint_.input, *p.message,
                                QueuePosition{priority, seq, p.expires_at_ms}, dup,
                                [weak, priority, seq, generation] {
                                  if (auto self = weak.lock())
                                    self->on_ack(priority, seq, generation);
                                });
    if (!ok) return;  // closing: detach() follows and resets the lanes
  }
}

void Endpoint::load(Lane& l) {
  if (l.loading) return;
  l.loading = true;
  std::weak_ptr<Endpoint> weak = weak_from_this();
  std::uint64_t generation = generation_;
  std::int32_t priority = l.key.priority;
  store_.read(
      l.key, l.loaded_through, kReadBatch,
      [&io = io_, weak, generation, priority](Result<std::vector<store::Entry>> r) {
        asio::post(io, [weak, generation, priority, r = std::move(r)]() mutable {
          auto self = weak.lock();
          if (!self || generation != self->generation_) return;
          Lane& lane = self->lane(priority);
          lane.loading = false;
          if (!r) {
            ++self->counters_.read_failures;
            log::error("hub", "endpoint={} reading queue priority={} failed: {}", self->id(),
                       priority, r.error().to_string());
            self->retry_reads_later();  // stays in backlog
            return;
          }
          self->read_backoff_.reset();
          for (auto& e : *r) {
            if (e.seq <= lane.loaded_through) continue;
            auto m = decode_message(e.message);
            if (!m) {
              // Dead-lettered when its turn comes, after everything before it.
              lane.cache.push_back(
                  Pending{e.seq, 0, nullptr, std::move(e.message), m.error().to_string()});
              lane.loaded_through = e.seq;
              continue;
            }
            lane.cache.push_back(Pending{
                e.seq, e.expires_at_ms, std::make_shared<const Message>(std::move(*m)), {}, {}});
            lane.loaded_through = e.seq;
          }
          lane.backlog = r->size() == kReadBatch || lane.appended_through > lane.loaded_through;
          self->settle(lane);
          self->pump();
        });
      });
}

void Endpoint::on_ack(std::int32_t priority, std::uint64_t seq, std::uint64_t generation) {
  if (generation != generation_) return;
  Lane& l = lane(priority);
  for (auto& s : l.sent) {
    if (s.seq == seq && !s.acked) {
      s.acked = true;
      --inflight_;
      ++counters_.acked;
      break;
    }
  }
  settle(l);
  pump();
}

void Endpoint::count_failed_delivery(Lane& l) {
  // settle() pops the acknowledged prefix, so the front is the oldest unacknowledged delivery.
  if (max_delivery_attempts_ == 0 || l.sent.empty() || l.sent.front().acked) return;
  const std::uint64_t seq = l.sent.front().seq;
  if (seq == l.failing_seq) {
    ++l.failed_deliveries;
  } else {
    l.failing_seq = seq;
    l.failed_deliveries = 1;
  }
  ++counters_.failed_deliveries;
  log::warn("hub",
            "endpoint={} seq={} priority={}: consumer gone without acknowledging it ({} of {})",
            id(), seq, l.key.priority, l.failed_deliveries, max_delivery_attempts_);
}

void Endpoint::dead_letter(Lane& l, Pending& p, const std::string& reason) {
  ++counters_.dead_lettered;
  if (p.seq == l.failing_seq) {
    l.failing_seq = 0;
    l.failed_deliveries = 0;
  }
  const std::int64_t now = now_unix_ms();
  const std::string key = l.key.endpoint + "/" + std::to_string(now) + "-" +
                          std::to_string(l.key.priority) + "-" + std::to_string(p.seq);
  log::error("hub", "endpoint={} seq={} dead-lettered as {}/{}: {}", id(), p.seq, kDeadLetterTable,
             key, reason);
  dead_letter_sink_(key, l.key.endpoint, reason,
                    p.message ? encode_message(*p.message) : p.undecodable);
  // In sequence: every entry before it was sent already, so settling stays cumulative.
  l.sent.push_back(Sent{p.seq, true});
  l.delivered_through = std::max(l.delivered_through, p.seq);
  settle(l);
}

void Endpoint::retry_reads_later() {
  read_retry_.expires_after(read_backoff_.next());
  read_retry_.async_wait([weak = weak_from_this()](error_code ec) {
    if (auto self = weak.lock(); self && !ec) self->pump();
  });
}

// Pops the acknowledged prefix of the lane; its deletion from the store follows at the end of
// this turn of the event loop.
void Endpoint::settle(Lane& l) {
  std::uint64_t through = 0;
  while (!l.sent.empty() && l.sent.front().acked) {
    through = l.sent.front().seq;
    l.sent.pop_front();
  }
  if (through == 0) return;
  l.acked_through = through;
  // The PUBACKs of a delivery window arrive together, in one read: one deletion for all of
  // them is one store operation and one wake-up of its writer instead of one per PUBACK.
  if (deletion_posted_) return;
  deletion_posted_ = true;
  asio::post(io_, [weak = weak_from_this()] {
    if (auto self = weak.lock()) self->delete_acked();
  });
}

void Endpoint::delete_acked() {
  deletion_posted_ = false;
  for (auto& [priority, l] : lanes_) {
    if (l.acked_through <= l.deleting_through) continue;
    l.deleting_through = l.acked_through;
    auto on_done = [&io = io_, weak = weak_from_this(), key = l.key,
                    through = l.acked_through](Status s) {
      if (s || s.error().code == errc::cancelled) return;  // cancelled: shutting down
      asio::post(io, [weak, key, through, error = s.error()] {
        if (auto self = weak.lock()) self->report_failed_deletion(key, through, error);
      });
    };
    store_.ack(l.key, l.acked_through, std::move(on_done));
  }
}

// A deletion that does not commit (the store refusing writes) loses nothing: the entries are
// delivered again after a restart. It is logged and counted, not silent.
void Endpoint::report_failed_deletion(const store::QueueKey& key, std::uint64_t through,
                                      const Error& error) {
  // While the store refuses writes every deletion fails alike: log the first of a run.
  const bool first = counters_.ack_failures++ % 1000 == 0;
  const std::string text = fmt::format(
      "endpoint={} priority={}: deleting delivered entries through seq={} failed "
      "(they will be delivered again after a restart): {}",
      id(), key.priority, through, error.to_string());
  if (first) {
    log::error("hub", "{}", text);
  } else {
    log::debug("hub", "{}", text);
  }
}

}  // namespace cairn::hub
