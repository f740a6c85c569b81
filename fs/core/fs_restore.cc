// Restore to a snapshot (DESIGN §6, docs/restore.md).
//
// The live tree is made equal to snapshot S (epoch s) by writing, at the
// live epoch, S's version of every record that differs. Nothing is copied
// and no snapshot is destroyed: newer snapshots keep their own versions.
//
// What differs is found from the dead index, not by walking the volume:
// every record S sees that the live tree replaced has a dead entry with a
// death epoch above s (S is present, so PutVersion kept it). Records created
// after S have no dead entry, but creating one changes its directory's
// attributes (size, mtime), and that directory's old attributes died: the
// directory is compared entry by entry and the new child is reached from
// there. Orphans (unlinked while open) are reached through their orphan key.
//
// Per inode, with As = its attributes at s and Al = live:
//   As only:   the live tree lost it. Its records come back at the live
//              epoch; its data blocks are resurrected: their alloc records
//              die no more (death 0), their dead range entries go.
//   Al only:   created after S. Destroyed (directories lose their entries,
//              whose children are visited), or made an orphan when a handle
//              or the kernel still references it.
//   both:      every record (attributes, xattrs, chunks, entries) whose
//              versions at s and live differ gets S's version; live blocks S
//              does not have are killed (kept for snapshots that see them).
//
// The whole change is one Txn, so readers and a remount see the old tree or
// the new one. Before it, a `restore_pending` record is made durable; the
// Txn deletes it. Open() finds a leftover record and runs the restore again:
// it computes the same difference from the same state.
//
// Locks: reclaim_run_mu, volume_mu exclusive (no live modification, snapshot
// create, delete or reclaim runs), and around the commit read_gate
// exclusive, so that no reader (Read, Lseek: gate shared, then the inode's
// stripe shared) sees half of one file.
#include <algorithm>
#include <chrono>
#include <cstring>
#include <deque>
#include <iterator>
#include <optional>
#include <unordered_set>

#include "fs/core/fs_impl.h"
#include "fs/base/log.h"
#include "fs/core/record_versions.h"
#include "meta/sync_point.h"

namespace psm {
using Impl = FileSystem::Impl;

namespace {

struct VerPair {
  Ver snap, live;
};

// Every record under `file_prefix` of versioned family `cf`, as seen at
// epoch `es` and by the live tree (through `txn`: its own writes count).
// Versions sort newest first, so within one record the first key decides
// the live version and the first key at or below `es` the snapshot's.
Status ListVersions(Txn* txn, Cf cf, std::string_view file_prefix, Epoch es,
                    std::map<std::string, VerPair>* out) {
  auto it = txn->NewIterator(cf);
  std::string cur;
  VerPair* vp = nullptr;
  bool have_snap = false;
  return ForEachPrefix(it.get(), file_prefix, [&](std::string_view k, std::string_view v) {
    if (k.size() < file_prefix.size() + 8) return true;
    std::string_view p = KeyPrefix(k);
    if (vp == nullptr || p != cur) {
      cur.assign(p);
      vp = &(*out)[cur];
      SetVer(&vp->live, KeyEpoch(k), v);
      have_snap = false;
    }
    Epoch e = KeyEpoch(k);
    if (!have_snap && e <= es) {
      have_snap = true;
      SetVer(&vp->snap, e, v);
    }
    return true;
  });
}

struct Slot {
  BlockNo p = 0;  // 0 = hole
  Epoch birth = 0;
};

Status DecodeSlots(const Ver& v, uint32_t chunk_blocks, InodeId ino, std::vector<Slot>* map) {
  map->assign(chunk_blocks, Slot{});
  if (!v.has) return Status::Ok();
  std::vector<Extent> ext;
  PSM_RETURN_IF_ERROR(DecodeExtents(v.payload, &ext));
  for (const Extent& x : ext) {
    if (uint64_t{x.off} + x.len > chunk_blocks) {
      return Status::Corruption("extent beyond chunk in inode " + std::to_string(ino));
    }
    for (uint32_t i = 0; i < x.len; ++i) (*map)[x.off + i] = Slot{x.pblock + i, x.birth};
  }
  return Status::Ok();
}

// Sorted block numbers -> runs of consecutive blocks.
std::vector<Range> Runs(std::vector<BlockNo> blocks) {
  std::sort(blocks.begin(), blocks.end());
  std::vector<Range> out;
  for (BlockNo b : blocks) {
    if (!out.empty() && out.back().end() == b) {
      out.back().len++;
    } else {
      out.push_back(Range{b, 1});
    }
  }
  return out;
}

// Makes dead physical blocks [p, p+len) live again: the alloc records that
// cover them get death 0 (split where the run starts or ends inside one),
// and their dead range entries are removed or cut to what stays dead.
Status Resurrect(Txn* txn, BlockNo p, uint64_t len) {
  auto it = txn->NewIterator(Cf::kAlloc);
  while (len > 0) {
    it->SeekForPrev(AllocKey(p));
    if (!it->Valid()) {
      PSM_RETURN_IF_ERROR(Status::FromRocks(it->status()));
      return Status::Corruption("snapshot block " + std::to_string(p) + " is not in alloc");
    }
    const BlockNo s = AllocKeyBlock(std::string_view(it->key().data(), it->key().size()));
    AllocRec rec;
    PSM_RETURN_IF_ERROR(DecodeAlloc(std::string_view(it->value().data(), it->value().size()), &rec));
    if (s + rec.length <= p) {
      return Status::Corruption("snapshot block " + std::to_string(p) + " is not in alloc");
    }
    if (rec.death == 0) {
      return Status::Corruption("snapshot block " + std::to_string(p) +
                                " is live but not in the file that the snapshot has it in");
    }
    const std::string dk = DeadRangeKey(rec.death, s);
    std::string dval;
    Status g = txn->Get(Cf::kDead, dk, &dval);
    if (g.Is(Code::kNotFound)) {
      return Status::Corruption("dead range at block " + std::to_string(s) + " has no dead entry");
    }
    PSM_RETURN_IF_ERROR(g);
    DeadValue dv;
    PSM_RETURN_IF_ERROR(DecodeDeadValue(dval, &dv));
    if (dv.length != rec.length || dv.birth != rec.birth) {
      return Status::Corruption("dead entry of block " + std::to_string(s) +
                                " disagrees with its alloc record");
    }
    const BlockNo end = s + rec.length;
    const BlockNo q = std::min(p + len, end);
    txn->Delete(Cf::kDead, dk);
    if (s < p) {
      txn->Put(Cf::kAlloc, AllocKey(s), EncodeAlloc(AllocRec{p - s, rec.birth, rec.death}));
      txn->Put(Cf::kDead, DeadRangeKey(rec.death, s), EncodeDeadValue(DeadValue{rec.birth, p - s}));
    }
    txn->Put(Cf::kAlloc, AllocKey(p), EncodeAlloc(AllocRec{q - p, rec.birth, 0}));
    if (q < end) {
      txn->Put(Cf::kAlloc, AllocKey(q), EncodeAlloc(AllocRec{end - q, rec.birth, rec.death}));
      txn->Put(Cf::kDead, DeadRangeKey(rec.death, q), EncodeDeadValue(DeadValue{rec.birth, end - q}));
    }
    len -= q - p;
    p = q;
  }
  return Status::Ok();
}

struct LoadedAttr {
  bool has = false;
  Epoch ver = 0;
  InodeAttr a;
};

Status LoadVersioned(Txn* txn, InodeId ino, Epoch e, LoadedAttr* out) {
  std::string payload;
  Status s = txn->GetAt(Cf::kInodes, InodePrefix(ino), e, &payload, &out->ver);
  if (s.Is(Code::kNotFound)) {
    out->has = false;
    return Status::Ok();
  }
  PSM_RETURN_IF_ERROR(s);
  out->has = true;
  return DecodeInode(payload, &out->a);
}

// The running restore's state: one Txn and its bookkeeping.
struct RestoreRun {
  Impl* m;
  Epoch es;   // the snapshot's epoch
  Epoch el;   // the live epoch
  Txn& txn;
  std::vector<Range> frees;
  std::deque<InodeId> queue;
  std::unordered_set<InodeId> seen;
  std::unordered_set<InodeId> force;  // a chunk or xattr of it died
  // Regular files the kernel knows whose attributes changed, by the
  // directories that name them (before or after): see NameInvalidations.
  std::map<InodeId, std::unordered_set<InodeId>> renamed_by_dir;
  RestoreResult* out;
  std::vector<Impl::Invalidation>* inval;

  RestoreRun(Impl* mm, Txn* t, Epoch s, RestoreResult* o, std::vector<Impl::Invalidation>* iv)
      : m(mm), es(s), el(mm->live()), txn(*t), out(o), inval(iv) {}

  void Push(InodeId ino) {
    if (ino != kRootIno && ino < kFirstIno) return;
    if (!seen.insert(ino).second) return;
    queue.push_back(ino);
    m->restore_total.fetch_add(1, std::memory_order_relaxed);
  }

  // Inodes with a record that died since the snapshot, and orphans.
  Status Collect() {
    auto it = m->store->NewIterator(Cf::kDead);
    for (it->Seek(DeadEpochPrefix(es + 1)); it->Valid(); it->Next()) {
      std::string_view k(it->key().data(), it->key().size());
      DeadKey dk;
      PSM_RETURN_IF_ERROR(ParseDeadKey(k, &dk));
      ++out->dead_entries_read;
      if (dk.kind != DeadKind::kVersion) continue;
      const std::string_view vk = dk.versioned_key;
      InodeId ino = 0;
      if (dk.cf == Cf::kInodes) {
        ino = InodeFromKey(vk);
      } else if (dk.cf == Cf::kDentries) {
        std::string_view name;
        ParseDentryKey(vk, &ino, &name);
      } else if (dk.cf == Cf::kChunks) {
        uint64_t idx;
        ParseChunkKey(vk, &ino, &idx);
        force.insert(ino);
      } else if (dk.cf == Cf::kXattrs) {
        std::string_view name;
        ParseXattrKey(vk, &ino, &name);
        force.insert(ino);
      } else {
        continue;
      }
      Push(ino);
    }
    PSM_RETURN_IF_ERROR(Status::FromRocks(it->status()));
    auto vit = m->store->NewIterator(Cf::kVolume);
    return ForEachPrefix(vit.get(), kOrphanPrefix, [&](std::string_view k, std::string_view) {
      if (k.size() >= kOrphanPrefix.size() + 8) Push(GetBE64(k.data() + kOrphanPrefix.size()));
      return true;
    });
  }

  Status Run() {
    PSM_RETURN_IF_ERROR(Collect());
    // The root is always compared: a volume whose snapshot predates every
    // change still has it in the dead index, but an empty dead index after
    // e.g. a restore of the newest state must cost nothing more than this.
    Push(kRootIno);
    while (!queue.empty()) {
      InodeId ino = queue.front();
      queue.pop_front();
      PSM_RETURN_IF_ERROR(One(ino));
      ++out->inodes_examined;
      m->restore_done.fetch_add(1, std::memory_order_relaxed);
      PSM_SYNC_POINT("Restore:Inode");
    }
    return NameInvalidations();
  }

  // With the writeback cache the kernel trusts its own size and mtime of a
  // regular file it has cached, whatever the daemon answers. Invalidating
  // every entry that names such a file lets the kernel drop its inode (at
  // once, or at the last close of a descriptor open across the restore),
  // so the next lookup reads the restored attributes. The names come from
  // the file's parent hints (its directory before and after); a hard link
  // in a third directory is not found (docs/restore.md).
  Status NameInvalidations() {
    for (auto& [dir, inos] : renamed_by_dir) {
      std::map<std::string, VerPair> ents;
      PSM_RETURN_IF_ERROR(ListVersions(&txn, Cf::kDentries, DentryDirPrefix(dir), es, &ents));
      for (auto& [prefix, vp] : ents) {
        for (const Ver* v : {&vp.snap, &vp.live}) {
          if (!v->has) continue;
          Dentry d;
          PSM_RETURN_IF_ERROR(DecodeDentry(v->payload, &d));
          if (inos.count(d.ino)) {
            InvalEntry(dir, NameOfPrefix(prefix));
            break;
          }
        }
      }
    }
    return Status::Ok();
  }

  bool KernelKnows(InodeId ino) {
    std::lock_guard<std::mutex> hl(m->handles_mu);
    return m->InUseLocked(ino);
  }

  void InvalInode(InodeId ino) { inval->push_back({MakeNode(0, ino), {}}); }
  void InvalEntry(InodeId parent, std::string_view name) {
    inval->push_back({MakeNode(0, parent), std::string(name)});
  }


  Status One(InodeId ino) {
    LoadedAttr s, l;
    PSM_RETURN_IF_ERROR(LoadVersioned(&txn, ino, es, &s));
    PSM_RETURN_IF_ERROR(LoadVersioned(&txn, ino, el, &l));
    if (!s.has && !l.has) return Status::Ok();
    if (!s.has) return Remove(ino, &l.a);
    // An orphan in the snapshot: no entry of the snapshot reaches it.
    if (s.a.nlink == 0 && !S_ISDIR(s.a.mode)) return Status::Ok();
    if (l.has && s.ver == l.ver && !force.count(ino)) return Status::Ok();
    // A new attribute version with the same bytes is no proof that nothing
    // else changed: an xattr added since the snapshot leaves no dead
    // version (`force` does not see it), and the coarse clock gives it the
    // ctime the attributes already had when both fall in one tick. So the
    // records are compared whenever the version moved.
    const bool attr_differs = !l.has || !(s.a == l.a);
    size_t records = 0;
    PSM_RETURN_IF_ERROR(RestoreRecords(Cf::kXattrs, XattrFilePrefix(ino), &records));
    if (S_ISREG(s.a.mode)) PSM_RETURN_IF_ERROR(RestoreChunks(ino, &records));
    if (S_ISDIR(s.a.mode)) PSM_RETURN_IF_ERROR(RestoreEntries(ino, &records));
    if (!attr_differs && records == 0) return Status::Ok();
    // A new attribute version whenever a record of the inode changed, even
    // with equal attributes (two changes in one tick of the coarse clock):
    // the next restore or send takes an inode whose attribute version did
    // not move for unchanged.
    PSM_RETURN_IF_ERROR(m->PutAttr(&txn, ino, s.a));
    if (S_ISREG(s.a.mode) && l.has && KernelKnows(ino)) {
      renamed_by_dir[s.a.parent].insert(ino);
      renamed_by_dir[l.a.parent].insert(ino);
    }
    if (!l.has) {
      ++out->created;
      txn.AddCounter(kVolFiles, 1);
    } else {
      ++out->changed;
      if (l.a.nlink == 0) txn.Delete(Cf::kVolume, OrphanKey(ino));
    }
    InvalInode(ino);
    return Status::Ok();
  }

  // Created after the snapshot: goes away (or becomes an orphan if in use).
  Status Remove(InodeId ino, InodeAttr* a) {
    ++out->removed;
    InvalInode(ino);
    if (S_ISDIR(a->mode)) {
      std::map<std::string, VerPair> ents;
      PSM_RETURN_IF_ERROR(ListVersions(&txn, Cf::kDentries, DentryDirPrefix(ino), es, &ents));
      for (auto& [prefix, vp] : ents) {
        if (!vp.live.has) continue;
        Dentry d;
        PSM_RETURN_IF_ERROR(DecodeDentry(vp.live.payload, &d));
        PSM_RETURN_IF_ERROR(PutVersion(&txn, Cf::kDentries, prefix, el, std::nullopt, *m));
        ++out->entries_changed;
        InvalEntry(ino, NameOfPrefix(prefix));
        Push(d.ino);
      }
      a->nlink = 0;
      return m->DestroyInode(&txn, ino, a, &frees);
    }
    if (S_ISREG(a->mode)) out->bytes_discarded += a->blocks * m->bs;
    bool in_use;
    {
      std::lock_guard<std::mutex> hl(m->handles_mu);
      in_use = m->KeepsOrphanLocked(ino);
    }
    if (in_use) {
      // Still open (or known to the kernel): it lives on, unreachable,
      // until the last reference goes, as if it had been unlinked.
      if (a->nlink != 0) {
        a->nlink = 0;
        a->ctime_ns = NowNs();
        PSM_RETURN_IF_ERROR(m->PutAttr(&txn, ino, *a));
        txn.Put(Cf::kVolume, OrphanKey(ino), "");
      }
      return Status::Ok();
    }
    txn.Delete(Cf::kVolume, OrphanKey(ino));
    a->nlink = 0;
    return m->DestroyInode(&txn, ino, a, &frees);
  }

  // Records of an inode in `cf` (xattrs): the snapshot's version wherever
  // the live one differs.
  Status RestoreRecords(Cf cf, const std::string& file_prefix, size_t* changed) {
    std::map<std::string, VerPair> recs;
    PSM_RETURN_IF_ERROR(ListVersions(&txn, cf, file_prefix, es, &recs));
    for (auto& [prefix, vp] : recs) {
      if (vp.snap.SameAs(vp.live)) continue;
      ++*changed;
      std::optional<std::string_view> val;
      if (vp.snap.has) val = vp.snap.payload;
      PSM_RETURN_IF_ERROR(PutVersion(&txn, cf, prefix, el, val, *m));
    }
    return Status::Ok();
  }

  Status RestoreEntries(InodeId dir, size_t* changed) {
    std::map<std::string, VerPair> ents;
    PSM_RETURN_IF_ERROR(ListVersions(&txn, Cf::kDentries, DentryDirPrefix(dir), es, &ents));
    for (auto& [prefix, vp] : ents) {
      if (vp.snap.SameAs(vp.live)) continue;
      ++*changed;
      Dentry d;
      if (vp.live.has) {
        PSM_RETURN_IF_ERROR(DecodeDentry(vp.live.payload, &d));
        Push(d.ino);
      }
      std::optional<std::string_view> val;
      if (vp.snap.has) {
        PSM_RETURN_IF_ERROR(DecodeDentry(vp.snap.payload, &d));
        Push(d.ino);
        val = vp.snap.payload;
      }
      PSM_RETURN_IF_ERROR(PutVersion(&txn, Cf::kDentries, prefix, el, val, *m));
      ++out->entries_changed;
      InvalEntry(dir, NameOfPrefix(prefix));
    }
    return Status::Ok();
  }

  Status RestoreChunks(InodeId ino, size_t* changed) {
    std::map<std::string, VerPair> chunks;
    PSM_RETURN_IF_ERROR(ListVersions(&txn, Cf::kChunks, ChunkFilePrefix(ino), es, &chunks));
    std::vector<Slot> smap, lmap;
    // Blocks the live tree has and S has not die; blocks S has and the
    // live tree has not come back. Decided for the whole file, not per
    // chunk: a collapse or insert range (ShiftBlocks) moves a block to
    // another place, even another chunk, and such a block is in both sets
    // (it stays live where S has it).
    std::vector<BlockNo> kill, revive;
    for (auto& [prefix, vp] : chunks) {
      if (vp.snap.SameAs(vp.live)) continue;
      ++*changed;
      PSM_RETURN_IF_ERROR(DecodeSlots(vp.snap, m->chunk_blocks, ino, &smap));
      PSM_RETURN_IF_ERROR(DecodeSlots(vp.live, m->chunk_blocks, ino, &lmap));
      for (uint32_t b = 0; b < m->chunk_blocks; ++b) {
        if (smap[b].p == lmap[b].p) continue;
        if (lmap[b].p) kill.push_back(lmap[b].p);
        if (smap[b].p) revive.push_back(smap[b].p);
      }
      std::optional<std::string_view> val;
      if (vp.snap.has) val = vp.snap.payload;
      PSM_RETURN_IF_ERROR(PutVersion(&txn, Cf::kChunks, prefix, el, val, *m));
    }
    std::sort(kill.begin(), kill.end());
    std::sort(revive.begin(), revive.end());
    std::vector<BlockNo> kill_only, revive_only;
    std::set_difference(kill.begin(), kill.end(), revive.begin(), revive.end(),
                        std::back_inserter(kill_only));
    std::set_difference(revive.begin(), revive.end(), kill.begin(), kill.end(),
                        std::back_inserter(revive_only));
    for (const Range& r : Runs(std::move(kill_only))) {
      PSM_RETURN_IF_ERROR(m->KillRange(&txn, r.start, r.len, 0, &frees));
      out->bytes_discarded += r.len * m->bs;
    }
    for (const Range& r : Runs(std::move(revive_only))) {
      PSM_RETURN_IF_ERROR(Resurrect(&txn, r.start, r.len));
      out->bytes_restored += r.len * m->bs;
    }
    return Status::Ok();
  }
};

}  // namespace

void Impl::Deliver(const std::vector<Invalidation>& inval) {
  for (const Invalidation& iv : inval) {
    if (iv.name.empty()) {
      if (inval_inode) inval_inode(iv.node);
    } else if (inval_entry) {
      inval_entry(iv.node, iv.name);
    }
  }
  if (inval_drain) inval_drain();
}

Status Impl::RestoreInto(Txn* txn, Epoch es, RestoreResult* out, std::vector<Invalidation>* inval,
                         std::vector<Range>* frees) {
  RestoreRun run(this, txn, es, out, inval);
  Status s = run.Run();
  frees->insert(frees->end(), run.frees.begin(), run.frees.end());
  return s;
}

Status Impl::RestoreLocked(SnapshotId id, bool dry_run, RestoreResult* out,
                           std::vector<Invalidation>* inval) {
  Epoch es;
  {
    std::lock_guard<std::mutex> l(snaps_mu);
    auto it = snaps.find(id);
    if (it == snaps.end() || it->second.rec.state != SnapState::kActive) {
      return Status::NotFound("the snapshot was deleted");
    }
    es = it->second.rec.epoch;
    out->snapshot = it->second.rec.name;
    restoring_name = it->second.rec.name;
  }
  restore_done.store(0);
  restore_total.store(0);
  struct ProgressReset {
    Impl* m;
    ~ProgressReset() {
      std::lock_guard<std::mutex> l(m->snaps_mu);
      m->restore_done.store(0);
      m->restore_total.store(0);
      m->restoring_name.clear();
    }
  } progress_reset{this};
  out->dry_run = dry_run;

  if (!dry_run) {
    // Announce the restore durably: a crash from here on is finished by the
    // next mount.
    Txn pending(store.get());
    pending.Put(Cf::kVolume, kVolRestorePending, LE64(id));
    PSM_RETURN_IF_ERROR(committer->Apply(&pending, {}, {}));
    PSM_RETURN_IF_ERROR(committer->SyncAll());
    PSM_SYNC_POINT("Restore:Pending");
  }
  Txn txn(store.get());
  std::vector<Range> frees;
  Status s = RestoreInto(&txn, es, out, inval, &frees);
  txn.Delete(Cf::kVolume, kVolRestorePending);
  if (s.ok() && !dry_run) {
    PSM_SYNC_POINT("Restore:BeforeCommit");
    // No reader may see half of one inode: close the read gate for the
    // commit (live writers are already out: volume_mu is exclusive).
    {
      std::unique_lock<FairSharedMutex> gate(read_gate);
      s = committer->Apply(&txn, frees, {});
    }
    PSM_SYNC_POINT("Restore:Committed");
    if (s.ok()) ReviveGhosts();
  }
  if (!s.ok() && !dry_run) {
    // Nothing of the restore was applied: the live tree is as it was.
    // Withdraw the announcement so the next mount does not try again.
    Txn undo(store.get());
    undo.Delete(Cf::kVolume, kVolRestorePending);
    Status u = committer->Apply(&undo, {}, {});
    if (u.ok()) u = committer->SyncAll();
    if (!u.ok()) {
      PSM_LOG(kLogWarning, "psmfs: withdrawing the failed restore: %s\n", u.ToString().c_str());
    }
  }
  return s;
}

void Impl::ReviveGhosts() {
  std::vector<InodeId> inos;
  {
    std::lock_guard<std::mutex> l(handles_mu);
    for (const auto& [ino, a] : ghosts) inos.push_back(ino);
  }
  std::vector<InodeId> back;
  for (InodeId ino : inos) {
    InodeAttr a;
    if (LoadAttrAt(ino, live(), &a).ok()) back.push_back(ino);
  }
  std::lock_guard<std::mutex> l(handles_mu);
  for (InodeId ino : back) ghosts.erase(ino);
}

Status Impl::ResumeRestore(bool* resumed) {
  *resumed = false;
  std::string v;
  Status g = store->Get(Cf::kVolume, kVolRestorePending, &v);
  if (g.Is(Code::kNotFound)) return Status::Ok();
  PSM_RETURN_IF_ERROR(g);
  if (v.size() != 8) return Status::Corruption("restore_pending record has a bad length");
  const SnapshotId id = GetLE64(v.data());
  RestoreResult r;
  std::vector<Invalidation> inval;
  Status s;
  {
    std::lock_guard<std::mutex> run(reclaim_run_mu);
    std::unique_lock<FairSharedMutex> vl(volume_mu);
    s = RestoreLocked(id, false, &r, &inval);
  }
  if (!s.ok()) {
    // The live tree is the consistent pre-restore one; say so and serve it.
    PSM_LOG(kLogWarning,
            "psmfs: the restore interrupted by the last stop could not be finished (%s); the "
            "volume is as it was before that restore; run it again with psmctl restore\n",
            s.ToString().c_str());
    return Status::Ok();
  }
  PSM_RETURN_IF_ERROR(committer->SyncAll());
  PSM_LOG(kLogInfo, "psmfs: finished the interrupted restore to snapshot '%s' (%llu inodes)\n",
          r.snapshot.c_str(), static_cast<unsigned long long>(r.inodes_examined));
  *resumed = true;
  return Status::Ok();
}

Result<RestoreResult> FileSystem::Restore(std::string_view name, bool dry_run) {
  Impl* m = impl_.get();
  if (m->opts.read_only) return Status::ReadOnly("volume is mounted read-only");
  if (name.empty() || name.size() > kNameMax) {
    return Status::Invalid("bad snapshot name '" + std::string(name) + "'");
  }
  const auto t0 = std::chrono::steady_clock::now();
  SnapshotId id = 0;
  {
    std::lock_guard<std::mutex> l(m->snaps_mu);
    for (const auto& [sid, e] : m->snaps) {
      if (e.rec.state == SnapState::kActive && e.rec.name == name) id = sid;
    }
  }
  if (id == 0) return Status::NotFound("no snapshot named '" + std::string(name) + "'");
  RestoreResult r;
  std::vector<Impl::Invalidation> inval;
  {
    std::lock_guard<std::mutex> run(m->reclaim_run_mu);
    std::unique_lock<FairSharedMutex> vl(m->volume_mu);
    PSM_SYNC_POINT("Restore:Locked");
    Status s = m->RestoreLocked(id, dry_run, &r, &inval);
    if (s.Is(Code::kNotFound)) {
      return Status::NotFound("snapshot '" + std::string(name) + "' was deleted");
    }
    PSM_RETURN_IF_ERROR(s);
  }
  if (!dry_run) {
    PSM_RETURN_IF_ERROR(m->committer->SyncAll());
    // The kernel's view of what changed: entries, attributes and pages.
    m->Deliver(inval);
    m->scanner->Start("restore");
  }
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

}  // namespace psm
