#include "infer/model_delivery.hpp"

#include <chrono>

#include "core/files.hpp"
#include "core/log.hpp"
#include "infer/engine.hpp"
#include "modelpkg/detail/url.hpp"
#include "modelpkg/fetch.hpp"
#include "modelpkg/index.hpp"
#include "net/http.hpp"

namespace cairn::infer {

namespace {

constexpr std::string_view kLog = "infer";
// The first four bytes of every zstd frame (RFC 8878), which a model index is.
constexpr std::string_view kZstdMagic = "\x28\xb5\x2f\xfd";
// Progress goes into reported properties; more often than this is noise.
constexpr auto kProgressInterval = std::chrono::milliseconds(200);

nlohmann::json delivery_json(const std::string& version, std::string_view source_view,
                             std::string_view status_view) {
  const std::string source(source_view);
  const std::string status(status_view);
  return {{"version", version}, {"source", source},      {"status", status},  {"bytesNeeded", 0},
          {"bytesReused", 0},   {"bytesDownloaded", 0},  {"bytesSaved", 0},   {"chunks", 0},
          {"chunksReused", 0},  {"chunksDownloaded", 0}, {"deltasApplied", 0}};
}

}  // namespace

std::string_view to_string(UrlContent c) noexcept {
  switch (c) {
    case UrlContent::kModelIndex:
      return "model package index";
    case UrlContent::kModelFile:
      return "model file";
    case UrlContent::kUnknown:
      break;
  }
  return "unknown content";
}

UrlContent classify_url_content(std::string_view bytes) {
  if (bytes.substr(0, kZstdMagic.size()) == kZstdMagic) {
    // An index is a zstd frame holding the index JSON; a zstd file that is not one is unknown
    // (engines do not take compressed models).
    return modelpkg::decode_index(bytes) ? UrlContent::kModelIndex : UrlContent::kUnknown;
  }
  return detect_format(bytes) == ModelFormat::kUnknown ? UrlContent::kUnknown
                                                       : UrlContent::kModelFile;
}

ModelDelivery::ModelDelivery(DeliveryOptions options) : options_(std::move(options)) {}

void ModelDelivery::set_public_key(std::string path) {
  std::lock_guard lock(mu_);
  options_.public_key = std::move(path);
}

std::string ModelDelivery::public_key() const {
  std::lock_guard lock(mu_);
  return options_.public_key;
}

Result<std::string> ModelDelivery::fetch(const ModelSpec& spec, const DeliveryProgress& progress) {
  const std::string public_key = this->public_key();
  const std::string model_dir = options_.data_dir + "/models/" + spec.name;
  const std::string out_path = model_dir + "/" + spec.version + ".model";
  auto fail = [&](const Error& e, std::string_view source) -> Error {
    auto d = delivery_json(spec.version, source, "failed");
    if (progress) progress(d);
    return e;
  };
  if (progress) progress(delivery_json(spec.version, "unknown", "downloading"));

  // One GET tells what the URL serves. An index is small (modelpkg::kMaxIndexBytes); a raw
  // model comes whole, up to the HTTP client's response limit (64 MiB).
  auto url = modelpkg::detail::parse_http_url(spec.url);
  if (!url) return fail(url.error(), "unknown");
  url->target.ca_file = options_.ca_file;
  net::HttpRequest request;
  request.method = "GET";
  request.target = url->target_path;
  auto response = net::http_request(url->target, request, options_.timeout_secs);
  if (!response) {
    return fail(make_error(response.error().code, spec.url + ": " + response.error().message),
                "unknown");
  }
  if (response->status != 200) {
    return fail(make_error(response->status == 404 ? errc::not_found : errc::unavailable,
                           spec.url + ": HTTP " + std::to_string(response->status)),
                "unknown");
  }
  const UrlContent content = classify_url_content(response->body);
  if (auto s = make_dirs(model_dir); !s) return fail(s.error(), "unknown");

  if (content == UrlContent::kModelFile) {
    if (!public_key.empty()) {
      return fail(
          make_error(errc::unauthorized,
                     spec.url + ": a plain model file cannot be signed, and this device "
                                "requires signed model packages (a public key is configured)"),
          "file");
    }
    auto d = delivery_json(spec.version, "file", "done");
    d["bytesNeeded"] = response->body.size();
    d["bytesDownloaded"] = response->body.size();
    if (auto s = write_file_atomic(out_path, response->body, true); !s) {
      return fail(s.error(), "file");
    }
    if (progress) progress(d);
    log::info(kLog, "model={} version={} downloaded {} bytes from {}", spec.name, spec.version,
              response->body.size(), spec.url);
    return out_path;
  }
  if (content != UrlContent::kModelIndex) {
    return fail(make_error(errc::invalid_argument,
                           spec.url +
                               " serves neither a model package index nor an ONNX or "
                               "TFLite model (" +
                               std::to_string(response->body.size()) + " bytes)"),
                "unknown");
  }

  modelpkg::FetchOptions options;
  options.public_key = public_key;
  options.ca_file = options_.ca_file;
  options.timeout_secs = options_.timeout_secs;
  options.store_max_bytes = options_.store_max_bytes;
  options.parallel = options_.parallel;
  std::mutex progress_mu;
  auto last = std::chrono::steady_clock::now() - kProgressInterval;
  auto on_progress = [&](const modelpkg::FetchProgress& p) {
    std::lock_guard lock(progress_mu);
    const auto now = std::chrono::steady_clock::now();
    if (!progress || now - last < kProgressInterval) return;
    last = now;
    auto d = delivery_json(spec.version, "package", "downloading");
    d["bytesNeeded"] = p.needed;
    d["bytesReused"] = p.reused;
    d["bytesDownloaded"] = p.downloaded;
    d["bytesSaved"] = p.saved;
    progress(d);
  };
  auto summary = modelpkg::fetch_model(spec.url, out_path, options_.data_dir + "/chunks", options,
                                       on_progress);
  if (!summary) return fail(summary.error(), "package");
  auto d = delivery_json(spec.version, "package", "done");
  d["bytesNeeded"] = summary->needed;
  d["bytesReused"] = summary->reused;
  d["bytesDownloaded"] = summary->downloaded;
  d["bytesSaved"] = summary->saved;
  d["chunks"] = summary->chunks;
  d["chunksReused"] = summary->chunks_reused;
  d["chunksDownloaded"] = summary->chunks_downloaded;
  d["deltasApplied"] = summary->deltas_applied;
  if (progress) progress(d);
  log::info(kLog, "model={} version={} delivered from {}: {}", spec.name, spec.version, spec.url,
            summary->to_json());
  return out_path;
}

}  // namespace cairn::infer
