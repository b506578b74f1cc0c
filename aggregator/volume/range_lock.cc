#include "aggregator/volume/range_lock.h"

#include <utility>

namespace dst::volume {

bool RangeLock::ConflictsWithHeld(const Range& range) const {
  for (const Range& h : held_)
    if (h.Conflicts(range)) return true;
  return false;
}

void RangeLock::Acquire(uint64_t first, uint64_t count, bool exclusive, Granted granted) {
  Range range{next_id_++, first, first + count, exclusive, std::move(granted)};
  bool blocked = ConflictsWithHeld(range);
  for (const Range& w : waiting_)
    blocked = blocked || w.Conflicts(range);  // first come, first served
  if (blocked) {
    waiting_.push_back(std::move(range));
    return;
  }
  Granted callback = std::move(range.granted);
  held_.push_back(std::move(range));
  callback(held_.back().id);
}

void RangeLock::Release(Id id) {
  for (auto it = held_.begin(); it != held_.end(); ++it) {
    if (it->id == id) {
      held_.erase(it);
      break;
    }
  }
  // Grant, in order, every waiter that conflicts neither with what is held
  // nor with an earlier waiter. Grants are collected first: a callback may
  // acquire or release again.
  Ranges grants;
  for (auto it = waiting_.begin(); it != waiting_.end();) {
    bool blocked = ConflictsWithHeld(*it);
    for (auto earlier = waiting_.begin(); !blocked && earlier != it; ++earlier)
      blocked = earlier->Conflicts(*it);
    if (blocked) {
      ++it;
      continue;
    }
    Range granted = std::move(*it);
    it = waiting_.erase(it);
    Granted callback = std::move(granted.granted);
    held_.push_back(granted);
    grants.push_back({granted.id, 0, 0, false, std::move(callback)});
  }
  for (Range& g : grants)
    g.granted(g.id);
}

}  // namespace dst::volume
