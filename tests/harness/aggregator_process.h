// AggregatorServer: a real `dst-aggregator serve` process for the lifetime of
// the object, started as
//   [WRAPPER...] dst-aggregator serve (--unix SOCKET | --listen 127.0.0.1:PORT) ARGS...
// with the socket in a private TempDir or on a free loopback port (or with no
// listener added, when ARGS carry their own, e.g. through --config). The
// constructor returns once the aggregator has logged that it is serving (it
// does so after connecting its members and binding its listeners), and throws
// std::runtime_error with its stderr if it exits or does not get there in
// time. The destructor kills it if Stop() was not called.
//
// Also: waits for other servers' sockets (qemu-nbd, nbd-server) to accept.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tests/harness/nbdkit_server.h"
#include "tests/harness/process.h"
#include "tests/harness/temp_dir.h"

namespace dst::test {

enum class AggregatorListen {
  kUnix,      // --unix SOCKET in the server's TempDir
  kTcp4,      // --listen 127.0.0.1:PORT on a free port
  kFromArgs,  // nothing added: the arguments (or a --config) say where
};

struct AggregatorOptions {
  std::string binary;             // path to dst-aggregator
  std::vector<std::string> args;  // after "serve" and the listener, e.g. --raw, URIs
  AggregatorListen listen = AggregatorListen::kUnix;
  std::vector<std::string> extra_env;  // KEY=VALUE for the process
  std::chrono::milliseconds start_timeout{20000};
  // Prepended to the command line, e.g. {"ip", "netns", "exec", "NS"} to run
  // the aggregator in a network namespace. The wrapper must exec the
  // aggregator (not fork it), so that pid() is the aggregator's; Kill()
  // reaches it either way, through the process group.
  std::vector<std::string> wrapper;
};

class AggregatorServer {
 public:
  explicit AggregatorServer(AggregatorOptions options);
  ~AggregatorServer() = default;
  AggregatorServer(const AggregatorServer&) = delete;
  AggregatorServer& operator=(const AggregatorServer&) = delete;

  // Starts an aggregator that must refuse to serve; returns its exit code and
  // stderr. Throws if it serves instead, or neither exits nor serves in time.
  static StartFailure StartExpectingFailure(AggregatorOptions options);

  // NBD URI of a volume on the listener this object added.
  std::string uri(std::string_view volume = "vol0") const;
  const std::string& socket_path() const { return socket_path_; }  // "" unless kUnix
  // The control socket (`dst-aggregator status --control PATH`), in the
  // server's TempDir unless the arguments name one.
  std::string control_path() const;
  int port() const { return port_; }  // 0 unless kTcp4
  pid_t pid() const { return process_ ? process_->pid() : -1; }
  bool Running() { return process_ && process_->Running(); }

  std::string stderr_text() const;
  // Polls stderr until `needle` stands in it at least `count` times: how a
  // test waits for the server to have done something, instead of sleeping.
  // False after `timeout`, or once the aggregator has exited without it.
  bool WaitForLog(std::string_view needle, size_t count = 1,
                  std::chrono::milliseconds timeout = std::chrono::seconds(10));
  // Lines of stderr in which a sanitizer reported a problem ("" if none).
  std::string SanitizerReports() const;

  // Sends sig to the aggregator (its process group).
  void Kill(int sig);
  // Waits for it to exit on its own; its exit code, or nullopt on timeout.
  std::optional<int> Wait(std::chrono::milliseconds timeout);
  // SIGTERM, then SIGKILL after timeout. Returns the exit code (137 if it had
  // to be killed). Safe to call more than once.
  int Stop(std::chrono::milliseconds timeout = std::chrono::seconds(10));

 private:
  enum class Startup { kReady, kExited, kTimedOut };

  AggregatorServer(AggregatorOptions options, bool start);
  void Start();
  Argv BuildArgv() const;
  Startup Launch();

  AggregatorOptions options_;
  TempDir dir_{"dst-agg"};
  std::string socket_path_;
  int port_ = 0;
  std::optional<Process> process_;
};

// Polls until a connection to the Unix socket or loopback TCP port succeeds.
// Returns false on timeout, or as soon as `process` (if given) has exited.
bool WaitForUnixSocket(const std::string& path, std::chrono::milliseconds timeout,
                       Process* process = nullptr);
bool WaitForTcpPort(int port, std::chrono::milliseconds timeout, Process* process = nullptr);

}  // namespace dst::test
