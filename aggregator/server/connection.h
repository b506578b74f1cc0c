// ClientConnection: one client, from handshake to close. After the handshake
// a reader coroutine takes requests off the socket and starts them on the
// volume, many at once; replies are queued as requests complete, in
// completion order, and a single writer coroutine sends them, gathering
// header and data into one write. DISC stops the reader, lets every request
// in flight finish and be answered, then closes.
//
// Bad requests get the error the NBD spec names (EINVAL, ENOSPC, EPERM,
// EOVERFLOW only with DF); a write's payload is always drained so the
// connection stays in sync. Bytes in flight are bounded per connection and
// in total (InFlightLimits); when a bound is reached the reader pauses.
//
// Clients cannot hold the server's resources by going quiet at the wrong
// moment (ConnectionPolicy): the handshake has a deadline, and so has every
// message once its first byte has arrived, and every reply's send. A client
// idle between requests is left alone: the kernel client idles for hours.
//
// Threading: everything on the single event-loop thread.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <vector>

#include "aggregator/server/export_registry.h"
#include "aggregator/server/handshake.h"
#include "aggregator/server/io_buffer.h"
#include "aggregator/server/socket.h"

namespace dst::server {

// Limits on request data held in memory, shared by all connections.
struct InFlightLimits {
  uint64_t per_connection = 64u << 20;
  uint64_t total = 512u << 20;
  uint64_t used_total = 0;  // current total, maintained by the connections
};

// What every connection of a server shares besides the volumes: TLS, the
// deadlines that keep a stalled client from holding resources, and the
// connection count that the listener bounds.
struct ConnectionPolicy {
  ServerTls* tls = nullptr;  // nullptr: TLS off
  std::chrono::milliseconds handshake_timeout{10000};
  // From the first byte of a request to its last; and for a reply to be sent.
  std::chrono::milliseconds request_timeout{30000};
  size_t max_connections = 1024;
  size_t open_connections = 0;  // maintained by the connections
};

class ClientConnection : public std::enable_shared_from_this<ClientConnection> {
 public:
  ClientConnection(Socket socket, const ExportRegistry& registry, InFlightLimits& limits,
                   ConnectionPolicy& policy, std::string peer);
  ~ClientConnection();
  // Runs the whole connection; spawn it with co_spawn.
  asio::awaitable<void> Run();

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
  asio::awaitable<void> WaitForBudget(uint64_t bytes);
  void Start(std::shared_ptr<Request> request);
  // Counts an answered request in the volume's traffic (once per request).
  void Account(const Request& request, int err);
  void Complete(const Request& request, int err, IoBuffer data = {});
  // A read reply; with structured replies, known holes go out as hole chunks.
  void CompleteRead(const Request& request, int err, IoBuffer data,
                    const std::vector<volume::ByteRange>& holes);
  Reply MakeSparseReadReply(const Request& request, const IoBuffer& data,
                            const std::vector<volume::ByteRange>& holes) const;
  void CompleteBlockStatus(const Request& request, int err,
                           std::vector<volume::AllocationExtent> extents);
  void Queue(Reply reply);
  void WakeWriter();
  void Release(uint64_t bytes);
  Reply MakeReply(const Request& request, int err, IoBuffer data) const;

  ClientStream stream_;
  const ExportRegistry& registry_;
  InFlightLimits& limits_;
  ConnectionPolicy& policy_;
  std::unique_ptr<Deadline> read_deadline_;
  std::unique_ptr<Deadline> write_deadline_;
  std::string peer_;
  Negotiated negotiated_;
  VolumeTraffic* traffic_ = nullptr;  // the negotiated volume's
  std::deque<Reply> replies_;
  asio::steady_timer writer_wakeup_;
  bool writer_waiting_ = false;  // on writer_wakeup_
  asio::steady_timer budget_wakeup_;
  uint64_t bytes_in_flight_ = 0;
  size_t requests_in_flight_ = 0;
  bool reading_done_ = false;
  bool broken_ = false;  // the socket failed: stop writing
};

}  // namespace dst::server
