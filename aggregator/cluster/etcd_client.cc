#include "aggregator/cluster/etcd_client.h"

#include <openssl/ssl.h>

#include <cerrno>
#include <charconv>

#include <nlohmann/json.hpp>

#include "aggregator/cluster/base64.h"
#include "aggregator/cluster/http_client.h"

namespace dst::cluster {
namespace {

using nlohmann::json;

// gRPC status codes etcd's gateway reports in "code".
constexpr int kGrpcInvalidArgument = 3;
constexpr int kGrpcDeadlineExceeded = 4;
constexpr int kGrpcNotFound = 5;
constexpr int kGrpcPermissionDenied = 7;
constexpr int kGrpcOutOfRange = 11;
constexpr int kGrpcUnavailable = 14;
constexpr int kGrpcUnauthenticated = 16;

int ErrnoOfGrpcCode(int code) {
  switch (code) {
    case kGrpcNotFound:
      return ENOENT;
    case kGrpcInvalidArgument:
    case kGrpcOutOfRange:
      return EINVAL;
    case kGrpcDeadlineExceeded:
      return ETIMEDOUT;
    case kGrpcUnavailable:
      return EAGAIN;
    case kGrpcPermissionDenied:
    case kGrpcUnauthenticated:
      return EACCES;
    default:
      return EIO;
  }
}

// The gateway writes 64-bit numbers as strings ("revision": "12") and leaves zeros out.
int64_t Int(const json& object, const char* name) {
  const auto it = object.find(name);
  if (it == object.end()) return 0;
  if (it->is_number_integer()) return it->get<int64_t>();
  if (!it->is_string()) return 0;
  const std::string& text = it->get_ref<const std::string&>();
  int64_t value = 0;
  std::from_chars(text.data(), text.data() + text.size(), value);
  return value;
}

json Text(int64_t value) {
  return std::to_string(value);
}

Status NotEtcd(std::string_view why) {
  return Status::Error(EPROTO, "unexpected answer: " + std::string(why));
}

Status Bytes(const json& object, const char* name, std::string* out) {
  const auto it = object.find(name);
  if (it == object.end()) {
    out->clear();
    return Status::Ok();
  }
  if (!it->is_string()) return NotEtcd(std::string(name) + " is not a string");
  std::optional<std::string> decoded = Base64Decode(it->get_ref<const std::string&>());
  if (!decoded) return NotEtcd(std::string(name) + " is not base64");
  *out = std::move(*decoded);
  return Status::Ok();
}

Status Parse(const std::string& text, json* out) {
  *out = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (out->is_discarded() || !out->is_object())
    return NotEtcd("not a JSON object: \"" + text.substr(0, 80) + "\"");
  return Status::Ok();
}

int64_t HeaderRevision(const json& answer) {
  const auto it = answer.find("header");
  return it == answer.end() || !it->is_object() ? 0 : Int(*it, "revision");
}

Status DecodeKeyValues(const json& answer, std::vector<KeyValue>* kvs) {
  kvs->clear();
  const auto it = answer.find("kvs");
  if (it == answer.end()) return Status::Ok();
  if (!it->is_array()) return NotEtcd("kvs is not an array");
  for (const json& item : *it) {
    if (!item.is_object()) return NotEtcd("a key-value that is not an object");
    KeyValue kv;
    DST_RETURN_IF_ERROR(Bytes(item, "key", &kv.key));
    DST_RETURN_IF_ERROR(Bytes(item, "value", &kv.value));
    kv.create_revision = Int(item, "create_revision");
    kv.mod_revision = Int(item, "mod_revision");
    kv.version = Int(item, "version");
    kv.lease = Int(item, "lease");
    kvs->push_back(std::move(kv));
  }
  return Status::Ok();
}

// etcd's error answer: {"error": "...", "message": "...", "code": 5}, or in a stream
// {"error": {"grpc_code": 5, "message": "...", ...}}.
Status EtcdError(int http_status, const std::string& body) {
  json answer = json::parse(body, nullptr, false);
  if (answer.is_object()) {
    const json* error = &answer;
    if (auto it = answer.find("error"); it != answer.end() && it->is_object()) error = &*it;
    int code = static_cast<int>(Int(*error, error == &answer ? "code" : "grpc_code"));
    const auto message = error->find("message");
    if (message != error->end() && message->is_string())
      return Status::Error(ErrnoOfGrpcCode(code), message->get<std::string>());
  }
  return Status::Error(EIO,
                       "HTTP " + std::to_string(http_status) + ": \"" + body.substr(0, 120) + "\"");
}

// The end of the range of keys that start with `prefix`: the prefix with its last byte
// incremented (bytes of 0xff dropped first); "\0" (every key) for a prefix of only 0xff.
std::string PrefixEnd(std::string prefix) {
  while (!prefix.empty()) {
    const auto last = static_cast<unsigned char>(prefix.back());
    if (last < 0xff) {
      prefix.back() = static_cast<char>(last + 1);
      return prefix;
    }
    prefix.pop_back();
  }
  return std::string(1, '\0');
}

const char* TargetName(Compare::Target target) {
  switch (target) {
    case Compare::kVersion:
      return "VERSION";
    case Compare::kCreateRevision:
      return "CREATE";
    case Compare::kModRevision:
      return "MOD";
    case Compare::kValue:
      return "VALUE";
  }
  return "";
}

const char* ResultName(Compare::Result result) {
  switch (result) {
    case Compare::kEqual:
      return "EQUAL";
    case Compare::kNotEqual:
      return "NOT_EQUAL";
    case Compare::kLess:
      return "LESS";
    case Compare::kGreater:
      return "GREATER";
  }
  return "";
}

json EncodeCompare(const Compare& c) {
  json out = {{"key", Base64Encode(c.key)},
              {"target", TargetName(c.target)},
              {"result", ResultName(c.result)}};
  switch (c.target) {
    case Compare::kVersion:
      out["version"] = Text(c.number);
      break;
    case Compare::kCreateRevision:
      out["create_revision"] = Text(c.number);
      break;
    case Compare::kModRevision:
      out["mod_revision"] = Text(c.number);
      break;
    case Compare::kValue:
      out["value"] = Base64Encode(c.value);
      break;
  }
  return out;
}

json EncodeOp(const TxnOp& op) {
  switch (op.kind) {
    case TxnOp::kGet:
      return {{"request_range", {{"key", Base64Encode(op.key)}}}};
    case TxnOp::kPut: {
      json put = {{"key", Base64Encode(op.key)}, {"value", Base64Encode(op.value)}};
      if (op.lease) put["lease"] = Text(op.lease);
      return {{"request_put", put}};
    }
    case TxnOp::kDelete:
      return {{"request_delete_range", {{"key", Base64Encode(op.key)}}}};
  }
  return {};
}

Status DecodeOpResult(const json& item, TxnOpResult* result) {
  if (!item.is_object()) return NotEtcd("a transaction response that is not an object");
  if (auto it = item.find("response_range"); it != item.end()) {
    result->kind = TxnOp::kGet;
    return DecodeKeyValues(*it, &result->kvs);
  }
  if (auto it = item.find("response_put"); it != item.end()) {
    result->kind = TxnOp::kPut;
    return Status::Ok();
  }
  if (auto it = item.find("response_delete_range"); it != item.end()) {
    result->kind = TxnOp::kDelete;
    result->deleted = Int(*it, "deleted");
    return Status::Ok();
  }
  return NotEtcd("a transaction response of an unknown kind");
}

// Request bodies, built outside the coroutines (GCC 12 miscompiles braced initializer lists
// inside a coroutine: "array used as initializer").
std::string KeyRequest(const std::string& key) {
  return json{{"key", Base64Encode(key)}}.dump();
}

std::string PrefixRequest(const std::string& prefix) {
  return json{{"key", Base64Encode(prefix)}, {"range_end", Base64Encode(PrefixEnd(prefix))}}.dump();
}

std::string PutRequest(const std::string& key, const std::string& value, int64_t lease) {
  json request = {{"key", Base64Encode(key)}, {"value", Base64Encode(value)}};
  if (lease) request["lease"] = Text(lease);
  return request.dump();
}

std::string TxnRequest(const Txn& txn) {
  json request = {
      {"compare", json::array()}, {"success", json::array()}, {"failure", json::array()}};
  for (const Compare& c : txn.compare)
    request["compare"].push_back(EncodeCompare(c));
  for (const TxnOp& op : txn.success)
    request["success"].push_back(EncodeOp(op));
  for (const TxnOp& op : txn.failure)
    request["failure"].push_back(EncodeOp(op));
  return request.dump();
}

std::string GrantRequest(std::chrono::seconds ttl) {
  return json{{"TTL", Text(ttl.count())}}.dump();
}

std::string LeaseRequest(int64_t lease, bool keys = false) {
  json request = {{"ID", Text(lease)}};
  if (keys) request["keys"] = true;
  return request.dump();
}

Status LeaseGone(int64_t lease) {
  return Status::Error(ENOENT,
                       "lease " + std::to_string(lease) + " not found (expired or revoked)");
}

Status TlsFileError(const char* option, const std::string& file, const asio::error_code& ec) {
  return Status::Error(EINVAL,
                       std::string("etcd TLS ") + option + " " + file + ": " + ec.message());
}

}  // namespace

Status EtcdClient::Create(EtcdClientOptions options, std::unique_ptr<EtcdClient>* out) {
  if (options.endpoints.empty()) return Status::Invalid("etcd: no endpoint given");
  const EtcdTls& files = options.tls_files;
  const bool any_file =
      !files.ca_file.empty() || !files.cert_file.empty() || !files.key_file.empty();
  if (any_file && !options.tls)
    return Status::Invalid("etcd TLS files given for a plain etcd:// URL (use etcds://)");
  if (files.cert_file.empty() != files.key_file.empty())
    return Status::Invalid("etcd TLS: a client certificate and its key go together");
  std::unique_ptr<asio::ssl::context> context;
  if (options.tls) DST_RETURN_IF_ERROR(MakeTlsContext(files, &context));
  out->reset(new EtcdClient(std::move(options)));
  (*out)->tls_context_ = std::move(context);
  return Status::Ok();
}

Status EtcdClient::MakeTlsContext(const EtcdTls& files, std::unique_ptr<asio::ssl::context>* out) {
  auto context = std::make_unique<asio::ssl::context>(asio::ssl::context::tls_client);
  asio::error_code ec;
  context->set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                           asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 |
                           asio::ssl::context::no_tlsv1_1,
                       ec);
  context->set_verify_mode(asio::ssl::verify_peer, ec);
  if (files.ca_file.empty()) {
    if (context->set_default_verify_paths(ec); ec)
      return TlsFileError("CA", "(system default)", ec);
  } else if (context->load_verify_file(files.ca_file, ec); ec) {
    return TlsFileError("CA file", files.ca_file, ec);
  }
  if (!files.cert_file.empty()) {
    if (context->use_certificate_chain_file(files.cert_file, ec); ec)
      return TlsFileError("certificate", files.cert_file, ec);
    if (context->use_private_key_file(files.key_file, asio::ssl::context::pem, ec); ec)
      return TlsFileError("key", files.key_file, ec);
    if (SSL_CTX_check_private_key(context->native_handle()) != 1)
      return Status::Invalid("etcd TLS key " + files.key_file + " does not match certificate " +
                             files.cert_file);
  }
  *out = std::move(context);
  return Status::Ok();
}

EtcdClient::EtcdClient(EtcdClientOptions options) : options_(std::move(options)) {}
EtcdClient::~EtcdClient() = default;

asio::awaitable<Status> EtcdClient::Post(std::string what, std::string target, std::string body,
                                         Effect effect, std::string* answer) {
  HttpRequest request;
  request.target = std::move(target);
  request.body = std::move(body);
  const size_t count = options_.endpoints.size();
  const size_t first = current_;
  std::string failures;
  int err = EIO;
  for (size_t i = 0; i < count; ++i) {
    const size_t index = (first + i) % count;
    const EtcdEndpoint endpoint = options_.endpoints[index];
    const std::string where = "etcd " + endpoint.ToString() + ": " + what;
    HttpResponse response;
    HttpPhase phase = HttpPhase::kConnect;
    Status s = co_await HttpExchange(endpoint.host, endpoint.port, HttpTls{tls_context_.get()},
                                     request, options_.timeout, &response, &phase);
    if (s.ok() && response.status == 200) {
      current_ = index;
      *answer = std::move(response.body);
      co_return Status::Ok();
    }
    bool next = phase == HttpPhase::kConnect || effect == Effect::kReadOnly;
    if (s.ok()) {
      s = EtcdError(response.status, response.body);
      // A member without a leader answers so; another may have one. Anything else is etcd's
      // answer to the request, the same everywhere.
      next = effect == Effect::kReadOnly && s.err() == EAGAIN;
      if (!next) current_ = index;
    } else if (!next) {
      s = Status::Error(s.err(), s.message() + " (it may have taken effect)");
    }
    s = s.Wrap(where);
    if (!next) co_return s;
    err = s.err();
    failures += (failures.empty() ? "" : "; ") + s.message();
  }
  co_return Status::Error(err, failures);
}

asio::awaitable<Status> EtcdClient::Get(std::string key, std::optional<KeyValue>* kv,
                                        int64_t* revision) {
  const std::string what = "get " + key;
  std::string answer;
  DST_CO_RETURN_IF_ERROR(
      co_await Post(what, "/v3/kv/range", KeyRequest(key), Effect::kReadOnly, &answer));
  json parsed;
  std::vector<KeyValue> kvs;
  Status s = Parse(answer, &parsed);
  if (s.ok()) s = DecodeKeyValues(parsed, &kvs);
  if (!s.ok()) co_return s.Wrap("etcd " + current_endpoint().ToString() + ": " + what);
  kv->reset();
  if (!kvs.empty()) *kv = std::move(kvs.front());
  if (revision) *revision = HeaderRevision(parsed);
  co_return Status::Ok();
}

asio::awaitable<Status> EtcdClient::GetPrefix(std::string prefix, RangeResult* result) {
  const std::string what = "get prefix " + prefix;
  std::string answer;
  DST_CO_RETURN_IF_ERROR(
      co_await Post(what, "/v3/kv/range", PrefixRequest(prefix), Effect::kReadOnly, &answer));
  json parsed;
  Status s = Parse(answer, &parsed);
  if (s.ok()) s = DecodeKeyValues(parsed, &result->kvs);
  if (!s.ok()) co_return s.Wrap("etcd " + current_endpoint().ToString() + ": " + what);
  result->revision = HeaderRevision(parsed);
  co_return Status::Ok();
}

asio::awaitable<Status> EtcdClient::Put(std::string key, std::string value, int64_t lease,
                                        int64_t* revision) {
  const std::string what = "put " + key;
  std::string answer;
  DST_CO_RETURN_IF_ERROR(
      co_await Post(what, "/v3/kv/put", PutRequest(key, value, lease), Effect::kWrites, &answer));
  json parsed;
  if (Status s = Parse(answer, &parsed); !s.ok())
    co_return s.Wrap("etcd " + current_endpoint().ToString() + ": " + what);
  if (revision) *revision = HeaderRevision(parsed);
  co_return Status::Ok();
}

asio::awaitable<Status> EtcdClient::Delete(std::string key, int64_t* deleted) {
  const std::string what = "delete " + key;
  std::string answer;
  DST_CO_RETURN_IF_ERROR(
      co_await Post(what, "/v3/kv/deleterange", KeyRequest(key), Effect::kWrites, &answer));
  json parsed;
  if (Status s = Parse(answer, &parsed); !s.ok())
    co_return s.Wrap("etcd " + current_endpoint().ToString() + ": " + what);
  if (deleted) *deleted = Int(parsed, "deleted");
  co_return Status::Ok();
}

asio::awaitable<Status> EtcdClient::DeletePrefix(std::string prefix, int64_t* deleted) {
  const std::string what = "delete prefix " + prefix;
  std::string answer;
  DST_CO_RETURN_IF_ERROR(
      co_await Post(what, "/v3/kv/deleterange", PrefixRequest(prefix), Effect::kWrites, &answer));
  json parsed;
  if (Status s = Parse(answer, &parsed); !s.ok())
    co_return s.Wrap("etcd " + current_endpoint().ToString() + ": " + what);
  if (deleted) *deleted = Int(parsed, "deleted");
  co_return Status::Ok();
}

asio::awaitable<Status> EtcdClient::Commit(Txn txn, TxnResult* result) {
  std::string what = "txn";
  if (!txn.compare.empty()) what += " on " + txn.compare.front().key;
  std::string answer;
  DST_CO_RETURN_IF_ERROR(
      co_await Post(what, "/v3/kv/txn", TxnRequest(txn), Effect::kWrites, &answer));
  json parsed;
  Status s = Parse(answer, &parsed);
  *result = TxnResult();
  if (s.ok()) {
    const auto succeeded = parsed.find("succeeded");
    result->succeeded =
        succeeded != parsed.end() && succeeded->is_boolean() && succeeded->get<bool>();
    result->revision = HeaderRevision(parsed);
    if (auto it = parsed.find("responses"); it != parsed.end() && it->is_array()) {
      for (const json& item : *it) {
        TxnOpResult op;
        if (s = DecodeOpResult(item, &op); !s.ok()) break;
        result->results.push_back(std::move(op));
      }
    }
  }
  if (!s.ok()) co_return s.Wrap("etcd " + current_endpoint().ToString() + ": " + what);
  co_return Status::Ok();
}

asio::awaitable<Status> EtcdClient::CreateIfAbsent(std::string key, std::string value,
                                                   int64_t lease, CreateResult* result) {
  Txn txn;
  txn.compare.push_back(Compare::Absent(key));
  txn.success.push_back(TxnOp::Put(key, value, lease));
  txn.failure.push_back(TxnOp::Get(key));
  TxnResult outcome;
  DST_CO_RETURN_IF_ERROR(co_await Commit(std::move(txn), &outcome));
  *result = CreateResult();
  result->created = outcome.succeeded;
  result->revision = outcome.revision;
  if (outcome.succeeded) {
    // The put is the transaction's only write: the key was created at the new revision.
    result->current.key = key;
    result->current.value = value;
    result->current.create_revision = outcome.revision;
    result->current.mod_revision = outcome.revision;
    result->current.version = 1;
    result->current.lease = lease;
    co_return Status::Ok();
  }
  if (outcome.results.size() == 1 && outcome.results[0].kvs.size() == 1) {
    result->current = outcome.results[0].kvs[0];
    co_return Status::Ok();
  }
  // Held when compared, gone when read: impossible in one transaction.
  co_return Status::Error(EPROTO, "etcd " + current_endpoint().ToString() + ": create " + key +
                                      ": the key exists but the transaction read nothing");
}

asio::awaitable<Status> EtcdClient::GrantLease(std::chrono::seconds ttl, Lease* lease) {
  const std::string what = "lease grant";
  std::string answer;
  DST_CO_RETURN_IF_ERROR(
      co_await Post(what, "/v3/lease/grant", GrantRequest(ttl), Effect::kWrites, &answer));
  json parsed;
  Status s = Parse(answer, &parsed);
  if (s.ok()) {
    if (auto error = parsed.find("error"); error != parsed.end() && error->is_string() &&
                                           !error->get_ref<const std::string&>().empty())
      s = Status::Error(EIO, error->get<std::string>());
    else if (Int(parsed, "ID") == 0)
      s = NotEtcd("no lease ID");
  }
  if (!s.ok()) co_return s.Wrap("etcd " + current_endpoint().ToString() + ": " + what);
  lease->id = Int(parsed, "ID");
  lease->ttl = Int(parsed, "TTL");
  co_return Status::Ok();
}

asio::awaitable<Status> EtcdClient::KeepAliveOnce(int64_t lease, int64_t* ttl) {
  const std::string what = "lease keepalive " + std::to_string(lease);
  std::string answer;
  // A stream of one request: the gateway answers with one message and ends the stream.
  DST_CO_RETURN_IF_ERROR(
      co_await Post(what, "/v3/lease/keepalive", LeaseRequest(lease), Effect::kReadOnly, &answer));
  json parsed;
  Status s = Parse(answer, &parsed);
  const std::string where = "etcd " + current_endpoint().ToString() + ": " + what;
  if (!s.ok()) co_return s.Wrap(where);
  if (auto error = parsed.find("error"); error != parsed.end())
    co_return EtcdError(200, answer).Wrap(where);
  const auto result = parsed.find("result");
  if (result == parsed.end() || !result->is_object()) co_return NotEtcd("no result").Wrap(where);
  *ttl = Int(*result, "TTL");
  if (*ttl <= 0) co_return LeaseGone(lease).Wrap(where);
  co_return Status::Ok();
}

asio::awaitable<Status> EtcdClient::RevokeLease(int64_t lease) {
  const std::string what = "lease revoke " + std::to_string(lease);
  std::string answer;
  Status s = co_await Post(what, "/v3/lease/revoke", LeaseRequest(lease), Effect::kWrites, &answer);
  co_return s;
}

asio::awaitable<Status> EtcdClient::LeaseTimeToLive(int64_t lease, LeaseTtl* ttl) {
  const std::string what = "lease timetolive " + std::to_string(lease);
  std::string answer;
  DST_CO_RETURN_IF_ERROR(co_await Post(what, "/v3/lease/timetolive",
                                       LeaseRequest(lease, /*keys=*/true), Effect::kReadOnly,
                                       &answer));
  json parsed;
  Status s = Parse(answer, &parsed);
  const std::string where = "etcd " + current_endpoint().ToString() + ": " + what;
  if (!s.ok()) co_return s.Wrap(where);
  ttl->ttl = Int(parsed, "TTL");
  ttl->granted_ttl = Int(parsed, "grantedTTL");
  ttl->keys.clear();
  if (ttl->ttl < 0) co_return LeaseGone(lease).Wrap(where);
  if (auto keys = parsed.find("keys"); keys != parsed.end() && keys->is_array()) {
    for (const json& key : *keys) {
      std::optional<std::string> decoded =
          key.is_string() ? Base64Decode(key.get_ref<const std::string&>()) : std::nullopt;
      if (!decoded) co_return NotEtcd("a lease key that is not base64").Wrap(where);
      ttl->keys.push_back(std::move(*decoded));
    }
  }
  co_return Status::Ok();
}

Status RunEtcdCall(asio::io_context& io, asio::awaitable<Status> call) {
  std::optional<Status> result;
  asio::co_spawn(io, std::move(call), [&result](std::exception_ptr error, Status status) {
    result = error ? Status::Error(EIO, "etcd call failed with an exception") : std::move(status);
  });
  if (io.stopped()) io.restart();
  while (!result)
    if (io.run_one() == 0) break;
  return result.value_or(Status::Error(EIO, "etcd call: the event loop was stopped"));
}

}  // namespace dst::cluster
