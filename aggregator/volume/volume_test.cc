// Volume dispatch against in-memory members: requests are split, run on the
// right members at the right offsets, reassembled in order, and their errors
// and fallbacks are what the volume promises. Members complete I/O later, in
// an order the test chooses, as real ones may; they refuse I/O that is not
// aligned to their minimum block, or longer than their maximum, as libnbd
// does. Huge requests are checked for how many member I/Os they become and
// how many of those are in flight at once.
#include "aggregator/volume/volume.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <deque>
#include <random>
#include <string>

#include <doctest/doctest.h>

using namespace dst::volume;

namespace {

constexpr uint64_t KiB = 1024;
constexpr uint64_t MiB = 1024 * KiB;
constexpr uint64_t GiB = 1024 * MiB;

// Member I/Os in flight across a volume's members, and the most seen at once.
struct InFlight {
  size_t now = 0;
  size_t most = 0;
};

class MemoryMember : public MemberTarget {
 public:
  // `store`: keep the bytes (false for members of many GiB, whose reads
  // return zeros and whose writes are only counted).
  MemoryMember(uint64_t size, MemberCapabilities caps = {}, bool store = true,
               InFlight* in_flight = nullptr)
      : bytes_(store ? size : 0, 0), name_("mem"), in_flight_(in_flight ? in_flight : &own_) {
    caps_ = caps;
    caps_.size = size;
  }
  const MemberCapabilities& capabilities() const override { return caps_; }
  const std::string& name() const override { return name_; }
  void Submit(std::shared_ptr<MemberIo> io) override {
    pending_.push_back(std::move(io));
    in_flight_->most = std::max(in_flight_->most, ++in_flight_->now);
  }

  // Runs every pending I/O, newest first, as a member's completions may reorder.
  size_t RunAll() {
    size_t n = 0;
    while (!pending_.empty()) {
      RunNewest();
      ++n;
    }
    return n;
  }
  void RunNewest() {
    auto io = pending_.back();
    pending_.pop_back();
    Execute(*io);
  }
  void RunOldest() {
    auto io = pending_.front();
    pending_.pop_front();
    Execute(*io);
  }
  size_t pending() const { return pending_.size(); }
  const MemberIo& pending(size_t i) const { return *pending_[i]; }

  std::vector<uint8_t> bytes_;
  std::vector<MemberOp> ops_;
  std::vector<std::pair<uint64_t, uint64_t>> ranges_;  // (offset, length) of each I/O run
  int fail_with_ = 0;
  size_t fail_at_ = SIZE_MAX;           // fails the I/O with this index in ops_ with EIO
  uint32_t status_flags_ = 3;           // what block status reports (HOLE | ZERO)
  uint64_t status_limit_ = UINT64_MAX;  // block status answers at most this many bytes
  const std::string failure_ = "member mem: gave up";

 private:
  void Execute(MemberIo& io) {
    --in_flight_->now;
    const size_t index = ops_.size();
    ops_.push_back(io.op);
    ranges_.emplace_back(io.offset, io.length);
    REQUIRE(io.offset + io.length <= caps_.size);
    if (io.op != MemberOp::kFlush) {
      REQUIRE_MESSAGE(io.offset % caps_.min_block == 0, "unaligned offset ", io.offset);
      REQUIRE_MESSAGE(io.length % caps_.min_block == 0, "unaligned length ", io.length);
      REQUIRE(io.length > 0);
    }
    if (io.op == MemberOp::kRead || io.op == MemberOp::kWrite)
      REQUIRE(io.length <= caps_.max_request);
    int err = index == fail_at_ ? EIO : fail_with_;
    if (err == 0) Apply(io);
    if (err != 0) io.failure = failure_;
    io.done(err);
  }
  void Apply(MemberIo& io) {
    const bool stored = !bytes_.empty();
    switch (io.op) {
      case MemberOp::kRead:
        if (stored)
          std::copy_n(bytes_.begin() + io.offset, io.length, io.data);
        else
          std::fill_n(io.data, io.length, 0);
        break;
      case MemberOp::kWrite:
        if (stored) std::copy_n(io.data, io.length, bytes_.begin() + io.offset);
        break;
      case MemberOp::kTrim:
      case MemberOp::kZero:
        if (stored) std::fill_n(bytes_.begin() + io.offset, io.length, 0);
        break;
      case MemberOp::kBlockStatus:
        io.extents.push_back({std::min(io.length, status_limit_), status_flags_});
        break;
      default:
        break;
    }
  }
  std::deque<std::shared_ptr<MemberIo>> pending_;
  MemberCapabilities caps_;
  std::string name_;
  InFlight own_;
  InFlight* in_flight_;
};

struct Fixture {
  std::vector<std::unique_ptr<MemoryMember>> members;
  std::unique_ptr<Volume> volume;
  InFlight in_flight;

  Fixture(LayoutKind kind, std::vector<uint64_t> sizes, uint64_t chunk,
          MemberCapabilities caps = {}, bool store = true) {
    std::vector<MemberTarget*> targets;
    for (uint64_t s : sizes) {
      members.push_back(std::make_unique<MemoryMember>(s, caps, store, &in_flight));
      targets.push_back(members.back().get());
    }
    const dst::Status status = Volume::Create("v", "", kind, chunk, targets, &volume);
    REQUIRE_MESSAGE(status.ok(), status.message());
  }
  // Runs pending I/Os, each member's newest first, until none is left (a
  // completion may start more: a merge writes what it has read).
  void RunAll() {
    for (size_t n = 1; n > 0;) {
      n = 0;
      for (auto& m : members)
        n += m->RunAll();
    }
  }
  // Completes the oldest pending I/O of each member in turn until none is
  // left, checking the in-flight bound all along. Returns the I/Os run.
  size_t RunInOrder() {
    size_t n = 0;
    for (bool any = true; any;) {
      any = false;
      for (auto& m : members) {
        if (m->pending() == 0) continue;
        m->RunOldest();
        ++n;
        any = true;
      }
    }
    return n;
  }
  size_t IoCount() const {
    size_t n = 0;
    for (const auto& m : members)
      n += m->ops_.size();
    return n;
  }
};

MemberCapabilities Capable() {
  MemberCapabilities caps;
  caps.can_flush = caps.can_fua = caps.can_trim = caps.can_zero = caps.can_fast_zero =
      caps.can_cache = caps.can_block_status = true;
  return caps;
}

// What the process writes to stderr while it lives (the log).
class StderrCapture {
 public:
  StderrCapture() {
    std::fflush(stderr);
    saved_ = dup(STDERR_FILENO);
    char path[] = "/tmp/volume_test_stderr_XXXXXX";
    fd_ = mkstemp(path);
    unlink(path);
    dup2(fd_, STDERR_FILENO);
  }
  ~StderrCapture() { Restore(); }
  std::string Text() {
    Restore();
    std::string text;
    char buf[4096];
    for (off_t at = 0;;) {
      const ssize_t n = pread(fd_, buf, sizeof buf, at);
      if (n <= 0) break;
      text.append(buf, static_cast<size_t>(n));
      at += n;
    }
    return text;
  }

 private:
  void Restore() {
    if (saved_ < 0) return;
    std::fflush(stderr);
    dup2(saved_, STDERR_FILENO);
    close(saved_);
    saved_ = -1;
  }
  int saved_ = -1;
  int fd_ = -1;
};

size_t CountOf(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1))
    ++n;
  return n;
}

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

TEST_CASE("the first member error fails the whole request once, with one log line") {
  Fixture f(LayoutKind::kLinear, {4096, 4096}, 0);
  f.members[1]->fail_with_ = EIO;
  std::vector<uint8_t> buf(8192);
  int calls = 0, result = 0;
  StderrCapture log;
  f.volume->ReadData(0, 8192, buf.data(), [&](int err) {
    ++calls;
    result = err;
  });
  f.RunAll();
  CHECK(calls == 1);
  CHECK(result == EIO);
  const std::string text = log.Text();
  CHECK(CountOf(text, "\n") == 1);
  CHECK(CountOf(text,
                "volume v: read of 8192 bytes at volume offset 0 failed: member mem: gave "
                "up") == 1);
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

TEST_CASE("layouts that would cut a member's minimum block are refused") {
  MemberCapabilities caps;
  caps.min_block = 4096;
  MemoryMember a(1 * MiB, caps, false), b(1 * MiB, caps, false);
  std::unique_ptr<Volume> volume;
  dst::Status status = Volume::Create("v", "", LayoutKind::kStripe, 2048, {&a, &b}, &volume);
  CHECK(status.err() == EINVAL);
  CHECK(status.message() ==
        "volume v: chunk size 2048 is not a multiple of the members' minimum block size 4096");
  CHECK(Volume::Create("v", "", LayoutKind::kStripe, 4096, {&a, &b}, &volume).ok());

  MemoryMember odd(1000, {}, false);  // minimum block 1
  status = Volume::Create("v", "", LayoutKind::kLinear, 0, {&odd, &a}, &volume);
  CHECK(status.message() ==
        "volume v: member 1 starts at volume offset 1000, not a multiple of the members' minimum "
        "block size 4096");
  CHECK(Volume::Create("v", "", LayoutKind::kLinear, 0, {&a, &odd}, &volume).ok());
}

// ---------------------------------------------------------------------------
// Huge requests: coalesced per member, bounded in flight.

TEST_CASE("a 4 GiB trim, zero or cache on a 64 KiB stripe is 4 member I/Os, not 65,536") {
  // The audit's request: 0xFFFF0000 bytes on two 4 GiB members.
  Fixture f(LayoutKind::kStripe, {4 * GiB, 4 * GiB}, 64 * KiB, Capable(), /*store=*/false);
  for (MemberOp op : {MemberOp::kTrim, MemberOp::kZero, MemberOp::kCache}) {
    CAPTURE(MemberOpName(op));
    for (auto& m : f.members) {
      m->ops_.clear();
      m->ranges_.clear();
    }
    int result = -1;
    const auto done = [&](int err) { result = err; };
    if (op == MemberOp::kTrim) f.volume->Trim(0, 0xFFFF0000, false, done);
    if (op == MemberOp::kZero) f.volume->Zero(0, 0xFFFF0000, true, false, false, done);
    if (op == MemberOp::kCache) f.volume->Cache(0, 0xFFFF0000, done);
    CHECK(f.RunInOrder() == 4);
    CHECK(result == 0);
    // Member 0 holds the even chunks (2 GiB), member 1 the odd ones (2 GiB - 64 KiB), each as
    // one run from offset 0, in pieces of at most 1 GiB.
    using Ranges = std::vector<std::pair<uint64_t, uint64_t>>;
    CHECK(f.members[0]->ranges_ == Ranges{{0, 1 * GiB}, {1 * GiB, 1 * GiB}});
    CHECK(f.members[1]->ranges_ == Ranges{{0, 1 * GiB}, {1 * GiB, 1 * GiB - 64 * KiB}});
    CHECK(f.members[0]->ops_ == std::vector<MemberOp>{op, op});
  }
}

TEST_CASE("a 32 MiB read from a member with a 512-byte maximum: 65,536 reads, 64 in flight") {
  // The audit's W16: a member advertising 512/512/512.
  MemberCapabilities tiny;
  tiny.min_block = 512;
  tiny.max_request = 512;
  Fixture f(LayoutKind::kLinear, {64 * MiB}, 0, tiny);
  std::mt19937_64 rng(16);
  for (auto& b : f.members[0]->bytes_)
    b = static_cast<uint8_t>(rng());
  std::vector<uint8_t> buf(32 * MiB);
  int result = -1;
  f.volume->ReadData(512, 32 * MiB, buf.data(), [&](int err) { result = err; });
  CHECK(f.members[0]->pending() == Volume::kRequestWindow);
  CHECK(f.RunInOrder() == 65536);
  CHECK(f.in_flight.most == Volume::kRequestWindow);
  CHECK(result == 0);
  CHECK(std::equal(buf.begin(), buf.end(), f.members[0]->bytes_.begin() + 512));
}

TEST_CASE("the window bounds one request across all its members") {
  MemberCapabilities small;
  small.max_request = 4096;
  Fixture f(LayoutKind::kStripe, {8 * MiB, 8 * MiB, 8 * MiB}, 64 * KiB, small);
  std::vector<uint8_t> data(16 * MiB, 5);
  int result = -1;
  f.volume->Write(4096, data.size(), data.data(), false, [&](int err) { result = err; });
  CHECK(f.in_flight.now == Volume::kRequestWindow);
  CHECK(f.RunInOrder() == 16 * MiB / 4096);
  CHECK(f.in_flight.most == Volume::kRequestWindow);
  CHECK(result == 0);
}

TEST_CASE("writing zeros where a member cannot zero is windowed too") {
  MemberCapabilities no_zero;
  no_zero.can_zero = false;
  Fixture f(LayoutKind::kStripe, {4 * GiB, 4 * GiB}, 64 * KiB, no_zero, /*store=*/false);
  int result = -1;
  f.volume->Zero(0, 0xFFFF0000, true, false, false, [&](int err) { result = err; });
  CHECK(f.RunInOrder() == 4096);  // 4 GiB - 64 KiB in 1 MiB writes
  CHECK(f.in_flight.most == Volume::kRequestWindow);
  CHECK(result == 0);
  for (const auto& m : f.members)
    for (MemberOp op : m->ops_)
      REQUIRE(op == MemberOp::kWrite);
}

TEST_CASE("after a failed part nothing more is sent, and the request leaves one log line") {
  MemberCapabilities tiny;
  tiny.max_request = 512;
  Fixture f(LayoutKind::kLinear, {64 * MiB}, 0, tiny, /*store=*/false);
  f.members[0]->fail_at_ = 9;
  std::vector<uint8_t> buf(32 * MiB);
  int calls = 0, result = 0;
  StderrCapture log;
  f.volume->ReadData(0, 32 * MiB, buf.data(), [&](int err) {
    ++calls;
    result = err;
  });
  // Completing in order: the 10th fails; 9 more had been sent to refill the
  // window before it, none after.
  CHECK(f.RunInOrder() == 9 + Volume::kRequestWindow);
  CHECK(calls == 1);
  CHECK(result == EIO);
  const std::string text = log.Text();
  CHECK(CountOf(text, "\n") == 1);
  CHECK(CountOf(text,
                "volume v: read of 33554432 bytes at volume offset 0 failed: member mem: "
                "gave up\n") == 1);
}

TEST_CASE("each failed part is counted in the request's one line") {
  Fixture f(LayoutKind::kStripe, {1 * MiB, 1 * MiB}, 64 * KiB, Capable());
  f.members[0]->fail_with_ = EIO;
  f.members[1]->fail_with_ = EIO;
  int result = 0;
  StderrCapture log;
  f.volume->Trim(0, 2 * MiB, false, [&](int err) { result = err; });
  f.RunAll();
  CHECK(result == EIO);
  const std::string text = log.Text();
  CHECK(CountOf(text, "\n") == 1);
  CHECK(CountOf(text,
                "volume v: trim of 2097152 bytes at volume offset 0 failed: member mem: gave "
                "up (and 1 more of its member I/Os)") == 1);
}

TEST_CASE("block status asks each member once and lays the answers out chunk by chunk") {
  MemberCapabilities caps = Capable();
  Fixture f(LayoutKind::kStripe, {4 * GiB, 4 * GiB}, 64 * KiB, caps, /*store=*/false);
  f.members[1]->status_flags_ = 0;  // member 1 is data, member 0 holes
  std::vector<AllocationExtent> got;
  int result = -1;
  const auto done = [&](int err, std::vector<AllocationExtent> e) {
    result = err;
    got = std::move(e);
  };
  // An unaligned start within chunk 1, 8 MiB long: member 1's data comes first.
  f.volume->BlockStatus(64 * KiB + 100, 8 * MiB, done);
  CHECK(f.RunInOrder() == 2);
  CHECK(result == 0);
  REQUIRE(got.size() == 129);  // a partial chunk, 127 whole ones, a partial one
  CHECK((got[0].length == 64 * KiB - 100 && got[0].flags == 0));
  CHECK((got[1].length == 64 * KiB && got[1].flags == 3));
  CHECK((got[128].length == 100 && got[128].flags == 0));

  // 4 GiB: two member I/Os, and a reply of kMaxStatusExtents chunks.
  f.volume->BlockStatus(0, 0xFFFF0000, done);
  CHECK(f.RunInOrder() == 2);
  uint64_t covered = 0;
  for (const AllocationExtent& e : got)
    covered += e.length;
  CHECK(got.size() == Volume::kMaxStatusExtents);
  CHECK(covered == Volume::kMaxStatusExtents * 64 * KiB);

  // A member that answers short ends the reply where its answer ends.
  f.members[0]->status_limit_ = 3 * 64 * KiB;
  f.volume->BlockStatus(0, 16 * MiB, done);
  CHECK(f.RunInOrder() == 2);
  CHECK(result == 0);
  CHECK(got.size() == 6);  // chunks 0-5: member 0's three answered chunks and member 1's between
}

// ---------------------------------------------------------------------------
// Unaligned requests on members that need alignment.

TEST_CASE("unaligned requests on 512-byte members equal a flat model") {
  MemberCapabilities caps = Capable();
  caps.min_block = 512;
  caps.max_request = 8192;
  Fixture f(LayoutKind::kStripe, {1 * MiB, 1 * MiB, 1 * MiB}, 4096, caps);
  std::vector<uint8_t> model(f.volume->size(), 0);
  std::mt19937_64 rng(512);
  for (int i = 0; i < 400; ++i) {
    const uint64_t offset = rng() % model.size();
    const uint64_t length = 1 + rng() % std::min<uint64_t>(40000, model.size() - offset);
    int err = -1;
    const auto done = [&](int e) { err = e; };
    std::vector<uint8_t> data(length);
    switch (rng() % 4) {
      case 0:
        for (auto& b : data)
          b = static_cast<uint8_t>(rng() | 1);
        f.volume->Write(offset, length, data.data(), rng() % 2, done);
        std::copy(data.begin(), data.end(), model.begin() + offset);
        break;
      case 1:
        f.volume->Zero(offset, length, rng() % 2, false, false, done);
        std::fill_n(model.begin() + offset, length, 0);
        break;
      case 2: {
        // Only the whole blocks inside are trimmed (these members zero them).
        f.volume->Trim(offset, length, false, done);
        const uint64_t start = (offset + 511) / 512 * 512, end = (offset + length) / 512 * 512;
        if (start < end) std::fill(model.begin() + start, model.begin() + end, 0);
        break;
      }
      default:
        f.volume->ReadData(offset, length, data.data(), done);
        break;
    }
    f.RunAll();
    REQUIRE(err == 0);
    std::vector<uint8_t> back(length);
    f.volume->ReadData(offset, length, back.data(), done);
    f.RunAll();
    REQUIRE(err == 0);
    REQUIRE(std::equal(back.begin(), back.end(), model.begin() + offset));
  }
  std::vector<uint8_t> all(model.size());
  int err = -1;
  f.volume->ReadData(0, all.size(), all.data(), [&](int e) { err = e; });
  f.RunAll();
  CHECK(err == 0);
  CHECK(all == model);
}

TEST_CASE("a 3-byte write reads and writes back its one block") {
  MemberCapabilities caps;
  caps.min_block = 4096;
  Fixture f(LayoutKind::kLinear, {64 * KiB}, 0, caps);
  std::fill(f.members[0]->bytes_.begin(), f.members[0]->bytes_.end(), 0xaa);
  const uint8_t abc[] = {'a', 'b', 'c'};
  int result = -1;
  f.volume->Write(4097, 3, abc, false, [&](int err) { result = err; });
  f.RunAll();
  CHECK(result == 0);
  CHECK(f.members[0]->ops_ == std::vector<MemberOp>{MemberOp::kRead, MemberOp::kWrite});
  using Ranges = std::vector<std::pair<uint64_t, uint64_t>>;
  CHECK(f.members[0]->ranges_ == Ranges{{4096, 4096}, {4096, 4096}});
  CHECK(f.members[0]->bytes_[4096] == 0xaa);
  CHECK(f.members[0]->bytes_[4097] == 'a');
  CHECK(f.members[0]->bytes_[4099] == 'c');
  CHECK(f.members[0]->bytes_[4100] == 0xaa);
}

TEST_CASE("fast zeroing of partial blocks is refused; a trim inside one block does nothing") {
  MemberCapabilities caps = Capable();
  caps.min_block = 512;
  Fixture f(LayoutKind::kLinear, {64 * KiB}, 0, caps);
  int result = -1;
  f.volume->Zero(100, 4096, false, /*fast_only=*/true, false, [&](int e) { result = e; });
  CHECK(result == ENOTSUP);
  result = -1;
  f.volume->Trim(100, 400, false, [&](int e) { result = e; });
  CHECK(result == 0);
  CHECK(f.IoCount() == 0);
}

TEST_CASE("merges of one block from two writers keep both writers' bytes") {
  MemberCapabilities caps;
  caps.min_block = 4096;
  Fixture f(LayoutKind::kLinear, {64 * KiB}, 0, caps);
  const std::vector<uint8_t> one(100, 1), two(100, 2);
  int first = -1, second = -1;
  f.volume->Write(10, 100, one.data(), false, [&](int e) { first = e; });
  f.volume->Write(200, 100, two.data(), false, [&](int e) { second = e; });
  // The second merge waits for the first: only one block read is out.
  CHECK(f.members[0]->pending() == 1);
  f.RunAll();
  CHECK(first == 0);
  CHECK(second == 0);
  CHECK(f.members[0]->bytes_[10] == 1);
  CHECK(f.members[0]->bytes_[109] == 1);
  CHECK(f.members[0]->bytes_[200] == 2);
  CHECK(f.members[0]->bytes_[299] == 2);
}

TEST_CASE("a merge waits for aligned writes in flight, and later ones wait for it") {
  MemberCapabilities caps;
  caps.min_block = 4096;
  Fixture f(LayoutKind::kLinear, {64 * KiB}, 0, caps);
  MemoryMember& m = *f.members[0];
  const std::vector<uint8_t> block(4096, 7), later(4096, 9);
  const uint8_t x = 'x';
  int aligned = -1, merged = -1, after = -1;
  // No merge yet: the aligned write goes out at once, unlocked.
  f.volume->Write(0, 4096, block.data(), false, [&](int e) { aligned = e; });
  REQUIRE(m.pending() == 1);
  // The merge must not read the block before that write is done.
  f.volume->Write(5, 1, &x, false, [&](int e) { merged = e; });
  CHECK(m.pending() == 1);
  m.RunOldest();  // the aligned write
  CHECK(aligned == 0);
  REQUIRE(m.pending() == 1);
  CHECK(m.pending(0).op == MemberOp::kRead);
  // From now on aligned writes lock: this one waits for the merge.
  f.volume->Write(0, 4096, later.data(), false, [&](int e) { after = e; });
  CHECK(m.pending() == 1);
  m.RunOldest();  // the merge's read
  REQUIRE(m.pending() == 1);
  CHECK(m.pending(0).op == MemberOp::kWrite);
  m.RunOldest();  // the merge's write; the later write starts
  CHECK(merged == 0);
  CHECK(m.bytes_[5] == 'x');
  CHECK(m.bytes_[4] == 7);
  REQUIRE(m.pending() == 1);
  m.RunOldest();
  CHECK(after == 0);
  CHECK(m.bytes_[5] == 9);
}
