// ClientConnection: one client, from handshake to close. After the handshake
// a reader coroutine takes requests off the socket and starts them on the
// volume, many at once; replies are queued as requests complete, in
// completion order, and a single writer coroutine sends them, gathering
// header and data into one write. DISC stops the reader, lets every request
// in flight finish and be answered, then closes.
//
// Bad requests get the error the NBD spec names (EINVAL, ENOSPC, EPERM,
// EOVERFLOW only with DF); a write's payload is always drained so the
// connection stays in sync. Requests in flight and their replies are charged
// to a budget bounded per connection and in total (InFlightLimits); when a
// bound is reached the reader pauses.
//
// A volume being removed (`volume remove --force`) ends its connections
// (VolumeClient::EndService): requests in flight on the volume complete and
// are answered, later ones get ESHUTDOWN, then the connection closes.
//
// Clients cannot hold the server's resources by going quiet at the wrong
// moment (ConnectionPolicy): the handshake has a deadline, and so has every
// message once its first byte has arrived, and every reply's send. A client
// idle between requests is left alone: the kernel client idles for hours.
//
// Threading: the connection runs on one event loop, the one its socket was
// accepted onto (event_loops.h). The registry and the volume live on the home
// loop: when that is another, the handshake looks there (RunOn), the volume
// is reached through a HomeLoopDevice (or, for a raw volume whose copy this
// loop has, the copy over the loop's own member connections, so that a
// request crosses no thread: aggregator/loop_volumes.h), and the connection's
// arrival and departure in the volume's traffic are made there, as is
// EndService.
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "aggregator/server/export_registry.h"
#include "aggregator/server/handshake.h"
#include "aggregator/server/io_buffer.h"
#include "aggregator/server/loop_copy_device.h"
#include "aggregator/server/socket.h"

namespace dst::server {

// Limits on the memory that requests and their replies hold, shared by all
// connections. A request is charged from the moment its header is read
// until its reply has been sent: `request_cost` for the header, the reply and
// the server's bookkeeping of both, plus a read's or a write's data. So
// requests without data (zero-length reads, flushes, trims, block status)
// are bounded too, and a client that sends requests without reading the
// replies is no longer read once its share is full.
//
// `per_connection` is one connection's share; a connection with nothing in
// flight may still take one request larger than that, so that such a
// request can be served at all. `total` bounds all connections together:
// a request that does not fit waits until enough is given back (only a
// server with nothing in flight at all lets one request exceed it). Among
// the waiting, the oldest that fit in what was given back go first; a small
// request is not held up behind a large one that does not fit yet.
//
// Connections on every event loop share the total: `mutex` guards what they
// maintain, and a waiter is woken on its own loop (Waiter::wake posts there).
struct InFlightLimits {
  uint64_t per_connection = 64u << 20;
  uint64_t total = 512u << 20;
  uint64_t request_cost = 4096;

  // A connection waiting for room in `total`.
  struct Waiter {
    std::function<void()> wake;  // wakes it, on its loop, if it is still there
    uint64_t bytes;
  };

  // Maintained by the connections, on every loop. A request takes its bytes from used_total and
  // gives them back with atomic operations alone while nobody waits (no lock on the request
  // path); the mutex guards the waiting list, which is used only when `total` is full.
  std::atomic<uint64_t> used_total{0};
  std::atomic<size_t> waiters{0};  // waiting.size(), read without the mutex
  std::mutex mutex;
  std::list<Waiter> waiting;  // guarded by mutex; oldest first

  // Takes `bytes` from the total if they fit (or nothing is in flight, so that a request larger
  // than `total` still goes, alone).
  bool TryTake(uint64_t bytes) {
    uint64_t used = used_total.load();
    while (used == 0 || used + bytes <= total)
      if (used_total.compare_exchange_weak(used, used + bytes)) return true;
    return false;
  }
  // Gives `bytes` back and wakes the waiters that fit now, if there are any.
  void GiveBack(uint64_t bytes) {
    used_total.fetch_sub(bytes);
    // Sequentially consistent with a waiter's count and check (WaitForBudget): either it sees
    // the room given back here, or this sees it waiting.
    if (waiters.load() == 0) return;
    const std::lock_guard lock(mutex);
    WakeWaitersThatFit();
  }
  // Wakes the waiting connections that fit in the room there is now; with `mutex` held.
  void WakeWaitersThatFit();
};

// What every connection of a server shares besides the volumes: TLS, the
// deadlines that keep a stalled client from holding resources, and the
// connection counts that the listener bounds.
//
// Threading: connections run on every event loop (event_loops.h); the
// listener and `reload` on the home loop. The timeouts, which `reload`
// changes, are atomic; `open_mutex` guards the counts.
struct ConnectionPolicy {
  ServerTls* tls = nullptr;  // nullptr: TLS off
  // The loop the registry and the volumes live on, when connections run on other loops too
  // (serve --threads); empty: everything runs on one loop.
  asio::any_io_executor home;
  std::atomic<std::chrono::milliseconds> handshake_timeout{std::chrono::milliseconds(10000)};
  // From the first byte of a request to its last; and for a reply to be sent.
  std::atomic<std::chrono::milliseconds> request_timeout{std::chrono::milliseconds(30000)};
  size_t max_connections = 1024;
  // Connections from one client address at once (an IPv6 address counts
  // with its /64, which one host usually has to itself), so that idle
  // clients from one place cannot hold every slot. 0: three quarters of
  // max_connections. Clients on Unix sockets are not counted here.
  size_t max_connections_per_address = 0;
  std::mutex open_mutex;
  size_t open_connections = 0;                               // maintained by the connections
  std::unordered_map<std::string, size_t> open_per_address;  // likewise
  std::vector<size_t> open_per_loop;                         // likewise, by event loop

  size_t PerAddressLimit() const {
    if (max_connections_per_address != 0) return max_connections_per_address;
    return std::max<size_t>(1, max_connections - max_connections / 4);
  }
};

// The key a client address is counted under in ConnectionPolicy: IPv4 as it
// is (an IPv4-mapped IPv6 address as the IPv4 one), IPv6 as its /64.
std::string AddressKey(const asio::ip::address& address);

class ClientConnection final : public std::enable_shared_from_this<ClientConnection>,
                               public VolumeClient {
 public:
  // `address`: the key the connection counts under in
  // policy.open_per_address (AddressKey); "" for none. `loop`: the number of
  // the event loop it runs on, for the log.
  ClientConnection(Socket socket, const ExportRegistry& registry, InFlightLimits& limits,
                   ConnectionPolicy& policy, std::string peer, std::string address = "",
                   size_t loop = 0);
  ~ClientConnection();
  // Runs the whole connection; spawn it with co_spawn.
  asio::awaitable<void> Run();

  const std::string& peer() const override { return peer_; }
  size_t loop() const override { return loop_; }
  void EndService(std::function<void()> ended) override;

 private:
  // What is sent for one request: `head`, then `body`, then `data`.
  struct Reply {
    // The fixed part (a simple reply, or a chunk header and a read's
    // offset), kept inline: no allocation for the common replies.
    std::array<uint8_t, 32> head;
    uint8_t head_size = 0;
    std::vector<uint8_t> body;  // variable payloads: error messages, extents, sparse reads
    IoBuffer data;              // a read's data
    uint64_t accounted = 0;     // bytes to release from the in-flight budget once sent
  };
  struct Request;
  class Deadline;

  asio::awaitable<Status> Handshake();
  asio::awaitable<Status> ReadRequests();
  // A read of a message the client has started, which it must finish within
  // the request timeout.
  asio::awaitable<Status> Bounded(asio::awaitable<Status> read, const char* context);
  asio::awaitable<void> WriteReplies();
  asio::awaitable<Status> HandleRequest(const uint8_t* raw_header);
  int Validate(const Request& request) const;
  // Charges `bytes` to the in-flight budget, once it has room for them.
  asio::awaitable<void> WaitForBudget(uint64_t bytes);
  asio::awaitable<void> WaitForWakeup();
  void Start(std::shared_ptr<Request> request);
  // Counts an answered request in the volume's traffic (once per request).
  void Account(const Request& request, int err);
  // Ending (EndService) and nothing in flight on the volume: reads no more.
  void StopReadingIfEnded();
  // Whether this connection runs on the home loop (always, with one loop).
  bool OnHomeLoop();
  // Runs `work` on this connection's loop: at once when it is home's.
  void OnOwnLoop(std::function<void()> work);
  // After the last reply: leaves the volume's traffic, on the home loop, and runs EndService's
  // `ended` there.
  void LeaveVolume();
  // What requests go to: the device itself on its own loop, the bridge to it from another.
  volume::BlockDevice& device() const {
    return on_loop_ ? *on_loop_ : bridge_ ? *bridge_ : negotiated_.exported.device();
  }
  void Complete(const Request& request, int err, IoBuffer data = {});
  // A read reply; with structured replies, known holes go out as hole chunks.
  void CompleteRead(const Request& request, int err, IoBuffer data,
                    const std::vector<volume::ByteRange>& holes);

  void CompleteBlockStatus(const Request& request, int err,
                           std::vector<volume::AllocationExtent> extents);
  // Queues the reply of `request`, which carries the request's budget.
  void Queue(Reply reply, const Request& request);
  void WakeWriter();
  // Counts `bytes` against the total and this connection (Charge), or only this connection,
  // once taken from the total (Charged).
  void Charge(uint64_t bytes);
  void Charged(uint64_t bytes);
  void Release(uint64_t bytes);
  Reply MakeReply(const Request& request, int err, IoBuffer data) const;

  ClientStream stream_;
  const ExportRegistry& registry_;
  InFlightLimits& limits_;
  ConnectionPolicy& policy_;
  std::unique_ptr<Deadline> read_deadline_;
  std::unique_ptr<Deadline> write_deadline_;
  std::string peer_;
  std::string address_;  // the key in policy_.open_per_address, or ""
  size_t loop_;
  Negotiated negotiated_;
  std::unique_ptr<volume::BlockDevice> bridge_;   // HomeLoopDevice, off the home loop
  std::unique_ptr<LoopCopyDevice> on_loop_;       // the loop's own copy, where it has one
  VolumeTraffic* traffic_ = nullptr;              // the negotiated volume's
  LoopTraffic* loop_traffic_ = nullptr;           // its counters of this connection's loop
  std::list<VolumeClient*>::iterator connected_;  // in traffic_->connected (home loop)
  size_t volume_in_flight_ = 0;  // requests started on the volume and not completed
  bool ending_ = false;          // EndService: no new request reaches the volume
  std::function<void()> ended_;  // EndService's, run on home once the connection is closed
  bool left_ = false;            // home loop: LeaveVolume ran
  std::vector<Reply> replies_;   // queued for the writer, which swaps it with its batch
  asio::steady_timer writer_wakeup_;
  bool writer_waiting_ = false;  // on writer_wakeup_
  asio::steady_timer budget_wakeup_;
  uint64_t bytes_in_flight_ = 0;
  uint64_t peak_bytes_in_flight_ = 0;
  size_t requests_in_flight_ = 0;
  bool reading_done_ = false;
  bool broken_ = false;  // the socket failed: stop writing
};

}  // namespace dst::server
