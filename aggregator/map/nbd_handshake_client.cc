#include "aggregator/map/nbd_handshake_client.h"

#include <poll.h>
#include <unistd.h>

#include <cerrno>
#include <vector>

#include "common/nbd_protocol.h"

namespace dst::aggregator::map {

namespace {

using Clock = std::chrono::steady_clock;

// Replies to one NBD_OPT_GO before its ACK: NBD_REP_INFO for each kind of information, a server
// sends a handful. More is not an NBD server.
constexpr int kMaxReplies = 64;

class Peer {
 public:
  Peer(int fd, const std::string& where, std::chrono::milliseconds timeout)
      : fd_(fd), where_(where), deadline_(Clock::now() + timeout) {}

  Status Read(void* data, size_t size) {
    auto* p = static_cast<uint8_t*>(data);
    while (size > 0) {
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline_ - Clock::now());
      if (left.count() <= 0) return Status::Error(ETIMEDOUT, where_ + ": handshake timed out");
      pollfd pfd{fd_, POLLIN, 0};
      const int ready = ::poll(&pfd, 1, static_cast<int>(left.count()) + 1);
      if (ready < 0 && errno == EINTR) continue;
      if (ready < 0) return Status::FromErrno(errno, where_ + ": poll");
      if (ready == 0) continue;  // the deadline check above ends it
      const ssize_t n = ::read(fd_, p, size);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return Status::FromErrno(errno, where_ + ": read");
      if (n == 0) return Status::Error(EPROTO, where_ + ": closed the connection in the handshake");
      p += n;
      size -= static_cast<size_t>(n);
    }
    return Status::Ok();
  }

  Status Write(const void* data, size_t size) {
    const auto* p = static_cast<const uint8_t*>(data);
    while (size > 0) {
      const ssize_t n = ::write(fd_, p, size);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return Status::FromErrno(errno, where_ + ": write");
      p += n;
      size -= static_cast<size_t>(n);
    }
    return Status::Ok();
  }

  Status Protocol(const std::string& what) const {
    return Status::Error(EPROTO, where_ + ": " + what + ": not an NBD server");
  }

 private:
  int fd_;
  const std::string& where_;
  Clock::time_point deadline_;
};

Status Greet(Peer& peer, uint32_t* client_flags) {
  uint8_t greeting[18];
  DST_RETURN_IF_ERROR(peer.Read(greeting, sizeof greeting));
  if (nbd::LoadBE64(greeting) != nbd::kNbdMagic || nbd::LoadBE64(greeting + 8) != nbd::kIHaveOpt)
    return peer.Protocol("bad greeting (only fixed newstyle is supported)");
  const uint16_t flags = nbd::LoadBE16(greeting + 16);
  if ((flags & nbd::kFlagFixedNewstyle) == 0) return peer.Protocol("no fixed newstyle");
  *client_flags = nbd::kClientFlagFixedNewstyle;
  if (flags & nbd::kFlagNoZeroes) *client_flags |= nbd::kClientFlagNoZeroes;
  uint8_t reply[4];
  nbd::StoreBE32(reply, *client_flags);
  return peer.Write(reply, sizeof reply);
}

Status SendGo(Peer& peer, const std::string& name) {
  // u32 name length, name, u16 number of information requests (none: NBD_INFO_EXPORT always
  // comes).
  std::vector<uint8_t> option(nbd::OptionHeader::kSize + 4 + name.size() + 2);
  nbd::OptionHeader{.option = nbd::kOptGo, .length = static_cast<uint32_t>(4 + name.size() + 2)}
      .Encode(option.data());
  uint8_t* data = option.data() + nbd::OptionHeader::kSize;
  nbd::StoreBE32(data, static_cast<uint32_t>(name.size()));
  std::copy(name.begin(), name.end(), data + 4);
  nbd::StoreBE16(data + 4 + name.size(), 0);
  return peer.Write(option.data(), option.size());
}

// The text of an error reply, if the server sent any, as " (TEXT)".
std::string ErrorText(const std::vector<uint8_t>& payload) {
  std::string text;
  for (uint8_t c : payload)
    if (c >= 0x20 && c < 0x7f) text += static_cast<char>(c);
  return text.empty() ? "" : " (" + text + ")";
}

Status ErrorReply(const std::string& where, const std::string& name, uint32_t type,
                  const std::vector<uint8_t>& payload) {
  switch (type) {
    case nbd::kRepErrUnknown:
      return Status::Error(ENOENT,
                           "unknown volume '" + name + "' (" + where + " has no such export)");
    case nbd::kRepErrTlsReqd:
      return Status::Error(EPROTONOSUPPORT,
                           where +
                               " requires TLS, which the kernel's NBD client cannot do: map "
                               "through a listener without --tls=require");
    case nbd::kRepErrUnsup:
      return Status::Error(EPROTONOSUPPORT, where + ": the server does not support NBD_OPT_GO");
    case nbd::kRepErrShutdown:
      return Status::Error(ESHUTDOWN, where + ": the server is shutting down");
  }
  return Status::Error(EPROTO, where + ": export '" + name + "' refused: option reply error " +
                                   std::to_string(type & ~nbd::kRepErrorBit) + ErrorText(payload));
}

}  // namespace

Status NegotiateExport(int fd, const std::string& name, const std::string& where,
                       std::chrono::milliseconds timeout, ExportInfo* out) {
  Peer peer(fd, where, timeout);
  uint32_t client_flags = 0;
  DST_RETURN_IF_ERROR(Greet(peer, &client_flags));
  DST_RETURN_IF_ERROR(SendGo(peer, name));
  bool have_export = false;
  for (int i = 0; i < kMaxReplies; ++i) {
    uint8_t header_bytes[nbd::OptionReplyHeader::kSize];
    DST_RETURN_IF_ERROR(peer.Read(header_bytes, sizeof header_bytes));
    const auto header = nbd::OptionReplyHeader::Decode(header_bytes);
    if (header.magic != nbd::kOptionReplyMagic) return peer.Protocol("bad option reply magic");
    if (header.option != nbd::kOptGo) return peer.Protocol("a reply to another option");
    if (header.length > nbd::kMaxOptionLength) return peer.Protocol("an option reply too long");
    std::vector<uint8_t> payload(header.length);
    DST_RETURN_IF_ERROR(peer.Read(payload.data(), payload.size()));
    if (nbd::IsOptionReplyError(header.reply_type))
      return ErrorReply(where, name, header.reply_type, payload);
    if (header.reply_type == nbd::kRepAck) {
      if (!have_export) return peer.Protocol("NBD_OPT_GO acknowledged without the export's size");
      return Status::Ok();
    }
    if (header.reply_type != nbd::kRepInfo || payload.size() < 2) continue;
    if (nbd::LoadBE16(payload.data()) != nbd::kInfoExport) continue;
    if (payload.size() != nbd::kInfoExportLength) return peer.Protocol("bad NBD_INFO_EXPORT");
    out->size = nbd::LoadBE64(payload.data() + 2);
    out->flags = nbd::LoadBE16(payload.data() + 10);
    have_export = true;
  }
  return peer.Protocol("too many replies to NBD_OPT_GO");
}

}  // namespace dst::aggregator::map
