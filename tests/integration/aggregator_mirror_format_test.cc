// Integration tests of mirror and raid10 volumes in member format version 2, as far as they go
// today: `dst-aggregator create --layout mirror|raid10` formats plugin members, `inspect --json`
// (read by Python's json module) shows the version 2 fields with the values create must give
// them, bad arguments are refused before anything is written, and `serve --raw` refuses the
// layouts with one error line (serving them: aggregator_mirror_test.cc).
#include <algorithm>
#include <cstdint>
#include <map>
#include <set>
#include <sstream>

#include "tests/integration/plugin_fixture.h"
#include "tests/integration/volume_fixture.h"

namespace dst::test::aggregator_mirror_format_test {
namespace {

// One member's current superblock, flattened by Python from inspect --json: name -> value, lists
// joined with commas.
using Fields = std::map<std::string, std::string>;

constexpr const char* kFlattenJson = R"(
import json, sys
doc = json.load(open(sys.argv[1]))
assert isinstance(doc, list), "not an array"
for m in doc:
    sb, a = m["superblock"], m["superblock"]["areas"]
    slots = sb["slots"]
    fields = {
        "uri": m["uri"], "slot": m["slot"], "other_slot": m["other_slot"],
        "version": sb["version"], "event": sb["event"], "layout": sb["layout"],
        "chunk_size": sb["chunk_size"], "volume_uuid": sb["volume_uuid"],
        "member_uuid": sb["member_uuid"], "member_index": sb["member_index"],
        "member_count": sb["member_count"], "volume_size": sb["volume_size"],
        "copies": sb["copies"], "set": sb["set"], "copy": sb["copy"],
        "generation": sb["generation"], "history": ",".join(sb["history"]),
        "map_epoch": sb["map_epoch"], "ownership_epoch": sb["ownership_epoch"],
        "owner_uuid": "null" if sb["owner_uuid"] is None else sb["owner_uuid"],
        "members": ",".join(sb["members"]),
        "slot_states": ",".join(s["state"] for s in slots),
        "slot_members": ",".join(s["member_uuid"] for s in slots),
        "stale_since": ",".join(str(s["stale_since"]) for s in slots),
        "cursors": ",".join(str(s["cursor"]) for s in slots),
        "flags": ",".join("+".join(s["flags"]) for s in slots),
        "bitmap_offset": a["bitmap"]["offset"], "bitmap_size": a["bitmap"]["size"],
        "missed_offset": a["missed_writes"]["offset"], "missed_size": a["missed_writes"]["size"],
        "table_offset": a["table"]["offset"], "data_offset": a["data"]["offset"],
        "data_size": a["data"]["size"], "member_size": sb["member_size"],
        "table_size": a["table"]["size"],
    }
    print("\t".join(k + "=" + str(v) for k, v in fields.items()))
)";

Fields ParseLine(const std::string& line) {
  Fields out;
  std::istringstream in(line);
  std::string field;
  while (std::getline(in, field, '\t')) {
    const size_t eq = field.find('=');
    REQUIRE(eq != std::string::npos);
    out[field.substr(0, eq)] = field.substr(eq + 1);
  }
  return out;
}

// inspect --json of every member, which must all hold a valid superblock.
std::vector<Fields> InspectOk(const std::vector<std::string>& uris) {
  const CommandResult r = RunAggregator(Concat({"inspect", "--json"}, uris));
  INFO("stderr:\n" << r.stderr_text);
  REQUIRE(r.exit_code == 0);
  CHECK(r.stderr_text.empty());
  TempDir dir("dst-mirror-json");
  const std::string path = dir.File("inspect.json");
  WriteFile(path, {reinterpret_cast<const uint8_t*>(r.stdout_text.data()), r.stdout_text.size()});
  const CommandResult flat = RunOk({kPython3, "-c", kFlattenJson, path});
  std::vector<Fields> out;
  std::istringstream in(flat.stdout_text);
  std::string line;
  while (std::getline(in, line))
    out.push_back(ParseLine(line));
  REQUIRE(out.size() == uris.size());
  return out;
}

uint64_t Number(const Fields& f, const std::string& key) {
  REQUIRE_MESSAGE(f.count(key), key);
  return std::stoull(f.at(key));
}

std::string Joined(const std::vector<std::string>& parts) {
  std::string out;
  for (const std::string& p : parts)
    out += (out.empty() ? "" : ",") + p;
  return out;
}

// What every member of a freshly created mirror or raid10 holds: version 2, the same generation
// on all, no history, no owner, every slot active and owned by its member, the missed-write map
// the bitmap's twin right after it. Returns the members' data sizes.
std::vector<uint64_t> CheckFreshVolume(const std::vector<Fields>& members, uint64_t copies) {
  std::vector<std::string> member_uuids;
  for (const Fields& m : members)
    member_uuids.push_back(m.at("member_uuid"));
  CHECK(std::set<std::string>(member_uuids.begin(), member_uuids.end()).size() == members.size());
  std::vector<uint64_t> data_sizes;
  for (size_t i = 0; i < members.size(); ++i) {
    const Fields& m = members[i];
    INFO(m.at("uri"));
    CHECK(m.at("version") == "2");
    CHECK(m.at("event") == "1");
    CHECK(m.at("slot") == "1");
    CHECK(m.at("other_slot") == "valid");
    CHECK(Number(m, "member_index") == i);
    CHECK(Number(m, "member_count") == members.size());
    CHECK(Number(m, "copies") == copies);
    CHECK(Number(m, "set") == i / copies);
    CHECK(Number(m, "copy") == i % copies);
    CHECK(m.at("volume_uuid") == members[0].at("volume_uuid"));
    CHECK(m.at("generation") == members[0].at("generation"));
    CHECK(m.at("generation").size() == 36);
    CHECK(m.at("generation") != m.at("volume_uuid"));
    CHECK(m.at("history").empty());
    CHECK(m.at("map_epoch") == "0");
    CHECK(m.at("ownership_epoch") == "0");
    CHECK(m.at("owner_uuid") == "null");
    const std::string actives = Joined(std::vector<std::string>(members.size(), "active"));
    CHECK(m.at("members") == actives);
    CHECK(m.at("slot_states") == actives);
    CHECK(m.at("slot_members") == Joined(member_uuids));
    CHECK(m.at("stale_since") == Joined(std::vector<std::string>(members.size(), "0")));
    CHECK(m.at("cursors") == Joined(std::vector<std::string>(members.size(), "0")));
    CHECK(m.at("flags") == std::string(members.size() - 1, ','));
    CHECK(Number(m, "bitmap_offset") == 8192);
    CHECK(Number(m, "missed_offset") == Number(m, "bitmap_offset") + Number(m, "bitmap_size"));
    CHECK(Number(m, "missed_size") == Number(m, "bitmap_size"));
    CHECK(Number(m, "table_offset") == Number(m, "missed_offset") + Number(m, "missed_size"));
    CHECK(Number(m, "data_offset") == kMiB);
    data_sizes.push_back(Number(m, "data_size"));
  }
  return data_sizes;
}

TEST_SUITE_BEGIN("aggregator_mirror_format");

TEST_CASE("create --layout mirror: two copies in format version 2, one generation") {
  FileMembers m({16 * kMiB, 20 * kMiB});
  const CommandResult created = CreateOk({"--name", "mir", "--layout", "mirror"}, m.uris());
  CHECK(Contains(created.stdout_text, "mirror, 2 copies, 2 members"));
  CHECK(Contains(created.stdout_text, "format:   version 2,"));

  const std::vector<Fields> members = InspectOk(m.uris());
  const std::vector<uint64_t> data = CheckFreshVolume(members, 2);
  CHECK(Contains(created.stdout_text, "generation: " + members[0].at("generation")));
  for (const Fields& f : members) {
    CHECK(f.at("layout") == "mirror");
    CHECK(f.at("chunk_size") == "0");
    // The volume is as large as the smaller copy.
    CHECK(Number(f, "volume_size") == data[0]);
  }
  // Both copies have the smaller copy's areas, so one member offset means the same on each; only
  // the recorded member size is each export's own.
  CHECK(data[0] == data[1]);
  CHECK(members[0].at("table_size") == members[1].at("table_size"));
  CHECK(Number(members[0], "member_size") == 16 * kMiB);
  CHECK(Number(members[1], "member_size") == 20 * kMiB);

  // create zeroed everything from the bitmap to the end of the data area, the missed-write map
  // included; the slots hold the superblocks.
  for (size_t i = 0; i < 2; ++i) {
    const uint64_t from = Number(members[i], "bitmap_offset");
    const uint64_t to = Number(members[i], "data_offset") + data[i];
    CHECK(AllZero(ReadFileRange(m.file(i), from, to - from)));
  }

  const CommandResult text = RunAggregator(Concat({"inspect"}, m.uris()));
  CHECK(text.exit_code == 0);
  CHECK(Contains(text.stdout_text, "layout:       mirror, 2 copies, 2 members"));
  CHECK(Contains(text.stdout_text, "missed writes: [12288, +4096) 4 KiB\n"));
  CHECK(Contains(text.stdout_text,
                 "member:       1 " + members[1].at("member_uuid") + ", set 0 copy 1\n"));
  CHECK(Contains(text.stdout_text,
                 "slot 1:       active, member " + members[1].at("member_uuid") + "\n"));
  CHECK(Contains(text.stdout_text, "epochs:       map 0, ownership 0, owner none\n"));
}

TEST_CASE("create --layout raid10: member i is copy i % 2 of set i / 2, striped over the sets") {
  FileMembers m({16 * kMiB, 16 * kMiB, 24 * kMiB, 20 * kMiB});
  const CommandResult created = CreateOk(
      {"--name", "r10", "--layout", "raid10", "--copies", "2", "--chunk", "128K"}, m.uris());
  CHECK(Contains(created.stdout_text, "raid10, chunk 128 KiB, 2 copies x 2 sets, 4 members"));
  CHECK(Contains(created.stdout_text, "set 1 copy 0"));

  const std::vector<Fields> members = InspectOk(m.uris());
  const std::vector<uint64_t> data = CheckFreshVolume(members, 2);
  // Each set is as large as its smaller copy; the volume is both sets' smaller share in chunks.
  const uint64_t chunk = 128 * kKiB;
  const uint64_t set0 = std::min(data[0], data[1]), set1 = std::min(data[2], data[3]);
  for (const Fields& f : members) {
    CHECK(f.at("layout") == "raid10");
    CHECK(Number(f, "chunk_size") == chunk);
    CHECK(Number(f, "volume_size") == 2 * (std::min(set0, set1) / chunk * chunk));
  }
}

TEST_CASE("create refuses copy counts and options a mirror or raid10 cannot have") {
  FileMembers m(4, 4 * kMiB);
  const std::vector<std::string> two = {m.uri(0), m.uri(1)};
  const std::vector<std::string> three = {m.uri(0), m.uri(1), m.uri(2)};
  auto create = [](std::vector<std::string> options, const std::vector<std::string>& uris) {
    return Create(Concat({"--name", "bad"}, options), uris);
  };
  SUBCASE("one copy") {
    CheckRefused(create({"--layout", "mirror", "--copies", "1"}, two),
                 {"--copies 1: a mirror volume keeps at least 2 copies, not 1"});
    CheckRefused(create({"--layout", "raid10", "--copies", "1"}, m.uris()),
                 {"--copies 1: a raid10 volume keeps at least 2 copies, not 1"});
  }
  SUBCASE("a mirror has one member per copy") {
    CheckRefused(create({"--layout", "mirror", "--copies", "2"}, three),
                 {"--copies 2: a mirror of 2 copies has exactly 2 members, not 3"});
    CheckRefused(create({"--layout", "mirror"}, {m.uri(0)}),
                 {"--layout mirror: a mirror needs at least 2 members, one per copy"});
  }
  SUBCASE("a raid10 has whole sets, at least two") {
    CheckRefused(create({"--layout", "raid10"}, three),
                 {"--layout raid10: raid10 with 2 copies needs a multiple of 2 members, not 3"});
    CheckRefused(create({"--layout", "raid10", "--copies", "3"}, m.uris()),
                 {"--copies 3: raid10 with 3 copies needs a multiple of 3 members, not 4"});
    CheckRefused(create({"--layout", "raid10"}, two),
                 {"raid10 with 2 members and 2 copies is a single set: use layout mirror"});
    CheckRefused(create({"--layout", "raid10", "--copies", "4"}, m.uris()),
                 {"--copies 4: raid10 with 4 members and 4 copies is a single set"});
  }
  SUBCASE("copies that are not a number") {
    CheckRefused(create({"--layout", "mirror", "--copies", "two"}, two),
                 {"--copies two: not a number of copies"});
    CheckRefused(create({"--layout", "mirror", "--copies", "2x"}, two),
                 {"--copies 2x: not a number of copies"});
  }
  SUBCASE("options of other layouts") {
    CheckRefused(create({"--copies", "2"}, two),
                 {"--copies applies to --layout mirror and raid10 only"});
    CheckRefused(create({"--layout", "stripe", "--copies", "2"}, two), {"--copies applies"});
    CheckRefused(create({"--layout", "mirror", "--chunk", "64K"}, two),
                 {"--chunk applies to --layout stripe and raid10 only"});
  }
  SUBCASE("raid10 chunks follow the stripe rules") {
    CheckRefused(
        create({"--layout", "raid10", "--chunk", "3000"}, m.uris()),
        {"--chunk 3000 B: a chunk is a power of two from the block size (4 KiB) to 1 GiB"});
    CheckRefused(create({"--layout", "raid10", "--chunk", "2K"}, m.uris()), {"--chunk 2 KiB"});
    CheckRefused(create({"--layout", "raid10", "--chunk", "8M"}, m.uris()),
                 {"is smaller than one chunk (8 MiB)"});
  }
  CHECK(m.AllBlank());
}

TEST_CASE("serve refuses mirror and raid10 over raw members with one line") {
  FileMembers m(4, 4 * kMiB);
  TempDir dir("dst-mirror-serve");
  const std::string socket = dir.File("agg.sock");
  SUBCASE("raw members: redundancy needs the superblocks") {
    CheckRefused(RunAggregator({"serve", "--raw", "--layout", "mirror", "--unix", socket, m.uri(0),
                                m.uri(1)}),
                 {"--layout mirror: mirror and raid10 need the member format",
                  "dst-aggregator create --layout mirror"});
    CheckRefused(
        RunAggregator(Concat({"serve", "--raw", "--layout", "raid10", "--unix", socket}, m.uris())),
        {"--layout raid10: mirror and raid10 need the member format"});
  }
}

TEST_CASE("a member of a mirror re-created as linear is version 1 again") {
  FileMembers m(2, 4 * kMiB);
  CreateOk({"--name", "mir", "--layout", "mirror"}, m.uris());
  CreateOk({"--name", "lin", "--force"}, m.uris());
  const CommandResult r = RunAggregator(Concat({"inspect", "--json"}, m.uris()));
  REQUIRE(r.exit_code == 0);
  CHECK(Contains(r.stdout_text, "\"version\":1,"));
  CHECK_FALSE(Contains(r.stdout_text, "\"version\":2"));
  CHECK_FALSE(Contains(r.stdout_text, "missed_writes"));
  // Version 1 leaves everything past byte 352 of both slots zero.
  for (size_t i = 0; i < 2; ++i) {
    CHECK(AllZero(ReadFileRange(m.file(i), 352, 4096 - 352)));
    CHECK(AllZero(ReadFileRange(m.file(i), 4096 + 352, 4096 - 352)));
  }
}

TEST_SUITE_END();

}  // namespace
}  // namespace dst::test::aggregator_mirror_format_test
