// `psmctl metrics` through real mounts (label fuse): the daemon counts every
// FUSE request it serves, by operation, and the real psmctl prints them in
// the Prometheus text format. The output is checked with the strict parser
// of tests/common/prom_parser.h, and the counters against the system calls
// this test makes, chosen so that each maps to a known number of requests:
//   mkdir, rmdir, unlink, rename, statfs, setxattr: one request each
//   chmod: one SETATTR (counted apart: the kernel also sends SETATTRs of its
//     own for the ctime of regular files after setxattr, rename, unlink)
//   open(O_CREAT|O_EXCL): one CREATE
//   fsync(2): one FSYNC (the kernel sends it even with nothing dirty)
//   O_DIRECT pread/pwrite of one block: one READ/WRITE (no page cache)
//   opendir: one OPENDIR
// --all lists both of the test's mounted volumes (a runtime directory of
// its own, PSMFS_RUNTIME_DIR, keeps other daemons on the machine out), each
// with its own volume label, and a daemon that does not answer as
// psmfs_up 0; a path that is not mounted gives a clear error and exit 4; a
// bad command line exit 2.
#include <dirent.h>
#include <doctest/doctest.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "tests/common/fuse_files.h"
#include "tests/common/mount_fixture.h"
#include "tests/common/prom_parser.h"

using psm::promtest::Exposition;
using psm::test::BinDir;
using psm::test::MountedVolume;
using psm::test::ProgramResult;
using psm::test::RunProgram;

namespace {

// The daemons and psmctl of this test meet in a runtime directory of their
// own (the variable is inherited by both).
struct RuntimeDir {
  std::string dir;
  RuntimeDir() {
    char t[] = "/tmp/psm-mfrt-XXXXXX";
    REQUIRE(::mkdtemp(t) != nullptr);
    dir = t;
    ::setenv("PSMFS_RUNTIME_DIR", dir.c_str(), 1);
  }
  ~RuntimeDir() {
    ::unsetenv("PSMFS_RUNTIME_DIR");
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
};

// psmctl ARGS with stdout and stderr apart (RunProgram interleaves them).
struct Split {
  int exit_code = -1;
  std::string out, err;
};
Split CtlSplit(const std::vector<std::string>& args) {
  char t[] = "/tmp/psm-mferr-XXXXXX";
  const int fd = ::mkstemp(t);
  REQUIRE(fd >= 0);
  ::close(fd);
  std::string cmd = "exec '" + BinDir() + "/psmctl'";
  for (const std::string& a : args) cmd += " '" + a + "'";  // the test's paths have no quotes
  cmd += " 2>'" + std::string(t) + "'";
  ProgramResult r = RunProgram({"/bin/sh", "-c", cmd}, 120);
  Split s;
  s.exit_code = r.exit_code;
  s.out = r.output;
  s.err = psm::testutil::ReadFile(t);
  ::unlink(t);
  return s;
}

Exposition Metrics(const std::vector<std::string>& args) {
  std::vector<std::string> a = {"metrics"};
  a.insert(a.end(), args.begin(), args.end());
  Split s = CtlSplit(a);
  INFO("psmctl metrics stderr: " << s.err);
  REQUIRE(s.exit_code == 0);
  CHECK(s.err.empty());
  Exposition e;
  const std::string why = psm::promtest::Parse(s.out, &e);
  INFO(s.out);
  REQUIRE_MESSAGE(why.empty(), why);
  return e;
}

double Ops(const Exposition& e, const std::string& op) {
  return e.Value("psmfs_requests_total", {{"op", op}});
}

}  // namespace

TEST_CASE("psmctl metrics: request counters follow the system calls made on the mount") {
  RuntimeDir rt;
  auto mv = MountedVolume::Create("256M");
  const std::string mnt = std::filesystem::canonical(mv->mnt).string();
  // A file for chmod, direct I/O and fsync, made before the first scrape.
  psm::testutil::WriteFile(mv->Path("direct"), psm::testutil::Pattern(64 * 4096, 1));
  {
    int fd = ::open(mv->Path("direct").c_str(), O_RDONLY);
    REQUIRE(fd >= 0);
    REQUIRE(::fsync(fd) == 0);  // nothing of it left dirty in the kernel
    ::close(fd);
  }

  const Exposition e0 = Metrics({mnt});
  REQUIRE(e0.Find("psmfs_up").size() == 1);
  const std::string uuid = e0.Find("psmfs_up").at(0)->labels.at("volume");
  CHECK(e0.Value("psmfs_up", {{"volume", uuid}, {"mountpoint", mnt}}) == 1);

  // Phase 1: the namespace. (With the writeback cache the kernel keeps a
  // regular file's ctime itself and sends it in a SETATTR after setxattr,
  // rename and unlink, so setattr is counted in phase 2 alone.)
  constexpr int kDirs = 5, kFiles = 6, kStatfs = 7, kXattrs = 3, kRenames = 4;
  for (int i = 0; i < kDirs; ++i) {
    REQUIRE(::mkdir(mv->Path("d" + std::to_string(i)).c_str(), 0755) == 0);
  }
  for (int i = 0; i < kFiles; ++i) {
    int fd = ::open(mv->Path("f" + std::to_string(i)).c_str(), O_CREAT | O_EXCL | O_WRONLY, 0644);
    REQUIRE(fd >= 0);
    REQUIRE(::close(fd) == 0);
  }
  for (int i = 0; i < kStatfs; ++i) {
    struct statvfs sv;
    REQUIRE(::statvfs(mnt.c_str(), &sv) == 0);
  }
  for (int i = 0; i < kXattrs; ++i) {
    REQUIRE(::setxattr(mv->Path("f0").c_str(), ("user.k" + std::to_string(i)).c_str(), "v", 1, 0) ==
            0);
  }
  for (int i = 0; i < kRenames; ++i) {
    REQUIRE(::rename(mv->Path("f" + std::to_string(i)).c_str(),
                     mv->Path("r" + std::to_string(i)).c_str()) == 0);
  }
  DIR* d = ::opendir(mnt.c_str());
  REQUIRE(d != nullptr);
  while (::readdir(d) != nullptr) {
  }
  ::closedir(d);
  for (int i = 0; i < kRenames; ++i) {
    REQUIRE(::unlink(mv->Path("r" + std::to_string(i)).c_str()) == 0);
  }
  for (int i = kRenames; i < kFiles; ++i) {
    REQUIRE(::unlink(mv->Path("f" + std::to_string(i)).c_str()) == 0);
  }
  for (int i = 0; i < kDirs; ++i) {
    REQUIRE(::rmdir(mv->Path("d" + std::to_string(i)).c_str()) == 0);
  }
  const Exposition e1 = Metrics({mnt});
  {
    auto delta = [&](const std::string& op) { return Ops(e1, op) - Ops(e0, op); };
    CHECK(delta("mkdir") == kDirs);
    CHECK(delta("create") == kFiles);
    CHECK(delta("statfs") == kStatfs);
    CHECK(delta("setxattr") == kXattrs);
    CHECK(delta("rename") == kRenames);
    CHECK(delta("unlink") == kFiles);
    CHECK(delta("rmdir") == kDirs);
    CHECK(delta("opendir") == 1);
    CHECK(delta("lookup") >= kDirs);  // each new name was looked up first (misses are not cached)
    CHECK(delta("readdir") + delta("readdirplus") >= 1);
    CHECK(delta("write") == 0);
    CHECK(delta("mknod") == 0);
  }

  // Phase 2: chmod.
  constexpr int kChmods = 4;
  for (int i = 0; i < kChmods; ++i) REQUIRE(::chmod(mv->Path("direct").c_str(), 0600 + i) == 0);
  const Exposition e2 = Metrics({mnt});
  CHECK(Ops(e2, "setattr") - Ops(e1, "setattr") == kChmods);

  // Phase 3: direct I/O (no page cache: one request per call) and fsync.
  constexpr int kDirect = 8, kFsyncs = 3;
  void* buf = nullptr;
  REQUIRE(::posix_memalign(&buf, 4096, 4096) == 0);
  std::memset(buf, 'x', 4096);
  {
    int fd = ::open(mv->Path("direct").c_str(), O_RDWR | O_DIRECT);
    REQUIRE_MESSAGE(fd >= 0, strerror(errno));
    for (int i = 0; i < kDirect; ++i) {
      REQUIRE(::pwrite(fd, buf, 4096, static_cast<off_t>(i) * 2 * 4096) == 4096);
    }
    for (int i = 0; i < kDirect; ++i) {
      REQUIRE(::pread(fd, buf, 4096, static_cast<off_t>(i) * 3 * 4096) == 4096);
    }
    for (int i = 0; i < kFsyncs; ++i) REQUIRE(::fsync(fd) == 0);
    REQUIRE(::close(fd) == 0);
  }
  ::free(buf);
  const Exposition e3 = Metrics({mnt});
  {
    auto delta = [&](const std::string& op) { return Ops(e3, op) - Ops(e2, op); };
    CHECK(delta("open") == 1);
    CHECK(delta("write") == kDirect);
    CHECK(delta("read") == kDirect);
    CHECK(delta("fsync") == kFsyncs);
    CHECK(delta("create") == 0);
  }

  // Every served operation has a histogram that agrees with its counter.
  for (const auto* s : e3.Find("psmfs_requests_total")) {
    const std::string op = s->labels.at("op");
    if (s->value == 0) {
      CHECK(e3.Find("psmfs_request_duration_seconds_count", {{"op", op}}).empty());
      continue;
    }
    CHECK(e3.Value("psmfs_request_duration_seconds_count", {{"op", op}}) == s->value);
    CHECK(e3.Value("psmfs_request_duration_seconds_bucket", {{"op", op}, {"le", "+Inf"}}) ==
          s->value);
    CHECK(e3.Value("psmfs_request_duration_seconds_sum", {{"op", op}}) > 0);
  }
  // An fsync makes the image and the log durable: slower than 10 µs.
  CHECK(e3.Value("psmfs_request_duration_seconds_bucket", {{"op", "fsync"}, {"le", "1e-05"}}) <
        e3.Value("psmfs_request_duration_seconds_count", {{"op", "fsync"}}));
  // Daemon memory and the volume's state are there too.
  CHECK(e3.Value("psmfs_daemon_resident_memory_bytes", {{"volume", uuid}}) > 1e6);
  CHECK(e3.Value("psmfs_volume_failed", {{"volume", uuid}}) == 0);
  // The writes were made durable by at least one sync cycle.
  CHECK(e3.Value("psmfs_sync_cycles_total", {{"volume", uuid}}) >
        e2.Value("psmfs_sync_cycles_total", {{"volume", uuid}}));
  // Checksums are on by default; nothing failed one (docs/integrity.md).
  CHECK(e3.Value("psmfs_checksum_errors_total", {{"volume", uuid}}) == 0);
  CHECK(mv->Unmount());
}

TEST_CASE("psmctl metrics --all: every mounted volume, each with its own labels") {
  RuntimeDir rt;
  auto a = MountedVolume::Create("128M");
  auto b = MountedVolume::Create("256M");
  const std::string ma = std::filesystem::canonical(a->mnt).string();
  const std::string mb = std::filesystem::canonical(b->mnt).string();
  psm::testutil::WriteFile(a->Path("x"), "hello");
  REQUIRE(psm::testutil::Ctl({"snapshot", "create", ma, "snap-a"}).ok());

  const Exposition one_a = Metrics({ma});
  const Exposition one_b = Metrics({mb});
  const std::string ua = one_a.Find("psmfs_up").at(0)->labels.at("volume");
  const std::string ub = one_b.Find("psmfs_up").at(0)->labels.at("volume");
  CHECK(ua != ub);

  const Exposition all = Metrics({"--all"});
  std::map<std::string, std::string> by_mount;  // mountpoint -> volume
  for (const auto* s : all.Find("psmfs_up")) {
    CHECK(s->value == 1);
    by_mount[s->labels.at("mountpoint")] = s->labels.at("volume");
  }
  CHECK(by_mount.size() == 2);
  CHECK(by_mount[ma] == ua);
  CHECK(by_mount[mb] == ub);
  // Sizes as formatted (the image less its superblock), snapshots as made.
  const double size_a = all.Value("psmfs_size_bytes", {{"volume", ua}});
  const double size_b = all.Value("psmfs_size_bytes", {{"volume", ub}});
  CHECK(size_a <= 128.0 * (1 << 20));
  CHECK(size_a > 127.0 * (1 << 20));
  CHECK(size_b <= 256.0 * (1 << 20));
  CHECK(size_b > 255.0 * (1 << 20));
  CHECK(all.Value("psmfs_snapshots", {{"volume", ua}}) == 1);
  CHECK(all.Value("psmfs_snapshots", {{"volume", ub}}) == 0);
  CHECK(all.Find("psmfs_snapshot_referenced_bytes", {{"snapshot", "snap-a"}}).size() == 1);
  CHECK(all.Find("psmfs_requests_total", {{"volume", ua}, {"op", "write"}}).size() == 1);
  CHECK(all.Find("psmfs_requests_total", {{"volume", ub}, {"op", "write"}}).size() == 1);

  // A registry entry whose daemon runs (this test's pid) but does not answer
  // (no socket): psmfs_up 0 for it, named on stderr, the others as before,
  // and exit 0 (the exposition is whole).
  const std::string ghost = "00000000-0000-4000-8000-00000000abcd";
  char host[256] = {};
  REQUIRE(::gethostname(host, sizeof(host) - 1) == 0);
  const std::string ghost_entry = rt.dir + "/" + ghost + ".mount";
  psm::testutil::WriteFile(
      ghost_entry, "uuid=" + ghost + "\nvolume=/srv/ghost\nmountpoint=/mnt/ghost\n" +
                       "pid=" + std::to_string(::getpid()) + "\nsocket=" + rt.dir + "/" + ghost +
                       ".ctl.sock\nhost=" + host + "\nsince=2024-01-01T00:00:00Z\nprotocol=1\n");
  {
    Split s = CtlSplit({"metrics", "--all"});
    CHECK(s.exit_code == 0);
    CHECK_MESSAGE(s.err.find("/mnt/ghost") != std::string::npos, s.err);
    CHECK(s.err.find("does not answer") != std::string::npos);
    Exposition e;
    const std::string why = psm::promtest::Parse(s.out, &e);
    REQUIRE_MESSAGE(why.empty(), why);
    CHECK(e.Find("psmfs_up").size() == 3);
    CHECK(e.Value("psmfs_up", {{"volume", ghost}, {"mountpoint", "/mnt/ghost"}}) == 0);
    CHECK(e.Find("psmfs_size_bytes", {{"volume", ghost}}).empty());
    CHECK(e.Value("psmfs_up", {{"volume", ua}}) == 1);
    CHECK(e.Value("psmfs_up", {{"volume", ub}}) == 1);
  }
  REQUIRE(::unlink(ghost_entry.c_str()) == 0);

  // Once b is unmounted, --all lists a alone, and b's mount point is an error.
  REQUIRE(b->Unmount());
  const Exposition after = Metrics({"--all"});
  CHECK(after.Find("psmfs_up").size() == 1);
  CHECK(after.Value("psmfs_up", {{"volume", ua}, {"mountpoint", ma}}) == 1);
  Split gone = CtlSplit({"metrics", mb});
  CHECK(gone.exit_code == 4);
  CHECK(gone.out.empty());
  CHECK(gone.err.find("not a mounted psmfs volume") != std::string::npos);
  CHECK(a->Unmount());
  // No volume at all: an empty exposition, exit 0.
  Split none = CtlSplit({"metrics", "--all"});
  CHECK(none.exit_code == 0);
  CHECK(none.out.empty());
}

TEST_CASE("psmctl metrics: bad input gives a clear error and the documented exit code") {
  RuntimeDir rt;
  char t[] = "/tmp/psm-mfdir-XXXXXX";
  REQUIRE(::mkdtemp(t) != nullptr);
  const std::string plain = t;
  // A directory that is not mounted.
  Split s = CtlSplit({"metrics", plain});
  CHECK(s.exit_code == 4);
  CHECK(s.out.empty());
  CHECK_MESSAGE(s.err.find(plain + " is not a mounted psmfs volume") != std::string::npos, s.err);
  // A path that does not exist.
  s = CtlSplit({"metrics", plain + "/nonexistent"});
  CHECK(s.exit_code == 4);
  CHECK(s.out.empty());
  CHECK(s.err.find("not a mounted psmfs volume") != std::string::npos);
  // Usage errors: neither a mount point nor --all, or both.
  s = CtlSplit({"metrics"});
  CHECK(s.exit_code == 2);
  CHECK(s.err.find("MOUNTPOINT") != std::string::npos);
  s = CtlSplit({"metrics", "--all", plain});
  CHECK(s.exit_code == 2);
  CHECK(s.err.find("not both") != std::string::npos);
  ::rmdir(plain.c_str());
}
