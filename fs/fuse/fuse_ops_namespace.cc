// FUSE handlers for the namespace: lookup, forget, getattr, setattr,
// readlink, mknod, mkdir, symlink, link, unlink, rmdir, rename, statfs.
// Each decodes, calls the core once, replies once (fs/fuse/fuse_ops.h).
#include <linux/fs.h>  // RENAME_NOREPLACE, RENAME_EXCHANGE
#include <time.h>

#include <vector>

#include "fs/fuse/fuse_ops.h"

namespace psm::fuse_ops {

void Lookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  Result<EntryOut> r = Fs(req)->Lookup(parent, name);
  if (!r.ok() && r.status().Is(Code::kNotFound) && SnapOf(parent) != 0) {
    // Snapshot trees never change: let the kernel cache the miss (a zero
    // node id is a negative entry). Live misses are not cached, so that
    // files made behind the kernel's back (restore, psmctl) appear at once.
    fuse_entry_param e{};
    e.ino = 0;
    e.entry_timeout = Adapter(req)->options().snapshot_negative_timeout;
    fuse_reply_entry(req, &e);
    return;
  }
  ReplyEntry(req, r);
}

// The core counts kernel lookups (MountOptions::count_lookups): an unlinked
// inode lives until the kernel forgets it and its last handle closes.
void Forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup) {
  Fs(req)->Forget(ino, nlookup);
  fuse_reply_none(req);
}

// The unlinked files of a batch that nothing references any more are
// destroyed together (FileSystem::ForgetMany: one commit per 32).
void ForgetMulti(fuse_req_t req, size_t count, fuse_forget_data* forgets) {
  std::vector<FileSystem::Forgotten> f(count);
  for (size_t i = 0; i < count; ++i) f[i] = {forgets[i].ino, forgets[i].nlookup};
  Fs(req)->ForgetMany(f);
  fuse_reply_none(req);
}

void GetAttr(fuse_req_t req, fuse_ino_t ino, fuse_file_info* /*fi*/) {
  Result<AttrOut> r = Fs(req)->GetAttr(ino);
  if (!r.ok()) return ReplyStatus(req, r.status());
  r->st.st_ino = ino;
  fuse_reply_attr(req, &r->st, r->attr_timeout);
}

void SetAttr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int to_set,
             fuse_file_info* /*fi*/) {
  // FUSE_SET_ATTR_* -> kSet*. For "now" the kernel sets both ATIME and
  // ATIME_NOW; we pass kSetAtime|kSetAtimeNow with the current time in
  // st_atim, so the result is right whichever bit the core looks at.
  struct stat in = *attr;
  uint32_t bits = 0;
  if (to_set & FUSE_SET_ATTR_MODE) bits |= kSetMode;
  if (to_set & FUSE_SET_ATTR_UID) bits |= kSetUid;
  if (to_set & FUSE_SET_ATTR_GID) bits |= kSetGid;
  if (to_set & FUSE_SET_ATTR_SIZE) bits |= kSetSize;
  if (to_set & (FUSE_SET_ATTR_ATIME_NOW | FUSE_SET_ATTR_MTIME_NOW)) {
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    if (to_set & FUSE_SET_ATTR_ATIME_NOW) in.st_atim = now;
    if (to_set & FUSE_SET_ATTR_MTIME_NOW) in.st_mtim = now;
  }
  if (to_set & FUSE_SET_ATTR_ATIME) bits |= kSetAtime;
  if (to_set & FUSE_SET_ATTR_MTIME) bits |= kSetMtime;
  if (to_set & FUSE_SET_ATTR_ATIME_NOW) bits |= kSetAtime | kSetAtimeNow;
  if (to_set & FUSE_SET_ATTR_MTIME_NOW) bits |= kSetMtime | kSetMtimeNow;
  if (to_set & FUSE_SET_ATTR_CTIME) bits |= kSetCtime;
  // An empty SETATTR (chown(f, -1, -1) without the writeback cache) still
  // changes ctime. Said explicitly: with a kill bit alone, SetAttr would
  // change nothing when there is nothing to clear.
  if (bits == 0) {
    clock_gettime(CLOCK_REALTIME_COARSE, &in.st_ctim);
    bits = kSetCtime;
  }
  bits |= KillPrivBits(req, ino);  // set-ID bits, when the kernel leaves them to psmfs
  Result<AttrOut> r = Fs(req)->SetAttr(ino, in, bits, Creds(req));
  if (!r.ok()) return ReplyStatus(req, r.status());
  r->st.st_ino = ino;
  fuse_reply_attr(req, &r->st, r->attr_timeout);
}

void ReadLink(fuse_req_t req, fuse_ino_t ino) {
  Result<std::string> r = Fs(req)->ReadLink(ino);
  if (!r.ok()) return ReplyStatus(req, r.status());
  fuse_reply_readlink(req, r->c_str());
}

void MkNod(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, dev_t rdev) {
  ReplyEntry(req, Fs(req)->MkNod(parent, name, mode, rdev, Creds(req)));
}

void MkDir(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode) {
  // The kernel passes permission bits only; the core gets a full mode.
  ReplyEntry(req, Fs(req)->MkDir(parent, name, mode | S_IFDIR, Creds(req)));
}

void Symlink(fuse_req_t req, const char* link, fuse_ino_t parent, const char* name) {
  ReplyEntry(req, Fs(req)->Symlink(parent, name, link, Creds(req)));
}

void Link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char* newname) {
  ReplyEntry(req, Fs(req)->Link(ino, newparent, newname));
}

void Unlink(fuse_req_t req, fuse_ino_t parent, const char* name) {
  ReplyDone(req, Fs(req)->Unlink(parent, name));
}

void RmDir(fuse_req_t req, fuse_ino_t parent, const char* name) {
  ReplyDone(req, Fs(req)->RmDir(parent, name, Creds(req)));
}

void Rename(fuse_req_t req, fuse_ino_t parent, const char* name, fuse_ino_t newparent,
            const char* newname, unsigned int flags) {
  // RENAME_WHITEOUT (overlayfs) and unknown flags are not supported.
  if ((flags & ~static_cast<unsigned>(RENAME_NOREPLACE | RENAME_EXCHANGE)) != 0 ||
      (flags & RENAME_NOREPLACE && flags & RENAME_EXCHANGE)) {
    return ReplyStatus(req, Status::Invalid("rename flags"));
  }
  ReplyDone(req, Fs(req)->Rename(parent, name, newparent, newname, flags));
}

void StatFs(fuse_req_t req, fuse_ino_t /*ino*/) {
  struct statvfs st {};
  Status s = Fs(req)->StatFs(&st);
  if (!s.ok()) return ReplyStatus(req, s);
  fuse_reply_statfs(req, &st);
}

}  // namespace psm::fuse_ops
