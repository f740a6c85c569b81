// Data checksums through the core (docs/integrity.md): a byte changed in the
// image under a file's block makes every read of that block fail with EIO
// (live, snapshot, a partial write's merge, send, history) and never hands
// out the changed bytes; intact blocks and files still read. Where the
// block sits is found by searching the image file for the pattern written
// (not by asking psmfs), and what a read must return comes from the
// pattern itself.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <chrono>
#include <random>
#include <thread>
#include <string>

#include "fs/core/fs_impl.h"
#include "meta/keys.h"
#include "meta/store.h"
#include "meta/sync_point.h"
#include "tests/common/image_block.h"
#include "tests/common/core_test_util.h"
#include "tests/common/psm_test_util.h"

using namespace psm;
using psm_test::CoreVolume;

namespace {

constexpr size_t kBs = 4096;

std::string Pattern(uint64_t seed, size_t blocks) {
  return psm_test::Pattern(blocks * kBs, static_cast<uint32_t>(seed));
}

uint64_t FlipInImage(const std::string& dir, std::string_view block, size_t at = 100) {
  return psm::testutil::FlipInImage(dir + "/image", block, at, 0x5a);
}

// Reads [off, off+n) of `node`; the status, and the bytes on success.
Status ReadRange(CoreVolume& v, NodeId node, uint64_t off, size_t n, std::string* out) {
  auto fh = v.fs->OpenFile(node, O_RDONLY);
  REQUIRE(fh.ok());
  out->assign(n, '\0');
  auto r = v.fs->Read(*fh, off, n, out->data());
  REQUIRE(v.fs->Release(*fh).ok());
  if (!r.ok()) return r.status();
  out->resize(*r);
  return Status::Ok();
}

// Closes v and leaves it as a version before checksums left its volumes:
// no `checksum` key, no `csums` family (v.Open() mounts it again).
void MakePreChecksum(CoreVolume& v) {
  REQUIRE(v.fs->Close().ok());
  v.fs.reset();
  StoreOptions so;
  auto st = Store::Open(v.dir + "/meta", so);
  REQUIRE(st.ok());
  Store* s = st.value().get();
  Txn t(s);
  t.Delete(Cf::kVolume, kVolChecksum);
  REQUIRE(t.Commit().ok());
  REQUIRE(s->db()->DropColumnFamily(s->handle(Cf::kCsums)).ok());
  REQUIRE(s->SyncWal().ok());
}

// One block's bytes written at byte `at` of the image, behind psmfs's back.
void PutInImage(const std::string& image, size_t at, const char* block) {
  const int fd = ::open(image.c_str(), O_WRONLY);
  REQUIRE(fd >= 0);
  REQUIRE(::pwrite(fd, block, kBs, static_cast<off_t>(at)) == static_cast<ssize_t>(kBs));
  ::close(fd);
}

uint64_t ChecksumErrors(CoreVolume& v) { return v.fs->Stats().checksum_errors; }

void Reformat(CoreVolume& v, bool checksum) {
  REQUIRE(v.fs->Close().ok());
  v.fs.reset();
  FormatOptions fo;
  fo.size_bytes = 64ull << 20;
  fo.force = true;
  fo.checksum = checksum;
  REQUIRE(Format(v.dir, fo).ok());
  v.Open();
}

}  // namespace

TEST_CASE("a changed byte under a live file fails its reads with EIO, other data reads") {
  CoreVolume v;
  CHECK(v.fs->Stats().checksums);
  const std::string a = Pattern(1, 8), b = Pattern(2, 3);
  NodeId fa = v.Put(kRootIno, "a", a);
  NodeId fb = v.Put(kRootIno, "b", b);
  v.Remount();  // everything on disk; the live cache empty
  FlipInImage(v.dir, std::string_view(a).substr(5 * kBs, kBs));
  v.Remount();
  fa = v.Node(kRootIno, "a");
  fb = v.Node(kRootIno, "b");
  std::string got;
  // The whole file, the damaged block alone, and a few bytes inside it.
  CHECK(ReadRange(v, fa, 0, a.size(), &got).Is(Code::kIOError));
  CHECK(ReadRange(v, fa, 5 * kBs, kBs, &got).Is(Code::kIOError));
  CHECK(ReadRange(v, fa, 5 * kBs + 90, 20, &got).Is(Code::kIOError));
  CHECK(ChecksumErrors(v) == 3);
  // The blocks around it and the other file are intact.
  REQUIRE(ReadRange(v, fa, 0, 5 * kBs, &got).ok());
  CHECK(got == a.substr(0, 5 * kBs));
  REQUIRE(ReadRange(v, fa, 6 * kBs + 7, 2 * kBs - 7, &got).ok());
  CHECK(got == a.substr(6 * kBs + 7));
  CHECK(v.ReadAll(fb) == b);
  // A write of part of the damaged block merges its old bytes: it fails
  // too rather than give them a good checksum.
  CHECK(v.WriteAt(fa, 5 * kBs + 10, "xyz").Is(Code::kIOError));
  // A whole-block write replaces it: the block reads again.
  const std::string fresh = Pattern(3, 1);
  REQUIRE(v.WriteAt(fa, 5 * kBs, fresh).ok());
  std::string want = a;
  want.replace(5 * kBs, kBs, fresh);
  CHECK(v.ReadAll(fa) == want);
  v.Remount();
  CHECK(v.ReadAll(v.Node(kRootIno, "a")) == want);
  CHECK(ChecksumErrors(v) == 0);  // counted per mount
}

TEST_CASE("a changed byte under a snapshot's block fails the snapshot read, send and history") {
  CoreVolume v;
  const std::string old = Pattern(10, 4), neu = Pattern(11, 4);
  NodeId f = v.Put(kRootIno, "f", old);
  REQUIRE(v.fs->CreateSnapshot("s1").ok());
  REQUIRE(v.WriteAt(f, 0, neu).ok());  // the live file moves to new blocks
  v.Remount();
  FlipInImage(v.dir, std::string_view(old).substr(2 * kBs, kBs), 4000);
  v.Remount();
  NodeId snap = v.Node(kSnapDirNode, "s1");
  NodeId sf = v.Node(snap, "f");
  std::string got;
  CHECK(ReadRange(v, sf, 0, old.size(), &got).Is(Code::kIOError));
  REQUIRE(ReadRange(v, sf, 0, 2 * kBs, &got).ok());
  CHECK(got == old.substr(0, 2 * kBs));
  CHECK(v.ReadAll(v.Node(kRootIno, "f")) == neu);
  // send: fails, naming the path, and what reached the sink is no whole
  // stream.
  SendOptions so;
  so.snapshot = "s1";
  std::string stream;
  auto r = v.fs->Send(so, [&](std::string_view p) {
    stream.append(p);
    return Status::Ok();
  });
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().Is(Code::kIOError));
  CHECK_MESSAGE(r.status().message().find(".snapshots/s1/f") != std::string::npos,
                r.status().message());
  // history reads every version to checksum it: the snapshot's fails.
  auto h = v.fs->History("f", true);
  CHECK_FALSE(h.ok());
  CHECK(ChecksumErrors(v) >= 3);
}

TEST_CASE("the read error names the live path, hard links included") {
  CoreVolume v;
  NodeId d = v.Mkdir(kRootIno, "d");
  NodeId e = v.Mkdir(d, "e");
  const std::string a = Pattern(20, 2);
  v.Put(e, "file", a);
  v.Remount();
  FlipInImage(v.dir, std::string_view(a).substr(kBs, kBs));
  v.Remount();
  std::string got;
  Status s = ReadRange(v, v.Node(v.Node(v.Node(kRootIno, "d"), "e"), "file"), 0, a.size(), &got);
  REQUIRE(s.Is(Code::kIOError));
  CHECK_MESSAGE(s.message().find("d/e/file") != std::string::npos, s.message());
  CHECK_MESSAGE(s.message().find("at offset 4096") != std::string::npos, s.message());
}

TEST_CASE("overwrites are redirected and verified after a remount") {
  CoreVolume v;
  const std::string a = Pattern(30, 16);
  NodeId f = v.Put(kRootIno, "f", a);
  std::string want = a;
  std::mt19937_64 g(5);
  for (int i = 0; i < 200; ++i) {
    const uint64_t off = g() % (a.size() - 100);
    const std::string piece = Pattern(1000 + i, 1).substr(0, 1 + g() % 5000);
    const size_t n = std::min<size_t>(piece.size(), a.size() - off);
    REQUIRE(v.WriteAt(f, off, piece.substr(0, n)).ok());
    want.replace(off, n, piece.substr(0, n));
  }
  CHECK(v.ReadAll(f) == want);
  v.Remount();
  CHECK(v.ReadAll(v.Node(kRootIno, "f")) == want);
  CHECK(ChecksumErrors(v) == 0);
  CHECK(v.Fsck() == 0);
}

TEST_CASE("a fragmented file: its short runs are verified together, a bad one named by offset") {
  // Every other block overwritten one at a time: each is redirected to a
  // block of its own, so the file reads as 1-block runs, which ReadData
  // verifies in batches (one lookup for up to 1024 blocks). Damage before
  // and after the first batch's end must both be caught and named.
  CoreVolume v;
  constexpr size_t kBlocks = 1100;
  std::string want = Pattern(40, kBlocks);
  NodeId f = v.Put(kRootIno, "f", want);
  for (size_t b = 0; b < kBlocks; b += 2) {
    const std::string fresh = Pattern(5000 + b, 1);
    REQUIRE(v.WriteAt(f, b * kBs, fresh).ok());
    want.replace(b * kBs, kBs, fresh);
  }
  v.Remount();
  f = v.Node(kRootIno, "f");
  std::string got;
  REQUIRE(ReadRange(v, f, 0, want.size(), &got).ok());
  CHECK(got == want);
  CHECK(ChecksumErrors(v) == 0);
  FlipInImage(v.dir, std::string_view(want).substr(3 * kBs, kBs));     // an old block
  FlipInImage(v.dir, std::string_view(want).substr(1064 * kBs, kBs));  // a redirected one
  v.Remount();
  f = v.Node(kRootIno, "f");
  Status s = ReadRange(v, f, 0, want.size(), &got);
  REQUIRE(s.Is(Code::kIOError));
  CHECK_MESSAGE(s.message().find("at offset " + std::to_string(3 * kBs)) != std::string::npos,
                s.message());
  s = ReadRange(v, f, 4 * kBs, want.size() - 4 * kBs, &got);
  REQUIRE(s.Is(Code::kIOError));
  CHECK_MESSAGE(s.message().find("at offset " + std::to_string(1064 * kBs)) != std::string::npos,
                s.message());
  // A read of one damaged block among intact ones, partial at both ends.
  CHECK(ReadRange(v, f, 1060 * kBs + 100, 8 * kBs, &got).Is(Code::kIOError));
  // Between them everything reads.
  REQUIRE(ReadRange(v, f, 4 * kBs, 1060 * kBs, &got).ok());
  CHECK(got == want.substr(4 * kBs, 1060 * kBs));
  REQUIRE(ReadRange(v, f, 0, 3 * kBs, &got).ok());
  CHECK(got == want.substr(0, 3 * kBs));
  CHECK(ChecksumErrors(v) == 3);
}

TEST_CASE("received data is checksummed") {
  CoreVolume src, dst;
  const std::string a = Pattern(40, 6);
  src.Put(kRootIno, "f", a);
  REQUIRE(src.fs->CreateSnapshot("s").ok());
  std::string stream;
  SendOptions so;
  so.snapshot = "s";
  REQUIRE(src.fs->Send(so, [&](std::string_view p) {
                   stream.append(p);
                   return Status::Ok();
                 }).ok());
  size_t pos = 0;
  ReceiveOptions ro;
  REQUIRE(dst.fs->Receive(ro, [&](char* buf, size_t n) -> Result<size_t> {
                   size_t k = std::min(n, stream.size() - pos);
                   std::memcpy(buf, stream.data() + pos, k);
                   pos += k;
                   return k;
                 }).ok());
  dst.Remount();
  CHECK(dst.ReadAll(dst.Node(kRootIno, "f")) == a);
  FlipInImage(dst.dir, std::string_view(a).substr(3 * kBs, kBs));
  dst.Remount();
  std::string got;
  CHECK(ReadRange(dst, dst.Node(kRootIno, "f"), 0, a.size(), &got).Is(Code::kIOError));
}

TEST_CASE("--checksum=off: no checksums, nothing verified") {
  CoreVolume v;
  Reformat(v, false);
  CHECK_FALSE(v.fs->Stats().checksums);
  const std::string a = Pattern(50, 3);
  v.Put(kRootIno, "f", a);
  v.Remount();
  FlipInImage(v.dir, std::string_view(a).substr(kBs, kBs), 7);
  v.Remount();
  std::string want = a;
  want[kBs + 7] = static_cast<char>(want[kBs + 7] ^ 0x5a);
  CHECK(v.ReadAll(v.Node(kRootIno, "f")) == want);
  CHECK(ChecksumErrors(v) == 0);
}

TEST_CASE("a volume made before checksums mounts, reads its data, checksums new writes") {
  CoreVolume v;
  Reformat(v, false);
  const std::string old = Pattern(60, 3), neu = Pattern(61, 3);
  v.Put(kRootIno, "old", old);
  MakePreChecksum(v);
  {
    // fsck (read-only) opens it as it is.
    std::string rep;
    auto r = Fsck(v.dir, {}, &rep);
    REQUIRE_MESSAGE(r.ok(), r.status().ToString());
    CHECK_MESSAGE(*r == 0, rep);
  }
  v.Open();
  CHECK(v.fs->Stats().checksums);
  CHECK(v.ReadAll(v.Node(kRootIno, "old")) == old);
  v.Put(kRootIno, "new", neu);
  v.Remount();
  FlipInImage(v.dir, std::string_view(neu).substr(0, kBs));
  v.Remount();
  std::string got;
  CHECK(ReadRange(v, v.Node(kRootIno, "new"), 0, neu.size(), &got).Is(Code::kIOError));
  CHECK(v.ReadAll(v.Node(kRootIno, "old")) == old);
}

TEST_CASE("scrub --rewrite gives the blocks of a volume made before checksums their checksums") {
  CoreVolume v;
  Reformat(v, false);
  const std::string old = Pattern(62, 5);  // 5 blocks written without checksums
  v.Put(kRootIno, "old", old);
  MakePreChecksum(v);
  v.Open();
  auto scrub = [&](bool rewrite) {
    REQUIRE(v.fs->StartScrub(0, rewrite).ok());
    ScrubStatus s;
    for (int i = 0; i < 3000; ++i) {
      s = v.fs->GetScrubStatus();
      if (s.state != "running") break;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    REQUIRE(s.state == "finished");
    return s;
  };
  ScrubStatus plain = scrub(false);
  CHECK(plain.unverified_blocks == 5);
  CHECK(plain.rewritten_blocks == 0);
  ScrubStatus rw = scrub(true);
  CHECK(rw.rewritten_blocks == 5);
  CHECK(rw.damaged_blocks == 0);
  v.Remount();  // the records are durable and survive
  ScrubStatus after = scrub(false);
  CHECK(after.unverified_blocks == 0);
  CHECK(after.checked_blocks == 5);
  // The old file's blocks are verified now: a changed byte is EIO.
  v.Remount();
  FlipInImage(v.dir, std::string_view(old).substr(2 * kBs, kBs));
  v.Remount();
  std::string got;
  CHECK(ReadRange(v, v.Node(kRootIno, "old"), 0, old.size(), &got).Is(Code::kIOError));
  CHECK(ReadRange(v, v.Node(kRootIno, "old"), 0, 2 * kBs, &got).ok());
  CHECK(got == old.substr(0, 2 * kBs));
}

TEST_CASE("scrub --rewrite racing an overwrite in place gives no block a stale checksum") {
  // A block written before the volume had checksums gets its first one
  // from an overwrite in place (the new bytes') or from scrub --rewrite
  // (the bytes it read). An overwrite of the block between the rewrite's
  // read and its commit must not end under the checksum of the bytes it
  // replaced (docs/integrity.md, "Races"). The test holds the rewrite of
  // the file's first block at that point and overwrites the block from
  // another thread meanwhile; the block must then read as the overwrite.
  CoreVolume v;
  Reformat(v, false);
  const size_t kBlocks = 16;
  std::string model = Pattern(21, kBlocks);
  const NodeId node = v.Put(kRootIno, "f", model);
  MakePreChecksum(v);
  v.Open();
  auto fh = v.fs->OpenFile(node, O_RDWR);
  REQUIRE(fh.ok());
  const std::string fresh = Pattern(22, 1);
  std::atomic<bool> done{false};
  std::thread overwrite;
  std::atomic<int> held{0};
  SyncPoint::SetCallback("RewriteChecksums:BeforeCommit", [&] {
    if (held.fetch_add(1) != 0) return;  // the first block rewritten: the file's first
    overwrite = std::thread([&] {
      auto w = v.fs->Write(*fh, 0, fresh.data(), kBs, /*kernel_times=*/true);
      CHECK(w.ok());
      done = true;
    });
    // Long enough for an overwrite that nothing holds back to finish.
    for (int i = 0; i < 100 && !done; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  });
  SyncPoint::Enable();
  REQUIRE(v.fs->StartScrub(0, /*rewrite=*/true).ok());
  REQUIRE(v.fs->WaitScrub(30));
  SyncPoint::ClearAll();
  SyncPoint::Disable();
  REQUIRE(held.load() >= 1);
  REQUIRE(overwrite.joinable());
  overwrite.join();
  REQUIRE(v.fs->Release(*fh).ok());
  model.replace(0, kBs, fresh);
  v.Remount();
  std::string got;
  CHECK(ReadRange(v, node, 0, model.size(), &got).ok());
  CHECK(got == model);
  CHECK(ChecksumErrors(v) == 0);
  REQUIRE(v.fs->StartScrub(0).ok());
  REQUIRE(v.fs->WaitScrub(30));
  CHECK(v.fs->GetScrubStatus().damaged_blocks == 0);
  CHECK(v.fs->GetScrubStatus().unverified_blocks == 0);
}

namespace {

// Closes v and rewrites its checksums as metadata format 1 kept them, one
// record per block (keys.h LegacyCsumKey), with `format` 1: a volume as
// psmfs before grouped records left it. Returns the records written.
size_t MakeFormat1(CoreVolume& v) {
  REQUIRE(v.fs->Close().ok());
  v.fs.reset();
  auto st = Store::Open(v.dir + "/meta", StoreOptions{});
  REQUIRE(st.ok());
  Store* s = st.value().get();
  Txn t(s);
  size_t records = 0;
  auto it = s->NewIterator(Cf::kCsums);
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    std::string_view k(it->key().data(), it->key().size());
    REQUIRE(k.size() == 9);
    CsumGroup g;
    REQUIRE(DecodeCsumGroup(std::string_view(it->value().data(), it->value().size()), &g));
    for (unsigned i = 0; i < kCsumGroupBlocks; ++i) {
      if (!g.Has(i)) continue;
      std::string val;
      PutLE32(&val, g.crc[i]);
      t.Put(Cf::kCsums, LegacyCsumKey(CsumKeyBlock(k) + i), val);
      ++records;
    }
    t.Delete(Cf::kCsums, k);
  }
  REQUIRE(it->status().ok());
  t.Put(Cf::kVolume, kVolFormat, LE64(kMetaFormatLegacyCsums));
  REQUIRE(t.Commit().ok());
  REQUIRE(s->SyncWal().ok());
  return records;
}

uint64_t StoredFormat(CoreVolume& v) {
  REQUIRE(v.fs->Close().ok());
  v.fs.reset();
  auto st = Store::Open(v.dir + "/meta", StoreOptions{});
  REQUIRE(st.ok());
  std::string f;
  REQUIRE(st.value()->Get(Cf::kVolume, kVolFormat, &f).ok());
  REQUIRE(f.size() == 8);
  return GetLE64(f.data());
}

}  // namespace

TEST_CASE("a volume of metadata format 1 (a checksum record per block) is verified and upgraded") {
  CoreVolume v;
  constexpr size_t kBlocks = 48;
  std::string f = Pattern(70, kBlocks);
  const std::string g = Pattern(71, 3);
  const NodeId fn = v.Put(kRootIno, "f", f);
  v.Put(kRootIno, "g", g);
  v.Remount();
  CHECK(StoredFormat(v) == kMetaFormat);
  v.Open();
  // Each of the 43 data blocks had a checksum, now a record of its own.
  CHECK(MakeFormat1(v) == kBlocks + 3);
  {
    std::string rep;  // read-only: opens it as it is
    auto r = Fsck(v.dir, {}, &rep);
    REQUIRE_MESSAGE(r.ok(), r.status().ToString());
    CHECK_MESSAGE(*r == 0, rep);
  }
  v.Open();
  CHECK(v.ReadAll(fn) == f);
  // Overwrites in place of blocks 3..38 (36 blocks: a whole group of 16
  // at least, and a part of one at an end at least, wherever the file
  // lies), over the per-block records of the same physical blocks: their
  // grouped checksums must win over the older records.
  const std::string fresh = Pattern(72, 36);
  {
    auto fh = v.fs->OpenFile(fn, O_RDWR);
    REQUIRE(fh.ok());
    auto w = v.fs->Write(*fh, 3 * kBs, fresh.data(), fresh.size(), /*kernel_times=*/true);
    REQUIRE(w.ok());
    REQUIRE(v.fs->Release(*fh).ok());
  }
  // In place: the bytes they replaced are gone from the image.
  const std::string image = psm::testutil::FileBytes(v.dir + "/image");
  CHECK(image.find(f.substr(3 * kBs, kBs)) == std::string::npos);
  CHECK(image.find(f.substr(38 * kBs, kBs)) == std::string::npos);
  f.replace(3 * kBs, fresh.size(), fresh);
  v.Remount();
  CHECK(v.ReadAll(fn) == f);
  CHECK(ChecksumErrors(v) == 0);
  // A block only a per-block record covers, and one a group covers: both
  // are verified.
  FlipInImage(v.dir, std::string_view(g).substr(kBs, kBs));
  FlipInImage(v.dir, std::string_view(f).substr(20 * kBs, kBs));
  v.Remount();
  std::string got;
  CHECK(ReadRange(v, v.Node(kRootIno, "g"), 0, g.size(), &got).Is(Code::kIOError));
  CHECK(ReadRange(v, v.Node(kRootIno, "g"), 2 * kBs, kBs, &got).ok());
  CHECK(got == g.substr(2 * kBs));
  CHECK(ReadRange(v, fn, 20 * kBs, kBs, &got).Is(Code::kIOError));
  CHECK(ReadRange(v, fn, 0, 20 * kBs, &got).ok());
  CHECK(got == f.substr(0, 20 * kBs));
  CHECK(ReadRange(v, fn, 21 * kBs, (kBlocks - 21) * kBs, &got).ok());
  CHECK(got == f.substr(21 * kBs));
  CHECK(ChecksumErrors(v) == 2);
  // The read-write mount made it format 2.
  CHECK(StoredFormat(v) == kMetaFormat);
  v.Open();
}

TEST_CASE("a checksum group read before an overwrite never vouches for the bytes it replaced") {
  // Random READs find their checksums in a cache of groups (docs/
  // integrity.md, "The group cache"). A cached group must leave the cache
  // when a commit writes that group: here the file is read (its groups
  // cached), a block is overwritten in place and the overwrite committed,
  // and then the image gets the block's old bytes back behind psmfs's
  // back, as a lost write would leave them. The old bytes must fail
  // against the new checksum, not pass against the cached old one.
  CoreVolume v;
  constexpr size_t kBlocks = 24;
  const std::string f = Pattern(80, kBlocks);
  const NodeId fn = v.Put(kRootIno, "f", f);
  v.Remount();
  std::string got;
  for (size_t k = 0; k < kBlocks; ++k) {  // one-block READs: the point lookups
    REQUIRE(ReadRange(v, fn, k * kBs, kBs, &got).ok());
    REQUIRE(got == f.substr(k * kBs, kBs));
  }
  const std::string fresh = Pattern(81, 1);
  {
    auto fh = v.fs->OpenFile(fn, O_RDWR);
    REQUIRE(fh.ok());
    REQUIRE(v.fs->Write(*fh, 7 * kBs, fresh.data(), kBs, /*kernel_times=*/true).ok());
    REQUIRE(v.fs->Release(*fh).ok());
  }
  REQUIRE(v.fs->SyncAll().ok());  // the staged checksum committed
  REQUIRE(ReadRange(v, fn, 7 * kBs, kBs, &got).ok());
  CHECK(got == fresh);
  // The block's old bytes back where the new ones are (in place: the same
  // physical block), through the image file the daemon reads.
  const std::string image = v.dir + "/image";
  const std::string bytes = psm::testutil::FileBytes(image);
  const size_t at = bytes.find(fresh);
  REQUIRE(at != std::string::npos);
  REQUIRE(at % kBs == 0);
  PutInImage(image, at, f.data() + 7 * kBs);
  CHECK(ReadRange(v, fn, 7 * kBs, kBs, &got).Is(Code::kIOError));
  CHECK(ReadRange(v, fn, 6 * kBs, kBs, &got).ok());
  CHECK(ChecksumErrors(v) == 1);
}

TEST_CASE("a miss of the group cache reads its whole window, and every group of it stays exact") {
  // A READ whose group is not cached reads the 64 groups of its window (4
  // MiB of blocks) and caches them all (docs/integrity.md, "The group
  // cache"). Every block of a file crossing windows must then verify with
  // its own checksum, in any order; and a group cached only because a
  // neighbour was read must leave the cache when a commit writes it, as a
  // group read for itself does.
  CoreVolume v;
  constexpr size_t kBlocks = 2100;  // three windows at least
  const std::string f = Pattern(90, kBlocks);
  const NodeId fn = v.Put(kRootIno, "f", f);
  v.Remount();
  std::string got;
  std::vector<size_t> order(kBlocks);
  for (size_t k = 0; k < kBlocks; ++k) order[k] = k;
  std::mt19937 rng(7);
  std::shuffle(order.begin(), order.end(), rng);
  for (size_t k : order) {
    REQUIRE(ReadRange(v, fn, k * kBs, kBs, &got).ok());
    REQUIRE(got == f.substr(k * kBs, kBs));
  }
  CHECK(ChecksumErrors(v) == 0);
  // Cold again; one block read caches its window's groups. Block 1000 of
  // the file lies in the same window as block 990 (the file is written in
  // one piece) and is never read before it is overwritten.
  v.Remount();
  REQUIRE(ReadRange(v, fn, 990 * kBs, kBs, &got).ok());
  REQUIRE(got == f.substr(990 * kBs, kBs));
  const std::string fresh = Pattern(91, 1);
  {
    auto fh = v.fs->OpenFile(fn, O_RDWR);
    REQUIRE(fh.ok());
    REQUIRE(v.fs->Write(*fh, 1000 * kBs, fresh.data(), kBs, /*kernel_times=*/true).ok());
    REQUIRE(v.fs->Release(*fh).ok());
  }
  REQUIRE(v.fs->SyncAll().ok());
  const std::string image = v.dir + "/image";
  const std::string bytes = psm::testutil::FileBytes(image);
  const size_t at = bytes.find(fresh);
  REQUIRE(at != std::string::npos);
  const size_t at990 = bytes.find(f.substr(990 * kBs, kBs));
  REQUIRE(at990 != std::string::npos);
  // The premise: both blocks in one window of the image.
  REQUIRE(at / kBs / 1024 == at990 / kBs / 1024);
  PutInImage(image, at, f.data() + 1000 * kBs);
  CHECK(ReadRange(v, fn, 1000 * kBs, kBs, &got).Is(Code::kIOError));
  CHECK(ReadRange(v, fn, 999 * kBs, kBs, &got).ok());
  CHECK(got == f.substr(999 * kBs, kBs));
  CHECK(ChecksumErrors(v) == 1);
}

TEST_CASE("the group cache's window holds exactly the groups the store holds") {
  // LoadChecksumsOf, against checksums written straight into a store and
  // kept in a model beside it: whole groups, groups written in parts (merge
  // operands, some flushed to a table and some not), groups never written,
  // across three windows. A miss must cache every group of its window as
  // the store has it (an absent group as empty) and nothing outside it.
  char t[] = "/tmp/psm-csw-XXXXXX";
  const std::string dir = mkdtemp(t);
  {
    StoreOptions o;
    o.create_if_missing = true;
    auto r = Store::Open(dir + "/meta", o);
    REQUIRE(r.ok());
    Store* st = r.value().get();
    PendingChecksums pending(st, nullptr);
    pending.SetLegacy(false);  // a format-2 volume, as a mount finds it
    std::map<BlockNo, uint32_t> model;
    std::mt19937 rng(11);
    constexpr BlockNo kWin = 1024;  // fs_checksum.cc kCsumWindowBlocks
    const BlockNo base = 5 * kWin;  // windows 5, 6 and 7
    auto put = [&](const std::vector<BlockNo>& bs) {
      Txn txn(st);
      ChecksumWriter w(&txn, &pending);
      for (BlockNo b : bs) {
        const uint32_t crc = static_cast<uint32_t>(rng());
        w.Add(b, crc);
        model[b] = crc;
      }
      w.Finish();
      REQUIRE(txn.Commit().ok());
    };
    // Whole groups in window 5; every third group left out.
    std::vector<BlockNo> bs;
    for (BlockNo g = 0; g < kWin / 16; ++g) {
      if (g % 3 == 2) continue;
      for (BlockNo k = 0; k < 16; ++k) bs.push_back(base + g * 16 + k);
    }
    put(bs);
    REQUIRE(st->FlushAll().ok());
    // Parts of groups over windows 5-7, some rewritten: operands in a table
    // and in the memtable.
    for (int round = 0; round < 2; ++round) {
      bs.clear();
      for (int i = 0; i < 700; ++i) bs.push_back(base + rng() % (3 * kWin));
      std::sort(bs.begin(), bs.end());
      bs.erase(std::unique(bs.begin(), bs.end()), bs.end());
      put(bs);
      if (round == 0) REQUIRE(st->FlushAll().ok());
    }
    auto expect = [&](BlockNo b) -> std::optional<uint32_t> {
      auto it = model.find(b);
      return it == model.end() ? std::nullopt : std::optional<uint32_t>(it->second);
    };
    // One block of window 6: its window cached, whole and exact.
    const BlockNo probe = base + kWin + 333;
    std::vector<std::optional<uint32_t>> out;
    REQUIRE(LoadChecksumsOf(st, {probe}, &out, &pending).ok());
    CHECK(out[0] == expect(probe));
    int wrong = 0, uncached = 0;
    for (BlockNo g = base + kWin; g < base + 2 * kWin; g += 16) {
      CsumGroup grp;
      if (!pending.CachedGroup(g, &grp)) {
        ++uncached;
        continue;
      }
      for (unsigned k = 0; k < 16; ++k) {
        const std::optional<uint32_t> got =
            grp.Has(k) ? std::optional<uint32_t>(grp.crc[k]) : std::nullopt;
        if (got != expect(g + k)) ++wrong;
      }
    }
    CHECK(uncached == 0);
    CHECK(wrong == 0);
    CsumGroup grp;
    CHECK_FALSE(pending.CachedGroup(base + kWin - 16, &grp));
    CHECK_FALSE(pending.CachedGroup(base + 2 * kWin, &grp));
    // Any blocks, any order, cached or not: what the model says.
    for (int i = 0; i < 50; ++i) {
      std::vector<BlockNo> ask;
      for (int k = 0; k < 1 + i % 9; ++k) ask.push_back(base - 40 + rng() % (3 * kWin + 80));
      REQUIRE(LoadChecksumsOf(st, ask, &out, &pending).ok());
      for (size_t k = 0; k < ask.size(); ++k) {
        if (out[k] != expect(ask[k])) ++wrong;
      }
    }
    CHECK(wrong == 0);
  }
  std::filesystem::remove_all(dir);
}
