// NbdConnection: one libnbd handle (one TCP or Unix connection to an NBD
// server) driven by an Asio event loop through libnbd's external main-loop
// API. It connects (with TLS for nbds:// and nbds+unix:// members, using
// the credentials in ConnectPlan::tls: member_tls.h), negotiates structured
// replies and base:allocation, optionally asks the dst plugin to fence the
// connection (ConnectPlan), reads the export's capabilities, and executes
// MemberIo objects.
//
// Contract:
// - Every submitted MemberIo gets exactly one io->done(err), always run by
//   the io_context and never from inside Submit() or a libnbd callback, even
//   when the connection dies, is closed, or this object is destroyed with the
//   I/O in flight: those complete with a non-zero errno (ENOTCONN). Answers
//   read while handling a socket event are run at the end of that handler
//   (which may destroy this object); all others are posted.
// - The AsyncConnect() callback is posted too, and is dropped if this object
//   is destroyed before it runs (it usually captures the owner).
// - A connection is used once: after it dies or is closed it stays dead; a
//   reconnect is a new NbdConnection.
// - The io_context must outlive this object (pending done callbacks are
//   posted to it from the destructor).
//
// Threading: not thread-safe. Every call, and the io_context that drives it,
// must run on one thread.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <asio.hpp>

#include "aggregator/member/member_tls.h"
#include "aggregator/volume/member_io.h"
#include "common/status.h"

struct nbd_handle;  // libnbd

namespace dst::member {

struct PendingIo;  // a MemberIo while libnbd holds it (nbd_connection.cc)

// The largest read/write payload we ever send, whatever the server allows.
inline constexpr uint32_t kMaxRequestBytes = 32u << 20;

// How a connection asks for its export. A fenced connection asks for
// "NAME@dst-fence:SESSION:EPOCH" and requires the dst plugin's confirmation
// (export description "dst-fence SESSION EPOCH"); see docs/transactions.md.
struct ConnectPlan {
  enum class Fencing : uint8_t {
    kNone,   // plain export name
    kFence,  // fenced name; fail unless the server confirms
    kProbe,  // ask with NBD_OPT_INFO first; fence if confirmed, else plain
  };
  Fencing fencing = Fencing::kNone;
  std::string session;  // 32 hex digits
  uint64_t epoch = 0;
  // TCP keepalive idle time (TCP members only); 0: leave the system default.
  std::chrono::seconds tcp_keepalive{0};
  // Credentials for a TLS member (nbds://, nbds+unix://); unused for a plain one.
  MemberTls tls;
  // Ask for structured replies and base:allocation (block status needs
  // them). Without, a read's answer is a simple reply, which libnbd takes
  // in two receives instead of four: cheaper for a connection that carries
  // reads.
  bool structured_replies = true;
};

class NbdConnection {
 public:
  NbdConnection(asio::io_context& io, std::string uri, ConnectPlan plan = {});
  ~NbdConnection();
  NbdConnection(const NbdConnection&) = delete;
  NbdConnection& operator=(const NbdConnection&) = delete;

  // Starts connecting and the NBD handshake; `done` gets Ok once the
  // connection is ready and capabilities() is valid, else the error (errno
  // and libnbd's message, e.g. "connect: No such file or directory").
  // Call at most once.
  void AsyncConnect(std::function<void(Status)> done);

  // Sends one I/O. On a connection that is not ready, done gets ENOTCONN.
  // The caller has validated it against capabilities() (libnbd rejects what
  // the server did not advertise, e.g. FUA, with EINVAL).
  void Submit(std::shared_ptr<volume::MemberIo> io);

  // Sends NBD_CMD_DISC if possible and closes the connection at once; I/Os
  // still in flight complete with ENOTCONN. A pending connect gets ECANCELED.
  void Close();

  bool ready() const { return state_ == State::kReady; }
  // Failed to connect, or lost after connecting (not after Close()).
  bool dead() const { return state_ == State::kDead; }
  // Why the connection failed or died; empty otherwise.
  const std::string& last_error() const { return last_error_; }
  // Submitted I/Os whose done has not run yet.
  size_t in_flight() const { return *in_flight_; }
  // Valid once connected.
  const volume::MemberCapabilities& capabilities() const { return capabilities_; }
  // Valid once connected: the server confirmed fencing for plan.epoch.
  bool fenced() const { return fenced_; }
  // Valid once connected: structured replies were negotiated.
  bool structured_replies() const { return structured_replies_; }
  const std::string& uri() const { return uri_; }

 private:
  enum class State { kIdle, kConnecting, kReady, kDead, kClosed };
  using WaitType = asio::posix::descriptor_base::wait_type;

  // libnbd's option completion callback; user_data is an OptionResult.
  static int OnOptionComplete(void* user_data, int* error);
  // libnbd's free callback of a command; user_data is a PendingIo.
  static void OnCommandFree(void* user_data);
  void Answered(PendingIo* pending);
  void RunAnswered();
  int64_t StartCommand(volume::MemberIo& io, void* pending);
  void AfterProgress();
  bool Negotiate();
  bool SendOption(bool info, bool fenced);
  std::string FencedName() const;
  bool ServerConfirmsFence();
  void OnConnected();
  void EnableTcpKeepalive();
  Status ReadCapabilities();
  void BindSocket();
  void ReleaseSocket();
  void ArmWaits();
  void ArmWait(WaitType type);
  void OnSocketEvent(WaitType type, const asio::error_code& ec);
  short PollSocket(unsigned direction);
  short ReadyNow(int round);
  int NotifyLibnbd();
  void Fail(Status status);
  void Shutdown(bool send_disconnect);
  void PostConnectDone(Status status);

  asio::io_context& io_;
  const std::string uri_;
  const ConnectPlan plan_;
  nbd_handle* handle_ = nullptr;
  // Negotiation (option mode): the export name from the URI, the last
  // option sent, and its result, recorded by libnbd's completion callback
  // for Negotiate().
  struct OptionResult {
    bool replied = false;
    int err = 0;
    // libnbd's reading of an error reply ("handshake: server requires TLS
    // encryption first"): more telling than the errno alone.
    std::string message;
  };
  std::string export_name_;
  enum class OptionStep : uint8_t { kNone, kProbeInfo, kGo } option_step_ = OptionStep::kNone;
  OptionResult option_result_;
  bool go_fenced_ = false;
  bool fenced_ = false;
  bool structured_replies_ = false;
  State state_ = State::kIdle;
  std::string last_error_;
  volume::MemberCapabilities capabilities_;
  std::function<void(Status)> connect_done_;

  // A view of libnbd's socket: it never owns the fd (released, not closed).
  asio::posix::stream_descriptor socket_;
  bool read_armed_ = false;
  bool write_armed_ = false;
  // Bumped whenever the descriptor is released, so that aborted or stale wait
  // handlers recognise themselves and do nothing.
  uint64_t socket_generation_ = 0;

  // Answers collected while a socket event is handled, run at its end.
  std::vector<PendingIo*> answered_;
  bool collecting_ = false;

  // Shared with the posted completions, which may outlive this object.
  std::shared_ptr<size_t> in_flight_ = std::make_shared<size_t>(0);
  // Expires with this object; posted handlers that touch `this` check it.
  std::shared_ptr<char> alive_ = std::make_shared<char>(0);
};

}  // namespace dst::member
