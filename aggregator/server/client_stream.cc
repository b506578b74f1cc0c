#include "aggregator/server/client_stream.h"

#include "aggregator/server/tls.h"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>

#include <openssl/ssl.h>
#include <openssl/x509.h>

namespace dst::server {

namespace {

// Large enough for a burst of request headers, small enough to be cheap per
// connection; payloads at least this big are read around it.
constexpr size_t kReceiveBufferSize = 16 * 1024;
// Room in the kernel for replies not yet read by the client: a 1 MiB read
// reply goes out in one write instead of five or more, each after a wait for
// the socket to drain (the system default is about 208 KiB). Best effort:
// the system's maximum (net.core.wmem_max) may cap it.
constexpr int kSendBufferBytes = 1 << 20;
// A client that neither answers close_notify nor closes is not waited for.
constexpr auto kCloseNotifyWait = std::chrono::seconds(1);

}  // namespace

ClientStream::ClientStream(Socket socket)
    : socket_(std::move(socket)), buffer_(kReceiveBufferSize) {
  // WriteAll tries a plain write that must not block first.
  asio::error_code ignored;
  socket_.non_blocking(true, ignored);
  socket_.set_option(asio::socket_base::send_buffer_size(kSendBufferBytes), ignored);
}

asio::awaitable<std::tuple<asio::error_code, size_t>> ClientStream::ReadSome(
    asio::mutable_buffer buffer) {
  if (tls_) co_return co_await tls_->async_read_some(buffer, kAsTuple);
  co_return co_await socket_.async_read_some(buffer, kAsTuple);
}

asio::awaitable<Status> ClientStream::WaitForData(const char* context) {
  if (begin_ < end_) co_return Status::Ok();
  auto [ec, n] = co_await ReadSome(asio::buffer(buffer_));
  if (ec) co_return FromAsio(ec, context);
  begin_ = 0;
  end_ = n;
  co_return Status::Ok();
}

bool ClientStream::TakeBuffered(void* data, size_t size) {
  if (end_ - begin_ < size) return false;
  if (size == 0) return true;  // an empty payload has no buffer: memcpy(nullptr) is undefined
  std::memcpy(data, buffer_.data() + begin_, size);
  begin_ += size;
  return true;
}

asio::awaitable<Status> ClientStream::ReadExact(void* data, size_t size, const char* context) {
  auto* out = static_cast<uint8_t*>(data);
  while (size > 0) {
    if (begin_ == end_ && size >= buffer_.size()) {
      // Large and nothing buffered: read it in place, no copy.
      auto [ec, n] = tls_ ? co_await asio::async_read(*tls_, asio::buffer(out, size), kAsTuple)
                          : co_await asio::async_read(socket_, asio::buffer(out, size), kAsTuple);
      if (ec) co_return FromAsio(ec, context);
      co_return Status::Ok();
    }
    DST_CO_RETURN_IF_ERROR(co_await WaitForData(context));
    const size_t n = std::min(size, end_ - begin_);
    std::memcpy(out, buffer_.data() + begin_, n);
    begin_ += n;
    out += n;
    size -= n;
  }
  co_return Status::Ok();
}

asio::awaitable<Status> ClientStream::Discard(uint64_t size, const char* context) {
  while (size > 0) {
    DST_CO_RETURN_IF_ERROR(co_await WaitForData(context));
    const size_t n = std::min<uint64_t>(size, end_ - begin_);
    begin_ += n;
    size -= n;
  }
  co_return Status::Ok();
}

asio::awaitable<Status> ClientStream::StartTls(asio::ssl::context& context) {
  if (begin_ != end_)
    co_return Status::Error(EPROTO, "data sent after STARTTLS before the TLS handshake");
  tls_ = std::make_unique<asio::ssl::stream<Socket&>>(socket_, context);
  auto [ec] = co_await tls_->async_handshake(asio::ssl::stream_base::server, kAsTuple);
  if (ec) co_return FromAsio(ec, "TLS handshake");
  co_return Status::Ok();
}

std::string ClientStream::PeerIdentity() const {
  if (!tls_) return "";
  SSL* ssl = tls_->native_handle();
  if (std::string identity = PskIdentity(ssl); !identity.empty()) return "PSK " + identity;
  X509* cert = SSL_get0_peer_certificate(ssl);
  if (!cert) return "";
  char subject[256];
  X509_NAME_oneline(X509_get_subject_name(cert), subject, sizeof subject);
  return subject;
}

asio::awaitable<void> ClientStream::Shutdown() {
  if (tls_ && socket_.is_open()) {
    asio::steady_timer give_up(socket_.get_executor(), kCloseNotifyWait);
    // An expiry in the same pass as the client's close_notify is already
    // queued when Shutdown returns, and the stream may be gone by the time
    // it runs.
    give_up.async_wait([this, alive = lifetime_.Watch()](asio::error_code ec) {
      if (!ec && !alive.expired()) Close();
    });
    co_await tls_->async_shutdown(kAsTuple);
    give_up.cancel();
  }
  asio::error_code ignored;
  socket_.shutdown(Socket::shutdown_both, ignored);
  Close();
}

void ClientStream::Close() {
  asio::error_code ignored;
  socket_.close(ignored);
}

}  // namespace dst::server
