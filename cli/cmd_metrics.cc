// psmctl metrics MOUNTPOINT | --all [--no-snapshot-space]
//
// A mounted volume's figures in the Prometheus text exposition format, for
// node_exporter's textfile collector (docs/monitoring.md lists the metrics
// and shows a cron job and a systemd timer). The daemon serves them
// ("metrics" request, open to every user); this command renders them
// (cli/prometheus.h), so that --all writes each metric family once for all
// volumes.
#include <algorithm>
#include <cstdio>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "cli/prometheus.h"
#include "cli/psmctl.h"

namespace psmctl {
namespace {

struct MetricsArgs {
  std::string target;
  bool all = false;
  bool no_space = false;
};

int Print(const std::vector<psm::MetricsTarget>& targets) {
  const std::string text = psm::RenderPrometheus(targets);
  if (std::fwrite(text.data(), 1, text.size(), stdout) != text.size() || std::fflush(stdout) != 0) {
    std::perror("psmctl: writing the metrics");
    return kExitFailed;
  }
  return kExitOk;
}

int RunOne(const MetricsArgs& a) {
  auto client = ConnectMounted(a.target);
  if (!client.ok()) return Fail(client.status(), a.target);
  auto m = client.value()->GetMetrics(!a.no_space);
  if (!m.ok()) return Fail(m.status(), a.target);
  psm::MetricsTarget t{m->uuid, m->mountpoint, std::move(m.value())};
  return Print({t});
}

// Every volume served on this host that this user can see (the registry
// entries of live daemons, as FindMount reads them). A daemon that does not
// answer is written as psmfs_up 0 and named on stderr; the exit status
// stays 0, so that a non-zero one always means "do not use this output"
// (the textfile examples install the file only after exit 0).
int RunAll(const MetricsArgs& a) {
  std::vector<psm::MountEntry> entries;
  std::set<std::string> uuids;
  for (psm::MountEntry& e : psm::ListMounts()) {
    if (!psm::IsAlive(e) || !uuids.insert(e.uuid).second) continue;
    entries.push_back(std::move(e));
  }
  std::sort(entries.begin(), entries.end(), [](const auto& x, const auto& y) {
    return std::tie(x.mountpoint, x.uuid) < std::tie(y.mountpoint, y.uuid);
  });
  std::vector<psm::MetricsTarget> targets;
  for (const psm::MountEntry& e : entries) {
    psm::MetricsTarget t{e.uuid, e.mountpoint, std::nullopt};
    const std::string name = e.mountpoint.empty() ? e.volume : e.mountpoint;
    auto client = psm::Client::Connect(e);
    if (!client.ok()) {
      Fail(client.status(), name);
    } else if (auto m = client.value()->GetMetrics(!a.no_space); !m.ok()) {
      Fail(m.status(), name);
    } else {
      t.metrics = std::move(m.value());
    }
    targets.push_back(std::move(t));
  }
  return Print(targets);
}

int RunMetrics(const MetricsArgs& a) {
  if (a.all == !a.target.empty()) {
    return UsageError(a.all ? "metrics: give either MOUNTPOINT or --all, not both"
                            : "metrics: give a MOUNTPOINT, or --all");
  }
  return a.all ? RunAll(a) : RunOne(a);
}

void SetupMetrics(CLI::App& app) {
  auto a = std::make_shared<MetricsArgs>();
  CLI::App* cmd = AddCommand(
      app, "metrics",
      "Print a mounted volume's figures in the Prometheus text format (node_exporter's textfile "
      "collector): space, files, snapshots, scan, reclaim, restore, sync failures, FUSE request "
      "counts and latencies, daemon memory. Any user may ask. See psmctl-metrics(8).");
  cmd->add_option("MOUNTPOINT", a->target, "Mount point (or volume directory) of a mounted volume.")
      ->type_name("");
  cmd->add_flag("--all", a->all,
                "Every volume mounted on this host that you can see. A daemon that does not "
                "answer shows as psmfs_up 0 and is named on stderr (the exit status stays 0: "
                "non-zero always means the output is not to be used).");
  cmd->add_flag("--no-snapshot-space", a->no_space,
                "Leave out psmfs_snapshot_used_bytes and psmfs_snapshot_referenced_bytes "
                "(computing them reads all of the volume's allocation records).");
  SetAction(cmd, [a] { return RunMetrics(*a); });
}

}  // namespace

PSMCTL_REGISTER_COMMAND(35, SetupMetrics);

}  // namespace psmctl
