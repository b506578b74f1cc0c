#include "aggregator/map/endpoint.h"

#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <sstream>

namespace dst::aggregator::map {

namespace {

bool IsPort(const std::string& text) {
  return !text.empty() && text.size() <= 5 &&
         text.find_first_not_of("0123456789") == std::string::npos && std::stoul(text) > 0 &&
         std::stoul(text) <= 65535;
}

Status Unreachable(const Endpoint& endpoint, int err, const std::string& why) {
  return Status::Error(err, "aggregator at " + endpoint.Name() + " unreachable: " + why);
}

// Connects `fd` to `address`, giving up after `timeout`.
Status ConnectWithin(int fd, const sockaddr* address, socklen_t length,
                     std::chrono::milliseconds timeout) {
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0 || ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0)
    return Status::FromErrno(errno, "fcntl");
  int err = 0;
  if (::connect(fd, address, length) != 0) {
    err = errno;
    if (err == EINPROGRESS) {
      pollfd p{fd, POLLOUT, 0};
      int ready;
      do {
        ready = ::poll(&p, 1, static_cast<int>(timeout.count()));
      } while (ready < 0 && errno == EINTR);
      socklen_t size = sizeof err;
      if (ready == 0)
        err = ETIMEDOUT;
      else if (ready < 0 || ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &size) != 0)
        err = errno;
    }
  }
  if (err == 0 && ::fcntl(fd, F_SETFL, flags) != 0) err = errno;
  return err == 0 ? Status::Ok() : Status::Error(err, std::strerror(err));
}

Status ConnectUnix(const Endpoint& endpoint, std::chrono::milliseconds timeout, int* out) {
  sockaddr_un address{};
  if (endpoint.path.size() >= sizeof address.sun_path)
    return Status::Invalid("socket " + endpoint.path + ": path too long");
  address.sun_family = AF_UNIX;
  std::memcpy(address.sun_path, endpoint.path.c_str(), endpoint.path.size());
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Status::FromErrno(errno, "socket");
  const Status s =
      ConnectWithin(fd, reinterpret_cast<const sockaddr*>(&address), sizeof address, timeout);
  if (!s.ok()) {
    ::close(fd);
    return Unreachable(endpoint, s.err(), s.message());
  }
  *out = fd;
  return Status::Ok();
}

Status ConnectTcp(const Endpoint& endpoint, std::chrono::milliseconds timeout, int* out) {
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_ADDRCONFIG;
  addrinfo* found = nullptr;
  if (const int e = ::getaddrinfo(endpoint.host.c_str(), endpoint.port.c_str(), &hints, &found);
      e != 0)
    return Unreachable(endpoint, EHOSTUNREACH, ::gai_strerror(e));
  Status last = Status::Error(EHOSTUNREACH, "no address");
  for (addrinfo* a = found; a != nullptr; a = a->ai_next) {
    const int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) {
      last = Status::FromErrno(errno, "socket");
      continue;
    }
    last = ConnectWithin(fd, a->ai_addr, a->ai_addrlen, timeout);
    if (last.ok()) {
      const int one = 1;
      ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      ::freeaddrinfo(found);
      *out = fd;
      return Status::Ok();
    }
    ::close(fd);
  }
  ::freeaddrinfo(found);
  return Unreachable(endpoint, last.err(), last.message());
}

}  // namespace

std::string Endpoint::Name() const {
  if (is_unix) return "unix:" + path;
  return (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" + port;
}

Status ParseTcpEndpoint(const std::string& text, const std::string& option, Endpoint* out) {
  const size_t colon = text.rfind(':');
  if (colon == std::string::npos)
    return Status::Invalid(option + " " + text + ": expected HOST:PORT");
  std::string host = text.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  const std::string port = text.substr(colon + 1);
  if (!IsPort(port)) return Status::Invalid(option + " " + text + ": bad port '" + port + "'");
  // No host: this machine.
  *out = Endpoint::Tcp(host.empty() ? "127.0.0.1" : host, port);
  return Status::Ok();
}

Status ParseEndpoints(const std::string& answer, AggregatorEndpoints* out) {
  *out = AggregatorEndpoints{};
  std::istringstream lines(answer);
  std::string line;
  while (std::getline(lines, line)) {
    const size_t space = line.find(' ');
    const std::string key = line.substr(0, space);
    const std::string value = space == std::string::npos ? "" : line.substr(space + 1);
    if (key == "unix" && !value.empty()) {
      out->unix_paths.push_back(value);
    } else if (key == "tcp" && !value.empty()) {
      out->tcp.push_back(value);
    } else if (key == "tls" && (value == "off" || value == "on" || value == "require")) {
      out->tls = value;
    } else if (key == "loops" && !value.empty() && value.size() < 4 &&
               value.find_first_not_of("0123456789") == std::string::npos &&
               std::stoul(value) > 0) {
      out->loops = static_cast<unsigned>(std::stoul(value));
    } else if (key == "retry-window-ms" && !value.empty() && value.size() < 12 &&
               value.find_first_not_of("0123456789") == std::string::npos) {
      out->retry_window = std::chrono::milliseconds(std::stoull(value));
    } else {
      return Status::Error(EPROTO, "endpoints: unexpected answer line '" + line + "'");
    }
  }
  return Status::Ok();
}

Status PickEndpoint(const AggregatorEndpoints& endpoints, Endpoint* out) {
  if (endpoints.tls == "require")
    return Status::Error(EPROTONOSUPPORT,
                         "the aggregator requires TLS (--tls=require), which the kernel's NBD "
                         "client cannot do: map needs a listener without TLS");
  if (!endpoints.unix_paths.empty()) {
    *out = Endpoint::Unix(endpoints.unix_paths.front());
    return Status::Ok();
  }
  if (endpoints.tcp.empty())
    return Status::Error(ENOENT, "the aggregator has no --listen or --unix address");
  DST_RETURN_IF_ERROR(ParseTcpEndpoint(endpoints.tcp.front(), "listen", out));
  // A wildcard listens on every address, the loopback among them.
  if (out->host == "0.0.0.0") out->host = "127.0.0.1";
  if (out->host == "::") out->host = "::1";
  return Status::Ok();
}

Status ConnectEndpoint(const Endpoint& endpoint, std::chrono::milliseconds timeout, int* fd) {
  return endpoint.is_unix ? ConnectUnix(endpoint, timeout, fd) : ConnectTcp(endpoint, timeout, fd);
}

}  // namespace dst::aggregator::map
