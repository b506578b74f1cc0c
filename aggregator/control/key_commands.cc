#include "aggregator/control/key_commands.h"

#include <charconv>
#include <optional>

#include "aggregator/control/control_commands.h"
#include "common/key_slot.h"

namespace dst::control {

namespace {

const char kKeyUsage[] =
    "error: usage: key list VOLUME | key add VOLUME key-file|passphrase-file PATH [COST] | key "
    "remove VOLUME SLOT\n";

std::optional<uint32_t> Number(const std::string& text) {
  uint32_t n = 0;
  const auto [at, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
  if (ec != std::errc() || at != text.data() + text.size()) return std::nullopt;
  return n;
}

std::string List(const integrity::ChecksummedVolume& v) {
  std::string out;
  for (const auto& [index, slot] : integrity::KeySlotsInUse(v.key_slots()))
    out += "slot " + std::to_string(index) + ": " + DescribeKeySlot(slot) + "\n";
  return out;
}

void Add(Server& server, integrity::ChecksummedVolume& v, const std::vector<std::string>& w,
         std::function<void(std::string)> answer) {
  if (w.size() != 5 && w.size() != 6) return answer(kKeyUsage);
  const bool passphrase = w[3] == "passphrase-file";
  if (!passphrase && w[3] != "key-file") return answer(kKeyUsage);
  if (w[4].empty() || w[4][0] != '/') return answer(Error("the secret's path must be absolute"));
  std::optional<uint32_t> cost = ScryptParams{}.log2_n;
  if (w.size() == 6) cost = Number(w[5]);
  if (!cost || *cost < 10 || *cost > kMaxScryptLog2N || (w.size() == 6 && !passphrase))
    return answer(Error("bad cost (scrypt's log2 N, 10 to " + std::to_string(kMaxScryptLog2N) +
                        ", for a passphrase only)"));
  if (!server.add_key) return answer(Error("key add is not available here"));
  const KeySlotKind kind = passphrase ? KeySlotKind::kPassphrase : KeySlotKind::kKeyFile;
  server.add_key(v, kind, w[4], static_cast<uint8_t>(*cost),
                 [name = v.name(), kind, answer = std::move(answer)](Status s, uint32_t slot) {
                   answer(Answer(s, "volume " + name + ": key slot " + std::to_string(slot) +
                                        " added (" + KeySlotKindName(kind) + ")"));
                 });
}

void Remove(integrity::ChecksummedVolume& v, const std::vector<std::string>& w,
            std::function<void(std::string)> answer) {
  if (w.size() != 4) return answer(kKeyUsage);
  const std::optional<uint32_t> slot = Number(w[3]);
  if (!slot || *slot >= kKeySlots)
    return answer(
        Error("bad key slot '" + w[3] + "' (0 to " + std::to_string(kKeySlots - 1) + ")"));
  if (v.key_slots()[*slot] == integrity::KeySlotBytes{})
    return answer(Error("volume " + v.name() + ": key slot " + w[3] + " is empty"));
  v.SetKeySlot(*slot, {}, [name = v.name(), slot = w[3], answer = std::move(answer)](int err) {
    if (err == 0) return answer("ok: volume " + name + ": key slot " + slot + " removed\n");
    if (err == EINVAL)
      return answer(Error("volume " + name + ": key slot " + slot +
                          " is the last one: nothing would open the volume"));
    if (err == EBUSY) return answer(Error("volume " + name + ": another key change is under way"));
    answer(Error("volume " + name + ": removing key slot " + slot + ": " + std::strerror(err)));
  });
}

}  // namespace

bool IsKeyCommand(const std::vector<std::string>& words) {
  return !words.empty() && words[0] == "key";
}

void AnswerKeyCommand(Server& server, const std::vector<std::string>& words,
                      std::function<void(std::string)> answer) {
  if (words.size() < 3) return answer(kKeyUsage);
  std::string error;
  integrity::ChecksummedVolume* v = FindVolume(server, words[2], &error);
  if (v == nullptr) return answer(error);
  if (!v->encrypted()) return answer(Error("volume " + v->name() + " is not encrypted"));
  if (words[1] == "list" && words.size() == 3) return answer(List(*v));
  if (words[1] == "add") return Add(server, *v, words, std::move(answer));
  if (words[1] == "remove") return Remove(*v, words, std::move(answer));
  answer(kKeyUsage);
}

}  // namespace dst::control
