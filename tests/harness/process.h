// Process: a child process started from an argv (argv[0] is looked up in
// PATH), in its own process group, with stdin from /dev/null and stdout and
// stderr captured to files that stay readable after it exits. Extra
// environment entries ("KEY=VALUE") override or extend the parent's.
//
// Contract: no child outlives its Process. The destructor SIGKILLs the whole
// process group and reaps the child if Wait() has not already done so, so a
// test that fails half-way (exception, failed REQUIRE) leaves nothing running.
//
// RunCommand runs a command to completion, bounded by a timeout; on expiry the
// command is killed and std::runtime_error is thrown, so a hung tool fails the
// test instead of hanging the suite.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "tests/harness/temp_dir.h"

namespace dst::test {

using Argv = std::vector<std::string>;

// A descriptor of the parent to hand to the child under another number
// (e.g. a listening socket as fd 3 for socket activation).
struct InheritedFd {
  int parent_fd;
  int child_fd;
};

// Renders argv for messages, e.g. "nbdinfo --size nbd://...".
std::string JoinArgv(const Argv& argv);

class Process {
 public:
  // Throws std::runtime_error if the program cannot be started. Only stdio and
  // the descriptors in fds are inherited (the rest are expected CLOEXEC).
  explicit Process(Argv argv, std::vector<std::string> extra_env = {},
                   std::vector<InheritedFd> fds = {});
  ~Process();
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  pid_t pid() const { return pid_; }
  const Argv& argv() const { return argv_; }

  // True until the child has exited (reaps it if it just did).
  bool Running();
  // Sends sig to the child's process group; a no-op once the child is reaped.
  void Kill(int sig);
  // Waits for the child to exit. Returns its exit code (128 + signal number if
  // killed by a signal, as a shell reports it), or nullopt on timeout.
  std::optional<int> Wait(std::chrono::milliseconds timeout);
  // The exit code once the child has been reaped.
  std::optional<int> exit_code() const { return exit_code_; }

  std::string stdout_path() const { return dir_.File("stdout"); }
  std::string stderr_path() const { return dir_.File("stderr"); }
  std::string stdout_text() const;
  std::string stderr_text() const;

 private:
  bool Reap(bool block);

  Argv argv_;
  TempDir dir_{"dst-proc"};
  pid_t pid_ = -1;
  std::optional<int> exit_code_;
};

// Why a server process did not come up: WHAT, its command line and its stderr so far.
std::string StartError(const std::string& what, const Process& p);

struct CommandResult {
  int exit_code = -1;
  std::string stdout_text;
  std::string stderr_text;
};

// Runs argv to completion. Throws std::runtime_error if it cannot be started
// or does not finish within timeout (after killing it).
CommandResult RunCommand(const Argv& argv,
                         std::chrono::milliseconds timeout = std::chrono::seconds(30),
                         std::vector<std::string> extra_env = {});

// The lines of a process's stderr that ASan, LSan or UBSan wrote, so that a
// test can require a server to have exited without any.
std::string SanitizerReportLines(const std::string& stderr_text);

// The "ASAN_OPTIONS=..." entry of a child's environment: the options this
// process inherited, then `options`, which win where both set one.
std::string AsanOptionsEntry(const std::string& options);

}  // namespace dst::test
