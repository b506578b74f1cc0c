#include "aggregator/stagelog/log_index.h"

#include <doctest/doctest.h>

#include <cerrno>
#include <cstdint>
#include <map>
#include <random>
#include <vector>

namespace dst::stagelog::log_index_test {
namespace {

ReplayedRecord Rec(uint64_t sequence, RecordKind kind, uint64_t offset, uint64_t length) {
  ReplayedRecord r;
  r.header.sequence = sequence;
  r.header.kind = kind;
  r.header.volume_offset = offset;
  r.header.length = length;
  r.position = sequence * 4096;  // any distinct value
  return r;
}

ReplayedRecord Write(uint64_t sequence, uint64_t offset, uint64_t length) {
  return Rec(sequence, RecordKind::kWrite, offset, length);
}

ReadPiece Log(uint64_t offset, uint64_t length, uint64_t sequence, uint64_t offset_in_record,
              RecordKind kind = RecordKind::kWrite) {
  ReadPiece p;
  p.offset = offset;
  p.length = length;
  p.from_log = true;
  p.sequence = sequence;
  p.kind = kind;
  p.position = sequence * 4096;
  p.offset_in_record = offset_in_record;
  return p;
}

ReadPiece Members(uint64_t offset, uint64_t length) {
  ReadPiece p;
  p.offset = offset;
  p.length = length;
  return p;
}

using Pieces = std::vector<ReadPiece>;

TEST_CASE("log index: an empty index sends every read to the members") {
  LogIndex index;
  CHECK(index.Lookup(100, 50) == Pieces{Members(100, 50)});
}

TEST_CASE("log index: a newer record splits the older one it overlaps") {
  LogIndex index;
  index.Add(Write(1, 0, 1000));
  index.Add(Write(2, 400, 200));
  CHECK(index.extents() == 3);
  CHECK(index.Lookup(0, 1000) ==
        Pieces{Log(0, 400, 1, 0), Log(400, 200, 2, 0), Log(600, 400, 1, 600)});
  // A read inside a record starts at the right place in its payload.
  CHECK(index.Lookup(450, 300) == Pieces{Log(450, 150, 2, 50), Log(600, 150, 1, 600)});
  // Gaps before, between and after come from the members.
  index.Add(Write(3, 2000, 100));
  CHECK(index.Lookup(900, 1300) == Pieces{Log(900, 100, 1, 900), Members(1000, 1000),
                                          Log(2000, 100, 3, 0), Members(2100, 100)});
}

TEST_CASE("log index: a record covering several older ones replaces them all") {
  LogIndex index;
  index.Add(Write(1, 0, 100));
  index.Add(Write(2, 200, 100));
  index.Add(Write(3, 400, 100));
  index.Add(Rec(4, RecordKind::kTrim, 50, 400));
  CHECK(index.extents() == 3);
  CHECK(index.Lookup(0, 500) ==
        Pieces{Log(0, 50, 1, 0), Log(50, 400, 4, 0, RecordKind::kTrim), Log(450, 50, 3, 50)});
  // Padding changes nothing.
  index.Add(Rec(5, RecordKind::kPadding, 0, 0));
  CHECK(index.extents() == 3);
  CHECK(index.last_sequence() == 5);
}

TEST_CASE("log index: as of a sequence, the newest record up to it") {
  LogIndex index;
  index.Add(Write(1, 0, 1000));
  index.Add(Write(2, 400, 200));
  index.Add(Rec(3, RecordKind::kZero, 0, 500));
  Pieces out;
  REQUIRE(index.LookupAsOf(0, 1200, 1, &out).ok());
  CHECK(out == Pieces{Log(0, 1000, 1, 0), Members(1000, 200)});
  REQUIRE(index.LookupAsOf(0, 1200, 2, &out).ok());
  CHECK(out ==
        Pieces{Log(0, 400, 1, 0), Log(400, 200, 2, 0), Log(600, 400, 1, 600), Members(1000, 200)});
  REQUIRE(index.LookupAsOf(0, 1200, 3, &out).ok());
  CHECK(out == index.Lookup(0, 1200));
  CHECK(out.front() == Log(0, 500, 3, 0, RecordKind::kZero));

  const Status future = index.LookupAsOf(0, 10, 4, &out);
  CHECK(future.err() == EINVAL);
  CHECK(future.message() == "sequence 4 is newer than the log's last record 3");
}

TEST_CASE("log index: dropping destaged records sends their ranges back to the members") {
  LogIndex index;
  index.Add(Write(1, 0, 1000));
  index.Add(Write(2, 400, 200));
  index.Add(Write(3, 2000, 100));
  index.DropThrough(2);  // not destaged yet: nothing goes
  CHECK(index.records() == 3);
  index.SetDestaged(2);
  index.DropThrough(2);
  CHECK(index.records() == 1);
  CHECK(index.Lookup(0, 2100) == Pieces{Members(0, 2000), Log(2000, 100, 3, 0)});

  Pieces out;
  const Status old = index.LookupAsOf(0, 10, 1, &out);
  CHECK(old.err() == EINVAL);
  CHECK(old.message() ==
        "sequence 1 is older than the destaged sequence 2: the members no longer hold the "
        "volume as of it");
  REQUIRE(index.LookupAsOf(0, 2100, 2, &out).ok());
  CHECK(out == Pieces{Members(0, 2100)});
}

// A byte-by-byte model: for each byte, the sequences that wrote it.
TEST_CASE("log index: random overlapping records agree with a byte model (fixed seed)") {
  std::mt19937_64 rng(7);
  constexpr uint64_t kVolume = 4096;
  LogIndex index;
  std::vector<std::map<uint64_t, uint64_t>> writers(kVolume);  // byte -> sequence -> offset
  for (uint64_t seq = 1; seq <= 300; ++seq) {
    const uint64_t offset = rng() % kVolume;
    const uint64_t length = 1 + rng() % std::min<uint64_t>(kVolume - offset, 600);
    index.Add(Write(seq, offset, length));
    for (uint64_t b = offset; b < offset + length; ++b)
      writers[b][seq] = b - offset;
  }
  const uint64_t destaged = 120;
  index.SetDestaged(destaged);
  index.DropThrough(100);
  for (int q = 0; q < 200; ++q) {
    const uint64_t as_of = destaged + rng() % (300 - destaged + 1);
    const uint64_t offset = rng() % kVolume;
    const uint64_t length = 1 + rng() % (kVolume - offset);
    Pieces pieces;
    REQUIRE(index.LookupAsOf(offset, length, as_of, &pieces).ok());
    uint64_t at = offset;
    for (const ReadPiece& p : pieces) {
      REQUIRE(p.offset == at);
      uint64_t wrong = 0;  // bytes the piece gets from the wrong place
      for (uint64_t b = p.offset; b < p.offset + p.length; ++b) {
        auto& w = writers[b];
        auto newest = w.upper_bound(as_of);
        const bool logged = newest != w.begin() && std::prev(newest)->first > 100;
        if (p.from_log != logged) {
          ++wrong;
        } else if (logged && (p.sequence != std::prev(newest)->first ||
                              p.offset_in_record + (b - p.offset) != std::prev(newest)->second)) {
          ++wrong;
        }
      }
      CHECK(wrong == 0);
      at += p.length;
    }
    CHECK(at == offset + length);
    Pieces newest;
    REQUIRE(index.LookupAsOf(offset, length, 300, &newest).ok());
    CHECK(index.Lookup(offset, length) == newest);
  }
}

}  // namespace
}  // namespace dst::stagelog::log_index_test
