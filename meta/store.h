// Store: the RocksDB database that holds all psmfs metadata, and Txn, the
// batch one filesystem operation builds and commits.
//
// Durability model (docs/crash-consistency.md): the store is opened with
// RocksDB's manual_wal_flush, so a committed Txn is visible to readers at once
// but reaches the OS only when SyncWal() runs (the committer does that after
// syncing the image) or when RocksDB must switch memtables. The file system
// passed in StoreOptions::fs (see meta/barrier_fs.h) syncs the image before
// any metadata byte is written to a file, so metadata never becomes durable
// before the data it points to.
//
// Thread safety: Store is thread-safe. A Txn belongs to one thread.
#pragma once

#include <rocksdb/db.h>
#include <rocksdb/utilities/write_batch_with_index.h>

#include <array>
#include <functional>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <atomic>
#include <string>
#include <string_view>
#include <vector>
#include <utility>
#include <vector>

#include "meta/keys.h"
#include "meta/status.h"

namespace rocksdb {
class Cache;
class FileSystem;
class Env;
}  // namespace rocksdb

namespace psm {

struct StoreOptions {
  // Create the database if it does not exist. Default: false.
  bool create_if_missing = false;
  // Refuse to open an existing database (mkfs). Default: false.
  bool error_if_exists = false;
  // File system under RocksDB (barrier / fault injection); null = default.
  std::shared_ptr<rocksdb::FileSystem> fs;
  // Memtable size per column family, bytes (a memtable is switched when it
  // reaches this, or earlier when all memtables together reach half of
  // cache_bytes). Default: 16 MiB.
  size_t write_buffer_bytes = 16u << 20;
  // One memory budget for RocksDB: the block cache, the index and filter
  // blocks (cached, not held per open file) and the memtables (charged to
  // the same cache through a WriteBufferManager) together stay within it,
  // whatever the size of the volume. Default: 128 MiB.
  size_t cache_bytes = 128u << 20;
  // Open read-only (fsck, offline tools that only look). Default: false.
  bool read_only = false;
};

class Store {
 public:
  static Result<std::unique_ptr<Store>> Open(const std::string& dir, const StoreOptions& opts);
  ~Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  rocksdb::DB* db() { return db_.get(); }
  rocksdb::ColumnFamilyHandle* handle(Cf cf) { return handles_[static_cast<int>(cf)]; }

  // Unversioned point read from the database (not seeing any Txn).
  Status Get(Cf cf, std::string_view key, std::string* value);
  // Get of many keys in one batched lookup (RocksDB MultiGet): (*values)[i]
  // and (*statuses)[i] for keys[i] (kNotFound when absent).
  void MultiGet(Cf cf, const std::vector<std::string>& keys, std::vector<std::string>* values,
                std::vector<Status>* statuses);
  // Single unversioned write, committed at once (not synced).
  Status Put(Cf cf, std::string_view key, std::string_view value);
  // Write a raw batch.
  Status Write(rocksdb::WriteBatch* batch);
  // Make everything committed so far durable (FlushWAL(sync=true)).
  Status SyncWal();
  // Ok while the store takes writes; after the first failed WAL write or
  // sync, that failure (sticky, see failed_).
  Status Failure();
  bool failed() const { return failed_.load(std::memory_order_acquire); }
  // Flush memtables to SST files (clean unmount) and sync.
  Status FlushAll();
  // A total-order iterator: seeks anywhere, walks across records.
  std::unique_ptr<rocksdb::Iterator> NewIterator(Cf cf);
  // The same for one pass over a whole column family in key order (fsck):
  // reads ahead (readahead_size) and leaves the block cache alone
  // (fill_cache=false), so a scan neither evicts the cache nor pays for
  // inserting blocks it will not read again.
  std::unique_ptr<rocksdb::Iterator> NewScanIterator(Cf cf);
  // A total-order iterator that reads `readahead` bytes ahead in the table
  // files from its first read on (RocksDB's own readahead starts only after
  // a few reads of one iterator): for a walk of a long run of adjacent keys
  // that is likely cold, such as the checksums of a sequential read.
  std::unique_ptr<rocksdb::Iterator> NewReadaheadIterator(Cf cf, size_t readahead);
  // An iterator over the versions of one record of a versioned column
  // family (keys.h), for GetAt and PutVersion: Seek only to a full version
  // key (VersionKey, FirstVersionKey); it then stays within that record and
  // is invalid past its last version. Misses are answered by the record
  // prefix Bloom filters (memtable and SST) without a search.
  std::unique_ptr<rocksdb::Iterator> NewVersionIterator(Cf cf);
  // Approximate number of keys in a column family.
  uint64_t EstimateKeys(Cf cf);
  // The RocksDB memory budget (StoreOptions::cache_bytes) and what of it is
  // in use now (block cache entries plus memtables charged to it).
  size_t cache_capacity() const;
  size_t cache_usage() const;
  // Resizes the cache (evicting down to it): the filesystem charges
  // memory it holds outside the cache to the same budget.
  void SetCacheCapacity(size_t bytes);
  bool read_only() const { return read_only_; }

 private:
  Store() = default;
  std::unique_ptr<rocksdb::DB> db_;
  std::array<rocksdb::ColumnFamilyHandle*, static_cast<int>(Cf::kCount)> handles_{};
  std::shared_ptr<rocksdb::FileSystem> fs_;
  std::unique_ptr<rocksdb::Env> env_;
  std::shared_ptr<rocksdb::Cache> cache_;
  bool read_only_ = false;
  // ThreadSanitizer builds only: RocksDB's write-group leader copies other
  // writers' batches under synchronization TSan cannot see (the library is
  // not instrumented), so writes are serialized by a mutex it can. (Calls
  // into RocksDB record no memory accesses there: meta/tsan_rocksdb.h.)
  std::mutex tsan_write_mu_;
  // After a failed write to the WAL, RocksDB's log writer is in an error
  // state in which another FlushWAL/SyncWAL trips an assertion inside the
  // library (Debian builds it with assertions). So the first failure of a
  // Write or SyncWal is sticky: every later one returns it without calling
  // RocksDB (the volume must be mounted again). SyncWal holds wal_mu_
  // exclusively, Write shared, so a Write's failure is recorded before any
  // SyncWal can look at the log.
  std::shared_mutex wal_mu_;
  std::atomic<bool> failed_{false};
  std::mutex fail_mu_;    // a leaf
  Status failed_status_;  // GUARDED_BY(fail_mu_)
  void Fail(const Status& s);
  Status Failed();
};

// Prefix iteration helper: calls fn(key, value) for every key that starts
// with prefix (from `from`, default prefix), stopping when fn returns false.
// Returns the iterator's status.
Status ForEachPrefix(rocksdb::Iterator* it, std::string_view prefix,
                     const std::function<bool(std::string_view, std::string_view)>& fn,
                     std::string_view from = {});

// Txn: the writes of one filesystem operation, applied atomically by
// Commit(). Reads through a Txn see its own pending writes.
class Txn {
 public:
  explicit Txn(Store* store);
  Store* store() { return store_; }

  // Unversioned read seeing own writes.
  Status Get(Cf cf, std::string_view key, std::string* value);
  void Put(Cf cf, std::string_view key, std::string_view value);
  // A Put that reads through this Txn (Get, GetAt, its iterators) do not
  // see: for records nothing reads back before the commit (checksums).
  void PutUnindexed(Cf cf, std::string_view key, std::string_view value);
  // A merge operand, unindexed the same way (checksum groups).
  void MergeUnindexed(Cf cf, std::string_view key, std::string_view operand);
  void Delete(Cf cf, std::string_view key);
  // Adds `delta` to the counter `key` of the `volume` column family (one of
  // the keys.h counters) when the Txn commits, atomically with its other
  // writes. Reads through this Txn do not see the change.
  void AddCounter(std::string_view key, int64_t delta);
  // The pending change of counter `key` (0 if none).
  int64_t CounterDelta(std::string_view key) const;
  // Iterator over the database with this Txn's writes merged in.
  std::unique_ptr<rocksdb::Iterator> NewIterator(Cf cf);
  // The same over one record's versions (Store::NewVersionIterator); this
  // Txn's writes may still show keys of other records after the record's
  // last version: check the prefix of what it finds.
  std::unique_ptr<rocksdb::Iterator> NewVersionIterator(Cf cf);

  // Versioned read: the newest version of `prefix` at or below epoch `e`.
  // kNotFound when there is none or it is a tombstone. On success `payload`
  // gets the value without its tag and *version (if given) its epoch.
  Status GetAt(Cf cf, std::string_view prefix, Epoch e, std::string* payload,
               Epoch* version = nullptr);

  bool empty() const;
  Status Commit();
  // Runs fn once Commit's write returned (succeeded or failed): for caches
  // of what this Txn writes, which must drop an entry only after the new
  // value is readable (fs/core/fs_checksum.cc, the checksum group cache).
  void AfterCommit(std::function<void()> fn) { after_commit_.push_back(std::move(fn)); }

  // The inodes whose attribute (kInodes) or chunk (kChunks) records this
  // Txn puts or deletes, in the order written (a run of one inode kept
  // once). The live cache drops them once the Txn is committed
  // (fs/core/live_cache.h).
  const std::vector<uint64_t>& TouchedInodes() const { return touched_; }

 private:
  void NoteTouched(Cf cf, std::string_view key);
  Store* store_;
  rocksdb::WriteBatchWithIndex batch_;
  std::vector<std::pair<std::string, int64_t>> counters_;
  std::vector<uint64_t> touched_;
  std::vector<std::function<void()>> after_commit_;
};

// Reads a counter of the `volume` column family (keys.h). kNotFound when the
// volume has none (formatted before counters existed).
Status GetCounter(Store* store, std::string_view key, uint64_t* value);

// Versioned read without a Txn (snapshot browsing, readers).
Status GetAt(Store* store, Cf cf, std::string_view prefix, Epoch e, std::string* payload,
             Epoch* version = nullptr);

// Shared helper for both: position `it` and extract the version.
Status GetAtIter(rocksdb::Iterator* it, std::string_view prefix, Epoch e, std::string* payload,
                 Epoch* version);

}  // namespace psm
