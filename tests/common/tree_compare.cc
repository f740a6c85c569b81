#include "tests/common/tree_compare.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
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

}  // namespace psm::testutil
