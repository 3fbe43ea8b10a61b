#include "infer/module_service.hpp"

#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <mutex>
#include <optional>
#include <thread>

#include "core/files.hpp"
#include "core/log.hpp"
#include "core/message.hpp"
#include "core/thread_name.hpp"
#include "infer/rest_api.hpp"

namespace cairn::infer {

namespace {

constexpr std::string_view kLog = "infer";

// Members a model's reported entry has only in some states; when absent they are sent as null
// so that the twin (which merges patches) does not keep a stale value.
constexpr std::string_view kOptionalReported[] = {"engine",  "loadTimeMs", "inputs",
                                                  "outputs", "delivery",   "inputMapping"};

// Application properties a result sets itself; the request's own values of these are dropped.
constexpr std::string_view kResultProperties[] = {"status", "model", "modelVersion"};

std::string app_property(const ModuleMessage& m, std::string_view name) {
  for (const auto& [k, v] : m.app) {
    if (iequals(k, name)) return v;
  }
  return {};
}

}  // namespace

struct ModuleService::State {
  ModuleLink link;
  std::chrono::milliseconds debounce{250};
  std::mutex mu;
  std::condition_variable cv;
  bool closed = false;
  nlohmann::json pending;  // the merged reported patch waiting to go out; null: none
  std::atomic<std::size_t> pending_messages{0};
  std::thread reporter;

  void add_report(const nlohmann::json& patch) {
    std::lock_guard lock(mu);
    if (closed) return;
    if (pending.is_null()) pending = nlohmann::json::object();
    for (const auto& [key, value] : patch.items()) {
      if (key == "models" && value.is_object()) {
        auto& models = pending["models"];
        if (!models.is_object()) models = nlohmann::json::object();
        for (const auto& [name, entry] : value.items()) {
          nlohmann::json e = entry;
          if (e.is_object()) {
            for (auto k : kOptionalReported) {
              const std::string key_name(k);
              if (!e.contains(key_name)) e[key_name] = nullptr;
            }
          }
          models[name] = std::move(e);  // a model's newest state replaces the older one
        }
      } else {
        pending[key] = value;
      }
    }
    cv.notify_all();
  }

  void send(const std::string& output, ModuleMessage message) {
    std::lock_guard lock(mu);  // so that close() knows no send is under way
    if (closed || !link.send) return;
    try {
      link.send(output, std::move(message));
    } catch (const std::exception& e) {
      log::error(kLog, "sending a result failed: {}", e.what());
    }
  }

  void reporter_loop() {
    name_this_thread("twin-reporter");
    std::unique_lock lock(mu);
    for (;;) {
      cv.wait(lock, [&] { return closed || !pending.is_null(); });
      if (closed) return;
      // Gather what else changes within the debounce interval into the same patch.
      if (cv.wait_for(lock, debounce, [&] { return closed; })) return;
      nlohmann::json patch = std::move(pending);
      pending = nullptr;
      try {
        if (link.report) link.report(std::move(patch));
      } catch (const std::exception& e) {
        log::error(kLog, "reporting properties failed: {}", e.what());
      }
    }
  }
};

ModuleMessage result_message(const ModuleMessage& request, int status, std::string body,
                             const std::string& model, const std::string& version) {
  ModuleMessage out;
  out.body = std::move(body);
  out.correlation_id = request.correlation_id.empty() ? request.message_id : request.correlation_id;
  // The request's properties travel on, so routes and receivers can still select by them.
  for (const auto& [key, value] : request.app) {
    bool own = false;
    for (auto name : kResultProperties) own = own || iequals(key, name);
    if (!own) out.app.emplace_back(key, value);
  }
  out.app.emplace_back("status", std::to_string(status));
  if (!model.empty()) out.app.emplace_back("model", model);
  if (!version.empty()) out.app.emplace_back("modelVersion", version);
  return out;
}

ModuleService::ModuleService(ModelManager& models, ModelDelivery* delivery, ModuleLink link,
                             ModuleOptions options)
    : models_(models),
      delivery_(delivery),
      options_(std::move(options)),
      state_(std::make_shared<State>()) {
  state_->link = std::move(link);
  state_->debounce = options_.report_debounce;
  state_->reporter = std::thread([state = state_] { state->reporter_loop(); });
  models_.set_reported_callback([weak = std::weak_ptr<State>(state_)](const nlohmann::json& patch) {
    if (auto state = weak.lock()) state->add_report({{"models", patch}});
  });
}

ModuleService::~ModuleService() { close(); }

void ModuleService::close() {
  models_.set_reported_callback(nullptr);
  {
    std::lock_guard lock(state_->mu);
    if (state_->closed) return;
    state_->closed = true;
  }
  state_->cv.notify_all();
  if (state_->reporter.joinable()) state_->reporter.join();
}

std::size_t ModuleService::pending_messages() const { return state_->pending_messages.load(); }

void ModuleService::report_all() {
  // Through the manager, so that no model state older than one it has reported goes out after it.
  models_.notify_all();
  nlohmann::json patch;
  nlohmann::json delivery{
      {"signedOnly", delivery_ && !delivery_->public_key().empty()},
      {"publicKeyFrom", options_.public_key_fixed                       ? "command line"
                        : delivery_ && !delivery_->public_key().empty() ? "twin"
                                                                        : "none"}};
  patch["modelDelivery"] = std::move(delivery);
  state_->add_report(patch);
}

void ModuleService::forget_stale_reports(const nlohmann::json& reported) {
  if (!reported.is_object() || !reported.contains("models") || !reported["models"].is_object()) {
    return;
  }
  // Known: loaded (or loading) now, or desired (a load may be queued and not started yet).
  std::lock_guard desired_lock(desired_mu_);
  const nlohmann::json known = models_.reported();
  nlohmann::json gone = nlohmann::json::object();
  for (const auto& [name, _] : reported["models"].items()) {
    if (!known.contains(name) && !desired_models_.contains(name)) gone[name] = nullptr;
  }
  if (!gone.empty()) state_->add_report({{"models", gone}});
}

void ModuleService::on_desired(const nlohmann::json& desired, long long version, bool complete) {
  if (!desired.is_object()) return;
  std::lock_guard desired_lock(desired_mu_);
  nlohmann::json report{{"lastDesiredVersion", version}};

  // The public key first: loads queued below read it when they download. A patch that does not
  // name modelDelivery.publicKey leaves the key as it is; the whole desired section without it,
  // or a null, removes it.
  std::optional<nlohmann::json> key;
  if (desired.contains("modelDelivery")) {
    const auto& md = desired["modelDelivery"];
    if (md.is_object() && md.contains("publicKey")) {
      key = md["publicKey"];
    } else if (md.is_null() || complete) {
      key = nlohmann::json();
    }
  } else if (complete) {
    key = nlohmann::json();
  }
  if (key && options_.public_key_fixed) {
    if (!key->is_null()) {
      log::warn(kLog, "modelDelivery.publicKey from the twin ignored: --public-key is set");
    }
  } else if (key && delivery_ && !options_.twin_public_key_path.empty()) {
    if (key->is_string() && !key->get<std::string>().empty()) {
      auto s =
          make_dirs(std::filesystem::path(options_.twin_public_key_path).parent_path().string());
      if (s) {
        s = write_file_atomic(options_.twin_public_key_path, key->get<std::string>(), true);
      }
      if (!s) {
        // Fail closed: the key path is set anyway, so every package fails its signature check
        // (and says the key cannot be read) rather than being taken unsigned.
        log::error(kLog, "cannot store the twin's public key: {}", s.error().message);
      } else {
        log::info(kLog, "model packages must now be signed (public key from the twin)");
      }
      delivery_->set_public_key(options_.twin_public_key_path);
    } else if (key->is_null()) {
      delivery_->set_public_key("");
    } else {
      log::warn(kLog, "modelDelivery.publicKey must be a PEM string; ignored");
    }
  }

  bool apply = complete;
  if (complete) {
    desired_models_ = desired.contains("models") && desired["models"].is_object()
                          ? desired["models"]
                          : nlohmann::json::object();
  } else if (desired.contains("models")) {
    apply = true;
    if (desired["models"].is_object()) {
      desired_models_.merge_patch(desired["models"]);
    } else {
      desired_models_ = nlohmann::json::object();  // null (or junk) removes the whole map
    }
  }
  if (complete && desired.contains("models") && !desired["models"].is_object() &&
      !desired["models"].is_null()) {
    log::warn(kLog, "desired \"models\" is not an object; serving no twin models");
  }
  if (apply) {
    if (auto s = models_.apply_desired(desired_models_, options_.pinned); !s) {
      log::warn(kLog, "desired models not applied: {}", s.error().message);
    }
  }
  state_->add_report(report);
  report_all();
}

void ModuleService::on_message(const ModuleMessage& message) {
  auto state = state_;
  ModuleMessage request;  // what the answer needs of the request, without its body
  request.message_id = message.message_id;
  request.correlation_id = message.correlation_id;
  request.app = message.app;
  if (state->pending_messages.load() >= options_.max_pending_messages) {
    nlohmann::json error{{"error", "too many scoring requests pending (" +
                                       std::to_string(options_.max_pending_messages) +
                                       ", max_pending_messages); retry later"}};
    state->send(options_.results_output,
                result_message(request, 429,
                               error.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace),
                               "", ""));
    return;
  }
  state->pending_messages.fetch_add(1);
  score_json_request(models_, message.body, app_property(message, "model"),
                     app_property(message, "modelVersion"), options_.max_json_depth,
                     [state, request, output = options_.results_output](ScoreAnswer answer) {
                       state->pending_messages.fetch_sub(1);
                       state->send(output,
                                   result_message(request, answer.status, std::move(answer.body),
                                                  answer.model, answer.version));
                     });
}

}  // namespace cairn::infer
