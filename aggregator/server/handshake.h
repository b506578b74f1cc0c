// The fixed-newstyle NBD handshake, server side: greets the client, answers
// options (GO, INFO, EXPORT_NAME, LIST, ABORT, STRUCTURED_REPLY, LIST_ and
// SET_META_CONTEXT with base:allocation, STARTTLS; ERR_UNSUP for the rest)
// and ends when the client has chosen a volume or gone away.
//
// TLS (tls.h): with --tls=require the server is in the spec's FORCEDTLS mode
// (every option but STARTTLS and ABORT gets ERR_TLS_REQD until TLS is up, an
// EXPORT_NAME hangs up), so nothing about the volumes leaks in plain text;
// with --tls=on a client may upgrade whenever it likes. What was negotiated
// before STARTTLS is forgotten after it, as it could have been tampered with.
//
// Block sizes (NBD_INFO_BLOCK_SIZE, sent in every INFO and GO reply): a client
// that asks for them in its GO (or INFO) gets the volume's minimum block and
// must keep to it; a client that does not ask (GO without the request, or
// EXPORT_NAME: the kernel, old qemu) gets the spec's default minimum of 1,
// and the volume serves its unaligned requests by merging partial blocks.
//
// Every length from the client is checked before it is used; option count
// and sizes are bounded, so that a client cannot make the server buffer more
// than kMaxOptionLength at a time.
//
// Threading: a coroutine on the connection's event loop.
#pragma once

#include <cstdint>
#include <memory>

#include "aggregator/server/client_stream.h"
#include "aggregator/server/export_registry.h"
#include "aggregator/server/tls.h"

namespace dst::server {

// What the handshake agreed on, for the transmission phase.
struct Negotiated {
  // The registry's volume, or a snapshot export of it (VOLUME@POINT, read-only), as taken on the
  // home loop.
  ExportView exported;
  uint16_t transmission_flags = 0;
  bool structured_replies = false;
  bool base_allocation = false;  // meta context kBaseAllocationId selected
  bool tls = false;              // the options and transmission go through TLS
};

inline constexpr uint32_t kBaseAllocationId = 1;
// More options than this in one handshake is not a client, it is a loop.
inline constexpr int kMaxOptions = 1024;

// Returns OK with out->exported set when transmission should start; an error
// (logged by the caller) when the connection must be closed, including a
// client's NBD_OPT_ABORT (ESHUTDOWN). `tls` is nullptr when TLS is off.
// `home`: the loop the registry lives on, when it is not the stream's
// (event_loops.h); every look at the registry is made there.
asio::awaitable<Status> Negotiate(ClientStream& stream, const ExportRegistry& registry,
                                  ServerTls* tls, Negotiated* out, asio::any_io_executor home = {});

// The transmission flags of a volume with capabilities `caps` as this connection sees it.
uint16_t TransmissionFlags(const volume::VolumeCapabilities& caps, bool structured_replies);

}  // namespace dst::server
