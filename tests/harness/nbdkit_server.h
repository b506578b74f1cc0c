// NbdkitServer: a real nbdkit process serving one plugin for the lifetime of
// the object, started as
//   nbdkit -f --exit-with-parent -P PIDFILE (-U SOCKET | -i ADDR -p PORT)
//          [extra nbdkit flags] PLUGIN [plugin args]
// on a Unix socket in a private TempDir or on a free loopback TCP port (or on
// a socket handed over by socket activation, see Transport). The constructor
// returns once nbdkit has written its pidfile (it does so after it listens),
// and throws std::runtime_error with nbdkit's stderr if it exits or does not
// get there in time. The destructor kills nbdkit if Stop() was not called.
//
// Threads: on Linux, nbdkit 1.32.5 sets a parent-death signal (SIGTERM,
// PR_SET_PDEATHSIG) even without --exit-with-parent (which the harness passes
// anyway), and the "parent" whose death sends it is the *thread* that spawned
// nbdkit. A server started or restarted from a thread that exits after the
// server is up (the constructor and Restart() wait for that) quits at once,
// cleanly and silently. Construct and Restart() a server only on a thread
// that outlives it: the test's own thread, or a helper thread kept alive
// until the server is stopped (harness_test shows the hazard).
//
// Sanitizers: when the harness is built with DST_ASAN_RUNTIME (and
// DST_UBSAN_RUNTIME) defined, nbdkit is started with those runtimes in
// LD_PRELOAD and ASAN_OPTIONS=detect_leaks=0, so that a plugin built with
// -fsanitize=address,undefined can be loaded by the uninstrumented nbdkit
// (DST_PRELOAD_BEFORE_SANITIZERS, if defined, is preloaded ahead of them; see
// tests/CMakeLists.txt for why).
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tests/harness/process.h"
#include "tests/harness/temp_dir.h"

namespace dst::test {

enum class Transport {
  kUnix,  // -U SOCKET in the server's TempDir
  kTcp4,  // -i 127.0.0.1 -p PORT
  kTcp6,  // -i ::1 -p PORT
  // 127.0.0.1 on an IPv6 dual-stack socket, so that nbdkit sees IPv4 clients
  // as IPv4-mapped IPv6 peers (::ffff:127.0.0.1). The harness binds the socket
  // and hands it over by socket activation (LISTEN_FDS), since nbdkit's own
  // IPv6 sockets are IPv6-only.
  kTcp4MappedV6,
};

struct NbdkitOptions {
  std::string plugin;             // path to a plugin .so, or a built-in name ("memory")
  std::vector<std::string> args;  // plugin arguments, e.g. "file=/x", "size=1M"
  Transport transport = Transport::kUnix;
  std::vector<std::string> nbdkit_flags;  // before the plugin, e.g. "-v", "--filter=..."
  std::vector<std::string> extra_env;     // KEY=VALUE for the nbdkit process
  // Preload the sanitizer runtimes (see above). Only a plugin built like ours
  // needs them; nbdkit's own plugins run faster without (the ASan allocator
  // behind every request buffer).
  bool sanitizer_runtimes = true;
  std::chrono::milliseconds start_timeout{10000};
  std::string nbdkit = "nbdkit";  // executable (PATH lookup)
};

// Result of a server that was expected not to start.
struct StartFailure {
  int exit_code = -1;
  std::string stderr_text;
};

class NbdkitServer {
 public:
  explicit NbdkitServer(NbdkitOptions options);
  ~NbdkitServer() = default;
  NbdkitServer(const NbdkitServer&) = delete;
  NbdkitServer& operator=(const NbdkitServer&) = delete;

  // Starts nbdkit with a configuration that must be rejected, and returns its
  // exit code and stderr. Throws if nbdkit starts serving instead, or if it
  // neither exits nor serves within the start timeout.
  static StartFailure StartExpectingFailure(NbdkitOptions options);

  // NBD URI for an export ("" = the server's default export), e.g.
  // nbd+unix:///NAME?socket=PATH, nbd://127.0.0.1:PORT/NAME, nbd://[::1]:PORT/NAME
  // (kTcp4MappedV6 uses the 127.0.0.1 form).
  std::string uri(std::string_view export_name = "") const;
  Transport transport() const { return options_.transport; }
  const std::string& socket_path() const { return socket_path_; }  // "" for TCP
  int port() const { return port_; }                               // 0 for Unix
  pid_t pid() const { return process_ ? process_->pid() : -1; }
  bool Running() { return process_ && process_->Running(); }

  std::string stderr_text() const;
  // Lines of stderr in which a sanitizer reported a problem ("" if none).
  std::string SanitizerReports() const;

  // Sends sig to nbdkit (e.g. SIGKILL, SIGSTOP, SIGCONT).
  void Kill(int sig);
  // SIGKILL, and waits until the process is gone (ready for Restart());
  // throws if it is still there after `timeout`.
  void KillAndWait(std::chrono::milliseconds timeout = std::chrono::seconds(5));
  // Starts nbdkit again, with the same options on the same socket or port,
  // after it has exited or been killed (a SIGKILLed nbdkit leaves its Unix
  // socket behind; it is removed first). Throws like the constructor.
  void Restart();
  // The same with other options (plugin, arguments, flags): another server
  // where clients expect this one. The transport stays.
  void Restart(NbdkitOptions options);

  // SIGTERM, then SIGKILL if nbdkit has not exited after timeout. Returns its
  // exit code (137 if it had to be killed). nbdkit waits for connected clients
  // to leave before it exits: close them first. Safe to call more than once.
  int Stop(std::chrono::milliseconds timeout = std::chrono::seconds(5));

 private:
  enum class Startup { kReady, kExited, kTimedOut };

  NbdkitServer(NbdkitOptions options, bool start);
  Argv BuildArgv() const;
  std::vector<std::string> BuildEnv() const;
  void Start();
  void Spawn();
  // Spawns nbdkit and waits until it has written its pidfile or exited.
  Startup Launch();

  NbdkitOptions options_;
  TempDir dir_{"dst-nbdkit"};
  std::string socket_path_;
  std::string pidfile_;
  int port_ = 0;
  std::optional<Process> process_;
};

// The environment entries (KEY=VALUE) any nbdkit run needs to load a plugin
// built like ours, e.g. for `nbdkit --dump-plugin` through RunCommand. Empty
// unless the harness was built with sanitizer runtimes.
std::vector<std::string> NbdkitEnvironment();

// A TCP port on the loopback address that was free a moment ago (bound to port
// 0 and released). IPv6 uses ::1.
int PickFreePort(bool ipv6 = false);
// A server that lost the race for its picked port is started again on another one, up to this
// many attempts in all.
inline constexpr int kPortAttempts = 5;

// True if ::1 is configured (an IPv6 socket can be bound to it).
bool Ipv6LoopbackAvailable();
// True if an IPv6 dual-stack socket can be bound to ::ffff:127.0.0.1
// (what Transport::kTcp4MappedV6 needs).
bool Ipv4MappedListenAvailable();

// Percent-encodes an export name for use in the path of an NBD URI.
std::string UriEscape(std::string_view s);

}  // namespace dst::test
