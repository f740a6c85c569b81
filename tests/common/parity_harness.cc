#include "tests/common/parity_harness.h"

#include <doctest/doctest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <memory>

#include "tests/common/mount_fixture.h"
#include "tests/common/psm_test_util.h"

namespace psm::testutil {
namespace {

using psm::test::MountedVolume;

struct ParityEnv {
  std::unique_ptr<MountedVolume> mount;
  std::string native;
  bool finished = false;
  // PSMFS_SELFTEST=1: a second native directory stands in for the mount.
  std::string selftest_dir;

  ParityEnv() {
    umask(022);
    native = MakeScratchDir("parity-native");
    if (SelfTest()) selftest_dir = MakeScratchDir("parity-selftest");
  }
  ~ParityEnv() {
    mount.reset();
    if (!KeepTmp()) {
      RemoveTree(native);
      if (!selftest_dir.empty()) RemoveTree(selftest_dir);
    }
  }
};

ParityEnv& Env() {
  static ParityEnv env;
  return env;
}

}  // namespace

std::string ParityMountDir() {
  ParityEnv& e = Env();
  if (!e.selftest_dir.empty()) return e.selftest_dir;
  REQUIRE_FALSE(e.finished);
  if (!e.mount) {
    // Sparse image; the > 4 GiB file is sparse too. Other uids, device
    // nodes and set-ID bits must behave as they do natively.
    e.mount = MountedVolume::Create("16G", "allow_other,dev,suid");
    // mkdtemp made the fixture's directory 0700; other uids must reach the
    // mount point below it.
    REQUIRE(chmod(e.mount->dir.c_str(), 0755) == 0);
  }
  REQUIRE(e.mount->Alive());
  return e.mount->mnt;
}

void RunParity(const ParityScenario& s) {
  if (s.needs_root && geteuid() != 0) {
    MESSAGE("scenario " << std::string(s.name) << " needs root; skipped");
    return;
  }
  const std::string mnt = ParityMountDir();
  ParityEnv& e = Env();
  const std::string ndir = e.native + "/" + s.name, pdir = mnt + "/" + s.name;
  REQUIRE(mkdir(ndir.c_str(), 0755) == 0);
  const int mkdir_result = mkdir(pdir.c_str(), 0755);
  const std::string mkdir_error = mkdir_result == 0 ? "ok" : ErrnoName(errno);
  INFO("mkdir " << pdir << ": " << mkdir_error);
  REQUIRE(mkdir_result == 0);
  chmod(ndir.c_str(), 0755);
  chmod(pdir.c_str(), 0755);
  Trace native(ndir, false), mounted(pdir, true);
  s.fn(native);
  s.fn(mounted);
  if (const char* d = getenv("PSMFS_PARITY_DUMP"); d != nullptr && *d == '1') {
    for (const auto& l : native.lines()) printf("[%s] %s\n", s.name, l.c_str());
  }
  std::string diff = DiffLogs(native.lines(), mounted.lines());
  INFO("scenario " << std::string(s.name) << " (native " << ndir << ", psmfs " << pdir << ")\n"
                   << diff);
  CHECK(diff.empty());
  CHECK(mounted.lines().size() > 3);
  if (!e.selftest_dir.empty()) return;
  // The daemon must still be alive after every scenario.
  CHECK(e.mount->Alive());
}

void FinishParity() {
  ParityEnv& e = Env();
  if (!e.selftest_dir.empty()) return;
  ParityMountDir();  // mounts if no scenario ran
  e.finished = true;
  CHECK(e.mount->Unmount());
  std::string report;
  bool clean = FsckClean(*e.mount, &report);
  INFO(report);
  CHECK(clean);
}

}  // namespace psm::testutil
