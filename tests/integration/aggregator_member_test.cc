// Member commands end to end: `dst-aggregator create --layout mirror` over two plugin members on
// files, the real `serve`, and the real `member`, `status` and `inspect` commands. What a user
// checks: a failed copy shows `failed` and `[U_]` in status while writes go on and read back; the
// other copy's superblock records the slot failed; the last current copy cannot be failed; the
// write-mostly flag shows in status and in the superblocks; a removed slot is recorded missing
// with a new owner; every refusal's exact words.
#include <chrono>
#include <regex>
#include <thread>

#include "tests/harness/aggregator_process.h"
#include "tests/harness/nbd_client.h"
#include "tests/integration/plugin_fixture.h"
#include "tests/integration/volume_fixture.h"

namespace dst::test::aggregator_member_test {
namespace {

using namespace std::chrono_literals;

CommandResult Ask(const AggregatorServer& a, std::vector<std::string> args) {
  args.insert(args.begin(), {"member", "--control", a.control_path()});
  return RunAggregator(args);
}

std::string Status(const AggregatorServer& a, bool json) {
  std::vector<std::string> args = {"status", "--control", a.control_path()};
  if (json) args.push_back("--json");
  const CommandResult r = RunAggregator(args);
  INFO("stderr:\n" << r.stderr_text);
  REQUIRE(r.exit_code == 0);
  return r.stdout_text;
}

std::string Inspect(const std::string& uri) {
  const CommandResult r = RunAggregator({"inspect", uri});
  INFO("stderr:\n" << r.stderr_text);
  REQUIRE(r.exit_code == 0);
  return r.stdout_text;
}

// What `inspect` of `uri` says once it matches `pattern` (polled, 30 s at most): the change is
// durable a moment after the command's answer.
std::string AwaitInspect(const std::string& uri, const std::string& pattern) {
  const std::regex re(pattern);
  std::string text;
  for (int i = 0; i < 300; ++i) {
    text = Inspect(uri);
    if (std::regex_search(text, re)) return text;
    std::this_thread::sleep_for(100ms);
  }
  FAIL("inspect never matched " << pattern << ":\n" << text);
  return text;
}

void WriteAndReadBack(const AggregatorServer& agg, uint64_t offset, uint64_t seed) {
  NbdClient c;
  REQUIRE_NBD_OK(c.Connect(agg.uri("mir")));
  const Bytes data = RandomBytes(64 * kKiB, seed);
  REQUIRE_NBD_OK(c.Pwrite(data, offset));
  REQUIRE_NBD_OK(c.Flush());
  Bytes back(data.size());
  REQUIRE_NBD_OK(c.Pread(back, offset));
  CHECK(back == data);
  CHECK_NBD_OK(c.Shutdown());
}

TEST_SUITE_BEGIN("aggregator_member");

TEST_CASE("member fail, set and remove on a running mirror, and their refusals") {
  FileMembers m(2, 8 * kMiB);
  CreateOk({"--name", "mir", "--layout", "mirror"}, m.uris());
  Served agg(m.uris());
  WriteAndReadBack(agg, 0, 1);

  CheckCommandOk(Ask(agg, {"fail", "mir", "1"}), "ok: mir slot 1 failed");
  const std::string text = Status(agg, false);
  CHECK(Contains(text, "[U_]"));
  CHECK(std::regex_search(text, std::regex("mir +1 +0 failed ")));
  CHECK(Contains(Status(agg, true), "\"state\": \"failed\""));
  WriteAndReadBack(agg, 128 * kKiB, 2);
  const std::string failed = AwaitInspect(m.uri(0), "slot 1: +failed, member ");
  CHECK(std::regex_search(failed, std::regex("slot 0: +active, member ")));
  CHECK(Contains(agg.stderr_text(), "failed by the operator"));

  CheckCommandRefused(
      Ask(agg, {"fail", "mir", "0"}),
      "slot 0 is the last current copy of set 0 of mir: failing it would leave the set "
      "without its data");
  CheckCommandRefused(
      Ask(agg, {"fail", "mir", "1"}),
      "slot 1 of mir is not current (failed): only a current or catching-up copy can be failed");
  CheckCommandRefused(Ask(agg, {"remove", "mir", "0"}),
                      "slot 0 of mir is current: fail it first (member fail)");

  CheckCommandOk(Ask(agg, {"set", "mir", "0", "write-mostly"}), "ok: mir slot 0 set write-mostly");
  CHECK(std::regex_search(Status(agg, false), std::regex("mir +0 +0 active .*\\(write-mostly\\)")));
  CHECK(Contains(Status(agg, true), "\"write_mostly\": true"));
  AwaitInspect(m.uri(0), "slot 0: +active, member [-0-9a-f]+, write-mostly");
  WriteAndReadBack(agg, 256 * kKiB, 3);  // the only current copy serves reads all the same

  CheckCommandOk(Ask(agg, {"remove", "mir", "1"}), "ok: mir slot 1 removed (missing)");
  const std::string removed = AwaitInspect(m.uri(0), "slot 1: +missing, member ");
  const std::regex owner("slot 1: +[a-z]+, member ([-0-9a-f]+)");
  std::smatch before, after;
  REQUIRE(std::regex_search(failed, before, owner));
  REQUIRE(std::regex_search(removed, after, owner));
  CHECK(before[1] != after[1]);  // the old export no longer owns the slot
  CHECK(std::regex_search(Status(agg, false), std::regex("mir +1 +0 missing .*\\(missing\\)")));

  CheckCommandRefused(Ask(agg, {"fail", "nope", "1"}), "unknown volume 'nope'");
  CheckCommandRefused(Ask(agg, {"fail", "mir", "2"}), "volume mir has no slot 2 (slots 0 to 1)");
  CheckCommandRefused(Ask(agg, {"fail", "mir", "x"}),
                      "bad slot 'x' (expected a member index such as 1)");
  CheckCommandRefused(Ask(agg, {"set", "mir", "0"}), "member set needs write-mostly or readwrite");
  CheckCommandRefused(Ask(agg, {"fail", "mir", "0", "readwrite"}), "member fail takes no mode");
}

TEST_CASE("a failed copy stays failed across a restart; a removed copy's export is refused") {
  FileMembers m(2, 8 * kMiB);
  CreateOk({"--name", "mir", "--layout", "mirror"}, m.uris());
  {
    Served agg(m.uris());
    CheckCommandOk(Ask(agg, {"fail", "mir", "1"}), "ok: mir slot 1 failed");
    AwaitInspect(m.uri(0), "slot 1: +failed, member ");
  }
  {
    Served agg(m.uris());
    CHECK(Contains(agg.stderr_text(),
                   "volume mir: slot 1 stays failed: not resynced (member add gives it a new "
                   "export)"));
    const std::string json = Status(agg, true);
    CHECK(Contains(json, "\"sets\": [\"U_\"]"));
    CHECK(Contains(json, "\"jobs\": []"));
    CHECK(Contains(json, "\"state\": \"failed\""));
    WriteAndReadBack(agg, 0, 4);
    CheckCommandOk(Ask(agg, {"remove", "mir", "1"}), "ok: mir slot 1 removed (missing)");
    AwaitInspect(m.uri(0), "slot 1: +missing, member ");
  }
  const std::string socket = m.dir().path() + "/refused.sock";
  const CommandResult refused =
      RunAggregator(Concat({"serve", "--control", "none", "--unix", socket}, m.uris()));
  INFO("stderr:\n" << refused.stderr_text);
  CHECK(refused.exit_code == 1);
  CHECK(Contains(refused.stderr_text, "does not own slot 1"));
  Served agg({m.uri(0)});  // without the old export: served, slot 1 missing
  CHECK(Contains(Status(agg, true), "\"sets\": [\"U_\"]"));
  WriteAndReadBack(agg, 0, 5);
}

TEST_CASE("member commands are refused on a linear volume") {
  FileMembers m(1, 8 * kMiB);
  CreateOk({"--name", "lin"}, m.uris());
  Served agg(m.uris());
  CheckCommandRefused(Ask(agg, {"fail", "lin", "0"}),
                      "volume lin is linear: member commands need a mirror or raid10 volume");
  CheckCommandRefused(Ask(agg, {"add", "lin", m.uri(0)}),
                      "volume lin is linear: member commands need a mirror or raid10 volume");
  CheckCommandRefused(Ask(agg, {"add", "lin", m.uri(0), "--slot", "0"}),
                      "volume lin is linear: member commands need a mirror or raid10 volume");
  CheckCommandRefused(Ask(agg, {"remove", "lin", "0", "--slot", "0"}),
                      "member remove takes no --slot");
}

TEST_SUITE_END();

}  // namespace
}  // namespace dst::test::aggregator_member_test
