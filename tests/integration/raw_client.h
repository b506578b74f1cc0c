// RawClient: an NBD client built on the socket API, for tests that send
// hand-made bytes (bad magics, oversized options, half requests, plain text
// where TLS is required). Bytes in, bytes out; nothing checked on its side
// beyond the framing it parses. Every wait is bounded by a receive timeout,
// so a server that stops answering fails the test rather than hanging it.
#pragma once

#include <chrono>
#include <cstdint>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/nbd_protocol.h"
#include "tests/harness/test_data.h"

namespace dst::test {

struct OptionReply {
  nbd::OptionReplyHeader header;
  Bytes data;
};

struct ExportInfo {
  uint64_t size = 0;
  uint16_t flags = 0;
  // From NBD_INFO_BLOCK_SIZE; 0 if the server sent none (or for EXPORT_NAME).
  uint32_t min_block = 0;
  uint32_t preferred_block = 0;
  uint32_t max_block = 0;
};

class RawClient {
 public:
  // Connects to a Unix socket.
  explicit RawClient(const std::string& socket_path,
                     std::chrono::seconds timeout = std::chrono::seconds(10));
  // Connects to 127.0.0.1:port.
  explicit RawClient(int port, std::chrono::seconds timeout = std::chrono::seconds(10));
  // Connects to 127.0.0.1:port from the loopback address `source` (e.g.
  // "127.0.0.2"), to look like another host.
  RawClient(int port, const std::string& source,
            std::chrono::seconds timeout = std::chrono::seconds(10));
  ~RawClient() { Close(); }
  RawClient(const RawClient&) = delete;
  RawClient& operator=(const RawClient&) = delete;

  void Close();
  // Closes with SO_LINGER {1, 0}: the kernel drops whatever is unsent or
  // unread and the server gets a reset instead of an orderly end of stream.
  void Reset();

  // Sends everything or throws (MSG_NOSIGNAL: a server that hung up is an
  // error here, not a SIGPIPE that kills the test).
  void Send(std::span<const uint8_t> data);
  // Sends everything, unless the server hangs up first (EPIPE, ECONNRESET):
  // false then. For messages a server may cut off before their end, such as
  // an over-long NBD_OPT_EXPORT_NAME it reads only the start of.
  bool SendUnlessClosed(std::span<const uint8_t> data);
  // Sends what the socket takes now without waiting; the number of bytes
  // taken (0 when its buffer is full). Throws if the server hung up.
  size_t TrySend(std::span<const uint8_t> data);
  // Bytes received and not read yet.
  size_t Available() const;
  // Reads exactly data.size() bytes; false if the server closed first.
  bool Recv(std::span<uint8_t> data);
  void RecvOrThrow(std::span<uint8_t> data);
  // True once the server has closed the connection (EOF or reset) and sent
  // nothing more; throws if it is still open after the receive timeout.
  bool ClosedByServer();

  // The server's greeting, then the client flags (fixed newstyle, no zeroes).
  void Greet();
  void SendOption(uint32_t option, std::span<const uint8_t> data, uint64_t magic = nbd::kIHaveOpt);
  OptionReply ReadOptionReply();
  // NBD_OPT_GO for `name`, asking for the information types in `requests`
  // (none: a client that never asks for block sizes); the export's size,
  // flags and block sizes, or throws with the error reply's name.
  ExportInfo Go(const std::string& name, std::vector<uint16_t> requests = {});
  // NBD_OPT_EXPORT_NAME, as the kernel's nbd-client and old clients do: the
  // export's size and flags, or throws if the server hangs up.
  ExportInfo ExportName(const std::string& name);

  void SendRequest(const nbd::RequestHeader& header, std::span<const uint8_t> payload = {});
  nbd::SimpleReply ReadSimpleReply();

 private:
  void SetTimeouts(std::chrono::seconds timeout);

  int fd_ = -1;
};

// An option as a client sends it: header (magic, option, length of data) and data.
Bytes OptionMessage(uint32_t option, std::span<const uint8_t> data,
                    uint64_t magic = nbd::kIHaveOpt);

// A request header with the request magic.
nbd::RequestHeader Request(uint16_t type, uint64_t offset, uint32_t length, uint64_t cookie,
                           uint16_t flags = 0);

}  // namespace dst::test
