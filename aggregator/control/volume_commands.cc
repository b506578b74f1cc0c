#include "aggregator/control/volume_commands.h"

#include <sstream>

#include "aggregator/integrity/superblock_json.h"
#include "common/units.h"

namespace dst::control {

namespace {

const char kVolumeUsage[] =
    "error: usage: volume list [json] | volume remove NAME [force] | volume add NAME "
    "[KEY=VALUE]... URI...\n";

std::string StateOf(const Server& server, const volume::BlockDevice& volume) {
  if (server.registry.Withdrawn(&volume)) return "removing";
  const volume::DeviceState state = volume.State();
  if (state.redundancy)
    for (const std::string& health : state.redundancy->set_health)
      if (health.find('_') != std::string::npos) return "degraded";
  return "serving";
}

void Remove(Server& server, const std::vector<std::string>& w,
            std::function<void(std::string)> answer) {
  if (w.size() != 3 && (w.size() != 4 || w[3] != "force")) return answer(kVolumeUsage);
  if (!server.remove_volume) return answer("error: volume remove is not available here\n");
  const std::string name = w[2];
  server.remove_volume(name, w.size() == 4, [name, answer = std::move(answer)](Status s) {
    answer(s.ok() ? "ok: volume " + name + " removed\n" : "error: " + s.message() + "\n");
  });
}

void Add(Server& server, const std::vector<std::string>& w,
         std::function<void(std::string)> answer) {
  if (w.size() < 3) return answer(kVolumeUsage);
  if (!server.add_volume) return answer("error: volume add is not available here\n");
  const std::string name = w[2];
  server.add_volume(std::vector<std::string>(w.begin() + 2, w.end()),
                    [name, answer = std::move(answer)](Status s, const std::string& summary) {
                      answer(s.ok() ? "ok: volume " + name + " added (" + summary + ")\n"
                                    : "error: " + s.message() + "\n");
                    });
}

}  // namespace

std::vector<VolumeListing> ListVolumes(const Server& server) {
  std::vector<VolumeListing> out;
  for (const auto& volume : server.volumes)
    out.push_back({volume->name(), std::string(volume::LayoutKindName(volume->State().layout)),
                   volume->size(), server.registry.TrafficOf(volume.get()).clients,
                   StateOf(server, *volume)});
  return out;
}

std::string VolumeListText(const std::vector<VolumeListing>& volumes) {
  if (volumes.empty()) return "no volumes\n";
  std::string text;
  for (const VolumeListing& v : volumes)
    text += v.name + ": " + v.layout + ", " + FormatSize(v.size) + ", " +
            std::to_string(v.clients) + (v.clients == 1 ? " client, " : " clients, ") + v.state +
            "\n";
  return text;
}

std::string VolumeListJson(const std::vector<VolumeListing>& volumes) {
  using integrity::JsonQuote;
  std::ostringstream out;
  out << "{\"volumes\": [";
  for (size_t i = 0; i < volumes.size(); ++i) {
    const VolumeListing& v = volumes[i];
    out << (i ? ",\n  " : "\n  ") << "{\"name\": " << JsonQuote(v.name)
        << ", \"layout\": " << JsonQuote(v.layout) << ", \"size\": " << v.size
        << ", \"clients\": " << v.clients << ", \"state\": " << JsonQuote(v.state) << "}";
  }
  out << (volumes.empty() ? "]}\n" : "\n]}\n");
  return out.str();
}

bool IsVolumeCommand(const std::vector<std::string>& words) {
  return !words.empty() && words[0] == "volume";
}

void AnswerVolumeCommand(Server& server, const std::vector<std::string>& words,
                         std::function<void(std::string)> answer) {
  if (words.size() >= 2 && words[1] == "list" && words.size() <= 3) {
    if (words.size() == 2) return answer(VolumeListText(ListVolumes(server)));
    if (words[2] == "json") return answer(VolumeListJson(ListVolumes(server)));
  }
  if (words.size() >= 2 && words[1] == "remove") return Remove(server, words, std::move(answer));
  if (words.size() >= 2 && words[1] == "add") return Add(server, words, std::move(answer));
  answer(kVolumeUsage);
}

}  // namespace dst::control
