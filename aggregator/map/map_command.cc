#include "aggregator/map/map_command.h"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>

#include "aggregator/cluster/owner_endpoint.h"
#include "aggregator/command_error.h"
#include "aggregator/control_client.h"
#include "aggregator/map/endpoint.h"
#include "aggregator/map/kernel_nbd.h"
#include "aggregator/map/nbd_handshake_client.h"
#include "common/nbd_protocol.h"

namespace dst::aggregator::map {

namespace {

// Sockets map opened; closed when it ends (the kernel holds its own references).
class Sockets {
 public:
  Sockets() = default;
  Sockets(const Sockets&) = delete;
  Sockets& operator=(const Sockets&) = delete;
  ~Sockets() {
    for (int fd : fds_)
      ::close(fd);
  }
  void Add(int fd) { fds_.push_back(fd); }
  const std::vector<int>& fds() const { return fds_; }

 private:
  std::vector<int> fds_;
};

// Where the aggregator is, how many connections fit it and the kernel's deadline for a request.
struct Target {
  Endpoint endpoint;
  unsigned connections = kDefaultConnections;
  std::chrono::seconds timeout = kDefaultTimeout;
};

// The volume's owner in the cluster catalog, at the address it advertises; *owner names it in
// errors ("volume vol0 is owned by host-a (pid 42): ...").
Status FindOwner(const MapArgs& args, Endpoint* endpoint, std::string* owner) {
  std::unique_ptr<cluster::CatalogClient> catalog;
  DST_RETURN_IF_ERROR(cluster::OpenCatalog(args.cluster, &catalog));
  cluster::OwnerRecord record;
  DST_RETURN_IF_ERROR(cluster::LookupOwnerEndpoint(*catalog, args.volume, &record));
  *owner = "volume " + args.volume + " is owned by " + cluster::DescribeOwner(record);
  return ParseTcpEndpoint(record.nbd, "the owner's NBD address", endpoint).Wrap(*owner);
}

Status FindAggregator(const MapArgs& args, Target* target, std::string* owner) {
  Endpoint* endpoint = &target->endpoint;
  if (args.connections != 0) target->connections = args.connections;
  if (args.timeout_seconds) target->timeout = std::chrono::seconds(*args.timeout_seconds);
  if (args.cluster.given()) return FindOwner(args, endpoint, owner);
  if (!args.connect.empty()) return ParseTcpEndpoint(args.connect, "--connect", endpoint);
  if (!args.socket.empty()) {
    *endpoint = Endpoint::Unix(args.socket);
    return Status::Ok();
  }
  std::string answer;
  DST_RETURN_IF_ERROR(AskControl(args.control, "endpoints\n", &answer));
  if (answer.rfind("error: ", 0) == 0)
    return Status::Error(EPROTO, "the aggregator does not tell its endpoints (" +
                                     answer.substr(0, answer.find('\n')) +
                                     "): give --connect HOST:PORT or --socket PATH");
  AggregatorEndpoints endpoints;
  DST_RETURN_IF_ERROR(ParseEndpoints(answer, &endpoints));
  if (args.connections == 0) target->connections = endpoints.loops;
  if (!args.timeout_seconds) target->timeout = DefaultTimeout(endpoints.retry_window);
  return PickEndpoint(endpoints, endpoint);
}

// Opens `count` connections and takes each through the handshake; all must show the same export.
Status OpenConnections(const Endpoint& endpoint, const std::string& volume, unsigned count,
                       Sockets* sockets, ExportInfo* info) {
  for (unsigned i = 0; i < count; ++i) {
    int fd = -1;
    DST_RETURN_IF_ERROR(ConnectEndpoint(endpoint, kHandshakeTimeout, &fd));
    sockets->Add(fd);
    ExportInfo this_one;
    DST_RETURN_IF_ERROR(NegotiateExport(fd, volume, endpoint.Name(), kHandshakeTimeout, &this_one));
    if (i == 0) *info = this_one;
    if (this_one.size != info->size || this_one.flags != info->flags)
      return Status::Error(EPROTO, "volume " + volume + " at " + endpoint.Name() + ": connection " +
                                       std::to_string(i) +
                                       " shows another size or flags than the first (" +
                                       std::to_string(this_one.size) + " bytes, flags " +
                                       std::to_string(this_one.flags) + ")");
  }
  if (count > 1 && (info->flags & nbd::kFlagCanMultiConn) == 0)
    return Status::Invalid("volume " + volume +
                           " does not allow several connections (no "
                           "multi-conn): map it with --connections 1");
  return Status::Ok();
}

// Waits until sysfs shows the device with `size` bytes (in whole sectors).
Status WaitForSize(const std::string& sys_block, int index, uint64_t size) {
  const uint64_t expected = size >> 9 << 9;
  const auto deadline = std::chrono::steady_clock::now() + kDeviceTimeout;
  uint64_t seen = 0;
  while (std::chrono::steady_clock::now() < deadline) {
    if (const std::optional<MappedDevice> d = ReadMappedDevice(sys_block, index)) {
      seen = d->size_bytes;
      if (seen == expected) return Status::Ok();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return Status::Error(ETIMEDOUT, "/dev/nbd" + std::to_string(index) + " shows " +
                                      std::to_string(seen) + " bytes, not " +
                                      std::to_string(expected) + ", after " +
                                      std::to_string(kDeviceTimeout.count()) + " s");
}

// Where the volume is served, checked with one handshake: the endpoint's name.
Status PrintEndpoint(const MapArgs& args, std::string* name) {
  Target target;
  std::string owner;
  DST_RETURN_IF_ERROR(FindAggregator(args, &target, &owner));
  Sockets sockets;
  ExportInfo info;
  Status s = OpenConnections(target.endpoint, args.volume, 1, &sockets, &info);
  if (!s.ok()) return owner.empty() ? s : s.Wrap(owner);
  *name = target.endpoint.Name();
  return Status::Ok();
}

Status Map(const MapArgs& args, const std::string& sys_block, int* index) {
  DST_RETURN_IF_ERROR(CheckMapArgs(args));
  std::optional<int> wanted;
  if (!args.device.empty()) {
    wanted = NbdIndex(args.device);
    DST_RETURN_IF_ERROR(CheckDeviceFree(sys_block, *wanted));
  }
  Target target;
  std::string owner;
  DST_RETURN_IF_ERROR(FindAggregator(args, &target, &owner));
  const Endpoint& endpoint = target.endpoint;
  Sockets sockets;
  ExportInfo info;
  Status s = OpenConnections(endpoint, args.volume, target.connections, &sockets, &info);
  if (!s.ok()) return owner.empty() ? s : s.Wrap(owner);
  KernelConnect request{
      .index = wanted,
      .fds = sockets.fds(),
      .size_bytes = info.size,
      .block_size = args.block_size,
      .server_flags = static_cast<uint64_t>(info.flags | (args.read_only ? nbd::kFlagReadOnly : 0)),
      .timeout = target.timeout,
      .backend = FormatBackendId({args.volume, endpoint.Name(), target.connections}),
  };
  DST_RETURN_IF_ERROR(ConnectDevice(request, index));
  return WaitForSize(sys_block, *index, info.size);
}

}  // namespace

std::chrono::seconds DefaultTimeout(std::optional<std::chrono::milliseconds> retry_window) {
  if (!retry_window) return kDefaultTimeout;
  const auto window = std::chrono::ceil<std::chrono::seconds>(*retry_window);
  return std::max(kDefaultTimeout, window + kTimeoutMargin);
}

CLI::App* AddMapCommand(CLI::App& app, MapArgs* args) {
  CLI::App* map = app.add_subcommand(
      "map", "attach a volume to a kernel NBD device (/dev/nbdN) and print the device");
  map->add_option("volume", args->volume, "the volume")->required();
  map->add_option("--device", args->device, "the device, /dev/nbdN (default: a free one)");
  map->add_option("--connections", args->connections,
                  "connections to the aggregator (default: one per event loop of the aggregator, "
                  "1 with --connect or --socket)")
      ->check(CLI::Range(1u, kMaxConnections));
  map->add_option("--timeout", args->timeout_seconds,
                  "seconds the kernel waits for a request before it drops the connection "
                  "(default: the aggregator's --retry-window plus 60, at least 120; 120 with "
                  "--connect or --socket); 0: it waits for ever");
  map->add_option("--block-size", args->block_size, "the device's block size: 512 to 4096")
      ->capture_default_str();
  map->add_flag("--read-only", args->read_only, "a read-only device");
  CLI::Option* control = map->add_option(
      "--control", args->control,
      "the aggregator's control socket, asked where the aggregator listens (the default)");
  CLI::Option* connect =
      map->add_option("--connect", args->connect, "the aggregator's HOST:PORT (no TLS)");
  CLI::Option* socket = map->add_option("--socket", args->socket, "the aggregator's Unix socket");
  CLI::Option* cluster = cluster::AddClusterOptions(
      *map, &args->cluster,
      "the volume's owner in the cluster catalog, at the NBD address it advertises");
  control->excludes(connect)->excludes(socket)->excludes(cluster);
  connect->excludes(socket)->excludes(cluster);
  socket->excludes(cluster);
  map->add_flag("--print-endpoint", args->print_endpoint,
                "print where the volume is served (HOST:PORT or unix:PATH) once one handshake "
                "with it there succeeded, and map nothing");
  return map;
}

Status CheckMapArgs(const MapArgs& args) {
  DST_RETURN_IF_ERROR(cluster::CheckClusterArgs(args.cluster));
  if (!args.device.empty() && !NbdIndex(args.device))
    return Status::Invalid("--device " + args.device + ": expected /dev/nbdN");
  const uint64_t b = args.block_size;
  if (b < 512 || b > 4096 || (b & (b - 1)) != 0)
    return Status::Invalid("--block-size " + std::to_string(b) +
                           ": the kernel takes a power of two from 512 to 4096");
  if (args.connections > kMaxConnections)
    return Status::Invalid("--connections " + std::to_string(args.connections) + ": at most " +
                           std::to_string(kMaxConnections));
  return Status::Ok();
}

Status CheckDeviceFree(const std::string& sys_block, int index) {
  const std::optional<MappedDevice> d = ReadMappedDevice(sys_block, index);
  if (!d) return Status::Ok();
  return Status::Error(EBUSY, d->device + " is busy: mapped to " +
                                  (d->dst ? "volume " + d->dst->volume + " at " + d->dst->endpoint
                                          : "'" + d->backend + "' by another client"));
}

int RunMap(const MapArgs& args, const std::string& sys_block) {
  if (args.print_endpoint) {
    std::string name;
    Status s = CheckMapArgs(args);
    if (s.ok()) s = PrintEndpoint(args, &name);
    if (!s.ok()) return ExitWithError(s);
    std::printf("%s\n", name.c_str());
    return 0;
  }
  int index = -1;
  if (const Status s = Map(args, sys_block, &index); !s.ok()) return ExitWithError(s);
  std::printf("/dev/nbd%d\n", index);
  return 0;
}

}  // namespace dst::aggregator::map
