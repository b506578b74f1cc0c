// The control socket's volume commands (docs/operations.md, "Volume commands"):
//   volume list [json]       one line per volume: name, layout, size, clients connected, state
//   volume remove NAME [force]
//   volume add NAME [KEY=VALUE]... URI...
//                            KEY: a [[volume]] key of the configuration file (raw, layout, ...)
// A volume's state in the list: "serving", "degraded" (a set of a mirror or raid10 volume has
// lost a copy) or "removing" (a `volume remove --force` is ending its clients and closing it).
// `volume remove` is answered by Server::remove_volume (aggregator/volume_remove.h), once the
// volume is closed and its members released; `volume add` by Server::add_volume
// (aggregator/volume_add.h), "ok: volume NAME added (LAYOUT, SIZE)" once a client can connect to
// it; "error: ..." with the reason else.
//
// Threading: the event loop's thread (the control socket's handler runs there).
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "aggregator/control/runtime.h"

namespace dst::control {

// One volume as `volume list` shows it.
struct VolumeListing {
  std::string name;
  std::string layout;
  uint64_t size = 0;
  uint64_t clients = 0;
  std::string state;
};

std::vector<VolumeListing> ListVolumes(const Server& server);
// "alpha: linear, 4 MiB, 1 client, serving\n" per volume; "no volumes\n" for none.
std::string VolumeListText(const std::vector<VolumeListing>& volumes);
// {"volumes": [{"name": "alpha", "layout": "linear", "size": 4194304, "clients": 1,
// "state": "serving"}]}
std::string VolumeListJson(const std::vector<VolumeListing>& volumes);

// Whether words[0] is "volume".
bool IsVolumeCommand(const std::vector<std::string>& words);
// `answer` hears the answer once: at once for list and refusals, later for a removal.
void AnswerVolumeCommand(Server& server, const std::vector<std::string>& words,
                         std::function<void(std::string)> answer);

}  // namespace dst::control
