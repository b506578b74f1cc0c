// Volume commands end to end: the real `serve` over plugin members on files, with a raw volume, a
// checksummed linear volume and a mirror from one config file, and the real `volume` command.
// What a user checks: `volume list` shows each volume's layout, size, clients and state, in lines
// and in JSON; `volume remove` is refused while clients are connected (naming them) and for an
// unknown volume; a removed checksummed volume's members say clean, its export is gone (the
// error of an unknown export) and its members are released; with --force, a request in flight
// completes, a later one gets ESHUTDOWN and the connection closes, while another volume under
// I/O goes on serving without an error; a mirror is refused while a member replace of it is
// under way. `volume add` serves a new volume (assembled linear and mirror, raw stripe) while
// another one serves client I/O, reachable by name at once, listed, and removed again; it refuses
// a name already served, an unreachable member, a member of another volume, members that do not
// make the volume and bad options, with nothing changed.
#include <libnbd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <regex>
#include <thread>

#include "tests/harness/aggregator_process.h"
#include "tests/harness/nbd_client.h"
#include "tests/integration/plugin_fixture.h"
#include "tests/integration/volume_fixture.h"

namespace dst::test::aggregator_volume_test {
namespace {

using namespace std::chrono_literals;

std::string Quoted(const std::string& s) {
  return "\"" + s + "\"";
}

// Members 0 (raw "alpha"), 1 ("safe", checksummed linear), 2 and 3 ("mir", a mirror), all
// formatted; the config file that serves the three.
struct ThreeVolumes {
  FileMembers m;
  std::string config;

  ThreeVolumes() : m(4, 8 * kMiB) {
    CreateOk({"--name", "safe"}, {m.uri(1)});
    CreateOk({"--name", "mir", "--layout", "mirror"}, {m.uri(2), m.uri(3)});
    config =
        WriteConfig(m.dir(), "[[volume]]\nname = \"alpha\"\nraw = true\nmembers = [" +
                                 Quoted(m.uri(0)) + "]\n[[volume]]\nname = \"safe\"\nmembers = [" +
                                 Quoted(m.uri(1)) + "]\n[[volume]]\nname = \"mir\"\nmembers = [" +
                                 Quoted(m.uri(2)) + ", " + Quoted(m.uri(3)) + "]\n");
  }
};

CommandResult Volume(const AggregatorServer& a, std::vector<std::string> args) {
  args.insert(args.begin(), {"volume", "--control", a.control_path()});
  return RunAggregator(args);
}

std::string ListOk(const AggregatorServer& a, bool json = false) {
  const CommandResult r = Volume(
      a, json ? std::vector<std::string>{"list", "--json"} : std::vector<std::string>{"list"});
  INFO("stdout:\n" << r.stdout_text << "stderr:\n" << r.stderr_text);
  REQUIRE(r.exit_code == 0);
  CHECK(r.stderr_text.empty());
  return r.stdout_text;
}

// The list once `pattern` matches it (polled, 10 s at most): a client's arrival or departure is
// counted a moment after the client sees it.
std::string AwaitList(const AggregatorServer& a, const std::string& pattern) {
  const std::regex re(pattern);
  std::string text;
  for (int i = 0; i < 100; ++i) {
    text = ListOk(a);
    if (std::regex_search(text, re)) return text;
    std::this_thread::sleep_for(100ms);
  }
  FAIL("volume list never matched " << pattern << ":\n" << text);
  return text;
}

CommandResult Remove(const AggregatorServer& a, const std::string& name, bool force = false) {
  std::vector<std::string> args = {"remove", name};
  if (force) args.push_back("--force");
  return Volume(a, args);
}

std::string Inspect(const std::string& uri) {
  const CommandResult r = RunAggregator({"inspect", uri});
  INFO("stderr:\n" << r.stderr_text);
  REQUIRE(r.exit_code == 0);
  return r.stdout_text;
}

// What a client that asks for export `name` hears, with the name replaced by NAME.
std::string ConnectError(const AggregatorServer& a, const std::string& name) {
  NbdClient c;
  const NbdStatus s = c.Connect(a.uri(name));
  REQUIRE(!s.ok());
  std::string message = s.message;
  for (size_t at = message.find(name); at != std::string::npos; at = message.find(name, at))
    message.replace(at, name.size(), "NAME");
  return std::to_string(s.err) + " " + message;
}

// Writes and reads back 64 KiB at a time on `uri` until `stop`, counting rounds and failures.
class Traffic {
 public:
  explicit Traffic(std::string uri) : thread_([this, uri] { Run(uri); }) {}
  ~Traffic() { Stop(); }
  void Stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  int rounds() const { return rounds_; }
  const std::string& failure() const { return failure_; }

 private:
  void Run(const std::string& uri) {
    NbdClient c;
    if (NbdStatus s = c.Connect(uri); !s.ok()) {
      failure_ = "connect: " + s.ToString();
      return;
    }
    // Bounded: 60 s at most, whatever the test does.
    const auto deadline = std::chrono::steady_clock::now() + 60s;
    for (uint64_t i = 0; !stop_ && std::chrono::steady_clock::now() < deadline; ++i) {
      const uint64_t offset = (i % 64) * 64 * kKiB;
      const Bytes data = RandomBytes(64 * kKiB, i + 1);
      Bytes back(data.size());
      NbdStatus s = c.Pwrite(data, offset);
      if (s.ok()) s = c.Pread(back, offset);
      if (!s.ok() || back != data) {
        failure_ = "round " + std::to_string(i) + ": " + (s.ok() ? "data differ" : s.ToString());
        return;
      }
      ++rounds_;
    }
    (void)c.Shutdown();
  }

  std::atomic<bool> stop_{false};
  std::atomic<int> rounds_{0};
  std::string failure_;
  std::thread thread_;
};

// The result of an asynchronous command once it completed: 0, or its errno. -1 if the
// connection died or 20 s passed first.
int AwaitCommand(NbdClient& c, int64_t cookie) {
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  while (std::chrono::steady_clock::now() < deadline) {
    const int done = nbd_aio_command_completed(c.handle(), cookie);
    if (done == 1) return 0;
    if (done == -1) return nbd_get_errno();
    if (nbd_aio_is_dead(c.handle()) || nbd_aio_is_closed(c.handle())) return -1;
    nbd_poll(c.handle(), 100);
  }
  return -1;
}

TEST_SUITE_BEGIN("aggregator_volume");

TEST_CASE("volume list: every volume's layout, size, clients and state, in lines and JSON") {
  ThreeVolumes v;
  Served agg({"--config", v.config});
  const std::string idle = ListOk(agg);
  INFO("volume list:\n" << idle);
  CHECK(std::regex_match(idle, std::regex("alpha: linear, 8 MiB, 0 clients, serving\n"
                                          "safe: linear, [0-9.]+ [KM]iB, 0 clients, serving\n"
                                          "mir: mirror, [0-9.]+ [KM]iB, 0 clients, serving\n")));

  NbdClient c;
  REQUIRE_NBD_OK(c.Connect(agg.uri("alpha")));
  AwaitList(agg, "alpha: linear, 8 MiB, 1 client, serving\n");
  CHECK(Contains(ListOk(agg, true), "{\"name\": \"alpha\", \"layout\": \"linear\", \"size\": " +
                                        std::to_string(8 * kMiB) +
                                        ", \"clients\": 1, \"state\": \"serving\"}"));
  CHECK_NBD_OK(c.Shutdown());
  AwaitList(agg, "alpha: linear, 8 MiB, 0 clients, serving\n");

  const CommandResult failed =
      RunAggregator({"member", "--control", agg.control_path(), "fail", "mir", "1"});
  CHECK(failed.stdout_text == "ok: mir slot 1 failed\n");
  CHECK(Contains(ListOk(agg), "mir: mirror, "));
  CHECK(std::regex_search(ListOk(agg), std::regex("mir: mirror, [^\n]*, 0 clients, degraded\n")));
  const std::string json = ListOk(agg, true);
  CHECK(json.rfind("{\"volumes\": [\n  {\"name\": \"alpha\"", 0) == 0);
  CHECK(Contains(json, "\"name\": \"mir\", \"layout\": \"mirror\""));
  CHECK(Contains(json, "\"state\": \"degraded\"}\n]}\n"));
}

std::string Status(const AggregatorServer& a) {
  const CommandResult r = RunAggregator({"status", "--control", a.control_path()});
  REQUIRE(r.exit_code == 0);
  return r.stdout_text;
}

TEST_CASE("volume refuses what it does not know") {
  ThreeVolumes v;
  Served agg({"--config", v.config});
  const CommandResult r = Volume(agg, {"frob"});
  CHECK(r.exit_code != 0);
  CHECK(Contains(r.stderr_text, "frob"));
  CheckCommandRefused(Volume(agg, {"remove"}), "volume remove needs the volume's name");
  CheckCommandRefused(Volume(agg, {"list", "alpha"}), "volume list takes no name");
  CheckCommandRefused(Volume(agg, {"list", "--force"}), "volume list takes no --force");
  CheckCommandRefused(Volume(agg, {"remove", "safe", "--raw"}),
                      "volume remove takes no volume add options");
  CheckCommandRefused(Volume(agg, {"add", "x", "disk.img"}),
                      "volume add: not a member URI: 'disk.img'");
  CheckCommandRefused(Volume(agg, {"add", "x", "--discard", "one", v.m.uri(2)}), "discard: ");
}

TEST_CASE("volume remove: refused with clients; a checksummed volume and a mirror close clean") {
  ThreeVolumes v;
  Served agg({"--config", v.config});
  const std::string unknown = ConnectError(agg, "nope");
  {
    NbdClient c;
    REQUIRE_NBD_OK(c.Connect(agg.uri("safe")));
    AwaitList(agg, "safe: linear, [^\n]*, 1 client, serving\n");
    CheckCommandRefused(Remove(agg, "safe"),
                        "volume safe has 1 client(s) connected: unix; --force ends them");
    CHECK_NBD_OK(c.Shutdown());
  }
  CheckCommandRefused(Remove(agg, "nope"), "unknown volume 'nope'");
  AwaitList(agg, "safe: linear, [^\n]*, 0 clients, serving\n");

  CheckCommandOk(Remove(agg, "safe"), "ok: volume safe removed");
  CHECK(Contains(agg.stderr_text(), "volume safe: stopped clean"));
  CHECK(Contains(agg.stderr_text(), "volume safe: removed"));
  CHECK(Contains(agg.stderr_text(), "member " + v.m.uri(1) + " abandoned: volume safe removed"));
  CHECK(std::regex_search(Inspect(v.m.uri(1)), std::regex("state: +clean, event [0-9]+")));
  CHECK(ConnectError(agg, "safe") == unknown);
  std::vector<ExportEntry> exports;
  REQUIRE_NBD_OK(NbdClient::ListExports(agg.uri("alpha"), &exports));
  std::vector<std::string> names;
  for (const ExportEntry& e : exports)
    names.push_back(e.name);
  CHECK(names == std::vector<std::string>{"alpha", "mir"});
  CheckCommandRefused(Remove(agg, "safe"), "unknown volume 'safe'");
  CheckCommandRefused(RunAggregator({"scrub", "--control", agg.control_path(), "safe", "start"}),
                      "unknown volume 'safe'");

  CheckCommandOk(Remove(agg, "mir"), "ok: volume mir removed");
  for (size_t i : {2, 3})
    CHECK(std::regex_search(Inspect(v.m.uri(i)), std::regex("state: +clean, event [0-9]+")));
  CHECK(ListOk(agg) == "alpha: linear, 8 MiB, 0 clients, serving\n");
  CHECK(!Contains(Status(agg), "safe"));
  // What is left serves, and the aggregator stops clean (Served's checks).
  NbdClient c;
  REQUIRE_NBD_OK(c.Connect(agg.uri("alpha")));
  const Bytes data = RandomBytes(64 * kKiB, 7);
  REQUIRE_NBD_OK(c.Pwrite(data, 0));
  Bytes back(data.size());
  REQUIRE_NBD_OK(c.Pread(back, 0));
  CHECK(back == data);
  CHECK_NBD_OK(c.Shutdown());
}

TEST_CASE("volume remove --force: in flight completes, later gets ESHUTDOWN, others serve") {
  ThreeVolumes v;
  // "slow": a raw volume whose member takes 4 s per write: the window in which the list shows it
  // removing with its client, wide enough for a loaded machine.
  TempDir dir("dst-volume-slow");
  PluginServer slow({"file=" + dir.File("slow.img"), "size=8M", "delay-write=4"}, Transport::kUnix,
                    {"--filter=delay"});
  const std::string config = WriteConfig(
      dir, "[[volume]]\nname = \"slow\"\nraw = true\nmembers = [" + Quoted(slow.uri()) +
               "]\n[[volume]]\nname = \"mir\"\nmembers = [" + Quoted(v.m.uri(2)) + ", " +
               Quoted(v.m.uri(3)) + "]\n[[volume]]\nname = \"safe\"\nmembers = [" +
               Quoted(v.m.uri(1)) + "]\n");
  Served agg({"--config", config}, "mir");
  Traffic mir(agg.uri("mir"));

  NbdClient c;
  REQUIRE_NBD_OK(c.Connect(agg.uri("slow")));
  const Bytes data = RandomBytes(64 * kKiB, 3);
  const int64_t write =
      nbd_aio_pwrite(c.handle(), data.data(), data.size(), 0, NBD_NULL_COMPLETION, 0);
  REQUIRE(write > 0);
  AwaitList(agg, "slow: linear, 8 MiB, 1 client, serving\n");
  CommandResult removed;
  std::jthread remover([&] { removed = Remove(agg, "slow", /*force=*/true); });
  AwaitList(agg, "slow: linear, 8 MiB, 1 client, removing\n");
  Bytes back(64 * kKiB);
  const int64_t read =
      nbd_aio_pread(c.handle(), back.data(), back.size(), 0, NBD_NULL_COMPLETION, 0);
  REQUIRE(read > 0);
  CHECK(AwaitCommand(c, read) == ESHUTDOWN);
  CHECK(AwaitCommand(c, write) == 0);
  remover.join();
  CheckCommandOk(removed, "ok: volume slow removed");
  // The connection is closed: the next request fails without an answer.
  int64_t after = nbd_aio_pread(c.handle(), back.data(), back.size(), 0, NBD_NULL_COMPLETION, 0);
  CHECK((after < 0 || AwaitCommand(c, after) != 0));

  const std::string log = agg.stderr_text();
  CHECK(Contains(log, "client unix: volume slow is being removed: ending the connection"));
  CHECK(!Contains(log, "Operation aborted"));
  CHECK(Contains(log, "member " + slow.uri() + " abandoned: volume slow removed"));
  CHECK(std::regex_match(ListOk(agg), std::regex("mir: mirror, [^\n]*, 1 client, serving\n"
                                                 "safe: linear, [^\n]*, 0 clients, serving\n")));

  // A checksummed volume with a client that wrote and is idle: closed clean all the same.
  NbdClient idle;
  REQUIRE_NBD_OK(idle.Connect(agg.uri("safe")));
  REQUIRE_NBD_OK(idle.Pwrite(data, 0));
  CheckCommandOk(Remove(agg, "safe", /*force=*/true), "ok: volume safe removed");
  CHECK(Contains(agg.stderr_text(), "volume safe: stopped clean"));
  CHECK(std::regex_search(Inspect(v.m.uri(1)), std::regex("state: +clean, event [0-9]+")));
  CHECK(!idle.Pread(back, 0).ok());

  mir.Stop();
  CHECK_MESSAGE(mir.failure().empty(), mir.failure());
  CHECK(mir.rounds() > 0);
}

TEST_CASE("volume remove refuses a mirror while a member replace is under way") {
  FileMembers m(2, 8 * kMiB);
  CreateOk({"--name", "mir", "--layout", "mirror"}, m.uris());
  // The new member: its format (two zeroings) takes 6 s at least.
  TempDir dir("dst-volume-new");
  PluginServer fresh({"file=" + dir.File("new.img"), "size=8M", "delay-zero=3"}, Transport::kUnix,
                     {"--filter=delay"});
  Served agg(m.uris(), "mir");
  CommandResult replace;
  std::jthread replacer([&] {
    replace = RunAggregator(
        {"member", "--control", agg.control_path(), "replace", "mir", "1", "--with", fresh.uri()});
  });
  CHECK(agg.WaitForLog("member replace " + fresh.uri() + " to slot 1: formatting it"));
  CheckCommandRefused(
      Remove(agg, "mir", /*force=*/true),
      "a member replace of slot 1 of volume mir is under way (" + fresh.uri() + ")");
  replacer.join();
  INFO("replace stderr:\n" << replace.stderr_text);
  CHECK(replace.exit_code == 0);
  CHECK(std::regex_match(ListOk(agg), std::regex("mir: mirror, [^\n]*, 0 clients, serving\n")));
  CHECK(!Contains(agg.stderr_text(), "volume mir: removing"));
}

// Members 0 (raw "alpha", served), 1 ("lin", checksummed linear), 2 and 3 ("mir", a mirror),
// 4 and 5 (blank); the config file serves "alpha" only.
struct OneServed {
  FileMembers m;
  std::string config;

  OneServed() : m(6, 8 * kMiB) {
    CreateOk({"--name", "lin"}, {m.uri(1)});
    CreateOk({"--name", "mir", "--layout", "mirror"}, {m.uri(2), m.uri(3)});
    config = WriteConfig(m.dir(), "[[volume]]\nname = \"alpha\"\nraw = true\nmembers = [" +
                                      Quoted(m.uri(0)) + "]\n");
  }
};

CommandResult Add(const AggregatorServer& a, std::vector<std::string> args) {
  args.insert(args.begin(), "add");
  return Volume(a, args);
}

void CheckAdded(const CommandResult& r, const std::string& answer_pattern) {
  INFO("stdout:\n" << r.stdout_text << "stderr:\n" << r.stderr_text);
  CHECK(r.exit_code == 0);
  CHECK(std::regex_match(r.stdout_text, std::regex(answer_pattern + "\n")));
}

// Connects to `name` (at once: no retry) and writes then reads back 64 KiB.
void WriteReadBack(const AggregatorServer& a, const std::string& name, uint64_t seed) {
  NbdClient c;
  REQUIRE_NBD_OK(c.Connect(a.uri(name)));
  const Bytes data = RandomBytes(64 * kKiB, seed);
  REQUIRE_NBD_OK(c.Pwrite(data, 128 * kKiB));
  REQUIRE_NBD_OK(c.Flush());
  Bytes back(data.size());
  REQUIRE_NBD_OK(c.Pread(back, 128 * kKiB));
  CHECK(back == data);
  CHECK_NBD_OK(c.Shutdown());
}

TEST_CASE("volume add: assembled linear, mirror and raw stripe while another volume serves") {
  OneServed v;
  Served agg({"--config", v.config});
  Traffic alpha(agg.uri("alpha"));

  CheckAdded(Add(agg, {"lin", v.m.uri(1)}), "ok: volume lin added \\(linear, [0-9.]+ [KM]iB\\)");
  WriteReadBack(agg, "lin", 11);
  // Members in any order, as in the config file.
  CheckAdded(Add(agg, {"mir", v.m.uri(3), v.m.uri(2)}),
             "ok: volume mir added \\(mirror, [0-9.]+ [KM]iB\\)");
  WriteReadBack(agg, "mir", 12);
  CheckAdded(
      Add(agg, {"st", "--raw", "--layout", "stripe", "--chunk", "64K", v.m.uri(4), v.m.uri(5)}),
      "ok: volume st added \\(stripe, 16 MiB\\)");
  WriteReadBack(agg, "st", 13);

  CHECK(std::regex_match(ListOk(agg), std::regex("alpha: linear, 8 MiB, 1 client, serving\n"
                                                 "lin: linear, [^\n]*, 0 clients, serving\n"
                                                 "mir: mirror, [^\n]*, 0 clients, serving\n"
                                                 "st: stripe, 16 MiB, 0 clients, serving\n")));
  const std::string status = Status(agg);
  for (size_t i = 1; i < 6; ++i)
    CHECK(Contains(status, v.m.uri(i)));
  CHECK(Contains(agg.stderr_text(), "volume mir: added (mirror, "));

  CheckCommandOk(Remove(agg, "lin"), "ok: volume lin removed");
  CheckCommandOk(Remove(agg, "mir"), "ok: volume mir removed");
  for (size_t i : {1, 2, 3})
    CHECK(std::regex_search(Inspect(v.m.uri(i)), std::regex("state: +clean, event [0-9]+")));
  // Removed, it can be added again: its members were released.
  CheckAdded(Add(agg, {"lin", v.m.uri(1)}), "ok: volume lin added \\(linear, [^)]*\\)");
  WriteReadBack(agg, "lin", 14);

  alpha.Stop();
  CHECK_MESSAGE(alpha.failure().empty(), alpha.failure());
  CHECK(alpha.rounds() > 0);
}

TEST_CASE("volume add refuses, with nothing changed") {
  OneServed v;
  Served agg({"--config", v.config});
  const std::string before = ListOk(agg);
  const std::string gone = "nbd+unix:///disk?socket=" + v.m.dir().File("gone.sock");

  CheckCommandRefused(Add(agg, {"alpha", v.m.uri(1)}), "volume alpha is already served");
  CheckCommandRefused(Add(agg, {"beta", v.m.uri(0)}), v.m.uri(0) + " is a member of volume alpha");
  CheckCommandRefused(Add(agg, {"other", v.m.uri(1)}),
                      "volume other: the members belong to volume \"lin\"");
  const std::string unreachable = "member " + gone + ": connect: No such file or directory";
  CheckCommandRefused(Add(agg, {"lin", gone}), unreachable);
  CheckCommandRefused(Add(agg, {"r", "--raw", v.m.uri(4), gone}), unreachable);
  CheckCommandRefused(Add(agg, {"lin", "--layout", "stripe", v.m.uri(1)}),
                      "volume lin: layout and chunk are recorded in the members' superblocks");
  CheckCommandRefused(Add(agg, {"r", "--raw", "--layout", "zigzag", v.m.uri(4)}),
                      "layout: expected linear or stripe");
  CheckCommandRefused(Add(agg, {"lin"}), "volume add needs the volume's name and its member URIs");
  // A mirror without a current member, as at start.
  const CommandResult half = Add(agg, {"mir", v.m.uri(2)});
  CHECK(half.exit_code == 1);
  CHECK(Contains(half.stderr_text, "--allow-degraded"));

  CHECK(ListOk(agg) == before);
  CHECK(Contains(agg.stderr_text(), "member " + v.m.uri(4) + " abandoned: volume add r refused"));
  // What the refusals read or connected is free: added now, it serves.
  CheckAdded(Add(agg, {"r", "--raw", v.m.uri(4)}), "ok: volume r added \\(linear, 8 MiB\\)");
  WriteReadBack(agg, "r", 21);

  // A mirror served without a member is added with --allow-degraded, as at start; the member it
  // lacks may come back to it, so no other volume takes its URI.
  CheckAdded(Add(agg, {"mir", "--allow-degraded", v.m.uri(2), gone}),
             "ok: volume mir added \\(mirror, [^)]*\\)");
  CHECK(std::regex_search(ListOk(agg), std::regex("mir: mirror, [^\n]*, 0 clients, degraded\n")));
  WriteReadBack(agg, "mir", 22);
  CheckCommandRefused(Add(agg, {"g", "--raw", gone}),
                      gone + " is a member of volume mir (out, it may come back)");
}

TEST_SUITE_END();

}  // namespace
}  // namespace dst::test::aggregator_volume_test
