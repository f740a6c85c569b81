// FileSystem::StoreMemory: RocksDB's own memory figures, for `psmctl
// metrics` (docs/monitoring.md).
#include <rocksdb/db.h>

#include "fs/fs_impl.h"

namespace psm {

StoreMemoryStats FileSystem::StoreMemory() {
  StoreMemoryStats s;
  rocksdb::DB* db = impl_->store ? impl_->store->db() : nullptr;
  if (db == nullptr) return s;
  uint64_t v = 0;
  // Summed over every column family.
  if (db->GetAggregatedIntProperty(rocksdb::DB::Properties::kCurSizeAllMemTables, &v)) {
    s.memtable_bytes = v;
  }
  if (db->GetAggregatedIntProperty(rocksdb::DB::Properties::kEstimateTableReadersMem, &v)) {
    s.table_readers_bytes = v;
  }
  // Every column family shares one block cache (meta/store.cc): ask one,
  // summing would count the cache once per family.
  if (db->GetIntProperty(rocksdb::DB::Properties::kBlockCacheUsage, &v)) s.block_cache_bytes = v;
  if (db->GetIntProperty(rocksdb::DB::Properties::kBlockCacheCapacity, &v)) {
    s.block_cache_capacity_bytes = v;
  }
  return s;
}

}  // namespace psm
