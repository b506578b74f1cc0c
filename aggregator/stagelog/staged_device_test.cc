#include "aggregator/stagelog/staged_device.h"

#include <doctest/doctest.h>
#include <algorithm>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <memory>
#include <optional>
#include <random>
#include <vector>

#include "aggregator/stagelog/test_log.h"
#include "aggregator/stagelog/test_staged.h"
#include "aggregator/volume/test_member.h"
#include "aggregator/volume/volume.h"
#include "common/run_until.h"

namespace dst::stagelog::staged_device_test {
namespace {

using testing::Pattern;
using volume::MemberOp;

constexpr uint64_t kVolumeSize = 1 << 20;

// A one-member linear volume on an in-memory member, served through a log on a fake device.
struct Fixture : testing::StagedFixtureBase {
  std::chrono::milliseconds retain{0};
  bool real_clock = false;  // record times from the system clock, for the retention window

  explicit Fixture(uint64_t ring = 1 << 20)
      : StagedFixtureBase(kVolumeSize, testing::NewDevice(ring)) {
    Reopen();
  }
  Fixture(uint64_t ring, std::chrono::milliseconds retain_for)
      : StagedFixtureBase(kVolumeSize, testing::NewDevice(ring)),
        retain(retain_for),
        real_clock(true) {
    Reopen();
  }

  // A new StagedDevice over what the log device holds now (replayed), not started.
  void Reopen() {
    std::unique_ptr<volume::Volume> inner = NewVolume();
    StagedOptions options;
    options.path = "test.log";
    options.clock = real_clock ? SystemClockNanos : testing::TickingClock();
    options.retain = retain;
    options.retry_min = std::chrono::milliseconds(1);
    options.retry_max = std::chrono::milliseconds(4);
    const Status s =
        StagedDevice::Open(io, std::move(inner), log, testing::MustReplay(*log), options, &staged);
    REQUIRE_MESSAGE(s.ok(), s.message());
  }

  // Runs the loop until every one of `results` (from StartWrite) has arrived; true if each is 0.
  bool AllSucceed(const std::vector<std::shared_ptr<std::optional<int>>>& results) {
    Run([&] {
      return std::all_of(results.begin(), results.end(),
                         [](const auto& r) { return r->has_value(); });
    });
    return std::all_of(results.begin(), results.end(), [](const auto& r) { return **r == 0; });
  }

  // Issues a write; the result lands in the returned slot once acknowledged.
  std::shared_ptr<std::optional<int>> StartWrite(uint64_t offset, const std::vector<uint8_t>& d) {
    auto result = std::make_shared<std::optional<int>>();
    staged->Write(offset, d.size(), d.data(), false, [result](int err) { *result = err; });
    return result;
  }
  int Write(uint64_t offset, const std::vector<uint8_t>& data) {
    auto result = StartWrite(offset, data);
    Run([&] { return result->has_value(); });
    return **result;
  }
  int Zero(uint64_t offset, uint64_t length) {
    std::optional<int> result;
    staged->Zero(offset, length, false, false, false, [&result](int err) { result = err; });
    Run([&] { return result.has_value(); });
    return *result;
  }
  std::vector<uint8_t> Read(uint64_t offset, uint64_t length) {
    return ReadFrom(*staged, offset, length);
  }
  std::vector<uint8_t> ReadFrom(volume::BlockDevice& device, uint64_t offset, uint64_t length) {
    std::vector<uint8_t> out(length, 0xee);
    REQUIRE(TryRead(device, offset, out) == 0);
    return out;
  }
  int TryRead(volume::BlockDevice& device, uint64_t offset, std::vector<uint8_t>& out) {
    std::optional<int> result;
    device.Read(offset, out.size(), out.data(),
                [&result](int err, std::vector<volume::ByteRange>) { result = err; });
    Run([&] { return result.has_value(); });
    return *result;
  }
  std::shared_ptr<volume::BlockDevice> Snapshot(const std::string& point) {
    std::shared_ptr<volume::BlockDevice> snapshot;
    const Status s = staged->OpenSnapshot(point, &snapshot);
    REQUIRE_MESSAGE(s.ok(), s.message());
    return snapshot;
  }
  // Runs the loop for `d` whatever happens.
  void RunFor(std::chrono::milliseconds d) {
    RunUntil(
        io, [] { return false; }, d);
  }
  void DestageAll() {
    staged->Start();
    Run([&] { return staged->destaged_sequence() == staged->head_sequence(); });
  }
  std::vector<uint8_t> MemberBytes(uint64_t offset, uint64_t length) const {
    return {member.bytes.begin() + static_cast<std::ptrdiff_t>(offset),
            member.bytes.begin() + static_cast<std::ptrdiff_t>(offset + length)};
  }
};

TEST_CASE("a write is acknowledged once its record is synced, and reads see it before destage") {
  Fixture f;
  const uint64_t syncs = f.log->syncs();
  const auto data = Pattern(8192, 3);
  CHECK(f.Write(4096, data) == 0);
  CHECK(f.log->syncs() == syncs + 1);
  CHECK(f.log->unsynced_writes() == 0);
  CHECK(f.member.Count(MemberOp::kWrite) == 0);  // not destaged: the destager is not started
  CHECK(f.Read(4096, 8192) == data);
  // A read across the log's piece and the member's bytes around it.
  std::memset(f.member.bytes.data(), 0x5a, 4096);
  const auto mixed = f.Read(0, 16384);
  CHECK(std::vector<uint8_t>(mixed.begin(), mixed.begin() + 4096) ==
        std::vector<uint8_t>(4096, 0x5a));
  CHECK(std::vector<uint8_t>(mixed.begin() + 4096, mixed.begin() + 12288) == data);
  CHECK(std::vector<uint8_t>(mixed.begin() + 12288, mixed.end()) == std::vector<uint8_t>(4096, 0));
  // Zeroes read as zeros from the log too.
  CHECK(f.Zero(4096, 4096) == 0);
  CHECK(f.Read(4096, 4096) == std::vector<uint8_t>(4096, 0));
}

TEST_CASE("concurrent writes share one sync") {
  Fixture f;
  const uint64_t syncs = f.log->syncs();
  std::vector<std::shared_ptr<std::optional<int>>> results;
  for (uint64_t i = 0; i < 8; ++i)
    results.push_back(f.StartWrite(i * 4096, Pattern(4096, static_cast<uint8_t>(i))));
  CHECK(f.AllSucceed(results));
  // The first write's batch, then the seven that queued behind it.
  CHECK(f.log->syncs() == syncs + 2);
  CHECK(f.staged->head_sequence() == 8);
}

TEST_CASE("the destager applies records in sequence order, then flushes and records D") {
  Fixture f;
  f.member.record_writes_up_to = 1 << 20;
  const auto a = Pattern(8192, 1);
  const auto b = Pattern(4096, 2);
  CHECK(f.Write(0, a) == 0);
  CHECK(f.Write(4096, b) == 0);  // over the second half of a
  CHECK(f.Zero(65536, 4096) == 0);
  std::memset(f.member.bytes.data() + 65536, 0x77, 4096);
  f.DestageAll();
  CHECK(f.staged->destaged_sequence() == 3);
  const auto writes = f.member.OpsIn(MemberOp::kWrite, 0, kVolumeSize, 0);
  REQUIRE(writes.size() >= 2);
  CHECK(writes[0].written == a);
  CHECK(writes[1].written == b);
  CHECK(writes[0].completed < writes[1].submitted);  // one record at a time
  const auto flushes = f.member.OpsIn(MemberOp::kFlush, 0, 0, 0);
  REQUIRE(flushes.size() >= 1);
  CHECK(flushes[0].submitted > writes.back().completed);  // D only after the flush
  auto expect = a;
  std::memcpy(expect.data() + 4096, b.data(), 4096);
  CHECK(f.MemberBytes(0, 8192) == expect);
  CHECK(f.MemberBytes(65536, 4096) == std::vector<uint8_t>(4096, 0));
  CHECK(f.Read(0, 8192) == expect);
  // D is durable in the log's superblock.
  CHECK(testing::MustReplay(*f.log).destaged_sequence() == 3);
  const volume::DeviceState state = f.staged->State();
  REQUIRE(state.staging_log);
  CHECK(state.staging_log->state == "normal");
  CHECK(state.staging_log->head_sequence == 3);
  CHECK(state.staging_log->destaged_sequence == 3);
  CHECK(state.staging_log->pending_bytes == 0);
}

TEST_CASE("while a record is being destaged, reads see the newest data") {
  Fixture f;
  f.member.HoldAll();  // the destager's writes stay in flight
  const auto a = Pattern(8192, 1);
  CHECK(f.Write(0, a) == 0);
  f.staged->Start();
  f.Run([&] { return f.member.held() == 1; });
  const auto b = Pattern(4096, 2);
  CHECK(f.Write(0, b) == 0);
  auto expect = a;
  std::memcpy(expect.data(), b.data(), 4096);
  CHECK(f.Read(0, 8192) == expect);
  f.member.StopHolding();
  f.Run([&] { return f.staged->destaged_sequence() == f.staged->head_sequence(); });
  CHECK(f.Read(0, 8192) == expect);
  CHECK(f.MemberBytes(0, 8192) == expect);
}

TEST_CASE("a write longer than one record holds is split into records acknowledged together") {
  Fixture f(kMinRingSize);
  const uint64_t most = f.staged->max_write_length();
  const auto data = Pattern(2 * most + 512, 9);
  f.staged->Start();
  CHECK(f.Write(0, data) == 0);
  CHECK(f.Read(0, data.size()) == data);
  f.Run([&] { return f.staged->destaged_sequence() == f.staged->head_sequence(); });
  CHECK(f.MemberBytes(0, data.size()) == data);
}

TEST_CASE("member errors: the destager retries, writes wait while the log is full, never fail") {
  Fixture f(kMinRingSize);
  f.member.faults.push_back({MemberOp::kWrite, 0, UINT64_MAX, EIO, false, -1});
  f.staged->Start();
  std::vector<std::shared_ptr<std::optional<int>>> results;
  for (uint64_t i = 0; i < 12; ++i)
    results.push_back(f.StartWrite(i * 8192, Pattern(8192, static_cast<uint8_t>(i))));
  f.Run([&] { return f.staged->log_full(); });
  CHECK(f.staged->State().staging_log->state == "log_full");
  size_t acked = 0;
  for (const auto& r : results)
    acked += r->has_value() ? 1 : 0;
  CHECK(acked < results.size());
  f.member.faults.clear();  // the member is back
  CHECK(f.AllSucceed(results));
  f.Run([&] { return f.staged->destaged_sequence() == f.staged->head_sequence(); });
  CHECK_FALSE(f.staged->log_full());
  for (uint64_t i = 0; i < 12; ++i)
    CHECK(f.MemberBytes(i * 8192, 8192) == Pattern(8192, static_cast<uint8_t>(i)));
}

TEST_CASE("after a crash every acknowledged write reads back and a torn tail is dropped") {
  for (uint64_t seed = 1; seed <= 8; ++seed) {
    CAPTURE(seed);
    Fixture f;
    std::vector<std::vector<uint8_t>> acked;
    for (uint64_t i = 0; i < 4; ++i) {
      acked.push_back(Pattern(12288, static_cast<uint8_t>(seed * 10 + i)));
      REQUIRE(f.Write(i * 16384, acked.back()) == 0);
    }
    // This one is appended but its sync fails: not acknowledged, maybe torn by the crash.
    f.log->FailNextSync();
    const auto lost = Pattern(12288, 200);
    CHECK(f.Write(4 * 16384, lost) == EIO);
    f.Close();
    std::mt19937_64 rng(seed);
    f.log->Crash(FakeLogDevice::CrashMode::kRandom, &rng);
    f.Reopen();
    for (uint64_t i = 0; i < 4; ++i)
      CHECK(f.Read(i * 16384, 12288) == acked[i]);
    const auto tail = f.Read(4 * 16384, 12288);
    CHECK((tail == lost || tail == std::vector<uint8_t>(12288, 0)));
    f.DestageAll();
    for (uint64_t i = 0; i < 4; ++i)
      CHECK(f.MemberBytes(i * 16384, 12288) == acked[i]);
    // New writes continue after the replayed ones.
    const auto more = Pattern(4096, 7);
    CHECK(f.Write(0, more) == 0);
    CHECK(f.Read(0, 4096) == more);
  }
}

TEST_CASE("snapshot points: sequences and RFC 3339 UTC times, formatted back exactly") {
  SnapshotPoint p;
  REQUIRE(ParseSnapshotPoint("42", &p).ok());
  CHECK(!p.is_time);
  CHECK(p.sequence == 42);
  REQUIRE(ParseSnapshotPoint("2026-12-03T15:00:00Z", &p).ok());
  CHECK(p.is_time);
  CHECK(p.time == 1796310000ull * 1000000000ull);
  REQUIRE(ParseSnapshotPoint("2026-12-03T15:00:00.5Z", &p).ok());
  CHECK(p.time == 1796310000ull * 1000000000ull + 500000000ull);
  CHECK(FormatRecordTime(p.time) == "2026-12-03T15:00:00.500000000Z");
  SnapshotPoint back;
  REQUIRE(ParseSnapshotPoint(FormatRecordTime(p.time + 7), &back).ok());
  CHECK(back.time == p.time + 7);
  for (const char* bad :
       {"", "x", "-1", "12a", "2026-12-03", "2026-12-03T15:00:00", "2026-12-03T15:00:00+01:00",
        "2026-02-30T00:00:00Z", "2026-12-03T15:00:00.Z", "99999999999999999999999"}) {
    CAPTURE(bad);
    const Status s = ParseSnapshotPoint(bad, &p);
    CHECK(s.err() == EINVAL);
    CHECK(s.message().find("is neither a sequence number nor a UTC time") != std::string::npos);
  }
}

TEST_CASE("a snapshot reads the volume as of its sequence and pins it against the destager") {
  Fixture f;
  const auto a = Pattern(8192, 1);
  const auto b = Pattern(4096, 2);
  const auto c = Pattern(8192, 3);
  CHECK(f.Write(0, a) == 0);      // 1
  CHECK(f.Write(4096, b) == 0);   // 2
  CHECK(f.Zero(0, 4096) == 0);    // 3
  CHECK(f.Write(16384, c) == 0);  // 4
  auto as_of_2 = a;
  std::memcpy(as_of_2.data() + 4096, b.data(), 4096);
  std::memset(f.member.bytes.data() + 16384, 0x5a, 8192);  // what the members hold there
  const std::vector<uint8_t> old_tail(8192, 0x5a);
  {
    const auto s0 = f.Snapshot("0");
    CHECK(f.ReadFrom(*s0, 0, 8192) == std::vector<uint8_t>(8192, 0));
    CHECK(s0->capabilities().read_only);
    std::optional<int> written;
    s0->Write(0, 4096, a.data(), false, [&written](int err) { written = err; });
    f.Run([&] { return written.has_value(); });
    CHECK(*written == EPERM);
  }
  CHECK(f.ReadFrom(*f.Snapshot("1"), 0, 8192) == a);
  CHECK(f.ReadFrom(*f.Snapshot("2"), 0, 8192) == as_of_2);
  CHECK(f.ReadFrom(*f.Snapshot("2"), 16384, 8192) == old_tail);
  auto as_of_3 = as_of_2;
  std::memset(as_of_3.data(), 0, 4096);
  CHECK(f.ReadFrom(*f.Snapshot("3"), 0, 8192) == as_of_3);
  CHECK(f.ReadFrom(*f.Snapshot("4"), 16384, 8192) == c);

  // An open snapshot of 2: the destager applies records 1 and 2 only, and D stops there.
  auto pinned = f.Snapshot("2");
  f.staged->Start();
  f.Run([&] { return f.staged->destaged_sequence() == 2; });
  f.RunFor(std::chrono::milliseconds(50));
  CHECK(f.staged->destaged_sequence() == 2);
  CHECK(f.MemberBytes(0, 8192) == as_of_2);
  CHECK(f.ReadFrom(*pinned, 0, 8192) == as_of_2);
  CHECK(f.ReadFrom(*pinned, 16384, 8192) == old_tail);
  CHECK(f.staged->Snapshots().oldest_sequence == 2);
  CHECK(f.staged->Snapshots().newest_sequence == 4);
  // Closed: the rest goes, and points below D are refused.
  pinned.reset();
  f.Run([&] { return f.staged->destaged_sequence() == 4; });
  std::shared_ptr<volume::BlockDevice> refused;
  const Status s = f.staged->OpenSnapshot("3", &refused);
  CHECK(s.err() == EINVAL);
  CHECK(s.message() == "sequence 3 is not available: volume v has snapshots of sequences 4 to 4");
  CHECK(f.staged->OpenSnapshot("5", &refused).err() == EINVAL);
  CHECK(f.staged->OpenSnapshot("yesterday", &refused).err() == EINVAL);
  CHECK(f.ReadFrom(*f.Snapshot("4"), 16384, 8192) == c);
}

TEST_CASE("a snapshot point given as a time is the last write at or before it") {
  Fixture f;
  CHECK(f.Write(0, Pattern(4096, 1)) == 0);
  const uint64_t t1 = *f.staged->Snapshots().newest_time;
  CHECK(f.Write(0, Pattern(4096, 2)) == 0);
  const uint64_t t2 = *f.staged->Snapshots().newest_time;
  REQUIRE(t2 > t1);
  uint64_t sequence = 0;
  REQUIRE(f.staged->ResolvePoint({true, 0, t1}, &sequence).ok());
  CHECK(sequence == 1);
  REQUIRE(f.staged->ResolvePoint({true, 0, t2 - 1}, &sequence).ok());
  CHECK(sequence == 1);
  REQUIRE(f.staged->ResolvePoint({true, 0, t2 + 1000}, &sequence).ok());
  CHECK(sequence == 2);
  CHECK(f.ReadFrom(*f.Snapshot(FormatRecordTime(t1)), 0, 4096) == Pattern(4096, 1));
  // Before every record, with the time of D (the formatted log) unknown: refused.
  const Status s = f.staged->ResolvePoint({true, 0, t1 - 1}, &sequence);
  CHECK(s.err() == EINVAL);
  CHECK(s.message().find("no snapshot at or before") == 0);
}

TEST_CASE("retention: records younger than --log-retain stay in the log") {
  Fixture f(1 << 20, std::chrono::milliseconds(300));
  const auto start = std::chrono::steady_clock::now();
  CHECK(f.Write(0, Pattern(4096, 1)) == 0);
  f.staged->Start();
  f.RunFor(std::chrono::milliseconds(100));
  CHECK(f.staged->destaged_sequence() == 0);
  CHECK(f.member.Count(MemberOp::kWrite) == 0);
  CHECK(f.ReadFrom(*f.Snapshot("0"), 0, 4096) == std::vector<uint8_t>(4096, 0));
  f.Run([&] { return f.staged->destaged_sequence() == 1; });
  CHECK(std::chrono::steady_clock::now() - start >= std::chrono::milliseconds(290));
  CHECK(f.MemberBytes(0, 4096) == Pattern(4096, 1));
}

TEST_CASE("retention: a full log destages inside the window, and a passed snapshot reads EIO") {
  Fixture f(kMinRingSize, std::chrono::hours(1));
  CHECK(f.Write(0, Pattern(8192, 100)) == 0);
  auto pinned = f.Snapshot("1");
  f.staged->Start();
  std::vector<std::shared_ptr<std::optional<int>>> results;
  for (uint64_t i = 0; i < 12; ++i)
    results.push_back(f.StartWrite(i * 8192, Pattern(8192, static_cast<uint8_t>(i))));
  f.Run([&] {
    for (const auto& r : results)
      if (!r->has_value()) return false;
    return true;
  });
  for (const auto& r : results)
    CHECK(**r == 0);
  CHECK(f.staged->destaged_sequence() > 1);
  std::vector<uint8_t> out(8192);
  CHECK(f.TryRead(*pinned, 0, out) == EIO);
  // Once there is room, the window holds the rest again.
  f.Run([&] { return !f.staged->log_full(); });
  f.RunFor(std::chrono::milliseconds(30));  // what was applied meanwhile is recorded
  const uint64_t destaged = f.staged->destaged_sequence();
  f.RunFor(std::chrono::milliseconds(50));
  CHECK(f.staged->destaged_sequence() == destaged);
  CHECK(destaged < f.staged->head_sequence());
  for (uint64_t i = 0; i < 12; ++i)
    CHECK(f.Read(i * 8192, 8192) == Pattern(8192, static_cast<uint8_t>(i)));
}

}  // namespace
}  // namespace dst::stagelog::staged_device_test
