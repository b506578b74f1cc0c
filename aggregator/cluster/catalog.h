// The cluster catalog in etcd (docs/cluster.md, "The catalog"): its keys under the URL's prefix
// and its records, JSON values (one object per key).
//
//   PREFIX/exports/URI   an export node's export: {"uri", "zone", "size", "drained", "volume"}
//   PREFIX/volumes/NAME  a volume: {"name", "uuid", "layout", "copies", "size", "members",
//                        "state": "creating" | "ready", "created", "creator_lease"}
//   PREFIX/owners/NAME   the volume's owner, attached to its lease: {"host", "pid", "since",
//                        "lease", "nbd"}
//
// Decoding is strict about types and tolerant of fields it does not know (a newer dst may add
// some). Pure functions; any thread.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace dst::cluster {

struct ExportRecord {
  std::string uri;
  std::string zone;
  uint64_t size = 0;     // the export's size when it was registered
  bool drained = false;  // no new volume is placed on it
  std::string volume;    // the volume it is a member of; empty: free
};

struct VolumeRecord {
  std::string name;
  std::string uuid;    // empty while creating
  std::string layout;  // "mirror", "raid10"
  uint32_t copies = 0;
  uint64_t size = 0;                 // the volume's size; 0 while creating
  std::vector<std::string> members;  // in layout order
  std::string state = "creating";    // "creating": exports reserved, being formatted; "ready"
  uint64_t created = 0;              // seconds since the epoch
  // While "creating": the lease the create keeps alive while it formats the members; once that
  // lease is gone (expired, the create killed) the record is a leftover. 0: none (a record of a
  // dst that did not write one, or "ready").
  int64_t creator_lease = 0;
};

struct OwnerRecord {
  std::string host;
  int64_t pid = 0;
  uint64_t since = 0;  // seconds since the epoch
  int64_t lease = 0;   // the etcd lease the key is attached to
  std::string nbd;     // HOST:PORT where NBD clients reach the owner (map --cluster); empty: none
};

// The keys under `prefix` (EtcdUrl::prefix, "/dst").
class CatalogKeys {
 public:
  explicit CatalogKeys(std::string prefix) : prefix_(std::move(prefix)) {}
  std::string Exports() const { return prefix_ + "/exports/"; }
  std::string Volumes() const { return prefix_ + "/volumes/"; }
  std::string Owners() const { return prefix_ + "/owners/"; }
  std::string Export(std::string_view uri) const { return Exports() + std::string(uri); }
  std::string Volume(std::string_view name) const { return Volumes() + std::string(name); }
  std::string Owner(std::string_view name) const { return Owners() + std::string(name); }

 private:
  std::string prefix_;
};

std::string EncodeExport(const ExportRecord& record);
std::string EncodeVolume(const VolumeRecord& record);
std::string EncodeOwner(const OwnerRecord& record);
// EINVAL naming `key` when the value is not such a record.
Status DecodeExport(std::string_view key, std::string_view json, ExportRecord* record);
Status DecodeVolume(std::string_view key, std::string_view json, VolumeRecord* record);
Status DecodeOwner(std::string_view key, std::string_view json, OwnerRecord* record);

// "host-b (pid 4242)", how errors and logs name an owner.
std::string DescribeOwner(const OwnerRecord& owner);

// Now, as the records' times (`created`, `since`) hold it.
uint64_t SecondsSinceEpoch();

}  // namespace dst::cluster
