// EtcdServer: a real single-member etcd (Debian's etcd-server) on loopback for the lifetime of
// the object, started as
//   etcd --name dst-test --data-dir DIR/data
//        --listen-client-urls http(s)://127.0.0.1:CLIENT (advertised the same)
//        --listen-peer-urls http://127.0.0.1:PEER (the initial cluster of one)
//        --listen-metrics-urls http://127.0.0.1:METRICS
//        --logger zap --log-level warn --heartbeat-interval 50 --election-timeout 500
// on free ports, with its data in a private TempDir. The short election timeout makes etcd's
// minimum lease TTL about 1 s (1.5 election timeouts), so that tests can watch leases expire.
//
// The constructor returns once etcd answers GET /health with "true" on its metrics port (plain
// HTTP also when the client port has TLS), and throws std::runtime_error with etcd's stderr if
// it exits or does not get there in time; a port taken between pick and bind is retried with
// others. The destructor kills etcd (through Process) if Stop() was not called.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

#include "tests/harness/process.h"
#include "tests/harness/temp_dir.h"

namespace dst::test {

struct EtcdServerOptions {
  // TLS on the client port, with a server certificate for 127.0.0.1 signed by ca-cert.pem and
  // ca-key.pem from this directory (the X509Dir layout; see etcd_server.cc for why etcd gets a
  // certificate of its own); empty: plain HTTP.
  std::string certificates_dir;
  // With TLS: require client certificates signed by ca-cert.pem from certificates_dir.
  bool client_cert_auth = false;
  std::chrono::milliseconds start_timeout{20000};
  std::string etcd = "etcd";  // executable (PATH lookup)
};

class EtcdServer {
 public:
  explicit EtcdServer(EtcdServerOptions options = {});
  ~EtcdServer() = default;
  EtcdServer(const EtcdServer&) = delete;
  EtcdServer& operator=(const EtcdServer&) = delete;

  int client_port() const { return client_port_; }
  // "127.0.0.1:PORT", the client endpoint.
  std::string endpoint() const;
  // etcd://127.0.0.1:PORT/PREFIX (etcds:// with TLS).
  std::string url(std::string_view prefix) const;
  bool tls() const { return !options_.certificates_dir.empty(); }

  bool Running() { return process_ && process_->Running(); }
  pid_t pid() const { return process_ ? process_->pid() : -1; }
  // Sends sig to etcd (SIGSTOP, SIGCONT, SIGKILL); after SIGSTOP, returns once every thread of
  // etcd has stopped (at most 5 s).
  void Kill(int sig);
  // SIGTERM, then SIGKILL if etcd has not exited after timeout. Returns its exit code. Safe to
  // call more than once.
  int Stop(std::chrono::milliseconds timeout = std::chrono::seconds(5));
  // Starts etcd again on the same ports with the same data (after Stop()). Throws like the
  // constructor.
  void Restart();

  std::string stderr_text() const { return process_ ? process_->stderr_text() : ""; }

 private:
  enum class Startup { kReady, kExited, kTimedOut };

  Argv BuildArgv() const;
  Startup Launch();

  EtcdServerOptions options_;
  TempDir dir_{"dst-etcd"};
  int client_port_ = 0;
  int peer_port_ = 0;
  int metrics_port_ = 0;
  std::optional<Process> process_;
};

}  // namespace dst::test
