// Model-based snapshot test through a real mount.
//
// A seeded random workload runs on the psmfs live tree and on a native
// mirror directory with the same system calls. Snapshots are created (by
// `psmctl snapshot create` or `mkdir .snapshots/NAME`) and deleted (by
// `psmctl snapshot delete` or `rmdir`) in between. At each create, the
// mirror's manifest (paths, types, modes, sizes, content hashes, link
// targets, xattrs, hard-link groups) is recorded. At the end, and again
// after a remount, every surviving snapshot matches its manifest exactly, the
// live tree matches the mirror, inode numbers are distinct across trees,
// writes into snapshots fail with EROFS, and fsck is clean.
//
// PSMFS_SEED repeats a run; PSMFS_STRESS scales it.
#include <doctest/doctest.h>
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "tests/common/psm_test_util.h"

using namespace psm::testutil;

namespace {

uint64_t Fnv(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

std::string ReadAll(const std::string& p) {
  int fd = open(p.c_str(), O_RDONLY);
  if (fd < 0) return "<open " + std::string(strerror(errno)) + ">";
  std::string out;
  char buf[65536];
  ssize_t n;
  while ((n = read(fd, buf, sizeof buf)) > 0) out.append(buf, n);
  close(fd);
  return out;
}

// path -> description, for every entry below root. Hard links are recorded
// as "link group = first path of that inode".
using Manifest = std::map<std::string, std::string>;

void Walk(const std::string& root, const std::string& rel, Manifest* m,
          std::map<ino_t, std::string>* first, std::set<ino_t>* inos) {
  std::string dir = root + rel;
  DIR* d = opendir(dir.c_str());
  std::string what = "opendir " + dir;
  REQUIRE_MESSAGE(d, what);
  std::vector<std::string> names;
  while (auto* e = readdir(d)) {
    std::string n = e->d_name;
    if (n == "." || n == ".." || (rel.empty() && n == ".snapshots")) continue;
    names.push_back(n);
  }
  closedir(d);
  std::sort(names.begin(), names.end());
  for (const auto& n : names) {
    std::string r = rel + "/" + n, p = root + r;
    struct stat st;
    REQUIRE(lstat(p.c_str(), &st) == 0);
    if (inos) inos->insert(st.st_ino);
    std::string desc = "mode=" + std::to_string(st.st_mode & 07777);
    if (S_ISDIR(st.st_mode)) {
      desc = "dir " + desc;
    } else if (S_ISLNK(st.st_mode)) {
      char t[4096];
      ssize_t k = readlink(p.c_str(), t, sizeof t);
      desc = "symlink -> " + std::string(t, k > 0 ? k : 0);
    } else if (S_ISREG(st.st_mode)) {
      desc = "file " + desc + " size=" + std::to_string(st.st_size) +
             " hash=" + std::to_string(Fnv(ReadAll(p)));
      if (st.st_nlink > 1) {
        auto [it, fresh] = first->emplace(st.st_ino, r);
        desc += " nlink=" + std::to_string(st.st_nlink) + " group=" + it->second;
      }
    }
    char names_buf[4096];
    ssize_t ln = llistxattr(p.c_str(), names_buf, sizeof names_buf);
    std::vector<std::string> xs;
    for (ssize_t i = 0; i < ln;) {
      std::string x(names_buf + i);
      i += x.size() + 1;
      if (x.rfind("user.", 0) != 0) continue;
      char v[1024];
      ssize_t vn = lgetxattr(p.c_str(), x.c_str(), v, sizeof v);
      xs.push_back(x + "=" + std::string(v, vn > 0 ? vn : 0));
    }
    std::sort(xs.begin(), xs.end());
    for (const auto& x : xs) desc += " " + x;
    (*m)[r] = desc;
    if (S_ISDIR(st.st_mode)) Walk(root, r, m, first, inos);
  }
}

Manifest Take(const std::string& root, std::set<ino_t>* inos = nullptr) {
  Manifest m;
  std::map<ino_t, std::string> first;
  Walk(root, "", &m, &first, inos);
  return m;
}

std::string Diff(const Manifest& want, const Manifest& got) {
  std::string out;
  for (const auto& [k, v] : want) {
    auto it = got.find(k);
    if (it == got.end()) {
      out += "missing " + k + "\n";
    } else if (it->second != v) {
      out += "differs " + k + ": want [" + v + "] got [" + it->second + "]\n";
    }
  }
  for (const auto& [k, v] : got) {
    if (!want.count(k)) out += "extra " + k + "\n";
  }
  return out;
}

// The same system call on both trees; both must agree on success.
struct Twin {
  std::string a, b;  // mount, mirror
  std::mt19937_64 rng;
  std::vector<std::string> files, dirs{""};

  template <typename F>
  void Both(const char* what, const std::string& rel, F f) {
    errno = 0;
    int ra = f(a + rel);
    int ea = ra < 0 ? errno : 0;
    errno = 0;
    int rb = f(b + rel);
    int eb = rb < 0 ? errno : 0;
    INFO(what << " " << rel);
    CHECK(ea == eb);
  }

  std::string Pick(const std::vector<std::string>& v) { return v[rng() % v.size()]; }

  void WriteAt(const std::string& rel, off_t off, const std::string& data, bool trunc) {
    Both("write", rel, [&](const std::string& p) {
      int fd = open(p.c_str(), O_WRONLY | O_CREAT | (trunc ? O_TRUNC : 0), 0644);
      if (fd < 0) return -1;
      ssize_t n = pwrite(fd, data.data(), data.size(), off);
      close(fd);
      return n == static_cast<ssize_t>(data.size()) ? 0 : -1;
    });
  }

  void Step(int i) {
    int op = rng() % 12;
    std::string dir = Pick(dirs);
    std::string name = dir + "/n" + std::to_string(i);
    switch (op) {
      case 0:
      case 1:
      case 2: {  // new or rewritten file
        std::string data(rng() % 300000, '\0');
        for (auto& c : data) c = static_cast<char>(rng());
        WriteAt(name, 0, data, true);
        files.push_back(name);
        break;
      }
      case 3:
        if (!files.empty()) {  // overwrite in the middle, maybe past EOF (hole)
          std::string data(1 + rng() % 20000, static_cast<char>('a' + rng() % 26));
          WriteAt(Pick(files), rng() % 400000, data, false);
        }
        break;
      case 4:
        if (!files.empty()) {
          off_t len = rng() % 200000;
          Both("truncate", Pick(files), [&](const std::string& p) { return truncate(p.c_str(), len); });
        }
        break;
      case 5:
        Both("mkdir", name, [](const std::string& p) { return mkdir(p.c_str(), 0750); });
        dirs.push_back(name);
        break;
      case 6:
        if (!files.empty()) {
          size_t k = rng() % files.size();
          Both("unlink", files[k], [](const std::string& p) { return unlink(p.c_str()); });
          files.erase(files.begin() + k);
        }
        break;
      case 7:
        if (!files.empty()) {
          size_t k = rng() % files.size();
          std::string to = Pick(dirs) + "/r" + std::to_string(i);
          Both("rename", files[k], [&](const std::string& p) {
            return rename(p.c_str(), (p.substr(0, p.size() - files[k].size()) + to).c_str());
          });
          files[k] = to;
        }
        break;
      case 8:
        if (!files.empty()) {
          std::string src = Pick(files);
          Both("link", src, [&](const std::string& p) {
            return link(p.c_str(), (p.substr(0, p.size() - src.size()) + name).c_str());
          });
          files.push_back(name);
        }
        break;
      case 9:
        Both("symlink", name, [&](const std::string& p) { return symlink(("t" + std::to_string(i)).c_str(), p.c_str()); });
        break;
      case 10:
        if (!files.empty()) {
          std::string v = std::to_string(rng() % 1000);
          Both("setxattr", Pick(files), [&](const std::string& p) {
            return setxattr(p.c_str(), "user.tag", v.data(), v.size(), 0);
          });
        }
        break;
      case 11:
        if (!files.empty()) {
          mode_t m = 0600 | (rng() % 0100);
          Both("chmod", Pick(files), [&](const std::string& p) { return chmod(p.c_str(), m); });
        }
        break;
    }
  }
};

}  // namespace

TEST_CASE("snapshots match their manifests through a real mount") {
  uint64_t seed = SeedFromEnv("snapshot_model", 20261122);
  int steps = static_cast<int>(400 * StressFromEnv());
  PsmMount::Options mo;
  if (getenv("PSMFS_DEBUG_MOUNT")) mo.mount_opts.push_back("debug");
  PsmMount m("snapmodel", mo);
  std::string err;
  REQUIRE_MESSAGE(m.Mkfs(&err), err);
  REQUIRE_MESSAGE(m.Mount(&err), err);
  std::string mirror = MakeScratchDir("snapmodel-mirror");
  Twin t{m.mnt(), mirror, std::mt19937_64(seed)};
  std::map<std::string, Manifest> snaps;
  std::mt19937_64 rng(seed ^ 0x5eed);
  int made = 0;
  for (int i = 0; i < steps; ++i) {
    t.Step(i);
    if (rng() % 25 == 0) {
      std::string name = "snap-" + std::to_string(made++);
      if (rng() % 2) {
        auto r = m.Ctl({"snapshot", "create", m.mnt(), name});
        REQUIRE_MESSAGE(r.ok(), Describe({"psmctl snapshot create"}, r));
      } else {
        int fd = open(m.mnt().c_str(), O_RDONLY);
        REQUIRE(fd >= 0);
        CHECK(syncfs(fd) == 0);
        close(fd);
        REQUIRE(mkdir((m.mnt() + "/.snapshots/" + name).c_str(), 0755) == 0);
      }
      snaps[name] = Take(mirror);
      std::string d = Diff(snaps[name], Take(m.mnt() + "/.snapshots/" + name));
      CHECK_MESSAGE(d.empty(), name << " at creation:\n" << d);
    }
    if (snaps.size() > 3 && rng() % 40 == 0) {
      auto it = snaps.begin();
      std::advance(it, rng() % snaps.size());
      if (rng() % 2) {
        auto r = m.Ctl({"snapshot", "delete", m.mnt(), it->first});
        REQUIRE_MESSAGE(r.ok(), Describe({"psmctl snapshot delete"}, r));
      } else {
        REQUIRE(rmdir((m.mnt() + "/.snapshots/" + it->first).c_str()) == 0);
      }
      struct stat st;
      CHECK(stat((m.mnt() + "/.snapshots/" + it->first).c_str(), &st) != 0);
      snaps.erase(it);
    }
  }
  REQUIRE(!snaps.empty());
  auto verify = [&](const char* when) {
    std::set<ino_t> live_inos;
    std::string d = Diff(Take(mirror), Take(m.mnt(), &live_inos));
    CHECK_MESSAGE(d.empty(), "live tree " << when << ":\n" << d);
    std::set<ino_t> all = live_inos;
    for (const auto& [name, man] : snaps) {
      std::set<ino_t> inos;
      d = Diff(man, Take(m.mnt() + "/.snapshots/" + name, &inos));
      CHECK_MESSAGE(d.empty(), name << " " << when << ":\n" << d);
      for (ino_t i : inos) CHECK_MESSAGE(all.insert(i).second, "inode " << i << " seen twice");
    }
    // Writes anywhere under .snapshots fail with EROFS.
    std::string s = m.mnt() + "/.snapshots/" + snaps.begin()->first;
    errno = 0;
    CHECK(open((s + "/new").c_str(), O_CREAT | O_WRONLY, 0644) < 0);
    CHECK(errno == EROFS);
    errno = 0;
    CHECK(mkdir((s + "/newdir").c_str(), 0755) < 0);
    CHECK(errno == EROFS);
  };
  verify("at the end");
  REQUIRE_MESSAGE(m.Unmount(&err), err);
  std::string out;
  CHECK_MESSAGE(m.Fsck(&out), out);
  REQUIRE_MESSAGE(m.Mount(&err), err);
  verify("after a remount");
  REQUIRE_MESSAGE(m.Unmount(&err), err);
  RemoveTree(mirror);
}
