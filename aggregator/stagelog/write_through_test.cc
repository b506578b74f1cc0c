// StagedDevice in write-through mode (docs/staging-log.md §10): acknowledgement after the
// member, before-image records, snapshots from them, reclaiming, replay, and changing the mode.
#include <doctest/doctest.h>

#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "aggregator/stagelog/staged_device.h"
#include "aggregator/stagelog/test_log.h"
#include "aggregator/stagelog/test_staged.h"
#include "aggregator/volume/test_member.h"
#include "aggregator/volume/volume.h"
#include "common/run_until.h"

namespace dst::stagelog::write_through_test {
namespace {

using testing::Pattern;
using volume::MemberOp;

constexpr uint64_t kVolumeSize = 256 * 1024;
using Bytes = std::vector<uint8_t>;

// A one-member linear volume on an in-memory member, served through a write-through log on a
// fake device.
struct Fixture : testing::StagedFixtureBase {
  explicit Fixture(uint64_t ring = 1 << 20)
      : StagedFixtureBase(kVolumeSize, testing::NewDevice(ring, LogMode::kWriteThrough)) {
    Reopen();
  }

  void Reopen() {
    std::unique_ptr<volume::Volume> inner = NewVolume();
    StagedOptions options;
    options.path = "test.log";
    options.clock = testing::TickingClock();
    const Status s =
        StagedDevice::Open(io, std::move(inner), log, testing::MustReplay(*log), options, &staged);
    REQUIRE_MESSAGE(s.ok(), s.message());
    staged->Start();
  }

  std::shared_ptr<std::optional<int>> StartWrite(uint64_t offset, const Bytes& data) {
    auto result = std::make_shared<std::optional<int>>();
    staged->Write(offset, data.size(), data.data(), false, [result](int err) { *result = err; });
    return result;
  }
  int Wait(const std::shared_ptr<std::optional<int>>& result) {
    Run([&] { return result->has_value(); });
    return **result;
  }
  int Write(uint64_t offset, const Bytes& data) { return Wait(StartWrite(offset, data)); }
  int Trim(uint64_t offset, uint64_t length) {
    auto result = std::make_shared<std::optional<int>>();
    staged->Trim(offset, length, false, [result](int err) { *result = err; });
    return Wait(result);
  }
  int Zero(uint64_t offset, uint64_t length) {
    auto result = std::make_shared<std::optional<int>>();
    staged->Zero(offset, length, false, false, false, [result](int err) { *result = err; });
    return Wait(result);
  }
  int TryRead(volume::BlockDevice& device, uint64_t offset, Bytes& out) {
    std::optional<int> result;
    device.Read(offset, out.size(), out.data(),
                [&result](int err, std::vector<volume::ByteRange>) { result = err; });
    Run([&] { return result.has_value(); });
    return *result;
  }
  Bytes ReadFrom(volume::BlockDevice& device, uint64_t offset, uint64_t length) {
    Bytes out(length, 0xee);
    REQUIRE(TryRead(device, offset, out) == 0);
    return out;
  }
  std::shared_ptr<volume::BlockDevice> Snapshot(uint64_t sequence) {
    std::shared_ptr<volume::BlockDevice> snapshot;
    const Status s = staged->OpenSnapshot(std::to_string(sequence), &snapshot);
    REQUIRE_MESSAGE(s.ok(), s.message());
    return snapshot;
  }
  Bytes MemberBytes(uint64_t offset, uint64_t length) const {
    return {member.bytes.begin() + static_cast<std::ptrdiff_t>(offset),
            member.bytes.begin() + static_cast<std::ptrdiff_t>(offset + length)};
  }
};

TEST_CASE("write-through: a write is acknowledged once the member has it, after its before-image") {
  Fixture f;
  std::memset(f.member.bytes.data(), 0x11, 8192);
  const uint64_t syncs = f.log->syncs();
  const Bytes data = Pattern(8192, 3);
  f.member.HoldAll();
  auto result = f.StartWrite(0, data);
  // The before-image read is held first; then the member write.
  f.Run([&] { return f.member.held() == 1; });
  f.member.Release();
  f.Run([&] { return f.member.Count(MemberOp::kWrite) == 1; });
  CHECK_FALSE(result->has_value());
  CHECK(f.log->syncs() > syncs);  // the before-image was durable before the member write
  CHECK(f.staged->head_sequence() == 1);
  f.member.StopHolding();
  CHECK(f.Wait(result) == 0);
  CHECK(f.MemberBytes(0, 8192) == data);
  CHECK(f.ReadFrom(*f.staged, 0, 8192) == data);
  // The log has the old data: the volume as of 0.
  CHECK(f.ReadFrom(*f.Snapshot(0), 0, 8192) == Bytes(8192, 0x11));
  CHECK(f.ReadFrom(*f.Snapshot(1), 0, 8192) == data);
  const ReplayedLog replayed = testing::MustReplay(*f.log);
  REQUIRE(replayed.records.size() == 1);
  CHECK(replayed.records[0].header.kind == RecordKind::kBeforeImage);
  Bytes payload;
  REQUIRE(ReadPayload(*f.log, replayed.records[0], &payload).ok());
  CHECK(payload == Bytes(8192, 0x11));
  // Nothing pending: D is the head.
  const volume::DeviceState state = f.staged->State();
  REQUIRE(state.staging_log);
  CHECK(state.staging_log->mode == "write-through");
  CHECK(state.staging_log->state == "normal");
  CHECK(state.staging_log->destaged_sequence == 1);
  CHECK(state.staging_log->head_sequence == 1);
  CHECK(state.staging_log->pending_bytes == 0);
  CHECK(state.staging_log->pending_age_ms == 0);
  // FLUSH goes to the member.
  const size_t flushes = f.member.Count(MemberOp::kFlush);
  std::optional<int> flushed;
  f.staged->Flush([&flushed](int err) { flushed = err; });
  f.Run([&] { return flushed.has_value(); });
  CHECK(*flushed == 0);
  CHECK(f.member.Count(MemberOp::kFlush) == flushes + 1);
}

TEST_CASE("write-through: a member that fails the write fails the client's write") {
  Fixture f;
  f.member.faults.push_back({MemberOp::kWrite, 0, UINT64_MAX, EIO, false, 1});
  CHECK(f.Write(0, Pattern(4096, 1)) == EIO);
  // Its before-image stays and is harmless: the volume as of 0 is still what it was.
  CHECK(f.staged->head_sequence() == 1);
  CHECK(f.ReadFrom(*f.Snapshot(0), 0, 4096) == Bytes(4096, 0));
  CHECK(f.Write(0, Pattern(4096, 2)) == 0);
  CHECK(f.ReadFrom(*f.Snapshot(0), 0, 4096) == Bytes(4096, 0));
  CHECK(f.ReadFrom(*f.Snapshot(2), 0, 4096) == Pattern(4096, 2));
  // A failed before-image read: the client's write fails, and the member is not written.
  f.member.faults.push_back({MemberOp::kRead, 0, UINT64_MAX, EIO, false, 1});
  const size_t writes = f.member.Count(MemberOp::kWrite);
  CHECK(f.Write(0, Pattern(4096, 3)) == EIO);
  CHECK(f.member.Count(MemberOp::kWrite) == writes);
  CHECK(f.staged->head_sequence() == 2);
}

TEST_CASE("write-through: a failed log sync fails the write before the member sees it") {
  Fixture f;
  CHECK(f.Write(0, Pattern(4096, 1)) == 0);
  const size_t writes = f.member.Count(MemberOp::kWrite);
  f.log->FailNextSync();
  CHECK(f.Write(0, Pattern(4096, 2)) == EIO);
  CHECK(f.member.Count(MemberOp::kWrite) == writes);
  CHECK(f.MemberBytes(0, 4096) == Pattern(4096, 1));
  CHECK(f.staged->State().staging_log->state == "failed");
  // Every later write too (restart to open the log again); reads go on.
  CHECK(f.Write(8192, Pattern(4096, 3)) == EIO);
  CHECK(f.ReadFrom(*f.staged, 0, 4096) == Pattern(4096, 1));
}

// Random overlapping writes, trims and zeroes, several in flight at once; the volume after each
// sequence, as a byte model, against every snapshot point.
TEST_CASE("write-through: every point reads exactly its generation (fixed seed)") {
  Fixture f;
  std::mt19937 rng(7);
  Bytes model(kVolumeSize, 0);
  std::map<uint64_t, Bytes> at;  // the model after each sequence
  at[0] = model;
  for (int round = 0; round < 12; ++round) {
    // Three ops at once over a small area: the range lock orders the overlapping ones by arrival.
    std::vector<std::shared_ptr<std::optional<int>>> results;
    for (int i = 0; i < 3; ++i) {
      const uint64_t offset = (rng() % 24) * 1024;
      const uint64_t length = (1 + rng() % 12) * 1024;
      const uint32_t kind = rng() % 4;
      auto result = std::make_shared<std::optional<int>>();
      auto done = [result](int err) { *result = err; };
      if (kind == 0) {
        f.staged->Trim(offset, length, false, done);
        std::fill_n(model.begin() + static_cast<std::ptrdiff_t>(offset), length, 0);
      } else if (kind == 1) {
        f.staged->Zero(offset, length, false, false, false, done);
        std::fill_n(model.begin() + static_cast<std::ptrdiff_t>(offset), length, 0);
      } else {
        const Bytes data = Pattern(length, static_cast<uint8_t>(rng()));
        f.staged->Write(offset, length, data.data(), false, done);
        std::copy(data.begin(), data.end(), model.begin() + static_cast<std::ptrdiff_t>(offset));
      }
      results.push_back(result);
    }
    for (const auto& r : results)
      CHECK(f.Wait(r) == 0);
    // Records are appended in arrival order for overlapping ops; here every op's state is in the
    // model once all three are done, and the sequence of the last one names it.
    at[f.staged->head_sequence()] = model;
  }
  CHECK(f.MemberBytes(0, kVolumeSize) == model);
  for (const auto& [sequence, expected] : at) {
    CAPTURE(sequence);
    CHECK(f.ReadFrom(*f.Snapshot(sequence), 0, 64 * 1024) ==
          Bytes(expected.begin(), expected.begin() + 64 * 1024));
  }
  // After a restart (replay), the same.
  f.Close();
  f.Reopen();
  for (const auto& [sequence, expected] : at) {
    CAPTURE(sequence);
    CHECK(f.ReadFrom(*f.Snapshot(sequence), 0, 64 * 1024) ==
          Bytes(expected.begin(), expected.begin() + 64 * 1024));
  }
}

TEST_CASE("write-through: overlapping writes wait for each other; others run at once") {
  Fixture f;
  f.member.hold = [](const volume::MemberIo& io) { return io.op == MemberOp::kWrite; };
  auto first = f.StartWrite(0, Pattern(8192, 1));
  f.Run([&] { return f.member.held() == 1; });
  auto overlapping = f.StartWrite(4096, Pattern(8192, 2));
  auto apart = f.StartWrite(65536, Pattern(4096, 3));
  f.Run([&] { return f.member.held() == 2; });
  // The overlapping one has not even read its before-image: the first holds the range.
  CHECK(f.member.OpsIn(MemberOp::kRead, 4096, 8192, 0).size() == 1);
  CHECK(f.staged->Snapshots().newest_sequence == 0);  // write 1 is not on the member yet
  f.member.StopHolding();
  f.member.hold = nullptr;
  CHECK(f.Wait(first) == 0);
  CHECK(f.Wait(overlapping) == 0);
  CHECK(f.Wait(apart) == 0);
  Bytes after_first = Pattern(8192, 1);
  after_first.resize(12288, 0);
  // The overlapping write's before-image is the first write's result.
  const uint64_t overlapping_sequence = 3;
  CHECK(f.ReadFrom(*f.Snapshot(overlapping_sequence - 1), 0, 12288) == after_first);
}

TEST_CASE("write-through: a snapshot read that races a write of the same bytes is still exact") {
  Fixture f;
  CHECK(f.Write(0, Pattern(4096, 1)) == 0);  // 1
  auto snapshot = f.Snapshot(1);
  // Hold the snapshot's member read until the write below has reached the member.
  bool held_one = false;
  f.member.hold = [&held_one](const volume::MemberIo& io) {
    if (io.op != MemberOp::kRead || held_one) return false;
    held_one = true;
    return true;
  };
  Bytes out(4096, 0xee);
  std::optional<int> read;
  snapshot->Read(0, 4096, out.data(),
                 [&read](int err, std::vector<volume::ByteRange>) { read = err; });
  f.Run([&] { return f.member.held() == 1; });
  CHECK(f.Write(0, Pattern(4096, 2)) == 0);  // 2: on the member before the held read runs
  f.member.Release();
  f.Run([&] { return read.has_value(); });
  CHECK(*read == 0);
  CHECK(out == Pattern(4096, 1));
}

// Snapshot reads of random points and ranges whose member reads are held until random writes of
// the same area have reached the member: each still reads its point exactly.
TEST_CASE("write-through: snapshot reads overtaken by writes read their point (fixed seed)") {
  Fixture f;
  std::mt19937 rng(11);
  constexpr uint64_t kArea = 64 * 1024;
  Bytes model(kArea, 0);
  std::map<uint64_t, Bytes> at;
  at[0] = model;
  for (int round = 0; round < 16; ++round) {
    struct Pending {
      std::shared_ptr<volume::BlockDevice> snapshot;
      uint64_t offset;
      Bytes out;
      Bytes expected;
      std::optional<int> result;
    };
    std::vector<std::unique_ptr<Pending>> reads;
    f.member.hold = [](const volume::MemberIo& io) { return io.op == MemberOp::kRead; };
    for (int i = 0; i < 3; ++i) {
      auto point = at.begin();
      std::advance(point, static_cast<std::ptrdiff_t>(rng() % at.size()));
      auto r = std::make_unique<Pending>();
      r->snapshot = f.Snapshot(point->first);
      r->offset = (rng() % 48) * 1024;
      const uint64_t length = (1 + rng() % 16) * 1024;
      r->out.assign(length, 0xee);
      r->expected.assign(point->second.begin() + static_cast<std::ptrdiff_t>(r->offset),
                         point->second.begin() + static_cast<std::ptrdiff_t>(r->offset + length));
      Pending* raw = r.get();
      r->snapshot->Read(r->offset, length, r->out.data(),
                        [raw](int err, std::vector<volume::ByteRange>) { raw->result = err; });
      reads.push_back(std::move(r));
    }
    f.member.hold = nullptr;
    for (int i = 0; i < 3; ++i) {
      const uint64_t offset = (rng() % 48) * 1024;
      const Bytes data = Pattern((1 + rng() % 16) * 1024, static_cast<uint8_t>(rng()));
      REQUIRE(f.Write(offset, data) == 0);
      std::copy(data.begin(), data.end(), model.begin() + static_cast<std::ptrdiff_t>(offset));
      at[f.staged->head_sequence()] = model;
    }
    f.member.Release(rng() % 2 == 0);
    for (const auto& r : reads) {
      f.Run([&] { return r->result.has_value(); });
      CHECK(*r->result == 0);
      CHECK(r->out == r->expected);
    }
  }
}

TEST_CASE("write-through: a full log reclaims its oldest records and the window moves") {
  Fixture f(kMinRingSize);  // 16 pages: four records of 8 KiB and their headers fit in half
  const uint64_t ring = f.staged->State().staging_log->ring_size;
  REQUIRE(ring == kMinRingSize);
  std::map<uint64_t, Bytes> at;
  at[0] = Bytes(kVolumeSize, 0);
  Bytes model(kVolumeSize, 0);
  auto pinned = f.Snapshot(0);
  CHECK(f.ReadFrom(*pinned, 0, 8192) == Bytes(8192, 0));
  for (uint64_t i = 0; i < 20; ++i) {
    const Bytes data = Pattern(8192, static_cast<uint8_t>(i + 1));
    REQUIRE(f.Write((i % 6) * 8192, data) == 0);  // writes never wait for the snapshot
    std::copy(data.begin(), data.end(),
              model.begin() + static_cast<std::ptrdiff_t>((i % 6) * 8192));
    at[f.staged->head_sequence()] = model;
  }
  const SnapshotRange range = f.staged->Snapshots();
  CHECK(range.oldest_sequence > 0);
  CHECK(range.newest_sequence == f.staged->head_sequence());
  CHECK(f.staged->State().staging_log->used_bytes <= ring);
  // The pinned snapshot's point was reclaimed: its reads fail, never mixed.
  Bytes out(8192);
  CHECK(f.TryRead(*pinned, 0, out) == EIO);
  // Points before the window are refused; every one inside reads exactly.
  std::shared_ptr<volume::BlockDevice> refused;
  const Status s = f.staged->OpenSnapshot("0", &refused);
  CHECK(s.err() == EINVAL);
  CHECK(s.message() == "sequence 0 is not available: volume v has snapshots of sequences " +
                           std::to_string(range.oldest_sequence) + " to " +
                           std::to_string(range.newest_sequence));
  size_t points = 0;
  for (const auto& [sequence, expected] : at) {
    if (sequence < range.oldest_sequence) continue;
    CAPTURE(sequence);
    CHECK(f.ReadFrom(*f.Snapshot(sequence), 0, 6 * 8192) ==
          Bytes(expected.begin(), expected.begin() + 6 * 8192));
    ++points;
  }
  CHECK(points >= 2);
  CHECK(f.MemberBytes(0, kVolumeSize) == model);
  // The reclaimed space is durable: a replay starts at the new oldest record.
  pinned.reset();
  f.Close();
  f.Reopen();
  CHECK(f.staged->Snapshots().oldest_sequence == range.oldest_sequence);
}

TEST_CASE("write-through: a write longer than a record holds takes several before-images") {
  Fixture f(kMinRingSize);
  const uint64_t most = f.staged->max_write_length();
  REQUIRE(most < 40960);
  const Bytes first = Pattern(40960, 1);
  const Bytes second = Pattern(40960, 2);
  CHECK(f.Write(0, first) == 0);
  const uint64_t after_first = f.staged->head_sequence();
  CHECK(after_first == 2);  // two records
  CHECK(f.Write(0, second) == 0);
  CHECK(f.MemberBytes(0, 40960) == second);
  const SnapshotRange range = f.staged->Snapshots();
  // The second write's first record did not fit: record 1 went (and no more: the ring is half
  // free then); the point after the first write is still whole.
  CHECK(range.oldest_sequence == after_first);
  CHECK(f.ReadFrom(*f.Snapshot(after_first), 0, 40960) == first);
  CHECK(f.ReadFrom(*f.Snapshot(range.newest_sequence), 0, 40960) == second);
}

TEST_CASE("write-through: a torn tail record is dropped at replay, and the rest still serves") {
  Fixture f;
  CHECK(f.Write(0, Pattern(4096, 1)) == 0);  // 1
  CHECK(f.Write(0, Pattern(4096, 2)) == 0);  // 2
  f.Close();
  // Record 2's before-image torn, as by a crash before its sync: its member write had not begun
  // then, so the member still holds write 1 (put back here), which point 1 reads.
  ReplayedLog replayed = testing::MustReplay(*f.log);
  REQUIRE(replayed.records.size() == 2);
  std::vector<uint8_t> byte(1);
  const uint64_t at = replayed.records[1].payload_offset() + 100;
  REQUIRE(f.log->Read(at, byte).ok());
  byte[0] ^= 0x40;
  REQUIRE(f.log->Write(at, byte).ok());
  REQUIRE(f.log->Sync().ok());
  std::copy_n(Pattern(4096, 1).begin(), 4096, f.member.bytes.begin());
  f.Reopen();
  CHECK(f.staged->head_sequence() == 1);
  CHECK(f.ReadFrom(*f.Snapshot(0), 0, 4096) == Bytes(4096, 0));
  CHECK(f.ReadFrom(*f.Snapshot(1), 0, 4096) == Pattern(4096, 1));
  // The next record takes sequence 2 again, in a new session.
  CHECK(f.Write(0, Pattern(4096, 3)) == 0);
  CHECK(f.staged->head_sequence() == 2);
  CHECK(f.ReadFrom(*f.Snapshot(1), 0, 4096) == Pattern(4096, 1));
}

// A temporary directory for log files, removed with what is in it.
struct TempDir {
  std::string path;
  TempDir() {
    char dir[] = "/tmp/write-through-test.XXXXXX";
    REQUIRE(::mkdtemp(dir) != nullptr);
    path = dir;
  }
  ~TempDir() {
    const std::string log = path + "/v.log";
    ::unlink(log.c_str());
    ::rmdir(path.c_str());
  }
};

TEST_CASE("write-through: a log of the other mode is formatted anew only with nothing pending") {
  TempDir dir;
  const std::string path = dir.path + "/v.log";
  const Uuid volume = testing::kVolume;
  std::shared_ptr<LogDevice> device;
  ReplayedLog log;
  bool formatted = false;
  REQUIRE(
      OpenVolumeLog(path, 1 << 20, volume, LogMode::kWriteBack, &device, &log, &formatted).ok());
  CHECK(formatted);
  CHECK(log.superblock.mode == LogMode::kWriteBack);
  {
    std::unique_ptr<LogWriter> writer;
    REQUIRE(LogWriter::Open(device.get(), log, testing::TickingClock(), &writer).ok());
    REQUIRE(writer->Append(RecordKind::kWrite, 0, 4096, Pattern(4096, 1)).ok());
    REQUIRE(writer->Commit().ok());
  }
  device.reset();
  // A write-back log with a record not yet destaged: refused, with the way out.
  const Status refused =
      OpenVolumeLog(path, 0, volume, LogMode::kWriteThrough, &device, &log, &formatted);
  CHECK(refused.err() == EINVAL);
  CHECK(refused.message() ==
        "staging log " + path +
            " is a write-back log with records 1 to 1 not yet on the members: serve it with "
            "--log-mode write-back until they are destaged, then change the mode");
  // Once destaged, it changes.
  REQUIRE(OpenVolumeLog(path, 0, volume, LogMode::kWriteBack, &device, &log, &formatted).ok());
  CHECK_FALSE(formatted);
  {
    std::unique_ptr<LogWriter> writer;
    REQUIRE(LogWriter::Open(device.get(), log, testing::TickingClock(), &writer).ok());
    REQUIRE(writer->SetDestaged(1).ok());
  }
  device.reset();
  REQUIRE(OpenVolumeLog(path, 0, volume, LogMode::kWriteThrough, &device, &log, &formatted).ok());
  CHECK(formatted);
  CHECK(log.superblock.mode == LogMode::kWriteThrough);
  CHECK(log.records.empty());
  {
    std::unique_ptr<LogWriter> writer;
    REQUIRE(LogWriter::Open(device.get(), log, testing::TickingClock(), &writer).ok());
    // A write-through log takes before-images only.
    CHECK(writer->Append(RecordKind::kWrite, 0, 4096, Pattern(4096, 1)).err() == EINVAL);
    REQUIRE(writer->Append(RecordKind::kBeforeImage, 0, 4096, Pattern(4096, 1)).ok());
    REQUIRE(writer->Commit().ok());
  }
  device.reset();
  // A write-through log never holds anything pending: back to write-back at once.
  REQUIRE(OpenVolumeLog(path, 0, volume, LogMode::kWriteBack, &device, &log, &formatted).ok());
  CHECK(formatted);
  CHECK(log.superblock.mode == LogMode::kWriteBack);
  CHECK(log.records.empty());
}

TEST_CASE("write-through: replay ends a log at a record of the other mode's kind") {
  auto device = testing::NewDevice(kMinRingSize, LogMode::kWriteThrough);
  auto writer = testing::MustOpen(*device);
  REQUIRE(writer->Append(RecordKind::kBeforeImage, 0, 4096, Pattern(4096, 1)).ok());
  REQUIRE(writer->Commit().ok());
  // The same bytes in a write-back log's superblock: the before-image is not taken as a write.
  LogSuperblock sb;
  REQUIRE(ReadLogSuperblock(*device, &sb).ok());
  sb.mode = LogMode::kWriteBack;
  ++sb.event;
  std::array<uint8_t, kSlotSize> slot;
  REQUIRE(EncodeSuperblock(sb, slot).ok());
  REQUIRE(device->Write(SlotOffset(NextSlot(sb.event)), slot).ok());
  const ReplayedLog log = testing::MustReplay(*device);
  CHECK(log.records.empty());
  CHECK(log.end == "record 1 at ring offset 0: a before-image record in a write-back log");
}

}  // namespace
}  // namespace dst::stagelog::write_through_test
