// Volume dispatch against in-memory members: requests are split, run on the
// right members at the right offsets, reassembled in order, and their errors
// and fallbacks are what the volume promises. Members complete I/O later,
// in reverse submission order, as real ones may.
#include "aggregator/volume/volume.h"

#include <cerrno>
#include <random>

#include <doctest/doctest.h>

using namespace dst::volume;

namespace {

class MemoryMember : public MemberTarget {
 public:
  MemoryMember(uint64_t size, MemberCapabilities caps = {}) : bytes_(size, 0), name_("mem") {
    caps_ = caps;
    caps_.size = size;
  }
  const MemberCapabilities& capabilities() const override { return caps_; }
  const std::string& name() const override { return name_; }
  void Submit(std::shared_ptr<MemberIo> io) override { pending_.push_back(std::move(io)); }

  // Runs every pending I/O, newest first, as a member's completions may reorder.
  size_t RunAll() {
    size_t n = 0;
    while (!pending_.empty()) {
      auto io = pending_.back();
      pending_.pop_back();
      Execute(*io);
      ++n;
    }
    return n;
  }
  std::vector<uint8_t> bytes_;
  std::vector<MemberOp> ops_;
  int fail_with_ = 0;

 private:
  void Execute(MemberIo& io) {
    ops_.push_back(io.op);
    REQUIRE(io.offset + io.length <= bytes_.size());
    if (io.op == MemberOp::kRead || io.op == MemberOp::kWrite)
      REQUIRE(io.length <= caps_.max_request);
    switch (io.op) {
      case MemberOp::kRead:
        std::copy_n(bytes_.begin() + io.offset, io.length, io.data);
        break;
      case MemberOp::kWrite:
        std::copy_n(io.data, io.length, bytes_.begin() + io.offset);
        break;
      case MemberOp::kTrim:
      case MemberOp::kZero:
        std::fill_n(bytes_.begin() + io.offset, io.length, 0);
        break;
      case MemberOp::kBlockStatus:
        io.extents.push_back({io.length, 3});
        break;
      default:
        break;
    }
    io.done(fail_with_);
  }
  std::vector<std::shared_ptr<MemberIo>> pending_;
  MemberCapabilities caps_;
  std::string name_;
};

struct Fixture {
  std::vector<std::unique_ptr<MemoryMember>> members;
  std::unique_ptr<Volume> volume;

  Fixture(LayoutKind kind, std::vector<uint64_t> sizes, uint64_t chunk,
          MemberCapabilities caps = {}) {
    std::vector<MemberTarget*> targets;
    for (uint64_t s : sizes) {
      members.push_back(std::make_unique<MemoryMember>(s, caps));
      targets.push_back(members.back().get());
    }
    REQUIRE(Volume::Create("v", "", kind, chunk, targets, &volume).ok());
  }
  void RunAll() {
    for (auto& m : members)
      m->RunAll();
  }
};

}  // namespace

TEST_CASE("random writes and reads through a striped volume equal a flat model") {
  MemberCapabilities caps;
  caps.max_request = 8192;  // forces splitting inside chunks as well
  Fixture f(LayoutKind::kStripe, {1 << 20, 1 << 20, 1 << 20}, 16384, caps);
  std::vector<uint8_t> model(f.volume->size(), 0);
  std::mt19937_64 rng(42);
  for (int i = 0; i < 300; ++i) {
    const uint64_t offset = rng() % model.size();
    const uint64_t length = 1 + rng() % std::min<uint64_t>(100000, model.size() - offset);
    std::vector<uint8_t> data(length);
    for (auto& b : data)
      b = static_cast<uint8_t>(rng());
    int write_err = -1;
    f.volume->Write(offset, length, data.data(), false, [&](int err) { write_err = err; });
    CHECK(write_err == -1);  // never completes inside the call
    f.RunAll();
    REQUIRE(write_err == 0);
    std::copy(data.begin(), data.end(), model.begin() + offset);

    const uint64_t roff = rng() % model.size();
    const uint64_t rlen = 1 + rng() % std::min<uint64_t>(100000, model.size() - roff);
    std::vector<uint8_t> back(rlen);
    int read_err = -1;
    f.volume->ReadData(roff, rlen, back.data(), [&](int err) { read_err = err; });
    f.RunAll();
    REQUIRE(read_err == 0);
    REQUIRE(std::equal(back.begin(), back.end(), model.begin() + roff));
  }
}

TEST_CASE("the first member error fails the whole request once") {
  Fixture f(LayoutKind::kLinear, {4096, 4096}, 0);
  f.members[1]->fail_with_ = EIO;
  std::vector<uint8_t> buf(8192);
  int calls = 0, result = 0;
  f.volume->ReadData(0, 8192, buf.data(), [&](int err) {
    ++calls;
    result = err;
  });
  f.RunAll();
  CHECK(calls == 1);
  CHECK(result == EIO);
}

TEST_CASE("flush goes to every member and completes after all of them") {
  MemberCapabilities caps;
  caps.can_flush = true;
  Fixture f(LayoutKind::kLinear, {4096, 4096, 4096}, 0, caps);
  int result = -1;
  f.volume->Flush([&](int err) { result = err; });
  f.members[0]->RunAll();
  f.members[1]->RunAll();
  CHECK(result == -1);
  f.members[2]->RunAll();
  CHECK(result == 0);
  for (auto& m : f.members)
    CHECK(m->ops_ == std::vector<MemberOp>{MemberOp::kFlush});
}

TEST_CASE("write zeroes falls back to writes, but not when the client asked for fast") {
  MemberCapabilities caps;  // can_zero = false
  Fixture f(LayoutKind::kLinear, {3u << 20}, 0, caps);
  std::fill(f.members[0]->bytes_.begin(), f.members[0]->bytes_.end(), 0xaa);
  CHECK_FALSE(f.volume->capabilities().can_fast_zero);
  int result = -1;
  f.volume->Zero(100, (2u << 20) + 5, true, /*fast_only=*/true, false, [&](int e) { result = e; });
  f.RunAll();
  CHECK(result == ENOTSUP);
  CHECK(f.members[0]->bytes_[100] == 0xaa);
  f.volume->Zero(100, (2u << 20) + 5, true, false, false, [&](int e) { result = e; });
  CHECK(f.members[0]->RunAll() == 3);  // 1 MiB zero buffer: three writes
  CHECK(result == 0);
  CHECK(f.members[0]->bytes_[99] == 0xaa);
  CHECK(f.members[0]->bytes_[100] == 0);
  CHECK(f.members[0]->bytes_[100 + (2u << 20) + 4] == 0);
  CHECK(f.members[0]->bytes_[100 + (2u << 20) + 5] == 0xaa);
}

TEST_CASE("block status joins members in order; members without it report data") {
  MemberCapabilities with;
  with.can_block_status = true;
  std::vector<std::unique_ptr<MemoryMember>> members;
  members.push_back(std::make_unique<MemoryMember>(8192, with));
  members.push_back(std::make_unique<MemoryMember>(8192));  // no base:allocation
  std::unique_ptr<Volume> volume;
  REQUIRE(
      Volume::Create("v", "", LayoutKind::kLinear, 0, {members[0].get(), members[1].get()}, &volume)
          .ok());
  std::vector<AllocationExtent> got;
  int result = -1;
  volume->BlockStatus(4096, 8192, [&](int err, std::vector<AllocationExtent> e) {
    result = err;
    got = std::move(e);
  });
  for (auto& m : members)
    m->RunAll();
  CHECK(result == 0);
  REQUIRE(got.size() == 2);
  CHECK((got[0].length == 4096 && got[0].flags == 3));
  CHECK((got[1].length == 4096 && got[1].flags == 0));
}

TEST_CASE("capabilities are derived from the members") {
  MemberCapabilities ro;
  ro.read_only = true;
  ro.min_block = 512;
  ro.can_trim = true;
  std::vector<std::unique_ptr<MemoryMember>> members;
  members.push_back(std::make_unique<MemoryMember>(4096, ro));
  members.push_back(std::make_unique<MemoryMember>(4096));
  std::unique_ptr<Volume> volume;
  REQUIRE(
      Volume::Create("v", "", LayoutKind::kLinear, 0, {members[0].get(), members[1].get()}, &volume)
          .ok());
  CHECK(volume->capabilities().read_only);
  CHECK(volume->capabilities().can_trim);
  CHECK(volume->capabilities().min_block == 512);
  CHECK_FALSE(volume->capabilities().can_block_status);
}

TEST_CASE("FUA on a member without FUA becomes write then flush") {
  MemberCapabilities caps;
  caps.can_flush = true;  // can_fua = false
  Fixture f(LayoutKind::kLinear, {8192}, 0, caps);
  std::vector<uint8_t> data(4096, 7);
  int result = -1;
  f.volume->Write(0, 4096, data.data(), /*fua=*/true, [&](int e) { result = e; });
  f.RunAll();
  CHECK(result == 0);
  CHECK(f.members[0]->ops_ == std::vector<MemberOp>{MemberOp::kWrite, MemberOp::kFlush});
}
