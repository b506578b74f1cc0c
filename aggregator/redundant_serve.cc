#include "aggregator/redundant_serve.h"

#include <algorithm>
#include <array>
#include <cerrno>
#include <tuple>

#include "aggregator/integrity/member_metadata.h"
#include "aggregator/integrity/redundant_view.h"
#include "aggregator/volume/layout.h"
#include "common/checksum.h"
#include "common/log.h"
#include "common/units.h"

namespace dst::aggregator {

namespace {

using integrity::redundancy::SlotRole;

// The current slot whose superblock is freshest (ownership epoch, then event; the lowest slot on
// a tie).
uint32_t FreshestCurrent(const RedundantPlan& plan) {
  std::optional<uint32_t> best;
  for (uint32_t s = 0; s < plan.slots.size(); ++s) {
    if (!plan.slots[s] || plan.decision.slots[s].role != SlotRole::kCurrent) continue;
    const integrity::Superblock& sb = plan.slots[s]->superblock;
    const integrity::Superblock* b = best ? &plan.slots[*best]->superblock : nullptr;
    if (!b || std::tie(sb.ownership_epoch, sb.event) > std::tie(b->ownership_epoch, b->event))
      best = s;
  }
  return best.value_or(0);
}

void LogSlots(const RedundantPlan& plan) {
  const uint32_t copies = plan.slots.empty() || !plan.slots[plan.freshest]
                              ? 1
                              : plan.slots[plan.freshest]->superblock.copies;
  for (uint32_t s = 0; s < plan.decision.slots.size(); ++s) {
    const auto& verdict = plan.decision.slots[s];
    const std::string uri = plan.slots[s] ? plan.slots[s]->uri : std::string("(missing)");
    LOG_INFO("volume %s: slot %u (set %u copy %u) %s: %s: %s", plan.name.c_str(), s, s / copies,
             s % copies, uri.c_str(),
             std::string(integrity::redundancy::SlotRoleName(verdict.role)).c_str(),
             verdict.reason.c_str());
  }
}

}  // namespace

Status PlanRedundantAssembly(const VolumeConfig& v, std::vector<integrity::MemberSuperblock> found,
                             std::vector<UnreadMember> unread, RedundantPlan* plan) {
  plan->name = found.front().superblock.name;
  plan->unread = std::move(unread);
  for (const UnreadMember& m : plan->unread)
    LOG_WARNING("volume %s: member %s cannot be read, counted missing: %s", plan->name.c_str(),
                m.uri.c_str(), m.why.message().c_str());
  DST_RETURN_IF_ERROR(integrity::PlaceRedundantMembers(std::move(found), &plan->slots));
  std::vector<integrity::redundancy::MemberView> views;
  std::vector<std::optional<integrity::Superblock>> read(plan->slots.size());
  for (size_t s = 0; s < plan->slots.size(); ++s) {
    if (!plan->slots[s]) continue;
    views.push_back(integrity::MemberViewOf(plan->slots[s]->superblock));
    read[s] = plan->slots[s]->superblock;
  }
  integrity::redundancy::AssemblyOptions options;
  options.allow_degraded = v.allow_degraded;
  options.discard_slot = v.discard_slot;
  plan->decision = integrity::redundancy::DecideAssembly(views, options);
  if (plan->decision.slots.size() == plan->slots.size()) {
    plan->freshest = FreshestCurrent(*plan);
    LogSlots(*plan);
  }
  if (!plan->decision.status.ok()) return plan->decision.status;
  plan->view = integrity::ServingView(read, plan->freshest, plan->decision, integrity::NewUuid());
  const integrity::Superblock& sb = plan->view;
  const size_t present = std::count_if(plan->slots.begin(), plan->slots.end(),
                                       [](const auto& m) { return m.has_value(); });
  LOG_INFO(
      "volume %s: assembled %s from %zu of %u members (uuid %s, %u copies, generation %s, "
      "checksum %s, %s blocks)",
      sb.name.c_str(), std::string(volume::LayoutKindName(sb.layout)).c_str(), present,
      sb.member_count, integrity::FormatUuid(sb.volume_uuid).c_str(), sb.copies,
      integrity::FormatUuid(sb.generation).c_str(), integrity::ProtectionText(sb).c_str(),
      FormatSize(sb.geometry.params.block_size).c_str());
  if (plan->decision.new_generation)
    LOG_WARNING("volume %s: new generation %s: %s", sb.name.c_str(),
                integrity::FormatUuid(sb.generation).c_str(),
                plan->decision.new_generation_reason.c_str());
  return Status::Ok();
}

member::TransactionOptions RedundantMemberOptions(const ServeConfig& config,
                                                  const RedundantPlan& plan, uint32_t slot) {
  member::TransactionOptions options = config.transactions;
  if (options.retry_window.count() == 0 || options.retry_window > config.degrade_after)
    options.retry_window = config.degrade_after;
  if (!config.fencing_given) options.fencing = member::FencingMode::kRequire;
  options.fence_session = FenceSession(plan.view.volume_uuid, slot);
  options.fence_epoch_base = plan.view.ownership_epoch << 32;
  return options;
}

std::string FenceSession(const integrity::Uuid& volume_uuid, uint32_t slot) {
  std::array<uint8_t, 20> input{};
  std::copy(volume_uuid.begin(), volume_uuid.end(), input.begin());
  for (int i = 0; i < 4; ++i)
    input[16 + i] = static_cast<uint8_t>(slot >> (24 - 8 * i));
  Checksummer::Result hasher = Checksummer::Create(ChecksumAlgorithm::kBlake2b);
  return hasher.checksummer->Compute(input).ToHex().substr(0, 32);
}

const integrity::Uuid& RunOwnerUuid() {
  static const integrity::Uuid owner = integrity::NewUuid();
  return owner;
}

Status ClaimOwnership(const member::MemberTls& tls, const integrity::Uuid& owner,
                      RedundantPlan* plan, uint64_t min_epoch) {
  integrity::Superblock& view = plan->view;
  if (view.ownership_epoch >= integrity::kMaxOwnershipEpoch)
    return Status::Error(EOVERFLOW, "volume " + plan->name + ": ownership epoch " +
                                        std::to_string(view.ownership_epoch) +
                                        " is the format's largest");
  if (min_epoch > integrity::kMaxOwnershipEpoch)
    return Status::Error(EOVERFLOW, "volume " + plan->name + ": ownership epoch " +
                                        std::to_string(min_epoch) +
                                        " (the cluster lock's revision) is above the format's "
                                        "largest");
  for (const auto& m : plan->slots)
    if (m) view.event = std::max(view.event, m->superblock.event);
  ++view.event;
  view.ownership_epoch = std::max(view.ownership_epoch + 1, min_epoch);
  view.owner_uuid = owner;
  for (uint32_t s = 0; s < plan->slots.size(); ++s) {
    if (!plan->slots[s] || plan->decision.slots[s].role != SlotRole::kCurrent) continue;
    integrity::MemberSuperblock& m = *plan->slots[s];
    integrity::Superblock sb = view;
    sb.member_uuid = m.superblock.member_uuid;
    sb.member_index = m.superblock.member_index;
    sb.geometry.member_size = m.superblock.geometry.member_size;
    DST_RETURN_IF_ERROR(integrity::WriteSuperblock(m.uri, tls, sb)
                            .Wrap("volume " + plan->name + ": claiming ownership"));
    m.superblock = sb;
  }
  LOG_INFO("volume %s: ownership epoch %llu, owner %s", plan->name.c_str(),
           static_cast<unsigned long long>(view.ownership_epoch),
           integrity::FormatUuid(owner).c_str());
  return Status::Ok();
}

Status BuildRedundantVolume(asio::io_context& io, const RedundantPlan& plan,
                            std::span<volume::MemberTarget* const> targets,
                            std::span<const uint8_t> key, integrity::ChecksumOptions options,
                            bool auto_resync, std::unique_ptr<integrity::ChecksummedVolume>* out) {
  std::vector<integrity::RedundantSlot> slots(plan.slots.size());
  for (size_t s = 0; s < plan.slots.size(); ++s) {
    if (!plan.slots[s]) continue;
    slots[s].target = targets[s];
    slots[s].superblock = plan.slots[s]->superblock;
    // A copy that is not current starts out; CatchUp makes it a catching-up copy at Open.
    slots[s].role = plan.decision.slots[s].role == SlotRole::kCurrent ? volume::CopyRole::kCurrent
                                                                      : volume::CopyRole::kOut;
  }
  DST_RETURN_IF_ERROR(integrity::ChecksummedVolume::CreateRedundant(io, std::move(slots), plan.view,
                                                                    key, std::move(options), out)
                          .Wrap("volume " + plan.name));
  for (uint32_t s = 0; s < plan.slots.size(); ++s) {
    const auto& verdict = plan.decision.slots[s];
    const bool full =
        verdict.role == SlotRole::kStaleRebuild || verdict.role == SlotRole::kRebuilding;
    if (!plan.slots[s] || !(full || verdict.role == SlotRole::kStaleResync)) continue;
    // The operator failed it (member fail): it stays out until given a new export (member add).
    if (plan.view.member_states[s] == integrity::MemberState::kFailed) {
      LOG_WARNING(
          "volume %s: slot %u stays failed: not resynced (member add gives it a new export)",
          plan.name.c_str(), s);
      continue;
    }
    if (!auto_resync) {
      LOG_WARNING("volume %s: slot %u stays stale: not resynced (--no-auto-resync)",
                  plan.name.c_str(), s);
      continue;
    }
    (*out)->CatchUp(s, full, verdict.reason);
  }
  return Status::Ok();
}

}  // namespace dst::aggregator
