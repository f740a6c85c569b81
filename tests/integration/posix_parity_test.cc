// POSIX parity: every scenario below performs the same system calls in a
// native directory (ext4 or whatever holds the repository) and in a psmfs
// mount, and the two observation logs (return values, errno, resulting
// state; see tests/common/parity_trace.h for what is and is not compared)
// must be equal. Scenarios that need root (mknod, chown, other uids) are
// skipped with a message when the test does not run as root.
//
// Run one group: posix_parity_test -tc='*rename*'. Keep the scratch dirs:
// PSMFS_KEEP_TMP=1.
#include <dirent.h>
#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cstring>
#include <map>
#include <memory>
#include <string>

#include "tests/common/parity_harness.h"
#include "tests/common/parity_trace.h"
#include "tests/common/psm_test_util.h"

using namespace psm::testutil;

namespace {

constexpr off_t kKiB = 1024, kMiB = 1024 * kKiB, kGiB = 1024 * kMiB;

std::string Pattern(size_t n, unsigned seed) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; i++) s[i] = static_cast<char>('a' + (i * 7 + seed) % 26);
  return s;
}

// ------------------------------------------------------------- scenarios

void RegularFiles(Trace& t) {
  int fd = SYSFD(t, open(t.P("f"), O_CREAT | O_RDWR, 0640));
  SYS(t, write(fd, "hello world", 11));
  SYS(t, lseek(fd, 0, SEEK_CUR));
  SYS(t, pwrite(fd, "XY", 2, 6));
  t.Pread("f", fd, 0, 100);
  SYS(t, pwrite(fd, "tail", 4, 20000));  // past EOF: the gap reads as zeros
  t.Pread("f gap", fd, 11, 30000);
  std::string big = Pattern(3 * kMiB + 17, 1);
  SYS(t, pwrite(fd, big.data(), big.size(), 4095));
  t.Pread("f big", fd, 0, 4 * kMiB);
  SYS(t, fsync(fd));
  SYS(t, fdatasync(fd));
  SYS(t, ftruncate(fd, 4096));
  SYS(t, close(fd));
  SYS(t, close(fd));  // EBADF
  SYSFD(t, open(t.P("f"), O_CREAT | O_EXCL | O_RDWR, 0644));
  SYSFD(t, open(t.P("missing"), O_RDONLY));
  SYSFD(t, open(t.P("f/x"), O_RDONLY));
  SYSFD(t, open(t.P(""), O_WRONLY));
  SYSFD(t, open(t.P("f"), O_RDONLY | O_DIRECTORY));
  fd = SYSFD(t, open(t.P("f"), O_WRONLY | O_APPEND));
  SYS(t, lseek(fd, 0, SEEK_SET));
  SYS(t, write(fd, "app", 3));
  SYS(t, lseek(fd, 0, SEEK_CUR));
  SYS(t, pwrite(fd, "pw", 2, 0));  // Linux: pwrite on O_APPEND appends
  char c;
  SYS(t, read(fd, &c, 1));  // EBADF: write-only
  SYS(t, close(fd));
  t.Stat("f");
  t.Content("f");
  fd = SYSFD(t, open(t.P("f"), O_RDONLY));
  SYS(t, write(fd, "x", 1));  // EBADF: read-only
  SYS(t, ftruncate(fd, 0));   // EINVAL: not open for writing
  SYS(t, close(fd));
  fd = SYSFD(t, open(t.P("f"), O_WRONLY | O_TRUNC));
  SYS(t, close(fd));
  t.Stat("f");
  fd = SYSFD(t, open(t.P("g"), O_CREAT | O_WRONLY | O_TRUNC, 0600));
  SYS(t, write(fd, "0123456789", 10));
  SYS(t, close(fd));
  fd = SYSFD(t, open(t.P("g"), O_RDWR | O_TRUNC));  // truncates an existing file
  SYS(t, write(fd, "ab", 2));
  SYS(t, close(fd));
  t.Tree();
}

void Truncate(Trace& t) {
  int fd = SYSFD(t, open(t.P("t"), O_CREAT | O_RDWR, 0644));
  std::string a = Pattern(10000, 2);
  SYS(t, write(fd, a.data(), a.size()));
  SYS(t, ftruncate(fd, 5000));
  t.Pread("t down", fd, 0, 10000);
  SYS(t, ftruncate(fd, 20000));  // bytes 5000.. must read as zeros
  t.Pread("t up", fd, 4990, 100);
  t.Pread("t up all", fd, 0, 30000);
  SYS(t, truncate(t.P("t"), 3));
  SYS(t, truncate(t.P("t"), 3 * kMiB + 5));
  t.Pread("t up 3M", fd, 0, 4 * kMiB);
  SYS(t, pwrite(fd, "end", 3, 3 * kMiB + 5));
  SYS(t, ftruncate(fd, 3 * kMiB + 6));
  t.Pread("t tail", fd, 3 * kMiB, kMiB);
  SYS(t, truncate(t.P("t"), -1));
  SYS(t, truncate(t.P(""), 0));  // EISDIR
  SYS(t, truncate(t.P("nope"), 0));
  SYS(t, close(fd));
  t.Tree();
}

void Sparse(Trace& t) {
  int fd = SYSFD(t, open(t.P("s"), O_CREAT | O_RDWR, 0644));
  std::string x = Pattern(64 * kKiB, 3);
  SYS(t, pwrite(fd, x.data(), x.size(), 1 * kMiB));
  SYS(t, pwrite(fd, x.data(), x.size(), 3 * kMiB));
  // Twice: first while the data may still sit in the kernel's writeback
  // cache (a sparse-aware reader on the writer's descriptor sees this), then
  // after fsync.
  for (int round = 0; round < 2; round++) {
    SYS(t, lseek(fd, 0, SEEK_DATA));
    SYS(t, lseek(fd, 0, SEEK_HOLE));
    SYS(t, lseek(fd, 1 * kMiB, SEEK_HOLE));
    SYS(t, lseek(fd, 1 * kMiB + 64 * kKiB, SEEK_DATA));
    SYS(t, lseek(fd, 3 * kMiB + 64 * kKiB, SEEK_DATA));  // ENXIO at EOF
    SYS(t, lseek(fd, 3 * kMiB + 64 * kKiB, SEEK_HOLE));
    SYS(t, lseek(fd, 10 * kMiB, SEEK_HOLE));  // ENXIO past EOF
    SYS(t, fsync(fd));
  }
  t.Pread("s hole", fd, 2 * kMiB, 4096);
  t.Sparse("s");
  // A file larger than 4 GiB (offsets that need more than 32 bits).
  int b = SYSFD(t, open(t.P("big"), O_CREAT | O_RDWR, 0644));
  SYS(t, pwrite(b, "big!", 4, 5 * kGiB + 123));
  t.Stat("big");
  t.Pread("big data", b, 5 * kGiB + 120, 100);
  t.Pread("big hole", b, 4 * kGiB - 2048, 8192);
  SYS(t, lseek(b, 0, SEEK_DATA));
  SYS(t, lseek(b, 5 * kGiB, SEEK_HOLE));
  SYS(t, ftruncate(b, 6 * kGiB));
  SYS(t, pwrite(b, "x", 1, 4 * kGiB + 1));
  t.Pread("big 4G", b, 4 * kGiB, 8);
  SYS(t, fsync(b));
  t.Stat("big");
  t.Sparse("big");
  SYS(t, close(b));
  SYS(t, close(fd));
}

void Fallocate(Trace& t) {
  int fd = SYSFD(t, open(t.P("fa"), O_CREAT | O_RDWR, 0644));
  std::string z = Pattern(64 * kKiB, 4);
  SYS(t, write(fd, z.data(), z.size()));
  SYS(t, fallocate(fd, 0, 0, kMiB));
  t.Stat("fa");
  SYS(t, fallocate(fd, FALLOC_FL_KEEP_SIZE, kMiB, kMiB));
  t.Stat("fa");
  SYS(t, fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 4096, 8192));
  SYS(t, fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 100, 50));
  SYS(t, fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 20000, 30000));
  SYS(t, fallocate(fd, FALLOC_FL_PUNCH_HOLE, 0, 4096));  // EOPNOTSUPP: needs KEEP_SIZE
  SYS(t, fallocate(fd, 0, 0, 0));                        // EINVAL
  SYS(t, lseek(fd, 0, SEEK_HOLE));
  SYS(t, lseek(fd, 4096, SEEK_DATA));
  t.Pread("fa", fd, 0, 2 * kMiB);
  t.Stat("fa");
  SYS(t, close(fd));
  fd = SYSFD(t, open(t.P("fa"), O_RDONLY));
  SYS(t, fallocate(fd, 0, 0, 4096));  // EBADF
  SYS(t, close(fd));
}

// FALLOC_FL_COLLAPSE_RANGE / FALLOC_FL_INSERT_RANGE. `filtered`: the calls
// that pass Linux's VFS checks (vfs_fallocate: offset >= 0, length > 0,
// the flag alone, a writable descriptor) are not made and are recorded as
// EOPNOTSUPP, changing nothing: what a kernel whose FUSE module refuses
// the two modes itself (fuse_file_fallocate, up to at least 6.18) shows.
void ShiftRange(Trace& t, bool filtered) {
  auto shift = [&](int fd, bool writable, int mode, off_t off, off_t len) {
    const std::string label = std::string("fallocate(fd, ") +
                              ((mode & FALLOC_FL_COLLAPSE_RANGE) ? "COLLAPSE" : "INSERT") +
                              ((mode & FALLOC_FL_KEEP_SIZE) ? "|KEEP_SIZE" : "") + ", " +
                              std::to_string(off) + ", " + std::to_string(len) + ")";
    const int shift_mode = mode & (FALLOC_FL_COLLAPSE_RANGE | FALLOC_FL_INSERT_RANGE);
    const bool vfs_ok = off >= 0 && len > 0 && (mode & ~shift_mode) == 0 && writable;
    if (filtered && vfs_ok) return t.Rec(label, -1, EOPNOTSUPP);
    errno = 0;
    long r = fallocate(fd, mode, off, len);
    return t.Rec(label, r, errno);
  };
  constexpr int C = FALLOC_FL_COLLAPSE_RANGE, I = FALLOC_FL_INSERT_RANGE;
  int fd = SYSFD(t, open(t.P("s"), O_CREAT | O_RDWR, 0644));
  std::string d = Pattern(64 * kKiB + 1000, 5);  // 16 blocks and a partial one
  SYS(t, pwrite(fd, d.data(), d.size(), 0));
  t.Content("s");
  shift(fd, true, C, 4096, 8192);
  t.Content("s");
  shift(fd, true, I, 0, 4096);
  t.Content("s");
  shift(fd, true, I, 8192, 12288);
  t.Content("s");
  shift(fd, true, C, 0, 4096);
  t.Content("s");
  t.Stat("s");
  shift(fd, true, C, 100, 4096);            // EINVAL: offset not a block multiple
  shift(fd, true, I, 0, 1000);              // EINVAL: length not a block multiple
  shift(fd, true, C, 17 * 4096, 4096);      // EINVAL: reaches EOF
  shift(fd, true, C, 8192, 64 * kKiB);      // EINVAL: past EOF
  shift(fd, true, I, 18 * 4096, 4096);      // EINVAL: at or past EOF
  shift(fd, true, C | FALLOC_FL_KEEP_SIZE, 0, 4096);  // EINVAL: not alone
  shift(fd, true, I | FALLOC_FL_KEEP_SIZE, 0, 4096);  // EINVAL: not alone
  shift(fd, true, C | I, 0, 4096);                    // EINVAL
  shift(fd, true, C, 0, 0);                           // EINVAL: length 0
  t.Content("s");
  // Across psmfs's 1 MiB chunks: by a chunk multiple and by other counts.
  std::string big = Pattern(3 * kMiB + 333, 6);
  SYS(t, pwrite(fd, big.data(), big.size(), 0));
  shift(fd, true, C, 512 * kKiB, kMiB + 4096);
  t.Content("s");
  shift(fd, true, I, 100 * 4096, 2 * kMiB - 8192);
  t.Content("s");
  shift(fd, true, I, kMiB, kMiB);
  t.Content("s");
  shift(fd, true, C, 4096, 3 * kMiB);
  t.Content("s");
  t.Stat("s");
  t.Pread("s", fd, 0, 4 * kMiB);
  SYS(t, close(fd));
  fd = SYSFD(t, open(t.P("s"), O_RDONLY));
  shift(fd, false, C, 0, 4096);  // EBADF
  SYS(t, close(fd));
  t.Content("s");
}

void Directories(Trace& t) {
  SYS(t, mkdir(t.P("d"), 0755));
  SYS(t, mkdir(t.P("d"), 0755));
  SYS(t, mkdir(t.P("nope/x"), 0755));
  SYS(t, close(open(t.P("f"), O_CREAT | O_WRONLY, 0644)));
  SYS(t, mkdir(t.P("f/x"), 0755));
  SYS(t, mkdir(t.P("d/sub"), 0700));
  t.Stat("d");
  SYS(t, rmdir(t.P("d")));
  SYS(t, rmdir(t.P("f")));
  SYS(t, rmdir(t.P("nope")));
  SYS(t, unlink(t.P("d")));
  SYS(t, rmdir(t.P("d/sub/.")));
  SYS(t, rmdir(t.P("d/sub/..")));
  SYS(t, rmdir(t.P("d/sub")));
  t.Stat("d");
  SYS(t, mkdir(t.P("sticky"), 01777));
  SYS(t, mkdir(t.P("gid"), 02755));
  t.Stat("sticky");
  t.Stat("gid");
  // A set-group-ID directory passes its group and the bit down.
  SYS(t, chown(t.P("gid"), 0, 4321));
  SYS(t, chmod(t.P("gid"), 02775));
  SYS(t, mkdir(t.P("gid/child"), 0755));
  SYS(t, close(open(t.P("gid/file"), O_CREAT | O_WRONLY, 0644)));
  // Names: 255 bytes are fine, 256 are too long, whatever the call.
  std::string n255(255, 'n'), n256(256, 'm');
  SYS(t, close(open(t.P(n255), O_CREAT | O_WRONLY, 0644)));
  SYSFD(t, open(t.P(n256), O_CREAT | O_WRONLY, 0644));
  SYS(t, mkdir(t.P(n256), 0755));
  SYS(t, access(t.P(n256).c_str(), F_OK));
  SYS(t, rename(t.P("f").c_str(), t.P(n256).c_str()));
  SYS(t, symlink("x", t.P(n256).c_str()));
  SYS(t, link(t.P("f").c_str(), t.P(n256).c_str()));
  SYS(t, mkdir(t.P("d/" + n255), 0755));
  t.Tree();
}

void Symlinks(Trace& t) {
  SYS(t, close(open(t.P("f"), O_CREAT | O_WRONLY, 0644)));
  SYS(t, symlink("f", t.P("l").c_str()));
  SYS(t, symlink("nowhere", t.P("dangling").c_str()));
  SYS(t, symlink("f", t.P("l").c_str()));  // EEXIST
  char buf[8192];
  SYS(t, readlink(t.P("l").c_str(), buf, sizeof buf));
  SYS(t, readlink(t.P("l").c_str(), buf, 0));           // EINVAL
  SYS(t, readlink(t.P("l").c_str(), buf, 1));           // truncated, no error
  SYS(t, readlink(t.P("f").c_str(), buf, sizeof buf));  // EINVAL
  struct stat st;
  SYS(t, stat(t.P("dangling").c_str(), &st));  // ENOENT
  SYS(t, stat(t.P("l").c_str(), &st));
  SYSFD(t, open(t.P("l"), O_RDONLY | O_NOFOLLOW));  // ELOOP
  SYS(t, symlink("loop2", t.P("loop1").c_str()));
  SYS(t, symlink("loop1", t.P("loop2").c_str()));
  SYSFD(t, open(t.P("loop1"), O_RDONLY));  // ELOOP
  std::string long_target(4095, 't'), too_long(4096, 'u');
  SYS(t, symlink(long_target.c_str(), t.P("long").c_str()));
  SYS(t, readlink(t.P("long").c_str(), buf, sizeof buf));
  SYS(t, symlink(too_long.c_str(), t.P("toolong").c_str()));  // ENAMETOOLONG
  SYS(t, symlink("", t.P("empty").c_str()));                  // ENOENT
  // O_CREAT through a dangling symlink creates its target...
  SYS(t, symlink("created", t.P("dl").c_str()));
  int fd = SYSFD(t, open(t.P("dl"), O_CREAT | O_WRONLY, 0600));
  SYS(t, write(fd, "via link", 8));
  SYS(t, close(fd));
  // ...but not with O_EXCL.
  SYS(t, symlink("created2", t.P("dl2").c_str()));
  SYSFD(t, open(t.P("dl2"), O_CREAT | O_EXCL | O_WRONLY, 0600));
  SYS(t, lchown(t.P("l").c_str(), 77, 88));
  t.Tree();
}

void HardLinks(Trace& t) {
  int fd = SYSFD(t, open(t.P("f"), O_CREAT | O_WRONLY, 0644));
  SYS(t, write(fd, "one", 3));
  SYS(t, close(fd));
  SYS(t, link(t.P("f").c_str(), t.P("g").c_str()));
  t.Stat("f");
  t.SameInode("f", "g");
  fd = SYSFD(t, open(t.P("g"), O_WRONLY | O_APPEND));
  SYS(t, write(fd, "two", 3));
  SYS(t, close(fd));
  t.Content("f");
  SYS(t, mkdir(t.P("d"), 0755));
  SYS(t, link(t.P("f").c_str(), t.P("d/h").c_str()));
  SYS(t, link(t.P("d").c_str(), t.P("dl").c_str()));    // EPERM
  SYS(t, link(t.P("nope").c_str(), t.P("x").c_str()));  // ENOENT
  SYS(t, link(t.P("f").c_str(), t.P("g").c_str()));     // EEXIST
  SYS(t, symlink("f", t.P("sl").c_str()));
  SYS(t, linkat(AT_FDCWD, t.P("sl").c_str(), AT_FDCWD, t.P("sl2").c_str(), 0));
  SYS(t, linkat(AT_FDCWD, t.P("sl").c_str(), AT_FDCWD, t.P("sl3").c_str(), AT_SYMLINK_FOLLOW));
  t.Stat("f");
  SYS(t, unlink(t.P("f").c_str()));
  t.Stat("g");
  SYS(t, unlink(t.P("d/h").c_str()));
  t.Tree();
}

void SpecialFiles(Trace& t) {
  SYS(t, mkfifo(t.P("fifo").c_str(), 0640));
  SYS(t, mknod(t.P("null").c_str(), S_IFCHR | 0666, makedev(1, 3)));
  SYS(t, mknod(t.P("loop").c_str(), S_IFBLK | 0600, makedev(7, 200)));
  SYS(t, mknod(t.P("reg").c_str(), S_IFREG | 0600, 0));
  SYS(t, mknod(t.P("fifo").c_str(), S_IFIFO | 0600, 0));  // EEXIST
  int fd = SYSFD(t, open(t.P("fifo"), O_RDWR | O_NONBLOCK));
  SYS(t, write(fd, "pipe", 4));
  char buf[16];
  SYS(t, read(fd, buf, sizeof buf));
  SYS(t, close(fd));
  fd = SYSFD(t, open(t.P("null"), O_RDWR));  // the mount must allow devices (-o dev)
  SYS(t, write(fd, "gone", 4));
  SYS(t, read(fd, buf, sizeof buf));
  SYS(t, close(fd));
  int s = socket(AF_UNIX, SOCK_STREAM, 0);
  struct sockaddr_un sa = {};
  sa.sun_family = AF_UNIX;
  std::string sp = t.P("sock");
  if (sp.size() < sizeof sa.sun_path) {
    std::memcpy(sa.sun_path, sp.c_str(), sp.size() + 1);
    SYS(t, bind(s, reinterpret_cast<sockaddr*>(&sa), sizeof sa));
  } else {
    t.Note("socket path too long; skipped");
  }
  close(s);
  t.Tree();
}

void Rename(Trace& t) {
  auto mk = [&](const char* name, const char* data) {
    int fd = open(t.P(name).c_str(), O_CREAT | O_WRONLY | O_TRUNC, 0644);
    t.Check(std::string("create ") + name, fd >= 0 && write(fd, data, strlen(data)) > 0);
    close(fd);
  };
  auto ren = [&](std::string_view a, std::string_view b, unsigned flags) {
    errno = 0;
    long r = renameat2(AT_FDCWD, t.P(a).c_str(), AT_FDCWD, t.P(b).c_str(), flags);
    t.Rec(
        "renameat2(" + std::string(a) + ", " + std::string(b) + ", " + std::to_string(flags) + ")",
        r, errno);
  };
  mk("a", "aaaa");
  mk("b", "bb");
  ren("a", "b", 0);  // over an existing file
  SYS(t, mkdir(t.P("d1"), 0755));
  SYS(t, mkdir(t.P("d2"), 0755));
  mk("d1/x", "xxx");
  int fd = SYSFD(t, open(t.P("d1/x"), O_RDWR));
  ren("d1/x", "d2/y", 0);  // across directories, with an open descriptor
  SYS(t, pwrite(fd, "Y", 1, 0));
  SYS(t, close(fd));
  SYS(t, mkdir(t.P("d1/sub"), 0755));
  SYS(t, mkdir(t.P("empty"), 0755));
  ren("d1/sub", "empty", 0);  // dir over an empty dir
  t.Stat("d1");
  ren("d1", "d2", 0);  // dir over a non-empty dir: ENOTEMPTY
  mk("file", "f");
  ren("file", "d1", 0);                // file over dir: EISDIR
  ren("d1", "file", 0);                // dir over file: ENOTDIR
  ren("file", "b", RENAME_NOREPLACE);  // EEXIST
  ren("file", "c", RENAME_NOREPLACE);
  ren("c", "d1", RENAME_EXCHANGE);                     // file <-> dir
  ren("c", "nope", RENAME_EXCHANGE);                   // ENOENT
  ren("c", "d1", RENAME_EXCHANGE | RENAME_NOREPLACE);  // EINVAL
  SYS(t, mkdir(t.P("c/inner"), 0755));
  ren("c", "c/inner/x", 0);  // into its own subdirectory: EINVAL
  ren("nope", "zz", 0);      // ENOENT
  ren("b", "b", 0);          // same name: no-op
  SYS(t, link(t.P("b").c_str(), t.P("b2").c_str()));
  ren("b", "b2", 0);  // hard links of one inode: no-op, both stay
  SYS(t, mkdir(t.P("p1"), 0755));
  SYS(t, mkdir(t.P("p1/mv"), 0755));
  SYS(t, mkdir(t.P("p2"), 0755));
  ren("p1/mv", "p2/mv", 0);  // parents' link counts follow ".."
  t.Stat("p1");
  t.Stat("p2");
  SYS(t, access(t.P("p2/mv/..").c_str(), F_OK));
  t.Tree();
}

void UnlinkOpen(Trace& t) {
  int fd = SYSFD(t, open(t.P("u"), O_CREAT | O_RDWR, 0644));
  int fd2 = SYSFD(t, open(t.P("u"), O_RDONLY));
  SYS(t, write(fd, "abc", 3));
  SYS(t, unlink(t.P("u").c_str()));
  struct stat st;
  SYS(t, fstat(fd, &st));
  t.Note("nlink after unlink " + std::to_string(st.st_nlink) + " size " +
         std::to_string(st.st_size));
  SYS(t, pwrite(fd, "defghi", 6, 3));
  SYS(t, fsync(fd));
  t.FdContent("fd", fd);
  t.FdContent("fd2", fd2);
  t.Listing("");  // no hidden leftovers
  SYS(t, close(fd));
  t.FdContent("fd2 after close of fd", fd2);
  SYS(t, close(fd2));
  t.Stat("u");
  SYS(t, close(open(t.P("v"), O_CREAT | O_WRONLY, 0644)));
  SYS(t, link(t.P("v").c_str(), t.P("w").c_str()));
  fd = SYSFD(t, open(t.P("v"), O_RDWR));
  SYS(t, unlink(t.P("v").c_str()));
  SYS(t, fstat(fd, &st));
  t.Note("nlink " + std::to_string(st.st_nlink));
  SYS(t, write(fd, "via fd", 6));
  SYS(t, close(fd));
  t.Tree();
}

void Mmap(Trace& t) {
  int fd = SYSFD(t, open(t.P("m"), O_CREAT | O_RDWR, 0644));
  SYS(t, ftruncate(fd, 256 * kKiB));
  void* p = mmap(nullptr, 256 * kKiB, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  t.Check("mmap shared writable", p != MAP_FAILED);
  if (p == MAP_FAILED) return;
  std::string pat = Pattern(200 * kKiB, 6);
  std::memcpy(static_cast<char*>(p) + 1000, pat.data(), pat.size());
  SYS(t, msync(p, 256 * kKiB, MS_SYNC));
  t.Pread("m after msync", fd, 0, 256 * kKiB);
  SYS(t, pwrite(fd, "QQ", 2, 10));
  t.Check("write() visible through the mapping", static_cast<char*>(p)[10] == 'Q');
  SYS(t, munmap(p, 256 * kKiB));
  SYS(t, close(fd));
  t.Content("m");
  // A private mapping's writes never reach the file.
  fd = SYSFD(t, open(t.P("m"), O_RDWR));
  p = mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
  if (p != MAP_FAILED) {
    std::memset(p, 'P', 4096);
    munmap(p, 4096);
  }
  SYS(t, close(fd));
  t.Content("m");
}

// Every name present for the whole listing appears exactly once, while other
// names come and go between getdents64 calls.
void ReaddirChanging(Trace& t) {
  SYS(t, mkdir(t.P("rd"), 0755));
  for (int i = 0; i < 300; i++) {
    close(open(t.P("rd/keep" + std::to_string(i)).c_str(), O_CREAT | O_WRONLY, 0644));
    if (i < 150) close(open(t.P("rd/gone" + std::to_string(i)).c_str(), O_CREAT | O_WRONLY, 0644));
  }
  int dfd = SYSFD(t, open(t.P("rd"), O_RDONLY | O_DIRECTORY));
  std::map<std::string, int> seen;
  char buf[1024];
  int step = 0;
  for (;;) {
    long n = syscall(SYS_getdents64, dfd, buf, sizeof buf);
    if (n <= 0) {
      t.Check("getdents64 ended without error", n == 0);
      break;
    }
    for (long off = 0; off < n;) {
      auto* d = reinterpret_cast<struct dirent64*>(buf + off);
      seen[d->d_name]++;
      off += d->d_reclen;
    }
    // Churn between batches: add names, remove names, rename names.
    close(open(t.P("rd/new" + std::to_string(step)).c_str(), O_CREAT | O_WRONLY, 0644));
    if (step < 150) unlink(t.P("rd/gone" + std::to_string(step)).c_str());
    if (step < 75) {
      rename(t.P("rd/gone" + std::to_string(149 - step)).c_str(),
             t.P("rd/moved" + std::to_string(step)).c_str());
    }
    step++;
  }
  SYS(t, close(dfd));
  int missing = 0, dup = 0;
  for (int i = 0; i < 300; i++) {
    int c = seen["keep" + std::to_string(i)];
    missing += c == 0;
    dup += c > 1;
  }
  t.Check("every stable name listed", missing == 0);
  t.Check("no stable name listed twice", dup == 0);
  t.Check(". and .. listed once", seen["."] == 1 && seen[".."] == 1);
  t.Check("listing took several batches", step > 5);
}

}  // namespace

TEST_CASE("parity: regular files, O_APPEND, O_TRUNC, O_EXCL") {
  RunParity({"files", RegularFiles, false});
}
TEST_CASE("parity: truncate up and down") { RunParity({"truncate", Truncate, false}); }
TEST_CASE("parity: sparse files, SEEK_DATA/SEEK_HOLE, > 4 GiB") {
  RunParity({"sparse", Sparse, false});
}
TEST_CASE("parity: fallocate and punch hole") { RunParity({"fallocate", Fallocate, false}); }
// Collapse/insert range: the mount's log must equal either ext4's (a kernel
// that forwards the modes to psmfs) or ext4's with the modes refused as
// Linux's FUSE module refuses them (this kernel, 6.18); either way every
// other call, and every errno the VFS gives, must match. Which one it is
// is printed. The core's own behaviour is tested without the kernel in
// tests/unit/core/fallocate_shift_test.cc.
TEST_CASE("parity: collapse and insert range") {
  const std::string mnt = ParityMountDir();
  const std::string scratch = MakeScratchDir("parity-shift");
  const std::string ndir = scratch + "/native", fdir = scratch + "/filtered", pdir = mnt + "/shift";
  for (const std::string& d : {ndir, fdir, pdir}) REQUIRE(mkdir(d.c_str(), 0755) == 0);
  Trace native(ndir, false), filtered(fdir, false), mounted(pdir, true);
  ShiftRange(native, false);
  ShiftRange(filtered, true);
  ShiftRange(mounted, false);
  // The reference must really do them (ext4 and XFS do), or nothing is
  // compared.
  REQUIRE_MESSAGE(native.lines() != filtered.lines(),
                  "the native directory " << ndir
                                          << " does not support collapse/insert range: "
                                             "put PSMFS_TEST_TMP on ext4 or XFS");
  const std::string fwd = DiffLogs(native.lines(), mounted.lines());
  const std::string filt = DiffLogs(filtered.lines(), mounted.lines());
  INFO("against ext4:\n" << fwd << "\nagainst ext4 with the modes refused by the kernel:\n"
                           << filt);
  CHECK((fwd.empty() || filt.empty()));
  if (fwd.empty()) {
    MESSAGE("collapse/insert range: the kernel forwards them; psmfs matches ext4");
  } else if (filt.empty()) {
    MESSAGE("collapse/insert range: this kernel's FUSE module answers EOPNOTSUPP for them "
            "before psmfs sees them; every other result matches ext4");
  }
  if (!KeepTmp()) RemoveTree(scratch);
}

TEST_CASE("parity: mkdir, rmdir, name lengths") { RunParity({"dirs", Directories, true}); }
TEST_CASE("parity: symlinks") { RunParity({"symlinks", Symlinks, true}); }
TEST_CASE("parity: hard links") { RunParity({"hardlinks", HardLinks, false}); }
TEST_CASE("parity: FIFOs, devices, sockets") { RunParity({"special", SpecialFiles, true}); }
TEST_CASE("parity: rename") { RunParity({"rename", Rename, false}); }
TEST_CASE("parity: unlink of an open file") { RunParity({"unlink_open", UnlinkOpen, false}); }
TEST_CASE("parity: shared writable mmap") { RunParity({"mmap", Mmap, false}); }
TEST_CASE("parity: readdir while the directory changes") {
  RunParity({"readdir", ReaddirChanging, false});
}

// Not a comparison: the native file system's free space moves with
// everything else on the disk, the volume's only with what we do.
TEST_CASE("statfs of the mount is sane and follows writes") {
  const std::string dir = ParityMountDir() + "/statfs";
  REQUIRE(mkdir(dir.c_str(), 0755) == 0);
  struct statvfs a, b;
  REQUIRE(statvfs(dir.c_str(), &a) == 0);
  CHECK(a.f_bsize > 0);
  CHECK(a.f_frsize > 0);
  CHECK(a.f_blocks > 0);
  CHECK(a.f_bfree <= a.f_blocks);
  CHECK(a.f_bavail <= a.f_bfree);
  CHECK(a.f_namemax == 255);
  const uint64_t bytes = 64 * kMiB;
  int fd = open((dir + "/fill").c_str(), O_CREAT | O_WRONLY, 0644);
  REQUIRE(fd >= 0);
  std::string chunk = Pattern(kMiB, 9);
  for (uint64_t off = 0; off < bytes; off += chunk.size()) {
    REQUIRE(write(fd, chunk.data(), chunk.size()) == static_cast<ssize_t>(chunk.size()));
  }
  REQUIRE(fsync(fd) == 0);
  REQUIRE(close(fd) == 0);
  REQUIRE(statvfs(dir.c_str(), &b) == 0);
  CHECK(b.f_blocks == a.f_blocks);
  const uint64_t used = (a.f_bfree - b.f_bfree) * a.f_frsize;
  INFO("free before " << a.f_bfree << " after " << b.f_bfree << " (frsize " << a.f_frsize << ")");
  CHECK(b.f_bfree < a.f_bfree);
  CHECK(used >= bytes);
  CHECK(used <= bytes + 8 * kMiB);  // data plus a little metadata slack
  REQUIRE(unlink((dir + "/fill").c_str()) == 0);
}

TEST_CASE("parity: the mount unmounts cleanly and fsck finds nothing") { FinishParity(); }
