// NbdMember: a volume member reached at an NBD URI (nbd://host:port/export,
// nbd+unix:///export?socket=PATH, ...) through one or more NbdConnections.
//
// Contract:
// - AsyncConnect() connects one connection; if the server advertises
//   multi-conn (every connection sees the others' writes and flushes), it
//   opens up to `connections` in total, else it uses one. Extra connections
//   that fail are dropped; the member works with those that connected.
// - capabilities() are those of the first connection, valid once connected.
// - Submit() sends each I/O on the ready connection with the fewest I/Os in
//   flight. done is called exactly once, posted to the io_context: 0, or an
//   errno. A read or write longer than capabilities().max_request gets EINVAL
//   (the volume splits requests; this is a safety net); a write, trim or zero
//   on a read-only export EROFS; fast_zero or block status that the export
//   did not advertise ENOTSUP; a member with no ready connection ENOTCONN.
//   Other unadvertised flags (e.g. FUA) are refused by libnbd with EINVAL.
// - No retries and no reconnects yet: an I/O on a connection that dies fails
//   with ENOTCONN. Every submission goes through Dispatch(), which a later
//   resend path can call again with the same MemberIo.
// - The io_context must outlive the member. Destroying the member fails the
//   I/Os in flight (their done still runs, with ENOTCONN) and drops a pending
//   AsyncConnect callback.
//
// Threading: not thread-safe; every call and the io_context run on one thread.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <asio.hpp>

#include "aggregator/member/nbd_connection.h"
#include "aggregator/volume/member_io.h"
#include "common/status.h"

namespace dst::member {

class NbdMember : public volume::MemberTarget {
 public:
  NbdMember(asio::io_context& io, std::string uri, unsigned connections);
  ~NbdMember() override = default;
  NbdMember(const NbdMember&) = delete;
  NbdMember& operator=(const NbdMember&) = delete;

  // `done` gets Ok once the member can take I/O, else the first connection's
  // error (without the URI; ConnectAll adds it). Call at most once.
  void AsyncConnect(std::function<void(Status)> done);

  const volume::MemberCapabilities& capabilities() const override { return capabilities_; }
  const std::string& name() const override { return uri_; }
  void Submit(std::shared_ptr<volume::MemberIo> io) override;

  // Connections in use (ready or dead), and I/Os not yet done on all of them.
  size_t connection_count() const { return connections_.size(); }
  size_t in_flight() const;

  // Start-up helper: runs `io` until every member is connected or has failed,
  // or until `timeout`. Returns Ok, or the first failure in `members` order as
  // "member URI: message" (ETIMEDOUT for a member still connecting).
  static Status ConnectAll(asio::io_context& io, std::vector<std::unique_ptr<NbdMember>>& members,
                           std::chrono::milliseconds timeout);

 private:
  void ConnectExtraConnections(std::function<void(Status)> done);
  void DropUnusableExtraConnections();
  // The one submission path: validates, picks a connection, sends.
  void Dispatch(std::shared_ptr<volume::MemberIo> io);
  int CheckRequest(const volume::MemberIo& io) const;
  NbdConnection* LeastBusyConnection();
  void PostError(std::shared_ptr<volume::MemberIo> io, int err);

  asio::io_context& io_;
  const std::string uri_;
  const unsigned wanted_connections_;
  volume::MemberCapabilities capabilities_;
  std::vector<std::unique_ptr<NbdConnection>> connections_;
};

}  // namespace dst::member
