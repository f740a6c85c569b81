// psmctl snapshot hold|release MOUNTPOINT NAME [--tag TAG]
// psmctl snapshot holds MOUNTPOINT [--json]
//
// A held snapshot cannot be deleted (snapshot delete, rmdir in .snapshots,
// prune): the daemon answers "busy" naming the holds. Holds are stored on
// the volume and survive restarts; a snapshot may carry several tags (as
// ZFS holds do), e.g. one per backup program.
#include <cstdio>
#include <string>

#include "cli/cmd_snapshot.h"
#include "fs/control/control_fileserver.h"
#include "fs/control/control_protocol.h"

namespace psmctl {
namespace {

constexpr char kDefaultTag[] = "keep";

struct HoldArgs {
  std::string target;
  std::string name;
  std::string tag = kDefaultTag;
  bool json = false;
};

int RunHold(const HoldArgs& a, bool hold) {
  auto client = ConnectMounted(a.target);
  if (!client.ok()) return Fail(client.status());
  psm::Json req = psm::Json::Object();
  req.Set("op", hold ? psm::ctl::kOpSnapshotHold : psm::ctl::kOpSnapshotRelease)
      .Set("name", a.name)
      .Set("tag", a.tag);
  auto r = client.value()->Call(std::move(req), false);
  if (!r.ok()) return Fail(r.status(), std::string("snapshot ") + (hold ? "hold" : "release"));
  std::printf("%s snapshot '%s' (tag '%s')\n", hold ? "held" : "released", a.name.c_str(),
              a.tag.c_str());
  return kExitOk;
}

int RunHolds(const HoldArgs& a) {
  auto client = ConnectMounted(a.target);
  if (!client.ok()) return Fail(client.status());
  psm::Json req = psm::Json::Object();
  req.Set("op", psm::ctl::kOpSnapshotHolds);
  auto r = client.value()->Call(std::move(req), true);
  if (!r.ok()) return Fail(r.status(), "snapshot holds");
  const psm::Json* holds = r.value().Find("holds");
  if (a.json) {
    std::printf("%s\n", holds ? holds->Dump(2).c_str() : "[]");
    return kExitOk;
  }
  if (holds == nullptr || holds->items().empty()) {
    std::printf("no holds\n");
    return kExitOk;
  }
  std::printf("%-32s %-20s %s\n", "SNAPSHOT", "TAG", "SINCE");
  for (const psm::Json& h : holds->items()) {
    std::printf("%-32s %-20s %s\n", h.GetString("snapshot").c_str(), h.GetString("tag").c_str(),
                FormatTime(h.GetInt("since_ns")).c_str());
  }
  return kExitOk;
}

void AddTarget(CLI::App* cmd, HoldArgs* a) {
  cmd->add_option("MOUNTPOINT", a->target, "Mount point (or volume directory) of a mounted volume.")
      ->required()
      ->type_name("");
}

void SetupHold(CLI::App& snapshot) {
  auto a = std::make_shared<HoldArgs>();
  CLI::App* cmd = AddCommand(snapshot, "hold",
                             "Hold a snapshot: while it has a hold it cannot be deleted, by hand or "
                             "by retention (prune). Holds survive restarts.");
  AddTarget(cmd, a.get());
  cmd->add_option("NAME", a->name, "The snapshot.")->required()->type_name("");
  cmd->add_option("--tag", a->tag, "Name of the hold (default 'keep'); one per holder.")
      ->type_name("TAG");
  SetAction(cmd, [a] { return RunHold(*a, true); });

  auto r = std::make_shared<HoldArgs>();
  CLI::App* rel = AddCommand(snapshot, "release", "Release a hold taken with 'snapshot hold'.");
  AddTarget(rel, r.get());
  rel->add_option("NAME", r->name, "The snapshot.")->required()->type_name("");
  rel->add_option("--tag", r->tag, "Name of the hold (default 'keep').")->type_name("TAG");
  SetAction(rel, [r] { return RunHold(*r, false); });

  auto l = std::make_shared<HoldArgs>();
  CLI::App* ls = AddCommand(snapshot, "holds", "List the holds on the volume's snapshots.");
  AddTarget(ls, l.get());
  ls->add_flag("--json", l->json, "Print a JSON array.");
  SetAction(ls, [l] { return RunHolds(*l); });
}

}  // namespace

PSMCTL_REGISTER_SNAPSHOT_ACTION(40, SetupHold);

}  // namespace psmctl
