#include "infer/model_manager.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <cctype>
#include <condition_variable>
#include <deque>
#include <thread>
#include <utility>

#include <fmt/format.h>

#include "core/byte_budget.hpp"
#include "core/crypto.hpp"
#include "core/files.hpp"
#include "core/log.hpp"
#include "core/thread_name.hpp"

namespace cairn::infer {

namespace {

constexpr std::string_view kLog = "infer";
using Clock = std::chrono::steady_clock;

// Latency buckets in seconds: 50 µs to 10 s.
constexpr std::array<double, 16> kLatencyBuckets = {0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025,
                                                    0.005,   0.01,   0.025,   0.05,   0.1,   0.25,
                                                    0.5,     1.0,    2.5,     10.0};
constexpr std::array<double, 8> kBatchBuckets = {1, 2, 4, 8, 16, 32, 64, 128};

template <std::size_t N>
struct Histogram {
  const std::array<double, N>* bounds;
  std::array<std::atomic<std::uint64_t>, N + 1> counts{};
  std::atomic<std::uint64_t> sum_micro{0};  // sum in millionths of the unit
  std::atomic<std::uint64_t> total{0};

  explicit Histogram(const std::array<double, N>* b) : bounds(b) {}
  void observe(double v) {
    std::size_t i = 0;
    while (i < N && v > (*bounds)[i]) ++i;
    counts[i].fetch_add(1, std::memory_order_relaxed);
    sum_micro.fetch_add(static_cast<std::uint64_t>(v * 1e6), std::memory_order_relaxed);
    total.fetch_add(1, std::memory_order_relaxed);
  }
  void render(std::string& out, const std::string& metric, const std::string& labels) const {
    std::uint64_t cumulative = 0;
    for (std::size_t i = 0; i < N; ++i) {
      cumulative += counts[i].load(std::memory_order_relaxed);
      out +=
          fmt::format("{}_bucket{{{},le=\"{}\"}} {}\n", metric, labels, (*bounds)[i], cumulative);
    }
    cumulative += counts[N].load(std::memory_order_relaxed);
    out += fmt::format("{}_bucket{{{},le=\"+Inf\"}} {}\n", metric, labels, cumulative);
    out += fmt::format("{}_sum{{{}}} {}\n", metric, labels,
                       static_cast<double>(sum_micro.load(std::memory_order_relaxed)) / 1e6);
    out += fmt::format("{}_count{{{}}} {}\n", metric, labels, cumulative);
  }
};

struct LoadedVersion {
  ModelSpec spec;
  std::unique_ptr<Engine> engine;
  std::shared_ptr<const InputMapping> input_mapping;  // spec's, bound to the engine's inputs
  double load_ms = 0;
  std::chrono::nanoseconds warmup_run{0};  // the warm-up run's time, 0 without one
  std::uint64_t sequence = 0;              // load order, to drop the oldest first
};

struct Job {
  std::string version;
  RequestDecoder decode;
  InferDone done;
  Clock::time_point enqueued;
  ByteClaim bytes;  // the queued request's share of ManagerOptions::max_queue_bytes
};

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// Loads, verifies and warms up one version; the caller decides whether it serves.
Result<std::shared_ptr<LoadedVersion>> load_version(const ModelSpec& spec) {
  const auto start = Clock::now();
  if (spec.path.find("://") != std::string::npos) {
    return make_error(errc::invalid_argument,
                      "'" + spec.path + "': a URL is not a path; give it as \"url\"");
  }
  auto bytes = read_file(spec.path);
  if (!bytes) return bytes.error();
  if (!spec.sha256.empty()) {
    const auto digest = crypto::sha256_hex(*bytes);
    if (lower(spec.sha256) != digest) {
      return make_error(errc::corruption,
                        spec.path + ": sha256 is " + digest + ", expected " + lower(spec.sha256));
    }
  }
  auto engine = load_engine(*bytes, spec.engine, spec.path);
  if (!engine) return engine.error();
  std::shared_ptr<const InputMapping> mapping;
  if (spec.input_mapping) {
    auto bound = spec.input_mapping->bind((*engine)->inputs());
    if (!bound) return bound.error();
    mapping = std::make_shared<const InputMapping>(std::move(*bound));
  }
  std::chrono::nanoseconds warmup_run{0};
  if (spec.warmup) {
    auto inputs = zero_inputs((*engine)->inputs());
    const auto warm_start = Clock::now();
    auto warm = (*engine)->run(inputs);
    warmup_run = Clock::now() - warm_start;
    if (!warm) {
      return make_error(warm.error().code,
                        spec.path + ": warm-up run failed: " + warm.error().message);
    }
  }
  auto v = std::make_shared<LoadedVersion>();
  v->spec = spec;
  v->engine = std::move(*engine);
  v->input_mapping = std::move(mapping);
  v->warmup_run = warmup_run;
  v->load_ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
  return v;
}

bool same_mapping(const std::shared_ptr<const InputMapping>& a,
                  const std::shared_ptr<const InputMapping>& b) {
  if (!a || !b) return !a && !b;
  return a->source() == b->source();
}

// Merging requests along dimension 0 is possible when every input and output has an open
// first dimension and the requests agree on everything else.
bool batchable(const Engine& engine) {
  for (const auto* sig : {&engine.inputs(), &engine.outputs()}) {
    for (const auto& t : *sig) {
      if (t.shape.empty() || t.shape[0] >= 0) return false;
    }
  }
  return true;
}

const Tensor* find_tensor(const std::vector<Tensor>& ts, const std::string& name) {
  for (const auto& t : ts) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

bool same_layout(const InferRequest& a, const InferRequest& b) {
  if (a.inputs.size() != b.inputs.size()) return false;
  for (const auto& t : a.inputs) {
    const Tensor* o = find_tensor(b.inputs, t.name);
    if (!o || o->dtype != t.dtype || o->shape.size() != t.shape.size() || t.shape.empty()) {
      return false;
    }
    if (!std::equal(t.shape.begin() + 1, t.shape.end(), o->shape.begin() + 1)) return false;
  }
  return true;
}

// Rows [first, first + rows) of a tensor along dimension 0.
Tensor slice_rows(const Tensor& t, std::size_t first, std::size_t rows, std::size_t total) {
  Tensor out;
  out.name = t.name;
  out.dtype = t.dtype;
  out.shape = t.shape;
  out.shape[0] = static_cast<std::int64_t>(rows);
  if (t.dtype == DataType::kBytes) {
    const std::size_t per_row = total ? t.strings.size() / total : 0;
    out.strings.assign(t.strings.begin() + static_cast<std::ptrdiff_t>(first * per_row),
                       t.strings.begin() + static_cast<std::ptrdiff_t>((first + rows) * per_row));
  } else {
    const std::size_t per_row = total ? t.data.size() / total : 0;
    out.data = t.data.substr(first * per_row, rows * per_row);
  }
  return out;
}

}  // namespace

std::vector<Tensor> zero_inputs(const std::vector<TensorInfo>& signature) {
  std::vector<Tensor> out;
  for (const auto& info : signature) {
    Tensor t;
    t.name = info.name;
    t.dtype = info.dtype;
    for (auto d : info.shape) t.shape.push_back(d < 0 ? 1 : d);
    const std::size_t n = t.element_count().value_or(0);
    if (t.dtype == DataType::kBytes) {
      t.strings.assign(n, std::string());
    } else {
      t.data.assign(n * element_size(t.dtype), '\0');
    }
    out.push_back(std::move(t));
  }
  return out;
}

struct ModelManager::Model {
  std::string name;
  mutable std::mutex mu;
  std::condition_variable cv;
  std::map<std::string, std::shared_ptr<LoadedVersion>> versions;
  std::shared_ptr<LoadedVersion> serving;
  std::deque<Job> queue;
  // Engine runs in progress, on workers or inline on a caller's thread; at most run_slots().
  std::size_t running = 0;
  BatchingOptions batching;
  ModelLimits limits;
  bool is_default = false;
  bool stopping = false;
  std::vector<std::thread> workers;
  std::uint64_t next_sequence = 1;

  // Reported state.
  std::string status = "loading";
  std::string error;
  std::string pending_version;
  nlohmann::json delivery;  // the last download's figures (model delivery), null if none
  // Bytes received by finished downloads of this model, every version (a metric).
  std::uint64_t delivery_downloaded_total = 0;
  std::uint64_t delivery_saved_total = 0;

  // Metrics.
  std::atomic<std::uint64_t> requests{0};
  std::atomic<std::uint64_t> failures{0};
  std::atomic<std::uint64_t> rejected{0};
  std::atomic<std::uint64_t> runs{0};
  std::atomic<std::uint64_t> inline_requests{0};
  // Engine run time, recent runs weighted most (each run moves it 1/8 of the way): decides
  // whether a request may run inline (SubmitOptions::max_inline_run_time).
  std::atomic<std::int64_t> run_ns_average{0};

  void observe_run(Clock::duration took) {
    const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(took).count();
    const auto old = run_ns_average.load(std::memory_order_relaxed);
    run_ns_average.store(old + (ns - old) / 8, std::memory_order_relaxed);
  }
  Histogram<kLatencyBuckets.size()> latency{&kLatencyBuckets};
  Histogram<kBatchBuckets.size()> batch_sizes{&kBatchBuckets};

  // The model's configured concurrency: runs at once, whichever thread they are on.
  std::size_t run_slots() const { return std::max<std::size_t>(1, limits.concurrency); }

  // Gives back a run slot (under `mu`); a worker may be waiting for it.
  void release_slot_locked() {
    --running;
    if (!queue.empty()) cv.notify_one();
  }

  void start_workers() {
    for (std::size_t i = 0; i < run_slots(); ++i) {
      workers.emplace_back([this] { worker_loop(); });
    }
  }

  void stop_workers() {
    {
      std::lock_guard lock(mu);
      stopping = true;
    }
    cv.notify_all();
    for (auto& w : workers) w.join();
    workers.clear();
  }

  void finish(Job& job, Result<InferResult> result) {
    if (!result) failures.fetch_add(1, std::memory_order_relaxed);
    latency.observe(std::chrono::duration<double>(Clock::now() - job.enqueued).count());
    try {
      job.done(std::move(result));
    } catch (const std::exception& e) {
      log::error(kLog, "model={} result callback threw: {}", name, e.what());
    }
  }

  void worker_loop() {
    name_this_thread("run:" + name);  // the thread that runs this model
    for (;;) {
      std::vector<Job> batch;
      std::shared_ptr<LoadedVersion> version;
      {
        std::unique_lock lock(mu);
        // A queued request waits for a run slot as well as a worker: an inline run holds one.
        cv.wait(lock, [&] {
          return (stopping && queue.empty()) || (!queue.empty() && running < run_slots());
        });
        if (queue.empty()) return;  // stopping and drained
        ++running;
        batch.push_back(std::move(queue.front()));
        queue.pop_front();
        const std::size_t max_batch = std::max<std::size_t>(1, batching.max_batch_size);
        const auto deadline = batch.front().enqueued + batching.max_queue_delay;
        while (batch.size() < max_batch) {
          if (!queue.empty()) {
            if (queue.front().version != batch.front().version) break;
            batch.push_back(std::move(queue.front()));
            queue.pop_front();
            continue;
          }
          if (stopping || batching.max_queue_delay.count() == 0 ||
              cv.wait_until(lock, deadline) == std::cv_status::timeout) {
            if (queue.empty()) break;
          }
        }
        const auto& wanted = batch.front().version;
        if (wanted.empty()) {
          version = serving;
        } else if (auto it = versions.find(wanted); it != versions.end()) {
          version = it->second;
        }
      }
      run_batch(batch, version);
      std::lock_guard lock(mu);
      release_slot_locked();
    }
  }

  void run_batch(std::vector<Job>& batch, const std::shared_ptr<LoadedVersion>& version) {
    if (!version) {
      for (auto& job : batch) {
        finish(job, make_error(errc::not_found,
                               "model '" + name + "' version '" + job.version + "' is not loaded"));
      }
      return;
    }
    Engine& engine = *version->engine;
    std::vector<InferRequest> decoded_requests(batch.size());
    std::vector<bool> decoded(batch.size(), false);
    for (std::size_t i = 0; i < batch.size(); ++i) {
      Result<InferRequest> r = make_error(errc::internal, "decoder threw");
      try {
        r = batch[i].decode(engine.inputs(), version->input_mapping.get());
      } catch (const std::exception& e) {
        r = make_error(errc::internal, std::string("decoder threw: ") + e.what());
      }
      if (!r) {
        finish(batch[i], std::move(r).error());
        continue;
      }
      decoded_requests[i] = std::move(*r);
      decoded[i] = true;
    }
    // Try one merged run for the decoded decoded_requests that agree in layout and pass the
    // signature.
    std::vector<std::size_t> members;
    if (batch.size() > 1 && batchable(engine)) {
      for (std::size_t i = 0; i < batch.size(); ++i) {
        if (!decoded[i] || !check_inputs(engine.inputs(), decoded_requests[i].inputs)) continue;
        if (!members.empty() &&
            !same_layout(decoded_requests[members.front()], decoded_requests[i]))
          continue;
        members.push_back(i);
      }
    }
    if (members.size() > 1) {
      std::vector<std::size_t> rows;
      std::size_t total = 0;
      for (auto i : members) {
        rows.push_back(static_cast<std::size_t>(decoded_requests[i].inputs.front().shape[0]));
        total += rows.back();
      }
      std::vector<Tensor> merged;
      for (const auto& first : decoded_requests[members.front()].inputs) {
        Tensor t;
        t.name = first.name;
        t.dtype = first.dtype;
        t.shape = first.shape;
        t.shape[0] = static_cast<std::int64_t>(total);
        for (auto i : members) {
          const Tensor* part = find_tensor(decoded_requests[i].inputs, first.name);
          t.data += part->data;
          t.strings.insert(t.strings.end(), part->strings.begin(), part->strings.end());
        }
        merged.push_back(std::move(t));
      }
      runs.fetch_add(1, std::memory_order_relaxed);
      batch_sizes.observe(static_cast<double>(members.size()));
      const auto run_start = Clock::now();
      auto out = engine.run(merged);
      observe_run(Clock::now() - run_start);
      bool split_ok = static_cast<bool>(out);
      if (out) {
        for (const auto& t : *out)
          split_ok = split_ok && !t.shape.empty() && t.shape[0] == static_cast<std::int64_t>(total);
      }
      if (split_ok) {
        std::size_t offset = 0;
        for (std::size_t k = 0; k < members.size(); ++k) {
          InferResult result{name, version->spec.version, {}};
          for (const auto& t : *out)
            result.outputs.push_back(slice_rows(t, offset, rows[k], total));
          offset += rows[k];
          finish(batch[members[k]], std::move(result));
          decoded[members[k]] = false;
        }
      }
      // Otherwise fall through and run each request alone, so one bad batch fails nobody.
    }
    for (std::size_t i = 0; i < batch.size(); ++i) {
      if (!decoded[i]) continue;
      runs.fetch_add(1, std::memory_order_relaxed);
      batch_sizes.observe(1);
      const auto run_start = Clock::now();
      auto out = engine.run(decoded_requests[i].inputs);
      observe_run(Clock::now() - run_start);
      if (!out) {
        finish(batch[i], std::move(out).error());
        continue;
      }
      finish(batch[i], InferResult{name, version->spec.version, std::move(*out)});
    }
  }

  nlohmann::json reported_locked() const {
    nlohmann::json r;
    r["status"] = status;
    r["version"] = serving ? nlohmann::json(serving->spec.version) : nlohmann::json(nullptr);
    r["error"] = error.empty() ? nlohmann::json(nullptr) : nlohmann::json(error);
    r["pendingVersion"] =
        pending_version.empty() ? nlohmann::json(nullptr) : nlohmann::json(pending_version);
    if (serving) {
      r["engine"] = serving->engine->kind();
      r["loadTimeMs"] = serving->load_ms;
      auto in = nlohmann::json::array();
      for (const auto& t : serving->engine->inputs()) in.push_back(to_json(t));
      auto out = nlohmann::json::array();
      for (const auto& t : serving->engine->outputs()) out.push_back(to_json(t));
      r["inputs"] = std::move(in);
      r["outputs"] = std::move(out);
      if (serving->input_mapping) r["inputMapping"] = serving->input_mapping->to_json();
    }
    auto versions_json = nlohmann::json::array();
    for (const auto& [v, _] : versions) versions_json.push_back(v);
    r["versions"] = std::move(versions_json);
    if (!delivery.is_null()) r["delivery"] = delivery;
    return r;
  }

  ModelInfo info_locked() const {
    ModelInfo info;
    info.name = name;
    info.serving_version = serving ? serving->spec.version : "";
    info.status = status;
    info.error = error;
    for (const auto& [v, loaded] : versions) {
      info.versions.push_back(VersionInfo{v, std::string(loaded->engine->kind()),
                                          loaded->engine->inputs(), loaded->engine->outputs(),
                                          loaded->load_ms, loaded == serving});
    }
    return info;
  }
};

struct ModelManager::Loader {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<std::function<void()>> tasks;
  bool busy = false;
  bool stopping = false;
  std::thread thread;
};

ModelManager::ModelManager(ManagerOptions options)
    : options_(options),
      queued_bytes_(std::make_shared<ByteBudget>(options.max_queue_bytes)),
      loader_(std::make_unique<Loader>()) {
  loader_->thread = std::thread([this] { loader_loop(); });
}

ModelManager::~ModelManager() {
  {
    std::lock_guard lock(loader_->mu);
    loader_->stopping = true;
    loader_->tasks.clear();
  }
  loader_->cv.notify_all();
  loader_->thread.join();
  std::map<std::string, std::shared_ptr<Model>> models;
  {
    std::lock_guard lock(mu_);
    models.swap(models_);
  }
  for (auto& [_, m] : models) m->stop_workers();
}

void ModelManager::loader_loop() {
  name_this_thread("model-loader");
  for (;;) {
    std::function<void()> task;
    {
      std::unique_lock lock(loader_->mu);
      loader_->busy = false;
      loader_->cv.notify_all();
      loader_->cv.wait(lock, [&] { return loader_->stopping || !loader_->tasks.empty(); });
      if (loader_->stopping) return;
      task = std::move(loader_->tasks.front());
      loader_->tasks.pop_front();
      loader_->busy = true;
    }
    try {
      task();
    } catch (const std::exception& e) {
      log::error(kLog, "model load task threw: {}", e.what());
    }
  }
}

void ModelManager::wait_idle() {
  std::unique_lock lock(loader_->mu);
  loader_->cv.wait(lock,
                   [&] { return loader_->stopping || (!loader_->busy && loader_->tasks.empty()); });
}

std::shared_ptr<ModelManager::Model> ModelManager::model_for_load(const ModelSpec& spec,
                                                                  Status& error) {
  std::lock_guard lock(mu_);
  if (auto it = models_.find(spec.name); it != models_.end()) return it->second;
  if (models_.size() >= options_.max_models) {
    error =
        make_error(errc::limit_exceeded, "already serving " + std::to_string(options_.max_models) +
                                             " models (max_models)");
    return nullptr;
  }
  auto m = std::make_shared<Model>();
  m->name = spec.name;
  m->batching = spec.batching;
  m->limits = spec.limits;
  m->is_default = spec.is_default;
  m->start_workers();
  models_[spec.name] = m;
  return m;
}

Status ModelManager::load(const ModelSpec& spec, bool keep_others) {
  if (spec.name.empty() || spec.version.empty()) {
    return make_error(errc::invalid_argument, "a model needs a name and a version");
  }
  Status error;
  auto model = model_for_load(spec, error);
  if (!model) return error;
  std::string previous_status;
  {
    std::lock_guard lock(model->mu);
    previous_status = model->serving ? model->status : "loading";
    model->status = spec.url.empty() ? previous_status : "downloading";
    if (spec.url.empty()) model->delivery = nullptr;
    model->pending_version = spec.version;
  }
  notify(spec.name);
  Result<std::shared_ptr<LoadedVersion>> loaded = make_error(errc::internal, "not loaded");
  ModelSpec local = spec;
  if (!spec.url.empty()) {
    ModelFetcher fetcher;
    {
      std::lock_guard lock(mu_);
      fetcher = fetcher_;
    }
    log::info(kLog, "model={} version={} downloading {}", spec.name, spec.version, spec.url);
    Result<std::string> file =
        make_error(errc::invalid_argument,
                   "'" + spec.url + "': this cairn-infer has no model delivery for URLs");
    if (fetcher) {
      const std::string name = spec.name;
      file = fetcher(spec, [this, model, name](const nlohmann::json& delivery) {
        {
          std::lock_guard lock(model->mu);
          model->delivery = delivery;
          if (delivery.value("status", "") == "done") {
            model->delivery_downloaded_total += delivery.value("bytesDownloaded", std::uint64_t{0});
            model->delivery_saved_total += delivery.value("bytesSaved", std::uint64_t{0});
          }
        }
        notify(name);
      });
    }
    if (file) {
      local.path = *file;
      std::lock_guard lock(model->mu);
      model->status = previous_status;
    } else {
      loaded = std::move(file).error();
    }
    if (file) notify(spec.name);
  }
  if (spec.url.empty() || !local.path.empty()) {
    log::info(kLog, "model={} version={} loading {}", spec.name, spec.version, local.path);
    loaded = load_version(local);
    if (loaded) (*loaded)->spec = spec;  // what was asked for (the URL), to compare later
  }
  std::vector<std::shared_ptr<LoadedVersion>> retired;  // freed outside the lock
  {
    std::lock_guard lock(model->mu);
    model->pending_version.clear();
    if (!loaded) {
      model->status = "failed";
      model->error = "version " + spec.version + ": " + loaded.error().message;
    } else {
      (*loaded)->sequence = model->next_sequence++;
      if (auto it = model->versions.find(spec.version); it != model->versions.end()) {
        retired.push_back(it->second);
      }
      model->versions[spec.version] = *loaded;
      model->serving = *loaded;  // the swap: new requests take this one from now on
      model->run_ns_average = (*loaded)->warmup_run.count();
      model->batching = spec.batching;
      model->limits.max_queue = spec.limits.max_queue;
      model->is_default = spec.is_default;
      model->status = "ready";
      model->error.clear();
      for (auto it = model->versions.begin(); it != model->versions.end();) {
        if (it->second != *loaded && !keep_others) {
          retired.push_back(it->second);
          it = model->versions.erase(it);
        } else {
          ++it;
        }
      }
      while (model->versions.size() > options_.max_versions_per_model) {
        auto oldest = std::min_element(
            model->versions.begin(), model->versions.end(),
            [](const auto& a, const auto& b) { return a.second->sequence < b.second->sequence; });
        retired.push_back(oldest->second);
        model->versions.erase(oldest);
      }
    }
  }
  notify(spec.name);
  if (!loaded) {
    log::warn(kLog, "model={} version={} failed to load: {}", spec.name, spec.version,
              loaded.error().message);
    return loaded.error();
  }
  log::info(kLog, "model={} version={} serving (engine={} load_ms={:.1f})", spec.name, spec.version,
            (*loaded)->engine->kind(), (*loaded)->load_ms);
  return {};
}

void ModelManager::set_reported_callback(std::function<void(const nlohmann::json&)> callback) {
  std::lock_guard lock(mu_);
  reported_callback_ = std::move(callback);
}

void ModelManager::set_fetcher(ModelFetcher fetcher) {
  std::lock_guard lock(mu_);
  fetcher_ = std::move(fetcher);
}

void ModelManager::notify(const std::string& name) {
  std::lock_guard order(report_mu_);
  std::function<void(const nlohmann::json&)> callback;
  std::shared_ptr<Model> model;
  {
    std::lock_guard lock(mu_);
    callback = reported_callback_;
    if (auto it = models_.find(name); it != models_.end()) model = it->second;
  }
  if (!callback) return;
  nlohmann::json patch;
  if (model) {
    std::lock_guard lock(model->mu);
    patch[name] = model->reported_locked();
  } else {
    patch[name] = nullptr;
  }
  callback(patch);
}

void ModelManager::notify_all() {
  std::lock_guard order(report_mu_);
  std::function<void(const nlohmann::json&)> callback;
  {
    std::lock_guard lock(mu_);
    callback = reported_callback_;
  }
  if (callback) callback(reported());
}

nlohmann::json ModelManager::reported() const {
  nlohmann::json out = nlohmann::json::object();
  std::lock_guard lock(mu_);
  for (const auto& [name, m] : models_) {
    std::lock_guard model_lock(m->mu);
    out[name] = m->reported_locked();
  }
  return out;
}

Status ModelManager::apply_desired(const nlohmann::json& desired,
                                   const std::vector<std::string>& pinned) {
  if (!desired.is_object()) {
    return make_error(errc::invalid_argument, "the desired models must be a JSON object");
  }
  // Unload models no longer desired (in-flight requests finish first: stop drains the queue).
  std::vector<std::string> gone;
  {
    std::lock_guard lock(mu_);
    for (const auto& [name, _] : models_) {
      if (std::find(pinned.begin(), pinned.end(), name) != pinned.end()) continue;
      if (!desired.contains(name) || desired[name].is_null()) gone.push_back(name);
    }
  }
  for (const auto& name : gone) {
    std::shared_ptr<Model> m;
    {
      std::lock_guard lock(mu_);
      auto it = models_.find(name);
      if (it == models_.end()) continue;
      m = it->second;
      models_.erase(it);
    }
    m->stop_workers();
    log::info(kLog, "model={} unloaded", name);
    notify(name);
  }
  for (const auto& [name, entry] : desired.items()) {
    if (entry.is_null()) continue;
    auto spec = parse_model_spec(name, entry);
    if (!spec) {
      Status error;
      ModelSpec placeholder;
      placeholder.name = name;
      auto m = model_for_load(placeholder, error);
      if (m) {
        std::lock_guard lock(m->mu);
        m->status = "failed";
        m->error = spec.error().message;
      }
      notify(name);
      continue;
    }
    {
      std::shared_ptr<Model> m;
      {
        std::lock_guard lock(mu_);
        if (auto it = models_.find(name); it != models_.end()) m = it->second;
      }
      if (m) {
        std::lock_guard lock(m->mu);
        if (m->serving && m->serving->spec.version == spec->version &&
            m->serving->spec.path == spec->path && m->serving->spec.url == spec->url &&
            m->serving->spec.sha256 == spec->sha256 &&
            same_mapping(m->serving->spec.input_mapping, spec->input_mapping)) {
          continue;  // already serving what is desired
        }
      }
    }
    std::lock_guard lock(loader_->mu);
    loader_->tasks.push_back([this, s = *spec] { (void)load(s, false); });
    loader_->cv.notify_all();
  }
  return {};
}

Status ModelManager::submit(const std::string& model_name, const std::string& version,
                            RequestDecoder decode, InferDone done, SubmitOptions options) {
  std::shared_ptr<Model> model;
  {
    std::lock_guard lock(mu_);
    std::string name = model_name;
    if (name.empty()) {
      for (const auto& [n, m] : models_) {
        if (m->is_default) name = n;
      }
      if (name.empty() && models_.size() == 1) name = models_.begin()->first;
      if (name.empty()) {
        return make_error(errc::not_found,
                          "no default model: mark one with \"default\": true or name the model");
      }
    }
    auto it = models_.find(name);
    if (it == models_.end()) return make_error(errc::not_found, "unknown model '" + name + "'");
    model = it->second;
  }
  {
    std::unique_lock lock(model->mu);
    if (!version.empty() && !model->versions.count(version)) {
      return make_error(errc::not_found,
                        "model '" + model->name + "' has no version '" + version + "'");
    }
    if (version.empty() && !model->serving) {
      return make_error(errc::unavailable,
                        "model '" + model->name + "' is not loaded (" + model->status +
                            (model->error.empty() ? "" : ": " + model->error) + ")");
    }
    // Inline: nothing waits before this request (so it overtakes nobody and a batch it could
    // join does not exist), a run slot is idle, and batching was not asked to wait for company.
    if (options.may_run_inline && !model->stopping && model->queue.empty() &&
        model->running < model->run_slots() && model->batching.max_queue_delay.count() == 0 &&
        (options.max_inline_run_time.count() == 0 ||
         model->run_ns_average.load(std::memory_order_relaxed) <
             options.max_inline_run_time.count())) {
      std::shared_ptr<LoadedVersion> loaded =
          version.empty() ? model->serving : model->versions.at(version);
      ++model->running;
      model->requests.fetch_add(1, std::memory_order_relaxed);
      model->inline_requests.fetch_add(1, std::memory_order_relaxed);
      lock.unlock();
      struct SlotRelease {
        Model& owner;
        ~SlotRelease() {
          std::lock_guard relock(owner.mu);
          owner.release_slot_locked();
        }
      } release{*model};
      if (options.on_inline_run) options.on_inline_run();
      std::vector<Job> job;
      job.push_back(Job{version, std::move(decode), std::move(done), Clock::now(), {}});
      model->run_batch(job, loaded);
      return {};
    }
    if (model->queue.size() >= model->limits.max_queue) {
      model->rejected.fetch_add(1, std::memory_order_relaxed);
      return make_error(errc::limit_exceeded, "model '" + model->name + "' has " +
                                                  std::to_string(model->queue.size()) +
                                                  " requests queued (max_queue); retry later");
    }
    std::size_t held = 0;
    auto bytes = ByteClaim::take(queued_bytes_, options.queued_bytes, &held);
    if (!bytes) {
      model->rejected.fetch_add(1, std::memory_order_relaxed);
      return make_error(errc::limit_exceeded,
                        "queued and running requests hold " + std::to_string(held) + " bytes; " +
                            std::to_string(options.queued_bytes) + " more would pass " +
                            std::to_string(options_.max_queue_bytes) +
                            " (--max-queue-bytes); retry later");
    }
    if (options.before_queue) options.before_queue();
    model->requests.fetch_add(1, std::memory_order_relaxed);
    model->queue.push_back(
        Job{version, std::move(decode), std::move(done), Clock::now(), std::move(*bytes)});
  }
  model->cv.notify_one();
  return {};
}

std::vector<ModelInfo> ModelManager::list() const {
  std::vector<ModelInfo> out;
  std::lock_guard lock(mu_);
  for (const auto& [_, m] : models_) {
    std::lock_guard model_lock(m->mu);
    out.push_back(m->info_locked());
  }
  return out;
}

std::optional<ModelInfo> ModelManager::find(const std::string& name) const {
  std::lock_guard lock(mu_);
  auto it = models_.find(name);
  if (it == models_.end()) return std::nullopt;
  std::lock_guard model_lock(it->second->mu);
  return it->second->info_locked();
}

std::string ModelManager::default_model() const {
  std::lock_guard lock(mu_);
  for (const auto& [n, m] : models_) {
    if (m->is_default) return n;
  }
  return models_.size() == 1 ? models_.begin()->first : std::string();
}

bool ModelManager::ready() const {
  std::lock_guard lock(mu_);
  if (models_.empty()) return false;
  for (const auto& [_, m] : models_) {
    std::lock_guard model_lock(m->mu);
    if (!m->serving) return false;
  }
  return true;
}

std::string ModelManager::prometheus_text() const {
  std::string out;
  std::vector<std::shared_ptr<Model>> models;
  {
    std::lock_guard lock(mu_);
    for (const auto& [_, m] : models_) models.push_back(m);
  }
  out += "# HELP cairn_infer_requests_total Inference requests accepted into a model's queue.\n";
  out += "# TYPE cairn_infer_requests_total counter\n";
  for (const auto& m : models) {
    out +=
        fmt::format("cairn_infer_requests_total{{model=\"{}\"}} {}\n", m->name, m->requests.load());
  }
  out += "# HELP cairn_infer_failures_total Accepted requests that ended in an error.\n";
  out += "# TYPE cairn_infer_failures_total counter\n";
  for (const auto& m : models) {
    out +=
        fmt::format("cairn_infer_failures_total{{model=\"{}\"}} {}\n", m->name, m->failures.load());
  }
  out +=
      "# HELP cairn_infer_rejected_total Requests refused because the queue (or the bytes all "
      "queues may hold) was full.\n";
  out += "# TYPE cairn_infer_rejected_total counter\n";
  for (const auto& m : models) {
    out +=
        fmt::format("cairn_infer_rejected_total{{model=\"{}\"}} {}\n", m->name, m->rejected.load());
  }
  out += "# HELP cairn_infer_engine_runs_total Engine runs (a batch is one run).\n";
  out += "# TYPE cairn_infer_engine_runs_total counter\n";
  for (const auto& m : models) {
    out +=
        fmt::format("cairn_infer_engine_runs_total{{model=\"{}\"}} {}\n", m->name, m->runs.load());
  }
  out +=
      "# HELP cairn_infer_inline_requests_total Requests run on the thread that received them "
      "(an idle run slot and nothing queued), without a hand-off to a worker.\n";
  out += "# TYPE cairn_infer_inline_requests_total counter\n";
  for (const auto& m : models) {
    out += fmt::format("cairn_infer_inline_requests_total{{model=\"{}\"}} {}\n", m->name,
                       m->inline_requests.load());
  }
  out +=
      "# HELP cairn_infer_queued_bytes Request bytes held by queued requests (until their run "
      "ends), all models.\n";
  out += "# TYPE cairn_infer_queued_bytes gauge\n";
  out += fmt::format("cairn_infer_queued_bytes {}\n", queued_bytes_->held());
  out += "# HELP cairn_infer_queue_depth Requests waiting for a worker.\n";
  out += "# TYPE cairn_infer_queue_depth gauge\n";
  for (const auto& m : models) {
    std::lock_guard lock(m->mu);
    out += fmt::format("cairn_infer_queue_depth{{model=\"{}\"}} {}\n", m->name, m->queue.size());
  }
  out +=
      "# HELP cairn_infer_model_version_info Loaded versions; serving=\"true\" marks the one "
      "unversioned requests use.\n";
  out += "# TYPE cairn_infer_model_version_info gauge\n";
  for (const auto& m : models) {
    std::lock_guard lock(m->mu);
    for (const auto& [v, loaded] : m->versions) {
      out += fmt::format(
          "cairn_infer_model_version_info{{model=\"{}\",version=\"{}\",serving=\"{}\"}} 1\n",
          m->name, v, loaded == m->serving ? "true" : "false");
    }
  }
  // The figures reported in the twin's `delivery` object (model_delivery.hpp), as metrics.
  out +=
      "# HELP cairn_infer_model_delivery_bytes The last download of a model: its size (needed), "
      "bytes the device already held (reused), bytes received (downloaded), and what a full "
      "download would have cost more (saved).\n";
  out += "# TYPE cairn_infer_model_delivery_bytes gauge\n";
  for (const auto& m : models) {
    std::lock_guard lock(m->mu);
    if (!m->delivery.is_object()) continue;
    const std::string version = m->delivery.value("version", "");
    for (const auto& [figure, key] : {std::pair{"needed", "bytesNeeded"},
                                      {"reused", "bytesReused"},
                                      {"downloaded", "bytesDownloaded"},
                                      {"saved", "bytesSaved"}}) {
      out += fmt::format(
          "cairn_infer_model_delivery_bytes{{model=\"{}\",version=\"{}\",figure=\"{}\"}} {}\n",
          m->name, version, figure, m->delivery.value(key, std::uint64_t{0}));
    }
  }
  out +=
      "# HELP cairn_infer_model_delivery_downloaded_bytes_total Bytes received by finished "
      "model downloads.\n";
  out += "# TYPE cairn_infer_model_delivery_downloaded_bytes_total counter\n";
  for (const auto& m : models) {
    std::lock_guard lock(m->mu);
    out += fmt::format("cairn_infer_model_delivery_downloaded_bytes_total{{model=\"{}\"}} {}\n",
                       m->name, m->delivery_downloaded_total);
  }
  out +=
      "# HELP cairn_infer_model_delivery_saved_bytes_total Bytes finished model downloads did "
      "not need, against full downloads.\n";
  out += "# TYPE cairn_infer_model_delivery_saved_bytes_total counter\n";
  for (const auto& m : models) {
    std::lock_guard lock(m->mu);
    out += fmt::format("cairn_infer_model_delivery_saved_bytes_total{{model=\"{}\"}} {}\n", m->name,
                       m->delivery_saved_total);
  }
  out += "# HELP cairn_infer_request_duration_seconds Time from queueing to result.\n";
  out += "# TYPE cairn_infer_request_duration_seconds histogram\n";
  for (const auto& m : models) {
    m->latency.render(out, "cairn_infer_request_duration_seconds", "model=\"" + m->name + "\"");
  }
  out += "# HELP cairn_infer_batch_size Requests per engine run.\n";
  out += "# TYPE cairn_infer_batch_size histogram\n";
  for (const auto& m : models) {
    m->batch_sizes.render(out, "cairn_infer_batch_size", "model=\"" + m->name + "\"");
  }
  return out;
}

Result<ModelSpec> parse_model_spec(const std::string& name, const nlohmann::json& j) {
  auto bad = [&](const std::string& why) {
    return make_error(errc::invalid_argument, "model '" + name + "': " + why);
  };
  if (!j.is_object()) return bad("must be an object");
  if (name.empty() || name.size() > 128 ||
      name.find_first_of("/?#% \t\r\n\"") != std::string::npos) {
    return bad("names are 1-128 characters without / ? # % space or quote");
  }
  ModelSpec s;
  s.name = name;
  try {
    if (j.contains("version")) {
      const auto& v = j["version"];
      s.version = v.is_string() ? v.get<std::string>() : v.dump();
    }
    if (s.version.empty() || s.version.find('/') != std::string::npos) {
      return bad("\"version\" must be non-empty and contain no '/'");
    }
    if (j.contains("path") && !j["path"].is_null()) s.path = j["path"].get<std::string>();
    if (j.contains("url") && !j["url"].is_null()) s.url = j["url"].get<std::string>();
    if (s.path.empty() && s.url.empty()) return bad("needs \"path\" (or \"url\")");
    if (!s.path.empty() && !s.url.empty()) return bad("give \"path\" or \"url\", not both");
    if (!s.url.empty() && s.url.rfind("http://", 0) != 0 && s.url.rfind("https://", 0) != 0) {
      return bad("\"url\" must start with http:// or https://");
    }
    s.sha256 = j.value("sha256", std::string());
    s.is_default = j.value("default", false);
    s.warmup = j.value("warmup", true);
    if (j.contains("inputMapping") && !j["inputMapping"].is_null()) {
      auto mapping = InputMapping::parse(j["inputMapping"]);
      if (!mapping) return bad(mapping.error().message);
      s.input_mapping = std::make_shared<const InputMapping>(std::move(*mapping));
    }
    if (j.contains("engine")) {
      const auto& e = j["engine"];
      if (!e.is_object()) return bad("\"engine\" must be an object");
      s.engine.intra_op_threads = e.value("intraOpThreads", s.engine.intra_op_threads);
      s.engine.inter_op_threads = e.value("interOpThreads", s.engine.inter_op_threads);
      s.engine.graph_optimization = e.value("graphOptimization", s.engine.graph_optimization);
      s.engine.execution_providers = e.value("executionProviders", std::vector<std::string>{});
      s.engine.armnn_backends = e.value("armnnBackends", std::vector<std::string>{});
      if (s.engine.intra_op_threads < 0 || s.engine.intra_op_threads > 256 ||
          s.engine.inter_op_threads < 0 || s.engine.inter_op_threads > 256) {
        return bad("thread counts must be 0..256");
      }
    }
    if (j.contains("batching")) {
      const auto& b = j["batching"];
      if (!b.is_object()) return bad("\"batching\" must be an object");
      s.batching.max_batch_size = b.value("maxBatchSize", s.batching.max_batch_size);
      s.batching.max_queue_delay =
          std::chrono::microseconds(b.value("maxQueueDelayUs", std::int64_t{0}));
      if (s.batching.max_batch_size < 1 || s.batching.max_batch_size > 1024) {
        return bad("\"maxBatchSize\" must be 1..1024");
      }
      if (s.batching.max_queue_delay.count() < 0 ||
          s.batching.max_queue_delay > std::chrono::seconds(10)) {
        return bad("\"maxQueueDelayUs\" must be 0..10000000");
      }
    }
    if (j.contains("limits")) {
      const auto& l = j["limits"];
      if (!l.is_object()) return bad("\"limits\" must be an object");
      s.limits.max_queue = l.value("maxQueue", s.limits.max_queue);
      s.limits.concurrency = l.value("concurrency", s.limits.concurrency);
      if (s.limits.max_queue < 1 || s.limits.max_queue > 100000) {
        return bad("\"maxQueue\" must be 1..100000");
      }
      if (s.limits.concurrency < 1 || s.limits.concurrency > 64) {
        return bad("\"concurrency\" must be 1..64");
      }
    }
  } catch (const nlohmann::json::exception& e) {
    return bad(std::string("wrong type: ") + e.what());
  }
  return s;
}

}  // namespace cairn::infer
