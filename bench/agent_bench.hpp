// `cairn-bench agent`: the agent's deployment figures (docs/benchmarks.md "Agent").
//
// The bench starts its own cairnd (loopback, free ports, a fresh home) and, through the
// management socket exactly as `cairn deploy` does:
//  1. deploy -> running -> connected: one manifest with N process modules running the official
//     Node SDK module tests/node/edge_module.js (ModuleClient.fromEnvironment over the workload
//     API); times from the POST until every module is `running`, and until the hub counts N
//     MQTT connections. With a container engine (docker_socket, container_image: see
//     bench/agent_containers.py, which provides both) each round then deploys the same module as
//     N containers of the docker runtime (host network, imagePullPolicy never: the image is in
//     the engine's storage) and times the engine alone creating and starting N containers of
//     the image through its API;
//  2. memory: cairnd's RSS and PSS (/proc/PID/smaps_rollup) idle with no module, then idle with
//     M process modules (/bin/sleep) deployed, side by side.
// Output: progress on stderr; a report on stdout whose last line is one JSON object.
//
// Thread-safety: call from one thread.
#pragma once

#include <cstddef>
#include <string>

namespace cairn::bench {

struct AgentBenchOptions {
  std::string cairnd_path;
  std::string node_path = "/usr/bin/node";
  std::string node_module;  // tests/node/edge_module.js; empty skips phase 1
  std::size_t connected_modules = 3;
  std::size_t idle_modules = 10;
  int rounds = 3;  // phase 1 is repeated (fresh deployment each time)
  // The Docker Engine API socket cairnd is given (--docker-uri unix://...); empty: no container
  // rounds, and cairnd runs with --docker-uri none.
  std::string docker_socket;
  std::string container_image;  // holds node and tests/node at /opt/cairn-node
  std::string container_node_module = "/opt/cairn-node/edge_module.js";
  double timeout_s = 120;
  bool keep_dir = false;
};

int run_agent_bench(const AgentBenchOptions& options);

}  // namespace cairn::bench
