// `cairn-bench mqtt`: runs the same MQTT workloads side by side against cairnd (through routes)
// and against a mosquitto the bench starts itself, both on loopback, and reports delivered
// throughput, end-to-end latency and process figures (start-up time, idle and loaded RSS, CPU).
// See bench/README.md for what each number means.
//
// Output: progress on stderr; a human table on stdout, whose last line is one JSON object.
//
// Thread-safety: run_mqtt_bench() owns everything it creates; call it from one thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace cairn::bench {

struct Workload {
  std::string name;
  int publishers = 1;
  int subscribers = 1;
  std::uint8_t qos = 1;
  std::size_t payload_bytes = 256;  // >= 16: the send timestamp lives in the first 16 bytes
  std::size_t inflight = 16;        // per publisher: QoS 1 awaiting PUBACK / QoS 0 unwritten
  bool tls = false;                 // MQTT over TLS (both brokers; the client does not verify)
  // Paced instead of saturated: the publishers together send `pace_fraction` of the rate
  // mosquitto delivered per subscriber in workload `paced_of` of the same run (which must come
  // earlier in the suite). Empty: as fast as the in-flight window allows.
  std::string paced_of;
  double pace_fraction = 0.5;
  // Paced at this many publishes per second in all (both brokers alike); 0 = not set.
  double rate = 0;
};

struct MqttBenchOptions {
  std::vector<Workload> workloads;  // run in order, each against every target
  double warmup_s = 2.0;            // messages in this window are not measured
  double duration_s = 8.0;          // measured window
  bool run_cairn = true;
  bool run_mosquitto = true;
  std::string cairnd_path;
  bool cairn_fsync = true;  // cairnd's store.fsync for this run
  std::string cairn_path;
  std::string mosquitto_path = "/usr/sbin/mosquitto";
  int threads = 1;          // client I/O threads; each client has its own strand
  int startup_samples = 3;  // starts per target for the start-up time (best is reported)
  bool keep_dir = false;    // keep the work directory (configs, broker logs) for inspection
};

// The default suite: 1->1, 4->1 and 1->4 at QoS 1, and 1->1 at QoS 0; 256-byte payloads.
std::vector<Workload> default_suite(std::size_t inflight);
// The "full" suite: the default one plus 1->1 with 100 in flight over TLS (the shape of an
// outside libmosquitto load generator), fan-in and fan-out at 10 and 100 clients, and the
// latency of 1->1 (plain and TLS) paced at half of mosquitto's saturated rate.
std::vector<Workload> full_suite(std::size_t inflight);
// Suite names accepted by suite_by_name(): "default" and "full".
std::optional<std::vector<Workload>> suite_by_name(const std::string& name, std::size_t inflight);

// Runs everything and prints the report. Returns the process exit code: 0 if every
// workload ran against every selected target, 1 otherwise (the report says what failed).
int run_mqtt_bench(const MqttBenchOptions& options);

}  // namespace cairn::bench
