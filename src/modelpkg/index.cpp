#include "modelpkg/index.hpp"

#include <nlohmann/json.hpp>

#include "core/crypto.hpp"
#include "modelpkg/detail/zstd.hpp"

namespace cairn::modelpkg {

namespace {

constexpr std::string_view kFormatName = "cairn-model-index";
constexpr int kFormatVersion = 1;

bool is_hex_hash(const std::string& s) {
  if (s.size() != 64) return false;
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

Error bad(const std::string& what) {
  return make_error(errc::corruption, "model index is invalid: " + what);
}

}  // namespace

std::vector<std::uint64_t> ModelIndex::chunk_offsets() const {
  std::vector<std::uint64_t> out;
  out.reserve(chunks.size() + 1);
  std::uint64_t pos = 0;
  for (const auto& c : chunks) {
    out.push_back(pos);
    pos += c.size;
  }
  out.push_back(pos);
  return out;
}

std::vector<std::size_t> ModelIndex::segment_starts() const {
  std::vector<std::size_t> out;
  out.reserve(segments.size() + 1);
  std::size_t pos = 0;
  for (const auto& s : segments) {
    out.push_back(pos);
    pos += s.chunk_count;
  }
  out.push_back(pos);
  return out;
}

std::vector<std::size_t> ModelIndex::prefix_segments(std::string_view key) const {
  std::vector<std::size_t> out;
  auto offsets = chunk_offsets();
  auto starts = segment_starts();
  std::uint64_t total = 0;
  for (std::size_t s = 0; s < segments.size(); ++s) {
    if (!segments[s].key.starts_with('#') && segments[s].key != key) continue;
    total += offsets[starts[s + 1]] - offsets[starts[s]];
    if (total > kMaxPrefixBytes) return {};
    out.push_back(s);
  }
  return out;
}

namespace {

const char* kind_name(DeltaKind kind) {
  switch (kind) {
    case DeltaKind::masked_planes:
      return "planes";
    case DeltaKind::prefix:
      return "prefix";
    case DeltaKind::floats:
      return "floats";
    case DeltaKind::xor_planes:
      break;
  }
  return "xor";
}

// The JSON text the .cidx compresses: the index delta codes this, and re-encodes it the same way.
std::string index_json(const ModelIndex& index);
Result<std::string> compress_index_json(std::string_view json) {
  return detail::zstd_compress(json, 19);
}

}  // namespace

Result<std::string> encode_index(const ModelIndex& index) {
  return compress_index_json(index_json(index));
}

namespace {
std::string index_json(const ModelIndex& index) {
  nlohmann::json j;
  j["format"] = kFormatName;
  j["format_version"] = kFormatVersion;
  j["name"] = index.name;
  j["version"] = index.version;
  j["model_format"] = index.format;
  j["size"] = index.size;
  j["sha256"] = index.sha256;
  auto chunks = nlohmann::json::array();
  for (const auto& c : index.chunks) {
    chunks.push_back({c.hash, c.size, c.compressed ? "zstd" : "raw", c.stored_size});
  }
  j["chunks"] = std::move(chunks);
  auto segments = nlohmann::json::array();
  for (const auto& s : index.segments) segments.push_back({s.key, s.chunk_count, s.element_size});
  j["segments"] = std::move(segments);
  auto deltas = nlohmann::json::array();
  for (const auto& d : index.deltas) {
    // Format-1 deltas stay in "entries", which every release reads; the others go in "coded",
    // which releases before them ignore (they fetch those segments' chunks).
    auto entries = nlohmann::json::array();
    auto coded = nlohmann::json::array();
    for (const auto& e : d.entries) {
      if (e.kind == DeltaKind::xor_planes) {
        entries.push_back({e.segment, e.size});
      } else {
        coded.push_back({e.segment, e.size, kind_name(e.kind)});
      }
    }
    nlohmann::json set{
        {"from_version", d.from_version}, {"from_sha256", d.from_sha256}, {"entries", entries}};
    if (!coded.empty()) set["coded"] = std::move(coded);
    deltas.push_back(std::move(set));
  }
  j["deltas"] = std::move(deltas);
  // Tensor names from outside may hold any bytes: replace invalid UTF-8 instead of throwing.
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}
}  // namespace

Result<ModelIndex> decode_index(std::string_view cidx) {
  if (cidx.size() > kMaxIndexBytes) {
    return make_error(errc::limit_exceeded,
                      "model index is larger than " + std::to_string(kMaxIndexBytes) + " bytes");
  }
  auto text = detail::zstd_decompress(cidx, kMaxIndexJsonBytes);
  if (!text) return bad("not zstd data (truncated or not an index?): " + text.error().message);
  auto j = nlohmann::json::parse(*text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return bad("not a JSON object");
  ModelIndex idx;
  try {
    if (j.value("format", "") != kFormatName) return bad("format is not cairn-model-index");
    if (j.value("format_version", 0) != kFormatVersion) {
      return bad("unsupported format_version (this cairn reads 1)");
    }
    idx.name = j.at("name").get<std::string>();
    idx.version = j.at("version").get<std::string>();
    idx.format = j.at("model_format").get<std::string>();
    idx.size = j.at("size").get<std::uint64_t>();
    idx.sha256 = j.at("sha256").get<std::string>();
    for (const auto& c : j.at("chunks")) {
      if (!c.is_array() || c.size() != 4) return bad("chunk entry is not [hash,size,comp,stored]");
      ChunkRef ref;
      ref.hash = c[0].get<std::string>();
      ref.size = c[1].get<std::uint64_t>();
      auto comp = c[2].get<std::string>();
      if (comp != "zstd" && comp != "raw") return bad("unknown chunk compression '" + comp + "'");
      ref.compressed = comp == "zstd";
      ref.stored_size = c[3].get<std::uint64_t>();
      idx.chunks.push_back(std::move(ref));
    }
    for (const auto& s : j.at("segments")) {
      if (!s.is_array() || s.size() != 3) return bad("segment entry is not [key,chunks,planes]");
      idx.segments.push_back(
          SegmentRef{s[0].get<std::string>(), s[1].get<std::size_t>(), s[2].get<std::size_t>()});
    }
    for (const auto& d : j.at("deltas")) {
      DeltaSet set;
      set.from_version = d.at("from_version").get<std::string>();
      set.from_sha256 = d.at("from_sha256").get<std::string>();
      for (const auto& e : d.at("entries")) {
        if (!e.is_array() || e.size() != 2) return bad("delta entry is not [segment,size]");
        set.entries.push_back(DeltaEntry{e[0].get<std::size_t>(), e[1].get<std::uint64_t>()});
      }
      if (d.contains("coded")) {
        for (const auto& e : d.at("coded")) {
          if (!e.is_array() || e.size() != 3) return bad("coded delta is not [segment,size,kind]");
          const auto kind = e[2].get<std::string>();
          DeltaKind k;
          if (kind == "planes") {
            k = DeltaKind::masked_planes;
          } else if (kind == "prefix") {
            k = DeltaKind::prefix;
          } else if (kind == "floats") {
            k = DeltaKind::floats;
          } else {
            continue;  // a coding of a later release: its segment comes as chunks
          }
          set.entries.push_back(DeltaEntry{e[0].get<std::size_t>(), e[1].get<std::uint64_t>(), k});
        }
      }
      idx.deltas.push_back(std::move(set));
    }
  } catch (const nlohmann::json::exception& e) {
    return bad(std::string("missing or mistyped field: ") + e.what());
  }
  if (auto s = check_label(idx.name, "name"); !s) return bad(s.error().message);
  if (auto s = check_label(idx.version, "version"); !s) return bad(s.error().message);
  if (!is_hex_hash(idx.sha256)) return bad("sha256 is not 64 hex digits");
  if (idx.size > kMaxModelBytes) return bad("model size over the limit");
  std::uint64_t total = 0;
  for (std::size_t i = 0; i < idx.chunks.size(); ++i) {
    const auto& c = idx.chunks[i];
    if (!is_hex_hash(c.hash)) return bad("chunk " + std::to_string(i) + " hash is not hex");
    if (c.size == 0 || c.size > kMaxChunkBytes) {
      return bad("chunk " + c.hash + " size out of range");
    }
    if (c.stored_size == 0 || c.stored_size > kMaxChunkBytes + 1024 ||
        (!c.compressed && c.stored_size != c.size)) {
      return bad("chunk " + c.hash + " stored size out of range");
    }
    total += c.size;
  }
  if (total != idx.size) {
    return bad("chunks add up to " + std::to_string(total) + " bytes, the model has " +
               std::to_string(idx.size));
  }
  std::size_t chunk_total = 0;
  for (const auto& s : idx.segments) {
    if (s.chunk_count == 0 || s.element_size < 1 || s.element_size > 16) {
      return bad("segment '" + s.key + "' is malformed");
    }
    chunk_total += s.chunk_count;
  }
  if (chunk_total != idx.chunks.size()) return bad("segments do not cover the chunk list");
  for (const auto& d : idx.deltas) {
    if (!is_hex_hash(d.from_sha256)) return bad("delta from_sha256 is not hex");
    for (const auto& e : d.entries) {
      if (e.segment >= idx.segments.size() || e.size == 0 || e.size > kMaxIndexJsonBytes) {
        return bad("delta entry out of range");
      }
    }
  }
  return idx;
}

Status check_label(std::string_view value, std::string_view what) {
  bool ok = !value.empty() && value.size() <= 128 && value.front() != '.';
  for (char c : value) {
    ok = ok && ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                c == '.' || c == '_' || c == '-');
  }
  if (!ok) {
    return make_error(errc::invalid_argument,
                      std::string(what) + " '" + std::string(value) +
                          "' must be 1-128 of A-Z a-z 0-9 . _ - and not start with '.'");
  }
  return {};
}

std::string index_file_name(std::string_view name, std::string_view version) {
  const char separator = name.find('-') == std::string_view::npos ? '-' : '~';
  return std::string(name) + separator + std::string(version) + ".cidx";
}

std::string legacy_index_file_name(std::string_view name, std::string_view version) {
  return std::string(name) + "-" + std::string(version) + ".cidx";
}

std::string chunk_path(std::string_view hash) {
  return "chunks/" + std::string(hash.substr(0, 2)) + "/" + std::string(hash);
}

std::string index_delta_path(std::string_view index_file, std::string_view from_cidx_sha256) {
  return "deltas/" + std::string(index_file) + "/" + std::string(from_cidx_sha256.substr(0, 16));
}

namespace {
constexpr std::string_view kIndexDeltaMagic = "CIXD";
constexpr std::size_t kIndexDeltaHeader = 40;
constexpr char kBinaryHash = '\x01';

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

// The index JSON with every quoted SHA-256 ("" + 64 lowercase hex digits) as byte 0x01 and its
// 32 bytes. Why: zstd codes hex digits at 4 bits each at best and finds short false matches
// inside them, so a new hash cost about 1.5x its 32 bytes in an index delta; raw, it costs 32.
// Compact JSON never holds a raw 0x01 (a string escapes it), so the form is reversible.
std::string hashes_to_binary(std::string_view json) {
  std::string out;
  out.reserve(json.size());
  std::size_t i = 0;
  while (i < json.size()) {
    bool is_hash = json[i] == '"' && i + 65 < json.size() && json[i + 65] == '"';
    for (std::size_t k = 1; is_hash && k <= 64; ++k) is_hash = hex_value(json[i + k]) >= 0;
    if (!is_hash) {
      out += json[i++];
      continue;
    }
    out += kBinaryHash;
    for (std::size_t k = 1; k <= 64; k += 2) {
      out += static_cast<char>(hex_value(json[i + k]) * 16 + hex_value(json[i + k + 1]));
    }
    i += 66;
  }
  return out;
}

Result<std::string> hashes_to_hex(std::string_view packed) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(packed.size());
  for (std::size_t i = 0; i < packed.size(); ++i) {
    if (packed[i] != kBinaryHash) {
      out += packed[i];
      continue;
    }
    if (i + 32 >= packed.size()) return make_error(errc::corruption, "index delta truncated hash");
    if (out.size() + 66 > kMaxIndexJsonBytes) {
      return make_error(errc::corruption, "index delta makes an index over the size limit");
    }
    out += '"';
    for (std::size_t k = 1; k <= 32; ++k) {
      const auto b = static_cast<unsigned char>(packed[i + k]);
      out += kDigits[b >> 4];
      out += kDigits[b & 15];
    }
    out += '"';
    i += 32;
  }
  return out;
}
}  // namespace

Result<std::string> make_index_delta(std::string_view old_cidx, std::string_view new_cidx) {
  auto old_json = detail::zstd_decompress(old_cidx, kMaxIndexJsonBytes);
  if (!old_json) return std::move(old_json).error();
  auto new_json = detail::zstd_decompress(new_cidx, kMaxIndexJsonBytes);
  if (!new_json) return std::move(new_json).error();
  if (new_json->find(kBinaryHash) != std::string::npos) {
    return make_error(errc::invalid_argument, "index JSON holds a raw 0x01 byte");
  }
  auto packed = detail::zstd_compress_with_prefix(hashes_to_binary(*new_json),
                                                  hashes_to_binary(*old_json), 19);
  if (!packed) return std::move(packed).error();
  std::string out(kIndexDeltaMagic);
  out += '\x01';
  out.append(3, '\0');
  out += crypto::sha256(new_cidx);
  return out + *packed;
}

Result<std::string> apply_index_delta(std::string_view old_cidx, std::string_view delta) {
  if (delta.size() < kIndexDeltaHeader || delta.substr(0, 4) != kIndexDeltaMagic || delta[4] != 1) {
    return make_error(errc::corruption, "not a cairn index delta (bad header)");
  }
  auto old_json = detail::zstd_decompress(old_cidx, kMaxIndexJsonBytes);
  if (!old_json) return make_error(errc::corruption, "the held index does not decode");
  auto packed = detail::zstd_decompress_with_prefix(
      delta.substr(kIndexDeltaHeader), hashes_to_binary(*old_json), kMaxIndexJsonBytes);
  if (!packed) return std::move(packed).error();
  auto new_json = hashes_to_hex(*packed);
  if (!new_json) return std::move(new_json).error();
  auto cidx = compress_index_json(*new_json);
  if (!cidx) return std::move(cidx).error();
  if (crypto::sha256(*cidx) != delta.substr(8, 32)) {
    return make_error(errc::corruption,
                      "index delta does not reproduce the index it names (corrupt, or written "
                      "by another zstd build)");
  }
  return cidx;
}

std::string delta_path(std::string_view to_sha256, std::string_view from_sha256,
                       std::size_t segment) {
  return "deltas/" + std::string(to_sha256.substr(0, 16)) + "/" +
         std::string(from_sha256.substr(0, 16)) + "-" + std::to_string(segment);
}

}  // namespace cairn::modelpkg
