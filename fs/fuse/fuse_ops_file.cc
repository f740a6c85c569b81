// FUSE handlers for regular files: open, create, read, write, release,
// fsync, fallocate, lseek. Each decodes, calls the core once,
// replies once (fs/fuse/fuse_ops.h).
#include <fcntl.h>

#include <vector>

#include "fs/fuse/fuse_ops.h"

namespace psm::fuse_ops {
namespace {

// Open flags as the core should see them. With the writeback cache the
// kernel writes dirty pages back at their own offsets and may read pages of
// a file opened write-only (to fill partial pages), so a write-only open
// becomes read-write and O_APPEND is dropped: the kernel has already placed
// appended data at EOF.
int CoreOpenFlags(fuse_req_t req, int flags) {
  if (Adapter(req)->writeback_enabled()) {
    if ((flags & O_ACCMODE) == O_WRONLY) flags = (flags & ~O_ACCMODE) | O_RDWR;
    flags &= ~O_APPEND;
  }
  return flags;
}

// FUSE_HANDLE_KILLPRIV_V2 made clearing set-ID bits psmfs's job: when the
// request asks (KillPrivBits), clear them before serving it.
Status KillSuidGidIfAsked(fuse_req_t req, fuse_ino_t ino) {
  const uint32_t bits = KillPrivBits(req, ino);
  if (bits == 0) return Status::Ok();
  struct stat none {};
  return Fs(req)->SetAttr(ino, none, bits, Creds(req)).status();
}

// Snapshot trees never change: keep their page cache across opens.
void SetCacheFlags(fuse_ino_t ino, fuse_file_info* fi) {
  fi->direct_io = 0;
  fi->keep_cache = SnapOf(ino) != 0 ? 1 : 0;
}

}  // namespace

void Open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  FileSystem* fs = Fs(req);
  // O_TRUNC by a caller without CAP_FSETID (FUSE_OPEN_KILL_SUIDGID).
  if (fi->flags & O_TRUNC) {
    if (Status s = KillSuidGidIfAsked(req, ino); !s.ok()) return ReplyStatus(req, s);
  }
  Result<uint64_t> r = fs->OpenFile(ino, CoreOpenFlags(req, fi->flags));
  if (!r.ok()) return ReplyStatus(req, r.status());
  fi->fh = r.value();
  SetCacheFlags(ino, fi);
  Adapter(req)->NoteOpen(ino, fi->flags);
  if (fuse_reply_open(req, fi) != 0) {
    // The opener was interrupted and will never release this handle.
    Adapter(req)->NoteRelease(ino, fi->flags);
    (void)fs->Release(fi->fh);
  }
}

void Create(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, fuse_file_info* fi) {
  FileSystem* fs = Fs(req);
  auto r = fs->Create(parent, name, mode, CoreOpenFlags(req, fi->flags), Creds(req));
  if (!r.ok()) return ReplyStatus(req, r.status());
  const auto& [entry, fh] = r.value();
  fi->fh = fh;
  SetCacheFlags(entry.node, fi);
  fuse_entry_param e = ToEntry(entry);
  Adapter(req)->NoteOpen(entry.node, fi->flags);
  if (fuse_reply_create(req, &e, fi) != 0) {
    Adapter(req)->NoteRelease(entry.node, fi->flags);
    (void)fs->Release(fh);
  }
}

void Read(fuse_req_t req, fuse_ino_t /*ino*/, size_t size, off_t off, fuse_file_info* fi) {
  // One buffer per worker thread, grown to the largest READ seen (at most
  // max_read, 1 MiB by default) and reused; fuse_reply_buf copies it out.
  thread_local std::vector<char> buf;
  if (buf.size() < size) buf.resize(size);
  Result<size_t> r = Fs(req)->Read(fi->fh, static_cast<uint64_t>(off), size, buf.data());
  if (!r.ok()) return ReplyStatus(req, r.status());
  fuse_reply_buf(req, buf.data(), r.value());
}

void Write(fuse_req_t req, fuse_ino_t ino, const char* buf, size_t size, off_t off,
           fuse_file_info* fi) {
  // FUSE_HANDLE_KILLPRIV_V2: a write by a caller without CAP_FSETID clears
  // the set-ID bits first, as Linux's file_remove_privs does.
  if (Status s = KillSuidGidIfAsked(req, ino); !s.ok()) return ReplyStatus(req, s);
  // A write from the kernel's page cache (FUSE_WRITE_CACHE): the kernel
  // updated mtime/ctime when the page was dirtied and sends them with a
  // SETATTR when it writes the inode back (before FSYNC, at syncfs), so
  // the core need not record times for it (docs/fuse-adapter.md).
  const bool kernel_times = fi->writepage != 0;
  Result<size_t> r = Fs(req)->Write(fi->fh, static_cast<uint64_t>(off), buf, size, kernel_times);
  if (!r.ok()) return ReplyStatus(req, r.status());
  fuse_reply_write(req, r.value());
}

void Release(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  // The kernel ignores the answer; the core logs what it cannot finish.
  Adapter(req)->NoteRelease(ino, fi->flags);
  ReplyDone(req, Fs(req)->Release(fi->fh));
}

void Fsync(fuse_req_t req, fuse_ino_t /*ino*/, int datasync, fuse_file_info* fi) {
  ReplyDone(req, Fs(req)->Fsync(fi->fh, datasync != 0));
}

// Every mode goes to the core unchanged; it decides (EOPNOTSUPP, EINVAL...)
// as Linux does. FALLOC_FL_COLLAPSE_RANGE and FALLOC_FL_INSERT_RANGE are
// served by the core, but Linux's FUSE module (fuse_file_fallocate, up to
// at least 6.18) answers EOPNOTSUPP for them itself and never sends them:
// through a mount they reach this handler only on a kernel that forwards
// them (docs/fuse-adapter.md).
void Fallocate(fuse_req_t req, fuse_ino_t /*ino*/, int mode, off_t offset, off_t length,
               fuse_file_info* fi) {
  if (offset < 0 || length <= 0) return ReplyStatus(req, Status::Invalid("fallocate range"));
  ReplyDone(req, Fs(req)->Fallocate(fi->fh, mode, static_cast<uint64_t>(offset),
                                    static_cast<uint64_t>(length)));
}

void Lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence, fuse_file_info* fi) {
  // The kernel resolves SEEK_SET/CUR/END itself and only asks for
  // SEEK_DATA/SEEK_HOLE. It does not write dirty pages back first, so with
  // the writeback cache the core may not yet know of recent writes (or of
  // the size they reached): have the kernel write them back, bounded.
  if (off < 0) return ReplyStatus(req, Status::Invalid("lseek offset"));
  if (SnapOf(ino) == 0 && !Adapter(req)->WriteBackDirty(ino)) {
    fuse_log(FUSE_LOG_WARNING, "psmfs: lseek: write-back of node %llu timed out\n",
             static_cast<unsigned long long>(ino));
  }
  Result<uint64_t> r = Fs(req)->Lseek(fi->fh, static_cast<uint64_t>(off), whence);
  if (!r.ok()) return ReplyStatus(req, r.status());
  fuse_reply_lseek(req, static_cast<off_t>(r.value()));
}

}  // namespace psm::fuse_ops
