// FUSE handlers for directories: opendir, readdir, readdirplus, releasedir,
// fsyncdir. Each decodes, calls the core once (readdirplus: once, then one
// Lookup per entry it returns), replies once (fs/fuse/fuse_ops.h).
//
// Offsets: each entry carries the core's next_offset, the cookie the kernel
// hands back to continue after it; 0 starts at the beginning.
//
// Lookup counting in readdirplus: every entry sent with a non-zero node id
// counts as one kernel lookup of that node; each comes from one core Lookup,
// which counts it (MountOptions::count_lookups). A Lookup whose answer is not
// sent (the entry changed since it was listed) is forgotten at once. Entry
// sizes do not depend on attributes, so the reply is laid out while the core
// lists (no core call inside its callback) and no entry that was looked up
// is ever dropped for lack of space.
#include <string>
#include <vector>

#include "fs/fuse/fuse_ops.h"

namespace psm::fuse_ops {
namespace {

struct PendingEntry {
  std::string name;
  NodeId node = 0;
  uint32_t type = 0;
  uint64_t next_offset = 0;
};

bool IsDotOrDotDot(const std::string& n) { return n == "." || n == ".."; }

}  // namespace

void OpenDir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  FileSystem* fs = Fs(req);
  Result<uint64_t> r = fs->OpenDir(ino);
  if (!r.ok()) return ReplyStatus(req, r.status());
  fi->fh = r.value();
  // A snapshot directory never changes: let the kernel cache its listing.
  if (SnapOf(ino) != 0) {
    fi->cache_readdir = 1;
    fi->keep_cache = 1;
  }
  if (fuse_reply_open(req, fi) != 0) (void)fs->ReleaseDir(fi->fh);
}

void ReadDir(fuse_req_t req, fuse_ino_t /*ino*/, size_t size, off_t off, fuse_file_info* fi) {
  thread_local std::vector<char> buf;
  thread_local std::string name;  // NUL-terminated copy for fuse_add_direntry
  if (buf.size() < size) buf.resize(size);
  size_t used = 0;
  Status s = Fs(req)->ReadDir(fi->fh, static_cast<uint64_t>(off), [&](const DirEntryOut& d) {
    name.assign(d.name);
    struct stat st {};
    st.st_ino = d.node;
    st.st_mode = d.type;
    size_t need = fuse_add_direntry(req, buf.data() + used, size - used, name.c_str(), &st,
                                    static_cast<off_t>(d.next_offset));
    if (need > size - used) return false;  // full: not added, the kernel asks again
    used += need;
    return true;
  });
  // An error after some entries: return those; the next call meets it again.
  if (!s.ok() && used == 0) return ReplyStatus(req, s);
  fuse_reply_buf(req, buf.data(), used);
}

void ReadDirPlus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
  FileSystem* fs = Fs(req);
  thread_local std::vector<char> buf;
  thread_local std::vector<PendingEntry> pending;
  if (buf.size() < size) buf.resize(size);
  pending.clear();
  size_t planned = 0;
  Status s = fs->ReadDir(fi->fh, static_cast<uint64_t>(off), [&](const DirEntryOut& d) {
    PendingEntry p{std::string(d.name), d.node, d.type, d.next_offset};
    // With a zero-sized buffer fuse_add_direntry_plus only reports the size.
    size_t need = fuse_add_direntry_plus(req, nullptr, 0, p.name.c_str(), nullptr, 0);
    if (need > size - planned) return false;
    planned += need;
    pending.push_back(std::move(p));
    return true;
  });
  if (!s.ok() && pending.empty()) return ReplyStatus(req, s);

  size_t used = 0;
  for (const PendingEntry& p : pending) {
    fuse_entry_param e{};
    Result<EntryOut> r =
        IsDotOrDotDot(p.name) ? Result<EntryOut>(Status::NotFound()) : fs->Lookup(ino, p.name);
    if (r.ok() && r->node == p.node) {
      e = ToEntry(r.value());
    } else {
      // "." and "..", or the entry changed since it was listed: send the
      // name only (node id 0: the kernel takes no reference and looks the
      // name up itself when needed). A Lookup that found another node
      // counted a reference the kernel will never forget: drop it here.
      if (r.ok()) fs->Forget(r->node, 1);
      e.ino = 0;
      e.attr.st_ino = p.node;
      e.attr.st_mode = p.type;
    }
    used += fuse_add_direntry_plus(req, buf.data() + used, size - used, p.name.c_str(), &e,
                                   static_cast<off_t>(p.next_offset));
  }
  fuse_reply_buf(req, buf.data(), used);
}

void ReleaseDir(fuse_req_t req, fuse_ino_t /*ino*/, fuse_file_info* fi) {
  ReplyDone(req, Fs(req)->ReleaseDir(fi->fh));
}

void FsyncDir(fuse_req_t req, fuse_ino_t /*ino*/, int datasync, fuse_file_info* fi) {
  ReplyDone(req, Fs(req)->FsyncDir(fi->fh, datasync != 0));
}

}  // namespace psm::fuse_ops
