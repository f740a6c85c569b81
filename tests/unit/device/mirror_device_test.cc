// MirrorDevice (fs/device/mirror_device.h) over in-memory devices: writes
// reach both sides, a failing side is faulted and recorded stale, reads fall
// over on EIO, the resilver makes a stale side equal to the good one and
// resumes from its stored cursor. The expectation is always the other side
// or a copy the test kept, never what the device under test reports.
#include <doctest/doctest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <random>
#include <string>

#include "fs/device/fault_device.h"
#include "fs/device/mirror_device.h"

using namespace psm;

namespace {

constexpr uint64_t kSize = 8u << 20;

// Forwards to a device the test keeps (a detached side is destroyed by
// the MirrorDevice; the test still looks at what reached it).
class Forward : public BlockDevice {
 public:
  explicit Forward(std::shared_ptr<BlockDevice> d) : d_(std::move(d)) {}
  Status Read(uint64_t off, void* buf, size_t n) override { return d_->Read(off, buf, n); }
  Status Write(uint64_t off, const void* buf, size_t n) override { return d_->Write(off, buf, n); }
  Status Sync() override { return d_->Sync(); }
  uint64_t size() const override { return d_->size(); }

 private:
  std::shared_ptr<BlockDevice> d_;
};

struct Rig {
  std::string dir;
  std::string state;
  std::shared_ptr<FaultDevice> a_own, b_own;
  FaultDevice* a = nullptr;  // the image
  FaultDevice* b = nullptr;  // the mirror
  std::unique_ptr<MirrorDevice> m;

  explicit Rig(MirrorState st = MirrorState{"/mirror", -1, 0}) {
    char t[] = "/tmp/psm-mirror-XXXXXX";
    dir = mkdtemp(t);
    state = dir + "/mirror";
    a_own = std::make_shared<FaultDevice>(NewMemDevice(kSize));
    b_own = std::make_shared<FaultDevice>(NewMemDevice(kSize));
    a = a_own.get();
    b = b_own.get();
    m = std::make_unique<MirrorDevice>(std::make_unique<Forward>(a_own), dir + "/image", state);
    REQUIRE(m->SetUp(st, std::make_unique<Forward>(b_own), "", false).ok());
  }
  ~Rig() {
    m.reset();
    std::filesystem::remove_all(dir);
  }
  static std::string Bytes(BlockDevice* d, uint64_t off, size_t n) {
    std::string s(n, '\0');
    REQUIRE(d->Read(off, s.data(), n).ok());
    return s;
  }
  MirrorState Stored() {
    MirrorState s;
    Status st = LoadMirrorState(state, &s);
    REQUIRE_MESSAGE(st.ok(), st.ToString());
    return s;
  }
};

std::string Pattern(size_t n, uint32_t seed) {
  std::mt19937 r(seed);
  std::string s(n, '\0');
  for (char& c : s) c = static_cast<char>(r());
  return s;
}

}  // namespace

TEST_CASE("mirror: every write reaches both sides; sync syncs both") {
  Rig r;
  const std::string d = Pattern(3 * 4096, 1);
  REQUIRE(r.m->Write(4096, d.data(), d.size()).ok());
  CHECK(Rig::Bytes(r.a, 4096, d.size()) == d);
  CHECK(Rig::Bytes(r.b, 4096, d.size()) == d);
  CHECK(r.a->counters().unsynced_writes == 1);
  CHECK(r.b->counters().unsynced_writes == 1);
  REQUIRE(r.m->Sync().ok());
  CHECK(r.a->counters().unsynced_writes == 0);
  CHECK(r.b->counters().unsynced_writes == 0);
  CHECK(!r.m->Info().degraded);
}

TEST_CASE("mirror: a read that fails on the image is served by the mirror") {
  Rig r;
  const std::string d = Pattern(8192, 2);
  REQUIRE(r.m->Write(0, d.data(), d.size()).ok());
  r.a->SetBadRange(4096, 4097);
  std::string got(d.size(), '\0');
  REQUIRE(r.m->Read(0, got.data(), got.size()).ok());
  CHECK(got == d);
  CHECK(r.m->Info().sides[0].read_errors == 1);
  // Both bad: the read fails.
  r.b->SetBadRange(0, 10);
  CHECK(!r.m->Read(0, got.data(), got.size()).ok());
}

TEST_CASE("mirror: a failed write faults that side, is recorded, and the volume goes on") {
  Rig r;
  r.b->FailNthWrite(1, /*sticky=*/true);
  const std::string d = Pattern(4096, 3);
  REQUIRE(r.m->Write(0, d.data(), d.size()).ok());
  MirrorInfo mi = r.m->Info();
  CHECK(mi.degraded);
  CHECK(mi.sides[1].health == "faulted");
  CHECK(mi.sides[1].write_errors == 1);
  MirrorState st = r.Stored();
  CHECK(st.stale == 1);
  CHECK(st.cursor == 0);
  CHECK(st.path == "/mirror");
  // Later writes and syncs need only the image.
  REQUIRE(r.m->Write(4096, d.data(), d.size()).ok());
  REQUIRE(r.m->Sync().ok());
  CHECK(Rig::Bytes(r.a, 4096, 4096) == d);
  // The image failing now is fatal: it is the only complete copy.
  r.a->FailNthWrite(1);
  CHECK(!r.m->Write(8192, d.data(), d.size()).ok());
}

TEST_CASE("mirror: a failed sync of the mirror faults it; of both fails the sync") {
  Rig r;
  const std::string d = Pattern(4096, 4);
  REQUIRE(r.m->Write(0, d.data(), d.size()).ok());
  r.b->FailSync(1);
  CHECK(r.m->Sync().ok());
  CHECK(r.Stored().stale == 1);
  r.a->FailSync(1);
  REQUIRE(r.m->Write(0, d.data(), d.size()).ok());
  CHECK(!r.m->Sync().ok());
}

TEST_CASE("mirror: resilver while writes run makes the mirror equal to the image") {
  Rig r(MirrorState{"/mirror", 1, 0});
  // The image holds data the mirror lacks.
  for (uint64_t off = 0; off < kSize; off += 256 * 1024) {
    const std::string d = Pattern(64 * 1024, static_cast<uint32_t>(off));
    REQUIRE(r.a->Write(off, d.data(), d.size()).ok());
  }
  // The mirror is stale: reads come from the image only.
  CHECK(r.m->ReadableSides(0, 4096) == std::vector<int>{0});
  std::atomic<bool> stop{false};
  std::thread writer([&] {
    std::mt19937_64 rng(5);
    while (!stop) {
      const uint64_t off = (rng() % (kSize / 4096 - 4)) * 4096;
      const std::string d = Pattern(4096 * (1 + rng() % 3), static_cast<uint32_t>(rng()));
      REQUIRE(r.m->Write(off, d.data(), d.size()).ok());
    }
  });
  r.m->StartResilver(0);
  REQUIRE(r.m->WaitResilver().ok());
  stop = true;
  writer.join();
  CHECK(Rig::Bytes(r.a, 0, kSize) == Rig::Bytes(r.b, 0, kSize));
  CHECK(r.Stored().stale == -1);
  MirrorInfo mi = r.m->Info();
  CHECK(!mi.degraded);
  CHECK(mi.sides[1].health == "online");
  CHECK(r.m->ReadableSides(0, 4096).size() == 2);
}

TEST_CASE("mirror: a stopped resilver resumes from its stored cursor; what it copied stays") {
  Rig r(MirrorState{"/mirror", 1, 0});
  const std::string d = Pattern(kSize, 6);
  REQUIRE(r.a->Write(0, d.data(), d.size()).ok());
  REQUIRE(r.a->Sync().ok());
  r.m->StartResilver(4u << 20);  // 4 MiB/s: about two seconds for 8 MiB
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  r.m->StopResilver();
  MirrorState st = r.Stored();
  CHECK(st.stale == 1);
  CHECK(st.cursor > 0);
  CHECK(st.cursor < kSize);
  // The stored cursor never claims bytes the mirror does not hold durably.
  REQUIRE(r.b->DropUnsynced().ok());
  CHECK(Rig::Bytes(r.b, 0, st.cursor) == d.substr(0, st.cursor));
  // "Remount": a new device set up from the stored state resumes there.
  auto fa = std::make_unique<FaultDevice>(NewMemDevice(kSize));
  auto fb = std::make_unique<FaultDevice>(NewMemDevice(kSize));
  REQUIRE(fa->Write(0, d.data(), d.size()).ok());
  const std::string copied = Rig::Bytes(r.b, 0, kSize);
  REQUIRE(fb->Write(0, copied.data(), copied.size()).ok());
  FaultDevice* nb = fb.get();
  const uint64_t writes_before = nb->counters().bytes_written;
  MirrorDevice m2(std::move(fa), r.dir + "/image", r.state);
  REQUIRE(m2.SetUp(st, std::move(fb), "", false).ok());
  m2.StartResilver(0);
  REQUIRE(m2.WaitResilver().ok());
  CHECK(Rig::Bytes(nb, 0, kSize) == d);
  // It copied only from the cursor on.
  CHECK(nb->counters().bytes_written - writes_before <= kSize - st.cursor);
  CHECK(r.Stored().stale == -1);
}

TEST_CASE("mirror: a missing mirror mounts degraded and is recorded stale") {
  char t[] = "/tmp/psm-mirror-XXXXXX";
  std::string dir = mkdtemp(t);
  MirrorDevice m(NewMemDevice(kSize), dir + "/image", dir + "/mirror");
  REQUIRE(m.SetUp(MirrorState{"/gone", -1, 0}, nullptr, "no such file", false).ok());
  MirrorInfo mi = m.Info();
  CHECK(mi.degraded);
  CHECK(mi.sides[1].health == "missing");
  CHECK(mi.sides[1].reason == "no such file");
  MirrorState st;
  REQUIRE(LoadMirrorState(dir + "/mirror", &st).ok());
  CHECK(st.stale == 1);
  const std::string d = Pattern(4096, 7);
  CHECK(m.Write(0, d.data(), d.size()).ok());
  CHECK(m.Sync().ok());
  // The image stale and the mirror missing: no complete copy, refused.
  MirrorDevice m2(NewMemDevice(kSize), dir + "/image", "");
  CHECK(!m2.SetUp(MirrorState{"/gone", 0, 0}, nullptr, "no such file", false).ok());
  std::filesystem::remove_all(dir);
}

TEST_CASE("mirror: detach is refused while the mirror holds the only complete copy") {
  Rig r(MirrorState{"/mirror", 0, 0});
  CHECK(r.m->Detach().Is(Code::kBusy));
  Rig ok;
  REQUIRE(ok.m->Detach().ok());
  CHECK(!ok.m->mirrored());
  MirrorState st;
  CHECK(LoadMirrorState(ok.state, &st).Is(Code::kNotFound));
  // Writes now reach the image only.
  const uint64_t before = ok.b->counters().writes;
  const std::string d = Pattern(4096, 8);
  REQUIRE(ok.m->Write(0, d.data(), d.size()).ok());
  CHECK(ok.b->counters().writes == before);
}

TEST_CASE("mirror: the state file rejects garbage with a clear error") {
  char t[] = "/tmp/psm-mirror-XXXXXX";
  std::string dir = mkdtemp(t);
  const std::string f = dir + "/mirror";
  MirrorState st;
  CHECK(LoadMirrorState(f, &st).Is(Code::kNotFound));
  {
    FILE* fp = fopen(f.c_str(), "w");
    fputs("hello\n", fp);
    fclose(fp);
  }
  Status s = LoadMirrorState(f, &st);
  CHECK(s.Is(Code::kCorruption));
  CHECK(s.message().find("not a psmfs mirror state file") != std::string::npos);
  REQUIRE(SaveMirrorState(f, MirrorState{"/x y", 1, 12345}).ok());
  REQUIRE(LoadMirrorState(f, &st).ok());
  CHECK(st.path == "/x y");
  CHECK(st.stale == 1);
  CHECK(st.cursor == 12345);
  std::filesystem::remove_all(dir);
}
