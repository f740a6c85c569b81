// Restore to a snapshot through a real mount and the real psmctl (issue #5):
//   * online: after `psmctl restore MNT S` the live tree equals .snapshots/S
//     (names, types, modes, sizes, links, bytes, symlinks, xattrs, mtimes,
//     holes), newer snapshots are untouched, the kernel's caches show the
//     restored tree at once, an fd open across the restore reads the
//     restored content, a new file open across it stays readable through
//     its fd, and a free-space scan runs;
//   * --dry-run counts and changes nothing; --json; errors (unknown name,
//     not mounted, a user without the right) exit non-zero, change nothing;
//   * offline: `psmctl restore VOLUME S` on an unmounted volume; a mounted
//     one refuses a second opener;
//   * fsck is clean after each.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "fs/control_json.h"
#include "tests/common/fuse_files.h"
#include "tests/common/mount_fixture.h"
#include "tests/common/psm_test_util.h"
#include "tests/common/sample_tree.h"
#include "tests/common/tree_compare.h"

using psm::test::BinDir;
using psm::test::MountedVolume;
using psm::test::ProgramResult;
using psm::test::RunProgram;

using psm::testutil::Ctl;
using psm::testutil::Pattern;
using psm::testutil::ReadFile;
using psm::testutil::WriteFile;
using psm::testutil::BuildTree;
using psm::testutil::ChangeTree;
using psm::testutil::Extra;

namespace {

std::string PreadAll(int fd, size_t n) {
  std::string out(n, '\0');
  ssize_t r = ::pread(fd, out.data(), n, 0);
  out.resize(r > 0 ? r : 0);
  return out;
}

std::string Same(const MountedVolume& mv, const std::string& snap) {
  return psm::testutil::SameTree(mv.Path("data"), mv.Path(".snapshots/" + snap + "/data"));
}

psm::Json ParseJson(const std::string& out) {
  auto j = psm::Json::Parse(out);
  REQUIRE_MESSAGE(j.ok(), out);
  return j.value();
}

}  // namespace

TEST_CASE("restore online: the live tree becomes the snapshot; caches, open files, newer snapshots") {
  auto mv = MountedVolume::Create("256M");
  BuildTree(mv->Path("data"));
  ProgramResult r = Ctl({"snapshot", "create", mv->mnt, "s1"});
  REQUIRE_MESSAGE(r.ok(), r.output);
  const std::string d = mv->Path("data");
  // An fd open across the restore on a file that changes, its pages cached.
  int old_fd = ::open((d + "/big").c_str(), O_RDWR);
  REQUIRE(old_fd >= 0);
  ChangeTree(mv->Path("data"));
  CHECK(PreadAll(old_fd, 3 << 20) != Pattern(3 << 20, 99));
  // A file created since, open across the restore.
  int new_fd = ::open((d + "/newdir/new").c_str(), O_RDONLY);
  REQUIRE(new_fd >= 0);
  r = Ctl({"snapshot", "create", mv->mnt, "s2"});
  REQUIRE_MESSAGE(r.ok(), r.output);
  REQUIRE(!Same(*mv, "s1").empty());
  REQUIRE(Same(*mv, "s2").empty());

  // A dry run counts and changes nothing.
  r = Ctl({"restore", mv->mnt, "s1", "--dry-run", "--json"});
  REQUIRE_MESSAGE(r.ok(), r.output);
  psm::Json dry = ParseJson(r.output);
  CHECK(dry.GetBool("dry_run"));
  CHECK(dry.GetUint("created") >= 2);   // f5, f6's entry... the lost files
  CHECK(dry.GetUint("removed") >= 2);   // newdir, newdir/new, the new link
  CHECK(dry.GetUint("changed") >= 3);
  CHECK(Same(*mv, "s2").empty());
  CHECK(ReadFile(d + "/newdir/new") == Pattern(70000, 5));

  // Errors change nothing.
  r = Ctl({"restore", mv->mnt, "nope"});
  CHECK(r.exit_code == 4);
  CHECK(r.output.find("no snapshot named 'nope'") != std::string::npos);
  r = RunProgram({"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                  BinDir() + "/psmctl", "restore", "--no-sync", mv->mnt, "s1"});
  CHECK(r.exit_code != 0);
  CHECK_MESSAGE(r.output.find("ermission") != std::string::npos, r.output);
  CHECK(Same(*mv, "s2").empty());

  r = Ctl({"restore", mv->mnt, "s1", "--json"});
  REQUIRE_MESSAGE(r.ok(), r.output);
  psm::Json done = ParseJson(r.output);
  CHECK_FALSE(done.GetBool("dry_run"));
  CHECK(done.GetUint("created") == dry.GetUint("created"));
  CHECK(done.GetUint("changed") == dry.GetUint("changed"));
  CHECK(done.GetUint("removed") == dry.GetUint("removed"));
  // The kernel shows the restored tree at once: entries, attributes, pages.
  // (CompareTrees: names, types, modes, sizes, links, bytes, targets.)
  std::string diff = psm::testutil::CompareTrees(d, mv->Path(".snapshots/s1/data"));
  CHECK_MESSAGE(diff.empty(), diff);
  for (const char* f : {"sparse", "sub/f3", "link", "sub"}) {
    CHECK(Extra(d + "/" + f) == Extra(mv->Path(".snapshots/s1/data/") + f));
  }
  CHECK(ReadFile(d + "/big") == Pattern(3 << 20, 99));
  CHECK(PreadAll(old_fd, 3 << 20) == Pattern(3 << 20, 99));
  struct stat st;
  CHECK(::stat((d + "/newdir").c_str(), &st) != 0);
  CHECK(errno == ENOENT);
  // The new file lives on through its fd until closed.
  CHECK(PreadAll(new_fd, 70000) == Pattern(70000, 5));
  CHECK(::close(new_fd) == 0);
  // The restored file takes writes like any other.
  CHECK(::pwrite(old_fd, "after", 5, 0) == 5);
  // Its mtime, as the kernel shows it, is the kernel's own until the last
  // close (writeback cache, docs/restore.md); after that, the restored one.
  CHECK(::close(old_fd) == 0);
  CHECK(ReadFile(d + "/big").substr(0, 5) == "after");
  // Newer snapshots survive.
  CHECK(ReadFile(mv->Path(".snapshots/s2/data/newdir/new")) == Pattern(70000, 5));
  CHECK(ReadFile(mv->Path(".snapshots/s2/data/big")).substr(1 << 20, 11) == "overwritten");
  // A rescan of free space started.
  r = Ctl({"status", mv->mnt, "--json"});
  REQUIRE_MESSAGE(r.ok(), r.output);
  const psm::Json status = ParseJson(r.output);  // outlives `scan`, which points into it
  const psm::Json* scan = status.Find("scan");
  REQUIRE(scan != nullptr);
  CHECK(scan->GetString("reason") == "restore");
  // And forward again, to the newer snapshot.
  r = Ctl({"restore", mv->mnt, "s2"});
  REQUIRE_MESSAGE(r.ok(), r.output);
  CHECK(r.output.find("restored snapshot 's2'") != std::string::npos);
  diff = Same(*mv, "s2");
  CHECK_MESSAGE(diff.empty(), diff);

  REQUIRE(mv->Unmount());
  std::string report;
  CHECK_MESSAGE(psm::testutil::FsckClean(*mv, &report), report);
  REQUIRE(mv->Remount());
  diff = Same(*mv, "s2");
  CHECK_MESSAGE(diff.empty(), diff);
}

TEST_CASE("restore offline: an unmounted volume, and a mounted one refuses a second opener") {
  auto mv = MountedVolume::Create("256M");
  BuildTree(mv->Path("data"));
  ProgramResult r = Ctl({"snapshot", "create", mv->mnt, "base"});
  REQUIRE_MESSAGE(r.ok(), r.output);
  ChangeTree(mv->Path("data"));
  // While mounted, the volume directory belongs to the daemon: psmctl
  // restore VOLUME goes through it (the daemon is found by volume path).
  REQUIRE(mv->Unmount());
  r = Ctl({"restore", mv->vol, "base", "--dry-run"});
  REQUIRE_MESSAGE(r.ok(), r.output);
  CHECK(r.output.find("would restore snapshot 'base'") != std::string::npos);
  r = Ctl({"restore", mv->vol, "missing"});
  CHECK(r.exit_code == 4);
  r = Ctl({"restore", mv->vol, "base"});
  REQUIRE_MESSAGE(r.ok(), r.output);
  CHECK(r.output.find("restored snapshot 'base'") != std::string::npos);
  std::string report;
  CHECK_MESSAGE(psm::testutil::FsckClean(*mv, &report), report);
  REQUIRE(mv->Remount());
  std::string diff = Same(*mv, "base");
  CHECK_MESSAGE(diff.empty(), diff);
  // Not a volume at all.
  r = Ctl({"restore", mv->dir + "/nothing-here", "base"});
  CHECK(r.exit_code != 0);
  CHECK(!r.output.empty());
}

TEST_CASE("restore: SIGKILL of the daemon during a restore; the next mount finishes it") {
  const int rounds = 3 * std::max(1, static_cast<int>(psm::testutil::StressFromEnv()));
  auto mv = MountedVolume::Create("512M");
  const std::string d = mv->Path("data");
  REQUIRE(::mkdir(d.c_str(), 0755) == 0);
  for (int i = 0; i < 1500; ++i) WriteFile(d + "/f" + std::to_string(i), Pattern(2000, i));
  ProgramResult r = Ctl({"snapshot", "create", mv->mnt, "s"});
  REQUIRE_MESSAGE(r.ok(), r.output);
  int finished_by_mount = 0;
  for (int round = 0; round < rounds; ++round) {
    CAPTURE(round);
    // Change most files, then remember that state as a snapshot.
    for (int i = 0; i < 1500; i += 1 + round) {
      WriteFile(d + "/f" + std::to_string(i), Pattern(1000, 10000 * (round + 1) + i));
    }
    WriteFile(d + "/new" + std::to_string(round), "new");
    const std::string pre = "pre" + std::to_string(round);
    r = Ctl({"snapshot", "create", mv->mnt, pre});
    REQUIRE_MESSAGE(r.ok(), r.output);
    // Start the restore and kill the daemon while it runs (or just after).
    fflush(nullptr);
    pid_t child = fork();
    if (child == 0) {
      _exit(RunProgram({BinDir() + "/psmctl", "restore", "--quiet", mv->mnt, "s"}).exit_code);
    }
    ::usleep(20000 + 40000 * round);
    mv->Kill9();
    int st = 0;
    ::waitpid(child, &st, 0);
    REQUIRE(mv->Remount());
    const std::string to_s = psm::testutil::CompareTrees(d, mv->Path(".snapshots/s/data"));
    const std::string to_pre =
        psm::testutil::CompareTrees(d, mv->Path(".snapshots/" + pre + "/data"));
    CHECK_MESSAGE((to_s.empty() || to_pre.empty()),
                  "a half-restored tree: vs s: " << to_s << "; vs " << pre << ": " << to_pre);
    if (to_s.empty() && mv->LogText().find("finished the interrupted restore") != std::string::npos) {
      ++finished_by_mount;
    }
    // Either way, a restore now gets there.
    r = Ctl({"restore", mv->mnt, "s"});
    REQUIRE_MESSAGE(r.ok(), r.output);
    CHECK(psm::testutil::CompareTrees(d, mv->Path(".snapshots/s/data")).empty());
    CHECK(psm::testutil::CompareTrees(mv->Path(".snapshots/" + pre + "/data"), d) != "");
  }
  MESSAGE(finished_by_mount << " of " << rounds << " kills were finished by the next mount");
  REQUIRE(mv->Unmount());
  std::string report;
  CHECK_MESSAGE(psm::testutil::FsckClean(*mv, &report), report);
}
