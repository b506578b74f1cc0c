#include "aggregator/volume/set_geometry.h"

#include <doctest/doctest.h>

#include <cerrno>
#include <string>
#include <vector>

namespace dst::volume::set_geometry_test {
namespace {

constexpr uint64_t KiB = 1024;
constexpr uint64_t MiB = 1024 * KiB;

SetGeometry MustMake(LayoutKind kind, uint32_t members, uint32_t copies) {
  SetGeometry g;
  const Status status = MakeSetGeometry(kind, members, copies, &g);
  REQUIRE_MESSAGE(status.ok(), status.message());
  return g;
}

// The message of a refused geometry; *out must be left alone.
std::string Refused(LayoutKind kind, uint32_t members, uint32_t copies) {
  SetGeometry g{LayoutKind::kRaid10, 99, 33};
  const Status status = MakeSetGeometry(kind, members, copies, &g);
  CHECK(status.err() == EINVAL);
  CHECK(g == SetGeometry{LayoutKind::kRaid10, 99, 33});
  return status.message();
}

std::unique_ptr<Layout> MustLayout(const SetGeometry& g, std::vector<uint64_t> sizes,
                                   uint64_t chunk = 0) {
  std::unique_ptr<Layout> layout;
  const Status status = MakeSetLayout(g, sizes, chunk, &layout);
  REQUIRE_MESSAGE(status.ok(), status.message());
  return layout;
}

std::string LayoutError(const SetGeometry& g, std::vector<uint64_t> sizes, uint64_t chunk) {
  std::unique_ptr<Layout> layout;
  const Status status = MakeSetLayout(g, sizes, chunk, &layout);
  CHECK(status.err() == EINVAL);
  CHECK(layout == nullptr);
  return status.message();
}

TEST_CASE("set geometry: member i is copy i % K of set i / K") {
  const SetGeometry mirror = MustMake(LayoutKind::kMirror, 3, 3);
  CHECK(mirror.sets() == 1);
  for (uint32_t m = 0; m < 3; ++m) {
    CHECK(mirror.SetOf(m) == 0);
    CHECK(mirror.CopyOf(m) == m);
    CHECK(mirror.MemberOf(0, m) == m);
  }
  CHECK(mirror.set_layout() == LayoutKind::kLinear);

  const SetGeometry raid10 = MustMake(LayoutKind::kRaid10, 6, 2);
  CHECK(raid10.sets() == 3);
  const uint32_t expected_set[] = {0, 0, 1, 1, 2, 2};
  const uint32_t expected_copy[] = {0, 1, 0, 1, 0, 1};
  for (uint32_t m = 0; m < 6; ++m) {
    CHECK(raid10.SetOf(m) == expected_set[m]);
    CHECK(raid10.CopyOf(m) == expected_copy[m]);
    CHECK(raid10.MemberOf(raid10.SetOf(m), raid10.CopyOf(m)) == m);
  }
  CHECK(raid10.set_layout() == LayoutKind::kStripe);

  const SetGeometry wide = MustMake(LayoutKind::kRaid10, 64, 4);
  CHECK(wide.sets() == 16);
  CHECK(wide.SetOf(63) == 15);
  CHECK(wide.CopyOf(63) == 3);
}

TEST_CASE("set geometry: copy counts a volume cannot have are refused by rule") {
  CHECK(Refused(LayoutKind::kMirror, 1, 1) == "a mirror volume keeps at least 2 copies, not 1");
  CHECK(Refused(LayoutKind::kRaid10, 4, 1) == "a raid10 volume keeps at least 2 copies, not 1");
  CHECK(Refused(LayoutKind::kMirror, 2, 0) == "a mirror volume keeps at least 2 copies, not 0");
  CHECK(Refused(LayoutKind::kMirror, 3, 2) == "a mirror of 2 copies has exactly 2 members, not 3");
  CHECK(Refused(LayoutKind::kMirror, 1, 2) == "a mirror of 2 copies has exactly 2 members, not 1");
  CHECK(Refused(LayoutKind::kRaid10, 6, 4) ==
        "raid10 with 4 copies needs a multiple of 4 members, not 6");
  CHECK(Refused(LayoutKind::kRaid10, 0, 2) ==
        "raid10 with 2 copies needs at least 4 members (two sets), not 0");
  CHECK(Refused(LayoutKind::kRaid10, 2, 2) ==
        "raid10 with 2 members and 2 copies is a single set: use layout mirror");
  CHECK(Refused(LayoutKind::kLinear, 2, 2) == "layout linear keeps no copies");
  CHECK(Refused(LayoutKind::kStripe, 4, 2) == "layout stripe keeps no copies");
  CHECK(IsRedundant(LayoutKind::kMirror));
  CHECK(IsRedundant(LayoutKind::kRaid10));
  CHECK_FALSE(IsRedundant(LayoutKind::kLinear));
  CHECK_FALSE(IsRedundant(LayoutKind::kStripe));
}

TEST_CASE("set geometry: a set is as large as its smallest copy") {
  const SetGeometry raid10 = MustMake(LayoutKind::kRaid10, 6, 3);
  const std::vector<uint64_t> sizes = {5 * MiB, 3 * MiB, 4 * MiB, 9 * MiB, 8 * MiB, 7 * MiB};
  CHECK(SetSizes(raid10, sizes) == std::vector<uint64_t>{3 * MiB, 7 * MiB});
}

TEST_CASE("set geometry: a mirror's volume is its smallest copy, linear over one set") {
  const SetGeometry mirror = MustMake(LayoutKind::kMirror, 2, 2);
  const auto layout = MustLayout(mirror, {1022 * MiB, 1021 * MiB + 4 * KiB});
  CHECK(layout->kind() == LayoutKind::kLinear);
  CHECK(layout->member_count() == 1);
  CHECK(layout->size() == 1021 * MiB + 4 * KiB);
  // The one set holds the whole volume at the same offsets: the identity mapping.
  CHECK(layout->Map(12345, 100) == std::vector<MemberExtent>{{0, 12345, 100, 12345}});
}

TEST_CASE("set geometry: a raid10 volume stripes over its sets") {
  const SetGeometry raid10 = MustMake(LayoutKind::kRaid10, 4, 2);
  // Sets of 10 MiB and 6 MiB + 100 KiB: every set contributes 6 MiB + 64 KiB in 64 KiB chunks.
  const auto layout =
      MustLayout(raid10, {10 * MiB, 12 * MiB, 7 * MiB, 6 * MiB + 100 * KiB}, 64 * KiB);
  CHECK(layout->kind() == LayoutKind::kStripe);
  CHECK(layout->member_count() == 2);
  CHECK(layout->size() == 2 * (6 * MiB + 64 * KiB));
  CHECK(layout->member_usable_size(0) == 6 * MiB + 64 * KiB);
  // Chunk 1 is on set 1, at its start; chunk 2 back on set 0, one row down.
  CHECK(layout->Map(64 * KiB, 64 * KiB) == std::vector<MemberExtent>{{1, 0, 64 * KiB, 64 * KiB}});
  CHECK(layout->Map(128 * KiB, 4 * KiB) ==
        std::vector<MemberExtent>{{0, 64 * KiB, 4 * KiB, 128 * KiB}});
}

TEST_CASE("set geometry: a layout that cannot be made is refused by set") {
  const SetGeometry raid10 = MustMake(LayoutKind::kRaid10, 4, 2);
  CHECK(LayoutError(raid10, {MiB, MiB, MiB, 32 * KiB}, 64 * KiB) ==
        "set 1 (members 2 to 3, 32 KiB) is smaller than one chunk (64 KiB)");
  CHECK(LayoutError(raid10, {MiB, MiB, MiB, MiB}, 3000) ==
        "chunk size 3000 B is not a power of two");
  CHECK(LayoutError(raid10, {MiB, MiB, MiB}, 64 * KiB) ==
        "3 member sizes for a raid10 of 4 members");
  const SetGeometry mirror = MustMake(LayoutKind::kMirror, 2, 2);
  CHECK(LayoutError(mirror, {MiB, 0}, 0) == "linear volume has size 0: every member is empty");
}

}  // namespace
}  // namespace dst::volume::set_geometry_test
