// psmctl prune MOUNTPOINT [--dry-run] [--json]
//
// Applies the volume's retention policy (psmctl schedule) now: deletes the
// scheduled snapshots it does not keep. Held snapshots (psmctl snapshot
// hold) and snapshots being sent are never deleted; they are listed as kept
// because busy. The daemon also prunes after every scheduled snapshot.
#include <cstdio>
#include <string>

#include "cli/psmctl.h"
#include "fs/control/control_fileserver.h"
#include "fs/control/control_protocol.h"

namespace psmctl {
namespace {

struct PruneArgs {
  std::string target;
  bool dry_run = false;
  bool json = false;
};

int Run(const PruneArgs& a) {
  auto client = ConnectMounted(a.target);
  if (!client.ok()) return Fail(client.status());
  psm::Json req = psm::Json::Object();
  req.Set("op", psm::ctl::kOpPrune).Set("dry_run", a.dry_run);
  auto r = client.value()->Call(std::move(req), false);
  if (!r.ok()) return Fail(r.status(), "prune");
  const psm::Json* pj = r.value().Find("prune");
  psm::PruneReport rep = pj ? psm::ctl::PruneFromJson(*pj) : psm::PruneReport{};
  if (a.json) {
    std::printf("%s\n", psm::ctl::ToJson(rep).Dump(2).c_str());
  } else {
    for (const auto& n : rep.pruned) std::printf("%s %s\n", a.dry_run ? "would prune" : "pruned", n.c_str());
    for (const auto& n : rep.busy) std::printf("kept (held) %s\n", n.c_str());
    for (const auto& e : rep.errors) std::fprintf(stderr, "psmctl: prune: %s\n", e.c_str());
    std::printf("%zu %s, %zu kept by the policy, %zu held\n", rep.pruned.size(),
                a.dry_run ? "to prune" : "pruned", rep.kept.size(), rep.busy.size());
  }
  return rep.errors.empty() ? kExitOk : kExitFailed;
}

void Setup(CLI::App& app) {
  auto a = std::make_shared<PruneArgs>();
  CLI::App* cmd = AddCommand(app, "prune",
                             "Apply the retention of the volume's snapshot schedule now: delete "
                             "the scheduled snapshots it does not keep (never held ones).");
  cmd->add_option("MOUNTPOINT", a->target, "Mount point (or volume directory) of a mounted volume.")
      ->required()
      ->type_name("");
  cmd->add_flag("--dry-run,-n", a->dry_run, "Only list what would be deleted.");
  cmd->add_flag("--json", a->json, "Print the result as JSON.");
  SetAction(cmd, [a] { return Run(*a); });
}

}  // namespace

PSMCTL_REGISTER_COMMAND(75, Setup);

}  // namespace psmctl
