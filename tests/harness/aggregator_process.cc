#include "tests/harness/aggregator_process.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <algorithm>
#include <cstdlib>

#include <csignal>
#include <cstring>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace dst::test {
namespace {

// The line the aggregator logs once its members are connected and its
// listeners bound: from then on clients can connect.
constexpr std::string_view kReadyMark = "info: serving ";
// Tries one connection; true if the server accepted it.
bool ConnectOnce(const sockaddr* address, socklen_t length) {
  const int fd = ::socket(address->sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  const bool ok = ::connect(fd, address, length) == 0;
  ::close(fd);
  return ok;
}

bool PollConnect(const sockaddr* address, socklen_t length, std::chrono::milliseconds timeout,
                 Process* process) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (ConnectOnce(address, length)) return true;
    if (process && !process->Running()) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

}  // namespace

AggregatorServer::AggregatorServer(AggregatorOptions options)
    : AggregatorServer(std::move(options), true) {}

AggregatorServer::AggregatorServer(AggregatorOptions options, bool start)
    : options_(std::move(options)) {
  if (options_.listen == AggregatorListen::kUnix) socket_path_ = dir_.File("agg.sock");
  if (start) Start();
}

void AggregatorServer::Start() {
  for (int attempt = 1;; ++attempt) {
    if (options_.listen == AggregatorListen::kTcp4) port_ = PickFreePort();
    switch (Launch()) {
      case Startup::kReady:
        return;
      case Startup::kTimedOut:
        Stop();
        throw std::runtime_error(StartError("dst-aggregator did not start in time", *process_));
      case Startup::kExited:
        // Another process may have taken the port between pick and bind.
        const bool port_race = port_ != 0 && attempt < kPortAttempts &&
                               process_->stderr_text().find("in use") != std::string::npos;
        if (!port_race)
          throw std::runtime_error(StartError(
              "dst-aggregator exited with code " + std::to_string(*process_->exit_code()),
              *process_));
    }
  }
}

Argv AggregatorServer::BuildArgv() const {
  Argv argv = options_.wrapper;
  argv.insert(argv.end(), {options_.binary, "serve"});
  switch (options_.listen) {
    case AggregatorListen::kUnix:
      argv.insert(argv.end(), {"--unix", socket_path_});
      break;
    case AggregatorListen::kTcp4:
      argv.insert(argv.end(), {"--listen", "127.0.0.1:" + std::to_string(port_)});
      break;
    case AggregatorListen::kFromArgs:
      break;
  }
  // Every aggregator gets its own control socket, so that parallel tests
  // never meet at the default path.
  if (std::find(options_.args.begin(), options_.args.end(), "--control") == options_.args.end())
    argv.insert(argv.end(), {"--control", control_path()});
  // DST_TEST_THREADS runs every aggregator a test starts on that many event loops (set per suite
  // in tests/CMakeLists.txt, and by the thread stage of scripts/test.sh), unless the test chose.
  const char* threads = std::getenv("DST_TEST_THREADS");
  if (threads && *threads &&
      std::find(options_.args.begin(), options_.args.end(), "--threads") == options_.args.end())
    argv.insert(argv.end(), {"--threads", threads});
  argv.insert(argv.end(), options_.args.begin(), options_.args.end());
  return argv;
}

std::string AggregatorServer::control_path() const {
  return dir_.File("control.sock");
}

AggregatorServer::Startup AggregatorServer::Launch() {
  process_.reset();
  process_.emplace(BuildArgv(), options_.extra_env);
  const auto deadline = std::chrono::steady_clock::now() + options_.start_timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    // Checked before the mark so that a process that logged it and died at
    // once is not taken for a running server.
    const bool running = process_->Running();
    if (process_->stderr_text().find(kReadyMark) != std::string::npos && running)
      return Startup::kReady;
    if (!running) return Startup::kExited;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return Startup::kTimedOut;
}

StartFailure AggregatorServer::StartExpectingFailure(AggregatorOptions options) {
  AggregatorServer server(std::move(options), /*start=*/false);
  const Startup result = server.Launch();
  if (result == Startup::kExited)
    return {*server.process_->exit_code(), server.process_->stderr_text()};
  server.Stop();
  throw std::runtime_error(StartError(result == Startup::kReady
                                          ? "dst-aggregator started although it should have refused"
                                          : "dst-aggregator neither failed nor started in time",
                                      *server.process_));
}

std::string AggregatorServer::uri(std::string_view volume) const {
  const std::string name = UriEscape(volume);
  switch (options_.listen) {
    case AggregatorListen::kUnix:
      return "nbd+unix:///" + name + "?socket=" + socket_path_;
    case AggregatorListen::kTcp4:
      return "nbd://127.0.0.1:" + std::to_string(port_) + "/" + name;
    case AggregatorListen::kFromArgs:
      break;
  }
  throw std::logic_error("AggregatorServer::uri: the listener comes from the arguments");
}

std::string AggregatorServer::stderr_text() const {
  return process_ ? process_->stderr_text() : "";
}

bool AggregatorServer::WaitForLog(std::string_view needle, size_t count,
                                  std::chrono::milliseconds timeout) {
  const auto occurrences = [&] {
    const std::string text = stderr_text();
    size_t n = 0;
    for (size_t at = text.find(needle); at != std::string::npos && n < count;
         at = text.find(needle, at + needle.size()))
      ++n;
    return n;
  };
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    if (occurrences() >= count) return true;
    if (!Running()) return occurrences() >= count;  // its last words are in by now
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

std::string AggregatorServer::SanitizerReports() const {
  return SanitizerReportLines(stderr_text());
}

void AggregatorServer::Kill(int sig) {
  if (process_) process_->Kill(sig);
}

std::optional<int> AggregatorServer::Wait(std::chrono::milliseconds timeout) {
  if (!process_) return std::nullopt;
  return process_->Wait(timeout);
}

int AggregatorServer::Stop(std::chrono::milliseconds timeout) {
  if (!process_) return -1;
  if (process_->exit_code()) return *process_->exit_code();
  process_->Kill(SIGTERM);
  if (auto code = process_->Wait(timeout)) return *code;
  process_->Kill(SIGKILL);
  return process_->Wait(std::chrono::seconds(10)).value_or(-1);
}

bool WaitForUnixSocket(const std::string& path, std::chrono::milliseconds timeout,
                       Process* process) {
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  if (path.size() >= sizeof address.sun_path)
    throw std::invalid_argument("socket path too long: " + path);
  std::memcpy(address.sun_path, path.c_str(), path.size() + 1);
  return PollConnect(reinterpret_cast<const sockaddr*>(&address), sizeof address, timeout, process);
}

bool WaitForTcpPort(int port, std::chrono::milliseconds timeout, Process* process) {
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return PollConnect(reinterpret_cast<const sockaddr*>(&address), sizeof address, timeout, process);
}

}  // namespace dst::test
