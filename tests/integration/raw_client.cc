#include "tests/integration/raw_client.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace dst::test {

namespace {

std::runtime_error Errno(const std::string& what) {
  return std::runtime_error(what + ": " + std::strerror(errno));
}

}  // namespace

RawClient::RawClient(const std::string& socket_path, std::chrono::seconds timeout) {
  fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd_ < 0) throw Errno("socket");
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  socket_path.copy(address.sun_path, sizeof address.sun_path - 1);
  if (::connect(fd_, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0)
    throw Errno("connect " + socket_path);
  SetTimeouts(timeout);
}

RawClient::RawClient(int port, std::chrono::seconds timeout) : RawClient(port, "", timeout) {}

RawClient::RawClient(int port, const std::string& source, std::chrono::seconds timeout) {
  fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd_ < 0) throw Errno("socket");
  if (!source.empty()) {
    sockaddr_in local{};
    local.sin_family = AF_INET;
    if (::inet_pton(AF_INET, source.c_str(), &local.sin_addr) != 1)
      throw std::runtime_error("bad source address " + source);
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&local), sizeof local) != 0)
      throw Errno("bind " + source);
  }
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd_, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0)
    throw Errno("connect 127.0.0.1:" + std::to_string(port));
  SetTimeouts(timeout);
}

void RawClient::SetTimeouts(std::chrono::seconds timeout) {
  const timeval tv{static_cast<time_t>(timeout.count()), 0};
  ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

void RawClient::Close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

void RawClient::Reset() {
  if (fd_ < 0) return;
  const linger abort_on_close{1, 0};
  ::setsockopt(fd_, SOL_SOCKET, SO_LINGER, &abort_on_close, sizeof abort_on_close);
  Close();
}

void RawClient::Send(std::span<const uint8_t> data) {
  while (!data.empty()) {
    const ssize_t n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw Errno("send");
    data = data.subspan(n);
  }
}

bool RawClient::SendUnlessClosed(std::span<const uint8_t> data) {
  while (!data.empty()) {
    const ssize_t n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EPIPE || errno == ECONNRESET)) return false;
    if (n < 0) throw Errno("send");
    data = data.subspan(n);
  }
  return true;
}

size_t RawClient::TrySend(std::span<const uint8_t> data) {
  for (;;) {
    const ssize_t n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n >= 0) return static_cast<size_t>(n);
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
    throw Errno("send");
  }
}

size_t RawClient::Available() const {
  int n = 0;
  if (::ioctl(fd_, FIONREAD, &n) != 0) throw Errno("ioctl FIONREAD");
  return static_cast<size_t>(n);
}

bool RawClient::Recv(std::span<uint8_t> data) {
  while (!data.empty()) {
    const ssize_t n = ::recv(fd_, data.data(), data.size(), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == ECONNRESET) return false;
    if (n < 0) throw Errno("recv");
    if (n == 0) return false;
    data = data.subspan(n);
  }
  return true;
}

void RawClient::RecvOrThrow(std::span<uint8_t> data) {
  if (!Recv(data)) throw std::runtime_error("server closed the connection unexpectedly");
}

bool RawClient::ClosedByServer() {
  uint8_t byte;
  const ssize_t n = ::recv(fd_, &byte, 1, 0);
  if (n == 0 || (n < 0 && errno == ECONNRESET)) return true;
  if (n < 0) throw Errno("waiting for the server to close");
  return false;  // it sent something instead
}

void RawClient::Greet() {
  uint8_t hello[18];
  RecvOrThrow(hello);
  if (nbd::LoadBE64(hello) != nbd::kNbdMagic || nbd::LoadBE64(hello + 8) != nbd::kIHaveOpt)
    throw std::runtime_error("not a fixed newstyle greeting");
  uint8_t flags[4];
  nbd::StoreBE32(flags, nbd::kClientFlagFixedNewstyle | nbd::kClientFlagNoZeroes);
  Send(flags);
}

void RawClient::SendOption(uint32_t option, std::span<const uint8_t> data, uint64_t magic) {
  // One send for header and payload: a server that hangs up as soon as it has
  // read a bad header must not turn the payload's send into EPIPE.
  Send(OptionMessage(option, data, magic));
}

OptionReply RawClient::ReadOptionReply() {
  uint8_t raw[nbd::OptionReplyHeader::kSize];
  RecvOrThrow(raw);
  OptionReply reply{nbd::OptionReplyHeader::Decode(raw), {}};
  if (reply.header.magic != nbd::kOptionReplyMagic)
    throw std::runtime_error("bad option reply magic");
  reply.data.resize(reply.header.length);
  RecvOrThrow(reply.data);
  return reply;
}

ExportInfo RawClient::Go(const std::string& name, std::vector<uint16_t> requests) {
  Bytes payload(4 + name.size() + 2 + 2 * requests.size(), 0);
  nbd::StoreBE32(payload.data(), static_cast<uint32_t>(name.size()));
  std::copy(name.begin(), name.end(), payload.begin() + 4);
  nbd::StoreBE16(payload.data() + 4 + name.size(), static_cast<uint16_t>(requests.size()));
  for (size_t i = 0; i < requests.size(); ++i)
    nbd::StoreBE16(payload.data() + 4 + name.size() + 2 + 2 * i, requests[i]);
  SendOption(nbd::kOptGo, payload);
  ExportInfo info;
  for (;;) {
    const OptionReply r = ReadOptionReply();
    if (r.header.reply_type == nbd::kRepAck) return info;
    if (nbd::IsOptionReplyError(r.header.reply_type))
      throw std::runtime_error(std::string("NBD_OPT_GO refused: ") +
                               nbd::OptionReplyName(r.header.reply_type));
    if (r.header.reply_type == nbd::kRepInfo && r.data.size() == nbd::kInfoExportLength &&
        nbd::LoadBE16(r.data.data()) == nbd::kInfoExport) {
      info.size = nbd::LoadBE64(r.data.data() + 2);
      info.flags = nbd::LoadBE16(r.data.data() + 10);
    }
    if (r.header.reply_type == nbd::kRepInfo && r.data.size() == nbd::kInfoBlockSizeLength &&
        nbd::LoadBE16(r.data.data()) == nbd::kInfoBlockSize) {
      info.min_block = nbd::LoadBE32(r.data.data() + 2);
      info.preferred_block = nbd::LoadBE32(r.data.data() + 6);
      info.max_block = nbd::LoadBE32(r.data.data() + 10);
    }
  }
}

ExportInfo RawClient::ExportName(const std::string& name) {
  SendOption(nbd::kOptExportName, {reinterpret_cast<const uint8_t*>(name.data()), name.size()});
  uint8_t reply[10];  // size, flags; no zeroes (negotiated in Greet)
  if (!Recv(reply)) throw std::runtime_error("NBD_OPT_EXPORT_NAME: the server hung up");
  return {nbd::LoadBE64(reply), nbd::LoadBE16(reply + 8)};
}

void RawClient::SendRequest(const nbd::RequestHeader& header, std::span<const uint8_t> payload) {
  // One send, for the same reason as SendOption.
  const auto encoded = header.Encode();
  std::vector<uint8_t> message(encoded.begin(), encoded.end());
  message.insert(message.end(), payload.begin(), payload.end());
  Send(message);
}

nbd::SimpleReply RawClient::ReadSimpleReply() {
  uint8_t raw[nbd::SimpleReply::kSize];
  RecvOrThrow(raw);
  const nbd::SimpleReply reply = nbd::SimpleReply::Decode(raw);
  if (reply.magic != nbd::kSimpleReplyMagic) throw std::runtime_error("bad simple reply magic");
  return reply;
}

Bytes OptionMessage(uint32_t option, std::span<const uint8_t> data, uint64_t magic) {
  const auto header = nbd::OptionHeader{magic, option, static_cast<uint32_t>(data.size())}.Encode();
  Bytes message(header.begin(), header.end());
  message.insert(message.end(), data.begin(), data.end());
  return message;
}

nbd::RequestHeader Request(uint16_t type, uint64_t offset, uint32_t length, uint64_t cookie,
                           uint16_t flags) {
  return nbd::RequestHeader{nbd::kRequestMagic, flags, type, cookie, offset, length};
}

}  // namespace dst::test
