#include "aggregator/volume/read_balance.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <optional>
#include <random>
#include <vector>

namespace dst::volume::read_balance_test {
namespace {

constexpr uint64_t KiB = 1024;
constexpr uint64_t MiB = 1024 * KiB;

using Copies = std::vector<CopyLoad>;

CopyLoad Busy(uint64_t bytes) {
  return {.readable = true, .write_mostly = false, .bytes_in_flight = bytes, .serve_below = {}};
}
CopyLoad WriteMostly(uint64_t bytes = 0) {
  return {.readable = true, .write_mostly = true, .bytes_in_flight = bytes, .serve_below = {}};
}
CopyLoad Unreadable() {
  return {.readable = false, .write_mostly = false, .bytes_in_flight = 0, .serve_below = {}};
}
CopyLoad Below(uint64_t cursor, uint64_t bytes = 0) {
  return {.readable = true, .write_mostly = false, .bytes_in_flight = bytes, .serve_below = cursor};
}

ReadRequest At(uint64_t offset, uint64_t length = 4 * KiB) {
  return {.offset = offset, .length = length};
}

const ReadStream kNoStream{};

// A stream on `copy` that started at `start` and whose last read ended at `end`.
ReadStream Stream(uint32_t copy, uint64_t start, uint64_t end) {
  return {.copy = copy, .start = start, .end = end};
}

std::optional<uint32_t> Choose(const Copies& copies, ReadRequest request,
                               ReadStream stream = kNoStream) {
  return ChooseCopy(copies, request, stream);
}

TEST_CASE("read balance: the copy with the fewest bytes in flight serves") {
  CHECK(Choose({Busy(64 * KiB), Busy(8 * KiB)}, At(0)) == 1u);
  CHECK(Choose({Busy(8 * KiB), Busy(64 * KiB)}, At(0)) == 0u);
  CHECK(Choose({Busy(32 * KiB), Busy(64 * KiB), Busy(4 * KiB)}, At(6 * MiB)) == 2u);
}

TEST_CASE("read balance: ties go by the request's 2 MiB area, so idle copies share the volume") {
  const Copies two = {Busy(0), Busy(0)};
  CHECK(Choose(two, At(0)) == 0u);
  CHECK(Choose(two, At(2 * MiB - 4 * KiB)) == 0u);  // same area, same copy
  CHECK(Choose(two, At(2 * MiB)) == 1u);
  CHECK(Choose(two, At(4 * MiB)) == 0u);
  const Copies three = {Busy(0), Busy(0), Busy(0)};
  CHECK(Choose(three, At(2 * MiB)) == 1u);
  CHECK(Choose(three, At(4 * MiB)) == 2u);
  CHECK(Choose(three, At(6 * MiB)) == 0u);
  // Only the least busy tie: copy 0 is busier, so areas alternate between copies 1 and 2.
  const Copies tied = {Busy(4 * KiB), Busy(0), Busy(0)};
  CHECK(Choose(tied, At(0)) == 1u);
  CHECK(Choose(tied, At(2 * MiB)) == 2u);
}

TEST_CASE("read balance: a write-mostly copy serves only when nothing else can") {
  CHECK(Choose({WriteMostly(0), Busy(10 * MiB)}, At(0)) == 1u);
  CHECK(Choose({WriteMostly(0), Unreadable()}, At(0)) == 0u);
  CHECK(Choose({WriteMostly(8 * KiB), WriteMostly(0)}, At(0)) == 1u);  // then by load
  // A rebuilding copy that can serve this request beats a write-mostly one.
  CHECK(Choose({WriteMostly(0), Below(1 * MiB, 10 * MiB)}, At(0)) == 1u);
}

TEST_CASE("read balance: a resyncing or rebuilding copy serves only below its cursor") {
  const Copies copies = {Busy(1 * MiB), Below(1 * MiB)};
  CHECK(Choose(copies, At(0)) == 1u);
  CHECK(Choose(copies, At(1 * MiB - 4 * KiB)) == 1u);     // ends at the cursor
  CHECK(Choose(copies, At(1 * MiB - 2 * KiB)) == 0u);     // straddles it
  CHECK(Choose(copies, At(1 * MiB)) == 0u);               // above it
  CHECK(Choose(copies, At(0, 2 * MiB)) == 0u);            // starts below, ends above
  CHECK(Choose({Below(0), Busy(1 * MiB)}, At(0)) == 1u);  // nothing copied yet
  CHECK(Choose({Below(1 * MiB), Unreadable()}, At(1 * MiB)) == std::nullopt);
  // Lengths near 2^64 do not wrap around the cursor check.
  CHECK(Choose({Below(1 * MiB), Unreadable()}, At(4 * KiB, ~uint64_t{0})) == std::nullopt);
}

TEST_CASE("read balance: no readable copy means no choice") {
  CHECK(Choose({Unreadable(), Unreadable()}, At(0)) == std::nullopt);
  CHECK(Choose({}, At(0)) == std::nullopt);
}

TEST_CASE("read balance: a sequential stream stays on its copy for about 1 MiB") {
  const Copies copies = {Busy(0), Busy(256 * KiB)};  // copy 1 busier, but not much
  CHECK(Choose(copies, At(64 * KiB), Stream(1, 0, 64 * KiB)) == 1u);
  CHECK(Choose(copies, At(1 * MiB - 4 * KiB), Stream(1, 0, 1 * MiB - 4 * KiB)) == 1u);
  // 1 MiB past the stream's start: chosen by load again.
  CHECK(Choose(copies, At(1 * MiB), Stream(1, 0, 1 * MiB)) == 0u);
  // Not where the stream ended: not sequential.
  CHECK(Choose(copies, At(128 * KiB), Stream(1, 0, 64 * KiB)) == 0u);
  CHECK(Choose(copies, At(0), Stream(1, 0, 64 * KiB)) == 0u);
}

TEST_CASE("read balance: a stream leaves its copy when that copy is much busier or cannot serve") {
  const ReadStream stream = Stream(1, 0, 64 * KiB);
  CHECK(Choose({Busy(0), Busy(1 * MiB)}, At(64 * KiB), stream) == 1u);  // exactly the slack
  CHECK(Choose({Busy(0), Busy(1 * MiB + 1)}, At(64 * KiB), stream) == 0u);
  CHECK(Choose({Busy(4 * MiB), Busy(5 * MiB)}, At(64 * KiB), stream) == 1u);  // relative to least
  CHECK(Choose({Busy(64 * KiB), Unreadable()}, At(64 * KiB), stream) == 0u);
  CHECK(Choose({Busy(64 * KiB), WriteMostly(0)}, At(64 * KiB), stream) == 0u);
  CHECK(Choose({Busy(64 * KiB), Below(64 * KiB)}, At(64 * KiB), stream) == 0u);
  CHECK(Choose({Busy(64 * KiB)}, At(64 * KiB), Stream(3, 0, 64 * KiB)) == 0u);  // no copy 3
}

TEST_CASE("read balance: the stream continues on the same copy and restarts anywhere else") {
  ReadStream stream = AdvanceStream(kNoStream, At(0, 64 * KiB), 1);
  CHECK(stream.copy == 1u);
  CHECK(stream.start == 0);
  CHECK(stream.end == 64 * KiB);
  stream = AdvanceStream(stream, At(64 * KiB, 64 * KiB), 1);
  CHECK(stream.start == 0);
  CHECK(stream.end == 128 * KiB);
  // The same copy again after the span: a new stream, so it may stay another MiB.
  stream = AdvanceStream(Stream(1, 0, 1 * MiB), At(1 * MiB, 64 * KiB), 1);
  CHECK(stream.start == 1 * MiB);
  // Moved to another copy, or a jump: a new stream from the request.
  stream = AdvanceStream(Stream(1, 0, 64 * KiB), At(64 * KiB, 4 * KiB), 0);
  CHECK(stream.copy == 0u);
  CHECK(stream.start == 64 * KiB);
  stream = AdvanceStream(Stream(1, 0, 64 * KiB), At(8 * MiB, 4 * KiB), 1);
  CHECK(stream.start == 8 * MiB);
  CHECK(stream.end == 8 * MiB + 4 * KiB);
}

TEST_CASE("read balance: a stream of 4 KiB reads uses one copy per MiB while copies are idle") {
  const Copies idle = {Busy(0), Busy(0)};
  ReadStream stream;
  std::vector<uint32_t> used;
  for (uint64_t offset = 2 * MiB; offset < 5 * MiB; offset += 4 * KiB) {
    const std::optional<uint32_t> copy = Choose(idle, At(offset), stream);
    REQUIRE(copy.has_value());
    stream = AdvanceStream(stream, At(offset), *copy);
    if (used.empty() || used.back() != *copy) used.push_back(*copy);
  }
  // 2-4 MiB is copy 1's area and 4-6 MiB copy 0's: the stream moves once, at the area boundary
  // (the first read past its 1 MiB span).
  CHECK(used == std::vector<uint32_t>{1, 0});
}

TEST_CASE("read balance: after a failure the next copy is the least busy one not yet tried") {
  const Copies copies = {Busy(0), Busy(64 * KiB), Busy(8 * KiB)};
  const std::vector<uint32_t> first = {0};
  CHECK(NextCopy(copies, At(0), first) == 2u);
  const std::vector<uint32_t> two = {0, 2};
  CHECK(NextCopy(copies, At(0), two) == 1u);
  const std::vector<uint32_t> all = {2, 0, 1};
  CHECK(NextCopy(copies, At(0), all) == std::nullopt);
  CHECK(NextCopy(copies, At(0), {}) == 0u);
}

TEST_CASE("read balance: failover keeps the rules for write-mostly copies and cursors") {
  const Copies copies = {Busy(0), WriteMostly(0), Below(64 * KiB), Unreadable()};
  const std::vector<uint32_t> tried0 = {0};
  CHECK(NextCopy(copies, At(0), tried0) == 2u);        // below the cursor first
  CHECK(NextCopy(copies, At(1 * MiB), tried0) == 1u);  // above it: only write-mostly
  const std::vector<uint32_t> tried02 = {0, 2};
  CHECK(NextCopy(copies, At(0), tried02) == 1u);
  const std::vector<uint32_t> tried012 = {0, 1, 2};
  CHECK(NextCopy(copies, At(0), tried012) == std::nullopt);  // never the unreadable copy
}

// Every copy that can serve is tried exactly once, then the read fails.
TEST_CASE("read balance: failover visits each eligible copy once") {
  std::mt19937_64 random(16);
  for (int round = 0; round < 500; ++round) {
    Copies copies(1 + random() % 6);
    for (CopyLoad& c : copies) {
      c.readable = random() % 5 != 0;
      c.write_mostly = random() % 4 == 0;
      c.bytes_in_flight = random() % 4 * 64 * KiB;
      if (random() % 3 == 0) c.serve_below = random() % 4 * MiB;
    }
    const ReadRequest request = At(random() % 8 * MiB);
    std::vector<uint32_t> tried;
    while (const std::optional<uint32_t> next = NextCopy(copies, request, tried)) {
      REQUIRE(std::find(tried.begin(), tried.end(), *next) == tried.end());
      // Write-mostly copies come after every other copy that can serve.
      if (!copies[*next].write_mostly) {
        for (uint32_t t : tried)
          CHECK_FALSE(copies[t].write_mostly);
      }
      tried.push_back(*next);
    }
    size_t eligible = 0;
    for (const CopyLoad& c : copies) {
      const bool below = !c.serve_below || request.offset + request.length <= *c.serve_below;
      eligible += c.readable && below;
    }
    CHECK(tried.size() == eligible);
  }
}

// What ChooseCopy returns, over random sets: an eligible copy; never write-mostly when another can
// serve; the least busy, or the stream's copy within the slack.
TEST_CASE("read balance: every choice obeys the rules") {
  std::mt19937_64 random(21);
  for (int round = 0; round < 2000; ++round) {
    Copies copies(1 + random() % 5);
    for (CopyLoad& c : copies) {
      c.readable = random() % 6 != 0;
      c.write_mostly = random() % 5 == 0;
      c.bytes_in_flight = random() % 5 * 512 * KiB;
      if (random() % 4 == 0) c.serve_below = random() % 4 * MiB;
    }
    const ReadRequest request = At(random() % 4 * MiB + random() % 2 * 64 * KiB);
    const ReadStream stream =
        Stream(static_cast<uint32_t>(random() % copies.size()), request.offset - random() % 2 * MiB,
               random() % 2 ? request.offset : request.offset + 4 * KiB);
    const std::optional<uint32_t> chosen = Choose(copies, request, stream);
    auto eligible = [&](const CopyLoad& c) {
      return c.readable && (!c.serve_below || request.offset + request.length <= *c.serve_below);
    };
    bool plain = false;
    uint64_t least = ~uint64_t{0};
    for (const CopyLoad& c : copies)
      plain = plain || (eligible(c) && !c.write_mostly);
    for (const CopyLoad& c : copies)
      if (eligible(c) && c.write_mostly != plain) least = std::min(least, c.bytes_in_flight);
    if (least == ~uint64_t{0}) {
      CHECK(chosen == std::nullopt);
      continue;
    }
    REQUIRE(chosen.has_value());
    const CopyLoad& c = copies[*chosen];
    CHECK(eligible(c));
    CHECK(c.write_mostly != plain);
    if (*chosen == stream.copy && request.offset == stream.end) {
      CHECK(c.bytes_in_flight <= least + kBusierSlack);
    } else {
      CHECK(c.bytes_in_flight == least);
    }
  }
}

}  // namespace
}  // namespace dst::volume::read_balance_test
