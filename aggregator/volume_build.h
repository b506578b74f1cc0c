// Building the volumes `serve` serves, at start (serve_command.cc) and while serving
// (`volume add`, aggregator/volume_add.h): the plan the members' superblocks make, the members in
// the order the volume uses them, and the volume over them.
//
// An assembled volume is built in two steps: MakeChecksummedVolume creates it (not open),
// InstallChecksummedVolume hands it to the Server (volumes, checksummed, the member adder, the
// return watcher, the members' supersede hooks). At start both run before the volumes are opened;
// `volume add` installs a volume only once it is open.
//
// Threading: PlanAssembly blocks (it reads the members); call it before the event loop runs or
// on a thread of its own. The rest on the event loop's thread.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "aggregator/control/runtime.h"
#include "aggregator/integrity/checksummed_volume.h"
#include "aggregator/member/member_tls.h"
#include "aggregator/member/transaction_policy.h"
#include "aggregator/redundant_serve.h"
#include "aggregator/serve_config.h"
#include "aggregator/stagelog/staged_device.h"
#include "common/status.h"

namespace dst::aggregator {

// What a volume's superblocks say, read before the volume is built.
struct AssemblyPlan {
  std::vector<integrity::MemberSuperblock> members;  // linear, stripe: in member-index order
  std::optional<RedundantPlan> redundant;            // mirror, raid10
  std::vector<uint8_t> key;                          // empty unless keyed

  const integrity::Superblock& superblock() const {
    return redundant ? redundant->view : members[0].superblock;
  }
};

// Reads every member's superblocks and checks that they make one volume (assembly.h); for
// mirror and raid10, decides which copies serve (redundant_serve.h), a member that cannot be
// read counting as missing.
Status PlanAssembly(const VolumeConfig& v, const member::MemberTls& tls, AssemblyPlan* plan);
void LogAssembly(const AssemblyPlan& plan);

// The volume's member URIs in the order the volume uses them (by slot for mirror and raid10,
// nullopt for a missing one), and its name in `name`.
std::vector<std::optional<std::string>> OrderedMemberUris(const VolumeConfig& v, bool raw,
                                                          const AssemblyPlan& plan,
                                                          std::string* name);
// The transaction options of the volume's member at `slot`.
member::TransactionOptions MemberOptions(const ServeConfig& config, const AssemblyPlan& plan,
                                         uint32_t slot);

Status BuildRawVolume(const VolumeConfig& v, const std::vector<volume::MemberTarget*>& targets,
                      std::unique_ptr<volume::BlockDevice>* out);

// Clears the plan's key once used. `workers` (nullptr: none) outlives the volume.
Status MakeChecksummedVolume(const ServeConfig& config, const VolumeConfig& v, AssemblyPlan& plan,
                             const std::vector<volume::MemberTarget*>& targets,
                             asio::io_context& io, WorkerPool* workers,
                             std::unique_ptr<integrity::ChecksummedVolume>* out);
// Appends the volume to Server::volumes and checksummed; a mirror or raid10 volume takes member
// adds, its missing members come back (with auto-resync), and a member fenced out by a newer
// owner stops its writes. Not to the registry.
void InstallChecksummedVolume(const ServeConfig& config, const VolumeConfig& v,
                              const AssemblyPlan& plan,
                              const std::vector<volume::MemberTarget*>& targets,
                              std::unique_ptr<integrity::ChecksummedVolume> volume,
                              control::Server& server);

// Puts the volume behind its staging log (v.log_path): opens the log, formatting it for
// `volume_uuid` on first use, replays it and wraps *volume in a StagedDevice (returned in
// `staged`, not started). Blocks on the log file: call before the event loop runs.
Status StageVolume(const VolumeConfig& v, const stagelog::Uuid& volume_uuid, asio::io_context& io,
                   std::unique_ptr<volume::BlockDevice>* volume, stagelog::StagedDevice** staged);

}  // namespace dst::aggregator
