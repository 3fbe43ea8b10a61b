#include "bench/model_fetch_bench.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "bench/process.hpp"
#include "core/files.hpp"
#include "modelpkg/fetch.hpp"
#include "modelpkg/index.hpp"
#include "modelpkg/pack.hpp"
#include "net/asio.hpp"
#include "net/certs.hpp"
#include "net/http.hpp"

namespace cairn::bench {

namespace fs = std::filesystem;

namespace {

// Serves the publish directory over HTTP and HTTPS from one io thread.
class Server {
 public:
  Status start(const fs::path& root, const fs::path& certs_dir) {
    root_ = root;
    net::CertificateOptions certs;
    certs.ip_addresses = {"127.0.0.1"};
    auto made = net::ensure_edge_certificates(certs_dir.string(), certs);
    if (!made) return std::move(made).error();
    ca_file_ = made->ca_cert_path;
    tls_ = std::make_unique<ssl::context>(ssl::context::tls_server);
    net::error_code ec;
    tls_->use_certificate_chain_file(made->server_cert_path, ec);
    if (!ec) tls_->use_private_key_file(made->server_key_path, ssl::context::pem, ec);
    if (ec) return make_error(errc::io_error, "server certificate: " + ec.message());
    auto handler = [this](const net::HttpRequest& req, net::HttpRespond respond) {
      net::HttpResponse r;
      auto path = net::http_path(req.target);
      auto data = path.find("..") == std::string::npos
                      ? read_file(root_.string() + path, 64 << 20)
                      : Result<std::string>(make_error(errc::not_found, "no"));
      r.status = data ? 200 : 404;
      r.content_type = "application/octet-stream";
      if (data) r.body = std::move(*data);
      respond(std::move(r));
    };
    auto plain = net::HttpServer::start(io_, "127.0.0.1", 0, nullptr, handler);
    if (!plain) return std::move(plain).error();
    auto secure = net::HttpServer::start(io_, "127.0.0.1", 0, tls_.get(), handler);
    if (!secure) return std::move(secure).error();
    plain_ = *plain;
    secure_ = *secure;
    thread_ = std::thread([this] {
      auto guard = asio::make_work_guard(io_);
      io_.run();
    });
    return {};
  }
  ~Server() {
    if (plain_) plain_->stop();
    if (secure_) secure_->stop();
    io_.stop();
    if (thread_.joinable()) thread_.join();
    plain_.reset();
    secure_.reset();
  }
  std::string url(bool tls, const std::string& file) const {
    return fmt::format("{}://127.0.0.1:{}/{}", tls ? "https" : "http",
                       tls ? secure_->port() : plain_->port(), file);
  }
  const std::string& ca_file() const { return ca_file_; }

 private:
  fs::path root_;
  std::string ca_file_;
  asio::io_context io_{1};
  std::unique_ptr<ssl::context> tls_;
  std::shared_ptr<net::HttpServer> plain_, secure_;
  std::thread thread_;
};

struct Measured {
  double seconds = 0;
  std::size_t requests = 0;
  std::size_t connections = 0;
};

}  // namespace

int run_model_fetch_bench(const ModelFetchBenchOptions& o) {
  auto work = make_work_dir("cairn-model-fetch");
  if (!work) {
    std::fprintf(stderr, "cairn-bench: %s\n", work.error().message.c_str());
    return 1;
  }
  int rc = 0;
  {
    // An incompressible model: every chunk is a request of its own size on the wire.
    std::string model(o.model_mib << 20, '\0');
    std::mt19937_64 rng(42);
    for (std::size_t i = 0; i + 8 <= model.size(); i += 8) {
      std::uint64_t v = rng();
      std::memcpy(model.data() + i, &v, 8);
    }
    fs::path model_path = *work / "model.bin";
    std::ofstream(model_path, std::ios::binary).write(model.data(), model.size());
    modelpkg::PackOptions pack;
    pack.name = "m";
    pack.version = "1";
    pack.out_dir = (*work / "pub").string();
    pack.zstd_level = 1;
    pack.chunking.average_chunk = o.chunk_kib * 1024;
    pack.chunking.min_chunk = pack.chunking.average_chunk / 4;
    pack.chunking.max_chunk = pack.chunking.average_chunk * 4;
    progress(fmt::format("packing a {} MiB model into ~{} KiB chunks", o.model_mib, o.chunk_kib));
    auto packed = modelpkg::pack_model(model_path.string(), pack);
    if (!packed) {
      std::fprintf(stderr, "cairn-bench: %s\n", packed.error().message.c_str());
      finish_work_dir(*work, o.keep_dir);
      return 1;
    }
    Server server;
    if (auto s = server.start(*work / "pub", *work / "server"); !s) {
      std::fprintf(stderr, "cairn-bench: %s\n", s.error().message.c_str());
      finish_work_dir(*work, o.keep_dir);
      return 1;
    }
    auto measure = [&](bool tls, std::size_t parallel, bool keep_alive) -> Result<Measured> {
      Measured best;
      for (int r = 0; r < std::max(1, o.repeats); ++r) {
        fs::path store = *work / fmt::format("store-{}", r);
        std::error_code ec;
        fs::remove_all(store, ec);
        modelpkg::FetchOptions f;
        f.parallel = parallel;
        f.keep_alive = keep_alive;
        f.ca_file = tls ? server.ca_file() : "";
        const auto start = std::chrono::steady_clock::now();
        auto s = modelpkg::fetch_model(server.url(tls, "m-1.cidx"), (*work / "out.bin").string(),
                                       store.string(), f);
        const double secs = seconds_between(start, std::chrono::steady_clock::now());
        if (!s) return std::move(s).error();
        if (r == 0 || secs < best.seconds) best = Measured{secs, s->requests, s->connections};
      }
      return best;
    };
    std::printf("model-fetch: %zu MiB model, %zu chunks (~%zu KiB), loopback, best of %d\n",
                o.model_mib, packed->chunks, o.chunk_kib, o.repeats);
    std::printf("%-6s %-9s %-22s %-22s %s\n", "scheme", "parallel", "new conn/request (s)",
                "kept connections (s)", "speed-up");
    nlohmann::json rows = nlohmann::json::array();
    for (bool tls : {false, true}) {
      for (std::size_t parallel : {std::size_t{1}, std::size_t{4}}) {
        progress(fmt::format("{} parallel {}", tls ? "https" : "http", parallel));
        auto before = measure(tls, parallel, false);
        auto after = measure(tls, parallel, true);
        if (!before || !after) {
          std::fprintf(stderr, "cairn-bench: %s\n",
                       (!before ? before.error() : after.error()).message.c_str());
          rc = 1;
          break;
        }
        const double ratio = before->seconds / after->seconds;
        std::printf("%-6s %-9zu %-22s %-22s %.2fx\n", tls ? "https" : "http", parallel,
                    fmt::format("{:.3f} ({} conns)", before->seconds, before->connections).c_str(),
                    fmt::format("{:.3f} ({} conns)", after->seconds, after->connections).c_str(),
                    ratio);
        rows.push_back({{"scheme", tls ? "https" : "http"},
                        {"parallel", parallel},
                        {"requests", after->requests},
                        {"one_shot_seconds", before->seconds},
                        {"one_shot_connections", before->connections},
                        {"keep_alive_seconds", after->seconds},
                        {"keep_alive_connections", after->connections},
                        {"speedup", ratio}});
      }
    }
    std::printf("%s\n", nlohmann::json{{"bench", "model-fetch"},
                                       {"model_bytes", model.size()},
                                       {"chunks", packed->chunks},
                                       {"rows", rows}}
                            .dump()
                            .c_str());
  }
  finish_work_dir(*work, o.keep_dir);
  return rc;
}

}  // namespace cairn::bench
