// The mirror through the core (docs/integrity.md, "Mirror"): a block bad on
// one side (a changed byte, a bad sector) is read from the other and
// rewritten; bad on both fails with EIO; scrub repairs either side; a
// missing mirror mounts degraded and is resilvered when it is back; attach
// and detach on a volume with data. Blocks are found by searching the image
// files for the pattern written; expectations come from the pattern and
// from the other image file, never from psmfs.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <thread>

#include "fs/device/fault_device.h"
#include "tests/common/core_test_util.h"
#include "tests/common/image_block.h"

using namespace psm;
using psm::testutil::BytesAt;
using psm::testutil::FileBytes;
using psm_test::CoreVolume;

namespace {

constexpr size_t kBs = 4096;
constexpr uint64_t kSize = 64ull << 20;

std::string Pattern(uint64_t seed, size_t blocks) {
  return psm_test::Pattern(blocks * kBs, static_cast<uint32_t>(seed));
}

// A volume with a mirror file next to it.
struct MirroredVolume : CoreVolume {
  std::string image, mirror;
  MirroredVolume() {
    image = dir + "/image";
    mirror = dir + "/mirror.img";
    REQUIRE(fs->Close().ok());
    fs.reset();
    FormatOptions fo;
    fo.size_bytes = kSize;
    fo.force = true;
    fo.mirror_path = mirror;
    Status s = Format(dir, fo);
    REQUIRE_MESSAGE(s.ok(), s.ToString());
    Open();
  }
  void Close() {
    REQUIRE(fs->Close().ok());
    fs.reset();
  }
  ScrubStatus Scrub() {
    REQUIRE(fs->StartScrub(0).ok());
    for (int i = 0; i < 3000; ++i) {
      ScrubStatus st = fs->GetScrubStatus();
      if (st.state != "running") return st;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    FAIL("scrub did not end in 15 s");
    return {};
  }
};

}  // namespace

TEST_CASE("mirror: a changed block in the image is read from the mirror and rewritten") {
  MirroredVolume v;
  const std::string data = Pattern(1, 8);
  NodeId n = v.Put(kRootIno, "f", data);
  v.Remount();
  const std::string block = data.substr(3 * kBs, kBs);
  const uint64_t at = psm::testutil::FlipInImage(v.image, block, 100);
  CHECK(BytesAt(v.mirror, at, kBs) == block);  // the mirror's copy is intact
  n = v.Node(kRootIno, "f");
  CHECK(v.ReadAll(n) == data);
  const VolumeStats st = v.fs->Stats();
  CHECK(st.checksum_errors == 0);  // served: no read failed
  CHECK(st.mirror.sides[0].checksum_errors == 1);
  CHECK(st.mirror.sides[0].repaired_blocks == 1);
  v.Close();
  CHECK(BytesAt(v.image, at, kBs) == block);
  v.Open();
}

TEST_CASE("mirror: bad on both sides fails with EIO and serves no changed byte") {
  MirroredVolume v;
  const std::string data = Pattern(2, 4);
  v.Put(kRootIno, "f", data);
  v.Remount();
  const std::string block = data.substr(kBs, kBs);
  psm::testutil::FlipInImage(v.image, block, 10);
  psm::testutil::FlipInImage(v.mirror, block, 20);
  NodeId n = v.Node(kRootIno, "f");
  auto fh = v.fs->OpenFile(n, O_RDONLY);
  REQUIRE(fh.ok());
  std::string buf(data.size(), '\0');
  auto r = v.fs->Read(*fh, 0, buf.size(), buf.data());
  CHECK(r.status().Is(Code::kIOError));
  // The intact blocks still read.
  auto r2 = v.fs->Read(*fh, 2 * kBs, 2 * kBs, buf.data());
  REQUIRE(r2.ok());
  CHECK(buf.substr(0, 2 * kBs) == data.substr(2 * kBs, 2 * kBs));
  REQUIRE(v.fs->Release(*fh).ok());
  CHECK(v.fs->Stats().checksum_errors == 1);
  // Scrub finds it damaged and repairs nothing.
  ScrubStatus s = v.Scrub();
  CHECK(s.damaged_blocks == 1);
  CHECK(s.repaired_blocks == 0);
}

TEST_CASE("mirror: scrub repairs a block damaged on either side") {
  MirroredVolume v;
  const std::string a = Pattern(3, 6), b = Pattern(4, 6);
  v.Put(kRootIno, "a", a);
  v.Put(kRootIno, "b", b);
  REQUIRE(v.fs->CreateSnapshot("s").ok());
  v.Remount();
  const uint64_t at_m = psm::testutil::FlipInImage(v.mirror, a.substr(2 * kBs, kBs), 7);
  const uint64_t at_i = psm::testutil::FlipInImage(v.image, b.substr(5 * kBs, kBs), 9);
  ScrubStatus s = v.Scrub();
  CHECK(s.state == "finished");
  CHECK(s.damaged_blocks == 0);
  CHECK(s.repaired_blocks == 2);
  CHECK(BytesAt(v.mirror, at_m, kBs) == a.substr(2 * kBs, kBs));
  CHECK(BytesAt(v.image, at_i, kBs) == b.substr(5 * kBs, kBs));
  // A second scrub finds nothing to do.
  ScrubStatus again = v.Scrub();
  CHECK(again.repaired_blocks == 0);
  CHECK(again.damaged_blocks == 0);
}

TEST_CASE("mirror: an unreadable block of the image (EIO) is read from the mirror") {
  char t[] = "/tmp/psm-core-XXXXXX";
  const std::string dir = mkdtemp(t);
  auto img = std::make_shared<FaultDevice>(NewMemDevice(kSize));
  auto mir = std::make_shared<FaultDevice>(NewMemDevice(kSize));
  FormatOptions fo;
  fo.size_bytes = kSize;
  fo.device = img;
  fo.mirror_path = dir + "/m";
  fo.mirror_device = mir;
  REQUIRE(Format(dir, fo).ok());
  MountOptions o;
  o.device = img;
  o.mirror_device = mir;
  o.commit_interval_ms = 20;
  const std::string data = Pattern(5, 4);
  Credentials cred;
  {
    auto fs = FileSystem::Open(dir, o);
    REQUIRE(fs.ok());
    auto c = (*fs)->Create(kRootIno, "f", 0644, O_RDWR, cred);
    REQUIRE(c.ok());
    REQUIRE((*fs)->Write(c->second, 0, data.data(), data.size()).ok());
    REQUIRE((*fs)->Release(c->second).ok());
    REQUIRE((*fs)->Close().ok());
  }
  // Where the file's third block sits, from the device's bytes.
  std::string all(kSize, '\0');
  REQUIRE(img->Read(0, all.data(), kSize).ok());
  const size_t at = all.find(data.substr(2 * kBs, kBs));
  REQUIRE(at != std::string::npos);
  img->SetBadRange(at, at + 1);
  auto fs = FileSystem::Open(dir, o);
  REQUIRE(fs.ok());
  auto e = (*fs)->Lookup(kRootIno, "f");
  REQUIRE(e.ok());
  auto fh = (*fs)->OpenFile(e->node, O_RDONLY);
  REQUIRE(fh.ok());
  std::string buf(data.size(), '\0');
  auto r = (*fs)->Read(*fh, 0, buf.size(), buf.data());
  REQUIRE(r.ok());
  CHECK(buf == data);
  REQUIRE((*fs)->Release(*fh).ok());
  const MirrorInfo mi = (*fs)->Stats().mirror;
  CHECK(mi.sides[0].read_errors >= 1);
  CHECK(mi.sides[0].repaired_blocks == 1);  // rewritten (a disk remaps a bad sector on write)
  // Both unreadable: EIO.
  mir->SetBadRange(at, at + 1);
  img->SetBadRange(at, at + 1);
  REQUIRE((*fs)->Close().ok());
  auto fs2 = FileSystem::Open(dir, o);
  REQUIRE(fs2.ok());
  auto fh2 = (*fs2)->OpenFile(e->node, O_RDONLY);
  REQUIRE(fh2.ok());
  CHECK((*fs2)->Read(*fh2, 0, buf.size(), buf.data()).status().Is(Code::kIOError));
  REQUIRE((*fs2)->Release(*fh2).ok());
  REQUIRE((*fs2)->Close().ok());
  std::filesystem::remove_all(dir);
}

TEST_CASE("mirror: missing at mount, the volume runs degraded; back, it is resilvered") {
  MirroredVolume v;
  const std::string a = Pattern(6, 5);
  v.Put(kRootIno, "a", a);
  v.Close();
  std::filesystem::rename(v.mirror, v.mirror + ".away");
  v.Open();
  MirrorInfo mi = v.fs->Stats().mirror;
  CHECK(mi.degraded);
  CHECK(mi.sides[1].health == "missing");
  CHECK(mi.sides[1].reason.find("mirror.img") != std::string::npos);
  const std::string b = Pattern(7, 5);
  v.Put(kRootIno, "b", b);  // reaches the image only
  v.Close();
  std::filesystem::rename(v.mirror + ".away", v.mirror);
  v.Open();
  REQUIRE(v.fs->MirrorWait().ok());
  mi = v.fs->Stats().mirror;
  CHECK(!mi.degraded);
  CHECK(mi.sides[1].health == "online");
  v.Close();
  CHECK(FileBytes(v.image) == FileBytes(v.mirror));
  v.Open();
}

TEST_CASE("mirror: attach to a volume with data, then detach") {
  CoreVolume v;
  const std::string a = Pattern(8, 40);
  v.Put(kRootIno, "a", a);
  REQUIRE(v.fs->CreateSnapshot("s").ok());
  v.Put(kRootIno, "b", Pattern(9, 3));
  const std::string m = v.dir + "/m.img";
  // Refused: the image itself, a directory, a file holding another volume.
  CHECK(v.fs->MirrorAttach(v.dir + "/image", false).Is(Code::kInvalid));
  CHECK(v.fs->MirrorAttach(v.dir, false).Is(Code::kInvalid));
  {
    CoreVolume other;
    REQUIRE(other.fs->Close().ok());
    other.fs.reset();
    std::filesystem::copy_file(other.dir + "/image", m);
    Status s = v.fs->MirrorAttach(m, false);
    CHECK(s.Is(Code::kInvalid));
    CHECK(s.message().find("another psmfs volume") != std::string::npos);
    other.Open();
  }
  REQUIRE(v.fs->MirrorAttach(m, /*force=*/true).ok());
  CHECK(v.fs->MirrorAttach(m, true).Is(Code::kExists));
  REQUIRE(v.fs->MirrorWait().ok());
  CHECK(!v.fs->Stats().mirror.degraded);
  REQUIRE(v.fs->SyncAll().ok());
  // Every byte of the image is on the mirror (the image's holes were never
  // written; what the other volume left there is no block of this one).
  const std::string img = FileBytes(v.dir + "/image");
  const std::string mir = FileBytes(m);
  REQUIRE(mir.size() >= img.size());
  for (size_t o = 0; o < a.size(); o += kBs) {
    const size_t at = img.find(a.substr(o, kBs));
    REQUIRE(at != std::string::npos);
    CHECK(mir.compare(at, kBs, a, o, kBs) == 0);
  }
  // Damage in the image is now healed from the mirror.
  v.Remount();
  psm::testutil::FlipInImage(v.dir + "/image", a.substr(7 * kBs, kBs), 1);
  CHECK(v.ReadAll(v.Node(kRootIno, "a")) == a);
  REQUIRE(v.fs->MirrorDetach().ok());
  CHECK(!v.fs->Stats().mirror.mirrored);
  CHECK(!std::filesystem::exists(v.dir + "/mirror"));
  CHECK(v.fs->MirrorDetach().Is(Code::kNotFound));
  v.Remount();
  CHECK(!v.fs->Stats().mirror.mirrored);
  CHECK(v.ReadAll(v.Node(kRootIno, "a")) == a);
}

TEST_CASE("mirror: a changed block in a fragmented file (short runs, verified in a batch) heals") {
  MirroredVolume v;
  std::string model = Pattern(10, 16);
  NodeId n = v.Put(kRootIno, "frag", model);
  // Every other block rewritten alone: redirected, so the file reads as
  // runs of one block.
  for (size_t b = 1; b < 16; b += 2) {
    const std::string one = Pattern(100 + b, 1);
    REQUIRE(v.WriteAt(n, b * kBs, one).ok());
    model.replace(b * kBs, kBs, one);
  }
  v.Remount();
  const std::string victim = model.substr(5 * kBs, kBs);
  const uint64_t at = psm::testutil::FlipInImage(v.image, victim, 300);
  CHECK(v.ReadAll(v.Node(kRootIno, "frag")) == model);
  CHECK(v.fs->Stats().checksum_errors == 0);
  CHECK(v.fs->Stats().mirror.sides[0].repaired_blocks == 1);
  v.Close();
  CHECK(BytesAt(v.image, at, kBs) == victim);
  v.Open();
}
