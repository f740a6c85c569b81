// Private to the FUSE adapter (fs/fuse_*.cc): the libfuse API version, the
// handler declarations of each operation family, and the small helpers that
// every handler uses to decode a request and send its one reply.
//
// Rules every handler follows:
//   - exactly one fuse_reply_* per request (fuse_reply_none for forget);
//   - an error reply is ReplyStatus(req, status): the errno comes from
//     Status::ToErrno() and nowhere else;
//   - no core lock is held by the adapter, and nothing blocks on the
//     notifier thread, except Lseek, which waits (bounded) for a dirty-page
//     write-back it asked the notifier to start (FuseAdapter::WriteBackDirty).
// Thread safety: the helpers are free functions without shared state.
#pragma once

#ifndef FUSE_USE_VERSION
#define FUSE_USE_VERSION 314
#endif
#include <fuse_lowlevel.h>

#include <string_view>

#include "fs/core/filesystem.h"
#include "fs/fuse/fuse_adapter.h"
#include "meta/status.h"

namespace psm::fuse_ops {

// MakeNode(0, kRootIno) == kRootIno: the live root is the kernel's root.
static_assert(FUSE_ROOT_ID == kRootIno, "the kernel's root node id must be the live root");
static_assert(sizeof(fuse_ino_t) == sizeof(NodeId));

inline FuseAdapter* Adapter(fuse_req_t req) {
  return static_cast<FuseAdapter*>(fuse_req_userdata(req));
}
inline FileSystem* Fs(fuse_req_t req) { return Adapter(req)->fs(); }

// The caller's identity, from the request header.
inline Credentials Creds(fuse_req_t req) {
  const fuse_ctx* ctx = fuse_req_ctx(req);
  Credentials c;
  c.uid = ctx->uid;
  c.gid = ctx->gid;
  c.pid = ctx->pid;
  c.umask = ctx->umask;
  return c;
}

// Error reply. REQUIRES: !s.ok() (an ok status replies 0, which is right only
// for requests whose success reply is an empty one).
inline void ReplyStatus(fuse_req_t req, const Status& s) { fuse_reply_err(req, s.ToErrno()); }

// Empty success reply or error reply, for unlink, rmdir, rename, flush, ...
inline void ReplyDone(fuse_req_t req, const Status& s) {
  fuse_reply_err(req, s.ok() ? 0 : s.ToErrno());
}

// Fills a fuse_entry_param from the core's answer. st_ino is always the node
// id (unique across the live tree and every snapshot).
inline fuse_entry_param ToEntry(const EntryOut& out) {
  fuse_entry_param e{};
  e.ino = out.node;
  e.generation = 0;
  e.attr = out.st;
  e.attr.st_ino = out.node;
  e.attr_timeout = out.attr_timeout;
  e.entry_timeout = out.entry_timeout;
  return e;
}

inline void ReplyEntry(fuse_req_t req, const Result<EntryOut>& r) {
  if (!r.ok()) return ReplyStatus(req, r.status());
  fuse_entry_param e = ToEntry(r.value());
  fuse_reply_entry(req, &e);
}

// ---- fs/fuse/fuse_wire.cc ----
// FUSE_HANDLE_KILLPRIV_V2 made clearing set-ID bits psmfs's job. When the
// request being served asks for it (fs/fuse/fuse_wire.cc notes that), returns the
// SetAttr bits that clear what Linux would: kKillSuidGid, plus kKillSgid
// when the caller is neither root nor in the file's group. Otherwise 0.
uint32_t KillPrivBits(fuse_req_t req, fuse_ino_t ino);

// ---- fs/fuse/fuse_ops_namespace.cc ----
void Lookup(fuse_req_t req, fuse_ino_t parent, const char* name);
void Forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup);
void ForgetMulti(fuse_req_t req, size_t count, fuse_forget_data* forgets);
void GetAttr(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
void SetAttr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int to_set, fuse_file_info* fi);
void ReadLink(fuse_req_t req, fuse_ino_t ino);
void MkNod(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, dev_t rdev);
void MkDir(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode);
void Symlink(fuse_req_t req, const char* link, fuse_ino_t parent, const char* name);
void Link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char* newname);
void Unlink(fuse_req_t req, fuse_ino_t parent, const char* name);
void RmDir(fuse_req_t req, fuse_ino_t parent, const char* name);
void Rename(fuse_req_t req, fuse_ino_t parent, const char* name, fuse_ino_t newparent,
            const char* newname, unsigned int flags);
void StatFs(fuse_req_t req, fuse_ino_t ino);

// ---- fs/fuse/fuse_ops_file.cc ----
void Open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
void Create(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, fuse_file_info* fi);
void Read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi);
void Write(fuse_req_t req, fuse_ino_t ino, const char* buf, size_t size, off_t off,
           fuse_file_info* fi);
void Release(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
void Fsync(fuse_req_t req, fuse_ino_t ino, int datasync, fuse_file_info* fi);
void Fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length,
               fuse_file_info* fi);
void Lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence, fuse_file_info* fi);

// ---- fs/fuse/fuse_ops_dir.cc ----
void OpenDir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
void ReadDir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi);
void ReadDirPlus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi);
void ReleaseDir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
void FsyncDir(fuse_req_t req, fuse_ino_t ino, int datasync, fuse_file_info* fi);

// ---- fs/fuse/fuse_ops_xattr.cc ----
void SetXattr(fuse_req_t req, fuse_ino_t ino, const char* name, const char* value, size_t size,
              int flags);
void GetXattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size);
void ListXattr(fuse_req_t req, fuse_ino_t ino, size_t size);
void RemoveXattr(fuse_req_t req, fuse_ino_t ino, const char* name);

}  // namespace psm::fuse_ops
