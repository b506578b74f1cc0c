// ChecksummedVolume::State(): the integrity counters under their one set of names, which status,
// metrics and the stats lines all print (docs/integrity.md, "Counters").
#include "aggregator/integrity/checksummed_volume.h"

namespace dst::integrity {

volume::DeviceState ChecksummedVolume::State() const {
  const TableCacheCounters& t = table_.counters();
  volume::IntegrityState integrity;
  integrity.state = std::string(VolumeStateName(superblocks_[0].state));
  integrity.checksum = ChecksumAlgorithmName(superblocks_[0].geometry.params.algorithm);
  integrity.counters = {
      {"checksum_errors", counters_.checksum_errors, true,
       "Blocks that failed verification twice (EIO to the client)"},
      {"rereads_recovered", counters_.rereads_recovered, true,
       "Blocks that verified when read a second time"},
      {"rmw_blocks", counters_.rmw_blocks, true, "Partial blocks merged with a write"},
      {"recomputed_regions", counters_.recomputed_regions, false,
       "Regions recomputed at the last assembly"},
      {"dirty_regions", intent_.set_count(), false, "Write-intent bits set"},
      {"bitmap_syncs", intent_.syncs(), true, "Write-intent bitmap updates (write and flush)"},
      {"table_pages", table_.cached_pages(), false, "Checksum table pages cached"},
      {"table_dirty", table_.dirty_pages(), false, "Cached table pages not yet written back"},
      {"table_loads", t.loads, true, "Table pages read from members"},
      {"table_writebacks", t.writebacks, true, "Table pages written to members"},
      {"table_evictions", t.evictions, true, "Table pages evicted from the cache"},
      {"table_errors", t.errors, true, "Failed table page reads and writes"},
  };
  integrity.member_checksum_errors = member_checksum_errors_;
  return {superblocks_[0].layout, superblocks_[0].member_count, std::move(integrity)};
}

}  // namespace dst::integrity
