// A sample tree with one of everything (files, a big and a sparse file,
// a symlink, a hard link, a FIFO, an xattr, exact times) and a change of
// every kind to it, for the mount tests that move trees between states
// (restore, send/receive); and its model: the same calls made in a native
// directory, recorded as manifests (tree_compare.h).
#pragma once

#include <dirent.h>
#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "tests/common/fuse_files.h"
#include "tests/common/psm_test_util.h"
#include "tests/common/tree_compare.h"

namespace psm::testutil {

// Gives every node at and below `d` an mtime (and atime) that depends only
// on its path below `d` and on `gen`, children before their directory:
// trees built by the same calls then have the same times, so a native
// mirror's times are the model's. Symlinks themselves are stamped.
inline void StampTimes(const std::string& d, int gen, const std::string& rel = "") {
  const std::string p = d + rel;
  struct stat st;
  REQUIRE(::lstat(p.c_str(), &st) == 0);
  if (S_ISDIR(st.st_mode)) {
    DIR* dir = ::opendir(p.c_str());
    REQUIRE(dir != nullptr);
    std::vector<std::string> names;
    while (dirent* e = ::readdir(dir)) {
      const std::string n = e->d_name;
      if (n != "." && n != ".." && n != ".snapshots") names.push_back(n);
    }
    ::closedir(dir);
    std::sort(names.begin(), names.end());  // the last stamp of a hard link wins
    for (const std::string& n : names) StampTimes(d, gen, rel + "/" + n);
  }
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : rel) h = (h ^ c) * 1099511628211ull;
  struct timespec ts[2];
  ts[1].tv_sec = 1500000000 + gen * 1000000 + static_cast<time_t>(h % 1000000);
  ts[1].tv_nsec = static_cast<long>((h >> 20) % 1000000000);
  ts[0] = ts[1];
  REQUIRE_MESSAGE(::utimensat(AT_FDCWD, p.c_str(), ts, AT_SYMLINK_NOFOLLOW) == 0,
                  p << ": " << strerror(errno));
}

// A tree with one of everything at `d` (created); times stamped (gen 1).
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
  StampTimes(d, 1);
}

// Changes every kind of thing in the tree at `d`; times stamped (gen 2).
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
  StampTimes(d, 2);
}

// The model of the sample: the manifests (tree_compare.h) of BuildTree's
// tree and of that tree after ChangeTree, made in a native directory on the
// repository's disk (PSMFS_TEST_TMP), never on psmfs.
struct SampleModel {
  TreeManifest built, changed;
};
inline SampleModel MakeSampleModel() {
  const std::string scratch = MakeScratchDir("sample-model");
  SampleModel m;
  BuildTree(scratch + "/data");
  m.built = ManifestOf(scratch + "/data");
  ChangeTree(scratch + "/data");
  m.changed = ManifestOf(scratch + "/data");
  if (!KeepTmp()) RemoveTree(scratch);
  return m;
}

// "" when the tree at `root` is the model `want`; `open_files` are paths
// (below root, "/big") held open through the mount, whose mtime the kernel
// keeps as its own until the last close (docs/restore.md): their mtime is
// not compared.
inline std::string SameAs(const TreeManifest& want, const std::string& root,
                          const std::vector<std::string>& open_files = {}) {
  if (open_files.empty()) return DiffManifests(want, ManifestOf(root));
  TreeManifest w = want, g = ManifestOf(root);
  for (const std::string& f : open_files) {
    for (TreeManifest* m : {&w, &g}) {
      auto it = m->find(f);
      if (it == m->end()) continue;
      const size_t a = it->second.find(" mtime="), b = it->second.find(' ', a + 1);
      if (a != std::string::npos) it->second.erase(a, b == std::string::npos ? b : b - a);
    }
  }
  return DiffManifests(w, g);
}

}  // namespace psm::testutil
