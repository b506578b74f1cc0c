// The control socket's volume commands (docs/operations.md, "Volume commands"):
//   volume list [json]       one line per volume: name, layout, size, clients connected, state
// A volume's state in the list: "serving", or "degraded" (a set of a mirror or raid10 volume has
// lost a copy).
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
// `answer` hears the answer once.
void AnswerVolumeCommand(Server& server, const std::vector<std::string>& words,
                         std::function<void(std::string)> answer);

}  // namespace dst::control
