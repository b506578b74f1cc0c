// fault_crash: the aggregator itself is SIGKILLed while it serves a volume in
// the member format (end-to-end checksums, a write-intent bitmap, a lazily
// written checksum table), then started again over the same members. The
// export nodes stay up, so everything the aggregator had handed to them is in
// the backing files, and the test can look at the bitmaps and tables there.
//
// What must hold after the restart (docs/format.md §6): every write (and
// TRIM / WRITE_ZEROES) acknowledged before the last completed flush reads
// back; no block of the volume returns EIO; the restart recomputed the
// checksums of exactly the regions whose bit was set on the members, and only
// those; blocks trimmed or zeroed before the crash read as zeros (recovery
// must not bring their old data back); and a clean stop (SIGTERM, also under
// load) leaves nothing to recompute.
//
// Cases:
//  - fio (random writes, flushing) and a Python writer that reports which of
//    its writes, TRIMs and WRITE_ZEROES each completed flush covers, SIGKILL
//    in the middle; restart; every block checked against those reports, the
//    whole volume read, the recompute matched against the bitmaps on the
//    members; then SIGTERM under load and a start with nothing to recover.
//  - a burst (writes, TRIM, WRITE_ZEROES, read-modify-write, ragged zeroing)
//    into regions the cleaner had just cleaned, flushed, and SIGKILL before
//    the cleaner's next run, so that the tables on the members still hold
//    the old data's checksums; restart; then the cleaner writes the
//    recomputed checksums back, another SIGKILL, and a start that must find
//    nothing to recompute and verify everything against the tables.
#include <libnbd.h>

#include <algorithm>
#include <csignal>
#include <cstring>
#include <memory>
#include <set>
#include <sstream>
#include <thread>

#include "tests/fault/fault_fixture.h"
#include "tests/integration/volume_fixture.h"

namespace dst::test::fault::fault_crash_test {
namespace {

// The volume: two stripe members of 48 MiB with create's defaults (4 KiB
// blocks, 4 MiB regions, crc32c, 64 KiB chunks). format.md §1 gives, for
// 48 MiB: bitmap at 8 KiB (one page), table at 12 KiB, data at 1 MiB,
// 47 MiB of data, so 12 regions per member and a 94 MiB volume.
constexpr uint64_t kMemberSize = 48 * kMiB;
constexpr uint64_t kBlock = 4 * kKiB;
constexpr uint64_t kRegion = 4 * kMiB;
constexpr uint64_t kChunk = 64 * kKiB;
constexpr size_t kMembers = 2;
constexpr uint64_t kBitmapOffset = 8 * kKiB;
constexpr uint64_t kTableOffset = 12 * kKiB;
constexpr uint64_t kEntrySize = 4;  // crc32c
constexpr uint64_t kDataOffset = 1 * kMiB;
constexpr uint64_t kDataSize = 47 * kMiB;
constexpr uint64_t kRegionsPerMember = 12;
constexpr uint64_t kTotalRegions = kMembers * kRegionsPerMember;
constexpr uint64_t kVolumeSize = kMembers * kDataSize;
const std::string kVolume = "crash";
// Whole-volume reads go in pieces of this size.
constexpr uint64_t kReadPiece = 4 * kMiB;

// A region of one member's data area.
using Region = std::pair<size_t, uint64_t>;  // member, region

std::string Describe(const std::set<Region>& regions) {
  std::ostringstream out;
  out << "{";
  for (const auto& [m, r] : regions)
    out << " m" << m << "/r" << r;
  out << " }";
  return out.str();
}

// The member regions that volume range [offset, offset + length) touches.
std::set<Region> RegionsOf(uint64_t offset, uint64_t length) {
  std::set<Region> regions;
  ForEachStripePiece(offset, length, kChunk, kMembers,
                     [&](size_t m, uint64_t member_offset, uint64_t, uint64_t len) {
                       for (uint64_t r = member_offset / kRegion;
                            r <= (member_offset + len - 1) / kRegion; ++r)
                         regions.insert({m, r});
                     });
  return regions;
}

// Where volume block `block` lives: member and data block of that member.
std::pair<size_t, uint64_t> MemberBlockOf(uint64_t block) {
  std::pair<size_t, uint64_t> out;
  ForEachStripePiece(block * kBlock, kBlock, kChunk, kMembers,
                     [&](size_t m, uint64_t member_offset, uint64_t, uint64_t) {
                       out = {m, member_offset / kBlock};
                     });
  return out;
}

// ---------------------------------------------------------------------------
// The volume's members: export nodes on files, formatted with `create`.

class CrashVolume {
 public:
  CrashVolume() {
    for (size_t m = 0; m < kMembers; ++m) {
      files_.push_back(dir_.File("m" + std::to_string(m) + ".img"));
      // --threads=1: nbdkit 1.32 (Debian 12) aborts when two worker threads
      // of one connection fail to send replies to a client that went away
      // ("raw_send_socket: Assertion `sock >= 0' failed", see
      // fault_stop_test.cc); killing the aggregator with member I/O in
      // flight hits that race. One worker per connection cannot.
      NbdkitOptions options = PluginMemberOptions(files_.back(), kMemberSize);
      options.nbdkit_flags.push_back("--threads=1");
      members_.push_back(std::make_unique<Member>(options));
      uris_.push_back(members_.back()->uri());
    }
    CreateOk({"--name", kVolume, "--layout", "stripe"}, uris_);
    // The geometry this test computes offsets with is the one create wrote.
    const CommandResult i = RunAggregator(Concat({"inspect"}, uris_));
    INFO(i.stdout_text << i.stderr_text);
    REQUIRE(i.exit_code == 0);
    REQUIRE(CountOf(i.stdout_text, "bitmap:       [8192, +4096)") == kMembers);
    REQUIRE(CountOf(i.stdout_text, "table:        [12288, +49152)") == kMembers);
    REQUIRE(CountOf(i.stdout_text, "data:         [1048576, +49283072)") == kMembers);
    REQUIRE(CountOf(i.stdout_text,
                    "format:       version 1, block 4 KiB, region 4 MiB, "
                    "checksum crc32c") == kMembers);
    REQUIRE(CountOf(i.stdout_text, "(98566144 bytes)") + CountOf(i.stdout_text, "94 MiB") >= 1);
  }

  const std::vector<std::string>& uris() const { return uris_; }
  const std::string& file(size_t m) const { return files_[m]; }

  // The write-intent bits set in the members' bitmaps, as the files hold them.
  std::set<Region> DirtyRegionsOnFiles() const {
    std::set<Region> dirty;
    for (size_t m = 0; m < kMembers; ++m) {
      const Bytes page = ReadFileRange(files_[m], kBitmapOffset, 4096);
      for (uint64_t bit = 0; bit < page.size() * 8; ++bit)
        if ((page[bit / 8] >> (bit % 8)) & 1) dirty.insert({m, bit});
    }
    return dirty;
  }

  // Checksum table entry of volume block `block`, as the member's file holds it.
  bool TableEntryIsZeroOnFile(uint64_t block) const {
    const auto [m, b] = MemberBlockOf(block);
    return AllZero(ReadFileRange(files_[m], kTableOffset + b * kEntrySize, kEntrySize));
  }
  // Volume range [offset, offset + length) as the members' files hold it.
  Bytes VolumeRangeOnFiles(uint64_t offset, uint64_t length) const {
    Bytes out(length);
    ForEachStripePiece(offset, length, kChunk, kMembers,
                       [&](size_t m, uint64_t member_offset, uint64_t at, uint64_t len) {
                         const Bytes piece =
                             ReadFileRange(files_[m], kDataOffset + member_offset, len);
                         std::copy(piece.begin(), piece.end(), out.begin() + at);
                       });
    return out;
  }
  // Volume block `block` as the member's file holds it.
  Bytes BlockOnFile(uint64_t block) const {
    const auto [m, b] = MemberBlockOf(block);
    return ReadFileRange(files_[m], kDataOffset + b * kBlock, kBlock);
  }

 private:
  TempDir dir_{"dst-fault-crash"};
  std::vector<std::unique_ptr<Member>> members_;
  std::vector<std::string> uris_;
  std::vector<std::string> files_;
};

// An aggregator that the test will SIGKILL: no exit-code check on teardown
// (fault::Aggregator requires a clean exit 0).
std::unique_ptr<AggregatorServer> StartCrashable(const CrashVolume& volume) {
  return std::make_unique<AggregatorServer>(
      FaultAggregatorOptions(volume.uris(), AggregatorListen::kUnix));
}

void KillAggregator(AggregatorServer& aggregator) {
  aggregator.Kill(SIGKILL);
  const std::optional<int> code = aggregator.Wait(10s);
  REQUIRE_MESSAGE(code.has_value(), "dst-aggregator survived SIGKILL");
  CHECK(*code == 128 + SIGKILL);
  CHECK_MESSAGE(aggregator.SanitizerReports().empty(), aggregator.stderr_text());
}

// Waits (bounded) for a process that should end on its own; kills it if not.
// Its exit code, or nullopt if it had to be killed.
std::optional<int> WaitOrKill(Process& p, Ms timeout) {
  if (std::optional<int> code = p.Wait(timeout)) return code;
  p.Kill(SIGKILL);
  p.Wait(10s);
  return std::nullopt;
}

// The integrity stats line of the volume, after SIGUSR1:
// "info: stats: volume crash integrity: state=dirty checksum_errors=0 ...".
const std::string kIntegrityMark = "info: stats: volume " + kVolume + " integrity: ";

MemberStats QueryIntegrity(AggregatorServer& aggregator, Ms timeout = 5s) {
  return QueryStatsLine(aggregator, kIntegrityMark, timeout);
}

MemberStats WaitForIntegrity(AggregatorServer& aggregator,
                             const std::function<bool(const MemberStats&)>& done, Ms timeout) {
  return WaitForStatsLine(aggregator, kIntegrityMark, done, timeout, 100ms);
}

// What the start-up log says about recovery.
struct Recovery {
  bool unclean_line = false;     // "unclean stop: recomputing the checksums of N of M regions"
  bool nothing_dirty = false;    // "unclean stop, but no region was dirty"
  bool recomputed_line = false;  // "recomputed the checksums of N dirty regions"
  bool any_recompute = false;    // any "recomputing" / "recomputed" at all
  uint64_t regions = 0, total = 0, recomputed = 0;
  bool serving_after = false;  // "serving" comes after the recomputed line
};

Recovery ParseRecovery(const std::string& log) {
  Recovery r;
  const std::string unclean =
      "info: volume " + kVolume + ": unclean stop: recomputing the checksums of ";
  const std::string done = "info: volume " + kVolume + ": recomputed the checksums of ";
  r.nothing_dirty =
      Contains(log, "info: volume " + kVolume + ": unclean stop, but no region was dirty");
  r.any_recompute = Contains(log, "recomputing") || Contains(log, "recomputed");
  if (const size_t at = log.find(unclean); at != std::string::npos) {
    r.unclean_line = true;
    std::istringstream in(log.substr(at + unclean.size()));
    std::string of;
    in >> r.regions >> of >> r.total;
  }
  if (const size_t at = log.find(done); at != std::string::npos) {
    r.recomputed_line = true;
    std::istringstream in(log.substr(at + done.size()));
    in >> r.recomputed;
    const size_t serving = log.find("info: serving ");
    r.serving_after = serving != std::string::npos && serving > at;
  }
  return r;
}

// ---------------------------------------------------------------------------
// Bounded client helpers beyond the fixture's.

NbdStatus TrimFor(NbdClient& client, uint64_t offset, uint64_t length, Ms timeout = 20s) {
  const int64_t cookie = nbd_aio_trim(client.handle(), length, offset, NBD_NULL_COMPLETION, 0);
  if (cookie == -1) return LastNbdError();
  return AwaitCommand(client, cookie, timeout);
}

NbdStatus ZeroFor(NbdClient& client, uint64_t offset, uint64_t length, uint32_t flags,
                  Ms timeout = 20s) {
  const int64_t cookie = nbd_aio_zero(client.handle(), length, offset, NBD_NULL_COMPLETION, flags);
  if (cookie == -1) return LastNbdError();
  return AwaitCommand(client, cookie, timeout);
}

// A 64-bit FNV-1a over 8-byte words: enough to compare what the volume reads
// with what the members' files hold.
uint64_t Fingerprint(std::span<const uint8_t> data) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t at = 0; at + 8 <= data.size(); at += 8) {
    uint64_t word;
    std::memcpy(&word, data.data() + at, 8);
    h = (h ^ word) * 0x100000001b3ull;
  }
  return h;
}

// Reads the whole volume in chunks, every block through the checksums. A
// chunk that fails is read again block by block to name the blocks that
// fail. `visit(offset, data)` sees every chunk that read; the result has one
// fingerprint per chunk and the list of failed blocks.
struct VolumeRead {
  std::vector<uint64_t> fingerprints;
  std::vector<std::string> failures;  // "block N: EIO ..."
};

VolumeRead ReadWholeVolume(NbdClient& client,
                           const std::function<void(uint64_t, const Bytes&)>& visit) {
  VolumeRead out;
  Bytes buffer(kReadPiece);
  for (uint64_t at = 0; at < kVolumeSize; at += kReadPiece) {
    const uint64_t length = std::min(kReadPiece, kVolumeSize - at);
    buffer.resize(length);
    const NbdStatus s = ReadFor(client, buffer, at);
    if (s.ok()) {
      out.fingerprints.push_back(Fingerprint(buffer));
      visit(at, buffer);
      continue;
    }
    out.fingerprints.push_back(0);
    Bytes block(kBlock);
    for (uint64_t b = at; b < at + length && out.failures.size() < 32; b += kBlock) {
      const NbdStatus bs = ReadFor(client, block, b);
      if (!bs.ok())
        out.failures.push_back("block " + std::to_string(b / kBlock) + " (volume offset " +
                               std::to_string(b) + "): " + bs.ToString());
    }
    if (out.failures.empty())
      out.failures.push_back("chunk at " + std::to_string(at) + ": " + s.ToString() +
                             " (but every block read alone)");
  }
  return out;
}

std::string JoinLines(const std::vector<std::string>& lines) {
  std::string out;
  for (const std::string& l : lines)
    out += l + "\n";
  return out;
}

// ---------------------------------------------------------------------------
// The precise writer: a Python client (libnbd) that knows which of its
// operations were acknowledged before each flush it issued.
//
// Over `blocks` 4 KiB blocks from `base` it makes passes; pass P (its
// generation) visits every block once in a shuffled order. One block in
// eight gets a TRIM (odd blocks) or WRITE_ZEROES (even blocks) in that pass,
// the others a write of a block stamped with (offset, P): a 32-byte unit
//   "DSTCRSH1" | offset u64 | P u64 | mix u64     (big-endian)
// repeated 128 times. It keeps `depth` operations in flight (never two on
// one block), issues a flush after every `every` operations, and prints:
//   "pass P zeros B..."   before the first operation of pass P (the blocks
//                          zeroed in that pass, relative block numbers)
//   "flushed F B:P ..."    when flush F completes: the operations that had
//                          completed when it was issued
//   "acked B:P ..."        when the connection fails: the operations known
//                          to be acknowledged that no completed flush covers
//                          (those in flight get up to 5 s to be answered)
//   "unacked B:P ..."      then the operations issued but never acknowledged
//                          (failed, or no reply): they may or may not have
//                          happened
//   "error ..."            then (exit 2)
// It stops by itself after `seconds` ("done").
constexpr const char* kWriterScript = R"PY(
import nbd, random, struct, sys, time
uri = sys.argv[1]
base, blocks, depth, every, seed = (int(a) for a in sys.argv[2:7])
seconds = float(sys.argv[7])
BS = 4096
MASK = (1 << 64) - 1

def stamp(block, gen):
    off = base + block * BS
    mix = (off * 0x2545F4914F6CDD1D + gen * 0x9E3779B97F4A7C15) & MASK
    return struct.pack(">8sQQQ", b"DSTCRSH1", off, gen, mix) * (BS // 32)

def emit(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()

rng = random.Random(seed)
h = nbd.NBD()
h.connect_uri(uri)
deadline = time.monotonic() + seconds
inflight = {}   # cookie -> (block, gen, buffer)
busy = set()
completed = []  # completed since the last flush was issued
flushes = {}    # cookie -> (flush number, operations it covers)
flush_no = 0
since_flush = 0
gen = 0
order = []
pos = 0
zeros = set()
try:
    while time.monotonic() < deadline:
        for c in list(inflight):
            if h.aio_command_completed(c):
                b, g, _ = inflight.pop(c)
                busy.discard(b)
                completed.append((b, g))
        for c in list(flushes):
            if h.aio_command_completed(c):
                n, covered = flushes.pop(c)
                emit("flushed %d %s" % (n, " ".join("%d:%d" % x for x in covered)))
        while len(inflight) < depth:
            if pos == len(order):
                gen += 1
                order = list(range(blocks))
                rng.shuffle(order)
                pos = 0
                zeros = set(rng.sample(range(blocks), blocks // 8))
                emit("pass %d zeros %s" % (gen, " ".join(str(b) for b in sorted(zeros))))
            b = order[pos]
            if b in busy:
                break
            pos += 1
            off = base + b * BS
            buf = None
            if b in zeros:
                c = h.aio_trim(BS, off) if b % 2 else h.aio_zero(BS, off)
            else:
                buf = nbd.Buffer.from_bytearray(bytearray(stamp(b, gen)))
                c = h.aio_pwrite(buf, off)
            inflight[c] = (b, gen, buf)
            busy.add(b)
            since_flush += 1
            if since_flush >= every:
                since_flush = 0
                flush_no += 1
                flushes[h.aio_flush()] = (flush_no, completed)
                completed = []
        h.poll(100)
    emit("done")
except nbd.Error as e:
    acked = list(completed)
    for n, covered in flushes.values():
        acked.extend(covered)
    # The operations still in flight: wait (bounded) for their replies, so
    # that one the server answered after the first failure counts as
    # acknowledged; the others may or may not have happened.
    unacked = []
    settle = time.monotonic() + 5
    while inflight:
        for c in list(inflight):
            try:
                done = h.aio_command_completed(c)
            except nbd.Error:
                unacked.append(inflight.pop(c)[:2])
                continue
            if done:
                acked.append(inflight.pop(c)[:2])
        if not inflight:
            break
        if time.monotonic() > settle or h.aio_is_dead() or h.aio_is_closed():
            unacked.extend(x[:2] for x in inflight.values())
            break
        try:
            h.poll(100)
        except nbd.Error:
            pass
    emit("acked %s" % " ".join("%d:%d" % x for x in acked))
    emit("unacked %s" % " ".join("%d:%d" % x for x in unacked))
    emit("error %s" % e)
    sys.exit(2)
)PY";

// The writer's output, complete lines only.
struct WriterLog {
  std::map<uint64_t, std::set<uint64_t>> zeros;  // pass -> blocks zeroed in it
  uint64_t last_pass = 0;
  std::vector<uint64_t> flushed;  // per block: latest generation covered by a flush, 0 if none
  std::vector<uint64_t> acked;    // per block: latest acknowledged generation (flushed or not)
  size_t flush_lines = 0;
  size_t flushed_ops = 0;
  size_t flushed_zero_ops = 0;
  size_t unflushed_acked_ops = 0;                  // on the "acked" line
  std::map<uint64_t, std::set<uint64_t>> unacked;  // block -> generations issued, never acked
  bool error = false;
  std::string error_text;  // the "error" line
  bool done = false;
};

WriterLog ParseWriterLog(const std::string& text, uint64_t blocks) {
  WriterLog log;
  log.flushed.assign(blocks, 0);
  log.acked.assign(blocks, 0);
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (in.eof()) break;  // no newline yet: incomplete
    std::istringstream fields(line);
    std::string kind;
    fields >> kind;
    if (kind == "pass") {
      uint64_t pass = 0;
      std::string word;
      fields >> pass >> word;
      if (word != "zeros") throw std::runtime_error("bad writer line: " + line);
      std::set<uint64_t>& z = log.zeros[pass];
      for (uint64_t b; fields >> b;)
        z.insert(b);
      log.last_pass = std::max(log.last_pass, pass);
    } else if (kind == "flushed" || kind == "acked") {
      const bool flushed = kind == "flushed";
      if (flushed) {
        ++log.flush_lines;
        uint64_t number = 0;
        fields >> number;
      }
      for (std::string op; fields >> op;) {
        const size_t colon = op.find(':');
        if (colon == std::string::npos) throw std::runtime_error("bad writer line: " + line);
        const uint64_t b = std::stoull(op.substr(0, colon));
        const uint64_t g = std::stoull(op.substr(colon + 1));
        if (b >= blocks) throw std::runtime_error("bad writer line: " + line);
        log.acked[b] = std::max(log.acked[b], g);
        if (!flushed) {
          ++log.unflushed_acked_ops;
          continue;
        }
        log.flushed[b] = std::max(log.flushed[b], g);
        ++log.flushed_ops;
        if (log.zeros[g].count(b)) ++log.flushed_zero_ops;
      }
    } else if (kind == "unacked") {
      for (std::string op; fields >> op;) {
        const size_t colon = op.find(':');
        if (colon == std::string::npos) throw std::runtime_error("bad writer line: " + line);
        const uint64_t b = std::stoull(op.substr(0, colon));
        if (b >= blocks) throw std::runtime_error("bad writer line: " + line);
        log.unacked[b].insert(std::stoull(op.substr(colon + 1)));
      }
    } else if (kind == "error") {
      log.error = true;
      log.error_text = line;
    } else if (kind == "done") {
      log.done = true;
    }
  }
  return log;
}

// A block as the writer left it: zeros, a stamp of generation `gen`, or
// anything else (torn, misplaced, garbage).
struct BlockState {
  enum Kind { kZeros, kStamp, kGarbage } kind = kGarbage;
  uint64_t gen = 0;
  std::string why;
};

uint64_t Be64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i)
    v = (v << 8) | p[i];
  return v;
}

bool SameState(const BlockState& a, const BlockState& b) {
  return a.kind == b.kind && a.gen == b.gen && a.kind != BlockState::kGarbage;
}

std::string DescribeState(const BlockState& s) {
  switch (s.kind) {
    case BlockState::kZeros:
      return "zeros";
    case BlockState::kStamp:
      return "generation " + std::to_string(s.gen);
    case BlockState::kGarbage:
      return "garbage (" + s.why + ")";
  }
  return "?";
}

BlockState Classify(const uint8_t* data, uint64_t offset) {
  BlockState s;
  if (AllZero({data, kBlock})) {
    s.kind = BlockState::kZeros;
    return s;
  }
  for (uint64_t unit = 32; unit < kBlock; unit += 32)
    if (std::memcmp(data, data + unit, 32) != 0) {
      s.why = "32-byte unit at " + std::to_string(unit) + " differs from the first (torn?)";
      return s;
    }
  if (std::memcmp(data, "DSTCRSH1", 8) != 0) {
    s.why = "no stamp";
    return s;
  }
  const uint64_t off = Be64(data + 8), gen = Be64(data + 16), mix = Be64(data + 24);
  if (off != offset) {
    s.why = "stamp of offset " + std::to_string(off) + " (misplaced)";
    return s;
  }
  if (mix != off * 0x2545F4914F6CDD1Dull + gen * 0x9E3779B97F4A7C15ull) {
    s.why = "bad stamp check value";
    return s;
  }
  s.kind = BlockState::kStamp;
  s.gen = gen;
  return s;
}

// Checks block `b` (relative to the writer's base) against what the writer
// reported: `floor` is the latest generation that must have reached it (the
// last flushed one, or the last acknowledged one), "" if the block is in a
// state it may be in, else why not.
std::string CheckWriterBlock(const WriterLog& log, uint64_t b, uint64_t floor,
                             const BlockState& s) {
  auto zeroed_in = [&](uint64_t pass) {
    auto it = log.zeros.find(pass);
    return it != log.zeros.end() && it->second.count(b) > 0;
  };
  const bool floor_zero = floor > 0 && zeroed_in(floor);
  switch (s.kind) {
    case BlockState::kGarbage:
      return "not a block the writer wrote: " + s.why;
    case BlockState::kStamp:
      if (s.gen < floor)
        return "generation " + std::to_string(s.gen) + " but generation " + std::to_string(floor) +
               " had been acknowledged (lost write)";
      if (s.gen == floor && floor_zero)
        return "generation " + std::to_string(s.gen) +
               " data, but that generation zeroed the block and was acknowledged (resurrected)";
      if (s.gen > log.last_pass) return "generation " + std::to_string(s.gen) + " never started";
      if (zeroed_in(s.gen))
        return "generation " + std::to_string(s.gen) + " data, but that generation zeroed it";
      return "";
    case BlockState::kZeros:
      if (floor == 0 || floor_zero) return "";
      for (uint64_t g = floor + 1; g <= log.last_pass; ++g)
        if (zeroed_in(g)) return "";
      return "zeros, but generation " + std::to_string(floor) +
             " was written and acknowledged, and nothing zeroed it since";
  }
  return "?";
}

// Checks the writer's area in the chunks ReadWholeVolume() visits: every
// block must be in a state the flushes allow (`wrong`), and, stricter, hold
// every acknowledged operation even if no flush covered it (`lost_acked`):
// NBD promises only the former after a crash, but the export nodes did not
// crash and the aggregator acknowledges an operation only once they have
// done it, so nothing acknowledged may go missing here either.
//
// A writer run over an area an earlier run wrote (`before`: the state every
// block was in when this run started, as read then) numbers its generations
// from 1 again, so its log alone does not describe the area: a block on
// which none of this run's operations was acknowledged (its only one was in
// flight when the connection went, and the run's first pass issued one on
// every block) may still hold exactly what it held before, generation
// numbers beyond this run's included. A block on which anything was
// acknowledged is held to this run's log alone.
struct WriterAreaCheck {
  WriterAreaCheck(const WriterLog& l, uint64_t b, uint64_t n,
                  const std::vector<BlockState>* before_run = nullptr)
      : log(l), base(b), blocks(n), before(before_run) {
    states.resize(n);
  }

  const WriterLog& log;
  uint64_t base;
  uint64_t blocks;
  const std::vector<BlockState>* before;
  std::vector<BlockState> states;  // per block, as read
  std::vector<std::string> wrong, lost_acked;
  // Blocks that only what they held before this run explains.
  std::vector<std::string> kept;
  size_t kept_blocks = 0;
  size_t flushed_blocks = 0;  // blocks with a flushed operation to check
  size_t zero_blocks = 0;

  void Visit(uint64_t at, const Bytes& data) {
    for (uint64_t off = std::max(at, base);
         off < std::min(at + data.size(), base + blocks * kBlock); off += kBlock) {
      const uint64_t b = (off - base) / kBlock;
      const BlockState s = Classify(data.data() + (off - at), off);
      states[b] = s;
      if (log.flushed[b] > 0) ++flushed_blocks;
      if (s.kind == BlockState::kZeros) ++zero_blocks;
      std::string where = "writer block " + std::to_string(b) + " (volume offset " +
                          std::to_string(off) + ", last flushed generation " +
                          std::to_string(log.flushed[b]) + ", last acknowledged " +
                          std::to_string(log.acked[b]);
      if (auto it = log.unacked.find(b); it != log.unacked.end())
        for (uint64_t g : it->second)
          where += ", generation " + std::to_string(g) + " unacknowledged";
      if (before) where += ", before this run: " + DescribeState((*before)[b]);
      where += "): ";
      const std::string why = CheckWriterBlock(log, b, log.flushed[b], s);
      const std::string why_acked = CheckWriterBlock(log, b, log.acked[b], s);
      if ((!why.empty() || !why_acked.empty()) && before && log.acked[b] == 0 &&
          log.unacked.count(b) > 0 && SameState(s, (*before)[b])) {
        // Nothing this run did to the block was acknowledged, and it holds
        // what it held before (which the earlier run's check accepted).
        if (kept.size() < 20) kept.push_back(where + (why.empty() ? why_acked : why));
        ++kept_blocks;
        continue;
      }
      if (!why.empty() && wrong.size() < 20) wrong.push_back(where + why);
      if (why.empty() && !why_acked.empty() && lost_acked.size() < 20)
        lost_acked.push_back(where + why_acked);
    }
  }
};

// Starts the writer over `blocks` blocks at `base` of the volume at `uri`.
std::unique_ptr<Process> StartWriter(const std::string& script, const std::string& uri,
                                     uint64_t base, uint64_t blocks, uint64_t seed) {
  return std::make_unique<Process>(Argv{kPython3, script, uri, std::to_string(base),
                                        std::to_string(blocks), "16", "64", std::to_string(seed),
                                        "60"});
}

std::string ProcessOutput(Process& p) {
  return JoinArgv(p.argv()) + (p.Running() ? " (running)" : " (exited)") + "\nstdout:\n" +
         p.stdout_text() + "\nstderr:\n" + p.stderr_text();
}

TEST_SUITE_BEGIN("fault_crash");

// ---------------------------------------------------------------------------

TEST_CASE(
    "SIGKILL during fio and a flushing writer: flushed writes survive, only dirty regions "
    "are recomputed") {
  CrashVolume volume;
  TempDir work("dst-fault-crash-work");
  const std::string script = work.File("writer.py");
  WriteFile(script, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(kWriterScript),
                                             std::strlen(kWriterScript)));

  // fio: random 4K writes over the first 16 MiB of the volume (regions 0 and
  // 1 of both members), a flush every 16 writes. The writer: 4 MiB at
  // 32 MiB (region 4 of both members). The rest of the volume stays clean.
  constexpr uint64_t kFioSize = 16 * kMiB;
  constexpr uint64_t kWriterBase = 32 * kMiB;
  constexpr uint64_t kWriterBlocks = 1024;
  std::set<Region> touched = RegionsOf(0, kFioSize);
  for (const Region& r : RegionsOf(kWriterBase, kWriterBlocks * kBlock))
    touched.insert(r);
  REQUIRE(touched.size() == 6);

  std::ostringstream summary;  // printed at the end, for the record
  std::unique_ptr<AggregatorServer> first = StartCrashable(volume);
  const std::string uri = first->uri(kVolume);
  WriterLog before_kill;
  std::set<Region> dirty;
  {
    Process fio({kFio, "--name=dst-fault-crash", "--ioengine=nbd", "--uri=" + uri, "--rw=randwrite",
                 "--bs=4k", "--iodepth=16", "--fsync=16", "--offset=0",
                 "--size=" + std::to_string(kFioSize), "--time_based", "--runtime=60",
                 "--output-format=normal"});
    std::unique_ptr<Process> writer_process =
        StartWriter(script, uri, kWriterBase, kWriterBlocks, 20260101);
    Process& writer = *writer_process;

    // Kill once the writer has overwritten blocks (pass 3 under way) and
    // seen several flushes complete, and fio has been writing into all of
    // its regions for a while (fio starts slower than the writer).
    const auto deadline = SteadyClock::now() + 20s;
    std::optional<SteadyClock::time_point> all_busy_at;
    for (;;) {
      before_kill = ParseWriterLog(writer.stdout_text(), kWriterBlocks);
      if (before_kill.last_pass >= 3 && before_kill.flush_lines >= 8) {
        if (!all_busy_at && QueryIntegrity(*first).Count("dirty_regions") == touched.size())
          all_busy_at = SteadyClock::now();
        if (all_busy_at && SteadyClock::now() - *all_busy_at >= 500ms) break;
      }
      const bool gone = !writer.Running() || !fio.Running();
      // FAIL throws: the Process objects kill fio, the writer and the
      // aggregator on the way out.
      if (gone || SteadyClock::now() > deadline)
        FAIL("the load did not get going:\n"
             << ProcessOutput(writer) << "\n"
             << ProcessOutput(fio) << "\naggregator:\n"
             << first->stderr_text());
      std::this_thread::sleep_for(20ms);
    }
    // Just before the kill: both clients busy, every region they write into
    // marked, nothing failed verification.
    const MemberStats live = QueryIntegrity(*first);
    INFO("before the kill: " << live.line());
    // The cleaner's first run is 5 s after the start; until then no bit
    // can have been cleared.
    const bool cleaner_ran = live.Count("table_writebacks") > 0;
    if (!cleaner_ran) CHECK(live.Count("dirty_regions") == touched.size());
    CHECK(live.Count("checksum_errors") == 0);
    CHECK(fio.Running());
    CHECK(writer.Running());
    KillAggregator(*first);
    const auto killed_at = SteadyClock::now();

    // Both clients lose their connection and fail; neither may hang.
    const std::optional<int> writer_code = WaitOrKill(writer, 10s);
    const std::optional<int> fio_code = WaitOrKill(fio, 15s);
    INFO("writer stderr:\n" << writer.stderr_text());
    CHECK_MESSAGE(writer_code.has_value(), "the writer did not notice the aggregator's death");
    CHECK(writer_code.value_or(0) == 2);
    CHECK_MESSAGE(fio_code.has_value(), "fio did not notice the aggregator's death");
    CHECK(fio_code.value_or(0) != 0);
    summary << "clients ended " << SecondsSince(killed_at) << " s after the kill; ";
    // fio flushed as it went (its sync latencies are there) until the kill.
    INFO("fio:\n" << fio.stdout_text() << fio.stderr_text());
    CHECK(Contains(fio.stdout_text(), "fsync/fdatasync/sync_file_range:"));

    before_kill = ParseWriterLog(writer.stdout_text(), kWriterBlocks);
    CHECK(before_kill.error);
    summary << "writer: " << before_kill.last_pass << " passes, " << before_kill.flush_lines
            << " flushes covering " << before_kill.flushed_ops << " operations ("
            << before_kill.flushed_zero_ops << " TRIM/WRITE_ZEROES), "
            << before_kill.unflushed_acked_ops << " more acknowledged; ";
    CHECK(before_kill.flushed_zero_ops > 0);

    // What the crash left on the members: the bits of the regions the
    // clients were writing into (all of them, if the cleaner had not run
    // yet), none elsewhere.
    dirty = volume.DirtyRegionsOnFiles();
    INFO("dirty on the members: " << Describe(dirty) << ", written: " << Describe(touched));
    CHECK(!dirty.empty());
    if (!cleaner_ran) CHECK(dirty == touched);
    for (const Region& r : dirty)
      CHECK_MESSAGE(touched.count(r), "bit set for region m" << r.first << "/r" << r.second
                                                             << ", which nothing wrote");
  }

  // Restart over the same members: recovery recomputes exactly the regions
  // whose bit is set, logs it, and only then serves.
  WriterLog before_stop;
  std::vector<BlockState> after_crash_states;  // the writer's area when the second run started
  {
    Aggregator second(volume.uris());
    const std::string log = second.stderr_text();
    INFO("aggregator log:\n" << log);
    const Recovery rec = ParseRecovery(log);
    CHECK(rec.unclean_line);
    CHECK(rec.regions == dirty.size());
    CHECK(rec.regions > 0);
    CHECK(rec.regions < rec.total);
    CHECK(rec.total == kTotalRegions);
    CHECK(rec.recomputed_line);
    CHECK(rec.recomputed == dirty.size());
    CHECK(rec.serving_after);
    const MemberStats stats = QueryIntegrity(second);
    INFO(stats.line());
    CHECK(stats.Count("recomputed_regions") == dirty.size());
    CHECK(stats.Count("checksum_errors") == 0);

    // Every block of the volume reads (no EIO), and every block of the
    // writer's area is in a state the flushes allow.
    NbdClient client;
    REQUIRE_NBD_OK(client.Connect(second.uri(kVolume)));
    REQUIRE(client.Size() == static_cast<int64_t>(kVolumeSize));
    WriterAreaCheck check(before_kill, kWriterBase, kWriterBlocks);
    const VolumeRead after_crash =
        ReadWholeVolume(client, [&](uint64_t at, const Bytes& data) { check.Visit(at, data); });
    CHECK_MESSAGE(after_crash.failures.empty(), "reads failed:\n"
                                                    << JoinLines(after_crash.failures));
    CHECK_MESSAGE(check.wrong.empty(), "blocks in a state no flush allows:\n"
                                           << JoinLines(check.wrong));
    CHECK_MESSAGE(check.lost_acked.empty(),
                  "acknowledged (unflushed) operations lost although no member crashed:\n"
                      << JoinLines(check.lost_acked));
    summary << check.flushed_blocks << " writer blocks had a flushed operation to check, "
            << check.zero_blocks << " read as zeros; recomputed " << rec.regions << " of "
            << rec.total << " regions; ";
    CHECK(check.flushed_blocks >= kWriterBlocks / 2);
    after_crash_states = check.states;

    const MemberStats read_stats = QueryIntegrity(second);
    INFO(read_stats.line());
    CHECK(read_stats.Count("checksum_errors") == 0);
    CHECK(read_stats.Count("rereads_recovered") == 0);

    // A clean stop under load (the writer again, TRIM and WRITE_ZEROES
    // included): SIGTERM cuts the client off, lets what is in flight finish,
    // writes every checksum back, clears every bit and marks the volume
    // clean, promptly.
    std::unique_ptr<Process> writer =
        StartWriter(script, second.uri(kVolume), kWriterBase, kWriterBlocks, 20260202);
    const auto deadline = SteadyClock::now() + 20s;
    for (;;) {
      before_stop = ParseWriterLog(writer->stdout_text(), kWriterBlocks);
      if (before_stop.last_pass >= 2 && before_stop.flush_lines >= 4) break;
      if (!writer->Running() || SteadyClock::now() > deadline)
        FAIL("the writer did not get going:\n" << ProcessOutput(*writer));
      std::this_thread::sleep_for(20ms);
    }
    const auto stop_at = SteadyClock::now();
    second.Kill(SIGTERM);
    const std::optional<int> code = second.Wait(15s);
    const double stop_seconds = SecondsSince(stop_at);
    CHECK_MESSAGE(code == 0, "SIGTERM under load: exit code "
                                 << (code ? std::to_string(*code) : "none within 15 s"));
    CHECK(stop_seconds < 5.0);
    summary << "clean stop under load took " << stop_seconds << " s; ";
    CHECK(Contains(second.stderr_text(), "info: volume " + kVolume + ": stopped clean"));
    const std::optional<int> writer_code = WaitOrKill(*writer, 10s);
    INFO(ProcessOutput(*writer));
    CHECK(writer_code.value_or(0) == 2);
    before_stop = ParseWriterLog(writer->stdout_text(), kWriterBlocks);
    CHECK(before_stop.error);
  }
  CHECK_MESSAGE(volume.DirtyRegionsOnFiles().empty(),
                "bits left after a clean stop: " << Describe(volume.DirtyRegionsOnFiles()));
  // What the members hold now, as the volume lays it out.
  std::vector<uint64_t> on_files;
  for (uint64_t at = 0; at < kVolumeSize; at += kReadPiece)
    on_files.push_back(
        Fingerprint(volume.VolumeRangeOnFiles(at, std::min(kReadPiece, kVolumeSize - at))));

  // After the clean stop: nothing to recover, and the data the members
  // hold, every acknowledged operation of the writer included.
  {
    Aggregator third(volume.uris());
    const std::string log = third.stderr_text();
    INFO("aggregator log:\n" << log);
    const Recovery rec = ParseRecovery(log);
    CHECK_FALSE(rec.unclean_line);
    CHECK_FALSE(rec.nothing_dirty);
    CHECK_FALSE(rec.any_recompute);
    CHECK_FALSE(Contains(log, "unclean"));
    NbdClient client;
    REQUIRE_NBD_OK(client.Connect(third.uri(kVolume)));
    // The second writer run started over what the first one left (and
    // numbered its generations from 1 again).
    WriterAreaCheck check(before_stop, kWriterBase, kWriterBlocks, &after_crash_states);
    const VolumeRead again =
        ReadWholeVolume(client, [&](uint64_t at, const Bytes& data) { check.Visit(at, data); });
    CHECK_MESSAGE(again.failures.empty(), "reads failed:\n" << JoinLines(again.failures));
    CHECK_MESSAGE(again.fingerprints == on_files,
                  "the volume does not read what its members hold after a clean stop");
    CHECK_MESSAGE(check.wrong.empty(), "blocks in a state no flush allows:\n"
                                           << JoinLines(check.wrong));
    CHECK_MESSAGE(check.lost_acked.empty(), "acknowledged operations lost across a clean stop:\n"
                                                << JoinLines(check.lost_acked));
    summary << "second writer: " << before_stop.last_pass << " passes, " << before_stop.flush_lines
            << " flushes covering " << before_stop.flushed_ops << " operations, "
            << before_stop.unflushed_acked_ops << " more acknowledged, "
            << before_stop.unacked.size() << " blocks with an unacknowledged operation, "
            << check.kept_blocks << " of them still holding what the first run left ("
            << before_stop.error_text << ")";
    if (!check.kept.empty())
      MESSAGE(
          "blocks that only the first run's data explains (their operation in the second "
          "run was never acknowledged):\n"
          << JoinLines(check.kept));
    const MemberStats stats = QueryIntegrity(third);
    INFO(stats.line());
    CHECK(stats.Count("recomputed_regions") == 0);
    CHECK(stats.Count("checksum_errors") == 0);
  }
  MESSAGE(summary.str());
}

// ---------------------------------------------------------------------------

TEST_CASE(
    "SIGKILL after a burst, before the cleaner's next run: flushed data comes back, "
    "trimmed and zeroed blocks stay zeros") {
  CrashVolume volume;
  // Volume areas, all 4K-aligned:
  //   X: 1 MiB at 8 MiB  (region 1 of both members): old data, then the burst
  //   Y: 512K at 40 MiB  (region 5 of both members): old data, never touched again
  //   Z: 256K at 72 MiB  (region 9 of both members): first written in the burst
  constexpr uint64_t kX = 8 * kMiB, kXLen = 1 * kMiB;
  constexpr uint64_t kY = 40 * kMiB, kYLen = 512 * kKiB;
  constexpr uint64_t kZ = 72 * kMiB, kZLen = 256 * kKiB;
  const Bytes old_x = RandomBytes(kXLen, 501);
  const Bytes old_y = RandomBytes(kYLen, 502);
  const Bytes new_x_head = RandomBytes(32 * kBlock, 503);
  const Bytes new_z = RandomBytes(kZLen, 504);
  const Bytes small = RandomBytes(100, 505);
  REQUIRE(RegionsOf(kX, kXLen) == std::set<Region>{{0, 1}, {1, 1}});
  REQUIRE(RegionsOf(kY, kYLen) == std::set<Region>{{0, 5}, {1, 5}});
  REQUIRE(RegionsOf(kZ, kZLen) == std::set<Region>{{0, 9}, {1, 9}});
  std::set<Region> burst_regions = RegionsOf(kX, kXLen);
  for (const Region& r : RegionsOf(kZ, kZLen))
    burst_regions.insert(r);

  // The burst, in blocks of X: [0,32) new data; [32,64) TRIM; [64,96)
  // WRITE_ZEROES with NO_HOLE; [96,128) WRITE_ZEROES (may punch); 100 bytes
  // at 1000 into block 128 (a read-modify-write); bytes [160 blocks + 100,
  // 192 blocks + 200) zeroed, ragged at both ends; the rest keeps the old
  // data. Z gets new data.
  constexpr uint64_t kRaggedFrom = 160 * kBlock + 100, kRaggedTo = 192 * kBlock + 200;
  Bytes want_x = old_x;
  std::copy(new_x_head.begin(), new_x_head.end(), want_x.begin());
  std::fill(want_x.begin() + 32 * kBlock, want_x.begin() + 128 * kBlock, 0);
  std::copy(small.begin(), small.end(), want_x.begin() + 128 * kBlock + 1000);
  std::fill(want_x.begin() + kRaggedFrom, want_x.begin() + kRaggedTo, 0);
  // Whole blocks the burst zeroed.
  std::vector<uint64_t> zeroed_blocks;
  for (uint64_t b = 32; b < 128; ++b)
    zeroed_blocks.push_back(kX / kBlock + b);
  for (uint64_t b = 161; b < 192; ++b)
    zeroed_blocks.push_back(kX / kBlock + b);

  // Reads X, Y and Z and checks them against what was flushed.
  auto check_areas = [&](NbdClient& client) {
    Bytes got(kXLen);
    REQUIRE_NBD_OK(ReadFor(client, got, kX));
    if (got != want_x) {
      const size_t at = *FirstDifference(got, want_x);
      const uint64_t b = at / kBlock;
      FAIL_CHECK("X differs from what was flushed at byte "
                 << at << " (block " << b << " of X): got "
                 << std::string(AllZero({got.data() + b * kBlock, kBlock}) ? "zeros" : "data"));
    }
    got.assign(kYLen, 0);
    REQUIRE_NBD_OK(ReadFor(client, got, kY));
    CHECK(got == old_y);
    got.assign(kZLen, 0);
    REQUIRE_NBD_OK(ReadFor(client, got, kZ));
    CHECK(got == new_z);
  };
  auto check_whole_volume = [&](NbdClient& client) {
    const VolumeRead all = ReadWholeVolume(client, [](uint64_t, const Bytes&) {});
    CHECK_MESSAGE(all.failures.empty(), "reads failed:\n" << JoinLines(all.failures));
  };
  // Waits until the cleaner has written every checksum back and cleared
  // every bit, on the members too (the bitmap write may still be on its way
  // when the stats line says 0); its first run is 5 s after the start.
  auto wait_for_cleaner = [&volume](AggregatorServer& agg) {
    return WaitForIntegrity(
        agg,
        [&volume](const MemberStats& s) {
          return s.Count("dirty_regions") == 0 && s.Count("table_dirty") == 0 &&
                 s.Count("table_writebacks") > 0 && volume.DirtyRegionsOnFiles().empty();
        },
        15s);
  };

  // 1. Old data, flushed, and left to the cleaner: once it has run, the
  //    table entries are on the members and no bit is set. Then, before its
  //    next run, the burst into the cleared regions, a flush, and a crash:
  //    the tables on the members still hold the old data's checksums, only
  //    the (set again) bits say that X and Z changed.
  {
    std::unique_ptr<AggregatorServer> agg = StartCrashable(volume);
    NbdClient client;
    REQUIRE_NBD_OK(client.Connect(agg->uri(kVolume)));
    REQUIRE_NBD_OK(WriteFor(client, old_x, kX));
    REQUIRE_NBD_OK(WriteFor(client, old_y, kY));
    REQUIRE_NBD_OK(FlushFor(client));
    const MemberStats cleaned = wait_for_cleaner(*agg);
    INFO("cleaned: " << cleaned.line());
    const auto cleaned_at = SteadyClock::now();
    REQUIRE(volume.DirtyRegionsOnFiles().empty());
    for (uint64_t off = kX; off < kX + kXLen; off += kBlock)
      REQUIRE_MESSAGE(!volume.TableEntryIsZeroOnFile(off / kBlock),
                      "no checksum on the member for volume offset " << off);

    REQUIRE_NBD_OK(WriteFor(client, new_x_head, kX));
    REQUIRE_NBD_OK(TrimFor(client, kX + 32 * kBlock, 32 * kBlock));
    REQUIRE_NBD_OK(ZeroFor(client, kX + 64 * kBlock, 32 * kBlock, LIBNBD_CMD_FLAG_NO_HOLE));
    REQUIRE_NBD_OK(ZeroFor(client, kX + 96 * kBlock, 32 * kBlock, 0));
    REQUIRE_NBD_OK(WriteFor(client, small, kX + 128 * kBlock + 1000));
    REQUIRE_NBD_OK(ZeroFor(client, kX + kRaggedFrom, kRaggedTo - kRaggedFrom, 0));
    REQUIRE_NBD_OK(WriteFor(client, new_z, kZ));
    REQUIRE_NBD_OK(FlushFor(client));
    check_areas(client);

    const MemberStats stats = QueryIntegrity(*agg);
    INFO("before the kill: " << stats.line());
    INFO("burst done " << SecondsSince(cleaned_at) << " s after the cleaner's run");
    // The premise: the cleaner has not run since (nothing more written back).
    REQUIRE_MESSAGE(stats.Count("table_writebacks") == cleaned.Count("table_writebacks"),
                    "the cleaner ran again before the kill; the burst took too long");
    CHECK(stats.Count("dirty_regions") == burst_regions.size());
    CHECK(stats.Count("checksum_errors") == 0);
    KillAggregator(*agg);
  }
  // On the members: the bits of X's and Z's regions; the trimmed and zeroed
  // blocks hold zeros, but their table entries still hold the old data's
  // checksums (only recovery can fix those), and Z has no entries yet.
  CHECK_MESSAGE(volume.DirtyRegionsOnFiles() == burst_regions,
                "dirty on the members: " << Describe(volume.DirtyRegionsOnFiles()));
  for (uint64_t block : zeroed_blocks) {
    CHECK_MESSAGE(AllZero(volume.BlockOnFile(block)),
                  "trimmed/zeroed volume block " << block << " not zeroed on its member");
    CHECK_MESSAGE(!volume.TableEntryIsZeroOnFile(block),
                  "volume block " << block << ": its table entry on the member is zero already");
  }
  for (uint64_t off = kZ; off < kZ + kZLen; off += kBlock)
    CHECK(volume.TableEntryIsZeroOnFile(off / kBlock));

  // 2. Restart: exactly those regions are recomputed; everything reads back
  //    as flushed, nothing returns EIO, the zeroed blocks are holes. Then
  //    the cleaner writes the recomputed checksums back and clears the bits,
  //    and another crash.
  {
    std::unique_ptr<AggregatorServer> agg = StartCrashable(volume);
    const std::string log = agg->stderr_text();
    INFO("aggregator log:\n" << log);
    const Recovery rec = ParseRecovery(log);
    CHECK(rec.unclean_line);
    CHECK(rec.regions == burst_regions.size());
    CHECK(rec.total == kTotalRegions);
    CHECK(rec.recomputed == burst_regions.size());
    CHECK(rec.serving_after);

    NbdClient client;
    REQUIRE_NBD_OK(client.Connect(agg->uri(kVolume)));
    check_areas(client);
    std::vector<Extent> extents;
    REQUIRE_NBD_OK(client.Map(96 * kBlock, kX + 32 * kBlock, &extents));
    REQUIRE(!extents.empty());
    CHECK(extents.size() == 1);
    CHECK(extents[0].zero());
    check_whole_volume(client);
    const MemberStats stats = QueryIntegrity(*agg);
    INFO(stats.line());
    CHECK(stats.Count("recomputed_regions") == burst_regions.size());
    CHECK(stats.Count("checksum_errors") == 0);
    CHECK(stats.Count("rereads_recovered") == 0);

    const MemberStats cleaned = wait_for_cleaner(*agg);
    INFO("cleaned: " << cleaned.line());
    CHECK(volume.DirtyRegionsOnFiles().empty());
    for (uint64_t block : zeroed_blocks)
      CHECK_MESSAGE(volume.TableEntryIsZeroOnFile(block),
                    "volume block " << block << ": the recomputed zero entry is not on the member");
    for (uint64_t off = kZ; off < kZ + kZLen; off += kBlock)
      CHECK(!volume.TableEntryIsZeroOnFile(off / kBlock));
    KillAggregator(*agg);
  }

  // 3. Restart after a crash with no bit set: nothing is recomputed, and
  //    everything verifies against the tables on the members. A clean stop
  //    leaves no bit behind.
  {
    Aggregator agg(volume.uris());
    const std::string log = agg.stderr_text();
    INFO("aggregator log:\n" << log);
    const Recovery rec = ParseRecovery(log);
    CHECK(rec.nothing_dirty);
    CHECK_FALSE(rec.unclean_line);
    CHECK_FALSE(rec.any_recompute);
    NbdClient client;
    REQUIRE_NBD_OK(client.Connect(agg.uri(kVolume)));
    check_areas(client);
    check_whole_volume(client);
    const MemberStats stats = QueryIntegrity(agg);
    INFO(stats.line());
    CHECK(stats.Count("recomputed_regions") == 0);
    CHECK(stats.Count("checksum_errors") == 0);
    CHECK(stats.Count("rereads_recovered") == 0);
    CHECK(agg.Stop() == 0);
    CHECK(Contains(agg.stderr_text(), "info: volume " + kVolume + ": stopped clean"));
  }
  CHECK(volume.DirtyRegionsOnFiles().empty());
}

TEST_SUITE_END();

}  // namespace
}  // namespace dst::test::fault::fault_crash_test
