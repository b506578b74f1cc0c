#include "aggregator/stagelog/log_replay.h"

#include <doctest/doctest.h>

#include <array>
#include <cerrno>
#include <chrono>
#include <map>
#include <random>
#include <vector>

#include "aggregator/stagelog/test_log.h"

namespace dst::stagelog::log_replay_test {
namespace {

using testing::MustOpen;
using testing::MustReplay;
using testing::NewDevice;
using testing::Pattern;

// Overwrites one byte of the device, durably.
void Corrupt(FakeLogDevice& device, uint64_t offset) {
  std::vector<uint8_t> byte(1);
  REQUIRE(device.Read(offset, byte).ok());
  byte[0] ^= 0x40;
  REQUIRE(device.Write(offset, byte).ok());
  REQUIRE(device.Sync().ok());
}

TEST_CASE("log replay: a torn tail record is dropped by its checksum") {
  auto device = NewDevice();
  auto writer = MustOpen(*device);
  ReplayedRecord second;
  REQUIRE(writer->Append(RecordKind::kWrite, 0, 4096, Pattern(4096, 1)).ok());
  REQUIRE(writer->Append(RecordKind::kWrite, 8192, 6000, Pattern(6000, 2), &second).ok());
  REQUIRE(writer->Commit().ok());

  SUBCASE("payload") {
    Corrupt(*device, second.payload_offset() + 5999);
    const ReplayedLog log = MustReplay(*device);
    CHECK(log.records.size() == 1);
    CHECK(log.next_sequence == 2);
    CHECK(log.head == second.position);
    CHECK(log.end == "record 2 at ring offset 8192: payload checksum mismatch: torn or corrupted");
  }
  SUBCASE("header") {
    Corrupt(*device, kRingOffset + second.position + 50);
    const ReplayedLog log = MustReplay(*device);
    CHECK(log.records.size() == 1);
    CHECK(log.end ==
          "record 2 at ring offset 8192: record header checksum mismatch: torn or corrupted");
  }
  SUBCASE("the bytes past the payload's length are not checked") {
    Corrupt(*device, second.payload_offset() + 6000);
    CHECK(MustReplay(*device).records.size() == 2);
  }
}

TEST_CASE("log replay: a whole record after a torn one is not taken: the log has no gaps") {
  auto device = NewDevice();
  auto writer = MustOpen(*device);
  REQUIRE(writer->Append(RecordKind::kWrite, 0, 4096, Pattern(4096, 1)).ok());
  REQUIRE(writer->Commit().ok());
  // Records 2 and 3 are written but not synced; the crash tears 2 and keeps 3 whole.
  ReplayedRecord second;
  REQUIRE(writer->Append(RecordKind::kWrite, 4096, 4096, Pattern(4096, 2), &second).ok());
  REQUIRE(writer->Append(RecordKind::kWrite, 8192, 4096, Pattern(4096, 3)).ok());
  REQUIRE(device->Write(second.payload_offset(), std::vector<uint8_t>(512, 0xee)).ok());
  device->Crash(FakeLogDevice::CrashMode::kKeepUnsynced);
  const ReplayedLog log = MustReplay(*device);
  CHECK(log.records.size() == 1);
  CHECK(log.next_sequence == 2);
  CHECK(log.head == 8192);
}

TEST_CASE("log replay: a stale record of the same sequence after a new one is refused") {
  auto device = NewDevice();
  {
    auto writer = MustOpen(*device);
    REQUIRE(writer->Append(RecordKind::kWrite, 0, 4096, Pattern(4096, 1)).ok());
    REQUIRE(writer->Commit().ok());
    ReplayedRecord second;
    REQUIRE(writer->Append(RecordKind::kWrite, 4096, 4096, Pattern(4096, 2), &second).ok());
    REQUIRE(writer->Append(RecordKind::kWrite, 8192, 4096, Pattern(4096, 3)).ok());
    REQUIRE(device->Write(second.payload_offset(), std::vector<uint8_t>(512, 0xee)).ok());
    device->Crash(FakeLogDevice::CrashMode::kKeepUnsynced);
  }
  {
    auto writer = MustOpen(*device);  // the tail is record 2, torn
    REQUIRE(writer->Append(RecordKind::kWrite, 4096, 4096, Pattern(4096, 7)).ok());
    REQUIRE(writer->Commit().ok());
  }
  // Old record 3 (session 1) now follows new record 2 (session 2): it verifies by sequence and
  // checksums, but its session ends the log.
  const ReplayedLog log = MustReplay(*device);
  REQUIRE(log.records.size() == 2);
  CHECK(log.records[1].header.session == 2);
  CHECK(log.end == "record 3 at ring offset 16384: session 1 is not between 2 and the log's 2");
}

TEST_CASE("log replay: a log that ends before its destaged sequence is damaged") {
  auto device = NewDevice();
  auto writer = MustOpen(*device);
  ReplayedRecord first;
  REQUIRE(writer->Append(RecordKind::kWrite, 0, 4096, Pattern(4096, 1), &first).ok());
  REQUIRE(writer->Append(RecordKind::kZero, 0, 4096, {}).ok());
  REQUIRE(writer->Commit().ok());
  REQUIRE(writer->SetDestaged(2).ok());
  CHECK(MustReplay(*device).destaged_sequence() == 2);
  Corrupt(*device, first.payload_offset());
  ReplayedLog log;
  const Status st = ReplayLog(*device, testing::kVolume, &log);
  CHECK(st.err() == EIO);
  CHECK(st.message() ==
        "staging log ends at sequence 0 before the destaged sequence 2 (record 1 at ring offset "
        "0: payload checksum mismatch: torn or corrupted): the log is damaged");
}

TEST_CASE("log replay: record D + 1 must be at the destaged position") {
  auto device = NewDevice();
  auto writer = MustOpen(*device);
  REQUIRE(writer->Append(RecordKind::kWrite, 0, 4096, Pattern(4096, 1)).ok());
  REQUIRE(writer->Append(RecordKind::kWrite, 0, 4096, Pattern(4096, 2)).ok());
  REQUIRE(writer->Commit().ok());
  REQUIRE(writer->SetDestaged(1).ok());
  LogSuperblock sb = writer->superblock();
  CHECK(sb.destaged_position == 8192);
  sb.destaged_position = 4096;
  ++sb.event;
  std::array<uint8_t, kSlotSize> slot;
  REQUIRE(EncodeSuperblock(sb, slot).ok());
  REQUIRE(device->Write(SlotOffset(NextSlot(sb.event)), slot).ok());
  REQUIRE(device->Sync().ok());
  ReplayedLog log;
  const Status st = ReplayLog(*device, testing::kVolume, &log);
  CHECK(st.err() == EIO);
  CHECK(st.message() ==
        "staging log record 2 is at ring offset 8192, not at the destaged position 4096: the log "
        "is damaged");
}

TEST_CASE("log replay: records of an earlier format of the device are never taken") {
  auto device = NewDevice();
  {
    auto writer = MustOpen(*device);
    REQUIRE(writer->Append(RecordKind::kWrite, 0, 4096, Pattern(4096, 1)).ok());
    REQUIRE(writer->Commit().ok());
  }
  FormatOptions options;
  options.volume_uuid = testing::kVolume;
  options.log_uuid = testing::MakeUuid(0xc0);
  REQUIRE(FormatLog(*device, options).ok());
  const ReplayedLog log = MustReplay(*device);
  CHECK(log.records.empty());
  CHECK(log.end ==
        "record 1 at ring offset 0: record of another log (b0b1b2b3b4b5b6b7b8b9babbbcbdbebf)");
}

TEST_CASE("log replay: a torn superblock update falls back to the previous one, still whole") {
  auto device = NewDevice();
  auto writer = MustOpen(*device);
  for (int i = 0; i < 3; ++i)
    REQUIRE(writer->Append(RecordKind::kWrite, 0, 4096, Pattern(4096, i)).ok());
  REQUIRE(writer->Commit().ok());
  REQUIRE(writer->SetDestaged(2).ok());
  const uint64_t event = writer->superblock().event;
  REQUIRE(writer->Release(2).ok());
  // The crash tore the release's superblock: nothing was written into the freed space yet.
  Corrupt(*device, SlotOffset(NextSlot(event + 1)) + 130);
  const ReplayedLog log = MustReplay(*device);
  CHECK(log.superblock.event == event);
  CHECK(log.superblock.oldest_sequence == 1);
  CHECK(log.destaged_sequence() == 2);
  CHECK(log.records.size() == 3);
}

// The model of what was appended: sequence -> volume offset and data (empty for a trim).
struct Appended {
  uint64_t offset;
  std::vector<uint8_t> data;
};

TEST_CASE("log replay: every committed record survives random crashes (fixed seed)") {
  const auto started = std::chrono::steady_clock::now();
  std::mt19937_64 rng(20261204);
  auto device = NewDevice(256 * 1024);
  std::map<uint64_t, Appended> appended;
  uint64_t checked = 0;
  uint64_t fulls = 0;
  uint64_t paddings = 0;
  for (int round = 0; round < 200; ++round) {
    auto writer = MustOpen(*device);
    const int ops = 5 + static_cast<int>(rng() % 30);
    for (int op = 0; op < ops; ++op) {
      const uint64_t roll = rng() % 10;
      if (roll < 6) {
        const size_t length = 1 + rng() % (3 * 4096 + 100);
        const uint64_t offset = (rng() % 1000) * 512;
        const auto data = Pattern(length, static_cast<uint8_t>(rng()));
        ReplayedRecord r;
        Status st = writer->Append(RecordKind::kWrite, offset, length, data, &r);
        if (st.err() == ENOSPC) {
          ++fulls;
          // What a destager would do: everything durable goes to the members, then its space.
          REQUIRE(writer->Commit().ok());
          REQUIRE(writer->SetDestaged(writer->durable_sequence()).ok());
          REQUIRE(writer->Release(writer->destaged_sequence()).ok());
          st = writer->Append(RecordKind::kWrite, offset, length, data, &r);
        }
        REQUIRE_MESSAGE(st.ok(), st.message());
        appended[r.header.sequence] = {offset, data};
      } else if (roll < 7) {
        ReplayedRecord r;
        const Status st = writer->Append(RecordKind::kTrim, 0, 4096, {}, &r);
        if (st.ok()) appended[r.header.sequence] = {0, {}};
      } else if (roll < 9) {
        REQUIRE(writer->Commit().ok());
      } else {
        REQUIRE(writer->Commit().ok());
        const uint64_t d = writer->destaged_sequence() +
                           rng() % (writer->durable_sequence() - writer->destaged_sequence() + 1);
        REQUIRE(writer->SetDestaged(d).ok());
        const uint64_t oldest = writer->oldest_sequence();
        if (d >= oldest) REQUIRE(writer->Release(oldest + rng() % (d + 1 - oldest)).ok());
      }
    }
    const uint64_t durable = writer->durable_sequence();
    const uint64_t destaged = writer->destaged_sequence();
    const uint64_t oldest = writer->oldest_sequence();
    writer.reset();
    device->Crash(FakeLogDevice::CrashMode::kRandom, &rng);

    const ReplayedLog log = MustReplay(*device);
    CHECK(log.destaged_sequence() == destaged);
    CHECK(log.superblock.oldest_sequence == oldest);
    REQUIRE(log.next_sequence > durable);  // every committed record is there
    for (const ReplayedRecord& r : log.records) {
      if (r.header.kind == RecordKind::kPadding) {
        ++paddings;
        continue;
      }
      const Appended& a = appended.at(r.header.sequence);
      CHECK(r.header.volume_offset == a.offset);
      std::vector<uint8_t> data;
      REQUIRE(ReadPayload(*device, r, &data).ok());
      if (r.header.kind == RecordKind::kWrite) CHECK(data == a.data);
      ++checked;
    }
    // Appends the crash lost get their sequences again.
    appended.erase(appended.lower_bound(log.next_sequence), appended.end());
  }
  CHECK(checked > 1000);
  CHECK(fulls > 10);
  CHECK(paddings > 10);
  CHECK(std::chrono::steady_clock::now() - started < std::chrono::seconds(20));
}

}  // namespace
}  // namespace dst::stagelog::log_replay_test
