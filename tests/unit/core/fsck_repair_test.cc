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
