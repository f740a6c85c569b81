// Overwrites in place on a checksummed volume (docs/integrity.md,
// "Overwrites in place"; fs/core/intent.cc): whole blocks born at the live
// epoch are overwritten where they are, under a durable write intent for
// their region, and a power cut between the bytes and their checksum reads
// the old or the new bytes, never a false checksum error; once a region's
// intent is gone, damage there is caught again. (Readers, scrubs and mirror
// repairs racing overwrites in place: tests/stress/inplace_race_test.cc.)
//
// Where a block lives is found by searching the device for the pattern
// written, and what a read must return comes from the test's own model.
#include <doctest/doctest.h>
#include <fcntl.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>

#include "tests/common/core_test_util.h"
#include "tests/common/faulty_volume.h"
#include "tests/common/psm_test_util.h"
#include "meta/sync_point.h"

using namespace psm;
using psm_test::CoreVolume;
using psm_test::FaultyVolume;

namespace {

constexpr size_t kB = 4096;
// A region's intent comes with those of its group (fs_impl.h kIntentGroup,
// 8 regions of 16 MiB): the whole of this 64 MiB volume, 4 regions.
constexpr size_t kGroup = 4;

std::string Pat(size_t blocks, uint32_t seed) { return psm_test::Pattern(blocks * kB, seed); }

// What the disk holds now (written back or not: the memory device holds
// every write until a power cut drops the unsynced ones).
std::string Disk(FaultyVolume& v) {
  std::string s(v.dev->size(), '\0');
  REQUIRE(v.dev->base()->Read(0, s.data(), s.size()).ok());
  return s;
}

uint64_t OpenRw(FaultyVolume& v, NodeId n) {
  auto fh = v.fs->OpenFile(n, O_RDWR);
  REQUIRE_MESSAGE(fh.ok(), fh.status().ToString());
  return *fh;
}

// As the FUSE adapter writes back pages under the writeback cache.
void KernelWrite(FileSystem* fs, uint64_t fh, uint64_t off, const std::string& data) {
  auto w = fs->Write(fh, off, data.data(), data.size(), /*kernel_times=*/true);
  REQUIRE_MESSAGE(w.ok(), w.status().ToString());
}

// The power goes after the kernel wrote back every image write; the
// metadata not yet synced (the WAL since the last sync) is lost.
void CutKeepingImage(FaultyVolume& v) {
  v.dev->SetOffline(true);
  v.ffs->SetActive(false);
  (void)v.fs->Close();
  v.fs.reset();
  v.dev->SetOffline(false);
  REQUIRE(v.dev->Sync().ok());  // every image write stays
  REQUIRE(v.ffs->DropUnsyncedData().ok());
  v.ffs->SetActive(true);
  v.ffs->ResetState();
  v.Open();
}

// A 64-block file written and fsynced; returns its node, and where its
// block `b` sits on the disk (found by its bytes).
struct Setup {
  NodeId node;
  std::string model;
  uint64_t fh;
};
Setup WriteFile(FaultyVolume& v) {
  Setup s;
  s.node = v.Create("a");
  s.model = Pat(64, 1);
  s.fh = OpenRw(v, s.node);
  KernelWrite(v.fs.get(), s.fh, 0, s.model);
  REQUIRE(v.fs->Fsync(s.fh, false).ok());
  return s;
}

size_t Where(FaultyVolume& v, const std::string& bytes) {
  const std::string d = Disk(v);
  const size_t at = d.find(bytes);
  REQUIRE_MESSAGE(at != std::string::npos, "the block's bytes are not on the disk");
  REQUIRE_MESSAGE(d.find(bytes, at + 1) == std::string::npos, "the block's bytes are twice on the disk");
  return at;
}

// Reads [off, off+n) of `name` in directory `dir`: the status, and the
// bytes on success.
Status ReadAt(FaultyVolume& v, NodeId dir, const std::string& name, uint64_t off, size_t n,
              std::string* out) {
  auto e = v.fs->Lookup(dir, name);
  REQUIRE(e.ok());
  auto fh = v.fs->OpenFile(e->node, O_RDONLY);
  REQUIRE(fh.ok());
  out->assign(n, '\0');
  auto r = v.fs->Read(*fh, off, n, out->data());
  REQUIRE(v.fs->Release(*fh).ok());
  if (!r.ok()) return r.status();
  out->resize(*r);
  return Status::Ok();
}

}  // namespace

TEST_CASE("overwrite in place: bytes on the disk before their checksum read new after a cut") {
  // No background cycle: the only syncs are the test's and the intent's.
  FaultyVolume v(true, 600000);
  Setup s = WriteFile(v);
  const size_t at = Where(v, s.model.substr(5 * kB, kB));
  const std::string nw = Pat(1, 2);
  KernelWrite(v.fs.get(), s.fh, 5 * kB, nw);
  // In place: the new bytes are where the old ones were.
  CHECK(Disk(v).compare(at, kB, nw) == 0);
  CHECK(v.fs->Stats().write_intent_regions == kGroup);
  REQUIRE(v.fs->Release(s.fh).ok());
  CutKeepingImage(v);
  s.model.replace(5 * kB, kB, nw);
  CHECK(v.Read("a") == s.model);
  CHECK(v.fs->Stats().checksum_errors == 0);
  CHECK(v.fs->Stats().intent_recovered_blocks == 1);
  CHECK(v.fs->Stats().write_intent_regions == 0);
  CHECK(v.Fsck() == 0);
  // The recomputed checksum is durable: another cut changes nothing.
  v.PowerCut();
  CHECK(v.Read("a") == s.model);
  CHECK(v.fs->Stats().checksum_errors == 0);
}

TEST_CASE("overwrite in place: bytes that never reached the disk read old after a cut") {
  FaultyVolume v(true, 600000);
  Setup s = WriteFile(v);
  KernelWrite(v.fs.get(), s.fh, 7 * kB, Pat(3, 3));
  REQUIRE(v.fs->Release(s.fh).ok());
  v.PowerCut();  // every unsynced image write dropped
  CHECK(v.Read("a") == s.model);
  CHECK(v.fs->Stats().checksum_errors == 0);
  CHECK(v.fs->Stats().intent_recovered_blocks == 0);
  CHECK(v.Fsck() == 0);
}

TEST_CASE("overwrite in place: fsynced, it survives; a snapshot keeps the old bytes") {
  FaultyVolume v(true, 600000);
  Setup s = WriteFile(v);
  const size_t at = Where(v, s.model.substr(9 * kB, kB));
  const std::string first = Pat(1, 4), second = Pat(1, 5);
  KernelWrite(v.fs.get(), s.fh, 9 * kB, first);
  CHECK(Disk(v).compare(at, kB, first) == 0);
  REQUIRE(v.fs->Fsync(s.fh, true).ok());
  REQUIRE(v.fs->CreateSnapshot("s").ok());
  // Born before the snapshot now: redirected, the snapshot's copy stays.
  KernelWrite(v.fs.get(), s.fh, 9 * kB, second);
  CHECK(Disk(v).compare(at, kB, first) == 0);
  REQUIRE(v.fs->Fsync(s.fh, false).ok());
  REQUIRE(v.fs->Release(s.fh).ok());
  v.PowerCut();
  std::string live = s.model, snap = s.model;
  live.replace(9 * kB, kB, second);
  snap.replace(9 * kB, kB, first);
  CHECK(v.Read("a") == live);
  auto root = v.fs->Lookup(kSnapDirNode, "s");
  REQUIRE(root.ok());
  std::string got;
  REQUIRE(ReadAt(v, root->node, "a", 0, snap.size(), &got).ok());
  CHECK(got == snap);
  CHECK(v.fs->Stats().checksum_errors == 0);
  CHECK(v.Fsck() == 0);
}

TEST_CASE("overwrite in place: a partial block is redirected") {
  FaultyVolume v(true, 600000);
  Setup s = WriteFile(v);
  const size_t at = Where(v, s.model.substr(2 * kB, kB));
  const std::string part = Pat(1, 6).substr(0, 100);
  KernelWrite(v.fs.get(), s.fh, 2 * kB + 10, part);
  CHECK(Disk(v).compare(at, kB, s.model, 2 * kB, kB) == 0);  // the old block is untouched
  s.model.replace(2 * kB + 10, part.size(), part);
  REQUIRE(v.fs->Release(s.fh).ok());
  CHECK(v.Read("a") == s.model);
}

TEST_CASE("overwrite in place: an idle region's intent goes; damage there is caught again") {
  FaultyVolume v(true, 20);  // background cycles every 20 ms
  Setup s = WriteFile(v);
  const size_t at = Where(v, s.model.substr(5 * kB, kB));
  const std::string nw = Pat(1, 7);
  KernelWrite(v.fs.get(), s.fh, 5 * kB, nw);
  CHECK(v.fs->Stats().write_intent_regions == kGroup);
  bool gone = false;
  for (int i = 0; i < 1000 && !gone; ++i) {  // idle 2 s, then the next tick
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    gone = v.fs->Stats().write_intent_regions == 0;
  }
  REQUIRE_MESSAGE(gone, "the intent of a region idle for 10 s is still there");
  REQUIRE(v.fs->Release(s.fh).ok());
  REQUIRE(v.fs->SyncAll().ok());  // the intent's removal is durable
  // A byte changed on the disk under the block, then a cut: no intent
  // covers it any more, so it is damage, not an interrupted overwrite.
  std::string b(kB, '\0');
  REQUIRE(v.dev->base()->Read(at, b.data(), kB).ok());
  CHECK(b == nw);
  b[100] ^= 0x5a;
  REQUIRE(v.dev->base()->Write(at, b.data(), kB).ok());
  REQUIRE(v.dev->Sync().ok());
  v.PowerCut();
  std::string got;
  CHECK(ReadAt(v, kRootIno, "a", 5 * kB, kB, &got).Is(Code::kIOError));
  CHECK(v.fs->Stats().intent_recovered_blocks == 0);
}

TEST_CASE("overwrite in place: a clean unmount leaves no intent") {
  FaultyVolume v(true, 600000);
  Setup s = WriteFile(v);
  KernelWrite(v.fs.get(), s.fh, 5 * kB, Pat(1, 8));
  CHECK(v.fs->Stats().write_intent_regions == kGroup);
  REQUIRE(v.fs->Release(s.fh).ok());
  REQUIRE(v.fs->Close().ok());
  v.fs.reset();
  v.Open();
  CHECK(v.fs->Stats().write_intent_regions == 0);
  CHECK(v.fs->Stats().intent_recovered_blocks == 0);
}

// The checksums of overwrites in place are staged and committed together by
// the next sync cycle (PendingChecksums, docs/integrity.md "Checksums of
// overwrites in place").

TEST_CASE("staged checksums: reads, scrubs and snapshots see them before their commit") {
  FaultyVolume v(true, 600000);  // no background cycle
  Setup s = WriteFile(v);
  const std::string nw = Pat(8, 30);
  KernelWrite(v.fs.get(), s.fh, 8 * kB, nw);  // staged; nothing syncs after it
  s.model.replace(8 * kB, nw.size(), nw);
  CHECK(v.Read("a") == s.model);
  REQUIRE(v.fs->StartScrub(0).ok());
  REQUIRE(v.fs->WaitScrub(120));
  CHECK(v.fs->GetScrubStatus().damaged_blocks == 0);
  CHECK(v.fs->Stats().checksum_errors == 0);
  // The snapshot commits them before its own record.
  REQUIRE(v.fs->CreateSnapshot("s").ok());
  REQUIRE(v.fs->Release(s.fh).ok());
  v.PowerCut();
  auto root = v.fs->Lookup(kSnapDirNode, "s");
  REQUIRE(root.ok());
  std::string got;
  REQUIRE(ReadAt(v, root->node, "a", 0, s.model.size(), &got).ok());
  CHECK(got == s.model);
  CHECK(v.Read("a") == s.model);
  CHECK(v.fs->Stats().checksum_errors == 0);
  CHECK(v.Fsck() == 0);
}

TEST_CASE("staged checksums: a block freed after its overwrite in place is reused under its new checksum") {
  // The cycle that releases a freed block for reuse commits the checksum
  // staged for it first. Committed after the reuse, that checksum would
  // describe the block's old contents and fail its new ones.
  FaultyVolume v(true, 600000);  // no background cycle
  Setup s = WriteFile(v);
  const size_t at = Where(v, s.model.substr(0, kB));
  KernelWrite(v.fs.get(), s.fh, 0, Pat(1, 31));  // the region's intent is made durable
  REQUIRE(v.fs->Fsync(s.fh, false).ok());
  std::atomic<int> hits{0};
  SyncPoint::SetCallback("Committer::SyncTo:BeforeTarget", [&] {
    if (hits.fetch_add(1) != 0) return;
    // After SyncAll committed what was staged, before the cycle reads its
    // target: every block of `a` overwritten in place, then freed.
    KernelWrite(v.fs.get(), s.fh, 0, Pat(64, 32));
    struct stat st {};
    st.st_size = 0;
    REQUIRE(v.fs->SetAttr(s.node, st, kSetSize, v.cred).ok());
  });
  v.Create("c");  // something for the cycle to make durable
  SyncPoint::Enable();
  REQUIRE(v.fs->SyncAll().ok());  // this cycle releases a's blocks
  SyncPoint::ClearAll();
  SyncPoint::Disable();
  REQUIRE(hits.load() >= 1);
  REQUIRE(v.fs->Release(s.fh).ok());
  const NodeId b = v.Create("b");
  const std::string mb = Pat(64, 33);
  const uint64_t fb = OpenRw(v, b);
  KernelWrite(v.fs.get(), fb, 0, mb);
  REQUIRE(v.fs->Fsync(fb, false).ok());
  REQUIRE(v.fs->Release(fb).ok());
  REQUIRE_MESSAGE(Disk(v).compare(at, kB, mb, 0, kB) == 0,
                  "b did not take a's first block: the test cannot provoke a reuse");
  REQUIRE(v.fs->SyncAll().ok());
  CHECK(v.Read("b") == mb);
  CHECK(v.fs->Stats().checksum_errors == 0);
  v.PowerCut();
  CHECK(v.Read("b") == mb);
  CHECK(v.fs->Stats().checksum_errors == 0);
  CHECK(v.Fsck() == 0);
}
