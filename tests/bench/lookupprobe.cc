// psmlookupprobe: what a LOOKUP of a random file costs RocksDB, counted
// (issue #16 item 3; docs/performance.md). Opens a volume's metadata store
// read-only, as psmfs opens it (meta/store.cc: the same table options,
// filters and cache budget), and reads the records the kernel's stat of
// D/d<i>/f<j> makes psmfs read: for each directory not looked up before,
// its entry in the root and its inode; then the file's entry and inode
// (the newest versions: a live lookup). With `miss`, a name that does not
// exist in a random directory instead (an entry read that finds nothing).
//
//   psmlookupprobe VOLUME DIRS PERDIR K [stat|miss]
//
// The samples are those of psmbench scalestat / scalemiss (the same
// generator and seed). Prints RocksDB's perf-context counts per lookup
// (block reads by kind, cache hits, Bloom filter answers), the read
// syscalls and bytes of the process (/proc/self/io: includes any
// read-ahead), the time per stat, and each versioned column family's
// files per level and table properties (index and filter sizes). Drop the
// page cache first for a cold figure. Environment:
//   PROBE_PASSES=N    read the samples N-1 times before the counted pass
//                     (their blocks then in the block cache if they fit)
//   PROBE_NO_TIME=1   count without timing each step (perf-context times
//                     call clock_gettime several times per read)
//   PROBE_COMPACT=1   open read-write and compact `dentries` and `inodes`
//                     into one level first, rewriting their tables with
//                     this build's table options (use a copy of a volume)
#include <rocksdb/db.h>
#include <rocksdb/iostats_context.h>
#include <rocksdb/perf_context.h>
#include <rocksdb/perf_level.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <random>
#include <set>
#include <string>
#include <unordered_set>
#include <vector>

#include "meta/keys.h"
#include "meta/store.h"

using namespace psm;

namespace {

// The same as psmbench's Sample: K distinct values below N (all if K >= N),
// shuffled.
std::vector<uint64_t> Sample(uint64_t n, uint64_t k, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<uint64_t> out;
  if (k >= n) {
    for (uint64_t i = 0; i < n; i++) out.push_back(i);
    std::shuffle(out.begin(), out.end(), rng);
    return out;
  }
  std::unordered_set<uint64_t> seen;
  while (out.size() < k) {
    uint64_t x = rng() % n;
    if (seen.insert(x).second) out.push_back(x);
  }
  return out;
}

struct Io {
  uint64_t rchar = 0, syscr = 0, read_bytes = 0;
};
Io ReadIo() {
  Io io;
  std::ifstream f("/proc/self/io");
  std::string k;
  uint64_t v;
  while (f >> k >> v) {
    if (k == "rchar:") io.rchar = v;
    if (k == "syscr:") io.syscr = v;
    if (k == "read_bytes:") io.read_bytes = v;
  }
  return io;
}

[[noreturn]] void Die(const std::string& what, const Status& s) {
  fprintf(stderr, "psmlookupprobe: %s: %s\n", what.c_str(), s.ToString().c_str());
  exit(1);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 5 || argc > 6) {
    fprintf(stderr, "usage: psmlookupprobe VOLUME DIRS PERDIR K [stat|miss]\n");
    return 2;
  }
  const std::string vol = argv[1];
  const uint64_t dirs = strtoull(argv[2], nullptr, 10);
  const uint64_t perdir = strtoull(argv[3], nullptr, 10);
  const uint64_t k = strtoull(argv[4], nullptr, 10);
  const bool miss = argc > 5 && std::string(argv[5]) == "miss";
  StoreOptions so;
  const bool compact = getenv("PROBE_COMPACT") != nullptr;
  so.read_only = !compact;
  auto opened = Store::Open(vol + "/meta", so);
  if (!opened.ok()) Die("open " + vol, opened.status());
  Store* store = opened->get();
  if (compact) {
    rocksdb::CompactRangeOptions co;
    co.bottommost_level_compaction = rocksdb::BottommostLevelCompaction::kForce;
    for (Cf cf : {Cf::kDentries, Cf::kInodes}) {
      rocksdb::Status rs = store->db()->CompactRange(co, store->handle(cf), nullptr, nullptr);
      if (!rs.ok()) Die("compact", Status::FromRocks(rs));
    }
  }

  std::vector<std::pair<uint64_t, std::string>> samples;  // directory, name
  if (miss) {
    std::mt19937_64 rng(2);
    for (uint64_t i = 0; i < k; i++)
      samples.emplace_back(rng() % dirs, "missing" + std::to_string(i));
  } else {
    for (uint64_t x : Sample(dirs * perdir, k, 1)) {
      samples.emplace_back(x / perdir, "f" + std::to_string(x % perdir));
    }
  }

  // A first read, so that the store's own per-thread setting (no perf
  // counts) is made before this thread's is.
  std::string payload;
  (void)GetAt(store, Cf::kInodes, InodePrefix(kRootIno), ~Epoch{0}, &payload);
  rocksdb::SetPerfLevel(getenv("PROBE_NO_TIME") ? rocksdb::PerfLevel::kEnableCount
                                                : rocksdb::PerfLevel::kEnableTimeExceptForMutex);
  rocksdb::get_perf_context()->EnablePerLevelPerfContext();
  uint64_t reads[2] = {0, 0};  // record reads: entries, inodes
  std::set<uint64_t> dirs_seen;
  std::vector<InodeId> dir_ino(dirs, 0);
  auto pass = [&] {
    reads[0] = reads[1] = 0;
    dirs_seen.clear();
    for (const auto& [d, name] : samples) {
      if (dirs_seen.insert(d).second) {
        Dentry de;
        reads[0]++;
        Status s = GetAt(store, Cf::kDentries, DentryPrefix(kRootIno, "d" + std::to_string(d)),
                         ~Epoch{0}, &payload);
        if (!s.ok() || !DecodeDentry(payload, &de).ok()) Die("entry d" + std::to_string(d), s);
        dir_ino[d] = de.ino;
        reads[1]++;
        s = GetAt(store, Cf::kInodes, InodePrefix(de.ino), ~Epoch{0}, &payload);
        if (!s.ok()) Die("inode of d" + std::to_string(d), s);
      }
      Dentry fe;
      reads[0]++;
      Status s = GetAt(store, Cf::kDentries, DentryPrefix(dir_ino[d], name), ~Epoch{0}, &payload);
      if (miss) {
        if (!s.Is(Code::kNotFound)) Die("a missing name was found", s);
        continue;
      }
      if (!s.ok() || !DecodeDentry(payload, &fe).ok()) Die("entry " + name, s);
      reads[1]++;
      s = GetAt(store, Cf::kInodes, InodePrefix(fe.ino), ~Epoch{0}, &payload);
      if (!s.ok()) Die("inode of " + name, s);
    }
  };
  // PROBE_PASSES=N: the samples N-1 times before the counted pass.
  for (int i = 1; getenv("PROBE_PASSES") && i < atoi(getenv("PROBE_PASSES")); i++) pass();
  rocksdb::get_perf_context()->Reset();
  rocksdb::get_iostats_context()->Reset();
  const Io io0 = ReadIo();
  auto t0 = std::chrono::steady_clock::now();
  pass();
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const Io io1 = ReadIo();
  const auto* pc = rocksdb::get_perf_context();
  const double n = static_cast<double>(samples.size());
  const uint64_t data_reads =
      pc->block_read_count - pc->index_block_read_count - pc->filter_block_read_count;
  printf("%s: %zu lookups (%llu entry and %llu inode record reads), %.1f us each, %.0f/s\n",
         miss ? "miss" : "stat", samples.size(), (unsigned long long)reads[0],
         (unsigned long long)reads[1], secs * 1e6 / n, n / secs);
  printf("per lookup: block reads %.2f (index %.2f, filter %.2f, data %.2f), %.0f bytes\n",
         pc->block_read_count / n, pc->index_block_read_count / n, pc->filter_block_read_count / n,
         data_reads / n, pc->block_read_byte / n);
  printf("per lookup: block cache hits %.2f (index %.2f, filter %.2f)\n",
         pc->block_cache_hit_count / n, pc->block_cache_index_hit_count / n,
         pc->block_cache_filter_hit_count / n);
  printf("per lookup: sst prefix filter: negative %.2f, positive %.2f; memtable %.2f/%.2f\n",
         pc->bloom_sst_miss_count / n, pc->bloom_sst_hit_count / n,
         pc->bloom_memtable_miss_count / n, pc->bloom_memtable_hit_count / n);
  printf("per lookup: read syscalls %.2f, %.0f bytes read (%.0f from the disk)\n",
         (io1.syscr - io0.syscr) / n, (io1.rchar - io0.rchar) / n,
         (io1.read_bytes - io0.read_bytes) / n);
  printf(
      "per lookup us: block read %.1f, index %.1f, filter %.1f, new table iterators %.1f, "
      "seek %.1f, find table %.1f\n",
      pc->block_read_time / n / 1e3, pc->read_index_block_nanos / n / 1e3,
      pc->read_filter_block_nanos / n / 1e3, pc->new_table_iterator_nanos / n / 1e3,
      pc->iter_seek_cpu_nanos / n / 1e3, pc->find_table_nanos / n / 1e3);
  if (pc->level_to_perf_context) {
    for (const auto& [level, lp] : *pc->level_to_perf_context) {
      printf("  L%u: filter useful %.2f, positive %.2f (true %.2f), cache hits %.2f, misses %.2f\n",
             level, lp.bloom_filter_useful / n, lp.bloom_filter_full_positive / n,
             lp.bloom_filter_full_true_positive / n, lp.block_cache_hit_count / n,
             lp.block_cache_miss_count / n);
    }
  }
  for (Cf cf : {Cf::kDentries, Cf::kInodes}) {
    std::string v;
    store->db()->GetProperty(store->handle(cf), "rocksdb.levelstats", &v);
    printf("%s:\n%s", CfName(cf), v.c_str());
    store->db()->GetProperty(store->handle(cf), "rocksdb.aggregated-table-properties", &v);
    printf("%s\n", v.c_str());
  }
  printf("block cache: %zu of %zu bytes\n", store->cache_usage(), store->cache_capacity());
  return 0;
}
