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
  for (const char* f : {"bin/psmfs", "bin/psmctl", "libexec/psmfs/psmctl-offline",
                        "lib/systemd/system/psmfs@.service",
                        "lib/systemd/system/psmfs-metrics.service",
                        "lib/systemd/system/psmfs-metrics.timer",
                        "share/man/man8/psmfs.8", "share/man/man8/psmctl.8",
                        "share/man/man8/mount.fuse.psmfs.8", "share/doc/psmfs/user-guide.md",
                        "share/doc/psmfs/monitoring.md", "share/doc/psmfs/examples/smb.conf",
                        "share/doc/psmfs/examples/fstab",
                        "share/doc/psmfs/examples/psmfs-metrics.cron"}) {
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
  // The metrics service runs this prefix's psmctl and writes atomically.
  const std::string metrics_unit = ReadText(prefix + "/lib/systemd/system/psmfs-metrics.service");
  CHECK(metrics_unit.find(prefix + "/bin/psmctl metrics --all") != std::string::npos);
  CHECK(metrics_unit.find("mv -f") != std::string::npos);
  CHECK(metrics_unit.find("@PSM_") == std::string::npos);
  // Every command has a man page.
  for (const char* m : {"psmctl-schedule.8", "psmctl-prune.8", "psmctl-history.8",
                        "psmctl-diff.8", "psmctl-snapshot.8", "psmctl-send.8", "psmctl-receive.8",
                        "psmctl-metrics.8"}) {
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
    const bool syntax_ok = v.output.find("Unknown key") == std::string::npos &&
                           v.output.find("Unknown section") == std::string::npos &&
                           v.output.find("Invalid") == std::string::npos;
    CHECK_MESSAGE(syntax_ok, v.output);
    MESSAGE("systemd-analyze verify: exit " << v.exit_code << "\n" << v.output);
    for (const char* u : {"psmfs-metrics.service", "psmfs-metrics.timer"}) {
      fsys::copy_file(prefix + "/lib/systemd/system/" + u, udir + "/" + u);
    }
    ProgramResult m = RunProgram({"systemd-analyze", "verify", "--man=no",
                                  udir + "/psmfs-metrics.timer", udir + "/psmfs-metrics.service"},
                                 60);
    const bool metrics_ok = m.output.find("Unknown key") == std::string::npos &&
                            m.output.find("Unknown section") == std::string::npos &&
                            m.output.find("Invalid") == std::string::npos;
    CHECK_MESSAGE(metrics_ok, m.output);
    MESSAGE("systemd-analyze verify (metrics): exit " << m.exit_code << "\n" << m.output);
  }

  // ---- a volume
  const std::string psmctl = prefix + "/bin/psmctl";
  const std::string vol = t.path + "/vol", mnt = t.path + "/mnt";
  fsys::create_directories(mnt);
  ProgramResult mk = RunProgram({psmctl, "mkfs", vol, "--size", "256M"});
  REQUIRE_MESSAGE(mk.ok(), mk.output);

  SUBCASE("mount -t fuse.psmfs and an fstab line, through libfuse's mount.fuse3") {
    // mount(8) runs helpers with a clean environment: /sbin/mount.fuse
    // (mount.fuse3) finds psmfs in the default PATH (/usr/local/bin, /usr/bin,
    // ...). To test that route without touching the machine, the scenario
    // runs in a private mount namespace where PREFIX/bin is bind-mounted
    // over /usr/local/bin.
    const std::string script = t.path + "/scenario.sh";
    std::ofstream(script) << R"SH(set -u
P=$1; VOL=$2; MNT=$3; FSTAB=$4
mount --bind "$P/bin" /usr/local/bin || { echo "SETUP bind failed"; exit 3; }
ck() { if [ "$2" = 0 ]; then echo "ok $1"; else echo "FAIL $1"; fi; }
waitfree() { for i in $(seq 300); do "$P/bin/psmctl" fsck "$VOL" >/dev/null 2>&1 && return 0; sleep 0.1; done; return 1; }
mount -t fuse.psmfs "$VOL" "$MNT" -o defaults,allow_other,default_permissions,snapdir=hidden,_netdev,nofail,x-systemd.automount
ck mount-t $?
grep " $MNT " /proc/self/mountinfo | grep -q "fuse.psmfs"; ck is-psmfs $?
grep " $MNT " /proc/self/mountinfo | grep -q allow_other; ck allow_other $?
grep " $MNT " /proc/self/mountinfo | grep -q default_permissions; ck default_permissions $?
echo hi > "$MNT/hello"; ck write $?
"$P/bin/psmctl" snapshot create "$MNT" first >/dev/null; ck snapshot $?
ls -a "$MNT" | grep -qx hello; ck listed-file $?
ls -a "$MNT" | grep -qx .snapshots; [ $? != 0 ]; ck hidden-snapdir $?
[ "$(cat "$MNT/.snapshots/first/hello")" = hi ]; ck snapdir-by-name $?
umount "$MNT"; ck umount $?
waitfree; ck daemon-exited $?
mount --fstab "$FSTAB" "$MNT"; ck fstab-mount $?
ls -a "$MNT" | grep -qx .snapshots; ck visible-snapdir $?
[ "$(cat "$MNT/hello")" = hi ]; ck data-kept $?
umount "$MNT"; ck fstab-umount $?
waitfree; ck fstab-daemon-exited $?
)SH";
    const std::string fstab = t.path + "/fstab";
    std::ofstream(fstab) << "# test fstab\n"
                         << vol << "  " << mnt
                         << "  fuse.psmfs  defaults,snapdir=visible,_netdev,nofail,x-systemd.requires=x.service  0  0\n";
    ProgramResult r = RunProgram({"unshare", "-m", "--propagation", "private", "sh", script, prefix,
                                  vol, mnt, fstab},
                                 300);
    MESSAGE(r.output);
    REQUIRE_MESSAGE(r.output.find("SETUP") == std::string::npos, r.output);
    CHECK(r.output.find("FAIL") == std::string::npos);
    for (const char* step : {"mount-t", "is-psmfs", "allow_other", "default_permissions", "write",
                             "snapshot", "listed-file", "hidden-snapdir", "snapdir-by-name",
                             "umount", "daemon-exited", "fstab-mount", "visible-snapdir",
                             "data-kept", "fstab-umount", "fstab-daemon-exited"}) {
      CHECK_MESSAGE(r.output.find(std::string("ok ") + step + "\n") != std::string::npos, step);
    }
  }

  SUBCASE("the installed helper, called as mount(8) calls /sbin/mount.fuse.psmfs") {
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

TEST_CASE("the installed client library: a backup program built with pkg-config sends a snapshot") {
  TmpDir t;
  const std::string prefix = t.path + "/prefix";
  const std::string build = fsys::path(BinDir()).parent_path().string();
  ProgramResult inst = RunProgram({"cmake", "--install", build, "--prefix", prefix}, 300);
  REQUIRE_MESSAGE(inst.ok(), inst.output);
  for (const char* f : {"include/psmfs/cli/client.h", "lib/libpsm_client.a", "lib/libpsm_meta.a",
                        "lib/pkgconfig/psmfs-client.pc", "share/doc/psmfs/examples/backup_client.cc"}) {
    CHECK_MESSAGE(fsys::exists(prefix + "/" + f), f);
  }
  // Built from the installed header, library and .pc file only.
  const std::string exe = t.path + "/backup_client";
  ProgramResult cc = RunProgram(
      {"sh", "-c",
       "g++ -O1 " + prefix + "/share/doc/psmfs/examples/backup_client.cc -o " + exe +
           " $(PKG_CONFIG_PATH=" + prefix + "/lib/pkgconfig pkg-config --cflags --libs psmfs-client)"},
      600);
  REQUIRE_MESSAGE(cc.ok(), cc.output);
  auto a = psm::test::MountedVolume::Create("256M");
  auto b = psm::test::MountedVolume::Create("256M");
  {
    std::ofstream(a->Path("hello")) << "from the backup program";
  }
  const std::string out = t.path + "/one.stream";
  ProgramResult r = RunProgram({exe, a->mnt, "one", out});
  REQUIRE_MESSAGE(r.ok(), r.output);
  CHECK_MESSAGE(r.output.find("one: ") != std::string::npos, r.output);
  r = RunProgram({"sh", "-c", BinDir() + "/psmctl receive -q " + b->mnt + " < " + out});
  REQUIRE_MESSAGE(r.ok(), r.output);
  CHECK(ReadText(b->Path("hello")) == "from the backup program");
  CHECK(ReadText(b->Path(".snapshots/one/hello")) == "from the backup program");
}
