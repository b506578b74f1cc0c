// fault_netns: a network link cut between the aggregator and an export node,
// in two network namespaces the test creates and deletes:
//
//   ns dst-fault-PID-a                         ns dst-fault-PID-b
//   dst-aggregator  -- veth 192.0.2.1/24 ====== 192.0.2.2/24 veth --  nbdkit + dst plugin
//   (Unix socket in a temp dir: the client in the root namespace reaches it)
//
// While a client writes and reads continuously, the node's side of the link
// goes down for 2 s (io-timeout 1 s) and comes back: the client sees latency
// only, and every block reads back as written.
//
// Needs CAP_NET_ADMIN and CAP_SYS_ADMIN (ip netns); without them the case is
// skipped with the reason, with them a failure to set up fails it.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <stdexcept>
#include <thread>

#include "tests/fault/fault_fixture.h"

namespace dst::test::fault::fault_netns_test {
namespace {

constexpr const char* kAggregatorAddress = "192.0.2.1/24";
constexpr const char* kNodeAddress = "192.0.2.2/24";
constexpr const char* kNodeIp = "192.0.2.2";
constexpr int kNodePort = 10809;

// Runs `ip ARGS...`; throws with its output unless it exits 0.
void Ip(const Argv& args) {
  Argv argv = {"ip"};
  argv.insert(argv.end(), args.begin(), args.end());
  const CommandResult r = RunCommand(argv, 10s);
  if (r.exit_code != 0)
    throw std::runtime_error(JoinArgv(argv) + ": exit " + std::to_string(r.exit_code) + ": " +
                             r.stderr_text);
}

// Effective capability `bit` of this process (from /proc/self/status).
bool HasCapability(int bit) {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("CapEff:", 0) != 0) continue;
    const uint64_t caps = std::stoull(line.substr(7), nullptr, 16);
    return (caps >> bit) & 1;
  }
  return false;
}

// Two namespaces joined by a veth pair, deleted (with the pair) on
// destruction, whatever happened in between.
class NamespacePair {
 public:
  NamespacePair() {
    const std::string tag = std::to_string(::getpid());
    a_ = "dst-fault-" + tag + "-a";
    b_ = "dst-fault-" + tag + "-b";
    veth_a_ = "dfa" + tag;  // interface names: at most 15 characters
    veth_b_ = "dfb" + tag;
  }
  ~NamespacePair() {
    for (const std::string& ns : created_) {
      try {
        RunCommand({"ip", "netns", "del", ns}, 10s);
      } catch (const std::exception&) {
      }
    }
  }
  NamespacePair(const NamespacePair&) = delete;
  NamespacePair& operator=(const NamespacePair&) = delete;

  // Creates both namespaces and the link; throws on failure.
  void Create() {
    for (const std::string& ns : {a_, b_}) {
      Ip({"netns", "add", ns});
      created_.push_back(ns);
    }
    Ip({"link", "add", veth_a_, "type", "veth", "peer", "name", veth_b_});
    try {
      Ip({"link", "set", veth_a_, "netns", a_});
      Ip({"link", "set", veth_b_, "netns", b_});
    } catch (...) {
      RunCommand({"ip", "link", "del", veth_a_}, 10s);  // still in the root namespace
      throw;
    }
    Ip({"-n", a_, "addr", "add", kAggregatorAddress, "dev", veth_a_});
    Ip({"-n", b_, "addr", "add", kNodeAddress, "dev", veth_b_});
    for (const auto& [ns, veth] : {std::pair{a_, veth_a_}, {b_, veth_b_}}) {
      Ip({"-n", ns, "link", "set", "lo", "up"});
      Ip({"-n", ns, "link", "set", veth, "up"});
    }
  }

  const std::string& a() const { return a_; }
  const std::string& b() const { return b_; }
  const std::string& veth_b() const { return veth_b_; }

 private:
  std::string a_, b_, veth_a_, veth_b_;
  std::vector<std::string> created_;
};

// nbdkit with our plugin inside namespace `ns`, on 192.0.2.2:10809.
// `ip netns exec` and `env` exec (they do not fork), so nbdkit is our child
// and --exit-with-parent holds. Stopped with SIGTERM on destruction; must
// exit 0 with no sanitizer report.
class NodeInNamespace {
 public:
  NodeInNamespace(const std::string& ns, const std::string& file, uint64_t size)
      : pidfile_(dir_.File("nbdkit.pid")) {
    Argv argv = {"ip", "netns", "exec", ns, "env"};
    for (const std::string& e : NbdkitEnvironment())
      argv.push_back(e);
    argv.insert(argv.end(), {DST_TOOL_NBDKIT, "-f", "--exit-with-parent", "-P", pidfile_, "-i",
                             kNodeIp, "-p", std::to_string(kNodePort), DST_PLUGIN_PATH,
                             "file=" + file, "size=" + std::to_string(size)});
    process_.emplace(argv);
    // nbdkit writes its pidfile once it listens.
    const auto deadline = SteadyClock::now() + 10s;
    for (;;) {
      std::ifstream in(pidfile_);
      pid_t pid = 0;
      if (in >> pid && pid > 0) {
        if (pid != process_->pid())
          throw std::runtime_error("nbdkit pid " + std::to_string(pid) + " is not our child " +
                                   std::to_string(process_->pid()));
        return;
      }
      if (!process_->Running() || SteadyClock::now() > deadline)
        throw std::runtime_error("nbdkit in " + ns + " did not start:\n" + process_->stderr_text());
      std::this_thread::sleep_for(5ms);
    }
  }
  ~NodeInNamespace() {
    process_->Kill(SIGTERM);
    auto code = process_->Wait(5s);
    if (!code) {
      process_->Kill(SIGKILL);
      code = process_->Wait(10s);
    }
    if (const char* show = std::getenv("DST_FAULT_SHOW_LOGS"); show && *show == '1')
      std::fprintf(stderr, "---- nbdkit stderr ----\n%s----\n", process_->stderr_text().c_str());
    CHECK_MESSAGE(code == 0, "nbdkit exit " << code.value_or(-1) << "\n"
                                            << process_->stderr_text());
    CHECK_MESSAGE(SanitizerReportLines(process_->stderr_text()).empty(), process_->stderr_text());
  }
  std::string uri() const {
    return "nbd://" + std::string(kNodeIp) + ":" + std::to_string(kNodePort) + "/";
  }

 private:
  TempDir dir_{"dst-fault-node"};
  std::string pidfile_;
  std::optional<Process> process_;
};

TEST_SUITE_BEGIN("fault_netns");

TEST_CASE("a link cut for 2 s between aggregator and node: latency only, data intact") {
  if (!HasCapability(12) || !HasCapability(21)) {  // CAP_NET_ADMIN, CAP_SYS_ADMIN
    MESSAGE(
        "SKIPPED: creating network namespaces needs CAP_NET_ADMIN and CAP_SYS_ADMIN, "
        "which this process does not have");
    return;
  }
  NamespacePair ns;
  ns.Create();  // with the capabilities, a failure here is a failure of the case
  TempDir dir("dst-fault-netns");
  const std::string file = dir.File("node.img");
  constexpr uint64_t kSize = 4 * kMiB;
  NodeInNamespace node(ns.b(), file, kSize);
  Aggregator aggregator({"--raw", "--io-timeout", "1s", "--keepalive", "1s", node.uri()},
                        AggregatorListen::kUnix, {"ip", "netns", "exec", ns.a()});
  NbdClient client;
  REQUIRE_NBD_OK(client.Connect(aggregator.uri()));

  // The cut, from another thread while this one does I/O. Only plain
  // values cross threads; the checks are made here.
  std::atomic<bool> cut_over{false};
  std::string cut_error;
  double link_down_for = 0;
  std::jthread cutter([&] {
    try {
      std::this_thread::sleep_for(700ms);
      Ip({"-n", ns.b(), "link", "set", ns.veth_b(), "down"});
      const auto down_at = SteadyClock::now();
      std::this_thread::sleep_for(2s);
      Ip({"-n", ns.b(), "link", "set", ns.veth_b(), "up"});
      link_down_for = SecondsSince(down_at);
    } catch (const std::exception& e) {
      cut_error = e.what();
    }
    cut_over = true;
  });

  // Write a 64 KiB block, read it back, next block; until a second after
  // the link is back (bounded in time and count).
  constexpr uint64_t kBlock = 64 * kKiB;
  Bytes model(kSize, 0);
  const auto start = SteadyClock::now();
  std::optional<SteadyClock::time_point> over_at;
  double slowest = 0;
  int rounds = 0, failures = 0;
  for (; rounds < 100000 && failures < 3; ++rounds) {
    if (cut_over && !over_at) over_at = SteadyClock::now();
    if (over_at && SteadyClock::now() - *over_at > 1s) break;
    if (SecondsSince(start) > 40) break;
    const uint64_t offset = (rounds % (kSize / kBlock)) * kBlock;
    const Bytes data = RandomBytes(kBlock, 600 + rounds);
    const auto op_start = SteadyClock::now();
    const NbdStatus written = WriteFor(client, data, offset, 15s);
    Bytes got(kBlock);
    const NbdStatus read = written.ok() ? ReadFor(client, got, offset, 15s) : written;
    slowest = std::max(slowest, SecondsSince(op_start));
    CHECK_NBD_OK(written);
    CHECK_NBD_OK(read);
    if (!written.ok() || !read.ok()) {
      ++failures;
      continue;
    }
    CHECK(got == data);
    std::copy(data.begin(), data.end(), model.begin() + offset);
  }
  cutter.join();
  REQUIRE_MESSAGE(cut_error.empty(), cut_error);
  INFO(rounds << " write+read rounds; the slowest took " << slowest << " s; the link was down for "
              << link_down_for << " s");
  CHECK(cut_over.load());
  CHECK(link_down_for >= 2.0);
  // The I/O under way when the link went down waited for it to come back.
  CHECK(slowest >= 1.0);

  Bytes whole(kSize);
  CHECK_NBD_OK(ReadFor(client, whole, 0));
  CHECK(whole == model);
  CHECK_NBD_OK(FlushFor(client));
  CHECK(ReadFile(file) == model);

  const MemberStats s = QueryStats(aggregator, "vol0", 0);
  INFO(s.line());
  CHECK(s.Text("state") == "ready");
  CHECK(s.Text("fenced") == "yes");
  CHECK(s.Count("reconnects") >= 1);
  CHECK(s.Count("timeouts") >= 1);
  CHECK(s.Count("failures") == 0);
  const std::string log = aggregator.stderr_text();
  INFO(log);
  CHECK(Contains(log, "info: member " + node.uri() + ": ready -> reconnecting: "));
  CHECK(Contains(log, "info: member " + node.uri() + ": reconnecting -> ready: fenced, epoch "));
}

TEST_SUITE_END();

}  // namespace
}  // namespace dst::test::fault::fault_netns_test
