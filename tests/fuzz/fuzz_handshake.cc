// libFuzzer target: the NBD handshake, server side. Byte 0 of the input
// chooses the server's TLS mode (bits 0-1: 1 on, 2 require, otherwise off);
// the rest is everything a client sends from its first byte (client flags,
// then options). The server's Negotiate runs on it over a socketpair until
// it chooses an export or gives up.
//
// Besides crashes, sanitizer reports and hangs, it fails when the replies
// are malformed (wire_check.h) or the outcome is inconsistent: an export
// chosen that is not the server's, a meta context without structured
// replies, an EXPORT_NAME reply of the wrong size, or, with TLS required,
// anything but a refusal in plain text (no input can complete a TLS
// handshake, so with TLS required no input may get anywhere).

#include <cstddef>
#include <cstdint>
#include <exception>
#include <optional>
#include <vector>

#include "common/log.h"
#include "common/nbd_protocol.h"
#include "tests/fuzz/fuzz_driver.h"
#include "tests/fuzz/wire_check.h"

namespace dst::fuzz {
namespace {

using namespace dst::nbd;

void CheckOutcome(const Status& status, const server::Negotiated& negotiated,
                  const ServerState& state) {
  if (!status.ok()) return;
  Check(negotiated.exported.volume == &state.main || negotiated.exported.volume == &state.read_only,
        "handshake succeeded without one of the server's exports");
  Check(negotiated.exported.size == negotiated.exported.device().size(),
        "the export's copied size is not its size");
  Check(negotiated.transmission_flags & kFlagHasFlags, "transmission flags without HAS_FLAGS");
  Check(!negotiated.base_allocation || negotiated.structured_replies,
        "base:allocation selected without structured replies");
}

server::TlsMode TlsModeFrom(uint8_t bits) {
  switch (bits & 3) {
    case 1:
      return server::TlsMode::kOn;
    case 2:
      return server::TlsMode::kRequire;
  }
  return server::TlsMode::kOff;
}

void CheckTlsRequired(const Status& status, const std::vector<OptionReply>& replies) {
  Check(!status.ok(), "an export chosen without TLS although TLS is required");
  for (const OptionReply& r : replies) {
    const bool ack = r.type == kRepAck && (r.option == kOptStartTls || r.option == kOptAbort);
    Check(ack || IsOptionReplyError(r.type), "a plain-text answer although TLS is required");
  }
}

// After the option replies: nothing, TLS records after an acknowledged
// NBD_OPT_STARTTLS, or the reply to a successful NBD_OPT_EXPORT_NAME (size,
// flags, and 124 zeros unless NO_ZEROES).
void CheckTail(std::span<const uint8_t> tail, const std::vector<OptionReply>& replies,
               const Status& status, const server::Negotiated& negotiated) {
  if (tail.empty()) return;
  if (!replies.empty() && replies.back().option == kOptStartTls && replies.back().type == kRepAck)
    return;
  Check(status.ok(), "bytes after the option replies of a failed handshake");
  Check(tail.size() == 10 || tail.size() == 10 + kExportNameZeroPadding,
        "export name reply of the wrong size");
  Check(LoadBE64(tail.data()) == negotiated.exported.volume->size(),
        "export name reply with the wrong export size");
}

void RunOne(std::span<const uint8_t> input) {
  const server::TlsMode mode = TlsModeFrom(input.empty() ? 0 : input[0]);
  const std::span<const uint8_t> client = input.subspan(input.empty() ? 0 : 1);
  asio::io_context io;
  ServerState state(io.get_executor());
  state.policy.tls = TlsFor(mode);
  server::Negotiated negotiated;
  std::optional<Status> result;
  const auto serve = [&](server::Socket socket) {
    asio::co_spawn(io, NegotiateOn(std::move(socket), state, &negotiated),
                   [&](std::exception_ptr e, Status status) {
                     if (e) std::rethrow_exception(e);  // uncaught: a crash, with this input
                     result = std::move(status);
                   });
  };
  const std::vector<uint8_t> output = RunSession(io, client, serve);
  Check(result.has_value(), "the handshake never finished");
  LOG_DEBUG("fuzz: handshake ended: %s", result->ToString().c_str());
  CheckOutcome(*result, negotiated, state);
  std::vector<OptionReply> replies;
  const size_t end = CheckOptionReplies(output, &replies);
  if (mode == server::TlsMode::kRequire) CheckTlsRequired(*result, replies);
  CheckTail(std::span(output).subspan(end), replies, *result, negotiated);
}

}  // namespace
}  // namespace dst::fuzz

extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) {
  dst::fuzz::QuietLogs();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  dst::fuzz::RunOne({data, size});
  return 0;
}
