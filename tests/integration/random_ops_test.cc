// Randomized operations against a psmfs mount, mirrored in a native
// reference directory: pwrite at random offsets (also far past EOF), writes
// through fresh opens with O_APPEND/O_TRUNC, pread, truncate, punch hole,
// zero range, fallocate, copy_file_range, writes through shared mappings,
// rename, link, unlink, fsync/fdatasync, opening and closing long-lived
// descriptors. Every step performs one operation on both sides,
// requires the same result and errno, and compares the touched file (size,
// nlink, every byte). At the end the whole trees are compared, the volume is
// unmounted and remounted and compared again, and `psmctl fsck` must pass.
//
// Environment: PSMFS_SEED (printed at start) repeats a run; PSMFS_STRESS
// scales the number of steps (default 1 = 2000 steps, well under a minute).
// On a failure the last operations are printed.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cstring>
#include <deque>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "tests/common/mount_fixture.h"
#include "tests/common/psm_test_util.h"
#include "tests/common/tree_compare.h"

using namespace psm::testutil;
using psm::test::MountedVolume;

namespace {

constexpr int kDirs = 4, kNamesPerDir = 12, kMaxHandles = 8;
constexpr off_t kMiB = 1 << 20;

struct Handle {
  std::array<int, 2> fd{-1, -1};  // [0] reference, [1] psmfs
  std::string path;               // as opened (it may have been renamed or unlinked since)
};

class Mirror {
 public:
  Mirror(std::string ref, std::string mnt, uint64_t seed)
      : root_{std::move(ref), std::move(mnt)}, rng_(seed) {}

  void Setup() {
    for (int d = 0; d < kDirs; d++) {
      for (auto& r : root_) REQUIRE(mkdir((r + "/d" + std::to_string(d)).c_str(), 0755) == 0);
    }
  }

  void Step(int i) {
    step_ = i;
    uint32_t pick = Rand(100);
    if (pick < 22) {
      WriteHandle();
    } else if (pick < 30) {
      WritePath();
    } else if (pick < 36) {
      ReadCompare();
    } else if (pick < 44) {
      Truncate();
    } else if (pick < 50) {
      PunchHole();
    } else if (pick < 52) {
      Allocate();
    } else if (pick < 53) {
      ZeroRange();
    } else if (pick < 59) {
      MmapWrite();
    } else if (pick < 66) {
      Rename();
    } else if (pick < 71) {
      Link();
    } else if (pick < 77) {
      Unlink();
    } else if (pick < 81) {
      Sync();
    } else if (pick < 83) {
      CopyRange();
    } else if (pick < 85) {
      ShiftRange();
    } else {
      Reopen();
    }
  }

  void CloseAll() {
    for (auto& h : handles_) {
      for (int fd : h.fd) close(fd);
    }
    handles_.clear();
  }

  std::string History() const {
    std::string s = "last operations (newest last):\n";
    for (const auto& h : history_) s += "  " + h + "\n";
    return s;
  }

  const std::string& ref() const { return root_[0]; }
  const std::string& mnt() const { return root_[1]; }

 private:
  uint32_t Rand(uint32_t n) { return static_cast<uint32_t>(rng_() % n); }
  std::string RandName() {
    return "d" + std::to_string(Rand(kDirs)) + "/f" + std::to_string(Rand(kNamesPerDir));
  }
  std::string Bytes(size_t n) {
    std::string b(n, '\0');
    // Runs of one byte mixed with noise: zero runs make holes-vs-data bugs
    // visible, noise makes misplaced blocks visible.
    for (size_t i = 0; i < n;) {
      size_t run = 1 + Rand(4096);
      char c = Rand(4) == 0 ? 0 : static_cast<char>(rng_());
      bool noise = Rand(2) == 0;
      for (size_t k = 0; k < run && i < n; k++, i++) b[i] = noise ? static_cast<char>(rng_()) : c;
    }
    return b;
  }
  off_t Size(int side, int fd) {
    struct stat st;
    return fstat(fd, &st) == 0 ? st.st_size : 0;
  }
  off_t RandOffset(off_t size) {
    uint32_t p = Rand(100);
    if (p < 75) return Rand(static_cast<uint32_t>(size + 65536));
    if (p < 97) return Rand(2 * kMiB);
    return Rand(8 * kMiB);  // far past EOF: a sparse gap
  }
  size_t RandLen() {
    uint32_t p = Rand(100);
    if (p < 50) return 1 + Rand(4096);
    if (p < 95) return 1 + Rand(128 * 1024);
    return 1 + Rand(static_cast<uint32_t>(kMiB));
  }
  Handle* RandHandle() {
    if (handles_.empty()) Reopen();
    return handles_.empty() ? nullptr : &handles_[Rand(handles_.size())];
  }

  // Runs f on both sides; results and errnos must match.
  long Both(const std::string& what, const std::function<long(int side)>& f) {
    history_.push_back("#" + std::to_string(step_) + " " + what);
    if (history_.size() > 40) history_.pop_front();
    errno = 0;
    long r0 = f(0);
    int e0 = errno;
    errno = 0;
    long r1 = f(1);
    int e1 = errno;
    if (r0 != r1 || (r0 < 0 && e0 != e1)) {
      FAIL_CHECK(History() << "result differs: reference " << r0 << " (" << std::strerror(e0)
                           << "), psmfs " << r1 << " (" << std::strerror(e1) << ")");
      failed_ = true;
    }
    return r0;
  }
  void CheckHandle(const Handle& h, const std::string& what) {
    std::string d = CompareFds(h.fd[0], h.fd[1]);
    if (!d.empty()) {
      FAIL_CHECK(History() << what << " (opened as " << h.path << "): " << d);
      failed_ = true;
    }
  }
  void CheckPath(const std::string& rel) {
    std::string d = ComparePaths(root_[0] + "/" + rel, root_[1] + "/" + rel);
    if (!d.empty()) {
      FAIL_CHECK(History() << d);
      failed_ = true;
    }
  }

  void WriteHandle() {
    Handle* h = RandHandle();
    if (h == nullptr) return;
    off_t off = RandOffset(Size(0, h->fd[0]));
    std::string b = Bytes(RandLen());
    Both("pwrite " + h->path + " @" + std::to_string(off) + " +" + std::to_string(b.size()),
         [&](int s) { return pwrite(h->fd[s], b.data(), b.size(), off); });
    CheckHandle(*h, "after pwrite");
  }
  void WritePath() {
    std::string p = RandName();
    int flags = O_WRONLY | O_CREAT;
    uint32_t m = Rand(4);
    if (m == 1) flags |= O_APPEND;
    if (m == 2) flags |= O_TRUNC;
    std::string b = Bytes(RandLen());
    off_t seek = Rand(2) ? Rand(2 * kMiB) : 0;
    Both("open/lseek/write/close " + p + " flags " + std::to_string(flags) + " seek " +
             std::to_string(seek) + " +" + std::to_string(b.size()),
         [&](int s) -> long {
           int fd = open((root_[s] + "/" + p).c_str(), flags, 0644);
           if (fd < 0) return -1;
           lseek(fd, seek, SEEK_SET);
           long r = write(fd, b.data(), b.size());
           int e = errno;
           close(fd);
           errno = e;
           return r;
         });
    CheckPath(p);
  }
  void ReadCompare() {
    Handle* h = RandHandle();
    if (h == nullptr) return;
    off_t off = RandOffset(Size(0, h->fd[0]));
    size_t len = RandLen();
    std::string b[2] = {std::string(len, 'A'), std::string(len, 'B')};
    long n = Both("pread " + h->path + " @" + std::to_string(off) + " +" + std::to_string(len),
                  [&](int s) { return pread(h->fd[s], b[s].data(), len, off); });
    if (n > 0 && std::memcmp(b[0].data(), b[1].data(), n) != 0) {
      FAIL_CHECK(History() << "pread returned different bytes");
      failed_ = true;
    }
  }
  void Truncate() {
    if (Rand(2)) {
      Handle* h = RandHandle();
      if (h == nullptr) return;
      off_t len = Rand(static_cast<uint32_t>(Size(0, h->fd[0]) * 3 / 2 + 8192));
      Both("ftruncate " + h->path + " " + std::to_string(len),
           [&](int s) { return ftruncate(h->fd[s], len); });
      CheckHandle(*h, "after ftruncate");
    } else {
      std::string p = RandName();
      off_t len = Rand(2 * kMiB);
      Both("truncate " + p + " " + std::to_string(len),
           [&](int s) { return truncate((root_[s] + "/" + p).c_str(), len); });
      CheckPath(p);
    }
  }
  void PunchHole() {
    Handle* h = RandHandle();
    if (h == nullptr) return;
    off_t size = Size(0, h->fd[0]);
    off_t off = Rand(static_cast<uint32_t>(size + 4096));
    off_t len = 1 + Rand(Rand(2) ? 8192 : static_cast<uint32_t>(kMiB));
    Both("punch " + h->path + " @" + std::to_string(off) + " +" + std::to_string(len), [&](int s) {
      return fallocate(h->fd[s], FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, len);
    });
    CheckHandle(*h, "after punch hole");
  }
  void Allocate() {
    Handle* h = RandHandle();
    if (h == nullptr) return;
    off_t off = RandOffset(Size(0, h->fd[0]));
    off_t len = 1 + Rand(256 * 1024);
    Both("fallocate " + h->path + " @" + std::to_string(off) + " +" + std::to_string(len),
         [&](int s) { return fallocate(h->fd[s], 0, off, len); });
    CheckHandle(*h, "after fallocate");
  }
  void ZeroRange() {
    Handle* h = RandHandle();
    if (h == nullptr) return;
    off_t off = RandOffset(Size(0, h->fd[0]));
    off_t len = 1 + Rand(256 * 1024);
    int mode = FALLOC_FL_ZERO_RANGE | (Rand(2) ? FALLOC_FL_KEEP_SIZE : 0);
    Both("zero range " + h->path + " @" + std::to_string(off) + " +" + std::to_string(len) +
             " mode " + std::to_string(mode),
         [&](int s) { return fallocate(h->fd[s], mode, off, len); });
    CheckHandle(*h, "after zero range");
  }
  // Collapse or insert range, block-aligned (sometimes not, or at EOF).
  // Linux's FUSE module answers EOPNOTSUPP for both before psmfs sees them
  // (docs/fuse-adapter.md): when psmfs's side says so for a call the VFS
  // lets through, the reference is left alone and the file must be as it
  // was; on a kernel that forwards them the results must match.
  void ShiftRange() {
    Handle* h = RandHandle();
    if (h == nullptr) return;
    const off_t size = Size(0, h->fd[0]);
    const int mode = Rand(2) ? FALLOC_FL_COLLAPSE_RANGE : FALLOC_FL_INSERT_RANGE;
    off_t off = 4096 * static_cast<off_t>(Rand(static_cast<uint32_t>(size / 4096 + 2)));
    off_t len = 4096 * static_cast<off_t>(1 + Rand(Rand(2) ? 16 : 512));
    if (Rand(8) == 0) off += 1 + Rand(4095);
    const std::string what = std::string(mode == FALLOC_FL_COLLAPSE_RANGE ? "collapse " : "insert ") +
                             h->path + " @" + std::to_string(off) + " +" + std::to_string(len);
    errno = 0;
    const long r1 = fallocate(h->fd[1], mode, off, len);
    const int e1 = errno;
    if (r1 < 0 && e1 == EOPNOTSUPP) {
      history_.push_back("#" + std::to_string(step_) + " " + what + ": EOPNOTSUPP on psmfs");
      static bool said = false;
      if (!said) MESSAGE("collapse/insert range: EOPNOTSUPP from the kernel's FUSE module");
      said = true;
      CheckHandle(*h, "after a refused " + what);
      return;
    }
    errno = 0;
    const long r0 = fallocate(h->fd[0], mode, off, len);
    const int e0 = errno;
    Both(what, [&](int s) {
      errno = s == 0 ? e0 : e1;
      return s == 0 ? r0 : r1;
    });
    CheckHandle(*h, "after " + what);
  }
  void CopyRange() {
    Handle* a = RandHandle();
    Handle* b = RandHandle();
    if (a == nullptr || b == nullptr) return;
    off_t in_off = Rand(static_cast<uint32_t>(Size(0, a->fd[0]) + 4096));
    off_t out_off = RandOffset(Size(0, b->fd[0]));
    size_t len = RandLen();
    Both("copy_file_range " + a->path + " @" + std::to_string(in_off) + " -> " + b->path + " @" +
             std::to_string(out_off) + " +" + std::to_string(len),
         [&](int s) {
           loff_t i = in_off, o = out_off;
           return copy_file_range(a->fd[s], &i, b->fd[s], &o, len, 0);
         });
    CheckHandle(*b, "after copy_file_range");
  }
  void MmapWrite() {
    Handle* h = RandHandle();
    if (h == nullptr) return;
    off_t size = Size(0, h->fd[0]);
    if (size == 0) return;
    off_t page = 4096;
    off_t map_off = (Rand(static_cast<uint32_t>(size)) / page) * page;
    size_t map_len = static_cast<size_t>(std::min<off_t>(size - map_off, 1 + Rand(512 * 1024)));
    size_t woff = Rand(static_cast<uint32_t>(map_len));
    std::string b = Bytes(1 + Rand(static_cast<uint32_t>(map_len - woff)));
    bool sync = Rand(2);
    Both("mmap write " + h->path + " map @" + std::to_string(map_off) + " +" +
             std::to_string(map_len) + " write @+" + std::to_string(woff) + " +" +
             std::to_string(b.size()) + (sync ? " msync" : ""),
         [&](int s) -> long {
           void* p = mmap(nullptr, map_len, PROT_READ | PROT_WRITE, MAP_SHARED, h->fd[s], map_off);
           if (p == MAP_FAILED) return -1;
           std::memcpy(static_cast<char*>(p) + woff, b.data(), b.size());
           long r = sync ? msync(p, map_len, MS_SYNC) : 0;
           munmap(p, map_len);
           return r;
         });
    CheckHandle(*h, "after mmap write");
  }
  void Rename() {
    std::string a = RandName(), b = RandName();
    Both("rename " + a + " -> " + b,
         [&](int s) { return rename((root_[s] + "/" + a).c_str(), (root_[s] + "/" + b).c_str()); });
    CheckPath(a);
    CheckPath(b);
  }
  void Link() {
    std::string a = RandName(), b = RandName();
    Both("link " + a + " -> " + b,
         [&](int s) { return link((root_[s] + "/" + a).c_str(), (root_[s] + "/" + b).c_str()); });
    CheckPath(a);
    CheckPath(b);
  }
  void Unlink() {
    std::string a = RandName();
    Both("unlink " + a, [&](int s) { return unlink((root_[s] + "/" + a).c_str()); });
    CheckPath(a);
  }
  void Sync() {
    Handle* h = RandHandle();
    if (h == nullptr) return;
    bool data = Rand(2);
    Both(std::string(data ? "fdatasync " : "fsync ") + h->path,
         [&](int s) { return data ? fdatasync(h->fd[s]) : fsync(h->fd[s]); });
    CheckHandle(*h, "after fsync");
  }
  void Reopen() {
    if (handles_.size() >= kMaxHandles || (!handles_.empty() && Rand(3) == 0)) {
      size_t i = Rand(handles_.size());
      Both("close " + handles_[i].path, [&](int s) { return close(handles_[i].fd[s]); });
      handles_.erase(handles_.begin() + i);
      return;
    }
    Handle h;
    h.path = RandName();
    int flags = O_RDWR | (Rand(4) ? O_CREAT : 0);
    long r = Both("open " + h.path + " flags " + std::to_string(flags), [&](int s) {
      h.fd[s] = open((root_[s] + "/" + h.path).c_str(), flags, 0644);
      return h.fd[s] < 0 ? -1 : 0;
    });
    if (r == 0 && h.fd[0] >= 0 && h.fd[1] >= 0) {
      handles_.push_back(h);
      CheckHandle(h, "after open");
    } else {
      for (int fd : h.fd) {
        if (fd >= 0) close(fd);
      }
    }
  }

  std::array<std::string, 2> root_;
  std::mt19937_64 rng_;
  std::vector<Handle> handles_;
  std::deque<std::string> history_;
  int step_ = 0;

 public:
  bool failed_ = false;
};

}  // namespace

TEST_CASE("random operations match a native reference, across a remount") {
  const uint64_t seed = SeedFromEnv("random_ops_test", 20240611);
  const int steps = static_cast<int>(2000 * StressFromEnv());
  umask(022);
  const bool self = SelfTest();
  std::unique_ptr<MountedVolume> mv;
  if (!self) mv = MountedVolume::Create("4G");
  const std::string scratch = MakeScratchDir("randomops");
  const std::string ref = scratch + "/reference";  // native, on the repository's disk
  REQUIRE(mkdir(ref.c_str(), 0755) == 0);
  const std::string mroot = self ? scratch + "/selftest" : mv->Path("t");
  REQUIRE(mkdir(mroot.c_str(), 0755) == 0);

  Mirror mirror(ref, mroot, seed);
  mirror.Setup();
  for (int i = 0; i < steps && !mirror.failed_; i++) {
    mirror.Step(i);
    if (i % 200 == 199) {
      std::string d = CompareTrees(ref, mroot);
      INFO(mirror.History());
      REQUIRE_MESSAGE(d.empty(), "tree differs after step " << i << ": " << d);
      REQUIRE((self || mv->Alive()));
    }
  }
  REQUIRE_FALSE(mirror.failed_);
  mirror.CloseAll();
  std::string d = CompareTrees(ref, mroot);
  CHECK_MESSAGE(d.empty(), "tree differs at the end: " << d);
  MESSAGE(steps << " steps, seed " << seed);
  if (!self) {
    REQUIRE(mv->Unmount());
    REQUIRE(mv->Remount());
    d = CompareTrees(ref, mroot);
    CHECK_MESSAGE(d.empty(), "tree differs after the remount: " << d);
    REQUIRE(mv->Unmount());
    std::string report;
    bool clean = FsckClean(*mv, &report);
    INFO(report);
    CHECK(clean);
  }
  if (!KeepTmp()) RemoveTree(scratch);
}
