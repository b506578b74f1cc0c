// fault_mirror_flap: export nodes of a 2-copy mirror killed and started again while a client
// writes, and the order in which copies die.
//
// Flapping. A writer tags every 4 KiB block with (block, sequence number) and reads each block
// back right after its write is acked; every few writes it reads all blocks back. Meanwhile a
// seeded random schedule (the seed is logged; DST_FLAP_SEED=N replays one) kills one export
// node at a time with SIGKILL and starts it again after 0.1 to 0.8 s (two times in three) or
// 2.2 to 2.5 s, below or above --degrade-after (2 s): a copy back in time is reconnected and keeps
// being current, a later one has been demoted to stale. A stale copy stays out of service for the
// rest of the run (--return-probe-interval 0: it is not brought back while serving, which
// fault_mirror_return covers), so a current copy is killed only while both copies are current
// and ready; once one is stale, the flaps hit the stale one (its member is abandoned: nothing may
// change for the client). Covered:
//  - no client error at any point (a write is acked only once every current copy has it, or
//    the copy that failed is durably stale);
//  - no read, right after an acked write or in a sweep, returns a sequence older than the last
//    acked write of that block (a stale copy is never read);
//  - after the run the volume is served again from the same members: every block reads back as
//    its last acked write, and on every copy status calls current the bytes are there on disk
//    (acked means durable on each current copy, not only on the one that was read).
//
// Kill order. Kill M0, write (acked, M0 demoted), stop, kill M1, start M0 alone: refused with
// the assembly's message, so M0's old data is not served; with both back the volume is served
// from M1 and reads the newer data. With --allow-degraded M0 alone is served (the operator
// asserts that M1 holds nothing newer, docs/redundancy.md); the two then refuse to assemble as a
// split brain, so the two histories are never merged silently.
#include <atomic>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <random>
#include <regex>
#include <thread>

#include "tests/fault/fault_fixture.h"
#include "tests/integration/volume_fixture.h"

namespace dst::test::fault::fault_mirror_flap_test {
namespace {

constexpr uint64_t kBlock = 4096;
constexpr uint64_t kBlocks = 64;
constexpr uint64_t kMagic = 0x64737446'6c617031ull;  // "dstFlap1"

// A block whose every 24-byte record is (magic, block, seq).
Bytes Tagged(uint64_t block, uint64_t seq) {
  Bytes b(kBlock);
  for (size_t at = 0; at + 24 <= kBlock; at += 24) {
    std::memcpy(&b[at], &kMagic, 8);
    std::memcpy(&b[at + 8], &block, 8);
    std::memcpy(&b[at + 16], &seq, 8);
  }
  return b;
}

// The sequence a block holds: 0 for a never-written (zero) block, -1 for anything that is not
// one whole tagged block of `block` (torn, or another block's data).
int64_t SequenceOf(const Bytes& b, uint64_t block) {
  if (AllZero(b)) return 0;
  uint64_t seq = 0;
  std::memcpy(&seq, &b[16], 8);
  return b == Tagged(block, seq) ? static_cast<int64_t>(seq) : -1;
}

// The data area's offset on a member, from inspect --json.
uint64_t DataOffset(const std::string& uri) {
  const CommandResult r = RunAggregator({"inspect", "--json", uri});
  std::smatch m;
  REQUIRE_MESSAGE(
      std::regex_search(r.stdout_text, m, std::regex("\"data\": *\\{\"offset\": *([0-9]+)")),
      r.stdout_text);
  return std::stoull(m[1]);
}

uint64_t Seed() {
  if (const char* s = std::getenv("DST_FLAP_SEED")) return std::strtoull(s, nullptr, 10);
  return std::random_device{}();
}

TEST_SUITE_BEGIN("fault_mirror_flap");

TEST_CASE("flapping export nodes: no read returns a block older than its last acked write") {
  const uint64_t seed = Seed();
  MESSAGE("DST_FLAP_SEED=" << seed);
  std::mt19937_64 rng(seed);
  TempDir dir("dst-fault-mirror-flap");
  std::vector<std::unique_ptr<Member>> m;
  for (int i = 0; i < 2; ++i)
    m.push_back(std::make_unique<Member>(dir.File("m" + std::to_string(i) + ".img"), 8 * kMiB));
  const std::vector<std::string> uris = {m[0]->uri(), m[1]->uri()};
  CreateOk({"--name", "mir", "--layout", "mirror"}, uris);

  std::vector<uint64_t> acked(kBlocks, 0), attempted(kBlocks, 0);
  std::string final_status;
  {
    Aggregator agg({"--degrade-after", "2s", "--io-timeout", "500ms", "--return-probe-interval",
                    "0", uris[0], uris[1]});
    NbdClient c;
    REQUIRE_NBD_OK(c.Connect(agg.uri("mir")));
    // The writer, on its own thread (the flaps stay on this one: an export node started with
    // --exit-with-parent dies with the thread that started it). Bounded in count and time.
    std::atomic<bool> done{false};
    std::string problems;  // the writer's, read after it is joined
    int errors = 0, older = 0, writes = 0;
    auto check_block = [&](uint64_t b, const char* when) {
      Bytes back(kBlock);
      const NbdStatus r = ReadFor(c, back, b * kBlock, 15s);
      const int64_t seq = r.ok() ? SequenceOf(back, b) : -2;
      if (!r.ok()) ++errors;
      if (seq < static_cast<int64_t>(acked[b]) || seq > static_cast<int64_t>(attempted[b])) {
        ++older;
        if (older < 10)
          problems += std::string(when) + ": block " + std::to_string(b) + " read " + r.ToString() +
                      " seq " + std::to_string(seq) + ", last acked " + std::to_string(acked[b]) +
                      "\n";
      }
    };
    const auto start = SteadyClock::now();
    std::mt19937_64 write_rng(rng());
    std::jthread writer([&] {
      uint64_t seq = 0;
      for (; !done && writes < 20000 && SecondsSince(start) < 40; ++writes) {
        const uint64_t b = write_rng() % kBlocks;
        attempted[b] = ++seq;
        const NbdStatus w = WriteFor(c, Tagged(b, seq), b * kBlock, 15s);
        if (w.ok()) {
          acked[b] = seq;
        } else {
          ++errors;
          problems += "write of block " + std::to_string(b) + " seq " + std::to_string(seq) + ": " +
                      w.ToString() + "\n";
        }
        check_block(b, "read after write");
        if (writes % 64 == 63) {
          if (!FlushFor(c, 15s).ok()) ++errors;
          for (uint64_t all = 0; all < kBlocks; ++all)
            check_block(all, "sweep");
        }
      }
    });

    // The flaps: bounded in count and time; what they did goes to `log`.
    std::string log;
    try {
      for (int flap = 0; flap < 5 && SecondsSince(start) < 18; ++flap) {
        std::this_thread::sleep_for(Ms(200 + rng() % 600));
        const std::string json = StatusJson(agg);
        const bool whole = Contains(json, "\"sets\": [\"UU\"]");
        size_t victim = rng() % 2;
        if (whole) {
          // Both current: either may go, once the other one is connected.
          if (QueryStats(agg, "mir", 1 - victim).Text("state") != "ready") continue;
        } else {
          victim = Contains(json, SlotState(0, uris[0], "stale")) ? 0 : 1;
        }
        // Mostly back in time (the copy stays current and can be killed again), sometimes too
        // late (demoted).
        const Ms down = rng() % 3 != 0 ? Ms(100 + rng() % 700) : Ms(2200 + rng() % 300);
        log += "t=" + std::to_string(SecondsSince(start)) + " kill m" + std::to_string(victim) +
               (whole ? " (both current)" : " (the stale copy)") + " for " +
               std::to_string(down.count()) + " ms\n";
        m[victim]->KillHard();
        std::this_thread::sleep_for(down);
        m[victim]->RestartAfterKill();
        std::this_thread::sleep_for(2500ms);  // reconnected, or demoted
        log += Contains(StatusJson(agg), SlotState(victim, uris[victim], "stale"))
                   ? "  m" + std::to_string(victim) + " is stale\n"
                   : "  m" + std::to_string(victim) + " came back in time and is current\n";
      }
    } catch (const std::exception& e) {
      log += std::string("flaps stopped: ") + e.what() + "\n";
    }
    done = true;
    writer.join();
    MESSAGE(writes << " writes in " << SecondsSince(start) << " s; flaps:\n" << log);
    INFO(problems);
    CHECK_FALSE(Contains(log, "flaps stopped"));
    CHECK(errors == 0);
    CHECK(older == 0);
    CHECK(FlushFor(c).ok());
    for (uint64_t all = 0; all < kBlocks; ++all)
      check_block(all, "final sweep");
    CHECK(older == 0);
    CHECK_NBD_OK(c.Shutdown());
    CHECK(Contains(log, "kill m"));
    for (auto& member : m)
      if (!member->Running()) member->RestartAfterKill();
    final_status = StatusJson(agg);
  }
  INFO("status at the end:\n" << final_status);

  // Served again from the same members: the last acked write of every block.
  {
    Aggregator agg({uris[0], uris[1]});
    NbdClient c;
    REQUIRE_NBD_OK(c.Connect(agg.uri("mir")));
    for (uint64_t b = 0; b < kBlocks; ++b) {
      Bytes back(kBlock);
      REQUIRE_NBD_OK(c.Pread(back, b * kBlock));
      CHECK_MESSAGE(SequenceOf(back, b) == static_cast<int64_t>(acked[b]), "block " << b);
    }
    CHECK_NBD_OK(c.Shutdown());
  }
  // And on every copy that stayed current, on disk.
  for (size_t i = 0; i < 2; ++i) {
    if (!Contains(final_status, SlotState(i, uris[i], "active"))) continue;
    const uint64_t offset = DataOffset(uris[i]);
    for (uint64_t b = 0; b < kBlocks; ++b)
      CHECK_MESSAGE(SequenceOf(ReadFileRange(dir.File("m" + std::to_string(i) + ".img"),
                                             offset + b * kBlock, kBlock),
                               b) == static_cast<int64_t>(acked[b]),
                    "copy " << i << " block " << b);
  }
}

TEST_CASE("kill M0, write, kill M1, start M0 alone: refused; M0's old data is never served") {
  TempDir dir("dst-fault-mirror-order");
  Member m0(dir.File("m0.img"), 8 * kMiB);
  Member m1(dir.File("m1.img"), 8 * kMiB);
  CreateOk({"--name", "mir", "--layout", "mirror"}, {m0.uri(), m1.uri()});
  const Bytes old_data = RandomBytes(64 * kKiB, 1);
  const Bytes new_data = RandomBytes(64 * kKiB, 2);
  auto read_back = [](AggregatorServer& agg) {
    NbdClient c;
    REQUIRE_NBD_OK(c.Connect(agg.uri("mir")));
    Bytes back(64 * kKiB);
    REQUIRE_NBD_OK(c.Pread(back, 0));
    CHECK_NBD_OK(c.Shutdown());
    return back;
  };
  {
    Aggregator agg({"--degrade-after", "1s", "--io-timeout", "500ms", m0.uri(), m1.uri()});
    NbdClient c;
    REQUIRE_NBD_OK(c.Connect(agg.uri("mir")));
    REQUIRE(WriteFor(c, old_data, 0).ok());
    REQUIRE(FlushFor(c).ok());
    m0.KillHard();
    CHECK(WriteFor(c, new_data, 0).ok());
    CHECK(FlushFor(c).ok());
    INFO("aggregator:\n" << agg.stderr_text());
    CHECK(Contains(LineWithAll(agg.stderr_text(), {"demoted to stale (set"}),
                   "member 0 " + m0.uri()));
    CHECK(Contains(StatusJson(agg), "\"sets\": [\"_U\"]"));
    CHECK_NBD_OK(c.Shutdown());
  }
  m1.KillHard();
  m0.RestartAfterKill();

  // M0 alone still believes both copies current: it cannot know M1 went on, so no start.
  const StartFailure refused = AggregatorServer::StartExpectingFailure(
      FaultAggregatorOptions({m0.uri(), m1.uri()}, AggregatorListen::kUnix));
  INFO("refused start:\n" << refused.stderr_text);
  CHECK(refused.exit_code == 1);
  const std::string error = LineWithAll(refused.stderr_text, {"error: "});
  CHECK(Contains(error, "slot 1 missing but current in the freshest superblock (slot 0, event"));
  CHECK(Contains(error, "give --allow-degraded to serve without"));

  // With M1 back the freshest superblock (M1's) records M0 stale: the newer data, no flag.
  // (--no-auto-resync: M0 keeps its old data for the split brain below.)
  m1.RestartAfterKill();
  {
    Aggregator agg({"--no-auto-resync", m0.uri(), m1.uri()});
    CHECK(read_back(agg) == new_data);
    CHECK(Contains(LineWithAll(agg.stderr_text(), {"slot 0 (set 0 copy 0)"}), "marked-stale"));
    CHECK(Contains(StatusJson(agg), "\"sets\": [\"_U\"]"));
  }

  // The operator's override: M0 alone with --allow-degraded is served as it is (its old data),
  // in a new generation; M1's history and M0's have then diverged, and together they refuse.
  m1.KillHard();
  {
    Aggregator agg({"--allow-degraded", m0.uri(), m1.uri()});
    CHECK(read_back(agg) == old_data);
  }
  m1.RestartAfterKill();
  const StartFailure split = AggregatorServer::StartExpectingFailure(
      FaultAggregatorOptions({m0.uri(), m1.uri()}, AggregatorListen::kUnix));
  INFO("split start:\n" << split.stderr_text);
  CHECK(split.exit_code == 1);
  CHECK(Contains(LineWithAll(split.stderr_text, {"error: "}), "split brain: "));
}

TEST_SUITE_END();

}  // namespace
}  // namespace dst::test::fault::fault_mirror_flap_test
