// fault_raid10: resync, rebuild and scrub of a raid10 volume (docs/redundancy.md) of four export
// nodes with two copies, striped over its two sets in 64 KiB chunks (member i is copy i % 2 of
// set i / 2), with real export nodes, the real aggregator and a real client. What a user checks:
//   - a copy of set 1 that missed writes is resynced when it comes back: exactly the regions of
//     set 1 the writes touched, nothing of set 0; each set's copies end byte-equal;
//   - a copy given to --discard is rebuilt from its set's other copy: the blocks written to its
//     set, no more, also when its data area was blank;
//   - a scrub repairs a block corrupted on one copy of each set, and counts a block bad on both
//     copies of a set unrecoverable, logged with its volume offset.
#include <map>
#include <optional>
#include <random>
#include <regex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "tests/fault/fault_fixture.h"
#include "tests/fault/fault_mirror_fixture.h"
#include "tests/integration/volume_fixture.h"

namespace dst::test::fault::fault_raid10_test {
namespace {

constexpr uint64_t kBlock = 4 * kKiB;
constexpr uint64_t kRegion = 1 * kMiB;
constexpr uint64_t kChunk = 64 * kKiB;
constexpr size_t kSets = 2;
constexpr size_t kCopies = 2;
constexpr size_t kMembers = kSets * kCopies;
const std::string kVolume = "r10";
const std::string kStatsMark = "info: stats: volume r10 integrity: ";

// Where a raid10 volume puts a volume offset: its set, and the offset in that set's data area
// (a model independent of aggregator/volume/).
struct Place {
  size_t set = 0;
  uint64_t data_offset = 0;
};

Place PlaceOf(uint64_t volume_offset) {
  const uint64_t chunk = volume_offset / kChunk;
  return {chunk % kSets, chunk / kSets * kChunk + volume_offset % kChunk};
}

uint64_t VolumeOffsetOf(size_t set, uint64_t data_offset) {
  return (data_offset / kChunk * kSets + set) * kChunk + data_offset % kChunk;
}

// Four export nodes on files and the raid10 volume made of them (1 MiB regions).
class Raid10 {
 public:
  explicit Raid10(uint64_t member_size) : size_(member_size) {
    for (size_t i = 0; i < kMembers; ++i) {
      files_.push_back(dir_.File("m" + std::to_string(i) + ".img"));
      members_.push_back(std::make_unique<Member>(files_[i], size_));
    }
    CreateOk({"--name", kVolume, "--layout", "raid10", "--copies", "2", "--chunk", "64K",
              "--region-size", "1M"},
             uris());
    for (size_t i = 0; i < kMembers; ++i) {
      const CommandResult inspect = RunAggregator({"inspect", "--json", members_[i]->uri()});
      REQUIRE(inspect.exit_code == 0);
      data_.push_back(AreaOf(inspect.stdout_text, "data"));
    }
  }

  // Every member's URI but that of `missing` (kMembers: none missing).
  std::vector<std::string> uris(size_t missing = kMembers) const {
    std::vector<std::string> u;
    for (size_t i = 0; i < kMembers; ++i)
      if (i != missing) u.push_back(members_[i]->uri());
    return u;
  }
  Member& member(size_t i) { return *members_[i]; }
  void StopMember(size_t i) {
    REQUIRE(members_[i]->Stop() == 0);
    members_[i].reset();
  }
  void RestartMember(size_t i) {
    members_[i].reset();
    members_[i] = std::make_unique<Member>(files_[i], size_);
  }
  // Member i's data area, as its backing file holds it.
  Bytes Data(size_t i) const { return ReadFileRange(files_[i], data_[i].offset, data_[i].size); }
  // Writes `bytes` at `data_offset` of member i's data area, in its backing file.
  void WriteData(size_t i, uint64_t data_offset, const Bytes& bytes) const {
    WriteFileAt(files_[i], data_[i].offset + data_offset, bytes);
  }
  Bytes ReadData(size_t i, uint64_t data_offset, uint64_t length) const {
    return ReadFileRange(files_[i], data_[i].offset + data_offset, length);
  }
  // Zeros over member i's whole data area: a blank disk in its place, superblock kept.
  void BlankData(size_t i) const { WriteData(i, 0, Bytes(data_[i].size, 0)); }

  // The two copies of every set hold the same data area.
  void CheckCopiesEqual() const {
    for (size_t set = 0; set < kSets; ++set) {
      const Bytes a = Data(set * kCopies), b = Data(set * kCopies + 1);
      const std::optional<size_t> at = FirstDifference(a, b);
      CHECK_MESSAGE(!at.has_value(), "the copies of set " << set << " differ first at data offset "
                                                          << at.value_or(0));
    }
  }

 private:
  TempDir dir_{"dst-fault-raid10"};
  uint64_t size_;
  std::vector<std::string> files_;
  std::vector<std::unique_ptr<Member>> members_;
  std::vector<Area> data_;
};

uint64_t Counter(AggregatorServer& agg, const std::string& name) {
  return QueryStatsLine(agg, kStatsMark).Count(name);
}

bool WaitForLog(AggregatorServer& agg, const std::string& needle, Ms timeout = 60s) {
  return WaitForText([&] { return agg.stderr_text(); }, needle, timeout);
}

// What a case wrote: the last data of each 4 KiB block, by volume offset.
using Written = std::map<uint64_t, Bytes>;

// `count` blocks of 4 KiB at seeded random block offsets below `span`, through the aggregator.
Written WriteBlocks(AggregatorServer& agg, uint64_t span, int count, uint64_t seed) {
  NbdClient client;
  REQUIRE_NBD_OK(client.Connect(agg.uri(kVolume)));
  std::mt19937_64 rng(seed);
  Written written;
  for (int i = 0; i < count; ++i) {
    const uint64_t offset = rng() % (span / kBlock) * kBlock;
    Bytes data = RandomBytes(kBlock, seed * 1000 + i);
    REQUIRE_NBD_OK(WriteFor(client, data, offset));
    written[offset] = std::move(data);
  }
  REQUIRE_NBD_OK(FlushFor(client));
  CHECK_NBD_OK(client.Shutdown());
  return written;
}

// Every written block reads back through the aggregator as written.
void CheckReadsBack(AggregatorServer& agg, const Written& written) {
  NbdClient client;
  REQUIRE_NBD_OK(client.Connect(agg.uri(kVolume)));
  for (const auto& [offset, data] : written) {
    Bytes back(kBlock);
    REQUIRE_NBD_OK(ReadFor(client, back, offset));
    CHECK_MESSAGE(back == data, "volume offset " << offset << " reads back other data");
  }
  CHECK_NBD_OK(client.Shutdown());
}

// The regions of `set`'s data area the written blocks touched.
std::set<uint64_t> RegionsOf(const Written& written, size_t set) {
  std::set<uint64_t> regions;
  for (const auto& [offset, data] : written)
    if (const Place p = PlaceOf(offset); p.set == set) regions.insert(p.data_offset / kRegion);
  return regions;
}

// The written blocks that landed on `set`.
uint64_t BlocksOn(const Written& written, size_t set) {
  uint64_t blocks = 0;
  for (const auto& [offset, data] : written)
    blocks += PlaceOf(offset).set == set ? 1 : 0;
  return blocks;
}

TEST_SUITE_BEGIN("fault_raid10");

TEST_CASE("re-add after writes: the regions set 1 missed are resynced, each set's copies agree") {
  Raid10 r10(64 * kMiB);
  r10.StopMember(3);
  Written written;
  {
    Aggregator agg(Concat({"--allow-degraded"}, r10.uris(3)));
    INFO("degraded aggregator log:\n" << agg.stderr_text());
    CHECK(Contains(StatusJson(agg), "\"sets\": [\"UU\", \"U_\"]"));
    written = WriteBlocks(agg, 64 * kMiB, 60, 17);
  }
  const std::set<uint64_t> regions = RegionsOf(written, 1);
  REQUIRE(!regions.empty());
  REQUIRE(!RegionsOf(written, 0).empty());  // set 0 took writes too, and must not be copied
  r10.RestartMember(3);
  Aggregator agg(r10.uris());
  INFO("aggregator log:\n" << agg.stderr_text());
  REQUIRE(WaitForLog(agg, "resyncing r10 slot 3: done ("));
  const std::string log = agg.stderr_text();
  CHECK(Contains(log, "slot 3 " + r10.member(3).uri() + ": resyncing (partial: " +
                          std::to_string(regions.size()) + " regions missed since event"));
  CHECK(Contains(log, "is current again (set 1 now [UU])"));
  CHECK(CountOf(log, "resyncing r10 slot") == CountOf(log, "resyncing r10 slot 3"));
  CHECK_FALSE(Contains(log, "rebuilding"));
  const uint64_t resynced = Counter(agg, "resync_bytes");
  MESSAGE(regions.size() << " regions of set 1 touched, " << resynced << " bytes resynced");
  CHECK(resynced == regions.size() * kRegion);
  CHECK(Counter(agg, "resync_unrecoverable") == 0);
  CHECK(Contains(StatusJson(agg), "\"sets\": [\"UU\", \"UU\"]"));
  CheckReadsBack(agg, written);
  REQUIRE(agg.Stop() == 0);
  r10.CheckCopiesEqual();
}

TEST_CASE("rebuild with --discard 3: the blocks written to set 1 are copied to a blank copy") {
  Raid10 r10(64 * kMiB);
  Written written;
  {
    Aggregator agg(r10.uris());
    written = WriteBlocks(agg, 64 * kMiB, 60, 29);
  }
  REQUIRE(BlocksOn(written, 0) > 0);
  // A replaced disk: nothing of the old data to fall back on.
  r10.BlankData(3);
  Aggregator agg(Concat({"--discard", "3"}, r10.uris()));
  INFO("aggregator log:\n" << agg.stderr_text());
  REQUIRE(WaitForLog(agg, "rebuilding r10 slot 3: done ("));
  const std::string log = agg.stderr_text();
  CHECK(Contains(log, "slot 3 " + r10.member(3).uri() + ": rebuilding (full: discard"));
  CHECK(Contains(log, "is current again (set 1 now [UU])"));
  CHECK(CountOf(log, "rebuilding r10 slot") == CountOf(log, "rebuilding r10 slot 3"));
  const uint64_t rebuilt = Counter(agg, "rebuild_bytes");
  MESSAGE(BlocksOn(written, 1) << " blocks written to set 1, " << rebuilt << " bytes rebuilt");
  CHECK(rebuilt == BlocksOn(written, 1) * kBlock);
  CHECK(Counter(agg, "resync_unrecoverable") == 0);
  CHECK(Contains(StatusJson(agg), "\"sets\": [\"UU\", \"UU\"]"));
  CheckReadsBack(agg, written);
  REQUIRE(agg.Stop() == 0);
  r10.CheckCopiesEqual();
}

// `dst-aggregator scrub --control P VOLUME ARGS...` against the running aggregator.
CommandResult Scrub(const AggregatorServer& agg, std::vector<std::string> args) {
  args.insert(args.begin(), {"scrub", "--control", agg.control_path(), kVolume});
  return RunAggregator(args);
}

// status --json once the scrub has left the job list (60 s at most).
std::string AwaitScrubDone(const AggregatorServer& agg) {
  REQUIRE(WaitForStatus(agg, "\"jobs\": []", 60s).has_value());
  return StatusJson(agg);
}

// 1 MiB written at volume offset 0: 256 KiB on each copy... of 512 KiB per set, in chunks.
constexpr uint64_t kScrubWritten = 1 * kMiB;
// The block corrupted in each set: block 5 of its data area.
constexpr uint64_t kBadDataOffset = 5 * kBlock;

// A raid10 volume holding kScrubWritten bytes written through the aggregator, stopped.
struct ScrubVolume {
  Raid10 r10{16 * kMiB};
  Bytes data = RandomBytes(kScrubWritten, 41);

  ScrubVolume() {
    Aggregator agg(r10.uris());
    NbdClient client;
    REQUIRE_NBD_OK(client.Connect(agg.uri(kVolume)));
    REQUIRE_NBD_OK(WriteFor(client, data, 0));
    REQUIRE_NBD_OK(FlushFor(client));
    CHECK_NBD_OK(client.Shutdown());
  }
  // Garbage over the bad block of member `slot`'s data area.
  void Corrupt(size_t slot, uint64_t seed) const {
    r10.WriteData(slot, kBadDataOffset, RandomBytes(kBlock, seed));
    REQUIRE(r10.ReadData(slot, kBadDataOffset, kBlock) != Good(slot / kCopies));
  }
  // What the bad block of `set` must hold.
  Bytes Good(size_t set) const {
    const uint64_t at = VolumeOffsetOf(set, kBadDataOffset);
    return Bytes(data.begin() + static_cast<ptrdiff_t>(at),
                 data.begin() + static_cast<ptrdiff_t>(at + kBlock));
  }
};

TEST_CASE("scrub --repair: a block corrupted on one copy of each set is repaired in both") {
  ScrubVolume vol;
  vol.Corrupt(1, 70);  // set 0, copy 1
  vol.Corrupt(2, 71);  // set 1, copy 0
  {
    Aggregator agg(vol.r10.uris());
    INFO("aggregator log:\n" << agg.stderr_text());
    const CommandResult started = Scrub(agg, {"start", "--repair"});
    CHECK(started.exit_code == 0);
    CHECK(started.stdout_text == "ok: scrub of r10 started (repair)\n");
    const std::string json = AwaitScrubDone(agg);
    INFO("status:\n" << json);
    CHECK(Contains(json, "\"scrub_blocks\": " + std::to_string(kScrubWritten / kBlock) + ","));
    CHECK(Contains(json, "\"scrub_errors\": 2,"));
    CHECK(Contains(json, "\"scrub_repaired\": 2,"));
    CHECK(Contains(json, "\"scrub_unrecoverable\": 0,"));
    const std::string log = agg.stderr_text();
    for (size_t slot : {1, 2}) {
      const uint64_t at = VolumeOffsetOf(slot / kCopies, kBadDataOffset);
      const std::string mismatch =
          "scrub: checksum mismatch at volume offset " + std::to_string(at) + " (";
      CHECK(Contains(LineWithAll(log, {mismatch}), "data offset " + std::to_string(kBadDataOffset) +
                                                       ") on member " + std::to_string(slot) + " " +
                                                       vol.r10.member(slot).uri()));
      CHECK(Contains(LineWithAll(log, {"repaired volume offset " + std::to_string(at) + " ("}),
                     "on member " + std::to_string(slot) + " " + vol.r10.member(slot).uri()));
    }
    CHECK(Contains(log, "volume r10: scrub (repair) complete: 2 errors"));
    // Reads go to either copy: the whole written range reads back right.
    NbdClient client;
    REQUIRE_NBD_OK(client.Connect(agg.uri(kVolume)));
    Bytes back(kScrubWritten);
    REQUIRE_NBD_OK(ReadFor(client, back, 0));
    CHECK(back == vol.data);
    CHECK_NBD_OK(client.Shutdown());
  }
  CHECK(vol.r10.ReadData(1, kBadDataOffset, kBlock) == vol.Good(0));
  CHECK(vol.r10.ReadData(2, kBadDataOffset, kBlock) == vol.Good(1));
  vol.r10.CheckCopiesEqual();
}

TEST_CASE("scrub: a block bad on both copies of set 1 is unrecoverable, logged with its offset") {
  ScrubVolume vol;
  vol.Corrupt(2, 72);
  vol.Corrupt(3, 73);
  const uint64_t at = VolumeOffsetOf(1, kBadDataOffset);
  Aggregator agg(vol.r10.uris());
  INFO("aggregator log:\n" << agg.stderr_text());
  const CommandResult started = Scrub(agg, {"start", "--repair"});
  CHECK(started.exit_code == 0);
  const std::string json = AwaitScrubDone(agg);
  INFO("status:\n" << json);
  CHECK(Contains(json, "\"scrub_errors\": 2,"));
  CHECK(Contains(json, "\"scrub_repaired\": 0,"));
  CHECK(Contains(json, "\"scrub_unrecoverable\": 1,"));
  CHECK(Contains(
      LineWithAll(agg.stderr_text(), {"scrub: volume offset " + std::to_string(at) + " ("}),
      "verifies on no copy: unrecoverable"));
  // Set 0 and the rest of set 1 still read back; the bad block gets EIO.
  NbdClient client;
  REQUIRE_NBD_OK(client.Connect(agg.uri(kVolume)));
  Bytes before(at);
  REQUIRE_NBD_OK(ReadFor(client, before, 0));
  CHECK(before == Bytes(vol.data.begin(), vol.data.begin() + static_cast<ptrdiff_t>(at)));
  Bytes bad(kBlock);
  CHECK(ReadFor(client, bad, at).err == EIO);
  CHECK_NBD_OK(client.Shutdown());
}

TEST_SUITE_END();

}  // namespace
}  // namespace dst::test::fault::fault_raid10_test
