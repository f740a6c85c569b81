// Restore to a snapshot through a real mount and the real psmctl (issue #5):
//   * online: after `psmctl restore MNT S` the live tree equals the model of
//     S — the same sample tree built and changed in a native directory
//     (sample_tree.h; names, types, modes, owners, sizes, links, bytes,
//     symlinks, xattrs, mtimes, holes) — as do the snapshots themselves;
//     newer snapshots are untouched, the kernel's caches show the
//     restored tree at once, an fd open across the restore reads the
//     restored content, a new file open across it stays readable through
//     its fd, and a free-space scan runs;
//   * --dry-run counts and changes nothing; --json; errors (unknown name,
//     not mounted, a user without the right) exit non-zero, change nothing;
//   * offline: `psmctl restore VOLUME S` on an unmounted volume; a mounted
//     one refuses a second opener;
//   * SIGKILL of the daemon during a restore: the next mount shows the
//     snapshot's tree (finishing the restore itself) or, when the kill came
//     before the restore began, the tree before it; checked against native
//     model directories;
//   * fsck is clean after each.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <string>
#include <vector>

#include "cli/client.h"
#include "fs/json/control_json.h"
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
using psm::testutil::MakeSampleModel;
using psm::testutil::SameAs;

namespace {

std::string PreadAll(int fd, size_t n) {
  std::string out(n, '\0');
  ssize_t r = ::pread(fd, out.data(), n, 0);
  out.resize(r > 0 ? r : 0);
  return out;
}

// "" when the live tree and snapshot `snap` are both the model `want`.
std::string Same(const MountedVolume& mv, const std::string& snap,
                 const psm::testutil::TreeManifest& want) {
  const std::string live = SameAs(want, mv.Path("data"));
  const std::string s = SameAs(want, mv.Path(".snapshots/" + snap + "/data"));
  return live.empty() && s.empty() ? "" : "live: " + live + "; " + snap + ": " + s;
}

psm::Json ParseJson(const std::string& out) {
  auto j = psm::Json::Parse(out);
  REQUIRE_MESSAGE(j.ok(), out);
  return j.value();
}

}  // namespace

TEST_CASE("restore online: the live tree becomes the snapshot; caches, open files, newer snapshots") {
  auto mv = MountedVolume::Create("256M");
  const auto model = MakeSampleModel();
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
  std::string diff = SameAs(model.built, mv->Path(".snapshots/s1/data"));
  REQUIRE_MESSAGE(diff.empty(), diff);
  REQUIRE(!SameAs(model.built, d).empty());
  diff = Same(*mv, "s2", model.changed);
  REQUIRE_MESSAGE(diff.empty(), diff);

  // A dry run counts and changes nothing.
  r = Ctl({"restore", mv->mnt, "s1", "--dry-run", "--json"});
  REQUIRE_MESSAGE(r.ok(), r.output);
  psm::Json dry = ParseJson(r.output);
  CHECK(dry.GetBool("dry_run"));
  CHECK(dry.GetUint("created") >= 2);   // f5, f6's entry... the lost files
  CHECK(dry.GetUint("removed") >= 2);   // newdir, newdir/new, the new link
  CHECK(dry.GetUint("changed") >= 3);
  CHECK(Same(*mv, "s2", model.changed).empty());
  CHECK(ReadFile(d + "/newdir/new") == Pattern(70000, 5));

  // Errors change nothing.
  r = Ctl({"restore", mv->mnt, "nope"});
  CHECK(r.exit_code == 4);
  CHECK(r.output.find("no snapshot named 'nope'") != std::string::npos);
  r = RunProgram({"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                  BinDir() + "/psmctl", "restore", "--no-sync", mv->mnt, "s1"});
  CHECK(r.exit_code != 0);
  CHECK_MESSAGE(r.output.find("ermission") != std::string::npos, r.output);
  CHECK(Same(*mv, "s2", model.changed).empty());

  r = Ctl({"restore", mv->mnt, "s1", "--json"});
  REQUIRE_MESSAGE(r.ok(), r.output);
  psm::Json done = ParseJson(r.output);
  CHECK_FALSE(done.GetBool("dry_run"));
  CHECK(done.GetUint("created") == dry.GetUint("created"));
  CHECK(done.GetUint("changed") == dry.GetUint("changed"));
  CHECK(done.GetUint("removed") == dry.GetUint("removed"));
  // The kernel shows the restored tree at once: entries, attributes, pages
  // (big is open: its mtime is the kernel's until the close).
  diff = SameAs(model.built, d, {"/big"});
  CHECK_MESSAGE(diff.empty(), diff);
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
  diff = Same(*mv, "s2", model.changed);
  CHECK_MESSAGE(diff.empty(), diff);
  diff = SameAs(model.built, mv->Path(".snapshots/s1/data"));
  CHECK_MESSAGE(diff.empty(), diff);

  REQUIRE(mv->Unmount());
  std::string report;
  CHECK_MESSAGE(psm::testutil::FsckClean(*mv, &report), report);
  REQUIRE(mv->Remount());
  diff = Same(*mv, "s2", model.changed);
  CHECK_MESSAGE(diff.empty(), diff);
}

TEST_CASE("restore offline: an unmounted volume, and a mounted one refuses a second opener") {
  auto mv = MountedVolume::Create("256M");
  const auto model = MakeSampleModel();
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
  std::string diff = Same(*mv, "base", model.built);
  CHECK_MESSAGE(diff.empty(), diff);
  // Not a volume at all.
  r = Ctl({"restore", mv->dir + "/nothing-here", "base"});
  CHECK(r.exit_code != 0);
  CHECK(!r.output.empty());
}

// SIGKILL of the daemon during `psmctl restore`. The expected trees come
// from native directories written alongside the mount, never from psmfs:
// model/s holds the tree of snapshot s; model/cur follows every change of
// the live tree (so during round N it is the tree of snapshot preN) and is
// put back to s's tree, file by file, when the live tree has been restored.
// Each round changes files, snapshots preN, starts the restore to s and
// kills the daemon:
//   * in most rounds as soon as `status` shows the restore comparing inodes
//     (its restore_pending record is durable by then, docs/restore.md): the
//     next mount must show s's tree, having finished the restore itself
//     (its log says so) unless the restore had committed just before the
//     kill (psmctl may even have answered);
//   * in the last round right after the request is sent: s's tree or preN's
//     tree, nothing else; s's when psmctl had answered.
// A round whose remount kept preN's tree restores again and must reach s's.
// The snapshots s and preN equal their models. At least one kill must have
// been finished by the next mount; fsck is clean at the end.
TEST_CASE("restore: SIGKILL of the daemon during a restore; the next mount finishes it") {
  const int rounds = 3 * std::max(1, static_cast<int>(psm::testutil::StressFromEnv()));
  auto mv = MountedVolume::Create("512M");
  const std::string model = psm::testutil::MakeScratchDir("restore-kill-model");
  const std::string model_cur = model + "/cur", model_s = model + "/s";
  const std::string d = mv->Path("data");
  for (const std::string& dir : {d, model_cur, model_s}) REQUIRE(::mkdir(dir.c_str(), 0755) == 0);
  // A model file is replaced by a new one, not truncated: ext4 flushes a
  // file truncated and rewritten at its close (auto_da_alloc), which made
  // the models the slowest part of the test.
  auto write_model = [](const std::string& path, const std::string& data) {
    REQUIRE_MESSAGE((::unlink(path.c_str()) == 0 || errno == ENOENT), path);
    WriteFile(path, data, 0, false);
  };
  // Every change goes to the mount and to the native model of the live tree.
  auto write_both = [&](const std::string& name, const std::string& data) {
    WriteFile(d + "/" + name, data);
    write_model(model_cur + "/" + name, data);
  };
  constexpr int kFiles = 1500;
  auto s_content = [](int i) { return Pattern(2000, i); };
  for (int i = 0; i < kFiles; ++i) {
    write_both("f" + std::to_string(i), s_content(i));
    write_model(model_s + "/f" + std::to_string(i), s_content(i));
  }
  ProgramResult r = Ctl({"snapshot", "create", mv->mnt, "s"});
  REQUIRE_MESSAGE(r.ok(), r.output);
  int finished_by_mount = 0;
  for (int round = 0; round < rounds; ++round) {
    CAPTURE(round);
    const bool aim_mid_restore = round + 1 < rounds;
    // Change most files, then remember that state as a snapshot.
    for (int i = 0; i < kFiles; i += 1 + round) {
      write_both("f" + std::to_string(i), Pattern(1000, 10000 * (round + 1) + i));
    }
    write_both("new" + std::to_string(round), "new");
    const std::string pre = "pre" + std::to_string(round);
    r = Ctl({"snapshot", "create", mv->mnt, pre});
    REQUIRE_MESSAGE(r.ok(), r.output);
    const std::string& model_pre = model_cur;  // until the live tree is s's again
    std::string diff = psm::testutil::CompareTrees(d, model_pre);
    REQUIRE_MESSAGE(diff.empty(), "the live tree before the restore: " << diff);
    auto client = psm::Client::Connect(mv->mnt);
    REQUIRE_MESSAGE(client.ok(), client.status().ToString());
    // Start the restore and kill the daemon while it runs (or just after).
    fflush(nullptr);
    pid_t child = fork();
    if (child == 0) {
      _exit(RunProgram({BinDir() + "/psmctl", "restore", "--quiet", mv->mnt, "s"}).exit_code);
    }
    REQUIRE(child > 0);
    bool seen_comparing = false;  // the restore_pending record was durable
    int st = 0;
    bool acked = false;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (aim_mid_restore && !seen_comparing && std::chrono::steady_clock::now() < deadline) {
      if (::waitpid(child, &st, WNOHANG) == child) {  // the restore ended before we saw it
        child = -1;
        break;
      }
      auto vs = (*client)->GetStatus();
      REQUIRE_MESSAGE(vs.ok(), vs.status().ToString());
      seen_comparing = vs->stats.restoring == "s" && vs->stats.restore_done > 0;
      if (!seen_comparing) ::usleep(200);  // leave the CPU to the restore
    }
    if (!aim_mid_restore) ::usleep(20000);
    if (child > 0 && ::waitpid(child, &st, WNOHANG) == child) child = -1;
    if (child < 0) {
      acked = WIFEXITED(st) && WEXITSTATUS(st) == 0;
      CHECK_MESSAGE(acked, "psmctl restore failed before the kill (status " << st << ")");
    }
    client->reset();
    const size_t log_before = mv->LogText().size();
    REQUIRE(mv->Kill9());  // fails if the daemon had already died
    if (child > 0) {
      ::waitpid(child, &st, 0);
      acked = WIFEXITED(st) && WEXITSTATUS(st) == 0;
    }
    REQUIRE(mv->Remount());
    const bool resumed = mv->LogText().find("finished the interrupted restore", log_before) !=
                         std::string::npos;
    const std::string to_s = psm::testutil::CompareTrees(d, model_s);
    const std::string to_pre = to_s.empty() ? "" : psm::testutil::CompareTrees(d, model_pre);
    const std::string outcome = resumed        ? "the next mount finished the restore"
                                : to_s.empty() ? "restored before the kill"
                                               : "not restored (the kill came first)";
    MESSAGE("round " << round << ": kill "
                     << std::string(seen_comparing ? "while comparing" : "unaimed") << ", psmctl "
                     << std::string(acked ? "answered" : "did not answer") << ", " << outcome);
    if (acked || seen_comparing || resumed) {
      CHECK_MESSAGE(to_s.empty(), "the restore was under way or done but the live tree is not "
                                  "snapshot s's: "
                                      << to_s);
    } else {
      CHECK_MESSAGE((to_s.empty() || to_pre.empty()),
                    "a half-restored tree: vs s: " << to_s << "; vs " << pre << ": " << to_pre);
    }
    if (resumed) {
      ++finished_by_mount;
      CHECK_FALSE(acked);  // the mount finishes only what never committed
    }
    // The snapshots are as they were taken.
    diff = psm::testutil::CompareTrees(mv->Path(".snapshots/s/data"), model_s);
    CHECK_MESSAGE(diff.empty(), "snapshot s: " << diff);
    diff = psm::testutil::CompareTrees(mv->Path(".snapshots/" + pre + "/data"), model_pre);
    CHECK_MESSAGE(diff.empty(), "snapshot " << pre << ": " << diff);
    // A restore not made (the kill came first) gets there now.
    if (!to_s.empty()) {
      r = Ctl({"restore", mv->mnt, "s"});
      REQUIRE_MESSAGE(r.ok(), r.output);
      diff = psm::testutil::CompareTrees(d, model_s);
      CHECK_MESSAGE(diff.empty(), "after restoring again: " << diff);
    }
    // The live tree is s's now; so is its model again.
    for (int i = 0; i < kFiles; i += 1 + round) {
      write_model(model_cur + "/f" + std::to_string(i), s_content(i));
    }
    REQUIRE(::unlink((model_cur + "/new" + std::to_string(round)).c_str()) == 0);
    diff = psm::testutil::CompareTrees(model_cur, model_s);  // both native
    REQUIRE_MESSAGE(diff.empty(), "the model of the live tree: " << diff);
  }
  MESSAGE(finished_by_mount << " of " << rounds << " kills were finished by the next mount");
  CHECK_MESSAGE(finished_by_mount >= 1,
                "no kill landed while a restore was under way: the resume path went untested");
  REQUIRE(mv->Unmount());
  std::string report;
  CHECK_MESSAGE(psm::testutil::FsckClean(*mv, &report), report);
  if (!psm::testutil::KeepTmp()) psm::testutil::RemoveTree(model);
}
