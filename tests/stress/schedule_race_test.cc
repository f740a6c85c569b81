// Scheduled snapshots and retention racing the scanner, readers browsing
// snapshots and a writer (label stress; runs under TSan in `make test`).
// The scheduler's clock is injected: each tick advances it 20 minutes, so
// thousands of scheduled snapshots are taken and pruned in seconds. Readers
// open files inside snapshots that retention deletes under them: every
// read returns one of the contents ever written, or the snapshot is gone
// (kNotFound / kStale) — never anything else. At the end fsck must find the
// volume exact (no leaked or doubly used block) and retention must hold.
//
// The seed is random unless PSMFS_SEED is set (printed at the start).
// PSMFS_STRESS=N multiplies the number of ticks (default 1: 400 ticks).
#include <doctest/doctest.h>
#include <fcntl.h>
#include <stdlib.h>

#include <atomic>
#include <random>
#include <set>
#include <thread>

#include "fs/control/scheduler.h"
#include "tests/common/core_test_util.h"

using namespace psm;
using psm_test::CoreVolume;

namespace {

int Scale() {
  const char* s = getenv("PSMFS_STRESS");
  int n = s ? atoi(s) : 1;
  return n < 1 ? 1 : n;
}

std::string Content(int gen) { return "generation " + std::to_string(gen) + std::string(5000, 'x'); }

// True when `s` is Content(g) for some generation g.
bool IsContent(const std::string& s) {
  if (s.compare(0, 11, "generation ") != 0) return false;
  size_t i = 11;
  while (i < s.size() && s[i] >= '0' && s[i] <= '9') ++i;
  return i > 11 && s.size() - i == 5000 && s.find_first_not_of('x', i) == std::string::npos;
}

}  // namespace

TEST_CASE("scheduled create and prune while the scanner runs and readers browse snapshots") {
  const uint64_t seed = psm_test::TestSeed("schedule_race_test");
  CoreVolume v(128ull << 20);
  v.Put(kRootIno, "f", Content(0));
  SchedulePolicy p;
  p.interval_sec = 1200;
  p.keep_last = 2;
  p.keep_hourly = 3;
  p.keep_daily = 2;
  p.keep_weekly = 0;
  p.keep_monthly = 0;
  REQUIRE(StorePolicy(v.fs.get(), p).ok());
  std::atomic<int64_t> clock{1700000000};
  Scheduler sched(v.fs.get(), [&] { return clock.load(); });
  std::atomic<bool> stop{false};
  std::atomic<int> gen{0};
  std::atomic<int> bad{0}, reads_ok{0}, reads_gone{0};

  std::thread writer([&] {
    while (!stop) {
      int g = gen.load() + 1;
      NodeId f = v.Node(kRootIno, "f");
      if (v.WriteAt(f, 0, Content(g)).ok()) gen = g;
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
  });
  std::thread scanner([&] {
    while (!stop) {
      v.fs->StartScan("request");
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
  });
  auto browse = [&](unsigned k) {
    std::mt19937_64 rng(psm_test::SeedOf(seed, k));
    while (!stop) {
      auto snaps = v.fs->ListSnapshots(false);
      if (snaps.empty()) continue;
      const std::string name = snaps[rng() % snaps.size()].name;
      auto root = v.fs->Lookup(kSnapDirNode, name);
      if (!root.ok()) {
        if (!root.status().Is(Code::kNotFound) && !root.status().Is(Code::kStale)) ++bad;
        ++reads_gone;
        continue;
      }
      auto f = v.fs->Lookup(root->node, "f");
      if (!f.ok()) {
        if (!f.status().Is(Code::kStale) && !f.status().Is(Code::kNotFound)) ++bad;
        ++reads_gone;
        continue;
      }
      auto fh = v.fs->OpenFile(f->node, O_RDONLY);
      if (!fh.ok()) {
        if (!fh.status().Is(Code::kStale) && !fh.status().Is(Code::kNotFound)) ++bad;
        ++reads_gone;
        continue;
      }
      std::string buf(8192, '\0');
      auto n = v.fs->Read(*fh, 0, buf.size(), buf.data());
      // An open handle keeps reading correct bytes even if the snapshot is
      // pruned meanwhile.
      if (!n.ok() || !IsContent(buf.substr(0, *n))) {
        ++bad;
        MESSAGE("bad read in " << name << ": " << (n.ok() ? buf.substr(0, 20) : n.status().ToString()));
      } else {
        ++reads_ok;
      }
      (void)v.fs->Release(*fh);
    }
  };
  std::thread r1(browse, 1), r2(browse, 2);

  const int ticks = 400 * Scale();
  int created = 0, pruned = 0, held_kept = 0;
  for (int i = 0; i < ticks; ++i) {
    clock += 1200;
    auto r = sched.Tick(clock.load());
    REQUIRE_MESSAGE(r.error.ok(), r.error.ToString());
    if (!r.created.empty()) ++created;
    pruned += static_cast<int>(r.prune.pruned.size());
    CHECK(r.prune.errors.empty());
    if (i == 10) REQUIRE(v.fs->HoldSnapshot(r.created, "backup").ok());  // never pruned
    held_kept += static_cast<int>(r.prune.busy.size());
    if (i % 50 == 0) (void)v.fs->ReclaimNow();
  }
  stop = true;
  writer.join();
  scanner.join();
  r1.join();
  r2.join();
  CHECK(bad.load() == 0);
  MESSAGE("ticks " << ticks << ", created " << created << ", pruned " << pruned << ", reads ok "
                   << reads_ok.load() << ", gone " << reads_gone.load());
  CHECK(created == ticks);
  CHECK(reads_ok.load() > 0);
  CHECK(held_kept > 0);
  // Retention holds: at most last 2 + 3 hourly + 2 daily (overlapping) + the held one.
  auto snaps = v.fs->ListSnapshots(false);
  CHECK(snaps.size() <= 8);
  CHECK(snaps.size() + static_cast<size_t>(pruned) == static_cast<size_t>(created));
  REQUIRE(v.fs->ReclaimNow().ok());
  CHECK(v.Fsck() == 0);
}
