#include "aggregator/map/unmap_command.h"

#include <cerrno>
#include <cstdio>
#include <thread>

#include <CLI/CLI.hpp>

#include "aggregator/command_error.h"
#include "aggregator/map/kernel_nbd.h"

namespace dst::aggregator::map {

namespace {

Status WaitUntilGone(const std::string& sys_block, const MappedDevice& device) {
  const auto deadline = std::chrono::steady_clock::now() + kUnmapTimeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (!ReadMappedDevice(sys_block, device.index)) return Status::Ok();
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return Status::Error(EBUSY, device.device + " is disconnected but still held after " +
                                  std::to_string(kUnmapTimeout.count()) +
                                  " s (mounted, or open in a process?)");
}

}  // namespace

Status FindMappedDevice(const std::string& sys_block, const std::string& target,
                        MappedDevice* out) {
  if (const std::optional<int> index = NbdIndex(target); index && target.rfind("/dev/", 0) == 0) {
    std::optional<MappedDevice> d = ReadMappedDevice(sys_block, *index);
    if (!d) return Status::Error(ENOENT, target + " is not connected");
    if (!d->dst)
      return Status::Invalid(target + " was not mapped by dst-aggregator (backend '" + d->backend +
                             "'): use the tool that attached it");
    *out = std::move(*d);
    return Status::Ok();
  }
  const std::vector<MappedDevice> devices = DevicesOfVolume(ListMappedDevices(sys_block), target);
  if (devices.empty()) return Status::Error(ENOENT, "volume " + target + " is not mapped here");
  if (devices.size() > 1) {
    std::string names;
    for (const MappedDevice& d : devices)
      names += (names.empty() ? "" : ", ") + d.device;
    return Status::Error(
        EEXIST, "volume " + target + " is mapped to " + names + ": name the device to unmap");
  }
  *out = devices.front();
  return Status::Ok();
}

CLI::App* AddUnmapCommand(CLI::App& app, UnmapArgs* args) {
  CLI::App* unmap =
      app.add_subcommand("unmap", "detach a kernel NBD device that map attached (after umount)");
  unmap->add_option("target", args->target, "the device (/dev/nbdN) or the volume")->required();
  return unmap;
}

CLI::App* AddListMappedCommand(CLI::App& app, ListMappedArgs* args) {
  CLI::App* list =
      app.add_subcommand("list-mapped", "list the kernel NBD devices map attached on this machine");
  list->add_flag("--json", args->json, "print JSON instead of a table");
  return list;
}

int RunUnmap(const UnmapArgs& args, const std::string& sys_block) {
  MappedDevice device;
  Status s = FindMappedDevice(sys_block, args.target, &device);
  if (s.ok()) s = DisconnectDevice(device.index);
  if (s.ok()) s = WaitUntilGone(sys_block, device);
  if (!s.ok()) return ExitWithError(s);
  std::printf("%s unmapped (volume %s)\n", device.device.c_str(), device.dst->volume.c_str());
  return 0;
}

int RunListMapped(const ListMappedArgs& args, const std::string& sys_block) {
  const std::vector<MappedDevice> devices = ListMappedDevices(sys_block);
  const std::string text = args.json ? MappedJson(devices) : MappedTable(devices);
  std::fwrite(text.data(), 1, text.size(), stdout);
  return 0;
}

}  // namespace dst::aggregator::map
