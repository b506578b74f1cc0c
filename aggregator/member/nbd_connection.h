// NbdConnection: the real MemberConnection (member_connection.h): one libnbd
// handle (one TCP or Unix connection to an NBD server) driven by an Asio
// event loop through libnbd's external main-loop API. It connects (with TLS
// for nbds:// and nbds+unix:// members, using the credentials in
// ConnectPlan::tls: member_tls.h), negotiates structured replies and
// base:allocation, optionally asks the dst plugin to fence the connection
// (ConnectPlan), reads the export's capabilities, and executes MemberIo
// objects.
//
// Contract (beyond MemberConnection's):
// - done callbacks are run by the io_context, never from inside Submit() or
//   a libnbd callback. Answers read while handling a socket event are run at
//   the end of that handler (which may destroy this object); all others
//   (dead connection, Close(), destruction with I/O in flight) are posted.
// - Failure messages never contain the plan's session (RedactSession): a
//   refused fenced name reads "NAME@dst-fence:...:EPOCH".
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

#include "aggregator/member/member_connection.h"
#include "aggregator/member/member_tls.h"
#include "aggregator/volume/member_io.h"
#include "common/lifetime.h"
#include "common/status.h"

struct nbd_handle;  // libnbd

namespace dst::member {

struct PendingIo;  // a MemberIo while libnbd holds it (nbd_connection.cc)

// The largest read/write payload we ever send, whatever the server allows.
inline constexpr uint32_t kMaxRequestBytes = 32u << 20;

class NbdConnection final : public MemberConnection {
 public:
  NbdConnection(asio::io_context& io, std::string uri, ConnectPlan plan = {});
  ~NbdConnection();
  NbdConnection(const NbdConnection&) = delete;
  NbdConnection& operator=(const NbdConnection&) = delete;

  void AsyncConnect(std::function<void(Status)> done) override;
  // The caller has validated `io` against capabilities() (libnbd rejects
  // what the server did not advertise, e.g. FUA, with EINVAL).
  void Submit(std::shared_ptr<volume::MemberIo> io) override;
  // Sends NBD_CMD_DISC if possible and closes the connection at once.
  void Close() override;

  const std::string& uri() const { return uri_; }

 private:
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
  Status ReadCapabilities(bool fenced);
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

  // Posted handlers that touch `this` check it first.
  Lifetime lifetime_;
};

}  // namespace dst::member
