// Killing the daemon loses nothing that was fsynced and never shows another
// file's bytes.
//
// Each iteration mounts the volume, runs a write-heavy workload in a child
// process (appends, in-place rewrites, fsync/fdatasync, renames, unlinks,
// each file with its own pattern, see tests/common/crash_journal.h), maybe
// takes a snapshot while it runs, and SIGKILLs the daemon at a random
// moment. Then: lazy unmount, remount (failover of a volume whose holder
// died), verify every file and every snapshot, unmount, `psmctl fsck` must
// exit 0. The volume carries over from one iteration to the next, so later
// iterations recover a volume that has been recovered before.
//
// Environment: PSMFS_SEED repeats a run; PSMFS_STRESS scales the number of
// iterations (default 1 = 5 iterations).
#include <dirent.h>
#include <doctest/doctest.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "tests/common/crash_journal.h"
#include "tests/common/mount_fixture.h"
#include "tests/common/psm_test_util.h"

using namespace psm::testutil;
using psm::test::MountedVolume;

namespace {

constexpr int kDirs = 4;

std::string FilePath(const std::string& root, int dir, uint64_t id) {
  return root + "/w" + std::to_string(dir) + "/" + std::to_string(id);
}

class Journal {
 public:
  explicit Journal(const std::string& path) : fd_(open(path.c_str(), O_WRONLY | O_APPEND)) {}
  ~Journal() { close(fd_); }
  void Add(const std::string& rec) {
    std::string l = rec + "\n";
    if (write(fd_, l.data(), l.size()) != static_cast<ssize_t>(l.size()) || fdatasync(fd_) != 0) {
      _exit(3);
    }
  }

 private:
  int fd_;
};

struct LiveFile {
  uint64_t id;
  int dir;
  int fd;
  uint64_t len;
};

// The child: writes until a call fails (the daemon is gone) or time is up.
// Exit 0 = stopped by an error of the mount, as expected.
[[noreturn]] void Workload(const std::string& root, const std::string& journal_path, uint64_t seed,
                           uint64_t first_id) {
  std::mt19937_64 rng(seed);
  auto rnd = [&](uint64_t n) { return rng() % n; };
  Journal journal(journal_path);
  std::vector<LiveFile> files;
  uint64_t next_id = first_id;
  std::vector<char> buf(1 << 20);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  // A failure is expected once the daemon is dead: ENOTCONN/ECONNABORTED
  // from the dead connection, or anything once the lazy unmount has
  // uncovered the empty directory below the mount point.
  auto fail = [&](int line) {
    int e = errno;
    struct statfs sf;
    bool still_fuse =
        statfs(root.c_str(), &sf) == 0 && sf.f_type == 0x65735546;  // FUSE_SUPER_MAGIC
    if (e == ENOTCONN || e == ECONNABORTED || !still_fuse) _exit(0);
    std::fprintf(stderr, "workload: the call at crash_test.cc:%d failed on a live mount: %s\n",
                 line, std::strerror(e));
    _exit(4);
  };
  while (std::chrono::steady_clock::now() < deadline) {
    uint64_t op = rnd(100);
    if (files.empty() || (op < 10 && files.size() < 12)) {
      LiveFile f{next_id++, static_cast<int>(rnd(kDirs)), -1, 0};
      f.fd = open(FilePath(root, f.dir, f.id).c_str(), O_CREAT | O_RDWR | O_EXCL, 0644);
      if (f.fd < 0) fail(__LINE__);
      files.push_back(f);
      continue;
    }
    LiveFile& f = files[rnd(files.size())];
    if (op < 55) {  // append 8 B .. 1 MiB of pattern
      size_t n = 8 * (1 + rnd(rnd(4) == 0 ? (1 << 17) : 512));
      FillPattern(f.id, f.len, buf.data(), n);
      if (pwrite(f.fd, buf.data(), n, static_cast<off_t>(f.len)) != static_cast<ssize_t>(n)) {
        fail(__LINE__);
      }
      f.len += n;
    } else if (op < 65 && f.len > 0) {  // rewrite a range in place, same bytes
      uint64_t off = 8 * rnd(f.len / 8 + 1);
      size_t n = std::min<uint64_t>(f.len - off, 8 * (1 + rnd(16384)));
      FillPattern(f.id, off, buf.data(), n);
      if (pwrite(f.fd, buf.data(), n, static_cast<off_t>(off)) != static_cast<ssize_t>(n))
        fail(__LINE__);
    } else if (op < 80) {  // make it durable and say so
      uint64_t len = f.len;
      if ((rnd(2) ? fsync(f.fd) : fdatasync(f.fd)) != 0) fail(__LINE__);
      journal.Add("S " + std::to_string(f.id) + " " + std::to_string(len) + " " +
                  std::to_string(f.dir));
    } else if (op < 86) {  // move to another directory (the fd stays valid)
      int to = static_cast<int>(rnd(kDirs));
      if (to == f.dir) continue;
      journal.Add("M " + std::to_string(f.id) + " " + std::to_string(f.dir) + " " +
                  std::to_string(to));
      if (rename(FilePath(root, f.dir, f.id).c_str(), FilePath(root, to, f.id).c_str()) != 0) {
        fail(__LINE__);
      }
      f.dir = to;
    } else if (op < 92 || f.len > (8u << 20)) {  // retire: close, sometimes delete
      bool del = rnd(3) == 0 || f.len > (8u << 20);
      if (del) {
        journal.Add("D " + std::to_string(f.id));
        if (unlink(FilePath(root, f.dir, f.id).c_str()) != 0) fail(__LINE__);
      }
      if (close(f.fd) != 0) fail(__LINE__);
      f = files.back();
      files.pop_back();
    }
  }
  _exit(0);
}

// Every file under root/w*: pattern or zeros; every journaled fsync: kept.
// `journal` is the state the files must honour; files it does not know may
// exist (created, never fsynced) but must hold their own pattern too.
// `live` (for snapshots) is the live tree, searched to explain a missing file.
void VerifyTree(const std::string& root, const std::map<uint64_t, JournalFile>& journal,
                const std::string& what, const std::string& live = "") {
  std::map<uint64_t, int> found;  // id -> how many directories hold it
  for (int d = 0; d < kDirs; d++) {
    std::string dir = root + "/w" + std::to_string(d);
    DIR* dp = opendir(dir.c_str());
    INFO(what << ": opendir " << dir << ": " << std::strerror(errno));
    REQUIRE(dp != nullptr);
    while (struct dirent* e = readdir(dp)) {
      if (e->d_name[0] == '.') continue;
      uint64_t id = std::strtoull(e->d_name, nullptr, 10);
      found[id]++;
      auto it = journal.find(id);
      uint64_t min_len = 0;
      if (it != journal.end() && !it->second.deleted) min_len = it->second.synced_len;
      std::string path = dir + "/" + e->d_name;
      std::string err = VerifyPatternFile(path, id, min_len);
      CHECK_MESSAGE(err.empty(), what << ": " << err);
    }
    closedir(dp);
  }
  for (const auto& [id, f] : journal) {
    if (f.deleted || !f.synced) continue;  // never fsynced: may be lost
    if (found[id] == 1) continue;
    std::string where;
    for (int d = 0; !live.empty() && d < kDirs; d++) {
      struct stat st;
      if (stat(FilePath(live, d, id).c_str(), &st) == 0) {
        where += " live tree has it in w" + std::to_string(d) + " (size " +
                 std::to_string(st.st_size) + ");";
      }
    }
    FAIL_CHECK(what << ": file " << id << " fsynced with " << f.synced_len << " bytes in w" << f.dir
                    << (f.alt_dir >= 0 ? " (or w" + std::to_string(f.alt_dir) + ")" : "")
                    << " is missing;" << where);
  }
  for (const auto& [id, n] : found) {
    CHECK_MESSAGE(n <= 1, what << ": file " << id << " is in " << n << " directories");
  }
}

}  // namespace

TEST_CASE("SIGKILL of the daemon: fsynced data survives, nothing foreign appears, fsck clean") {
  const uint64_t seed = SeedFromEnv("crash_test", 77001);
  const int iterations = std::max(1, static_cast<int>(5 * StressFromEnv()));
  std::mt19937_64 rng(seed);
  auto mv = MountedVolume::Create("8G");
  const std::string journal_path = mv->dir + "/journal";  // outside the mount
  REQUIRE(close(open(journal_path.c_str(), O_CREAT | O_WRONLY, 0644)) == 0);
  for (int d = 0; d < kDirs; d++)
    REQUIRE(mkdir(mv->Path("w" + std::to_string(d)).c_str(), 0755) == 0);
  // The directories themselves must survive the first kill.
  int dfd = open(mv->mnt.c_str(), O_RDONLY | O_DIRECTORY);
  REQUIRE(dfd >= 0);
  CHECK(fsync(dfd) == 0);
  close(dfd);
  // Snapshot name -> the journal as it stood when the snapshot was taken.
  std::map<std::string, std::map<uint64_t, JournalFile>> snapshots;

  for (int it = 0; it < iterations; it++) {
    CAPTURE(it);
    if (it > 0) REQUIRE(mv->Remount());
    fflush(nullptr);
    pid_t child = fork();
    if (child == 0) Workload(mv->mnt, journal_path, rng(), 1 + it * 1000000ull);
    // Let it run for 0.3 .. 2.5 s, maybe take a snapshot meanwhile (the kill
    // may land while the snapshot is being made), then kill the daemon.
    auto run_ms = 300 + rng() % 2200;
    bool snap = rng() % 2 == 0;
    auto start = std::chrono::steady_clock::now();
    std::string snap_name = "crash" + std::to_string(it);
    std::map<uint64_t, JournalFile> snap_state;
    pid_t snapper = -1;
    if (snap) {
      // A third of them start right before the kill, so that it lands
      // while the snapshot is being made.
      auto at_ms = rng() % 3 == 0 ? run_ms - rng() % 20 : rng() % run_ms;
      std::this_thread::sleep_for(std::chrono::milliseconds(at_ms));
      snap_state = ParseJournal(ReadFileOrEmpty(journal_path));
      fflush(nullptr);
      snapper = fork();
      if (snapper == 0) {
        _exit(psm::test::RunProgram(
                  {psm::test::BinDir() + "/psmctl", "snapshot", "create", mv->mnt, snap_name})
                      .ok()
                  ? 0
                  : 1);
      }
    }
    // A file may vanish from the snapshot if it was unlinked after the
    // journal was read but before the snapshot was taken: whatever the
    // journal says was deleted by the time psmctl returned (or the kill)
    // is optional in the snapshot.
    bool snap_acked = false;
    auto deadline = start + std::chrono::milliseconds(run_ms);
    while (snapper > 0 && std::chrono::steady_clock::now() < deadline) {
      int st = 0;
      if (waitpid(snapper, &st, WNOHANG) == snapper) {
        snap_acked = WIFEXITED(st) && WEXITSTATUS(st) == 0;
        snapper = -1;
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    if (snap) {
      for (const auto& [id, f] : ParseJournal(ReadFileOrEmpty(journal_path))) {
        if (f.deleted && snap_state.count(id)) snap_state[id].deleted = true;
      }
    }
    std::this_thread::sleep_until(deadline);
    REQUIRE(mv->Alive());  // it must not have died on its own
    REQUIRE(mv->Kill9());  // SIGKILL, reap, fusermount3 -uz
    int status = 0;
    for (int i = 0; i < 3000 && waitpid(child, &status, WNOHANG) == 0; i++) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    if (waitpid(child, &status, WNOHANG) == 0) {
      kill(child, SIGKILL);
      waitpid(child, &status, 0);
      FAIL_CHECK("the workload hung on the dead mount for 30 s");
    }
    CHECK_MESSAGE(WIFEXITED(status), "workload status " << status);
    CHECK_MESSAGE(WEXITSTATUS(status) == 0,
                  "workload failed unexpectedly: exit " << WEXITSTATUS(status));
    if (snapper > 0) {  // interrupted by the kill: it may or may not exist
      int st = 0;
      waitpid(snapper, &st, 0);
      snap_acked = WIFEXITED(st) && WEXITSTATUS(st) == 0;
    }

    // Failover: the volume's holder is dead; mounting must just work.
    REQUIRE(mv->Remount());
    const auto journal = ParseJournal(ReadFileOrEmpty(journal_path));
    uint64_t synced = 0;
    for (const auto& [id, f] : journal) synced += f.deleted ? 0 : f.synced_len;
    const std::string snap_note =
        snap ? (snap_acked ? ", snapshot made" : ", snapshot not confirmed") : "";
    MESSAGE("kill " << it << " after " << run_ms << " ms" << snap_note << "; journal: "
                    << journal.size() << " files, " << synced << " fsynced bytes to check");
    VerifyTree(mv->mnt, journal, "live tree after kill " + std::to_string(it));
    // A snapshot that psmctl confirmed must exist; one the kill interrupted
    // may exist. Either way, what exists must be right.
    struct stat st;
    bool snap_exists = snap && stat(mv->Path(".snapshots/" + snap_name).c_str(), &st) == 0;
    if (snap_acked) CHECK_MESSAGE(snap_exists, "confirmed snapshot " << snap_name << " is gone");
    if (snap_exists) snapshots[snap_name] = snap_state;
    for (const auto& [name, state] : snapshots) {
      VerifyTree(mv->Path(".snapshots/" + name), state, "snapshot " + name, mv->mnt);
    }
    REQUIRE(mv->Unmount());
    std::string report;
    bool clean = FsckClean(*mv, &report);
    INFO(report);
    REQUIRE(clean);
  }
}
