// The cleaner of a checksummed volume (docs/integrity.md, "Crash
// consistency"): it keeps the set of write-intent bits, and so the work of
// recovery after a crash, small. A pass writes the dirty checksum table pages
// back, flushes the members, and clears the bits of the regions that no
// request changed meanwhile: their data and checksums are then durable and
// agree. The volume runs a pass every `interval` while anything is dirty, and
// a last one at Close().
//
// RegionActivity is what the request path tells the cleaner: which regions
// requests are changing now, and how many changes ever started in each, so
// that a region busy at any time during a pass keeps its bit.
//
// Contract: Clean() calls `done` exactly once, on the event loop, with 0 or
// the errno of the first step that failed (logged). A Clean() called while a
// pass runs starts a new pass after it: the running one may have begun before
// the caller's last writes. Stop() ends the timed passes; Clean() still works
// after it. A cleaner destroyed mid-pass drops the pass's `done`.
//
// Threading: the event-loop thread only.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <asio.hpp>

#include "aggregator/integrity/table_cache.h"
#include "aggregator/integrity/write_intent.h"
#include "common/lifetime.h"

namespace dst::integrity {

class RegionActivity {
 public:
  // `regions[m]`: how many regions member m has.
  explicit RegionActivity(const std::vector<uint64_t>& regions);

  // A request starts, or stops, changing region `r`.
  void Begin(const RegionRef& r);
  void End(const RegionRef& r);

  bool busy(const RegionRef& r) const { return at(r).active != 0; }
  // Changes of `r` started so far: equal at two times, with the region idle
  // at both, means nothing changed it in between.
  uint32_t started(const RegionRef& r) const { return at(r).started; }
  uint32_t members() const { return static_cast<uint32_t>(by_member_.size()); }

 private:
  struct Counts {
    uint32_t active = 0;
    uint32_t started = 0;
  };
  Counts& at(const RegionRef& r) { return by_member_[r.member][r.region]; }
  const Counts& at(const RegionRef& r) const { return by_member_[r.member][r.region]; }

  std::vector<std::vector<Counts>> by_member_;
};

class Cleaner {
 public:
  using Done = std::function<void(int err)>;
  // Flushes the members' data (the volume's FLUSH).
  using FlushFn = std::function<void(Done)>;

  // Everything given must outlive the cleaner; `volume` names it in log lines.
  Cleaner(asio::io_context& io, std::string volume, std::chrono::milliseconds interval,
          TableCache& table, WriteIntent& intent, const RegionActivity& activity, FlushFn flush);

  // Starts the timed passes.
  void Start();
  void Stop();
  void Clean(Done done);
  // A pass is under way.
  bool cleaning() const { return cleaning_; }

 private:
  struct Candidate {
    RegionRef region;
    uint32_t started;
  };

  void Schedule();
  void Pass();
  // Regions whose bit is set and that no request is changing now.
  std::vector<Candidate> IdleRegions() const;
  void ClearStillIdle(const std::vector<Candidate>& candidates);
  void Finish(int err);

  std::string volume_;
  std::chrono::milliseconds interval_;
  TableCache& table_;
  WriteIntent& intent_;
  const RegionActivity& activity_;
  FlushFn flush_;
  asio::steady_timer timer_;
  bool stopped_ = true;
  bool cleaning_ = false;
  Done current_;              // the running pass's caller
  std::vector<Done> queued_;  // Clean() calls made during the pass: one pass each, after it
  Lifetime lifetime_;         // last: expires first
};

}  // namespace dst::integrity
