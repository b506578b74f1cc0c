#include "aggregator/stagelog/log_writer.h"

#include <doctest/doctest.h>

#include <cerrno>
#include <vector>

#include "aggregator/stagelog/test_log.h"

namespace dst::stagelog::log_writer_test {
namespace {

using testing::MustOpen;
using testing::MustReplay;
using testing::NewDevice;
using testing::Pattern;

std::vector<uint8_t> PayloadOf(LogDevice& device, const ReplayedRecord& record) {
  std::vector<uint8_t> out;
  const Status st = ReadPayload(device, record, &out);
  REQUIRE_MESSAGE(st.ok(), st.message());
  return out;
}

TEST_CASE("log writer: a formatted log is empty") {
  auto device = NewDevice();
  const ReplayedLog log = MustReplay(*device);
  CHECK(log.records.empty());
  CHECK(log.next_sequence == 1);
  CHECK(log.destaged_sequence() == 0);
  CHECK(log.superblock.ring_size == kMinRingSize);
  CHECK(log.superblock.created == 1000);
  CHECK(log.superblock.session == 0);
}

TEST_CASE("log writer: one sync commits a group of records, which replay finds in order") {
  auto device = NewDevice();
  auto writer = MustOpen(*device);
  CHECK(writer->session() == 1);
  const uint64_t syncs = device->syncs();
  REQUIRE(writer->Append(RecordKind::kWrite, 4096, 5000, Pattern(5000, 1)).ok());
  REQUIRE(writer->Append(RecordKind::kTrim, 0, 1 << 20, {}).ok());
  REQUIRE(writer->Append(RecordKind::kZero, 512, 512, {}).ok());
  CHECK(writer->durable_sequence() == 0);
  REQUIRE(writer->Commit().ok());
  CHECK(device->syncs() == syncs + 1);
  CHECK(writer->durable_sequence() == 3);
  REQUIRE(writer->Commit().ok());  // nothing new: no sync
  CHECK(device->syncs() == syncs + 1);

  device->Crash(FakeLogDevice::CrashMode::kLoseUnsynced);
  const ReplayedLog log = MustReplay(*device);
  REQUIRE(log.records.size() == 3);
  CHECK(log.records[0].header.kind == RecordKind::kWrite);
  CHECK(log.records[0].header.sequence == 1);
  CHECK(log.records[0].header.volume_offset == 4096);
  CHECK(log.records[0].header.session == 1);
  CHECK(log.records[0].position == 0);
  CHECK(PayloadOf(*device, log.records[0]) == Pattern(5000, 1));
  CHECK(log.records[1].header.kind == RecordKind::kTrim);
  CHECK(log.records[1].position == 12288);  // header page + two payload pages
  CHECK(log.records[2].header.kind == RecordKind::kZero);
  CHECK(log.records[2].header.length == 512);
  CHECK(log.next_sequence == 4);
  CHECK(log.head == 20480);
  CHECK(log.end == "record 4 at ring offset 20480: no log record (magic DSTSREC1 not found)");
}

TEST_CASE("log writer: appends that were not committed are lost in a crash") {
  auto device = NewDevice();
  auto writer = MustOpen(*device);
  REQUIRE(writer->Append(RecordKind::kWrite, 0, 4096, Pattern(4096, 1)).ok());
  REQUIRE(writer->Commit().ok());
  REQUIRE(writer->Append(RecordKind::kWrite, 0, 4096, Pattern(4096, 2)).ok());
  device->Crash(FakeLogDevice::CrashMode::kLoseUnsynced);
  const ReplayedLog log = MustReplay(*device);
  REQUIRE(log.records.size() == 1);
  CHECK(PayloadOf(*device, log.records[0]) == Pattern(4096, 1));
}

TEST_CASE("log writer: a full log refuses a record and takes it once space is released") {
  auto device = NewDevice();  // 64 KiB ring
  auto writer = MustOpen(*device);
  CHECK(writer->max_write_length() == 28672);
  const auto data = Pattern(12288, 3);  // 16 KiB records
  for (int i = 0; i < 4; ++i)
    REQUIRE(writer->Append(RecordKind::kWrite, 0, data.size(), data).ok());
  CHECK(writer->used() == kMinRingSize);
  const uint64_t writes = device->writes();
  const Status full = writer->Append(RecordKind::kWrite, 0, data.size(), data);
  CHECK(full.err() == ENOSPC);
  CHECK(full.message() == "staging log full: 16384 bytes needed, 0 free");
  CHECK(device->writes() == writes);  // nothing written

  // Only destaged records may be released.
  CHECK(writer->Release(1).err() == EINVAL);
  CHECK(writer->SetDestaged(2).err() == EINVAL);  // not durable yet
  REQUIRE(writer->Commit().ok());
  REQUIRE(writer->SetDestaged(2).ok());
  const Status early = writer->Release(3);
  CHECK(early.message() ==
        "cannot release staging log records up to 3: only records up to 2 are destaged");
  REQUIRE(writer->Release(1).ok());
  CHECK(writer->oldest_sequence() == 2);
  ReplayedRecord fifth;
  REQUIRE(writer->Append(RecordKind::kWrite, 0, data.size(), data, &fifth).ok());
  CHECK(fifth.header.sequence == 5);
  CHECK(fifth.position == 0);  // wrapped: the head was at the end of the ring
  REQUIRE(writer->Commit().ok());

  const ReplayedLog log = MustReplay(*device);
  CHECK(log.superblock.oldest_sequence == 2);
  CHECK(log.superblock.oldest_position == 16384);
  CHECK(log.destaged_sequence() == 2);
  CHECK(log.superblock.destaged_position == 32768);
  REQUIRE(log.records.size() == 4);
  CHECK(log.records.front().header.sequence == 2);
  CHECK(log.records.back().header.sequence == 5);
  CHECK(log.head == 16384);
}

TEST_CASE("log writer: a record that does not fit before the ring's end follows a padding record") {
  auto device = NewDevice();
  auto writer = MustOpen(*device);
  const auto data = Pattern(16384, 4);  // 20 KiB records
  for (int i = 0; i < 3; ++i)
    REQUIRE(writer->Append(RecordKind::kWrite, i * 16384, data.size(), data).ok());
  CHECK(writer->head() == 61440);
  REQUIRE(writer->Commit().ok());
  REQUIRE(writer->SetDestaged(3).ok());
  REQUIRE(writer->Release(3).ok());
  CHECK(writer->used() == 0);
  const auto last = Pattern(16384, 9);
  REQUIRE(writer->Append(RecordKind::kWrite, 100 * 4096, last.size(), last).ok());
  CHECK(writer->next_sequence() == 6);  // padding took 4
  CHECK(writer->used() == 4096 + 20480);
  REQUIRE(writer->Commit().ok());

  device->Crash(FakeLogDevice::CrashMode::kLoseUnsynced);
  const ReplayedLog log = MustReplay(*device);
  REQUIRE(log.records.size() == 2);
  CHECK(log.records[0].header.kind == RecordKind::kPadding);
  CHECK(log.records[0].header.sequence == 4);
  CHECK(log.records[0].position == 61440);
  CHECK(log.records[0].header.payload_size == 0);
  CHECK(log.records[1].header.sequence == 5);
  CHECK(log.records[1].position == 0);
  CHECK(PayloadOf(*device, log.records[1]) == last);
  CHECK(log.head == 20480);
}

TEST_CASE("log writer: a write longer than half the ring is refused") {
  auto device = NewDevice();
  auto writer = MustOpen(*device);
  const auto data = Pattern(28673, 1);
  const Status st = writer->Append(RecordKind::kWrite, 0, data.size(), data);
  CHECK(st.err() == EINVAL);
  CHECK(st.message() == "write of 28673 bytes is longer than a staging log record holds (28672)");
  CHECK(writer->Append(RecordKind::kWrite, 0, 10, Pattern(9, 1)).err() == EINVAL);
  CHECK(writer->Append(RecordKind::kTrim, 0, 10, Pattern(10, 1)).err() == EINVAL);
  CHECK(writer->Append(RecordKind::kTrim, 0, 0, {}).err() == EINVAL);
  // Half of a 68 KiB ring is 8.5 pages: a record takes at most 8.
  auto odd = NewDevice(68 * 1024);
  CHECK(MustOpen(*odd)->max_write_length() == 28672);
}

TEST_CASE("log writer: after a failed sync every call fails") {
  auto device = NewDevice();
  auto writer = MustOpen(*device);
  REQUIRE(writer->Append(RecordKind::kWrite, 0, 4096, Pattern(4096, 1)).ok());
  device->FailNextSync();
  const Status st = writer->Commit();
  CHECK(st.err() == EIO);
  CHECK(st.message().find("sync the staging log: ") == 0);
  const Status later = writer->Append(RecordKind::kTrim, 0, 4096, {});
  CHECK(later.err() == EIO);
  CHECK(later.message().find("staging log failed earlier: sync the staging log") == 0);
  CHECK(writer->Commit().err() == EIO);
}

TEST_CASE("log writer: the log belongs to its volume") {
  auto device = NewDevice();
  ReplayedLog log;
  const Status st = ReplayLog(*device, testing::MakeUuid(1), &log);
  CHECK(st.err() == EINVAL);
  CHECK(st.message() ==
        "staging log belongs to volume a0a1a2a3a4a5a6a7a8a9aaabacadaeaf, not "
        "0102030405060708090a0b0c0d0e0f10");
  FakeLogDevice blank(1 << 20);
  CHECK(ReplayLog(blank, testing::kVolume, &log).err() == ENOENT);
  FakeLogDevice tiny(kRingOffset + kMinRingSize - 4096);
  const Status small = FormatLog(tiny, {});
  CHECK(small.err() == EINVAL);
  CHECK(small.message().find("is too small: it needs at least 73728") != std::string::npos);
}

}  // namespace
}  // namespace dst::stagelog::log_writer_test
