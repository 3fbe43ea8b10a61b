// `cairn-bench link`: benchmarks of cairnd's link to the cloud. The bench starts its own
// cairn-cloud (on 127.0.0.2) and cairnd (on 127.0.0.1, plain MQTT for the load, [upstream]
// pointing at that cloud, route FROM /messages/* INTO $upstream), registers the edge device
// and a plain device in the cloud over REST, and measures, side by side in one run:
//
//  1. upstream throughput: N QoS 1 messages from one module through cairnd until the cloud has
//     stored all of them, against the same N sent by a device straight to the cloud;
//  2. drain after an outage: the cloud is stopped, N messages go into cairnd, the cloud is
//     started again and the bench times the backlog until every message is stored (counting
//     missing and duplicate messages);
//  3. twin round trips: reported patch -> 204 (module via cairnd, device direct) and desired
//     patch over REST -> arrival at the module / device.
//
// A message counts as stored when its line appears in the cloud's messages file (the sink
// writes it right after the database commit); /cairn/status confirms the totals at the end of
// each phase. See bench/README.md for every figure.
//
// Output: progress on stderr; a human report on stdout whose last line is one JSON object.
//
// Thread-safety: run_link_bench() owns everything it creates; call it from one thread.
#pragma once

#include <cstddef>
#include <string>

namespace cairn::bench {

struct LinkBenchOptions {
  std::string cairnd_path;
  std::string cloud_path;           // cairn-cloud
  bool fsync = true;                // cairnd's store.fsync and cairn-cloud's --fsync
  std::size_t messages = 20000;     // per throughput phase and for the outage backlog
  std::size_t payload_bytes = 256;  // message body
  std::size_t inflight = 16;        // QoS 1 publishes awaiting PUBACK, per publisher
  std::size_t reported_patches = 500;
  std::size_t desired_patches = 200;
  double phase_timeout_s = 180;  // a phase that has not finished by then fails
  bool keep_dir = false;         // keep the work directory (homes, configs, logs)
};

// Runs every phase and prints the report. Returns the process exit code: 0 if every phase
// completed with every message accounted for, 1 otherwise (the report says what failed).
int run_link_bench(const LinkBenchOptions& options);

}  // namespace cairn::bench
