#include "aggregator/server/connection.h"

#include <cerrno>
#include <cstring>

#include "aggregator/server/event_loops.h"
#include "aggregator/server/home_loop_device.h"
#include "aggregator/server/sparse_read_reply.h"
#include "common/lifetime.h"
#include "common/log.h"
#include "common/nbd_errors.h"
#include "common/nbd_protocol.h"
#include "common/object_pool.h"

namespace dst::server {

using namespace dst::nbd;

struct ClientConnection::Request {
  RequestHeader header;
  std::chrono::steady_clock::time_point received;
  IoBuffer buffer;         // write payload, or read destination
  uint64_t accounted = 0;  // bytes charged to the in-flight budget
  bool started = false;    // handed to the volume
};

namespace {

constexpr auto kForever = asio::steady_timer::time_point::max();
// A connection that held this much at once gives the allocator's free memory
// back to the system when it ends: a client that leaves leaves nothing behind.
constexpr uint64_t kReturnMemoryAfter = 16u << 20;

// The flags each command may carry; anything else is EINVAL.
uint16_t AllowedFlags(uint16_t type) {
  switch (type) {
    case kCmdRead:
      return kCmdFlagFua | kCmdFlagDf;
    case kCmdWrite:
      return kCmdFlagFua;
    case kCmdFlush:
      return kCmdFlagFua;
    case kCmdTrim:
      return kCmdFlagFua;
    case kCmdWriteZeroes:
      return kCmdFlagFua | kCmdFlagNoHole | kCmdFlagFastZero;
    case kCmdCache:
      return 0;
    case kCmdBlockStatus:
      return kCmdFlagReqOne;
  }
  return 0;
}

bool IsKnownCommand(uint16_t type) {
  return type == kCmdRead || type == kCmdWrite || type == kCmdFlush || type == kCmdTrim ||
         type == kCmdWriteZeroes || type == kCmdCache || type == kCmdBlockStatus;
}

bool Modifies(uint16_t type) {
  return type == kCmdWrite || type == kCmdTrim || type == kCmdWriteZeroes;
}

}  // namespace

// Closes the stream unless disarmed in time. Armed and disarmed around
// every request and reply, so both are cheap: the timer is not cancelled or
// re-armed each time (which would queue a cancelled wait each time), only
// the deadline is recorded. A wait that ends before the deadline waits on
// until it; one that finds the deadline disarmed just stops. A wait that
// expired in the same pass of the event loop as the connection's last event
// is already queued when the connection ends, and then finds its Lifetime
// over.
class ClientConnection::Deadline {
 public:
  using Clock = asio::steady_timer::clock_type;

  Deadline(ClientStream& stream) : stream_(stream), timer_(stream.get_executor()) {}

  void Arm(std::chrono::milliseconds timeout) {
    armed_ = true;
    expired_ = false;
    deadline_ = Clock::now() + timeout;
    // A wait running to a later time would fire too late: restart it.
    if (!waiting_ || deadline_ < timer_.expiry()) Wait();
  }
  void Disarm() { armed_ = false; }
  bool expired() const { return expired_; }

 private:
  void Wait() {
    const uint64_t wait = ++waits_;
    waiting_ = true;
    timer_.expires_at(deadline_);
    timer_.async_wait([this, wait, alive = lifetime_.Watch()](asio::error_code ec) {
      // Aborted (destroyed, or restarted: a newer wait runs) touches nothing.
      if (ec || alive.expired() || wait != waits_) return;
      waiting_ = false;
      if (!armed_) return;
      if (Clock::now() < deadline_) return Wait();  // re-armed since: wait on
      expired_ = true;
      stream_.Close();
    });
  }

  ClientStream& stream_;
  asio::steady_timer timer_;
  Clock::time_point deadline_;
  uint64_t waits_ = 0;
  bool waiting_ = false;
  bool armed_ = false;
  bool expired_ = false;
  Lifetime lifetime_;  // last: its watches expire before the rest is destroyed
};

ClientConnection::ClientConnection(Socket socket, const ExportRegistry& registry,
                                   InFlightLimits& limits, ConnectionPolicy& policy,
                                   std::string peer, std::string address, size_t loop)
    : stream_(std::move(socket)),
      registry_(registry),
      limits_(limits),
      policy_(policy),
      read_deadline_(std::make_unique<Deadline>(stream_)),
      write_deadline_(std::make_unique<Deadline>(stream_)),
      peer_(std::move(peer)),
      address_(std::move(address)),
      loop_(loop),
      writer_wakeup_(stream_.get_executor()),
      budget_wakeup_(stream_.get_executor()) {
  const std::lock_guard lock(policy_.open_mutex);
  ++policy_.open_connections;
  if (policy_.open_per_loop.size() <= loop_) policy_.open_per_loop.resize(loop_ + 1, 0);
  ++policy_.open_per_loop[loop_];
  if (!address_.empty()) ++policy_.open_per_address[address_];
}

// Touches only the policy, which outlives the event loop (and thus the
// connections it still holds when it is destroyed); the in-flight limits
// need not.
ClientConnection::~ClientConnection() {
  const std::lock_guard lock(policy_.open_mutex);
  --policy_.open_connections;
  --policy_.open_per_loop[loop_];
  if (address_.empty()) return;
  const auto it = policy_.open_per_address.find(address_);
  if (--it->second == 0) policy_.open_per_address.erase(it);
}

std::string AddressKey(const asio::ip::address& address) {
  if (address.is_v4()) return address.to_string();
  asio::ip::address_v6 v6 = address.to_v6();
  if (v6.is_v4_mapped()) return asio::ip::make_address_v4(asio::ip::v4_mapped, v6).to_string();
  asio::ip::address_v6::bytes_type bytes = v6.to_bytes();
  std::fill(bytes.begin() + 8, bytes.end(), 0);
  return asio::ip::address_v6(bytes).to_string() + "/64";
}

asio::awaitable<Status> ClientConnection::Handshake() {
  const std::chrono::milliseconds timeout = policy_.handshake_timeout;
  read_deadline_->Arm(timeout);
  Status status = co_await Negotiate(stream_, registry_, policy_.tls, &negotiated_, policy_.home);
  read_deadline_->Disarm();
  if (read_deadline_->expired())
    co_return Status::Error(ETIMEDOUT, "no export chosen within " +
                                           std::to_string(timeout.count()) + " ms; disconnected");
  co_return status;
}

asio::awaitable<void> ClientConnection::Run() {
  auto self = shared_from_this();  // alive until every coroutine and callback is done
  Status status = co_await Handshake();
  if (!status.ok()) {
    LOG_INFO("client %s: handshake ended: %s", peer_.c_str(), status.message().c_str());
    stream_.Close();
    co_return;
  }
  const ExportView& exported = negotiated_.exported;
  bool served = false;
  LoopCopy own_copy;  // this loop's copy of a raw volume, if it has one
  co_await RunOn(policy_.home, [&] {
    served = registry_.Serves(exported.volume);
    if (!served) return;
    if (!exported.snapshot && !OnHomeLoop()) own_copy = registry_.OnLoop(exported.volume, loop_);
    traffic_ = &registry_.TrafficOf(exported.volume);
    ++traffic_->clients;
    connected_ = traffic_->connected.insert(traffic_->connected.end(), this);
    ++traffic_->connections;
    loop_traffic_ = &traffic_->OnLoop(loop_);
  });
  if (!served) {
    // Withdrawn (volume remove) while the handshake ended: as if it were unknown.
    LOG_INFO("client %s: volume %s is being removed; disconnecting", peer_.c_str(),
             exported.name.c_str());
    stream_.Close();
    co_return;
  }
  if (!OnHomeLoop())
    bridge_ = std::make_unique<HomeLoopDevice>(exported, policy_.home, stream_.get_executor());
  if (own_copy.device) on_loop_ = std::make_unique<LoopCopyDevice>(own_copy, *bridge_, loop_);
  const std::string tls = negotiated_.tls ? ", TLS " + stream_.PeerIdentity() : "";
  LOG_INFO("client %s: connected to volume %s (%s replies%s) on loop %zu%s", peer_.c_str(),
           exported.name.c_str(), negotiated_.structured_replies ? "structured" : "simple",
           tls.c_str(), loop_, on_loop_ ? ", with the loop's own member connections" : "");
  asio::co_spawn(stream_.get_executor(), self->WriteReplies(), asio::detached);
  status = co_await ReadRequests();
  reading_done_ = true;
  WakeWriter();
  if (status.err() == EPROTO) {
    // A protocol violation leaves the stream unparseable: hang up now.
    LOG_WARNING("client %s: %s; disconnecting", peer_.c_str(), status.message().c_str());
    broken_ = true;
    stream_.Close();
  } else if (!status.ok() && !ending_) {  // ending: the read was cut by the close
    LOG_INFO("client %s: %s", peer_.c_str(), status.message().c_str());
  }
}

asio::awaitable<Status> ClientConnection::ReadRequests() {
  uint8_t raw[RequestHeader::kSize];
  while (!reading_done_ && !broken_) {
    // Idle between requests for as long as the client likes.
    if (stream_.buffered() == 0)
      DST_CO_RETURN_IF_ERROR(co_await stream_.WaitForData("request header"));
    // A header already received is taken as it is: no deadline, no wait.
    if (!stream_.TakeBuffered(raw, sizeof raw))
      DST_CO_RETURN_IF_ERROR(
          co_await Bounded(stream_.ReadExact(raw, sizeof raw, "request header"), "request header"));
    DST_CO_RETURN_IF_ERROR(co_await HandleRequest(raw));
  }
  co_return Status::Ok();
}

asio::awaitable<Status> ClientConnection::Bounded(asio::awaitable<Status> read,
                                                  const char* context) {
  const std::chrono::milliseconds timeout = policy_.request_timeout;
  read_deadline_->Arm(timeout);
  Status status = co_await std::move(read);
  read_deadline_->Disarm();
  if (read_deadline_->expired())
    co_return Status::Error(EPROTO, std::string(context) + ": client stalled for " +
                                        std::to_string(timeout.count()) +
                                        " ms in the middle of a request");
  co_return status;
}

asio::awaitable<Status> ClientConnection::HandleRequest(const uint8_t* raw_header) {
  auto request = MakePooled<Request>();
  request->header = RequestHeader::Decode(raw_header);
  request->received = std::chrono::steady_clock::now();
  const RequestHeader& h = request->header;
  if (h.magic != kRequestMagic) co_return Status::Error(EPROTO, "bad request magic");
  if (h.type == kCmdDisc) {
    reading_done_ = true;  // answer what is in flight, then close
    co_return Status::Ok();
  }
  ++requests_in_flight_;
  ++loop_traffic_->in_flight;
  // A write whose payload never arrives is dropped unanswered: it must stop
  // counting as in flight (the writer closes only once every request in
  // flight is answered) and give its budget back.
  const auto drop = [&](Status status) {
    --requests_in_flight_;
    --loop_traffic_->in_flight;
    Release(request->accounted);
    return status;
  };
  // An ending connection answers without looking at the volume.
  const int err = ending_ ? ESHUTDOWN : Validate(*request);
  // Every request is charged, whatever it is; its data only if it is served.
  const bool with_data = err == 0 && (h.type == kCmdRead || h.type == kCmdWrite);
  const uint64_t cost = limits_.request_cost + (with_data ? h.length : 0);
  co_await WaitForBudget(cost);
  request->accounted = cost;
  if (h.type == kCmdWrite) {
    if (err != 0) {
      // Refused, but its payload is on the wire: drain it to stay in sync.
      Status status = co_await Bounded(stream_.Discard(h.length, "refused write payload"),
                                       "refused write payload");
      if (!status.ok()) co_return drop(std::move(status));
      Complete(*request, err);
      co_return Status::Ok();
    }
    request->buffer = IoBuffer(h.length);
    // A payload already received is taken as it is: no deadline, no wait.
    if (!stream_.TakeBuffered(request->buffer.data(), h.length)) {
      Status status = co_await Bounded(
          stream_.ReadExact(request->buffer.data(), h.length, "write payload"), "write payload");
      if (!status.ok()) co_return drop(std::move(status));
    }
  } else if (err != 0) {
    Complete(*request, err);
    co_return Status::Ok();
  } else if (h.type == kCmdRead) {
    request->buffer = IoBuffer(h.length);
  }
  if (ending_) {
    Complete(*request, ESHUTDOWN);  // EndService came while its payload or budget was awaited
    co_return Status::Ok();
  }
  Start(std::move(request));
  co_return Status::Ok();
}

int ClientConnection::Validate(const Request& request) const {
  const RequestHeader& h = request.header;
  const ExportView& vol = negotiated_.exported;
  const volume::VolumeCapabilities& caps = vol.caps;
  if (!IsKnownCommand(h.type) || (h.flags & ~AllowedFlags(h.type))) return EINVAL;
  if ((h.flags & kCmdFlagDf) && !negotiated_.structured_replies) return EINVAL;
  if ((h.flags & kCmdFlagFastZero) && !caps.can_fast_zero) return EINVAL;
  if (h.type == kCmdTrim && !caps.can_trim) return EINVAL;
  if (h.type == kCmdCache && !caps.can_cache) return EINVAL;
  if (h.type == kCmdBlockStatus && (!negotiated_.base_allocation || h.length == 0)) return EINVAL;
  if (Modifies(h.type) && caps.read_only) return EPERM;
  if (h.type == kCmdFlush) return 0;
  if (h.offset > vol.size || h.length > vol.size - h.offset)
    return h.type == kCmdWrite || h.type == kCmdWriteZeroes ? ENOSPC : EINVAL;
  if ((h.type == kCmdRead || h.type == kCmdWrite) && h.length > caps.max_payload)
    return (h.flags & kCmdFlagDf) ? EOVERFLOW : EINVAL;
  return 0;
}

void InFlightLimits::WakeWaitersThatFit() {
  if (waiting.empty()) return;
  const uint64_t used = used_total.load();
  if (used == 0) {
    waiting.front().wake();  // alone, it may take more than `total`
    return;
  }
  uint64_t room = used < total ? total - used : 0;
  for (const Waiter& w : waiting) {
    if (room < request_cost) break;  // no request is smaller
    if (w.bytes > room) continue;
    w.wake();
    room -= w.bytes;
  }
}

asio::awaitable<void> ClientConnection::WaitForBudget(uint64_t bytes) {
  // This connection's share first: only its own replies make room there.
  while (!broken_ && bytes_in_flight_ > 0 && bytes_in_flight_ + bytes > limits_.per_connection)
    co_await WaitForWakeup();
  // Then the total, which others' replies make room in, on every loop. Without a lock while
  // there is room and nobody waits before this one.
  if (limits_.waiters.load() == 0 && limits_.TryTake(bytes)) {
    Charged(bytes);
    co_return;
  }
  std::unique_lock lock(limits_.mutex);
  // Woken on this connection's loop, by a connection of any loop.
  auto wake = [self = weak_from_this(), loop = stream_.get_executor()] {
    asio::post(loop, [self] {
      if (auto connection = self.lock()) connection->budget_wakeup_.cancel();
    });
  };
  const auto me = limits_.waiting.insert(limits_.waiting.end(), {std::move(wake), bytes});
  ++limits_.waiters;
  bool taken = false;
  while (!(taken = limits_.TryTake(bytes)) && !broken_) {
    lock.unlock();  // never held across a suspension
    co_await WaitForWakeup();
    lock.lock();
  }
  limits_.waiting.erase(me);
  --limits_.waiters;
  // A broken connection goes on without waiting (its requests fail), counted all the same.
  if (!taken) limits_.used_total.fetch_add(bytes);
  lock.unlock();
  Charged(bytes);
}

asio::awaitable<void> ClientConnection::WaitForWakeup() {
  budget_wakeup_.expires_at(kForever);
  co_await budget_wakeup_.async_wait(kAsTuple);
}

void ClientConnection::Charge(uint64_t bytes) {
  limits_.used_total.fetch_add(bytes);
  Charged(bytes);
}

void ClientConnection::Charged(uint64_t bytes) {
  bytes_in_flight_ += bytes;
  peak_bytes_in_flight_ = std::max(peak_bytes_in_flight_, bytes_in_flight_);
}

void ClientConnection::Release(uint64_t bytes) {
  if (bytes == 0) return;
  bytes_in_flight_ -= bytes;
  budget_wakeup_.cancel();
  limits_.GiveBack(bytes);
}

void ClientConnection::Start(std::shared_ptr<Request> request) {
  const RequestHeader& h = request->header;
  volume::BlockDevice& vol = device();
  if (h.length == 0 && h.type != kCmdFlush) {
    Complete(*request, 0);  // nothing to do, and members may reject empty I/O
    return;
  }
  request->started = true;
  ++volume_in_flight_;
  auto self = shared_from_this();
  auto done = [self, request](int err) { self->Complete(*request, err); };
  switch (h.type) {
    case kCmdRead:
      vol.Read(h.offset, h.length, request->buffer.data(),
               [self, request](int err, std::vector<volume::ByteRange> holes) {
                 self->CompleteRead(*request, err, std::move(request->buffer), holes);
               });
      break;
    case kCmdWrite:
      vol.Write(h.offset, h.length, request->buffer.data(), h.flags & kCmdFlagFua, done);
      break;
    case kCmdFlush:
      vol.Flush(done);
      break;
    case kCmdTrim:
      vol.Trim(h.offset, h.length, h.flags & kCmdFlagFua, done);
      break;
    case kCmdWriteZeroes:
      vol.Zero(h.offset, h.length, !(h.flags & kCmdFlagNoHole), h.flags & kCmdFlagFastZero,
               h.flags & kCmdFlagFua, done);
      break;
    case kCmdCache:
      vol.Cache(h.offset, h.length, done);
      break;
    case kCmdBlockStatus:
      vol.BlockStatus(h.offset, h.length,
                      [self, request](int err, std::vector<volume::AllocationExtent> extents) {
                        self->CompleteBlockStatus(*request, err, std::move(extents));
                      });
      break;
  }
}

bool ClientConnection::OnHomeLoop() {
  return !policy_.home || policy_.home == stream_.get_executor();
}

void ClientConnection::OnOwnLoop(std::function<void()> work) {
  if (OnHomeLoop()) return work();
  asio::post(stream_.get_executor(),
             [self = shared_from_this(), work = std::move(work)] { work(); });
}

// On the home loop, as `connected` is; LeaveVolume, which runs `ended`, is too.
void ClientConnection::EndService(std::function<void()> ended) {
  ended_ = std::move(ended);
  OnOwnLoop([this] {
    ending_ = true;
    LOG_INFO("client %s: volume %s is being removed: ending the connection", peer_.c_str(),
             negotiated_.exported.name.c_str());
    StopReadingIfEnded();
  });
}

void ClientConnection::LeaveVolume() {
  auto leave = [self = shared_from_this()] {
    --self->traffic_->clients;
    self->traffic_->connected.erase(self->connected_);
    if (self->ended_) std::exchange(self->ended_, nullptr)();
  };
  if (OnHomeLoop()) return leave();
  asio::post(policy_.home, std::move(leave));
}

void ClientConnection::StopReadingIfEnded() {
  if (!ending_ || volume_in_flight_ != 0 || reading_done_) return;
  reading_done_ = true;
  WakeWriter();
}

void ClientConnection::Account(const Request& request, int err) {
  const RequestHeader& h = request.header;
  if (request.started) {
    --volume_in_flight_;
    StopReadingIfEnded();  // the reply is queued next, and sent before the writer stops
  }
  LoopTraffic& t = *loop_traffic_;
  --t.in_flight;
  ++t.requests;
  t.RecordLatency(std::chrono::steady_clock::now() - request.received);
  if (err != 0) {
    ++t.errors;
  } else if (h.type == kCmdRead) {
    ++t.reads;
    t.read_bytes += h.length;
  } else if (h.type == kCmdWrite) {
    ++t.writes;
    t.write_bytes += h.length;
  }
}

void ClientConnection::Complete(const Request& request, int err, IoBuffer data) {
  Account(request, err);
  const RequestHeader& h = request.header;
  if (err != 0)
    LOG_DEBUG("client %s: %s offset %llu length %u: %s", peer_.c_str(), CommandName(h.type),
              static_cast<unsigned long long>(h.offset), h.length, std::strerror(err));
  Queue(MakeReply(request, err, std::move(data)), request);
}

ClientConnection::Reply ClientConnection::MakeReply(const Request& request, int err,
                                                    IoBuffer data) const {
  const RequestHeader& h = request.header;
  const uint32_t nbd_error = ErrnoToNbdError(err, h.flags);
  const bool with_data = nbd_error == 0 && h.type == kCmdRead && h.length > 0;
  Reply reply;
  if (!negotiated_.structured_replies) {
    reply.head_size = SimpleReply::kSize;
    SimpleReply{kSimpleReplyMagic, nbd_error, h.cookie}.Encode(reply.head.data());
    if (with_data) reply.data = std::move(data);
    return reply;
  }
  StructuredReplyHeader chunk{kStructuredReplyMagic, kReplyFlagDone, kReplyTypeNone, h.cookie, 0};
  reply.head_size = StructuredReplyHeader::kSize;
  if (nbd_error != 0) {
    const char* message = std::strerror(err);
    chunk.type = kReplyTypeError;
    AppendBE32(reply.body, nbd_error);
    const uint16_t length = static_cast<uint16_t>(std::strlen(message));
    reply.body.resize(reply.body.size() + 2);
    StoreBE16(reply.body.data() + 4, length);
    reply.body.insert(reply.body.end(), message, message + length);
    chunk.length = static_cast<uint32_t>(reply.body.size());
  } else if (with_data) {
    chunk.type = kReplyTypeOffsetData;
    StoreBE64(reply.head.data() + reply.head_size, h.offset);
    reply.head_size += 8;
    reply.data = std::move(data);
    chunk.length = static_cast<uint32_t>(8 + reply.data.size());
  }
  chunk.Encode(reply.head.data());
  return reply;
}

void ClientConnection::CompleteRead(const Request& request, int err, IoBuffer data,
                                    const std::vector<volume::ByteRange>& holes) {
  // DF forbids splitting the reply; simple replies cannot carry holes.
  if (err != 0 || holes.empty() || !negotiated_.structured_replies ||
      (request.header.flags & kCmdFlagDf)) {
    Complete(request, err, std::move(data));
    return;
  }
  const RequestHeader& h = request.header;
  Reply reply;
  const Status s =
      AppendSparseReadChunks(h.cookie, h.offset, {data.data(), data.size()}, holes, &reply.body);
  if (!s.ok()) {
    LOG_ERROR("client %s: %s", peer_.c_str(), s.message().c_str());
    Complete(request, EIO);
    return;
  }
  Account(request, 0);
  Queue(std::move(reply), request);
}

void ClientConnection::CompleteBlockStatus(const Request& request, int err,
                                           std::vector<volume::AllocationExtent> extents) {
  if (err == 0 && extents.empty()) err = EIO;  // a member answered nothing at all
  if (err != 0) {
    Complete(request, err);
    return;
  }
  Account(request, 0);
  const RequestHeader& h = request.header;
  std::vector<uint8_t> payload;
  AppendBE32(payload, kBaseAllocationId);
  for (const auto& e : extents) {
    AppendBE32(payload, static_cast<uint32_t>(e.length));  // <= the request's u32 length
    AppendBE32(payload, e.flags);
    if (h.flags & kCmdFlagReqOne) break;
  }
  StructuredReplyHeader chunk{kStructuredReplyMagic, kReplyFlagDone, kReplyTypeBlockStatus,
                              h.cookie, static_cast<uint32_t>(payload.size())};
  Reply reply;
  reply.head_size = StructuredReplyHeader::kSize;
  chunk.Encode(reply.head.data());
  reply.body = std::move(payload);
  Queue(std::move(reply), request);
}

void ClientConnection::Queue(Reply reply, const Request& request) {
  reply.accounted = request.accounted;
  // A reply larger than what its request was charged (many extents) is
  // charged the difference: it is held all the same. No wait: it exists.
  const uint64_t held = reply.body.size() + reply.data.size();
  if (held > reply.accounted) {
    Charge(held - reply.accounted);
    reply.accounted = held;
  }
  if (broken_) {
    // Nobody will send it: its budget, shared with every connection, comes back now.
    Release(reply.accounted);
    return;
  }
  replies_.push_back(std::move(reply));
  WakeWriter();
}

// Once per batch: the replies queued until the writer runs go out together.
void ClientConnection::WakeWriter() {
  if (!writer_waiting_) return;
  writer_waiting_ = false;
  writer_wakeup_.cancel();
}

asio::awaitable<void> ClientConnection::WriteReplies() {
  auto self = shared_from_this();
  std::vector<Reply> batch;
  std::vector<asio::const_buffer> buffers;
  while (!broken_) {
    if (replies_.empty()) {
      if (reading_done_ && requests_in_flight_ == 0) break;
      writer_wakeup_.expires_at(kForever);
      writer_waiting_ = true;
      co_await writer_wakeup_.async_wait(kAsTuple);
      writer_waiting_ = false;
      continue;
    }
    // Everything queued goes out in one gathered write. The two vectors trade places, so
    // that neither allocates once they have grown to the connection's depth.
    batch.clear();
    buffers.clear();
    std::swap(batch, replies_);
    for (const Reply& r : batch) {
      if (r.head_size > 0) buffers.push_back(asio::buffer(r.head.data(), r.head_size));
      if (!r.body.empty()) buffers.push_back(asio::buffer(r.body));
      if (!r.data.empty()) buffers.push_back(asio::buffer(r.data.data(), r.data.size()));
    }
    // A client that stops reading its replies is dropped, not waited for.
    const std::chrono::milliseconds timeout = policy_.request_timeout;
    write_deadline_->Arm(timeout);
    Status status = co_await stream_.WriteAll(buffers, "reply");
    write_deadline_->Disarm();
    if (write_deadline_->expired())
      status = Status::Error(ETIMEDOUT, "replies not read for " + std::to_string(timeout.count()) +
                                            " ms; disconnected");
    for (const Reply& r : batch)
      Release(r.accounted);
    requests_in_flight_ -= batch.size();
    if (!status.ok()) {
      LOG_INFO("client %s: %s", peer_.c_str(), status.message().c_str());
      broken_ = true;
    }
  }
  for (const Reply& r : replies_)
    Release(r.accounted);  // queued before the connection broke, never to be sent
  replies_.clear();
  if (broken_)
    stream_.Close();
  else
    co_await stream_.Shutdown();
  budget_wakeup_.cancel();
  LOG_INFO("client %s: disconnected", peer_.c_str());
  LeaveVolume();
  if (peak_bytes_in_flight_ >= kReturnMemoryAfter) {
    batch.clear();  // the last replies sent, data included: freed first
    batch.shrink_to_fit();
    ReturnFreedMemory();
  }
}

}  // namespace dst::server
