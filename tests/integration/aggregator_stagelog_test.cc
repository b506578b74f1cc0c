// A volume served through its staging log (serve --log, docs/staging-log.md "Serving through the
// log"): real plugin members, the real dst-aggregator, a libnbd client. What a user checks: data
// written reads back, status --json shows the log destaged (D at the head) and the members then
// hold the data; after a SIGKILL every acknowledged write reads back from the replayed log; a log
// of another volume is refused.
#include <doctest/doctest.h>

#include <chrono>
#include <csignal>
#include <string>
#include <thread>
#include <vector>

#include "tests/harness/aggregator_process.h"
#include "tests/harness/nbd_client.h"
#include "tests/harness/test_data.h"
#include "tests/integration/plugin_fixture.h"
#include "tests/integration/volume_fixture.h"

namespace dst::test {
namespace {

using namespace std::chrono_literals;

constexpr uint64_t kMemberSize = 8 * kMiB;

// The number after "KEY": in `json`, or -1.
int64_t JsonNumber(const std::string& json, const std::string& key) {
  const std::string needle = "\"" + key + "\": ";
  const size_t at = json.find(needle);
  if (at == std::string::npos) return -1;
  return std::stoll(json.substr(at + needle.size()));
}

std::string StatusJson(const AggregatorServer& a) {
  const CommandResult r = RunAggregator({"status", "--json", "--control", a.control_path()});
  REQUIRE_MESSAGE(r.exit_code == 0, r.stderr_text);
  return r.stdout_text;
}

// Polls status --json until the log's destaged sequence D reaches its head (5 s at most).
std::string WaitDestaged(const AggregatorServer& a) {
  std::string json;
  for (int i = 0; i < 100; ++i) {
    json = StatusJson(a);
    const int64_t head = JsonNumber(json, "head_sequence");
    if (head > 0 && JsonNumber(json, "destaged_sequence") == head) return json;
    std::this_thread::sleep_for(50ms);
  }
  FAIL("the staging log was not destaged: " << json);
  return json;
}

struct Write {
  uint64_t offset;
  Bytes data;
};

// Writes that cross the two members' boundary (at 8 MiB), overwrite each other and vary in
// size, each checked by reading it back.
std::vector<Write> WritePattern(NbdClient& c) {
  std::vector<Write> writes = {
      {kMemberSize - 256 * kKiB, RandomBytes(512 * kKiB, 1)},
      {64 * kKiB, RandomBytes(4 * kKiB, 2)},
      {kMemberSize - 4 * kKiB, RandomBytes(8 * kKiB, 3)},  // over the first one's middle
      {3 * kMiB + 512, RandomBytes(3072, 4)},              // not on a page
  };
  for (const Write& w : writes) {
    REQUIRE_NBD_OK(c.Pwrite(w.data, w.offset));
    Bytes back(w.data.size());
    REQUIRE_NBD_OK(c.Pread(back, w.offset));
    CHECK(back == w.data);
  }
  return writes;
}

// The volume's bytes [offset, offset + size) as `writes` leave them over zeros.
Bytes Expected(const std::vector<Write>& writes, uint64_t offset, uint64_t size) {
  Bytes out(size, 0);
  for (const Write& w : writes)
    for (uint64_t i = 0; i < w.data.size(); ++i)
      if (w.offset + i >= offset && w.offset + i < offset + size)
        out[w.offset + i - offset] = w.data[i];
  return out;
}

// The raw linear volume's bytes, from the two members' files.
Bytes MemberBytes(const FileMembers& m, uint64_t offset, uint64_t size) {
  Bytes out;
  for (uint64_t at = offset; at < offset + size;) {
    const size_t member = at < kMemberSize ? 0 : 1;
    const uint64_t in_member = at % kMemberSize;
    const uint64_t n = std::min(offset + size - at, kMemberSize - in_member);
    const Bytes part = ReadFileRange(m.file(member), in_member, n);
    out.insert(out.end(), part.begin(), part.end());
    at += n;
  }
  return out;
}

void CheckVolume(NbdClient& c, const std::vector<Write>& writes) {
  for (const Write& w : writes) {
    Bytes back(w.data.size());
    REQUIRE_NBD_OK(c.Pread(back, w.offset));
    CHECK(back == Expected(writes, w.offset, w.data.size()));
  }
}

TEST_SUITE("aggregator_stagelog") {
  TEST_CASE("writes go through the log, read back, and reach the members once destaged") {
    FileMembers m(2, kMemberSize);
    const std::string log = m.dir().File("vol0.log");
    Served a({"--raw", "--log", log, "--log-size", "4M", m.uri(0), m.uri(1)});
    CHECK(a.WaitForLog("volume vol0: staging log " + log + " formatted for volume"));
    NbdClient c;
    REQUIRE_NBD_OK(c.Connect(a.uri()));
    const std::vector<Write> writes = WritePattern(c);
    REQUIRE_NBD_OK(c.Flush());
    const std::string json = WaitDestaged(a);
    CHECK(Contains(json, "\"staging_log\": {\"path\": \"" + log + "\", \"state\": \"normal\""));
    CHECK(JsonNumber(json, "ring_size") == 4 * kMiB - 8 * kKiB);
    CHECK(JsonNumber(json, "pending_bytes") == 0);
    CHECK(JsonNumber(json, "pending_age_ms") == 0);
    const uint64_t from = kMemberSize - 256 * kKiB;
    CHECK(MemberBytes(m, from, 512 * kKiB) == Expected(writes, from, 512 * kKiB));
    CHECK(MemberBytes(m, 64 * kKiB, 4 * kKiB) == Expected(writes, 64 * kKiB, 4 * kKiB));
    CHECK(MemberBytes(m, 3 * kMiB, 8 * kKiB) == Expected(writes, 3 * kMiB, 8 * kKiB));
    CheckVolume(c, writes);
    // The stats line (SIGUSR1) and the status table show the log too.
    a.Kill(SIGUSR1);
    CHECK(a.WaitForLog("stats: volume vol0 staging log " + log + ": state=normal used_bytes="));
    const CommandResult table = RunAggregator({"status", "--control", a.control_path()});
    CHECK(Contains(table.stdout_text,
                   "VOLUME           STAGING LOG\nvol0             " + log + " state=normal"));
    c.Shutdown();
  }

  TEST_CASE("after a SIGKILL every acknowledged write reads back from the replayed log") {
    const TempDir dir("dst-stagelog");
    PluginServer member({"file=" + dir.File("member.img"), "size=8M"});
    const std::string log = dir.File("vol0.log");
    std::vector<Write> writes;
    {
      AggregatorServer a(ServeOptions({"--raw", "--log", log, "--log-size", "4M", member.uri()}));
      NbdClient c;
      REQUIRE_NBD_OK(c.Connect(a.uri()));
      // The member goes away: writes are acknowledged from the log, none can be destaged.
      member.KillAndWait();
      for (uint64_t i = 0; i < 16; ++i) {
        writes.push_back({i * 192 * kKiB, RandomBytes(128 * kKiB, 10 + i)});
        REQUIRE_NBD_OK(c.Pwrite(writes.back().data, writes.back().offset));
      }
      const std::string json = StatusJson(a);
      CHECK(JsonNumber(json, "head_sequence") == 16);
      CHECK(JsonNumber(json, "destaged_sequence") == 0);
      CHECK(JsonNumber(json, "pending_bytes") == 16 * (128 + 4) * kKiB);
      a.Kill(SIGKILL);
      CHECK(a.Wait(5s).has_value());
    }
    member.Restart();
    Served a({"--raw", "--log", log, member.uri()});
    CHECK(a.WaitForLog("staging log " + log + " replayed: 16 records, head 16, destaged 0, 16 to"));
    NbdClient c;
    REQUIRE_NBD_OK(c.Connect(a.uri()));
    CheckVolume(c, writes);
    WaitDestaged(a);
    for (const Write& w : writes)
      CHECK(ReadFileRange(dir.File("member.img"), w.offset, w.data.size()) == w.data);
    c.Shutdown();
  }

  TEST_CASE("a slow member: writes wait while the log is full, and go on as it is destaged") {
    const TempDir dir("dst-stagelog");
    // Every member write takes 100 ms: the destager cannot keep up with the client.
    PluginServer member({"file=" + dir.File("member.img"), "size=8M", "delay-write=100ms"},
                        Transport::kUnix, {"--filter=delay"});
    const std::string log = dir.File("vol0.log");
    Served a({"--raw", "--log", log, "--log-size", "1M", member.uri()});
    NbdClient c;
    REQUIRE_NBD_OK(c.Connect(a.uri()));
    std::vector<Write> writes;
    for (uint64_t i = 0; i < 12; ++i) {
      writes.push_back({i * 128 * kKiB, RandomBytes(128 * kKiB, 30 + i)});
      REQUIRE_NBD_OK(c.Pwrite(writes.back().data, writes.back().offset));
    }
    CHECK(a.WaitForLog("volume vol0: staging log " + log + " full ("));
    CHECK(a.WaitForLog("volume vol0: staging log " + log + " has room again: writes resume"));
    CheckVolume(c, writes);
    WaitDestaged(a);
    for (const Write& w : writes)
      CHECK(ReadFileRange(dir.File("member.img"), w.offset, w.data.size()) == w.data);
    c.Shutdown();
  }

  TEST_CASE("an assembled mirror volume: its log is formatted with the volume's UUID") {
    FileMembers m(2, 2 * kMemberSize);
    CreateOk({"--name", "safe", "--layout", "mirror"}, m.uris());
    const std::string log = m.dir().File("safe.log");
    std::vector<Write> writes;
    {
      Served a(Concat({"--log", log, "--log-size", "2M"}, m.uris()), "safe");
      const CommandResult inspect = RunAggregator(Concat({"inspect", "--json"}, {m.uri(0)}));
      const std::string& text = inspect.stdout_text;
      const size_t key = text.find("\"volume_uuid\"");
      REQUIRE_MESSAGE(key != std::string::npos, text);
      const size_t at = text.find('"', text.find(':', key)) + 1;
      const std::string uuid = text.substr(at, 36);
      CHECK(a.WaitForLog("volume safe: staging log " + log + " formatted for volume " + uuid));
      NbdClient c;
      REQUIRE_NBD_OK(c.Connect(a.uri("safe")));
      writes = WritePattern(c);
      WaitDestaged(a);
      // Removed while serving, its log would be left behind: refused.
      CheckCommandRefused(
          RunAggregator({"volume", "--control", a.control_path(), "remove", "safe", "--force"}),
          "volume safe is served through a staging log: it is removed by a restart without it");
      c.Shutdown();
    }
    // Served again without the log: the members hold every write.
    Served a(m.uris(), "safe");
    NbdClient c;
    REQUIRE_NBD_OK(c.Connect(a.uri("safe")));
    CheckVolume(c, writes);
    c.Shutdown();
  }

  TEST_CASE("a log of another volume is refused, and --log-size is needed to create one") {
    FileMembers m(1, kMemberSize);
    const std::string log = m.dir().File("vol0.log");
    { Served a({"--raw", "--log", log, "--log-size", "1M", m.uri(0)}); }
    AggregatorOptions other = ServeOptions({"--raw", "--name", "other", "--log", log, m.uri(0)});
    const StartFailure f = AggregatorServer::StartExpectingFailure(std::move(other));
    CHECK(f.exit_code == 1);
    CHECK(CountOf(f.stderr_text, "error: ") == 1);
    CHECK(Contains(LineWithAll(f.stderr_text, {"error: "}),
                   "error: volume other: " + log + ": staging log belongs to volume "));
    AggregatorOptions missing =
        ServeOptions({"--raw", "--log", m.dir().File("none.log"), m.uri(0)});
    const StartFailure g = AggregatorServer::StartExpectingFailure(std::move(missing));
    CHECK(g.exit_code == 1);
    CHECK(Contains(LineWithAll(g.stderr_text, {"error: "}), "(--log-size creates it)"));
  }
}

}  // namespace
}  // namespace dst::test
