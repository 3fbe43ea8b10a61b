#include "modelpkg/pack.hpp"

#include <algorithm>
#include <filesystem>
#include <map>

#include "core/crypto.hpp"
#include "core/files.hpp"
#include "core/log.hpp"
#include "modelpkg/delta.hpp"
#include "modelpkg/detail/sha256_stream.hpp"
#include "modelpkg/detail/zstd.hpp"
#include "modelpkg/signing.hpp"
#include "modelpkg/tensors.hpp"

namespace cairn::modelpkg {

namespace fs = std::filesystem;

namespace {

struct PreviousVersion {
  ModelIndex index;
  fs::file_time_type packed_at;
};

// Earlier versions of `name` in `dir`, newest first.
std::vector<PreviousVersion> previous_versions(const std::string& dir, const std::string& name,
                                               const std::string& version,
                                               const std::string& sha256) {
  std::vector<PreviousVersion> out;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    auto file = entry.path().filename().string();
    // Both NAME-VERSION.cidx and NAME~VERSION.cidx (index_file_name) start with NAME; the
    // decoded name decides.
    if (file.size() < 5 || file.substr(file.size() - 5) != ".cidx" || !file.starts_with(name)) {
      continue;
    }
    auto bytes = read_file(entry.path().string(), kMaxIndexBytes);
    if (!bytes) continue;
    auto idx = decode_index(*bytes);
    if (!idx || idx->name != name || idx->version == version || idx->sha256 == sha256) continue;
    std::error_code tec;
    auto when = fs::last_write_time(entry.path(), tec);
    out.push_back({std::move(*idx), when});
  }
  std::sort(out.begin(), out.end(), [](const PreviousVersion& a, const PreviousVersion& b) {
    return a.packed_at > b.packed_at;
  });
  return out;
}

// The bytes of segment `seg` of `idx`, from the chunks in `dir`.
Result<std::string> read_segment(const std::string& dir, const ModelIndex& idx,
                                 const std::vector<std::size_t>& starts, std::size_t seg) {
  std::string out;
  for (std::size_t c = starts[seg]; c < starts[seg + 1]; ++c) {
    auto bytes = read_chunk(dir, idx.chunks[c]);
    if (!bytes) return std::move(bytes).error();
    out += *bytes;
  }
  return out;
}

}  // namespace

Result<std::string> read_chunk(const std::string& dir, const ChunkRef& chunk) {
  auto path = dir + "/" + chunk_path(chunk.hash);
  auto stored = read_file(path, kMaxChunkBytes + 1024);
  if (!stored) return std::move(stored).error();
  std::string data;
  if (chunk.compressed) {
    auto d = detail::zstd_decompress(*stored, kMaxChunkBytes);
    if (!d) return make_error(errc::corruption, path + ": " + d.error().message);
    data = std::move(*d);
  } else {
    data = std::move(*stored);
  }
  if (data.size() != chunk.size || crypto::sha256_hex(data) != chunk.hash) {
    return make_error(errc::corruption, path + " does not match its hash");
  }
  return data;
}

Status verify_model(const std::string& dir, const ModelIndex& index) {
  detail::Sha256Stream hash;
  for (const auto& c : index.chunks) {
    auto data = read_chunk(dir, c);
    if (!data) return std::move(data).error();
    hash.update(*data);
  }
  if (auto got = hash.hex(); got != index.sha256) {
    return make_error(errc::invalid_argument, "the chunks of " + index.name + " version " +
                                                  index.version + " make a file with SHA-256 " +
                                                  got + ", the index says " + index.sha256);
  }
  return {};
}

Result<DeltaSummary> add_deltas(const std::string& dir, ModelIndex& idx, int zstd_level,
                                std::size_t delta_versions, std::uint64_t max_input_bytes) {
  std::uint64_t input_bytes = 0;
  DeltaSummary summary;
  idx.deltas.clear();
  auto previous = previous_versions(dir, idx.name, idx.version, idx.sha256);
  if (previous.size() > delta_versions) previous.resize(delta_versions);
  auto new_starts = idx.segment_starts();
  auto new_offsets = idx.chunk_offsets();
  for (const auto& prev : previous) {
    const ModelIndex& base = prev.index;
    auto base_starts = base.segment_starts();
    std::map<std::string, std::size_t> base_by_key;
    for (std::size_t s = 0; s < base.segments.size(); ++s) base_by_key[base.segments[s].key] = s;
    auto base_offsets = base.chunk_offsets();
    DeltaSet set;
    set.from_version = base.version;
    set.from_sha256 = base.sha256;
    for (std::size_t s = 0; s < idx.segments.size(); ++s) {
      auto it = base_by_key.find(idx.segments[s].key);
      if (it == base_by_key.end()) continue;
      std::size_t b = it->second;
      std::uint64_t base_size = base_offsets[base_starts[b + 1]] - base_offsets[base_starts[b]];
      std::uint64_t new_size = new_offsets[new_starts[s + 1]] - new_offsets[new_starts[s]];
      if (base_size != new_size) continue;
      // Unchanged: the same chunks, nothing to send.
      bool same = base_starts[b + 1] - base_starts[b] == new_starts[s + 1] - new_starts[s];
      for (std::size_t k = 0; same && k < new_starts[s + 1] - new_starts[s]; ++k) {
        same = base.chunks[base_starts[b] + k].hash == idx.chunks[new_starts[s] + k].hash;
      }
      if (same) continue;
      if (max_input_bytes != 0 && input_bytes + new_size > max_input_bytes) {
        ++summary.skipped;
        continue;
      }
      input_bytes += new_size;
      const std::string& key = idx.segments[s].key;
      auto old_bytes = read_segment(dir, base, base_starts, b);
      if (!old_bytes) {
        log::warn("modelpkg", "no delta from version {} for segment '{}': {}", base.version, key,
                  old_bytes.error().message);
        continue;
      }
      auto new_bytes = read_segment(dir, idx, new_starts, s);
      if (!new_bytes) return std::move(new_bytes).error();
      auto delta = make_delta(*old_bytes, *new_bytes, idx.segments[s].element_size, zstd_level);
      if (!delta) return std::move(delta).error();
      std::uint64_t chunk_cost = 0;
      for (std::size_t k = new_starts[s]; k < new_starts[s + 1]; ++k) {
        chunk_cost += idx.chunks[k].stored_size;
      }
      if (delta->size() >= chunk_cost) continue;
      auto path = dir + "/" + delta_path(idx.sha256, base.sha256, s);
      CAIRN_TRY(make_dirs(fs::path(path).parent_path().string()));
      CAIRN_TRY(write_file_atomic(path, *delta, false));
      set.entries.push_back(DeltaEntry{s, delta->size()});
      ++summary.written;
      summary.bytes += delta->size();
    }
    if (!set.entries.empty()) idx.deltas.push_back(std::move(set));
  }
  return summary;
}

Result<PackSummary> pack_model(const std::string& model_path, const PackOptions& options) {
  CAIRN_TRY(check_label(options.name, "model name"));
  CAIRN_TRY(check_label(options.version, "model version"));
  if (options.out_dir.empty()) return make_error(errc::invalid_argument, "no output directory");
  auto file = read_file(model_path, static_cast<std::size_t>(kMaxModelBytes));
  if (!file) return std::move(file).error();
  if (file->empty()) return make_error(errc::invalid_argument, model_path + " is empty");
  CAIRN_TRY(make_dirs(options.out_dir));

  PackSummary summary;
  auto layout = find_tensors(*file);
  summary.format = std::string(to_string(layout.format));
  summary.tensors = layout.tensors.size();

  ModelIndex& idx = summary.index;
  idx.name = options.name;
  idx.version = options.version;
  idx.format = summary.format;
  idx.size = file->size();
  idx.sha256 = crypto::sha256_hex(*file);

  std::string_view whole(*file);
  auto segments = make_segments(file->size(), layout, options.chunking);
  for (const auto& seg : segments) {
    auto spans = cut_chunks(whole.substr(seg.offset, seg.size), options.chunking);
    idx.segments.push_back(SegmentRef{seg.key, spans.size(), seg.element_size});
    for (const auto& span : spans) {
      auto data = whole.substr(seg.offset + span.offset, span.size);
      ChunkRef ref;
      ref.hash = crypto::sha256_hex(data);
      ref.size = data.size();
      auto path = options.out_dir + "/" + chunk_path(ref.hash);
      std::error_code ec;
      auto existing = fs::file_size(path, ec);
      auto packed = detail::zstd_compress(data, options.zstd_level);
      if (!packed) return std::move(packed).error();
      ref.compressed = packed->size() < data.size();
      ref.stored_size = ref.compressed ? packed->size() : data.size();
      if (ec || existing != ref.stored_size) {
        CAIRN_TRY(make_dirs(fs::path(path).parent_path().string()));
        CAIRN_TRY(write_file_atomic(path, ref.compressed ? *packed : std::string(data), false));
        ++summary.chunks_written;
      }
      summary.chunk_bytes += ref.stored_size;
      idx.chunks.push_back(std::move(ref));
    }
  }
  summary.chunks = idx.chunks.size();

  auto deltas = add_deltas(options.out_dir, idx, options.zstd_level, options.delta_versions);
  if (!deltas) return std::move(deltas).error();
  summary.deltas_written = deltas->written;
  summary.delta_bytes = deltas->bytes;

  auto cidx = encode_index(idx);
  if (!cidx) return std::move(cidx).error();
  summary.index_path = options.out_dir + "/" + index_file_name(idx.name, idx.version);
  summary.index_bytes = cidx->size();
  if (!options.signing_key.empty()) {
    auto sig = sign_bytes(options.signing_key, *cidx);
    if (!sig) return std::move(sig).error();
    CAIRN_TRY(write_file_atomic(summary.index_path + ".sig", *sig, true));
  } else {
    // A stale signature of an earlier pack of this version would not match: remove it.
    std::error_code ec;
    fs::remove(summary.index_path + ".sig", ec);
  }
  CAIRN_TRY(write_file_atomic(summary.index_path, *cidx, true));
  return summary;
}

}  // namespace cairn::modelpkg
