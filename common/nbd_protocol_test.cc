// Expected bytes below were worked out by hand from doc/proto.md, not produced
// by the encoder, so an encoder and decoder that agree on a wrong layout fail.
#include "common/nbd_protocol.h"

#include <doctest/doctest.h>

#include <array>
#include <cstdint>
#include <cstring>
#include <string_view>

namespace dst::nbd::nbd_protocol_test {
namespace {

// Encodes into a buffer with guard bytes on both sides, checks the guards are
// untouched (Encode writes exactly kSize bytes) and returns the middle.
template <typename Message>
std::array<uint8_t, Message::kSize> EncodeGuarded(const Message& m) {
  std::array<uint8_t, Message::kSize + 8> buf;
  buf.fill(0xAA);
  m.Encode(buf.data() + 4);
  for (size_t i : {size_t{0}, size_t{1}, size_t{2}, size_t{3}, buf.size() - 4, buf.size() - 3,
                   buf.size() - 2, buf.size() - 1}) {
    CHECK(buf[i] == 0xAA);
  }
  std::array<uint8_t, Message::kSize> out;
  std::memcpy(out.data(), buf.data() + 4, out.size());
  return out;
}

TEST_CASE("LoadBE/StoreBE use network byte order") {
  const uint8_t bytes[8] = {0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08};
  CHECK(LoadBE16(bytes) == 0x0102);
  CHECK(LoadBE32(bytes) == 0x01020304u);
  CHECK(LoadBE64(bytes) == 0x0102030405060708ull);

  uint8_t out[8] = {};
  StoreBE64(out, 0x0102030405060708ull);
  CHECK(std::memcmp(out, bytes, 8) == 0);
  StoreBE32(out, 0xA1B2C3D4u);
  CHECK((out[0] == 0xA1 && out[1] == 0xB2 && out[2] == 0xC3 && out[3] == 0xD4));
  StoreBE16(out, 0xBEEF);
  CHECK((out[0] == 0xBE && out[1] == 0xEF));
}

TEST_CASE("LoadBE/StoreBE handle all-ones and top-bit values") {
  // The top bit is where a signed intermediate would overflow.
  uint8_t buf[8];
  StoreBE64(buf, ~uint64_t{0});
  CHECK(LoadBE64(buf) == ~uint64_t{0});
  StoreBE64(buf, uint64_t{1} << 63);
  CHECK(buf[0] == 0x80);
  CHECK(LoadBE64(buf) == uint64_t{1} << 63);
  StoreBE32(buf, 0x80000001u);
  CHECK(LoadBE32(buf) == 0x80000001u);
  StoreBE16(buf, 0xFFFF);
  CHECK(LoadBE16(buf) == 0xFFFF);
}

TEST_CASE("LoadBE/StoreBE work on unaligned addresses") {
  alignas(8) uint8_t buf[16] = {};
  StoreBE64(buf + 3, 0x1122334455667788ull);
  CHECK(LoadBE64(buf + 3) == 0x1122334455667788ull);
  CHECK(buf[3] == 0x11);
  CHECK(buf[10] == 0x88);
  StoreBE32(buf + 1, 0xCAFEF00Du);
  CHECK(LoadBE32(buf + 1) == 0xCAFEF00Du);
}

constexpr uint64_t RoundTrip64(uint64_t v) {
  uint8_t buf[8] = {};
  StoreBE64(buf, v);
  return LoadBE64(buf);
}
static_assert(RoundTrip64(0x0102030405060708ull) == 0x0102030405060708ull);

TEST_CASE("magic numbers match the spec") {
  uint8_t buf[8];
  StoreBE64(buf, kNbdMagic);
  CHECK(std::string_view(reinterpret_cast<const char*>(buf), 8) == "NBDMAGIC");
  StoreBE64(buf, kIHaveOpt);
  CHECK(std::string_view(reinterpret_cast<const char*>(buf), 8) == "IHAVEOPT");
  CHECK(kOptionReplyMagic == 0x3e889045565a9ull);
  CHECK(kRequestMagic == 0x25609513u);
  CHECK(kSimpleReplyMagic == 0x67446698u);
  CHECK(kStructuredReplyMagic == 0x668e33efu);
}

TEST_CASE("flag bits match the spec") {
  CHECK(kFlagFixedNewstyle == 0x0001);
  CHECK(kFlagNoZeroes == 0x0002);
  CHECK(kClientFlagFixedNewstyle == 0x0001u);
  CHECK(kClientFlagNoZeroes == 0x0002u);
  CHECK(kClientFlagsKnown == 0x0003u);

  CHECK(kFlagHasFlags == 0x0001);
  CHECK(kFlagReadOnly == 0x0002);
  CHECK(kFlagSendFlush == 0x0004);
  CHECK(kFlagSendFua == 0x0008);
  CHECK(kFlagRotational == 0x0010);
  CHECK(kFlagSendTrim == 0x0020);
  CHECK(kFlagSendWriteZeroes == 0x0040);
  CHECK(kFlagSendDf == 0x0080);
  CHECK(kFlagCanMultiConn == 0x0100);
  CHECK(kFlagSendResize == 0x0200);
  CHECK(kFlagSendCache == 0x0400);
  CHECK(kFlagSendFastZero == 0x0800);
  CHECK(kFlagBlockStatPayload == 0x1000);

  CHECK(kCmdFlagFua == 1);
  CHECK(kCmdFlagNoHole == 2);
  CHECK(kCmdFlagDf == 4);
  CHECK(kCmdFlagReqOne == 8);
  CHECK(kCmdFlagFastZero == 16);

  CHECK(kReplyFlagDone == 1);
  CHECK(kStateHole == 1u);
  CHECK(kStateZero == 2u);
}

TEST_CASE("enumerated values match the spec") {
  CHECK(kOptExportName == 1u);
  CHECK(kOptAbort == 2u);
  CHECK(kOptList == 3u);
  CHECK(kOptPeekExport == 4u);
  CHECK(kOptStartTls == 5u);
  CHECK(kOptInfo == 6u);
  CHECK(kOptGo == 7u);
  CHECK(kOptStructuredReply == 8u);
  CHECK(kOptListMetaContext == 9u);
  CHECK(kOptSetMetaContext == 10u);
  CHECK(kOptExtendedHeaders == 11u);

  CHECK(kRepAck == 1u);
  CHECK(kRepServer == 2u);
  CHECK(kRepInfo == 3u);
  CHECK(kRepMetaContext == 4u);
  CHECK(kRepErrUnsup == 0x80000001u);
  CHECK(kRepErrPolicy == 0x80000002u);
  CHECK(kRepErrInvalid == 0x80000003u);
  CHECK(kRepErrPlatform == 0x80000004u);
  CHECK(kRepErrTlsReqd == 0x80000005u);
  CHECK(kRepErrUnknown == 0x80000006u);
  CHECK(kRepErrShutdown == 0x80000007u);
  CHECK(kRepErrBlockSizeReqd == 0x80000008u);
  CHECK(kRepErrTooBig == 0x80000009u);

  CHECK(kInfoExport == 0);
  CHECK(kInfoName == 1);
  CHECK(kInfoDescription == 2);
  CHECK(kInfoBlockSize == 3);

  CHECK(kCmdRead == 0);
  CHECK(kCmdWrite == 1);
  CHECK(kCmdDisc == 2);
  CHECK(kCmdFlush == 3);
  CHECK(kCmdTrim == 4);
  CHECK(kCmdCache == 5);
  CHECK(kCmdWriteZeroes == 6);
  CHECK(kCmdBlockStatus == 7);
  CHECK(kCmdResize == 8);

  CHECK(kReplyTypeNone == 0);
  CHECK(kReplyTypeOffsetData == 1);
  CHECK(kReplyTypeOffsetHole == 2);
  CHECK(kReplyTypeBlockStatus == 5);
  CHECK(kReplyTypeError == 32769);
  CHECK(kReplyTypeErrorOffset == 32770);

  CHECK(kEPERM == 1u);
  CHECK(kEIO == 5u);
  CHECK(kENOMEM == 12u);
  CHECK(kEINVAL == 22u);
  CHECK(kENOSPC == 28u);
  CHECK(kEOVERFLOW == 75u);
  CHECK(kENOTSUP == 95u);
  CHECK(kESHUTDOWN == 108u);
}

TEST_CASE("limits") {
  CHECK(kMaxOptionLength == 65536u);
  CHECK(kMaxExportNameLength == 4096u);
  CHECK(kMaxStringLength == 4096u);
  CHECK(kExportNameZeroPadding == 124u);
  CHECK(std::string_view(kBaseAllocationContext) == "base:allocation");
}

TEST_CASE("error classification by the high bit") {
  CHECK(IsOptionReplyError(kRepErrUnsup));
  CHECK(IsOptionReplyError(kRepErrorBit + 100));  // unknown, but still an error
  CHECK_FALSE(IsOptionReplyError(kRepAck));
  CHECK_FALSE(IsOptionReplyError(kRepMetaContext));
  CHECK(IsReplyTypeError(kReplyTypeError));
  CHECK(IsReplyTypeError(kReplyTypeErrorOffset));
  CHECK(IsReplyTypeError(0x8064));
  CHECK_FALSE(IsReplyTypeError(kReplyTypeNone));
  CHECK_FALSE(IsReplyTypeError(kReplyTypeBlockStatus));
}

TEST_CASE("RequestHeader: NBD_CMD_WRITE with FUA encodes to the spec's bytes") {
  const std::array<uint8_t, 28> expected = {
      0x25, 0x60, 0x95, 0x13,                          // magic
      0x00, 0x01,                                      // flags: FUA
      0x00, 0x01,                                      // type: WRITE
      0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08,  // cookie
      0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00,  // offset 0x1000
      0x00, 0x00, 0x02, 0x00,                          // length 512
  };
  const RequestHeader h{.flags = kCmdFlagFua,
                        .type = kCmdWrite,
                        .cookie = 0x0102030405060708,
                        .offset = 0x1000,
                        .length = 512};
  CHECK(RequestHeader::kSize == 28);
  CHECK(EncodeGuarded(h) == expected);
  CHECK(h.Encode() == expected);

  const RequestHeader d = RequestHeader::Decode(expected.data());
  CHECK(d.magic == kRequestMagic);
  CHECK(d.flags == kCmdFlagFua);
  CHECK(d.type == kCmdWrite);
  CHECK(d.cookie == 0x0102030405060708ull);
  CHECK(d.offset == 0x1000u);
  CHECK(d.length == 512u);
  CHECK(d == h);
}

TEST_CASE("RequestHeader: block status with REQ_ONE and a 64-bit offset") {
  const std::array<uint8_t, 28> expected = {
      0x25, 0x60, 0x95, 0x13, 0x00, 0x08, 0x00, 0x07, 0xFF, 0xFE, 0xFD, 0xFC, 0xFB, 0xFA,
      0xF9, 0xF8, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0xFF, 0xFF, 0xFF, 0xFF,
  };
  const RequestHeader h{.flags = kCmdFlagReqOne,
                        .type = kCmdBlockStatus,
                        .cookie = 0xFFFEFDFCFBFAF9F8,
                        .offset = uint64_t{1} << 40,
                        .length = 0xFFFFFFFF};
  CHECK(h.Encode() == expected);
  CHECK(RequestHeader::Decode(expected.data()) == h);
}

TEST_CASE("RequestHeader: decode keeps a wrong magic for the caller to reject") {
  std::array<uint8_t, 28> bytes = RequestHeader{.type = kCmdRead, .length = 4096}.Encode();
  bytes[0] = 0x12;  // the historic 0x12560953 request magic
  bytes[1] = 0x56;
  bytes[2] = 0x09;
  bytes[3] = 0x53;
  const RequestHeader d = RequestHeader::Decode(bytes.data());
  CHECK(d.magic == 0x12560953u);
  CHECK(d.magic != kRequestMagic);
  CHECK(d.length == 4096u);
}

TEST_CASE("SimpleReply: EINVAL encodes to the spec's bytes") {
  const std::array<uint8_t, 16> expected = {
      0x67, 0x44, 0x66, 0x98,                          // magic
      0x00, 0x00, 0x00, 0x16,                          // error 22
      0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88,  // cookie
  };
  const SimpleReply r{.error = kEINVAL, .cookie = 0x1122334455667788};
  CHECK(SimpleReply::kSize == 16);
  CHECK(EncodeGuarded(r) == expected);
  const SimpleReply d = SimpleReply::Decode(expected.data());
  CHECK(d.magic == kSimpleReplyMagic);
  CHECK(d.error == kEINVAL);
  CHECK(d.cookie == 0x1122334455667788ull);
  CHECK(d == r);
}

TEST_CASE("SimpleReply: success") {
  const std::array<uint8_t, 16> expected = {0x67, 0x44, 0x66, 0x98, 0, 0, 0, 0,
                                            0,    0,    0,    0,    0, 0, 0, 42};
  CHECK(SimpleReply{.cookie = 42}.Encode() == expected);
}

TEST_CASE("StructuredReplyHeader: final error chunk encodes to the spec's bytes") {
  // An NBD_REPLY_TYPE_ERROR chunk with a 5-byte message: 4 + 2 + 5 = 11.
  const std::array<uint8_t, 20> expected = {
      0x66, 0x8E, 0x33, 0xEF,                          // magic
      0x00, 0x01,                                      // flags: DONE
      0x80, 0x01,                                      // type: ERROR (2^15 + 1)
      0xDE, 0xAD, 0xBE, 0xEF, 0xCA, 0xFE, 0xF0, 0x0D,  // cookie
      0x00, 0x00, 0x00, 0x0B,                          // length 11
  };
  const StructuredReplyHeader h{.flags = kReplyFlagDone,
                                .type = kReplyTypeError,
                                .cookie = 0xDEADBEEFCAFEF00D,
                                .length = kErrorPayloadMinSize + 5};
  CHECK(StructuredReplyHeader::kSize == 20);
  CHECK(EncodeGuarded(h) == expected);
  const StructuredReplyHeader d = StructuredReplyHeader::Decode(expected.data());
  CHECK(d.magic == kStructuredReplyMagic);
  CHECK(d.flags == kReplyFlagDone);
  CHECK(d.type == kReplyTypeError);
  CHECK(d.cookie == 0xDEADBEEFCAFEF00Dull);
  CHECK(d.length == 11u);
  CHECK(d == h);
}

TEST_CASE("StructuredReplyHeader: non-final data and hole chunks") {
  const std::array<uint8_t, 20> data = {
      0x66, 0x8E, 0x33, 0xEF, 0x00, 0x00, 0x00, 0x01, 0,    0,
      0,    0,    0,    0,    0,    7,    0x00, 0x00, 0x10, 0x08};  // 8 + 4096
  CHECK(StructuredReplyHeader{.type = kReplyTypeOffsetData, .cookie = 7, .length = 8 + 4096}
            .Encode() == data);

  const std::array<uint8_t, 20> hole = {0x66, 0x8E, 0x33, 0xEF, 0x00, 0x00, 0x00, 0x02, 0,    0,
                                        0,    0,    0,    0,    0,    7,    0x00, 0x00, 0x00, 0x0C};
  CHECK(StructuredReplyHeader{
            .type = kReplyTypeOffsetHole, .cookie = 7, .length = kOffsetHolePayloadSize}
            .Encode() == hole);
}

TEST_CASE("OptionHeader: NBD_OPT_GO encodes to the spec's bytes") {
  const std::array<uint8_t, 16> expected = {
      0x49, 0x48, 0x41, 0x56, 0x45, 0x4F, 0x50, 0x54,  // "IHAVEOPT"
      0x00, 0x00, 0x00, 0x07,                          // option: GO
      0x00, 0x00, 0x00, 0x0A,                          // length 10
  };
  const OptionHeader h{.option = kOptGo, .length = 10};
  CHECK(OptionHeader::kSize == 16);
  CHECK(EncodeGuarded(h) == expected);
  const OptionHeader d = OptionHeader::Decode(expected.data());
  CHECK(d.magic == kIHaveOpt);
  CHECK(d.option == kOptGo);
  CHECK(d.length == 10u);
  CHECK(d == h);
}

TEST_CASE("OptionReplyHeader: NBD_REP_ERR_UNKNOWN encodes to the spec's bytes") {
  const std::array<uint8_t, 20> expected = {
      0x00, 0x03, 0xE8, 0x89, 0x04, 0x55, 0x65, 0xA9,  // reply magic
      0x00, 0x00, 0x00, 0x07,                          // option: GO
      0x80, 0x00, 0x00, 0x06,                          // reply: ERR_UNKNOWN
      0x00, 0x00, 0x00, 0x00,                          // length 0
  };
  const OptionReplyHeader h{.option = kOptGo, .reply_type = kRepErrUnknown};
  CHECK(OptionReplyHeader::kSize == 20);
  CHECK(EncodeGuarded(h) == expected);
  const OptionReplyHeader d = OptionReplyHeader::Decode(expected.data());
  CHECK(d.magic == kOptionReplyMagic);
  CHECK(d.option == kOptGo);
  CHECK(d.reply_type == kRepErrUnknown);
  CHECK(d.length == 0u);
  CHECK(IsOptionReplyError(d.reply_type));
  CHECK(d == h);
}

TEST_CASE("OptionReplyHeader: NBD_REP_INFO for NBD_INFO_EXPORT") {
  const std::array<uint8_t, 20> expected = {
      0x00, 0x03, 0xE8, 0x89, 0x04, 0x55, 0x65, 0xA9, 0x00, 0x00,
      0x00, 0x06, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, 0x0C,
  };
  CHECK(OptionReplyHeader{.option = kOptInfo, .reply_type = kRepInfo, .length = kInfoExportLength}
            .Encode() == expected);
}

template <typename Message>
void CheckRoundTrip(const Message& m) {
  const auto bytes = m.Encode();
  CHECK(Message::Decode(bytes.data()) == m);
  CHECK(Message::Decode(bytes.data()).Encode() == bytes);
}

TEST_CASE("decode(encode(x)) == x for every message type") {
  for (uint64_t v : {uint64_t{0}, uint64_t{1}, uint64_t{0x8000000000000001},
                     uint64_t{0x0123456789ABCDEF}, ~uint64_t{0}}) {
    CAPTURE(v);
    const auto v16 = static_cast<uint16_t>(v);
    const auto v32 = static_cast<uint32_t>(v >> 7);
    CheckRoundTrip(RequestHeader{.magic = static_cast<uint32_t>(v),
                                 .flags = v16,
                                 .type = static_cast<uint16_t>(v >> 3),
                                 .cookie = v,
                                 .offset = ~v,
                                 .length = v32});
    CheckRoundTrip(SimpleReply{.magic = v32, .error = static_cast<uint32_t>(v), .cookie = v});
    CheckRoundTrip(StructuredReplyHeader{
        .magic = v32, .flags = v16, .type = static_cast<uint16_t>(~v), .cookie = v, .length = v32});
    CheckRoundTrip(OptionHeader{.magic = ~v, .option = v32, .length = static_cast<uint32_t>(v)});
    CheckRoundTrip(OptionReplyHeader{
        .magic = v, .option = v32, .reply_type = static_cast<uint32_t>(~v), .length = v32});
  }
}

// The codecs are usable in constant expressions.
constexpr bool RequestRoundTripsAtCompileTime() {
  const RequestHeader h{
      .flags = kCmdFlagFua, .type = kCmdWrite, .cookie = 9, .offset = 4096, .length = 512};
  const auto bytes = h.Encode();
  return RequestHeader::Decode(bytes.data()) == h && bytes[0] == 0x25 && bytes[27] == 0x00 &&
         bytes[26] == 0x02;
}
static_assert(RequestRoundTripsAtCompileTime());

TEST_CASE("names for logs") {
  CHECK(std::string_view(CommandName(kCmdRead)) == "NBD_CMD_READ");
  CHECK(std::string_view(CommandName(kCmdWrite)) == "NBD_CMD_WRITE");
  CHECK(std::string_view(CommandName(kCmdWriteZeroes)) == "NBD_CMD_WRITE_ZEROES");
  CHECK(std::string_view(CommandName(kCmdBlockStatus)) == "NBD_CMD_BLOCK_STATUS");
  CHECK(std::string_view(CommandName(kCmdResize)) == "NBD_CMD_RESIZE");
  CHECK(std::string_view(CommandName(9)) == "unknown");
  CHECK(std::string_view(CommandName(0xFFFF)) == "unknown");

  CHECK(std::string_view(OptionName(kOptExportName)) == "NBD_OPT_EXPORT_NAME");
  CHECK(std::string_view(OptionName(kOptStartTls)) == "NBD_OPT_STARTTLS");
  CHECK(std::string_view(OptionName(kOptGo)) == "NBD_OPT_GO");
  CHECK(std::string_view(OptionName(kOptExtendedHeaders)) == "NBD_OPT_EXTENDED_HEADERS");
  CHECK(std::string_view(OptionName(0)) == "unknown");
  CHECK(std::string_view(OptionName(12)) == "unknown");

  CHECK(std::string_view(OptionReplyName(kRepAck)) == "NBD_REP_ACK");
  CHECK(std::string_view(OptionReplyName(kRepErrTooBig)) == "NBD_REP_ERR_TOO_BIG");
  CHECK(std::string_view(OptionReplyName(kRepErrorBit)) == "unknown");

  CHECK(std::string_view(ReplyTypeName(kReplyTypeNone)) == "NBD_REPLY_TYPE_NONE");
  CHECK(std::string_view(ReplyTypeName(kReplyTypeErrorOffset)) == "NBD_REPLY_TYPE_ERROR_OFFSET");
  CHECK(std::string_view(ReplyTypeName(3)) == "unknown");
}

}  // namespace
}  // namespace dst::nbd::nbd_protocol_test
