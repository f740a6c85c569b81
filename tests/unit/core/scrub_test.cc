// Scrub through the core (docs/integrity.md): a clean volume scrubs clean
// and verifies every allocated block once; a byte changed in the image
// under a block the live tree and a snapshot share, and under one only a
// snapshot sees, is reported with exactly the paths that read it (an
// intact file is not named); a scrub stopped by an unmount resumes at the
// next mount and ends with the same count; --stop; a volume without
// checksums refuses. Where a block sits is found by searching the image for
// the pattern written; what must be reported comes from the test's own
// model of which trees hold which pattern.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <random>
#include <set>
#include <string>

#include "tests/common/image_block.h"
#include "tests/common/core_test_util.h"
#include "fs/device/block_device.h"

using namespace psm;
using psm_test::CoreVolume;

namespace {

constexpr size_t kBs = 4096;

std::string Blocks(uint64_t seed, size_t n) {
  return psm_test::Pattern(n * kBs, static_cast<uint32_t>(seed));
}

void Flip(const std::string& dir, std::string_view block) {
  psm::testutil::FlipInImage(dir + "/image", block, 9, 1);
}

ScrubStatus Scrub(CoreVolume& v, double rate = 0) {
  REQUIRE(v.fs->StartScrub(rate).ok());
  REQUIRE(v.fs->WaitScrub(120));
  return v.fs->GetScrubStatus();
}

}  // namespace

TEST_CASE("scrub: clean volume, every allocated block verified once") {
  CoreVolume v;
  NodeId d = v.Mkdir(kRootIno, "d");
  NodeId a = v.Put(d, "a", Blocks(1, 8));
  v.Put(kRootIno, "b", Blocks(2, 5));
  REQUIRE(v.fs->CreateSnapshot("s1").ok());
  REQUIRE(v.WriteAt(a, 2 * kBs, Blocks(3, 2)).ok());  // 2 new blocks; s1 keeps the old 2
  const ScrubStatus s = Scrub(v);
  CHECK(s.state == "finished");
  CHECK(s.damaged_blocks == 0);
  CHECK(s.damage.empty());
  CHECK(s.checked_blocks == 8 + 5 + 2);  // the model: what was written
  CHECK(s.unverified_blocks == 0);
  CHECK(s.cursor == s.end);
  CHECK(v.fs->Stats().checksum_errors == 0);
  // A second start while none runs begins again.
  CHECK(Scrub(v).checked_blocks == 15);
}

TEST_CASE("scrub: names every path of a damaged block, live and snapshot, and no other") {
  CoreVolume v;
  NodeId d = v.Mkdir(kRootIno, "d");
  const std::string a0 = Blocks(10, 6), b0 = Blocks(11, 4), fresh = Blocks(12, 1);
  NodeId a = v.Put(d, "a", a0);
  v.Put(kRootIno, "b", b0);
  REQUIRE(v.fs->CreateSnapshot("s1").ok());
  REQUIRE(v.WriteAt(a, 4 * kBs, fresh).ok());  // block 4: s1's old one, live's new one
  v.Remount();
  Flip(v.dir, std::string_view(a0).substr(1 * kBs, kBs));  // shared by live and s1
  Flip(v.dir, std::string_view(a0).substr(4 * kBs, kBs));  // only s1
  v.Remount();
  const ScrubStatus s = Scrub(v);
  CHECK(s.state == "finished");
  REQUIRE(s.damaged_blocks == 2);
  REQUIRE(s.damage.size() == 2);
  std::multiset<std::string> got;
  for (const ScrubDamage& x : s.damage) {
    for (const std::string& p : x.paths) got.insert(p);
  }
  const std::multiset<std::string> want{"d/a (offset 4096)", ".snapshots/s1/d/a (offset 4096)",
                                        ".snapshots/s1/d/a (offset 16384)"};
  CHECK(got == want);
  CHECK(v.fs->Stats().checksum_errors == 2);
  // The result survives a remount.
  v.Remount();
  const ScrubStatus again = v.fs->GetScrubStatus();
  CHECK(again.state == "finished");
  CHECK(again.damaged_blocks == 2);
  CHECK(again.damage.size() == 2);
}

TEST_CASE("scrub: an unmount stops it, the next mount resumes it, --stop stops it") {
  CoreVolume v;
  v.Put(kRootIno, "big", Blocks(20, 3072));  // 12 MiB: three steps of 4 MiB
  REQUIRE(v.fs->StartScrub(2.0).ok());       // 2 MiB/s: a step every 2 s
  usleep(600 * 1000);
  CHECK(v.fs->GetScrubStatus().state == "running");
  v.Remount();
  // Resumed after the first step, not from the beginning; the second step
  // keeps it running for 2 s.
  const ScrubStatus mid = v.fs->GetScrubStatus();
  CHECK(mid.state == "running");
  CHECK(mid.cursor > 1);
  REQUIRE(v.fs->WaitScrub(120));
  const ScrubStatus s = v.fs->GetScrubStatus();
  CHECK(s.state == "finished");
  CHECK(s.checked_blocks == 3072);  // each block once, across the remount
  CHECK(s.damaged_blocks == 0);

  REQUIRE(v.fs->StartScrub(0.5).ok());
  CHECK(v.fs->StartScrub(0).Is(Code::kBusy));
  REQUIRE(v.fs->StopScrub().ok());
  CHECK(v.fs->GetScrubStatus().state == "stopped");
  CHECK(v.fs->StopScrub().Is(Code::kNotFound));
  v.Remount();
  CHECK(v.fs->GetScrubStatus().state == "stopped");  // not resumed
}

TEST_CASE("scrub: a volume without checksums refuses") {
  CoreVolume v;
  REQUIRE(v.fs->Close().ok());
  v.fs.reset();
  FormatOptions fo;
  fo.size_bytes = 64ull << 20;
  fo.force = true;
  fo.checksum = false;
  REQUIRE(Format(v.dir, fo).ok());
  v.Open();
  CHECK(v.fs->StartScrub(0).Is(Code::kNotSupported));
}

namespace {

// A memory image that records, block by block, what was announced with
// WillNeed and which reads found their blocks not announced before.
class HintDevice : public BlockDevice {
 public:
  explicit HintDevice(uint64_t size) : base_(NewMemDevice(size)) {}
  Status Read(uint64_t off, void* buf, size_t n) override {
    if (recording) {
      std::lock_guard<std::mutex> l(mu);
      for (uint64_t b = off / kBs; b < (off + n + kBs - 1) / kBs; ++b) {
        if (!hinted.count(b)) ++unhinted_reads;
      }
    }
    return base_->Read(off, buf, n);
  }
  Status Write(uint64_t off, const void* buf, size_t n) override { return base_->Write(off, buf, n); }
  Status Sync() override { return base_->Sync(); }
  uint64_t size() const override { return base_->size(); }
  void WillNeed(uint64_t off, uint64_t n) override {
    std::lock_guard<std::mutex> l(mu);
    CHECK(off % kBs == 0);
    CHECK(n % kBs == 0);
    for (uint64_t b = off / kBs; b < (off + n) / kBs; ++b) {
      if (!hinted.insert(b).second) ++hinted_twice;
    }
  }
  std::atomic<bool> recording{false};
  std::mutex mu;
  std::set<uint64_t> hinted;
  uint64_t hinted_twice = 0, unhinted_reads = 0;

 private:
  std::unique_ptr<BlockDevice> base_;
};

}  // namespace

TEST_CASE("scrub: asks the device for the allocated blocks ahead of reading them") {
  char t[] = "/tmp/psm-scrubhint-XXXXXX";
  const std::string dir = mkdtemp(t);
  auto dev = std::make_shared<HintDevice>(128ull << 20);
  FormatOptions fo;
  fo.size_bytes = 128ull << 20;
  fo.device = dev;
  REQUIRE(Format(dir, fo).ok());
  MountOptions o;
  o.commit_interval_ms = 20;
  o.device = dev;
  auto r = FileSystem::Open(dir, o);
  REQUIRE(r.ok());
  std::unique_ptr<FileSystem> fs = std::move(r).value();
  Credentials cred;
  // Three files of 3000 blocks (about 12 MiB each: many steps, and more
  // than the read-ahead window), the middle one removed: a hole of free
  // blocks between allocated ones.
  for (const char* name : {"a", "b", "c"}) {
    auto f = fs->Create(kRootIno, name, 0644, O_RDWR, cred);
    REQUIRE(f.ok());
    const std::string data = Blocks(name[0], 3000);
    REQUIRE(fs->Write(f->second, 0, data.data(), data.size()).ok());
    REQUIRE(fs->Release(f->second).ok());
  }
  REQUIRE(fs->Unlink(kRootIno, "b").ok());
  REQUIRE(fs->SyncAll().ok());
  REQUIRE(fs->SyncAll().ok());  // the freed blocks leave quarantine
  dev->recording = true;
  REQUIRE(fs->StartScrub(0).ok());
  REQUIRE(fs->WaitScrub(120));
  dev->recording = false;
  const ScrubStatus s = fs->GetScrubStatus();
  CHECK(s.state == "finished");
  CHECK(s.checked_blocks == 6000);
  CHECK(s.damaged_blocks == 0);
  {
    std::lock_guard<std::mutex> l(dev->mu);
    // Every block read was announced before, each once, and only the
    // allocated ones (not b's freed blocks).
    CHECK(dev->unhinted_reads == 0);
    CHECK(dev->hinted_twice == 0);
    CHECK(dev->hinted.size() == 6000);
  }
  REQUIRE(fs->Close().ok());
  fs.reset();
  std::filesystem::remove_all(dir);
}
