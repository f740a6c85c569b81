// Restore racing everything else on one volume, through the core, under
// ThreadSanitizer in CI (issue #5): restores to two snapshots alternate
// while writers change the live tree, snapshots are created and deleted
// (their reclaim runs), the free-space scanner restarts, and readers walk a
// snapshot. Every call returns success or a normal error; nothing hangs
// (a watchdog fails the test); at the end a quiet restore gives exactly the
// snapshot's tree, fsck is clean and no block leaked.
//
// The seed is random unless PSMFS_SEED is set (printed at the start).
#include <atomic>
#include <map>
#include <mutex>
#include <chrono>
#include <random>
#include <thread>
#include <vector>

#include "tests/common/core_test_util.h"

using namespace psm;
using psm_test::CoreVolume;
using psm_test::Pattern;

namespace {

std::string ReadNode(FileSystem& fs, NodeId n) {
  auto fh = fs.OpenFile(n, O_RDONLY);
  if (!fh.ok()) return "<" + fh.status().ToString() + ">";
  std::string out(1 << 20, '\0');
  auto r = fs.Read(*fh, 0, out.size(), out.data());
  (void)fs.Release(*fh);
  if (!r.ok()) return "<" + r.status().ToString() + ">";
  out.resize(*r);
  return out;
}

// name -> content of every file in directory `dir`.
std::map<std::string, std::string> Contents(FileSystem& fs, NodeId dir) {
  std::map<std::string, std::string> out;
  auto dh = fs.OpenDir(dir);
  REQUIRE(dh.ok());
  std::vector<std::string> names;
  REQUIRE(fs.ReadDir(*dh, 0, [&](const DirEntryOut& e) {
               if (e.name != "." && e.name != ".." && e.name != kSnapDirName)
                 names.emplace_back(e.name);
               return true;
             }).ok());
  (void)fs.ReleaseDir(*dh);
  for (const auto& n : names) {
    auto e = fs.Lookup(dir, n);
    REQUIRE(e.ok());
    out[n] = S_ISREG(e->st.st_mode) ? ReadNode(fs, e->node) : "<dir>";
  }
  return out;
}

bool Expected(const Status& s) {
  // Names vanish and reappear under a restore; snapshots under a delete.
  return s.ok() || s.Is(Code::kNotFound) || s.Is(Code::kExists) || s.Is(Code::kNotEmpty) ||
         s.Is(Code::kStale) || s.Is(Code::kInvalid) || s.Is(Code::kNotDir) || s.Is(Code::kIsDir);
}

}  // namespace

TEST_CASE("restore races writers, snapshot create/delete, reclaim, scanner and readers") {
  const uint64_t seed = psm_test::TestSeed("restore_race_test");
  const int scale = psm_test::StressScale();
  CoreVolume v(256ull << 20);
  const uint64_t fresh_free = v.FreeBlocks();
  NodeId d = v.Mkdir(kRootIno, "d");
  for (int i = 0; i < 40; ++i) v.Put(d, "f" + std::to_string(i), Pattern(20000 + i, i));
  REQUIRE(v.fs->CreateSnapshot("base").ok());
  const auto base = Contents(*v.fs, d);
  for (int i = 0; i < 40; i += 2) REQUIRE(v.WriteAt(v.Node(d, "f" + std::to_string(i)), 0, "B").ok());
  REQUIRE(v.fs->CreateSnapshot("other").ok());

  std::atomic<bool> stop{false};
  std::atomic<uint64_t> restores{0}, ops{0}, snaps{0};
  std::atomic<int> unexpected{0};
  std::mutex msg_mu;
  std::string first_unexpected;
  auto note = [&](const std::string& who, const Status& s) {
    if (Expected(s)) return;
    if (unexpected.fetch_add(1) == 0) {
      std::lock_guard<std::mutex> l(msg_mu);
      first_unexpected = who + ": " + s.ToString();
    }
  };
  FileSystem& fs = *v.fs;
  std::vector<std::thread> th;
  for (int w = 0; w < 2; ++w) {
    th.emplace_back([&, w] {
      std::mt19937_64 rng(psm_test::SeedOf(seed, w + 1));
      uint32_t seq = 0;
      while (!stop.load()) {
        const std::string name = "f" + std::to_string(rng() % 50);
        auto dir = fs.Lookup(kRootIno, "d");
        if (!dir.ok()) continue;
        switch (rng() % 4) {
          case 0:
          case 1: {
            auto e = fs.Lookup(dir->node, name);
            Result<uint64_t> fh = e.ok() ? fs.OpenFile(e->node, O_RDWR) : Result<uint64_t>(Status::NotFound());
            if (!e.ok()) {
              auto c = fs.Create(dir->node, name, 0644, O_RDWR, {});
              note("create", c.status());
              if (c.ok()) fh = c->second;
            }
            if (fh.ok()) {
              const std::string data = Pattern(1000 + rng() % 60000, ++seq + 1000 * w);
              note("write", fs.Write(*fh, rng() % 100000, data.data(), data.size()).status());
              note("release", fs.Release(*fh));
            } else {
              note("open", fh.status());
            }
            break;
          }
          case 2:
            note("unlink", fs.Unlink(dir->node, name));
            break;
          case 3:
            note("rename", fs.Rename(dir->node, name, dir->node, "f" + std::to_string(rng() % 50), 0));
            break;
        }
        ++ops;
      }
    });
  }
  th.emplace_back([&] {  // snapshot churn: create and delete (reclaim runs)
    int n = 0;
    while (!stop.load()) {
      const std::string name = "churn" + std::to_string(n++);
      note("snapshot create", fs.CreateSnapshot(name).status());
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
      note("snapshot delete", fs.DeleteSnapshot(name));
      ++snaps;
    }
  });
  th.emplace_back([&] {  // the scanner, restarted over and over
    while (!stop.load()) {
      fs.StartScan("race");
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  });
  th.emplace_back([&] {  // a backup reader walking a snapshot
    while (!stop.load()) {
      auto root = fs.Lookup(kSnapDirNode, "base");
      if (!root.ok()) continue;
      auto sd = fs.Lookup(root->node, "d");
      if (!sd.ok()) continue;
      auto e = fs.Lookup(sd->node, "f7");
      if (e.ok() && ReadNode(fs, e->node) != base.at("f7")) {
        note("snapshot read", Status::Corruption("snapshot file changed"));
      }
    }
  });
  th.emplace_back([&] {  // restores, alternating targets
    int k = 0;
    while (!stop.load()) {
      ++k;
      auto r = fs.Restore(k % 2 ? "other" : "base", /*dry_run=*/k % 5 == 0);
      note("restore", r.status());
      ++restores;
    }
  });

  const auto t0 = std::chrono::steady_clock::now();
  const auto run = std::chrono::milliseconds(1500 * scale);
  while (std::chrono::steady_clock::now() - t0 < run) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  stop.store(true);
  // Watchdog: every thread must notice the stop within a generous bound.
  std::atomic<bool> joined{false};
  std::thread dog([&] {
    for (int i = 0; i < 1200 && !joined.load(); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    if (!joined.load()) {
      fprintf(stderr, "restore race: threads did not stop within 120 s (a hang)\n");
      std::abort();
    }
  });
  for (auto& t : th) t.join();
  joined.store(true);
  dog.join();
  MESSAGE(restores.load() << " restores, " << ops.load() << " live operations, " << snaps.load()
                          << " snapshot create+delete pairs");
  CHECK_MESSAGE(unexpected.load() == 0, first_unexpected);
  CHECK(restores.load() > 2);

  // Quiet now: a restore gives exactly the snapshot's files.
  REQUIRE(v.fs->Restore("base").ok());
  CHECK(Contents(*v.fs, v.Node(kRootIno, "d")) == base);
  CHECK(v.Fsck() == 0);
  // And all the space comes back.
  for (const auto& s : v.fs->ListSnapshots(false)) {
    if (!s.deleting) REQUIRE(v.fs->DeleteSnapshot(s.name).ok());
  }
  for (const auto& [n, c] : base) REQUIRE(v.fs->Unlink(v.Node(kRootIno, "d"), n).ok());
  REQUIRE(v.fs->RmDir(kRootIno, "d").ok());
  REQUIRE(v.fs->ReclaimNow().ok());
  CHECK(v.FreeBlocks() == fresh_free);
}
