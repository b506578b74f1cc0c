// The cluster URL that names an etcd cluster and the key prefix dst keeps its catalog under
// (docs/cluster.md):
//
//   etcd://HOST[:PORT][,HOST[:PORT]...]/PREFIX    plain HTTP to etcd's v3 JSON gateway
//   etcds://HOST[:PORT][,HOST[:PORT]...]/PREFIX   the same over TLS
//
// HOST is a name, an IPv4 address or a bracketed IPv6 address ([::1]); PORT defaults to 2379,
// etcd's client port. PREFIX is one or more non-empty segments ("dst", "dst/prod"); the parsed
// prefix starts with '/' and has no trailing '/' ("/dst/prod"), so that a key under it is
// prefix + "/" + name. Credentials, queries and fragments are refused: secrets come from options,
// not from URLs that end up in logs.
//
// Pure functions; any thread.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace dst::cluster {

inline constexpr uint16_t kDefaultEtcdPort = 2379;

struct EtcdEndpoint {
  std::string host;  // without brackets, also for IPv6
  uint16_t port = kDefaultEtcdPort;

  // "127.0.0.1:2379", "[::1]:2379", "etcd-1.example:2379".
  std::string ToString() const;
  bool operator==(const EtcdEndpoint&) const = default;
};

struct EtcdUrl {
  bool tls = false;                     // etcds://
  std::vector<EtcdEndpoint> endpoints;  // in the order given; at least one, no duplicates
  std::string prefix;                   // "/dst/prod"

  // Back to the canonical text (default ports written out, trailing '/' gone).
  std::string ToString() const;
};

// Parses `text`; errors quote the URL and say what is wrong and what the form is.
Status ParseEtcdUrl(std::string_view text, EtcdUrl* url);

}  // namespace dst::cluster
