// Mount smoke test (label fuse): mounts a fresh volume with the real psmfs
// daemon and runs the everyday system calls through the kernel: create,
// write, read, mkdir, readdir, rename, unlink, symlink, link, stat, chmod,
// utimens, truncate, xattrs (with the size-probe protocol), fsync, and the
// daemon's life cycle (unmount, remount, SIGTERM, daemonized start, start-up
// errors).
#include <dirent.h>
#include <doctest/doctest.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <signal.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <map>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "tests/common/mount_fixture.h"

namespace {

using psm::test::MountedVolume;

std::string ReadFile(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return "<open: " + std::string(strerror(errno)) + ">";
  std::string out;
  char buf[65536];
  for (;;) {
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  close(fd);
  return out;
}

bool WriteFile(const std::string& path, const std::string& data, int flags = O_TRUNC) {
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC | flags, 0644);
  if (fd < 0) return false;
  bool ok = write(fd, data.data(), data.size()) == static_cast<ssize_t>(data.size());
  return close(fd) == 0 && ok;
}

// Names in a directory (without "." and ".."), with d_ino and d_type.
std::map<std::string, std::pair<ino_t, unsigned char>> List(const std::string& dir,
                                                            bool* saw_dots = nullptr) {
  std::map<std::string, std::pair<ino_t, unsigned char>> out;
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return out;
  int dots = 0;
  while (dirent* e = readdir(d)) {
    std::string n = e->d_name;
    if (n == "." || n == "..") {
      ++dots;
      continue;
    }
    out[n] = {e->d_ino, e->d_type};
  }
  closedir(d);
  if (saw_dots != nullptr) *saw_dots = dots == 2;
  return out;
}

int Errno(int rc) { return rc < 0 ? errno : 0; }

int RenameAt2(const std::string& from, const std::string& to, unsigned flags) {
  return static_cast<int>(
      syscall(SYS_renameat2, AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(), flags));
}

}  // namespace

TEST_CASE("mount smoke: files, directories, links, attributes, xattrs") {
  auto mv = MountedVolume::Create("256M");
  const std::string m = mv->mnt;

  SUBCASE("statfs and the root") {
    struct statvfs vfs {};
    REQUIRE(statvfs(m.c_str(), &vfs) == 0);
    CHECK(vfs.f_blocks > 0);
    CHECK(vfs.f_bfree <= vfs.f_blocks);
    struct stat st {};
    REQUIRE(stat(m.c_str(), &st) == 0);
    CHECK(S_ISDIR(st.st_mode));
    CHECK(st.st_ino == 1);
    struct stat sd {};
    CHECK(stat(mv->Path(".snapshots").c_str(), &sd) == 0);
    CHECK(S_ISDIR(sd.st_mode));
  }

  SUBCASE("create, write, read back, append, truncate") {
    const std::string f = mv->Path("file");
    int fd = open(f.c_str(), O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0640);
    REQUIRE(fd >= 0);
    CHECK(Errno(open(f.c_str(), O_CREAT | O_EXCL | O_RDWR, 0640)) == EEXIST);
    // 3 MiB + a bit of pseudo-random data: several 1 MiB WRITEs.
    std::string data(3 * (1 << 20) + 12345, '\0');
    std::mt19937_64 rng(42);
    for (char& c : data) c = static_cast<char>(rng());
    CHECK(pwrite(fd, data.data(), data.size(), 0) == static_cast<ssize_t>(data.size()));
    std::string back(data.size(), '\0');
    CHECK(pread(fd, back.data(), back.size(), 0) == static_cast<ssize_t>(back.size()));
    CHECK(back == data);
    CHECK(fsync(fd) == 0);
    CHECK(fdatasync(fd) == 0);
    struct stat st {};
    CHECK(fstat(fd, &st) == 0);
    CHECK(st.st_size == static_cast<off_t>(data.size()));
    CHECK((st.st_mode & 07777) == 0640);
    CHECK(S_ISREG(st.st_mode));
    CHECK(close(fd) == 0);
    CHECK(ReadFile(f) == data);
    // Overwrite in the middle, read at an odd offset.
    fd = open(f.c_str(), O_RDWR | O_CLOEXEC);
    REQUIRE(fd >= 0);
    CHECK(pwrite(fd, "XYZ", 3, 1000000) == 3);
    char buf[5] = {};
    CHECK(pread(fd, buf, 5, 999999) == 5);
    CHECK(std::string(buf, 5) == std::string(1, data[999999]) + "XYZ" + data[1000003]);
    // Reading past EOF returns 0.
    CHECK(pread(fd, buf, 5, static_cast<off_t>(data.size()) + 10) == 0);
    CHECK(ftruncate(fd, 10) == 0);
    CHECK(fstat(fd, &st) == 0);
    CHECK(st.st_size == 10);
    CHECK(close(fd) == 0);
    CHECK(ReadFile(f) == data.substr(0, 10));
    CHECK(truncate(f.c_str(), 0) == 0);
    CHECK(ReadFile(f).empty());

    const std::string a = mv->Path("append");
    CHECK(WriteFile(a, "one,"));
    CHECK(WriteFile(a, "two,", O_APPEND));
    fd = open(a.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
    REQUIRE(fd >= 0);
    CHECK(pwrite(fd, "three", 5, 0) == 5);  // O_APPEND: at EOF whatever the offset
    CHECK(close(fd) == 0);
    CHECK(ReadFile(a) == "one,two,three");
    // O_TRUNC on open.
    CHECK(WriteFile(a, "new"));
    CHECK(ReadFile(a) == "new");
  }

  SUBCASE("mkdir, readdir across many READDIR calls, rmdir") {
    const std::string d = mv->Path("dir");
    REQUIRE(mkdir(d.c_str(), 0750) == 0);
    CHECK(Errno(mkdir(d.c_str(), 0750)) == EEXIST);
    struct stat st {};
    REQUIRE(stat(d.c_str(), &st) == 0);
    CHECK(S_ISDIR(st.st_mode));
    CHECK((st.st_mode & 07777) == 0750);
    // Long names, enough entries for several 4 KiB READDIR(PLUS) replies.
    std::set<std::string> want;
    for (int i = 0; i < 600; ++i) {
      std::string name = "entry-" + std::to_string(i) + "-" + std::string(40, 'x');
      want.insert(name);
      REQUIRE(WriteFile(d + "/" + name, std::to_string(i)));
    }
    bool dots = false;
    auto got = List(d, &dots);
    CHECK(dots);
    CHECK(got.size() == want.size());
    size_t type_ok = 0, ino_ok = 0;
    for (const auto& [name, it] : got) {
      CHECK(want.count(name) == 1);
      struct stat es {};
      if (stat((d + "/" + name).c_str(), &es) == 0 && es.st_ino == it.first) ++ino_ok;
      if (it.second == DT_REG) ++type_ok;
    }
    CHECK(ino_ok == got.size());
    CHECK(type_ok == got.size());
    // A second listing (readdirplus may be used now) gives the same names.
    CHECK(List(d).size() == want.size());
    CHECK(Errno(rmdir(d.c_str())) == ENOTEMPTY);
    for (const std::string& name : want) REQUIRE(unlink((d + "/" + name).c_str()) == 0);
    CHECK(List(d).empty());
    CHECK(rmdir(d.c_str()) == 0);
    CHECK(Errno(stat(d.c_str(), &st)) == ENOENT);
    // Nested directories and nlink.
    REQUIRE(mkdir(mv->Path("p").c_str(), 0755) == 0);
    REQUIRE(mkdir(mv->Path("p/q").c_str(), 0755) == 0);
    REQUIRE(stat(mv->Path("p").c_str(), &st) == 0);
    CHECK(st.st_nlink == 3);
    CHECK(Errno(unlink(mv->Path("p").c_str())) == EISDIR);
    CHECK(Errno(rmdir(mv->Path("p/none").c_str())) == ENOENT);
  }

  SUBCASE("rename: plain, over a file, NOREPLACE, EXCHANGE, across directories") {
    REQUIRE(mkdir(mv->Path("r").c_str(), 0755) == 0);
    REQUIRE(WriteFile(mv->Path("r/a"), "A"));
    REQUIRE(WriteFile(mv->Path("r/b"), "B"));
    CHECK(rename(mv->Path("r/a").c_str(), mv->Path("r/c").c_str()) == 0);
    CHECK(ReadFile(mv->Path("r/c")) == "A");
    CHECK(access(mv->Path("r/a").c_str(), F_OK) != 0);
    CHECK(Errno(RenameAt2(mv->Path("r/c"), mv->Path("r/b"), RENAME_NOREPLACE)) == EEXIST);
    CHECK(RenameAt2(mv->Path("r/c"), mv->Path("r/b"), RENAME_EXCHANGE) == 0);
    CHECK(ReadFile(mv->Path("r/b")) == "A");
    CHECK(ReadFile(mv->Path("r/c")) == "B");
    CHECK(rename(mv->Path("r/c").c_str(), mv->Path("r/b").c_str()) == 0);  // replaces
    CHECK(ReadFile(mv->Path("r/b")) == "B");
    CHECK(List(mv->Path("r")).size() == 1);
    REQUIRE(mkdir(mv->Path("r2").c_str(), 0755) == 0);
    CHECK(rename(mv->Path("r/b").c_str(), mv->Path("r2/moved").c_str()) == 0);
    CHECK(ReadFile(mv->Path("r2/moved")) == "B");
    CHECK(rename(mv->Path("r2").c_str(), mv->Path("r/sub").c_str()) == 0);  // a directory
    CHECK(ReadFile(mv->Path("r/sub/moved")) == "B");
    CHECK(Errno(rename(mv->Path("r").c_str(), mv->Path("r/sub/x").c_str())) == EINVAL);
  }

  SUBCASE("unlink of an open file keeps its data until close") {
    const std::string f = mv->Path("open-unlinked");
    REQUIRE(WriteFile(f, "still here"));
    int fd = open(f.c_str(), O_RDONLY | O_CLOEXEC);
    REQUIRE(fd >= 0);
    CHECK(unlink(f.c_str()) == 0);
    CHECK(access(f.c_str(), F_OK) != 0);
    char buf[32] = {};
    CHECK(pread(fd, buf, sizeof(buf), 0) == 10);
    CHECK(std::string(buf) == "still here");
    CHECK(close(fd) == 0);
    CHECK(Errno(unlink(f.c_str())) == ENOENT);
  }

  SUBCASE("the space of a deleted file comes back (forget reaches the core)") {
    struct statvfs before {};
    REQUIRE(statvfs(m.c_str(), &before) == 0);
    const std::string f = mv->Path("space");
    int fd = open(f.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
    REQUIRE(fd >= 0);
    std::string chunk(1 << 20, 's');
    for (int i = 0; i < 32; ++i) REQUIRE(write(fd, chunk.data(), chunk.size()) == 1 << 20);
    CHECK(fsync(fd) == 0);
    CHECK(close(fd) == 0);
    struct statvfs full {};
    REQUIRE(statvfs(m.c_str(), &full) == 0);
    const uint64_t blocks_32m = (32u << 20) / full.f_frsize;
    CHECK(before.f_bfree - full.f_bfree >= blocks_32m);
    REQUIRE(unlink(f.c_str()) == 0);
    // The kernel forgets the inode when it evicts it; the core then frees it.
    struct statvfs after {};
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    do {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      REQUIRE(statvfs(m.c_str(), &after) == 0);
    } while (before.f_bfree - std::min(before.f_bfree, after.f_bfree) >= blocks_32m / 2 &&
             std::chrono::steady_clock::now() < deadline);
    CHECK(before.f_bfree - std::min(before.f_bfree, after.f_bfree) < blocks_32m / 2);
  }

  SUBCASE("symlink, hard link, mknod") {
    REQUIRE(WriteFile(mv->Path("target"), "T"));
    REQUIRE(symlink("target", mv->Path("sym").c_str()) == 0);
    char buf[64] = {};
    CHECK(readlink(mv->Path("sym").c_str(), buf, sizeof(buf)) == 6);
    CHECK(std::string(buf) == "target");
    struct stat ls {};
    struct stat ts {};
    REQUIRE(lstat(mv->Path("sym").c_str(), &ls) == 0);
    CHECK(S_ISLNK(ls.st_mode));
    CHECK(ls.st_size == 6);
    CHECK(ReadFile(mv->Path("sym")) == "T");
    REQUIRE(link(mv->Path("target").c_str(), mv->Path("hard").c_str()) == 0);
    REQUIRE(stat(mv->Path("target").c_str(), &ts) == 0);
    CHECK(ts.st_nlink == 2);
    struct stat hs {};
    REQUIRE(stat(mv->Path("hard").c_str(), &hs) == 0);
    CHECK(hs.st_ino == ts.st_ino);
    CHECK(unlink(mv->Path("target").c_str()) == 0);
    CHECK(ReadFile(mv->Path("hard")) == "T");
    REQUIRE(stat(mv->Path("hard").c_str(), &hs) == 0);
    CHECK(hs.st_nlink == 1);
    CHECK(Errno(stat(mv->Path("sym").c_str(), &ts)) == ENOENT);  // dangling now
    REQUIRE(mkfifo(mv->Path("fifo").c_str(), 0600) == 0);
    REQUIRE(lstat(mv->Path("fifo").c_str(), &ls) == 0);
    CHECK(S_ISFIFO(ls.st_mode));
  }

  SUBCASE("chmod, chown, utimensat") {
    const std::string f = mv->Path("attrs");
    REQUIRE(WriteFile(f, "x"));
    CHECK(chmod(f.c_str(), 0604) == 0);
    struct stat st {};
    REQUIRE(stat(f.c_str(), &st) == 0);
    CHECK((st.st_mode & 07777) == 0604);
    if (geteuid() == 0) {
      CHECK(chown(f.c_str(), 1234, 5678) == 0);
      REQUIRE(stat(f.c_str(), &st) == 0);
      CHECK(st.st_uid == 1234u);
      CHECK(st.st_gid == 5678u);
    }
    struct timespec ts[2] = {{1000000000, 111}, {1200000000, 222}};
    CHECK(utimensat(AT_FDCWD, f.c_str(), ts, 0) == 0);
    REQUIRE(stat(f.c_str(), &st) == 0);
    CHECK(st.st_atim.tv_sec == 1000000000);
    CHECK(st.st_atim.tv_nsec == 111);
    CHECK(st.st_mtim.tv_sec == 1200000000);
    CHECK(st.st_mtim.tv_nsec == 222);
    struct timespec now[2] = {{0, UTIME_NOW}, {0, UTIME_NOW}};
    time_t before = time(nullptr);
    CHECK(utimensat(AT_FDCWD, f.c_str(), now, 0) == 0);
    REQUIRE(stat(f.c_str(), &st) == 0);
    CHECK(st.st_mtim.tv_sec >= before - 1);
    CHECK(st.st_atim.tv_sec >= before - 1);
  }

  SUBCASE("xattrs: set, size probe, ERANGE, list, flags, remove") {
    const std::string f = mv->Path("xa");
    REQUIRE(WriteFile(f, "x"));
    CHECK(setxattr(f.c_str(), "user.color", "blue!", 5, 0) == 0);
    CHECK(setxattr(f.c_str(), "user.empty", "", 0, 0) == 0);
    CHECK(getxattr(f.c_str(), "user.color", nullptr, 0) == 5);  // size probe
    char small[2];
    CHECK(Errno(static_cast<int>(getxattr(f.c_str(), "user.color", small, sizeof(small)))) ==
          ERANGE);
    char buf[256] = {};
    CHECK(getxattr(f.c_str(), "user.color", buf, sizeof(buf)) == 5);
    CHECK(std::string(buf, 5) == "blue!");
    CHECK(getxattr(f.c_str(), "user.empty", buf, sizeof(buf)) == 0);
    ssize_t need = listxattr(f.c_str(), nullptr, 0);
    CHECK(need == static_cast<ssize_t>(sizeof("user.color") + sizeof("user.empty")));
    CHECK(Errno(static_cast<int>(listxattr(f.c_str(), small, sizeof(small)))) == ERANGE);
    ssize_t n = listxattr(f.c_str(), buf, sizeof(buf));
    REQUIRE(n == need);
    std::set<std::string> names;
    for (ssize_t i = 0; i < n; i += static_cast<ssize_t>(strlen(buf + i)) + 1)
      names.insert(buf + i);
    CHECK(names == std::set<std::string>{"user.color", "user.empty"});
    CHECK(Errno(setxattr(f.c_str(), "user.color", "x", 1, XATTR_CREATE)) == EEXIST);
    CHECK(Errno(setxattr(f.c_str(), "user.none", "x", 1, XATTR_REPLACE)) == ENODATA);
    CHECK(setxattr(f.c_str(), "user.color", "red", 3, XATTR_REPLACE) == 0);
    CHECK(getxattr(f.c_str(), "user.color", buf, sizeof(buf)) == 3);
    CHECK(removexattr(f.c_str(), "user.color") == 0);
    CHECK(Errno(static_cast<int>(getxattr(f.c_str(), "user.color", buf, sizeof(buf)))) == ENODATA);
    CHECK(Errno(removexattr(f.c_str(), "user.color")) == ENODATA);
    // xattrs on a directory and on a symlink target.
    CHECK(setxattr(m.c_str(), "user.root", "r", 1, 0) == 0);
    CHECK(getxattr(m.c_str(), "user.root", buf, sizeof(buf)) == 1);
  }

  SUBCASE("errors come back as the right errno") {
    struct stat st {};
    CHECK(Errno(stat(mv->Path("missing").c_str(), &st)) == ENOENT);
    CHECK(Errno(open(mv->Path("missing/x").c_str(), O_RDONLY)) == ENOENT);
    REQUIRE(WriteFile(mv->Path("plain"), "p"));
    CHECK(Errno(open(mv->Path("plain/x").c_str(), O_RDONLY)) == ENOTDIR);
    CHECK(Errno(mkdir(mv->Path(std::string(256, 'n')).c_str(), 0755)) == ENAMETOOLONG);
    CHECK(Errno(open(mv->Path(".snapshots/x").c_str(), O_CREAT | O_WRONLY, 0644)) == EROFS);
  }

  CHECK(mv->Unmount());
}

TEST_CASE("mount smoke: data survives unmount and remount") {
  auto mv = MountedVolume::Create("256M", "commit_interval=100");
  std::string data(2 << 20, 'q');
  REQUIRE(WriteFile(mv->Path("keep"), data));
  REQUIRE(mkdir(mv->Path("kd").c_str(), 0700) == 0);
  REQUIRE(symlink("keep", mv->Path("kd/ln").c_str()) == 0);
  REQUIRE(setxattr(mv->Path("keep").c_str(), "user.k", "v", 1, 0) == 0);
  REQUIRE(mv->Unmount());
  REQUIRE(mv->Remount());
  CHECK(ReadFile(mv->Path("keep")) == data);
  char buf[16] = {};
  CHECK(readlink(mv->Path("kd/ln").c_str(), buf, sizeof(buf)) == 4);
  CHECK(getxattr(mv->Path("keep").c_str(), "user.k", buf, sizeof(buf)) == 1);
  struct stat st {};
  REQUIRE(stat(mv->Path("kd").c_str(), &st) == 0);
  CHECK((st.st_mode & 07777) == 0700);
  CHECK(mv->Unmount());
}

TEST_CASE("mount smoke: syncfs after a file was written and deleted") {
  // With the writeback cache the kernel flushes the cached ctime of a file
  // in unlink itself (SETATTR mtime+ctime, after the UNLINK reply); an error
  // there is recorded as a writeback error and makes the next syncfs(2) fail.
  auto mv = MountedVolume::Create("256M");
  REQUIRE(WriteFile(mv->Path("gone"), "data"));
  REQUIRE(unlink(mv->Path("gone").c_str()) == 0);
  int fd = open(mv->mnt.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  REQUIRE(fd >= 0);
  int rc = syncfs(fd);
  std::string why = rc == 0 ? "" : strerror(errno);
  CHECK_MESSAGE(rc == 0, "syncfs: " << why);
  close(fd);
  CHECK(mv->Unmount());
}

TEST_CASE("mount smoke: SIGTERM unmounts cleanly") {
  auto mv = MountedVolume::Create("256M");
  REQUIRE(WriteFile(mv->Path("t"), "term"));
  // Still running, or the clean exit checked below would be someone else's.
  REQUIRE_MESSAGE(mv->Alive(), "psmfs died before the SIGTERM (exit " << mv->last_exit << ")");
  REQUIRE(kill(mv->pid, SIGTERM) == 0);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (mv->Alive() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  REQUIRE_FALSE(mv->Alive());
  CHECK(mv->last_exit == 0);
  CHECK_FALSE(psm::test::IsMountPoint(mv->mnt, ""));
  REQUIRE(mv->Remount());
  CHECK(ReadFile(mv->Path("t")) == "term");
  CHECK(mv->Unmount());
}

TEST_CASE("mount smoke: daemonized start, start-up errors") {
  const std::string bin = psm::test::BinDir() + "/psmfs";
  auto mv = MountedVolume::Create("256M");
  REQUIRE(WriteFile(mv->Path("d"), "daemon"));
  REQUIRE(mv->Unmount());

  // Without -f psmfs returns 0 once mounted and keeps serving in the
  // background.
  auto r = psm::test::RunProgram({bin, mv->vol, mv->mnt}, 120);
  REQUIRE_MESSAGE(r.exit_code == 0, r.output);
  CHECK(r.output.empty());
  REQUIRE(psm::test::IsMountPoint(mv->mnt));
  CHECK(ReadFile(mv->Path("d")) == "daemon");

  // The mount point is busy now, and so is the volume.
  r = psm::test::RunProgram({bin, mv->vol, mv->mnt, "-f"}, 60);
  CHECK(r.exit_code == 1);
  CHECK(r.output.find("already a mount point") != std::string::npos);
  const std::string other = mv->dir + "/other";
  REQUIRE(mkdir(other.c_str(), 0755) == 0);
  r = psm::test::RunProgram({bin, mv->vol, other, "-f"}, 60);
  CHECK(r.exit_code == 1);
  CHECK_MESSAGE(r.output.find("already mounted") != std::string::npos, r.output);
  CHECK_FALSE(psm::test::IsMountPoint(other, ""));

  // Unmounting ends the daemon and releases the volume: a foreground mount
  // works again (it would fail with "already mounted" otherwise).
  auto um = psm::test::RunProgram({"fusermount3", "-u", mv->mnt});
  REQUIRE_MESSAGE(um.ok(), um.output);
  bool remounted = false;
  for (int i = 0; i < 300 && !remounted; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    r = psm::test::RunProgram({bin, mv->vol, mv->mnt}, 60);  // daemonized again
    remounted = r.exit_code == 0;
  }
  REQUIRE_MESSAGE(remounted, r.output);
  CHECK(ReadFile(mv->Path("d")) == "daemon");
  um = psm::test::RunProgram({"fusermount3", "-u", mv->mnt});
  CHECK(um.ok());

  // Usage and validation errors.
  CHECK(psm::test::RunProgram({bin}).exit_code == 2);
  CHECK(psm::test::RunProgram({bin, mv->vol, mv->mnt, "-o", "no_such_option"}).exit_code == 2);
  CHECK(psm::test::RunProgram({bin, mv->vol, mv->mnt, "-o", "commit_interval=abc"}).exit_code == 2);
  r = psm::test::RunProgram({bin, mv->dir, mv->mnt, "-f"});
  CHECK(r.exit_code == 1);
  CHECK(r.output.find("not a psmfs volume") != std::string::npos);
  r = psm::test::RunProgram({bin, mv->vol, mv->dir + "/nowhere", "-f"});
  CHECK(r.exit_code == 1);
  auto help = psm::test::RunProgram({bin, "--help"});
  CHECK(help.exit_code == 0);
  CHECK(help.output.find("Exit status") != std::string::npos);
  CHECK(psm::test::RunProgram({bin, "--version"}).exit_code == 0);
}
