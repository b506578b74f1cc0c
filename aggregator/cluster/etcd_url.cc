#include "aggregator/cluster/etcd_url.h"

#include <algorithm>
#include <cctype>
#include <charconv>

namespace dst::cluster {
namespace {

constexpr std::string_view kForm = "expected etcd://HOST[:PORT][,HOST[:PORT]...]/PREFIX";

Status Bad(std::string_view text, std::string_view why) {
  return Status::Invalid("cluster URL \"" + std::string(text) + "\": " + std::string(why) + " (" +
                         std::string(kForm) + ")");
}

bool IsHostChar(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.' || c == '_';
}

// A prefix segment: printable, no space, nothing a URL would give another meaning.
bool IsPrefixChar(char c) {
  return std::isgraph(static_cast<unsigned char>(c)) && c != '?' && c != '#' && c != '%';
}

// "host", "host:port", "[v6]", "[v6]:port".
Status ParseEndpoint(std::string_view text, std::string_view item, EtcdEndpoint* endpoint) {
  if (item.empty()) return Bad(text, "an empty host in the list");
  std::string_view host;
  std::string_view rest;
  if (item.front() == '[') {
    const size_t close = item.find(']');
    if (close == std::string_view::npos)
      return Bad(text, "'[' without ']' in \"" + std::string(item) + "\"");
    host = item.substr(1, close - 1);
    rest = item.substr(close + 1);
    if (host.empty() || !std::all_of(host.begin(), host.end(), [](char c) {
          return std::isxdigit(static_cast<unsigned char>(c)) || c == ':' || c == '.';
        }))
      return Bad(text, "\"" + std::string(item) + "\" is not a bracketed IPv6 address");
    if (!rest.empty() && rest.front() != ':')
      return Bad(text,
                 "unexpected \"" + std::string(rest) + "\" after \"[" + std::string(host) + "]\"");
  } else {
    const size_t colon = item.find(':');
    host = item.substr(0, colon);
    rest = colon == std::string_view::npos ? std::string_view() : item.substr(colon);
    if (host.empty()) return Bad(text, "no host in \"" + std::string(item) + "\"");
    if (!std::all_of(host.begin(), host.end(), IsHostChar))
      return Bad(text, "\"" + std::string(host) + "\" is not a host name or address");
  }
  endpoint->host = std::string(host);
  endpoint->port = kDefaultEtcdPort;
  if (rest.empty()) return Status::Ok();
  const std::string_view port = rest.substr(1);  // after ':'
  unsigned value = 0;
  const auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
  if (port.empty() || ec != std::errc() || end != port.data() + port.size() || value == 0 ||
      value > 65535)
    return Bad(text, "port \"" + std::string(port) + "\" of " + std::string(host) +
                         " is not a number from 1 to 65535");
  endpoint->port = static_cast<uint16_t>(value);
  return Status::Ok();
}

Status ParsePrefix(std::string_view text, std::string_view path, std::string* prefix) {
  // path starts with '/'; one trailing '/' is tolerated ("etcd://h/dst/").
  if (path.size() > 1 && path.back() == '/') path.remove_suffix(1);
  if (path.size() <= 1)
    return Bad(text, "no PREFIX: name the key prefix dst keeps its catalog under");
  if (path.find("//") != std::string_view::npos) return Bad(text, "an empty segment in the PREFIX");
  for (char c : path.substr(1))
    if (c != '/' && !IsPrefixChar(c))
      return Bad(
          text, std::string("the PREFIX may not contain ") +
                    (std::isgraph(static_cast<unsigned char>(c)) ? "'" + std::string(1, c) + "'"
                                                                 : "spaces or control characters"));
  *prefix = std::string(path);
  return Status::Ok();
}

}  // namespace

std::string EtcdEndpoint::ToString() const {
  const bool v6 = host.find(':') != std::string::npos;
  return (v6 ? "[" + host + "]" : host) + ":" + std::to_string(port);
}

std::string EtcdUrl::ToString() const {
  std::string out = tls ? "etcds://" : "etcd://";
  for (size_t i = 0; i < endpoints.size(); ++i)
    out += (i ? "," : "") + endpoints[i].ToString();
  return out + prefix;
}

Status ParseEtcdUrl(std::string_view text, EtcdUrl* url) {
  EtcdUrl parsed;
  std::string_view rest;
  if (text.starts_with("etcd://")) {
    rest = text.substr(7);
  } else if (text.starts_with("etcds://")) {
    parsed.tls = true;
    rest = text.substr(8);
  } else {
    return Bad(text, "the scheme must be etcd:// or etcds:// (TLS)");
  }
  if (rest.find_first_of("?#") != std::string_view::npos)
    return Bad(text, "queries and fragments are not supported");
  const size_t slash = rest.find('/');
  const std::string_view hosts = rest.substr(0, slash);
  if (hosts.empty()) return Bad(text, "no HOST");
  if (hosts.find('@') != std::string_view::npos)
    return Bad(text, "credentials do not belong in the URL");
  size_t start = 0;
  for (;;) {
    const size_t comma = hosts.find(',', start);
    EtcdEndpoint endpoint;
    DST_RETURN_IF_ERROR(ParseEndpoint(text, hosts.substr(start, comma - start), &endpoint));
    if (std::find(parsed.endpoints.begin(), parsed.endpoints.end(), endpoint) !=
        parsed.endpoints.end())
      return Bad(text, endpoint.ToString() + " is listed twice");
    parsed.endpoints.push_back(std::move(endpoint));
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
  if (slash == std::string_view::npos)
    return Bad(text, "no PREFIX: name the key prefix dst keeps its catalog under");
  DST_RETURN_IF_ERROR(ParsePrefix(text, rest.substr(slash), &parsed.prefix));
  *url = std::move(parsed);
  return Status::Ok();
}

}  // namespace dst::cluster
