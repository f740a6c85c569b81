// psmctl restore MOUNTPOINT_OR_VOLUME SNAPSHOT [--dry-run] [--json] [--no-sync] [--quiet]
//
// Makes the live tree equal to a snapshot (docs/restore.md). Newer
// snapshots survive. On a mounted volume the daemon does it: syncfs(2)
// first (so the kernel's write-back cache cannot land on the restored tree
// afterwards), then the restore request, while a progress line on a
// terminal polls the daemon's status. An unmounted volume is opened here,
// restored and closed (the mount lock keeps a daemon out meanwhile).
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>

#include "cli/client.h"
#include "cli/psmctl.h"
#include "fs/control/control_protocol.h"

namespace psmctl {
namespace {

struct RestoreArgs {
  std::string target;
  std::string snapshot;
  bool dry_run = false;
  bool json = false;
  bool no_sync = false;
  bool quiet = false;
};

void Report(const psm::RestoreResult& r, bool json) {
  if (json) {
    std::printf("%s\n", psm::ctl::ToJson(r).Dump(2).c_str());
    return;
  }
  const char* verb = r.dry_run ? "would restore" : "restored";
  std::printf("%s snapshot '%s': %llu created, %llu changed, %llu removed (%llu entries), "
              "%s of snapshot data made live, %s of live data dropped; %llu inodes compared "
              "in %s\n",
              verb, r.snapshot.c_str(), static_cast<unsigned long long>(r.created),
              static_cast<unsigned long long>(r.changed),
              static_cast<unsigned long long>(r.removed),
              static_cast<unsigned long long>(r.entries_changed),
              HumanSize(r.bytes_restored).c_str(), HumanSize(r.bytes_discarded).c_str(),
              static_cast<unsigned long long>(r.inodes_examined), FormatDuration(r.seconds).c_str());
  if (!r.dry_run) {
    std::printf("a free-space scan runs in the background (psmctl status shows it)\n");
  }
}

// One progress line on stderr, redrawn in place.
void DrawProgress(const std::string& snap, uint64_t done, uint64_t total) {
  const int width = 30;
  const double f = total ? std::min(1.0, double(done) / double(total)) : 0.0;
  const int fill = static_cast<int>(f * width);
  std::string bar(fill, '#');
  bar.append(width - fill, '.');
  std::fprintf(stderr, "\rrestoring '%s' [%s] %llu/%llu inodes", snap.c_str(), bar.c_str(),
               static_cast<unsigned long long>(done), static_cast<unsigned long long>(total));
  std::fflush(stderr);
}

int RunOnline(const RestoreArgs& a, psm::Client& c) {
  const std::string& mnt = c.mount().mountpoint;
  if (!a.dry_run && !a.no_sync && !mnt.empty()) {
    if (psm::Status st = SyncMount(mnt, c.may_have_writers()); !st.ok()) return Fail(st);
  }
  const bool tty = !a.quiet && !a.json && ::isatty(2) == 1;
  psm::Result<psm::RestoreResult> result = psm::Status::IOError("no reply");
  std::atomic<bool> finished{false};
  std::thread worker([&] {
    result = c.Restore(a.snapshot, a.dry_run);
    finished.store(true);
  });
  bool drew = false;
  while (!finished.load()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(150));
    if (!tty || finished.load()) continue;
    auto st = c.GetStatus();
    if (st.ok() && !st.value().stats.restoring.empty()) {
      DrawProgress(st.value().stats.restoring, st.value().stats.restore_done,
                   st.value().stats.restore_total);
      drew = true;
    }
  }
  worker.join();
  if (drew) std::fputc('\n', stderr);
  if (!result.ok()) return Fail(result.status(), "restore '" + a.snapshot + "'");
  Report(result.value(), a.json);
  return kExitOk;
}

int RunOffline(const RestoreArgs& a) {
  psm::MountOptions o;
  o.start_scanner = false;  // the next mount scans; nothing here allocates
  auto fs = psm::FileSystem::Open(a.target, o);
  if (!fs.ok()) {
    return Fail(psm::ctl::MakeStatus(fs.status().code(), "cannot open " + a.target + ": " +
                                                              fs.status().message()));
  }
  auto r = fs.value()->Restore(a.snapshot, a.dry_run);
  psm::Status closed = fs.value()->Close();
  if (!r.ok()) return Fail(r.status(), "restore '" + a.snapshot + "'");
  if (!closed.ok()) return Fail(closed, "closing " + a.target);
  Report(r.value(), a.json);
  return kExitOk;
}

int RunRestore(const RestoreArgs& a) {
  auto client = DaemonOrOffline(a.target);
  if (!client.ok()) return Fail(client.status());
  return client.value() ? RunOnline(a, *client.value()) : RunOffline(a);
}

void SetupRestore(CLI::App& app) {
  auto a = std::make_shared<RestoreArgs>();
  CLI::App* cmd = AddCommand(
      app, "restore",
      "Make the live tree equal to a snapshot: contents, attributes, xattrs, links, holes. "
      "Newer snapshots survive. Works on a mounted volume (through its daemon; other requests "
      "wait) and on an unmounted one. Crash-safe: an interrupted restore is finished by the "
      "next mount. To get back single files, copy them out of .snapshots/NAME instead.");
  cmd->add_option("MOUNTPOINT_OR_VOLUME", a->target,
                  "Mount point of a mounted volume, or the directory of an unmounted one.")
      ->required()
      ->type_name("");
  cmd->add_option("SNAPSHOT", a->snapshot, "Name of the snapshot to restore.")
      ->required()
      ->type_name("");
  cmd->add_flag("--dry-run", a->dry_run,
                "Only count what would change (files created, changed, removed; bytes).");
  cmd->add_flag("--json", a->json, "Print the result as a JSON object.");
  cmd->add_flag("--no-sync", a->no_sync,
                "Skip the syncfs(2) of the mount point before the restore. Writes still in the "
                "kernel's cache may then land on the restored tree.");
  cmd->add_flag("-q,--quiet", a->quiet, "No progress line on a terminal.");
  SetAction(cmd, [a] { return RunRestore(*a); });
}

}  // namespace

PSMCTL_REGISTER_COMMAND(45, SetupRestore);

}  // namespace psmctl
