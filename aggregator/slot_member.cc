#include "aggregator/slot_member.h"

#include <algorithm>
#include <utility>

namespace dst::aggregator {

std::unique_ptr<member::NbdMember> NewSlotMember(control::Server& server, const SlotVolume& volume,
                                                 uint32_t slot, const std::string& uri,
                                                 unsigned connections,
                                                 const member::MemberTls& tls) {
  member::TransactionOptions options = volume.options.at(slot);
  if (const control::MemberRef* ref = SlotMemberRef(server, volume.volume_index, slot))
    options.fence_epoch_base = std::max(options.fence_epoch_base, ref->member->epoch());
  auto member = std::make_unique<member::NbdMember>(server.io, uri, connections, options, tls);
  member->OnSuperseded([v = volume.volume, slot] { v->Supersede(slot); });
  return member;
}

void InstallSlotMember(control::Server& server, const std::string& volume, size_t volume_index,
                       uint32_t slot, std::unique_ptr<member::NbdMember> member) {
  member::NbdMember* fresh = member.get();
  if (control::MemberRef* ref = SlotMemberRef(server, volume_index, slot)) {
    auto old = std::find_if(server.members.begin(), server.members.end(),
                            [&](const auto& m) { return m.get() == ref->member; });
    if (old != server.members.end()) {
      server.retired_members.push_back(std::move(*old));
      *old = std::move(member);
    } else {
      server.members.push_back(std::move(member));
    }
    ref->member = fresh;
    return;
  }
  server.members.push_back(std::move(member));
  auto& refs = server.member_refs;
  auto at = std::find_if(refs.begin(), refs.end(), [&](const control::MemberRef& r) {
    return r.volume_index > volume_index || (r.volume_index == volume_index && r.index > slot);
  });
  refs.insert(at, {volume, volume_index, slot, fresh, {}});
}

control::MemberRef* SlotMemberRef(control::Server& server, size_t volume_index, uint32_t slot) {
  for (control::MemberRef& ref : server.member_refs)
    if (ref.volume_index == volume_index && ref.index == slot) return &ref;
  return nullptr;
}

}  // namespace dst::aggregator
