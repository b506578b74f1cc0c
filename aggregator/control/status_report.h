// StatusReport: one snapshot of a running aggregator, what `dst-aggregator status` prints, the
// metrics endpoint serves and the stats lines log: every volume with its client traffic (and,
// for checksummed volumes, its integrity state and counters), and every member with its
// transaction counters. Each kind of thing has one list of named numbers (TrafficCounters,
// MemberCounters, and the volume's own IntegrityState::counters), and every output prints that
// list under those names: a table and JSON for `status`, the Prometheus text format, and the
// "name=value" stats lines.
//
// Threading: plain values and pure functions.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "aggregator/member/member_stats.h"
#include "aggregator/server/volume_traffic.h"
#include "aggregator/volume/device_state.h"

namespace dst::control {

struct VolumeStatus {
  std::string name;
  std::string layout;  // "linear", "stripe"
  uint64_t size = 0;
  size_t members = 0;
  server::TrafficCounts traffic;
  std::optional<volume::IntegrityState> integrity;    // checksummed volumes only
  std::optional<volume::RedundancyState> redundancy;  // mirror and raid10 only
  // Checksummed volumes: background jobs (resync, rebuild, scrub) and their rate limits.
  std::vector<volume::JobState> jobs;
  uint64_t rate_min = 0;  // bytes per second; 0 for raw volumes
  uint64_t rate_max = 0;
  std::optional<volume::StagingLogState> staging_log;  // volumes served through a staging log
};

struct MemberStatus {
  std::string volume;
  size_t index = 0;
  std::string uri;
  std::string state;  // connecting, ready, reconnecting, failed
  bool fenced = false;
  uint64_t epoch = 0;
  size_t connections = 0;
  size_t in_flight = 0;
  size_t waiting = 0;
  member::MemberCounters counters;
  // Blocks on this member that failed verification twice (checksummed volumes).
  uint64_t checksum_errors = 0;
};

struct StatusReport {
  uint64_t uptime_seconds = 0;
  // Clients of the volumes connected on each event loop, by loop (0: the home loop).
  std::vector<uint64_t> loop_clients;
  std::vector<VolumeStatus> volumes;
  std::vector<MemberStatus> members;
};

// The named numbers of a volume's client traffic and of a member, in the order shown.
std::vector<volume::NamedCounter> TrafficCounters(const server::TrafficCounts& traffic);
std::vector<volume::NamedCounter> MemberCounters(const MemberStatus& member);

std::string StatusToJson(const StatusReport& report);
std::string StatusToText(const StatusReport& report);
// Prometheus text exposition format 0.0.4: counters end in _total, labels are
// volume, member (the index) and uri.
std::string StatusToPrometheus(const StatusReport& report);
// The stats lines' "name=value" fields: "state=ready fenced=yes epoch=1 ... latency_max_us=9"
// for a member, "state=dirty checksum=crc32c checksum_errors=0 ..." for a checksummed volume.
std::string MemberStatsFields(const MemberStatus& member);
std::string IntegrityStatsFields(const volume::IntegrityState& integrity);
// A staging log's numbers (used_bytes, ring_size, head_sequence, destaged_sequence,
// pending_bytes, pending_age_ms), and its stats line fields "state=normal mode=write-back
// used_bytes=...".
std::vector<volume::NamedCounter> StagingLogCounters(const volume::StagingLogState& log);
std::string StagingLogStatsFields(const volume::StagingLogState& log);
// "generation=0123abcd sets=[UU][U_]": the health of a mirror or raid10 volume for its stats line.
std::string RedundancyStatsFields(const volume::RedundancyState& redundancy);
// "state=stale stale_since=12 repaired_blocks=0 read_failovers=3": one slot, for its stats line.
std::string SlotStatsFields(const volume::SlotState& slot);
// "scrub running 25% (1 MiB of 4 MiB) at 3 MiB/s, ETA 1 s: scrubbing vol0 (repair, 0 errors)".
std::string JobText(const volume::JobState& job);
// The first 8 hex digits of a generation UUID, as the table shows it.
std::string ShortGeneration(const std::string& generation);

}  // namespace dst::control
