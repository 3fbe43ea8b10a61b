// cairn-infer: serves ML models (ONNX through ONNX Runtime, TFLite through Arm NN) over REST:
// Azure ML style /score, the KServe v2 / Open Inference Protocol and Prometheus /metrics.
// Standalone: models from --model and/or a --models JSON file (the module twin's desired
// schema, docs/infer.md), re-read on SIGHUP to load new versions without stopping.
#include <csignal>
#include <fstream>
#include <iostream>
#include <sstream>

#include <CLI/CLI.hpp>

#include "core/log.hpp"
#include "infer/model_manager.hpp"
#include "infer/rest_api.hpp"
#include "net/asio.hpp"
#include "net/http.hpp"

namespace {

using namespace cairn;

constexpr std::string_view kLog = "cairn-infer";

struct Options {
  std::vector<std::string> models;  // NAME=PATH[@VERSION]
  std::string models_file;
  std::string default_model;
  std::string http = "127.0.0.1:8000";
  std::size_t max_body_bytes = 64 * 1024 * 1024;
  std::size_t max_connections = 256;
  infer::ManagerOptions manager;
  infer::ModelSpec defaults;
};

Result<infer::ModelSpec> parse_model_arg(const std::string& arg, const infer::ModelSpec& defaults) {
  const auto eq = arg.find('=');
  if (eq == std::string::npos || eq == 0 || eq + 1 == arg.size()) {
    return make_error(errc::invalid_argument, "--model " + arg + ": expected NAME=PATH[@VERSION]");
  }
  infer::ModelSpec spec = defaults;
  spec.name = arg.substr(0, eq);
  spec.path = arg.substr(eq + 1);
  const auto at = spec.path.rfind('@');
  const auto slash = spec.path.rfind('/');
  if (at != std::string::npos && (slash == std::string::npos || at > slash)) {
    spec.version = spec.path.substr(at + 1);
    spec.path.resize(at);
  }
  // Validate the name and version the same way the twin's entries are.
  auto checked =
      infer::parse_model_spec(spec.name, {{"version", spec.version}, {"path", spec.path}});
  if (!checked) return checked.error();
  return spec;
}

Result<std::pair<std::string, std::uint16_t>> parse_host_port(const std::string& text) {
  const auto colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0) {
    return make_error(errc::invalid_argument, "--http " + text + ": expected HOST:PORT");
  }
  std::string host = text.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  int port = -1;
  try {
    std::size_t used = 0;
    port = std::stoi(text.substr(colon + 1), &used);
    if (used != text.size() - colon - 1) port = -1;
  } catch (const std::exception&) {
    port = -1;
  }
  if (port < 0 || port > 65535) {
    return make_error(errc::invalid_argument, "--http " + text + ": bad port");
  }
  return std::make_pair(host, static_cast<std::uint16_t>(port));
}

Result<nlohmann::json> read_models_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) return make_error(errc::not_found, path + ": cannot open");
  std::stringstream text;
  text << in.rdbuf();
  auto j = nlohmann::json::parse(text.str(), nullptr, false);
  if (j.is_discarded()) return make_error(errc::invalid_argument, path + ": not valid JSON");
  if (j.contains("models")) j = j["models"];  // the twin's desired section as a whole
  if (!j.is_object()) {
    return make_error(errc::invalid_argument, path + ": expected {\"name\": {...}, ...}");
  }
  return j;
}

int run(const Options& o) {
  auto address = parse_host_port(o.http);
  if (!address) {
    log::error(kLog, "{}", address.error().message);
    return 2;
  }
  std::vector<infer::ModelSpec> specs;
  std::vector<std::string> pinned;
  for (const auto& arg : o.models) {
    auto spec = parse_model_arg(arg, o.defaults);
    if (!spec) {
      log::error(kLog, "{}", spec.error().message);
      return 2;
    }
    spec->is_default = spec->name == o.default_model;
    pinned.push_back(spec->name);
    specs.push_back(std::move(*spec));
  }
  if (specs.empty() && o.models_file.empty()) {
    log::error(kLog, "nothing to serve: give --model NAME=PATH or --models FILE");
    return 2;
  }

  infer::ModelManager models(o.manager);
  for (const auto& spec : specs) {
    if (auto s = models.load(spec, true); !s) {
      log::error(kLog, "model {} version {}: {}", spec.name, spec.version, s.error().message);
      return 1;
    }
  }
  auto apply_file = [&] {
    auto desired = read_models_file(o.models_file);
    if (!desired) {
      log::error(kLog, "{}", desired.error().message);
      return;
    }
    if (!o.default_model.empty() && desired->contains(o.default_model)) {
      (*desired)[o.default_model]["default"] = true;
    }
    (void)models.apply_desired(*desired, pinned);
  };
  if (!o.models_file.empty()) apply_file();

  asio::io_context io(1);
  // Signals are caught from here on (one that arrives before the wait below is kept for it), so
  // a SIGTERM right after the "listening" line stops cleanly instead of killing the process.
  asio::signal_set stop_signals(io, SIGINT, SIGTERM);
  asio::signal_set reload_signal(io, SIGHUP);
  infer::RestOptions rest_options;
  rest_options.server_version = CAIRN_VERSION;
  infer::RestApi rest(models, rest_options);
  net::HttpLimits limits;
  limits.max_body_bytes = o.max_body_bytes;
  limits.max_connections = o.max_connections;
  auto server = net::HttpServer::start(
      io, address->first, address->second, nullptr,
      [&rest](const net::HttpRequest& request, net::HttpRespond respond) {
        rest.handle(request, std::move(respond));
      },
      limits);
  if (!server) {
    log::error(kLog, "cannot listen on {}: {}", o.http, server.error().to_string());
    return 1;
  }
  // The bound address on stdout (port 0 picks one) for scripts and tests.
  std::cout << "cairn-infer listening on http://" << address->first << ":" << (*server)->port()
            << std::endl;
  log::info(kLog, "ready: http={}:{} models={}", address->first, (*server)->port(),
            models.list().size());

  stop_signals.async_wait([&](net::error_code ec, int sig) {
    if (ec) return;
    log::info(kLog, "signal {}: shutting down", sig);
    (*server)->stop();
    asio::post(io, [&io] { io.stop(); });
  });
  std::function<void()> wait_reload = [&] {
    reload_signal.async_wait([&](net::error_code ec, int) {
      if (ec) return;
      if (o.models_file.empty()) {
        log::warn(kLog, "SIGHUP: no --models file to re-read");
      } else {
        log::info(kLog, "SIGHUP: re-reading {}", o.models_file);
        apply_file();  // loads run on the manager's loader thread
      }
      wait_reload();
    });
  };
  wait_reload();
  io.run();
  server->reset();
  log::info(kLog, "stopped");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "cairn-infer — serves ONNX and TFLite models over REST: POST /score (Azure ML style), the "
      "KServe v2 / Open Inference Protocol under /v2, Prometheus text on /metrics"};
  Options o;
  std::string level = "info";
  std::int64_t max_queue_delay_us = 0;
  app.add_option("--model", o.models,
                 "NAME=PATH[@VERSION] (repeatable; the same NAME twice serves both versions, the "
                 "last one for unversioned requests)");
  app.add_option("--models", o.models_file,
                 "JSON file {NAME: {version, path, sha256, engine, batching, limits, default}} "
                 "(the module twin's desired schema); re-read on SIGHUP")
      ->check(CLI::ExistingFile);
  app.add_option("--default", o.default_model, "Model that POST /score serves");
  app.add_option("--http", o.http, "HOST:PORT to listen on (port 0 picks a free one)")
      ->capture_default_str();
  app.add_option("--max-body-bytes", o.max_body_bytes, "Largest request body (413 beyond)")
      ->capture_default_str()
      ->check(CLI::Range(std::size_t{1024}, std::size_t{1} << 32));
  app.add_option("--max-connections", o.max_connections, "Concurrent HTTP connections")
      ->capture_default_str()
      ->check(CLI::Range(std::size_t{1}, std::size_t{100000}));
  app.add_option("--max-models", o.manager.max_models, "Models served at once")
      ->capture_default_str()
      ->check(CLI::Range(std::size_t{1}, std::size_t{10000}));
  app.add_option("--intra-op-threads", o.defaults.engine.intra_op_threads,
                 "ONNX Runtime threads per run (0: one per core)")
      ->capture_default_str()
      ->check(CLI::Range(0, 256));
  app.add_option("--inter-op-threads", o.defaults.engine.inter_op_threads,
                 "ONNX Runtime threads across graph branches")
      ->capture_default_str()
      ->check(CLI::Range(0, 256));
  app.add_option("--graph-optimization", o.defaults.engine.graph_optimization,
                 "ONNX Runtime graph optimisation: disable, basic, extended, all")
      ->capture_default_str()
      ->check(CLI::IsMember({"disable", "basic", "extended", "all"}));
  app.add_option("--execution-provider", o.defaults.engine.execution_providers,
                 "ONNX Runtime execution provider, in preference order (repeatable)");
  app.add_option("--max-batch-size", o.defaults.batching.max_batch_size,
                 "Requests merged into one run (1: no batching)")
      ->capture_default_str()
      ->check(CLI::Range(std::size_t{1}, std::size_t{1024}));
  app.add_option("--max-queue-delay-us", max_queue_delay_us, "Microseconds a batch waits to fill")
      ->capture_default_str()
      ->check(CLI::Range(std::int64_t{0}, std::int64_t{10'000'000}));
  app.add_option("--max-queue", o.defaults.limits.max_queue,
                 "Requests waiting per model before 429")
      ->capture_default_str()
      ->check(CLI::Range(std::size_t{1}, std::size_t{100000}));
  app.add_option("--concurrency", o.defaults.limits.concurrency, "Worker threads per model")
      ->capture_default_str()
      ->check(CLI::Range(std::size_t{1}, std::size_t{64}));
  bool no_warmup = false;
  app.add_flag("--no-warmup", no_warmup,
               "Skip the zero-input warm-up run (for models that cannot take zeros)");
  app.add_option("--log-level", level, "trace, debug, info, warn, error or off")
      ->capture_default_str();
  app.set_version_flag("--version", std::string("cairn-infer ") + CAIRN_VERSION);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }
  o.defaults.batching.max_queue_delay = std::chrono::microseconds(max_queue_delay_us);
  o.defaults.warmup = !no_warmup;
  auto parsed_level = cairn::log::parse_level(level);
  if (!parsed_level) {
    std::cerr << "cairn-infer: " << parsed_level.error().message << "\n";
    return 2;
  }
  cairn::log::init(*parsed_level);
  std::signal(SIGPIPE, SIG_IGN);
  try {
    return run(o);
  } catch (const std::exception& e) {
    cairn::log::error("cairn-infer", "fatal: {}", e.what());
    return 1;
  }
}
