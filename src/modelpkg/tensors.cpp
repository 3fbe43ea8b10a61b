#include "modelpkg/tensors.hpp"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <map>
#include <optional>

namespace cairn::modelpkg {

std::string_view to_string(ModelFormat f) {
  switch (f) {
    case ModelFormat::kOnnx:
      return "onnx";
    case ModelFormat::kTflite:
      return "tflite";
    case ModelFormat::kOpaque:
      break;
  }
  return "opaque";
}

namespace {

// ---- protobuf wire format (https://protobuf.dev/programming-guides/encoding/) ----

struct ProtoField {
  std::uint32_t number = 0;
  std::uint32_t wire_type = 0;
  std::uint64_t varint = 0;     // wire type 0
  std::size_t data_offset = 0;  // wire type 2: payload position in the file
  std::size_t data_size = 0;
};

// Reads the fields of one message spanning [begin, end) of `buf`.
class ProtoReader {
 public:
  ProtoReader(std::string_view buf, std::size_t begin, std::size_t end)
      : buf_(buf), pos_(begin), end_(end) {}

  // False at the end of the message; sets `failed()` on malformed input.
  bool next(ProtoField& f) {
    if (pos_ >= end_ || failed_) return false;
    auto key = varint();
    if (!key) return fail();
    f.number = static_cast<std::uint32_t>(*key >> 3);
    f.wire_type = static_cast<std::uint32_t>(*key & 7);
    if (f.number == 0) return fail();
    switch (f.wire_type) {
      case 0: {
        auto v = varint();
        if (!v) return fail();
        f.varint = *v;
        return true;
      }
      case 1:
        return skip(8);
      case 5:
        return skip(4);
      case 2: {
        auto len = varint();
        if (!len || *len > end_ - pos_) return fail();
        f.data_offset = pos_;
        f.data_size = static_cast<std::size_t>(*len);
        pos_ += f.data_size;
        return true;
      }
      default:
        return fail();  // groups (3, 4) are not used by ONNX
    }
  }
  bool failed() const { return failed_; }

 private:
  std::optional<std::uint64_t> varint() {
    std::uint64_t v = 0;
    for (int shift = 0; shift < 64 && pos_ < end_; shift += 7) {
      auto b = static_cast<unsigned char>(buf_[pos_++]);
      v |= static_cast<std::uint64_t>(b & 0x7f) << shift;
      if (!(b & 0x80)) return v;
    }
    return std::nullopt;
  }
  bool skip(std::size_t n) {
    if (n > end_ - pos_) return fail();
    pos_ += n;
    return true;
  }
  bool fail() {
    failed_ = true;
    return false;
  }
  std::string_view buf_;
  std::size_t pos_, end_;
  bool failed_ = false;
};

// onnx.proto TensorProto.DataType -> bytes per element.
std::size_t onnx_element_size(std::uint64_t data_type) {
  switch (data_type) {
    case 1:   // FLOAT
    case 6:   // INT32
    case 12:  // UINT32
      return 4;
    case 7:   // INT64
    case 11:  // DOUBLE
    case 13:  // UINT64
      return 8;
    case 4:   // UINT16
    case 5:   // INT16
    case 10:  // FLOAT16
    case 16:  // BFLOAT16
      return 2;
    default:
      return 1;
  }
}

// Reads one TensorProto spanning [begin, end); false if malformed. `region` is left without
// data (size 0) when the tensor keeps its values elsewhere (external data, string data).
bool parse_onnx_tensor(std::string_view file, std::size_t begin, std::size_t end,
                       TensorRegion& region) {
  ProtoReader tensor(file, begin, end);
  ProtoField t;
  std::uint64_t data_type = 0;
  while (tensor.next(t)) {
    if (t.number == 2 && t.wire_type == 0) data_type = t.varint;
    if (t.number == 8 && t.wire_type == 2) {
      region.name.assign(file.substr(t.data_offset, t.data_size));
    }
    // raw_data, or packed float_data/int32_data/int64_data/double_data/uint64_data.
    bool typed =
        (t.number == 4 || t.number == 5 || t.number == 7 || t.number == 10 || t.number == 11);
    if ((t.number == 9 || typed) && t.wire_type == 2 && t.data_size > 0) {
      region.offset = t.data_offset;
      region.size = t.data_size;
    }
  }
  region.element_size = onnx_element_size(data_type);
  return !tensor.failed();
}

// Tensors held in node attributes: Constant nodes ("value") and others. Exporters such as
// Paddle2ONNX store every weight this way instead of as initializers.
bool parse_onnx_node(std::string_view file, std::size_t begin, std::size_t end,
                     std::vector<TensorRegion>& out) {
  ProtoReader node(file, begin, end);
  ProtoField n;
  std::string first_output;
  std::vector<TensorRegion> found;
  while (node.next(n)) {
    if (n.number == 2 && n.wire_type == 2 && first_output.empty()) {
      first_output.assign(file.substr(n.data_offset, n.data_size));
    }
    if (n.number != 5 || n.wire_type != 2) continue;  // AttributeProto
    ProtoReader attr(file, n.data_offset, n.data_offset + n.data_size);
    ProtoField a;
    std::string attr_name;
    while (attr.next(a)) {
      if (a.number == 1 && a.wire_type == 2)
        attr_name.assign(file.substr(a.data_offset, a.data_size));
      if (a.number != 5 || a.wire_type != 2) continue;  // t: TensorProto
      TensorRegion region;
      if (!parse_onnx_tensor(file, a.data_offset, a.data_offset + a.data_size, region)) {
        return false;
      }
      if (region.size == 0) continue;
      if (region.name.empty()) region.name = "@" + attr_name;
      found.push_back(std::move(region));
    }
    if (attr.failed()) return false;
  }
  if (node.failed()) return false;
  for (auto& r : found) {
    // A Constant's tensor is usually unnamed: the node's output names it.
    if (!r.name.empty() && r.name.front() == '@') r.name = first_output + r.name;
    out.push_back(std::move(r));
  }
  return true;
}

std::optional<TensorLayout> parse_onnx(std::string_view file) {
  // ModelProto: 1 ir_version (varint), 7 graph (GraphProto). GraphProto: 5 initializer
  // (TensorProto). TensorProto: 2 data_type, 8 name, 9 raw_data; 4/5/6/7/10/11 typed data.
  TensorLayout layout;
  layout.format = ModelFormat::kOnnx;
  ProtoReader model(file, 0, file.size());
  ProtoField f;
  bool has_ir_version = false, has_graph = false;
  while (model.next(f)) {
    if (f.number == 1 && f.wire_type == 0) has_ir_version = true;
    if (f.number != 7 || f.wire_type != 2) continue;
    has_graph = true;
    ProtoReader graph(file, f.data_offset, f.data_offset + f.data_size);
    ProtoField g;
    while (graph.next(g)) {
      if (g.wire_type != 2) continue;
      if (g.number == 1) {
        if (!parse_onnx_node(file, g.data_offset, g.data_offset + g.data_size, layout.tensors)) {
          return std::nullopt;
        }
        continue;
      }
      if (g.number != 5) continue;
      TensorRegion region;
      if (!parse_onnx_tensor(file, g.data_offset, g.data_offset + g.data_size, region)) {
        return std::nullopt;
      }
      if (region.size == 0) continue;
      layout.tensors.push_back(std::move(region));
    }
    if (graph.failed()) return std::nullopt;
  }
  if (model.failed() || !has_ir_version || !has_graph) return std::nullopt;
  return layout;
}

// ---- flatbuffers (https://flatbuffers.dev/internals/) for the TFLite schema ----

class FlatReader {
 public:
  explicit FlatReader(std::string_view buf) : buf_(buf) {}

  std::optional<std::uint32_t> u32(std::size_t pos) const {
    if (pos > buf_.size() || buf_.size() - pos < 4) return std::nullopt;
    std::uint32_t v;
    std::memcpy(&v, buf_.data() + pos, 4);  // flatbuffers are little-endian, as are our targets
    return v;
  }
  std::optional<std::uint16_t> u16(std::size_t pos) const {
    if (pos > buf_.size() || buf_.size() - pos < 2) return std::nullopt;
    std::uint16_t v;
    std::memcpy(&v, buf_.data() + pos, 2);
    return v;
  }
  // Position of field `index` of the table at `table`, or 0 when absent; nullopt if malformed.
  std::optional<std::size_t> field(std::size_t table, unsigned index) const {
    auto soff = u32(table);
    if (!soff) return std::nullopt;
    auto signed_off = static_cast<std::int32_t>(*soff);
    std::int64_t vtable = static_cast<std::int64_t>(table) - signed_off;
    if (vtable < 0) return std::nullopt;
    auto vsize = u16(static_cast<std::size_t>(vtable));
    if (!vsize) return std::nullopt;
    std::size_t entry = 4 + 2 * static_cast<std::size_t>(index);
    if (entry + 2 > *vsize) return std::size_t{0};
    auto off = u16(static_cast<std::size_t>(vtable) + entry);
    if (!off) return std::nullopt;
    return *off == 0 ? std::size_t{0} : table + *off;
  }
  // Follows a uoffset stored at `pos`.
  std::optional<std::size_t> deref(std::size_t pos) const {
    auto off = u32(pos);
    if (!off || *off > buf_.size() - pos) return std::nullopt;
    return pos + *off;
  }
  // A vector at `vec`: its element count, checked against the buffer for `element_size`.
  std::optional<std::uint32_t> vector_length(std::size_t vec, std::size_t element_size) const {
    auto n = u32(vec);
    if (!n || static_cast<std::uint64_t>(*n) * element_size > buf_.size() - vec - 4) {
      return std::nullopt;
    }
    return n;
  }
  std::string_view buf() const { return buf_; }

 private:
  std::string_view buf_;
};

std::size_t tflite_element_size(int type) {
  switch (type) {
    case 0:   // FLOAT32
    case 2:   // INT32
    case 15:  // UINT32
      return 4;
    case 1:   // FLOAT16
    case 7:   // INT16
    case 16:  // UINT16
      return 2;
    case 4:   // INT64
    case 10:  // FLOAT64
    case 12:  // UINT64
      return 8;
    default:
      return 1;
  }
}

std::optional<TensorLayout> parse_tflite(std::string_view file) {
  // Model: 0 version, 1 operator_codes, 2 subgraphs, 3 description, 4 buffers.
  // SubGraph: 0 tensors. Tensor: 0 shape, 1 type (byte), 2 buffer (uint), 3 name.
  // Buffer: 0 data ([ubyte]).
  if (file.size() < 8 || file.substr(4, 4) != "TFL3") return std::nullopt;
  FlatReader fb(file);
  auto root = fb.deref(0);
  if (!root) return std::nullopt;
  // Names and element types of buffers, from the tensors that use them.
  std::map<std::uint32_t, std::pair<std::string, std::size_t>> buffer_info;
  auto subgraphs_field = fb.field(*root, 2);
  if (!subgraphs_field) return std::nullopt;
  if (*subgraphs_field) {
    auto subgraphs = fb.deref(*subgraphs_field);
    if (!subgraphs) return std::nullopt;
    auto n = fb.vector_length(*subgraphs, 4);
    if (!n) return std::nullopt;
    for (std::uint32_t i = 0; i < *n; ++i) {
      auto sg = fb.deref(*subgraphs + 4 + 4 * std::size_t{i});
      if (!sg) return std::nullopt;
      auto tensors_field = fb.field(*sg, 0);
      if (!tensors_field) return std::nullopt;
      if (!*tensors_field) continue;
      auto tensors = fb.deref(*tensors_field);
      if (!tensors) return std::nullopt;
      auto nt = fb.vector_length(*tensors, 4);
      if (!nt) return std::nullopt;
      for (std::uint32_t j = 0; j < *nt; ++j) {
        auto t = fb.deref(*tensors + 4 + 4 * std::size_t{j});
        if (!t) return std::nullopt;
        auto type_f = fb.field(*t, 1), buf_f = fb.field(*t, 2), name_f = fb.field(*t, 3);
        if (!type_f || !buf_f || !name_f) return std::nullopt;
        int type = 0;
        if (*type_f) {
          if (*type_f >= file.size()) return std::nullopt;
          type = static_cast<unsigned char>(file[*type_f]);
        }
        std::uint32_t buffer = 0;
        if (*buf_f) {
          auto b = fb.u32(*buf_f);
          if (!b) return std::nullopt;
          buffer = *b;
        }
        std::string name;
        if (*name_f) {
          auto s = fb.deref(*name_f);
          if (!s) return std::nullopt;
          auto len = fb.vector_length(*s, 1);
          if (!len) return std::nullopt;
          name.assign(file.substr(*s + 4, *len));
        }
        if (buffer != 0 && !buffer_info.count(buffer)) {
          buffer_info[buffer] = {std::move(name), tflite_element_size(type)};
        }
      }
    }
  }
  TensorLayout layout;
  layout.format = ModelFormat::kTflite;
  auto buffers_field = fb.field(*root, 4);
  if (!buffers_field) return std::nullopt;
  if (!*buffers_field) return layout;
  auto buffers = fb.deref(*buffers_field);
  if (!buffers) return std::nullopt;
  auto n = fb.vector_length(*buffers, 4);
  if (!n) return std::nullopt;
  for (std::uint32_t i = 0; i < *n; ++i) {
    auto b = fb.deref(*buffers + 4 + 4 * std::size_t{i});
    if (!b) return std::nullopt;
    auto data_f = fb.field(*b, 0);
    if (!data_f) return std::nullopt;
    if (!*data_f) continue;  // empty, or stored past the flatbuffer (offset/size fields)
    auto data = fb.deref(*data_f);
    if (!data) return std::nullopt;
    auto len = fb.vector_length(*data, 1);
    if (!len) return std::nullopt;
    if (*len == 0) continue;
    TensorRegion region;
    auto it = buffer_info.find(i);
    region.name = it != buffer_info.end() && !it->second.first.empty()
                      ? it->second.first
                      : "buffer#" + std::to_string(i);
    region.element_size = it != buffer_info.end() ? it->second.second : 1;
    region.offset = *data + 4;
    region.size = *len;
    layout.tensors.push_back(std::move(region));
  }
  return layout;
}

// Sorts, and drops the layout if regions overlap or names repeat (deltas match tensors by name).
TensorLayout normalized(TensorLayout layout) {
  std::sort(layout.tensors.begin(), layout.tensors.end(),
            [](const TensorRegion& a, const TensorRegion& b) { return a.offset < b.offset; });
  std::map<std::string, int> seen;
  std::size_t end = 0;
  for (auto& t : layout.tensors) {
    if (t.offset < end || seen[t.name]++ > 0) return TensorLayout{};
    end = t.offset + t.size;
  }
  return layout;
}

}  // namespace

TensorLayout find_tensors(std::string_view file) {
  if (auto tfl = parse_tflite(file)) return normalized(std::move(*tfl));
  if (auto onnx = parse_onnx(file)) return normalized(std::move(*onnx));
  return TensorLayout{};
}

}  // namespace cairn::modelpkg
