// Times of written files through the writeback cache (issue #2). Writes
// that come from the kernel's page cache do not set mtime/ctime in the core
// (the kernel keeps them and sends them with a SETATTR when it writes the
// inode back: before FSYNC, at syncfs, at close); an overwrite in place
// then records no metadata at all. This checks that the times the kernel
// showed are the ones the volume keeps: after fsync and a remount, in a
// snapshot taken right after the writes, and after a SIGKILL following an
// fsync.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>

#include "tests/common/fuse_files.h"
#include "tests/common/mount_fixture.h"

using psm::test::MountedVolume;
using psm::testutil::Ctl;
using psm::testutil::Pattern;
using psm::testutil::ReadFile;

namespace {

struct timespec MtimeOf(const std::string& p) {
  struct stat st {};
  REQUIRE(::stat(p.c_str(), &st) == 0);
  return st.st_mtim;
}
std::string Str(const struct timespec& t) {
  return std::to_string(t.tv_sec) + "." + std::to_string(t.tv_nsec);
}

// Writes `n` 4 KiB pieces at scattered offsets of an existing file.
void Scatter(const std::string& p, int n, unsigned seed) {
  int fd = ::open(p.c_str(), O_WRONLY);
  REQUIRE(fd >= 0);
  const std::string page = Pattern(4096, seed);
  for (int i = 0; i < n; ++i) {
    const off_t off = static_cast<off_t>(((i * 7919u + seed) % 256) * 4096);
    REQUIRE(::pwrite(fd, page.data(), page.size(), off) == 4096);
  }
  REQUIRE(::close(fd) == 0);
}

}  // namespace

TEST_CASE("write times: what the kernel showed is what the volume keeps") {
  auto mv = MountedVolume::Create("256M");
  const std::string f = mv->Path("f");
  {
    int fd = ::open(f.c_str(), O_CREAT | O_WRONLY, 0644);
    REQUIRE(fd >= 0);
    const std::string data = Pattern(1 << 20, 1);
    REQUIRE(::write(fd, data.data(), data.size()) == static_cast<ssize_t>(data.size()));
    REQUIRE(::fsync(fd) == 0);
    REQUIRE(::close(fd) == 0);
  }
  // Overwrites in place, some time later: mtime must move.
  const struct timespec before = MtimeOf(f);
  ::usleep(20000);
  Scatter(f, 64, 2);
  const struct timespec after_write = MtimeOf(f);
  CHECK(Str(after_write) != Str(before));
  // A snapshot right after (psmctl syncs the mount first) has those times.
  REQUIRE(Ctl({"snapshot", "create", mv->mnt, "s"}).ok());
  CHECK(Str(MtimeOf(mv->Path(".snapshots/s/f"))) == Str(after_write));
  CHECK(ReadFile(mv->Path(".snapshots/s/f")) == ReadFile(f));
  // More overwrites, fsync, remount: the daemon kept the kernel's times.
  ::usleep(20000);
  Scatter(f, 32, 3);
  const struct timespec after_second = MtimeOf(f);
  CHECK(Str(after_second) != Str(after_write));
  {
    int fd = ::open(f.c_str(), O_RDONLY);
    REQUIRE(fd >= 0);
    REQUIRE(::fsync(fd) == 0);
    REQUIRE(::close(fd) == 0);
  }
  const std::string content = ReadFile(f);
  REQUIRE(mv->Unmount());
  REQUIRE(mv->Remount());
  CHECK(Str(MtimeOf(f)) == Str(after_second));
  CHECK(ReadFile(f) == content);
  // fsync, then SIGKILL: data and times of the fsynced file survive.
  ::usleep(20000);
  Scatter(f, 16, 4);
  const struct timespec third = MtimeOf(f);
  {
    int fd = ::open(f.c_str(), O_WRONLY);
    REQUIRE(fd >= 0);
    REQUIRE(::fsync(fd) == 0);
    REQUIRE(::close(fd) == 0);
  }
  const std::string content3 = ReadFile(f);
  REQUIRE(mv->Kill9());  // fails if the daemon had already died
  REQUIRE(mv->Remount());
  CHECK(ReadFile(f) == content3);
  CHECK(Str(MtimeOf(f)) == Str(third));
}
