// `dst-aggregator map [--device /dev/nbdN] [--connections N] [--timeout S] [--block-size B]
//   [--read-only] [--print-endpoint]
//   [--control PATH | --connect HOST:PORT | --socket PATH | --cluster URL [--etcd-*]] VOLUME`
// attaches a volume to a kernel NBD device (docs/kernel-client.md): opens N connections to the
// aggregator, takes each through the NBD handshake for the volume (nbd_handshake_client.h), hands
// them to the kernel (kernel_nbd.h) marked with the backend identifier "dst:VOLUME@ENDPOINT#N"
// (mapped_devices.h), waits until the device has the volume's size and prints "/dev/nbdN".
// With --cluster the aggregator is the volume's owner in the cluster catalog, at the NBD address
// its owner record advertises (cluster/owner_endpoint.h). --print-endpoint stops after one
// handshake with the volume there and prints where it is served (HOST:PORT or unix:PATH).
//
// Threading: blocking, on the calling thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

#include "aggregator/cluster/cluster_options.h"
#include "aggregator/map/mapped_devices.h"
#include "common/status.h"

namespace CLI {
class App;
}  // namespace CLI

namespace dst::aggregator::map {

// The kernel's deadline for one request must be above the aggregator's --retry-window, so that a
// request that waits on a member that is down gets the aggregator's answer (data, or EIO once the
// window is spent) before the kernel gives up on the connection, which it then drops for good (it
// does not reconnect): the retry window plus a minute, and at least 120 s (twice the default
// window), which is also the default when the aggregator does not say (--connect, --socket).
inline constexpr std::chrono::seconds kDefaultTimeout{120};
inline constexpr std::chrono::seconds kTimeoutMargin{60};
std::chrono::seconds DefaultTimeout(std::optional<std::chrono::milliseconds> retry_window);
// 4096: whole 4 KiB blocks in every request, which a checksummed volume needs to avoid
// read-modify-write; the largest block size the kernel accepts.
inline constexpr uint64_t kDefaultBlockSize = 4096;
// Connections when the aggregator does not say how many event loops it runs (--connect,
// --socket): one, as many as the aggregator has loops today.
inline constexpr unsigned kDefaultConnections = 1;
// The NBD driver's limit on connections is far higher; more than this is no use against one
// aggregator.
inline constexpr unsigned kMaxConnections = 64;
// How long map waits for the handshake of each connection, and for the device to show its size.
inline constexpr std::chrono::seconds kHandshakeTimeout{10};
inline constexpr std::chrono::seconds kDeviceTimeout{10};

struct MapArgs {
  std::string volume;
  std::string device;        // "" for a free one the kernel picks
  unsigned connections = 0;  // 0: the aggregator's event loops (kDefaultConnections if unknown)
  std::optional<unsigned> timeout_seconds;  // nullopt: DefaultTimeout
  uint64_t block_size = kDefaultBlockSize;
  bool read_only = false;
  std::string control;  // "" for the default control socket
  std::string connect;  // HOST:PORT
  std::string socket;   // a Unix socket path
  cluster::ClusterArgs cluster;
  bool print_endpoint = false;  // check the volume at its endpoint and print it; map nothing
};

CLI::App* AddMapCommand(CLI::App& app, MapArgs* args);
// The arguments CLI11 cannot check alone: the device name, the block size, the connections.
Status CheckMapArgs(const MapArgs& args);
// EBUSY when sysfs shows device `index` connected, naming what it is mapped to.
Status CheckDeviceFree(const std::string& sys_block, int index);
// 0 after printing the device (the endpoint with --print-endpoint); 1 with one error line.
int RunMap(const MapArgs& args, const std::string& sys_block = kSysBlock);

}  // namespace dst::aggregator::map
