// The file-server features through the core: snapshot holds, volume
// properties, the scheduler with an injected clock, prune, per-file history
// and snapshot diff.
#include <algorithm>
#include <map>
#include <set>

#include "fs/control/scheduler.h"
#include "fs/base/sha256.h"
#include "tests/common/core_test_util.h"

using namespace psm;
using psm_test::CoreVolume;
using psm_test::Pattern;

namespace {

std::set<std::string> SnapNames(CoreVolume& v) {
  std::set<std::string> s;
  for (const auto& i : v.fs->ListSnapshots(false)) s.insert(i.name);
  return s;
}

}  // namespace

TEST_CASE("sha256 matches the FIPS 180-4 test vectors") {
  CHECK(Sha256Hex("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CHECK(Sha256Hex("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  CHECK(Sha256Hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq") ==
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  Sha256 h;  // the same in pieces across block boundaries
  std::string m(1000, 'a');
  for (size_t i = 0; i < m.size(); i += 7) h.Update(m.data() + i, std::min<size_t>(7, m.size() - i));
  CHECK(h.HexDigest() == Sha256Hex(m));
}

TEST_CASE("a held snapshot cannot be deleted until every hold is released; holds persist") {
  CoreVolume v;
  v.Put(kRootIno, "f", "x");
  REQUIRE(v.fs->CreateSnapshot("s1").ok());
  REQUIRE(v.fs->HoldSnapshot("s1", "backup").ok());
  REQUIRE(v.fs->HoldSnapshot("s1", "legal").ok());
  CHECK(v.fs->HoldSnapshot("s1", "backup").Is(Code::kExists));
  CHECK(v.fs->HoldSnapshot("nope", "backup").Is(Code::kNotFound));
  CHECK(v.fs->HoldSnapshot("s1", "").Is(Code::kInvalid));
  Status d = v.fs->DeleteSnapshot("s1");
  CHECK(d.Is(Code::kBusy));
  CHECK(d.message().find("'backup'") != std::string::npos);
  CHECK(d.message().find("'legal'") != std::string::npos);
  // rmdir in .snapshots says busy as well.
  CHECK(v.fs->RmDir(kSnapDirNode, "s1").Is(Code::kBusy));
  v.Remount();
  auto holds = v.fs->ListHolds();
  REQUIRE(holds.size() == 2);
  CHECK(holds[0].snapshot == "s1");
  CHECK(holds[0].tag == "backup");
  CHECK(holds[1].tag == "legal");
  CHECK(holds[0].since_ns > 0);
  CHECK(v.fs->DeleteSnapshot("s1").Is(Code::kBusy));
  REQUIRE(v.fs->ReleaseSnapshot("s1", "backup").ok());
  CHECK(v.fs->ReleaseSnapshot("s1", "backup").Is(Code::kNotFound));
  CHECK(v.fs->DeleteSnapshot("s1").Is(Code::kBusy));
  REQUIRE(v.fs->ReleaseSnapshot("s1", "legal").ok());
  CHECK(v.fs->ListHolds().empty());
  REQUIRE(v.fs->DeleteSnapshot("s1").ok());
  CHECK(SnapNames(v).empty());
  CHECK(v.Fsck() == 0);
}

TEST_CASE("volume properties persist and an empty value removes one") {
  CoreVolume v;
  CHECK(v.fs->GetProperty("schedule").status().Is(Code::kNotFound));
  REQUIRE(v.fs->SetProperty("schedule", "a=1\n").ok());
  v.Remount();
  CHECK(v.fs->GetProperty("schedule").value() == "a=1\n");
  REQUIRE(v.fs->SetProperty("schedule", "").ok());
  CHECK(v.fs->GetProperty("schedule").status().Is(Code::kNotFound));
  CHECK(v.fs->SetProperty("", "x").Is(Code::kInvalid));
}

TEST_CASE("the scheduler takes one snapshot per slot, prunes by policy, survives restarts") {
  CoreVolume v;
  int64_t now = 1714521600;  // 2024-05-01 00:00:00 UTC
  Scheduler sched(v.fs.get(), [&] { return now; });
  // No policy: nothing happens.
  auto r = sched.Tick(now);
  CHECK_FALSE(r.policy);
  CHECK(SnapNames(v).empty());
  SchedulePolicy p;
  p.interval_sec = 3600;
  p.keep_hourly = 3;
  p.keep_daily = 2;
  p.keep_weekly = 0;
  p.keep_monthly = 0;
  REQUIRE(StorePolicy(v.fs.get(), p).ok());
  // A manual snapshot never counts, and is never pruned.
  REQUIRE(v.fs->CreateSnapshot("manual").ok());
  r = sched.Tick(now + 5);
  CHECK(r.created == "@GMT-2024.05.01-00.00.05");
  CHECK(r.next_due == now + 3600);
  CHECK(sched.Tick(now + 1800).created.empty());  // same hour: not due
  // Held before it would be pruned.
  REQUIRE(v.fs->HoldSnapshot("@GMT-2024.05.01-00.00.05", "keep").ok());
  // 30 hours, one tick every 20 minutes.
  int created = 1;
  for (int64_t t = now + 1200; t < now + 30 * 3600; t += 1200) {
    v.Put(kRootIno, "f", std::to_string(t));
    auto tr = sched.Tick(t);
    REQUIRE_MESSAGE(tr.error.ok(), tr.error.ToString());
    if (!tr.created.empty()) ++created;
  }
  CHECK(created == 30);
  // Kept: 3 newest hours (05:00, 04:00, 03:00 on 05-02 -> names at :00),
  // newest of 2 days (05-02 05:00 already, 05-01 23:00), the held one, manual.
  std::set<std::string> want = {"manual", "@GMT-2024.05.01-00.00.05", "@GMT-2024.05.02-05.00.00",
                                "@GMT-2024.05.02-04.00.00", "@GMT-2024.05.02-03.00.00",
                                "@GMT-2024.05.01-23.00.00"};
  CHECK(SnapNames(v) == want);
  // The policy and the due time survive a restart: same slot -> nothing.
  v.Remount();
  Scheduler again(v.fs.get(), [&] { return now; });
  CHECK(again.Tick(now + 30 * 3600 - 60).created.empty());
  // A daemon down for three days takes one snapshot, not 72.
  auto late = again.Tick(now + 100 * 3600 + 7);
  CHECK(late.created == "@GMT-2024.05.05-04.00.07");
  CHECK(again.Tick(now + 100 * 3600 + 60).created.empty());
  // Disabled: nothing more.
  p.enabled = false;
  REQUIRE(StorePolicy(v.fs.get(), p).ok());
  CHECK_FALSE(again.Tick(now + 200 * 3600).policy);
  CHECK(v.Fsck() == 0);
}

// Retention of "auto-" snapshots by count only.
static SchedulePolicy KeepLast(uint32_t n) {
  SchedulePolicy p;
  p.prefix = "auto-";
  p.keep_last = n;
  p.keep_hourly = p.keep_daily = p.keep_weekly = p.keep_monthly = 0;
  return p;
}

TEST_CASE("prune: dry run changes nothing; held snapshots are reported busy and kept") {
  CoreVolume v;
  SchedulePolicy p = KeepLast(2);
  const int64_t t0 = 1714521600;
  for (int i = 0; i < 6; ++i) REQUIRE(v.fs->CreateSnapshot(ScheduledName("auto-", t0 + i * 60)).ok());
  REQUIRE(v.fs->CreateSnapshot("@GMT-2024.05.01-00.00.00").ok());  // other prefix: not ours
  REQUIRE(v.fs->HoldSnapshot(ScheduledName("auto-", t0), "keep").ok());
  PruneReport dry = Prune(v.fs.get(), p, true);
  CHECK(dry.pruned.size() == 4);
  CHECK(dry.kept.size() == 2);
  CHECK(SnapNames(v).size() == 7);
  PruneReport r = Prune(v.fs.get(), p, false);
  CHECK(r.pruned.size() == 3);
  CHECK(r.busy == std::vector<std::string>{ScheduledName("auto-", t0)});
  CHECK(r.errors.empty());
  CHECK(SnapNames(v) == std::set<std::string>{ScheduledName("auto-", t0 + 300),
                                              ScheduledName("auto-", t0 + 240),
                                              ScheduledName("auto-", t0), "@GMT-2024.05.01-00.00.00"});
}

TEST_CASE("prune never deletes a snapshot being sent: busy, kept, pruned at the next run") {
  CoreVolume v;
  SchedulePolicy p = KeepLast(1);
  const int64_t t0 = 1714521600;
  for (int i = 0; i < 3; ++i) REQUIRE(v.fs->CreateSnapshot(ScheduledName("auto-", t0 + i * 60)).ok());
  const std::string oldest = ScheduledName("auto-", t0);
  // Retention runs while the oldest is being sent (from inside the send).
  PruneReport during;
  SendOptions o;
  o.snapshot = oldest;
  bool ran = false;
  auto sent = v.fs->Send(o, [&](std::string_view) {
    if (!ran) {
      ran = true;
      during = Prune(v.fs.get(), p, false);
    }
    return Status::Ok();
  });
  REQUIRE(sent.ok());
  CHECK(during.busy == std::vector<std::string>{oldest});
  CHECK(during.pruned == std::vector<std::string>{ScheduledName("auto-", t0 + 60)});
  CHECK(during.errors.empty());
  CHECK(SnapNames(v).count(oldest) == 1);
  PruneReport after = Prune(v.fs.get(), p, false);
  CHECK(after.pruned == std::vector<std::string>{oldest});
  CHECK(SnapNames(v) == std::set<std::string>{ScheduledName("auto-", t0 + 120)});
}

TEST_CASE("history lists each distinct version once, with the snapshots that see it") {
  CoreVolume v;
  NodeId d = v.Mkdir(kRootIno, "docs");
  NodeId f = v.Put(d, "a.txt", "version one");
  REQUIRE(v.fs->CreateSnapshot("mon").ok());
  REQUIRE(v.fs->CreateSnapshot("tue").ok());  // unchanged in between
  REQUIRE(v.WriteAt(f, 0, "VERSION TWO, longer").ok());
  REQUIRE(v.fs->CreateSnapshot("wed").ok());
  REQUIRE(v.fs->Unlink(d, "a.txt").ok());
  REQUIRE(v.fs->CreateSnapshot("thu").ok());  // absent here
  v.Put(d, "a.txt", "version three");
  auto h = v.fs->History("/docs/a.txt", true);
  REQUIRE_MESSAGE(h.ok(), h.status().ToString());
  REQUIRE(h->size() == 3);
  CHECK((*h)[0].snapshots == std::vector<std::string>{"mon", "tue"});
  CHECK_FALSE((*h)[0].live);
  CHECK((*h)[0].size == 11);
  CHECK((*h)[0].sha256 == Sha256Hex("version one"));
  CHECK((*h)[1].snapshots == std::vector<std::string>{"wed"});
  CHECK((*h)[1].sha256 == Sha256Hex("VERSION TWO, longer"));
  CHECK((*h)[2].snapshots.empty());
  CHECK((*h)[2].live);
  CHECK((*h)[2].sha256 == Sha256Hex("version three"));
  CHECK((*h)[2].ino != (*h)[0].ino);
  CHECK(v.fs->History("docs/none", true).status().Is(Code::kNotFound));
  CHECK(v.fs->History(".snapshots/mon/docs/a.txt", true).status().Is(Code::kInvalid));
  CHECK(v.fs->History("docs/../a", true).status().Is(Code::kInvalid));
  auto nock = v.fs->History("docs/a.txt", false);
  REQUIRE(nock.ok());
  CHECK((*nock)[0].sha256.empty());
}

TEST_CASE("diff reports changes that left every timestamp as it was") {
  // Two changes in one tick of the clock leave mtime and ctime unchanged;
  // here the times are put back by hand so that the case is certain.
  CoreVolume v;
  NodeId d = v.Mkdir(kRootIno, "d");
  NodeId f = v.Put(d, "f", "abcd");
  NodeId g = v.Put(d, "g", "x");
  NodeId h = v.Put(d, "h", "y");
  v.Put(d, "old", "o");
  REQUIRE(v.fs->CreateSnapshot("a").ok());
  std::map<NodeId, struct stat> before;
  for (NodeId n : {d, f, g, h}) {
    auto st = v.fs->GetAttr(n);
    REQUIRE(st.ok());
    before[n] = st->st;
  }
  REQUIRE(v.WriteAt(f, 0, "ABCD").ok());               // same size, new bytes
  REQUIRE(v.fs->SetXattr(g, "user.k", "v", 0).ok());  // a new xattr only
  REQUIRE(v.fs->Unlink(d, "old").ok());               // d keeps its entry count
  v.Put(d, "new", "n");
  struct stat at = before[h];
  at.st_atim.tv_sec += 100;
  REQUIRE(v.fs->SetAttr(h, at, kSetAtime, v.cred).ok());  // atime alone is no change
  for (NodeId n : {d, f, g, h}) {
    REQUIRE(v.fs->SetAttr(n, before[n], kSetMtime | kSetCtime, v.cred).ok());
    auto st = v.fs->GetAttr(n);
    REQUIRE(st.ok());
    REQUIRE(st->st.st_mtim.tv_nsec == before[n].st_mtim.tv_nsec);
    REQUIRE(st->st.st_ctim.tv_nsec == before[n].st_ctim.tv_nsec);
    REQUIRE(st->st.st_size == before[n].st_size);
  }
  REQUIRE(v.fs->CreateSnapshot("b").ok());
  auto r = v.fs->Diff("a", "b");
  REQUIRE_MESSAGE(r.ok(), r.status().ToString());
  std::set<std::string> got;
  for (const auto& e : r->entries) got.insert(std::string(1, e.change) + " " + e.path);
  CHECK(got == std::set<std::string>{"M /d", "M /d/f", "M /d/g", "- /d/old", "+ /d/new"});
}

TEST_CASE("diff reports created, removed, modified and renamed paths from the dead index") {
  CoreVolume v;
  NodeId d = v.Mkdir(kRootIno, "d");
  NodeId sub = v.Mkdir(d, "sub");
  NodeId keep = v.Put(d, "keep", "same");
  NodeId mod = v.Put(sub, "mod", "old");
  v.Put(d, "gone", "bye");
  v.Put(kRootIno, "moveme", "m");
  for (int i = 0; i < 50; ++i) v.Put(kRootIno, "untouched" + std::to_string(i), "u");
  REQUIRE(v.fs->CreateSnapshot("a").ok());
  REQUIRE(v.WriteAt(mod, 0, "NEW CONTENT").ok());
  REQUIRE(v.fs->Unlink(d, "gone").ok());
  v.Put(sub, "new", "hello");
  REQUIRE(v.fs->Rename(kRootIno, "moveme", d, "moved", 0).ok());
  REQUIRE(v.fs->CreateSnapshot("b").ok());
  v.Put(kRootIno, "after-b", "x");
  (void)keep;

  auto r = v.fs->Diff("a", "b");
  REQUIRE_MESSAGE(r.ok(), r.status().ToString());
  std::set<std::string> got;
  for (const auto& e : r->entries) {
    got.insert(std::string(1, e.change) + " " + e.path + (e.change == 'R' ? " <- " + e.old_path : ""));
  }
  std::set<std::string> want = {"- /d/gone", "+ /d/sub/new", "M /d/sub/mod",
                                "R /d/moved <- /moveme", "M /d", "M /d/sub", "M /"};
  CHECK(got == want);
  // Cost follows the change: only the changed directories were listed.
  CHECK(r->dirs_compared <= 3);
  // Order given either way: the older one is the start.
  auto rev = v.fs->Diff("b", "a");
  REQUIRE(rev.ok());
  CHECK(rev->entries.size() == r->entries.size());
  CHECK(rev->from == "a");
  // Against the live tree.
  auto live = v.fs->Diff("b", "");
  REQUIRE(live.ok());
  std::set<std::string> lg;
  for (const auto& e : live->entries) lg.insert(std::string(1, e.change) + " " + e.path);
  CHECK(lg == std::set<std::string>{"+ /after-b", "M /"});
  CHECK(v.fs->Diff("nope", "").status().Is(Code::kNotFound));
  // Nothing changed between two adjacent snapshots: empty.
  REQUIRE(v.fs->CreateSnapshot("c").ok());
  REQUIRE(v.fs->CreateSnapshot("d").ok());
  auto none = v.fs->Diff("c", "d");
  REQUIRE(none.ok());
  CHECK(none->entries.empty());
}

namespace {

// Every field of every entry, in order: what `psmctl diff` prints.
std::vector<std::string> DiffLines(const DiffResult& r) {
  std::vector<std::string> out;
  for (const auto& e : r.entries) {
    std::string l = std::string(1, e.change) + " " + e.path;
    if (e.change == 'R') l += " <- " + e.old_path;
    l += S_ISDIR(e.type) ? " dir" : S_ISREG(e.type) ? " file" : " other";
    out.push_back(l);
  }
  return out;
}

}  // namespace

// The paths of changed files are found by reading their parents' entries,
// and only as far as needed; this pins the exact output (order, renames,
// the name chosen for a file with several links, paths through renamed and
// deep directories) so that any shortcut there stays correct.
TEST_CASE("diff output: order, links, renames and deep paths exactly") {
  CoreVolume v;
  NodeId top = v.Mkdir(kRootIno, "top");
  for (int i = 0; i < 40; ++i) v.Mkdir(kRootIno, "dir" + std::to_string(i));  // a wide root
  NodeId deep = top;
  for (int i = 0; i < 6; ++i) deep = v.Mkdir(deep, "l" + std::to_string(i));
  NodeId dfile = v.Put(deep, "leaf", "x");
  NodeId wide = v.Mkdir(kRootIno, "wide");
  std::vector<NodeId> files;
  for (int i = 0; i < 300; ++i) files.push_back(v.Put(wide, "f" + std::to_string(i), "data"));
  // One file, two names in one directory and one in another: its path is
  // the first name (in byte order) in the directory of its newest name.
  NodeId linked = v.Put(wide, "zz-link", "L");
  REQUIRE(v.fs->Link(linked, wide, "aa-link").ok());
  NodeId moved_dir = v.Mkdir(kRootIno, "olddir");
  NodeId inner = v.Put(moved_dir, "inner", "i");
  v.Put(top, "victim", "v");
  REQUIRE(v.fs->CreateSnapshot("a").ok());

  REQUIRE(v.WriteAt(dfile, 0, "changed").ok());
  for (int i : {0, 7, 150, 299}) REQUIRE(v.WriteAt(files[i], 0, "DATA").ok());
  REQUIRE(v.WriteAt(linked, 0, "LL").ok());
  REQUIRE(v.fs->Rename(kRootIno, "olddir", top, "newdir", 0).ok());
  REQUIRE(v.WriteAt(inner, 0, "ii").ok());
  REQUIRE(v.fs->Unlink(top, "victim").ok());
  v.Put(deep, "born", "b");
  REQUIRE(v.fs->CreateSnapshot("b").ok());

  auto r = v.fs->Diff("a", "b");
  REQUIRE_MESSAGE(r.ok(), r.status().ToString());
  std::vector<std::string> want = {
      "M / dir",
      "M /top dir",
      "M /top/l0/l1/l2/l3/l4/l5 dir",
      "+ /top/l0/l1/l2/l3/l4/l5/born file",
      "M /top/l0/l1/l2/l3/l4/l5/leaf file",
      "R /top/newdir <- /olddir dir",
      "M /top/newdir/inner file",
      "- /top/victim file",
      "M /wide/aa-link file",
      "M /wide/f0 file",
      "M /wide/f150 file",
      "M /wide/f299 file",
      "M /wide/f7 file",
  };
  CHECK(DiffLines(r.value()) == want);
  // The same change against the live tree, and after a remount (nothing
  // cached).
  auto live = v.fs->Diff("a", "");
  REQUIRE(live.ok());
  CHECK(DiffLines(live.value()) == want);
  v.Remount();
  auto again = v.fs->Diff("a", "b");
  REQUIRE(again.ok());
  CHECK(DiffLines(again.value()) == want);
}
