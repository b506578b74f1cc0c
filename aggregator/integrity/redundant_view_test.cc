// MemberViewOf against the superblock fields it copies; ServingView for the starts assembly can
// decide (whole, degraded, discarded); PlaceRedundantMembers with members missing.
#include "aggregator/integrity/redundant_view.h"

#include <doctest/doctest.h>

#include <optional>
#include <vector>

#include "aggregator/integrity/assembly.h"
#include "aggregator/integrity/test_superblock.h"

namespace dst::integrity::redundant_view_test {
namespace {

using redundancy::AssemblyDecision;
using redundancy::AssemblyOptions;
using redundancy::DecideAssembly;
using redundancy::MemberView;
using redundancy::SlotRole;
using testing::TestRedundantMember;
using testing::TestUuid;
using volume::LayoutKind;

constexpr uint64_t kEvent = 40;

// A 2-copy mirror at event kEvent, history one generation deep.
Superblock Mirror(uint32_t slot) {
  Superblock sb = TestRedundantMember(slot, 2, 2);
  sb.event = kEvent;
  sb.history[0] = TestUuid(0xb);
  sb.ownership_epoch = 3;
  sb.map_epoch = 7;
  return sb;
}

AssemblyDecision Decide(const std::vector<std::optional<Superblock>>& read,
                        AssemblyOptions options = {}) {
  std::vector<MemberView> views;
  for (const auto& sb : read)
    if (sb) views.push_back(MemberViewOf(*sb));
  return DecideAssembly(views, options);
}

TEST_CASE("MemberViewOf copies every field the decision reads, state codes unchanged") {
  Superblock sb = Mirror(1);
  sb.member_states[0] = MemberState::kStale;
  sb.stale_since[0] = 33;
  sb.member_states[1] = MemberState::kResyncing;
  sb.history[1] = TestUuid(0x9);
  const MemberView v = MemberViewOf(sb);
  CHECK(v.slot == 1);
  CHECK(v.member_uuid == sb.member_uuid);
  CHECK(v.generation == sb.generation);
  CHECK(v.history[0] == TestUuid(0xb));
  CHECK(v.history[1] == TestUuid(0x9));
  CHECK(v.event == kEvent);
  CHECK(v.ownership_epoch == 3);
  CHECK(v.map_epoch == 7);
  CHECK(v.copies == 2);
  CHECK(v.member_count == 2);
  CHECK(v.slot_states[0] == redundancy::SlotState::kStale);
  CHECK(v.slot_states[1] == redundancy::SlotState::kResyncing);
  CHECK(v.slot_states[2] == redundancy::SlotState::kUnused);
  CHECK(v.stale_since[0] == 33);
  CHECK(v.slot_members[0] == TestUuid(1));
  CHECK(v.slot_members[1] == TestUuid(2));
}

TEST_CASE("ServingView of a whole mirror is the freshest superblock unchanged") {
  const std::vector<std::optional<Superblock>> read = {Mirror(0), Mirror(1)};
  const AssemblyDecision d = Decide(read);
  REQUIRE(d.status.ok());
  REQUIRE_FALSE(d.new_generation);
  CHECK(ServingView(read, 0, d, TestUuid(0xe)) == *read[0]);
}

TEST_CASE("ServingView of a degraded start: the missing slot stale, a new generation") {
  const std::vector<std::optional<Superblock>> read = {Mirror(0), std::nullopt};
  CHECK_FALSE(Decide(read).status.ok());  // a current member is missing
  const AssemblyDecision d = Decide(read, {.allow_degraded = true, .discard_slot = std::nullopt});
  REQUIRE(d.status.ok());
  REQUIRE(d.new_generation);
  CHECK(d.slots[1].role == SlotRole::kMissing);
  const Superblock view = ServingView(read, 0, d, TestUuid(0xe));
  CHECK(view.member_states[0] == MemberState::kActive);
  CHECK(view.member_states[1] == MemberState::kStale);
  CHECK(view.stale_since[1] == kEvent);
  CHECK(view.stale_since[0] == 0);
  CHECK(view.generation == TestUuid(0xe));
  CHECK(view.history[0] == TestUuid(0xc));
  CHECK(view.history[1] == TestUuid(0xb));
  CHECK(view.event == kEvent);
  CHECK(ValidateSuperblock(view).ok());
}

TEST_CASE("ServingView of a discarded slot: stale since its own last event") {
  std::vector<std::optional<Superblock>> read = {Mirror(0), Mirror(1)};
  read[1]->event = kEvent - 1;  // one update behind is still current
  const AssemblyDecision d = Decide(read, {.allow_degraded = false, .discard_slot = 1});
  REQUIRE(d.status.ok());
  REQUIRE(d.new_generation);
  const Superblock view = ServingView(read, 0, d, TestUuid(0xe));
  CHECK(view.member_states[1] == MemberState::kStale);
  CHECK(view.stale_since[1] == kEvent - 1);
  CHECK(view.generation == TestUuid(0xe));
}

TEST_CASE("ServingView keeps a slot the freshest already records stale as it is") {
  std::vector<std::optional<Superblock>> read = {Mirror(0), std::nullopt};
  read[0]->member_states[1] = MemberState::kStale;
  read[0]->stale_since[1] = 12;
  const AssemblyDecision d = Decide(read);
  REQUIRE(d.status.ok());
  const Superblock view = ServingView(read, 0, d, TestUuid(0xe));
  CHECK(view.member_states[1] == MemberState::kStale);
  CHECK(view.stale_since[1] == 12);
  CHECK(view.generation == (d.new_generation ? TestUuid(0xe) : TestUuid(0xc)));
}

std::vector<MemberSuperblock> Given(std::vector<uint32_t> slots, uint32_t count, uint32_t copies) {
  std::vector<MemberSuperblock> out;
  for (uint32_t s : slots)
    out.push_back({"nbd://m" + std::to_string(s),
                   TestRedundantMember(s, count, copies, LayoutKind::kRaid10)});
  return out;
}

TEST_CASE("PlaceRedundantMembers puts members by slot and leaves the missing ones empty") {
  std::vector<std::optional<MemberSuperblock>> placed;
  REQUIRE(PlaceRedundantMembers(Given({3, 0, 2}, 4, 2), &placed).ok());
  REQUIRE(placed.size() == 4);
  CHECK(placed[0]->uri == "nbd://m0");
  CHECK_FALSE(placed[1].has_value());
  CHECK(placed[2]->uri == "nbd://m2");
  CHECK(placed[3]->uri == "nbd://m3");
  // A whole set missing: the decision refuses it, not the placement.
  REQUIRE(PlaceRedundantMembers(Given({0, 1}, 4, 2), &placed).ok());
  CHECK_FALSE(placed[2].has_value());
}

TEST_CASE("PlaceRedundantMembers refuses what OrderMembers refuses") {
  std::vector<std::optional<MemberSuperblock>> placed;
  std::vector<MemberSuperblock> twice = Given({0, 0}, 2, 2);
  CHECK(PlaceRedundantMembers(twice, &placed).message() ==
        "nbd://m0 and nbd://m0 are the same member (member UUID " + FormatUuid(TestUuid(1)) + ")");
  std::vector<MemberSuperblock> other = Given({0, 1}, 2, 2);
  other[1].superblock.volume_uuid = TestUuid(0xd);
  CHECK(PlaceRedundantMembers(other, &placed).message().find("is a member of volume") !=
        std::string::npos);
  std::vector<MemberSuperblock> sized = Given({0, 3}, 4, 2);
  sized[1].superblock.volume_size += 4096;
  CHECK(PlaceRedundantMembers(sized, &placed).message() ==
        "nbd://m3 has volume size " + std::to_string(sized[1].superblock.volume_size) +
            " but nbd://m0 has " + std::to_string(sized[0].superblock.volume_size));
}

}  // namespace
}  // namespace dst::integrity::redundant_view_test
