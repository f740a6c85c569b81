// The historic crash, provoked through the real filesystem core: a volume
// with many snapshots and a fragmented image is mounted again and again; while
// its free-space scan runs (small steps), snapshots are deleted and
// reclaimed so that their ranges are freed just below, straddling and above
// the scan cursor, and inside the very piece of `alloc` the scanner is reading
// (the reclaim is released from the scanner's locked step and reaches its
// commit before the scanner reads); meanwhile a writer rewrites, truncates and
// unlinks files and a thread restarts the scan. After every round, with
// everything quiet:
//   * the free index equals the one a fresh allocator builds offline from
//     the same `alloc` (no leaked block, no block handed out twice);
//   * its total equals statfs's free count (the exact used-blocks counter);
//   * every surviving snapshot reads exactly what it held; the live files
//     what the writer wrote;
//   * fsck is clean (no block claimed twice, alloc == references).
//
// The seed is random unless PSMFS_SEED is set (printed at the start).
// PSMFS_STRESS=N multiplies the rounds (default 1: at least 6 rounds, and
// up to 24 until every race kind the checks require was seen; 1.5 to 4
// minutes under ThreadSanitizer on two cores, depending on the seed).
#include <doctest/doctest.h>
#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <random>
#include <thread>

#include "fs/space/allocator.h"
#include "fs/space/scanner.h"
#include "meta/store.h"
#include "meta/sync_point.h"
#include "tests/common/core_test_util.h"

using namespace psm;
using psm_test::Pattern;

namespace {

int Scale() {
  const char* s = getenv("PSMFS_STRESS");
  int v = s ? atoi(s) : 1;
  return v < 1 ? 1 : v;
}

constexpr int kFiles = 16;
constexpr uint64_t kBs = 4096;
constexpr int kPieceBlocks = 4;
constexpr int kPieces = 12;  // per file: 48 blocks

std::string Piece(int file, int piece, int gen) { return Pattern(kPieceBlocks * kBs, file * 7919 + piece * 131 + gen * 17 + 1); }

struct Volume {
  std::string dir;
  std::unique_ptr<FileSystem> fs;
  Credentials cred;

  Volume() {
    char t[] = "/tmp/psm-scanrace-XXXXXX";
    dir = mkdtemp(t);
    FormatOptions fo;
    fo.size_bytes = 48ull << 20;
    fo.chunk_bytes = 64 * 1024;  // many chunk records
    REQUIRE(Format(dir, fo).ok());
  }
  ~Volume() {
    if (fs) (void)fs->Close();
    fs.reset();
    std::filesystem::remove_all(dir);
  }
  void Open() {
    MountOptions o;
    o.commit_interval_ms = 20;
    o.scan_records_per_step = 8;  // many steps: many chances to interleave
    auto r = FileSystem::Open(dir, o);
    REQUIRE_MESSAGE(r.ok(), r.status().ToString());
    fs = std::move(r).value();
  }
  void Close() {
    REQUIRE(fs->Close().ok());
    fs.reset();
  }
  NodeId Node(NodeId parent, const std::string& name) {
    auto e = fs->Lookup(parent, name);
    REQUIRE_MESSAGE(e.ok(), name << ": " << e.status().ToString());
    return e->node;
  }
  Status WriteAt(NodeId node, uint64_t off, const std::string& data) {
    auto fh = fs->OpenFile(node, O_RDWR);
    if (!fh.ok()) return fh.status();
    auto w = fs->Write(*fh, off, data.data(), data.size());
    (void)fs->Release(*fh);
    return w.ok() ? Status::Ok() : w.status();
  }
  std::string Read(NodeId node, uint64_t off, size_t n) {
    auto fh = fs->OpenFile(node, O_RDONLY);
    REQUIRE_MESSAGE(fh.ok(), fh.status().ToString());
    std::string out(n, '\0');
    auto r = fs->Read(*fh, off, n, out.data());
    REQUIRE(r.ok());
    out.resize(*r);
    REQUIRE(fs->Release(*fh).ok());
    return out;
  }
};

// Which snapshot alone holds which physical ranges: read offline from
// `alloc` (dead records) and the catalog.
std::multimap<BlockNo, std::pair<uint64_t, std::string>> ExclusiveRanges(const std::string& dir) {
  StoreOptions so;
  so.read_only = true;
  auto st = Store::Open(dir + "/meta", so);
  REQUIRE(st.ok());
  std::map<Epoch, std::string> snaps;
  {
    auto it = st.value()->NewIterator(Cf::kSnapshots);
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      SnapshotRec r;
      REQUIRE(DecodeSnapshot(std::string_view(it->value().data(), it->value().size()), &r).ok());
      if (r.state == SnapState::kActive) snaps[r.epoch] = r.name;
    }
  }
  std::multimap<BlockNo, std::pair<uint64_t, std::string>> out;
  auto it = st.value()->NewIterator(Cf::kAlloc);
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    AllocRec a;
    REQUIRE(DecodeAlloc(std::string_view(it->value().data(), it->value().size()), &a).ok());
    if (!a.death) continue;
    auto lo = snaps.lower_bound(a.birth);
    auto hi = snaps.lower_bound(a.death);
    if (lo != snaps.end() && std::next(lo) == hi) {
      out.emplace(AllocKeyBlock(std::string_view(it->key().data(), it->key().size())),
                  std::make_pair(a.length, lo->second));
    }
  }
  return out;
}

std::vector<std::pair<uint64_t, uint64_t>> OfflineFree(const std::string& dir, uint64_t blocks) {
  StoreOptions so;
  so.read_only = true;
  auto st = Store::Open(dir + "/meta", so);
  REQUIRE(st.ok());
  Allocator a(1, blocks);
  Scanner sc(st.value().get(), &a, ScannerOptions{4096});
  sc.Start("offline");
  REQUIRE(sc.WaitIdle(120));
  std::vector<std::pair<uint64_t, uint64_t>> out;
  for (const Range& r : a.FreeRanges()) out.emplace_back(r.start, r.len);
  return out;
}

}  // namespace

TEST_CASE("scan vs snapshot deletion, writes and rescans through the core") {
  const uint64_t seed = psm_test::TestSeed("snapshot_scan_race_test");
  Volume v;
  v.Open();
  std::mt19937_64 rng(psm_test::SeedOf(seed, 0));
  // Fragmented image: the files' pieces are allocated interleaved.
  std::vector<NodeId> files;
  for (int f = 0; f < kFiles; ++f) {
    auto c = v.fs->Create(kRootIno, "f" + std::to_string(f), 0644, O_RDWR, v.cred);
    REQUIRE(c.ok());
    REQUIRE(v.fs->Release(c->second).ok());
    files.push_back(c->first.node);
  }
  std::vector<std::vector<int>> gen(kFiles, std::vector<int>(kPieces, 0));
  for (int p = 0; p < kPieces; ++p) {
    for (int f = 0; f < kFiles; ++f) REQUIRE(v.WriteAt(files[f], p * kPieceBlocks * kBs, Piece(f, p, 0)).ok());
  }
  std::map<std::string, std::vector<std::vector<int>>> snap_gens;  // name -> gens at creation
  int snap_no = 0;
  // Snapshots, each followed by rewrites: the old pieces become exclusive to
  // the snapshot just taken, scattered over the image.
  auto add_snapshots = [&](int n) {
    for (int i = 0; i < n; ++i) {
      std::string name = "s" + std::to_string(snap_no++);
      REQUIRE(v.fs->CreateSnapshot(name).ok());
      snap_gens[name] = gen;
      for (int k = 0; k < 6; ++k) {
        int f = rng() % kFiles, p = rng() % kPieces;
        ++gen[f][p];
        REQUIRE(v.WriteAt(files[f], p * kPieceBlocks * kBs, Piece(f, p, gen[f][p])).ok());
      }
    }
  };
  add_snapshots(12);
  struct statvfs sv;
  REQUIRE(v.fs->StatFs(&sv).ok());
  const uint64_t blocks = sv.f_blocks + 1;
  v.Close();

  std::map<std::string, std::string> live;
  std::atomic<int> below{0}, straddle{0}, above{0}, in_step{0}, restarts{0}, writes{0};
  // At least 6 rounds (scaled); with a random seed a few rounds may not
  // produce every kind of race the checks below require, so it goes on,
  // up to four times as long, until each kind was seen.
  const int min_rounds = 6 * Scale();
  int rounds = 0;
  for (int round = 0; round < 4 * min_rounds; ++round, rounds = round) {
    if (round >= min_rounds && below > 0 && straddle + above > 0 && in_step > 0) break;
    auto excl = ExclusiveRanges(v.dir);
    std::mutex mu;  // guards excl, snap_gens during the round
    v.Open();
    std::atomic<uint64_t> cursor{0};
    std::atomic<bool> stop{false};
    std::atomic<int> step_no{0};
    std::atomic<int> next_kind{round % 3};
    std::mt19937_64 rrng(psm_test::SeedOf(seed, 1000 + round));

    // Deletes the snapshot and reclaims it now. Any thread, no lock held.
    auto delete_now = [&](const std::string& name) {
      Status s = v.fs->DeleteSnapshot(name);
      if (s.Is(Code::kNotFound)) return;  // someone else did
      CHECK_MESSAGE(s.ok(), s.ToString());
      CHECK(v.fs->ReclaimNow().ok());
    };
    // Picks a snapshot by where its exclusive ranges lie relative to the
    // cursor c (steps end at record starts): 0 all below it, 1 on both
    // sides, 2 at or above it (the nearest such).
    auto pick = [&](BlockNo c, int kind) -> std::string {
      std::lock_guard<std::mutex> l(mu);
      std::map<std::string, std::pair<BlockNo, BlockNo>> span;  // min start, max end
      for (const auto& [start, val] : excl) {
        if (!snap_gens.count(val.second)) continue;
        auto [it, fresh] = span.emplace(val.second, std::make_pair(start, start + val.first));
        if (!fresh) {
          it->second.first = std::min(it->second.first, start);
          it->second.second = std::max(it->second.second, start + val.first);
        }
      }
      std::string best;
      uint64_t best_d = ~uint64_t{0};
      for (const auto& [name, sp] : span) {
        uint64_t d;
        if (kind == 0 && sp.second <= c) {
          d = c - sp.second;
        } else if (kind == 1 && sp.first < c && c < sp.second) {
          d = 0;
        } else if (kind == 2 && sp.first >= c) {
          d = sp.first - c;
        } else {
          continue;
        }
        if (d < best_d) {
          best_d = d;
          best = name;
        }
      }
      if (!best.empty()) snap_gens.erase(best);
      return best;
    };
    // Runs fn on the worker and waits for it up to 2 s: a scanner paused in
    // a callback must not wait for an operation that waits for the scanner
    // (an allocation holding the volume lock shared while the index is
    // empty); after the timeout it goes on and the job finishes later.
    struct Job {
      std::function<void()> fn;
      bool done = false;
    };
    std::mutex wmu;
    std::condition_variable wcv;
    std::deque<std::shared_ptr<Job>> jobs;
    std::thread worker([&] {
      std::unique_lock<std::mutex> l(wmu);
      while (true) {
        wcv.wait(l, [&] { return stop || !jobs.empty(); });
        if (jobs.empty()) return;
        auto j = jobs.front();
        jobs.pop_front();
        l.unlock();
        j->fn();
        l.lock();
        j->done = true;
        wcv.notify_all();
      }
    });
    auto run_bounded = [&](std::function<void()> fn) {
      auto j = std::make_shared<Job>();
      j->fn = std::move(fn);
      std::unique_lock<std::mutex> l(wmu);
      jobs.push_back(j);
      wcv.notify_all();
      return wcv.wait_for(l, std::chrono::seconds(2), [&] { return j->done; });
    };

    // A reclaim released from inside the scanner's locked step.
    std::mutex hmu;
    std::condition_variable hcv;
    std::string h_job;  // "armed:NAME" (prepared), "go" (released)
    uint64_t h_fh = 0;  // the handle holding it back
    bool h_reached = false, h_busy = false;
    std::atomic<bool> armed{false};
    SyncPoint::SetCallback("Reclaim:BeforeBatchCommit", [&] {
      std::lock_guard<std::mutex> l(hmu);
      h_reached = true;
      hcv.notify_all();
    });
    std::thread helper([&] {
      std::unique_lock<std::mutex> l(hmu);
      while (!stop) {
        hcv.wait_for(l, std::chrono::milliseconds(20), [&] { return stop || h_job == "go"; });
        if (h_job != "go") continue;
        uint64_t fh = h_fh;
        h_job.clear();
        l.unlock();
        (void)v.fs->Release(fh);
        CHECK(v.fs->ReclaimNow().ok());
        l.lock();
        h_busy = false;
      }
    });
    // Prepares one "in the step" deletion: the snapshot nearest at/above the
    // cursor is deleted while a handle inside it holds its reclaim back.
    auto prepare_in_step = [&](BlockNo c) {
      {
        // Only this worker arms, but a job that outlived run_bounded's wait
        // may run after the next one was queued: never arm twice (the first
        // handle would leak and hold its snapshot's reclaim back).
        std::lock_guard<std::mutex> l(hmu);
        if (h_busy) return;
      }
      std::string name = pick(c, 2);
      if (name.empty()) return;
      auto root = v.fs->Lookup(kSnapDirNode, name);
      REQUIRE(root.ok());
      auto f0 = v.fs->Lookup(root->node, "f0");
      REQUIRE(f0.ok());
      auto fh = v.fs->OpenFile(f0->node, O_RDONLY);
      REQUIRE(fh.ok());
      REQUIRE(v.fs->DeleteSnapshot(name).ok());
      std::lock_guard<std::mutex> l(hmu);
      h_busy = true;
      h_fh = *fh;
      h_reached = false;
      h_job = "armed:" + name;
      armed = true;
    };
    SyncPoint::SetCallback("Scanner::StepDone", [&] {
      const BlockNo c = v.fs->GetScanStatus().cursor;
      cursor = c;
      const int n = step_no++;
      if (n % 3 == 1) {
        // Kinds take turns; a kind stays until it found a snapshot.
        const int kind = next_kind % 3;
        run_bounded([&, c, kind] {
          std::string name = pick(c, kind);
          if (name.empty()) return;
          delete_now(name);
          (kind == 0 ? below : kind == 1 ? straddle : above)++;
          next_kind++;
        });
      } else if (n % 3 == 2 && !armed) {
        bool busy;
        {
          std::lock_guard<std::mutex> l(hmu);
          busy = h_busy;
        }
        if (!busy) run_bounded([&, c] { prepare_in_step(c); });
      }
    });
    // In the locked step: release the armed reclaim and let it reach its
    // commit (its dead-index walk needs no allocator lock) before the read.
    SyncPoint::SetCallback("Allocator::ScanStep:Locked", [&] {
      if (!armed) return;
      std::unique_lock<std::mutex> l(hmu);
      if (h_job.rfind("armed:", 0) != 0) return;
      h_job = "go";
      armed = false;
      hcv.notify_all();
      if (hcv.wait_for(l, std::chrono::milliseconds(500), [&] { return h_reached; })) in_step++;
    });
    SyncPoint::Enable();

    // Writer: rewrites, truncates and unlinks its own files (`live`, kept
    // across rounds, is their model).
    std::thread writer([&] {
      std::mt19937_64 wr(psm_test::SeedOf(seed, 2000 + round));
      while (!stop) {
        std::string name = "w" + std::to_string(wr() % 4);
        int op = wr() % 4;
        if (op == 3 && live.count(name)) {
          CHECK(v.fs->Unlink(kRootIno, name).ok());
          live.erase(name);
        } else {
          auto c = v.fs->Create(kRootIno, name, 0644, O_RDWR, v.cred);
          REQUIRE(c.ok());
          std::string data = Pattern(kBs * (1 + wr() % 24), wr());
          if (op == 2) {
            struct stat st {};
            st.st_size = 0;
            CHECK(v.fs->SetAttr(c->first.node, st, kSetSize, v.cred).ok());
            live[name].clear();
          }
          std::string& cur = live[name];
          auto w = v.fs->Write(c->second, 0, data.data(), data.size());
          CHECK(w.ok());
          if (cur.size() < data.size()) cur.resize(data.size());
          cur.replace(0, data.size(), data);
          (void)v.fs->Release(c->second);
          writes++;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
    });
    std::thread rescanner([&] {
      for (int i = 0; i < 3 && !stop; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(40 + rrng() % 40));
        v.fs->StartScan("request");
        restarts++;
      }
    });
    // Let the scans run to the end (restarts included).
    rescanner.join();
    CHECK(v.fs->WaitScan(300));
    stop = true;
    writer.join();
    helper.join();
    {
      std::lock_guard<std::mutex> l(wmu);
      wcv.notify_all();
    }
    worker.join();
    SyncPoint::Disable();
    SyncPoint::ClearAll();
    {
      std::lock_guard<std::mutex> l(hmu);
      // Prepared or released too late for the helper: give the handle back.
      if (h_busy && !h_job.empty()) (void)v.fs->Release(h_fh);
    }
    // The reclaim thread may still be finishing one that a release kicked.
    for (int i = 0; i < 1000 && v.fs->Stats().pending_reclaim > 0; ++i) {
      REQUIRE(v.fs->ReclaimNow().ok());
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    {
      VolumeStats st = v.fs->Stats();
      CHECK_MESSAGE(st.pending_reclaim == 0, "round " << round << " h_busy " << h_busy << " h_job '"
                                                  << h_job << "' reclaiming '" << st.reclaiming
                                                  << "'");
    }
    REQUIRE(v.fs->SyncAll().ok());

    // The index against statfs, the snapshots and live files against models.
    auto index = v.fs->FreeExtents();
    uint64_t idx_blocks = 0;
    for (auto [s, n] : index) idx_blocks += n;
    REQUIRE(v.fs->StatFs(&sv).ok());
    CHECK_MESSAGE(idx_blocks == sv.f_bfree, "round " << round);
    for (const auto& [name, g] : snap_gens) {
      NodeId root = v.Node(kSnapDirNode, name);
      for (int f = 0; f < kFiles; f += 3) {
        NodeId n = v.Node(root, "f" + std::to_string(f));
        for (int p = 0; p < kPieces; p += 5) {
          CHECK_MESSAGE(v.Read(n, p * kPieceBlocks * kBs, kPieceBlocks * kBs) == Piece(f, p, g[f][p]),
                        name << " f" << f << " piece " << p);
        }
      }
    }
    for (const auto& [name, data] : live) {
      CHECK(v.Read(v.Node(kRootIno, name), 0, data.size() + 1) == data);
    }
    // New snapshots for the next rounds.
    if (snap_gens.size() < 8) add_snapshots(6);
    REQUIRE(v.fs->SyncAll().ok());
    index = v.fs->FreeExtents();
    v.Close();
    CHECK_MESSAGE(OfflineFree(v.dir, blocks) == index, "round " << round);
    std::string rep;
    auto fr = Fsck(v.dir, {}, &rep);
    REQUIRE(fr.ok());
    CHECK_MESSAGE(*fr == 0, rep);
  }
  MESSAGE(rounds << " rounds: deletions with exclusive ranges below " << below.load()
                 << " / straddling " << straddle.load() << " / above " << above.load()
                 << " the cursor, " << in_step.load() << " reclaims committed from inside a locked scan step, "
                 << restarts.load() << " rescans, " << writes.load() << " writes");
  CHECK(below > 0);
  CHECK(straddle + above > 0);
  CHECK(in_step > 0);
}
