#include "tests/common/parity_trace.h"

#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <sstream>

namespace psm::testutil {
namespace {

const char* TypeName(mode_t m) {
  switch (m & S_IFMT) {
    case S_IFREG:
      return "reg";
    case S_IFDIR:
      return "dir";
    case S_IFLNK:
      return "lnk";
    case S_IFIFO:
      return "fifo";
    case S_IFCHR:
      return "chr";
    case S_IFBLK:
      return "blk";
    case S_IFSOCK:
      return "sock";
    default:
      return "?";
  }
}

const char* DTypeName(unsigned char t) {
  switch (t) {
    case DT_REG:
      return "reg";
    case DT_DIR:
      return "dir";
    case DT_LNK:
      return "lnk";
    case DT_FIFO:
      return "fifo";
    case DT_CHR:
      return "chr";
    case DT_BLK:
      return "blk";
    case DT_SOCK:
      return "sock";
    case DT_UNKNOWN:
      return "unknown";
    default:
      return "?";
  }
}

std::string Hex(std::string_view s) {
  static const char* d = "0123456789abcdef";
  std::string out;
  for (unsigned char c : s) {
    out.push_back(d[c >> 4]);
    out.push_back(d[c & 15]);
  }
  return out;
}

// Reads fd from offset 0 to EOF; returns "size=N fnv=X" or an error.
std::string HashFd(int fd) {
  std::vector<char> buf(1 << 20);
  uint64_t h = Fnv64(nullptr, 0);
  uint64_t total = 0;
  for (;;) {
    ssize_t n = pread(fd, buf.data(), buf.size(), static_cast<off_t>(total));
    if (n < 0) return std::string("read error ") + ErrnoName(errno);
    if (n == 0) break;
    h = Fnv64(buf.data(), n, h);
    total += n;
  }
  char out[80];
  std::snprintf(out, sizeof out, "bytes=%llu fnv=%016llx", static_cast<unsigned long long>(total),
                static_cast<unsigned long long>(h));
  return out;
}

}  // namespace

std::string ErrnoName(int err) {
  const char* n = strerrorname_np(err);
  return n ? n : "errno" + std::to_string(err);
}

uint64_t Fnv64(const void* data, size_t n, uint64_t h) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < n; i++) {
    h ^= p[i];
    h *= 1099511628211ull;
  }
  return h;
}

PathStr Trace::P(std::string_view rel) const {
  if (rel.empty()) return PathStr(root_);
  return PathStr(root_ + "/" + std::string(rel));
}

long Trace::Rec(std::string_view label, long ret, int err) {
  std::string l(label);
  l += " = " + std::to_string(ret);
  if (ret < 0) l += " " + ErrnoName(err);
  lines_.push_back(std::move(l));
  errno = err;
  return ret;
}

int Trace::RecFd(std::string_view label, int ret, int err) {
  std::string l(label);
  l += ret >= 0 ? " = fd" : " = " + std::to_string(ret) + " " + ErrnoName(err);
  lines_.push_back(std::move(l));
  errno = err;
  return ret;
}

void Trace::Stat(std::string_view rel) {
  struct stat st;
  std::string l = "stat " + std::string(rel) + ": ";
  if (lstat(P(rel).c_str(), &st) != 0) {
    lines_.push_back(l + ErrnoName(errno));
    return;
  }
  char buf[256];
  std::snprintf(buf, sizeof buf, "%s mode=%04o nlink=%lu uid=%u gid=%u", TypeName(st.st_mode),
                st.st_mode & 07777, static_cast<unsigned long>(st.st_nlink), st.st_uid, st.st_gid);
  l += buf;
  if (!S_ISDIR(st.st_mode)) l += " size=" + std::to_string(st.st_size);
  if (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode)) {
    l += " rdev=" + std::to_string(major(st.st_rdev)) + ":" + std::to_string(minor(st.st_rdev));
  }
  if (S_ISLNK(st.st_mode)) {
    char target[4096];
    ssize_t n = readlink(P(rel).c_str(), target, sizeof target);
    l += " -> " + (n < 0 ? ErrnoName(errno) : std::string(target, n));
  }
  lines_.push_back(std::move(l));
}

void Trace::Content(std::string_view rel) {
  int fd = open(P(rel).c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK);
  if (fd < 0) {
    lines_.push_back("content " + std::string(rel) + ": open " + ErrnoName(errno));
    return;
  }
  lines_.push_back("content " + std::string(rel) + ": " + HashFd(fd));
  close(fd);
}

void Trace::FdContent(std::string_view label, int fd) {
  lines_.push_back("content via " + std::string(label) + ": " + HashFd(fd));
}

void Trace::Xattrs(std::string_view rel) {
  std::string p = P(rel);
  std::string l = "xattrs " + std::string(rel) + ":";
  ssize_t n = llistxattr(p.c_str(), nullptr, 0);
  if (n < 0) {
    lines_.push_back(l + " list " + ErrnoName(errno));
    return;
  }
  std::string names(n, '\0');
  n = llistxattr(p.c_str(), names.data(), names.size());
  if (n < 0) {
    lines_.push_back(l + " list " + ErrnoName(errno));
    return;
  }
  names.resize(n);
  std::vector<std::string> v;
  for (size_t i = 0; i < names.size();) {
    size_t e = names.find('\0', i);
    if (e == std::string::npos) e = names.size();
    v.emplace_back(names.substr(i, e - i));
    i = e + 1;
  }
  std::sort(v.begin(), v.end());
  for (const auto& name : v) {
    char val[65536];
    ssize_t vn = lgetxattr(p.c_str(), name.c_str(), val, sizeof val);
    std::string shown;
    if (vn < 0) {
      shown = ErrnoName(errno);
    } else if (vn <= 32) {
      shown = Hex(std::string_view(val, vn));
    } else {  // long values: length and hash keep the log readable
      char h[64];
      std::snprintf(h, sizeof h, "(%zd bytes, fnv %016llx)", vn,
                    static_cast<unsigned long long>(Fnv64(val, vn)));
      shown = h;
    }
    l += " " + name + "=" + shown;
  }
  lines_.push_back(std::move(l));
}

void Trace::Listing(std::string_view rel) {
  std::string l = "listing " + std::string(rel) + ":";
  DIR* d = opendir(P(rel).c_str());
  if (d == nullptr) {
    lines_.push_back(l + " " + ErrnoName(errno));
    return;
  }
  std::vector<std::string> v;
  while (struct dirent* e = readdir(d)) {
    std::string n = e->d_name;
    if (n == "." || n == "..") continue;
    v.push_back(n + "(" + DTypeName(e->d_type) + ")");
  }
  closedir(d);
  std::sort(v.begin(), v.end());
  for (const auto& x : v) l += " " + x;
  lines_.push_back(std::move(l));
}

void Trace::Tree(std::string_view rel) {
  Listing(rel);
  DIR* d = opendir(P(rel).c_str());
  if (d == nullptr) return;
  std::vector<std::string> names;
  while (struct dirent* e = readdir(d)) {
    std::string n = e->d_name;
    if (n != "." && n != "..") names.push_back(n);
  }
  closedir(d);
  std::sort(names.begin(), names.end());
  for (const auto& n : names) {
    std::string child = rel.empty() ? n : std::string(rel) + "/" + n;
    Stat(child);
    Xattrs(child);
    struct stat st;
    if (lstat(P(child).c_str(), &st) != 0) continue;
    if (S_ISREG(st.st_mode)) Content(child);
    if (S_ISDIR(st.st_mode)) Tree(child);
  }
}

void Trace::SameInode(std::string_view a, std::string_view b) {
  struct stat sa, sb;
  bool ok = lstat(P(a).c_str(), &sa) == 0 && lstat(P(b).c_str(), &sb) == 0 &&
            sa.st_ino == sb.st_ino && sa.st_dev == sb.st_dev;
  Check(std::string(a) + " and " + std::string(b) + " are one inode", ok);
}

void Trace::Sparse(std::string_view rel) {
  struct stat st;
  bool ok = lstat(P(rel).c_str(), &st) == 0 && st.st_blocks * 512 < st.st_size;
  Check(std::string(rel) + " is sparse (st_blocks*512 < st_size)", ok);
}

void Trace::Times(std::string_view rel) {
  struct stat st;
  if (lstat(P(rel).c_str(), &st) != 0) {
    lines_.push_back("times " + std::string(rel) + ": " + ErrnoName(errno));
    return;
  }
  char buf[128];
  std::snprintf(buf, sizeof buf, "atime=%lld.%09ld mtime=%lld.%09ld",
                static_cast<long long>(st.st_atim.tv_sec), st.st_atim.tv_nsec,
                static_cast<long long>(st.st_mtim.tv_sec), st.st_mtim.tv_nsec);
  lines_.push_back("times " + std::string(rel) + ": " + buf);
}

void Trace::Pread(std::string_view label, int fd, off_t off, size_t len) {
  std::string buf(len, '\0');
  ssize_t n = pread(fd, buf.data(), len, off);
  std::string l = "pread " + std::string(label) + " @" + std::to_string(off) + "+" +
                  std::to_string(len) + " = ";
  if (n < 0) {
    l += "-1 " + ErrnoName(errno);
  } else {
    char h[64];
    std::snprintf(h, sizeof h, "%zd fnv=%016llx", n,
                  static_cast<unsigned long long>(Fnv64(buf.data(), n)));
    l += h;
  }
  lines_.push_back(std::move(l));
}

void Trace::AsUser(uid_t uid, gid_t gid, const std::function<void(Trace&)>& fn) {
  int pfd[2];
  if (pipe(pfd) != 0) {
    Note("AsUser: pipe failed");
    return;
  }
  fflush(nullptr);
  pid_t pid = fork();
  if (pid == 0) {
    close(pfd[0]);
    Trace child(root_, on_mount_);
    if (setgroups(0, nullptr) != 0 || setresgid(gid, gid, gid) != 0 ||
        setresuid(uid, uid, uid) != 0) {
      child.Note("AsUser: dropping privileges failed: " + ErrnoName(errno));
    } else {
      fn(child);
    }
    std::string out;
    for (const auto& l : child.lines()) out += l + "\n";
    size_t off = 0;
    while (off < out.size()) {
      ssize_t w = write(pfd[1], out.data() + off, out.size() - off);
      if (w <= 0) break;
      off += w;
    }
    _exit(0);
  }
  close(pfd[1]);
  std::string all;
  char buf[4096];
  ssize_t n;
  while ((n = read(pfd[0], buf, sizeof buf)) > 0) all.append(buf, n);
  close(pfd[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  std::istringstream in(all);
  std::string l;
  std::string prefix = "[uid " + std::to_string(uid) + "] ";
  while (std::getline(in, l)) lines_.push_back(prefix + l);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    lines_.push_back(prefix + "child ended with status " + std::to_string(status));
  }
}

std::string DiffLogs(const std::vector<std::string>& native, const std::vector<std::string>& mnt) {
  size_t n = std::min(native.size(), mnt.size());
  size_t i = 0;
  while (i < n && native[i] == mnt[i]) i++;
  if (i == n && native.size() == mnt.size()) return "";
  std::ostringstream os;
  os << "native has " << native.size() << " records, psmfs " << mnt.size()
     << "; N = native, P = psmfs\n";
  if (native.size() == mnt.size()) {
    // Same shape: list every differing record (up to 30) with one line of
    // context before each.
    int shown = 0;
    for (size_t k = 0; k < n && shown < 30; k++) {
      if (native[k] == mnt[k]) continue;
      if (k > 0 && native[k - 1] == mnt[k - 1]) os << "    " << native[k - 1] << "\n";
      os << "  N " << native[k] << "\n  P " << mnt[k] << "\n";
      shown++;
    }
    return os.str();
  }
  os << "first difference at record " << i << "\n";
  size_t from = i >= 4 ? i - 4 : 0;
  for (size_t k = from; k < i; k++) os << "    " << native[k] << "\n";
  for (size_t k = i; k < std::min(i + 3, native.size()); k++) os << "  N " << native[k] << "\n";
  for (size_t k = i; k < std::min(i + 3, mnt.size()); k++) os << "  P " << mnt[k] << "\n";
  return os.str();
}

}  // namespace psm::testutil
