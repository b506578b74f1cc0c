// The socket type of client connections, TCP or Unix alike, and the
// conversion of Asio errors into Status instead of exceptions (errors on
// client sockets are expected, not exceptional). Reading and writing go
// through ClientStream (client_stream.h), which adds buffering and TLS.
//
// Threading: used only on the event-loop thread that owns the socket.
#pragma once

#include <asio.hpp>
#include <asio/experimental/as_tuple.hpp>

#include "common/status.h"

namespace dst::server {

using Socket = asio::generic::stream_protocol::socket;
inline constexpr auto kAsTuple = asio::experimental::as_tuple(asio::use_awaitable);

// TLS errors (another error category) become EIO with OpenSSL's message.
inline Status FromAsio(const asio::error_code& ec, const char* context) {
  if (ec == asio::error::eof)
    return Status::Error(ECONNRESET, std::string(context) + ": client closed the connection");
  const bool system = ec.category() == asio::error::get_system_category();
  return Status::Error(system && ec.value() ? ec.value() : EIO,
                       std::string(context) + ": " + ec.message());
}

}  // namespace dst::server
