// kernel: the stock Linux kernel NBD client (Debian 12's kernel with its
// nbd.ko, and nbd-client, booted under qemu) against dst-aggregator volumes.
// In one boot, the guest (guest_client.sh) makes ext4 file systems, fills
// them with files of known checksums, reconnects, runs fsck and reads the
// files back: on an assembled linear volume by name and through the default
// export, on an assembled striped volume with two connections, on a raw
// volume, on the striped volume while this side SIGKILLs an export node in
// the middle of a copy and restarts it, on a mirror of two copies while
// this side SIGKILLs one copy's export node for good, and on that mirror
// again while this side replaces the copy that is left, live, by a new export
// node (member replace) rebuilt during the copy. The guest reports each
// case on its console; this side asserts on those lines, on the aggregator's
// log and on its status.
#include <algorithm>
#include <cstdlib>
#include <memory>
#include <optional>
#include <regex>
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
constexpr const char* kCases[] = {"linear-named",
                                  "linear-default",
                                  "stripe-two-connections",
                                  "stripe-member-restart",
                                  "mirror-member-killed",
                                  "mirror-member-replaced",
                                  "raw-linear",
                                  "map-raw",
                                  "map-errors"};

// An export node this side kills while a guest case copies onto its volume;
// the case brackets the copy with `dst-mark copy-start CASE` and
// `dst-mark copy-done CASE`.
struct Victim {
  const char* guest_case;
  const char* volume;
  size_t slot;  // the member's index in the volume
};
// A stripe member, killed and restarted.
constexpr Victim kStripeVictim = {"stripe-member-restart", "stripe0", 1};
// A copy of the mirror, killed for good.
constexpr Victim kMirrorVictim = {"mirror-member-killed", "mirror0", 1};
// The mirror's case whose copy that is left (slot 0, live) is replaced by a
// new export node; the copy's writes are watched on it.
constexpr Victim kMirrorReplaced = {"mirror-member-replaced", "mirror0", 0};
// The mirror demotes a copy that has not answered for this long; its members
// give up after it too (instead of the retry window).
constexpr auto kDegradeAfter = 2s;
// The deadline of one member I/O.
constexpr auto kIoTimeout = 2s;
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
      files_.push_back(file);
    }
  }
  Member& member(size_t i) { return *members_[i]; }
  const std::vector<std::string>& uris() const { return uris_; }
  const std::string& file(size_t i) const { return files_[i]; }  // member i's backing file

 private:
  std::vector<std::unique_ptr<Member>> members_;
  std::vector<std::string> uris_;
  std::vector<std::string> files_;
};

std::string TomlList(const std::vector<std::string>& items) {
  std::string out = "[";
  for (const std::string& item : items)
    out += (out.size() > 1 ? ", \"" : "\"") + item + "\"";
  return out + "]";
}

struct Volumes {
  MemberGroup& linear;
  MemberGroup& stripe;  // encrypted, opened by `stripe_key`
  MemberGroup& mirror;
  MemberGroup& raw;
  std::string stripe_key;
};

// One aggregator serves all four volumes; the empty export name selects
// vol0. A member that stops answering is given up on after two seconds
// (reconnect and resend), instead of the default five, and on the linear and
// striped volumes an outage of up to a minute costs the client latency only;
// the mirror instead goes on without a copy that is silent for two seconds.
std::string AggregatorConfig(const Volumes& volumes) {
  std::ostringstream out;
  out << "default = \"vol0\"\n"
      << "io-timeout = \"" << kIoTimeout.count()
      << "s\"\nkeepalive = \"1s\"\nretry-window = \"60s\"\n"
      << "degrade-after = \"" << kDegradeAfter.count() << "s\"\n";
  out << "[[volume]]\nname = \"vol0\"\nmembers = " << TomlList(volumes.linear.uris()) << "\n";
  out << "[[volume]]\nname = \"stripe0\"\nkey-file = \"" << volumes.stripe_key
      << "\"\nmembers = " << TomlList(volumes.stripe.uris()) << "\n";
  out << "[[volume]]\nname = \"mirror0\"\nmembers = " << TomlList(volumes.mirror.uris()) << "\n";
  out << "[[volume]]\nname = \"raw0\"\nraw = true\nlayout = \"linear\"\nmembers = "
      << TomlList(volumes.raw.uris()) << "\n";
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
      {"LINEAR", "vol0"}, {"STRIPE", "stripe0"}, {"MIRROR", "mirror0"}, {"RAW", "raw0"}};
  for (const auto& [var, name] : volumes)
    out << var << "=" << name << "\n" << var << "_SIZE=" << VolumeSize(aggregator, name) << "\n";
  return out.str();
}

std::string ReadText(const std::string& path) {
  const Bytes bytes = ReadFile(path);
  return std::string(bytes.begin(), bytes.end());
}

std::string Mark(const char* what, const Victim& victim) {
  return std::string("dst-mark ") + what + " " + victim.guest_case;
}

// Waits until the victim's case is copying and its writes reach the victim.
void AwaitCopyOnVictim(KernelGuest& guest, Aggregator& aggregator, const Victim& victim,
                       fault::SteadyClock::time_point deadline) {
  REQUIRE_MESSAGE(guest.WaitForConsole(Mark("copy-start", victim), Left(deadline)),
                  "the guest did not get to the copy of " << victim.guest_case);
  const uint64_t before = QueryStats(aggregator, victim.volume, victim.slot).Count("ios");
  WaitForStats(
      aggregator, victim.volume, victim.slot,
      [&](const MemberStats& s) { return s.Count("ios") >= before + 16; }, 60s);
}

bool CopyDone(const KernelGuest& guest, const Victim& victim) {
  return Contains(guest.Console(), Mark("copy-done", victim));
}

// Once the guest's copy is under way and its writes reach the stripe victim,
// SIGKILLs the victim and restarts it on the same socket. Returns how long it
// was down.
double KillAndRestartDuringCopy(KernelGuest& guest, Aggregator& aggregator, Member& victim,
                                fault::SteadyClock::time_point deadline) {
  AwaitCopyOnVictim(guest, aggregator, kStripeVictim, deadline);
  const auto killed_at = fault::SteadyClock::now();
  victim.KillHard();
  std::this_thread::sleep_for(300ms);
  victim.RestartAfterKill();
  const double outage = fault::SecondsSince(killed_at);
  CHECK_MESSAGE(!CopyDone(guest, kStripeVictim),
                "the copy ended before the export node was back: the restart was not tested");
  return outage;
}

struct MirrorLoss {
  double stale_after = 0;  // seconds from the kill to the slot being stale in status
  double copy_after = 0;   // seconds the guest's copy went on after that
};

// Once the guest's copy is under way and its writes reach the mirror victim,
// SIGKILLs the victim for good, waits until status shows its slot stale, and
// then for the end of the copy.
MirrorLoss KillForGoodDuringCopy(KernelGuest& guest, Aggregator& aggregator, Member& victim,
                                 fault::SteadyClock::time_point deadline) {
  AwaitCopyOnVictim(guest, aggregator, kMirrorVictim, deadline);
  const auto killed_at = fault::SteadyClock::now();
  victim.KillHard();
  const std::optional<double> stale_after = fault::WaitForStatus(
      aggregator, fault::SlotState(kMirrorVictim.slot, victim.uri(), "stale"),
      std::min<std::chrono::milliseconds>(kDegradeAfter + 30s, Left(deadline)));
  // Read first: doctest shows a _MESSAGE under its reporter's lock, where the
  // status's own assertions would wait for it forever.
  if (!stale_after) {
    const std::string status = StatusJson(aggregator);
    FAIL("the killed copy was never demoted:\n" << status);
  }
  CHECK_MESSAGE(!CopyDone(guest, kMirrorVictim),
                "the copy ended before the mirror lost its copy: writes to one copy were not "
                "tested");
  const auto stale_at = fault::SteadyClock::now();
  CHECK(guest.WaitForConsole(Mark("copy-done", kMirrorVictim), Left(deadline)));
  return {.stale_after = std::chrono::duration<double>(stale_at - killed_at).count(),
          .copy_after = fault::SecondsSince(stale_at)};
}

// `dst-aggregator member ARGS...` against the aggregator, which must answer `ok`
// (exactly, when given).
void MemberCommandOk(const Aggregator& aggregator, std::vector<std::string> args,
                     const std::string& ok = "") {
  args.insert(args.begin(), {"member", "--control", aggregator.control_path()});
  const CommandResult r = RunAggregator(args);
  INFO("stdout:\n" << r.stdout_text << "stderr:\n" << r.stderr_text);
  REQUIRE(r.exit_code == 0);
  CHECK(r.stdout_text.rfind("ok: ", 0) == 0);
  if (!ok.empty()) CHECK(r.stdout_text == ok + "\n");
}

// The line the aggregator logs when slot 0 of the mirror is `fresh`'s from then on.
std::string ReplacedLine(const MemberGroup& mirror, const Member& fresh) {
  return "volume mirror0: slot " + std::to_string(kMirrorReplaced.slot) +
         " replaced: " + mirror.uris()[kMirrorReplaced.slot] + " by " + fresh.uri() +
         " (set 0 now [U_])";
}

struct MirrorReplace {
  bool during_copy = false;   // member replace answered before the guest's copy ended
  double replaced_after = 0;  // seconds from the answer to the new copy taking the slot
};

// Once the guest copies onto the mirror again, replaces the copy that is left
// (slot 0, the only current one since the kill) by `fresh` (a new, empty export
// node); then waits until the replacement has completed and the copy has ended.
MirrorReplace ReplaceDuringCopy(KernelGuest& guest, Aggregator& aggregator,
                                const MemberGroup& mirror, const Member& fresh,
                                fault::SteadyClock::time_point deadline) {
  AwaitCopyOnVictim(guest, aggregator, kMirrorReplaced, deadline);
  const std::string slot = std::to_string(kMirrorReplaced.slot);
  const std::string old_uri = mirror.uris()[kMirrorReplaced.slot];
  MemberCommandOk(aggregator, {"replace", "mirror0", slot, "--with", fresh.uri()},
                  "ok: mirror0 slot " + slot + ": replacing " + old_uri + " by " + fresh.uri() +
                      " (rebuilding)");
  const auto started_at = fault::SteadyClock::now();
  MirrorReplace replace{.during_copy = !CopyDone(guest, kMirrorReplaced)};
  CHECK_MESSAGE(replace.during_copy,
                "the copy ended before the replacement started: a rebuild under the guest's "
                "writes was not tested");
  if (!aggregator.WaitForLog(ReplacedLine(mirror, fresh), 1, Left(deadline))) {
    const std::string status = StatusJson(aggregator);
    FAIL("the replacement never completed:\n" << status);
  }
  replace.replaced_after = fault::SecondsSince(started_at);
  CHECK(guest.WaitForConsole(Mark("copy-done", kMirrorReplaced), Left(deadline)));
  return replace;
}

// No member gave up on its I/O or failed, other than `except` (a URI).
void CheckNoMemberFailed(const std::string& log, const std::string& except) {
  std::istringstream lines(log);
  for (std::string line; std::getline(lines, line);) {
    if (!Contains(line, "gave up") && !Contains(line, "-> failed")) continue;
    CHECK_MESSAGE(Contains(line, except), "a member other than the killed copy failed: " << line);
  }
}

// The aggregator noticed the stripe victim's death, got it back under a new
// fencing epoch with the guest's I/O waiting for it, and failed nothing.
void CheckStripeRecovery(Aggregator& aggregator, const MemberGroup& stripe,
                         const MemberGroup& mirror) {
  const std::string log = aggregator.stderr_text();
  INFO("dst-aggregator log:\n" << log);
  const std::string uri = stripe.uris()[kStripeVictim.slot];
  CHECK(Contains(log, "info: member " + uri + ": ready -> reconnecting: "));
  const std::string back =
      LineWithAll(log, {"info: member " + uri, "reconnecting -> ready: fenced"});
  CHECK_FALSE(back.empty());
  CHECK_MESSAGE(!Contains(back, " 0 I/Os to resend"), "no guest I/O met the outage: " << back);
  CheckNoMemberFailed(log, mirror.uris()[kMirrorVictim.slot]);
  for (size_t i = 0; i < stripe.uris().size(); ++i) {
    const MemberStats stats = QueryStats(aggregator, kStripeVictim.volume, i);
    INFO(stats.line());
    CHECK(stats.Text("state") == "ready");
    CHECK(stats.Count("failures") == 0);
  }
}

// The encrypted stripe's export nodes hold none of the file system's plaintext: ext4's root
// directory names "lost+found", which the unencrypted linear volume's members show in the clear.
void CheckEncryptedStripe(Aggregator& aggregator, const MemberGroup& linear,
                          const MemberGroup& stripe) {
  const std::string needle = "lost+found";
  const auto holds = [&needle](const std::string& file) {
    const Bytes bytes = ReadFile(file);
    return std::search(bytes.begin(), bytes.end(), needle.begin(), needle.end()) != bytes.end();
  };
  bool linear_shows = false;
  for (size_t i = 0; i < linear.uris().size(); ++i)
    linear_shows = linear_shows || holds(linear.file(i));
  CHECK_MESSAGE(linear_shows, "the unencrypted volume's file system was not found: nothing shown");
  for (size_t i = 0; i < stripe.uris().size(); ++i)
    CHECK_MESSAGE(!holds(stripe.file(i)), "plaintext on " << stripe.file(i));
  const CommandResult status =
      RunOk({DST_AGGREGATOR_PATH, "status", "--control", aggregator.control_path()});
  CHECK_FALSE(LineWithAll(status.stdout_text, {"stripe0 ", "encrypted/dirty"}).empty());
}

// A counter of status --json's entry for `volume` (its first `"key": N`).
uint64_t VolumeCount(const std::string& json, const std::string& volume, const std::string& key) {
  const std::string entry = LineWithAll(json, {"{\"name\": \"" + volume + "\""});
  std::smatch m;
  if (!std::regex_search(entry, m, std::regex("\"" + key + "\": ([0-9]+)")))
    throw std::runtime_error("no " + key + " for volume " + volume + " in status --json");
  return std::stoull(m[1]);
}

// The mirror went on with one copy, whose member was then replaced by the new
// one: the killed copy was demoted once, a guest request waited for it (about
// --degrade-after, not longer than its members' deadlines allow), the new copy
// was rebuilt beside the old one and holds slot 0, current, and no request
// failed.
void CheckMirrorLossAndReplace(Aggregator& aggregator, const MemberGroup& mirror,
                               const Member& fresh) {
  const std::string log = aggregator.stderr_text();
  const std::string victim = mirror.uris()[kMirrorVictim.slot];
  const std::string json = StatusJson(aggregator);
  const CommandResult table = RunAggregator({"status", "--control", aggregator.control_path()});
  INFO("dst-aggregator log:\n" << log);
  INFO("status:\n" << table.stdout_text << json);
  REQUIRE(table.exit_code == 0);
  CHECK_FALSE(LineWithAll(table.stdout_text, {"mirror0 ", "[U_]"}).empty());
  CHECK(Contains(json, "\"sets\": [\"U_\"]"));
  CHECK(Contains(json, fault::SlotState(kMirrorReplaced.slot, fresh.uri(), "active")));
  CHECK(Contains(json, fault::SlotState(kMirrorVictim.slot, victim, "stale")));
  CHECK_FALSE(Contains(json, "replacing mirror0 slot"));
  CHECK(CountOf(log, "demoted to stale (set") == 1);
  CHECK(CountOf(log, ReplacedLine(mirror, fresh)) == 1);
  CHECK(LineWithAll(log, {"volume mirror0: replacing slot", " failed: "}).empty());
  CHECK_FALSE(LineWithAll(log, {"volume mirror0: member 1 " + victim +
                                " demoted to stale (set 0 now [U_])"})
                  .empty());
  CHECK(VolumeCount(json, "mirror0", "request_errors") == 0);
  const double longest_s = VolumeCount(json, "mirror0", "latency_max_us") / 1e6;
  MESSAGE("longest mirror request " << longest_s << " s");
  CHECK(longest_s > 1.0);
  CHECK(longest_s < std::chrono::duration<double>(kDegradeAfter + kIoTimeout + 5s).count());
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
  double outage = 0;   // how long the stripe victim was down
  MirrorLoss mirror_loss;
  MirrorReplace mirror_replace;
};

// Boots the guest against the aggregator, restarts the stripe victim, kills
// the mirror victim and replaces the mirror's other copy during their cases'
// copies, and checks the guest's report; shows the console on any failure.
GuestRun RunGuest(const std::string& image, Aggregator& aggregator, const Volumes& volumes,
                  const Member& fresh) {
  const auto booted_at = fault::SteadyClock::now();
  const auto deadline = booted_at + kGuestTimeout;
  // dst-aggregator itself, for `map`: this build's, with its libraries (the sanitizers').
  std::vector<GuestFile> files = ProgramFiles(DST_AGGREGATOR_PATH, "/usr/sbin/dst-aggregator");
  files.push_back({"/test/run", ReadText(DST_KERNEL_GUEST_SCRIPT), 0755});
  files.push_back({"/test/params", GuestParams(aggregator)});
  KernelGuest guest({.qemu = DST_TOOL_QEMU_SYSTEM_X86_64,
                     .image_dir = image,
                     .files = std::move(files),
                     // The program (about 220 MB stripped, with the sanitizers) and its
                     // libraries (70 MB) take about 290 MB of the guest's root file system, which
                     // is in its memory, as are the cases' source files (about 230 MB): 1280 MiB
                     // ran out of room ("No space left on device") on the CI machine.
                     .memory_mib = 2048});
  INFO("guest console:\n" << guest.Console() << "qemu stderr:\n" << guest.QemuErrors());
  GuestRun run;
  run.outage = KillAndRestartDuringCopy(guest, aggregator,
                                        volumes.stripe.member(kStripeVictim.slot), deadline);
  run.mirror_loss =
      KillForGoodDuringCopy(guest, aggregator, volumes.mirror.member(kMirrorVictim.slot), deadline);
  run.mirror_replace = ReplaceDuringCopy(guest, aggregator, volumes.mirror, fresh, deadline);
  const std::optional<int> exit_code = guest.WaitForExit(Left(deadline));
  run.seconds = fault::SecondsSince(booted_at);
  run.console = guest.Console();
  CheckGuestReport(run.console, exit_code);
  return run;
}

TEST_SUITE_BEGIN("kernel");

TEST_CASE(
    "the kernel's nbd client on linear, striped, mirror and raw volumes, across a member restart, "
    "a lost copy and a live one replaced") {
  const std::string image = BuildKernelGuest(DST_KERNEL_GUEST_BUILDER, kImageTimeout);
  TempDir dir("dst-kernel");
  // Members of different sizes, so that the linear volume's boundary is not
  // at its middle.
  MemberGroup linear(dir, "linear", {40 * kMiB, 56 * kMiB});
  MemberGroup stripe(dir, "stripe", {48 * kMiB, 48 * kMiB, 48 * kMiB});
  MemberGroup mirror(dir, "mirror", {128 * kMiB, 128 * kMiB});
  MemberGroup raw(dir, "raw", {24 * kMiB, 24 * kMiB});
  CreateOk({"--name", "vol0", "--layout", "linear"}, linear.uris());
  // The striped volume is encrypted: the kernel's file system on it, across the member restart.
  const std::string stripe_key = dir.File("stripe0.key");
  WriteKeyFile(stripe_key, RandomBytes(32, 31));
  CreateOk({"--name", "stripe0", "--layout", "stripe", "--chunk", "64K", "--encrypt", "--key-file",
            stripe_key},
           stripe.uris());
  CreateOk({"--name", "mirror0", "--layout", "mirror", "--copies", "2"}, mirror.uris());
  const Volumes volumes = {linear, stripe, mirror, raw, stripe_key};
  // The export node that replaces the mirror's copy that is left. Started before
  // the aggregator, so that it stops after it: it is then the mirror's only
  // current copy, which the aggregator's clean stop writes to.
  const Member fresh(dir.File("mirror-new.img"), 128 * kMiB);
  const std::string config = WriteConfig(dir, AggregatorConfig(volumes));
  Aggregator aggregator({"--config", config}, AggregatorListen::kTcp4);

  const GuestRun run = RunGuest(image, aggregator, volumes, fresh);
  CheckStripeRecovery(aggregator, stripe, mirror);
  CheckEncryptedStripe(aggregator, linear, stripe);
  CheckMirrorLossAndReplace(aggregator, mirror, fresh);
  MESSAGE("guest ran for " << run.seconds << " s; stripe export node down for " << run.outage
                           << " s; mirror copy stale " << run.mirror_loss.stale_after
                           << " s after its kill, the guest's copy went on for "
                           << run.mirror_loss.copy_after << " s after that; the copy left was "
                           << std::string(run.mirror_replace.during_copy ? "replaced during"
                                                                         : "replaced after")
                           << " the next copy, the new one in its place "
                           << run.mirror_replace.replaced_after << " s later");
  if (const char* show = std::getenv("DST_KERNEL_SHOW_CONSOLE"); show && *show == '1')
    MESSAGE("guest console:\n" << run.console);
}

TEST_SUITE_END();

}  // namespace
}  // namespace dst::test::kernel
