#include "aggregator/integrity/superblock_json.h"

#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "aggregator/integrity/assembly.h"
#include "aggregator/integrity/test_superblock.h"

namespace dst::integrity::superblock_json_test {
namespace {

using testing::TestMember;
using testing::TestRedundantMember;
using testing::TestUuid;

// Structural JSON check: strings terminate, escapes are valid, brackets nest and balance, and
// nothing follows the top-level value. Enough to catch a broken writer; the integration test
// feeds the real output to a JSON parser.
bool WellFormed(const std::string& json) {
  std::vector<char> open;
  bool in_string = false;
  for (size_t i = 0; i < json.size(); ++i) {
    const char c = json[i];
    if (in_string) {
      if (static_cast<unsigned char>(c) < 0x20) return false;
      if (c == '\\') {
        if (++i == json.size() || std::string("\"\\/bfnrtu").find(json[i]) == std::string::npos) {
          return false;
        }
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '{' || c == '[') {
      open.push_back(c == '{' ? '}' : ']');
    } else if (c == '}' || c == ']') {
      if (open.empty() || open.back() != c) return false;
      open.pop_back();
      if (open.empty() && i + 1 != json.size()) return false;
    }
  }
  return !in_string && open.empty();
}

bool Has(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

TEST_CASE("json: every field, well formed") {
  Superblock sb = TestMember(1, 2, volume::LayoutKind::kStripe);
  sb.member_states[1] = MemberState::kFailed;
  const std::string json = SuperblockToJson(sb);
  CAPTURE(json);
  CHECK(WellFormed(json));
  CHECK(json.front() == '{');
  CHECK(Has(json, "{\"magic\":\"DSTMEMB1\",\"version\":1,\"flags\":0,\"event\":2,"));
  CHECK(Has(json, "\"created\":1700000000,\"created_utc\":\"2023-11-14T22:13:20Z\""));
  CHECK(Has(json, "\"volume_uuid\":\"" + FormatUuid(sb.volume_uuid) + "\""));
  CHECK(Has(json, "\"volume_name\":\"vol0\""));
  CHECK(Has(json, "\"member_index\":1,\"member_count\":2,\"layout\":\"stripe\""));
  CHECK(Has(json, "\"chunk_size\":65536,\"state\":\"clean\",\"block_size\":4096"));
  CHECK(Has(json, "\"region_size\":4194304,\"checksum\":\"crc32c\",\"member_size\":67108864"));
  CHECK(Has(json, "\"volume_size\":" + std::to_string(sb.volume_size)));
  CHECK(Has(json, "\"areas\":{\"superblocks\":{\"offset\":0,\"size\":8192},\"bitmap\":{"));
  CHECK(Has(json, "\"data\":{\"offset\":1048576,\"size\":66060288}}"));
  CHECK(Has(json,
            "\"key_identity\":null,\"encrypted\":false,\"key_slots\":[],"
            "\"members\":[\"active\",\"failed\"]}"));
}

TEST_CASE("json: the name is escaped and the key identity shown as hex") {
  Superblock sb = TestMember(0, 1);
  sb.name = "a\"b\\c\xc3\xa9";
  sb.key_id[31] = 0xab;
  const std::string json = SuperblockToJson(sb);
  CHECK(WellFormed(json));
  CHECK(Has(json, "\"volume_name\":\"a\\\"b\\\\c\xc3\xa9\""));
  CHECK(Has(json, "\"key_identity\":\"" + std::string(62, '0') + "ab\""));
  CHECK(JsonQuote("x\n\x01y") == "\"x\\u000a\\u0001y\"");
  CHECK(!WellFormed("{\"a\":\"b}"));
  CHECK(!WellFormed("{\"a\":[1}"));
}

TEST_CASE("text: one readable line per aspect") {
  Superblock sb = TestMember(1, 2);
  sb.state = VolumeState::kDirty;
  sb.event = 7;
  const std::string text = SuperblockToText(sb);
  CAPTURE(text);
  CHECK(Has(text, "volume:       \"vol0\" " + FormatUuid(sb.volume_uuid) + "\n"));
  CHECK(Has(text, "layout:       linear, 2 members, 126 MiB\n"));
  CHECK(Has(text, "member:       1 " + FormatUuid(sb.member_uuid) + "\n"));
  CHECK(Has(text, "state:        dirty, event 7\n"));
  CHECK(Has(text, "created:      2023-11-14T22:13:20Z\n"));
  CHECK(Has(text, "format:       version 1, block 4 KiB, region 4 MiB, checksum crc32c\n"));
  CHECK(Has(text, "key identity: none\n"));
  CHECK(Has(text, "data:         [1048576, +66060288) 63 MiB\n"));
  CHECK(Has(text, "members:      0 active, 1 active\n"));
}

TEST_CASE("json: version 2 adds copies, generations, epochs and one object per slot") {
  Superblock sb = TestRedundantMember(3, 4, 2, volume::LayoutKind::kRaid10);
  sb.history[0] = TestUuid(0xd);
  sb.ownership_epoch = 5;
  sb.map_epoch = 1;
  sb.owner_uuid = TestUuid(0xe);
  sb.member_states[1] = MemberState::kRebuilding;
  sb.stale_since[1] = 2;
  sb.cursor[1] = 77;
  sb.slot_flags[2] = kSlotWriteMostly | kSlotWantReplacement;
  const std::string json = SuperblockToJson(sb);
  CAPTURE(json);
  CHECK(WellFormed(json));
  CHECK(Has(json, "\"version\":2,"));
  CHECK(Has(json, "\"layout\":\"raid10\""));
  const MemberGeometry& g = sb.geometry;
  CHECK(Has(json,
            "\"bitmap\":{\"offset\":8192,\"size\":4096},\"missed_writes\":{\"offset\":12288,"
            "\"size\":4096},\"table\":{\"offset\":16384,"));
  CHECK(g.missed_writes.offset == g.bitmap.end());
  CHECK(Has(json,
            "\"members\":[\"active\",\"rebuilding\",\"active\",\"active\"],\"copies\":2,"
            "\"set\":1,\"copy\":1,\"generation\":\"" +
                FormatUuid(TestUuid(0xc)) + "\",\"history\":[\"" + FormatUuid(TestUuid(0xd)) +
                "\"],\"map_epoch\":1,\"ownership_epoch\":5,\"owner_uuid\":\"" +
                FormatUuid(TestUuid(0xe)) + "\",\"slots\":[{\"state\":\"active\""));
  CHECK(Has(json, "{\"state\":\"rebuilding\",\"member_uuid\":\"" + FormatUuid(TestUuid(2)) +
                      "\",\"stale_since\":2,\"cursor\":77,\"flags\":[]}"));
  CHECK(Has(json, "{\"state\":\"active\",\"member_uuid\":\"" + FormatUuid(TestUuid(3)) +
                      "\",\"stale_since\":0,\"cursor\":0,\"flags\":[\"write-mostly\","
                      "\"want-replacement\"]}"));
  CHECK(json.back() == '}');

  // Version 1 shows none of it.
  const std::string v1 = SuperblockToJson(TestMember(0, 2));
  for (const char* key : {"missed_writes", "copies", "generation", "slots", "owner_uuid"})
    CHECK_FALSE(Has(v1, "\"" + std::string(key) + "\":"));

  // No owner yet, no history: null and an empty list.
  const std::string fresh = SuperblockToJson(TestRedundantMember(0, 2, 2));
  CHECK(Has(fresh, "\"set\":0,\"copy\":0,"));
  CHECK(Has(fresh, "\"history\":[],\"map_epoch\":0,\"ownership_epoch\":0,\"owner_uuid\":null,"));
  CHECK(Has(fresh,
            "\"scrub\":{\"mode\":\"none\",\"paused\":false,\"cursor\":0,\"errors\":0,"
            "\"last_result\":\"none\",\"last_completed\":0}}"));
}

TEST_CASE("json and text: the scrub record") {
  Superblock sb = TestRedundantMember(0, 2, 2);
  sb.scrub = {.mode = ScrubMode::kRepair,
              .paused = true,
              .cursor = 1024,
              .errors = 3,
              .last_result = ScrubResult::kClean,
              .last_completed = 1700000000};
  CHECK(Has(SuperblockToJson(sb),
            "\"scrub\":{\"mode\":\"repair\",\"paused\":true,\"cursor\":1024,\"errors\":3,"
            "\"last_result\":\"clean\",\"last_completed\":1700000000}}"));
  CHECK(Has(SuperblockToText(sb),
            "scrub:        repair, paused, cursor 1024, 3 errors; last clean at "
            "2023-11-14T22:13:20Z\n"));
  CHECK(Has(SuperblockToText(TestRedundantMember(0, 2, 2)), "scrub:        none; last none\n"));
}

TEST_CASE("text: version 2 shows the set, the generation, the epochs and every slot") {
  Superblock sb = TestRedundantMember(1, 2, 2);
  sb.member_states[0] = MemberState::kStale;
  sb.stale_since[0] = 2;
  sb.history = {TestUuid(0xd), TestUuid(0xe)};
  const std::string text = SuperblockToText(sb);
  CAPTURE(text);
  CHECK(Has(text, "layout:       mirror, 2 copies, 2 members, 63 MiB\n"));
  CHECK(Has(text, "member:       1 " + FormatUuid(sb.member_uuid) + ", set 0 copy 1\n"));
  CHECK(Has(text, "format:       version 2, block 4 KiB"));
  CHECK(Has(text,
            "bitmap:       [8192, +4096) 4 KiB\nmissed writes: [12288, +4096) 4 KiB\n"
            "table:        [16384, +"));
  CHECK(Has(text, "generation:   " + FormatUuid(TestUuid(0xc)) + "\n"));
  CHECK(Has(text, "history:      " + FormatUuid(TestUuid(0xd)) + ", " + FormatUuid(TestUuid(0xe)) +
                      "\n"));
  CHECK(Has(text, "epochs:       map 0, ownership 0, owner none\n"));
  CHECK(Has(text,
            "slot 0:       stale, member " + FormatUuid(TestUuid(1)) + ", stale since event 2\n"));
  CHECK(Has(text, "slot 1:       active, member " + FormatUuid(TestUuid(2)) + "\n"));

  const std::string raid10 =
      SuperblockToText(TestRedundantMember(2, 4, 2, volume::LayoutKind::kRaid10));
  CHECK(Has(raid10, "layout:       raid10, chunk 64 KiB, 2 copies x 2 sets, 4 members, 126 MiB\n"));
  CHECK(Has(raid10, ", set 1 copy 0\n"));
  CHECK_FALSE(Has(SuperblockToText(TestMember(0, 1)), "generation"));
}

TEST_CASE("time: UTC, or seconds when not a date") {
  CHECK(FormatTimeUtc(0) == "1970-01-01T00:00:00Z");
  CHECK(FormatTimeUtc(1700000000) == "2023-11-14T22:13:20Z");
  CHECK(FormatTimeUtc(UINT64_MAX) == "18446744073709551615");
}

}  // namespace
}  // namespace dst::integrity::superblock_json_test
