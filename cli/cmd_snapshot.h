// The `psmctl snapshot` command group: its actions (cmd_snapshot_*.cc)
// register with PSMCTL_REGISTER_SNAPSHOT_ACTION(order, SetupFn).
//
// Thread safety: registration happens during static initialisation only.
#pragma once

#include "cli/psmctl.h"

namespace psmctl {

bool RegisterSnapshotAction(int order, SetupFn fn);
#define PSMCTL_REGISTER_SNAPSHOT_ACTION(order, fn) \
  static const bool psmctl_snapshot_registered_##fn = ::psmctl::RegisterSnapshotAction(order, fn)

}  // namespace psmctl
