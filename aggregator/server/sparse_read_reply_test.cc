#include "aggregator/server/sparse_read_reply.h"

#include <doctest/doctest.h>

#include <cerrno>
#include <numeric>

#include "common/nbd_protocol.h"

namespace dst::server::sparse_read_reply_test {
namespace {

using namespace dst::nbd;

// One chunk as a client would take it apart.
struct Chunk {
  uint16_t flags;
  uint16_t type;
  uint64_t cookie;
  uint64_t offset;
  uint64_t length;             // of the data, or of the hole
  std::vector<uint8_t> bytes;  // a data chunk's data
};

std::vector<Chunk> Parse(const std::vector<uint8_t>& wire) {
  std::vector<Chunk> chunks;
  size_t at = 0;
  while (at < wire.size()) {
    REQUIRE(wire.size() - at >= StructuredReplyHeader::kSize + 8);
    const StructuredReplyHeader h = StructuredReplyHeader::Decode(wire.data() + at);
    REQUIRE(h.magic == kStructuredReplyMagic);
    Chunk c{h.flags, h.type, h.cookie, LoadBE64(wire.data() + at + StructuredReplyHeader::kSize),
            0,       {}};
    const uint8_t* payload = wire.data() + at + StructuredReplyHeader::kSize + 8;
    REQUIRE(wire.size() - at >= StructuredReplyHeader::kSize + h.length);
    if (h.type == kReplyTypeOffsetHole) {
      REQUIRE(h.length == kOffsetHolePayloadSize);
      c.length = LoadBE32(payload);
    } else {
      REQUIRE(h.type == kReplyTypeOffsetData);
      c.length = h.length - 8;
      c.bytes.assign(payload, payload + c.length);
    }
    chunks.push_back(std::move(c));
    at += StructuredReplyHeader::kSize + h.length;
  }
  return chunks;
}

std::vector<uint8_t> Numbered(size_t size) {
  std::vector<uint8_t> data(size);
  std::iota(data.begin(), data.end(), uint8_t{1});
  return data;
}

TEST_CASE("holes and data in offset order, the last chunk DONE") {
  const std::vector<uint8_t> data = Numbered(100);
  std::vector<uint8_t> wire;
  REQUIRE(AppendSparseReadChunks(7, 1000, data, {{1010, 20}, {1030, 5}, {1090, 10}}, &wire).ok());
  const std::vector<Chunk> chunks = Parse(wire);
  REQUIRE(chunks.size() == 5);
  const struct {
    uint16_t type;
    uint64_t offset, length;
  } want[] = {{kReplyTypeOffsetData, 1000, 10},
              {kReplyTypeOffsetHole, 1010, 20},
              {kReplyTypeOffsetHole, 1030, 5},
              {kReplyTypeOffsetData, 1035, 55},
              {kReplyTypeOffsetHole, 1090, 10}};
  for (size_t i = 0; i < chunks.size(); ++i) {
    INFO("chunk " << i);
    CHECK(chunks[i].type == want[i].type);
    CHECK(chunks[i].offset == want[i].offset);
    CHECK(chunks[i].length == want[i].length);
    CHECK(chunks[i].cookie == 7);
    CHECK(chunks[i].flags == (i + 1 == chunks.size() ? kReplyFlagDone : 0));
    if (want[i].type == kReplyTypeOffsetData)
      CHECK(chunks[i].bytes ==
            std::vector<uint8_t>(data.begin() + (want[i].offset - 1000),
                                 data.begin() + (want[i].offset - 1000) + want[i].length));
  }
}

TEST_CASE("a hole over the whole read is one DONE hole chunk") {
  const std::vector<uint8_t> data = Numbered(64);
  std::vector<uint8_t> wire;
  REQUIRE(AppendSparseReadChunks(1, 0, data, {{0, 64}}, &wire).ok());
  const std::vector<Chunk> chunks = Parse(wire);
  REQUIRE(chunks.size() == 1);
  CHECK(chunks[0].type == kReplyTypeOffsetHole);
  CHECK(chunks[0].length == 64);
  CHECK(chunks[0].flags == kReplyFlagDone);
}

TEST_CASE("holes out of order, overlapping, empty or outside the read are EIO") {
  const std::vector<uint8_t> data = Numbered(100);
  const std::vector<std::vector<volume::ByteRange>> bad = {
      {{1050, 10}, {1010, 10}},     // out of order
      {{1010, 20}, {1020, 5}},      // overlapping
      {{1010, 0}},                  // empty
      {{990, 20}},                  // starts before the read
      {{1090, 20}},                 // ends after it
      {{1100, 4}},                  // wholly after it
      {{1010, UINT64_MAX - 1000}},  // wraps around
      {{UINT64_MAX - 4, 8}},        // far outside, wrapping
  };
  for (const auto& holes : bad) {
    std::vector<uint8_t> wire = {0xee};
    const Status s = AppendSparseReadChunks(1, 1000, data, holes, &wire);
    INFO(s.message());
    CHECK(s.err() == EIO);
    CHECK(s.message().find("read of 100 bytes at 1000: the volume reported a hole of ") == 0);
    CHECK(wire == std::vector<uint8_t>{0xee});  // nothing appended
  }
}

}  // namespace
}  // namespace dst::server::sparse_read_reply_test
