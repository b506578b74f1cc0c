#include "aggregator/cluster/http_client.h"

#include <openssl/ssl.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <memory>
#include <tuple>

#include <asio/experimental/as_tuple.hpp>

#include "common/duration.h"

namespace dst::cluster {
namespace {

constexpr auto kAsTuple = asio::experimental::as_tuple(asio::use_awaitable);
// A chunk-size line or a trailer line longer than this is not from an HTTP server.
constexpr size_t kMaxLineBytes = 4096;

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t'))
    s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r'))
    s.remove_suffix(1);
  return s;
}

std::string Lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

void AddHeader(std::map<std::string, std::string>* headers, std::string_view name,
               std::string_view value) {
  std::string& slot = (*headers)[Lower(name)];
  slot += (slot.empty() ? "" : ", ") + std::string(value);
}

}  // namespace

Status HttpResponseParser::Error(std::string why) {
  failed_ = true;
  return Status::Error(EPROTO, "bad HTTP response: " + why);
}

Status HttpResponseParser::Feed(std::string_view bytes) {
  if (failed_) return Error("already failed");
  if (state_ == State::kDone) return Status::Ok();
  buffer_.append(bytes);
  for (bool progressed = true; progressed && state_ != State::kDone;) {
    progressed = false;
    DST_RETURN_IF_ERROR(Step(&progressed));
  }
  return Status::Ok();
}

Status HttpResponseParser::Finish() {
  if (failed_) return Error("already failed");
  if (state_ == State::kUntilClose) state_ = State::kDone;
  if (state_ == State::kDone) return Status::Ok();
  failed_ = true;
  return Status::Error(ECONNRESET, "the connection closed before the response was complete");
}

Status HttpResponseParser::ParseHead(std::string_view head) {
  const size_t line_end = head.find("\r\n");
  const std::string_view status_line = head.substr(0, line_end);
  // "HTTP/1.1 200 OK"
  if (!status_line.starts_with("HTTP/1.") || status_line.size() < 12 || status_line[8] != ' ')
    return Error("status line \"" + std::string(status_line.substr(0, 80)) + "\"");
  const std::string_view code = status_line.substr(9, 3);
  int status = 0;
  const auto [end, ec] = std::from_chars(code.data(), code.data() + code.size(), status);
  if (ec != std::errc() || end != code.data() + 3 || status < 100 || status > 599 ||
      (status_line.size() > 12 && status_line[12] != ' '))
    return Error("status line \"" + std::string(status_line.substr(0, 80)) + "\"");
  response_.status = status;
  response_.reason =
      std::string(Trim(status_line.substr(std::min<size_t>(13, status_line.size()))));
  std::string_view rest = line_end == std::string_view::npos ? "" : head.substr(line_end + 2);
  while (!rest.empty()) {
    const size_t eol = rest.find("\r\n");
    const std::string_view line = rest.substr(0, eol);
    rest = eol == std::string_view::npos ? "" : rest.substr(eol + 2);
    const size_t colon = line.find(':');
    if (colon == std::string_view::npos || colon == 0)
      return Error("header line \"" + std::string(line.substr(0, 80)) + "\"");
    AddHeader(&response_.headers, line.substr(0, colon), Trim(line.substr(colon + 1)));
  }
  return Status::Ok();
}

Status HttpResponseParser::Step(bool* progressed) {
  switch (state_) {
    case State::kHeaders: {
      const size_t end = buffer_.find("\r\n\r\n");
      if (end == std::string::npos) {
        if (buffer_.size() > kMaxHeaderBytes)
          return Error("headers longer than " + std::to_string(kMaxHeaderBytes >> 10) + " KiB");
        return Status::Ok();
      }
      response_ = HttpResponse();
      DST_RETURN_IF_ERROR(ParseHead(std::string_view(buffer_).substr(0, end)));
      buffer_.erase(0, end + 4);
      *progressed = true;
      if (response_.status < 200) return Status::Ok();  // 100 Continue: the real one follows
      const auto& h = response_.headers;
      if (auto te = h.find("transfer-encoding"); te != h.end()) {
        if (Lower(te->second).find("chunked") == std::string::npos)
          return Error("transfer coding \"" + te->second + "\"");
        state_ = State::kChunkSize;
      } else if (auto cl = h.find("content-length"); cl != h.end()) {
        const std::string& text = cl->second;
        size_t length = 0;
        const auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), length);
        if (text.empty() || ec != std::errc() || p != text.data() + text.size())
          return Error("Content-Length \"" + text + "\"");
        if (length > kMaxBodyBytes)
          return Status::Error(EMSGSIZE, "bad HTTP response: a body of " + text +
                                             " bytes, more than " +
                                             std::to_string(kMaxBodyBytes >> 20) + " MiB");
        remaining_ = length;
        state_ = length ? State::kBody : State::kDone;
      } else if (response_.status == 204 || response_.status == 304) {
        state_ = State::kDone;
      } else {
        state_ = State::kUntilClose;
      }
      return Status::Ok();
    }
    case State::kBody:
    case State::kChunkData: {
      const size_t n = std::min(remaining_, buffer_.size());
      if (n == 0) return Status::Ok();
      response_.body.append(buffer_, 0, n);
      buffer_.erase(0, n);
      remaining_ -= n;
      *progressed = true;
      if (remaining_ == 0) state_ = state_ == State::kBody ? State::kDone : State::kChunkDataEnd;
      return Status::Ok();
    }
    case State::kChunkSize: {
      const size_t eol = buffer_.find("\r\n");
      if (eol == std::string::npos) {
        if (buffer_.size() > kMaxLineBytes) return Error("a chunk-size line without end");
        return Status::Ok();
      }
      // "1a3;extension=x": the extensions mean nothing to us.
      const std::string_view line =
          Trim(std::string_view(buffer_).substr(0, buffer_.find_first_of(";\r")));
      size_t size = 0;
      const auto [p, ec] = std::from_chars(line.data(), line.data() + line.size(), size, 16);
      if (line.empty() || ec != std::errc() || p != line.data() + line.size())
        return Error("chunk size \"" + std::string(line.substr(0, 40)) + "\"");
      if (size > kMaxBodyBytes - response_.body.size())
        return Status::Error(EMSGSIZE, "bad HTTP response: a chunked body of more than " +
                                           std::to_string(kMaxBodyBytes >> 20) + " MiB");
      buffer_.erase(0, eol + 2);
      remaining_ = size;
      state_ = size ? State::kChunkData : State::kTrailers;
      *progressed = true;
      return Status::Ok();
    }
    case State::kChunkDataEnd:
      if (buffer_.size() < 2) return Status::Ok();
      if (buffer_.compare(0, 2, "\r\n") != 0) return Error("a chunk longer than its size");
      buffer_.erase(0, 2);
      state_ = State::kChunkSize;
      *progressed = true;
      return Status::Ok();
    case State::kTrailers: {
      const size_t eol = buffer_.find("\r\n");
      if (eol == std::string::npos) {
        if (buffer_.size() > kMaxLineBytes) return Error("a trailer line without end");
        return Status::Ok();
      }
      const std::string_view line = std::string_view(buffer_).substr(0, eol);
      if (!line.empty()) {
        const size_t colon = line.find(':');
        if (colon == std::string_view::npos || colon == 0)
          return Error("trailer line \"" + std::string(line.substr(0, 80)) + "\"");
        AddHeader(&response_.headers, line.substr(0, colon), Trim(line.substr(colon + 1)));
      }
      buffer_.erase(0, eol + 2);
      if (line.empty()) state_ = State::kDone;
      *progressed = true;
      return Status::Ok();
    }
    case State::kUntilClose:
      if (buffer_.empty()) return Status::Ok();
      if (response_.body.size() + buffer_.size() > kMaxBodyBytes)
        return Status::Error(EMSGSIZE, "bad HTTP response: a body of more than " +
                                           std::to_string(kMaxBodyBytes >> 20) + " MiB");
      response_.body += buffer_;
      buffer_.clear();
      return Status::Ok();
    case State::kDone:
      return Status::Ok();
  }
  return Status::Ok();
}

namespace {

// The stream for a plain connection still needs a context to be constructed with; it is
// never used for a handshake.
asio::ssl::context& PlainContext() {
  static asio::ssl::context context(asio::ssl::context::tls_client);
  return context;
}

// Shared with the deadline's handler, which may run after the exchange has returned.
struct Connection {
  Connection(const asio::any_io_executor& executor, asio::ssl::context& context, bool tls)
      : resolver(executor), stream(executor, context), tls(tls) {}

  void Close() {
    resolver.cancel();
    asio::error_code ignored;
    stream.lowest_layer().close(ignored);
  }

  asio::awaitable<std::tuple<asio::error_code, size_t>> ReadSome(asio::mutable_buffer buffer) {
    if (tls) co_return co_await stream.async_read_some(buffer, kAsTuple);
    co_return co_await stream.next_layer().async_read_some(buffer, kAsTuple);
  }
  asio::awaitable<std::tuple<asio::error_code, size_t>> Write(asio::const_buffer buffer) {
    if (tls) co_return co_await asio::async_write(stream, buffer, kAsTuple);
    co_return co_await asio::async_write(stream.next_layer(), buffer, kAsTuple);
  }

  asio::ip::tcp::resolver resolver;
  asio::ssl::stream<asio::ip::tcp::socket> stream;
  bool tls;
  bool timed_out = false;
};

const char* PhaseName(HttpPhase phase) {
  switch (phase) {
    case HttpPhase::kConnect:
      return "connecting";
    case HttpPhase::kSend:
      return "sending the request";
    case HttpPhase::kReceive:
    case HttpPhase::kDone:
      return "waiting for the response";
  }
  return "";
}

// An Asio error as errno and message; TLS errors (another category) are EPROTO.
Status FromAsio(const asio::error_code& ec, std::string_view context) {
  if (ec == asio::error::eof)
    return Status::Error(ECONNRESET, "the connection closed before the response was complete");
  const bool system = ec.category() == asio::error::get_system_category();
  return Status::Error(system && ec.value() ? ec.value() : EPROTO,
                       std::string(context) + ": " + ec.message());
}

std::string RequestText(const HttpRequest& request, const std::string& host, uint16_t port) {
  const bool v6 = host.find(':') != std::string::npos;
  std::string text = request.method + " " + request.target + " HTTP/1.1\r\n";
  text += "Host: " + (v6 ? "[" + host + "]" : host) + ":" + std::to_string(port) + "\r\n";
  if (request.method != "GET" || !request.body.empty()) {
    text += "Content-Type: " + request.content_type + "\r\n";
    text += "Content-Length: " + std::to_string(request.body.size()) + "\r\n";
  }
  text += "Accept: application/json\r\nConnection: close\r\n\r\n";
  text += request.body;
  return text;
}

bool IsIpAddress(const std::string& host) {
  asio::error_code ec;
  asio::ip::make_address(host, ec);
  return !ec;
}

asio::awaitable<Status> Exchange(Connection& c, const std::string& host, uint16_t port,
                                 const HttpRequest& request, HttpResponse* response,
                                 HttpPhase* phase) {
  *phase = HttpPhase::kConnect;
  auto [resolve_ec, endpoints] =
      co_await c.resolver.async_resolve(host, std::to_string(port), kAsTuple);
  if (resolve_ec) co_return FromAsio(resolve_ec, "resolve " + host);
  auto [connect_ec, connected] = co_await asio::async_connect(
      c.stream.lowest_layer(), endpoints,
      // A name may resolve to several addresses: past the deadline, none is tried (the
      // deadline closed the socket, and connect would open it again for the next one).
      [&c](const asio::error_code&, const asio::ip::tcp::endpoint&) { return !c.timed_out; },
      kAsTuple);
  (void)connected;
  if (connect_ec) co_return FromAsio(connect_ec, "connect");
  if (c.tls) {
    // SNI only for names (RFC 6066); the certificate is checked against names and addresses.
    if (!IsIpAddress(host)) SSL_set_tlsext_host_name(c.stream.native_handle(), host.c_str());
    c.stream.set_verify_callback(asio::ssl::host_name_verification(host));
    auto [handshake_ec] =
        co_await c.stream.async_handshake(asio::ssl::stream_base::client, kAsTuple);
    if (handshake_ec) co_return FromAsio(handshake_ec, "TLS handshake");
  }

  *phase = HttpPhase::kSend;
  const std::string text = RequestText(request, host, port);
  auto [write_ec, written] = co_await c.Write(asio::buffer(text));
  (void)written;
  if (write_ec) co_return FromAsio(write_ec, "send");

  *phase = HttpPhase::kReceive;
  HttpResponseParser parser;
  char chunk[16384];
  bool received = false;
  while (!parser.complete()) {
    auto [read_ec, n] = co_await c.ReadSome(asio::buffer(chunk));
    received = received || n > 0;
    if (n) DST_CO_RETURN_IF_ERROR(parser.Feed(std::string_view(chunk, n)));
    // With TLS 1.3 the server judges our certificate after the client's side of the handshake
    // is done: its refusal arrives as an alert instead of the answer. It never saw the request.
    if (c.tls && !received && read_ec.category() == asio::error::get_ssl_category()) {
      *phase = HttpPhase::kConnect;
      co_return FromAsio(read_ec, "TLS handshake");
    }
    if (read_ec == asio::error::eof || read_ec == asio::ssl::error::stream_truncated) {
      DST_CO_RETURN_IF_ERROR(parser.Finish());
      break;
    }
    if (read_ec) co_return FromAsio(read_ec, "receive");
  }
  *response = std::move(parser.response());
  *phase = HttpPhase::kDone;
  co_return Status::Ok();
}

}  // namespace

asio::awaitable<Status> HttpExchange(std::string host, uint16_t port, HttpTls tls,
                                     HttpRequest request, std::chrono::milliseconds timeout,
                                     HttpResponse* response, HttpPhase* phase) {
  const asio::any_io_executor executor = co_await asio::this_coro::executor;
  auto connection = std::make_shared<Connection>(
      executor, tls.context ? *tls.context : PlainContext(), tls.context != nullptr);
  asio::steady_timer deadline(executor, timeout);
  deadline.async_wait([connection](const asio::error_code& ec) {
    if (ec) return;
    connection->timed_out = true;
    connection->Close();
  });
  Status status = co_await Exchange(*connection, host, port, request, response, phase);
  deadline.cancel();
  if (connection->timed_out && *phase != HttpPhase::kDone)
    status = Status::Error(
        ETIMEDOUT, "timed out after " + FormatDuration(timeout) + " (" + PhaseName(*phase) + ")");
  connection->Close();
  co_return status;
}

}  // namespace dst::cluster
