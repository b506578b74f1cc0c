// Scrub of a mirror volume (ScrubJob driving ChecksummedVolume) against in-memory members
// (test_members.h): every written block is read on every copy, write-mostly ones included; a bad
// copy is counted, logged and (repair mode) rewritten from the good one; a block bad on every
// copy is unrecoverable; the scrub's record (mode, pause, cursor, result) reaches the
// superblocks, so that a paused scrub stays paused across a restart.
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <doctest/doctest.h>
#include <asio.hpp>

#include "aggregator/integrity/checksummed_volume.h"
#include "aggregator/integrity/member_format.h"
#include "aggregator/integrity/superblock.h"
#include "aggregator/integrity/test_members.h"
#include "aggregator/volume/set_geometry.h"
#include "tests/harness/stderr_capture.h"

namespace dst::integrity::scrub_job_test {
namespace {

using volume::ByteRange;
using volume::CopyRole;
using volume::LayoutKind;
using volume::MemberOp;
using namespace testing;  // NOLINT(build/namespaces): the helpers of test_members.h

constexpr uint64_t kMemberSize = 4 * MiB;
constexpr auto kLimit = std::chrono::seconds(20);

// A two-copy mirror, copy 1 write-mostly, formatted as `create` formats it.
class ScrubHarness {
 public:
  ScrubHarness() {
    const FormatParams params{.block_size = 4096, .region_size = 64 * KiB};
    REQUIRE(ComputeGeometry(kMemberSize, params, kFormatVersion2, &geometry).ok());
    for (uint32_t i = 0; i < 2; ++i) {
      members.push_back(std::make_unique<MemMember>(io, &clock, "mem" + std::to_string(i),
                                                    kMemberSize, MemberCaps()));
      Superblock sb;
      sb.version = kFormatVersion2;
      sb.created = 1700000000;
      sb.volume_uuid.fill(0xa0);
      sb.member_uuid = MemberUuid(i);
      sb.name = "vol0";
      sb.member_index = i;
      sb.member_count = 2;
      sb.layout = LayoutKind::kMirror;
      sb.volume_size = geometry.data.size;
      sb.geometry = geometry;
      sb.copies = 2;
      sb.generation.fill(0xc0);
      for (uint32_t m = 0; m < 2; ++m) {
        sb.member_states[m] = MemberState::kActive;
        sb.slot_members[m] = MemberUuid(m);
      }
      sb.slot_flags[1] = kSlotWriteMostly;
      for (uint32_t slot = 0; slot < kSlotCount; ++slot) {
        sb.event = slot;
        REQUIRE(Encode(sb, std::span<uint8_t, kSlotSize>(
                               members[i]->bytes.data() + SlotOffset(slot), kSlotSize))
                    .ok());
      }
    }
  }

  ~ScrubHarness() {
    vol.reset();
    io.restart();
    io.poll();
  }

  static Uuid MemberUuid(uint32_t i) {
    Uuid uuid;
    uuid.fill(static_cast<uint8_t>(16 * (i + 1)));
    return uuid;
  }

  Superblock OnDisk(uint32_t i) const {
    SlotChoice choice;
    const auto& b = members[i]->bytes;
    REQUIRE(ChooseSlot(std::span<const uint8_t>(b.data(), kSlotSize),
                       std::span<const uint8_t>(b.data() + kSlotSize, kSlotSize), &choice)
                .ok());
    return choice.superblock;
  }

  int Open() {
    std::vector<RedundantSlot> slots;
    std::optional<Superblock> view;
    for (uint32_t i = 0; i < members.size(); ++i) {
      const Superblock sb = OnDisk(i);
      if (!view || sb.event > view->event) view = sb;
      slots.push_back({members[i].get(), sb, CopyRole::kCurrent});
    }
    ChecksumOptions options;
    options.clean_interval = std::chrono::hours(1);
    const Status s =
        ChecksummedVolume::CreateRedundant(io, std::move(slots), *view, {}, options, &vol);
    REQUIRE_MESSAGE(s.ok(), s.message());
    return Wait([&](auto done) { vol->Open(done); });
  }

  int Close() {
    return Wait([&](auto done) { vol->Close(done); });
  }

  int Wait(const std::function<void(std::function<void(int)>)>& start) {
    int result = kPending;
    start([&](int err) { result = err; });
    REQUIRE(RunFor(io, kLimit, [&] { return result != kPending; }));
    return result;
  }

  int Write(uint64_t offset, const std::vector<uint8_t>& data) {
    return Wait([&](auto done) { vol->Write(offset, data.size(), data.data(), false, done); });
  }

  // Runs until no background job is left.
  bool ScrubFinished() {
    return RunFor(io, kLimit, [&] { return vol->JobStates().empty(); });
  }

  uint64_t Counter(const std::string& name) const {
    for (const auto& c : vol->Counters())
      if (c.name == name) return c.value;
    FAIL("no counter " << name);
    return 0;
  }

  // The member byte offset of volume byte `offset` (a mirror: the same on both copies).
  uint64_t At(uint64_t offset) const { return geometry.data.offset + offset; }
  std::vector<uint8_t> BlockOn(uint32_t m, uint64_t at) const {
    return {members[m]->bytes.begin() + static_cast<ptrdiff_t>(at),
            members[m]->bytes.begin() + static_cast<ptrdiff_t>(at + 4096)};
  }

  asio::io_context io;  // first: destroyed last
  uint64_t clock = 0;
  MemberGeometry geometry;
  std::vector<std::unique_ptr<MemMember>> members;
  std::unique_ptr<ChecksummedVolume> vol;
};

TEST_CASE("scrub: a block corrupted on the write-mostly copy is found and repaired") {
  ScrubHarness h;
  REQUIRE(h.Open() == 0);
  REQUIRE(h.Write(0, Pattern(256 * KiB, 1)) == 0);
  const uint64_t bad = h.At(40 * KiB);
  h.members[1]->bytes[bad + 7] ^= 0x5a;
  const size_t reads_before = h.members[1]->Count(MemberOp::kRead, h.geometry.data);
  dst::test::StderrCapture log;
  REQUIRE(h.vol->StartScrub(ScrubMode::kRepair).ok());
  REQUIRE(h.ScrubFinished());
  CHECK(h.Counter("scrub_blocks") == 64);
  CHECK(h.Counter("scrub_errors") == 1);
  CHECK(h.Counter("scrub_repaired") == 1);
  CHECK(h.Counter("scrub_unrecoverable") == 0);
  CHECK(h.Counter("scrub_last_clean") == 0);
  CHECK(h.Counter("scrub_last_completed") > 0);
  CHECK(h.BlockOn(1, bad) == h.BlockOn(0, bad));
  // Every written block was read on the write-mostly copy (and the repair re-read one).
  CHECK(h.members[1]->Count(MemberOp::kRead, h.geometry.data) - reads_before >= 64);
  CHECK_MESSAGE(
      log.Text().find("scrub: checksum mismatch at volume offset 40960") != std::string::npos,
      log.Text());
  CHECK_MESSAGE(log.Text().find("on member 1 mem1") != std::string::npos, log.Text());
  // Durable: the last result says errors, no scrub under way.
  const ScrubRecord record = h.OnDisk(0).scrub;
  CHECK(record.mode == ScrubMode::kNone);
  CHECK(record.last_result == ScrubResult::kErrors);
  CHECK(record.last_completed > 0);
  CHECK(h.OnDisk(1).scrub == record);

  // A second scrub finds nothing.
  REQUIRE(h.vol->StartScrub(std::nullopt).ok());
  REQUIRE(h.ScrubFinished());
  CHECK(h.Counter("scrub_errors") == 1);
  CHECK(h.Counter("scrub_last_clean") == 1);
  CHECK(h.Close() == 0);
}

TEST_CASE("scrub: a block bad on both copies is unrecoverable, logged with its volume offset") {
  ScrubHarness h;
  REQUIRE(h.Open() == 0);
  REQUIRE(h.Write(0, Pattern(64 * KiB, 2)) == 0);
  const uint64_t bad = h.At(8 * KiB);
  h.members[0]->bytes[bad] ^= 1;
  h.members[1]->bytes[bad + 1] ^= 1;
  dst::test::StderrCapture log;
  REQUIRE(h.vol->StartScrub(ScrubMode::kRepair).ok());
  REQUIRE(h.ScrubFinished());
  CHECK(h.Counter("scrub_errors") == 2);
  CHECK(h.Counter("scrub_repaired") == 0);
  CHECK(h.Counter("scrub_unrecoverable") == 1);
  CHECK_MESSAGE(log.Text().find("scrub: volume offset 8192") != std::string::npos, log.Text());
  CHECK_MESSAGE(log.Text().find("verifies on no copy: unrecoverable") != std::string::npos,
                log.Text());
  CHECK(h.Close() == 0);
}

TEST_CASE("scrub: check mode counts a bad copy but does not repair it") {
  ScrubHarness h;
  REQUIRE(h.Open() == 0);
  REQUIRE(h.Write(0, Pattern(64 * KiB, 3)) == 0);
  const uint64_t bad = h.At(12 * KiB);
  h.members[1]->bytes[bad] ^= 1;
  REQUIRE(h.vol->StartScrub(ScrubMode::kCheck).ok());
  REQUIRE(h.ScrubFinished());
  CHECK(h.Counter("scrub_blocks") == 16);
  CHECK(h.Counter("scrub_errors") == 1);
  CHECK(h.Counter("scrub_repaired") == 0);
  CHECK(h.BlockOn(1, bad) != h.BlockOn(0, bad));
  CHECK(h.Close() == 0);
}

TEST_CASE("scrub: commands answer what they did, and a paused scrub stays paused after a restart") {
  ScrubHarness h;
  REQUIRE(h.Open() == 0);
  REQUIRE(h.Write(0, Pattern(64 * KiB, 4)) == 0);
  REQUIRE(h.Write(2 * MiB, Pattern(64 * KiB, 5)) == 0);  // past the first step
  CHECK(h.vol->PauseScrub().err() == ENOENT);
  CHECK(h.vol->StopScrub().message() == "no scrub under way on volume vol0");
  REQUIRE(h.vol->StartScrub(ScrubMode::kRepair).ok());
  const Status busy = h.vol->StartScrub(ScrubMode::kCheck);
  CHECK(busy.err() == EBUSY);
  CHECK(busy.message() == "a scrub of volume vol0 is already under way");
  REQUIRE(h.vol->PauseScrub().ok());  // steps already started finish; no new one starts
  REQUIRE(h.vol->JobStates().size() == 1);
  CHECK(h.vol->JobStates()[0].state == "paused");
  CHECK(h.Close() == 0);
  const ScrubRecord paused = h.OnDisk(0).scrub;
  CHECK(paused.mode == ScrubMode::kRepair);
  CHECK(paused.paused);
  CHECK(paused.cursor < h.vol->size() / 4096);
  CHECK(h.OnDisk(1).scrub == paused);
  // The written blocks the resumed scrub still has to verify.
  uint64_t left = 0;
  for (uint64_t first : {uint64_t{0}, 2 * MiB / 4096})
    for (uint64_t b = first; b < first + 16; ++b)
      left += b >= paused.cursor ? 1 : 0;

  h.vol.reset();
  REQUIRE(h.Open() == 0);
  REQUIRE(h.vol->JobStates().size() == 1);
  CHECK(h.vol->JobStates()[0].kind == "scrub");
  CHECK(h.vol->JobStates()[0].state == "paused");
  CHECK(h.vol->JobStates()[0].detail == "repair, 0 errors");
  REQUIRE(h.vol->ResumeScrub().ok());
  REQUIRE(h.ScrubFinished());
  CHECK(left >= 16);
  CHECK(h.Counter("scrub_blocks") == left);
  CHECK(h.Counter("scrub_last_clean") == 1);

  // Stop: the record is cleared at once.
  REQUIRE(h.vol->StartScrub(ScrubMode::kCheck).ok());
  REQUIRE(h.vol->StopScrub().ok());
  CHECK(h.vol->scrub().mode == ScrubMode::kNone);
  REQUIRE(h.ScrubFinished());
  CHECK(h.Close() == 0);
  CHECK(h.OnDisk(0).scrub.mode == ScrubMode::kNone);
  CHECK(h.OnDisk(0).scrub.last_result == ScrubResult::kClean);
}

TEST_CASE("scrub: a volume fenced by a newer owner ends its scrub at once") {
  ScrubHarness h;
  REQUIRE(h.Open() == 0);
  REQUIRE(h.Write(0, Pattern(256 * KiB, 4)) == 0);
  REQUIRE(h.Write(2 * MiB, Pattern(256 * KiB, 5)) == 0);  // a later step
  // Slow enough that the scrub is far from done when the fence comes.
  REQUIRE(h.vol->SetRateLimits({.min_bytes_per_second = 4096, .max_bytes_per_second = 4096}).ok());
  REQUIRE(h.vol->StartScrub(ScrubMode::kCheck).ok());
  dst::test::StderrCapture log;
  h.vol->Supersede(0);
  REQUIRE(h.ScrubFinished());
  CHECK(h.Counter("scrub_blocks") < 128);
  CHECK(h.Counter("scrub_last_completed") == 0);
  CHECK(h.vol->StartScrub(ScrubMode::kCheck).err() == EROFS);
}

TEST_CASE("scrub: the rate limits are checked and take effect") {
  ScrubHarness h;
  REQUIRE(h.Open() == 0);
  CHECK(h.vol->SetRateLimits({.min_bytes_per_second = 0, .max_bytes_per_second = 1}).err() ==
        EINVAL);
  CHECK(h.vol->SetRateLimits({.min_bytes_per_second = 2, .max_bytes_per_second = 1}).err() ==
        EINVAL);
  REQUIRE(h.vol->SetRateLimits({.min_bytes_per_second = 1 << 20, .max_bytes_per_second = 5 << 20})
              .ok());
  CHECK(h.vol->jobs().limits().max_bytes_per_second == 5 << 20);
  CHECK(h.Close() == 0);
}

}  // namespace
}  // namespace dst::integrity::scrub_job_test
