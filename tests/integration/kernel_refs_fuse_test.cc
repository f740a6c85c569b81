// The cap on kernel references (psmfs -o max_kernel_refs=N,
// docs/architecture.md "Memory"), through real mounts (label fuse). The
// daemon keeps 8 to 20 bytes per inode the kernel holds, until its FORGET;
// past the cap it asks the kernel to drop dentries so that the kernel
// forgets inodes, and psmctl status shows the count, the cap and the
// dentries dropped.
//
// A walk of 6,000 files (every one lstat'ed and read) under a cap of 1,000:
//  - without the cap (the default, 1.5 million), the kernel holds them all
//    after the walk: the control that shows what the test measures;
//  - with it, the count falls to the cap within seconds, while the walk
//    goes on and after;
//  - every file still reads back what the test wrote (its own model, kept
//    in memory), a second walk included;
//  - a file held open, and one unlinked while open, stay readable through
//    their descriptors while dentries are dropped around them; the
//    unlinked one is gone once closed;
//  - a bind mount below the mount point stops the shedding (dropping its
//    dentry would unmount it) and stays mounted; once it is gone shedding
//    resumes.
// And a file unlinked while only an O_PATH descriptor references it (the
// kernel holds the inode, no handle does) is destroyed by the unlink: its
// blocks are free at once, fstat still answers, a reopen is refused.
// And readers racing renames over, unlinks and O_PATH unlinks of the same
// names read whole files of one generation or get ENOENT, and syncfs and
// fsck find nothing wrong afterwards.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <mutex>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "fs/json/control_json.h"
#include "tests/common/fuse_files.h"
#include "tests/common/mount_fixture.h"

using psm::test::MountedVolume;
using psm::testutil::Ctl;

namespace {

constexpr int kDirs = 12;
constexpr int kPerDir = 500;

struct Refs {
  uint64_t refs = 0, cap = 0, shed = 0;
};

Refs KernelRefs(const MountedVolume& mv) {
  const psm::Json stats = psm::testutil::StatusStats(mv.mnt);
  return Refs{stats.GetUint("kernel_refs"), stats.GetUint("kernel_refs_cap"),
              stats.GetUint("kernel_refs_shed")};
}

std::string Content(int d, int i) {
  return "file " + std::to_string(d) + "/" + std::to_string(i) + std::string(i % 37, 'x');
}

std::string ReadAll(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  REQUIRE_MESSAGE(fd >= 0, path << ": " << strerror(errno));
  std::string out;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    REQUIRE_MESSAGE(n >= 0, path << ": " << strerror(errno));
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}

std::string ReadFd(int fd) {
  std::string out(4096, '\0');
  ssize_t n = ::pread(fd, out.data(), out.size(), 0);
  REQUIRE_MESSAGE(n >= 0, strerror(errno));
  out.resize(static_cast<size_t>(n));
  return out;
}

// The model: every file's expected content, written through the mount.
std::map<std::string, std::string> Populate(const MountedVolume& mv) {
  std::map<std::string, std::string> model;
  for (int d = 0; d < kDirs; ++d) {
    const std::string dir = "d" + std::to_string(d);
    REQUIRE(::mkdir(mv.Path(dir).c_str(), 0755) == 0);
    for (int i = 0; i < kPerDir; ++i) {
      const std::string rel = dir + "/f" + std::to_string(i);
      const std::string c = Content(d, i);
      int fd = ::open(mv.Path(rel).c_str(), O_CREAT | O_EXCL | O_WRONLY, 0644);
      REQUIRE_MESSAGE(fd >= 0, rel << ": " << strerror(errno));
      REQUIRE(::write(fd, c.data(), c.size()) == static_cast<ssize_t>(c.size()));
      REQUIRE(::close(fd) == 0);
      model[rel] = c;
    }
  }
  return model;
}

// lstat of every file, and a read of every file whose index is a multiple
// of `read_every`, each checked against the model.
void Walk(const MountedVolume& mv, const std::map<std::string, std::string>& model,
          int read_every) {
  int k = 0;
  for (const auto& [rel, c] : model) {
    struct stat st {};
    REQUIRE_MESSAGE(::lstat(mv.Path(rel).c_str(), &st) == 0, rel << ": " << strerror(errno));
    REQUIRE(S_ISREG(st.st_mode));
    REQUIRE_MESSAGE(st.st_size == static_cast<off_t>(c.size()), rel);
    if (k++ % read_every == 0) REQUIRE_MESSAGE(ReadAll(mv.Path(rel)) == c, rel);
  }
}

// Waits up to 30 s for the kernel to hold at most `most` inodes.
Refs WaitRefsAtMost(const MountedVolume& mv, uint64_t most) {
  Refs r;
  for (int i = 0; i < 300; ++i) {
    r = KernelRefs(mv);
    if (r.refs <= most) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return r;
}

bool Mounted(const std::string& path) {
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.find(" " + path + " ") != std::string::npos) return true;
  }
  return false;
}

}  // namespace

TEST_CASE("kernel refs: without a cap the kernel keeps every inode a walk looked up") {
  auto mv = MountedVolume::Create("256M");
  REQUIRE(mv);
  auto model = Populate(*mv);
  Walk(*mv, model, 50);
  const Refs r = KernelRefs(*mv);
  MESSAGE("no cap: " << r.refs << " inodes held after the walk");
  CHECK(r.cap == 1572864);  // the default at a 256 MiB budget
  // The files and directories the walk looked up (the kernel may have
  // dropped a few under memory pressure; not most of them).
  CHECK(r.refs >= model.size() / 2);
  CHECK(r.shed == 0);
  CHECK(mv->Unmount());
}

TEST_CASE("kernel refs: past max_kernel_refs the daemon has the kernel drop dentries") {
  auto mv = MountedVolume::Create("256M", "max_kernel_refs=1000");
  REQUIRE(mv);
  auto model = Populate(*mv);
  // One file held open, one unlinked while open: their descriptors must
  // keep working while the dentries around them are dropped.
  const std::string kept = "d3/f7", gone = "d5/f11";
  int kept_fd = ::open(mv->Path(kept).c_str(), O_RDONLY);
  REQUIRE(kept_fd >= 0);
  int gone_fd = ::open(mv->Path(gone).c_str(), O_RDONLY);
  REQUIRE(gone_fd >= 0);
  REQUIRE(::unlink(mv->Path(gone).c_str()) == 0);
  const std::string gone_content = model[gone];
  model.erase(gone);

  Walk(*mv, model, 10);
  Refs r = WaitRefsAtMost(*mv, 1000);
  MESSAGE("after the walk: " << r.refs << " inodes held, " << r.shed << " dentries dropped");
  CHECK(r.cap == 1000);
  CHECK_MESSAGE(r.refs <= 1000, "the kernel still holds " << r.refs << " inodes");
  CHECK(r.shed > 0);
  CHECK(ReadFd(kept_fd) == model[kept]);
  CHECK(ReadFd(gone_fd) == gone_content);

  // Everything reads back after the dentries were dropped, and a second
  // walk is capped the same way.
  Walk(*mv, model, 1);
  r = WaitRefsAtMost(*mv, 1000);
  CHECK_MESSAGE(r.refs <= 1000, "the kernel still holds " << r.refs << " inodes");
  CHECK(ReadFd(kept_fd) == model[kept]);
  CHECK(ReadFd(gone_fd) == gone_content);
  REQUIRE(::close(gone_fd) == 0);
  REQUIRE(::close(kept_fd) == 0);
  struct stat st {};
  CHECK(::lstat(mv->Path(gone).c_str(), &st) == -1);
  CHECK(errno == ENOENT);

  // A bind mount below the mount point: no dentry is dropped while it is
  // there (that would unmount it), and the daemon says why.
  char t[] = "/tmp/psm-krbind-XXXXXX";
  REQUIRE(::mkdtemp(t) != nullptr);
  const std::string src = t;
  REQUIRE(::mkdir(mv->Path("d0/m").c_str(), 0755) == 0);
  REQUIRE_MESSAGE(::mount(src.c_str(), mv->Path("d0/m").c_str(), nullptr, MS_BIND, nullptr) == 0,
                  "bind mount: " << strerror(errno));
  const uint64_t shed_before = KernelRefs(*mv).shed;
  Walk(*mv, model, 1000);
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  r = KernelRefs(*mv);
  CHECK(Mounted(mv->Path("d0/m")));
  CHECK(r.shed == shed_before);
  CHECK_MESSAGE(r.refs > 1000, "the kernel holds only " << r.refs << " inodes");
  CHECK(mv->LogText().find("mounted below the mount point") != std::string::npos);
  REQUIRE(::umount(mv->Path("d0/m").c_str()) == 0);
  ::rmdir(src.c_str());
  r = WaitRefsAtMost(*mv, 1000);
  CHECK_MESSAGE(r.refs <= 1000, "the kernel still holds " << r.refs << " inodes");
  CHECK(r.shed > shed_before);
  Walk(*mv, model, 1);
  CHECK(mv->Unmount());
}

TEST_CASE("kernel refs: a file unlinked with only an O_PATH descriptor on it goes at once") {
  // An O_PATH descriptor opens nothing in FUSE: the kernel references the
  // inode, no handle does. Its unlink destroys the file in the unlink's
  // own commit (docs/architecture.md, "Unlinked files"): its blocks are
  // free before the descriptor is closed, fstat through the descriptor
  // still answers (nlink 0: the daemon answers from memory), a reopen
  // through /proc/self/fd is refused. A file open for reading, unlinked
  // the same way, keeps its blocks and its bytes until its close.
  auto mv = MountedVolume::Create("256M");
  REQUIRE(mv);
  auto bfree = [&] {
    struct statvfs sv {};
    REQUIRE(statvfs(mv->mnt.c_str(), &sv) == 0);
    return sv.f_bfree;
  };
  const std::string data(8 << 20, 'p');
  const std::string a = mv->mnt + "/a", b = mv->mnt + "/b";
  const uint64_t free0 = bfree();
  for (const std::string* p : {&a, &b}) {
    int fd = open(p->c_str(), O_CREAT | O_WRONLY, 0644);
    REQUIRE(fd >= 0);
    REQUIRE(write(fd, data.data(), data.size()) == static_cast<ssize_t>(data.size()));
    REQUIRE(fsync(fd) == 0);
    REQUIRE(close(fd) == 0);
  }
  const uint64_t free2 = bfree();
  REQUIRE(free2 < free0);
  const uint64_t per_file = (free0 - free2) / 2;
  CHECK(per_file >= data.size() / 4096);

  int pfd = open(a.c_str(), O_PATH);
  REQUIRE(pfd >= 0);
  int rfd = open(b.c_str(), O_RDONLY);
  REQUIRE(rfd >= 0);
  REQUIRE(unlink(a.c_str()) == 0);
  REQUIRE(unlink(b.c_str()) == 0);
  // a's blocks are back while its O_PATH descriptor is open; b's are not.
  CHECK(bfree() == free2 + per_file);
  struct stat st {};
  REQUIRE_MESSAGE(fstat(pfd, &st) == 0, strerror(errno));
  CHECK(st.st_nlink == 0);
  CHECK(st.st_size == static_cast<off_t>(data.size()));
  const std::string again = "/proc/self/fd/" + std::to_string(pfd);
  errno = 0;
  int r2 = open(again.c_str(), O_RDONLY);
  CHECK(r2 < 0);
  CHECK(errno == ENOENT);
  if (r2 >= 0) close(r2);
  std::string got(data.size(), '\0');
  CHECK(pread(rfd, got.data(), got.size(), 0) == static_cast<ssize_t>(data.size()));
  CHECK(got == data);
  REQUIRE(close(pfd) == 0);
  REQUIRE(close(rfd) == 0);
  // The kernel wrote back each file's ctime after its unlink (a SETATTR on
  // the link-less inode); had one failed, syncfs would report it.
  int mfd = open(mv->mnt.c_str(), O_RDONLY | O_DIRECTORY);
  REQUIRE(mfd >= 0);
  CHECK_MESSAGE(syncfs(mfd) == 0, strerror(errno));
  close(mfd);
  // b goes at its close (and the kernel's FORGET that follows).
  for (int i = 0; i < 100 && bfree() != free0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  CHECK(bfree() == free0);
  CHECK(mv->Unmount());
}

TEST_CASE("kernel refs: readers racing renames over, unlinks and O_PATH unlinks read whole files") {
  // Files f0..f19 are replaced (a new file renamed over), unlinked, or
  // unlinked under an O_PATH descriptor by three writers while four readers
  // open and read them. Each file's bytes name the file and its generation
  // ("i-g;" repeated), so a reader checks what it read against the file's
  // own model: whole and of one generation, or ENOENT. Afterwards syncfs
  // succeeds (every SETATTR the kernel sent on a link-less inode was
  // answered) and fsck finds the volume clean.
  auto mv = MountedVolume::Create("256M");
  REQUIRE(mv);
  const std::string d = mv->Path("d");
  REQUIRE(mkdir(d.c_str(), 0755) == 0);
  constexpr int kFiles = 20;
  auto content = [](int i, int g) {
    std::string rec = std::to_string(i) + "-" + std::to_string(g) + ";";
    std::string s;
    while (s.size() < 3000) s += rec;
    return s;
  };
  std::atomic<int> next_gen{1};
  std::atomic<uint64_t> reads{0}, missing{0}, pathrefs{0};
  std::mutex err_mu;
  std::vector<std::string> errors;
  auto fail = [&](std::string e) {
    std::lock_guard<std::mutex> l(err_mu);
    if (errors.size() < 10) errors.push_back(std::move(e));
  };
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(6);
  auto writer = [&](int k) {
    uint32_t x = 12345u + k * 7919u;
    while (std::chrono::steady_clock::now() < until) {
      x = x * 1103515245u + 12345u;
      const int i = (x >> 8) % kFiles;
      const std::string p = d + "/f" + std::to_string(i);
      const int op = (x >> 16) % 10;
      if (op < 5) {
        const std::string t = d + "/.t" + std::to_string(k);
        const std::string c = content(i, next_gen.fetch_add(1));
        int fd = open(t.c_str(), O_CREAT | O_TRUNC | O_WRONLY, 0644);
        if (fd < 0 || write(fd, c.data(), c.size()) != static_cast<ssize_t>(c.size())) {
          fail("write " + t + ": " + strerror(errno));
        }
        if (fd >= 0) close(fd);
        if (rename(t.c_str(), p.c_str()) != 0) fail("rename: " + std::string(strerror(errno)));
      } else if (op < 8) {
        if (unlink(p.c_str()) != 0 && errno != ENOENT) fail("unlink: " + std::string(strerror(errno)));
      } else {
        int fd = open(p.c_str(), O_PATH);
        if (fd < 0) continue;
        if (unlink(p.c_str()) == 0) {
          struct stat st {};
          if (fstat(fd, &st) != 0) {
            fail("fstat of an unlinked O_PATH file: " + std::string(strerror(errno)));
          } else if (st.st_nlink != 0) {
            fail("fstat of an unlinked O_PATH file: nlink " + std::to_string(st.st_nlink));
          }
          pathrefs.fetch_add(1);
        }
        close(fd);
      }
    }
  };
  auto reader = [&](int k) {
    uint32_t x = 777u + k * 104729u;
    std::string buf(8192, '\0');
    while (std::chrono::steady_clock::now() < until) {
      x = x * 1103515245u + 12345u;
      const int i = (x >> 8) % kFiles;
      const std::string p = d + "/f" + std::to_string(i);
      int fd = open(p.c_str(), O_RDONLY);
      if (fd < 0) {
        if (errno == ENOENT) {
          missing.fetch_add(1);
        } else {
          fail("open " + p + ": " + strerror(errno));
        }
        continue;
      }
      ssize_t n = pread(fd, buf.data(), buf.size(), 0);
      close(fd);
      if (n <= 0) {
        fail("read " + p + ": " + std::to_string(n));
        continue;
      }
      const std::string got = buf.substr(0, n);
      const std::string rec = got.substr(0, got.find(';') + 1);
      const int g = atoi(rec.c_str() + rec.find('-') + 1);
      if (got != content(i, g)) fail("read " + p + ": not one whole generation: " + rec);
      reads.fetch_add(1);
    }
  };
  std::vector<std::thread> ts;
  for (int k = 0; k < 3; ++k) ts.emplace_back(writer, k);
  for (int k = 0; k < 4; ++k) ts.emplace_back(reader, k);
  for (auto& t : ts) t.join();
  MESSAGE("reads " << reads.load() << ", ENOENT " << missing.load() << ", O_PATH unlinks "
                   << pathrefs.load());
  for (const std::string& e : errors) FAIL_CHECK(e);
  CHECK(reads.load() > 0);
  CHECK(missing.load() > 0);
  CHECK(pathrefs.load() > 0);
  int mfd = open(mv->mnt.c_str(), O_RDONLY | O_DIRECTORY);
  REQUIRE(mfd >= 0);
  CHECK_MESSAGE(syncfs(mfd) == 0, strerror(errno));
  close(mfd);
  REQUIRE(mv->Unmount());
  auto f = Ctl({"fsck", mv->vol});
  CHECK_MESSAGE(f.ok(), f.output);
}
