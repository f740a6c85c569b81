// The runner of the POSIX parity tests (posix_parity*_test.cc): one psmfs
// mount and one native scratch directory per test program, shared by all
// its scenarios; each scenario runs in <native>/<name> and <mount>/<name>
// and the two Trace logs must be equal.
//
// The native directory lives under the scratch root (the repository's disk,
// see psm_test_util.h). The mount (a MountedVolume, tests/common/
// mount_fixture.h) is made on first use with
// -o allow_other,dev,suid[,extra options] (other uids, device nodes and set-ID bits behave
// as natively) and torn down by FinishParity() or at exit.
#pragma once

#include <string>

#include "tests/common/parity_trace.h"

namespace psm::testutil {

struct ParityScenario {
  const char* name;
  void (*fn)(Trace&);
  bool needs_root;  // skipped (with a message) when not running as root
};

// Runs the scenario natively and on the mount; CHECKs the logs are equal.
// `extra_options`: a mount of its own with these psmfs -o options added
// (one per distinct string, made on first use), e.g. "no_writeback_cache".
void RunParity(const ParityScenario& s, const std::string& extra_options = "");
// The mount point of the shared mount (or of the one with `extra_options`);
// REQUIREs that mounting worked.
std::string ParityMountDir(const std::string& extra_options = "");
// Unmounts every mount (each daemon must exit 0) and runs psmctl fsck on
// each (must exit 0).
void FinishParity();

}  // namespace psm::testutil
