#include "modelpkg/fetch.hpp"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <thread>
#include <tuple>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/crypto.hpp"
#include "core/files.hpp"
#include "core/log.hpp"
#include "modelpkg/delta.hpp"
#include "modelpkg/detail/sha256_stream.hpp"
#include "modelpkg/detail/url.hpp"
#include "modelpkg/detail/zstd.hpp"
#include "modelpkg/index.hpp"
#include "modelpkg/signing.hpp"
#include "net/http.hpp"
#include "net/http_session.hpp"
#include <fcntl.h>
#include <unistd.h>

namespace cairn::modelpkg {

namespace fs = std::filesystem;

namespace {

constexpr std::string_view kLog = "modelpkg";

std::string store_chunk_path(const std::string& store, const std::string& hash) {
  return store + "/" + chunk_path(hash);
}
std::string store_index_path(const std::string& store, const std::string& sha256) {
  return store + "/indexes/" + sha256 + ".cidx";
}

bool store_has(const std::string& store, const ChunkRef& c) {
  std::error_code ec;
  auto size = fs::file_size(store_chunk_path(store, c.hash), ec);
  return !ec && size == c.size;
}

// A chunk from the store, checked against its hash. A damaged one is removed so the next fetch
// downloads it again.
Result<std::string> read_store_chunk(const std::string& store, const ChunkRef& c) {
  auto path = store_chunk_path(store, c.hash);
  auto data = read_file(path, kMaxChunkBytes);
  if (!data) return std::move(data).error();
  if (data->size() != c.size || crypto::sha256_hex(*data) != c.hash) {
    std::error_code ec;
    fs::remove(path, ec);
    return make_error(errc::corruption, "chunk store file " + path +
                                            " was damaged and has been removed; fetch again");
  }
  return data;
}

Status put_store_chunk(const std::string& store, const std::string& hash, std::string_view data) {
  auto path = store_chunk_path(store, hash);
  CAIRN_TRY(make_dirs(fs::path(path).parent_path().string()));
  return write_file_atomic(path, data, false);
}

// The kept connections of one worker: one per server (the index and its pieces usually share
// one).
using Sessions = std::map<std::string, net::HttpSession>;

// One download: a chunk, or a delta that yields the chunks of one segment.
struct Piece {
  bool is_delta = false;
  std::size_t chunk = 0;    // chunk pieces
  std::size_t segment = 0;  // delta pieces
  const ModelIndex* base = nullptr;
  // Segments of the base whose bytes, concatenated, the delta applies to (delta.hpp).
  std::vector<std::size_t> base_segments;
  std::uint64_t bytes = 0;  // expected transfer
  std::string url;
};

class Fetcher {
 public:
  Fetcher(const std::string& index_url, const std::string& store, const FetchOptions& options,
          const FetchProgressCallback& progress)
      : index_url_(index_url), store_(store), options_(options), progress_cb_(progress) {}

  Result<FetchSummary> run(const std::string& out_path);

 private:
  Result<std::string> get(Sessions& sessions, const std::string& url, std::size_t limit,
                          const std::string& what, bool* not_found = nullptr);
  Status fetch_chunk(Sessions& sessions, std::size_t c);
  Status fetch_delta(Sessions& sessions, const Piece& piece);
  Result<std::string> fetch_index(Sessions& sessions, bool& via_delta);
  Result<std::string> fetch_index_delta(Sessions& sessions);
  void report() {
    if (!progress_cb_) return;
    progress_cb_(progress_);
  }
  void add_downloaded(std::uint64_t n) {
    std::lock_guard lock(mu_);
    progress_.downloaded += n;
  }
  std::string chunk_url(std::size_t c) const {
    return detail::resolve_url(index_url_, chunk_path(index_.chunks[c].hash));
  }

  std::string index_url_;
  std::string store_;
  FetchOptions options_;
  FetchProgressCallback progress_cb_;
  std::atomic<std::size_t> requests_{0};
  std::atomic<std::size_t> connections_{0};
  ModelIndex index_;
  std::vector<std::uint64_t> offsets_;
  std::vector<std::size_t> starts_;
  std::vector<std::unique_ptr<ModelIndex>> bases_;

  std::mutex mu_;  // guards progress_ and the counters below
  FetchProgress progress_;
  std::size_t chunks_downloaded_ = 0;
  std::size_t deltas_applied_ = 0;
  std::uint64_t index_delta_bytes_ = 0;
};

Result<std::string> Fetcher::get(Sessions& sessions, const std::string& url, std::size_t limit,
                                 const std::string& what, bool* not_found) {
  auto parsed = detail::parse_http_url(url);
  if (!parsed) return std::move(parsed).error();
  parsed->target.ca_file = options_.ca_file;
  parsed->target.verify = options_.verify_tls;
  net::HttpRequest req;
  req.method = "GET";
  req.target = parsed->target_path;
  Result<net::HttpResponse> res = make_error(errc::internal, "no request made");
  if (options_.keep_alive) {
    // One session per scheme, host and port ("[::1]:80" and "::1" + ":80" must not meet).
    std::string server = std::string(parsed->target.tls ? "https://" : "http://") + "[" +
                         parsed->target.host + "]:" + std::to_string(parsed->target.port);
    auto it = sessions.find(server);
    if (it == sessions.end()) {
      it = sessions.emplace(server, net::HttpSession(parsed->target, options_.timeout_secs)).first;
    }
    const std::size_t before = it->second.connections_opened();
    res = it->second.request(req);
    connections_ += it->second.connections_opened() - before;
  } else {
    res = net::http_request(parsed->target, req, options_.timeout_secs);
    connections_ += 1;
  }
  requests_ += 1;
  if (!res) {
    return make_error(res.error().code, what + " (" + url + "): " + res.error().message);
  }
  if (res->status == 404 && not_found) {
    *not_found = true;
    return make_error(errc::not_found, what + " (" + url + "): HTTP 404");
  }
  if (res->status != 200) {
    return make_error(res->status == 404 ? errc::not_found : errc::unavailable,
                      what + " (" + url + "): HTTP " + std::to_string(res->status));
  }
  if (res->body.size() > limit) {
    return make_error(errc::limit_exceeded,
                      what + " (" + url + ") is larger than " + std::to_string(limit) + " bytes");
  }
  add_downloaded(res->body.size());
  return std::move(res->body);
}

Status Fetcher::fetch_chunk(Sessions& sessions, std::size_t c) {
  const ChunkRef& ref = index_.chunks[c];
  if (store_has(store_, ref)) return {};  // another segment had the same chunk
  auto url = chunk_url(c);
  auto body = get(sessions, url, kMaxChunkBytes + 1024, "chunk " + ref.hash);
  if (!body) return std::move(body).error();
  if (body->size() != ref.stored_size) {
    return make_error(errc::corruption,
                      "chunk " + ref.hash + " (" + url + ") is " + std::to_string(body->size()) +
                          " bytes, the index says " + std::to_string(ref.stored_size));
  }
  std::string data;
  if (ref.compressed) {
    auto d = detail::zstd_decompress(*body, static_cast<std::size_t>(ref.size));
    if (!d) {
      return make_error(errc::corruption, "chunk " + ref.hash + " (" + url +
                                              ") does not decode: " + d.error().message);
    }
    data = std::move(*d);
  } else {
    data = std::move(*body);
  }
  if (data.size() != ref.size || crypto::sha256_hex(data) != ref.hash) {
    return make_error(errc::corruption,
                      "chunk " + ref.hash + " (" + url + ") does not match its SHA-256");
  }
  CAIRN_TRY(put_store_chunk(store_, ref.hash, data));
  std::lock_guard lock(mu_);
  ++chunks_downloaded_;
  return {};
}

Status Fetcher::fetch_delta(Sessions& sessions, const Piece& piece) {
  const ModelIndex& base = *piece.base;
  auto base_starts = base.segment_starts();
  std::string old_bytes;
  for (std::size_t b : piece.base_segments) {
    for (std::size_t c = base_starts[b]; c < base_starts[b + 1]; ++c) {
      auto chunk = read_store_chunk(store_, base.chunks[c]);
      if (!chunk) return std::move(chunk).error();
      old_bytes += *chunk;
    }
  }
  auto body = get(sessions, piece.url, kMaxIndexJsonBytes,
                  "delta for segment '" + index_.segments[piece.segment].key + "'");
  if (!body) return std::move(body).error();
  auto result = apply_delta(
      old_bytes, *body, offsets_[starts_[piece.segment + 1]] - offsets_[starts_[piece.segment]]);
  if (!result) {
    return make_error(errc::corruption, "delta " + piece.url + ": " + result.error().message);
  }
  std::size_t pos = 0;
  std::vector<std::pair<std::string, std::string_view>> outputs;
  for (std::size_t c = starts_[piece.segment]; c < starts_[piece.segment + 1]; ++c) {
    const ChunkRef& ref = index_.chunks[c];
    if (pos + ref.size > result->size()) {
      return make_error(errc::corruption, "delta " + piece.url + " yields too few bytes");
    }
    std::string_view part =
        std::string_view(*result).substr(pos, static_cast<std::size_t>(ref.size));
    if (crypto::sha256_hex(part) != ref.hash) {
      return make_error(errc::corruption,
                        "delta " + piece.url + " does not reproduce chunk " + ref.hash);
    }
    outputs.emplace_back(ref.hash, part);
    pos += static_cast<std::size_t>(ref.size);
  }
  for (const auto& [hash, part] : outputs) CAIRN_TRY(put_store_chunk(store_, hash, part));
  std::lock_guard lock(mu_);
  ++deltas_applied_;
  return {};
}

// The index as published: through a delta against an index the store holds when the publisher
// wrote one (index.hpp), else whole. A delta that is missing or does not make the index it names
// costs a request and nothing else.
Result<std::string> Fetcher::fetch_index(Sessions& sessions, bool& via_delta) {
  via_delta = false;
  if (options_.use_deltas) {
    auto made = fetch_index_delta(sessions);
    if (made) {
      via_delta = true;
      return made;
    }
  }
  return get(sessions, index_url_, kMaxIndexBytes, "model index");
}

Result<std::string> Fetcher::fetch_index_delta(Sessions& sessions) {
  auto parsed = detail::parse_http_url(index_url_);
  if (!parsed) return std::move(parsed).error();
  std::string file = parsed->target_path.substr(0, parsed->target_path.find('?'));
  file = file.substr(file.rfind('/') + 1);
  if (!file.ends_with(".cidx")) return make_error(errc::not_found, "no index file name");
  // Held indexes of the same name (the URL's file starts with it), newest first.
  std::vector<std::pair<fs::file_time_type, std::string>> held;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(store_ + "/indexes", ec)) {
    if (e.path().extension() != ".cidx") continue;
    std::error_code tec;
    held.emplace_back(fs::last_write_time(e.path(), tec), e.path().string());
  }
  std::sort(held.begin(), held.end(), std::greater<>());
  std::size_t tried = 0;
  for (const auto& [when, path] : held) {
    if (tried >= options_.keep_indexes) break;
    auto old_cidx = read_file(path, kMaxIndexBytes);
    if (!old_cidx) continue;
    auto old_index = decode_index(*old_cidx);
    if (!old_index) continue;
    const std::string& name = old_index->name;
    const char separator = name.find('-') == std::string::npos ? '-' : '~';
    if (!file.starts_with(name + separator)) continue;
    ++tried;
    auto url =
        detail::resolve_url(index_url_, index_delta_path(file, crypto::sha256_hex(*old_cidx)));
    bool missing = false;
    auto body = get(sessions, url, kMaxIndexBytes, "index delta", &missing);
    if (!body) {
      if (!missing) log::warn(kLog, "{}; fetching the index whole", body.error().message);
      continue;
    }
    auto made = apply_index_delta(*old_cidx, *body);
    if (!made) {
      log::warn(kLog, "index delta {} not usable ({}); fetching the index whole", url,
                made.error().message);
      return std::move(made).error();
    }
    index_delta_bytes_ = body->size();
    return made;
  }
  return make_error(errc::not_found, "no index delta for the indexes held");
}

Result<FetchSummary> Fetcher::run(const std::string& out_path) {
  if (auto endpoint = detail::parse_http_url(index_url_); !endpoint) {
    return std::move(endpoint).error();
  }
  CAIRN_TRY(make_dirs(store_ + "/indexes"));
  CAIRN_TRY(make_dirs(store_ + "/chunks"));

  // The index's connection is kept for the first worker: usually the same server.
  Sessions first_sessions;
  bool index_via_delta = false;
  auto cidx = fetch_index(first_sessions, index_via_delta);
  if (!cidx) return std::move(cidx).error();
  if (!options_.public_key.empty()) {
    bool missing = false;
    auto sig = get(first_sessions, index_url_ + ".sig", 4096, "index signature", &missing);
    if (!sig) {
      if (missing) {
        return make_error(errc::unauthorized, "model index " + index_url_ +
                                                  " is not signed (no .sig) and this device "
                                                  "requires signed models");
      }
      return std::move(sig).error();
    }
    auto verified = verify_signature(options_.public_key, *cidx, *sig);
    if (!verified && index_via_delta) {
      // What the delta made is checked like the index itself; failing that, the index as
      // published gets its own check.
      log::warn(kLog, "index {} made from a delta fails its signature; fetching it whole",
                index_url_);
      cidx = get(first_sessions, index_url_, kMaxIndexBytes, "model index");
      if (!cidx) return std::move(cidx).error();
      index_via_delta = false;
      index_delta_bytes_ = 0;
      verified = verify_signature(options_.public_key, *cidx, *sig);
    }
    if (!verified) {
      return make_error(verified.error().code,
                        "model index " + index_url_ + ": " + verified.error().message);
    }
  }
  auto decoded = decode_index(*cidx);
  if (!decoded) {
    return make_error(decoded.error().code, index_url_ + ": " + decoded.error().message);
  }
  index_ = std::move(*decoded);
  offsets_ = index_.chunk_offsets();
  starts_ = index_.segment_starts();

  FetchSummary summary;
  summary.name = index_.name;
  summary.version = index_.version;
  summary.sha256 = index_.sha256;
  summary.needed = index_.size;
  summary.index_bytes = cidx->size();
  summary.index_delta_bytes = index_delta_bytes_;
  summary.chunks = index_.chunks.size();
  {
    std::set<std::string> unique;
    summary.full_download = cidx->size();
    for (const auto& c : index_.chunks) {
      if (unique.insert(c.hash).second) summary.full_download += c.stored_size;
    }
  }

  // Plan: which chunks are missing, and which segments come cheaper as a delta.
  std::vector<bool> have(index_.chunks.size());
  for (std::size_t c = 0; c < index_.chunks.size(); ++c) {
    have[c] = store_has(store_, index_.chunks[c]);
    if (have[c]) {
      progress_.reused += index_.chunks[c].size;
      ++summary.chunks_reused;
    }
  }
  progress_.needed = index_.size;

  // Best delta per segment, from bases whose index and chunks the store holds.
  std::map<std::size_t, Piece> delta_for;
  if (options_.use_deltas) {
    for (const auto& set : index_.deltas) {
      auto base_bytes = read_file(store_index_path(store_, set.from_sha256), kMaxIndexBytes);
      if (!base_bytes) continue;
      auto base = decode_index(*base_bytes);
      if (!base) continue;
      bases_.push_back(std::make_unique<ModelIndex>(std::move(*base)));
      const ModelIndex& b = *bases_.back();
      auto b_starts = b.segment_starts();
      auto b_offsets = b.chunk_offsets();
      std::map<std::string, std::size_t> by_key;
      for (std::size_t s = 0; s < b.segments.size(); ++s) by_key[b.segments[s].key] = s;
      for (const auto& e : set.entries) {
        const std::string& key = index_.segments[e.segment].key;
        std::vector<std::size_t> base_segments;
        if (e.kind == DeltaKind::prefix) {
          base_segments = b.prefix_segments(key);
          if (base_segments.empty()) continue;
        } else {
          auto it = by_key.find(key);
          if (it == by_key.end()) continue;
          std::size_t bs = it->second;
          if (b_offsets[b_starts[bs + 1]] - b_offsets[b_starts[bs]] !=
              offsets_[starts_[e.segment + 1]] - offsets_[starts_[e.segment]]) {
            continue;
          }
          base_segments.push_back(bs);
        }
        bool base_present = true;
        for (std::size_t bs : base_segments) {
          for (std::size_t c = b_starts[bs]; base_present && c < b_starts[bs + 1]; ++c) {
            base_present = store_has(store_, b.chunks[c]);
          }
        }
        if (!base_present) continue;
        auto cur = delta_for.find(e.segment);
        if (cur != delta_for.end() && cur->second.bytes <= e.size) continue;
        Piece p;
        p.is_delta = true;
        p.segment = e.segment;
        p.base = &b;
        p.base_segments = std::move(base_segments);
        p.bytes = e.size;
        p.url = detail::resolve_url(index_url_, delta_path(index_.sha256, b.sha256, e.segment));
        delta_for[e.segment] = std::move(p);
      }
    }
  }
  std::vector<Piece> pieces;
  std::set<std::string> planned;
  for (std::size_t s = 0; s < index_.segments.size(); ++s) {
    std::uint64_t missing_bytes = 0;
    std::vector<std::size_t> missing;
    for (std::size_t c = starts_[s]; c < starts_[s + 1]; ++c) {
      if (have[c] || planned.count(index_.chunks[c].hash)) continue;
      missing.push_back(c);
      missing_bytes += index_.chunks[c].stored_size;
    }
    if (missing.empty()) continue;
    auto d = delta_for.find(s);
    if (d != delta_for.end() && d->second.bytes < missing_bytes) {
      pieces.push_back(d->second);
    } else {
      for (std::size_t c : missing) {
        Piece p;
        p.chunk = c;
        p.bytes = index_.chunks[c].stored_size;
        pieces.push_back(std::move(p));
      }
    }
    for (std::size_t c : missing) planned.insert(index_.chunks[c].hash);
  }
  progress_.pieces_total = pieces.size();
  report();

  // Download with `parallel` workers, each on its own kept connection.
  std::atomic<std::size_t> next{0};
  std::atomic<bool> failed{false};
  std::mutex error_mu;
  std::optional<Error> first_error;
  auto worker = [&](Sessions* given) {
    Sessions own;
    Sessions& sessions = given ? *given : own;
    while (!failed) {
      std::size_t i = next++;
      if (i >= pieces.size()) break;
      const Piece& p = pieces[i];
      Status s;
      if (p.is_delta) {
        s = fetch_delta(sessions, p);
        if (!s) {
          // The chunk path is always the fallback.
          log::warn(kLog, "delta not usable, downloading chunks instead: {}", s.error().message);
          s = Status{};
          for (std::size_t c = starts_[p.segment]; s && c < starts_[p.segment + 1]; ++c) {
            s = fetch_chunk(sessions, c);
          }
        }
      } else {
        s = fetch_chunk(sessions, p.chunk);
      }
      if (!s) {
        std::lock_guard lock(error_mu);
        if (!first_error) first_error = s.error();
        failed = true;
        break;
      }
      std::lock_guard lock(mu_);
      ++progress_.pieces_done;
      report();
    }
  };
  std::size_t workers = std::clamp<std::size_t>(options_.parallel, 1, 64);
  workers = std::min(workers, std::max<std::size_t>(pieces.size(), 1));
  if (!pieces.empty()) {
    std::vector<std::thread> threads;
    for (std::size_t w = 0; w < workers; ++w) {
      threads.emplace_back(worker, w == 0 ? &first_sessions : nullptr);
    }
    for (auto& t : threads) t.join();
  }
  summary.requests = requests_;
  summary.connections = connections_;
  if (first_error) return *first_error;

  // Assemble into a temporary file beside the output, check, then rename over it.
  fs::path out(out_path);
  std::string dir = out.parent_path().empty() ? "." : out.parent_path().string();
  std::string tmp = dir + "/." + out.filename().string() + ".part-" +
                    crypto::sha256_hex(crypto::random_bytes(8)).substr(0, 12);
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) {
    return make_error(errc::io_error, "cannot create " + tmp + ": " + std::strerror(errno));
  }
  auto abandon = [&](Error e) -> Error {
    ::close(fd);
    ::unlink(tmp.c_str());
    return e;
  };
  detail::Sha256Stream hash;
  for (const auto& ref : index_.chunks) {
    auto data = read_store_chunk(store_, ref);
    if (!data) return abandon(std::move(data).error());
    hash.update(*data);
    std::size_t done = 0;
    while (done < data->size()) {
      ssize_t n = ::write(fd, data->data() + done, data->size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        return abandon(
            make_error(errc::io_error, "cannot write " + tmp + ": " + std::strerror(errno)));
      }
      done += static_cast<std::size_t>(n);
    }
  }
  auto got = hash.hex();
  if (got != index_.sha256) {
    return abandon(make_error(errc::corruption,
                              "assembled file has SHA-256 " + got + ", the index at " + index_url_ +
                                  " says " + index_.sha256 + "; " + out_path + " left unchanged"));
  }
  if (::fsync(fd) != 0) {
    return abandon(make_error(errc::io_error, "cannot fsync " + tmp + ": " + std::strerror(errno)));
  }
  ::close(fd);
  if (::rename(tmp.c_str(), out_path.c_str()) != 0) {
    auto e = make_error(errc::io_error,
                        "cannot rename " + tmp + " to " + out_path + ": " + std::strerror(errno));
    ::unlink(tmp.c_str());
    return e;
  }
  if (int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }

  // Keep the index: later versions can send deltas against this one.
  CAIRN_TRY(write_file_atomic(store_index_path(store_, index_.sha256), *cidx, false));
  if (auto s = trim_chunk_store(store_, options_.store_max_bytes, options_.keep_indexes); !s) {
    log::warn(kLog, "chunk store not trimmed: {}", s.error().message);
  }

  summary.reused = progress_.reused;
  summary.downloaded = progress_.downloaded;
  summary.saved =
      summary.full_download > summary.downloaded ? summary.full_download - summary.downloaded : 0;
  summary.chunks_downloaded = chunks_downloaded_;
  summary.deltas_applied = deltas_applied_;
  {
    std::lock_guard lock(mu_);
    progress_.saved = summary.saved;
    report();
  }
  return summary;
}

}  // namespace

std::string FetchSummary::to_json() const {
  nlohmann::json j{{"name", name},
                   {"version", version},
                   {"sha256", sha256},
                   {"needed", needed},
                   {"reused", reused},
                   {"downloaded", downloaded},
                   {"saved", saved},
                   {"full_download", full_download},
                   {"index_bytes", index_bytes},
                   {"index_delta_bytes", index_delta_bytes},
                   {"chunks", chunks},
                   {"chunks_reused", chunks_reused},
                   {"chunks_downloaded", chunks_downloaded},
                   {"deltas_applied", deltas_applied},
                   {"requests", requests},
                   {"connections", connections}};
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

Result<FetchSummary> fetch_model(const std::string& index_url, const std::string& out_path,
                                 const std::string& store_dir, const FetchOptions& options,
                                 const FetchProgressCallback& progress) {
  if (out_path.empty()) return make_error(errc::invalid_argument, "no output file");
  if (store_dir.empty()) return make_error(errc::invalid_argument, "no chunk store directory");
  Fetcher fetcher(index_url, store_dir, options, progress);
  return fetcher.run(out_path);
}

Status trim_chunk_store(const std::string& store_dir, std::uint64_t max_bytes,
                        std::size_t keep_indexes) {
  std::error_code ec;
  // Newest indexes first; older ones go.
  std::vector<std::pair<fs::file_time_type, fs::path>> indexes;
  for (const auto& e : fs::directory_iterator(store_dir + "/indexes", ec)) {
    if (e.path().extension() == ".cidx") {
      std::error_code tec;
      indexes.emplace_back(fs::last_write_time(e.path(), tec), e.path());
    }
  }
  std::sort(indexes.begin(), indexes.end(),
            [](const auto& a, const auto& b) { return a.first > b.first; });
  std::set<std::string> referenced;
  for (std::size_t i = 0; i < indexes.size(); ++i) {
    if (i >= keep_indexes) {
      fs::remove(indexes[i].second, ec);
      continue;
    }
    auto bytes = read_file(indexes[i].second.string(), kMaxIndexBytes);
    if (!bytes) continue;
    auto idx = decode_index(*bytes);
    if (!idx) continue;
    for (const auto& c : idx->chunks) referenced.insert(c.hash);
  }
  if (max_bytes == 0) return {};
  std::uint64_t total = 0;
  std::vector<std::tuple<fs::file_time_type, fs::path, std::uint64_t>> candidates;
  for (const auto& e : fs::recursive_directory_iterator(store_dir + "/chunks", ec)) {
    if (!e.is_regular_file()) continue;
    std::error_code sec;
    auto size = e.file_size(sec);
    if (sec) continue;
    total += size;
    auto name = e.path().filename().string();
    if (!referenced.count(name)) {
      std::error_code tec;
      candidates.emplace_back(fs::last_write_time(e.path(), tec), e.path(), size);
    }
  }
  if (ec)
    return make_error(errc::io_error, "cannot list " + store_dir + "/chunks: " + ec.message());
  std::sort(candidates.begin(), candidates.end(),
            [](const auto& a, const auto& b) { return std::get<0>(a) < std::get<0>(b); });
  for (const auto& [when, path, size] : candidates) {
    if (total <= max_bytes) break;
    std::error_code rec;
    if (fs::remove(path, rec)) total -= size;
  }
  if (total > max_bytes) {
    log::warn(kLog, "chunk store {} holds {} bytes of referenced chunks, over its cap of {}",
              store_dir, total, max_bytes);
  }
  return {};
}

}  // namespace cairn::modelpkg
