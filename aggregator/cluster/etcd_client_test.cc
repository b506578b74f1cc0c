// EtcdClient's failover rules and answer decoding against scripted peers (the real etcd is in
// tests/integration/etcd_client_test.cc).
#include "aggregator/cluster/etcd_client.h"

#include <doctest/doctest.h>

#include "aggregator/cluster/scripted_peer.h"

namespace dst::cluster::etcd_client_test {
namespace {

using namespace std::chrono_literals;

std::string Answer(int status, const std::string& reason, const std::string& body) {
  return "HTTP/1.1 " + std::to_string(status) + " " + reason +
         "\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
         "\r\n\r\n" + body;
}

std::unique_ptr<EtcdClient> ClientFor(const std::vector<const ScriptedPeer*>& peers,
                                      std::chrono::milliseconds timeout = 2s) {
  EtcdClientOptions options;
  for (const ScriptedPeer* peer : peers)
    options.endpoints.push_back({"127.0.0.1", peer->port()});
  options.timeout = timeout;
  std::unique_ptr<EtcdClient> client;
  REQUIRE(EtcdClient::Create(std::move(options), &client).ok());
  return client;
}

// Lets the peers finish (a silent one, one nobody connected to).
void StopPeers(asio::io_context& io, std::initializer_list<ScriptedPeer*> peers) {
  for (ScriptedPeer* peer : peers)
    peer->Stop();
  io.restart();
  io.run_for(2s);
}

TEST_CASE("a read moves on from a member without a leader, and decodes the next one's answer") {
  asio::io_context io;
  ScriptedPeer leaderless(io), healthy(io);
  leaderless.Start(
      ScriptedPeer::Then::kAnswer,
      {Answer(503, "Service Unavailable",
              R"({"error":"etcdserver: no leader","message":"etcdserver: no leader","code":14})")});
  // {"key": "/dst/a", "value": "x\0y"}, as etcd 3.4 writes it.
  healthy.Start(
      ScriptedPeer::Then::kAnswer,
      {Answer(
          200, "OK",
          R"({"header":{"revision":"42"},"kvs":[{"key":"L2RzdC9h","create_revision":"7",)"
          R"("mod_revision":"40","version":"3","value":"eAB5","lease":"1234"}],"count":"1"})")});
  auto client = ClientFor({&leaderless, &healthy});
  std::optional<KeyValue> kv;
  int64_t revision = 0;
  const Status s = RunEtcdCall(io, client->Get("/dst/a", &kv, &revision));
  INFO(s.ToString());
  REQUIRE(s.ok());
  REQUIRE(kv);
  CHECK(kv->key == "/dst/a");
  CHECK(kv->value == std::string("x\0y", 3));
  CHECK(kv->create_revision == 7);
  CHECK(kv->mod_revision == 40);
  CHECK(kv->version == 3);
  CHECK(kv->lease == 1234);
  CHECK(revision == 42);
  CHECK(client->current_endpoint().port == healthy.port());
  CHECK(leaderless.request().starts_with("POST /v3/kv/range HTTP/1.1\r\n"));
  CHECK(healthy.request().ends_with(R"({"key":"L2RzdC9h"})"));
  StopPeers(io, {&leaderless, &healthy});
}

TEST_CASE("a write whose answer was lost is not repeated on the next endpoint") {
  asio::io_context io;
  ScriptedPeer silent(io), next(io);
  silent.Start(ScriptedPeer::Then::kSilence);
  next.Start(ScriptedPeer::Then::kAnswer, {Answer(200, "OK", R"({"header":{"revision":"2"}})")});
  auto client = ClientFor({&silent, &next}, 200ms);
  const Status s = RunEtcdCall(io, client->Put("/dst/a", "v"));
  CHECK(s.err() == ETIMEDOUT);
  CHECK(s.message() ==
        "etcd " + silent.endpoint() +
            ": put /dst/a: timed out after 200 ms (waiting for the response) (it may "
            "have taken effect)");
  CHECK(silent.request().ends_with(R"({"key":"L2RzdC9h","value":"dg=="})"));
  CHECK_FALSE(next.connected());
  StopPeers(io, {&silent, &next});
}

TEST_CASE("etcd's refusal of a write is its answer: errno from its code, not repeated") {
  asio::io_context io;
  ScriptedPeer refusing(io), next(io);
  refusing.Start(
      ScriptedPeer::Then::kAnswer,
      {Answer(
          400, "Bad Request",
          R"({"error":"etcdserver: key is not provided","message":"etcdserver: key is not provided","code":3})")});
  next.Start(ScriptedPeer::Then::kAnswer, {Answer(200, "OK", "{}")});
  auto client = ClientFor({&refusing, &next});
  const Status s = RunEtcdCall(io, client->Put("", "v"));
  CHECK(s.err() == EINVAL);
  CHECK(s.message() == "etcd " + refusing.endpoint() + ": put : etcdserver: key is not provided");
  CHECK_FALSE(next.connected());
  StopPeers(io, {&refusing, &next});
}

TEST_CASE("an answer that is not etcd's is reported as such") {
  asio::io_context io;
  ScriptedPeer web(io);
  web.Start(ScriptedPeer::Then::kAnswer, {Answer(200, "OK", "<html>hello</html>")});
  auto client = ClientFor({&web});
  std::optional<KeyValue> kv;
  Status s = RunEtcdCall(io, client->Get("/dst/a", &kv));
  CHECK(s.err() == EPROTO);
  CHECK(s.message() ==
        "etcd " + web.endpoint() +
            ": get /dst/a: unexpected answer: not a JSON object: \"<html>hello</html>\"");

  ScriptedPeer proxy(io);
  proxy.Start(ScriptedPeer::Then::kAnswer, {Answer(502, "Bad Gateway", "upstream down")});
  client = ClientFor({&proxy});
  s = RunEtcdCall(io, client->Put("/dst/a", "v"));
  CHECK(s.err() == EIO);
  CHECK(s.message() == "etcd " + proxy.endpoint() + ": put /dst/a: HTTP 502: \"upstream down\"");
  StopPeers(io, {&web, &proxy});
}

TEST_CASE("EtcdClient::Create refuses options that cannot work") {
  std::unique_ptr<EtcdClient> client;
  EtcdClientOptions options;
  CHECK(EtcdClient::Create(options, &client).message() == "etcd: no endpoint given");
  options.endpoints = {{"127.0.0.1", 2379}};
  options.tls = true;
  options.tls_files.cert_file = "/nonexistent/client-cert.pem";
  CHECK(EtcdClient::Create(options, &client).message() ==
        "etcd TLS: a client certificate and its key go together");
  options.tls_files.key_file = "/nonexistent/client-key.pem";
  const Status s = EtcdClient::Create(options, &client);
  CHECK(s.err() == EINVAL);
  CHECK(s.message().starts_with("etcd TLS certificate /nonexistent/client-cert.pem: "));
  options.tls_files = {"/nonexistent/ca.pem", "", ""};
  CHECK(EtcdClient::Create(options, &client)
            .message()
            .starts_with("etcd TLS CA file /nonexistent/ca.pem: "));
}

}  // namespace
}  // namespace dst::cluster::etcd_client_test
