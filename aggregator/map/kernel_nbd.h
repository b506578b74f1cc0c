// The kernel's NBD driver through its generic netlink interface (family "nbd",
// <linux/nbd-netlink.h>), the interface nbd-client and rbd-nbd use: NBD_CMD_CONNECT hands the
// kernel sockets that are already past the handshake, NBD_CMD_DISCONNECT ends a device's
// connections. Both need CAP_SYS_ADMIN.
//
// Threading: blocking, on the calling thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"

namespace dst::aggregator::map {

struct KernelConnect {
  std::optional<int> index;  // nullopt: the kernel picks a free device (or makes one)
  std::vector<int> fds;      // sockets in the transmission phase, one per connection
  uint64_t size_bytes = 0;
  uint64_t block_size = 4096;
  uint64_t server_flags = 0;        // the transmission flags (nbd::kFlag*)
  std::chrono::seconds timeout{0};  // per request; 0: the kernel waits and warns
  std::string backend;              // NBD_ATTR_BACKEND_IDENTIFIER
};

// Attaches the device; `index` hears the one the kernel used. Errors, one line each: the nbd
// module is not loaded, the device is busy (EBUSY), not permitted (EPERM), or the kernel's own
// reason.
Status ConnectDevice(const KernelConnect& request, int* index);
// Ends the device's connections; the kernel tears it down once nothing holds it open.
Status DisconnectDevice(int index);

}  // namespace dst::aggregator::map
