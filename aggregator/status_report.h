// StatusReport: one snapshot of a running aggregator, what `dst-aggregator
// status` prints and the metrics endpoint serves: every volume with its
// client traffic (and, for checksummed volumes, its integrity counters), and
// every member with its transaction counters. Built on the event loop;
// rendered as a table for people, JSON for programs, and the Prometheus text
// format for monitoring.
//
// Threading: plain values and pure functions.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "aggregator/integrity/checksummed_volume.h"
#include "aggregator/member/member_stats.h"
#include "aggregator/server/volume_traffic.h"

namespace dst::aggregator {

struct IntegrityStatus {
  std::string state;  // "dirty" or "clean", as the superblocks say
  std::string algorithm;
  integrity::IntegrityCounters counters;
  uint64_t dirty_regions = 0;
  uint64_t table_pages = 0;
  uint64_t table_dirty = 0;
};

struct VolumeStatus {
  std::string name;
  std::string layout;  // "linear", "stripe"
  bool checksummed = false;
  uint64_t size = 0;
  size_t members = 0;
  server::VolumeTraffic traffic;
  std::optional<IntegrityStatus> integrity;
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
  member::MemberCounters counters;
  // Blocks on this member that failed verification twice (checksummed volumes).
  uint64_t checksum_errors = 0;
};

struct StatusReport {
  uint64_t uptime_seconds = 0;
  std::vector<VolumeStatus> volumes;
  std::vector<MemberStatus> members;
};

std::string StatusToJson(const StatusReport& report);
std::string StatusToText(const StatusReport& report);
// Prometheus text exposition format 0.0.4: counters end in _total, labels are
// volume, member (the index) and uri.
std::string StatusToPrometheus(const StatusReport& report);

}  // namespace dst::aggregator
