// fsck on deliberately damaged volumes: every kind of damage is reported
// with a clear line and a non-zero count (psmctl: exit 3); --repair fixes
// leaked ranges, stale or dangling dead-index entries, leaked versions and
// wrong counters, says what it did, and leaves a volume that checks clean
// and mounts with the free space it had before the damage. Damage that
// cannot be fixed without guessing stays reported (psmctl: exit 3).
#include <doctest/doctest.h>

#include "meta/store.h"
#include "tests/common/mount_fixture.h"
#include "tests/common/core_test_util.h"

using namespace psm;
using psm_test::CoreVolume;
using psm_test::Pattern;

namespace {

// Opens the closed volume's metadata store to damage it.
std::unique_ptr<Store> OpenMeta(const std::string& dir) {
  auto r = Store::Open(dir + "/meta", StoreOptions{});
  REQUIRE_MESSAGE(r.ok(), r.status().ToString());
  return std::move(r).value();
}

std::string LE(uint64_t v) {
  std::string s;
  PutLE64(&s, v);
  return s;
}

uint64_t LiveEpoch(Store* st) {
  std::string v;
  REQUIRE(st->Get(Cf::kVolume, kVolEpoch, &v).ok());
  return GetLE64(v.data());
}

struct Damaged {
  CoreVolume v{64ull << 20};
  uint64_t free_before = 0;
  uint64_t last_block = 0;

  Damaged() {
    v.Put(kRootIno, "keep", Pattern(3 << 20, 1));
    // Advance the epoch past 1 with a snapshot that is gone again.
    REQUIRE(v.fs->CreateSnapshot("gone").ok());
    v.Put(kRootIno, "later", Pattern(1 << 20, 2));
    REQUIRE(v.fs->DeleteSnapshot("gone").ok());
    REQUIRE(v.fs->ReclaimNow().ok());
    free_before = v.FreeBlocks();
    struct statvfs sv;
    REQUIRE(v.fs->StatFs(&sv).ok());
    last_block = sv.f_blocks;  // blocks 1..f_blocks are data blocks
    REQUIRE(v.fs->Close().ok());
    v.fs.reset();
  }
  // Runs fsck; returns (problems, report).
  std::pair<uint64_t, std::string> Check(bool repair = false) {
    std::string rep;
    FsckOptions o;
    o.repair = repair;
    auto r = Fsck(v.dir, o, &rep);
    REQUIRE_MESSAGE(r.ok(), r.status().ToString());
    return {*r, rep};
  }
  // After a repair: clean, mounts, the free space from before the damage.
  void ExpectHealed() {
    auto [n, rep] = Check();
    CHECK_MESSAGE(n == 0, rep);
    v.Open();
    CHECK(v.FreeBlocks() == free_before);
    CHECK(v.ReadAll(v.Node(kRootIno, "keep")) == Pattern(3 << 20, 1));
    // Allocations work: the whole free space can be written and freed.
    v.Put(kRootIno, "fill", Pattern(4 << 20, 3));
    REQUIRE(v.fs->Unlink(kRootIno, "fill").ok());
    CHECK(v.FreeBlocks() == free_before);
  }
};

}  // namespace

TEST_CASE("fsck: an undamaged volume is clean") {
  Damaged d;
  auto [n, rep] = d.Check();
  CHECK_MESSAGE(n == 0, rep);
  CHECK(rep.find("checked:") != std::string::npos);
}

TEST_CASE("fsck: a leaked range is reported and --repair frees it") {
  Damaged d;
  {
    auto st = OpenMeta(d.v.dir);
    REQUIRE(st->Put(Cf::kAlloc, AllocKey(d.last_block - 40), EncodeAlloc(AllocRec{10, 1, 0})).ok());
  }
  auto [n, rep] = d.Check();
  CHECK(n >= 1);
  CHECK_MESSAGE(rep.find("leaked") != std::string::npos, rep);
  // The reverse map and the counter disagree too.
  CHECK_MESSAGE(rep.find("used-blocks counter") != std::string::npos, rep);
  auto [n2, rep2] = d.Check(/*repair=*/true);
  CHECK(n2 == n);
  CHECK_MESSAGE(rep2.find("[repaired]") != std::string::npos, rep2);
  CHECK_MESSAGE(rep2.find("repaired:") != std::string::npos, rep2);
  d.ExpectHealed();
}

TEST_CASE("fsck: a leak inside a live range is cut out of its record") {
  Damaged d;
  {
    auto st = OpenMeta(d.v.dir);
    // Extend the record that ends last by 5 unreferenced blocks.
    auto it = st->NewIterator(Cf::kAlloc);
    it->SeekToLast();
    REQUIRE(it->Valid());
    BlockNo s = AllocKeyBlock(std::string_view(it->key().data(), it->key().size()));
    AllocRec a;
    REQUIRE(DecodeAlloc(std::string_view(it->value().data(), it->value().size()), &a).ok());
    it.reset();
    a.length += 5;
    REQUIRE(st->Put(Cf::kAlloc, AllocKey(s), EncodeAlloc(a)).ok());
  }
  auto [n, rep] = d.Check();
  CHECK(n >= 1);
  CHECK_MESSAGE(rep.find("leaked") != std::string::npos, rep);
  d.Check(true);
  d.ExpectHealed();
}

TEST_CASE("fsck: a stale dead range (no snapshot can see it) is reported and reclaimed") {
  Damaged d;
  {
    auto st = OpenMeta(d.v.dir);
    const Epoch e = LiveEpoch(st.get());
    REQUIRE(e >= 2);
    const BlockNo b = d.last_block - 100;
    Txn t(st.get());
    t.Put(Cf::kAlloc, AllocKey(b), EncodeAlloc(AllocRec{8, 1, e - 1}));
    t.Put(Cf::kDead, DeadRangeKey(e - 1, b), EncodeDeadValue(DeadValue{1, 8}));
    t.AddCounter(kVolUsedBlocks, 8);  // consistent apart from being stale
    REQUIRE(t.Commit().ok());
  }
  auto [n, rep] = d.Check();
  CHECK(n >= 1);
  CHECK_MESSAGE(rep.find("stale dead-index entry") != std::string::npos, rep);
  CHECK_MESSAGE(rep.find("used-blocks counter") == std::string::npos, rep);
  d.Check(true);
  d.ExpectHealed();
}

TEST_CASE("fsck: a dead entry with no matching alloc record is reported and removed") {
  Damaged d;
  {
    auto st = OpenMeta(d.v.dir);
    REQUIRE(st->Put(Cf::kDead, DeadRangeKey(LiveEpoch(st.get()) - 1, d.last_block - 7),
                    EncodeDeadValue(DeadValue{1, 3}))
                .ok());
  }
  auto [n, rep] = d.Check();
  CHECK(n >= 1);
  CHECK_MESSAGE(rep.find("has no matching dead alloc record") != std::string::npos, rep);
  auto [n2, rep2] = d.Check(true);
  CHECK_MESSAGE(rep2.find("[repaired: entry removed]") != std::string::npos, rep2);
  d.ExpectHealed();
}

TEST_CASE("fsck: a leaked record version is reported and dropped") {
  Damaged d;
  {
    auto st = OpenMeta(d.v.dir);
    // An older version of the root inode that nothing can see and no dead
    // entry names (the newest root version is newer than epoch 1 now).
    std::string cur;
    REQUIRE(GetAt(st.get(), Cf::kInodes, InodePrefix(kRootIno), ~Epoch{0} >> 1, &cur).ok());
    Epoch newest = 0;
    REQUIRE(GetAt(st.get(), Cf::kInodes, InodePrefix(kRootIno), ~Epoch{0} >> 1, &cur, &newest)
                .ok());
    REQUIRE(newest > 1);
    REQUIRE(st->Put(Cf::kInodes, VersionKey(InodePrefix(kRootIno), 1), Tagged(cur)).ok());
  }
  auto [n, rep] = d.Check();
  CHECK(n == 1);
  CHECK_MESSAGE(rep.find("seen by nothing and has no dead-index entry (leaked)") != std::string::npos,
                rep);
  d.Check(true);
  d.ExpectHealed();
}

TEST_CASE("fsck: wrong counters are reported and rewritten") {
  Damaged d;
  {
    auto st = OpenMeta(d.v.dir);
    REQUIRE(st->Put(Cf::kVolume, kVolFiles, LE(999)).ok());
    REQUIRE(st->Put(Cf::kVolume, kVolUsedBlocks, LE(5)).ok());
  }
  auto [n, rep] = d.Check();
  CHECK(n == 2);
  CHECK_MESSAGE(rep.find("files counter is 999") != std::string::npos, rep);
  CHECK_MESSAGE(rep.find("used-blocks counter is 5") != std::string::npos, rep);
  d.Check(true);
  d.ExpectHealed();
  CHECK(d.v.fs->Stats().files == 3);  // root, keep, later
}

TEST_CASE("fsck: damage that cannot be fixed safely stays reported; psmctl exit codes") {
  CoreVolume v;
  v.Put(kRootIno, "f", Pattern(1 << 20, 5));
  REQUIRE(v.fs->CreateSnapshot("s").ok());
  struct stat in {};
  in.st_mode = 0600;
  REQUIRE(v.fs->SetAttr(v.Node(kRootIno, "f"), in, kSetMode, v.cred).ok());  // dead version
  REQUIRE(v.fs->Close().ok());
  v.fs.reset();
  const std::string psmctl = psm::test::BinDir() + "/psmctl";
  auto clean = psm::test::RunProgram({psmctl, "fsck", v.dir});
  CHECK_MESSAGE(clean.exit_code == 0, clean.output);
  {
    auto st = OpenMeta(v.dir);
    // Remove the dead entry that lets deleting `s` drop the old version.
    auto it = st->NewIterator(Cf::kDead);
    int removed = 0;
    std::vector<std::string> keys;
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      DeadKey dk;
      REQUIRE(ParseDeadKey(std::string_view(it->key().data(), it->key().size()), &dk).ok());
      if (dk.kind == DeadKind::kVersion && dk.cf == Cf::kInodes) keys.push_back(it->key().ToString());
    }
    it.reset();
    for (const auto& k : keys) {
      REQUIRE(st->db()->Delete(rocksdb::WriteOptions(), st->handle(Cf::kDead), k).ok());
      ++removed;
    }
    REQUIRE(removed >= 1);
  }
  auto r = psm::test::RunProgram({psmctl, "fsck", v.dir});
  CHECK(r.exit_code == 3);
  CHECK_MESSAGE(r.output.find("is seen by a snapshot but has no dead-index entry") !=
                    std::string::npos,
                r.output);
  auto rr = psm::test::RunProgram({psmctl, "fsck", "--repair", v.dir});
  CHECK(rr.exit_code == 3);
  CHECK_MESSAGE(rr.output.find("remain after repair") != std::string::npos, rr.output);
  // Nothing that is fine was touched: the snapshot still reads.
  v.Open();
  CHECK(v.ReadAll(v.Node(v.Node(kSnapDirNode, "s"), "f")) == Pattern(1 << 20, 5));
  // A bad volume path: one clear message, non-zero exit.
  auto bad = psm::test::RunProgram({psmctl, "fsck", v.dir + "/nope"});
  CHECK(bad.exit_code != 0);
  CHECK(bad.output.find("not a psmfs volume") != std::string::npos);
}

TEST_CASE("fsck --repair through psmctl: says what it did, exits 0 when clean after") {
  Damaged d;
  {
    auto st = OpenMeta(d.v.dir);
    REQUIRE(st->Put(Cf::kAlloc, AllocKey(d.last_block - 300), EncodeAlloc(AllocRec{20, 1, 0})).ok());
  }
  const std::string psmctl = psm::test::BinDir() + "/psmctl";
  auto r = psm::test::RunProgram({psmctl, "fsck", d.v.dir});
  CHECK(r.exit_code == 3);
  CHECK(r.output.find("leaked") != std::string::npos);
  auto rr = psm::test::RunProgram({psmctl, "fsck", "--repair", d.v.dir});
  CHECK_MESSAGE(rr.exit_code == 0, rr.output);
  CHECK_MESSAGE(rr.output.find("repaired; clean now") != std::string::npos, rr.output);
  CHECK(rr.output.find("[repaired]") != std::string::npos);
  d.ExpectHealed();
}

namespace {

// A small tree seen by a snapshot and changed after it, for damage to the
// references and the namespace: /a (1 block), /b (2 blocks, rewritten after
// the snapshot), /d/c (1 block).
struct Tree {
  CoreVolume v;
  InodeId a = 0, b = 0, c = 0, d = 0;
  Epoch live = 0;
  Tree() {
    a = v.Put(kRootIno, "a", Pattern(4096, 1));
    b = v.Put(kRootIno, "b", Pattern(8192, 2));
    auto dr = v.fs->MkDir(kRootIno, "d", 0755, v.cred);
    REQUIRE(dr.ok());
    d = dr->node;
    c = v.Put(d, "c", Pattern(4096, 3));
    REQUIRE(v.fs->CreateSnapshot("s").ok());
    REQUIRE(v.WriteAt(b, 0, Pattern(4096, 4)).ok());
    REQUIRE(v.fs->Close().ok());
    v.fs.reset();
    auto st = OpenMeta(v.dir);
    live = LiveEpoch(st.get());
  }
  std::pair<uint64_t, std::string> Check() {
    std::string rep;
    auto r = Fsck(v.dir, {}, &rep);
    REQUIRE_MESSAGE(r.ok(), r.status().ToString());
    return {*r, rep};
  }
};

// The live chunk record `idx` of `ino`: its key and extents.
std::pair<std::string, std::vector<Extent>> LiveChunk(Store* st, InodeId ino, uint64_t idx,
                                                      Epoch live) {
  std::string v;
  Epoch ver = 0;
  REQUIRE(GetAt(st, Cf::kChunks, ChunkPrefix(ino, idx), live, &v, &ver).ok());
  std::vector<Extent> e;
  REQUIRE(DecodeExtents(v, &e).ok());
  return {VersionKey(ChunkPrefix(ino, idx), ver), e};
}

void DeleteAll(Store* st, Cf cf, const std::string& prefix) {
  std::vector<std::string> keys;
  auto it = st->NewIterator(cf);
  for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix); it->Next()) {
    keys.push_back(it->key().ToString());
  }
  it.reset();
  REQUIRE(!keys.empty());
  for (const auto& k : keys) {
    REQUIRE(st->db()->Delete(rocksdb::WriteOptions(), st->handle(cf), k).ok());
  }
}

// The report without its summary line ("checked: ...").
std::string Lines(const std::string& rep) {
  const size_t p = rep.find("checked: ");
  return p == std::string::npos ? rep : rep.substr(0, p);
}

}  // namespace

TEST_CASE("fsck: damage to block references and the namespace is found") {
  Tree t;
  CHECK(t.Check().first == 0);
  BlockNo pb = 0;
  SUBCASE("a block claimed by two files") {
    {
      auto st = OpenMeta(t.v.dir);
      auto [ka, ea] = LiveChunk(st.get(), t.a, 0, t.live);
      auto [kb, eb] = LiveChunk(st.get(), t.b, 0, t.live);
      // /a also maps /b's live first block, at its block 1.
      ea.push_back(Extent{1, 1, eb[0].pblock, eb[0].birth, 0});
      pb = eb[0].pblock;
      REQUIRE(st->Put(Cf::kChunks, ka, Tagged(EncodeExtents(ea))).ok());
    }
    auto [n, rep] = t.Check();
    CHECK(n == 1);
    CHECK(Lines(rep) == "block " + std::to_string(pb) + " is claimed twice (inode " +
                            std::to_string(t.a) + " chunk 0 and inode " + std::to_string(t.b) +
                            " chunk 0)\n");
  }
  SUBCASE("referenced blocks not allocated") {
    {
      auto st = OpenMeta(t.v.dir);
      auto [kc, ec] = LiveChunk(st.get(), t.c, 0, t.live);
      pb = ec[0].pblock;
      REQUIRE(st->db()->Delete(rocksdb::WriteOptions(), st->handle(Cf::kAlloc),
                               AllocKey(ec[0].pblock)).ok());
    }
    auto [n, rep] = t.Check();
    CHECK(n == 2);
    CHECK(Lines(rep) == "block " + std::to_string(pb) + " is referenced but not allocated\n" +
                            "used-blocks counter is 5, the volume holds 4\n");
  }
  SUBCASE("an entry names an inode that is gone, live and in the snapshot") {
    {
      auto st = OpenMeta(t.v.dir);
      DeleteAll(st.get(), Cf::kInodes, InodePrefix(t.c));
    }
    auto [n, rep] = t.Check();
    CHECK(n == 4);
    const std::string c = std::to_string(t.c), d = std::to_string(t.d);
    CHECK(Lines(rep) == "live chunks record of inode " + c + ", which does not exist\n" +
                            "entry 'c' in directory " + d + " points at missing inode " + c +
                            " (snapshot epoch " + std::to_string(t.live - 1) + ")\n" +
                            "entry 'c' in directory " + d + " points at missing inode " + c +
                            " (live tree)\n" + "files counter is 5, the volume holds 4\n");
  }
  SUBCASE("wrong link count and directory size") {
    {
      auto st = OpenMeta(t.v.dir);
      for (InodeId ino : {t.a, t.d}) {
        std::string cur;
        Epoch ver = 0;
        REQUIRE(GetAt(st.get(), Cf::kInodes, InodePrefix(ino), t.live, &cur, &ver).ok());
        InodeAttr at;
        REQUIRE(DecodeInode(cur, &at).ok());
        if (ino == t.a) at.nlink = 2;
        if (ino == t.d) {
          at.size += 1;
          at.nlink += 1;
        }
        REQUIRE(st->Put(Cf::kInodes, VersionKey(InodePrefix(ino), ver), Tagged(EncodeInode(at)))
                    .ok());
      }
    }
    auto [n, rep] = t.Check();
    CHECK(n == 3);
    CHECK(Lines(rep) == "inode " + std::to_string(t.a) +
                            " has link count 2, but 1 directory entries\n" + "directory inode " +
                            std::to_string(t.d) + " has link count 3, expected 2\n" +
                            "directory inode " + std::to_string(t.d) +
                            " records 2 entries, has 1\n");
  }
  SUBCASE("a live xattr of an inode that does not exist; an unreadable entry") {
    {
      auto st = OpenMeta(t.v.dir);
      REQUIRE(st->Put(Cf::kXattrs, VersionKey(XattrPrefix(t.c + 1000, "user.x"), t.live),
                      Tagged("v"))
                  .ok());
      REQUIRE(st->Put(Cf::kDentries, VersionKey(DentryPrefix(t.d, "zz"), t.live), Tagged("bad"))
                  .ok());
    }
    auto [n, rep] = t.Check();
    CHECK(n == 2);
    CHECK(Lines(rep) == "live xattrs record of inode " + std::to_string(t.c + 1000) +
                            ", which does not exist\n" + "unreadable directory entry\n");
  }
}
