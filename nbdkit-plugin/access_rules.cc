#include "nbdkit-plugin/access_rules.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/un.h>

#include <cerrno>
#include <charconv>
#include <cstring>

namespace dst::plugin {

namespace {

// ::ffff:0:0/96, the IPv4-mapped IPv6 addresses.
constexpr unsigned kIPv4MappedPrefixBits = 96;

bool IsIPv4Mapped(const uint8_t* a) {
  static constexpr uint8_t kPrefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  return std::memcmp(a, kPrefix, sizeof kPrefix) == 0;
}

// True if the first `bits` bits of a and b are equal.
bool PrefixEquals(const std::array<uint8_t, 16>& a, const std::array<uint8_t, 16>& b,
                  unsigned bits) {
  const unsigned whole = bits / 8;
  if (std::memcmp(a.data(), b.data(), whole) != 0) return false;
  const unsigned rest = bits % 8;
  if (rest == 0) return true;
  const uint8_t mask = static_cast<uint8_t>(0xff << (8 - rest));
  return (a[whole] & mask) == (b[whole] & mask);
}

bool ParseMode(std::string_view word, AccessMode* mode) {
  if (word == "rw")
    *mode = AccessMode::kReadWrite;
  else if (word == "ro")
    *mode = AccessMode::kReadOnly;
  else if (word == "deny")
    *mode = AccessMode::kDeny;
  else
    return false;
  return true;
}

// Splits "a b" into two words separated by blanks; false if not exactly two.
bool SplitTwoWords(std::string_view text, std::string_view* first, std::string_view* second) {
  constexpr std::string_view kBlank = " \t";
  const auto b1 = text.find_first_not_of(kBlank);
  if (b1 == std::string_view::npos) return false;
  const auto e1 = text.find_first_of(kBlank, b1);
  if (e1 == std::string_view::npos) return false;
  const auto b2 = text.find_first_not_of(kBlank, e1);
  if (b2 == std::string_view::npos) return false;
  const auto e2 = text.find_first_of(kBlank, b2);
  if (e2 != std::string_view::npos && text.find_first_not_of(kBlank, e2) != std::string_view::npos)
    return false;
  *first = text.substr(b1, e1 - b1);
  *second = text.substr(b2, e2 == std::string_view::npos ? e2 : e2 - b2);
  return true;
}

}  // namespace

const char* AccessModeName(AccessMode mode) {
  switch (mode) {
    case AccessMode::kReadWrite:
      return "rw";
    case AccessMode::kReadOnly:
      return "ro";
    case AccessMode::kDeny:
      return "deny";
  }
  return "?";
}

Peer Peer::FromSockaddr(const sockaddr* addr, socklen_t len) {
  Peer peer;
  if (addr == nullptr || len < static_cast<socklen_t>(sizeof(sa_family_t))) return peer;
  if (addr->sa_family == AF_UNIX) return Unix();
  if (addr->sa_family == AF_INET && len >= static_cast<socklen_t>(sizeof(sockaddr_in))) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(addr);
    peer.kind = Kind::kIPv4;
    std::memcpy(peer.address.data(), &in->sin_addr, 4);
  } else if (addr->sa_family == AF_INET6 && len >= static_cast<socklen_t>(sizeof(sockaddr_in6))) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(addr);
    const auto* bytes = reinterpret_cast<const uint8_t*>(&in6->sin6_addr);
    if (IsIPv4Mapped(bytes)) {
      peer.kind = Kind::kIPv4;
      std::memcpy(peer.address.data(), bytes + 12, 4);
    } else {
      peer.kind = Kind::kIPv6;
      std::memcpy(peer.address.data(), bytes, 16);
    }
  }
  return peer;
}

std::string Peer::ToString() const {
  char buf[INET6_ADDRSTRLEN] = "?";
  switch (kind) {
    case Kind::kUnix:
      return "unix socket";
    case Kind::kOther:
      return "unknown peer";
    case Kind::kIPv4:
      inet_ntop(AF_INET, address.data(), buf, sizeof buf);
      break;
    case Kind::kIPv6:
      inet_ntop(AF_INET6, address.data(), buf, sizeof buf);
      break;
  }
  return buf;
}

Status AccessRule::Parse(std::string_view text, AccessRule* rule) {
  std::string_view range, mode;
  if (!SplitTwoWords(text, &range, &mode))
    return Status::Invalid("expected 'ADDR[/PREFIX] MODE', 'unix MODE' or 'all MODE'");
  AccessRule r;
  r.text_ = std::string(text);
  if (!ParseMode(mode, &r.mode_))
    return Status::Invalid("bad access mode '" + std::string(mode) + "' (expected rw, ro or deny)");
  const std::string bad_range = "bad address range '" + std::string(range) + "'";
  if (range == "all" || range == "unix") {
    r.scope_ = range == "all" ? Scope::kAll : Scope::kUnix;
    *rule = std::move(r);
    return Status::Ok();
  }
  const auto slash = range.find('/');
  const std::string address(range.substr(0, slash));
  unsigned max_bits;
  if (inet_pton(AF_INET, address.c_str(), r.network_.data()) == 1) {
    r.scope_ = Scope::kIPv4;
    max_bits = 32;
  } else if (inet_pton(AF_INET6, address.c_str(), r.network_.data()) == 1) {
    r.scope_ = Scope::kIPv6;
    max_bits = 128;
  } else {
    return Status::Invalid(bad_range);
  }
  r.prefix_bits_ = max_bits;
  if (slash != std::string_view::npos) {
    const std::string_view bits = range.substr(slash + 1);
    auto [end, ec] = std::from_chars(bits.data(), bits.data() + bits.size(), r.prefix_bits_);
    if (ec != std::errc() || end != bits.data() + bits.size() || bits.empty() ||
        r.prefix_bits_ > max_bits)
      return Status::Invalid(bad_range);
  }
  if (r.scope_ == Scope::kIPv6 && IsIPv4Mapped(r.network_.data()))
    DST_RETURN_IF_ERROR(r.NormaliseIPv4Mapped(bad_range));
  *rule = std::move(r);
  return Status::Ok();
}

// Peers in the IPv4-mapped form are matched as IPv4 (Peer::FromSockaddr), so a
// rule written in that form becomes the IPv4 rule it means; as an IPv6 rule it
// could never match anyone. Only a prefix inside the mapped space (96 bits or
// more) says something about IPv4 addresses.
Status AccessRule::NormaliseIPv4Mapped(const std::string& bad_range) {
  if (prefix_bits_ < kIPv4MappedPrefixBits)
    return Status::Invalid(bad_range + ": an IPv4-mapped range needs a prefix of 96 to 128 (" +
                           "IPv4 clients are matched as IPv4: write it as an IPv4 range)");
  std::array<uint8_t, 16> ipv4{};
  std::memcpy(ipv4.data(), network_.data() + 12, 4);
  network_ = ipv4;
  prefix_bits_ -= kIPv4MappedPrefixBits;
  scope_ = Scope::kIPv4;
  return Status::Ok();
}

bool AccessRule::Matches(const Peer& peer) const {
  switch (scope_) {
    case Scope::kAll:
      return true;
    case Scope::kUnix:
      return peer.kind == Peer::Kind::kUnix;
    case Scope::kIPv4:
      return peer.kind == Peer::Kind::kIPv4 && PrefixEquals(network_, peer.address, prefix_bits_);
    case Scope::kIPv6:
      return peer.kind == Peer::Kind::kIPv6 && PrefixEquals(network_, peer.address, prefix_bits_);
  }
  return false;
}

AccessMode AccessPolicy::Decide(const Peer& peer) const {
  if (rules_.empty()) return AccessMode::kReadWrite;
  for (const AccessRule& rule : rules_)
    if (rule.Matches(peer)) return rule.mode();
  return AccessMode::kDeny;
}

}  // namespace dst::plugin
