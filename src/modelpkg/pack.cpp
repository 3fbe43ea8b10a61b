#include "modelpkg/pack.hpp"

#include <algorithm>
#include <filesystem>
#include <map>
#include <optional>
#include <set>

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
  std::string cidx;  // the index file's bytes
  fs::file_time_type packed_at;
};

// Earlier versions of `name` in `dir` (other than `version`), newest first. With
// `other_content`, only those whose file differs from `sha256` (a delta from the same bytes is
// nothing to send).
std::vector<PreviousVersion> previous_versions(const std::string& dir, const std::string& name,
                                               const std::string& version,
                                               const std::string& sha256, bool other_content) {
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
    if (!idx || idx->name != name || idx->version == version) continue;
    if (other_content && idx->sha256 == sha256) continue;
    std::error_code tec;
    auto when = fs::last_write_time(entry.path(), tec);
    out.push_back({std::move(*idx), std::move(*bytes), when});
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
  auto previous = previous_versions(dir, idx.name, idx.version, idx.sha256, true);
  if (previous.size() > delta_versions) previous.resize(delta_versions);
  auto new_starts = idx.segment_starts();
  auto new_offsets = idx.chunk_offsets();
  for (const auto& prev : previous) {
    const ModelIndex& base = prev.index;
    auto base_starts = base.segment_starts();
    std::map<std::string, std::size_t> base_by_key;
    for (std::size_t s = 0; s < base.segments.size(); ++s) base_by_key[base.segments[s].key] = s;
    std::set<std::string> base_chunks;
    for (const auto& c : base.chunks) base_chunks.insert(c.hash);
    auto base_offsets = base.chunk_offsets();
    // Segments of the base read so far: prefixes share most of them.
    std::map<std::size_t, std::string> base_bytes;
    auto base_segment = [&](std::size_t b) -> Result<std::string_view> {
      auto it = base_bytes.find(b);
      if (it == base_bytes.end()) {
        auto bytes = read_segment(dir, base, base_starts, b);
        if (!bytes) return std::move(bytes).error();
        it = base_bytes.emplace(b, std::move(*bytes)).first;
      }
      return std::string_view(it->second);
    };
    DeltaSet set;
    set.from_version = base.version;
    set.from_sha256 = base.sha256;
    for (std::size_t s = 0; s < idx.segments.size(); ++s) {
      // What the device lacks of this segment when it holds the base: the chunks the base does
      // not have (an unchanged or moved tensor has none).
      std::uint64_t chunk_cost = 0;
      for (std::size_t k = new_starts[s]; k < new_starts[s + 1]; ++k) {
        if (!base_chunks.count(idx.chunks[k].hash)) chunk_cost += idx.chunks[k].stored_size;
      }
      if (chunk_cost == 0) continue;
      const std::string& key = idx.segments[s].key;
      const std::uint64_t new_size = new_offsets[new_starts[s + 1]] - new_offsets[new_starts[s]];
      auto it = base_by_key.find(key);
      const bool same_size =
          it != base_by_key.end() &&
          base_offsets[base_starts[it->second + 1]] - base_offsets[base_starts[it->second]] ==
              new_size;
      // A segment of the same size is coded plane by plane against its old bytes; one whose
      // size changed, or the bytes between tensors (which move when tensors are reordered),
      // against the old bytes between tensors and its own old bytes.
      const bool try_prefix = !same_size || key.starts_with('#');
      std::vector<std::size_t> prefix_segs;
      if (try_prefix) prefix_segs = base.prefix_segments(key);
      if (!same_size && prefix_segs.empty()) continue;
      if (max_input_bytes != 0 && input_bytes + new_size > max_input_bytes) {
        ++summary.skipped;
        continue;
      }
      input_bytes += new_size;
      auto new_bytes = read_segment(dir, idx, new_starts, s);
      if (!new_bytes) return std::move(new_bytes).error();
      std::optional<std::string> best;
      DeltaKind best_kind = DeltaKind::xor_planes;
      auto consider = [&](Result<std::string> delta, DeltaKind kind) -> Status {
        if (!delta) return std::move(delta).error();
        if (!best || delta->size() < best->size()) {
          best = std::move(*delta);
          best_kind = kind;
        }
        return {};
      };
      if (same_size) {
        auto old_bytes = base_segment(it->second);
        if (!old_bytes) {
          log::warn("modelpkg", "no delta from version {} for segment '{}': {}", base.version, key,
                    old_bytes.error().message);
          continue;
        }
        const std::size_t planes = idx.segments[s].element_size;
        CAIRN_TRY(consider(make_delta(*old_bytes, *new_bytes, planes, zstd_level),
                           DeltaKind::xor_planes));
        const auto mask = choose_plane_mask(*old_bytes, *new_bytes, planes);
        CAIRN_TRY(consider(make_plane_delta(*old_bytes, *new_bytes, planes, mask, zstd_level),
                           DeltaKind::masked_planes));
        if (planes == 4) {
          CAIRN_TRY(consider(make_float_delta(*old_bytes, *new_bytes), DeltaKind::floats));
        }
      }
      if (!prefix_segs.empty()) {
        std::string prefix;
        bool complete = true;
        for (std::size_t b : prefix_segs) {
          auto part = base_segment(b);
          if (!part) {
            log::warn("modelpkg", "no delta from version {} for segment '{}': {}", base.version,
                      key, part.error().message);
            complete = false;
            break;
          }
          prefix += *part;
        }
        if (complete) {
          CAIRN_TRY(consider(make_prefix_delta(prefix, *new_bytes, zstd_level), DeltaKind::prefix));
        }
      }
      if (!best || best->size() >= chunk_cost) continue;
      auto path = dir + "/" + delta_path(idx.sha256, base.sha256, s);
      CAIRN_TRY(make_dirs(fs::path(path).parent_path().string()));
      CAIRN_TRY(write_file_atomic(path, *best, false));
      set.entries.push_back(DeltaEntry{s, best->size(), best_kind});
      ++summary.written;
      summary.bytes += best->size();
    }
    if (!set.entries.empty()) idx.deltas.push_back(std::move(set));
  }
  return summary;
}

Result<DeltaSummary> add_index_deltas(const std::string& dir, const ModelIndex& idx,
                                      std::string_view cidx, std::size_t delta_versions) {
  DeltaSummary summary;
  const std::string index_file = index_file_name(idx.name, idx.version);
  // Deltas left by an earlier pack of this version would make the index it replaced.
  const std::string own_dir = dir + "/deltas/" + index_file;
  std::error_code ec;
  fs::remove_all(own_dir, ec);
  if (ec) return make_error(errc::io_error, "cannot remove " + own_dir + ": " + ec.message());
  // Any earlier version, same content or not: its index is what the device holds.
  auto previous = previous_versions(dir, idx.name, idx.version, idx.sha256, false);
  if (previous.size() > delta_versions) previous.resize(delta_versions);
  for (const auto& prev : previous) {
    auto delta = make_index_delta(prev.cidx, cidx);
    if (!delta) return std::move(delta).error();
    if (delta->size() >= cidx.size()) continue;
    auto path = dir + "/" + index_delta_path(index_file, crypto::sha256_hex(prev.cidx));
    CAIRN_TRY(make_dirs(own_dir));
    CAIRN_TRY(write_file_atomic(path, *delta, false));
    ++summary.written;
    summary.bytes += delta->size();
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
  auto index_deltas = add_index_deltas(options.out_dir, idx, *cidx, options.delta_versions);
  if (!index_deltas) return std::move(index_deltas).error();
  summary.index_deltas_written = index_deltas->written;
  summary.index_delta_bytes = index_deltas->bytes;
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
