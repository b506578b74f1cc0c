// Integration tests of `dst-aggregator create` and `dst-aggregator inspect`: members are nbdkit
// processes serving our plugin on temp files, the commands are the real binary, and the on-member
// bytes are checked in the backing files. inspect --json is parsed by Python's json module, so the
// document has to be valid JSON, not merely look like it.
#include <algorithm>
#include <cstdint>
#include <set>
#include <sstream>

#include "tests/integration/plugin_fixture.h"
#include "tests/integration/volume_fixture.h"

namespace dst::test::aggregator_metadata_test {
namespace {

using namespace std::chrono_literals;

constexpr uint64_t kSlotSize = 4096;

// ---------------------------------------------------------------------------
// inspect --json, read by Python.

// One entry of the JSON array, flattened.
struct Inspected {
  bool ok = false;
  std::string uri;
  std::string error;  // when !ok
  std::string slots;  // when !ok and the member was read: "absent,torn"
  uint64_t slot = 0, event = 0, member_index = 0, member_count = 0, chunk_size = 0, block_size = 0,
           region_size = 0, volume_size = 0, data_offset = 0, data_size = 0, bitmap_offset = 0,
           table_end = 0;
  std::string other_slot, volume_uuid, name, member_uuid, layout, checksum, key_identity, members;
};

// Prints one tab-separated line per array element, in a fixed field order.
constexpr const char* kFlattenJson = R"(
import json, sys
doc = json.load(open(sys.argv[1]))
assert isinstance(doc, list), "not an array"
for m in doc:
    if "error" in m:
        print("\t".join(["error", m["uri"], m["error"], ",".join(m.get("slots", []))]))
        continue
    sb, a = m["superblock"], m["superblock"]["areas"]
    fields = ["ok", m["uri"], m["slot"], m["other_slot"], sb["event"], sb["volume_uuid"],
              sb["volume_name"], sb["member_uuid"], sb["member_index"], sb["member_count"],
              sb["layout"], sb["chunk_size"], sb["block_size"], sb["region_size"],
              sb["checksum"], sb["key_identity"] or "-", sb["volume_size"],
              a["data"]["offset"], a["data"]["size"], a["bitmap"]["offset"],
              a["table"]["offset"] + a["table"]["size"], ",".join(sb["members"])]
    print("\t".join(str(f) for f in fields))
)";

std::vector<std::string> SplitTabs(const std::string& line) {
  std::vector<std::string> out;
  std::istringstream in(line);
  std::string field;
  while (std::getline(in, field, '\t'))
    out.push_back(field);
  if (!line.empty() && line.back() == '\t') out.push_back("");
  return out;
}

Inspected ParseOk(const std::vector<std::string>& f) {
  REQUIRE(f.size() == 22);
  Inspected m;
  m.ok = true;
  m.uri = f[1];
  m.slot = std::stoull(f[2]);
  m.other_slot = f[3];
  m.event = std::stoull(f[4]);
  m.volume_uuid = f[5];
  m.name = f[6];
  m.member_uuid = f[7];
  m.member_index = std::stoull(f[8]);
  m.member_count = std::stoull(f[9]);
  m.layout = f[10];
  m.chunk_size = std::stoull(f[11]);
  m.block_size = std::stoull(f[12]);
  m.region_size = std::stoull(f[13]);
  m.checksum = f[14];
  m.key_identity = f[15];
  m.volume_size = std::stoull(f[16]);
  m.data_offset = std::stoull(f[17]);
  m.data_size = std::stoull(f[18]);
  m.bitmap_offset = std::stoull(f[19]);
  m.table_end = std::stoull(f[20]);
  m.members = f[21];
  return m;
}

Inspected ParseLine(const std::string& line) {
  const std::vector<std::string> f = SplitTabs(line);
  REQUIRE(!f.empty());
  if (f[0] == "ok") return ParseOk(f);
  REQUIRE(f.size() == 4);
  Inspected m;
  m.uri = f[1];
  m.error = f[2];
  m.slots = f[3];
  return m;
}

struct InspectResult {
  int exit_code = -1;
  std::string stderr_text;
  std::vector<Inspected> members;
};

InspectResult InspectJson(const std::vector<std::string>& uris) {
  const CommandResult r = RunAggregator(Concat({"inspect", "--json"}, uris));
  TempDir dir("dst-meta-json");
  const std::string path = dir.File("inspect.json");
  WriteFile(path, {reinterpret_cast<const uint8_t*>(r.stdout_text.data()), r.stdout_text.size()});
  const CommandResult flat = RunOk({kPython3, "-c", kFlattenJson, path});
  InspectResult result{r.exit_code, r.stderr_text, {}};
  std::istringstream in(flat.stdout_text);
  std::string line;
  while (std::getline(in, line))
    result.members.push_back(ParseLine(line));
  REQUIRE(result.members.size() == uris.size());
  return result;
}

// The current superblock of every member, which must all be valid.
std::vector<Inspected> InspectOk(const std::vector<std::string>& uris) {
  const InspectResult r = InspectJson(uris);
  INFO("stderr:\n" << r.stderr_text);
  REQUIRE(r.exit_code == 0);
  CHECK(r.stderr_text.empty());
  for (const Inspected& m : r.members)
    REQUIRE_MESSAGE(m.ok, m.uri << ": " << m.error);
  return r.members;
}

// Flips the four bytes of the slot's self-checksum (offset 16) in the backing file, as a torn
// write would leave them.
void TearSlot(const std::string& file, uint64_t slot) {
  const uint64_t offset = slot * kSlotSize + 16;
  Bytes bytes = ReadFileRange(file, offset, 4);
  for (uint8_t& b : bytes)
    b ^= 0xff;
  WriteFileAt(file, offset, bytes);
}

std::string KeyFile(const TempDir& dir, const std::string& name, size_t size, uint64_t seed) {
  const std::string path = dir.File(name);
  WriteKeyFile(path, RandomBytes(size, seed));
  return path;
}

// ---------------------------------------------------------------------------

TEST_SUITE_BEGIN("aggregator_metadata");

TEST_CASE("create formats three stripe members and inspect --json reads them back") {
  FileMembers m({16 * kMiB, 20 * kMiB, 24 * kMiB});
  const CommandResult created =
      CreateOk({"--name", "vol-a", "--layout", "stripe", "--chunk", "64K"}, m.uris());
  CHECK(Contains(created.stdout_text, "stripe, chunk 64 KiB, 3 members"));

  const std::vector<Inspected> members = InspectOk(m.uris());
  std::set<std::string> member_uuids;
  uint64_t smallest_data = UINT64_MAX;
  for (size_t i = 0; i < members.size(); ++i) {
    const Inspected& x = members[i];
    INFO(x.uri);
    CHECK(x.uri == m.uri(i));
    CHECK(x.slot == 1);  // create writes event 0 to slot 0, then event 1 to slot 1
    CHECK(x.event == 1);
    CHECK(x.other_slot == "valid");
    CHECK(x.volume_uuid == members[0].volume_uuid);
    CHECK(x.name == "vol-a");
    CHECK(x.member_index == i);
    CHECK(x.member_count == 3);
    CHECK(x.layout == "stripe");
    CHECK(x.chunk_size == 64 * kKiB);
    CHECK(x.block_size == 4096);
    CHECK(x.region_size == 4 * kMiB);
    CHECK(x.checksum == "crc32c");
    CHECK(x.key_identity == "-");
    CHECK(x.members == "active,active,active");
    CHECK(x.data_offset == kMiB);
    member_uuids.insert(x.member_uuid);
    smallest_data = std::min(smallest_data, x.data_size);
  }
  CHECK(member_uuids.size() == 3);
  CHECK(members[0].volume_size == 3 * (smallest_data / (64 * kKiB) * (64 * kKiB)));
  // The summary names the volume the members now hold.
  CHECK(Contains(created.stdout_text, members[0].volume_uuid));

  const CommandResult text = RunAggregator(Concat({"inspect"}, m.uris()));
  CHECK(text.exit_code == 0);
  CHECK(text.stderr_text.empty());
  for (const std::string& uri : m.uris())
    CHECK(Contains(text.stdout_text, uri + ": slot 1 in use, slot 0 valid (event 0)"));
  CHECK(Contains(text.stdout_text, "\"vol-a\" " + members[0].volume_uuid));
}

TEST_CASE("create refuses a member that holds a superblock, unless --force") {
  FileMembers m({8 * kMiB, 6 * kMiB, 4 * kMiB});
  const std::vector<std::string> first_two = {m.uri(0), m.uri(1)};
  CreateOk({"--name", "old"}, first_two);
  const std::string old_uuid = InspectOk(first_two)[0].volume_uuid;

  // The blank member comes first: checking goes on to the others before anything is written.
  const std::vector<std::string> all = {m.uri(2), m.uri(0), m.uri(1)};
  CheckRefused(Create({"--name", "new"}, all),
               {m.uri(0), "already holds a dst superblock", old_uuid, "\"old\"", "--force"});
  CHECK(AllZero(ReadFile(m.file(2))));
  CHECK(InspectOk(first_two)[0].volume_uuid == old_uuid);

  // --force overwrites nothing (and warns of nothing) while any member is refused.
  TempDir dir("dst-meta-force");
  const std::string missing = "nbd+unix:///x?socket=" + dir.File("nobody.sock");
  CheckRefused(Create({"--name", "new", "--force"}, Concat(all, {missing})), {missing});
  CHECK(InspectOk(first_two)[0].volume_uuid == old_uuid);

  const CommandResult forced = CreateOk({"--name", "new", "--force"}, all);
  CHECK(Contains(forced.stderr_text, "overwriting"));
  const std::vector<Inspected> members = InspectOk(all);
  CHECK(members[0].volume_uuid != old_uuid);
  for (size_t i = 0; i < members.size(); ++i) {
    CHECK(members[i].volume_uuid == members[0].volume_uuid);
    CHECK(members[i].member_index == i);
    CHECK(members[i].name == "new");
    CHECK(members[i].layout == "linear");
    CHECK(members[i].chunk_size == 0);
  }
  // Linear: the volume is every data area, end to end.
  CHECK(members[0].volume_size ==
        members[0].data_size + members[1].data_size + members[2].data_size);
}

TEST_CASE("inspect of a member without a superblock exits 1 and says so") {
  FileMembers m({4 * kMiB, 4 * kMiB});
  CreateOk({"--name", "one"}, {m.uri(0)});
  TempDir dir("dst-meta-missing");
  const std::string missing = "nbd+unix:///x?socket=" + dir.File("nobody.sock");

  SUBCASE("text") {
    const CommandResult r = RunAggregator({"inspect", m.uri(0), m.uri(1)});
    INFO("stderr:\n" << r.stderr_text);
    CHECK(r.exit_code == 1);
    CHECK(Contains(r.stdout_text, m.uri(0) + ": slot 1 in use"));
    CHECK(LineWithAll(r.stderr_text, {"dst-aggregator: error: ", m.uri(1), "no dst superblock"}) !=
          "");
    CHECK(std::count(r.stderr_text.begin(), r.stderr_text.end(), '\n') == 1);
  }
  SUBCASE("json") {
    const InspectResult r = InspectJson({m.uri(0), m.uri(1), missing});
    CHECK(r.exit_code == 1);
    CHECK(r.stderr_text.empty());  // everything is in the document
    CHECK(r.members[0].ok);
    CHECK_FALSE(r.members[1].ok);
    CHECK(Contains(r.members[1].error, "no dst superblock"));
    CHECK(r.members[1].slots == "absent,absent");
    CHECK_FALSE(r.members[2].ok);
    CHECK(r.members[2].uri == missing);
    CHECK(Contains(r.members[2].error, missing));
    CHECK(r.members[2].slots.empty());  // never read
  }
}

TEST_CASE("a torn slot: inspect falls back to the other one, and create still refuses") {
  FileMembers m({4 * kMiB});
  CreateOk({"--name", "torn"}, m.uris());
  const Inspected before = InspectOk(m.uris())[0];
  const uint64_t current = before.event % 2;  // the slot an event goes to (docs/format.md §2)
  REQUIRE(before.slot == current);

  TearSlot(m.file(0), current);
  const Inspected after = InspectOk(m.uris())[0];
  CHECK(after.slot == 1 - current);
  CHECK(after.event == before.event - 1);
  CHECK(after.other_slot == "torn");
  CHECK(after.volume_uuid == before.volume_uuid);
  const CommandResult text = RunAggregator({"inspect", m.uri(0)});
  CHECK(Contains(text.stdout_text, "slot " + std::to_string(1 - current) + " in use, slot " +
                                       std::to_string(current) + " torn"));

  CheckRefused(Create({"--name", "again"}, m.uris()), {m.uri(0), "already holds"});

  TearSlot(m.file(0), 1 - current);  // both torn: no usable superblock, but still a dst member
  const InspectResult both = InspectJson(m.uris());
  CHECK(both.exit_code == 1);
  CHECK(Contains(both.members[0].error, "torn or corrupted"));
  CHECK(both.members[0].slots == "torn,torn");
  CheckRefused(Create({"--name", "again"}, m.uris()),
               {m.uri(0), "damaged dst superblock", "--force"});
  CreateOk({"--name", "again", "--force"}, m.uris());
  CHECK(InspectOk(m.uris())[0].other_slot == "valid");
}

TEST_CASE("keyed checksums need a key file of 16 to 64 bytes") {
  FileMembers m({4 * kMiB, 4 * kMiB});
  TempDir dir("dst-meta-keys");
  const std::vector<std::string> keyed = {"--name", "k", "--checksum", "blake2b-keyed"};
  SUBCASE("without --key-file") {
    CheckRefused(Create(keyed, m.uris()), {"needs --key-file"});
  }
  SUBCASE("a short key") {
    const std::string key = KeyFile(dir, "short.key", 8, 1);
    CheckRefused(Create(Concat(keyed, {"--key-file", key}), m.uris()), {key, "8 bytes"});
  }
  SUBCASE("a long key") {
    const std::string key = KeyFile(dir, "long.key", 65, 2);
    CheckRefused(Create(Concat(keyed, {"--key-file", key}), m.uris()), {key, "more than 64 bytes"});
  }
  SUBCASE("an endless key file") {
    CheckRefused(Create(Concat(keyed, {"--key-file", "/dev/zero"}), m.uris()),
                 {"/dev/zero", "more than 64 bytes"});
  }
  SUBCASE("a missing key file") {
    const std::string key = dir.File("nothing.key");
    CheckRefused(Create(Concat(keyed, {"--key-file", key}), m.uris()),
                 {key, "No such file or directory"});
  }
  SUBCASE("a key for an unkeyed algorithm") {
    const std::string key = KeyFile(dir, "good.key", 32, 3);
    CheckRefused(Create({"--name", "k", "--key-file", key}, m.uris()), {"--key-file", "only"});
  }
  SUBCASE("a good key") {
    const std::string key = KeyFile(dir, "good.key", 32, 3);
    CreateOk(Concat(keyed, {"--key-file", key}), m.uris());
    const std::vector<Inspected> members = InspectOk(m.uris());
    CHECK(members[0].checksum == "blake2b-keyed");
    CHECK(members[0].key_identity.size() == 64);
    CHECK(members[1].key_identity == members[0].key_identity);
    // The identity depends on the key alone, so the same key gives it again.
    CreateOk(Concat(keyed, {"--key-file", key, "--force"}), m.uris());
    CHECK(InspectOk(m.uris())[0].key_identity == members[0].key_identity);
    return;
  }
  CHECK(m.AllBlank());
}

TEST_CASE("a member too small for the metadata is refused, and nothing is written") {
  FileMembers m({8 * kMiB, kMiB});
  CheckRefused(Create({"--name", "small"}, m.uris()),
               {m.uri(1), "too small for the member format", "needs at least"});
  CHECK(m.AllBlank());
}

TEST_CASE("an unreachable member is refused by its URI, and nothing is written") {
  FileMembers m({4 * kMiB});
  TempDir dir("dst-meta-unreachable");
  SUBCASE("a Unix socket nobody listens on") {
    const std::string missing = "nbd+unix:///x?socket=" + dir.File("nobody.sock");
    const auto start = std::chrono::steady_clock::now();
    CheckRefused(Create({"--name", "u"}, {m.uri(0), missing}), {missing});
    CHECK(std::chrono::steady_clock::now() - start < 5s);
  }
  SUBCASE("a TCP port nobody listens on") {
    const std::string missing = "nbd://127.0.0.1:" + std::to_string(PickFreePort()) + "/x";
    CheckRefused(Create({"--name", "u"}, {m.uri(0), missing}), {missing});
  }
  CHECK(m.AllBlank());
}

TEST_CASE("create zeroes the metadata and data areas and leaves the tail alone") {
  TempDir dir("dst-meta-data");
  const std::string file = dir.File("full.img");
  const Bytes original = RandomBytes(8 * kMiB, 77);
  WriteFile(file, original);
  PluginServer server({"file=" + file});
  // blake2b: 32-byte table entries, so the table is larger than crc32c's.
  CreateOk({"--name", "data", "--checksum", "blake2b", "--block-size", "512"}, {server.uri()});
  const Inspected sb = InspectOk({server.uri()})[0];
  CHECK(sb.block_size == 512);
  CHECK(sb.checksum == "blake2b");
  REQUIRE(sb.data_offset >= sb.table_end);

  const Bytes now = ReadFile(file);
  REQUIRE(now.size() == original.size());
  // Slots, then bitmap, table, padding and the data area: all zeroed by create, so that a
  // never-written block holds zeros (recovery recomputes checksums from data).
  CHECK(sb.bitmap_offset == 2 * kSlotSize);
  const uint64_t data_end = sb.data_offset + sb.data_size;
  CHECK(AllZero({now.data() + sb.bitmap_offset, data_end - sb.bitmap_offset}));
  // The tail after the data area (less than a block) is as it was.
  CHECK(std::equal(now.begin() + data_end, now.end(), original.begin() + data_end));
}

TEST_CASE("an export that cannot zero gets written zeros") {
  TempDir dir("dst-meta-nozero");
  const std::string file = dir.File("nozero.img");
  const Bytes original = RandomBytes(4 * kMiB, 78);
  WriteFile(file, original);
  NbdkitOptions o;
  o.nbdkit = DST_TOOL_NBDKIT;
  o.plugin = "file";
  o.args = {"file=" + file};
  o.nbdkit_flags = {"--filter=nozero"};  // no WRITE_ZEROES: create must write the zeros itself
  NbdkitServer server(o);
  CreateOk({"--name", "nozero"}, {server.uri()});
  const Inspected sb = InspectOk({server.uri()})[0];
  const Bytes now = ReadFile(file);
  const uint64_t data_end = sb.data_offset + sb.data_size;
  CHECK(AllZero({now.data() + sb.bitmap_offset, data_end - sb.bitmap_offset}));
  CHECK(std::equal(now.begin() + data_end, now.end(), original.begin() + data_end));
  CHECK(server.Stop() == 0);
}

TEST_CASE("two URIs that reach the same export are caught when create reads back") {
  FileMembers m({4 * kMiB});
  // The plugin's export is also its default export, so both names reach the same file.
  const std::string alias = m.uri(0).substr(0, m.uri(0).find("///") + 3) + "default" +
                            m.uri(0).substr(m.uri(0).find("?"));
  REQUIRE(alias != m.uri(0));
  CheckRefused(Create({"--name", "twice"}, {m.uri(0), alias}),
               {m.uri(0), "does not read back", "same export"});
}

TEST_CASE("bad options are refused before any member is written") {
  FileMembers m({4 * kMiB, 4 * kMiB});
  const std::vector<std::string> name = {"--name", "v"};
  SUBCASE("unknown layout") {
    CheckRefused(Create(Concat(name, {"--layout", "raid5"}), m.uris()), {"--layout", "raid5"});
  }
  SUBCASE("--chunk with a linear layout") {
    CheckRefused(Create(Concat(name, {"--chunk", "64K"}), m.uris()), {"--chunk", "stripe"});
  }
  SUBCASE("a chunk that is not a power of two") {
    CheckRefused(Create(Concat(name, {"--layout", "stripe", "--chunk", "3000"}), m.uris()),
                 {"--chunk", "power of two"});
  }
  SUBCASE("a chunk smaller than the block") {
    CheckRefused(Create(Concat(name, {"--layout", "stripe", "--chunk", "2K"}), m.uris()),
                 {"--chunk", "block size"});
  }
  SUBCASE("a block size that is not a power of two") {
    CheckRefused(Create(Concat(name, {"--block-size", "3K"}), m.uris()), {"block size"});
  }
  SUBCASE("a region smaller than a block") {
    CheckRefused(Create(Concat(name, {"--region-size", "1K"}), m.uris()), {"region size"});
  }
  SUBCASE("an unknown checksum") {
    CheckRefused(Create(Concat(name, {"--checksum", "md5"}), m.uris()), {"--checksum", "md5"});
  }
  SUBCASE("a member given twice") {
    CheckRefused(Create(name, {m.uri(0), m.uri(0)}), {m.uri(0), "twice"});
  }
  SUBCASE("not an NBD URI") {
    CheckRefused(Create(name, {m.uri(0), "http://x"}), {"http://x", "not an NBD URI"});
  }
  SUBCASE("a name over 64 bytes") {
    CheckRefused(Create({"--name", std::string(65, 'n')}, m.uris()), {"volume name", "64"});
  }
  SUBCASE("a read-only member") {
    PluginServer ro({"file=" + m.file(1), "readonly=true"});
    CheckRefused(Create(name, {m.uri(0), ro.uri()}), {ro.uri(), "read-only"});
  }
  SUBCASE("no --name") {
    const CommandResult r = Create({}, m.uris());
    CHECK(r.exit_code != 0);
    CHECK(Contains(r.stderr_text, "--name"));
  }
  CHECK(m.AllBlank());
}

TEST_SUITE_END();

}  // namespace
}  // namespace dst::test::aggregator_metadata_test
