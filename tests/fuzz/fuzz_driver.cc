#include "tests/fuzz/fuzz_driver.h"

#include <sys/socket.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "common/log.h"
#include "common/nbd_protocol.h"

namespace dst::fuzz {

void Fail(const char* what) {
  std::fprintf(stderr, "fuzz: invariant broken: %s\n", what);
  std::abort();
}

void QuietLogs() {
  SetLogLevel(std::getenv("DST_FUZZ_LOG") ? LogLevel::kDebug : LogLevel::kError);
}

// ---------------------------------------------------------------------------
// MemoryDevice

MemoryDevice::MemoryDevice(asio::any_io_executor executor, std::string name,
                           std::string description, uint64_t size, volume::VolumeCapabilities caps)
    : executor_(std::move(executor)),
      name_(std::move(name)),
      description_(std::move(description)),
      size_(size),
      caps_(caps) {}

void MemoryDevice::CheckRange(uint64_t offset, uint64_t length, bool modifies) const {
  Check(length > 0, "device called with an empty range");
  Check(offset <= size_ && length <= size_ - offset, "device called beyond its end");
  Check(!modifies || !caps_.read_only, "read-only device asked to modify");
}

void MemoryDevice::Later(uint64_t offset, std::function<void()> work) {
  ++pending_;
  Hop(static_cast<int>(offset / kBlockSize % 3), std::move(work));
}

void MemoryDevice::Hop(int hops, std::function<void()> work) {
  asio::post(executor_, [this, hops, work = std::move(work)]() mutable {
    if (hops > 0) return Hop(hops - 1, std::move(work));
    --pending_;
    work();
  });
}

bool MemoryDevice::Failing(uint64_t offset, uint64_t length) const {
  return offset + length > size_ - kBlockSize;
}

void MemoryDevice::CopyOut(uint64_t offset, uint64_t length, uint8_t* buf,
                           std::vector<volume::ByteRange>* holes) const {
  for (uint64_t at = offset; at < offset + length;) {
    const uint64_t block = at / kBlockSize, in_block = at % kBlockSize;
    const uint64_t n = std::min(kBlockSize - in_block, offset + length - at);
    const auto it = blocks_.find(block);
    if (it != blocks_.end()) {
      std::memcpy(buf + (at - offset), it->second.data() + in_block, n);
    } else {
      std::memset(buf + (at - offset), 0, n);
      if (!holes->empty() && holes->back().offset + holes->back().length == at)
        holes->back().length += n;
      else
        holes->push_back({at, n});
    }
    at += n;
  }
}

void MemoryDevice::CopyIn(uint64_t offset, uint64_t length, const uint8_t* buf) {
  for (uint64_t at = offset; at < offset + length;) {
    const uint64_t block = at / kBlockSize, in_block = at % kBlockSize;
    const uint64_t n = std::min(kBlockSize - in_block, offset + length - at);
    std::vector<uint8_t>& data = blocks_[block];
    data.resize(kBlockSize);
    if (buf)
      std::memcpy(data.data() + in_block, buf + (at - offset), n);
    else
      std::memset(data.data() + in_block, 0, n);
    at += n;
  }
}

// Whole blocks become holes; the partial ones at either end are zeroed.
void MemoryDevice::Deallocate(uint64_t offset, uint64_t length) {
  for (uint64_t at = offset; at < offset + length;) {
    const uint64_t block = at / kBlockSize, in_block = at % kBlockSize;
    const uint64_t n = std::min(kBlockSize - in_block, offset + length - at);
    if (n == kBlockSize)
      blocks_.erase(block);
    else if (Allocated(block))
      CopyIn(at, n, nullptr);
    at += n;
  }
}

// Runs of allocated and unallocated blocks, at most 8 (a device may answer
// short), the last one clipped to the range asked.
std::vector<volume::AllocationExtent> MemoryDevice::Extents(uint64_t offset,
                                                            uint64_t length) const {
  std::vector<volume::AllocationExtent> extents;
  bool last_allocated = false;
  for (uint64_t at = offset; at < offset + length;) {
    const uint64_t n = std::min(kBlockSize - at % kBlockSize, offset + length - at);
    const bool allocated = !caps_.can_block_status || Allocated(at / kBlockSize);
    if (!extents.empty() && allocated == last_allocated) {
      extents.back().length += n;
    } else {
      if (extents.size() == 8) break;
      extents.push_back({n, allocated ? 0 : nbd::kStateHole | nbd::kStateZero});
    }
    last_allocated = allocated;
    at += n;
  }
  return extents;
}

void MemoryDevice::Read(uint64_t offset, uint64_t length, uint8_t* buf, ReadDone done) {
  CheckRange(offset, length, false);
  Later(offset, [this, offset, length, buf, done = std::move(done)] {
    if (Failing(offset, length)) return done(EIO, {});
    std::vector<volume::ByteRange> holes;
    CopyOut(offset, length, buf, &holes);
    done(0, std::move(holes));
  });
}

void MemoryDevice::Write(uint64_t offset, uint64_t length, const uint8_t* buf, bool /*fua*/,
                         Done done) {
  CheckRange(offset, length, true);
  Later(offset, [this, offset, length, buf, done = std::move(done)] {
    if (Failing(offset, length)) return done(EIO);
    CopyIn(offset, length, buf);
    done(0);
  });
}

void MemoryDevice::Flush(Done done) {
  Later(0, [done = std::move(done)] { done(0); });
}

void MemoryDevice::Trim(uint64_t offset, uint64_t length, bool /*fua*/, Done done) {
  CheckRange(offset, length, true);
  Check(caps_.can_trim, "trim on a device that cannot trim");
  Later(offset, [this, offset, length, done = std::move(done)] {
    Deallocate(offset, length);
    done(0);
  });
}

// A fast zero is possible only where whole blocks can be punched out.
void MemoryDevice::Zero(uint64_t offset, uint64_t length, bool may_trim, bool fast_only,
                        bool /*fua*/, Done done) {
  CheckRange(offset, length, true);
  Check(!fast_only || caps_.can_fast_zero, "fast zero on a device that cannot");
  const bool aligned = offset % kBlockSize == 0 && length % kBlockSize == 0;
  Later(offset, [this, offset, length, may_trim, fast_only, aligned, done = std::move(done)] {
    if (fast_only && !(may_trim && aligned)) return done(ENOTSUP);
    if (Failing(offset, length)) return done(EIO);
    if (may_trim)
      Deallocate(offset, length);
    else
      CopyIn(offset, length, nullptr);
    done(0);
  });
}

void MemoryDevice::Cache(uint64_t offset, uint64_t length, Done done) {
  CheckRange(offset, length, false);
  Check(caps_.can_cache, "cache on a device that cannot cache");
  Later(offset, [done = std::move(done)] { done(0); });
}

void MemoryDevice::BlockStatus(uint64_t offset, uint64_t length, ExtentsDone done) {
  CheckRange(offset, length, false);
  Later(offset, [this, offset, length, done = std::move(done)] {
    if (Failing(offset, length)) return done(EIO, {});
    done(0, Extents(offset, length));
  });
}

// ---------------------------------------------------------------------------
// ServerState

namespace {

// Small, so that a few kilobytes of requests cannot make the server move
// megabytes of read data (which is what an input's time would go to), and
// a few reads in flight reach the in-flight limits below. Still two blocks,
// so that one read can mix data and holes.
constexpr uint32_t kMaxPayload = 2 * MemoryDevice::kBlockSize;

volume::VolumeCapabilities FullCapabilities() {
  volume::VolumeCapabilities caps;
  caps.can_trim = caps.can_fast_zero = caps.can_cache = caps.can_block_status = true;
  caps.max_payload = kMaxPayload;
  return caps;
}

volume::VolumeCapabilities ReadOnlyCapabilities() {
  volume::VolumeCapabilities caps;
  caps.read_only = true;
  caps.min_block = 512;
  caps.max_payload = kMaxPayload;
  return caps;
}

}  // namespace

ServerState::ServerState(asio::any_io_executor executor)
    : main(executor, "fuzz", "1 MiB in memory", 1 << 20, FullCapabilities()),
      read_only(executor, "ro", "", 64 << 10, ReadOnlyCapabilities()) {
  registry.Add(&main);
  registry.Add(&read_only);
  registry.SetDefault("fuzz");
  limits.per_connection = 2 * kMaxPayload;
  limits.total = 3 * kMaxPayload;
}

// ---------------------------------------------------------------------------
// Sessions

namespace {

using Protocol = asio::generic::stream_protocol;

// The whole input, then end-of-file: a client that has said all it will say.
asio::awaitable<void> Feed(server::Socket& client, std::span<const uint8_t> input) {
  co_await asio::async_write(client, asio::buffer(input.data(), input.size()), server::kAsTuple);
  asio::error_code ignored;
  client.shutdown(Protocol::socket::shutdown_send, ignored);
}

// Everything until the server closes (or resets) the connection.
asio::awaitable<void> Drain(server::Socket& client, std::vector<uint8_t>& output) {
  std::vector<uint8_t> buffer(64 * 1024);
  for (;;) {
    auto [ec, n] = co_await client.async_read_some(asio::buffer(buffer), server::kAsTuple);
    output.insert(output.end(), buffer.begin(), buffer.begin() + static_cast<ptrdiff_t>(n));
    if (ec) co_return;
  }
}

// Socketpair ends have every byte ready at once, so a loop that runs nothing
// for this long is stuck waiting on something that will never come.
constexpr auto kIdleLimit = std::chrono::seconds(1);

void RunToEnd(asio::io_context& io) {
  while (io.run_one_for(kIdleLimit) > 0) {
  }
  if (!io.stopped()) Fail("the session hangs: the server neither finished nor progressed");
}

}  // namespace

std::vector<uint8_t> RunSession(asio::io_context& io, std::span<const uint8_t> input,
                                const ServeFn& serve) {
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) Fail("socketpair");
  const Protocol unix_stream(AF_UNIX, SOCK_STREAM);
  server::Socket client(io, unix_stream, fds[1]);
  std::vector<uint8_t> output;
  asio::co_spawn(io, Feed(client, input), asio::detached);
  asio::co_spawn(io, Drain(client, output), asio::detached);
  // Started from the event loop, as the listener's accept loop starts a
  // connection: co_spawn then enters the coroutine at once (dispatch).
  asio::post(io, [&serve, socket = server::Socket(io, unix_stream, fds[0])]() mutable {
    serve(std::move(socket));
  });
  RunToEnd(io);
  return output;
}

}  // namespace dst::fuzz
