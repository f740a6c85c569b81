// psmctl schedule MOUNTPOINT [--every INTERVAL] [--prefix P] [--keep-last N]
//                 [--keep-hourly N] [--keep-daily N] [--keep-weekly N]
//                 [--keep-monthly N] [--keep-yearly N] [--enable|--disable]
//                 [--remove] [--json]
//
// Without options: shows the volume's snapshot schedule. With options:
// changes the given fields (starting from the stored policy, or from the
// defaults when there is none) and stores it on the volume; the daemon runs
// it itself (fs/control/scheduler.h). `--remove` deletes the policy.
#include <cstdio>
#include <optional>
#include <string>

#include "cli/psmctl.h"
#include "fs/control/control_fileserver.h"
#include "fs/control/control_protocol.h"
#include "fs/control/scheduler.h"

namespace psmctl {
namespace {

struct ScheduleArgs {
  std::string target;
  std::string every;
  std::optional<std::string> prefix;
  std::optional<uint32_t> keep_last, keep_hourly, keep_daily, keep_weekly, keep_monthly,
      keep_yearly;
  bool enable = false, disable = false, remove = false, json = false;
};

void Print(const psm::SchedulePolicy& p) {
  std::printf("Snapshots:  %s, every %s, named %s@GMT-YYYY.MM.DD-HH.MM.SS (UTC)\n",
              p.enabled ? "enabled" : "disabled", psm::FormatInterval(p.interval_sec).c_str(),
              p.prefix.c_str());
  std::printf("Retention:  last %u, hourly %u, daily %u, weekly %u, monthly %u, yearly %u\n",
              p.keep_last, p.keep_hourly, p.keep_daily, p.keep_weekly, p.keep_monthly,
              p.keep_yearly);
  std::printf("Example:    %s\n", psm::ScheduledName(p.prefix, psm::Scheduler::RealClock()).c_str());
}

int Run(const ScheduleArgs& a) {
  if (a.enable && a.disable) return UsageError("schedule: --enable and --disable exclude each other");
  const bool change = !a.every.empty() || a.prefix || a.keep_last || a.keep_hourly ||
                      a.keep_daily || a.keep_weekly || a.keep_monthly || a.keep_yearly ||
                      a.enable || a.disable;
  if (a.remove && change) return UsageError("schedule: --remove takes no other option");
  std::optional<int64_t> interval;
  if (!a.every.empty()) {
    auto sec = psm::ParseInterval(a.every);
    if (!sec.ok()) return UsageError("schedule: --every " + sec.status().message());
    interval = sec.value();
  }
  auto client = ConnectMounted(a.target);
  if (!client.ok()) return Fail(client.status());
  auto call = [&](psm::Json req, bool idem) { return client.value()->Call(std::move(req), idem); };
  if (a.remove) {
    psm::Json req = psm::Json::Object();
    req.Set("op", psm::ctl::kOpScheduleRemove);
    auto r = call(std::move(req), false);
    if (!r.ok()) return Fail(r.status(), "schedule");
    std::printf("removed the snapshot schedule of %s\n", a.target.c_str());
    return kExitOk;
  }
  psm::Json get = psm::Json::Object();
  get.Set("op", psm::ctl::kOpScheduleGet);
  auto cur = call(std::move(get), true);
  if (!cur.ok()) return Fail(cur.status(), "schedule");
  const psm::Json* sj = cur.value().Find("schedule");
  const bool have = sj != nullptr && sj->is_object();
  psm::SchedulePolicy p = have ? psm::ctl::PolicyFromJson(*sj) : psm::SchedulePolicy{};
  if (!change) {
    if (a.json) {
      std::printf("%s\n", have ? sj->Dump(2).c_str() : "null");
    } else if (!have) {
      std::printf("no snapshot schedule (set one with --every)\n");
    } else {
      Print(p);
    }
    return kExitOk;
  }
  if (interval) p.interval_sec = *interval;
  if (a.prefix) p.prefix = *a.prefix;
  if (a.keep_last) p.keep_last = *a.keep_last;
  if (a.keep_hourly) p.keep_hourly = *a.keep_hourly;
  if (a.keep_daily) p.keep_daily = *a.keep_daily;
  if (a.keep_weekly) p.keep_weekly = *a.keep_weekly;
  if (a.keep_monthly) p.keep_monthly = *a.keep_monthly;
  if (a.keep_yearly) p.keep_yearly = *a.keep_yearly;
  if (a.enable) p.enabled = true;
  if (a.disable) p.enabled = false;
  if (psm::Status s = psm::ValidatePolicy(p); !s.ok()) return UsageError("schedule: " + s.message());
  psm::Json set = psm::Json::Object();
  set.Set("op", psm::ctl::kOpScheduleSet).Set("schedule", psm::ctl::ToJson(p));
  auto r = call(std::move(set), false);
  if (!r.ok()) return Fail(r.status(), "schedule");
  if (a.json) {
    std::printf("%s\n", psm::ctl::ToJson(p).Dump(2).c_str());
  } else {
    Print(p);
  }
  return kExitOk;
}

void Setup(CLI::App& app) {
  auto a = std::make_shared<ScheduleArgs>();
  CLI::App* cmd = AddCommand(
      app, "schedule",
      "Show or set the volume's snapshot schedule: take a snapshot every INTERVAL and keep the "
      "newest per hour/day/week/month/year (the daemon runs it; no cron needed).");
  cmd->add_option("MOUNTPOINT", a->target, "Mount point (or volume directory) of a mounted volume.")
      ->required()
      ->type_name("");
  cmd->add_option("--every", a->every, "Interval: 15m, 1h, 6h, 1d, 1w (at least 1m).")
      ->type_name("INTERVAL");
  cmd->add_option("--prefix", a->prefix,
                  "Snapshot name prefix before @GMT-... (default empty: names Samba shows as "
                  "Previous Versions with its default shadow:format).")
      ->type_name("PREFIX");
  cmd->add_option("--keep-last", a->keep_last, "Keep the newest N (default 0).")->type_name("N");
  cmd->add_option("--keep-hourly", a->keep_hourly, "Keep one per hour for N hours (default 24).")
      ->type_name("N");
  cmd->add_option("--keep-daily", a->keep_daily, "Keep one per day for N days (default 7).")
      ->type_name("N");
  cmd->add_option("--keep-weekly", a->keep_weekly, "Keep one per week for N weeks (default 4).")
      ->type_name("N");
  cmd->add_option("--keep-monthly", a->keep_monthly,
                  "Keep one per month for N months (default 12).")
      ->type_name("N");
  cmd->add_option("--keep-yearly", a->keep_yearly, "Keep one per year for N years (default 0).")
      ->type_name("N");
  cmd->add_flag("--enable", a->enable, "Take scheduled snapshots (the default).");
  cmd->add_flag("--disable", a->disable, "Stop taking snapshots; retention still applies to prune.");
  cmd->add_flag("--remove", a->remove, "Delete the schedule.");
  cmd->add_flag("--json", a->json, "Print the policy as JSON.");
  SetAction(cmd, [a] { return Run(*a); });
}

}  // namespace

PSMCTL_REGISTER_COMMAND(70, Setup);

}  // namespace psmctl
