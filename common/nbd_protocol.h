// NBD wire protocol constants and fixed-size message codecs, as specified in
// NetworkBlockDevice/nbd doc/proto.md (fixed newstyle handshake, simple and
// structured replies; extended headers are not covered). Everything is
// constexpr and allocation-free; all multi-byte fields are big-endian.
// Decoders never fail: callers check the magic field themselves.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace dst::nbd {

// ---------------------------------------------------------------------------
// Byte order. Built from shifts on unsigned values so they are constexpr, free
// of alignment assumptions and correct on any host byte order.

constexpr uint16_t LoadBE16(const uint8_t* p) {
  return static_cast<uint16_t>((uint32_t{p[0]} << 8) | uint32_t{p[1]});
}

constexpr uint32_t LoadBE32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

constexpr uint64_t LoadBE64(const uint8_t* p) {
  return (uint64_t{LoadBE32(p)} << 32) | uint64_t{LoadBE32(p + 4)};
}

constexpr void StoreBE16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v >> 8);
  p[1] = static_cast<uint8_t>(v);
}

constexpr void StoreBE32(uint8_t* p, uint32_t v) {
  p[0] = static_cast<uint8_t>(v >> 24);
  p[1] = static_cast<uint8_t>(v >> 16);
  p[2] = static_cast<uint8_t>(v >> 8);
  p[3] = static_cast<uint8_t>(v);
}

constexpr void StoreBE64(uint8_t* p, uint64_t v) {
  StoreBE32(p, static_cast<uint32_t>(v >> 32));
  StoreBE32(p + 4, static_cast<uint32_t>(v));
}

// Appends big-endian integers to a message being built.
inline void AppendBE16(std::vector<uint8_t>& v, uint16_t x) {
  v.resize(v.size() + 2);
  StoreBE16(v.data() + v.size() - 2, x);
}
inline void AppendBE32(std::vector<uint8_t>& v, uint32_t x) {
  v.resize(v.size() + 4);
  StoreBE32(v.data() + v.size() - 4, x);
}
inline void AppendBE64(std::vector<uint8_t>& v, uint64_t x) {
  v.resize(v.size() + 8);
  StoreBE64(v.data() + v.size() - 8, x);
}

// ---------------------------------------------------------------------------
// Magic numbers.

inline constexpr uint64_t kNbdMagic = 0x4e42444d41474943;          // "NBDMAGIC"
inline constexpr uint64_t kIHaveOpt = 0x49484156454F5054;          // "IHAVEOPT"
inline constexpr uint64_t kOptionReplyMagic = 0x0003e889045565a9;  // option replies
inline constexpr uint32_t kRequestMagic = 0x25609513;
inline constexpr uint32_t kSimpleReplyMagic = 0x67446698;
inline constexpr uint32_t kStructuredReplyMagic = 0x668e33ef;

// ---------------------------------------------------------------------------
// Handshake phase flags.

// Handshake flags (16 bits, server -> client after the two magics).
inline constexpr uint16_t kFlagFixedNewstyle = 1 << 0;
inline constexpr uint16_t kFlagNoZeroes = 1 << 1;

// Client flags (32 bits, client -> server). A server must drop the connection
// on any bit it does not know, hence the mask.
inline constexpr uint32_t kClientFlagFixedNewstyle = 1 << 0;
inline constexpr uint32_t kClientFlagNoZeroes = 1 << 1;
inline constexpr uint32_t kClientFlagsKnown = kClientFlagFixedNewstyle | kClientFlagNoZeroes;

// Transmission flags (16 bits, sent with the export size).
inline constexpr uint16_t kFlagHasFlags = 1 << 0;  // must always be set
inline constexpr uint16_t kFlagReadOnly = 1 << 1;
inline constexpr uint16_t kFlagSendFlush = 1 << 2;
inline constexpr uint16_t kFlagSendFua = 1 << 3;
inline constexpr uint16_t kFlagRotational = 1 << 4;
inline constexpr uint16_t kFlagSendTrim = 1 << 5;
inline constexpr uint16_t kFlagSendWriteZeroes = 1 << 6;
inline constexpr uint16_t kFlagSendDf = 1 << 7;
inline constexpr uint16_t kFlagCanMultiConn = 1 << 8;
inline constexpr uint16_t kFlagSendResize = 1 << 9;
inline constexpr uint16_t kFlagSendCache = 1 << 10;
inline constexpr uint16_t kFlagSendFastZero = 1 << 11;
inline constexpr uint16_t kFlagBlockStatPayload = 1 << 12;  // extended headers only

// ---------------------------------------------------------------------------
// Options and option replies. Unscoped enums with a fixed underlying type so
// values read off the wire (including unknown ones) compare and switch
// without casts.

enum Option : uint32_t {
  kOptExportName = 1,
  kOptAbort = 2,
  kOptList = 3,
  kOptPeekExport = 4,  // withdrawn; never sent by current clients
  kOptStartTls = 5,
  kOptInfo = 6,
  kOptGo = 7,
  kOptStructuredReply = 8,
  kOptListMetaContext = 9,
  kOptSetMetaContext = 10,
  kOptExtendedHeaders = 11,
};

// Error replies are told apart from successful ones by bit 31 alone, so a
// client can recognise error types newer than this list.
inline constexpr uint32_t kRepErrorBit = uint32_t{1} << 31;

enum OptionReplyType : uint32_t {
  kRepAck = 1,
  kRepServer = 2,
  kRepInfo = 3,
  kRepMetaContext = 4,
  kRepErrUnsup = kRepErrorBit + 1,
  kRepErrPolicy = kRepErrorBit + 2,
  kRepErrInvalid = kRepErrorBit + 3,
  kRepErrPlatform = kRepErrorBit + 4,
  kRepErrTlsReqd = kRepErrorBit + 5,
  kRepErrUnknown = kRepErrorBit + 6,
  kRepErrShutdown = kRepErrorBit + 7,
  kRepErrBlockSizeReqd = kRepErrorBit + 8,
  kRepErrTooBig = kRepErrorBit + 9,
};

constexpr bool IsOptionReplyError(uint32_t reply_type) {
  return (reply_type & kRepErrorBit) != 0;
}

// Information types carried in NBD_REP_INFO replies to NBD_OPT_INFO/GO.
enum InfoType : uint16_t {
  kInfoExport = 0,
  kInfoName = 1,
  kInfoDescription = 2,
  kInfoBlockSize = 3,
};

// NBD_REP_INFO lengths, including the 2-byte type field.
inline constexpr uint32_t kInfoExportLength = 12;     // type, u64 size, u16 flags
inline constexpr uint32_t kInfoBlockSizeLength = 14;  // type, u32 min, preferred, max

// ---------------------------------------------------------------------------
// Transmission phase.

enum Command : uint16_t {
  kCmdRead = 0,
  kCmdWrite = 1,
  kCmdDisc = 2,
  kCmdFlush = 3,
  kCmdTrim = 4,
  kCmdCache = 5,
  kCmdWriteZeroes = 6,
  kCmdBlockStatus = 7,
  kCmdResize = 8,
};

// Command flags (16 bits in every request).
inline constexpr uint16_t kCmdFlagFua = 1 << 0;
inline constexpr uint16_t kCmdFlagNoHole = 1 << 1;
inline constexpr uint16_t kCmdFlagDf = 1 << 2;
inline constexpr uint16_t kCmdFlagReqOne = 1 << 3;
inline constexpr uint16_t kCmdFlagFastZero = 1 << 4;

// Structured reply chunk flags.
inline constexpr uint16_t kReplyFlagDone = 1 << 0;

// Error chunk types all have bit 15 set; like option replies, unknown types
// with that bit are still errors.
inline constexpr uint16_t kReplyTypeErrorBit = 1 << 15;

enum ReplyType : uint16_t {
  kReplyTypeNone = 0,
  kReplyTypeOffsetData = 1,
  kReplyTypeOffsetHole = 2,
  kReplyTypeBlockStatus = 5,
  kReplyTypeError = kReplyTypeErrorBit + 1,
  kReplyTypeErrorOffset = kReplyTypeErrorBit + 2,
};

constexpr bool IsReplyTypeError(uint16_t type) {
  return (type & kReplyTypeErrorBit) != 0;
}

// Structured reply payload sizes that the spec fixes.
inline constexpr uint32_t kOffsetHolePayloadSize = 12;      // u64 offset, u32 hole size
inline constexpr uint32_t kErrorPayloadMinSize = 6;         // u32 error, u16 message length
inline constexpr uint32_t kErrorOffsetPayloadMinSize = 14;  // ... plus u64 offset
inline constexpr uint32_t kBlockDescriptorSize = 8;         // u32 length, u32 status flags

// The one metadata context the spec defines, and its status flags.
inline constexpr char kBaseAllocationContext[] = "base:allocation";
inline constexpr uint32_t kStateHole = 1 << 0;
inline constexpr uint32_t kStateZero = 1 << 1;

// Error values for the reply error field. These are deliberately not errno:
// only these values are portable on the wire (see nbd_errors.h for mapping).
enum Error : uint32_t {
  kSuccess = 0,
  kEPERM = 1,
  kEIO = 5,
  kENOMEM = 12,
  kEINVAL = 22,
  kENOSPC = 28,
  kEOVERFLOW = 75,
  kENOTSUP = 95,
  kESHUTDOWN = 108,
};

// ---------------------------------------------------------------------------
// Limits.

// Option data we are willing to buffer; longer options are rejected instead
// of read, which bounds memory per unauthenticated connection.
inline constexpr uint32_t kMaxOptionLength = 65536;
// The spec's hard cap on strings (export names, error messages); it
// recommends staying under 256 bytes but requires no more than 4096.
inline constexpr uint32_t kMaxStringLength = 4096;
inline constexpr uint32_t kMaxExportNameLength = kMaxStringLength;
// Zero padding after NBD_OPT_EXPORT_NAME's reply unless NO_ZEROES was agreed.
inline constexpr size_t kExportNameZeroPadding = 124;

// ---------------------------------------------------------------------------
// Fixed-size messages. Each has the wire size kSize, Encode() writing exactly
// kSize bytes and Decode() reading exactly kSize bytes. The magic is a field
// so a decoded header can be checked, and defaults to the correct value.

// C: request header, followed by `length` bytes of data for NBD_CMD_WRITE.
struct RequestHeader {
  static constexpr size_t kSize = 28;

  uint32_t magic = kRequestMagic;
  uint16_t flags = 0;  // kCmdFlag*
  uint16_t type = 0;   // Command
  uint64_t cookie = 0;
  uint64_t offset = 0;
  uint32_t length = 0;

  constexpr void Encode(uint8_t* out) const {
    StoreBE32(out, magic);
    StoreBE16(out + 4, flags);
    StoreBE16(out + 6, type);
    StoreBE64(out + 8, cookie);
    StoreBE64(out + 16, offset);
    StoreBE32(out + 24, length);
  }
  constexpr std::array<uint8_t, kSize> Encode() const {
    std::array<uint8_t, kSize> out{};
    Encode(out.data());
    return out;
  }
  static constexpr RequestHeader Decode(const uint8_t* in) {
    return {LoadBE32(in),     LoadBE16(in + 4),  LoadBE16(in + 6),
            LoadBE64(in + 8), LoadBE64(in + 16), LoadBE32(in + 24)};
  }
  bool operator==(const RequestHeader&) const = default;
};

// S: simple reply, followed by the data of a successful NBD_CMD_READ.
struct SimpleReply {
  static constexpr size_t kSize = 16;

  uint32_t magic = kSimpleReplyMagic;
  uint32_t error = 0;  // Error
  uint64_t cookie = 0;

  constexpr void Encode(uint8_t* out) const {
    StoreBE32(out, magic);
    StoreBE32(out + 4, error);
    StoreBE64(out + 8, cookie);
  }
  constexpr std::array<uint8_t, kSize> Encode() const {
    std::array<uint8_t, kSize> out{};
    Encode(out.data());
    return out;
  }
  static constexpr SimpleReply Decode(const uint8_t* in) {
    return {LoadBE32(in), LoadBE32(in + 4), LoadBE64(in + 8)};
  }
  bool operator==(const SimpleReply&) const = default;
};

// S: structured reply chunk header, followed by `length` bytes of payload.
struct StructuredReplyHeader {
  static constexpr size_t kSize = 20;

  uint32_t magic = kStructuredReplyMagic;
  uint16_t flags = 0;  // kReplyFlag*
  uint16_t type = 0;   // ReplyType
  uint64_t cookie = 0;
  uint32_t length = 0;

  constexpr void Encode(uint8_t* out) const {
    StoreBE32(out, magic);
    StoreBE16(out + 4, flags);
    StoreBE16(out + 6, type);
    StoreBE64(out + 8, cookie);
    StoreBE32(out + 16, length);
  }
  constexpr std::array<uint8_t, kSize> Encode() const {
    std::array<uint8_t, kSize> out{};
    Encode(out.data());
    return out;
  }
  static constexpr StructuredReplyHeader Decode(const uint8_t* in) {
    return {LoadBE32(in), LoadBE16(in + 4), LoadBE16(in + 6), LoadBE64(in + 8), LoadBE32(in + 16)};
  }
  bool operator==(const StructuredReplyHeader&) const = default;
};

// C: option request header, followed by `length` bytes of option data.
struct OptionHeader {
  static constexpr size_t kSize = 16;

  uint64_t magic = kIHaveOpt;
  uint32_t option = 0;  // Option
  uint32_t length = 0;

  constexpr void Encode(uint8_t* out) const {
    StoreBE64(out, magic);
    StoreBE32(out + 8, option);
    StoreBE32(out + 12, length);
  }
  constexpr std::array<uint8_t, kSize> Encode() const {
    std::array<uint8_t, kSize> out{};
    Encode(out.data());
    return out;
  }
  static constexpr OptionHeader Decode(const uint8_t* in) {
    return {LoadBE64(in), LoadBE32(in + 8), LoadBE32(in + 12)};
  }
  bool operator==(const OptionHeader&) const = default;
};

// S: option reply header, followed by `length` bytes of reply data.
struct OptionReplyHeader {
  static constexpr size_t kSize = 20;

  uint64_t magic = kOptionReplyMagic;
  uint32_t option = 0;      // the option being answered
  uint32_t reply_type = 0;  // OptionReplyType
  uint32_t length = 0;

  constexpr void Encode(uint8_t* out) const {
    StoreBE64(out, magic);
    StoreBE32(out + 8, option);
    StoreBE32(out + 12, reply_type);
    StoreBE32(out + 16, length);
  }
  constexpr std::array<uint8_t, kSize> Encode() const {
    std::array<uint8_t, kSize> out{};
    Encode(out.data());
    return out;
  }
  static constexpr OptionReplyHeader Decode(const uint8_t* in) {
    return {LoadBE64(in), LoadBE32(in + 8), LoadBE32(in + 12), LoadBE32(in + 16)};
  }
  bool operator==(const OptionReplyHeader&) const = default;
};

// ---------------------------------------------------------------------------
// Names for log lines, spelled as in the spec; "unknown" for other values.

constexpr const char* CommandName(uint16_t type) {
  switch (type) {
    case kCmdRead:
      return "NBD_CMD_READ";
    case kCmdWrite:
      return "NBD_CMD_WRITE";
    case kCmdDisc:
      return "NBD_CMD_DISC";
    case kCmdFlush:
      return "NBD_CMD_FLUSH";
    case kCmdTrim:
      return "NBD_CMD_TRIM";
    case kCmdCache:
      return "NBD_CMD_CACHE";
    case kCmdWriteZeroes:
      return "NBD_CMD_WRITE_ZEROES";
    case kCmdBlockStatus:
      return "NBD_CMD_BLOCK_STATUS";
    case kCmdResize:
      return "NBD_CMD_RESIZE";
  }
  return "unknown";
}

constexpr const char* OptionName(uint32_t option) {
  switch (option) {
    case kOptExportName:
      return "NBD_OPT_EXPORT_NAME";
    case kOptAbort:
      return "NBD_OPT_ABORT";
    case kOptList:
      return "NBD_OPT_LIST";
    case kOptPeekExport:
      return "NBD_OPT_PEEK_EXPORT";
    case kOptStartTls:
      return "NBD_OPT_STARTTLS";
    case kOptInfo:
      return "NBD_OPT_INFO";
    case kOptGo:
      return "NBD_OPT_GO";
    case kOptStructuredReply:
      return "NBD_OPT_STRUCTURED_REPLY";
    case kOptListMetaContext:
      return "NBD_OPT_LIST_META_CONTEXT";
    case kOptSetMetaContext:
      return "NBD_OPT_SET_META_CONTEXT";
    case kOptExtendedHeaders:
      return "NBD_OPT_EXTENDED_HEADERS";
  }
  return "unknown";
}

constexpr const char* OptionReplyName(uint32_t reply_type) {
  switch (reply_type) {
    case kRepAck:
      return "NBD_REP_ACK";
    case kRepServer:
      return "NBD_REP_SERVER";
    case kRepInfo:
      return "NBD_REP_INFO";
    case kRepMetaContext:
      return "NBD_REP_META_CONTEXT";
    case kRepErrUnsup:
      return "NBD_REP_ERR_UNSUP";
    case kRepErrPolicy:
      return "NBD_REP_ERR_POLICY";
    case kRepErrInvalid:
      return "NBD_REP_ERR_INVALID";
    case kRepErrPlatform:
      return "NBD_REP_ERR_PLATFORM";
    case kRepErrTlsReqd:
      return "NBD_REP_ERR_TLS_REQD";
    case kRepErrUnknown:
      return "NBD_REP_ERR_UNKNOWN";
    case kRepErrShutdown:
      return "NBD_REP_ERR_SHUTDOWN";
    case kRepErrBlockSizeReqd:
      return "NBD_REP_ERR_BLOCK_SIZE_REQD";
    case kRepErrTooBig:
      return "NBD_REP_ERR_TOO_BIG";
  }
  return "unknown";
}

constexpr const char* ReplyTypeName(uint16_t type) {
  switch (type) {
    case kReplyTypeNone:
      return "NBD_REPLY_TYPE_NONE";
    case kReplyTypeOffsetData:
      return "NBD_REPLY_TYPE_OFFSET_DATA";
    case kReplyTypeOffsetHole:
      return "NBD_REPLY_TYPE_OFFSET_HOLE";
    case kReplyTypeBlockStatus:
      return "NBD_REPLY_TYPE_BLOCK_STATUS";
    case kReplyTypeError:
      return "NBD_REPLY_TYPE_ERROR";
    case kReplyTypeErrorOffset:
      return "NBD_REPLY_TYPE_ERROR_OFFSET";
  }
  return "unknown";
}

}  // namespace dst::nbd
