// Snapshots through the core: O(1) create, read-only trees at a fixed
// epoch, distinct node ids, exact space reclaim on delete, handles that
// outlive a delete, and many snapshots.
#include <sys/xattr.h>

#include <algorithm>
#include <chrono>

#include "meta/store.h"
#include "tests/common/core_test_util.h"

using namespace psm;
using psm_test::CoreVolume;
using psm_test::Pattern;

namespace {

NodeId SnapRoot(CoreVolume& v, const std::string& name) { return v.Node(kSnapDirNode, name); }

void WaitReclaim(CoreVolume& v) {
  REQUIRE(v.fs->ReclaimNow().ok());
  CHECK(v.fs->Stats().pending_reclaim == 0);
}

}  // namespace

TEST_CASE("a snapshot keeps the tree as it was while the live tree changes") {
  CoreVolume v;
  NodeId d = v.Mkdir(kRootIno, "dir");
  NodeId f = v.Put(d, "f", Pattern(200000, 1));
  REQUIRE(v.fs->SetXattr(f, "user.k", "old", 0).ok());
  REQUIRE(v.fs->Symlink(kRootIno, "ln", "dir/f", v.cred).ok());
  auto s = v.fs->CreateSnapshot("s1");
  REQUIRE(s.ok());
  // Change everything live.
  REQUIRE(v.WriteAt(f, 100, "LIVE").ok());
  REQUIRE(v.fs->SetXattr(f, "user.k", "new", 0).ok());
  v.Put(d, "g", "new file");
  REQUIRE(v.fs->Unlink(kRootIno, "ln").ok());
  REQUIRE(v.fs->Rename(kRootIno, "dir", kRootIno, "dir2", 0).ok());
  // The snapshot is unchanged.
  NodeId sr = SnapRoot(v, "s1");
  CHECK(SnapOf(sr) == s->id);
  NodeId sd = v.Node(sr, "dir");
  NodeId sf = v.Node(sd, "f");
  CHECK(sf != f);
  CHECK(InoOf(sf) == InoOf(f));
  CHECK(v.ReadAll(sf) == Pattern(200000, 1));
  CHECK(*v.fs->GetXattr(sf, "user.k") == "old");
  CHECK(v.fs->Lookup(sd, "g").status().Is(Code::kNotFound));
  CHECK(*v.fs->ReadLink(v.Node(sr, "ln")) == "dir/f");
  CHECK(v.fs->Lookup(sr, "dir2").status().Is(Code::kNotFound));
  // The live tree has the changes.
  std::string live = Pattern(200000, 1);
  live.replace(100, 4, "LIVE");
  CHECK(v.ReadAll(v.Node(v.Node(kRootIno, "dir2"), "f")) == live);
  // Everything under .snapshots is read-only.
  CHECK(v.fs->MkDir(sd, "x", 0755, v.cred).status().Is(Code::kReadOnly));
  CHECK(v.fs->Unlink(sd, "f").Is(Code::kReadOnly));
  CHECK(v.fs->SetXattr(sf, "user.k", "x", 0).Is(Code::kReadOnly));
  CHECK(v.fs->OpenFile(sf, O_RDWR).status().Is(Code::kReadOnly));
  CHECK(v.fs->Rename(sd, "f", kRootIno, "stolen", 0).Is(Code::kReadOnly));
  CHECK(v.fs->Link(sf, kRootIno, "l2").status().Is(Code::kReadOnly));
  struct stat st {};
  CHECK(v.fs->SetAttr(sf, st, kSetMode, v.cred).status().Is(Code::kReadOnly));
  CHECK(v.fs->Unlink(kRootIno, ".snapshots").Is(Code::kBusy));
  CHECK(v.fs->Rename(kRootIno, ".snapshots", kRootIno, "x", 0).Is(Code::kBusy));
  // Survives a remount.
  v.Remount();
  CHECK(v.ReadAll(v.Node(v.Node(SnapRoot(v, "s1"), "dir"), "f")) == Pattern(200000, 1));
  CHECK(v.Fsck() == 0);
}

TEST_CASE("snapshot names are validated and unique") {
  CoreVolume v;
  REQUIRE(v.fs->CreateSnapshot("a").ok());
  CHECK(v.fs->CreateSnapshot("a").status().Is(Code::kExists));
  CHECK(v.fs->CreateSnapshot("").status().Is(Code::kInvalid));
  CHECK(v.fs->CreateSnapshot(".").status().Is(Code::kInvalid));
  CHECK(v.fs->CreateSnapshot("a/b").status().Is(Code::kInvalid));
  CHECK(v.fs->CreateSnapshot(std::string(256, 'x')).status().Is(Code::kNameTooLong));
  CHECK(v.fs->CreateSnapshot(std::string(255, 'x')).ok());
  CHECK(v.fs->DeleteSnapshot("nope").Is(Code::kNotFound));
  // mkdir/rmdir in .snapshots, with the volume owner's rights only.
  Credentials other{12345, 12345, 0, 0};
  CHECK(v.fs->MkDir(kSnapDirNode, "m", 0755, other).status().Is(Code::kPermission));
  REQUIRE(v.fs->MkDir(kSnapDirNode, "m", 0755, v.cred).ok());
  CHECK(v.fs->RmDir(kSnapDirNode, "m", other).Is(Code::kPermission));
  REQUIRE(v.fs->RmDir(kSnapDirNode, "m", v.cred).ok());
  CHECK(v.fs->Lookup(kSnapDirNode, "m").status().Is(Code::kNotFound));
  auto list = v.fs->ListSnapshots(false);
  REQUIRE(list.size() == 2);
  CHECK(list[0].name == "a");  // oldest first
}

TEST_CASE("mkdir/rmdir in .snapshots ask the kernel to invalidate nothing; psmctl's create and delete do") {
  // The kernel holds .snapshots' lock during its own mkdir/rmdir: an
  // invalidation of that directory would wait for the reply (and forever if
  // the daemon is killed meanwhile).
  CoreVolume v;
  std::vector<std::string> notices;
  v.fs->SetInvalidators(
      [&](NodeId parent, std::string_view name) {
        notices.push_back("entry " + std::to_string(parent) + " " + std::string(name));
      },
      [&](NodeId node) { notices.push_back("inode " + std::to_string(node)); });
  REQUIRE(v.fs->MkDir(kSnapDirNode, "k", 0755, v.cred).ok());
  REQUIRE(v.fs->RmDir(kSnapDirNode, "k", v.cred).ok());
  CHECK(notices.empty());
  REQUIRE(v.fs->CreateSnapshot("c").ok());
  const std::string entry = "entry " + std::to_string(kSnapDirNode) + " c";
  const std::string inode = "inode " + std::to_string(kSnapDirNode);
  CHECK(notices == std::vector<std::string>{entry, inode});
  notices.clear();
  REQUIRE(v.fs->DeleteSnapshot("c").ok());
  CHECK(notices == std::vector<std::string>{entry, inode});
  v.fs->SetInvalidators([](NodeId, std::string_view) {}, [](NodeId) {});
}

TEST_CASE("deleting snapshots reclaims exactly what only they held") {
  CoreVolume v(128ull << 20);
  uint64_t free0 = v.FreeBlocks();
  NodeId f = v.Put(kRootIno, "f", Pattern(4 << 20, 1));
  REQUIRE(v.fs->CreateSnapshot("s1").ok());
  REQUIRE(v.WriteAt(f, 0, Pattern(1 << 20, 2)).ok());  // 1 MiB now held by s1 only
  REQUIRE(v.fs->CreateSnapshot("s2").ok());
  REQUIRE(v.WriteAt(f, 1 << 20, Pattern(1 << 20, 3)).ok());  // 1 MiB held by s1+s2
  REQUIRE(v.fs->CreateSnapshot("s3").ok());
  REQUIRE(v.fs->Unlink(kRootIno, "f").ok());  // everything now in snapshots
  auto list = v.fs->ListSnapshots(true);
  REQUIRE(list.size() == 3);
  CHECK(list[0].used_bytes == (1u << 20));          // s1 alone holds the first old MiB
  CHECK(list[0].referenced_bytes == (4u << 20));
  CHECK(list[1].used_bytes == 0);                   // second old MiB is shared with s1
  CHECK(list[2].used_bytes == (1u << 20));          // s3 alone holds the newest MiB
  uint64_t held = v.FreeBlocks();
  CHECK(free0 - held == (6u << 20) / 4096);
  REQUIRE(v.fs->DeleteSnapshot("s2").ok());
  WaitReclaim(v);
  CHECK(v.FreeBlocks() == held);  // s2 held nothing exclusively
  CHECK(v.ReadAll(v.Node(SnapRoot(v, "s1"), "f")) == Pattern(4 << 20, 1));
  std::string s3 = Pattern(4 << 20, 1);
  s3.replace(0, 1 << 20, Pattern(1 << 20, 2));
  s3.replace(1 << 20, 1 << 20, Pattern(1 << 20, 3));
  CHECK(v.ReadAll(v.Node(SnapRoot(v, "s3"), "f")) == s3);
  REQUIRE(v.fs->DeleteSnapshot("s3").ok());
  WaitReclaim(v);
  CHECK(held + (2u << 20) / 4096 == v.FreeBlocks());  // now only s3 held those 2 MiB
  REQUIRE(v.fs->DeleteSnapshot("s1").ok());
  WaitReclaim(v);
  CHECK(v.FreeBlocks() == free0);  // no leaked block
  CHECK(v.Fsck() == 0);
}

TEST_CASE("a file open in a deleted snapshot reads correct bytes until closed") {
  CoreVolume v;
  uint64_t free0 = v.FreeBlocks();
  NodeId f = v.Put(kRootIno, "f", Pattern(1 << 20, 7));
  REQUIRE(v.fs->CreateSnapshot("s").ok());
  NodeId sf = v.Node(SnapRoot(v, "s"), "f");
  auto fh = v.fs->OpenFile(sf, O_RDONLY);
  REQUIRE(fh.ok());
  auto dh = v.fs->OpenDir(SnapRoot(v, "s"));
  REQUIRE(dh.ok());
  REQUIRE(v.fs->Unlink(kRootIno, "f").ok());
  REQUIRE(v.fs->DeleteSnapshot("s").ok());
  CHECK(v.fs->Lookup(kSnapDirNode, "s").status().Is(Code::kNotFound));
  REQUIRE(v.fs->ReclaimNow().ok());  // must not reclaim while open
  std::string buf(1 << 20, '\0');
  auto r = v.fs->Read(*fh, 0, buf.size(), buf.data());
  REQUIRE(r.ok());
  CHECK(buf == Pattern(1 << 20, 7));
  int n = 0;
  REQUIRE(v.fs->ReadDir(*dh, 0, [&](const DirEntryOut&) { ++n; return true; }).ok());
  CHECK(n == 3);  // . .. f
  CHECK(v.fs->OpenFile(sf, O_RDONLY).status().Is(Code::kStale));  // no new opens once deleted
  REQUIRE(v.fs->Release(*fh).ok());
  REQUIRE(v.fs->ReleaseDir(*dh).ok());
  (void)f;
  // Open handles from the check above are released; reclaim can finish.
  for (int i = 0; i < 100 && v.fs->Stats().pending_reclaim; ++i) {
    (void)v.fs->ReclaimNow();
  }
  CHECK(v.fs->Stats().pending_reclaim == 0);
  CHECK(v.fs->GetAttr(sf).status().Is(Code::kStale));
  CHECK(v.FreeBlocks() == free0);
  CHECK(v.Fsck() == 0);
}

TEST_CASE("reclaim resumes after a remount") {
  CoreVolume v;
  uint64_t free0 = v.FreeBlocks();
  v.Put(kRootIno, "f", Pattern(2 << 20, 9));
  REQUIRE(v.fs->CreateSnapshot("s").ok());
  REQUIRE(v.fs->Unlink(kRootIno, "f").ok());
  // Keep a handle so the reclaim cannot run, then "crash" (close) with the
  // snapshot marked deleting.
  NodeId sf = v.Node(SnapRoot(v, "s"), "f");
  auto fh = v.fs->OpenFile(sf, O_RDONLY);
  REQUIRE(fh.ok());
  REQUIRE(v.fs->DeleteSnapshot("s").ok());
  v.Remount();
  // The reclaim thread resumes it on its own; 60 s is a deadline, not a
  // measure.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (v.fs->Stats().pending_reclaim && std::chrono::steady_clock::now() < deadline) {
    usleep(1000);
  }
  CHECK_MESSAGE(v.fs->Stats().pending_reclaim == 0,
                "the reclaim of s did not resume after the remount (60 s)");
  CHECK(v.FreeBlocks() == free0);
  CHECK(v.Fsck() == 0);
}

// Works at that number; what it costs is psmsnapbench's (make bench).
TEST_CASE("1000 snapshots: create, list, browse, delete") {
  CoreVolume v;
  NodeId f = v.Put(kRootIno, "f", "v0");
  for (int i = 0; i < 1000; ++i) {
    REQUIRE(v.WriteAt(f, 0, "v" + std::to_string(i % 10)).ok());
    REQUIRE(v.fs->CreateSnapshot("snap-" + std::to_string(i)).ok());
  }
  auto list = v.fs->ListSnapshots(false);
  REQUIRE(list.size() == 1000);
  CHECK(list.front().name == "snap-0");
  CHECK(list.back().name == "snap-999");
  auto dh = v.fs->OpenDir(kSnapDirNode);
  REQUIRE(dh.ok());
  int n = 0;
  REQUIRE(v.fs->ReadDir(*dh, 0, [&](const DirEntryOut&) { ++n; return true; }).ok());
  REQUIRE(v.fs->ReleaseDir(*dh).ok());
  CHECK(n == 1002);
  CHECK(v.ReadAll(v.Node(SnapRoot(v, "snap-537"), "f")) == "v7");
  for (int i = 0; i < 1000; i += 2) REQUIRE(v.fs->DeleteSnapshot("snap-" + std::to_string(i)).ok());
  WaitReclaim(v);
  CHECK(v.ReadAll(v.Node(SnapRoot(v, "snap-537"), "f")) == "v7");
  CHECK(v.fs->ListSnapshots(false).size() == 500);
  CHECK(v.Fsck() == 0);
}

namespace {

// Keys of `cf` that start with `prefix` (a closed volume's store).
size_t KeysWith(Store* st, Cf cf, const std::string& prefix) {
  size_t n = 0;
  auto it = st->NewIterator(cf);
  REQUIRE(ForEachPrefix(it.get(), prefix, [&](std::string_view, std::string_view) {
            ++n;
            return true;
          }).ok());
  return n;
}

}  // namespace

// The removal paths that skip PutVersion's seek (DestroyChunks, an entry
// removed with what its read found, a name put without a seek when it never
// had a version, PutAttr of attributes read at the live epoch) against
// versions snapshots see: the live tree must stop seeing what was removed,
// the snapshots must keep it, and once the snapshots are gone nothing of the
// removed files may be left (a version kept without its dead entry would
// never be reclaimed).
TEST_CASE("unlink removes a file's live records and leaves the versions snapshots see to reclaim") {
  CoreVolume v(128ull << 20);
  const uint64_t free0 = v.FreeBlocks();
  const NodeId d = v.Mkdir(kRootIno, "d");
  v.Put(d, "m", Pattern(4096, 9));
  REQUIRE(v.fs->CreateSnapshot("s0").ok());
  REQUIRE(v.fs->Unlink(d, "m").ok());  // a tombstone over a version s0 sees
  const NodeId a = v.Put(d, "a", Pattern(4096, 1));
  const NodeId b = v.Put(d, "b", Pattern((2 << 20) + 4096, 2));  // three chunks
  v.Put(d, "n", Pattern(4096, 3));
  REQUIRE(v.fs->CreateSnapshot("s1").ok());
  v.Put(d, "m", Pattern(4096, 8));  // the name's tombstone is seen by s1
  REQUIRE(v.WriteAt(b, 0, Pattern(4096, 4)).ok());  // chunk 0: a version at E over s1's
  struct stat st {};
  st.st_mode = 0600;
  REQUIRE(v.fs->SetAttr(a, st, kSetMode, v.cred).ok());  // a new attribute version over s1's
  const NodeId c = v.Put(d, "c", Pattern(8192, 5));      // born at E
  for (const char* name : {"a", "b", "c", "n", "m"}) REQUIRE(v.fs->Unlink(d, name).ok());
  v.Put(d, "n", Pattern(4096, 6));
  REQUIRE(v.fs->Unlink(d, "n").ok());  // removed at E over the tombstone at E
  for (const char* name : {"a", "b", "c", "n", "m"}) CHECK(!v.fs->Lookup(d, name).ok());
  const NodeId sd = v.Node(SnapRoot(v, "s1"), "d");
  CHECK(v.ReadAll(v.Node(sd, "a")) == Pattern(4096, 1));
  CHECK(v.ReadAll(v.Node(sd, "b")) == Pattern((2 << 20) + 4096, 2));
  CHECK(v.ReadAll(v.Node(sd, "n")) == Pattern(4096, 3));
  CHECK(v.ReadAll(v.Node(v.Node(SnapRoot(v, "s0"), "d"), "m")) == Pattern(4096, 9));
  const InodeId inos[] = {InoOf(a), InoOf(b), InoOf(c)};
  REQUIRE(v.fs->Close().ok());
  v.fs.reset();
  {
    auto r = Store::Open(v.dir + "/meta", StoreOptions{});
    REQUIRE(r.ok());
    Store* s = r->get();
    std::string ev;
    REQUIRE(s->Get(Cf::kVolume, kVolEpoch, &ev).ok());
    const Epoch e = GetLE64(ev.data());
    for (const char* name : {"a", "b", "c", "n", "m"}) {
      CHECK(GetAt(s, Cf::kDentries, DentryPrefix(InoOf(d), name), e, nullptr).Is(Code::kNotFound));
    }
    for (InodeId ino : inos) {
      CHECK(GetAt(s, Cf::kInodes, InodePrefix(ino), e, nullptr).Is(Code::kNotFound));
      for (uint64_t idx = 0; idx < 4; ++idx) {
        CHECK(GetAt(s, Cf::kChunks, ChunkPrefix(ino, idx), e, nullptr).Is(Code::kNotFound));
      }
    }
  }
  v.Open();
  REQUIRE(v.fs->DeleteSnapshot("s1").ok());
  REQUIRE(v.fs->DeleteSnapshot("s0").ok());
  WaitReclaim(v);
  CHECK(v.FreeBlocks() == free0);
  CHECK(v.Fsck() == 0);
  REQUIRE(v.fs->Close().ok());
  v.fs.reset();
  auto r = Store::Open(v.dir + "/meta", StoreOptions{});
  REQUIRE(r.ok());
  Store* s = r->get();
  for (InodeId ino : inos) {
    CHECK(KeysWith(s, Cf::kInodes, InodePrefix(ino)) == 0);
    CHECK(KeysWith(s, Cf::kChunks, ChunkFilePrefix(ino)) == 0);
  }
  CHECK(KeysWith(s, Cf::kDentries, DentryDirPrefix(InoOf(d))) == 0);
  r->reset();
  v.Open();
}

// A directory of more than ReadDir's read-ahead threshold (128 entries),
// listed from the table files (a remount flushes the memtables): every
// live entry once and nothing else, in the live tree and in a snapshot
// taken before a tenth of them were removed and more were added (the
// snapshot's versions lie between the live ones in the same key range).
TEST_CASE("a large directory read from the tables lists each entry once, live and in a snapshot") {
  CoreVolume v;
  NodeId d = v.Mkdir(kRootIno, "big");
  for (int i = 0; i < 600; ++i) v.Put(d, "f" + std::to_string(i), "");
  REQUIRE(v.fs->CreateSnapshot("s").ok());
  for (int i = 0; i < 600; i += 10) REQUIRE(v.fs->Unlink(d, "f" + std::to_string(i)).ok());
  for (int i = 600; i < 700; ++i) v.Put(d, "f" + std::to_string(i), "");
  v.Remount();
  auto list = [&](NodeId dir) {
    auto dh = v.fs->OpenDir(dir);
    REQUIRE(dh.ok());
    std::vector<std::string> names;
    REQUIRE(v.fs->ReadDir(*dh, 0, [&](const DirEntryOut& e) {
      names.emplace_back(e.name);
      return true;
    }).ok());
    REQUIRE(v.fs->ReleaseDir(*dh).ok());
    std::sort(names.begin(), names.end());
    return names;
  };
  auto expect = [](int from, int to, bool skip_tenths) {
    std::vector<std::string> names = {".", ".."};
    for (int i = from; i < to; ++i) {
      if (!skip_tenths || i >= 600 || i % 10 != 0) names.push_back("f" + std::to_string(i));
    }
    std::sort(names.begin(), names.end());
    return names;
  };
  CHECK(list(v.Node(kRootIno, "big")) == expect(0, 700, true));
  CHECK(list(v.Node(SnapRoot(v, "s"), "big")) == expect(0, 600, false));
}
