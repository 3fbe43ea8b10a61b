#include "infer/tensor.hpp"

#include <algorithm>
#include <bit>
#include <charconv>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>

namespace cairn::infer {

namespace {

struct TypeName {
  DataType type;
  std::string_view name;
  std::size_t size;
};

constexpr TypeName kTypes[] = {
    {DataType::kBool, "BOOL", 1},     {DataType::kUint8, "UINT8", 1},
    {DataType::kUint16, "UINT16", 2}, {DataType::kUint32, "UINT32", 4},
    {DataType::kUint64, "UINT64", 8}, {DataType::kInt8, "INT8", 1},
    {DataType::kInt16, "INT16", 2},   {DataType::kInt32, "INT32", 4},
    {DataType::kInt64, "INT64", 8},   {DataType::kFp16, "FP16", 2},
    {DataType::kBf16, "BF16", 2},     {DataType::kFp32, "FP32", 4},
    {DataType::kFp64, "FP64", 8},     {DataType::kBytes, "BYTES", 0},
};

Error bad(std::string message) { return make_error(errc::invalid_argument, std::move(message)); }

// A JSON number (or, for floating types, "NaN"/"Infinity"/"-Infinity") as a double.
std::optional<double> json_float(const nlohmann::json& v) {
  if (v.is_number()) return v.get<double>();
  if (v.is_string()) {
    const auto& s = v.get_ref<const std::string&>();
    if (s == "NaN" || s == "nan") return std::numeric_limits<double>::quiet_NaN();
    if (s == "Infinity" || s == "inf") return std::numeric_limits<double>::infinity();
    if (s == "-Infinity" || s == "-inf") return -std::numeric_limits<double>::infinity();
  }
  return std::nullopt;
}

template <class T>
bool json_integer(const nlohmann::json& v, T& out) {
  if (v.is_number_unsigned()) {
    const auto u = v.get<std::uint64_t>();
    if (u > static_cast<std::uint64_t>(std::numeric_limits<T>::max())) return false;
    out = static_cast<T>(u);
    return true;
  }
  if (v.is_number_integer()) {
    const auto i = v.get<std::int64_t>();
    if constexpr (std::is_unsigned_v<T>) {
      if (i < 0 || static_cast<std::uint64_t>(i) > std::numeric_limits<T>::max()) return false;
    } else {
      if (i < std::numeric_limits<T>::min() || i > std::numeric_limits<T>::max()) return false;
    }
    out = static_cast<T>(i);
    return true;
  }
  if (v.is_boolean()) {
    out = static_cast<T>(v.get<bool>() ? 1 : 0);
    return true;
  }
  return false;
}

template <class T>
void append_raw(std::string& data, T value) {
  char bytes[sizeof(T)];
  std::memcpy(bytes, &value, sizeof(T));
  data.append(bytes, sizeof(T));
}

template <class T>
T read_raw(const std::string& data, std::size_t index) {
  T value;
  std::memcpy(&value, data.data() + index * sizeof(T), sizeof(T));
  return value;
}

// Appends one JSON element converted to `dtype`.
Status append_element(const nlohmann::json& v, DataType dtype, Tensor& out, std::size_t index) {
  auto mismatch = [&] {
    return bad("element " + std::to_string(index) + " (" + v.dump().substr(0, 40) +
               ") is not a valid " + std::string(to_string(dtype)));
  };
  switch (dtype) {
    case DataType::kBool: {
      if (v.is_boolean()) {
        out.data.push_back(v.get<bool>() ? char{1} : char{0});
      } else if (v.is_number_integer() &&
                 (v.get<std::int64_t>() == 0 || v.get<std::int64_t>() == 1)) {
        out.data.push_back(static_cast<char>(v.get<std::int64_t>()));
      } else {
        return mismatch();
      }
      return {};
    }
#define CAIRN_INT_CASE(K, T)                        \
  case DataType::K: {                               \
    T value{};                                      \
    if (!json_integer(v, value)) return mismatch(); \
    append_raw(out.data, value);                    \
    return {};                                      \
  }
      CAIRN_INT_CASE(kUint8, std::uint8_t)
      CAIRN_INT_CASE(kUint16, std::uint16_t)
      CAIRN_INT_CASE(kUint32, std::uint32_t)
      CAIRN_INT_CASE(kUint64, std::uint64_t)
      CAIRN_INT_CASE(kInt8, std::int8_t)
      CAIRN_INT_CASE(kInt16, std::int16_t)
      CAIRN_INT_CASE(kInt32, std::int32_t)
      CAIRN_INT_CASE(kInt64, std::int64_t)
#undef CAIRN_INT_CASE
    case DataType::kFp16:
    case DataType::kBf16:
    case DataType::kFp32:
    case DataType::kFp64: {
      auto d = json_float(v);
      if (!d) return mismatch();
      if (dtype == DataType::kFp64) {
        append_raw(out.data, *d);
      } else {
        const auto f = static_cast<float>(*d);
        if (dtype == DataType::kFp32) append_raw(out.data, f);
        if (dtype == DataType::kFp16) append_raw(out.data, float_to_fp16(f));
        if (dtype == DataType::kBf16) append_raw(out.data, float_to_bf16(f));
      }
      return {};
    }
    case DataType::kBytes:
      if (!v.is_string()) return mismatch();
      out.strings.push_back(v.get<std::string>());
      return {};
  }
  return mismatch();
}

nlohmann::json float_json(double d) {
  if (std::isnan(d)) return "NaN";
  if (std::isinf(d)) return d > 0 ? "Infinity" : "-Infinity";
  return d;
}

nlohmann::json element_json(const Tensor& t, std::size_t i) {
  switch (t.dtype) {
    case DataType::kBool:
      return t.data[i] != 0;
    case DataType::kUint8:
      return read_raw<std::uint8_t>(t.data, i);
    case DataType::kUint16:
      return read_raw<std::uint16_t>(t.data, i);
    case DataType::kUint32:
      return read_raw<std::uint32_t>(t.data, i);
    case DataType::kUint64:
      return read_raw<std::uint64_t>(t.data, i);
    case DataType::kInt8:
      return read_raw<std::int8_t>(t.data, i);
    case DataType::kInt16:
      return read_raw<std::int16_t>(t.data, i);
    case DataType::kInt32:
      return read_raw<std::int32_t>(t.data, i);
    case DataType::kInt64:
      return read_raw<std::int64_t>(t.data, i);
    case DataType::kFp16:
      return float_json(fp16_to_float(read_raw<std::uint16_t>(t.data, i)));
    case DataType::kBf16:
      return float_json(bf16_to_float(read_raw<std::uint16_t>(t.data, i)));
    case DataType::kFp32:
      return float_json(read_raw<float>(t.data, i));
    case DataType::kFp64:
      return float_json(read_raw<double>(t.data, i));
    case DataType::kBytes:
      return t.strings[i];
  }
  return nullptr;
}

}  // namespace

std::string_view to_string(DataType t) noexcept {
  for (const auto& e : kTypes) {
    if (e.type == t) return e.name;
  }
  return "?";
}

std::optional<DataType> parse_datatype(std::string_view name) noexcept {
  for (const auto& e : kTypes) {
    if (e.name == name) return e.type;
  }
  return std::nullopt;
}

std::size_t element_size(DataType t) noexcept {
  for (const auto& e : kTypes) {
    if (e.type == t) return e.size;
  }
  return 0;
}

std::optional<std::size_t> Tensor::element_count() const {
  std::size_t n = 1;
  for (auto d : shape) {
    if (d < 0) return std::nullopt;
    const auto u = static_cast<std::size_t>(d);
    if (u != 0 && n > std::numeric_limits<std::size_t>::max() / u) return std::nullopt;
    n *= u;
  }
  return n;
}

Status Tensor::check_consistent() const {
  auto n = element_count();
  if (!n) return bad("tensor '" + name + "': invalid shape");
  if (dtype == DataType::kBytes) {
    if (strings.size() != *n) {
      return bad("tensor '" + name + "': shape holds " + std::to_string(*n) + " elements, got " +
                 std::to_string(strings.size()));
    }
    return {};
  }
  const auto size = element_size(dtype);
  if (*n > std::numeric_limits<std::size_t>::max() / size || data.size() != *n * size) {
    return bad("tensor '" + name + "': shape needs " + std::to_string(*n) + " elements of " +
               std::to_string(size) + " bytes, got " + std::to_string(data.size()) + " bytes");
  }
  return {};
}

std::string shape_text(const std::vector<std::int64_t>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ",";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

nlohmann::json to_json(const TensorInfo& info) {
  return {{"name", info.name}, {"datatype", to_string(info.dtype)}, {"shape", info.shape}};
}

Status tensor_from_json(const nlohmann::json& data, bool infer_shape, Tensor& out) {
  out.data.clear();
  out.strings.clear();
  std::vector<std::int64_t> shape;
  if (!data.is_array()) {
    if (!infer_shape) return bad("tensor '" + out.name + "': \"data\" must be an array");
    shape = {};  // a scalar
  } else {
    // Shape from the first element at each level; checked for rectangularity while walking.
    const nlohmann::json* level = &data;
    while (level->is_array()) {
      shape.push_back(static_cast<std::int64_t>(level->size()));
      if (level->empty()) break;
      level = &(*level)[0];
    }
  }
  std::size_t index = 0;
  // Depth-first walk without recursion limits of our own: the HTTP layer bounds nesting depth.
  struct Frame {
    const nlohmann::json* array;
    std::size_t next;
  };
  std::vector<Frame> stack;
  if (data.is_array()) {
    stack.push_back({&data, 0});
  } else {
    CAIRN_TRY(append_element(data, out.dtype, out, index++));
  }
  while (!stack.empty()) {
    auto& top = stack.back();
    if (top.next == top.array->size()) {
      stack.pop_back();
      continue;
    }
    const auto& v = (*top.array)[top.next++];
    if (v.is_array()) {
      if (infer_shape && (stack.size() >= shape.size() ||
                          static_cast<std::int64_t>(v.size()) != shape[stack.size()])) {
        return bad("tensor '" + out.name + "': nested arrays are not rectangular");
      }
      stack.push_back({&v, 0});
      continue;
    }
    if (infer_shape && stack.size() != shape.size()) {
      return bad("tensor '" + out.name + "': nested arrays are not rectangular");
    }
    CAIRN_TRY(append_element(v, out.dtype, out, index++));
  }
  if (infer_shape) out.shape = std::move(shape);
  return out.check_consistent();
}

nlohmann::json tensor_to_json(const Tensor& t, bool nested) {
  const std::size_t n = t.element_count().value_or(0);
  auto flat = nlohmann::json::array();
  for (std::size_t i = 0; i < n; ++i) flat.push_back(element_json(t, i));
  if (!nested || t.shape.size() <= 1) {
    if (nested && t.shape.empty() && n == 1) return flat[0];
    return flat;
  }
  // Group innermost dimension first.
  nlohmann::json level = std::move(flat);
  for (std::size_t d = t.shape.size() - 1; d > 0; --d) {
    const auto width = static_cast<std::size_t>(t.shape[d]);
    auto grouped = nlohmann::json::array();
    for (std::size_t i = 0; width != 0 && i < level.size(); i += width) {
      auto group = nlohmann::json::array();
      for (std::size_t j = 0; j < width; ++j) group.push_back(std::move(level[i + j]));
      grouped.push_back(std::move(group));
    }
    level = std::move(grouped);
  }
  return level;
}

namespace {

bool json_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }
bool digit(char c) { return c >= '0' && c <= '9'; }

// The fast reader of tensor_from_json_text. Every method returns false when the text needs
// the general path (which then gives the verdict), never an error of its own.
class TensorTextReader {
 public:
  TensorTextReader(std::string_view text, Tensor& out)
      : p_(text.data()), end_(text.data() + text.size()), out_(out) {}

  bool read(bool infer_shape) {
    space();
    if (p_ == end_) return false;
    if (*p_ != '[') {
      if (!infer_shape || !element()) return false;
      shape_.clear();
    } else if (!arrays()) {
      return false;
    }
    space();
    if (p_ != end_) return false;
    if (infer_shape) out_.shape = std::move(shape_);
    return true;
  }

 private:
  void space() {
    while (p_ != end_ && json_space(*p_)) ++p_;
  }

  // Nested arrays, rectangular, elements all at the same depth.
  bool arrays() {
    std::vector<std::int64_t> counts;  // values so far in each open array
    std::size_t leaf_depth = 0;        // open arrays around an element; 0: none seen yet
    for (;;) {
      // A value: an array or an element.
      space();
      if (p_ == end_) return false;
      if (*p_ == '[') {
        if (leaf_depth && counts.size() >= leaf_depth) return false;
        if (!counts.empty()) ++counts.back();
        ++p_;
        counts.push_back(0);
        if (shape_.size() < counts.size()) shape_.push_back(-1);
        space();
        if (p_ == end_) return false;
        if (*p_ != ']') continue;  // on to the array's first value
      } else {
        if (counts.empty()) return false;
        if (!leaf_depth) leaf_depth = counts.size();
        if (counts.size() != leaf_depth || !element()) return false;
        ++counts.back();
        space();
        if (p_ == end_) return false;
      }
      // After a value: ']'s closing arrays, then ',' and the next value.
      while (*p_ == ']') {
        ++p_;
        auto& dim = shape_[counts.size() - 1];
        if (dim < 0) {
          dim = counts.back();
        } else if (dim != counts.back()) {
          return false;
        }
        counts.pop_back();
        if (counts.empty()) return true;
        space();
        if (p_ == end_) return false;
      }
      if (*p_ != ',') return false;
      ++p_;
    }
  }

  // One number, literal or string element, converted to the tensor's type.
  bool element() {
    if (*p_ == '"') return string_element();
    if (*p_ == 't' || *p_ == 'f') {
      const bool value = *p_ == 't';
      const std::string_view word = value ? "true" : "false";
      if (static_cast<std::size_t>(end_ - p_) < word.size() ||
          std::string_view(p_, word.size()) != word) {
        return false;
      }
      p_ += word.size();
      return boolean(value);
    }
    return number();
  }

  bool boolean(bool value) {
    switch (out_.dtype) {
      case DataType::kBool:
        out_.data.push_back(value ? char{1} : char{0});
        return true;
      case DataType::kUint8:
        return put<std::uint8_t>(value);
      case DataType::kUint16:
        return put<std::uint16_t>(value);
      case DataType::kUint32:
        return put<std::uint32_t>(value);
      case DataType::kUint64:
        return put<std::uint64_t>(value);
      case DataType::kInt8:
        return put<std::int8_t>(value);
      case DataType::kInt16:
        return put<std::int16_t>(value);
      case DataType::kInt32:
        return put<std::int32_t>(value);
      case DataType::kInt64:
        return put<std::int64_t>(value);
      default:
        return false;  // floating types do not take booleans
    }
  }

  template <class T>
  bool put(T value) {
    append_raw(out_.data, value);
    return true;
  }

  // A JSON number token, classified as JSON's grammar and nlohmann (integer when it has no
  // fraction or exponent and fits 64 bits) classify it.
  bool number() {
    const char* start = p_;
    const char* q = p_;
    if (q != end_ && *q == '-') ++q;
    if (q == end_ || !digit(*q)) return false;
    if (*q == '0') {
      ++q;
    } else {
      while (q != end_ && digit(*q)) ++q;
    }
    bool integer = true;
    if (q != end_ && *q == '.') {
      integer = false;
      ++q;
      if (q == end_ || !digit(*q)) return false;
      while (q != end_ && digit(*q)) ++q;
    }
    if (q != end_ && (*q == 'e' || *q == 'E')) {
      integer = false;
      ++q;
      if (q != end_ && (*q == '+' || *q == '-')) ++q;
      if (q == end_ || !digit(*q)) return false;
      while (q != end_ && digit(*q)) ++q;
    }
    p_ = q;
    const bool negative = *start == '-';
    std::uint64_t u = 0;
    std::int64_t i = 0;
    if (integer) {
      const auto r = negative ? std::from_chars(start, q, i) : std::from_chars(start, q, u);
      if (r.ec != std::errc()) integer = false;  // beyond 64 bits: a floating number
    }
    switch (out_.dtype) {
      case DataType::kBool: {
        const bool one = integer && !negative && u == 1;
        const bool zero = integer && (negative ? i == 0 : u == 0);
        if (!one && !zero) return false;
        out_.data.push_back(one ? char{1} : char{0});
        return true;
      }
#define CAIRN_FAST_INT_CASE(K, T) \
  case DataType::K:               \
    return integer && fits<T>(negative, u, i);
        CAIRN_FAST_INT_CASE(kUint8, std::uint8_t)
        CAIRN_FAST_INT_CASE(kUint16, std::uint16_t)
        CAIRN_FAST_INT_CASE(kUint32, std::uint32_t)
        CAIRN_FAST_INT_CASE(kUint64, std::uint64_t)
        CAIRN_FAST_INT_CASE(kInt8, std::int8_t)
        CAIRN_FAST_INT_CASE(kInt16, std::int16_t)
        CAIRN_FAST_INT_CASE(kInt32, std::int32_t)
        CAIRN_FAST_INT_CASE(kInt64, std::int64_t)
#undef CAIRN_FAST_INT_CASE
      case DataType::kFp16:
      case DataType::kBf16:
      case DataType::kFp32:
      case DataType::kFp64: {
        double d = 0;
        if (integer) {
          // As nlohmann reads it: "-0" is the integer 0.
          d = negative ? static_cast<double>(i) : static_cast<double>(u);
        } else {
          const auto r = std::from_chars(start, q, d);
          if (r.ec != std::errc() || r.ptr != q) return false;  // out of range: general path
        }
        floating(d);
        return true;
      }
      case DataType::kBytes:
        return false;
    }
    return false;
  }

  template <class T>
  bool fits(bool negative, std::uint64_t u, std::int64_t i) {
    if (negative) {
      if constexpr (std::is_unsigned_v<T>) {
        if (i != 0) return false;
      } else {
        if (i < std::numeric_limits<T>::min()) return false;
      }
      return put(static_cast<T>(i));
    }
    if (u > static_cast<std::uint64_t>(std::numeric_limits<T>::max())) return false;
    return put(static_cast<T>(u));
  }

  void floating(double d) {
    switch (out_.dtype) {
      case DataType::kFp64:
        append_raw(out_.data, d);
        return;
      case DataType::kFp32:
        append_raw(out_.data, static_cast<float>(d));
        return;
      case DataType::kFp16:
        append_raw(out_.data, float_to_fp16(static_cast<float>(d)));
        return;
      case DataType::kBf16:
        append_raw(out_.data, float_to_bf16(static_cast<float>(d)));
        return;
      default:
        return;
    }
  }

  // "NaN", "Infinity" and their kin for floating types, written without escapes.
  bool string_element() {
    const char* q = p_ + 1;
    while (q != end_ && *q != '"' && *q != '\\') ++q;
    if (q == end_ || *q != '"') return false;
    const std::string_view s(p_ + 1, static_cast<std::size_t>(q - p_ - 1));
    p_ = q + 1;
    if (out_.dtype != DataType::kFp16 && out_.dtype != DataType::kBf16 &&
        out_.dtype != DataType::kFp32 && out_.dtype != DataType::kFp64) {
      return false;
    }
    if (s == "NaN" || s == "nan") {
      floating(std::numeric_limits<double>::quiet_NaN());
    } else if (s == "Infinity" || s == "inf") {
      floating(std::numeric_limits<double>::infinity());
    } else if (s == "-Infinity" || s == "-inf") {
      floating(-std::numeric_limits<double>::infinity());
    } else {
      return false;
    }
    return true;
  }

  const char* p_;
  const char* end_;
  Tensor& out_;
  std::vector<std::int64_t> shape_;
};

// One element as JSON text, as element_json would give it (floats in their own precision).
void append_element_text(std::string& out, const Tensor& t, std::size_t i) {
  char buf[64];
  auto integer = [&](auto v) {
    const auto r = std::to_chars(buf, buf + sizeof buf, v);
    out.append(buf, r.ptr);
  };
  auto floating = [&](auto v) {
    if (std::isnan(v)) {
      out += "\"NaN\"";
    } else if (std::isinf(v)) {
      out += v > 0 ? "\"Infinity\"" : "\"-Infinity\"";
    } else {
      const auto r = std::to_chars(buf, buf + sizeof buf, v);
      out.append(buf, r.ptr);
      // "1.0", not "1": a floating value stays a floating number for the reader.
      if (std::string_view(buf, r.ptr).find_first_of(".e") == std::string_view::npos) {
        out += ".0";
      }
    }
  };
  switch (t.dtype) {
    case DataType::kBool:
      out += t.data[i] != 0 ? "true" : "false";
      return;
    case DataType::kUint8:
      return integer(read_raw<std::uint8_t>(t.data, i));
    case DataType::kUint16:
      return integer(read_raw<std::uint16_t>(t.data, i));
    case DataType::kUint32:
      return integer(read_raw<std::uint32_t>(t.data, i));
    case DataType::kUint64:
      return integer(read_raw<std::uint64_t>(t.data, i));
    case DataType::kInt8:
      return integer(read_raw<std::int8_t>(t.data, i));
    case DataType::kInt16:
      return integer(read_raw<std::int16_t>(t.data, i));
    case DataType::kInt32:
      return integer(read_raw<std::int32_t>(t.data, i));
    case DataType::kInt64:
      return integer(read_raw<std::int64_t>(t.data, i));
    case DataType::kFp16:
      return floating(fp16_to_float(read_raw<std::uint16_t>(t.data, i)));
    case DataType::kBf16:
      return floating(bf16_to_float(read_raw<std::uint16_t>(t.data, i)));
    case DataType::kFp32:
      return floating(read_raw<float>(t.data, i));
    case DataType::kFp64:
      return floating(read_raw<double>(t.data, i));
    case DataType::kBytes:
      return;  // not written here
  }
}

}  // namespace

Status tensor_from_json_text(std::string_view text, bool infer_shape, Tensor& out) {
  out.data.clear();
  out.strings.clear();
  if (out.dtype != DataType::kBytes) {
    if (!infer_shape) {
      // The declared shape is the client's word: reserve no more than the text can hold (each
      // element takes at least two characters), so a huge shape with little data is refused
      // as inconsistent rather than allocated.
      if (auto n = out.element_count()) {
        out.data.reserve(std::min<std::size_t>(*n, text.size() / 2 + 1) * element_size(out.dtype));
      }
    }
    if (TensorTextReader(text, out).read(infer_shape)) return out.check_consistent();
  }
  auto parsed = nlohmann::json::parse(text, nullptr, false);
  if (parsed.is_discarded()) return bad("tensor '" + out.name + "': the data is not valid JSON");
  return tensor_from_json(parsed, infer_shape, out);
}

void append_tensor_json(std::string& out, const Tensor& t, bool nested) {
  if (t.dtype == DataType::kBytes) {
    out += tensor_to_json(t, nested).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    return;
  }
  const std::size_t n = t.element_count().value_or(0);
  if (nested && t.shape.empty() && n == 1) {
    append_element_text(out, t, 0);
    return;
  }
  // Nested by the shape: a '[' opens at each boundary of a dimension, a ']' closes it. A tensor
  // with no elements is "[]" either way, as tensor_to_json gives it.
  const std::size_t dims = nested && n > 0 && t.shape.size() > 1 ? t.shape.size() : 1;
  std::vector<std::size_t> strides(dims, 1);  // elements per group of each dimension
  for (std::size_t d = dims - 1; d > 0; --d) {
    strides[d - 1] = strides[d] * static_cast<std::size_t>(t.shape[d]);
  }
  out.reserve(out.size() + n * 12 + 2 * dims);
  out.append(dims, '[');
  for (std::size_t i = 0; i < n; ++i) {
    if (i) {
      std::size_t closes = 0;
      while (closes + 1 < dims && i % strides[dims - 2 - closes] == 0) ++closes;
      out.append(closes, ']');
      out += ',';
      out.append(closes, '[');
    }
    append_element_text(out, t, i);
  }
  out.append(dims, ']');
}

std::string bytes_to_binary(const std::vector<std::string>& strings) {
  std::string out;
  for (const auto& s : strings) {
    append_raw(out, static_cast<std::uint32_t>(s.size()));
    out += s;
  }
  return out;
}

Result<std::vector<std::string>> bytes_from_binary(std::string_view raw, std::size_t count) {
  std::vector<std::string> out;
  std::size_t pos = 0;
  while (pos < raw.size()) {
    if (raw.size() - pos < 4) return bad("BYTES tensor: truncated element length");
    std::uint32_t len;
    std::memcpy(&len, raw.data() + pos, 4);
    pos += 4;
    if (raw.size() - pos < len) return bad("BYTES tensor: element longer than the data");
    out.emplace_back(raw.substr(pos, len));
    pos += len;
    if (out.size() > count) break;
  }
  if (out.size() != count) {
    return bad("BYTES tensor: shape holds " + std::to_string(count) + " elements, data has " +
               std::to_string(out.size()));
  }
  return out;
}

float fp16_to_float(std::uint16_t h) noexcept {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  std::uint32_t exp = (h >> 10) & 0x1fu;
  std::uint32_t mant = h & 0x3ffu;
  std::uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: normalise
      exp = 127 - 15 + 1;
      while ((mant & 0x400u) == 0) {
        mant <<= 1;
        --exp;
      }
      mant &= 0x3ffu;
      bits = sign | (exp << 23) | (mant << 13);
    }
  } else if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  return std::bit_cast<float>(bits);
}

std::uint16_t float_to_fp16(float f) noexcept {
  const auto bits = std::bit_cast<std::uint32_t>(f);
  const auto sign = static_cast<std::uint16_t>((bits >> 16) & 0x8000u);
  const std::uint32_t exp = (bits >> 23) & 0xffu;
  std::uint32_t mant = bits & 0x7fffffu;
  if (exp == 0xff) {  // inf or NaN (keep NaN quiet and non-zero)
    return static_cast<std::uint16_t>(sign | 0x7c00u | (mant ? 0x200u | (mant >> 13) : 0u));
  }
  const int e = static_cast<int>(exp) - 127 + 15;
  if (e >= 0x1f) return static_cast<std::uint16_t>(sign | 0x7c00u);  // overflow: inf
  if (e <= 0) {
    if (e < -10) return sign;  // underflow: signed zero
    mant |= 0x800000u;
    const auto shift = static_cast<std::uint32_t>(14 - e);
    std::uint32_t half = mant >> shift;
    const std::uint32_t rem = mant & ((1u << shift) - 1);
    const std::uint32_t mid = 1u << (shift - 1);
    if (rem > mid || (rem == mid && (half & 1u))) ++half;
    return static_cast<std::uint16_t>(sign | half);
  }
  std::uint32_t half = (static_cast<std::uint32_t>(e) << 10) | (mant >> 13);
  const std::uint32_t rem = mant & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (half & 1u))) ++half;  // may carry into inf: correct
  return static_cast<std::uint16_t>(sign | half);
}

float bf16_to_float(std::uint16_t h) noexcept {
  return std::bit_cast<float>(static_cast<std::uint32_t>(h) << 16);
}

std::uint16_t float_to_bf16(float f) noexcept {
  const auto bits = std::bit_cast<std::uint32_t>(f);
  if ((bits & 0x7f800000u) == 0x7f800000u && (bits & 0x7fffffu)) {
    return static_cast<std::uint16_t>((bits >> 16) | 0x40u);  // NaN stays NaN
  }
  const std::uint32_t rounding = 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<std::uint16_t>((bits + rounding) >> 16);
}

}  // namespace cairn::infer
