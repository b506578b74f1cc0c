// The key of an encrypted volume (docs/encryption.md): the secret that opens one of its key slots
// (a key file or a passphrase file, never a key on the command line), and the master key a slot
// gives.
//
// Threading: blocking file reads and, for a passphrase, scrypt (about a second at the default
// cost): call off the event loop.
#pragma once

#include <string>
#include <vector>

#include <cryptopp/secblock.h>

#include "aggregator/integrity/superblock.h"
#include "common/key_slot.h"
#include "common/status.h"

namespace dst::aggregator {

// What opens a key slot: the bytes of a key file, or a passphrase.
struct VolumeSecret {
  KeySlotKind kind = KeySlotKind::kEmpty;
  CryptoPP::SecByteBlock bytes;  // wiped when destroyed
  std::string source;            // "--key-file PATH", for messages
};

// The passphrase in `path`: the file's bytes without one trailing newline, 1 to 1024 bytes; the
// file must be private to its owner, as a key file (common/key_file_mode.h).
Status ReadPassphraseFile(const std::string& path, VolumeSecret* out);
// What ReadPassphraseFile checks, for a configuration checked before it is used: the passphrase
// read is wiped at once.
Status CheckPassphraseFile(const std::string& path);
// The bytes of the key file `path` (16 to 64, key_file.h).
Status ReadSecretKeyFile(const std::string& path, VolumeSecret* out);
// Exactly one of the two (EINVAL naming both options otherwise; `who` starts the message:
// "volume V is encrypted: give --key-file or --passphrase-file").
Status ReadVolumeSecret(const std::string& who, const std::string& key_file,
                        const std::string& passphrase_file, VolumeSecret* out);

// The master key of encrypted volume `sb`, from the first of its key slots of the secret's kind
// that the secret opens, checked against the volume's key check. One line when none opens:
// "volume NAME: --passphrase-file F opens none of its key slots (slots 0, 2 hold passphrases)".
Status OpenMasterKey(const integrity::Superblock& sb, const VolumeSecret& secret,
                     std::vector<uint8_t>* master);

// Seals `master` for `secret` into key slot `index` of `sb` (encoded in place). `cost` applies to
// passphrases.
Status SealIntoSlot(integrity::Superblock& sb, uint32_t index, const VolumeSecret& secret,
                    std::span<const uint8_t> master, ScryptParams cost);

// Keeps keys out of core dumps: the process becomes non-dumpable (no core file; other processes
// of the user cannot attach). Called whenever a master key is opened or made.
void KeepKeysOutOfCoreDumps();

// The first slot of `sb` not in use; EBUSY when all kKeySlots are.
Status FreeKeySlot(const integrity::Superblock& sb, uint32_t* index);

}  // namespace dst::aggregator
