#include "cloud/model_store.hpp"

#include <algorithm>
#include <filesystem>
#include <map>
#include <set>
#include <tuple>
#include <vector>

#include "cloud/ids.hpp"
#include "core/crypto.hpp"
#include "core/files.hpp"
#include "core/log.hpp"
#include "core/thread_name.hpp"
#include "modelpkg/detail/zstd.hpp"
#include "modelpkg/index.hpp"
#include "modelpkg/pack.hpp"

namespace cairn::cloud {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr std::string_view kLog = "models";

bool is_hex_hash(std::string_view s) {
  return s.size() == 64 && std::all_of(s.begin(), s.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

// A path segment of a published file: the characters of names and versions (and '~', which
// index file names use as a separator), no leading '.' (so neither ".." nor a temporary file).
bool plain_segment(std::string_view s) {
  return !s.empty() && s.front() != '.' && std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-' || c == '~';
  });
}

// Calls f(root, entry) for each regular file below DIR/chunks and DIR/deltas. Either root may
// be a symlink (to another disk): the roots are followed, links below them are not.
template <typename F>
std::error_code for_each_stored_file(const std::string& dir, const F& f) {
  std::error_code first_error;
  for (const char* top : {"chunks", "deltas"}) {
    const fs::path root = fs::path(dir) / top;
    std::error_code ec;
    if (!fs::exists(root, ec)) continue;
    for (auto it = fs::recursive_directory_iterator(root, ec);
         !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
      std::error_code fec;
      if (it->is_regular_file(fec)) f(top, root, it->path());
    }
    if (ec && !first_error) first_error = ec;
  }
  return first_error;
}

// Calls f(path, index) for each index file in DIR (NAME-VERSION.cidx, not a temporary file),
// with the read or decode error when it has none, until f returns false. Returns the listing's
// error; an I/O error part way through ends the walk instead of throwing.
template <typename F>
std::error_code for_each_index_file(const std::string& dir, const F& f) {
  std::error_code ec;
  for (auto it = fs::directory_iterator(dir, ec); !ec && it != fs::directory_iterator();
       it.increment(ec)) {
    const auto file = it->path().filename().string();
    if (!file.ends_with(".cidx") || file.starts_with(".")) continue;
    auto bytes = read_file(it->path().string(), modelpkg::kMaxIndexBytes);
    if (!f(it->path(), bytes ? modelpkg::decode_index(*bytes)
                             : Result<modelpkg::ModelIndex>(std::move(bytes).error()))) {
      break;
    }
  }
  return ec;
}

std::vector<std::string_view> split(std::string_view path) {
  std::vector<std::string_view> out;
  while (true) {
    auto slash = path.find('/');
    out.push_back(path.substr(0, slash));
    if (slash == std::string_view::npos) return out;
    path.remove_prefix(slash + 1);
  }
}

json describe(const modelpkg::ModelIndex& idx) {
  std::size_t deltas = 0;
  for (const auto& set : idx.deltas) deltas += set.entries.size();
  return {{"name", idx.name},
          {"version", idx.version},
          {"size", idx.size},
          {"sha256", idx.sha256},
          {"chunks", idx.chunks.size()},
          {"deltas", deltas},
          {"index", "models/" + modelpkg::index_file_name(idx.name, idx.version)}};
}

}  // namespace

ModelStore::ModelStore(ModelStoreOptions options) : options_(std::move(options)) {}

Result<std::unique_ptr<ModelStore>> ModelStore::open(ModelStoreOptions options) {
  if (options.dir.empty()) return make_error(errc::invalid_argument, "no model store directory");
  CAIRN_TRY(make_dirs(options.dir + "/chunks"));
  std::unique_ptr<ModelStore> store(new ModelStore(std::move(options)));
  store->migrate_names();
  std::uint64_t used = 0;
  auto count = [&used](const fs::path& path) {
    std::error_code ec;
    if (path.filename().string().starts_with(".")) {
      // A write a crash interrupted (modelpkg's temporary files start with '.').
      fs::remove(path, ec);
      return;
    }
    const auto size = fs::file_size(path, ec);
    if (!ec) used += size;
  };
  std::error_code ec;
  for (auto it = fs::directory_iterator(store->options_.dir, ec);
       !ec && it != fs::directory_iterator(); it.increment(ec)) {
    std::error_code fec;
    if (it->is_regular_file(fec)) count(it->path());
  }
  if (!ec) {
    ec = for_each_stored_file(store->options_.dir, [&](std::string_view, const fs::path&,
                                                       const fs::path& path) { count(path); });
  }
  if (ec) {
    return make_error(errc::io_error,
                      "cannot read the model store " + store->options_.dir + ": " + ec.message());
  }
  store->used_bytes_ = used;
  // Chunks of pushes that never committed, deltas of removed versions a crash left.
  auto swept = store->sweep_orphans();
  if (swept["freedBytes"].get<std::uint64_t>() > 0) {
    log::info(kLog, "model store: removed {} orphan chunks and {} deltas ({} bytes)",
              swept["removedChunks"].get<std::size_t>(), swept["removedDeltas"].get<std::size_t>(),
              swept["freedBytes"].get<std::uint64_t>());
  }
  store->thread_ = std::thread([s = store.get()] { s->run(); });
  log::info(kLog, "model store {}: {} bytes of {}", store->options_.dir, used,
            store->options_.max_store_bytes);
  return store;
}

void ModelStore::migrate_names() {
  // Collected first: files are renamed below, which a directory walk must not see midway.
  std::vector<std::pair<fs::path, modelpkg::ModelIndex>> indexes;
  (void)for_each_index_file(options_.dir,
                            [&](const fs::path& path, Result<modelpkg::ModelIndex> idx) {
                              if (idx) indexes.emplace_back(path, std::move(*idx));
                              return true;
                            });
  std::vector<fs::path> signatures;
  std::error_code ec;
  for (auto it = fs::directory_iterator(options_.dir, ec); !ec && it != fs::directory_iterator();
       it.increment(ec)) {
    const auto file = it->path().filename().string();
    if (!file.starts_with(".") && file.ends_with(".cidx.sig")) signatures.push_back(it->path());
  }
  for (const auto& [path, idx] : indexes) {
    const auto file = path.filename().string();
    const auto wanted = modelpkg::index_file_name(idx.name, idx.version);
    if (file == wanted || file != modelpkg::legacy_index_file_name(idx.name, idx.version)) {
      continue;
    }
    const fs::path target = fs::path(options_.dir) / wanted;
    std::error_code eec, sec, iec;
    if (fs::exists(target, eec)) {
      log::warn(kLog, "{} holds {} version {}, whose index is {}: both kept, rename by hand", file,
                idx.name, idx.version, wanted);
      continue;
    }
    // The signature first: a crash between the two renames leaves the index under its old name
    // (renamed at the next start) rather than a signature beside no index (deleted below).
    fs::path old_sig = path;
    old_sig += ".sig";
    fs::path new_sig = target;
    new_sig += ".sig";
    if (fs::exists(old_sig, sec)) fs::rename(old_sig, new_sig, sec);
    fs::rename(path, target, iec);
    if (sec || iec) {
      log::warn(kLog, "cannot rename {} to {}: {}", file, wanted, (iec ? iec : sec).message());
    } else {
      log::info(kLog, "renamed {} to {} ({} version {})", file, wanted, idx.name, idx.version);
    }
  }
  // A signature whose index is gone would be inherited by a re-push of that version.
  for (const auto& sig : signatures) {
    fs::path index = sig;
    index.replace_extension();
    std::error_code iec, rec;
    if (fs::exists(sig, iec) && !fs::exists(index, iec) && !iec && fs::remove(sig, rec)) {
      log::info(kLog, "removed {}: its index is gone", sig.filename().string());
    }
  }
}

ModelStore::~ModelStore() {
  std::deque<Job> dropped;
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
    dropped.swap(jobs_);
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  for (auto& job : dropped) job.done(make_error(errc::unavailable, "cairn-cloud is stopping"));
}

Status ModelStore::reserve(std::uint64_t bytes, std::string_view what) const {
  const auto used = used_bytes_.load();
  if (used + bytes > options_.max_store_bytes) {
    return make_error(errc::limit_exceeded,
                      "the model store is full (" + std::to_string(used) + " of " +
                          std::to_string(options_.max_store_bytes) + " bytes used; " +
                          std::string(what) + " needs " + std::to_string(bytes) +
                          "): raise cairn-cloud's --model-store-max-bytes or remove old versions");
  }
  return {};
}

Result<ModelStore::Checked> ModelStore::check_new(const std::string& name,
                                                  const std::string& version,
                                                  std::string_view cidx) const {
  CAIRN_TRY(modelpkg::check_label(name, "model name"));
  CAIRN_TRY(modelpkg::check_label(version, "model version"));
  auto decoded = modelpkg::decode_index(cidx);
  if (!decoded) {
    return make_error(errc::invalid_argument,
                      "the body is not a model index (.cidx): " + decoded.error().message);
  }
  Checked out;
  out.index = std::move(*decoded);
  const auto& idx = out.index;
  if (idx.name != name || idx.version != version) {
    return make_error(errc::invalid_argument, "the index is of " + idx.name + " version " +
                                                  idx.version + ", the path names " + name +
                                                  " version " + version);
  }
  if (idx.size > options_.max_model_bytes) {
    return make_error(errc::limit_exceeded, "the model is " + std::to_string(idx.size) +
                                                " bytes, over the store's " +
                                                std::to_string(options_.max_model_bytes) +
                                                " (cairn-cloud --model-max-bytes)");
  }
  const std::string file = modelpkg::index_file_name(name, version);
  if (auto existing = read_file(options_.dir + "/" + file, modelpkg::kMaxIndexBytes)) {
    auto old = modelpkg::decode_index(*existing);
    if (old && old->name == name && old->version == version && old->sha256 == idx.sha256) {
      out.existing = std::move(*old);
      out.existing_bytes = existing->size();
      return out;
    }
    if (old && (old->name != name || old->version != version)) {
      return make_error(errc::already_exists, file + " is taken by " + old->name + " version " +
                                                  old->version + ": choose another version");
    }
    return make_error(errc::already_exists,
                      name + " version " + version +
                          " is already in the store with other content, and versions are "
                          "immutable: push it as a new version");
  }
  return out;
}

Result<json> ModelStore::missing(const std::string& name, const std::string& version,
                                 std::string_view cidx) const {
  auto checked = check_new(name, version, cidx);
  if (!checked) return std::move(checked).error();
  json out = json::array();
  std::uint64_t bytes = 0;
  if (!checked->existing) {
    std::set<std::string> seen;
    // A chunk the store holds is touched, so the orphan sweep (which spares young files) does
    // not take it from under this push before its commit references it.
    std::lock_guard lock(chunk_mu_);
    for (const auto& c : checked->index.chunks) {
      if (!seen.insert(c.hash).second) continue;
      if (!touch_chunk(c.hash)) {
        out.push_back(c.hash);
        bytes += c.stored_size;
      }
    }
  }
  // Refused now rather than after the upload: a push that cannot fit leaves nothing behind.
  CAIRN_TRY(reserve(bytes, "this version's new chunks"));
  return json{{"missing", out}, {"missingBytes", bytes}, {"unchanged", !!checked->existing}};
}

Result<json> ModelStore::put_chunk(const std::string& hash, std::string_view body) {
  if (!is_hex_hash(hash)) {
    return make_error(errc::invalid_argument,
                      "a chunk is named by the SHA-256 of its bytes: 64 lowercase hex digits");
  }
  if (body.empty()) return make_error(errc::invalid_argument, "the chunk body is empty");
  const std::string path = options_.dir + "/" + modelpkg::chunk_path(hash);
  {
    std::lock_guard lock(chunk_mu_);
    std::error_code ec;
    if (auto size = fs::file_size(path, ec); !ec) {
      // Stored already (by another version, or by this push before `missing` was asked): it is
      // touched as `missing` does, so the sweep spares it until this push commits.
      if (!touch_chunk(hash)) log::warn(kLog, "cannot refresh the time of chunk {}", hash);
      return json{{"hash", hash}, {"storedBytes", size}, {"new", false}};
    }
  }
  // Stored compressed only when that is smaller, so a chunk file is raw exactly when its size
  // is the chunk's size (commit relies on it).
  std::string stored;
  if (crypto::sha256_hex(body) == hash) {
    stored = std::string(body);
  } else {
    auto decoded = modelpkg::detail::zstd_decompress(body, modelpkg::kMaxChunkBytes);
    if (!decoded || crypto::sha256_hex(*decoded) != hash) {
      return make_error(errc::invalid_argument,
                        "the body is not chunk " + hash +
                            ": neither its bytes nor their zstd decoding have that SHA-256 "
                            "(a truncated or damaged upload?)");
    }
    stored = body.size() < decoded->size() ? std::string(body) : std::move(*decoded);
  }
  CAIRN_TRY(reserve(stored.size(), "chunk " + hash));
  CAIRN_TRY(make_dirs(fs::path(path).parent_path().string()));
  CAIRN_TRY(write_file_atomic(path, stored, false));
  used_bytes_ += stored.size();
  return json{{"hash", hash}, {"storedBytes", stored.size()}, {"new", true}};
}

bool ModelStore::touch_chunk(const std::string& hash) const {
  std::error_code ec;
  fs::last_write_time(options_.dir + "/" + modelpkg::chunk_path(hash),
                      fs::file_time_type::clock::now(), ec);
  return !ec;
}

void ModelStore::commit(std::string name, std::string version, std::string cidx, CommitDone done) {
  queue(Job{
      JobKind::commit, std::move(name), std::move(version), std::move(cidx), {}, std::move(done)});
}

void ModelStore::remove(std::string name, std::string version, CommitDone done) {
  queue(Job{JobKind::remove, std::move(name), std::move(version), {}, {}, std::move(done)});
}

void ModelStore::put_signature(const std::string& name, const std::string& version,
                               std::string_view signature, std::string if_match, CommitDone done) {
  // Checked here, so a bad request takes no place in the queue.
  auto stored = [&]() -> Result<std::string> {
    CAIRN_TRY(modelpkg::check_label(name, "model name"));
    CAIRN_TRY(modelpkg::check_label(version, "model version"));
    std::string_view text = signature;
    while (!text.empty() && (text.back() == '\n' || text.back() == '\r' || text.back() == ' ')) {
      text.remove_suffix(1);
    }
    auto raw = crypto::base64_decode(text);
    if (!raw || raw->size() != 64) {
      return make_error(errc::invalid_argument,
                        "the body is not a signature: base64 of the 64 bytes of an Ed25519 "
                        "signature, as `cairn model pack --sign-key` writes it");
    }
    return std::string(text) + "\n";
  }();
  if (!stored) return done(std::move(stored).error());
  queue(
      Job{JobKind::sign, name, version, std::move(*stored), std::move(if_match), std::move(done)});
}

void ModelStore::queue(Job job) {
  {
    std::lock_guard lock(mu_);
    if (!stopping_ && jobs_.size() < options_.max_pending_commits) {
      jobs_.push_back(std::move(job));
      cv_.notify_one();
      return;
    }
  }
  job.done(make_error(errc::unavailable, "the model store is busy with " +
                                             std::to_string(options_.max_pending_commits) +
                                             " pushes: retry in a moment"));
}

void ModelStore::run() {
  name_this_thread("model-store");
  for (;;) {
    Job job;
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [&] { return stopping_ || !jobs_.empty(); });
      if (stopping_) return;
      job = std::move(jobs_.front());
      jobs_.pop_front();
    }
    Result<json> result = make_error(errc::internal, "commit did not run");
    try {
      switch (job.kind) {
        case JobKind::commit:
          result = commit_now(job.name, job.version, job.body);
          break;
        case JobKind::remove:
          result = remove_now(job.name, job.version);
          break;
        case JobKind::sign:
          result = sign_now(job.name, job.version, job.body, job.if_match);
          break;
      }
    } catch (const std::exception& e) {
      result = make_error(errc::internal, std::string("model commit failed: ") + e.what());
    }
    job.done(std::move(result));
  }
}

Result<json> ModelStore::commit_now(const std::string& name, const std::string& version,
                                    const std::string& cidx) {
  auto checked = check_new(name, version, cidx);
  if (!checked) return std::move(checked).error();
  if (checked->existing) {
    json out = describe(*checked->existing);
    out["indexBytes"] = checked->existing_bytes;
    out["deltaBytes"] = 0;
    out["unchanged"] = true;
    return out;
  }
  modelpkg::ModelIndex idx = std::move(checked->index);
  const std::string index_path = options_.dir + "/" + modelpkg::index_file_name(name, version);
  // The chunk files as stored here decide compression and stored size (another push may have
  // brought a chunk compressed differently); the client's deltas are never taken.
  std::size_t absent = 0;
  std::string first_absent;
  for (auto& c : idx.chunks) {
    std::error_code ec;
    auto size = fs::file_size(options_.dir + "/" + modelpkg::chunk_path(c.hash), ec);
    if (ec) {
      if (absent++ == 0) first_absent = c.hash;
      continue;
    }
    c.compressed = size != c.size;
    c.stored_size = size;
  }
  if (absent > 0) {
    return make_error(errc::invalid_argument,
                      std::to_string(absent) +
                          " chunks of the index are not in the store (first: " + first_absent +
                          "): upload them first");
  }
  CAIRN_TRY(modelpkg::verify_model(options_.dir, idx));
  CAIRN_TRY(reserve(cidx.size(), "the index"));
  auto deltas = modelpkg::add_deltas(options_.dir, idx, options_.zstd_level,
                                     options_.delta_versions, options_.max_delta_input_bytes);
  if (!deltas) return std::move(deltas).error();
  if (deltas->skipped > 0) {
    log::warn(kLog,
              "{} version {}: {} changed segments get no delta (over --model-delta-max-bytes "
              "{}); devices fetch their chunks",
              name, version, deltas->skipped, options_.max_delta_input_bytes);
  }
  used_bytes_ += deltas->bytes;
  auto encoded = modelpkg::encode_index(idx);
  if (!encoded) return std::move(encoded).error();
  // Devices holding an earlier version's index fetch this one as a delta against it.
  auto index_deltas =
      modelpkg::add_index_deltas(options_.dir, idx, *encoded, options_.delta_versions);
  if (!index_deltas) return std::move(index_deltas).error();
  used_bytes_ += index_deltas->bytes;
  // A signature already beside this file name signed other bytes (left by a crash, or by an
  // earlier release that wrote signatures outside the queue): the new version starts unsigned.
  {
    std::error_code sec, rec;
    const auto stale = fs::file_size(index_path + ".sig", sec);
    if (!sec && fs::remove(index_path + ".sig", rec)) {
      used_bytes_ -= std::min<std::uint64_t>(used_bytes_.load(), stale);
    }
    if (rec) return make_error(errc::io_error, "cannot remove a stale signature: " + rec.message());
  }
  // Written last and atomically: readers see no index or a complete one.
  CAIRN_TRY(write_file_atomic(index_path, *encoded, true));
  used_bytes_ += encoded->size();
  json out = describe(idx);
  out["indexBytes"] = encoded->size();
  out["deltaBytes"] = deltas->bytes;
  out["unchanged"] = false;
  log::info(kLog, "stored {} version {}: {} bytes, {} chunks, {} deltas ({} bytes)", name, version,
            idx.size, idx.chunks.size(), deltas->written, deltas->bytes);
  return out;
}

Result<std::string> ModelStore::read_index(const std::string& name,
                                           const std::string& version) const {
  const std::string file = modelpkg::index_file_name(name, version);
  auto bytes = read_file(options_.dir + "/" + file, modelpkg::kMaxIndexBytes);
  if (!bytes) {
    if (bytes.error().code == errc::not_found) {
      return make_error(errc::not_found, name + " version " + version + " is not in the store");
    }
    return std::move(bytes).error();
  }
  // Only a file put there by hand can hold another pair (names are injective): it is left
  // alone. One that does not decode is this pair's, damaged, and may still be removed.
  if (auto idx = modelpkg::decode_index(*bytes);
      idx && (idx->name != name || idx->version != version)) {
    return make_error(errc::already_exists, file + " holds " + idx->name + " version " +
                                                idx->version + ", not " + name + " version " +
                                                version + ": left alone");
  }
  return bytes;
}

Result<json> ModelStore::sign_now(const std::string& name, const std::string& version,
                                  const std::string& signature, const std::string& if_match) {
  auto index = read_index(name, version);
  if (!index) {
    if (index.error().code == errc::not_found) {
      return make_error(errc::not_found, index.error().message + ": push it first");
    }
    return std::move(index).error();
  }
  if (!etag_matches(if_match, crypto::sha256_hex(*index))) {
    return make_error(errc::cancelled,
                      "the stored index of " + name + " version " + version +
                          " is not the one signed (removed and pushed again since?): read it "
                          "back and sign it again");
  }
  const std::string sig_path =
      options_.dir + "/" + modelpkg::index_file_name(name, version) + ".sig";
  std::error_code sec;
  const auto old_size = fs::file_size(sig_path, sec);
  CAIRN_TRY(reserve(signature.size(), "the signature"));
  CAIRN_TRY(write_file_atomic(sig_path, signature, true));
  used_bytes_ += signature.size();
  if (!sec) used_bytes_ -= std::min<std::uint64_t>(used_bytes_.load(), old_size);
  log::info(kLog, "signature stored for {} version {}", name, version);
  return json{{"name", name}, {"version", version}, {"signatureBytes", signature.size()}};
}

Result<json> ModelStore::remove_now(const std::string& name, const std::string& version) {
  CAIRN_TRY(modelpkg::check_label(name, "model name"));
  CAIRN_TRY(modelpkg::check_label(version, "model version"));
  const std::string index_path = options_.dir + "/" + modelpkg::index_file_name(name, version);
  auto index = read_index(name, version);
  if (!index) return std::move(index).error();
  const std::uint64_t index_size = index->size();
  std::uint64_t freed = 0;
  for (const auto& path : {index_path + ".sig", index_path}) {
    std::error_code sec, rec;
    const auto size = path == index_path ? index_size : fs::file_size(path, sec);
    if (!sec && fs::remove(path, rec)) freed += size;
    if (rec) return make_error(errc::io_error, "cannot remove " + path + ": " + rec.message());
  }
  used_bytes_ -= std::min<std::uint64_t>(used_bytes_.load(), freed);
  json out = sweep_orphans();
  out["name"] = name;
  out["version"] = version;
  out["freedBytes"] = out["freedBytes"].get<std::uint64_t>() + freed;
  log::info(kLog, "removed {} version {}: {} chunks and {} deltas no other version uses", name,
            version, out["removedChunks"].get<std::size_t>(),
            out["removedDeltas"].get<std::size_t>());
  return out;
}

json ModelStore::sweep_orphans() {
  // What the indexes in the store reference. An index that does not decode keeps everything:
  // nothing is deleted on a guess.
  std::set<std::string> chunks, deltas, index_files;
  std::string undecodable;
  const auto ec = for_each_index_file(
      options_.dir, [&](const fs::path& path, Result<modelpkg::ModelIndex> idx) {
        if (!idx) {
          undecodable = path.filename().string();
          return false;
        }
        for (const auto& c : idx->chunks) chunks.insert(modelpkg::chunk_path(c.hash));
        // Its index deltas (deltas/INDEX_FILE/FROM16) live while it does.
        index_files.insert(path.filename().string());
        for (const auto& set : idx->deltas) {
          for (const auto& e : set.entries) {
            deltas.insert(modelpkg::delta_path(idx->sha256, set.from_sha256, e.segment));
          }
        }
        return true;
      });
  if (!undecodable.empty() || ec) {
    log::warn(kLog, "orphan sweep skipped: {}",
              ec ? ec.message() : undecodable + " does not decode");
    return json{{"removedChunks", 0}, {"removedDeltas", 0}, {"freedBytes", 0}};
  }
  const auto cutoff = fs::file_time_type::clock::now() - options_.orphan_grace;
  std::size_t removed_chunks = 0, removed_deltas = 0;
  std::uint64_t freed = 0;
  auto walk_error = for_each_stored_file(
      options_.dir, [&](std::string_view top, const fs::path& root, const fs::path& path) {
        const bool is_chunks = top == "chunks";
        // The name the indexes use, made lexically: std::filesystem::relative resolves symlinks,
        // and every file of a symlinked chunks/ would then look unreferenced.
        const auto relative = (fs::path(top) / path.lexically_relative(root)).generic_string();
        if ((is_chunks ? chunks : deltas).count(relative)) return;
        if (!is_chunks && index_files.count(path.parent_path().filename().string())) return;
        // Under the lock missing/put_chunk touch chunks with, and with the time read now, not as
        // the directory listing cached it.
        std::lock_guard lock(chunk_mu_);
        std::error_code tec, sec, rec;
        if (fs::last_write_time(path, tec) > cutoff || tec) return;
        const auto size = fs::file_size(path, sec);
        if (fs::remove(path, rec) && !sec) {
          freed += size;
          ++(is_chunks ? removed_chunks : removed_deltas);
        }
      });
  if (walk_error) log::warn(kLog, "orphan sweep incomplete: {}", walk_error.message());
  used_bytes_ -= std::min<std::uint64_t>(used_bytes_.load(), freed);
  return json{
      {"removedChunks", removed_chunks}, {"removedDeltas", removed_deltas}, {"freedBytes", freed}};
}

Result<json> ModelStore::list() const {
  std::vector<std::tuple<std::string, fs::file_time_type, json>> found;
  const auto ec = for_each_index_file(
      options_.dir, [&](const fs::path& path, Result<modelpkg::ModelIndex> idx) {
        if (!idx) {
          log::warn(kLog, "{} in the model store does not decode: {}", path.filename().string(),
                    idx.error().message);
          return true;
        }
        std::error_code tec;
        found.emplace_back(idx->name, fs::last_write_time(path, tec), describe(*idx));
        return found.size() < options_.max_listed;
      });
  if (ec) return make_error(errc::io_error, "cannot list the model store: " + ec.message());
  std::sort(found.begin(), found.end(), [](const auto& a, const auto& b) {
    return std::tie(std::get<0>(a), std::get<1>(a)) < std::tie(std::get<0>(b), std::get<1>(b));
  });
  json models = json::array();
  for (auto& f : found) models.push_back(std::move(std::get<2>(f)));
  return json{{"models", models},
              {"usedBytes", used_bytes_.load()},
              {"maxBytes", options_.max_store_bytes}};
}

std::optional<std::string> ModelStore::current_index_name(std::string_view legacy_file) const {
  const bool signature = legacy_file.ends_with(".cidx.sig");
  std::string_view base = legacy_file.substr(0, legacy_file.rfind(".cidx"));
  // Only names with a '-' changed file names (NAME~VERSION.cidx); the first '-' of a legacy
  // name is inside NAME, the version starts after one of the later ones.
  const auto first = base.find('-');
  if (base.find('~') != std::string_view::npos || first == std::string_view::npos) {
    return std::nullopt;
  }
  std::optional<std::string> found;
  for (auto dash = base.find('-', first + 1); dash != std::string_view::npos;
       dash = base.find('-', dash + 1)) {
    const auto name = base.substr(0, dash), version = base.substr(dash + 1);
    if (!modelpkg::check_label(name, "name") || !modelpkg::check_label(version, "version")) {
      continue;
    }
    const std::string file = modelpkg::index_file_name(name, version);
    std::error_code ec;
    if (!fs::is_regular_file(options_.dir + "/" + file, ec)) continue;
    if (found) return std::nullopt;  // two versions had this name: it names neither
    found = file + (signature ? ".sig" : "");
  }
  return found;
}

Result<std::string> ModelStore::read(const std::string& relative_path) const {
  auto parts = split(relative_path);
  bool ok = std::all_of(parts.begin(), parts.end(), plain_segment);
  if (ok && parts.size() == 1) {
    ok = parts[0].ends_with(".cidx") || parts[0].ends_with(".cidx.sig");
  } else if (ok && parts.size() == 3) {
    ok = (parts[0] == "chunks" && is_hex_hash(parts[2]) && parts[1] == parts[2].substr(0, 2)) ||
         parts[0] == "deltas";
  } else {
    ok = false;
  }
  auto not_found = [&] {
    return make_error(errc::not_found, "no published file models/" + relative_path.substr(0, 200));
  };
  if (!ok) return not_found();
  std::string path = options_.dir + "/" + relative_path;
  std::error_code ec;
  if (parts.size() == 1 && !fs::is_regular_file(path, ec)) {
    auto current = current_index_name(parts[0]);
    if (!current) return not_found();
    path = options_.dir + "/" + *current;
  }
  if (!fs::is_regular_file(path, ec)) return not_found();
  // Deltas are the largest files served; the fetcher takes at most 64 MiB of one.
  return read_file(path, modelpkg::kMaxIndexJsonBytes);
}

}  // namespace cairn::cloud
