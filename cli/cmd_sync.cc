// psmctl sync MOUNTPOINT [--no-kernel]
//
// A durable point for administrators and backup scripts: everything written
// to the mount before the command started is on stable storage when it
// returns 0. sync(1) alone does not give that on a FUSE mount: the kernel
// sends the daemon the dirty pages it holds, but no sync request
// (docs/crash-consistency.md, "What sync(1) means on psmfs").
//
// Two steps: the kernel's writeback cache reaches the daemon (SyncMount:
// syncfs(2) on the mount point, then fsync(2) of every file of the mount a
// process holds open or mapped, because syncfs can return before the daemon
// has answered the WRITEs it started), then the daemon's "sync" request: one group-commit cycle that covers every
// commit and image write completed before it (image fdatasync, then the
// metadata log's). Exit 1, with the daemon's reason, when the volume cannot
// be synced (for instance after an earlier sync failure: see psmctl status).
#include <cstdio>
#include <string>

#include "cli/psmctl.h"

namespace psmctl {
namespace {

struct SyncArgs {
  std::string target;
  bool no_kernel = false;
};

int RunSync(const SyncArgs& a) {
  auto client = ConnectMounted(a.target);
  if (!client.ok()) return Fail(client.status());
  const std::string& mnt = client.value()->mount().mountpoint;
  if (!a.no_kernel && !mnt.empty()) {
    if (psm::Status st = SyncMount(mnt, client.value()->may_have_writers()); !st.ok()) return Fail(st);
  }
  if (psm::Status st = client.value()->Sync(); !st.ok()) return Fail(st, "sync " + a.target);
  return kExitOk;
}

void SetupSync(CLI::App& app) {
  auto a = std::make_shared<SyncArgs>();
  CLI::App* cmd = AddCommand(
      app, "sync",
      "Make everything written to a mounted volume before this command durable: the kernel's "
      "cached writes reach the daemon, then the image and the metadata log are synced. Exit 0 "
      "only when all of it is on stable storage. Needs root or the volume owner.");
  cmd->add_option("MOUNTPOINT", a->target, "Mount point (or volume directory) of a mounted volume.")
      ->required()
      ->type_name("");
  cmd->add_flag("--no-kernel", a->no_kernel,
                "Skip syncfs(2) on the mount point: only what already reached the daemon is "
                "made durable.");
  SetAction(cmd, [a] { return RunSync(*a); });
}

}  // namespace

PSMCTL_REGISTER_COMMAND(32, SetupSync);

}  // namespace psmctl
