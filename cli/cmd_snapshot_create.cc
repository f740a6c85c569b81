// psmctl snapshot create MOUNTPOINT NAME [--json] [--no-sync]
// psmctl snapshot create MOUNTPOINT --gmt [--prefix P]   (name @GMT-YYYY.MM.DD-HH.MM.SS, UTC)
//
// syncfs(2) on the mount point first, so that writes still in the kernel's
// write-back cache reach the daemon, then the snapshot.create request.
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <ctime>
#include <string>

#include "cli/cmd_snapshot.h"
#include "fs/base/gmt_name.h"
#include "fs/control/control_protocol.h"

namespace psmctl {
namespace {

struct CreateArgs {
  std::string target;
  std::string name;
  bool json = false;
  bool no_sync = false;
  bool name_given = false;  // NAME was on the command line (possibly empty)
  bool gmt = false;     // name it @GMT-... (Samba's vfs_shadow_copy2 format)
  std::string prefix;   // before the @GMT token
};

int RunCreate(CreateArgs a) {
  if (a.gmt == a.name_given) {
    return UsageError("snapshot create: give either NAME or --gmt (not both)");
  }
  if (a.name.empty() && !a.gmt) {
    return Fail(psm::Status::Invalid("snapshot name must be 1-255 bytes (an empty name was given)"),
                "snapshot create");
  }
  if (!a.gmt && !a.prefix.empty()) return UsageError("snapshot create: --prefix needs --gmt");
  if (a.gmt) a.name = psm::ScheduledName(a.prefix, std::time(nullptr));
  auto client = ConnectMounted(a.target);
  if (!client.ok()) return Fail(client.status());
  const std::string& mnt = client.value()->mount().mountpoint;
  if (!a.no_sync && !mnt.empty()) {
    if (psm::Status st = SyncMount(mnt, client.value()->may_have_writers()); !st.ok()) return Fail(st);
  }
  auto snap = client.value()->CreateSnapshot(a.name);
  if (!snap.ok()) return Fail(snap.status(), "snapshot create '" + a.name + "'");
  const psm::SnapshotInfo& s = snap.value();
  if (a.json) {
    std::printf("%s\n", psm::ctl::ToJson(s).Dump(2).c_str());
  } else {
    std::printf("created snapshot '%s' (epoch %llu) of %s\n", s.name.c_str(),
                static_cast<unsigned long long>(s.epoch),
                mnt.empty() ? client.value()->mount().volume.c_str() : mnt.c_str());
  }
  return kExitOk;
}

void SetupCreate(CLI::App& snapshot) {
  auto a = std::make_shared<CreateArgs>();
  CLI::App* cmd = AddCommand(snapshot, "create",
                             "Take a read-only point-in-time snapshot of a mounted volume. It "
                             "appears as MOUNTPOINT/.snapshots/NAME.");
  cmd->add_option("MOUNTPOINT", a->target, "Mount point (or volume directory) of a mounted volume.")
      ->required()
      ->type_name("");
  cmd->add_option("NAME", a->name,
                  "Snapshot name: a file name (no '/', not '.' or '..', at most 255 bytes), unique "
                  "on the volume. The daemon rejects bad or duplicate names.")
      ->type_name("");
  cmd->add_flag("--gmt", a->gmt,
                "Name the snapshot @GMT-YYYY.MM.DD-HH.MM.SS (now, UTC), the form Samba's "
                "vfs_shadow_copy2 shows to Windows as a Previous Version.");
  cmd->add_option("--prefix", a->prefix, "With --gmt: put PREFIX before the @GMT token.")
      ->type_name("PREFIX");
  cmd->add_flag("--json", a->json, "Print the new snapshot as a JSON object.");
  cmd->add_flag("--no-sync", a->no_sync,
                "Skip the syncfs(2) of the mount point. Use it only when you cannot open the mount "
                "point (e.g. root on a mount without allow_other): writes still in the kernel's "
                "cache may then be missing from the snapshot.");
  SetAction(cmd, [a, cmd] {
    a->name_given = cmd->count("NAME") > 0;
    return RunCreate(*a);
  });
}

}  // namespace

PSMCTL_REGISTER_SNAPSHOT_ACTION(10, SetupCreate);

}  // namespace psmctl
