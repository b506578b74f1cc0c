// DeviceState: what a block device tells about itself for `dst-aggregator status`, the metrics
// endpoint and the stats lines (aggregator/control/): its layout and member count, and for a
// checksummed device its integrity state and counters. The device names its counters once, in
// the order they are shown; every output prints that one list under those names.
//
// Threading: plain values, taken on the event-loop thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "aggregator/volume/layout.h"

namespace dst::volume {

// One named number.
struct NamedCounter {
  const char* name;  // JSON key, stats-line key and metric name stem: "checksum_errors"
  uint64_t value;
  bool monotonic;    // only grows (a Prometheus counter); else it goes up and down (a gauge)
  const char* help;  // one line, for the metric's HELP
};

struct IntegrityState {
  std::string state;     // what the superblocks record: "dirty" while serving, or "clean"
  std::string checksum;  // the algorithm: "crc32c", "blake2b", "blake2b-keyed"
  std::vector<NamedCounter> counters;
  std::vector<uint64_t> member_checksum_errors;  // checksum_errors by member index
};

// One slot (member) of a mirror or raid10 volume.
struct SlotState {
  std::string uri;               // empty when the member is missing
  std::string state;             // as the superblocks record it: "active", "stale", ...
  uint64_t stale_since = 0;      // event at which it stopped receiving writes; 0 while active
  uint64_t repaired_blocks = 0;  // its blocks rewritten from another copy after a mismatch
  uint64_t read_failovers = 0;   // its reads served by another copy after an error or mismatch
  bool write_mostly = false;     // read only when no other copy can serve
};

struct RedundancyState {
  uint32_t copies = 0;
  std::string generation;               // the current generation UUID
  std::vector<std::string> set_health;  // per set, md's notation: "UU", "U_"
  std::vector<SlotState> slots;         // by member index
};

// One background job of a checksummed device (resync, rebuild, scrub).
struct JobState {
  std::string kind;    // "resync", "rebuild", "scrub"
  std::string what;    // "rebuilding vol0 slot 1"
  std::string state;   // "running", "waiting" (another job goes first), "paused"
  std::string detail;  // why this job, e.g. a resync's "partial: ..." or "full: ..." reason
  uint64_t done_bytes = 0;
  uint64_t total_bytes = 0;
  uint64_t bytes_per_second = 0;        // over the last few seconds; 0 when not running
  std::optional<uint64_t> eta_seconds;  // while running at a known rate
};

// A device served through a staging log (aggregator/stagelog/staged_device.h).
struct StagingLogState {
  std::string path;
  std::string state;        // "normal", "log_full" (writes wait for space), "failed"
  uint64_t used_bytes = 0;  // of the ring, records and padding still held
  uint64_t ring_size = 0;
  uint64_t head_sequence = 0;      // the newest durable record
  uint64_t destaged_sequence = 0;  // D: records up to it are on the members
  uint64_t pending_bytes = 0;      // log bytes of the records after D
  uint64_t pending_age_ms = 0;     // how long the oldest record after D has waited; 0: none
  // Snapshots (docs/staging-log.md, "Snapshots"): every acknowledged sequence from the oldest to
  // the newest point can be exported read-only as VOLUME@SEQ. Times in ns since the epoch, absent
  // where the log no longer holds the record.
  uint64_t retain_ms = 0;  // --log-retain
  uint64_t oldest_point = 0;
  std::optional<uint64_t> oldest_point_time = std::nullopt;
  uint64_t newest_point = 0;
  std::optional<uint64_t> newest_point_time = std::nullopt;
  // "write-back" or "write-through" (--log-mode): in write-through D is the head and nothing is
  // pending.
  std::string mode = "write-back";
};

struct DeviceState {
  LayoutKind layout = LayoutKind::kLinear;
  size_t members = 0;
  std::optional<IntegrityState> integrity;    // checksummed devices only
  std::optional<RedundancyState> redundancy;  // mirror and raid10 only
  std::vector<JobState> jobs;                 // checksummed devices: background jobs, by priority
  // Checksummed devices: the background jobs' rate limits, bytes per second; 0 otherwise.
  uint64_t background_rate_min = 0;
  uint64_t background_rate_max = 0;
  std::optional<StagingLogState> staging_log;  // devices served through a staging log
};

}  // namespace dst::volume
