#include "aggregator/control/control_commands.h"

#include <optional>

#include "common/units.h"

namespace dst::control {

std::string Error(const std::string& why) {
  return "error: " + why + "\n";
}

// The checksummed volume named `name`, or the error line that answers the command.
integrity::ChecksummedVolume* FindVolume(Server& server, const std::string& name,
                                         std::string* error) {
  for (integrity::ChecksummedVolume* v : server.checksummed) {
    if (v->name() != name) continue;
    if (!server.registry.Withdrawn(v)) return v;
    *error = Error("volume " + name + " is being removed");
    return nullptr;
  }
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

namespace {

const char kScrubUsage[] =
    "error: usage: scrub VOLUME start [check|repair] | scrub VOLUME pause|resume|stop\n";
const char kRateUsage[] = "error: usage: resync-rate VOLUME MIN MAX (bytes per second)\n";
const char kMemberUsage[] =
    "error: usage: member fail|remove VOLUME SLOT | member set VOLUME SLOT "
    "write-mostly|readwrite | member add VOLUME URI [SLOT] | member replace VOLUME SLOT URI\n";

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

std::optional<uint32_t> SlotNumber(const std::string& text) {
  if (text.empty() || text.size() > 9 || text.find_first_not_of("0123456789") != std::string::npos)
    return std::nullopt;
  return static_cast<uint32_t>(std::stoul(text));
}

std::string Member(Server& server, const std::vector<std::string>& w) {
  if (w.size() < 4) return kMemberUsage;
  const std::string& action = w[1];
  const bool set = action == "set";
  if ((action != "fail" && action != "remove" && !set) || w.size() != (set ? 5u : 4u))
    return kMemberUsage;
  std::string error;
  integrity::ChecksummedVolume* v = FindVolume(server, w[2], &error);
  if (v == nullptr) return error;
  const std::optional<uint32_t> slot = SlotNumber(w[3]);
  if (!slot) return Error("bad slot '" + w[3] + "' (expected a member index such as 1)");
  const std::string what = v->name() + " slot " + w[3];
  if (action == "fail") return Answer(v->FailMember(*slot), what + " failed");
  if (action == "remove") return Answer(v->RemoveMember(*slot), what + " removed (missing)");
  if (w[4] != "write-mostly" && w[4] != "readwrite")
    return Error("bad mode '" + w[4] + "' (expected write-mostly or readwrite)");
  return Answer(v->SetWriteMostly(*slot, w[4] == "write-mostly"), what + " set " + w[4]);
}

// member add VOLUME URI [SLOT]: answered by Server::add_member, later.
void MemberAdd(Server& server, const std::vector<std::string>& w,
               std::function<void(std::string)> answer) {
  if (w.size() != 4 && w.size() != 5) return answer(kMemberUsage);
  std::string error;
  integrity::ChecksummedVolume* v = FindVolume(server, w[2], &error);
  if (v == nullptr) return answer(error);
  std::optional<uint32_t> slot;
  if (w.size() == 5) {
    slot = SlotNumber(w[4]);
    if (!slot) return answer(Error("bad slot '" + w[4] + "' (expected a member index such as 1)"));
  }
  if (!server.add_member) return answer(Error("member add is not available here"));
  server.add_member(
      *v, w[3], slot,
      [name = v->name(), uri = w[3], answer = std::move(answer)](Status s, uint32_t chosen) {
        answer(Answer(
            s, name + " slot " + std::to_string(chosen) + " added " + uri + " (rebuilding)"));
      });
}

// member replace VOLUME SLOT URI: answered by Server::replace_member, later.
void MemberReplace(Server& server, const std::vector<std::string>& w,
                   std::function<void(std::string)> answer) {
  if (w.size() != 5) return answer(kMemberUsage);
  std::string error;
  integrity::ChecksummedVolume* v = FindVolume(server, w[2], &error);
  if (v == nullptr) return answer(error);
  const std::optional<uint32_t> slot = SlotNumber(w[3]);
  if (!slot) return answer(Error("bad slot '" + w[3] + "' (expected a member index such as 1)"));
  if (!server.replace_member) return answer(Error("member replace is not available here"));
  // The member it replaces, named now: the answer comes once the new one is taken.
  const std::string old = v->SlotMemberName(*slot);
  server.replace_member(
      *v, *slot, w[4],
      [what = v->name() + " slot " + w[3], old, uri = w[4], answer = std::move(answer)](Status s) {
        answer(Answer(s, what + ": replacing " + old + " by " + uri + " (rebuilding)"));
      });
}

}  // namespace

bool IsActingCommand(const std::vector<std::string>& words) {
  return !words.empty() &&
         (words[0] == "scrub" || words[0] == "resync-rate" || words[0] == "member");
}

void AnswerCommand(Server& server, const std::vector<std::string>& words,
                   std::function<void(std::string)> answer) {
  if (words.at(0) == "scrub") return answer(Scrub(server, words));
  if (words.at(0) == "member" && words.size() > 1 && words[1] == "add")
    return MemberAdd(server, words, std::move(answer));
  if (words.at(0) == "member" && words.size() > 1 && words[1] == "replace")
    return MemberReplace(server, words, std::move(answer));
  if (words.at(0) == "member") return answer(Member(server, words));
  answer(ResyncRate(server, words));
}

}  // namespace dst::control
