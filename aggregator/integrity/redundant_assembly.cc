#include "aggregator/integrity/redundant_assembly.h"

#include <algorithm>
#include <array>
#include <initializer_list>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "aggregator/integrity/assembly.h"

namespace dst::integrity::redundancy {

namespace {

using std::to_string;

constexpr Uuid kNoGeneration{};

// Concatenates with one allocation: reasons are built for every slot of every assembly.
std::string Cat(std::initializer_list<std::string_view> parts) {
  size_t size = 0;
  for (std::string_view p : parts)
    size += p.size();
  std::string text;
  text.reserve(size);
  for (std::string_view p : parts)
    text += p;
  return text;
}

// --- Input checks ----------------------------------------------------------------------------

Status CheckShape(const MemberView& m) {
  if (m.copies < 2) return Status::Invalid("copies must be at least 2, not " + to_string(m.copies));
  if (m.member_count < m.copies || m.member_count > kMaxSlots || m.member_count % m.copies != 0) {
    return Status::Invalid(to_string(m.member_count) + " members do not form sets of " +
                           to_string(m.copies) + " copies");
  }
  if (m.slot >= m.member_count) {
    return Status::Invalid("slot " + to_string(m.slot) + " is beyond the " +
                           to_string(m.member_count) + " members");
  }
  return Status::Ok();
}

// Members sorted by slot.
Status CheckConsistent(std::span<const MemberView* const> sorted, const AssemblyOptions& options) {
  if (sorted.empty()) return Status::Invalid("no members given");
  const MemberView& first = *sorted.front();
  for (const MemberView* m : sorted) {
    const Status shape = CheckShape(*m);
    if (!shape.ok()) return shape.Wrap("slot " + to_string(m->slot));
    if (m->copies != first.copies || m->member_count != first.member_count) {
      return Status::Invalid("slot " + to_string(m->slot) + " records " +
                             to_string(m->member_count) + " members of " + to_string(m->copies) +
                             " copies, but slot " + to_string(first.slot) + " records " +
                             to_string(first.member_count) + " of " + to_string(first.copies));
    }
  }
  for (size_t i = 1; i < sorted.size(); ++i) {
    if (sorted[i]->slot == sorted[i - 1]->slot) {
      return Status::Invalid("slot " + to_string(sorted[i]->slot) + " was given twice");
    }
  }
  if (options.discard_slot && *options.discard_slot >= first.member_count) {
    return Status::Invalid("--discard " + to_string(*options.discard_slot) + ": the volume has " +
                           to_string(first.member_count) + " slots");
  }
  return Status::Ok();
}

// --- Rule "freshest" ------------------------------------------------------------------------

// Highest (ownership epoch, event); the lowest slot among equals, so that the answer does not
// depend on the order members were given in.
bool Fresher(const MemberView& a, const MemberView& b) {
  if (a.ownership_epoch != b.ownership_epoch) return a.ownership_epoch > b.ownership_epoch;
  if (a.event != b.event) return a.event > b.event;
  return a.slot < b.slot;
}

const MemberView* Freshest(std::span<const MemberView* const> sorted,
                           const AssemblyOptions& options) {
  const MemberView* best = nullptr;
  for (const MemberView* m : sorted) {
    if (options.discard_slot == m->slot) continue;
    if (best == nullptr || Fresher(*m, *best)) best = m;
  }
  return best;
}

bool InHistory(const MemberView& of, const Uuid& generation) {
  if (generation == kNoGeneration) return false;
  return std::find(of.history.begin(), of.history.end(), generation) != of.history.end();
}

// --- Per-slot rules ---------------------------------------------------------------------------

struct Context {
  Context(const MemberView& f, const AssemblyOptions& o)
      : freshest(f),
        options(o),
        name(Cat({"the freshest superblock (slot ", to_string(f.slot), ", event ",
                  to_string(f.event), ")"})),
        generation(FormatUuid(f.generation)) {}

  const MemberView& freshest;
  const AssemblyOptions& options;
  const std::string name;        // "the freshest superblock (slot 0, event 42)"
  const std::string generation;  // its generation, formatted once
};

// "<rule>: <parts...>", the reason an operator sees.
SlotVerdict Verdict(SlotRole role, Rule rule, std::initializer_list<std::string_view> parts) {
  size_t size = RuleName(rule).size() + 2;
  for (std::string_view p : parts)
    size += p.size();
  std::string reason;
  reason.reserve(size);
  reason += RuleName(rule);
  reason += ": ";
  for (std::string_view p : parts)
    reason += p;
  return {role, rule, std::move(reason)};
}

SlotState FreshestState(const Context& c, uint32_t slot) {
  return c.freshest.slot_states[slot];
}

// md's events_cleared rule: the maps cover what a slot missed only if they were not cleared
// after it stopped receiving writes.
SlotVerdict StaleBy(Rule rule, uint64_t stale_point, const Context& c, std::string_view why) {
  const uint64_t map_epoch = c.freshest.map_epoch;
  if (stale_point != 0 && map_epoch <= stale_point) {
    return Verdict(SlotRole::kStaleResync, rule,
                   {why, "; the missed-write maps were last clear at event ", to_string(map_epoch),
                    ", so a bitmap resync"});
  }
  return Verdict(SlotRole::kStaleRebuild, rule,
                 {why, "; the missed-write maps were cleared at event ", to_string(map_epoch),
                  ", after it, so a full rebuild"});
}

// Rule "marked-stale": the freshest superblock's word on the slot is final.
SlotVerdict MarkedStale(const MemberView& m, const Context& c) {
  const std::string_view state = SlotStateName(FreshestState(c, m.slot));
  const uint64_t since = c.freshest.stale_since[m.slot];
  if (since == 0) {
    return Verdict(SlotRole::kStaleRebuild, Rule::kMarkedStale,
                   {c.name, " marks it ", state, " with no stale-since event, so a full rebuild"});
  }
  return StaleBy(Rule::kMarkedStale, since, c,
                 Cat({c.name, " marks it ", state, " since event ", to_string(since)}));
}

// Rule "older-generation": a generation the freshest superblock has moved on from. The freshest
// still marks the slot active, so the update that started the new generation never reached it;
// when that is all it missed (one event behind), the maps since its last event cover its data.
SlotVerdict OlderGeneration(const MemberView& m, const Context& c) {
  const std::string why = Cat({"generation ", FormatUuid(m.generation), " is in the history of ",
                               c.name, ", generation ", c.generation});
  if (m.event + 1 < c.freshest.event) {
    return Verdict(SlotRole::kStaleRebuild, Rule::kOlderGeneration,
                   {why, "; event ", to_string(m.event),
                    " is more than one behind, so a full "
                    "rebuild"});
  }
  return StaleBy(Rule::kOlderGeneration, m.event + 1, c, why);
}

// Rule "behind": same generation but superblock updates missed without a demotion; nothing
// recorded which writes it missed.
SlotVerdict Behind(const MemberView& m, const Context& c) {
  return Verdict(SlotRole::kStaleRebuild, Rule::kBehind,
                 {"event ", to_string(m.event), " is more than one behind ", c.name,
                  " in the same generation; what it missed is recorded nowhere, so a full "
                  "rebuild"});
}

SlotVerdict SplitBrain(const MemberView& m, const Context& c) {
  if (InHistory(m, c.freshest.generation)) {
    return Verdict(SlotRole::kRefused, Rule::kSplitBrain,
                   {"generation ", FormatUuid(m.generation), " descends from generation ",
                    c.generation, " of ", c.name, ", yet its superblock is older (ownership epoch ",
                    to_string(m.ownership_epoch), ", event ", to_string(m.event), ")"});
  }
  return Verdict(SlotRole::kRefused, Rule::kSplitBrain,
                 {"generation ", FormatUuid(m.generation), " diverged from generation ",
                  c.generation, " of ", c.name});
}

SlotVerdict NotOwner(const MemberView& m, const Context& c) {
  return Verdict(SlotRole::kRefused, Rule::kNotOwner,
                 {"member ", FormatUuid(m.member_uuid), " does not own slot ", to_string(m.slot),
                  "; ", c.name, " gives it to member ", FormatUuid(c.freshest.slot_members[m.slot]),
                  " (a replaced member)"});
}

// The rules for a reachable member, in order: owner, split brain, the freshest's state of the
// slot, generation, event.
SlotVerdict ReachableSlot(const MemberView& m, const Context& c) {
  const MemberView& f = c.freshest;
  if (f.slot_members[m.slot] != m.member_uuid) return NotOwner(m, c);
  const bool same = m.generation == f.generation;
  if (!same && !InHistory(f, m.generation)) return SplitBrain(m, c);
  const SlotState state = FreshestState(c, m.slot);
  if (state == SlotState::kSpare) {
    return Verdict(SlotRole::kSpare, Rule::kSpare, {c.name, " marks it spare"});
  }
  if (state != SlotState::kActive) return MarkedStale(m, c);
  if (!same) return OlderGeneration(m, c);
  if (m.event + 1 < f.event) return Behind(m, c);
  return Verdict(SlotRole::kCurrent, Rule::kCurrent,
                 {"generation ", c.generation, ", event ", to_string(m.event), ", as ", c.name});
}

SlotVerdict MissingSlot(uint32_t slot, const Context& c) {
  const SlotState state = FreshestState(c, slot);
  if (state != SlotState::kActive) {
    return Verdict(SlotRole::kMissing, Rule::kMissingStale,
                   {c.name, " already marks it ", SlotStateName(state)});
  }
  if (c.options.allow_degraded) {
    return Verdict(SlotRole::kMissing, Rule::kMissingCurrent,
                   {"current in ", c.name,
                    "; recorded stale in a new generation "
                    "(--allow-degraded)"});
  }
  return Verdict(SlotRole::kMissing, Rule::kMissingCurrent,
                 {"current in ", c.name, "; serving without it needs --allow-degraded"});
}

SlotVerdict Discarded(uint32_t slot) {
  return Verdict(SlotRole::kRebuilding, Rule::kDiscarded,
                 {"--discard ", to_string(slot),
                  ": rebuilt in full from the current copies, its data never merged"});
}

// --- Refusals, in order of precedence ----------------------------------------------------------

bool AnyWithRule(const std::vector<SlotVerdict>& slots, Rule rule) {
  return std::any_of(slots.begin(), slots.end(),
                     [rule](const SlotVerdict& v) { return v.rule == rule; });
}

std::vector<uint32_t> SlotsWithRule(const std::vector<SlotVerdict>& slots, Rule rule) {
  std::vector<uint32_t> out;
  for (uint32_t s = 0; s < slots.size(); ++s)
    if (slots[s].rule == rule) out.push_back(s);
  return out;
}

std::string SlotList(const std::vector<uint32_t>& slots) {
  std::string text = slots.size() == 1 ? "slot " : "slots ";
  for (size_t i = 0; i < slots.size(); ++i)
    text += (i == 0 ? "" : ", ") + to_string(slots[i]);
  return text;
}

Status RefuseNotOwner(const std::vector<SlotVerdict>& slots) {
  if (!AnyWithRule(slots, Rule::kNotOwner)) return Status::Ok();
  const std::vector<uint32_t> refused = SlotsWithRule(slots, Rule::kNotOwner);
  if (refused.empty()) return Status::Ok();
  return Status::Invalid("slot " + to_string(refused[0]) + ": " + slots[refused[0]].reason);
}

// Which side of a split brain is current is the operator's choice, so neither side is.
void RefuseFreshestSide(std::vector<SlotVerdict>& slots, const Context& c) {
  for (SlotVerdict& v : slots) {
    if (v.role != SlotRole::kCurrent) continue;
    v = Verdict(SlotRole::kRefused, Rule::kSplitBrain,
                {"on the side of slot ", to_string(c.freshest.slot), ", generation ", c.generation,
                 "; --discard decides which side is current"});
  }
}

// Rule "split-brain": names the freshest and the lowest diverged slot.
Status RefuseSplitBrain(std::vector<SlotVerdict>& slots, std::span<const MemberView* const> sorted,
                        const Context& c) {
  if (!AnyWithRule(slots, Rule::kSplitBrain)) return Status::Ok();
  const std::vector<uint32_t> diverged = SlotsWithRule(slots, Rule::kSplitBrain);
  if (diverged.empty()) return Status::Ok();
  RefuseFreshestSide(slots, c);
  const MemberView& freshest = c.freshest;
  const MemberView* other = nullptr;
  for (const MemberView* m : sorted)
    if (m->slot == diverged[0]) other = m;
  const MemberView* a = other->slot < freshest.slot ? other : &freshest;
  const MemberView* b = a == other ? &freshest : other;
  return Status::Invalid("split brain: slot " + to_string(a->slot) + " generation " +
                         FormatUuid(a->generation) + " and slot " + to_string(b->slot) +
                         " generation " + FormatUuid(b->generation) +
                         " diverged; resolve with --discard SLOT");
}

bool HasCurrent(const std::vector<SlotVerdict>& slots, uint32_t set, uint32_t copies) {
  for (uint32_t s = set * copies; s < (set + 1) * copies; ++s)
    if (slots[s].role == SlotRole::kCurrent) return true;
  return false;
}

// Rule "set": every set needs a current copy; a stale copy alone is never served.
Status RefuseSetWithoutCurrent(const std::vector<SlotVerdict>& slots, uint32_t copies) {
  for (uint32_t set = 0; set * copies < slots.size(); ++set) {
    if (HasCurrent(slots, set, copies)) continue;
    std::string roles;
    for (uint32_t s = set * copies; s < (set + 1) * copies; ++s) {
      roles += (roles.empty() ? "slot " : ", slot ") + to_string(s) + " " +
               std::string(SlotRoleName(slots[s].role));
    }
    return Status::Invalid("set " + to_string(set) + " has no current copy (" + roles +
                           "): its data is stale or lost, so the volume is not served");
  }
  return Status::Ok();
}

Status RefuseMissingCurrent(const std::vector<SlotVerdict>& slots, const Context& c) {
  if (c.options.allow_degraded || !AnyWithRule(slots, Rule::kMissingCurrent)) return Status::Ok();
  const std::vector<uint32_t> missing = SlotsWithRule(slots, Rule::kMissingCurrent);
  if (missing.empty()) return Status::Ok();
  return Status::Invalid(SlotList(missing) + " missing but current in " + c.name +
                         ": start the missing members, or give --allow-degraded to serve "
                         "without them (they become stale)");
}

// --- New generation ---------------------------------------------------------------------------

void NoteNewGeneration(const Context& c, AssemblyDecision* d) {
  if (c.options.discard_slot) {
    d->new_generation = true;
    d->new_generation_reason = "slot " + to_string(*c.options.discard_slot) + " is discarded";
    return;
  }
  std::vector<uint32_t> dropped;
  for (uint32_t s = 0; s < d->slots.size(); ++s) {
    if (FreshestState(c, s) == SlotState::kActive && d->slots[s].role != SlotRole::kCurrent) {
      dropped.push_back(s);
    }
  }
  if (dropped.empty()) return;
  d->new_generation = true;
  d->new_generation_reason = SlotList(dropped) + " current in " + c.name + " but not now";
}

std::vector<const MemberView*> SortedBySlot(std::span<const MemberView> members) {
  std::vector<const MemberView*> sorted;
  for (const MemberView& m : members)
    sorted.push_back(&m);
  std::stable_sort(sorted.begin(), sorted.end(),
                   [](const MemberView* a, const MemberView* b) { return a->slot < b->slot; });
  return sorted;
}

std::vector<SlotVerdict> Verdicts(std::span<const MemberView* const> sorted, const Context& c) {
  std::vector<SlotVerdict> slots(c.freshest.member_count);
  std::array<bool, kMaxSlots> seen{};
  for (const MemberView* m : sorted) {
    seen[m->slot] = true;
    if (c.options.discard_slot != m->slot) slots[m->slot] = ReachableSlot(*m, c);
  }
  for (uint32_t s = 0; s < slots.size(); ++s) {
    if (c.options.discard_slot == s) {
      slots[s] = Discarded(s);
    } else if (!seen[s]) {
      slots[s] = MissingSlot(s, c);
    }
  }
  return slots;
}

// Only the discarded member was given: nothing says what the other slots hold.
AssemblyDecision NothingLeft(uint32_t count, uint32_t discarded) {
  AssemblyDecision d;
  d.slots.resize(count);
  for (uint32_t s = 0; s < count; ++s) {
    d.slots[s] = s == discarded ? Discarded(s)
                                : Verdict(SlotRole::kMissing, Rule::kMissingCurrent,
                                          {"no superblock other than the discarded one"});
  }
  d.status = Status::Invalid("--discard " + to_string(discarded) +
                             " leaves no member to assemble the volume from");
  return d;
}

}  // namespace

AssemblyDecision DecideAssembly(std::span<const MemberView> members,
                                const AssemblyOptions& options) {
  AssemblyDecision d;
  const std::vector<const MemberView*> sorted = SortedBySlot(members);
  d.status = CheckConsistent(sorted, options);
  if (!d.status.ok()) return d;
  const MemberView* freshest = Freshest(sorted, options);
  if (freshest == nullptr) return NothingLeft(sorted.front()->member_count, *options.discard_slot);
  const Context c{*freshest, options};
  d.freshest_slot = freshest->slot;
  d.slots = Verdicts(sorted, c);
  d.status = RefuseNotOwner(d.slots);
  if (d.status.ok()) d.status = RefuseSplitBrain(d.slots, sorted, c);
  if (d.status.ok()) d.status = RefuseSetWithoutCurrent(d.slots, freshest->copies);
  if (d.status.ok()) d.status = RefuseMissingCurrent(d.slots, c);
  if (d.status.ok()) NoteNewGeneration(c, &d);
  return d;
}

std::string_view SlotStateName(SlotState state) {
  switch (state) {
    case SlotState::kUnused:
      return "unused";
    case SlotState::kActive:
      return "active";
    case SlotState::kFailed:
      return "failed";
    case SlotState::kMissing:
      return "missing";
    case SlotState::kStale:
      return "stale";
    case SlotState::kRebuilding:
      return "rebuilding";
    case SlotState::kSpare:
      return "spare";
    case SlotState::kResyncing:
      return "resyncing";
  }
  return "unknown";
}

std::string_view SlotRoleName(SlotRole role) {
  switch (role) {
    case SlotRole::kCurrent:
      return "current";
    case SlotRole::kStaleResync:
      return "stale (bitmap resync)";
    case SlotRole::kStaleRebuild:
      return "stale (full rebuild)";
    case SlotRole::kRebuilding:
      return "rebuilding";
    case SlotRole::kMissing:
      return "missing";
    case SlotRole::kSpare:
      return "spare";
    case SlotRole::kRefused:
      return "refused";
  }
  return "unknown";
}

std::string_view RuleName(Rule rule) {
  switch (rule) {
    case Rule::kCurrent:
      return "current";
    case Rule::kMarkedStale:
      return "marked-stale";
    case Rule::kOlderGeneration:
      return "older-generation";
    case Rule::kBehind:
      return "behind";
    case Rule::kDiscarded:
      return "discard";
    case Rule::kMissingCurrent:
      return "missing-current";
    case Rule::kMissingStale:
      return "missing-stale";
    case Rule::kSpare:
      return "spare";
    case Rule::kNotOwner:
      return "not-owner";
    case Rule::kSplitBrain:
      return "split-brain";
  }
  return "unknown";
}

}  // namespace dst::integrity::redundancy
