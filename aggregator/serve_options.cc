#include "aggregator/serve_options.h"

#include <charconv>

#include "aggregator/integrity/superblock.h"
#include "aggregator/server/listener.h"
#include "aggregator/volume/set_geometry.h"
#include "common/duration.h"
#include "common/units.h"

namespace dst::aggregator {

namespace {

using std::chrono::milliseconds;

// ---------------------------------------------------------------------------
// Parsers and printers of the value kinds. Errors say what was expected.

Status ParseNumber(std::string_view text, uint64_t min, uint64_t max, uint64_t* out) {
  uint64_t n = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size() || n < min || n > max)
    return Status::Invalid("expected " + std::to_string(min) + " to " + std::to_string(max));
  *out = n;
  return Status::Ok();
}

template <typename T>
Status ApplyNumber(std::string_view text, uint64_t min, uint64_t max, T* out) {
  uint64_t n = 0;
  DST_RETURN_IF_ERROR(ParseNumber(text, min, max, &n));
  *out = static_cast<T>(n);
  return Status::Ok();
}

Status ApplyDuration(std::string_view text, milliseconds* out) {
  const auto duration = ParseDuration(text);
  if (!duration) return Status::Invalid("expected a duration such as 5, 500ms or 2m");
  *out = *duration;
  return Status::Ok();
}

// "5s", "2m", "500ms", "0": the largest unit that keeps the value exact, as ParseDuration reads.
std::string ShowDuration(milliseconds duration) {
  const int64_t ms = duration.count();
  if (ms == 0) return "0";
  if (ms % (3600 * 1000) == 0) return std::to_string(ms / (3600 * 1000)) + "h";
  if (ms % (60 * 1000) == 0) return std::to_string(ms / (60 * 1000)) + "m";
  if (ms % 1000 == 0) return std::to_string(ms / 1000) + "s";
  return std::to_string(ms) + "ms";
}

enum class Zero : bool { kRefused, kAllowed };

Status ApplySize(std::string_view text, Zero zero, uint64_t* out) {
  const auto size = ParseSize(text);
  if (!size || (*size == 0 && zero == Zero::kRefused))
    return Status::Invalid(zero == Zero::kAllowed ? "expected a size such as 64K"
                                                  : "expected a size such as 64K, more than 0");
  *out = *size;
  return Status::Ok();
}

// "64M", "512K", "1000": the largest binary unit that keeps the value exact, as ParseSize reads.
std::string ShowSize(uint64_t bytes) {
  static constexpr const char* kUnits[] = {"", "K", "M", "G", "T", "P", "E"};
  size_t unit = 0;
  while (bytes != 0 && bytes % 1024 == 0 && unit < 6) {
    bytes /= 1024;
    ++unit;
  }
  return std::to_string(bytes) + kUnits[unit];
}

Status ApplyBoolean(std::string_view text, bool* out) {
  if (text != "true" && text != "false") return Status::Invalid("expected true or false");
  *out = text == "true";
  return Status::Ok();
}

std::string ShowBoolean(bool value) {
  return value ? "true" : "false";
}

// Checked when read, so that the file's errors carry a line number.
Status AppendHostPort(std::string_view text, std::vector<std::string>* out) {
  asio::ip::tcp::endpoint endpoint;
  Status s = server::ParseHostPort(std::string(text), &endpoint);
  if (!s.ok()) {
    // ParseHostPort names the option as --listen: the caller names it here.
    const std::string prefix = "--listen " + std::string(text) + ": ";
    std::string message = s.message();
    if (message.rfind(prefix, 0) == 0) message.erase(0, prefix.size());
    return Status::Invalid(message);
  }
  out->emplace_back(text);
  return Status::Ok();
}

std::string ShowList(const std::vector<std::string>& items) {
  std::string out;
  for (const std::string& item : items)
    out += (out.empty() ? "" : ",") + item;
  return out;
}

// The default listener goes in when none is given (ServeConfigFromArgs).

// More worker threads than this is a mistake, not a machine.
constexpr uint64_t kMaxWorkers = 1024;
constexpr uint64_t kMaxThreads = 1024;

// ---------------------------------------------------------------------------
// The tables. Captureless lambdas: each option says in one place what it sets and how.

using Config = ServeConfig;
using Form = OptionForm;

const ServeOption kServeOptions[] = {
    // Where clients connect.
    {"listen", Form::kTextList, "TCP address HOST:PORT (default 127.0.0.1:10809)",
     [](std::string_view v, Config* c) { return AppendHostPort(v, &c->listen); },
     [](const Config& c) { return ShowList(c.listen); }},
    {"unix", Form::kTextList, "Unix socket path",
     [](std::string_view v, Config* c) {
       c->unix_sockets.emplace_back(v);
       return Status::Ok();
     },
     [](const Config& c) { return ShowList(c.unix_sockets); }},
    {"default", Form::kText, "the volume a client gets when it asks for the empty export name",
     [](std::string_view v, Config* c) {
       c->default_volume = v;
       return Status::Ok();
     },
     [](const Config& c) { return c.default_volume; }},
    {"raw", Form::kBoolean,
     "serve members as they are, with no metadata or checksums (volumes that do not say)",
     [](std::string_view v, Config* c) { return ApplyBoolean(v, &c->raw); },
     [](const Config& c) { return ShowBoolean(c.raw); }},
    // Members.
    {"connections", Form::kNumber, "connections per multi-conn member",
     [](std::string_view v, Config* c) {
       return ApplyNumber(v, 1, 16, &c->connections_per_member);
     },
     [](const Config& c) { return std::to_string(c.connections_per_member); }},
    {"member-max-inflight", Form::kNumber,
     "member I/Os in flight per member connection; more wait their turn, and their deadline "
     "starts when they are sent",
     [](std::string_view v, Config* c) {
       return ApplyNumber(v, 1, 65536, &c->transactions.max_in_flight);
     },
     [](const Config& c) { return std::to_string(c.transactions.max_in_flight); }},
    {"io-timeout", Form::kQuantity, "deadline of one member I/O",
     [](std::string_view v, Config* c) { return ApplyDuration(v, &c->transactions.io_timeout); },
     [](const Config& c) { return ShowDuration(c.transactions.io_timeout); }},
    {"retries", Form::kNumber, "resends of one member I/O (0: bounded by --retry-window only)",
     [](std::string_view v, Config* c) {
       return ApplyNumber(v, 0, 1000000, &c->transactions.retries);
     },
     [](const Config& c) { return std::to_string(c.transactions.retries); }},
    {"retry-window", Form::kQuantity, "time after which a member I/O is not resent (0: no limit)",
     [](std::string_view v, Config* c) { return ApplyDuration(v, &c->transactions.retry_window); },
     [](const Config& c) { return ShowDuration(c.transactions.retry_window); }},
    {"degrade-after", Form::kQuantity,
     "mirror and raid10: a copy that has not answered an I/O for this long is demoted to stale "
     "(its members give up after min(retry-window, degrade-after))",
     [](std::string_view v, Config* c) { return ApplyDuration(v, &c->degrade_after); },
     [](const Config& c) { return ShowDuration(c.degrade_after); }},
    {"return-probe-interval", Form::kQuantity,
     "mirror and raid10: probe a member that is out this often, and bring it back once it "
     "answers (0: only at the next start)",
     [](std::string_view v, Config* c) { return ApplyDuration(v, &c->return_probe_interval); },
     [](const Config& c) { return ShowDuration(c.return_probe_interval); }},
    {"keepalive", Form::kQuantity, "ping idle member connections this often (0: never)",
     [](std::string_view v, Config* c) { return ApplyDuration(v, &c->transactions.keepalive); },
     [](const Config& c) { return ShowDuration(c.transactions.keepalive); }},
    {"fencing", Form::kText,
     "auto, require or off (default: auto; require for the members of mirror and raid10 volumes)",
     [](std::string_view v, Config* c) {
       if (!member::ParseFencingMode(v, &c->transactions.fencing))
         return Status::Invalid("expected auto, require or off");
       c->fencing_given = true;
       return Status::Ok();
     },
     [](const Config& c) { return std::string(member::FencingModeName(c.transactions.fencing)); }},
    {"stats-interval", Form::kQuantity, "log member counters this often (0: only on SIGUSR1)",
     [](std::string_view v, Config* c) { return ApplyDuration(v, &c->stats_interval); },
     [](const Config& c) { return ShowDuration(c.stats_interval); }},
    {"table-cache", Form::kQuantity, "memory for checksum table pages, per assembled volume",
     [](std::string_view v, Config* c) { return ApplySize(v, Zero::kAllowed, &c->table_cache); },
     [](const Config& c) { return ShowSize(c.table_cache); }},
    {"state-dir", Form::kText,
     "directory where the generations of keyed volumes' table pages are recorded, so that an "
     "export host cannot put back an older table page (default: none, kept in memory only)",
     [](std::string_view v, Config* c) {
       c->state_dir = v;
       return Status::Ok();
     },
     [](const Config& c) { return c.state_dir; }},
    {"threads", Form::kNumber,
     "event loops that client connections run on, each on its own thread; the volumes and their "
     "members stay on the first (default: the online cores)",
     [](std::string_view v, Config* c) { return ApplyNumber(v, 1, kMaxThreads, &c->threads); },
     [](const Config& c) { return std::to_string(c.threads); }},
    {"workers", Form::kNumber,
     "threads that checksum, encrypt and decrypt the large requests of assembled volumes (0: "
     "all on the event loop; default: the online cores)",
     [](std::string_view v, Config* c) { return ApplyNumber(v, 0, kMaxWorkers, &c->workers); },
     [](const Config& c) { return std::to_string(c.workers); }},
    {"resync-rate-min", Form::kQuantity,
     "bytes per second that resync, rebuild and scrub may always use, however busy the clients",
     [](std::string_view v, Config* c) {
       return ApplySize(v, Zero::kRefused, &c->resync_rate_min);
     },
     [](const Config& c) { return ShowSize(c.resync_rate_min); }},
    {"resync-rate-max", Form::kQuantity,
     "bytes per second that resync, rebuild and scrub may use while clients are idle",
     [](std::string_view v, Config* c) {
       return ApplySize(v, Zero::kRefused, &c->resync_rate_max);
     },
     [](const Config& c) { return ShowSize(c.resync_rate_max); }},
    // Monitoring.
    {"control", Form::kText,
     "control socket for `status` (default: /run/dst-aggregator.sock for root, else "
     "$XDG_RUNTIME_DIR/dst-aggregator.sock or a private directory in $TMPDIR; none: no socket)",
     [](std::string_view v, Config* c) {
       c->control = v;
       return Status::Ok();
     },
     [](const Config& c) { return c.control; }},
    {"metrics", Form::kText, "serve Prometheus metrics over HTTP on HOST:PORT (/metrics)",
     [](std::string_view v, Config* c) {
       std::vector<std::string> address;
       DST_RETURN_IF_ERROR(AppendHostPort(v, &address));
       c->metrics = address[0];
       return Status::Ok();
     },
     [](const Config& c) { return c.metrics; }},
    // Clients.
    {"tls", Form::kText, "client TLS: off, on (clients choose) or require",
     [](std::string_view v, Config* c) {
       if (!server::ParseTlsMode(std::string(v), &c->tls.mode))
         return Status::Invalid("expected off, on or require");
       return Status::Ok();
     },
     [](const Config& c) { return std::string(server::TlsModeName(c.tls.mode)); }},
    {"tls-psk", Form::kText, "client TLS with pre-shared keys: identity:hexkey lines (psktool)",
     [](std::string_view v, Config* c) {
       c->tls.psk_file = v;
       return Status::Ok();
     },
     [](const Config& c) { return c.tls.psk_file; }},
    {"tls-certificates", Form::kText,
     "client TLS with X.509: DIR with server-cert.pem, server-key.pem, ca-cert.pem",
     [](std::string_view v, Config* c) {
       c->tls.certificates_dir = v;
       return Status::Ok();
     },
     [](const Config& c) { return c.tls.certificates_dir; }},
    {"tls-verify-peer", Form::kBoolean,
     "X.509: require client certificates signed by DIR/ca-cert.pem",
     [](std::string_view v, Config* c) { return ApplyBoolean(v, &c->tls.verify_peer); },
     [](const Config& c) { return ShowBoolean(c.tls.verify_peer); }},
    {"max-connections", Form::kNumber, "client connections open at once; more are closed at accept",
     [](std::string_view v, Config* c) { return ApplyNumber(v, 1, 1000000, &c->max_connections); },
     [](const Config& c) { return std::to_string(c.max_connections); }},
    {"max-connections-per-address", Form::kNumber,
     "client connections open at once from one address (an IPv6 /64); 0: three quarters of "
     "max-connections",
     [](std::string_view v, Config* c) {
       return ApplyNumber(v, 0, 1000000, &c->max_connections_per_address);
     },
     [](const Config& c) { return std::to_string(c.max_connections_per_address); }},
    {"handshake-timeout", Form::kQuantity, "time a client has to choose an export",
     [](std::string_view v, Config* c) { return ApplyDuration(v, &c->handshake_timeout); },
     [](const Config& c) { return ShowDuration(c.handshake_timeout); }},
    {"request-timeout", Form::kQuantity,
     "time a client has to finish sending a started request, or to read a reply",
     [](std::string_view v, Config* c) { return ApplyDuration(v, &c->request_timeout); },
     [](const Config& c) { return ShowDuration(c.request_timeout); }},
    {"max-inflight-per-client", Form::kQuantity,
     "request data held in memory per client before its reads pause",
     [](std::string_view v, Config* c) {
       return ApplySize(v, Zero::kRefused, &c->max_inflight_per_client);
     },
     [](const Config& c) { return ShowSize(c.max_inflight_per_client); }},
    {"max-inflight", Form::kQuantity,
     "request data held in memory for all clients together before their reads pause",
     [](std::string_view v, Config* c) {
       return ApplySize(v, Zero::kRefused, &c->max_inflight_total);
     },
     [](const Config& c) { return ShowSize(c.max_inflight_total); }},
    // How the aggregator authenticates to TLS members (create and inspect share these).
    {"member-tls-psk", Form::kText,
     "TLS members: file of pre-shared keys (identity:hexkey lines, as psktool writes them)",
     [](std::string_view v, Config* c) {
       c->member_tls.psk_file = v;
       return Status::Ok();
     },
     [](const Config& c) { return c.member_tls.psk_file; }},
    {"member-tls-username", Form::kText,
     "TLS members: the identity to use from --member-tls-psk (default: the login name)",
     [](std::string_view v, Config* c) {
       c->member_tls.username = v;
       return Status::Ok();
     },
     [](const Config& c) { return c.member_tls.username; }},
    {"member-tls-certificates", Form::kText,
     "TLS members: X.509 directory with ca-cert.pem (and client-cert.pem, client-key.pem)",
     [](std::string_view v, Config* c) {
       c->member_tls.certificates_dir = v;
       return Status::Ok();
     },
     [](const Config& c) { return c.member_tls.certificates_dir; }},
    // Unset unless given, so that libnbd's default (check) stands.
    {"member-tls-verify-peer", Form::kBoolean,
     "TLS members over TCP with X.509: check the member's certificate against its host name "
     "(default: yes)",
     [](std::string_view v, Config* c) {
       bool verify = false;
       DST_RETURN_IF_ERROR(ApplyBoolean(v, &verify));
       c->member_tls.verify_peer = verify;
       return Status::Ok();
     },
     [](const Config& c) {
       return c.member_tls.verify_peer ? ShowBoolean(*c.member_tls.verify_peer) : std::string();
     }},
};

const VolumeOption kVolumeOptions[] = {
    {"name", Form::kText,
     "volume (export) name; raw: default vol0, assembled: must match the members",
     [](std::string_view v, VolumeConfig* c) {
       c->name = v;
       return Status::Ok();
     },
     [](const VolumeConfig& c) { return c.name; }},
    {"description", Form::kText, "volume description",
     [](std::string_view v, VolumeConfig* c) {
       c->description = v;
       return Status::Ok();
     },
     [](const VolumeConfig& c) { return c.description; }},
    {"layout", Form::kText, "raw volumes: linear or stripe",
     [](std::string_view v, VolumeConfig* c) {
       volume::LayoutKind kind = volume::LayoutKind::kLinear;
       if (!volume::ParseLayoutKind(v, &kind).ok())
         return Status::Invalid("expected linear or stripe");
       // Which copies are current is recorded in the superblocks: raw members have none.
       if (volume::IsRedundant(kind))
         return Status::Invalid(
             "mirror and raid10 need the member format: create the volume with dst-aggregator "
             "create --layout " +
             std::string(v) + " and serve it without --raw and --layout");
       c->layout = kind;
       c->layout_given = true;
       return Status::Ok();
     },
     [](const VolumeConfig& c) { return std::string(volume::LayoutKindName(c.layout)); }},
    {"chunk", Form::kQuantity, "raw stripe volumes: chunk size (power of two)",
     [](std::string_view v, VolumeConfig* c) {
       DST_RETURN_IF_ERROR(ApplySize(v, Zero::kAllowed, &c->chunk_size));
       c->layout_given = true;
       return Status::Ok();
     },
     [](const VolumeConfig& c) { return ShowSize(c.chunk_size); }},
    {"key-file", Form::kText,
     "checksum key of a blake2b-keyed volume, or a key file that opens a key slot of an encrypted "
     "one",
     [](std::string_view v, VolumeConfig* c) {
       c->key_file = v;
       return Status::Ok();
     },
     [](const VolumeConfig& c) { return c.key_file; }},
    {"passphrase-file", Form::kText, "a passphrase that opens a key slot of an encrypted volume",
     [](std::string_view v, VolumeConfig* c) {
       c->passphrase_file = v;
       return Status::Ok();
     },
     [](const VolumeConfig& c) { return c.passphrase_file; }},
    {"allow-degraded", Form::kBoolean,
     "mirror and raid10: serve even though a member the superblocks call current is missing "
     "(it becomes stale)",
     [](std::string_view v, VolumeConfig* c) { return ApplyBoolean(v, &c->allow_degraded); },
     [](const VolumeConfig& c) { return ShowBoolean(c.allow_degraded); }},
    {"auto-resync", Form::kBoolean,
     "mirror and raid10: resync or rebuild a stale copy that is present at start (default: yes)",
     [](std::string_view v, VolumeConfig* c) { return ApplyBoolean(v, &c->auto_resync); },
     [](const VolumeConfig& c) { return ShowBoolean(c.auto_resync); }},
    {"discard", Form::kNumber,
     "mirror and raid10: set slot SLOT (a member index) aside to be rebuilt from the others; "
     "resolves a split brain",
     [](std::string_view v, VolumeConfig* c) {
       uint32_t slot = 0;
       DST_RETURN_IF_ERROR(ApplyNumber(v, 0, integrity::kMaxMembers - 1, &slot));
       c->discard_slot = slot;
       return Status::Ok();
     },
     [](const VolumeConfig& c) {
       return c.discard_slot ? std::to_string(*c.discard_slot) : std::string();
     }},
    {"log", Form::kText,
     "staging log (file or block device) that takes the volume's writes before its members "
     "(docs/staging-log.md); formatted on first use",
     [](std::string_view v, VolumeConfig* c) {
       c->log_path = v;
       return Status::Ok();
     },
     [](const VolumeConfig& c) { return c.log_path; }},
    {"log-size", Form::kQuantity,
     "size of the staging log file --log creates when it does not exist (an existing log keeps "
     "its size)",
     [](std::string_view v, VolumeConfig* c) { return ApplySize(v, Zero::kRefused, &c->log_size); },
     [](const VolumeConfig& c) { return c.log_size == 0 ? std::string() : ShowSize(c.log_size); }},
    {"log-retain", Form::kQuantity,
     "keep the staging log's records this long before destaging them, so that every point of "
     "that window can be exported read-only as VOLUME@SEQ or VOLUME@TIME (0: destage at once)",
     [](std::string_view v, VolumeConfig* c) { return ApplyDuration(v, &c->log_retain); },
     [](const VolumeConfig& c) {
       return c.log_retain.count() == 0 ? std::string() : ShowDuration(c.log_retain);
     }},
    {"log-mode", Form::kText,
     "write-back (default): acknowledge writes once the staging log has them and destage them "
     "later; write-through: acknowledge once the members have them, the log keeping only the "
     "before-images that snapshots need",
     [](std::string_view v, VolumeConfig* c) {
       if (v != "write-back" && v != "write-through")
         return Status::Invalid("expected write-back or write-through");
       c->log_mode = v;
       return Status::Ok();
     },
     [](const VolumeConfig& c) { return c.log_mode; }},
};

template <typename O>
const O* Find(std::span<const O> options, std::string_view name) {
  for (const O& o : options)
    if (o.name == name) return &o;
  return nullptr;
}

}  // namespace

std::span<const ServeOption> ServeOptions() {
  return kServeOptions;
}

std::span<const VolumeOption> VolumeOptions() {
  return kVolumeOptions;
}

const ServeOption* FindServeOption(std::string_view name) {
  return Find(ServeOptions(), name);
}

const VolumeOption* FindVolumeOption(std::string_view name) {
  return Find(VolumeOptions(), name);
}

}  // namespace dst::aggregator
