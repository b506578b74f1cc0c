// Integration tests of dst-aggregator's data paths: volumes built from real
// member servers (nbdkit with our plugin or its memory plugin, qemu-nbd,
// nbd-server), checked byte for byte against an independent model of the
// linear and stripe layouts, and driven by the standard NBD clients.
#include <arpa/inet.h>
#include <libnbd.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>

#include "tests/harness/aggregator_process.h"
#include "tests/integration/plugin_fixture.h"
#include "tests/integration/volume_fixture.h"

namespace dst::test::aggregator_test {
namespace {

using namespace std::chrono_literals;

inline constexpr const char* kQemuNbd = DST_TOOL_QEMU_NBD;
inline constexpr const char* kNbdServer = DST_TOOL_NBD_SERVER;

// ---------------------------------------------------------------------------
// Servers that check on teardown that they ended cleanly.

// nbdkit's memory plugin, behind the given filters (with their arguments).
NbdkitOptions MemoryOptions(uint64_t size, const std::vector<std::string>& filters,
                            const std::vector<std::string>& filter_args) {
  NbdkitOptions o;
  o.nbdkit = DST_TOOL_NBDKIT;
  o.plugin = "memory";
  o.args = {"size=" + std::to_string(size)};
  o.args.insert(o.args.end(), filter_args.begin(), filter_args.end());
  for (const std::string& f : filters)
    o.nbdkit_flags.push_back("--filter=" + f);
  return o;
}

// nbdkit's memory plugin: a member with no backing file.
class MemoryServer : public NbdkitServer {
 public:
  explicit MemoryServer(uint64_t size, const std::vector<std::string>& filters = {},
                        const std::vector<std::string>& filter_args = {})
      : NbdkitServer(MemoryOptions(size, filters, filter_args)) {}
  ~MemoryServer() {
    const int code = Stop();
    CHECK_MESSAGE(code == 0, "nbdkit memory exit code " << code << "\n" << stderr_text());
  }
};

AggregatorOptions AggregatorArgs(std::vector<std::string> args, AggregatorListen listen) {
  AggregatorOptions o;
  o.binary = DST_AGGREGATOR_PATH;
  o.args = std::move(args);
  o.listen = listen;
  return o;
}

// dst-aggregator; on teardown checks that SIGTERM stopped it with exit code 0
// and that no sanitizer reported anything (leaks included) meanwhile.
class Aggregator : public AggregatorServer {
 public:
  explicit Aggregator(std::vector<std::string> args,
                      AggregatorListen listen = AggregatorListen::kUnix)
      : AggregatorServer(AggregatorArgs(std::move(args), listen)) {}
  ~Aggregator() {
    const int code = Stop();
    CHECK_MESSAGE(code == 0, "dst-aggregator exit code " << code << "\n" << stderr_text());
    CHECK_MESSAGE(SanitizerReports().empty(), "sanitizer reports:\n" << stderr_text());
  }
};

StartFailure ExpectAggregatorFailure(std::vector<std::string> args) {
  AggregatorOptions o = AggregatorArgs(std::move(args), AggregatorListen::kUnix);
  o.start_timeout = 10s;
  return AggregatorServer::StartExpectingFailure(std::move(o));
}

// ---------------------------------------------------------------------------
// The layout model: an implementation of the contract independent of
// aggregator/volume/, so that both have to agree.

struct Geometry {
  std::vector<uint64_t> member_sizes;
  uint64_t chunk = 0;  // 0: linear

  bool stripe() const { return chunk != 0; }
  size_t members() const { return member_sizes.size(); }
  // Stripe: bytes of every member that the volume uses.
  uint64_t per_member() const {
    return *std::min_element(member_sizes.begin(), member_sizes.end()) / chunk * chunk;
  }
  uint64_t size() const {
    if (stripe()) return per_member() * members();
    uint64_t total = 0;
    for (uint64_t s : member_sizes)
      total += s;
    return total;
  }

  // Calls f(member, member_offset, volume_offset, length) for every
  // contiguous run of the mapping, in volume order.
  template <typename F>
  void ForEachRun(F f) const {
    if (!stripe()) {
      uint64_t volume_offset = 0;
      for (size_t m = 0; m < members(); ++m) {
        f(m, uint64_t{0}, volume_offset, member_sizes[m]);
        volume_offset += member_sizes[m];
      }
      return;
    }
    for (uint64_t k = 0; k < size() / chunk; ++k)
      f(k % members(), (k / members()) * chunk, k * chunk, chunk);
  }

  // Volume offsets where the next byte lives on another member.
  std::vector<uint64_t> Boundaries() const {
    std::vector<uint64_t> out;
    ForEachRun([&](size_t, uint64_t, uint64_t volume_offset, uint64_t) {
      if (volume_offset > 0) out.push_back(volume_offset);
    });
    return out;
  }

  // The volume's bytes given every member's bytes.
  Bytes VolumeFrom(const std::vector<Bytes>& images) const {
    Bytes volume(size());
    ForEachRun([&](size_t m, uint64_t mo, uint64_t vo, uint64_t len) {
      std::copy_n(images[m].begin() + mo, len, volume.begin() + vo);
    });
    return volume;
  }

  // Every member's bytes: `initial`, overwritten where the volume maps.
  std::vector<Bytes> MemberImages(const Bytes& volume, std::vector<Bytes> initial) const {
    ForEachRun([&](size_t m, uint64_t mo, uint64_t vo, uint64_t len) {
      std::copy_n(volume.begin() + vo, len, initial[m].begin() + mo);
    });
    return initial;
  }

  std::vector<std::string> Args() const {
    if (!stripe()) return {"--raw", "--layout", "linear"};
    return {"--raw", "--layout", "stripe", "--chunk", std::to_string(chunk / kKiB) + "K"};
  }
};

std::vector<Bytes> ZeroImages(const Geometry& g) {
  std::vector<Bytes> images;
  for (uint64_t s : g.member_sizes)
    images.emplace_back(s, 0);
  return images;
}

// ---------------------------------------------------------------------------
// Members: plugin exports on temp files, and memory exports.

enum class Backend { kPlugin, kMemory };

class Members {
 public:
  Members(const std::vector<uint64_t>& sizes, const std::vector<Backend>& backends) {
    REQUIRE(sizes.size() == backends.size());
    for (size_t i = 0; i < sizes.size(); ++i)
      Add(sizes[i], backends[i]);
  }

  const std::vector<std::string>& uris() const { return uris_; }
  // The backing file of member i, or "" for a memory member.
  const std::string& file(size_t i) const { return files_[i]; }

 private:
  void Add(uint64_t size, Backend backend) {
    if (backend == Backend::kMemory) {
      memory_.push_back(std::make_unique<MemoryServer>(size));
      uris_.push_back(memory_.back()->uri());
      files_.push_back("");
      return;
    }
    files_.push_back(dir_.File("member" + std::to_string(files_.size()) + ".img"));
    plugins_.push_back(std::make_unique<PluginServer>(
        std::vector<std::string>{"file=" + files_.back(), "size=" + std::to_string(size)}));
    uris_.push_back(plugins_.back()->uri());
  }

  TempDir dir_{"dst-agg-members"};
  std::vector<std::unique_ptr<PluginServer>> plugins_;
  std::vector<std::unique_ptr<MemoryServer>> memory_;
  std::vector<std::string> uris_;
  std::vector<std::string> files_;
};

// ---------------------------------------------------------------------------
// Random I/O through the volume, mirrored into the model.

struct Op {
  bool zero = false;  // WRITE_ZEROES instead of WRITE
  uint64_t offset = 0;
  uint64_t length = 0;
  Bytes data;  // for writes

  bool Overlaps(const Op& o) const {
    return offset < o.offset + o.length && o.offset < offset + length;
  }
};

void Apply(const Op& op, Bytes& model) {
  if (op.zero)
    std::fill_n(model.begin() + op.offset, op.length, 0);
  else
    std::copy(op.data.begin(), op.data.end(), model.begin() + op.offset);
}

std::runtime_error LibnbdFailure(const std::string& what) {
  const char* msg = nbd_get_error();
  return std::runtime_error(what + ": " + (msg ? msg : "unknown libnbd error"));
}

// Sends every op at once (they must not overlap, so their order does not
// matter), waits for all and requires that all succeeded.
void RunConcurrently(NbdClient& client, const std::vector<Op>& ops) {
  nbd_handle* h = client.handle();
  std::vector<int64_t> cookies;
  for (const Op& op : ops) {
    const int64_t cookie =
        op.zero ? nbd_aio_zero(h, op.length, op.offset, NBD_NULL_COMPLETION, 0)
                : nbd_aio_pwrite(h, op.data.data(), op.length, op.offset, NBD_NULL_COMPLETION, 0);
    if (cookie == -1) throw LibnbdFailure("submitting I/O");
    cookies.push_back(cookie);
  }
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  while (nbd_aio_in_flight(h) > 0) {
    if (nbd_poll(h, 1000) == -1) throw LibnbdFailure("nbd_poll");
    if (std::chrono::steady_clock::now() > deadline) throw std::runtime_error("I/O timed out");
  }
  for (size_t i = 0; i < ops.size(); ++i) {
    INFO((ops[i].zero ? "zero " : "write ") << ops[i].length << " at " << ops[i].offset);
    CHECK_MESSAGE(nbd_aio_command_completed(h, cookies[i]) == 1, nbd_get_error());
  }
}

class OpGenerator {
 public:
  OpGenerator(uint64_t volume_size, uint64_t seed) : size_(volume_size), rng_(seed) {}

  // Mostly small, some up to a few MiB: small ones hit single chunks, large
  // ones span many chunks and members. All multiples of 512 (the members'
  // minimum block size).
  Op Random() {
    const uint64_t blocks = size_ / 512;
    const uint64_t start = Uniform(0, blocks - 1);
    const uint64_t max_blocks = MaxBlocks();
    Op op;
    op.offset = start * 512;
    op.length = Uniform(1, std::min(max_blocks, blocks - start)) * 512;
    op.zero = Uniform(0, 9) == 0;
    if (!op.zero) op.data = RandomBytes(op.length, rng_());
    return op;
  }

  // A write of `length` bytes at `offset`.
  Op Write(uint64_t offset, uint64_t length) {
    Op op;
    op.offset = offset;
    op.length = length;
    op.data = RandomBytes(length, rng_());
    return op;
  }

 private:
  uint64_t MaxBlocks() {
    const uint64_t dice = Uniform(0, 19);
    if (dice < 14) return 128;   // <= 64 KiB
    if (dice < 19) return 1024;  // <= 512 KiB
    return 6 * 1024;             // <= 3 MiB
  }
  uint64_t Uniform(uint64_t lo, uint64_t hi) {
    return std::uniform_int_distribution<uint64_t>(lo, hi)(rng_);
  }

  uint64_t size_;
  std::mt19937_64 rng_;
};

// Moves op into the batch unless it overlaps one already there.
bool AddIfDisjoint(std::vector<Op>& batch, Op& op) {
  for (const Op& o : batch)
    if (o.Overlaps(op)) return false;
  batch.push_back(std::move(op));
  return true;
}

void RunBatches(NbdClient& client, std::vector<Op> ops, Bytes& model, size_t depth) {
  std::vector<Op> batch;
  auto flush = [&] {
    RunConcurrently(client, batch);
    for (const Op& op : batch)
      Apply(op, model);
    batch.clear();
  };
  for (Op& op : ops) {
    if (batch.size() == depth) flush();
    if (!AddIfDisjoint(batch, op)) {
      flush();
      batch.push_back(std::move(op));
    }
  }
  flush();
}

// Writes straddling member and chunk boundaries (a sample of them when there
// are many), so that every kind of split is exercised at least once.
void WriteAcrossBoundaries(NbdClient& client, const Geometry& g, OpGenerator& gen, Bytes& model) {
  const std::vector<uint64_t> boundaries = g.Boundaries();
  const size_t step = std::max<size_t>(1, boundaries.size() / 64);
  // First one write over the whole volume but its first and last blocks.
  std::vector<Op> ops = {gen.Write(512, g.size() - 1024)};
  for (size_t i = 0; i < boundaries.size(); i += step)
    ops.push_back(gen.Write(boundaries[i] - 1536, 4096));
  RunBatches(client, std::move(ops), model, 8);
}

void RandomWrites(NbdClient& client, OpGenerator& gen, Bytes& model, int count) {
  std::vector<Op> ops;
  for (int i = 0; i < count; ++i)
    ops.push_back(gen.Random());
  RunBatches(client, std::move(ops), model, 8);
}

// ---------------------------------------------------------------------------
// Checks.

void CheckEqual(const Bytes& got, const Bytes& want, const std::string& what, uint64_t base = 0) {
  const auto diff = FirstDifference(got, want);
  CHECK_MESSAGE(!diff, what << ": first difference at byte " << base + diff.value_or(0) << " (got "
                            << got.size() << " bytes, want " << want.size() << ")");
}

// Reads the whole volume in pieces that are not chunk-aligned, then small
// reads across boundaries, and compares everything with the model.
void CheckVolumeReads(NbdClient& client, const Geometry& g, const Bytes& model) {
  constexpr uint64_t kPiece = kMiB + 3 * 512;
  for (uint64_t off = 0; off < g.size(); off += kPiece) {
    const uint64_t len = std::min(kPiece, g.size() - off);
    const Bytes want(model.begin() + off, model.begin() + off + len);
    CheckEqual(client.ReadOrThrow(len, off), want, "volume read at " + std::to_string(off), off);
  }
  const std::vector<uint64_t> boundaries = g.Boundaries();
  const size_t step = std::max<size_t>(1, boundaries.size() / 400);
  for (size_t i = 0; i < boundaries.size(); i += step) {
    const uint64_t off = boundaries[i] - 512;
    const Bytes want(model.begin() + off, model.begin() + off + 1024);
    CheckEqual(client.ReadOrThrow(1024, off), want,
               "read across boundary " + std::to_string(boundaries[i]));
  }
}

// Every member's content: the backing file for plugin members, a direct NBD
// read (bypassing the aggregator) for memory members.
Bytes MemberContent(const Members& members, size_t i, uint64_t size) {
  if (!members.file(i).empty()) return ReadFile(members.file(i));
  NbdClient direct;
  REQUIRE_NBD_OK(direct.Connect(members.uris()[i]));
  Bytes out = direct.ReadOrThrow(size, 0);
  direct.Shutdown();
  return out;
}

void CheckMembers(const Members& members, const Geometry& g, const Bytes& model) {
  const std::vector<Bytes> want = g.MemberImages(model, ZeroImages(g));
  for (size_t i = 0; i < g.members(); ++i)
    CheckEqual(MemberContent(members, i, g.member_sizes[i]), want[i],
               "member " + std::to_string(i) + " " + members.uris()[i]);
}

struct MapEntry {
  uint64_t offset, length;
  uint32_t type;  // base:allocation flags
  bool operator==(const MapEntry&) const = default;
};

std::string Describe(const std::vector<MapEntry>& map) {
  std::ostringstream out;
  for (const MapEntry& e : map)
    out << e.offset << "+" << e.length << ":" << e.type << " ";
  return out.str();
}

// Appends e, merged with its predecessor if contiguous and of the same type:
// where the aggregator or a member splits extents is not the contract.
void AppendMerged(std::vector<MapEntry>& out, MapEntry e) {
  if (!out.empty() && out.back().type == e.type &&
      out.back().offset + out.back().length == e.offset) {
    out.back().length += e.length;
    return;
  }
  out.push_back(e);
}

// Parses `nbdinfo --map` lines: "OFFSET LENGTH TYPE DESCRIPTION".
std::vector<MapEntry> ParseMap(const std::string& text) {
  std::istringstream in(text);
  std::string line;
  std::vector<MapEntry> out;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    MapEntry e{};
    if (fields >> e.offset >> e.length >> e.type) AppendMerged(out, e);
  }
  return out;
}

// A member's allocation map as it reports it itself: all data if it does not
// offer base:allocation.
std::vector<MapEntry> MemberMap(const std::string& uri, uint64_t size) {
  NbdClient direct;
  REQUIRE_NBD_OK(direct.Connect(uri));
  if (!direct.CanBlockStatus()) return {{0, size, 0}};
  std::vector<Extent> extents;
  REQUIRE_NBD_OK(direct.Map(size, 0, &extents));
  std::vector<MapEntry> out;
  for (const Extent& e : extents)
    AppendMerged(out, {e.offset, e.length, e.flags});
  return out;
}

// The volume's map that the members' own maps imply.
std::vector<MapEntry> ExpectedVolumeMap(const Geometry& g, const std::vector<std::string>& uris) {
  std::vector<std::vector<MapEntry>> members;
  for (size_t i = 0; i < g.members(); ++i)
    members.push_back(MemberMap(uris[i], g.member_sizes[i]));
  std::vector<MapEntry> out;
  g.ForEachRun([&](size_t m, uint64_t mo, uint64_t vo, uint64_t len) {
    for (const MapEntry& e : members[m]) {
      const uint64_t lo = std::max(e.offset, mo), hi = std::min(e.offset + e.length, mo + len);
      if (lo < hi) AppendMerged(out, {vo + lo - mo, hi - lo, e.type});
    }
  });
  return out;
}

void CheckMapsEqual(const std::vector<MapEntry>& got, const std::vector<MapEntry>& want) {
  CHECK_MESSAGE(got == want, "got " << Describe(got) << "\nwant " << Describe(want));
}

// The volume's block status, asked through `client`, against the members'.
void CheckVolumeMap(NbdClient& client, const Geometry& g, const std::vector<std::string>& uris) {
  std::vector<Extent> extents;
  REQUIRE_NBD_OK(client.Map(g.size(), 0, &extents));
  std::vector<MapEntry> got;
  for (const Extent& e : extents)
    AppendMerged(got, {e.offset, e.length, e.flags});
  CheckMapsEqual(got, ExpectedVolumeMap(g, uris));
}

void CheckAdvertised(NbdClient& client, const Geometry& g) {
  CHECK(client.Size() == static_cast<int64_t>(g.size()));
  CHECK_FALSE(client.IsReadOnly());
  CHECK(client.CanMultiConn());
  CHECK(client.CanFlush());
  CHECK(client.CanZero());
  const BlockSizes b = client.GetBlockSizes();
  CHECK(b.minimum == 512);  // the plugin's minimum; memory's is lower
  CHECK(b.preferred >= 4096);
  CHECK(b.maximum == 32 * kMiB);
}

// How a volume is named and served, beyond its layout.
struct VolumeOptions {
  std::string name = "vol0";
  std::string description;
  std::vector<std::string> extra;  // more aggregator options
};

std::vector<std::string> OptionArgs(const VolumeOptions& o) {
  std::vector<std::string> args = o.extra;
  if (o.name != "vol0") args.insert(args.end(), {"--name", o.name});
  if (!o.description.empty()) args.insert(args.end(), {"--description", o.description});
  return args;
}

void RandomIoTest(const Geometry& g, const std::vector<Backend>& backends, uint64_t seed,
                  const VolumeOptions& options = {}) {
  INFO("seed " << seed << ", volume size " << g.size());
  Members members(g.member_sizes, backends);
  Aggregator aggregator(Concat(Concat(g.Args(), OptionArgs(options)), members.uris()));
  NbdClient client;
  REQUIRE_NBD_OK(client.Connect(aggregator.uri(options.name)));
  CHECK(client.ExportDescription() == options.description);
  CheckAdvertised(client, g);
  Bytes model(g.size(), 0);
  OpGenerator gen(g.size(), seed);
  WriteAcrossBoundaries(client, g, gen, model);
  RandomWrites(client, gen, model, 240);
  REQUIRE_NBD_OK(client.Flush());
  CheckVolumeReads(client, g, model);
  CheckMembers(members, g, model);
}

const std::vector<Backend> kPluginPluginMemory = {Backend::kPlugin, Backend::kPlugin,
                                                  Backend::kMemory};

TEST_SUITE_BEGIN("aggregator_data");

TEST_CASE("linear over members of uneven sizes") {
  const Geometry g{{8 * kMiB, 5 * kMiB + 512 * kKiB, 3 * kMiB + 1536}, 0};
  RandomIoTest(g, kPluginPluginMemory, 1001);
}

TEST_CASE("linear with the memory member first") {
  const Geometry g{{2 * kMiB + 512, 4 * kMiB, 3 * kMiB - 1024}, 0};
  RandomIoTest(g, {Backend::kMemory, Backend::kPlugin, Backend::kPlugin}, 1002,
               {"linear2", "memory first", {"--connections", "1"}});
}

TEST_CASE("stripe with 64K chunks; the smallest member is rounded down") {
  // Usable per member: 5.5 MiB (the smallest, rounded down to a chunk).
  const Geometry g{{8 * kMiB, 5 * kMiB + 512 * kKiB + 1536, 6 * kMiB}, 64 * kKiB};
  REQUIRE(g.size() == 3 * (5 * kMiB + 512 * kKiB));
  RandomIoTest(g, kPluginPluginMemory, 1003);
}

TEST_CASE("stripe with 4K chunks") {
  const Geometry g{{3 * kMiB, 2 * kMiB + 6 * 512, 4 * kMiB}, 4 * kKiB};
  REQUIRE(g.size() == 3 * 2 * kMiB);
  RandomIoTest(g, kPluginPluginMemory, 1004, {"vol0", "", {"--connections", "4"}});
}

// Zeroes [offset, offset + length) through the volume and in the model.
void ZeroBoth(NbdClient& client, Bytes& model, uint64_t offset, uint64_t length, uint32_t flags) {
  CHECK_NBD_OK(client.Zero(length, offset, flags));
  std::fill_n(model.begin() + offset, length, 0);
}

TEST_CASE("every command on a volume whose members differ in capabilities") {
  // Member 0 does everything; member 1 cannot zero (the volume must write
  // zeros for it); member 2 reports no allocation (the volume reports data).
  const Geometry g{{4 * kMiB, 4 * kMiB, 4 * kMiB}, 64 * kKiB};
  TempDir dir("dst-agg-caps");
  PluginServer full({"file=" + dir.File("full.img"), "size=4M"});
  MemoryServer no_zero(4 * kMiB, {"nozero"});
  MemoryServer no_extents(4 * kMiB, {"noextents"});
  const std::vector<std::string> uris = {full.uri(), no_zero.uri(), no_extents.uri()};
  Aggregator aggregator(Concat(g.Args(), uris));
  NbdClient client;
  REQUIRE_NBD_OK(client.Connect(aggregator.uri()));
  CHECK(client.CanZero());
  CHECK_FALSE(client.CanFastZero());  // a promise that member 1 cannot keep
  REQUIRE(client.CanBlockStatus());

  CheckVolumeMap(client, g, uris);
  std::vector<Extent> extents;
  REQUIRE_NBD_OK(client.BlockStatus(g.size(), 0, &extents, LIBNBD_CMD_FLAG_REQ_ONE));
  CHECK(extents.size() == 1);

  Bytes model = RandomBytes(g.size(), 111);
  REQUIRE_NBD_OK(client.Pwrite(model, 0, LIBNBD_CMD_FLAG_FUA));
  ZeroBoth(client, model, 60 * kKiB, 200 * kKiB, 0);
  ZeroBoth(client, model, 300 * kKiB, kMiB + 512, LIBNBD_CMD_FLAG_NO_HOLE);
  ZeroBoth(client, model, 5 * kMiB, 3 * kMiB, LIBNBD_CMD_FLAG_FUA);
  // FAST_ZERO was not advertised: the server refuses it and changes nothing.
  NbdClient lax;
  REQUIRE_NBD_OK(lax.Connect(aggregator.uri()));
  REQUIRE_NBD_OK(lax.SetStrictMode(0));
  CHECK_NBD_ERR(lax.Zero(64 * kKiB, 2 * kMiB, LIBNBD_CMD_FLAG_FAST_ZERO), EINVAL);
  if (client.CanCache()) CHECK_NBD_OK(client.Cache(g.size(), 0));
  if (client.CanTrim()) {
    // Trimmed contents are unspecified: write them again afterwards.
    CHECK_NBD_OK(client.Trim(kMiB, 9 * kMiB));
    REQUIRE_NBD_OK(client.Pwrite({model.data() + 9 * kMiB, kMiB}, 9 * kMiB));
  }
  REQUIRE_NBD_OK(client.Flush());

  // Another connection sees it all (the volume advertises multi-conn), and
  // the members hold what the layout says.
  NbdClient other;
  REQUIRE_NBD_OK(other.Connect(aggregator.uri()));
  CheckVolumeReads(other, g, model);
  const std::vector<Bytes> want = g.MemberImages(model, ZeroImages(g));
  CheckEqual(ReadFile(dir.File("full.img")), want[0], "member 0");
  for (size_t i = 1; i < 3; ++i) {
    NbdClient direct;
    REQUIRE_NBD_OK(direct.Connect(uris[i]));
    CheckEqual(direct.ReadOrThrow(4 * kMiB, 0), want[i], "member " + std::to_string(i));
  }
}

TEST_CASE("32 MiB requests, and a member with its own block size limits") {
  // Member 0 fails requests that are not 4K-aligned or longer than 1 MiB:
  // the volume must advertise its minimum and split requests for it.
  const Geometry g{{12 * kMiB, 12 * kMiB, 12 * kMiB}, 0};
  TempDir dir("dst-agg-blocks");
  MemoryServer strict(
      12 * kMiB, {"blocksize-policy"},
      {"blocksize-minimum=4096", "blocksize-maximum=1M", "blocksize-error-policy=error"});
  PluginServer plugin({"file=" + dir.File("p.img"), "size=12M"});
  MemoryServer memory(12 * kMiB);
  Aggregator aggregator(Concat(g.Args(), {strict.uri(), plugin.uri(), memory.uri()}));
  NbdClient client;
  REQUIRE_NBD_OK(client.Connect(aggregator.uri()));
  const BlockSizes b = client.GetBlockSizes();
  CHECK(b.minimum == 4096);
  CHECK(b.preferred >= 4096);
  CHECK(b.maximum == 32 * kMiB);

  // 10 MiB on member 0, all of member 1, 10 MiB on member 2.
  const Bytes data = RandomBytes(32 * kMiB, 121);
  CHECK_NBD_OK(client.Pwrite(data, 2 * kMiB));
  Bytes back(32 * kMiB);
  CHECK_NBD_OK(client.Pread(back, 2 * kMiB));
  CHECK_MESSAGE(back == data, "32 MiB read back differs");
  CHECK_NBD_OK(client.Zero(3 * kMiB, 4 * kMiB));
  CHECK(AllZero(client.ReadOrThrow(3 * kMiB, 4 * kMiB)));
}

TEST_SUITE_END();

// ---------------------------------------------------------------------------
// Standard clients.

// A 16 MiB linear volume: two plugin files and a memory export.
struct LinearVolume16M {
  Geometry geometry{{8 * kMiB, 4 * kMiB, 4 * kMiB}, 0};
  Members members{geometry.member_sizes, kPluginPluginMemory};
  Aggregator aggregator{Concat(geometry.Args(), members.uris())};
  TempDir dir{"dst-agg-tools"};
};

// A 12 MiB stripe volume with 64K chunks over the same kinds of members.
struct StripeVolume12M {
  Geometry geometry{{4 * kMiB, 4 * kMiB, 4 * kMiB}, 64 * kKiB};
  Members members{geometry.member_sizes, kPluginPluginMemory};
  Aggregator aggregator{Concat(geometry.Args(), members.uris())};
  TempDir dir{"dst-agg-tools"};
};

std::string WriteText(const TempDir& dir, const std::string& name, const std::string& text) {
  const std::string path = dir.File(name);
  WriteFile(path, {reinterpret_cast<const uint8_t*>(text.data()), text.size()});
  return path;
}

std::string Quoted(const std::string& s) {
  return "\"" + s + "\"";
}

TEST_SUITE_BEGIN("aggregator_interop");

TEST_CASE("nbdinfo --list shows every volume of a --config, with descriptions") {
  Members members({4 * kMiB, 2 * kMiB, 1 * kMiB, 1 * kMiB},
                  {Backend::kPlugin, Backend::kMemory, Backend::kPlugin, Backend::kMemory});
  TempDir dir("dst-agg-config");
  const std::string socket = dir.File("agg.sock");
  const auto& u = members.uris();
  const std::string config =
      "unix = [" + Quoted(socket) + "]\n" + "default = \"beta\"\n" +
      "[[volume]]\nname = \"alpha\"\ndescription = \"first volume\"\nlayout = \"linear\"\n" +
      "members = [" + Quoted(u[0]) + ", " + Quoted(u[1]) + "]\n" +
      "[[volume]]\nname = \"beta\"\ndescription = \"second volume\"\nlayout = \"stripe\"\n" +
      "chunk = \"64K\"\nmembers = [" + Quoted(u[2]) + ", " + Quoted(u[3]) + "]\n";
  Aggregator aggregator({"--raw", "--config", WriteText(dir, "agg.toml", config)},
                        AggregatorListen::kFromArgs);
  const std::string base = "nbd+unix:///?socket=" + socket;

  const CommandResult r = RunOk({kNbdinfo, "--list", base});
  INFO(r.stdout_text);
  CHECK(Contains(r.stdout_text, "export=\"alpha\""));
  CHECK(Contains(r.stdout_text, "description: first volume"));
  CHECK(Contains(r.stdout_text, "export=\"beta\""));
  CHECK(Contains(r.stdout_text, "description: second volume"));
  CHECK(Contains(r.stdout_text, "export-size: " + std::to_string(6 * kMiB)));
  CHECK(Contains(r.stdout_text, "export-size: " + std::to_string(2 * kMiB)));

  // The empty export name reaches the default volume.
  NbdClient by_default;
  REQUIRE_NBD_OK(by_default.Connect(base));
  CHECK(by_default.Size() == static_cast<int64_t>(2 * kMiB));
  NbdClient alpha;
  REQUIRE_NBD_OK(alpha.Connect("nbd+unix:///alpha?socket=" + socket));
  CHECK(alpha.Size() == static_cast<int64_t>(6 * kMiB));
  CHECK(alpha.ExportDescription() == "first volume");
}

TEST_CASE("nbdinfo --map agrees with the members' own maps") {
  LinearVolume16M v;
  NbdClient client;
  REQUIRE_NBD_OK(client.Connect(v.aggregator.uri()));
  REQUIRE_NBD_OK(client.Pwrite(RandomBytes(kMiB, 31), 0));
  REQUIRE_NBD_OK(client.Pwrite(RandomBytes(kMiB, 32), 13 * kMiB));  // on the memory member
  REQUIRE_NBD_OK(client.Flush());

  const std::vector<MapEntry> want = ExpectedVolumeMap(v.geometry, v.members.uris());
  const CommandResult r = RunOk({kNbdinfo, "--map", v.aggregator.uri()});
  INFO(r.stdout_text);
  const std::vector<MapEntry> got = ParseMap(r.stdout_text);
  CheckMapsEqual(got, want);
  REQUIRE_FALSE(got.empty());
  CHECK(got.front().type == 0);  // the data written at 0
}

TEST_CASE("nbdcopy a random 16 MiB file in and back out") {
  LinearVolume16M v;
  const std::string in = v.dir.File("in.bin"), out = v.dir.File("out.bin");
  const Bytes data = RandomBytes(16 * kMiB, 41);
  WriteFile(in, data);
  RunOk({kNbdcopy, in, v.aggregator.uri()});
  RunOk({kNbdcopy, v.aggregator.uri(), out});
  CHECK(FilesEqual(in, out));
  // And the bytes are where the layout puts them.
  CheckEqual(ReadFile(v.members.file(0)), Bytes(data.begin(), data.begin() + 8 * kMiB), "member 0");
  CheckEqual(ReadFile(v.members.file(1)), Bytes(data.begin() + 8 * kMiB, data.begin() + 12 * kMiB),
             "member 1");
}

TEST_CASE("nbdsh: pwrite and pread across chunks and members") {
  StripeVolume12M v;
  // nbdsh is `python3 -m nbd`; run it with the python that has the module.
  const std::string script =
      "import os\n"
      "assert h.get_size() == 12 * 1024 * 1024\n"
      "assert h.can_multi_conn()\n"
      "buf = os.urandom(1024 * 1024 + 4096)\n"
      "h.pwrite(buf, 60 * 1024)\n"
      "assert h.pread(len(buf), 60 * 1024) == buf\n"
      "h.pwrite(b'\\xcd' * 8192, 12 * 1024 * 1024 - 8192, nbd.CMD_FLAG_FUA)\n"
      "h.flush()\n"
      "assert h.pread(8192, 12 * 1024 * 1024 - 8192) == b'\\xcd' * 8192\n"
      "h.zero(64 * 1024, 128 * 1024)\n"
      "assert h.pread(64 * 1024, 128 * 1024) == bytes(64 * 1024)\n";
  RunOk({kPython3, "-m", "nbd", "-u", v.aggregator.uri(), "-c", script});
  // The last 8 KiB of the volume end the last chunk, on the last member: the
  // memory export, at the end of its usable part.
  NbdClient direct;
  REQUIRE_NBD_OK(direct.Connect(v.members.uris()[2]));
  CHECK(direct.ReadOrThrow(8192, 4 * kMiB - 8192) == Bytes(8192, 0xcd));
}

TEST_CASE("qemu-img convert -n and compare") {
  LinearVolume16M v;
  const std::string src = v.dir.File("src.raw");
  WriteFile(src, RandomBytes(16 * kMiB, 51));
  RunOk({kQemuImg, "convert", "-n", "-f", "raw", "-O", "raw", src, v.aggregator.uri()});
  RunOk({kQemuImg, "compare", "-f", "raw", "-F", "raw", src, v.aggregator.uri()});
  // A change behind the aggregator's back, in member 1, is seen.
  WriteFileAt(v.members.file(1), 3 * kMiB, Bytes(512, 0x5a));
  const CommandResult r =
      RunCommand({kQemuImg, "compare", "-f", "raw", "-F", "raw", src, v.aggregator.uri()});
  INFO(r.stdout_text << r.stderr_text);
  CHECK(r.exit_code == 1);
  CHECK(Contains(r.stdout_text, "offset " + std::to_string(11 * kMiB)));
}

TEST_CASE("qemu-io: write -P, read -P, discard, write -z") {
  StripeVolume12M v;
  const CommandResult r = RunOk({kQemuIo,
                                 "-f",
                                 "raw",
                                 "-c",
                                 "write -P 0xab 0 1M",
                                 "-c",
                                 "read -P 0xab 0 1M",
                                 "-c",
                                 "write -P 0x3c 4M 512k",
                                 "-c",
                                 "discard 4M 512k",
                                 "-c",
                                 "write -z 2M 1M",
                                 "-c",
                                 "read -P 0 2M 1M",
                                 "-c",
                                 "write -P 0x77 11M 1M",
                                 "-c",
                                 "read -P 0x77 11M 1M",
                                 "-c",
                                 "flush",
                                 v.aggregator.uri()});
  INFO(r.stdout_text);
  INFO(r.stderr_text);
  CHECK_FALSE(Contains(r.stdout_text + r.stderr_text, "failed"));
  CHECK_FALSE(Contains(r.stdout_text + r.stderr_text, "error"));
  CHECK_FALSE(Contains(r.stdout_text + r.stderr_text, "Pattern verification"));
  NbdClient client;
  REQUIRE_NBD_OK(client.Connect(v.aggregator.uri()));
  CHECK(client.ReadOrThrow(kMiB, 0) == Bytes(kMiB, 0xab));
  CHECK(AllZero(client.ReadOrThrow(kMiB, 2 * kMiB)));
  // Chunk 0 (the first 64K) is on member 0, chunk 1 on member 1.
  CHECK(ReadFileRange(v.members.file(0), 0, 64 * kKiB) == Bytes(64 * kKiB, 0xab));
  CHECK(ReadFileRange(v.members.file(1), 0, 64 * kKiB) == Bytes(64 * kKiB, 0xab));
}

TEST_CASE("fio randrw with crc32c verify, 2 jobs at depth 32") {
  // Each job gets its own 32 MiB (offset_increment): two jobs verifying the
  // same blocks would overwrite each other's data.
  const Geometry g{{24 * kMiB, 24 * kMiB, 24 * kMiB}, 64 * kKiB};
  Members members(g.member_sizes, kPluginPluginMemory);
  Aggregator aggregator(Concat(g.Args(), members.uris()));
  const Argv argv = {kFio,
                     "--name=dst-aggregator",
                     "--ioengine=nbd",
                     "--uri=" + aggregator.uri(),
                     "--rw=randrw",
                     "--bs=4k",
                     "--iodepth=32",
                     "--numjobs=2",
                     "--size=32M",
                     "--offset_increment=32M",
                     "--verify=crc32c",
                     "--do_verify=1",
                     "--verify_fatal=1",
                     "--verify_state_save=0",
                     "--runtime=15",
                     "--output-format=normal"};
  CheckFioVerified(argv, 40s);
}

TEST_SUITE_END();

// ---------------------------------------------------------------------------
// Members served by other NBD servers.

// qemu-nbd serving a raw file on a Unix socket until destroyed.
class QemuNbd {
 public:
  explicit QemuNbd(const std::string& file)
      // --shared: the aggregator may open several connections per member, on each of its event
      // loops (DST_TEST_THREADS), and a case may connect to the member itself besides.
      : process_({kQemuNbd, "-f", "raw", "-k", dir_.File("qemu.sock"), "--persistent",
                  "--shared=16", file}) {
    if (!WaitForUnixSocket(dir_.File("qemu.sock"), 10s, &process_))
      throw std::runtime_error("qemu-nbd did not start:\n" + process_.stderr_text());
  }
  ~QemuNbd() {
    process_.Kill(SIGTERM);
    const auto code = process_.Wait(10s);
    CHECK_MESSAGE(code == 0, "qemu-nbd exit " << code.value_or(-1) << "\n"
                                              << process_.stderr_text());
  }
  std::string uri() const { return "nbd+unix:///?socket=" + dir_.File("qemu.sock"); }

 private:
  TempDir dir_{"dst-qemu-nbd"};
  Process process_;
};

bool ProcessGone(pid_t pid) {
  if (::kill(pid, 0) != 0) return true;
  // Reparented daemons may linger as zombies where nothing reaps them.
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  std::getline(stat, line);
  const auto paren = line.rfind(')');
  return paren != std::string::npos && line.size() > paren + 2 && line[paren + 2] == 'Z';
}

// nbd-server exporting one file on a free loopback port. It daemonizes (in
// the foreground it serves one connection only), so it is tracked through its
// pidfile rather than as a child.
class NbdServer {
 public:
  explicit NbdServer(const std::string& file) {
    for (int attempt = 0; attempt < 3 && pid_ <= 0; ++attempt)
      Start(file);
    if (pid_ <= 0) throw std::runtime_error("nbd-server did not start");
  }
  ~NbdServer() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGTERM);
    for (int i = 0; i < 500 && !ProcessGone(pid_); ++i)
      std::this_thread::sleep_for(10ms);
    if (!ProcessGone(pid_)) ::kill(pid_, SIGKILL);
  }
  std::string uri() const { return "nbd://127.0.0.1:" + std::to_string(port_) + "/export"; }

 private:
  void Start(const std::string& file) {
    port_ = PickFreePort();
    const std::string config = WriteText(dir_, "nbd-server.conf", Config(port_, file));
    const std::string pidfile = dir_.File("nbd-server.pid");
    const CommandResult r = RunCommand({kNbdServer, "-C", config, "-p", pidfile}, 10s);
    if (r.exit_code != 0) throw std::runtime_error("nbd-server failed:\n" + r.stderr_text);
    if (WaitForTcpPort(port_, 5s)) pid_ = ReadPid(pidfile);
  }
  static std::string Config(int port, const std::string& file) {
    return "[generic]\nlistenaddr = 127.0.0.1\nport = " + std::to_string(port) +
           "\n[export]\nexportname = " + file + "\n";
  }
  static pid_t ReadPid(const std::string& path) {
    for (int i = 0; i < 200; ++i) {
      std::ifstream in(path);
      pid_t pid = 0;
      if (in >> pid && pid > 0) return pid;
      std::this_thread::sleep_for(10ms);
    }
    throw std::runtime_error("nbd-server wrote no pidfile");
  }

  TempDir dir_{"dst-nbd-server"};
  int port_ = 0;
  pid_t pid_ = -1;
};

// Writes across the volume through the aggregator, reads everything back,
// and returns the volume's final bytes.
Bytes RoundTrip(const std::string& uri, const Geometry& g, Bytes model, uint64_t seed) {
  NbdClient client;
  REQUIRE_NBD_OK(client.Connect(uri));
  REQUIRE(client.Size() == static_cast<int64_t>(g.size()));
  CheckVolumeReads(client, g, model);  // the members' existing data shows through
  OpGenerator gen(g.size(), seed);
  WriteAcrossBoundaries(client, g, gen, model);
  RandomWrites(client, gen, model, 60);
  REQUIRE_NBD_OK(client.Flush());
  CheckVolumeReads(client, g, model);
  return model;
}

TEST_SUITE_BEGIN("aggregator_members");

TEST_CASE("a qemu-nbd member") {
  TempDir dir("dst-agg-qemu");
  const Geometry g{{4 * kMiB, 6 * kMiB}, 0};
  const std::string qemu_file = dir.File("qemu.raw");
  std::vector<Bytes> initial = ZeroImages(g);
  initial[1] = RandomBytes(6 * kMiB, 61);
  WriteFile(qemu_file, initial[1]);
  Members plugin({4 * kMiB}, {Backend::kPlugin});
  Bytes model;
  {
    QemuNbd qemu(qemu_file);
    Aggregator aggregator(Concat(g.Args(), {plugin.uris()[0], qemu.uri()}));
    model = RoundTrip(aggregator.uri(), g, g.VolumeFrom(initial), 62);
  }
  const std::vector<Bytes> want = g.MemberImages(model, initial);
  CheckEqual(ReadFile(plugin.file(0)), want[0], "plugin member");
  CheckEqual(ReadFile(qemu_file), want[1], "qemu-nbd member");
}

TEST_CASE("an nbd-server member") {
  TempDir dir("dst-agg-nbd-server");
  const Geometry g{{5 * kMiB, 3 * kMiB}, 0};
  const std::string file = dir.File("nbd-server.raw");
  std::vector<Bytes> initial = ZeroImages(g);
  initial[0] = RandomBytes(5 * kMiB, 71);
  WriteFile(file, initial[0]);
  Members plugin({3 * kMiB}, {Backend::kPlugin});
  Bytes model;
  {
    NbdServer server(file);
    Aggregator aggregator(Concat(g.Args(), {server.uri(), plugin.uris()[0]}));
    model = RoundTrip(aggregator.uri(), g, g.VolumeFrom(initial), 72);
  }
  const std::vector<Bytes> want = g.MemberImages(model, initial);
  CheckEqual(ReadFile(file), want[0], "nbd-server member");
  CheckEqual(ReadFile(plugin.file(0)), want[1], "plugin member");
}

TEST_CASE("stripe over qemu-nbd, nbd-server and nbdkit") {
  TempDir dir("dst-agg-mixed");
  const Geometry g{{2 * kMiB, 2 * kMiB, 2 * kMiB}, 64 * kKiB};
  const std::string qemu_file = dir.File("qemu.raw"), nbd_file = dir.File("nbd.raw");
  const std::vector<Bytes> initial = ZeroImages(g);
  WriteFile(qemu_file, initial[0]);
  WriteFile(nbd_file, initial[1]);
  Members memory({2 * kMiB}, {Backend::kMemory});
  Bytes model;
  {
    QemuNbd qemu(qemu_file);
    NbdServer server(nbd_file);
    const std::vector<std::string> uris = {qemu.uri(), server.uri(), memory.uris()[0]};
    Aggregator aggregator(Concat(g.Args(), uris));
    {
      // nbd-server offers no base:allocation: its chunks must show as data.
      NbdClient client;
      REQUIRE_NBD_OK(client.Connect(aggregator.uri()));
      CheckVolumeMap(client, g, uris);
    }
    model = RoundTrip(aggregator.uri(), g, g.VolumeFrom(initial), 82);
  }
  const std::vector<Bytes> want = g.MemberImages(model, initial);
  CheckEqual(ReadFile(qemu_file), want[0], "qemu-nbd member");
  CheckEqual(ReadFile(nbd_file), want[1], "nbd-server member");
}

TEST_CASE("FUA on a volume with a member that has no FUA") {
  // nbd-server advertises neither FUA nor flush. The volume advertises FUA,
  // so a FUA write must succeed (and be durable) on every member.
  TempDir dir("dst-agg-fua");
  const std::string file = dir.File("nbd-server.raw");
  WriteFile(file, Bytes(2 * kMiB, 0));
  Members plugin({2 * kMiB}, {Backend::kPlugin});
  NbdServer server(file);
  Aggregator aggregator({"--raw", plugin.uris()[0], server.uri()});
  NbdClient client;
  REQUIRE_NBD_OK(client.Connect(aggregator.uri()));
  REQUIRE(client.CanFua());
  const Bytes data = RandomBytes(kMiB, 131);
  CHECK_NBD_OK(client.Pwrite(data, 2 * kMiB - kMiB / 2, LIBNBD_CMD_FLAG_FUA));
  CHECK_NBD_OK(client.Zero(64 * kKiB, 3 * kMiB, LIBNBD_CMD_FLAG_FUA));
  CHECK_NBD_OK(client.Flush());
  CHECK(client.ReadOrThrow(kMiB, 2 * kMiB - kMiB / 2) == data);
}

TEST_CASE("a member that dies for good: EIO after the retry window, the others go on") {
  MemoryServer survivor(2 * kMiB);
  NbdkitServer doomed(MemoryOptions(2 * kMiB, {}, {}));
  Aggregator aggregator(
      {"--raw", "--io-timeout", "500ms", "--retry-window", "2s", survivor.uri(), doomed.uri()});
  NbdClient client;
  REQUIRE_NBD_OK(client.Connect(aggregator.uri()));
  const Bytes data = RandomBytes(64 * kKiB, 141);
  REQUIRE_NBD_OK(client.Pwrite(data, 0));
  REQUIRE_NBD_OK(client.Pwrite(data, 3 * kMiB));

  ::kill(doomed.pid(), SIGKILL);
  Bytes buf(64 * kKiB);
  const auto start = std::chrono::steady_clock::now();
  CHECK_NBD_ERR(client.Pread(buf, 3 * kMiB), EIO);
  // Within the retry window and one I/O timeout (and a tick of slack).
  CHECK(std::chrono::steady_clock::now() - start < std::chrono::milliseconds(2800));
  // Once the member has been unreachable for the window, it is failed and
  // its I/O fails at once.
  CHECK_NBD_ERR(client.Pwrite(data, 3 * kMiB), EIO);
  CHECK_NBD_ERR(client.Pread(buf, 2 * kMiB - 4096), EIO);  // spans both members
  CHECK_NBD_OK(client.Pread(buf, 0));
  CHECK(buf == data);
  CHECK_NBD_OK(client.Pwrite(data, 64 * kKiB));
  // New clients still get in.
  NbdClient late;
  CHECK_NBD_OK(late.Connect(aggregator.uri()));
  CHECK(aggregator.Running());
  // The log names the volume range, the member and the cause.
  const std::string log = aggregator.stderr_text();
  CHECK_MESSAGE(log.find("error: volume vol0: read of 65536 bytes at volume offset 3145728 "
                         "failed: member " +
                         doomed.uri() +
                         ": read of 65536 bytes at member offset 1048576: gave up "
                         "after ") != std::string::npos,
                log);
  CHECK_MESSAGE(log.find("member " + doomed.uri() + ": reconnecting -> failed: unreachable for ") !=
                    std::string::npos,
                log);
}

TEST_SUITE_END();

// ---------------------------------------------------------------------------
// Read-only volumes and start-up.

TEST_SUITE_BEGIN("aggregator_startup");

TEST_CASE("a read-only member makes the volume read-only") {
  TempDir dir("dst-agg-ro");
  const std::string ro_file = dir.File("ro.img");
  const Bytes ro_data = RandomBytes(2 * kMiB, 91);
  WriteFile(ro_file, ro_data);
  PluginServer rw({"file=" + dir.File("rw.img"), "size=2M"});
  PluginServer ro({"file=" + ro_file, "readonly=true"});
  Aggregator aggregator({"--raw", rw.uri(), ro.uri()});

  NbdClient client;
  REQUIRE_NBD_OK(client.Connect(aggregator.uri()));
  CHECK(client.IsReadOnly());
  CHECK_NBD_ERR(client.Pwrite(Bytes(4096, 1), 0), EPERM);
  CHECK(client.ReadOrThrow(kMiB, 2 * kMiB) == Bytes(ro_data.begin(), ro_data.begin() + kMiB));

  // The server itself refuses, not only libnbd's client-side checks.
  NbdClient lax;
  REQUIRE_NBD_OK(lax.Connect(aggregator.uri()));
  REQUIRE_NBD_OK(lax.SetStrictMode(0));
  CHECK_NBD_ERR(lax.Pwrite(Bytes(4096, 1), 0), EPERM);
  CHECK_NBD_ERR(lax.Pwrite(Bytes(4096, 1), 3 * kMiB), EPERM);
  CHECK_NBD_ERR(lax.Zero(4096, 0), EPERM);
  CHECK_NBD_ERR(lax.Trim(4096, 0), EPERM);
  CHECK(AllZero(ReadFile(dir.File("rw.img"))));
  CHECK(ReadFile(ro_file) == ro_data);
}

// The one line a failed start must leave on stderr, naming what was wrong.
void CheckOneErrorLine(const StartFailure& f, std::initializer_list<std::string_view> needles) {
  INFO("stderr:\n" << f.stderr_text);
  CHECK(f.exit_code == 1);
  CHECK(std::count(f.stderr_text.begin(), f.stderr_text.end(), '\n') == 1);
  CHECK(f.stderr_text.rfind("dst-aggregator: error: ", 0) == 0);
  for (std::string_view n : needles)
    CHECK_MESSAGE(Contains(f.stderr_text, n), "missing: " << n);
}

// As above, for failures after the volumes were built and logged: the error
// is then the last line, after info lines and warnings (members that cannot
// fence) only.
void CheckFinalErrorLine(const StartFailure& f, std::initializer_list<std::string_view> needles) {
  INFO("stderr:\n" << f.stderr_text);
  CHECK(f.exit_code == 1);
  std::istringstream in(f.stderr_text);
  std::string line, last;
  while (std::getline(in, line)) {
    if (!last.empty())
      CHECK_MESSAGE(
          (Contains(last, "dst-aggregator: info: ") || Contains(last, "dst-aggregator: warning: ")),
          last);
    last = line;
  }
  CHECK(last.rfind("dst-aggregator: error: ", 0) == 0);
  for (std::string_view n : needles)
    CHECK_MESSAGE(Contains(last, n), "missing: " << n);
}

// The audit's X13 (W6), start-up half: with an open-file limit of 64 and --max-connections 1024
// (systemd's default soft limit is 1024 too), the server ran until it hit EMFILE. Now a hard
// limit too low is refused at start with what to change (and the advice works), and a soft limit
// below a high enough hard one is raised.
TEST_CASE("--max-connections is checked against the open-file limit at start") {
  MemoryServer member(kMiB);
  auto under_limit = [&](const std::string& nofile, std::vector<std::string> args) {
    AggregatorOptions o =
        AggregatorArgs(Concat(std::move(args), {member.uri()}), AggregatorListen::kUnix);
    o.wrapper = {"prlimit", "--nofile=" + nofile};
    o.start_timeout = 10s;
    return o;
  };
  SUBCASE("a hard limit of 64: refused, naming the limit") {
    const StartFailure f = AggregatorServer::StartExpectingFailure(
        under_limit("64:64", {"--raw", "--max-connections", "1024"}));
    CheckOneErrorLine(f, {"--max-connections 1024 needs ", " open files (with ",
                          " but at most 64 are allowed (the hard "
                          "RLIMIT_NOFILE: LimitNOFILE= in a systemd unit, ulimit -Hn in a "
                          "shell); raise it\n"});
  }
  SUBCASE("a hard limit of 300: refused with a --max-connections that fits, which then serves") {
    const StartFailure f = AggregatorServer::StartExpectingFailure(
        under_limit("300:300", {"--raw", "--max-connections", "1024"}));
    CheckOneErrorLine(f, {"--max-connections 1024 needs ", "but at most 300 are allowed",
                          "; raise it, or give --max-connections "});
    const std::string marker = "or give --max-connections ";
    const size_t at = f.stderr_text.find(marker);
    REQUIRE(at != std::string::npos);
    const std::string fits = std::to_string(std::stoul(f.stderr_text.substr(at + marker.size())));
    INFO("advised --max-connections " << fits);
    CHECK(std::stoul(fits) > 100);
    AggregatorServer agg(under_limit("300:300", {"--raw", "--max-connections", fits}));
    NbdClient client;
    REQUIRE_NBD_OK(client.Connect(agg.uri()));
    CHECK(client.Size() == static_cast<int64_t>(kMiB));
    CHECK_NBD_OK(client.Shutdown());
    CHECK(agg.Stop() == 0);
    CHECK(agg.SanitizerReports().empty());
  }
  SUBCASE("a soft limit of 64 under a hard limit of 4096: raised, and said so") {
    AggregatorServer agg(under_limit("64:4096", {"--raw", "--max-connections", "1024"}));
    CHECK(Contains(agg.stderr_text(), "info: open-file limit raised from 64 to "));
    CHECK(Contains(agg.stderr_text(), " for --max-connections 1024\n"));
    NbdClient client;
    REQUIRE_NBD_OK(client.Connect(agg.uri()));
    CHECK_NBD_OK(client.Shutdown());
    CHECK(agg.Stop() == 0);
    CHECK(agg.SanitizerReports().empty());
  }
}

TEST_CASE("an unreachable member is reported by URI within seconds") {
  MemoryServer good(kMiB);
  TempDir dir("dst-agg-missing");
  const std::string missing = "nbd+unix:///x?socket=" + dir.File("nobody.sock");
  const auto start = std::chrono::steady_clock::now();
  const StartFailure f = ExpectAggregatorFailure({"--raw", good.uri(), missing});
  CHECK(std::chrono::steady_clock::now() - start < 5s);
  CheckOneErrorLine(f, {missing});
}

TEST_CASE("an unreachable TCP member is reported by URI") {
  const std::string missing = "nbd://127.0.0.1:" + std::to_string(PickFreePort()) + "/x";
  const StartFailure f = ExpectAggregatorFailure({"--raw", missing});
  CheckOneErrorLine(f, {missing});
}

TEST_CASE("bad transaction options are refused") {
  MemoryServer member(kMiB);
  TempDir dir("dst-agg-bad-options");
  const std::string volume = "[[volume]]\nname = \"a\"\nmembers = [" + Quoted(member.uri()) + "]\n";
  SUBCASE("--io-timeout that is not a duration") {
    CheckOneErrorLine(ExpectAggregatorFailure({"--raw", "--io-timeout", "5x", member.uri()}),
                      {"--io-timeout 5x: expected a duration such as 5, 500ms or 2m"});
  }
  SUBCASE("--io-timeout 0") {
    CheckOneErrorLine(ExpectAggregatorFailure({"--raw", "--io-timeout", "0", member.uri()}),
                      {"io-timeout must be more than 0"});
  }
  SUBCASE("--fencing with an unknown mode") {
    CheckOneErrorLine(ExpectAggregatorFailure({"--raw", "--fencing", "yes", member.uri()}),
                      {"--fencing yes: expected auto, require or off"});
  }
  SUBCASE("a config duration that is not one") {
    const std::string config = WriteText(dir, "c.toml", "retry-window = \"soon\"\n" + volume);
    CheckOneErrorLine(ExpectAggregatorFailure({"--raw", "--config", config}),
                      {config + ":1: retry-window: expected a duration"});
  }
  SUBCASE("--table-cache that is not a size") {
    CheckOneErrorLine(ExpectAggregatorFailure({"--raw", "--table-cache", "lots", member.uri()}),
                      {"--table-cache lots: expected a size such as 64K"});
  }
  SUBCASE("--table-cache below 1M") {
    CheckOneErrorLine(ExpectAggregatorFailure({"--raw", "--table-cache", "4K", member.uri()}),
                      {"table-cache must be at least 1M"});
  }
  SUBCASE("--key-file on a raw volume") {
    CheckOneErrorLine(
        ExpectAggregatorFailure({"--raw", "--key-file", "/nonexistent", member.uri()}),
        {"a checksum key is for assembled volumes"});
  }
  SUBCASE("a config raw that is not a boolean") {
    const std::string config = WriteText(dir, "c.toml", volume + "raw = \"yes\"\n");
    CheckOneErrorLine(ExpectAggregatorFailure({"--config", config}),
                      {config + ":4: raw: expected true or false"});
  }
  SUBCASE("volume options on the command line with --config") {
    const std::string config = WriteText(dir, "c.toml", volume);
    CheckOneErrorLine(ExpectAggregatorFailure({"--raw", "--name", "b", "--config", config}),
                      {"--config: give --name"});
  }
  SUBCASE("--fencing require with a member that cannot fence") {
    CheckOneErrorLine(ExpectAggregatorFailure({"--raw", "--fencing", "require", member.uri()}),
                      {"member " + member.uri() + ": cannot fence (not a dst export node)"});
  }
}

TEST_CASE("bad layouts, URIs and chunks are refused") {
  MemoryServer big(8 * kMiB), small(32 * kKiB);
  SUBCASE("unknown layout") {
    CheckOneErrorLine(ExpectAggregatorFailure({"--raw", "--layout", "raid5", big.uri()}),
                      {"raid5"});
  }
  SUBCASE("not an NBD URI") {
    CheckOneErrorLine(ExpectAggregatorFailure({"--raw", big.uri(), "http://x"}),
                      {"http://x", "not an NBD URI"});
  }
  SUBCASE("stripe member smaller than a chunk") {
    CheckOneErrorLine(ExpectAggregatorFailure({"--raw", "--layout", "stripe", "--chunk", "64K",
                                               big.uri(), small.uri()}),
                      {"is smaller than one chunk"});
  }
  SUBCASE("without --raw, a member that was never formatted") {
    CheckOneErrorLine(
        ExpectAggregatorFailure({big.uri()}),
        {"member " + big.uri(), "no dst superblock", "dst-aggregator create", "--raw"});
  }
  SUBCASE("--layout without --raw: the superblocks say") {
    CheckOneErrorLine(ExpectAggregatorFailure({"--layout", "stripe", big.uri()}),
                      {"layout and chunk are recorded in the members' superblocks"});
  }
  SUBCASE("no members") {
    CheckOneErrorLine(ExpectAggregatorFailure({"--raw"}), {});
  }
  SUBCASE("chunk not a power of two") {
    CheckOneErrorLine(ExpectAggregatorFailure(
                          {"--raw", "--layout", "stripe", "--chunk", "3000", big.uri(), big.uri()}),
                      {"power of two"});
  }
  SUBCASE("chunk below 512 bytes") {
    CheckOneErrorLine(ExpectAggregatorFailure(
                          {"--raw", "--layout", "stripe", "--chunk", "256", big.uri(), big.uri()}),
                      {"chunk"});
  }
}

// --log-format json: every line a JSON object a log collector can take, the
// start-up error included. Parsed by Python's json module, not by eye.
TEST_CASE("--log-format json logs one JSON object a line") {
  const std::string missing = "nbd+unix:///x?socket=/nonexistent/sock";
  const StartFailure f = ExpectAggregatorFailure({"--log-format", "json", "--raw", missing});
  CHECK(f.exit_code == 1);
  TempDir dir("dst-agg-json-log");
  const std::string log = WriteText(dir, "log.txt", f.stderr_text);
  const CommandResult r = RunOk({kPython3, "-c",
                                 "import json, sys\n"
                                 "for line in open(sys.argv[1]):\n"
                                 "    o = json.loads(line)\n"
                                 "    assert set(o) == {'time', 'level', 'message'}, o\n"
                                 "    print(o['level'] + '|' + o['message'])\n",
                                 log});
  CHECK_MESSAGE(Contains(r.stdout_text, "error|member " + missing + ": connect"), r.stdout_text);
}

TEST_CASE("a listen address in use is refused") {
  MemoryServer member(kMiB);
  // Hold a port: bound and listening, so the aggregator cannot have it.
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(fd >= 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof address;
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&address), length) == 0);
  REQUIRE(::listen(fd, 1) == 0);
  REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0);
  const std::string listen = "127.0.0.1:" + std::to_string(ntohs(address.sin_port));
  const StartFailure f = ExpectAggregatorFailure({"--raw", "--listen", listen, member.uri()});
  ::close(fd);
  CheckFinalErrorLine(f, {listen});
}

TEST_CASE("bad --config files are refused") {
  MemoryServer member(kMiB);
  TempDir dir("dst-agg-bad-config");
  const std::string volume = "[[volume]]\nname = \"a\"\nmembers = [" + Quoted(member.uri()) + "]\n";
  SUBCASE("duplicate volume names") {
    const std::string config = WriteText(dir, "c.toml", volume + volume);
    CheckOneErrorLine(ExpectAggregatorFailure({"--raw", "--config", config}), {"duplicate"});
  }
  SUBCASE("undefined default volume") {
    const std::string config = WriteText(dir, "c.toml", "default = \"zz\"\n" + volume);
    CheckOneErrorLine(ExpectAggregatorFailure({"--raw", "--config", config}), {"zz"});
  }
  SUBCASE("unknown key") {
    const std::string config = WriteText(dir, "c.toml", volume + "colour = \"blue\"\n");
    CheckOneErrorLine(ExpectAggregatorFailure({"--raw", "--config", config}), {"colour"});
  }
  SUBCASE("not TOML") {
    const std::string config = WriteText(dir, "c.toml", "[[volume\n");
    CheckOneErrorLine(ExpectAggregatorFailure({"--raw", "--config", config}), {config});
  }
  SUBCASE("--config and member URIs together") {
    const std::string config = WriteText(dir, "c.toml", volume);
    CheckOneErrorLine(ExpectAggregatorFailure({"--raw", "--config", config, member.uri()}),
                      {"--config"});
  }
}

TEST_CASE("serves on every --listen and --unix address") {
  MemoryServer member(kMiB);
  TempDir dir("dst-agg-listen");
  const int port1 = PickFreePort(), port2 = PickFreePort();
  const std::string sock1 = dir.File("a.sock"), sock2 = dir.File("b.sock");
  Aggregator aggregator(
      {"--raw", "--listen", "127.0.0.1:" + std::to_string(port1), "--listen",
       "127.0.0.1:" + std::to_string(port2), "--unix", sock1, "--unix", sock2, member.uri()},
      AggregatorListen::kFromArgs);
  for (const std::string& uri :
       {"nbd://127.0.0.1:" + std::to_string(port1) + "/vol0",
        "nbd://127.0.0.1:" + std::to_string(port2) + "/vol0", "nbd+unix:///vol0?socket=" + sock1,
        "nbd+unix:///vol0?socket=" + sock2}) {
    INFO(uri);
    NbdClient client;
    const NbdStatus status = client.Connect(uri);
    CHECK_MESSAGE(status.ok(), status);
    if (status.ok()) CHECK(client.Size() == static_cast<int64_t>(kMiB));
  }
}

TEST_CASE("SIGINT stops the server cleanly") {
  MemoryServer member(kMiB);
  AggregatorServer aggregator(AggregatorArgs({"--raw", member.uri()}, AggregatorListen::kTcp4));
  NbdClient client;
  REQUIRE_NBD_OK(client.Connect(aggregator.uri("")));  // the only volume is the default
  CHECK(client.Size() == static_cast<int64_t>(kMiB));
  aggregator.Kill(SIGINT);
  CHECK(aggregator.Wait(10s) == 0);
  aggregator.Stop();
  CHECK(aggregator.SanitizerReports().empty());
}

TEST_CASE("SIGTERM with I/O in flight on a slow member stops cleanly") {
  // Every request stays on the member for a second: the signal arrives with
  // member I/O outstanding and clients waiting for replies.
  MemoryServer slow(8 * kMiB, {"delay"}, {"delay-read=1", "delay-write=1"});
  AggregatorServer aggregator(AggregatorArgs({"--raw", slow.uri()}, AggregatorListen::kUnix));
  std::vector<std::unique_ptr<NbdClient>> clients;
  const Bytes data = RandomBytes(256 * kKiB, 151);
  std::vector<Bytes> reads(4, Bytes(256 * kKiB));
  for (size_t i = 0; i < 4; ++i) {
    clients.push_back(std::make_unique<NbdClient>());
    REQUIRE_NBD_OK(clients.back()->Connect(aggregator.uri()));
    nbd_handle* h = clients.back()->handle();
    REQUIRE(nbd_aio_pwrite(h, data.data(), data.size(), i * kMiB, NBD_NULL_COMPLETION, 0) > 0);
    REQUIRE(nbd_aio_pread(h, reads[i].data(), reads[i].size(), 4 * kMiB + i * kMiB,
                          NBD_NULL_COMPLETION, 0) > 0);
    nbd_poll(h, 0);  // push the requests out
  }
  std::this_thread::sleep_for(300ms);
  aggregator.Kill(SIGTERM);
  const auto code = aggregator.Wait(10s);
  CHECK_MESSAGE(code == 0, "exit " << code.value_or(-1) << "\n" << aggregator.stderr_text());
  CHECK_MESSAGE(aggregator.SanitizerReports().empty(), aggregator.stderr_text());
  clients.clear();
  aggregator.Stop();
}

TEST_SUITE_END();

}  // namespace
}  // namespace dst::test::aggregator_test
