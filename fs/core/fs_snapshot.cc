// Snapshots (DESIGN §2, §4): create is one small write that records the
// live epoch and advances it; delete marks the snapshot `deleting` and hides
// it; reclaim walks the dead index for what changed between its neighbours
// and removes what nothing can see any more.
//
// Reclaim of snapshot s waits until no handle inside s is open. It then
// takes the volume lock exclusively for an instant to remove s from the set
// of present epochs (so no operation still in flight decides with the old
// set), computes N (next present epoch, or the live epoch), and walks dead
// entries with death in (s, N]: an entry is unreachable exactly when no
// present snapshot has an epoch in [birth, death).
#include <algorithm>
#include <cstring>

#include "fs/core/fs_impl.h"
#include "fs/base/log.h"
#include "meta/sync_point.h"

namespace psm {
namespace {

using Impl = FileSystem::Impl;

Status ValidateSnapName(std::string_view name) {
  if (name.empty()) return Status::Invalid("snapshot name is empty");
  if (name.size() > kNameMax) return Status::NameTooLong("snapshot name longer than 255 bytes");
  if (name == "." || name == "..") return Status::Invalid("snapshot name may not be '.' or '..'");
  if (name.find('/') != std::string_view::npos || name.find('\0') != std::string_view::npos) {
    return Status::Invalid("snapshot name may not contain '/' or NUL");
  }
  return Status::Ok();
}

constexpr size_t kReclaimBatch = 1024;

}  // namespace

Status Impl::CommitSnapshotLocked(Txn* txn, SnapshotRec rec, const std::string& guid,
                                  const std::vector<Range>& frees,
                                  const std::vector<Range>& allocs, SnapshotInfo* info) {
  SnapshotId id;
  {
    std::lock_guard<std::mutex> l(snaps_mu);
    id = next_snap;
  }
  if (id >= (uint64_t{1} << (64 - kSnapShift))) return Status::NoSpace("snapshot ids exhausted");
  // Checksums staged by overwrites in place of blocks born at this epoch
  // go before the record: once the epoch advances, a crash's recovery no
  // longer recomputes those blocks (RecoverIntents), so the WAL must never
  // keep the snapshot without them. (volume_mu is held exclusively: no
  // overwrite in place runs.)
  PSM_RETURN_IF_ERROR(pending_csums->Flush());
  const Epoch e = live();
  rec.epoch = e;
  rec.state = SnapState::kActive;
  txn->Put(Cf::kSnapshots, SnapshotKey(id), EncodeSnapshot(rec));
  if (!guid.empty()) txn->Put(Cf::kVolume, SnapGuidKey(id), guid);
  txn->Put(Cf::kVolume, kVolEpoch, LE64(e + 1));
  txn->Put(Cf::kVolume, kVolNextSnap, LE64(id + 1));
  PSM_RETURN_IF_ERROR(committer->Apply(txn, frees, allocs));
  {
    std::lock_guard<std::mutex> l(snaps_mu);
    next_snap = id + 1;
    SnapEntry se;
    se.rec = rec;
    snaps.emplace(id, std::move(se));
    present_epochs.insert(e);
    snapdir_mtime_ns = rec.ctime_ns;
  }
  epoch.store(e + 1, std::memory_order_release);
  info->id = id;
  info->name = rec.name;
  info->epoch = e;
  info->ctime_ns = rec.ctime_ns;
  return Status::Ok();
}

Result<SnapshotInfo> FileSystem::CreateSnapshot(std::string_view name, bool from_kernel) {
  Impl* m = impl_.get();
  PSM_RETURN_IF_ERROR(ValidateSnapName(name));
  if (m->opts.read_only) return Status::ReadOnly("volume is mounted read-only");
  SnapshotInfo info;
  {
    std::unique_lock<FairSharedMutex> vl(m->volume_mu);
    PSM_SYNC_POINT("FileSystem::CreateSnapshot:Locked");
    {
      std::lock_guard<std::mutex> l(m->snaps_mu);
      for (const auto& [sid, s] : m->snaps) {
        if (s.rec.state == SnapState::kActive && s.rec.name == name) {
          return Status::Exists("a snapshot named '" + std::string(name) + "' already exists");
        }
      }
    }
    SnapshotRec rec;
    rec.name.assign(name);
    rec.ctime_ns = NowNs();
    Txn txn(m->store.get());
    PSM_RETURN_IF_ERROR(m->CommitSnapshotLocked(&txn, std::move(rec), "", {}, {}, &info));
  }
  // Durable before we answer (WAL order makes every later write depend on it).
  PSM_RETURN_IF_ERROR(m->committer->SyncAll());
  if (!from_kernel) m->InvalidateEntry(kSnapDirNode, name);
  return info;
}

Status FileSystem::DeleteSnapshot(std::string_view name, bool from_kernel) {
  Impl* m = impl_.get();
  if (m->opts.read_only) return Status::ReadOnly("volume is mounted read-only");
  if (name.size() > kNameMax) return Status::NameTooLong();
  {
    std::shared_lock<FairSharedMutex> vl(m->volume_mu);
    SnapshotId id = 0;
    SnapshotRec rec;
    int senders = 0;
    {
      std::lock_guard<std::mutex> l(m->snaps_mu);
      for (auto& [sid, s] : m->snaps) {
        if (s.rec.state == SnapState::kActive && s.rec.name == name) {
          id = sid;
          rec = s.rec;
          senders = s.senders;
          // From here no new send pins it (fs_send.cc); cleared below.
          if (senders == 0) s.delete_pending = true;
        }
      }
    }
    if (!id) return Status::NotFound("no snapshot named '" + std::string(name) + "'");
    // A send in progress keeps its snapshots: the delete is refused, not
    // queued (docs/send-receive.md).
    if (senders > 0) {
      return Status::Busy("snapshot '" + std::string(name) + "' is being sent (" +
                          std::to_string(senders) +
                          (senders == 1 ? " stream" : " streams") +
                          "); a snapshot cannot be deleted during a send: try again when it "
                          "finishes");
    }
    struct ClearPending {
      Impl* m;
      SnapshotId id;
      ~ClearPending() {
        std::lock_guard<std::mutex> l(m->snaps_mu);
        auto it = m->snaps.find(id);
        if (it != m->snaps.end()) it->second.delete_pending = false;
      }
    } clear_pending{m, id};
    if (rec.holds) {  // psmctl snapshot hold (fs_holds.cc)
      return Status::Busy("snapshot '" + std::string(name) + "' is held (" + m->HoldTags(id) +
                          "); release it first with `psmctl snapshot release`");
    }
    rec.state = SnapState::kDeleting;
    Txn txn(m->store.get());
    txn.Put(Cf::kSnapshots, SnapshotKey(id), EncodeSnapshot(rec));
    PSM_RETURN_IF_ERROR(m->committer->Apply(&txn, {}, {}));
    std::lock_guard<std::mutex> l(m->snaps_mu);
    auto it = m->snaps.find(id);
    if (it != m->snaps.end()) it->second.rec.state = SnapState::kDeleting;
    m->snapdir_mtime_ns = NowNs();
  }
  PSM_RETURN_IF_ERROR(m->committer->SyncAll());
  if (!from_kernel) m->InvalidateEntry(kSnapDirNode, name);
  {
    std::lock_guard<std::mutex> l(m->reclaim_mu);
    m->reclaim_kick = true;
  }
  m->reclaim_cv.notify_all();
  return Status::Ok();
}

std::vector<SnapshotInfo> FileSystem::ListSnapshots(bool space) {
  Impl* m = impl_.get();
  std::vector<SnapshotInfo> out;
  std::vector<Epoch> present;
  {
    std::lock_guard<std::mutex> l(m->snaps_mu);
    for (const auto& [id, s] : m->snaps) {
      if (s.rec.state != SnapState::kActive) continue;
      SnapshotInfo i;
      i.id = id;
      i.name = s.rec.name;
      i.epoch = s.rec.epoch;
      i.ctime_ns = s.rec.ctime_ns;
      out.push_back(std::move(i));
    }
    present.assign(m->present_epochs.begin(), m->present_epochs.end());
  }
  if (!space || out.empty()) return out;
  // One pass over the reverse map: a range alive over [birth, death) is
  // referenced by every snapshot in that interval, and exclusive to a
  // snapshot when it is the only present one there.
  std::map<Epoch, std::pair<uint64_t, uint64_t>> acc;  // epoch -> (used, referenced)
  auto it = m->store->NewIterator(Cf::kAlloc);
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    AllocRec r;
    if (!DecodeAlloc(std::string_view(it->value().data(), it->value().size()), &r).ok()) continue;
    Epoch death = r.death ? r.death : ~Epoch{0};
    auto lo = std::lower_bound(present.begin(), present.end(), r.birth);
    auto hi = std::lower_bound(lo, present.end(), death);
    for (auto p = lo; p != hi; ++p) acc[*p].second += r.length;
    if (hi - lo == 1 && r.death) acc[*lo].first += r.length;
  }
  for (auto& i : out) {
    auto a = acc.find(i.epoch);
    if (a == acc.end()) continue;
    i.used_bytes = a->second.first * m->bs;
    i.referenced_bytes = a->second.second * m->bs;
  }
  return out;
}

Status FileSystem::ReclaimNow() {
  Impl* m = impl_.get();
  std::vector<SnapshotId> ids;
  {
    std::lock_guard<std::mutex> l(m->snaps_mu);
    for (const auto& [id, s] : m->snaps) {
      if (s.rec.state == SnapState::kDeleting && s.open_handles == 0) ids.push_back(id);
    }
  }
  for (SnapshotId id : ids) PSM_RETURN_IF_ERROR(m->ReclaimOne(id));
  return Status::Ok();
}

void FileSystem::Impl::ReclaimLoop() {
  std::unique_lock<std::mutex> l(reclaim_mu);
  while (!reclaim_stop) {
    reclaim_cv.wait_for(l, std::chrono::seconds(5), [&] { return reclaim_stop || reclaim_kick; });
    if (reclaim_stop) break;
    reclaim_kick = false;
    l.unlock();
    std::vector<SnapshotId> ids;
    {
      std::lock_guard<std::mutex> sl(snaps_mu);
      for (const auto& [id, s] : snaps) {
        if (s.rec.state == SnapState::kDeleting && s.open_handles == 0) ids.push_back(id);
      }
    }
    for (SnapshotId id : ids) {
      {
        std::lock_guard<std::mutex> sl(reclaim_mu);
        if (reclaim_stop) break;
      }
      Status s = ReclaimOne(id);
      if (!s.ok()) {
        PSM_LOG(kLogError, "psmfs: reclaim of snapshot %llu failed: %s\n",
                static_cast<unsigned long long>(id), s.ToString().c_str());
      }
    }
    l.lock();
  }
}

// A lone tombstone is its record's live version: a writer may be rewriting
// it in place, so it is checked again and removed under the inode locks a
// writer of that record holds (the record's owner: the file, or the
// directory of an entry), a few inodes per commit.
Status FileSystem::Impl::DropLoneTombstones(const std::vector<std::pair<Cf, std::string>>& lone) {
  constexpr size_t kPerCommit = 32;  // stripes held at once
  for (size_t i = 0; i < lone.size(); i += kPerCommit) {
    const size_t end = std::min(lone.size(), i + kPerCommit);
    std::vector<InodeId> owners;
    for (size_t j = i; j < end; ++j) owners.push_back(InodeFromKey(lone[j].second));
    LockSet ls(this, owners);
    Txn txn(store.get());
    for (size_t j = i; j < end; ++j) {
      PSM_RETURN_IF_ERROR(DropLoneTombstone(&txn, lone[j].first, lone[j].second));
    }
    if (!txn.empty()) PSM_RETURN_IF_ERROR(committer->Apply(&txn, {}, {}));
  }
  return Status::Ok();
}

Status FileSystem::Impl::ReclaimOne(SnapshotId id) {
  // One reclaim at a time (the reclaim thread and ReclaimNow()): two walks
  // of the same dead entries would free their ranges twice.
  std::lock_guard<std::mutex> run(reclaim_run_mu);
  Epoch s_epoch, n_epoch;
  {
    std::unique_lock<FairSharedMutex> vl(volume_mu);
    std::lock_guard<std::mutex> l(snaps_mu);
    auto it = snaps.find(id);
    if (it == snaps.end() || it->second.rec.state != SnapState::kDeleting) return Status::Ok();
    if (it->second.open_handles > 0) return Status::Ok();  // again at last close
    if (!it->second.reclaiming) {
      it->second.reclaiming = true;
      auto p = present_epochs.find(it->second.rec.epoch);
      if (p != present_epochs.end()) present_epochs.erase(p);
    }
    s_epoch = it->second.rec.epoch;
    auto n = present_epochs.upper_bound(s_epoch);
    n_epoch = n == present_epochs.end() ? live() : *n;
    reclaiming_name = it->second.rec.name;
    reclaim_entries_done.store(0);
    reclaim_blocks_freed.store(0);
  }
  // Progress stops showing when this reclaim ends, however it ends.
  struct ProgressReset {
    Impl* m;
    ~ProgressReset() {
      std::lock_guard<std::mutex> l(m->snaps_mu);
      m->reclaiming_name.clear();
    }
  } progress_reset{this};
  PSM_SYNC_POINT("Reclaim:Started");
  // Walk dead entries with death in (s, N].
  std::string from = DeadEpochPrefix(s_epoch + 1);
  for (bool more = true; more;) {
    Txn txn(store.get());
    std::vector<Range> frees;
    std::vector<std::pair<Cf, std::string>> lone;  // tombstones left hiding nothing
    size_t n = 0;
    more = false;
    std::string next_from;
    {
      auto it = store->NewIterator(Cf::kDead);
      for (it->Seek(from); it->Valid(); it->Next()) {
        std::string_view k(it->key().data(), it->key().size());
        DeadKey dk;
        PSM_RETURN_IF_ERROR(ParseDeadKey(k, &dk));
        if (dk.death > n_epoch) break;
        if (n >= kReclaimBatch) {
          more = true;
          next_from.assign(k);
          break;
        }
        DeadValue dv;
        PSM_RETURN_IF_ERROR(
            DecodeDeadValue(std::string_view(it->value().data(), it->value().size()), &dv));
        if (AnyIn(dv.birth, dk.death)) continue;  // still visible to a snapshot
        ++n;
        if (dk.kind == DeadKind::kVersion) {
          std::string tomb;
          PSM_RETURN_IF_ERROR(DropVersion(&txn, dk.cf, dk.versioned_key, &tomb));
          if (!tomb.empty()) lone.emplace_back(dk.cf, std::move(tomb));
        } else {
          std::string ak = AllocKey(dk.start);
          std::string av;
          Status gs = txn.Get(Cf::kAlloc, ak, &av);
          AllocRec ar;
          if (gs.ok() && DecodeAlloc(av, &ar).ok() && ar.death == dk.death &&
              ar.length == dv.length) {
            txn.Delete(Cf::kAlloc, ak);
            frees.push_back(Range{dk.start, dv.length});
          }
        }
        txn.Delete(Cf::kDead, k);
      }
      PSM_RETURN_IF_ERROR(Status::FromRocks(it->status()));
    }
    PSM_SYNC_POINT("Reclaim:BeforeBatchCommit");
    PSM_RETURN_IF_ERROR(committer->Apply(&txn, frees, {}));
    PSM_RETURN_IF_ERROR(DropLoneTombstones(lone));
    uint64_t freed = 0;
    for (const Range& r : frees) freed += r.len;
    reclaim_entries_done.fetch_add(n);
    reclaim_blocks_freed.fetch_add(freed);
    if (more) from = next_from;
  }
  // Done: the snapshot record goes.
  Txn txn(store.get());
  txn.Delete(Cf::kSnapshots, SnapshotKey(id));
  txn.Delete(Cf::kVolume, SnapGuidKey(id));
  PSM_RETURN_IF_ERROR(committer->Apply(&txn, {}, {}));
  std::lock_guard<std::mutex> l(snaps_mu);
  snaps.erase(id);
  return Status::Ok();
}

}  // namespace psm
