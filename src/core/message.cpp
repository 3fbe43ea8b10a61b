#include "core/message.hpp"

#include <algorithm>
#include <unordered_map>

namespace cairn {
namespace {

constexpr char kFormatVersion = 1;

char lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

void put_varint(std::string& out, std::uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}

void put_bytes(std::string& out, std::string_view s) {
  put_varint(out, s.size());
  out.append(s);
}

void put_properties(std::string& out, const Properties& p) {
  put_varint(out, p.size());
  for (const auto& [k, v] : p.entries()) {
    put_bytes(out, k);
    put_bytes(out, v);
  }
}

struct Reader {
  std::string_view in;
  bool failed = false;

  std::uint64_t varint() {
    std::uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (in.empty()) break;
      auto b = static_cast<unsigned char>(in.front());
      in.remove_prefix(1);
      v |= static_cast<std::uint64_t>(b & 0x7f) << shift;
      if ((b & 0x80) == 0) return v;
    }
    failed = true;
    return 0;
  }
  std::string bytes() {
    auto n = varint();
    if (failed || n > in.size()) {
      failed = true;
      return {};
    }
    std::string s(in.substr(0, n));
    in.remove_prefix(n);
    return s;
  }
  Properties properties() {
    Properties p;
    auto n = varint();
    if (n > in.size()) failed = true;  // each entry needs at least two bytes
    std::vector<Properties::Entry> entries;
    if (!failed) entries.reserve(n);
    for (std::uint64_t i = 0; i < n && !failed; ++i) {
      auto k = bytes();
      auto v = bytes();
      entries.emplace_back(std::move(k), std::move(v));
    }
    p.set_all(std::move(entries));
    return p;
  }
};

}  // namespace

bool iequals(std::string_view a, std::string_view b) noexcept {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(),
                                            [](char x, char y) { return lower(x) == lower(y); });
}

std::string to_lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = lower(c);
  return out;
}

std::optional<std::string_view> Properties::get(std::string_view key) const {
  for (const auto& [k, v] : entries_) {
    if (iequals(k, key)) return std::string_view(v);
  }
  return std::nullopt;
}

void Properties::set(std::string key, std::string value) {
  for (auto& [k, v] : entries_) {
    if (iequals(k, key)) {
      v = std::move(value);
      return;
    }
  }
  entries_.emplace_back(std::move(key), std::move(value));
}

void Properties::set_all(std::vector<Entry> more) {
  if (entries_.empty() && more.size() == 1) {  // the common tiny case: no index to build
    entries_.push_back(std::move(more.front()));
    return;
  }
  // Index by lower-cased key; the first entry of a key is the one get() and set() see.
  std::unordered_map<std::string, std::size_t> index;
  index.reserve(entries_.size() + more.size());
  for (std::size_t i = 0; i < entries_.size(); ++i) index.emplace(to_lower(entries_[i].first), i);
  for (auto& [key, value] : more) {
    auto [it, added] = index.emplace(to_lower(key), entries_.size());
    if (added) {
      entries_.emplace_back(std::move(key), std::move(value));
    } else {
      entries_[it->second].second = std::move(value);
    }
  }
}

bool Properties::erase(std::string_view key) {
  auto it = std::find_if(entries_.begin(), entries_.end(),
                         [&](const Entry& e) { return iequals(e.first, key); });
  if (it == entries_.end()) return false;
  entries_.erase(it);
  return true;
}

std::string encode_message(const Message& m) {
  std::string out;
  out.reserve(m.body.size() + 64);
  out.push_back(kFormatVersion);
  put_properties(out, m.system);
  put_properties(out, m.app);
  put_bytes(out, m.body);
  return out;
}

Result<Message> decode_message(std::string_view bytes) {
  if (bytes.empty() || bytes.front() != kFormatVersion) {
    return make_error(errc::corruption, "stored message has an unknown format version");
  }
  Reader r{bytes.substr(1)};
  Message m;
  m.system = r.properties();
  m.app = r.properties();
  m.body = r.bytes();
  if (r.failed || !r.in.empty()) {
    return make_error(errc::corruption, "stored message is truncated or has trailing bytes");
  }
  return m;
}

}  // namespace cairn
