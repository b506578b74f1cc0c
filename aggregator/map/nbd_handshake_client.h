// The client side of the NBD fixed-newstyle handshake, for `dst-aggregator map`: on a connected
// socket, asks for one export with NBD_OPT_GO and stops at the start of the transmission phase,
// so that the socket can be handed to the kernel's NBD driver, which speaks only the transmission
// phase (simple replies: no structured replies are negotiated).
//
// Threading: blocking, on the calling thread; every read waits at most until the deadline.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include "common/status.h"

namespace dst::aggregator::map {

struct ExportInfo {
  uint64_t size = 0;
  uint16_t flags = 0;  // transmission flags (nbd::kFlag*)
};

// Errors: ENOENT "unknown volume 'NAME'" for NBD_REP_ERR_UNKNOWN; EPROTONOSUPPORT for a server
// that requires TLS (the kernel cannot do TLS) or does not know NBD_OPT_GO; ETIMEDOUT when the
// server stops answering for `timeout`; EPROTO for anything that is not the protocol. `where`
// names the server in the messages ("127.0.0.1:10809").
Status NegotiateExport(int fd, const std::string& name, const std::string& where,
                       std::chrono::milliseconds timeout, ExportInfo* out);

}  // namespace dst::aggregator::map
