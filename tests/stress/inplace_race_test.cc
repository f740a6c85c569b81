// Overwrites in place on a checksummed volume race readers, back-to-back
// scrubs and (mirrored) the reads that repair a side: a reader may fetch a
// block's bytes and its checksum on either side of an overwrite, and must
// then read both again under the block's stripe instead of reporting a
// false checksum error (docs/integrity.md, "Races"). Every block must read
// as one of the versions the writers put there. Run under ThreadSanitizer
// in CI; PSMFS_SEED repeats a run, PSMFS_STRESS lengthens it.
#include <doctest/doctest.h>
#include <fcntl.h>

#include <atomic>
#include <chrono>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "tests/common/core_test_util.h"
#include "tests/common/psm_test_util.h"

using namespace psm;
using psm_test::CoreVolume;

namespace {
constexpr size_t kB = 4096;
}  // namespace

namespace {

// Writers overwrite whole blocks of a file in place while readers read it,
// scrubs run, and (mirrored) damage on one side is repaired: no read, no
// scrub may report a checksum error, and every block reads as one of the
// versions written to it.
void RaceOverwrites(CoreVolume& v) {
  const size_t kBlocks = 256;
  const int kVersions = 64;
  auto version = [](size_t b, int k) { return psm_test::Pattern(kB, static_cast<uint32_t>(b * 1000 + k)); };
  std::string init;
  for (size_t b = 0; b < kBlocks; ++b) init += version(b, 0);
  const NodeId node = v.Put(kRootIno, "f", init);
  REQUIRE(v.fs->SyncAll().ok());
  auto wfh = v.fs->OpenFile(node, O_RDWR);
  REQUIRE(wfh.ok());
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> failures{0}, foreign{0}, writes{0}, reads{0};
  const uint64_t seed = psm::testutil::SeedFromEnv("inplace_race", std::random_device{}());
  std::vector<std::thread> ts;
  for (int w = 0; w < 2; ++w) {
    ts.emplace_back([&, w] {
      std::mt19937_64 rng(seed + w);
      while (!stop) {
        const size_t b = rng() % kBlocks;
        const size_t n = 1 + rng() % 4;
        std::string data;
        for (size_t i = 0; i < n && b + i < kBlocks; ++i) {
          data += version(b + i, 1 + static_cast<int>(rng() % (kVersions - 1)));
        }
        auto r = v.fs->Write(*wfh, b * kB, data.data(), data.size(), /*kernel_times=*/true);
        if (!r.ok()) failures++;
        writes++;
      }
    });
  }
  for (int t = 0; t < 2; ++t) {
    ts.emplace_back([&, t] {
      std::mt19937_64 rng(seed + 100 + t);
      auto fh = v.fs->OpenFile(node, O_RDONLY);
      if (!fh.ok()) {
        failures++;
        return;
      }
      std::string buf;
      while (!stop) {
        const size_t b = rng() % kBlocks;
        const size_t n = std::min<size_t>(1 + rng() % 32, kBlocks - b);
        buf.assign(n * kB, '\0');
        auto r = v.fs->Read(*fh, b * kB, buf.size(), buf.data());
        reads++;
        if (!r.ok()) {
          failures++;
          continue;
        }
        for (size_t i = 0; i < n; ++i) {
          bool known = false;
          for (int k = 0; k < kVersions && !known; ++k) {
            known = buf.compare(i * kB, kB, version(b + i, k)) == 0;
          }
          if (!known) foreign++;
        }
      }
      (void)v.fs->Release(*fh);
    });
  }
  std::thread scrubber([&] {
    while (!stop) {
      if (v.fs->StartScrub(0).ok()) (void)v.fs->WaitScrub(30);
      ScrubStatus st = v.fs->GetScrubStatus();
      if (st.damaged_blocks != 0) failures++;
    }
  });
  // At least 2.5 s (scaled by PSMFS_STRESS), and on until every kind of
  // thread has done its share (a ThreadSanitizer build is 10-20x slower;
  // the readers there got ~50 reads in 2.5 s), at most 120 s.
  const auto t0 = std::chrono::steady_clock::now();
  const auto least = std::chrono::milliseconds(static_cast<int>(2500 * psm::testutil::StressFromEnv()));
  const uint64_t kMinOps = 300;
  while (std::chrono::steady_clock::now() - t0 < least ||
         ((reads.load() < kMinOps || writes.load() < kMinOps) &&
          std::chrono::steady_clock::now() - t0 < std::chrono::seconds(120))) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  stop = true;
  for (auto& t : ts) t.join();
  scrubber.join();
  REQUIRE(v.fs->Release(*wfh).ok());
  CAPTURE(seed);
  CHECK(writes.load() >= kMinOps);
  CHECK(reads.load() >= kMinOps);
  CHECK(failures.load() == 0);
  CHECK(foreign.load() == 0);
  CHECK(v.fs->Stats().checksum_errors == 0);
  CHECK(v.fs->Stats().write_intent_regions >= 1);
}

}  // namespace

TEST_CASE("overwrite in place: racing readers and scrubs see no false checksum error") {
  CoreVolume v;
  RaceOverwrites(v);
}

TEST_CASE("overwrite in place: the same on a mirrored volume") {
  CoreVolume v;
  REQUIRE(v.fs->Close().ok());
  v.fs.reset();
  FormatOptions fo;
  fo.size_bytes = 64ull << 20;
  fo.force = true;
  fo.mirror_path = v.dir + "/mirror.img";
  REQUIRE(Format(v.dir, fo).ok());
  v.Open();
  REQUIRE(v.fs->Stats().mirror.mirrored);
  RaceOverwrites(v);
}
