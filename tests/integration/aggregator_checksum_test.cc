// Integration tests of volumes assembled from their superblocks and served with end-to-end
// checksums (`dst-aggregator create`, then `dst-aggregator serve` without --raw). Members are
// nbdkit processes serving our plugin on temp files; the aggregator is the real binary; clients
// are libnbd, qemu-io and nbdinfo. Damage is done the way it happens in life, behind the
// aggregator's back: bytes of a member's backing file are changed directly (the plugin reads
// through the page cache, so it serves the changed bytes at once), and the tests check what a
// user sees: EIO for exactly the damaged blocks, the log lines and counters naming them, and
// every other byte intact.
#include <libnbd.h>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <iomanip>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <span>
#include <sstream>
#include <thread>
#include <vector>

#include "tests/harness/aggregator_process.h"
#include "tests/integration/plugin_fixture.h"
#include "tests/integration/volume_fixture.h"

namespace dst::test::aggregator_checksum_test {
namespace {

using namespace std::chrono_literals;
using SteadyClock = std::chrono::steady_clock;

constexpr uint64_t kBlock = 4096;  // create's default block size
constexpr uint64_t kSlotSize = 4096;
// 4 MiB members keep 3 MiB of data at 1 MiB with the defaults: small enough to read whole.
constexpr uint64_t kMemberSize = 4 * kMiB;

// ---------------------------------------------------------------------------
// inspect --json, read by Python's json module.

struct Inspected {
  std::string uri;
  uint64_t slot = 0, event = 0, member_index = 0, block_size = 0, chunk_size = 0, data_offset = 0,
           data_size = 0;
  std::string other_slot, state, name, checksum;
};

// One tab-separated line per member, in a fixed field order; a member without a valid
// superblock fails the script.
constexpr const char* kFlattenJson = R"(
import json, sys
doc = json.load(open(sys.argv[1]))
assert isinstance(doc, list), "not an array"
for m in doc:
    assert "error" not in m, m["uri"] + ": " + m["error"]
    sb = m["superblock"]
    data = sb["areas"]["data"]
    fields = [m["uri"], m["slot"], m["other_slot"], sb["event"], sb["state"], sb["volume_name"],
              sb["member_index"], sb["block_size"], sb["chunk_size"], sb["checksum"],
              data["offset"], data["size"]]
    print("\t".join(str(f) for f in fields))
)";

std::vector<Inspected> InspectOk(const std::vector<std::string>& uris) {
  const CommandResult r = RunAggregator(Concat({"inspect", "--json"}, uris));
  INFO("inspect stderr:\n" << r.stderr_text);
  REQUIRE(r.exit_code == 0);
  TempDir dir("dst-ck-json");
  const std::string path = dir.File("inspect.json");
  WriteFile(path, {reinterpret_cast<const uint8_t*>(r.stdout_text.data()), r.stdout_text.size()});
  const CommandResult flat = RunOk({kPython3, "-c", kFlattenJson, path});
  std::vector<Inspected> out;
  std::istringstream lines(flat.stdout_text);
  std::string line;
  while (std::getline(lines, line)) {
    std::vector<std::string> f;
    std::istringstream fields(line);
    std::string field;
    while (std::getline(fields, field, '\t'))
      f.push_back(field);
    REQUIRE(f.size() == 12);
    Inspected m;
    m.uri = f[0];
    m.slot = std::stoull(f[1]);
    m.other_slot = f[2];
    m.event = std::stoull(f[3]);
    m.state = f[4];
    m.name = f[5];
    m.member_index = std::stoull(f[6]);
    m.block_size = std::stoull(f[7]);
    m.chunk_size = std::stoull(f[8]);
    m.checksum = f[9];
    m.data_offset = std::stoull(f[10]);
    m.data_size = std::stoull(f[11]);
    out.push_back(m);
  }
  REQUIRE(out.size() == uris.size());
  return out;
}

// ---------------------------------------------------------------------------
// Where a volume byte lives in the members' backing files: an independent model of the layouts
// over the data areas (docs/format.md), built from what inspect reports.

struct Placement {
  size_t member;
  uint64_t file_offset;  // in the member's backing file
  uint64_t data_offset;  // in the member's data area, as the mismatch log line names it
};

struct VolumeMap {
  std::vector<uint64_t> data_offsets;  // per member, in member-index order
  std::vector<uint64_t> data_sizes;
  uint64_t chunk = 0;  // 0: linear

  Placement Place(uint64_t offset) const {
    if (chunk != 0) {
      const uint64_t c = offset / chunk;
      const size_t m = c % data_offsets.size();
      const uint64_t d = (c / data_offsets.size()) * chunk + offset % chunk;
      return {m, data_offsets[m] + d, d};
    }
    for (size_t m = 0; m < data_sizes.size(); ++m) {
      if (offset < data_sizes[m]) return {m, data_offsets[m] + offset, offset};
      offset -= data_sizes[m];
    }
    throw std::out_of_range("volume offset past the end");
  }
};

// The map of a volume whose members are `uris`, given in member-index order.
VolumeMap MapOf(const std::vector<std::string>& uris) {
  VolumeMap map;
  const std::vector<Inspected> members = InspectOk(uris);
  for (size_t i = 0; i < members.size(); ++i) {
    REQUIRE(members[i].member_index == i);
    map.data_offsets.push_back(members[i].data_offset);
    map.data_sizes.push_back(members[i].data_size);
  }
  map.chunk = members[0].chunk_size;
  return map;
}

// ---------------------------------------------------------------------------
// The aggregator serving an assembled volume: Served (volume_fixture.h), given the volume's
// name, so that its stop requires the volume marked clean.

// SIGUSR1, then the next `stats: volume NAME integrity: k=v ...` line of the volume `name`,
// parsed.
std::map<std::string, std::string> IntegrityStats(Served& v, const std::string& name) {
  const std::string mark = "info: stats: volume " + name + " integrity: ";
  const size_t before = CountOf(v.stderr_text(), mark);
  v.Kill(SIGUSR1);
  const auto deadline = SteadyClock::now() + 5s;
  for (;;) {
    const std::string text = v.stderr_text();
    const size_t at = text.rfind(mark);
    const size_t end = at == std::string::npos ? at : text.find('\n', at);
    if (CountOf(text, mark) > before && end != std::string::npos) {
      std::map<std::string, std::string> values;
      std::istringstream fields(text.substr(at + mark.size(), end - at - mark.size()));
      std::string field;
      while (fields >> field) {
        const size_t eq = field.find('=');
        REQUIRE_MESSAGE(eq != std::string::npos, "bad stats field " << field);
        values[field.substr(0, eq)] = field.substr(eq + 1);
      }
      return values;
    }
    REQUIRE_MESSAGE(SteadyClock::now() < deadline, "no integrity stats line:\n" << text);
    REQUIRE_MESSAGE(v.Running(), "aggregator exited:\n" << text);
    std::this_thread::sleep_for(5ms);
  }
}

// ---------------------------------------------------------------------------
// Client helpers.

// Flips three random bytes of the block at `file_offset` in a backing file: one in each third of
// the block, each XORed with a non-zero value, so that every one really changes.
void CorruptBlock(const std::string& file, uint64_t file_offset, std::mt19937_64& rng) {
  Bytes block = ReadFileRange(file, file_offset, kBlock);
  for (uint64_t third = 0; third < 3; ++third)
    block[third * (kBlock / 3) + rng() % (kBlock / 3)] ^= static_cast<uint8_t>(1 + rng() % 255);
  WriteFileAt(file, file_offset, block);
}

std::string MismatchLine(const std::string& volume, uint64_t offset, const Placement& p,
                         const std::string& member_uri) {
  return "volume " + volume + ": checksum mismatch at volume offset " + std::to_string(offset) +
         " (member " + std::to_string(p.member) + " " + member_uri + ", data offset " +
         std::to_string(p.data_offset) + "), read twice: returning EIO";
}

// Runs qemu-io with the given commands (-c each) against `uri`; requires that every command
// succeeded.
void QemuIo(const std::string& uri, const std::vector<std::string>& commands) {
  Argv argv = {kQemuIo, "-f", "raw"};
  for (const std::string& c : commands)
    argv.insert(argv.end(), {"-c", c});
  argv.push_back(uri);
  const CommandResult r = RunOk(argv);
  INFO(JoinArgv(argv) << "\nstdout:\n" << r.stdout_text << "stderr:\n" << r.stderr_text);
  CHECK_FALSE(Contains(r.stdout_text + r.stderr_text, "failed"));
  CHECK_FALSE(Contains(r.stdout_text + r.stderr_text, "error"));
}

// The allocation map of [offset, offset+count) as "hole,zero@0+131072 data@131072+4096 ...".
std::string MapString(NbdClient& client, uint64_t count, uint64_t offset = 0) {
  std::vector<Extent> extents;
  const NbdStatus s = client.Map(count, offset, &extents);
  if (!s.ok()) return "error: " + s.ToString();
  std::string out;
  for (const Extent& e : extents) {
    if (!out.empty()) out += " ";
    out += e.hole() ? (e.zero() ? "hole,zero" : "hole") : (e.zero() ? "zero" : "data");
    out += "@" + std::to_string(e.offset) + "+" + std::to_string(e.length);
  }
  return out;
}

// ---------------------------------------------------------------------------
// 1. Corruption and 2. misdirected writes.

// Writes random data through the aggregator, flips bytes of distinct random blocks in the
// members' backing files, then reads every block of the written range: exactly the damaged ones
// fail with EIO, each is logged with its volume offset and place on its member, and the counters
// match.
void CheckCorruptionDetected(const std::string& name, const std::vector<std::string>& options,
                             size_t member_count, uint64_t seed) {
  FileMembers m(member_count, kMemberSize);
  CreateOk(Concat({"--name", name}, options), m.uris());
  const VolumeMap map = MapOf(m.uris());
  Served v(m.uris(), name);
  NbdClient client;
  REQUIRE_NBD_OK(client.Connect(v.uri(name)));

  constexpr uint64_t kWritten = kMiB;
  const Bytes data = RandomBytes(kWritten, seed);
  REQUIRE_NBD_OK(client.Pwrite(data, 0));
  REQUIRE_NBD_OK(client.Flush());

  std::mt19937_64 rng(seed);
  std::set<uint64_t> bad;  // volume block numbers
  for (int guard = 0; bad.size() < 7 && guard < 1000; ++guard)
    bad.insert(rng() % (kWritten / kBlock));
  REQUIRE(bad.size() == 7);
  std::set<size_t> members_hit;
  for (uint64_t b : bad) {
    const Placement p = map.Place(b * kBlock);
    members_hit.insert(p.member);
    CorruptBlock(m.file(p.member), p.file_offset, rng);
  }
  CHECK(members_hit.size() == member_count);  // the seed damages every member

  for (uint64_t b = 0; b < kWritten / kBlock; ++b) {
    Bytes got(kBlock);
    INFO("volume block " << b);
    if (bad.count(b)) {
      CHECK_NBD_ERR(client.Pread(got, b * kBlock), EIO);
    } else {
      REQUIRE_NBD_OK(client.Pread(got, b * kBlock));
      CHECK(std::equal(got.begin(), got.end(), data.begin() + b * kBlock));
    }
  }

  const auto stats = IntegrityStats(v, name);
  CHECK(stats.at("checksum_errors") == std::to_string(bad.size()));
  CHECK(stats.at("rereads_recovered") == "0");  // the damage is on the member, not in transit
  CHECK(stats.at("state") == "dirty");
  const std::string log = v.stderr_text();
  for (uint64_t b : bad) {
    const Placement p = map.Place(b * kBlock);
    CHECK_MESSAGE(Contains(log, MismatchLine(name, b * kBlock, p, m.uri(p.member))), log);
  }
  CHECK(CountOf(log, "checksum mismatch at volume offset") == bad.size());

  // A larger read that covers a damaged block fails as a whole; one that stops short of it
  // does not.
  const uint64_t first_bad = *bad.begin();
  Bytes wide(first_bad * kBlock + 2 * kBlock);
  CHECK_NBD_ERR(client.Pread(wide, 0), EIO);
  if (first_bad > 0) {
    Bytes before(first_bad * kBlock);
    CHECK_NBD_OK(client.Pread(before, 0));
    CHECK(std::equal(before.begin(), before.end(), data.begin()));
  }
  // A partial write into a damaged block is refused (merging would give the damage a valid
  // checksum); a whole-block write replaces it and it reads back.
  const Bytes fresh = RandomBytes(kBlock, seed + 1);
  CHECK_NBD_ERR(client.Pwrite({fresh.data(), 100}, first_bad * kBlock + 10), EIO);
  CHECK_NBD_OK(client.Pwrite(fresh, first_bad * kBlock));
  CHECK(client.ReadOrThrow(kBlock, first_bad * kBlock) == fresh);
  v.Stop();
}

TEST_SUITE_BEGIN("aggregator_checksum");

TEST_CASE("corrupted blocks of a linear member read as EIO, named in the log and counted") {
  CheckCorruptionDetected("ck-linear", {}, 1, 101);
}

TEST_CASE("corrupted blocks of a two-member stripe read as EIO, named in the log and counted") {
  CheckCorruptionDetected("ck-stripe", {"--layout", "stripe", "--chunk", "16K"}, 2, 202);
}

TEST_CASE("a block written to another block's place fails verification: the address is covered") {
  FileMembers m(2, kMemberSize);
  const std::string name = "ck-misdirect";
  CreateOk({"--name", name, "--layout", "stripe", "--chunk", "16K"}, m.uris());
  const VolumeMap map = MapOf(m.uris());
  Served v(m.uris(), name);
  NbdClient client;
  REQUIRE_NBD_OK(client.Connect(v.uri(name)));
  const Bytes data = RandomBytes(256 * kKiB, 303);
  REQUIRE_NBD_OK(client.Pwrite(data, 0));
  REQUIRE_NBD_OK(client.Flush());

  // (a) Same member, another place: volume block 1 (chunk 0, member 0) copied over volume
  // block 10 (chunk 2, member 0). (b) Same place, the other member: volume block 5 (chunk 1,
  // member 1, data offset 4K) gets the bytes of volume block 1 (member 0, data offset 4K).
  struct Copy {
    uint64_t from, to;
  };
  const std::vector<Copy> copies = {{1, 10}, {1, 5}};
  for (const Copy& c : copies) {
    const Placement from = map.Place(c.from * kBlock);
    const Placement to = map.Place(c.to * kBlock);
    WriteFileAt(m.file(to.member), to.file_offset,
                ReadFileRange(m.file(from.member), from.file_offset, kBlock));
  }
  REQUIRE(map.Place(10 * kBlock).member == 0);
  REQUIRE(map.Place(5 * kBlock).member == 1);
  REQUIRE(map.Place(5 * kBlock).data_offset == map.Place(1 * kBlock).data_offset);

  for (uint64_t b = 0; b < data.size() / kBlock; ++b) {
    INFO("volume block " << b);
    Bytes got(kBlock);
    if (b == 10 || b == 5) {
      // Intact bytes, a valid checksum for block 1: still not block 10's or 5's.
      CHECK_NBD_ERR(client.Pread(got, b * kBlock), EIO);
    } else {
      REQUIRE_NBD_OK(client.Pread(got, b * kBlock));
      CHECK(std::equal(got.begin(), got.end(), data.begin() + b * kBlock));
    }
  }
  const auto stats = IntegrityStats(v, name);
  CHECK(stats.at("checksum_errors") == "2");
  for (uint64_t b : {uint64_t{5}, uint64_t{10}}) {
    const Placement p = map.Place(b * kBlock);
    CHECK(Contains(v.stderr_text(), MismatchLine(name, b * kBlock, p, m.uri(p.member))));
  }
}

// ---------------------------------------------------------------------------
// 3. Superblocks and assembly.

TEST_CASE(
    "serve marks the superblocks dirty, a clean stop marks them clean, a torn slot is "
    "survived and members come in any order") {
  FileMembers m(2, kMemberSize);
  const std::string name = "ck-super";
  CreateOk({"--name", name, "--layout", "stripe", "--chunk", "8K"}, m.uris());
  const std::vector<Inspected> created = InspectOk(m.uris());
  for (const Inspected& x : created) {
    CHECK(x.event == 1);
    CHECK(x.state == "clean");
  }
  const Bytes data = RandomBytes(200 * kKiB + 123, 404);

  {
    Served v(m.uris(), name);
    NbdClient client;
    REQUIRE_NBD_OK(client.Connect(v.uri(name)));
    // The export is the name given to create (the server does not repeat the name a client
    // asked for, so it is checked in the list).
    std::vector<ExportEntry> exports;
    REQUIRE_NBD_OK(NbdClient::ListExports(v.uri(name), &exports));
    REQUIRE(exports.size() == 1);
    CHECK(exports[0].name == name);
    REQUIRE_NBD_OK(client.Pwrite(data, 5000));
    REQUIRE_NBD_OK(client.Flush());
    // While serving: dirty, one update later, in the slot the event goes to.
    for (const Inspected& x : InspectOk(m.uris())) {
      INFO(x.uri);
      CHECK(x.state == "dirty");
      CHECK(x.event == 2);
      CHECK(x.slot == 0);
      CHECK(x.other_slot == "valid");
    }
    v.Stop();
  }
  for (const Inspected& x : InspectOk(m.uris())) {
    INFO(x.uri);
    CHECK(x.state == "clean");
    CHECK(x.event == 3);
    CHECK(x.slot == 1);
  }

  // Tear member 1's current slot (event 3 goes to slot 3 % 2): its other slot (event 2, dirty)
  // is all that is left of it.
  const uint64_t slot = 3 % 2;
  Bytes bytes = ReadFileRange(m.file(1), slot * kSlotSize + 72, 16);  // inside the volume name
  for (uint8_t& b : bytes)
    b ^= 0x5a;
  WriteFileAt(m.file(1), slot * kSlotSize + 72, bytes);
  {
    const std::vector<Inspected> torn = InspectOk(m.uris());
    CHECK(torn[1].slot == 1 - slot);
    CHECK(torn[1].other_slot == "torn");
    CHECK(torn[1].event == 2);
  }

  // Members given in the wrong order, one of them torn: assembled by index, data intact.
  {
    Served v({m.uri(1), m.uri(0)}, name);
    CHECK(Contains(v.stderr_text(), "volume " + name + ": assembled from 2 members"));
    NbdClient client;
    REQUIRE_NBD_OK(client.Connect(v.uri(name)));
    CHECK(client.ReadOrThrow(data.size(), 5000) == data);
    CHECK(AllZero(client.ReadOrThrow(5000, 0)));
    v.Stop();
  }
  // The next updates rewrote every member at one event, torn slot included.
  const std::vector<Inspected> after = InspectOk(m.uris());
  for (const Inspected& x : after) {
    INFO(x.uri);
    CHECK(x.state == "clean");
    CHECK(x.event == after[0].event);
    CHECK(x.event > 3);
    CHECK(x.other_slot == "valid");
  }
}

TEST_CASE("serve refuses members that do not make one volume") {
  FileMembers m(4, kMemberSize);
  // Volume A: members 0 and 1 (stripe). Volume B: member 2. Member 3: blank.
  CreateOk({"--name", "ck-a", "--layout", "stripe"}, {m.uri(0), m.uri(1)});
  CreateOk({"--name", "ck-b"}, {m.uri(2)});

  // Every refusal is a start of its own, on the same members. A member of another volume:
  CheckServeRefused({m.uri(0), m.uri(2)}, {m.uri(2), "is a member of volume", "\"ck-b\""});
  // A missing member:
  CheckServeRefused({m.uri(1)},
                    {"\"ck-a\"", "has 2 members but 1 were given", "missing member index 0"});
  // The same member twice:
  CheckServeRefused({m.uri(0), m.uri(0)}, {m.uri(0), "same member"});
  // The same member twice besides the other one:
  CheckServeRefused({m.uri(0), m.uri(1), m.uri(0)}, {m.uri(0), "same member"});
  // A blank member:
  CheckServeRefused({m.uri(0), m.uri(1), m.uri(3)},
                    {m.uri(3), "no dst superblock", "dst-aggregator create"});
  // --name that is not the members' volume:
  CheckServeRefused({"--name", "ck-x", m.uri(0), m.uri(1)}, {"ck-x", "\"ck-a\""});
  // A refused start changes nothing on the members.
  for (const Inspected& x : InspectOk({m.uri(0), m.uri(1), m.uri(2)})) {
    INFO(x.uri);
    CHECK(x.state == "clean");
    CHECK(x.event == 1);
  }
}

// ---------------------------------------------------------------------------
// 4. Sub-block writes.

struct PatternWrite {
  uint64_t offset;
  uint64_t length;
  uint8_t value;
  bool zero = false;  // write -z
};

// Blocks a write reads to merge with (head and tail partial blocks), as the counters count them.
uint64_t PartialBlocks(uint64_t offset, uint64_t length) {
  const uint64_t first = offset / kBlock;
  const uint64_t count = (offset + length + kBlock - 1) / kBlock - first;
  const bool head = offset % kBlock != 0;
  const bool tail = (offset + length) % kBlock != 0;
  return (head ? 1 : 0) + (tail && (count > 1 || !head) ? 1 : 0);
}

TEST_CASE("sub-block writes at odd offsets and lengths read back exactly") {
  FileMembers m(2, kMemberSize);
  const std::string name = "ck-rmw";
  CreateOk({"--name", name, "--layout", "stripe", "--chunk", "8K"}, m.uris());
  Served v(m.uris(), name);
  NbdClient client;
  REQUIRE_NBD_OK(client.Connect(v.uri(name)));
  const uint64_t size = static_cast<uint64_t>(client.Size());
  REQUIRE(size == 6 * kMiB);

  // The model: the first 128 KiB written whole-block with random data, so that merges read real
  // (checksummed) blocks; the rest never written, so that merges start from zeros.
  Bytes model(size, 0);
  const Bytes base = RandomBytes(128 * kKiB, 505);
  REQUIRE_NBD_OK(client.Pwrite(base, 0));
  std::copy(base.begin(), base.end(), model.begin());

  const std::vector<PatternWrite> writes = {
      {0, 1, 0x11},                          // one byte
      {3, 511, 0x22},                        // inside one block
      {kBlock - 1, 2, 0x33},                 // across a block boundary
      {8 * kKiB - 7, 14, 0x34},              // across a chunk, so a member, boundary
      {6001, 3 * kBlock + 100, 0x44},        // 4 blocks, partial head and tail
      {20 * kKiB + 1, kBlock - 2, 0x45},     // all of a block but its first and last byte
      {100 * kKiB + 3, 60 * kKiB, 0x46},     // from written blocks into never-written ones
      {300 * kKiB + 777, 5 * kBlock, 0x55},  // never-written blocks only
      {500 * kKiB + 9, 3000, 0, true},       // write-zeroes inside a never-written block
      {40 * kKiB + 5, 3 * kBlock, 0, true},  // write-zeroes with partial ends over data
      {size - 1, 1, 0x66},                   // the last byte of the volume
  };
  std::vector<std::string> commands;
  uint64_t partial = 0;
  for (const PatternWrite& w : writes) {
    std::ostringstream c;
    if (w.zero)
      c << "write -z " << w.offset << " " << w.length;
    else
      c << "write -P 0x" << std::hex << int(w.value) << std::dec << " " << w.offset << " "
        << w.length;
    commands.push_back(c.str());
    std::fill_n(model.begin() + w.offset, w.length, w.value);
    if (w.zero) {
      // Whole blocks of a write-zeroes are forgotten; only its partial ends are merged.
      const uint64_t whole_first = (w.offset + kBlock - 1) / kBlock;
      const uint64_t whole_end = (w.offset + w.length) / kBlock;
      if (whole_end <= whole_first) {
        partial += PartialBlocks(w.offset, w.length);
      } else {
        partial += w.offset % kBlock ? 1 : 0;
        partial += (w.offset + w.length) % kBlock ? 1 : 0;
      }
    } else {
      partial += PartialBlocks(w.offset, w.length);
    }
  }
  commands.push_back("flush");
  QemuIo(v.uri(name), commands);

  const Bytes got = client.ReadOrThrow(size, 0);
  const auto diff = FirstDifference(got, model);
  CHECK_MESSAGE(!diff, "first difference at volume offset " << *diff << ": got " << int(got[*diff])
                                                            << ", want " << int(model[*diff]));
  // A second connection (a fresh client) sees the same.
  NbdClient other;
  REQUIRE_NBD_OK(other.Connect(v.uri(name)));
  CHECK(other.ReadOrThrow(size, 0) == got);

  const auto stats = IntegrityStats(v, name);
  CHECK(stats.at("rmw_blocks") == std::to_string(partial));
  CHECK(stats.at("checksum_errors") == "0");
  v.Stop();

  // After a clean stop and a new start the checksums written back verify every byte.
  Served again(m.uris(), name);
  NbdClient reread;
  REQUIRE_NBD_OK(reread.Connect(again.uri(name)));
  CHECK(reread.ReadOrThrow(size, 0) == model);
}

// One libnbd handle with all its requests in flight at once (aio), driven by a thread of its own.
struct AioClient {
  struct Read {
    uint64_t offset, length;
  };
  std::unique_ptr<NbdClient> client = std::make_unique<NbdClient>();
  std::vector<PatternWrite> writes;
  std::vector<Read> reads;
  std::vector<Bytes> buffers;  // writes' data, then reads' results, in that order
  std::atomic<int> completed{0};
  std::atomic<int> first_error{0};
  std::string failure;  // set by the thread if driving the handle failed

  static int OnComplete(void* user_data, int* error) {
    auto* self = static_cast<AioClient*>(user_data);
    int expected = 0;
    if (*error != 0) self->first_error.compare_exchange_strong(expected, *error);
    ++self->completed;
    return 1;  // retire the command
  }

  void Run(std::chrono::milliseconds timeout) {
    nbd_handle* h = client->handle();
    const nbd_completion_callback done{OnComplete, this, nullptr};
    buffers.reserve(writes.size() + reads.size());
    for (const PatternWrite& w : writes) {
      buffers.emplace_back(w.length, w.value);
      if (nbd_aio_pwrite(h, buffers.back().data(), w.length, w.offset, done, 0) < 0) {
        failure = std::string("nbd_aio_pwrite: ") + nbd_get_error();
        return;
      }
    }
    for (const Read& r : reads) {
      buffers.emplace_back(r.length);
      if (nbd_aio_pread(h, buffers.back().data(), r.length, r.offset, done, 0) < 0) {
        failure = std::string("nbd_aio_pread: ") + nbd_get_error();
        return;
      }
    }
    const auto deadline = SteadyClock::now() + timeout;
    while (nbd_aio_in_flight(h) > 0) {
      if (SteadyClock::now() > deadline) {
        failure = "requests still in flight at the deadline";
        return;
      }
      if (nbd_poll(h, 100) < 0) {
        failure = std::string("nbd_poll: ") + nbd_get_error();
        return;
      }
    }
  }

  std::span<const uint8_t> ReadResult(size_t i) const { return buffers[writes.size() + i]; }
};

TEST_CASE("concurrent overlapping unaligned writes and reads: no lost update, no EIO") {
  FileMembers m(1, kMemberSize);
  const std::string name = "ck-concurrent";
  CreateOk({"--name", name}, m.uris());
  Served v(m.uris(), name);
  NbdClient client;
  REQUIRE_NBD_OK(client.Connect(v.uri(name)));
  const uint64_t size = static_cast<uint64_t>(client.Size());

  // A hot area of 24 blocks: the first 12 hold data, the rest were never written.
  constexpr uint64_t kHot = 24 * kBlock;
  Bytes before(kHot, 0);
  const Bytes base = RandomBytes(12 * kBlock, 606);
  REQUIRE_NBD_OK(client.Pwrite(base, 0));
  std::copy(base.begin(), base.end(), before.begin());

  // 4 connections x 20 writes in flight at once, every write with its own non-zero value, at
  // random unaligned places in the hot area: many share blocks, many share bytes. A fifth
  // connection reads unaligned ranges of the hot area meanwhile.
  constexpr int kWriters = 4, kWritesEach = 20, kReads = 40;
  std::mt19937_64 rng(607);
  std::vector<std::unique_ptr<AioClient>> clients;
  for (int w = 0; w < kWriters; ++w) {
    clients.push_back(std::make_unique<AioClient>());
    REQUIRE_NBD_OK(clients.back()->client->Connect(v.uri(name)));
    for (int j = 0; j < kWritesEach; ++j) {
      const uint64_t length = 1 + rng() % (2 * kBlock);
      const uint64_t offset = rng() % (kHot - length);
      clients.back()->writes.push_back(
          {offset, length, static_cast<uint8_t>(1 + w * kWritesEach + j)});
    }
  }
  clients.push_back(std::make_unique<AioClient>());
  AioClient& reader = *clients.back();
  REQUIRE_NBD_OK(reader.client->Connect(v.uri(name)));
  for (int j = 0; j < kReads; ++j) {
    const uint64_t length = 1 + rng() % (3 * kBlock);
    reader.reads.push_back({rng() % (kHot - length), length});
  }

  // What each byte may hold at any time: its value before, or that of a write covering it.
  std::vector<std::set<uint8_t>> covering(kHot);
  for (const auto& c : clients)
    for (const PatternWrite& p : c->writes)
      for (uint64_t at = p.offset; at < p.offset + p.length; ++at)
        covering[at].insert(p.value);

  std::vector<std::thread> threads;
  for (auto& c : clients)
    threads.emplace_back([&c] { c->Run(20s); });
  for (std::thread& t : threads)
    t.join();
  for (auto& c : clients) {
    CHECK_MESSAGE(c->failure.empty(), c->failure);
    CHECK(c->completed == static_cast<int>(c->writes.size() + c->reads.size()));
    CHECK_MESSAGE(c->first_error == 0, "a request failed: " << ErrnoName(c->first_error));
  }
  uint64_t impossible = 0;
  for (size_t j = 0; j < reader.reads.size(); ++j) {
    const std::span<const uint8_t> got = reader.ReadResult(j);
    for (uint64_t i = 0; i < got.size(); ++i) {
      const uint64_t at = reader.reads[j].offset + i;
      if (got[i] != before[at] && covering[at].count(got[i]) == 0) ++impossible;
    }
  }
  CHECK_MESSAGE(impossible == 0, impossible << " bytes read meanwhile held a value never written");

  // Afterwards the whole volume reads without error, twice the same.
  const Bytes first = client.ReadOrThrow(size, 0);
  const Bytes second = client.ReadOrThrow(size, 0);
  CHECK(first == second);
  CHECK(AllZero({first.data() + kHot, size - kHot}));
  // Every byte holds the value of one of the writes that covered it; a byte only one write
  // covered holds that write's value (a merge of a partial block must not bring back the
  // bytes of a concurrent write to the same block's other bytes); untouched bytes are as before.
  uint64_t lost = 0, foreign = 0;
  std::string example;
  for (uint64_t at = 0; at < kHot; ++at) {
    const std::set<uint8_t>& values = covering[at];
    const uint8_t got = first[at];
    const bool ok = values.empty() ? got == before[at] : values.count(got) == 1;
    if (!ok) {
      (values.size() == 1 ? lost : foreign) += 1;
      if (example.empty())
        example = "offset " + std::to_string(at) + ": got " + std::to_string(got) + " from " +
                  std::to_string(values.size()) + " covering writes";
    }
  }
  CHECK_MESSAGE(lost == 0, lost << " bytes lost their only write; first bad " << example);
  CHECK_MESSAGE(foreign == 0, foreign << " bytes hold no covering write's value; " << example);
  const auto stats = IntegrityStats(v, name);
  CHECK(stats.at("checksum_errors") == "0");
  CHECK(stats.at("rereads_recovered") == "0");
  for (auto& c : clients)
    CHECK_NBD_OK(c->client->Shutdown());
}

// ---------------------------------------------------------------------------
// 5. Holes.

TEST_CASE("never-written, trimmed and zeroed blocks are holes that read as zeros") {
  FileMembers m(1, kMemberSize);
  const std::string name = "ck-holes";
  CreateOk({"--name", name}, m.uris());
  const VolumeMap map = MapOf(m.uris());
  Served v(m.uris(), name);
  NbdClient client;
  REQUIRE_NBD_OK(client.Connect(v.uri(name)));
  const uint64_t size = static_cast<uint64_t>(client.Size());
  const std::string sz = std::to_string(size);

  CHECK(MapString(client, size) == "hole,zero@0+" + sz);
  const CommandResult info = RunOk({kNbdinfo, "--map", v.uri(name)});
  CHECK_MESSAGE(LineWithAll(info.stdout_text, {"0", sz, "3", "hole,zero"}) != "", info.stdout_text);

  // A never-written block is not read from the member: garbage there does not show. (The
  // zeros are put back: recovery after a crash would rightly take the garbage for data.)
  const uint64_t garbage_at = map.Place(2 * kMiB).file_offset;
  WriteFileAt(m.file(0), garbage_at, RandomBytes(kBlock, 707));
  CHECK(AllZero(client.ReadOrThrow(kBlock, 2 * kMiB)));
  CHECK(MapString(client, kBlock, 2 * kMiB) == "hole,zero@2097152+4096");
  WriteFileAt(m.file(0), garbage_at, Bytes(kBlock, 0));

  const Bytes data = RandomBytes(64 * kKiB, 708);
  REQUIRE_NBD_OK(client.Pwrite(data, 128 * kKiB));
  REQUIRE_NBD_OK(client.Pwrite({data.data(), 10}, 300000));  // 10 bytes: all of block 73 is data
  CHECK(MapString(client, size) ==
        "hole,zero@0+131072 data@131072+65536 hole,zero@196608+102400 data@299008+4096 "
        "hole,zero@303104+" +
            std::to_string(size - 303104));

  // Discard of whole blocks 136K..152K and of part of a block (a no-op); write-zeroes of whole
  // blocks 168K..176K.
  QemuIo(v.uri(name),
         {"discard 139264 16384", "discard 131073 100", "write -z 172032 8192", "flush"});
  CHECK(MapString(client, 64 * kKiB, 128 * kKiB) ==
        "data@131072+8192 hole,zero@139264+16384 data@155648+16384 hole,zero@172032+8192 "
        "data@180224+16384");
  Bytes want = data;
  std::fill_n(want.begin() + 8 * kKiB, 16 * kKiB, 0);
  std::fill_n(want.begin() + 40 * kKiB, 8 * kKiB, 0);
  CHECK(client.ReadOrThrow(64 * kKiB, 128 * kKiB) == want);
  // The members' blocks are zeroed too, so that recovery after a crash cannot bring them back.
  CHECK(AllZero(ReadFileRange(m.file(0), map.Place(136 * kKiB).file_offset, 16 * kKiB)));
  CHECK(AllZero(ReadFileRange(m.file(0), map.Place(168 * kKiB).file_offset, 8 * kKiB)));
  const std::string before_stop = MapString(client, size);
  REQUIRE_NBD_OK(client.Shutdown());
  v.Stop();

  // The table went to the members on the clean stop: the same holes after a restart.
  Served again(m.uris(), name);
  NbdClient reread;
  REQUIRE_NBD_OK(reread.Connect(again.uri(name)));
  CHECK(MapString(reread, size) == before_stop);
  CHECK(reread.ReadOrThrow(64 * kKiB, 128 * kKiB) == want);
}

// Structured READ replies: libnbd reports each chunk it receives. Holes come as OFFSET_HOLE
// chunks, data as OFFSET_DATA; with DF the reply must not be split, so it is one data chunk.
constexpr const char* kStructuredRead = R"(
import nbd, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
for flags in (0, nbd.CMD_FLAG_DF):
    chunks = []
    def chunk(buf, offset, status, err):
        kind = {nbd.READ_DATA: "data", nbd.READ_HOLE: "hole"}[status]
        chunks.append("%s@%d+%d" % (kind, offset, len(buf)))
        return 0
    buf = h.pread_structured(262144, 0, chunk, flags)
    print(" ".join(sorted(chunks, key=lambda c: int(c.split("@")[1].split("+")[0]))))
    print(buf[131072:131072 + 8].hex(), buf[0:8].hex())
h.shutdown()
)";

TEST_CASE("structured READ replies carry unwritten blocks as hole chunks") {
  FileMembers m(1, kMemberSize);
  const std::string name = "ck-sparse";
  CreateOk({"--name", name}, m.uris());
  Served v(m.uris(), name);
  NbdClient client;
  REQUIRE_NBD_OK(client.Connect(v.uri(name)));
  const Bytes data = RandomBytes(64 * kKiB, 710);
  REQUIRE_NBD_OK(client.Pwrite(data, 128 * kKiB));
  const CommandResult r = RunOk({kPython3, "-c", kStructuredRead, v.uri(name)});
  std::istringstream lines(r.stdout_text);
  std::string sparse, sparse_bytes, whole, whole_bytes;
  std::getline(lines, sparse);
  std::getline(lines, sparse_bytes);
  std::getline(lines, whole);
  std::getline(lines, whole_bytes);
  CHECK(sparse == "hole@0+131072 data@131072+65536 hole@196608+65536");
  CHECK(whole == "data@0+262144");
  // Both replies give the client the same bytes: the data, and zeros in the holes.
  std::ostringstream hex;
  for (size_t i = 0; i < 8; ++i)
    hex << std::hex << std::setw(2) << std::setfill('0') << static_cast<int>(data[i]);
  CHECK(sparse_bytes == hex.str() + " 0000000000000000");
  CHECK(whole_bytes == sparse_bytes);
}

TEST_CASE("write-zeroes longer than a 64 KiB block that covers no whole block") {
  // With 64 KiB blocks a write-zeroes can cover parts of two blocks and no whole one while
  // being longer than one block.
  FileMembers m(1, kMemberSize);
  const std::string name = "ck-bigblock";
  CreateOk({"--name", name, "--block-size", "64K"}, m.uris());
  Served v(m.uris(), name);
  NbdClient client;
  REQUIRE_NBD_OK(client.Connect(v.uri(name)));
  const Bytes data = RandomBytes(256 * kKiB, 709);
  REQUIRE_NBD_OK(client.Pwrite(data, 0));
  CHECK_NBD_OK(client.Zero(100000, 1));  // [1, 100001): block 0 from byte 1, block 1 in part
  Bytes want = data;
  std::fill_n(want.begin() + 1, 100000, 0);
  CHECK(client.ReadOrThrow(want.size(), 0) == want);
}

// ---------------------------------------------------------------------------
// 6. Keyed checksums.

TEST_CASE("a keyed volume is served with its key only") {
  FileMembers m(2, kMemberSize);
  const std::string name = "ck-keyed";
  const std::string key = m.dir().File("volume.key");
  WriteKeyFile(key, RandomBytes(32, 808));
  const std::string wrong = m.dir().File("wrong.key");
  WriteKeyFile(wrong, RandomBytes(32, 809));
  CreateOk({"--name", name, "--checksum", "blake2b-keyed", "--key-file", key}, m.uris());

  const Bytes data = RandomBytes(100 * kKiB + 1, 810);
  {
    Served v(Concat({"--key-file", key}, m.uris()), name);
    NbdClient client;
    REQUIRE_NBD_OK(client.Connect(v.uri(name)));
    REQUIRE_NBD_OK(client.Pwrite(data, 4097));
    CHECK(client.ReadOrThrow(data.size(), 4097) == data);
    v.Stop();
  }
  CheckServeRefused(m.uris(), {"\"" + name + "\"", "keyed checksums", "a key is needed"});
  CheckServeRefused(Concat({"--key-file", wrong}, m.uris()),
                    {"wrong checksum key", "\"" + name + "\""});
  // Nothing was marked dirty by the refusals; the right key still reads the data back.
  for (const Inspected& x : InspectOk(m.uris())) {
    CHECK(x.state == "clean");
    CHECK(x.checksum == "blake2b-keyed");
  }
  Served v(Concat({"--key-file", key}, {m.uri(1), m.uri(0)}), name);
  NbdClient client;
  REQUIRE_NBD_OK(client.Connect(v.uri(name)));
  CHECK(client.ReadOrThrow(data.size(), 4097) == data);
}

TEST_CASE("a key for an unkeyed volume is refused") {
  FileMembers m(1, kMemberSize);
  const std::string key = m.dir().File("volume.key");
  WriteKeyFile(key, RandomBytes(32, 811));
  CreateOk({"--name", "ck-unkeyed", "--checksum", "blake2b"}, m.uris());
  CheckServeRefused(Concat({"--key-file", key}, m.uris()),
                    {"a checksum key was given", "\"ck-unkeyed\"", "not keyed"});
}

TEST_SUITE_END();

}  // namespace
}  // namespace dst::test::aggregator_checksum_test
