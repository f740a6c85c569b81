// The historic crash, provoked on purpose at the allocator level: frees
// (single ranges, splits, and whole "snapshot deletions" at once) and
// allocations race with a scanner that keeps restarting. Sync points put
// frees just below, at and above the cursor, and apply metadata writes while
// the scanner holds the allocator lock, between its Free() and its read.
//
// After every round the test stops the world and checks, block by block:
//   * no block was handed out twice (a shadow map of every block's state is
//     checked at every allocation);
//   * alloc records never overlap;
//   * the index equals the gaps of `alloc` (nothing leaked, nothing extra),
//     and equals the index that a fresh Allocator + scan of the same store
//     builds from scratch.
//
// The seed is random unless PSMFS_SEED is set (printed at the start).
// PSMFS_STRESS=N multiplies the number of rounds (default 1: a few seconds
// normally, well under a minute under ThreadSanitizer on two cores).
#include <doctest/doctest.h>
#include <stdlib.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <filesystem>
#include <map>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include "fs/space/allocator.h"
#include "fs/space/scanner.h"
#include "meta/store.h"
#include "meta/sync_point.h"
#include "tests/common/core_test_util.h"

namespace psm {
namespace {

using namespace std::chrono_literals;

int StressFactor() {
  const char* e = getenv("PSMFS_STRESS");
  int n = e ? atoi(e) : 1;
  return n > 0 ? n : 1;
}

std::string Str(const std::vector<Range>& v) {
  std::string s;
  for (const Range& r : v) {
    if (!s.empty()) s += ' ';
    s += "[" + std::to_string(r.start) + "," + std::to_string(r.end()) + ")";
  }
  return s;
}

enum : uint8_t { kFree = 0, kTaken = 1, kQuarantined = 2 };

// Writes handed to the scanner thread, to be applied inside
// Allocator::ScanStep (under the allocator lock) before the step's read.
class Handoff {
 public:
  explicit Handoff(Store* store) : store_(store) {}
  // Applies `b`, preferably from the scanner's locked step; by the caller
  // after `wait` if the scanner does not come by (idle or finished).
  Status Write(rocksdb::WriteBatch* b, std::chrono::microseconds wait) {
    auto job = std::make_shared<Job>();
    job->batch = b;
    std::unique_lock<std::mutex> l(mu_);
    q_.push_back(job);
    cv_.wait_for(l, wait, [&] { return job->done; });
    if (!job->done) {
      for (auto it = q_.begin(); it != q_.end(); ++it) {
        if (*it == job) {
          q_.erase(it);
          break;
        }
      }
      job->st = store_->Write(job->batch);
      job->done = true;
    }
    return job->st;
  }
  // Sync point "Allocator::ScanStep:Locked": runs in the scanner thread.
  void ApplyPending() {
    std::lock_guard<std::mutex> l(mu_);
    if (q_.empty()) return;
    for (auto& job : q_) {
      job->st = store_->Write(job->batch);
      job->done = true;
      ++applied_locked;
    }
    q_.clear();
    cv_.notify_all();
  }
  std::atomic<uint64_t> applied_locked{0};

 private:
  struct Job {
    rocksdb::WriteBatch* batch = nullptr;
    bool done = false;
    Status st;
  };
  Store* store_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<Job>> q_;
};

struct World {
  BlockNo first = 1;
  BlockNo end = 0;
  std::string dir;
  std::unique_ptr<Store> store;
  std::unique_ptr<Handoff> handoff;

  // Test state, guarded by mu.
  std::mutex mu;
  std::vector<uint8_t> shadow;                          // per block: kFree / kTaken / kQuarantined
  std::map<BlockNo, uint64_t> records;                  // alloc records not being freed
  std::vector<std::pair<uint64_t, Range>> quarantined;  // (seq, range)
  std::vector<std::string> errors;

  // Serialises "Free(); write" like the committer's sequence order.
  std::mutex commit_mu;
  uint64_t next_seq = 0;  // guarded by commit_mu
  std::atomic<uint64_t> applied_seq{0};

  // Statistics for the report.
  std::atomic<uint64_t> allocs{0}, aborts{0}, frees{0}, mass_frees{0}, restarts{0};
  std::atomic<uint64_t> prefetched_taken{0}, prefetched_refused{0};
  std::atomic<uint64_t> below{0}, at{0}, straddle{0}, above{0};
  std::atomic<uint64_t> inflight_passed{0};  // scans restarted over an in-flight range

  void Error(std::string e) {
    std::lock_guard<std::mutex> l(mu);
    if (errors.size() < 20) errors.push_back(std::move(e));
  }

  // Release everything durable: test shadow first, then the allocator (the
  // allocator may hand the blocks out at once).
  void CommitStep(Allocator* a) {
    const uint64_t target = applied_seq.load();
    {
      std::lock_guard<std::mutex> l(mu);
      auto it = quarantined.begin();
      while (it != quarantined.end()) {
        if (it->first <= target) {
          for (BlockNo b = it->second.start; b < it->second.end(); ++b) shadow[b] = kFree;
          it = quarantined.erase(it);
        } else {
          ++it;
        }
      }
    }
    a->ReleaseDurable(target);
  }

  // Frees `victims` (whole records, already removed from `records`) except
  // for `keep` pieces that stay allocated as new (split) records, in one
  // write at one sequence. `via_handoff`: let the scanner apply the write
  // under the allocator lock.
  void FreeRecords(Allocator* a, const std::vector<Range>& victims, const std::vector<Range>& freed,
                   const std::vector<Range>& keep, bool via_handoff) {
    std::lock_guard<std::mutex> c(commit_mu);
    const uint64_t seq = ++next_seq;
    {
      std::lock_guard<std::mutex> l(mu);
      for (const Range& r : freed) {
        for (BlockNo b = r.start; b < r.end(); ++b) {
          if (shadow[b] != kTaken && errors.size() < 20) {
            errors.push_back("freeing block " + std::to_string(b) + " that is not taken");
          }
          shadow[b] = kQuarantined;
        }
        quarantined.emplace_back(seq, r);
      }
    }
    for (const Range& r : freed) a->Free(r, seq);  // quarantine before the write
    rocksdb::WriteBatch b;
    for (const Range& v : victims) (void)b.Delete(store->handle(Cf::kAlloc), AllocKey(v.start));
    for (const Range& k : keep) {
      (void)b.Put(store->handle(Cf::kAlloc), AllocKey(k.start), EncodeAlloc(AllocRec{k.len, 1, 0}));
    }
    Status s = via_handoff ? handoff->Write(&b, 2ms) : store->Write(&b);
    if (!s.ok()) Error("free write: " + s.ToString());
    {
      std::lock_guard<std::mutex> l(mu);
      for (const Range& k : keep) records[k.start] = k.len;
    }
    applied_seq = seq;
    frees += freed.size();
  }

  // Takes one record out of `records` and frees all or part of it.
  void FreeOne(Allocator* a, const Range& rec, std::mt19937_64& rng, bool via_handoff) {
    std::vector<Range> freed, keep;
    const int mode = static_cast<int>(rng() % 4);
    if (rec.len < 3 || mode == 0) {
      freed.push_back(rec);
    } else {
      // Free a middle / head / tail piece; the rest stays as split records.
      uint64_t s = 1 + rng() % (rec.len - 2);
      uint64_t e = s + 1 + rng() % (rec.len - s - 1);
      if (mode == 1) s = 0;
      if (mode == 2) e = rec.len;
      if (s > 0) keep.push_back(Range{rec.start, s});
      freed.push_back(Range{rec.start + s, e - s});
      if (e < rec.len) keep.push_back(Range{rec.start + e, rec.len - e});
    }
    FreeRecords(a, {rec}, freed, keep, via_handoff);
  }

  // Takes records out of `records` relative to the scan cursor:
  // 0 just below it (ends at or before), 1 starting at it, 2 straddling it
  // (the record ending at the cursor and the one starting there, freed as one
  // range: the scanner ends its steps at record starts, so a single record
  // never straddles it), 3 above it.
  bool PickNearCursor(int kind, BlockNo cursor, std::vector<Range>* victims,
                      std::vector<Range>* freed) {
    std::lock_guard<std::mutex> l(mu);
    if (records.empty()) return false;
    auto it = records.lower_bound(cursor);  // first start >= cursor
    auto take = [&](std::map<BlockNo, uint64_t>::iterator x) {
      victims->push_back(Range{x->first, x->second});
      return records.erase(x);
    };
    switch (kind) {
      case 0:
        if (it == records.begin()) return false;
        --it;
        if (it->first + it->second > cursor) return false;
        take(it);
        break;
      case 1:
        if (it == records.end() || it->first != cursor) return false;
        take(it);
        break;
      case 2: {
        if (it == records.end() || it->first != cursor || it == records.begin()) return false;
        auto prev = std::prev(it);
        if (prev->first + prev->second != cursor) return false;
        take(take(prev));
        freed->push_back(Range{(*victims)[0].start, (*victims)[0].len + (*victims)[1].len});
        return true;
      }
      default:
        if (it != records.end() && it->first == cursor) ++it;
        if (it == records.end()) return false;
        take(it);
        break;
    }
    *freed = *victims;
    return true;
  }

  bool PickRecord(std::mt19937_64& rng, Range* out) {
    std::lock_guard<std::mutex> l(mu);
    if (records.empty()) return false;
    auto it = records.lower_bound(first + rng() % (end - first));
    if (it == records.end()) it = records.begin();
    *out = Range{it->first, it->second};
    records.erase(it);
    return true;
  }
};

void Populate(World* w, uint64_t seed) {
  std::mt19937_64 rng(seed);
  rocksdb::WriteBatch b;
  for (BlockNo p = w->first; p < w->end;) {
    uint64_t len = std::min<uint64_t>(w->end - p, 1 + rng() % 12);
    if (rng() % 2) {
      Epoch death = rng() % 5 == 0 ? 3 : 0;  // dead records are still used
      (void)b.Put(w->store->handle(Cf::kAlloc), AllocKey(p), EncodeAlloc(AllocRec{len, 1, death}));
      w->records[p] = len;
      for (BlockNo x = p; x < p + len; ++x) w->shadow[x] = kTaken;
    }
    p += len;
  }
  REQUIRE(w->store->Write(&b).ok());
}

// The truth: records read back from the store, their overlaps, their gaps.
std::vector<Range> TruthGaps(World* w) {
  std::vector<Range> gaps;
  auto it = w->store->NewIterator(Cf::kAlloc);
  BlockNo pos = w->first;
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    const BlockNo s = AllocKeyBlock(std::string_view(it->key().data(), it->key().size()));
    AllocRec rec;
    REQUIRE(DecodeAlloc(std::string_view(it->value().data(), it->value().size()), &rec).ok());
    if (s < pos) {
      w->Error("alloc record at " + std::to_string(s) + " overlaps its predecessor (ends " +
               std::to_string(pos) + ")");
    }
    if (s > pos) gaps.push_back(Range{pos, s - pos});
    pos = std::max(pos, s + rec.length);
  }
  REQUIRE(it->status().ok());
  if (pos < w->end) gaps.push_back(Range{pos, w->end - pos});
  return gaps;
}

std::vector<Range> ShadowFree(World* w) {
  std::lock_guard<std::mutex> l(w->mu);
  std::vector<Range> out;
  for (BlockNo b = w->first; b < w->end;) {
    if (w->shadow[b] != kFree) {
      ++b;
      continue;
    }
    BlockNo s = b;
    while (b < w->end && w->shadow[b] == kFree) ++b;
    out.push_back(Range{s, b - s});
  }
  return out;
}

void RunRound(World* w, int round, uint64_t seed) {
  std::mt19937_64 rng(seed);
  Allocator a(w->first, w->end);
  // Steps of 1..24 records; reading ahead with 0, 1 or 2 threads (0: every
  // step reads under the allocator lock).
  ScannerOptions so;
  so.records_per_step = static_cast<uint32_t>(1 + rng() % 24);
  so.prefetch_threads = static_cast<int>(rng() % 3);
  Scanner s(w->store.get(), &a, so);
  std::atomic<bool> stop{false};
  std::atomic<int> step_no{0};
  std::atomic<int> forced_restarts{0};

  // Targeted frees relative to the cursor, from the scanner thread between
  // steps; released at once, so the release meets the cursor right there.
  // The same between a piece read ahead and its publication: a free that
  // the read may not have seen, released at once (the race a stale
  // prefetched read would lose: such a piece must be refused).
  auto targeted = [&, trng = std::mt19937_64(seed ^ 0x5eed)]() mutable {
        if (stop) return;
        if (++step_no % 3 != 0) return;
        const BlockNo cursor = a.Stats().cursor;
        const int kind = static_cast<int>(trng() % 4);
        std::vector<Range> victims, freed;
        if (!w->PickNearCursor(kind, cursor, &victims, &freed)) return;
        (kind == 0 ? w->below : kind == 1 ? w->at : kind == 2 ? w->straddle : w->above)++;
        // Sometimes a whole "snapshot deletion": these records and a few more.
        if (trng() % 4 == 0) {
          for (int i = 0; i < 6; ++i) {
            Range more;
            if (w->PickRecord(trng, &more)) {
              victims.push_back(more);
              freed.push_back(more);
            }
          }
          ++w->mass_frees;
        }
        w->FreeRecords(&a, victims, freed, {}, false);
        w->CommitStep(&a);
      };
  SyncPoint::SetCallback("Scanner::AfterStep", targeted);
  SyncPoint::SetCallback("Scanner::Prefetched", targeted);
  SyncPoint::SetCallback("Allocator::ScanStep:Locked", [&] { w->handoff->ApplyPending(); });
  SyncPoint::Enable();
  s.Start("mount");

  std::vector<std::thread> ts;
  // Allocators.
  for (int t = 0; t < 2; ++t) {
    ts.emplace_back([&, t] {
      std::mt19937_64 r(seed * 31 + static_cast<uint64_t>(t));
      for (int op = 0; op < 120; ++op) {
        auto got = a.Allocate(1 + r() % 8, w->first + r() % (w->end - w->first));
        if (!got.ok()) {
          if (!got.status().Is(Code::kNoSpace)) w->Error("allocate: " + got.status().ToString());
          std::this_thread::sleep_for(100us);
          continue;
        }
        const Range g = *got;
        {
          std::lock_guard<std::mutex> l(w->mu);
          for (BlockNo b = g.start; b < g.end(); ++b) {
            if (w->shadow[b] != kFree && w->errors.size() < 20) {
              w->errors.push_back("block " + std::to_string(b) + " handed out twice (state " +
                                  std::to_string(w->shadow[b]) + ") in round " +
                                  std::to_string(round));
            }
            w->shadow[b] = kTaken;
          }
        }
        ++w->allocs;
        if (r() % 8 == 0) {  // the write failed: give it back
          {
            std::lock_guard<std::mutex> l(w->mu);
            for (BlockNo b = g.start; b < g.end(); ++b) w->shadow[b] = kFree;
          }
          a.Abort(g);
          ++w->aborts;
          continue;
        }
        if (r() % 10 == 0 && forced_restarts.fetch_add(1) < 4) {
          // Restart the scan (restore, failover) while `g` is in flight and
          // its record not yet written, and let the scanner pass over it.
          s.Start("request");
          ++w->restarts;
          ++w->inflight_passed;
          const auto deadline = std::chrono::steady_clock::now() + 100ms;
          while (std::chrono::steady_clock::now() < deadline) {
            const auto as = a.Stats();
            if (as.cursor >= g.end() || as.scan_complete) break;
            std::this_thread::sleep_for(50us);
          }
        }
        rocksdb::WriteBatch b;
        std::vector<Range> recs;
        if (g.len > 1 && r() % 3 == 0) {  // committed as two adjacent records
          uint64_t k = 1 + r() % (g.len - 1);
          recs = {Range{g.start, k}, Range{g.start + k, g.len - k}};
        } else {
          recs = {g};
        }
        for (const Range& x : recs) {
          (void)b.Put(w->store->handle(Cf::kAlloc), AllocKey(x.start),
                      EncodeAlloc(AllocRec{x.len, 2, 0}));
        }
        Status st = r() % 3 == 0 ? w->handoff->Write(&b, 2ms) : w->store->Write(&b);
        if (!st.ok()) w->Error("alloc write: " + st.ToString());
        a.Committed(g);  // after the record is visible
        std::lock_guard<std::mutex> l(w->mu);
        for (const Range& x : recs) w->records[x.start] = x.len;
      }
    });
  }
  // Freer.
  ts.emplace_back([&] {
    std::mt19937_64 r(seed * 77);
    for (int op = 0; op < 200; ++op) {
      Range rec;
      if (!w->PickRecord(r, &rec)) {
        std::this_thread::sleep_for(100us);
        continue;
      }
      w->FreeOne(&a, rec, r, r() % 3 == 0);
      if (r() % 16 == 0) std::this_thread::sleep_for(200us);
    }
  });
  // Committer: makes frees durable now and then.
  std::thread committer([&] {
    while (!stop) {
      w->CommitStep(&a);
      std::this_thread::sleep_for(300us);
    }
  });
  // Restarter: restore / failover / request scans while all of that runs.
  std::thread restarter([&] {
    std::mt19937_64 r(seed * 13);
    const char* reasons[] = {"restore", "failover", "request"};
    for (int i = 0; i < 3 && !stop; ++i) {
      std::this_thread::sleep_for(std::chrono::microseconds(200 + r() % 3000));
      s.Start(reasons[r() % 3]);
      ++w->restarts;
    }
  });

  for (auto& t : ts) t.join();
  restarter.join();
  stop = true;
  committer.join();
  w->CommitStep(&a);  // every free is durable now
  REQUIRE(s.WaitIdle(120));
  SyncPoint::Disable();
  SyncPoint::ClearAll();
  s.Stop();

  // ---- verification ----
  const auto st = a.Stats();
  w->prefetched_taken += st.prefetched_taken;
  w->prefetched_refused += st.prefetched_refused;
  CHECK(st.scan_complete);
  CHECK(st.inflight_blocks == 0);
  CHECK(st.quarantined_blocks == 0);
  const auto truth = TruthGaps(w);
  const std::string index = Str(a.FreeRanges());
  CHECK_MESSAGE(index == Str(truth), "round " << round);
  CHECK_MESSAGE(Str(ShadowFree(w)) == Str(truth), "round " << round);
  // A fresh allocator and scan of the same store agree.
  Allocator fresh(w->first, w->end);
  Scanner s2(w->store.get(), &fresh, ScannerOptions{4096});
  s2.Start("mount");
  REQUIRE(s2.WaitIdle(120));
  CHECK_MESSAGE(Str(fresh.FreeRanges()) == index, "round " << round);
  std::lock_guard<std::mutex> l(w->mu);
  for (const auto& e : w->errors) FAIL_CHECK(e);
  w->errors.clear();
}

TEST_CASE("scanner race: frees, splits, snapshot deletions and allocations vs restarting scans") {
  World w;
  char tmpl[] = "/tmp/psm_race_XXXXXX";
  REQUIRE(mkdtemp(tmpl) != nullptr);
  w.dir = tmpl;
  StoreOptions o;
  o.create_if_missing = true;
  o.write_buffer_bytes = 8 << 20;
  auto r = Store::Open(w.dir + "/meta", o);
  REQUIRE_MESSAGE(r.ok(), r.status().ToString());
  w.store = std::move(r).value();
  w.handoff = std::make_unique<Handoff>(w.store.get());
  w.end = 6000;
  w.shadow.assign(w.end, kFree);
  const uint64_t seed = psm_test::TestSeed("scanner_race_test");
  Populate(&w, psm_test::SeedOf(seed, 0));

  const int rounds = 60 * StressFactor();
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < rounds; ++i) {
    RunRound(&w, i, psm_test::SeedOf(seed, 1 + static_cast<uint64_t>(i)));
    // Keep the volume from filling up or emptying out.
    if (ShadowFree(&w).empty()) break;
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  MESSAGE(rounds << " rounds in " << secs << " s: " << w.allocs.load() << " allocations ("
                 << w.aborts.load() << " aborted), " << w.frees.load() << " frees, "
                 << w.mass_frees.load() << " snapshot deletions, " << w.restarts.load()
                 << " restarts (" << w.inflight_passed.load()
                 << " over an in-flight range); targeted frees below " << w.below.load() << " / at "
                 << w.at.load() << " / straddling " << w.straddle.load() << " / above "
                 << w.above.load() << " the cursor; " << w.handoff->applied_locked.load()
                 << " writes applied under the allocator lock; pieces read ahead: "
                 << w.prefetched_taken.load() << " published, " << w.prefetched_refused.load()
                 << " refused as possibly stale");
  // The interesting interleavings really happened.
  CHECK(w.below > 0);
  CHECK(w.at > 0);
  CHECK(w.straddle > 0);
  CHECK(w.above > 0);
  CHECK(w.handoff->applied_locked > 0);
  CHECK(w.restarts > 0);
  CHECK(w.inflight_passed > 0);
  CHECK(w.prefetched_taken > 0);
  CHECK(w.prefetched_refused > 0);
  w.handoff.reset();
  w.store.reset();
  std::filesystem::remove_all(w.dir);
}

}  // namespace
}  // namespace psm
