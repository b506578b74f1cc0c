// The etcd client (aggregator/cluster/etcd_client.h) against a real etcd on loopback: reads and
// writes with their revisions, a create-if-absent race, leases revoked, expired and kept alive,
// an etcd that is gone or stopped, failover to the next endpoint, and TLS with client
// certificates.
#include "aggregator/cluster/etcd_client.h"

#include <doctest/doctest.h>

#include <csignal>
#include <thread>

#include "aggregator/cluster/etcd_url.h"
#include "tests/harness/etcd_server.h"
#include "tests/harness/nbdkit_server.h"  // PickFreePort
#include "tests/harness/tls_credentials.h"

namespace dst::cluster {
namespace {

using namespace std::chrono_literals;
using test::EtcdServer;

EtcdServer StartEtcd(test::EtcdServerOptions options = {}) {
  options.etcd = DST_TOOL_ETCD;
  return EtcdServer(std::move(options));
}

// A client for `url` (etcd://...), with a short timeout unless told otherwise.
std::unique_ptr<EtcdClient> Connect(const std::string& url, std::chrono::milliseconds timeout = 2s,
                                    EtcdTls files = {}) {
  EtcdUrl parsed;
  const Status parse = ParseEtcdUrl(url, &parsed);
  INFO(parse.ToString());
  REQUIRE(parse.ok());
  EtcdClientOptions options;
  options.endpoints = parsed.endpoints;
  options.tls = parsed.tls;
  options.tls_files = std::move(files);
  options.timeout = timeout;
  std::unique_ptr<EtcdClient> client;
  const Status s = EtcdClient::Create(std::move(options), &client);
  INFO(s.ToString());
  REQUIRE(s.ok());
  return client;
}

// Runs one call to completion and fails the test with its message if it fails.
void Ok(asio::io_context& io, asio::awaitable<Status> call) {
  const Status s = RunEtcdCall(io, std::move(call));
  INFO(s.ToString());
  REQUIRE(s.ok());
}

std::optional<KeyValue> GetKey(asio::io_context& io, EtcdClient& client, const std::string& key) {
  std::optional<KeyValue> kv;
  Ok(io, client.Get(key, &kv));
  return kv;
}

// Polls until `key` is gone, at most `limit`; returns how long that took, or nullopt.
std::optional<std::chrono::milliseconds> WaitUntilGone(asio::io_context& io, EtcdClient& client,
                                                       const std::string& key,
                                                       std::chrono::milliseconds limit) {
  const auto start = std::chrono::steady_clock::now();
  while (std::chrono::steady_clock::now() - start < limit) {
    if (!GetKey(io, client, key))
      return std::chrono::duration_cast<std::chrono::milliseconds>(
          std::chrono::steady_clock::now() - start);
    std::this_thread::sleep_for(50ms);
  }
  return std::nullopt;
}

TEST_SUITE_BEGIN("etcd_client");

TEST_CASE("put, get and prefix reads and deletes, with etcd's revisions") {
  EtcdServer etcd = StartEtcd();
  asio::io_context io;
  auto client = Connect(etcd.url("dst"));

  int64_t first = 0, second = 0, outside = 0;
  Ok(io, client->Put("/dst/volumes/a", "alpha", 0, &first));
  Ok(io, client->Put("/dst/volumes/b", std::string("b\0\xff", 3), 0, &second));
  Ok(io, client->Put("/dst/volumesX", "not under the prefix", 0, &outside));
  CHECK(first > 0);
  CHECK(second == first + 1);
  CHECK(outside == second + 1);

  std::optional<KeyValue> kv;
  int64_t revision = 0;
  Ok(io, client->Get("/dst/volumes/b", &kv, &revision));
  REQUIRE(kv);
  CHECK(kv->value == std::string("b\0\xff", 3));  // bytes survive base64 both ways
  CHECK(kv->create_revision == second);
  CHECK(kv->mod_revision == second);
  CHECK(kv->version == 1);
  CHECK(revision == outside);

  int64_t rewritten = 0;
  Ok(io, client->Put("/dst/volumes/a", "alpha 2", 0, &rewritten));
  kv = GetKey(io, *client, "/dst/volumes/a");
  REQUIRE(kv);
  CHECK(kv->create_revision == first);
  CHECK(kv->mod_revision == rewritten);
  CHECK(kv->version == 2);

  RangeResult range;
  Ok(io, client->GetPrefix("/dst/volumes/", &range));
  REQUIRE(range.kvs.size() == 2);
  CHECK(range.kvs[0].key == "/dst/volumes/a");
  CHECK(range.kvs[0].value == "alpha 2");
  CHECK(range.kvs[1].key == "/dst/volumes/b");
  CHECK(range.revision == rewritten);

  CHECK_FALSE(GetKey(io, *client, "/dst/nothing"));
  int64_t deleted = -1;
  Ok(io, client->Delete("/dst/volumes/a", &deleted));
  CHECK(deleted == 1);
  Ok(io, client->Delete("/dst/volumes/a", &deleted));
  CHECK(deleted == 0);
  Ok(io, client->DeletePrefix("/dst/volumes", &deleted));
  CHECK(deleted == 2);  // /dst/volumes/b and /dst/volumesX
  Ok(io, client->GetPrefix("/dst/", &range));
  CHECK(range.kvs.empty());
}

TEST_CASE("create-if-absent: of two racing clients exactly one creates the key") {
  EtcdServer etcd = StartEtcd();
  asio::io_context io;
  auto alice = Connect(etcd.url("dst"));
  auto bob = Connect(etcd.url("dst"));

  for (int round = 0; round < 5; ++round) {
    const std::string key = "/dst/owners/volume-" + std::to_string(round);
    CreateResult a, b;
    std::optional<Status> a_status, b_status;
    // Both transactions in flight at once, each on its own connection.
    asio::co_spawn(io, alice->CreateIfAbsent(key, "alice", 0, &a),
                   [&](std::exception_ptr, Status s) { a_status = s; });
    asio::co_spawn(io, bob->CreateIfAbsent(key, "bob", 0, &b),
                   [&](std::exception_ptr, Status s) { b_status = s; });
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    while (!(a_status && b_status) && std::chrono::steady_clock::now() < deadline)
      io.run_one_for(100ms);
    REQUIRE(a_status);
    REQUIRE(b_status);
    INFO(a_status->ToString(), " ", b_status->ToString());
    REQUIRE(a_status->ok());
    REQUIRE(b_status->ok());
    CHECK(a.created != b.created);
    const CreateResult& winner = a.created ? a : b;
    const CreateResult& loser = a.created ? b : a;
    // The loser sees the owner: its value, and the revision it was created at.
    CHECK(loser.current.value == winner.current.value);
    CHECK(loser.current.create_revision == winner.revision);
    CHECK(winner.current.create_revision == winner.revision);
    const std::optional<KeyValue> stored = GetKey(io, *alice, key);
    REQUIRE(stored);
    CHECK(stored->value == winner.current.value);
  }
  io.restart();

  SUBCASE("compare-and-swap on mod_revision: a stale writer loses") {
    const std::string key = "/dst/catalog/volume-0";
    int64_t created = 0;
    Ok(io, alice->Put(key, "v1", 0, &created));
    Txn update;
    update.compare.push_back(Compare::ModRevision(key, Compare::kEqual, created));
    update.success.push_back(TxnOp::Put(key, "v2 by alice"));
    update.failure.push_back(TxnOp::Get(key));
    TxnResult first;
    Ok(io, alice->Commit(update, &first));
    CHECK(first.succeeded);
    CHECK(first.results.size() == 1);
    CHECK(first.results[0].kind == TxnOp::kPut);

    update.success[0].value = "v2 by bob";  // bob read v1 too: his revision is stale now
    TxnResult second;
    Ok(io, bob->Commit(update, &second));
    CHECK_FALSE(second.succeeded);
    REQUIRE(second.results.size() == 1);
    REQUIRE(second.results[0].kvs.size() == 1);
    CHECK(second.results[0].kvs[0].value == "v2 by alice");
    CHECK(second.results[0].kvs[0].mod_revision == first.revision);

    Txn remove;
    remove.compare.push_back(Compare::Value(key, Compare::kEqual, "v2 by alice"));
    remove.success.push_back(TxnOp::Delete(key));
    TxnResult removed;
    Ok(io, bob->Commit(remove, &removed));
    CHECK(removed.succeeded);
    REQUIRE(removed.results.size() == 1);
    CHECK(removed.results[0].deleted == 1);
  }
}

TEST_CASE("a key attached to a lease goes when the lease is revoked") {
  EtcdServer etcd = StartEtcd();
  asio::io_context io;
  auto client = Connect(etcd.url("dst"));

  Lease lease;
  Ok(io, client->GrantLease(10s, &lease));
  CHECK(lease.id != 0);
  CHECK(lease.ttl == 10);
  Ok(io, client->Put("/dst/owners/v", "node-1", lease.id));
  const std::optional<KeyValue> kv = GetKey(io, *client, "/dst/owners/v");
  REQUIRE(kv);
  CHECK(kv->lease == lease.id);
  LeaseTtl ttl;
  Ok(io, client->LeaseTimeToLive(lease.id, &ttl));
  CHECK(ttl.granted_ttl == 10);
  CHECK(ttl.ttl > 0);
  CHECK(ttl.ttl <= 10);
  CHECK(ttl.keys == std::vector<std::string>{"/dst/owners/v"});

  Ok(io, client->RevokeLease(lease.id));
  CHECK_FALSE(GetKey(io, *client, "/dst/owners/v"));

  // A revoked lease is gone for every lease call, with etcd's own word where it has one.
  const std::string endpoint = etcd.endpoint();
  const std::string id = std::to_string(lease.id);
  Status s = RunEtcdCall(io, client->RevokeLease(lease.id));
  CHECK(s.err() == ENOENT);
  CHECK(s.message() ==
        "etcd " + endpoint + ": lease revoke " + id + ": etcdserver: requested lease not found");
  int64_t left = 0;
  s = RunEtcdCall(io, client->KeepAliveOnce(lease.id, &left));
  CHECK(s.err() == ENOENT);
  CHECK(s.message() == "etcd " + endpoint + ": lease keepalive " + id + ": lease " + id +
                           " not found (expired or revoked)");
  s = RunEtcdCall(io, client->LeaseTimeToLive(lease.id, &ttl));
  CHECK(s.err() == ENOENT);
  s = RunEtcdCall(io, client->Put("/dst/owners/v", "node-1", lease.id));
  CHECK(s.err() == ENOENT);
  CHECK(s.message() ==
        "etcd " + endpoint + ": put /dst/owners/v: etcdserver: requested lease not found");
}

TEST_CASE("a lease that is not kept alive expires and takes its key; keepalives extend it") {
  EtcdServer etcd = StartEtcd();
  asio::io_context io;
  auto client = Connect(etcd.url("dst"));

  Lease expiring;
  Ok(io, client->GrantLease(1s, &expiring));
  CHECK(expiring.ttl >= 1);
  CHECK(expiring.ttl <= 2);  // etcd may raise it to its minimum
  Lease kept;
  Ok(io, client->GrantLease(3s, &kept));
  CHECK(kept.ttl == 3);
  Ok(io, client->Put("/dst/owners/expiring", "node-1", expiring.id));
  Ok(io, client->Put("/dst/owners/kept", "node-2", kept.id));

  // Kept alive every 800 ms for 4 s: longer than its TTL, and the other one's (with room for a
  // loaded machine between renewals).
  for (int i = 0; i < 5; ++i) {
    std::this_thread::sleep_for(800ms);
    int64_t ttl = 0;
    Ok(io, client->KeepAliveOnce(kept.id, &ttl));
    CHECK(ttl == 3);
  }
  CHECK_FALSE(GetKey(io, *client, "/dst/owners/expiring"));
  LeaseTtl left;
  Status s = RunEtcdCall(io, client->LeaseTimeToLive(expiring.id, &left));
  CHECK(s.err() == ENOENT);
  CHECK(GetKey(io, *client, "/dst/owners/kept"));
  Ok(io, client->LeaseTimeToLive(kept.id, &left));
  CHECK(left.ttl >= 1);

  // Left alone, it expires within its TTL and etcd's expiry check (every 500 ms).
  const auto gone = WaitUntilGone(io, *client, "/dst/owners/kept", 6s);
  REQUIRE(gone);
  CHECK(*gone >= 1500ms);  // it was renewed just now
  int64_t ttl = 0;
  s = RunEtcdCall(io, client->KeepAliveOnce(kept.id, &ttl));
  CHECK(s.err() == ENOENT);
}

TEST_CASE("an etcd that is gone or stopped: one clear error, within the timeout") {
  EtcdServer etcd = StartEtcd();
  asio::io_context io;
  auto client = Connect(etcd.url("dst"), 500ms);
  Ok(io, client->Put("/dst/x", "1"));
  const std::string endpoint = etcd.endpoint();

  // Stopped (SIGSTOP): connections are accepted by the kernel, answers never come.
  etcd.Kill(SIGSTOP);
  auto start = std::chrono::steady_clock::now();
  std::optional<KeyValue> kv;
  Status s = RunEtcdCall(io, client->Get("/dst/x", &kv));
  auto took = std::chrono::steady_clock::now() - start;
  CHECK(s.err() == ETIMEDOUT);
  CHECK(s.message() ==
        "etcd " + endpoint + ": get /dst/x: timed out after 500 ms (waiting for the response)");
  CHECK(took >= 500ms);
  CHECK(took < 2s);
  // A write whose answer was lost may have been applied: the error says so.
  s = RunEtcdCall(io, client->Put("/dst/x", "2"));
  CHECK(s.err() == ETIMEDOUT);
  CHECK(s.message() == "etcd " + endpoint +
                           ": put /dst/x: timed out after 500 ms (waiting for the response) (it "
                           "may have taken effect)");
  etcd.Kill(SIGCONT);
  kv = GetKey(io, *client, "/dst/x");
  REQUIRE(kv);
  // Whether it was is etcd's business (3.4 drops a request whose client has gone): only
  // reading back tells.
  const std::string after_stop = kv->value;
  CHECK((after_stop == "1" || after_stop == "2"));

  // Gone: refused at once, not at the deadline.
  etcd.Stop();
  auto patient = Connect(etcd.url("dst"), 10s);
  start = std::chrono::steady_clock::now();
  s = RunEtcdCall(io, patient->Put("/dst/x", "3"));
  took = std::chrono::steady_clock::now() - start;
  CHECK(s.err() == ECONNREFUSED);
  CHECK(s.message() == "etcd " + endpoint + ": put /dst/x: connect: Connection refused");
  CHECK(took < 5s);

  // Back on the same port, with the same data: the client carries on.
  etcd.Restart();
  kv = GetKey(io, *client, "/dst/x");
  REQUIRE(kv);
  CHECK(kv->value == after_stop);
}

TEST_CASE("the next endpoint is used when the first one is down") {
  EtcdServer etcd = StartEtcd();
  asio::io_context io;
  const std::string dead = "127.0.0.1:" + std::to_string(test::PickFreePort());
  auto client = Connect("etcd://" + dead + "," + etcd.endpoint() + "/dst");
  CHECK(client->current_endpoint().ToString() == dead);

  // A write that was never sent moves on too.
  int64_t revision = 0;
  Ok(io, client->Put("/dst/x", "via the second", 0, &revision));
  CHECK(revision > 0);
  CHECK(client->current_endpoint().ToString() == etcd.endpoint());  // and stays there
  const std::optional<KeyValue> kv = GetKey(io, *client, "/dst/x");
  REQUIRE(kv);
  CHECK(kv->value == "via the second");

  // None left: every endpoint's failure, the one tried first first.
  etcd.Stop();
  const Status s = RunEtcdCall(io, client->Put("/dst/x", "nowhere"));
  CHECK(s.err() == ECONNREFUSED);
  CHECK(s.message() == "etcd " + etcd.endpoint() +
                           ": put /dst/x: connect: Connection refused; etcd " + dead +
                           ": put /dst/x: connect: Connection refused");
}

TEST_CASE("etcds://: TLS with the cluster's CA and a client certificate") {
  test::X509Dir pki;
  test::EtcdServerOptions options;
  options.certificates_dir = pki.path();
  options.client_cert_auth = true;
  EtcdServer etcd = StartEtcd(options);
  asio::io_context io;
  const EtcdTls files{pki.path() + "/ca-cert.pem", pki.path() + "/client-cert.pem",
                      pki.path() + "/client-key.pem"};
  auto client = Connect(etcd.url("dst"), 2s, files);
  Ok(io, client->Put("/dst/x", "over TLS"));
  const std::optional<KeyValue> kv = GetKey(io, *client, "/dst/x");
  REQUIRE(kv);
  CHECK(kv->value == "over TLS");

  // Without a client certificate, etcd ends the handshake.
  auto anonymous = Connect(etcd.url("dst"), 2s, EtcdTls{files.ca_file, "", ""});
  Status s = RunEtcdCall(io, anonymous->Put("/dst/x", "anonymous"));
  CHECK_FALSE(s.ok());
  CHECK(s.message() ==
        "etcd " + etcd.endpoint() +
            ": put /dst/x: TLS handshake: sslv3 alert bad certificate (SSL routines)");
  // Without the cluster's CA, the server's certificate is not trusted.
  auto untrusting = Connect(etcd.url("dst"), 2s, EtcdTls{"", files.cert_file, files.key_file});
  s = RunEtcdCall(io, untrusting->Put("/dst/x", "untrusting"));
  CHECK(s.message().find("TLS handshake: certificate verify failed") != std::string::npos);

  // Files that do not fit are refused before anything connects.
  EtcdClientOptions wrong;
  wrong.endpoints = {EtcdEndpoint{"127.0.0.1", static_cast<uint16_t>(etcd.client_port())}};
  wrong.tls = true;
  wrong.tls_files = EtcdTls{files.ca_file, files.cert_file, pki.path() + "/server-key.pem"};
  std::unique_ptr<EtcdClient> refused;
  s = EtcdClient::Create(wrong, &refused);
  CHECK(s.err() == EINVAL);
  CHECK(s.message() == "etcd TLS key " + pki.path() +
                           "/server-key.pem: key values mismatch (x509 certificate routines)");
  wrong.tls = false;
  s = EtcdClient::Create(wrong, &refused);
  CHECK(s.message() == "etcd TLS files given for a plain etcd:// URL (use etcds://)");
}

TEST_SUITE_END();

}  // namespace
}  // namespace dst::cluster
