// Key encoding and versioned records (meta/keys, meta/versioned).
#include <doctest/doctest.h>
#include <rocksdb/db.h>

#include <filesystem>
#include <map>
#include <random>
#include <set>

#include "meta/keys.h"
#include "meta/store.h"
#include "meta/versioned.h"

using namespace psm;

namespace {

struct Snaps : EpochSet {
  std::set<Epoch> e;
  bool AnyIn(Epoch lo, Epoch hi) const override {
    auto it = e.lower_bound(lo);
    return it != e.end() && *it < hi;
  }
};

struct TempStore {
  std::string dir;
  std::unique_ptr<Store> store;
  TempStore() {
    char t[] = "/tmp/psm-kv-XXXXXX";
    dir = mkdtemp(t);
    StoreOptions o;
    o.create_if_missing = true;
    auto r = Store::Open(dir + "/meta", o);
    REQUIRE(r.ok());
    store = std::move(r).value();
  }
  ~TempStore() {
    store.reset();
    std::filesystem::remove_all(dir);
  }
  size_t CountPrefix(Cf cf, const std::string& prefix) {
    size_t n = 0;
    auto it = store->NewIterator(cf);
    CHECK(ForEachPrefix(it.get(), prefix, [&](std::string_view, std::string_view) {
            ++n;
            return true;
          }).ok());
    return n;
  }
};

std::string Read(Store* s, Cf cf, const std::string& prefix, Epoch e) {
  std::string v;
  Status st = GetAt(s, cf, prefix, e, &v);
  if (st.Is(Code::kNotFound)) return "<absent>";
  REQUIRE(st.ok());
  return v;
}

// A RocksDB of the store's column families opened with RocksDB's default
// options (no prefix extractor, one index block and no filter per table,
// unaligned blocks), as an older psmfs wrote and would read them.
struct PlainDb {
  rocksdb::DB* db = nullptr;
  std::vector<rocksdb::ColumnFamilyHandle*> hs;
  explicit PlainDb(const std::string& dir) {
    rocksdb::DBOptions dbo;
    dbo.create_if_missing = true;
    dbo.create_missing_column_families = true;
    std::vector<rocksdb::ColumnFamilyDescriptor> cfs;
    for (int i = 0; i < static_cast<int>(Cf::kCount); ++i) {
      cfs.emplace_back(CfName(static_cast<Cf>(i)), rocksdb::ColumnFamilyOptions());
    }
    REQUIRE(rocksdb::DB::Open(dbo, dir, cfs, &hs, &db).ok());
  }
  ~PlainDb() {
    for (auto* h : hs) (void)db->DestroyColumnFamilyHandle(h);
    delete db;
  }
  rocksdb::ColumnFamilyHandle* handle(Cf cf) { return hs[static_cast<int>(cf)]; }
};

}  // namespace

TEST_CASE("versioned keys sort newest first and round-trip") {
  std::string p = DentryPrefix(7, "name");
  std::string k1 = VersionKey(p, 1), k5 = VersionKey(p, 5);
  CHECK(k5 < k1);  // newer first
  CHECK(KeyEpoch(k5) == 5);
  CHECK(KeyPrefix(k5) == p);
  InodeId parent;
  std::string_view name;
  ParseDentryKey(k5, &parent, &name);
  CHECK(parent == 7);
  CHECK(name == "name");
  // "a" sorts before "ab" and no version of "a" sorts among "ab"'s.
  CHECK(VersionKey(DentryPrefix(7, "a"), 1) < VersionKey(DentryPrefix(7, "ab"), 99));
  InodeId ino;
  uint64_t idx;
  ParseChunkKey(VersionKey(ChunkPrefix(3, 9), 4), &ino, &idx);
  CHECK(ino == 3);
  CHECK(idx == 9);
}

TEST_CASE("records round-trip") {
  InodeAttr a;
  a.mode = 0100644;
  a.uid = 5;
  a.size = 1ull << 40;
  a.mtime_ns = -3;
  a.parent = 77;
  a.inline_data = "target";
  InodeAttr b;
  REQUIRE(DecodeInode(EncodeInode(a), &b).ok());
  CHECK(a == b);
  std::vector<Extent> ex{{0, 3, 100, 1, 0}, {5, 2, 200, 4, kExtentUnwritten}}, ey;
  REQUIRE(DecodeExtents(EncodeExtents(ex), &ey).ok());
  CHECK(ex == ey);
  CHECK_FALSE(DecodeExtents("abc", &ey).ok());
  SnapshotRec s{"daily", 9, 123, SnapState::kDeleting, 0}, t;
  REQUIRE(DecodeSnapshot(EncodeSnapshot(s), &t).ok());
  CHECK(t.name == "daily");
  CHECK(t.epoch == 9);
  CHECK(t.state == SnapState::kDeleting);
  DeadKey dk;
  REQUIRE(ParseDeadKey(DeadVersionKey(4, Cf::kChunks, VersionKey(ChunkPrefix(1, 2), 3)), &dk).ok());
  CHECK(dk.death == 4);
  CHECK(dk.cf == Cf::kChunks);
  REQUIRE(ParseDeadKey(DeadRangeKey(8, 1234), &dk).ok());
  CHECK(dk.kind == DeadKind::kRange);
  CHECK(dk.start == 1234);
}

TEST_CASE("PutVersion: in place at the live epoch, new version after a snapshot") {
  TempStore ts;
  Snaps snaps;
  std::string p = InodePrefix(42);
  {
    Txn t(ts.store.get());
    REQUIRE(PutVersion(&t, Cf::kInodes, p, 1, std::string_view("v1"), snaps).ok());
    REQUIRE(t.Commit().ok());
  }
  {
    Txn t(ts.store.get());
    REQUIRE(PutVersion(&t, Cf::kInodes, p, 1, std::string_view("v1b"), snaps).ok());
    REQUIRE(t.Commit().ok());
  }
  CHECK(ts.CountPrefix(Cf::kInodes, p) == 1);  // overwritten in place
  snaps.e.insert(1);                            // snapshot at epoch 1, live is 2
  {
    Txn t(ts.store.get());
    REQUIRE(PutVersion(&t, Cf::kInodes, p, 2, std::string_view("v2"), snaps).ok());
    REQUIRE(t.Commit().ok());
  }
  CHECK(Read(ts.store.get(), Cf::kInodes, p, 1) == "v1b");
  CHECK(Read(ts.store.get(), Cf::kInodes, p, 2) == "v2");
  CHECK(ts.CountPrefix(Cf::kDead, DeadEpochPrefix(2)) == 1);  // the old version is recorded
  // Delete at epoch 2: a tombstone hides v1b from the live tree only.
  {
    Txn t(ts.store.get());
    REQUIRE(PutVersion(&t, Cf::kInodes, p, 2, std::nullopt, snaps).ok());
    REQUIRE(t.Commit().ok());
  }
  CHECK(Read(ts.store.get(), Cf::kInodes, p, 2) == "<absent>");
  CHECK(Read(ts.store.get(), Cf::kInodes, p, 1) == "v1b");
}

TEST_CASE("PutVersion without snapshots keeps one version and no dead entries") {
  TempStore ts;
  Snaps snaps;  // snapshot at 1 was deleted: nothing present
  std::string p = InodePrefix(9);
  for (Epoch e = 1; e <= 4; ++e) {
    Txn t(ts.store.get());
    std::string v = "v" + std::to_string(e);
    REQUIRE(PutVersion(&t, Cf::kInodes, p, e, std::string_view(v), snaps).ok());
    REQUIRE(t.Commit().ok());
  }
  CHECK(ts.CountPrefix(Cf::kInodes, p) == 1);
  CHECK(ts.CountPrefix(Cf::kDead, "") == 0);
  {
    Txn t(ts.store.get());
    REQUIRE(PutVersion(&t, Cf::kInodes, p, 5, std::nullopt, snaps).ok());
    REQUIRE(t.Commit().ok());
  }
  CHECK(ts.CountPrefix(Cf::kInodes, p) == 0);  // no tombstone needed over nothing
}

TEST_CASE("DropVersion removes a lone tombstone left behind") {
  TempStore ts;
  Snaps snaps;
  snaps.e.insert(1);
  std::string p = XattrPrefix(3, "user.a");
  {
    Txn t(ts.store.get());
    REQUIRE(PutVersion(&t, Cf::kXattrs, p, 1, std::string_view("x"), snaps).ok());
    REQUIRE(t.Commit().ok());
  }
  {
    Txn t(ts.store.get());
    REQUIRE(PutVersion(&t, Cf::kXattrs, p, 2, std::nullopt, snaps).ok());
    REQUIRE(t.Commit().ok());
  }
  CHECK(ts.CountPrefix(Cf::kXattrs, p) == 2);  // version + tombstone
  SUBCASE("offline: removed with the version") {
    Txn t(ts.store.get());
    REQUIRE(DropVersion(&t, Cf::kXattrs, VersionKey(p, 1), nullptr).ok());
    REQUIRE(t.Commit().ok());
    CHECK(ts.CountPrefix(Cf::kXattrs, p) == 0);
  }
  SUBCASE("online: reported, and removed only if still lone when removed") {
    std::string tomb;
    {
      Txn t(ts.store.get());
      REQUIRE(DropVersion(&t, Cf::kXattrs, VersionKey(p, 1), &tomb).ok());
      REQUIRE(t.Commit().ok());
    }
    CHECK(tomb == VersionKey(p, 2));
    CHECK(ts.CountPrefix(Cf::kXattrs, p) == 1);  // the tombstone waits
    SUBCASE("still lone") {
      Txn t(ts.store.get());
      REQUIRE(DropLoneTombstone(&t, Cf::kXattrs, tomb).ok());
      REQUIRE(t.Commit().ok());
      CHECK(ts.CountPrefix(Cf::kXattrs, p) == 0);
    }
    SUBCASE("a writer rewrote it in place meanwhile: kept") {
      {
        Txn w(ts.store.get());
        REQUIRE(PutVersion(&w, Cf::kXattrs, p, 2, std::string_view("new"), snaps).ok());
        REQUIRE(w.Commit().ok());
      }
      Txn t(ts.store.get());
      REQUIRE(DropLoneTombstone(&t, Cf::kXattrs, tomb).ok());
      REQUIRE(t.Commit().ok());
      std::string v;
      REQUIRE(GetAt(ts.store.get(), Cf::kXattrs, p, 2, &v).ok());
      CHECK(v == "new");
    }
  }
}

TEST_CASE("Txn reads its own writes, versioned and plain") {
  TempStore ts;
  Txn t(ts.store.get());
  t.Put(Cf::kVolume, "k", "v");
  std::string v;
  REQUIRE(t.Get(Cf::kVolume, "k", &v).ok());
  CHECK(v == "v");
  t.Put(Cf::kInodes, VersionKey(InodePrefix(1), 3), Tagged("three"));
  REQUIRE(t.GetAt(Cf::kInodes, InodePrefix(1), 5, &v).ok());
  CHECK(v == "three");
  CHECK(t.GetAt(Cf::kInodes, InodePrefix(1), 2, &v).Is(Code::kNotFound));
  CHECK(ts.store->Get(Cf::kVolume, "k", &v).Is(Code::kNotFound));  // not committed yet
  REQUIRE(t.Commit().ok());
  CHECK(ts.store->Get(Cf::kVolume, "k", &v).ok());
}

// Versioned column families seek by record prefix with Bloom filters
// (meta/store.cc, VersionPrefix): a version read must find every record
// whether it sits in the memtable or in SST files, never take a neighbour
// that shares bytes with it (names that extend one another, inodes next to
// each other), and directory listings (total-order iterators) see all.
TEST_CASE("version reads through the prefix filters: memtable, SST files, neighbours") {
  TempStore ts;
  Snaps snaps;
  const std::vector<std::string> names = {"a", "ab", "abc", "b", std::string(255, 'n')};
  auto put = [&](Cf cf, const std::string& prefix, Epoch e, const std::string& v) {
    Txn t(ts.store.get());
    REQUIRE(PutVersion(&t, cf, prefix, e, std::string_view(v), snaps).ok());
    REQUIRE(t.Commit().ok());
  };
  // Epoch 1 into SST files, a snapshot at 1, epoch 2 partly in the memtable.
  for (InodeId dir : {5, 6}) {
    for (const auto& n : names) put(Cf::kDentries, DentryPrefix(dir, n), 1, "e1-" + n);
    put(Cf::kInodes, InodePrefix(dir), 1, "i1");
    put(Cf::kChunks, ChunkPrefix(dir, 3), 1, "c1");
  }
  REQUIRE(ts.store->FlushAll().ok());
  snaps.e = {1};
  put(Cf::kDentries, DentryPrefix(5, "ab"), 2, "e2-ab");  // kills the SST version into dead
  put(Cf::kDentries, DentryPrefix(5, "new"), 2, "e2-new");
  put(Cf::kInodes, InodePrefix(6), 2, "i2");

  for (int pass = 0; pass < 2; ++pass) {
    CAPTURE(pass);
    for (InodeId dir : {5, 6}) {
      for (const auto& n : names) {
        const bool rewritten = dir == 5 && n == "ab";
        CHECK(Read(ts.store.get(), Cf::kDentries, DentryPrefix(dir, n), 1) == "e1-" + n);
        CHECK(Read(ts.store.get(), Cf::kDentries, DentryPrefix(dir, n), 2) ==
              (rewritten ? "e2-ab" : "e1-" + n));
      }
      for (const char* absent : {"", "aa", "abcd", "ba", "new2"}) {
        CHECK(Read(ts.store.get(), Cf::kDentries, DentryPrefix(dir, absent), 2) == "<absent>");
      }
      CHECK(Read(ts.store.get(), Cf::kChunks, ChunkPrefix(dir, 3), 2) == "c1");
      CHECK(Read(ts.store.get(), Cf::kChunks, ChunkPrefix(dir, 2), 2) == "<absent>");
      CHECK(Read(ts.store.get(), Cf::kChunks, ChunkPrefix(dir, 4), 2) == "<absent>");
    }
    CHECK(Read(ts.store.get(), Cf::kDentries, DentryPrefix(5, "new"), 2) == "e2-new");
    CHECK(Read(ts.store.get(), Cf::kDentries, DentryPrefix(5, "new"), 1) == "<absent>");
    CHECK(Read(ts.store.get(), Cf::kInodes, InodePrefix(6), 1) == "i1");
    CHECK(Read(ts.store.get(), Cf::kInodes, InodePrefix(6), 2) == "i2");
    CHECK(Read(ts.store.get(), Cf::kInodes, InodePrefix(7), 2) == "<absent>");
    CHECK(Read(ts.store.get(), Cf::kInodes, InodePrefix(4), 2) == "<absent>");
    // Listings walk across records: all versions of every entry.
    CHECK(ts.CountPrefix(Cf::kDentries, DentryDirPrefix(5)) == names.size() + 2);
    CHECK(ts.CountPrefix(Cf::kDentries, DentryDirPrefix(6)) == names.size());
    CHECK(ts.CountPrefix(Cf::kDead, "") == 2);  // dentry 5/ab and inode 6 at epoch 1
    // A Txn with writes reads through the same filters plus its batch.
    Txn t(ts.store.get());
    t.Put(Cf::kVolume, "x", "y");
    std::string v;
    CHECK(t.GetAt(Cf::kDentries, DentryPrefix(6, "abc"), 2, &v).ok());
    CHECK(v == "e1-abc");
    CHECK(t.GetAt(Cf::kDentries, DentryPrefix(6, "abcd"), 2, &v).Is(Code::kNotFound));
    // Second pass: everything in SST files.
    REQUIRE(ts.store->FlushAll().ok());
  }
}

// A volume written before the filters existed: column families without a
// prefix extractor, SST files without filters. It opens, and every version
// read and write finds what is there.
TEST_CASE("a store written without prefix filters opens and reads the same") {
  char t[] = "/tmp/psm-kv-old-XXXXXX";
  const std::string dir = std::string(mkdtemp(t)) + "/meta";
  {
    PlainDb p(dir);
    rocksdb::DB* db = p.db;
    auto put = [&](Cf cf, const std::string& prefix, Epoch e, const std::string& v) {
      REQUIRE(db->Put(rocksdb::WriteOptions(), p.handle(cf), VersionKey(prefix, e), Tagged(v))
                  .ok());
    };
    put(Cf::kDentries, DentryPrefix(1, "old"), 1, "d1");
    put(Cf::kDentries, DentryPrefix(1, "old"), 3, "d3");
    put(Cf::kInodes, InodePrefix(20), 1, "i1");
    REQUIRE(db->Flush(rocksdb::FlushOptions(), p.hs).ok());
    put(Cf::kDentries, DentryPrefix(1, "older"), 2, "m2");  // stays in the WAL
    REQUIRE(db->FlushWAL(true).ok());
  }
  {
    StoreOptions o;
    auto r = Store::Open(dir, o);
    REQUIRE(r.ok());
    Store* st = r.value().get();
    CHECK(Read(st, Cf::kDentries, DentryPrefix(1, "old"), 2) == "d1");
    CHECK(Read(st, Cf::kDentries, DentryPrefix(1, "old"), 3) == "d3");
    CHECK(Read(st, Cf::kDentries, DentryPrefix(1, "older"), 3) == "m2");
    CHECK(Read(st, Cf::kDentries, DentryPrefix(1, "ol"), 3) == "<absent>");
    CHECK(Read(st, Cf::kInodes, InodePrefix(20), 3) == "i1");
    CHECK(Read(st, Cf::kInodes, InodePrefix(21), 3) == "<absent>");
    // A write finds the old file's newest version (in place at epoch 3).
    Snaps snaps;
    Txn txn(st);
    REQUIRE(PutVersion(&txn, Cf::kDentries, DentryPrefix(1, "old"), 3, std::string_view("d3b"),
                       snaps)
                .ok());
    REQUIRE(txn.Commit().ok());
    REQUIRE(st->FlushAll().ok());
    CHECK(Read(st, Cf::kDentries, DentryPrefix(1, "old"), 3) == "d3b");
    CHECK(Read(st, Cf::kDentries, DentryPrefix(1, "old"), 2) == "d1");
  }
  std::filesystem::remove_all(std::filesystem::path(dir).parent_path());
}

// The table layout is a property of each table file (docs/on-disk-format.md,
// "Filters"): tables this store writes (partitioned index and filters,
// aligned data blocks) are read by a RocksDB opened with default options,
// as an older psmfs's would read them, and tables written with default
// options (one index block, no filter, unaligned blocks) are read by this
// store through its prefix seeks. Enough records for many data blocks and
// several index and filter partitions.
TEST_CASE("tables written with this store's layout and with RocksDB's defaults read both ways") {
  char t[] = "/tmp/psm-kv-layout-XXXXXX";
  const std::string dir = std::string(mkdtemp(t)) + "/meta";
  constexpr InodeId kN = 60000;
  auto value = [](InodeId ino) { return "inode-" + std::to_string(ino * 7); };
  {
    StoreOptions o;
    o.create_if_missing = true;
    auto r = Store::Open(dir, o);
    REQUIRE(r.ok());
    Store* st = r.value().get();
    for (InodeId base = 0; base < kN; base += 1000) {
      Txn txn(st);
      for (InodeId i = base; i < base + 1000; ++i) {
        txn.Put(Cf::kInodes, VersionKey(InodePrefix(2 * i + 16), 1), Tagged(value(2 * i + 16)));
      }
      REQUIRE(txn.Commit().ok());
    }
    REQUIRE(st->FlushAll().ok());
  }
  {
    PlainDb p(dir);
    rocksdb::DB* db = p.db;
    rocksdb::ColumnFamilyHandle* inodes = p.handle(Cf::kInodes);
    std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(rocksdb::ReadOptions(), inodes));
    InodeId n = 0;
    bool in_order = true;
    for (it->SeekToFirst(); it->Valid(); it->Next(), ++n) {
      const InodeId ino = InodeFromKey(std::string_view(it->key().data(), it->key().size()));
      in_order = in_order && ino == 2 * n + 16 && it->value().ToString() == Tagged(value(ino));
    }
    REQUIRE(it->status().ok());
    CHECK(n == kN);
    CHECK(in_order);
    std::string v;
    REQUIRE(
        db->Get(rocksdb::ReadOptions(), inodes, VersionKey(InodePrefix(2 * 777 + 16), 1), &v).ok());
    CHECK(v == Tagged(value(2 * 777 + 16)));
    // Odd inode numbers, in tables of RocksDB's default layout.
    bool put_ok = true;
    for (InodeId i = 0; i < kN; ++i) {
      put_ok = put_ok && db->Put(rocksdb::WriteOptions(), inodes,
                                 VersionKey(InodePrefix(2 * i + 17), 2), Tagged(value(2 * i + 17)))
                             .ok();
    }
    REQUIRE(put_ok);
    REQUIRE(db->Flush(rocksdb::FlushOptions(), p.hs).ok());
  }
  {
    StoreOptions o;
    auto r = Store::Open(dir, o);
    REQUIRE(r.ok());
    Store* st = r.value().get();
    int wrong = 0;
    for (InodeId ino = 16; ino < 2 * kN + 16; ino += 97) {
      if (Read(st, Cf::kInodes, InodePrefix(ino), 3) != value(ino)) ++wrong;
      // The odd ones were written at epoch 2: absent at 1.
      if (ino % 2 == 1 && Read(st, Cf::kInodes, InodePrefix(ino), 1) != "<absent>") ++wrong;
    }
    CHECK(wrong == 0);
    CHECK(Read(st, Cf::kInodes, InodePrefix(15), 3) == "<absent>");
    CHECK(Read(st, Cf::kInodes, InodePrefix(2 * kN + 16), 3) == "<absent>");
  }
  std::filesystem::remove_all(std::filesystem::path(dir).parent_path());
}

// Checksum tables have a layout of their own (meta/store.cc, "Checksums";
// docs/on-disk-format.md, "Filters"): 32 KiB data blocks under one binary
// index, so a READ's checksums are one cached block and a point read walks
// one index. Shown with metadata format 1's records (one per block, as
// volumes made before grouped records hold; the groups' own test follows). Tables written so are read by a RocksDB with default options
// (an older psmfs), and tables of the default layout (4 KiB blocks) are
// read by this store, point reads and ranges alike.
TEST_CASE("checksum tables: 32 KiB blocks, one index, read both ways") {
  char t[] = "/tmp/psm-kv-csums-XXXXXX";
  const std::string dir = std::string(mkdtemp(t)) + "/meta";
  constexpr BlockNo kN = 100000;
  auto crc = [](BlockNo b) { return std::string(reinterpret_cast<const char*>(&b), 4); };
  {
    StoreOptions o;
    o.create_if_missing = true;
    auto r = Store::Open(dir, o);
    REQUIRE(r.ok());
    Store* st = r.value().get();
    for (BlockNo base = 0; base < kN; base += 5000) {
      Txn txn(st);
      for (BlockNo b = base; b < base + 5000; ++b) txn.PutUnindexed(Cf::kCsums, LegacyCsumKey(2 * b), crc(2 * b));
      REQUIRE(txn.Commit().ok());
    }
    REQUIRE(st->FlushAll().ok());
  }
  {
    PlainDb p(dir);
    rocksdb::DB* db = p.db;
    rocksdb::ColumnFamilyHandle* csums = p.handle(Cf::kCsums);
    rocksdb::TablePropertiesCollection props;
    REQUIRE(db->GetPropertiesOfAllTables(csums, &props).ok());
    REQUIRE(!props.empty());
    for (const auto& [file, tp] : props) {
      INFO(file);
      CHECK(tp->index_partitions == 0);
      REQUIRE(tp->num_data_blocks > 0);
      // 32 KiB blocks (the last one of a table may be short).
      CHECK(tp->data_size / tp->num_data_blocks > (24u << 10));
    }
    std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(rocksdb::ReadOptions(), csums));
    BlockNo n = 0;
    bool in_order = true;
    for (it->SeekToFirst(); it->Valid(); it->Next(), ++n) {
      const BlockNo b = LegacyCsumKeyBlock(std::string_view(it->key().data(), it->key().size()));
      in_order = in_order && b == 2 * n && it->value().ToString() == crc(b);
    }
    REQUIRE(it->status().ok());
    CHECK(n == kN);
    CHECK(in_order);
    // Odd blocks, in tables of RocksDB's default layout.
    bool put_ok = true;
    for (BlockNo b = 0; b < kN; ++b) {
      put_ok = put_ok && db->Put(rocksdb::WriteOptions(), csums, LegacyCsumKey(2 * b + 1), crc(2 * b + 1)).ok();
    }
    REQUIRE(put_ok);
    REQUIRE(db->Flush(rocksdb::FlushOptions(), p.hs).ok());
  }
  {
    auto r = Store::Open(dir, StoreOptions{});
    REQUIRE(r.ok());
    Store* st = r.value().get();
    int wrong = 0;
    for (BlockNo b = 0; b < 2 * kN; b += 89) {
      std::string v;
      if (!st->Get(Cf::kCsums, LegacyCsumKey(b), &v).ok() || v != crc(b)) ++wrong;
    }
    CHECK(wrong == 0);
    std::string v;
    CHECK(st->Get(Cf::kCsums, LegacyCsumKey(2 * kN), &v).Is(Code::kNotFound));
    // A range across both layouts.
    auto it = st->NewIterator(Cf::kCsums);
    BlockNo next = 77777;
    for (it->Seek(LegacyCsumKey(next)); it->Valid() && next < 77777 + 3000; it->Next(), ++next) {
      if (LegacyCsumKeyBlock(std::string_view(it->key().data(), it->key().size())) != next ||
          it->value().ToString() != crc(next)) {
        ++wrong;
      }
    }
    CHECK(it->status().ok());
    CHECK(next == 77777 + 3000);
    CHECK(wrong == 0);
  }
  std::filesystem::remove_all(std::filesystem::path(dir).parent_path());
}

TEST_CASE("checksum group values: encoded and decoded, malformed ones refused") {
  CsumGroup g;
  g.Set(0, 0xdeadbeef);
  g.Set(5, 7);
  g.Set(15, 0x01020304);
  std::string v;
  EncodeCsumGroup(g, &v);
  CHECK(v.size() == 2 + 3 * 4);  // the mask and three checksums
  CsumGroup d;
  REQUIRE(DecodeCsumGroup(v, &d));
  CHECK(d.mask == ((1u << 0) | (1u << 5) | (1u << 15)));
  CHECK(d.crc[0] == 0xdeadbeef);
  CHECK(d.crc[5] == 7);
  CHECK(d.crc[15] == 0x01020304);
  CHECK_FALSE(DecodeCsumGroup(v.substr(0, v.size() - 1), &d));  // a checksum short
  CHECK_FALSE(DecodeCsumGroup(v + "x", &d));
  CHECK_FALSE(DecodeCsumGroup("\x01", &d));
  CsumGroup newer;
  newer.Set(5, 9);
  newer.Set(6, 10);
  OverlayCsumGroup(newer, &g);
  CHECK(g.mask == ((1u << 0) | (1u << 5) | (1u << 6) | (1u << 15)));
  CHECK(g.crc[5] == 9);
  CHECK(g.crc[6] == 10);
  CHECK(g.crc[0] == 0xdeadbeef);
  // Keys: one per aligned group, in block order, after format 1's.
  CHECK(CsumKey(32) == CsumKey(47));
  CHECK(CsumKey(47) < CsumKey(48));
  CHECK(CsumKeyBlock(CsumKey(47)) == 32);
  CHECK(LegacyCsumKey(uint64_t{1} << 50) < CsumKey(0));
}

// Grouped checksum records (keys.h CsumKey): whole groups are Puts, parts
// of groups merge operands (psm.CsumMerge), the newer winning block by
// block. Random writes of both kinds, through memtables, flushes, a
// compaction and a reopen, read back as a model kept beside them says.
TEST_CASE("checksum groups: puts and merge operands read back as a model says") {
  char t[] = "/tmp/psm-kv-groups-XXXXXX";
  const std::string dir = std::string(mkdtemp(t)) + "/meta";
  constexpr uint64_t kGroups = 96;
  std::map<BlockNo, uint32_t> model;
  std::mt19937_64 rng(20261207);
  auto verify = [&](Store* st) {
    int wrong = 0, bad = 0;
    for (uint64_t gi = 0; gi < kGroups; ++gi) {
      std::string v;
      Status s = st->Get(Cf::kCsums, CsumKey(gi * kCsumGroupBlocks), &v);
      CsumGroup g;
      if (s.Is(Code::kNotFound)) {
        g = CsumGroup{};
      } else if (!s.ok() || !DecodeCsumGroup(v, &g)) {
        ++bad;
        continue;
      }
      for (unsigned i = 0; i < kCsumGroupBlocks; ++i) {
        auto m = model.find(gi * kCsumGroupBlocks + i);
        if ((m != model.end()) != g.Has(i) || (g.Has(i) && g.crc[i] != m->second)) ++wrong;
      }
    }
    CHECK(bad == 0);
    CHECK(wrong == 0);
    // An ordered scan sees each group once, in order.
    auto it = st->NewIterator(Cf::kCsums);
    BlockNo last = 0;
    int groups = 0;
    bool ordered = true;
    for (it->SeekToFirst(); it->Valid(); it->Next(), ++groups) {
      const BlockNo first = CsumKeyBlock(std::string_view(it->key().data(), it->key().size()));
      ordered = ordered && (groups == 0 || first > last);
      last = first;
    }
    CHECK(it->status().ok());
    CHECK(ordered);
    std::set<BlockNo> want_groups;
    for (const auto& [b, c] : model) want_groups.insert(b / kCsumGroupBlocks);
    CHECK(static_cast<size_t>(groups) == want_groups.size());
  };
  {
    StoreOptions o;
    o.create_if_missing = true;
    auto r = Store::Open(dir, o);
    REQUIRE(r.ok());
    Store* st = r.value().get();
    for (int round = 0; round < 8; ++round) {
      Txn txn(st);
      for (int op = 0; op < 400; ++op) {
        const uint64_t gi = rng() % kGroups;
        const bool whole = rng() % 4 == 0;
        CsumGroup g;
        const uint16_t mask = whole ? 0xffff : static_cast<uint16_t>(rng() | 1u << (rng() % 16));
        for (unsigned i = 0; i < kCsumGroupBlocks; ++i) {
          if (!(mask >> i & 1)) continue;
          const uint32_t c = static_cast<uint32_t>(rng());
          g.Set(i, c);
          model[gi * kCsumGroupBlocks + i] = c;
        }
        std::string v;
        EncodeCsumGroup(g, &v);
        if (whole) {
          txn.PutUnindexed(Cf::kCsums, CsumKey(gi * kCsumGroupBlocks), v);
        } else {
          txn.MergeUnindexed(Cf::kCsums, CsumKey(gi * kCsumGroupBlocks), v);
        }
      }
      REQUIRE(txn.Commit().ok());
      if (round % 3 == 1) REQUIRE(st->FlushAll().ok());
      if (round == 5) {
        REQUIRE(st->db()->CompactRange(rocksdb::CompactRangeOptions(), st->handle(Cf::kCsums),
                                       nullptr, nullptr).ok());
      }
      verify(st);
    }
  }
  {
    auto r = Store::Open(dir, StoreOptions{});
    REQUIRE(r.ok());
    verify(r.value().get());
  }
  std::filesystem::remove_all(std::filesystem::path(dir).parent_path());
}

TEST_CASE("volume counters: many unfolded operands read back exact, flushed, replayed and reopened") {
  // The volume's counters are merge operands that are not folded at write
  // time (meta/store.cc): every read adds them up. The model is a plain
  // sum kept here.
  char t[] = "/tmp/psm-ctr-XXXXXX";
  const std::string dir = std::string(mkdtemp(t)) + "/meta";
  std::mt19937_64 rng(11);
  int64_t files = 0, used = 0;
  auto expect = [&](Store* st) {
    uint64_t f = 0, u = 0;
    REQUIRE(GetCounter(st, kVolFiles, &f).ok());
    REQUIRE(GetCounter(st, kVolUsedBlocks, &u).ok());
    CHECK(f == static_cast<uint64_t>(files));
    CHECK(u == static_cast<uint64_t>(used));
  };
  auto add = [&](Store* st, int n) {
    for (int i = 0; i < n; ++i) {
      Txn txn(st);
      const int64_t df = (rng() % 3 == 0 && files > 0) ? -1 : 1;
      const int64_t du = static_cast<int64_t>(rng() % 64) - (used >= 32 ? 31 : 0);
      txn.AddCounter(kVolFiles, df);
      txn.AddCounter(kVolUsedBlocks, du);
      REQUIRE(txn.Commit().ok());
      files += df;
      used += du;
    }
  };
  {
    StoreOptions o;
    o.create_if_missing = true;
    auto r = Store::Open(dir, o);
    REQUIRE(r.ok());
    Store* st = r.value().get();
    {
      Txn txn(st);
      txn.Put(Cf::kVolume, kVolFiles, LE64(0));
      txn.Put(Cf::kVolume, kVolUsedBlocks, LE64(0));
      REQUIRE(txn.Commit().ok());
    }
    add(st, 20000);  // all in the memtable, on top of a put
    expect(st);
    REQUIRE(st->FlushAll().ok());  // folded by the flush
    expect(st);
    add(st, 5000);  // operands over a flushed value
    expect(st);
  }
  {
    // Closed without a flush: the reopen replays the operands from the log.
    auto r = Store::Open(dir, StoreOptions{});
    REQUIRE(r.ok());
    expect(r.value().get());
    add(r.value().get(), 3000);
    REQUIRE(r.value()->db()
                ->CompactRange(rocksdb::CompactRangeOptions(), r.value()->handle(Cf::kVolume),
                               nullptr, nullptr)
                .ok());
    expect(r.value().get());
  }
  {
    auto r = Store::Open(dir, StoreOptions{});
    REQUIRE(r.ok());
    expect(r.value().get());
  }
  std::filesystem::remove_all(std::filesystem::path(dir).parent_path());
}
