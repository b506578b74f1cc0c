// kernel: the stock Linux kernel NBD client (Debian 12's kernel with its
// nbd.ko, and nbd-client, booted under qemu) against dst-aggregator volumes.
// In one boot, the guest (guest_client.sh) makes ext4 file systems, fills
// them with files of known checksums, reconnects, runs fsck and reads the
// files back: on an assembled linear volume by name and through the default
// export, on an assembled striped volume with two connections, on a raw
// volume, and on the striped volume while this side SIGKILLs an export node
// in the middle of a copy and restarts it. The guest reports each case on
// its console; this side asserts on those lines and on the aggregator's log.
#include <algorithm>
#include <cstdlib>
#include <memory>
#include <optional>
#include <sstream>
#include <thread>

#include "tests/fault/fault_fixture.h"
#include "tests/integration/volume_fixture.h"
#include "tests/kernel/kernel_guest.h"

namespace dst::test::kernel {
namespace {

using fault::Aggregator;
using fault::Member;
using fault::MemberStats;
using fault::QueryStats;
using fault::WaitForStats;
using namespace std::chrono_literals;

// Which cases guest_client.sh runs, in order.
constexpr const char* kCases[] = {"linear-named", "linear-default", "stripe-two-connections",
                                  "stripe-member-restart", "raw-linear"};
// The stripe member that is killed and restarted.
constexpr size_t kVictim = 1;
// Bounds: building the guest image (a first build downloads the kernel
// package), and the guest from boot to power-off (about 30 s when the machine
// is otherwise idle). Together below the ctest TIMEOUT.
constexpr auto kImageTimeout = 180s;
constexpr auto kGuestTimeout = 240s;

std::chrono::milliseconds Left(fault::SteadyClock::time_point deadline) {
  return std::max(0ms, std::chrono::duration_cast<std::chrono::milliseconds>(
                           deadline - fault::SteadyClock::now()));
}

// Export nodes on files in a directory, one per size.
class MemberGroup {
 public:
  MemberGroup(const TempDir& dir, const std::string& prefix,
              std::initializer_list<uint64_t> sizes) {
    for (uint64_t size : sizes) {
      const std::string file = dir.File(prefix + std::to_string(members_.size()) + ".img");
      members_.push_back(std::make_unique<Member>(file, size));
      uris_.push_back(members_.back()->uri());
    }
  }
  Member& member(size_t i) { return *members_[i]; }
  const std::vector<std::string>& uris() const { return uris_; }

 private:
  std::vector<std::unique_ptr<Member>> members_;
  std::vector<std::string> uris_;
};

std::string TomlList(const std::vector<std::string>& items) {
  std::string out = "[";
  for (const std::string& item : items)
    out += (out.size() > 1 ? ", \"" : "\"") + item + "\"";
  return out + "]";
}

// One aggregator serves all three volumes; the empty export name selects
// vol0. A member that stops answering is given up on after two seconds
// (reconnect and resend), instead of the default five, and an outage of up to
// a minute costs the client latency only.
std::string AggregatorConfig(const MemberGroup& linear, const MemberGroup& stripe,
                             const MemberGroup& raw) {
  std::ostringstream out;
  out << "default = \"vol0\"\n"
      << "io-timeout = \"2s\"\nkeepalive = \"1s\"\nretry-window = \"60s\"\n";
  out << "[[volume]]\nname = \"vol0\"\nmembers = " << TomlList(linear.uris()) << "\n";
  out << "[[volume]]\nname = \"stripe0\"\nmembers = " << TomlList(stripe.uris()) << "\n";
  out << "[[volume]]\nname = \"raw0\"\nraw = true\nlayout = \"linear\"\nmembers = "
      << TomlList(raw.uris()) << "\n";
  return out.str();
}

int64_t VolumeSize(const AggregatorServer& aggregator, const std::string& volume) {
  NbdClient client;
  REQUIRE_NBD_OK(client.Connect(aggregator.uri(volume)));
  return client.Size();
}

// /test/params for guest_client.sh: where the aggregator is, as the guest
// reaches the host's loopback, and each volume's name and size.
std::string GuestParams(const AggregatorServer& aggregator) {
  std::ostringstream out;
  out << "HOST=10.0.2.2\nPORT=" << aggregator.port() << "\n";
  const std::pair<const char*, const char*> volumes[] = {
      {"LINEAR", "vol0"}, {"STRIPE", "stripe0"}, {"RAW", "raw0"}};
  for (const auto& [var, name] : volumes)
    out << var << "=" << name << "\n" << var << "_SIZE=" << VolumeSize(aggregator, name) << "\n";
  return out.str();
}

std::string ReadText(const std::string& path) {
  const Bytes bytes = ReadFile(path);
  return std::string(bytes.begin(), bytes.end());
}

// Once the guest's copy is under way and its writes reach the victim,
// SIGKILLs the victim and restarts it on the same socket. Returns how long it
// was down.
double KillAndRestartDuringCopy(KernelGuest& guest, Aggregator& aggregator, Member& victim,
                                fault::SteadyClock::time_point deadline) {
  REQUIRE_MESSAGE(guest.WaitForConsole("dst-mark copy-start", Left(deadline)),
                  "the guest did not get to the copy");
  const uint64_t before = QueryStats(aggregator, "stripe0", kVictim).Count("ios");
  WaitForStats(
      aggregator, "stripe0", kVictim,
      [&](const MemberStats& s) { return s.Count("ios") >= before + 16; }, 60s);
  const auto killed_at = fault::SteadyClock::now();
  victim.KillHard();
  std::this_thread::sleep_for(300ms);
  victim.RestartAfterKill();
  const double outage = fault::SecondsSince(killed_at);
  CHECK_MESSAGE(!Contains(guest.Console(), "dst-mark copy-done"),
                "the copy ended before the export node was back: the restart was not tested");
  return outage;
}

// The aggregator noticed the victim's death, got it back under a new fencing
// epoch with the guest's I/O waiting for it, and failed nothing.
void CheckRecovery(Aggregator& aggregator, const MemberGroup& stripe) {
  const std::string log = aggregator.stderr_text();
  INFO("dst-aggregator log:\n" << log);
  const std::string uri = stripe.uris()[kVictim];
  CHECK(Contains(log, "info: member " + uri + ": ready -> reconnecting: "));
  const std::string back =
      LineWithAll(log, {"info: member " + uri, "reconnecting -> ready: fenced"});
  CHECK_FALSE(back.empty());
  CHECK_MESSAGE(!Contains(back, " 0 I/Os to resend"), "no guest I/O met the outage: " << back);
  CHECK_FALSE(Contains(log, "gave up"));
  CHECK_FALSE(Contains(log, "-> failed"));
  for (size_t i = 0; i < stripe.uris().size(); ++i) {
    const MemberStats stats = QueryStats(aggregator, "stripe0", i);
    INFO(stats.line());
    CHECK(stats.Text("state") == "ready");
    CHECK(stats.Count("failures") == 0);
  }
}

void CheckGuestReport(const std::string& console, std::optional<int> exit_code) {
  for (const char* name : kCases) {
    INFO("case " << std::string(name));
    CHECK(Contains(console, std::string("dst-case ") + name + ": PASS"));
  }
  CHECK_FALSE(Contains(console, "I/O error"));
  REQUIRE_MESSAGE(exit_code.has_value(), "the guest did not finish");
  CHECK(*exit_code == 0);
}

struct GuestRun {
  std::string console;
  double seconds = 0;  // from boot to power-off
  double outage = 0;   // how long the victim was down
};

// Boots the guest against the aggregator, restarts the victim during the
// copy, and checks the guest's report; shows the console on any failure.
GuestRun RunGuest(const std::string& image, Aggregator& aggregator, MemberGroup& stripe) {
  const auto booted_at = fault::SteadyClock::now();
  const auto deadline = booted_at + kGuestTimeout;
  KernelGuest guest({.qemu = DST_TOOL_QEMU_SYSTEM_X86_64,
                     .image_dir = image,
                     .files = {{"/test/run", ReadText(DST_KERNEL_GUEST_SCRIPT), 0755},
                               {"/test/params", GuestParams(aggregator)}}});
  INFO("guest console:\n" << guest.Console() << "qemu stderr:\n" << guest.QemuErrors());
  GuestRun run;
  run.outage = KillAndRestartDuringCopy(guest, aggregator, stripe.member(kVictim), deadline);
  const std::optional<int> exit_code = guest.WaitForExit(Left(deadline));
  run.seconds = fault::SecondsSince(booted_at);
  run.console = guest.Console();
  CheckGuestReport(run.console, exit_code);
  return run;
}

TEST_SUITE_BEGIN("kernel");

TEST_CASE(
    "the kernel's nbd client on linear, striped and raw volumes, and across a member restart") {
  const std::string image = BuildKernelGuest(DST_KERNEL_GUEST_BUILDER, kImageTimeout);
  TempDir dir("dst-kernel");
  // Members of different sizes, so that the linear volume's boundary is not
  // at its middle.
  MemberGroup linear(dir, "linear", {40 * kMiB, 56 * kMiB});
  MemberGroup stripe(dir, "stripe", {48 * kMiB, 48 * kMiB, 48 * kMiB});
  MemberGroup raw(dir, "raw", {24 * kMiB, 24 * kMiB});
  CreateOk({"--name", "vol0", "--layout", "linear"}, linear.uris());
  CreateOk({"--name", "stripe0", "--layout", "stripe", "--chunk", "64K"}, stripe.uris());
  const std::string config = WriteConfig(dir, AggregatorConfig(linear, stripe, raw));
  Aggregator aggregator({"--config", config}, AggregatorListen::kTcp4);

  const GuestRun run = RunGuest(image, aggregator, stripe);
  CheckRecovery(aggregator, stripe);
  MESSAGE("guest ran for " << run.seconds << " s; export node down for " << run.outage << " s");
  if (const char* show = std::getenv("DST_KERNEL_SHOW_CONSOLE"); show && *show == '1')
    MESSAGE("guest console:\n" << run.console);
}

TEST_SUITE_END();

}  // namespace
}  // namespace dst::test::kernel
