#include "aggregator/integrity/redundant_assembly.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <string>
#include <vector>

#include "aggregator/integrity/assembly.h"

namespace dst::integrity::redundancy {
namespace {

// --- A small volume whose members agree unless a test says otherwise -------------------------

Uuid U(uint8_t seed) {
  Uuid uuid{};
  for (size_t i = 0; i < uuid.size(); ++i)
    uuid[i] = static_cast<uint8_t>(seed + i);
  return uuid;
}

// Generations: the current one and its two predecessors.
const Uuid kG = U(0x10);
const Uuid kH1 = U(0x20);
const Uuid kH2 = U(0x30);
Uuid MemberId(uint32_t slot) {
  return U(static_cast<uint8_t>(0x100 - 0x10 - slot));
}

constexpr uint64_t kEvent = 100;
constexpr uint64_t kEpoch = 5;

// Slot `slot` of a healthy volume of `count` members in sets of `copies`.
MemberView Healthy(uint32_t slot, uint32_t count = 2, uint32_t copies = 2) {
  MemberView m;
  m.slot = slot;
  m.member_uuid = MemberId(slot);
  m.generation = kG;
  m.history = {kH1, kH2};
  m.event = kEvent;
  m.ownership_epoch = kEpoch;
  m.map_epoch = 10;
  m.copies = copies;
  m.member_count = count;
  for (uint32_t s = 0; s < count; ++s) {
    m.slot_states[s] = SlotState::kActive;
    m.slot_members[s] = MemberId(s);
  }
  return m;
}

// `m` recorded that `slot` went stale at `since`, in a new generation after kG.
void MarkStale(MemberView& m, uint32_t slot, uint64_t since, Uuid generation) {
  m.slot_states[slot] = SlotState::kStale;
  m.stale_since[slot] = since;
  m.history = {m.generation, m.history[0]};
  m.generation = generation;
}

const AssemblyOptions kDegraded{.allow_degraded = true, .discard_slot = std::nullopt};
AssemblyOptions Discard(uint32_t slot) {
  return {.allow_degraded = false, .discard_slot = slot};
}

AssemblyDecision Decide(std::vector<MemberView> members, AssemblyOptions options = {}) {
  return DecideAssembly(members, options);
}

std::vector<SlotRole> Roles(const AssemblyDecision& d) {
  std::vector<SlotRole> roles;
  for (const SlotVerdict& v : d.slots)
    roles.push_back(v.role);
  return roles;
}

bool Contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

using R = SlotRole;

// --- Named cases ------------------------------------------------------------------------------

TEST_CASE(
    "redundant assembly: a healthy mirror is current everywhere and needs no new generation") {
  const AssemblyDecision d = Decide({Healthy(0), Healthy(1)});
  REQUIRE_MESSAGE(d.status.ok(), d.status.message());
  CHECK(Roles(d) == std::vector<R>{R::kCurrent, R::kCurrent});
  CHECK(d.freshest_slot == 0u);
  CHECK_FALSE(d.new_generation);
  CHECK(d.slots[1].reason == "current: generation " + FormatUuid(kG) +
                                 ", event 100, as the freshest superblock (slot 0, event 100)");
}

TEST_CASE("redundant assembly: one event behind is tolerated, as md does; two are not") {
  // An update interrupted between members leaves one of them one event behind.
  MemberView behind = Healthy(1);
  behind.event = kEvent - 1;
  AssemblyDecision d = Decide({Healthy(0), behind});
  REQUIRE(d.status.ok());
  CHECK(Roles(d) == std::vector<R>{R::kCurrent, R::kCurrent});

  behind.event = kEvent - 2;
  d = Decide({Healthy(0), behind});
  REQUIRE_MESSAGE(d.status.ok(), d.status.message());
  CHECK(d.slots[1].role == R::kStaleRebuild);
  CHECK(d.slots[1].rule == Rule::kBehind);
  CHECK(Contains(d.slots[1].reason, "behind: event 98 is more than one behind"));
  CHECK(d.new_generation);
  CHECK(d.new_generation_reason ==
        "slot 1 current in the freshest superblock (slot 0, event 100) but not now");
}

TEST_CASE("redundant assembly: a stale slot resyncs from the maps unless they were cleared since") {
  MemberView survivor = Healthy(0);
  MarkStale(survivor, 1, 101, U(0x50));
  survivor.event = 101;
  MemberView returning = Healthy(1);

  survivor.map_epoch = 101;  // map epoch <= stale-since: the maps cover everything it missed
  AssemblyDecision d = Decide({survivor, returning});
  REQUIRE(d.status.ok());
  CHECK(Roles(d) == std::vector<R>{R::kCurrent, R::kStaleResync});
  CHECK(d.slots[1].reason ==
        "marked-stale: the freshest superblock (slot 0, event 101) marks it stale since event "
        "101; the missed-write maps were last clear at event 101, so a bitmap resync");
  CHECK_FALSE(d.new_generation);  // the freshest already knows slot 1 is not current

  survivor.map_epoch = 102;  // cleared after it went stale (md events_cleared)
  d = Decide({survivor, returning});
  CHECK(d.slots[1].role == R::kStaleRebuild);
  CHECK(Contains(d.slots[1].reason, "cleared at event 102, after it, so a full rebuild"));

  survivor.stale_since[1] = 0;  // no record of when: nothing bounds what it missed
  d = Decide({survivor, returning});
  CHECK(d.slots[1].role == R::kStaleRebuild);
  CHECK(Contains(d.slots[1].reason, "with no stale-since event, so a full rebuild"));
}

TEST_CASE("redundant assembly: failed, rebuilding and resyncing slots are not current either") {
  for (SlotState state :
       {SlotState::kFailed, SlotState::kMissing, SlotState::kRebuilding, SlotState::kResyncing}) {
    CAPTURE(SlotStateName(state));
    MemberView survivor = Healthy(0);
    MarkStale(survivor, 1, 101, U(0x50));
    survivor.slot_states[1] = state;
    const AssemblyDecision d = Decide({survivor, Healthy(1)});
    REQUIRE(d.status.ok());
    CHECK(d.slots[1].role == R::kStaleResync);
    CHECK(Contains(d.slots[1].reason, "marks it " + std::string(SlotStateName(state))));
  }
}

// LINBIT/drbd#145: a rejoining replica with an older generation was declared UpToDate and its
// non-empty bitmap cleared. Here nothing the rejoining member says about itself counts.
TEST_CASE("redundant assembly: a rejoining older copy is never current and never clears the maps") {
  MemberView survivor = Healthy(0);
  MarkStale(survivor, 1, 101, U(0x50));
  survivor.event = 140;
  survivor.map_epoch = 60;  // not cleared since slot 1 left: its regions are in the map

  MemberView rejoining = Healthy(1);  // generation kG, in the survivor's history
  rejoining.event = 139;              // within one event of the survivor
  rejoining.map_epoch = 139;          // claims the maps were cleared recently
  for (uint32_t s = 0; s < 2; ++s)
    rejoining.slot_states[s] = SlotState::kActive;  // and that everyone is current

  for (auto order : {std::vector<MemberView>{survivor, rejoining}, {rejoining, survivor}}) {
    const AssemblyDecision d = Decide(order);
    REQUIRE(d.status.ok());
    CHECK(d.freshest_slot == 0u);
    CHECK(Roles(d) == std::vector<R>{R::kCurrent, R::kStaleResync});
    CHECK(d.slots[1].rule == Rule::kMarkedStale);
    CHECK(Contains(d.slots[1].reason, "last clear at event 60"));
  }

  // With a higher event of its own it would be the freshest: refused, still never current.
  rejoining.event = 150;
  const AssemblyDecision d = Decide({survivor, rejoining});
  CHECK(d.status.err() == EINVAL);
  CHECK(Contains(d.status.message(), "split brain: slot 0 generation " + FormatUuid(U(0x50)) +
                                         " and slot 1 generation " + FormatUuid(kG)));
  CHECK(d.slots[1].role != R::kCurrent);
  CHECK(Contains(d.slots[0].reason, "descends from generation " + FormatUuid(kG)));
}

TEST_CASE("redundant assembly: a member one generation back that the freshest marks active") {
  // The update that started the new generation reached slot 0 but not slot 1.
  MemberView first = Healthy(0, 3, 3);
  MarkStale(first, 2, 101, U(0x50));
  first.event = 101;
  first.map_epoch = 90;
  const MemberView second = Healthy(1, 3, 3);
  const AssemblyDecision d = Decide({first, second});
  REQUIRE_MESSAGE(d.status.ok(), d.status.message());
  CHECK(Roles(d) == std::vector<R>{R::kCurrent, R::kStaleResync, R::kMissing});
  CHECK(d.slots[1].rule == Rule::kOlderGeneration);
  CHECK(Contains(d.slots[1].reason, "older-generation: generation " + FormatUuid(kG) +
                                        " is in the history of the freshest superblock"));
  CHECK(d.slots[2].rule == Rule::kMissingStale);
  CHECK(d.new_generation);  // slot 1 was current in the freshest superblock
}

// Research T4: kill M0, write, kill M1, start M0 only.
TEST_CASE(
    "redundant assembly: the copy that missed writes alone is refused (kill M0, write, kill "
    "M1, start M0)") {
  MemberView m0 = Healthy(0);  // killed first: its superblock still says everyone is current
  MemberView m1 = Healthy(1);  // wrote alone after demoting slot 0
  MarkStale(m1, 0, 101, U(0x50));
  m1.event = 105;

  AssemblyDecision d = Decide({m0});
  CHECK(d.status.err() == EINVAL);
  CHECK(d.status.message() ==
        "slot 1 missing but current in the freshest superblock (slot 0, event 100): start the "
        "missing members, or give --allow-degraded to serve without them (they become stale)");
  CHECK(d.slots[1].rule == Rule::kMissingCurrent);

  // Once M1 is back, M0 is stale and M1 serves.
  d = Decide({m0, m1});
  REQUIRE(d.status.ok());
  CHECK(Roles(d) == std::vector<R>{R::kStaleResync, R::kCurrent});

  // And M1 alone needs no flag: its superblock already says slot 0 is stale.
  d = Decide({m1});
  REQUIRE(d.status.ok());
  CHECK(Roles(d) == std::vector<R>{R::kMissing, R::kCurrent});
  CHECK(d.slots[0].rule == Rule::kMissingStale);
  CHECK_FALSE(d.new_generation);
}

TEST_CASE(
    "redundant assembly: --allow-degraded serves without a current member, in a new "
    "generation") {
  const AssemblyDecision d = Decide({Healthy(1)}, kDegraded);
  REQUIRE(d.status.ok());
  CHECK(Roles(d) == std::vector<R>{R::kMissing, R::kCurrent});
  CHECK(Contains(d.slots[0].reason, "recorded stale in a new generation (--allow-degraded)"));
  CHECK(d.new_generation);
  CHECK(d.new_generation_reason ==
        "slot 0 current in the freshest superblock (slot 1, event 100) but not now");
}

// Research T5(b): each partition ran alone and wrote.
TEST_CASE("redundant assembly: split brain is refused; --discard resolves it with a full rebuild") {
  MemberView a = Healthy(0);  // demoted slot 1 and kept writing
  MarkStale(a, 1, 101, U(0x50));
  a.event = 110;
  MemberView b = Healthy(1);  // started alone with --allow-degraded, bumping the ownership epoch
  MarkStale(b, 0, 101, U(0x60));
  b.event = 102;
  b.ownership_epoch = kEpoch + 1;

  AssemblyDecision d = Decide({a, b});
  CHECK(d.status.err() == EINVAL);
  CHECK(d.status.message() == "split brain: slot 0 generation " + FormatUuid(U(0x50)) +
                                  " and slot 1 generation " + FormatUuid(U(0x60)) +
                                  " diverged; resolve with --discard SLOT");
  CHECK(Roles(d) == std::vector<R>{R::kRefused, R::kRefused});  // neither side is current
  CHECK(d.slots[0].rule == Rule::kSplitBrain);
  CHECK(d.slots[1].reason == "split-brain: on the side of slot 1, generation " +
                                 FormatUuid(U(0x60)) + "; --discard decides which side is current");
  CHECK_FALSE(d.new_generation);

  d = Decide({a, b}, Discard(1));
  REQUIRE(d.status.ok());
  CHECK(Roles(d) == std::vector<R>{R::kCurrent, R::kRebuilding});
  CHECK(d.slots[1].reason ==
        "discard: --discard 1: rebuilt in full from the current copies, its data never merged");
  CHECK(d.new_generation);
  CHECK(d.new_generation_reason == "slot 1 is discarded");

  d = Decide({a, b}, Discard(0));
  REQUIRE(d.status.ok());
  CHECK(Roles(d) == std::vector<R>{R::kRebuilding, R::kCurrent});
}

TEST_CASE("redundant assembly: the higher ownership epoch is fresher than a higher event") {
  MemberView owner = Healthy(0);
  MarkStale(owner, 1, 101, U(0x50));
  owner.ownership_epoch = kEpoch + 1;
  owner.event = 101;
  MemberView old = Healthy(1);
  old.event = 400;  // counted on, but under the previous owner
  const AssemblyDecision d = Decide({old, owner});
  REQUIRE_MESSAGE(d.status.ok(), d.status.message());
  CHECK(d.freshest_slot == 0u);
  CHECK(Roles(d) == std::vector<R>{R::kCurrent, R::kStaleResync});
}

TEST_CASE("redundant assembly: an ownership bump interrupted between members is one event") {
  MemberView bumped = Healthy(0);
  bumped.ownership_epoch = kEpoch + 1;
  bumped.event = kEvent + 1;
  const AssemblyDecision d = Decide({Healthy(1), bumped});
  REQUIRE(d.status.ok());
  CHECK(Roles(d) == std::vector<R>{R::kCurrent, R::kCurrent});
}

TEST_CASE("redundant assembly: a replaced member is refused, naming the slot's owner") {
  MemberView survivor = Healthy(0);
  survivor.slot_members[1] = U(0x70);  // slot 1 was replaced
  const AssemblyDecision d = Decide({survivor, Healthy(1)});
  CHECK(d.status.err() == EINVAL);
  CHECK(d.status.message() == "slot 1: not-owner: member " + FormatUuid(MemberId(1)) +
                                  " does not own slot 1; the freshest superblock (slot 0, event "
                                  "100) gives it to member " +
                                  FormatUuid(U(0x70)) + " (a replaced member)");
  CHECK(d.slots[1].role == R::kRefused);
}

TEST_CASE("redundant assembly: a raid10 set with no current copy is refused, naming the set") {
  MemberView first = Healthy(0, 4);
  MarkStale(first, 2, 101, U(0x50));
  MarkStale(first, 3, 101, U(0x50));
  first.history = {kG, kH1};
  MemberView second = first;
  second.slot = 1;
  second.member_uuid = MemberId(1);
  MemberView third = Healthy(2, 4);
  MemberView fourth = Healthy(3, 4);
  const AssemblyDecision d = Decide({first, second, third, fourth});
  CHECK(d.status.err() == EINVAL);
  CHECK(d.status.message() ==
        "set 1 has no current copy (slot 2 stale (bitmap resync), slot 3 stale (bitmap "
        "resync)): its data is stale or lost, so the volume is not served");
  CHECK(Roles(d) == std::vector<R>{R::kCurrent, R::kCurrent, R::kStaleResync, R::kStaleResync});
  CHECK_FALSE(d.new_generation);
}

TEST_CASE("redundant assembly: raid10 with one copy of each set is served degraded") {
  std::vector<MemberView> two = {Healthy(0, 4), Healthy(3, 4)};
  AssemblyDecision d = Decide(two);
  CHECK(Contains(d.status.message(), "slots 1, 2 missing but current"));
  d = Decide(two, kDegraded);
  REQUIRE(d.status.ok());
  CHECK(Roles(d) == std::vector<R>{R::kCurrent, R::kMissing, R::kMissing, R::kCurrent});
  CHECK(d.new_generation_reason ==
        "slots 1, 2 current in the freshest superblock (slot 0, event 100) but not now");
  // Both copies of set 1 gone: --allow-degraded cannot help.
  d = Decide({Healthy(0, 4), Healthy(1, 4)}, kDegraded);
  CHECK(Contains(d.status.message(), "set 1 has no current copy (slot 2 missing, slot 3 missing)"));
}

TEST_CASE("redundant assembly: a spare slot holds no copy and is not counted") {
  MemberView first = Healthy(0, 3, 3);
  first.slot_states[2] = SlotState::kSpare;
  MemberView second = first;
  second.slot = 1;
  second.member_uuid = MemberId(1);
  MemberView third = first;
  third.slot = 2;
  third.member_uuid = MemberId(2);
  AssemblyDecision d = Decide({first, second, third});
  REQUIRE(d.status.ok());
  CHECK(Roles(d) == std::vector<R>{R::kCurrent, R::kCurrent, R::kSpare});
  d = Decide({first, second});
  REQUIRE(d.status.ok());
  CHECK(d.slots[2].rule == Rule::kMissingStale);
}

TEST_CASE("redundant assembly: --discard of a missing slot, and of the only member") {
  AssemblyDecision d = Decide({Healthy(0)}, Discard(1));
  REQUIRE(d.status.ok());
  CHECK(Roles(d) == std::vector<R>{R::kCurrent, R::kRebuilding});
  CHECK(d.new_generation);

  d = Decide({Healthy(0)}, Discard(0));
  CHECK(d.status.message() == "--discard 0 leaves no member to assemble the volume from");
  CHECK(Roles(d) == std::vector<R>{R::kRebuilding, R::kMissing});
}

TEST_CASE("redundant assembly: inconsistent input is refused before any rule") {
  MemberView three = Healthy(1);
  three.member_count = 3;
  three.copies = 3;
  CHECK(Decide({Healthy(0), three}).status.message() ==
        "slot 1 records 3 members of 3 copies, but slot 0 records 2 of 2");
  CHECK(Decide({Healthy(0), Healthy(0)}).status.message() == "slot 0 was given twice");
  MemberView far = Healthy(0);
  far.slot = 2;
  CHECK(Decide({far}).status.message() == "slot 2: slot 2 is beyond the 2 members");
  MemberView single = Healthy(0);
  single.copies = 1;
  CHECK(Decide({single}).status.message() == "slot 0: copies must be at least 2, not 1");
  MemberView odd = Healthy(0, 3);
  CHECK(Decide({odd}).status.message() == "slot 0: 3 members do not form sets of 2 copies");
  CHECK(Decide({}).status.message() == "no members given");
  const AssemblyDecision d = Decide({Healthy(0), Healthy(1)}, Discard(2));
  CHECK(d.status.message() == "--discard 2: the volume has 2 slots");
  CHECK(d.slots.empty());
}

}  // namespace
}  // namespace dst::integrity::redundancy
