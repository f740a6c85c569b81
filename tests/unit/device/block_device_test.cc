// Tests for fs/device/block_device: the POSIX image, the memory device and
// TrackedDevice's "sync only when dirty" bookkeeping.
#include "fs/device/block_device.h"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace psm {
namespace {

struct TempDir {
  std::string path;
  TempDir() {
    char tmpl[] = "/tmp/psm_bdev_XXXXXX";
    REQUIRE(mkdtemp(tmpl) != nullptr);
    path = tmpl;
  }
  ~TempDir() { std::filesystem::remove_all(path); }
};

std::string Pattern(size_t n, uint32_t seed) {
  std::string s(n, '\0');
  std::mt19937 rng(seed);
  for (auto& c : s) c = static_cast<char>(rng());
  return s;
}

// A device that counts Sync calls and can block inside Sync or fail it.
class CountingDevice : public BlockDevice {
 public:
  explicit CountingDevice(uint64_t size) : mem_(NewMemDevice(size)) {}
  Status Read(uint64_t o, void* b, size_t n) override { return mem_->Read(o, b, n); }
  Status Write(uint64_t o, const void* b, size_t n) override { return mem_->Write(o, b, n); }
  Status Sync() override {
    syncs.fetch_add(1);
    if (block_sync.load()) {
      std::unique_lock<std::mutex> l(mu);
      in_sync = true;
      cv.notify_all();
      cv.wait(l, [&] { return release; });
    }
    if (fail_sync.load()) return Status::IOError("sync failed");
    return Status::Ok();
  }
  uint64_t size() const override { return mem_->size(); }

  std::atomic<int> syncs{0};
  std::atomic<bool> fail_sync{false};
  std::atomic<bool> block_sync{false};
  std::mutex mu;
  std::condition_variable cv;
  bool in_sync = false;
  bool release = false;

 private:
  std::unique_ptr<BlockDevice> mem_;
};

TEST_CASE("posix device: created sparse, with the requested size") {
  TempDir d;
  const std::string p = d.path + "/image";
  const uint64_t size = 64ull << 20;
  auto r = OpenPosixDevice(p, true, size);
  REQUIRE(r.ok());
  auto dev = std::move(r).value();
  CHECK(dev->size() == size);
  CHECK(dev->fd() >= 0);
  struct stat st;
  REQUIRE(stat(p.c_str(), &st) == 0);
  CHECK(static_cast<uint64_t>(st.st_size) == size);
  // Sparse: far fewer bytes allocated than the size.
  CHECK(static_cast<uint64_t>(st.st_blocks) * 512 < size / 16);
  CHECK(dev->Sync().ok());
}

TEST_CASE("posix device: writes read back, across reopen") {
  TempDir d;
  const std::string p = d.path + "/image";
  const uint64_t size = 8ull << 20;
  const std::string a = Pattern(3 << 20, 1);  // a large transfer
  const std::string b = Pattern(4096, 2);
  {
    auto dev = OpenPosixDevice(p, true, size);
    REQUIRE(dev.ok());
    REQUIRE((*dev)->Write(12345, a.data(), a.size()).ok());
    REQUIRE((*dev)->Write(size - b.size(), b.data(), b.size()).ok());
    REQUIRE((*dev)->Sync().ok());
  }
  auto dev = OpenPosixDevice(p, false, 0);
  REQUIRE(dev.ok());
  CHECK((*dev)->size() == size);
  std::string got(a.size(), '\0');
  REQUIRE((*dev)->Read(12345, got.data(), got.size()).ok());
  CHECK(got == a);
  std::string got_b(b.size(), '\0');
  REQUIRE((*dev)->Read(size - b.size(), got_b.data(), got_b.size()).ok());
  CHECK(got_b == b);
  // Untouched bytes read as zeros.
  char z[16];
  REQUIRE((*dev)->Read(0, z, sizeof z).ok());
  CHECK(std::string(z, sizeof z) == std::string(sizeof z, '\0'));
}

TEST_CASE("posix device: out-of-range I/O fails and names the image") {
  TempDir d;
  const std::string p = d.path + "/image";
  auto dev = OpenPosixDevice(p, true, 1 << 20);
  REQUIRE(dev.ok());
  char buf[8] = {};
  Status s = (*dev)->Read((1 << 20) - 4, buf, 8);
  CHECK(s.Is(Code::kInvalid));
  CHECK(s.message().find(p) != std::string::npos);
  s = (*dev)->Write(1 << 20, buf, 1);
  CHECK(s.Is(Code::kInvalid));
  CHECK(s.message().find(p) != std::string::npos);
  // Zero-length I/O at the very end is fine.
  CHECK((*dev)->Read(1 << 20, buf, 0).ok());
}

TEST_CASE("posix device: clear errors when opening") {
  TempDir d;
  const std::string missing = d.path + "/nope";
  auto r = OpenPosixDevice(missing, false, 0);
  REQUIRE(!r.ok());
  CHECK(r.status().Is(Code::kNotFound));
  CHECK(r.status().message().find(missing) != std::string::npos);

  auto r2 = OpenPosixDevice(d.path, false, 0);  // a directory
  REQUIRE(!r2.ok());
  CHECK(r2.status().message().find(d.path) != std::string::npos);

  auto r3 = OpenPosixDevice("/dev/null", false, 0);  // a character device
  REQUIRE(!r3.ok());
  CHECK(r3.status().Is(Code::kInvalid));
  CHECK(r3.status().message().find("/dev/null") != std::string::npos);

  auto r4 = OpenPosixDevice(d.path + "/no/such/dir/image", true, 4096);
  REQUIRE(!r4.ok());
  CHECK(r4.status().message().find("no/such/dir") != std::string::npos);
}

TEST_CASE("posix device: concurrent writers to disjoint blocks") {
  TempDir d;
  auto dev = OpenPosixDevice(d.path + "/image", true, 4 << 20);
  REQUIRE(dev.ok());
  BlockDevice* bd = dev->get();
  std::vector<std::thread> ts;
  std::atomic<int> errors{0};
  for (int t = 0; t < 4; ++t) {
    ts.emplace_back([&, t] {
      for (int i = 0; i < 64; ++i) {
        std::string blk = Pattern(4096, static_cast<uint32_t>(t * 1000 + i));
        if (!bd->Write(static_cast<uint64_t>(i * 4 + t) * 4096, blk.data(), blk.size()).ok()) {
          ++errors;
        }
      }
    });
  }
  for (auto& t : ts) t.join();
  CHECK(errors == 0);
  for (int t = 0; t < 4; ++t) {
    for (int i = 0; i < 64; ++i) {
      std::string got(4096, '\0');
      REQUIRE(bd->Read(static_cast<uint64_t>(i * 4 + t) * 4096, got.data(), got.size()).ok());
      CHECK(got == Pattern(4096, static_cast<uint32_t>(t * 1000 + i)));
    }
  }
}

TEST_CASE("memory device: round trip and bounds") {
  auto dev = NewMemDevice(1 << 16);
  CHECK(dev->size() == (1u << 16));
  std::string a = Pattern(1000, 7);
  REQUIRE(dev->Write(500, a.data(), a.size()).ok());
  std::string got(a.size(), '\0');
  REQUIRE(dev->Read(500, got.data(), got.size()).ok());
  CHECK(got == a);
  CHECK(!dev->Write((1 << 16) - 10, a.data(), 11).ok());
  CHECK(!dev->Read(1 << 17, got.data(), 1).ok());
  CHECK(dev->Sync().ok());
  CHECK(dev->fd() == -1);
}

TEST_CASE("tracked device: syncs only when a write completed since the last sync") {
  auto base = std::make_unique<CountingDevice>(1 << 16);
  CountingDevice* c = base.get();
  TrackedDevice dev(std::move(base));
  CHECK(dev.SyncIfDirty().ok());
  CHECK(c->syncs == 0);  // nothing written yet
  char b[512] = {1};
  REQUIRE(dev.Write(0, b, sizeof b).ok());
  CHECK(dev.SyncIfDirty().ok());
  CHECK(c->syncs == 1);
  CHECK(dev.SyncIfDirty().ok());
  CHECK(c->syncs == 1);  // clean
  // An unconditional Sync also marks it clean.
  REQUIRE(dev.Write(0, b, sizeof b).ok());
  CHECK(dev.Sync().ok());
  CHECK(dev.SyncIfDirty().ok());
  CHECK(c->syncs == 2);
  // A failed write may have landed partly: it makes the device dirty too.
  CHECK(!dev.Write(1 << 16, b, sizeof b).ok());
  CHECK(dev.SyncIfDirty().ok());
  CHECK(c->syncs == 3);
}

TEST_CASE("tracked device: reports the write count a sync covered") {
  auto base = std::make_unique<CountingDevice>(1 << 16);
  TrackedDevice dev(std::move(base));
  char b[512] = {1};
  uint64_t covered = 99;
  CHECK(dev.SyncIfDirty(&covered).ok());
  CHECK(covered == 0);
  REQUIRE(dev.Write(0, b, sizeof b).ok());
  REQUIRE(dev.Write(512, b, sizeof b).ok());
  CHECK(dev.WritesCompleted() == 2);
  CHECK(dev.SyncIfDirty(&covered).ok());
  CHECK(covered == 2);
  CHECK(dev.SyncIfDirty(&covered).ok());  // clean: still covers both
  CHECK(covered == 2);
}

TEST_CASE("tracked device: the first failed sync is sticky (Linux forgets the error)") {
  auto base = std::make_unique<CountingDevice>(1 << 16);
  CountingDevice* c = base.get();
  TrackedDevice dev(std::move(base));
  char b[512] = {1};
  REQUIRE(dev.Write(0, b, sizeof b).ok());
  CHECK(dev.SyncIfDirty().ok());
  REQUIRE(dev.Write(512, b, sizeof b).ok());
  c->fail_sync = true;
  Status first = dev.SyncIfDirty();
  CHECK(first.Is(Code::kIOError));
  CHECK(dev.failed());
  // The base would now "succeed" (as fdatasync does after a writeback error
  // on Linux); the device must not believe it.
  c->fail_sync = false;
  const uint64_t syncs = c->syncs;
  CHECK(dev.SyncIfDirty().Is(Code::kIOError));
  CHECK(dev.Sync().Is(Code::kIOError));
  CHECK(c->syncs == syncs);  // not even asked
  CHECK(dev.Write(0, b, sizeof b).Is(Code::kIOError));
  CHECK(dev.Failure().message().find("mounted again") != std::string::npos);
  char r[512];
  CHECK(dev.Read(0, r, sizeof r).ok());  // reads go on
}

TEST_CASE("tracked device: a write that completes during a sync is not counted as synced") {
  auto base = std::make_unique<CountingDevice>(1 << 16);
  CountingDevice* c = base.get();
  TrackedDevice dev(std::move(base));
  char b[512] = {1};
  REQUIRE(dev.Write(0, b, sizeof b).ok());
  c->block_sync = true;
  std::thread syncer([&] { CHECK(dev.SyncIfDirty().ok()); });
  {
    std::unique_lock<std::mutex> l(c->mu);
    c->cv.wait(l, [&] { return c->in_sync; });
  }
  // The sync is in progress; this write may or may not be covered by it.
  REQUIRE(dev.Write(512, b, sizeof b).ok());
  {
    std::lock_guard<std::mutex> l(c->mu);
    c->release = true;
  }
  c->cv.notify_all();
  syncer.join();
  c->block_sync = false;
  CHECK(c->syncs == 1);
  CHECK(dev.SyncIfDirty().ok());
  CHECK(c->syncs == 2);  // the racing write forced another sync
}

}  // namespace
}  // namespace psm
