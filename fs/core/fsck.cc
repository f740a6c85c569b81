// Offline volume check (psmctl fsck). Recomputes every reference from the
// forward maps (every version of every chunk) and compares it with the
// reverse map (`alloc`) and the dead index; checks the live namespace
// (entries point at inodes, link counts, directory sizes) and every
// snapshot's entries. --repair removes leaked alloc ranges and stale dead
// entries, the only damage that is safe to fix without guessing.
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <set>
#include <unordered_map>

#include "fs/space/allocator.h"
#include "fs/device/block_device.h"
#include "fs/core/filesystem.h"
#include "fs/device/superblock.h"
#include "meta/store.h"
#include "meta/versioned.h"

namespace psm {
namespace {

struct Ref {
  BlockNo p;
  uint64_t len;
  InodeId ino;
  uint64_t idx;
  uint32_t off;
  Epoch birth;
  // The trees that read the chunk version holding it: read epochs (the
  // live one and the active snapshots', sorted) number r0 .. r1-1.
  uint32_t r0;
  uint32_t r1;
  bool SameExtent(const Ref& o) const {
    return p == o.p && len == o.len && ino == o.ino && idx == o.idx && off == o.off &&
           birth == o.birth;
  }
  // The same logical blocks of one file (file block - physical block);
  // cb: blocks per chunk.
  bool SamePlace(const Ref& o, uint64_t cb) const {
    return ino == o.ino && idx * cb + off - p == o.idx * cb + o.off - o.p;
  }
  bool operator<(const Ref& o) const {
    return std::tie(p, len, ino, idx, off, birth, r0, r1) <
           std::tie(o.p, o.len, o.ino, o.idx, o.off, o.birth, o.r0, o.r1);
  }
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
    auto it = st_->NewIterator(Cf::kChunks);
    std::string prev_prefix;
    Epoch newer = UINT64_MAX;
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
        prev_prefix.assign(KeyPrefix(k));
      }
      newer = from;
      rocksdb::Slice v = it->value();
      if (v.empty() || v[0] == kTagTombstone) continue;
      std::vector<Extent> ext;
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
        refs_.push_back(Ref{x.pblock, x.len, ino, idx, x.off, x.birth, read_index(from),
                            until == UINT64_MAX ? static_cast<uint32_t>(reads.size())
                                                : read_index(until)});
      }
    }
    PSM_RETURN_IF_ERROR(Status::FromRocks(it->status()));
    // One extent in consecutive versions of its chunk: one reference read
    // by the union of their trees (the ranges are adjacent).
    std::sort(refs_.begin(), refs_.end());
    size_t w = 0;
    for (size_t i = 0; i < refs_.size(); ++i) {
      if (w > 0 && refs_[w - 1].SameExtent(refs_[i]) && refs_[i].r0 <= refs_[w - 1].r1) {
        refs_[w - 1].r1 = std::max(refs_[w - 1].r1, refs_[i].r1);
        continue;
      }
      refs_[w++] = refs_[i];
    }
    refs_.resize(w);
    // References to one physical block must be of one file. In one file
    // they are the same logical block, or, when a collapse/insert range
    // moved the block, read by no common tree: no tree maps a block twice.
    std::vector<const Ref*> active;  // references reaching past the current block
    for (const Ref& r : refs_) {
      std::erase_if(active, [&](const Ref* a) { return a->p + a->len <= r.p; });
      for (const Ref* a : active) {
        bool ok = a->ino == r.ino &&
                  (a->SamePlace(r, sb_.chunk_blocks) || std::max(a->r0, r.r0) >= std::min(a->r1, r.r1));
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

  Status CheckAlloc(bool repair, Txn* txn) {
    // Union of references as intervals.
    std::vector<Range> used;
    for (const Ref& r : refs_) {
      if (!used.empty() && r.p <= used.back().end()) {
        used.back().len = std::max(used.back().end(), r.p + r.len) - used.back().start;
      } else {
        used.push_back(Range{r.p, r.len});
      }
    }
    auto it = st_->NewIterator(Cf::kAlloc);
    BlockNo prev_end = 0;
    size_t ui = 0;
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
      while (ui < used.size() && used[ui].end() <= b) ++ui;
      size_t uj = ui;
      while (b < s + a.length) {
        if (uj >= used.size() || used[uj].start >= s + a.length) {
          Leak(s, a, b, s + a.length, repair, txn);
          break;
        }
        if (used[uj].start > b) {
          Leak(s, a, b, used[uj].start, repair, txn);
        }
        b = std::max(b, used[uj].end());
        ++uj;
      }
    }
    PSM_RETURN_IF_ERROR(Status::FromRocks(it->status()));
    // Every referenced block must be allocated.
    auto it2 = st_->NewIterator(Cf::kAlloc);
    for (const Range& u : used) {
      BlockNo b = u.start;
      while (b < u.end()) {
        it2->SeekForPrev(AllocKey(b));
        bool ok = false;
        if (it2->Valid()) {
          BlockNo s = AllocKeyBlock(std::string_view(it2->key().data(), it2->key().size()));
          AllocRec a;
          if (DecodeAlloc(std::string_view(it2->value().data(), it2->value().size()), &a).ok() &&
              s + a.length > b) {
            ok = true;
            b = std::min(u.end(), s + a.length);
          }
        }
        if (!ok) {
          Problem("block " + std::to_string(b) + " is referenced but not allocated");
          // Skip to the next allocated range.
          it2->Seek(AllocKey(b));
          b = it2->Valid() ? std::min(u.end(), std::max(b + 1, AllocKeyBlock(std::string_view(
                                                                 it2->key().data(), it2->key().size()))))
                           : u.end();
        }
      }
    }
    return Status::FromRocks(it2->status());
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
    auto it = st_->NewIterator(Cf::kDead);
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
        dead_versions_.insert(std::to_string(static_cast<int>(dk.cf)) + "/" + dk.versioned_key);
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
      auto it = st_->NewIterator(cf);
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
          if ((cf == Cf::kChunks || cf == Cf::kXattrs) && !it->value().empty() &&
              it->value()[0] == kTagValue) {
            const InodeId ino = GetBE64(k.data());
            if (ino != checked_ino) {
              checked_ino = ino;
              std::string payload;
              checked_live = GetAt(st_, Cf::kInodes, InodePrefix(ino), live_, &payload).ok();
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
        if (dead_versions_.count(std::to_string(static_cast<int>(cf)) + "/" + std::string(k))) {
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
    }
    return Status::Ok();
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
  // entries point at inodes in every snapshot.
  Status CheckNamespace() {
    std::vector<Epoch> epochs(present_.begin(), present_.end());
    epochs.push_back(live_);
    std::unordered_map<InodeId, uint32_t> links, subdirs, entries;
    auto it = st_->NewIterator(Cf::kDentries);
    std::string prev_prefix;
    Epoch newer = ~Epoch{0};  // epoch of the next newer version of the same name
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      std::string_view k(it->key().data(), it->key().size());
      std::string prefix(KeyPrefix(k));
      Epoch e = KeyEpoch(k);
      if (prefix != prev_prefix) {
        newer = ~Epoch{0};
        prev_prefix = prefix;
      }
      rocksdb::Slice v = it->value();
      Epoch until = newer;
      newer = e;
      if (v.empty() || v[0] == kTagTombstone) continue;
      Dentry d;
      if (!DecodeDentry(std::string_view(v.data() + 1, v.size() - 1), &d).ok()) {
        Problem("unreadable directory entry");
        continue;
      }
      InodeId parent;
      std::string_view name;
      ParseDentryKey(k, &parent, &name);
      for (Epoch ep : epochs) {
        if (ep < e || ep >= until) continue;
        std::string payload;
        Status s = GetAt(st_, Cf::kInodes, InodePrefix(d.ino), ep, &payload);
        if (!s.ok()) {
          Problem("entry '" + std::string(name) + "' in directory " + std::to_string(parent) +
                  " points at missing inode " + std::to_string(d.ino) +
                  (ep == live_ ? " (live tree)" : " (snapshot epoch " + std::to_string(ep) + ")"));
        }
      }
      if (until == ~Epoch{0}) {  // live version
        links[d.ino]++;
        entries[parent]++;
        if (S_ISDIR(d.type)) subdirs[parent]++;
      }
    }
    PSM_RETURN_IF_ERROR(Status::FromRocks(it->status()));
    // Live inodes.
    std::set<InodeId> orphans;
    {
      auto oi = st_->NewIterator(Cf::kVolume);
      (void)ForEachPrefix(oi.get(), kOrphanPrefix, [&](std::string_view k, std::string_view) {
        orphans.insert(GetBE64(k.data() + kOrphanPrefix.size()));
        return true;
      });
    }
    auto ii = st_->NewIterator(Cf::kInodes);
    InodeId last = 0;
    bool have_last = false;
    for (ii->SeekToFirst(); ii->Valid(); ii->Next()) {
      std::string_view k(ii->key().data(), ii->key().size());
      InodeId ino = InodeFromKey(k);
      if (have_last && ino == last) continue;  // older version
      last = ino;
      have_last = true;
      rocksdb::Slice v = ii->value();
      if (v.empty() || v[0] == kTagTombstone) continue;
      InodeAttr a;
      if (!DecodeInode(std::string_view(v.data() + 1, v.size() - 1), &a).ok()) {
        Problem("inode " + std::to_string(ino) + " unreadable");
        continue;
      }
      live_inodes_++;
      if (S_ISDIR(a.mode)) {
        uint32_t want = 2 + subdirs[ino];
        if (a.nlink != want) {
          Problem("directory inode " + std::to_string(ino) + " has link count " +
                  std::to_string(a.nlink) + ", expected " + std::to_string(want));
        }
        if (a.size != entries[ino]) {
          Problem("directory inode " + std::to_string(ino) + " records " +
                  std::to_string(a.size) + " entries, has " + std::to_string(entries[ino]));
        }
        if (ino != kRootIno && links[ino] != 1) {
          Problem("directory inode " + std::to_string(ino) + " has " +
                  std::to_string(links[ino]) + " entries naming it");
        }
      } else {
        if (a.nlink != links[ino] && !(a.nlink == 0 && orphans.count(ino))) {
          Problem("inode " + std::to_string(ino) + " has link count " + std::to_string(a.nlink) +
                  ", but " + std::to_string(links[ino]) + " directory entries");
        }
      }
    }
    return Status::FromRocks(ii->status());
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
  std::set<std::string> dead_versions_;  // "cf/versioned key" named by dead entries
  size_t deleting_ = 0;
  Epoch live_ = 0;
  std::set<Epoch> present_;
  std::vector<SnapshotRec> snaps_;
  std::vector<Ref> refs_;
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
