// psmctl df MOUNTPOINT_OR_VOLUME... [--json]
//
// Space at a glance, one line per volume, like df(1): asks the daemon when
// the volume is mounted, reads it offline otherwise.
#include <cstdio>
#include <string>
#include <vector>

#include "cli/psmctl.h"

namespace psmctl {
namespace {

struct DfArgs {
  std::vector<std::string> targets;
  bool json = false;
  bool bytes = false;
};

int RunDf(const DfArgs& a) {
  int rc = kExitOk;
  std::vector<VolumeInfo> infos;
  for (const std::string& t : a.targets) {
    auto info = GetVolumeInfo(t);
    if (!info.ok()) {
      rc = Fail(info.status(), t);
      continue;
    }
    infos.push_back(std::move(info.value()));
  }
  if (a.json) {
    psm::Json list = psm::Json::Array();
    for (const auto& i : infos) list.Push(VolumeInfoJson(i));
    std::printf("%s\n", list.Dump(2).c_str());
    return rc;
  }
  if (infos.empty()) return rc;
  auto size = [&](uint64_t b) { return a.bytes ? std::to_string(b) : HumanSize(b); };
  std::printf("%-28s %10s %10s %10s %5s %6s  %s\n", "Volume", "Size", "Used", "Free", "Use%",
              "Snaps", "Mounted on");
  for (const auto& i : infos) {
    const uint64_t bs = i.stats.block_size;
    const uint64_t total = i.stats.total_blocks;
    const uint64_t used = i.stats.used_blocks;
    unsigned pct = total ? static_cast<unsigned>((used * 100 + total - 1) / total) : 0;
    std::string free = size(i.stats.free_blocks * bs);
    if (i.mounted && i.scan.running) free += "*";
    std::printf("%-28s %10s %10s %10s %4u%% %6llu  %s\n", i.volume.c_str(),
                size(total * bs).c_str(), size(used * bs).c_str(), free.c_str(), pct,
                static_cast<unsigned long long>(i.stats.snapshots),
                i.mounted ? (i.mountpoint.empty() ? "(no mount point)" : i.mountpoint.c_str())
                          : "(not mounted)");
  }
  for (const auto& i : infos) {
    if (i.mounted && i.scan.running) {
      std::printf("* free-space scan running (%.0f%%): free space found so far\n", i.scan.percent);
      break;
    }
  }
  return rc;
}

void SetupDf(CLI::App& app) {
  auto a = std::make_shared<DfArgs>();
  CLI::App* cmd = AddCommand(app, "df", "Show size, used and free space of volumes.");
  cmd->add_option("MOUNTPOINT_OR_VOLUME", a->targets,
                  "Mount point or volume directory (one or more). A mounted volume is asked "
                  "through its daemon; an unmounted one is opened read-only.")
      ->required();
  cmd->add_flag("--json", a->json,
                "Print a JSON array with one object per volume, sizes in bytes.");
  cmd->add_flag("--bytes", a->bytes, "Print sizes in bytes instead of K/M/G/T units.");
  SetAction(cmd, [a] { return RunDf(*a); });
}

}  // namespace

PSMCTL_REGISTER_COMMAND(20, SetupDf);

}  // namespace psmctl
