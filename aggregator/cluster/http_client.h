// A minimal HTTP/1.1 client for etcd's v3 JSON gateway (docs/cluster.md): one request per
// connection ("Connection: close"), over TCP or TLS, with the response body framed by
// Content-Length, by chunked transfer coding (the gateway streams /v3/lease/keepalive and its
// errors that way, with trailers) or by the end of the connection.
//
// Contract:
// - HttpExchange connects, sends one request and reads one complete response, all within one
//   deadline; when it passes, the socket is closed and the result is ETIMEDOUT.
// - Failures come back as one Status each, without the peer's name (the caller adds it):
//   "connect: Connection refused", "timed out after 2 s (waiting for the response)",
//   "the connection closed before the response was complete", "bad HTTP response: ...".
//   A non-2xx response is not a failure here: the caller reads etcd's error from the body.
// - `phase` tells how far the exchange got, so that a caller knows whether the peer may have
//   acted on the request (kConnect: it cannot have).
// - Responses are bounded (kMaxHeaderBytes, kMaxBodyBytes): whatever sends more is not etcd.
//
// Threading: HttpExchange runs on the caller's executor; the parser is a plain value.
#pragma once

#include <chrono>
#include <cstddef>
#include <map>
#include <string>
#include <string_view>

#include <asio.hpp>
#include <asio/ssl.hpp>

#include "common/status.h"

namespace dst::cluster {

inline constexpr size_t kMaxHeaderBytes = 64u << 10;
inline constexpr size_t kMaxBodyBytes = 64u << 20;

struct HttpRequest {
  std::string method = "POST";
  std::string target;  // "/v3/kv/range"
  std::string body;
  std::string content_type = "application/json";
};

struct HttpResponse {
  int status = 0;  // 200
  std::string reason;
  std::map<std::string, std::string> headers;  // names lower-cased; trailers included
  std::string body;                            // de-chunked
};

// Reads a response from the bytes as they come. Pure; unit-tested on its own.
class HttpResponseParser {
 public:
  // Consumes bytes; an error is final. Bytes after a complete response are ignored.
  Status Feed(std::string_view bytes);
  // The connection ended: completes a body framed by the end of the connection, else an error
  // unless the response is already complete.
  Status Finish();
  bool complete() const { return state_ == State::kDone; }
  HttpResponse& response() { return response_; }

 private:
  enum class State {
    kHeaders,
    kBody,
    kChunkSize,
    kChunkData,
    kChunkDataEnd,
    kTrailers,
    kUntilClose,
    kDone
  };

  Status ParseHead(std::string_view head);
  Status Step(bool* progressed);
  Status Error(std::string why);

  State state_ = State::kHeaders;
  std::string buffer_;    // bytes not yet consumed
  size_t remaining_ = 0;  // of the body (kBody) or of the chunk (kChunkData)
  HttpResponse response_;
  bool failed_ = false;
};

enum class HttpPhase {
  kConnect,  // resolving, connecting, TLS handshake (also a server refusing our certificate
             // with its first word): nothing was processed
  kSend,     // the request may be partly sent
  kReceive,  // the request was sent
  kDone,
};

// TLS for the exchange: the context, with the verification mode and files set up by the caller.
// The exchange sends `host` as the server name (SNI; not for addresses) and checks the server's
// certificate against it, name or address.
struct HttpTls {
  asio::ssl::context* context = nullptr;  // nullptr: plain TCP
};

// One request to host:port and its response, within `timeout`.
asio::awaitable<Status> HttpExchange(std::string host, uint16_t port, HttpTls tls,
                                     HttpRequest request, std::chrono::milliseconds timeout,
                                     HttpResponse* response, HttpPhase* phase);

}  // namespace dst::cluster
