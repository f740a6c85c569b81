#include "tests/common/parity_harness.h"

#include <doctest/doctest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <cctype>
#include <map>
#include <memory>

#include "tests/common/mount_fixture.h"
#include "tests/common/psm_test_util.h"

namespace psm::testutil {
namespace {

using psm::test::MountedVolume;

struct ParityEnv {
  // One mount per set of extra mount options ("" = the default mount).
  std::map<std::string, std::unique_ptr<MountedVolume>> mounts;
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
    mounts.clear();
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

std::string ParityMountDir(const std::string& extra_options) {
  ParityEnv& e = Env();
  if (!e.selftest_dir.empty()) return e.selftest_dir;
  REQUIRE_FALSE(e.finished);
  std::unique_ptr<MountedVolume>& mount = e.mounts[extra_options];
  if (!mount) {
    // Sparse image; the > 4 GiB file is sparse too. Other uids, device
    // nodes and set-ID bits must behave as they do natively.
    mount = MountedVolume::Create(
        "16G", "allow_other,dev,suid" + (extra_options.empty() ? "" : "," + extra_options));
    // mkdtemp made the fixture's directory 0700; other uids must reach the
    // mount point below it.
    REQUIRE(chmod(mount->dir.c_str(), 0755) == 0);
  }
  REQUIRE(mount->Alive());
  return mount->mnt;
}

void RunParity(const ParityScenario& s, const std::string& extra_options) {
  if (s.needs_root && geteuid() != 0) {
    MESSAGE("scenario " << std::string(s.name) << " needs root; skipped");
    return;
  }
  const std::string mnt = ParityMountDir(extra_options);
  ParityEnv& e = Env();
  // Each mount variant gets its own native twin directory.
  std::string name = s.name;
  for (char c : extra_options) name += (isalnum(static_cast<unsigned char>(c)) ? c : '_');
  if (!extra_options.empty()) name = std::string(s.name) + "." + name.substr(strlen(s.name));
  const std::string ndir = e.native + "/" + name, pdir = mnt + "/" + name;
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
    for (const auto& l : native.lines()) printf("[%s] %s\n", name.c_str(), l.c_str());
  }
  std::string diff = DiffLogs(native.lines(), mounted.lines());
  INFO("scenario " << name << " (mount options '" << extra_options << "', native " << ndir
                   << ", psmfs " << pdir << ")\n"
                   << diff);
  CHECK(diff.empty());
  CHECK(mounted.lines().size() > 3);
  if (!e.selftest_dir.empty()) return;
  // The daemon must still be alive after every scenario.
  CHECK(e.mounts[extra_options]->Alive());
}

void FinishParity() {
  ParityEnv& e = Env();
  if (!e.selftest_dir.empty()) return;
  ParityMountDir();  // mounts if no scenario ran
  e.finished = true;
  for (auto& [options, mount] : e.mounts) {
    INFO("mount options '" << options << "'");
    CHECK(mount->Unmount());
    std::string report;
    bool clean = FsckClean(*mount, &report);
    INFO(report);
    CHECK(clean);
  }
}

}  // namespace psm::testutil
