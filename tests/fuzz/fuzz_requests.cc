// libFuzzer target: the transmission phase, server side (ClientConnection).
//
// Input: byte 0 chooses the handshake that the target sends first, so that
// the fuzzer spends its time on requests (bit 0: structured replies; bit 1:
// with them, SET_META_CONTEXT base:allocation; bit 2: the read-only export
// "ro" instead of the default one; bit 3: NBD_OPT_EXPORT_NAME instead of
// NBD_OPT_GO; bit 4: the NO_ZEROES client flag; bit 5: an export that does
// not exist, so the handshake fails and the rest is taken for options). The
// rest is the request
// stream. Cookies are rewritten to the request's number, so that every reply
// can be matched to its request: the server only echoes them.
//
// Besides crashes, sanitizer reports and hangs, it fails on malformed or
// missing replies (a read answered short, an error the spec does not allow
// for that request, a request never answered), and when a session leaves
// something behind: in-flight budget, traffic counts, the connection object.

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "common/nbd_protocol.h"
#include "tests/fuzz/fuzz_driver.h"
#include "tests/fuzz/wire_check.h"

namespace dst::fuzz {
namespace {

using namespace dst::nbd;

struct Setup {
  bool structured, base_allocation, read_only, export_name, no_zeroes, unknown_export;
};

Setup SetupFrom(uint8_t bits) {
  const bool structured = bits & 1;
  return {structured,      structured && (bits & 2), (bits & 4) != 0,
          (bits & 8) != 0, (bits & 16) != 0,         (bits & 32) != 0};
}

void AppendU32(std::vector<uint8_t>& v, uint32_t x) {
  v.resize(v.size() + 4);
  StoreBE32(v.data() + v.size() - 4, x);
}

void AppendOption(std::vector<uint8_t>& v, uint32_t option, const std::vector<uint8_t>& data) {
  const auto header = OptionHeader{kIHaveOpt, option, static_cast<uint32_t>(data.size())}.Encode();
  v.insert(v.end(), header.begin(), header.end());
  v.insert(v.end(), data.begin(), data.end());
}

std::vector<uint8_t> ClientHandshake(const Setup& setup) {
  const std::string name = setup.unknown_export ? "nope" : setup.read_only ? "ro" : "";
  std::vector<uint8_t> out;
  AppendU32(out, kClientFlagFixedNewstyle | (setup.no_zeroes ? kClientFlagNoZeroes : 0));
  if (setup.structured) AppendOption(out, kOptStructuredReply, {});
  std::vector<uint8_t> data;
  AppendU32(data, static_cast<uint32_t>(name.size()));
  data.insert(data.end(), name.begin(), name.end());
  if (setup.base_allocation) {
    std::vector<uint8_t> meta = data;
    AppendU32(meta, 1);
    AppendU32(meta, sizeof kBaseAllocationContext - 1);
    meta.insert(meta.end(), kBaseAllocationContext, std::end(kBaseAllocationContext) - 1);
    AppendOption(out, kOptSetMetaContext, meta);
  }
  if (setup.export_name) {
    AppendOption(out, kOptExportName, std::vector<uint8_t>(name.begin(), name.end()));
  } else {
    data.resize(data.size() + 2);  // no information requests
    AppendOption(out, kOptGo, data);
  }
  return out;
}

// A request as the client sent it, and what its replies said so far.
struct Sent {
  RequestHeader header;
  bool answerable = true;  // false: a write whose payload the input cuts short
  bool answered = false;
  bool failed = false;
  uint64_t covered = 0;  // bytes of a read answered so far, data and holes
  int chunks = 0;
};

struct Model {
  std::vector<Sent> sent;
  bool hang_up = false;  // a bad magic: the server closes at once, replies may be cut
};

// The requests the server will read from `stream` (up to NBD_CMD_DISC or a
// bad magic), numbering their cookies in place.
Model ParseRequests(std::span<uint8_t> stream) {
  Model model;
  size_t at = 0;
  while (stream.size() - at >= RequestHeader::kSize) {
    uint8_t* raw = stream.data() + at;
    Sent sent{RequestHeader::Decode(raw)};
    RequestHeader& h = sent.header;
    if (h.magic != kRequestMagic) {
      model.hang_up = true;
      break;
    }
    if (h.type == kCmdDisc) break;
    h.cookie = model.sent.size() + 1;
    StoreBE64(raw + 8, h.cookie);
    at += RequestHeader::kSize;
    if (h.type == kCmdWrite) {
      sent.answerable = stream.size() - at >= h.length;
      at = sent.answerable ? at + h.length : stream.size();
    }
    model.sent.push_back(sent);
  }
  return model;
}

// Walks the transmission replies and matches them to the requests.
class ReplyCheck {
 public:
  ReplyCheck(Model& model, bool structured) : model_(model), structured_(structured) {}

  void Run(std::span<const uint8_t> out) {
    for (size_t at = 0; at < out.size();) {
      const size_t n = structured_ ? Chunk(out.subspan(at)) : Simple(out.subspan(at));
      if (n == 0) return Check(model_.hang_up, "a reply cut short");
      at += n;
    }
    if (model_.hang_up) return;
    for (const Sent& s : model_.sent)
      Check(s.answered || !s.answerable, "a request never answered");
  }

 private:
  Sent& Find(uint64_t cookie) {
    Check(cookie >= 1 && cookie <= model_.sent.size(), "a reply to a cookie never sent");
    Sent& s = model_.sent[cookie - 1];
    Check(!s.answered && s.answerable, "a reply to a request already answered or never sent");
    return s;
  }

  // Returns the reply's size; 0 when `out` ends before it does.
  size_t Simple(std::span<const uint8_t> out) {
    if (out.size() < SimpleReply::kSize) return 0;
    const SimpleReply reply = SimpleReply::Decode(out.data());
    Check(reply.magic == kSimpleReplyMagic, "a bad simple reply magic");
    Sent& s = Find(reply.cookie);
    const RequestHeader& h = s.header;
    Check(reply.error == 0 || AllowedNbdError(reply.error, h.flags), "an error not allowed here");
    const size_t size =
        SimpleReply::kSize + (reply.error == 0 && h.type == kCmdRead ? h.length : 0);
    if (out.size() < size) return 0;
    s.answered = true;
    return size;
  }

  size_t Chunk(std::span<const uint8_t> out) {
    if (out.size() < StructuredReplyHeader::kSize) return 0;
    const auto chunk = StructuredReplyHeader::Decode(out.data());
    Check(chunk.magic == kStructuredReplyMagic, "a bad structured reply magic");
    Check((chunk.flags & ~kReplyFlagDone) == 0, "unknown reply flags");
    if (out.size() - StructuredReplyHeader::kSize < chunk.length) return 0;
    Sent& s = Find(chunk.cookie);
    ++s.chunks;
    CheckPayload(s, chunk.type, out.subspan(StructuredReplyHeader::kSize, chunk.length));
    if (chunk.flags & kReplyFlagDone) Finish(s);
    return StructuredReplyHeader::kSize + chunk.length;
  }

  void CheckPayload(Sent& s, uint16_t type, std::span<const uint8_t> p) {
    switch (type) {
      case kReplyTypeNone:
        return Check(p.empty(), "NBD_REPLY_TYPE_NONE with a payload");
      case kReplyTypeOffsetData:
        Check(p.size() > 8, "an empty or short OFFSET_DATA chunk");
        return ReadPiece(s, LoadBE64(p.data()), p.size() - 8);
      case kReplyTypeOffsetHole:
        Check(p.size() == kOffsetHolePayloadSize, "an OFFSET_HOLE chunk of the wrong size");
        Check(LoadBE32(p.data() + 8) > 0, "an empty hole");
        return ReadPiece(s, LoadBE64(p.data()), LoadBE32(p.data() + 8));
      case kReplyTypeBlockStatus:
        return BlockStatus(s, p);
      case kReplyTypeError:
        Check(p.size() >= kErrorPayloadMinSize && LoadBE16(p.data() + 4) == p.size() - 6,
              "an error chunk whose message length is wrong");
        Check(AllowedNbdError(LoadBE32(p.data()), s.header.flags), "an error not allowed here");
        s.failed = true;
        return;
    }
    Fail("an unknown structured reply type");
  }

  // The server sends a read's chunks in offset order, without overlap.
  void ReadPiece(Sent& s, uint64_t offset, uint64_t length) {
    Check(s.header.type == kCmdRead, "read data in reply to something else");
    Check(offset == s.header.offset + s.covered, "read chunks out of order or overlapping");
    s.covered += length;
    Check(s.covered <= s.header.length, "more read data than asked for");
  }

  void BlockStatus(Sent& s, std::span<const uint8_t> p) {
    Check(s.header.type == kCmdBlockStatus, "block status in reply to something else");
    Check(p.size() >= 4 + kBlockDescriptorSize && (p.size() - 4) % kBlockDescriptorSize == 0,
          "a block status chunk of the wrong size");
    Check(LoadBE32(p.data()) == server::kBaseAllocationId, "an unknown meta context id");
    const size_t count = (p.size() - 4) / kBlockDescriptorSize;
    Check(count == 1 || !(s.header.flags & kCmdFlagReqOne), "REQ_ONE answered with more");
    uint64_t total = 0;
    for (size_t i = 0; i < count; ++i) {
      const uint32_t length = LoadBE32(p.data() + 4 + i * kBlockDescriptorSize);
      Check(length > 0, "an empty extent");
      total += length;
    }
    Check(total <= s.header.length, "extents beyond the range asked");
  }

  void Finish(Sent& s) {
    s.answered = true;
    if (s.failed || s.header.type != kCmdRead) return;
    Check(s.covered == s.header.length, "a read answered short");
    Check(s.chunks == 1 || !(s.header.flags & kCmdFlagDf), "a DF read split into chunks");
  }

  Model& model_;
  bool structured_;
};

// The bytes after the option replies that belong to the handshake.
size_t ExportNameReplySize(const Setup& setup) {
  if (!setup.export_name) return 0;
  return setup.no_zeroes ? 10 : 10 + kExportNameZeroPadding;
}

void CheckNothingLeft(ServerState& state) {
  Check(state.limits.used_total == 0, "in-flight budget not given back");
  Check(state.policy.open_connections == 0, "the connection outlived its session");
  for (const MemoryDevice* device : {&state.main, &state.read_only}) {
    const server::TrafficCounts traffic = state.registry.TrafficOf(device).Counts();
    Check(traffic.in_flight == 0 && traffic.clients == 0, "traffic counts left behind");
  }
}

void RunOne(std::span<const uint8_t> input) {
  const Setup setup = SetupFrom(input.empty() ? 0 : input[0]);
  std::vector<uint8_t> stream = ClientHandshake(setup);
  const size_t requests_at = stream.size();
  if (!input.empty()) stream.insert(stream.end(), input.begin() + 1, input.end());
  // After a failed handshake the rest are options, which may still choose an
  // export: then nothing is known about the requests, and only the option
  // replies are checked.
  Model model;
  if (!setup.unknown_export) model = ParseRequests(std::span(stream).subspan(requests_at));

  asio::io_context io;
  ServerState state(io.get_executor());
  const auto serve = [&](server::Socket socket) { SpawnConnection(std::move(socket), state); };
  const std::vector<uint8_t> output = RunSession(io, stream, serve);

  size_t at = CheckOptionReplies(output);
  if (!setup.unknown_export) {
    Check(output.size() - at >= ExportNameReplySize(setup), "no reply to NBD_OPT_EXPORT_NAME");
    at += ExportNameReplySize(setup);
    ReplyCheck(model, setup.structured).Run(std::span(output).subspan(at));
  }
  CheckNothingLeft(state);
}

}  // namespace
}  // namespace dst::fuzz

extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) {
  dst::fuzz::QuietLogs();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  dst::fuzz::RunOne({data, size});
  return 0;
}
