// psmctl snapshot {create,list,delete}: the command group. Each action is in
// its own file (cmd_snapshot_<action>.cc) and registers here through
// RegisterSnapshotAction().
#include "cli/cmd_snapshot.h"

#include <algorithm>
#include <utility>
#include <vector>

namespace psmctl {
namespace {

std::vector<std::pair<int, SetupFn>>& Actions() {
  static auto* a = new std::vector<std::pair<int, SetupFn>>();
  return *a;
}

void SetupSnapshot(CLI::App& app) {
  CLI::App* cmd = AddCommand(app, "snapshot", "Create, list and delete snapshots.");
  cmd->require_subcommand(1);
  auto actions = Actions();
  std::stable_sort(actions.begin(), actions.end(),
                   [](const auto& x, const auto& y) { return x.first < y.first; });
  for (const auto& [order, fn] : actions) fn(*cmd);
}

}  // namespace

bool RegisterSnapshotAction(int order, SetupFn fn) {
  Actions().emplace_back(order, fn);
  return true;
}

PSMCTL_REGISTER_COMMAND(50, SetupSnapshot);

}  // namespace psmctl
