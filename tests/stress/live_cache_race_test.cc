// Readers of open files racing every writer of the records the live cache
// keeps (fs/core/live_cache.h), through the core, under ThreadSanitizer in CI.
//
// Each 4 KiB block of the file holds one stamp, (version << 16 | block),
// repeated. Writers rewrite random blocks with a higher version, in place
// (the writeback path, shared inode lock) and through the full path; a
// snapshot taken now and then makes the next write of every block go to a
// new block (a new chunk map), and old snapshots are deleted (reclaim frees
// the blocks a stale map would point at). After a write returns, its
// version is published. A reader notes the published version of a block,
// reads the block, and checks that every stamp in it names the right block
// and is at least that version: a stale cached map or size shows up as an
// old version or another block's bytes. A block may mix two versions only
// while a write of it was in flight: in-place writeback writes hold the
// inode shared, as reads do (the kernel never READs a page it is writing
// back; ordinary writes hold the inode exclusively).
//
// The seed is random unless PSMFS_SEED is set (printed at the start).
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <deque>
#include <optional>
#include <random>
#include <thread>
#include <vector>

#include "tests/common/core_test_util.h"

using namespace psm;
using psm_test::CoreVolume;

namespace {

constexpr uint64_t kBlock = 4096;
constexpr uint64_t kBlocks = 96;  // six 64 KiB chunks

std::string Stamped(uint64_t version, uint64_t block) {
  std::string s(kBlock, '\0');
  const uint64_t stamp = version << 16 | block;
  for (size_t i = 0; i < kBlock; i += 8) std::memcpy(&s[i], &stamp, 8);
  return s;
}

}  // namespace

TEST_CASE("live cache race: readers of open files always see the newest written block") {
  const uint64_t seed = psm_test::TestSeed("live_cache_race_test");
  CoreVolume v(64ull << 20, 64 * 1024);
  std::string init;
  for (uint64_t b = 0; b < kBlocks; ++b) init += Stamped(1, b);
  NodeId f = v.Put(kRootIno, "f", init);

  std::vector<std::atomic<uint64_t>> published(kBlocks), started(kBlocks);
  for (auto& p : published) p.store(1);
  for (auto& p : started) p.store(1);
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> reads{0}, writes{0}, snaps{0};
  std::atomic<int> failures{0};

  // Writers own disjoint blocks (w, w+2, ...) so published versions only grow.
  auto writer = [&](int w) {
    auto fh = v.fs->OpenFile(f, O_RDWR);
    REQUIRE(fh.ok());
    std::mt19937_64 rng(psm_test::SeedOf(seed, 100 + w));
    std::vector<uint64_t> version(kBlocks, 1);
    while (!stop.load()) {
      const uint64_t b = (rng() % (kBlocks / 2)) * 2 + w;
      const std::string d = Stamped(++version[b], b);
      const bool kernel_times = rng() % 2;  // the in-place path when it can
      started[b].store(version[b]);
      auto r = v.fs->Write(*fh, b * kBlock, d.data(), d.size(), kernel_times);
      if (!r.ok() || *r != kBlock) {
        failures++;
        MESSAGE("write: " << r.status().ToString());
        break;
      }
      published[b].store(version[b]);
      writes++;
    }
    (void)v.fs->Release(*fh);
  };
  // Readers: one keeps a handle for the whole run, one opens per read (the
  // cache entry comes and goes with the last handle).
  auto reader = [&](int id) {
    std::mt19937_64 rng(psm_test::SeedOf(seed, 200 + id));
    std::optional<uint64_t> held;
    if (id == 0) {
      auto fh = v.fs->OpenFile(f, O_RDONLY);
      REQUIRE(fh.ok());
      held = *fh;
    }
    std::string buf(kBlock, '\0');
    while (!stop.load() && failures.load() == 0) {
      uint64_t fh = 0;
      if (held) {
        fh = *held;
      } else {
        auto o = v.fs->OpenFile(f, O_RDONLY);
        if (!o.ok()) {
          failures++;
          MESSAGE("open: " << o.status().ToString());
          break;
        }
        fh = *o;
      }
      for (int i = 0; i < 20; ++i) {
        const uint64_t b = rng() % kBlocks;
        const uint64_t floor = published[b].load();
        auto r = v.fs->Read(fh, b * kBlock, kBlock, buf.data());
        if (!r.ok() || *r != kBlock) {
          failures++;
          MESSAGE("read: " << r.status().ToString());
          break;
        }
        const uint64_t ceiling = started[b].load();
        uint64_t lo = ~uint64_t{0}, hi = 0;
        bool right_block = true;
        for (size_t k = 0; k < kBlock; k += 8) {
          uint64_t stamp;
          std::memcpy(&stamp, &buf[k], 8);
          right_block = right_block && (stamp & 0xffff) == b;
          lo = std::min(lo, stamp >> 16);
          hi = std::max(hi, stamp >> 16);
        }
        // Mixed versions only from a write that overlapped this read.
        const bool torn_ok = lo == hi || ceiling > floor;
        if (!right_block || lo < floor || hi > ceiling || !torn_ok) {
          failures++;
          MESSAGE("block " << b << ": versions " << lo << ".." << hi
                           << std::string(right_block ? "" : " (another block's bytes)")
                           << ", published " << floor << ", started " << ceiling);
          break;
        }
        reads++;
      }
      if (!held) (void)v.fs->Release(fh);
    }
    if (held) (void)v.fs->Release(*held);
  };
  // Snapshots: each one turns the next write of every block into a
  // redirect-on-write; all but the newest two are deleted again.
  auto snapper = [&] {
    std::deque<std::string> names;
    int n = 0;
    while (!stop.load()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(15));
      const std::string name = "s" + std::to_string(n++);
      if (!v.fs->CreateSnapshot(name).ok()) {
        failures++;
        break;
      }
      names.push_back(name);
      snaps++;
      if (names.size() > 2) {
        if (!v.fs->DeleteSnapshot(names.front()).ok()) {
          failures++;
          break;
        }
        names.pop_front();
      }
    }
  };

  std::vector<std::thread> ts;
  for (int w = 0; w < 2; ++w) ts.emplace_back(writer, w);
  for (int r = 0; r < 3; ++r) ts.emplace_back(reader, r);
  ts.emplace_back(snapper);
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(3 * psm_test::StressScale());
  while (std::chrono::steady_clock::now() < end && failures.load() == 0) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  stop = true;
  for (auto& t : ts) t.join();
  MESSAGE("reads " << reads.load() << ", writes " << writes.load() << ", snapshots "
                   << snaps.load() << ", cache hits " << v.fs->Stats().cache_hits);
  CHECK(failures.load() == 0);
  CHECK(reads.load() > 1000);
  CHECK(writes.load() > 100);
  CHECK(snaps.load() > 5);
  CHECK(v.fs->Stats().cache_hits > 1000);  // the readers really used the cache
  CHECK(v.fs->Stats().cached_chunk_maps == 0);  // every handle closed
  CHECK(v.Fsck() == 0);
}
