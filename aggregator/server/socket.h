// The socket type of client connections, TCP or Unix alike, and small
// coroutine helpers that turn Asio errors into Status instead of exceptions
// (errors on client sockets are expected, not exceptional).
//
// Threading: used only on the event-loop thread that owns the socket.
#pragma once

#include <asio.hpp>
#include <asio/experimental/as_tuple.hpp>

#include "common/status.h"

namespace dst::server {

using Socket = asio::generic::stream_protocol::socket;
inline constexpr auto kAsTuple = asio::experimental::as_tuple(asio::use_awaitable);

inline Status FromAsio(const asio::error_code& ec, const char* context) {
  if (ec == asio::error::eof)
    return Status::Error(ECONNRESET, std::string(context) + ": client closed the connection");
  return Status::Error(ec.value() ? ec.value() : EIO, std::string(context) + ": " + ec.message());
}

// Reads exactly `size` bytes.
inline asio::awaitable<Status> ReadExact(Socket& socket, void* data, size_t size,
                                         const char* context) {
  auto [ec, n] = co_await asio::async_read(socket, asio::buffer(data, size), kAsTuple);
  if (ec) co_return FromAsio(ec, context);
  co_return Status::Ok();
}

// Writes every buffer of the sequence.
template <typename Buffers>
asio::awaitable<Status> WriteAll(Socket& socket, const Buffers& buffers, const char* context) {
  auto [ec, n] = co_await asio::async_write(socket, buffers, kAsTuple);
  if (ec) co_return FromAsio(ec, context);
  co_return Status::Ok();
}

// Reads and discards `size` bytes, to stay in sync with a client after
// refusing a request whose payload we do not want.
asio::awaitable<Status> Discard(Socket& socket, uint64_t size, const char* context);

}  // namespace dst::server
