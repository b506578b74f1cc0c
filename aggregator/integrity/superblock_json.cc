#include "aggregator/integrity/superblock_json.h"

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <limits>
#include <vector>

#include "aggregator/integrity/assembly.h"
#include "aggregator/volume/set_geometry.h"
#include "common/units.h"

namespace dst::integrity {

namespace {

// Builds one JSON object; members are separated by commas as they are added.
class JsonObject {
 public:
  JsonObject& Raw(std::string_view key, std::string_view json) {
    out_ += out_.size() > 1 ? "," : "";
    out_ += JsonQuote(key);
    out_ += ':';
    out_ += json;
    return *this;
  }
  JsonObject& Number(std::string_view key, uint64_t value) {
    return Raw(key, std::to_string(value));
  }
  JsonObject& String(std::string_view key, std::string_view value) {
    return Raw(key, JsonQuote(value));
  }
  std::string Close() { return out_ + "}"; }

 private:
  std::string out_ = "{";
};

std::string AreaJson(const Area& area) {
  return JsonObject().Number("offset", area.offset).Number("size", area.size).Close();
}

// Version 2 lists the missed-write map between the bitmap and the table, where it lies.
std::string AreasJson(const Superblock& sb) {
  const MemberGeometry& g = sb.geometry;
  JsonObject areas;
  areas.Raw("superblocks", AreaJson(g.superblocks)).Raw("bitmap", AreaJson(g.bitmap));
  if (sb.version == kFormatVersion2) areas.Raw("missed_writes", AreaJson(g.missed_writes));
  areas.Raw("table", AreaJson(g.table));
  if (sb.table_tags()) areas.Raw("table_tags", AreaJson(g.table_tags));
  return areas.Raw("data", AreaJson(g.data)).Close();
}

std::string MemberStatesJson(const Superblock& sb) {
  std::string out = "[";
  for (uint32_t i = 0; i < sb.member_count && i < kMaxMembers; ++i) {
    out += i > 0 ? "," : "";
    out += JsonQuote(MemberStateName(sb.member_states[i]));
  }
  return out + "]";
}

std::string Hex(std::span<const uint8_t> bytes) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (uint8_t b : bytes) {
    out += kHex[b >> 4];
    out += kHex[b & 0xf];
  }
  return out;
}

std::string KeyIdJson(const KeyId& id) {
  return IsZero(id) ? "null" : JsonQuote(Hex(id));
}

// ---------------------------------------------------------------------------
// Version 2: copies, generations, epochs and slots.

// A validated version 2 superblock always has a set geometry; a version 1 one is its own set.
volume::SetGeometry Sets(const Superblock& sb) {
  volume::SetGeometry sets{sb.layout, sb.member_count, 1};
  if (sb.version == kFormatVersion2) {
    volume::SetGeometry made;
    if (volume::MakeSetGeometry(sb.layout, sb.member_count, sb.copies, &made).ok()) sets = made;
  }
  return sets;
}

// The history entries in use, newest first.
std::vector<Uuid> History(const Superblock& sb) {
  std::vector<Uuid> out;
  for (const Uuid& h : sb.history)
    if (!IsZero(h)) out.push_back(h);
  return out;
}

std::vector<std::string_view> SlotFlagNames(uint8_t flags) {
  std::vector<std::string_view> out;
  if (flags & kSlotWriteMostly) out.push_back("write-mostly");
  if (flags & kSlotWantReplacement) out.push_back("want-replacement");
  return out;
}

std::string UuidOrNull(const Uuid& uuid) {
  return IsZero(uuid) ? "null" : JsonQuote(FormatUuid(uuid));
}

std::string HistoryJson(const Superblock& sb) {
  std::string out = "[";
  for (const Uuid& h : History(sb))
    out += (out.size() > 1 ? "," : "") + JsonQuote(FormatUuid(h));
  return out + "]";
}

std::string SlotJson(const Superblock& sb, uint32_t slot) {
  std::string flags = "[";
  for (std::string_view name : SlotFlagNames(sb.slot_flags[slot]))
    flags += (flags.size() > 1 ? "," : "") + JsonQuote(name);
  return JsonObject()
      .String("state", MemberStateName(sb.member_states[slot]))
      .String("member_uuid", FormatUuid(sb.slot_members[slot]))
      .Number("stale_since", sb.stale_since[slot])
      .Number("cursor", sb.cursor[slot])
      .Raw("flags", flags + "]")
      .Close();
}

std::string SlotsJson(const Superblock& sb) {
  std::string out = "[";
  for (uint32_t i = 0; i < sb.member_count && i < kMaxMembers; ++i)
    out += (i > 0 ? "," : "") + SlotJson(sb, i);
  return out + "]";
}

std::string ScrubJson(const ScrubRecord& r) {
  return JsonObject()
      .String("mode", ScrubModeName(r.mode))
      .Raw("paused", r.paused ? "true" : "false")
      .Number("cursor", r.cursor)
      .Number("errors", r.errors)
      .String("last_result", ScrubResultName(r.last_result))
      .Number("last_completed", r.last_completed)
      .Close();
}

// "repair, paused, cursor 12, 1 errors; last clean at 2026-..." or "none; last none".
std::string ScrubText(const ScrubRecord& r) {
  std::string out(ScrubModeName(r.mode));
  if (r.mode != ScrubMode::kNone)
    out += std::string(r.paused ? ", paused" : "") + ", cursor " + std::to_string(r.cursor) + ", " +
           std::to_string(r.errors) + " errors";
  out += "; last " + std::string(ScrubResultName(r.last_result));
  if (r.last_completed != 0) out += " at " + FormatTimeUtc(r.last_completed);
  return out;
}

void AddVersion2Json(const Superblock& sb, JsonObject& json) {
  const volume::SetGeometry sets = Sets(sb);
  json.Number("copies", sb.copies)
      .Number("set", sets.SetOf(sb.member_index))
      .Number("copy", sets.CopyOf(sb.member_index))
      .String("generation", FormatUuid(sb.generation))
      .Raw("history", HistoryJson(sb))
      .Number("map_epoch", sb.map_epoch)
      .Number("ownership_epoch", sb.ownership_epoch)
      .Raw("owner_uuid", UuidOrNull(sb.owner_uuid))
      .Raw("slots", SlotsJson(sb))
      .Raw("scrub", ScrubJson(sb.scrub));
}

std::string Line(std::string_view key, std::string_view value) {
  std::string line(key);
  line += ':';
  line.append(key.size() < 13 ? 13 - key.size() : 1, ' ');
  line += value;
  return line + "\n";
}

std::string AreaText(const Area& area) {
  return "[" + std::to_string(area.offset) + ", +" + std::to_string(area.size) + ") " +
         FormatSize(area.size);
}

std::string MembersText(const Superblock& sb) {
  std::string out;
  for (uint32_t i = 0; i < sb.member_count && i < kMaxMembers; ++i) {
    out += (i > 0 ? ", " : "") + std::to_string(i) + " " +
           std::string(MemberStateName(sb.member_states[i]));
  }
  return out;
}

std::string LayoutText(const Superblock& sb) {
  std::string out(volume::LayoutKindName(sb.layout));
  if (sb.chunk_size != 0) out += ", chunk " + FormatSize(sb.chunk_size);
  if (sb.version == kFormatVersion2) {
    const volume::SetGeometry sets = Sets(sb);
    out += ", " + std::to_string(sb.copies) + " copies";
    if (sets.sets() > 1) out += " x " + std::to_string(sets.sets()) + " sets";
  }
  return out;
}

std::string MemberText(const Superblock& sb) {
  std::string out = std::to_string(sb.member_index) + " " + FormatUuid(sb.member_uuid);
  if (sb.version != kFormatVersion2) return out;
  const volume::SetGeometry sets = Sets(sb);
  return out + ", set " + std::to_string(sets.SetOf(sb.member_index)) + " copy " +
         std::to_string(sets.CopyOf(sb.member_index));
}

std::string HistoryText(const Superblock& sb) {
  std::string out;
  for (const Uuid& h : History(sb))
    out += (out.empty() ? "" : ", ") + FormatUuid(h);
  return out.empty() ? "none" : out;
}

// "active, member 0123...", then what is not zero: stale-since, cursor, flags.
std::string SlotText(const Superblock& sb, uint32_t slot) {
  std::string out = std::string(MemberStateName(sb.member_states[slot])) + ", member " +
                    FormatUuid(sb.slot_members[slot]);
  if (sb.stale_since[slot] != 0)
    out += ", stale since event " + std::to_string(sb.stale_since[slot]);
  if (sb.cursor[slot] != 0) out += ", cursor " + std::to_string(sb.cursor[slot]);
  for (std::string_view name : SlotFlagNames(sb.slot_flags[slot]))
    out += ", " + std::string(name);
  return out;
}

std::string Version2Text(const Superblock& sb) {
  if (sb.version != kFormatVersion2) return "";
  std::string out =
      Line("generation", FormatUuid(sb.generation)) + Line("history", HistoryText(sb)) +
      Line("epochs", "map " + std::to_string(sb.map_epoch) + ", ownership " +
                         std::to_string(sb.ownership_epoch) + ", owner " +
                         (IsZero(sb.owner_uuid) ? std::string("none") : FormatUuid(sb.owner_uuid)));
  for (uint32_t i = 0; i < sb.member_count && i < kMaxMembers; ++i)
    out += Line("slot " + std::to_string(i), SlotText(sb, i));
  return out + Line("scrub", ScrubText(sb.scrub));
}

// The key slots in use: index, kind and, for a passphrase, scrypt's cost. Never their bytes.
std::string KeySlotsJson(const Superblock& sb) {
  std::string out = "[";
  for (const auto& [index, slot] : KeySlotsInUse(sb.key_slots)) {
    JsonObject json;
    json.Number("index", index).String("kind", KeySlotKindName(slot.kind));
    if (slot.kind == KeySlotKind::kPassphrase)
      json.Number("scrypt_log2_n", slot.scrypt.log2_n)
          .Number("scrypt_r", slot.scrypt.r)
          .Number("scrypt_p", slot.scrypt.p);
    out += (out.size() > 1 ? "," : "") + json.Close();
  }
  return out + "]";
}

// "aes-256-xts, key slots: 0 key-file, 2 passphrase (scrypt 2^17, 8, 1)", or "none".
std::string EncryptionText(const Superblock& sb) {
  if (!sb.encrypted()) return "none";
  std::string out = "aes-256-xts, key slots:";
  for (const auto& [index, slot] : KeySlotsInUse(sb.key_slots))
    out += (out.back() == ':' ? " " : ", ") + std::to_string(index) + " " + DescribeKeySlot(slot);
  return out;
}

// Keyed volumes: where the table's tags are, or that it has none (docs/format.md §9).
std::string TableTagsText(const Superblock& sb) {
  if (sb.table_tags()) return Line("table tags", AreaText(sb.geometry.table_tags));
  if (sb.geometry.params.algorithm != ChecksumAlgorithm::kBlake2bKeyed) return "";
  return Line("table tags", "none: the table is not authenticated (created before table tags)");
}

}  // namespace

std::string JsonQuote(std::string_view text) {
  std::string out = "\"";
  for (char c : text) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (u < 0x20) {
      char escape[8];
      std::snprintf(escape, sizeof escape, "\\u%04x", u);
      out += escape;
    } else {
      out += c;
    }
  }
  return out + "\"";
}

std::string FormatTimeUtc(uint64_t seconds) {
  std::tm tm{};
  const bool fits = seconds <= static_cast<uint64_t>(std::numeric_limits<std::time_t>::max());
  const std::time_t t = static_cast<std::time_t>(seconds);
  char text[32];
  if (!fits || gmtime_r(&t, &tm) == nullptr ||
      std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0) {
    return std::to_string(seconds);
  }
  return text;
}

std::string SuperblockToJson(const Superblock& sb) {
  const MemberGeometry& g = sb.geometry;
  JsonObject json;
  json.String("magic", std::string_view(kMagic, sizeof kMagic))
      .Number("version", sb.version)
      .Number("flags", sb.flags)
      .Number("event", sb.event)
      .Number("created", sb.created)
      .String("created_utc", FormatTimeUtc(sb.created))
      .String("volume_uuid", FormatUuid(sb.volume_uuid))
      .String("volume_name", sb.name)
      .String("member_uuid", FormatUuid(sb.member_uuid))
      .Number("member_index", sb.member_index)
      .Number("member_count", sb.member_count)
      .String("layout", volume::LayoutKindName(sb.layout))
      .Number("chunk_size", sb.chunk_size)
      .String("state", VolumeStateName(sb.state))
      .Number("block_size", g.params.block_size)
      .Number("region_size", g.params.region_size)
      .String("checksum", ChecksumAlgorithmName(g.params.algorithm))
      .Number("member_size", g.member_size)
      .Number("volume_size", sb.volume_size)
      .Raw("areas", AreasJson(sb))
      .Raw("key_identity", KeyIdJson(sb.key_id))
      .Raw("encrypted", sb.encrypted() ? "true" : "false")
      .Raw("key_slots", KeySlotsJson(sb))
      .Raw("members", MemberStatesJson(sb));
  if (sb.version == kFormatVersion2) AddVersion2Json(sb, json);
  return json.Close();
}

std::string SuperblockToText(const Superblock& sb) {
  const MemberGeometry& g = sb.geometry;
  return Line("volume", JsonQuote(sb.name) + " " + FormatUuid(sb.volume_uuid)) +
         Line("layout", LayoutText(sb) + ", " + std::to_string(sb.member_count) + " members, " +
                            FormatSize(sb.volume_size)) +
         Line("member", MemberText(sb)) +
         Line("state",
              std::string(VolumeStateName(sb.state)) + ", event " + std::to_string(sb.event)) +
         Line("created", FormatTimeUtc(sb.created)) +
         Line("format", "version " + std::to_string(sb.version) + ", block " +
                            FormatSize(g.params.block_size) + ", region " +
                            FormatSize(g.params.region_size) + ", checksum " +
                            ChecksumAlgorithmName(g.params.algorithm)) +
         Line(sb.encrypted() ? "key check" : "key identity",
              IsZero(sb.key_id) ? "none" : Hex(sb.key_id)) +
         Line("encryption", EncryptionText(sb)) +
         Line("member size", std::to_string(g.member_size) + " " + FormatSize(g.member_size)) +
         Line("superblocks", AreaText(g.superblocks)) + Line("bitmap", AreaText(g.bitmap)) +
         (sb.version == kFormatVersion2 ? Line("missed writes", AreaText(g.missed_writes)) : "") +
         Line("table", AreaText(g.table)) + TableTagsText(sb) + Line("data", AreaText(g.data)) +
         Line("members", MembersText(sb)) + Version2Text(sb);
}

}  // namespace dst::integrity
