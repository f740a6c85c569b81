// The daemon's memory budget (MountOptions::memory_bytes, psmfs -o memory=):
// RocksDB's one cache and the live cache's chunk maps stay within their
// shares whatever the volume holds. The resident set is read from
// /proc/self/statm by the test itself; the scale run that proves the RSS
// bound at millions of files is a benchmark (docs/performance.md).
#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <string>

#include "fs/core/filesystem.h"
#include "fs/core/live_cache.h"
#include "tests/common/core_test_util.h"

using namespace psm;


TEST_CASE("memory budget: the metadata cache holds memtables and blocks within its share") {
  char t[] = "/tmp/psm-mem-XXXXXX";
  const std::string dir = mkdtemp(t);
  FormatOptions fo;
  fo.size_bytes = 256ull << 20;
  REQUIRE(Format(dir, fo).ok());
  MountOptions o;
  o.commit_interval_ms = 50;
  o.memory_bytes = 64ull << 20;
  auto r = FileSystem::Open(dir, o);
  REQUIRE_MESSAGE(r.ok(), r.status().ToString());
  std::unique_ptr<FileSystem> fs = std::move(r).value();
  {
    const VolumeStats st = fs->Stats();
    CHECK(st.memory_budget_bytes == (64ull << 20));
    CHECK(st.metadata_cache_bytes == (32ull << 20));  // half, as documented
  }
  // 40,000 files with names long enough to fill several memtables' worth of
  // metadata over the run: memtables must be flushed, not kept.
  Credentials cred;
  uint64_t max_used = 0;
  for (int d = 0; d < 40; ++d) {
    auto dd = fs->MkDir(kRootIno, "dir" + std::to_string(d), 0755, cred);
    REQUIRE(dd.ok());
    for (int i = 0; i < 1000; ++i) {
      const std::string name = "a-rather-long-file-name-to-use-memory-" + std::to_string(i);
      auto c = fs->Create(dd->node, name, 0644, O_RDWR, cred);
      REQUIRE_MESSAGE(c.ok(), c.status().ToString());
      REQUIRE(fs->Release(c->second).ok());
    }
    const VolumeStats st = fs->Stats();
    max_used = std::max(max_used, st.metadata_cache_used_bytes);
    // Memtables are charged to the cache; it may run over by what one
    // memtable switch leaves behind, not by the volume.
    CHECK(st.metadata_cache_used_bytes <= st.metadata_cache_bytes + (16ull << 20));
  }
  MESSAGE("metadata cache used at most " << (max_used >> 20) << " MiB of 32");
  CHECK(max_used > 0);
  CHECK(fs->Stats().rss_bytes > 0);  // the daemon reports its RSS
  REQUIRE(fs->Close().ok());
  fs.reset();
  std::filesystem::remove_all(dir);
}

TEST_CASE("memory budget: the live cache stops caching chunk maps at its byte limit") {
  LiveCache c;
  const uint64_t limit = 20 * (LiveCache::kChunkOverhead + 4 * sizeof(Extent));
  c.SetByteLimit(limit);
  c.Enable(7);
  std::vector<Extent> ext(4);
  int cached = 0;
  for (uint64_t idx = 0; idx < 100; ++idx) {
    bool present = false;
    std::vector<Extent> got;
    uint64_t gen = 0;
    REQUIRE(c.GetChunk(7, idx, &present, &got, &gen) == LiveCache::Hit::kMiss);
    c.PutChunk(7, idx, gen, true, ext);
    if (c.GetChunk(7, idx, &present, &got, &gen) == LiveCache::Hit::kHit) ++cached;
    CHECK(c.bytes_cached() <= limit);
  }
  CHECK(cached == 20);  // exactly what fits: 20 maps of 4 extents
  c.Disable(7);  // the last close gives it all back
  CHECK(c.bytes_cached() == 0);
  CHECK(c.chunks_cached() == 0);
}
