// Tests for fs/space/allocator: the free-extent index, in-flight and quarantined
// blocks, the scan cursor, waiting and NoSpace, memory per range.
#include "fs/space/allocator.h"

#include <doctest/doctest.h>
#include <malloc.h>

#include <algorithm>
#include <atomic>
#include <chrono>
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

// The "alloc column family" of these tests: used ranges, sorted.
struct Records {
  std::vector<Range> used;
  void Erase(Range r) { used.erase(std::remove(used.begin(), used.end(), r), used.end()); }
  void Add(Range r) {
    used.push_back(r);
    std::sort(used.begin(), used.end(),
              [](const Range& a, const Range& b) { return a.start < b.start; });
  }
};

// One scan step of `blocks` blocks (records may straddle the step's end;
// the allocator clips them).
Status Step(Allocator* a, const Records& recs, uint64_t blocks) {
  return a->ScanStep([&](BlockNo cursor, std::vector<Range>* used, BlockNo* next) {
    *next = std::min(cursor + blocks, a->end());
    for (const Range& r : recs.used) {
      if (r.end() > cursor && r.start < *next) used->push_back(r);
    }
    return Status::Ok();
  });
}

void ScanTo(Allocator* a, const Records& recs, BlockNo target, uint64_t blocks = 7) {
  while (a->Stats().cursor < target) REQUIRE(Step(a, recs, blocks).ok());
}

void ScanAll(Allocator* a, const Records& recs, uint64_t blocks = 7) {
  ScanTo(a, recs, a->end(), blocks);
  a->MarkScanComplete();
}

// Gaps of the records in [first, end), computed block by block.
std::vector<Range> Gaps(BlockNo first, BlockNo end, const Records& recs,
                        const std::vector<Range>& also_used = {}) {
  std::vector<bool> used(end, false);
  for (const auto* v : {&recs.used, &also_used}) {
    for (const Range& r : *v) {
      for (BlockNo b = r.start; b < r.end() && b < end; ++b) used[b] = true;
    }
  }
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

TEST_CASE("allocator: a scan publishes exactly the gaps, merged across steps") {
  Records recs;
  recs.Add({5, 5});
  recs.Add({20, 10});
  recs.Add({30, 3});  // a split record right after its neighbour
  recs.Add({90, 10});
  for (uint64_t step : {1, 3, 7, 1000}) {
    Allocator a(1, 100);
    ScanAll(&a, recs, step);
    CHECK(a.FreeRanges() == std::vector<Range>{{1, 4}, {10, 10}, {33, 57}});
    auto st = a.Stats();
    CHECK(st.scan_complete);
    CHECK(st.cursor == 100);
    CHECK(st.free_blocks == 4 + 10 + 57);
    CHECK(st.free_ranges == 3);
  }
}

TEST_CASE("allocator: allocation by size and by locality") {
  Records recs;
  recs.Add({13, 7});   // free: [10,13)
  recs.Add({28, 12});  // free: [20,28)
  recs.Add({45, 5});   // free: [40,45)
  recs.Add({58, 42});  // free: [50,58)
  Allocator a(10, 100);
  ScanAll(&a, recs);
  REQUIRE(a.FreeRanges() == std::vector<Range>{{10, 3}, {20, 8}, {40, 5}, {50, 8}});
  // Size: the first range from the hint that holds the whole request.
  auto r = a.Allocate(5, 10);
  REQUIRE(r.ok());
  CHECK(*r == Range{20, 5});
  // Locality: from the hint on.
  r = a.Allocate(2, 41);
  REQUIRE(r.ok());
  CHECK(*r == Range{50, 2});
  r = a.Allocate(3, 30);
  REQUIRE(r.ok());
  CHECK(*r == Range{40, 3});
  // Wrapping: nothing at or after 90, so the first fit from the start.
  r = a.Allocate(3, 90);
  REQUIRE(r.ok());
  CHECK(*r == Range{10, 3});
  // Nothing holds 20: the longest range, partially.
  r = a.Allocate(20, 10);
  REQUIRE(r.ok());
  CHECK(*r == Range{52, 6});
  CHECK(a.Stats().inflight_blocks == 5 + 2 + 3 + 3 + 6);
  // A hint outside the image is treated as the start.
  r = a.Allocate(1, 5000);
  REQUIRE(r.ok());
  CHECK(*r == Range{25, 1});
  CHECK(a.Allocate(0, 0).status().Is(Code::kInvalid));
}

TEST_CASE("allocator: aborted ranges merge back with their neighbours") {
  Allocator a(0, 64);
  ScanAll(&a, Records{});
  std::vector<Range> got;
  for (int i = 0; i < 8; ++i) {
    auto r = a.Allocate(8, 0);
    REQUIRE(r.ok());
    got.push_back(*r);
  }
  CHECK(a.FreeRanges().empty());
  CHECK(a.Stats().inflight_blocks == 64);
  std::shuffle(got.begin(), got.end(), std::mt19937(3));
  for (const Range& r : got) a.Abort(r);
  CHECK(a.FreeRanges() == std::vector<Range>{{0, 64}});
  CHECK(a.Stats().inflight_blocks == 0);
  // Aborting what is not in flight gives nothing back (no double free).
  a.Abort(Range{0, 64});
  CHECK(a.Stats().free_blocks == 64);
  auto r = a.Allocate(64, 0);
  REQUIRE(r.ok());
  a.Committed(*r);
  a.Abort(*r);  // already committed: ignored
  CHECK(a.FreeRanges().empty());
}

TEST_CASE("allocator: partial commit and abort of one allocation") {
  Allocator a(0, 32);
  ScanAll(&a, Records{});
  auto r = a.Allocate(10, 0);
  REQUIRE(r.ok());
  REQUIRE(*r == Range{0, 10});
  a.Committed(Range{0, 4});
  a.Abort(Range{4, 6});
  CHECK(a.Stats().inflight_blocks == 0);
  CHECK(a.FreeRanges() == std::vector<Range>{{4, 28}});
}

TEST_CASE("allocator: a rescan never publishes in-flight blocks") {
  Records recs;
  recs.Add({0, 20});
  recs.Add({30, 30});
  Allocator a(0, 100);
  ScanAll(&a, recs);
  REQUIRE(Str(a.FreeRanges()) == "[20,30) [60,100)");
  auto r1 = a.Allocate(10, 0);
  auto r2 = a.Allocate(10, 0);
  REQUIRE(r1.ok());
  REQUIRE(r2.ok());
  REQUIRE(*r1 == Range{20, 10});
  REQUIRE(*r2 == Range{60, 10});
  // The volume is rescanned (restore, failover) while both are in flight and
  // neither record is committed yet.
  a.ResetForScan();
  CHECK(a.FreeRanges().empty());
  CHECK(!a.Stats().scan_complete);
  ScanTo(&a, recs, 65, 5);
  CHECK(a.FreeRanges().empty());  // [20,30) and [60,65) are in flight
  // r2 is aborted while the cursor is inside it: the part below the cursor
  // goes to the index, the rest is left for the scanner.
  a.Abort(*r2);
  CHECK(Str(a.FreeRanges()) == "[60,65)");
  // r1 commits its record.
  recs.Add(*r1);
  a.Committed(*r1);
  ScanAll(&a, recs, 5);
  CHECK(Str(a.FreeRanges()) == Str(Gaps(0, 100, recs)));
  CHECK(Str(a.FreeRanges()) == "[60,100)");
  CHECK(a.Stats().inflight_blocks == 0);
}

TEST_CASE("allocator: quarantined blocks are excluded until durable") {
  Records recs;
  recs.Add({10, 10});
  recs.Add({40, 10});
  Allocator a(0, 100);
  ScanAll(&a, recs);
  // Free [10,20) at sequence 7: quarantine first, then the record goes.
  a.Free(Range{10, 10}, 7);
  recs.Erase(Range{10, 10});
  CHECK(a.Stats().quarantined_blocks == 10);
  // Below the cursor: a rescan must not publish it either.
  a.ResetForScan();
  ScanAll(&a, recs);
  CHECK(a.FreeRanges() == std::vector<Range>{{0, 10}, {20, 20}, {50, 50}});
  a.ReleaseDurable(6);
  CHECK(a.Stats().quarantined_blocks == 10);
  CHECK(a.FreeRanges() == std::vector<Range>{{0, 10}, {20, 20}, {50, 50}});
  a.ReleaseDurable(7);
  CHECK(a.Stats().quarantined_blocks == 0);
  CHECK(a.FreeRanges() == std::vector<Range>{{0, 40}, {50, 50}});
}

TEST_CASE("allocator: a release straddling the cursor is split at it") {
  Records recs;
  recs.Add({40, 20});
  Allocator a(0, 100);
  ScanTo(&a, recs, 50, 10);
  REQUIRE(a.Stats().cursor == 50);
  CHECK(a.FreeRanges() == std::vector<Range>{{0, 40}});
  a.Free(Range{40, 20}, 1);
  recs.Erase(Range{40, 20});
  a.ReleaseDurable(1);
  // Below the cursor: in the index now. At or above: left to the scanner.
  CHECK(a.FreeRanges() == std::vector<Range>{{0, 50}});
  ScanAll(&a, recs, 10);
  CHECK(a.FreeRanges() == std::vector<Range>{{0, 100}});
  CHECK(a.Stats().free_blocks == 100);  // counted once
}

TEST_CASE("allocator: a quarantined range above the cursor is skipped by the scan") {
  Records recs;
  recs.Add({60, 10});
  Allocator a(0, 100);
  ScanTo(&a, recs, 30, 10);
  a.Free(Range{60, 10}, 3);
  recs.Erase(Range{60, 10});
  ScanAll(&a, recs, 10);  // passes [60,70) while it is quarantined
  CHECK(a.FreeRanges() == std::vector<Range>{{0, 60}, {70, 30}});
  a.ReleaseDurable(3);  // now below the cursor: straight into the index
  CHECK(a.FreeRanges() == std::vector<Range>{{0, 100}});
}

TEST_CASE("allocator: CancelFree forgets the quarantine, the blocks stay used") {
  Records recs;
  recs.Add({10, 10});
  Allocator a(0, 30);
  ScanAll(&a, recs);
  a.Free(Range{10, 10}, 1);
  a.CancelFree(Range{10, 10});  // the write that would have freed it failed
  CHECK(a.Stats().quarantined_blocks == 0);
  a.ReleaseDurable(100);
  CHECK(a.FreeRanges() == std::vector<Range>{{0, 10}, {20, 10}});
  // Partial cancel keeps the rest quarantined with its sequence.
  a.Free(Range{10, 10}, 2);
  a.CancelFree(Range{12, 3});
  CHECK(a.Stats().quarantined_blocks == 7);
  a.ReleaseDurable(2);
  CHECK(a.FreeRanges() == std::vector<Range>{{0, 12}, {15, 15}});
}

TEST_CASE("allocator: allocations come only from below the cursor") {
  Allocator a(0, 1000);
  Records recs;
  ScanTo(&a, recs, 100, 50);
  const BlockNo cursor = a.Stats().cursor;
  for (int i = 0; i < 20; ++i) {
    auto r = a.Allocate(3, 900);
    REQUIRE(r.ok());
    CHECK(r->end() <= cursor);
  }
}

TEST_CASE("allocator: waits for the scanner while nothing is free") {
  Records recs;
  recs.Add({0, 50});
  Allocator a(0, 100);
  ScanTo(&a, recs, 50, 50);
  CHECK(a.Stats().free_blocks == 0);
  std::atomic<bool> done{false};
  Range got;
  std::thread t([&] {
    auto r = a.Allocate(4, 0);
    REQUIRE(r.ok());
    got = *r;
    done = true;
  });
  std::this_thread::sleep_for(100ms);
  CHECK(!done);  // nothing free yet, scan incomplete: waiting, not NoSpace
  REQUIRE(Step(&a, recs, 10).ok());
  t.join();
  CHECK(done);
  CHECK(got == Range{50, 4});
}

TEST_CASE("allocator: NoSpace only when the scan is complete") {
  Records recs;
  recs.Add({0, 100});
  Allocator a(0, 100);
  ScanTo(&a, recs, 100, 30);
  // At the end but not yet marked complete: an allocation waits...
  std::atomic<int> code{-1};
  std::thread t([&] { code = static_cast<int>(a.Allocate(1, 0).status().code()); });
  std::this_thread::sleep_for(50ms);
  CHECK(code == -1);
  a.MarkScanComplete();  // ...and gets NoSpace once the scan is complete.
  t.join();
  CHECK(code == static_cast<int>(Code::kNoSpace));
  // Quarantined blocks are mentioned: they come back after the next commit.
  a.Free(Range{10, 5}, 4);
  auto r = a.Allocate(1, 0);
  CHECK(r.status().Is(Code::kNoSpace));
  CHECK(r.status().message().find("commit") != std::string::npos);
  a.ReleaseDurable(4);
  r = a.Allocate(10, 0);
  REQUIRE(r.ok());
  CHECK(*r == Range{10, 5});
}

TEST_CASE("allocator: MarkScanComplete before the end has no effect") {
  Allocator a(0, 100);
  ScanTo(&a, Records{}, 50, 50);
  a.MarkScanComplete();
  CHECK(!a.Stats().scan_complete);
}

TEST_CASE("allocator: Shutdown wakes waiters with Busy") {
  Allocator a(0, 100);  // never scanned
  std::atomic<int> code{-1};
  std::thread t([&] { code = static_cast<int>(a.Allocate(1, 0).status().code()); });
  std::this_thread::sleep_for(50ms);
  CHECK(code == -1);
  a.Shutdown();
  t.join();
  CHECK(code == static_cast<int>(Code::kBusy));
}

TEST_CASE("allocator: ScanStep rejects a read that makes no progress, and passes errors") {
  Allocator a(0, 100);
  Status s = a.ScanStep([](BlockNo c, std::vector<Range>*, BlockNo* next) {
    *next = c;
    return Status::Ok();
  });
  CHECK(!s.ok());
  s = a.ScanStep(
      [](BlockNo, std::vector<Range>*, BlockNo*) { return Status::IOError("disk gone"); });
  CHECK(s.Is(Code::kIOError));
  CHECK(a.Stats().cursor == 0);
}

TEST_CASE("allocator: sync points fire") {
  Allocator a(0, 10);
  std::atomic<int> locked{0}, got{0};
  SyncPoint::SetCallback("Allocator::ScanStep:Locked", [&] { ++locked; });
  SyncPoint::SetCallback("Allocator::Allocate:Got", [&] {
    ++got;
    (void)a.Stats();  // runs outside the allocator lock
  });
  SyncPoint::Enable();
  ScanAll(&a, Records{}, 5);
  REQUIRE(a.Allocate(1, 0).ok());
  SyncPoint::Disable();
  SyncPoint::ClearAll();
  CHECK(locked == 2);
  CHECK(got == 1);
}

TEST_CASE("allocator: index memory is at most 64 bytes per free range") {
  const BlockNo n = 1'000'000;
  Records recs;
  recs.used.reserve(n / 2);
  for (BlockNo b = 1; b < n; b += 2) recs.used.push_back(Range{b, 1});
  struct mallinfo2 before = mallinfo2();
  Allocator a(0, n);
  // Steps of 4096 records, as the scanner does.
  size_t i = 0;
  while (a.Stats().cursor < n) {
    REQUIRE(a.ScanStep([&](BlockNo cursor, std::vector<Range>* used, BlockNo* next) {
               size_t k = 0;
               while (i < recs.used.size() && k < 4096) used->push_back(recs.used[i++]), ++k;
               *next = i < recs.used.size() ? recs.used[i].start : n;
               return Status::Ok();
             }).ok());
  }
  a.MarkScanComplete();
  struct mallinfo2 after = mallinfo2();
  auto st = a.Stats();
  REQUIRE(st.free_ranges == n / 2);
  const double per = static_cast<double>(st.index_bytes) / static_cast<double>(st.free_ranges);
  MESSAGE("reported index bytes per free range: " << per);
  CHECK(per <= 64.0);
  // The report is honest: the heap grew by about as much.
  if (after.uordblks > before.uordblks) {  // mallinfo works (not under ASan)
    const double heap = static_cast<double>(after.uordblks - before.uordblks);
    MESSAGE("measured heap bytes per free range: " << heap / static_cast<double>(n / 2));
    CHECK(heap <= 1.2 * static_cast<double>(st.index_bytes) + 65536);
    CHECK(heap >= 0.8 * static_cast<double>(st.index_bytes));
  }
  // Allocating every range one by one keeps the index consistent.
  uint64_t total = 0;
  for (int k = 0; k < 1000; ++k) {
    auto r = a.Allocate(1, static_cast<BlockNo>(k) * 997);
    REQUIRE(r.ok());
    total += r->len;
  }
  CHECK(a.Stats().free_blocks == n / 2 - total);
}

}  // namespace
}  // namespace psm
