#include "tests/fuzz/wire_check.h"

#include "common/nbd_protocol.h"
#include "tests/fuzz/fuzz_driver.h"

namespace dst::fuzz {

using namespace dst::nbd;

namespace {

void CheckInfo(std::span<const uint8_t> data) {
  Check(data.size() >= 2, "NBD_REP_INFO without a type");
  const uint16_t type = LoadBE16(data.data());
  if (type == kInfoExport) {
    Check(data.size() == kInfoExportLength, "NBD_INFO_EXPORT of the wrong length");
    Check(LoadBE16(data.data() + 10) & kFlagHasFlags, "transmission flags without HAS_FLAGS");
  } else if (type == kInfoBlockSize) {
    Check(data.size() == kInfoBlockSizeLength, "NBD_INFO_BLOCK_SIZE of the wrong length");
    const uint32_t min = LoadBE32(data.data() + 2), preferred = LoadBE32(data.data() + 6),
                   max = LoadBE32(data.data() + 10);
    Check(min >= 1 && min <= preferred && preferred <= max, "inconsistent block sizes");
  }
}

void CheckOptionReply(const OptionReplyHeader& header, std::span<const uint8_t> data) {
  switch (header.reply_type) {
    case kRepAck:
      Check(data.empty(), "NBD_REP_ACK with data");
      break;
    case kRepServer:
      Check(data.size() >= 4 && LoadBE32(data.data()) <= data.size() - 4,
            "NBD_REP_SERVER whose name overruns it");
      break;
    case kRepInfo:
      CheckInfo(data);
      break;
    case kRepMetaContext:
      Check(data.size() > 4, "NBD_REP_META_CONTEXT without a name");
      break;
    default:
      Check(IsOptionReplyError(header.reply_type), "unknown option reply type");
      Check(data.size() <= kMaxStringLength, "option error message too long");
  }
}

}  // namespace

size_t CheckOptionReplies(std::span<const uint8_t> out, std::vector<OptionReply>* replies) {
  Check(out.size() >= 18 && LoadBE64(out.data()) == kNbdMagic &&
            LoadBE64(out.data() + 8) == kIHaveOpt,
        "no fixed-newstyle greeting");
  size_t at = 18;
  while (out.size() - at >= OptionReplyHeader::kSize &&
         LoadBE64(out.data() + at) == kOptionReplyMagic) {
    const OptionReplyHeader header = OptionReplyHeader::Decode(out.data() + at);
    at += OptionReplyHeader::kSize;
    Check(out.size() - at >= header.length, "option reply shorter than its length field");
    CheckOptionReply(header, out.subspan(at, header.length));
    if (replies) replies->push_back({header.option, header.reply_type});
    at += header.length;
  }
  return at;
}

bool AllowedNbdError(uint32_t error, uint16_t flags) {
  switch (error) {
    case kEPERM:
    case kEIO:
    case kENOMEM:
    case kEINVAL:
    case kENOSPC:
    case kESHUTDOWN:
      return true;
    case kEOVERFLOW:
      return flags & kCmdFlagDf;
    case kENOTSUP:
      return flags & kCmdFlagFastZero;
  }
  return false;
}

}  // namespace dst::fuzz
