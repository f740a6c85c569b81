// The live cache of open files (fs/core/live_cache.h): its generation rule
// directly, and through the core that a file held open sees every kind of
// change made to it — by another handle, by truncate and punch, by a
// snapshot followed by a redirect-on-write, by restore and by receive, none
// of which go through the reader's handle.
#include <linux/falloc.h>

#include <cstring>

#include "fs/core/live_cache.h"
#include "tests/common/core_test_util.h"

using namespace psm;
using psm_test::CoreVolume;
using psm_test::Pattern;

namespace {

std::string ReadFh(FileSystem& fs, uint64_t fh, size_t max = 8u << 20) {
  std::string out(max, '\0');
  auto n = fs.Read(fh, 0, out.size(), out.data());
  REQUIRE_MESSAGE(n.ok(), n.status().ToString());
  out.resize(*n);
  return out;
}

}  // namespace

TEST_CASE("live cache: a value read before an invalidation is never inserted after it") {
  LiveCache c;
  InodeAttr a, got;
  a.size = 7;
  uint64_t gen = 0;
  CHECK(c.GetAttr(42, &got, &gen) == LiveCache::Hit::kOff);  // not open: not cached
  c.PutAttr(42, gen, a);
  CHECK(c.GetAttr(42, &got, &gen) == LiveCache::Hit::kOff);
  c.Enable(42);
  REQUIRE(c.GetAttr(42, &got, &gen) == LiveCache::Hit::kMiss);
  c.Invalidate(42);  // a commit lands between the reader's ticket and its insert
  c.PutAttr(42, gen, a);
  CHECK(c.GetAttr(42, &got, &gen) == LiveCache::Hit::kMiss);
  c.PutAttr(42, gen, a);  // a fresh ticket is honoured
  REQUIRE(c.GetAttr(42, &got, &gen) == LiveCache::Hit::kHit);
  CHECK(got.size == 7);

  bool present = true;
  std::vector<Extent> ext{{0, 4, 100, 1, 0}}, out;
  REQUIRE(c.GetChunk(42, 3, &present, &out, &gen) == LiveCache::Hit::kMiss);
  c.PutChunk(42, 3, gen, true, ext);
  REQUIRE(c.GetChunk(42, 3, &present, &out, &gen) == LiveCache::Hit::kHit);
  CHECK(present);
  CHECK(out == ext);
  REQUIRE(c.GetChunk(42, 4, &present, &out, &gen) == LiveCache::Hit::kMiss);
  c.PutChunk(42, 4, gen, false, {});  // a hole is cached as one
  REQUIRE(c.GetChunk(42, 4, &present, &out, &gen) == LiveCache::Hit::kHit);
  CHECK_FALSE(present);
  CHECK(c.chunks_cached() == 2);
  c.Invalidate(std::vector<uint64_t>{7, 42, 42});
  CHECK(c.chunks_cached() == 0);
  CHECK(c.GetAttr(42, &got, &gen) == LiveCache::Hit::kMiss);

  // The last close drops the entry; a ticket from before a close and a
  // reopen is stale.
  REQUIRE(c.GetAttr(42, &got, &gen) == LiveCache::Hit::kMiss);
  c.Enable(42);  // a second handle
  c.Disable(42);
  c.PutAttr(42, gen, a);  // still open once: accepted
  CHECK(c.GetAttr(42, &got, &gen) == LiveCache::Hit::kHit);
  c.Invalidate(42);
  REQUIRE(c.GetAttr(42, &got, &gen) == LiveCache::Hit::kMiss);
  c.Disable(42);
  c.Enable(42);
  c.PutAttr(42, gen, a);
  CHECK(c.GetAttr(42, &got, &gen) == LiveCache::Hit::kMiss);
  c.Disable(42);
  CHECK(c.GetAttr(42, &got, &gen) == LiveCache::Hit::kOff);
}

TEST_CASE("live cache: a file held open sees every change made around its handle") {
  const uint64_t kChunk = 64 * 1024;
  CoreVolume v(64ull << 20, kChunk);
  std::string model = Pattern(3 * kChunk + 1000, 1);
  NodeId f = v.Put(kRootIno, "f", model);
  auto fh = v.fs->OpenFile(f, O_RDONLY);
  REQUIRE(fh.ok());
  CHECK(ReadFh(*v.fs, *fh) == model);
  const uint64_t hits0 = v.fs->Stats().cache_hits;
  CHECK(v.fs->Stats().cached_chunk_maps >= 3);
  CHECK(ReadFh(*v.fs, *fh) == model);
  CHECK(v.fs->Stats().cache_hits > hits0);  // the second read came from the cache

  auto rw = v.fs->OpenFile(f, O_RDWR);
  REQUIRE(rw.ok());
  auto write = [&](uint64_t off, const std::string& d) {
    auto w = v.fs->Write(*rw, off, d.data(), d.size());
    REQUIRE(w.ok());
    if (model.size() < off + d.size()) model.resize(off + d.size(), '\0');
    model.replace(off, d.size(), d);
  };

  SUBCASE("overwrite in place, then redirect-on-write after a snapshot") {
    write(100, "in place");
    CHECK(ReadFh(*v.fs, *fh) == model);
    REQUIRE(v.fs->CreateSnapshot("s1").ok());
    write(kChunk + 5, Pattern(9000, 2));  // new blocks: the cached map is wrong now
    CHECK(ReadFh(*v.fs, *fh) == model);
    write(model.size() + 3 * kChunk, "far past the end");  // size and a new chunk
    CHECK(ReadFh(*v.fs, *fh) == model);
  }
  SUBCASE("truncate down and up, punch a hole") {
    struct stat st {};
    st.st_size = static_cast<off_t>(kChunk + 10);
    REQUIRE(v.fs->SetAttr(f, st, kSetSize, v.cred).ok());
    model.resize(kChunk + 10);
    CHECK(ReadFh(*v.fs, *fh) == model);
    st.st_size = static_cast<off_t>(2 * kChunk);
    REQUIRE(v.fs->SetAttr(f, st, kSetSize, v.cred).ok());
    model.resize(2 * kChunk, '\0');
    CHECK(ReadFh(*v.fs, *fh) == model);
    write(0, Pattern(kChunk, 3));
    REQUIRE(v.fs->Fallocate(*rw, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 4096, 8192).ok());
    std::memset(model.data() + 4096, 0, 8192);
    CHECK(ReadFh(*v.fs, *fh) == model);
  }
  SUBCASE("restore to a snapshot under the open handle") {
    REQUIRE(v.fs->CreateSnapshot("before").ok());
    const std::string saved = model;
    write(10, Pattern(2 * kChunk, 4));
    write(model.size(), "grown");
    CHECK(ReadFh(*v.fs, *fh) == model);
    auto r = v.fs->Restore("before");
    REQUIRE_MESSAGE(r.ok(), r.status().ToString());
    CHECK(ReadFh(*v.fs, *fh) == saved);
    model = saved;
  }
  SUBCASE("unlinked while open") {
    REQUIRE(v.fs->Unlink(kRootIno, "f").ok());
    write(7, "still here");
    CHECK(ReadFh(*v.fs, *fh) == model);
  }
  REQUIRE(v.fs->Release(*rw).ok());
  CHECK(ReadFh(*v.fs, *fh) == model);
  REQUIRE(v.fs->Release(*fh).ok());
  CHECK(v.fs->Stats().cached_chunk_maps == 0);  // the last close drops the file's maps
  CHECK(v.Fsck() == 0);
}

TEST_CASE("live cache: a receive changes a file that is open on the receiving side") {
  const uint64_t kChunk = 64 * 1024;
  CoreVolume a(64ull << 20, kChunk), b(64ull << 20, kChunk);
  std::string one = Pattern(2 * kChunk, 5);
  NodeId fa = a.Put(kRootIno, "f", one);
  REQUIRE(a.fs->CreateSnapshot("s1").ok());
  auto stream = [&](const std::string& snap, const std::string& base) {
    std::string out;
    SendOptions o;
    o.snapshot = snap;
    o.base = base;
    auto r = a.fs->Send(
        o,
        [&](std::string_view p) {
          out.append(p);
          return Status::Ok();
        },
        [](uint64_t) {});
    REQUIRE_MESSAGE(r.ok(), r.status().ToString());
    return out;
  };
  auto receive = [&](const std::string& s) {
    size_t pos = 0;
    ReceiveOptions o;
    auto r = b.fs->Receive(o, [&](char* buf, size_t n) -> Result<size_t> {
      size_t k = std::min(n, s.size() - pos);
      std::memcpy(buf, s.data() + pos, k);
      pos += k;
      return k;
    });
    REQUIRE_MESSAGE(r.ok(), r.status().ToString());
  };
  receive(stream("s1", ""));
  NodeId fb = b.Node(kRootIno, "f");
  auto fh = b.fs->OpenFile(fb, O_RDONLY);
  REQUIRE(fh.ok());
  CHECK(ReadFh(*b.fs, *fh) == one);
  CHECK(ReadFh(*b.fs, *fh) == one);  // now from the cache

  std::string two = one;
  const std::string patch = Pattern(5000, 6);
  two.replace(kChunk - 100, patch.size(), patch);
  two += "tail";
  REQUIRE(a.WriteAt(fa, kChunk - 100, patch).ok());
  REQUIRE(a.WriteAt(fa, two.size() - 4, "tail").ok());
  REQUIRE(a.fs->CreateSnapshot("s2").ok());
  receive(stream("s2", "s1"));
  REQUIRE(b.Node(kRootIno, "f") == fb);  // the same file, changed in place
  CHECK(ReadFh(*b.fs, *fh) == two);
  REQUIRE(b.fs->Release(*fh).ok());
  CHECK(b.ReadAll(fb) == two);
}

// With lookup counting (as the FUSE adapter mounts), the attributes of the
// directories the kernel references and of unlinked files it still
// references are cached too, and creates and unlinks put their new
// attributes in while they hold the inode's stripe (LiveCache::SetAttr).
// Every change to them, by any path, must show at once, and a remount (no
// cache) must see the same.
TEST_CASE("live cache: referenced directories and orphans see every change made to them") {
  CoreVolume v;
  (void)v.fs->Close();
  v.fs.reset();
  v.count_lookups = true;
  v.Open();
  auto attr = [&](NodeId n) {
    auto a = v.fs->GetAttr(n);
    REQUIRE_MESSAGE(a.ok(), a.status().ToString());
    return a->st;
  };
  auto d = v.fs->MkDir(kRootIno, "d", 0755, v.cred);
  REQUIRE(d.ok());
  const NodeId dn = d->node;
  // What the cache answers for "d" against what the store holds: its one
  // reference forgotten, the cache lets it go; a LOOKUP takes it again.
  auto check_dir = [&](const char* what) {
    const struct stat cached = attr(dn);
    v.fs->Forget(dn, 1);
    const struct stat stored = attr(dn);
    CHECK_MESSAGE(cached.st_mode == stored.st_mode, what);
    CHECK_MESSAGE(cached.st_nlink == stored.st_nlink, what);
    CHECK_MESSAGE(cached.st_mtim.tv_sec == stored.st_mtim.tv_sec, what);
    CHECK_MESSAGE(cached.st_mtim.tv_nsec == stored.st_mtim.tv_nsec, what);
    CHECK_MESSAGE(cached.st_ctim.tv_nsec == stored.st_ctim.tv_nsec, what);
    REQUIRE(v.fs->Lookup(kRootIno, "d").ok());
    (void)attr(dn);  // cached again
  };
  CHECK(attr(dn).st_nlink == 2);
  CHECK(attr(kRootIno).st_nlink == 3);  // the root is cached from the mount

  // create (through the handle Create registers itself) and write
  auto c = v.fs->Create(dn, "f", 0644, O_RDWR, v.cred);
  REQUIRE(c.ok());
  const NodeId fn = c->first.node;
  REQUIRE(v.fs->Write(c->second, 0, "hello", 5).ok());
  CHECK(attr(fn).st_size == 5);
  REQUIRE(v.fs->Release(c->second).ok());
  CHECK(attr(fn).st_size == 5);
  check_dir("create");
  auto sub = v.fs->MkDir(dn, "sub", 0700, v.cred);
  REQUIRE(sub.ok());
  CHECK(attr(dn).st_nlink == 3);
  check_dir("mkdir");
  // chmod of the directory, a rename out of it, a hard link into it
  struct stat in {};
  in.st_mode = 0710;
  REQUIRE(v.fs->SetAttr(dn, in, kSetMode, v.cred).ok());
  CHECK((attr(dn).st_mode & 07777) == 0710);
  check_dir("chmod");
  REQUIRE(v.fs->Rename(dn, "sub", kRootIno, "sub", 0).ok());
  CHECK(attr(dn).st_nlink == 2);
  CHECK(attr(kRootIno).st_nlink == 4);
  check_dir("rename");
  REQUIRE(v.fs->Link(fn, kRootIno, "g").ok());
  CHECK(attr(fn).st_nlink == 2);
  // a snapshot, a change, and a restore under the cached directory
  REQUIRE(v.fs->CreateSnapshot("s").ok());
  in.st_mode = 0700;
  REQUIRE(v.fs->SetAttr(dn, in, kSetMode, v.cred).ok());
  CHECK((attr(dn).st_mode & 07777) == 0700);
  auto r = v.fs->Restore("s");
  REQUIRE_MESSAGE(r.ok(), r.status().ToString());
  CHECK((attr(dn).st_mode & 07777) == 0710);
  check_dir("restore");

  // unlink both names of the file: no handle holds it, so it is destroyed
  // at once; the kernel still references it (a ghost): its attributes
  // say so, a SETATTR of times is answered, an open is refused
  REQUIRE(v.fs->Unlink(kRootIno, "g").ok());
  CHECK(attr(fn).st_nlink == 1);
  REQUIRE(v.fs->Unlink(dn, "f").ok());
  CHECK(attr(fn).st_nlink == 0);
  check_dir("unlink");
  in.st_ctim = {1, 0};
  auto sa = v.fs->SetAttr(fn, in, kSetCtime, v.cred);
  REQUIRE(sa.ok());
  CHECK(sa->st.st_nlink == 0);
  CHECK(v.fs->OpenFile(fn, O_RDONLY).status().Is(Code::kNotFound));
  CHECK(attr(fn).st_nlink == 0);
  // the kernel's references to the file: Create's and Link's
  v.fs->Forget(fn, 2);
  CHECK(v.fs->GetAttr(fn).status().Is(Code::kStale));
  const struct stat before = attr(dn), root_before = attr(kRootIno);
  v.fs->Forget(dn, 1);
  CHECK(attr(dn).st_mtim.tv_nsec == before.st_mtim.tv_nsec);

  (void)v.fs->Close();
  v.fs.reset();
  v.Open();
  const struct stat after = attr(dn), root_after = attr(kRootIno);
  CHECK(after.st_mode == before.st_mode);
  CHECK(after.st_nlink == before.st_nlink);
  CHECK(after.st_mtim.tv_sec == before.st_mtim.tv_sec);
  CHECK(after.st_mtim.tv_nsec == before.st_mtim.tv_nsec);
  CHECK(after.st_ctim.tv_nsec == before.st_ctim.tv_nsec);
  CHECK(root_after.st_nlink == root_before.st_nlink);
  CHECK(root_after.st_mtim.tv_nsec == root_before.st_mtim.tv_nsec);
  CHECK(v.Fsck() == 0);
}

TEST_CASE("live cache: a new file's first write finds its chunk map, absent, in the cache") {
  CoreVolume v;
  auto c = v.fs->Create(kRootIno, "f", 0644, O_RDWR, v.cred);
  REQUIRE(c.ok());
  // CREATE knows a new inode has no chunk record at all (its number was
  // never used): chunk 0 is cached as absent.
  CHECK(v.fs->Stats().cached_chunk_maps == 1);
  const uint64_t hits0 = v.fs->Stats().cache_hits;
  const std::string data = Pattern(5000, 3);
  REQUIRE(v.fs->Write(c->second, 0, data.data(), data.size()).ok());
  // Its attributes and chunk 0 both came from the cache: no store read.
  CHECK(v.fs->Stats().cache_hits - hits0 == 2);
  CHECK(ReadFh(*v.fs, c->second) == data);
  // The write's commit replaced what was cached; a second write reads the
  // new map (from the store, then cached) and changes the same chunk.
  const std::string more = Pattern(3000, 4);
  REQUIRE(v.fs->Write(c->second, 4000, more.data(), more.size()).ok());
  REQUIRE(v.fs->Release(c->second).ok());
  CHECK(v.ReadAll(c->first.node) == data.substr(0, 4000) + more);
  CHECK(v.Fsck() == 0);
}
