#include "meta/store.h"

#include <rocksdb/cache.h>
#include <rocksdb/convenience.h>
#include <rocksdb/env.h>
#include <rocksdb/file_system.h>
#include <rocksdb/filter_policy.h>
#include <rocksdb/merge_operator.h>
#include <rocksdb/options.h>
#include <rocksdb/perf_level.h>
#include <rocksdb/slice_transform.h>
#include <rocksdb/table.h>
#include <rocksdb/write_buffer_manager.h>

#include <algorithm>
#include <vector>

#include "meta/tsan_rocksdb.h"

namespace psm {
namespace {

// Adds LE64 operands (two's complement, so negative deltas work): the
// counters of the `volume` column family (keys.h).
class CounterAddOperator : public rocksdb::AssociativeMergeOperator {
 public:
  bool Merge(const rocksdb::Slice& /*key*/, const rocksdb::Slice* existing,
             const rocksdb::Slice& value, std::string* new_value,
             rocksdb::Logger* /*logger*/) const override {
    tsan::PsmCallbackScope checked;  // called from inside Store::Write too
    uint64_t base = 0;
    if (existing) {
      if (existing->size() != 8) return false;
      base = GetLE64(existing->data());
    }
    if (value.size() != 8) return false;
    new_value->clear();
    PutLE64(new_value, base + GetLE64(value.data()));
    return true;
  }
  const char* Name() const override { return "psm.CounterAdd"; }
};

// Checksum groups (`csums`, keys.h CsumGroup): an operand is a group of
// some blocks' checksums, in the value's own encoding; the newer one wins
// block by block. Associative, so RocksDB may also fold operands together.
class CsumMergeOperator : public rocksdb::AssociativeMergeOperator {
 public:
  bool Merge(const rocksdb::Slice& /*key*/, const rocksdb::Slice* existing,
             const rocksdb::Slice& value, std::string* new_value,
             rocksdb::Logger* /*logger*/) const override {
    tsan::PsmCallbackScope checked;  // called from inside Store::Write too
    CsumGroup g, newer;
    if (existing && !DecodeCsumGroup(std::string_view(existing->data(), existing->size()), &g)) {
      return false;  // RocksDB reports Corruption
    }
    if (!DecodeCsumGroup(std::string_view(value.data(), value.size()), &newer)) return false;
    OverlayCsumGroup(newer, &g);
    EncodeCsumGroup(g, new_value);
    return true;
  }
  const char* Name() const override { return "psm.CsumMerge"; }
};

// The prefix of a versioned key (keys.h): the key without its 8-byte epoch
// suffix, i.e. the record (InodePrefix, DentryPrefix, ChunkPrefix,
// XattrPrefix). Every key of a versioned column family is record + 8 bytes,
// and the records of one column family are prefix-free (fixed length, or a
// name ended by its 0x00), so all versions of a record are one contiguous
// group: RocksDB's one essential property of a prefix extractor. It is not
// idempotent (a record is not a key), so a prefix seek must seek a full
// version key (VersionKey, FirstVersionKey), never a bare record; only the
// version iterators (Store::NewVersionIterator) seek by prefix, every other
// iterator is total-order. STORED, by name, in each SST file's properties:
// a file whose extractor name differs is read without its prefix filter.
class VersionPrefix : public rocksdb::SliceTransform {
 public:
  const char* Name() const override { return "psm.VersionPrefix"; }
  rocksdb::Slice Transform(const rocksdb::Slice& key) const override {
    return rocksdb::Slice(key.data(), key.size() - 8);
  }
  bool InDomain(const rocksdb::Slice& key) const override { return key.size() >= 8; }
};

// RocksDB counts into a thread-local PerfContext at every key comparison,
// memtable insert and seek (kEnableCount is each thread's default); psmfs
// never reads those counts, and from the shared librocksdb each one costs
// __tls_get_addr calls: about a tenth of the core's CPU per create or
// unlink (docs/performance.md, "Core cost of a create and an unlink").
// Turned off once in each thread that calls into the store.
void NoPerfCounts() {
  thread_local const bool off = [] {
    rocksdb::SetPerfLevel(rocksdb::PerfLevel::kDisable);
    return true;
  }();
  (void)off;
}

rocksdb::ReadOptions TotalOrder() {
  rocksdb::ReadOptions ro;
  ro.total_order_seek = true;
  return ro;
}

rocksdb::ReadOptions SamePrefix() {
  rocksdb::ReadOptions ro;
  ro.prefix_same_as_start = true;
  return ro;
}

}  // namespace

Result<std::unique_ptr<Store>> Store::Open(const std::string& dir, const StoreOptions& opts) {
  std::unique_ptr<Store> s(new Store());
  rocksdb::DBOptions dbo;
  dbo.create_if_missing = opts.create_if_missing;
  // A volume formatted before a column family existed (csums) gets it at
  // its first read-write open.
  dbo.create_missing_column_families = !opts.read_only;
  dbo.error_if_exists = opts.error_if_exists;
  dbo.manual_wal_flush = true;
  // Compactions read their input tables 2 MiB at a time. RocksDB 7.8's
  // default (0) reads them one data block (4 KiB) per pread: compacting the
  // tables of a freshly populated 2,000,000-file volume at its first mount
  // took 70,000 reads and 1.5 s of CPU, beside the first answers
  // (docs/performance.md, "Compaction reads").
  dbo.compaction_readahead_size = 2u << 20;
  dbo.max_background_jobs = 2;
#if defined(__SANITIZE_THREAD__)
  // ThreadSanitizer builds only: DB::Open opens the table files on the
  // calling thread instead of a pool of RocksDB threads. Opening a table
  // reads its filter policy's name from a function-local static of the
  // (uninstrumented) library; TSan cannot see that static's initialization
  // guard and reports the first thread's construction against the second's
  // lookup, both inside RocksDB (seen in psmctl fsck since the Bloom
  // filters). tests/tsan.supp may not name the function (std::_Hashtable's
  // find would hide psmfs's own races), so the interleaving is avoided.
  dbo.max_file_opening_threads = 1;
#endif
  dbo.keep_log_file_num = 4;
  dbo.max_manifest_file_size = 64u << 20;
  dbo.info_log_level = rocksdb::InfoLogLevel::WARN_LEVEL;
  if (opts.fs) {
    s->fs_ = opts.fs;
    s->env_ = rocksdb::NewCompositeEnv(opts.fs);
    dbo.env = s->env_.get();
  }
  // One budget (StoreOptions::cache_bytes): data blocks, index and filter
  // blocks and memtables all draw on one LRU cache, so RocksDB's memory does
  // not grow with the volume (index blocks held outside the cache would:
  // about 1% of the SST bytes). Memtables are charged to it; when they reach
  // half of it the largest is flushed.
  s->cache_ = rocksdb::NewLRUCache(opts.cache_bytes);
  dbo.write_buffer_manager =
      std::make_shared<rocksdb::WriteBufferManager>(opts.cache_bytes / 2, s->cache_);
  rocksdb::BlockBasedTableOptions bbt;
  bbt.block_cache = s->cache_;
  bbt.cache_index_and_filter_blocks = true;
  bbt.cache_index_and_filter_blocks_with_high_priority = true;
  bbt.pin_l0_filter_and_index_blocks_in_cache = true;
  // Partitioned index and filters: a table file's index and filter are
  // cut into 16 KiB blocks under a small top level (pinned in the cache), so
  // a lookup loads the partitions it needs, not the whole index (~0.5% of
  // the file) and filter (~1.2 bytes a key) of a 100+ MiB table. Whole,
  // they were evicted and read back for nearly every cold lookup once the
  // tables outgrew the cache: at 10,000,000 files a stat ran at 2% of its
  // rate on 10,000, the daemon copying and checksumming megabyte blocks
  // (docs/performance.md, "10,000,000 files"). 16 KiB rather than 4: a
  // cold lookup at that size read ~0.7 partitions besides its data blocks,
  // nearly each one a disk read of its own; a quarter as many partitions,
  // each about as quick to read, cut a cold missing-name lookup's reads
  // from 0.96 to 0.58 ("Cold lookups at 10,000,000 files"). Tables written
  // before keep their format and are read as they are.
  bbt.index_type = rocksdb::BlockBasedTableOptions::IndexType::kTwoLevelIndexSearch;
  bbt.partition_filters = true;
  bbt.metadata_block_size = 16384;
  bbt.pin_top_level_index_and_filter = true;
  // Data blocks padded to 4 KiB boundaries (a block never crosses a page,
  // so a cold read of one is one page, not two; ~1.3% more table bytes).
  // Only without compression, as here. Read by handle like any block:
  // older tables and older psmfs are unaffected.
  bbt.block_align = true;
  rocksdb::ColumnFamilyOptions cfo;
  cfo.write_buffer_size = opts.write_buffer_bytes;
  cfo.max_write_buffer_number = 2;
  cfo.table_factory.reset(rocksdb::NewBlockBasedTableFactory(bbt));
  cfo.compression = rocksdb::kNoCompression;
  // Counters (Txn::AddCounter) are merge operands; fold them at write time
  // once a few pile up, so a read never walks a long chain.
  cfo.merge_operator = std::make_shared<CounterAddOperator>();
  cfo.max_successive_merges = 16;
  // Versioned column families: most reads are one version lookup, and many
  // of them miss (every create first looks up a name, an inode, a chunk that
  // do not exist yet). A Bloom filter of record prefixes answers a miss
  // without searching the memtable's skip list or reading an SST's blocks.
  // Memory stays in the budget: the memtable filter (2% of a memtable) is
  // allocated in the memtable, which the WriteBufferManager charges to the
  // cache; SST filter blocks are cached blocks (cache_index_and_filter_blocks).
  // No whole-key filter: versioned records are only ever read by seeking.
  // The other column families keep no filter: their point reads find what
  // they look for (alloc, dead) or are few (volume, snapshots).
  rocksdb::BlockBasedTableOptions vbbt = bbt;
  vbbt.filter_policy.reset(rocksdb::NewBloomFilterPolicy(10));
  vbbt.whole_key_filtering = false;
  vbbt.optimize_filters_for_memory = true;
  rocksdb::ColumnFamilyOptions vcfo = cfo;
  vcfo.table_factory.reset(rocksdb::NewBlockBasedTableFactory(vbbt));
  vcfo.prefix_extractor = std::make_shared<VersionPrefix>();
  vcfo.memtable_prefix_bloom_size_ratio = 0.02;
  // Checksums (`csums`, grouped 16 blocks a record: ~5 bytes a 4 KiB data
  // block in a table): 32 KiB data blocks (~6,500 checksums, ~26 MiB of
  // data) under one binary index instead of a two-level one. A 1 MiB READ's
  // 256 checksums then lie in one cached block (16 records), and a random
  // READ's one checksum is one index search and one block search, with no
  // partition to look up in between; even 1 TB of data makes ~1.3 GB of
  // checksums, whose index (~1/1,600 of the table) stays small whole. Measured on a cold read of 1 GiB and of
  // 20,000 random 4 KiB blocks (docs/performance.md, "Checksum lookups"):
  // the daemon's extra CPU for checksums about halved. A property of each
  // table, as above: tables written before are read as they are.
  rocksdb::BlockBasedTableOptions cbbt = bbt;
  cbbt.block_size = 32u << 10;
  cbbt.index_type = rocksdb::BlockBasedTableOptions::IndexType::kBinarySearch;
  cbbt.partition_filters = false;
  rocksdb::ColumnFamilyOptions ccfo = cfo;
  ccfo.table_factory.reset(rocksdb::NewBlockBasedTableFactory(cbbt));
  // Groups of 16 checksums (keys.h CsumKey): a write of some blocks of a
  // group is a merge operand, folded at write time once 16 pile up.
  ccfo.merge_operator = std::make_shared<CsumMergeOperator>();
  // The volume's counters (`files`, `used_blocks`) get an operand from
  // nearly every commit, and are read only when the volume opens and by
  // fsck (the daemon counts in memory). Folding them at write time cost
  // every such commit a memtable seek and a walk of up to 16 operands per
  // counter (3-4% of the CPU of a create or unlink, docs/performance.md);
  // unfolded, they are folded by the flush, and a read adds up at most the
  // operands of the memtables not yet flushed (tested in
  // keys_versioned_test).
  rocksdb::ColumnFamilyOptions volcfo = cfo;
  volcfo.max_successive_merges = 0;
  std::vector<rocksdb::ColumnFamilyDescriptor> cfs;
  // Read-only opens cannot create a column family a volume formatted before
  // it existed lacks: such a family reads as the (always empty) default one.
  std::vector<int> cf_index;
  std::vector<std::string> existing;
  if (opts.read_only) {
    tsan::RocksCallScope rocks;
    (void)rocksdb::DB::ListColumnFamilies(dbo, dir, &existing);
  }
  for (int i = 0; i < static_cast<int>(Cf::kCount); ++i) {
    const Cf cf = static_cast<Cf>(i);
    const char* name = CfName(cf);
    if (opts.read_only && !existing.empty() &&
        std::find(existing.begin(), existing.end(), name) == existing.end()) {
      continue;
    }
    cfs.emplace_back(name, cf == Cf::kCsums    ? ccfo
                           : cf == Cf::kVolume ? volcfo
                           : IsVersionedCf(cf) ? vcfo
                                               : cfo);
    cf_index.push_back(i);
  }
  std::vector<rocksdb::ColumnFamilyHandle*> hs;
  rocksdb::DB* raw = nullptr;
  rocksdb::Status rs;
  {
    // In TSan builds no call into RocksDB records memory accesses of the
    // calling thread (meta/tsan_rocksdb.h); a no-op otherwise.
    tsan::RocksCallScope rocks;
    if (opts.read_only) {
      rs = rocksdb::DB::OpenForReadOnly(dbo, dir, cfs, &hs, &raw);
    } else {
      rs = rocksdb::DB::Open(dbo, dir, cfs, &hs, &raw);
    }
  }
  if (!rs.ok()) {
    Status st = Status::FromRocks(rs);
    if (rs.IsInvalidArgument() && rs.ToString().find("does not exist") != std::string::npos) {
      return Status::NotFound("no metadata store at " + dir);
    }
    return Status::FromErrno(st.ToErrno(), "cannot open metadata store " + dir + ": " + rs.ToString());
  }
  s->db_.reset(raw);
  for (size_t i = 0; i < hs.size(); ++i) s->handles_[cf_index[i]] = hs[i];
  for (auto*& h : s->handles_) {
    if (h == nullptr) h = s->db_->DefaultColumnFamily();
  }
  s->read_only_ = opts.read_only;
  return s;
}

Store::~Store() {
  if (db_) {
    // Not after a failed WAL write (see failed_): the log writer would
    // assert. What was not synced is lost, as in a crash.
    if (!read_only_ && !failed_.load()) (void)SyncWal();
    tsan::RocksCallScope rocks;
    for (auto* h : handles_) {
      if (h && h != db_->DefaultColumnFamily()) (void)db_->DestroyColumnFamilyHandle(h);
    }
    (void)db_->Close();
    db_.reset();
  }
}

Status Store::Get(Cf cf, std::string_view key, std::string* value) {
  NoPerfCounts();
  tsan::RocksCallScope rocks;
  return Status::FromRocks(
      db_->Get(rocksdb::ReadOptions(), handle(cf), rocksdb::Slice(key.data(), key.size()), value));
}

void Store::MultiGet(Cf cf, const std::vector<std::string>& keys, std::vector<std::string>* values,
                     std::vector<Status>* statuses) {
  NoPerfCounts();
  const size_t n = keys.size();
  if (n == 1) {
    // One key (a random 4 KiB READ's checksum): a point read costs less
    // than MultiGet's batch set-up (docs/performance.md, "Checksum
    // lookups": with the two-level index it went with, ~5 µs a READ).
    values->resize(1);
    statuses->assign(1, Get(cf, keys[0], &(*values)[0]));
    return;
  }
  std::vector<rocksdb::Slice> ks(keys.begin(), keys.end());
  std::vector<rocksdb::PinnableSlice> vs(n);
  std::vector<rocksdb::Status> ss(n);
  {
    tsan::RocksCallScope rocks;
    db_->MultiGet(rocksdb::ReadOptions(), handle(cf), n, ks.data(), vs.data(), ss.data());
  }
  values->resize(n);
  statuses->resize(n);
  for (size_t i = 0; i < n; ++i) {
    (*statuses)[i] = Status::FromRocks(ss[i]);
    if (ss[i].ok()) (*values)[i].assign(vs[i].data(), vs[i].size());
  }
}

Status Store::Put(Cf cf, std::string_view key, std::string_view value) {
  rocksdb::WriteBatch b;
  b.Put(handle(cf), rocksdb::Slice(key.data(), key.size()),
        rocksdb::Slice(value.data(), value.size()));
  return Write(&b);
}

#if defined(__SANITIZE_THREAD__)
static constexpr bool kSerializeWrites = true;
#else
static constexpr bool kSerializeWrites = false;
#endif

void Store::Fail(const Status& s) {
  std::lock_guard<std::mutex> l(fail_mu_);
  if (failed_.load()) return;
  failed_status_ = s;
  failed_.store(true);
}

Status Store::Failed() {
  std::lock_guard<std::mutex> l(fail_mu_);
  std::string m = "the metadata log could not be written (" + failed_status_.message() +
                  "); no more changes are taken: mount the volume again";
  return failed_status_.Is(Code::kNoSpace) ? Status::NoSpace(std::move(m))
                                            : Status::IOError(std::move(m));
}

Status Store::Failure() { return failed_.load() ? Failed() : Status::Ok(); }

Status Store::Write(rocksdb::WriteBatch* batch) {
  NoPerfCounts();
  std::shared_lock<std::shared_mutex> wl(wal_mu_);
  if (failed_.load()) return Failed();
  Status s;
  if (kSerializeWrites) {
    std::lock_guard<std::mutex> l(tsan_write_mu_);
    tsan::RocksCallScope rocks;
    s = Status::FromRocks(db_->Write(rocksdb::WriteOptions(), batch));
  } else {
    s = Status::FromRocks(db_->Write(rocksdb::WriteOptions(), batch));
  }
  if (!s.ok() && (s.Is(Code::kIOError) || s.Is(Code::kNoSpace))) Fail(s);
  return s;
}

Status Store::SyncWal() {
  if (read_only_) return Status::Ok();
  std::unique_lock<std::shared_mutex> wl(wal_mu_);
  if (failed_.load()) return Failed();
  tsan::RocksCallScope rocks;
  Status s = Status::FromRocks(db_->FlushWAL(true));
  if (!s.ok()) Fail(s);
  return s;
}

Status Store::FlushAll() {
  if (read_only_) return Status::Ok();
  PSM_RETURN_IF_ERROR(SyncWal());
  rocksdb::FlushOptions fo;
  fo.wait = true;
  std::vector<rocksdb::ColumnFamilyHandle*> hs(handles_.begin(), handles_.end());
  tsan::RocksCallScope rocks;
  return Status::FromRocks(db_->Flush(fo, hs));
}

std::unique_ptr<rocksdb::Iterator> Store::NewIterator(Cf cf) {
  NoPerfCounts();
  tsan::RocksCallScope rocks;
  return std::unique_ptr<rocksdb::Iterator>(
      tsan::Wrap(db_->NewIterator(TotalOrder(), handle(cf))));
}

std::unique_ptr<rocksdb::Iterator> Store::NewScanIterator(Cf cf) {
  NoPerfCounts();
  tsan::RocksCallScope rocks;
  rocksdb::ReadOptions ro = TotalOrder();
  ro.fill_cache = false;
  ro.readahead_size = 2u << 20;
  return std::unique_ptr<rocksdb::Iterator>(tsan::Wrap(db_->NewIterator(ro, handle(cf))));
}

std::unique_ptr<rocksdb::Iterator> Store::NewReadaheadIterator(Cf cf, size_t readahead) {
  NoPerfCounts();
  tsan::RocksCallScope rocks;
  rocksdb::ReadOptions ro = TotalOrder();
  ro.readahead_size = readahead;
  return std::unique_ptr<rocksdb::Iterator>(tsan::Wrap(db_->NewIterator(ro, handle(cf))));
}

std::unique_ptr<rocksdb::Iterator> Store::NewVersionIterator(Cf cf) {
  NoPerfCounts();
  tsan::RocksCallScope rocks;
  return std::unique_ptr<rocksdb::Iterator>(
      tsan::Wrap(db_->NewIterator(SamePrefix(), handle(cf))));
}

size_t Store::cache_capacity() const { return cache_ ? cache_->GetCapacity() : 0; }
size_t Store::cache_usage() const { return cache_ ? cache_->GetUsage() : 0; }
void Store::SetCacheCapacity(size_t bytes) {
  tsan::RocksCallScope rocks;
  if (cache_) cache_->SetCapacity(bytes);
}

uint64_t Store::EstimateKeys(Cf cf) {
  tsan::RocksCallScope rocks;
  uint64_t n = 0;
  db_->GetIntProperty(handle(cf), "rocksdb.estimate-num-keys", &n);
  return n;
}

Status ForEachPrefix(rocksdb::Iterator* it, std::string_view prefix,
                     const std::function<bool(std::string_view, std::string_view)>& fn,
                     std::string_view from) {
  std::string_view start = from.empty() ? prefix : from;
  for (it->Seek(rocksdb::Slice(start.data(), start.size())); it->Valid(); it->Next()) {
    rocksdb::Slice k = it->key();
    if (k.size() < prefix.size() || memcmp(k.data(), prefix.data(), prefix.size()) != 0) break;
    if (!fn(std::string_view(k.data(), k.size()),
            std::string_view(it->value().data(), it->value().size()))) {
      break;
    }
  }
  return Status::FromRocks(it->status());
}

Status GetAtIter(rocksdb::Iterator* it, std::string_view prefix, Epoch e, std::string* payload,
                 Epoch* version) {
  std::string target = VersionKey(prefix, e);
  it->Seek(target);
  if (!it->Valid()) {
    PSM_RETURN_IF_ERROR(Status::FromRocks(it->status()));
    return Status::NotFound();
  }
  rocksdb::Slice k = it->key();
  if (k.size() != prefix.size() + 8 || memcmp(k.data(), prefix.data(), prefix.size()) != 0) {
    return Status::NotFound();
  }
  rocksdb::Slice v = it->value();
  if (v.empty()) return Status::Corruption("empty versioned value");
  if (version) *version = KeyEpoch(std::string_view(k.data(), k.size()));
  if (v[0] == kTagTombstone) return Status::NotFound();
  if (payload) payload->assign(v.data() + 1, v.size() - 1);
  return Status::Ok();
}

Status GetAt(Store* store, Cf cf, std::string_view prefix, Epoch e, std::string* payload,
             Epoch* version) {
  auto it = store->NewVersionIterator(cf);
  return GetAtIter(it.get(), prefix, e, payload, version);
}

Txn::Txn(Store* store) : store_(store), batch_(rocksdb::BytewiseComparator(), 0, true) {}

Status Txn::Get(Cf cf, std::string_view key, std::string* value) {
  NoPerfCounts();
  tsan::RocksCallScope rocks;
  return Status::FromRocks(batch_.GetFromBatchAndDB(store_->db(), TotalOrder(),
                                                    store_->handle(cf),
                                                    rocksdb::Slice(key.data(), key.size()), value));
}

void Txn::NoteTouched(Cf cf, std::string_view key) {
  if ((cf != Cf::kInodes && cf != Cf::kChunks) || key.size() < 8) return;
  const InodeId ino = InodeFromKey(key);
  if (touched_.empty() || touched_.back() != ino) touched_.push_back(ino);
}

void Txn::Put(Cf cf, std::string_view key, std::string_view value) {
  NoteTouched(cf, key);
  (void)batch_.Put(store_->handle(cf), rocksdb::Slice(key.data(), key.size()),
                   rocksdb::Slice(value.data(), value.size()));
}

void Txn::PutUnindexed(Cf cf, std::string_view key, std::string_view value) {
  // Into the raw batch, as Commit's counters: the index (a skip list insert
  // per key, 13% of the daemon's CPU on a sequential write of checksummed
  // blocks) only serves reads through this Txn.
  (void)batch_.GetWriteBatch()->Put(store_->handle(cf), rocksdb::Slice(key.data(), key.size()),
                                    rocksdb::Slice(value.data(), value.size()));
}

void Txn::MergeUnindexed(Cf cf, std::string_view key, std::string_view operand) {
  (void)batch_.GetWriteBatch()->Merge(store_->handle(cf), rocksdb::Slice(key.data(), key.size()),
                                      rocksdb::Slice(operand.data(), operand.size()));
}

void Txn::Delete(Cf cf, std::string_view key) {
  NoteTouched(cf, key);
  (void)batch_.Delete(store_->handle(cf), rocksdb::Slice(key.data(), key.size()));
}

void Txn::AddCounter(std::string_view key, int64_t delta) {
  if (delta == 0) return;
  for (auto& [k, d] : counters_) {
    if (k == key) {
      d += delta;
      return;
    }
  }
  counters_.emplace_back(std::string(key), delta);
}

int64_t Txn::CounterDelta(std::string_view key) const {
  for (const auto& [k, d] : counters_) {
    if (k == key) return d;
  }
  return 0;
}

Status GetCounter(Store* store, std::string_view key, uint64_t* value) {
  std::string v;
  PSM_RETURN_IF_ERROR(store->Get(Cf::kVolume, key, &v));
  if (v.size() != 8) return Status::Corruption("counter '" + std::string(key) + "' is not 8 bytes");
  *value = GetLE64(v.data());
  return Status::Ok();
}

std::unique_ptr<rocksdb::Iterator> Txn::NewIterator(Cf cf) {
  NoPerfCounts();
  tsan::RocksCallScope rocks;
  rocksdb::Iterator* base = store_->db()->NewIterator(TotalOrder(), store_->handle(cf));
  return std::unique_ptr<rocksdb::Iterator>(
      tsan::Wrap(batch_.NewIteratorWithBase(store_->handle(cf), base)));
}

std::unique_ptr<rocksdb::Iterator> Txn::NewVersionIterator(Cf cf) {
  NoPerfCounts();
  tsan::RocksCallScope rocks;
  rocksdb::Iterator* base = store_->db()->NewIterator(SamePrefix(), store_->handle(cf));
  return std::unique_ptr<rocksdb::Iterator>(
      tsan::Wrap(batch_.NewIteratorWithBase(store_->handle(cf), base)));
}

Status Txn::GetAt(Cf cf, std::string_view prefix, Epoch e, std::string* payload, Epoch* version) {
  if (batch_.GetWriteBatch()->Count() == 0) {
    return psm::GetAt(store_, cf, prefix, e, payload, version);
  }
  auto it = NewVersionIterator(cf);
  return GetAtIter(it.get(), prefix, e, payload, version);
}

bool Txn::empty() const {
  return const_cast<rocksdb::WriteBatchWithIndex&>(batch_).GetWriteBatch()->Count() == 0 &&
         counters_.empty();
}

Status Txn::Commit() {
  if (empty()) return Status::Ok();
  rocksdb::WriteBatch* b = batch_.GetWriteBatch();
  for (const auto& [k, d] : counters_) {
    if (d == 0) continue;
    std::string v;
    PutLE64(&v, static_cast<uint64_t>(d));
    // Into the raw batch (not the index): nothing reads it through this Txn.
    (void)b->Merge(store_->handle(Cf::kVolume), rocksdb::Slice(k.data(), k.size()),
                   rocksdb::Slice(v.data(), v.size()));
  }
  counters_.clear();
  Status st = b->Count() == 0 ? Status::Ok() : store_->Write(b);
  // After the write, whatever its outcome (a hook only drops cached state).
  std::vector<std::function<void()>> hooks;
  hooks.swap(after_commit_);
  for (auto& h : hooks) h();
  return st;
}

}  // namespace psm
