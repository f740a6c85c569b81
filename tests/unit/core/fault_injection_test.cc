// The core over a faulty image (fs/device/fault_device.h) and a faulty metadata
// store (meta/fault_fs.h): EIO and ENOSPC reach the caller of write/fsync,
// a failed sync is never reported as durable, and after a power cut (every
// unsynced image write and RocksDB append dropped) the volume opens without
// repair, keeps every fsynced byte, and shows no bytes a file never held.
#include <algorithm>
#include <random>
#include <vector>

#include "fs/device/block_device.h"
#include "fs/device/fault_device.h"
#include "meta/fault_fs.h"
#include "tests/common/core_test_util.h"
#include "tests/common/faulty_volume.h"

using namespace psm;
using psm_test::Pattern;

namespace {

using Fault = FaultInjectionFileSystem::Fault;

int Scale() { return psm_test::StressScale(); }
using Target = FaultInjectionFileSystem::Target;

}  // namespace

using psm_test::FaultyVolume;

TEST_CASE("fault: image EIO reaches write or fsync; synced data is intact") {
  FaultyVolume v;
  NodeId a = v.Create("a");
  const std::string good = Pattern(300000, 1);
  REQUIRE(v.WriteAll(a, good, true).ok());
  v.dev->FailNthWrite(1, /*sticky=*/true);
  Status s = v.WriteAll(a, Pattern(300000, 2), true);
  CHECK(s.Is(Code::kIOError));
  v.dev->ClearFaults();
  CHECK(v.Read("a") == good);  // the failed write changed nothing
  v.PowerCut();
  CHECK(v.Read("a") == good);
  CHECK(v.Fsck() == 0);
}

TEST_CASE("fault: image ENOSPC reaches the caller as ENOSPC") {
  FaultyVolume v;
  NodeId a = v.Create("a");
  REQUIRE(v.WriteAll(a, "before", true).ok());
  v.dev->SetNoSpace(true);
  Status s = v.WriteAll(a, Pattern(8192, 3), true);
  CHECK(s.Is(Code::kNoSpace));
  CHECK(Status::NoSpace().ToErrno() == ENOSPC);
  v.dev->SetNoSpace(false);
  CHECK(v.Read("a") == "before");
  REQUIRE(v.WriteAll(a, "after", true).ok());
  CHECK(v.Fsck() == 0);
  CHECK(v.Read("a").substr(0, 5) == "after");
}

TEST_CASE("fault: a failed image sync fails fsync, and nothing is claimed durable") {
  FaultyVolume v;
  NodeId a = v.Create("a");
  const std::string good = Pattern(100000, 4);
  REQUIRE(v.WriteAll(a, good, true).ok());
  v.dev->FailSync(1000);
  Status s = v.WriteAll(a, Pattern(100000, 5), true);
  CHECK(s.Is(Code::kIOError));
  // Power goes before any sync succeeds: the old bytes must be what is left
  // (the new metadata must not have become durable before its data).
  v.PowerCut();
  CHECK(v.Read("a") == good);
  CHECK(v.Fsck() == 0);
}

TEST_CASE("fault: a failed RocksDB WAL sync fails fsync; the volume reopens clean") {
  FaultyVolume v;
  NodeId a = v.Create("a");
  const std::string good = Pattern(50000, 6);
  REQUIRE(v.WriteAll(a, good, true).ok());
  // A snapshot makes the next write go to new blocks (redirect-on-write), so
  // the new bytes are reachable only through metadata that cannot become
  // durable. (Without one, blocks born in the live epoch are overwritten in
  // place, and an overwrite whose fsync failed may show old or new bytes,
  // as on ext4: see docs/crash-consistency.md.)
  REQUIRE(v.fs->CreateSnapshot("s").ok());
  v.ffs->InjectSyncError(Fault::kIOError, 0, Target::kWal);
  Status s = v.WriteAll(a, Pattern(50000, 7), true);
  CHECK(s.Is(Code::kIOError));
  CHECK(v.ffs->injected_failures() > 0);
  // Power goes while the WAL still cannot be synced: the new version was
  // never durable. (Had the fault cleared first, a later group commit could
  // legitimately have made it durable after all.)
  v.PowerCut();
  const std::string got = v.Read("a");
  CHECK_MESSAGE(got == good, got.size() << " bytes, first differing at "
                                        << std::mismatch(got.begin(), got.end(), good.begin(),
                                                         good.end()).first - got.begin());
  CHECK(v.Fsck() == 0);
}

TEST_CASE("fault: RocksDB ENOSPC reaches the caller as ENOSPC") {
  FaultyVolume v;
  NodeId a = v.Create("a");
  REQUIRE(v.WriteAll(a, "kept", true).ok());
  v.ffs->InjectWriteError(Fault::kNoSpace, 0, Target::kWal);
  auto r = v.fs->Create(kRootIno, "b", 0644, O_RDWR, v.cred);
  Status s = r.ok() ? v.fs->SyncAll() : r.status();
  CHECK(s.Is(Code::kNoSpace));
  v.PowerCut();
  CHECK(v.Read("a") == "kept");
  CHECK(v.Fsck() == 0);
}

TEST_CASE("fault: power cuts keep every fsynced byte and never show foreign bytes") {
  const int rounds = 6 * Scale();
  std::mt19937_64 rng(12345);
  for (int round = 0; round < rounds; ++round) {
    CAPTURE(round);
    FaultyVolume v;
    // Per file: every state it was written to (one atomic write each), and
    // the index of the last state an fsync covered (-1: none; the file may
    // then be absent or empty).
    struct F {
      std::string name;
      NodeId node;
      std::vector<std::string> states;
      int synced = -1;
    };
    std::vector<F> files;
    for (int i = 0; i < 8; ++i) {
      F f{"f" + std::to_string(i), 0, {}, -1};
      f.node = v.Create(f.name);
      files.push_back(f);
    }
    REQUIRE(v.fs->SyncAll().ok());
    for (F& f : files) f.states.push_back("");
    for (F& f : files) f.synced = 0;
    const int ops = 40;
    for (int op = 0; op < ops; ++op) {
      F& f = files[rng() % files.size()];
      std::string data = Pattern(20000 + rng() % 200000, static_cast<unsigned>(rng()));
      bool sync = rng() % 3 == 0;
      REQUIRE(v.WriteAll(f.node, data, sync).ok());
      std::string next = f.states.back();  // the write overlays [0, size)
      if (next.size() < data.size()) next.resize(data.size());
      next.replace(0, data.size(), data);
      f.states.push_back(next);
      if (sync) f.synced = static_cast<int>(f.states.size()) - 1;
    }
    v.PowerCut();
    for (const F& f : files) {
      std::string got = v.Read(f.name);
      // The image is durable up to some write X, the metadata up to some
      // earlier write Y (a power cut between the image sync and the WAL
      // sync of one commit cycle), both at or after the last fsync: the file
      // then holds state X's bytes (overwrites in place landed) cut to state
      // Y's size. Never a byte from before the fsync, never foreign bytes.
      bool ok = false;
      for (size_t x = static_cast<size_t>(f.synced); x < f.states.size() && !ok; ++x) {
        for (size_t y = static_cast<size_t>(f.synced); y <= x && !ok; ++y) {
          ok = got == f.states[x].substr(0, f.states[y].size());
        }
      }
      CHECK_MESSAGE(ok, f.name << ": " << got.size() << " bytes match no state since the last fsync");
    }
    CHECK(v.Fsck() == 0);
  }
}
