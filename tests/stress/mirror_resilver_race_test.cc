// The mirror's resilver against everything that runs while a volume serves
// (docs/integrity.md, "Mirror"): a mirror is attached to a volume while
// writers overwrite files, snapshots are created and deleted (and
// reclaimed), scrubs run (each reading and repairing both copies) and
// readers read; the resilver is throttled so that all of it overlaps it.
// Every round:
//   * no crash, no hang;
//   * once the resilver ended and the volume is synced, the two in-memory
//     devices are byte-for-byte equal (every write reached both sides, and
//     the resilver's copy never raced a write into its chunk);
//   * readers always read what the writers last wrote (the model);
//   * fsck is clean.
// A second case cuts the power in the middle of a resilver (both devices
// drop what was not synced) and checks that the remount resumes it and
// ends with equal devices and every fsynced byte.
//
// PSMFS_SEED repeats a run; PSMFS_STRESS=N multiplies the rounds (default 5).
#include <doctest/doctest.h>
#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <mutex>
#include <random>
#include <thread>

#include "fs/device/fault_device.h"
#include "fs/device/mirror_device.h"
#include "tests/common/core_test_util.h"
#include "tests/common/psm_test_util.h"

using namespace psm;

namespace {

constexpr size_t kBs = 4096;
constexpr uint64_t kSize = 16ull << 20;
constexpr int kFiles = 6;

std::string Blocks(uint64_t seed, size_t n) {
  return psm_test::Pattern(n * kBs, static_cast<uint32_t>(seed ^ (seed >> 32)));
}

struct Rig {
  std::string dir;
  std::shared_ptr<FaultDevice> img, mir;
  std::unique_ptr<FileSystem> fs;
  Credentials cred;

  explicit Rig(uint64_t rate = 0) {
    char t[] = "/tmp/psm-mirror-race-XXXXXX";
    dir = mkdtemp(t);
    img = std::make_shared<FaultDevice>(NewMemDevice(kSize));
    mir = std::make_shared<FaultDevice>(NewMemDevice(kSize));
    FormatOptions fo;
    fo.size_bytes = kSize;
    fo.chunk_bytes = 64 * 1024;
    fo.device = img;
    REQUIRE(Format(dir, fo).ok());
    Open(rate);
  }
  ~Rig() {
    if (fs) (void)fs->Close();
    fs.reset();
    std::filesystem::remove_all(dir);
  }
  void Open(uint64_t rate) {
    MountOptions o;
    o.device = img;
    o.mirror_device = mir;
    o.commit_interval_ms = 20;
    o.resilver_rate = rate;
    auto r = FileSystem::Open(dir, o);
    REQUIRE_MESSAGE(r.ok(), r.status().ToString());
    fs = std::move(r).value();
  }
  std::string Device(FaultDevice* d) {
    std::string s(kSize, '\0');
    REQUIRE(d->Read(0, s.data(), kSize).ok());
    return s;
  }
  NodeId Put(const std::string& name, const std::string& data) {
    auto c = fs->Create(kRootIno, name, 0644, O_RDWR, cred);
    REQUIRE(c.ok());
    REQUIRE(fs->Write(c->second, 0, data.data(), data.size()).ok());
    REQUIRE(fs->Release(c->second).ok());
    return c->first.node;
  }
  std::string Read(NodeId n, size_t size) {
    auto fh = fs->OpenFile(n, O_RDONLY);
    REQUIRE(fh.ok());
    std::string out(size, '\0');
    auto r = fs->Read(*fh, 0, size, out.data());
    REQUIRE_MESSAGE(r.ok(), r.status().ToString());
    out.resize(*r);
    REQUIRE(fs->Release(*fh).ok());
    return out;
  }
};

}  // namespace

TEST_CASE("resilver races writes, snapshot create/delete, scrub and reads") {
  const uint64_t seed = psm_test::TestSeed("mirror_resilver_race");
  const int rounds = static_cast<int>(5 * psm::testutil::StressFromEnv());
  for (int round = 0; round < rounds; ++round) {
    std::mt19937_64 rng(seed + static_cast<uint64_t>(round));
    Rig r(32u << 20);  // the resilver overlaps everything: 16 MiB at 32 MiB/s
    std::vector<NodeId> files(kFiles);
    std::vector<std::string> content(kFiles);
    std::vector<std::mutex> mu(kFiles);
    for (int i = 0; i < kFiles; ++i) {
      content[i] = Blocks(rng(), 24);
      files[i] = r.Put("f" + std::to_string(i), content[i]);
    }
    REQUIRE(r.fs->SyncAll().ok());
    std::atomic<bool> stop{false};
    std::atomic<int> errors{0};
    std::vector<std::thread> ts;
    for (int w = 0; w < 2; ++w) {
      ts.emplace_back([&, w] {
        std::mt19937_64 g(seed * 31 + static_cast<uint64_t>(round * 7 + w));
        while (!stop) {
          const int i = static_cast<int>(g() % kFiles);
          std::lock_guard<std::mutex> l(mu[i]);
          const size_t off = (g() % 20) * kBs;
          const std::string d = Blocks(g(), 1 + g() % 4);
          auto fh = r.fs->OpenFile(files[i], O_RDWR);
          if (!fh.ok() || !r.fs->Write(*fh, off, d.data(), d.size()).ok()) ++errors;
          if (fh.ok()) (void)r.fs->Release(*fh);
          if (content[i].size() < off + d.size()) content[i].resize(off + d.size(), '\0');
          content[i].replace(off, d.size(), d);
        }
      });
    }
    ts.emplace_back([&] {  // readers check against the model
      std::mt19937_64 g(seed ^ 0x55);
      while (!stop) {
        const int i = static_cast<int>(g() % kFiles);
        std::lock_guard<std::mutex> l(mu[i]);
        if (r.Read(files[i], content[i].size()) != content[i]) ++errors;
      }
    });
    ts.emplace_back([&] {  // snapshots come and go
      for (int k = 0; !stop; ++k) {
        (void)r.fs->CreateSnapshot("s" + std::to_string(k));
        if (k >= 2) (void)r.fs->DeleteSnapshot("s" + std::to_string(k - 2));
        std::this_thread::sleep_for(std::chrono::milliseconds(15));
      }
    });
    ts.emplace_back([&] {  // scrubs of both copies
      while (!stop) {
        if (r.fs->StartScrub(0).ok()) {
          while (!stop && r.fs->GetScrubStatus().state == "running") {
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
          }
          ScrubStatus s = r.fs->GetScrubStatus();
          if (s.state == "finished" && (s.damaged_blocks != 0 || s.repaired_blocks != 0)) {
            ++errors;  // nothing is damaged: nothing to report or repair
          }
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    REQUIRE(r.fs->MirrorAttach(r.dir + "/m", false).ok());
    REQUIRE(r.fs->MirrorWait().ok());
    std::this_thread::sleep_for(std::chrono::milliseconds(100));  // both sides in use
    stop = true;
    for (auto& t : ts) t.join();
    (void)r.fs->StopScrub();
    CHECK(errors == 0);
    REQUIRE(r.fs->SyncAll().ok());
    CHECK_FALSE(r.fs->Stats().mirror.degraded);
    CHECK(r.fs->Stats().checksum_errors == 0);
    REQUIRE(r.fs->Close().ok());
    r.fs.reset();
    CHECK_MESSAGE(r.Device(r.img.get()) == r.Device(r.mir.get()),
                  "round " << round << " (seed " << seed << "): the mirror differs from the image");
    r.Open(0);
    for (int i = 0; i < kFiles; ++i) CHECK(r.Read(files[i], content[i].size()) == content[i]);
    REQUIRE(r.fs->Close().ok());
    r.fs.reset();
    FsckOptions fo;
    fo.device = r.img;
    std::string report;
    auto f = Fsck(r.dir, fo, &report);
    REQUIRE(f.ok());
    CHECK_MESSAGE(*f == 0, report);
  }
}

TEST_CASE("a power cut in the middle of a resilver: the remount resumes it, nothing is lost") {
  const uint64_t seed = psm_test::TestSeed("mirror_resilver_cut");
  std::mt19937_64 rng(seed);
  Rig r(4u << 20);  // 4 MiB/s: four seconds for the image
  std::vector<std::string> content(kFiles);
  std::vector<NodeId> files(kFiles);
  for (int i = 0; i < kFiles; ++i) {
    content[i] = Blocks(rng(), 32);
    files[i] = r.Put("f" + std::to_string(i), content[i]);
  }
  REQUIRE(r.fs->SyncAll().ok());
  REQUIRE(r.fs->MirrorAttach(r.dir + "/m", false).ok());
  // Writes, fsynced, while it copies.
  for (int i = 0; i < kFiles; ++i) {
    content[i] = Blocks(rng(), 32);
    auto fh = r.fs->OpenFile(files[i], O_RDWR);
    REQUIRE(fh.ok());
    REQUIRE(r.fs->Write(*fh, 0, content[i].data(), content[i].size()).ok());
    REQUIRE(r.fs->Fsync(*fh, false).ok());
    REQUIRE(r.fs->Release(*fh).ok());
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(300 + rng() % 1500));
  CHECK(r.fs->Stats().mirror.resilvering);
  // The power goes: nothing more reaches either device.
  r.img->SetOffline(true);
  r.mir->SetOffline(true);
  (void)r.fs->Close();
  r.fs.reset();
  REQUIRE(r.img->DropUnsynced().ok());
  REQUIRE(r.mir->DropUnsynced().ok());
  r.img->SetOffline(false);
  r.mir->SetOffline(false);
  MirrorState st;
  REQUIRE(LoadMirrorState(r.dir + "/mirror", &st).ok());
  CHECK(st.stale == 1);
  CHECK(st.cursor < kSize);
  // What the stored cursor claims is on the mirror, durably.
  CHECK(r.Device(r.img.get()).compare(0, st.cursor, r.Device(r.mir.get()), 0, st.cursor) == 0);
  r.Open(0);
  REQUIRE(r.fs->MirrorWait().ok());
  CHECK_FALSE(r.fs->Stats().mirror.degraded);
  for (int i = 0; i < kFiles; ++i) CHECK(r.Read(files[i], content[i].size()) == content[i]);
  REQUIRE(r.fs->Close().ok());
  r.fs.reset();
  CHECK(r.Device(r.img.get()) == r.Device(r.mir.get()));
}
