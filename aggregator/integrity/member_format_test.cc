#include "aggregator/integrity/member_format.h"

#include <doctest/doctest.h>

#include <cerrno>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "common/units.h"

namespace dst::integrity::member_format_test {
namespace {

constexpr uint64_t KiB = 1024;
constexpr uint64_t MiB = 1024 * KiB;
constexpr uint64_t GiB = 1024 * MiB;
constexpr uint64_t TiB = 1024 * GiB;

MemberGeometry MustCompute(uint64_t member_size, const FormatParams& params = {},
                           uint32_t version = kFormatVersion1) {
  MemberGeometry g;
  const Status status = ComputeGeometry(member_size, params, version, &g);
  REQUIRE_MESSAGE(status.ok(), status.message());
  return g;
}

// Every promise of the format: areas in order, inside the member, aligned, and the metadata large
// enough for the data area it describes.
void CheckInvariants(const MemberGeometry& g) {
  CAPTURE(g.member_size);
  CAPTURE(g.params.block_size);
  CHECK(g.superblocks == Area{0, 2 * kSlotSize});
  CHECK(g.bitmap.offset == g.superblocks.end());
  if (g.missed_writes.size == 0) {  // version 1
    CHECK(g.missed_writes == Area{});
    CHECK(g.table.offset == g.bitmap.end());
  } else {  // version 2: the missed-write map is the bitmap's twin, right after it
    CHECK(g.missed_writes == Area{g.bitmap.end(), g.bitmap.size});
    CHECK(g.table.offset == g.missed_writes.end());
  }
  CHECK(g.table.end() <= g.data.offset);
  CHECK(g.data.end() <= g.member_size);
  CHECK(g.member_size - g.data.end() < g.params.block_size);  // only a partial block is lost
  CHECK(g.bitmap.size % kMetadataPageSize == 0);
  CHECK(g.table.size % kMetadataPageSize == 0);
  CHECK(g.data.offset % kDataAlignment == 0);
  CHECK(g.data.offset - g.table.end() < kDataAlignment);  // no more padding than alignment needs
  CHECK(g.data.size > 0);
  CHECK(g.data.size % g.params.block_size == 0);
  CHECK(g.table.size / g.entry_size() >= g.data_blocks());
  CHECK(g.bitmap.size * 8 >= g.regions());
}

std::vector<FormatParams> ParamSets() {
  return {
      {},
      {512, 512, ChecksumAlgorithm::kCrc32c},
      {512, 512, ChecksumAlgorithm::kBlake2b},
      {64 * 1024, GiB, ChecksumAlgorithm::kBlake2b},
      {4096, 4 * MiB, ChecksumAlgorithm::kBlake2bKeyed},
  };
}

TEST_CASE("geometry: a 1 GiB member with the defaults, by the numbers of docs/format.md") {
  const MemberGeometry g = MustCompute(GiB);
  CHECK(g.params == FormatParams{});
  CHECK(g.entry_size() == 4);
  CHECK(g.bitmap == Area{8 * KiB, 4 * KiB});
  // Sized for (1 GiB - 8 KiB) / 4 KiB = 262142 blocks: 1048568 bytes, padded to 1 MiB.
  CHECK(g.table == Area{12 * KiB, MiB});
  CHECK(g.data == Area{2 * MiB, GiB - 2 * MiB});
  CHECK(g.data_blocks() == (GiB - 2 * MiB) / 4096);
  CHECK(g.regions() == 256);  // 1022 MiB of data: the last of the 4 MiB regions is partial
  CheckInvariants(g);
}

TEST_CASE("geometry: version 2 puts the missed-write map between the bitmap and the table") {
  const MemberGeometry v1 = MustCompute(GiB);
  CHECK(v1.missed_writes == Area{});
  const MemberGeometry g = MustCompute(GiB, {}, kFormatVersion2);
  CHECK(g.bitmap == Area{8 * KiB, 4 * KiB});
  CHECK(g.missed_writes == Area{12 * KiB, 4 * KiB});
  CHECK(g.table == Area{16 * KiB, MiB});
  // The extra page fits in the padding before the 1 MiB boundary: the data area is version 1's.
  CHECK(g.data == v1.data);
  CheckInvariants(g);

  const MemberGeometry tib = MustCompute(TiB, {}, kFormatVersion2);
  CHECK(tib.bitmap == Area{8 * KiB, 32 * KiB});
  CHECK(tib.missed_writes == Area{40 * KiB, 32 * KiB});
  CHECK(tib.table == Area{72 * KiB, GiB});
  CHECK(tib.data == Area{GiB + MiB, TiB - GiB - MiB});
  CheckInvariants(tib);

  MemberGeometry untouched;
  const Status status = ComputeGeometry(GiB, {}, 3, &untouched);
  CHECK(status.err() == EINVAL);
  CHECK(status.message() == "unknown member format version 3");
  CHECK(untouched == MemberGeometry{});
}

TEST_CASE("geometry: version 2 members from the smallest to the largest") {
  for (const FormatParams& params : ParamSets()) {
    const uint64_t smallest = MiB + params.block_size;
    CHECK(MustCompute(smallest, params, kFormatVersion2).data == Area{MiB, params.block_size});
    MemberGeometry g;
    CHECK(ComputeGeometry(smallest - 1, params, kFormatVersion2, &g).err() == EINVAL);
    CheckInvariants(MustCompute(kMaxMemberSize, params, kFormatVersion2));
  }
  std::mt19937_64 random(43);
  for (const FormatParams& params : ParamSets()) {
    for (int i = 0; i < 1000; ++i) {
      const uint64_t size = random() % (i % 2 ? 300 * MiB : 4 * TiB);
      MemberGeometry g;
      CAPTURE(size);
      const Status status = ComputeGeometry(size, params, kFormatVersion2, &g);
      CHECK(status.ok() == (size >= MiB + params.block_size));
      if (status.ok()) CheckInvariants(g);
    }
  }
}

TEST_CASE("geometry: BLAKE2b entries are 32 bytes, eight times the table") {
  const MemberGeometry g = MustCompute(GiB, {4096, 4 * MiB, ChecksumAlgorithm::kBlake2b});
  CHECK(g.entry_size() == 32);
  CHECK(g.table == Area{12 * KiB, 8 * MiB});  // 262142 * 32 = 8388544, padded
  CHECK(g.data.offset == 9 * MiB);
  CheckInvariants(g);
}

TEST_CASE("geometry: the smallest member holds exactly one block") {
  for (const FormatParams& params : ParamSets()) {
    const uint64_t smallest = MiB + params.block_size;
    const MemberGeometry g = MustCompute(smallest, params);
    CHECK(g.data == Area{MiB, params.block_size});
    CheckInvariants(g);

    MemberGeometry untouched;
    const Status status = ComputeGeometry(smallest - 1, params, &untouched);
    CHECK(status.err() == EINVAL);
    CHECK(status.message().find("too small") != std::string::npos);
    CHECK(status.message().find(FormatSize(smallest)) != std::string::npos);
    CHECK(untouched == MemberGeometry{});
  }
}

TEST_CASE("geometry: tiny members are refused with a clear error") {
  for (uint64_t size :
       {uint64_t{0}, uint64_t{1}, 4 * KiB, 8 * KiB - 1, 8 * KiB, 8 * KiB + 1, 512 * KiB, MiB}) {
    CAPTURE(size);
    MemberGeometry g;
    const Status status = ComputeGeometry(size, {}, &g);
    CHECK(status.err() == EINVAL);
    CHECK(status.message().find("too small for the member format") != std::string::npos);
  }
}

TEST_CASE("geometry: sizes that are not a multiple of the block size drop the partial block") {
  for (uint64_t extra : {uint64_t{1}, uint64_t{511}, uint64_t{4095}}) {
    const MemberGeometry g = MustCompute(GiB + extra);
    CHECK(g.data.end() == GiB);
    CheckInvariants(g);
  }
}

TEST_CASE("geometry: 1 TiB and the largest member compute without overflow") {
  const MemberGeometry tib = MustCompute(TiB);
  // 262144 regions: a 32 KiB bitmap. (1 TiB - 8 KiB) / 4 KiB blocks * 4 bytes, padded: 1 GiB of
  // table; the data area starts at the next MiB.
  CHECK(tib.bitmap == Area{8 * KiB, 32 * KiB});
  CHECK(tib.table == Area{40 * KiB, GiB});
  CHECK(tib.data == Area{GiB + MiB, TiB - GiB - MiB});
  CheckInvariants(tib);

  for (const FormatParams& params : ParamSets()) {
    CheckInvariants(MustCompute(TiB + 12345, params));
    CheckInvariants(MustCompute(kMaxMemberSize, params));
  }
  MemberGeometry g;
  CHECK(ComputeGeometry(kMaxMemberSize + 1, {}, &g).err() == EINVAL);
  CHECK(ComputeGeometry(UINT64_MAX, {}, &g).err() == EINVAL);
}

TEST_CASE("geometry: invariants hold for random sizes around the alignment boundaries") {
  std::mt19937_64 random(42);
  for (const FormatParams& params : ParamSets()) {
    for (int i = 0; i < 2000; ++i) {
      // Mostly small sizes, where the metadata crosses 1 MiB boundaries.
      const uint64_t size = random() % (i % 2 ? 300 * MiB : 4 * TiB);
      MemberGeometry g;
      const Status status = ComputeGeometry(size, params, &g);
      CAPTURE(size);
      CHECK(status.ok() == (size >= MiB + params.block_size));
      if (status.ok()) CheckInvariants(g);
    }
  }
}

TEST_CASE("geometry: invalid parameters are refused, naming the value") {
  MemberGeometry g;
  auto refused = [&](FormatParams params, const char* text) {
    const Status status = ComputeGeometry(GiB, params, &g);
    CHECK(status.err() == EINVAL);
    CHECK_MESSAGE(status.message().find(text) != std::string::npos, status.message());
  };
  refused({1000, 4 * MiB, ChecksumAlgorithm::kCrc32c}, "block size 1000 B");
  refused({256, 4 * MiB, ChecksumAlgorithm::kCrc32c}, "block size 256 B");
  refused({128 * 1024, 4 * MiB, ChecksumAlgorithm::kCrc32c}, "block size 128 KiB");
  refused({4096, 2048, ChecksumAlgorithm::kCrc32c}, "region size 2 KiB");
  refused({4096, 3 * MiB, ChecksumAlgorithm::kCrc32c}, "region size 3 MiB");
  refused({4096, 2 * GiB, ChecksumAlgorithm::kCrc32c}, "region size 2 GiB");
  refused({4096, 4 * MiB, static_cast<ChecksumAlgorithm>(9)}, "unknown checksum algorithm 9");
}

TEST_CASE("geometry: table entries are located by block, page by page") {
  const MemberGeometry crc = MustCompute(GiB);
  const TableEntryLocation first = LocateTableEntry(crc, 0);
  CHECK(first.member_offset == crc.table.offset);
  CHECK(first.page_offset == crc.table.offset);
  CHECK(first.offset_in_page == 0);
  CHECK(first.size == 4);
  const TableEntryLocation last_in_page = LocateTableEntry(crc, 1023);
  CHECK(last_in_page.page_offset == crc.table.offset);
  CHECK(last_in_page.offset_in_page == 4092);
  const TableEntryLocation next_page = LocateTableEntry(crc, 1024);
  CHECK(next_page.page_offset == crc.table.offset + 4096);
  CHECK(next_page.offset_in_page == 0);
  const TableEntryLocation last = LocateTableEntry(crc, crc.data_blocks() - 1);
  CHECK(last.member_offset + last.size <= crc.table.end());

  const MemberGeometry blake = MustCompute(GiB, {4096, 4 * MiB, ChecksumAlgorithm::kBlake2b});
  const TableEntryLocation b = LocateTableEntry(blake, 130);  // 128 entries per page
  CHECK(b.size == 32);
  CHECK(b.page_offset == blake.table.offset + 4096);
  CHECK(b.offset_in_page == 64);
}

TEST_CASE("geometry: bitmap bits are little-endian within a byte") {
  const MemberGeometry g = MustCompute(GiB);
  const BitmapBit zero = LocateBitmapBit(g, 0);
  CHECK(zero.region == 0);
  CHECK(zero.member_offset == g.bitmap.offset);
  CHECK(zero.page_offset == g.bitmap.offset);
  CHECK(zero.mask == 0x01);
  const BitmapBit nine = LocateBitmapBit(g, 9 * 4 * MiB + 5);
  CHECK(nine.region == 9);
  CHECK(nine.member_offset == g.bitmap.offset + 1);
  CHECK(nine.mask == 0x02);
  const BitmapBit end = LocateBitmapBit(g, g.data.size - 1);
  CHECK(end.region == g.regions() - 1);
  CHECK(end.member_offset < g.bitmap.end());
  CHECK(LocateBitmapBit(g, 4 * MiB - 1).region == 0);
  CHECK(LocateBitmapBit(g, 7 * 4 * MiB).mask == 0x80);
}

TEST_CASE("geometry: missed-write bits are numbered as the bitmap's, in their own area") {
  const MemberGeometry g = MustCompute(GiB, {}, kFormatVersion2);
  for (uint64_t offset : {uint64_t{0}, 9 * 4 * MiB + 5, 7 * 4 * MiB, g.data.size - 1}) {
    const BitmapBit intent = LocateBitmapBit(g, offset);
    const BitmapBit missed = LocateMissedWriteBit(g, offset);
    CHECK(missed.region == intent.region);
    CHECK(missed.mask == intent.mask);
    CHECK(missed.member_offset == intent.member_offset - g.bitmap.offset + g.missed_writes.offset);
    CHECK(missed.page_offset == missed.member_offset / 4096 * 4096);
    CHECK(missed.member_offset < g.missed_writes.end());
  }
}

}  // namespace
}  // namespace dst::integrity::member_format_test
