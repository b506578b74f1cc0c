// The kernel's NBD devices as sysfs shows them, and the backend identifier that marks the ones
// `dst-aggregator map` attached: "dst:VOLUME@ENDPOINT#N" (VOLUME with '%', '@', spaces and
// control bytes percent-encoded; ENDPOINT "HOST:PORT" or "unix:PATH"; N the connections, which
// sysfs does not show: the NBD driver makes one hardware queue per connection, but no more than
// the machine has CPUs, in /sys/block/nbdN/mq/). The kernel keeps it in
// /sys/block/nbdN/backend while the device is connected; /sys/block/nbdN/pid exists while it is
// connected; /sys/block/nbdN/size is in 512-byte sectors.
//
// `sys_block` is the sysfs directory of block devices, "/sys/block" outside tests.
//
// Threading: blocking file-system reads; any thread.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace dst::aggregator::map {

inline constexpr char kSysBlock[] = "/sys/block";

struct BackendId {
  std::string volume;
  std::string endpoint;
  unsigned connections = 0;  // 0: not recorded
  bool operator==(const BackendId&) const = default;
};

std::string FormatBackendId(const BackendId& id);
// nullopt for an identifier that is not ours (another client's, or none).
std::optional<BackendId> ParseBackendId(std::string_view text);

struct MappedDevice {
  int index = -1;
  std::string device;            // "/dev/nbdN"
  std::string backend;           // as the kernel holds it; "" for none
  std::optional<BackendId> dst;  // set when dst mapped it
  uint64_t size_bytes = 0;
  int connections = 0;      // as recorded in the identifier, else the hardware queues
  std::optional<long> pid;  // the process that connected it
};

// N for "/dev/nbdN" or "nbdN"; nullopt otherwise.
std::optional<int> NbdIndex(std::string_view device);

// The device nbdN if it is connected (its pid file exists), nullopt otherwise.
std::optional<MappedDevice> ReadMappedDevice(const std::string& sys_block, int index);
// Every connected NBD device, by index; dst's and others'.
std::vector<MappedDevice> ListMappedDevices(const std::string& sys_block);
// The connected devices dst mapped for `volume`, by index.
std::vector<MappedDevice> DevicesOfVolume(const std::vector<MappedDevice>& devices,
                                          const std::string& volume);

// The devices dst mapped (others are left out): a table with a header, or a JSON array.
std::string MappedTable(const std::vector<MappedDevice>& devices);
std::string MappedJson(const std::vector<MappedDevice>& devices);

// `status` with the devices dst mapped on this machine: the text answer with a blank line and
// MappedTable after it when there are any; the JSON object with "mapped": MappedJson as its last
// member. An error answer ("error: ...") is left as it is.
std::string WithMappedTable(const std::string& answer, const std::vector<MappedDevice>& devices);
std::string WithMappedJson(const std::string& answer, const std::vector<MappedDevice>& devices);

}  // namespace dst::aggregator::map
