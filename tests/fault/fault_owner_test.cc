// Single writer on a mirror: a second aggregator that assembles the volume fences the first.
// The first logs it, fails its client's next write with EROFS and writes nothing more; the
// members' superblocks record the second as owner.
#include <fstream>
#include <map>
#include <regex>
#include <sstream>

#include "tests/fault/fault_fixture.h"
#include "tests/integration/volume_fixture.h"

namespace dst::test::fault::fault_owner_test {
namespace {

std::string OwnershipEpoch(const std::string& inspect_json) {
  std::smatch m;
  REQUIRE(std::regex_search(inspect_json, m, std::regex("\"ownership_epoch\": *([0-9]+)")));
  return m[1];
}

std::string OwnerUuid(const std::string& inspect_json) {
  std::smatch m;
  REQUIRE(std::regex_search(inspect_json, m, std::regex("\"owner_uuid\": *\"([0-9a-f-]+)\"")));
  return m[1];
}

// "volume mir: ownership epoch 2, owner UUID" in an aggregator's log.
std::string ClaimedOwner(const std::string& log, const std::string& epoch) {
  std::smatch m;
  REQUIRE(std::regex_search(
      log, m, std::regex("volume mir: ownership epoch " + epoch + ", owner ([0-9a-f-]+)")));
  return m[1];
}

TEST_SUITE_BEGIN("fault_owner");

TEST_CASE("a second aggregator on a mirror fences the first, which stops writing") {
  TempDir dir("dst-fault-owner");
  constexpr uint64_t kSize = 8 * kMiB;
  // Every request each node runs, with its connection's fenced name.
  Member m0(dir.File("m0.img"), kSize, {"log"}, {"logfile=" + dir.File("m0.log")});
  Member m1(dir.File("m1.img"), kSize, {"log"}, {"logfile=" + dir.File("m1.log")});
  const std::vector<std::string> uris = {m0.uri(), m1.uri()};
  CreateOk({"--name", "mir", "--layout", "mirror"}, uris);
  constexpr uint64_t kBlock = 64 * kKiB;

  // A: not the fixture's Aggregator, which requires a clean exit: a fenced-out aggregator
  // cannot write its volume clean.
  AggregatorServer a(FaultAggregatorOptions({m0.uri(), m1.uri()}, AggregatorListen::kUnix));
  NbdClient ca;
  REQUIRE_NBD_OK(ca.Connect(a.uri("mir")));
  const Bytes first = RandomBytes(kBlock, 1);
  REQUIRE(WriteFor(ca, first, 0, 10s).ok());
  REQUIRE(FlushFor(ca).ok());
  const std::string owner_a = ClaimedOwner(a.stderr_text(), "1");

  std::string owner_b;
  {
    Aggregator b({m0.uri(), m1.uri()});
    owner_b = ClaimedOwner(b.stderr_text(), "2");
    CHECK(owner_b != owner_a);
    NbdClient cb;
    REQUIRE_NBD_OK(cb.Connect(b.uri("mir")));
    Bytes back(kBlock);
    REQUIRE(ReadFor(cb, back, 0, 10s).ok());
    CHECK(back == first);
    const Bytes second = RandomBytes(kBlock, 2);
    REQUIRE(WriteFor(cb, second, kBlock, 10s).ok());
    REQUIRE(FlushFor(cb).ok());

    // A's next write fails, and every one after it, without reaching a member.
    const Bytes stale = RandomBytes(kBlock, 3);
    const NbdStatus w = WriteFor(ca, stale, kBlock, 10s);
    CHECK_FALSE(w.ok());
    CHECK(WaitForText([&] { return a.stderr_text(); },
                      "volume mir: fenced by a newer owner (ownership epoch 2): no more writes",
                      10s));
    // EROFS, which NBD sends as EPERM (the answer to a write on a read-only export).
    const NbdStatus again = WriteFor(ca, stale, 2 * kBlock, 10s);
    CHECK(again.err == EPERM);
    CHECK(FlushFor(ca).err == EPERM);
    CHECK(CountOf(a.stderr_text(), "fenced by a newer owner (ownership epoch") == 1);
    CHECK_FALSE(Contains(a.stderr_text(), "demoted to stale"));
    // Reads fail too: A's checksum table is not the new owner's, and would serve B's block as
    // the zeros A knew.
    Bytes seen_by_a(kBlock);
    CHECK(ReadFor(ca, seen_by_a, kBlock, 10s).err == ESHUTDOWN);

    // The plugin refused A's epoch (ownership 1: 2^32 + attempt) on the member it reached;
    // nothing of A's landed after B's write.
    const std::string plugin_log = m0.stderr_text() + m1.stderr_text();
    CHECK(std::regex_search(
        plugin_log, std::regex("fence: refusing write of [0-9]+ bytes at [0-9]+ from stale "
                               "epoch 429496729[0-9] \\(session current 858993459[0-9]\\)")));
    // Epochs as the nodes logged them: B's are 2 << 32 and up.
    for (const char* log : {"m0.log", "m1.log"}) {
      bool b_wrote = false;
      CHECK_FALSE(OlderWriteAfterNewer(dir.File(log), uint64_t{2} << 32, &b_wrote));
      CHECK(b_wrote);
    }
    REQUIRE(ReadFor(cb, back, kBlock, 10s).ok());
    CHECK(back == second);
    Bytes zeros(kBlock, 0);
    REQUIRE(ReadFor(cb, back, 2 * kBlock, 10s).ok());
    CHECK(back == zeros);
    CHECK_NBD_OK(cb.Shutdown());
    CHECK_NBD_OK(ca.Shutdown());
    const int code = a.Stop();
    CHECK_MESSAGE(code == 1, "A's exit code " << code << "\n" << a.stderr_text());
    CHECK(Contains(a.stderr_text(), "not closed clean"));
    CHECK(a.SanitizerReports().empty());
  }
  for (const std::string& uri : uris) {
    const std::string json = RunAggregator({"inspect", "--json", uri}).stdout_text;
    CHECK(OwnershipEpoch(json) == "2");
    CHECK(OwnerUuid(json) == owner_b);
  }
}

TEST_SUITE_END();

}  // namespace
}  // namespace dst::test::fault::fault_owner_test
