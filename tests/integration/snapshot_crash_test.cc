// SIGKILL of the daemon while snapshots are created, deleted and reclaimed
// under heavy writes (issue #3, crash tests).
//
// Each iteration mounts the volume (carried over from the last one) and
// runs a child process that writes and fsyncs files, takes snapshots with
// `mkdir .snapshots/NAME`, deletes older ones with `rmdir` (their space is
// exclusive: the files they hold were unlinked, so the kill often lands in
// the middle of a reclaim), journaling each step outside the mount with
// fdatasync. The daemon gets SIGKILL after 0.3-1.5 s; the volume is mounted
// again (failover). Then:
//   * every snapshot whose mkdir returned is there, unless its rmdir began;
//     every snapshot whose rmdir returned is gone; the ones in flight are
//     wholly present or wholly absent: a present snapshot holds every file
//     fsynced before its mkdir began, byte for byte;
//   * the reclaim interrupted by the kill resumes and finishes;
//   * after a clean unmount, psmctl fsck is clean.
// At the end every snapshot and file is deleted: the free space equals a
// freshly formatted volume's (no leaked block once reclaim finished).
//
// PSMFS_SEED repeats a run; PSMFS_STRESS scales the iterations (default 4).
#include <doctest/doctest.h>
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>

#include "fs/control_protocol.h"
#include "tests/common/mount_fixture.h"
#include "tests/common/psm_test_util.h"

using namespace psm::testutil;
using psm::test::MountedVolume;

namespace {

std::string Content(int k) {
  std::string s(4096 * (1 + k % 97) + k % 13, '\0');
  uint32_t x = k * 2654435761u + 3;
  for (auto& c : s) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    c = static_cast<char>(x);
  }
  return s;
}

std::string ReadAll(const std::string& p) {
  int fd = open(p.c_str(), O_RDONLY);
  if (fd < 0) return "<" + std::string(strerror(errno)) + ">";
  std::string out;
  char buf[1 << 16];
  ssize_t n;
  while ((n = read(fd, buf, sizeof buf)) > 0) out.append(buf, n);
  close(fd);
  return out;
}

bool Exists(const std::string& p) {
  struct stat st;
  return lstat(p.c_str(), &st) == 0;
}

// The child's workload; journals to `journal` and never returns.
[[noreturn]] void Workload(const std::string& mnt, const std::string& journal, int first,
                           uint64_t seed) {
  int jfd = open(journal.c_str(), O_WRONLY | O_APPEND);
  auto J = [&](const std::string& rec) {
    std::string l = rec + "\n";
    if (write(jfd, l.data(), l.size()) != static_cast<ssize_t>(l.size()) || fdatasync(jfd) != 0) {
      _exit(3);
    }
  };
  std::mt19937_64 rng(seed);
  std::vector<std::string> snaps;
  for (int k = first;; ++k) {
    // A file, fsynced.
    std::string p = mnt + "/d/f" + std::to_string(k);
    int fd = open(p.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) _exit(0);
    std::string c = Content(k);
    if (write(fd, c.data(), c.size()) != static_cast<ssize_t>(c.size()) || fsync(fd) != 0) _exit(0);
    close(fd);
    J("file " + std::to_string(k));
    // Heavy writes that become exclusive to the next snapshot.
    std::string big = mnt + "/d/big";
    fd = open(big.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) _exit(0);
    std::string junk(1 << 20, static_cast<char>(k));
    for (int i = 0; i < 4; ++i) {
      if (write(fd, junk.data(), junk.size()) < 0) _exit(0);
    }
    close(fd);
    if (rng() % 2) {
      std::string name = "c" + std::to_string(k);
      J("creating " + name);
      if (mkdir((mnt + "/.snapshots/" + name).c_str(), 0755) != 0) _exit(0);
      J("created " + name);
      snaps.push_back(name);
    }
    if (unlink(big.c_str()) != 0) _exit(0);
    if (k % 3 == 0) {  // unlink an old file: only snapshots hold it now
      std::string old = mnt + "/d/f" + std::to_string(k - 2);
      J("unlinking " + std::to_string(k - 2));
      if (unlink(old.c_str()) != 0 && errno != ENOENT) _exit(0);
    }
    if (snaps.size() > 3 && rng() % 2) {
      size_t i = rng() % (snaps.size() - 1);
      std::string name = snaps[i];
      snaps.erase(snaps.begin() + i);
      J("deleting " + name);
      if (rmdir((mnt + "/.snapshots/" + name).c_str()) != 0) _exit(0);
      J("deleted " + name);
    }
  }
}

psm::Json Status(const std::string& mnt) {
  auto r = psm::test::RunProgram({psm::test::BinDir() + "/psmctl", "status", mnt, "--json"});
  REQUIRE_MESSAGE(r.ok(), r.output);
  auto j = psm::Json::Parse(r.output);
  REQUIRE(j.ok());
  return j.value();
}

void WaitReclaimed(const std::string& mnt) {
  for (int i = 0; i < 600 && Status(mnt).GetUint("pending_reclaim") > 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  CHECK(Status(mnt).GetUint("pending_reclaim") == 0);
}

}  // namespace

TEST_CASE("SIGKILL during snapshot create, delete and reclaim under heavy writes") {
  const uint64_t seed = SeedFromEnv("snapshot_crash", 777);
  const int iterations = static_cast<int>(4 * StressFromEnv());
  auto mv = MountedVolume::Create("512M");
  struct statvfs sv;
  REQUIRE(statvfs(mv->mnt.c_str(), &sv) == 0);
  const uint64_t free_fresh = sv.f_bfree;
  REQUIRE(mkdir(mv->Path("d").c_str(), 0755) == 0);
  const std::string journal = mv->dir + "/journal";
  REQUIRE(close(open(journal.c_str(), O_CREAT | O_WRONLY, 0644)) == 0);
  std::mt19937_64 rng(seed);
  int next_k = 0;
  for (int it = 0; it < iterations; ++it) {
    pid_t child = fork();
    if (child == 0) Workload(mv->mnt, journal, next_k, seed + it);
    std::this_thread::sleep_for(std::chrono::milliseconds(300 + rng() % 1200));
    mv->Kill9();
    kill(child, SIGKILL);
    waitpid(child, nullptr, 0);
    REQUIRE(mv->Remount());

    // Replay the journal: what must be there, what may be.
    std::map<std::string, std::string> snap_state;  // name -> creating/created/deleting/deleted
    std::map<std::string, std::set<int>> snap_files;  // files a snapshot must hold
    std::set<int> files;                              // fsynced and not being unlinked
    std::istringstream in(ReadFileOrEmpty(journal));
    std::string op, arg;
    while (in >> op >> arg) {
      if (op == "file") {
        files.insert(std::stoi(arg));
        next_k = std::max(next_k, std::stoi(arg) + 1);
      } else if (op == "unlinking") {
        files.erase(std::stoi(arg));
      } else if (op == "creating") {
        snap_state[arg] = op;
        snap_files[arg] = files;
      } else {
        snap_state[arg] = op;
      }
    }
    next_k += 10;  // the file being written at the kill may be half there
    int present = 0;
    for (const auto& [name, state] : snap_state) {
      const std::string root = mv->Path(".snapshots/" + name);
      const bool there = Exists(root);
      if (state == "created") CHECK_MESSAGE(there, name << " was confirmed but is missing");
      if (state == "deleted") CHECK_MESSAGE(!there, name << " was deleted but is back");
      if (!there) continue;
      ++present;
      for (int k : snap_files[name]) {
        CHECK_MESSAGE(ReadAll(root + "/d/f" + std::to_string(k)) == Content(k),
                      name << " f" << k << " (iteration " << it << ")");
      }
    }
    MESSAGE("iteration " << it << ": " << snap_state.size() << " snapshots journaled, " << present
                         << " present");
    // Settle the snapshots that were in flight: append what happened.
    {
      int fd = open(journal.c_str(), O_WRONLY | O_APPEND);
      for (const auto& [name, state] : snap_state) {
        if (state == "deleting" || state == "creating") {
          std::string l = std::string(Exists(mv->Path(".snapshots/" + name)) ? "created " : "deleted ") +
                          name + "\n";
          CHECK(write(fd, l.data(), l.size()) == static_cast<ssize_t>(l.size()));
        }
      }
      close(fd);
    }
    WaitReclaimed(mv->mnt);
    REQUIRE(mv->Unmount());
    std::string report;
    CHECK_MESSAGE(FsckClean(*mv, &report), report);
    REQUIRE(mv->Remount());
  }
  // Everything deleted: a fresh volume's free space.
  DIR* d = opendir(mv->Path(".snapshots").c_str());
  REQUIRE(d);
  std::vector<std::string> names;
  while (auto* e = readdir(d)) {
    if (e->d_name[0] != '.') names.push_back(e->d_name);
  }
  closedir(d);
  for (const auto& n : names) CHECK(rmdir(mv->Path(".snapshots/" + n).c_str()) == 0);
  d = opendir(mv->Path("d").c_str());
  REQUIRE(d);
  names.clear();
  while (auto* e = readdir(d)) {
    if (e->d_name[0] != '.') names.push_back(e->d_name);
  }
  closedir(d);
  for (const auto& n : names) CHECK(unlink(mv->Path("d/" + n).c_str()) == 0);
  REQUIRE(rmdir(mv->Path("d").c_str()) == 0);
  WaitReclaimed(mv->mnt);
  sync();
  REQUIRE(statvfs(mv->mnt.c_str(), &sv) == 0);
  CHECK(sv.f_bfree == free_fresh);
  REQUIRE(mv->Unmount());
  std::string report;
  CHECK_MESSAGE(FsckClean(*mv, &report), report);
}
