// http:// and https:// URLs for the fetcher: split into where to connect and the request
// target, and relative references resolved against the index URL.
//
// Thread-safety: pure functions.
#pragma once

#include <string>
#include <string_view>

#include "core/result.hpp"
#include "net/http.hpp"

namespace cairn::modelpkg::detail {

struct HttpUrl {
  net::HttpTarget target;   // tls set for https; port defaults to 80/443
  std::string target_path;  // path and query, at least "/"
};

// Parses "http[s]://host[:port][/path]". An IPv6 address is written in brackets
// ("http://[::1]:8080/m.cidx") and comes out as target.host without them ("::1"); zone ids
// are not accepted. No user info; a fragment is dropped.
Result<HttpUrl> parse_http_url(std::string_view url);

// Resolves `reference` (absolute URL, absolute path or relative path) against `base`.
std::string resolve_url(const std::string& base, const std::string& reference);

}  // namespace cairn::modelpkg::detail
