// FileSystem::Impl: the state of one mounted volume, shared by the core's
// source files (fs_open.cc, fs_namespace.cc, fs_data.cc, fs_xattr.cc,
// fs_snapshot.cc). Not part of any public interface.
//
// Lock order (docs/locking.md), outermost first:
//   0. reclaim_run_mu one snapshot reclaim at a time (ReclaimOne).
//   1. volume_mu      shared: every live modification and handle open;
//                     exclusive: snapshot create, reclaim start, restore.
//   2. rename_mu      directory renames that change parents (loop check).
//   2b. read_gate     shared: live reads that hold an inode stripe shared
//                     (Read, Lseek, history), taken before the stripe;
//                     exclusive: a restore's commit (under volume_mu
//                     exclusive), so no read sees half of one restored file.
//   3. inode stripes  ino_mu[Stripe(ino)], in ascending stripe order, all
//                     of one operation's stripes taken together (LockSet).
//   3a. IntentMap::mu_ the write intents (fs/core/intent.cc); a commit may
//                     run under it (rows 5-7), nothing else.
//   3b. block stripes blk_mu[BlockStripe(p)] (BlockGuard): exclusive
//                     around an overwrite in place and its checksum's
//                     staging, shared to re-read and re-verify a block that
//                     failed its checksum (and to repair it).
//   3c. PendingChecksums::flush_mu_ one commit of staged checksums at a
//                     time (rows 5-7 under it); its mu_ and cache_mu_[] are
//                     leaves.
//   4. handles_mu, snaps_mu, ino_alloc_mu   (leaves among themselves; never
//                     two at once)
//   5. Committer gate (shared per commit, exclusive to read the sync target)
//   6. Allocator::mu_ (the scanner reads RocksDB under it)
//   7. Committer::mu_ / RocksDB internals.
#pragma once

#include <atomic>
#include <condition_variable>
#include <ctime>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <shared_mutex>
#include <span>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "fs/space/allocator.h"
#include "fs/device/block_device.h"
#include "fs/core/filesystem.h"
#include "fs/core/live_cache.h"
#include "fs/core/ref_counts.h"
#include "fs/space/scanner.h"
#include "fs/device/mirror_device.h"
#include "fs/device/superblock.h"
#include "meta/store.h"
#include "meta/versioned.h"

namespace psm {

int64_t NowNs();

// Nanoseconds since the epoch -> timespec, flooring: -1.5 s is
// {tv_sec = -2, tv_nsec = 500000000}, as stat(2) reports pre-1970 times.
inline timespec ToTimespec(int64_t ns) {
  int64_t sec = ns / 1000000000, rem = ns % 1000000000;
  if (rem < 0) {
    rem += 1000000000;
    --sec;
  }
  timespec ts{};
  ts.tv_sec = static_cast<time_t>(sec);
  ts.tv_nsec = static_cast<long>(rem);
  return ts;
}

// A writer-preferring shared mutex: a waiting exclusive locker (snapshot
// create) is not starved by a stream of shared lockers.
class FairSharedMutex {
 public:
  void lock();
  void unlock();
  void lock_shared();
  void unlock_shared();

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int readers_ = 0;
  int writers_waiting_ = 0;
  bool writer_ = false;
};

// Group commit: makes committed Txns and completed image writes durable.
//
// Durable is asked of both media at once. A caller of SyncAll() reads two
// marks when it starts: the last commit sequence, and the image's count of
// completed writes (TrackedDevice::WritesCompleted) -- writes in place of
// blocks born at the live epoch commit no record, so the sequence alone
// would let their fsync return before their bytes reach the disk. It returns
// once one sync cycle has covered both marks. A cycle: read the target
// sequence (excluding in-progress commits through the gate), sync the image
// (which reports the write count it covered: the writes completed before its
// base sync began), flush+sync the RocksDB WAL, then publish both marks as
// durable and release quarantined frees. A cycle that began its image sync
// before my write completed covers a smaller count, so it does not count
// for me: I wait for, or run, the next one. Concurrent callers share cycles.
//
// Sync failures are fatal to the write path (docs/crash-consistency.md,
// "Sync failures"): the first failed image sync (TrackedDevice) or WAL
// write/sync (Store) puts the volume in a failed state. From then on
// Apply() and SyncAll() return that failure and nothing more is made
// durable; reads go on. The background loop logs it once; no path
// discards it. A remount replays from the last durable state.
class PendingChecksums;
class Committer {
 public:
  // `cache` (may be null) is told of every inode a commit changed, once
  // the commit is visible and before Apply returns.
  Committer(TrackedDevice* dev, Store* store, Allocator* alloc, LiveCache* cache = nullptr);
  ~Committer();
  // The background loop: every `interval_ms`, a cycle if a commit or an
  // image write is not yet durable.
  void Start(uint32_t interval_ms);
  void Stop();
  // Applies `txn` atomically with the given allocator bookkeeping: frees are
  // quarantined before the write and cancelled if it fails; allocations are
  // marked committed (or aborted) after it. Returns the commit sequence.
  // Fails without writing once the volume has failed.
  Status Apply(Txn* txn, const std::vector<Range>& frees, const std::vector<Range>& allocs,
               uint64_t* seq_out = nullptr);
  // Makes durable every commit applied and every image write completed
  // before the call. Returns the sticky failure once the volume has failed.
  Status SyncAll();
  uint64_t last_seq() const { return last_seq_.load(); }
  // Ok while healthy; else why the volume failed (sticky, see above).
  Status Failure() const;
  // Cheap check of the same (atomics only).
  bool failed() const {
    return failed_.load(std::memory_order_acquire) || dev_->failed() || store_->failed();
  }
  // Sync cycles run so far (each: one image sync if dirty + one WAL sync).
  uint64_t sync_cycles() const { return cycles_.load(std::memory_order_relaxed); }
  // What the last finished cycles made durable: every commit up to *seq and
  // every image write counted up to *writes (TrackedDevice::WritesCompleted).
  void Durable(uint64_t* seq, uint64_t* writes);
  // Called by the background loop once per interval, with no lock held
  // (set before Start; the write intents' clean-up, fs/core/intent.cc).
  void SetTick(std::function<void()> tick) { tick_ = std::move(tick); }
  // Checksums staged outside commits (PendingChecksums), set before Start:
  // committed by SyncAll before its cycle and by every cycle after it read
  // its target and before it releases freed blocks; the background loop
  // runs a cycle while some are staged.
  void SetPending(PendingChecksums* pending) { pending_ = pending; }

  // Exact volume counters (keys.h kVolUsedBlocks, kVolFiles), loaded at
  // mount and kept equal to the stored ones: Apply() adds the used-blocks
  // change of every commit (allocs - frees) to its Txn and, once the write
  // succeeded, the Txn's counter changes to these.
  void LoadCounters(uint64_t used_blocks, uint64_t files) {
    used_blocks_.store(used_blocks);
    files_.store(files);
  }
  uint64_t used_blocks() const { return used_blocks_.load(std::memory_order_relaxed); }
  uint64_t files() const { return files_.load(std::memory_order_relaxed); }

 private:
  void Loop(uint32_t interval_ms);
  // Returns once a finished cycle covered commit `seq` and `writes` image
  // writes, running cycles as needed.
  Status SyncTo(uint64_t seq, uint64_t writes);
  void NoteFailure(const Status& s);
  TrackedDevice* dev_;
  Store* store_;
  Allocator* alloc_;
  LiveCache* cache_;
  std::shared_mutex gate_;
  std::atomic<uint64_t> last_seq_{0};
  std::atomic<uint64_t> used_blocks_{0};
  std::atomic<uint64_t> files_{0};
  std::mutex mu_;
  std::condition_variable cv_;
  bool syncing_ = false;            // GUARDED_BY(mu_): a cycle is running
  uint64_t durable_seq_ = 0;        // GUARDED_BY(mu_)
  uint64_t durable_writes_ = 0;     // GUARDED_BY(mu_)
  std::atomic<uint64_t> cycles_{0};
  mutable std::mutex fail_mu_;      // a leaf
  Status failure_;                  // GUARDED_BY(fail_mu_): first failure seen
  bool failure_logged_ = false;     // GUARDED_BY(fail_mu_)
  std::atomic<bool> failed_{false};  // failure_ is set
  bool stop_ = false;
  std::function<void()> tick_;
  PendingChecksums* pending_ = nullptr;
  std::thread thread_;
};

// Attributes just committed as their record's version at the live epoch
// `e` (InodeAttr::version): the next PutAttr needs no seek. A version that
// was older may have been kept under the new one, so `sole` no longer holds.
inline void NoteWrittenAtLive(InodeAttr* a, Epoch e) {
  if (a->version != e) a->sole = false;
  a->version = e;
}

// Write intents (fs/core/intent.cc, docs/integrity.md "Overwrites in
// place"): a region of 2^kIntentShift blocks gets a durable record in
// `volume` ("intent/" BE64(region)) before the first overwrite in place of
// one of its blocks on a checksummed volume; the record goes once the
// region's overwrites are durable and it has been idle a while.
inline constexpr unsigned kIntentShift = 12;  // 4,096 blocks: 16 MiB of 4 KiB blocks
inline uint64_t IntentRegion(BlockNo p) { return p >> kIntentShift; }
// A region's intent is made durable with those of the other regions of its
// aligned group (8 regions: 128 MiB of 4 KiB blocks), in one sync.
inline constexpr uint64_t kIntentGroup = 8;
class PendingChecksums;
class IntentMap {
 public:
  // `regions`: the image's regions (blocks >> kIntentShift, rounded up).
  IntentMap(Store* store, Committer* committer, PendingChecksums* pending, uint64_t regions)
      : store_(store), committer_(committer), pending_(pending), image_regions_(regions) {}
  // Returns once every region in `regions` (sorted, unique) has a durable
  // intent, counting one write in flight in each (End() after it).
  Status Begin(const std::vector<uint64_t>& regions);
  // The write counted by Begin is done: its checksums were staged in
  // generation `gen` of the pending checksums (PendingChecksums::Stage) and
  // its bytes written by image write `writes`.
  void End(const std::vector<uint64_t>& regions, uint64_t gen, uint64_t writes);
  // Drops the intents of regions whose overwrites are durable and which
  // saw none for `idle_ns` (the committer's tick).
  void DropIdle(int64_t idle_ns);
  // Regions with an intent now (tests, status).
  size_t size();

 private:
  struct Region {
    bool durable = false;  // its record is durable (else being written)
    uint32_t inflight = 0;
    uint64_t gen = 0, writes = 0;  // the newest overwrite's marks
    int64_t last_ns = 0;
  };
  Store* store_;
  Committer* committer_;
  PendingChecksums* pending_;
  uint64_t image_regions_;
  std::mutex mu_;  // lock order 3a
  std::condition_variable cv_;
  Status failure_;  // GUARDED_BY(mu_): an intent could not be made durable
  std::unordered_map<uint64_t, Region> regions_;  // GUARDED_BY(mu_)
};
std::string IntentKey(uint64_t region);

// The checksums of overwrites in place not committed yet (fs_checksum.cc,
// docs/integrity.md "Checksums of overwrites in place"). An overwrite in
// place stages its blocks' checksums here instead of committing each; they
// are committed together, in block order, by every sync cycle (after it
// read its target, before it releases freed blocks: a block with a staged
// checksum is never reallocated before that checksum is committed), by
// SyncAll before its cycle, before a snapshot's commit (so no snapshot
// record precedes them in the WAL), and by a writer when too much is
// staged. Readers look here first, then in `csums`: an entry leaves only
// after its commit. A crash loses what is staged; the region's write intent,
// kept until the commit of its generation is durable, has the mount
// recompute it.
class PendingChecksums {
 public:
  PendingChecksums(Store* store, Committer* committer) : store_(store), committer_(committer) {}
  // Stages crc[i] for block p[i]; the caller holds the blocks' stripes
  // exclusively. Returns the generation the entries belong to.
  uint64_t Stage(const std::vector<BlockNo>& p, const std::vector<uint32_t>& crc);
  // Nothing staged or being committed (no lock: a reader that races a
  // Stage re-checks under the block's stripe, which Stage ran under).
  bool empty() const { return chunks_.load(std::memory_order_acquire) == 0; }
  // A writer should Flush() now (bounds the memory: ~4 KiB per chunk).
  bool full() const { return chunks_.load(std::memory_order_relaxed) >= kMaxChunks; }
  // Sets (*out)[i] to the staged checksum of block p + i where one is
  // staged; leaves the others. out->size() >= n.
  void Overlay(BlockNo p, uint64_t n, std::vector<std::optional<uint32_t>>* out) const;
  // The same for blocks[i].
  void OverlayOf(const std::vector<BlockNo>& blocks,
                 std::vector<std::optional<uint32_t>>* out) const;
  // Commits everything staged (one commit, block order), not synced.
  Status Flush();
  // The newest generation whose commit is covered by durable commit `seq`.
  uint64_t DurableGen(uint64_t seq);
  // Whether `csums` may hold records of metadata format 1 (keys.h
  // LegacyCsumKey), which every lookup then reads too. Set at mount.
  void SetLegacy(bool legacy) { legacy_.store(legacy, std::memory_order_relaxed); }
  bool legacy() const { return legacy_.load(std::memory_order_relaxed); }

  // A cache of committed checksum groups (keys.h CsumKey) for the point
  // lookups of random READs (LoadChecksumsOf): direct-mapped, 16,384 groups
  // (~1.3 MB). Never newer than the store, and never older than a commit
  // that finished: a Txn that writes a group drops it after its write
  // (ChecksumWriter, Txn::AfterCommit), after advancing the generation, and
  // a group read from the store is kept only if no such drop began since
  // the reader took the generation (CacheGen, before its store read). A
  // mismatch is always checked again against the store (RecheckBlocks), so
  // the cache can cost a recheck, never a false EIO.
  bool CachedGroup(BlockNo first, CsumGroup* g) const;
  uint64_t CacheGen() const { return cache_gen_.load(); }
  void CacheGroup(BlockNo first, const CsumGroup& g, uint64_t gen) const;
  void DropGroup(BlockNo first);

  static constexpr unsigned kChunkShift = 10;  // 1,024 blocks per chunk
  static constexpr size_t kMaxChunks = 512;
  struct Chunk {
    uint32_t crc[size_t{1} << kChunkShift];
    uint64_t present[(size_t{1} << kChunkShift) / 64] = {};
    std::optional<uint32_t> Get(size_t k) const;  // block k of the chunk
  };

 private:
  using Chunks = std::map<uint64_t, std::unique_ptr<Chunk>>;
  // Chunk c staged and being committed, either null (mu_ held).
  std::pair<const Chunk*, const Chunk*> FindLocked(uint64_t c) const;
  Store* store_;
  Committer* committer_;
  std::mutex flush_mu_;  // lock order 3c: one Flush at a time, a commit under it
  mutable std::mutex mu_;  // a leaf
  Chunks staged_;    // GUARDED_BY(mu_): newer than flushing_
  Chunks flushing_;  // written under mu_ and flush_mu_; read under either
  uint64_t gen_ = 1;            // GUARDED_BY(mu_): the generation Stage adds to
  std::map<uint64_t, uint64_t> flushed_;  // GUARDED_BY(mu_): generation -> its commit, until durable
  uint64_t durable_gen_ = 0;    // GUARDED_BY(mu_)
  std::atomic<size_t> chunks_{0};  // staged_.size() + flushing_.size()
  std::atomic<bool> legacy_{true};
  static constexpr size_t kCacheSlots = size_t{1} << 14;
  static constexpr size_t kCacheStripes = 64;
  struct CacheSlot {
    BlockNo first = ~BlockNo{0};  // none
    CsumGroup g;
  };
  static size_t CacheIndex(BlockNo first) { return (first >> kCsumGroupShift) & (kCacheSlots - 1); }
  std::unique_ptr<CacheSlot[]> cache_ = std::make_unique<CacheSlot[]>(kCacheSlots);
  mutable std::mutex cache_mu_[kCacheStripes];  // leaves: slot i under cache_mu_[i % kCacheStripes]
  std::atomic<uint64_t> cache_gen_{0};
};
inline constexpr std::string_view kIntentPrefix = "intent/";

struct FileHandle {
  NodeId node = 0;
  SnapshotId snap = 0;
  InodeId ino = 0;
  Epoch epoch = 0;  // snapshots: the snapshot's epoch; live: unused
  int flags = 0;
};

struct DirHandle {
  NodeId node = 0;
  SnapshotId snap = 0;
  std::mutex mu;
  bool loaded = false;
  struct Ent {
    std::string name;
    NodeId node;
    uint32_t type;
  };
  std::vector<Ent> ents;
};

// Where a node lives: the live tree, the `.snapshots` directory, or a
// snapshot tree at a fixed epoch.
struct View {
  SnapshotId snap = 0;
  InodeId ino = 0;
  Epoch epoch = 0;
  bool snapdir = false;
  bool live() const { return snap == 0 && !snapdir; }
};

struct SnapEntry {
  SnapshotRec rec;
  int open_handles = 0;
  bool reclaiming = false;  // GC started: no new opens, not in present set
  int senders = 0;          // sends reading it now (Send); delete refused
  bool delete_pending = false;  // DeleteSnapshot is committing; no new send
};

struct FileSystem::Impl : public EpochSet {
  std::string dir;
  MountOptions opts;
  Superblock sb;
  uint32_t bs = 4096;
  uint32_t chunk_blocks = 256;
  uint32_t owner_uid = 0;
  uint32_t owner_gid = 0;
  int lock_fd = -1;
  bool closed = false;
  // Some inode may have a security.capability xattr (kVolCapabilities).
  // Only ever goes from false to true; set before the xattr is committed.
  std::atomic<bool> capabilities{true};
  // Makes kVolCapabilities "1" in `txn` and sets `capabilities` (the xattr
  // `name` is about to be written in `txn`). No-op for other names.
  void NoteXattrName(Txn* txn, std::string_view name);

  std::unique_ptr<TrackedDevice> dev;
  // The MirrorDevice under `dev` (every volume has one; a mirror may be
  // attached to it): fs_mirror.cc.
  MirrorDevice* mirror = nullptr;
  std::unique_ptr<Store> store;
  std::unique_ptr<Allocator> alloc;
  std::unique_ptr<Scanner> scanner;
  // Newest attributes and chunk maps of open live files (live_cache.h).
  // Declared before the committer, which holds a pointer to it.
  LiveCache cache;
  std::unique_ptr<Committer> committer;

  FairSharedMutex volume_mu;
  std::mutex rename_mu;
  static constexpr size_t kStripes = 4096;
  std::unique_ptr<std::shared_mutex[]> ino_mu{new std::shared_mutex[kStripes]};
  // Lock order 2b: see the top of this file.
  FairSharedMutex read_gate;
  static size_t Stripe(InodeId ino) { return (ino * 0x9E3779B97F4A7C15ull) >> 52; }
  // Lock order 3b: physical blocks, 16 adjacent blocks per stripe
  // (fs_checksum.cc, BlockGuard).
  static constexpr size_t kBlockStripes = 1024;
  std::unique_ptr<std::shared_mutex[]> blk_mu{new std::shared_mutex[kBlockStripes]};
  static size_t BlockStripe(BlockNo p) { return (p >> 4) % kBlockStripes; }

  std::atomic<Epoch> epoch{1};

  // snapshot catalog
  mutable std::mutex snaps_mu;
  std::map<SnapshotId, SnapEntry> snaps;
  std::multiset<Epoch> present_epochs;  // active + deleting (not reclaiming)
  SnapshotId next_snap = 1;
  int64_t snapdir_mtime_ns = 0;

  // handles
  std::mutex handles_mu;
  uint64_t next_fh = 1;
  std::unordered_map<uint64_t, FileHandle> files;
  std::unordered_map<uint64_t, std::shared_ptr<DirHandle>> dirs;
  std::unordered_map<InodeId, int> live_open;  // open handles per live inode
  // Kernel references (count_lookups), one 8-byte word an inode the kernel
  // holds (ref_counts.h). Its table is charged to the metadata cache
  // (ChargeLookups), so that the two stay within the half of the budget.
  RefCounts lookups;
  // REQUIRES handles_mu. The inode is still referenced by a handle or the kernel.
  bool InUseLocked(InodeId ino) const { return live_open.count(ino) || lookups.Contains(ino); }
  // Inodes that may be orphans in use: every one whose last link went
  // while it was in use (an `orphan` record was put for it) is in, from
  // that decision on, until MaybeDestroy finds it no longer in use. A
  // superset (a failed commit leaves one in). The last FORGET or release
  // of an inode not in it destroys nothing, so it reads nothing: without
  // this every FORGET read the inode's attributes (a quarter of the
  // daemon's time in a walk under the kernel-reference cap).
  std::unordered_set<InodeId> orphans;  // GUARDED_BY handles_mu
  // REQUIRES handles_mu. InUseLocked, for a caller about to put the orphan
  // record of `ino` when it is in use: records it in `orphans` then.
  bool KeepsOrphanLocked(InodeId ino) {
    const bool in_use = InUseLocked(ino);
    if (in_use) orphans.insert(ino);
    return in_use;
  }
  // Files destroyed at the unlink (or rename over) of their last link
  // while the kernel still referenced them and no handle held them
  // ("ghosts"; docs/architecture.md, "Unlinked files"), each with its
  // attributes as the unlink left them, until the FORGET of the kernel's
  // last reference. The kernel's GETATTR and the SETATTR of times it sends
  // at once (fuse_update_ctime) are answered from here; an open is refused
  // (ENOENT): that fences an OPEN that read the attributes before the
  // unlink's commit. A restore or receive that brings an inode number back
  // takes it out (ReviveGhosts).
  std::unordered_map<InodeId, InodeAttr> ghosts;  // GUARDED_BY handles_mu
  // The attributes of a ghost, if `ino` is one. Takes handles_mu.
  bool GhostAttr(InodeId ino, InodeAttr* a) {
    std::lock_guard<std::mutex> l(handles_mu);
    auto it = ghosts.find(ino);
    if (it == ghosts.end()) return false;
    *a = it->second;
    return true;
  }
  // REQUIRES volume_mu exclusive, after a restore or receive committed:
  // the ghosts whose inode number it brought back are ghosts no more
  // (their next open must not be refused). Takes handles_mu; reads the
  // store without it.
  void ReviveGhosts();
  // Takes a ghost back (its unlink did not commit). Takes handles_mu.
  void DropGhost(InodeId ino) {
    std::lock_guard<std::mutex> l(handles_mu);
    ghosts.erase(ino);
  }
  // Records one kernel reference for an entry handed out (count_lookups).
  // `dir`: the node is a directory, whose attributes the live cache keeps
  // while the kernel references it (cached_refs).
  // `parent`: the directory it was found in, marked used (RefCounts::Touch).
  void NoteLookup(NodeId node, bool dir, InodeId parent);
  // REQUIRES handles_mu. True when the lookups table changed size since the
  // last charge: then ChargeLookups, without handles_mu.
  bool LookupsResizedLocked() {
    size_t b = lookups.bytes();
    if (b == lookups_bytes.load(std::memory_order_relaxed)) return false;
    lookups_bytes.store(b, std::memory_order_relaxed);
    return true;
  }
  // Sets the metadata cache's capacity to its share of the budget less the
  // lookups table (down to half that share at most).
  void ChargeLookups();
  std::atomic<size_t> lookups_bytes{0};
  // The kernel-reference cap's walk (FileSystem::ShedKernelRefs): the
  // table slot it goes on from and the slots passed since the root was
  // last visited, the directory it is in (0: none) and the last name it
  // passed there. Lock order 7g: handles_mu is taken under
  // shed_mu, never the other way round; no other psmfs lock is held.
  std::mutex shed_mu;
  size_t shed_cursor = 0;        // GUARDED_BY shed_mu
  size_t shed_seen = 0;          // slots passed this revolution; GUARDED_BY shed_mu
  InodeId shed_dir = 0;          // GUARDED_BY shed_mu
  std::string shed_after;        // GUARDED_BY shed_mu
  static constexpr size_t kShedBatch = 1024;  // entries listed a step
  std::atomic<uint64_t> shed_invalidated{0};  // entries asked since mount
  std::mutex charge_mu;  // lock order 7f: no psmfs lock held; the cache's under it
  size_t charged_lookups_bytes = 0;  // GUARDED_BY charge_mu
  size_t cache_share_bytes = 0;      // StoreOptions::cache_bytes
  // Live inodes the kernel holds a reference to whose attributes are in the
  // live cache (LiveCache::Enable when they join, Disable at the FORGET of
  // the last reference), count_lookups only:
  //  - directories, from their first reference: the parent's attributes
  //    are read by every LOOKUP of a missing name, CREATE, UNLINK and the
  //    GETATTR the kernel sends after each (issue #16); the root is always
  //    in (enabled at mount);
  //  - unlinked files kept as orphans (a handle held them at the unlink)
  //    that the kernel references, from the unlink (KeepOrphanAttrs,
  //    fs_namespace.cc).
  // At most kMaxCachedRefs (an entry is a few hundred bytes); past that an
  // inode is read from the store as before. GUARDED_BY handles_mu.
  std::unordered_set<InodeId> cached_refs;
  static constexpr size_t kMaxCachedRefs = size_t{1} << 16;
  // Destroys an unlinked inode once nothing references it. Takes its locks.
  Status MaybeDestroy(InodeId ino) { return MaybeDestroy(std::span<const InodeId>(&ino, 1)); }
  // The same for several (a BATCH_FORGET's): up to kDestroyGroup of them
  // under one LockSet, in one Txn and one commit.
  Status MaybeDestroy(std::span<const InodeId> inos);
  static constexpr size_t kDestroyGroup = 32;
  // The inodes FORGETs left to destroy (FileSystem::ForgetMany), and whether
  // their cached attributes go after; a FORGET that finds another thread
  // destroying (forget_running) leaves its inodes to it, so FORGETs that
  // arrive together are destroyed together. Lock order 4 (a leaf).
  std::mutex forget_mu;
  std::vector<std::pair<InodeId, bool>> forget_queue;  // GUARDED_BY forget_mu
  bool forget_running = false;                         // GUARDED_BY forget_mu

  // inode numbers
  std::mutex ino_alloc_mu;
  InodeId next_ino = kFirstIno;
  InodeId ino_reserved = kFirstIno;

  // reclaim thread
  std::mutex reclaim_mu;
  std::condition_variable reclaim_cv;
  bool reclaim_stop = false;
  bool reclaim_kick = false;
  std::thread reclaim_thread;
  // Held for the whole of one snapshot's reclaim (ReclaimOne); outermost,
  // before volume_mu.
  std::mutex reclaim_run_mu;
  // Progress of the running reclaim (psmctl status). reclaiming_name is
  // guarded by snaps_mu.
  std::string reclaiming_name;
  std::atomic<uint64_t> reclaim_entries_done{0};
  std::atomic<uint64_t> reclaim_blocks_freed{0};

  // Progress of the running restore (psmctl status, the progress bar).
  // restoring_name is guarded by snaps_mu.
  std::string restoring_name;
  std::atomic<uint64_t> restore_done{0};
  std::atomic<uint64_t> restore_total{0};

  std::function<void(NodeId, std::string_view)> inval_entry;
  std::function<void(NodeId)> inval_inode;
  std::function<void()> inval_drain;

  // EpochSet
  bool AnyIn(Epoch lo, Epoch hi) const override;

  // ---- helpers (fs_open.cc) ----
  Result<View> Resolve(NodeId node);
  Status LoadAttr(Txn* txn, InodeId ino, Epoch e, InodeAttr* a);
  Status LoadAttrAt(InodeId ino, Epoch e, InodeAttr* a);
  Status PutAttr(Txn* txn, InodeId ino, const InodeAttr& a);
  void FillStat(NodeId node, const InodeAttr& a, struct stat* st) const;
  void SnapDirStat(struct stat* st);
  Result<InodeId> AllocIno();
  Status CheckWritable(const View& v);
  Epoch live() const { return epoch.load(std::memory_order_acquire); }
  // Asks the live cache (`ask`: one LiveCache Get call) for a read at epoch
  // e. kOff unless e is the live epoch both before the ask and after it: a
  // miss's ticket must be taken before the epoch check that precedes the
  // store read (live_cache.h).
  template <typename Ask>
  LiveCache::Hit AskCache(Epoch e, Ask ask) {
    if (e != live()) return LiveCache::Hit::kOff;
    const LiveCache::Hit h = ask();
    return h == LiveCache::Hit::kMiss && e != live() ? LiveCache::Hit::kOff : h;
  }
  double Timeout(const View& v) const {
    return v.live() ? opts.live_timeout : opts.snapshot_timeout;
  }

  // ---- data (fs_data.cc) ----
  // Writes `n` bytes at byte offset `off` of live inode `ino` (no size or
  // time update). Collects ranges to free and ranges allocated.
  Status WriteData(Txn* txn, InodeId ino, InodeAttr* a, uint64_t off, const char* buf, size_t n,
                   std::vector<Range>* frees, std::vector<Range>* allocs);
  Status ReadData(InodeId ino, Epoch e, const InodeAttr& a, uint64_t off, size_t n, char* buf);
  // Unmaps whole blocks [b0, b1) of the file (truncate, punch, destroy).
  Status UnmapBlocks(Txn* txn, InodeId ino, InodeAttr* a, uint64_t b0, uint64_t b1,
                     std::vector<Range>* frees);
  // Writes [off, off+n) of live inode `ino` in place if every block of it
  // is mapped, written and born at the live epoch (no record changes);
  // false (nothing written) otherwise. REQUIRES: the inode's stripe held
  // (shared is enough) and volume_mu shared.
  Result<bool> WriteInPlace(InodeId ino, uint64_t off, const char* buf, size_t n);
  // Maps physical blocks [p, p+n), already written and recorded in alloc
  // by the caller, at file blocks [fblock, fblock+n); what was there dies
  // (KillRange). A receive places the data it staged this way.
  Status MapBlocks(Txn* txn, InodeId ino, InodeAttr* a, uint64_t fblock, BlockNo p, uint64_t n,
                   std::vector<Range>* frees);
  Status Truncate(Txn* txn, InodeId ino, InodeAttr* a, uint64_t size, std::vector<Range>* frees,
                  std::vector<Range>* allocs);
  // FALLOC_FL_COLLAPSE_RANGE (collapse) / FALLOC_FL_INSERT_RANGE of file
  // blocks [o, o+n): collapse kills them (KillRange) and moves every mapped
  // block at or above o+n down by n; insert moves every mapped block at or
  // above o up by n, leaving a hole. Only chunk records change (the blocks
  // keep their physical place and birth epoch, so a moved block born before
  // the live epoch is still redirected on its next write): every present
  // chunk record from o's chunk on is read once and the ones whose extents
  // change get a new version at the live epoch (PutVersion: snapshots keep
  // theirs). No file data is read or written. Sizes are the caller's.
  // TooBig when an insert would move a mapped block past the largest file.
  Status ShiftBlocks(Txn* txn, InodeId ino, InodeAttr* a, uint64_t o, uint64_t n, bool collapse,
                     std::vector<Range>* frees);
  // Allocates 1..want blocks near `hint` and records them in `alloc` (born
  // at the live epoch); the range joins `allocs` (committed or aborted by
  // the caller's Committer::Apply).
  Result<Range> AllocateBlocks(Txn* txn, uint64_t want, BlockNo hint, std::vector<Range>* allocs);
  // Kills physical blocks [p, p+len) born at `birth`: dead entry if a
  // snapshot can see them, else freed.
  Status KillRange(Txn* txn, BlockNo p, uint64_t len, Epoch birth, std::vector<Range>* frees);
  // ---- data checksums (fs_checksum.cc, docs/integrity.md) ----
  // The volume checksums its data blocks (kVolChecksum); fixed at mount.
  // WriteData redirects every block it writes (a new block, its checksum
  // in the same commit); WriteInPlace overwrites whole blocks born at the
  // live epoch in place under a durable write intent for their region
  // (intents, below), unless the mount asked for redirect_writes.
  bool checksums = false;
  // Write intents (fs/core/intent.cc): regions of the image where an
  // overwrite in place may have reached the disk before its checksum was
  // durable; recomputed after an unclean shutdown.
  std::unique_ptr<IntentMap> intents;
  // Their checksums until committed (checksummed, writable volumes only).
  std::unique_ptr<PendingChecksums> pending_csums;
  // A read-only open of a volume with intents left by an unclean shutdown
  // cannot recompute them: a block of one of these regions that fails its
  // checksum is served as it is (docs/integrity.md).
  std::set<uint64_t> unrecovered_regions;
  // Blocks RecoverIntents re-checksummed at this mount (tests, the log).
  uint64_t intent_recovered_blocks = 0;
  bool Unrecovered(BlockNo p) const {
    return !unrecovered_regions.empty() && unrecovered_regions.count(IntentRegion(p));
  }
  // The overwrite in place of a checksummed volume (WriteInPlace).
  Result<bool> WriteInPlaceChecked(InodeId ino, uint64_t off, const char* buf, size_t n);
  // After an unclean shutdown: every block of an intent's region that may
  // have been overwritten in place (born at the live epoch, not dead) gets
  // the checksum of the bytes the image holds, and a mirror the image's
  // bytes; then the intents are dropped. Read-only: only notes the regions
  // (unrecovered_regions). At mount, before serving.
  Status RecoverIntents();
  std::atomic<uint64_t> checksum_errors{0};  // mismatches since mount
  // What a block read is for, for the error report.
  static constexpr uint64_t kNoFileBlock = ~uint64_t{0};
  struct BlockUse {
    InodeId ino = 0;   // 0: unknown (scrub finds owners itself)
    Epoch epoch = 0;   // the tree read
    uint64_t fblock = kNoFileBlock;  // file block of the first block read
  };
  // Puts the checksums of n whole blocks `data`, written at physical blocks
  // [p, p+n), into txn. No-op without checksums.
  void PutChecksums(Txn* txn, BlockNo p, const char* data, uint64_t n);
  // Reads whole blocks [p, p+n) into buf and verifies each that has a
  // checksum: kIOError (counted, logged) on a mismatch.
  Status ReadBlocks(BlockNo p, uint64_t n, char* buf, const BlockUse& use);
  // The verification of ReadBlocks for bytes already read.
  // A block that fails is read again under its block stripe first
  // (RecheckBlocks): buf may get the bytes read again.
  Status VerifyBlocks(BlockNo p, uint64_t n, char* buf, const BlockUse& use);
  // ReadBlocks of a mirrored volume (fs_mirror.cc): a block that fails its
  // checksum or cannot be read on one side is served from the other and the
  // bad copy rewritten.
  Status ReadBlocksMirrored(BlockNo p, uint64_t n, char* buf, const BlockUse& use);
  // Scrub of one allocated range on a mirrored volume: every side read and
  // verified; a block bad on one side only is repaired from the other
  // (*repaired), one bad on every side is returned in *bad. Under the
  // caller's release hold.
  // With `rewrite`, a block without a checksum whose copies agree joins
  // *rewrite (for RewriteChecksums).
  Status ScrubMirroredRange(const Range& r, std::vector<BlockNo>* bad, uint64_t* checked,
                            uint64_t* unverified, uint64_t* repaired,
                            std::vector<BlockNo>* rewrite);
  // scrub --rewrite: each block of `blocks` that still has no checksum gets
  // the checksum of its bytes, read again with its block stripe held
  // (an overwrite in place, which may give it one meanwhile, is kept out),
  // if every readable copy agrees (*rewritten; else *unverified). One
  // commit per block, under the scrub step's release hold.
  Status RewriteChecksums(const std::vector<BlockNo>& blocks, uint64_t* rewritten,
                          uint64_t* unverified);
  // Whole blocks [p, p+n) read into buf, not verified yet. ReadData
  // collects the short runs of a fragmented file (overwrites redirected
  // after a snapshot, or under redirect_writes) and verifies them together: one
  // batched lookup (MultiGet) instead of an iterator per run.
  struct ReadRun {
    BlockNo p;
    uint64_t n;
    char* buf;  // mutable: a mirror's good copy replaces a bad one here
    BlockUse use;
  };
  // Runs this short or shorter are batched; longer ones are verified
  // alone (one seek, then the adjacent keys).
  static constexpr uint64_t kBatchedRunBlocks = 8;
  // Verifies every run (VerifyBlocks for each, in one lookup); clears runs.
  Status VerifyRuns(std::vector<ReadRun>* runs);
  // The blocks of [p, p+n) that fail their checksums in buf, read again
  // from the device and verified again under their block stripes (shared):
  // a first read may have met an overwrite in place between its bytes and
  // its checksum. buf gets the bytes read again. Returns the index of the
  // first block still bad (n: none), or an error.
  Result<uint64_t> RecheckBlocks(BlockNo p, uint64_t n, char* buf);
  // Counts and logs a mismatch of physical block p; returns the EIO status.
  Status ChecksumError(BlockNo p, InodeId ino, Epoch e, uint64_t fblock);
  // "'NAME'" of the snapshot at epoch e (or "at epoch N"). Takes snaps_mu.
  std::string SnapshotNameAt(Epoch e);
  // Every path of inode `ino` in the tree at epoch e, relative to the mount
  // ("d/file", ".snapshots/NAME/d/file"). A scan of `dentries`: for error
  // reports only. Takes snaps_mu (leaf) and no other lock.
  Status PathsOf(InodeId ino, Epoch e, std::vector<std::string>* out);
  // ---- scrub (fs/core/scrub.cc) ----
  // scrub_mu is a leaf (docs/locking.md): held only around the fields
  // below, never while reading the store or the image.
  std::mutex scrub_mu;
  // StartScrub, StopScrub and ShutdownScrub one at a time (they join the
  // thread); taken before scrub_mu, with no other core lock held.
  std::mutex scrub_ctl_mu;
  bool scrub_shut = false;        // GUARDED_BY(scrub_ctl_mu): unmounting
  std::condition_variable scrub_cv;
  ScrubStatus scrub;              // GUARDED_BY(scrub_mu)
  bool scrub_stop = false;        // GUARDED_BY(scrub_mu): asked to stop
  std::thread scrub_thread;
  // The scrub thread's body, from scrub.cursor.
  void ScrubLoop();
  // Loads the last scrub's record at mount; resumes a running one.
  Status LoadScrub();
  // Stops the thread (unmount): its cursor is stored, it resumes at the
  // next mount.
  void ShutdownScrub();
  // Stores the scrub record (and, with `damage`, the damaged blocks).
  Status SaveScrub(const ScrubStatus& st, bool damage);
  // For each block in `blocks` (sorted), every path that reads it now in
  // the live tree and the active snapshots, with the file offset.
  Status BlockPaths(const std::vector<BlockNo>& blocks,
                    std::map<BlockNo, std::vector<std::string>>* out);
  // ---- POSIX ACL upkeep (fs_xattr.cc), inside a modification's txn ----
  // chmod of `ino` to `mode`: a stored access ACL follows the new bits.
  Status AclChmod(Txn* txn, InodeId ino, uint32_t mode);
  // A new node `ino` (attrs `a`, not yet stored) in `parent`: with a default
  // ACL on the parent it inherits it (mode masked by the ACL, umask
  // ignored, directories also get the default ACL); without one the umask
  // applies. Symlinks are left alone.
  Status AclInherit(Txn* txn, InodeId parent, InodeId ino, InodeAttr* a, uint32_t umask);
  // Removes every record of an inode from the live tree (last link gone).
  Status DestroyInode(Txn* txn, InodeId ino, InodeAttr* a, std::vector<Range>* frees);
  // Release of the last handle of an orphan, or mount-time cleanup.
  // `known`: its live attributes, just read under its locks (MaybeDestroy);
  // null: read here.
  Status DestroyOrphan(InodeId ino, const InodeAttr* known = nullptr);

  // ---- snapshots (fs_snapshot.cc) ----
  void ReclaimLoop();
  Status ReclaimOne(SnapshotId id);
  // Removes the tombstones reclaim found hiding nothing, if they still are.
  Status DropLoneTombstones(const std::vector<std::pair<Cf, std::string>>& lone);
  bool SnapshotUsable(SnapshotId id, Epoch* e);
  void InvalidateEntry(NodeId parent, std::string_view name);
  // Commits `txn` (with the allocator bookkeeping) together with a new
  // snapshot `rec` at the live epoch and advances the epoch. REQUIRES
  // volume_mu exclusive. `guid` non-empty: stored as the snapshot's stream
  // identity (a received snapshot keeps its source's).
  Status CommitSnapshotLocked(Txn* txn, SnapshotRec rec, const std::string& guid,
                              const std::vector<Range>& frees, const std::vector<Range>& allocs,
                              SnapshotInfo* info);
  // The stream identity of snapshot `id` (fs_send.cc): stored for received
  // snapshots, else derived from the volume UUID, id, epoch and ctime.
  std::string SnapshotGuid(SnapshotId id, const SnapshotRec& rec);
  // ---- restore (fs_restore.cc) ----
  // Restores snapshot `id` with reclaim_run_mu and volume_mu held
  // exclusively by the caller. Collects the kernel invalidations to send
  // once the locks are released.
  struct Invalidation {
    NodeId node;
    std::string name;  // empty: the inode itself
  };
  Status RestoreLocked(SnapshotId id, bool dry_run, RestoreResult* out,
                       std::vector<Invalidation>* inval);
  // Sends queued kernel invalidations (no core lock held) and waits until
  // they reached the kernel.
  void Deliver(const std::vector<Invalidation>& inval);
  // The restore's work without its commit: writes into `txn` what makes the
  // live tree equal to the tree at epoch `es` (a receive rolls back to its
  // base this way, in its own Txn). Caller holds what RestoreLocked needs.
  Status RestoreInto(Txn* txn, Epoch es, RestoreResult* out, std::vector<Invalidation>* inval,
                     std::vector<Range>* frees);
  // Mount: finishes a restore a crash interrupted (kVolRestorePending).
  Status ResumeRestore(bool* resumed);
  // ---- holds (fs_holds.cc) ----
  // "'tag1', 'tag2'": the holds of snapshot `id`, for DeleteSnapshot's message.
  std::string HoldTags(SnapshotId id);
};

// Locks a set of inode stripes in ascending order (shared or exclusive).
class LockSet {
 public:
  LockSet(FileSystem::Impl* fs, std::initializer_list<InodeId> inos, bool exclusive = true)
      : fs_(fs), exclusive_(exclusive) {
    Lock(inos.begin(), inos.end());
  }
  LockSet(FileSystem::Impl* fs, std::span<const InodeId> inos, bool exclusive = true)
      : fs_(fs), exclusive_(exclusive) {
    Lock(inos.data(), inos.data() + inos.size());
  }
  ~LockSet();
  // Adds the stripe of `ino` to the held set (an operation that learns a
  // child's number by reading its parent's entry under the parent's
  // stripe). Waits for it only when it sorts after every stripe held, so
  // the order stays ascending; otherwise it only tries. False, and nothing
  // more held, when it would have had to wait out of order: the caller then
  // takes the whole set again (docs/locking.md, "Rules").
  bool Add(InodeId ino);
  LockSet(const LockSet&) = delete;
  LockSet& operator=(const LockSet&) = delete;

 private:
  void Lock(const InodeId* begin, const InodeId* end);
  FileSystem::Impl* fs_;
  std::vector<size_t> stripes_;
  bool exclusive_;
};

// The block stripes (lock order 3b) of physical blocks [p, p+n), all taken
// in ascending order: exclusive by an overwrite in place, shared by a
// re-check (FileSystem::Impl::RecheckBlocks) or a repair.
class BlockGuard {
 public:
  BlockGuard(FileSystem::Impl* fs, const std::vector<BlockNo>& blocks, bool exclusive);
  BlockGuard(FileSystem::Impl* fs, BlockNo p, uint64_t n, bool exclusive);
  ~BlockGuard();
  BlockGuard(const BlockGuard&) = delete;
  BlockGuard& operator=(const BlockGuard&) = delete;

 private:
  void Lock();
  FileSystem::Impl* fs_;
  std::vector<size_t> stripes_;
  bool exclusive_;
};

Status ValidateName(std::string_view name);

// CRC-32C of one block as stored in the image (fs_checksum.cc).
// VOLUME/image and VOLUME/mirror (the mirror's state, fs/device/mirror_device.h).
inline std::string ImagePath(const std::string& dir) { return dir + "/image"; }
inline std::string MirrorStatePath(const std::string& dir) { return dir + "/mirror"; }
// Opens the mirror VOLUME/mirror names and sets `md` up with it (fs_mirror.cc).
Status OpenMirror(const std::string& dir, const MountOptions& opts, MirrorDevice* md);

// Forwards to a shared device (test hooks pass shared_ptr devices).
class SharedDevice : public BlockDevice {
 public:
  explicit SharedDevice(std::shared_ptr<BlockDevice> d) : d_(std::move(d)) {}
  Status Read(uint64_t off, void* buf, size_t n) override { return d_->Read(off, buf, n); }
  Status Write(uint64_t off, const void* buf, size_t n) override { return d_->Write(off, buf, n); }
  Status Sync() override { return d_->Sync(); }
  uint64_t size() const override { return d_->size(); }
  int fd() const override { return d_->fd(); }
  void WillNeed(uint64_t off, uint64_t n) override { d_->WillNeed(off, n); }

 private:
  std::shared_ptr<BlockDevice> d_;
};

uint32_t BlockCrc(const char* data, size_t bs);
// Writes checksums into a Txn as grouped `csums` records (keys.h CsumKey):
// the blocks added one after another that share a group make one record, a
// Put when they are the whole group, else a merge operand over what the
// group holds. Blocks may come in any order (a group met again gets one
// more operand); Finish() writes the last group.
class ChecksumWriter {
 public:
  // `pending`: the mount's checksum state, whose group cache each group
  // written leaves once the Txn's commit is readable.
  ChecksumWriter(Txn* txn, PendingChecksums* pending) : txn_(txn), pending_(pending) {}
  void Add(BlockNo b, uint32_t crc);
  void Finish();

 private:
  Txn* txn_;
  PendingChecksums* pending_;
  BlockNo first_ = 0;
  CsumGroup g_;
  std::string v_;
};
// Records `crc` as the checksum of physical block p in txn.
void PutChecksum(Txn* txn, PendingChecksums* pending, BlockNo p, uint32_t crc);
// Whether `csums` holds records of metadata format 1 (its first key is one).
bool HasLegacyChecksums(Store* store, Status* s);
// The checksums of physical blocks [p, p+n) (nullopt: none recorded),
// those staged in `pending` (if given) over those committed. Without
// `pending`, format-1 records are looked for too.
Status LoadChecksums(Store* store, BlockNo p, uint64_t n,
                     std::vector<std::optional<uint32_t>>* out,
                     const PendingChecksums* pending = nullptr);
// The checksums of the given physical blocks (any order), in one batched
// lookup: (*out)[i] for blocks[i].
Status LoadChecksumsOf(Store* store, const std::vector<BlockNo>& blocks,
                       std::vector<std::optional<uint32_t>>* out,
                       const PendingChecksums* pending = nullptr);

// The allocated ranges of `alloc` that meet [lo, hi), clipped to it (with
// `keep`: only those of records it keeps). fs/core/scrub.cc.
Status AllocatedIn(Store* store, BlockNo lo, BlockNo hi, std::vector<Range>* out,
                   const std::function<bool(const AllocRec&)>& keep = nullptr);

// Reads the exact volume counters (keys.h); counts and stores them once for
// a volume formatted before they existed.
Status LoadVolumeCounters(Store* store, uint64_t* used_blocks, uint64_t* files);

}  // namespace psm
