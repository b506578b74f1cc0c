// Access rules of an export: which clients may connect, and whether they may
// write. A rule is "ADDR[/PREFIX] MODE" (IPv4 or IPv6 range), "unix MODE" for
// Unix-socket clients or "all MODE"; MODE is rw, ro or deny. The first rule
// that matches decides; an empty policy lets everyone read and write, and a
// non-empty one denies whoever no rule matches. IPv4 clients are matched as
// IPv4 however they arrive, so a range written in the IPv4-mapped form
// (::ffff:a.b.c.d/N, N >= 96) is taken as the IPv4 range a.b.c.d/(N-96), and
// a shorter prefix in that form is refused.
//
// Pure logic, immutable after parsing: safe to share between nbdkit's threads.
#pragma once

#include <sys/socket.h>

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace dst::plugin {

enum class AccessMode { kReadWrite, kReadOnly, kDeny };
const char* AccessModeName(AccessMode mode);

// Who is connecting, reduced to what rules can match on. IPv4-mapped IPv6
// addresses (::ffff:a.b.c.d) are stored as IPv4, so IPv4 rules apply to them.
struct Peer {
  enum class Kind { kIPv4, kIPv6, kUnix, kOther };
  Kind kind = Kind::kOther;
  std::array<uint8_t, 16> address{};  // first 4 bytes for IPv4

  static Peer FromSockaddr(const sockaddr* addr, socklen_t len);
  static Peer Unix() { return Peer{Kind::kUnix, {}}; }
  std::string ToString() const;
};

class AccessRule {
 public:
  // Parses "ADDR[/PREFIX] MODE"; the error message names what is wrong.
  static Status Parse(std::string_view text, AccessRule* rule);

  bool Matches(const Peer& peer) const;
  AccessMode mode() const { return mode_; }
  const std::string& text() const { return text_; }

 private:
  enum class Scope { kAll, kUnix, kIPv4, kIPv6 };

  Status NormaliseIPv4Mapped(const std::string& bad_range);
  Scope scope_ = Scope::kAll;
  std::array<uint8_t, 16> network_{};
  unsigned prefix_bits_ = 0;
  AccessMode mode_ = AccessMode::kDeny;
  std::string text_;
};

class AccessPolicy {
 public:
  void Add(AccessRule rule) { rules_.push_back(std::move(rule)); }
  bool empty() const { return rules_.empty(); }
  // The mode of the first matching rule; kReadWrite for an empty policy.
  AccessMode Decide(const Peer& peer) const;

 private:
  std::vector<AccessRule> rules_;
};

}  // namespace dst::plugin
