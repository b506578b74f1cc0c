#include "aggregator/server/sparse_read_reply.h"

#include <cerrno>
#include <string>

#include "common/nbd_protocol.h"

namespace dst::server {

using namespace dst::nbd;

namespace {

struct Piece {
  uint64_t offset, length;
  bool hole;
};

std::string Describe(const volume::ByteRange& hole) {
  return "hole of " + std::to_string(hole.length) + " bytes at " + std::to_string(hole.offset);
}

// The data and hole pieces of the read, or EIO if a hole is out of order,
// empty or outside it.
Status SplitIntoPieces(uint64_t offset, uint64_t length,
                       const std::vector<volume::ByteRange>& holes, std::vector<Piece>* pieces) {
  const uint64_t end = offset + length;
  uint64_t at = offset;
  for (const volume::ByteRange& hole : holes) {
    if (hole.length == 0 || hole.offset < at || hole.offset > end ||
        hole.length > end - hole.offset)
      return Status::Error(EIO, "read of " + std::to_string(length) + " bytes at " +
                                    std::to_string(offset) + ": the volume reported a " +
                                    Describe(hole) + ", empty, out of order or outside the read");
    if (hole.offset > at) pieces->push_back({at, hole.offset - at, false});
    pieces->push_back({hole.offset, hole.length, true});
    at = hole.offset + hole.length;
  }
  if (at < end) pieces->push_back({at, end - at, false});
  return Status::Ok();
}

}  // namespace

Status AppendSparseReadChunks(uint64_t cookie, uint64_t offset, std::span<const uint8_t> data,
                              const std::vector<volume::ByteRange>& holes,
                              std::vector<uint8_t>* out) {
  std::vector<Piece> pieces;
  DST_RETURN_IF_ERROR(SplitIntoPieces(offset, data.size(), holes, &pieces));
  for (size_t i = 0; i < pieces.size(); ++i) {
    const Piece& p = pieces[i];
    const uint16_t flags = i + 1 == pieces.size() ? kReplyFlagDone : 0;
    const uint32_t length = static_cast<uint32_t>(p.hole ? kOffsetHolePayloadSize : 8 + p.length);
    const StructuredReplyHeader chunk{kStructuredReplyMagic, flags,
                                      p.hole ? kReplyTypeOffsetHole : kReplyTypeOffsetData, cookie,
                                      length};
    const size_t start = out->size();
    out->resize(start + StructuredReplyHeader::kSize + 8);
    chunk.Encode(out->data() + start);
    StoreBE64(out->data() + start + StructuredReplyHeader::kSize, p.offset);
    if (p.hole) {
      AppendBE32(*out, static_cast<uint32_t>(p.length));  // within the read: at most 32 MiB
    } else {
      const auto first = data.begin() + static_cast<ptrdiff_t>(p.offset - offset);
      out->insert(out->end(), first, first + static_cast<ptrdiff_t>(p.length));
    }
  }
  return Status::Ok();
}

}  // namespace dst::server
