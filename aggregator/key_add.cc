#include "aggregator/key_add.h"

#include <memory>
#include <utility>

#include <cryptopp/secblock.h>

#include "aggregator/volume_key.h"

namespace dst::aggregator {

namespace {

// What the sealing thread needs, copied on the loop: it touches nothing else.
struct SealJob {
  KeySlotKind kind;
  std::string path;
  ScryptParams cost;
  uint32_t index = 0;
  integrity::Superblock identity;  // the volume UUID, for the slot's associated data
  CryptoPP::SecByteBlock master;
  integrity::KeySlotBytes sealed{};
};

Status Seal(SealJob& job) {
  VolumeSecret secret;
  DST_RETURN_IF_ERROR(job.kind == KeySlotKind::kPassphrase ? ReadPassphraseFile(job.path, &secret)
                                                           : ReadSecretKeyFile(job.path, &secret));
  DST_RETURN_IF_ERROR(SealIntoSlot(job.identity, job.index, secret,
                                   {job.master.data(), job.master.size()}, job.cost));
  job.sealed = job.identity.key_slots[job.index];
  return Status::Ok();
}

}  // namespace

void KeyAdder::Add(integrity::ChecksummedVolume& volume, KeySlotKind kind, const std::string& path,
                   uint8_t cost, Done done) {
  if (!volume.encrypted())
    return done(Status::Invalid("volume " + volume.name() + " is not encrypted"), 0);
  if (busy_.count(&volume))
    return done(Status::Error(EBUSY, "volume " + volume.name() + ": a key add is under way"), 0);
  auto job = std::make_shared<SealJob>();
  job->kind = kind;
  job->path = path;
  job->cost.log2_n = cost;
  job->identity.name = volume.name();
  job->identity.key_slots = volume.key_slots();
  job->identity.volume_uuid = volume.superblock(0).volume_uuid;
  if (Status s = FreeKeySlot(job->identity, &job->index); !s.ok()) return done(s, 0);
  job->master.Assign(volume.master_key().data(), volume.master_key().size());
  busy_.insert(&volume);
  work_.Run(
      next_job_++, [job] { return Seal(*job); },
      [this, &volume, job, done = std::move(done)](Status s) {
        if (!s.ok()) {
          busy_.erase(&volume);
          return done(s, 0);
        }
        volume.SetKeySlot(job->index, job->sealed, [this, &volume, job, done](int err) {
          busy_.erase(&volume);
          if (err == 0) return done(Status::Ok(), job->index);
          done(Status::FromErrno(err, "volume " + volume.name() + ": writing key slot " +
                                          std::to_string(job->index)),
               0);
        });
      });
}

}  // namespace dst::aggregator
