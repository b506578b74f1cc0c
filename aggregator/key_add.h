// `key add` on a running aggregator (docs/encryption.md, "Key slots"): seals an encrypted
// volume's master key into a free key slot for a new secret, then writes the slot to every
// member's superblock (ChecksummedVolume::SetKeySlot). The secret is read from a file by the
// aggregator itself, so that it never crosses the control socket, and sealed off the event loop
// (scrypt takes about a second at the default cost).
//
// Threading: Add() and Stop() on the event loop's thread; the sealing on a thread of its own.
#pragma once

#include <cstdint>
#include <functional>
#include <set>
#include <string>

#include <asio.hpp>

#include "aggregator/integrity/checksummed_volume.h"
#include "aggregator/off_loop.h"
#include "common/key_slot.h"
#include "common/status.h"

namespace dst::aggregator {

class KeyAdder {
 public:
  using Done = std::function<void(Status, uint32_t slot)>;

  explicit KeyAdder(asio::io_context& io) : io_(io), work_(io) {}

  // Seals `volume`'s master key for the secret in `path` (a key file or a passphrase file, as
  // `kind` says; a passphrase with scrypt cost 2^`cost`) into its lowest free slot; `done` hears
  // the slot once every member's superblock holds it. Refused: a volume that is not encrypted,
  // one with a key change under way, all slots in use, a secret file that cannot be read.
  void Add(integrity::ChecksummedVolume& volume, KeySlotKind kind, const std::string& path,
           uint8_t cost, Done done);
  // At stop: waits for sealing in progress and drops its result.
  void Stop() { work_.JoinAll(); }

 private:
  asio::io_context& io_;
  OffLoopWork work_;
  std::set<const integrity::ChecksummedVolume*> busy_;  // a key add under way
  uint64_t next_job_ = 0;
};

}  // namespace dst::aggregator
