#include "aggregator/serve_config.h"

#include <string.h>  // explicit_bzero

#include <algorithm>
#include <cerrno>
#include <fstream>
#include <set>
#include <sstream>

#define TOML_EXCEPTIONS 0
#include <toml++/toml.h>

#include "aggregator/key_file.h"
#include "aggregator/serve_options.h"
#include "aggregator/server/listener.h"

namespace dst::aggregator {

namespace {

std::string Where(const std::string& path, const toml::node& node) {
  return path + ":" + std::to_string(node.source().begin.line);
}

// The key file can be read and holds a key; the key itself is wiped at once.
Status CheckKeyFile(const std::string& path) {
  std::vector<uint8_t> key;
  const Status s = ReadKeyFile(path, &key);
  if (!key.empty()) explicit_bzero(key.data(), key.size());
  return s;
}

// The text a scalar stands for, as it would be written on the command line; "" for what no
// option accepts (a float, a date, a table), which the option's parser then refuses.
std::string ScalarText(const toml::node& node) {
  if (const auto* s = node.as_string()) return s->get();
  if (const auto* i = node.as_integer()) return std::to_string(i->get());
  if (const auto* b = node.as_boolean()) return b->get() ? "true" : "false";
  return "";
}

// One key of the file, read by the option's own parser (serve_options.h): the same as
// --NAME on the command line, with "FILE:LINE: NAME: " in front of any error.
template <typename Config>
Status ReadOption(const std::string& where, const toml::node& node, const Option<Config>& option,
                  Config* config) {
  switch (option.form) {
    case OptionForm::kText:
      if (!node.is_string()) return Status::Invalid(where + ": expected a string");
      break;
    case OptionForm::kBoolean:
      if (!node.is_boolean()) return Status::Invalid(where + ": expected true or false");
      break;
    case OptionForm::kTextList: {
      const auto* array = node.as_array();
      if (!array) return Status::Invalid(where + ": expected an array of strings");
      for (const auto& item : *array) {
        if (!item.is_string()) return Status::Invalid(where + ": expected an array of strings");
        const std::string text = item.as_string()->get();
        // An item is named by its value, as on the command line ("listen nowhere: ...").
        DST_RETURN_IF_ERROR(option.apply(text, config).Wrap(where + " " + text));
      }
      return Status::Ok();
    }
    case OptionForm::kNumber:
    case OptionForm::kQuantity:
      break;
  }
  return option.apply(ScalarText(node), config).Wrap(where);
}

// A [[volume]] table: the volume options, plus what only the file says per volume (its members,
// which the command line gives as arguments, and raw, which --raw sets for all).
Status ReadVolume(const std::string& path, const toml::table& table, VolumeConfig* v) {
  for (const auto& [key, node] : table) {
    const std::string k(key.str());
    const std::string where = Where(path, node) + ": " + k;
    if (const VolumeOption* option = FindVolumeOption(k)) {
      DST_RETURN_IF_ERROR(ReadOption(where, node, *option, v));
      if (k == "key-file") DST_RETURN_IF_ERROR(CheckKeyFile(v->key_file).Wrap(where));
    } else if (k == "members") {
      const auto* array = node.as_array();
      if (!array) return Status::Invalid(where + ": expected an array of strings");
      for (const auto& item : *array) {
        if (!item.is_string()) return Status::Invalid(where + ": expected an array of strings");
        v->members.push_back(item.as_string()->get());
      }
    } else if (k == "raw") {
      const auto* b = node.as_boolean();
      if (!b) return Status::Invalid(where + ": expected true or false");
      v->raw = b->get();
    } else {
      return Status::Invalid(Where(path, node) + ": unknown key '" + k + "' in [[volume]]");
    }
  }
  return Status::Ok();
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
  if (const ServeOption* option = FindServeOption(k))
    return ReadOption(where, node, *option, config);
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

Status ParseServeConfig(std::string_view text, const std::string& source, ServeConfig* config) {
  toml::parse_result parsed = toml::parse(text, source);
  if (!parsed) {
    const auto& err = parsed.error();
    return Status::Invalid(source + ":" + std::to_string(err.source().begin.line) + ": " +
                           std::string(err.description()));
  }
  for (const auto& [key, node] : parsed.table())
    DST_RETURN_IF_ERROR(ReadTopLevel(source, std::string(key.str()), node, config));
  return Status::Ok();
}

Status LoadServeConfig(const std::string& path, ServeConfig* config) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::FromErrno(errno, path);
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return Status::FromErrno(EIO, path);
  return ParseServeConfig(text.str(), path, config);
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
  for (const VolumeConfig& v : config.volumes)
    if (!v.key_file.empty())
      DST_RETURN_IF_ERROR(
          CheckKeyFile(v.key_file).Wrap(v.name.empty() ? "a volume" : "volume " + v.name));
  if (config.tls.mode != server::TlsMode::kOff) {
    std::unique_ptr<server::ServerTls> tls;  // reads the key or certificate files
    DST_RETURN_IF_ERROR(server::ServerTls::Create(config.tls, &tls));
  }
  return Status::Ok();
}

}  // namespace dst::aggregator
