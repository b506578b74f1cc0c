#include "aggregator/serve_config.h"

#include <string.h>  // explicit_bzero
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <set>

#define TOML_EXCEPTIONS 0
#include <toml++/toml.h>

#include "aggregator/key_file.h"
#include "aggregator/server/listener.h"
#include "common/duration.h"
#include "common/units.h"

namespace dst::aggregator {

namespace {

std::string Where(const std::string& path, const toml::node& node) {
  return path + ":" + std::to_string(node.source().begin.line);
}

Status ReadString(const std::string& where, const toml::node& node, std::string* out) {
  if (!node.is_string()) return Status::Invalid(where + ": expected a string");
  *out = node.as_string()->get();
  return Status::Ok();
}

Status ReadSize(const std::string& where, const toml::node& node, uint64_t* out) {
  std::optional<uint64_t> size;
  if (const auto* i = node.as_integer(); i && i->get() >= 0) size = static_cast<uint64_t>(i->get());
  if (const auto* s = node.as_string()) size = ParseSize(s->get());
  if (!size) return Status::Invalid(where + ": expected a size such as 64K");
  *out = *size;
  return Status::Ok();
}

Status ReadDuration(const std::string& where, const toml::node& node,
                    std::chrono::milliseconds* out) {
  std::optional<std::chrono::milliseconds> duration;
  if (const auto* i = node.as_integer(); i && i->get() >= 0)
    duration = ParseDuration(std::to_string(i->get()));
  if (const auto* s = node.as_string()) duration = ParseDuration(s->get());
  if (!duration) return Status::Invalid(where + ": expected a duration such as 5, 500ms or 2m");
  *out = *duration;
  return Status::Ok();
}

Status ReadStrings(const std::string& where, const toml::node& node,
                   std::vector<std::string>* out) {
  const auto* array = node.as_array();
  if (!array) return Status::Invalid(where + ": expected an array of strings");
  for (const auto& item : *array) {
    if (!item.is_string()) return Status::Invalid(where + ": expected an array of strings");
    out->push_back(item.as_string()->get());
  }
  return Status::Ok();
}

Status ReadVolume(const std::string& path, const toml::table& table, VolumeConfig* v) {
  for (const auto& [key, node] : table) {
    const std::string k(key.str());
    const std::string where = Where(path, node) + ": " + k;
    if (k == "name")
      DST_RETURN_IF_ERROR(ReadString(where, node, &v->name));
    else if (k == "description")
      DST_RETURN_IF_ERROR(ReadString(where, node, &v->description));
    else if (k == "chunk") {
      DST_RETURN_IF_ERROR(ReadSize(where, node, &v->chunk_size));
      v->layout_given = true;
    } else if (k == "raw") {
      const auto* b = node.as_boolean();
      if (!b) return Status::Invalid(where + ": expected true or false");
      v->raw = b->get();
    } else if (k == "key-file") {
      DST_RETURN_IF_ERROR(ReadString(where, node, &v->key_file));
      std::vector<uint8_t> key;
      const Status s = ReadKeyFile(v->key_file, &key);
      if (!key.empty()) explicit_bzero(key.data(), key.size());
      DST_RETURN_IF_ERROR(s.Wrap(where));
    } else if (k == "members")
      DST_RETURN_IF_ERROR(ReadStrings(where, node, &v->members));
    else if (k == "layout") {
      std::string text;
      DST_RETURN_IF_ERROR(ReadString(where, node, &text));
      DST_RETURN_IF_ERROR(volume::ParseLayoutKind(text, &v->layout).Wrap(where));
      v->layout_given = true;
    } else {
      return Status::Invalid(Where(path, node) + ": unknown key '" + k + "' in [[volume]]");
    }
  }
  return Status::Ok();
}

// The keys about clients: TLS, connection count and client deadlines.
Status ReadClientLimit(const std::string& where, const std::string& k, const toml::node& node,
                       ServeConfig* config) {
  if (k == "tls") {
    std::string text;
    DST_RETURN_IF_ERROR(ReadString(where, node, &text));
    if (!server::ParseTlsMode(text, &config->tls.mode))
      return Status::Invalid(where + ": expected off, on or require");
    return Status::Ok();
  }
  if (k == "tls-psk") return ReadString(where, node, &config->tls.psk_file);
  if (k == "tls-certificates") return ReadString(where, node, &config->tls.certificates_dir);
  if (k == "tls-verify-peer") {
    const auto* b = node.as_boolean();
    if (!b) return Status::Invalid(where + ": expected true or false");
    config->tls.verify_peer = b->get();
    return Status::Ok();
  }
  if (k == "max-connections") {
    const auto* n = node.as_integer();
    if (!n || n->get() < 1 || n->get() > 1000000)
      return Status::Invalid(where + ": expected 1 to 1000000");
    config->max_connections = static_cast<size_t>(n->get());
    return Status::Ok();
  }
  if (k == "handshake-timeout") return ReadDuration(where, node, &config->handshake_timeout);
  if (k == "request-timeout") return ReadDuration(where, node, &config->request_timeout);
  return Status::Invalid(where + ": unknown key");
}

// The member-tls-* keys: credentials for TLS members, as the --member-tls-* options.
Status ReadMemberTls(const std::string& where, const std::string& k, const toml::node& node,
                     member::MemberTls* tls) {
  if (k == "member-tls-psk") return ReadString(where, node, &tls->psk_file);
  if (k == "member-tls-username") return ReadString(where, node, &tls->username);
  if (k == "member-tls-certificates") return ReadString(where, node, &tls->certificates_dir);
  if (k == "member-tls-verify-peer") {
    const auto* b = node.as_boolean();
    if (!b) return Status::Invalid(where + ": expected true or false");
    tls->verify_peer = b->get();
    return Status::Ok();
  }
  return Status::Invalid(where + ": unknown key");
}

// Every member of every volume shares the member TLS options.
Status CheckServeMemberTls(const ServeConfig& config) {
  std::vector<std::string> uris;
  for (const VolumeConfig& v : config.volumes)
    uris.insert(uris.end(), v.members.begin(), v.members.end());
  return member::CheckMemberTls(config.member_tls, uris);
}

Status ReadTopLevel(const std::string& path, const std::string& k, const toml::node& node,
                    ServeConfig* config) {
  const std::string where = Where(path, node) + ": " + k;
  if (k == "listen") {
    DST_RETURN_IF_ERROR(ReadStrings(where, node, &config->listen));
    asio::ip::tcp::endpoint endpoint;
    for (const std::string& address : config->listen)
      DST_RETURN_IF_ERROR(server::ParseHostPort(address, &endpoint).Wrap(where));
    return Status::Ok();
  }
  if (k == "unix") return ReadStrings(where, node, &config->unix_sockets);
  if (k == "default") return ReadString(where, node, &config->default_volume);
  if (k == "max-inflight-per-client")
    return ReadSize(where, node, &config->max_inflight_per_client);
  if (k == "max-inflight") return ReadSize(where, node, &config->max_inflight_total);
  if (k == "table-cache") return ReadSize(where, node, &config->table_cache);
  if (k == "control") return ReadString(where, node, &config->control);
  if (k.rfind("member-tls-", 0) == 0) return ReadMemberTls(where, k, node, &config->member_tls);
  if (k.rfind("tls", 0) == 0 || k == "max-connections" || k == "handshake-timeout" ||
      k == "request-timeout")
    return ReadClientLimit(where, k, node, config);
  if (k == "metrics") {
    DST_RETURN_IF_ERROR(ReadString(where, node, &config->metrics));
    asio::ip::tcp::endpoint endpoint;
    return server::ParseHostPort(config->metrics, &endpoint).Wrap(where);
  }
  if (k == "raw") {
    const auto* b = node.as_boolean();
    if (!b) return Status::Invalid(where + ": expected true or false");
    config->raw = b->get();
    return Status::Ok();
  }
  member::TransactionOptions& t = config->transactions;
  if (k == "io-timeout") return ReadDuration(where, node, &t.io_timeout);
  if (k == "retry-window") return ReadDuration(where, node, &t.retry_window);
  if (k == "keepalive") return ReadDuration(where, node, &t.keepalive);
  if (k == "stats-interval") return ReadDuration(where, node, &config->stats_interval);
  if (k == "retries") {
    const auto* n = node.as_integer();
    if (!n || n->get() < 0 || n->get() > 1000000)
      return Status::Invalid(where + ": expected 0 to 1000000");
    t.retries = static_cast<unsigned>(n->get());
    return Status::Ok();
  }
  if (k == "fencing") {
    std::string text;
    DST_RETURN_IF_ERROR(ReadString(where, node, &text));
    if (!member::ParseFencingMode(text, &t.fencing))
      return Status::Invalid(where + ": expected auto, require or off");
    return Status::Ok();
  }
  if (k == "connections") {
    const auto* n = node.as_integer();
    if (!n || n->get() < 1 || n->get() > 16) return Status::Invalid(where + ": expected 1 to 16");
    config->connections_per_member = static_cast<unsigned>(n->get());
    return Status::Ok();
  }
  if (k == "volume") {
    const auto* tables = node.as_array();
    if (!tables || !tables->is_array_of_tables())
      return Status::Invalid(where + ": expected [[volume]] tables");
    for (const auto& table : *tables) {
      VolumeConfig v;
      DST_RETURN_IF_ERROR(ReadVolume(path, *table.as_table(), &v));
      config->volumes.push_back(std::move(v));
    }
    return Status::Ok();
  }
  return Status::Invalid(Where(path, node) + ": unknown key '" + k + "'");
}

}  // namespace

Status LoadServeConfig(const std::string& path, ServeConfig* config) {
  toml::parse_result parsed = toml::parse_file(path);
  if (!parsed) {
    const auto& err = parsed.error();
    return Status::Invalid(path + ":" + std::to_string(err.source().begin.line) + ": " +
                           std::string(err.description()));
  }
  for (const auto& [key, node] : parsed.table())
    DST_RETURN_IF_ERROR(ReadTopLevel(path, std::string(key.str()), node, config));
  return Status::Ok();
}

std::string DefaultControlPath() {
  if (::geteuid() == 0) return "/run/dst-aggregator.sock";
  if (const char* runtime = std::getenv("XDG_RUNTIME_DIR"); runtime && *runtime)
    return std::string(runtime) + "/dst-aggregator.sock";
  return "/tmp/dst-aggregator-" + std::to_string(::geteuid()) + ".sock";
}

Status CheckMemberUri(const std::string& uri) {
  if (uri.rfind("nbd://", 0) == 0 || uri.rfind("nbd+unix://", 0) == 0 || member::IsTlsUri(uri))
    return Status::Ok();
  return Status::Invalid("member " + uri +
                         ": not an NBD URI (nbd://HOST[:PORT]/NAME, "
                         "nbd+unix:///NAME?socket=PATH, or nbds:// and nbds+unix:// for TLS)");
}

Status ValidateServeConfig(ServeConfig& config) {
  if (config.volumes.empty()) return Status::Invalid("no volume: give member URIs or --config");
  std::set<std::string> names;
  for (VolumeConfig& v : config.volumes) {
    const bool raw = v.IsRaw(config.raw);
    if (raw && v.name.empty()) v.name = "vol0";
    const std::string what = v.name.empty() ? "a volume" : "volume " + v.name;
    if (v.members.empty()) return Status::Invalid(what + ": no members");
    if (!raw && v.layout_given)
      return Status::Invalid(what +
                             ": layout and chunk are recorded in the members' "
                             "superblocks; they apply to raw volumes only (--raw)");
    if (raw && !v.key_file.empty())
      return Status::Invalid(what + ": a checksum key is for assembled volumes, not raw ones");
    if (!v.name.empty() && !names.insert(v.name).second)
      return Status::Invalid("duplicate volume name '" + v.name + "'");
    for (const std::string& uri : v.members)
      DST_RETURN_IF_ERROR(CheckMemberUri(uri));
  }
  if (config.transactions.io_timeout.count() == 0)
    return Status::Invalid("io-timeout must be more than 0");
  if (config.handshake_timeout.count() == 0 || config.request_timeout.count() == 0)
    return Status::Invalid("handshake-timeout and request-timeout must be more than 0");
  DST_RETURN_IF_ERROR(server::CheckTlsConfig(config.tls));
  if (config.table_cache < kMinTableCache)
    return Status::Invalid("table-cache must be at least 1M");
  if (!config.default_volume.empty() && !names.count(config.default_volume) &&
      std::all_of(config.volumes.begin(), config.volumes.end(),
                  [](const VolumeConfig& v) { return !v.name.empty(); }))
    return Status::Invalid("default volume '" + config.default_volume + "' is not defined");
  // Last: it reads the PSK file.
  DST_RETURN_IF_ERROR(CheckServeMemberTls(config));
  return Status::Ok();
}

Status CheckServeConfig(ServeConfig& config) {
  DST_RETURN_IF_ERROR(ValidateServeConfig(config));
  asio::ip::tcp::endpoint endpoint;
  for (const std::string& address : config.listen)
    DST_RETURN_IF_ERROR(server::ParseHostPort(address, &endpoint));
  if (!config.metrics.empty())
    DST_RETURN_IF_ERROR(server::ParseHostPort(config.metrics, &endpoint).Wrap("metrics"));
  for (const std::string& path : config.unix_sockets)
    if (path.empty() || path.size() >= 108)
      return Status::Invalid("unix socket '" + path + "': empty or longer than 107 bytes");
  if (config.control.size() >= 108)
    return Status::Invalid("control socket '" + config.control + "': longer than 107 bytes");
  for (const VolumeConfig& v : config.volumes) {
    if (v.key_file.empty()) continue;
    std::vector<uint8_t> key;
    const Status s = ReadKeyFile(v.key_file, &key);
    if (!key.empty()) explicit_bzero(key.data(), key.size());
    DST_RETURN_IF_ERROR(s.Wrap(v.name.empty() ? "a volume" : "volume " + v.name));
  }
  if (config.tls.mode != server::TlsMode::kOff) {
    std::unique_ptr<server::ServerTls> tls;  // reads the key or certificate files
    DST_RETURN_IF_ERROR(server::ServerTls::Create(config.tls, &tls));
  }
  return Status::Ok();
}

}  // namespace dst::aggregator
