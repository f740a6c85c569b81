// Format, mount (Open), unmount (Close), and the core's shared helpers:
// resolving node ids, loading and storing attributes, inode numbers.
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>

#include "fs/core/fs_impl.h"
#include "fs/base/log.h"
#include "meta/barrier_fs.h"
#include "meta/sync_point.h"

namespace psm {
namespace {

constexpr uint64_t kInoReserveBatch = 4096;

std::string MetaPath(const std::string& dir) { return dir + "/meta"; }
std::string LockPath(const std::string& dir, const std::string& uuid) {
  return dir + "/psmfs." + uuid + ".mount.lock";
}

Status ReadU64(Store* st, std::string_view key, uint64_t* v) {
  std::string s;
  Status r = st->Get(Cf::kVolume, key, &s);
  if (!r.ok()) return Status::Corruption("volume record '" + std::string(key) + "' missing");
  if (s.size() != 8) return Status::Corruption("volume record '" + std::string(key) + "' bad");
  *v = GetLE64(s.data());
  return Status::Ok();
}

std::string HostName() {
  char h[256] = {0};
  gethostname(h, sizeof h - 1);
  return h;
}

}  // namespace

Status LoadVolumeCounters(Store* store, uint64_t* used_blocks, uint64_t* files) {
  Status a = GetCounter(store, kVolUsedBlocks, used_blocks);
  Status b = GetCounter(store, kVolFiles, files);
  if (a.ok() && b.ok()) return Status::Ok();
  if (!a.Is(Code::kNotFound) && !a.ok()) return a;
  if (!b.Is(Code::kNotFound) && !b.ok()) return b;
  // A volume formatted before the counters existed: count once, and store
  // the result (unless read-only) so later mounts read it.
  uint64_t used = 0, n = 0;
  {
    auto it = store->NewIterator(Cf::kAlloc);
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      AllocRec r;
      if (DecodeAlloc(std::string_view(it->value().data(), it->value().size()), &r).ok()) {
        used += r.length;
      }
    }
    PSM_RETURN_IF_ERROR(Status::FromRocks(it->status()));
  }
  {
    auto it = store->NewIterator(Cf::kInodes);
    std::string last;
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      std::string_view k(it->key().data(), it->key().size());
      std::string_view p = KeyPrefix(k);
      if (p == last) continue;  // an older version
      last.assign(p);
      if (it->value().size() > 0 && it->value()[0] == kTagValue) ++n;
    }
    PSM_RETURN_IF_ERROR(Status::FromRocks(it->status()));
  }
  *used_blocks = used;
  *files = n;
  if (!store->read_only()) {
    Txn txn(store);
    txn.Put(Cf::kVolume, kVolUsedBlocks, LE64(used));
    txn.Put(Cf::kVolume, kVolFiles, LE64(n));
    PSM_RETURN_IF_ERROR(txn.Commit());
  }
  return Status::Ok();
}

Status ValidateName(std::string_view name) {
  if (name.empty()) return Status::NotFound("empty name");
  if (name.size() > kNameMax) return Status::NameTooLong();
  if (name.find('/') != std::string_view::npos || name.find('\0') != std::string_view::npos) {
    return Status::Invalid("name contains '/' or NUL");
  }
  return Status::Ok();
}

Status Format(const std::string& dir, const FormatOptions& o) {
  namespace fsys = std::filesystem;
  std::error_code ec;
  if (o.block_size < 512 || o.block_size > 65536 || (o.block_size & (o.block_size - 1))) {
    return Status::Invalid("block size must be a power of two from 512 to 65536");
  }
  if (o.chunk_bytes % o.block_size || o.chunk_bytes / o.block_size == 0 ||
      o.chunk_bytes / o.block_size > 65536) {
    return Status::Invalid("chunk size must be a multiple of the block size");
  }
  bool exists = fsys::exists(ImagePath(dir), ec) || fsys::is_symlink(ImagePath(dir), ec) ||
                fsys::exists(MetaPath(dir), ec);
  if (exists && !o.force) {
    return Status::Exists(dir + " already holds a volume (use --force to overwrite it)");
  }
  fsys::create_directories(dir, ec);
  if (ec) return Status::IOError("cannot create " + dir + ": " + ec.message());
  if (exists) {
    // Refuse to destroy a volume that is mounted.
    for (const auto& e : fsys::directory_iterator(dir, ec)) {
      std::string n = e.path().filename().string();
      if (n.rfind("psmfs.", 0) == 0 && n.size() > 11 && n.substr(n.size() - 11) == ".mount.lock") {
        int fd = ::open(e.path().c_str(), O_RDWR | O_CLOEXEC);
        if (fd >= 0) {
          bool busy = flock(fd, LOCK_EX | LOCK_NB) != 0;
          ::close(fd);
          if (busy) return Status::Busy(dir + " is mounted; unmount it before formatting");
        }
        fsys::remove(e.path(), ec);
      }
    }
    fsys::remove_all(MetaPath(dir), ec);
    fsys::remove(MirrorStatePath(dir), ec);
    if (!o.image_path.empty() || !fsys::is_symlink(ImagePath(dir), ec)) {
      fsys::remove(ImagePath(dir), ec);
    }
  }
  std::shared_ptr<BlockDevice> dev = o.device;
  if (!dev) {
    std::string img = ImagePath(dir);
    bool create = true;
    if (!o.image_path.empty()) {
      fsys::create_symlink(fsys::absolute(o.image_path), img, ec);
      if (ec && !fsys::is_symlink(img)) {
        return Status::IOError("cannot link " + img + ": " + ec.message());
      }
      struct stat st;
      create = !(::stat(o.image_path.c_str(), &st) == 0 && S_ISBLK(st.st_mode));
      if (create && o.size_bytes == 0) return Status::Invalid("--size is required for an image file");
    } else if (o.size_bytes == 0) {
      return Status::Invalid("--size is required");
    }
    PSM_ASSIGN_OR_RETURN(auto d, OpenPosixDevice(img, create, o.size_bytes));
    dev = std::move(d);
  }
  std::shared_ptr<BlockDevice> mdev = o.mirror_device;
  std::string mirror_path;
  if (!o.mirror_path.empty()) {
    mirror_path = fsys::absolute(o.mirror_path, ec).lexically_normal().string();
    if (!mdev) {
      if (fsys::equivalent(mirror_path, ImagePath(dir), ec)) {
        return Status::Invalid(mirror_path + " is the volume's own image");
      }
      struct stat mst;
      const bool blockdev = ::stat(mirror_path.c_str(), &mst) == 0 && S_ISBLK(mst.st_mode);
      PSM_ASSIGN_OR_RETURN(auto d, OpenPosixDevice(mirror_path, !blockdev, dev->size()));
      mdev = std::move(d);
    }
    if (mdev->size() < dev->size()) {
      return Status::NoSpace("the mirror " + mirror_path + " holds " +
                             std::to_string(mdev->size()) + " bytes, less than the image's " +
                             std::to_string(dev->size()));
    }
  }
  uint64_t bytes = o.size_bytes ? std::min<uint64_t>(o.size_bytes, dev->size()) : dev->size();
  Superblock sb;
  sb.format_version = kFormatVersion;
  sb.block_size = o.block_size;
  sb.block_count = bytes / o.block_size;
  sb.chunk_blocks = static_cast<uint32_t>(o.chunk_bytes / o.block_size);
  sb.uuid = NewUuid();
  sb.mount_generation = 0;
  if (sb.block_count < 16) return Status::Invalid("volume too small (at least 16 blocks)");

  StoreOptions so;
  so.create_if_missing = true;
  so.error_if_exists = true;
  PSM_ASSIGN_OR_RETURN(auto store, Store::Open(MetaPath(dir), so));
  Txn txn(store.get());
  txn.Put(Cf::kVolume, kVolFormat, LE64(kMetaFormat));
  txn.Put(Cf::kVolume, kVolUuid, sb.uuid);
  txn.Put(Cf::kVolume, kVolEpoch, LE64(1));
  txn.Put(Cf::kVolume, kVolNextIno, LE64(kFirstIno));
  txn.Put(Cf::kVolume, kVolNextSnap, LE64(1));
  txn.Put(Cf::kVolume, kVolBlockSize, LE64(sb.block_size));
  txn.Put(Cf::kVolume, kVolBlockCount, LE64(sb.block_count));
  txn.Put(Cf::kVolume, kVolChunkBlocks, LE64(sb.chunk_blocks));
  txn.Put(Cf::kVolume, kVolChecksum, LE64(o.checksum ? 1 : 0));
  txn.Put(Cf::kVolume, kVolUsedBlocks, LE64(0));
  txn.Put(Cf::kVolume, kVolFiles, LE64(1));  // the root directory
  InodeAttr root;
  root.mode = S_IFDIR | 0755;
  root.uid = geteuid();
  root.gid = getegid();
  root.nlink = 2;
  root.parent = kRootIno;
  root.atime_ns = root.mtime_ns = root.ctime_ns = root.btime_ns = NowNs();
  txn.Put(Cf::kInodes, VersionKey(InodePrefix(kRootIno), 1), Tagged(EncodeInode(root)));
  PSM_RETURN_IF_ERROR(txn.Commit());
  PSM_RETURN_IF_ERROR(store->FlushAll());
  store.reset();
  PSM_RETURN_IF_ERROR(WriteSuperblock(dev.get(), sb));
  if (!mdev) return Status::Ok();
  // A new image is zeros but for its superblock: the mirror holds the same
  // blocks once it holds the superblock too.
  PSM_RETURN_IF_ERROR(WriteSuperblock(mdev.get(), sb));
  return SaveMirrorState(MirrorStatePath(dir), MirrorState{mirror_path, -1, 0});
}

Result<std::unique_ptr<FileSystem>> FileSystem::Open(const std::string& dir_in,
                                                     const MountOptions& opts) {
  namespace fsys = std::filesystem;
  std::error_code ec;
  std::string dir = fsys::absolute(dir_in, ec).lexically_normal().string();
  if (!dir.empty() && dir.size() > 1 && dir.back() == '/') dir.pop_back();
  struct stat dst;
  if (::stat(dir.c_str(), &dst) != 0 || !S_ISDIR(dst.st_mode)) {
    return Status::NotFound("no volume at " + dir + " (not a directory)");
  }
  auto impl = std::make_unique<Impl>();
  impl->dir = dir;
  impl->opts = opts;
  impl->owner_uid = dst.st_uid;
  impl->owner_gid = dst.st_gid;

  std::unique_ptr<BlockDevice> base;
  if (opts.device) {
    base = std::make_unique<SharedDevice>(opts.device);
  } else {
    if (!fsys::exists(ImagePath(dir), ec)) {
      return Status::NotFound("no volume at " + dir + ": " + ImagePath(dir) + " is missing");
    }
    PSM_ASSIGN_OR_RETURN(base, OpenPosixDevice(ImagePath(dir), false, 0));
  }
  {
    // Every volume's image goes through a MirrorDevice (a mirror can be
    // attached to a mounted volume); the mirror itself is set up once the
    // mount lock is held (below).
    auto md = std::make_unique<MirrorDevice>(std::move(base), ImagePath(dir), MirrorStatePath(dir));
    impl->mirror = md.get();
    impl->dev = std::make_unique<TrackedDevice>(std::move(md));
  }
  {
    Status s = ReadSuperblock(impl->dev.get(), &impl->sb);
    if (!s.ok()) return Status::Corruption(dir + ": " + s.message());
  }
  impl->bs = impl->sb.block_size;
  impl->chunk_blocks = impl->sb.chunk_blocks;

  // One writer at a time: an exclusive lock named after the volume UUID.
  if (opts.take_lock && !opts.read_only) {
    std::string lp = LockPath(dir, impl->sb.uuid);
    int fd = ::open(lp.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return Status::FromErrno(errno, "cannot open lock file " + lp);
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
      char buf[512] = {0};
      ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
      ::close(fd);
      std::string holder = n > 0 ? std::string(buf, n) : "another process";
      while (!holder.empty() && holder.back() == '\n') holder.pop_back();
      return Status::Busy("volume " + dir + " is already mounted by " + holder);
    }
    char since[64];
    time_t now = time(nullptr);
    struct tm tmv;
    localtime_r(&now, &tmv);
    strftime(since, sizeof since, "%Y-%m-%d %H:%M:%S %z", &tmv);
    std::string info = "pid " + std::to_string(getpid()) + " on host " + HostName() + " since " +
                       since + "\n";
    if (ftruncate(fd, 0) != 0 || pwrite(fd, info.data(), info.size(), 0) < 0) {
      ::close(fd);
      return Status::IOError("cannot write lock file " + lp);
    }
    impl->lock_fd = fd;
  }

  {
    Status s = OpenMirror(dir, opts, impl->mirror);
    if (!s.ok()) {
      if (impl->lock_fd >= 0) ::close(impl->lock_fd);
      return Status::IOError(dir + ": " + s.message());
    }
  }

  StoreOptions so;
  so.read_only = opts.read_only;
  so.cache_bytes = std::max<uint64_t>(opts.memory_bytes / 2, 8u << 20);
  impl->cache_share_bytes = so.cache_bytes;
  impl->cache.SetByteLimit(std::max<uint64_t>(opts.memory_bytes / 8, 1u << 20));
  if (opts.count_lookups) {
    // The kernel never looks the root up: its attributes stay cached.
    impl->cached_refs.insert(kRootIno);
    impl->cache.Enable(kRootIno);
  }
  TrackedDevice* tdev = impl->dev.get();
  so.fs = std::make_shared<BarrierFileSystem>(
      opts.meta_fs ? opts.meta_fs : rocksdb::FileSystem::Default(),
      [tdev] { return tdev->SyncIfDirty(); });
  auto store_r = Store::Open(MetaPath(dir), so);
  if (!store_r.ok()) {
    if (impl->lock_fd >= 0) ::close(impl->lock_fd);
    return Status::Corruption(dir + ": " + store_r.status().message());
  }
  impl->store = std::move(store_r).value();
  Store* store = impl->store.get();

  auto fail = [&](Status s) -> Status {
    impl->store.reset();
    if (impl->lock_fd >= 0) ::close(impl->lock_fd);
    impl->lock_fd = -1;
    return s;
  };
  std::string uuid;
  if (!store->Get(Cf::kVolume, kVolUuid, &uuid).ok() || uuid != impl->sb.uuid) {
    return fail(Status::Corruption(dir + ": metadata belongs to another volume (UUID mismatch)"));
  }
  uint64_t v = 0;
  Status s = ReadU64(store, kVolFormat, &v);
  if (!s.ok()) return fail(s);
  if (v != kMetaFormat && v != kMetaFormatLegacyCsums) {
    return fail(Status::NotSupported("unknown metadata format " + std::to_string(v)));
  }
  const uint64_t meta_format = v;
  if (!(s = ReadU64(store, kVolEpoch, &v)).ok()) return fail(s);
  impl->epoch.store(v);
  if (!(s = ReadU64(store, kVolNextIno, &v)).ok()) return fail(s);
  impl->next_ino = impl->ino_reserved = v;
  if (!(s = ReadU64(store, kVolNextSnap, &v)).ok()) return fail(s);
  impl->next_snap = v;

  // Snapshot catalog.
  std::vector<SnapshotId> to_reclaim;
  {
    auto it = store->NewIterator(Cf::kSnapshots);
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      SnapEntry e;
      Status d = DecodeSnapshot(std::string_view(it->value().data(), it->value().size()), &e.rec);
      if (!d.ok()) return fail(d);
      SnapshotId id = SnapshotKeyId(std::string_view(it->key().data(), it->key().size()));
      if (e.rec.state == SnapState::kDeleting) {
        e.reclaiming = true;  // no handle can be open: reclaim at once
        to_reclaim.push_back(id);
      } else {
        impl->present_epochs.insert(e.rec.epoch);
      }
      impl->snapdir_mtime_ns = std::max(impl->snapdir_mtime_ns, e.rec.ctime_ns);
      impl->snaps.emplace(id, std::move(e));
    }
    if (!it->status().ok()) return fail(Status::FromRocks(it->status()));
  }
  if (impl->snapdir_mtime_ns == 0) impl->snapdir_mtime_ns = NowNs();

  // Mount generation and owner record.
  std::string reason = opts.scan_reason;
  if (!opts.read_only) {
    std::string owner;
    bool unclean = store->Get(Cf::kVolume, kVolOwner, &owner).ok() && !owner.empty() &&
                   owner.rfind("clean", 0) != 0;
    if (reason.empty()) reason = unclean ? "failover" : "mount";
    impl->sb.mount_generation++;
    s = WriteSuperblock(impl->dev.get(), impl->sb);
    if (!s.ok()) return fail(s);
    std::string rec = "mounted pid " + std::to_string(getpid()) + " host " + HostName() +
                      " generation " + std::to_string(impl->sb.mount_generation);
    s = store->Put(Cf::kVolume, kVolOwner, rec);
    if (s.ok()) s = store->SyncWal();
    if (!s.ok()) return fail(s);
  } else if (reason.empty()) {
    reason = "mount";
  }

  impl->alloc = std::make_unique<Allocator>(1, impl->sb.block_count);
  impl->committer = std::make_unique<Committer>(impl->dev.get(), store, impl->alloc.get(),
                                                 &impl->cache);
  impl->pending_csums = std::make_unique<PendingChecksums>(store, impl->committer.get());
  impl->committer->SetPending(impl->pending_csums.get());
  {
    // Format 1's one record per block (keys.h LegacyCsumKey) is read as it
    // is, for as long as any is left (they sort first: one seek tells); from
    // the first read-write mount on, checksums are written in groups, which
    // psmfs before format 2 cannot read: `format` says so.
    const bool legacy = HasLegacyChecksums(store, &s);
    if (!s.ok()) return fail(s);
    impl->pending_csums->SetLegacy(legacy);
    if (meta_format != kMetaFormat && !opts.read_only) {
      s = store->Put(Cf::kVolume, kVolFormat, LE64(kMetaFormat));
      if (!s.ok()) return fail(s);
    }
  }
  impl->intents =
      std::make_unique<IntentMap>(store, impl->committer.get(), impl->pending_csums.get(),
                                  (impl->sb.block_count + (uint64_t{1} << kIntentShift) - 1) >>
                                      kIntentShift);
  {
    uint64_t used = 0, files = 0;
    s = LoadVolumeCounters(store, &used, &files);
    if (!s.ok()) return fail(s);
    impl->committer->LoadCounters(used, files);
  }
  impl->scanner = std::make_unique<Scanner>(store, impl->alloc.get(),
                                            ScannerOptions{opts.scan_records_per_step});
  {
    // Whether GetXattr("security.capability") may need a lookup. A volume
    // without the key (formatted before it existed) is scanned once.
    std::string v;
    Status g = store->Get(Cf::kVolume, kVolCapabilities, &v);
    if (g.Is(Code::kNotFound)) {
      bool any = false;
      auto it = store->NewIterator(Cf::kXattrs);
      for (it->SeekToFirst(); it->Valid() && !any; it->Next()) {
        std::string_view k(it->key().data(), it->key().size());
        if (k.size() < 16) continue;
        InodeId ino;
        std::string_view name;
        ParseXattrKey(k, &ino, &name);
        any = name == kCapabilityXattr;
      }
      s = Status::FromRocks(it->status());
      if (!s.ok()) return fail(s);
      v = any ? "1" : "0";
      if (!opts.read_only) {
        s = store->Put(Cf::kVolume, kVolCapabilities, v);
        if (!s.ok()) return fail(s);
      }
    } else if (!g.ok()) {
      return fail(g);
    }
    impl->capabilities.store(v != "0");
  }

  {
    // Data checksums. A volume formatted before they existed has no key:
    // its first read-write mount turns them on for the blocks written from
    // then on (docs/integrity.md, "Volumes made before checksums").
    std::string v;
    Status g = store->Get(Cf::kVolume, kVolChecksum, &v);
    if (g.Is(Code::kNotFound)) {
      v = LE64(1);
      if (!opts.read_only) {
        s = store->Put(Cf::kVolume, kVolChecksum, v);
        if (!s.ok()) return fail(s);
      }
    } else if (!g.ok()) {
      return fail(g);
    }
    impl->checksums = v.size() == 8 && GetLE64(v.data()) != 0;
  }
  // Overwrites in place an unclean shutdown interrupted: their blocks get
  // the checksums of what reached the disk (fs/core/intent.cc).
  s = impl->RecoverIntents();
  if (!s.ok()) return fail(s);

  // Orphans: files unlinked while open when the previous owner stopped.
  if (!opts.read_only) {
    std::vector<InodeId> orphans;
    auto it = store->NewIterator(Cf::kVolume);
    s = ForEachPrefix(it.get(), kOrphanPrefix, [&](std::string_view k, std::string_view) {
      orphans.push_back(GetBE64(k.data() + kOrphanPrefix.size()));
      return true;
    });
    if (!s.ok()) return fail(s);
    for (InodeId ino : orphans) {
      s = impl->DestroyOrphan(ino);
      if (!s.ok()) return fail(s);
    }
  }
  // A restore that a crash interrupted: run it again before serving.
  if (!opts.read_only) {
    bool resumed = false;
    s = impl->ResumeRestore(&resumed);
    if (!s.ok()) return fail(s);
    if (resumed && opts.scan_reason.empty()) reason = "restore";
  }
  if (opts.start_scanner) impl->scanner->Start(reason);
  if (!opts.read_only) {
    Impl* raw = impl.get();
    // Intents of regions idle for 2 s whose overwrites are durable go.
    impl->committer->SetTick([raw] { raw->intents->DropIdle(2'000'000'000); });
    impl->committer->Start(std::max<uint32_t>(1, opts.commit_interval_ms));
    impl->reclaim_kick = !to_reclaim.empty();
    impl->reclaim_thread = std::thread([raw] { raw->ReclaimLoop(); });
    // A stale side that is online (a mirror back after a failure, an
    // attach or a resilver the last unmount or a crash interrupted).
    impl->mirror->StartResilver(opts.resilver_rate);
  }
  // The last scrub's result; a scrub that was running resumes.
  s = impl->LoadScrub();
  if (!s.ok()) PSM_LOG(kLogWarning, "cannot read the last scrub's record: %s", s.ToString().c_str());
  return std::unique_ptr<FileSystem>(new FileSystem(std::move(impl)));
}

FileSystem::FileSystem(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

FileSystem::~FileSystem() { (void)Close(); }

Status FileSystem::Close() {
  Impl* m = impl_.get();
  if (!m || m->closed) return Status::Ok();
  m->closed = true;
  m->ShutdownScrub();
  m->mirror->StopResilver();  // stores how far it got
  {
    std::lock_guard<std::mutex> l(m->reclaim_mu);
    m->reclaim_stop = true;
  }
  m->reclaim_cv.notify_all();
  if (m->reclaim_thread.joinable()) m->reclaim_thread.join();
  m->alloc->Shutdown();
  m->scanner->Stop();
  Status st;
  if (!m->opts.read_only) {
    st = m->committer->SyncAll();  // commits the staged checksums first
    m->committer->Stop();
    if (st.ok() && !m->pending_csums->empty()) {
      st = Status::IOError("checksums were staged after the last sync; the write intents stay");
    }
    if (st.ok()) {
      // Every overwrite in place is durable: no intent is needed any more.
      Txn txn(m->store.get());
      auto it = m->store->NewIterator(Cf::kVolume);
      st = ForEachPrefix(it.get(), kIntentPrefix, [&](std::string_view k, std::string_view) {
        txn.Delete(Cf::kVolume, k);
        return true;
      });
      if (st.ok() && !txn.empty()) st = txn.Commit();
    }
    if (st.ok()) st = m->store->Put(Cf::kVolume, kVolOwner, "clean");
    if (st.ok()) st = m->store->FlushAll();
  } else {
    m->committer->Stop();
  }
  m->scanner.reset();
  m->committer.reset();
  m->store.reset();
  if (m->lock_fd >= 0) {
    ::close(m->lock_fd);
    m->lock_fd = -1;
  }
  return st;
}

const std::string& FileSystem::uuid() const { return impl_->sb.uuid; }
uint32_t FileSystem::block_size() const { return impl_->bs; }

void FileSystem::SetInvalidators(std::function<void(NodeId, std::string_view)> entry,
                                 std::function<void(NodeId)> inode,
                                 std::function<void()> drain) {
  impl_->inval_entry = std::move(entry);
  impl_->inval_inode = std::move(inode);
  impl_->inval_drain = std::move(drain);
}

// ---- Impl helpers ----

bool FileSystem::Impl::AnyIn(Epoch lo, Epoch hi) const {
  std::lock_guard<std::mutex> l(snaps_mu);
  auto it = present_epochs.lower_bound(lo);
  return it != present_epochs.end() && *it < hi;
}

bool FileSystem::Impl::SnapshotUsable(SnapshotId id, Epoch* e) {
  std::lock_guard<std::mutex> l(snaps_mu);
  auto it = snaps.find(id);
  if (it == snaps.end() || it->second.rec.state != SnapState::kActive) return false;
  *e = it->second.rec.epoch;
  return true;
}

Result<View> FileSystem::Impl::Resolve(NodeId node) {
  View v;
  v.snap = SnapOf(node);
  v.ino = InoOf(node);
  if (v.snap == 0) {
    if (v.ino == kSnapDirIno) {
      v.snapdir = true;
      return v;
    }
    v.epoch = live();
    return v;
  }
  if (!SnapshotUsable(v.snap, &v.epoch)) return Status::Stale("snapshot was deleted");
  return v;
}

Status FileSystem::Impl::LoadAttr(Txn* txn, InodeId ino, Epoch e, InodeAttr* a) {
  std::string payload;
  // A Txn that has written nothing reads what the store holds, which is
  // what the cache holds for an open file: a write's first read of its
  // file's attributes needs no store lookup.
  // a->version: the epoch of the version read (InodeAttr::version), which
  // PutAttr uses; the cache keeps it with the attributes.
  Epoch version = 0;
  if (txn && !txn->empty()) {
    PSM_RETURN_IF_ERROR(txn->GetAt(Cf::kInodes, InodePrefix(ino), e, &payload, &version));
    PSM_RETURN_IF_ERROR(DecodeInode(payload, a));
    a->version = version;
    return Status::Ok();
  }
  // An open live file: its newest record may be cached.
  uint64_t gen = 0;
  const LiveCache::Hit h = AskCache(e, [&] { return cache.GetAttr(ino, a, &gen); });
  if (h == LiveCache::Hit::kHit) return Status::Ok();
  PSM_RETURN_IF_ERROR(GetAt(store.get(), Cf::kInodes, InodePrefix(ino), e, &payload, &version));
  PSM_RETURN_IF_ERROR(DecodeInode(payload, a));
  a->version = version;
  if (h == LiveCache::Hit::kMiss) cache.PutAttr(ino, gen, *a);
  return Status::Ok();
}

Status FileSystem::Impl::LoadAttrAt(InodeId ino, Epoch e, InodeAttr* a) {
  return LoadAttr(nullptr, ino, e, a);
}

Status FileSystem::Impl::PutAttr(Txn* txn, InodeId ino, const InodeAttr& a) {
  std::string enc = EncodeInode(a);
  const Epoch e = live();
  if (a.version == e) {
    // `a` was read (LoadAttr, through this Txn or the live cache) or
    // written (LiveCache::SetAttr after a commit) as the version born at
    // the live epoch, and the caller holds the inode's stripe exclusively
    // and volume_mu shared since before that read (or, for cached
    // attributes, the cache drops an entry once a commit writes the
    // record: live_cache.h): that version is still the newest, and E has
    // not moved. PutVersion would seek it only to overwrite it in place
    // (no snapshot can see a version born at E), so it is overwritten
    // without the seek. Should this Txn have deleted the record since,
    // PutVersion would also write the version at E (nothing newer is
    // left to find) and the result is the same.
    txn->Put(Cf::kInodes, VersionKey(InodePrefix(ino), e), Tagged(enc));
    return Status::Ok();
  }
  return PutVersion(txn, Cf::kInodes, InodePrefix(ino), e, std::string_view(enc), *this);
}

void FileSystem::Impl::FillStat(NodeId node, const InodeAttr& a, struct stat* st) const {
  memset(st, 0, sizeof *st);
  st->st_ino = node;
  st->st_mode = a.mode;
  st->st_nlink = a.nlink;
  st->st_uid = a.uid;
  st->st_gid = a.gid;
  st->st_rdev = a.rdev;
  st->st_size = S_ISDIR(a.mode) ? static_cast<off_t>(bs) : static_cast<off_t>(a.size);
  if (S_ISLNK(a.mode)) st->st_size = static_cast<off_t>(a.inline_data.size());
  st->st_blksize = bs;
  st->st_blocks = static_cast<blkcnt_t>(a.blocks * (bs / 512));
  st->st_atim = ToTimespec(a.atime_ns);
  st->st_mtim = ToTimespec(a.mtime_ns);
  st->st_ctim = ToTimespec(a.ctime_ns);
}

void FileSystem::Impl::SnapDirStat(struct stat* st) {
  memset(st, 0, sizeof *st);
  st->st_ino = kSnapDirNode;
  st->st_mode = S_IFDIR | 0755;
  std::lock_guard<std::mutex> l(snaps_mu);
  size_t n = 0;
  for (const auto& [id, e] : snaps) n += e.rec.state == SnapState::kActive ? 1 : 0;
  st->st_nlink = 2 + n;
  st->st_uid = owner_uid;
  st->st_gid = owner_gid;
  st->st_size = bs;
  st->st_blksize = bs;
  st->st_atim = st->st_mtim = st->st_ctim = ToTimespec(snapdir_mtime_ns);
}

Result<InodeId> FileSystem::Impl::AllocIno() {
  std::lock_guard<std::mutex> l(ino_alloc_mu);
  if (next_ino >= ino_reserved) {
    // Persist the reservation before handing out its numbers: WAL order
    // makes it durable before any record that uses them.
    InodeId r = next_ino + kInoReserveBatch;
    if ((r >> kSnapShift) != 0) return Status::NoSpace("inode numbers exhausted");
    PSM_RETURN_IF_ERROR(store->Put(Cf::kVolume, kVolNextIno, LE64(r)));
    ino_reserved = r;
  }
  return next_ino++;
}

Status FileSystem::Impl::CheckWritable(const View& v) {
  if (!v.live() || opts.read_only) return Status::ReadOnly();
  return Status::Ok();
}

void FileSystem::Impl::InvalidateEntry(NodeId parent, std::string_view name) {
  if (inval_entry) inval_entry(parent, name);
  if (inval_inode) inval_inode(parent);
}

}  // namespace psm
