// The control socket's snapshot command (docs/operations.md, "Snapshots"):
//   snapshot list VOLUME [json]   the snapshot points a volume served through a staging log has
//                                 now: every sequence from the oldest to the newest, each
//                                 exported read-only as VOLUME@SEQ (docs/staging-log.md)
//
// Threading: the event loop's thread (the control socket's handler runs there).
#pragma once

#include <string>
#include <vector>

#include "aggregator/control/runtime.h"
#include "aggregator/volume/device_state.h"

namespace dst::control {

// "oldest: 12 at 2026-12-03T15:00:00.123456789Z\nnewest: 40 at ...\nretain: 10m\n"
std::string SnapshotListText(const std::string& volume, const volume::StagingLogState& log);
// {"volume": "v", "oldest": {"sequence": 12, "time": "2026-..."}, "newest": {...},
// "retain_ms": 600000}; "time" is null where unknown.
std::string SnapshotListJson(const std::string& volume, const volume::StagingLogState& log);

// Whether words[0] is "snapshot".
bool IsSnapshotCommand(const std::vector<std::string>& words);
std::string AnswerSnapshotCommand(const Server& server, const std::vector<std::string>& words);

}  // namespace dst::control
