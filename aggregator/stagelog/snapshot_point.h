// Snapshot points (docs/staging-log.md, "Snapshots"): what follows the '@' of an export name
// VOLUME@POINT. A point is a record sequence ("1234") or an RFC 3339 UTC time
// ("2026-12-03T15:00:00Z", with optional fractional seconds: the last write acknowledged at or
// before it). Pure functions.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "common/status.h"

namespace dst::stagelog {

struct SnapshotPoint {
  bool is_time = false;
  uint64_t sequence = 0;  // when !is_time
  uint64_t time = 0;      // when is_time: ns since the epoch, as record headers hold it
};

// EINVAL with what is wrong for anything that is neither form.
Status ParseSnapshotPoint(std::string_view text, SnapshotPoint* out);

// "2026-12-03T15:00:00.123456789Z": ns since the epoch, exact, so that ParseSnapshotPoint of it
// gives the same time back.
std::string FormatRecordTime(uint64_t time_ns);

}  // namespace dst::stagelog
