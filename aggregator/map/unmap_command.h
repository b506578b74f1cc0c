// `dst-aggregator unmap /dev/nbdN|VOLUME`: disconnects a device `map` attached (found by its
// backend identifier for a VOLUME; a device another client attached is refused) and waits until
// the kernel has let it go.
// `dst-aggregator list-mapped [--json]`: the devices `map` attached on this machine, from sysfs
// (mapped_devices.h).
//
// Threading: blocking, on the calling thread.
#pragma once

#include <chrono>
#include <string>

#include "aggregator/map/mapped_devices.h"
#include "common/status.h"

namespace CLI {
class App;
}  // namespace CLI

namespace dst::aggregator::map {

// How long unmap waits for the kernel to let the device go (its pid file to vanish).
inline constexpr std::chrono::seconds kUnmapTimeout{10};

struct UnmapArgs {
  std::string target;  // /dev/nbdN or a volume name
};

struct ListMappedArgs {
  bool json = false;
};

CLI::App* AddUnmapCommand(CLI::App& app, UnmapArgs* args);
CLI::App* AddListMappedCommand(CLI::App& app, ListMappedArgs* args);

// The device `target` names: a dst device, or the one dst device of the volume. EINVAL for a
// device dst did not map, ENOENT for one not connected or a volume not mapped, EEXIST for a
// volume mapped to several (name the device).
Status FindMappedDevice(const std::string& sys_block, const std::string& target, MappedDevice* out);

int RunUnmap(const UnmapArgs& args, const std::string& sys_block = kSysBlock);
int RunListMapped(const ListMappedArgs& args, const std::string& sys_block = kSysBlock);

}  // namespace dst::aggregator::map
