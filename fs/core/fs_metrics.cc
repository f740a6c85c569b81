// FileSystem::StoreMemory: RocksDB's own memory figures, for `psmctl
// metrics` (docs/monitoring.md). The cache's capacity and use (memtables
// charged to it) are in VolumeStats already.
#include <rocksdb/db.h>

#include "fs/core/fs_impl.h"

namespace psm {

StoreMemoryStats FileSystem::StoreMemory() {
  StoreMemoryStats s;
  rocksdb::DB* db = impl_->store ? impl_->store->db() : nullptr;
  if (db == nullptr) return s;
  uint64_t v = 0;
  // Summed over every column family (the memtables are also charged to the
  // one cache, VolumeStats::metadata_cache_used_bytes).
  if (db->GetAggregatedIntProperty(rocksdb::DB::Properties::kCurSizeAllMemTables, &v)) {
    s.memtable_bytes = v;
  }
  if (db->GetAggregatedIntProperty(rocksdb::DB::Properties::kEstimateTableReadersMem, &v)) {
    s.table_readers_bytes = v;
  }
  return s;
}

}  // namespace psm
