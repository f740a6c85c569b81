// Small helpers of the randomized and parity integration tests: scratch
// directories on the repository's disk (for native reference trees), seeds
// and scale from the environment, and fsck of a MountedVolume. Mounting
// itself is tests/common/mount_fixture.h (MountedVolume).
//
// Environment:
//   PSMFS_SOURCE_DIR  the repository; scratch dirs go to $PSMFS_SOURCE_DIR/var/test.
//   PSMFS_TEST_TMP    overrides the scratch root.
//   PSMFS_KEEP_TMP=1  keep scratch dirs after the test.
//   PSMFS_SEED        seed of randomized tests (printed at start).
//   PSMFS_STRESS      scale factor of randomized/stress tests (default 1).
//   PSMFS_SELFTEST=1  compare two native directories instead of mounting.
//
// Not thread-safe; meant for the doctest main thread.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "tests/common/psm_mount.h"  // PsmMount, Run (older standalone fixture)

namespace psm::test {
struct MountedVolume;
}

namespace psm::testutil {

std::string ScratchRoot();
// Creates a fresh, empty directory (mode 0755) under ScratchRoot().
std::string MakeScratchDir(std::string_view tag);
// rm -rf.
void RemoveTree(const std::string& path);
bool KeepTmp();
// PSMFS_SELFTEST=1: tests that compare a mount with a native directory
// compare two native directories instead, to check the tests themselves
// (no daemon needed).
bool SelfTest();

// PSMFS_SEED or `def`; prints "NAME: seed N (set PSMFS_SEED to repeat)".
uint64_t SeedFromEnv(std::string_view test_name, uint64_t def);
// PSMFS_STRESS (a positive number), default 1.
double StressFromEnv();

std::string ReadFileOrEmpty(const std::string& path);

// psmctl fsck on the (unmounted) volume; true when it exits 0. *report gets
// the command and its output.
bool FsckClean(const psm::test::MountedVolume& mv, std::string* report);

}  // namespace psm::testutil
