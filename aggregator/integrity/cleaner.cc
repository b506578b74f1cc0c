#include "aggregator/integrity/cleaner.h"

#include <cstring>
#include <memory>
#include <utility>

#include "common/log.h"

namespace dst::integrity {

RegionActivity::RegionActivity(const std::vector<uint64_t>& regions) {
  for (uint64_t count : regions)
    by_member_.emplace_back(count);
}

void RegionActivity::Begin(const RegionRef& r) {
  Counts& c = at(r);
  ++c.active;
  ++c.started;
}

void RegionActivity::End(const RegionRef& r) {
  --at(r).active;
}

Cleaner::Cleaner(asio::io_context& io, std::string volume, std::chrono::milliseconds interval,
                 TableCache& table, WriteIntent& intent, const RegionActivity& activity,
                 FlushFn flush)
    : volume_(std::move(volume)),
      interval_(interval),
      table_(table),
      intent_(intent),
      activity_(activity),
      flush_(std::move(flush)),
      timer_(io) {}

void Cleaner::Start() {
  stopped_ = false;
  Schedule();
}

void Cleaner::Stop() {
  stopped_ = true;
  timer_.cancel();
}

void Cleaner::Schedule() {
  timer_.expires_after(interval_);
  timer_.async_wait([this, alive = lifetime_.Watch()](const asio::error_code& ec) {
    if (ec || alive.expired() || stopped_) return;
    if (table_.dirty_pages() == 0 && intent_.set_count() == 0) return Schedule();
    Clean([this, alive](int) {
      if (!alive.expired() && !stopped_) Schedule();
    });
  });
}

void Cleaner::Clean(Done done) {
  if (cleaning_) {
    queued_.push_back(std::move(done));
    return;
  }
  cleaning_ = true;
  current_ = std::move(done);
  Pass();
}

void Cleaner::Pass() {
  auto candidates = std::make_shared<std::vector<Candidate>>(IdleRegions());
  table_.WriteBack([this, alive = lifetime_.Watch(), candidates](int err) {
    if (alive.expired()) return;
    if (err != 0) return Finish(err);
    // Data and checksums of the idle regions are both on the members now;
    // after the flush they are durable and the bits may go.
    flush_([this, alive, candidates](int flush_err) {
      if (alive.expired()) return;
      if (flush_err != 0) return Finish(flush_err);
      ClearStillIdle(*candidates);
      intent_.Sync([this, alive](int sync_err) {
        if (!alive.expired()) Finish(sync_err);
      });
    });
  });
}

std::vector<Cleaner::Candidate> Cleaner::IdleRegions() const {
  std::vector<Candidate> candidates;
  for (uint32_t m = 0; m < activity_.members(); ++m)
    for (uint64_t r : intent_.SetRegions(m))
      if (!activity_.busy({m, r})) candidates.push_back({{m, r}, activity_.started({m, r})});
  return candidates;
}

void Cleaner::ClearStillIdle(const std::vector<Candidate>& candidates) {
  for (const Candidate& c : candidates)
    if (!activity_.busy(c.region) && activity_.started(c.region) == c.started)
      intent_.Clear(c.region.member, c.region.region);
}

void Cleaner::Finish(int err) {
  if (err != 0)
    LOG_ERROR("volume %s: writing checksums back: %s", volume_.c_str(), std::strerror(err));
  cleaning_ = false;
  auto queued = std::move(queued_);
  const LifetimeWatch alive = lifetime_.Watch();
  std::exchange(current_, nullptr)(err);
  if (alive.expired()) return;
  for (Done& done : queued)
    Clean(std::move(done));
}

}  // namespace dst::integrity
