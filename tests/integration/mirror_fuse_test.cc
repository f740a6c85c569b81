// The mirror through a real mount and the real psmctl (issue #15 item 5,
// docs/integrity.md "Mirror"): `psmctl mkfs --mirror`; a byte changed in the
// image under a live file and under a snapshot's file reads right through
// the mount and the image holds the right bytes again afterwards; scrub
// rewrites a block changed in the mirror; a missing mirror mounts degraded
// (status, metrics) and is resilvered when it is back; `psmctl mirror
// attach` to a mounted volume resilvers while files are written, survives a
// SIGKILL of the daemon mid-resilver (it resumes at the next mount and
// nothing is lost), and `detach` forgets it. Where a block sits is found by
// searching the image files for the pattern written; expected bytes come
// from the patterns and from the other image file, never from psmfs.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <string>
#include <thread>
#include <unordered_map>

#include "fs/json/control_json.h"
#include "tests/common/fuse_files.h"
#include "tests/common/image_block.h"
#include "tests/common/mount_fixture.h"

using psm::test::BinDir;
using psm::test::MountedVolume;
using psm::test::RunProgram;
using psm::testutil::BytesAt;
using psm::testutil::Ctl;
using psm::testutil::FileBytes;
using psm::testutil::FlipInImage;
using psm::testutil::Pattern;
using psm::testutil::ReadFile;
using psm::testutil::WriteFile;

namespace {

constexpr size_t kBs = 4096;

psm::Json MirrorJson(const MountedVolume& mv) {
  auto r = Ctl({"status", mv.mnt, "--json"});
  REQUIRE_MESSAGE(r.exit_code == 0, r.output);
  auto j = psm::Json::Parse(r.output);
  REQUIRE_MESSAGE(j.ok(), r.output);
  const psm::Json* stats = j.value().Find("stats");
  REQUIRE_MESSAGE(stats != nullptr, r.output);
  const psm::Json* m = stats->Find("mirror");
  REQUIRE_MESSAGE(m != nullptr, r.output);
  return *m;
}

uint64_t SideCount(const psm::Json& m, int side, const char* key) {
  const psm::Json* sides = m.Find("sides");
  REQUIRE(sides != nullptr);
  REQUIRE(sides->items().size() == 2);
  return sides->items()[static_cast<size_t>(side)].GetUint(key);
}

// Every block of every file of `model` is in both image files at the same
// offset. Data blocks sit at multiples of the block size: one pass indexes
// the image.
void CheckBothHold(const std::string& image, const std::string& mirror,
                   const std::map<std::string, std::string>& model) {
  const std::string a = FileBytes(image), b = FileBytes(mirror);
  std::unordered_map<std::string_view, size_t> at_of;
  for (size_t o = 0; o + kBs <= a.size(); o += kBs) {
    at_of.emplace(std::string_view(a).substr(o, kBs), o);
  }
  for (const auto& [what, data] : model) {
    for (size_t o = 0; o + kBs <= data.size(); o += kBs) {
      auto it = at_of.find(std::string_view(data).substr(o, kBs));
      REQUIRE_MESSAGE(it != at_of.end(), what << " block " << o / kBs << " not in the image");
      CHECK_MESSAGE(b.compare(it->second, kBs, data, o, kBs) == 0,
                    what << " block " << o / kBs << " differs on the mirror");
    }
  }
}

// Polls `psmctl status --json` until the mirror is no longer degraded
// (30 s at most).
bool WaitOnline(const MountedVolume& mv) {
  for (int i = 0; i < 300; ++i) {
    if (!MirrorJson(mv).GetBool("degraded")) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return false;
}

// Formats mv's volume again with a mirror at mv.dir/mirror.img.
std::string Remkfs(MountedVolume& mv, const std::string& size) {
  REQUIRE(mv.Unmount());
  const std::string mirror = mv.dir + "/mirror.img";
  auto r = Ctl({"mkfs", mv.vol, "--size", size, "--mirror", mirror, "--force"});
  REQUIRE_MESSAGE(r.ok(), r.output);
  CHECK(r.output.find("mirror      " + mirror) != std::string::npos);
  REQUIRE(mv.Remount());
  return mirror;
}

}  // namespace

TEST_CASE("mirror: changed bytes in the image read right, live and in .snapshots, and are healed") {
  auto mv = MountedVolume::Create("64M");
  const std::string mirror = Remkfs(*mv, "64M");
  const std::string image = mv->vol + "/image";
  REQUIRE(::mkdir(mv->Path("d").c_str(), 0755) == 0);
  const std::string victim = Pattern(16 * kBs, 1), intact = Pattern(16 * kBs, 2);
  const std::string old = Pattern(8 * kBs, 3), neu = Pattern(8 * kBs, 4);
  WriteFile(mv->Path("d/victim"), victim);
  WriteFile(mv->Path("d/intact"), intact);
  WriteFile(mv->Path("snapfile"), old);
  auto c = Ctl({"snapshot", "create", mv->mnt, "s1"});
  REQUIRE_MESSAGE(c.ok(), c.output);
  WriteFile(mv->Path("snapfile"), neu, 0, false);
  REQUIRE(mv->Unmount());
  CHECK(FileBytes(image) == FileBytes(mirror));

  const std::string vb = victim.substr(9 * kBs, kBs), ob = old.substr(3 * kBs, kBs);
  const uint64_t at_v = FlipInImage(image, vb, 1234);
  const uint64_t at_o = FlipInImage(image, ob, 17);
  REQUIRE(mv->Remount());
  CHECK(ReadFile(mv->Path("d/victim")) == victim);
  CHECK(ReadFile(mv->Path(".snapshots/s1/snapfile")) == old);
  CHECK(ReadFile(mv->Path("d/intact")) == intact);
  psm::Json m = MirrorJson(*mv);
  CHECK(m.GetBool("mirrored"));
  CHECK_FALSE(m.GetBool("degraded"));
  CHECK(SideCount(m, 0, "repaired_blocks") == 2);
  CHECK(SideCount(m, 0, "checksum_errors") == 2);
  REQUIRE(mv->Unmount());
  CHECK(BytesAt(image, at_v, kBs) == vb);
  CHECK(BytesAt(image, at_o, kBs) == ob);
  // The daemon's log says what it did.
  CHECK(mv->LogText().find("served from the mirror and rewritten") != std::string::npos);

  // A changed block in the mirror: nobody reads it there; scrub finds and
  // rewrites it.
  const std::string ib = intact.substr(5 * kBs, kBs);
  const uint64_t at_i = FlipInImage(mirror, ib, 99);
  REQUIRE(mv->Remount());
  auto s = Ctl({"scrub", mv->mnt, "--wait"});
  CHECK_MESSAGE(s.exit_code == 0, s.output);
  CHECK_MESSAGE(s.output.find("1 repaired from the other side of the mirror") != std::string::npos,
                s.output);
  auto st = Ctl({"status", mv->mnt});
  CHECK(st.output.find("ONLINE") != std::string::npos);
  // --rewrite on a volume whose blocks all have checksums gives none.
  auto rw = Ctl({"scrub", mv->mnt, "--wait", "--rewrite"});
  CHECK_MESSAGE(rw.exit_code == 0, rw.output);
  CHECK(rw.output.find("given one") == std::string::npos);
  CHECK(Ctl({"scrub", mv->mnt, "--stop", "--rewrite"}).exit_code == 2);
  REQUIRE(mv->Unmount());
  CHECK(BytesAt(mirror, at_i, kBs) == ib);
  CHECK(FileBytes(image) == FileBytes(mirror));
}

TEST_CASE("mirror: missing, the volume mounts degraded and says so; back, it is resilvered") {
  auto mv = MountedVolume::Create("64M");
  const std::string mirror = Remkfs(*mv, "64M");
  const std::string image = mv->vol + "/image";
  const std::string a = Pattern(40 * kBs, 5), b = Pattern(40 * kBs, 6);
  WriteFile(mv->Path("a"), a);
  REQUIRE(mv->Unmount());
  std::filesystem::rename(mirror, mirror + ".away");
  REQUIRE(mv->Remount());
  auto st = Ctl({"status", mv->mnt});
  CHECK(st.exit_code == 0);
  CHECK_MESSAGE(st.output.find("DEGRADED") != std::string::npos, st.output);
  CHECK(st.output.find("missing") != std::string::npos);
  auto met = Ctl({"metrics", mv->mnt});
  REQUIRE_MESSAGE(met.ok(), met.output);
  CHECK_MESSAGE(met.output.find("psmfs_mirror_degraded{") != std::string::npos, met.output);
  const size_t g = met.output.find("psmfs_mirror_degraded{");
  CHECK(met.output.substr(met.output.find('}', g) + 1, 2) == " 1");
  CHECK(mv->LogText().find("DEGRADED") != std::string::npos);
  WriteFile(mv->Path("b"), b);  // the image only
  REQUIRE(mv->Unmount());
  std::filesystem::rename(mirror + ".away", mirror);
  REQUIRE(mv->Remount());
  CHECK_MESSAGE(WaitOnline(*mv), "the mirror was not resilvered within 30 s");
  REQUIRE(mv->Unmount());
  CHECK(FileBytes(image) == FileBytes(mirror));
  CHECK_MESSAGE(mv->LogText().find("resilver of the mirror") != std::string::npos, mv->LogText());
}

TEST_CASE("mirror: attach while files are written, SIGKILL mid-resilver, resume; detach") {
  auto mv = MountedVolume::Create("64M", "resilver_rate=8");
  const std::string image = mv->vol + "/image";
  const std::string mirror = mv->dir + "/attached.img";
  std::map<std::string, std::string> model;
  for (int i = 0; i < 12; ++i) {
    const std::string name = "f" + std::to_string(i);
    model[name] = Pattern(256 * kBs, 100 + i);  // 1 MiB each
    WriteFile(mv->Path(name), model[name]);
  }
  auto sync = Ctl({"sync", mv->mnt});
  REQUIRE_MESSAGE(sync.ok(), sync.output);
  // Refusals first: not root, the image itself, no such directory.
  auto r = RunProgram({"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                       BinDir() + "/psmctl", "mirror", "attach", mv->mnt, "/tmp/psm-nope.img"});
  CHECK(r.exit_code != 0);
  CHECK_MESSAGE(r.output.find("requires root") != std::string::npos, r.output);
  CHECK(!std::filesystem::exists("/tmp/psm-nope.img"));
  r = Ctl({"mirror", "attach", mv->mnt, image});
  CHECK(r.exit_code != 0);
  CHECK_MESSAGE(r.output.find("own image") != std::string::npos, r.output);
  r = Ctl({"mirror", "attach", mv->mnt, "/nonexistent-dir/m.img"});
  CHECK(r.exit_code != 0);
  CHECK(MirrorJson(*mv).GetBool("mirrored") == false);

  r = Ctl({"mirror", "attach", mv->mnt, mirror});
  REQUIRE_MESSAGE(r.ok(), r.output);
  // Writes while it resilvers (8 MB/s over a 64 MiB image: about 8 s).
  for (int i = 12; i < 16; ++i) {
    const std::string name = "f" + std::to_string(i);
    model[name] = Pattern(64 * kBs, 100 + i);
    WriteFile(mv->Path(name), model[name]);
  }
  sync = Ctl({"sync", mv->mnt});
  REQUIRE_MESSAGE(sync.ok(), sync.output);
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  psm::Json m = MirrorJson(*mv);
  CHECK(m.GetBool("resilvering"));
  CHECK(m.GetBool("degraded"));
  auto st = Ctl({"status", mv->mnt});
  CHECK_MESSAGE(st.output.find("RESILVERING") != std::string::npos, st.output);
  REQUIRE(mv->Kill9());
  // The state file says where to resume.
  const std::string state = FileBytes(mv->vol + "/mirror");
  CHECK_MESSAGE(state.find("stale 1") != std::string::npos, state);

  mv->opts = "";  // full speed now
  REQUIRE(mv->Remount());
  CHECK_MESSAGE(WaitOnline(*mv), "the resilver did not finish within 30 s of the remount");
  for (const auto& [name, data] : model) CHECK_MESSAGE(ReadFile(mv->Path(name)) == data, name);
  REQUIRE(mv->Unmount());
  CheckBothHold(image, mirror, model);

  REQUIRE(mv->Remount());
  r = Ctl({"mirror", "detach", mv->mnt});
  REQUIRE_MESSAGE(r.ok(), r.output);
  CHECK(!std::filesystem::exists(mv->vol + "/mirror"));
  st = Ctl({"status", mv->mnt});
  CHECK(st.output.find("Mirror:            none") != std::string::npos);
  r = Ctl({"mirror", "detach", mv->mnt});
  CHECK(r.exit_code == 4);
  REQUIRE(mv->Unmount());

  // Offline: attach to the unmounted volume (waits for the resilver), then
  // status offline, then mount.
  std::filesystem::remove(mirror);
  r = Ctl({"mirror", "attach", mv->vol, mirror});
  REQUIRE_MESSAGE(r.ok(), r.output);
  CHECK_MESSAGE(r.output.find("ONLINE") != std::string::npos, r.output);
  CheckBothHold(image, mirror, model);
  r = Ctl({"mirror", "status", mv->vol});
  CHECK_MESSAGE(r.output.find("ONLINE") != std::string::npos, r.output);
  REQUIRE(mv->Remount());
  CHECK(!MirrorJson(*mv).GetBool("degraded"));
}
