// A sample tree with one of everything (files, a big and a sparse file,
// a symlink, a hard link, a FIFO, an xattr, exact times) and a change of
// every kind to it, for the mount tests that move trees between states
// (restore, send/receive); and the comparison of two such trees.
#pragma once

#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <string>

#include "tests/common/fuse_files.h"
#include "tests/common/tree_compare.h"

namespace psm::testutil {

// What CompareTrees does not look at: xattrs, mtimes and the hole map of
// the files the test sets them on.
inline std::string Extra(const std::string& p) {
  std::string d;
  struct stat st;
  if (::lstat(p.c_str(), &st) != 0) return "missing";
  d += "mtime=" + std::to_string(st.st_mtim.tv_sec) + "." + std::to_string(st.st_mtim.tv_nsec);
  char v[256];
  ssize_t n = ::lgetxattr(p.c_str(), "user.tag", v, sizeof v);
  d += " tag=" + (n >= 0 ? std::string(v, n) : "none");
  if (S_ISREG(st.st_mode)) {
    int fd = ::open(p.c_str(), O_RDONLY);
    off_t off = 0;
    while (fd >= 0) {
      off_t ds = ::lseek(fd, off, SEEK_DATA);
      if (ds < 0) break;
      off_t hs = ::lseek(fd, ds, SEEK_HOLE);
      d += " [" + std::to_string(ds) + "," + std::to_string(hs) + ")";
      off = hs;
    }
    if (fd >= 0) ::close(fd);
  }
  return d;
}

// A tree with one of everything at `d` (created).
inline void BuildTree(const std::string& d) {
  REQUIRE(::mkdir(d.c_str(), 0755) == 0);
  REQUIRE(::mkdir((d + "/sub").c_str(), 0750) == 0);
  for (int i = 0; i < 20; ++i) WriteFile(d + "/sub/f" + std::to_string(i), Pattern(5000 + i, i));
  WriteFile(d + "/big", Pattern(3 << 20, 99));
  WriteFile(d + "/sparse", "head");
  WriteFile(d + "/sparse", "tail", 8 << 20, false);
  REQUIRE(::symlink("sub/f1", (d + "/link").c_str()) == 0);
  REQUIRE(::link((d + "/sub/f2").c_str(), (d + "/hard").c_str()) == 0);
  REQUIRE(::setxattr((d + "/big").c_str(), "user.tag", "old", 3, 0) == 0);
  struct timespec ts[2] = {{1000, 0}, {123456789, 987654321}};
  REQUIRE(::utimensat(AT_FDCWD, (d + "/sub/f3").c_str(), ts, 0) == 0);
  REQUIRE(::mkfifo((d + "/fifo").c_str(), 0600) == 0);
}

// Changes every kind of thing in the tree at `d`.
inline void ChangeTree(const std::string& d) {
  WriteFile(d + "/big", "overwritten", 1 << 20, false);
  REQUIRE(::truncate((d + "/sub/f4").c_str(), 10) == 0);
  REQUIRE(::unlink((d + "/sub/f5").c_str()) == 0);
  REQUIRE(::rename((d + "/sub/f6").c_str(), (d + "/moved").c_str()) == 0);
  REQUIRE(::chmod((d + "/sub/f7").c_str(), 0600) == 0);
  REQUIRE(::setxattr((d + "/big").c_str(), "user.tag", "new", 3, 0) == 0);
  REQUIRE(::unlink((d + "/link").c_str()) == 0);
  REQUIRE(::symlink("elsewhere", (d + "/link").c_str()) == 0);
  REQUIRE(::unlink((d + "/hard").c_str()) == 0);
  WriteFile(d + "/sparse", "middle", 4 << 20, false);
  REQUIRE(::mkdir((d + "/newdir").c_str(), 0755) == 0);
  WriteFile(d + "/newdir/new", Pattern(70000, 5));
  REQUIRE(::utimensat(AT_FDCWD, (d + "/sub/f3").c_str(), nullptr, 0) == 0);
  REQUIRE(::unlink((d + "/fifo").c_str()) == 0);
}

// "" when the trees at `live` and `s` are the same (CompareTrees, plus
// xattrs, mtimes and holes of the files the sample sets them on).
inline std::string SameTree(const std::string& live, const std::string& s) {
  std::string diff = psm::testutil::CompareTrees(live, s);
  if (!diff.empty()) return diff;
  for (const char* f : {"big", "sparse", "sub/f3", "link", "sub"}) {
    if (Extra(live + "/" + f) != Extra(s + "/" + f)) {
      return std::string(f) + ": " + Extra(live + "/" + f) + " vs " + Extra(s + "/" + f);
    }
  }
  return "";
}

}  // namespace psm::testutil
