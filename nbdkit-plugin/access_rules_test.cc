#include "nbdkit-plugin/access_rules.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cstring>

#include <doctest/doctest.h>

using dst::plugin::AccessMode;
using dst::plugin::AccessPolicy;
using dst::plugin::AccessRule;
using dst::plugin::Peer;

namespace {

Peer V4(const char* text) {
  sockaddr_in in{};
  in.sin_family = AF_INET;
  REQUIRE(inet_pton(AF_INET, text, &in.sin_addr) == 1);
  return Peer::FromSockaddr(reinterpret_cast<sockaddr*>(&in), sizeof in);
}

Peer V6(const char* text) {
  sockaddr_in6 in6{};
  in6.sin6_family = AF_INET6;
  REQUIRE(inet_pton(AF_INET6, text, &in6.sin6_addr) == 1);
  return Peer::FromSockaddr(reinterpret_cast<sockaddr*>(&in6), sizeof in6);
}

AccessRule Rule(const char* text) {
  AccessRule rule;
  const dst::Status s = AccessRule::Parse(text, &rule);
  REQUIRE_MESSAGE(s.ok(), s.message());
  return rule;
}

std::string ParseError(const char* text) {
  AccessRule rule;
  return AccessRule::Parse(text, &rule).message();
}

}  // namespace

TEST_CASE("IPv4 rules match by prefix") {
  const AccessRule rule = Rule("10.1.0.0/16 ro");
  CHECK(rule.mode() == AccessMode::kReadOnly);
  CHECK(rule.Matches(V4("10.1.2.3")));
  CHECK(rule.Matches(V4("10.1.255.255")));
  CHECK_FALSE(rule.Matches(V4("10.2.0.1")));
  CHECK_FALSE(rule.Matches(V6("::1")));
  CHECK_FALSE(rule.Matches(Peer::Unix()));
  CHECK(Rule("192.168.1.7 rw").Matches(V4("192.168.1.7")));  // no prefix: one host
  CHECK_FALSE(Rule("192.168.1.7 rw").Matches(V4("192.168.1.8")));
  CHECK(Rule("10.0.0.0/9 rw").Matches(V4("10.127.0.1")));  // prefix not on a byte
  CHECK_FALSE(Rule("10.0.0.0/9 rw").Matches(V4("10.128.0.1")));
  CHECK(Rule("0.0.0.0/0 deny").Matches(V4("8.8.8.8")));
}

TEST_CASE("IPv6 rules, and IPv4-mapped peers match IPv4 rules") {
  CHECK(Rule("::1/128 rw").Matches(V6("::1")));
  CHECK(Rule("fd00::/8 rw").Matches(V6("fd12:3456::1")));
  CHECK_FALSE(Rule("fd00::/8 rw").Matches(V6("fe80::1")));
  CHECK(Rule("127.0.0.0/8 ro").Matches(V6("::ffff:127.0.0.1")));
  CHECK(V6("::ffff:127.0.0.1").ToString() == "127.0.0.1");
  CHECK_FALSE(Rule("::/0 rw").Matches(V4("127.0.0.1")));
}

TEST_CASE("rules in the IPv4-mapped form match IPv4 peers, however they arrive") {
  // One host: ::ffff:127.0.0.3 is 127.0.0.3/32.
  const AccessRule host = Rule("::ffff:127.0.0.3 deny");
  CHECK(host.Matches(V4("127.0.0.3")));
  CHECK(host.Matches(V6("::ffff:127.0.0.3")));  // an IPv4 client on a dual-stack socket
  CHECK_FALSE(host.Matches(V4("127.0.0.4")));
  CHECK_FALSE(host.Matches(V6("::1")));
  CHECK(host.mode() == AccessMode::kDeny);
  CHECK(host.text() == "::ffff:127.0.0.3 deny");  // reported as written
  // A range: /104 is 127.0.0.0/8.
  const AccessRule range = Rule("::ffff:127.0.0.0/104 ro");
  CHECK(range.Matches(V4("127.1.2.3")));
  CHECK(range.Matches(V6("::ffff:127.255.0.1")));
  CHECK_FALSE(range.Matches(V4("128.0.0.1")));
  // Not on a byte boundary: /107 is 127.0.0.0/11, /96 every IPv4 address.
  CHECK(Rule("::ffff:127.0.0.0/107 rw").Matches(V4("127.31.0.1")));
  CHECK_FALSE(Rule("::ffff:127.0.0.0/107 rw").Matches(V4("127.32.0.1")));
  CHECK(Rule("::ffff:0.0.0.0/96 rw").Matches(V4("8.8.8.8")));
  CHECK_FALSE(Rule("::ffff:0.0.0.0/96 rw").Matches(V6("2001:db8::1")));
  // The hex spelling is the same address.
  CHECK(Rule("::ffff:7f00:3 deny").Matches(V4("127.0.0.3")));
}

TEST_CASE("the audit's dead rules now decide: mapped deny rules before all rw") {
  AccessPolicy policy;
  policy.Add(Rule("::ffff:127.0.0.3 deny"));
  policy.Add(Rule("::ffff:127.0.0.0/104 ro"));
  policy.Add(Rule("all rw"));
  CHECK(policy.Decide(V6("::ffff:127.0.0.3")) == AccessMode::kDeny);
  CHECK(policy.Decide(V4("127.0.0.3")) == AccessMode::kDeny);
  CHECK(policy.Decide(V6("::ffff:127.0.0.2")) == AccessMode::kReadOnly);
  CHECK(policy.Decide(V4("127.0.0.2")) == AccessMode::kReadOnly);
  CHECK(policy.Decide(V4("10.0.0.1")) == AccessMode::kReadWrite);
  CHECK(policy.Decide(V6("::1")) == AccessMode::kReadWrite);
}

TEST_CASE("an IPv4-mapped range wider than the mapped space is refused, not left dead") {
  const std::string why =
      ": an IPv4-mapped range needs a prefix of 96 to 128 (IPv4 clients are matched as IPv4: "
      "write it as an IPv4 range)";
  CHECK(ParseError("::ffff:127.0.0.0/95 deny") == "bad address range '::ffff:127.0.0.0/95'" + why);
  CHECK(ParseError("::ffff:0:0/80 rw") == "bad address range '::ffff:0:0/80'" + why);
  CHECK(ParseError("::ffff:127.0.0.1/129 rw") == "bad address range '::ffff:127.0.0.1/129'");
  // Plain IPv6 ranges are IPv6 rules as before, even those that contain the
  // mapped space: IPv4 clients are not IPv6 peers.
  CHECK(Rule("::/0 rw").Matches(V6("::1")));
  CHECK_FALSE(Rule("::/0 rw").Matches(V6("::ffff:127.0.0.1")));
}

TEST_CASE("unix and all scopes") {
  CHECK(Rule("unix ro").Matches(Peer::Unix()));
  CHECK_FALSE(Rule("unix ro").Matches(V4("127.0.0.1")));
  CHECK(Rule("all deny").Matches(Peer::Unix()));
  CHECK(Rule("all deny").Matches(V6("::1")));
  CHECK(Rule("  unix\trw  ").mode() == AccessMode::kReadWrite);
}

TEST_CASE("bad rules are refused with the reason") {
  CHECK(ParseError("10.0.0.0/33 rw") == "bad address range '10.0.0.0/33'");
  CHECK(ParseError("::1/129 rw") == "bad address range '::1/129'");
  CHECK(ParseError("10.0.0.0/ rw") == "bad address range '10.0.0.0/'");
  CHECK(ParseError("10.0.0.0/8x rw") == "bad address range '10.0.0.0/8x'");
  CHECK(ParseError("host.example rw") == "bad address range 'host.example'");
  CHECK(ParseError("10.0.0.0/8 write") == "bad access mode 'write' (expected rw, ro or deny)");
  CHECK(ParseError("10.0.0.0/8") == "expected 'ADDR[/PREFIX] MODE', 'unix MODE' or 'all MODE'");
  CHECK(ParseError("10.0.0.0/8 rw extra").find("expected") == 0);
  CHECK(ParseError("").find("expected") == 0);
}

TEST_CASE("the first matching rule decides; no match denies; no rules allow") {
  AccessPolicy open;
  CHECK(open.Decide(V4("1.2.3.4")) == AccessMode::kReadWrite);
  CHECK(open.Decide(Peer::Unix()) == AccessMode::kReadWrite);

  AccessPolicy policy;
  policy.Add(Rule("10.0.0.5 deny"));
  policy.Add(Rule("10.0.0.0/8 ro"));
  policy.Add(Rule("unix rw"));
  CHECK(policy.Decide(V4("10.0.0.5")) == AccessMode::kDeny);
  CHECK(policy.Decide(V4("10.0.0.6")) == AccessMode::kReadOnly);
  CHECK(policy.Decide(Peer::Unix()) == AccessMode::kReadWrite);
  CHECK(policy.Decide(V4("192.168.0.1")) == AccessMode::kDeny);
  CHECK(policy.Decide(Peer{}) == AccessMode::kDeny);  // unknown peers match no range
}
