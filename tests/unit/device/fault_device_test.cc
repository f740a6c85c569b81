// Tests for fs/device/fault_device: every injected failure, and the power cut that
// reverts exactly the writes since the last successful sync.
#include "fs/device/fault_device.h"

#include <doctest/doctest.h>
#include <stdlib.h>

#include <filesystem>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace psm {
namespace {

std::string ReadAll(BlockDevice* d) {
  std::string s(d->size(), '\0');
  REQUIRE(d->Read(0, s.data(), s.size()).ok());
  return s;
}

Status Put(BlockDevice* d, uint64_t off, const std::string& s) {
  return d->Write(off, s.data(), s.size());
}

TEST_CASE("fault device: the nth write fails with EIO and writes nothing") {
  FaultDevice dev(NewMemDevice(4096));
  dev.FailNthWrite(3);
  CHECK(Put(&dev, 0, "aa").ok());
  CHECK(Put(&dev, 2, "bb").ok());
  Status s = Put(&dev, 4, "cc");
  CHECK(s.Is(Code::kIOError));
  CHECK(Put(&dev, 6, "dd").ok());
  CHECK(ReadAll(&dev).substr(0, 8) == std::string("aabb\0\0dd", 8));
  auto c = dev.counters();
  CHECK(c.writes == 3);
  CHECK(c.failed_writes == 1);
  CHECK(c.bytes_written == 6);
}

TEST_CASE("fault device: sticky failure fails every later write") {
  FaultDevice dev(NewMemDevice(4096));
  dev.FailNthWrite(2, true);
  CHECK(Put(&dev, 0, "a").ok());
  CHECK(!Put(&dev, 1, "b").ok());
  CHECK(!Put(&dev, 2, "c").ok());
  dev.ClearFaults();
  CHECK(Put(&dev, 3, "d").ok());
  CHECK(ReadAll(&dev).substr(0, 4) == std::string("a\0\0d", 4));
}

TEST_CASE("fault device: ENOSPC while the switch is on") {
  FaultDevice dev(NewMemDevice(4096));
  dev.SetNoSpace(true);
  Status s = Put(&dev, 0, "x");
  CHECK(s.Is(Code::kNoSpace));
  CHECK(s.ToErrno() == ENOSPC);
  CHECK(ReadAll(&dev)[0] == '\0');
  dev.SetNoSpace(false);
  CHECK(Put(&dev, 0, "x").ok());
}

TEST_CASE("fault device: torn write lands only its first k bytes") {
  FaultDevice dev(NewMemDevice(4096));
  REQUIRE(Put(&dev, 0, "........").ok());
  dev.TearNextWrite(3);
  CHECK(!Put(&dev, 0, "ABCDEFGH").ok());
  CHECK(ReadAll(&dev).substr(0, 8) == "ABC.....");
  CHECK(Put(&dev, 0, "ABCDEFGH").ok());  // one-shot
  CHECK(ReadAll(&dev).substr(0, 8) == "ABCDEFGH");
}

TEST_CASE("fault device: failed sync makes nothing durable") {
  FaultDevice dev(NewMemDevice(4096));
  REQUIRE(Put(&dev, 0, "one").ok());
  REQUIRE(dev.Sync().ok());
  REQUIRE(Put(&dev, 0, "two").ok());
  dev.FailSync();
  CHECK(!dev.Sync().ok());
  CHECK(dev.counters().lost_writes == 1);
  REQUIRE(dev.DropUnsynced().ok());
  CHECK(ReadAll(&dev).substr(0, 3) == "one");
  CHECK(dev.counters().syncs == 1);
  CHECK(dev.counters().failed_syncs == 1);
}

TEST_CASE("fault device: as on Linux, the sync after a failed one succeeds and the lost "
          "writes stay lost") {
  FaultDevice dev(NewMemDevice(4096));
  REQUIRE(Put(&dev, 0, "aaaa").ok());
  REQUIRE(dev.Sync().ok());
  REQUIRE(Put(&dev, 0, "bbbb").ok());   // lost by the failed sync
  REQUIRE(Put(&dev, 8, "cccc").ok());   // lost too
  dev.FailSync();
  CHECK(!dev.Sync().ok());
  CHECK(ReadAll(&dev).substr(0, 4) == "bbbb");  // still readable (page cache)
  REQUIRE(Put(&dev, 10, "DD").ok());  // over part of a lost write, then synced
  CHECK(dev.Sync().ok());             // reports success...
  CHECK(dev.counters().unsynced_writes == 0);
  REQUIRE(dev.DropUnsynced().ok());   // ...but the power cut shows the truth
  const std::string got = ReadAll(&dev);
  CHECK(got.substr(0, 4) == "aaaa");
  CHECK(got.substr(8, 2) == std::string(2, '\0'));  // lost "cc" of "cccc"
  CHECK(got.substr(10, 2) == "DD");                // synced later: durable
}

TEST_CASE("fault device: the sync hook runs after the sync fixed what it covers") {
  FaultDevice dev(NewMemDevice(4096));
  REQUIRE(Put(&dev, 0, "old!").ok());
  dev.SetSyncHook([&] { REQUIRE(Put(&dev, 4, "late").ok()); });
  REQUIRE(dev.Sync().ok());
  dev.SetSyncHook(nullptr);
  CHECK(dev.counters().unsynced_writes == 1);  // the write made inside the hook
  REQUIRE(dev.DropUnsynced().ok());
  const std::string got = ReadAll(&dev);
  CHECK(got.substr(0, 4) == "old!");
  CHECK(got.substr(4, 4) == std::string(4, '\0'));
}

TEST_CASE("fault device: offline fails everything") {
  FaultDevice dev(NewMemDevice(4096));
  dev.SetOffline(true);
  char b[1];
  CHECK(!dev.Read(0, b, 1).ok());
  CHECK(!Put(&dev, 0, "x").ok());
  CHECK(!dev.Sync().ok());
  dev.SetOffline(false);
  CHECK(Put(&dev, 0, "x").ok());
}

TEST_CASE("fault device: power cut reverts exactly the unsynced writes (random model)") {
  const uint64_t size = 1 << 14;
  FaultDevice dev(NewMemDevice(size));
  std::mt19937 rng(42);
  std::string model(size, '\0');    // what the device holds
  std::string durable(size, '\0');  // what survives a power cut
  for (int round = 0; round < 20; ++round) {
    for (int i = 0; i < 50; ++i) {
      uint64_t off = rng() % size;
      size_t n = 1 + rng() % std::min<uint64_t>(700, size - off);
      std::string data(n, '\0');
      for (auto& ch : data) ch = static_cast<char>('a' + rng() % 26);
      REQUIRE(Put(&dev, off, data).ok());
      model.replace(off, n, data);
      if (rng() % 10 == 0) {
        REQUIRE(dev.Sync().ok());
        durable = model;
      }
    }
    CHECK(ReadAll(&dev) == model);
    REQUIRE(dev.DropUnsynced().ok());
    model = durable;
    CHECK(ReadAll(&dev) == durable);
  }
}

TEST_CASE("fault device: power cut over a posix image file") {
  char tmpl[] = "/tmp/psm_fdev_XXXXXX";
  REQUIRE(mkdtemp(tmpl) != nullptr);
  const std::string dir = tmpl;
  {
    auto base = OpenPosixDevice(dir + "/image", true, 1 << 16);
    REQUIRE(base.ok());
    FaultDevice dev(std::move(base).value());
    CHECK(dev.fd() == -1);
    REQUIRE(Put(&dev, 100, "durable").ok());
    REQUIRE(dev.Sync().ok());
    REQUIRE(Put(&dev, 100, "LOST").ok());
    REQUIRE(Put(&dev, 5000, "lost too").ok());
    REQUIRE(dev.DropUnsynced().ok());
  }
  auto again = OpenPosixDevice(dir + "/image", false, 0);
  REQUIRE(again.ok());
  std::string got(8, '\0');
  REQUIRE((*again)->Read(100, got.data(), 7).ok());
  CHECK(got.substr(0, 7) == "durable");
  REQUIRE((*again)->Read(5000, got.data(), 8).ok());
  CHECK(got == std::string(8, '\0'));
  std::filesystem::remove_all(dir);
}

TEST_CASE("fault device: thread-safe counters and power cut under concurrency") {
  const uint64_t size = 1 << 16;
  FaultDevice dev(NewMemDevice(size));
  constexpr int kThreads = 4;
  constexpr int kWrites = 200;
  std::vector<std::thread> ts;
  for (int t = 0; t < kThreads; ++t) {
    ts.emplace_back([&, t] {
      for (int i = 0; i < kWrites; ++i) {
        std::string v(16, static_cast<char>('A' + t));
        CHECK(dev.Write(static_cast<uint64_t>(t) * (size / kThreads) + (i % 64) * 16, v.data(),
                        v.size())
                  .ok());
        if (i == kWrites / 2) CHECK(dev.Sync().ok());
      }
    });
  }
  for (auto& t : ts) t.join();
  auto c = dev.counters();
  CHECK(c.writes == kThreads * kWrites);
  CHECK(c.syncs == kThreads);
  REQUIRE(dev.Sync().ok());
  std::string synced = ReadAll(&dev);
  std::string junk(64, 'z');
  REQUIRE(Put(&dev, 0, junk).ok());
  REQUIRE(dev.DropUnsynced().ok());
  CHECK(ReadAll(&dev) == synced);
}

}  // namespace
}  // namespace psm
