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
// Threading: everything on the single event-loop thread.
#pragma once

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <list>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "aggregator/server/export_registry.h"
#include "aggregator/server/handshake.h"
#include "aggregator/server/io_buffer.h"
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
struct InFlightLimits {
  uint64_t per_connection = 64u << 20;
  uint64_t total = 512u << 20;
  uint64_t request_cost = 4096;
  uint64_t used_total = 0;  // maintained by the connections

  // A connection waiting for room in `total`.
  struct Waiter {
    asio::steady_timer* wakeup;  // cancelled to wake it
    uint64_t bytes;
  };
  std::list<Waiter> waiting;  // oldest first; maintained by the connections

  bool FitsTotal(uint64_t bytes) const { return used_total == 0 || used_total + bytes <= total; }
  // Wakes the waiting connections that fit in the room there is now.
  void WakeWaitersThatFit();
};

// What every connection of a server shares besides the volumes: TLS, the
// deadlines that keep a stalled client from holding resources, and the
// connection counts that the listener bounds.
struct ConnectionPolicy {
  ServerTls* tls = nullptr;  // nullptr: TLS off
  std::chrono::milliseconds handshake_timeout{10000};
  // From the first byte of a request to its last; and for a reply to be sent.
  std::chrono::milliseconds request_timeout{30000};
  size_t max_connections = 1024;
  // Connections from one client address at once (an IPv6 address counts
  // with its /64, which one host usually has to itself), so that idle
  // clients from one place cannot hold every slot. 0: three quarters of
  // max_connections. Clients on Unix sockets are not counted here.
  size_t max_connections_per_address = 0;
  size_t open_connections = 0;                               // maintained by the connections
  std::unordered_map<std::string, size_t> open_per_address;  // likewise

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
  // policy.open_per_address (AddressKey); "" for none.
  ClientConnection(Socket socket, const ExportRegistry& registry, InFlightLimits& limits,
                   ConnectionPolicy& policy, std::string peer, std::string address = "");
  ~ClientConnection();
  // Runs the whole connection; spawn it with co_spawn.
  asio::awaitable<void> Run();

  const std::string& peer() const override { return peer_; }
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
  void Complete(const Request& request, int err, IoBuffer data = {});
  // A read reply; with structured replies, known holes go out as hole chunks.
  void CompleteRead(const Request& request, int err, IoBuffer data,
                    const std::vector<volume::ByteRange>& holes);

  void CompleteBlockStatus(const Request& request, int err,
                           std::vector<volume::AllocationExtent> extents);
  // Queues the reply of `request`, which carries the request's budget.
  void Queue(Reply reply, const Request& request);
  void WakeWriter();
  void Charge(uint64_t bytes);
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
  Negotiated negotiated_;
  VolumeTraffic* traffic_ = nullptr;              // the negotiated volume's
  std::list<VolumeClient*>::iterator connected_;  // in traffic_->connected
  size_t volume_in_flight_ = 0;  // requests started on the volume and not completed
  bool ending_ = false;          // EndService: no new request reaches the volume
  std::function<void()> ended_;  // EndService's, run once the connection is closed
  std::deque<Reply> replies_;
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
