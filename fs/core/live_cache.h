// LiveCache: the live attributes and chunk maps of open files, in memory.
//
// A live READ or WRITE needs the file's attributes and the chunk map of the
// range; each is a versioned RocksDB lookup (an iterator: Seek, check the
// epoch, decode). For a file that is open, this cache keeps the newest
// version of both, so a 4 KiB read in place costs a hash lookup instead.
//
// Coherence does not depend on the inode locks. Every Txn notes the inodes
// whose attribute or chunk records it writes or deletes (Txn::TouchedInodes);
// Committer::Apply calls Invalidate() for them after the write became
// visible and before it returns. A reader that misses takes the entry's
// generation *before* it reads the store and inserts only if the generation
// is unchanged, so a value read before a commit can never be inserted after
// that commit's invalidation. Restore, receive and reclaim commit through
// Apply like everything else, so they need nothing of their own.
//
// Only the newest version is cached, so only reads at the live epoch use
// it; the caller checks that the epoch it read at is still the live one
// after taking the generation (FileSystem::Impl::AskCache).
//
// Entries exist only for inodes with an open live handle (Enable at the
// first open, Disable at the last release) and for the inodes of
// FileSystem::Impl::cached_refs (live directories and orphans the kernel
// references, at most 65,536: attributes only), and the bytes the cached
// chunk maps take are capped (SetByteLimit, from the mount's memory
// budget), so memory is bounded by what is open, that cap and that limit.
// Enable/Disable are counted: an inode may be enabled for both reasons.
//
// Locking: one mutex per shard, a leaf (docs/locking.md): nothing is taken
// under it and it may be taken under anything.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "meta/keys.h"

namespace psm {

class LiveCache {
 public:
  // What one cached chunk map costs beyond its extents (hash node, vector).
  static constexpr uint64_t kChunkOverhead = 96;
  // The most bytes the cached chunk maps may take, over all files (a chunk
  // map costs kChunkOverhead + its extents). Default: 32 MiB.
  void SetByteLimit(uint64_t bytes) { limit_.store(bytes, std::memory_order_relaxed); }
  uint64_t byte_limit() const { return limit_.load(std::memory_order_relaxed); }
  uint64_t bytes_cached() const { return bytes_.load(std::memory_order_relaxed); }

  enum class Hit { kOff, kMiss, kHit };

  // The first live handle of `ino` opened / the last one closed.
  void Enable(InodeId ino);
  void Disable(InodeId ino);

  // kHit: *a is the newest attribute record. kMiss: *gen is the ticket for
  // PutAttr. kOff: the inode is not cached.
  Hit GetAttr(InodeId ino, InodeAttr* a, uint64_t* gen);
  void PutAttr(InodeId ino, uint64_t gen, const InodeAttr& a);
  // `a` is the attribute record of `ino` its writer has just committed
  // (Apply returned: the commit's invalidation is done) and still holds
  // what excludes every other writer of it (its stripe exclusively). It is
  // cached if the inode is, without a ticket: no later commit of the record
  // can come before the caller lets go, and a reader whose ticket predates
  // the invalidation still cannot insert. A directory's create or unlink
  // keeps its new attributes for the GETATTR that follows (issue #16).
  void SetAttr(InodeId ino, const InodeAttr& a);
  // The same for chunk `idx`; on a hit *present says whether the chunk
  // has a record (false: a hole) and *ext holds its extents.
  Hit GetChunk(InodeId ino, uint64_t idx, bool* present, std::vector<Extent>* ext, uint64_t* gen);
  void PutChunk(InodeId ino, uint64_t idx, uint64_t gen, bool present,
                const std::vector<Extent>& ext);
  // The same without a ticket, under SetAttr's rule: chunk `idx` of `ino`
  // as its writer has just committed it, or as a new file's creator knows
  // it (no record at all: absent), the inode's stripe still held
  // exclusively. A new file's first WRITE then reads no chunk record.
  void SetChunk(InodeId ino, uint64_t idx, bool present, const std::vector<Extent>& ext);

  // The records of `ino` changed (called after the commit is visible).
  void Invalidate(InodeId ino);
  void Invalidate(const std::vector<uint64_t>& inos);

  // For tests and status: cache entries and hits so far.
  uint64_t chunks_cached() const { return chunks_.load(std::memory_order_relaxed); }
  uint64_t hits() const { return hits_.load(std::memory_order_relaxed); }

 private:
  struct Chunk {
    bool present = false;
    std::vector<Extent> ext;
  };
  static uint64_t Cost(const Chunk& c) { return kChunkOverhead + c.ext.size() * sizeof(Extent); }
  struct Entry {
    uint64_t gen = 0;
    int opens = 0;
    bool has_attr = false;
    InodeAttr attr;
    std::unordered_map<uint64_t, Chunk> chunks;
  };
  struct Shard {
    std::mutex mu;
    std::unordered_map<InodeId, Entry> map;
  };
  static constexpr size_t kShards = 64;
  Shard& ShardOf(InodeId ino) { return shards_[(ino * 0x9E3779B97F4A7C15ull) >> 58]; }
  // REQUIRES the shard's mutex: drops what `e` caches and gives it a new
  // generation.
  void ResetLocked(Entry* e);
  // PutChunk (gen: its ticket) and SetChunk (gen null).
  void InsertChunk(InodeId ino, uint64_t idx, const uint64_t* gen, bool present,
                   const std::vector<Extent>& ext);

  std::array<Shard, kShards> shards_;
  std::atomic<uint64_t> next_gen_{1};
  std::atomic<uint64_t> chunks_{0};
  std::atomic<uint64_t> bytes_{0};
  std::atomic<uint64_t> limit_{32u << 20};
  std::atomic<uint64_t> hits_{0};
};

}  // namespace psm
