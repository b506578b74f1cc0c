// ServeConfig: what `dst-aggregator serve` is asked to serve, from the
// command line or a TOML --config file (see docs/aggregator.md). Parsing
// only; nothing is connected here. Errors name the option or file:line.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "aggregator/member/member_tls.h"
#include "aggregator/member/transaction_policy.h"
#include "aggregator/server/tls.h"
#include "aggregator/volume/layout.h"
#include "common/status.h"
#include "common/worker_pool.h"

namespace dst::aggregator {

// The smallest --table-cache: a few pages per request in flight.
inline constexpr uint64_t kMinTableCache = uint64_t{1} << 20;

struct VolumeConfig {
  // Raw volumes: "vol0" when not given. Assembled volumes: the name in their superblocks, which
  // a name given here must match.
  std::string name;
  std::string description;
  // Raw: members served as they are, with this layout. Otherwise assembled from the members'
  // superblocks (docs/integrity.md). Unset: ServeConfig::raw.
  std::optional<bool> raw;
  volume::LayoutKind layout = volume::LayoutKind::kLinear;
  uint64_t chunk_size = volume::kDefaultChunkSize;
  bool layout_given = false;         // layout or chunk set: refused for assembled volumes
  std::string key_file;              // the checksum key of a keyed assembled volume, or a key
                                     // file that opens a key slot of an encrypted one
  std::string passphrase_file;       // a passphrase that opens a key slot of an encrypted volume
  std::vector<std::string> members;  // NBD URIs: raw in layout order, assembled in any order
  // Mirror and raid10 only (docs/redundancy.md "Assembly"): serve without a member the freshest
  // superblock marks current, which then becomes stale; and set a slot aside to be rebuilt,
  // which is how a split brain is resolved. Linear and stripe volumes refuse both.
  bool allow_degraded = false;
  std::optional<uint32_t> discard_slot;
  // Mirror and raid10 (docs/redundancy.md "Resync and rebuild"): a stale copy that is present at
  // start is resynced or rebuilt in the background; false (--no-auto-resync) leaves it stale.
  bool auto_resync = true;
  // serve --cluster (docs/cluster.md, "Ownership"): the least ownership epoch the assembly
  // claims, the revision of the volume's lock; 0 otherwise.
  uint64_t min_ownership_epoch = 0;
  // Staging log (docs/staging-log.md, "Serving through the log"): writes are acknowledged once
  // in this file or device, and applied to the members later. Empty: none. log_size creates a
  // missing file of that size (0: the log must exist).
  std::string log_path;
  uint64_t log_size = 0;
  // Records younger than this stay in the log, as snapshot points (docs/staging-log.md,
  // "Snapshots"); 0: destaged at once.
  std::chrono::milliseconds log_retain{0};
  // "write-back" (the default when empty) or "write-through": acknowledge once the log has a write
  // and destage it later, or once the members have it, the log keeping before-images for
  // snapshots only (docs/staging-log.md §10).
  std::string log_mode;

  bool IsRaw(bool default_raw) const { return raw.value_or(default_raw); }
};

struct ServeConfig {
  std::vector<std::string> listen;  // HOST:PORT
  std::vector<std::string> unix_sockets;
  std::string default_volume;
  unsigned connections_per_member = 2;
  uint64_t max_inflight_per_client = 64u << 20;
  uint64_t max_inflight_total = 512u << 20;
  // Clients: TLS, and the bounds that keep one client from starving the others.
  server::TlsConfig tls;
  size_t max_connections = 1024;
  // From one address (an IPv6 /64); 0: three quarters of max_connections.
  size_t max_connections_per_address = 0;
  std::chrono::milliseconds handshake_timeout{10000};
  std::chrono::milliseconds request_timeout{30000};
  // Deadlines, resends, keepalive and fencing of member I/O.
  member::TransactionOptions transactions;
  // --fencing (or `fencing =`) was given: it then applies to mirror and raid10 volumes too,
  // whose members otherwise require fencing (single writer, docs/redundancy.md).
  bool fencing_given = false;
  // Members of mirror and raid10 volumes give up on an unanswered I/O after
  // min(retry-window, degrade-after), so that a silent copy is demoted and the set goes on.
  std::chrono::milliseconds degrade_after{10000};
  // Mirror and raid10 volumes with auto-resync (docs/redundancy.md "A member comes back"): how
  // often a member that is out (missing at start, or demoted while serving) is probed, and
  // brought back once it answers; 0: never, it comes back at the next start only.
  std::chrono::milliseconds return_probe_interval{5000};
  // How the aggregator authenticates to TLS members (nbds://, nbds+unix://): the member-tls-*
  // keys and --member-tls-* options, for every member.
  member::MemberTls member_tls;
  // A stats line per member this often (and on SIGUSR1); 0: only on SIGUSR1.
  std::chrono::milliseconds stats_interval{0};
  // Volumes that do not say: served raw (--raw) or assembled from superblocks.
  bool raw = false;
  // Control socket for `dst-aggregator status`: "" for the default path
  // (DefaultControlPath), "none" for no socket.
  std::string control;
  // HOST:PORT of the Prometheus metrics endpoint; "" for none.
  std::string metrics;
  // Memory for checksum table pages, per assembled volume.
  uint64_t table_cache = uint64_t{64} << 20;
  // Directory of the files that anchor the table generations of volumes with table tags
  // (docs/encryption.md, "Rollback"); "" for none (anchored in memory while serving).
  std::string state_dir;
  // Event loops client connections run on (aggregator/server/event_loops.h): the home loop, with
  // the volumes and members, and threads - 1 more. Default: the online cores.
  size_t threads = DefaultWorkerCount();
  // Threads that compute the checksums and ciphers of large requests of assembled volumes
  // (common/worker_pool.h); 0: all on the event loop.
  size_t workers = DefaultWorkerCount();
  // Background work of assembled volumes (resync, rebuild, scrub), bytes per second: the floor
  // always allowed, and the most while clients are idle (docs/redundancy.md, "Throttle").
  // `dst-aggregator resync-rate` changes them while serving.
  uint64_t resync_rate_min = uint64_t{1} << 20;
  uint64_t resync_rate_max = uint64_t{200} << 20;
  std::vector<VolumeConfig> volumes;
};

// Checks the whole: at least one volume, each with members, unique names, no layout options on
// assembled volumes, member TLS options that fit the members and name readable files
// (member::CheckMemberTls). Names raw volumes that have none "vol0".
Status ValidateServeConfig(ServeConfig& config);
// Everything `serve --check-config` can check without connecting to anything:
// ValidateServeConfig, then every listen, unix, control and metrics address
// and every key file. Errors name the option or key.
Status CheckServeConfig(ServeConfig& config);

// Checks that a member URI is one we can reach: nbd://, nbd+unix://, or with TLS nbds://,
// nbds+unix://.
Status CheckMemberUri(const std::string& uri);

}  // namespace dst::aggregator
