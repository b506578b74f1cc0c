#include "aggregator/control/control_commands.h"

#include <optional>

#include "common/units.h"

namespace dst::control {

namespace {

const char kScrubUsage[] =
    "error: usage: scrub VOLUME start [check|repair] | scrub VOLUME pause|resume|stop\n";
const char kRateUsage[] = "error: usage: resync-rate VOLUME MIN MAX (bytes per second)\n";

std::string Error(const std::string& why) {
  return "error: " + why + "\n";
}

// The checksummed volume named `name`, or the error line that answers the command.
integrity::ChecksummedVolume* FindVolume(Server& server, const std::string& name,
                                         std::string* error) {
  for (integrity::ChecksummedVolume* v : server.checksummed)
    if (v->name() == name) return v;
  for (const auto& v : server.volumes)
    if (v->name() == name) {
      *error = Error("volume " + name +
                     " is not a checksummed volume (no scrub, no background "
                     "jobs)");
      return nullptr;
    }
  *error = Error("unknown volume '" + name + "'");
  return nullptr;
}

std::string Answer(const Status& s, const std::string& ok) {
  return s.ok() ? "ok: " + ok + "\n" : Error(s.message());
}

std::string Scrub(Server& server, const std::vector<std::string>& w) {
  if (w.size() < 3 || (w[2] != "start" && w.size() != 3) || w.size() > 4) return kScrubUsage;
  std::string error;
  integrity::ChecksummedVolume* v = FindVolume(server, w[1], &error);
  if (v == nullptr) return error;
  const std::string& action = w[2];
  if (action == "start") {
    std::optional<integrity::ScrubMode> mode;
    if (w.size() == 4 && w[3] == "check") mode = integrity::ScrubMode::kCheck;
    if (w.size() == 4 && w[3] == "repair") mode = integrity::ScrubMode::kRepair;
    if (w.size() == 4 && !mode) return kScrubUsage;
    const Status s = v->StartScrub(mode);
    return Answer(s, "scrub of " + v->name() + " started (" +
                         std::string(integrity::ScrubModeName(v->scrub().mode)) + ")");
  }
  if (action == "pause") return Answer(v->PauseScrub(), "scrub of " + v->name() + " paused");
  if (action == "resume") return Answer(v->ResumeScrub(), "scrub of " + v->name() + " resumed");
  if (action == "stop") return Answer(v->StopScrub(), "scrub of " + v->name() + " stopped");
  return kScrubUsage;
}

std::optional<uint64_t> Rate(const std::string& text) {
  const std::optional<uint64_t> bytes = ParseSize(text);
  if (!bytes || *bytes == 0) return std::nullopt;
  return bytes;
}

std::string ResyncRate(Server& server, const std::vector<std::string>& w) {
  if (w.size() != 4) return kRateUsage;
  std::string error;
  integrity::ChecksummedVolume* v = FindVolume(server, w[1], &error);
  if (v == nullptr) return error;
  const std::optional<uint64_t> min = Rate(w[2]);
  const std::optional<uint64_t> max = Rate(w[3]);
  for (const auto& [value, text] : {std::pair{min, w[2]}, std::pair{max, w[3]}})
    if (!value)
      return Error("bad number '" + text + "' (expected bytes per second such as 1M, more than 0)");
  if (*min > *max)
    return Error("the minimum " + FormatSize(*min) + "/s is more than the maximum " +
                 FormatSize(*max) + "/s");
  const Status s = v->SetRateLimits({.min_bytes_per_second = *min, .max_bytes_per_second = *max});
  return Answer(
      s, v->name() + " background rate " + FormatSize(*min) + "/s to " + FormatSize(*max) + "/s");
}

}  // namespace

bool IsActingCommand(const std::vector<std::string>& words) {
  return !words.empty() && (words[0] == "scrub" || words[0] == "resync-rate");
}

std::string AnswerCommand(Server& server, const std::vector<std::string>& words) {
  if (words.at(0) == "scrub") return Scrub(server, words);
  return ResyncRate(server, words);
}

}  // namespace dst::control
