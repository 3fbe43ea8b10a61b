#include "infer/input_mapping.hpp"

#include <algorithm>
#include <cctype>

namespace cairn::infer {

namespace {

Error bad(const std::string& message) { return make_error(errc::invalid_argument, message); }

// A value quoted for an error message, cut short.
std::string excerpt(const nlohmann::json& v) {
  std::string s = v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  if (s.size() > 40) s = s.substr(0, 37) + "...";
  return s;
}

Result<InputMapping::Field> parse_field(const nlohmann::json& j, const std::string& where) {
  if (!j.is_string())
    return bad(where + ": a field is a path string such as \"machine.temperature\"");
  InputMapping::Field f;
  f.path = j.get<std::string>();
  if (f.path.empty() || f.path.size() > InputMappingLimits::kMaxPathBytes) {
    return bad(where + ": a field path is 1-" + std::to_string(InputMappingLimits::kMaxPathBytes) +
               " bytes");
  }
  std::size_t pos = 0;
  for (;;) {
    const auto dot = f.path.find('.', pos);
    std::string segment = f.path.substr(pos, dot == std::string::npos ? dot : dot - pos);
    if (segment.empty()) {
      return bad(where + ": '" + f.path + "' has an empty segment (paths are a.b.c)");
    }
    f.segments.push_back(std::move(segment));
    if (dot == std::string::npos) break;
    pos = dot + 1;
  }
  if (f.segments.size() > InputMappingLimits::kMaxPathSegments) {
    return bad(where + ": '" + f.path + "' is deeper than " +
               std::to_string(InputMappingLimits::kMaxPathSegments) + " levels");
  }
  return f;
}

bool all_digits(const std::string& s) {
  return !s.empty() && s.size() <= 9 &&
         std::all_of(s.begin(), s.end(), [](unsigned char c) { return std::isdigit(c); });
}

// The value at `field` in `record`, or null when a step is missing.
const nlohmann::json* lookup(const nlohmann::json& record, const InputMapping::Field& field) {
  const nlohmann::json* at = &record;
  for (const auto& segment : field.segments) {
    if (at->is_object()) {
      auto it = at->find(segment);
      if (it == at->end()) return nullptr;
      at = &*it;
    } else if (at->is_array() && all_digits(segment)) {
      const auto index = std::stoul(segment);
      if (index >= at->size()) return nullptr;
      at = &(*at)[index];
    } else {
      return nullptr;
    }
  }
  return at;
}

}  // namespace

Result<InputMapping> InputMapping::parse(const nlohmann::json& j) {
  const std::string where = "inputMapping";
  if (!j.is_object() || j.empty()) {
    return bad(where +
               ": must be an object naming model inputs, e.g. {\"x\": [\"machine.temperature\"]}");
  }
  if (j.size() > InputMappingLimits::kMaxInputs) {
    return bad(where + ": more than " + std::to_string(InputMappingLimits::kMaxInputs) + " inputs");
  }
  InputMapping m;
  m.source_ = j;
  for (const auto& [name, entry] : j.items()) {
    const std::string at = where + "." + name;
    Input input;
    input.name = name;
    const nlohmann::json* fields = &entry;
    if (entry.is_object()) {
      for (const auto& [key, _] : entry.items()) {
        if (key != "fields" && key != "datatype" && key != "shape") {
          return bad(at + ": unknown member '" + key + "' (fields, datatype, shape)");
        }
      }
      auto f = entry.find("fields");
      if (f == entry.end()) return bad(at + ": needs \"fields\"");
      fields = &*f;
      if (auto d = entry.find("datatype"); d != entry.end()) {
        auto dtype = d->is_string() ? parse_datatype(d->get<std::string>()) : std::nullopt;
        if (!dtype)
          return bad(at + ".datatype: " + excerpt(*d) + " is not a datatype (FP32, INT64...)");
        input.dtype = *dtype;
      }
      if (auto s = entry.find("shape"); s != entry.end()) {
        if (!s->is_array() || s->size() > 8) {
          return bad(at + ".shape: must be an array of at most 8 dimensions");
        }
        for (const auto& d : *s) {
          if (!d.is_number_integer() || d.get<std::int64_t>() < 1) {
            return bad(at + ".shape: dimensions are integers >= 1");
          }
          input.shape.push_back(d.get<std::int64_t>());
        }
      }
    }
    if (!fields->is_array() || fields->empty()) {
      return bad(at + ": the fields are a non-empty array of paths");
    }
    if (fields->size() > InputMappingLimits::kMaxFields) {
      return bad(at + ": more than " + std::to_string(InputMappingLimits::kMaxFields) + " fields");
    }
    for (std::size_t i = 0; i < fields->size(); ++i) {
      auto f = parse_field((*fields)[i], at + ".fields[" + std::to_string(i) + "]");
      if (!f) return f.error();
      input.fields.push_back(std::move(*f));
    }
    m.inputs_.push_back(std::move(input));
  }
  return m;
}

Result<InputMapping> InputMapping::bind(const std::vector<TensorInfo>& signature) const {
  InputMapping bound = *this;
  std::string names;
  for (const auto& s : signature) names += (names.empty() ? "" : ", ") + s.name;
  for (const auto& s : signature) {
    const bool mapped = std::any_of(inputs_.begin(), inputs_.end(),
                                    [&](const Input& i) { return i.name == s.name; });
    if (!mapped) return bad("inputMapping: the model's input '" + s.name + "' is not mapped");
  }
  for (auto& input : bound.inputs_) {
    const std::string at = "inputMapping." + input.name;
    auto info = std::find_if(signature.begin(), signature.end(),
                             [&](const TensorInfo& s) { return s.name == input.name; });
    if (info == signature.end()) {
      return bad(at + ": the model has no input '" + input.name + "' (it has " + names + ")");
    }
    if (input.dtype && *input.dtype != info->dtype) {
      return bad(at + ": datatype " + std::string(to_string(*input.dtype)) +
                 " is stated, the model takes " + std::string(to_string(info->dtype)));
    }
    input.dtype = info->dtype;
    const auto n = static_cast<std::int64_t>(input.fields.size());
    const std::string no_fit = at + ": " + std::to_string(n) + " fields do not fill the model's " +
                               "input shape " + shape_text(info->shape);
    if (!input.shape.empty()) {
      bool fits = input.shape.size() == info->shape.size();
      std::int64_t product = 1;
      for (std::size_t i = 0; i < input.shape.size(); ++i) {
        fits = fits && (info->shape[i] < 0 || info->shape[i] == input.shape[i]);
        product *= input.shape[i];
        if (product > n) break;
      }
      if (!fits) {
        return bad(at + ": shape " + shape_text(input.shape) + " does not fit the model's " +
                   shape_text(info->shape));
      }
      if (product != n) {
        return bad(at + ": shape " + shape_text(input.shape) + " holds " + std::to_string(product) +
                   " elements, the mapping has " + std::to_string(n) + " fields");
      }
      continue;
    }
    std::vector<std::int64_t> shape = info->shape;
    std::int64_t fixed = 1;
    std::optional<std::size_t> last_open;
    for (std::size_t i = 0; i < shape.size(); ++i) {
      if (shape[i] < 0) {
        shape[i] = 1;
        last_open = i;
      } else {
        fixed *= shape[i];
      }
      if (fixed > n) return bad(no_fit);
    }
    if (last_open) {
      if (fixed == 0 || n % fixed != 0) return bad(no_fit);
      shape[*last_open] = n / fixed;
    } else if (fixed != n) {
      return bad(no_fit);
    }
    input.shape = std::move(shape);
  }
  return bound;
}

Result<std::vector<Tensor>> InputMapping::map(const nlohmann::json& record) const {
  if (!record.is_object()) {
    return bad(
        "the record must be a JSON object such as {\"machine\": {\"temperature\": 21.5}}, "
        "not " +
        excerpt(record));
  }
  std::vector<Tensor> out;
  out.reserve(inputs_.size());
  for (const auto& input : inputs_) {
    Tensor t;
    t.name = input.name;
    t.dtype = input.dtype.value_or(DataType::kFp32);
    t.shape = input.shape;
    for (const auto& field : input.fields) {
      const nlohmann::json* v = lookup(record, field);
      if (!v || v->is_null()) {
        return bad("the record has no field '" + field.path + "' (input '" + input.name + "')");
      }
      Tensor one;
      one.name = input.name;
      one.dtype = t.dtype;
      one.shape = {1};
      if (v->is_array() || v->is_object() ||
          !tensor_from_json(nlohmann::json::array({*v}), false, one)) {
        return bad("field '" + field.path + "' is " + excerpt(*v) + ", not a " +
                   std::string(to_string(t.dtype)) + " value (input '" + input.name + "')");
      }
      t.data += one.data;
      t.strings.insert(t.strings.end(), one.strings.begin(), one.strings.end());
    }
    out.push_back(std::move(t));
  }
  return out;
}

nlohmann::json InputMapping::to_json() const {
  nlohmann::json out = nlohmann::json::object();
  for (const auto& input : inputs_) {
    nlohmann::json fields = nlohmann::json::array();
    for (const auto& f : input.fields) fields.push_back(f.path);
    nlohmann::json e{{"fields", std::move(fields)}};
    if (input.dtype) e["datatype"] = std::string(to_string(*input.dtype));
    if (!input.shape.empty()) e["shape"] = input.shape;
    out[input.name] = std::move(e);
  }
  return out;
}

}  // namespace cairn::infer
