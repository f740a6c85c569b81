// psmctl snapshot delete MOUNTPOINT NAME... [--json]
//
// Deletes snapshots of a mounted volume. The daemon checks every name first:
// if one does not exist (or is given twice) nothing is deleted. Space is
// reclaimed in the background (see `psmctl status`, "Pending reclaim").
#include <cstdio>
#include <string>
#include <vector>

#include "cli/cmd_snapshot.h"

namespace psmctl {
namespace {

struct DeleteArgs {
  std::string target;
  std::vector<std::string> names;
  bool json = false;
};

int RunDelete(const DeleteArgs& a) {
  auto client = ConnectMounted(a.target);
  if (!client.ok()) return Fail(client.status());
  auto deleted = client.value()->DeleteSnapshots(a.names);
  if (!deleted.ok()) return Fail(deleted.status(), "snapshot delete");
  if (a.json) {
    psm::Json arr = psm::Json::Array();
    for (const auto& n : deleted.value()) arr.Push(n);
    psm::Json j = psm::Json::Object();
    j.Set("deleted", std::move(arr));
    std::printf("%s\n", j.Dump(2).c_str());
    return kExitOk;
  }
  for (const auto& n : deleted.value()) std::printf("deleted snapshot '%s'\n", n.c_str());
  return kExitOk;
}

void SetupDelete(CLI::App& snapshot) {
  auto a = std::make_shared<DeleteArgs>();
  CLI::App* cmd = AddCommand(snapshot, "delete",
                             "Delete snapshots of a mounted volume. Files open inside them stay "
                             "readable until closed; their space is reclaimed in the background.");
  cmd->add_option("MOUNTPOINT", a->target, "Mount point (or volume directory) of a mounted volume.")
      ->required()
      ->type_name("");
  cmd->add_option("NAME", a->names,
                  "One or more snapshot names. If any does not exist or is repeated, nothing is "
                  "deleted.")
      ->required()
      ->type_name("");
  cmd->add_flag("--json", a->json,
                "Print {\"deleted\": [names]} as JSON. Errors go to stderr as always.");
  SetAction(cmd, [a] { return RunDelete(*a); });
}

}  // namespace

PSMCTL_REGISTER_SNAPSHOT_ACTION(30, SetupDelete);

}  // namespace psmctl
