#include "tests/harness/etcd_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <thread>

#include "tests/harness/nbdkit_server.h"  // PickFreePort

namespace dst::test {
namespace {

constexpr auto kHealthTimeout = std::chrono::milliseconds(500);

// GET /health on 127.0.0.1:port with a short deadline: true if etcd says it is healthy (it has
// a leader and answers reads).
bool Healthy(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string answer;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0) {
    const std::string request =
        "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    if (::write(fd, request.data(), request.size()) == static_cast<ssize_t>(request.size())) {
      const auto deadline = std::chrono::steady_clock::now() + kHealthTimeout;
      char buffer[1024];
      for (;;) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            deadline - std::chrono::steady_clock::now());
        pollfd p{fd, POLLIN, 0};
        if (left.count() <= 0 || ::poll(&p, 1, static_cast<int>(left.count())) <= 0) break;
        const ssize_t n = ::read(fd, buffer, sizeof buffer);
        if (n <= 0) break;
        answer.append(buffer, static_cast<size_t>(n));
      }
    }
  }
  ::close(fd);
  return answer.find("\"health\":\"true\"") != std::string::npos;
}

void WriteText(const std::string& path, const std::string& text) {
  std::ofstream out(path);
  out << text;
  if (!out) throw std::runtime_error("cannot write " + path);
}

void Run(const Argv& argv) {
  const CommandResult r = RunCommand(argv);
  if (r.exit_code != 0) throw std::runtime_error(JoinArgv(argv) + " failed:\n" + r.stderr_text);
}

// etcd 3.4's JSON gateway reaches etcd's own gRPC service with the server certificate as its
// client certificate: with --client-cert-auth, that certificate must be good for client
// authentication too, which the X509Dir's server certificate is not. This one, signed by the
// same CA, is good for both.
void MakeServerCertificate(const std::string& ca_dir, const TempDir& dir) {
  const std::string key = dir.File("server-key.pem");
  const std::string info = dir.File("server.info");
  WriteText(info,
            "organization = dst test\ncn = localhost\ndns_name = localhost\n"
            "ip_address = 127.0.0.1\ntls_www_server\ntls_www_client\nencryption_key\n"
            "signing_key\nexpiration_days = 2\n");
  Run({"certtool", "--generate-privkey", "--outfile", key});
  if (::chmod(key.c_str(), 0600) != 0) throw std::runtime_error("cannot chmod 600 " + key);
  Run({"certtool", "--generate-certificate", "--load-ca-certificate", ca_dir + "/ca-cert.pem",
       "--load-ca-privkey", ca_dir + "/ca-key.pem", "--load-privkey", key, "--template", info,
       "--outfile", dir.File("server-cert.pem")});
}

}  // namespace

EtcdServer::EtcdServer(EtcdServerOptions options) : options_(std::move(options)) {
  if (tls()) MakeServerCertificate(options_.certificates_dir, dir_);
  for (int attempt = 1;; ++attempt) {
    client_port_ = PickFreePort();
    peer_port_ = PickFreePort();
    metrics_port_ = PickFreePort();
    switch (Launch()) {
      case Startup::kReady:
        return;
      case Startup::kTimedOut:
        Stop();
        throw std::runtime_error(StartError("etcd did not become healthy in time", *process_));
      case Startup::kExited: {
        const bool port_race =
            attempt < kPortAttempts &&
            process_->stderr_text().find("address already in use") != std::string::npos;
        if (!port_race)
          throw std::runtime_error(StartError(
              "etcd exited with code " + std::to_string(*process_->exit_code()), *process_));
        break;
      }
    }
  }
}

std::string EtcdServer::endpoint() const {
  return "127.0.0.1:" + std::to_string(client_port_);
}

std::string EtcdServer::url(std::string_view prefix) const {
  return std::string(tls() ? "etcds://" : "etcd://") + endpoint() + "/" + std::string(prefix);
}

Argv EtcdServer::BuildArgv() const {
  const std::string client = std::string(tls() ? "https" : "http") + "://" + endpoint();
  const std::string peer = "http://127.0.0.1:" + std::to_string(peer_port_);
  // clang-format off
  Argv argv = {options_.etcd,
               "--name", "dst-test",
               "--data-dir", dir_.File("data"),
               "--listen-client-urls", client,
               "--advertise-client-urls", client,
               "--listen-peer-urls", peer,
               "--initial-advertise-peer-urls", peer,
               "--initial-cluster", "dst-test=" + peer,
               "--initial-cluster-state", "new",
               "--listen-metrics-urls", "http://127.0.0.1:" + std::to_string(metrics_port_),
               "--logger", "zap",
               "--log-level", "warn",
               "--heartbeat-interval", "50",
               "--election-timeout", "500"};
  // clang-format on
  if (tls()) {
    const std::string& dir = options_.certificates_dir;
    argv.insert(argv.end(), {"--cert-file", dir_.File("server-cert.pem"), "--key-file",
                             dir_.File("server-key.pem")});
    if (options_.client_cert_auth)
      argv.insert(argv.end(), {"--client-cert-auth", "--trusted-ca-file", dir + "/ca-cert.pem"});
  }
  return argv;
}

EtcdServer::Startup EtcdServer::Launch() {
  process_.reset();
  process_.emplace(BuildArgv());
  const auto deadline = std::chrono::steady_clock::now() + options_.start_timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (!process_->Running()) return Startup::kExited;
    if (Healthy(metrics_port_)) return Startup::kReady;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return Startup::kTimedOut;
}

namespace {

// Whether every thread of process `pid` is stopped ('T' or 't' in its stat line).
bool AllThreadsStopped(pid_t pid) {
  const std::string tasks = "/proc/" + std::to_string(pid) + "/task";
  std::error_code ec;
  bool any = false;
  for (const auto& task : std::filesystem::directory_iterator(tasks, ec)) {
    std::ifstream in(task.path() / "stat");
    std::string line;
    std::getline(in, line);
    const size_t paren = line.rfind(')');
    if (paren == std::string::npos || paren + 2 >= line.size()) return false;
    const char state = line[paren + 2];
    if (state != 'T' && state != 't') return false;
    any = true;
  }
  return any && !ec;
}

}  // namespace

void EtcdServer::Kill(int sig) {
  if (!process_) return;
  process_->Kill(sig);
  // kill() returns before every thread of a busy process has stopped: a request sent at once
  // could still be answered. Wait (bounded) until all of them have.
  if (sig != SIGSTOP) return;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (!AllThreadsStopped(process_->pid()) && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
}

int EtcdServer::Stop(std::chrono::milliseconds timeout) {
  if (!process_) return -1;
  if (process_->exit_code()) return *process_->exit_code();
  process_->Kill(SIGCONT);  // a stopped etcd cannot act on SIGTERM
  process_->Kill(SIGTERM);
  if (auto code = process_->Wait(timeout)) return *code;
  process_->Kill(SIGKILL);
  return process_->Wait(std::chrono::seconds(10)).value_or(-1);
}

void EtcdServer::Restart() {
  if (Running()) throw std::runtime_error("etcd restart: the previous etcd is still running");
  switch (Launch()) {
    case Startup::kReady:
      return;
    case Startup::kTimedOut:
      Stop();
      throw std::runtime_error(StartError("etcd did not become healthy in time", *process_));
    case Startup::kExited:
      throw std::runtime_error(
          StartError("etcd exited with code " + std::to_string(*process_->exit_code()), *process_));
  }
}

}  // namespace dst::test
