// Helpers for the staging log's unit tests: a formatted log on a fake device.
#pragma once

#include <doctest/doctest.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "aggregator/stagelog/log_device.h"
#include "aggregator/stagelog/log_replay.h"
#include "aggregator/stagelog/log_writer.h"

namespace dst::stagelog::testing {

inline Uuid MakeUuid(uint8_t first) {
  Uuid u;
  for (size_t i = 0; i < u.size(); ++i)
    u[i] = static_cast<uint8_t>(first + i);
  return u;
}

inline const Uuid kVolume = MakeUuid(0xa0);

// `ring` bytes of ring after the two superblock slots.
inline std::unique_ptr<FakeLogDevice> NewDevice(uint64_t ring = kMinRingSize,
                                                LogMode mode = LogMode::kWriteBack) {
  auto device = std::make_unique<FakeLogDevice>(kRingOffset + ring);
  FormatOptions options;
  options.volume_uuid = kVolume;
  options.log_uuid = MakeUuid(0xb0);
  options.now = 1000;
  options.mode = mode;
  REQUIRE(FormatLog(*device, options).ok());
  return device;
}

// A clock that ticks one nanosecond per call, from 2000.
// Called from the log thread and the loop alike, as the real clock is.
inline LogClock TickingClock() {
  auto now = std::make_shared<std::atomic<uint64_t>>(2000);
  return [now] { return (*now)++; };
}

inline ReplayedLog MustReplay(LogDevice& device) {
  ReplayedLog log;
  const Status st = ReplayLog(device, kVolume, &log);
  REQUIRE_MESSAGE(st.ok(), st.message());
  return log;
}

inline std::unique_ptr<LogWriter> MustOpen(LogDevice& device) {
  std::unique_ptr<LogWriter> writer;
  const Status st = LogWriter::Open(&device, MustReplay(device), TickingClock(), &writer);
  REQUIRE_MESSAGE(st.ok(), st.message());
  return writer;
}

// `size` bytes, each (seed + i) mod 251.
inline std::vector<uint8_t> Pattern(size_t size, uint8_t seed) {
  std::vector<uint8_t> out(size);
  for (size_t i = 0; i < size; ++i)
    out[i] = static_cast<uint8_t>((seed + i) % 251);
  return out;
}

}  // namespace dst::stagelog::testing
