#include "aggregator/integrity/redundant_assembly.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <string>
#include <vector>

#include "aggregator/integrity/assembly.h"

namespace dst::integrity::redundancy::redundant_assembly_test {
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

// --- Every combination ------------------------------------------------------------------------
//
// A scenario gives each slot a member choice (missing, or present with a generation, an event lag
// and an ownership epoch), the view the current generation's superblocks hold of every slot, where
// the maps were last cleared, and the options. The checks below restate the rules from the raw
// scenario, independently of how DecideAssembly is written, and hold for every scenario.

enum class Gen : uint8_t {
  kSame,      // kG, history kH1, kH2
  kOlder,     // kH1, history kH2, kH3: in the current generation's history
  kDiverged,  // its own generation, branched from kH1 as kG was: the other side of a split brain
};
enum class Lag : uint8_t { kNone, kOne, kFar };

struct Choice {
  bool present = true;
  Gen gen = Gen::kSame;
  Lag lag = Lag::kNone;
  bool lower_epoch = false;
};

const Choice kMissing{.present = false};
// Every present combination, then missing.
std::vector<Choice> AllChoices() {
  std::vector<Choice> all;
  for (Gen gen : {Gen::kSame, Gen::kOlder, Gen::kDiverged})
    for (Lag lag : {Lag::kNone, Lag::kOne, Lag::kFar})
      for (bool lower : {false, true})
        all.push_back({.present = true, .gen = gen, .lag = lag, .lower_epoch = lower});
  all.push_back(kMissing);
  return all;
}

const Uuid kH3 = U(0x40);
Uuid DivergedGeneration(uint32_t slot) {
  return U(static_cast<uint8_t>(0x80 + 8 * slot));
}
constexpr uint64_t kStaleSince = 80;

struct Scenario {
  uint32_t copies = 2;
  std::vector<Choice> members;  // one per slot
  std::vector<SlotState> view;  // the current generation's view of each slot
  bool maps_cleared_since = false;
  AssemblyOptions options;
};

MemberView Build(const Scenario& sc, uint32_t slot) {
  const Choice& c = sc.members[slot];
  const uint32_t count = static_cast<uint32_t>(sc.members.size());
  MemberView m = Healthy(slot, count, sc.copies);
  m.event = kEvent - (c.lag == Lag::kNone ? 0 : c.lag == Lag::kOne ? 1 : 50);
  m.ownership_epoch = kEpoch - (c.lower_epoch ? 1 : 0);
  if (c.gen == Gen::kSame) {
    m.map_epoch =
        sc.maps_cleared_since ? kStaleSince + 1 : kStaleSince;  // either side of md's rule
    for (uint32_t s = 0; s < count; ++s) {
      m.slot_states[s] = sc.view[s];
      m.stale_since[s] = sc.view[s] == SlotState::kActive ? 0 : kStaleSince;
    }
  } else if (c.gen == Gen::kOlder) {
    m.generation = kH1;  // and its own, older view: everyone active
    m.history = {kH2, kH3};
    m.map_epoch = 1;
  } else {
    m.generation = DivergedGeneration(slot);  // it ran alone: everyone else stale
    m.map_epoch = 1;
    for (uint32_t s = 0; s < count; ++s) {
      if (s == slot) continue;
      m.slot_states[s] = SlotState::kStale;
      m.stale_since[s] = kStaleSince + 15;
    }
  }
  return m;
}

void Build(const Scenario& sc, std::vector<MemberView>& members) {
  members.clear();
  for (uint32_t s = 0; s < sc.members.size(); ++s)
    if (sc.members[s].present) members.push_back(Build(sc, s));
}

std::string Describe(const Scenario& sc) {
  static constexpr const char* kGen[] = {"same", "older", "diverged"};
  static constexpr const char* kLag[] = {"", " -1", " -50"};
  std::string text;
  for (uint32_t s = 0; s < sc.members.size(); ++s) {
    const Choice& c = sc.members[s];
    text += "slot " + std::to_string(s) + ": ";
    text += c.present ? std::string(kGen[static_cast<int>(c.gen)]) + kLag[static_cast<int>(c.lag)] +
                            (c.lower_epoch ? " epoch-1" : "")
                      : "missing";
    text += ", viewed " + std::string(SlotStateName(sc.view[s])) + "; ";
  }
  text += sc.maps_cleared_since ? "maps cleared since; " : "maps not cleared since; ";
  if (sc.options.allow_degraded) text += "--allow-degraded ";
  if (sc.options.discard_slot) text += "--discard " + std::to_string(*sc.options.discard_slot);
  return text;
}

bool SameDecision(const AssemblyDecision& a, const AssemblyDecision& b) {
  if (a.status.err() != b.status.err() || a.status.message() != b.status.message()) return false;
  if (a.freshest_slot != b.freshest_slot || a.new_generation != b.new_generation) return false;
  if (a.new_generation_reason != b.new_generation_reason) return false;
  if (a.slots.size() != b.slots.size()) return false;
  for (size_t i = 0; i < a.slots.size(); ++i) {
    const SlotVerdict& x = a.slots[i];
    const SlotVerdict& y = b.slots[i];
    if (x.role != y.role || x.rule != y.rule || x.reason != y.reason) return false;
  }
  return true;
}

bool InHistoryOf(const MemberView& m, const Uuid& generation) {
  return m.history[0] == generation || m.history[1] == generation;
}
bool Diverged(const MemberView& a, const MemberView& b) {
  return a.generation != b.generation && !InHistoryOf(a, b.generation) &&
         !InHistoryOf(b, a.generation);
}

// The rules restated from the raw members: what the decision must say.
struct Expected {
  const MemberView* freshest = nullptr;
  std::vector<const MemberView*> given;  // reachable and not discarded
  std::vector<bool> may_be_current;      // per slot: rule "current" holds
  bool diverged_from_freshest = false;
  bool diverged_pair = false;
  bool set_without_candidate = false;
  bool missing_current = false;
};

Expected Expect(const Scenario& sc, const std::vector<MemberView>& members) {
  Expected e;
  const uint32_t count = static_cast<uint32_t>(sc.members.size());
  for (const MemberView& m : members) {
    if (sc.options.discard_slot == m.slot) continue;
    e.given.push_back(&m);
    const MemberView* f = e.freshest;
    if (f == nullptr || m.ownership_epoch > f->ownership_epoch ||
        (m.ownership_epoch == f->ownership_epoch && m.event > f->event)) {
      e.freshest = &m;  // members come in slot order: ties stay with the lowest slot
    }
  }
  e.may_be_current.assign(count, false);
  if (e.freshest == nullptr) return e;
  const MemberView& f = *e.freshest;
  for (const MemberView* m : e.given) {
    e.may_be_current[m->slot] = m->generation == f.generation && m->event + 1 >= f.event &&
                                f.slot_states[m->slot] == SlotState::kActive;
    e.diverged_from_freshest = e.diverged_from_freshest ||
                               (m->generation != f.generation && !InHistoryOf(f, m->generation));
    for (const MemberView* other : e.given)
      e.diverged_pair = e.diverged_pair || Diverged(*m, *other);
  }
  for (uint32_t set = 0; set < count / sc.copies; ++set) {
    bool candidate = false;
    for (uint32_t s = set * sc.copies; s < (set + 1) * sc.copies; ++s)
      candidate = candidate || e.may_be_current[s];
    e.set_without_candidate = e.set_without_candidate || !candidate;
  }
  for (uint32_t s = 0; s < count; ++s) {
    const bool given = std::any_of(members.begin(), members.end(),
                                   [s](const MemberView& m) { return m.slot == s; });
    if (!given && sc.options.discard_slot != s && f.slot_states[s] == SlotState::kActive) {
      e.missing_current = true;
    }
  }
  return e;
}

// Returns what is wrong, or an empty string.
std::string CheckRules(const Scenario& sc, const std::vector<MemberView>& members,
                       const AssemblyDecision& d) {
  const Expected e = Expect(sc, members);
  const uint32_t count = static_cast<uint32_t>(sc.members.size());
  if (members.empty()) return d.status.message() == "no members given" ? "" : "served nothing";
  if (d.slots.size() != count) return "not one verdict per slot";
  if (sc.options.discard_slot && d.slots[*sc.options.discard_slot].role != SlotRole::kRebuilding) {
    return "the discarded slot is not rebuilding";
  }
  if (e.freshest == nullptr) {
    if (d.status.ok()) return "served with no member left";
    return "";
  }
  if (d.freshest_slot != e.freshest->slot) return "not the freshest superblock";
  for (uint32_t s = 0; s < count; ++s) {
    if (d.slots[s].role == SlotRole::kCurrent && !e.may_be_current[s]) {
      return "slot " + std::to_string(s) + " current against the rules (stale, older or behind)";
    }
  }
  const bool split = d.status.message().starts_with("split brain: ");
  if (e.diverged_pair && !split) return "diverged generations not refused as split brain";
  if (split != e.diverged_from_freshest) return "split brain where there is none, or missed";
  const bool expect_ok = !e.diverged_from_freshest && !e.set_without_candidate &&
                         (sc.options.allow_degraded || !e.missing_current);
  if (d.status.ok() != expect_ok)
    return "served or refused against the rules: " + d.status.message();
  if (!d.status.ok()) return d.new_generation ? "new generation on a refusal" : "";
  const MemberView& f = *e.freshest;
  bool dropped = false;
  for (uint32_t s = 0; s < count; ++s) {
    const SlotVerdict& v = d.slots[s];
    if (e.may_be_current[s] != (v.role == SlotRole::kCurrent)) return "a current slot left out";
    dropped = dropped || (f.slot_states[s] == SlotState::kActive && v.role != SlotRole::kCurrent);
    if (v.rule == Rule::kMarkedStale) {
      const bool maps_cover = f.map_epoch <= f.stale_since[s];
      if ((v.role == SlotRole::kStaleResync) != maps_cover) return "bitmap versus full rebuild";
    }
  }
  if (d.new_generation != (dropped || sc.options.discard_slot.has_value())) {
    return "new generation wrong: " + d.new_generation_reason;
  }
  return "";
}

// The same decision whatever the order of the members, and whatever the members other than the
// freshest say about the slots (their states, stale-since events and map epochs): both are checked
// by one call, members reversed and rewritten, and members of three or more by a rotation too.
// `scratch` is reused: the sweeps below make a hundred thousand calls.
std::string CheckIndependence(const std::vector<MemberView>& members,
                              const AssemblyOptions& options, const AssemblyDecision& d,
                              std::vector<MemberView>& scratch) {
  if (members.empty()) return "";
  scratch.assign(members.rbegin(), members.rend());
  for (MemberView& m : scratch) {
    if (d.freshest_slot == m.slot) continue;
    m.slot_states.fill(SlotState::kActive);
    m.stale_since.fill(0);
    m.map_epoch = 1000;
  }
  if (!SameDecision(d, DecideAssembly(scratch, options))) {
    return "depends on the order, or on what a member other than the freshest says";
  }
  if (members.size() <= 2) return "";
  scratch.assign(members.begin() + 1, members.end());
  scratch.push_back(members.front());
  if (!SameDecision(d, DecideAssembly(scratch, options))) return "depends on the order";
  return "";
}

// Calls `visit` with every combination of digits below `radices`.
template <typename Visit>
void ForEachCombination(const std::vector<size_t>& radices, Visit visit) {
  std::vector<size_t> digits(radices.size(), 0);
  while (true) {
    visit(digits);
    size_t i = 0;
    while (i < digits.size() && ++digits[i] == radices[i])
      digits[i++] = 0;
    if (i == digits.size()) return;
  }
}

struct Axes {
  uint32_t copies = 2;
  uint32_t count = 2;
  std::vector<Choice> choices;
  std::vector<SlotState> views;
  std::vector<bool> maps_cleared{false, true};
  std::vector<bool> allow_degraded{false, true};
  std::vector<std::optional<uint32_t>> discards;
};

// The view is read only from members of the current generation, and where the maps were cleared
// only for slots the view does not mark active: other combinations repeat one already checked.
bool Repeats(const Scenario& sc) {
  const bool read = std::any_of(sc.members.begin(), sc.members.end(),
                                [](const Choice& c) { return c.present && c.gen == Gen::kSame; });
  const bool all_active = std::all_of(sc.view.begin(), sc.view.end(),
                                      [](SlotState v) { return v == SlotState::kActive; });
  if (!read && (!all_active || sc.maps_cleared_since)) return true;
  return all_active && sc.maps_cleared_since;
}

// Runs every combination of the axes; returns how many there were, and checks those that do not
// repeat an earlier one.
size_t Exhaust(const Axes& axes) {
  std::vector<size_t> radices(axes.count, axes.choices.size());
  radices.insert(radices.end(), axes.count, axes.views.size());
  radices.push_back(axes.maps_cleared.size());
  radices.push_back(axes.allow_degraded.size());
  radices.push_back(axes.discards.size());
  size_t scenarios = 0;
  int failures = 0;
  std::vector<MemberView> members;
  std::vector<MemberView> scratch;
  ForEachCombination(radices, [&](const std::vector<size_t>& digits) {
    if (failures >= 5) return;
    Scenario sc;
    sc.copies = axes.copies;
    for (uint32_t s = 0; s < axes.count; ++s) {
      sc.members.push_back(axes.choices[digits[s]]);
      sc.view.push_back(axes.views[digits[axes.count + s]]);
    }
    sc.maps_cleared_since = axes.maps_cleared[digits[2 * axes.count]];
    sc.options.allow_degraded = axes.allow_degraded[digits[2 * axes.count + 1]];
    sc.options.discard_slot = axes.discards[digits[2 * axes.count + 2]];
    ++scenarios;
    if (Repeats(sc)) return;
    Build(sc, members);
    const AssemblyDecision d = DecideAssembly(members, sc.options);
    std::string wrong = CheckRules(sc, members, d);
    if (wrong.empty()) wrong = CheckIndependence(members, sc.options, d, scratch);
    if (wrong.empty()) return;
    ++failures;
    FAIL_CHECK(wrong << "\n  scenario: " << Describe(sc)
                     << "\n  decision: " << d.status.ToString());
  });
  return scenarios;
}

std::vector<std::optional<uint32_t>> NoneAnd(std::vector<uint32_t> slots) {
  std::vector<std::optional<uint32_t>> out{std::nullopt};
  for (uint32_t s : slots)
    out.push_back(s);
  return out;
}

const std::vector<SlotState> kAllViews = {SlotState::kActive, SlotState::kStale, SlotState::kFailed,
                                          SlotState::kRebuilding};

// Two copies: the whole product of every axis.
TEST_CASE("redundant assembly, every combination: a 2-copy mirror") {
  const size_t n = Exhaust({.copies = 2,
                            .count = 2,
                            .choices = AllChoices(),
                            .views = kAllViews,
                            .discards = NoneAnd({0, 1})});
  CHECK(n == 19 * 19 * 4 * 4 * 2 * 2 * 3);
}

// Three copies: the whole product is 7 million, so three sweeps that cross every axis with every
// other that it interacts with: every member combination with --allow-degraded or not; --discard
// of each slot; and every view of every slot, with the maps cleared or not, over members of each
// generation.
TEST_CASE("redundant assembly, every combination: a 3-copy mirror") {
  size_t n = Exhaust({.copies = 3,
                      .count = 3,
                      .choices = AllChoices(),
                      .views = {SlotState::kActive},
                      .maps_cleared = {false},
                      .discards = NoneAnd({})});
  CHECK(n == 19 * 19 * 19 * 2);
  const std::vector<Choice> sides = {{},
                                     {.lag = Lag::kOne},
                                     {.lower_epoch = true},
                                     {.gen = Gen::kOlder},
                                     {.gen = Gen::kDiverged},
                                     kMissing};
  n = Exhaust({.copies = 3,
               .count = 3,
               .choices = sides,
               .views = {SlotState::kActive},
               .maps_cleared = {false},
               .discards = {0, 1, 2}});
  CHECK(n == 6 * 6 * 6 * 2 * 3);
  const std::vector<Choice> generations = {
      {}, {.gen = Gen::kOlder, .lag = Lag::kOne}, {.gen = Gen::kDiverged}, kMissing};
  n = Exhaust({.copies = 3,
               .count = 3,
               .choices = generations,
               .views = kAllViews,
               .discards = NoneAnd({})});
  CHECK(n == 4 * 4 * 4 * 64 * 2 * 2);
}

// Two sets of two: the same sweeps, with a set that can lose both copies.
TEST_CASE("redundant assembly, every combination: raid10 of 2 sets x 2 copies") {
  const std::vector<Choice> members = {{},
                                       {.lag = Lag::kOne},
                                       {.lag = Lag::kFar},
                                       {.lower_epoch = true},
                                       {.gen = Gen::kOlder},
                                       {.gen = Gen::kDiverged},
                                       kMissing};
  size_t n = Exhaust({.copies = 2,
                      .count = 4,
                      .choices = members,
                      .views = {SlotState::kActive},
                      .maps_cleared = {false},
                      .discards = NoneAnd({})});
  CHECK(n == 7 * 7 * 7 * 7 * 2);
  const std::vector<Choice> sides = {{}, {.gen = Gen::kOlder}, {.gen = Gen::kDiverged}, kMissing};
  n = Exhaust({.copies = 2,
               .count = 4,
               .choices = sides,
               .views = {SlotState::kActive},
               .maps_cleared = {false},
               .discards = {0, 3}});
  CHECK(n == 4 * 4 * 4 * 4 * 2 * 2);
  n = Exhaust({.copies = 2,
               .count = 4,
               .choices = {{}, {.gen = Gen::kOlder}, kMissing},
               .views = {SlotState::kActive, SlotState::kStale},
               .discards = NoneAnd({})});
  CHECK(n == 81 * 16 * 2 * 2);
}

}  // namespace
}  // namespace dst::integrity::redundancy::redundant_assembly_test
