#include "modelpkg/detail/url.hpp"

#include <arpa/inet.h>

namespace cairn::modelpkg::detail {

Result<HttpUrl> parse_http_url(std::string_view url) {
  HttpUrl out;
  std::string_view rest;
  auto bad = [&](const std::string& why) {
    return make_error(errc::invalid_argument, "URL '" + std::string(url) + "' " + why);
  };
  if (url.rfind("https://", 0) == 0) {
    out.target.tls = true;
    out.target.port = 443;
    rest = url.substr(8);
  } else if (url.rfind("http://", 0) == 0) {
    out.target.tls = false;
    out.target.port = 80;
    rest = url.substr(7);
  } else {
    return bad("must start with http:// or https://");
  }
  auto slash = rest.find('/');
  std::string_view authority = rest.substr(0, slash);
  out.target_path = slash == std::string_view::npos ? "/" : std::string(rest.substr(slash));
  if (auto hash = out.target_path.find('#'); hash != std::string::npos) {
    out.target_path.resize(hash);
  }
  if (authority.empty() || authority.find('@') != std::string_view::npos) {
    return bad("has no usable host");
  }
  std::string_view port_text;
  bool has_port = false;
  if (authority.front() == '[') {
    auto close = authority.find(']');
    if (close == std::string_view::npos) return bad("has an unclosed '['");
    out.target.host = std::string(authority.substr(1, close - 1));
    // Brackets hold an IPv6 address (RFC 3986), kept without them: the connector takes the
    // bare address, and the Host header gets its brackets back.
    in6_addr ignored{};
    if (::inet_pton(AF_INET6, out.target.host.c_str(), &ignored) != 1) {
      return bad("has '[" + out.target.host + "]', which is not an IPv6 address");
    }
    auto after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') return bad("has a bad port");
      port_text = after.substr(1);
      has_port = true;
    }
  } else {
    auto colon = authority.find(':');
    out.target.host = std::string(authority.substr(0, colon));
    if (colon != std::string_view::npos) {
      port_text = authority.substr(colon + 1);
      has_port = true;
    }
  }
  if (has_port) {
    unsigned long port = 0;
    for (char ch : port_text) {
      if (ch < '0' || ch > '9' || port > 65535) return bad("has a bad port");
      port = port * 10 + static_cast<unsigned long>(ch - '0');
    }
    if (port == 0 || port > 65535) return bad("has a bad port");
    out.target.port = static_cast<std::uint16_t>(port);
  }
  if (out.target.host.empty()) return bad("has no host");
  return out;
}

std::string resolve_url(const std::string& base, const std::string& reference) {
  if (reference.rfind("http://", 0) == 0 || reference.rfind("https://", 0) == 0) return reference;
  auto scheme_end = base.find("://");
  std::size_t path_start = scheme_end == std::string::npos ? 0 : base.find('/', scheme_end + 3);
  if (path_start == std::string::npos) path_start = base.size();
  if (!reference.empty() && reference.front() == '/') return base.substr(0, path_start) + reference;
  std::string dir = base.substr(0, base.find_first_of("?#", path_start));
  auto last = dir.rfind('/');
  if (last == std::string::npos || last < path_start) {
    dir += "/";
  } else {
    dir.resize(last + 1);
  }
  return dir + reference;
}

}  // namespace cairn::modelpkg::detail
