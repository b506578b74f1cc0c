// The key slots of an encrypted ChecksummedVolume (docs/encryption.md, "Key slots"): changed in
// every member's superblock by one update, one change at a time.
#include <algorithm>
#include <cerrno>
#include <utility>

#include "aggregator/integrity/checksummed_volume.h"
#include "common/key_slot.h"
#include "common/log.h"

namespace dst::integrity {

std::span<const uint8_t> ChecksummedVolume::master_key() const {
  return cipher_ ? cipher_->master_key() : std::span<const uint8_t>();
}

void ChecksummedVolume::SetKeySlot(uint32_t index, const KeySlotBytes& bytes, Done done) {
  const auto refuse = [this, &done](int err) { asio::post(io_, [err, done] { done(err); }); };
  if (!encrypted() || index >= kKeySlots) return refuse(EINVAL);
  if (key_slot_changing_) return refuse(EBUSY);
  const KeySlotBytes empty{};
  const bool last = bytes == empty &&
                    std::count_if(view_.key_slots.begin(), view_.key_slots.end(),
                                  [&empty](const KeySlotBytes& s) { return s != empty; }) == 1 &&
                    view_.key_slots[index] != empty;
  if (last) return refuse(EINVAL);  // nothing would open the volume any more
  key_slot_changing_ = true;
  auto finish = [this, alive = lifetime_.Watch(), index, done = std::move(done)](int err) {
    if (alive.expired()) return done(err);
    key_slot_changing_ = false;
    if (err == 0)
      LOG_INFO("volume %s: key slot %u %s", name().c_str(), index,
               view_.key_slots[index] == KeySlotBytes{} ? "emptied" : "written");
    done(err);
  };
  if (redundant()) {
    PendingUpdate update;
    update.done = std::move(finish);
    update.key_slot = std::make_pair(index, bytes);
    return QueueUpdate(std::move(update));
  }
  WriteSuperblocks(
      view_.state, [index, bytes](Superblock& sb) { sb.key_slots[index] = bytes; },
      std::move(finish));
}

}  // namespace dst::integrity
