// Serving mirror and raid10 volumes end to end: `dst-aggregator create --layout mirror|raid10`
// over plugin members on files, the real `serve`, libnbd as the client and `status --json` read
// by the test. What a user checks: data read back equals data written, every copy's data area
// holds the same bytes, a copy with a corrupted block is read right and repaired, a start with
// a copy missing is refused unless --allow-degraded, and bad options get their exact message.
#include <csignal>
#include <regex>

#include "tests/harness/aggregator_process.h"
#include "tests/harness/nbd_client.h"
#include "tests/integration/plugin_fixture.h"
#include "tests/integration/volume_fixture.h"

namespace dst::test::aggregator_mirror_test {
namespace {

using namespace std::chrono_literals;

constexpr uint64_t kBlock = 4096;

std::string Status(const AggregatorServer& a, bool json) {
  std::vector<std::string> args = {"status", "--control", a.control_path()};
  if (json) args.push_back("--json");
  const CommandResult r = RunAggregator(args);
  INFO("stderr:\n" << r.stderr_text);
  REQUIRE(r.exit_code == 0);
  return r.stdout_text;
}

// The data area's offset on a member, from inspect --json.
uint64_t DataOffset(const std::string& uri) {
  const CommandResult r = RunAggregator({"inspect", "--json", uri});
  REQUIRE(r.exit_code == 0);
  std::smatch m;
  const std::regex data("\"data\": *\\{\"offset\": *([0-9]+)");
  REQUIRE_MESSAGE(std::regex_search(r.stdout_text, m, data), r.stdout_text);
  return std::stoull(m[1]);
}

// Writes `data` at 0 through the aggregator, flushes, and reads it back.
void WriteAndReadBack(const std::string& uri, const Bytes& data) {
  NbdClient c;
  REQUIRE_NBD_OK(c.Connect(uri));
  REQUIRE_NBD_OK(c.Pwrite(data, 0));
  REQUIRE_NBD_OK(c.Flush());
  Bytes back(data.size());
  REQUIRE_NBD_OK(c.Pread(back, 0));
  CHECK(back == data);
  CHECK_NBD_OK(c.Shutdown());
}

// Copies of one set hold the same bytes where the volume put them.
void CheckCopiesEqual(const FileMembers& m, size_t a, size_t b, uint64_t length) {
  const uint64_t offset = DataOffset(m.uri(a));
  CHECK(DataOffset(m.uri(b)) == offset);
  const Bytes x = ReadFileRange(m.file(a), offset, length);
  const Bytes y = ReadFileRange(m.file(b), offset, length);
  CHECK_MESSAGE(x == y, "copies " << a << " and " << b << " differ");
  CHECK_FALSE(AllZero(x));
}

// A refused start: exit 1 and the error line holding `needle`.
void CheckRefusedStart(std::vector<std::string> args, const std::string& needle) {
  const StartFailure f = AggregatorServer::StartExpectingFailure(ServeOptions(std::move(args)));
  INFO("stderr:\n" << f.stderr_text);
  CHECK(f.exit_code == 1);
  CHECK(Contains(LineWithAll(f.stderr_text, {"error: "}), needle));
}

std::string Gone(const FileMembers& m) {
  return "nbd+unix:///?socket=" + m.dir().File("gone.sock");
}

TEST_SUITE_BEGIN("aggregator_mirror");

TEST_CASE("a mirror of two: data reads back, both copies hold it, status shows [UU]") {
  FileMembers m(2, 8 * kMiB);
  CreateOk({"--name", "mir", "--layout", "mirror"}, m.uris());
  const Bytes data = RandomBytes(1 * kMiB, 1);
  {
    Served agg({m.uri(1), m.uri(0)});
    WriteAndReadBack(agg.uri("mir"), data);
    const std::string text = Status(agg, false);
    INFO("status:\n" << text);
    CHECK(Contains(text, "[UU]"));
    const std::string json = Status(agg, true);
    CHECK(Contains(json, "\"sets\": [\"UU\"]"));
    CHECK(Contains(json, "\"state\": \"active\", \"stale_since\": 0"));
    for (const char* line : {"slot 0 (set 0 copy 0)", "slot 1 (set 0 copy 1)"})
      CHECK(Contains(LineWithAll(agg.stderr_text(), {line}), ": current: "));
  }
  CheckCopiesEqual(m, 0, 1, data.size());
}

TEST_CASE("a raid10 of four with two copies: data reads back, each set's copies agree") {
  FileMembers m(4, 8 * kMiB);
  CreateOk({"--name", "r10", "--layout", "raid10", "--chunk", "64K"}, m.uris());
  const Bytes data = RandomBytes(2 * kMiB, 2);
  {
    Served agg(m.uris());
    WriteAndReadBack(agg.uri("r10"), data);
    const std::string text = Status(agg, false);
    INFO("status:\n" << text);
    CHECK(Contains(text, "[UU] [UU]"));
  }
  CheckCopiesEqual(m, 0, 1, data.size() / 2);
  CheckCopiesEqual(m, 2, 3, data.size() / 2);
}

TEST_CASE("a start with a current copy missing: refused, then served with --allow-degraded") {
  FileMembers m(2, 8 * kMiB);
  CreateOk({"--name", "mir", "--layout", "mirror"}, m.uris());
  const Bytes data = RandomBytes(256 * kKiB, 3);
  {
    Served agg(m.uris());
    WriteAndReadBack(agg.uri("mir"), data);
  }
  CheckRefusedStart({m.uri(0), Gone(m)},
                    "slot 1 missing but current in the freshest superblock (slot 0, event");
  CheckRefusedStart({m.uri(0), Gone(m)}, "give --allow-degraded to serve without");
  const std::string before = RunAggregator({"inspect", "--json", m.uri(0)}).stdout_text;
  {
    Served agg({"--allow-degraded", m.uri(0), Gone(m)});
    CHECK(Contains(LineWithAll(agg.stderr_text(), {"member", "gone.sock"}), "counted missing"));
    CHECK(Contains(LineWithAll(agg.stderr_text(), {"slot 1 (set 0 copy 1) (missing)"}),
                   "missing-current"));
    CHECK(Contains(agg.stderr_text(), "new generation"));
    NbdClient c;
    REQUIRE_NBD_OK(c.Connect(agg.uri("mir")));
    Bytes back(data.size());
    REQUIRE_NBD_OK(c.Pread(back, 0));
    CHECK(back == data);
    CHECK_NBD_OK(c.Shutdown());
    const std::string json = Status(agg, true);
    INFO("status:\n" << json);
    CHECK(Contains(json, "\"sets\": [\"U_\"]"));
    CHECK(Contains(json, "{\"slot\": 1, \"uri\": \"\", \"state\": \"stale\""));
  }
  // The survivor records the slot stale, in a generation that is not the one before.
  const std::string after = RunAggregator({"inspect", "--json", m.uri(0)}).stdout_text;
  const std::regex generation("\"generation\": *\"([0-9a-f-]+)\"");
  std::smatch g0, g1;
  REQUIRE(std::regex_search(before, g0, generation));
  REQUIRE(std::regex_search(after, g1, generation));
  CHECK(g0[1] != g1[1]);
  CHECK(Contains(after, "\"stale\""));
}

TEST_CASE("a block corrupted on one copy reads right and is repaired from the other") {
  FileMembers m(2, 8 * kMiB);
  CreateOk({"--name", "mir", "--layout", "mirror"}, m.uris());
  const Bytes data = RandomBytes(64 * kKiB, 4);
  const uint64_t block = 5;
  {
    Served agg(m.uris());
    WriteAndReadBack(agg.uri("mir"), data);
  }
  const uint64_t offset = DataOffset(m.uri(0)) + block * kBlock;
  const Bytes good = ReadFileRange(m.file(0), offset, kBlock);
  REQUIRE(good == Bytes(data.begin() + block * kBlock, data.begin() + (block + 1) * kBlock));
  // Garbage on one copy; a read that lands on it must be healed from the other.
  WriteFileAt(m.file(0), offset, RandomBytes(kBlock, 50));
  Served agg(m.uris());
  NbdClient c;
  REQUIRE_NBD_OK(c.Connect(agg.uri("mir")));
  const std::string healed = "{\"slot\": 0, \"uri\": \"" + m.uri(0) +
                             "\", \"state\": \"active\", \"stale_since\": 0, "
                             "\"repaired_blocks\": 1";
  std::string json;
  // Bounded: which copy a read goes to is the balancer's choice.
  for (int i = 0; i < 20; ++i) {
    Bytes back(kBlock);
    REQUIRE_NBD_OK(c.Pread(back, block * kBlock));
    REQUIRE(back == good);
    json = Status(agg, true);
    if (Contains(json, healed)) break;
    Bytes other(kBlock);
    REQUIRE_NBD_OK(c.Pread(other, (20 + i) * kBlock));
  }
  INFO("status:\n" << json);
  CHECK(Contains(json, healed));
  CHECK(Contains(json, "\"request_errors\": 0"));
  CHECK_NBD_OK(c.Shutdown());
  CHECK(ReadFileRange(m.file(0), offset, kBlock) == good);
}

TEST_CASE("bad redundancy options are refused with the exact message") {
  FileMembers m(4, 8 * kMiB);
  CreateOk({"--name", "mir", "--layout", "mirror"}, {m.uri(0), m.uri(1)});
  CreateOk({"--name", "lin"}, {m.uri(2), m.uri(3)});
  SUBCASE("--discard beyond the volume's slots") {
    CheckRefusedStart({"--discard", "5", m.uri(0), m.uri(1)}, "--discard 5: the volume has 2");
  }
  SUBCASE("--discard that is not a slot number") {
    CheckRefusedStart({"--discard", "64", m.uri(0), m.uri(1)}, "--discard 64: expected 0 to 63");
  }
  SUBCASE("--allow-degraded on a linear volume") {
    CheckRefusedStart({"--allow-degraded", m.uri(2), m.uri(3)},
                      "volume lin: --allow-degraded and --discard are for mirror and raid10 "
                      "volumes; this one is linear");
  }
  SUBCASE("--allow-degraded on raw members") {
    CheckRefusedStart({"--raw", "--allow-degraded", m.uri(2), m.uri(3)},
                      "volume vol0: --allow-degraded and --discard are for mirror and raid10 "
                      "volumes, which are never raw");
  }
}

TEST_SUITE_END();

}  // namespace
}  // namespace dst::test::aggregator_mirror_test
