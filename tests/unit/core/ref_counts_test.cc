// RefCounts (fs/core/ref_counts.h), the kernel-reference table, against an
// std::unordered_map doing the same: adds and releases of random inodes
// (dense small numbers, so runs and wrap-around in the table form, and a
// few of 2^48 and up), counts past the packed 15 bits, growth and shrinking.
#include <algorithm>
#include <optional>
#include <set>
#include <unordered_map>

#include "fs/core/ref_counts.h"
#include "tests/common/core_test_util.h"

using psm::RefCounts;

TEST_CASE("RefCounts counts as a map does, through growth, shrinking and large counts") {
  const uint64_t seed = psm_test::TestSeed("RefCounts", 16);
  RefCounts r;
  std::unordered_map<uint64_t, uint64_t> want;
  auto check_all = [&] {
    REQUIRE(r.size() == want.size());
    for (const auto& [ino, n] : want) REQUIRE(r.Get(ino) == n);
  };
  uint64_t k = 0;
  for (int phase = 0; phase < 3; ++phase) {
    // Fill (phase 0: 20,000 inodes; later ones fewer), then drain most.
    const uint64_t span = phase == 0 ? 20000 : 3000;
    for (int i = 0; i < 60000; ++i) {
      uint64_t x = psm_test::SeedOf(seed, k++);
      uint64_t ino = 2 + x % span;
      if (x % 97 == 0) ino = (uint64_t{1} << 48) + x % 5;  // past the packed bits
      uint64_t n = x % 211 == 0 ? 70000 : 1 + (x >> 40) % 3;  // now and then past 0xffff
      uint64_t before = want.count(ino) ? want[ino] : 0;
      REQUIRE(r.Add(ino, n) == before);
      want[ino] = before + n;
      if (x % 5 == 0) {  // a FORGET of some of one inode's references
        uint64_t y = psm_test::SeedOf(seed, k++);
        uint64_t victim = 2 + y % span;
        auto it = want.find(victim);
        uint64_t drop = 1 + (y >> 40) % 4;
        std::optional<uint64_t> left = r.Release(victim, drop);
        if (it == want.end()) {
          REQUIRE(!left.has_value());
        } else {
          REQUIRE(left.has_value());
          if (it->second > drop) {
            it->second -= drop;
            REQUIRE(*left == it->second);
          } else {
            want.erase(it);
            REQUIRE(*left == 0);
            REQUIRE(!r.Contains(victim));
          }
        }
      }
    }
    check_all();
    const size_t full_bytes = r.bytes();
    // Drain all but a few: every remaining inode's count is exact, and the
    // table gives its memory back.
    for (auto it = want.begin(); it != want.end();) {
      if (it->first % 50 == 0) {
        ++it;
        continue;
      }
      std::optional<uint64_t> left = r.Release(it->first, it->second);
      REQUIRE(left.has_value());
      REQUIRE(*left == 0);
      REQUIRE(!r.Contains(it->first));
      it = want.erase(it);
    }
    check_all();
    CHECK(r.bytes() < full_bytes);
  }
  for (const auto& [ino, n] : want) REQUIRE(r.Release(ino, n + 5) == std::optional<uint64_t>(0));
  CHECK(r.size() == 0);
  CHECK(!r.Release(12345, 1).has_value());
  CHECK(r.Get(12345) == 0);
}

TEST_CASE("RefCounts: a million inodes take 8 to 20 bytes each") {
  RefCounts r;
  for (uint64_t i = 2; i < 1000002; ++i) REQUIRE(r.Add(i) == 0);
  CHECK(r.size() == 1000000);
  CHECK(r.bytes() <= 20 * 1000000);
  for (uint64_t i = 2; i < 1000002; i += 3) REQUIRE(r.Get(i) == 1);
  for (uint64_t i = 2; i < 1000002; ++i) REQUIRE(r.Release(i, 1) == std::optional<uint64_t>(0));
  CHECK(r.size() == 0);
  CHECK(r.bytes() <= 1024 * 8);
}

TEST_CASE("RefCounts: CollectDirs visits every directory once a revolution, in pieces, as a clock") {
  RefCounts r;
  std::set<uint64_t> want;  // directories in the table's slots
  for (uint64_t ino = 2; ino < 6002; ++ino) {
    const bool dir = ino % 3 == 0;
    REQUIRE(r.Add(ino, 1, dir) == 0);
    if (ino % 4 == 0) REQUIRE(r.Add(ino, 2) == 1);  // a later reference keeps the flag
    if (dir) want.insert(ino);
  }
  // Released directories leave; one pushed past the packed count moves to
  // the big map, where CollectDirs does not look.
  for (uint64_t ino = 3; ino < 6002; ino += 30) {
    REQUIRE(r.Release(ino, r.Get(ino)) == std::optional<uint64_t>(0));
    want.erase(ino);
  }
  REQUIRE(r.Add(6, 70000) > 0);
  want.erase(6);
  REQUIRE(r.Get(6) > 70000);
  size_t cursor = 0, calls = 0;
  // One revolution in pieces of at most 100 slots and 7 directories; a
  // piece cut short by max_dirs covers fewer slots.
  auto revolution = [&] {
    std::set<uint64_t> got;
    std::vector<uint64_t> dirs;
    for (size_t seen = 0; seen < r.capacity();) {
      const size_t before = cursor;
      dirs.clear();
      const size_t most = std::min<size_t>(100, r.capacity() - seen);
      const size_t looked = r.CollectDirs(&cursor, most, 7, &dirs);
      REQUIRE(dirs.size() <= 7);
      REQUIRE(looked >= 1);
      REQUIRE(looked <= most);
      REQUIRE(looked == ((cursor - before) & (r.capacity() - 1)));
      seen += looked;
      for (uint64_t d : dirs) {
        REQUIRE(got.insert(d).second);  // once a revolution
        REQUIRE(d % 3 == 0);
      }
      REQUIRE(++calls < 100000);
    }
    CHECK(cursor == 0);
    return got;
  };
  // Every entry was just added, so used: the first revolution passes over
  // them all (clearing their bits), the second takes every directory.
  for (uint64_t ino = 2; ino < 6002; ++ino) REQUIRE(r.Recent(ino) == (r.Get(ino) != 0 && ino != 6));
  CHECK(revolution().empty());
  CHECK(!r.Recent(9));
  CHECK(revolution() == want);
  // Directories touched since are spared one revolution, not two.
  std::set<uint64_t> rest = want;
  for (uint64_t ino = 9; ino < 3000; ino += 6) {
    r.Touch(ino);
    if (want.count(ino)) rest.erase(ino);
  }
  r.Touch(123456789);  // not in the table: nothing happens
  CHECK(r.Get(123456789) == 0);
  CHECK(rest.size() < want.size());
  CHECK(revolution() == rest);
  CHECK(revolution() == want);
}
