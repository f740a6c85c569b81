// Trace: the observation log of a POSIX parity scenario.
//
// A scenario is a function that performs system calls below a root directory
// and records, through a Trace, every return value, errno and the resulting
// state of the files it touched. The same scenario runs once in a native
// directory and once in a psmfs mount; the two logs must be equal line by
// line. Paths never appear in the log (only names relative to the root), so
// the logs are comparable.
//
// What a state record holds (StatLine) and what it leaves out on purpose,
// because psmfs legitimately differs from a native file system there:
//   st_ino, st_dev        differ by construction (identity is checked with
//                         SameInode instead);
//   st_blksize            psmfs reports its own preferred I/O size;
//   st_blocks             allocation accounting differs (Sparse() records a
//                         boolean "fewer blocks than the size" instead);
//   st_size of dirs       ext4 reports block multiples, psmfs its own count;
//   atime/mtime/ctime     only compared where a scenario sets them
//                         explicitly (Times) or as before/after booleans.
//
// Usage: SYS(t, open(t.P("f"), O_RDWR)) performs the call, records
// "open(t.P("f"), O_RDWR) = 3" (or "= -1 ENOENT") and returns its value.
// File descriptors are recorded as "fd" since their numbers may differ.
#pragma once

#include <sys/types.h>

#include <cerrno>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace psm::testutil {

// A path that also converts to const char*, so scenarios can write
// open(t.P("f"), ...) as well as t.P("f").c_str().
struct PathStr : std::string {
  explicit PathStr(std::string s) : std::string(std::move(s)) {}
  operator const char*() const { return c_str(); }  // NOLINT: implicit on purpose
};

class Trace {
 public:
  Trace(std::string root, bool on_mount) : root_(std::move(root)), on_mount_(on_mount) {}

  // Absolute path of `rel` below the root ("" is the root itself).
  PathStr P(std::string_view rel) const;
  const std::string& root() const { return root_; }
  bool on_mount() const { return on_mount_; }

  // Records `label = ret` (with errno when ret < 0). `err` is the errno
  // sampled right after the call.
  long Rec(std::string_view label, long ret, int err);
  // Same, but a non-negative result is shown as "fd" (descriptor numbers
  // are not comparable).
  int RecFd(std::string_view label, int ret, int err);
  void Note(std::string line) { lines_.push_back(std::move(line)); }
  void Check(std::string_view what, bool ok) { Note(std::string(what) + (ok ? ": yes" : ": NO")); }

  // State records.
  void Stat(std::string_view rel);                 // lstat fields, see above
  void Content(std::string_view rel);              // size + hash of the bytes
  void FdContent(std::string_view label, int fd);  // same through an open fd
  void Xattrs(std::string_view rel);               // sorted names and values (llistxattr)
  void Tree(std::string_view rel = "");            // recursive Stat + Content + Xattrs
  void Listing(std::string_view rel);              // sorted names with d_type
  void SameInode(std::string_view a, std::string_view b);
  void Sparse(std::string_view rel);  // st_blocks*512 < st_size
  void Times(std::string_view rel);   // exact atime and mtime (s.ns)
  // pread of [off, off+len) recorded as result and hash.
  void Pread(std::string_view label, int fd, off_t off, size_t len);

  // Runs fn in a forked child with the given credentials (setgroups({}),
  // setresgid, setresuid); its records are appended, prefixed "[uid N] ".
  void AsUser(uid_t uid, gid_t gid, const std::function<void(Trace&)>& fn);

  const std::vector<std::string>& lines() const { return lines_; }

 private:
  std::string root_;
  bool on_mount_;
  std::vector<std::string> lines_;
};

std::string ErrnoName(int err);
uint64_t Fnv64(const void* data, size_t n, uint64_t h = 1469598103934665603ull);
// "" when equal; otherwise a readable report of the first difference with
// context.
std::string DiffLogs(const std::vector<std::string>& native, const std::vector<std::string>& mnt);

}  // namespace psm::testutil

// Performs `expr` once, records it under its own source text.
#define SYS(t, expr)                   \
  ([&]() {                             \
    errno = 0;                         \
    long r_ = static_cast<long>(expr); \
    int e_ = errno;                    \
    return (t).Rec(#expr, r_, e_);     \
  }())
#define SYSFD(t, expr)               \
  ([&]() {                           \
    errno = 0;                       \
    int r_ = static_cast<int>(expr); \
    int e_ = errno;                  \
    return (t).RecFd(#expr, r_, e_); \
  }())
