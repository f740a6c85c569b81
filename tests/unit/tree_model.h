// Tree manifests and a random-change driver over psm::FileSystem, shared by
// the restore and send/receive model tests: a manifest is every path of a
// tree with everything a restore or a receive must reproduce about it
// (attributes, times, content hash, hole map, xattrs, hard-link groups).
#pragma once

#include <sys/sysmacros.h>

#include <algorithm>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "tests/unit/core_test_util.h"

namespace psm_test {
using namespace psm;

using Manifest = std::map<std::string, std::string>;

inline uint64_t Fnv(std::string_view s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

inline std::string Ns(const struct timespec& t) {
  return std::to_string(t.tv_sec) + "." + std::to_string(t.tv_nsec);
}

// Everything a restore must bring back about one node.
inline std::string Describe(FileSystem& fs, NodeId node, const std::string& path,
                     std::map<InodeId, std::string>* groups) {
  auto a = fs.GetAttr(node);
  REQUIRE_MESSAGE(a.ok(), (path + ": " + a.status().ToString()));
  const struct stat& st = a->st;
  std::string d = "mode=" + std::to_string(st.st_mode) + " uid=" + std::to_string(st.st_uid) +
                  " gid=" + std::to_string(st.st_gid) + " nlink=" + std::to_string(st.st_nlink) +
                  " size=" + std::to_string(st.st_size) + " mtime=" + Ns(st.st_mtim) +
                  " ctime=" + Ns(st.st_ctim) + " rdev=" + std::to_string(st.st_rdev);
  if (!S_ISDIR(st.st_mode)) {
    // Hard links: the first path (in walk order) of the inode names the group.
    auto [it, fresh] = groups->emplace(InoOf(node), path);
    d += " group=" + it->second;
    (void)fresh;
  }
  if (S_ISREG(st.st_mode)) {
    d += " blocks=" + std::to_string(st.st_blocks);
    auto fh = fs.OpenFile(node, O_RDONLY);
    REQUIRE_MESSAGE(fh.ok(), (path + ": " + fh.status().ToString()));
    std::string data(st.st_size, '\0');
    auto n = fs.Read(*fh, 0, data.size(), data.data());
    REQUIRE(n.ok());
    CHECK(*n == data.size());
    d += " data=" + std::to_string(Fnv(data));
    // The hole map: runs of data.
    uint64_t off = 0;
    while (off < static_cast<uint64_t>(st.st_size)) {
      auto ds = fs.Lseek(*fh, off, SEEK_DATA);
      if (!ds.ok()) break;
      auto hs = fs.Lseek(*fh, *ds, SEEK_HOLE);
      REQUIRE(hs.ok());
      d += " [" + std::to_string(*ds) + "," + std::to_string(*hs) + ")";
      if (*hs <= *ds) break;
      off = *hs;
    }
    REQUIRE(fs.Release(*fh).ok());
  } else if (S_ISLNK(st.st_mode)) {
    auto t = fs.ReadLink(node);
    REQUIRE(t.ok());
    d += " target=" + *t;
  }
  auto names = fs.ListXattr(node);
  REQUIRE(names.ok());
  std::vector<std::string> xs;
  for (size_t p = 0; p < names->size();) {
    size_t e = names->find('\0', p);
    if (e == std::string::npos) e = names->size();
    if (e > p) xs.push_back(names->substr(p, e - p));
    p = e + 1;
  }
  std::sort(xs.begin(), xs.end());
  for (const std::string& x : xs) {
    auto v = fs.GetXattr(node, x);
    REQUIRE_MESSAGE(v.ok(), (path + " " + x + ": " + v.status().ToString()));
    d += " x:" + x + "=" + *v;
  }
  return d;
}

inline void Walk(FileSystem& fs, NodeId dir, const std::string& path, bool live_root, Manifest* out,
          std::map<InodeId, std::string>* groups) {
  std::vector<std::string> names;
  auto dh = fs.OpenDir(dir);
  REQUIRE_MESSAGE(dh.ok(), (path + ": " + dh.status().ToString()));
  REQUIRE(fs.ReadDir(*dh, 0, [&](const DirEntryOut& e) {
               if (e.name != "." && e.name != ".." && !(live_root && e.name == kSnapDirName)) {
                 names.emplace_back(e.name);
               }
               return true;
             }).ok());
  REQUIRE(fs.ReleaseDir(*dh).ok());
  std::sort(names.begin(), names.end());
  for (const std::string& n : names) {
    auto e = fs.Lookup(dir, n);
    REQUIRE_MESSAGE(e.ok(), (path + "/" + n + ": " + e.status().ToString()));
    const std::string p = path + "/" + n;
    (*out)[p] = Describe(fs, e->node, p, groups);
    if (S_ISDIR(e->st.st_mode)) Walk(fs, e->node, p, false, out, groups);
  }
}

inline Manifest Take(FileSystem& fs, NodeId root, bool live) {
  Manifest m;
  std::map<InodeId, std::string> groups;
  m["/"] = Describe(fs, root, "/", &groups);
  Walk(fs, root, "", live, &m, &groups);
  return m;
}
inline Manifest Live(FileSystem& fs) { return Take(fs, kRootIno, true); }
inline Manifest Snap(FileSystem& fs, const std::string& name) {
  auto e = fs.Lookup(kSnapDirNode, name);
  REQUIRE_MESSAGE(e.ok(), (name + ": " + e.status().ToString()));
  return Take(fs, e->node, false);
}

// The first difference between two manifests, for a readable failure.
inline std::string Diff(const Manifest& a, const Manifest& b) {
  for (const auto& [p, d] : a) {
    auto it = b.find(p);
    if (it == b.end()) return p + " only in the first: " + d;
    if (it->second != d) return p + ":\n  " + d + "\n  " + it->second;
  }
  for (const auto& [p, d] : b) {
    if (!a.count(p)) return p + " only in the second: " + d;
  }
  return "";
}
#define CHECK_SAME(a, b)                   \
  do {                                     \
    std::string diff_ = Diff((a), (b));    \
    CHECK_MESSAGE(diff_.empty(), diff_);   \
  } while (0)

// Random live changes over a small name space, so that names collide and
// every kind of change meets every other. Errors (ENOENT, EEXIST, ...) are
// part of the game and ignored.
struct Mutator {
  std::unique_ptr<FileSystem>& fsp;
  FileSystem& F() { return *fsp; }
  std::mt19937_64 rng;
  Credentials cred;
  uint32_t seq = 0;
  const std::vector<std::string> dirs = {"", "d1", "d1/d2", "d3"};
  const std::vector<std::string> names = {"a", "b", "c", "d1", "d2", "d3"};

  Mutator(std::unique_ptr<FileSystem>& f, uint64_t seed) : fsp(f), rng(seed) {}
  size_t R(size_t n) { return std::uniform_int_distribution<size_t>(0, n - 1)(rng); }

  std::optional<NodeId> Resolve(const std::string& path) {
    NodeId n = kRootIno;
    size_t p = 0;
    while (p < path.size()) {
      size_t e = path.find('/', p);
      if (e == std::string::npos) e = path.size();
      auto r = F().Lookup(n, path.substr(p, e - p));
      if (!r.ok()) return std::nullopt;
      n = r->node;
      p = e + 1;
    }
    return n;
  }
  std::pair<std::optional<NodeId>, std::string> Pick() {
    return {Resolve(dirs[R(dirs.size())]), names[R(names.size())]};
  }

  void WriteSome(NodeId n) {
    auto fh = F().OpenFile(n, O_RDWR);
    if (!fh.ok()) return;
    const size_t len = 1 + R(R(2) ? 5000 : 200000);
    const uint64_t off = R(2) ? 0 : R(3u << 20);
    const std::string d = Pattern(len, ++seq);
    (void)F().Write(*fh, off, d.data(), d.size());
    (void)F().Release(*fh);
  }

  void Step() {
    auto [dir, name] = Pick();
    if (!dir) return;
    auto node = F().Lookup(*dir, name);
    switch (R(16)) {
      case 0:
      case 1:
      case 2: {  // write (creating the file if needed)
        if (node.ok()) {
          WriteSome(node->node);
        } else {
          auto c = F().Create(*dir, name, 0600 | R(0100), O_RDWR, cred);
          if (c.ok()) {
            (void)F().Release(c->second);
            WriteSome(c->first.node);
          }
        }
        break;
      }
      case 3: {  // truncate
        if (!node.ok()) break;
        struct stat st {};
        st.st_size = R(2) ? 0 : R(4u << 20);
        (void)F().SetAttr(node->node, st, kSetSize, cred);
        break;
      }
      case 4: {  // punch a hole
        if (!node.ok()) break;
        auto fh = F().OpenFile(node->node, O_RDWR);
        if (!fh.ok()) break;
        (void)F().Fallocate(*fh, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, R(1u << 20),
                           1 + R(300000));
        (void)F().Release(*fh);
        break;
      }
      case 5:
        (void)F().Unlink(*dir, name);
        break;
      case 6:
        (void)F().MkDir(*dir, name, 0755, cred);
        break;
      case 7:
        (void)F().RmDir(*dir, name, cred);
        break;
      case 8: {
        auto [d2, n2] = Pick();
        if (!d2) break;
        static const unsigned kFlags[] = {0, 0, RENAME_NOREPLACE, RENAME_EXCHANGE};
        (void)F().Rename(*dir, name, *d2, n2, kFlags[R(4)]);
        break;
      }
      case 9: {
        if (!node.ok()) break;
        auto [d2, n2] = Pick();
        if (d2) (void)F().Link(node->node, *d2, n2);
        break;
      }
      case 10:
        (void)F().Symlink(*dir, name, "target-" + std::to_string(++seq), cred);
        break;
      case 11:
        if (node.ok()) {
          (void)F().SetXattr(node->node, "user.k" + std::to_string(R(3)),
                            "v" + std::to_string(++seq), 0);
        }
        break;
      case 12:
        if (node.ok()) (void)F().RemoveXattr(node->node, "user.k" + std::to_string(R(3)));
        break;
      case 13: {
        if (!node.ok()) break;
        struct stat st {};
        st.st_mode = 0400 | R(07777);
        st.st_uid = R(3) * 1000;
        st.st_gid = R(3) * 1000;
        (void)F().SetAttr(node->node, st, R(2) ? kSetMode : (kSetUid | kSetGid), cred);
        break;
      }
      case 14: {
        if (!node.ok()) break;
        struct stat st {};
        st.st_mtim.tv_sec = 1000000 + R(1000000);
        st.st_mtim.tv_nsec = R(1000000000);
        (void)F().SetAttr(node->node, st, kSetMtime, cred);
        break;
      }
      case 15:
        (void)F().MkNod(*dir, name, (R(2) ? S_IFIFO : S_IFCHR) | 0644, R(2) ? 0 : makedev(1, 3),
                       cred);
        break;
    }
  }
  void Steps(int n) {
    for (int i = 0; i < n; ++i) Step();
  }
};

// Removes everything in the live tree (for the leak check).
inline void RemoveAll(FileSystem& fs, NodeId dir) {
  std::vector<std::string> names;
  auto dh = fs.OpenDir(dir);
  REQUIRE(dh.ok());
  REQUIRE(fs.ReadDir(*dh, 0, [&](const DirEntryOut& e) {
               if (e.name != "." && e.name != ".." && e.name != kSnapDirName) {
                 names.emplace_back(e.name);
               }
               return true;
             }).ok());
  REQUIRE(fs.ReleaseDir(*dh).ok());
  for (const std::string& n : names) {
    auto e = fs.Lookup(dir, n);
    REQUIRE(e.ok());
    if (S_ISDIR(e->st.st_mode)) {
      RemoveAll(fs, e->node);
      REQUIRE(fs.RmDir(dir, n).ok());
    } else {
      REQUIRE(fs.Unlink(dir, n).ok());
    }
  }
}

struct Snapped {
  std::string name;
  Manifest m;
};

inline void CheckSnapshots(FileSystem& fs, const std::vector<Snapped>& snaps) {
  for (const Snapped& s : snaps) {
    INFO("snapshot " << s.name);
    CHECK_SAME(Snap(fs, s.name), s.m);
  }
}

}  // namespace psm_test
