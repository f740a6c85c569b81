// FileSystem: the FUSE-free core of psmfs. One object is one mounted volume.
//
// The FUSE adapter (fs/fuse_*.cc) decodes a request, makes one call here and
// replies once; unit tests call the same methods without mounting. Every
// method returns a Status/Result whose code becomes the errno at the FUSE
// boundary (Status::ToErrno).
//
// Node ids: the kernel sees NodeId = (snapshot id << kSnapShift) | inode, so
// every file in every snapshot has a distinct st_ino. Snapshot id 0 is the
// live tree. kSnapDirNode is the virtual `.snapshots` directory; the root of
// snapshot S is MakeNode(S, kRootIno).
//
// Concurrency (docs/locking.md has the full lock order):
//   volume_mu_ (shared by every live modification and snapshot read set-up,
//   exclusive for snapshot create/delete/restore) -> inode locks (striped,
//   taken in ascending stripe order) -> handles_mu_ / snaps_mu_ ->
//   Allocator::mu_ -> Committer::mu_.
// All public methods are thread-safe.
#pragma once

#include <sys/stat.h>
#include <sys/statvfs.h>

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "fs/device/mirror_info.h"
#include "fs/space/scanner.h"
#include "meta/keys.h"
#include "meta/status.h"

namespace rocksdb {
class FileSystem;
}

namespace psm {

class BlockDevice;
class Store;
class Allocator;
class Scanner;
struct ScanStatus;

using NodeId = uint64_t;
inline constexpr int kSnapShift = 44;
inline constexpr NodeId kInoMask = (NodeId{1} << kSnapShift) - 1;
inline constexpr InodeId kSnapDirIno = 2;           // `.snapshots` (live slot)
inline constexpr NodeId kSnapDirNode = kSnapDirIno;
inline constexpr std::string_view kSnapDirName = ".snapshots";
inline NodeId MakeNode(SnapshotId s, InodeId ino) { return (s << kSnapShift) | ino; }
inline SnapshotId SnapOf(NodeId n) { return n >> kSnapShift; }
inline InodeId InoOf(NodeId n) { return n & kInoMask; }

struct Credentials {
  uint32_t uid = 0;
  uint32_t gid = 0;
  int32_t pid = 0;
  // The creator's umask. The core applies it to new nodes unless the parent
  // directory has a default ACL (then the ACL decides, as POSIX requires).
  // The FUSE adapter asks the kernel not to apply it (FUSE_CAP_DONT_MASK)
  // when POSIX ACLs are on; otherwise the kernel already has and applying
  // it again changes nothing.
  uint32_t umask = 0;
};

// What mount-time options the core honours; each default documented.
struct MountOptions {
  // Refuse every modification (EROFS). Default: false.
  bool read_only = false;
  // Kernel cache timeouts (seconds) for the live tree. psmfs is the only
  // writer of its volume and the kernel drops its cached attributes itself
  // on every change it makes through the mount; what changes behind its back
  // (snapshots, restore) is invalidated explicitly. Default: 30.
  double live_timeout = 30.0;
  // Kernel cache timeouts for snapshot trees (they never change). Default: 86400.
  double snapshot_timeout = 86400.0;
  // Background commit interval: unsynced writes become durable within it.
  // Default: 1000 ms.
  uint32_t commit_interval_ms = 1000;
  // Take the volume's exclusive mount lock and bump the mount generation.
  // Default: true (tests that open one volume twice in-process say false).
  bool take_lock = true;
  // Test hooks: use this device / this RocksDB file system instead of the
  // image and the default file system. Default: null.
  std::shared_ptr<BlockDevice> device;
  std::shared_ptr<rocksdb::FileSystem> meta_fs;
  // Test hook: the mirror named by VOLUME/mirror is this device. Default: null.
  std::shared_ptr<BlockDevice> mirror_device;
  // Resilver speed limit, bytes/s; 0 = none. Default: 0.
  uint64_t resilver_rate = 0;
  // On a checksummed volume, redirect every write to a new block, as
  // before write intents existed, instead of overwriting whole blocks born
  // at the live epoch in place (psmfs -o redirect_writes; docs/integrity.md
  // "Overwrites in place"). Default: false.
  bool redirect_writes = false;
  // Why the free-space scan runs ("mount", "failover", ...). Default: chosen
  // from the volume's state.
  std::string scan_reason;
  // Start the scanner thread. Default: true.
  bool start_scanner = true;
  // alloc records the scanner reads per step under the allocator lock
  // (ScannerOptions::records_per_step). Default: 4096.
  uint32_t scan_records_per_step = 4096;
  // Count kernel lookups (every EntryOut returned is one reference, dropped
  // by Forget): an unlinked inode then lives until the kernel forgets it and
  // its last handle closes, as POSIX wants. The FUSE adapter sets this;
  // direct callers of the core that never Forget leave it off. Default: false.
  bool count_lookups = false;
  // Show `.snapshots` in the root's listing (it is reachable by name either
  // way). Default: true (snapdir=visible).
  bool snapdir_visible = true;
  // The daemon's memory budget (psmfs -o memory=SIZE), bytes. Half of it is
  // RocksDB's one cache (block cache, index and filter blocks, memtables:
  // StoreOptions::cache_bytes), an eighth the live cache's chunk maps
  // (LiveCache::SetByteLimit); the rest is left for the process itself
  // (heap, FUSE request buffers, thread stacks). Default: 256 MiB.
  uint64_t memory_bytes = 256ull << 20;
  // The most inodes the kernel may hold references to before the daemon
  // asks it to drop some (psmfs -o max_kernel_refs=N; docs/architecture.md,
  // "Memory"): the FUSE adapter's shedder invalidates dentries
  // (ShedKernelRefs) until the count is 3/4 of this. 0: derived from
  // memory_bytes (KernelRefsCap). Only with count_lookups.
  uint64_t max_kernel_refs = 0;
};

// The cap on kernel references for a mount: `max_kernel_refs` when set,
// else as many as fit, at 3/4 load, the largest table of at most a
// sixteenth of `memory_bytes` (1,572,864 at 256 MiB: a 16 MiB table).
uint64_t KernelRefsCap(const MountOptions& o);

// Options of `psmctl mkfs`.
struct FormatOptions {
  uint64_t size_bytes = 0;        // image size; 0 = the block device's size
  uint32_t block_size = 4096;     // bytes, power of two, 512..65536
  uint64_t chunk_bytes = kDefaultChunkBytes;
  std::string image_path;         // empty: VOLUME/image
  bool force = false;             // overwrite an existing volume
  bool checksum = true;           // checksum data blocks (docs/integrity.md)
  std::shared_ptr<BlockDevice> device;  // test hook
  // A mirror: a second image holding the same blocks (docs/integrity.md,
  // "Mirror"), a file (created, `size_bytes`) or a block device. "": none.
  std::string mirror_path;
  std::shared_ptr<BlockDevice> mirror_device;  // test hook: used as mirror_path
};

// Creates a new volume at `volume_dir`. Prints nothing.
Status Format(const std::string& volume_dir, const FormatOptions& opts);

// A block scrub found damaged: its physical block and every path that
// reads it ("d/file (offset N)", ".snapshots/NAME/d/file (offset N)").
struct ScrubDamage {
  uint64_t block = 0;
  std::vector<std::string> paths;
};
// The running or last scrub (FileSystem::GetScrubStatus).
struct ScrubStatus {
  std::string state;  // "" never ran, "running", "finished", "stopped"
  uint64_t cursor = 0, end = 0;  // physical blocks: where it is, the image's end
  uint64_t checked_blocks = 0;     // allocated blocks read and verified
  uint64_t unverified_blocks = 0;  // allocated blocks read that have no checksum
  uint64_t damaged_blocks = 0;     // failed their checksum (and still in use)
  uint64_t repaired_blocks = 0;    // bad on one side of a mirror, rewritten from the other
  bool rewrite = false;            // started with --rewrite
  uint64_t rewritten_blocks = 0;   // blocks without a checksum that got one (--rewrite)
  int64_t started_ns = 0, finished_ns = 0;
  double rate_mb_s = 0;            // throttle; 0 = none
  std::vector<ScrubDamage> damage;  // every damaged block found so far
};

struct EntryOut {
  NodeId node = 0;
  struct stat st {};
  double entry_timeout = 0;
  double attr_timeout = 0;
};

struct AttrOut {
  struct stat st {};
  double attr_timeout = 0;
};

// Which fields SetAttr changes.
enum SetAttrBits : uint32_t {
  kSetMode = 1u << 0,
  kSetUid = 1u << 1,
  kSetGid = 1u << 2,
  kSetSize = 1u << 3,
  kSetAtime = 1u << 4,
  kSetMtime = 1u << 5,
  kSetAtimeNow = 1u << 6,
  kSetMtimeNow = 1u << 7,
  kSetCtime = 1u << 8,
  // Clear S_ISUID, and S_ISGID if the group may execute (what Linux does on
  // a write, truncate or chown by a caller without CAP_FSETID), on anything
  // but a directory. Alone and with nothing to clear, SetAttr changes
  // nothing and commits nothing.
  kKillSuidGid = 1u << 9,
  // With kKillSuidGid: clear S_ISGID even without group-exec (Linux does
  // when the caller is neither in the file's group nor has CAP_FSETID; the
  // FUSE adapter decides that, it knows the caller's groups).
  kKillSgid = 1u << 10,
};

struct DirEntryOut {
  std::string_view name;
  NodeId node = 0;
  uint32_t type = 0;  // S_IFMT bits
  uint64_t next_offset = 0;
};

struct SnapshotInfo {
  SnapshotId id = 0;
  std::string name;
  Epoch epoch = 0;
  int64_t ctime_ns = 0;
  bool deleting = false;
  uint64_t used_bytes = 0;        // freed by deleting only this snapshot
  uint64_t referenced_bytes = 0;  // data blocks its tree references
};

// A hold on a snapshot (HoldSnapshot).
struct SnapshotHold {
  std::string snapshot;
  std::string tag;
  int64_t since_ns = 0;
};

// One distinct version of a file (History).
struct FileVersion {
  std::vector<std::string> snapshots;  // snapshots that see it, oldest first
  bool live = false;                   // the live tree sees it too
  InodeId ino = 0;
  Epoch version = 0;  // epoch its attribute record was written at
  uint32_t mode = 0;
  uint64_t size = 0;
  int64_t mtime_ns = 0;
  int64_t ctime_ns = 0;
  std::string sha256;  // hex of the content; "" without checksums / not a file
};

// One change between two points (Diff).
struct DiffEntry {
  char change = 'M';     // '+' created, '-' removed, 'M' modified, 'R' renamed
  std::string path;      // "/a/b" (the new path for 'R')
  std::string old_path;  // 'R': where it was
  uint32_t type = 0;     // S_IFMT bits
};
struct DiffResult {
  std::string from, to;  // snapshot names; to == "" for the live tree
  std::vector<DiffEntry> entries;
  uint64_t dead_entries_read = 0;  // work done: dead-index entries examined
  uint64_t dirs_compared = 0;      // directories whose entries were compared
};

struct VolumeStats {
  std::string uuid;
  uint32_t block_size = 0;
  uint64_t total_blocks = 0;  // data blocks (image minus superblock)
  uint64_t used_blocks = 0;   // held by alloc (live and snapshots)
  uint64_t free_blocks = 0;
  uint64_t files = 0;         // live inodes
  uint64_t snapshots = 0;
  Epoch epoch = 0;
  uint64_t mount_generation = 0;
  uint64_t pending_reclaim = 0;  // snapshots waiting for space reclaim
  // Progress of the reclaim that runs now ("" / 0 when none runs).
  std::string reclaiming;            // name of the snapshot being reclaimed
  uint64_t reclaim_entries_done = 0; // dead-index entries it has processed
  uint64_t reclaim_blocks_freed = 0; // blocks it has freed so far
  // The allocator's free-extent index (below the scan cursor).
  uint64_t free_ranges = 0;
  uint64_t free_index_bytes = 0;
  // Progress of the restore that runs now (Restore); "" / 0 when none.
  std::string restoring;       // name of the snapshot being restored
  uint64_t restore_done = 0;   // inodes compared so far
  uint64_t restore_total = 0;  // inodes known to need comparing so far
  // The live cache of open files (fs/core/live_cache.h); core only, not sent by
  // the control protocol.
  uint64_t cached_chunk_maps = 0;
  uint64_t cache_hits = 0;
  // "" while healthy; else why the volume failed (a sync of the image or of
  // the metadata log failed): writes and fsync fail with EIO until the
  // volume is mounted again (docs/crash-consistency.md, "Sync failures").
  std::string failure;
  uint64_t sync_cycles = 0;  // group-commit sync cycles since mount
  uint64_t commits = 0;      // metadata commits (Committer::Apply) since mount
  // Memory of the process that holds the volume (the daemon when mounted).
  uint64_t rss_bytes = 0;            // resident set size now
  uint64_t memory_budget_bytes = 0;  // MountOptions::memory_bytes
  uint64_t metadata_cache_bytes = 0;       // RocksDB's budget (cache_bytes)
  uint64_t metadata_cache_used_bytes = 0;  // what of it is used now
  uint64_t live_cache_bytes = 0;           // chunk maps cached for open files
  // Inodes the kernel holds a reference to (count_lookups), and the bytes
  // of their table, charged to the metadata cache (metadata_cache_bytes is
  // less by as much, down to half its share).
  uint64_t kernel_refs = 0;
  uint64_t kernel_refs_bytes = 0;
  // The cap on kernel_refs (MountOptions::max_kernel_refs; 0: none) and
  // the dentries the daemon asked the kernel to drop to keep under it.
  uint64_t kernel_refs_cap = 0;
  uint64_t kernel_refs_shed = 0;
  // Data checksums (docs/integrity.md).
  bool checksums = false;        // the volume checksums its data blocks
  uint64_t checksum_errors = 0;  // reads that failed their checksum since mount
  // Overwrites in place (docs/integrity.md): regions with a write intent
  // now, and blocks this mount re-checksummed after an unclean shutdown.
  uint64_t write_intent_regions = 0;
  uint64_t intent_recovered_blocks = 0;
  // The image and its mirror (docs/integrity.md, "Mirror").
  MirrorInfo mirror;
};

// Details of the metadata store's (RocksDB's) memory beyond VolumeStats'
// metadata_cache_* figures, for monitoring (FileSystem::StoreMemory,
// `psmctl metrics`). A figure RocksDB does not report is absent, never a
// made-up zero.
struct StoreMemoryStats {
  std::optional<uint64_t> memtable_bytes;       // memtables of every column family
  std::optional<uint64_t> table_readers_bytes;  // table readers' memory outside the cache
};

// What a restore changed (or, for a dry run, would change).
struct RestoreResult {
  std::string snapshot;
  bool dry_run = false;
  uint64_t inodes_examined = 0;   // inodes compared with the snapshot
  uint64_t created = 0;           // inodes the snapshot has and the live tree lacked
  uint64_t changed = 0;           // inodes in both whose records differed
  uint64_t removed = 0;           // inodes the live tree had and the snapshot lacks
  uint64_t entries_changed = 0;   // directory entries written or removed
  uint64_t bytes_restored = 0;    // snapshot data made live again (no copy)
  uint64_t bytes_discarded = 0;   // live data dropped (kept if a snapshot sees it)
  uint64_t dead_entries_read = 0; // dead-index entries walked to find the change
  double seconds = 0;
};

// A send (FileSystem::Send, docs/send-receive.md).
struct SendOptions {
  std::string snapshot;  // what to send
  std::string base;      // incremental from this older snapshot; "" = full
};
struct SendStats {
  std::string snapshot, base;
  std::string guid;          // the sent snapshot's stream identity
  uint64_t bytes = 0;        // stream bytes
  uint64_t records = 0;
  uint64_t data_bytes = 0;   // file contents carried
  uint64_t inodes = 0;       // inodes described
  uint64_t dead_entries_read = 0;  // incremental: dead-index entries examined
  double seconds = 0;
};
// A receive (FileSystem::Receive).
struct ReceiveOptions {
  std::string name;    // the new snapshot's name; "" = the name in the stream
  // An incremental stream needs the live tree equal to its base; with
  // force, changes made since the base are discarded (as psmctl restore
  // BASE would) in the same commit. Default: false (refused).
  bool force = false;
};
struct ReceiveResult {
  std::string snapshot, base, guid;
  bool incremental = false;
  uint64_t bytes = 0, records = 0, data_bytes = 0, inodes = 0;
  uint64_t discarded = 0;  // live inodes rolled back to the base (force)
  double seconds = 0;
};

class FileSystem {
 public:
  // Mounts the volume at `volume_dir` (the directory holding `image` and
  // `meta/`). Takes the mount lock, checks the superblock, opens RocksDB,
  // finishes interrupted work, starts the scanner and the committer.
  static Result<std::unique_ptr<FileSystem>> Open(const std::string& volume_dir,
                                                  const MountOptions& opts);
  ~FileSystem();  // Close()s if not closed
  // Clean unmount: stops threads, makes everything durable, releases the lock.
  Status Close();

  // ---- namespace ----
  Result<EntryOut> Lookup(NodeId parent, std::string_view name);
  // The kernel dropped `nlookup` references to `node` (FUSE forget). An
  // unlinked file nothing references any more is destroyed: by this call,
  // or, when another Forget/ForgetMany is destroying at the time, by that
  // one before it returns (together with its own: one commit for up to 32).
  void Forget(NodeId node, uint64_t nlookup);
  // The kernel dropped references to several nodes at once (FUSE
  // BATCH_FORGET): Forget of each, the unlinked files among them destroyed
  // together, up to 32 in one commit instead of one commit each.
  struct Forgotten {
    NodeId node = 0;
    uint64_t nlookup = 0;
  };
  void ForgetMany(std::span<const Forgotten> forgets);
  Result<AttrOut> GetAttr(NodeId node);
  Result<AttrOut> SetAttr(NodeId node, const struct stat& in, uint32_t bits,
                          const Credentials& cred);
  Result<std::string> ReadLink(NodeId node);
  Result<EntryOut> MkNod(NodeId parent, std::string_view name, uint32_t mode, uint64_t rdev,
                         const Credentials& cred);
  Result<EntryOut> MkDir(NodeId parent, std::string_view name, uint32_t mode,
                         const Credentials& cred);
  Result<EntryOut> Symlink(NodeId parent, std::string_view name, std::string_view target,
                           const Credentials& cred);
  Result<EntryOut> Link(NodeId node, NodeId new_parent, std::string_view new_name);
  Status Unlink(NodeId parent, std::string_view name);
  // In `.snapshots`, rmdir deletes a snapshot: only root or the volume owner.
  Status RmDir(NodeId parent, std::string_view name, const Credentials& cred = {});
  // flags: 0, RENAME_NOREPLACE, RENAME_EXCHANGE.
  Status Rename(NodeId parent, std::string_view name, NodeId new_parent,
                std::string_view new_name, unsigned flags);

  // ---- files ----
  // Returns a file handle. `flags` are open(2) flags (O_TRUNC is applied).
  Result<uint64_t> OpenFile(NodeId node, int flags);
  Result<std::pair<EntryOut, uint64_t>> Create(NodeId parent, std::string_view name,
                                               uint32_t mode, int flags,
                                               const Credentials& cred);
  // Reads up to `size` bytes at `off` into buf; returns bytes read (short at EOF).
  Result<size_t> Read(uint64_t fh, uint64_t off, size_t size, char* buf);
  // Writes all `size` bytes at `off` (O_APPEND handles: at EOF). Returns size.
  // Sets mtime and ctime, unless `kernel_times`: the caller keeps the times
  // itself and sends them later with SetAttr (the kernel's writeback cache
  // does; the FUSE adapter says so), so only a size or block-count change
  // is recorded — an overwrite in place then writes no metadata at all.
  Result<size_t> Write(uint64_t fh, uint64_t off, const char* buf, size_t size,
                       bool kernel_times = false);
  Status Release(uint64_t fh);
  Status Fsync(uint64_t fh, bool datasync);
  // mode: 0, FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE|FALLOC_FL_KEEP_SIZE,
  // FALLOC_FL_ZERO_RANGE[|KEEP_SIZE], FALLOC_FL_COLLAPSE_RANGE,
  // FALLOC_FL_INSERT_RANGE. The last two follow ext4: alone (else EINVAL),
  // offset and length multiples of the block size (EINVAL), a collapse
  // must end before EOF and an insert start before it (EINVAL), an insert
  // may not grow the file past the largest size (EFBIG). They move extents
  // in the chunk records and never read or write file data; one commit.
  Status Fallocate(uint64_t fh, int mode, uint64_t off, uint64_t len);
  // SEEK_DATA / SEEK_HOLE.
  Result<uint64_t> Lseek(uint64_t fh, uint64_t off, int whence);

  // ---- directories ----
  Result<uint64_t> OpenDir(NodeId node);
  // Calls add() for entries from offset `off` (0 = start; "." and ".."
  // included) until add() returns false (buffer full) or the end.
  Status ReadDir(uint64_t dh, uint64_t off, const std::function<bool(const DirEntryOut&)>& add);
  Status ReleaseDir(uint64_t dh);
  Status FsyncDir(uint64_t dh, bool datasync);

  // ---- extended attributes ----
  // flags: 0, XATTR_CREATE, XATTR_REPLACE.
  Status SetXattr(NodeId node, std::string_view name, std::string_view value, int flags);
  Result<std::string> GetXattr(NodeId node, std::string_view name);
  // NUL-separated names.
  Result<std::string> ListXattr(NodeId node);
  Status RemoveXattr(NodeId node, std::string_view name);

  // ---- volume ----
  Status StatFs(struct statvfs* out);
  // Makes everything written so far durable (syncfs / sync).
  Status SyncAll();
  VolumeStats Stats();
  // RocksDB's memory figures (fs_metrics.cc). Cheap: a few property reads.
  StoreMemoryStats StoreMemory();
  ScanStatus GetScanStatus();
  void StartScan(const std::string& reason);
  // Waits until no free-space scan is running (or timeout_sec passed, or the
  // volume is closing). Returns true when idle. A scan started by
  // StartScan() before the call is waited for.
  bool WaitScan(double timeout_sec);

  // Scrub (fs/core/scrub.cc, docs/integrity.md): reads every allocated block
  // once, in physical order, and verifies its checksum; damaged blocks are
  // reported with every live and snapshot path that reads them. Runs in a
  // thread of its own while the volume serves; resumes after a remount.
  // StartScrub: kBusy if one runs; kReadOnly on a read-only mount;
  // kNotSupported on a volume without checksums. `rate_mb_s` 0: as fast as
  // the image reads. `rewrite`: a block without a checksum (written before
  // the volume had checksums) gets one, from the bytes read (on a mirror:
  // only when both copies agree); see docs/integrity.md, "Formats".
  Status StartScrub(double rate_mb_s, bool rewrite = false);
  // Stops a running scrub (it can be started again from the beginning).
  // kNotFound if none runs.
  Status StopScrub();
  ScrubStatus GetScrubStatus();

  // Handles of live files open for writing that the kernel has not released
  // yet. Zero means no process holds an fd or a shared mapping through which
  // a file of the mount could have dirty pages: every close wrote its pages
  // back (fuse_flush) before the release. psmctl skips its walk of /proc for
  // such files then (SyncMount, cli/psmctl_util.cc).
  size_t WritableLiveHandles();

  // Mirror (docs/integrity.md). Attach: `path` (a file, created with the
  // image's size when absent, or a block device) becomes the mirror and is
  // resilvered while the volume serves; kExists when one is attached,
  // kInvalid when too small or (without `force`) holding another volume.
  Status MirrorAttach(const std::string& path, bool force);
  // Forgets the mirror (its contents stay as they are); kBusy while it
  // holds the only complete copy.
  Status MirrorDetach();
  // Waits for a running resilver (offline attach, tests).
  Status MirrorWait();
  // Waits until no scrub runs; false on timeout.
  bool WaitScrub(double timeout_sec);
  // The free ranges (start block, length) of the allocator's index, in
  // order: what the scan and every free since have published (tests,
  // benchmarks; compare with an offline rebuild).
  std::vector<std::pair<uint64_t, uint64_t>> FreeExtents();

  // ---- snapshots ----
  // `from_kernel`: called for a FUSE mkdir/rmdir in `.snapshots` (MkDir,
  // RmDir). The kernel then updates its own dentry from the reply and holds
  // the directory's lock until it has it, so the core asks it to invalidate
  // nothing: an invalidation would wait for that lock, and a daemon killed
  // meanwhile could never exit (docs/fuse-adapter.md, "Invalidation").
  Result<SnapshotInfo> CreateSnapshot(std::string_view name, bool from_kernel = false);
  Status DeleteSnapshot(std::string_view name, bool from_kernel = false);
  // Oldest first. With `space`, computes used/referenced (costs a dead-index
  // walk per snapshot).
  std::vector<SnapshotInfo> ListSnapshots(bool space);
  // Runs pending snapshot reclaim now (tests; the committer does it too).
  Status ReclaimNow();
  // Makes the live tree equal to snapshot `name` (fs_restore.cc,
  // docs/restore.md): contents, attributes, xattrs, links and holes. Every
  // snapshot survives. Cost grows with what changed since the snapshot (the
  // dead index says what), not with the volume. Atomic: one metadata commit,
  // announced by a durable `restore_pending` record so that a crash before
  // it commits is finished by the next Open. Waits for live modifications
  // and snapshot create/delete/reclaim; readers see the old or the new tree.
  // Starts a free-space scan afterwards. With `dry_run`, counts and changes
  // nothing. Errors: kNotFound (no such snapshot), kReadOnly, kNoSpace.
  Result<RestoreResult> Restore(std::string_view name, bool dry_run = false);

  // ---- send / receive streams (fs_send.cc, docs/send-receive.md) ----
  // Writes the stream of snapshot `o.snapshot` (full, or incremental from
  // `o.base`) to `sink`, in pieces. `on_size` (optional) learns the exact
  // stream size before the first byte. While it runs both snapshots are
  // pinned: DeleteSnapshot (rmdir, prune) of either is refused with kBusy.
  // An incremental stream costs what changed between the two (the dead
  // index says what). A sink error stops the send and is returned.
  // Errors: kNotFound, kInvalid (base not older), kBusy (being deleted).
  Result<SendStats> Send(const SendOptions& o, const std::function<Status(std::string_view)>& sink,
                         const std::function<void(uint64_t)>& on_size = {});
  // Reads a stream from `source` (bytes read, 0 at its end) and makes it a
  // snapshot of this volume, as `zfs receive` does: the live tree becomes
  // the received tree and the snapshot is taken, in one commit, only after
  // the whole stream was read and verified. Data is written to free space
  // while the stream is read; on any error it is given back and the volume
  // is exactly as before. A full stream needs a volume whose live tree is
  // empty; an incremental one needs its base here (same stream identity)
  // and the live tree unchanged since (or `force`).
  // Errors: kCorruption / kIOError("truncated") / kInvalid (bad stream),
  // kNotFound (base missing), kExists (name or snapshot already here),
  // kBusy (live tree changed, not empty), kNoSpace, kReadOnly.
  Result<ReceiveResult> Receive(const ReceiveOptions& o,
                                const std::function<Result<size_t>(char*, size_t)>& source);

  // ---- file-server features: holds, properties, history, diff ----
  // (fs_holds.cc, fs_history.cc; docs/user-guide.md)
  //
  // A hold keeps a snapshot from being deleted: DeleteSnapshot (and rmdir in
  // .snapshots, and prune) get kBusy naming the holds. Holds are stored on
  // the volume; a snapshot may have several, one per tag.
  // Errors: kNotFound (no such snapshot / hold), kExists (tag already holds
  // it), kInvalid (bad tag), kReadOnly.
  Status HoldSnapshot(std::string_view name, std::string_view tag);
  Status ReleaseSnapshot(std::string_view name, std::string_view tag);
  // Every hold, by snapshot (oldest snapshot first), then tag.
  std::vector<SnapshotHold> ListHolds();
  // Small named values kept on the volume (e.g. "schedule", the snapshot
  // schedule of fs/control/scheduler.h). kNotFound when unset. An empty value
  // removes the property. Set is durable when it returns.
  Result<std::string> GetProperty(std::string_view name);
  Status SetProperty(std::string_view name, std::string_view value);
  // The distinct versions of the file at `path` (relative to the root) in
  // every snapshot and the live tree, oldest first: consecutive snapshots
  // that see the same inode version form one entry. Costs a path lookup per
  // snapshot plus, with `checksums`, one read of each distinct version.
  Result<std::vector<FileVersion>> History(std::string_view path, bool checksums);
  // What changed between snapshot `from` and snapshot `to` ("" = the live
  // tree), from the dead index (versions that died in between): created,
  // removed, modified and renamed paths, sorted by path. The older snapshot
  // is taken as the start whatever the order given.
  Result<DiffResult> Diff(std::string_view from, std::string_view to);

  // Inodes the kernel holds references to (count_lookups).
  size_t KernelRefs();
  // Asks the kernel to drop about `want` references (the cap on them,
  // MountOptions::max_kernel_refs): goes on through the directories the
  // kernel references, from where the last call stopped, and calls
  // `inval(directory, name)` for each live entry whose inode the kernel
  // references; at most one pass over the table a call. Returns the number
  // of calls. `inval` must only queue (the FUSE adapter's notifier sends
  // them): the kernel's FORGETs come later. Called without core locks.
  size_t ShedKernelRefs(size_t want, const std::function<void(NodeId, std::string_view)>& inval);

  // Kernel cache invalidation, set by the FUSE adapter: entry (parent, name)
  // and inode (node) notifications. Called without core locks held.
  // `drain` (optional) returns once every notification queued so far has
  // reached the kernel: a restore calls it before it reports success.
  void SetInvalidators(std::function<void(NodeId, std::string_view)> entry,
                       std::function<void(NodeId)> inode, std::function<void()> drain = {});

  const std::string& uuid() const;
  uint32_t block_size() const;

  struct Impl;

 private:
  explicit FileSystem(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Offline check of a volume (psmctl fsck). Writes a human report to `report`
// (one problem per line). Returns the number of problems found, or an error
// if the volume cannot be opened.
struct FsckOptions {
  bool repair = false;  // fix what is safely fixable (leaked ranges, stale dead entries)
  // Test hook: read the superblock from this device instead of the image.
  std::shared_ptr<BlockDevice> device;
};
Result<uint64_t> Fsck(const std::string& volume_dir, const FsckOptions& opts, std::string* report);

}  // namespace psm
