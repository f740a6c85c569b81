// Tests for fs/space/scanner: the free index it builds from a real `alloc` column
// family equals the gaps computed independently; restart, stop, progress,
// records that straddle the cursor, errors.
#include "fs/space/scanner.h"

#include <doctest/doctest.h>
#include <stdlib.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <random>
#include <thread>

#include "meta/sync_point.h"

namespace psm {
namespace {

using namespace std::chrono_literals;

std::string Str(const std::vector<Range>& v) {
  std::string s;
  for (const Range& r : v) {
    if (!s.empty()) s += ' ';
    s += "[" + std::to_string(r.start) + "," + std::to_string(r.end()) + ")";
  }
  return s;
}

struct Fixture {
  std::string dir;
  std::unique_ptr<Store> store;
  Fixture() {
    char tmpl[] = "/tmp/psm_scan_XXXXXX";
    REQUIRE(mkdtemp(tmpl) != nullptr);
    dir = tmpl;
    StoreOptions o;
    o.create_if_missing = true;
    o.write_buffer_bytes = 4 << 20;
    auto r = Store::Open(dir + "/meta", o);
    REQUIRE_MESSAGE(r.ok(), r.status().ToString());
    store = std::move(r).value();
  }
  ~Fixture() {
    SyncPoint::Disable();
    SyncPoint::ClearAll();
    store.reset();
    std::filesystem::remove_all(dir);
  }
  void Put(BlockNo s, uint64_t len, Epoch death = 0) {
    REQUIRE(store->Put(Cf::kAlloc, AllocKey(s), EncodeAlloc(AllocRec{len, 1, death})).ok());
  }
  void Del(BlockNo s) {
    rocksdb::WriteBatch b;
    REQUIRE(b.Delete(store->handle(Cf::kAlloc), AllocKey(s)).ok());
    REQUIRE(store->Write(&b).ok());
  }
};

// Random records over [first, end): runs of used blocks cut into several
// adjacent records (as splits leave them), some dead (death != 0), gaps of
// random length. Returns the number of records; fills `used`.
uint64_t MakeRecords(Fixture* f, BlockNo first, BlockNo end, uint32_t seed,
                     std::vector<bool>* used) {
  std::mt19937_64 rng(seed);
  used->assign(end, false);
  rocksdb::WriteBatch b;
  uint64_t n = 0;
  BlockNo p = first + rng() % 5;
  while (p < end) {
    uint64_t run = 1 + rng() % 40;
    BlockNo run_end = std::min(end, p + run);
    while (p < run_end) {  // split the run into adjacent records
      uint64_t len = std::min<uint64_t>(run_end - p, 1 + rng() % 12);
      Epoch death = rng() % 4 == 0 ? 7 : 0;
      REQUIRE(b.Put(f->store->handle(Cf::kAlloc), AllocKey(p), EncodeAlloc(AllocRec{len, 1, death}))
                  .ok());
      for (BlockNo x = p; x < p + len; ++x) (*used)[x] = true;
      p += len;
      ++n;
    }
    p += rng() % 3 == 0 ? 0 : 1 + rng() % 30;  // sometimes no gap at all
  }
  REQUIRE(f->store->Write(&b).ok());
  return n;
}

std::vector<Range> GapsOf(const std::vector<bool>& used, BlockNo first, BlockNo end) {
  std::vector<Range> out;
  for (BlockNo b = first; b < end;) {
    if (used[b]) {
      ++b;
      continue;
    }
    BlockNo s = b;
    while (b < end && !used[b]) ++b;
    out.push_back(Range{s, b - s});
  }
  return out;
}

uint64_t Blocks(const std::vector<Range>& v) {
  uint64_t n = 0;
  for (const Range& r : v) n += r.len;
  return n;
}

TEST_CASE("scanner: the index equals the gaps of alloc, for any step size") {
  Fixture f;
  const BlockNo first = 1, end = 20000;
  std::vector<bool> used;
  const uint64_t records = MakeRecords(&f, first, end, 11, &used);
  const auto gaps = GapsOf(used, first, end);
  REQUIRE(gaps.size() > 100);
  for (uint32_t per_step : {1u, 7u, 4096u}) {
    Allocator a(first, end);
    Scanner s(f.store.get(), &a, ScannerOptions{per_step});
    s.Start("mount");
    REQUIRE(s.WaitIdle(60));
    CHECK(Str(a.FreeRanges()) == Str(gaps));
    auto as = a.Stats();
    CHECK(as.scan_complete);
    CHECK(as.cursor == end);
    auto st = s.GetStatus();
    CHECK(!st.running);
    CHECK(st.reason == "mount");
    CHECK(st.scans_completed == 1);
    CHECK(st.ranges_scanned == records);
    CHECK(st.free_blocks_found == Blocks(gaps));
    CHECK(st.percent == 100.0);
    CHECK(st.finished_ns >= st.started_ns);
    CHECK(st.last_error.empty());
  }
}

TEST_CASE("scanner: records past the end of the image and an empty alloc") {
  Fixture f;
  {
    Allocator a(1, 100);
    Scanner s(f.store.get(), &a);
    s.Start("mount");
    REQUIRE(s.WaitIdle(10));
    CHECK(Str(a.FreeRanges()) == "[1,100)");
  }
  f.Put(90, 20);  // runs past the end
  f.Put(150, 5);  // wholly past the end (a grown-then-shrunk image)
  Allocator a(1, 100);
  Scanner s(f.store.get(), &a, ScannerOptions{1});
  s.Start("mount");
  REQUIRE(s.WaitIdle(10));
  CHECK(Str(a.FreeRanges()) == "[1,90)");
}

TEST_CASE("scanner: a record that starts below the cursor and reaches past it") {
  // Reading under the lock (steps end at record starts: the cursor is at
  // 100 after the first) and reading ahead (a piece read before the rewrite
  // still says [100,110) is used).
  int threads = 0;
  SUBCASE("reading under the lock") { threads = 0; }
  SUBCASE("reading ahead") { threads = 2; }
  INFO("prefetch threads " << threads);
  Fixture f;
  f.Put(90, 10);
  f.Put(100, 10);
  Allocator a(1, 200);
  ScannerOptions so{1};
  so.prefetch_threads = threads;
  Scanner s(f.store.get(), &a, so);
  std::atomic<int> steps{0};
  std::atomic<BlockNo> cursor_seen{0};
  SyncPoint::SetCallback("Scanner::AfterStep", [&] {
    if (++steps != 1) return;
    // After the first step the cursor sits at 100, the start of the next
    // record. Rewrite [90,100) + [100,110) as one record [90,110), as a
    // coalescing update would: it now starts below the cursor.
    cursor_seen = a.Stats().cursor;
    rocksdb::WriteBatch b;
    REQUIRE(b.Delete(f.store->handle(Cf::kAlloc), AllocKey(100)).ok());
    REQUIRE(b.Put(f.store->handle(Cf::kAlloc), AllocKey(90), EncodeAlloc(AllocRec{20, 1, 0})).ok());
    REQUIRE(f.store->Write(&b).ok());
  });
  SyncPoint::Enable();
  s.Start("mount");
  REQUIRE(s.WaitIdle(10));
  if (threads == 0) CHECK(cursor_seen == 100);
  // [100,110) is covered by the record at 90; publishing it would be a
  // double allocation waiting to happen.
  CHECK(Str(a.FreeRanges()) == "[1,90) [110,200)");
}

TEST_CASE("scanner: restart mid-scan starts over and still ends exact") {
  Fixture f;
  const BlockNo first = 1, end = 30000;
  std::vector<bool> used;
  const uint64_t records = MakeRecords(&f, first, end, 5, &used);
  Allocator a(first, end);
  Scanner s(f.store.get(), &a, ScannerOptions{50});
  std::atomic<int> steps{0};
  std::atomic<bool> went_back{false};
  std::atomic<BlockNo> last{0};
  SyncPoint::SetCallback("Scanner::AfterStep", [&] {
    BlockNo c = a.Stats().cursor;
    if (c < last) went_back = true;
    last = c;
    if (++steps == 20) s.Start("restore");  // from the scanner thread itself
    std::this_thread::sleep_for(300us);
  });
  SyncPoint::Enable();
  s.Start("mount");
  std::thread other([&] {
    while (steps < 40) std::this_thread::sleep_for(50us);
    s.Start("failover");  // and from another thread
  });
  other.join();
  REQUIRE(s.WaitIdle(60));
  CHECK(went_back);
  CHECK(Str(a.FreeRanges()) == Str(GapsOf(used, first, end)));
  auto st = s.GetStatus();
  CHECK(st.reason == "failover");
  CHECK(st.scans_completed == 1);
  CHECK(st.ranges_scanned == records);  // counted for the last scan only
  CHECK(a.Stats().scan_complete);
}

// Stop must end the scan where it is, not wait for it to finish: the
// scan is still incomplete afterwards (each step sleeps 1 ms, so the whole
// scan would take seconds). How long Stop takes is not measured here.
TEST_CASE("scanner: Stop ends the scan mid-way and keeps what was found") {
  Fixture f;
  const BlockNo first = 1, end = 200000;
  std::vector<bool> used;
  MakeRecords(&f, first, end, 3, &used);
  Allocator a(first, end);
  Scanner s(f.store.get(), &a, ScannerOptions{16});
  SyncPoint::SetCallback("Scanner::AfterStep", [] { std::this_thread::sleep_for(1ms); });
  SyncPoint::Enable();
  s.Start("mount");
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (a.Stats().cursor < 1000) {
    REQUIRE_MESSAGE(std::chrono::steady_clock::now() < deadline,
                    "the scan did not pass block 1000 within 60 s");
    std::this_thread::sleep_for(1ms);
  }
  s.Stop();
  auto as = a.Stats();
  CHECK(!as.scan_complete);
  CHECK(as.cursor < end);
  CHECK(!s.GetStatus().running);
  CHECK(s.WaitIdle(0.01));
  // What was published is exactly the gaps below the cursor.
  CHECK(Str(a.FreeRanges()) == Str(GapsOf(used, first, as.cursor)));
  // Start again after Stop: a new thread finishes the job.
  SyncPoint::Disable();
  s.Start("request");
  REQUIRE(s.WaitIdle(60));
  CHECK(Str(a.FreeRanges()) == Str(GapsOf(used, first, end)));
}

TEST_CASE("scanner: progress is reported while it runs") {
  Fixture f;
  const BlockNo first = 1, end = 50000;
  std::vector<bool> used;
  MakeRecords(&f, first, end, 8, &used);
  Allocator a(first, end);
  Scanner s(f.store.get(), &a, ScannerOptions{64});
  SyncPoint::SetCallback("Scanner::AfterStep", [] { std::this_thread::sleep_for(200us); });
  SyncPoint::Enable();
  s.Start("mount");
  double last_pct = -1;
  bool saw_mid = false, monotonic = true;
  while (true) {
    ScanStatus st = s.GetStatus();
    if (!st.running) break;
    if (st.percent < last_pct) monotonic = false;
    last_pct = st.percent;
    if (st.percent > 0 && st.percent < 100 && st.ranges_per_sec > 0 && st.eta_sec > 0) {
      saw_mid = true;
    }
    // Idle means finished: it may have finished since GetStatus, but it may
    // never claim idleness while still running.
    if (s.WaitIdle(0)) CHECK(!s.GetStatus().running);
    std::this_thread::sleep_for(2ms);
  }
  CHECK(saw_mid);
  CHECK(monotonic);
  ScanStatus st = s.GetStatus();
  CHECK(st.percent == 100.0);
  CHECK(st.eta_sec == 0);
  CHECK(st.last_duration_sec > 0);
}

TEST_CASE("scanner: allocation during the scan, from below the cursor only") {
  Fixture f;
  const BlockNo first = 1, end = 40000;
  std::vector<bool> used;
  MakeRecords(&f, first, end, 21, &used);
  Allocator a(first, end);
  Scanner s(f.store.get(), &a, ScannerOptions{32});
  SyncPoint::SetCallback("Scanner::AfterStep", [] { std::this_thread::sleep_for(100us); });
  SyncPoint::Enable();
  s.Start("mount");
  int allocated_before_end = 0;
  for (int i = 0; i < 200; ++i) {
    auto r = a.Allocate(1 + i % 5, static_cast<BlockNo>(i) * 191);
    REQUIRE(r.ok());
    const auto as = a.Stats();
    CHECK(r->end() <= as.cursor);
    if (!as.scan_complete) ++allocated_before_end;
    for (BlockNo b = r->start; b < r->end(); ++b) {
      CHECK(!used[b]);  // never a used block
      used[b] = true;
    }
    f.Put(r->start, r->len);  // commit the record, then tell the allocator
    a.Committed(*r);
  }
  CHECK(allocated_before_end > 0);
  REQUIRE(s.WaitIdle(60));
  CHECK(Str(a.FreeRanges()) == Str(GapsOf(used, first, end)));
  // A fresh scan of the same store agrees.
  Allocator b(first, end);
  Scanner s2(f.store.get(), &b);
  s2.Start("request");
  REQUIRE(s2.WaitIdle(60));
  CHECK(Str(b.FreeRanges()) == Str(a.FreeRanges()));
}

TEST_CASE("scanner: a corrupt record is reported and retried, not skipped") {
  Fixture f;
  f.Put(10, 10);
  REQUIRE(f.store->Put(Cf::kAlloc, AllocKey(50), "garbage").ok());
  Allocator a(1, 100);
  Scanner s(f.store.get(), &a, ScannerOptions{1});
  s.Start("mount");
  CHECK(!s.WaitIdle(0.3));
  auto st = s.GetStatus();
  CHECK(st.running);
  CHECK(st.last_error.find("block 50") != std::string::npos);
  CHECK(!a.Stats().scan_complete);
  CHECK(a.Stats().cursor <= 50);
  f.Put(50, 5);  // repaired
  REQUIRE(s.WaitIdle(10));
  CHECK(Str(a.FreeRanges()) == "[1,10) [20,50) [55,100)");
  CHECK(s.GetStatus().last_error.empty());
}

}  // namespace
}  // namespace psm
