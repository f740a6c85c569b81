#include "tests/common/tree_compare.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <map>
#include <cstring>
#include <set>
#include <vector>

namespace psm::testutil {
namespace {

std::string Err(const char* what, int e) { return std::string(what) + ": " + std::strerror(e); }

std::set<std::string> Names(const std::string& dir, std::string* err) {
  std::set<std::string> out;
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) {
    *err = Err(("opendir " + dir).c_str(), errno);
    return out;
  }
  while (struct dirent* e = readdir(d)) {
    if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0) {
      if (!out.insert(e->d_name).second) *err = dir + ": " + e->d_name + " listed twice";
    }
  }
  closedir(d);
  return out;
}

}  // namespace

std::string CompareFds(int a, int b) {
  struct stat sa, sb;
  if (fstat(a, &sa) != 0) return Err("fstat reference", errno);
  if (fstat(b, &sb) != 0) return Err("fstat psmfs", errno);
  if (sa.st_size != sb.st_size) {
    return "size " + std::to_string(sa.st_size) + " != psmfs " + std::to_string(sb.st_size);
  }
  if (sa.st_nlink != sb.st_nlink) {
    return "nlink " + std::to_string(sa.st_nlink) + " != psmfs " + std::to_string(sb.st_nlink);
  }
  static std::vector<char> ba(1 << 20), bb(1 << 20);  // reused: no allocation per call
  for (off_t off = 0; off < sa.st_size;) {
    ssize_t na = pread(a, ba.data(), ba.size(), off);
    ssize_t nb = pread(b, bb.data(), bb.size(), off);
    if (na < 0) return Err("pread reference", errno);
    if (nb < 0) return Err("pread psmfs", errno);
    if (na != nb) {
      return "pread at " + std::to_string(off) + " returned " + std::to_string(na) + " != psmfs " +
             std::to_string(nb);
    }
    if (na == 0) break;
    if (std::memcmp(ba.data(), bb.data(), na) != 0) {
      ssize_t i = 0;
      while (ba[i] == bb[i]) i++;
      ssize_t j = na;
      while (ba[j - 1] == bb[j - 1]) j--;
      char msg[200];
      std::snprintf(msg, sizeof msg,
                    "bytes differ in [%lld, %lld): first reference 0x%02x psmfs 0x%02x",
                    static_cast<long long>(off + i), static_cast<long long>(off + j),
                    static_cast<unsigned char>(ba[i]), static_cast<unsigned char>(bb[i]));
      return msg;
    }
    off += na;
  }
  return "";
}

std::string ComparePaths(const std::string& a, const std::string& b) {
  struct stat sa, sb;
  int ra = lstat(a.c_str(), &sa), ea = errno;
  int rb = lstat(b.c_str(), &sb), eb = errno;
  if (ra != 0 || rb != 0) {
    if (ra != 0 && rb != 0 && ea == eb) return "";
    return "lstat " + b + ": reference " + (ra ? std::strerror(ea) : "ok") + ", psmfs " +
           (rb ? std::strerror(eb) : "ok");
  }
  if ((sa.st_mode & S_IFMT) != (sb.st_mode & S_IFMT)) return b + ": file type differs";
  if ((sa.st_mode & 07777) != (sb.st_mode & 07777)) return b + ": permission bits differ";
  if (S_ISLNK(sa.st_mode)) {
    char ta[4096], tb[4096];
    ssize_t na = readlink(a.c_str(), ta, sizeof ta), nb = readlink(b.c_str(), tb, sizeof tb);
    if (na != nb || na < 0 || std::memcmp(ta, tb, na) != 0) return b + ": link target differs";
  }
  if (S_ISDIR(sa.st_mode)) return "";
  if (!S_ISREG(sa.st_mode)) return "";
  int fa = open(a.c_str(), O_RDONLY);
  int fb = open(b.c_str(), O_RDONLY);
  std::string r;
  if (fa < 0) r = Err(("open " + a).c_str(), errno);
  if (fb < 0) r = Err(("open " + b).c_str(), errno);
  if (r.empty()) r = CompareFds(fa, fb);
  if (fa >= 0) close(fa);
  if (fb >= 0) close(fb);
  return r.empty() ? "" : b + ": " + r;
}

std::string CompareTrees(const std::string& a, const std::string& b) {
  std::string err;
  std::set<std::string> na = Names(a, &err);
  if (!err.empty()) return err;
  std::set<std::string> nb = Names(b, &err);
  if (!err.empty()) return err;
  if (na != nb) {
    std::string msg = b + ": names differ;";
    for (const auto& n : na) {
      if (!nb.count(n)) msg += " missing " + n;
    }
    for (const auto& n : nb) {
      if (!na.count(n)) msg += " extra " + n;
    }
    return msg;
  }
  for (const auto& n : na) {
    std::string pa = a + "/" + n, pb = b + "/" + n;
    std::string r = ComparePaths(pa, pb);
    if (!r.empty()) return r;
    struct stat st;
    if (lstat(pa.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) {
      r = CompareTrees(pa, pb);
      if (!r.empty()) return r;
    }
  }
  return "";
}

namespace {

uint64_t Fnv(uint64_t h, const char* p, size_t n) {
  for (size_t i = 0; i < n; ++i) h = (h ^ static_cast<unsigned char>(p[i])) * 1099511628211ull;
  return h;
}

std::string Describe(const std::string& p, const struct stat& st, bool with_mtime) {
  std::string d = "mode=" + std::to_string(st.st_mode) + " uid=" + std::to_string(st.st_uid) +
                  " gid=" + std::to_string(st.st_gid) + " nlink=" + std::to_string(st.st_nlink);
  if (!S_ISDIR(st.st_mode)) d += " size=" + std::to_string(st.st_size);
  if (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode)) d += " rdev=" + std::to_string(st.st_rdev);
  if (with_mtime) {
    d += " mtime=" + std::to_string(st.st_mtim.tv_sec) + "." + std::to_string(st.st_mtim.tv_nsec);
  }
  if (S_ISLNK(st.st_mode)) {
    char t[4096];
    ssize_t k = readlink(p.c_str(), t, sizeof t);
    d += " target=" + (k >= 0 ? std::string(t, k) : Err("readlink", errno));
  }
  if (S_ISREG(st.st_mode)) {
    int fd = open(p.c_str(), O_RDONLY);
    if (fd < 0) return d + " " + Err("open", errno);
    uint64_t h = 1469598103934665603ull;
    std::vector<char> buf(1 << 20);
    ssize_t n;
    off_t total = 0;
    while ((n = read(fd, buf.data(), buf.size())) > 0) {
      h = Fnv(h, buf.data(), n);
      total += n;
    }
    d += " read=" + std::to_string(total) + " hash=" + std::to_string(h) + " data:";
    for (off_t off = 0; off < st.st_size;) {
      off_t ds = lseek(fd, off, SEEK_DATA);
      if (ds < 0) break;
      off_t hs = lseek(fd, ds, SEEK_HOLE);
      if (hs <= ds) {
        d += " bad SEEK_HOLE";
        break;
      }
      d += " [" + std::to_string(ds) + "," + std::to_string(hs) + ")";
      off = hs;
    }
    close(fd);
  }
  char names[8192];
  ssize_t ln = llistxattr(p.c_str(), names, sizeof names);
  std::vector<std::string> xs;
  for (ssize_t i = 0; i < ln;) {
    std::string x(names + i);
    i += x.size() + 1;
    char v[4096];
    ssize_t vn = lgetxattr(p.c_str(), x.c_str(), v, sizeof v);
    xs.push_back(x + "=" + (vn >= 0 ? std::string(v, vn) : Err("getxattr", errno)));
  }
  std::sort(xs.begin(), xs.end());
  for (const std::string& x : xs) d += " x:" + x;
  return d;
}

void ManifestWalk(const std::string& root, const std::string& rel, bool with_mtime,
                  TreeManifest* m, std::map<std::pair<dev_t, ino_t>, std::string>* first) {
  std::string err;
  std::set<std::string> names = Names(root + rel, &err);
  if (!err.empty()) {
    (*m)[rel + "/"] = err;
    return;
  }
  for (const std::string& n : names) {
    if (rel.empty() && n == ".snapshots") continue;
    const std::string r = rel + "/" + n, p = root + r;
    struct stat st;
    if (lstat(p.c_str(), &st) != 0) {
      (*m)[r] = Err("lstat", errno);
      continue;
    }
    std::string d = Describe(p, st, with_mtime);
    if (!S_ISDIR(st.st_mode) && st.st_nlink > 1) {
      d += " group=" + first->emplace(std::make_pair(st.st_dev, st.st_ino), r).first->second;
    }
    (*m)[r] = d;
    if (S_ISDIR(st.st_mode)) ManifestWalk(root, r, with_mtime, m, first);
  }
}

}  // namespace

TreeManifest ManifestOf(const std::string& root, bool with_mtime) {
  TreeManifest m;
  struct stat st;
  if (lstat(root.c_str(), &st) != 0) {
    m["/"] = Err(("lstat " + root).c_str(), errno);
    return m;
  }
  m["/"] = Describe(root, st, with_mtime);
  std::map<std::pair<dev_t, ino_t>, std::string> first;
  ManifestWalk(root, "", with_mtime, &m, &first);
  return m;
}

std::string DiffManifests(const TreeManifest& want, const TreeManifest& got) {
  std::string out;
  int n = 0;
  auto add = [&](const std::string& s) {
    if (n++ < 20) out += s + "\n";
  };
  for (const auto& [k, v] : want) {
    auto it = got.find(k);
    if (it == got.end()) {
      add("missing " + k);
    } else if (it->second != v) {
      add("differs " + k + ": want [" + v + "] got [" + it->second + "]");
    }
  }
  for (const auto& [k, v] : got) {
    if (!want.count(k)) add("extra " + k + ": " + v);
  }
  return out;
}

}  // namespace psm::testutil
