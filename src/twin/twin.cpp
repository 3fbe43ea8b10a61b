#include "twin/twin.hpp"

#include <cmath>
#include <cstdio>
#include <limits>
#include <utility>

#include "core/json.hpp"

namespace cairn::twin {
namespace {

constexpr std::string_view kVersionKey = "$version";
constexpr int kStorageFormat = 1;

// Decodes the UTF-8 sequence at s[i], advancing i past it. Rejects overlong forms, surrogates
// and code points above U+10FFFF, as a strict decoder must; leaves i unchanged on failure.
bool next_code_point(std::string_view s, std::size_t& i, char32_t& cp) {
  const auto byte = [&](std::size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char lead = byte(i);
  if (lead < 0x80) {
    cp = lead;
    ++i;
    return true;
  }
  std::size_t length = 0;
  unsigned char min_second = 0x80;
  unsigned char max_second = 0xBF;
  if (lead >= 0xC2 && lead <= 0xDF) {
    length = 2;
    cp = lead & 0x1Fu;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    length = 3;
    cp = lead & 0x0Fu;
    if (lead == 0xE0) min_second = 0xA0;  // overlong
    if (lead == 0xED) max_second = 0x9F;  // UTF-16 surrogates
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    length = 4;
    cp = lead & 0x07u;
    if (lead == 0xF0) min_second = 0x90;  // overlong
    if (lead == 0xF4) max_second = 0x8F;  // above U+10FFFF
  } else {
    return false;
  }
  if (s.size() - i < length) return false;
  for (std::size_t k = 1; k < length; ++k) {
    const unsigned char c = byte(i + k);
    const unsigned char lo = k == 1 ? min_second : 0x80;
    const unsigned char hi = k == 1 ? max_second : 0xBF;
    if (c < lo || c > hi) return false;
    cp = (cp << 6) | (c & 0x3Fu);
  }
  i += length;
  return true;
}

bool valid_utf8(std::string_view s) {
  char32_t cp = 0;
  for (std::size_t i = 0; i < s.size();) {
    if (!next_code_point(s, i, cp)) return false;
  }
  return true;
}

// C0, DEL and C1, as .NET's char.IsControl.
bool is_control(char32_t cp) { return cp < 0x20 || (cp >= 0x7F && cp <= 0x9F); }

// .NET's char.IsWhiteSpace, which edgeHub's validator uses.
bool is_whitespace(char32_t cp) {
  return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F ||
         cp == 0x205F || cp == 0x3000;
}

std::string code_point_name(char32_t cp) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "U+%04X", static_cast<unsigned>(cp));
  return buf;
}

// Text from outside made safe to put in a message: valid UTF-8 out (error messages end up in
// JSON bodies), control characters as U+XXXX, undecodable bytes as \xNN, long text cut short.
std::string printable(std::string_view s, std::size_t max_code_points = 64) {
  std::string out;
  std::size_t count = 0;
  for (std::size_t i = 0; i < s.size();) {
    if (count++ == max_code_points) {
      out += "...";
      break;
    }
    const std::size_t start = i;
    char32_t cp = 0;
    if (!next_code_point(s, i, cp)) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02X",
                    static_cast<unsigned>(static_cast<unsigned char>(s[i])));
      out += buf;
      ++i;
    } else if (is_control(cp)) {
      out += "<" + code_point_name(cp) + ">";
    } else {
      out.append(s.substr(start, i - start));
    }
  }
  return out;
}

std::string quote_name(std::string_view s) { return "\"" + printable(s) + "\""; }

std::optional<std::int64_t> as_int64(const json& v) {
  if (v.is_number_unsigned()) {
    const auto u = v.get<std::uint64_t>();
    if (u > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) return {};
    return static_cast<std::int64_t>(u);
  }
  if (v.is_number_integer()) return v.get<std::int64_t>();
  return {};
}

// Walks a patch once, depth first, stopping at the first broken rule. Recursion is bounded by
// kMaxDepth, so a hostile document cannot exhaust the stack here.
class PatchChecker {
 public:
  explicit PatchChecker(std::string_view root) : path_(root) {}

  Status check(const json& patch) {
    if (!patch.is_object()) {
      return error(errc::invalid_argument,
                   std::string("must be a JSON object, not ") + patch.type_name());
    }
    CAIRN_TRY(members(patch, 0, /*in_array=*/false, /*top=*/true));
    const std::size_t bytes = dump_json(patch).size();
    if (bytes > kMaxPatchBytes) {
      return error(errc::limit_exceeded, "patch is " + std::to_string(bytes) +
                                             " bytes serialized, more than the " +
                                             std::to_string(kMaxPatchBytes) + " allowed");
    }
    return {};
  }

 private:
  Error error(errc code, const std::string& what) const {
    return make_error(code, path_ + ": " + what);
  }

  // `object` sits at nesting level `level` (the section root is 0).
  Status members(const json& object, int level, bool in_array, bool top) {
    for (auto it = object.begin(); it != object.end(); ++it) {
      const std::string& key = it.key();
      // Clients echo the "$version" they got; IoT Hub ignores it in a patch.
      if (top && key == kVersionKey) continue;
      CAIRN_TRY(name(key));
      const std::size_t mark = path_.size();
      path_ += '.';
      path_ += key;
      if (in_array && it.value().is_null()) {
        return error(errc::invalid_argument,
                     "objects inside arrays may not have null members (null means delete only "
                     "outside arrays)");
      }
      CAIRN_TRY(value(it.value(), level, in_array));
      path_.resize(mark);
    }
    return {};
  }

  // `v` is a member or element of a container at nesting level `level`.
  Status value(const json& v, int level, bool in_array) {
    switch (v.type()) {
      case json::value_t::null:
      case json::value_t::boolean:
        return {};
      case json::value_t::number_integer: {
        const auto i = v.get<std::int64_t>();
        if (i < kMinInteger || i > kMaxInteger) return integer_error(std::to_string(i));
        return {};
      }
      case json::value_t::number_unsigned: {
        const auto u = v.get<std::uint64_t>();
        if (u > static_cast<std::uint64_t>(kMaxInteger)) return integer_error(std::to_string(u));
        return {};
      }
      case json::value_t::number_float:
        if (!std::isfinite(v.get<double>())) {
          return error(errc::invalid_argument, "numbers must be finite (JSON has no NaN/Infinity)");
        }
        return {};
      case json::value_t::string: {
        const auto& s = v.get_ref<const std::string&>();
        if (s.size() > kMaxStringBytes) {
          return error(errc::limit_exceeded, "string value is " + std::to_string(s.size()) +
                                                 " bytes, more than the " +
                                                 std::to_string(kMaxStringBytes) + " allowed");
        }
        if (!valid_utf8(s)) return error(errc::invalid_argument, "string value is not valid UTF-8");
        return {};
      }
      case json::value_t::object:
        CAIRN_TRY(nesting(level + 1));
        return members(v, level + 1, in_array, /*top=*/false);
      case json::value_t::array: {
        CAIRN_TRY(nesting(level + 1));
        std::size_t index = 0;
        for (const auto& element : v) {
          const std::size_t mark = path_.size();
          path_ += '[' + std::to_string(index++) + ']';
          if (element.is_null())
            return error(errc::invalid_argument, "arrays may not contain null");
          CAIRN_TRY(value(element, level + 1, /*in_array=*/true));
          path_.resize(mark);
        }
        return {};
      }
      case json::value_t::binary:
      case json::value_t::discarded:
        break;
    }
    return error(errc::invalid_argument,
                 std::string("values of type ") + v.type_name() + " are not allowed in a twin");
  }

  Status nesting(int level) const {
    if (level <= kMaxDepth) return {};
    return error(errc::limit_exceeded,
                 "nesting deeper than " + std::to_string(kMaxDepth) + " levels");
  }

  Status integer_error(const std::string& text) const {
    return error(errc::limit_exceeded, "integer " + text + " is outside the allowed range " +
                                           std::to_string(kMinInteger) + ".." +
                                           std::to_string(kMaxInteger) +
                                           " (send larger numbers as strings)");
  }

  Status name(const std::string& key) const {
    if (key.empty()) return error(errc::invalid_argument, "property names may not be empty");
    if (key.size() > kMaxNameBytes) {
      return error(errc::limit_exceeded, "property name \"" + printable(key, 32) + "\" is " +
                                             std::to_string(key.size()) + " bytes, more than the " +
                                             std::to_string(kMaxNameBytes) + " allowed");
    }
    char32_t cp = 0;
    for (std::size_t i = 0; i < key.size();) {
      if (!next_code_point(key, i, cp)) {
        return error(errc::invalid_argument,
                     "property name " + quote_name(key) + " is not valid UTF-8");
      }
      std::string problem;
      if (cp == '.' || cp == '$' || cp == '#') {
        problem = std::string("'") + static_cast<char>(cp) + "'";
      } else if (is_control(cp)) {
        problem = "the control character " + code_point_name(cp);
      } else if (is_whitespace(cp)) {
        problem = "whitespace (" + code_point_name(cp) + ")";
      }
      if (!problem.empty()) {
        return error(errc::invalid_argument,
                     "property name " + quote_name(key) + " contains " + problem +
                         "; names may not contain control characters, whitespace, '.', '$' "
                         "or '#'");
      }
    }
    return {};
  }

  std::string path_;
};

// Same value and same kind of number: 1 and 1.0 differ (they serialize differently), while
// 1 stored signed and 1 stored unsigned do not.
bool same(const json& a, const json& b) {
  const bool a_int = a.is_number_integer();  // true for signed and unsigned
  const bool b_int = b.is_number_integer();
  if (a_int || b_int) {
    if (!a_int || !b_int) return false;
    if (a.is_number_unsigned() != b.is_number_unsigned()) {
      const auto sa = as_int64(a);
      const auto sb = as_int64(b);
      return sa && sb && *sa == *sb;
    }
    return a == b;
  }
  if (a.type() != b.type()) return false;
  if (a.is_object()) {
    if (a.size() != b.size()) return false;
    for (auto it = a.begin(); it != a.end(); ++it) {
      const auto other = b.find(it.key());
      if (other == b.end() || !same(it.value(), *other)) return false;
    }
    return true;
  }
  if (a.is_array()) {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i) {
      if (!same(a[i], b[i])) return false;
    }
    return true;
  }
  return a == b;
}

std::size_t value_size(const json& v) {
  switch (v.type()) {
    case json::value_t::object: {
      std::size_t total = 0;
      for (auto it = v.begin(); it != v.end(); ++it) {
        if (!it.key().empty() && it.key().front() == '$') continue;
        total += it.key().size() + value_size(it.value());
      }
      return total;
    }
    case json::value_t::array: {
      std::size_t total = 0;
      for (const auto& element : v) total += value_size(element);
      return total;
    }
    case json::value_t::string:
      return v.get_ref<const std::string&>().size();
    case json::value_t::number_integer:
    case json::value_t::number_unsigned:
    case json::value_t::number_float:
      return 8;
    case json::value_t::boolean:
    case json::value_t::null:
      return 4;
    case json::value_t::binary:
    case json::value_t::discarded:
      break;
  }
  return 0;
}

// A section without its top-level '$' members ($version, $metadata, $etag); a non-object
// counts as empty.
json strip_dollar_members(const json& section) {
  json out = json::object();
  if (!section.is_object()) return out;
  for (auto it = section.begin(); it != section.end(); ++it) {
    if (!it.key().empty() && it.key().front() == '$') continue;
    out[it.key()] = it.value();
  }
  return out;
}

// `section` with a validated patch merged in; the patch's top-level "$version" is skipped.
json merged(const json& section, const json& patch) {
  json out = section.is_object() ? section : json::object();
  for (auto it = patch.begin(); it != patch.end(); ++it) {
    if (it.key() == kVersionKey) continue;
    if (it.value().is_null()) {
      out.erase(it.key());
    } else {
      merge_patch(out[it.key()], it.value());
    }
  }
  return out;
}

Status check_section_size(const json& section, std::string_view name, std::size_t limit) {
  const std::size_t size = section_size(section);
  if (size <= limit) return {};
  return make_error(errc::limit_exceeded, std::string(name) + ": the section would be " +
                                              std::to_string(size) +
                                              " bytes (IoT Hub counting), more than the " +
                                              std::to_string(limit) + " allowed");
}

Status check_bump(std::int64_t v, std::string_view what) {
  if (v < std::numeric_limits<std::int64_t>::max()) return {};
  return make_error(errc::limit_exceeded, std::string(what) + " cannot grow any further");
}

Status check_bumps(const Twin& t, bool desired, bool reported) {
  CAIRN_TRY(check_bump(t.version, "twin version"));
  if (desired) CAIRN_TRY(check_bump(t.desired_version, "desired $version"));
  if (reported) CAIRN_TRY(check_bump(t.reported_version, "reported $version"));
  return {};
}

json with_version(json patch, std::int64_t v) {
  patch[std::string(kVersionKey)] = v;
  return patch;
}

// A section of a device view: an object with an integer "$version" >= 0.
Status read_view_section(const json& view, const char* name, json& section, std::int64_t& version) {
  const auto it = view.find(name);
  if (it == view.end() || !it->is_object()) {
    return make_error(errc::invalid_argument,
                      std::string("twin: \"") + name + "\" must be present and be an object");
  }
  const auto v = it->find(kVersionKey);
  const auto n = v == it->end() ? std::nullopt : as_int64(*v);
  if (!n || *n < 0) {
    return make_error(errc::invalid_argument,
                      std::string("twin: \"") + name + "\" needs an integer \"$version\" >= 0");
  }
  section = strip_dollar_members(*it);
  version = *n;
  return {};
}

Error corrupt(const std::string& what) {
  return make_error(errc::corruption, "stored twin: " + what);
}

}  // namespace

Status validate_patch(const json& patch) { return validate_patch(patch, "patch"); }

Status validate_patch(const json& patch, std::string_view section) {
  return PatchChecker(section).check(patch);
}

void merge_patch(json& target, const json& patch) { target.merge_patch(patch); }

void compose_patches(json& earlier, const json& later) {
  if (!earlier.is_object() || !later.is_object()) {
    earlier = later;
    return;
  }
  for (auto it = later.begin(); it != later.end(); ++it) {
    auto mine = earlier.find(it.key());
    if (mine != earlier.end() && mine->is_object() && it->is_object()) {
      compose_patches(*mine, *it);
    } else {
      earlier[it.key()] = *it;
    }
  }
}

json diff(const json& from, const json& to) {
  if (!from.is_object() || !to.is_object()) return to;
  json patch = json::object();
  for (auto it = from.begin(); it != from.end(); ++it) {
    if (!to.contains(it.key())) patch[it.key()] = nullptr;
  }
  for (auto it = to.begin(); it != to.end(); ++it) {
    const auto old = from.find(it.key());
    if (old == from.end()) {
      patch[it.key()] = it.value();
    } else if (!same(*old, it.value())) {
      patch[it.key()] = diff(*old, it.value());
    }
  }
  return patch;
}

std::size_t section_size(const json& section) { return value_size(section); }

Result<json> parse_json(std::string_view text, int max_depth) {
  // nlohmann's parser copes with any depth, but dump(), comparison and the destructor of
  // what it builds recurse; refuse absurd nesting before building anything.
  int depth = 0;
  bool in_string = false;
  bool escaped = false;
  std::size_t line = 1;
  std::size_t column = 0;
  for (const char c : text) {
    if (c == '\n') {
      ++line;
      column = 0;
    } else {
      ++column;
    }
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > max_depth) {
        return make_error(errc::invalid_argument, "invalid JSON at line " + std::to_string(line) +
                                                      ", column " + std::to_string(column) +
                                                      ": nested deeper than " +
                                                      std::to_string(max_depth) + " levels");
      }
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
  try {
    return json::parse(text.begin(), text.end());
  } catch (const json::exception& e) {
    // "[json.exception.parse_error.101] parse error at line 1, column 3: syntax error ..."
    std::string_view what = e.what();
    if (const auto pos = what.find("] "); pos != std::string_view::npos) {
      what.remove_prefix(pos + 2);
    }
    constexpr std::string_view kAt = "parse error at ";
    if (what.substr(0, kAt.size()) == kAt) {
      what.remove_prefix(kAt.size());
      return make_error(errc::invalid_argument, "invalid JSON at " + printable(what, 256));
    }
    return make_error(errc::invalid_argument, "invalid JSON: " + printable(what, 256));
  }
}

std::string dump_json(const json& value) { return cairn::dump_json(value); }

std::string error_body(int status, std::string_view message) {
  int detail = 1;
  if (status == 400) detail = 4;  // ArgumentInvalid: what a refused patch is
  return dump_json(json{{"errorCode", status * 1000 + detail}, {"message", message}});
}

json Twin::device_view() const {
  return json{{"desired", with_version(strip_dollar_members(desired), desired_version)},
              {"reported", with_version(strip_dollar_members(reported), reported_version)}};
}

Result<Twin> Twin::from_device_view(const json& view) {
  if (!view.is_object()) {
    return make_error(errc::invalid_argument,
                      "twin: expected a JSON object with \"desired\" and \"reported\", not " +
                          std::string(view.type_name()));
  }
  Twin t;
  const json* sections = &view;
  // The service's full twin nests the sections in "properties" and adds tags.
  if (!view.contains("desired")) {
    const auto properties = view.find("properties");
    if (properties != view.end() && properties->is_object()) sections = &*properties;
  }
  CAIRN_TRY(read_view_section(*sections, "desired", t.desired, t.desired_version));
  CAIRN_TRY(read_view_section(*sections, "reported", t.reported, t.reported_version));
  if (const auto tags = view.find("tags"); tags != view.end() && tags->is_object()) {
    t.tags = strip_dollar_members(*tags);
  }
  if (const auto v = view.find("version"); v != view.end()) {
    const auto n = as_int64(*v);
    if (!n || *n < 0) {
      return make_error(errc::invalid_argument, "twin: \"version\" must be an integer >= 0");
    }
    t.version = *n;
  }
  return t;
}

Status Twin::patch_reported(const json& patch) {
  CAIRN_TRY(validate_patch(patch, "reported"));
  CAIRN_TRY(check_bumps(*this, false, true));
  json next = merged(reported, patch);
  CAIRN_TRY(check_section_size(next, "reported", kMaxSectionBytes));
  reported = std::move(next);
  ++reported_version;
  ++version;
  return {};
}

Result<json> Twin::patch_desired(const json& patch) {
  CAIRN_TRY(validate_patch(patch, "desired"));
  CAIRN_TRY(check_bumps(*this, true, false));
  json next = merged(desired, patch);
  CAIRN_TRY(check_section_size(next, "desired", kMaxSectionBytes));
  json delivered = patch;
  delivered.erase(std::string(kVersionKey));
  desired = std::move(next);
  ++desired_version;
  ++version;
  return with_version(std::move(delivered), desired_version);
}

Result<json> Twin::replace_desired(const json& replacement) {
  CAIRN_TRY(validate_patch(replacement, "desired"));
  CAIRN_TRY(check_bumps(*this, true, false));
  json next = merged(json::object(), replacement);
  CAIRN_TRY(check_section_size(next, "desired", kMaxSectionBytes));
  json delivered = diff(strip_dollar_members(desired), next);
  desired = std::move(next);
  ++desired_version;
  ++version;
  return with_version(std::move(delivered), desired_version);
}

Status Twin::patch_tags(const json& patch) {
  CAIRN_TRY(validate_patch(patch, "tags"));
  CAIRN_TRY(check_bumps(*this, false, false));
  json next = merged(tags, patch);
  CAIRN_TRY(check_section_size(next, "tags", kMaxTagsBytes));
  tags = std::move(next);
  ++version;
  return {};
}

Status Twin::replace_tags(const json& replacement) {
  CAIRN_TRY(validate_patch(replacement, "tags"));
  CAIRN_TRY(check_bumps(*this, false, false));
  json next = merged(json::object(), replacement);
  CAIRN_TRY(check_section_size(next, "tags", kMaxTagsBytes));
  tags = std::move(next);
  ++version;
  return {};
}

std::optional<json> Twin::desired_patch_since(const json& older_desired) const {
  json patch = diff(strip_dollar_members(older_desired), strip_dollar_members(desired));
  if (patch.empty()) return std::nullopt;
  return with_version(std::move(patch), desired_version);
}

std::string Twin::serialize() const {
  return dump_json(json{{"format", kStorageFormat},
                        {"version", version},
                        {"desired", desired},
                        {"desiredVersion", desired_version},
                        {"reported", reported},
                        {"reportedVersion", reported_version},
                        {"tags", tags}});
}

Result<Twin> Twin::parse(std::string_view text) {
  auto doc = parse_json(text);
  if (!doc) return corrupt(doc.error().message);
  if (!doc->is_object()) return corrupt("expected a JSON object");
  const auto format = doc->find("format");
  if (format == doc->end() || as_int64(*format) != kStorageFormat) {
    return corrupt("unknown format (expected \"format\": " + std::to_string(kStorageFormat) + ")");
  }
  Twin t;
  for (auto [name, section] : {std::pair{"desired", &t.desired}, std::pair{"reported", &t.reported},
                               std::pair{"tags", &t.tags}}) {
    const auto it = doc->find(name);
    if (it == doc->end() || !it->is_object()) {
      return corrupt(std::string("\"") + name + "\" is missing or not an object");
    }
    *section = *it;
  }
  for (auto [name, number] :
       {std::pair{"version", &t.version}, std::pair{"desiredVersion", &t.desired_version},
        std::pair{"reportedVersion", &t.reported_version}}) {
    const auto it = doc->find(name);
    const auto n = it == doc->end() ? std::nullopt : as_int64(*it);
    if (!n || *n < 0)
      return corrupt(std::string("\"") + name + "\" is missing or not an integer >= 0");
    *number = *n;
  }
  return t;
}

}  // namespace cairn::twin
