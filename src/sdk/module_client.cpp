// ModuleClient: one connection loop (credentials, connect, subscribe, wait, reconnect) on a
// strand, plus the dispatch of what the hub sends (inputs, twin answers, desired patches, method
// calls). Everything that touches the MQTT client or the pending tables runs on the strand.
#include "cairn/module_client.hpp"

#include <atomic>
#include <future>
#include <map>
#include <random>
#include <thread>

#include <boost/asio/bind_executor.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "core/clock.hpp"
#include "core/crypto.hpp"
#include "core/log.hpp"
#include "core/message.hpp"
#include "core/thread_name.hpp"
#include "mqtt/iothub_topics.hpp"
#include "mqtt/topic.hpp"
#include "net/mqtt_client.hpp"
#include "sdk/workload_client.hpp"

// Last: it holds for the code below.
#include "net/coroutine_warnings.hpp"

namespace cairn::sdk {
namespace {

namespace asio = boost::asio;
using Clock = std::chrono::steady_clock;
using boost::system::error_code;

constexpr std::string_view kLog = "sdk";
// The api-version modules put in the MQTT user name (what the Node SDK sends).
constexpr std::string_view kMqttApiVersion = "2021-04-12";
constexpr std::string_view kClientType = "cairn-sdk%2F0.1";

// Runs a user handler; an exception is logged, never allowed to unwind into the I/O loop.
template <class F, class... A>
void call_user(std::string_view what, const F& f, A&&... args) {
  if (!f) return;
  try {
    f(std::forward<A>(args)...);
  } catch (const std::exception& e) {
    log::error(kLog, "{} handler threw: {}", what, e.what());
  } catch (...) {
    log::error(kLog, "{} handler threw a non-standard exception", what);
  }
}

Properties system_properties(const MessageProperties& p) {
  Properties out;
  if (!p.message_id.empty()) out.set(std::string(sysprop::kMessageId), p.message_id);
  if (!p.correlation_id.empty()) out.set(std::string(sysprop::kCorrelationId), p.correlation_id);
  if (!p.content_type.empty()) out.set(std::string(sysprop::kContentType), p.content_type);
  if (!p.content_encoding.empty()) {
    out.set(std::string(sysprop::kContentEncoding), p.content_encoding);
  }
  return out;
}

std::string value_or_empty(const Properties& p, std::string_view key) {
  auto v = p.get(key);
  return v ? std::string(*v) : std::string{};
}

std::string json_error(std::string_view message) {
  return nlohmann::json{{"message", message}}.dump();
}

}  // namespace

struct ModuleClient::Impl : std::enable_shared_from_this<Impl> {
  using Strand = asio::strand<asio::io_context::executor_type>;

  struct PendingTwin {
    TwinCompletion on_get;  // GET
    Completion on_patch;    // reported patch
    std::unique_ptr<asio::steady_timer> timer;
  };
  struct Credentials {
    std::string token;
    std::string ca_pem;
    Clock::time_point issued;
  };

  Impl(asio::io_context& io_ctx, ConnectionSettings s, ModuleClientOptions o)
      : settings(std::move(s)),
        options(std::move(o)),
        strand(asio::make_strand(io_ctx)),
        wake(strand) {
    stopped_future = stopped_promise.get_future().share();
  }

  const ConnectionSettings settings;
  const ModuleClientOptions options;
  Strand strand;
  asio::thread_pool blocking{1};  // workload API calls block; they never run on the strand

  // Registered before start(); read-only afterwards.
  std::map<std::string, InputHandler> inputs;
  std::map<std::string, MethodHandler> methods;
  DesiredHandler desired_handler;
  ConnectionHandler connection_handler;

  std::atomic<ConnectionState> state{ConnectionState::disconnected};
  std::atomic<bool> started{false};

  // Strand-only state.
  bool stopping = false;
  bool callbacks_enabled = true;  // false once stopped: no handler runs after stop()
  std::chrono::milliseconds drain{0};
  std::shared_ptr<net::MqttClient> mqtt;  // the current connection (also while connecting)
  asio::steady_timer wake;                // back-off and renewal sleeps; woken on close/stop
  std::string trust_bundle;               // cached after the first successful fetch
  int attempt = 0;
  std::uint64_t next_rid = 0;
  std::map<std::string, PendingTwin> twin_pending;
  long long desired_version = -1;
  std::size_t pending_sends = 0;
  std::mt19937_64 rng{std::random_device{}()};
  std::promise<void> stopped_promise;
  std::shared_future<void> stopped_future;
  bool stopped_signalled = false;

  std::string connect_host() const {
    if (!options.connect_host.empty()) return options.connect_host;
    return settings.gateway_hostname.empty() ? settings.iothub_hostname : settings.gateway_hostname;
  }
  std::string server_name() const {
    if (!options.tls_server_name.empty()) return options.tls_server_name;
    return settings.gateway_hostname.empty() ? settings.iothub_hostname : settings.gateway_hostname;
  }

  void set_state(ConnectionState s, const std::string& reason) {
    const ConnectionState old = state.exchange(s);
    if (old == s) return;
    log::info(kLog, "{}: {}{}{}", settings.client_id(), to_string(s), reason.empty() ? "" : ": ",
              reason);
    if (callbacks_enabled) call_user("connection", connection_handler, s, reason);
  }

  // ---- credentials (off the strand)

  asio::awaitable<Result<Credentials>> fetch_credentials() {
    auto holder = std::make_shared<std::optional<Result<Credentials>>>();
    auto done = std::make_shared<asio::steady_timer>(strand, Clock::time_point::max());
    const bool need_bundle =
        settings.uses_workload() && settings.ca_file.empty() && trust_bundle.empty();
    const auto validity = options.token_validity;
    asio::post(blocking, [holder, done, settings = settings, need_bundle, validity,
                          strand = strand]() mutable {
      Result<Credentials> result = [&]() -> Result<Credentials> {
        Credentials c;
        c.issued = Clock::now();
        if (need_bundle) {
          auto bundle = workload_trust_bundle(settings);
          if (!bundle) return bundle.error();
          c.ca_pem = std::move(*bundle);
        }
        auto token = make_module_token(settings, now_unix_s() + validity.count());
        if (!token) return token.error();
        c.token = std::move(*token);
        return c;
      }();
      asio::post(strand, [holder, done, result = std::move(result)]() mutable {
        holder->emplace(std::move(result));
        done->cancel();
      });
    });
    while (!holder->has_value()) {
      error_code ec;
      co_await done->async_wait(asio::redirect_error(asio::use_awaitable, ec));
    }
    co_return std::move(**holder);
  }

  // ---- the connection loop

  asio::awaitable<void> sleep_backoff() {
    if (stopping) co_return;  // stop() may have cancelled the timer before this wait began
    const auto base = reconnect_backoff(attempt, options.min_backoff, options.max_backoff);
    ++attempt;
    std::uniform_int_distribution<std::int64_t> jitter(0,
                                                       std::max<std::int64_t>(base.count() / 2, 0));
    const auto delay = base + std::chrono::milliseconds(jitter(rng));
    log::info(kLog, "{}: reconnecting in {} ms", settings.client_id(), delay.count());
    wake.expires_after(delay);
    error_code ec;
    co_await wake.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }

  std::vector<mqtt::Subscription> subscriptions() const {
    std::vector<mqtt::Subscription> subs;
    subs.push_back({"$iothub/twin/res/#", 0});
    if (desired_handler) subs.push_back({"$iothub/twin/PATCH/properties/desired/#", 0});
    if (!methods.empty()) subs.push_back({"$iothub/methods/POST/#", 0});
    if (!inputs.empty()) {
      subs.push_back(
          {"devices/" + settings.device_id + "/modules/" + settings.module_id + "/#", 1});
    }
    return subs;
  }

  asio::awaitable<void> run() {
    auto self = shared_from_this();
    while (!stopping) {
      set_state(ConnectionState::connecting, "");
      auto creds = co_await fetch_credentials();
      if (stopping) break;
      if (!creds) {
        log::warn(kLog, "{}: cannot get credentials: {}", settings.client_id(),
                  creds.error().message);
        set_state(ConnectionState::disconnected, creds.error().message);
        co_await sleep_backoff();
        continue;
      }
      if (!creds->ca_pem.empty()) trust_bundle = creds->ca_pem;

      net::MqttClientOptions mo;
      mo.host = connect_host();
      mo.port = options.port;
      mo.tls = true;
      mo.ca_file = settings.ca_file;
      mo.ca_pem = trust_bundle;
      mo.tls_server_name = server_name();
      mo.client_id = settings.client_id();
      mo.username = settings.iothub_hostname + "/" + settings.client_id() +
                    "/?api-version=" + std::string(kMqttApiVersion) +
                    "&DeviceClientType=" + std::string(kClientType);
      mo.password = creds->token;
      mo.clean_session = true;
      mo.keep_alive_s = options.keep_alive_s;
      // Room for the largest message the hub delivers (its limit) plus topic and headers.
      mo.max_packet_size = options.max_message_bytes + 64 * 1024;
      auto created = net::MqttClient::create(strand, std::move(mo));
      if (!created) {
        log::error(kLog, "{}: {}", settings.client_id(), created.error().message);
        set_state(ConnectionState::disconnected, created.error().message);
        co_await sleep_backoff();
        continue;
      }
      auto client = *created;
      std::weak_ptr<Impl> weak = self;
      client->set_message_handler([weak](mqtt::Publish p) {
        if (auto s = weak.lock()) s->dispatch(std::move(p));
      });
      // Wakes the loop waiting on this connection; a late notice about an older connection
      // must not cut a back-off short.
      client->set_close_handler([weak, raw = client.get()](const Error&) {
        if (auto s = weak.lock(); s && s->mqtt.get() == raw) s->wake.cancel();
      });
      mqtt = client;
      auto connack = co_await client->connect();
      if (!connack) {
        mqtt.reset();
        if (stopping) break;
        log::warn(kLog, "{}: connect to {}:{} failed: {}", settings.client_id(), connect_host(),
                  options.port, connack.error().message);
        set_state(ConnectionState::disconnected, connack.error().message);
        co_await sleep_backoff();
        continue;
      }
      auto granted = co_await client->subscribe(subscriptions());
      bool subscribed = granted.ok();
      if (granted) {
        for (auto code : *granted) subscribed = subscribed && code != mqtt::kSubackFailure;
      }
      if (!subscribed) {
        const std::string why =
            granted ? "the hub refused a subscription" : granted.error().message;
        log::warn(kLog, "{}: subscribe failed: {}", settings.client_id(), why);
        client->close();
        mqtt.reset();
        set_state(ConnectionState::disconnected, why);
        if (!stopping) co_await sleep_backoff();
        continue;
      }
      const auto connected_at = Clock::now();
      set_state(ConnectionState::connected, "");
      if (desired_handler) request_full_desired();

      const auto renew_at =
          creds->issued + token_renewal_delay(options.token_validity, options.token_renew_margin);
      while (client->connected() && !stopping && Clock::now() < renew_at) {
        wake.expires_at(renew_at);
        error_code ec;
        co_await wake.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      }
      if (client->connected()) {
        if (!stopping) log::info(kLog, "{}: renewing the SAS token", settings.client_id());
        auto st = co_await client->disconnect(stopping ? drain : std::chrono::milliseconds{1000});
        (void)st;
        mqtt.reset();
        fail_pending_twin("reconnecting");
        if (!stopping) set_state(ConnectionState::disconnected, "renewing the SAS token");
        continue;
      }
      const std::string why = client->close_reason() ? client->close_reason()->message : "closed";
      mqtt.reset();
      fail_pending_twin("connection lost: " + why);
      if (stopping) break;
      // A connection that lived a while resets the back-off; one the hub drops at once does
      // not, so a hub that keeps refusing us is not hammered.
      if (Clock::now() - connected_at > options.max_backoff) attempt = 0;
      log::warn(kLog, "{}: connection lost: {}", settings.client_id(), why);
      set_state(ConnectionState::disconnected, why);
      co_await sleep_backoff();
    }
    finish_stop();
  }

  void finish_stop() {
    set_state(ConnectionState::stopped, "");
    callbacks_enabled = false;
    fail_pending_twin("stopped");
    if (!stopped_signalled) {
      stopped_signalled = true;
      stopped_promise.set_value();
    }
  }

  void begin_stop(std::chrono::milliseconds drain_for) {
    if (stopping) return;
    stopping = true;
    drain = drain_for;
    wake.cancel();
    if (mqtt && !mqtt->connected()) mqtt->close();  // still connecting: give up now
    if (!started.load()) finish_stop();
  }

  // ---- twin

  void fail_pending_twin(const std::string& why) {
    auto pending = std::move(twin_pending);
    twin_pending.clear();
    for (auto& [rid, p] : pending) {
      if (p.timer) p.timer->cancel();
      if (!callbacks_enabled) continue;
      if (p.on_get) call_user("twin", p.on_get, make_error(errc::unavailable, why));
      if (p.on_patch) call_user("twin", p.on_patch, make_error(errc::unavailable, why));
    }
  }

  // REQUIRES: on the strand.
  void twin_request(bool get, std::string body, TwinCompletion on_get, Completion on_patch) {
    auto fail = [&](Error e) {
      if (on_get) call_user("twin", on_get, e);
      if (on_patch) call_user("twin", on_patch, e);
    };
    if (!mqtt || !mqtt->connected()) {
      fail(make_error(errc::unavailable, "not connected to the hub"));
      return;
    }
    if (twin_pending.size() >= options.max_pending_twin_requests) {
      fail(make_error(errc::limit_exceeded,
                      "too many twin requests waiting (max_pending_twin_requests = " +
                          std::to_string(options.max_pending_twin_requests) + ")"));
      return;
    }
    const std::string rid = std::to_string(++next_rid);
    PendingTwin p;
    p.on_get = std::move(on_get);
    p.on_patch = std::move(on_patch);
    p.timer = std::make_unique<asio::steady_timer>(strand, options.twin_timeout);
    std::weak_ptr<Impl> weak = shared_from_this();
    p.timer->async_wait([weak, rid](error_code ec) {
      auto s = weak.lock();
      if (ec || !s) return;
      s->complete_twin(rid, make_error(errc::timeout, "no answer to twin request $rid=" + rid),
                       std::nullopt);
    });
    twin_pending.emplace(rid, std::move(p));
    const std::string topic =
        get ? iothub::twin_get_topic(rid) : iothub::twin_patch_reported_topic(rid);
    publish_qos0(std::move(topic), std::move(body), [weak, rid](Status st) {
      if (auto s = weak.lock(); s && !st) s->complete_twin(rid, st.error(), std::nullopt);
    });
  }

  // Completes a pending request: with `error`, or with the hub's answer (status, body).
  void complete_twin(const std::string& rid, std::optional<Error> error,
                     std::optional<std::pair<int, std::string>> answer) {
    auto it = twin_pending.find(rid);
    if (it == twin_pending.end()) return;  // answered, timed out or failed already
    PendingTwin p = std::move(it->second);
    twin_pending.erase(it);
    if (p.timer) p.timer->cancel();
    if (!callbacks_enabled) return;
    if (!error && answer) {
      const auto& [status, body] = *answer;
      if (status < 200 || status >= 300) {
        error = make_error(status == 429 ? errc::limit_exceeded : errc::invalid_argument,
                           "twin request refused with status " + std::to_string(status) +
                               (body.empty() ? "" : ": " + body.substr(0, 300)));
      }
    }
    if (p.on_patch) call_user("twin", p.on_patch, error ? Status(*error) : Status{});
    if (p.on_get) {
      if (error) {
        call_user("twin", p.on_get, Result<nlohmann::json>(*error));
        return;
      }
      auto twin = nlohmann::json::parse(answer->second, nullptr, false);
      if (!twin.is_object()) {
        call_user("twin", p.on_get,
                  Result<nlohmann::json>(
                      make_error(errc::invalid_argument, "twin GET answer is not a JSON object")));
        return;
      }
      call_user("twin", p.on_get, Result<nlohmann::json>(std::move(twin)));
    }
  }

  void request_full_desired() {
    std::weak_ptr<Impl> weak = shared_from_this();
    twin_request(true, "",
                 [weak](Result<nlohmann::json> twin) {
                   auto s = weak.lock();
                   if (!s) return;
                   if (!twin) {
                     log::warn(kLog, "{}: cannot read the twin: {}", s->settings.client_id(),
                               twin.error().message);
                     return;
                   }
                   nlohmann::json desired =
                       twin->contains("desired") && (*twin)["desired"].is_object()
                           ? (*twin)["desired"]
                           : nlohmann::json::object();
                   long long version = -1;
                   if (desired.contains("$version") && desired["$version"].is_number_integer()) {
                     version = desired["$version"].get<long long>();
                   }
                   s->desired_version = version;
                   call_user("desired", s->desired_handler, desired, version, true);
                 },
                 {});
  }

  void on_desired_patch(const iothub::CloudTopic& t, const std::string& payload) {
    if (!desired_handler) return;
    auto patch = nlohmann::json::parse(payload, nullptr, false);
    if (!patch.is_object()) {
      log::error(kLog, "{}: ignoring a malformed desired patch ({} bytes, not a JSON object)",
                 settings.client_id(), payload.size());
      return;
    }
    long long version = t.version;
    if (patch.contains("$version") && patch["$version"].is_number_integer()) {
      version = patch["$version"].get<long long>();
    }
    if (desired_version >= 0 && version > desired_version + 1) {
      // Patches were missed (edgeHub's advice: re-read the whole twin on a gap).
      log::info(kLog, "{}: desired version jumped from {} to {}; reading the whole twin",
                settings.client_id(), desired_version, version);
      request_full_desired();
      return;
    }
    if (version >= 0) desired_version = version;
    call_user("desired", desired_handler, patch, version, false);
  }

  // ---- methods

  void on_method_request(const iothub::CloudTopic& t, const std::string& payload) {
    const std::string rid = t.rid;
    if (rid.empty()) {
      log::error(kLog, "{}: method request '{}' without a $rid; cannot answer it",
                 settings.client_id(), t.method_name);
      return;
    }
    auto answer_now = [&](int status, std::string_view message) {
      log::warn(kLog, "{}: method '{}' answered {}: {}", settings.client_id(), t.method_name,
                status, message);
      publish_qos0(iothub::method_response_topic(status, rid), json_error(message), {});
    };
    if (payload.size() > options.max_method_payload_bytes) {
      answer_now(413, "method payload of " + std::to_string(payload.size()) +
                          " bytes is over the limit of " +
                          std::to_string(options.max_method_payload_bytes));
      return;
    }
    if (!mqtt::is_valid_utf8_string(payload)) {
      answer_now(400, "method payload is not valid UTF-8");
      return;
    }
    MethodRequest request;
    request.name = t.method_name;
    if (!payload.empty()) {
      request.payload = nlohmann::json::parse(payload, nullptr, false);
      if (request.payload.is_discarded()) {
        answer_now(400, "method payload is not JSON");
        return;
      }
    }
    auto handler = methods.find(t.method_name);
    if (handler == methods.end()) {
      answer_now(501, "method '" + t.method_name + "' is not implemented by " + settings.module_id);
      return;
    }
    std::weak_ptr<Impl> weak = shared_from_this();
    auto answered = std::make_shared<std::atomic<bool>>(false);
    MethodRespond respond = [weak, rid, answered, name = t.method_name](int status,
                                                                        std::string body) {
      if (answered->exchange(true)) {
        log::error(kLog, "method '{}' answered twice; the second answer is dropped", name);
        return;
      }
      auto s = weak.lock();
      if (!s) return;
      asio::post(s->strand, [weak, rid, status, name, body = std::move(body)]() mutable {
        auto s2 = weak.lock();
        if (!s2) return;
        if (body.size() > s2->options.max_method_payload_bytes) {
          log::error(kLog, "method '{}': answer of {} bytes is over the limit; answering 500", name,
                     body.size());
          status = 500;
          body = json_error("the module's answer is over the method payload limit");
        } else if (!body.empty() && nlohmann::json::parse(body, nullptr, false).is_discarded()) {
          log::error(kLog, "method '{}': answer is not JSON; answering 500", name);
          status = 500;
          body = json_error("the module's answer is not JSON");
        }
        s2->publish_qos0(iothub::method_response_topic(status, rid), std::move(body), {});
      });
    };
    try {
      handler->second(request, std::move(respond));
    } catch (const std::exception& e) {
      log::error(kLog, "method '{}' handler threw: {}", t.method_name, e.what());
      if (!answered->exchange(true)) {
        publish_qos0(iothub::method_response_topic(500, rid),
                     json_error(std::string("handler failed: ") + e.what()), {});
      }
    }
  }

  // ---- inputs

  void on_input_message(mqtt::Publish& p) {
    auto topic = iothub::parse_module_input_topic(p.topic);
    if (!topic) {
      log::error(kLog, "{}: ignoring a message on an unexpected topic: {}", settings.client_id(),
                 topic.error().message);
      return;
    }
    auto handler = inputs.find(topic->input);
    if (handler == inputs.end()) {
      log::warn(kLog, "{}: message on input '{}', which has no handler; dropped",
                settings.client_id(), topic->input);
      return;
    }
    InputMessage m;
    m.input = std::move(topic->input);
    m.body = std::move(p.payload);
    m.properties.message_id = value_or_empty(topic->system, sysprop::kMessageId);
    m.properties.correlation_id = value_or_empty(topic->system, sysprop::kCorrelationId);
    m.properties.content_type = value_or_empty(topic->system, sysprop::kContentType);
    m.properties.content_encoding = value_or_empty(topic->system, sysprop::kContentEncoding);
    m.connection_device_id = value_or_empty(topic->system, sysprop::kConnectionDeviceId);
    m.connection_module_id = value_or_empty(topic->system, sysprop::kConnectionModuleId);
    m.properties.app = topic->app.entries();
    call_user("input", handler->second, m);
  }

  // ---- what the hub sends

  void dispatch(mqtt::Publish p) {
    if (!callbacks_enabled) return;
    if (!p.topic.starts_with("$iothub/")) {
      on_input_message(p);
      return;
    }
    auto t = iothub::parse_cloud_topic(p.topic);
    if (!t) {
      log::error(kLog, "{}: ignoring a message: {}", settings.client_id(), t.error().message);
      return;
    }
    switch (t->kind) {
      case iothub::CloudTopic::Kind::twin_response:
        complete_twin(t->rid, std::nullopt, std::pair{t->status, std::move(p.payload)});
        return;
      case iothub::CloudTopic::Kind::desired_patch:
        on_desired_patch(*t, p.payload);
        return;
      case iothub::CloudTopic::Kind::method_request:
        on_method_request(*t, p.payload);
        return;
    }
  }

  // ---- publishing

  // REQUIRES: on the strand. `done` (optional) gets the outcome.
  void publish_qos0(std::string topic, std::string payload, Completion done) {
    auto client = mqtt;
    if (!client || !client->connected()) {
      log::warn(kLog, "{}: not connected; dropped a publish to {}", settings.client_id(), topic);
      if (done) done(make_error(errc::unavailable, "not connected to the hub"));
      return;
    }
    asio::co_spawn(
        strand,
        [client, topic = std::move(topic),
         payload = std::move(payload)]() mutable -> asio::awaitable<Status> {
          co_return co_await client->publish(std::move(topic), std::move(payload), 0);
        },
        [done = std::move(done)](std::exception_ptr e, Status st) {
          if (e) st = make_error(errc::internal, "publish failed with an exception");
          if (done) call_user("publish", done, st);
        });
  }

  // REQUIRES: on the strand.
  void send_on_strand(std::string output, OutputMessage message, Completion done) {
    auto fail = [&](Error e) {
      log::warn(kLog, "{}: send to output '{}' failed: {}", settings.client_id(), output,
                e.message);
      if (done && callbacks_enabled) call_user("send", done, Status(std::move(e)));
    };
    if (output.empty() || output.find_first_of("/#+") != std::string::npos ||
        !mqtt::is_valid_utf8_string(output)) {
      fail(make_error(errc::invalid_argument,
                      "output name '" + output + "' is empty or contains '/', '#' or '+'"));
      return;
    }
    Message m;
    m.body = std::move(message.body);
    m.system = system_properties(message.properties);
    for (auto& [k, v] : message.properties.app) m.app.set(k, v);
    std::string topic =
        iothub::module_output_topic(settings.device_id, settings.module_id, output, m);
    if (topic.size() + m.body.size() > options.max_message_bytes) {
      fail(make_error(errc::limit_exceeded,
                      "message of " + std::to_string(topic.size() + m.body.size()) +
                          " bytes (body and properties) is over the limit of " +
                          std::to_string(options.max_message_bytes)));
      return;
    }
    if (!mqtt || !mqtt->connected()) {
      fail(make_error(errc::unavailable, "not connected to the hub"));
      return;
    }
    if (pending_sends >= options.max_pending_sends) {
      fail(make_error(errc::limit_exceeded,
                      "too many sends waiting for the hub (max_pending_sends = " +
                          std::to_string(options.max_pending_sends) + ")"));
      return;
    }
    ++pending_sends;
    auto client = mqtt;
    std::weak_ptr<Impl> weak = shared_from_this();
    asio::co_spawn(
        strand,
        [client, topic = std::move(topic),
         body = std::move(m.body)]() mutable -> asio::awaitable<Status> {
          co_return co_await client->publish(std::move(topic), std::move(body), 1);
        },
        [weak, done = std::move(done)](std::exception_ptr e, Status st) {
          if (e) st = make_error(errc::internal, "send failed with an exception");
          auto s = weak.lock();
          if (!s) return;
          --s->pending_sends;
          if (done && s->callbacks_enabled) call_user("send", done, st);
        });
  }
};

// ---- ModuleClient

Result<std::unique_ptr<ModuleClient>> ModuleClient::create(asio::io_context& io,
                                                           ConnectionSettings settings,
                                                           ModuleClientOptions options) {
  std::unique_ptr<ModuleClient> client(new ModuleClient());
  client->impl_ = std::make_shared<Impl>(io, std::move(settings), std::move(options));
  return finish_create(std::move(client));
}

Result<std::unique_ptr<ModuleClient>> ModuleClient::create(ConnectionSettings settings,
                                                           ModuleClientOptions options) {
  std::unique_ptr<ModuleClient> client(new ModuleClient());
  client->own_io_ = std::make_unique<asio::io_context>(1);
  client->impl_ = std::make_shared<Impl>(*client->own_io_, std::move(settings), std::move(options));
  return finish_create(std::move(client));
}

Result<std::unique_ptr<ModuleClient>> ModuleClient::finish_create(
    std::unique_ptr<ModuleClient> client) {
  const auto& impl = client->impl_;
  const auto& s = impl->settings;
  std::string missing;
  for (const auto& [name, value] :
       {std::pair{"device id", &s.device_id}, std::pair{"module id", &s.module_id},
        std::pair{"IoT Hub host name", &s.iothub_hostname}}) {
    if (value->empty()) missing += missing.empty() ? name : std::string(", ") + name;
  }
  if (!missing.empty())
    return make_error(errc::invalid_argument, "module settings lack " + missing);
  if (s.uses_workload() == !s.shared_access_key.empty()) {
    return make_error(errc::invalid_argument,
                      "module settings need exactly one of a shared access key and a workload URI");
  }
  if (s.uses_workload() && s.generation_id.empty()) {
    return make_error(errc::invalid_argument, "a workload URI needs the module generation id");
  }
  const auto& o = impl->options;
  if (o.token_validity.count() <= 0 || o.max_message_bytes == 0 || o.port == 0) {
    return make_error(errc::invalid_argument,
                      "module client options: token_validity, max_message_bytes and port must be "
                      "positive");
  }
  if (!s.ca_file.empty()) {
    // Fail now, not at every reconnection, if the CA file is unreadable.
    net::MqttClientOptions probe;
    probe.tls = true;
    probe.ca_file = s.ca_file;
    auto probe_client = net::MqttClient::create(impl->strand, probe);
    if (!probe_client) return probe_client.error();
  }
  return client;
}

ModuleClient::~ModuleClient() {
  stop(std::chrono::milliseconds{0});
  if (own_io_) {
    own_io_->stop();
    if (own_thread_.joinable()) own_thread_.join();
  }
  impl_.reset();
  // own_io_ goes last (declaration order): it destroys handlers that may still hold the Impl.
}

void ModuleClient::on_input(std::string input, InputHandler handler) {
  impl_->inputs[std::move(input)] = std::move(handler);
}
void ModuleClient::on_method(std::string name, MethodHandler handler) {
  impl_->methods[std::move(name)] = std::move(handler);
}
void ModuleClient::on_desired(DesiredHandler handler) {
  impl_->desired_handler = std::move(handler);
}
void ModuleClient::on_connection(ConnectionHandler handler) {
  impl_->connection_handler = std::move(handler);
}

void ModuleClient::start() {
  if (impl_->started.exchange(true)) return;
  auto impl = impl_;
  asio::co_spawn(impl->strand, impl->run(), [impl](std::exception_ptr e) {
    if (!e) return;
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& ex) {
      log::error(kLog, "{}: connection loop failed: {}", impl->settings.client_id(), ex.what());
    } catch (...) {
      log::error(kLog, "{}: connection loop failed", impl->settings.client_id());
    }
    if (impl->mqtt) impl->mqtt->close();
    impl->mqtt.reset();
    impl->finish_stop();
  });
  if (own_io_) {
    own_thread_ = std::thread([io = own_io_.get()] {
      name_this_thread("module-client");
      auto work = asio::make_work_guard(*io);  // run until the destructor stops it
      io->run();
    });
  }
}

void ModuleClient::stop(std::chrono::milliseconds drain) {
  auto impl = impl_;
  if (impl->strand.running_in_this_thread()) {
    impl->begin_stop(drain);
    return;
  }
  asio::post(impl->strand, [impl, drain] { impl->begin_stop(drain); });
  // On the application's io_context, waiting here could block the very thread that must run
  // the stop: the ConnectionState::stopped notification says when it is done.
  if (!own_io_) return;
  if (!impl->started.load()) {
    own_io_->restart();  // a poll that ran out of work leaves the context stopped
    own_io_->poll();     // nothing runs the client's own io_context yet
    return;
  }
  (void)impl->stopped_future.wait_for(drain + std::chrono::seconds(5));
}

ConnectionState ModuleClient::state() const { return impl_->state.load(); }
const ConnectionSettings& ModuleClient::settings() const { return impl_->settings; }

void ModuleClient::send(std::string output, OutputMessage message, Completion done) {
  auto impl = impl_;
  asio::post(impl->strand, [impl, output = std::move(output), message = std::move(message),
                            done = std::move(done)]() mutable {
    impl->send_on_strand(std::move(output), std::move(message), std::move(done));
  });
}

void ModuleClient::get_twin(TwinCompletion done) {
  auto impl = impl_;
  asio::post(impl->strand, [impl, done = std::move(done)]() mutable {
    impl->twin_request(true, "", std::move(done), {});
  });
}

void ModuleClient::update_reported(nlohmann::json patch, Completion done) {
  auto impl = impl_;
  asio::post(impl->strand, [impl, patch = std::move(patch), done = std::move(done)]() mutable {
    if (!patch.is_object()) {
      if (done)
        call_user(
            "twin", done,
            Status(make_error(errc::invalid_argument, "a reported patch must be a JSON object")));
      return;
    }
    std::string body;
    try {
      body = patch.dump();
    } catch (const std::exception& e) {  // invalid UTF-8 in a string
      if (done) {
        call_user(
            "twin", done,
            Status(make_error(errc::invalid_argument, std::string("reported patch: ") + e.what())));
      }
      return;
    }
    if (body.size() > impl->options.max_twin_bytes) {
      if (done) {
        call_user("twin", done,
                  Status(make_error(errc::limit_exceeded,
                                    "reported patch of " + std::to_string(body.size()) +
                                        " bytes is over the limit of " +
                                        std::to_string(impl->options.max_twin_bytes))));
      }
      return;
    }
    impl->twin_request(false, std::move(body), {}, std::move(done));
  });
}

}  // namespace cairn::sdk
