#include "aggregator/integrity/assembly.h"

#include "common/block_cipher.h"

#include <algorithm>
#include <memory>
#include <random>
#include <utility>

#include "aggregator/volume/layout.h"
#include "aggregator/volume/set_geometry.h"
#include "common/block_cipher.h"
#include "common/units.h"

namespace dst::integrity {

namespace {

using Members = std::vector<MemberSuperblock>;

Status CheckSameVolume(const MemberSuperblock& a, const MemberSuperblock& b) {
  if (a.superblock.volume_uuid == b.superblock.volume_uuid) return Status::Ok();
  return Status::Invalid(b.uri + " is a member of volume " + FormatUuid(b.superblock.volume_uuid) +
                         " (\"" + b.superblock.name + "\"), but " + a.uri +
                         " is a member of volume " + FormatUuid(a.superblock.volume_uuid) + " (\"" +
                         a.superblock.name + "\")");
}

// "nbd://b has block size 8 KiB but nbd://a has 4 KiB".
Status Differs(const MemberSuperblock& a, const MemberSuperblock& b, std::string_view what,
               std::string_view a_value, std::string_view b_value) {
  return Status::Invalid(b.uri + " has " + std::string(what) + " " + std::string(b_value) +
                         " but " + a.uri + " has " + std::string(a_value));
}

Status CheckSameParameters(const MemberSuperblock& a, const MemberSuperblock& b) {
  const Superblock& x = a.superblock;
  const Superblock& y = b.superblock;
  const FormatParams& p = x.geometry.params;
  const FormatParams& q = y.geometry.params;
  auto n = [](uint64_t v) { return std::to_string(v); };
  if (x.member_count != y.member_count) {
    return Differs(a, b, "member count", n(x.member_count), n(y.member_count));
  }
  if (x.layout != y.layout) {
    return Differs(a, b, "layout", volume::LayoutKindName(x.layout),
                   volume::LayoutKindName(y.layout));
  }
  if (x.copies != y.copies) return Differs(a, b, "copies", n(x.copies), n(y.copies));
  if (x.chunk_size != y.chunk_size) {
    return Differs(a, b, "chunk size", FormatSize(x.chunk_size), FormatSize(y.chunk_size));
  }
  if (p.block_size != q.block_size) {
    return Differs(a, b, "block size", FormatSize(p.block_size), FormatSize(q.block_size));
  }
  if (p.region_size != q.region_size) {
    return Differs(a, b, "region size", FormatSize(p.region_size), FormatSize(q.region_size));
  }
  if (p.algorithm != q.algorithm) {
    return Differs(a, b, "checksum algorithm", ChecksumAlgorithmName(p.algorithm),
                   ChecksumAlgorithmName(q.algorithm));
  }
  if (x.encrypted() != y.encrypted()) {
    return Differs(a, b, "encryption", x.encrypted() ? "encrypted" : "none",
                   y.encrypted() ? "encrypted" : "none");
  }
  if (x.key_id != y.key_id) {
    return Status::Invalid(b.uri + " and " + a.uri + " were created with different checksum keys");
  }
  if (x.volume_size != y.volume_size) {
    return Differs(a, b, "volume size", n(x.volume_size), n(y.volume_size));
  }
  return Status::Ok();
}

Status CheckNoDuplicates(const Members& sorted) {
  for (size_t i = 0; i < sorted.size(); ++i) {
    for (size_t j = i + 1; j < sorted.size(); ++j) {
      const Superblock& x = sorted[i].superblock;
      const Superblock& y = sorted[j].superblock;
      if (x.member_uuid == y.member_uuid) {
        return Status::Invalid(sorted[i].uri + " and " + sorted[j].uri +
                               " are the same member (member UUID " + FormatUuid(x.member_uuid) +
                               ")");
      }
      if (x.member_index == y.member_index) {
        return Status::Invalid(sorted[i].uri + " and " + sorted[j].uri + " are both member " +
                               std::to_string(x.member_index) + " of the volume");
      }
    }
  }
  return Status::Ok();
}

// Called with distinct indexes, all below the count, in ascending order.
Status CheckComplete(const Members& sorted) {
  const uint32_t count = sorted.front().superblock.member_count;
  if (sorted.size() == count) return Status::Ok();
  std::string missing;
  size_t next = 0;
  for (uint32_t index = 0; index < count; ++index) {
    if (next < sorted.size() && sorted[next].superblock.member_index == index) {
      ++next;
    } else {
      missing += (missing.empty() ? "" : ", ") + std::to_string(index);
    }
  }
  return Status::Invalid("volume \"" + sorted.front().superblock.name + "\" has " +
                         std::to_string(count) + " members but " + std::to_string(sorted.size()) +
                         " were given: missing member index " + missing);
}

// The layout over the members' data areas: directly for linear and stripe, over the sets of
// copies for mirror and raid10.
Status MakeMemberLayout(const Superblock& first, const std::vector<uint64_t>& sizes,
                        std::unique_ptr<volume::Layout>* layout) {
  if (!volume::IsRedundant(first.layout))
    return volume::MakeLayout(first.layout, sizes, first.chunk_size, layout);
  volume::SetGeometry sets;
  DST_RETURN_IF_ERROR(
      volume::MakeSetGeometry(first.layout, first.member_count, first.copies, &sets));
  return volume::MakeSetLayout(sets, sizes, first.chunk_size, layout);
}

// Copies of a set are addressed with one set of member offsets, so their areas must be equal
// (create gives every copy its set's smallest geometry; only member_size may differ).
Status CheckSetAreas(const Members& sorted) {
  const Superblock& first = sorted.front().superblock;
  if (!volume::IsRedundant(first.layout)) return Status::Ok();
  for (size_t i = 1; i < sorted.size(); ++i) {
    const MemberGeometry& a = sorted[i - 1].superblock.geometry;
    const MemberGeometry& b = sorted[i].superblock.geometry;
    if (sorted[i].superblock.member_index / first.copies !=
        sorted[i - 1].superblock.member_index / first.copies)
      continue;
    if (a.bitmap != b.bitmap || a.missed_writes != b.missed_writes || a.table != b.table ||
        a.data != b.data)
      return Status::Invalid(sorted[i].uri + " and " + sorted[i - 1].uri +
                             " are copies of one set but their areas differ");
  }
  return Status::Ok();
}

// The layout the server will build must have the size every member recorded.
Status CheckVolumeSize(const Members& sorted) {
  const Superblock& first = sorted.front().superblock;
  std::vector<uint64_t> sizes;
  for (const MemberSuperblock& m : sorted)
    sizes.push_back(m.superblock.geometry.data.size);
  std::unique_ptr<volume::Layout> layout;
  const Status made = MakeMemberLayout(first, sizes, &layout);
  DST_RETURN_IF_ERROR(made.Wrap("members' data areas do not form the recorded layout"));
  if (layout->size() == first.volume_size) return Status::Ok();
  return Status::Invalid("members' data areas make a volume of " + std::to_string(layout->size()) +
                         " bytes, but the superblocks record " + std::to_string(first.volume_size));
}

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

bool IsDashPosition(size_t i) {
  return i == 8 || i == 13 || i == 18 || i == 23;
}

// What every assembly checks first: the members make one volume, with the same parameters, each
// index once. Sorts them by member index.
Status SortOneVolume(Members& members) {
  if (members.empty()) return Status::Invalid("no members given");
  for (size_t i = 1; i < members.size(); ++i) {
    DST_RETURN_IF_ERROR(CheckSameVolume(members[0], members[i]));
    DST_RETURN_IF_ERROR(CheckSameParameters(members[0], members[i]));
  }
  std::stable_sort(members.begin(), members.end(), [](const auto& a, const auto& b) {
    return a.superblock.member_index < b.superblock.member_index;
  });
  DST_RETURN_IF_ERROR(CheckNoDuplicates(members));
  return Status::Ok();
}

}  // namespace

Status OrderMembers(std::vector<MemberSuperblock> members, std::vector<MemberSuperblock>* out) {
  DST_RETURN_IF_ERROR(SortOneVolume(members));
  DST_RETURN_IF_ERROR(CheckComplete(members));
  DST_RETURN_IF_ERROR(CheckSetAreas(members));
  DST_RETURN_IF_ERROR(CheckVolumeSize(members));
  *out = std::move(members);
  return Status::Ok();
}

Status PlaceRedundantMembers(std::vector<MemberSuperblock> members,
                             std::vector<std::optional<MemberSuperblock>>* out) {
  DST_RETURN_IF_ERROR(SortOneVolume(members));
  DST_RETURN_IF_ERROR(CheckSetAreas(members));
  const Superblock& first = members.front().superblock;
  std::vector<std::optional<MemberSuperblock>> slots(first.member_count);
  for (MemberSuperblock& m : members)
    slots[m.superblock.member_index] = m;
  // Each missing copy measured as a copy of its set that is present.
  Members measured;
  for (uint32_t s = 0; s < first.member_count; ++s) {
    const uint32_t set_first = s / first.copies * first.copies;
    const MemberSuperblock* stand_in = nullptr;
    for (uint32_t c = set_first; c < set_first + first.copies && !stand_in; ++c)
      if (slots[c]) stand_in = &*slots[c];
    if (!stand_in) break;
    measured.push_back(slots[s] ? *slots[s] : *stand_in);
  }
  if (measured.size() == first.member_count) DST_RETURN_IF_ERROR(CheckVolumeSize(measured));
  *out = std::move(slots);
  return Status::Ok();
}

Status CheckChecksumKey(const Superblock& sb, std::span<const uint8_t> key) {
  if (sb.encrypted()) {
    std::unique_ptr<BlockCipher> cipher;
    if (key.empty() || !BlockCipher::Create(key, &cipher).ok())
      return Status::Invalid("volume \"" + sb.name + "\" is encrypted: its master key is needed");
    if (cipher->Check(std::span<const uint8_t, 16>(sb.volume_uuid)) != sb.key_id)
      return Status::Invalid("wrong key for encrypted volume \"" + sb.name + "\"");
    return Status::Ok();
  }
  const bool keyed = sb.geometry.params.algorithm == ChecksumAlgorithm::kBlake2bKeyed;
  if (!keyed) {
    if (key.empty()) return Status::Ok();
    return Status::Invalid("a checksum key was given but volume \"" + sb.name + "\" uses " +
                           ChecksumAlgorithmName(sb.geometry.params.algorithm) + ", not keyed");
  }
  if (key.empty()) {
    return Status::Invalid("volume \"" + sb.name + "\" uses keyed checksums: a key is needed");
  }
  KeyId id;
  DST_RETURN_IF_ERROR(KeyIdentity(key, &id));
  if (id != sb.key_id) {
    return Status::Invalid("wrong checksum key for volume \"" + sb.name +
                           "\": it is not the key the volume was created with");
  }
  return Status::Ok();
}

std::string FormatUuid(const Uuid& uuid) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string text;
  for (size_t i = 0; i < uuid.size(); ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) text += '-';
    text += kHex[uuid[i] >> 4];
    text += kHex[uuid[i] & 0xf];
  }
  return text;
}

std::optional<Uuid> ParseUuid(std::string_view text) {
  if (text.size() != 36) return std::nullopt;
  Uuid uuid{};
  size_t nibble = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    if (IsDashPosition(i)) {
      if (text[i] != '-') return std::nullopt;
      continue;
    }
    const int digit = HexDigit(text[i]);
    if (digit < 0) return std::nullopt;
    uuid[nibble / 2] = static_cast<uint8_t>(uuid[nibble / 2] << 4 | digit);
    ++nibble;
  }
  return uuid;
}

Uuid NewUuid() {
  std::random_device random;
  Uuid uuid;
  for (size_t i = 0; i < uuid.size(); i += 4) {
    const uint32_t word = random();
    for (size_t k = 0; k < 4; ++k)
      uuid[i + k] = static_cast<uint8_t>(word >> (8 * k));
  }
  uuid[6] = static_cast<uint8_t>((uuid[6] & 0x0f) | 0x40);  // version 4: random
  uuid[8] = static_cast<uint8_t>((uuid[8] & 0x3f) | 0x80);  // RFC 4122 variant
  return uuid;
}

}  // namespace dst::integrity
