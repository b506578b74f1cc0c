// What the libFuzzer targets share: an in-memory block device, the exports
// every input sees, and RunSession, which puts one input through the real
// server code over a socketpair.
//
// Each input is one session on a fresh io_context: the input goes in on the
// client end of a connected AF_UNIX socketpair (then that end's write side
// is shut down), the server's coroutines run on the other end, and whatever
// the server writes back is drained from the client end, so the server never
// blocks on a full socket buffer. Nothing waits on a clock: the session ends
// when the event loop runs out of work.
//
// Threading: one thread, the fuzzer's; everything runs inside RunSession.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <span>
#include <string>
#include <vector>

#include <asio.hpp>

#include "aggregator/server/connection.h"
#include "aggregator/server/export_registry.h"
#include "aggregator/server/handshake.h"
#include "aggregator/volume/block_device.h"

namespace dst::fuzz {

// Reports a broken invariant and aborts, which libFuzzer records as a crash
// with the input that caused it.
[[noreturn]] void Fail(const char* what);
inline void Check(bool condition, const char* what) {
  if (!condition) Fail(what);
}

// Server log lines cost a write(2) each and drown the fuzzer's output: only
// errors are shown unless DST_FUZZ_LOG is set (any value: debug level), which
// is what one wants when reproducing a crash.
void QuietLogs();

// A sparse in-memory device: 4 KiB blocks that were never written (or were
// trimmed) are holes. Every call completes later, through asio::post, after
// 0 to 2 extra trips round the event loop chosen by offset, so requests in
// flight together complete out of order as they do on real members. The
// last block fails every I/O with EIO, to reach the server's error replies.
// It also checks the BlockDevice contract: ranges within the device, no
// modification of a read-only device, and only capabilities it advertised.
class MemoryDevice final : public volume::BlockDevice {
 public:
  static constexpr uint64_t kBlockSize = 4096;

  MemoryDevice(asio::any_io_executor executor, std::string name, std::string description,
               uint64_t size, volume::VolumeCapabilities caps);

  const std::string& name() const override { return name_; }
  const std::string& description() const override { return description_; }
  uint64_t size() const override { return size_; }
  const volume::VolumeCapabilities& capabilities() const override { return caps_; }

  void Read(uint64_t offset, uint64_t length, uint8_t* buf, ReadDone done) override;
  void Write(uint64_t offset, uint64_t length, const uint8_t* buf, bool fua, Done done) override;
  void Flush(Done done) override;
  void Trim(uint64_t offset, uint64_t length, bool fua, Done done) override;
  void Zero(uint64_t offset, uint64_t length, bool may_trim, bool fast_only, bool fua,
            Done done) override;
  void Cache(uint64_t offset, uint64_t length, Done done) override;
  void BlockStatus(uint64_t offset, uint64_t length, ExtentsDone done) override;

  // Calls made and not yet completed.
  int pending() const { return pending_; }

 private:
  void CheckRange(uint64_t offset, uint64_t length, bool modifies) const;
  void Later(uint64_t offset, std::function<void()> work);
  void Hop(int hops, std::function<void()> work);
  bool Failing(uint64_t offset, uint64_t length) const;
  bool Allocated(uint64_t block) const { return blocks_.count(block) != 0; }
  void CopyOut(uint64_t offset, uint64_t length, uint8_t* buf,
               std::vector<volume::ByteRange>* holes) const;
  void CopyIn(uint64_t offset, uint64_t length, const uint8_t* buf);
  void Deallocate(uint64_t offset, uint64_t length);
  std::vector<volume::AllocationExtent> Extents(uint64_t offset, uint64_t length) const;

  asio::any_io_executor executor_;
  std::string name_, description_;
  uint64_t size_;
  volume::VolumeCapabilities caps_;
  std::map<uint64_t, std::vector<uint8_t>> blocks_;  // by block index; absent: a hole
  int pending_ = 0;
};

// What a server shares between its connections, fresh for every session.
// The exports are "fuzz" (1 MiB, every capability, the default) and "ro"
// (64 KiB, read-only, nothing optional), so that LIST, INFO and the
// read-only refusals have something to work on. Requests carry at most
// 8 KiB, and the in-flight limits are small, so that a few reads reach them.
struct ServerState {
  explicit ServerState(asio::any_io_executor executor);
  MemoryDevice main;
  MemoryDevice read_only;
  server::ExportRegistry registry;
  server::InFlightLimits limits;
  server::ConnectionPolicy policy;
};

// Starts the server's side of a session on `socket` (the serving end of the
// socketpair); called on the event loop, and the session lasts while it has
// work there.
using ServeFn = std::function<void(server::Socket socket)>;

// Runs one session of `input` against `serve` on `io` (fresh, not yet run)
// and returns everything the server wrote. Fails when the event loop is
// still busy with nothing happening for a second: a hang, which a real
// client would see as a connection that never closes.
std::vector<uint8_t> RunSession(asio::io_context& io, std::span<const uint8_t> input,
                                const ServeFn& serve);

// The targets' only calls into the server's API (server_entry.cc), in one
// place so that a change of its signatures is one edit. NegotiateOn runs the
// handshake alone and closes the socket after it; SpawnConnection starts a
// whole client connection, as the listener does.
asio::awaitable<Status> NegotiateOn(server::Socket socket, ServerState& state,
                                    server::Negotiated* out);
void SpawnConnection(server::Socket socket, ServerState& state);
// The server's TLS context for `mode` (nullptr when off), with a throwaway
// pre-shared key.
server::ServerTls* TlsFor(server::TlsMode mode);

}  // namespace dst::fuzz
