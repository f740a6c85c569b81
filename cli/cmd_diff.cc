// psmctl diff MOUNTPOINT SNAP_A [SNAP_B] [--json]
//
// What changed between two snapshots, or between a snapshot and the live
// tree: one line per path, as `zfs diff` prints it:
//   +  /new-file            created
//   -  /old-file            removed
//   M  /changed-file        modified (content or attributes)
//   R  /old -> /new         renamed
// The daemon finds the changes in the dead index (versions that died in
// between) and compares only the directories that changed, so the cost
// follows the amount of change, not the size of the volume.
#include <sys/stat.h>

#include <cstdio>
#include <string>

#include "cli/psmctl.h"
#include "fs/control/control_fileserver.h"
#include "fs/control/control_protocol.h"

namespace psmctl {
namespace {

struct DiffArgs {
  std::string target;
  std::string from;
  std::string to;
  bool json = false;
};

int Run(const DiffArgs& a) {
  auto client = ConnectMounted(a.target);
  if (!client.ok()) return Fail(client.status());
  psm::Json req = psm::Json::Object();
  req.Set("op", psm::ctl::kOpDiff).Set("from", a.from).Set("to", a.to);
  auto r = client.value()->Call(std::move(req), true);
  if (!r.ok()) return Fail(r.status(), "diff");
  const psm::Json* dj = r.value().Find("diff");
  psm::DiffResult d = dj ? psm::ctl::DiffFromJson(*dj) : psm::DiffResult{};
  if (a.json) {
    std::printf("%s\n", psm::ctl::ToJson(d).Dump(2).c_str());
    return kExitOk;
  }
  for (const auto& e : d.entries) {
    const char* slash = S_ISDIR(e.type) ? "/" : "";
    if (e.change == 'R') {
      std::printf("R\t%s%s -> %s%s\n", e.old_path.c_str(), slash, e.path.c_str(), slash);
    } else {
      std::printf("%c\t%s%s\n", e.change, e.path.c_str(), e.path == "/" ? "" : slash);
    }
  }
  return kExitOk;
}

void Setup(CLI::App& app) {
  auto a = std::make_shared<DiffArgs>();
  CLI::App* cmd = AddCommand(app, "diff",
                             "List the paths created (+), removed (-), modified (M) and renamed "
                             "(R) between two snapshots, or a snapshot and the live tree.");
  cmd->add_option("MOUNTPOINT", a->target, "Mount point (or volume directory) of a mounted volume.")
      ->required()
      ->type_name("");
  cmd->add_option("SNAP_A", a->from, "The older snapshot.")->required()->type_name("");
  cmd->add_option("SNAP_B", a->to, "The newer snapshot (default: the live tree).")->type_name("");
  cmd->add_flag("--json", a->json, "Print the changes as JSON.");
  SetAction(cmd, [a] { return Run(*a); });
}

}  // namespace

PSMCTL_REGISTER_COMMAND(85, Setup);

}  // namespace psmctl
