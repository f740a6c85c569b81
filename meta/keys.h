// The on-disk encoding of every RocksDB key and record value in psmfs.
//
// This is the only code that knows key bytes (docs/on-disk-format.md mirrors
// it). Every value marked STORED is part of the on-disk format: changing it
// requires a new format version and a migration. Do not change.
//
// Versioned records (inodes, dentries, chunks, xattrs) end their key with the
// epoch they were written at, as big-endian(~epoch), so that newer versions
// sort first: reading at epoch e is Seek(prefix + BE(~e)) and taking the first
// key that still has the prefix. Versioned values start with a one-byte tag
// (kTagValue or kTagTombstone).
//
// Thread safety: pure functions over values.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "meta/status.h"

namespace psm {

using Epoch = uint64_t;
using InodeId = uint64_t;
using SnapshotId = uint64_t;
using BlockNo = uint64_t;

// STORED: on-disk format version written into the superblock (the image's
// layout).
inline constexpr uint32_t kFormatVersion = 1;
// STORED: metadata format, the `volume` key `format`. 2: checksums in
// grouped `csums` records (CsumKey below), which psmfs before it cannot
// read; a volume of format 1 is read as it is and becomes 2 at its first
// read-write mount (docs/on-disk-format.md).
inline constexpr uint64_t kMetaFormat = 2;
inline constexpr uint64_t kMetaFormatLegacyCsums = 1;
// STORED: the root directory's inode number.
inline constexpr InodeId kRootIno = 1;
// The first inode number handed to ordinary files (2..15 reserved).
inline constexpr InodeId kFirstIno = 16;
// STORED: logical chunk size in blocks is fixed per volume at mkfs; default.
inline constexpr uint64_t kDefaultChunkBytes = 1u << 20;
// Name length limit (bytes), as on Linux.
inline constexpr size_t kNameMax = 255;

// Column families. STORED: the names.
enum class Cf : int {
  kDefault = 0,  // unused (RocksDB requires it)
  kInodes,
  kDentries,
  kChunks,
  kXattrs,
  kAlloc,
  kDead,
  kSnapshots,
  kVolume,
  kCsums,  // added with data checksums (docs/integrity.md)
  kCount
};
const char* CfName(Cf cf);
// Versioned column families are those whose keys end in ~epoch.
inline bool IsVersionedCf(Cf cf) {
  return cf == Cf::kInodes || cf == Cf::kDentries || cf == Cf::kChunks || cf == Cf::kXattrs;
}

// STORED: versioned value tags.
inline constexpr char kTagTombstone = 0;
inline constexpr char kTagValue = 1;

// ---- primitive big-endian / little-endian helpers ----
void PutBE64(std::string* dst, uint64_t v);
uint64_t GetBE64(const char* p);
void PutLE64(std::string* dst, uint64_t v);
// The 8 bytes PutLE64 appends, as a value of their own.
inline std::string LE64(uint64_t v) {
  std::string s;
  PutLE64(&s, v);
  return s;
}
void PutLE32(std::string* dst, uint32_t v);
uint64_t GetLE64(const char* p);
uint32_t GetLE32(const char* p);

// ---- versioned keys ----
// prefix + BE(~epoch)
std::string VersionKey(std::string_view prefix, Epoch e);
// The smallest key any version of `prefix` can have (VersionKey at the
// largest epoch): seeking it finds the newest version. Use it rather than
// the bare prefix with a prefix-seek iterator (Store::NewVersionIterator).
inline std::string FirstVersionKey(std::string_view prefix) {
  return VersionKey(prefix, ~Epoch{0});
}
// The epoch at the end of a versioned key.
Epoch KeyEpoch(std::string_view key);
// The key without its 8-byte epoch suffix.
std::string_view KeyPrefix(std::string_view key);

// inodes: BE(ino)
std::string InodePrefix(InodeId ino);
InodeId InodeFromKey(std::string_view key);
// dentries: BE(parent) name 0x00  (names never contain NUL)
std::string DentryDirPrefix(InodeId parent);  // all entries of a directory
std::string DentryPrefix(InodeId parent, std::string_view name);
// Splits a dentry key (with its epoch suffix) into parent and name.
void ParseDentryKey(std::string_view key, InodeId* parent, std::string_view* name);
// chunks: BE(ino) BE(index)
std::string ChunkFilePrefix(InodeId ino);
std::string ChunkPrefix(InodeId ino, uint64_t index);
void ParseChunkKey(std::string_view key, InodeId* ino, uint64_t* index);
// xattrs: BE(ino) name 0x00
std::string XattrFilePrefix(InodeId ino);
std::string XattrPrefix(InodeId ino, std::string_view name);
void ParseXattrKey(std::string_view key, InodeId* ino, std::string_view* name);
// alloc: BE(first block)
std::string AllocKey(BlockNo start);
BlockNo AllocKeyBlock(std::string_view key);
// csums: 0x01 BE(physical block >> kCsumGroupShift) -> a CsumGroup: the
// CRC-32C, as stored in the image, of each block of an aligned group of 16
// that has one (docs/integrity.md). Written by Put (a whole group) or by
// merge operands of the same encoding (some of its blocks; the newer
// operand wins per block, psm.CsumMerge in meta/store.cc). A block without
// a checksum is read unverified.
inline constexpr unsigned kCsumGroupShift = 4;
inline constexpr uint64_t kCsumGroupBlocks = uint64_t{1} << kCsumGroupShift;
std::string CsumKey(BlockNo block);  // the key of block's group
// The first block of the group of a 9-byte CsumKey.
BlockNo CsumKeyBlock(std::string_view key);
inline constexpr char kCsumKeyTag = 0x01;
// Value: LE16 mask (bit i: block first+i has a checksum), then LE32 CRC of
// each block of the mask, in block order.
struct CsumGroup {
  uint16_t mask = 0;
  uint32_t crc[kCsumGroupBlocks] = {};
  void Set(unsigned i, uint32_t c) {
    mask = static_cast<uint16_t>(mask | (1u << i));
    crc[i] = c;
  }
  bool Has(unsigned i) const { return mask >> i & 1; }
};
void EncodeCsumGroup(const CsumGroup& g, std::string* out);
// False when `v` is not a CsumGroup.
bool DecodeCsumGroup(std::string_view v, CsumGroup* g);
// Puts the blocks `newer` has over `*g`.
void OverlayCsumGroup(const CsumGroup& newer, CsumGroup* g);
// Metadata format 1 (volumes written before grouped records): BE(physical
// block) -> LE32 CRC-32C, one record per block. Still read, never written.
std::string LegacyCsumKey(BlockNo block);
BlockNo LegacyCsumKeyBlock(std::string_view key);
// snapshots: BE(id)
std::string SnapshotKey(SnapshotId id);
SnapshotId SnapshotKeyId(std::string_view key);

// dead: BE(death epoch) kind ...
// STORED: dead entry kinds.
enum class DeadKind : uint8_t { kVersion = 1, kRange = 2 };
// A dead version: the full versioned key in column family `cf`.
std::string DeadVersionKey(Epoch death, Cf cf, std::string_view versioned_key);
// A dead physical range starting at `start`.
std::string DeadRangeKey(Epoch death, BlockNo start);
std::string DeadEpochPrefix(Epoch death);
struct DeadKey {
  Epoch death = 0;
  DeadKind kind = DeadKind::kVersion;
  Cf cf = Cf::kDefault;        // kVersion
  std::string versioned_key;   // kVersion
  BlockNo start = 0;           // kRange
};
Status ParseDeadKey(std::string_view key, DeadKey* out);
// dead values: LE64 birth [LE64 length for ranges]
struct DeadValue {
  Epoch birth = 0;
  uint64_t length = 0;  // blocks, for kRange
};
std::string EncodeDeadValue(const DeadValue& v);
Status DecodeDeadValue(std::string_view in, DeadValue* out);

// volume: fixed string keys. STORED.
inline constexpr std::string_view kVolFormat = "format";
inline constexpr std::string_view kVolUuid = "uuid";
inline constexpr std::string_view kVolEpoch = "epoch";
inline constexpr std::string_view kVolNextIno = "next_ino";
inline constexpr std::string_view kVolNextSnap = "next_snap";
inline constexpr std::string_view kVolBlockSize = "block_size";
inline constexpr std::string_view kVolBlockCount = "block_count";
inline constexpr std::string_view kVolChunkBlocks = "chunk_blocks";
inline constexpr std::string_view kVolImagePath = "image_path";
inline constexpr std::string_view kVolOwner = "owner";  // host, pid, since
// Snapshot holds (`psmctl snapshot hold`): "hold/" BE(snapshot id) tag ->
// LE64 time held (ns). STORED.
inline constexpr std::string_view kHoldPrefix = "hold/";
std::string HoldKey(SnapshotId id, std::string_view tag);
std::string HoldSnapshotPrefix(SnapshotId id);
// Splits a hold key; false when it is not one.
bool ParseHoldKey(std::string_view key, SnapshotId* id, std::string_view* tag);
// The stream identity of a received snapshot (FileSystem::Receive):
// "sguid/" BE(snapshot id) -> 32 hex digits, the source snapshot's identity,
// so that an incremental stream finds its base here. Snapshots taken on
// this volume have none (theirs is derived). STORED.
inline constexpr std::string_view kSnapGuidPrefix = "sguid/";
std::string SnapGuidKey(SnapshotId id);
// Volume properties (e.g. the snapshot schedule): "prop/" name -> value. STORED.
inline constexpr std::string_view kPropPrefix = "prop/";
std::string PropertyKey(std::string_view name);
// Exact counters, LE64, changed only by merge operands (LE64 deltas, two's
// complement) written in the same batch as the change they count
// (Txn::AddCounter; the store's merge operator adds them up):
//   used_blocks: blocks covered by `alloc` records (live and dead);
//   files:       inodes whose newest version is not a tombstone (live tree,
//                orphans included).
inline constexpr std::string_view kVolUsedBlocks = "used_blocks";
inline constexpr std::string_view kVolFiles = "files";
// A restore in progress (FileSystem::Restore): LE64 snapshot id. Written and
// synced before the restore's one metadata commit, which deletes it; found
// at mount, the restore is run again (it is idempotent). STORED.
inline constexpr std::string_view kVolRestorePending = "restore_pending";
// Whether any inode may have a `security.capability` xattr: "1" once one
// was ever set on this volume (set, received or restored), "0" when none
// ever was (checked by a scan of `xattrs` the first time a volume is
// mounted without this key). Lets GetXattr answer the kernel's check before
// every write without a lookup (fs_xattr.cc). STORED.
inline constexpr std::string_view kVolCapabilities = "capabilities";
// Data checksums: LE64 1 (every data block written gets a `csums` record,
// verified on every read) or 0 (`psmctl mkfs --checksum=off`). Absent on a
// volume formatted before checksums existed: the first read-write mount
// writes 1 (blocks written from then on are checksummed). STORED.
inline constexpr std::string_view kVolChecksum = "checksum";
// Scrub (fs/core/scrub.cc): the running or last scrub, LE64s: state (1
// running, 2 finished, 3 stopped), cursor, end, checked, unverified,
// damaged, started ns, finished ns, rate in KB/s. A running one resumes at
// mount. STORED.
inline constexpr std::string_view kVolScrub = "scrub";
// scrub_bad/BE64(block): a damaged block the last scrub found, its paths
// separated by newlines. STORED.
inline constexpr std::string_view kScrubBadPrefix = "scrub_bad/";
inline constexpr std::string_view kCapabilityXattr = "security.capability";
// Orphans: inodes unlinked while open; removed at last close or next mount.
std::string OrphanKey(InodeId ino);
inline constexpr std::string_view kOrphanPrefix = "orphan/";

// ---- records ----

// File types, STORED (as the S_IFMT bits of mode).
struct InodeAttr {
  uint32_t mode = 0;  // type and permission bits as in st_mode
  uint32_t uid = 0;
  uint32_t gid = 0;
  uint32_t nlink = 0;
  uint64_t size = 0;    // bytes; for directories the number of entries
  uint64_t rdev = 0;
  int64_t atime_ns = 0, mtime_ns = 0, ctime_ns = 0, btime_ns = 0;
  uint64_t blocks = 0;  // allocated data blocks (volume block size units)
  uint32_t flags = 0;   // reserved
  InodeId parent = 0;   // directories: the parent directory (for "..")
  std::string inline_data;  // symlinks: the target
  // Not stored: the epoch of the record version these attributes were read
  // from or written as (FileSystem::Impl::LoadAttr, the live cache); 0 =
  // unknown. PutAttr of attributes whose version is the live epoch
  // overwrites that version without looking for it. Not compared by ==.
  Epoch version = 0;
  // Not stored either: known that no version older than `version` exists
  // (set only where a read stepped past `version` and found none:
  // RemoveEntry's read of the child). false = unknown. DestroyInode of
  // attributes at the live epoch with this set removes that version
  // without looking for older ones. Not compared by ==.
  bool sole = false;
  bool operator==(const InodeAttr& o) const {
    return mode == o.mode && uid == o.uid && gid == o.gid && nlink == o.nlink &&
           size == o.size && rdev == o.rdev && atime_ns == o.atime_ns &&
           mtime_ns == o.mtime_ns && ctime_ns == o.ctime_ns && btime_ns == o.btime_ns &&
           blocks == o.blocks && flags == o.flags && parent == o.parent &&
           inline_data == o.inline_data;
  }
};
std::string EncodeInode(const InodeAttr& a);
Status DecodeInode(std::string_view in, InodeAttr* out);

struct Dentry {
  InodeId ino = 0;
  uint32_t type = 0;  // S_IFMT bits of the child
  bool operator==(const Dentry&) const = default;
};
std::string EncodeDentry(const Dentry& d);
Status DecodeDentry(std::string_view in, Dentry* out);

// One extent of a chunk: blocks [off, off+len) of the chunk live at
// physical blocks [pblock, pblock+len), born at `birth`.
// STORED: flag bits.
inline constexpr uint32_t kExtentUnwritten = 1;  // allocated, reads as zeros
struct Extent {
  uint32_t off = 0;
  uint32_t len = 0;
  BlockNo pblock = 0;
  Epoch birth = 0;
  uint32_t flags = 0;
  bool operator==(const Extent&) const = default;
};
// Extents sorted by off, non-overlapping.
std::string EncodeExtents(const std::vector<Extent>& ext);
Status DecodeExtents(std::string_view in, std::vector<Extent>* out);

// alloc values: the reverse map of one physical range.
struct AllocRec {
  uint64_t length = 0;  // blocks
  Epoch birth = 0;
  Epoch death = 0;  // 0 = live
  bool operator==(const AllocRec&) const = default;
};
std::string EncodeAlloc(const AllocRec& a);
Status DecodeAlloc(std::string_view in, AllocRec* out);

// snapshots values.
// STORED: states.
enum class SnapState : uint8_t { kActive = 1, kDeleting = 2 };
struct SnapshotRec {
  std::string name;
  Epoch epoch = 0;
  int64_t ctime_ns = 0;
  SnapState state = SnapState::kActive;
  uint32_t holds = 0;  // reserved for `psmctl snapshot hold`
};
std::string EncodeSnapshot(const SnapshotRec& s);
Status DecodeSnapshot(std::string_view in, SnapshotRec* out);

// Versioned value helpers: tag + payload.
std::string Tagged(std::string_view payload);
inline std::string TombstoneValue() { return std::string(1, kTagTombstone); }

}  // namespace psm
