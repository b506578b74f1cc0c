#include "aggregator/cluster/http_client.h"

#include <doctest/doctest.h>

#include "aggregator/cluster/etcd_client.h"  // RunEtcdCall
#include "aggregator/cluster/scripted_peer.h"

namespace dst::cluster::http_client_test {
namespace {

using namespace std::chrono_literals;

// Feeds `text` to a parser in pieces of `step` bytes.
Status FeedInSteps(HttpResponseParser* parser, std::string_view text, size_t step) {
  for (size_t i = 0; i < text.size(); i += step)
    DST_RETURN_IF_ERROR(parser->Feed(text.substr(i, step)));
  return Status::Ok();
}

TEST_CASE("HttpResponseParser reads a body framed by Content-Length") {
  HttpResponseParser parser;
  REQUIRE(
      parser
          .Feed("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 5\r\n\r\nhel")
          .ok());
  CHECK_FALSE(parser.complete());
  REQUIRE(parser.Feed("loEXTRA").ok());
  REQUIRE(parser.complete());
  CHECK(parser.response().status == 200);
  CHECK(parser.response().reason == "OK");
  CHECK(parser.response().headers.at("content-type") == "application/json");
  CHECK(parser.response().body == "hello");
}

TEST_CASE("HttpResponseParser reads a chunked body with extensions and trailers, byte by byte") {
  // As etcd's gateway answers a failed /v3/lease/revoke.
  const std::string text =
      "HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\nTrailer: "
      "Grpc-Trailer-Content-Type\r\n\r\n"
      "6;name=value\r\n{\"a\":1\r\n1\r\n}\r\n0\r\nGrpc-Trailer-Content-Type: "
      "application/grpc\r\n\r\n";
  HttpResponseParser parser;
  REQUIRE(FeedInSteps(&parser, text, 1).ok());
  REQUIRE(parser.complete());
  CHECK(parser.response().status == 404);
  CHECK(parser.response().reason == "Not Found");
  CHECK(parser.response().body == "{\"a\":1}");
  CHECK(parser.response().headers.at("grpc-trailer-content-type") == "application/grpc");
}

TEST_CASE("HttpResponseParser reads a body framed by the end of the connection") {
  HttpResponseParser parser;
  REQUIRE(parser.Feed("HTTP/1.0 200 OK\r\n\r\nall of it").ok());
  CHECK_FALSE(parser.complete());
  REQUIRE(parser.Finish().ok());
  CHECK(parser.complete());
  CHECK(parser.response().body == "all of it");
}

TEST_CASE("HttpResponseParser skips an interim 100 Continue") {
  HttpResponseParser parser;
  REQUIRE(
      parser
          .Feed("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok")
          .ok());
  REQUIRE(parser.complete());
  CHECK(parser.response().status == 201);
  CHECK(parser.response().body == "ok");
}

TEST_CASE("HttpResponseParser refuses what is not an HTTP/1.x response") {
  auto error = [](std::string_view text) {
    HttpResponseParser parser;
    const Status s = parser.Feed(text);
    REQUIRE_FALSE(s.ok());
    return s;
  };
  CHECK(error("SSH-2.0-OpenSSH\r\n\r\n").message() ==
        "bad HTTP response: status line \"SSH-2.0-OpenSSH\"");
  CHECK(error("HTTP/1.1 2x0 OK\r\n\r\n").err() == EPROTO);
  CHECK(error("HTTP/1.1 200 OK\r\nno colon\r\n\r\n").message() ==
        "bad HTTP response: header line \"no colon\"");
  CHECK(error("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n").message() ==
        "bad HTTP response: Content-Length \"-1\"");
  CHECK(error("HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n").err() == EMSGSIZE);
  CHECK(error("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n").message() ==
        "bad HTTP response: chunk size \"zz\"");
  CHECK(error("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n").message() ==
        "bad HTTP response: a chunk longer than its size");
  CHECK(error("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n").message() ==
        "bad HTTP response: transfer coding \"gzip\"");
  CHECK(error(std::string(kMaxHeaderBytes + 1, 'x')).message().find("headers longer than") !=
        std::string::npos);
}

TEST_CASE("HttpResponseParser reports a response cut short") {
  HttpResponseParser parser;
  REQUIRE(parser.Feed("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort").ok());
  const Status s = parser.Finish();
  CHECK(s.err() == ECONNRESET);
  CHECK(s.message() == "the connection closed before the response was complete");
}

struct Outcome {
  Status status;
  HttpResponse response;
  HttpPhase phase = HttpPhase::kConnect;
  std::chrono::milliseconds took{0};
};

Outcome Exchange(asio::io_context& io, uint16_t port, std::chrono::milliseconds timeout) {
  Outcome out;
  HttpRequest request;
  request.target = "/v3/kv/range";
  request.body = "{}";
  const auto start = std::chrono::steady_clock::now();
  out.status = RunEtcdCall(
      io, HttpExchange("127.0.0.1", port, HttpTls{}, request, timeout, &out.response, &out.phase));
  out.took = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now() - start);
  return out;
}

TEST_CASE("HttpExchange posts the request and reads a chunked answer written in pieces") {
  asio::io_context io;
  ScriptedPeer peer(io);
  peer.Start(ScriptedPeer::Then::kAnswer,
             {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", "3\r\n{\"r",
              "\r\n5\r\nesult\r\n", "3\r\n\":1\r\n1\r\n}\r\n0\r\n\r\n"});
  const Outcome out = Exchange(io, peer.port(), 5s);
  INFO(out.status.ToString());
  REQUIRE(out.status.ok());
  CHECK(out.phase == HttpPhase::kDone);
  CHECK(out.response.body == "{\"result\":1}");
  CHECK(peer.request().starts_with("POST /v3/kv/range HTTP/1.1\r\n"));
  CHECK(peer.request().find("\r\nHost: 127.0.0.1:" + std::to_string(peer.port()) + "\r\n") !=
        std::string::npos);
  CHECK(peer.request().find("\r\nContent-Length: 2\r\n") != std::string::npos);
  CHECK(peer.request().ends_with("\r\n\r\n{}"));
}

TEST_CASE("HttpExchange gives up on a silent peer at its deadline") {
  asio::io_context io;
  ScriptedPeer peer(io);
  peer.Start(ScriptedPeer::Then::kSilence, {});
  const Outcome out = Exchange(io, peer.port(), 200ms);
  CHECK(out.status.err() == ETIMEDOUT);
  CHECK(out.status.message() == "timed out after 200 ms (waiting for the response)");
  CHECK(out.phase == HttpPhase::kReceive);
  CHECK(out.took >= 200ms);
  CHECK(out.took < 2s);
  peer.Stop();
  io.run();
}

TEST_CASE("HttpExchange reports a refused connection as such, before anything was sent") {
  asio::io_context io;
  uint16_t port;
  {
    ScriptedPeer closed(io);  // a port that was free a moment ago, and nobody listens on
    port = closed.port();
  }
  const Outcome out = Exchange(io, port, 2s);
  CHECK(out.status.err() == ECONNREFUSED);
  CHECK(out.status.message() == "connect: Connection refused");
  CHECK(out.phase == HttpPhase::kConnect);
}

TEST_CASE("HttpExchange reports an answer cut short") {
  asio::io_context io;
  ScriptedPeer peer(io);
  peer.Start(ScriptedPeer::Then::kAnswer,
             {"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"partial"});
  const Outcome out = Exchange(io, peer.port(), 5s);
  CHECK(out.status.err() == ECONNRESET);
  CHECK(out.status.message() == "the connection closed before the response was complete");
  CHECK(out.phase == HttpPhase::kReceive);
}

}  // namespace
}  // namespace dst::cluster::http_client_test
