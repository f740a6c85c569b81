// Scrub against snapshot deletion, the product's historic crash in a new
// place (docs/integrity.md, DESIGN §9): while scrubs walk the image, a
// thread deletes and reclaims snapshots (also from inside the scrub's step,
// between its read of some blocks and its read of their checksums: the
// sync point Scrub::AfterBlockRead, followed there by writes that want the
// freed blocks at once, on a volume small enough that they get them unless
// the scrub holds them), a writer overwrites files, snapshots are created, the free-space scan is
// restarted and, during one scrub of each round, the volume is restored to
// a snapshot of the round's start. Every round:
//   * no crash, no hang (a watchdog bounds each scrub);
//   * no false report: nothing is damaged, so every scrub ends "finished"
//     with 0 damaged blocks and the volume counts no checksum error;
//   * no missed block: one block that a snapshot nobody deletes holds was
//     changed in the image before the round; every scrub of the round
//     reports it, with that snapshot's path;
//   * afterwards the live files read what the writer wrote and fsck is clean.
//
// The seed is random unless PSMFS_SEED is set; PSMFS_STRESS=N multiplies
// the rounds (default 6).
#include <doctest/doctest.h>
#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <fstream>
#include <mutex>
#include <random>
#include <thread>

#include "meta/sync_point.h"
#include "tests/common/image_block.h"
#include "tests/common/core_test_util.h"

using namespace psm;
using psm_test::CoreVolume;

namespace {

constexpr size_t kBs = 4096;
constexpr int kFiles = 6;
constexpr size_t kFileBlocks = 16;

std::string Blocks(uint64_t seed, size_t n) {
  return psm_test::Pattern(n * kBs, static_cast<uint32_t>(seed ^ (seed >> 32)));
}

}  // namespace

TEST_CASE("scrub races snapshot delete/reclaim, writes, restore and the scanner") {
  const uint64_t seed = psm_test::TestSeed("scrub_snapshot_race");
  std::mt19937_64 rng(seed);
  CoreVolume v(8ull << 20, 64 * 1024);  // 2048 blocks: freed ones are reused soon
  // The anchor: a snapshot no thread deletes holds a block only it sees,
  // which is damaged for every round.
  const std::string anchor = Blocks(999, 2);
  NodeId af = v.Put(kRootIno, "anchor", anchor);
  REQUIRE(v.fs->CreateSnapshot("keep").ok());
  REQUIRE(v.WriteAt(af, 0, Blocks(998, 2)).ok());
  std::vector<std::string> content(kFiles);
  std::vector<NodeId> files(kFiles);
  for (int i = 0; i < kFiles; ++i) {
    content[i] = Blocks(static_cast<uint64_t>(i), kFileBlocks);
    files[i] = v.Put(kRootIno, "f" + std::to_string(i), content[i]);
  }
  v.Put(kRootIno, "scratch", "");
  v.Remount();
  const std::string anchor_block = anchor.substr(kBs, kBs);
  psm::testutil::FlipInImage(v.dir + "/image", anchor_block, 9, 1);
  v.Remount();

  const int rounds = 6 * psm_test::StressScale();
  int snap_seq = 0;
  uint64_t deleted_in_step = 0;
  std::atomic<int> restores{0};
  for (int round = 0; round < rounds; ++round) {
    CAPTURE(round);
    for (int i = 0; i < kFiles; ++i) files[i] = v.Node(kRootIno, "f" + std::to_string(i));
    const NodeId scratch = v.Node(kRootIno, "scratch");
    std::mutex names_mu;
    std::vector<std::string> names;  // deletable snapshots
    for (int k = 0; k < 4; ++k) {
      const std::string n = "r" + std::to_string(snap_seq++);
      REQUIRE(v.fs->CreateSnapshot(n).ok());
      names.push_back(n);
      const int f = static_cast<int>(rng() % kFiles);
      const std::string piece = Blocks(rng(), 4);
      REQUIRE(v.WriteAt(files[f], (rng() % (kFileBlocks - 4)) * kBs, piece).ok());
    }
    for (int i = 0; i < kFiles; ++i) content[i] = v.ReadAll(files[i]);
    // The state the round's restore brings back (no thread deletes it).
    const std::string base = "base" + std::to_string(round);
    REQUIRE(v.fs->CreateSnapshot(base).ok());
    const std::vector<std::string> base_content = content;
    auto take_name = [&]() -> std::string {
      std::lock_guard<std::mutex> l(names_mu);
      if (names.empty()) return {};
      std::string n = names.back();
      names.pop_back();
      return n;
    };
    // Inside the scrub's step, now and then: a snapshot deleted and
    // reclaimed, and a write that wants the freed space.
    std::atomic<int> hits{0};
    std::atomic<bool> restore_now{false};
    std::mutex content_mu;
    SyncPoint::SetCallback("Scrub::AfterBlockRead", [&] {
      if (restore_now.exchange(false)) {
        // The second scrub of a round: inside its first step, the volume
        // is restored to the round's base snapshot (which restarts the
        // free-space scan). The writer is held off for the restore itself,
        // so the model knows what each file holds after it.
        std::lock_guard<std::mutex> l(content_mu);
        auto r = v.fs->Restore(base);
        CHECK_MESSAGE(r.ok(), r.status().ToString());
        if (r.ok()) content = base_content;
        ++restores;
        return;
      }
      if (hits.fetch_add(1) % 3 != 0) return;
      const std::string n = take_name();
      if (n.empty()) return;
      if (v.fs->DeleteSnapshot(n).ok()) {
        (void)v.fs->ReclaimNow();
        (void)v.fs->SyncAll();
        ++deleted_in_step;
        // Rewrite a scratch file: every write takes new blocks.
        const std::string junk = Blocks(hits.load(), 64);
        (void)v.WriteAt(scratch, 0, junk);
        (void)v.fs->SyncAll();
        (void)v.WriteAt(scratch, 0, junk);
      }
    });
    SyncPoint::Enable();
    std::atomic<bool> stop{false};
    std::thread writer([&, s = rng()] {
      std::mt19937_64 g(s);
      while (!stop) {
        const int f = static_cast<int>(g() % kFiles);
        const uint64_t off = (g() % (kFileBlocks - 2)) * kBs;
        const std::string piece = Blocks(g(), 2);
        std::lock_guard<std::mutex> l(content_mu);
        if (v.WriteAt(files[f], off, piece).ok()) content[f].replace(off, piece.size(), piece);
      }
    });
    std::thread manager([&, s = rng()] {
      std::mt19937_64 g(s);
      while (!stop) {
        switch (g() % 4) {
          case 0: {
            const std::string n = take_name();
            if (!n.empty()) (void)v.fs->DeleteSnapshot(n);
            break;
          }
          case 1: {
            const std::string n = "m" + std::to_string(g() % 1000000);
            if (v.fs->CreateSnapshot(n).ok()) {
              std::lock_guard<std::mutex> l(names_mu);
              names.push_back(n);
            }
            break;
          }
          case 2: v.fs->StartScan("test"); break;
          default: (void)v.fs->ReclaimNow(); break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
      }
    });
    // (CHECKs only while the threads run: a REQUIRE would unwind past
    // joinable threads.)
    for (int k = 0; k < 3; ++k) {
      restore_now = k == 1;
      const Status st = v.fs->StartScrub(0);
      CHECK_MESSAGE(st.ok(), st.ToString());
      if (!st.ok()) break;
      const bool ended = v.fs->WaitScrub(300);
      CHECK_MESSAGE(ended, "scrub did not end within 300 s");
      if (!ended) break;
      const ScrubStatus s = v.fs->GetScrubStatus();
      CHECK(s.state == "finished");
      // Exactly the anchor: nothing else is damaged, and it is not missed.
      CHECK(s.damaged_blocks == 1);
      std::string found;
      for (const ScrubDamage& d : s.damage) {
        found += "block " + std::to_string(d.block) + ":";
        for (const std::string& p : d.paths) found += " " + p;
        found += "; ";
      }
      CHECK_MESSAGE(s.damage.size() == 1, found);
      if (s.damage.size() == 1) {
        CHECK_MESSAGE((s.damage[0].paths ==
                        std::vector<std::string>{".snapshots/keep/anchor (offset 4096)"}),
                      found);
      }
    }
    stop = true;
    writer.join();
    manager.join();
    SyncPoint::Disable();
    SyncPoint::ClearAll();
    // The scan and reclaim settle, then the model is checked.
    REQUIRE(v.fs->ReclaimNow().ok());
    CHECK(v.fs->WaitScan(120));
    for (int i = 0; i < kFiles; ++i) CHECK(v.ReadAll(files[i]) == content[i]);
    // Every error counted was a scrub's report of the anchor (3 scrubs).
    CHECK(v.fs->Stats().checksum_errors == 3 * static_cast<uint64_t>(round + 1));
  }
  MESSAGE("snapshots deleted inside a scrub step: " << deleted_in_step);
  CHECK(restores == rounds);
  CHECK(deleted_in_step > 0);
  std::string damaged = anchor_block;
  damaged[9] = static_cast<char>(damaged[9] ^ 1);
  psm::testutil::FlipInImage(v.dir + "/image", damaged, 9, 1);  // back
  CHECK(v.Fsck() == 0);
}
