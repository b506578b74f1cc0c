// fault_mirror_crash: the aggregator serving a 2-copy mirror is SIGKILLed while a client's
// writes are in flight, and the copies are made to differ in a dirty region the way a torn
// write leaves them (the new data on one copy, the old on the other). The restart over the
// same members must reconcile the copies (docs/redundancy.md, "Crash reconciliation"): in
// every block that differs, the copy whose data matches its own durable table entry wins
// (either slot), else the lowest current copy; the copies end byte-equal, the log names the
// set and region, `resync_mismatches` counts the blocks, and the client reads the winners'
// data with no error.
#include <libnbd.h>

#include <algorithm>
#include <array>
#include <csignal>
#include <deque>
#include <map>
#include <regex>
#include <set>
#include <sstream>

#include "tests/fault/fault_fixture.h"
#include "tests/fault/fault_mirror_fixture.h"
#include "tests/integration/volume_fixture.h"

namespace dst::test::fault::fault_mirror_crash_test {
namespace {

constexpr uint64_t kMemberSize = 16 * kMiB;
constexpr uint64_t kBlock = 4 * kKiB;
constexpr uint64_t kRegion = 4 * kMiB;
constexpr uint64_t kEntrySize = 4;  // crc32c
const std::string kVolume = "mir";

// Region 1 of the data area (a mirror's volume offset is its data offset): written with old
// data and stopped clean, so the tables hold the old data's entries; then rewritten with new
// data before the crash. The torn blocks are picked from it.
constexpr uint64_t kOldNewOffset = 1 * kRegion + 256 * kKiB;
constexpr uint64_t kOldNewLength = 256 * kKiB;
// Region 2: the writes in flight when the aggregator is killed, 64 KiB each, round a ring.
constexpr uint64_t kInFlightBase = 2 * kRegion;
constexpr uint64_t kInFlightSize = 64 * kKiB;
constexpr uint64_t kRingSlots = kRegion / kInFlightSize;
constexpr size_t kDepth = 16;

uint64_t NumberOf(const std::string& json, const std::string& name) {
  std::smatch m;
  REQUIRE_MESSAGE(std::regex_search(json, m, std::regex("\"" + name + "\": *([0-9]+)")),
                  "no " << name << " in:\n"
                        << json);
  return std::stoull(m[1]);
}

// Two export nodes on files and the mirror made of them, with the areas `inspect` reports.
class MirrorFiles {
 public:
  MirrorFiles() {
    for (size_t i = 0; i < 2; ++i) {
      files_.push_back(dir_.File("m" + std::to_string(i) + ".img"));
      // --threads=1: nbdkit 1.32 can abort when two workers of one connection fail to reply
      // to a client that was killed (see fault_crash_test.cc).
      NbdkitOptions options = PluginMemberOptions(files_.back(), kMemberSize);
      options.nbdkit_flags.push_back("--threads=1");
      members_.push_back(std::make_unique<Member>(options));
      uris_.push_back(members_.back()->uri());
    }
    CreateOk({"--name", kVolume, "--layout", "mirror", "--copies", "2"}, uris_);
    const CommandResult inspect = RunAggregator({"inspect", "--json", uris_[0]});
    REQUIRE(inspect.exit_code == 0);
    const std::string& json = inspect.stdout_text;
    REQUIRE(NumberOf(json, "block_size") == kBlock);
    REQUIRE(NumberOf(json, "region_size") == kRegion);
    REQUIRE(Contains(json, "\"crc32c\""));
    bitmap_ = AreaOf(json, "bitmap");
    table_ = AreaOf(json, "table");
    data_ = AreaOf(json, "data");
    // The test's regions exist, and the volume is the data area.
    REQUIRE(data_.size >= 3 * kRegion);
    volume_size_ = data_.size / kBlock * kBlock;
  }

  const std::vector<std::string>& uris() const { return uris_; }
  Member& member(size_t i) { return *members_[i]; }
  uint64_t volume_size() const { return volume_size_; }

  Bytes Data(size_t copy) const { return ReadFileRange(files_[copy], data_.offset, volume_size_); }
  Bytes Table(size_t copy) const { return ReadFileRange(files_[copy], table_.offset, table_.size); }
  Bytes Block(size_t copy, uint64_t offset) const {
    return ReadFileRange(files_[copy], data_.offset + offset, kBlock);
  }
  void PutBlock(size_t copy, uint64_t offset, const Bytes& block) {
    REQUIRE(block.size() == kBlock);
    WriteFileAt(files_[copy], data_.offset + offset, block);
  }
  bool IntentBit(size_t copy, uint64_t region) const {
    const Bytes byte = ReadFileRange(files_[copy], bitmap_.offset + region / 8, 1);
    return (byte[0] >> (region % 8)) & 1;
  }
  bool AnyIntentBit(size_t copy) const {
    return !AllZero(ReadFileRange(files_[copy], bitmap_.offset, bitmap_.size));
  }

 private:
  TempDir dir_{"dst-fault-mirror-crash"};
  std::vector<std::unique_ptr<Member>> members_;
  std::vector<std::string> uris_;
  std::vector<std::string> files_;
  Area bitmap_, table_, data_;
  uint64_t volume_size_ = 0;
};

Bytes Slice(const Bytes& bytes, uint64_t offset, uint64_t length) {
  return Bytes(bytes.begin() + offset, bytes.begin() + offset + length);
}

// Writes of 64 KiB round region 2's ring, kDepth in flight, until `kill_after` have
// completed; then calls `kill()` with kDepth writes sent and unanswered. Bounded in count and
// time.
struct InFlightWriter {
  std::deque<std::pair<int64_t, Bytes>> pending;  // outlives the client's commands
  uint64_t submitted = 0, completed = 0;
  int in_flight_at_kill = 0;

  void Run(NbdClient& client, uint64_t kill_after, const std::function<void()>& kill) {
    const auto start = SteadyClock::now();
    while (submitted < 4000 && SecondsSince(start) < 10) {
      while (pending.size() < kDepth) {
        Bytes data = RandomBytes(kInFlightSize, 10000 + submitted);
        const uint64_t offset = kInFlightBase + (submitted % kRingSlots) * kInFlightSize;
        const int64_t cookie = SubmitWrite(client, data, offset);
        pending.emplace_back(cookie, std::move(data));
        ++submitted;
      }
      // Right after a refill, before libnbd reads another reply: kDepth writes are out.
      if (completed >= kill_after) {
        in_flight_at_kill = nbd_aio_in_flight(client.handle());
        kill();
        return;
      }
      REQUIRE(nbd_poll(client.handle(), 20) != -1);
      // Only the oldest are retired, so that every buffer stays alive as long as its command.
      while (!pending.empty()) {
        const int done = nbd_aio_command_completed(client.handle(), pending.front().first);
        if (done == 0) break;
        REQUIRE_MESSAGE(done == 1, "write failed before the kill: " << LastNbdError());
        pending.pop_front();
        ++completed;
      }
    }
    FAIL("the writer did not complete " << kill_after << " writes in time (" << completed << " of "
                                        << submitted << ")");
  }
};

// The expected reconciliation of one block whose copies differ: the first copy whose data
// matches its durable table entry, else copy 0. `durable` is the data that entry was computed
// from (the old data in the old/new range, zeros elsewhere: entry zero).
size_t Winner(const Bytes& copy0, const Bytes& copy1, const Bytes& durable) {
  if (copy0 == durable) return 0;
  if (copy1 == durable) return 1;
  return 0;
}

TEST_SUITE_BEGIN("fault_mirror_crash");

TEST_CASE(
    "SIGKILL under writes, copies torn in a dirty region: reconciled by their table entries, "
    "byte-equal, counted and logged") {
  MirrorFiles mirror;
  const std::vector<std::string>& uris = mirror.uris();
  const Bytes old_data = RandomBytes(kOldNewLength, 1);
  const Bytes new_data = RandomBytes(kOldNewLength, 2);

  // 1. The old data, stopped clean: its entries are durable on both copies, no bit is set.
  {
    Aggregator agg(uris);
    NbdClient client;
    REQUIRE_NBD_OK(client.Connect(agg.uri(kVolume)));
    REQUIRE_NBD_OK(WriteFor(client, old_data, kOldNewOffset));
    REQUIRE_NBD_OK(FlushFor(client));
    CHECK_NBD_OK(client.Shutdown());
  }
  const Bytes table_after_clean_stop = mirror.Table(0);
  REQUIRE(mirror.Table(1) == table_after_clean_stop);
  for (size_t copy : {0, 1})
    REQUIRE_FALSE(mirror.AnyIntentBit(copy));
  // Entries exist exactly for the old data's blocks.
  uint64_t entries = 0, misplaced = 0;
  for (uint64_t b = 0; b < mirror.volume_size() / kBlock; ++b) {
    const bool set = !AllZero(Slice(table_after_clean_stop, b * kEntrySize, kEntrySize));
    const bool old = b * kBlock >= kOldNewOffset && b * kBlock < kOldNewOffset + kOldNewLength;
    entries += set;
    misplaced += set != old;
  }
  REQUIRE(entries == kOldNewLength / kBlock);
  REQUIRE(misplaced == 0);

  // 2. The new data over the old (acknowledged, so on both copies), then writes into region 2,
  //    and SIGKILL with some of them in flight, all before the cleaner's first run (5 s after
  //    the start): the tables on the members still hold the old data's entries.
  InFlightWriter writer;
  {
    AggregatorServer agg(FaultAggregatorOptions(uris, AggregatorListen::kUnix));
    const auto started = SteadyClock::now();
    NbdClient client;
    REQUIRE_NBD_OK(client.Connect(agg.uri(kVolume)));
    REQUIRE_NBD_OK(WriteFor(client, new_data, kOldNewOffset));
    writer.Run(client, 3 * kRingSlots / 2, [&] {
      agg.Kill(SIGKILL);
      const std::optional<int> code = agg.Wait(10s);
      REQUIRE_MESSAGE(code.has_value(), "dst-aggregator survived SIGKILL");
      CHECK(*code == 128 + SIGKILL);
    });
    MESSAGE("killed " << SecondsSince(started) << " s after the start, " << writer.completed
                      << " of " << writer.submitted << " writes completed, "
                      << writer.in_flight_at_kill << " in flight");
    CHECK(writer.in_flight_at_kill > 0);
    CHECK_MESSAGE(agg.SanitizerReports().empty(), agg.stderr_text());
  }
  // The export nodes stop in order (SIGTERM, exit 0): whatever the aggregator had sent them is
  // in the files, and nothing changes them behind the test's back.
  for (size_t i : {0, 1})
    REQUIRE(mirror.member(i).Stop() == 0);
  for (size_t copy : {0, 1}) {
    CHECK_MESSAGE(mirror.Table(copy) == table_after_clean_stop,
                  "the cleaner wrote copy " << copy << "'s table before the kill");
    CHECK(mirror.IntentBit(copy, 1));
    CHECK(mirror.IntentBit(copy, 2));
  }

  // 3. Torn copies in region 1, as a write cut off by the crash leaves them. Blocks of the
  //    acknowledged new data, on both copies now:
  //    - x: copy 1 still holds the old data (the new write reached copy 0 only): copy 1 matches
  //      its entry and wins although it is not the lowest slot;
  //    - y: copy 0 holds the old data (the write reached copy 1 only): copy 0 wins by its entry;
  //    - z: copy 1 holds neither (its entry matches no copy): the lowest copy, 0, wins.
  const uint64_t x = kOldNewOffset + 3 * kBlock;
  const uint64_t y = kOldNewOffset + 17 * kBlock;
  const uint64_t z = kOldNewOffset + 40 * kBlock;
  const auto old_block = [&](uint64_t at) { return Slice(old_data, at - kOldNewOffset, kBlock); };
  const auto new_block = [&](uint64_t at) { return Slice(new_data, at - kOldNewOffset, kBlock); };
  for (uint64_t at : {x, y, z})
    for (size_t copy : {0, 1})
      REQUIRE(mirror.Block(copy, at) == new_block(at));
  mirror.PutBlock(1, x, old_block(x));
  mirror.PutBlock(0, y, old_block(y));
  const Bytes garbage = RandomBytes(kBlock, 3);
  mirror.PutBlock(1, z, garbage);

  // What reconciliation must make of every block that differs: the torn ones, and any write
  // in region 2 that reached one copy only when the aggregator died.
  const Bytes before0 = mirror.Data(0);
  const Bytes before1 = mirror.Data(1);
  Bytes expected = before0;
  std::map<uint64_t, std::vector<uint64_t>> differing_by_region;  // region -> block offsets
  std::map<uint64_t, std::array<uint64_t, 2>> kept_by_region;     // region -> blocks kept
  uint64_t by_entry_region2 = 0;
  for (uint64_t at = 0; at < mirror.volume_size(); at += kBlock) {
    const Bytes b0 = Slice(before0, at, kBlock);
    const Bytes b1 = Slice(before1, at, kBlock);
    if (b0 == b1) continue;
    const bool old_range = at >= kOldNewOffset && at < kOldNewOffset + kOldNewLength;
    const Bytes durable = old_range ? old_block(at) : Bytes(kBlock, 0);
    const size_t winner = Winner(b0, b1, durable);
    const Bytes& won = winner == 0 ? b0 : b1;
    std::copy(won.begin(), won.end(), expected.begin() + at);
    differing_by_region[at / kRegion].push_back(at);
    ++kept_by_region[at / kRegion][winner];
    if (at / kRegion == 2 && won == durable) ++by_entry_region2;
  }
  uint64_t differing = 0;
  for (const auto& [region, blocks] : differing_by_region) {
    CHECK_MESSAGE((region == 1 || region == 2), "copies differ in region " << region);
    differing += blocks.size();
  }
  REQUIRE(differing_by_region[1] == std::vector<uint64_t>{x, y, z});
  MESSAGE((differing - 3) << " blocks of region 2 differ as the crash left them");
  REQUIRE(Slice(expected, x, kBlock) == old_block(x));
  REQUIRE(Slice(expected, y, kBlock) == old_block(y));
  REQUIRE(Slice(expected, z, kBlock) == new_block(z));

  // 4. The restart over the same members.
  for (size_t i : {0, 1})
    mirror.member(i).Restart();
  {
    Aggregator agg(uris);
    const std::string log = agg.stderr_text();
    INFO("aggregator log:\n" << log);
    // Regions 1 and 2 only: the bits set at the crash.
    const uint64_t regions = (mirror.volume_size() + kRegion - 1) / kRegion;
    CHECK(Contains(log, "volume " + kVolume + ": unclean stop: recomputing the checksums of 2 of " +
                            std::to_string(regions) + " regions"));
    const std::string unclean = "volume " + kVolume + ": copies of set 0 differed in ";
    CHECK(Contains(
        log, unclean +
                 "3 blocks of region 1 after an unclean stop (2 chosen by their table entry, "
                 "the rest from the lowest current copy): member 0 " +
                 uris[0] + ": 2 kept, 1 rewritten, member 1 " + uris[1] + ": 1 kept, 2 rewritten"));
    if (const auto r2 = differing_by_region.find(2); r2 != differing_by_region.end()) {
      const uint64_t n = r2->second.size();
      const auto& kept = kept_by_region[2];
      CHECK(Contains(log, unclean + std::to_string(n) + " blocks of region 2 after an unclean " +
                              "stop (" + std::to_string(by_entry_region2) +
                              " chosen by their table entry, the rest from the lowest current "
                              "copy): member 0 " +
                              uris[0] + ": " + std::to_string(kept[0]) + " kept, " +
                              std::to_string(kept[1]) + " rewritten, member 1 " + uris[1] + ": " +
                              std::to_string(kept[1]) + " kept, " + std::to_string(kept[0]) +
                              " rewritten"));
    }
    CHECK(CountOf(log, unclean) == differing_by_region.size());

    const std::string json = StatusJson(agg);
    INFO("status:\n" << json);
    CHECK(NumberOf(json, "resync_mismatches") == differing);
    CHECK(NumberOf(json, "checksum_errors") == 0);
    CHECK(Contains(json, "\"sets\": [\"UU\"]"));

    // Reconciled before the listener opened: both copies hold the winners.
    const Bytes after0 = mirror.Data(0);
    CHECK_MESSAGE(after0 == mirror.Data(1), "the copies still differ at data offset "
                                                << *FirstDifference(after0, mirror.Data(1)));
    CHECK_MESSAGE(after0 == expected, "copy 0 differs from the expected winners at data offset "
                                          << *FirstDifference(after0, expected));

    // The client reads the winners, every block through its checksum, with no error.
    NbdClient client;
    REQUIRE_NBD_OK(client.Connect(agg.uri(kVolume)));
    Bytes block(kBlock);
    REQUIRE_NBD_OK(ReadFor(client, block, x));
    CHECK(block == old_block(x));
    REQUIRE_NBD_OK(ReadFor(client, block, y));
    CHECK(block == old_block(y));
    REQUIRE_NBD_OK(ReadFor(client, block, z));
    CHECK(block == new_block(z));
    Bytes whole(mirror.volume_size());
    constexpr uint64_t kPiece = 1 * kMiB;
    for (uint64_t at = 0; at < whole.size(); at += kPiece) {
      const uint64_t length = std::min(kPiece, whole.size() - at);
      REQUIRE_NBD_OK(ReadFor(client, std::span<uint8_t>(whole.data() + at, length), at));
    }
    CHECK_MESSAGE(whole == expected,
                  "the volume reads differently at offset " << *FirstDifference(whole, expected));
    CHECK(NumberOf(StatusJson(agg), "checksum_errors") == 0);
    CHECK_NBD_OK(client.Shutdown());
  }
  // A clean stop after it: still equal, nothing dirty.
  CHECK(mirror.Data(0) == mirror.Data(1));
  for (size_t copy : {0, 1})
    CHECK_FALSE(mirror.AnyIntentBit(copy));
}

TEST_SUITE_END();

}  // namespace
}  // namespace dst::test::fault::fault_mirror_crash_test
