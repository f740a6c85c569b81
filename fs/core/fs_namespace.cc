// Namespace operations: lookup, attributes, create/link/unlink/rename,
// directories, statfs. Each modification is one Txn committed through the
// Committer, under the volume lock (shared) and the stripes of every inode it
// touches (LockSet). Where a child's inode number is known only after reading
// a directory entry, the entry is read, the locks taken, and the entry read
// again; if it changed, the operation retries.
#include <cstdio>
#include <fcntl.h>
#include <linux/fs.h>
#include <unistd.h>

#include <cstring>

#include "fs/core/fs_impl.h"
#include "fs/base/log.h"
#include "meta/sync_point.h"

namespace psm {
namespace {

using Impl = FileSystem::Impl;

// ReadDir reads ahead in the table files for directories of at least this
// many entries (~a table block's worth), at most this many bytes.
constexpr uint64_t kReadDirAheadEntries = 128;
constexpr uint64_t kReadDirAheadMax = 2u << 20;

// The entries of directory `dir` visible at epoch e, in name order, those
// after `after` only when it is not empty: fn(name, entry) for each until
// it returns false. An undecodable entry is passed over.
Status ForEachDentryAt(rocksdb::Iterator* it, InodeId dir, Epoch e, const std::string& after,
                       const std::function<bool(std::string_view, const Dentry&)>& fn) {
  std::string done = after;  // the name whose older versions are passed
  return ForEachPrefix(
      it, DentryDirPrefix(dir),
      [&](std::string_view k, std::string_view val) {
        InodeId p;
        std::string_view name;
        ParseDentryKey(k, &p, &name);
        if (!done.empty() && name == done) return true;  // an older version
        if (KeyEpoch(k) > e) return true;
        done.assign(name);
        if (val.empty() || val[0] != kTagValue) return true;  // removed
        Dentry d;
        if (!DecodeDentry(val.substr(1), &d).ok()) return true;
        return fn(done, d);
      },
      after.empty() ? std::string() : DentryPrefix(dir, after));
}

// `version` (if given) gets the epoch of the version found, a tombstone's
// too (kNotFound then); it is left alone when the record has no version at
// or below e.
Status GetDentry(Impl* m, Txn* txn, InodeId parent, std::string_view name, Epoch e, Dentry* d,
                 Epoch* version = nullptr) {
  std::string payload;
  std::string prefix = DentryPrefix(parent, name);
  Status s = txn ? txn->GetAt(Cf::kDentries, prefix, e, &payload, version)
                 : GetAt(m->store.get(), Cf::kDentries, prefix, e, &payload, version);
  PSM_RETURN_IF_ERROR(s);
  return DecodeDentry(payload, d);
}

// The live entry `name` of `parent` read for its removal (RemoveEntry),
// with what the removal needs to know of the record's versions: the one
// read (`version`) and, when that was born at the live epoch, whether an
// older one remains under it (`older`). One version iterator serves both:
// the read's seek lands on the newest version and a step tells the rest,
// where the removal's PutVersion made a second iterator and sought the
// same key again. The versions cannot change in between: the parent's
// stripe guards the entry and is held exclusively from this read to the
// removal's commit, and volume_mu shared keeps the live epoch (writers of
// the record hold one or the other). Snapshot reclaim may remove an older
// version meanwhile (it removes only versions no snapshot and not the live
// tree sees); `older` is then stale and the removal leaves a tombstone
// that hides nothing, as PutVersion's own read before a commit would.
// The attributes of the child RemoveEntry removes a link of, as LoadAttr
// reads them (the live cache first), with InodeAttr::sole when they come
// from the store at the live epoch's version: the read's iterator steps
// past that version, as DestroyInode's PutVersion would have had to with
// an iterator and a seek of its own (at the FORGET of an orphan, or in
// this Txn). Only for a file: a directory's attributes, rewritten at every
// change of its entries, may have many overwritten copies to step over.
// The child's stripe is held exclusively from here to the commit, and the
// attributes reach the FORGET through the live cache, which drops them
// when a commit writes the record; reclaim may only remove older versions.
Status ReadChildAttr(Impl* m, InodeId ino, InodeAttr* a) {
  const Epoch e = m->live();
  uint64_t gen = 0;
  const LiveCache::Hit h = m->AskCache(e, [&] { return m->cache.GetAttr(ino, a, &gen); });
  if (h == LiveCache::Hit::kHit) return Status::Ok();
  const std::string prefix = InodePrefix(ino);
  auto it = m->store->NewVersionIterator(Cf::kInodes);
  std::string payload;
  Epoch version = 0;
  PSM_RETURN_IF_ERROR(GetAtIter(it.get(), prefix, e, &payload, &version));
  PSM_RETURN_IF_ERROR(DecodeInode(payload, a));
  a->version = version;
  if (h == LiveCache::Hit::kMiss) m->cache.PutAttr(ino, gen, *a);
  if (version == e && !S_ISDIR(a->mode)) {
    PSM_ASSIGN_OR_RETURN(bool older, NextIsOlderVersion(it.get(), prefix));
    a->sole = !older;
  }
  return Status::Ok();
}

struct EntryRead {
  Dentry d;
  Epoch version = 0;
  bool older = false;
};
Status ReadEntryForRemoval(Impl* m, InodeId parent, std::string_view name, EntryRead* out) {
  const std::string prefix = DentryPrefix(parent, name);
  const Epoch e = m->live();
  auto it = m->store->NewVersionIterator(Cf::kDentries);
  std::string payload;
  PSM_RETURN_IF_ERROR(GetAtIter(it.get(), prefix, e, &payload, &out->version));
  PSM_RETURN_IF_ERROR(DecodeDentry(payload, &out->d));
  out->older = false;
  if (out->version == e) {
    PSM_ASSIGN_OR_RETURN(out->older, NextIsOlderVersion(it.get(), prefix));
  }
  return Status::Ok();
}

Status PutDentry(Impl* m, Txn* txn, InodeId parent, std::string_view name,
                 const std::optional<Dentry>& d) {
  std::string prefix = DentryPrefix(parent, name);
  if (!d) return PutVersion(txn, Cf::kDentries, prefix, m->live(), std::nullopt, *m);
  std::string enc = EncodeDentry(*d);
  return PutVersion(txn, Cf::kDentries, prefix, m->live(), std::string_view(enc), *m);
}

bool IsSnapDirName(NodeId parent, std::string_view name) {
  return parent == kRootIno && name == kSnapDirName;
}

EntryOut MakeEntry(Impl* m, const View& v, InodeId ino, const InodeAttr& a) {
  EntryOut e;
  e.node = MakeNode(v.snap, ino);
  m->FillStat(e.node, a, &e.st);
  e.entry_timeout = e.attr_timeout = m->Timeout(v);
  return e;
}

void Touch(InodeAttr* a) { a->mtime_ns = a->ctime_ns = NowNs(); }

}  // namespace

static Result<EntryOut> LookupImpl(FileSystem::Impl* m, NodeId parent, std::string_view name) {
  if (name.size() > kNameMax) return Status::NameTooLong();
  PSM_ASSIGN_OR_RETURN(View v, m->Resolve(parent));
  if (v.snapdir) {
    SnapshotId id = 0;
    Epoch e = 0;
    {
      std::lock_guard<std::mutex> l(m->snaps_mu);
      for (const auto& [sid, s] : m->snaps) {
        if (s.rec.state == SnapState::kActive && s.rec.name == name) {
          id = sid;
          e = s.rec.epoch;
        }
      }
    }
    if (name == ".") {
      EntryOut out;
      out.node = kSnapDirNode;
      m->SnapDirStat(&out.st);
      return out;
    }
    if (!id) return Status::NotFound();
    InodeAttr a;
    PSM_RETURN_IF_ERROR(m->LoadAttrAt(kRootIno, e, &a));
    View sv{id, kRootIno, e, false};
    return MakeEntry(m, sv, kRootIno, a);
  }
  if (v.live() && IsSnapDirName(v.ino, name)) {
    EntryOut out;
    out.node = kSnapDirNode;
    m->SnapDirStat(&out.st);
    out.entry_timeout = out.attr_timeout = m->opts.live_timeout;
    return out;
  }
  // Only a directory has entries: the parent's attributes are read only
  // when the name is not there, to tell ENOTDIR from ENOENT.
  Dentry d;
  if (Status ds = GetDentry(m, nullptr, v.ino, name, v.epoch, &d); !ds.ok()) {
    if (!ds.Is(Code::kNotFound)) return ds;
    InodeAttr pa;
    PSM_RETURN_IF_ERROR(m->LoadAttrAt(v.ino, v.epoch, &pa));
    if (!S_ISDIR(pa.mode)) return Status::NotDir();
    return ds;
  }
  InodeAttr a;
  Status s = m->LoadAttrAt(d.ino, v.epoch, &a);
  if (s.Is(Code::kNotFound)) return Status::NotFound();  // raced with unlink
  PSM_RETURN_IF_ERROR(s);
  return MakeEntry(m, v, d.ino, a);
}

Result<EntryOut> FileSystem::Lookup(NodeId parent, std::string_view name) {
  auto r = LookupImpl(impl_.get(), parent, name);
  if (r.ok()) impl_->NoteLookup(r->node, S_ISDIR(r->st.st_mode), InoOf(parent));
  // A name inside a snapshot that was deleted no longer exists: ENOENT, as
  // for the snapshot's own name in .snapshots (the parent node itself is
  // stale: GetAttr on it says ESTALE).
  if (r.status().Is(Code::kStale) && SnapOf(parent) != 0) {
    return Status::NotFound("snapshot was deleted");
  }
  return r;
}

void FileSystem::Impl::NoteLookup(NodeId node, bool dir, InodeId parent) {
  if (!opts.count_lookups || SnapOf(node) != 0 || InoOf(node) == kSnapDirIno) return;
  const InodeId ino = InoOf(node);
  bool charge;
  {
    std::lock_guard<std::mutex> l(handles_mu);
    lookups.Touch(parent);  // the cap's clock (ShedKernelRefs) spares it a round
    if (lookups.Add(ino, 1, dir) == 0 && dir && cached_refs.size() < kMaxCachedRefs &&
        cached_refs.insert(ino).second) {
      cache.Enable(ino);
    }
    charge = LookupsResizedLocked();
  }
  if (charge) ChargeLookups();
}

uint64_t KernelRefsCap(const MountOptions& o) {
  if (o.max_kernel_refs != 0) return o.max_kernel_refs;
  uint64_t slots = 1024;
  while (slots * 2 * sizeof(uint64_t) <= o.memory_bytes / 16) slots *= 2;
  return slots / 4 * 3;
}

size_t FileSystem::KernelRefs() {
  std::lock_guard<std::mutex> l(impl_->handles_mu);
  return impl_->lookups.size();
}

// The cap on kernel references (MountOptions::max_kernel_refs,
// docs/architecture.md "Memory"): the FUSE adapter's shedder calls this
// when the kernel holds more inodes than the cap. The kernel drops an
// inode, and sends its FORGET, once no dentry and no open file holds it;
// invalidating a dentry drops it (and, for a directory, every dentry below
// it). So this walks the directories the kernel references (the table's
// `dir` entries, from a cursor kept between calls) and, for each, its live
// entries (from a name kept between calls, so that a huge directory is
// taken in pieces), and asks `inval` to invalidate each entry whose inode
// the kernel references. Nothing is read at a snapshot: snapshot nodes are
// not counted (NoteLookup). shed_mu serializes callers (lock order 7g):
// handles_mu is taken under it, briefly, never the other way round.
size_t FileSystem::ShedKernelRefs(size_t want,
                                  const std::function<void(NodeId, std::string_view)>& inval) {
  Impl* m = impl_.get();
  if (!m->opts.count_lookups || want == 0) return 0;
  std::lock_guard<std::mutex> sl(m->shed_mu);
  size_t issued = 0;
  // At most one revolution of the table a call: a kernel that holds few
  // directories ends the call early.
  size_t slots_left;
  {
    std::lock_guard<std::mutex> l(m->handles_mu);
    slots_left = m->lookups.capacity();
  }
  std::vector<std::string> names;
  std::vector<InodeId> inos;
  std::vector<char> held;
  while (issued < want) {
    if (m->shed_dir == 0) {
      if (slots_left == 0) break;
      std::vector<uint64_t> dirs;
      {
        std::lock_guard<std::mutex> l(m->handles_mu);
        const size_t cap = m->lookups.capacity();
        if (m->shed_seen >= cap) {
          // The root (never looked up, so not in the table) ends each
          // revolution, and the call: its entries hold everything else
          // below them, and the kernel has not dropped what this call named.
          m->shed_seen = 0;
          slots_left = 0;
          dirs.push_back(kRootIno);
        } else {
          const size_t looked = m->lookups.CollectDirs(
              &m->shed_cursor, std::min({slots_left, cap - m->shed_seen, size_t{4096}}), 1, &dirs);
          slots_left = looked == 0 ? 0 : slots_left - std::min(slots_left, looked);
          m->shed_seen += looked == 0 ? cap : looked;
        }
      }
      if (dirs.empty()) continue;
      m->shed_dir = dirs[0];
      m->shed_after.clear();
    }
    // One piece of the directory's live entries, after shed_after.
    const InodeId dir = m->shed_dir;
    const Epoch e = m->live();
    names.clear();
    inos.clear();
    auto it = m->store->NewIterator(Cf::kDentries);
    Status s = ForEachDentryAt(it.get(), dir, e, m->shed_after,
                               [&](std::string_view name, const Dentry& d) {
                                 names.emplace_back(name);
                                 inos.push_back(d.ino);
                                 return names.size() < Impl::kShedBatch;
                               });
    if (!s.ok()) {
      PSM_LOG(kLogWarning, "psmfs: listing directory %llu to cap kernel references: %s\n",
              static_cast<unsigned long long>(dir), s.ToString().c_str());
    }
    held.assign(inos.size(), 0);
    {
      std::lock_guard<std::mutex> l(m->handles_mu);
      // An entry used since the clock last passed it is spared this round.
      for (size_t i = 0; i < inos.size(); ++i) {
        held[i] = m->lookups.Contains(inos[i]) && !m->lookups.Recent(inos[i]);
      }
    }
    size_t n = 0;
    for (size_t i = 0; i < inos.size(); ++i) {
      if (!held[i]) continue;
      inval(MakeNode(0, dir), names[i]);
      ++n;
    }
    issued += n;
    m->shed_invalidated.fetch_add(n, std::memory_order_relaxed);
    if (!s.ok() || names.size() < Impl::kShedBatch) {
      m->shed_dir = 0;  // the directory is done
    } else {
      m->shed_after = names.back();
    }
  }
  return issued;
}

void FileSystem::Impl::ChargeLookups() {
  std::lock_guard<std::mutex> l(charge_mu);
  const size_t b = lookups_bytes.load(std::memory_order_relaxed);
  if (b == charged_lookups_bytes || !store || cache_share_bytes == 0) return;
  charged_lookups_bytes = b;
  store->SetCacheCapacity(cache_share_bytes - std::min(b, cache_share_bytes / 2));
}

void FileSystem::Forget(NodeId node, uint64_t nlookup) {
  const Forgotten one{node, nlookup};
  ForgetMany(std::span<const Forgotten>(&one, 1));
}

void FileSystem::ForgetMany(std::span<const Forgotten> forgets) {
  Impl* m = impl_.get();
  if (!m->opts.count_lookups) return;
  // (inode, its cached attributes go after it): the unused ones, to destroy
  std::vector<std::pair<InodeId, bool>> unused;
  std::vector<InodeId> uncache;  // the others: their cached attributes go now
  bool charge = false;
  {
    std::lock_guard<std::mutex> l(m->handles_mu);
    for (const Forgotten& f : forgets) {
      if (SnapOf(f.node) != 0 || InoOf(f.node) == kSnapDirIno) continue;
      const InodeId ino = InoOf(f.node);
      std::optional<uint64_t> left = m->lookups.Release(ino, f.nlookup);
      if (!left || *left > 0) continue;
      charge = true;
      m->ghosts.erase(ino);
      // Its cached attributes go after MaybeDestroy, which reads them.
      const bool cached = ino != kRootIno && m->cached_refs.erase(ino) != 0;
      // Only an orphan no handle holds is destroyed (Impl::orphans).
      if (m->live_open.count(ino) == 0 && m->orphans.count(ino) != 0) {
        unused.emplace_back(ino, cached);
      } else if (cached) {
        uncache.push_back(ino);
      }
    }
    if (charge) charge = m->LookupsResizedLocked();
  }
  if (charge) m->ChargeLookups();
  for (InodeId ino : uncache) m->cache.Disable(ino);
  if (unused.empty()) return;
  {
    std::lock_guard<std::mutex> l(m->forget_mu);
    m->forget_queue.insert(m->forget_queue.end(), unused.begin(), unused.end());
    if (m->forget_running) return;  // that thread destroys them too
    m->forget_running = true;
  }
  std::vector<InodeId> inos;
  for (;;) {
    {
      std::lock_guard<std::mutex> l(m->forget_mu);
      if (m->forget_queue.empty()) {
        m->forget_running = false;
        return;
      }
      unused.swap(m->forget_queue);
      m->forget_queue.clear();
    }
    inos.clear();
    for (const auto& u : unused) inos.push_back(u.first);
    Status s = m->MaybeDestroy(inos);
    for (const auto& [ino, cached] : unused) {
      if (cached) m->cache.Disable(ino);
    }
    if (!s.ok()) PSM_LOG(kLogWarning, "psmfs: removing unlinked inodes: %s\n", s.ToString().c_str());
  }
}

Result<AttrOut> FileSystem::GetAttr(NodeId node) {
  Impl* m = impl_.get();
  PSM_ASSIGN_OR_RETURN(View v, m->Resolve(node));
  AttrOut out;
  if (v.snapdir) {
    m->SnapDirStat(&out.st);
    out.attr_timeout = m->opts.live_timeout;
    return out;
  }
  InodeAttr a;
  Status s = m->LoadAttrAt(v.ino, v.epoch, &a);
  if (s.Is(Code::kNotFound)) {
    if (!v.live() || !m->GhostAttr(v.ino, &a)) return Status::Stale();  // a ghost answers
  } else {
    PSM_RETURN_IF_ERROR(s);
  }
  m->FillStat(node, a, &out.st);
  out.attr_timeout = m->Timeout(v);
  return out;
}

namespace {

// The times a SETATTR sets (and its ctime, given or now).
void SetTimes(const struct stat& in, uint32_t bits, int64_t now, InodeAttr* a) {
  if (bits & kSetAtimeNow) {
    a->atime_ns = now;
  } else if (bits & kSetAtime) {
    a->atime_ns = int64_t{in.st_atim.tv_sec} * 1000000000 + in.st_atim.tv_nsec;
  }
  if (bits & kSetMtimeNow) {
    a->mtime_ns = now;
  } else if (bits & kSetMtime) {
    a->mtime_ns = int64_t{in.st_mtim.tv_sec} * 1000000000 + in.st_mtim.tv_nsec;
  }
  a->ctime_ns = (bits & kSetCtime) ? int64_t{in.st_ctim.tv_sec} * 1000000000 + in.st_ctim.tv_nsec
                                   : now;
}

}  // namespace

Result<AttrOut> FileSystem::SetAttr(NodeId node, const struct stat& in, uint32_t bits,
                                    const Credentials& cred) {
  Impl* m = impl_.get();
  std::shared_lock<FairSharedMutex> vl(m->volume_mu);
  PSM_ASSIGN_OR_RETURN(View v, m->Resolve(node));
  PSM_RETURN_IF_ERROR(m->CheckWritable(v));
  LockSet ls(m, {v.ino});
  InodeAttr a;
  constexpr uint32_t kTimeBits = kSetAtime | kSetMtime | kSetAtimeNow | kSetMtimeNow | kSetCtime;
  // A ghost (Impl::ghosts; under the stripe its unlink has committed): the
  // kernel writes back the ctime it set at the unlink. Answered from
  // memory, without reading the store; anything else finds no inode.
  bool ghost = false;
  if ((bits & ~kTimeBits) == 0) {
    std::lock_guard<std::mutex> l(m->handles_mu);
    auto it = m->ghosts.find(v.ino);
    if (it != m->ghosts.end()) {
      SetTimes(in, bits, NowNs(), &it->second);
      a = it->second;
      ghost = true;
    }
  }
  if (ghost) {
    AttrOut out;
    m->FillStat(node, a, &out.st);
    out.attr_timeout = m->Timeout(v);
    return out;
  }
  Status s = m->LoadAttr(nullptr, v.ino, m->live(), &a);
  if (s.Is(Code::kNotFound)) return Status::Stale();
  PSM_RETURN_IF_ERROR(s);
  auto kill_mask = [bits](uint32_t mode) -> uint32_t {
    if (!(bits & kKillSuidGid) || S_ISDIR(mode)) return 0;
    return S_ISUID | (((mode & S_IXGRP) || (bits & kKillSgid)) ? S_ISGID : 0);
  };
  if ((bits & kKillSuidGid) && (bits & ~(kKillSuidGid | kKillSgid)) == 0 &&
      (a.mode & kill_mask(a.mode)) == 0) {
    AttrOut out;  // only a kill, and nothing to kill: no change, no commit
    m->FillStat(node, a, &out.st);
    out.attr_timeout = m->Timeout(v);
    return out;
  }
  // The kernel's last word on an unlinked file that nothing has open: it
  // writes back the ctime it set at unlink (fuse_update_ctime) and then
  // forgets the inode, which is destroyed. Nobody can read those times, so
  // they are answered and not committed (one commit less per unlink).
  bool ephemeral = a.nlink == 0 && !S_ISDIR(a.mode) && (bits & ~kTimeBits) == 0;
  if (ephemeral) {
    std::lock_guard<std::mutex> l(m->handles_mu);
    ephemeral = m->live_open.count(v.ino) == 0;
  }
  // Nothing to write when ephemeral (times only): no Txn either.
  std::optional<Txn> txn;
  if (!ephemeral) txn.emplace(m->store.get());
  std::vector<Range> frees, allocs;
  int64_t now = NowNs();
  if (bits & kSetMode) {
    a.mode = (a.mode & S_IFMT) | (in.st_mode & 07777);
    PSM_RETURN_IF_ERROR(m->AclChmod(&*txn, v.ino, a.mode));
  }
  a.mode &= ~kill_mask(a.mode);
  if (bits & kSetUid) a.uid = in.st_uid;
  if (bits & kSetGid) a.gid = in.st_gid;
  if (bits & kSetSize) {
    if (S_ISDIR(a.mode)) return Status::IsDir();
    if (!S_ISREG(a.mode)) return Status::Invalid();
    if (in.st_size < 0) return Status::Invalid();
    uint64_t size = static_cast<uint64_t>(in.st_size);
    if (size > (uint64_t{1} << 52)) return Status::TooBig();
    s = m->Truncate(&*txn, v.ino, &a, size, &frees, &allocs);
    if (!s.ok()) {
      for (const Range& r : allocs) m->alloc->Abort(r);
      return s;
    }
    if (!(bits & (kSetMtime | kSetMtimeNow))) a.mtime_ns = now;
  }
  SetTimes(in, bits, now, &a);
  if (!ephemeral) {
    s = m->PutAttr(&*txn, v.ino, a);
    if (!s.ok()) {
      for (const Range& r : allocs) m->alloc->Abort(r);
      return s;
    }
    PSM_RETURN_IF_ERROR(m->committer->Apply(&*txn, frees, allocs));
  }
  AttrOut out;
  m->FillStat(node, a, &out.st);
  out.attr_timeout = m->Timeout(v);
  return out;
}

Result<std::string> FileSystem::ReadLink(NodeId node) {
  Impl* m = impl_.get();
  PSM_ASSIGN_OR_RETURN(View v, m->Resolve(node));
  if (v.snapdir) return Status::Invalid();
  InodeAttr a;
  PSM_RETURN_IF_ERROR(m->LoadAttrAt(v.ino, v.epoch, &a));
  if (!S_ISLNK(a.mode)) return Status::Invalid();
  return a.inline_data;
}

// Creates a new inode named `name` in `parent` (mknod, mkdir, symlink, create).
// `open`: Create's handle of the new file, registered here as OpenFile
// would (the file is live and regular, its flags without O_CREAT/O_TRUNC)
// while the new inode's stripe is held, so that its attributes go into the
// live cache with it: OpenFile's read of them and the first WRITE's are
// cache hits (issue #16). Left unset (0) when the new inode's stripe could
// not be added without waiting out of order (LockSet::Add); the caller
// then calls OpenFile.
struct CreateOpen {
  int flags = 0;
  uint64_t fh = 0;
};

static Result<EntryOut> CreateNode(Impl* m, NodeId parent, std::string_view name, uint32_t mode,
                                   uint64_t rdev, std::string_view target,
                                   const Credentials& cred, InodeId* ino_out,
                                   CreateOpen* open = nullptr) {
  PSM_RETURN_IF_ERROR(ValidateName(name));
  PSM_ASSIGN_OR_RETURN(View v, m->Resolve(parent));
  PSM_RETURN_IF_ERROR(m->CheckWritable(v));
  if (IsSnapDirName(v.ino, name)) return Status::Exists();
  LockSet ls(m, {v.ino});
  Txn txn(m->store.get());
  InodeAttr pa;
  Status s = m->LoadAttr(&txn, v.ino, m->live(), &pa);
  if (s.Is(Code::kNotFound)) return Status::NotFound("directory was removed");
  PSM_RETURN_IF_ERROR(s);
  if (!S_ISDIR(pa.mode)) return Status::NotDir();
  if (pa.nlink == 0) return Status::NotFound("directory was removed");
  Dentry old;
  Epoch old_version = 0;  // stays 0 when the name never had a version
  s = GetDentry(m, &txn, v.ino, name, m->live(), &old, &old_version);
  if (s.ok()) return Status::Exists();
  if (!s.Is(Code::kNotFound)) return s;
  PSM_ASSIGN_OR_RETURN(InodeId ino, m->AllocIno());
  // Nobody else knows the number yet; after the commit a reader of the
  // directory could, and only the stripe keeps its writers out.
  const bool own = open != nullptr && ls.Add(ino);
  InodeAttr a;
  a.mode = mode;
  a.uid = cred.uid;
  a.gid = cred.gid;
  if (pa.mode & S_ISGID) {
    a.gid = pa.gid;
    if (S_ISDIR(mode)) a.mode |= S_ISGID;
  }
  a.nlink = S_ISDIR(mode) ? 2 : 1;
  a.rdev = rdev;
  a.atime_ns = a.mtime_ns = a.ctime_ns = a.btime_ns = NowNs();
  // Directories: the parent (for ".."). Other files: the directory of the
  // newest name, a hint that lets history/diff name a changed file (fs_history.cc).
  a.parent = v.ino;
  a.inline_data.assign(target);
  PSM_RETURN_IF_ERROR(m->AclInherit(&txn, v.ino, ino, &a, cred.umask));
  // A number AllocIno hands out was never used by any record, live or in a
  // snapshot (its reservation reaches the WAL before any record that uses
  // it, and a receive moves next_ino past the numbers it brings), so there
  // is no older version for PutVersion to seek: the first one is put.
  txn.Put(Cf::kInodes, VersionKey(InodePrefix(ino), m->live()), Tagged(EncodeInode(a)));
  txn.AddCounter(kVolFiles, 1);
  if (old_version == 0) {
    // The name has no version at all, live or in a snapshot (the read above
    // found none at or below the live epoch, and none is newer): nothing for
    // PutVersion to seek. The parent's stripe, held since that read, keeps
    // other writers of the entry out.
    txn.Put(Cf::kDentries, VersionKey(DentryPrefix(v.ino, name), m->live()),
            Tagged(EncodeDentry(Dentry{ino, mode & S_IFMT})));
  } else {
    PSM_RETURN_IF_ERROR(PutDentry(m, &txn, v.ino, name, Dentry{ino, mode & S_IFMT}));
  }
  pa.size++;
  if (S_ISDIR(mode)) pa.nlink++;
  Touch(&pa);
  PSM_RETURN_IF_ERROR(m->PutAttr(&txn, v.ino, pa));
  PSM_RETURN_IF_ERROR(m->committer->Apply(&txn, {}, {}));
  // Both records were just written as their versions at the live epoch
  // (InodeAttr::version: the next PutAttr of either needs no seek).
  NoteWrittenAtLive(&pa, m->live());
  NoteWrittenAtLive(&a, m->live());
  m->cache.SetAttr(v.ino, pa);  // the parent's stripe is still held
  if (own) {
    {
      std::lock_guard<std::mutex> l(m->handles_mu);
      if (m->live_open[ino]++ == 0) m->cache.Enable(ino);
      open->fh = m->next_fh++;
      m->files[open->fh] = FileHandle{MakeNode(0, ino), 0, ino, v.epoch, open->flags};
    }
    m->cache.SetAttr(ino, a);  // and the new inode's
    // A new file has no chunk record at all: its first WRITE need not look.
    if (S_ISREG(mode)) m->cache.SetChunk(ino, 0, /*present=*/false, {});
  }
  if (ino_out) *ino_out = ino;
  m->NoteLookup(MakeNode(v.snap, ino), S_ISDIR(mode), v.ino);
  return MakeEntry(m, v, ino, a);
}

Result<EntryOut> FileSystem::MkNod(NodeId parent, std::string_view name, uint32_t mode,
                                   uint64_t rdev, const Credentials& cred) {
  Impl* m = impl_.get();
  uint32_t type = mode & S_IFMT;
  if (type == 0) mode |= S_IFREG;
  if (!(S_ISREG(mode) || S_ISCHR(mode) || S_ISBLK(mode) || S_ISFIFO(mode) || S_ISSOCK(mode))) {
    return Status::Invalid();
  }
  std::shared_lock<FairSharedMutex> vl(m->volume_mu);
  return CreateNode(m, parent, name, mode, rdev, {}, cred, nullptr);
}

Result<EntryOut> FileSystem::MkDir(NodeId parent, std::string_view name, uint32_t mode,
                                   const Credentials& cred) {
  Impl* m = impl_.get();
  if (parent == kSnapDirNode) {
    if (cred.uid != 0 && cred.uid != m->owner_uid) return Status::Permission();
    PSM_ASSIGN_OR_RETURN(SnapshotInfo info, CreateSnapshot(name, /*from_kernel=*/true));
    return Lookup(kSnapDirNode, info.name);
  }
  std::shared_lock<FairSharedMutex> vl(m->volume_mu);
  return CreateNode(m, parent, name, S_IFDIR | (mode & 07777), 0, {}, cred, nullptr);
}

Result<EntryOut> FileSystem::Symlink(NodeId parent, std::string_view name,
                                     std::string_view target, const Credentials& cred) {
  Impl* m = impl_.get();
  if (target.empty()) return Status::NotFound();
  if (target.size() >= 4096) return Status::NameTooLong();
  std::shared_lock<FairSharedMutex> vl(m->volume_mu);
  return CreateNode(m, parent, name, S_IFLNK | 0777, 0, target, cred, nullptr);
}

Result<std::pair<EntryOut, uint64_t>> FileSystem::Create(NodeId parent, std::string_view name,
                                                         uint32_t mode, int flags,
                                                         const Credentials& cred) {
  Impl* m = impl_.get();
  Result<EntryOut> e = Status::Ok();
  CreateOpen open;
  open.flags = flags & ~O_TRUNC & ~O_CREAT;
  {
    std::shared_lock<FairSharedMutex> vl(m->volume_mu);
    e = CreateNode(m, parent, name, S_IFREG | (mode & 07777), 0, {}, cred, nullptr, &open);
  }
  if (open.fh != 0) return std::make_pair(std::move(e).value(), open.fh);
  if (!e.ok()) {
    if (!e.status().Is(Code::kExists) || (flags & O_EXCL)) return e.status();
    e = Lookup(parent, name);  // lost a race with another creator: open it
    if (!e.ok()) return e.status();
    if (S_ISDIR(e->st.st_mode)) return Status::IsDir();
  }
  PSM_ASSIGN_OR_RETURN(uint64_t fh, OpenFile(e->node, flags & ~O_TRUNC & ~O_CREAT));
  return std::make_pair(std::move(e).value(), fh);
}

Result<EntryOut> FileSystem::Link(NodeId node, NodeId new_parent, std::string_view new_name) {
  Impl* m = impl_.get();
  PSM_RETURN_IF_ERROR(ValidateName(new_name));
  std::shared_lock<FairSharedMutex> vl(m->volume_mu);
  PSM_ASSIGN_OR_RETURN(View v, m->Resolve(node));
  PSM_ASSIGN_OR_RETURN(View pv, m->Resolve(new_parent));
  PSM_RETURN_IF_ERROR(m->CheckWritable(pv));
  // A link would change the inode's link count: inside a snapshot (or the
  // `.snapshots` directory itself) that is a modification like any other.
  if (!v.live()) return Status::ReadOnly("the source is inside a read-only snapshot");
  if (IsSnapDirName(pv.ino, new_name)) return Status::Exists();
  LockSet ls(m, {v.ino, pv.ino});
  Txn txn(m->store.get());
  InodeAttr a, pa;
  Status s = m->LoadAttr(&txn, v.ino, m->live(), &a);
  if (s.Is(Code::kNotFound)) return Status::NotFound();
  PSM_RETURN_IF_ERROR(s);
  if (S_ISDIR(a.mode)) return Status::Permission();
  if (a.nlink == 0) return Status::NotFound();
  if (a.nlink >= 65000) return Status::TooManyLinks();
  PSM_RETURN_IF_ERROR(m->LoadAttr(&txn, pv.ino, m->live(), &pa));
  if (!S_ISDIR(pa.mode)) return Status::NotDir();
  if (pa.nlink == 0) return Status::NotFound();
  Dentry d;
  s = GetDentry(m, &txn, pv.ino, new_name, m->live(), &d);
  if (s.ok()) return Status::Exists();
  if (!s.Is(Code::kNotFound)) return s;
  PSM_RETURN_IF_ERROR(PutDentry(m, &txn, pv.ino, new_name, Dentry{v.ino, a.mode & S_IFMT}));
  a.nlink++;
  a.ctime_ns = NowNs();
  PSM_RETURN_IF_ERROR(m->PutAttr(&txn, v.ino, a));
  pa.size++;
  Touch(&pa);
  PSM_RETURN_IF_ERROR(m->PutAttr(&txn, pv.ino, pa));
  PSM_RETURN_IF_ERROR(m->committer->Apply(&txn, {}, {}));
  m->NoteLookup(MakeNode(0, v.ino), false, pv.ino);
  return MakeEntry(m, pv, v.ino, a);
}

namespace {

// A ghost decided by DropLink (Impl::ghosts), taken back unless the change
// that made it commits (`kept`).
struct GhostFence {
  Impl* m;
  InodeId ino = 0;
  bool kept = false;
  explicit GhostFence(Impl* impl) : m(impl) {}
  ~GhostFence() {
    if (ino != 0 && !kept) m->DropGhost(ino);
  }
  GhostFence(const GhostFence&) = delete;
  GhostFence& operator=(const GhostFence&) = delete;
};

// Drops one link of `child` (already removed from its directory in txn).
// Files with no link left are destroyed, or kept as orphans while a handle
// holds them. One the kernel still references, with no handle, is
// destroyed too and becomes a ghost (Impl::ghosts) through `fence`.
Status DropLink(Impl* m, Txn* txn, InodeId child, InodeAttr* a, std::vector<Range>* frees,
                GhostFence* fence, bool* orphaned = nullptr) {
  if (S_ISDIR(a->mode)) {
    a->nlink = 0;
    return m->DestroyInode(txn, child, a, frees);
  }
  if (a->nlink > 0) a->nlink--;
  a->ctime_ns = NowNs();
  if (a->nlink > 0) return m->PutAttr(txn, child, *a);
  bool open;
  {
    // Decided under handles_mu, as OpenFile registers a handle: an open
    // registered first makes an orphan; one after finds the ghost.
    std::lock_guard<std::mutex> l(m->handles_mu);
    open = m->live_open.count(child) != 0;
    if (open) {
      m->orphans.insert(child);
    } else if (m->lookups.Contains(child)) {
      m->ghosts[child] = *a;
      fence->ino = child;
    }
  }
  if (open) {
    txn->Put(Cf::kVolume, OrphanKey(child), "");
    if (orphaned) *orphaned = true;
    return m->PutAttr(txn, child, *a);
  }
  return m->DestroyInode(txn, child, a, frees);
}

// An unlinked file a handle holds (an orphan), just committed with its
// last link gone: the kernel, when it also holds a reference, sends a
// SETATTR of its ctime at once (fuse_update_ctime) and, after the last
// release, the FORGET that destroys it, and both read its attributes. They
// are kept in the live cache until that FORGET (cached_refs). REQUIRES its
// stripe held exclusively (LiveCache::SetAttr).
void KeepOrphanAttrs(Impl* m, InodeId ino, const InodeAttr& a) {
  {
    std::lock_guard<std::mutex> l(m->handles_mu);
    if (m->lookups.Contains(ino) && m->cached_refs.size() < Impl::kMaxCachedRefs &&
        m->cached_refs.insert(ino).second) {
      m->cache.Enable(ino);
    }
  }
  m->cache.SetAttr(ino, a);
}

Status RemoveEntry(Impl* m, NodeId parent, std::string_view name, bool dir) {
  if (name.size() > kNameMax) return Status::NameTooLong();
  std::shared_lock<FairSharedMutex> vl(m->volume_mu);
  PSM_ASSIGN_OR_RETURN(View v, m->Resolve(parent));
  PSM_RETURN_IF_ERROR(m->CheckWritable(v));
  if (IsSnapDirName(v.ino, name)) return Status::Busy();
  if (name == ".") return dir ? Status::Invalid() : Status::IsDir();
  if (name == "..") return dir ? Status::NotEmpty() : Status::IsDir();
  for (;;) {
    // The entry is read once, under the parent's stripe (which guards it);
    // the child's stripe is added in ascending order or not at all
    // (LockSet::Add). Only when it would have to wait out of order are both
    // taken together and the entry read again.
    std::optional<LockSet> ls;
    ls.emplace(m, std::initializer_list<InodeId>{v.ino});
    EntryRead er;
    PSM_RETURN_IF_ERROR(ReadEntryForRemoval(m, v.ino, name, &er));
    const Dentry d = er.d;
    if (!ls->Add(d.ino)) {
      ls.reset();
      ls.emplace(m, std::initializer_list<InodeId>{v.ino, d.ino});
      PSM_RETURN_IF_ERROR(ReadEntryForRemoval(m, v.ino, name, &er));
      if (er.d.ino != d.ino) continue;  // replaced meanwhile: retry with the new child
    }
    Txn txn(m->store.get());
    InodeAttr pa, a;
    PSM_RETURN_IF_ERROR(m->LoadAttr(&txn, v.ino, m->live(), &pa));
    PSM_RETURN_IF_ERROR(ReadChildAttr(m, d.ino, &a));
    if (dir) {
      if (!S_ISDIR(a.mode)) return Status::NotDir();
      if (a.size != 0) return Status::NotEmpty();
    } else if (S_ISDIR(a.mode)) {
      return Status::IsDir();
    }
    std::vector<Range> frees;
    if (er.version == m->live()) {
      // PutVersion's delete, with what ReadEntryForRemoval found.
      DeleteVersionRead(&txn, Cf::kDentries, VersionKey(DentryPrefix(v.ino, name), er.version),
                        /*newest_tomb=*/false, er.older, m->live(), *m);
    } else {
      PSM_RETURN_IF_ERROR(PutDentry(m, &txn, v.ino, name, std::nullopt));
    }
    bool orphaned = false;
    GhostFence fence(m);
    PSM_RETURN_IF_ERROR(DropLink(m, &txn, d.ino, &a, &frees, &fence, &orphaned));
    if (pa.size) pa.size--;
    if (dir) pa.nlink--;
    Touch(&pa);
    PSM_RETURN_IF_ERROR(m->PutAttr(&txn, v.ino, pa));
    PSM_RETURN_IF_ERROR(m->committer->Apply(&txn, frees, {}));
    fence.kept = true;
    // Written as their versions at the live epoch (InodeAttr::version).
    NoteWrittenAtLive(&pa, m->live());
    NoteWrittenAtLive(&a, m->live());
    m->cache.SetAttr(v.ino, pa);  // the parent's stripe is still held
    if (orphaned) KeepOrphanAttrs(m, d.ino, a);  // and the child's
    return Status::Ok();
  }
}

}  // namespace

Status FileSystem::Unlink(NodeId parent, std::string_view name) {
  if (parent == kSnapDirNode || SnapOf(parent) != 0) return Status::ReadOnly();
  return RemoveEntry(impl_.get(), parent, name, false);
}

Status FileSystem::RmDir(NodeId parent, std::string_view name, const Credentials& cred) {
  Impl* m = impl_.get();
  if (parent == kSnapDirNode) {
    if (cred.uid != 0 && cred.uid != m->owner_uid) return Status::Permission();
    return DeleteSnapshot(name, /*from_kernel=*/true);
  }
  return RemoveEntry(m, parent, name, true);
}

Status FileSystem::Rename(NodeId parent, std::string_view name, NodeId new_parent,
                          std::string_view new_name, unsigned flags) {
  Impl* m = impl_.get();
  if (name.size() > kNameMax) return Status::NameTooLong();
  PSM_RETURN_IF_ERROR(ValidateName(new_name));
  if (flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE)) return Status::Invalid();
  if ((flags & RENAME_NOREPLACE) && (flags & RENAME_EXCHANGE)) return Status::Invalid();
  const bool exchange = flags & RENAME_EXCHANGE;
  std::shared_lock<FairSharedMutex> vl(m->volume_mu);
  PSM_ASSIGN_OR_RETURN(View sv, m->Resolve(parent));
  PSM_ASSIGN_OR_RETURN(View dv, m->Resolve(new_parent));
  PSM_RETURN_IF_ERROR(m->CheckWritable(sv));
  PSM_RETURN_IF_ERROR(m->CheckWritable(dv));
  if (IsSnapDirName(sv.ino, name) || IsSnapDirName(dv.ino, new_name)) return Status::Busy();
  if (name == "." || name == ".." || new_name == "." || new_name == "..") return Status::Busy();
  // Directory moves between parents are serialized for the loop check.
  std::unique_lock<std::mutex> rl(m->rename_mu, std::defer_lock);
  if (sv.ino != dv.ino) rl.lock();
  for (;;) {
    Dentry s0, t0;
    PSM_RETURN_IF_ERROR(GetDentry(m, nullptr, sv.ino, name, m->live(), &s0));
    Status ts = GetDentry(m, nullptr, dv.ino, new_name, m->live(), &t0);
    if (!ts.ok() && !ts.Is(Code::kNotFound)) return ts;
    bool have_t0 = ts.ok();
    LockSet ls(m, {sv.ino, dv.ino, s0.ino, have_t0 ? t0.ino : 0});
    Txn txn(m->store.get());
    GhostFence fence(m);
    Dentry sd, td;
    PSM_RETURN_IF_ERROR(GetDentry(m, &txn, sv.ino, name, m->live(), &sd));
    ts = GetDentry(m, &txn, dv.ino, new_name, m->live(), &td);
    if (!ts.ok() && !ts.Is(Code::kNotFound)) return ts;
    bool have_t = ts.ok();
    if (sd.ino != s0.ino || have_t != have_t0 || (have_t && td.ino != t0.ino)) continue;

    if (sv.ino == dv.ino && name == new_name) return Status::Ok();
    if (have_t && (flags & RENAME_NOREPLACE)) return Status::Exists();
    if (!have_t && exchange) return Status::NotFound();
    InodeAttr spa, dpa, sa, ta;
    PSM_RETURN_IF_ERROR(m->LoadAttr(&txn, sv.ino, m->live(), &spa));
    if (dv.ino != sv.ino) {
      PSM_RETURN_IF_ERROR(m->LoadAttr(&txn, dv.ino, m->live(), &dpa));
      if (!S_ISDIR(dpa.mode)) return Status::NotDir();
      if (dpa.nlink == 0) return Status::NotFound();
    }
    PSM_RETURN_IF_ERROR(m->LoadAttr(&txn, sd.ino, m->live(), &sa));
    const bool sdir = S_ISDIR(sa.mode);
    bool tdir = false;
    if (have_t) {
      PSM_RETURN_IF_ERROR(m->LoadAttr(&txn, td.ino, m->live(), &ta));
      tdir = S_ISDIR(ta.mode);
    }
    // A directory may not move below itself.
    auto below = [&](InodeId dir, InodeId target) -> Result<bool> {
      InodeId cur = target;
      for (int depth = 0; cur != kRootIno && depth < 100000; ++depth) {
        if (cur == dir) return true;
        InodeAttr x;
        PSM_RETURN_IF_ERROR(m->LoadAttr(&txn, cur, m->live(), &x));
        cur = x.parent;
      }
      return cur == dir;
    };
    if (sdir && sv.ino != dv.ino) {
      PSM_ASSIGN_OR_RETURN(bool loop, below(sd.ino, dv.ino));
      if (loop) return Status::Invalid();
    }
    if (exchange && tdir && sv.ino != dv.ino) {
      PSM_ASSIGN_OR_RETURN(bool loop, below(td.ino, sv.ino));
      if (loop) return Status::Invalid();
    }
    if (have_t && td.ino == sd.ino) return Status::Ok();  // two links to one file
    if (have_t && !exchange) {
      if (sdir && !tdir) return Status::NotDir();
      if (!sdir && tdir) return Status::IsDir();
      if (tdir && ta.size != 0) return Status::NotEmpty();
    }
    std::vector<Range> frees;
    InodeAttr& dparent = dv.ino == sv.ino ? spa : dpa;
    const int64_t now = NowNs();
    if (exchange) {
      PSM_RETURN_IF_ERROR(PutDentry(m, &txn, sv.ino, name, Dentry{td.ino, ta.mode & S_IFMT}));
      PSM_RETURN_IF_ERROR(PutDentry(m, &txn, dv.ino, new_name, Dentry{sd.ino, sa.mode & S_IFMT}));
      if (!sdir) sa.parent = dv.ino;  // name hint (fs_history.cc)
      if (!tdir) ta.parent = sv.ino;
      if (sv.ino != dv.ino) {
        if (sdir) {
          sa.parent = dv.ino;
          spa.nlink--;
          dparent.nlink++;
        }
        if (tdir) {
          ta.parent = sv.ino;
          dparent.nlink--;
          spa.nlink++;
        }
      }
      ta.ctime_ns = now;
      PSM_RETURN_IF_ERROR(m->PutAttr(&txn, td.ino, ta));
    } else {
      if (have_t) {
        PSM_RETURN_IF_ERROR(DropLink(m, &txn, td.ino, &ta, &frees, &fence));
        if (dparent.size) dparent.size--;
        if (tdir) dparent.nlink--;
      }
      PSM_RETURN_IF_ERROR(PutDentry(m, &txn, sv.ino, name, std::nullopt));
      PSM_RETURN_IF_ERROR(PutDentry(m, &txn, dv.ino, new_name, Dentry{sd.ino, sa.mode & S_IFMT}));
      if (spa.size) spa.size--;
      dparent.size++;
      if (sdir && sv.ino != dv.ino) {
        sa.parent = dv.ino;
        spa.nlink--;
        dparent.nlink++;
      }
      if (!sdir) sa.parent = dv.ino;  // name hint (fs_history.cc)
    }
    sa.ctime_ns = now;
    PSM_RETURN_IF_ERROR(m->PutAttr(&txn, sd.ino, sa));
    spa.mtime_ns = spa.ctime_ns = now;
    PSM_RETURN_IF_ERROR(m->PutAttr(&txn, sv.ino, spa));
    if (dv.ino != sv.ino) {
      dpa.mtime_ns = dpa.ctime_ns = now;
      PSM_RETURN_IF_ERROR(m->PutAttr(&txn, dv.ino, dpa));
    }
    PSM_RETURN_IF_ERROR(m->committer->Apply(&txn, frees, {}));
    fence.kept = true;
    return Status::Ok();
  }
}

// ---- directories ----

Result<uint64_t> FileSystem::OpenDir(NodeId node) {
  Impl* m = impl_.get();
  PSM_ASSIGN_OR_RETURN(View v, m->Resolve(node));
  if (!v.snapdir) {
    InodeAttr a;
    PSM_RETURN_IF_ERROR(m->LoadAttrAt(v.ino, v.epoch, &a));
    if (!S_ISDIR(a.mode)) return Status::NotDir();
  }
  auto dh = std::make_shared<DirHandle>();
  dh->node = node;
  dh->snap = v.snap;
  std::lock_guard<std::mutex> l(m->handles_mu);
  if (v.snap) {
    std::lock_guard<std::mutex> sl(m->snaps_mu);
    auto it = m->snaps.find(v.snap);
    if (it == m->snaps.end() || it->second.rec.state != SnapState::kActive) return Status::Stale();
    it->second.open_handles++;
  }
  uint64_t fh = m->next_fh++;
  m->dirs[fh] = std::move(dh);
  return fh;
}

Status FileSystem::ReadDir(uint64_t dhid, uint64_t off,
                           const std::function<bool(const DirEntryOut&)>& add) {
  Impl* m = impl_.get();
  std::shared_ptr<DirHandle> dh;
  {
    std::lock_guard<std::mutex> l(m->handles_mu);
    auto it = m->dirs.find(dhid);
    if (it == m->dirs.end()) return Status::BadFd();
    dh = it->second;
  }
  std::lock_guard<std::mutex> dl(dh->mu);
  if (off == 0 || !dh->loaded) {
    // Materialize the listing: entries present throughout appear exactly once.
    dh->ents.clear();
    Epoch e = 0;
    View v;
    if (dh->node == kSnapDirNode) {
      dh->ents.push_back({".", kSnapDirNode, S_IFDIR});
      dh->ents.push_back({"..", kRootIno, S_IFDIR});
      std::lock_guard<std::mutex> l(m->snaps_mu);
      for (const auto& [id, s] : m->snaps) {
        if (s.rec.state == SnapState::kActive) {
          dh->ents.push_back({s.rec.name, MakeNode(id, kRootIno), S_IFDIR});
        }
      }
    } else {
      v.snap = SnapOf(dh->node);
      v.ino = InoOf(dh->node);
      if (v.snap) {
        if (!m->SnapshotUsable(v.snap, &e)) {
          // Deleted, but this handle keeps it readable until closed.
          std::lock_guard<std::mutex> l(m->snaps_mu);
          auto it = m->snaps.find(v.snap);
          if (it == m->snaps.end()) return Status::Stale();
          e = it->second.rec.epoch;
        }
      } else {
        e = m->live();
      }
      InodeAttr a;
      PSM_RETURN_IF_ERROR(m->LoadAttrAt(v.ino, e, &a));
      NodeId up = v.ino == kRootIno ? (v.snap ? kSnapDirNode : kRootIno) : MakeNode(v.snap, a.parent);
      dh->ents.push_back({".", dh->node, S_IFDIR});
      dh->ents.push_back({"..", up, S_IFDIR});
      if (v.snap == 0 && v.ino == kRootIno && m->opts.snapdir_visible) {
        dh->ents.push_back({std::string(kSnapDirName), kSnapDirNode, S_IFDIR});
      }
      // The entries of a directory are adjacent keys: read a large one's
      // table blocks in one read ahead (its size is its number of entries;
      // ~40 bytes each in a table), not the few reads RocksDB's own
      // readahead takes to grow (docs/performance.md, "Cold lookups at
      // 10,000,000 files").
      auto it = a.size >= kReadDirAheadEntries
                    ? m->store->NewReadaheadIterator(
                          Cf::kDentries, std::min<uint64_t>(a.size * 64, kReadDirAheadMax))
                    : m->store->NewIterator(Cf::kDentries);
      Status s = ForEachDentryAt(it.get(), v.ino, e, {},
                                 [&](std::string_view name, const Dentry& d) {
                                   dh->ents.push_back(
                                       {std::string(name), MakeNode(v.snap, d.ino), d.type});
                                   return true;
                                 });
      PSM_RETURN_IF_ERROR(s);
    }
    dh->loaded = true;
  }
  for (uint64_t i = off; i < dh->ents.size(); ++i) {
    const auto& en = dh->ents[i];
    DirEntryOut o{en.name, en.node, en.type, i + 1};
    if (!add(o)) break;
  }
  return Status::Ok();
}

Status FileSystem::ReleaseDir(uint64_t dhid) {
  Impl* m = impl_.get();
  bool kick = false;
  {
    std::lock_guard<std::mutex> l(m->handles_mu);
    auto it = m->dirs.find(dhid);
    if (it == m->dirs.end()) return Status::BadFd();
    SnapshotId snap = it->second->snap;
    m->dirs.erase(it);
    if (snap) {
      std::lock_guard<std::mutex> sl(m->snaps_mu);
      auto s = m->snaps.find(snap);
      if (s != m->snaps.end() && --s->second.open_handles == 0 &&
          s->second.rec.state == SnapState::kDeleting) {
        kick = true;
      }
    }
  }
  if (kick) {
    std::lock_guard<std::mutex> l(m->reclaim_mu);
    m->reclaim_kick = true;
    m->reclaim_cv.notify_all();
  }
  return Status::Ok();
}

Status FileSystem::FsyncDir(uint64_t dh, bool datasync) { return SyncAll(); }

// ---- volume ----

Status FileSystem::StatFs(struct statvfs* out) {
  Impl* m = impl_.get();
  memset(out, 0, sizeof *out);
  // The truth, whatever the scan has reached: `alloc`'s exact total (a
  // counter kept with every commit), not the partial index. Blocks held only
  // by snapshots are in `alloc`, so they count as used.
  const uint64_t total = m->sb.block_count - 1;
  const uint64_t used = std::min<uint64_t>(m->committer->used_blocks(), total);
  out->f_bsize = m->bs;
  out->f_frsize = m->bs;
  out->f_blocks = total;
  out->f_bfree = total - used;
  out->f_bavail = out->f_bfree;
  const uint64_t files = m->committer->files();
  // Inode numbers are 44 bits; report room for as many files as blocks.
  out->f_files = std::max<uint64_t>(total, files + 1024);
  out->f_ffree = out->f_files - std::min<uint64_t>(files, out->f_files);
  out->f_favail = out->f_ffree;
  out->f_namemax = kNameMax;
  out->f_fsid = std::hash<std::string>()(m->sb.uuid);
  if (m->opts.read_only) out->f_flag |= ST_RDONLY;
  return Status::Ok();
}

VolumeStats FileSystem::Stats() {
  Impl* m = impl_.get();
  VolumeStats s;
  struct statvfs sv;
  (void)StatFs(&sv);
  s.uuid = m->sb.uuid;
  s.block_size = m->bs;
  s.total_blocks = sv.f_blocks;
  s.free_blocks = sv.f_bfree;
  s.used_blocks = sv.f_blocks - sv.f_bfree;
  s.files = m->committer->files();
  s.epoch = m->live();
  s.mount_generation = m->sb.mount_generation;
  const AllocatorStats as = m->alloc->Stats();
  s.free_ranges = as.free_ranges;
  s.free_index_bytes = as.index_bytes;
  s.cached_chunk_maps = m->cache.chunks_cached();
  s.cache_hits = m->cache.hits();
  {
    // Resident pages (statm's second field).
    FILE* f = std::fopen("/proc/self/statm", "r");
    unsigned long long size = 0, resident = 0;
    if (f) {
      if (std::fscanf(f, "%llu %llu", &size, &resident) == 2) {
        s.rss_bytes = resident * static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
      }
      std::fclose(f);
    }
  }
  s.memory_budget_bytes = m->opts.memory_bytes;
  if (m->store) {
    s.metadata_cache_bytes = m->store->cache_capacity();
    s.metadata_cache_used_bytes = m->store->cache_usage();
  }
  s.live_cache_bytes = m->cache.bytes_cached();
  {
    std::lock_guard<std::mutex> l(m->handles_mu);
    s.kernel_refs = m->lookups.size();
    s.kernel_refs_bytes = m->lookups.bytes();
  }
  s.kernel_refs_cap = m->opts.count_lookups ? KernelRefsCap(m->opts) : 0;
  s.kernel_refs_shed = m->shed_invalidated.load(std::memory_order_relaxed);
  s.checksums = m->checksums;
  s.checksum_errors = m->checksum_errors.load();
  if (m->intents) s.write_intent_regions = m->intents->size();
  s.intent_recovered_blocks = m->intent_recovered_blocks;
  s.mirror = m->mirror->Info();
  if (m->committer) {
    Status f = m->committer->Failure();
    if (!f.ok()) s.failure = f.message();
    s.sync_cycles = m->committer->sync_cycles();
    s.commits = m->committer->last_seq();
  }
  std::lock_guard<std::mutex> l(m->snaps_mu);
  for (const auto& [id, e] : m->snaps) {
    if (e.rec.state == SnapState::kActive) {
      s.snapshots++;
    } else {
      s.pending_reclaim++;
    }
  }
  s.reclaiming = m->reclaiming_name;
  if (!s.reclaiming.empty()) {
    s.reclaim_entries_done = m->reclaim_entries_done.load();
    s.reclaim_blocks_freed = m->reclaim_blocks_freed.load();
  }
  s.restoring = m->restoring_name;
  if (!s.restoring.empty()) {
    s.restore_done = m->restore_done.load();
    s.restore_total = m->restore_total.load();
  }
  return s;
}

ScanStatus FileSystem::GetScanStatus() { return impl_->scanner->GetStatus(); }

void FileSystem::StartScan(const std::string& reason) { impl_->scanner->Start(reason); }

bool FileSystem::WaitScan(double timeout_sec) { return impl_->scanner->WaitIdle(timeout_sec); }

std::vector<std::pair<uint64_t, uint64_t>> FileSystem::FreeExtents() {
  std::vector<std::pair<uint64_t, uint64_t>> out;
  for (const Range& r : impl_->alloc->FreeRanges()) out.emplace_back(r.start, r.len);
  return out;
}

}  // namespace psm
