// MirrorSet over in-memory copies: what reaches which copy, when the set
// acks, which copy a read is served by, and when a copy is demoted. The
// copies complete their I/Os later from the io_context (never inside
// Submit), can hold completions back, and fail the I/Os they are told to.
#include "aggregator/volume/mirror_set.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include <doctest/doctest.h>
#include <asio.hpp>

#include "aggregator/volume/test_member.h"

using namespace dst::volume;

namespace {

constexpr uint64_t KiB = 1024;
constexpr uint64_t MiB = 1024 * KiB;
constexpr int kPending = -1;

// Set while any Submit() of the set under test runs: a `done` that sees it
// was called from inside Submit().
bool in_submit = false;

// A copy: the shared in-memory member, 4 MiB unless told, whose block status
// says HOLE | ZERO, whose injected failures name it, and whose completions
// check that they do not run inside Submit().
class MemCopy final : public testing::MemMember {
 public:
  MemCopy(asio::io_context& io, std::string name, uint64_t size = 4 * MiB,
          MemberCapabilities caps = {})
      : MemMember(io, std::move(name), size, caps) {
    status_flags = 3;
    describe_failures = true;
    before_complete = [](const MemberIo&) { CHECK_FALSE(in_submit); };
  }
};

// The owner of the copies' durable state: records every demotion asked and
// lets the test decide when (and how) it becomes durable.
class FakeHealth final : public SetHealth {
 public:
  struct Demotion {
    uint32_t set;
    uint32_t copy;
    std::string cause;
    std::function<void(int)> durable;
  };
  void Demote(uint32_t set, uint32_t copy, std::string cause,
              std::function<void(int err)> durable) override {
    demotions.push_back({set, copy, std::move(cause), std::move(durable)});
  }
  void Durable(size_t i, int err) {
    auto durable = std::exchange(demotions.at(i).durable, nullptr);
    REQUIRE(durable);
    durable(err);
  }
  std::vector<Demotion> demotions;
};

struct Harness {
  explicit Harness(std::vector<CopyRole> roles, std::vector<uint64_t> cursors = {}) {
    std::vector<CopySetup> setups;
    for (size_t c = 0; c < roles.size(); ++c) {
      copies.push_back(std::make_unique<MemCopy>(io, "nbd://node" + std::to_string(c) + "/d"));
      CopySetup setup;
      setup.target = copies.back().get();
      setup.role = roles[c];
      setup.cursor = c < cursors.size() ? cursors[c] : 0;
      setups.push_back(setup);
    }
    set = std::make_unique<MirrorSet>(io, 3, std::move(setups), &health);
  }

  // An I/O whose errno goes to `result` once done (kPending until then).
  static std::shared_ptr<MemberIo> Make(MemberOp op, uint64_t offset, uint64_t length,
                                        uint8_t* data, int* result) {
    auto io = std::make_shared<MemberIo>();
    io->op = op;
    io->offset = offset;
    io->length = length;
    io->data = data;
    io->done = [result](int err) {
      CHECK_FALSE(in_submit);
      CHECK(*result == kPending);
      *result = err;
    };
    return io;
  }
  void Submit(const std::shared_ptr<MemberIo>& io, int* result) {
    *result = kPending;
    in_submit = true;
    set->Submit(io);
    in_submit = false;
  }
  std::shared_ptr<MemberIo> Start(MemberOp op, uint64_t offset, uint64_t length, uint8_t* data,
                                  int* result) {
    auto io = Make(op, offset, length, data, result);
    Submit(io, result);
    return io;
  }
  // Runs the loop until nothing is left to run.
  void Pump() {
    io.restart();
    io.poll();
  }
  MemCopy& copy(size_t c) { return *copies[c]; }

  asio::io_context io;
  FakeHealth health;
  std::vector<std::unique_ptr<MemCopy>> copies;
  std::unique_ptr<MirrorSet> set;
};

std::vector<uint8_t> Pattern(size_t size, uint8_t seed) {
  std::vector<uint8_t> out(size);
  for (size_t i = 0; i < size; ++i)
    out[i] = static_cast<uint8_t>(seed + i * 7 + (i >> 9));
  return out;
}

}  // namespace

TEST_CASE("mirror set: a write reaches every current and catching-up copy with the same bytes") {
  Harness h({CopyRole::kCurrent, CopyRole::kCatchingUp, CopyRole::kCurrent, CopyRole::kOut});
  auto data = Pattern(64 * KiB, 5);
  int result;
  auto io = h.Start(MemberOp::kWrite, 128 * KiB, data.size(), data.data(), &result);
  h.Pump();
  CHECK(result == 0);
  for (size_t c : {0, 1, 2}) {
    CAPTURE(c);
    REQUIRE(h.copy(c).log.size() == 1);
    CHECK(h.copy(c).log[0].data == data.data());  // the one buffer, not a copy of it
    CHECK(std::equal(data.begin(), data.end(), h.copy(c).bytes.begin() + 128 * KiB));
  }
  CHECK(h.copy(3).log.empty());
  CHECK(h.health.demotions.empty());
}

TEST_CASE("mirror set: TRIM, WRITE_ZEROES and FLUSH go to every written copy with their flags") {
  Harness h({CopyRole::kCurrent, CopyRole::kCurrent});
  int result;
  auto io = Harness::Make(MemberOp::kZero, 4 * KiB, 8 * KiB, nullptr, &result);
  io->fua = true;
  io->may_trim = true;
  h.copy(0).HoldAll();
  h.copy(1).HoldAll();
  h.Submit(io, &result);
  h.Pump();
  for (size_t c : {0, 1})
    REQUIRE(h.copy(c).held() == 1);
  h.copy(0).StopHolding();
  h.copy(1).StopHolding();
  h.Pump();
  CHECK(result == 0);
  h.Start(MemberOp::kTrim, 0, 4 * KiB, nullptr, &result);
  h.Pump();
  CHECK(result == 0);
  h.Start(MemberOp::kFlush, 0, 0, nullptr, &result);
  h.Pump();
  CHECK(result == 0);
  for (size_t c : {0, 1}) {
    CHECK(h.copy(c).Count(MemberOp::kZero) == 1);
    CHECK(h.copy(c).Count(MemberOp::kTrim) == 1);
    CHECK(h.copy(c).Count(MemberOp::kFlush) == 1);
  }
}

TEST_CASE("mirror set: the ack waits for every copy") {
  Harness h({CopyRole::kCurrent, CopyRole::kCurrent, CopyRole::kCatchingUp});
  auto data = Pattern(4 * KiB, 1);
  h.copy(1).HoldAll();
  h.copy(2).HoldAll();
  int result;
  h.Start(MemberOp::kWrite, 0, data.size(), data.data(), &result);
  h.Pump();
  CHECK(result == kPending);  // copy 0 answered, copy 1 (current) has not
  h.copy(1).StopHolding();
  h.Pump();
  CHECK(result == kPending);  // the catching-up copy has not answered either
  h.copy(2).StopHolding();
  h.Pump();
  CHECK(result == 0);
}

TEST_CASE("mirror set: a failing current copy is demoted once and the write waits until durable") {
  Harness h({CopyRole::kCurrent, CopyRole::kCurrent});
  auto a = Pattern(4 * KiB, 1);
  auto b = Pattern(4 * KiB, 2);
  h.copy(1).FailNext(2);
  int ra, rb;
  h.Start(MemberOp::kWrite, 0, a.size(), a.data(), &ra);
  h.Start(MemberOp::kWrite, 8 * KiB, b.size(), b.data(), &rb);
  h.Pump();
  // Both writes failed on copy 1: one demotion, both writes held for it.
  REQUIRE(h.health.demotions.size() == 1);
  CHECK(h.health.demotions[0].set == 3);
  CHECK(h.health.demotions[0].copy == 1);
  CHECK(h.health.demotions[0].cause.find("nbd://node1/d") != std::string::npos);
  CHECK(ra == kPending);
  CHECK(rb == kPending);
  // Out of reads and writes at once, before the demotion is durable.
  CHECK(h.set->role(1) == CopyRole::kOut);
  CHECK(h.set->Health() == "U_");
  CHECK(h.set->current_copies() == 1);
  int rc;
  h.Start(MemberOp::kWrite, 16 * KiB, a.size(), a.data(), &rc);
  h.Pump();
  CHECK(rc == 0);
  CHECK(h.copy(1).Count(MemberOp::kWrite) == 2);
  h.health.Durable(0, 0);
  CHECK(ra == 0);
  CHECK(rb == 0);
  CHECK(std::equal(b.begin(), b.end(), h.copy(0).bytes.begin() + 8 * KiB));
}

TEST_CASE("mirror set: a write fails with the error that kept the demotion from being durable") {
  Harness h({CopyRole::kCurrent, CopyRole::kCurrent});
  auto a = Pattern(4 * KiB, 1);
  h.copy(0).FailNext(1);
  int result;
  auto io = h.Start(MemberOp::kWrite, 0, a.size(), a.data(), &result);
  h.Pump();
  REQUIRE(h.health.demotions.size() == 1);
  CHECK(h.health.demotions[0].copy == 0);
  CHECK(result == kPending);
  h.health.Durable(0, EROFS);
  CHECK(result == EROFS);
  CHECK(io->failure.find("nbd://node0/d") != std::string::npos);
  CHECK(io->failure.find("durable") != std::string::npos);
}

TEST_CASE("mirror set: the last current copy is never demoted; the I/O fails with its errno") {
  SUBCASE("one current copy left") {
    Harness h({CopyRole::kCurrent, CopyRole::kOut});
    auto a = Pattern(4 * KiB, 1);
    h.copy(0).FailNext(1, ENOSPC);
    int result;
    auto io = h.Start(MemberOp::kWrite, 0, a.size(), a.data(), &result);
    h.Pump();
    CHECK(result == ENOSPC);
    CHECK(io->failure.find("nbd://node0/d") != std::string::npos);
    CHECK(h.health.demotions.empty());
    CHECK(h.set->role(0) == CopyRole::kCurrent);
    CHECK(h.set->Health() == "U_");
  }
  SUBCASE("both copies fail one write: the first is demoted, the second stays") {
    Harness h({CopyRole::kCurrent, CopyRole::kCurrent});
    auto a = Pattern(4 * KiB, 1);
    h.copy(0).FailNext(1);
    h.copy(1).FailNext(1);
    int result;
    auto io = h.Start(MemberOp::kWrite, 0, a.size(), a.data(), &result);
    h.Pump();
    REQUIRE(h.health.demotions.size() == 1);
    CHECK(h.health.demotions[0].copy == 0);
    CHECK(h.set->Health() == "_U");
    h.health.Durable(0, 0);
    CHECK(result == EIO);
    CHECK(io->failure.find("nbd://node1/d") != std::string::npos);
  }
  SUBCASE("a catching-up copy does not count as current") {
    Harness h({CopyRole::kCurrent, CopyRole::kCatchingUp});
    auto a = Pattern(4 * KiB, 1);
    h.copy(0).FailNext(1);
    int result;
    h.Start(MemberOp::kWrite, 0, a.size(), a.data(), &result);
    h.Pump();
    CHECK(result == EIO);
    CHECK(h.health.demotions.empty());
    CHECK(h.set->Health() == "UC");
  }
}

TEST_CASE("mirror set: a failing catching-up copy is demoted without holding the write") {
  Harness h({CopyRole::kCurrent, CopyRole::kCatchingUp});
  auto a = Pattern(4 * KiB, 1);
  h.copy(1).FailNext(1);
  int result;
  h.Start(MemberOp::kWrite, 0, a.size(), a.data(), &result);
  h.Pump();
  REQUIRE(h.health.demotions.size() == 1);
  CHECK(h.health.demotions[0].copy == 1);
  CHECK(result == 0);  // not waiting for the demotion: the ack never counted that copy
  CHECK(h.set->Health() == "U_");
  h.health.Durable(0, 0);
}

TEST_CASE("mirror set: a declined fast zero fails the I/O and demotes nothing") {
  Harness h({CopyRole::kCurrent, CopyRole::kCurrent});
  h.copy(1).FailNext(1, ENOTSUP);
  int result;
  auto io = Harness::Make(MemberOp::kZero, 0, 4 * KiB, nullptr, &result);
  io->fast_zero = true;
  h.Submit(io, &result);
  h.Pump();
  CHECK(result == ENOTSUP);
  CHECK(h.health.demotions.empty());
  CHECK(h.set->Health() == "UU");
}

TEST_CASE("mirror set: reads go to one copy, spread by area and by bytes in flight") {
  Harness h({CopyRole::kCurrent, CopyRole::kCurrent});
  h.copy(0).bytes.assign(h.copy(0).bytes.size(), 0xa0);
  h.copy(1).bytes.assign(h.copy(1).bytes.size(), 0xa1);
  std::vector<uint8_t> buf(4 * KiB);
  int result;
  // Idle copies: 2 MiB areas alternate between them.
  auto first = h.Start(MemberOp::kRead, 0, buf.size(), buf.data(), &result);
  h.Pump();
  CHECK(result == 0);
  CHECK(first->served_by == 0);
  CHECK(buf[0] == 0xa0);
  auto second = h.Start(MemberOp::kRead, 2 * MiB + 64 * KiB, buf.size(), buf.data(), &result);
  h.Pump();
  CHECK(result == 0);
  CHECK(second->served_by == 1);
  CHECK(buf[0] == 0xa1);
  CHECK(h.copy(0).Count(MemberOp::kRead) == 1);
  CHECK(h.copy(1).Count(MemberOp::kRead) == 1);
  // A busy copy: the next read of its area goes to the other one.
  h.copy(0).HoldAll();
  std::vector<uint8_t> big(256 * KiB);
  int busy;
  auto held = h.Start(MemberOp::kRead, 1 * MiB, big.size(), big.data(), &busy);
  h.Pump();
  CHECK(h.copy(0).held() == 1);
  auto third = h.Start(MemberOp::kRead, 512 * KiB, buf.size(), buf.data(), &result);
  h.Pump();
  CHECK(result == 0);
  CHECK(third->served_by == 1);
  h.copy(0).StopHolding();
  h.Pump();
  CHECK(busy == 0);
  CHECK(held->served_by == 0);
  CHECK(h.copy(0).Count(MemberOp::kWrite) == 0);
  CHECK(h.copy(1).Count(MemberOp::kWrite) == 0);
}

TEST_CASE("mirror set: a failed read is served by the next copy at once") {
  Harness h({CopyRole::kCurrent, CopyRole::kCurrent, CopyRole::kCurrent});
  auto good = Pattern(8 * KiB, 9);
  for (size_t c : {0, 1, 2})
    std::copy(good.begin(), good.end(), h.copy(c).bytes.begin());
  h.copy(0).FailNext(1);
  std::vector<uint8_t> buf(good.size());
  int result;
  auto io = h.Start(MemberOp::kRead, 0, buf.size(), buf.data(), &result);
  h.Pump();
  // Served without waiting for the demotion of copy 0 to be durable.
  CHECK(result == 0);
  CHECK(io->served_by != 0);
  CHECK(io->served_by >= 1);
  CHECK(buf == good);
  CHECK(h.set->read_failovers(0) == 1);
  CHECK(h.set->read_failovers(1) == 0);
  CHECK(h.set->read_failovers(2) == 0);
  REQUIRE(h.health.demotions.size() == 1);
  CHECK(h.health.demotions[0].copy == 0);
  CHECK(h.health.demotions[0].cause.find("nbd://node0/d") != std::string::npos);
  CHECK(h.set->Health() == "_UU");
  h.health.Durable(0, 0);
}

TEST_CASE("mirror set: a read no copy can serve fails with EIO naming every copy tried") {
  Harness h({CopyRole::kCurrent, CopyRole::kCurrent, CopyRole::kOut});
  h.copy(0).FailNext(1);
  h.copy(1).FailNext(1);
  std::vector<uint8_t> buf(4 * KiB);
  int result;
  auto io = h.Start(MemberOp::kRead, 0, buf.size(), buf.data(), &result);
  h.Pump();
  CHECK(result == EIO);
  CHECK(io->served_by == -1);
  CHECK(io->failure.find("nbd://node0/d") != std::string::npos);
  CHECK(io->failure.find("nbd://node1/d") != std::string::npos);
  CHECK(io->failure.find("nbd://node2/d: injected") == std::string::npos);  // out: never tried
  CHECK(h.copy(2).log.empty());
  // The first copy to fail was demoted; the other was then the last current one.
  REQUIRE(h.health.demotions.size() == 1);
  CHECK(h.set->current_copies() == 1);
  CHECK(h.set->read_failovers(0) == 0);  // nothing served it
  CHECK(h.set->read_failovers(1) == 0);
}

TEST_CASE("mirror set: copies that are out are neither read nor written") {
  Harness h({CopyRole::kOut, CopyRole::kCurrent});
  auto data = Pattern(4 * KiB, 3);
  std::vector<uint8_t> buf(data.size());
  int result;
  for (uint64_t offset = 0; offset < 8 * MiB / 2; offset += 512 * KiB) {
    h.Start(MemberOp::kWrite, offset, data.size(), data.data(), &result);
    h.Pump();
    CHECK(result == 0);
    auto io = h.Start(MemberOp::kRead, offset, buf.size(), buf.data(), &result);
    h.Pump();
    CHECK(result == 0);
    CHECK(io->served_by == 1);
  }
  h.Start(MemberOp::kFlush, 0, 0, nullptr, &result);
  h.Pump();
  CHECK(result == 0);
  CHECK(h.copy(0).log.empty());
  // Taken out at run time: from the next I/O on.
  h.set->SetRole(0, CopyRole::kCurrent);
  h.set->SetRole(1, CopyRole::kOut);
  CHECK(h.set->Health() == "U_");
  h.Start(MemberOp::kWrite, 0, data.size(), data.data(), &result);
  h.Pump();
  CHECK(h.copy(0).Count(MemberOp::kWrite) == 1);
  CHECK(h.copy(1).Count(MemberOp::kWrite) == 8);
}

TEST_CASE("mirror set: a catching-up copy serves reads only below its cursor") {
  Harness h({CopyRole::kCurrent, CopyRole::kCatchingUp}, {0, 1 * MiB});
  std::vector<uint8_t> buf(4 * KiB);
  int result;
  // Copy 0 busy, so the least busy eligible copy is copy 1 where it may serve.
  h.copy(0).HoldAll();
  std::vector<uint8_t> big(128 * KiB);
  int busy;
  h.Start(MemberOp::kRead, 3 * MiB, big.size(), big.data(), &busy);
  auto below = h.Start(MemberOp::kRead, 64 * KiB, buf.size(), buf.data(), &result);
  h.Pump();
  CHECK(result == 0);
  CHECK(below->served_by == 1);
  int r2, r3;
  auto straddling = h.Start(MemberOp::kRead, 1 * MiB - 2 * KiB, buf.size(), buf.data(), &r2);
  auto above = h.Start(MemberOp::kRead, 2 * MiB, buf.size(), buf.data(), &r3);
  CHECK(h.copy(0).log.size() == 3);
  CHECK(h.copy(1).log.size() == 1);
  h.copy(0).StopHolding();
  h.Pump();
  CHECK(r2 == 0);
  CHECK(r3 == 0);
  CHECK(straddling->served_by == 0);
  CHECK(above->served_by == 0);
  // The cursor moves with SetRole.
  h.set->SetRole(1, CopyRole::kCatchingUp, 4 * MiB);
  h.copy(0).HoldAll();
  auto held = h.Start(MemberOp::kRead, 0, big.size(), big.data(), &busy);  // area 0: copy 0
  auto now_below = h.Start(MemberOp::kRead, 2 * MiB, buf.size(), buf.data(), &result);
  h.copy(0).StopHolding();
  h.Pump();
  CHECK(held->served_by == 0);
  CHECK(now_below->served_by == 1);
}

TEST_CASE(
    "mirror set: only_copy sends to that copy alone, whatever its role, and demotes nothing") {
  Harness h({CopyRole::kCurrent, CopyRole::kOut});
  auto data = Pattern(4 * KiB, 4);
  int result;
  auto write = Harness::Make(MemberOp::kWrite, 8 * KiB, data.size(), data.data(), &result);
  write->only_copy = 1;
  h.Submit(write, &result);
  h.Pump();
  CHECK(result == 0);
  CHECK(h.copy(0).log.empty());
  CHECK(std::equal(data.begin(), data.end(), h.copy(1).bytes.begin() + 8 * KiB));

  std::vector<uint8_t> buf(data.size());
  auto read = Harness::Make(MemberOp::kRead, 8 * KiB, buf.size(), buf.data(), &result);
  read->only_copy = 1;
  h.Submit(read, &result);
  h.Pump();
  CHECK(result == 0);
  CHECK(read->served_by == 1);
  CHECK(buf == data);

  // A failure is the caller's to handle: no failover, no demotion.
  h.copy(0).FailNext(1);
  read->only_copy = 0;
  h.Submit(read, &result);
  h.Pump();
  CHECK(result == EIO);
  CHECK(read->served_by == -1);
  CHECK(read->failure.find("nbd://node0/d") != std::string::npos);
  CHECK(h.copy(1).Count(MemberOp::kRead) == 1);
  CHECK(h.health.demotions.empty());
  CHECK(h.set->Health() == "U_");

  // No such copy: ENXIO, posted.
  for (int32_t bad : {2, 40}) {
    read->only_copy = bad;
    h.Submit(read, &result);
    CHECK(result == kPending);
    h.Pump();
    CHECK(result == ENXIO);
  }
}

TEST_CASE("mirror set: only_copy on a missing copy fails with ENXIO") {
  asio::io_context io;
  FakeHealth health;
  MemCopy present(io, "nbd://node0/d");
  MirrorSet set(io, 0, {{&present, CopyRole::kCurrent}, {nullptr, CopyRole::kOut}}, &health);
  CHECK(set.name() == "set 0 (nbd://node0/d, missing)");
  CHECK(set.Health() == "U_");
  auto read = std::make_shared<MemberIo>();
  read->op = MemberOp::kRead;
  std::vector<uint8_t> buf(4 * KiB);
  read->data = buf.data();
  read->length = buf.size();
  read->only_copy = 1;
  int result = kPending;
  read->done = [&](int err) { result = err; };
  set.Submit(read);
  CHECK(result == kPending);
  io.poll();
  CHECK(result == ENXIO);
}

TEST_CASE("mirror set: avoid_copies keeps a read off the copies named") {
  Harness h({CopyRole::kCurrent, CopyRole::kCurrent, CopyRole::kCurrent});
  std::vector<uint8_t> buf(4 * KiB);
  int result;
  for (uint64_t offset : {uint64_t{0}, 2 * MiB, 4 * MiB - 8 * KiB}) {
    auto io = Harness::Make(MemberOp::kRead, offset, buf.size(), buf.data(), &result);
    io->avoid_copies = 0b011;
    h.Submit(io, &result);
    h.Pump();
    CHECK(result == 0);
    CHECK(io->served_by == 2);
  }
  CHECK(h.copy(0).log.empty());
  CHECK(h.copy(1).log.empty());

  // Every copy avoided: EIO, posted, nothing sent, nothing demoted.
  auto io = Harness::Make(MemberOp::kRead, 0, buf.size(), buf.data(), &result);
  io->avoid_copies = 0b111;
  h.Submit(io, &result);
  CHECK(result == kPending);
  h.Pump();
  CHECK(result == EIO);
  CHECK(h.health.demotions.empty());
  // Avoided copies are not failover targets either: 2 MiB falls to copy 2 of
  // copies 1 and 2, which fails, and copy 1 serves it.
  h.copy(2).FailNext(1);
  auto again = Harness::Make(MemberOp::kRead, 2 * MiB, buf.size(), buf.data(), &result);
  again->avoid_copies = 0b001;
  h.Submit(again, &result);
  h.Pump();
  CHECK(result == 0);
  CHECK(again->served_by == 1);
  CHECK(h.set->read_failovers(2) == 1);
  CHECK(h.copy(0).log.empty());
  h.health.Durable(0, 0);
}

TEST_CASE("mirror set: BLOCK_STATUS and CACHE are answered by one copy") {
  Harness h({CopyRole::kCurrent, CopyRole::kCurrent});
  h.copy(0).status_flags = 1;
  h.copy(1).status_flags = 1;
  h.copy(0).FailNext(1);
  int result;
  auto io = h.Start(MemberOp::kBlockStatus, 0, 64 * KiB, nullptr, &result);
  h.Pump();
  CHECK(result == 0);
  CHECK(io->served_by == 1);
  REQUIRE(io->extents.size() == 1);
  CHECK(io->extents[0].length == 64 * KiB);
  CHECK(io->extents[0].flags == 1);
  h.health.Durable(0, 0);
  auto cache = h.Start(MemberOp::kCache, 0, 64 * KiB, nullptr, &result);
  h.Pump();
  CHECK(result == 0);
  CHECK(h.copy(0).Count(MemberOp::kCache) + h.copy(1).Count(MemberOp::kCache) == 1);
}

TEST_CASE("mirror set: Health() letters and role names") {
  Harness h({CopyRole::kCurrent, CopyRole::kCurrent});
  CHECK(h.set->Health() == "UU");
  CHECK(h.set->current_copies() == 2);
  h.set->SetRole(1, CopyRole::kOut);
  CHECK(h.set->Health() == "U_");
  h.set->SetRole(1, CopyRole::kCatchingUp, 0);
  CHECK(h.set->Health() == "UC");
  CHECK(h.set->current_copies() == 1);
  CHECK(std::string(CopyRoleName(CopyRole::kCurrent)) == "current");
  CHECK(std::string(CopyRoleName(CopyRole::kCatchingUp)) == "catching-up");
  CHECK(std::string(CopyRoleName(CopyRole::kOut)) == "out");
  CHECK(h.set->name() == "set 3 (nbd://node0/d, nbd://node1/d)");
  CHECK(h.set->copy_count() == 2);
  CHECK(h.set->copy(1) == &h.copy(1));
  CHECK(h.set->set() == 3);
}

TEST_CASE("mirror set: capabilities are what every present copy can take") {
  asio::io_context io;
  MemberCapabilities a;
  a.can_flush = a.can_fua = a.can_trim = a.can_zero = a.can_fast_zero = true;
  a.can_cache = a.can_multi_conn = a.can_block_status = true;
  a.min_block = 512;
  a.preferred_block = 4096;
  a.max_request = 32 * MiB;
  MemberCapabilities b = a;
  b.can_trim = false;
  b.can_multi_conn = false;
  b.min_block = 4096;
  b.preferred_block = 64 * KiB;
  b.max_request = 1 * MiB;
  MemberCapabilities c = a;
  c.can_fast_zero = false;
  c.read_only = false;
  MemCopy ca(io, "nbd://a/d", 4 * MiB, a);
  MemCopy cb(io, "nbd://b/d", 3 * MiB, b);
  MemCopy cc(io, "nbd://c/d", 5 * MiB, c);
  FakeHealth health;
  MirrorSet set(io, 0,
                {{&ca, CopyRole::kCurrent},
                 {&cb, CopyRole::kOut},  // present: still counted, it may come back
                 {&cc, CopyRole::kCatchingUp},
                 {nullptr, CopyRole::kOut}},
                &health);
  const MemberCapabilities& caps = set.capabilities();
  CHECK(caps.size == 3 * MiB);
  CHECK(caps.max_request == 1 * MiB);
  CHECK(caps.min_block == 4096);
  CHECK(caps.preferred_block == 64 * KiB);
  CHECK(caps.can_flush);
  CHECK(caps.can_fua);
  CHECK_FALSE(caps.can_trim);
  CHECK(caps.can_zero);
  CHECK_FALSE(caps.can_fast_zero);
  CHECK(caps.can_cache);
  CHECK_FALSE(caps.can_multi_conn);
  CHECK(caps.can_block_status);
  CHECK_FALSE(caps.read_only);

  MemberCapabilities ro = a;
  ro.read_only = true;
  MemCopy cr(io, "nbd://r/d", 4 * MiB, ro);
  MirrorSet ro_set(io, 1, {{&ca, CopyRole::kCurrent}, {&cr, CopyRole::kCurrent}}, &health);
  CHECK(ro_set.capabilities().read_only);
}

TEST_CASE("mirror set: a copy that is out takes a new target; writes reach it, not the old one") {
  Harness h({CopyRole::kCurrent, CopyRole::kOut});
  MemCopy back(h.io, "nbd://back/d");
  REQUIRE(h.set->SetTarget(1, &back).ok());
  CHECK(h.set->copy(1) == &back);
  CHECK(h.set->name() == "set 3 (nbd://node0/d, nbd://back/d)");
  CHECK(h.set->role(1) == CopyRole::kOut);
  h.set->SetRole(1, CopyRole::kCatchingUp);
  auto data = Pattern(4 * KiB, 9);
  int result;
  h.Start(MemberOp::kWrite, 8 * KiB, data.size(), data.data(), &result);
  h.Pump();
  CHECK(result == 0);
  CHECK(back.Count(MemberOp::kWrite) == 1);
  CHECK(h.copy(1).log.empty());
  CHECK(h.set->capabilities().size == 4 * MiB);
}

TEST_CASE("mirror set: a new target is refused unless it can take what the set promised") {
  MemberCapabilities caps;
  caps.can_flush = caps.can_trim = true;
  caps.min_block = 512;
  caps.max_request = 1 * MiB;
  asio::io_context io;
  MemCopy a(io, "nbd://a/d", 4 * MiB, caps);
  MemCopy b(io, "nbd://b/d", 4 * MiB, caps);
  FakeHealth health;
  MirrorSet set(io, 0, {{&a, CopyRole::kCurrent}, {&b, CopyRole::kOut}}, &health);
  const MemberCapabilities promised = set.capabilities();

  MemCopy small(io, "nbd://small/d", 2 * MiB, caps);
  dst::Status s = set.SetTarget(1, &small);
  CHECK(s.err() == EINVAL);
  CHECK(s.message() ==
        "nbd://small/d cannot be a copy of set 0 (nbd://a/d, nbd://b/d): it has 2097152 bytes, "
        "the set 4194304");
  MemberCapabilities narrow = caps;
  narrow.max_request = 64 * KiB;
  MemCopy n(io, "nbd://n/d", 4 * MiB, narrow);
  CHECK(set.SetTarget(1, &n).message().find("it takes requests of up to 65536 bytes") !=
        std::string::npos);
  MemberCapabilities coarse = caps;
  coarse.min_block = 4096;
  MemCopy c(io, "nbd://c/d", 4 * MiB, coarse);
  CHECK(set.SetTarget(1, &c).message().find("it needs 4096-byte blocks, the set 512") !=
        std::string::npos);
  MemberCapabilities no_trim = caps;
  no_trim.can_trim = false;
  MemCopy t(io, "nbd://t/d", 4 * MiB, no_trim);
  CHECK(set.SetTarget(1, &t).message().find("it lacks trim, which the set has") !=
        std::string::npos);
  MemberCapabilities ro = caps;
  ro.read_only = true;
  MemCopy r(io, "nbd://r/d", 4 * MiB, ro);
  CHECK(set.SetTarget(1, &r).message().find("it is read-only") != std::string::npos);
  CHECK(set.SetTarget(0, &small).err() == EBUSY);  // current
  CHECK(set.SetTarget(2, &small).err() == ERANGE);
  CHECK(set.copy(1) == &b);

  // Larger and with more features: taken; the set promises what it did.
  MemberCapabilities more = caps;
  more.can_fua = more.can_cache = true;
  more.max_request = 32 * MiB;
  MemCopy big(io, "nbd://big/d", 8 * MiB, more);
  REQUIRE(set.SetTarget(1, &big).ok());
  CHECK(set.capabilities().size == promised.size);
  CHECK(set.capabilities().max_request == promised.max_request);
  CHECK_FALSE(set.capabilities().can_fua);
}

TEST_CASE("mirror set: a failure the old target reports after a new one came demotes nothing") {
  Harness h({CopyRole::kCurrent, CopyRole::kCurrent});
  auto data = Pattern(4 * KiB, 4);
  h.copy(1).HoldAll();
  int result;
  h.Start(MemberOp::kWrite, 0, data.size(), data.data(), &result);
  h.Pump();
  REQUIRE(h.copy(1).held() == 1);
  // The owner took the copy out (a demotion made durable) and it came back on a new target.
  h.set->SetRole(1, CopyRole::kOut);
  MemCopy back(h.io, "nbd://back/d");
  REQUIRE(h.set->SetTarget(1, &back).ok());
  h.set->SetRole(1, CopyRole::kCatchingUp);
  h.copy(1).FailNext(1);
  h.copy(1).StopHolding();
  h.Pump();
  CHECK(result == 0);
  CHECK(h.health.demotions.empty());
  CHECK(h.set->role(1) == CopyRole::kCatchingUp);
}

TEST_CASE("mirror set: a replacement copy is written, never read, and shown after a '+'") {
  Harness h({CopyRole::kCurrent, CopyRole::kCurrent});
  MemCopy fresh(h.io, "nbd://new/d");
  REQUIRE(h.set->AttachReplacement(&fresh).ok());
  CHECK(h.set->replacement_copy() == 2);
  CHECK(h.set->copy_count() == 2);
  CHECK(h.set->role(2) == CopyRole::kCatchingUp);
  CHECK(h.set->Health() == "UU+C");
  CHECK(h.set->name() == "set 3 (nbd://node0/d, nbd://node1/d)");
  CHECK(h.set->AttachReplacement(&fresh).err() == EBUSY);  // one at a time
  auto data = Pattern(8 * KiB, 3);
  int result;
  h.Start(MemberOp::kWrite, 0, data.size(), data.data(), &result);
  std::vector<std::vector<uint8_t>> back(8, std::vector<uint8_t>(4 * KiB));
  std::vector<int> reads(back.size());
  for (size_t i = 0; i < back.size(); ++i)
    h.Start(MemberOp::kRead, i * 64 * KiB, 4 * KiB, back[i].data(), &reads[i]);
  h.Pump();
  CHECK(std::count(reads.begin(), reads.end(), 0) == 8);
  CHECK(result == 0);
  CHECK(fresh.Count(MemberOp::kWrite) == 1);
  CHECK(fresh.Count(MemberOp::kRead) == 0);
  // A failure of the replacement is reported for copy 2 and holds no write.
  fresh.FailNext(1);
  h.Start(MemberOp::kWrite, 0, data.size(), data.data(), &result);
  h.Pump();
  CHECK(result == 0);
  REQUIRE(h.health.demotions.size() == 1);
  CHECK(h.health.demotions[0].copy == 2);
  CHECK(h.set->Health() == "UU");
}

TEST_CASE("mirror set: after an exchange, an answer counts against the copy its target became") {
  Harness h({CopyRole::kCurrent, CopyRole::kCurrent});
  MemCopy fresh(h.io, "nbd://new/d");
  REQUIRE(h.set->AttachReplacement(&fresh).ok());
  auto data = Pattern(4 * KiB, 5);
  fresh.HoldAll();
  int result;
  h.Start(MemberOp::kWrite, 0, data.size(), data.data(), &result);
  h.Pump();
  REQUIRE(fresh.held() == 1);
  // The new member takes copy 1; the old one, still counted, is the replacement copy.
  REQUIRE(h.set->ExchangeTargets(1, 2).ok());
  h.set->SetRole(1, CopyRole::kCurrent);
  h.set->SetRole(2, CopyRole::kCurrent);
  CHECK(h.set->copy(1) == &fresh);
  CHECK(h.set->name() == "set 3 (nbd://node0/d, nbd://new/d)");
  CHECK(h.set->Health() == "UU+U");
  // Sent while it was the uncounted replacement; it fails as copy 1, current: the write waits.
  fresh.FailNext(1);
  fresh.StopHolding();
  h.Pump();
  CHECK(result == kPending);
  REQUIRE(h.health.demotions.size() == 1);
  CHECK(h.health.demotions[0].copy == 1);
  h.health.Durable(0, 0);
  h.Pump();
  CHECK(result == 0);
}

TEST_CASE("mirror set: an I/O with no copy to take it completes later, never inside Submit") {
  Harness h({CopyRole::kCurrent, CopyRole::kCurrent});
  h.set->SetRole(0, CopyRole::kOut);
  h.set->SetRole(1, CopyRole::kOut);
  auto data = Pattern(4 * KiB, 1);
  int write_result, read_result;
  auto write = h.Start(MemberOp::kWrite, 0, data.size(), data.data(), &write_result);
  auto read = h.Start(MemberOp::kRead, 0, data.size(), data.data(), &read_result);
  CHECK(write_result == kPending);
  CHECK(read_result == kPending);
  h.Pump();
  CHECK(write_result == EIO);
  CHECK(read_result == EIO);
  CHECK(write->failure.find("set 3") != std::string::npos);
  CHECK(read->failure.find("set 3") != std::string::npos);
  CHECK(h.copy(0).log.empty());
  CHECK(h.copy(1).log.empty());
}

TEST_CASE("mirror set: failures while a demotion is pending join it; later ones start another") {
  Harness h({CopyRole::kCurrent, CopyRole::kCurrent, CopyRole::kCurrent});
  auto data = Pattern(4 * KiB, 1);
  h.copy(2).HoldAll();
  int r1, r2;
  h.Start(MemberOp::kWrite, 0, data.size(), data.data(), &r1);
  h.Start(MemberOp::kWrite, 4 * KiB, data.size(), data.data(), &r2);
  h.Pump();
  h.copy(2).FailNext(1);
  h.copy(2).StopHolding();
  h.Pump();
  REQUIRE(h.health.demotions.size() == 1);
  CHECK(r1 == kPending);
  CHECK(r2 == 0);  // copy 2 answered its second write before it was demoted: nothing to wait for
  h.health.Durable(0, 0);
  CHECK(r1 == 0);
  // Copy 1 fails later, on its own: a demotion of its own.
  h.copy(1).FailNext(1);
  int r3;
  h.Start(MemberOp::kWrite, 0, data.size(), data.data(), &r3);
  h.Pump();
  REQUIRE(h.health.demotions.size() == 2);
  CHECK(h.health.demotions[1].copy == 1);
  CHECK(h.set->Health() == "U__");
  h.health.Durable(1, 0);
  CHECK(r3 == 0);
}

TEST_CASE("mirror set: I/Os outlive a set that is destroyed; each still gets its one done") {
  Harness h({CopyRole::kCurrent, CopyRole::kCurrent});
  auto data = Pattern(4 * KiB, 1);
  std::vector<uint8_t> buf(4 * KiB);
  h.copy(1).FailNext(1);
  int demoting;
  auto waiting = h.Start(MemberOp::kWrite, 0, data.size(), data.data(), &demoting);
  h.Pump();
  REQUIRE(h.health.demotions.size() == 1);
  REQUIRE(demoting == kPending);
  h.copy(0).HoldAll();
  int write, read;
  h.Start(MemberOp::kWrite, 8 * KiB, data.size(), data.data(), &write);
  auto reading = h.Start(MemberOp::kRead, 0, buf.size(), buf.data(), &read);
  h.Pump();
  REQUIRE(h.copy(0).held() == 2);
  h.set.reset();
  h.copy(0).StopHolding();
  h.Pump();
  CHECK(write == 0);  // answered by its copy, passed on as it is
  CHECK(read == 0);
  CHECK(demoting == ECANCELED);
  h.health.Durable(0, 0);  // too late: nothing left to tell
  CHECK(demoting == ECANCELED);
}
