// The adapter's own I/O on /dev/fuse (fuse_session_custom_io): reads and
// writes pass straight through, and on the way the adapter sees the few
// protocol fields libfuse 3.14 does not hand on. It uses them for one thing:
// FUSE_HANDLE_KILLPRIV_V2 (docs/fuse-adapter.md, "Set-ID bits and
// capabilities"):
//   - the INIT reply gets the flag when the kernel offered it and the mount
//     wants it (libfuse 3.14 does not know the flag and never sets it);
//   - WRITE's FUSE_WRITE_KILL_SUIDGID, SETATTR's FATTR_KILL_SUIDGID and
//     OPEN's FUSE_OPEN_KILL_SUIDGID are noted for the request being read,
//     in a thread-local the handler reads back (fuse_ops::KillPrivBits).
//     libfuse serves a request on the thread that read it (fuse_do_work:
//     receive, then process), and SPLICE_READ is off, so every request comes
//     through Read() on the thread that serves it.
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <algorithm>
#include <cstring>
#include <vector>
#include <string>

#include "fs/fuse/fuse_ops.h"

namespace psm {
namespace {

// The kernel's protocol (include/uapi/linux/fuse.h, 7.36+), the parts read
// here. libfuse 3.14 installs no copy of it.
namespace wire {
struct InHeader {
  uint32_t len;
  uint32_t opcode;
  uint64_t unique;
  uint64_t nodeid;
  uint32_t uid, gid, pid;
  uint16_t total_extlen, padding;
};
struct OutHeader {
  uint32_t len;
  int32_t error;
  uint64_t unique;
};
struct InitIn {
  uint32_t major, minor, max_readahead, flags, flags2;
};
struct InitOut {
  uint32_t major, minor, max_readahead, flags;
  uint16_t max_background, congestion_threshold;
  uint32_t max_write, time_gran;
  uint16_t max_pages, map_alignment;
  uint32_t flags2;
};
struct WriteIn {
  uint64_t fh, offset;
  uint32_t size, write_flags;
};
struct SetattrIn {
  uint32_t valid;
};
struct OpenIn {
  uint32_t flags, open_flags;
};
static_assert(sizeof(InHeader) == 40 && sizeof(OutHeader) == 16);
static_assert(offsetof(InitOut, flags) == 12 && offsetof(InitOut, flags2) == 32);
static_assert(offsetof(WriteIn, write_flags) == 20);

constexpr uint32_t kOpSetattr = 4, kOpOpen = 14, kOpWrite = 16, kOpInit = 26;
constexpr uint32_t kInitHandleKillprivV2 = 1u << 28;
constexpr uint32_t kWriteKillSuidgid = 1u << 2;
constexpr uint32_t kFattrFh = 1u << 6, kFattrLockOwner = 1u << 9, kFattrCtime = 1u << 10;
constexpr uint32_t kFattrKillSuidgid = 1u << 11;
constexpr uint32_t kOpenKillSuidgid = 1u << 0;
}  // namespace wire

// The request this worker thread is serving asks the server to clear set-ID
// bits: WRITE's FUSE_WRITE_KILL_SUIDGID, SETATTR's FATTR_KILL_SUIDGID or a
// SETATTR of nothing but ctime (chown(f, -1, -1)), OPEN's
// FUSE_OPEN_KILL_SUIDGID. The kernel sets them when the caller lacks
// CAP_FSETID (and, for SETATTR, on every chown of a non-directory).
thread_local bool t_kill_suidgid = false;

template <typename T>
const T* Body(const void* buf, size_t n) {
  if (n < sizeof(wire::InHeader) + sizeof(T)) return nullptr;
  return reinterpret_cast<const T*>(static_cast<const char*>(buf) + sizeof(wire::InHeader));
}

ssize_t Read(int fd, void* buf, size_t len, void* userdata) {
  ssize_t n = read(fd, buf, len);
  t_kill_suidgid = false;
  if (n < static_cast<ssize_t>(sizeof(wire::InHeader))) return n;
  const auto* h = static_cast<const wire::InHeader*>(buf);
  const size_t size = static_cast<size_t>(n);
  switch (h->opcode) {
    case wire::kOpWrite:
      if (const auto* w = Body<wire::WriteIn>(buf, size)) {
        t_kill_suidgid = (w->write_flags & wire::kWriteKillSuidgid) != 0;
      }
      break;
    case wire::kOpSetattr:
      if (const auto* s = Body<wire::SetattrIn>(buf, size)) {
        // A SETATTR that sets nothing but ctime is chown(f, -1, -1), which
        // clears set-ID bits like any chown; the kernel marks only chowns
        // that change an id.
        t_kill_suidgid =
            (s->valid & wire::kFattrKillSuidgid) != 0 ||
            (s->valid & ~(wire::kFattrCtime | wire::kFattrFh | wire::kFattrLockOwner)) == 0;
      }
      break;
    case wire::kOpOpen:
      if (const auto* o = Body<wire::OpenIn>(buf, size)) {
        t_kill_suidgid = (o->open_flags & wire::kOpenKillSuidgid) != 0;
      }
      break;
    case wire::kOpInit:
      if (const auto* i = Body<wire::InitIn>(buf, size)) {
        static_cast<FuseAdapter*>(userdata)->NoteKernelInit(h->unique, i->flags);
      }
      break;
    default:
      break;
  }
  return n;
}

ssize_t Writev(int fd, struct iovec* iov, int count, void* userdata) {
  auto* adapter = static_cast<FuseAdapter*>(userdata);
  if (count >= 2 && iov[0].iov_len == sizeof(wire::OutHeader) &&
      iov[1].iov_len >= sizeof(wire::InitOut)) {
    const auto* h = static_cast<const wire::OutHeader*>(iov[0].iov_base);
    if (h->error == 0 && h->unique != 0 && adapter->IsInitReply(h->unique)) {
      auto* out = static_cast<wire::InitOut*>(iov[1].iov_base);
      if (adapter->TakeKillprivV2()) out->flags |= wire::kInitHandleKillprivV2;
    }
  }
  return writev(fd, iov, count);
}

// Whether the caller of `req` is in group `gid` (its fsgid or a
// supplementary group; libfuse reads those from /proc/PID/status).
bool CallerInGroup(fuse_req_t req, gid_t gid) {
  if (fuse_req_ctx(req)->gid == gid) return true;
  std::vector<gid_t> groups(64);
  int n = fuse_req_getgroups(req, static_cast<int>(groups.size()), groups.data());
  if (n > static_cast<int>(groups.size())) {  // more than 64: ask again with room
    groups.resize(static_cast<size_t>(n));
    n = fuse_req_getgroups(req, n, groups.data());
  }
  if (n <= 0) return false;
  groups.resize(std::min(groups.size(), static_cast<size_t>(n)));
  return std::find(groups.begin(), groups.end(), gid) != groups.end();
}

}  // namespace

namespace fuse_ops {

uint32_t KillPrivBits(fuse_req_t req, fuse_ino_t ino) {
  if (!Adapter(req)->killpriv_v2() || !t_kill_suidgid) return 0;
  uint32_t bits = kKillSuidGid;
  if (fuse_req_ctx(req)->uid != 0) {
    // Not root: the kernel marks every write it sends straight through, so
    // most of these files have nothing to clear; a look saves the SetAttr.
    Result<AttrOut> a = Fs(req)->GetAttr(ino);
    if (a.ok() && (a->st.st_mode & (S_ISUID | S_ISGID)) == 0) return 0;
    if (a.ok() && (a->st.st_mode & (S_ISGID | S_IXGRP)) == S_ISGID &&
        !CallerInGroup(req, a->st.st_gid)) {
      bits |= kKillSgid;
    }
  }
  return bits;
}

}  // namespace fuse_ops

Status FuseAdapter::AttachIo(fuse_session* se) {
  static const fuse_custom_io kIo = {Writev, Read, nullptr, nullptr};
  int rc = fuse_session_custom_io(se, &kIo, fuse_session_fd(se));
  if (rc != 0) return Status::IOError("fuse_session_custom_io: " + std::string(strerror(-rc)));
  return Status::Ok();
}

void FuseAdapter::NoteKernelInit(uint64_t unique, uint32_t kernel_flags) {
  init_unique_.store(unique, std::memory_order_relaxed);
  kernel_offers_killpriv_v2_.store((kernel_flags & wire::kInitHandleKillprivV2) != 0,
                                   std::memory_order_relaxed);
}

bool FuseAdapter::IsInitReply(uint64_t unique) const {
  return !init_replied_.load(std::memory_order_relaxed) &&
         unique == init_unique_.load(std::memory_order_relaxed);
}

bool FuseAdapter::TakeKillprivV2() {
  init_replied_.store(true, std::memory_order_relaxed);
  const bool on = opts_.killpriv_v2 && kernel_offers_killpriv_v2_.load(std::memory_order_relaxed);
  killpriv_v2_.store(on, std::memory_order_release);
  return on;
}

}  // namespace psm
