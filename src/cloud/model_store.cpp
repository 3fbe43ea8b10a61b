#include "cloud/model_store.hpp"

#include <algorithm>
#include <charconv>
#include <filesystem>
#include <fstream>
#include <iterator>

#include <nlohmann/json.hpp>

#include "core/log.hpp"
#include "modelpkg/index.hpp"
#include "modelpkg/pack.hpp"

namespace cairn::cloud {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

net::HttpResponse reply(int status, const json& body) {
  net::HttpResponse r;
  r.status = status;
  r.body = body.dump(-1, ' ', false, json::error_handler_t::replace);
  return r;
}

// IoT Hub's error shape, as the rest of the REST API answers.
net::HttpResponse error(int status, const std::string& code, const std::string& text) {
  return reply(status, json{{"Message", "ErrorCode:" + code + ";" + text}});
}

net::HttpResponse from_error(const Error& e) {
  switch (e.code) {
    case errc::invalid_argument:
      return error(400, "ArgumentInvalid", e.message);
    case errc::not_found:
      return error(404, "NotFound", e.message);
    case errc::limit_exceeded:
      return error(413, "RequestEntityTooLarge", e.message);
    case errc::already_exists:
      return error(409, "Conflict", e.message);
    default:
      log::error("cloud", "model store: {}", e.to_string());
      return error(500, "ServerError", "internal error (see the cairn-cloud log)");
  }
}

// A path below /models/ that names a file of a publish directory: 1-3 segments of
// [A-Za-z0-9._-], none starting with '.'.
bool servable(const std::string& rel) {
  if (rel.empty() || rel.size() > 512) return false;
  std::size_t segments = 0, start = 0;
  for (;;) {
    auto slash = rel.find('/', start);
    auto part = std::string_view(rel).substr(start, slash - start);
    if (!modelpkg::check_label(part, "path")) return false;
    ++segments;
    if (slash == std::string::npos) break;
    start = slash + 1;
  }
  return segments <= 3;
}

}  // namespace

ModelStore::ModelStore(ModelStoreConfig config) : config_(std::move(config)) {}

Result<std::unique_ptr<ModelStore>> ModelStore::open(ModelStoreConfig config) {
  std::error_code ec;
  fs::create_directories(config.dir + "/.uploads", ec);
  if (ec) {
    return make_error(errc::io_error, "cannot create " + config.dir + "/.uploads: " + ec.message());
  }
  std::unique_ptr<ModelStore> store(new ModelStore(std::move(config)));
  store->worker_ = std::thread([s = store.get()] { s->run_worker(); });
  return store;
}

ModelStore::~ModelStore() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (worker_.joinable()) worker_.join();
}

void ModelStore::post(std::function<void()> job) {
  {
    std::lock_guard lock(mu_);
    jobs_.push_back(std::move(job));
  }
  cv_.notify_one();
}

void ModelStore::run_worker() {
  for (;;) {
    std::function<void()> job;
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [&] { return stopping_ || !jobs_.empty(); });
      if (jobs_.empty()) return;  // stopping, and nothing left to answer
      job = std::move(jobs_.front());
      jobs_.pop_front();
    }
    try {
      job();
    } catch (const std::exception& e) {
      // A job answers its request itself; one that throws has a bug. Log it and go on.
      log::error("cloud", "model store job failed: {}", e.what());
    }
  }
}

void ModelStore::serve_file(const net::HttpRequest& request, net::HttpRespond respond) {
  if (request.method != "GET" && request.method != "HEAD") {
    auto r = error(405, "MethodNotAllowed", "use GET");
    r.headers.emplace_back("Allow", "GET, HEAD");
    return respond(std::move(r));
  }
  std::string rel = net::http_path(request.target).substr(std::string("/models/").size());
  if (!servable(rel)) return respond(error(404, "NotFound", "no such model file"));
  std::string path = config_.dir + "/" + rel;
  std::error_code ec;
  auto size = fs::file_size(path, ec);
  if (ec || !fs::is_regular_file(path, ec)) {
    return respond(error(404, "NotFound", "no such model file: " + rel));
  }
  if (size > config_.max_served_file_bytes) {
    return respond(error(413, "RequestEntityTooLarge", "file too large to serve"));
  }
  std::ifstream in(path, std::ios::binary);
  net::HttpResponse r;
  r.content_type = "application/octet-stream";
  r.body.assign(std::istreambuf_iterator<char>(in), {});
  if (!in.good() && !in.eof()) return respond(error(500, "ServerError", "cannot read file"));
  respond(std::move(r));
}

void ModelStore::handle_api(const net::HttpRequest& request, const std::vector<std::string>& seg,
                            net::HttpRespond respond) {
  const std::size_t n = seg.size();
  if (n == 2) {
    if (request.method != "GET") return respond(error(405, "MethodNotAllowed", "use GET"));
    return post([this, respond] { respond(list()); });
  }
  if (n == 4 && seg[2] == "uploads") {
    if (request.method != "PUT") return respond(error(405, "MethodNotAllowed", "use PUT"));
    return post([this, id = seg[3], target = request.target, body = request.body, respond] {
      respond(append(id, target, body));
    });
  }
  if (n == 4) {
    if (request.method != "POST") return respond(error(405, "MethodNotAllowed", "use POST"));
    return post([this, name = seg[2], version = seg[3],
                 upload = net::http_query_param(request.target, "upload"),
                 respond] { respond(publish(name, version, upload)); });
  }
  respond(error(404, "NotFound", "no such resource"));
}

net::HttpResponse ModelStore::list() {
  json out = json::array();
  std::error_code ec;
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(config_.dir, ec)) {
    if (e.path().extension() == ".cidx") files.push_back(e.path());
  }
  std::sort(files.begin(), files.end());
  for (const auto& f : files) {
    std::ifstream in(f, std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), {});
    auto idx = modelpkg::decode_index(bytes);
    if (!idx) continue;
    std::error_code sec;
    out.push_back({{"name", idx->name},
                   {"version", idx->version},
                   {"format", idx->format},
                   {"size", idx->size},
                   {"sha256", idx->sha256},
                   {"chunks", idx->chunks.size()},
                   {"signed", fs::exists(f.string() + ".sig", sec)},
                   {"index", "/models/" + f.filename().string()}});
  }
  return reply(200, out);
}

net::HttpResponse ModelStore::append(const std::string& id, const std::string& target,
                                     const std::string& body) {
  if (auto s = modelpkg::check_label(id, "upload id"); !s) return from_error(s.error());
  std::string offset_text = net::http_query_param(target, "offset");
  std::uint64_t offset = 0;
  auto [p, perr] =
      std::from_chars(offset_text.data(), offset_text.data() + offset_text.size(), offset);
  if (offset_text.empty() || perr != std::errc() || p != offset_text.data() + offset_text.size()) {
    return error(400, "ArgumentInvalid", "offset must be a non-negative integer");
  }
  std::string path = config_.dir + "/.uploads/" + id;
  std::error_code ec;
  std::uint64_t have = fs::exists(path, ec) ? fs::file_size(path, ec) : 0;
  if (offset == 0 && have == 0) {
    std::size_t uploads = 0;
    for (const auto& e : fs::directory_iterator(config_.dir + "/.uploads", ec)) {
      (void)e;
      ++uploads;
    }
    if (uploads >= config_.max_uploads) {
      return error(
          429, "ThrottlingException",
          "too many uploads in progress (max " + std::to_string(config_.max_uploads) + ")");
    }
  }
  if (offset != have && offset != 0) {
    return error(409, "Conflict",
                 "upload '" + id + "' holds " + std::to_string(have) + " bytes, not " +
                     std::to_string(offset));
  }
  if (offset + body.size() > config_.max_model_bytes) {
    fs::remove(path, ec);
    return error(413, "RequestEntityTooLarge",
                 "models are limited to " + std::to_string(config_.max_model_bytes) + " bytes");
  }
  std::ofstream out(
      path, offset == 0 ? std::ios::binary | std::ios::trunc : std::ios::binary | std::ios::app);
  out.write(body.data(), static_cast<std::streamsize>(body.size()));
  out.close();
  if (!out) return from_error(make_error(errc::io_error, "cannot write upload " + path));
  return reply(200, json{{"upload", id}, {"size", offset + body.size()}});
}

net::HttpResponse ModelStore::publish(const std::string& name, const std::string& version,
                                      const std::string& upload) {
  if (auto s = modelpkg::check_label(upload, "upload"); !s) return from_error(s.error());
  std::string path = config_.dir + "/.uploads/" + upload;
  std::error_code ec;
  if (!fs::exists(path, ec)) return error(404, "NotFound", "no upload '" + upload + "'");
  modelpkg::PackOptions options;
  options.name = name;
  options.version = version;
  options.out_dir = config_.dir;
  options.signing_key = config_.signing_key;
  auto packed = modelpkg::pack_model(path, options);
  fs::remove(path, ec);
  if (!packed) return from_error(packed.error());
  log::info("cloud",
            "model published: name={} version={} size={} chunks={} new_chunks={} "
            "deltas={}",
            name, version, packed->index.size, packed->chunks, packed->chunks_written,
            packed->deltas_written);
  return reply(200, json{{"name", name},
                         {"version", version},
                         {"size", packed->index.size},
                         {"sha256", packed->index.sha256},
                         {"chunks", packed->chunks},
                         {"chunks_written", packed->chunks_written},
                         {"deltas", packed->deltas_written},
                         {"index_bytes", packed->index_bytes},
                         {"index", "/models/" + modelpkg::index_file_name(name, version)}});
}

}  // namespace cairn::cloud
