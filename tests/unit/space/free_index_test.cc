// Tests for fs/space/free_index: the allocator's ordered set of free ranges,
// checked against a block-by-block model under random operations.
#include "fs/space/free_index.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <random>
#include <vector>

namespace psm {
namespace {

// The model: one byte per block (raw loops: fast even in a Debug build).
using Model = std::vector<uint8_t>;

std::vector<Range> ModelRanges(const Model& model) {
  std::vector<Range> out;
  const uint8_t* f = model.data();
  const BlockNo n = model.size();
  for (BlockNo b = 0; b < n;) {
    if (!f[b]) {
      ++b;
      continue;
    }
    BlockNo s = b;
    while (b < n && f[b]) ++b;
    out.push_back(Range{s, b - s});
  }
  return out;
}

TEST_CASE("free index: insert merges neighbours on both sides") {
  FreeIndex ix;
  CHECK(ix.Insert(Range{10, 5}) == 5);
  CHECK(ix.Insert(Range{20, 5}) == 5);
  CHECK(ix.ranges() == 2);
  CHECK(ix.Insert(Range{15, 5}) == 5);  // touches both
  REQUIRE(ix.ranges() == 1);
  CHECK(ix.ToVector()[0] == Range{10, 15});
  CHECK(ix.Insert(Range{12, 20}) == 7);  // overlap: only new blocks count
  CHECK(ix.ToVector()[0] == Range{10, 22});
  CHECK(ix.blocks() == 22);
  CHECK(ix.CheckInvariants().empty());
}

TEST_CASE("free index: take prefers the first fit at or after the hint, wrapping") {
  FreeIndex ix;
  ix.Insert(Range{0, 3});
  ix.Insert(Range{10, 8});
  ix.Insert(Range{30, 4});
  ix.Insert(Range{50, 8});
  CHECK(ix.Take(4, 0) == Range{10, 4});   // first with len >= 4
  CHECK(ix.Take(4, 20) == Range{30, 4});  // from the hint on
  CHECK(ix.ToVector() == std::vector<Range>{{0, 3}, {14, 4}, {50, 8}});
  // Nothing starts at or after 51: the search wraps and finds 50 last.
  CHECK(ix.Take(5, 51) == Range{50, 5});
}

TEST_CASE("free index: take policy in detail") {
  FreeIndex ix;
  ix.Insert(Range{0, 3});
  ix.Insert(Range{10, 8});
  ix.Insert(Range{50, 8});
  // Hint past everything: wraps to the first fit from the beginning.
  CHECK(ix.Take(5, 100) == Range{10, 5});
  // Hint between ranges: the one after it.
  CHECK(ix.Take(5, 20) == Range{50, 5});
  // Nothing holds 10: the longest (the lowest of equals) gives what it has.
  ix.Insert(Range{70, 6});
  CHECK(ix.Take(10, 0) == Range{70, 6});
  CHECK(ix.Take(10, 0) == Range{0, 3});
  CHECK(ix.ToVector() == std::vector<Range>{{15, 3}, {55, 3}});
  CHECK(ix.Take(1, 16) == Range{55, 1});  // 15 starts before the hint
  CHECK(ix.CheckInvariants().empty());
}

TEST_CASE("free index: remove cuts ranges apart") {
  FreeIndex ix;
  ix.Insert(Range{0, 100});
  CHECK(ix.Remove(Range{10, 5}) == 5);
  CHECK(ix.ToVector() == std::vector<Range>{{0, 10}, {15, 85}});
  CHECK(ix.Remove(Range{5, 20}) == 15);
  CHECK(ix.ToVector() == std::vector<Range>{{0, 5}, {25, 75}});
  CHECK(ix.Remove(Range{200, 5}) == 0);
  CHECK(ix.Contains(4));
  CHECK(!ix.Contains(5));
  CHECK(ix.Contains(25));
  CHECK(!ix.Contains(100));
  CHECK(ix.CheckInvariants().empty());
}

TEST_CASE("free index: random operations match the block model") {
  for (uint32_t seed : {1u, 2u, 3u}) {
    std::mt19937_64 rng(seed);
    const BlockNo n = 20000;  // thousands of ranges: dozens of leaves
    Model model(n, 0);
    FreeIndex ix;
    for (int op = 0; op < 25000; ++op) {
      const int kind = static_cast<int>(rng() % 10);
      if (kind < 4) {
        BlockNo s = rng() % n;
        uint64_t len = 1 + rng() % std::min<uint64_t>(n - s, rng() % 2 ? 3 : 40);
        uint64_t added = 0;
        for (BlockNo b = s; b < s + len; ++b) added += !model[b], model[b] = 1;
        CHECK(ix.Insert(Range{s, len}) == added);
      } else if (kind < 7) {
        BlockNo s = rng() % n;
        uint64_t len = 1 + rng() % std::min<uint64_t>(n - s, 30);
        uint64_t removed = 0;
        for (BlockNo b = s; b < s + len; ++b) removed += model[b], model[b] = 0;
        CHECK(ix.Remove(Range{s, len}) == removed);
      } else {
        uint64_t want = 1 + rng() % 16;
        BlockNo hint = rng() % n;
        // The model's choice: first range starting >= hint with len >= want,
        // wrapping; else the longest (lowest among equals).
        auto rs = ModelRanges(model);
        const Range* pick = nullptr;
        for (const auto& r : rs) {
          if (r.start >= hint && r.len >= want) {
            pick = &r;
            break;
          }
        }
        if (!pick) {
          for (const auto& r : rs) {
            if (r.len >= want) {
              pick = &r;
              break;
            }
          }
        }
        if (!pick) {
          for (const auto& r : rs) {
            if (!pick || r.len > pick->len) pick = &r;
          }
        }
        Range got = ix.Take(want, hint);
        if (!pick) {
          CHECK(got.len == 0);
        } else {
          Range expect{pick->start, std::min(want, pick->len)};
          CHECK(got == expect);
          for (BlockNo b = got.start; b < got.end(); ++b) model[b] = 0;
        }
      }
      if (op % 5000 == 0) {
        REQUIRE(ix.CheckInvariants() == "");
        REQUIRE(ix.ToVector() == ModelRanges(model));
      }
    }
    CHECK(ix.CheckInvariants() == "");
    CHECK(ix.ToVector() == ModelRanges(model));
    uint64_t blocks = 0;
    for (uint8_t f : model) blocks += f;
    CHECK(ix.blocks() == blocks);
  }
}

TEST_CASE("free index: memory stays near 33 bytes per range, however it was built") {
  FreeIndex ix;
  const uint64_t n = 200000;
  // Every other block free, inserted in random order: worst fragmentation.
  std::vector<BlockNo> order(n);
  for (uint64_t i = 0; i < n; ++i) order[i] = 2 * i;
  std::shuffle(order.begin(), order.end(), std::mt19937_64(9));
  for (BlockNo b : order) ix.Insert(Range{b, 1});
  REQUIRE(ix.ranges() == n);
  const double per = static_cast<double>(ix.MemoryBytes()) / static_cast<double>(n);
  MESSAGE("bytes per range after random inserts: " << per);
  CHECK(per <= 40.0);
  // Delete 3 of every 4 ranges: leaves merge, memory follows.
  for (uint64_t i = 0; i < n; ++i) {
    if (i % 4) ix.Remove(Range{2 * i, 1});
  }
  REQUIRE(ix.ranges() == n / 4);
  const double per2 = static_cast<double>(ix.MemoryBytes()) / static_cast<double>(n / 4);
  MESSAGE("bytes per range after deleting 3/4: " << per2);
  CHECK(per2 <= 48.0);  // vectors keep their capacity; leaves are >= half full
  CHECK(ix.CheckInvariants() == "");
}

TEST_CASE("free index: appends pack leaves full; later edits keep every invariant") {
  FreeIndex ix;
  const uint64_t n = 20000;
  for (uint64_t i = 0; i < n; ++i) ix.Insert(Range{3 * i, 2});  // scanner order
  REQUIRE(ix.CheckInvariants() == "");
  const double packed = static_cast<double>(ix.MemoryBytes()) / static_cast<double>(n);
  MESSAGE("bytes per range after appends: " << packed);
  CHECK(packed < 20.0);
  Model model(3 * n, 0);
  for (uint64_t i = 0; i < n; ++i) model[3 * i] = model[3 * i + 1] = 1;
  std::mt19937_64 rng(77);
  for (int op = 0; op < 20000; ++op) {
    BlockNo s = rng() % (3 * n - 10);
    uint64_t len = 1 + rng() % 6;
    if (rng() % 2) {
      ix.Insert(Range{s, len});
      for (BlockNo b = s; b < s + len; ++b) model[b] = 1;
    } else {
      ix.Remove(Range{s, len});
      for (BlockNo b = s; b < s + len; ++b) model[b] = 0;
    }
    if (op % 1000 == 0) REQUIRE(ix.CheckInvariants() == "");
  }
  CHECK(ix.CheckInvariants() == "");
  CHECK(ix.ToVector() == ModelRanges(model));
  // Drain it completely through Take.
  while (ix.ranges() > 0) {
    Range r = ix.Take(1 + rng() % 4, rng() % (3 * n));
    REQUIRE(r.len > 0);
  }
  CHECK(ix.blocks() == 0);
  CHECK(ix.CheckInvariants() == "");
  // Leaves are freed as they empty (the small summary vectors keep capacity).
  CHECK(static_cast<double>(ix.MemoryBytes()) < 0.05 * packed * n);
}

}  // namespace
}  // namespace psm
