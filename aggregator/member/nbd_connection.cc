#include "aggregator/member/nbd_connection.h"

#include <libnbd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string_view>
#include <utility>
#include <vector>

#include "aggregator/member/libnbd_error.h"
#include "aggregator/member/read_coverage.h"
#include "common/object_pool.h"

namespace dst::member {
namespace {

using volume::MemberIo;
using volume::MemberOp;

void PostDone(asio::io_context& io_context, std::shared_ptr<MemberIo> io,
              std::shared_ptr<size_t> in_flight, int err) {
  asio::post(io_context, [io = std::move(io), in_flight = std::move(in_flight), err] {
    --*in_flight;
    io->done(err);
  });
}

}  // namespace

// One MemberIo while libnbd holds it. libnbd calls the completion callback
// (or not at all, when nbd_close frees a command still in flight) and then,
// exactly once, the free callback; that is where done is scheduled, so every
// path (reply, dead connection, closed handle) ends in exactly one done.
struct PendingIo {
  // Taken from the object pool: one per member I/O.
  static void* operator new(size_t bytes) { return pool::Allocate(bytes); }
  static void operator delete(void* block, size_t bytes) { pool::Deallocate(block, bytes); }

  NbdConnection* connection;  // alive until libnbd frees the command
  std::shared_ptr<MemberIo> io;
  std::shared_ptr<size_t> in_flight;
  asio::io_context* io_context;
  // Replaced by the completion callback; kept when the handle is closed with
  // the command in flight.
  int err = ENOTCONN;
  ReadCoverage coverage{};  // reads only
  // libnbd frees the closure inside a failing nbd_aio_* call (and inside a
  // call during which the connection died); Submit finishes those itself.
  bool in_submission = true;
  bool freed_in_submission = false;
};

namespace {

void Finish(PendingIo* pending) {
  PostDone(*pending->io_context, std::move(pending->io), std::move(pending->in_flight),
           pending->err);
  delete pending;
}

// Runs with libnbd's handle lock held: records the result, calls nothing.
int OnCommandComplete(void* user_data, int* error) {
  auto* pending = static_cast<PendingIo*>(user_data);
  pending->err = *error;
  const MemberIo& io = *pending->io;
  // A read whose buffer the server did not fill entirely fails.
  if (pending->err == 0 && io.op == MemberOp::kRead && !pending->coverage.Covers(io.length))
    pending->err = EIO;
  return 1;  // auto-retire: nobody polls nbd_aio_command_completed
}

// Records which part of a read a chunk of the answer filled (data, or a hole
// that libnbd has zeroed). Called once for the whole buffer without
// structured replies.
int OnReadChunk(void* user_data, const void* /*subbuf*/, size_t count, uint64_t offset,
                unsigned status, int* /*error*/) {
  auto* pending = static_cast<PendingIo*>(user_data);
  const MemberIo& io = *pending->io;
  if (status == LIBNBD_READ_ERROR || offset < io.offset || offset - io.offset > io.length) return 0;
  const uint64_t begin = offset - io.offset;
  pending->coverage.Add(begin, begin + count);
  return 0;
}

// Appends base:allocation extents in order, clipped to the requested range
// (a server may describe more than was asked, or less).
int OnExtents(void* user_data, const char* metacontext, uint64_t /*offset*/, uint32_t* entries,
              size_t nr_entries, int* /*error*/) {
  if (std::strcmp(metacontext, LIBNBD_CONTEXT_BASE_ALLOCATION) != 0) return 0;
  MemberIo& io = *static_cast<PendingIo*>(user_data)->io;
  uint64_t covered = 0;
  for (const volume::AllocationExtent& extent : io.extents)
    covered += extent.length;
  for (size_t i = 0; i + 1 < nr_entries && covered < io.length; i += 2) {
    const uint64_t length = std::min<uint64_t>(entries[i], io.length - covered);
    if (length == 0) continue;
    io.extents.push_back({length, entries[i + 1]});
    covered += length;
  }
  return 0;
}

uint32_t FuaFlag(const MemberIo& io) {
  return io.fua ? LIBNBD_CMD_FLAG_FUA : 0;
}

uint32_t ZeroFlags(const MemberIo& io) {
  uint32_t flags = FuaFlag(io);
  if (!io.may_trim) flags |= LIBNBD_CMD_FLAG_NO_HOLE;
  if (io.fast_zero) flags |= LIBNBD_CMD_FLAG_FAST_ZERO;
  return flags;
}

bool NeedsBuffer(MemberOp op) {
  return op == MemberOp::kRead || op == MemberOp::kWrite;
}

bool IsMemberOp(MemberOp op) {
  return op <= MemberOp::kBlockStatus;
}

// libnbd returns malloc'ed strings; nullptr and "" are both "none".
std::string TakeString(char* text) {
  std::string out = text != nullptr ? text : "";
  std::free(text);
  return out;
}

// Notifications handled per socket event before yielding to other handlers.
constexpr int kMaxNotifyRounds = 16;

}  // namespace

// Runs with libnbd's handle lock held: records the option's result for
// Negotiate(), which runs after the libnbd call returns. libnbd has set its
// message for an error reply just before calling back.
int NbdConnection::OnOptionComplete(void* user_data, int* error) {
  auto* result = static_cast<OptionResult*>(user_data);
  result->replied = true;
  result->err = *error;
  result->message = *error != 0 ? LibnbdMessage(nbd_get_error()) : "";
  return 1;
}

void NbdConnection::OnCommandFree(void* user_data) {
  auto* pending = static_cast<PendingIo*>(user_data);
  if (pending->in_submission) {
    pending->freed_in_submission = true;
    return;
  }
  pending->connection->Answered(pending);
}

// Answers read by a socket event are run at its end, without a trip round
// the event loop each; anything else (a handle closed with commands in
// flight) is posted.
void NbdConnection::Answered(PendingIo* pending) {
  if (collecting_)
    answered_.push_back(pending);
  else
    Finish(pending);
}

// Runs the collected answers; the last thing a socket event does, since a
// done callback may destroy this connection (a member dropping it).
void NbdConnection::RunAnswered() {
  if (answered_.empty()) return;
  std::vector<PendingIo*> batch;
  batch.swap(answered_);
  const LifetimeWatch alive = lifetime_.Watch();
  for (PendingIo* pending : batch) {
    --*pending->in_flight;
    pending->io->done(pending->err);
    delete pending;
  }
  if (!alive.expired() && answered_.empty()) {
    batch.clear();
    answered_.swap(batch);  // keeps the capacity for the next event
  }
}

NbdConnection::NbdConnection(asio::io_context& io, std::string uri, ConnectPlan plan)
    : io_(io), uri_(std::move(uri)), plan_(std::move(plan)), socket_(io) {}

NbdConnection::~NbdConnection() {
  Shutdown(/*send_disconnect=*/true);
}

void NbdConnection::AsyncConnect(std::function<void(Status)> done) {
  connect_done_ = std::move(done);
  if (state() != State::kIdle) {
    PostConnectDone(Status::Error(EALREADY, "connection already used"));
    return;
  }
  set_state(State::kConnecting);
  handle_ = nbd_create();
  // Option mode stops after the handshake so that Negotiate() chooses the
  // export name (plain or fenced) before NBD_OPT_GO.
  const bool full_info = plan_.fencing != ConnectPlan::Fencing::kNone;
  if (handle_ == nullptr) {
    Fail(LibnbdError(ENOMEM));
    return;
  }
  // Every connection, reconnects included, gets the member TLS options.
  if (Status tls = ApplyMemberTls(handle_, plan_.tls, uri_); !tls.ok()) {
    Fail(std::move(tls));
    return;
  }
  // Read buffers are not zeroed by libnbd (a memset of every payload): a
  // read succeeds only if the answer covers all of it (ReadCoverage).
  if (nbd_set_request_structured_replies(handle_, plan_.structured_replies) == -1 ||
      nbd_set_pread_initialize(handle_, false) == -1 ||
      (plan_.structured_replies &&
       nbd_add_meta_context(handle_, LIBNBD_CONTEXT_BASE_ALLOCATION) == -1) ||
      nbd_set_opt_mode(handle_, true) == -1 || nbd_set_full_info(handle_, full_info) == -1 ||
      nbd_aio_connect_uri(handle_, uri_.c_str()) == -1) {
    Fail(LibnbdError(ENOTCONN));
    return;
  }
  export_name_ = TakeString(nbd_get_export_name(handle_));
  AfterProgress();
}

void NbdConnection::Submit(std::shared_ptr<MemberIo> io) {
  const std::shared_ptr<size_t>& in_flight = in_flight_counter();
  ++*in_flight;
  if (state() != State::kReady) {
    PostDone(io_, std::move(io), in_flight, ENOTCONN);
    return;
  }
  if (!IsMemberOp(io->op) || (NeedsBuffer(io->op) && io->data == nullptr)) {
    PostDone(io_, std::move(io), in_flight, EINVAL);
    return;
  }
  auto* pending = new PendingIo{this, std::move(io), in_flight, &io_};
  const int64_t cookie = StartCommand(*pending->io, pending);
  pending->in_submission = false;
  if (cookie == -1) {
    // Never queued: libnbd will not touch `pending` again (1.14 has already
    // called the free callback; older versions would not have).
    pending->err = LibnbdError(EIO).err();
    Finish(pending);
  } else if (pending->freed_in_submission) {
    Finish(pending);  // completed and retired before the call returned
  }
  AfterProgress();
}

int64_t NbdConnection::StartCommand(MemberIo& io, void* pending) {
  const nbd_completion_callback completion{
      .callback = OnCommandComplete, .user_data = pending, .free = OnCommandFree};
  switch (io.op) {
    case MemberOp::kRead: {
      // The chunk closure borrows `pending`, which the completion closure owns.
      const nbd_chunk_callback chunk{
          .callback = OnReadChunk, .user_data = pending, .free = nullptr};
      return nbd_aio_pread_structured(handle_, io.data, io.length, io.offset, chunk, completion, 0);
    }
    case MemberOp::kWrite:
      return nbd_aio_pwrite(handle_, io.data, io.length, io.offset, completion, FuaFlag(io));
    case MemberOp::kFlush:
      return nbd_aio_flush(handle_, completion, 0);
    case MemberOp::kTrim:
      return nbd_aio_trim(handle_, io.length, io.offset, completion, FuaFlag(io));
    case MemberOp::kZero:
      return nbd_aio_zero(handle_, io.length, io.offset, completion, ZeroFlags(io));
    case MemberOp::kCache:
      return nbd_aio_cache(handle_, io.length, io.offset, completion, 0);
    case MemberOp::kBlockStatus: {
      io.extents.clear();  // the same MemberIo may be resent
      // The completion closure owns `pending`; the extent closure borrows it.
      const nbd_extent_callback extents{
          .callback = OnExtents, .user_data = pending, .free = nullptr};
      return nbd_aio_block_status(handle_, io.length, io.offset, extents, completion, 0);
    }
  }
  return -1;  // unreachable: Submit() rejects values outside MemberOp
}

// Called after every libnbd call that may have moved the state machine: a
// submission, a notification, the start of a connect.
void NbdConnection::AfterProgress() {
  if (handle_ == nullptr) return;
  if (nbd_aio_is_dead(handle_)) {
    Fail(LibnbdError(ENOTCONN));  // the call that killed it set the message
    return;
  }
  if (nbd_aio_is_closed(handle_)) {
    Fail(Status::Error(ENOTCONN, "server closed the connection"));
    return;
  }
  if (state() == State::kConnecting) {
    if (nbd_aio_is_ready(handle_)) {
      OnConnected();
      if (handle_ == nullptr) return;
    } else if (nbd_aio_is_negotiating(handle_)) {
      // libnbd may read the answer inside the call that sends the option.
      if (Negotiate()) return AfterProgress();
      if (handle_ == nullptr) return;
    } else {
      // While connecting to TCP, libnbd may replace the socket (one per
      // resolved address), possibly under the same fd number: re-register.
      ReleaseSocket();
    }
  }
  BindSocket();
  ArmWaits();
}

// Runs whenever the handle is in the negotiating state: sends the first
// option, or acts on the answer to the last one. Returns true if it sent an
// option (whose answer may already have arrived).
bool NbdConnection::Negotiate() {
  if (option_step_ == OptionStep::kNone) {
    using Fencing = ConnectPlan::Fencing;
    if (plan_.fencing == Fencing::kProbe) return SendOption(/*info=*/true, /*fenced=*/true);
    return SendOption(/*info=*/false, /*fenced=*/plan_.fencing == Fencing::kFence);
  }
  if (!option_result_.replied) return false;  // still waiting for the reply
  const OptionResult result = std::exchange(option_result_, {});
  if (option_step_ == OptionStep::kProbeInfo) {
    // A server that ignores the name suffix answers, but not with the token; one that refuses
    // it (the dst plugin, for an epoch older than its session's) is remembered for the message.
    if (result.err != 0)
      set_fence_refusal(result.message.empty() ? std::strerror(result.err) : result.message);
    return SendOption(/*info=*/false, /*fenced=*/result.err == 0 && ServerConfirmsFence());
  }
  // A successful NBD_OPT_GO leaves negotiation; we are here only if it failed.
  const int err = result.err != 0 ? result.err : EIO;
  const std::string name = go_fenced_ ? FencedName() : export_name_;
  const std::string why = result.message.empty() ? std::strerror(err) : result.message;
  Fail(Status::Error(err, "server refused export '" + name + "': " + why));
  return false;
}

std::string NbdConnection::FencedName() const {
  return export_name_ + "@dst-fence:" + plan_.session + ":" + std::to_string(plan_.epoch);
}

bool NbdConnection::SendOption(bool info, bool fenced) {
  option_step_ = info ? OptionStep::kProbeInfo : OptionStep::kGo;
  go_fenced_ = fenced;
  const std::string name = fenced ? FencedName() : export_name_;
  const nbd_completion_callback completion{
      .callback = OnOptionComplete, .user_data = &option_result_, .free = nullptr};
  if (nbd_set_export_name(handle_, name.c_str()) == -1 ||
      (info ? nbd_aio_opt_info(handle_, completion) : nbd_aio_opt_go(handle_, completion)) == -1) {
    Fail(LibnbdError(ENOTCONN));
    return false;
  }
  return true;
}

// The dst plugin answers a fenced name with this exact description; any
// other server that accepts the name does not.
bool NbdConnection::ServerConfirmsFence() {
  const std::string expected = "dst-fence " + plan_.session + " " + std::to_string(plan_.epoch);
  return TakeString(nbd_get_export_description(handle_)) == expected;
}

void NbdConnection::OnConnected() {
  if (go_fenced_ && !ServerConfirmsFence()) {
    Fail(Status::Error(
        EPROTO, "server accepted export '" + FencedName() + "' but did not confirm fencing"));
    return;
  }
  Status status = ReadCapabilities(/*fenced=*/go_fenced_);
  if (!status.ok()) {
    Fail(std::move(status));
    return;
  }
  EnableTcpKeepalive();
  set_state(State::kReady);
  PostConnectDone(Status::Ok());
}

// Lets the kernel notice a silently dead peer too (a cable pulled while the
// connection is idle and no ping is due); Unix sockets need nothing.
void NbdConnection::EnableTcpKeepalive() {
  const int idle = static_cast<int>(plan_.tcp_keepalive.count());
  const int fd = nbd_aio_get_fd(handle_);
  sockaddr_storage address{};
  socklen_t length = sizeof address;
  if (idle <= 0 || fd < 0 || getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0)
    return;
  if (address.ss_family != AF_INET && address.ss_family != AF_INET6) return;
  const int on = 1, probes = 3;
  // Best effort: a failure leaves the system's defaults, and pings still run.
  setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on);
  setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
  setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &idle, sizeof idle);
  setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &probes, sizeof probes);
}

Status NbdConnection::ReadCapabilities(bool fenced) {
  const int64_t size = nbd_get_size(handle_);
  if (size < 0) return LibnbdError(EIO);
  volume::MemberCapabilities caps;
  caps.size = static_cast<uint64_t>(size);
  caps.read_only = nbd_is_read_only(handle_) != 0;  // unknown (-1) is treated as read-only
  caps.can_flush = nbd_can_flush(handle_) == 1;
  caps.can_fua = nbd_can_fua(handle_) == 1;
  caps.can_trim = nbd_can_trim(handle_) == 1;
  caps.can_zero = nbd_can_zero(handle_) == 1;
  caps.can_fast_zero = nbd_can_fast_zero(handle_) == 1;
  caps.can_cache = nbd_can_cache(handle_) == 1;
  caps.can_multi_conn = nbd_can_multi_conn(handle_) == 1;
  caps.can_block_status = nbd_can_meta_context(handle_, LIBNBD_CONTEXT_BASE_ALLOCATION) == 1;
  const int64_t minimum = nbd_get_block_size(handle_, LIBNBD_SIZE_MINIMUM);
  const int64_t preferred = nbd_get_block_size(handle_, LIBNBD_SIZE_PREFERRED);
  const int64_t maximum = nbd_get_block_size(handle_, LIBNBD_SIZE_MAXIMUM);
  caps.min_block = minimum > 0 ? static_cast<uint32_t>(minimum) : 1;
  if (preferred > 0) caps.preferred_block = static_cast<uint32_t>(preferred);
  caps.max_request = maximum > 0
                         ? static_cast<uint32_t>(std::min<int64_t>(maximum, kMaxRequestBytes))
                         : kMaxRequestBytes;
  SetNegotiated(caps, fenced, nbd_get_structured_replies_negotiated(handle_) == 1);
  return Status::Ok();
}

void NbdConnection::BindSocket() {
  if (socket_.is_open()) return;
  const int fd = nbd_aio_get_fd(handle_);
  if (fd < 0) {
    Fail(LibnbdError(ENOTCONN));
    return;
  }
  asio::error_code ec;
  socket_.assign(fd, ec);
  if (ec) Fail(Status::Error(ec.value(), "register socket: " + ec.message()));
}

void NbdConnection::ReleaseSocket() {
  if (!socket_.is_open()) return;
  ++socket_generation_;
  read_armed_ = false;
  write_armed_ = false;
  socket_.release();  // aborts the armed waits; the fd stays libnbd's
}

// libnbd's external main-loop rule: wait for exactly the directions the state
// machine asks for, re-checked after every call that may change it.
void NbdConnection::ArmWaits() {
  if (handle_ == nullptr || !socket_.is_open()) return;
  const unsigned direction = nbd_aio_get_direction(handle_);
  if ((direction & LIBNBD_AIO_DIRECTION_READ) && !read_armed_) ArmWait(WaitType::wait_read);
  if ((direction & LIBNBD_AIO_DIRECTION_WRITE) && !write_armed_) ArmWait(WaitType::wait_write);
}

void NbdConnection::ArmWait(WaitType type) {
  (type == WaitType::wait_read ? read_armed_ : write_armed_) = true;
  socket_.async_wait(type, [this, alive = lifetime_.Watch(), generation = socket_generation_,
                            type](const asio::error_code& ec) {
    if (alive.expired() || generation != socket_generation_) return;  // released or destroyed
    OnSocketEvent(type, ec);
  });
}

void NbdConnection::OnSocketEvent(WaitType type, const asio::error_code& ec) {
  (type == WaitType::wait_read ? read_armed_ : write_armed_) = false;
  if (ec) {
    Fail(Status::Error(ec.value(), "wait on socket: " + ec.message()));
    return;
  }
  collecting_ = true;
  const int notified = NotifyLibnbd();
  collecting_ = false;
  if (notified == -1)
    Fail(LibnbdError(ENOTCONN));
  else
    AfterProgress();
  RunAnswered();  // last: it may destroy this connection
}

// What the socket is ready for now, among the directions libnbd wants; HUP
// and ERR count as both, so that the notified call sees the error.
short NbdConnection::PollSocket(unsigned direction) {
  pollfd poll_fd{.fd = socket_.native_handle(), .events = 0, .revents = 0};
  if (direction & LIBNBD_AIO_DIRECTION_READ) poll_fd.events |= POLLIN;
  if (direction & LIBNBD_AIO_DIRECTION_WRITE) poll_fd.events |= POLLOUT;
  if (poll_fd.events == 0 || poll(&poll_fd, 1, 0) <= 0) return 0;
  if (poll_fd.revents & (POLLHUP | POLLERR)) return poll_fd.events;
  return poll_fd.revents & poll_fd.events;
}

// What the socket is ready for in this round. Once libnbd has nothing in
// flight and nothing to send, no more data can be due: the poll that would
// find none is skipped (at QD1, two polls per I/O). The first round always
// polls: a wait that fired is only a hint, and a read notification that
// finds no data leaves libnbd 1.14 unable to send until data arrives.
short NbdConnection::ReadyNow(int round) {
  const unsigned direction = nbd_aio_get_direction(handle_);
  if (round > 0 && direction == LIBNBD_AIO_DIRECTION_READ && nbd_aio_in_flight(handle_) == 0)
    return 0;
  return PollSocket(direction);
}

// Tells libnbd what the socket is really ready for, reads before writes, and
// repeats while it stays ready: libnbd handles at most one reply per read
// notification. The wait that fired is only a hint (another round may have
// consumed the data since), and libnbd must not be notified spuriously: a
// read notification while a write payload is half sent parks the payload
// until a reply arrives, which never happens if the server is waiting for
// that payload. Returns -1 when libnbd failed.
int NbdConnection::NotifyLibnbd() {
  for (int round = 0; round < kMaxNotifyRounds; ++round) {
    if (nbd_aio_is_dead(handle_) || nbd_aio_is_closed(handle_)) return 0;
    const short ready = ReadyNow(round);
    if (ready == 0) return 0;
    if (ready & POLLIN) {
      if (nbd_aio_notify_read(handle_) == -1) return -1;
      if (nbd_aio_is_dead(handle_) || nbd_aio_is_closed(handle_)) return 0;
    }
    // The read may have changed what libnbd waits for.
    if ((ready & POLLOUT) && (nbd_aio_get_direction(handle_) & LIBNBD_AIO_DIRECTION_WRITE)) {
      if (nbd_aio_notify_write(handle_) == -1) return -1;
    }
  }
  return 0;  // still busy: the re-armed wait fires again at once
}

// The one way out for every failure message: the session in a fenced name,
// which libnbd and the server may quote as well, is redacted here.
void NbdConnection::Fail(Status status) {
  if (state() == State::kDead || state() == State::kClosed) return;
  const bool was_connecting = state() == State::kConnecting;
  set_state(State::kDead);
  if (was_connecting) status = ExplainConnectFailure(std::move(status), uri_);
  status = Status::Error(status.err(), RedactSession(status.message(), plan_.session));
  set_last_error(status.message());
  // libnbd has already failed what was in flight (ENOTCONN); closing the
  // handle now also covers anything it did not.
  Shutdown(/*send_disconnect=*/false);
  if (was_connecting) PostConnectDone(std::move(status));
}

void NbdConnection::Close() {
  const bool was_connecting = state() == State::kConnecting;
  if (state() != State::kDead) set_state(State::kClosed);
  Shutdown(/*send_disconnect=*/true);
  if (was_connecting) PostConnectDone(Status::Error(ECANCELED, "closed while connecting"));
}

void NbdConnection::Shutdown(bool send_disconnect) {
  ReleaseSocket();  // before libnbd closes the fd, whose number may be reused
  if (handle_ == nullptr) return;
  if (send_disconnect && (nbd_aio_is_ready(handle_) || nbd_aio_is_processing(handle_))) {
    nbd_aio_disconnect(handle_, 0);  // best effort: queued, sent if the socket takes it
  }
  // Frees commands still queued or in flight without completing them; their
  // free callbacks post done(ENOTCONN).
  nbd_close(handle_);
  handle_ = nullptr;
}

void NbdConnection::PostConnectDone(Status status) {
  std::function<void(Status)> done = std::exchange(connect_done_, nullptr);
  if (!done) return;
  asio::post(io_, [alive = lifetime_.Watch(), done = std::move(done), status = std::move(status)] {
    if (!alive.expired()) done(status);
  });
}

}  // namespace dst::member
