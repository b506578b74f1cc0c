// dst-aggregator with requests of unusual sizes, over real plugin members.
//
// aggregator_huge: the audit's W3. One 28-byte TRIM or WRITE_ZEROES of ~4 GiB
// on a stripe with 64 KiB chunks used to become 65,536 member I/Os sent at
// once; eight of them made members time out, the aggregator reconnect and
// the export nodes abort. Now each is a few member I/Os (a member's share of
// a stripe is one run), at most a window of them in flight; eight pipelined
// ones complete, without a member timeout, in bounded memory, leaving the
// data outside their range alone. So do blkdiscard- and mkfs-sized requests
// from libnbd.
//
// aggregator_block_size: the NBD spec's "Block size constraints". A client
// that never asked for block sizes (EXPORT_NAME; GO without
// NBD_INFO_BLOCK_SIZE) gets the default minimum of 1 and may send any
// alignment, on raw volumes over members that need 512-byte alignment and on
// checksummed volumes alike; the volume merges partial blocks, also when two
// clients write into the same blocks at once. A client that asked gets the
// members' minimum.
#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <libnbd.h>

#include "common/nbd_protocol.h"
#include "tests/harness/aggregator_process.h"
#include "tests/integration/plugin_fixture.h"
#include "tests/integration/raw_client.h"
#include "tests/integration/volume_fixture.h"

namespace dst::test::aggregator_requests_test {
namespace {

using namespace std::chrono_literals;
namespace nbd = ::dst::nbd;
using SteadyClock = std::chrono::steady_clock;

constexpr uint64_t kGiB = 1024 * kMiB;
// The audit's request length: the largest multiple of 64 KiB below 2^32.
constexpr uint32_t kHugeLength = 0xFFFF0000;

AggregatorOptions Serve(std::vector<std::string> args) {
  AggregatorOptions o;
  o.binary = DST_AGGREGATOR_PATH;
  o.args = std::move(args);
  return o;
}

// An aggregator that must end cleanly: exit code 0, no sanitizer report.
class Aggregator : public AggregatorServer {
 public:
  explicit Aggregator(std::vector<std::string> args) : AggregatorServer(Serve(std::move(args))) {}
  ~Aggregator() {
    const int code = Stop();
    CHECK_MESSAGE(code == 0, "dst-aggregator exit code " << code << "\n" << stderr_text());
    CHECK_MESSAGE(SanitizerReports().empty(), "sanitizer reports:\n" << stderr_text());
  }
};

// A line "Key:   123 kB" of /proc/PID/status, in bytes.
uint64_t ProcStatusBytes(pid_t pid, const std::string& key) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(key + ":", 0) != 0) continue;
    std::istringstream fields(line.substr(key.size() + 1));
    uint64_t kb = 0;
    fields >> kb;
    return kb * 1024;
  }
  throw std::runtime_error("no " + key + " in /proc/" + std::to_string(pid) + "/status");
}

// Resets the peak RSS (VmHWM) of a process to its current RSS.
void ResetPeakRss(pid_t pid) {
  std::ofstream("/proc/" + std::to_string(pid) + "/clear_refs") << "5";
}

// Sends all requests at once, then reads their replies: every one must
// succeed, each cookie once.
void Pipeline(RawClient& raw, const std::vector<nbd::RequestHeader>& requests) {
  for (const nbd::RequestHeader& r : requests)
    raw.SendRequest(r);
  std::set<uint64_t> answered;
  for (size_t i = 0; i < requests.size(); ++i) {
    const nbd::SimpleReply reply = raw.ReadSimpleReply();
    CHECK_MESSAGE(reply.error == 0, "cookie " << reply.cookie << ": NBD error " << reply.error);
    CHECK(answered.insert(reply.cookie).second);
  }
  CHECK(answered.size() == requests.size());
}

// ---------------------------------------------------------------------------
// Huge requests.

TEST_SUITE_BEGIN("aggregator_huge");

// A stripe with 64 KiB chunks over two sparse 4 GiB files: the audit's setup.
struct HugeStripe {
  TempDir dir{"dst-agg-huge"};
  PluginServer m0{{"file=" + dir.File("m0.img"), "size=4G"}};
  PluginServer m1{{"file=" + dir.File("m1.img"), "size=4G"}};
  Aggregator aggregator{{"--raw", "--layout", "stripe", "--chunk", "64K", m0.uri(), m1.uri()}};
  static constexpr uint64_t kSize = 8 * kGiB;

  // Member I/Os so far, both members together, from `status --json`.
  uint64_t MemberIos() {
    const CommandResult r =
        RunOk({DST_AGGREGATOR_PATH, "status", "--json", "--control", aggregator.control_path()});
    uint64_t total = 0;
    const std::string key = "\"ios\": ";
    for (size_t at = r.stdout_text.find(key); at != std::string::npos;
         at = r.stdout_text.find(key, at + 1))
      total += std::stoull(r.stdout_text.substr(at + key.size()));
    return total;
  }

  // What the aggregator's log must not hold after huge requests.
  void CheckNoMemberTrouble() {
    const std::string log = aggregator.stderr_text();
    CHECK_MESSAGE(!Contains(log, "no answer within"), log);
    CHECK_MESSAGE(!Contains(log, "reconnecting"), log);
    CHECK_MESSAGE(!Contains(log, "failed"), log);
  }
};

TEST_CASE("8 pipelined 4 GiB TRIMs, then 8 WRITE_ZEROES, on a stripe of two 4 GiB files") {
  HugeStripe v;
  NbdClient client;
  REQUIRE_NBD_OK(client.Connect(v.aggregator.uri()));
  REQUIRE(client.Size() == static_cast<int64_t>(HugeStripe::kSize));
  // Data before, inside and after the range the requests cover.
  const Bytes head = RandomBytes(kMiB, 31), inside = RandomBytes(kMiB, 32),
              tail = RandomBytes(kMiB, 33);
  REQUIRE_NBD_OK(client.Pwrite(head, 0));
  REQUIRE_NBD_OK(client.Pwrite(inside, 2 * kGiB));
  REQUIRE_NBD_OK(client.Pwrite(tail, HugeStripe::kSize - kMiB));

  RawClient raw(v.aggregator.socket_path(), 60s);
  raw.Greet();
  REQUIRE(raw.Go("vol0").size == HugeStripe::kSize);
  // Eight ranges of 4 GiB - 64 KiB, 512 MiB apart, all within [1 MiB, 8 GiB - 1 MiB).
  const auto requests = [](uint16_t type, uint64_t first_cookie) {
    std::vector<nbd::RequestHeader> out;
    for (uint64_t i = 0; i < 8; ++i)
      out.push_back(Request(type, kMiB + i * 512 * kMiB, kHugeLength, first_cookie + i));
    return out;
  };
  const pid_t pid = v.aggregator.pid();
  const uint64_t ios_before = v.MemberIos();
  const uint64_t rss_before = ProcStatusBytes(pid, "VmRSS");
  ResetPeakRss(pid);
  const auto start = SteadyClock::now();
  Pipeline(raw, requests(nbd::kCmdTrim, 100));
  const auto trimmed = SteadyClock::now();
  Pipeline(raw, requests(nbd::kCmdWriteZeroes, 200));
  const auto zeroed = SteadyClock::now();
  const uint64_t peak = ProcStatusBytes(pid, "VmHWM");
  const auto ms = [](auto d) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(d).count();
  };
  MESSAGE("8 TRIMs: " << ms(trimmed - start) << " ms, 8 WRITE_ZEROES: " << ms(zeroed - trimmed)
                      << " ms; RSS " << rss_before / kMiB << " MiB before, peak " << peak / kMiB
                      << " MiB");
  // Before, each such request took ~57 MB (65,536 member I/Os); eight at once
  // are now a few dozen member I/Os. The bound leaves room for the sanitizers.
  CHECK(peak < rss_before + 64 * kMiB);
  // Each request is a run per member, in pieces of at most 1 GiB: 4 or 6
  // member I/Os, not 65,535.
  const uint64_t ios = v.MemberIos() - ios_before;
  MESSAGE("member I/Os: " << ios);
  CHECK(ios <= 16 * 6);
  v.CheckNoMemberTrouble();

  CHECK(client.ReadOrThrow(kMiB, 0) == head);
  CHECK(client.ReadOrThrow(kMiB, HugeStripe::kSize - kMiB) == tail);
  CHECK(AllZero(client.ReadOrThrow(kMiB, 2 * kGiB)));
  // The bytes either side of the zeroed ranges' union stay.
  const uint64_t last_end = kMiB + 7 * 512 * kMiB + kHugeLength;
  CHECK(AllZero(client.ReadOrThrow(4096, kMiB)));
  CHECK(AllZero(client.ReadOrThrow(4096, last_end - 4096)));
  CHECK(client.ReadOrThrow(4096, kMiB - 4096) == Bytes(head.end() - 4096, head.end()));
}

TEST_CASE("blkdiscard- and mkfs-sized TRIM and WRITE_ZEROES from libnbd over the whole volume") {
  HugeStripe v;
  NbdClient client;
  REQUIRE_NBD_OK(client.Connect(v.aggregator.uri()));
  REQUIRE_NBD_OK(client.Pwrite(RandomBytes(kMiB, 41), 3 * kGiB));
  const uint64_t ios_before = v.MemberIos();
  // blkdiscard and mkfs discard a device in requests of the kernel's discard
  // limit (2 GiB less a sector for nbd); qemu-img zeroes in 2 GiB steps.
  const std::string script =
      "size = h.get_size()\n"
      "step = 2**31 - 512\n"
      "for off in range(0, size, step):\n"
      "    h.trim(min(step, size - off), off)\n"
      "for off in range(0, size, step):\n"
      "    h.zero(min(step, size - off), off)\n"
      "assert h.pread(1 << 20, 3 << 30) == bytes(1 << 20)\n"
      "h.zero(0xFFFF0000, 1 << 30, nbd.CMD_FLAG_NO_HOLE)\n"
      "print('ok')\n";
  const CommandResult r =
      RunOk({kPython3, "-m", "nbd", "-u", v.aggregator.uri(), "-c", script}, 60s);
  CHECK(Contains(r.stdout_text, "ok"));
  // 5 TRIMs and 5 WRITE_ZEROES of up to 2 GiB, and one of 4 GiB, each one
  // run per member in pieces of at most 1 GiB; and a read of 1 MiB.
  const uint64_t ios = v.MemberIos() - ios_before;
  MESSAGE("member I/Os: " << ios);
  CHECK(ios <= 10 * 4 + 6 + 32);
  v.CheckNoMemberTrouble();
  CHECK(AllZero(client.ReadOrThrow(kMiB, 3 * kGiB)));
}

TEST_SUITE_END();

// ---------------------------------------------------------------------------
// Block sizes.

TEST_SUITE_BEGIN("aggregator_block_size");

constexpr uint64_t kMemberSize = 16 * kMiB;

// The bytes of a volume as they must read: the writes applied in order.
struct Model {
  Bytes bytes;
  void Write(uint64_t offset, const Bytes& data) {
    std::copy(data.begin(), data.end(), bytes.begin() + offset);
  }
  Bytes Range(uint64_t offset, uint64_t length) const {
    return Bytes(bytes.begin() + offset, bytes.begin() + offset + length);
  }
};

// An unaligned read and write through a raw connection in transmission
// (simple replies), checked against the model: 1 MiB + 14 bytes at offset 1,
// 3 bytes across the first chunk boundary.
void CheckUnalignedRaw(RawClient& raw, Model& model) {
  const uint64_t offset = 1, length = kMiB + 14;
  raw.SendRequest(Request(nbd::kCmdRead, offset, length, 1));
  nbd::SimpleReply reply = raw.ReadSimpleReply();
  REQUIRE(reply.error == 0);
  Bytes got(length);
  raw.RecvOrThrow(got);
  CHECK(got == model.Range(offset, length));

  const Bytes three = {'x', 'y', 'z'};
  raw.SendRequest(Request(nbd::kCmdWrite, 64 * kKiB - 1, 3, 2), three);
  reply = raw.ReadSimpleReply();
  REQUIRE(reply.error == 0);
  model.Write(64 * kKiB - 1, three);
  raw.SendRequest(Request(nbd::kCmdRead, 64 * kKiB - 5, 11, 3));
  reply = raw.ReadSimpleReply();
  REQUIRE(reply.error == 0);
  Bytes back(11);
  raw.RecvOrThrow(back);
  CHECK(back == model.Range(64 * kKiB - 5, 11));
}

// The same through libnbd, told not to ask for block sizes.
void CheckUnalignedLibnbd(const std::string& uri, Model& model) {
  NbdClient client;
  REQUIRE(nbd_set_request_block_size(client.handle(), false) == 0);
  REQUIRE_NBD_OK(client.Connect(uri));
  CHECK(client.GetBlockSizes().minimum == 1);
  Bytes got(kMiB + 14);
  REQUIRE_NBD_OK(client.Pread(got, 1));
  CHECK(got == model.Range(1, kMiB + 14));
  const Bytes three = {'a', 'b', 'c'};
  REQUIRE_NBD_OK(client.Pwrite(three, 3 * kMiB + 4095));
  model.Write(3 * kMiB + 4095, three);
  CHECK(client.ReadOrThrow(7, 3 * kMiB + 4093) == model.Range(3 * kMiB + 4093, 7));
  // Unaligned WRITE_ZEROES and TRIM are served too.
  REQUIRE_NBD_OK(client.Zero(1000, 5 * kMiB + 3));
  std::fill_n(model.bytes.begin() + 5 * kMiB + 3, 1000, 0);
  CHECK(client.ReadOrThrow(1200, 5 * kMiB - 97) == model.Range(5 * kMiB - 97, 1200));
  REQUIRE_NBD_OK(client.Trim(100, 6 * kMiB + 1));  // inside one block: keeps its data
  CHECK(client.ReadOrThrow(200, 6 * kMiB) == model.Range(6 * kMiB, 200));
}

// Two clients that did not ask for block sizes, each with all its writes in
// flight at once: 30-byte writes into the same 4 KiB blocks, client A's in
// the first half of every 64-byte slot and client B's in the second, so no
// byte is written twice and the result is exact.
void CheckConcurrentMerges(const std::string& uri, Model& model) {
  constexpr uint64_t kArea = 7 * kMiB + 100, kSlots = 128;  // within the first 8 MiB
  struct Writer {
    NbdClient client;
    std::vector<Bytes> data;
    int errors = 0;
  };
  Writer writers[2];
  for (int w = 0; w < 2; ++w) {
    REQUIRE(nbd_set_request_block_size(writers[w].client.handle(), false) == 0);
    REQUIRE_NBD_OK(writers[w].client.Connect(uri));
    for (uint64_t s = 0; s < kSlots; ++s) {
      writers[w].data.push_back(RandomBytes(30, 1000 * w + s));
      model.Write(kArea + s * 64 + w * 32, writers[w].data.back());
    }
  }
  for (int w = 0; w < 2; ++w) {
    for (uint64_t s = 0; s < kSlots; ++s) {
      const Bytes& data = writers[w].data[s];
      REQUIRE(nbd_aio_pwrite(writers[w].client.handle(), data.data(), data.size(),
                             kArea + s * 64 + w * 32, NBD_NULL_COMPLETION, 0) > 0);
    }
  }
  // Both handles are driven until done, interleaved, for at most 30 s.
  const auto deadline = SteadyClock::now() + 30s;
  for (;;) {
    bool busy = false;
    for (Writer& w : writers) {
      nbd_handle* h = w.client.handle();
      if (nbd_aio_in_flight(h) == 0) continue;
      busy = true;
      REQUIRE(nbd_poll(h, 10) >= 0);
      for (int64_t cookie; (cookie = nbd_aio_peek_command_completed(h)) > 0;)
        if (nbd_aio_command_completed(h, cookie) < 0) ++w.errors;
    }
    if (!busy) break;
    REQUIRE_MESSAGE(SteadyClock::now() < deadline, "writes still in flight after 30 s");
  }
  CHECK(writers[0].errors == 0);
  CHECK(writers[1].errors == 0);
  const uint64_t length = kSlots * 64;
  NbdClient reader;
  REQUIRE(nbd_set_request_block_size(reader.handle(), false) == 0);
  REQUIRE_NBD_OK(reader.Connect(uri));
  const Bytes got = reader.ReadOrThrow(length, kArea);
  const auto diff = FirstDifference(got, model.Range(kArea, length));
  CHECK_MESSAGE(!diff, "first difference at volume offset " << kArea + *diff);
}

TEST_CASE("raw volume over 512-byte members: clients that never asked may send any alignment") {
  TempDir dir("dst-agg-blocks");
  PluginServer m0({"file=" + dir.File("m0.img"), "size=16M"});
  PluginServer m1({"file=" + dir.File("m1.img"), "size=16M"});
  Aggregator aggregator({"--raw", "--layout", "stripe", "--chunk", "64K", m0.uri(), m1.uri()});
  Model model{RandomBytes(2 * kMemberSize, 7)};

  // A client that asked for block sizes gets the members' minimum.
  NbdClient asker;
  REQUIRE_NBD_OK(asker.Connect(aggregator.uri()));
  CHECK(asker.GetBlockSizes().minimum == 512);
  REQUIRE_NBD_OK(asker.Pwrite(model.bytes, 0));

  {
    INFO("NBD_OPT_EXPORT_NAME");
    RawClient raw(aggregator.socket_path());
    raw.Greet();
    REQUIRE(raw.ExportName("vol0").size == 2 * kMemberSize);
    CheckUnalignedRaw(raw, model);
  }
  {
    INFO("NBD_OPT_GO without NBD_INFO_BLOCK_SIZE");
    RawClient raw(aggregator.socket_path());
    raw.Greet();
    const ExportInfo info = raw.Go("vol0");
    CHECK(info.min_block == 1);
    CHECK(info.preferred_block == 4096);
    CHECK(info.max_block == 32 * kMiB);
    CheckUnalignedRaw(raw, model);
  }
  {
    INFO("NBD_OPT_GO with NBD_INFO_BLOCK_SIZE");
    RawClient raw(aggregator.socket_path());
    raw.Greet();
    const ExportInfo info = raw.Go("vol0", {nbd::kInfoBlockSize});
    CHECK(info.min_block == 512);
    CHECK(info.preferred_block == 4096);
  }
  {
    INFO("libnbd without block sizes");
    CheckUnalignedLibnbd(aggregator.uri(), model);
  }
  {
    INFO("two clients merging into the same blocks at once");
    CheckConcurrentMerges(aggregator.uri(), model);
  }
  // After all of it, the volume reads as the model, also for an asker.
  CHECK(asker.ReadOrThrow(2 * kMemberSize, 0) == model.bytes);
  CHECK_MESSAGE(!Contains(aggregator.stderr_text(), "failed"), aggregator.stderr_text());
}

TEST_CASE("checksummed volume: clients that never asked may send any alignment") {
  FileMembers members(2, 20 * kMiB);
  CreateOk({"--name", "ck", "--layout", "stripe", "--chunk", "64K"}, members.uris());
  Aggregator aggregator(members.uris());
  const std::string uri = aggregator.uri("ck");
  NbdClient asker;
  REQUIRE_NBD_OK(asker.Connect(uri));
  const uint64_t size = static_cast<uint64_t>(asker.Size());
  REQUIRE(size >= 8 * kMiB);
  CHECK(asker.GetBlockSizes().minimum == 1);  // merges inside whoever asks
  Model model{RandomBytes(size, 8)};
  for (uint64_t at = 0; at < size; at += 16 * kMiB)
    REQUIRE_NBD_OK(asker.Pwrite({model.bytes.data() + at, std::min(16 * kMiB, size - at)}, at));

  {
    INFO("NBD_OPT_EXPORT_NAME");
    RawClient raw(aggregator.socket_path());
    raw.Greet();
    REQUIRE(raw.ExportName("ck").size == size);
    CheckUnalignedRaw(raw, model);
  }
  {
    INFO("NBD_OPT_GO without NBD_INFO_BLOCK_SIZE");
    RawClient raw(aggregator.socket_path());
    raw.Greet();
    CHECK(raw.Go("ck").min_block == 1);
    CheckUnalignedRaw(raw, model);
  }
  {
    INFO("libnbd without block sizes");
    CheckUnalignedLibnbd(uri, model);
  }
  {
    INFO("two clients merging into the same blocks at once");
    CheckConcurrentMerges(uri, model);
  }
  for (uint64_t at = 0; at < size; at += 16 * kMiB) {
    const uint64_t length = std::min(16 * kMiB, size - at);
    CHECK(asker.ReadOrThrow(length, at) == model.Range(at, length));
  }
  CHECK_MESSAGE(!Contains(aggregator.stderr_text(), "failed"), aggregator.stderr_text());
}

TEST_SUITE_END();

}  // namespace
}  // namespace dst::test::aggregator_requests_test
