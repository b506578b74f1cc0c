#include "aggregator/volume_key.h"

#include <string.h>  // explicit_bzero
#include <sys/prctl.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <vector>

#include "aggregator/integrity/assembly.h"
#include "aggregator/key_file.h"
#include "common/block_cipher.h"
#include "common/key_file_mode.h"
#include "common/log.h"

namespace dst::aggregator {

namespace {

constexpr size_t kMaxPassphrase = 1024;

// The slots of `sb` that `kind` of secret may open.
std::vector<std::pair<uint32_t, KeySlot>> SlotsOfKind(const integrity::Superblock& sb,
                                                      KeySlotKind kind) {
  std::vector<std::pair<uint32_t, KeySlot>> slots = integrity::KeySlotsInUse(sb.key_slots);
  std::erase_if(slots, [kind](const auto& s) { return s.second.kind != kind; });
  return slots;
}

}  // namespace

Status CheckPassphraseFile(const std::string& path) {
  VolumeSecret passphrase;
  return ReadPassphraseFile(path, &passphrase);
}

Status ReadPassphraseFile(const std::string& path, VolumeSecret* out) {
  const std::string what = "--passphrase-file " + path;
  DST_RETURN_IF_ERROR(CheckKeyFileMode(path, what));
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::FromErrno(errno, what);
  // Read once into wiped memory, one byte past the limit so that an endless file is refused.
  CryptoPP::SecByteBlock bytes(kMaxPassphrase + 2);
  in.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  if (in.bad()) return Status::FromErrno(errno, what);
  size_t size = static_cast<size_t>(in.gcount());
  if (size > 0 && bytes[size - 1] == '\n') --size;
  if (size == 0 || size > kMaxPassphrase)
    return Status::Invalid(what + ": a passphrase is 1 to 1024 bytes (one trailing newline apart)");
  out->kind = KeySlotKind::kPassphrase;
  out->bytes.Assign(bytes.data(), size);
  out->source = what;
  return Status::Ok();
}

Status ReadSecretKeyFile(const std::string& path, VolumeSecret* out) {
  std::vector<uint8_t> key;
  const Status s = ReadKeyFile(path, &key);
  if (s.ok()) {
    out->kind = KeySlotKind::kKeyFile;
    out->bytes.Assign(key.data(), key.size());
    out->source = "--key-file " + path;
  }
  if (!key.empty()) explicit_bzero(key.data(), key.size());
  return s;
}

Status ReadVolumeSecret(const std::string& who, const std::string& key_file,
                        const std::string& passphrase_file, VolumeSecret* out) {
  if (!key_file.empty() && !passphrase_file.empty())
    return Status::Invalid(who + ": give --key-file or --passphrase-file, not both");
  if (!key_file.empty()) return ReadSecretKeyFile(key_file, out);
  if (!passphrase_file.empty()) return ReadPassphraseFile(passphrase_file, out);
  return Status::Invalid(who + ": give --key-file or --passphrase-file");
}

Status OpenMasterKey(const integrity::Superblock& sb, const VolumeSecret& secret,
                     std::vector<uint8_t>* master) {
  const std::string who = "volume " + sb.name + ": " + secret.source;
  const std::span<const uint8_t, 16> uuid(sb.volume_uuid);
  const auto slots = SlotsOfKind(sb, secret.kind);
  if (slots.empty())
    return Status::Error(EACCES,
                         who + ": the volume has no " + KeySlotKindName(secret.kind) + " key slot");
  std::string tried;
  for (const auto& [index, slot] : slots) {
    tried += (tried.empty() ? "" : ", ") + std::to_string(index);
    CryptoPP::SecByteBlock key;
    if (!OpenKeySlot(slot, {secret.bytes.data(), secret.bytes.size()}, uuid, index, &key).ok())
      continue;
    if (!integrity::CheckChecksumKey(sb, {key.data(), key.size()}).ok())
      return Status::Error(EIO, who + ": key slot " + std::to_string(index) +
                                    " opens, but not to this volume's key (damaged superblock?)");
    KeepKeysOutOfCoreDumps();
    master->assign(key.begin(), key.end());
    return Status::Ok();
  }
  return Status::Error(EACCES, who + " opens none of its key slots (" + tried + ")");
}

Status SealIntoSlot(integrity::Superblock& sb, uint32_t index, const VolumeSecret& secret,
                    std::span<const uint8_t> master, ScryptParams cost) {
  KeySlot slot;
  const ScryptParams scrypt =
      secret.kind == KeySlotKind::kPassphrase ? cost : ScryptParams{0, 0, 0};
  DST_RETURN_IF_ERROR(SealKeySlot(secret.kind, {secret.bytes.data(), secret.bytes.size()}, master,
                                  std::span<const uint8_t, 16>(sb.volume_uuid), index, scrypt,
                                  &slot));
  EncodeKeySlot(slot, sb.key_slots[index]);
  return Status::Ok();
}

void KeepKeysOutOfCoreDumps() {
  if (prctl(PR_GET_DUMPABLE) == 0) return;
  if (prctl(PR_SET_DUMPABLE, 0) != 0)
    LOG_WARNING("prctl(PR_SET_DUMPABLE): %s: a core dump may hold encryption keys",
                std::strerror(errno));
}

Status FreeKeySlot(const integrity::Superblock& sb, uint32_t* index) {
  const integrity::KeySlotBytes empty{};
  for (uint32_t i = 0; i < kKeySlots; ++i)
    if (sb.key_slots[i] == empty) {
      *index = i;
      return Status::Ok();
    }
  return Status::Error(
      EBUSY, "volume " + sb.name + ": all " + std::to_string(kKeySlots) + " key slots are in use");
}

}  // namespace dst::aggregator
