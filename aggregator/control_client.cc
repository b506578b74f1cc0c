#include "aggregator/control_client.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "aggregator/command_error.h"
#include "aggregator/control/control_path.h"

namespace dst::aggregator {

namespace {

// Long enough for a busy event loop; a hung aggregator fails the command.
constexpr int kAnswerTimeoutMs = 10000;
// Far more than the status of thousands of members; whatever sends more is not an aggregator
// answering, and is cut off rather than read into memory and printed.
constexpr size_t kMaxAnswer = 16u << 20;

Status Connect(const std::string& path, int* out) {
  sockaddr_un address{};
  if (path.size() >= sizeof address.sun_path)
    return Status::Invalid("control socket " + path + ": path too long");
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Status::FromErrno(errno, "socket");
  address.sun_family = AF_UNIX;
  std::strncpy(address.sun_path, path.c_str(), sizeof address.sun_path - 1);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
    const int err = errno;
    ::close(fd);
    return Status::FromErrno(
        err, "control socket " + path + " (is the aggregator running? see --control)");
  }
  *out = fd;
  return Status::Ok();
}

// Everything the aggregator sends until it closes the connection.
Status ReadAnswer(int fd, const std::string& path, std::string* answer) {
  char buffer[4096];
  for (;;) {
    pollfd p{fd, POLLIN, 0};
    const int ready = ::poll(&p, 1, kAnswerTimeoutMs);
    if (ready == 0) return Status::Error(ETIMEDOUT, "control socket " + path + ": no answer");
    if (ready < 0 && errno != EINTR) return Status::FromErrno(errno, "poll");
    if (ready < 0) continue;
    const ssize_t n = ::read(fd, buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Status::FromErrno(errno, "control socket " + path + ": read");
    if (n == 0) return Status::Ok();
    if (answer->size() + static_cast<size_t>(n) > kMaxAnswer)
      return Status::Error(EMSGSIZE, "control socket " + path + ": an answer longer than " +
                                         std::to_string(kMaxAnswer >> 20) +
                                         " MiB: not an aggregator's");
    answer->append(buffer, static_cast<size_t>(n));
  }
}

}  // namespace

Status AskControl(const std::string& control, const std::string& request, std::string* answer) {
  const std::string path = control.empty() ? control::DefaultControlPath() : control;
  Status s;
  // The default path in a shared temporary directory: only in a directory that is ours.
  // One that does not exist is no aggregator running: Connect says so.
  if (const std::string dir = control::PrivateControlDir(); control.empty() && !dir.empty())
    if (s = control::CheckPrivateDir(dir, /*create=*/false); s.err() == ENOENT) s = Status::Ok();
  int fd = -1;
  if (s.ok()) s = Connect(path, &fd);
  if (s.ok()) {
    if (::write(fd, request.data(), request.size()) != static_cast<ssize_t>(request.size()))
      s = Status::FromErrno(errno, "control socket " + path + ": write");
    if (s.ok()) s = ReadAnswer(fd, path, answer);
    ::close(fd);
  }
  if (s.ok() && answer->empty())
    s = Status::Error(EPROTO,
                      "control socket " + path + ": the aggregator closed without answering");
  return s;
}

void AddControlOption(CLI::App& command, std::string* control) {
  command.add_option(
      "--control", *control,
      "the aggregator's control socket (default " + control::DefaultControlPath() + ")");
}

int RunControlCommand(const std::string& control, const std::string& request) {
  std::string answer;
  Status s = AskControl(control, request, &answer);
  while (s.ok() && !answer.empty() && answer.back() == '\n')
    answer.pop_back();
  if (s.ok() && answer.rfind("error: ", 0) == 0)
    s = Status::Invalid(answer.substr(std::string("error: ").size()));
  if (!s.ok()) return ExitWithError(s);
  std::printf("%s\n", answer.c_str());
  return 0;
}

}  // namespace dst::aggregator
