// Server: everything a running `dst-aggregator serve` owns, as serve_command.cc builds it and the
// control plane (control_plane.h) reads it; MemberRef: a member as status, metrics and the stats
// lines name it. Volumes and member_refs are in the order of the configuration (by volume,
// then slot); so are members, except that one that comes back while serving takes the place of
// its slot's, or comes last when its slot had none.
//
// A volume added while serving (`volume add`, aggregator/volume_add.h) comes last in volumes,
// its members last in members and member_refs.
//
// A volume removed while serving (`volume remove`, aggregator/volume_remove.h) leaves volumes,
// checksummed, member_refs and members: its members, released, go to retired_members, and the
// volume, closed, to retired_volumes; the volume_index of what follows it goes down by one.
//
// Threading: built before the event loop runs, then touched only on its thread.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <asio.hpp>

#include "aggregator/integrity/checksummed_volume.h"
#include "aggregator/member/nbd_member.h"
#include "aggregator/server/connection.h"
#include "aggregator/server/event_loops.h"
#include "aggregator/server/export_registry.h"
#include "aggregator/server/listener.h"
#include "aggregator/server/one_shot_server.h"
#include "aggregator/server/tls.h"
#include "aggregator/volume/block_device.h"
#include "common/worker_pool.h"

namespace dst::aggregator {
class ReturnWatcher;
class MemberAdder;
class VolumeAdder;
class KeyAdder;
class LoopVolumes;
}  // namespace dst::aggregator

namespace dst::control {

struct MemberRef {
  std::string volume;   // the volume's name
  size_t volume_index;  // its place in Server::volumes
  size_t index;         // the member's index in the volume
  const member::NbdMember* member;
  // The same member as each event loop's copy of a raw volume reaches it, with connections of
  // its own (aggregator/loop_volumes.h): status sums them in. Read on the home loop; each is
  // written on its own loop (member_stats.h).
  std::vector<const member::NbdMember*> loop_copies;
};

// Destroyed in reverse order.
struct Server {
  std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();
  // Before io: connections still queued in io when it is destroyed count
  // themselves out of the policy.
  std::unique_ptr<server::ServerTls> tls;
  server::ConnectionPolicy policy;
  // The event loops other than io that client connections run on (serve --threads); nullptr with
  // one loop. Stopped (its threads joined) before a Server is destroyed; destroyed after io,
  // since io's queue may hold coroutines of connections whose sockets belong to these loops.
  std::unique_ptr<server::EventLoops> loops;
  // Each loop's own copy of the raw volumes (aggregator/loop_volumes.h); nullptr with one loop.
  // Destroyed after io, before loops, once they are stopped. Whoever destroys a Server includes
  // loop_volumes.h.
  std::unique_ptr<aggregator::LoopVolumes> loop_volumes;
  asio::io_context io{1};
  // Checksums and ciphers of large requests (common/worker_pool.h); nullptr with --workers 0.
  // After io, before the volumes: joined once the volumes are gone, before io is, since its
  // threads post to io.
  std::unique_ptr<WorkerPool> workers;
  std::vector<std::unique_ptr<member::NbdMember>> members;
  std::vector<MemberRef> member_refs;
  // Members replaced by one that came back (aggregator/member_return.h): abandoned, kept alive
  // until the volumes are gone, since completions of their last I/Os may still name them.
  std::vector<std::unique_ptr<member::NbdMember>> retired_members;
  std::vector<std::unique_ptr<volume::BlockDevice>> volumes;
  // Volumes removed while serving, closed: kept until the end, since a handler still queued may
  // name them (destroyed before the members they used).
  std::vector<std::unique_ptr<volume::BlockDevice>> retired_volumes;
  // The volumes that must be opened before serving and closed clean after.
  std::vector<integrity::ChecksummedVolume*> checksummed;
  server::ExportRegistry registry;
  server::InFlightLimits limits;
  std::unique_ptr<server::Listener> listener;
  // Where clients reach the volumes, as configured: each --listen HOST:PORT and --unix PATH, the
  // event loops serving them and the members' --retry-window (the longest a client's
  // request waits for a member). The control socket's `endpoints` tells them to
  // `dst-aggregator map`.
  std::vector<std::string> client_tcp;
  std::vector<std::string> client_unix;
  unsigned event_loops = 1;
  std::chrono::milliseconds retry_window{60000};
  std::unique_ptr<server::OneShotServer> control;
  std::unique_ptr<server::OneShotServer> metrics;
  // Brings back members of mirror and raid10 volumes that are out (aggregator/member_return.h);
  // stopped before the volumes close. Whoever destroys a Server includes member_return.h.
  std::unique_ptr<aggregator::ReturnWatcher> returns;
  // `member add` (aggregator/member_add.h): formats `uri` as a new member of a slot of `volume`
  // (`slot`, or the lowest that is out) and makes it the slot's copy; `done` hears the slot and
  // OK once the rebuild is started, or the refusal. Stopped with `returns`; unset: no member add.
  std::unique_ptr<aggregator::MemberAdder> adder;
  std::function<void(integrity::ChecksummedVolume& volume, const std::string& uri,
                     std::optional<uint32_t> slot, std::function<void(Status, uint32_t slot)> done)>
      add_member;
  // `member replace` (aggregator/member_add.h): formats `uri` as the new member of slot `slot` of
  // `volume`, rebuilt beside its current member, which it replaces once complete; `done` hears OK
  // once the rebuild is started, or the refusal. Unset: no member replace.
  std::function<void(integrity::ChecksummedVolume& volume, uint32_t slot, const std::string& uri,
                     std::function<void(Status)> done)>
      replace_member;
  // `volume remove` (aggregator/volume_remove.h): ends the volume's clients (refused while there
  // are any unless `force`), closes it, releases its members and forgets it; `done` hears OK
  // then, or the refusal. Unset: no volume remove.
  std::function<void(const std::string& name, bool force, std::function<void(Status)> done)>
      remove_volume;
  // `volume add NAME [KEY=VALUE]... URI...` (aggregator/volume_add.h; `words` from NAME on):
  // builds the volume the members make (assembled) or the keys say (raw), opens it and registers
  // its export; `done` hears OK and its summary ("mirror, 64 MiB") once a client can connect to
  // it, or the refusal. Stopped with `adder`, and the same way. Unset: no volume add.
  std::unique_ptr<aggregator::VolumeAdder> volume_adder;
  std::function<void(const std::vector<std::string>& words,
                     std::function<void(Status, const std::string& summary)> done)>
      add_volume;
  // `reload` and SIGHUP (aggregator/config_reloader.h): reads the configuration file again and
  // applies what changed; `done` hears OK and "1 added, 1 removed, 2 changed", or the refusal.
  // Unset: no reload.
  std::function<void(std::function<void(Status, const std::string& summary)> done)> reload;
  // `key add` (aggregator/key_add.h): seals the encrypted volume's master key into a free key
  // slot for the secret in the file `path` (a passphrase with scrypt cost 2^cost), off the loop,
  // and writes the slot to every member; `done` hears the slot, or the refusal. Stopped with
  // `adder`. Unset: no key add.
  std::unique_ptr<aggregator::KeyAdder> key_adder;
  std::function<void(integrity::ChecksummedVolume& volume, KeySlotKind kind,
                     const std::string& path, uint8_t cost,
                     std::function<void(Status, uint32_t slot)> done)>
      add_key;
};

}  // namespace dst::control
