// ClientStream: a client connection's byte stream, plain or TLS after
// NBD_OPT_STARTTLS, with a receive buffer.
//
// The buffer lets one receive carry several small messages (option headers,
// request headers), so a client pipelining requests costs one read per
// batch, not one per header; large payloads bypass it and land straight in
// the caller's memory.
//
// One reader and one writer coroutine may use a stream at the same time (the
// TLS layer supports one read and one write in flight). Everything runs on
// the connection's event loop.
#pragma once

#include <asio/ssl.hpp>
#include <memory>
#include <tuple>
#include <vector>

#include "aggregator/server/socket.h"
#include "common/lifetime.h"

namespace dst::server {

class ClientStream {
 public:
  explicit ClientStream(Socket socket);

  asio::any_io_executor get_executor() { return socket_.get_executor(); }
  bool tls() const { return tls_ != nullptr; }
  // Bytes received and not yet consumed.
  size_t buffered() const { return end_ - begin_; }

  // Waits until at least one byte is buffered.
  asio::awaitable<Status> WaitForData(const char* context);
  // Copies `size` bytes out of the buffer if they are all there, without
  // suspending; false (and nothing consumed) if not.
  bool TakeBuffered(void* data, size_t size);
  // Reads exactly `size` bytes.
  asio::awaitable<Status> ReadExact(void* data, size_t size, const char* context);
  // Reads and drops `size` bytes, to stay in step with a client after
  // refusing a request whose payload we do not want.
  asio::awaitable<Status> Discard(uint64_t size, const char* context);
  // Writes every buffer of the sequence.
  template <typename Buffers>
  asio::awaitable<Status> WriteAll(const Buffers& buffers, const char* context);

  // The server side of a TLS handshake; from then on everything goes through
  // TLS. Anything already buffered was sent in plain text after STARTTLS and
  // before the handshake: refused, so that nobody can inject it (EPROTO).
  asio::awaitable<Status> StartTls(asio::ssl::context& context);
  // The PSK identity or the client certificate's subject; "" if none.
  std::string PeerIdentity() const;

  // Ends the connection the way the protocol asks (a TLS close_notify first,
  // waited for at most a second, then the socket closed).
  asio::awaitable<void> Shutdown();
  // Closes at once: pending reads and writes fail. For timeouts and errors.
  void Close();

 private:
  asio::awaitable<std::tuple<asio::error_code, size_t>> ReadSome(asio::mutable_buffer buffer);

  Socket socket_;
  std::unique_ptr<asio::ssl::stream<Socket&>> tls_;
  std::vector<uint8_t> buffer_;
  size_t begin_ = 0, end_ = 0;  // the unread part of buffer_
  Lifetime lifetime_;           // for the close_notify timer, which may outlive the stream
};

template <typename Buffers>
asio::awaitable<Status> ClientStream::WriteAll(const Buffers& buffers, const char* context) {
  if (tls_) {
    auto [ec, n] = co_await asio::async_write(*tls_, buffers, kAsTuple);
    if (ec) co_return FromAsio(ec, context);
    co_return Status::Ok();
  }
  // A plain socket usually takes everything at once: writing without waiting
  // first queues no operation and posts no completion (one trip round the
  // event loop less per batch of replies). Only what it did not take waits.
  asio::error_code ec;
  const size_t total = asio::buffer_size(buffers);
  const size_t sent = socket_.write_some(buffers, ec);  // the socket is non-blocking
  if (ec && ec != asio::error::would_block) co_return FromAsio(ec, context);
  if (sent == total) co_return Status::Ok();
  std::vector<asio::const_buffer> rest;
  size_t skip = sent;
  for (auto it = asio::buffer_sequence_begin(buffers); it != asio::buffer_sequence_end(buffers);
       ++it) {
    asio::const_buffer b(*it);
    if (skip >= b.size()) {
      skip -= b.size();
      continue;
    }
    rest.push_back(b + skip);
    skip = 0;
  }
  std::tie(ec, std::ignore) = co_await asio::async_write(socket_, rest, kAsTuple);
  if (ec) co_return FromAsio(ec, context);
  co_return Status::Ok();
}

}  // namespace dst::server
