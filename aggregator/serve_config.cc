#include "aggregator/serve_config.h"

#include <algorithm>
#include <cerrno>
#include <set>

#include "aggregator/key_file.h"
#include "aggregator/server/listener.h"
#include "aggregator/volume_key.h"

namespace dst::aggregator {

namespace {

// Every member of every volume shares the member TLS options.
Status CheckServeMemberTls(const ServeConfig& config) {
  std::vector<std::string> uris;
  for (const VolumeConfig& v : config.volumes)
    uris.insert(uris.end(), v.members.begin(), v.members.end());
  return member::CheckMemberTls(config.member_tls, uris);
}

}  // namespace

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
  std::set<std::string> logs;
  for (VolumeConfig& v : config.volumes) {
    const bool raw = v.IsRaw(config.raw);
    if (raw && v.name.empty()) v.name = "vol0";
    const std::string what = v.name.empty() ? "a volume" : "volume " + v.name;
    if (v.members.empty()) return Status::Invalid(what + ": no members");
    if (!raw && v.layout_given)
      return Status::Invalid(what +
                             ": layout and chunk are recorded in the members' "
                             "superblocks; they apply to raw volumes only (--raw)");
    if (raw && (v.allow_degraded || v.discard_slot))
      return Status::Invalid(what +
                             ": --allow-degraded and --discard are for mirror and raid10 "
                             "volumes, which are never raw");
    if (raw && !v.auto_resync)
      return Status::Invalid(what +
                             ": --no-auto-resync is for mirror and raid10 volumes, which are never "
                             "raw");
    if (raw && !v.key_file.empty())
      return Status::Invalid(what + ": a checksum key is for assembled volumes, not raw ones");
    if (raw && !v.passphrase_file.empty())
      return Status::Invalid(what + ": a passphrase is for encrypted volumes, not raw ones");
    if (!v.key_file.empty() && !v.passphrase_file.empty())
      return Status::Invalid(what + ": give key-file or passphrase-file, not both");
    if (!v.name.empty() && !names.insert(v.name).second)
      return Status::Invalid("duplicate volume name '" + v.name + "'");
    if (v.log_size != 0 && v.log_path.empty())
      return Status::Invalid(what + ": --log-size without --log");
    if (v.log_retain.count() != 0 && v.log_path.empty())
      return Status::Invalid(what + ": --log-retain without --log");
    if (!v.log_mode.empty() && v.log_path.empty())
      return Status::Invalid(what + ": --log-mode without --log");
    if (v.log_mode == "write-through" && v.log_retain.count() != 0)
      return Status::Invalid(what +
                             ": --log-retain is for write-back logs: a write-through log keeps "
                             "every point its size allows");
    if (!v.log_path.empty() && !logs.insert(v.log_path).second)
      return Status::Invalid(what + ": staging log " + v.log_path + " is already another volume's");
    for (const std::string& uri : v.members)
      DST_RETURN_IF_ERROR(CheckMemberUri(uri));
  }
  if (config.transactions.io_timeout.count() == 0)
    return Status::Invalid("io-timeout must be more than 0");
  if (config.degrade_after.count() == 0)
    return Status::Invalid("degrade-after must be more than 0");
  if (config.handshake_timeout.count() == 0 || config.request_timeout.count() == 0)
    return Status::Invalid("handshake-timeout and request-timeout must be more than 0");
  DST_RETURN_IF_ERROR(server::CheckTlsConfig(config.tls));
  if (config.table_cache < kMinTableCache)
    return Status::Invalid("table-cache must be at least 1M");
  if (config.resync_rate_min == 0 || config.resync_rate_min > config.resync_rate_max)
    return Status::Invalid("resync-rate-min must be more than 0 and at most resync-rate-max");
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
    const std::string what = v.name.empty() ? "a volume" : "volume " + v.name;
    if (!v.key_file.empty()) DST_RETURN_IF_ERROR(CheckKeyFile(v.key_file).Wrap(what));
    if (!v.passphrase_file.empty())
      DST_RETURN_IF_ERROR(CheckPassphraseFile(v.passphrase_file).Wrap(what));
  }
  if (config.tls.mode != server::TlsMode::kOff) {
    std::unique_ptr<server::ServerTls> tls;  // reads the key or certificate files
    DST_RETURN_IF_ERROR(server::ServerTls::Create(config.tls, &tls));
  }
  return Status::Ok();
}

}  // namespace dst::aggregator
