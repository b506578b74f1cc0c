#include "aggregator/volume/layout.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <bit>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <ostream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

namespace dst::volume {

// Lets doctest print extents when a comparison fails.
std::ostream& operator<<(std::ostream& os, const MemberExtent& e) {
  return os << "{member " << e.member << " @" << e.member_offset << " len " << e.length << " vol @"
            << e.volume_offset << "}";
}

}  // namespace dst::volume

namespace doctest {
template <>
struct StringMaker<std::vector<dst::volume::MemberExtent>> {
  static String convert(const std::vector<dst::volume::MemberExtent>& extents) {
    std::ostringstream os;
    os << "[";
    for (const auto& e : extents)
      os << e;
    os << "]";
    return os.str().c_str();
  }
};
}  // namespace doctest

namespace dst::volume::layout_test {
namespace {

constexpr uint64_t KiB = 1024;
constexpr uint64_t MiB = 1024 * KiB;
constexpr uint64_t GiB = 1024 * MiB;
constexpr uint64_t TiB = 1024 * GiB;
constexpr uint64_t kMaxInt64 = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());

using Extents = std::vector<MemberExtent>;

std::unique_ptr<Layout> MustMake(LayoutKind kind, std::vector<uint64_t> sizes,
                                 uint64_t chunk = kDefaultChunkSize) {
  std::unique_ptr<Layout> layout;
  const Status status = MakeLayout(kind, std::move(sizes), chunk, &layout);
  REQUIRE_MESSAGE(status.ok(), status.message());
  REQUIRE(layout != nullptr);
  return layout;
}

// The error message of a configuration MakeLayout must reject. Also checks
// that the output is left alone on error.
std::string MakeError(LayoutKind kind, std::vector<uint64_t> sizes,
                      uint64_t chunk = kDefaultChunkSize) {
  std::unique_ptr<Layout> layout;
  const Status status = MakeLayout(kind, std::move(sizes), chunk, &layout);
  CHECK_FALSE(status.ok());
  CHECK(status.err() == 22 /*EINVAL*/);
  CHECK(layout == nullptr);
  return status.message();
}

// ---------------------------------------------------------------------------
// Linear

TEST_CASE("linear: size, member count and usable sizes") {
  const LinearLayout layout({1000, 0, 3000, 24});
  CHECK(layout.kind() == LayoutKind::kLinear);
  CHECK(layout.size() == 4024);
  CHECK(layout.member_count() == 4);
  CHECK(layout.member_usable_size(0) == 1000);
  CHECK(layout.member_usable_size(1) == 0);
  CHECK(layout.member_usable_size(2) == 3000);
  CHECK(layout.member_usable_size(3) == 24);
  CHECK(layout.member_usable_size(4) == 0);
}

TEST_CASE("linear: first and last byte") {
  const LinearLayout layout({1000, 0, 3000, 24});
  CHECK(layout.Map(0, 1) == Extents{{0, 0, 1, 0}});
  CHECK(layout.Map(4023, 1) == Extents{{3, 23, 1, 4023}});
  CHECK(layout.Map(4000, 24) == Extents{{3, 0, 24, 4000}});
}

TEST_CASE("linear: requests on, just before and across member boundaries") {
  const LinearLayout layout({1000, 0, 3000, 24});
  // Just before the boundary, and ending exactly on it.
  CHECK(layout.Map(999, 1) == Extents{{0, 999, 1, 999}});
  CHECK(layout.Map(990, 10) == Extents{{0, 990, 10, 990}});
  // Starting exactly on it: the empty member 1 is skipped.
  CHECK(layout.Map(1000, 1) == Extents{{2, 0, 1, 1000}});
  CHECK(layout.Map(1000, 3000) == Extents{{2, 0, 3000, 1000}});
  // Across it.
  CHECK(layout.Map(990, 20) == Extents{{0, 990, 10, 990}, {2, 0, 10, 1000}});
  CHECK(layout.Map(3999, 2) == Extents{{2, 2999, 1, 3999}, {3, 0, 1, 4000}});
  // The whole volume: one extent per non-empty member.
  CHECK(layout.Map(0, 4024) == Extents{{0, 0, 1000, 0}, {2, 0, 3000, 1000}, {3, 0, 24, 4000}});
}

TEST_CASE("linear: empty members at either end take no space") {
  const LinearLayout layout({0, 512, 0, 0, 100, 0});
  CHECK(layout.size() == 612);
  CHECK(layout.member_count() == 6);
  CHECK(layout.Map(0, 1) == Extents{{1, 0, 1, 0}});
  CHECK(layout.Map(0, 612) == Extents{{1, 0, 512, 0}, {4, 0, 100, 512}});
  CHECK(layout.Map(611, 1) == Extents{{4, 99, 1, 611}});
}

TEST_CASE("linear: many uneven members are found by binary search") {
  std::vector<uint64_t> sizes;
  for (uint64_t i = 0; i < 100; ++i)
    sizes.push_back(i % 7 == 3 ? 0 : 1 + i * 37);
  const LinearLayout layout(sizes);
  uint64_t start = 0;
  for (uint32_t m = 0; m < sizes.size(); ++m) {
    if (sizes[m] == 0) continue;
    CAPTURE(m);
    CHECK(layout.Map(start, 1) == Extents{{m, 0, 1, start}});
    CHECK(layout.Map(start + sizes[m] - 1, 1) ==
          Extents{{m, sizes[m] - 1, 1, start + sizes[m] - 1}});
    start += sizes[m];
  }
  CHECK(layout.size() == start);
}

TEST_CASE("linear: one member is the identity mapping") {
  const LinearLayout layout({5000});
  CHECK(layout.Map(123, 4000) == Extents{{0, 123, 4000, 123}});
}

// ---------------------------------------------------------------------------
// Stripe

TEST_CASE("stripe: usable size is the smallest member rounded down to a chunk") {
  // Members of 4 chunks + 100, 3 chunks + 7 and 5 chunks: 3 chunks each.
  const StripeLayout layout({4 * 512 + 100, 3 * 512 + 7, 5 * 512}, 512);
  CHECK(layout.kind() == LayoutKind::kStripe);
  CHECK(layout.chunk_size() == 512);
  CHECK(layout.member_count() == 3);
  for (uint32_t m = 0; m < 3; ++m)
    CHECK(layout.member_usable_size(m) == 3 * 512);
  CHECK(layout.member_usable_size(3) == 0);
  CHECK(layout.size() == 9 * 512);
}

TEST_CASE("stripe: first and last byte") {
  const StripeLayout layout({4 * 512 + 100, 3 * 512 + 7, 5 * 512}, 512);
  CHECK(layout.Map(0, 1) == Extents{{0, 0, 1, 0}});
  // The last chunk (8) is on member 2, row 2.
  CHECK(layout.Map(9 * 512 - 1, 1) == Extents{{2, 3 * 512 - 1, 1, 9 * 512 - 1}});
}

TEST_CASE("stripe: requests on, just before and across chunk boundaries") {
  const StripeLayout layout({4 * 512 + 100, 3 * 512 + 7, 5 * 512}, 512);
  CHECK(layout.Map(511, 1) == Extents{{0, 511, 1, 511}});
  CHECK(layout.Map(500, 12) == Extents{{0, 500, 12, 500}});  // ends on the boundary
  CHECK(layout.Map(512, 1) == Extents{{1, 0, 1, 512}});
  CHECK(layout.Map(512, 512) == Extents{{1, 0, 512, 512}});  // exactly one chunk
  CHECK(layout.Map(500, 24) == Extents{{0, 500, 12, 500}, {1, 0, 12, 512}});
  // Across the end of a row: chunk 2 (member 2, row 0) to chunk 3 (member 0, row 1).
  CHECK(layout.Map(1526, 20) == Extents{{2, 502, 10, 1526}, {0, 512, 10, 1536}});
}

TEST_CASE("stripe: a request spanning several rows yields one extent per chunk") {
  const StripeLayout layout({2048, 2048}, 512);
  CHECK(layout.Map(256, 1792) ==
        Extents{{0, 256, 256, 256}, {1, 0, 512, 512}, {0, 512, 512, 1024}, {1, 512, 512, 1536}});
  CHECK(layout.Map(0, layout.size()).size() == 8);
}

TEST_CASE("stripe: one member merges into a single extent") {
  const StripeLayout layout({5000}, 1024);
  CHECK(layout.size() == 4096);
  CHECK(layout.Map(100, 3000) == Extents{{0, 100, 3000, 100}});
  CHECK(layout.Map(0, 4096) == Extents{{0, 0, 4096, 0}});
}

TEST_CASE("stripe: default chunk size and large offsets") {
  CHECK(kDefaultChunkSize == 64 * KiB);
  const StripeLayout layout({TiB + 5, TiB, 2 * TiB});
  CHECK(layout.chunk_size() == kDefaultChunkSize);
  CHECK(layout.size() == 3 * TiB);
  const uint64_t last = 3 * TiB - 1;
  CHECK(layout.Map(last, 1) == Extents{{2, TiB - 1, 1, last}});
  // Across the last row boundary but one: chunk 3k-1 is on member 2, 3k on member 0.
  const uint64_t row_end = 3 * (TiB - 64 * KiB);
  CHECK(layout.Map(row_end - 1, 2) ==
        Extents{{2, TiB - 64 * KiB - 1, 1, row_end - 1}, {0, TiB - 64 * KiB, 1, row_end}});
}

// ---------------------------------------------------------------------------
// Map contract shared by both layouts

TEST_CASE("Map: length 0 maps to nothing") {
  const LinearLayout linear({1000});
  const StripeLayout stripe({1024, 1024}, 512);
  CHECK(linear.Map(0, 0).empty());
  CHECK(linear.Map(500, 0).empty());
  CHECK(linear.Map(1000, 0).empty());
  CHECK(stripe.Map(0, 0).empty());
  CHECK(stripe.Map(2048, 0).empty());
}

TEST_CASE("Map: the part of a request beyond the volume is dropped") {
  const LinearLayout linear({1000, 24});
  const StripeLayout stripe({1024, 1024}, 512);
  CHECK(linear.Map(1014, 100) == Extents{{1, 14, 10, 1014}});
  CHECK(linear.Map(1024, 1).empty());
  CHECK(stripe.Map(2040, 100) == Extents{{1, 1016, 8, 2040}});
  CHECK(stripe.Map(2048, 1).empty());
  // No overflow in offset + length.
  const uint64_t max = std::numeric_limits<uint64_t>::max();
  CHECK(linear.Map(max, max).empty());
  CHECK(stripe.Map(max, max).empty());
  CHECK(linear.Map(1020, max) == Extents{{1, 20, 4, 1020}});
  CHECK(stripe.Map(2047, max) == Extents{{1, 1023, 1, 2047}});
}

TEST_CASE("AppendMap keeps existing elements and never merges with them") {
  const StripeLayout layout({4096}, 512);
  Extents out{{0, 0, 100, 0}};
  layout.AppendMap(100, 50, out);
  CHECK(out == Extents{{0, 0, 100, 0}, {0, 100, 50, 100}});
  layout.AppendMap(0, 0, out);
  CHECK(out.size() == 2);

  const LinearLayout linear({10, 10});
  out.clear();
  linear.AppendMap(5, 10, out);
  linear.AppendMap(0, 1, out);
  CHECK(out == Extents{{0, 5, 5, 5}, {1, 0, 5, 10}, {0, 0, 1, 0}});
}

// ---------------------------------------------------------------------------
// AppendMapPrefix and AppendRuns

TEST_CASE("AppendMapPrefix maps at most max_extents and says how far it got") {
  const StripeLayout layout({1 * MiB, 1 * MiB}, 4 * KiB);
  Extents out;
  CHECK(layout.AppendMapPrefix(1000, 20 * KiB, 2, out) == 7192);
  CHECK(out == Extents{{0, 1000, 3096, 1000}, {1, 0, 4096, 4096}});
  CHECK(layout.AppendMapPrefix(1000 + 7192, 20 * KiB - 7192, 100, out) == 20 * KiB - 7192);
  CHECK(out.size() == 6);
  CHECK(out.back() == MemberExtent{1, 8192, 1000, 5 * 4096});
  CHECK(layout.AppendMapPrefix(0, 10, 0, out) == 0);        // no room: nothing
  CHECK(layout.AppendMapPrefix(2 * MiB, 10, 5, out) == 0);  // past the end
  CHECK(out.size() == 6);

  const LinearLayout linear({10, 20, 30});
  out.clear();
  CHECK(linear.AppendMapPrefix(5, 50, 2, out) == 25);
  CHECK(out == Extents{{0, 5, 5, 5}, {1, 0, 20, 10}});
}

TEST_CASE("FirstExtent: the first extent, without a vector; length 0 past the end") {
  const StripeLayout layout({1 * MiB, 1 * MiB}, 4 * KiB);
  CHECK(layout.FirstExtent(5000, 10 * KiB) == MemberExtent{1, 904, 3192, 5000});
  CHECK(layout.FirstExtent(5000, 100) == MemberExtent{1, 904, 100, 5000});
  CHECK(layout.FirstExtent(2 * MiB, 10).length == 0);
  CHECK(layout.FirstExtent(0, 0).length == 0);
  const LinearLayout linear({10, 0, 20});
  CHECK(linear.FirstExtent(12, 100) == MemberExtent{2, 2, 18, 12});
}

TEST_CASE("AppendRuns: a 4 GiB stripe request is one contiguous run per member") {
  // The audit's request: 0xFFFF0000 bytes on two 4 GiB members, 64 KiB chunks.
  const StripeLayout layout({4 * GiB, 4 * GiB}, 64 * KiB);
  Extents runs;
  layout.AppendRuns(0, 0xFFFF0000, runs);
  CHECK(runs == Extents{{0, 0, 0x80000000, 0}, {1, 0, 0x7FFF0000, 64 * KiB}});

  // Partial chunks at both ends stay in their member's run.
  runs.clear();
  layout.AppendRuns(64 * KiB + 100, 4 * 64 * KiB, runs);
  CHECK(runs ==
        Extents{{1, 100, 2 * 64 * KiB, 64 * KiB + 100}, {0, 64 * KiB, 2 * 64 * KiB, 2 * 64 * KiB}});
  runs.clear();
  layout.AppendRuns(8 * GiB - 10, 100, runs);  // clipped at the end
  CHECK(runs == Extents{{1, 4 * GiB - 10, 10, 8 * GiB - 10}});
}

TEST_CASE("AppendRuns: linear requests are their extents; existing elements are kept") {
  const LinearLayout layout({10, 0, 20, 30});
  Extents runs{{7, 7, 7, 7}};
  layout.AppendRuns(5, 40, runs);
  CHECK(runs == Extents{{7, 7, 7, 7}, {0, 5, 5, 5}, {2, 0, 20, 10}, {3, 0, 15, 30}});
  layout.AppendRuns(60, 5, runs);  // past the end: nothing
  CHECK(runs.size() == 4);
}

// ---------------------------------------------------------------------------
// MakeLayout and layout kinds

TEST_CASE("MakeLayout builds valid layouts") {
  auto linear = MustMake(LayoutKind::kLinear, {1000, 0, 24}, /*chunk ignored*/ 0);
  CHECK(linear->kind() == LayoutKind::kLinear);
  CHECK(linear->size() == 1024);
  CHECK(linear->member_count() == 3);

  auto stripe = MustMake(LayoutKind::kStripe, {MiB, MiB + 1, 3 * MiB});
  CHECK(stripe->kind() == LayoutKind::kStripe);
  CHECK(stripe->size() == 3 * MiB);
  CHECK(dynamic_cast<const StripeLayout&>(*stripe).chunk_size() == kDefaultChunkSize);

  // The chunk size bounds themselves are accepted.
  CHECK(MustMake(LayoutKind::kStripe, {512, 1000}, 512)->size() == 1024);
  CHECK(MustMake(LayoutKind::kStripe, {GiB, 2 * GiB}, GiB)->size() == 2 * GiB);
  // The largest sizes that still fit below 2^63.
  CHECK(MustMake(LayoutKind::kLinear, {kMaxInt64})->size() == kMaxInt64);
  CHECK(MustMake(LayoutKind::kLinear, {kMaxInt64 - 1, 1})->size() == kMaxInt64);
  const uint64_t four_eib = uint64_t{1} << 62;
  CHECK(MustMake(LayoutKind::kStripe, {four_eib, four_eib - 512}, 512)->size() ==
        2 * (four_eib - 512));
}

TEST_CASE("MakeLayout rejects a volume without members") {
  CHECK(MakeError(LayoutKind::kLinear, {}) == "volume has no members");
  CHECK(MakeError(LayoutKind::kStripe, {}) == "volume has no members");
}

TEST_CASE("MakeLayout rejects bad chunk sizes") {
  const std::vector<uint64_t> sizes{4 * GiB, 4 * GiB};
  CHECK(MakeError(LayoutKind::kStripe, sizes, 1000) == "chunk size 1000 B is not a power of two");
  CHECK(MakeError(LayoutKind::kStripe, sizes, 0) == "chunk size 0 B is not a power of two");
  CHECK(MakeError(LayoutKind::kStripe, sizes, 96 * KiB) ==
        "chunk size 96 KiB is not a power of two");
  CHECK(MakeError(LayoutKind::kStripe, sizes, 256) ==
        "chunk size 256 B is smaller than the minimum (512 B)");
  CHECK(MakeError(LayoutKind::kStripe, sizes, 1) ==
        "chunk size 1 B is smaller than the minimum (512 B)");
  CHECK(MakeError(LayoutKind::kStripe, sizes, 2 * GiB) ==
        "chunk size 2 GiB is larger than the maximum (1 GiB)");
}

TEST_CASE("MakeLayout rejects stripe members smaller than one chunk") {
  CHECK(MakeError(LayoutKind::kStripe, {MiB, MiB, 1000}) ==
        "member 2 (1000 B) is smaller than one chunk (64 KiB)");
  CHECK(MakeError(LayoutKind::kStripe, {MiB, 0, MiB}) ==
        "member 1 (0 B) is smaller than one chunk (64 KiB)");
  CHECK(MakeError(LayoutKind::kStripe, {511}, 512) ==
        "member 0 (511 B) is smaller than one chunk (512 B)");
}

TEST_CASE("MakeLayout rejects an empty linear volume") {
  CHECK(MakeError(LayoutKind::kLinear, {0}) == "linear volume has size 0: every member is empty");
  CHECK(MakeError(LayoutKind::kLinear, {0, 0, 0}) ==
        "linear volume has size 0: every member is empty");
}

TEST_CASE("MakeLayout rejects volumes of 2^63 bytes or more") {
  const uint64_t four_eib = uint64_t{1} << 62;
  CHECK(MakeError(LayoutKind::kLinear, {four_eib, four_eib}) ==
        "linear volume size overflows 2^63 bytes at member 1 (4 EiB)");
  CHECK(MakeError(LayoutKind::kLinear, {1, kMaxInt64}) ==
        "linear volume size overflows 2^63 bytes at member 1 (9223372036854775807 B)");
  // A sum that would wrap around 2^64 is caught too.
  CHECK(MakeError(LayoutKind::kLinear, {10, std::numeric_limits<uint64_t>::max()}) ==
        "linear volume size overflows 2^63 bytes at member 1 (18446744073709551615 B)");
  CHECK(MakeError(LayoutKind::kStripe, {four_eib, four_eib + 5}) ==
        "stripe volume of 2 x 4 EiB overflows 2^63 bytes");
  // 2^64 - 64 KiB usable on a single member.
  CHECK(MakeError(LayoutKind::kStripe, {std::numeric_limits<uint64_t>::max()}) ==
        "stripe volume of 1 x 18014398509481920 KiB overflows 2^63 bytes");
}

TEST_CASE("mirror and raid10 are not laid out over raw members") {
  for (LayoutKind kind : {LayoutKind::kMirror, LayoutKind::kRaid10}) {
    const std::string error = MakeError(kind, {MiB, MiB, MiB, MiB});
    CHECK(error.find(std::string(LayoutKindName(kind)) + " volume keeps copies") !=
          std::string::npos);
    CHECK(error.find("needs the member format") != std::string::npos);
  }
}

TEST_CASE("layout kinds parse and print by name") {
  LayoutKind kind = LayoutKind::kStripe;
  CHECK(ParseLayoutKind("linear", &kind).ok());
  CHECK(kind == LayoutKind::kLinear);
  CHECK(ParseLayoutKind("stripe", &kind).ok());
  CHECK(kind == LayoutKind::kStripe);
  CHECK(ParseLayoutKind("mirror", &kind).ok());
  CHECK(kind == LayoutKind::kMirror);
  CHECK(ParseLayoutKind("raid10", &kind).ok());
  CHECK(kind == LayoutKind::kRaid10);
  CHECK(LayoutKindName(LayoutKind::kLinear) == "linear");
  CHECK(LayoutKindName(LayoutKind::kStripe) == "stripe");
  CHECK(LayoutKindName(LayoutKind::kMirror) == "mirror");
  CHECK(LayoutKindName(LayoutKind::kRaid10) == "raid10");

  kind = LayoutKind::kStripe;
  const Status bad = ParseLayoutKind("raid5", &kind);
  CHECK(bad.err() == 22 /*EINVAL*/);
  CHECK(bad.message() == "unknown layout 'raid5' (expected linear, stripe, mirror or raid10)");
  CHECK(ParseLayoutKind("", &kind).message() ==
        "unknown layout '' (expected linear, stripe, mirror or raid10)");
  CHECK_FALSE(ParseLayoutKind("Linear", &kind).ok());
  CHECK(kind == LayoutKind::kStripe);  // untouched on error
}

// ---------------------------------------------------------------------------
// Property tests against a naive reference model

// A layout configuration, kept alongside the Layout so the reference model
// can recompute everything from first principles.
struct Spec {
  LayoutKind kind = LayoutKind::kLinear;
  std::vector<uint64_t> sizes;
  uint64_t chunk = kDefaultChunkSize;

  std::string Describe() const {
    std::string text(LayoutKindName(kind));
    text += " chunk=" + std::to_string(chunk) + " sizes=";
    for (uint64_t s : sizes)
      text += std::to_string(s) + ",";
    return text;
  }
};

struct ByteLocation {
  uint32_t member;
  uint64_t member_offset;
  bool operator==(const ByteLocation&) const = default;
};

uint64_t ReferenceUsable(const Spec& spec, uint32_t member) {
  if (spec.kind == LayoutKind::kLinear) return spec.sizes[member];
  const uint64_t smallest = *std::min_element(spec.sizes.begin(), spec.sizes.end());
  return smallest / spec.chunk * spec.chunk;
}

uint64_t ReferenceSize(const Spec& spec) {
  uint64_t total = 0;
  for (uint32_t m = 0; m < spec.sizes.size(); ++m)
    total += ReferenceUsable(spec, m);
  return total;
}

// Deliberately naive: walk the members (linear) or do the chunk arithmetic
// with plain division (stripe), one byte at a time.
ByteLocation Reference(const Spec& spec, uint64_t volume_byte) {
  if (spec.kind == LayoutKind::kLinear) {
    uint32_t member = 0;
    while (volume_byte >= spec.sizes[member])
      volume_byte -= spec.sizes[member++];
    return {member, volume_byte};
  }
  const uint64_t n = spec.sizes.size();
  const uint64_t chunk = volume_byte / spec.chunk;
  return {static_cast<uint32_t>(chunk % n), chunk / n * spec.chunk + volume_byte % spec.chunk};
}

uint64_t Uniform(std::mt19937_64& rng, uint64_t lo, uint64_t hi) {
  return std::uniform_int_distribution<uint64_t>(lo, hi)(rng);
}

// Member sizes up to about 2^50 and every chunk size MakeLayout allows.
Spec RandomLargeSpec(std::mt19937_64& rng) {
  Spec spec;
  spec.kind = Uniform(rng, 0, 1) ? LayoutKind::kStripe : LayoutKind::kLinear;
  spec.chunk = uint64_t{1} << Uniform(rng, 9, 30);
  const uint64_t members = Uniform(rng, 1, 6);
  static constexpr uint64_t kScales[] = {1, 4, 1000, uint64_t{1} << 20};
  for (uint64_t m = 0; m < members; ++m) {
    if (spec.kind == LayoutKind::kStripe) {
      const uint64_t rows = Uniform(rng, 1, kScales[Uniform(rng, 0, 3)]);
      const uint64_t slack = Uniform(rng, 0, 2) == 0 ? 0 : Uniform(rng, 0, spec.chunk - 1);
      spec.sizes.push_back(rows * spec.chunk + slack);
    } else {
      const uint64_t scale = uint64_t{1} << Uniform(rng, 0, 50);
      spec.sizes.push_back(Uniform(rng, 0, 5) == 0 ? 0 : Uniform(rng, 1, scale));
    }
  }
  if (ReferenceSize(spec) == 0) spec.sizes[Uniform(rng, 0, members - 1)] = Uniform(rng, 1, 1000);
  return spec;
}

// Small enough to model byte by byte: chunks of 512 B up to `max_chunk` and
// members of at most `max_member_size` (>= max_chunk) bytes.
Spec RandomSmallSpec(std::mt19937_64& rng, uint64_t max_chunk, uint64_t max_member_size) {
  Spec spec;
  spec.kind = Uniform(rng, 0, 1) ? LayoutKind::kStripe : LayoutKind::kLinear;
  spec.chunk = uint64_t{512} << Uniform(rng, 0, std::countr_zero(max_chunk / 512));
  const uint64_t members = Uniform(rng, 1, 6);
  for (uint64_t m = 0; m < members; ++m) {
    if (spec.kind == LayoutKind::kStripe) {
      spec.sizes.push_back(Uniform(rng, spec.chunk, max_member_size));
    } else {
      spec.sizes.push_back(Uniform(rng, 0, 3) == 0 ? 0 : Uniform(rng, 1, max_member_size));
    }
  }
  if (ReferenceSize(spec) == 0) spec.sizes[Uniform(rng, 0, members - 1)] = Uniform(rng, 1, 1000);
  return spec;
}

std::unique_ptr<Layout> Build(const Spec& spec) {
  return MustMake(spec.kind, spec.sizes, spec.chunk);
}

// Volume offsets worth aiming at: member starts (linear) or chunk starts.
uint64_t RandomBoundary(std::mt19937_64& rng, const Spec& spec, uint64_t size) {
  if (spec.kind == LayoutKind::kStripe) return Uniform(rng, 0, size / spec.chunk) * spec.chunk;
  uint64_t boundary = 0;
  const uint64_t last = Uniform(rng, 0, spec.sizes.size());
  for (uint64_t m = 0; m < last; ++m)
    boundary += spec.sizes[m];
  return boundary;
}

// A request within the volume, biased towards the edges that matter: the
// first and last byte, and a few bytes either side of a boundary.
struct Request {
  uint64_t offset;
  uint64_t length;
};

Request RandomRequest(std::mt19937_64& rng, const Spec& spec, uint64_t size, uint64_t max_length) {
  uint64_t offset = 0;
  switch (Uniform(rng, 0, 4)) {
    case 0:
      offset = 0;
      break;
    case 1:
      offset = size - 1;
      break;
    case 2: {
      const uint64_t boundary = RandomBoundary(rng, spec, size);
      const uint64_t delta = Uniform(rng, 0, 3);
      offset = Uniform(rng, 0, 1) ? std::min(boundary + delta, size - 1)
                                  : boundary - std::min(boundary, delta);
      offset = std::min(offset, size - 1);
      break;
    }
    default:
      offset = Uniform(rng, 0, size - 1);
  }
  const uint64_t longest = std::min(size - offset, max_length);
  uint64_t length = 0;
  switch (Uniform(rng, 0, 3)) {
    case 0:
      length = 1;
      break;
    case 1:
      length = Uniform(rng, 1, std::min<uint64_t>(longest, 8));
      break;
    case 2:
      length = longest;
      break;
    default:
      length = Uniform(rng, 1, longest);
  }
  return {offset, length};
}

// Returns why `extents` is not a correct mapping of the request, or "" if it
// is: ascending, gap-free and overlap-free cover of exactly the request, every
// piece inside its member's usable size and where the reference model puts
// its first and last byte, with no two neighbours mergeable (same member,
// contiguous there).
std::string CoverageError(const Layout& layout, const Spec& spec, Request request,
                          const Extents& extents) {
  std::ostringstream why;
  uint64_t expected = request.offset;
  for (size_t i = 0; i < extents.size(); ++i) {
    const MemberExtent& e = extents[i];
    why << "extent " << i << " " << e << ": ";
    if (e.length == 0) return why.str() + "empty";
    if (e.volume_offset != expected) return why.str() + "gap or overlap";
    if (e.member >= layout.member_count()) return why.str() + "no such member";
    const uint64_t usable = layout.member_usable_size(e.member);
    if (e.member_offset > usable || e.length > usable - e.member_offset) {
      return why.str() + "beyond the member's usable size";
    }
    if (i > 0 && extents[i - 1].member == e.member &&
        extents[i - 1].member_offset + extents[i - 1].length == e.member_offset) {
      return why.str() + "not merged with its predecessor";
    }
    for (uint64_t k : {uint64_t{0}, e.length / 2, e.length - 1}) {
      if (Reference(spec, e.volume_offset + k) != ByteLocation{e.member, e.member_offset + k}) {
        return why.str() + "disagrees with the reference at +" + std::to_string(k);
      }
    }
    expected += e.length;
    why.str("");
  }
  if (expected != request.offset + request.length)
    return "covers up to " + std::to_string(expected);
  return "";
}

// Returns why `runs` are not the member runs of `extents` (a correct map of a
// request), or "": one run per member touched, each the hull of that member's
// extents with nothing missing in between, in order of first appearance.
std::string RunsError(const Extents& extents, const Extents& runs) {
  Extents expected;
  for (const MemberExtent& e : extents) {
    auto run = std::find_if(expected.begin(), expected.end(),
                            [&](const MemberExtent& r) { return r.member == e.member; });
    if (run == expected.end()) {
      expected.push_back(e);
      continue;
    }
    if (run->member_offset + run->length != e.member_offset)
      return "member " + std::to_string(e.member) + " is not contiguous";
    run->length += e.length;
  }
  if (runs != expected) {
    std::ostringstream why;
    why << "runs " << doctest::StringMaker<Extents>::convert(runs).c_str() << ", expected "
        << doctest::StringMaker<Extents>::convert(expected).c_str();
    return why.str();
  }
  return "";
}

TEST_CASE("property: random layouts map random requests exactly") {
  std::mt19937_64 rng(20240601);
  Extents extents;
  Extents batched;
  for (int iteration = 0; iteration < 3000; ++iteration) {
    const Spec spec = RandomLargeSpec(rng);
    const auto layout = Build(spec);
    REQUIRE_MESSAGE(layout->size() == ReferenceSize(spec), spec.Describe());
    for (uint32_t m = 0; m < spec.sizes.size(); ++m) {
      REQUIRE(layout->member_usable_size(m) == ReferenceUsable(spec, m));
    }
    // Stripe requests are capped so that a request stays a few dozen extents.
    const uint64_t max_length = spec.kind == LayoutKind::kStripe ? 64 * spec.chunk : layout->size();
    for (int r = 0; r < 20; ++r) {
      const Request request = RandomRequest(rng, spec, layout->size(), max_length);
      extents.clear();
      layout->AppendMap(request.offset, request.length, extents);
      const std::string error = CoverageError(*layout, spec, request, extents);
      REQUIRE_MESSAGE(error.empty(), spec.Describe(), " request ", request.offset, "+",
                      request.length, ": ", error);

      // The runs hold the same member bytes, one run per member at most.
      Extents runs;
      layout->AppendRuns(request.offset, request.length, runs);
      const std::string runs_error = RunsError(extents, runs);
      REQUIRE_MESSAGE(runs_error.empty(), spec.Describe(), " request ", request.offset, "+",
                      request.length, ": ", runs_error);

      // Mapped a few extents at a time, it is the same map.
      const size_t batch = Uniform(rng, 1, 4);
      batched.clear();
      for (uint64_t done = 0; done < request.length;) {
        const uint64_t mapped =
            layout->AppendMapPrefix(request.offset + done, request.length - done, batch, batched);
        REQUIRE(mapped > 0);
        done += mapped;
      }
      REQUIRE_MESSAGE(batched == extents, spec.Describe(), " request ", request.offset, "+",
                      request.length, " in batches of ", batch);

      // Walked extent by extent, it is the same map too.
      batched.clear();
      for (uint64_t done = 0; done < request.length;) {
        const MemberExtent e = layout->FirstExtent(request.offset + done, request.length - done);
        REQUIRE(e.length > 0);
        batched.push_back(e);
        done += e.length;
      }
      REQUIRE_MESSAGE(batched == extents, spec.Describe(), " request ", request.offset, "+",
                      request.length, " extent by extent");
    }
  }
}

void Fill(std::mt19937_64& rng, std::vector<uint8_t>& bytes) {
  for (uint8_t& b : bytes)
    b = static_cast<uint8_t>(rng());
}

TEST_CASE("property: data written through Map reads back through the reference model") {
  std::mt19937_64 rng(7);
  std::vector<uint8_t> data;
  std::vector<uint8_t> readback;
  for (int iteration = 0; iteration < 400; ++iteration) {
    const Spec spec = RandomSmallSpec(rng, 2 * KiB, 8 * KiB);
    const auto layout = Build(spec);
    const uint64_t size = layout->size();
    std::vector<std::vector<uint8_t>> members(spec.sizes.size());
    for (uint32_t m = 0; m < members.size(); ++m)
      members[m].resize(layout->member_usable_size(m));
    std::vector<uint8_t> shadow(size);  // what a plain disk of the volume's size would hold

    for (int r = 0; r < 8; ++r) {
      const Request request = RandomRequest(rng, spec, size, size);
      const Extents extents = layout->Map(request.offset, request.length);
      REQUIRE(CoverageError(*layout, spec, request, extents).empty());
      data.resize(request.length);
      Fill(rng, data);
      for (const MemberExtent& e : extents) {
        std::memcpy(&members[e.member][e.member_offset], &data[e.volume_offset - request.offset],
                    e.length);
      }
      std::memcpy(&shadow[request.offset], data.data(), request.length);

      // The read path: reassemble the client's buffer from the extents.
      readback.assign(request.length, 0);
      for (const MemberExtent& e : extents) {
        std::memcpy(&readback[e.volume_offset - request.offset],
                    &members[e.member][e.member_offset], e.length);
      }
      REQUIRE_MESSAGE(readback == data, spec.Describe());
    }

    // Every volume byte, including those never written, is where the
    // reference model says.
    for (uint64_t b = 0; b < size; ++b) {
      const ByteLocation at = Reference(spec, b);
      if (members[at.member][at.member_offset] != shadow[b]) {
        FAIL(spec.Describe(), ": volume byte ", b, " differs from member ", at.member, " byte ",
             at.member_offset);
      }
    }
  }
}

// Returns why some member byte is not the image of exactly one volume byte,
// or "" if every volume byte maps, one by one, to a distinct usable byte.
std::string InjectivityError(const Layout& layout) {
  std::vector<std::vector<bool>> used(layout.member_count());
  uint64_t usable_total = 0;
  for (uint32_t m = 0; m < used.size(); ++m) {
    used[m].resize(layout.member_usable_size(m));
    usable_total += used[m].size();
  }
  // With as many usable bytes as volume bytes, injective means bijective.
  if (layout.size() != usable_total) return "size differs from the usable total";
  Extents extents;
  for (uint64_t b = 0; b < layout.size(); ++b) {
    extents.clear();
    layout.AppendMap(b, 1, extents);
    const MemberExtent* e = extents.size() == 1 ? &extents[0] : nullptr;
    std::string problem;
    if (e == nullptr) {
      problem = std::to_string(extents.size()) + " extents";
    } else if (e->length != 1 || e->volume_offset != b) {
      problem = "wrong length or volume offset";
    } else if (e->member >= used.size() || e->member_offset >= used[e->member].size()) {
      problem = "outside the usable bytes";
    } else if (used[e->member][e->member_offset]) {
      problem = "member " + std::to_string(e->member) + " byte " +
                std::to_string(e->member_offset) + " is already taken";
    } else {
      used[e->member][e->member_offset] = true;
      continue;
    }
    return "volume byte " + std::to_string(b) + ": " + problem;
  }
  return "";
}

TEST_CASE("property: no two volume bytes share a member byte") {
  std::mt19937_64 rng(99);
  for (int iteration = 0; iteration < 200; ++iteration) {
    const Spec spec = RandomSmallSpec(rng, 1 * KiB, 3 * KiB);
    const std::string error = InjectivityError(*Build(spec));
    REQUIRE_MESSAGE(error.empty(), spec.Describe(), ": ", error);
  }
}

// VolumeOffset must undo Map for every byte a member holds: checksum
// recomputation walks members and needs each block's volume address.
TEST_CASE("VolumeOffset inverts Map for linear and stripe layouts") {
  const std::vector<uint64_t> sizes = {3 * 4096, 0, 5 * 4096, 4096};
  std::unique_ptr<Layout> linear, stripe;
  REQUIRE(MakeLayout(LayoutKind::kLinear, sizes, 0, &linear).ok());
  REQUIRE(MakeLayout(LayoutKind::kStripe, {8192, 16384, 8192}, 4096, &stripe).ok());
  for (const Layout* layout : {linear.get(), stripe.get()}) {
    for (uint64_t offset = 0; offset < layout->size(); offset += 512) {
      const Extents e = layout->Map(offset, 1);
      REQUIRE(e.size() == 1);
      CHECK(layout->VolumeOffset(e[0].member, e[0].member_offset) == offset);
    }
  }
}

}  // namespace
}  // namespace dst::volume::layout_test
