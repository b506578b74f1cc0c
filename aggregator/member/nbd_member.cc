#include "aggregator/member/nbd_member.h"

#include <algorithm>
#include <cerrno>
#include <optional>
#include <string>
#include <utility>

namespace dst::member {

using volume::MemberIo;
using volume::MemberOp;

NbdMember::NbdMember(asio::io_context& io, std::string uri, unsigned connections)
    : io_(io), uri_(std::move(uri)), wanted_connections_(std::max(connections, 1u)) {}

void NbdMember::AsyncConnect(std::function<void(Status)> done) {
  connections_.push_back(std::make_unique<NbdConnection>(io_, uri_));
  // Callbacks capture `this`: a connection drops its callback when destroyed,
  // and connections never outlive the member.
  connections_.front()->AsyncConnect([this, done = std::move(done)](Status status) mutable {
    if (!status.ok()) {
      done(std::move(status));
      return;
    }
    capabilities_ = connections_.front()->capabilities();
    ConnectExtraConnections(std::move(done));
  });
}

// Without multi-conn a server may show one connection stale data written
// through another, so extra connections are only opened when it promises.
void NbdMember::ConnectExtraConnections(std::function<void(Status)> done) {
  const unsigned wanted = capabilities_.can_multi_conn ? wanted_connections_ : 1;
  if (wanted == 1) {
    done(Status::Ok());
    return;
  }
  auto pending = std::make_shared<unsigned>(wanted - 1);
  auto shared_done = std::make_shared<std::function<void(Status)>>(std::move(done));
  for (unsigned i = 1; i < wanted; ++i) {
    connections_.push_back(std::make_unique<NbdConnection>(io_, uri_));
    connections_.back()->AsyncConnect([this, pending, shared_done](const Status&) {
      if (--*pending > 0) return;
      DropUnusableExtraConnections();
      (*shared_done)(Status::Ok());
    });
  }
}

// An extra connection that failed, or that sees a different export, would
// only take I/O to fail it.
void NbdMember::DropUnusableExtraConnections() {
  const NbdConnection* first = connections_.front().get();
  auto unusable = [this, first](const std::unique_ptr<NbdConnection>& connection) {
    return connection.get() != first &&
           (!connection->ready() || connection->capabilities().size != capabilities_.size);
  };
  std::erase_if(connections_, unusable);
}

size_t NbdMember::in_flight() const {
  size_t total = 0;
  for (const auto& connection : connections_)
    total += connection->in_flight();
  return total;
}

void NbdMember::Submit(std::shared_ptr<MemberIo> io) {
  Dispatch(std::move(io));
}

void NbdMember::Dispatch(std::shared_ptr<MemberIo> io) {
  if (const int err = CheckRequest(*io); err != 0) {
    PostError(std::move(io), err);
    return;
  }
  NbdConnection* connection = LeastBusyConnection();
  if (connection == nullptr) {
    PostError(std::move(io), ENOTCONN);
    return;
  }
  connection->Submit(std::move(io));
}

// What libnbd would reject anyway, answered with the errno the volume layer
// can act on.
int NbdMember::CheckRequest(const MemberIo& io) const {
  const volume::MemberCapabilities& caps = capabilities_;
  switch (io.op) {
    case MemberOp::kRead:
      return io.length > caps.max_request ? EINVAL : 0;
    case MemberOp::kWrite:
      if (caps.read_only) return EROFS;
      return io.length > caps.max_request ? EINVAL : 0;
    case MemberOp::kTrim:
      return caps.read_only ? EROFS : 0;
    case MemberOp::kZero:
      if (caps.read_only) return EROFS;
      return io.fast_zero && !caps.can_fast_zero ? ENOTSUP : 0;
    case MemberOp::kBlockStatus:
      return caps.can_block_status ? 0 : ENOTSUP;
    case MemberOp::kFlush:
    case MemberOp::kCache:
      return 0;
  }
  return EINVAL;
}

NbdConnection* NbdMember::LeastBusyConnection() {
  NbdConnection* best = nullptr;
  for (const auto& connection : connections_) {
    if (!connection->ready()) continue;
    if (best == nullptr || connection->in_flight() < best->in_flight()) best = connection.get();
  }
  return best;
}

void NbdMember::PostError(std::shared_ptr<MemberIo> io, int err) {
  asio::post(io_, [io = std::move(io), err] { io->done(err); });
}

Status NbdMember::ConnectAll(asio::io_context& io, std::vector<std::unique_ptr<NbdMember>>& members,
                             std::chrono::milliseconds timeout) {
  // Shared with the callbacks, which may run after we return (on timeout).
  struct Progress {
    size_t pending = 0;
    bool timed_out = false;
    std::vector<std::optional<Status>> results;
  };
  auto progress = std::make_shared<Progress>();
  progress->pending = members.size();
  progress->results.resize(members.size());
  for (size_t i = 0; i < members.size(); ++i) {
    members[i]->AsyncConnect([progress, i](Status status) {
      progress->results[i] = std::move(status);
      --progress->pending;
    });
  }
  asio::steady_timer deadline(io, timeout);
  deadline.async_wait([progress](const asio::error_code& ec) {
    if (!ec) progress->timed_out = true;
  });
  if (io.stopped()) io.restart();
  while (progress->pending > 0 && !progress->timed_out) {
    if (io.run_one() == 0) break;  // stopped from elsewhere
  }
  deadline.cancel();
  const Status unfinished =
      progress->timed_out ? Status::Error(ETIMEDOUT, "connect timed out after " +
                                                         std::to_string(timeout.count()) + " ms")
                          : Status::Error(ECANCELED, "event loop stopped while connecting");
  for (size_t i = 0; i < members.size(); ++i) {
    const Status& result = progress->results[i].value_or(unfinished);
    if (!result.ok()) return result.Wrap("member " + members[i]->name());
  }
  return Status::Ok();
}

}  // namespace dst::member
