// What the staged-device unit tests share: a one-member linear volume on an
// in-memory member, served through a log on a fake device. Each suite opens
// the StagedDevice with its own options.
#pragma once

#include <doctest/doctest.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>

#include "aggregator/stagelog/staged_device.h"
#include "aggregator/stagelog/test_log.h"
#include "aggregator/volume/test_member.h"
#include "aggregator/volume/volume.h"
#include "common/run_until.h"

namespace dst::stagelog::testing {

struct StagedFixtureBase {
  static constexpr auto kTimeout = std::chrono::seconds(10);

  asio::io_context io;
  volume::testing::MemMember member;
  std::shared_ptr<FakeLogDevice> log;
  std::unique_ptr<StagedDevice> staged;

  StagedFixtureBase(uint64_t volume_size, std::shared_ptr<FakeLogDevice> device)
      : member{io, "m0", volume_size, {.can_flush = true, .can_trim = true, .can_zero = true}},
        log(std::move(device)) {}
  ~StagedFixtureBase() { Close(); }

  // The volume a StagedDevice wraps: the one member, linear.
  std::unique_ptr<volume::Volume> NewVolume() {
    std::unique_ptr<volume::Volume> inner;
    REQUIRE(
        volume::Volume::Create("v", "", volume::LayoutKind::kLinear, 0, {&member}, &inner).ok());
    return inner;
  }

  void Close() {
    if (!staged) return;
    std::optional<int> closed;
    staged->Close([&closed](int err) { closed = err; });
    Run([&] { return closed.has_value(); });
    staged.reset();
  }

  template <typename Pred>
  void Run(Pred done) {
    REQUIRE(RunUntil(io, done, kTimeout) == RunResult::kDone);
  }
};

}  // namespace dst::stagelog::testing
