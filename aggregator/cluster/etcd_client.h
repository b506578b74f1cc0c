// EtcdClient: the aggregator's client of an etcd v3 cluster, through etcd's JSON gateway over
// HTTP/1.1 (docs/cluster.md, "How dst talks to etcd"): key-value reads and writes, transactions
// (compare-and-swap), and leases.
//
// Contract:
// - Every call returns a Status and, on success, the revisions etcd reported: the store's
//   revision after the call (header.revision) and each key's create_revision and mod_revision.
// - Endpoints are tried in order, starting with the one that answered last. A call moves on to
//   the next endpoint when the current one cannot be reached (nothing was sent) and, for calls
//   that are harmless to repeat (range, lease time-to-live, lease keep-alive), also when the
//   request was sent but no answer came or etcd answered that it has no leader. A call that
//   changes something (put, delete, txn, lease grant and revoke) whose answer was lost is not
//   repeated elsewhere: it fails, because it may have taken effect, and only the caller knows
//   how to find out (read the key back).
// - Errors name the endpoint and the call: "etcd 127.0.0.1:2379: put /dst/a: connect:
//   Connection refused"; when every endpoint failed, their failures joined with "; ". etcd's own
//   errors carry its message and map its gRPC code to errno (NOT_FOUND: ENOENT,
//   INVALID_ARGUMENT, OUT_OF_RANGE: EINVAL, DEADLINE_EXCEEDED: ETIMEDOUT, UNAVAILABLE: EAGAIN,
//   PERMISSION_DENIED, UNAUTHENTICATED: EACCES, others EIO). An endpoint that cannot be reached
//   keeps its errno (ECONNREFUSED, ETIMEDOUT...).
// - Each request is bounded by `timeout` per endpoint tried.
// - Keys and values are byte strings; the gateway carries them in base64.
//
// Threading: one event loop; the client's methods are coroutines on it, and several may run at
// once (each request has its own connection). The client must outlive the calls it started.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <asio.hpp>
#include <asio/ssl.hpp>

#include "aggregator/cluster/etcd_url.h"
#include "common/status.h"

namespace dst::cluster {

// TLS towards etcd (etcds://): the CA that signed etcd's certificates (empty: the system's
// trusted CAs) and, for etcd's --client-cert-auth, the client's certificate and key.
struct EtcdTls {
  std::string ca_file;
  std::string cert_file;
  std::string key_file;
};

struct EtcdClientOptions {
  std::vector<EtcdEndpoint> endpoints;
  bool tls = false;
  EtcdTls tls_files;
  std::chrono::milliseconds timeout{5000};  // per request and endpoint
};

struct KeyValue {
  std::string key;
  std::string value;
  int64_t create_revision = 0;
  int64_t mod_revision = 0;
  int64_t version = 0;
  int64_t lease = 0;  // 0: none
};

struct RangeResult {
  int64_t revision = 0;  // the store's revision the read saw
  std::vector<KeyValue> kvs;
};

// One comparison of a transaction, e.g. Compare::CreateRevision(key, Compare::kEqual, 0): the
// key does not exist.
struct Compare {
  enum Target { kVersion, kCreateRevision, kModRevision, kValue };
  enum Result { kEqual, kNotEqual, kLess, kGreater };

  static Compare Absent(std::string key) {
    return {std::move(key), kCreateRevision, kEqual, 0, {}};
  }
  static Compare ModRevision(std::string key, Result result, int64_t revision) {
    return {std::move(key), kModRevision, result, revision, {}};
  }
  static Compare Value(std::string key, Result result, std::string value) {
    return {std::move(key), kValue, result, 0, std::move(value)};
  }

  std::string key;
  Target target = kCreateRevision;
  Result result = kEqual;
  int64_t number = 0;  // version or revision
  std::string value;   // for kValue
};

struct TxnOp {
  enum Kind { kGet, kPut, kDelete };

  static TxnOp Get(std::string key) { return {kGet, std::move(key), {}, 0}; }
  static TxnOp Put(std::string key, std::string value, int64_t lease = 0) {
    return {kPut, std::move(key), std::move(value), lease};
  }
  static TxnOp Delete(std::string key) { return {kDelete, std::move(key), {}, 0}; }

  Kind kind = kGet;
  std::string key;
  std::string value;
  int64_t lease = 0;
};

struct Txn {
  std::vector<Compare> compare;  // all must hold for `success` to run, else `failure` runs
  std::vector<TxnOp> success;
  std::vector<TxnOp> failure;
};

struct TxnOpResult {
  TxnOp::Kind kind = TxnOp::kGet;
  std::vector<KeyValue> kvs;  // kGet
  int64_t deleted = 0;        // kDelete
};

struct TxnResult {
  bool succeeded = false;
  int64_t revision = 0;              // the store's revision after the transaction
  std::vector<TxnOpResult> results;  // one per op of the branch that ran
};

// The outcome of CreateIfAbsent: who holds the key now.
struct CreateResult {
  bool created = false;
  int64_t revision = 0;  // the store's revision after the transaction
  KeyValue current;      // ours (created) or the holder's; create_revision is its ownership epoch
};

struct Lease {
  int64_t id = 0;
  int64_t ttl = 0;  // seconds granted (etcd may raise a short one to its minimum)
};

struct LeaseTtl {
  int64_t ttl = 0;          // seconds left
  int64_t granted_ttl = 0;  // seconds granted
  std::vector<std::string> keys;
};

class EtcdClient {
 public:
  // Checks the options (at least one endpoint; TLS files readable and a key matching the
  // certificate) without connecting.
  static Status Create(EtcdClientOptions options, std::unique_ptr<EtcdClient>* out);
  ~EtcdClient();
  EtcdClient(const EtcdClient&) = delete;
  EtcdClient& operator=(const EtcdClient&) = delete;

  const std::vector<EtcdEndpoint>& endpoints() const { return options_.endpoints; }
  // The endpoint the next request goes to first (the last one that answered).
  const EtcdEndpoint& current_endpoint() const { return options_.endpoints[current_]; }

  // One key: *kv is nullopt when it does not exist.
  asio::awaitable<Status> Get(std::string key, std::optional<KeyValue>* kv,
                              int64_t* revision = nullptr);
  // Every key that starts with `prefix`, in key order.
  asio::awaitable<Status> GetPrefix(std::string prefix, RangeResult* result);
  // Sets `key` (attached to `lease` unless 0); *revision is the key's new mod_revision.
  asio::awaitable<Status> Put(std::string key, std::string value, int64_t lease = 0,
                              int64_t* revision = nullptr);
  // *deleted: how many keys went (0 or 1).
  asio::awaitable<Status> Delete(std::string key, int64_t* deleted = nullptr);
  asio::awaitable<Status> DeletePrefix(std::string prefix, int64_t* deleted = nullptr);
  asio::awaitable<Status> Commit(Txn txn, TxnResult* result);
  // Creates `key` with `value` if no key of that name exists, atomically; otherwise reads the
  // holder's. Exactly one of several racing callers creates it.
  asio::awaitable<Status> CreateIfAbsent(std::string key, std::string value, int64_t lease,
                                         CreateResult* result);

  asio::awaitable<Status> GrantLease(std::chrono::seconds ttl, Lease* lease);
  // Renews the lease once; *ttl: the seconds it has now. ENOENT if it expired or was revoked.
  asio::awaitable<Status> KeepAliveOnce(int64_t lease, int64_t* ttl);
  // Ends the lease; the keys attached to it are deleted.
  asio::awaitable<Status> RevokeLease(int64_t lease);
  // ENOENT if it expired or was revoked.
  asio::awaitable<Status> LeaseTimeToLive(int64_t lease, LeaseTtl* ttl);

 private:
  enum class Effect { kReadOnly, kWrites };

  explicit EtcdClient(EtcdClientOptions options);
  static Status MakeTlsContext(const EtcdTls& files, std::unique_ptr<asio::ssl::context>* out);
  // POSTs `body` to `target` on the endpoints in turn (see the contract); *answer is the
  // response body of a 200.
  asio::awaitable<Status> Post(std::string what, std::string target, std::string body,
                               Effect effect, std::string* answer);

  EtcdClientOptions options_;
  std::unique_ptr<asio::ssl::context> tls_context_;
  size_t current_ = 0;
};

// Runs `call` on `io` until it completes (for one-shot commands and tests): the io_context is
// run on the calling thread, and nothing else may run it meanwhile.
Status RunEtcdCall(asio::io_context& io, asio::awaitable<Status> call);

}  // namespace dst::cluster
