// The core over a faulty image (fs/fault_device.h) and a faulty metadata
// store (meta/fault_fs.h): EIO and ENOSPC reach the caller of write/fsync,
// a failed sync is never reported as durable, and after a power cut (every
// unsynced image write and RocksDB append dropped) the volume opens without
// repair, keeps every fsynced byte, and shows no bytes a file never held.
#include <algorithm>
#include <random>
#include <vector>

#include "fs/block_device.h"
#include "fs/fault_device.h"
#include "meta/fault_fs.h"
#include "tests/unit/core_test_util.h"

using namespace psm;
using psm_test::Pattern;

namespace {

using Fault = FaultInjectionFileSystem::Fault;

int Scale() {
  const char* s = getenv("PSMFS_STRESS");
  int n = s ? atoi(s) : 1;
  return n > 0 ? n : 1;
}
using Target = FaultInjectionFileSystem::Target;

// A volume whose image is a FaultDevice over memory and whose RocksDB runs
// on a FaultInjectionFileSystem; both survive Close/Open like real disks.
struct FaultyVolume {
  std::string dir;
  std::shared_ptr<FaultDevice> dev;
  std::shared_ptr<FaultInjectionFileSystem> ffs;
  std::unique_ptr<FileSystem> fs;
  Credentials cred;

  FaultyVolume() {
    char t[] = "/tmp/psm-fault-XXXXXX";
    dir = mkdtemp(t);
    dev = std::make_shared<FaultDevice>(NewMemDevice(64ull << 20));
    ffs = std::make_shared<FaultInjectionFileSystem>(rocksdb::FileSystem::Default());
    FormatOptions fo;
    fo.size_bytes = 64ull << 20;
    fo.chunk_bytes = 1u << 20;
    fo.device = dev;
    Status s = Format(dir, fo);
    REQUIRE_MESSAGE(s.ok(), s.ToString());
    Open();
  }
  ~FaultyVolume() {
    if (fs) (void)fs->Close();
    fs.reset();
    std::filesystem::remove_all(dir);
  }
  void Open() {
    MountOptions o;
    o.commit_interval_ms = 20;
    o.device = dev;
    o.meta_fs = ffs;
    auto r = FileSystem::Open(dir, o);
    REQUIRE_MESSAGE(r.ok(), r.status().ToString());
    fs = std::move(r).value();
  }
  // The machine loses power: nothing more reaches either medium, the
  // process goes away, and what was not synced is gone.
  void PowerCut() {
    dev->SetOffline(true);
    ffs->SetActive(false);
    (void)fs->Close();  // fails: the media are gone; must not hang or crash
    fs.reset();
    REQUIRE(dev->DropUnsynced().ok());
    REQUIRE(ffs->DropUnsyncedData().ok());
    dev->ClearFaults();
    dev->SetOffline(false);
    ffs->InjectSyncError(Fault::kNone);
    ffs->InjectWriteError(Fault::kNone);
    ffs->SetActive(true);
    ffs->ResetState();
    Open();
  }
  int Fsck() {
    (void)fs->Close();
    fs.reset();
    FsckOptions fo;
    fo.device = dev;
    std::string report;
    auto r = psm::Fsck(dir, fo, &report);
    REQUIRE_MESSAGE(r.ok(), r.status().ToString());
    if (*r != 0) MESSAGE(report);
    Open();
    return static_cast<int>(*r);
  }
  NodeId Create(const std::string& name) {
    auto r = fs->Create(kRootIno, name, 0644, O_RDWR, cred);
    REQUIRE_MESSAGE(r.ok(), r.status().ToString());
    REQUIRE(fs->Release(r->second).ok());
    return r->first.node;
  }
  // One write call (atomic in the core) of `data` at 0, then optionally fsync.
  Status WriteAll(NodeId n, const std::string& data, bool sync) {
    auto fh = fs->OpenFile(n, O_RDWR);
    if (!fh.ok()) return fh.status();
    auto w = fs->Write(*fh, 0, data.data(), data.size());
    Status s = w.ok() ? Status::Ok() : w.status();
    if (s.ok() && sync) s = fs->Fsync(*fh, false);
    Status r = fs->Release(*fh);
    return s.ok() ? r : s;
  }
  std::string Read(const std::string& name) {
    auto e = fs->Lookup(kRootIno, name);
    if (!e.ok()) return "<" + e.status().ToString() + ">";
    auto fh = fs->OpenFile(e->node, O_RDONLY);
    REQUIRE(fh.ok());
    std::string out(static_cast<size_t>(e->st.st_size), '\0');
    auto r = fs->Read(*fh, 0, out.size(), out.data());
    REQUIRE(r.ok());
    out.resize(*r);
    REQUIRE(fs->Release(*fh).ok());
    return out;
  }
};

}  // namespace

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
      bool ok = false;
      for (size_t i = static_cast<size_t>(f.synced); i < f.states.size() && !ok; ++i) {
        // A later, unsynced write may have been cut short only at its end
        // (the size grew durably before all data did): never foreign bytes.
        ok = got == f.states[i];
      }
      CHECK_MESSAGE(ok, f.name << ": " << got.size() << " bytes match no state since the last fsync");
    }
    CHECK(v.Fsck() == 0);
  }
}
