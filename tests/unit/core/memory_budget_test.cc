// The daemon's memory budget (MountOptions::memory_bytes, psmfs -o memory=):
// RocksDB's one cache and the live cache's chunk maps stay within their
// shares whatever the volume holds. The resident set is read from
// /proc/self/statm by the test itself; the scale run that proves the RSS
// bound at millions of files is a benchmark (docs/performance.md).
#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <map>
#include <set>
#include <vector>
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

// The cap on kernel references (MountOptions::max_kernel_refs): the core
// names, for the FUSE adapter to invalidate, each live entry whose inode
// the kernel references, of each directory the kernel references, and of
// the root. Here the test plays the kernel: it keeps its own model of the
// dentries it holds, checks every name it is given against it, and drops
// what a kernel would (the entry; for a directory, every entry below it),
// FORGETting the inodes. Directories hold more entries than one step lists
// (1,024), forgotten files and unlinked ones (ghosts the kernel still
// holds) are not named, and repeated small calls cover everything.
TEST_CASE("memory budget: the kernel-reference cap names each held entry once") {
  psm_test::CoreVolume v;
  (void)v.fs->Close();
  v.fs.reset();
  v.count_lookups = true;
  v.Open();
  struct Held {
    NodeId node;
    uint64_t refs;
    bool dir;
  };
  std::map<std::pair<NodeId, std::string>, Held> held;  // the kernel's dentries
  size_t orphans = 0;
  std::vector<NodeId> dirs;
  auto mkdir = [&](NodeId parent, const std::string& name) {
    auto d = v.fs->MkDir(parent, name, 0755, v.cred);
    REQUIRE_MESSAGE(d.ok(), d.status().ToString());
    held[{parent, name}] = Held{d->node, 1, true};
    dirs.push_back(d->node);
    return d->node;
  };
  const NodeId d0 = mkdir(kRootIno, "d0");
  mkdir(kRootIno, "d1");
  mkdir(kRootIno, "d2");
  mkdir(d0, "sub");
  for (NodeId d : std::vector<NodeId>(dirs)) {
    for (int i = 0; i < 1500; ++i) {
      const std::string name = "f" + std::to_string(i);
      auto c = v.fs->Create(d, name, 0644, O_RDWR, v.cred);
      REQUIRE_MESSAGE(c.ok(), c.status().ToString());
      REQUIRE(v.fs->Release(c->second).ok());
      const NodeId n = c->first.node;
      if (i % 5 == 0) {
        v.fs->Forget(n, 1);  // the kernel let it go: not named
      } else if (i % 7 == 0) {
        REQUIRE(v.fs->Unlink(d, name).ok());  // a ghost: no name
        ++orphans;
      } else {
        uint64_t refs = 1;
        if (i % 3 == 0) {
          REQUIRE(v.fs->Lookup(d, name).ok());
          refs = 2;
        }
        held[{d, name}] = Held{n, refs, false};
      }
    }
  }
  REQUIRE(v.fs->KernelRefs() == held.size() + orphans);

  std::set<std::pair<NodeId, std::string>> named;
  for (int call = 0; !held.empty(); ++call) {
    REQUIRE_MESSAGE(call < 200, held.size() << " entries never named");
    std::vector<std::pair<NodeId, std::string>> got;
    const size_t n = v.fs->ShedKernelRefs(300, [&](NodeId parent, std::string_view name) {
      got.emplace_back(parent, std::string(name));
    });
    REQUIRE(n == got.size());
    CHECK(n < 300 + 1024);  // stops after the step that reached `want`
    for (const auto& key : got) {
      REQUIRE_MESSAGE(named.insert(key).second,
                      key.second << " in " << key.first << " named twice, call " << call);
      auto it = held.find(key);
      REQUIRE_MESSAGE(it != held.end(), key.second << " in " << key.first << " is not held");
      // The kernel drops the dentry, and a directory's whole subtree.
      std::vector<std::pair<NodeId, std::string>> drop{key};
      while (!drop.empty()) {
        auto h = held.find(drop.back());
        drop.pop_back();
        if (h == held.end()) continue;
        if (h->second.dir) {
          for (const auto& [k, x] : held) {
            if (k.first == h->second.node) drop.push_back(k);
          }
        }
        v.fs->Forget(h->second.node, h->second.refs);
        held.erase(h);
      }
    }
  }
  CHECK(v.fs->KernelRefs() == orphans);
  // Nothing is left to name: the ghosts have no name.
  size_t more = v.fs->ShedKernelRefs(1000, [](NodeId, std::string_view) {});
  more += v.fs->ShedKernelRefs(1000, [](NodeId, std::string_view) {});
  CHECK(more == 0);
  const VolumeStats st = v.fs->Stats();
  CHECK(st.kernel_refs_shed == named.size());
  CHECK(st.kernel_refs == orphans);
}
