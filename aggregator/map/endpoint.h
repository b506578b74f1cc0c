// Where `dst-aggregator map` reaches the aggregator: --connect HOST:PORT, --socket PATH, or what
// the aggregator's control socket answers to `endpoints` (its --unix paths, then its --listen
// addresses; a wildcard listen address is reached on the loopback).
//
// Threading: blocking, on the calling thread.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"

namespace dst::aggregator::map {

struct Endpoint {
  bool is_unix = false;
  std::string host;  // TCP: without brackets
  std::string port;
  std::string path;  // Unix
  static Endpoint Unix(std::string path) { return Endpoint{true, "", "", std::move(path)}; }
  static Endpoint Tcp(std::string host, std::string port) {
    return Endpoint{false, std::move(host), std::move(port), ""};
  }
  // "HOST:PORT" ("[V6]:PORT") or "unix:PATH": in messages and the backend identifier.
  std::string Name() const;
  bool operator==(const Endpoint&) const = default;
};

// The control socket's answer to `endpoints`.
struct AggregatorEndpoints {
  std::vector<std::string> unix_paths;
  std::vector<std::string> tcp;  // HOST:PORT as configured
  std::string tls = "off";       // off, on, require
  unsigned loops = 1;
  std::optional<std::chrono::milliseconds> retry_window;  // when the aggregator says
};

// EINVAL naming `option` when `text` is not HOST:PORT or [V6]:PORT.
Status ParseTcpEndpoint(const std::string& text, const std::string& option, Endpoint* out);
// EPROTO for lines that are not an answer to `endpoints`.
Status ParseEndpoints(const std::string& answer, AggregatorEndpoints* out);
// The first Unix socket, else the first TCP address. EPROTONOSUPPORT when clients need TLS
// (the kernel cannot do TLS), ENOENT when the aggregator listens nowhere.
Status PickEndpoint(const AggregatorEndpoints& endpoints, Endpoint* out);

// A connected, blocking stream socket (TCP_NODELAY on TCP); connecting gives up after `timeout`.
// Errors name the endpoint and say that the aggregator is unreachable.
Status ConnectEndpoint(const Endpoint& endpoint, std::chrono::milliseconds timeout, int* fd);

}  // namespace dst::aggregator::map
