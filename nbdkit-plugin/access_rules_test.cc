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
