// A volume served through its staging log (serve --log, docs/staging-log.md "Serving through the
// log"): real plugin members, the real dst-aggregator, a libnbd client. What a user checks: data
// written reads back, status --json shows the log destaged (D at the head) and the members then
// hold the data; after a SIGKILL every acknowledged write reads back from the replayed log; a log
// of another volume is refused.
#include <doctest/doctest.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "tests/harness/aggregator_process.h"
#include "tests/harness/nbd_client.h"
#include "tests/harness/test_data.h"
#include "tests/integration/plugin_fixture.h"
#include "tests/integration/volume_fixture.h"

namespace dst::test::aggregator_stagelog_test {
namespace {

using namespace std::chrono_literals;

constexpr uint64_t kMemberSize = 8 * kMiB;

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

// `count` writes of 128 KiB of random bytes (seeds from `seed`), `stride` apart from offset 0,
// appended to `writes`.
void WriteChunks(NbdClient& c, uint64_t count, uint64_t stride, uint64_t seed,
                 std::vector<Write>* writes) {
  for (uint64_t i = 0; i < count; ++i) {
    writes->push_back({i * stride, RandomBytes(128 * kKiB, seed + i)});
    REQUIRE_NBD_OK(c.Pwrite(writes->back().data, writes->back().offset));
  }
}

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

// The member file of a raw volume of one member holds every write (once destaged).
void CheckMemberFile(const std::string& file, const std::vector<Write>& writes) {
  for (const Write& w : writes)
    CHECK(ReadFileRange(file, w.offset, w.data.size()) == w.data);
}

void CheckVolume(NbdClient& c, const std::vector<Write>& writes) {
  for (const Write& w : writes) {
    Bytes back(w.data.size());
    REQUIRE_NBD_OK(c.Pread(back, w.offset));
    CHECK(back == Expected(writes, w.offset, w.data.size()));
  }
}

// What `snapshot list --json` says.
struct SnapshotPoints {
  uint64_t oldest = 0;
  uint64_t newest = 0;
  std::string newest_time;
};

SnapshotPoints SnapshotList(const AggregatorServer& a) {
  const CommandResult r =
      RunAggregator({"snapshot", "list", "vol0", "--json", "--control", a.control_path()});
  REQUIRE_MESSAGE(r.exit_code == 0, r.stderr_text);
  const std::string& json = r.stdout_text;
  SnapshotPoints p;
  const size_t newest = json.find("\"newest\": ");
  REQUIRE_MESSAGE(newest != std::string::npos, json);
  p.oldest = static_cast<uint64_t>(JsonNumber(json, "sequence"));
  p.newest = static_cast<uint64_t>(JsonNumber(json.substr(newest), "sequence"));
  const std::string needle = "\"time\": \"";
  const size_t time = json.find(needle, newest);
  if (time != std::string::npos)
    p.newest_time = json.substr(time + needle.size(),
                                json.find('"', time + needle.size()) - time - needle.size());
  return p;
}

// The whole export at `uri`, read with libnbd.
Bytes ReadWhole(const std::string& uri, uint64_t size) {
  NbdClient c;
  REQUIRE_NBD_OK(c.Connect(uri));
  Bytes out(size);
  for (uint64_t at = 0; at < size; at += 256 * kKiB)
    REQUIRE_NBD_OK(
        c.Pread(std::span(out).subspan(at, std::min<uint64_t>(256 * kKiB, size - at)), at));
  c.Shutdown();
  return out;
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
    CHECK(a.WaitForLog("stats: volume vol0 staging log " + log +
                       ": state=normal mode=write-back used_bytes="));
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
      WriteChunks(c, 16, 192 * kKiB, 10, &writes);
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
    CheckMemberFile(dir.File("member.img"), writes);
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
    WriteChunks(c, 12, 128 * kKiB, 30, &writes);
    CHECK(a.WaitForLog("volume vol0: staging log " + log + " full ("));
    CHECK(a.WaitForLog("volume vol0: staging log " + log + " has room again: writes resume"));
    CheckVolume(c, writes);
    WaitDestaged(a);
    CheckMemberFile(dir.File("member.img"), writes);
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
  TEST_CASE("snapshots: each VOLUME@SEQ export reads its generation, and is read-only") {
    constexpr uint64_t kSize = kMiB;
    FileMembers m(1, kSize);
    const std::string log = m.dir().File("vol0.log");
    Served a({"--raw", "--log", log, "--log-size", "8M", "--log-retain", "1h", m.uri(0)});
    NbdClient c;
    REQUIRE_NBD_OK(c.Connect(a.uri()));
    const uint64_t before = SnapshotList(a).newest;
    CHECK(before == 0);
    std::vector<Bytes> generations;
    std::vector<SnapshotPoints> points;
    for (uint64_t g = 0; g < 3; ++g) {
      // Generation g: the whole volume, in four writes.
      generations.push_back(RandomBytes(kSize, 50 + g));
      for (uint64_t at = 0; at < kSize; at += 256 * kKiB)
        REQUIRE_NBD_OK(c.Pwrite(std::span(generations.back()).subspan(at, 256 * kKiB), at));
      points.push_back(SnapshotList(a));
      CHECK(points.back().oldest == 0);  // the window holds everything
      CHECK(points.back().newest == 4 * (g + 1));
    }
    c.Shutdown();
    for (uint64_t g = 0; g < 3; ++g) {
      CAPTURE(g);
      CHECK(ReadWhole(a.uri("vol0@" + std::to_string(points[g].newest)), kSize) == generations[g]);
    }
    // The point before the first write: the members as they were, zeros.
    CHECK(ReadWhole(a.uri("vol0@0"), kSize) == Bytes(kSize, 0));
    // A time names the last write at or before it.
    CHECK(ReadWhole(a.uri("vol0@" + points[1].newest_time), kSize) == generations[1]);
    // Read-only: writes are refused.
    NbdClient s;
    REQUIRE_NBD_OK(s.Connect(a.uri("vol0@" + std::to_string(points[0].newest))));
    CHECK(s.IsReadOnly());
    CHECK(s.Pwrite(Bytes(4096, 1), 0).err == EPERM);
    s.Shutdown();
    // Nothing was destaged: the members still hold zeros.
    CHECK(ReadFileRange(m.file(0), 0, kSize) == Bytes(kSize, 0));
    // The table form.
    const CommandResult text =
        RunAggregator({"snapshot", "list", "vol0", "--control", a.control_path()});
    CHECK(text.exit_code == 0);
    CHECK(Contains(text.stdout_text, "volume vol0: snapshots vol0@0 to vol0@12\noldest: 0 at "));
    CHECK(Contains(text.stdout_text, "\nretain: 1 h\n"));
  }

  TEST_CASE("snapshots: a point below D, past the head or malformed is refused at OPT_GO") {
    FileMembers m(1, kMemberSize);
    const std::string log = m.dir().File("vol0.log");
    Served a({"--raw", "--log", log, "--log-size", "1M", m.uri(0)});
    NbdClient c;
    REQUIRE_NBD_OK(c.Connect(a.uri()));
    REQUIRE_NBD_OK(c.Pwrite(RandomBytes(4096, 1), 0));
    REQUIRE_NBD_OK(c.Pwrite(RandomBytes(4096, 2), 0));
    WaitDestaged(a);
    const SnapshotPoints points = SnapshotList(a);
    CHECK(points.oldest == 2);
    CHECK(points.newest == 2);
    const std::string available = "volume vol0 has snapshots of sequences 2 to 2";
    for (const auto& [point, reason] : std::vector<std::pair<std::string, std::string>>{
             {"1", "export 'vol0@1': sequence 1 is not available: " + available},
             {"3", "export 'vol0@3': sequence 3 is not available: " + available},
             {"soon",
              "export 'vol0@soon': snapshot point 'soon' is neither a sequence number "
              "nor a UTC time such as 2026-12-03T15:00:00Z"}}) {
      CAPTURE(point);
      NbdClient r;
      const NbdStatus st = r.Connect(a.uri("vol0@" + point));
      CHECK(st.err == ENOENT);
      CHECK(a.WaitForLog("handshake: " + reason));
    }
    NbdClient ok;
    REQUIRE_NBD_OK(ok.Connect(a.uri("vol0@2")));
    ok.Shutdown();
    c.Shutdown();
    CheckCommandRefused(RunAggregator({"snapshot", "list", "nope", "--control", a.control_path()}),
                        "no volume named 'nope'");
  }
  TEST_CASE("snapshots: a full log destages inside the retention window, and says so") {
    FileMembers m(1, kMemberSize);
    const std::string log = m.dir().File("vol0.log");
    Served a({"--raw", "--log", log, "--log-size", "1M", "--log-retain", "1h", m.uri(0)});
    NbdClient c;
    REQUIRE_NBD_OK(c.Connect(a.uri()));
    std::vector<Write> writes;
    WriteChunks(c, 16, 128 * kKiB, 70, &writes);
    CHECK(a.WaitForLog("volume vol0: staging log " + log +
                       " full: destaging record 1 inside the retention window; points before it "
                       "are no longer snapshots"));
    CheckVolume(c, writes);
    const SnapshotPoints points = SnapshotList(a);
    CHECK(points.oldest > 0);
    CHECK(points.newest >= 16);  // and padding records at the ring's end
    CHECK(ReadWhole(a.uri("vol0@" + std::to_string(points.newest)), kMemberSize) ==
          Expected(writes, 0, kMemberSize));
    c.Shutdown();
  }

  TEST_CASE(
      "write-through: the members have each write at once, and VOLUME@SEQ reads each "
      "generation from the before-images") {
    constexpr uint64_t kSize = kMiB;
    FileMembers m(1, kSize);
    const std::string log = m.dir().File("vol0.log");
    const std::vector<std::string> through = {
        "--raw", "--log", log, "--log-size", "8M", "--log-mode", "write-through", m.uri(0)};
    std::vector<Bytes> generations;
    std::vector<SnapshotPoints> points;
    {
      AggregatorServer a(ServeOptions(through));
      CHECK(a.WaitForLog("volume vol0: staging log " + log + " formatted for volume"));
      NbdClient c;
      REQUIRE_NBD_OK(c.Connect(a.uri()));
      for (uint64_t g = 0; g < 3; ++g) {
        // Generation g: the whole volume, in four writes; the member file has it once they are
        // acknowledged, with nothing to destage.
        generations.push_back(RandomBytes(kSize, 90 + g));
        for (uint64_t at = 0; at < kSize; at += 256 * kKiB)
          REQUIRE_NBD_OK(c.Pwrite(std::span(generations.back()).subspan(at, 256 * kKiB), at));
        CHECK(ReadFileRange(m.file(0), 0, kSize) == generations.back());
        points.push_back(SnapshotList(a));
        CHECK(points.back().oldest == 0);
        CHECK(points.back().newest == 4 * (g + 1));
      }
      const std::string json = StatusJson(a);
      CHECK(Contains(json, "\"staging_log\": {\"path\": \"" + log +
                               "\", \"state\": \"normal\", \"mode\": \"write-through\""));
      CHECK(JsonNumber(json, "head_sequence") == 12);
      CHECK(JsonNumber(json, "destaged_sequence") == 12);
      CHECK(JsonNumber(json, "pending_bytes") == 0);
      CHECK(JsonNumber(json, "pending_age_ms") == 0);
      for (uint64_t g = 0; g < 3; ++g) {
        CAPTURE(g);
        CHECK(ReadWhole(a.uri("vol0@" + std::to_string(points[g].newest)), kSize) ==
              generations[g]);
      }
      CHECK(ReadWhole(a.uri("vol0@0"), kSize) == Bytes(kSize, 0));
      CHECK(ReadWhole(a.uri("vol0@" + points[0].newest_time), kSize) == generations[0]);
      const CommandResult list =
          RunAggregator({"snapshot", "list", "vol0", "--control", a.control_path()});
      CHECK(Contains(list.stdout_text,
                     "volume vol0: snapshots vol0@0 to vol0@12\noldest: 0 at an unknown time\n"));
      CHECK(Contains(list.stdout_text,
                     "\nretain: as far back as the log's size reaches (write-through)\n"));
      NbdClient r;
      CHECK(r.Connect(a.uri("vol0@13")).err == ENOENT);
      CHECK(
          a.WaitForLog("handshake: export 'vol0@13': sequence 13 is not available: volume vol0 "
                       "has snapshots of sequences 0 to 12"));
      c.Shutdown();
      a.Kill(SIGKILL);
      CHECK(a.Wait(5s).has_value());
    }
    {
      // Replayed after the SIGKILL: the before-images serve the same points.
      Served a(through);
      CHECK(a.WaitForLog("staging log " + log +
                         " replayed: 12 records, head 12, write-through: snapshots from 0"));
      CHECK(ReadWhole(a.uri("vol0@" + std::to_string(points[1].newest)), kSize) == generations[1]);
      CHECK(ReadWhole(a.uri(), kSize) == generations[2]);
    }
    // The log lost: every acknowledged write is on the member.
    REQUIRE(std::remove(log.c_str()) == 0);
    Served a({"--raw", m.uri(0)});
    CHECK(ReadWhole(a.uri(), kSize) == generations[2]);
  }
}

}  // namespace
}  // namespace dst::test::aggregator_stagelog_test
