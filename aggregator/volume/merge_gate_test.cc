#include "aggregator/volume/merge_gate.h"

#include <atomic>
#include <thread>

#include <doctest/doctest.h>

namespace dst::volume {
namespace {

TEST_SUITE_BEGIN("merge_gate");

TEST_CASE("copies write on their own until the gate closes, and it drains") {
  MergeGate gate(3);
  CHECK(gate.Drained());
  REQUIRE(gate.Enter(1));
  REQUIRE(gate.Enter(2));
  REQUIRE(gate.Enter(2));
  gate.Close();
  CHECK(gate.closed());
  CHECK_FALSE(gate.Drained());  // three writes in flight
  CHECK_FALSE(gate.Enter(1));   // closed: to the home loop
  gate.Leave(1);
  gate.Leave(2);
  CHECK_FALSE(gate.Drained());
  gate.Leave(2);
  CHECK(gate.Drained());
  CHECK_FALSE(gate.Enter(2));
  CHECK(gate.Drained());  // a refused Enter leaves nothing counted
}

TEST_CASE("once closed and drained, no copy is ever let in again, across threads") {
  // A copy's loop enters and leaves as fast as it can while the home loop closes the gate: after
  // the home loop has seen it drained, the copy must not get in once more.
  MergeGate gate(2);
  std::atomic<bool> drained_seen{false};
  std::atomic<int> entered_after_drain{0};
  std::atomic<bool> stop{false};
  std::thread copy([&] {
    for (int i = 0; i < 1'000'000 && !stop.load(); ++i) {
      const bool drained_before = drained_seen.load();
      if (!gate.Enter(1)) continue;
      if (drained_before) entered_after_drain.fetch_add(1);
      gate.Leave(1);
    }
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  gate.Close();
  for (int i = 0; i < 1'000'000 && !gate.Drained(); ++i)
    std::this_thread::yield();
  const bool drained = gate.Drained();
  drained_seen.store(true);
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  stop.store(true);
  copy.join();
  CHECK(drained);
  CHECK(entered_after_drain.load() == 0);
}

TEST_SUITE_END();

}  // namespace
}  // namespace dst::volume
