#include "aggregator/integrity/superblock_json.h"

#include <cstdio>
#include <ctime>
#include <limits>

#include "aggregator/integrity/assembly.h"
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

std::string AreasJson(const MemberGeometry& g) {
  return JsonObject()
      .Raw("superblocks", AreaJson(g.superblocks))
      .Raw("bitmap", AreaJson(g.bitmap))
      .Raw("table", AreaJson(g.table))
      .Raw("data", AreaJson(g.data))
      .Close();
}

std::string MemberStatesJson(const Superblock& sb) {
  std::string out = "[";
  for (uint32_t i = 0; i < sb.member_count && i < kMaxMembers; ++i) {
    out += i > 0 ? "," : "";
    out += JsonQuote(MemberStateName(sb.member_states[i]));
  }
  return out + "]";
}

bool IsZero(const KeyId& id) {
  for (uint8_t b : id) {
    if (b != 0) return false;
  }
  return true;
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
  if (sb.layout == volume::LayoutKind::kStripe) out += ", chunk " + FormatSize(sb.chunk_size);
  return out;
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
  return JsonObject()
      .String("magic", std::string_view(kMagic, sizeof kMagic))
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
      .Raw("areas", AreasJson(g))
      .Raw("key_identity", KeyIdJson(sb.key_id))
      .Raw("members", MemberStatesJson(sb))
      .Close();
}

std::string SuperblockToText(const Superblock& sb) {
  const MemberGeometry& g = sb.geometry;
  return Line("volume", JsonQuote(sb.name) + " " + FormatUuid(sb.volume_uuid)) +
         Line("layout", LayoutText(sb) + ", " + std::to_string(sb.member_count) + " members, " +
                            FormatSize(sb.volume_size)) +
         Line("member", std::to_string(sb.member_index) + " " + FormatUuid(sb.member_uuid)) +
         Line("state",
              std::string(VolumeStateName(sb.state)) + ", event " + std::to_string(sb.event)) +
         Line("created", FormatTimeUtc(sb.created)) +
         Line("format", "version " + std::to_string(sb.version) + ", block " +
                            FormatSize(g.params.block_size) + ", region " +
                            FormatSize(g.params.region_size) + ", checksum " +
                            ChecksumAlgorithmName(g.params.algorithm)) +
         Line("key identity", IsZero(sb.key_id) ? "none" : Hex(sb.key_id)) +
         Line("member size", std::to_string(g.member_size) + " " + FormatSize(g.member_size)) +
         Line("superblocks", AreaText(g.superblocks)) + Line("bitmap", AreaText(g.bitmap)) +
         Line("table", AreaText(g.table)) + Line("data", AreaText(g.data)) +
         Line("members", MembersText(sb));
}

}  // namespace dst::integrity
