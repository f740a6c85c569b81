// Backups of many volumes at once, in one process, through the client
// library and the real control servers (no FUSE) — the hang this project
// exists to make impossible (two stores backed up at once, one lock name):
//
//   * a backup thread keeps changing volume A, snapshotting it and sending
//     each snapshot (incremental from the one before) through its Client;
//     a second sender streams random A snapshots in full at the same time;
//   * one thread per volume B, C, D receives A's streams through that
//     volume's Client, restores an older received snapshot now and then,
//     and receives the next stream with --force;
//   * A is changed by the model-keeping driver (tests/common/tree_model.h):
//     every change is checked against the model, and every received
//     snapshot (and a restored live tree) is compared with the model of A
//     taken at that snapshot (paths, modes, owners, sizes, times, contents,
//     holes, xattrs, hard links) — not with what A shows;
//   * a watchdog fails the test if no thread makes progress for a generous
//     while (a stall is a hang, whatever its cause).
//
// And backup readers: threads walk and read A's `.snapshots/*` while other
// threads create and delete snapshots and restart the scanner; every read
// returns the bytes the snapshot held or a normal error (a name in a
// vanished snapshot: kNotFound; an open of a node whose snapshot vanished
// after its lookup: kStale); an open file keeps reading after its snapshot
// is deleted.
//
// The seed is random unless PSMFS_SEED is set (printed at the start).
// Runs under ThreadSanitizer in `make test`; PSMFS_STRESS=N scales the
// rounds.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <filesystem>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include "cli/client.h"
#include "fs/control/control_server.h"
#include "tests/common/core_test_util.h"
#include "tests/common/tree_model.h"

using namespace psm;
using namespace psm_test;

namespace {

struct RuntimeDir {
  std::string dir;
  RuntimeDir() {
    char t[] = "/tmp/psm-srt-XXXXXX";
    dir = ::mkdtemp(t);
    ::setenv("PSMFS_RUNTIME_DIR", dir.c_str(), 1);
  }
  ~RuntimeDir() {
    ::unsetenv("PSMFS_RUNTIME_DIR");
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
};

// Fails the test (abort with a message) when no progress was noted for
// `limit` seconds.
class Watchdog {
 public:
  explicit Watchdog(int limit) : limit_(limit), thread_([this] { Loop(); }) {}
  ~Watchdog() {
    {
      std::lock_guard<std::mutex> l(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  void Tick() { ticks_.fetch_add(1, std::memory_order_relaxed); }

 private:
  void Loop() {
    uint64_t last = ticks_.load();
    auto since = std::chrono::steady_clock::now();
    std::unique_lock<std::mutex> l(mu_);
    while (!stop_) {
      cv_.wait_for(l, std::chrono::seconds(1));
      const uint64_t now = ticks_.load();
      if (now != last) {
        last = now;
        since = std::chrono::steady_clock::now();
      } else if (std::chrono::steady_clock::now() - since > std::chrono::seconds(limit_)) {
        std::fprintf(stderr, "watchdog: no progress for %d s: a stall (hang) in the streams\n",
                     limit_);
        std::abort();
      }
    }
  }
  int limit_;
  std::atomic<uint64_t> ticks_{0};
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

std::unique_ptr<Client> MustConnect(const std::string& path) {
  auto c = Client::Connect(path);
  REQUIRE_MESSAGE(c.ok(), c.status().ToString());
  return std::move(c).value();
}

struct Stream {
  std::string name, base;
  std::string bytes;
  TreeModel m;  // the model of A when the snapshot was taken
};

// A queue of A's streams, read by each target at its own pace.
class Feed {
 public:
  void Publish(Stream s) {
    {
      std::lock_guard<std::mutex> l(mu_);
      all_.push_back(std::make_shared<Stream>(std::move(s)));
    }
    cv_.notify_all();
  }
  void Close() {
    {
      std::lock_guard<std::mutex> l(mu_);
      closed_ = true;
    }
    cv_.notify_all();
  }
  // The i-th stream, or null once closed and exhausted.
  std::shared_ptr<Stream> Get(size_t i) {
    std::unique_lock<std::mutex> l(mu_);
    cv_.wait(l, [&] { return i < all_.size() || closed_; });
    return i < all_.size() ? all_[i] : nullptr;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::shared_ptr<Stream>> all_;
  bool closed_ = false;
};

Result<ReceiveResult> ReceiveVia(Client& c, const std::string& bytes, bool force) {
  size_t pos = 0;
  return c.Receive("", force, [&](char* buf, size_t n) -> Result<size_t> {
    size_t k = std::min(n, bytes.size() - pos);
    std::memcpy(buf, bytes.data() + pos, k);
    pos += k;
    return k;
  });
}

}  // namespace

TEST_CASE("streams: one process backs up A and restores B, C, D at once; nothing waits on another volume") {
  const uint64_t seed = TestSeed("stream_race_test (backups)");
  RuntimeDir rt;
  const int rounds = 5 * StressScale();
  CoreVolume a(128ull << 20), b(128ull << 20), c(128ull << 20), d(128ull << 20);
  std::vector<CoreVolume*> targets = {&b, &c, &d};
  ControlServer sa(a.fs.get(), a.dir, ""), sb(b.fs.get(), b.dir, ""), sc(c.fs.get(), c.dir, ""),
      sd(d.fs.get(), d.dir, "");
  for (ControlServer* s : {&sa, &sb, &sc, &sd}) REQUIRE(s->Start().ok());
  auto ca = MustConnect(a.dir);
  Watchdog dog(240);
  Feed feed;
  std::atomic<bool> failed{false};
  std::mutex err_mu;
  std::string first_error;
  auto fail = [&](const std::string& what) {
    std::lock_guard<std::mutex> l(err_mu);
    if (first_error.empty()) first_error = what;
    failed.store(true);
  };

  // The backup of A: change, snapshot, send incrementally, publish.
  Mutator mut(a.fs, SeedOf(seed, 0));  // A's live tree: changed and checked by the backup thread only
  mut.on_fail = fail;
  std::thread backup([&] {
    std::string prev;
    for (int i = 0; i < rounds && !failed.load(); ++i) {
      mut.Steps(40);
      const std::string name = "a" + std::to_string(i);
      auto s = ca->CreateSnapshot(name);
      if (!s.ok()) return fail("create " + name + ": " + s.status().ToString());
      Stream st;
      st.name = name;
      st.base = prev;
      auto r = ca->Send(name, prev, [&](std::string_view p) {
        st.bytes.append(p);
        dog.Tick();
        return Status::Ok();
      });
      if (!r.ok()) return fail("send " + name + ": " + r.status().ToString());
      if (std::string d = mut.Taken(name); !d.empty()) return fail(d);
      st.m = mut.model;
      feed.Publish(std::move(st));
      prev = name;
      dog.Tick();
    }
    feed.Close();
  });
  // A second backup program streaming A's snapshots in full at the same time.
  std::atomic<bool> done{false};
  std::atomic<int> full_sends{0};
  std::thread full([&] {
    std::mt19937_64 rng(SeedOf(seed, 1));
    while (!done.load() && !failed.load()) {
      auto list = ca->ListSnapshots();
      if (!list.ok() || list->empty()) {
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
        continue;
      }
      const std::string name = (*list)[rng() % list->size()].name;
      uint64_t n = 0, size = 0;
      auto r = ca->Send(
          name, "",
          [&](std::string_view p) {
            n += p.size();
            return Status::Ok();
          },
          [&](uint64_t s) { size = s; });
      if (!r.ok()) return fail("full send " + name + ": " + r.status().ToString());
      if (n != size) return fail("full send " + name + ": announced size differs");
      full_sends.fetch_add(1);
      dog.Tick();
    }
  });
  // B, C, D: receive each stream, sometimes restore an older one.
  std::vector<std::thread> receivers;
  for (size_t t = 0; t < targets.size(); ++t) {
    receivers.emplace_back([&, t] {
      CoreVolume& v = *targets[t];
      auto cl = MustConnect(v.dir);
      std::mt19937_64 rng(SeedOf(seed, 10 + t));
      std::vector<std::shared_ptr<Stream>> got;
      bool rolled_back = false;
      for (size_t i = 0;; ++i) {
        auto s = feed.Get(i);
        if (!s || failed.load()) break;
        auto r = ReceiveVia(*cl, s->bytes, rolled_back);
        if (!r.ok()) return fail("receive " + s->name + " on target " + std::to_string(t) + ": " +
                                 r.status().ToString());
        dog.Tick();
        got.push_back(s);
        const std::string diff = CompareSnapshot(*v.fs, s->name, s->m);
        if (!diff.empty()) return fail("target " + std::to_string(t) + " " + s->name + ": " + diff);
        rolled_back = false;
        if (got.size() > 1 && rng() % 2 == 0) {
          const auto& old = got[rng() % got.size()];
          auto rr = cl->Restore(old->name, false);
          if (!rr.ok()) return fail("restore " + old->name + ": " + rr.status().ToString());
          TreeModel live = old->m;
          const std::string d2 = CompareWithModel(*v.fs, kRootIno, true, live);
          if (!d2.empty()) return fail("restored " + old->name + ": " + d2);
          rolled_back = old != got.back();
          dog.Tick();
        }
      }
      // Every snapshot received is still what it was.
      for (const auto& s : got) {
        const std::string diff = CompareSnapshot(*v.fs, s->name, s->m);
        if (!diff.empty()) return fail("at the end, " + s->name + ": " + diff);
      }
    });
  }
  backup.join();
  for (auto& t : receivers) t.join();
  done.store(true);
  full.join();
  for (ControlServer* s : {&sa, &sb, &sc, &sd}) s->Stop();
  CHECK_MESSAGE(!failed.load(), first_error);
  CHECK(full_sends.load() > 0);
  MESSAGE("rounds " << rounds << ", full sends alongside: " << full_sends.load());
  for (CoreVolume* v : targets) CHECK(v->Fsck() == 0);
}

TEST_CASE("streams: backup readers walk .snapshots while snapshots come and go and the scanner runs") {
  const uint64_t seed = TestSeed("stream_race_test (readers)");
  CoreVolume a(96ull << 20);
  constexpr int kFiles = 8;
  const int gens = 12 * StressScale();
  auto content = [](int gen, int f) { return Pattern(20000 + f * 3001, gen * 100 + f + 1); };
  NodeId dir = a.Mkdir(kRootIno, "d");
  std::vector<NodeId> files;
  for (int f = 0; f < kFiles; ++f) files.push_back(a.Put(dir, "f" + std::to_string(f), content(0, f)));
  REQUIRE(a.fs->CreateSnapshot("g0").ok());

  std::atomic<bool> stop{false};
  std::atomic<int> fail_count{0}, reads_ok{0}, vanished{0}, held_reads{0};
  std::mutex err_mu;
  std::string first_error;
  auto fail = [&](const std::string& what) {
    std::lock_guard<std::mutex> l(err_mu);
    if (first_error.empty()) first_error = what;
    fail_count.fetch_add(1);
  };
  Watchdog dog(240);

  std::vector<std::thread> readers;
  for (int r = 0; r < 3; ++r) {
    readers.emplace_back([&, r] {
      std::mt19937_64 rng(SeedOf(seed, r));
      while (!stop.load()) {
        // The listing of .snapshots while snapshots come and go: only names
        // of snapshots, each once.
        {
          auto dh = a.fs->OpenDir(kSnapDirNode);
          if (!dh.ok()) {
            fail("opendir .snapshots: " + dh.status().ToString());
            continue;
          }
          std::set<std::string> seen;
          Status rd = a.fs->ReadDir(*dh, 0, [&](const DirEntryOut& e) {
            const std::string n(e.name);
            if (n != "." && n != ".." && (n[0] != 'g' || !seen.insert(n).second)) {
              fail("bad entry in .snapshots: " + n);
            }
            return true;
          });
          if (!rd.ok()) fail("readdir .snapshots: " + rd.ToString());
          (void)a.fs->ReleaseDir(*dh);
        }
        auto snaps = a.fs->ListSnapshots(false);
        if (snaps.empty()) continue;
        const std::string name = snaps[rng() % snaps.size()].name;
        const int gen = std::atoi(name.c_str() + 1);
        auto root = a.fs->Lookup(kSnapDirNode, name);
        if (!root.ok()) {
          if (root.status().Is(Code::kNotFound)) {
            vanished.fetch_add(1);
            continue;
          }
          fail("lookup " + name + ": " + root.status().ToString());
          continue;
        }
        auto d = a.fs->Lookup(root->node, "d");
        if (!d.ok()) {
          if (!d.status().Is(Code::kNotFound)) fail("lookup d in " + name + ": " + d.status().ToString());
          else vanished.fetch_add(1);
          a.fs->Forget(root->node, 1);
          continue;
        }
        for (int f = 0; f < kFiles && !stop.load(); ++f) {
          auto e = a.fs->Lookup(d->node, "f" + std::to_string(f));
          if (!e.ok()) {
            if (!e.status().Is(Code::kNotFound)) fail("lookup f: " + e.status().ToString());
            break;
          }
          auto fh = a.fs->OpenFile(e->node, O_RDONLY);
          if (!fh.ok()) {
            // The snapshot went between the lookup and the open: the node
            // is stale (through the kernel, which then looks the path up
            // again, the open gets ENOENT).
            if (!fh.status().Is(Code::kStale)) fail("open: " + fh.status().ToString());
            vanished.fetch_add(1);
            break;
          }
          // Read in two halves with a snapshot change possibly between.
          const std::string want = content(gen, f);
          std::string got(want.size(), '\0');
          const size_t half = want.size() / 2;
          auto n1 = a.fs->Read(*fh, 0, half, got.data());
          if (rng() % 4 == 0) std::this_thread::yield();
          auto n2 = a.fs->Read(*fh, half, want.size() - half, got.data() + half);
          (void)a.fs->Release(*fh);
          if (!n1.ok() || !n2.ok()) {
            fail("read " + name + "/f" + std::to_string(f) + ": " +
                 (!n1.ok() ? n1.status() : n2.status()).ToString());
            break;
          }
          if (*n1 != half || *n2 != want.size() - half || got != want) {
            fail("wrong bytes in " + name + "/f" + std::to_string(f));
            break;
          }
          reads_ok.fetch_add(1);
          dog.Tick();
        }
        a.fs->Forget(d->node, 1);
        a.fs->Forget(root->node, 1);
      }
    });
  }
  // A file held open while its snapshot is deleted keeps reading.
  std::thread holder([&] {
    for (int i = 0; i < 4 && !stop.load(); ++i) {
      auto snaps = a.fs->ListSnapshots(false);
      if (snaps.empty()) continue;
      const std::string name = snaps.back().name;
      const int gen = std::atoi(name.c_str() + 1);
      auto root = a.fs->Lookup(kSnapDirNode, name);
      if (!root.ok()) continue;
      auto d = a.fs->Lookup(root->node, "d");
      auto e = d.ok() ? a.fs->Lookup(d->node, "f1") : Result<EntryOut>(d.status());
      if (!e.ok()) continue;
      auto fh = a.fs->OpenFile(e->node, O_RDONLY);
      if (!fh.ok()) continue;
      Status del = a.fs->DeleteSnapshot(name);
      if (!del.ok() && !del.Is(Code::kNotFound)) fail("delete held: " + del.ToString());
      const std::string want = content(gen, 1);
      std::string got(want.size(), '\0');
      auto n = a.fs->Read(*fh, 0, got.size(), got.data());
      if (!n.ok() || got != want) fail("a file open in deleted snapshot " + name + " read wrong");
      else held_reads.fetch_add(1);
      (void)a.fs->Release(*fh);
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  });
  std::thread scanner([&] {
    while (!stop.load()) {
      a.fs->StartScan("request");
      std::this_thread::sleep_for(std::chrono::milliseconds(15));
    }
  });
  // Generations: rewrite every file, snapshot; delete old snapshots.
  for (int g = 1; g <= gens; ++g) {
    for (int f = 0; f < kFiles; ++f) {
      struct stat st {};
      st.st_size = 0;
      REQUIRE(a.fs->SetAttr(files[f], st, kSetSize, a.cred).ok());
      REQUIRE(a.WriteAt(files[f], 0, content(g, f)).ok());
    }
    REQUIRE(a.fs->CreateSnapshot("g" + std::to_string(g)).ok());
    auto snaps = a.fs->ListSnapshots(false);
    while (snaps.size() > 4) {
      Status s = a.fs->DeleteSnapshot(snaps.front().name);
      if (!s.ok() && !s.Is(Code::kNotFound)) fail("delete: " + s.ToString());
      snaps.erase(snaps.begin());
    }
    dog.Tick();
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  stop.store(true);
  for (auto& t : readers) t.join();
  holder.join();
  scanner.join();
  CHECK_MESSAGE(fail_count.load() == 0, first_error);
  CHECK(reads_ok.load() > 0);
  MESSAGE("reads " << reads_ok.load() << ", vanished " << vanished.load() << ", held reads "
                   << held_reads.load());
  REQUIRE(a.fs->ReclaimNow().ok());
  CHECK(a.Fsck() == 0);
}
