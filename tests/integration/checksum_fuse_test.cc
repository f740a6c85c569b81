// Data checksums through a real mount and the real psmctl (issue #15,
// docs/integrity.md): write a known pattern, unmount, find its block in
// VOLUME/image (by searching the image for the pattern: no psmfs involved),
// change one byte, mount again (a new daemon, nothing cached in the kernel)
// and read: EIO, and none of the changed bytes reach the reader; the same
// through .snapshots/NAME/; intact files and blocks read their bytes;
// `psmctl status --json` and `psmctl metrics` count the errors; the daemon's
// log names the path; `psmctl send` of the damaged snapshot fails naming
// the path and writes no whole stream. A --checksum=off volume serves the
// changed byte (nothing is checked), as documented.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "fs/json/control_json.h"
#include "tests/common/fuse_files.h"
#include "tests/common/image_block.h"
#include "tests/common/mount_fixture.h"

using psm::test::MountedVolume;
using psm::test::RunProgram;
using psm::testutil::Ctl;
using psm::testutil::FlipInImage;
using psm::testutil::Pattern;
using psm::testutil::ReadFile;
using psm::testutil::WriteFile;

namespace {

constexpr size_t kBs = 4096;

// Reads `path` sequentially in 4 KiB read(2)s until EOF or an error: the
// bytes returned, and the errno that stopped it (0 at EOF).
std::string ReadUntilError(const std::string& path, int* err) {
  int fd = ::open(path.c_str(), O_RDONLY);
  REQUIRE_MESSAGE(fd >= 0, path << ": " << strerror(errno));
  std::string out;
  char buf[kBs];
  *err = 0;
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      *err = errno;
      break;
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}

// pread of [off, off+n): the errno (0 on success) and the bytes.
int PRead(const std::string& path, off_t off, size_t n, std::string* out) {
  int fd = ::open(path.c_str(), O_RDONLY);
  REQUIRE(fd >= 0);
  out->assign(n, '\0');
  ssize_t r = ::pread(fd, out->data(), n, off);
  int err = r < 0 ? errno : 0;
  ::close(fd);
  if (r >= 0) out->resize(static_cast<size_t>(r));
  return err;
}

uint64_t StatusErrors(const MountedVolume& mv) {
  const psm::Json stats = psm::testutil::StatusStats(mv.mnt);
  CHECK(stats.GetBool("checksums"));
  return stats.GetUint("checksum_errors");
}

}  // namespace

TEST_CASE("checksums: a changed byte in the image is EIO through the mount and .snapshots") {
  auto mv = MountedVolume::Create("64M");
  REQUIRE(::mkdir(mv->Path("d").c_str(), 0755) == 0);
  const std::string victim = Pattern(16 * kBs, 1);
  const std::string intact = Pattern(16 * kBs, 2);
  const std::string old = Pattern(8 * kBs, 3), neu = Pattern(8 * kBs, 4);
  WriteFile(mv->Path("d/victim"), victim);
  WriteFile(mv->Path("d/intact"), intact);
  WriteFile(mv->Path("snapfile"), old);
  auto c = Ctl({"snapshot", "create", mv->mnt, "s1"});
  REQUIRE_MESSAGE(c.ok(), c.output);
  WriteFile(mv->Path("snapfile"), neu, 0, false);  // the live file moves to new blocks
  REQUIRE(mv->Unmount());

  const std::string image = mv->vol + "/image";
  FlipInImage(image, std::string_view(victim).substr(9 * kBs, kBs), 1234);
  FlipInImage(image, std::string_view(old).substr(3 * kBs, kBs), 17);
  REQUIRE(mv->Remount());

  // Live: the blocks before the damaged one come back right, then EIO.
  int err = 0;
  std::string got = ReadUntilError(mv->Path("d/victim"), &err);
  CHECK(err == EIO);
  REQUIRE(got.size() <= 9 * kBs);
  CHECK(got == victim.substr(0, got.size()));
  std::string piece;
  CHECK(PRead(mv->Path("d/victim"), 9 * kBs + 1000, 500, &piece) == EIO);
  CHECK(PRead(mv->Path("d/victim"), 10 * kBs, 6 * kBs, &piece) == 0);
  CHECK(piece == victim.substr(10 * kBs));
  CHECK(ReadFile(mv->Path("d/intact")) == intact);
  // cat fails too.
  auto cat = RunProgram({"/bin/cat", mv->Path("d/victim")});
  CHECK(cat.exit_code != 0);
  CHECK(cat.output.find(victim.substr(9 * kBs, kBs)) == std::string::npos);

  // Snapshot: the same; the live file (new blocks) reads.
  got = ReadUntilError(mv->Path(".snapshots/s1/snapfile"), &err);
  CHECK(err == EIO);
  REQUIRE(got.size() <= 3 * kBs);
  CHECK(got == old.substr(0, got.size()));
  CHECK(ReadFile(mv->Path("snapfile")) == neu);
  CHECK(ReadFile(mv->Path(".snapshots/s1/d/intact")) == intact);

  // Counted and logged.
  CHECK(StatusErrors(*mv) >= 3);
  auto m = Ctl({"metrics", mv->mnt});
  REQUIRE_MESSAGE(m.ok(), m.output);
  CHECK(m.output.find("psmfs_checksum_errors_total{") != std::string::npos);
  const std::string log = mv->LogText();
  CHECK_MESSAGE(log.find("checksum mismatch") != std::string::npos, log);
  CHECK_MESSAGE(log.find("(d/victim) at offset 36864 in the live tree") != std::string::npos, log);
  CHECK_MESSAGE(log.find("(.snapshots/s1/snapfile) at offset 12288 in snapshot 's1'") !=
                    std::string::npos,
                log);

  // send: fails, names the path, and what it wrote is no stream receive
  // takes.
  const std::string stream = mv->dir + "/s1.stream";
  auto s = RunProgram({"/bin/sh", "-c",
                       "'" + psm::test::BinDir() + "/psmctl' send '" + mv->mnt + "' s1 > '" +
                           stream + "'"});
  CHECK(s.exit_code != 0);
  CHECK_MESSAGE(s.output.find(".snapshots/s1/snapfile") != std::string::npos, s.output);
  {
    // Neither the damaged block's bytes nor its good ones are in the stream.
    std::string damaged = old.substr(3 * kBs, kBs);
    damaged[17] = static_cast<char>(damaged[17] ^ 0xff);
    const std::string bytes = ReadFile(stream);
    CHECK(bytes.find(damaged.substr(0, 64)) == std::string::npos);
    CHECK(bytes.find(old.substr(3 * kBs, 64)) == std::string::npos);
    // And receive takes nothing from it.
    auto other = MountedVolume::Create("64M");
    auto rcv = RunProgram({"/bin/sh", "-c",
                           "'" + psm::test::BinDir() + "/psmctl' receive '" + other->mnt +
                               "' < '" + stream + "'"});
    CHECK(rcv.exit_code != 0);
    CHECK(ReadFile(other->mnt + "/.snapshots/s1/snapfile").find("No such file") !=
          std::string::npos);
  }

  // send -o FILE: the same failure, and no FILE (nor a partial one) left;
  // an old FILE stays as it was.
  {
    const std::string out = mv->dir + "/s1-o.stream";
    auto o = Ctl({"send", mv->mnt, "s1", "-o", out});
    CHECK(o.exit_code != 0);
    CHECK_MESSAGE(o.output.find(".snapshots/s1/snapfile") != std::string::npos, o.output);
    CHECK_MESSAGE(o.output.find("nothing written to " + out) != std::string::npos, o.output);
    CHECK(::access(out.c_str(), F_OK) != 0);
    WriteFile(out, "older content");
    CHECK(Ctl({"send", mv->mnt, "s1", "-o", out}).exit_code != 0);
    CHECK(ReadFile(out) == "older content");
    bool leftover = false;
    for (const auto& e : std::filesystem::directory_iterator(mv->dir)) {
      leftover = leftover || e.path().filename().string().find(".partial-") != std::string::npos;
    }
    CHECK_FALSE(leftover);
  }

  // scrub: names every path of each damaged block, and no intact file.
  auto sc = Ctl({"scrub", mv->mnt, "--wait"});
  CHECK_MESSAGE(sc.exit_code == 1, sc.output);
  CHECK_MESSAGE(sc.output.find("  d/victim (offset 36864)\n") != std::string::npos, sc.output);
  CHECK_MESSAGE(sc.output.find("  .snapshots/s1/d/victim (offset 36864)\n") != std::string::npos,
                sc.output);
  CHECK_MESSAGE(sc.output.find("  .snapshots/s1/snapfile (offset 12288)\n") != std::string::npos,
                sc.output);
  CHECK(sc.output.find("intact") == std::string::npos);
  CHECK(sc.output.find("2 damaged block(s)") != std::string::npos);
  auto st = Ctl({"status", mv->mnt});
  CHECK_MESSAGE(st.output.find("damaged block") != std::string::npos, st.output);
  auto sm = Ctl({"metrics", mv->mnt});
  CHECK_MESSAGE(sm.output.find("psmfs_scrub_damaged_blocks{") != std::string::npos, sm.output);
  CHECK(sm.output.find("\npsmfs_scrub_running{") != std::string::npos);
  CHECK(Ctl({"scrub", mv->mnt, "--stop"}).exit_code == 4);  // none runs
  CHECK(Ctl({"scrub", mv->mnt, "--rate", "-3"}).exit_code == 2);

  // A whole-block rewrite of the damaged block heals the live file.
  const std::string fresh = Pattern(kBs, 5);
  WriteFile(mv->Path("d/victim"), fresh, 9 * kBs, false);
  std::string want = victim;
  want.replace(9 * kBs, kBs, fresh);
  CHECK(ReadFile(mv->Path("d/victim")) == want);
  REQUIRE(mv->Unmount());
  REQUIRE(mv->Remount());
  CHECK(ReadFile(mv->Path("d/victim")) == want);
  CHECK(StatusErrors(*mv) == 0);
  // The snapshots still hold the damaged blocks: the last scrub's result
  // survived the remount, and a new scrub finds them again, the live file
  // no more.
  CHECK(Ctl({"status", mv->mnt}).output.find("finished") != std::string::npos);
  auto again = Ctl({"scrub", mv->mnt, "--wait"});
  CHECK(again.exit_code == 1);
  CHECK_MESSAGE(again.output.find("\n  d/victim") == std::string::npos, again.output);
  CHECK(again.output.find("  .snapshots/s1/d/victim (offset 36864)\n") != std::string::npos);
}

TEST_CASE("checksums: SIGKILL after overwrites in place: every block reads old or new, none EIO") {
  // No background sync: the checksums of the overwrites stay in the
  // daemon's unflushed WAL, and the SIGKILL loses them, while the bytes
  // it wrote in place are in the image (the kernel's page cache keeps
  // them). The write intents must make the remount re-checksum them.
  auto mv = MountedVolume::Create("256M", "commit_interval=600000");
  const size_t kBlocks = 2048;  // 8 MiB
  const std::string old = Pattern(kBlocks * kBs, 11);
  WriteFile(mv->Path("f"), old);
  {
    int fd = ::open(mv->Path("f").c_str(), O_RDONLY);
    REQUIRE(fd >= 0);
    REQUIRE(::fsync(fd) == 0);
    ::close(fd);
  }
  std::string fresh = old;
  std::vector<bool> touched(kBlocks, false);
  int fd = ::open(mv->Path("f").c_str(), O_RDWR);
  REQUIRE(fd >= 0);
  uint64_t x = 0x9e3779b97f4a7c15ull;
  for (int i = 0; i < 400; ++i) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    const size_t b = x % kBlocks;
    const std::string data = Pattern(kBs, static_cast<unsigned>(1000 + i));
    REQUIRE(::pwrite(fd, data.data(), kBs, static_cast<off_t>(b * kBs)) == static_cast<ssize_t>(kBs));
    fresh.replace(b * kBs, kBs, data);
    touched[b] = true;
  }
  // Write the pages back to the daemon (no FSYNC request: nothing synced).
  REQUIRE(::sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE |
                                          SYNC_FILE_RANGE_WAIT_AFTER) == 0);
  ::close(fd);
  REQUIRE(mv->Kill9());
  REQUIRE(mv->Remount());
  size_t eio = 0, wrong = 0, now_new = 0;
  for (size_t b = 0; b < kBlocks; ++b) {
    std::string got;
    if (PRead(mv->Path("f"), static_cast<off_t>(b * kBs), kBs, &got) != 0) {
      ++eio;
      continue;
    }
    const bool is_old = got.compare(0, kBs, old, b * kBs, kBs) == 0;
    const bool is_new = got.compare(0, kBs, fresh, b * kBs, kBs) == 0;
    if (!is_old && !is_new) ++wrong;
    if (touched[b] && is_new && !is_old) ++now_new;
  }
  CHECK_MESSAGE(eio == 0, eio << " blocks fail with EIO after the SIGKILL");
  CHECK_MESSAGE(wrong == 0, wrong << " blocks hold neither their old nor their new bytes");
  CHECK(StatusErrors(*mv) == 0);
  // The case the test is about happened: overwritten bytes survived the
  // kill without their checksums (else it proved nothing).
  CHECK(now_new > 0);
  auto r = Ctl({"status", mv->mnt, "--json"});
  REQUIRE(r.ok());
  auto j = psm::Json::Parse(r.output);
  REQUIRE(j.ok());
  CHECK(j.value().Find("stats")->GetUint("intent_recovered_blocks") > 0);
}

TEST_CASE("checksums: mkfs --checksum=off checks nothing") {
  auto mv = MountedVolume::Create("64M");
  REQUIRE(mv->Unmount());
  auto r = Ctl({"mkfs", mv->vol, "--size", "64M", "--checksum=off", "--force"});
  REQUIRE_MESSAGE(r.ok(), r.output);
  CHECK(r.output.find("checksums   off") != std::string::npos);
  auto bad = Ctl({"mkfs", mv->vol, "--size", "64M", "--checksum=maybe", "--force"});
  CHECK(bad.exit_code == 2);
  CHECK(bad.output.find("--checksum must be 'on' or 'off'") != std::string::npos);
  REQUIRE(mv->Remount());
  const std::string data = Pattern(4 * kBs, 9);
  WriteFile(mv->Path("f"), data);
  auto st = Ctl({"status", mv->mnt});
  CHECK_MESSAGE(st.output.find("Checksums:         off, 0 checksum error(s)") != std::string::npos,
                st.output);
  REQUIRE(mv->Unmount());
  FlipInImage(mv->vol + "/image", std::string_view(data).substr(2 * kBs, kBs), 5);
  REQUIRE(mv->Remount());
  std::string want = data;
  want[2 * kBs + 5] = static_cast<char>(want[2 * kBs + 5] ^ 0xff);
  CHECK(ReadFile(mv->Path("f")) == want);
  auto m = Ctl({"metrics", mv->mnt});
  CHECK(m.output.find("psmfs_checksum_errors_total") == std::string::npos);
  auto sc = Ctl({"scrub", mv->mnt});
  CHECK(sc.exit_code == 1);
  CHECK_MESSAGE(sc.output.find("--checksum=off") != std::string::npos, sc.output);
}
