#include "modelpkg/detail/url.hpp"

#include <gtest/gtest.h>

namespace cairn::modelpkg::detail {
namespace {

TEST(ParseHttpUrl, HostPortAndPath) {
  auto u = parse_http_url("https://models.example:8443/a/net-1.cidx?x=1#frag");
  ASSERT_TRUE(u) << u.error().message;
  EXPECT_TRUE(u->target.tls);
  EXPECT_EQ(u->target.host, "models.example");
  EXPECT_EQ(u->target.port, 8443);
  EXPECT_EQ(u->target_path, "/a/net-1.cidx?x=1");
  auto plain = parse_http_url("http://10.0.0.2");
  ASSERT_TRUE(plain);
  EXPECT_FALSE(plain->target.tls);
  EXPECT_EQ(plain->target.port, 80);
  EXPECT_EQ(plain->target_path, "/");
}

TEST(ParseHttpUrl, Ipv6LiteralsInBrackets) {
  auto u = parse_http_url("http://[::1]:8080/pub/net-1.cidx");
  ASSERT_TRUE(u) << u.error().message;
  EXPECT_EQ(u->target.host, "::1");
  EXPECT_EQ(u->target.port, 8080);
  EXPECT_EQ(u->target_path, "/pub/net-1.cidx");
  auto no_port = parse_http_url("https://[2001:db8::7]/m.cidx");
  ASSERT_TRUE(no_port) << no_port.error().message;
  EXPECT_EQ(no_port->target.host, "2001:db8::7");
  EXPECT_EQ(no_port->target.port, 443);
  auto mapped = parse_http_url("http://[::ffff:127.0.0.1]:9/");
  ASSERT_TRUE(mapped) << mapped.error().message;
  EXPECT_EQ(mapped->target.host, "::ffff:127.0.0.1");
}

TEST(ParseHttpUrl, BadIpv6AuthoritiesAreRefusedWithTheReason) {
  struct Case {
    const char* url;
    const char* says;
  };
  for (const auto& c :
       {Case{"http://[::1:8080/m.cidx", "unclosed '['"},
        Case{"http://[::1]8080/m.cidx", "bad port"}, Case{"http://[::1]:/m.cidx", "bad port"},
        Case{"http://[::1]:65536/m.cidx", "bad port"},
        Case{"http://[]:80/m.cidx", "not an IPv6 address"},
        Case{"http://[models.example]:80/m.cidx", "not an IPv6 address"},
        Case{"http://[fe80::1%25eth0]/m.cidx", "not an IPv6 address"},
        Case{"http://[::1/m.cidx", "unclosed '['"}}) {
    auto u = parse_http_url(c.url);
    ASSERT_FALSE(u) << c.url;
    EXPECT_NE(u.error().message.find(c.says), std::string::npos)
        << c.url << ": " << u.error().message;
  }
}

TEST(ResolveUrl, RelativeReferencesKeepTheBracketedHost) {
  EXPECT_EQ(resolve_url("http://[::1]:8080/pub/net-1.cidx", "chunks/ab/abcd"),
            "http://[::1]:8080/pub/chunks/ab/abcd");
  EXPECT_EQ(resolve_url("http://[::1]:8080/pub/net-1.cidx", "/other/x"),
            "http://[::1]:8080/other/x");
}

}  // namespace
}  // namespace cairn::modelpkg::detail
