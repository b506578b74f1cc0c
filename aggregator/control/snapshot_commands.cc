#include "aggregator/control/snapshot_commands.h"

#include <chrono>

#include "aggregator/control/control_commands.h"
#include "aggregator/integrity/superblock_json.h"
#include "aggregator/stagelog/snapshot_point.h"
#include "common/duration.h"

namespace dst::control {

namespace {

const char kSnapshotUsage[] = "error: usage: snapshot list VOLUME [json]\n";

std::string TimeText(const std::optional<uint64_t>& time) {
  return time ? stagelog::FormatRecordTime(*time) : "an unknown time";
}

std::string TimeJson(const std::optional<uint64_t>& time) {
  return time ? integrity::JsonQuote(stagelog::FormatRecordTime(*time)) : "null";
}

// Write-through logs keep every point their size allows (docs/staging-log.md §10).
std::string RetainText(const volume::StagingLogState& log) {
  if (log.mode == "write-through") return "as far back as the log's size reaches (write-through)";
  if (log.retain_ms == 0) return "0 (destaged at once)";
  return FormatDuration(std::chrono::milliseconds(log.retain_ms));
}

}  // namespace

std::string SnapshotListText(const std::string& volume, const volume::StagingLogState& log) {
  return "volume " + volume + ": snapshots " + volume + "@" + std::to_string(log.oldest_point) +
         " to " + volume + "@" + std::to_string(log.newest_point) +
         "\noldest: " + std::to_string(log.oldest_point) + " at " +
         TimeText(log.oldest_point_time) + "\nnewest: " + std::to_string(log.newest_point) +
         " at " + TimeText(log.newest_point_time) + "\nretain: " + RetainText(log) + "\n";
}

std::string SnapshotListJson(const std::string& volume, const volume::StagingLogState& log) {
  return "{\"volume\": " + integrity::JsonQuote(volume) +
         ", \"oldest\": {\"sequence\": " + std::to_string(log.oldest_point) +
         ", \"time\": " + TimeJson(log.oldest_point_time) +
         "}, \"newest\": {\"sequence\": " + std::to_string(log.newest_point) +
         ", \"time\": " + TimeJson(log.newest_point_time) +
         "}, \"retain_ms\": " + std::to_string(log.retain_ms) + "}\n";
}

bool IsSnapshotCommand(const std::vector<std::string>& words) {
  return !words.empty() && words[0] == "snapshot";
}

std::string AnswerSnapshotCommand(const Server& server, const std::vector<std::string>& words) {
  const bool json = words.size() == 4 && words[3] == "json";
  if (words.size() < 3 || words[1] != "list" || (words.size() == 4 && !json) || words.size() > 4)
    return kSnapshotUsage;
  for (const auto& v : server.volumes) {
    if (v->name() != words[2]) continue;
    const volume::DeviceState state = v->State();
    if (!state.staging_log)
      return Error("volume " + words[2] + " has no staging log (serve --log): no snapshots");
    return json ? SnapshotListJson(words[2], *state.staging_log)
                : SnapshotListText(words[2], *state.staging_log);
  }
  return Error("no volume named '" + words[2] + "'");
}

}  // namespace dst::control
