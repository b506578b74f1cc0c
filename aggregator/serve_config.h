// ServeConfig: what `dst-aggregator serve` is asked to serve, from the
// command line or a TOML --config file (see docs/aggregator.md). Parsing
// only; nothing is connected here. Errors name the option or file:line.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "aggregator/member/transaction_policy.h"
#include "aggregator/volume/layout.h"
#include "common/status.h"

namespace dst::aggregator {

struct VolumeConfig {
  std::string name = "vol0";
  std::string description;
  volume::LayoutKind layout = volume::LayoutKind::kLinear;
  uint64_t chunk_size = volume::kDefaultChunkSize;
  std::vector<std::string> members;  // NBD URIs, in layout order
};

struct ServeConfig {
  std::vector<std::string> listen;  // HOST:PORT
  std::vector<std::string> unix_sockets;
  std::string default_volume;
  unsigned connections_per_member = 2;
  uint64_t max_inflight_per_client = 64u << 20;
  uint64_t max_inflight_total = 512u << 20;
  // Deadlines, resends, keepalive and fencing of member I/O.
  member::TransactionOptions transactions;
  // A stats line per member this often (and on SIGUSR1); 0: only on SIGUSR1.
  std::chrono::milliseconds stats_interval{0};
  std::vector<VolumeConfig> volumes;
};

// Reads a TOML file into *config (keys not in the file keep their values).
Status LoadServeConfig(const std::string& path, ServeConfig* config);
// Checks the whole: at least one volume, each with members, unique names.
Status ValidateServeConfig(const ServeConfig& config);
// Checks that a member URI is one we can reach: nbd:// or nbd+unix://.
Status CheckMemberUri(const std::string& uri);

}  // namespace dst::aggregator
