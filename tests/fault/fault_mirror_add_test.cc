// fault_mirror_add: `member add` gives a slot of a running 2-copy mirror a new, empty export in
// place of a node that is gone for good (docs/redundancy.md, "Member commands"), with real export
// nodes, the real aggregator and a real client:
//   - a stale slot (its node killed under writes), a removed one (`member remove`) and one missing
//     since the start (--allow-degraded) each take a new export: the answer, the rebuild to the
//     end, `[UU]`, the data read back, the new copy's data area byte-equal to the other's, and a
//     restart with the new member beside member 0 that finds both current;
//   - refusals that write nothing: an export of another size, the live copy of member 0, an
//     unknown volume.
#include <chrono>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "tests/fault/fault_fixture.h"
#include "tests/fault/fault_mirror_fixture.h"
#include "tests/integration/volume_fixture.h"

namespace dst::test::fault::fault_mirror_add_test {
namespace {

constexpr uint64_t kMemberSize = 16 * kMiB;
const std::string kVolume = "mir";

std::vector<std::string> ServeArgs(std::vector<std::string> uris) {
  std::vector<std::string> args = {"--degrade-after", "1s", "--io-timeout", "500ms"};
  args.insert(args.end(), uris.begin(), uris.end());
  return args;
}

// Member 1's node killed for good under writes: the slot is stale.
void LoseMember1(Mirror& mirror, AggregatorServer& agg, Written* written) {
  WriteBlocks(agg, 8 * kMiB, 40, 51, written);
  mirror.member(1).KillHard();
  WriteBlocks(agg, 8 * kMiB, 40, 52, written);
  REQUIRE(agg.WaitForLog("demoted to stale (set", 1, 10s));
}

// `member add` of a new empty export to slot 1 (named with --slot when `named`), its rebuild to
// the end, and everything a user checks of it, then a restart with member 0 and the new member.
void AddAndCheck(Mirror& mirror, Aggregator& agg, const Written& written, bool named) {
  TempDir dir("dst-fault-add");
  const std::string file = dir.File("new.img");
  auto fresh = std::make_unique<Member>(file, kMemberSize);
  const std::string uri = fresh->uri();
  std::vector<std::string> args = {"add", kVolume, uri};
  if (named) args.insert(args.end(), {"--slot", "1"});
  const auto start = SteadyClock::now();
  const CommandResult added = AskMember(agg, args);
  INFO("member add: " << added.stdout_text << added.stderr_text);
  REQUIRE(added.exit_code == 0);
  CHECK(added.stdout_text == "ok: mir slot 1 added " + uri + " (rebuilding)\n");
  REQUIRE(agg.WaitForLog("rebuilding mir slot 1: done (", 1, 30s));
  MESSAGE("added and rebuilt in " << SecondsSince(start) << " s");
  const std::string log = agg.stderr_text();
  CHECK(
      Contains(log, "volume mir: slot 1 " + uri + ": rebuilding (full: new member (member add))"));
  CHECK(Contains(log, "volume mir: slot 1 " + uri + " is current again (set 0 now [UU])"));
  CHECK(WaitForStatus(agg, "\"sets\": [\"UU\"]", 5s).has_value());
  CHECK(Contains(StatusJson(agg), SlotState(1, uri, "active")));
  // Slot 1's member line (stats, status, metrics) names the new member, connected.
  const MemberStats stats = QueryStats(agg, kVolume, 1);
  CHECK(stats.Text("state") == "ready");
  CHECK(Contains(stats.line(), uri));
  CheckReadBack(agg, written);
  REQUIRE(agg.Stop() == 0);
  const Area data = AreaOf(RunAggregator({"inspect", "--json", uri}).stdout_text, "data");
  CHECK(ReadFileRange(file, data.offset, data.size) == mirror.Data(0));

  // The volume's member list now names the new export in place of the old one.
  Aggregator again(ServeArgs({mirror.member(0).uri(), uri}));
  INFO("restarted aggregator log:\n" << again.stderr_text());
  const std::string json = StatusJson(again);
  CHECK(Contains(json, "\"sets\": [\"UU\"]"));
  CHECK(Contains(json, SlotState(1, uri, "active")));
  CHECK_FALSE(Contains(again.stderr_text(), "rebuilding"));
  CheckReadBack(again, written);
}

TEST_SUITE_BEGIN("fault_mirror_add");

TEST_CASE("a stale slot whose node is gone for good takes a new export") {
  Mirror mirror(kMemberSize);
  auto agg = std::make_unique<Aggregator>(ServeArgs(mirror.uris()));
  INFO("aggregator log:\n" << agg->stderr_text());
  Written written;
  LoseMember1(mirror, *agg, &written);
  AddAndCheck(mirror, *agg, written, false);
}

TEST_CASE("a removed slot takes a new export named with --slot") {
  Mirror mirror(kMemberSize);
  auto agg = std::make_unique<Aggregator>(ServeArgs(mirror.uris()));
  INFO("aggregator log:\n" << agg->stderr_text());
  Written written;
  LoseMember1(mirror, *agg, &written);
  const CommandResult removed = AskMember(*agg, {"remove", kVolume, "1"});
  REQUIRE(removed.exit_code == 0);
  AddAndCheck(mirror, *agg, written, true);
}

TEST_CASE("a slot missing since the start takes a new export and gets its member line") {
  Mirror mirror(kMemberSize);
  {
    Aggregator first(ServeArgs(mirror.uris()));
    Written ignored;
    WriteBlocks(first, 8 * kMiB, 20, 71, &ignored);
  }
  mirror.StopMember1();
  auto agg = std::make_unique<Aggregator>(ServeArgs({"--allow-degraded", mirror.member(0).uri()}));
  INFO("aggregator log:\n" << agg->stderr_text());
  Written written;
  WriteBlocks(*agg, 8 * kMiB, 40, 72, &written);
  CHECK(Contains(StatusJson(*agg), "\"sets\": [\"U_\"]"));
  AddAndCheck(mirror, *agg, written, false);
}

TEST_CASE("member add refusals write nothing") {
  Mirror mirror(kMemberSize);
  Aggregator agg(ServeArgs(mirror.uris()));
  INFO("aggregator log:\n" << agg.stderr_text());
  const std::string uri0 = mirror.member(0).uri();
  Written written;
  WriteBlocks(agg, 8 * kMiB, 20, 61, &written);
  // Both copies current: nothing to fill.
  TempDir dir("dst-fault-add");
  Member spare(dir.File("spare.img"), kMemberSize);
  CheckCommandRefused(AskMember(agg, {"add", kVolume, spare.uri()}),
                      "volume mir has no slot to fill: every slot is current or catching up");
  LoseMember1(mirror, agg, &written);
  CheckCommandRefused(AskMember(agg, {"add", "nope", spare.uri()}), "unknown volume 'nope'");
  CheckCommandRefused(AskMember(agg, {"add", kVolume, spare.uri(), "--slot", "0"}),
                      "slot 0 of mir cannot take a new member: it is current (active)");

  Member big(dir.File("big.img"), 2 * kMemberSize);
  CheckCommandRefused(AskMember(agg, {"add", kVolume, big.uri()}),
                      big.uri() +
                          " has 32 MiB (33554432 bytes); slot 1 of mir needs exactly 16 MiB "
                          "(16777216 bytes), the size of its member");
  CHECK(ReadFileRange(dir.File("big.img"), 0, 64 * kKiB) == Bytes(64 * kKiB, 0));

  const std::string generation = InspectGeneration(uri0);
  const Bytes data0 = mirror.Data(0);
  CheckCommandRefused(AskMember(agg, {"add", kVolume, uri0}),
                      uri0 + " holds slot 0 of mir: a copy of this volume is not formatted over");
  CHECK(InspectGeneration(uri0) == generation);
  CHECK(mirror.Data(0) == data0);
  CheckReadBack(agg, written);
  CHECK(Contains(StatusJson(agg), "\"sets\": [\"U_\"]"));
}

TEST_SUITE_END();

}  // namespace
}  // namespace dst::test::fault::fault_mirror_add_test
