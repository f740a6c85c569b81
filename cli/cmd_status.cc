// psmctl status MOUNTPOINT_OR_VOLUME [--json]
//
// Everything about one volume: space, files, snapshots, epoch, mount
// generation, the free-space scan, pending reclaim.
#include <cstdio>
#include <string>

#include "cli/psmctl.h"

namespace psmctl {
namespace {

struct StatusArgs {
  std::string target;
  bool json = false;
};

std::string ScanLine(const psm::ScanStatus& s, uint64_t block_size) {
  char buf[512];
  if (s.running) {
    std::snprintf(buf, sizeof(buf),
                  "running (reason: %s): %.1f%%, %.0f ranges/s, ETA %s, %s free found so far",
                  s.reason.empty() ? "?" : s.reason.c_str(), s.percent, s.ranges_per_sec,
                  FormatDuration(s.eta_sec).c_str(),
                  HumanSize(s.free_blocks_found * block_size).c_str());
  } else if (s.scans_completed == 0) {
    std::snprintf(buf, sizeof(buf), "idle (no scan has run)");
  } else {
    std::snprintf(buf, sizeof(buf),
                  "idle; last scan (reason: %s) finished %s after %.1f s, %llu ranges, %s free",
                  s.reason.empty() ? "?" : s.reason.c_str(), FormatTime(s.finished_ns).c_str(),
                  s.last_duration_sec, static_cast<unsigned long long>(s.ranges_scanned),
                  HumanSize(s.free_blocks_found * block_size).c_str());
  }
  std::string line = buf;
  if (!s.last_error.empty()) line += "; retrying after error: " + s.last_error;
  return line;
}

int RunStatus(const StatusArgs& a) {
  auto r = GetVolumeInfo(a.target);
  if (!r.ok()) return Fail(r.status(), a.target);
  const VolumeInfo& i = r.value();
  if (a.json) {
    std::printf("%s\n", VolumeInfoJson(i).Dump(2).c_str());
    return i.stats.failure.empty() ? kExitOk : kExitFailed;
  }
  const psm::VolumeStats& s = i.stats;
  const uint64_t bs = s.block_size;
  auto line = [](const char* k, const std::string& v) { std::printf("%-18s %s\n", k, v.c_str()); };
  line("Volume:", i.volume);
  line("UUID:", s.uuid);
  if (!s.failure.empty()) {
    line("State:", "FAILED: " + s.failure);
    line("", "writes and fsync fail with EIO, reads work; unmount and mount the volume "
             "again to replay it from its last durable state");
  } else if (i.mounted) {
    line("State:", "healthy");
  }
  if (i.mounted) {
    line("Mounted on:", (i.mountpoint.empty() ? std::string("(no mount point)") : i.mountpoint) +
                            " (pid " + std::to_string(i.pid) + ", since " + i.since + ")");
  } else {
    line("Mounted on:",
         "not mounted (read offline; the free-space scan below ran for this report)");
  }
  line("Size:", HumanSize(s.total_blocks * bs) + " (" + std::to_string(s.total_blocks) +
                    " blocks of " + std::to_string(bs) + " bytes)");
  char pct[32];
  std::snprintf(pct, sizeof(pct), "%.1f%%",
                s.total_blocks ? 100.0 * static_cast<double>(s.used_blocks) /
                                     static_cast<double>(s.total_blocks)
                               : 0.0);
  line("Used:", HumanSize(s.used_blocks * bs) + " (" + pct + ", live tree and snapshots)");
  std::string free = HumanSize(s.free_blocks * bs);
  if (i.scan.running) free += " (found so far; the scan is running)";
  line("Free:", free);
  line("Files:", std::to_string(s.files));
  line("Snapshots:", std::to_string(s.snapshots));
  line("Epoch:", std::to_string(s.epoch));
  line("Mount generation:", std::to_string(s.mount_generation));
  std::string reclaim = std::to_string(s.pending_reclaim) + " snapshot(s)";
  if (!s.reclaiming.empty()) {
    reclaim += "; reclaiming '" + s.reclaiming + "': " + std::to_string(s.reclaim_entries_done) +
               " dead-index entries done, " + HumanSize(s.reclaim_blocks_freed * bs) + " freed";
  }
  line("Pending reclaim:", reclaim);
  if (i.mounted) {
    line("Memory:", "daemon RSS " + HumanSize(s.rss_bytes) + " of a " +
                        HumanSize(s.memory_budget_bytes) + " budget (metadata cache " +
                        HumanSize(s.metadata_cache_used_bytes) + " of " +
                        HumanSize(s.metadata_cache_bytes) + ", open-file cache " +
                        HumanSize(s.live_cache_bytes) + ")");
    std::string refs = std::to_string(s.kernel_refs) + " inode(s), " +
                       HumanSize(s.kernel_refs_bytes);
    if (s.kernel_refs_cap) {
      refs += "; cap " + std::to_string(s.kernel_refs_cap) + ", " +
              std::to_string(s.kernel_refs_shed) + " dentries invalidated to keep under it";
    }
    line("Kernel refs:", refs);
  }
  if (i.mounted) {
    line("Checksums:", std::string(s.checksums ? "on" : "off") + ", " +
                           std::to_string(s.checksum_errors) +
                           " checksum error(s) since mount" +
                           (s.checksum_errors ? " (reads failed with EIO; see the daemon's log)"
                                              : ""));
    if (s.intent_recovered_blocks > 0) {
      line("", std::to_string(s.intent_recovered_blocks) +
                   " block(s) re-checksummed at mount: overwritten in place when the volume "
                   "stopped uncleanly");
    }
  } else {
    line("Checksums:", s.checksums ? "on" : "off");
  }
  line("Mirror:", MirrorLine(s.mirror));
  if (s.mirror.mirrored) {
    line("", "image:  " + MirrorSideLine(s.mirror.sides[0]));
    line("", "mirror: " + MirrorSideLine(s.mirror.sides[1]));
  }
  line("Free-space scan:", ScanLine(i.scan, bs));
  line("Scrub:", ScrubLine(i.scrub, bs));
  for (const psm::ScrubDamage& d : i.scrub.damage) {
    std::string paths;
    for (const std::string& p : d.paths) paths += (paths.empty() ? "" : ", ") + p;
    line("", "damaged block " + std::to_string(d.block) + ": " +
                 (paths.empty() ? std::string("(no file reads it now)") : paths));
  }
  if (!s.restoring.empty()) {
    line("Restore:", "to snapshot '" + s.restoring + "', " + std::to_string(s.restore_done) +
                         " of " + std::to_string(s.restore_total) + " inodes compared so far");
  }
  // A failed volume is an error to scripts and monitoring.
  return s.failure.empty() ? kExitOk : kExitFailed;
}

void SetupStatus(CLI::App& app) {
  auto a = std::make_shared<StatusArgs>();
  CLI::App* cmd = AddCommand(app, "status",
                             "Show a volume's space, files, snapshots, epoch, mount generation, "
                             "free-space scan and pending reclaim.");
  cmd->add_option("MOUNTPOINT_OR_VOLUME", a->target,
                  "Mount point or volume directory. A mounted volume is asked through its daemon; "
                  "an unmounted one is opened read-only (this fails, with the reason, while "
                  "another process holds it).")
      ->required();
  cmd->add_flag(
      "--json", a->json,
      "Print one JSON object: sizes in bytes, 'stats' and 'scan' as the daemon reports them.");
  SetAction(cmd, [a] { return RunStatus(*a); });
}

}  // namespace

PSMCTL_REGISTER_COMMAND(30, SetupStatus);

}  // namespace psmctl
