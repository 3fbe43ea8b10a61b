// cairn-bench model-fetch: how long the model fetcher takes to download a package of many small
// chunks on loopback, a new connection per request against kept (keep-alive) connections, with
// 1 and 4 requests in flight, over HTTP and HTTPS — side by side in one run. The package is
// served by net::HttpServer in this process (cairn-cloud's server), from a publish directory
// written by modelpkg::pack_model with small chunks.
//
// Thread-safety: run_model_fetch_bench runs alone, blocking.
#pragma once

#include <cstddef>

namespace cairn::bench {

struct ModelFetchBenchOptions {
  std::size_t model_mib = 8;  // size of the generated (incompressible) model
  std::size_t chunk_kib = 4;  // average chunk size: small, so requests dominate
  int repeats = 3;            // best of
  bool keep_dir = false;
};

// Prints the table on stdout (last line JSON); returns the process exit code.
int run_model_fetch_bench(const ModelFetchBenchOptions& options);

}  // namespace cairn::bench
