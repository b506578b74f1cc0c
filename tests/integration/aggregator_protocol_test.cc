// dst-aggregator against misbehaving clients: a raw NBD client built on the
// socket API sends hand-made bytes (bad magics, unknown and oversized options
// and requests, requests out of range, connections dropped half-way), while a
// well-behaved libnbd client, connected before the abuse, must keep reading
// and writing correctly after each case, and the server must end cleanly.
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <memory>
#include <set>
#include <span>

#include "common/nbd_protocol.h"
#include "tests/harness/aggregator_process.h"
#include "tests/integration/plugin_fixture.h"
#include "tests/integration/raw_client.h"

namespace dst::test::aggregator_protocol_test {
namespace {

using namespace std::chrono_literals;
namespace nbd = ::dst::nbd;

// ---------------------------------------------------------------------------
// The fixture: a 72 MiB linear volume (a sparse 64 MiB memory export, so that
// a 33 MiB request is inside the volume, and a plugin file), and a bystander
// client connected before any abuse. Tests open raw connections themselves.

AggregatorOptions AggregatorArgs(std::vector<std::string> args) {
  AggregatorOptions o;
  o.binary = DST_AGGREGATOR_PATH;
  o.args = std::move(args);
  return o;
}

NbdkitOptions MemoryOptions(uint64_t size) {
  NbdkitOptions o;
  o.nbdkit = DST_TOOL_NBDKIT;
  o.plugin = "memory";
  o.args = {"size=" + std::to_string(size)};
  return o;
}

constexpr uint64_t kVolumeSize = 72 * kMiB;
constexpr uint32_t kOverMaxPayload = 33 * kMiB;

class AbuseFixture {
 public:
  AbuseFixture()
      : memory_(MemoryOptions(64 * kMiB)),
        plugin_({"file=" + dir_.File("member.img"), "size=8M"}),
        aggregator_(AggregatorArgs({"--raw", memory_.uri(), plugin_.uri()})) {
    REQUIRE_NBD_OK(bystander_.Connect(aggregator_.uri()));
    REQUIRE(bystander_.Size() == static_cast<int64_t>(kVolumeSize));
    CheckBystander();
  }

  ~AbuseFixture() {
    // The server survived the abuse and still takes new clients.
    CHECK_MESSAGE(aggregator_.Running(), "dst-aggregator died:\n" << aggregator_.stderr_text());
    if (aggregator_.Running()) {
      NbdClient late;
      CHECK_NBD_OK(late.Connect(aggregator_.uri()));
    }
    const int code = aggregator_.Stop();
    CHECK_MESSAGE(code == 0, "dst-aggregator exit code " << code << "\n"
                                                         << aggregator_.stderr_text());
    CHECK_MESSAGE(aggregator_.SanitizerReports().empty(), "sanitizer reports:\n"
                                                              << aggregator_.stderr_text());
    memory_.Stop();
  }

  // A raw connection to the volume's socket.
  std::unique_ptr<RawClient> Raw() {
    return std::make_unique<RawClient>(aggregator_.socket_path());
  }

  // A raw connection in transmission phase (simple replies), on vol0.
  std::unique_ptr<RawClient> Transmitting() {
    auto raw = Raw();
    raw->Greet();
    const ExportInfo info = raw->Go("vol0");
    REQUIRE(info.size == kVolumeSize);
    CHECK((info.flags & nbd::kFlagHasFlags) != 0);
    CHECK((info.flags & nbd::kFlagCanMultiConn) != 0);
    CHECK((info.flags & nbd::kFlagReadOnly) == 0);
    return raw;
  }

  // The well-behaved client writes a fresh pattern (across the two members'
  // boundary) and reads it back.
  void CheckBystander() {
    const uint64_t offset = 64 * kMiB - 32 * kKiB + (rounds_ % 8) * 4096;
    const Bytes data = RandomBytes(64 * kKiB, 500 + rounds_++);
    CHECK_NBD_OK(bystander_.Pwrite(data, offset));
    Bytes back(data.size());
    CHECK_NBD_OK(bystander_.Pread(back, offset));
    CHECK_MESSAGE(back == data, "bystander read back different data");
    CHECK_NBD_OK(bystander_.Flush());
  }

  NbdClient& bystander() { return bystander_; }
  AggregatorServer& aggregator() { return aggregator_; }

 private:
  TempDir dir_{"dst-agg-abuse"};
  NbdkitServer memory_;
  PluginServer plugin_;
  AggregatorServer aggregator_;
  NbdClient bystander_;
  uint64_t rounds_ = 0;
};

// A read on the raw connection that must still work (the stream is in sync).
void CheckRawRead(RawClient& raw, uint64_t offset, const Bytes& want, uint64_t cookie) {
  raw.SendRequest(Request(nbd::kCmdRead, offset, static_cast<uint32_t>(want.size()), cookie));
  const nbd::SimpleReply reply = raw.ReadSimpleReply();
  CHECK(reply.cookie == cookie);
  REQUIRE(reply.error == 0);
  Bytes data(want.size());
  raw.RecvOrThrow(data);
  CHECK(data == want);
}

uint32_t ReplyError(RawClient& raw, const nbd::RequestHeader& request,
                    std::span<const uint8_t> payload = {}) {
  raw.SendRequest(request, payload);
  const nbd::SimpleReply reply = raw.ReadSimpleReply();
  CHECK(reply.cookie == request.cookie);
  return reply.error;
}

Bytes OptionPayload(size_t size) {
  return RandomBytes(size, size);
}

// Option data naming an export, then `queries` as (u32 length, string)s:
// the layout of NBD_OPT_{LIST,SET}_META_CONTEXT.
Bytes MetaContextPayload(const std::string& name, const std::vector<std::string>& queries) {
  Bytes out(4);
  nbd::StoreBE32(out.data(), static_cast<uint32_t>(name.size()));
  out.insert(out.end(), name.begin(), name.end());
  out.resize(out.size() + 4);
  nbd::StoreBE32(out.data() + out.size() - 4, static_cast<uint32_t>(queries.size()));
  for (const std::string& q : queries) {
    out.resize(out.size() + 4);
    nbd::StoreBE32(out.data() + out.size() - 4, static_cast<uint32_t>(q.size()));
    out.insert(out.end(), q.begin(), q.end());
  }
  return out;
}

// Reads a meta context option's replies: the contexts (id, name) up to ACK.
std::vector<std::pair<uint32_t, std::string>> ReadContexts(RawClient& raw) {
  std::vector<std::pair<uint32_t, std::string>> out;
  for (;;) {
    const OptionReply r = raw.ReadOptionReply();
    if (r.header.reply_type == nbd::kRepAck) return out;
    REQUIRE(r.header.reply_type == nbd::kRepMetaContext);
    REQUIRE(r.data.size() >= 4);
    out.emplace_back(nbd::LoadBE32(r.data.data()), std::string(r.data.begin() + 4, r.data.end()));
  }
}

TEST_SUITE_BEGIN("aggregator_protocol");

// --- Handshake phase.

TEST_CASE_FIXTURE(AbuseFixture, "bad option magic disconnects") {
  auto raw = Raw();
  raw->Greet();
  raw->SendOption(nbd::kOptGo, Bytes(6, 0), /*magic=*/0x1122334455667788);
  CHECK(raw->ClosedByServer());
  CheckBystander();
}

TEST_CASE_FIXTURE(AbuseFixture, "unknown option is refused and the handshake goes on") {
  auto raw = Raw();
  raw->Greet();
  raw->SendOption(99, OptionPayload(10));
  const OptionReply r = raw->ReadOptionReply();
  CHECK(r.header.option == 99);
  CHECK(r.header.reply_type == nbd::kRepErrUnsup);
  CheckBystander();
  CHECK(raw->Go("vol0").size == kVolumeSize);
  CheckRawRead(*raw, 0, Bytes(4096, 0), 1);
}

TEST_CASE_FIXTURE(AbuseFixture, "oversized option is drained and refused with TOO_BIG") {
  auto raw = Raw();
  raw->Greet();
  raw->SendOption(nbd::kOptInfo, OptionPayload(100000));
  const OptionReply r = raw->ReadOptionReply();
  CHECK(r.header.option == nbd::kOptInfo);
  CHECK(r.header.reply_type == nbd::kRepErrTooBig);
  CheckBystander();
  CHECK(raw->Go("vol0").size == kVolumeSize);
  CheckRawRead(*raw, 0, Bytes(4096, 0), 2);
}

TEST_CASE_FIXTURE(AbuseFixture, "export names over 4096 bytes are refused") {
  auto raw = Raw();
  raw->Greet();
  // NBD_OPT_GO with a 5000-byte name: INVALID (a string may not exceed 4096).
  const std::string long_name(5000, 'v');
  Bytes go(4 + long_name.size() + 2, 0);
  nbd::StoreBE32(go.data(), static_cast<uint32_t>(long_name.size()));
  std::copy(long_name.begin(), long_name.end(), go.begin() + 4);
  raw->SendOption(nbd::kOptGo, go);
  CHECK(raw->ReadOptionReply().header.reply_type == nbd::kRepErrInvalid);
  CHECK(raw->Go("vol0").size == kVolumeSize);
  CheckRawRead(*raw, 0, Bytes(4096, 0), 1);
  // EXPORT_NAME has no error reply: too long a name hangs up, maybe before
  // the client has sent it all (then the send fails, which is as good).
  auto by_name = Raw();
  by_name->Greet();
  by_name->SendUnlessClosed(OptionMessage(nbd::kOptExportName, Bytes(70000, 'v')));
  CHECK(by_name->ClosedByServer());
  CheckBystander();
}

// Sends `count` unknown options at once and reads their replies.
void SendUnknownOptions(RawClient& raw, int count) {
  Bytes all;
  for (int i = 0; i < count; ++i) {
    const Bytes option = OptionMessage(99, {});
    all.insert(all.end(), option.begin(), option.end());
  }
  raw.Send(all);
  for (int i = 0; i < count; ++i)
    REQUIRE(raw.ReadOptionReply().header.reply_type == nbd::kRepErrUnsup);
}

TEST_CASE_FIXTURE(AbuseFixture, "1024 options are allowed, the 1025th disconnects") {
  SUBCASE("1023 options and GO") {
    auto raw = Raw();
    raw->Greet();
    SendUnknownOptions(*raw, 1023);
    CHECK(raw->Go("vol0").size == kVolumeSize);
  }
  SUBCASE("1024 options and GO") {
    auto raw = Raw();
    raw->Greet();
    SendUnknownOptions(*raw, 1024);
    CHECK_THROWS(raw->Go("vol0"));
  }
  CheckBystander();
}

TEST_CASE_FIXTURE(AbuseFixture, "a client that vanishes mid-handshake") {
  SUBCASE("in the greeting") {
    auto raw = Raw();
    uint8_t half[9];
    raw->RecvOrThrow(half);
  }
  SUBCASE("in an option's payload") {
    auto raw = Raw();
    raw->Greet();
    const Bytes go = OptionMessage(nbd::kOptGo, Bytes(1000, 0));
    raw->Send(std::span(go).first(nbd::OptionHeader::kSize + 10));
  }
  SUBCASE("in an oversized option's payload") {
    auto raw = Raw();
    raw->Greet();
    const Bytes list = OptionMessage(nbd::kOptList, Bytes(1000000, 0));
    raw->Send(std::span(list).first(nbd::OptionHeader::kSize + 70000));
  }
  CHECK(aggregator().WaitForLog("client unix: handshake ended"));  // it saw the hang-up
  CheckBystander();
}

TEST_CASE_FIXTURE(AbuseFixture, "NBD_OPT_ABORT is acknowledged, then the server hangs up") {
  auto raw = Raw();
  raw->Greet();
  raw->SendOption(nbd::kOptAbort, {});
  const OptionReply r = raw->ReadOptionReply();
  CHECK(r.header.reply_type == nbd::kRepAck);
  CHECK(raw->ClosedByServer());
  CheckBystander();
}

TEST_CASE_FIXTURE(AbuseFixture, "NBD_OPT_EXPORT_NAME: known name serves, unknown hangs up") {
  SUBCASE("known") {
    auto raw = Raw();
    raw->Greet();
    raw->SendOption(nbd::kOptExportName, Bytes{'v', 'o', 'l', '0'});
    uint8_t reply[10];  // size and flags; no padding once NO_ZEROES is agreed
    raw->RecvOrThrow(reply);
    CHECK(nbd::LoadBE64(reply) == kVolumeSize);
    CHECK((nbd::LoadBE16(reply + 8) & nbd::kFlagHasFlags) != 0);
    CheckRawRead(*raw, 0, Bytes(4096, 0), 1);
  }
  SUBCASE("unknown") {
    auto raw = Raw();
    raw->Greet();
    raw->SendOption(nbd::kOptExportName, Bytes{'n', 'o', 'p', 'e'});
    CHECK(raw->ClosedByServer());
  }
  CheckBystander();
}

TEST_CASE_FIXTURE(AbuseFixture, "NBD_OPT_LIST and NBD_OPT_INFO, good and bad") {
  auto raw = Raw();
  raw->Greet();
  raw->SendOption(nbd::kOptList, {});
  OptionReply r = raw->ReadOptionReply();
  REQUIRE(r.header.reply_type == nbd::kRepServer);
  REQUIRE(r.data.size() >= 4);
  CHECK(nbd::LoadBE32(r.data.data()) == 4);
  CHECK(std::string(r.data.begin() + 4, r.data.begin() + 8) == "vol0");
  CHECK(raw->ReadOptionReply().header.reply_type == nbd::kRepAck);

  raw->SendOption(nbd::kOptList, Bytes(3, 0));  // LIST takes no data
  CHECK(raw->ReadOptionReply().header.reply_type == nbd::kRepErrInvalid);

  Bytes info(4 + 4 + 2, 0);  // INFO for "nope", no info requests
  nbd::StoreBE32(info.data(), 4);
  std::copy_n("nope", 4, info.begin() + 4);
  raw->SendOption(nbd::kOptInfo, info);
  CHECK(raw->ReadOptionReply().header.reply_type == nbd::kRepErrUnknown);

  raw->SendOption(nbd::kOptInfo, Bytes{0, 0, 0, 9});  // name longer than the data
  CHECK(raw->ReadOptionReply().header.reply_type == nbd::kRepErrInvalid);

  CHECK(raw->Go("vol0").size == kVolumeSize);
  CheckBystander();
}

TEST_CASE_FIXTURE(AbuseFixture, "meta contexts and BLOCK_STATUS with REQ_ONE") {
  auto raw = Raw();
  raw->Greet();
  // SET_META_CONTEXT needs structured replies first.
  raw->SendOption(nbd::kOptSetMetaContext, MetaContextPayload("vol0", {"base:allocation"}));
  CHECK(raw->ReadOptionReply().header.reply_type == nbd::kRepErrInvalid);
  raw->SendOption(nbd::kOptStructuredReply, {});
  REQUIRE(raw->ReadOptionReply().header.reply_type == nbd::kRepAck);

  raw->SendOption(nbd::kOptListMetaContext, MetaContextPayload("vol0", {"base:"}));
  auto contexts = ReadContexts(*raw);
  REQUIRE(contexts.size() == 1);
  CHECK(contexts[0].second == "base:allocation");
  raw->SendOption(nbd::kOptSetMetaContext,
                  MetaContextPayload("vol0", {"qemu:dirty-bitmap:x", "base:allocation"}));
  contexts = ReadContexts(*raw);
  REQUIRE(contexts.size() == 1);
  CHECK(contexts[0].second == "base:allocation");
  const uint32_t id = contexts[0].first;
  REQUIRE(raw->Go("vol0").size == kVolumeSize);

  raw->SendRequest(Request(nbd::kCmdBlockStatus, 0, kVolumeSize, 1, nbd::kCmdFlagReqOne));
  uint8_t raw_header[nbd::StructuredReplyHeader::kSize];
  raw->RecvOrThrow(raw_header);
  const auto chunk = nbd::StructuredReplyHeader::Decode(raw_header);
  CHECK(chunk.type == nbd::kReplyTypeBlockStatus);
  CHECK(chunk.flags == nbd::kReplyFlagDone);
  REQUIRE(chunk.length == 4 + nbd::kBlockDescriptorSize);  // REQ_ONE: a single extent
  Bytes payload(chunk.length);
  raw->RecvOrThrow(payload);
  CHECK(nbd::LoadBE32(payload.data()) == id);
  const uint32_t length = nbd::LoadBE32(payload.data() + 4);
  CHECK(length > 0);
  CHECK(length <= kVolumeSize);
  CheckBystander();
}

// --- Transmission phase.

TEST_CASE_FIXTURE(AbuseFixture, "read past the end is EINVAL") {
  auto raw = Transmitting();
  CHECK(ReplyError(*raw, Request(nbd::kCmdRead, kVolumeSize - 512, 1024, 1)) == nbd::kEINVAL);
  CHECK(ReplyError(*raw, Request(nbd::kCmdRead, kVolumeSize + 4096, 512, 2)) == nbd::kEINVAL);
  // offset + length wraps around 2^64.
  CHECK(ReplyError(*raw, Request(nbd::kCmdRead, ~uint64_t{0} - 100, 512, 3)) == nbd::kEINVAL);
  CheckBystander();
  CheckRawRead(*raw, kVolumeSize - 4096, Bytes(4096, 0), 4);
}

TEST_CASE_FIXTURE(AbuseFixture, "write past the end is ENOSPC and its payload is drained") {
  auto raw = Transmitting();
  const Bytes payload = RandomBytes(8192, 7);
  CHECK(ReplyError(*raw, Request(nbd::kCmdWrite, kVolumeSize - 4096, 8192, 1), payload) ==
        nbd::kENOSPC);
  CHECK(ReplyError(*raw, Request(nbd::kCmdWrite, ~uint64_t{0} - 100, 8192, 2), payload) ==
        nbd::kENOSPC);
  CHECK(ReplyError(*raw, Request(nbd::kCmdWriteZeroes, kVolumeSize, 4096, 3)) == nbd::kENOSPC);
  CheckBystander();
  CheckRawRead(*raw, kVolumeSize - 4096, Bytes(4096, 0), 4);
}

TEST_CASE_FIXTURE(AbuseFixture, "oversized write is EINVAL and the connection stays in sync") {
  auto raw = Transmitting();
  const uint64_t offset = 4 * kMiB;
  const Bytes payload = RandomBytes(kOverMaxPayload, 8);
  CHECK(ReplyError(*raw, Request(nbd::kCmdWrite, offset, kOverMaxPayload, 1), payload) ==
        nbd::kEINVAL);
  CheckRawRead(*raw, offset, Bytes(64 * kKiB, 0), 2);  // and nothing was written
  CheckBystander();
}

TEST_CASE_FIXTURE(AbuseFixture, "oversized read is EINVAL and sends no data") {
  auto raw = Transmitting();
  CHECK(ReplyError(*raw, Request(nbd::kCmdRead, 0, kOverMaxPayload, 1)) == nbd::kEINVAL);
  CheckRawRead(*raw, 0, Bytes(4096, 0), 2);
  CheckBystander();
}

TEST_CASE_FIXTURE(AbuseFixture, "unknown command and unknown flag are EINVAL") {
  auto raw = Transmitting();
  CHECK(ReplyError(*raw, Request(42, 0, 4096, 1)) == nbd::kEINVAL);
  CHECK(ReplyError(*raw, Request(nbd::kCmdRead, 0, 4096, 2, /*flags=*/1 << 9)) == nbd::kEINVAL);
  CHECK(ReplyError(*raw, Request(nbd::kCmdFlush, 0, 0, 3, nbd::kCmdFlagReqOne)) == nbd::kEINVAL);
  // BLOCK_STATUS without a negotiated meta context.
  CHECK(ReplyError(*raw, Request(nbd::kCmdBlockStatus, 0, 4096, 4)) == nbd::kEINVAL);
  CheckBystander();
  CheckRawRead(*raw, 0, Bytes(4096, 0), 5);
}

TEST_CASE_FIXTURE(AbuseFixture, "bad request magic closes the connection") {
  auto raw = Transmitting();
  nbd::RequestHeader bad = Request(nbd::kCmdRead, 0, 4096, 1);
  bad.magic = 0x12345678;
  raw->SendRequest(bad);
  CHECK(raw->ClosedByServer());
  CheckBystander();
}

TEST_CASE_FIXTURE(AbuseFixture, "a client that vanishes mid-write leaves the data alone") {
  const uint64_t offset = 2 * kMiB;
  {
    auto raw = Transmitting();
    raw->SendRequest(Request(nbd::kCmdWrite, offset, kMiB, 1));
    raw->Send(RandomBytes(100 * kKiB, 9));
  }
  CHECK(aggregator().WaitForLog("client unix: disconnected"));  // it saw the hang-up
  CheckBystander();
  Bytes back(kMiB);
  CHECK_NBD_OK(bystander().Pread(back, offset));
  CHECK(AllZero(back));
}

TEST_CASE_FIXTURE(AbuseFixture, "a client that vanishes with replies in flight") {
  {
    auto raw = Transmitting();
    for (uint64_t i = 0; i < 32; ++i)
      raw->SendRequest(Request(nbd::kCmdRead, i * kMiB, kMiB, i));
    raw->SendRequest(Request(nbd::kCmdWrite, 40 * kMiB, kMiB, 99), RandomBytes(kMiB, 10));
  }
  CHECK(aggregator().WaitForLog("client unix: disconnected"));
  CheckBystander();
}

TEST_CASE_FIXTURE(AbuseFixture, "pipelined reads beyond the in-flight budget all complete") {
  // 192 MiB of reads at once, three times what one client may have in
  // flight: the server must hold some back and still answer them all.
  auto raw = Transmitting();
  constexpr uint64_t kCount = 6;
  for (uint64_t i = 0; i < kCount; ++i)
    raw->SendRequest(Request(nbd::kCmdRead, (i % 2) * 16 * kMiB, 32 * kMiB, 100 + i));
  std::set<uint64_t> cookies;
  Bytes data(32 * kMiB);
  for (uint64_t i = 0; i < kCount; ++i) {
    const nbd::SimpleReply reply = raw->ReadSimpleReply();
    REQUIRE(reply.error == 0);
    CHECK(cookies.insert(reply.cookie).second);
    raw->RecvOrThrow(data);
    CHECK(AllZero(data));
  }
  CHECK(*cookies.begin() == 100);
  CHECK(*cookies.rbegin() == 100 + kCount - 1);
  CheckBystander();
}

TEST_CASE_FIXTURE(AbuseFixture, "pipelined writes beyond the in-flight budget all complete") {
  auto raw = Transmitting();
  // Each area is written twice with the same bytes, so the order in which
  // the server applies them does not matter.
  std::vector<Bytes> areas;
  for (uint64_t a = 0; a < 3; ++a)
    areas.push_back(RandomBytes(16 * kMiB, 600 + a));
  for (uint64_t i = 0; i < 6; ++i)
    raw->SendRequest(Request(nbd::kCmdWrite, (i % 3) * 16 * kMiB, 16 * kMiB, i), areas[i % 3]);
  for (uint64_t i = 0; i < 6; ++i)
    CHECK(raw->ReadSimpleReply().error == 0);
  for (uint64_t a = 0; a < 3; ++a)
    CheckRawRead(*raw, a * 16 * kMiB, areas[a], 10 + a);
  CheckBystander();
}

TEST_CASE_FIXTURE(AbuseFixture, "NBD_CMD_DISC answers what is in flight, then closes") {
  auto raw = Transmitting();
  raw->SendRequest(Request(nbd::kCmdRead, 0, 4096, 1));
  raw->SendRequest(Request(nbd::kCmdDisc, 0, 0, 2));
  const nbd::SimpleReply reply = raw->ReadSimpleReply();
  CHECK(reply.cookie == 1);
  CHECK(reply.error == 0);
  Bytes data(4096);
  raw->RecvOrThrow(data);
  CHECK(raw->ClosedByServer());
  CheckBystander();
}

TEST_CASE_FIXTURE(AbuseFixture, "structured replies: data chunk and error chunk") {
  auto raw = Raw();
  raw->Greet();
  raw->SendOption(nbd::kOptStructuredReply, {});
  REQUIRE(raw->ReadOptionReply().header.reply_type == nbd::kRepAck);
  REQUIRE(raw->Go("vol0").size == kVolumeSize);

  const Bytes data = RandomBytes(8192, 11);
  REQUIRE_NBD_OK(bystander().Pwrite(data, 64 * kMiB - 4096));
  raw->SendRequest(Request(nbd::kCmdRead, 64 * kMiB - 4096, 8192, 1));
  uint8_t raw_header[nbd::StructuredReplyHeader::kSize];
  raw->RecvOrThrow(raw_header);
  auto chunk = nbd::StructuredReplyHeader::Decode(raw_header);
  CHECK(chunk.magic == nbd::kStructuredReplyMagic);
  CHECK(chunk.type == nbd::kReplyTypeOffsetData);
  CHECK(chunk.flags == nbd::kReplyFlagDone);
  REQUIRE(chunk.length == 8 + 8192);
  Bytes payload(chunk.length);
  raw->RecvOrThrow(payload);
  CHECK(nbd::LoadBE64(payload.data()) == 64 * kMiB - 4096);
  CHECK(Bytes(payload.begin() + 8, payload.end()) == data);

  raw->SendRequest(Request(nbd::kCmdRead, kVolumeSize, 512, 2));
  raw->RecvOrThrow(raw_header);
  chunk = nbd::StructuredReplyHeader::Decode(raw_header);
  CHECK(chunk.cookie == 2);
  CHECK(chunk.type == nbd::kReplyTypeError);
  CHECK(chunk.flags == nbd::kReplyFlagDone);
  REQUIRE(chunk.length >= nbd::kErrorPayloadMinSize);
  payload.resize(chunk.length);
  raw->RecvOrThrow(payload);
  CHECK(nbd::LoadBE32(payload.data()) == nbd::kEINVAL);
  CHECK(nbd::LoadBE16(payload.data() + 4) == chunk.length - nbd::kErrorPayloadMinSize);
  CheckBystander();
}

TEST_SUITE_END();

}  // namespace
}  // namespace dst::test::aggregator_protocol_test
