// The FUSE-free filesystem core, driven directly: files, directories,
// links, rename, truncate, holes, xattrs, orphans, ENOSPC, remount, fsck.
#include <linux/falloc.h>
#include <linux/fs.h>
#include <sys/xattr.h>

#include <atomic>
#include <future>
#include <thread>

#include "meta/sync_point.h"
#include "tests/common/core_test_util.h"

using namespace psm;
using psm_test::CoreVolume;
using psm_test::Pattern;

TEST_CASE("write, read back, remount") {
  CoreVolume v;
  std::string data = Pattern(3 * 1024 * 1024 + 123, 1);
  NodeId n = v.Put(kRootIno, "f", data);
  CHECK(v.ReadAll(n) == data);
  v.Remount();
  NodeId n2 = v.Node(kRootIno, "f");
  CHECK(n2 == n);
  CHECK(v.ReadAll(n2) == data);
  CHECK(v.Fsck() == 0);
}

TEST_CASE("partial block overwrites and sparse regions") {
  CoreVolume v;
  NodeId n = v.Put(kRootIno, "f", std::string(10000, 'a'));
  REQUIRE(v.WriteAt(n, 4090, "XYZ").ok());
  REQUIRE(v.WriteAt(n, 5 * 1024 * 1024, "tail").ok());  // hole in between
  std::string want(10000, 'a');
  want.replace(4090, 3, "XYZ");
  want.resize(5 * 1024 * 1024, '\0');
  want += "tail";
  CHECK(v.ReadAll(n) == want);
  auto a = v.fs->GetAttr(n);
  REQUIRE(a.ok());
  CHECK(a->st.st_size == static_cast<off_t>(want.size()));
  CHECK(a->st.st_blocks < static_cast<blkcnt_t>(want.size() / 512));  // sparse
  auto fh = v.fs->OpenFile(n, O_RDONLY);
  REQUIRE(fh.ok());
  auto hole = v.fs->Lseek(*fh, 0, SEEK_HOLE);
  REQUIRE(hole.ok());
  CHECK(*hole == 12288);
  auto data = v.fs->Lseek(*fh, 20000, SEEK_DATA);
  REQUIRE(data.ok());
  CHECK(*data == 5 * 1024 * 1024);
  CHECK(v.fs->Lseek(*fh, want.size() + 1, SEEK_DATA).status().Is(Code::kNoData));
  REQUIRE(v.fs->Release(*fh).ok());
  CHECK(v.Fsck() == 0);
}

TEST_CASE("a write from the page cache (kernel times) into a hole counts its new blocks") {
  // The FUSE adapter writes the kernel's dirty pages with kernel_times: the
  // attribute record is rewritten only when the size or the block count
  // changes. Filling a hole inside the file changes the block count (the
  // record once kept the old one: st_blocks too small, for good).
  CoreVolume v;
  NodeId n = v.Put(kRootIno, "f", "");
  REQUIRE(v.WriteAt(n, 5 * 4096, std::string(4096, 'e')).ok());  // blocks 0-4: holes
  auto a0 = v.fs->GetAttr(n);
  REQUIRE(a0.ok());
  CHECK(a0->st.st_blocks == 8);
  auto fh = v.fs->OpenFile(n, O_RDWR);
  REQUIRE(fh.ok());
  const std::string one(4096, '1'), two(100, '2'), three(4096, '3');
  REQUIRE(v.fs->Write(*fh, 0, one.data(), one.size(), /*kernel_times=*/true).ok());
  REQUIRE(v.fs->Write(*fh, 2 * 4096 + 50, two.data(), two.size(), true).ok());
  // In place (block 0 was born at the live epoch): no count change.
  REQUIRE(v.fs->Write(*fh, 0, three.data(), three.size(), true).ok());
  auto a = v.fs->GetAttr(n);
  REQUIRE(a.ok());
  CHECK(a->st.st_blocks == 3 * 8);
  CHECK(a->st.st_size == 6 * 4096);
  // The caller keeps the times: none changed.
  CHECK(a->st.st_mtim.tv_sec == a0->st.st_mtim.tv_sec);
  CHECK(a->st.st_mtim.tv_nsec == a0->st.st_mtim.tv_nsec);
  CHECK(a->st.st_ctim.tv_nsec == a0->st.st_ctim.tv_nsec);
  REQUIRE(v.fs->Release(*fh).ok());
  std::string want = three + std::string(4096, '\0') + std::string(50, '\0') + two;
  want.resize(5 * 4096, '\0');
  want += std::string(4096, 'e');
  CHECK(v.ReadAll(n) == want);
  v.Remount();
  a = v.fs->GetAttr(n);
  REQUIRE(a.ok());
  CHECK(a->st.st_blocks == 3 * 8);
  CHECK(v.ReadAll(n) == want);
  CHECK(v.Fsck() == 0);
}

TEST_CASE("files beyond 4 GiB") {
  CoreVolume v;
  NodeId n = v.Put(kRootIno, "big", "");
  uint64_t off = (5ull << 30) + 17;
  REQUIRE(v.WriteAt(n, off, "far").ok());
  auto fh = v.fs->OpenFile(n, O_RDONLY);
  REQUIRE(fh.ok());
  char buf[8] = {0};
  auto r = v.fs->Read(*fh, off - 2, 8, buf);
  REQUIRE(r.ok());
  CHECK(*r == 5);
  CHECK(std::string(buf, 5) == std::string("\0\0far", 5));
  REQUIRE(v.fs->Release(*fh).ok());
}

TEST_CASE("truncate down then up reads zeros") {
  CoreVolume v;
  NodeId n = v.Put(kRootIno, "t", Pattern(20000, 2));
  struct stat st {};
  st.st_size = 5000;
  REQUIRE(v.fs->SetAttr(n, st, kSetSize, v.cred).ok());
  st.st_size = 30000;
  REQUIRE(v.fs->SetAttr(n, st, kSetSize, v.cred).ok());
  std::string want = Pattern(20000, 2).substr(0, 5000) + std::string(25000, '\0');
  CHECK(v.ReadAll(n) == want);
  CHECK(v.Fsck() == 0);
}

TEST_CASE("SetAttr kKillSuidGid clears set-ID bits as Linux does, and alone commits nothing") {
  CoreVolume v;
  auto mode_of = [&](NodeId n) {
    auto a = v.fs->GetAttr(n);
    REQUIRE(a.ok());
    return a->st.st_mode & 07777;
  };
  auto ctime_of = [&](NodeId n) {
    auto a = v.fs->GetAttr(n);
    REQUIRE(a.ok());
    return a->st.st_ctim.tv_sec * 1000000000LL + a->st.st_ctim.tv_nsec;
  };
  struct stat st {};
  auto set_mode = [&](NodeId n, mode_t m) {
    st.st_mode = m;
    REQUIRE(v.fs->SetAttr(n, st, kSetMode, v.cred).ok());
  };
  struct Case {
    mode_t before;
    uint32_t bits;
    mode_t after;
  };
  const Case cases[] = {
      {06755, kKillSuidGid, 00755},              // group-exec: both go
      {04644, kKillSuidGid, 00644},              // set-UID alone
      {02745, kKillSuidGid, 02745},              // set-GID without group-exec stays
      {02745, kKillSuidGid | kKillSgid, 00745},  // ... unless the caller is not in the group
      {00755, kKillSuidGid, 00755},
      {06755, kKillSgid, 06755},  // kKillSgid alone means nothing
  };
  int i = 0;
  for (const Case& c : cases) {
    NodeId n = v.Put(kRootIno, "k" + std::to_string(i++), "data");
    set_mode(n, c.before);
    const int64_t ctime = ctime_of(n);
    auto r = v.fs->SetAttr(n, st, c.bits, v.cred);
    REQUIRE(r.ok());
    INFO("mode " << std::oct << c.before << " bits " << std::hex << c.bits);
    CHECK((r->st.st_mode & 07777) == c.after);
    CHECK(mode_of(n) == c.after);
    if (c.after == c.before && c.bits == kKillSuidGid) {
      // Nothing to clear: no change, not even ctime (SetAttr returned
      // before its transaction).
      CHECK(ctime_of(n) == ctime);
    }
  }
  // A directory keeps its bits (set-GID on a directory is inheritance).
  NodeId d = v.Mkdir(kRootIno, "dir");
  set_mode(d, 06755);
  REQUIRE(v.fs->SetAttr(d, st, kKillSuidGid | kKillSgid, v.cred).ok());
  CHECK(mode_of(d) == 06755);
  // With other changes: the kill applies to the result (truncate + kill).
  NodeId t = v.Put(kRootIno, "trunc", Pattern(9000, 1));
  set_mode(t, 06770);
  st.st_size = 10;
  auto r = v.fs->SetAttr(t, st, kSetSize | kKillSuidGid, v.cred);
  REQUIRE(r.ok());
  CHECK((r->st.st_mode & 07777) == 00770);
  CHECK(r->st.st_size == 10);
  // An empty SetAttr (chown(f, -1, -1) without a kill) still updates ctime.
  const int64_t ctime = ctime_of(t);
  struct timespec pause = {0, 10000000};  // file times tick in 4 ms steps (NowNs)
  nanosleep(&pause, nullptr);
  REQUIRE(v.fs->SetAttr(t, st, 0, v.cred).ok());
  CHECK(ctime_of(t) > ctime);
  CHECK(v.Fsck() == 0);
}

TEST_CASE("fallocate and punch hole") {
  CoreVolume v;
  NodeId n = v.Put(kRootIno, "p", std::string(40000, 'x'));
  auto fh = v.fs->OpenFile(n, O_RDWR);
  REQUIRE(fh.ok());
  REQUIRE(v.fs->Fallocate(*fh, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 1000, 20000).ok());
  REQUIRE(v.fs->Fallocate(*fh, 0, 40000, 100000).ok());
  REQUIRE(v.fs->Release(*fh).ok());
  std::string want(40000, 'x');
  for (int i = 1000; i < 21000; ++i) want[i] = '\0';
  want.resize(140000, '\0');
  CHECK(v.ReadAll(n) == want);
  CHECK(v.fs->Fallocate(*v.fs->OpenFile(n, O_RDWR), 0x40, 0, 10).Is(Code::kNotSupported));
  CHECK(v.Fsck() == 0);
}

TEST_CASE("directories, errors and link counts") {
  CoreVolume v;
  NodeId d = v.Mkdir(kRootIno, "d");
  NodeId sub = v.Mkdir(d, "sub");
  (void)sub;
  v.Put(d, "f", "hello");
  CHECK(v.fs->MkDir(kRootIno, "d", 0755, v.cred).status().Is(Code::kExists));
  CHECK(v.fs->RmDir(kRootIno, "d").Is(Code::kNotEmpty));
  CHECK(v.fs->RmDir(d, "f").Is(Code::kNotDir));
  CHECK(v.fs->Unlink(d, "sub").Is(Code::kIsDir));
  CHECK(v.fs->Lookup(d, "nope").status().Is(Code::kNotFound));
  CHECK(v.fs->Lookup(kRootIno, std::string(256, 'n')).status().Is(Code::kNameTooLong));
  CHECK(v.fs->MkDir(kRootIno, std::string(255, 'n'), 0755, v.cred).ok());
  CHECK(v.fs->GetAttr(d)->st.st_nlink == 3);
  CHECK(v.fs->GetAttr(kRootIno)->st.st_nlink == 4);  // ., d, 255-n dir
  auto fnode = v.Node(d, "f");
  REQUIRE(v.fs->Link(fnode, kRootIno, "hard").ok());
  CHECK(v.fs->GetAttr(fnode)->st.st_nlink == 2);
  REQUIRE(v.fs->Unlink(d, "f").ok());
  CHECK(v.fs->GetAttr(fnode)->st.st_nlink == 1);
  CHECK(v.ReadAll(v.Node(kRootIno, "hard")) == "hello");
  REQUIRE(v.fs->RmDir(d, "sub").ok());
  REQUIRE(v.fs->RmDir(kRootIno, "d").ok());
  CHECK(v.fs->GetAttr(kRootIno)->st.st_nlink == 3);
  CHECK(v.fs->MkDir(kRootIno, ".snapshots", 0755, v.cred).status().Is(Code::kExists));
  auto sl = v.fs->Symlink(kRootIno, "ln", "hard", v.cred);
  REQUIRE(sl.ok());
  CHECK(*v.fs->ReadLink(sl->node) == "hard");
  CHECK(v.Fsck() == 0);
}

TEST_CASE("rename: replace, exchange, noreplace, loops") {
  CoreVolume v;
  NodeId a = v.Mkdir(kRootIno, "a");
  NodeId b = v.Mkdir(kRootIno, "b");
  v.Put(a, "x", "X");
  v.Put(b, "y", "Y");
  REQUIRE(v.fs->Rename(a, "x", b, "y", 0).ok());  // replace across dirs
  CHECK(v.ReadAll(v.Node(b, "y")) == "X");
  CHECK(v.fs->Lookup(a, "x").status().Is(Code::kNotFound));
  v.Put(a, "x2", "X2");
  CHECK(v.fs->Rename(a, "x2", b, "y", RENAME_NOREPLACE).Is(Code::kExists));
  REQUIRE(v.fs->Rename(a, "x2", b, "y", RENAME_EXCHANGE).ok());
  CHECK(v.ReadAll(v.Node(b, "y")) == "X2");
  CHECK(v.ReadAll(v.Node(a, "x2")) == "X");
  CHECK(v.fs->Rename(kRootIno, "a", a, "inside", 0).Is(Code::kInvalid));
  NodeId c = v.Mkdir(b, "c");
  v.Put(c, "f", "f");
  CHECK(v.fs->Rename(kRootIno, "a", b, "c", 0).Is(Code::kNotEmpty));
  CHECK(v.fs->Rename(a, "x2", kRootIno, "b", 0).Is(Code::kIsDir));
  CHECK(v.fs->Rename(kRootIno, "a", b, "y", 0).Is(Code::kNotDir));
  REQUIRE(v.fs->Rename(kRootIno, "a", c, "a", 0).ok());  // dir moves down
  CHECK(v.fs->GetAttr(c)->st.st_nlink == 3);
  CHECK(v.fs->GetAttr(kRootIno)->st.st_nlink == 3);
  CHECK(v.Fsck() == 0);
}

TEST_CASE("an unlinked open file stays readable until closed, then its space returns") {
  CoreVolume v;
  uint64_t free0 = v.FreeBlocks();
  NodeId n = v.Put(kRootIno, "o", Pattern(1 << 20, 3));
  auto fh = v.fs->OpenFile(n, O_RDWR);
  REQUIRE(fh.ok());
  REQUIRE(v.fs->Unlink(kRootIno, "o").ok());
  std::string buf(1 << 20, '\0');
  auto r = v.fs->Read(*fh, 0, buf.size(), buf.data());
  REQUIRE(r.ok());
  CHECK(buf == Pattern(1 << 20, 3));
  CHECK(v.FreeBlocks() < free0);
  REQUIRE(v.fs->Release(*fh).ok());
  CHECK(v.FreeBlocks() == free0);
  CHECK(v.Fsck() == 0);
}

TEST_CASE("an orphan left by a crash is removed at the next mount") {
  CoreVolume v;
  uint64_t free0 = v.FreeBlocks();
  NodeId n = v.Put(kRootIno, "o", Pattern(300000, 4));
  auto fh = v.fs->OpenFile(n, O_RDONLY);
  REQUIRE(fh.ok());
  REQUIRE(v.fs->Unlink(kRootIno, "o").ok());
  v.Remount();  // close with the handle still open: the orphan survives
  CHECK(v.FreeBlocks() == free0);
  CHECK(v.Fsck() == 0);
}

TEST_CASE("xattrs") {
  CoreVolume v;
  NodeId n = v.Put(kRootIno, "x", "");
  REQUIRE(v.fs->SetXattr(n, "user.a", "1", 0).ok());
  CHECK(v.fs->SetXattr(n, "user.a", "2", XATTR_CREATE).Is(Code::kExists));
  CHECK(v.fs->SetXattr(n, "user.b", "2", XATTR_REPLACE).Is(Code::kNoAttr));
  REQUIRE(v.fs->SetXattr(n, "user.b", std::string(), 0).ok());
  CHECK(*v.fs->GetXattr(n, "user.a") == "1");
  CHECK(v.fs->GetXattr(n, "user.b")->empty());
  CHECK(*v.fs->ListXattr(n) == std::string("user.a\0user.b\0", 14));
  REQUIRE(v.fs->RemoveXattr(n, "user.a").ok());
  CHECK(v.fs->GetXattr(n, "user.a").status().Is(Code::kNoAttr));
  CHECK(v.fs->RemoveXattr(n, "user.a").Is(Code::kNoAttr));
}

TEST_CASE("a full image gives ENOSPC and nothing breaks; space returns after delete") {
  CoreVolume v(8ull << 20);
  std::string mb = Pattern(1 << 20, 5);
  int written = 0;
  Status last;
  auto r = v.fs->Create(kRootIno, "fill", 0644, O_RDWR, v.cred);
  REQUIRE(r.ok());
  for (int i = 0; i < 20; ++i) {
    auto w = v.fs->Write(r->second, uint64_t(i) << 20, mb.data(), mb.size());
    if (!w.ok()) {
      last = w.status();
      break;
    }
    ++written;
  }
  REQUIRE(v.fs->Release(r->second).ok());
  CHECK(last.Is(Code::kNoSpace));
  CHECK(written >= 6);
  CHECK(written < 8);
  NodeId n = v.Node(kRootIno, "fill");
  std::string got = v.ReadAll(n);
  REQUIRE(got.size() == size_t(written) << 20);
  for (int i = 0; i < written; ++i) CHECK(got.compare(size_t(i) << 20, 1 << 20, mb) == 0);
  REQUIRE(v.fs->Unlink(kRootIno, "fill").ok());
  v.Put(kRootIno, "again", mb);  // space came back
  CHECK(v.Fsck() == 0);
}

TEST_CASE("with kernel lookup counts, an unlinked file no handle holds goes at once; one open lives on") {
  CoreVolume v;
  v.count_lookups = true;
  v.Remount();
  uint64_t free0 = v.FreeBlocks();
  const uint64_t files0 = v.fs->Stats().files;
  NodeId n = v.Put(kRootIno, "f", Pattern(100000, 8));  // Create: one reference
  REQUIRE(v.fs->Unlink(kRootIno, "f").ok());
  // No handle is open: the file is destroyed by the unlink's own commit
  // (its blocks free, no record left for fsck to find), though the kernel
  // still references the node (a ghost until its FORGET).
  CHECK(v.FreeBlocks() == free0);
  CHECK(v.fs->Stats().files == files0);
  // The kernel's late SETATTR (write-back of the times it set) is answered,
  // and a GETATTR says what the unlink left.
  struct stat st {};
  st.st_mtim.tv_sec = 12345;
  auto r = v.fs->SetAttr(n, st, kSetMtime, v.cred);
  REQUIRE_MESSAGE(r.ok(), r.status().ToString());
  CHECK(r->st.st_nlink == 0);
  CHECK(r->st.st_mtim.tv_sec == 12345);
  auto g = v.fs->GetAttr(n);
  REQUIRE(g.ok());
  CHECK(g->st.st_nlink == 0);
  CHECK(g->st.st_size == 100000);
  // Nothing else reaches it: an open is refused, a change of anything but
  // times finds no inode, and none writes a record.
  CHECK(v.fs->OpenFile(n, O_RDONLY).status().Is(Code::kNotFound));
  struct stat md {};
  md.st_mode = 0600;
  CHECK(v.fs->SetAttr(n, md, kSetMode, v.cred).status().Is(Code::kStale));
  CHECK_FALSE(v.fs->SetXattr(n, "user.a", "1", 0).ok());
  CHECK(v.fs->Stats().files == files0);
  // An unlinked file that is still open keeps what it is told.
  NodeId o = v.Put(kRootIno, "open", "data");
  auto fh = v.fs->OpenFile(o, O_RDONLY);
  REQUIRE(fh.ok());
  REQUIRE(v.fs->Unlink(kRootIno, "open").ok());
  REQUIRE(v.fs->SetAttr(o, st, kSetMtime, v.cred).ok());
  CHECK(v.fs->GetAttr(o)->st.st_mtim.tv_sec == 12345);
  REQUIRE(v.fs->SetAttr(o, md, kSetMode, v.cred).ok());
  CHECK((v.fs->GetAttr(o)->st.st_mode & 07777) == 0600);
  CHECK(v.ReadAll(o) == "data");
  CHECK(v.FreeBlocks() < free0);
  REQUIRE(v.fs->Release(*fh).ok());
  // Released, but the kernel still references it: it waits for the FORGET.
  CHECK(v.FreeBlocks() < free0);
  v.fs->Forget(o, 1);
  v.fs->Forget(n, 1);
  CHECK(v.FreeBlocks() == free0);
  CHECK(v.fs->GetAttr(n).status().Is(Code::kStale));
  CHECK(v.fs->GetAttr(o).status().Is(Code::kStale));
  CHECK(v.Fsck() == 0);
}

TEST_CASE("an open that read the attributes before the unlink of the last name is refused after it") {
  // The kernel may send OPEN for a node it found before the unlink. An
  // open that read the file's attributes before the unlink committed, and
  // registers its handle after, must not get a handle on the destroyed
  // file (its reads would give blocks that are free): it is refused.
  CoreVolume v;
  v.count_lookups = true;
  v.Remount();
  const uint64_t free0 = v.FreeBlocks();
  NodeId n = v.Put(kRootIno, "f", Pattern(20000, 3));
  std::promise<void> read, go;
  std::shared_future<void> go_f = go.get_future().share();
  SyncPoint::SetCallback("FileSystem::OpenFile:AttrRead", [&] {
    read.set_value();
    go_f.wait();
  });
  SyncPoint::Enable();
  auto opened = std::async(std::launch::async, [&] { return v.fs->OpenFile(n, O_RDONLY); });
  read.get_future().wait();
  REQUIRE(v.fs->Unlink(kRootIno, "f").ok());
  go.set_value();
  Result<uint64_t> fh = opened.get();
  SyncPoint::ClearAll();
  SyncPoint::Disable();
  CHECK(fh.status().Is(Code::kNotFound));
  if (fh.ok()) (void)v.fs->Release(*fh);
  CHECK(v.FreeBlocks() == free0);
  v.fs->Forget(n, 1);
  CHECK(v.Fsck() == 0);

  // The same open, registered before the unlink decides: the file is an
  // orphan and reads whole until its release.
  n = v.Put(kRootIno, "g", Pattern(20000, 4));
  auto h = v.fs->OpenFile(n, O_RDONLY);
  REQUIRE(h.ok());
  REQUIRE(v.fs->Unlink(kRootIno, "g").ok());
  CHECK(v.ReadAll(n) == Pattern(20000, 4));
  REQUIRE(v.fs->Release(*h).ok());
  v.fs->Forget(n, 1);
  CHECK(v.FreeBlocks() == free0);
  CHECK(v.Fsck() == 0);
}

TEST_CASE("a restore that brings back a file unlinked while the kernel referenced it reopens it") {
  CoreVolume v;
  v.count_lookups = true;
  v.Remount();
  const std::string want = Pattern(30000, 9);
  NodeId n = v.Put(kRootIno, "f", want);  // one kernel reference, kept
  REQUIRE(v.fs->CreateSnapshot("s").ok());
  REQUIRE(v.fs->Unlink(kRootIno, "f").ok());
  CHECK(v.fs->OpenFile(n, O_RDONLY).status().Is(Code::kNotFound));  // a ghost
  auto r = v.fs->Restore("s");
  REQUIRE_MESSAGE(r.ok(), r.status().ToString());
  // The same inode number is back: the kernel's old reference opens it.
  CHECK(v.Node(kRootIno, "f") == n);
  CHECK(v.ReadAll(n) == want);
  auto g = v.fs->GetAttr(n);
  REQUIRE(g.ok());
  CHECK(g->st.st_nlink == 1);
  v.fs->Forget(n, 2);
  CHECK(v.ReadAll(v.Node(kRootIno, "f")) == want);
  CHECK(v.Fsck() == 0);
}

// Unlinks `nodes` (named f0, f1, ... in the root) while each is open, then
// closes them: orphans the kernel still references, which their FORGET
// destroys (an unlinked file no handle holds goes at its unlink).
static void UnlinkWhileOpen(CoreVolume& v, const std::vector<NodeId>& nodes) {
  std::vector<uint64_t> hs;
  for (NodeId n : nodes) {
    auto h = v.fs->OpenFile(n, O_RDONLY);
    REQUIRE(h.ok());
    hs.push_back(*h);
  }
  for (size_t i = 0; i < nodes.size(); ++i) {
    REQUIRE(v.fs->Unlink(kRootIno, "f" + std::to_string(i)).ok());
  }
  for (uint64_t h : hs) REQUIRE(v.fs->Release(h).ok());
}

TEST_CASE("with kernel lookup counts, a batch of FORGETs destroys its unlinked files 32 to a commit") {
  CoreVolume v;
  v.count_lookups = true;
  v.Remount();
  const uint64_t free0 = v.FreeBlocks();
  const uint64_t files0 = v.fs->Stats().files;
  constexpr int kFiles = 40;
  std::vector<NodeId> nodes;
  for (int i = 0; i < kFiles; ++i) {
    nodes.push_back(v.Put(kRootIno, "f" + std::to_string(i), Pattern(5000, i)));  // one reference
  }
  REQUIRE(v.fs->Lookup(kRootIno, "f7").ok());  // f7: two references
  auto fh = v.fs->OpenFile(nodes[20], O_RDONLY);  // f20: open
  REQUIRE(fh.ok());
  UnlinkWhileOpen(v, nodes);
  std::vector<FileSystem::Forgotten> batch;
  for (NodeId n : nodes) batch.push_back({n, 1});
  batch.push_back({kRootIno, 0});  // a node that stays: nothing to do
  const uint64_t commits0 = v.fs->Stats().commits;
  v.fs->ForgetMany(batch);
  // 38 files are gone, in two commits (32 and 6), not 38.
  CHECK(v.fs->Stats().commits - commits0 == 2);
  for (int i = 0; i < kFiles; ++i) {
    const bool kept = i == 7 || i == 20;
    CHECK_MESSAGE(v.fs->GetAttr(nodes[i]).status().Is(Code::kStale) == !kept, i);
  }
  CHECK(v.fs->GetAttr(nodes[7])->st.st_nlink == 0);
  CHECK(v.fs->Stats().files == files0 + 2);
  CHECK(v.fs->Stats().kernel_refs == 1);  // f7's second reference
  // The open one stays readable until its release.
  CHECK(v.ReadAll(nodes[20]) == Pattern(5000, 20));
  v.fs->ForgetMany(std::vector<FileSystem::Forgotten>{{nodes[7], 1}});
  CHECK(v.fs->GetAttr(nodes[7]).status().Is(Code::kStale));
  REQUIRE(v.fs->Release(*fh).ok());
  CHECK(v.fs->GetAttr(nodes[20]).status().Is(Code::kStale));
  CHECK(v.fs->Stats().files == files0);
  CHECK(v.FreeBlocks() == free0);
  CHECK(v.Fsck() == 0);
}

TEST_CASE("with kernel lookup counts, FORGETs that come while another destroys are left to it") {
  CoreVolume v;
  v.count_lookups = true;
  v.Remount();
  const uint64_t free0 = v.FreeBlocks();
  std::vector<NodeId> nodes;
  for (int i = 0; i < 6; ++i) nodes.push_back(v.Put(kRootIno, "f" + std::to_string(i), "x"));
  UnlinkWhileOpen(v, nodes);
  std::promise<void> committing, go;
  std::shared_future<void> go_f = go.get_future().share();
  std::atomic<bool> first{true};
  SyncPoint::SetCallback("Committer::Apply:BeforeWrite", [&] {
    if (first.exchange(false)) {
      committing.set_value();
      go_f.wait();
    }
  });
  SyncPoint::Enable();
  const uint64_t commits0 = v.fs->Stats().commits;
  std::thread a([&] { v.fs->Forget(nodes[0], 1); });
  committing.get_future().wait();
  // f0's destroy is committing: the other FORGETs return at once, their
  // files left to that thread.
  for (int i = 1; i < 6; ++i) v.fs->Forget(nodes[i], 1);
  for (int i = 1; i < 6; ++i) CHECK_MESSAGE(v.fs->GetAttr(nodes[i]).ok(), i);
  go.set_value();
  a.join();
  SyncPoint::ClearAll();
  SyncPoint::Disable();
  // f0 alone, then the five together.
  CHECK(v.fs->Stats().commits - commits0 == 2);
  for (int i = 0; i < 6; ++i) CHECK_MESSAGE(v.fs->GetAttr(nodes[i]).status().Is(Code::kStale), i);
  CHECK(v.FreeBlocks() == free0);
  CHECK(v.Fsck() == 0);
}

TEST_CASE("with kernel lookup counts, thousands of unlinked inodes are destroyed once, at their last FORGET") {
  CoreVolume v;
  v.count_lookups = true;
  v.Remount();
  const uint64_t free0 = v.FreeBlocks();
  const uint64_t files0 = v.fs->Stats().files;
  const uint64_t cache0 = v.fs->Stats().metadata_cache_bytes;
  constexpr int kFiles = 3000;  // past the table's first sizes: it grows and shrinks
  std::vector<NodeId> nodes;
  for (int i = 0; i < kFiles; ++i) {
    nodes.push_back(v.Put(kRootIno, "f" + std::to_string(i), "x"));  // Create: one reference
    if (i % 2 == 0) REQUIRE(v.fs->Lookup(kRootIno, "f" + std::to_string(i)).ok());  // two
  }
  VolumeStats s = v.fs->Stats();
  CHECK(s.kernel_refs == kFiles);
  CHECK(s.kernel_refs_bytes >= kFiles * 8);
  // The table is charged to the metadata cache.
  CHECK(s.metadata_cache_bytes == cache0 - s.kernel_refs_bytes);
  std::vector<uint64_t> open;
  for (int i = 0; i < kFiles; i += 100) {
    auto fh = v.fs->OpenFile(nodes[i], O_RDONLY);
    REQUIRE(fh.ok());
    open.push_back(*fh);
  }
  UnlinkWhileOpen(v, nodes);
  const uint64_t held = v.FreeBlocks();
  CHECK(held < free0);
  // One FORGET each: the odd ones (one reference) go, the even ones stay.
  for (NodeId n : nodes) v.fs->Forget(n, 1);
  for (int i = 0; i < kFiles; ++i) {
    const bool gone = i % 2 == 1;
    CHECK_MESSAGE(v.fs->GetAttr(nodes[i]).status().Is(Code::kStale) == gone, i);
  }
  CHECK(v.fs->Stats().kernel_refs == kFiles / 2);
  // The rest: all but the open ones go; a FORGET too many changes nothing.
  for (int i = 0; i < kFiles; i += 2) v.fs->Forget(nodes[i], 1);
  for (int i = 0; i < kFiles; i += 2) v.fs->Forget(nodes[i], 1);
  CHECK(v.fs->Stats().kernel_refs == 0);
  for (int i = 0; i < kFiles; ++i) {
    CHECK_MESSAGE(v.fs->GetAttr(nodes[i]).status().Is(Code::kStale) == (i % 100 != 0), i);
  }
  CHECK(v.fs->Stats().files == files0 + open.size());
  for (uint64_t fh : open) REQUIRE(v.fs->Release(fh).ok());
  CHECK(v.fs->Stats().files == files0);
  CHECK(v.FreeBlocks() == free0);
  // Nothing referenced: the cache has its whole share back but the
  // smallest table.
  s = v.fs->Stats();
  CHECK(s.kernel_refs_bytes <= 1024 * 8);
  CHECK(s.metadata_cache_bytes == cache0 - s.kernel_refs_bytes);
  CHECK(v.Fsck() == 0);
}
