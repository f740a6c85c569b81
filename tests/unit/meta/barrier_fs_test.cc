// Tests for meta/barrier_fs (image barrier before metadata reaches disk) and
// meta/fault_fs (injected errors, power cut), over a real psm::Store.
#include "meta/barrier_fs.h"

#include <doctest/doctest.h>
#include <rocksdb/file_system.h>
#include <stdlib.h>

#include <filesystem>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "fs/device/block_device.h"
#include "meta/fault_fs.h"
#include "meta/store.h"

namespace psm {
namespace {

namespace fsys = std::filesystem;

struct TempDir {
  std::string path;
  TempDir() {
    char tmpl[] = "/tmp/psm_bfs_XXXXXX";
    REQUIRE(mkdtemp(tmpl) != nullptr);
    path = tmpl;
  }
  ~TempDir() { fsys::remove_all(path); }
};

// Bytes in the WAL files of a database directory, as the OS sees them.
uint64_t WalBytes(const std::string& dir) {
  uint64_t n = 0;
  std::error_code ec;
  for (const auto& e : fsys::directory_iterator(dir, ec)) {
    if (e.path().extension() == ".log") n += fsys::file_size(e.path(), ec);
  }
  return n;
}

std::unique_ptr<Store> OpenStore(const std::string& dir, std::shared_ptr<rocksdb::FileSystem> fs,
                                 bool create = true) {
  StoreOptions o;
  o.create_if_missing = create;
  o.fs = std::move(fs);
  auto r = Store::Open(dir, o);
  REQUIRE_MESSAGE(r.ok(), r.status().ToString());
  return std::move(r).value();
}

std::string Key(int i) { return "k" + std::to_string(i); }

TEST_CASE("barrier: runs before WAL bytes reach the file, and on SyncWal") {
  TempDir d;
  const std::string dir = d.path + "/meta";
  std::mutex mu;
  std::vector<uint64_t> seen;  // WAL bytes on disk at each barrier call
  auto bfs = std::make_shared<BarrierFileSystem>(rocksdb::FileSystem::Default(), [&] {
    std::lock_guard<std::mutex> l(mu);
    seen.push_back(WalBytes(dir));
    return Status::Ok();
  });
  auto store = OpenStore(dir, bfs);
  REQUIRE(store->SyncWal().ok());
  for (int round = 0; round < 5; ++round) {
    const uint64_t before = WalBytes(dir);
    size_t first_call;
    {
      std::lock_guard<std::mutex> l(mu);
      first_call = seen.size();
    }
    REQUIRE(store->Put(Cf::kVolume, Key(round), std::string(100 + round, 'v')).ok());
    // manual_wal_flush: committing wrote nothing to the file yet.
    CHECK(WalBytes(dir) == before);
    const uint64_t calls = bfs->barrier_calls();
    REQUIRE(store->SyncWal().ok());
    const uint64_t after = WalBytes(dir);
    CHECK(after > before);
    CHECK(bfs->barrier_calls() > calls);
    std::lock_guard<std::mutex> l(mu);
    REQUIRE(seen.size() > first_call);
    // The first barrier of this SyncWal ran while the new bytes were not
    // yet in the file; had it run after the append it would see `after`.
    CHECK(seen[first_call] == before);
  }
  // SyncWal with nothing new still passes through the barrier (it syncs).
  const uint64_t calls = bfs->barrier_calls();
  REQUIRE(store->SyncWal().ok());
  CHECK(bfs->barrier_calls() > calls);
}

// An image that counts its real syncs.
struct CountingImage : BlockDevice {
  std::unique_ptr<BlockDevice> m = NewMemDevice(1 << 20);
  std::atomic<int> syncs{0};
  Status Read(uint64_t o, void* b, size_t k) override { return m->Read(o, b, k); }
  Status Write(uint64_t o, const void* b, size_t k) override { return m->Write(o, b, k); }
  Status Sync() override {
    ++syncs;
    return Status::Ok();
  }
  uint64_t size() const override { return m->size(); }
};

TEST_CASE("barrier: syncs the image only when it is dirty") {
  TempDir d;
  auto img = std::make_unique<CountingImage>();
  CountingImage* counting = img.get();
  TrackedDevice dev(std::move(img));
  auto bfs = std::make_shared<BarrierFileSystem>(rocksdb::FileSystem::Default(),
                                                 [&dev] { return dev.SyncIfDirty(); });
  auto store = OpenStore(d.path + "/meta", bfs);
  REQUIRE(store->SyncWal().ok());
  const int base = counting->syncs;
  REQUIRE(store->Put(Cf::kVolume, "a", "1").ok());
  REQUIRE(store->SyncWal().ok());
  CHECK(counting->syncs == base);  // no image write: no image sync
  char blk[4096] = {7};
  REQUIRE(dev.Write(0, blk, sizeof blk).ok());
  REQUIRE(store->Put(Cf::kVolume, "b", "2").ok());
  const uint64_t calls = bfs->barrier_calls();
  REQUIRE(store->SyncWal().ok());
  CHECK(bfs->barrier_calls() >= calls + 2);  // append and sync
  CHECK(counting->syncs == base + 1);        // exactly one image sync
  REQUIRE(store->SyncWal().ok());
  CHECK(counting->syncs == base + 1);
  store.reset();  // closes files through the barrier while dev is alive
}

TEST_CASE("barrier: a failing barrier writes nothing and fails the sync") {
  TempDir d;
  const std::string dir = d.path + "/meta";
  std::atomic<bool> fail{false};
  auto bfs = std::make_shared<BarrierFileSystem>(rocksdb::FileSystem::Default(), [&] {
    return fail ? Status::IOError("image on fire") : Status::Ok();
  });
  auto store = OpenStore(dir, bfs);
  REQUIRE(store->SyncWal().ok());
  const uint64_t before = WalBytes(dir);
  REQUIRE(store->Put(Cf::kVolume, "x", std::string(1000, 'x')).ok());
  fail = true;
  Status s = store->SyncWal();
  CHECK(!s.ok());
  CHECK(s.message().find("barrier") != std::string::npos);
  CHECK(WalBytes(dir) == before);  // not one byte reached the WAL
  CHECK(bfs->barrier_failures() > 0);
  // The store stops taking writes after the failure (RocksDB background error).
  CHECK(!store->Put(Cf::kVolume, "y", "1").ok());
  fail = false;
  store.reset();
  // Reopen: "x" was never durable.
  auto again = OpenStore(dir, bfs, false);
  std::string v;
  CHECK(again->Get(Cf::kVolume, "x", &v).Is(Code::kNotFound));
}

TEST_CASE("fault fs: injected NoSpace reaches SyncWal and Write") {
  TempDir d;
  auto ffs = std::make_shared<FaultInjectionFileSystem>(rocksdb::FileSystem::Default());
  auto bfs = std::make_shared<BarrierFileSystem>(ffs, [] { return Status::Ok(); });
  auto store = OpenStore(d.path + "/meta", bfs);
  REQUIRE(store->Put(Cf::kVolume, "a", "1").ok());
  REQUIRE(store->SyncWal().ok());
  ffs->InjectWriteError(FaultInjectionFileSystem::Fault::kNoSpace, 0,
                        FaultInjectionFileSystem::Target::kWal);
  (void)store->Put(Cf::kVolume, "b", "2");  // buffered: may still succeed
  Status s = store->SyncWal();
  CHECK(s.Is(Code::kNoSpace));
  CHECK(s.ToErrno() == ENOSPC);
  CHECK(ffs->injected_failures() > 0);
  // Later writes fail too (the store is stopped), with a non-ok status.
  rocksdb::WriteBatch b;
  REQUIRE(b.Put(store->handle(Cf::kVolume), "c", "3").ok());
  CHECK(!store->Write(&b).ok());
  ffs->InjectWriteError(FaultInjectionFileSystem::Fault::kNone);
}

TEST_CASE("fault fs: a large write that overflows the WAL buffer fails in Write itself") {
  TempDir d;
  auto ffs = std::make_shared<FaultInjectionFileSystem>(rocksdb::FileSystem::Default());
  auto store = OpenStore(d.path + "/meta", ffs);
  ffs->InjectWriteError(FaultInjectionFileSystem::Fault::kNoSpace);
  rocksdb::WriteBatch b;
  REQUIRE(b.Put(store->handle(Cf::kVolume), "big", std::string(4 << 20, 'b')).ok());
  Status s = store->Write(&b);
  CHECK(!s.ok());
  CHECK(s.Is(Code::kNoSpace));
  ffs->InjectWriteError(FaultInjectionFileSystem::Fault::kNone);
}

TEST_CASE("fault fs: injected sync error reaches SyncWal") {
  TempDir d;
  auto ffs = std::make_shared<FaultInjectionFileSystem>(rocksdb::FileSystem::Default());
  auto store = OpenStore(d.path + "/meta", ffs);
  REQUIRE(store->Put(Cf::kVolume, "a", "1").ok());
  ffs->InjectSyncError(FaultInjectionFileSystem::Fault::kIOError, 1);
  Status s = store->SyncWal();
  CHECK(s.Is(Code::kIOError));
  CHECK(ffs->injected_failures() == 1);
}

// Writes `synced` keys, SyncWal, then `unsynced` keys pushed to the OS but
// not synced; cuts the power (optionally dropping unsynced data); reopens and
// returns which keys exist.
std::map<std::string, bool> PowerCut(const std::string& dir, int synced, int unsynced, bool drop) {
  auto ffs = std::make_shared<FaultInjectionFileSystem>(rocksdb::FileSystem::Default());
  auto bfs = std::make_shared<BarrierFileSystem>(ffs, [] { return Status::Ok(); });
  {
    auto store = OpenStore(dir, bfs);
    for (int i = 0; i < synced; ++i) REQUIRE(store->Put(Cf::kAlloc, Key(i), "s").ok());
    REQUIRE(store->SyncWal().ok());
    for (int i = synced; i < synced + unsynced; ++i) {
      REQUIRE(store->Put(Cf::kAlloc, Key(i), "u").ok());
    }
    // Push the buffered WAL to the OS without syncing it.
    REQUIRE(store->db()->FlushWAL(false).ok());
    CHECK(ffs->UnsyncedBytes() > 0);
    ffs->SetActive(false);  // power off: the destructor's FlushWAL fails
  }
  if (drop) {
    auto ds = ffs->DropUnsyncedData();
    REQUIRE_MESSAGE(ds.ok(), ds.ToString());
  }
  ffs->SetActive(true);
  auto store = OpenStore(dir, rocksdb::FileSystem::Default(), false);
  std::map<std::string, bool> out;
  for (int i = 0; i < synced + unsynced; ++i) {
    std::string v;
    Status s = store->Get(Cf::kAlloc, Key(i), &v);
    REQUIRE((s.ok() || s.Is(Code::kNotFound)));
    out[Key(i)] = s.ok();
  }
  return out;
}

TEST_CASE("fault fs: after a power cut only the synced keys exist") {
  TempDir d;
  auto got = PowerCut(d.path + "/meta", 50, 30, true);
  for (int i = 0; i < 50; ++i) CHECK_MESSAGE(got[Key(i)], Key(i));
  for (int i = 50; i < 80; ++i) CHECK_MESSAGE(!got[Key(i)], Key(i));
}

TEST_CASE("fault fs: without dropping, the unsynced keys would have survived (control)") {
  TempDir d;
  auto got = PowerCut(d.path + "/meta", 50, 30, false);
  for (int i = 0; i < 80; ++i) CHECK_MESSAGE(got[Key(i)], Key(i));
}

TEST_CASE("fault fs: power cut after a memtable flush keeps synced data") {
  TempDir d;
  const std::string dir = d.path + "/meta";
  auto ffs = std::make_shared<FaultInjectionFileSystem>(rocksdb::FileSystem::Default());
  {
    auto store = OpenStore(dir, ffs);
    for (int i = 0; i < 100; ++i) REQUIRE(store->Put(Cf::kInodes, Key(i), "v").ok());
    REQUIRE(store->FlushAll().ok());  // SST files + MANIFEST, synced
    for (int i = 100; i < 120; ++i) REQUIRE(store->Put(Cf::kInodes, Key(i), "v").ok());
    REQUIRE(store->db()->FlushWAL(false).ok());
    ffs->SetActive(false);
  }
  REQUIRE(ffs->DropUnsyncedData().ok());
  ffs->SetActive(true);
  auto store = OpenStore(dir, ffs, false);
  std::string v;
  for (int i = 0; i < 100; ++i) CHECK(store->Get(Cf::kInodes, Key(i), &v).ok());
  for (int i = 100; i < 120; ++i) CHECK(store->Get(Cf::kInodes, Key(i), &v).Is(Code::kNotFound));
}

TEST_CASE("fault fs: file-level semantics of DropUnsyncedData") {
  TempDir d;
  auto ffs = std::make_shared<FaultInjectionFileSystem>(rocksdb::FileSystem::Default());
  rocksdb::FileOptions fo;
  rocksdb::IOOptions io;
  const std::string never = d.path + "/never_synced";
  const std::string partly = d.path + "/partly";
  const std::string renamed = d.path + "/renamed";
  {
    std::unique_ptr<rocksdb::FSWritableFile> f;
    REQUIRE(ffs->NewWritableFile(never, fo, &f, nullptr).ok());
    REQUIRE(f->Append("hello", io, nullptr).ok());
    REQUIRE(f->Close(io, nullptr).ok());
  }
  {
    std::unique_ptr<rocksdb::FSWritableFile> f;
    REQUIRE(ffs->NewWritableFile(partly + ".tmp", fo, &f, nullptr).ok());
    REQUIRE(f->Append("durable", io, nullptr).ok());
    REQUIRE(f->Sync(io, nullptr).ok());
    REQUIRE(f->Append("-volatile", io, nullptr).ok());
    REQUIRE(f->Close(io, nullptr).ok());
    REQUIRE(ffs->RenameFile(partly + ".tmp", partly, io, nullptr).ok());
  }
  {
    std::unique_ptr<rocksdb::FSWritableFile> f;
    REQUIRE(ffs->NewWritableFile(renamed, fo, &f, nullptr).ok());
    REQUIRE(f->Append("abc", io, nullptr).ok());
    REQUIRE(f->Fsync(io, nullptr).ok());
    REQUIRE(f->Close(io, nullptr).ok());
  }
  CHECK(ffs->UnsyncedBytes() == 5 + 9);
  CHECK(fsys::file_size(partly) == 16);
  REQUIRE(ffs->DropUnsyncedData().ok());
  CHECK(!fsys::exists(never));
  CHECK(fsys::file_size(partly) == 7);
  CHECK(fsys::file_size(renamed) == 3);
  CHECK(ffs->UnsyncedBytes() == 0);
  // While inactive nothing can be created or written.
  ffs->SetActive(false);
  std::unique_ptr<rocksdb::FSWritableFile> f;
  CHECK(!ffs->NewWritableFile(d.path + "/x", fo, &f, nullptr).ok());
  CHECK(!ffs->DeleteFile(partly, io, nullptr).ok());
  ffs->SetActive(true);
}

}  // namespace
}  // namespace psm
