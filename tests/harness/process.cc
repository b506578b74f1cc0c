#include "tests/harness/process.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

extern char** environ;

namespace dst::test {
namespace {

std::string Slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

std::string EnvKey(const std::string& entry) {
  return entry.substr(0, entry.find('='));
}

// The parent's environment with extra entries replacing same-named ones.
std::vector<std::string> MergeEnv(const std::vector<std::string>& extra) {
  std::vector<std::string> env;
  for (char** e = environ; e && *e; ++e) {
    const std::string entry = *e;
    bool overridden = false;
    for (const auto& x : extra)
      overridden = overridden || EnvKey(x) == EnvKey(entry);
    if (!overridden) env.push_back(entry);
  }
  env.insert(env.end(), extra.begin(), extra.end());
  return env;
}

std::vector<char*> CStrings(std::vector<std::string>& strings) {
  std::vector<char*> out;
  for (auto& s : strings)
    out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

int DecodeStatus(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

// RAII for the posix_spawn attribute objects.
struct SpawnSetup {
  posix_spawn_file_actions_t actions;
  posix_spawnattr_t attr;
  SpawnSetup() {
    posix_spawn_file_actions_init(&actions);
    posix_spawnattr_init(&attr);
  }
  ~SpawnSetup() {
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attr);
  }
};

void ConfigureSpawn(SpawnSetup& s, const std::string& out, const std::string& err) {
  posix_spawn_file_actions_addopen(&s.actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&s.actions, 1, out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  posix_spawn_file_actions_addopen(&s.actions, 2, err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  // Own process group, so that Kill() also reaches grandchildren (wrapper
  // scripts); clean signal state, whatever the test runner set up.
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  posix_spawnattr_setpgroup(&s.attr, 0);
  posix_spawnattr_setsigmask(&s.attr, &none);
  posix_spawnattr_setsigdefault(&s.attr, &all);
  posix_spawnattr_setflags(&s.attr,
                           POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
}

}  // namespace

std::string JoinArgv(const Argv& argv) {
  std::string out;
  for (const auto& a : argv)
    out += (out.empty() ? "" : " ") + a;
  return out;
}

std::string StartError(const std::string& what, const Process& p) {
  const std::string& program = p.argv().empty() ? std::string() : p.argv().front();
  return what + ": " + JoinArgv(p.argv()) + "\n" + program.substr(program.rfind('/') + 1) +
         " stderr:\n" + p.stderr_text();
}

Process::Process(Argv argv, std::vector<std::string> extra_env, std::vector<InheritedFd> fds)
    : argv_(std::move(argv)) {
  if (argv_.empty()) throw std::invalid_argument("Process: empty argv");
  SpawnSetup setup;
  ConfigureSpawn(setup, stdout_path(), stderr_path());
  // dup2 clears close-on-exec on the target, even when the numbers are equal.
  for (const InheritedFd& fd : fds)
    posix_spawn_file_actions_adddup2(&setup.actions, fd.parent_fd, fd.child_fd);
  Argv args = argv_;
  std::vector<std::string> env = MergeEnv(extra_env);
  std::vector<char*> c_args = CStrings(args), c_env = CStrings(env);
  const int rc =
      posix_spawnp(&pid_, c_args[0], &setup.actions, &setup.attr, c_args.data(), c_env.data());
  if (rc != 0) {
    pid_ = -1;
    throw std::runtime_error("cannot start " + JoinArgv(argv_) + ": " + std::strerror(rc));
  }
}

Process::~Process() {
  if (pid_ <= 0 || exit_code_) return;
  // Until reaped, the pid (and so the group id) cannot be reused: safe to kill.
  ::kill(-pid_, SIGKILL);
  Reap(/*block=*/true);
}

bool Process::Reap(bool block) {
  if (exit_code_) return true;
  int status = 0;
  pid_t r;
  do {
    r = ::waitpid(pid_, &status, block ? 0 : WNOHANG);
  } while (r == -1 && errno == EINTR);
  if (r != pid_) return false;
  exit_code_ = DecodeStatus(status);
  return true;
}

bool Process::Running() {
  return !Reap(/*block=*/false);
}

void Process::Kill(int sig) {
  if (!exit_code_) ::kill(-pid_, sig);
}

std::optional<int> Process::Wait(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  auto pause = std::chrono::milliseconds(1);
  while (!Reap(/*block=*/false)) {
    if (std::chrono::steady_clock::now() >= deadline) return std::nullopt;
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::milliseconds(20));
  }
  return exit_code_;
}

std::string Process::stdout_text() const {
  return Slurp(stdout_path());
}
std::string Process::stderr_text() const {
  return Slurp(stderr_path());
}

CommandResult RunCommand(const Argv& argv, std::chrono::milliseconds timeout,
                         std::vector<std::string> extra_env) {
  Process p(argv, std::move(extra_env));
  const std::optional<int> code = p.Wait(timeout);
  if (!code) {
    p.Kill(SIGKILL);
    p.Wait(std::chrono::seconds(10));
    throw std::runtime_error("timed out after " + std::to_string(timeout.count()) +
                             " ms: " + JoinArgv(argv) + "\nstderr:\n" + p.stderr_text());
  }
  return CommandResult{*code, p.stdout_text(), p.stderr_text()};
}

std::string AsanOptionsEntry(const std::string& options) {
  const char* inherited = std::getenv("ASAN_OPTIONS");
  return "ASAN_OPTIONS=" + (inherited && *inherited ? std::string(inherited) + ":" : "") + options;
}

std::string SanitizerReportLines(const std::string& stderr_text) {
  std::istringstream in(stderr_text);
  std::string line, out;
  while (std::getline(in, line)) {
    if (line.find("Sanitizer") != std::string::npos ||
        line.find("runtime error:") != std::string::npos)
      out += line + "\n";
  }
  return out;
}

}  // namespace dst::test
