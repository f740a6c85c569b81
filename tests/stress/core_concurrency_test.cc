// Concurrency stress of the core (runs under ThreadSanitizer in make test):
// writers rewrite, truncate, create and unlink files; a snapshot thread
// creates snapshots and deletes most of them again as the newest while the
// writers go on (so reclaim drops versions under tombstones the writers
// rewrite in place), the others later as older ones (so reclaim frees
// ranges on both sides of the scan cursor); readers open files inside
// snapshots and keep reading them while those snapshots are deleted; a
// rescan thread restarts the free-space scan. Afterwards: the live tree
// holds every file's last generation, every snapshot still matches what was
// written before it, fsck is clean, and the free space equals a fresh
// format's once everything is deleted (no leaked block, none handed out twice).
//
// The seed is random unless PSMFS_SEED is set (printed at the start);
// PSMFS_STRESS scales the rounds (default 1).
#include <atomic>
#include <cstdlib>
#include <map>
#include <mutex>
#include <random>
#include <thread>

#include "tests/common/core_test_util.h"

using namespace psm;
using psm_test::CoreVolume;
using psm_test::Pattern;

namespace {

int Scale() {
  const char* s = getenv("PSMFS_STRESS");
  int v = s ? atoi(s) : 1;
  return v < 1 ? 1 : v;
}

// Content of file i at generation g: deterministic, so any snapshot can be
// checked against the generation recorded when it was taken.
std::string Content(int i, int g) { return Pattern(4096 * (1 + (i * 7 + g) % 40) + g % 13, i * 1000 + g); }

}  // namespace

TEST_CASE("writers, snapshots, readers, reclaim and rescans at once") {
  // Random by default (every run tries other choices); PSMFS_SEED repeats
  // every thread's choices.
  const uint64_t seed = psm_test::TestSeed("core_concurrency_test");
  const int kFiles = 12;
  const int kRounds = 350 * Scale();  // per writer
  const int kWriters = 3;
  // Aimed at the lost-write race of commits 89669a2/f2f86f4 (reclaim
  // deleting, as a lone tombstone, a chunk record a writer had just
  // rewritten in place): with the fix reverted the default run failed 18
  // of 18 times under TSan (and 5 of 5 without a sanitizer); the earlier
  // settings (200 rounds, no pause, random victims) failed 0 of 5 under
  // TSan, and needed PSMFS_STRESS=5 without a sanitizer. Half the
  // rewrites pause up to kPauseUs between the truncate and the write;
  // 3 snapshots in 4 are deleted as the newest, after up to kHoldUs of
  // writes at the epoch after them.
  const uint64_t kPauseEvery = 2, kPauseUs = 1000;
  const uint64_t kKeepEvery = 4, kHoldUs = 6000;
  CoreVolume v(256ull << 20, 64 * 1024);  // small chunks: more records, more races
  uint64_t free0 = v.FreeBlocks();
  std::mutex gen_mu;
  std::vector<int> gen(kFiles, -1);  // current generation of each file (-1: absent)
  std::map<std::string, std::vector<int>> snap_gens;  // snapshot -> generations
  std::vector<std::mutex> file_mu(kFiles);
  std::atomic<bool> stop{false};
  std::atomic<int> errors{0};
  auto fail = [&](const std::string& what) {
    errors++;
    MESSAGE(what);
  };

  auto writer = [&](int id) {
    std::mt19937_64 rng(psm_test::SeedOf(seed, id));
    for (int r = 0; r < kRounds && !stop; ++r) {
      int i = rng() % kFiles;
      std::lock_guard<std::mutex> fl(file_mu[i]);
      std::string name = "f" + std::to_string(i);
      int g;
      {
        std::lock_guard<std::mutex> l(gen_mu);
        g = gen[i] + 1;
      }
      if (rng() % 5 == 0 && g > 0) {
        Status s = v.fs->Unlink(kRootIno, name);
        if (!s.ok() && !s.Is(Code::kNotFound)) fail("unlink: " + s.ToString());
        std::lock_guard<std::mutex> l(gen_mu);
        gen[i] = -1;
        continue;
      }
      auto c = v.fs->Create(kRootIno, name, 0644, O_RDWR, v.cred);
      if (!c.ok()) {
        fail("create: " + c.status().ToString());
        continue;
      }
      std::string data = Content(i, g);
      struct stat st {};
      st.st_size = 0;
      // Truncate then rewrite under the per-file mutex; the snapshot thread
      // takes every file mutex, so it never sees a file mid-update.
      auto t = v.fs->SetAttr(c->first.node, st, kSetSize, v.cred);
      // Now and then a moment between the truncate and the write: the
      // emptied chunk records are tombstones at the live epoch meanwhile,
      // which the write then rewrites in place.
      if (rng() % kPauseEvery == 0) {
        std::this_thread::sleep_for(std::chrono::microseconds(rng() % kPauseUs));
      }
      auto w = v.fs->Write(c->second, 0, data.data(), data.size());
      if (!t.ok() || !w.ok()) fail("write: " + (t.ok() ? w.status() : t.status()).ToString());
      (void)v.fs->Release(c->second);
      std::lock_guard<std::mutex> l(gen_mu);
      gen[i] = g;
    }
  };

  auto snapper = [&]() {
    std::mt19937_64 rng(psm_test::SeedOf(seed, 99));
    int n = 0;
    while (!stop) {
      std::string name = "s" + std::to_string(n++);
      {
        std::vector<std::unique_lock<std::mutex>> all;
        for (auto& m : file_mu) all.emplace_back(m);
        std::lock_guard<std::mutex> l(gen_mu);
        auto s = v.fs->CreateSnapshot(name);
        if (!s.ok()) {
          fail("snapshot: " + s.status().ToString());
          continue;
        }
        snap_gens[name] = gen;
      }
      if (rng() % kKeepEvery != 0) {
        // The newest snapshot goes while the live epoch stays: its reclaim
        // drops versions the writers replaced since, under the tombstones
        // they left at the live epoch, while they keep rewriting those very
        // records in place (the lost-write race of commit 89669a2).
        std::this_thread::sleep_for(std::chrono::microseconds(rng() % kHoldUs));
        {
          std::lock_guard<std::mutex> l(gen_mu);
          snap_gens.erase(name);
        }
        Status s = v.fs->DeleteSnapshot(name);
        if (!s.ok()) fail("delete newest: " + s.ToString());
      } else if (snap_gens.size() > 4) {
        std::string victim;
        {
          std::lock_guard<std::mutex> l(gen_mu);
          auto it = snap_gens.begin();
          std::advance(it, rng() % (snap_gens.size() - 1));
          victim = it->first;
          snap_gens.erase(it);
        }
        Status s = v.fs->DeleteSnapshot(victim);
        if (!s.ok()) fail("delete: " + s.ToString());
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
  };

  auto reader = [&](int id) {
    std::mt19937_64 rng(psm_test::SeedOf(seed, 100 + id));
    while (!stop) {
      std::string name;
      std::vector<int> gens;
      {
        std::lock_guard<std::mutex> l(gen_mu);
        if (snap_gens.empty()) continue;
        auto it = snap_gens.begin();
        std::advance(it, rng() % snap_gens.size());
        name = it->first;
        gens = it->second;
      }
      auto root = v.fs->Lookup(kSnapDirNode, name);
      if (!root.ok()) continue;  // deleted meanwhile: a normal answer
      int i = rng() % kFiles;
      auto f = v.fs->Lookup(root->node, "f" + std::to_string(i));
      if (!f.ok()) {
        // A lookup inside a snapshot deleted meanwhile answers ENOENT (or
        // ESTALE): normal if the snapshot is gone now.
        const bool deleted = !v.fs->Lookup(kSnapDirNode, name).ok();
        if (gens[i] >= 0 && !f.status().Is(Code::kStale) && !deleted) {
          fail(name + ": f" + std::to_string(i) + " missing (" + f.status().ToString() + ")");
        }
        continue;
      }
      auto fh = v.fs->OpenFile(f->node, O_RDONLY);
      if (!fh.ok()) continue;  // snapshot deleted between lookup and open
      std::this_thread::sleep_for(std::chrono::microseconds(rng() % 3000));
      std::string want = Content(i, gens[i]);
      std::string got(want.size() + 10, '\0');
      auto r = v.fs->Read(*fh, 0, got.size(), got.data());
      (void)v.fs->Release(*fh);
      if (!r.ok()) {
        fail("read in " + name + ": " + r.status().ToString());
        continue;
      }
      got.resize(*r);
      if (got != want) fail("snapshot " + name + " f" + std::to_string(i) + " has wrong bytes");
    }
  };

  auto rescanner = [&]() {
    while (!stop) {
      v.fs->StartScan("request");
      std::this_thread::sleep_for(std::chrono::milliseconds(15));
      (void)v.fs->ReclaimNow();
    }
  };

  std::vector<std::thread> ts;
  for (int w = 0; w < kWriters; ++w) ts.emplace_back(writer, w);
  std::thread sn(snapper), rd(reader, 0), rd2(reader, 1), rs(rescanner);
  for (auto& t : ts) t.join();
  stop = true;
  sn.join();
  rd.join();
  rd2.join();
  rs.join();
  CHECK(errors == 0);

  // The live tree holds the last generation of every file (reclaim once
  // dropped a live chunk record a writer had just rewritten: bytes lost,
  // blocks leaked).
  for (int i = 0; i < kFiles; ++i) {
    auto f = v.fs->Lookup(kRootIno, "f" + std::to_string(i));
    if (gen[i] < 0) {
      CHECK(f.status().Is(Code::kNotFound));
      continue;
    }
    REQUIRE(f.ok());
    CHECK_MESSAGE(v.ReadAll(f->node) == Content(i, gen[i]), ("live f" + std::to_string(i)));
  }

  // Every surviving snapshot matches its generations.
  for (const auto& [name, gens] : snap_gens) {
    NodeId root = v.Node(kSnapDirNode, name);
    for (int i = 0; i < kFiles; ++i) {
      auto f = v.fs->Lookup(root, "f" + std::to_string(i));
      if (gens[i] < 0) {
        CHECK(f.status().Is(Code::kNotFound));
        continue;
      }
      REQUIRE(f.ok());
      CHECK(v.ReadAll(f->node) == Content(i, gens[i]));
    }
  }
  CHECK(v.Fsck() == 0);
  // Delete everything: the volume's free space is a fresh one's.
  for (const auto& [name, gens] : snap_gens) REQUIRE(v.fs->DeleteSnapshot(name).ok());
  for (int i = 0; i < kFiles; ++i) (void)v.fs->Unlink(kRootIno, "f" + std::to_string(i));
  REQUIRE(v.fs->ReclaimNow().ok());
  v.fs->StartScan("request");
  CHECK(v.FreeBlocks() == free0);
  CHECK(v.Fsck() == 0);
  v.Remount();
  CHECK(v.FreeBlocks() == free0);
}

TEST_CASE("opens racing the unlink of their file's last name read it whole or are refused") {
  // An unlinked file no handle holds is destroyed by the unlink's own
  // commit even while the kernel references it (a ghost). Openers race the
  // unlink: each open either registers first (the file lives on as an
  // orphan and reads whole until its release) or is refused; none may get
  // a handle on the destroyed file. Afterwards nothing is leaked.
  CoreVolume v;
  v.count_lookups = true;
  v.Remount();
  const uint64_t free0 = v.FreeBlocks();
  const uint64_t files0 = v.fs->Stats().files;
  const unsigned seed = getenv("PSMFS_SEED") ? atoi(getenv("PSMFS_SEED")) : std::random_device{}();
  MESSAGE("seed " << seed);
  std::mt19937 rng(seed);
  const int rounds = 150 * Scale();
  std::atomic<int> opened{0}, refused{0}, bad{0};
  for (int r = 0; r < rounds; ++r) {
    const std::string name = "r" + std::to_string(r);
    const std::string want = Pattern(4096 * (1 + r % 5) + r % 7, r);
    const NodeId n = v.Put(kRootIno, name, want);  // one kernel reference
    std::atomic<uint64_t> refs{1};
    std::atomic<bool> stop{false};
    auto opener = [&] {
      while (!stop.load()) {
        if (v.fs->Lookup(kRootIno, name).ok()) refs.fetch_add(1);
        auto fh = v.fs->OpenFile(n, O_RDONLY);
        if (!fh.ok()) {
          if (!fh.status().Is(Code::kNotFound)) bad.fetch_add(1);
          refused.fetch_add(1);
          return;
        }
        opened.fetch_add(1);
        std::string got(want.size() + 10, '\0');
        auto k = v.fs->Read(*fh, 0, got.size(), got.data());
        if (!k.ok() || *k != want.size() || got.compare(0, want.size(), want) != 0) bad.fetch_add(1);
        if (!v.fs->Release(*fh).ok()) bad.fetch_add(1);
      }
    };
    std::thread a(opener), b(opener);
    std::this_thread::sleep_for(std::chrono::microseconds(rng() % 300));
    REQUIRE(v.fs->Unlink(kRootIno, name).ok());
    stop.store(true);
    a.join();
    b.join();
    v.fs->Forget(n, refs.load());
    CHECK(v.fs->GetAttr(n).status().Is(Code::kStale));
  }
  MESSAGE("opens " << opened.load() << ", refused " << refused.load());
  CHECK(bad.load() == 0);
  CHECK(v.fs->Stats().files == files0);
  CHECK(v.fs->Stats().kernel_refs == 0);
  CHECK(v.FreeBlocks() == free0);
  CHECK(v.Fsck() == 0);
}
