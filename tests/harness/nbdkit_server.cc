#include "tests/harness/nbdkit_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace dst::test {
namespace {

#ifdef DST_ASAN_RUNTIME
constexpr const char* kAsanRuntime = DST_ASAN_RUNTIME;
#else
constexpr const char* kAsanRuntime = "";
#endif
#ifdef DST_UBSAN_RUNTIME
constexpr const char* kUbsanRuntime = DST_UBSAN_RUNTIME;
#else
constexpr const char* kUbsanRuntime = "";
#endif
#ifdef DST_TSAN_RUNTIME
constexpr const char* kTsanRuntime = DST_TSAN_RUNTIME;
#else
constexpr const char* kTsanRuntime = "";
#endif
// Libraries whose constructors must run after the ASan runtime has
// initialised (see tests/CMakeLists.txt); they go first in LD_PRELOAD.
#ifdef DST_PRELOAD_BEFORE_SANITIZERS
constexpr const char* kPreloadFirst = DST_PRELOAD_BEFORE_SANITIZERS;
#else
constexpr const char* kPreloadFirst = "";
#endif

std::string ReadSmallFile(const std::string& path) {
  std::ifstream in(path);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

// Binds a loopback socket to port 0 and returns the port the kernel chose, or
// -1 (with errno) if the address cannot be bound.
int BindEphemeral(bool ipv6) {
  const int fd = ::socket(ipv6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_storage ss{};
  socklen_t len;
  if (ipv6) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
    a->sin6_family = AF_INET6;
    a->sin6_addr = in6addr_loopback;
    len = sizeof *a;
  } else {
    auto* a = reinterpret_cast<sockaddr_in*>(&ss);
    a->sin_family = AF_INET;
    a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    len = sizeof *a;
  }
  int port = -1;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&ss), len) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) == 0) {
    port = ntohs(ipv6 ? reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port
                      : reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  }
  const int saved = errno;
  ::close(fd);
  errno = saved;
  return port;
}

// A listening IPv6 dual-stack socket bound to ::ffff:127.0.0.1 on a
// kernel-chosen port. Returns the fd (close-on-exec; Process dup2s it into the
// child) and sets *port, or returns -1 with errno.
int ListenMappedV4(int* port) {
  const int fd = ::socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  const int off = 0;
  sockaddr_in6 a{};
  a.sin6_family = AF_INET6;
  ::inet_pton(AF_INET6, "::ffff:127.0.0.1", &a.sin6_addr);
  socklen_t len = sizeof a;
  if (::setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof off) == 0 &&
      ::bind(fd, reinterpret_cast<sockaddr*>(&a), len) == 0 && ::listen(fd, SOMAXCONN) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0) {
    *port = ntohs(a.sin6_port);
    return fd;
  }
  const int saved = errno;
  ::close(fd);
  errno = saved;
  return -1;
}

}  // namespace

std::vector<std::string> NbdkitEnvironment() {
  // A ThreadSanitizer build's plugin needs its runtime in nbdkit, and
  // nothing else (it cannot be combined with ASan).
  if (*kTsanRuntime) return {"LD_PRELOAD=" + std::string(kTsanRuntime)};
  if (!*kAsanRuntime && !*kUbsanRuntime) return {};
  std::string preload;
  for (const char* lib : {kPreloadFirst, kAsanRuntime, kUbsanRuntime})
    if (*lib) preload += (preload.empty() ? "" : ":") + std::string(lib);
  // nbdkit itself is not instrumented and exits without freeing everything
  // a plugin may keep for its lifetime: leak checking would only add noise.
  // The runtime is deliberately not first in LD_PRELOAD when kPreloadFirst is
  // set; it still interposes malloc, which is what the check is about.
  std::string asan = "detect_leaks=0";
  if (*kPreloadFirst) asan += ":verify_asan_link_order=0";
  return {"LD_PRELOAD=" + preload, AsanOptionsEntry(asan)};
}

int PickFreePort(bool ipv6) {
  const int port = BindEphemeral(ipv6);
  if (port < 0)
    throw std::runtime_error(std::string("cannot pick a port: ") + std::strerror(errno));
  return port;
}

bool Ipv6LoopbackAvailable() {
  return BindEphemeral(/*ipv6=*/true) > 0;
}

bool Ipv4MappedListenAvailable() {
  int port;
  const int fd = ListenMappedV4(&port);
  if (fd < 0) return false;
  ::close(fd);
  return true;
}

std::string UriEscape(std::string_view s) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || std::strchr("-._~", c)) {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

NbdkitServer::NbdkitServer(NbdkitOptions options) : NbdkitServer(std::move(options), true) {}

NbdkitServer::NbdkitServer(NbdkitOptions options, bool start) : options_(std::move(options)) {
  pidfile_ = dir_.File("nbdkit.pid");
  if (options_.transport == Transport::kUnix) socket_path_ = dir_.File("nbd.sock");
  if (start) Start();
}

void NbdkitServer::Start() {
  for (int attempt = 1;; ++attempt) {
    if (options_.transport == Transport::kTcp4 || options_.transport == Transport::kTcp6)
      port_ = PickFreePort(options_.transport == Transport::kTcp6);
    switch (Launch()) {
      case Startup::kReady:
        return;
      case Startup::kTimedOut:
        Stop();
        throw std::runtime_error(StartError("nbdkit did not start in time", *process_));
      case Startup::kExited: {
        // Another process may have taken the port between pick and bind.
        const bool port_race = port_ != 0 && attempt < kPortAttempts &&
                               process_->stderr_text().find("in use") != std::string::npos;
        if (!port_race)
          throw std::runtime_error(StartError(
              "nbdkit exited with code " + std::to_string(*process_->exit_code()), *process_));
        break;
      }
    }
  }
}

Argv NbdkitServer::BuildArgv() const {
  Argv argv = {options_.nbdkit, "-f", "--exit-with-parent", "-P", pidfile_};
  switch (options_.transport) {
    case Transport::kUnix:
      argv.insert(argv.end(), {"-U", socket_path_});
      break;
    case Transport::kTcp4:
      argv.insert(argv.end(), {"-i", "127.0.0.1", "-p", std::to_string(port_)});
      break;
    case Transport::kTcp6:
      argv.insert(argv.end(), {"-i", "::1", "-p", std::to_string(port_)});
      break;
    case Transport::kTcp4MappedV6:
      // nbdkit checks that LISTEN_PID is its own pid: set it from a shell
      // that then execs nbdkit under the same pid.
      argv.insert(argv.begin(),
                  {"sh", "-c", "export LISTEN_PID=$$ LISTEN_FDS=1; exec \"$@\"", "sh"});
      break;
  }
  argv.insert(argv.end(), options_.nbdkit_flags.begin(), options_.nbdkit_flags.end());
  argv.push_back(options_.plugin);
  argv.insert(argv.end(), options_.args.begin(), options_.args.end());
  return argv;
}

std::vector<std::string> NbdkitServer::BuildEnv() const {
  std::vector<std::string> env = options_.extra_env;
  if (!options_.sanitizer_runtimes) return env;
  for (std::string& e : NbdkitEnvironment())
    env.push_back(std::move(e));
  return env;
}

void NbdkitServer::Spawn() {
  if (options_.transport != Transport::kTcp4MappedV6) {
    process_.emplace(BuildArgv(), BuildEnv());
    return;
  }
  const int fd = ListenMappedV4(&port_);
  if (fd < 0)
    throw std::runtime_error(std::string("listen on ::ffff:127.0.0.1: ") + std::strerror(errno));
  // Socket activation passes listening sockets from fd 3 on.
  try {
    process_.emplace(BuildArgv(), BuildEnv(), std::vector<InheritedFd>{{fd, 3}});
  } catch (...) {
    ::close(fd);
    throw;
  }
  ::close(fd);  // nbdkit has its own copy
}

NbdkitServer::Startup NbdkitServer::Launch() {
  process_.reset();
  ::unlink(pidfile_.c_str());
  Spawn();
  const auto deadline = std::chrono::steady_clock::now() + options_.start_timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    // nbdkit writes the pidfile only once it is listening.
    const std::string pid = ReadSmallFile(pidfile_);
    if (!pid.empty() && pid.back() == '\n') return Startup::kReady;
    if (!process_->Running()) return Startup::kExited;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return Startup::kTimedOut;
}

StartFailure NbdkitServer::StartExpectingFailure(NbdkitOptions options) {
  options.transport = Transport::kUnix;  // no port needed to be refused
  NbdkitServer server(std::move(options), /*start=*/false);
  const Startup result = server.Launch();
  if (result == Startup::kExited)
    return {*server.process_->exit_code(), server.process_->stderr_text()};
  server.Stop();
  throw std::runtime_error(StartError(
      result == Startup::kReady ? "nbdkit started although the configuration should be rejected"
                                : "nbdkit neither failed nor started within the start timeout",
      *server.process_));
}

std::string NbdkitServer::uri(std::string_view export_name) const {
  const std::string name = UriEscape(export_name);
  switch (options_.transport) {
    case Transport::kUnix:
      return "nbd+unix:///" + name + "?socket=" + socket_path_;
    case Transport::kTcp4:
    case Transport::kTcp4MappedV6:
      return "nbd://127.0.0.1:" + std::to_string(port_) + "/" + name;
    case Transport::kTcp6:
      return "nbd://[::1]:" + std::to_string(port_) + "/" + name;
  }
  return {};
}

std::string NbdkitServer::stderr_text() const {
  return process_ ? process_->stderr_text() : "";
}

std::string NbdkitServer::SanitizerReports() const {
  return SanitizerReportLines(stderr_text());
}

void NbdkitServer::Kill(int sig) {
  if (process_) process_->Kill(sig);
}

void NbdkitServer::KillAndWait(std::chrono::milliseconds timeout) {
  Kill(SIGKILL);
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (Running()) {
    if (std::chrono::steady_clock::now() > deadline)
      throw std::runtime_error("nbdkit (pid " + std::to_string(pid()) + ") survived SIGKILL");
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

void NbdkitServer::Restart() {
  if (process_ && process_->Running())
    throw std::runtime_error("nbdkit restart: the previous nbdkit is still running");
  if (process_) process_->Wait(std::chrono::seconds(5));  // reap it
  if (!socket_path_.empty()) ::unlink(socket_path_.c_str());
  switch (Launch()) {
    case Startup::kReady:
      return;
    case Startup::kTimedOut:
      Stop();
      throw std::runtime_error(StartError("nbdkit did not restart in time", *process_));
    case Startup::kExited:
      throw std::runtime_error(StartError(
          "nbdkit exited with code " + std::to_string(*process_->exit_code()), *process_));
  }
}

void NbdkitServer::Restart(NbdkitOptions options) {
  options.transport = options_.transport;
  options_ = std::move(options);
  Restart();
}

int NbdkitServer::Stop(std::chrono::milliseconds timeout) {
  if (!process_) return -1;
  if (process_->exit_code()) return *process_->exit_code();
  process_->Kill(SIGTERM);
  if (auto code = process_->Wait(timeout)) return *code;
  process_->Kill(SIGKILL);
  return process_->Wait(std::chrono::seconds(10)).value_or(-1);
}

}  // namespace dst::test
