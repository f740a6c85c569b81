// SIGKILL of the daemon while snapshots are created, deleted and reclaimed
// under heavy writes (issue #3, crash tests).
//
// Each iteration mounts the volume (carried over from the last one) and
// runs a child process that writes and fsyncs files, takes snapshots with
// `mkdir .snapshots/NAME`, deletes older ones with `rmdir` (their space is
// exclusive: the files they hold were unlinked, so the kill can land in the
// middle of a reclaim), journaling each step outside the mount with
// fdatasync. The child is sequential, so the journal is a complete model of
// the live tree at every snapshot: d/ holds exactly the fsynced files not
// unlinked, plus d/big (4 MiB of the byte k for snapshot cK). The child
// stops at its first failed call: "stopped" (exit 10) when the daemon is
// gone, "error" (exit 20) for anything else — a failure of the test.
// After 0.3-1.5 s the test checks that the child and the daemon both still
// run (otherwise there is nothing to test and it fails), SIGKILLs the
// daemon, waits for the child to stop on the dead mount, and mounts the
// volume again (failover). Then, from the journal alone:
//   * every fsynced file not being unlinked is in the live tree with
//     exactly its bytes; any other file there is a journaled one (exact), or
//     the one file being written at the kill (its own bytes or zeros); d/big
//     is one incarnation (one byte value or zeros);
//   * every snapshot whose mkdir returned is there, unless its rmdir began;
//     every snapshot whose rmdir returned is gone; the ones in flight are
//     wholly present or wholly absent; no snapshot the journal does not
//     know; a present snapshot holds exactly the tree of its mkdir (names,
//     every byte);
//   * the reclaim interrupted by the kill resumes and finishes;
//   * after a clean unmount, psmctl fsck is clean.
// What the kill left undecided (leftover files, in-flight snapshots) is
// settled and journaled before the next iteration, and all but the newest
// 12 snapshots are deleted (the volume must not fill up). At the end every
// snapshot and file is deleted: the free space equals a freshly formatted
// volume's (no leaked block once reclaim finished).
//
// PSMFS_SEED repeats a run; PSMFS_STRESS scales the iterations (default 4).
#include <doctest/doctest.h>
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/statfs.h>
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
#include <vector>

#include "fs/control/control_protocol.h"
#include "tests/common/mount_fixture.h"
#include "tests/common/psm_test_util.h"

using namespace psm::testutil;
using psm::test::MountedVolume;

namespace {

constexpr int kExitDaemonGone = 10;  // the workload stopped on the dead mount
constexpr int kExitError = 20;       // the workload failed on a live mount
constexpr size_t kBigBytes = 4u << 20;

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

// d/big as the workload writes it in step k (snapshot cK sees this one).
std::string BigContent(int k) { return std::string(kBigBytes, static_cast<char>(k)); }

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

// Names in a directory, without . and ..; "<error>" when it cannot be read.
std::set<std::string> List(const std::string& dir) {
  std::set<std::string> names;
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return {"<opendir: " + std::string(strerror(errno)) + ">"};
  while (auto* e = readdir(d)) {
    if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) names.insert(e->d_name);
  }
  closedir(d);
  return names;
}

std::string Join(const std::set<std::string>& s) {
  std::string out;
  for (const auto& x : s) out += (out.empty() ? "" : " ") + x;
  return out;
}

// "" when `got` is a crash-cut version of `want`: no longer, and every byte
// its own or zero (never another file's, never stale); else what differs.
std::string OwnBytesOrZero(const std::string& got, const std::string& want) {
  if (got.size() > want.size()) {
    return "size " + std::to_string(got.size()) + " > " + std::to_string(want.size());
  }
  for (size_t i = 0; i < got.size(); ++i) {
    if (got[i] != want[i] && got[i] != 0) return "foreign byte at offset " + std::to_string(i);
  }
  return "";
}

// The child's workload; journals to `journal` and never returns. It stops
// at its first failed call: exit kExitDaemonGone (journal "stopped LINE
// ERRNO") when the mount is dead, kExitError ("error LINE ERRNO") otherwise.
[[noreturn]] void Workload(const std::string& mnt, const std::string& journal, int first,
                           uint64_t seed) {
  int jfd = open(journal.c_str(), O_WRONLY | O_APPEND);
  auto J = [&](const std::string& rec) {
    std::string l = rec + "\n";
    if (write(jfd, l.data(), l.size()) != static_cast<ssize_t>(l.size()) || fdatasync(jfd) != 0) {
      _exit(3);
    }
  };
  // ENOTCONN/ECONNABORTED come from the dead connection; once the lazy
  // unmount has uncovered the empty directory below the mount point, any
  // error (ENOENT) means the same.
  auto fail = [&](int line) {
    const int e = errno;
    struct statfs sf;
    const bool still_fuse =
        statfs(mnt.c_str(), &sf) == 0 && sf.f_type == 0x65735546;  // FUSE_SUPER_MAGIC
    const bool gone = e == ENOTCONN || e == ECONNABORTED || !still_fuse;
    J(std::string(gone ? "stopped " : "error ") + std::to_string(line) + " " + strerror(e));
    _exit(gone ? kExitDaemonGone : kExitError);
  };
  std::mt19937_64 rng(seed);
  std::vector<std::string> snaps;
  const std::string big = mnt + "/d/big";
  const std::string junk(1 << 20, '\0');
  for (int k = first;; ++k) {
    // A file, fsynced.
    std::string p = mnt + "/d/f" + std::to_string(k);
    int fd = open(p.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) fail(__LINE__);
    std::string c = Content(k);
    if (write(fd, c.data(), c.size()) != static_cast<ssize_t>(c.size())) fail(__LINE__);
    if (fsync(fd) != 0) fail(__LINE__);
    if (close(fd) != 0) fail(__LINE__);
    J("file " + std::to_string(k));
    // Heavy writes that become exclusive to the next snapshot.
    fd = open(big.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) fail(__LINE__);
    const std::string b = BigContent(k).substr(0, 1 << 20);
    for (size_t i = 0; i < kBigBytes / b.size(); ++i) {
      if (write(fd, b.data(), b.size()) != static_cast<ssize_t>(b.size())) fail(__LINE__);
    }
    if (close(fd) != 0) fail(__LINE__);
    if (rng() % 2) {
      std::string name = "c" + std::to_string(k);
      J("creating " + name);
      if (mkdir((mnt + "/.snapshots/" + name).c_str(), 0755) != 0) fail(__LINE__);
      J("created " + name);
      snaps.push_back(name);
    }
    if (unlink(big.c_str()) != 0) fail(__LINE__);
    if (k % 3 == 0) {  // unlink an old file: only snapshots hold it now
      const int old = k - 2;
      J("unlinking " + std::to_string(old));
      // Files below `first` were never made (the test leaves a gap).
      if (unlink((mnt + "/d/f" + std::to_string(old)).c_str()) != 0 &&
          !(errno == ENOENT && old < first)) {
        fail(__LINE__);
      }
    }
    if (snaps.size() > 3 && rng() % 2) {
      size_t i = rng() % (snaps.size() - 1);
      std::string name = snaps[i];
      snaps.erase(snaps.begin() + i);
      J("deleting " + name);
      if (rmdir((mnt + "/.snapshots/" + name).c_str()) != 0) fail(__LINE__);
      J("deleted " + name);
    }
  }
}

// What the journal says (tests/integration/snapshot_crash_test.cc's model).
struct Model {
  std::map<std::string, std::string> snap_state;    // name -> creating/created/deleting/deleted
  std::map<std::string, std::set<int>> snap_files;  // d/fK in the live tree at its mkdir
  std::set<int> files;      // fsynced and not being unlinked: must be there, exact
  std::set<int> journaled;  // every file ever fsynced (present only with its exact bytes)
  std::vector<std::string> stops;   // "stopped ..." records
  std::vector<std::string> errors;  // "error ..." records
  int next_k = 0;
};

Model ReadJournal(const std::string& journal) {
  Model m;
  std::istringstream in(ReadFileOrEmpty(journal));
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    std::string op, arg;
    ls >> op >> arg;
    if (op == "file") {
      const int k = std::stoi(arg);
      m.files.insert(k);
      m.journaled.insert(k);
      m.next_k = std::max(m.next_k, k + 1);
    } else if (op == "unlinking") {
      m.files.erase(std::stoi(arg));
    } else if (op == "creating") {
      m.snap_state[arg] = op;
      m.snap_files[arg] = m.files;
    } else if (op == "created" || op == "deleting" || op == "deleted") {
      m.snap_state[arg] = op;
    } else if (op == "stopped") {
      m.stops.push_back(line);
    } else if (op == "error") {
      m.errors.push_back(line);
    } else {
      FAIL_CHECK("unknown journal record '" << line << "'");
    }
  }
  return m;
}

std::string Tail(const std::vector<std::string>& v) { return v.empty() ? "none" : v.back(); }

// A present snapshot holds exactly the live tree of its mkdir: / = {d},
// d = the model's files + big, every byte.
void CheckSnapshot(const MountedVolume& mv, const Model& m, const std::string& name, int it) {
  const std::string root = mv.Path(".snapshots/" + name);
  INFO("snapshot " << name << " (iteration " << it << ")");
  CHECK(Join(List(root)) == "d");
  std::set<std::string> want = {"big"};
  for (int k : m.snap_files.at(name)) want.insert("f" + std::to_string(k));
  CHECK(Join(List(root + "/d")) == Join(want));
  for (int k : m.snap_files.at(name)) {
    CHECK_MESSAGE(ReadAll(root + "/d/f" + std::to_string(k)) == Content(k), "f" << k);
  }
  CHECK_MESSAGE(ReadAll(root + "/d/big") == BigContent(std::stoi(name.substr(1))), "big");
}

// The live tree after a kill: every fsynced file not being unlinked is
// there with exactly its bytes; a journaled file that is there (an unlink
// in flight or not yet durable) has exactly its bytes; at most one file the
// journal does not know (the one being written: its own bytes or zeros);
// big, if there, is one incarnation. Returns the names to remove so that
// the live tree is exactly the model again.
std::vector<std::string> CheckLive(const MountedVolume& mv, const Model& m, int first, int it) {
  INFO("live tree after kill " << it);
  std::vector<std::string> leftovers;
  const std::set<std::string> names = List(mv.Path("d"));
  for (int k : m.files) {
    const std::string n = "f" + std::to_string(k);
    CHECK_MESSAGE(names.count(n) == 1, n << " was fsynced but is missing");
  }
  int unknown = 0;
  for (const std::string& n : names) {
    const std::string path = mv.Path("d/" + n);
    if (n == "big") {
      const std::string got = ReadAll(path);
      char seen = 0;
      size_t bad = std::string::npos;
      for (size_t i = 0; i < got.size() && bad == std::string::npos; ++i) {
        if (got[i] == 0) continue;
        if (seen == 0) seen = got[i];
        if (got[i] != seen) bad = i;
      }
      CHECK_MESSAGE(got.size() <= kBigBytes, "big has " << got.size() << " bytes");
      CHECK_MESSAGE(bad == std::string::npos, "big mixes two incarnations at offset " << bad);
      leftovers.push_back(n);
      continue;
    }
    int k = -1;
    if (n.size() > 1 && n[0] == 'f' && n.find_first_not_of("0123456789", 1) == std::string::npos) {
      k = std::stoi(n.substr(1));
    }
    if (k < 0) {
      FAIL_CHECK("unexpected name d/" << n);
      leftovers.push_back(n);
      continue;
    }
    if (m.journaled.count(k)) {
      CHECK_MESSAGE(ReadAll(path) == Content(k), n << " differs from its fsynced bytes");
      if (!m.files.count(k)) leftovers.push_back(n);  // its unlink was in flight
      continue;
    }
    // Not fsynced: only the file of this iteration being written at the kill.
    ++unknown;
    CHECK_MESSAGE(k >= first, n << " is from an earlier iteration but was never journaled");
    const std::string err = OwnBytesOrZero(ReadAll(path), Content(k));
    CHECK_MESSAGE(err.empty(), n << ": " << err);
    leftovers.push_back(n);
  }
  CHECK_MESSAGE(unknown <= 1, unknown << " files the journal does not know: " << Join(names));
  return leftovers;
}

psm::Json Status(const std::string& mnt) {
  auto r = psm::test::RunProgram({psm::test::BinDir() + "/psmctl", "status", mnt, "--json"});
  REQUIRE_MESSAGE(r.ok(), r.output);
  auto j = psm::Json::Parse(r.output);
  REQUIRE(j.ok());
  return j.value();
}

// Polls until no snapshot waits for reclaim (60 s at most); fails saying
// what is left.
void WaitReclaimed(const std::string& mnt) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  psm::Json s = Status(mnt);
  while (s.GetUint("pending_reclaim") > 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    s = Status(mnt);
  }
  CHECK_MESSAGE(s.GetUint("pending_reclaim") == 0,
                "reclaim did not finish within 60 s: " << s.GetUint("pending_reclaim")
                                                        << " snapshots pending");
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
  const std::string journal = mv->dir + "/journal";  // outside the mount
  REQUIRE(close(open(journal.c_str(), O_CREAT | O_WRONLY, 0644)) == 0);
  std::mt19937_64 rng(seed);
  int next_k = 0;
  for (int it = 0; it < iterations; ++it) {
    CAPTURE(it);
    const int first = next_k;
    const size_t stops_before = ReadJournal(journal).stops.size();
    fflush(nullptr);
    pid_t child = fork();
    if (child == 0) Workload(mv->mnt, journal, first, seed + it);
    REQUIRE(child > 0);
    std::this_thread::sleep_for(std::chrono::milliseconds(300 + rng() % 1200));
    // Both must still run, or the kill below tests nothing.
    int status = 0;
    if (waitpid(child, &status, WNOHANG) != 0) {
      FAIL("the workload ended before the kill (status " << status << "; last error: "
                                                          << Tail(ReadJournal(journal).errors)
                                                          << ")");
    }
    REQUIRE(mv->Kill9());  // fails if the daemon had already died
    // The workload stops by itself at its next call on the dead mount.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    pid_t r = 0;
    while ((r = waitpid(child, &status, WNOHANG)) == 0 &&
           std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    if (r == 0) {
      kill(child, SIGKILL);
      waitpid(child, &status, 0);
      FAIL_CHECK("the workload hung on the dead mount for 30 s");
    }
    Model m = ReadJournal(journal);
    CHECK_MESSAGE(m.errors.empty(), "the workload failed on a live mount: " << Tail(m.errors));
    CHECK_MESSAGE((WIFEXITED(status) && WEXITSTATUS(status) == kExitDaemonGone),
                  "the workload ended with status " << status << " instead of stopping on the "
                                                       "dead mount (exit "
                                                    << kExitDaemonGone << ")");
    CHECK_MESSAGE(m.stops.size() == stops_before + 1, "last stop: " << Tail(m.stops));
    REQUIRE(mv->Remount());

    // The journal, and nothing read back from psmfs, says what must be.
    next_k = m.next_k + 10;  // a gap: the file being written at the kill may be there
    const std::vector<std::string> leftovers = CheckLive(*mv, m, first, it);
    const std::set<std::string> listed = List(mv->Path(".snapshots"));
    for (const std::string& name : listed) {
      CHECK_MESSAGE(m.snap_state.count(name) == 1, "snapshot " << name << " was never made");
    }
    int present = 0, in_flight = 0;
    for (const auto& [name, state] : m.snap_state) {
      const bool there = listed.count(name) == 1;
      CHECK(there == Exists(mv->Path(".snapshots/" + name)));
      if (state == "created") CHECK_MESSAGE(there, name << " was confirmed but is missing");
      if (state == "deleted") CHECK_MESSAGE(!there, name << " was deleted but is back");
      if (state == "creating" || state == "deleting") ++in_flight;
      if (!there) continue;
      ++present;
      CheckSnapshot(*mv, m, name, it);
    }
    MESSAGE("iteration " << it << ": " << m.snap_state.size() << " snapshots journaled, "
                         << present << " present, " << in_flight << " in flight at the kill; "
                         << m.files.size() << " fsynced files checked");
    // Settle what the kill left undecided: the snapshots in flight (journal
    // what happened) and the files outside the model (remove them; the
    // clean unmount below makes that durable). Snapshots of earlier
    // iterations beyond the newest kKeep are deleted (journaled), so that
    // the volume does not fill up at higher PSMFS_STRESS.
    constexpr size_t kKeep = 12;
    {
      int fd = open(journal.c_str(), O_WRONLY | O_APPEND);
      REQUIRE(fd >= 0);
      auto journal_line = [&](const std::string& l) {
        CHECK(write(fd, (l + "\n").data(), l.size() + 1) == static_cast<ssize_t>(l.size() + 1));
      };
      for (const auto& [name, state] : m.snap_state) {
        if (state == "deleting" || state == "creating") {
          journal_line(std::string(listed.count(name) ? "created " : "deleted ") + name);
        }
      }
      std::map<int, std::string> by_age;  // k -> name of every present snapshot
      for (const std::string& name : listed) by_age[std::stoi(name.substr(1))] = name;
      while (by_age.size() > kKeep) {
        const std::string name = by_age.begin()->second;
        by_age.erase(by_age.begin());
        journal_line("deleting " + name);
        CHECK_MESSAGE(rmdir(mv->Path(".snapshots/" + name).c_str()) == 0, name);
        journal_line("deleted " + name);
      }
      close(fd);
    }
    for (const std::string& n : leftovers) CHECK(unlink(mv->Path("d/" + n).c_str()) == 0);
    WaitReclaimed(mv->mnt);
    REQUIRE(mv->Unmount());
    std::string report;
    CHECK_MESSAGE(FsckClean(*mv, &report), report);
    REQUIRE(mv->Remount());
  }
  // Everything deleted: a fresh volume's free space.
  for (const auto& n : List(mv->Path(".snapshots"))) {
    CHECK(rmdir(mv->Path(".snapshots/" + n).c_str()) == 0);
  }
  for (const auto& n : List(mv->Path("d"))) CHECK(unlink(mv->Path("d/" + n).c_str()) == 0);
  REQUIRE(rmdir(mv->Path("d").c_str()) == 0);
  WaitReclaimed(mv->mnt);
  sync();
  REQUIRE(statvfs(mv->mnt.c_str(), &sv) == 0);
  CHECK(sv.f_bfree == free_fresh);
  REQUIRE(mv->Unmount());
  std::string report;
  CHECK_MESSAGE(FsckClean(*mv, &report), report);
}
