#include "aggregator/stagelog/log_format.h"

#include <doctest/doctest.h>

#include <array>
#include <cerrno>
#include <vector>

#include "common/nbd_protocol.h"

namespace dst::stagelog::log_format_test {
namespace {

using V = std::vector<uint8_t>;
using Slot = std::array<uint8_t, kSlotSize>;

V At(std::span<const uint8_t> bytes, size_t offset, size_t size) {
  return V(bytes.begin() + offset, bytes.begin() + offset + size);
}

V BE32(uint32_t v) {
  V out(4);
  nbd::StoreBE32(out.data(), v);
  return out;
}

Uuid MakeUuid(uint8_t first) {
  Uuid u;
  for (size_t i = 0; i < u.size(); ++i)
    u[i] = static_cast<uint8_t>(first + i);
  return u;
}

// Every field away from its default.
LogSuperblock FullSuperblock() {
  LogSuperblock sb;
  sb.event = 0x0102030405060708;
  sb.volume_uuid = MakeUuid(0xa0);
  sb.log_uuid = MakeUuid(0xb0);
  sb.log_size = 0x10002000;  // 256 MiB + 8 KiB
  sb.ring_size = 0x10000000;
  sb.created = 0x1111111111111111;
  sb.updated = 0x2222222222222222;
  sb.session = 7;
  sb.destaged_sequence = 900;
  sb.destaged_position = 0x5000;
  sb.oldest_sequence = 800;
  sb.oldest_position = 0x3000;
  sb.oldest_time = 0x3333333333333333;
  return sb;
}

Slot MustEncode(const LogSuperblock& sb) {
  Slot slot;
  REQUIRE(EncodeSuperblock(sb, slot).ok());
  return slot;
}

// Recomputes the slot checksum after a test changed a byte.
void Reseal(Slot& slot) {
  nbd::StoreBE32(slot.data() + sb_offsets::kChecksum, 0);
  nbd::StoreBE32(slot.data() + sb_offsets::kChecksum, Crc32c(slot));
}

RecordHeader FullRecord() {
  RecordHeader h;
  h.kind = RecordKind::kWrite;
  h.sequence = 0x0a0b0c0d;
  h.session = 3;
  h.log_uuid = MakeUuid(0xb0);
  h.volume_offset = 0x123456789000;
  h.length = 5000;
  h.time = 0x4444444444444444;
  h.payload_size = 8192;
  h.payload_checksum = 0xdeadbeef;
  return h;
}

TEST_CASE("log format: superblock golden bytes at the offsets of docs/staging-log.md") {
  const Slot slot = MustEncode(FullSuperblock());
  CHECK(At(slot, 0, 8) == V{'D', 'S', 'T', 'S', 'L', 'O', 'G', '1'});
  CHECK(At(slot, 8, 4) == V{0, 0, 0, 1});
  CHECK(At(slot, 12, 4) == V{0, 0, 0, 0});
  Slot zeroed = slot;
  nbd::StoreBE32(zeroed.data() + 16, 0);
  CHECK(At(slot, 16, 4) == BE32(Crc32c(zeroed)));
  CHECK(At(slot, 20, 4) == V{0, 0, 0x10, 0});
  CHECK(At(slot, 24, 8) == V{1, 2, 3, 4, 5, 6, 7, 8});
  CHECK(At(slot, 32, 16) == At(MakeUuid(0xa0), 0, 16));
  CHECK(At(slot, 48, 16) == At(MakeUuid(0xb0), 0, 16));
  CHECK(At(slot, 64, 8) == V{0, 0, 0, 0, 0x10, 0, 0x20, 0});
  CHECK(At(slot, 72, 8) == V{0, 0, 0, 0, 0, 0, 0x20, 0});
  CHECK(At(slot, 80, 8) == V{0, 0, 0, 0, 0x10, 0, 0, 0});
  CHECK(At(slot, 88, 8) == V(8, 0x11));
  CHECK(At(slot, 96, 8) == V(8, 0x22));
  CHECK(At(slot, 104, 8) == V{0, 0, 0, 0, 0, 0, 0, 7});
  CHECK(At(slot, 112, 8) == V{0, 0, 0, 0, 0, 0, 0x03, 0x84});  // 900
  CHECK(At(slot, 120, 8) == V{0, 0, 0, 0, 0, 0, 0x50, 0});
  CHECK(At(slot, 128, 8) == V{0, 0, 0, 0, 0, 0, 0x03, 0x20});  // 800
  CHECK(At(slot, 136, 8) == V{0, 0, 0, 0, 0, 0, 0x30, 0});
  CHECK(At(slot, 144, 8) == V(8, 0x33));
  CHECK(At(slot, 152, kSlotSize - 152) == V(kSlotSize - 152, 0));
}

TEST_CASE("log format: a superblock survives Encode and Decode") {
  const LogSuperblock sb = FullSuperblock();
  LogSuperblock back;
  REQUIRE(DecodeSuperblock(MustEncode(sb), &back).ok());
  CHECK(back == sb);
}

TEST_CASE("log format: superblock decode errors say what is wrong") {
  Slot slot = MustEncode(FullSuperblock());
  LogSuperblock out;
  SUBCASE("no magic") {
    slot[0] = 'X';
    const Status st = DecodeSuperblock(slot, &out);
    CHECK(st.err() == ENOENT);
    CHECK(st.message() == "no staging log superblock (magic DSTSLOG1 not found)");
  }
  SUBCASE("torn") {
    slot[100] ^= 1;
    const Status st = DecodeSuperblock(slot, &out);
    CHECK(st.err() == EIO);
    CHECK(st.message() == "log superblock checksum mismatch: torn or corrupted");
  }
  SUBCASE("newer version") {
    nbd::StoreBE32(slot.data() + 8, 2);
    Reseal(slot);
    const Status st = DecodeSuperblock(slot, &out);
    CHECK(st.err() == ENOTSUP);
    CHECK(st.message().find("version 2 flags 0 is not supported") != std::string::npos);
  }
  SUBCASE("oldest after destaged + 1") {
    nbd::StoreBE64(slot.data() + 128, 902);
    Reseal(slot);
    const Status st = DecodeSuperblock(slot, &out);
    CHECK(st.err() == EINVAL);
    CHECK(st.message() ==
          "log superblock: oldest sequence 902 is not between 1 and the destaged sequence 900 + 1");
  }
  SUBCASE("position not page-aligned") {
    nbd::StoreBE64(slot.data() + 136, 0x3001);
    Reseal(slot);
    const Status st = DecodeSuperblock(slot, &out);
    CHECK(st.err() == EINVAL);
    CHECK(st.message().find("oldest position 12289 is not a page-aligned ring offset") !=
          std::string::npos);
  }
  SUBCASE("ring larger than the log") {
    nbd::StoreBE64(slot.data() + 64, 0x10000000);
    Reseal(slot);
    const Status st = DecodeSuperblock(slot, &out);
    CHECK(st.err() == EINVAL);
    CHECK(st.message().find("does not fit the log size") != std::string::npos);
  }
  SUBCASE("reserved bytes") {
    slot[152] = 1;
    Reseal(slot);
    CHECK(DecodeSuperblock(slot, &out).message() == "log superblock: reserved bytes are not zero");
  }
}

TEST_CASE("log format: a write-through log sets flag 1, and other flags are refused") {
  LogSuperblock sb = FullSuperblock();
  sb.mode = LogMode::kWriteThrough;
  Slot slot = MustEncode(sb);
  CHECK(At(slot, 12, 4) == V{0, 0, 0, 1});
  LogSuperblock back;
  REQUIRE(DecodeSuperblock(slot, &back).ok());
  CHECK(back.mode == LogMode::kWriteThrough);
  CHECK(back == sb);
  CHECK(At(MustEncode(FullSuperblock()), 12, 4) == V{0, 0, 0, 0});
  nbd::StoreBE32(slot.data() + 12, 3);
  Reseal(slot);
  const Status st = DecodeSuperblock(slot, &back);
  CHECK(st.err() == ENOTSUP);
  CHECK(st.message().find("version 1 flags 3 is not supported") != std::string::npos);
  LogMode mode = LogMode::kWriteBack;
  REQUIRE(ParseLogMode("write-through", &mode).ok());
  CHECK(mode == LogMode::kWriteThrough);
  CHECK(ParseLogMode("write-around", &mode).message() == "expected write-back or write-through");
  CHECK(LogModeName(LogMode::kWriteBack) == "write-back");
}

TEST_CASE("log format: the newer valid slot wins, a torn one falls back") {
  LogSuperblock sb = FullSuperblock();
  sb.event = 4;
  const Slot slot0 = MustEncode(sb);
  sb.event = 5;
  sb.destaged_sequence = 950;
  Slot slot1 = MustEncode(sb);
  LogSuperblock out;
  REQUIRE(ChooseSuperblock(slot0, slot1, &out).ok());
  CHECK(out.event == 5);
  slot1[300] ^= 0xff;
  REQUIRE(ChooseSuperblock(slot0, slot1, &out).ok());
  CHECK(out.event == 4);
  // A slot in the wrong place is not taken.
  const Status st = ChooseSuperblock(slot1, slot0, &out);
  CHECK(st.err() == EIO);
  CHECK(st.message().find("belongs in slot 0") != std::string::npos);
  Slot empty{};
  CHECK(ChooseSuperblock(empty, empty, &out).err() == ENOENT);
}

TEST_CASE("log format: record header golden bytes") {
  std::array<uint8_t, kHeaderSize> bytes;
  REQUIRE(EncodeRecordHeader(FullRecord(), bytes).ok());
  CHECK(At(bytes, 0, 8) == V{'D', 'S', 'T', 'S', 'R', 'E', 'C', '1'});
  auto zeroed = bytes;
  nbd::StoreBE32(zeroed.data() + 8, 0);
  CHECK(At(bytes, 8, 4) == BE32(Crc32c(zeroed)));
  CHECK(At(bytes, 12, 4) == V{1, 0, 0, 0});
  CHECK(At(bytes, 16, 8) == V{0, 0, 0, 0, 0x0a, 0x0b, 0x0c, 0x0d});
  CHECK(At(bytes, 24, 8) == V{0, 0, 0, 0, 0, 0, 0, 3});
  CHECK(At(bytes, 32, 16) == At(MakeUuid(0xb0), 0, 16));
  CHECK(At(bytes, 48, 8) == V{0, 0, 0x12, 0x34, 0x56, 0x78, 0x90, 0});
  CHECK(At(bytes, 56, 8) == V{0, 0, 0, 0, 0, 0, 0x13, 0x88});  // 5000
  CHECK(At(bytes, 64, 8) == V(8, 0x44));
  CHECK(At(bytes, 72, 8) == V{0, 0, 0, 0, 0, 0, 0x20, 0});
  CHECK(At(bytes, 80, 4) == V{0xde, 0xad, 0xbe, 0xef});
  CHECK(At(bytes, 84, 44) == V(44, 0));
  RecordHeader back;
  REQUIRE(DecodeRecordHeader(bytes, &back).ok());
  CHECK(back == FullRecord());
}

TEST_CASE("log format: record header rules") {
  std::array<uint8_t, kHeaderSize> bytes;
  RecordHeader h = FullRecord();
  SUBCASE("payload size must fit the length") {
    h.payload_size = 4096;
    CHECK(EncodeRecordHeader(h, bytes).message() ==
          "record 168496141: payload size 4096 of a write of 5000 bytes is not 8192");
  }
  SUBCASE("a trim has no payload") {
    h.kind = RecordKind::kTrim;
    h.payload_checksum = 0;
    CHECK(EncodeRecordHeader(h, bytes).message().find("payload size 8192 of a trim") !=
          std::string::npos);
    h.payload_size = 0;
    CHECK(EncodeRecordHeader(h, bytes).ok());
  }
  SUBCASE("empty range") {
    h.length = 0;
    CHECK(EncodeRecordHeader(h, bytes).message().find("is empty or ends past 2^63") !=
          std::string::npos);
  }
  SUBCASE("padding has no range") {
    h.kind = RecordKind::kPadding;
    CHECK(EncodeRecordHeader(h, bytes).err() == EINVAL);
    h.volume_offset = h.length = 0;
    h.payload_checksum = 0;
    CHECK(EncodeRecordHeader(h, bytes).ok());
  }
  SUBCASE("a before-image carries its range's old data, checksummed like a write") {
    h.kind = RecordKind::kBeforeImage;
    REQUIRE(EncodeRecordHeader(h, bytes).ok());
    CHECK(At(bytes, 12, 4) == V{5, 0, 0, 0});
    RecordHeader out;
    REQUIRE(DecodeRecordHeader(bytes, &out).ok());
    CHECK(out == h);
    CHECK(RecordKindName(out.kind) == "before-image");
    CHECK(KindBelongsTo(RecordKind::kBeforeImage, LogMode::kWriteThrough));
    CHECK_FALSE(KindBelongsTo(RecordKind::kBeforeImage, LogMode::kWriteBack));
    CHECK_FALSE(KindBelongsTo(RecordKind::kWrite, LogMode::kWriteThrough));
    CHECK(KindBelongsTo(RecordKind::kPadding, LogMode::kWriteThrough));
    h.payload_size = 0;
    CHECK(EncodeRecordHeader(h, bytes).err() == EINVAL);
  }
  SUBCASE("torn header") {
    REQUIRE(EncodeRecordHeader(h, bytes).ok());
    bytes[60] ^= 4;
    RecordHeader out;
    CHECK(DecodeRecordHeader(bytes, &out).message() ==
          "record header checksum mismatch: torn or corrupted");
  }
  SUBCASE("unknown kind") {
    REQUIRE(EncodeRecordHeader(h, bytes).ok());
    bytes[12] = 9;
    nbd::StoreBE32(bytes.data() + 8, 0);
    nbd::StoreBE32(bytes.data() + 8, Crc32c(bytes));
    RecordHeader out;
    CHECK(DecodeRecordHeader(bytes, &out).message() == "record 168496141: unknown kind 9");
  }
}

TEST_CASE("log format: ring size") {
  CHECK(RingSizeFor(8192 + 65536 + 100) == 65536);
  CHECK(RingSizeFor(100) == 0);
}

}  // namespace
}  // namespace dst::stagelog::log_format_test
