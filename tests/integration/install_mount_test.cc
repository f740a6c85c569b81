// Mounting like any other file system (label fuse): `make install` into a
// temporary prefix lists the expected files; `mount -t fuse.psmfs` (through
// libfuse's mount.fuse3 and psmfs on PATH), an fstab line (`mount --fstab`),
// and the installed /sbin-style helper mount.fuse.psmfs all mount a volume
// with allow_other, default_permissions and snapdir=hidden while ignoring
// fstab-only words (defaults, _netdev, nofail, x-systemd.*); umount stops
// the daemon cleanly. Bad options exit non-zero and mount nothing.
#include <dirent.h>
#include <doctest/doctest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <thread>

#include "tests/common/mount_fixture.h"

namespace {

namespace fsys = std::filesystem;
using psm::test::BinDir;
using psm::test::IsMountPoint;
using psm::test::ProgramResult;
using psm::test::RunProgram;

struct TmpDir {
  std::string path;
  TmpDir() {
    char t[] = "/tmp/psm-install-XXXXXX";
    path = mkdtemp(t);
  }
  ~TmpDir() {
    if (IsMountPoint(path + "/mnt", "")) RunProgram({"umount", "-l", path + "/mnt"});
    if (!std::getenv("PSMFS_KEEP_TMP")) fsys::remove_all(path);
  }
};

std::set<std::string> Listing(const std::string& dir) {
  std::set<std::string> out;
  DIR* d = opendir(dir.c_str());
  if (!d) return out;
  while (dirent* e = readdir(d)) out.insert(e->d_name);
  closedir(d);
  return out;
}

std::string ReadText(const std::string& p) {
  std::ifstream in(p);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// The options field of the mount at `mnt` in /proc/self/mountinfo.
std::string MountOptions(const std::string& mnt) {
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.find(" " + mnt + " ") != std::string::npos) return line;
  }
  return "";
}

// After umount the daemon flushes and exits; the volume is free once fsck
// (which refuses a mounted volume) succeeds.
bool WaitVolumeFree(const std::string& psmctl, const std::string& vol) {
  for (int i = 0; i < 300; ++i) {
    if (RunProgram({psmctl, "fsck", vol}, 60).ok()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return false;
}

}  // namespace

TEST_CASE("make install, mount -t fuse.psmfs, fstab and the mount.fuse.psmfs helper") {
  TmpDir t;
  const std::string prefix = t.path + "/prefix";
  const std::string build = fsys::path(BinDir()).parent_path().string();
  ProgramResult inst = RunProgram({"cmake", "--install", build, "--prefix", prefix}, 300);
  REQUIRE_MESSAGE(inst.ok(), inst.output);

  // ---- what got installed
  for (const char* f : {"bin/psmfs", "bin/psmctl", "lib/systemd/system/psmfs@.service",
                        "share/man/man8/psmfs.8", "share/man/man8/psmctl.8",
                        "share/man/man8/mount.fuse.psmfs.8", "share/doc/psmfs/user-guide.md",
                        "share/doc/psmfs/examples/smb.conf", "share/doc/psmfs/examples/fstab"}) {
    CHECK_MESSAGE(fsys::exists(prefix + "/" + f), f);
  }
  struct stat st {};
  REQUIRE(lstat((prefix + "/sbin/mount.fuse.psmfs").c_str(), &st) == 0);
  CHECK(S_ISLNK(st.st_mode));
  CHECK(fsys::read_symlink(prefix + "/sbin/mount.fuse.psmfs") == "../bin/psmfs");
  CHECK(access((prefix + "/bin/psmfs").c_str(), X_OK) == 0);
  const std::string unit = ReadText(prefix + "/lib/systemd/system/psmfs@.service");
  CHECK(unit.find("ExecStart=" + prefix + "/bin/psmfs -f") != std::string::npos);
  CHECK(unit.find("Type=notify") != std::string::npos);
  CHECK(unit.find("@PSM_") == std::string::npos);
  // Every command has a man page.
  for (const char* m : {"psmctl-schedule.8", "psmctl-prune.8", "psmctl-history.8",
                        "psmctl-diff.8", "psmctl-snapshot.8"}) {
    CHECK_MESSAGE(fsys::exists(prefix + "/share/man/man8/" + m), m);
  }
  if (access("/usr/bin/systemd-analyze", X_OK) == 0) {
    // Verify an instance of the template (systemd-analyze needs a real name).
    const std::string udir = t.path + "/units";
    fsys::create_directories(udir);
    fsys::copy_file(prefix + "/lib/systemd/system/psmfs@.service", udir + "/psmfs@.service");
    ProgramResult v = RunProgram({"systemd-analyze", "verify", "--man=no", udir + "/psmfs@vol.service"}, 60);
    // Outside a booted systemd, verify may not run at all; what it must not
    // report is a problem in our unit's syntax.
    CHECK_MESSAGE(v.output.find("psmfs@") == std::string::npos ||
                      v.output.find("Unknown") == std::string::npos,
                  v.output);
    MESSAGE("systemd-analyze verify: exit " << v.exit_code << "\n" << v.output);
  }

  // ---- a volume
  const std::string psmctl = prefix + "/bin/psmctl";
  const std::string vol = t.path + "/vol", mnt = t.path + "/mnt";
  fsys::create_directories(mnt);
  ProgramResult mk = RunProgram({psmctl, "mkfs", vol, "--size", "256M"});
  REQUIRE_MESSAGE(mk.ok(), mk.output);

  SUBCASE("mount -t fuse.psmfs with fstab-only options, then umount") {
    const std::string path = prefix + "/bin:" + std::string(std::getenv("PATH") ? std::getenv("PATH") : "");
    ProgramResult m = RunProgram(
        {"env", "PATH=" + path, "mount", "-t", "fuse.psmfs", vol, mnt, "-o",
         "defaults,allow_other,default_permissions,snapdir=hidden,_netdev,nofail,x-systemd."
         "automount"});
    REQUIRE_MESSAGE(m.ok(), m.output);
    REQUIRE(IsMountPoint(mnt, "fuse.psmfs"));
    const std::string mi = MountOptions(mnt);
    CHECK_MESSAGE(mi.find("allow_other") != std::string::npos, mi);
    CHECK_MESSAGE(mi.find("default_permissions") != std::string::npos, mi);
    { std::ofstream(mnt + "/hello") << "hi"; }
    ProgramResult s = RunProgram({psmctl, "snapshot", "create", mnt, "first"});
    CHECK_MESSAGE(s.ok(), s.output);
    // snapdir=hidden: not listed, reachable by name.
    std::set<std::string> root = Listing(mnt);
    CHECK(root.count("hello") == 1);
    CHECK(root.count(".snapshots") == 0);
    CHECK(ReadText(mnt + "/.snapshots/first/hello") == "hi");
    CHECK(Listing(mnt + "/.snapshots").count("first") == 1);
    ProgramResult u = RunProgram({"umount", mnt});
    CHECK_MESSAGE(u.ok(), u.output);
    CHECK_FALSE(IsMountPoint(mnt, ""));
    CHECK(WaitVolumeFree(psmctl, vol));
  }

  SUBCASE("an /etc/fstab line (mount --fstab) and the installed helper") {
    const std::string fstab = t.path + "/fstab";
    std::ofstream(fstab) << "# test fstab\n"
                         << vol << "  " << mnt
                         << "  fuse.psmfs  defaults,snapdir=visible,_netdev,nofail,x-systemd.requires=x.service  0  0\n";
    const std::string path = prefix + "/bin:" + std::string(std::getenv("PATH") ? std::getenv("PATH") : "");
    ProgramResult m = RunProgram({"env", "PATH=" + path, "mount", "--fstab", fstab, mnt});
    REQUIRE_MESSAGE(m.ok(), m.output);
    REQUIRE(IsMountPoint(mnt, "fuse.psmfs"));
    CHECK(Listing(mnt).count(".snapshots") == 1);  // visible
    CHECK(RunProgram({"umount", mnt}).ok());
    CHECK(WaitVolumeFree(psmctl, vol));

    // The helper itself, called as mount(8) calls /sbin/mount.fuse.psmfs.
    const std::string helper = prefix + "/sbin/mount.fuse.psmfs";
    ProgramResult h = RunProgram({helper, vol, mnt, "-n", "-o", "rw,nofail,snapdir=hidden",
                                  "-t", "fuse.psmfs"});
    REQUIRE_MESSAGE(h.ok(), h.output);
    REQUIRE(IsMountPoint(mnt, "fuse.psmfs"));
    CHECK(Listing(mnt).count(".snapshots") == 0);
    CHECK(RunProgram({"umount", mnt}).ok());
    CHECK(WaitVolumeFree(psmctl, vol));

    // Bad input: a clear message, non-zero exit, nothing mounted.
    ProgramResult bad = RunProgram({helper, vol, mnt, "-o", "snapdir=sideways"});
    CHECK(bad.exit_code == 2);
    CHECK_MESSAGE(bad.output.find("snapdir=sideways") != std::string::npos, bad.output);
    CHECK_FALSE(IsMountPoint(mnt, ""));
    ProgramResult bad2 = RunProgram({helper, vol, mnt, "-t", "ext4"});
    CHECK(bad2.exit_code == 2);
    CHECK_MESSAGE(bad2.output.find("ext4") != std::string::npos, bad2.output);
    // -f (fake): everything checked, nothing mounted, exit 0.
    CHECK(RunProgram({helper, "-f", vol, mnt}).ok());
    CHECK_FALSE(IsMountPoint(mnt, ""));
  }
}
