// Offline volume check (psmctl fsck). Recomputes every reference from the
// forward maps (every version of every chunk) and compares it with the
// reverse map (`alloc`) and the dead index; checks the live namespace
// (entries point at inodes, link counts, directory sizes) and every
// snapshot's entries. --repair removes leaked alloc ranges and stale dead
// entries, the only damage that is safe to fix without guessing.
//
// How it walks the metadata: every column family it checks is read from
// start to end in key order, by scan iterators (Store::NewScanIterator:
// read ahead, no block cache fill); there is no lookup or iterator per
// inode. What one family says about another is checked by merging sorted
// streams:
//  * chunks -> block references (Ref), sorted by block, against `alloc`
//    (two passes over it in block order, UnionCursor / AllocFloor);
//  * live chunk and xattr records -> the inodes, read alongside in inode
//    order (InodeScan);
//  * entries -> (child, trees that read the entry) (EntryRef), sorted by
//    child, and each directory's live entry count (DirCount, in key order),
//    against one pass over the inodes.
// The point reads left are per dead-index entry and per dead alloc range
// (what snapshots hold), not per inode.
//
// Memory, for a volume of small files (one extent, one entry each): 36
// bytes per file (Ref) while the blocks are checked, freed before the
// namespace is; then 16 bytes per file (EntryRef) and 16 per directory
// (DirCount). Besides: the key of every version the dead index names
// (old versions held by snapshots), one extent list, RocksDB's cache. At
// 10,000,000 files: ~360 MB at the peak (both vectors reserve from
// RocksDB's key estimate and grow by a quarter, not by doubling).
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <set>
#include <optional>
#include <unordered_map>
#include <unordered_set>

#include "fs/space/allocator.h"
#include "fs/device/block_device.h"
#include "fs/core/filesystem.h"
#include "fs/device/superblock.h"
#include "meta/store.h"
#include "meta/versioned.h"

namespace psm {
namespace {

// Appends to a vector that may hold one element per file: grows by a
// quarter (std::vector doubles: up to twice the memory needed, three times
// while it moves).
template <typename T>
void Append(std::vector<T>* v, const T& x) {
  if (v->size() == v->capacity()) v->reserve(std::max<size_t>(1024, v->capacity() + v->capacity() / 4));
  v->push_back(x);
}

// One extent of one chunk record, read by the trees of span `span`
// (Checker::spans_): the read epochs (the live one and the active
// snapshots', sorted) numbered r0 .. r1-1, the union over the consecutive
// versions of the record that hold this same extent. 36 bytes: the one
// thing fsck keeps per extent (per small file) while it checks blocks.
struct __attribute__((packed, aligned(4))) Ref {
  BlockNo p;
  InodeId ino;
  uint64_t idx;
  uint32_t off;
  uint32_t len;
  uint32_t span;
  // The same logical blocks of one file (file block - physical block);
  // cb: blocks per chunk.
  bool SamePlace(const Ref& o, uint64_t cb) const {
    return ino == o.ino && idx * cb + off - p == o.idx * cb + o.off - o.p;
  }
  // Block order. References equal in all of these are one extent at one
  // place of one file: they never conflict with each other, so their order
  // among themselves changes no finding.
  // (Compared by value: a reference to a member of a packed struct may be
  // misaligned for its type.)
  bool operator<(const Ref& o) const {
    if (p != o.p) return p < o.p;
    if (len != o.len) return len < o.len;
    if (ino != o.ino) return ino < o.ino;
    if (idx != o.idx) return idx < o.idx;
    return off < o.off;
  }
};
static_assert(sizeof(Ref) == 36);

// One extent of one version of the chunk record being read.
struct RecRef {
  BlockNo p;
  uint32_t len;
  uint32_t off;
  Epoch birth;
  uint32_t r0;
  uint32_t r1;
  bool SameExtent(const RecRef& o) const {
    return p == o.p && len == o.len && off == o.off && birth == o.birth;
  }
  bool operator<(const RecRef& o) const {
    return std::tie(p, len, off, birth, r0, r1) < std::tie(o.p, o.len, o.off, o.birth, o.r0, o.r1);
  }
};

// The union of the references' blocks, one range at a time in block order
// (the references sorted by block). A copy walks on from the same place.
struct UnionCursor {
  const std::vector<Ref>* refs;
  size_t next = 0;
  Range cur{};
  bool valid = false;
  explicit UnionCursor(const std::vector<Ref>* r) : refs(r) { Advance(); }
  void Advance() {
    if (next >= refs->size()) {
      valid = false;
      return;
    }
    const Ref& r = (*refs)[next++];
    cur = Range{r.p, r.len};
    while (next < refs->size() && (*refs)[next].p <= cur.end()) {
      const Ref& q = (*refs)[next++];
      cur.len = std::max(cur.end(), q.p + q.len) - cur.start;
    }
    valid = true;
  }
};

// The alloc records in block order, for a walk whose block numbers only
// grow: after Floor(b), the record found (`have`, start `s`, `a` if
// `dec_ok`) is the last one starting at or before b (what SeekForPrev
// finds), and the iterator stands at the first one after b.
struct AllocFloor {
  std::unique_ptr<rocksdb::Iterator> it;
  bool have = false;
  BlockNo s = 0;
  bool dec_ok = false;
  AllocRec a{};
  explicit AllocFloor(Store* st) : it(st->NewScanIterator(Cf::kAlloc)) { it->SeekToFirst(); }
  void Floor(BlockNo b) {
    for (; it->Valid(); it->Next()) {
      const BlockNo ks = AllocKeyBlock(std::string_view(it->key().data(), it->key().size()));
      if (ks > b) break;
      have = true;
      s = ks;
      dec_ok = DecodeAlloc(std::string_view(it->value().data(), it->value().size()), &a).ok();
    }
  }
  // After Floor(b): the start of the first record at or after b (what
  // Seek(b) finds); false when there is none.
  bool Ceil(BlockNo b, BlockNo* out) const {
    if (have && s == b) {
      *out = b;
      return true;
    }
    if (!it->Valid()) return false;
    *out = AllocKeyBlock(std::string_view(it->key().data(), it->key().size()));
    return true;
  }
};

// The inodes column family one inode at a time, in inode order, next to a
// walk of another family in inode order (instead of a lookup per inode).
// Of each inode it keeps its newest value and, for every version (16-byte
// key), its epoch and whether it is a file there: what GetAt(ino, e) would
// find, the newest version at or below e, non-empty and not a tombstone.
class InodeScan {
 public:
  explicit InodeScan(Store* st) : it_(st->NewScanIterator(Cf::kInodes)) { it_->SeekToFirst(); }
  // Reads the next inode; false at the end (then check status()).
  bool Next() {
    versions_.clear();
    while (it_->Valid() && it_->key().size() < 8) it_->Next();
    if (!it_->Valid()) return valid_ = false;
    ino_ = GetBE64(it_->key().data());
    newest_.assign(it_->value().data(), it_->value().size());
    for (; it_->Valid(); it_->Next()) {
      std::string_view k(it_->key().data(), it_->key().size());
      if (k.size() < 8 || GetBE64(k.data()) != ino_) break;
      if (k.size() == 16) {
        rocksdb::Slice v = it_->value();
        versions_.push_back({KeyEpoch(k), !v.empty() && v[0] != kTagTombstone});
      }
    }
    return valid_ = true;
  }
  // Moves on to inode `ino` (never back); true when it has records.
  bool AdvanceTo(InodeId ino) {
    if (!started_) {
      started_ = true;
      Next();
    }
    while (valid_ && ino_ < ino) Next();
    return valid_ && ino_ == ino;
  }
  bool ExistsAt(Epoch e) const {
    for (const auto& v : versions_) {
      if (v.epoch <= e) return v.exists;
    }
    return false;
  }
  InodeId ino() const { return ino_; }
  std::string_view newest() const { return newest_; }
  Status status() const { return Status::FromRocks(it_->status()); }

 private:
  struct Version {
    Epoch epoch;
    bool exists;
  };
  std::unique_ptr<rocksdb::Iterator> it_;
  bool started_ = false;
  bool valid_ = false;
  InodeId ino_ = 0;
  std::string newest_;
  std::vector<Version> versions_;  // newest first
};

// A live directory entry's child, or an entry version some tree reads: the
// trees (distinct read epochs, sorted) t0 .. t1-1 read it; kLive: it is
// the newest version of its name. 16 bytes: what fsck keeps per entry
// (per small file) while it checks the namespace.
struct EntryRef {
  InodeId ino;
  uint32_t t0;
  uint32_t t1;  // | kLive
  static constexpr uint32_t kLive = 1u << 31;
};
static_assert(sizeof(EntryRef) == 16);

// Live entries of one directory (its key's parent).
struct DirCount {
  InodeId ino;
  uint32_t entries;
  uint32_t subdirs;
};

class Checker {
 public:
  Checker(Store* st, const Superblock& sb, std::string* report)
      : st_(st), sb_(sb), report_(report) {}

  void Problem(const std::string& s) {
    ++problems_;
    if (problems_ <= 1000) report_->append(s + "\n");
  }
  uint64_t problems() const { return problems_; }

  Status LoadCatalog() {
    std::string v;
    PSM_RETURN_IF_ERROR(st_->Get(Cf::kVolume, kVolEpoch, &v));
    live_ = GetLE64(v.data());
    auto it = st_->NewIterator(Cf::kSnapshots);
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      SnapshotRec r;
      Status s = DecodeSnapshot(std::string_view(it->value().data(), it->value().size()), &r);
      if (!s.ok()) {
        Problem("snapshot record unreadable: " + s.ToString());
        continue;
      }
      if (r.epoch >= live_) Problem("snapshot '" + r.name + "' has an epoch >= the live epoch");
      if (r.state == SnapState::kActive) present_.insert(r.epoch);
      if (r.state == SnapState::kDeleting) deleting_++;
      snaps_.push_back(r);
    }
    return Status::FromRocks(it->status());
  }

  bool AnyPresentIn(Epoch lo, Epoch hi) const {
    auto it = present_.lower_bound(lo);
    return it != present_.end() && *it < hi;
  }

  Status CheckExtents() {
    // Epochs trees are read at: a version from epoch `from` until the next
    // newer one is read by those in [from, until).
    std::vector<Epoch> reads(present_.begin(), present_.end());
    reads.push_back(live_);
    std::sort(reads.begin(), reads.end());
    auto read_index = [&](Epoch e) {
      return static_cast<uint32_t>(std::lower_bound(reads.begin(), reads.end(), e) - reads.begin());
    };
    // The extents of every version of one chunk record (consecutive keys):
    // one extent in consecutive versions is one reference read by the union
    // of their trees (the ranges are adjacent). Only versions of one record
    // can hold the same extent (file, chunk, offset, block, length, birth).
    std::vector<RecRef> rec;
    InodeId rec_ino = 0;
    uint64_t rec_idx = 0;
    auto flush = [&] {
      std::sort(rec.begin(), rec.end());
      size_t w = 0;
      for (size_t i = 0; i < rec.size(); ++i) {
        if (w > 0 && rec[w - 1].SameExtent(rec[i]) && rec[i].r0 <= rec[w - 1].r1) {
          rec[w - 1].r1 = std::max(rec[w - 1].r1, rec[i].r1);
          continue;
        }
        rec[w++] = rec[i];
      }
      for (size_t i = 0; i < w; ++i) {
        Append(&refs_, Ref{rec[i].p, rec_ino, rec_idx, rec[i].off, rec[i].len,
                           Span(rec[i].r0, rec[i].r1)});
      }
      rec.clear();
    };
    // Small files: one reference per chunk record (RocksDB's estimate).
    refs_.reserve(st_->EstimateKeys(Cf::kChunks) * 9 / 8);
    auto it = st_->NewScanIterator(Cf::kChunks);
    std::string prev_prefix;
    Epoch newer = UINT64_MAX;
    std::vector<Extent> ext;
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      std::string_view k(it->key().data(), it->key().size());
      if (k.size() != 24) {
        Problem("chunk key of bad size");
        continue;
      }
      InodeId ino;
      uint64_t idx;
      ParseChunkKey(k, &ino, &idx);
      // Versions sort newest first: this one is read until the one before.
      const Epoch from = KeyEpoch(k);
      Epoch until = UINT64_MAX;
      if (KeyPrefix(k) == prev_prefix) {
        until = newer;
      } else {
        flush();
        prev_prefix.assign(KeyPrefix(k));
        rec_ino = ino;
        rec_idx = idx;
      }
      newer = from;
      rocksdb::Slice v = it->value();
      if (v.empty() || v[0] == kTagTombstone) continue;
      if (!DecodeExtents(std::string_view(v.data() + 1, v.size() - 1), &ext).ok()) {
        Problem("inode " + std::to_string(ino) + " chunk " + std::to_string(idx) + ": unreadable extent list");
        continue;
      }
      for (const Extent& x : ext) {
        if (x.pblock < 1 || x.pblock + x.len > sb_.block_count || x.len == 0) {
          Problem("inode " + std::to_string(ino) + " chunk " + std::to_string(idx) +
                  ": extent outside the image (block " + std::to_string(x.pblock) + ")");
          continue;
        }
        if (x.off + x.len > sb_.chunk_blocks) {
          Problem("inode " + std::to_string(ino) + ": extent beyond its chunk");
        }
        rec.push_back(RecRef{x.pblock, x.len, x.off, x.birth, read_index(from),
                             until == UINT64_MAX ? static_cast<uint32_t>(reads.size())
                                                 : read_index(until)});
      }
    }
    PSM_RETURN_IF_ERROR(Status::FromRocks(it->status()));
    flush();
    std::sort(refs_.begin(), refs_.end());
    // References to one physical block must be of one file. In one file
    // they are the same logical block, or, when a collapse/insert range
    // moved the block, read by no common tree: no tree maps a block twice.
    std::vector<const Ref*> active;  // references reaching past the current block
    for (const Ref& r : refs_) {
      std::erase_if(active, [&](const Ref* a) { return a->p + a->len <= r.p; });
      const auto& rs = spans_[r.span];
      for (const Ref* a : active) {
        const auto& as = spans_[a->span];
        bool ok = a->ino == r.ino &&
                  (a->SamePlace(r, sb_.chunk_blocks) ||
                   std::max(as.first, rs.first) >= std::min(as.second, rs.second));
        if (!ok) {
          Problem("block " + std::to_string(r.p) + " is claimed twice (inode " +
                  std::to_string(a->ino) + " chunk " + std::to_string(a->idx) + " and inode " +
                  std::to_string(r.ino) + " chunk " + std::to_string(r.idx) + ")");
          break;
        }
      }
      active.push_back(&r);
    }
    return Status::Ok();
  }

  // The id of read-index range [r0, r1).
  uint32_t Span(uint32_t r0, uint32_t r1) {
    const uint64_t key = (uint64_t{r0} << 32) | r1;
    if (!spans_.empty() && key == last_span_key_) return last_span_;
    auto [it, fresh] = span_ids_.try_emplace(key, static_cast<uint32_t>(spans_.size()));
    if (fresh) spans_.emplace_back(r0, r1);
    last_span_key_ = key;
    last_span_ = it->second;
    return it->second;
  }

  Status CheckAlloc(bool repair, Txn* txn) {
    // The union of the references (UnionCursor), against the alloc records:
    // both in block order, so each is walked once.
    UnionCursor ui(&refs_);
    auto it = st_->NewScanIterator(Cf::kAlloc);
    BlockNo prev_end = 0;
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      BlockNo s = AllocKeyBlock(std::string_view(it->key().data(), it->key().size()));
      AllocRec a;
      if (!DecodeAlloc(std::string_view(it->value().data(), it->value().size()), &a).ok()) {
        Problem("alloc record at block " + std::to_string(s) + " unreadable");
        continue;
      }
      alloc_blocks_ += a.length;
      if (s < 1 || s + a.length > sb_.block_count || a.length == 0) {
        Problem("alloc range at block " + std::to_string(s) + " lies outside the image");
      }
      if (s < prev_end) Problem("alloc ranges overlap at block " + std::to_string(s));
      prev_end = s + a.length;
      if (a.death) {
        std::string dv;
        if (!st_->Get(Cf::kDead, DeadRangeKey(a.death, s), &dv).ok()) {
          Problem("dead alloc range at block " + std::to_string(s) + " has no dead-index entry");
        }
      }
      // Every block of the range must be referenced.
      BlockNo b = s;
      while (ui.valid && ui.cur.end() <= b) ui.Advance();
      UnionCursor uj = ui;
      while (b < s + a.length) {
        if (!uj.valid || uj.cur.start >= s + a.length) {
          Leak(s, a, b, s + a.length, repair, txn);
          break;
        }
        if (uj.cur.start > b) {
          Leak(s, a, b, uj.cur.start, repair, txn);
        }
        b = std::max(b, uj.cur.end());
        uj.Advance();
      }
    }
    PSM_RETURN_IF_ERROR(Status::FromRocks(it->status()));
    // Every referenced block must be allocated.
    AllocFloor fl(st_);
    for (UnionCursor u(&refs_); u.valid; u.Advance()) {
      const BlockNo end = u.cur.end();
      BlockNo b = u.cur.start;
      while (b < end) {
        fl.Floor(b);
        bool ok = false;
        if (fl.have && fl.dec_ok && fl.s + fl.a.length > b) {
          ok = true;
          b = std::min(end, fl.s + fl.a.length);
        }
        if (!ok) {
          Problem("block " + std::to_string(b) + " is referenced but not allocated");
          // Skip to the next allocated range.
          BlockNo next;
          b = fl.Ceil(b, &next) ? std::min(end, std::max(b + 1, next)) : end;
        }
      }
    }
    PSM_RETURN_IF_ERROR(Status::FromRocks(fl.it->status()));
    // The references are not needed any more: the namespace check that
    // follows keeps its own.
    std::vector<Ref>().swap(refs_);
    return Status::Ok();
  }

  void Leak(BlockNo s, const AllocRec& a, BlockNo lo, BlockNo hi, bool repair, Txn* txn) {
    Problem("blocks " + std::to_string(lo) + ".." + std::to_string(hi - 1) +
            " are allocated but referenced by nothing (leaked)" + (repair ? " [repaired]" : ""));
    if (!repair) return;
    // Trim the record: keep [s, lo) and [hi, end).
    txn->Delete(Cf::kAlloc, AllocKey(s));
    removed_blocks_ += hi - lo;
    leak_removed_[s] += hi - lo;
    if (lo > s) txn->Put(Cf::kAlloc, AllocKey(s), EncodeAlloc(AllocRec{lo - s, a.birth, a.death}));
    if (hi < s + a.length) {
      txn->Put(Cf::kAlloc, AllocKey(hi), EncodeAlloc(AllocRec{s + a.length - hi, a.birth, a.death}));
    }
    ++repaired_;
  }

  Status CheckDead(bool repair, Txn* txn) {
    auto it = st_->NewScanIterator(Cf::kDead);
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      std::string_view k(it->key().data(), it->key().size());
      DeadKey dk;
      DeadValue dv;
      if (!ParseDeadKey(k, &dk).ok() ||
          !DecodeDeadValue(std::string_view(it->value().data(), it->value().size()), &dv).ok()) {
        Problem("unreadable dead-index entry");
        continue;
      }
      if (dk.death > live_) Problem("dead-index entry dies after the live epoch");
      if (dv.birth >= dk.death) Problem("dead-index entry born after it died");
      bool visible = AnyPresentIn(dv.birth, dk.death);
      bool dropped = false;  // repaired away below
      if (dk.kind == DeadKind::kVersion) {
        dead_versions_.insert(DeadVersionId(dk.cf, dk.versioned_key));
        std::string val;
        if (!st_->Get(dk.cf, dk.versioned_key, &val).ok() && visible) {
          Problem("dead-index entry names a missing record version");
        }
      } else {
        // The range must be one alloc record that died at the same epoch.
        std::string av;
        AllocRec ar;
        bool match = st_->Get(Cf::kAlloc, AllocKey(dk.start), &av).ok() &&
                     DecodeAlloc(av, &ar).ok() && ar.death == dk.death &&
                     ar.length == dv.length && ar.birth == dv.birth;
        if (!match) {
          Problem("dead-index entry for blocks " + std::to_string(dk.start) + ".." +
                  std::to_string(dk.start + dv.length - 1) + " (death epoch " +
                  std::to_string(dk.death) + ") has no matching dead alloc record" +
                  (repair ? " [repaired: entry removed]" : ""));
          if (repair) {
            txn->Delete(Cf::kDead, k);
            ++repaired_;
            dropped = true;
          }
        }
      }
      if (!dropped && !visible && deleting_ == 0) {
        Problem("stale dead-index entry (death epoch " + std::to_string(dk.death) +
                ", no snapshot can see it)" + (repair ? " [repaired]" : ""));
        if (repair) {
          if (dk.kind == DeadKind::kVersion) {
            (void)DropVersion(txn, dk.cf, dk.versioned_key, nullptr);
          } else {
            std::string av;
            AllocRec ar;
            if (st_->Get(Cf::kAlloc, AllocKey(dk.start), &av).ok() && DecodeAlloc(av, &ar).ok()) {
              // Blocks the leak repair already took out are not counted twice.
              removed_blocks_ += ar.length - std::min(ar.length, leak_removed_[dk.start]);
            }
            txn->Delete(Cf::kAlloc, AllocKey(dk.start));
          }
          txn->Delete(Cf::kDead, k);
          ++repaired_;
        }
      }
    }
    return Status::FromRocks(it->status());
  }

  // Every version older than a record's newest is kept only for a snapshot,
  // so a dead-index entry must name it: otherwise snapshot deletion never
  // removes it. One that no snapshot can see is leaked (--repair drops it).
  Status CheckVersions(bool repair, Txn* txn) {
    for (Cf cf : {Cf::kInodes, Cf::kDentries, Cf::kChunks, Cf::kXattrs}) {
      auto it = st_->NewScanIterator(cf);
      // Chunks and xattrs sort by inode: the inodes are read alongside.
      std::optional<InodeScan> inodes;
      if (cf == Cf::kChunks || cf == Cf::kXattrs) inodes.emplace(st_);
      std::string prev_prefix;
      Epoch newer = 0;
      InodeId checked_ino = 0;
      bool checked_live = false;
      for (it->SeekToFirst(); it->Valid(); it->Next()) {
        std::string_view k(it->key().data(), it->key().size());
        if (k.size() < 8) {
          Problem(std::string("short key in ") + CfName(cf));
          continue;
        }
        std::string_view prefix = KeyPrefix(k);
        const Epoch e = KeyEpoch(k);
        if (e > live_) {
          Problem(std::string(CfName(cf)) + " version at epoch " + std::to_string(e) +
                  " is newer than the live epoch");
        }
        if (prefix != prev_prefix) {  // the newest version of this record
          prev_prefix.assign(prefix);
          newer = e;
          // A live chunk or xattr belongs to a live inode: one left behind
          // by a destroyed inode would hold its blocks for ever.
          if (inodes && !it->value().empty() && it->value()[0] == kTagValue) {
            const InodeId ino = GetBE64(k.data());
            if (ino != checked_ino) {
              checked_ino = ino;
              checked_live = inodes->AdvanceTo(ino) && inodes->ExistsAt(live_);
            }
            if (!checked_live) {
              Problem(std::string("live ") + CfName(cf) + " record of inode " +
                      std::to_string(ino) + ", which does not exist");
            }
          }
          continue;
        }
        const Epoch until = newer;  // this version's life ends at the latest here
        newer = e;
        ++old_versions_;
        if (dead_versions_.count(DeadVersionId(cf, k))) {
          continue;
        }
        if (AnyPresentIn(e, until)) {
          Problem(std::string(CfName(cf)) + " version at epoch " + std::to_string(e) +
                  " is seen by a snapshot but has no dead-index entry (it would never be "
                  "reclaimed)");
        } else if (deleting_ == 0) {
          Problem(std::string(CfName(cf)) + " version at epoch " + std::to_string(e) +
                  " is seen by nothing and has no dead-index entry (leaked)" +
                  (repair ? " [repaired]" : ""));
          if (repair) {
            (void)DropVersion(txn, cf, k, nullptr);
            ++repaired_;
          }
        }
      }
      PSM_RETURN_IF_ERROR(Status::FromRocks(it->status()));
      if (inodes) PSM_RETURN_IF_ERROR(inodes->status());
    }
    return Status::Ok();
  }

  static std::string DeadVersionId(Cf cf, std::string_view versioned_key) {
    std::string id(1, static_cast<char>(cf));
    id.append(versioned_key);
    return id;
  }

  // The exact counters kept with every commit (keys.h) equal what is there.
  Status CheckCounters(bool repair, Txn* txn) {
    struct C {
      std::string_view key;
      const char* what;
      uint64_t now;    // what the volume holds
      uint64_t after;  // what it holds once this repair is applied
    };
    for (const C& c : {C{kVolUsedBlocks, "used-blocks", alloc_blocks_, alloc_blocks_ - removed_blocks_},
                       C{kVolFiles, "files", live_inodes_, live_inodes_}}) {
      uint64_t have = 0;
      Status s = GetCounter(st_, c.key, &have);
      if (!s.ok() && !s.Is(Code::kNotFound)) return s;
      const bool ok = s.ok() && have == c.now;
      if (!ok) {
        Problem(std::string(c.what) + " counter is " +
                (s.ok() ? std::to_string(have) : std::string("missing")) + ", the volume holds " +
                std::to_string(c.now) + (repair ? " [repaired]" : ""));
      }
      if (repair && (!ok || have != c.after)) {
        std::string v;
        PutLE64(&v, c.after);
        txn->Put(Cf::kVolume, c.key, v);
        if (!ok) ++repaired_;
      }
    }
    return Status::Ok();
  }

  // Directory entries point at inodes; link counts and sizes (live tree);
  // entries point at inodes in every snapshot. One pass over the entries
  // collects what each needs of its child (EntryRef, sorted by inode then)
  // and each directory's live entries (DirCount, in key order: by
  // directory); one pass over the inodes checks both against them. The
  // entries' findings come first, in key order, as an entry at a time
  // would give them: a second pass over the entries, only when an entry
  // named a missing inode.
  Status CheckNamespace() {
    std::vector<Epoch> epochs(present_.begin(), present_.end());
    epochs.push_back(live_);
    std::vector<Epoch> trees(epochs);  // distinct, sorted
    std::sort(trees.begin(), trees.end());
    trees.erase(std::unique(trees.begin(), trees.end()), trees.end());
    auto tree_index = [&](Epoch e) {
      return static_cast<uint32_t>(std::lower_bound(trees.begin(), trees.end(), e) - trees.begin());
    };
    std::vector<EntryRef> refs;
    refs.reserve(st_->EstimateKeys(Cf::kDentries) * 9 / 8);
    std::vector<DirCount> dirs;
    uint64_t unreadable = 0;
    // Calls fn(key, until, dentry) for every readable entry version,
    // counting the unreadable ones.
    auto walk = [&](auto&& fn, auto&& bad) -> Status {
      auto it = st_->NewScanIterator(Cf::kDentries);
      std::string prev_prefix;
      Epoch newer = ~Epoch{0};  // epoch of the next newer version of the same name
      for (it->SeekToFirst(); it->Valid(); it->Next()) {
        std::string_view k(it->key().data(), it->key().size());
        if (k.size() < 8) continue;  // reported by CheckVersions
        std::string_view prefix = KeyPrefix(k);
        Epoch e = KeyEpoch(k);
        if (prefix != prev_prefix) {
          newer = ~Epoch{0};
          prev_prefix.assign(prefix);
        }
        rocksdb::Slice v = it->value();
        Epoch until = newer;
        newer = e;
        if (v.empty() || v[0] == kTagTombstone) continue;
        Dentry d;
        if (!DecodeDentry(std::string_view(v.data() + 1, v.size() - 1), &d).ok()) {
          bad();
          continue;
        }
        fn(k, e, until, d);
      }
      return Status::FromRocks(it->status());
    };
    PSM_RETURN_IF_ERROR(walk(
        [&](std::string_view k, Epoch e, Epoch until, const Dentry& d) {
          const bool live = until == ~Epoch{0};
          const uint32_t t0 = tree_index(e), t1 = tree_index(until);  // e <= tree < until
          if (t0 < t1 || live) Append(&refs, EntryRef{d.ino, t0, t1 | (live ? EntryRef::kLive : 0)});
          if (live) {
            const InodeId parent = GetBE64(k.data());
            if (dirs.empty() || dirs.back().ino != parent) dirs.push_back(DirCount{parent, 0, 0});
            dirs.back().entries++;
            if (S_ISDIR(d.type)) dirs.back().subdirs++;
          }
        },
        [&] { ++unreadable; }));
    std::sort(refs.begin(), refs.end(),
              [](const EntryRef& a, const EntryRef& b) { return a.ino < b.ino; });
    std::vector<InodeId> orphans;
    {
      auto oi = st_->NewIterator(Cf::kVolume);
      (void)ForEachPrefix(oi.get(), kOrphanPrefix, [&](std::string_view k, std::string_view) {
        orphans.push_back(GetBE64(k.data() + kOrphanPrefix.size()));
        return true;
      });
      std::sort(orphans.begin(), orphans.end());
    }
    // (inode, tree) pairs some entry needs and that do not exist.
    std::vector<std::pair<InodeId, uint32_t>> missing;
    // The inodes' findings, reported after the entries'.
    std::vector<std::string> later;
    uint64_t later_more = 0;
    auto defer = [&](std::string s) {
      if (later.size() < 1000) {
        later.push_back(std::move(s));
      } else {
        ++later_more;  // past the report's first 1000 in any case
      }
    };
    size_t j = 0;
    // The entries naming `ino` (inodes: its records, or null): the trees it
    // must exist in; returns how many live entries name it.
    auto match = [&](InodeId ino, const InodeScan* inodes) {
      uint32_t links = 0;
      for (; j < refs.size() && refs[j].ino == ino; ++j) {
        const uint32_t t1 = refs[j].t1 & ~EntryRef::kLive;
        if (refs[j].t1 & EntryRef::kLive) ++links;
        for (uint32_t t = refs[j].t0; t < t1; ++t) {
          if (inodes == nullptr || !inodes->ExistsAt(trees[t])) missing.emplace_back(ino, t);
        }
      }
      return links;
    };
    InodeScan ii(st_);
    size_t dj = 0;
    while (ii.Next()) {
      const InodeId ino = ii.ino();
      while (j < refs.size() && refs[j].ino < ino) match(refs[j].ino, nullptr);
      const uint32_t links = match(ino, &ii);
      // Live inodes: their newest version.
      std::string_view v = ii.newest();
      if (v.empty() || v[0] == kTagTombstone) continue;
      InodeAttr a;
      if (!DecodeInode(v.substr(1), &a).ok()) {
        defer("inode " + std::to_string(ino) + " unreadable");
        continue;
      }
      live_inodes_++;
      while (dj < dirs.size() && dirs[dj].ino < ino) ++dj;
      const bool has_dir = dj < dirs.size() && dirs[dj].ino == ino;
      const uint32_t entries = has_dir ? dirs[dj].entries : 0;
      const uint32_t subdirs = has_dir ? dirs[dj].subdirs : 0;
      if (S_ISDIR(a.mode)) {
        uint32_t want = 2 + subdirs;
        if (a.nlink != want) {
          defer("directory inode " + std::to_string(ino) + " has link count " +
                std::to_string(a.nlink) + ", expected " + std::to_string(want));
        }
        if (a.size != entries) {
          defer("directory inode " + std::to_string(ino) + " records " + std::to_string(a.size) +
                " entries, has " + std::to_string(entries));
        }
        if (ino != kRootIno && links != 1) {
          defer("directory inode " + std::to_string(ino) + " has " + std::to_string(links) +
                " entries naming it");
        }
      } else {
        if (a.nlink != links &&
            !(a.nlink == 0 && std::binary_search(orphans.begin(), orphans.end(), ino))) {
          defer("inode " + std::to_string(ino) + " has link count " + std::to_string(a.nlink) +
                ", but " + std::to_string(links) + " directory entries");
        }
      }
    }
    PSM_RETURN_IF_ERROR(ii.status());
    while (j < refs.size()) match(refs[j].ino, nullptr);
    std::vector<EntryRef>().swap(refs);
    // The entries' findings.
    if (missing.empty()) {
      for (uint64_t i = 0; i < unreadable; ++i) Problem("unreadable directory entry");
    } else {
      std::sort(missing.begin(), missing.end());
      missing.erase(std::unique(missing.begin(), missing.end()), missing.end());
      PSM_RETURN_IF_ERROR(walk(
          [&](std::string_view k, Epoch e, Epoch until, const Dentry& d) {
            InodeId parent;
            std::string_view name;
            ParseDentryKey(k, &parent, &name);
            for (Epoch ep : epochs) {
              if (ep < e || ep >= until) continue;
              if (std::binary_search(missing.begin(), missing.end(),
                                     std::make_pair(d.ino, tree_index(ep)))) {
                Problem("entry '" + std::string(name) + "' in directory " +
                        std::to_string(parent) + " points at missing inode " +
                        std::to_string(d.ino) +
                        (ep == live_ ? " (live tree)"
                                     : " (snapshot epoch " + std::to_string(ep) + ")"));
              }
            }
          },
          [&] { Problem("unreadable directory entry"); }));
    }
    for (std::string& s : later) Problem(s);
    problems_ += later_more;
    return Status::Ok();
  }

  uint64_t repaired() const { return repaired_; }
  uint64_t alloc_blocks() const { return alloc_blocks_; }
  uint64_t live_inodes() const { return live_inodes_; }
  uint64_t old_versions() const { return old_versions_; }
  size_t snapshots() const { return snaps_.size(); }

 private:
  Store* st_;
  Superblock sb_;
  std::string* report_;
  uint64_t problems_ = 0;
  uint64_t repaired_ = 0;
  uint64_t alloc_blocks_ = 0;
  uint64_t live_inodes_ = 0;
  uint64_t removed_blocks_ = 0;  // alloc blocks the repair removes
  std::map<BlockNo, uint64_t> leak_removed_;  // record start -> blocks the leak repair removed
  uint64_t old_versions_ = 0;
  std::unordered_set<std::string> dead_versions_;  // cf byte + versioned key named by dead entries
  size_t deleting_ = 0;
  Epoch live_ = 0;
  std::set<Epoch> present_;
  std::vector<SnapshotRec> snaps_;
  std::vector<Ref> refs_;  // sorted by block after CheckExtents; freed by CheckAlloc
  std::vector<std::pair<uint32_t, uint32_t>> spans_;  // Ref::span -> read-index range
  std::unordered_map<uint64_t, uint32_t> span_ids_;
  uint64_t last_span_key_ = 0;
  uint32_t last_span_ = 0;
};

}  // namespace

Result<uint64_t> Fsck(const std::string& dir, const FsckOptions& opts, std::string* report) {
  namespace fsys = std::filesystem;
  std::error_code ec;
  std::string img = dir + "/image";
  std::unique_ptr<BlockDevice> own_dev;
  BlockDevice* dev = opts.device.get();
  if (dev == nullptr) {
    if (!fsys::exists(img, ec)) return Status::NotFound("no volume at " + dir + " (no image)");
    PSM_ASSIGN_OR_RETURN(own_dev, OpenPosixDevice(img, false, 0));
    dev = own_dev.get();
  }
  Superblock sb;
  {
    Status s = ReadSuperblock(dev, &sb);
    if (!s.ok()) return Status::Corruption(dir + ": " + s.message());
  }
  // Refuse while mounted: the mount lock is held by the owner.
  std::string lp = dir + "/psmfs." + sb.uuid + ".mount.lock";
  int lfd = ::open(lp.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (lfd >= 0 && flock(lfd, LOCK_EX | LOCK_NB) != 0) {
    ::close(lfd);
    return Status::Busy("volume " + dir + " is mounted; unmount it before fsck");
  }
  StoreOptions so;
  so.read_only = !opts.repair;
  auto store_r = Store::Open(dir + "/meta", so);
  if (!store_r.ok()) {
    if (lfd >= 0) ::close(lfd);
    return Status::Corruption(dir + ": " + store_r.status().message());
  }
  auto store = std::move(store_r).value();
  Checker c(store.get(), sb, report);
  Txn txn(store.get());
  Status s = c.LoadCatalog();
  if (s.ok()) s = c.CheckExtents();
  if (s.ok()) s = c.CheckAlloc(opts.repair, &txn);
  if (s.ok()) s = c.CheckDead(opts.repair, &txn);
  if (s.ok()) s = c.CheckVersions(opts.repair, &txn);
  if (s.ok()) s = c.CheckNamespace();
  if (s.ok()) s = c.CheckCounters(opts.repair, &txn);
  if (s.ok() && opts.repair && c.repaired()) {
    s = txn.Commit();
    if (s.ok()) s = store->FlushAll();
  }
  store.reset();
  if (lfd >= 0) ::close(lfd);
  PSM_RETURN_IF_ERROR(s);
  report->append("checked: " + std::to_string(c.live_inodes()) + " live inodes, " +
                 std::to_string(c.snapshots()) + " snapshots, " +
                 std::to_string(c.old_versions()) + " snapshot-held record versions, " +
                 std::to_string(c.alloc_blocks()) + " allocated blocks of " +
                 std::to_string(sb.block_count - 1) + "\n");
  if (opts.repair && c.repaired()) {
    report->append("repaired: " + std::to_string(c.repaired()) + " problems\n");
  }
  return c.problems();
}

}  // namespace psm
